"""Red team 34 on integrity: changes not marked as in flight, threads that cannot start,
emptying the trash killed part-way.

A read-only `app data check` next to a live server reads again after a moment without any
change in flight (`DataRoot.changing`) and reports only what is still there. A change that
is not marked leaves, between its steps, what a crash leaves, and the check reported the
server's batch of creates (`Store.create_sessions`, the committer's) as crashed ones, with
exit 65. The test below runs every public method of the local store and fails on any change
to the root made outside `DataRoot.changing`; a method it does not know fails it too, so
the next one added is classified before it ships.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_http import WAIT
from test_redteam_s18_crash_points import Zygote, contents, open_store

from app import config as appconfig
from app.config import Config
from app.storage import open_storage
from app.store import Store
from app.testing import published_port
from app.testing.live_server import make_first_deploy_root, serving_at

_SCRIPT = r"""
import contextlib, json, os, sys, threading
from datetime import timedelta

from app.config import load
from app.dataroot import DataRoot
from app.storage import open_storage

CHANGES = {"os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.link", "os.symlink",
           "os.truncate", "shutil.rmtree", "os.chmod"}
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
depth = threading.local()
state = {"op": None, "root": None}
unmarked = []
original = DataRoot.changing


@contextlib.contextmanager
def changing(self):
    with original(self):
        depth.n = getattr(depth, "n", 0) + 1
        try:
            yield
        finally:
            depth.n -= 1


DataRoot.changing = changing


def hook(event, details):
    if state["op"] is None or getattr(depth, "n", 0):
        return
    opened = event == "open" and isinstance(details[2], int) and details[2] & WRITES
    if not (event in CHANGES or opened):
        return
    path = details[0]
    if isinstance(path, int):  # a descriptor wrapped (os.fdopen): where it is
        path = os.readlink(f"/proc/self/fd/{path}")
    path = os.fsdecode(path)
    # A temporary file in .tmp/ marks itself (its writer's flock); the lock file is the
    # holder's, not the data's.
    if "/.tmp/" in path or path.endswith(".server.lock"):
        return
    unmarked.append(f"{state['op']}: {event} {path.replace(state['root'], '<root>')}")


sys.addaudithook(hook)
store = open_storage(load(), writer=True, kind="server", wanted="serve")
state["root"] = str(store.root.path)
keep = store.create_session("kept")["id"]
store.put_file(keep, "a.txt", b"a")


def upload():
    with store.begin_upload(keep, "c.txt") as up:
        up.write(b"c")
        up.commit()


OPS = {
    "create_session": lambda: store.create_session("one"),
    "create_sessions": lambda: store.create_sessions([("two", None), ("three", {"k": 1})]),
    "put_file": lambda: store.put_file(keep, "a.txt", b"a2", replace=True),
    "begin_upload": upload,
    "delete_file": lambda: store.delete_file(keep, "c.txt"),
    "restore": lambda: (store.restore(keep, file="c.txt"),
                        store.delete_session(keep), store.restore(keep)),
    "delete_session": lambda: store.delete_session(store.create_session("gone")["id"]),
    "purge": lambda: store.purge(),
    "empty_trash": lambda: store.empty_trash(),
    "check": lambda: store.check(repair=True),
}
for name, op in OPS.items():
    state["op"] = name
    try:
        op()
    finally:
        state["op"] = None
print(json.dumps({"ran": sorted(OPS), "unmarked": unmarked}))
store.close()
"""

#: Public methods and properties of the local store that change nothing in the data root
#: (``publish`` writes the lock file, the holder's own; ``close`` lets go of the lock).
_READ_ONLY = {
    "audit",
    "close",
    "deleted_entry",
    "ensure_held",
    "file_path",
    "get_session",
    "get_session_json",
    "iter_all",
    "left_out",
    "list_files",
    "list_sessions",
    "list_sessions_json",
    "list_trash",
    "location",
    "lost_error",
    "max_files",
    "max_upload_bytes",
    "note_read_only",
    "open_file",
    "publish",
    "readiness",
    "reads_from_local_files",
    "require_session",
    "scan_ids",
    "session_ids",
    "sessions_dir",
    "trash_location",
    "watch",
    "watch_sessions",
    "writes_stopped",
}


def _python(script: str, root: Path, under: Sequence[str] = ()) -> Any:
    """Run ``script`` in a Python child (``under`` a wrapper command) on the data root
    ``root``; what it printed last, as JSON, once it exited 0."""
    run = subprocess.run(
        [*under, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "APP_DATA_ROOT": str(root)},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def test_every_change_of_the_local_store_is_marked_as_in_flight(tmp_path: Path) -> None:
    # ~0.6 s: one Python child that runs each change once, on a root of its own.
    result = _python(_SCRIPT, tmp_path / "app-data")
    public = {name for name in dir(Store) if not name.startswith("_")}
    unknown = public - set(result["ran"]) - _READ_ONLY
    assert not unknown, f"classify these Store members in this test: {sorted(unknown)}"
    assert public >= _READ_ONLY, sorted(_READ_ONLY - public)
    assert result["unmarked"] == [], "\n".join(result["unmarked"])


# --- a server at its limit of threads ------------------------------------------------------

_PIDS_CGROUPS = Path("/sys/fs/cgroup/pids")


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    """A cgroup (v1) of the pids controller of its own: what a container's pids limit is."""
    group = _PIDS_CGROUPS / f"app-test-{uuid.uuid4().hex}"
    try:
        group.mkdir()
    except OSError as error:
        pytest.skip(f"cannot make a pids cgroup ({error}): needs root and cgroup v1's pids")
    try:
        yield group
    finally:
        group.rmdir()  # its processes have ended (the test waits for them)


