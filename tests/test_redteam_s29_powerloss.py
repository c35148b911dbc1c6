"""A power loss at any moment of real store operations (red team 29).

Earlier red teams killed operations (s18, tests/test_integrity.py) and failed their system
calls (s28); a kill never shows a missing fsync, since the kernel keeps what the process
wrote. A power loss keeps only what an fsync made durable. A child (outside the test run's
process tree, in a PID namespace of its own, so that it syncs as a production process does)
opens a fresh data root and runs every kind of change on it under strace; tests/powerloss.py
replays the trace and gives the durable tree after every fsync. Each is written out, opened
and repaired as a server's start-up does, and read back: every change acknowledged before
that moment must be there byte for byte, the change in flight before or after, never half,
the root must open and check clean, and every acknowledged change's audit line be there.
Red team 31 added the states where the kernel wrote back some unsynced changes and not others
(`Model.writeback_states`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from powerloss import ACK_PREFIX, EXIT, TRACED, Call, Model, materialise, parse, snapshot

from app.config import Config, load
from app.dataroot import read_stamp
from app.storage import open_storage
from app.store import Store

pytestmark = pytest.mark.skipif(
    shutil.which("strace") is None or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="tracing a child in a PID namespace of its own takes strace(1), unshare(1) and root",
)

#: Every kind of change, each acknowledged (ACK_PREFIX, to /dev/null) the moment it returns.
CHILD = f"""
import dataclasses, os, sys
from app.config import load
from app.dataroot import restamp
from app.sandbox import current_run
from app.storage import open_storage

assert current_run().pid is None, "the child must sync as a production process does"
config = load("testing", environ={{**os.environ, "APP_DATA_ROOT": sys.argv[1]}})
acks = os.open("/dev/null", os.O_WRONLY)

def ack(label):
    os.write(acks, {ACK_PREFIX!r} + label.encode())

with open_storage(config, writer=True, kind="maintenance") as store:
    ack("open a new root")
    a = store.create_session("a", {{"k": 1}})["id"]
    ack("create")
    made = store.create_sessions([("c1", None), ("c2", {{"k": 2}})])  # the server's batch
    assert not [m for m in made if isinstance(m, Exception)], made
    ack("create two at once")
    store.put_file(a, "a.txt", b"version 1")
    ack("upload")
    store.put_file(a, "a.txt", b"version 2", replace=True)
    ack("replace")
    store.put_file(a, "b.txt", b"b")
    ack("upload b")
    store.delete_file(a, "b.txt")
    ack("delete-file")
    store.restore(a, file="b.txt")
    ack("restore-file")
    b = store.create_session("b")["id"]
    ack("create b")
    store.put_file(b, "c.txt", b"c")
    ack("upload c")
    store.delete_session(b)
    ack("delete-session")
    store.restore(b)
    ack("restore-session")
    store.delete_session(b)
    ack("delete-session again")
    store.empty_trash()
    ack("empty-trash")
    store.purge()
    ack("purge")
    store.restore(a)
    ack("restore after the purge")
restamp(dataclasses.replace(config, profile="staging"), "testing")
ack("restamp")
"""

#: The audit lines compared: those of the changes above (not a repair's own lines).
AUDITED = {
    "trash-session",
    "trash-file",
    "replace-file",
    "restore-session",
    "restore-file",
    "purge",
    "empty-trash",
    "restamp",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): _sha(p.read_bytes())
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@dataclasses.dataclass(frozen=True)
class View:
    """What a client and an operator see of a root after a start-up: data, and the audit."""

    data: str  # JSON: the stamp's profile, the sessions with their files, the trash
    audit: collections.Counter[str]


def served_after_repair(store: Store) -> dict[str, Any]:
    """Repair ``store`` as `app serve` starts, assert it is then clean, and read every
    session as it is served: its title, metadata and each file's digest (checked against
    the one the store answers with)."""
    store.check(repair=True, thorough=False)
    findings = [f.to_dict() for f in store.check(repair=False).findings]
    assert not findings, f"not clean after the start-up's repair: {findings}"
    sessions: dict[str, Any] = {}
    for session in store.iter_all():
        files = {}
        for entry in session["files"]:
            handle, served = store.open_file(session["id"], entry["name"])
            with handle:
                digest = _sha(handle.read())
            assert digest == served["sha256"], (session["id"], entry)
            files[entry["name"]] = digest
        sessions[session["id"]] = [session["title"], session["metadata"], files]
    return sessions


def view(config: Config, root: Path) -> View:
    """Open ``root`` as a server's start-up does (repairing), check it, and read it all."""
    stamp = read_stamp(root) if root.is_dir() else None
    profile = "testing" if stamp is None else str(stamp["profile"])
    on_root = load("testing", environ={**os.environ, "APP_DATA_ROOT": str(root)})
    if profile != "testing":
        on_root = dataclasses.replace(on_root, profile=profile)
    with open_storage(on_root, writer=True, kind="tests") as store:
        assert isinstance(store, Store)
        sessions = served_after_repair(store)
        trash = {
            entry.name: _tree_digest(entry.path)
            for entry in store.list_trash()
            if entry.reason != "orphan"  # bytes never acknowledged, which a repair keeps
        }
        seen = json.dumps([profile, sessions, trash], sort_keys=True)
    audit: collections.Counter[str] = collections.Counter()
    log = root / "audit.jsonl"
    for line in log.read_bytes().splitlines() if log.exists() else []:
        record = json.loads(line)
        if record["operation"] in AUDITED:
            details = record["details"]
            target = str(record["target"]).removeprefix(f"{root}/")
            named = details.get("trash") or details.get("sessions") or details.get("entries")
            audit[json.dumps([record["operation"], target, named])] += 1
    return View(seen, audit)


