"""A kill -9 before every change a store operation makes on disk, one at a time (red team 18).

The random kill -9 replay (tests/test_integrity.py) hits creates, uploads, replaces and
deletes where a timer happens to land. Here each operation, restores and the purge included,
runs in a child that sends itself SIGKILL just before its N-th change to the filesystem (an
open for writing, a rename, an unlink, a mkdir, an rmdir: Python's audit events), for every N
until the operation completes. After each kill the root is opened again, repaired as a
server's start-up repairs it, and must hold every byte it held before, in a session or in the
trash, and pass a second check clean.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Config
from app.storage import open_storage
from app.store import Store

_CHILD = """
import json, os, signal, sys

from app.config import load
from app.storage import open_storage

op, crash_at, args = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
changes = 0


def crash_before_the_change(event, details):
    global changes
    if event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir") or (
        event == "open" and isinstance(details[2], int) and details[2] & WRITES
    ):
        changes += 1
        if changes > crash_at:
            os.kill(os.getpid(), signal.SIGKILL)


if op != "start":  # a start-up's own changes (the lock, .tmp/, the repair) are crashed too
    store = open_storage(load(), writer=True, kind="tests", wanted="run one operation")
sys.addaudithook(crash_before_the_change)
if op == "start":
    store = open_storage(load(), writer=True, kind="tests", wanted="start as a server does")
    store.check(repair=True, thorough=False)
elif op == "replace":
    store.put_file(args[0], args[1], args[2].encode(), replace=True)
elif op == "upload":
    store.put_file(args[0], args[1], args[2].encode())
elif op == "delete-file":
    store.delete_file(*args)
elif op == "delete-session":
    store.delete_session(*args)
elif op == "restore-file":
    store.restore(args[0], file=args[1])
elif op == "restore-session":
    store.restore(args[0])
elif op == "purge":
    store.purge()
elif op == "empty-trash":
    store.empty_trash()
elif op == "create":
    store.create_session(*args)
store.close()
print("completed")
"""

_NOT_CONTENT = {".server.lock", ".app-profile.json", "audit.jsonl", "trash.json", "session.json"}


def contents(root: Path, *, trash: bool = True) -> set[str]:
    """The SHA-256 of every byte string the root keeps for a user: blobs, in sessions or trash
    (``trash=False``: in sessions only)."""
    found = set()
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        skipped = {".tmp"} if trash else {".tmp", ".trash"}
        if not path.is_file() or path.name in _NOT_CONTENT or parts[0] in skipped:
            continue
        if "records" in parts:
            continue
        found.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def sha(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


def open_store(config: Config) -> Store:
    store = open_storage(config, writer=True, kind="tests", wanted="check after a crash")
    assert isinstance(store, Store)
    return store


@pytest.fixture
def template(app_config: Config, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A root with a session of two files, a replaced version, a deleted file and session."""
    with open_store(app_config) as store:
        keep = store.create_session("kept")["id"]
        store.put_file(keep, "a.txt", b"a, version 1")
        store.put_file(keep, "a.txt", b"a, version 2", replace=True)
        store.put_file(keep, "b.txt", b"b")
        store.put_file(keep, "gone.txt", b"deleted file")
        store.delete_file(keep, "gone.txt")
        gone = store.create_session("deleted")["id"]
        store.put_file(gone, "c.txt", b"in a deleted session")
        store.delete_session(gone)
    saved = tmp_path / "template"
    shutil.copytree(app_config.data_root, saved, symlinks=True)
    return saved, {"keep": keep, "gone": gone}


OPERATIONS: dict[str, tuple[str, list[str]]] = {
    "replace": ("replace", ["{keep}", "a.txt", "a, version 3"]),
    "upload": ("upload", ["{keep}", "new.txt", "a new file"]),
    "delete-file": ("delete-file", ["{keep}", "b.txt"]),
    "delete-session": ("delete-session", ["{keep}"]),
    "restore-file": ("restore-file", ["{keep}", "gone.txt"]),
    "restore-session": ("restore-session", ["{gone}"]),
    "purge": ("purge", []),
    "create": ("create", ["new session"]),
    "empty-trash": ("empty-trash", []),
}


# The operation whose half-made states the start-up's repair has most to do for (a retired
# blob to move, a trash entry to finish or remove); a killed start-up is run for it only,
# as it costs a child per change of the start-up for every change of the operation.
KILLED_START_UPS = {"replace"}


@pytest.mark.parametrize("name", OPERATIONS)
def test_a_kill_before_any_change_of_an_operation_loses_no_byte_and_leaves_a_clean_root(
    app_config: Config, template: tuple[Path, dict[str, str]], name: str
) -> None:
    saved, ids = template
    op, raw_args = OPERATIONS[name]
    args = [arg.format(**ids) for arg in raw_args]
    # Emptying the trash removes its bytes on purpose, each entry in its turn.
    before = contents(saved, trash=name != "empty-trash")
    root = app_config.data_root
    crash_at = 0
    while True:
        shutil.rmtree(root)
        shutil.copytree(saved, root, symlinks=True)
        completed = run(op, crash_at, args)
        if not completed and name in KILLED_START_UPS:
            # And the start-up that finds what the kill left is killed too, at each change.
            crashed = root.with_name("crashed")
            shutil.rmtree(crashed, ignore_errors=True)
            shutil.copytree(root, crashed, symlinks=True)
            start_at = 0
            while True:
                shutil.rmtree(root)
                shutil.copytree(crashed, root, symlinks=True)
                if run("start", start_at, []):
                    break
                check_after_crashes(
                    app_config, before, f"{name} at {crash_at}, start at {start_at}"
                )
                start_at += 1
            shutil.rmtree(root)
            shutil.copytree(crashed, root, symlinks=True)
        after = check_after_crashes(app_config, before, f"{name} at {crash_at}")
        if completed:
            break
        crash_at += 1
    assert crash_at > 0
    print(f"{name}: killed before each of its {crash_at} changes")
    if name in {"replace", "upload"}:
        assert sha(args[2]) in after


def run(op: str, crash_at: int, args: list[str]) -> bool:
    """Run ``op`` in a child killed before its change ``crash_at``; whether it completed."""
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, op, str(crash_at), json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode in (0, -9), child.stderr
    return child.returncode == 0


def check_after_crashes(config: Config, before: set[str], what: str) -> set[str]:
    """Open, repair and check the root; every byte of ``before`` is still kept."""
    root = config.data_root
    with open_store(config) as store:
        store.check(repair=True)
        report = store.check(repair=False)
        assert not report.findings, (what, [f.to_dict() for f in report.findings])
        after = contents(root)
        assert not before - after, f"{what}: bytes lost"
        for session in store.iter_all():
            for entry in session["files"]:
                handle, served = store.open_file(session["id"], entry["name"])
                with handle:
                    assert hashlib.sha256(handle.read()).hexdigest() == served["sha256"]
    return after
