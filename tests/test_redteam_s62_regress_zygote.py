"""Red team 62 on regress, the live server's warm interpreter (branch rt-regress20): the
zygote of `app_live_server` (`app.testing.zygote`) outlived its pytest process.

The zygote took the end of its socket as the run's end: when the pytest process closed it, or
was killed, it sent its servers SIGTERM, waited for them and exited. But the socket's other end
is a descriptor, and a copy of it outlives the process: any fork of the pytest process (a
test's ``os.fork``, multiprocessing's fork start) held one, and so does a child a test gives
it. With such a copy alive, the pytest process killed (SIGKILL), the zygote ran on, and its
servers with it, holding their data roots' locks, re-parented out of the run's process tree;
and it still forked a server for whoever wrote to the socket, now a process of no run. A
zygote whose reply met the closed socket (a server ending as the run was killed) stopped with
a traceback and left its servers running.

What changed: the zygote watches the pytest process that started it (a pidfd, checked against
the socket pair's maker, ``SO_PEERCRED``) and ends as on the socket's end when that process
does, whoever holds a copy; its replies to a closed socket are dropped; and a fork of the
pytest process closes its copy of every zygote's socket (``os.register_at_fork``), so it can
neither keep the zygote up nor drive it (it starts a zygote of its own if it asks for a live
server).

What held (docs/explanation/attacks/, red team 62 on regress): requests written to the
zygote's socket by a test, with ``ENV_FOR_DYNACONF=production``, production's root in
``APP_DATA_ROOT``, no ``PYTEST_*`` variable, another working directory: each forked server is
refused by the guard as a plain start is (it is below the run's pytest process), naming itself.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.lock import read_holder

pytestmark = pytest.mark.skipif(
    not hasattr(os, "pidfd_open") or not hasattr(socket, "send_fds") or not shutil.which("cat"),
    reason="needs os.pidfd_open, descriptor passing and cat",
)

# A stand-in for a pytest process: its zygote, a server forked from it, a production server
# asked for on the zygote's socket (refused: it is below this run's pytest process), a fork of
# it (does it still hold the zygote's socket?), and a child given the socket (`cat`, which
# lives until the test closes their standard input); then it waits to be killed. A plain
# start: the suite's fork server (tests/forked_app.py) costs more than this file's 3 s where
# it is not warm yet.
_RUN = r"""
import os, signal, subprocess, sys
from pathlib import Path
from app.testing import zygote
from app.testing.live_server import start_server

root = Path(sys.argv[1])
class Run:
    pass
run = Run()
zygote.remember_the_run(run)
env = {**os.environ, "APP_DATA_ROOT": str(root), "APP_HOST": "127.0.0.1"}
# A test that has SIGTERM blocked asks first: the zygote would inherit it.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("zygote started with SIGTERM blocked:", zygote.forking(env, run) is not None, flush=True)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
server, _ = start_server(env, root, root.parent / "server.log", warm=run)
warm = zygote._RUNS[run]["zygote"]
# A hostile request on the zygote's socket: production, no PYTEST_* variable.
log = os.open(root.parent / "hostile.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
hostile = warm.serve({"ENV_FOR_DYNACONF": "production", "PATH": os.environ["PATH"]}, log)
print("hostile server", hostile.pid, "exited", hostile.wait(), flush=True)
fd = warm.socket.fileno()
forked = os.fork()
if forked == 0:
    print("fork holds the socket:", warm.socket.fileno() != -1, flush=True)
    os._exit(0)
os.waitpid(forked, 0)
cat = subprocess.Popen(["cat"], pass_fds=[fd], stdout=subprocess.DEVNULL)
print(warm.process.pid, server.pid, cat.pid, flush=True)
signal.pause()
"""


def _reap(pid: int) -> None:
    # Re-parented to this process (the run's subreaper) when the stand-in died, or not.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def test_the_zygote_and_its_servers_end_with_the_pytest_process_whoever_holds_its_socket(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    run = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert run.stdin is not None and run.stdout is not None
    try:
        blocked = run.stdout.readline().decode().strip()
        hostile = run.stdout.readline().decode().split()
        fork_line = run.stdout.readline().decode().strip()
        zygote_pid, server_pid, cat_pid = map(int, run.stdout.readline().split())
        watched = os.pidfd_open(zygote_pid)
        status = Path(f"/proc/{server_pid}/status").read_text().splitlines()
        server_blocks = int(next(ln for ln in status if ln.startswith("SigBlk:")).split()[1], 16)
        assert read_holder(root)["pid"] == server_pid  # type: ignore[index]
        run.kill()  # the pytest process killed mid-test (SIGKILL)
        run.wait()
        # The bound is for a broken zygote only; a working one ends at once.
        ended, _, _ = select.select([watched], [], [], 60)
    finally:
        run.stdin.close()  # `cat` ends, and with it the last copy of the socket
        run.stdout.close()
    _reap(cat_pid)
    _reap(zygote_pid)
    assert blocked == "zygote started with SIGTERM blocked: False", blocked
    assert not server_blocks & (1 << (signal.SIGTERM - 1)), hex(server_blocks)
    assert hostile[3:] == ["exited", "78"], hostile
    refused = (tmp_path / "hostile.log").read_text()
    assert "refused under pytest" in refused, refused
    assert "loading profile 'production'" in refused, refused
    assert f"through the process tree (an ancestor process, pytest pid {os.getpid()}" in refused
    assert fork_line == "fork holds the socket: False", fork_line
    assert ended, "the zygote ran on after its pytest process was killed"
    log = (tmp_path / "server.log").read_text()
    assert "stopped; releasing the hold on" in log, log
    assert read_holder(root) is None
