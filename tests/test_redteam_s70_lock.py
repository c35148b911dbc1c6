"""Red team 70 on the live holder's lock (layer 4): who the probes and refusals name.

Real parts: a data root opened by the app, a lock file left as a server killed with SIGKILL
leaves it (its JSON, naming a pid that no longer runs), and util-linux's ``flock(1)`` taking
the lock since, as an operator keeps servers off a root around a backup. ``app status`` and
``app data empty-trash`` run as commands (forked from the run's zygote).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from test_server_e2e import app_env, run_app

from app import config as appconfig
from app.dataroot import open_root
from app.lock import LOCK_FILE, holder_info


def _exited_pid() -> int:
    """The pid of a process that ran and exited: a killed holder's."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_a_killed_servers_record_under_a_lock_flock_took_since_is_not_said_to_serve(
    app_config: appconfig.Config,
) -> None:
    # Before: `app status` said "serving: http://127.0.0.1:<the dead server's port>" and
    # named `flock` as that server ("kind server ... a server names itself again"), and the
    # refusal of `empty-trash` printed a `curl -X POST .../trash/empty` at that port, where
    # another program may listen now.
    root = app_config.data_root
    with open_root(app_config):
        pass
    lock = root / LOCK_FILE
    killed = _exited_pid()
    record = {
        **holder_info("server", "testing", port=1, root=root),
        "pid": killed,
        "address": "127.0.0.1",
    }
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
        env = app_env(root)
        status = run_app("status", env=env)
        emptied = run_app("data", "empty-trash", env=env)
    finally:
        os.killpg(flock.pid, signal.SIGKILL)
        flock.wait()
    assert status.returncode == 0, status.stderr
    assert (
        f"held by: pid {flock.pid} (flock {lock} -c 'echo locked; exec sleep 600'; the lock "
        f"file names pid {killed}, which does not hold the lock, so the details after this "
        "are not this process's: they were written over, as a backup copied into a live data "
        "root does, or left by a holder that was killed, and the lock taken since by a "
        "program that writes nothing in it, such as `flock`;"
    ) in status.stdout, status.stdout
    assert "serving:" not in status.stdout, status.stdout
    assert emptied.returncode == 75, emptied.stderr
    assert f"stop it (kill {flock.pid})" in emptied.stderr, emptied.stderr
    assert "curl" not in emptied.stderr, emptied.stderr
