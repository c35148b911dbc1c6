"""The zygote of tests/forked_app.py: what it forks ends with the tests' process that asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import forked_app
import pytest

#: A tests' process (an xdist worker, as far as the zygote can tell: the other end of its
#: pipes) that forks a server from its zygote, waits until it serves, then waits to be killed.
_WORKER = """
import os, sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
import forked_app
from app.testing import published_port, wait_until_serving

root, log = Path(sys.argv[2]) / "live-data", Path(sys.argv[2]) / "live-server.log"
server = forked_app.serve(dict(os.environ), log, ["serve", "--port", "0"])
assert isinstance(server, forked_app.Forked), "not forked from the zygote: nothing to test"
wait_until_serving(f"http://127.0.0.1:{published_port(root, server, log)}", server, log=log)
print(forked_app.Zygote.running.process.pid, server.pid, flush=True)
sys.stdin.read()  # until it is killed
"""


def _ended(pid: int) -> bool:
    # Gone, or a zombie: this run adopts orphans (the sandbox makes it a subreaper).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_a_server_forked_for_a_worker_killed_with_sigkill_ends_with_it(tmp_path: Path) -> None:
    # An xdist worker SIGKILLed (a crash, the OOM killer, a CI timeout) runs no teardown: its
    # forked `app serve`s ran on until their lock files went, holding ports and threads.
    env = {**os.environ, "APP_HOST": "127.0.0.1", "APP_DATA_ROOT": str(tmp_path / "live-data")}
    command = [sys.executable, "-c", _WORKER, str(Path(__file__).parent), str(tmp_path)]
    with subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as worker:
        assert worker.stdout is not None and worker.stderr is not None
        started = worker.stdout.readline().split()
        assert len(started) == 2, worker.stderr.read()
        zygote, server = int(started[0]), int(started[1])
        assert not _ended(server)
        worker.send_signal(signal.SIGKILL)
    # Until both ended: the wait ends on its condition; a minute is for a hung test only.
    for _ in range(6000):
        if _ended(zygote) and _ended(server):
            break
        time.sleep(0.01)
    assert _ended(zygote), f"the zygote (pid {zygote}) outlived its tests' process"
    assert _ended(server), f"`app serve` (pid {server}) outlived the process it was forked for"


def test_a_wait_on_a_child_of_a_zygote_that_died_ends_saying_so(tmp_path: Path) -> None:
    # A zygote of its own (the run's stays as it is), killed while its child runs: the child
    # ends with it, and a wait on the child, which nobody will tell of its exit, says why.
    zygote = forked_app.Zygote()
    log = tmp_path / "child.log"
    child = zygote.fork(dict(os.environ), [], log, log, code="import time; time.sleep(600)")
    zygote.process.kill()
    zygote.process.wait()
    assert zygote.process.stdin is not None
    zygote.process.stdin.close()
    with pytest.raises(ChildProcessError, match=f"zygote ended before its child {child.pid}"):
        child.wait(timeout=60)  # a minute for a hung test only: it ends at once
    for _ in range(6000):  # until the child ended; a minute for a hung test only
        if _ended(child.pid):
            break
        time.sleep(0.01)
    assert _ended(child.pid), f"the child (pid {child.pid}) outlived its zygote"
