"""Red team 63 on the children of tests (branch rt-children63): a fork of the run's own process
(``os.fork`` without ``exec``) that runs the app in its own image, with its environment wiped.

A fork keeps the run's mark on ``sys`` and is refused by it; red team 58 on the guard made a
fork whose mark a test deleted the run's still, by the run's registry entry, where the fork's
``sys.argv`` is the run's. Next to a stopped production root of the test's own settings, a
real inner pytest with the app's plugin active, in a PID namespace of its own (out of this
run's tree), forked; each fork deleted the mark, wiped ``os.environ`` and gave it production's
settings alone (``APP_SETTINGS_DIR``, production's token, ``PATH``), then ran ``data purge
--profile production --yes-i-mean-it`` through the app's command line in its own process.

What broke: a fork that outlived the run (it waited for the run's process to end), removed the
entry the run handed on to it as it ended (`_end_entry`) and forgot pytest's modules found
nothing of the run, and the purge moved every production session to the trash. With pytest's
modules kept it was refused, but as under "a pytest without the app's plugin", told to run
without ``-p no:app``; so was a fork, while the run still ran, that set ``sys.argv`` to the
command line it runs (``app.cli.main`` reads it), since the entry's ``argv`` no longer matched.

And: a test that daemonised its own process (a fork, then ``os._exit`` in the parent, as a
daemon library does) carried the run on in a fork with no entry of its own; under a runner
script (its run found by its entry alone, red team 42) the fork's child found no run and
purged; under ``python -m pytest`` it was refused as under a pytest without the plugin. The
run's check after that test said the run's entry "was removed" by a test: nothing was.

What changed: a fork inherits the anchored copy of the run's first entry (red team 62), mapped
read only and sealed in place: nothing in the fork unmaps it, and ``exec`` alone drops it. A
process without the run's mark that maps such a copy at the address its entry's name gives is
that run's (`app.sandbox._forked_run`): its sandbox and protected roots apply, and the
refusal names the copy (``... through the run's own memory (this process, a fork of pytest
pid N, which maps the sealed copy of the run's entry ...)``), and, where the run has ended,
that the process outlived it. It is taken only where the walk finds no run (a copy a test's own
code maps there narrows, never widens); where the walk finds the run it names, by its entry,
the process is refused as that run's own, not as a bare pytest's. Where the walk
finds no run, an ancestor that runs Python and maps the anchored copy of another process's run
(`app.sandbox._fork_above`) is that run carried on, and the check after the test says that the
test daemonised the run's process (`app.sandbox.restore_entry`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_redteam_s61_children import run_inner

from app import sandbox

#: The inner run's tests. `purge(name)` runs in a fork of the run's process: the run's mark on
#: `sys` deleted, its own entry (handed on by the run) removed where `after`, pytest's modules
#: forgotten where `forget`, `os.environ` wiped and given production's settings alone, then
#: the app's command line in the fork's own process; its exit code and output to OUT/name.
INNER = """
import contextlib
import os
import select
import subprocess
import sys
from pathlib import Path

from app import sandbox

OUT = Path(os.environ["RT61_OUT"])
ENV = {
    "APP_SETTINGS_DIR": os.environ["RT61_SETTINGS"],
    "APP_API_TOKEN": os.environ["RT61_TOKEN"],
    "PATH": "/usr/bin:/bin",
}


def purge(name, *, after=False, forget=False):
    if after:  # until the run's process has ended (it handed this fork its entry)
        select.select([os.pidfd_open(os.getppid())], [], [])
        sandbox._own_entry().unlink()
    delattr(sys, "_app_pytest_runs")
    if forget:
        for module in [m for m in sys.modules if m.startswith(("_pytest", "pytest"))]:
            del sys.modules[module]
    os.environ.clear()
    os.environ.update(ENV)
    # As `app` run in this process would be: its command line in sys.argv.
    sys.argv = ["app", "data", "purge", "--profile", "production", "--yes-i-mean-it"]
    code = 0
    with open(OUT / name, "w") as out:
        # Its standard output stays open (this run's pipe): the namespace waits for it.
        os.dup2(out.fileno(), 2)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                from app.cli import main

                main()
            except SystemExit as stop:
                code = stop.code
        print(f"exit {code}", file=out)
    os._exit(0)


