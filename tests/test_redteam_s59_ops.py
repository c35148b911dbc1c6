"""Red team 59 on operations (branch rt-ops30): the states an operator meets, tried on real
commands.

What broke:

- a settings file's name that is there but names no regular file: ``.secrets.toml`` linked
  to a secrets volume that is not mounted (``/run/secrets/app.toml``), a directory or a FIFO
  at its name, ``settings.toml`` linked to ``/dev/null``. Each was read as absent
  (``Path.is_file()`` is false for all of them), and every value it sets with it: a
  profile's token from ``.secrets.toml`` became "(not set)", so development's (and
  testing's) server started and answered every request without one, ``app config`` and
  ``app doctor`` said ok; production was refused as "api_token is not set (from built-in
  default) ... set ... api_token in a secrets file", of a secrets file that sets it. Every
  settings file's name is now refused as what it is (``settings_not_a_file``, 78), naming
  the link's missing target (or the directory, the FIFO, the device), why, and the ``rm``
  (``rmdir``) that resolves it; a FIFO is never opened. A sandboxed run still reads no local
  file, whatever is at its name. ``APP_SETTINGS_DIR`` naming ``settings.toml`` itself (not
  its directory) was "no settings.toml found: looked in .../settings.toml"; it now says that
  is a file and gives the ``export`` that names its directory;
- ``app serve`` stopped with Ctrl-C twice (uvicorn's force quit) while an upload streamed:
  the client's 503 ``server_stopped`` said the request "ran past the 30 s it gives requests
  in flight (shutdown_grace_seconds, APP_SHUTDOWN_GRACE_SECONDS)", a fraction of a second
  after the first signal, which sends the operator to raise a grace that never ran out. The
  server now tells the middleware that answers a cancelled request whether a second SIGINT
  forced the stop, and the answer says so, with the one signal that lets requests finish;
- the data root's filesystem made read-only under a live server (ext4's
  ``errors=remount-ro``; here a read-only bind in a mount namespace): every change was
  refused 503 ``storage_read_only``, but ``GET /health`` and ``/ready`` said ok, so no
  monitor saw it. Both now answer 503 with the reason while it is read-only (one
  ``statvfs``), ok again once it is remounted read-write;
- ``app data purge`` stopped by SIGTERM or Ctrl-C wrote no audit line (its one line comes at
  the end), so every session it had moved was ``trash-unaudited``, where its message said
  at most the last one may lack its line; the stop now writes the line for those moved.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from forked_app import python_c
from test_server_e2e import Server, app_env, run_app
from waits import until

from app.config_files import read_files
from app.errors import SettingsNotAFileError, SettingsNotFoundError

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's settings, its committed ``.secrets.toml`` beside it."""
    directory = tmp_path_factory.mktemp("s59ops") / "settings"
    directory.mkdir()
    for name in ("settings.toml", ".secrets.toml"):
        shutil.copy(PROJECT / name, directory / name)
    return directory


def _refused(settings: Path, what: str, *, sandboxed: bool = True) -> None:
    with pytest.raises(SettingsNotAFileError) as refused:
        read_files({"APP_SETTINGS_DIR": str(settings)}, sandboxed=sandboxed)
    assert what in refused.value.message
    assert refused.value.exit_code == 78


