"""Red team 64 on integrity (branch rt-integrity64): see docs/explanation/attacks/.

What broke: a request that takes a body but gives it no length, neither ``Content-Length``
nor ``Transfer-Encoding: chunked``. Such a request has no body (RFC 9112, 6.3), and what its
client sends after the head is read as the next request; on HTTP/1.0, whose client cannot
send chunks, a body can only be ended by closing, which RFC 1945 (7.2.2) forbids. The server
acted on the request as bodiless and acknowledged it:

- a file's ``PUT`` (an HTTP/1.0 client, a client streaming without chunks, one that sent
  ``Expect: 100-continue`` and no length) was a 201 for a file of 0 bytes, or a 200 that
  replaced the current version by 0 bytes, the bytes sent dropped without a word;
- a ``POST /sessions`` on HTTP/1.0 with its JSON was a 201 for a session without the title
  and metadata the body held.

What changed: such a request is refused before its body is read, 411 ``length_required``
(RFC 9110, 15.5.12), naming what would have been stored and the header that resolves it, and
the connection closes (what follows the head cannot be told from a request). A file's
``PUT`` and a form's ``POST`` need a length on either version; ``POST /sessions`` on HTTP/1.0
only (on HTTP/1.1, ``curl -X POST`` with no body still makes an untitled session). An
explicit ``Content-Length: 0`` stores an empty file, as before.

One real ``app serve`` for the module, raw sockets on 127.0.0.1.

And ``app data check --repair`` whose audit lines the log refused (``ENOSPC`` at every write
to ``audit.jsonl``, strace attached to this process for the one command): the repairs were
made and their lines went to the command's error output, but its summary said "the audit
log lists them", and the log held none. The local check's report now carries the first
line the root could not write (``CheckReport.unaudited``, as the remote backend's does), and
the command says the log could not record them, and where their record is.

And a data root whose ext4 made itself read-only under a live server (``errors=remount-ro``):
every change was refused 503 ``storage_read_only``, every acknowledged byte served, but ``GET
/health`` said ``ok``: Linux 6.x keeps ext4's ``emergency_ro`` to itself, and ``statvfs``
says read-write. A change refused ``EROFS`` now has the health read the mount table too: 503
``writes_stopped``; and ``app doctor``, which said nothing of it where ``app serve`` is
refused, says so. A real ``app serve`` on ext4 on a loop device, in a mount namespace of its
own (tests/own_mounts.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import own_mounts
import pytest
from click.testing import CliRunner
from faults import a_root_to_repair, attached, needs_strace
from live_http import a_file, a_session
from live_http import sent_closed as _sent
from redteam_s19_http import server_and_client
from test_server_e2e import app_env

from app.cli import cli
from app.config import REMOTE, Config
from app.dataroot import AUDIT_FILE
from app.testing import LiveServer

FORM = "multipart/form-data; boundary=B"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """One server for the module; each test works in sessions of its own."""
    with server_and_client(tmp_path_factory) as both:
        yield both


def _sessions(client: httpx.Client) -> list[str]:
    return [s["id"] for s in client.get("/sessions", params={"limit": 100}).json()["items"]]


def test_a_body_without_a_length_is_refused_and_nothing_acknowledged_is_emptied(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    server, client = served
    path = a_file(server, client, b"version 1")
    session = path.split("/")[2]
    before = _sessions(client)
    form = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="m.txt"\r\n\r\n'
        b"hello\r\n--B--\r\n"
    )
    refused = [
        # An HTTP/1.0 client ending its body by closing: the file was replaced by 0 bytes.
        (f"PUT {path} 1.0", "", b"version 2"),
        # HTTP/1.1 without chunks: its bytes were the "next request".
        (f"PUT {path}", "", b"version 2"),
        (f"PUT {path}", "Expect: 100-continue\r\n", b""),
        (f"PUT /sessions/{session}/files/new.txt", "", b"new bytes"),
        (f"POST /sessions/{session}/files", f"Content-Type: {FORM}\r\n", form),
        # HTTP/1.0's JSON: a session without its title and metadata.
        ("POST /sessions 1.0", "Content-Type: application/json\r\n", b'{"title": "lost?"}'),
    ]  # fmt: skip
    for line, extra, body in refused:
        status, problem = _sent(server, line, extra, body)
        assert status == 411, (line, status, problem)
        assert problem["code"] == "length_required", problem
        message = problem["message"]
        assert "neither Content-Length nor Transfer-Encoding" in message, message
        assert "Nothing was changed, and the connection is closed" in message, message
        assert "Content-Length: <its size>" in message, message
        assert "an empty body is Content-Length: 0" in message, message
    assert "0 bytes (an existing one replaced by them)" in _sent(server, *refused[0])[1]["message"]
    assert "chunked" not in _sent(server, *refused[0])[1]["message"]
    assert "Transfer-Encoding: chunked" in _sent(server, *refused[1])[1]["message"]
    assert "without the title and metadata" in _sent(server, *refused[-1])[1]["message"]

    assert client.get(path).content == b"version 1"
    listed = client.get(f"/sessions/{session}/files").json()["items"]
    assert [item["name"] for item in listed] == ["kept.txt"]
    assert _sessions(client) == before

    # What a length frames is taken as before: an explicit empty file, an HTTP/1.1 POST
    # /sessions with no body at all (curl -X POST), chunks.
    empty = f"/sessions/{a_session(server)}/files/empty.txt"
    status, entry = _sent(server, f"PUT {empty} 1.0", "Content-Length: 0\r\n")
    assert (status, entry["size"]) == (201, 0)
    status, made = _sent(server, "POST /sessions", "Connection: close\r\n")
    assert (status, made["title"]) == (201, "")
    chunked = b"9\r\nversion 3\r\n0\r\n\r\n"
    status, entry = _sent(server, f"PUT {path}", "Transfer-Encoding: chunked\r\n", chunked)
    assert (status, entry["size"]) == (200, 9)
    assert client.get(path).content == b"version 3"


@needs_strace
def test_a_repair_whose_audit_lines_fail_says_so_rather_than_the_log_lists_them(
    app_config: Config,
) -> None:
    if app_config.backend == REMOTE:
        pytest.skip("the remote backend's check says so since red team 49")
    root = app_config.data_root
    orphan = a_root_to_repair(app_config)
    blobs = orphan.parent

    with attached(os.getpid(), "write:error=ENOSPC", root / AUDIT_FILE):
        result = CliRunner().invoke(cli, ["data", "check", "--repair"], catch_exceptions=False)
    # Before: "repaired 1 finding(s); the audit log lists them", which held none of its lines.
    assert "the audit log lists them" not in result.stdout, result.stdout
    assert (
        "repaired 1 finding(s); the audit log could not record them (No space left on device, "
        "at its clear-tmp line): their record is in this command's log, above"
    ) in result.stdout, result.stdout
    assert result.exit_code == 0  # the repairs were made, as on the remote backend
    assert not orphan.exists() and not (root / ".tmp" / "upload-leftover").exists()
    assert "check-repair" not in (root / AUDIT_FILE).read_text()

    # The move it made is found again, and its line written (trash-unaudited); nothing lost.
    again = CliRunner().invoke(cli, ["data", "check", "--repair"], catch_exceptions=False)
    assert "trash-unaudited" in again.stdout and "the audit log lists them" in again.stdout
    assert (blobs.parent / "records" / "a.txt").exists()
    trashed = [
        p
        for p in (root / ".trash").rglob("*")
        if p.is_file() and p.read_bytes() == b"never acknowledged"
    ]
    assert len(trashed) == 1


#: In a mount namespace of its own (tests/own_mounts.py): an ext4 image on a loop device
#: (``mount -o loop`` detaches it with its mount), a real ``app serve`` forked on a root
#: there, a file put; then ext4's own error handling (``errors=remount-ro``, set off by
#: writing its sysfs ``trigger_fs_error``, as a disk error would), a replace and the health.
_EMERGENCY_READ_ONLY = r"""
import json, os, runpy, signal, subprocess, sys, time
from pathlib import Path
import httpx
from app.lock import read_holder

