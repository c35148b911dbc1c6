"""Red team 37 on operations: what an operator does on a real host, following the docs or
making the usual mistakes.

Each case is real: an `app serve` child on a real data root, its lock a real flock, the
operator's command run on the files as an operator runs it (``cp -a``, ``mv``). Those that
broke: a backup copied back over a live root wrote over the lock file's holder (so `app
status` and every refusal described the copy's dead server), a data root moved while its
server ran was reported as a deleted lock file, and a server that refused every write
because a directory of its root was moved answered ``GET /health`` with ``ok``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import forked_app
import httpx
import pytest
from faults import attached, needs_strace
from test_server_e2e import Server, app_env, run_app, wait_for

from app.lock import RootLock
from app.sandbox import command_line
from app.testing import published_port
from app.testing.live_server import make_first_deploy_root


def _start(servers: list[Server], tmp_path: Path, root: Path, **extra: str) -> Server:
    server = Server(app_env(root, **extra), tmp_path / f"server-{len(servers)}.log")
    servers.append(server)
    return server.wait_ready()


def _named(lock: Path) -> object:
    """The pid the lock file names; ``None`` while its holder rewrites it in place (the app
    writes, then cuts to length: a longer earlier JSON's tail is read meanwhile, which the
    app's own readers retry) or while cp has emptied it."""
    try:
        return json.loads(lock.read_text() or "{}").get("pid")
    except json.JSONDecodeError:
        return None


def test_a_backup_copied_over_a_live_root_does_not_leave_the_copys_holder_named(
    servers: list[Server], tmp_path: Path
) -> None:
    # The usual mistake: `cp -a backup/. root/` with the server running, the backup holding
    # its `.server.lock` (taken while an earlier server ran). cp writes into the existing
    # lock file, so its inode stays the locked one: the server did not notice, and `app
    # status` and every refusal named the earlier server's pid "in a PID namespace of its
    # own", with its start time, for as long as the server ran.
    root = tmp_path / "data"
    first = _start(servers, tmp_path, root)
    backup = tmp_path / "backup"
    subprocess.run(["cp", "-a", f"{root}/.", str(backup)], check=True)
    assert first.stop() == 0
    server = _start(servers, tmp_path, root, APP_LOCK_CHECK_SECONDS="0.2")
    locked = (root / ".server.lock").stat().st_ino
    subprocess.run(["cp", "-a", f"{backup}/.", f"{root}/"], check=True)
    # cp wrote into the locked inode, its bytes the first server's. Not read here: the
    # watcher (every 0.2 s) may have written them again already, which under load it did
    # between cp's exit and the read (runs read the server's own pid). The log line below
    # is what says the bytes were written over.
    assert (root / ".server.lock").stat().st_ino == locked

    # The server names itself again, saying why (until then a probe says the file was
    # written over: the next test, without a server's watcher racing the probe).
    wait_for(
        lambda: _named(root / ".server.lock") == server.pid,
        "the server to name itself again in its lock file",
    )
    said = (
        f"lock file {root}/.server.lock did not name this process (its bytes were written "
        "over, as a backup copied into a live data root does. Copy backups in only while the "
        "server is stopped, and never copy .server.lock); named it now"
    )
    # Logged just after the file is written again: under load the test read the log between
    # the two (a CI dry run failed so).
    wait_for(lambda: said in server.output, "the server to say why it named itself again")
    status = run_app("status", env=app_env(root))
    assert f"held by: pid {server.pid}, kind server, profile testing" in status.stdout
    assert server.client().get("/health").status_code == 200


def test_a_lock_file_written_over_is_said_so_by_the_probe_naming_the_real_holder(
    tmp_path: Path,
) -> None:
    # The window before the holder writes its JSON again: `app status` and every refusal
    # named the copy's pid as the holder "in a PID namespace of its own".
    root = tmp_path / "data"
    root.mkdir()
    with RootLock(root, kind="server", profile="testing"):
        copied = {"pid": 999999, "kind": "server", "profile": "testing", "port": 1}
        with (root / ".server.lock").open("r+") as lock_file:  # in place, as cp writes
            lock_file.truncate(0)
            lock_file.write(json.dumps(copied) + "\n")
        status = run_app("status", env=app_env(root))
    # Its own command line, not the file's (red team 70: a `flock` was named as the server).
    assert (
        f"held by: pid {os.getpid()} ({command_line(os.getpid())}; the lock file names pid "
        "999999, which does not hold the lock, so the details after this are not this "
        "process's: they were written over, as a backup copied into a live data root does, "
        "or left by a holder that was killed, and the lock taken since by a program that "
        "writes nothing in it, such as `flock`; a server names itself again within "
        "lock_check_seconds, another program never does), kind server, profile testing"
    ) in status.stdout, status.stdout
    assert "serving:" not in status.stdout, status.stdout
    assert "PID namespace" not in status.stdout


def test_a_data_root_moved_under_its_server_is_said_to_be_moved_not_its_lock_deleted(
    servers: list[Server], tmp_path: Path
) -> None:
    # `mv /var/lib/app /var/lib/app.old` with the server running (a disk migration begun
    # too early). The server stopped, rightly, but said its lock file "was deleted" and
    # "Never delete .server.lock": the operator looked for who deleted a file nobody did.
    root = tmp_path / "data"
    server = _start(servers, tmp_path, root, APP_LOCK_CHECK_SECONDS="0.2")
    root.rename(tmp_path / "moved")
    assert server.wait_exit() == 70
    assert (
        f"stopping: data root {root} changed while open: the data root itself was moved, "
        "renamed or deleted since it was opened, so nothing is at its path now: the directory "
        f"this process opened is at {tmp_path}/moved (`mv {tmp_path}/moved {root}` puts it "
        "back). Nothing was changed; this process stops writing to it. Put the directory back"
    ) in server.output, server.output
    assert "Never delete .server.lock" not in server.output


def test_a_lock_file_deleted_by_hand_is_still_said_to_be_deleted(
    servers: list[Server], tmp_path: Path
) -> None:
    # What the case above changed must not hide this one: the root is in place, its lock
    # file alone was deleted.
    root = tmp_path / "data"
    server = _start(servers, tmp_path, root, APP_LOCK_CHECK_SECONDS="0.2")
    (root / ".server.lock").unlink()
    assert server.wait_exit() == 70
    assert f"lock file {root}/.server.lock was deleted; " in server.output
    assert "Never delete .server.lock" in server.output


def test_health_is_not_ok_while_a_moved_sessions_directory_stops_every_write(
    servers: list[Server], tmp_path: Path
) -> None:
    # `mv sessions sessions.old` (or `rm -rf` of it) under a live server: every write is
    # refused (503 data_root_changed) and the server runs on, while GET /health, which the
    # deploy guide tells operators to watch, answered 200 "ok".
    root = tmp_path / "data"
    server = _start(servers, tmp_path, root)
    (root / "sessions").rename(root / "sessions.old")
    with server.client() as client:
        refused = client.post("/sessions", json={})
        assert refused.status_code == 503
        assert refused.json()["code"] == "data_root_changed"
        health = client.get("/health")
        assert health.status_code == 503, health.text
        assert health.json()["status"] == "writes_stopped"
        assert health.json()["reason"] == (
            "the data root's sessions/ was moved, replaced or deleted while the server ran: "
            "every change is refused until it is put back as it was"
        )
        assert client.get("/ready").status_code == 503
        (root / "sessions.old").rename(root / "sessions")
        assert client.get("/health").json()["status"] == "ok"
        assert client.post("/sessions", json={}).status_code == 201


@pytest.mark.parametrize("sent", [signal.SIGHUP, signal.SIGUSR1], ids=["HUP", "USR1"])
def test_a_reload_signal_stops_the_server_gracefully_for_a_restart_saying_so(
    servers: list[Server], tmp_path: Path, sent: signal.Signals
) -> None:
    # `kill -HUP` (a reload, as for nginx or gunicorn) or logrotate's `kill -USR1` killed
    # the server at once with the signal's default action: requests in flight cut, the
    # lock released by the kernel only, and not a line in the log about why it ended.
    root = tmp_path / "data"
    with forked_app.sighup_at_default():  # in a run started by `nohup`
        server = _start(servers, tmp_path, root)
    server.process.send_signal(sent)
    assert server.wait_exit() == 128 + sent
    assert (
        f"received {sent.name}: this server does not reload its settings or reopen files in "
        f"place, so it stops gracefully, as for SIGTERM, and exits {128 + sent} for its "
        "service manager to start it again (`systemctl restart app` does both)"
    ) in server.output, server.output
    assert f"stopped; releasing the hold on {root}" in server.output
    assert "held by: nobody" in run_app("status", env=app_env(root)).stdout
    assert (root / ".server.lock").read_bytes() == b""  # released in order, not by a kill


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("capsh") is None,
    reason="a server refused by a mode as any user is: root without its capabilities (capsh)",
)
@needs_strace
def test_a_data_root_made_unreachable_under_its_server_is_said_so_not_a_deleted_lock(
    tmp_path: Path,
) -> None:
    # `chmod 000` (or a `chown` to another user) of the root while its server runs. /health
    # said nothing, then the server stopped saying its lock file "could not be checked";
    # "another process could now take the data root" and "Never delete .server.lock".
    root = tmp_path / "data"
    # The lock's check stops the server at its next turn, which came at any moment after
    # the chmod (every 2 s, from the server's start): where it came before /health was
    # asked, under load, the probe met a closed port ("Connection refused"). The check's
    # look at the lock file is held (strace delays it) until /health has answered; then it
    # looks, and stops the server. A short interval: it is held at its next look.
    env = app_env(root, APP_LOCK_CHECK_SECONDS="0.2")
    make_first_deploy_root(env, root)
    log = tmp_path / "server.log"
    drop = "--drop=cap_dac_override,cap_dac_read_search,cap_fowner"
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["capsh", drop, "--", "-c", 'exec "$0" -m app serve --port 0', sys.executable],
            env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{published_port(root, process, log)}"
        wait_for(lambda: "Started server process" in log.read_text(), "the server to start")
        # Its lstat of the lock file (RootLock.still_ours), the one call there: held for up
        # to an hour, a bound; detached (below), it goes on at once.
        with attached(process.pid, "newfstatat,statx:delay_enter=3600s", root / ".server.lock"):
            root.chmod(0)
            # /health trusts a layout it found intact for 50 ms (app.dataroot.layout_changed).
            wait_for(lambda: httpx.get(f"{url}/health").status_code == 503, "/health to say so")
            health = httpx.get(f"{url}/health")
        assert health.status_code == 503, health.text
        assert health.json()["reason"] == (
            "the data root's sessions/ became unreachable to the server (permission denied) "
            "while the server ran: every change is refused until it is put back as it was"
        )
        assert process.wait(timeout=60) == 70
    finally:
        root.chmod(0o700)
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    assert (
        f"stopping: data root {root} changed while open: its mode or owner no longer lets "
        "this process reach its lock file (permission denied: a chmod or chown while it ran?); "
        "give it back to the user the app runs as (`ls -ld` it, then `chown` or `chmod 0700`)"
    ) in output, output
    assert "Never delete .server.lock" not in output