def test_a_settings_file_that_is_no_regular_file_is_refused_not_left_out(
    settings: Path, tmp_path: Path
) -> None:
    env = app_env(tmp_path / "root", APP_SETTINGS_DIR=str(settings))
    secrets = settings / ".secrets.toml"
    kept = secrets.read_bytes()
    secrets.unlink()
    missing = tmp_path / "run-secrets" / "app.toml"  # a secrets volume that is not mounted
    secrets.symlink_to(missing)
    try:
        for command in (["config", "--json"],):
            done = run_app(*command, env=env)
            assert done.returncode == 78, (command, done.stdout, done.stderr)
            assert done.stdout == "", command  # no JSON of a profile that lost its token
            message = " ".join(done.stderr.split())
            assert f"the settings file {secrets}: it is a symbolic link to {missing}" in message
            assert "which does not exist" in message
            assert "the values it sets (a token, a data_root) would silently be missing" in message
            assert f"(`rm {secrets}`)" in message
            assert "Traceback" not in done.stderr
        # The class, through the same reader every command's load calls: a FIFO named, never
        # opened (an open would wait for a writer for ever); settings.toml linked to a device,
        # named rather than "no settings.toml found"; a directory at a local file's name,
        # refused where local files are read and left alone in a sandbox, which reads none.
        secrets.unlink()
        os.mkfifo(secrets)
        _refused(settings, "it is a FIFO (named pipe), where a regular file belongs")
        secrets.unlink()
        secrets.write_bytes(kept)
        main = settings / "settings.toml"
        main.rename(settings / "settings.toml.real")
        main.symlink_to("/dev/null")
        try:
            _refused(settings, "it is a symbolic link to /dev/null, which is a character device")
        finally:
            main.unlink()
            (settings / "settings.toml.real").rename(main)
        # APP_SETTINGS_DIR naming the file rather than its directory: said so, with the
        # export that names the directory, which then loads.
        with pytest.raises(SettingsNotFoundError) as refused:
            read_files({"APP_SETTINGS_DIR": str(settings / "settings.toml")}, sandboxed=True)
        export = f"`export APP_SETTINGS_DIR={settings}` names its directory"
        assert f"that is a file, not a directory: {export}" in refused.value.message
        assert read_files({"APP_SETTINGS_DIR": str(settings)}, sandboxed=True).profiles
        local = settings / "settings.local.toml"
        local.mkdir()
        try:
            _refused(settings, "it is a directory, where a regular file belongs", sandboxed=False)
            assert read_files({"APP_SETTINGS_DIR": str(settings)}, sandboxed=True).profiles
        finally:
            local.rmdir()
        # The remedies as written: the volume mounted (the file at the link's target), then
        # the link removed with the message's own `rm`; each time the settings load.
        secrets.unlink()
        secrets.symlink_to(missing)
        missing.parent.mkdir()
        missing.write_bytes(kept)
        loaded = read_files({"APP_SETTINGS_DIR": str(settings)}, sandboxed=True)
        assert "api_token" in loaded.data[secrets]["testing"]
        missing.unlink()
        remove = re.search(r"\(`(rm [^`]+)`\)", message)
        assert remove is not None, message
        subprocess.run(shlex.split(remove.group(1)), check=True)
        assert not secrets.is_symlink()
        assert read_files({"APP_SETTINGS_DIR": str(settings)}, sandboxed=True).profiles
    finally:
        secrets.unlink(missing_ok=True)
        secrets.write_bytes(kept)


def _until(condition: Callable[[], object], what: str, server: Server) -> None:
    """Wait for `condition`; fail with the server's output and whether it ignores SIGINT
    (started so by a run that ignores it: tests/conftest.py) where it never comes."""

    def explain() -> str:
        ignored = "unknown"
        with contextlib.suppress(OSError, ValueError, IndexError):
            status = Path(f"/proc/{server.pid}/status").read_text()
            mask = int(re.findall(r"^SigIgn:\s*(\w+)$", status, re.MULTILINE)[0], 16)
            ignored = str(bool(mask >> (signal.SIGINT - 1) & 1))
        return f"{what} (server {server.pid}, SIGINT ignored: {ignored}):\n{server.output}"

    until(condition, explain, lambda: server.process.poll() is None)


