"""What the speed work (issue 11) traded away, tried against real servers and files (red team 23).

Gets and pages of up to 100 sessions run on the server's event loop, to spare two hand-overs
to a worker thread. On a filesystem whose reads wait on a server or a daemon (a hard NFS mount
whose server is gone, a hung FUSE daemon: tried by hand on a FUSE mount made to stop
answering), one such read stopped the whole server: `/health`, every other client's calls and
the graceful stop of a SIGTERM waited for as long as the filesystem did. There the reads now
run on worker threads. The test machines have no such filesystem for a test to mount, so the
server here is told its root is not on a local one (as it finds for NFS or FUSE), and its own
``os.open`` of a ``session.json`` waits (an audit hook, as on a stalled mount) until the test
lets it go, so nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from live_http import WAIT
from session_files import edited

from app import config as appconfig
from app.dataroot import filesystem_type
from app.store.store import LOCAL_FILESYSTEMS
from app.testing.live_server import start_server, stop_server

if TYPE_CHECKING:
    from app.store import Store

# In the server: reads of a session.json wait while STALL_FILE exists (once inside, they say so
# in STALLED_FILE), and any file the event loop's thread opens or lists under the data root,
# once ARMED_FILE exists, is written to ON_LOOP_FILE.
_HOOKS = """
import os, sys, threading, time

import app.store.store

# What the server finds on NFS or FUSE: its root is on no filesystem known to be local.
app.store.store.LOCAL_FILESYSTEMS = frozenset()

_ROOT = os.environ["APP_DATA_ROOT"]
_READS = os.O_WRONLY | os.O_RDWR | os.O_CREAT

def _hook(event, args):
    if event not in ("open", "os.scandir", "os.listdir") or not args:
        return
    path = args[0]
    if not isinstance(path, str) or not path.startswith(_ROOT):
        return
    if threading.current_thread() is threading.main_thread():
        if os.path.exists(os.environ["ARMED_FILE"]):
            with open(os.environ["ON_LOOP_FILE"], "a") as log:
                log.write(f"{event} {path}\\n")
    reading = event == "open" and not (isinstance(args[2], int) and args[2] & _READS)
    if reading and path.endswith("/session.json") and os.path.exists(os.environ["STALL_FILE"]):
        open(os.environ["STALLED_FILE"], "w").close()
        while os.path.exists(os.environ["STALL_FILE"]):
            time.sleep(0.01)

