"""A disk that fills at any step of any store operation, for real (red team 21).

A full disk was only ever produced by a file size limit (EFBIG) or named in an error's
template; here it is a real filesystem's ``ENOSPC``: a small tmpfs (its blocks and its inodes
both bounded), mounted by a child in a mount namespace of its own, so that nothing outlives
it. The data root lies on it, next to the files that fill it.

Each case is a child forked from that one pre-imported process. Its audit hook fills the
disk (every free block, then every free inode) just before the operation's N-th change (an
open to write, a mkdir, a rename, an unlink, an rmdir), for every N until the operation
completes; then the filler goes, and the same Store answers again. The promise checked, as
for the other kernel refusals (tests/test_redteam_s20_store_refusals.py): a refused change
says so truthfully ("nothing was changed" only when nothing was), one that went through is
seen whole, the Store's view matches what a fresh process reads, no byte is lost, and a
repair leaves a clean root. And the way out the refusal names must work on the full disk.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_redteam_s20_store_refusals as refusals
from test_redteam_s18_crash_points import RUN_OPERATION, SETTINGS_ONCE
from test_redteam_s20_store_refusals import CLIENT_VIEW, damaged

from app.config import Config, load
from app.storage import open_storage
from app.store import Store

__all__ = ["damaged"]  # a fixture of red team 20's: the leftovers a repair has to mend

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mounting a filesystem takes root and unshare(1)",
)

# For a child script: give up root's capabilities. Root without them is refused by a file's
# mode like any user (a mode 000 file, another user's): a user switch would not reach the
# test's 0700 temporary directory.
DROP_CAPABILITIES = r"""
def drop_capabilities():
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inherit")]

    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) == 0
"""

# A zygote's imports, before its first fork: what every case's operation needs, once.
ZYGOTE_IMPORTS = r"""
import errno, hashlib, json, os, shutil, subprocess, sys, traceback

from app.config import load
from app.errors import partway_cause, storage_error
from app.storage import open_storage

import _strptime, dynaconf, dynaconf.loaders.toml_loader, filelock
import app.dataroot, app.store.concurrency, app.check
"""

# What a root holds, by content: the sha256 of every file with a client's bytes in it (not
# the app's own records, nor its staging area; ``trash=False`` leaves the trash out too).
CONTENTS = r"""
NOT_CONTENT = {".server.lock", ".app-profile.json", "audit.jsonl", "trash.json", "session.json"}


def contents(root, trash=True):
    found = set()
    for path, dirs, files in os.walk(root):
        parts = os.path.relpath(path, root).split(os.sep)
        if parts[0] in (".tmp", "lost+found") or "records" in parts:
            continue
        if not trash and parts[0] == ".trash":
            continue
        for name in files:
            if name not in NOT_CONTENT:
                with open(os.path.join(path, name), "rb") as file:
                    found.add(hashlib.sha256(file.read()).hexdigest())
    return found
"""

_ZYGOTE = (
    RUN_OPERATION
    + ZYGOTE_IMPORTS
    + SETTINGS_ONCE
    + r"""

DISK = sys.argv[1]
# 1 MiB of blocks and 128 inodes: the template root takes a few dozen of each, and filling
# the rest (and emptying it again) costs a few milliseconds.
subprocess.run(
    ["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=128", "none", DISK], check=True
)
FILLER = os.path.join(DISK, "filler")
"""
    + CLIENT_VIEW
    + r"""