def test_a_request_a_second_ctrl_c_cuts_is_told_so_not_blamed_on_the_grace(
    tmp_path: Path,
) -> None:
    """``app serve`` stopped with Ctrl-C twice (uvicorn's force quit) while an upload streams:
    the 503 said the request "ran past the 30 s it gives requests in flight
    (shutdown_grace_seconds ...)", a fraction of a second after the first signal, and sent
    the operator to raise a grace that never ran out."""
    root = tmp_path / "root"
    # The stalled body is cut by the signals, never by the idle bound (408) of a slow run.
    env = app_env(root, APP_REQUEST_IDLE_SECONDS="120")
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        with server.client() as client:
            session = client.post("/sessions", json={"title": "upload"}).json()["id"]
        token = server.token
        head = (
            f"PUT /sessions/{session}/files/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: 1000000\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as upload:
            upload.sendall(head.encode() + b"x" * 65536)  # then the body stalls
            staging = root / ".tmp"
            # The server is streaming it to disk.
            _until(lambda: any(staging.iterdir()), "its upload file in .tmp/", server)
            os.kill(server.pid, signal.SIGINT)
            # Two signals sent at once are one (a pending signal is not queued twice): the
            # second goes once the server says, in its lock file, that it is stopping.
            lock = root / ".server.lock"
            _until(lambda: "stopping_since" in lock.read_text(), "stopping_since", server)
            os.kill(server.pid, signal.SIGINT)  # Ctrl-C again: stop at once
            answer = b""
            while chunk := upload.recv(65536):
                answer += chunk
        assert server.wait_exit() == 0, server.output
    finally:
        server.stop()
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 503"), answer
    message = json.loads(body)["message"]
    assert "was cut short: the server was told to stop at once (a second Ctrl-C or SIGINT" in (
        message
    )
    assert "ran past" not in message
    assert "stop it with one signal (`kill <pid>`, `systemctl stop`)" in message


_REMOUNT_UNDER_A_SERVER = """
"$PYTHON" -m app serve --port 0 > "$LOG" 2>&1 &
server=$!
while [ ! -e "$GO" ]; do
    kill -0 "$server" 2>/dev/null || exit 3
    sleep 0.01
done
mount --bind "$ROOT" "$ROOT" && mount -o remount,bind,ro "$ROOT" && touch "$DONE"
wait "$server"
"""


def test_health_and_ready_say_a_root_remounted_read_only_under_the_server(
    tmp_path: Path,
) -> None:
    """The data root's filesystem made read-only under a live server (ext4's
    ``errors=remount-ro`` after a disk error; here a read-only bind of the root over itself, in
    a mount namespace of the test's own): every change was refused 503 ``storage_read_only``
    while ``GET /health`` and ``/ready`` answered ok, so no monitor saw it."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux) for a mount namespace of its own")
    root, go, done = tmp_path / "root", tmp_path / "go", tmp_path / "mounted"
    env = app_env(root, PYTHON=sys.executable, LOG=str(tmp_path / "server.log"))
    env |= {"ROOT": str(root), "GO": str(go), "DONE": str(done)}
    shell = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", _REMOUNT_UNDER_A_SERVER],
        env=env,
    )
    holder: dict[str, object] = {}
    try:
        lock = root / ".server.lock"
        while "url" not in (holder := _holder(lock)):  # serving, with its address published
            assert shell.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.01)
        url = str(holder["url"])
        assert httpx.get(f"{url}/health").status_code == 200
        go.touch()
        while not done.exists():
            assert shell.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.01)
        health, ready = httpx.get(f"{url}/health"), httpx.get(f"{url}/ready")
        os.kill(int(str(holder["pid"])), signal.SIGTERM)
        assert shell.wait(60) == 0, (tmp_path / "server.log").read_text()
    finally:
        if shell.poll() is None:
            if "pid" in holder:
                os.kill(int(str(holder["pid"])), signal.SIGKILL)
            shell.wait(60)
    assert health.status_code == 503, health.text
    assert health.json()["status"] == "writes_stopped"
    assert "the data root's filesystem is read-only" in health.json()["reason"]
    assert "until it is remounted read-write; reads are served" in health.json()["reason"]
    assert ready.status_code == 503, ready.text
    assert "read-only" in ready.json()["checks"]["data root"]


def _holder(lock: Path) -> dict[str, object]:
    try:
        found = json.loads(lock.read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):  # not made, or being rewritten
        return {}
    return found if isinstance(found, dict) else {}


# Sessions made, then `app data purge` run in the same process, which sends itself SIGTERM
# (a job's `timeout`, `systemctl stop` of a maintenance unit) at its fifth move to the trash.
_PURGE_STOPPED = """
import os, signal, sys
from app.config import load
from app.storage import open_storage
with open_storage(load(), writer=True) as storage:
    for n in range(12):
        storage.create_session(f"s{n}", None)
moves = []
def stop_at_the_fifth(event, args):
    if event == "os.rename" and "/.trash/" in os.fsdecode(args[1]):
        moves.append(args[1])
        if len(moves) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
sys.addaudithook(stop_at_the_fifth)
sys.argv = ["app", "data", "purge"]
from app.cli import main
main()
"""


def test_a_purge_stopped_by_sigterm_audits_the_sessions_it_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``app data purge`` stopped by SIGTERM: it wrote its one audit line at the end, so every
    session moved so far was left without one (``app data check`` named 100 of 101 as
    ``trash-unaudited`` by hand), where its message promised that at most the last one may
    lack its line."""
    root = tmp_path / "root"
    env = app_env(root)
    for name in ("APP_DATA_ROOT", "ENV_FOR_DYNACONF", "APP_HOST"):
        monkeypatch.setenv(name, env[name])
    log = tmp_path / "purge.log"
    assert python_c(_PURGE_STOPPED, [], log).wait(120) == 143, log.read_text()
    done = log.read_text()
    assert "the last one may lack its trash entry's final move or its audit line" in (
        " ".join(done.split())
    )
    (line,) = [json.loads(text) for text in (root / "audit.jsonl").read_text().splitlines()]
    assert line["operation"] == "purge"
    assert line["details"]["stopped"] == "interrupted (SIGINT or SIGTERM)"
    moved = {p.name for p in (root / ".trash").iterdir()}
    assert set(line["details"]["entries"]) <= moved
    assert len(moved - set(line["details"]["entries"])) <= 1  # the one the stop came in
    check = run_app("data", "check", env=env)
    assert check.stdout.count("trash-unaudited") <= 1, check.stdout