image, at, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with open(image, "wb") as sparse:
    sparse.truncate(16 << 20)
subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
os.makedirs(at)
subprocess.run(["mount", "-t", "ext4", "-o", "loop,errors=remount-ro", image, at], check=True)
server = os.fork()
if server == 0:
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlives the script
    sys.argv[1:] = ["serve", "--port", "0"]
    try:
        runpy.run_module("app", run_name="__main__", alter_sys=True)
    finally:
        os._exit(0)
seen = {}
try:
    while not ((holder := read_holder(root) or {}).get("pid") == server and holder.get("port")):
        assert os.waitpid(server, os.WNOHANG) == (0, 0), "app serve exited"
        time.sleep(0.01)
    token = {"Authorization": "Bearer " + os.environ["APP_API_TOKEN"]}
    url = f"http://127.0.0.1:{holder['port']}"
    with httpx.Client(base_url=url, headers=token, timeout=30) as http:
        session = http.post("/sessions", json={}).json()["id"]
        path = f"/sessions/{session}/files/kept.bin"
        seen["put"] = http.put(path, content=b"acknowledged").status_code
        device = os.stat(root).st_dev
        block = f"/sys/dev/block/{os.major(device)}:{os.minor(device)}"
        trigger = f"/sys/fs/ext4/{os.path.basename(os.readlink(block))}/trigger_fs_error"
        if not os.path.exists(trigger):
            print(json.dumps({"skip": "this kernel's ext4 has no trigger_fs_error"}))
            sys.exit(0)
        with open(trigger, "w") as error:
            error.write("1")
        seen["statvfs_read_only"] = bool(os.statvfs(root).f_flag & os.ST_RDONLY)
        from app.config import load
        from app.storage import probe

        seen["doctor"] = [[p.problem, p.exit_code] for p in probe(load("testing"))]
        seen["health_before"] = http.get("/health").json()
        replaced = http.put(path, content=b"refused")
        seen["replace"] = [replaced.status_code, replaced.json()]
        health = http.get("/health")
        seen["health"] = [health.status_code, health.json()]
        seen["served"] = http.get(path).content.decode()