def fill(blocks=True):
    os.makedirs(FILLER, exist_ok=True)
    fd = os.open(os.path.join(FILLER, "blocks"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 1) if blocks else ():
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    finally:
        os.close(fd)
    n = 0
    try:
        while True:
            os.mkdir(os.path.join(FILLER, str(n)))
            n += 1
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    return n


def unfill(n):
    for i in range(n):
        os.rmdir(os.path.join(FILLER, str(i)))
    os.remove(os.path.join(FILLER, "blocks"))
    os.rmdir(FILLER)


"""
    + CONTENTS
    + r"""




def way_out(root):
    # The disk fills while no server runs, with a start-up repair to do (bytes no record
    # names, as a killed upload leaves): a server must still start and serve, and the
    # command the refusals name must free the space.
    blobs = [p for p in os.listdir(os.path.join(root, "sessions")) if not p.startswith(".")]
    for sid in blobs:
        orphan = os.path.join(root, "sessions", sid, "blobs", "01a20000000070008000000000000001")
        if os.path.isdir(os.path.dirname(orphan)):
            with open(orphan, "wb") as file:
                file.write(b"bytes no record names")
    kept = contents(root, trash=False)
    filled = fill()
    said = []
    with open_storage(load(), writer=True, kind="server", wanted="start the server") as store:
        store.publish(port=8001)
        for finding in store.check(repair=True, thorough=False).findings:
            said.append(f"{finding.problem} repaired={finding.repaired}: {finding.repair}")
        served = view(store)
        try:
            store.create_session("on a full disk")
        except OSError as error:
            said.append(f"create: {storage_error(error, 'create a session')}")
    with open_storage(load(), writer=True, wanted="empty the trash") as store:
        said.append(f"emptied {len(store.empty_trash())}")
    unfill(filled)
    with open_storage(load(), writer=True, wanted="repair") as store:
        store.check(repair=True)
        left = [f.to_dict() for f in store.check().findings]
    return {"said": said, "served": served, "left": left, "lost": sorted(kept - contents(root))}


"""
    + DROP_CAPABILITIES
    + r"""


def unreadable(root, session_id):
    os.chmod(os.path.join(root, "sessions", session_id, "session.json"), 0)
    drop_capabilities()
    said = []

    def attempt(what, run):
        try:
            run()
        except Exception as error:
            mapped = storage_error(error, what)
            said.append(f"{what}: {type(error).__name__} ({mapped.code if mapped else '-'})")
        else:
            said.append(f"{what}: ok")

    with open_storage(load(), writer=True, kind="server", wanted="start the server") as store:
        for finding in store.check(repair=True, thorough=False).findings:
            said.append(f"{finding.problem} {finding.target}: {finding.detail}; {finding.repair}")
        attempt("list", lambda: store.list_sessions())
        attempt("delete", lambda: store.delete_session(session_id))
        attempt("list", lambda: store.list_sessions())
        attempt("restore", lambda: store.restore(session_id))
        listed = [session["id"] for session in store.list_sessions().items]
    # And on the command line, which may name the file (HTTP never names a path).
    from click.testing import CliRunner
    from app.cli import cli

    os.chmod(os.path.join(root, ".app-profile.json"), 0)
    said.append(CliRunner().invoke(cli, ["data", "check"], prog_name="app").output)
    return {"said": said, "listed": listed}


def stream(root, session_id, name):
    # The disk fills while an upload of a new version streams in: refused, the old version
    # still served, the partial bytes gone at once (not at the next start), the next one in.
    said = []
    with open_storage(load(), writer=True, kind="server", wanted="serve") as store:
        before = view(store)
        try:
            with store.begin_upload(session_id, name, replace=True) as upload:
                while True:
                    upload.write(b"z" * 65536)
        except OSError as error:
            said.append(str(storage_error(error, f"PUT /sessions/{session_id}/files/{name}")))
        said.append(f"in .tmp: {os.listdir(os.path.join(root, '.tmp'))}")
        said.append(f"unchanged: {view(store) == before}")
        store.put_file(session_id, name, b"a, version 3", replace=True)
        handle, _ = store.open_file(session_id, name)
        with handle:
            said.append(handle.read().decode())
    return {"said": said}


def inodes(root, session_id):
    # Every inode used, blocks free (red team 75 on integrity): each refusal said "is full"
    # and "Free space", and `df -h` showed the disk nearly empty.
    orphan = os.path.join(root, "sessions", session_id, "blobs", "01a20000000070008000000000000002")
    with open(orphan, "wb") as file:
        file.write(b"bytes no record names")
    filled = fill(blocks=False)
    said = []
    with open_storage(load(), writer=True, kind="server", wanted="serve") as store:
        for finding in store.check(repair=True, thorough=False).findings:
            said.append(finding.repair)
        try:
            store.put_file(session_id, "a.txt", b"a, version 3", replace=True)
        except OSError as error:
            said.append(str(storage_error(error, f"PUT /sessions/{session_id}/files/a.txt")))
        try:
            os.mkdir(os.path.join(root, "another"))
        except OSError as error:
            said.append(partway_cause(error)[0])
    unfill(filled)
    return {"said": said}


# The children that load their own settings: the rest take the zygote's (`SETTINGS_ONCE`).
ONESELF = {"stream", "way-out", "unreadable", "inodes"}


def child(op, at, args, root, config):
    if op == "stream":
        return stream(root, *args)
    if op == "way-out":
        return way_out(root)
    if op == "unreadable":
        return unreadable(root, *args)
    if op == "inodes":
        return inodes(root, *args)
    changes = 0
    filled = None
    busy = False

    def fill_before(event, details):
        nonlocal changes, filled, busy
        if busy or filled is not None:
            return
        if event not in CHANGES and not (
            event == "open" and isinstance(details[2], int) and details[2] & WRITES
        ):
            return
        changes += 1
        if changes == at + 1:
            busy = True
            filled = fill()
            busy = False

    kept = contents(root, trash=op != "empty-trash")
    # The settings loaded once for the case's environment, in the zygote (`SETTINGS_ONCE`):
    # each load walks the process tree again (bench/README.md, "perf-suite72" and
    # "perf-suite73a"); the Store reopened below is still a fresh one reading the disk.
    config = loaded(config)
    store = open_storage(config, writer=True, kind="tests", wanted="run one operation")
    before = view(store) if at == 0 else None
    sys.addaudithook(fill_before)
    answer = "ok"
    try:
        run_operation(store, op, args)
    except Exception as error:
        mapped = storage_error(error, "run it")
        full = getattr(error, "errno", None) == errno.ENOSPC
        partway = type(error).__name__ == "StoppedPartwayError"
        partway = partway and os.strerror(errno.ENOSPC) in str(error)
        tag = "" if full else "PARTWAY " if partway else "WRONG "
        code = error.code if mapped is None and hasattr(error, "code") else mapped and mapped.code
        answer = f"{tag}{type(error).__name__} ({code}): {error}"
    finally:
        busy = True
        if filled is not None:
            unfill(filled)
    after = view(store)
    store.close()
    with open_storage(config, writer=True, kind="tests", wanted="read it again") as fresh:
        disk = view(fresh)
        fresh.check(repair=True)
        left = [f.to_dict() for f in fresh.check(repair=False).findings]
    return {
        "answer": answer,
        "filled": filled is not None,
        "before": before,
        "after": after,
        "disk": disk,
        "left": left,
        "lost": sorted(kept - contents(root)),
    }


for line in sys.stdin:
    request = json.loads(line)
    root = request["env"]["APP_DATA_ROOT"]
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(request["template"], root, symlinks=True)
    config = settings(request["env"]) if request["op"] not in ONESELF else None
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.environ.clear()
        os.environ.update(request["env"])
        try:
            result = child(request["op"], request["at"], request["args"], root, config)
        except BaseException:
            result = {"crash": traceback.format_exc()}
        with os.fdopen(out_w, "w") as out:
            json.dump(result, out)
        os._exit(0)
    os.close(out_w)
    with os.fdopen(out_r) as out:
        result = out.read()
    os.waitpid(pid, 0)
    print(result.replace("\n", " "), flush=True)
subprocess.run(["umount", DISK], check=True)
"""
)


class Zygote(refusals.Zygote):
    """A pre-imported Python process, alone in a mount namespace with a small tmpfs at
    ``disk``, that forks one child per `run`."""

    def __init__(self, disk: Path) -> None:
        self.disk = disk
        unshare = ["unshare", "--mount", "--propagation", "private"]
        super().__init__([*unshare, sys.executable, "-c", _ZYGOTE, str(disk)])

    def run(self, template: Path, op: str, at: int, args: list[str]) -> dict[str, Any]:  # type: ignore[override]
        env = {**os.environ, "APP_DATA_ROOT": str(self.disk / "app-data")}
        return self.ask({"template": str(template), "op": op, "at": at, "args": args, "env": env})


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    started = Zygote(tmp_path_factory.mktemp("disk"))
    yield started
    started.close()


def open_store(config: Config) -> Store:
    store = open_storage(config, writer=True, kind="tests", wanted="fill a template")
    assert isinstance(store, Store)
    return store


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    """A root with a session of two files, a replaced version and a deleted file, an empty
    session, and a deleted session; its audit log ends at a page's end, as one in every
    dozen lines does, so that the next line needs a new block."""
    saved = tmp_path_factory.mktemp("template") / "app-data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("APP_DATA_ROOT", str(saved))
        with open_store(load("testing")) as store:
            keep = store.create_session("kept")["id"]
            store.put_file(keep, "a.txt", b"a, version 1")
            store.put_file(keep, "a.txt", b"a, version 2", replace=True)
            store.put_file(keep, "b.txt", b"b")
            store.put_file(keep, "gone.txt", b"deleted file")
            store.delete_file(keep, "gone.txt")
            another = store.create_session("another")["id"]
            gone = store.create_session("deleted")["id"]
            store.put_file(gone, "c.txt", b"in a deleted session")
            store.delete_session(gone)
    audit = saved / "audit.jsonl"
    size = audit.stat().st_size
    pad = -(size + len('{"note": ""}\n')) % 4096
    with audit.open("a") as log:
        log.write(json.dumps({"note": "x" * pad}) + "\n")
    assert audit.stat().st_size % 4096 == 0
    return {"keep": keep, "gone": gone, "another": another}, saved


OPERATIONS: dict[str, list[str]] = {
    "replace": ["{keep}", "a.txt", "a, version 3"],
    "upload": ["{keep}", "new.txt", "a new file"],
    "delete-file": ["{keep}", "b.txt"],
    "delete-session": ["{keep}"],
    "restore-file": ["{keep}", "gone.txt"],
    "restore-session": ["{gone}"],
    "purge": [],
    "create": ["new session"],
    "empty-trash": [],
    "repair": [],
}


# Those with work after their commit point (a blob to retire, an entry to remove, a line to
# write) are filled before each of their changes; the others, each tried so once and found
# whole, only before their first (the suite's time is short: a child per step costs 25 ms).
EVERY_STEP = {"replace", "restore-file", "purge", "empty-trash", "repair"}


@pytest.mark.parametrize("op", OPERATIONS)
def test_a_disk_that_fills_at_any_step_leaves_the_answer_true_and_every_byte_kept(
    request: pytest.FixtureRequest,
    template: tuple[dict[str, str], Path],
    zygote: Zygote,
    op: str,
) -> None:
    ids, saved = template
    if op == "repair":
        saved = request.getfixturevalue("damaged")  # what interrupted writes leave
    args = [arg.format(**ids) for arg in OPERATIONS[op]]
    at = 0
    problems = []
    while True:
        result = zygote.run(saved, op, at, args)
        what = f"{op}, full at {at}: {result['answer']}"
        if at == 0:
            before = result["before"]
        after = result["after"]
        if result["answer"].startswith("WRONG"):
            problems.append(f"{what}: the wrong refusal")
        refused = result["answer"] != "ok" and not result["answer"].startswith("PARTWAY")
        if refused and "(storage_full)" not in result["answer"]:
            problems.append(f"{what}: not said as storage_full")
        if op == "repair":
            # Each repair is whole on its own: one refused is reported as not done, and
            # the others are made (a raise would say "nothing was changed" of them).
            if result["answer"] != "ok":
                problems.append(f"{what}: the repair stopped")
            if (after["listed"], after["sessions"]) != (before["listed"], before["sessions"]):
                problems.append(f"{what}: the repair changed what sessions serve")
        elif refused and after != before:
            problems.append(f"{what}: failed, but changed what clients see")
        if op == "purge" and result["answer"].startswith("PARTWAY"):
            # Its line needs a block of the full disk (the log ends at one's end): said
            # "and audited" of a log without it (red team 73 on regress c).
            lost = "but the audit log could not record them (No space left on device, at its "
            if f"{lost}purge line): their record is in this command's log" not in result["answer"]:
                problems.append(f"{what}: its lost audit line not said so")
        if after != result["disk"]:
            problems.append(f"{what}: the Store shows {after}, the disk {result['disk']}")
        if result["left"]:
            problems.append(f"{what}: not clean after repair: {result['left']}")
        if result["lost"]:
            problems.append(f"{what}: bytes lost")
        if not result["filled"] or op not in EVERY_STEP:
            break
        at += 1
    assert not problems, "\n".join(problems)


def test_on_a_full_disk_a_server_starts_and_serves_and_emptying_the_trash_frees_it(
    template: tuple[dict[str, str], Path], zygote: Zygote
) -> None:
    ids, saved = template
    result = zygote.run(saved, "way-out", 0, [])
    keep = sorted(result["served"]["sessions"][ids["keep"]])
    assert [name for name, _, _ in keep] == ["a.txt", "b.txt"]
    assert result["said"] == [
        (
            "file-without-record repaired=False: move them to the trash as file "
            "'orphan-01a20000000070008000000000000001' (reason 'orphan') (not done: No space "
            "left on device; resolve that, then run `app data check --repair` again)"
        ),
        (
            "create: cannot create a session: the data root's filesystem is full; nothing was "
            "changed. Free space, then retry: POST /trash/empty empties the trash without "
            "stopping the server (`app data empty-trash` does it while no server runs), or grow "
            "the filesystem"
        ),
        "emptied 3",
    ]
    assert not result["left"]
    assert not result["lost"]


def test_a_session_the_server_may_not_read_is_reported_and_can_be_cleared(
    template: tuple[dict[str, str], Path], zygote: Zygote
) -> None:
    ids, saved = template
    result = zygote.run(saved, "unreadable", 0, [ids["another"]])
    assert result["said"] == [
        (
            f"permission-denied sessions/{ids['another']}/session.json: this process may not read "
            "or change it (Permission denied), so what holds it was not checked; nothing: an "
            "operator gives it back to the user the app runs as (`ls -l`, `chown`, `chmod u+rw`), "
            "then checks again"
        ),
        "list: PermissionError (storage_permission_denied)",
        "delete: ok",
        "list: ok",
        "restore: PermissionError (storage_permission_denied)",
        (
            f"error: cannot run `app data check` ({zygote.disk}/app-data/.app-profile.json): the "
            "data root's filesystem refused it (permission denied: a file or directory in the data "
            "root is immutable or append-only, read-only or owned by another user, or its mode "
            "keeps its owner out, as `chmod 000` does); nothing was changed. An operator finds "
            "it (`lsattr -R` and `ls -lR` on the data root: an `i` or an `a`, a mode without "
            "`rw` for its owner) and undoes it (`chattr -i -a`, `chown` to the user the app runs "
            "as, `chmod u+rwX`), then retries\n"
        ),
    ]
    assert result["listed"] == [ids["keep"]]


def test_a_disk_that_fills_while_an_upload_streams_refuses_it_and_frees_its_bytes(
    template: tuple[dict[str, str], Path], zygote: Zygote
) -> None:
    ids, saved = template
    keep = ids["keep"]
    assert zygote.run(saved, "stream", 0, [keep, "a.txt"])["said"] == [
        (
            f"cannot PUT /sessions/{keep}/files/a.txt: the data root's filesystem is full; nothing "
            "was changed. Free space, then retry: POST /trash/empty empties the trash without "
            "stopping the server (`app data empty-trash` does it while no server runs), or grow "
            "the filesystem"
        ),
        "in .tmp: []",
        "unchanged: True",
        "a, version 3",
    ]


def test_a_disk_out_of_inodes_with_space_left_says_inodes_where_it_said_full(
    template: tuple[dict[str, str], Path], zygote: Zygote
) -> None:
    ids, saved = template
    keep = ids["keep"]
    said = zygote.run(saved, "inodes", 0, [keep])["said"]
    no_inodes = "no free inodes: `df -i` counts them, where `df -h` shows free space"
    assert said == [
        (
            "move them to the trash as file 'orphan-01a20000000070008000000000000002' (reason "
            f"'orphan') (not done: No space left on device ({no_inodes}); resolve that, then "
            "run `app data check --repair` again)"
        ),
        (
            f"cannot PUT /sessions/{keep}/files/a.txt: the data root's filesystem has no free "
            "inodes (each file and directory takes one; `df -i` counts them, where `df -h` shows "
            "free space); nothing was changed. Free some, then retry: POST /trash/empty empties "
            "the trash without stopping the server (`app data empty-trash` does it while no "
            "server runs), or remove other files on that filesystem, or move the data root to "
            "one with more inodes"
        ),
        f"ENOSPC: No space left on device ({no_inodes})",
    ]