sys.addaudithook(_hook)
"""


class _Server:
    def __init__(self, tmp_path: Path) -> None:
        hooks = tmp_path / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(_HOOKS)
        self.root = tmp_path / "live-data"
        self.stall, self.stalled = tmp_path / "stall", tmp_path / "stalled"
        self.armed, self.on_loop = tmp_path / "armed", tmp_path / "on-loop"
        pythonpath = [str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {
            **os.environ,
            "APP_HOST": "127.0.0.1",
            "APP_DATA_ROOT": str(self.root),
            "STALL_FILE": str(self.stall),
            "STALLED_FILE": str(self.stalled),
            "ARMED_FILE": str(self.armed),
            "ON_LOOP_FILE": str(self.on_loop),
            "PYTHONPATH": os.pathsep.join(pythonpath),
        }
        token = appconfig.load("testing", environ=env).api_token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.log = tmp_path / "server.log"
        self.process, self.url = start_server(env, self.root, self.log)

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=WAIT, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.stall.unlink(missing_ok=True)
        stop_server(self.process)


def _while_a_read_is_stalled(server: _Server, path: str) -> httpx.Response:
    """GET ``path`` while its read of a session.json waits; what the rest of the server
    answers meanwhile is checked; then the read goes on, and its answer is returned."""
    server.stalled.unlink(missing_ok=True)
    server.stall.touch()
    answers: list[httpx.Response] = []
    reader = threading.Thread(target=lambda: answers.append(server.call("GET", path)))
    reader.start()
    deadline = time.monotonic() + WAIT
    while not server.stalled.exists():
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.01)
    # The stalled read holds one worker thread; everything else goes on.
    health = server.call("GET", "/health")
    assert health.status_code == 200, health.text
    created = server.call("POST", "/sessions", json={"title": "while stalled"})
    assert created.status_code == 201, created.text
    assert reader.is_alive() and not answers, "the stalled read answered before it was let go"
    server.stall.unlink()
    reader.join(WAIT)
    (answer,) = answers
    return answer


def test_on_a_root_that_may_wait_a_stalled_read_holds_one_thread_not_the_whole_server(
    tmp_path: Path,
) -> None:
    server = _Server(tmp_path)
    try:
        first = server.call("POST", "/sessions", json={"title": "one"}).json()["id"]
        got = _while_a_read_is_stalled(server, f"/sessions/{first}")
        assert got.status_code == 200 and got.json()["id"] == first, got.text
        page = _while_a_read_is_stalled(server, "/sessions?limit=100")
        assert page.status_code == 200, page.text
        assert first in [item["id"] for item in page.json()["items"]]

        # The class: whatever a route does with such a root is done on a worker thread, so a
        # stall there never stalls the loop that answers the rest.
        server.armed.touch()
        sid = server.call("POST", "/sessions", json={"title": "t"}).json()["id"]
        other = server.call("POST", "/sessions", json={"title": "u"}).json()["id"]
        answers = [
            server.call("GET", f"/sessions/{sid}"),
            server.call("GET", "/sessions?limit=10"),
            server.call("GET", "/sessions?limit=1000"),
            server.call("PUT", f"/sessions/{sid}/files/a.txt", content=b"a" * 5000),
            server.call("POST", f"/sessions/{sid}/files", files={"file": ("b.txt", b"b")}),
            server.call("GET", f"/sessions/{sid}/files"),
            server.call("GET", f"/sessions/{sid}/files/a.txt"),
            server.call("GET", f"/sessions/{sid}/files/a.txt", headers={"Range": "bytes=1-9"}),
            server.call("HEAD", f"/sessions/{sid}/files/a.txt"),
            server.call("DELETE", f"/sessions/{sid}/files/b.txt"),
            server.call("GET", f"/sessions/{sid}"),
            server.call("DELETE", f"/sessions/{other}"),
            server.call("GET", f"/sessions/{other}"),
            server.call("GET", "/health"),
        ]
        assert [a.status_code for a in answers] == [
            *(200, 200, 200, 201, 201, 200, 200, 206, 200, 200, 200, 200, 404, 200)
        ], [a.text for a in answers]
        on_loop = server.on_loop.read_text() if server.on_loop.exists() else ""
        assert on_loop == "", on_loop
    finally:
        server.stop()


def test_a_session_restored_by_hand_under_a_live_store_is_answered_as_restored(
    app_store: Store, app_config: appconfig.Config
) -> None:
    # An operator brings a session back from a copy (`mv` it aside, `cp -a` the copy in) while
    # the server holds the root. session.json is the copy's, and so are records/ and blobs/:
    # a get and a page answered the files of the directory that was moved away (b.txt here),
    # from the writer's in-memory records, though downloading b.txt was 404.
    sid = app_store.create_session("restored", {})["id"]
    app_store.put_file(sid, "a.txt", b"a")
    assert app_config.data_root is not None
    directory = app_config.data_root / "sessions" / sid
    backup = app_config.data_root.parent / "backup"
    shutil.copytree(directory, backup, symlinks=True)  # copy2: times kept, as `cp -a`
    app_store.put_file(sid, "b.txt", b"b")
    assert [f["name"] for f in app_store.get_session(sid)["files"]] == ["a.txt", "b.txt"]
    json.loads(app_store.get_session_json(sid))
    directory.rename(app_config.data_root.parent / "moved-away")
    shutil.copytree(backup, directory, symlinks=True)

    assert [f["name"] for f in app_store.get_session(sid)["files"]] == ["a.txt"]
    assert [f["name"] for f in json.loads(app_store.get_session_json(sid))["files"]] == ["a.txt"]
    page = json.loads(app_store.list_sessions_json(limit=10, after=None, max_bytes=None))
    assert [f["name"] for f in page["items"][0]["files"]] == ["a.txt"]


def test_records_replaced_by_hand_under_a_live_store_are_read_again(
    app_store: Store, app_config: appconfig.Config
) -> None:
    # Only records/ swapped for a copy with its mtime kept (`cp -a`), session.json untouched:
    # the encoded answer was kept under session.json's stat and records/'s mtime, both equal.
    app_store.sessions.meta.settled_ns = 0  # keep answers at once, not after 2 s
    sid = app_store.create_session("records", {})["id"]
    app_store.put_file(sid, "a.txt", b"a")
    assert app_config.data_root is not None
    records = app_config.data_root / "sessions" / sid / "records"
    copy, old = records.with_name("records-copy"), records.with_name("records-old")
    shutil.copytree(records, copy)
    app_store.put_file(sid, "b.txt", b"b")
    kept = json.loads(app_store.get_session_json(sid))
    assert [f["name"] for f in kept["files"]] == ["a.txt", "b.txt"]
    mtime = records.stat().st_mtime_ns
    records.rename(old)
    copy.rename(records)
    os.utime(records, ns=(mtime, mtime))
    assert [f["name"] for f in json.loads(app_store.get_session_json(sid))["files"]] == ["a.txt"]


def test_session_json_rewritten_in_place_with_its_times_put_back_is_read_again(
    app_store: Store, app_config: appconfig.Config
) -> None:
    # Another process rewrites session.json with bytes of the same length and puts its
    # mtime back (`touch -d`): the kept bytes are keyed on the ctime too, which no process
    # can set, so the rewrite is read.
    app_store.sessions.meta.settled_ns = 0  # keep answers at once, not after 2 s
    sid = app_store.create_session("aaaa", {})["id"]
    assert app_config.data_root is not None
    path = app_config.data_root / "sessions" / sid / "session.json"
    before = path.stat()
    assert json.loads(app_store.get_session_json(sid))["title"] == "aaaa"
    assert json.loads(app_store.get_session_json(sid))["title"] == "aaaa"  # kept now
    with path.open("r+b") as file:
        file.write(edited(path.read_bytes(), b'"aaaa"', b'"bbbb"'))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert json.loads(app_store.get_session_json(sid))["title"] == "bbbb"
    assert app_store.get_session(sid)["title"] == "bbbb"


def test_settings_changed_between_two_loads_in_one_process_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `load` keeps what dynaconf read of the files, keyed on their bytes: a rewrite of the
    # same length with its times put back, a .secrets.toml swapped by rename, a local file
    # added, and a variable changed are each read by the next load.
    project = Path(appconfig.__file__).resolve().parent.parent
    for name in ("settings.toml", ".secrets.toml"):
        shutil.copy2(project / name, tmp_path / name)
    monkeypatch.setenv("APP_SETTINGS_DIR", str(tmp_path))
    monkeypatch.delenv("APP_PORT", raising=False)
    assert appconfig.load("testing").port == 8001
    settings = tmp_path / "settings.toml"
    before = settings.stat()
    settings.write_text(settings.read_text().replace("port = 8001", "port = 8002"))
    os.utime(settings, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert settings.stat().st_size == before.st_size
    assert appconfig.load("testing").port == 8002
    secrets = tmp_path / ".secrets.toml"
    token = appconfig.load("testing").api_token
    assert token
    swapped = tmp_path / ".secrets.new"
    swapped.write_text(secrets.read_text().replace(token, token.upper()))
    swapped.rename(secrets)
    assert appconfig.load("testing").api_token == token.upper()
    monkeypatch.setenv("APP_PORT", "8003")
    assert appconfig.load("testing").port == 8003
    monkeypatch.delenv("APP_PORT")
    assert appconfig.load("testing").port == 8002


def test_a_root_on_a_local_disk_reads_on_the_loop_and_no_other_filesystem_does(
    app_store: Store, app_config: appconfig.Config
) -> None:
    assert app_config.data_root is not None
    assert filesystem_type(app_config.data_root) in LOCAL_FILESYSTEMS
    assert app_store.reads_may_wait is False
    # proc is neither local disk nor memory the app knows; nor are nfs4, fuse.sshfs or cifs.
    assert filesystem_type(Path("/proc/self")) == "proc"
    assert not {"proc", "nfs", "nfs4", "cifs", "smb3", "fuse", "fuse.sshfs", "9p", None} & (
        LOCAL_FILESYSTEMS
    )