def _refused_for_threads(answer: httpx.Response, request: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "5"
    assert answer.json()["code"] == "thread_limit"
    message = answer.json()["message"]
    assert message.startswith(f"{request} refused, and nothing was changed"), message
    assert "could not start a thread to do it (can't start new thread)" in message
    for fix in ("TasksMax=", "pids limit", "ulimit -u", "Retry after 5 seconds"):
        assert fix in message


def _live_root(tmp_path: Path) -> tuple[Path, dict[str, str], Config]:
    """A first deploy's empty root for a server of the testing profile: root, env, config."""
    root = tmp_path / "live-data"
    env = {**os.environ, "APP_HOST": "127.0.0.1", "APP_DATA_ROOT": str(root)}
    config = appconfig.load("testing", environ=env)
    make_first_deploy_root(env, root)
    return root, env, config


def _entering(group: Path) -> Callable[[], None]:
    """A ``preexec_fn`` that moves the child into the cgroup ``group``."""

    def enter() -> None:
        (group / "cgroup.procs").write_text(str(os.getpid()))

    return enter


_SERVE = [sys.executable, "-m", "app", "serve", "--port", "0"]


def test_a_server_at_its_thread_limit_refuses_clearly_changes_nothing_and_recovers(
    tmp_path: Path, pids_cgroup: Path
) -> None:
    # ~1.5 s: a server started in a pids cgroup that lets it run its main thread and its
    # lock's watcher only, a dozen requests, its stop. Before: its warm-up's worker threads
    # could not start and it did not start at all; a create whose committer thread could
    # not start was answered 500 and made all the same once a thread started; after two,
    # no create was ever made again, and the server's stop raised (it joined a thread that
    # never started).
    root, env, config = _live_root(tmp_path)
    headers = {"Authorization": f"Bearer {config.api_token}"} if config.api_token else {}
    with open_storage(config, writer=True) as store:
        kept = store.create_session("kept")["id"]
    (pids_cgroup / "pids.max").write_text("2")  # the main thread and the lock's watcher
    log = tmp_path / "server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            _SERVE,
            env=env,
            stdout=out,
            stderr=out,
            preexec_fn=_entering(pids_cgroup),  # noqa: PLW1509 - a write, no lock
        )
    try:
        url = serving_at(
            process, log, lambda started: f"http://127.0.0.1:{published_port(root, started, log)}"
        )
        with httpx.Client(base_url=url, headers=headers, timeout=WAIT) as client:
            for _ in range(3):  # a committer thread
                _refused_for_threads(
                    client.post("/sessions", json={"title": "x"}), "POST /sessions"
                )
            put = f"/sessions/{kept}/files/a.txt"
            _refused_for_threads(client.put(put, content=b"a"), f"PUT {put}")  # anyio's
            assert [s["id"] for s in client.get("/sessions").json()["items"]] == [kept]
            assert client.get(f"/sessions/{kept}").json()["files"] == []
            (pids_cgroup / "pids.max").write_text("max")
            made = client.post("/sessions", json={"title": "once threads start"})
            assert made.status_code == 201, (made.text, log.read_text())
            assert client.put(put, content=b"a").status_code == 201
            listed = client.get("/sessions").json()["items"]
            assert [s["title"] for s in listed] == ["kept", "once threads start"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        with open_storage(config, writer=False) as reader:
            assert reader.check().findings == []
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_server_that_cannot_start_its_lock_watcher_refuses_to_start_clearly(
    tmp_path: Path, pids_cgroup: Path
) -> None:
    # ~1 s: a server started in a pids cgroup that lets it run its main thread only. Before:
    # the thread that watches its lock could not start and `app serve` left a traceback
    # (exit 1); now it refuses with the thread limit's message and exit 75, serves nothing,
    # and leaves the root free for the next server.
    root, env, config = _live_root(tmp_path)
    (pids_cgroup / "pids.max").write_text("1")  # the main thread and no other
    run = subprocess.run(
        _SERVE,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        preexec_fn=_entering(pids_cgroup),
        check=False,
    )
    assert run.returncode == 75, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    assert f"serving profile testing from {root} refused, and nothing was changed" in run.stderr
    assert "could not start a thread to do it (can't start new thread)" in run.stderr
    for fix in ("TasksMax=", "pids limit", "ulimit -u"):
        assert fix in run.stderr
    with open_storage(config, writer=True) as store:  # the hold was released
        assert store.check().findings == []


# --- empty-trash killed part-way -----------------------------------------------------------


def test_an_empty_trash_killed_before_any_change_is_finished_by_the_next_one(
    app_config: Config, tmp_path: Path
) -> None:
    # ~1.5 s: a trash of four entries (two sessions, a replaced and a deleted file), an
    # empty-trash killed before each of its 27 changes in a forked child, and after each
    # kill, without any repair between (no server started), the next empty-trash. It left
    # what the killed one had taken out of the trash (`.emptying-*`) for `check` to report
    # (exit 65) and for a repair to remove.
    with open_store(app_config) as store:
        keep = store.create_session("kept")["id"]
        store.put_file(keep, "a.txt", b"a, version 1")
        store.put_file(keep, "a.txt", b"a, version 2", replace=True)
        store.put_file(keep, "b.txt", b"b, deleted")
        store.delete_file(keep, "b.txt")
        for n in range(2):
            gone = store.create_session(f"deleted {n}")["id"]
            store.put_file(gone, "c.txt", f"in deleted session {n}".encode())
            store.delete_session(gone)
    root = app_config.data_root
    saved = tmp_path / "template"
    shutil.copytree(root, saved, symlinks=True)
    kept = contents(saved, trash=False)
    zygote = Zygote()
    try:
        crash_at = 0
        while True:
            shutil.rmtree(root)
            shutil.copytree(saved, root, symlinks=True)
            completed = zygote.run("empty-trash", crash_at, [], root)
            with open_store(app_config) as store:
                store.empty_trash()
                assert store.list_trash() == []
                findings = [f.to_dict() for f in store.check().findings]
                assert findings == [], (crash_at, findings)
                assert contents(root) == kept, crash_at
                assert [f["name"] for f in store.list_files(keep)] == ["a.txt"]
            if completed:
                break
            crash_at += 1
    finally:
        zygote.close()
    print(f"empty-trash: killed before each of its {crash_at} changes")
    assert crash_at > 20  # every rename, unlink and rmdir of the four entries was a kill


# --- a batch of creates on a disk that fills part-way -------------------------------------

_FILL_THEN_CREATE = r"""
import json, os
from app.config import load
from app.storage import open_storage

root = os.environ["APP_DATA_ROOT"]
store = open_storage(load(), writer=True, kind="server", wanted="serve")
filler = f"{root}/../filler"
with open(filler, "wb") as out:
    try:
        while True:
            out.write(b"x" * 65536)
    except OSError:
        pass
os.truncate(filler, os.path.getsize(filler) - 200_000)  # room for a few sessions
results = []
for batch in range(6):  # as the committer hands them over: up to 64 at once
    results += store.create_sessions(
        [(f"{batch}-{n}", {"pad": "y" * 20_000}) for n in range(16)]
    )
made = [r["id"] for r in results if not isinstance(r, Exception)]
refused = sorted({str(r) for r in results if isinstance(r, Exception)})
store.close()
with open_storage(load(), writer=True, kind="server", wanted="serve") as again:
    print(json.dumps({
        "made": made,
        "refused": refused,
        "there": again.session_ids(),
        "findings": [f.to_dict() for f in again.check().findings],
    }))
"""


def test_a_batch_of_creates_on_a_disk_that_fills_keeps_exactly_those_it_answered_made(
    tmp_path: Path,
) -> None:
    # ~0.4 s: a child on a 3 MB tmpfs of its own, filled to 200 kB short, making 96 sessions
    # of 20 kB in six batches (the committer's group commit), then opened again.
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a small tmpfs of its own")
    mount = f'mount -t tmpfs -o size=3m none {shlex.quote(str(tmp_path))} && exec "$@"'
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "-"]
    result = _python(_FILL_THEN_CREATE, tmp_path / "app-data", under=command)
    assert 0 < len(result["made"]) < 96, result
    assert result["refused"] == ["[Errno 28] No space left on device"]
    assert sorted(result["there"]) == sorted(result["made"])
    assert result["findings"] == []