finally:
    os.kill(server, signal.SIGKILL)  # its stop is not what this checks
    os.waitpid(server, 0)
    subprocess.run(["umount", at], check=False)
print(json.dumps(seen))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mkfs.ext4") is None or not Path("/sys/fs/ext4").is_dir(),
    reason="ext4's error handling takes root (a mount), mkfs.ext4(8) and a kernel with ext4",
)
def test_health_says_writes_stopped_when_ext4_makes_itself_read_only(
    app_config: Config, tmp_path: Path
) -> None:
    if app_config.backend == REMOTE:
        pytest.skip("a local root's filesystem")
    if (
        not any(Path("/sys/fs/ext4").glob("*/trigger_fs_error"))
        and not Path("/sys/fs/ext4/features").is_dir()
    ):
        pytest.skip("this kernel's ext4 has no trigger_fs_error")
    at, root = tmp_path / "ext4", tmp_path / "ext4" / "data"
    env = app_env(root, APP_API_TOKEN=app_config.api_token or "")
    done = own_mounts.python_c(
        _EMERGENCY_READ_ONLY, str(tmp_path / "disk.img"), str(at), str(root), env=env
    )
    seen = json.loads(done.stdout.splitlines()[-1])
    if "skip" in seen:
        pytest.skip(seen["skip"])
    assert seen["put"] == 201
    assert seen["statvfs_read_only"] is False  # ext4's emergency_ro: the mount says rw
    status, problem = seen["replace"]
    assert (status, problem["code"]) == (503, "storage_read_only"), problem
    assert "nothing was changed" in problem["message"]
    # Before: 200 "ok" while every change was refused; a monitor saw nothing.
    status, health = seen["health"]
    assert (status, health["status"]) == (503, "writes_stopped"), health
    assert "the data root's filesystem is read-only" in health["reason"], health
    assert seen["served"] == "acknowledged"
    # And `app doctor` said nothing of it, where `app serve` is refused (74).
    [(problem, code)] = seen["doctor"]
    assert "the data root's filesystem is read-only" in problem and code == 74, seen["doctor"]
