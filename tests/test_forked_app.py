"""The zygote of tests/forked_app.py: what it forks ends with the tests' process that asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import forked_app
import pytest
from waits import ended, until_ended

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
        assert not ended(server)
        worker.send_signal(signal.SIGKILL)
    until_ended(zygote, server)
    assert ended(zygote), f"the zygote (pid {zygote}) outlived its tests' process"
    assert ended(server), f"`app serve` (pid {server}) outlived the process it was forked for"


class _BareZygote(forked_app.Zygote):
    script = forked_app.BARE


def test_a_wait_on_a_child_of_a_zygote_that_died_ends_saying_so(tmp_path: Path) -> None:
    # A zygote of its own (the run's stays as it is), killed while its child runs: the child
    # ends with it, and a wait on the child, which nobody will tell of its exit, says why.
    # Without the app's imports (`forked_app.BARE`: the same loop, `become` and reader, about
    # 1 s of CPU less): its child sleeps, and the wait is the tests' process's own.
    zygote = _BareZygote()
    log = tmp_path / "child.log"
    child = zygote.fork(dict(os.environ), [], log, log, code="import time; time.sleep(600)")
    zygote.process.kill()
    zygote.process.wait()
    assert zygote.process.stdin is not None
    zygote.process.stdin.close()
    with pytest.raises(ChildProcessError, match=f"zygote ended before its child {child.pid}"):
        child.wait(timeout=60)  # a minute for a hung test only: it ends at once
    until_ended(child.pid)
    assert ended(child.pid), f"the child (pid {child.pid}) outlived its zygote"


#: What an interpreter's exit does that anyone can see: output left in a buffer, a
#: non-daemon thread still running, atexit's functions, the status of a ``SystemExit``.
_EXITS = """
import atexit, sys, threading, time

atexit.register(lambda: print("atexit ran", flush=True))
sys.stdout.write("buffered, no newline; ")
threading.Thread(target=lambda: (time.sleep(0.05), print("thread joined"))).start()
code = sys.argv[1]
sys.exit(int(code) if code.isdigit() else None if code == "none" else code)
"""


@pytest.mark.parametrize("code", ["none", "3", "a message"])
def test_a_forked_child_exits_as_the_interpreter_would(tmp_path: Path, code: str) -> None:
    # The zygote's children skip the finalisation of the heap they inherited (its `leave`):
    # all else an exit does must be as `python -c` does it, to the byte and in its order.
    forked_log, plain_log = tmp_path / "forked.log", tmp_path / "plain.log"
    forked = forked_app.python_c(_EXITS, [code], forked_log)
    assert isinstance(forked, forked_app.Forked), "not forked from the zygote: nothing to test"
    with plain_log.open("w") as out:
        plain = subprocess.run(
            [sys.executable, "-c", _EXITS, code], stdout=out, stderr=subprocess.STDOUT, check=False
        )
    assert forked.wait(timeout=60) == plain.returncode == {"none": 0, "3": 3}.get(code, 1)
    assert forked_log.read_text() == plain_log.read_text()
    assert "atexit ran" in forked_log.read_text() and "thread joined" in forked_log.read_text()