def test_during():
    pid = os.fork()
    if pid == 0:
        purge("during")
    os.waitpid(pid, 0)


def test_after_with_pytest():
    if os.fork() == 0:
        purge("after_with_pytest", after=True)


def test_after_forgotten():
    if os.fork() == 0:
        purge("after_forgotten", after=True, forget=True)


def test_daemonized():
    # The run carries on in a fork of its process, whose parent exits (a daemon library's
    # fork in the test's own process); a child given production's settings alone, from it.
    run = os.pidfd_open(os.getpid())
    if os.fork() != 0:
        os._exit(0)
    select.select([run], [], [])
    argv = ["data", "purge", "--profile", "production", "--yes-i-mean-it"]
    done = subprocess.run([sys.executable, "-m", "app", *argv], env=ENV, capture_output=True)
    (OUT / "daemonized").write_bytes(done.stdout + done.stderr + b"exit %d\\n" % done.returncode)
"""

#: In a PID namespace of its own, with a registry of its own (a tmpfs over it, ``$1``): the
#: run as a child of the namespace's first process, so that its forks outlive it, and its
#: output through a pipe that each fork holds open until it ends.
_NAMESPACE = 'mount -t tmpfs -o mode=0700 app-runs "$1" && shift && "$@" | cat'


@pytest.mark.skipif(
    not sandbox._seals_in_place() or os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="the run's anchored copy needs a kernel that seals a mapping in place (mseal, "
    "Linux 6.10, 64-bit), and the inner run is kept out of this run's process tree in a PID "
    "namespace of its own (unshare --pid needs root here)",
)
def test_a_fork_of_the_run_without_its_mark_or_entry_stays_in_the_run(tmp_path: Path) -> None:
    names = ("during", "after_with_pytest", "after_forgotten", "daemonized")
    inner, said = run_inner(tmp_path, INNER, names, _NAMESPACE)
    # The run's check after the test that daemonised it says so, not that a test removed
    # its entry (nothing was).
    assert "4 passed, 1 error" in inner.stdout, inner.stdout + inner.stderr
    assert (
        "app: after test_entry.py::test_daemonized, this run goes on in process "
    ) in inner.stdout, inner.stdout
    assert (
        "whose parent exited: the test daemonised the run's own process, and the fork had no "
        f"entry of its own in {sandbox.RUNS_DIR}; one was written for it. Until then, a "
        "process it started with a hand-built environment was part of the run only through "
        "the anchored copy of the run's entry that the fork maps"
    ) in inner.stdout, inner.stdout
    assert "was removed" not in inner.stdout, inner.stdout
    for name in names:
        output = said[name]
        assert output.endswith("exit 78\n"), (name, output)
        assert (
            "error: refused under pytest (sandbox: " + str(tmp_path / "inner") + "): loading "
            "profile 'production'; tests run on the 'testing' profile (this process belongs to "
            "the test run through "
        ) in output, (name, output)
    # While the run runs, found by its entry, as the run's own rather than a bare pytest's.
    assert (
        "the test run through the process tree (an ancestor process, pytest pid " in said["during"]
    ), said["during"]
    for name in ("after_with_pytest", "after_forgotten", "daemonized"):
        output = said[name]
        who = "an ancestor process, pid " if name == "daemonized" else "this process, "
        assert f"through the run's own memory ({who}" in output, (name, output)
        assert ", a fork of pytest pid " in output, (name, output)
        assert "which maps the sealed copy of the run's entry " in output, (name, output)
        assert (
            "a test that removes the run's mark on sys or its entry does not take it out of "
            "the run))"
        ) in output, (name, output)
    for name in ("after_with_pytest", "after_forgotten"):
        assert "This process outlived the test run that started it (pytest pid " in said[name]
