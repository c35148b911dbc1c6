"""Red team 49 on integrity: the trash's record of a lost file, and the audit log's appends.

Real commands on real files, real servers (one under ``strace``). What broke:

- A file's trash entry whose bytes were removed from outside the app (red team 48's entry of
  reason ``lost``, which keeps the record of a file ``fsck`` took the bytes of; or a deleted
  version whose copy went the same way), once its session was deleted or purged: every
  repair, and so every server's start-up, took it for "a file lost that stopped before its
  commit; the file is unchanged" and removed it, with the name, size and SHA-256 that find
  the bytes. The session's copy in the trash is now read as ``sessions/`` is.
- The bytes of such a file found and put back (into its entry, or where ``fsck`` took them
  from): ``check`` said clean, and the acknowledged file, which no client deleted, stayed
  out of its session for good without a word. ``check`` names it (``file-lost-found``) with
  the restore that puts it back.
- Two changes of a server at once whose audit lines fit under the file size limit one at a
  time, not both: the append that did not fit cut the log back to the size it had read,
  past the other change's line, acknowledged: both deletes answered 200, neither in
  ``audit.jsonl``. An append now holds a lock of the process from its look at the size to
  its fsync.

What held is kept too: bytes put back wrong, half, as a link, a directory or a FIFO are
refused by a restore and left by the repair; a server whose start-up fsync failed refuses
every write route, naming why, and ``GET /health`` says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import forked_app
import httpx
from faults import attach, detach, needs_strace
from test_redteam_s48_integrity import _app_under_strace, _half_replaced
from test_server_e2e import app_env, run_app

from app.config import Config, load
from app.dataroot import _AUDIT_LINE_ROOM
from app.lock import read_holder
from app.storage import open_storage
from app.testing.live_server import stop_server


def _published(root: Path, tracer: subprocess.Popen[bytes]) -> int:
    """The port a server started under strace published (the holder is strace's child)."""
    while not ((holder := read_holder(root)) and holder.get("port")):
        assert tracer.poll() is None, "app serve exited"
        time.sleep(0.01)
    return int(holder["port"])


def _headers(config: Config) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_token}"} if config.api_token else {}


def _lost_record(config: Config, title: str) -> tuple[str, dict, Path, bytes]:
    root = config.data_root
    data = f"{title}: acknowledged bytes fsck moved to lost+found".encode()
    with open_storage(config, writer=True, kind="tests", wanted="make") as store:
        sid = store.create_session(title)["id"]
        store.put_file(sid, "x.txt", data)
    record = json.loads((root / "sessions" / sid / "records" / "x.txt").read_bytes())
    found = root.parent / f"lost+found-{sid}"
    (root / "sessions" / sid / "blobs" / record["blob"]).rename(found)
    return sid, record, found, data


def _repaired_lost(
    config: Config, title: str
) -> tuple[dict[str, str], str, dict[str, Any], Path, bytes, Path]:
    """`_lost_record`, then the repair that moves the record into the trash: the commands'
    environment, the session, the record, where the bytes went, the bytes, and the entry."""
    env = app_env(config.data_root)
    sid, record, found, data = _lost_record(config, title)
    assert run_app("data", "check", "--repair", env=env).returncode == 0
    (entry,) = (config.data_root / ".trash").glob(f"*-{sid}-file-*")
    return env, sid, record, found, data, entry


