"""`app data check` next to a server that is writing (red team 22).

A read-only check takes no lock, so it may run next to a live server; a write in flight
leaves, between its steps, what a crash leaves (a staging directory, a trash entry before
its move, a blob before its record). It was reported as a crash's ("a session create that
crashed before its rename", "an upload that stopped before its commit"), with exit 65 and the
advice to stop the server and repair it.

One process holds the root as a server does; a thread of it runs a store operation and is
held just before its N-th change, for every N until the operation completes, while the main
thread runs the read-only check through a reader Store of its own (its own lock file
description, as another process's). The held thread goes on as soon as the check asks for a
moment without changes in flight (its exclusive flock, seen by an audit hook), so the
check's answer does not depend on timing. A crash's leftover made by hand must still be
reported, next to the write in flight.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

_SCRIPT = r"""
import fcntl, json, os, sys, threading

from app.config import load
from app.storage import open_storage

CHANGES = {"os.rename", "os.remove", "os.mkdir", "os.rmdir"}
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
state = {"at": None, "changes": 0, "writer": None}
held = threading.Event()
go = threading.Event()


def hook(event, details):
    if state["at"] is None:
        return
    exclusive = fcntl.LOCK_EX | fcntl.LOCK_NB
    if event == "fcntl.flock" and details[1] == exclusive and is_tmp(details[0]):
        go.set()  # the check waits for a moment without changes in flight
    if threading.get_ident() != state["writer"]:
        return
    opened = event == "open" and isinstance(details[2], int) and details[2] & WRITES
    if event in CHANGES or opened:
        state["changes"] += 1
        if state["changes"] == state["at"] + 1:
            held.set()
            go.wait()


def is_tmp(fd):
    return os.readlink(f"/proc/self/fd/{fd}").endswith("/.tmp")


sys.addaudithook(hook)


def operation(store, op, keep):
    if op == "create":
        store.create_session("new")
    elif op == "create-many":  # the server's committer's batch (red team 34)
        store.create_sessions([("new", None), ("another", None)])
    elif op == "replace":
        store.put_file(keep, "a.txt", b"a, another version", replace=True)
    elif op == "delete-file":
        store.delete_file(keep, "b.txt")
    elif op == "delete-session":
        store.delete_session(store.scan_ids()[-1])
    elif op == "restore-file":
        store.restore(keep, file="b.txt")


def prepare(store, op, keep):
    # Each operation runs again and again on one root: what it needs, made before it.
    if op == "delete-file":
        store.put_file(keep, "b.txt", b"b", replace=True)
    elif op == "delete-session":
        store.create_session("to delete")
    elif op == "restore-file":
        store.put_file(keep, "b.txt", b"b", replace=True)
        store.delete_file(keep, "b.txt")


def case(store, op, at, keep):
    prepare(store, op, keep)
    held.clear()
    go.clear()
    state.update(at=at, changes=0)
    def write():
        state["writer"] = threading.get_ident()  # before its first change
        operation(store, op, keep)

    worker = threading.Thread(target=write)
    worker.start()
    while not held.wait(0.01) and worker.is_alive():
        pass
    found = None
    if held.is_set():
        with open_storage(load(), writer=False) as reader:
            found = [f"{f.problem} {f.target}" for f in reader.check().findings]
    go.set()
    worker.join()
    state["at"] = None
    return found


store = open_storage(load(), writer=True, kind="server", wanted="serve")
keep = store.create_session("kept")["id"]
store.put_file(keep, "a.txt", b"a, version 1")
for op in ("create", "create-many", "replace", "delete-file", "delete-session", "restore-file"):
    at = 0
    while (found := case(store, op, at, keep)) is not None:
        print(json.dumps([op, at, found]), flush=True)
        at += 1
# What a create killed before its rename leaves, next to a replace held after its blob.
os.mkdir(f"{store.sessions_dir}/.new-01a20000000070008000000000000001")
print(json.dumps(["replace", 3, case(store, "replace", 3, keep)]), flush=True)
store.close()
"""


def test_a_read_only_check_next_to_a_writing_server_reports_no_write_in_flight(
    tmp_path: Path,
) -> None:
    command = [sys.executable, "-c", _SCRIPT]
    if os.geteuid() == 0 and shutil.which("unshare"):
        # On a tmpfs of its own, where the 40 operations' fsyncs cost nothing.
        mount = f'mount -t tmpfs -o size=16m none {shlex.quote(str(tmp_path))} && exec "$@"'
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "-"]
        command += [sys.executable, "-c", _SCRIPT]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "APP_DATA_ROOT": str(tmp_path / "app-data")},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    cases = [json.loads(line) for line in run.stdout.splitlines()]
    *in_flight, (_, _, with_leftover) = cases
    # Every step of each operation was held (a replace has the most: its blob, the old
    # version's trash entry, the record's switch, the old blob's move, the audit line).
    assert len([c for c in in_flight if c[0] == "replace"]) >= 8, cases
    reported = [f"{op} held at {at}: {found}" for op, at, found in in_flight if found]
    assert not reported, "\n".join(reported)
    assert with_leftover == ["unfinished-create sessions/.new-01a20000000070008000000000000001"], (
        with_leftover
    )
