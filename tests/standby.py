"""`app serve` started from an interpreter that imported the app before a test asked for it.

A server's start-up is mostly imports. A standby interpreter makes them while an earlier
test runs; when a test starts a server, it gets the test's environment, arguments and log
and runs ``app serve`` as ``python -m app`` would: a process of its own, new for the test.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

# `python -m app serve`, once its environment and log arrive on stdin (a JSON line): what the
# app imports first (0.4 s of a 0.45 s start on this machine) is imported before. See
# `serve`. Python reads no variable of the test's (APP_*, ENV_FOR_DYNACONF,
# PYTEST_*) at start-up, and the app reads them only once it runs; `Spare.fits` checks that
# every other one is the interpreter's already.
STANDBY = """
import json
import os
import runpy
import sys

import app.cli
import app.server.run

line = sys.stdin.readline()
if not line.strip():
    sys.exit(0)  # the test (or the run) ended without releasing it: serve nothing
given = json.loads(line)
output = os.open(given["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.dup2(output, 1)
os.dup2(output, 2)
os.environ.clear()
os.environ.update(given["env"])
sys.argv[1:] = given["args"]
runpy.run_module("app", run_name="__main__", alter_sys=True)
"""

#: Variables a released standby takes from the test (the app reads them when it runs); a
#: spare whose other variables or working directory differ is not used.
_GIVEN_AT_RELEASE = ("APP_", "ENV_FOR_DYNACONF", "PYTEST_")


def _inherited() -> tuple[object, ...]:
    """What a child inherits besides its environment, and a test may set for its server
    (a lowered RLIMIT_FSIZE, a umask, an ignored signal, a nice value): a spare started
    under other values does not fit."""
    umask = os.umask(0o22)
    os.umask(umask)
    limits = [
        resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")
    ]
    ignored = [s for s in signal.valid_signals() if signal.getsignal(s) is signal.SIG_IGN]
    return os.getcwd(), umask, limits, ignored, os.getpriority(os.PRIO_PROCESS, 0)


class Spare:
    """A standby interpreter started before any test asked for a server (at most one waits):
    the next server a test starts takes it instead of an interpreter of its own."""

    waiting: Spare | None = None

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self.inherited = _inherited()
        # Its stdin is a pipe of this process: when the run ends, it reads EOF and exits.
        self.process = subprocess.Popen(
            [sys.executable, "-c", STANDBY, "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def fits(self, env: dict[str, str]) -> bool:
        def own(environ: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in environ.items() if not k.startswith(_GIVEN_AT_RELEASE)}

        return (
            self.process.poll() is None
            and _inherited() == self.inherited
            and own(env) == own(self.environ)
        )

    @classmethod
    def take(cls, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
        """The waiting spare if it fits `env` (a new one starts meanwhile for the next)."""
        spare, cls.waiting = cls.waiting, cls()
        if spare is not None and spare.fits(env):
            return spare.process
        if spare is not None:
            spare.process.kill()
            spare.process.wait()
        return None


def release(
    process: subprocess.Popen[bytes], env: dict[str, str], log: Path, args: list[str]
) -> None:
    """Let a standby interpreter run ``app`` with `args`, `env` and its output in `log`."""
    assert process.stdin is not None, "only a standby waits to be released"
    given = {"env": env, "log": str(log), "args": args}
    process.stdin.write(json.dumps(given).encode() + b"\n")
    process.stdin.close()


def serve(env: dict[str, str], log: Path, args: list[str]) -> subprocess.Popen[bytes]:
    """``python -m app *args``, from the waiting spare when it fits `env`."""
    spare = Spare.take(env)
    if spare is not None:
        release(spare, env, log, args)
        return spare
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app", *args], env=env, stdout=out, stderr=out
        )