def test_a_lost_files_entry_outlives_its_sessions_delete_and_a_repair(app_config: Config) -> None:
    env, sid, record, found, data, entry = _repaired_lost(app_config, "deleted after")
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        store.delete_session(sid)
    # The session in the trash, the entry is no crash's leftover: it was removed ("a file
    # lost that stopped before its commit; the file is unchanged") with the name, size and
    # SHA-256 that find the bytes.
    for args in (("data", "check"), ("data", "check", "--repair")):
        done = run_app(*args, env=env)
        assert done.returncode == 65, done.stdout + done.stderr
        assert "file-damaged" in done.stdout and entry.name in done.stdout, done.stdout
        assert "trash-manifest-only" not in done.stdout, done.stdout
    assert json.loads((entry / "trash.json").read_bytes())["entry"]["sha256"] == record["sha256"]
    # The session back, the bytes put back: the file is restored, checked.
    assert run_app("sessions", "restore", sid, env=env).returncode == 0
    found.rename(entry / "x.txt")
    restored = run_app("sessions", "restore", sid, "--file", "x.txt", env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert run_app("data", "check", env=env).returncode == 0
    with open_storage(app_config, writer=False, kind="tests", wanted="read") as store:
        handle, _ = store.open_file(sid, "x.txt")
        with handle:
            assert handle.read() == data


def test_a_lost_file_whose_bytes_are_back_is_named_until_it_is_back_in_its_session(
    app_config: Config,
) -> None:
    root = app_config.data_root
    env = app_env(root)
    into_entry = _lost_record(app_config, "put back into its entry")
    into_blobs = _lost_record(app_config, "put back where fsck took them")
    assert run_app("data", "check", "--repair", env=env).returncode == 0
    entries = {}
    for sid, *_ in (into_entry, into_blobs):
        (entries[sid],) = (root / ".trash").glob(f"*-{sid}-file-*")
    found = into_entry[2]
    found.rename(entries[into_entry[0]] / "x.txt")
    sid, record, found, _ = into_blobs
    found.rename(root / "sessions" / sid / "blobs" / record["blob"])
    # The second is moved into its entry by the repair; then both were "clean", each file
    # out of its session, which no client deleted, without a word.
    repaired = run_app("data", "check", "--repair", env=env)
    assert "trash-unfinished" in repaired.stdout, repaired.stdout
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 65, checked.stdout + checked.stderr
    for sid, entry in entries.items():
        line = next(x for x in checked.stdout.splitlines() if entry.name in x)
        assert line.startswith("file-lost-found"), checked.stdout
        assert f"`app sessions restore {sid} --file x.txt` puts it back" in line, line
        restored = run_app("sessions", "restore", sid, "--file", "x.txt", env=env)
        assert restored.returncode == 0, restored.stdout + restored.stderr
    assert run_app("data", "check", env=env).returncode == 0


def test_a_lost_version_a_client_uploaded_again_and_deleted_is_not_named_lost(
    app_config: Config,
) -> None:
    env, sid, _, found, _, entry = _repaired_lost(app_config, "superseded")
    found.rename(entry / "x.txt")
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        store.put_file(sid, "x.txt", b"uploaded again")
        store.delete_file(sid, "x.txt")
    # A restore brings back the version the client deleted, not this one: nothing to name.
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_bytes_put_back_wrong_into_a_lost_files_entry_are_refused_and_kept(
    app_config: Config,
) -> None:
    env, sid, record, found, data, entry = _repaired_lost(app_config, "put back")
    put = entry / "x.txt"
    restore = ("sessions", "restore", sid, "--file", "x.txt")
    wrong = {
        "SHA-256 ": lambda: put.write_bytes(b"x" * len(data)),
        f"holds {len(data) // 2} bytes": lambda: put.write_bytes(data[: len(data) // 2]),
        "holds a symbolic link": lambda: put.symlink_to(found),
        "holds a directory": put.mkdir,
        "holds a FIFO": lambda: os.mkfifo(put),
    }
    for said, make in wrong.items():
        make()
        refused = run_app(*restore, env=env)
        assert refused.returncode == 65, refused.stdout + refused.stderr
        assert said in refused.stderr and entry.name in refused.stderr, refused.stderr
        assert record["sha256"] in refused.stderr or "its trash.json" in refused.stderr
        for _ in range(2):
            repaired = run_app("data", "check", "--repair", env=env)
            assert repaired.returncode == 65 and "file-damaged" in repaired.stdout, repaired
        assert json.loads((entry / "trash.json").read_bytes())["blob"] == record["blob"]
        put.rmdir() if put.is_dir() and not put.is_symlink() else put.unlink()


@needs_strace
def test_a_server_whose_start_up_fsync_failed_refuses_every_write_route_and_says_why(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    sid, entry, _ = _half_replaced(app_config, "start-up")
    env = app_env(root)
    log = tmp_path / "serve.log"
    serve = _app_under_strace(["serve", "--port", "0"], "fsync:error=EIO:when=1", entry)
    with log.open("wb") as out:
        process = subprocess.Popen(serve, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        port = _published(root, process)
        url = f"http://127.0.0.1:{port}"
        files = f"/sessions/{sid}/files"
        with httpx.Client(base_url=url, headers=_headers(app_config), timeout=30) as http:
            while True:  # it answers 503 (writes stopped): not what wait_until_serving waits for
                try:
                    health = http.get("/health")
                    break
                except httpx.TransportError:
                    assert process.poll() is None, log.read_text()
                    time.sleep(0.01)
            assert health.status_code == 503 and health.json()["status"] == "writes_stopped"
            assert "an fsync" in health.json()["reason"], health.text
            for method, path, extra in (
                ("POST", "/sessions", {"json": {"title": "x"}}),
                ("PUT", f"{files}/a.txt", {"content": b"new"}),
                ("PUT", f"{files}/n.txt", {"content": b"new"}),
                ("POST", files, {"files": {"file": ("m.txt", b"zz")}}),
                ("DELETE", f"{files}/a.txt", {}),
                ("DELETE", f"/sessions/{sid}", {}),
                ("POST", "/trash/empty", {}),
            ):
                refused = http.request(method, path, **extra)
                assert refused.status_code == 503, (method, path, refused.text)
                said = refused.json()["detail"]
                assert f"cannot {method} {path}: an fsync" in said, said
                assert "until it is restarted" in said and "`dmesg`" in said, said
            assert http.get(f"{files}/a.txt").content == b"start-up version 2"
    finally:
        holder = read_holder(root)
        if holder and holder.get("pid"):
            os.kill(int(holder["pid"]), signal.SIGTERM)  # the server, not strace
        process.wait()


def _opened(pid: int, path: Path) -> int:
    """How many descriptors of ``pid`` are open on ``path``."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd) == str(path)
    return count


def _in_write_to(pid: int, path: Path) -> bool:
    """Whether a thread of ``pid`` is in a ``write`` to ``path`` (stopped there by strace)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            call = (task / "syscall").read_text().split()
            if call[0] == "1" and os.readlink(f"/proc/{pid}/fd/{int(call[1], 16)}") == str(path):
                return True
    return False


@needs_strace
def test_an_audit_line_that_does_not_fit_takes_back_only_itself_not_anothers(
    tmp_path: Path,
) -> None:
    root = tmp_path / "live-data"
    env = app_env(root)
    config = load("testing", environ=env)
    process, url = forked_app.start_server(env, root, tmp_path / "serve.log")
    audit = root / "audit.jsonl"
    long_name = "a" * 250
    try:
        with httpx.Client(base_url=url, headers=_headers(config), timeout=60) as http:
            one = http.post("/sessions", json={"title": "one"}).json()["id"]
            two = http.post("/sessions", json={"title": "t" * 300}).json()["id"]
            assert http.put(f"/sessions/{one}/files/{long_name}", content=b"a").status_code == 201
            # Each line's length, from a change of each kind made before: a line holds the
            # server's command line, whose length is the checkout's (a fixed room of 1,240
            # bytes held both lines in /work/main and one in /check/work/main).
            three = http.post("/sessions", json={"title": "three"}).json()["id"]
            four = http.post("/sessions", json={"title": "t" * 300}).json()["id"]
            assert http.put(f"/sessions/{three}/files/{long_name}", content=b"a").status_code == 201
            lengths = []
            for change in (f"/sessions/{three}/files/{long_name}", f"/sessions/{four}"):
                before = audit.stat().st_size
                assert http.delete(change).status_code == 200
                lengths.append(audit.stat().st_size - before)
            last = json.loads(audit.read_text().splitlines()[-1])
            # Room for the longer line and for the check's own reserve, not for both lines:
            # each change passes the check of room made before it (`_refuse_audit_at_limit`,
            # which counts the command line and the HTTP client the line names), both at
            # this size.
            asked = len(json.dumps(last["argv"])) + len(json.dumps(last["client"]))
            room = max(*lengths, _AUDIT_LINE_ROOM + asked) + 8
            assert room < sum(lengths), (room, lengths)
            size = audit.stat().st_size
            # (The limit is every file's: the file's trash manifest, 1,177 bytes with its
            # own content_sha256 since rows67, must fit under it too.)
            limit = f"--fsize={size + room}:unlimited"
            subprocess.run(["prlimit", f"--pid={process.pid}", limit], check=True)
            # The first change's write to the log held (a minute at most) until the second
            # has opened the log for its own line, whose room it checks at once: both changes
            # have read the log's size before either line is written. A half-second hold
            # instead failed under load (the second change came after the first's line, and
            # both fitted).
            tracer = attach(process.pid, "write:delay_enter=60000000:when=1", audit)
            try:
                with (
                    ThreadPoolExecutor(2) as pool,
                    httpx.Client(base_url=url, headers=_headers(config), timeout=60) as other,
                ):
                    first = pool.submit(http.delete, f"/sessions/{one}/files/{long_name}")
                    while not _in_write_to(process.pid, audit):
                        assert not first.done(), first.result().text
                    second = pool.submit(other.delete, f"/sessions/{two}")
                    while _opened(process.pid, audit) < 2:
                        assert not (first.done() or second.done()), second.result().text
                        time.sleep(0.005)
                    time.sleep(0.2)  # from its open to its check: a few lines of Python
                    detach(tracer)
                    assert first.result().status_code == 200
                    assert second.result().status_code == 200
            finally:
                detach(tracer)
    finally:
        stop_server(process)
    # The line that did not fit was taken back to the size read before the other's was
    # written: both acknowledged deletes were gone from the log.
    lines = audit.read_text().splitlines()[-2:]
    assert sum(long_name in line or two in line for line in lines) == 1, lines