def test_a_port_in_use_is_refused_naming_the_process_that_listens_on_it(tmp_path: Path) -> None:
    # A second profile's server started on production's port (or a stale one, or another
    # service): refused, rightly, with exit 69, but "Another process uses that port" named
    # nobody; the operator had to find it with `ss -ltnp`.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        # A second holder of the socket, whose command line has words with spaces and runs
        # past the 160 characters a message shows: it was named by its words joined with
        # spaces, cut at 200 characters without a mark (red team 75 on the documentation).
        words = ["sleep 30; :", "a b", "x" * 200]
        holder = subprocess.Popen(["sh", "-c", *words], pass_fds=[listener.fileno()])
        try:
            done = run_app("serve", "--port", str(port), env=app_env(tmp_path / "data"))
        finally:
            holder.kill()
            holder.wait()
    assert done.returncode == 69, done.stderr
    assert (
        f"error: cannot listen on 127.0.0.1:{port}: the address is already in use, by pid "
    ) in done.stderr, done.stderr
    # Each holder named, in the order /proc lists them (by pid, which wraps: this process's
    # may come after the holder's and its `sleep`'s).
    assert f"pid {os.getpid()} (" in done.stderr, done.stderr
    assert f"pid {holder.pid} (sh -c 'sleep 30; :' 'a b' xxxxx" in done.stderr, done.stderr
    assert "xxx...)" in done.stderr, done.stderr
    assert "). Another process uses that port; stop it, or choose another port" in done.stderr


