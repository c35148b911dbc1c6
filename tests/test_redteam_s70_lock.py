"""Red team 70 on the live holder's lock (layer 4): who the probes and refusals name.

Real parts: a data root opened by the app, a lock file left as a server killed with SIGKILL
leaves it (its JSON, naming a pid that no longer runs), and util-linux's ``flock(1)`` taking
the lock since, as an operator keeps servers off a root around a backup. ``app status`` runs
as a command (forked from the run's zygote); a writer's refusal is taken in this process
with no retries (``timeout=0``: a command waits a second first, for a probe's instant), and
the hint ``app data empty-trash`` prints is built from it as the command builds it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_server_e2e import app_env, run_app

from app import config as appconfig
from app.dataroot import describe, open_root
from app.errors import DataRootInUseError
from app.lock import LOCK_FILE, holder_info
from app.storage import serving_url


def _exited_pid() -> int:
    """The pid of a process that ran and exited: a killed holder's."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def _killed_servers_root(config: appconfig.Config) -> tuple[Path, int]:
    """`config`'s root, its lock file as a server killed with SIGKILL leaves it (its JSON,
    naming a pid that no longer runs; port 1): the lock file and that pid."""
    root = config.data_root
    with open_root(config):
        pass
    lock = root / LOCK_FILE
    killed = _exited_pid()
    record = {
        **holder_info("server", "testing", port=1, root=root),
        "pid": killed,
        "address": "127.0.0.1",
    }
    lock.write_text(json.dumps(record) + "\n")  # in place: the inode stays the lock's
    return lock, killed


@contextmanager
def _flock(lock: Path, *option: str) -> Iterator[int]:
    """util-linux's flock(1) holding `lock` (``-s``: shared) around a command, as an
    operator's backup does, for the block: its pid."""
    flock = subprocess.Popen(
        ["flock", *option, str(lock), "-c", "echo locked; exec sleep 600"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert flock.stdout is not None
        assert flock.stdout.readline() == "locked\n"
        yield flock.pid
    finally:
        os.killpg(flock.pid, signal.SIGKILL)
        flock.wait()


def _refusal(config: appconfig.Config) -> DataRootInUseError:
    with pytest.raises(DataRootInUseError) as refused:
        open_root(config, wanted="empty the trash", timeout=0.0)
    return refused.value


def test_a_killed_servers_record_under_a_lock_flock_took_since_is_not_said_to_serve(
    app_config: appconfig.Config,
) -> None:
    # Before: `app status` said "serving: http://127.0.0.1:<the dead server's port>" and
    # named `flock` as that server ("kind server ... a server names itself again"), and the
    # refusal of `empty-trash` printed a `curl -X POST .../trash/empty` at that port, where
    # another program may listen now.
    lock, killed = _killed_servers_root(app_config)
    with _flock(lock) as pid:
        status = run_app("status", env=app_env(lock.parent))
        refused = _refusal(app_config)
    assert status.returncode == 0, status.stderr
    holder = (
        f"pid {pid} (flock {lock} -c 'echo locked; exec sleep 600'; the lock file names pid "
        f"{killed}, which does not hold the lock, so the details after this are not this "
        "process's: they were written over, as a backup copied into a live data root does, or "
        "left by a holder that was killed, and the lock taken since by a program that writes "
        "nothing in it, such as `flock`;"
    )
    assert f"held by: {holder}" in status.stdout, status.stdout
    assert "serving:" not in status.stdout, status.stdout
    assert f"held by {holder}" in refused.message, refused.message
    assert f"stop it (kill {pid})" in refused.message, refused.message
    assert serving_url(refused.holder or {}, app_config.host) is None  # empty-trash's hint


def test_a_root_held_shared_by_flock_s_is_said_held_and_its_refusal_waits_for_it(
    app_config: appconfig.Config,
) -> None:
    # `flock -s <root>/.server.lock <backup>` keeps every writer off the root (the refusals
    # name the shared flock `flock -s ... true` as the wait). Before: `app status` said "held
    # by: nobody", each refusal named the killed server's pid "in a PID namespace this
    # process cannot see ...: stop it there", and the wait it named returned at once, so the
    # command run after it was refused again.
    lock, killed = _killed_servers_root(app_config)
    with _flock(lock, "-s") as pid:
        status = run_app("status", env=app_env(lock.parent))
        refused = _refusal(app_config)
    assert status.returncode == 0, status.stderr
    holder = (
        f"pid {pid} (flock -s {lock} -c 'echo locked; exec sleep 600'), which holds a shared "
        "lock on the lock file, as `flock -s` takes one: not a holder of the app, it keeps "
        f"every writer off the root until it lets go; the lock file names pid {killed}, "
        "which does not hold the lock (a holder that was killed left it so)"
    )
    assert f"held by: {holder}\n" in status.stdout, status.stdout
    assert (
        f"held by {holder}; stop it (kill {pid}) or wait for it to finish (`flock {lock} "
        "true` returns once it lets go: an exclusive flock, since a shared one would not wait "
        "for it) and retry"
    ) in refused.message, refused.message
    assert "PID namespace" not in refused.message, refused.message


def test_a_flock_on_an_emptied_lock_file_is_named_as_a_program_that_writes_nothing(
    app_config: appconfig.Config,
) -> None:
    # A root stopped cleanly (its lock file emptied), then `flock <lock> <backup>`: it was
    # said to have taken the lock on a full disk, or to be releasing it.
    root = app_config.data_root
    with open_root(app_config):
        pass
    with _flock(root / LOCK_FILE) as pid:
        held_by = describe(root).held_by
    assert held_by == (
        f"pid {pid} (flock {root / LOCK_FILE} -c 'echo locked; exec sleep 600'), which "
        "published no details in the lock file (it took the lock on a full disk, is releasing "
        "it, or the file was emptied by hand; or it is not a holder of the app but a program "
        "that writes nothing there, as `flock` around a backup)"
    )


#: A server's lock taken, its JSON written, and its descriptor left to a child that outlives
#: it (as a fork below Python leaves it): the child's pid is printed, then the taker exits.
_KEEPER = """
import fcntl, json, os, subprocess, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
record = {"pid": os.getpid(), "kind": "server", "profile": "testing", "port": 1,
          "address": "127.0.0.1", "host": os.uname().nodename}
os.write(fd, json.dumps(record).encode())
child = subprocess.Popen(
    ["sleep", "600"], pass_fds=[fd], start_new_session=True,
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
print(child.pid, flush=True)
"""


def test_a_lock_kept_by_a_child_past_its_server_gives_no_hint_at_the_servers_url(
    app_config: appconfig.Config,
) -> None:
    # `app status` left out the URL of a server whose lock a child kept (red team 24), but
    # the refusal of `empty-trash` still printed a `curl -X POST .../trash/empty` at it.
    root = app_config.data_root
    with open_root(app_config):
        pass
    taken = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _KEEPER, str(root / LOCK_FILE)],
        capture_output=True,
        text=True,
        check=True,
    )
    keeper = int(taken.stdout)
    try:
        refused = _refusal(app_config)
    finally:
        os.kill(keeper, signal.SIGKILL)
    assert f"pid {keeper} (sleep 600), which keeps open the lock taken by pid" in (
        refused.message
    ), refused.message
    assert serving_url(refused.holder or {}, app_config.host) is None  # empty-trash's hint