def record(base: Path, child: str = CHILD, *strace: str, killed: bool = False) -> list[Call]:
    """Run ``child`` on ``base/root`` under strace: the calls it made, in order."""
    log = base.parent / "trace.log"
    command = [
        *("unshare", "--pid", "--fork", "--mount-proc"),
        *("strace", "-f", "-qq", "-y", "-xx", "-s", "1048576", "-o", str(log), *strace),
        *("-e", f"trace={TRACED}", sys.executable, "-c", child, str(base / "root")),
    ]
    done = subprocess.run(command, check=not killed, timeout=120)
    assert not killed or done.returncode != 0, "the child was to be killed"
    text = log.read_text()
    log.unlink()
    return parse(text)


def test_a_power_loss_after_any_fsync_keeps_every_acknowledged_change(
    app_config: Config, tmp_path: Path
) -> None:
    base = tmp_path / "disk"
    base.mkdir(mode=0o700)
    calls = record(base)

    # The model first: replayed from the empty disk the child started on, the tree the
    # process saw is the one on disk.
    empty = tmp_path / "empty"
    empty.mkdir()
    seen = Model(base, snapshot(empty))
    acked = list(seen.seen_states(calls))
    on_disk = {
        str(p.relative_to(base)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(base.rglob("*"))
    }
    assert seen.tree(durable=False) == on_disk
    labels = [label for label, _ in acked]
    assert labels[-1] == "restamp" and len(labels) == 17, labels

    cases = tmp_path / "cases"
    cases.mkdir()
    oracle = [view(app_config, _written({}, cases / "before"))]
    for n, (_, tree) in enumerate(acked):
        oracle.append(view(app_config, _written(tree, cases / f"acked-{n}")))

    broken: list[str] = []
    checked: set[tuple[int, str]] = set()
    partly = 0
    # And where the kernel wrote back some unsynced changes and not others (red team 31):
    # a rename kept without a file's data, a later rename without an earlier one.
    for state in Model(base, snapshot(empty)).writeback_states(calls):
        done = len(state.acked)
        # .tmp/ aside: the writer's open clears it, so states that differ only there are one.
        kept = {k: v for k, v in state.tree.items() if not k.startswith("root/.tmp/")}
        key = (done, json.dumps({k: None if v is None else _sha(v) for k, v in kept.items()}))
        if key in checked:
            continue
        checked.add(key)
        partly += "written back" in state.call
        where = cases / f"state-{len(checked)}"
        last = labels[done - 1] if done else "nothing"
        what = f"power lost after sync #{state.syncs} ({state.call}), last acknowledged: {last}"
        try:
            got = view(app_config, _written(state.tree, where))
        except Exception as error:  # each state's failure is reported, all at once
            broken.append(f"{what}: the root does not open clean: {error}")
            continue
        finally:
            shutil.rmtree(where, ignore_errors=True)
        allowed = oracle[done : done + 2]
        in_flight = labels[done] if done < len(labels) else None
        if in_flight in _ITEM_BY_ITEM and _partly(got, *allowed):
            pass  # some items done, the rest not: what a purge or an empty-trash promises
        elif got.data not in [o.data for o in allowed]:
            broken.append(
                f"{what}: neither before nor after the change in flight\n"
                f"  got   {got.data}\n  acked {allowed[0].data}"
            )
        if allowed[0].audit - got.audit:
            broken.append(f"{what}: acknowledged audit lines lost: {allowed[0].audit - got.audit}")
    print(
        f"{len(checked)} durable states checked ({partly} partly written back), {len(calls)} calls"
    )
    assert partly > 0
    assert not broken, "\n".join(broken)


#: Changes made item by item, each whole (a session moved, an entry removed): one stopped
#: partway keeps those done (`StoppedPartwayError`), and so may a power loss that wrote
#: back some of their renames and not others (red team 31). A batch of creates is
#: acknowledged once its fsync of sessions/ is done; before that, any of them may be there.
_ITEM_BY_ITEM = {"purge", "empty-trash", "create two at once"}


def _partly(got: View, before: View, after: View) -> bool:
    """Whether ``got`` is ``before`` with some of the items of the change to ``after`` made:
    each session and trash entry as before or as after, none lost on the way."""
    seen, was, will = (json.loads(view.data) for view in (got, before, after))
    if seen[0] != was[0]:
        return False
    for part in (1, 2):  # the sessions, the trash
        for key, value in seen[part].items():
            if value not in (was[part].get(key), will[part].get(key)):
                return False
        for key in was[part].keys() & will[part].keys():
            if was[part][key] == will[part][key] and key not in seen[part]:
                return False
    moved = seen[2].keys() - was[2].keys()
    return all(any(i in name for name in moved) for i in was[1].keys() - seen[1].keys())


def _written(tree: dict[str, bytes | None], where: Path) -> Path:
    materialise(tree, where)
    return where / "root"


#: A create killed after its rename, before the fsync that makes it durable (a kill -9, an
#: OOM kill), then a new holder that uploads into the session the kill left visible.
KILLED = """
import os, sys
from app.config import load
from app.storage import open_storage

config = load("testing", environ={**os.environ, "APP_DATA_ROOT": sys.argv[1]})
with open_storage(config, writer=True, kind="maintenance") as store:
    store.create_session("kept")
    store.create_session("killed before its sync")
"""
AFTER = f"""
import os, sys
from app.config import load
from app.storage import open_storage

config = load("testing", environ={{**os.environ, "APP_DATA_ROOT": sys.argv[1]}})
with open_storage(config, writer=True, kind="maintenance") as store:
    last = store.session_ids()[-1]
    assert store.get_session(last)["title"] == "killed before its sync"
    store.put_file(last, "t.txt", b"acknowledged")
    os.write(os.open("/dev/null", os.O_WRONLY), {ACK_PREFIX!r} + b"upload")
"""


def test_a_power_loss_keeps_an_upload_acknowledged_after_a_crash_left_its_session_unsynced(
    tmp_path: Path,
) -> None:
    def made(where: Path) -> Path:
        # A root made and synced long before (the model takes what is on disk as durable).
        where.mkdir(mode=0o700)
        on_root = load("testing", environ={**os.environ, "APP_DATA_ROOT": str(where / "root")})
        view(on_root, where / "root")
        return where

    # Where the second create's fsync of sessions/ comes: counted in a run that is not killed.
    calls = record(made(tmp_path / "trial"), KILLED)
    # A create renames `.new-<id>` relative to its descriptor of sessions/ (renameat).
    renames = [
        i
        for i, c in enumerate(calls)
        if c.name.startswith("rename")
        and any(a.raw.startswith('"') and b".new-" in a.string for a in c.args)
    ]
    after = next(i for i, c in enumerate(calls) if i > renames[-1] and c.name == "fsync")
    assert calls[after].args[0].fd[1].endswith(b"/sessions")
    nth = sum(1 for c in calls[: after + 1] if c.name == "fsync")  # strace's `when` counts so
    base = made(tmp_path / "disk")
    seen, durable = Model(base, snapshot(base)), Model(base, snapshot(base))
    killed = record(base, KILLED, "-e", f"inject=fsync:signal=KILL:when={nth}", killed=True)
    calls = [*killed, Call(0, EXIT, (), "0"), *record(base, AFTER)]

    [(_, acknowledged)] = seen.seen_states(calls)
    *_, state = durable.durable_states(calls)
    assert state.acked == ("upload",)
    config = load("testing", environ={**os.environ, "APP_DATA_ROOT": str(base / "root")})
    cases = tmp_path / "cases"
    cases.mkdir()
    got = view(config, _written(state.tree, cases / "lost"))
    assert got.data == view(config, _written(acknowledged, cases / "acked")).data
