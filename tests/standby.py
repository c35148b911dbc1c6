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
import tempfile
import threading
from pathlib import Path

# `python -m app <args>`, once its environment and output files arrive on stdin (a JSON line):
# what the app imports first (0.4 s of a 0.45 s start on this machine) is imported before. See
# `serve`. Python reads no variable of the test's (APP_*, ENV_FOR_DYNACONF,
# PYTEST_*) at start-up, and the app reads them only once it runs; `Spare.fits` checks that
# every other one is the interpreter's already.
# Loading the settings and opening a data root import dynaconf, filelock and the store lazily
# (the pytest plugin's start-up never pays for them): 0.15-0.65 s of every released command or
# server, imported here too, as the red teams' zygotes do. dynaconf reads its *_FOR_DYNACONF
# variables when imported, but reads them again (`default_settings.reload`) whenever a
# Dynaconf is configured, which is the only use the app makes of it.
STANDBY = """
import json
import os
import runpy
import sys

import app.cli
import app.server.run
import _strptime, dynaconf, dynaconf.loaders.toml_loader, filelock
import app.check, app.dataroot, app.store

line = sys.stdin.readline()
if not line.strip():
    sys.exit(0)  # the test (or the run) ended without releasing it: serve nothing
given = json.loads(line)
for fd, name in ((1, "stdout"), (2, "stderr")):
    output = os.open(given[name], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(output, fd)
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


_TAKING = threading.Lock()


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
        with _TAKING:  # commands run side by side take spares from threads
            spare, cls.waiting = cls.waiting, cls()
        if spare is not None and spare.fits(env):
            return spare.process
        if spare is not None:
            spare.process.kill()
            spare.process.wait()
        return None


def release(
    process: subprocess.Popen[bytes],
    env: dict[str, str],
    log: Path,
    args: list[str],
    stderr: Path | None = None,
) -> None:
    """Let a standby interpreter run ``app`` with `args`, `env` and its output in `log`
    (its standard error in `stderr`, if given)."""
    assert process.stdin is not None, "only a standby waits to be released"
    given = {"env": env, "stdout": str(log), "stderr": str(stderr or log), "args": args}
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


def run(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    """``python -m app *args`` run to its end, its output captured, as ``subprocess.run``
    would (``capture_output=True, text=True``), from the waiting spare when it fits `env`.
    Its standard input is empty (the spare's closed pipe)."""
    argv = [sys.executable, "-m", "app", *args]
    spare = Spare.take(env)
    if spare is None:
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    with tempfile.TemporaryDirectory(prefix="standby-run-") as directory:
        out, err = Path(directory) / "stdout", Path(directory) / "stderr"
        release(spare, env, out, args, err)
        try:
            code = spare.wait(timeout=120)
        except subprocess.TimeoutExpired:
            spare.kill()  # as subprocess.run does
            spare.wait()
            raise
        texts = [path.read_text() if path.exists() else "" for path in (out, err)]
    return subprocess.CompletedProcess(argv, code, *texts)
