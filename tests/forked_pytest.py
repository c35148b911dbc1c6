"""Inner pytest runs started as pytester starts them (``pytester.runpytest_subprocess``,
tests/test_incident.py's launcher, `side_by_side.pytest_side_by_side`) forked from an
interpreter that imported pytest once.

An inner ``python -mpytest`` of one trivial test executes about 1,040 M instructions, 570 M of
them importing pytest's own modules before it reads a single argument (callgrind,
bench/README.md, "perf-suite63"); the suite starts over a hundred this way. This process (one
per pytest process, started on first use) imports pytest and its built-in plugins, nothing
else, and forks one child per run: a process of its own (its own pid, exit status, signals;
not ended with the zygote, as a plain child is not with its parent), in the test's working
directory, environment, ``sys.path`` (its directory and ``PYTHONPATH``, as ``-m`` builds it)
and output files, that runs ``pytest`` as ``python -mpytest`` does (``runpy``, ``SystemExit``,
the interpreter's own exit) with its command line in ``/proc/<pid>/cmdline`` written over this
process's (padded with NULs, which every reader of it in the app strips:
`app.sandbox._cmdline`, `app.lock._command_line`).

Nothing of the app's is imported before the child's pytest marks its plugins for assertion
rewriting, as in a plain start, and the guard's ``.pth`` armed pytest's plugin manager when
this process imported it, as it does in every Python of the environment. Neither xdist nor any
other entry point's plugin is imported here (pytest would warn that it cannot rewrite them).

A run whose environment has bytecode on where the run's has it off or moved (neither
``PYTHONDONTWRITEBYTECODE`` nor ``PYTHONPYCACHEPREFIX``, which tests/conftest.py gives the
run's children: red teams 36 and 38 check what pytest writes where bytecode is on, as it is by
default) is forked from a second zygote, started so on first use (`BytecodeOn`): its
interpreter read the same variables as it started as a plain start of that run reads, so
``sys.flags``, ``sys.dont_write_bytecode`` and ``sys.pycache_prefix`` are a plain start's.
Any other run starts the plain way when its environment differs from the run's in a variable the
interpreter or the C library reads as it starts (``PYTHON*`` but ``PYTHONPATH``, locale,
loader, allocator, time zone), when this process's umask, limits, ignored or
blocked signals, nice value or CPUs differ from the run's (`app.testing.zygote.inherited`),
when its standard input is not pytester's closed pipe, when ``os.pidfd_open`` is missing, and
when its command line is longer than the room this process's holds, and when a directory on
its path (``PYTHONPATH``, its working directory) holds a module that a plain start would
import from there and the zygote imported already (`shadowing`). What a fork cannot give:
``/proc/<pid>/environ`` (the kernel shows the zygote's), ``/proc/<pid>/cmdline``'s length
(the zygote's room, the rest NULs) and ``gc.get_freeze_count()`` (the zygote's imports, kept
out of the cyclic collector's walk: tests/forked_app.py's `LOOP`; what the run itself makes
is collected, and finalised, as in a plain start); no test reads any of them of an inner
run. A red team's own ``python -m pytest`` with a hand-built environment goes through `run`,
forked when `start` can fork it (bytecode on, from `BytecodeOn`); those whose start or parent
is what they check (a bytecode prefix of their own, ``-X``, wrappers, another user or
namespace) start as they always did, and a pytest passed off as an xdist worker of this
process's run starts plainly whoever asks for it (`passed_off_as_a_worker`): a forked one's
parent is the zygote, and the guard took it for no worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import forked_app
from forked_app import Forked

from app.testing.guard import OWNER_ENV
from app.testing.zygote import inherited

#: Variables read as an interpreter starts (its flags, its locale and encodings, the dynamic
#: loader's, the allocator's, the time zone `time` reads on import): a run whose environment
#: differs in one starts the plain way. Not ``TMPDIR``: no interpreter reads it as it starts,
#: and `tempfile`'s cached copy (``tempfile.tempdir``) is dropped in each child, which reads
#: its own on first use, as a plain start does.
READ_AT_START = ("PYTHON", "LC_", "LANG", "LANGUAGE", "LD_", "MALLOC_", "TZ")

#: What `site` imports from ``PYTHONPATH`` as an interpreter starts.
SITE_HOOKS = frozenset({"sitecustomize", "usercustomize"})

#: What ``python -m pytest`` imports once its path holds ``PYTHONPATH`` and its working
#: directory: pytest, its own packages, and the standard modules it or they import. The
#: zygote imported these from the interpreter's own path before any child's directory was on
#: it; a name of the standard library's is taken whole (a few not imported until later cost a
#: plain start, never a wrong one).
IMPORTED_BY_PYTEST = frozenset(
    {"pytest", "_pytest", "pluggy", "iniconfig", "packaging", "py", *sys.stdlib_module_names}
)


def shadowing(env: dict[str, str], cwd: Path) -> Path | None:
    """A module that a plain ``python -m pytest`` in `cwd` and `env` imports from a directory
    of its own path where a child forked from the zygote has the zygote's, or None: a
    ``sitecustomize`` or ``usercustomize`` on ``PYTHONPATH`` (`site` runs it as the interpreter
    starts: red team 43's import hook that instruments every module), a module named as one
    pytest's start imports (`IMPORTED_BY_PYTEST`) on ``PYTHONPATH`` or in `cwd` (a pytest from
    another tree, a ``json.py`` beside the tests), and an entry that is no directory (a
    pytest from a zip, red team 43). A forked run given one of these ran the zygote's pytest
    without the hook, and showed what a plain start would not (red team 64 on regress)."""
    on_path = [Path(cwd, p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    for directory, names in [
        *((p, SITE_HOOKS | IMPORTED_BY_PYTEST) for p in on_path),
        (Path(cwd), IMPORTED_BY_PYTEST),
    ]:
        try:
            listed = os.listdir(directory)
        except NotADirectoryError:
            return directory  # a zip (or another file) on the path: its importer's modules
        except OSError:
            continue  # not there, or not readable: nothing is imported from it
        for name in listed:
            stem = name.partition(".")[0]
            if stem in names and (
                name.endswith((".py", ".pyc", ".so"))
                or (directory / name / "__init__.py").is_file()
            ):
                return directory / name
    return None


#: The two spellings of the command line a child is forked for (`start`).
SPELLINGS = (["-mpytest"], ["-m", "pytest"])

#: The room for a child's command line: this process's arguments are padded to it.
ROOM = 8192

ZYGOTE = (
    r"""
