"""A process out of file descriptors at every open of every store operation (red team 20).

A server near its ``LimitNOFILE`` (every connection and upload holds a descriptor) gets
EMFILE from whichever ``open`` comes next, at a point the code did not choose. Each
operation runs in a child whose audit hook lowers ``RLIMIT_NOFILE`` to the descriptors it
already has, just before its N-th open (a file, a directory to fsync, a listing), for every
N until the operation completes. The kernel then refuses that open, and every later one of
the operation ("starved"), or only that one ("once"). Then the limit goes back up and the
same process, with the same Store, answers again.

The promise checked: an operation that failed changed nothing a client can see (the server
answers EMFILE as "too_many_open_files ... nothing was changed. Retry"), and one that
succeeded is seen whole; the Store's own view (its listing index, its caches) matches what
a fresh process reads from the disk; no byte is lost; and a repair leaves a clean root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_redteam_s18_crash_points import contents

from app.config import Config
from app.storage import open_storage
from app.store import Store

_ZYGOTE = r"""
import errno, json, os, resource, sys, traceback

from app.config import load
from app.storage import open_storage

import _strptime, dynaconf, dynaconf.loaders.toml_loader, filelock
import app.dataroot, app.store.concurrency, app.check

FD_EVENTS = {"open", "os.scandir", "os.listdir"}
SOFT, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)


def view(store):
    # What a client can see: the listing (the index), each session and its files' bytes,
    # and what the trash can give back.
    listed, after = [], None
    while True:
        page = store.list_sessions(limit=500, after=after)
        listed += [s["id"] for s in page.items]
        if page.next is None:
            break
        after = page.next
    sessions = {}
    for sid in store.scan_ids():
        try:
            files = store.get_session(sid)["files"]
        except Exception as error:
            sessions[sid] = type(error).__name__
            continue
        shown = []
        for entry in files:
            handle, served = store.open_file(sid, entry["name"])
            with handle:
                shown.append([entry["name"], served["sha256"], handle.read().decode()])
        sessions[sid] = sorted(shown)
    restorable = []
    for entry in store.list_trash():
        if entry.kind == "session" and (entry.path / "session").is_dir():
            restorable.append([entry.session_id, ""])
        elif entry.kind == "file" and entry.file and (entry.path / entry.file).is_file():
            restorable.append([entry.session_id, entry.file])
    return {"listed": listed, "sessions": sessions, "restorable": sorted(restorable)}


def child(op, at, mode, args):
    opens = 0
    starved = False

    def starve(event, details):
        nonlocal opens, starved
        if event not in FD_EVENTS:
            return
        opens += 1
        if opens == at + 1:
            free = os.dup(0)  # the lowest free descriptor: no new one from here on
            os.close(free)
            resource.setrlimit(resource.RLIMIT_NOFILE, (free, HARD))
            starved = True
        elif mode == "once" and opens == at + 2:
            resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))

    store = open_storage(load(), writer=True, kind="tests", wanted="run one operation")
    before = view(store)
    sys.addaudithook(starve)
    answer = "ok"
    try:
        if op == "replace":
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
        elif op == "create":
            store.create_session(*args)
        elif op == "empty-trash":
            store.empty_trash()
    except Exception as error:
        # EMFILE is the one right refusal: the server answers it "too_many_open_files ...
        # nothing was changed. Retry"; any other is a wrong answer (a 404, a 500).
        emfile = getattr(error, "errno", None) == errno.EMFILE
        partway = type(error).__name__ == "StoppedPartwayError" and "Too many open" in str(error)
        tag = "" if emfile else "PARTWAY " if partway else "WRONG "
        answer = f"{tag}{type(error).__name__}: {error}"
    finally:
        at = 1 << 30  # disarmed
        resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))
    after = view(store)
    store.close()
    # What a process that starts now reads from the disk, before any repair.
    with open_storage(load(), writer=True, kind="tests", wanted="read it again") as fresh:
        disk = view(fresh)
    return {"answer": answer, "starved": starved, "before": before, "after": after, "disk": disk}


