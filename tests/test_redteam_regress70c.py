"""Red team 70 on regress, the holder and the stamp: another profile's stamp copied over a
live local root (layer 5), and the run's refusal of a served testing port naming a `flock`
under a stale record as the server (layer 3).

Real parts: a real ``app serve`` (forked from the run's zygote) watching its lock every
0.2 s, and ``cp -a`` of another profile's backup over its root, as an operator restores the
wrong backup; a root opened in this process, its stamp written over in place as cp writes
it, for the writes refused between the watcher's look and the server's stop; a port this
process listens on and answers, and util-linux's ``flock(1)`` holding a root whose record a
killed server left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from test_server_e2e import Server, app_env

from app import config as appconfig
from app.dataroot import STAMP_FILE, open_root, read_stamp
from app.errors import StampChangedError
from app.lock import LOCK_FILE, holder_info, probe
from app.sandbox import command_line
from app.testing import guard


def _another_profiles_backup(root: Path, backup: Path) -> None:
    """A backup of `root` as another profile's (development's) would have it: its stamp."""
    backup.mkdir()
    stamp = {**(read_stamp(root) or {}), "profile": "development"}
    (backup / STAMP_FILE).write_text(json.dumps(stamp) + "\n")


def test_another_profiles_stamp_copied_over_a_live_root_stops_its_server(
    servers: list[Server], tmp_path: Path
) -> None:
    # Before: the server went on writing (a create answered 201) into a root whose stamp
    # named development; only its next start was refused (78).
    root = tmp_path / "data"
    server = Server(app_env(root, APP_LOCK_CHECK_SECONDS="0.2"), tmp_path / "server.log")
    servers.append(server)
    server.wait_ready()
    backup = tmp_path / "backup"
    _another_profiles_backup(root, backup)
    subprocess.run(["cp", "-a", f"{backup}/.", f"{root}/"], check=True)
    assert server.wait_exit() == 70
    assert (
        f"stopping: profile stamp {root / STAMP_FILE} now names profile 'development', and "
        "this process writes for profile 'testing': another profile's stamp was copied over "
        "it while this process ran (as `cp -a <another profile's backup>/. <root>/` writes "
        "it), so it refuses every write and stops"
    ) in server.output, server.output
    assert (
        "if it is to serve 'testing' still, hand it back once this process has stopped: "
        "`app data restamp --profile testing --from development`"
    ) in server.output, server.output


def test_writes_are_refused_503_once_the_stamp_is_found_to_name_another_profile(
    app_config: appconfig.Config,
) -> None:
    root = open_root(app_config, kind="server")
    try:
        stamp = root.path / STAMP_FILE
        assert root.stamp_changed() is None
        # The same profile's stamp written again (a restamp's rename, `check --repair`
        # marking it): nothing to stop for.
        stamp.write_text(json.dumps({**(read_stamp(root.path) or {}), "note": 1}))
        assert root.stamp_changed() is None
        root.ensure_held()
        developments = {**(read_stamp(root.path) or {}), "profile": "development"}
        with stamp.open("r+") as copied:  # in place, as cp writes into an existing file
            copied.truncate(0)
            copied.write(json.dumps(developments))
        reason = root.stamp_changed()
        assert reason == (
            "now names profile 'development', and this process writes for profile 'testing'"
        )
        with pytest.raises(StampChangedError) as refused:
            root.ensure_held()
        assert root.lost_error(reason) is refused.value
        assert refused.value.http_status == 503
        assert refused.value.exit_code == 70
        assert refused.value.to_dict() == {
            "code": "stamp_changed",
            "message": (
                "this server's data root is now stamped for profile 'development' (its "
                ".app-profile.json was written over while the server ran), not for "
                "'testing', which it serves, so it refuses every write and is stopping; "
                "nothing was written. The operator restores the root's own backup, or hands "
                "it back with `app data restamp --profile testing --from development`, then "
                "restarts the server"
            ),
        }
        assert root.layout_changed() == (
            "the data root's .app-profile.json was stamped for profile 'development'"
        )
    finally:
        root.close()


def test_the_runs_refusal_names_who_listens_on_the_port_not_a_flock_under_a_stale_record(
    app_config: appconfig.Config,
) -> None:
    # A server killed with SIGKILL left its JSON naming the testing port, `flock` holds its
    # lock since, and another process listens on that port. The run's refusal picked whom to
    # name by the record's port: "pid <flock's> (flock ...), serving the data root of
    # profile 'testing'", and left out the process that listens there.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        stop = threading.Event()

        def answer() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError), listener.accept()[0] as connection:
                    if connection.recv(4096):
                        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        try:
            refusal, flock = _refused_beside_a_flock_under_a_killed_servers_record(app_config, port)
        finally:
            stop.set()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                pass
            thread.join()
    assert refusal is not None
    assert (
        f"the testing profile's port {port} (settings.toml [testing]) is already served on "
        f"127.0.0.1 by pid {os.getpid()} ({command_line(os.getpid())}), a process outside "
        "this run"
    ) in refusal, refusal
    assert f"pid {flock}" not in refusal, refusal


def _refused_beside_a_flock_under_a_killed_servers_record(
    config: appconfig.Config, port: int
) -> tuple[str | None, int]:
    """The run's look at the testing port `port` (`guard.port_served`) beside `config`'s
    root, held by ``flock(1)`` under a record a server killed on `port` left: the refusal,
    and flock's pid."""
    root = config.data_root
    with open_root(config):
        pass
    lock = root / LOCK_FILE
    killed = subprocess.Popen(["true"])
    killed.wait()
    record = {**holder_info("server", "testing", port=port, root=root), "pid": killed.pid}
    lock.write_text(json.dumps(record) + "\n")  # in place: the inode stays the lock's
    flock = subprocess.Popen(
        ["flock", str(lock), "-c", "echo locked; exec sleep 600"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert flock.stdout is not None
        assert flock.stdout.readline() == "locked\n"
        seen = probe(root)
        assert seen.held
        assert seen.holder is not None
        assert seen.holder["pid"] == flock.pid
        live = [guard.LiveHolder("testing", root, seen.holder)]
        address = ("127.0.0.1", port, "settings.toml [testing]")
        return guard.port_served("testing", live, address=address), flock.pid
    finally:
        os.killpg(flock.pid, signal.SIGKILL)
        flock.wait()