import importlib, json, os, runpy, selectors, signal, sys

import pytest
from _pytest.config import default_plugins
for _name in default_plugins:
    importlib.import_module(f"_pytest.{_name}")
import _pytest.pytester

selector = selectors.DefaultSelector()
selector.register(0, selectors.EVENT_READ)
BASE = sys.path[1:]  # after '' (-c): the interpreter's own, site's


def answer(message):
    os.write(1, (json.dumps(message) + "\n").encode())


"""
    + forked_app.TAKE
    + r"""

def retitle(argv):
    # Over this process's arguments (the kernel's /proc/<pid>/cmdline), padded with NULs;
    # through /proc/self/mem, not ctypes, which a plain pytest does not import at its start.
    fields = open("/proc/self/stat", "rb").read().rpartition(b")")[2].split()
    start, end = int(fields[45]), int(fields[46])
    wanted = b"\0".join(os.fsencode(word) for word in argv) + b"\0"
    if len(wanted) > end - start:  # never: the parent checked it fits
        os._exit(1)
    with open("/proc/self/mem", "r+b", buffering=0) as memory:
        memory.seek(start)
        memory.write(wanted.ljust(end - start, b"\0"))


def become(given):
    # Like a child the tests' process started: not ended with this process (no parent-death
    # signal), and its arguments.
    take(given)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    retitle(given["argv"])
    sys.orig_argv[:] = given["argv"]
    first = [] if sys.flags.safe_path else [os.getcwd()]
    extra = [p for p in given["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = first + extra + BASE
    importlib.invalidate_caches()
    words = given["argv"]
    sys.argv[:] = ["-m", *words[2 if words[1] == "-mpytest" else 3 :]]  # -mpytest, -m pytest
    # What `tempfile` read of TMPDIR (never as an interpreter starts): read again, from the
    # child's environment, on first use.
    sys.modules["tempfile"].tempdir = None
    runpy.run_module("pytest", run_name="__main__", alter_sys=True)
    sys.exit(0)  # the interpreter's own exit, as `python -mpytest` ends


"""
)


def read_at_start(environ: dict[str, str]) -> dict[str, str]:
    """What of `environ` an interpreter (or the C library) reads as it starts."""
    return {k: v for k, v in environ.items() if k.startswith(READ_AT_START) and k != "PYTHONPATH"}


class ForkedRun(Forked):
    """A forked inner run, with the part of `subprocess.Popen` that pytester uses."""

    stdin = None  # as pytester's Popen's, whose pipe it closed at once


class Zygote(forked_app.Zygote):
    """The forking process, one per pytest process; it ends when this process does."""

    script = ZYGOTE
    padding = ("#" * ROOM,)  # the room for a child's command line
    name, shown = "forked-pytest", (sys.executable, "-mpytest")

    def environment(self, run: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in run.items() if k != "PYTHONPATH"}  # each child's its own

    def gives(self, env: dict[str, str], argv: list[str]) -> bool:
        """Whether a child forked here starts as `argv` in `env` would."""
        wanted = sum(len(os.fsencode(word)) + 1 for word in argv)
        return (
            self.process.poll() is None
            and wanted <= ROOM
            and read_at_start(env) == read_at_start(self.environ)
            and inherited() == self.inherited
        )

    def child(self, pid: int) -> ForkedRun:
        return ForkedRun(pid, list(self.shown))


#: What turns a run's bytecode off or moves it: tests/conftest.py gives the run's children
#: both (or the first alone in a run without pytest's cache).
BYTECODE = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")


class BytecodeOn(Zygote):
    """The zygote for runs with bytecode on, in the default place (neither of `BYTECODE`),
    which the red teams' checks of what pytest writes build by hand: the 23 runs of red teams
    36 and 38 started plainly, about 2 s of CPU more than forked, this zygote's start included
    (bench/README.md, "perf-suite71b"). Started as one of them would be, without either."""

    def environment(self, run: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in super().environment(run).items() if k not in BYTECODE}


def passed_off_as_a_worker(env: dict[str, str]) -> bool:
    """Whether a plain start of a pytest in `env` passes for an xdist worker where a forked
    one would not: the guard takes a pytest for a worker of the run that owns its sandbox
    when ``PYTEST_XDIST_WORKER`` is set and its parent is that owner (`OWNER_ENV`), and a
    forked child's parent is the zygote. A red team 33 run (a test of a run without xdist
    that sets the one variable) forked took the path of a run of its own, which checks what
    pytest writes anyway: it passed with the fix it covers reverted (red team 71 on regress,
    round s). Such a run starts the plain way, whoever calls `run` or pytester for it."""
    return bool(env.get("PYTEST_XDIST_WORKER")) and env.get(OWNER_ENV) == str(os.getpid())


_running: dict[type[Zygote], Zygote] = {}  # this process's, each once started
_starting = threading.Lock()


def start(
    argv: Sequence[str], env: dict[str, str], cwd: Path, stdout: Path, stderr: Path
) -> ForkedRun | None:
    """``python -mpytest ...`` or ``python -m pytest ...`` (`argv`) in `cwd` and `env`, its
    standard input empty, its output appended to `stdout` and `stderr`, forked; None where it
    must start the plain way (see the module's docstring)."""
    argv = [os.fspath(arg) for arg in argv]
    spelled = argv[:1] == [sys.executable] and any(argv[1 : 1 + len(s)] == s for s in SPELLINGS)
    if not spelled or not hasattr(os, "pidfd_open") or passed_off_as_a_worker(env):
        return None
    kind: type[Zygote] = Zygote
    if forked_app._RUN and not any(name in env for name in BYTECODE):
        run = read_at_start(forked_app._RUN["environ"])
        if read_at_start(env) == {k: v for k, v in run.items() if k not in BYTECODE} != run:
            kind = BytecodeOn  # the run's own start but bytecode on: a zygote started so
    with _starting:
        if kind not in _running:
            if forked_app._RUN and inherited() != forked_app._RUN["inherited"]:
                return None  # a zygote started now would inherit this test's values
            _running[kind] = kind()
    zygote = _running[kind]
    if not zygote.gives(env, argv) or shadowing(env, cwd) is not None:
        return None
    given = {"env": env, "argv": argv, "cwd": str(cwd), "stdout": str(stdout)}
    child = zygote.send({**given, "stderr": str(stderr)})
    assert isinstance(child, ForkedRun)
    return child


def popen(
    pytester: Any, cmdargs: Sequence[Any], stdout: Any, stderr: Any, stdin: Any, kw: dict[str, Any]
) -> ForkedRun | None:
    """`pytester`'s ``popen`` of ``python -mpytest ...`` forked (`start`), or None."""
    if (
        kw
        or stdin is not pytester.CLOSE_STDIN
        or not isinstance(getattr(stdout, "name", None), str)
        or not isinstance(getattr(stderr, "name", None), str)
    ):
        return None
    env = os.environ.copy()  # as Pytester.popen builds it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH", "")]))
    stdout.flush()
    stderr.flush()
    return start(
        [os.fspath(arg) for arg in cmdargs], env, Path.cwd(), Path(stdout.name), Path(stderr.name)
    )


def run(
    argv: Sequence[str], env: dict[str, str], cwd: Path, *, merged: bool = False
) -> subprocess.CompletedProcess[str]:
    """A red team's own inner run, ``subprocess.run(argv, cwd=cwd, env=env,
    capture_output=True, text=True, check=False)`` (with ``merged``: its standard error into
    its standard output, as ``stderr=subprocess.STDOUT`` gives), forked where `start` can
    (its environment built by hand but in nothing an interpreter reads as it starts), else
    started so. Its standard input is empty (``/dev/null``) either way. Not for a run whose
    start, or whose parent, is what a test checks: a forked run's parent is the zygote."""
    argv = [os.fspath(arg) for arg in argv]
    with tempfile.TemporaryDirectory(prefix="forked-pytest-") as directory:
        out = Path(directory) / "stdout"
        err = out if merged else Path(directory) / "stderr"
        child = start(argv, env, cwd, out, err)
        if child is None:
            return subprocess.run(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True, check=False,
            )  # fmt: skip
        status = child.wait()
        texts = [path.read_text() if path.exists() else "" for path in (out, err)]
    return subprocess.CompletedProcess(argv, status, texts[0], None if merged else texts[1])