for line in sys.stdin:
    request = json.loads(line)
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.environ.clear()
        os.environ.update(request["env"])
        try:
            result = child(request["op"], request["at"], request["mode"], request["args"])
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
"""


class Zygote:
    """A Python process that has imported the app and forks one child per `run`."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, op: str, at: int, mode: str, args: list[str]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"op": op, "at": at, "mode": mode, "args": args, "env": dict(os.environ)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the zygote exited with {self.process.wait()}"
        result: dict[str, Any] = json.loads(line)
        assert "crash" not in result, result["crash"]
        return result

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait() == 0


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    started = Zygote()
    yield started
    started.close()


def open_store(config: Config) -> Store:
    store = open_storage(config, writer=True, kind="tests", wanted="look after EMFILE")
    assert isinstance(store, Store)
    return store


@pytest.fixture
def template(app_config: Config, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A root with a session of two files, a replaced version and a deleted file, an empty
    session, and a deleted session."""
    with open_store(app_config) as store:
        keep = store.create_session("kept")["id"]
        store.put_file(keep, "a.txt", b"a, version 1")
        store.put_file(keep, "a.txt", b"a, version 2", replace=True)
        store.put_file(keep, "b.txt", b"b")
        store.put_file(keep, "gone.txt", b"deleted file")
        store.delete_file(keep, "gone.txt")
        store.create_session("another")
        gone = store.create_session("deleted")["id"]
        store.put_file(gone, "c.txt", b"in a deleted session")
        store.delete_session(gone)
    saved = tmp_path / "template"
    shutil.copytree(app_config.data_root, saved, symlinks=True)
    return saved, {"keep": keep, "gone": gone}


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
}


@pytest.mark.parametrize("mode", ["starved", "once"])
@pytest.mark.parametrize("op", OPERATIONS)
def test_an_operation_refused_a_descriptor_at_any_open_changed_nothing_or_everything(
    app_config: Config,
    template: tuple[Path, dict[str, str]],
    zygote: Zygote,
    op: str,
    mode: str,
) -> None:
    saved, ids = template
    args = [arg.format(**ids) for arg in OPERATIONS[op]]
    kept = contents(saved, trash=op != "empty-trash")
    root = app_config.data_root
    at = 0
    problems = []
    while True:
        shutil.rmtree(root)
        shutil.copytree(saved, root, symlinks=True)
        result = zygote.run(op, at, mode, args)
        what = f"{op}, EMFILE ({mode}) at open {at}: {result['answer']}"
        before, after = result["before"], result["after"]
        if result["answer"].startswith("WRONG"):
            problems.append(f"{what}: the wrong refusal")
        refused = result["answer"] != "ok" and not result["answer"].startswith("PARTWAY")
        if refused and after != before:
            problems.append(f"{what}: failed, but changed what clients see")
        if after != result["disk"]:
            problems.append(f"{what}: the Store shows {after}, the disk {result['disk']}")
        if after["listed"] != sorted(after["sessions"]):
            problems.append(
                f"{what}: listed {after['listed']}, on disk {sorted(after['sessions'])}"
            )
        if result["answer"].startswith("PARTWAY"):
            # The one refusal that may leave a change: it must say which part was made.
            moved = len(before["listed"]) - len(after["listed"])
            assert f"purge stopped after {moved} of {len(before['listed'])} (" in result["answer"]
            assert f"the {moved} done are in the trash" in result["answer"]
            assert "the rest are unchanged. Resolve the cause (`ulimit -n`" in result["answer"]
            assert "run `app data purge` again" in result["answer"]
        with open_store(app_config) as store:
            store.check(repair=True)
            second = store.check(repair=False)
            if second.findings:
                problems.append(f"{what}: not clean after repair: {second.findings}")
            if not kept <= contents(root):
                problems.append(f"{what}: bytes lost")
        if not result["starved"]:
            break
        at += 1
    assert not problems, "\n".join(problems)