FULL_DISK_SCRIPT = r"""
set -u
mount -t tmpfs -o size=1m tmpfs "$DISK"
mkdir -m 0700 "$APP_DATA_ROOT"
serve() {
    # The log is removed first: the backgrounded child truncates it only once it runs, and
    # until then the grep below found the first server's start in it (a loaded machine).
    rm -f "$LOG"
    "$PY" -m app serve --port 0 >"$LOG" 2>&1 &
    server=$!
    wait_for "Started server process"
}
wait_for() {  # bounded: 30 s at most, as test_server_e2e.wait_for
    tries=600
    until grep -qs "$1" "$LOG" || [ "$tries" -eq 0 ]; do sleep 0.05; tries=$((tries - 1)); done
}
serve; kill -TERM "$server"; wait "$server"  # lays the root out
dd if=/dev/zero of="$DISK/filler" bs=4k 2>/dev/null
serve
echo "== full"; "$PY" -m app status
rm "$DISK/filler"
wait_for "named it now"
echo "== room"; "$PY" -m app status
kill -TERM "$server"; wait "$server"
echo "== log"; cat "$LOG"
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mounting a small tmpfs takes root and unshare(1)",
)
def test_a_server_that_could_not_name_itself_on_a_full_disk_is_named_by_the_kernel(
    tmp_path: Path,
) -> None:
    # A server that took its lock with no room for its JSON (a full disk) held the root
    # unnamed: `app status` and every refusal said "a process that published no details
    # (pid unknown)", and no `kill` to run, though the kernel lists the lock's pid; and it
    # stayed unnamed once there was room again.
    disk = tmp_path / "disk"
    disk.mkdir()
    root = disk / "data"
    env = app_env(root, APP_LOCK_CHECK_SECONDS="0.2", DISK=str(disk), PY=sys.executable)
    env["LOG"] = str(tmp_path / "server.log")
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", FULL_DISK_SCRIPT],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    full, _, rest = output.partition("== full")[2].partition("== room")
    room, _, log = rest.partition("== log")
    pid = int(log.split("(pid ")[1].split(")")[0])
    assert (
        f"held by: pid {pid} (" in full
        and "), which published no details in the lock file (it took the lock on a full "
        "disk, is releasing it, or the file was emptied by hand; or it is not a holder of "
        "the app but a program that writes nothing there, as `flock` around a backup)"
        in full
    ), full
    assert f"held by: pid {pid}, kind server, profile testing" in room, room
    assert "did not name this process" in log, log


def test_a_protected_profiles_secret_in_a_file_others_may_read_is_warned_of(
    tmp_path: Path,
) -> None:
    # `.secrets.local.toml` with production's api_token, mode 0644 (an editor's or a copy's
    # default): every user of the host could read the token, and `app doctor`, `app config`
    # and `app serve` said nothing. (Outside a test run that file is read; under one it is
    # not, so the check is called here on the file itself.)
    from app.config import Resolved, _readable_secrets

    secrets = tmp_path / ".secrets.local.toml"
    secrets.write_text('[production]\napi_token = "Zq3vX9kLm2Pw7RtY5sB8nC4dF6gH1jK0"\n')
    secrets.chmod(0o644)
    production = Resolved(
        "production",
        {"protected": True, "api_token": "Zq3vX9kLm2Pw7RtY5sB8nC4dF6gH1jK0"},
        {"api_token": ".secrets.local.toml [production]"},
        (),
    )
    warning = (
        f"{secrets} holds profile production's api_token and other users of this host may "
        f"read it (mode 0644): `chmod 600 {secrets}` (owned by the user the app runs as), or "
        "set APP_API_TOKEN in the service's environment instead"
    )
    assert _readable_secrets({"production": production}, [secrets]) == (warning,)
    secrets.chmod(0o600)
    assert _readable_secrets({"production": production}, [secrets]) == ()
    development = production._replace(profile="development", values={"api_token": "x" * 20})
    secrets.chmod(0o644)
    assert _readable_secrets({"development": development}, [secrets]) == ()
