"""Red team 56 on the children of tests, second round (branch rt-children2): a test runner
started through the dynamic loader.

What broke (next to a stopped production root of the test's own settings, a test's child
given production's settings alone): a TestCase run by ``/lib64/ld-linux-x86-64.so.2
python -m unittest`` (Python run by its loader, as a tool that picks a glibc or a library
path does), whose child ran ``python -m app data purge --profile production
--yes-i-mean-it``. The kernel shows such a process's command line as the loader's, and its
program (``/proc/<pid>/exe``) as the loader (run through a link of another name, its
command line shows the link): the walk up the process tree took it for no
Python, so not for unittest, found no run above the child, and the purge moved every
production session to the trash. ``python -m unittest`` itself was refused.

What changed: the command line of a process that runs the dynamic loader (by its name, or
by its program where a later word names a Python) is read from the program the loader runs,
past the loader's own options (``_program_words``), wherever the walk asks whether a process
runs pytest or unittest; and a process whose program is the loader is
looked at for a run's registry descriptor as a Python's is.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path

import pytest
from project_copy import assert_untouched, inner_project, run_inner, stopped_production
from test_redteam_s24_guard import _inner_env

from app import sandbox

#: The inner unittest's one TestCase: its child, given production's settings alone, purges;
#: its exit code and output are written where the outer test reads them.
INNER = """
import os
import subprocess
import sys
import unittest
from pathlib import Path

ENV = {
    "APP_SETTINGS_DIR": os.environ["RT56_SETTINGS"],
    "APP_API_TOKEN": os.environ["RT56_TOKEN"],
    "PATH": "/usr/bin:/bin",
}


class Purge(unittest.TestCase):
    def test_purge(self):
        done = subprocess.run(
            [sys.executable, "-m", "app", "data", "purge", "--profile", "production",
             "--yes-i-mean-it"],
            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
        )
        Path(os.environ["RT56_OUT"]).write_bytes(b"%d\\n" % done.returncode + done.stdout)
"""

#: The dynamic loader of this machine's Python, where it is one of the usual names.
LOADERS = sorted(
    {*glob.glob("/lib64/ld-linux*.so.*"), *glob.glob("/lib/ld-linux*.so.*")}
    | set(glob.glob("/lib/*/ld-linux*.so.*"))
)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or not LOADERS,
    reason="the unittest run is kept out of this run's tree in a PID namespace of its own "
    "(unshare --pid needs root here), and run through glibc's loader (ld-linux*.so.*)",
)
def test_a_child_of_unittest_run_through_the_dynamic_loader_is_refused(tmp_path: Path) -> None:
    settings, production, token, sessions = stopped_production(tmp_path)
    project = inner_project(tmp_path, "test_purge.py", INNER)
    out = tmp_path / "out"
    env = _inner_env(RT56_SETTINGS=str(settings), RT56_TOKEN=token, RT56_OUT=str(out))
    # In a PID namespace with its own /proc, so that this run is not above the unittest run
    # (a child there finds no run of ours); the loader runs Python with its options first.
    # Through a link of another name: the loader is then known by its program (`exe`).
    loader = tmp_path / "run"
    loader.symlink_to(LOADERS[0])
    run_inner(
        [
            *("unshare", "--pid", "--fork", "--mount-proc"),
            *(str(loader), "--inhibit-cache", sys.executable, "-m", "unittest", "test_purge"),
        ],
        env,
        project,
    )
    code, _, said = out.read_text().partition("\n")
    assert_untouched(production, sessions, said)
    assert code == "78", said
    assert "refused under unittest: loading profile 'production' while unittest runs " in said
    assert f"an ancestor process runs tests with unittest (pid 1: {loader} " in said, said
    assert "Run the tests with pytest instead" in said, said


@pytest.mark.parametrize(
    ("argv", "program"),
    [
        (["/lib64/ld-linux-x86-64.so.2", "/usr/bin/python3", "-m", "pytest"], "/usr/bin/python3"),
        (["ld.so", "--library-path", "/opt/lib", "--argv0", "x", "python3", "-m"], "python3"),
        (["/lib/ld-musl-x86_64.so.1", "--preload", "a.so", "py.test"], "py.test"),
        (["/usr/bin/ldd", "python3"], "/usr/bin/ldd"),
        (["/lib64/ld-linux-x86-64.so.2", "--list"], "/lib64/ld-linux-x86-64.so.2"),
    ],
)
def test_the_loader_and_its_options_are_passed_over(argv: list[str], program: str) -> None:
    assert sandbox._program_words(argv)[0] == program
    if program.endswith(("python3", "py.test")) and argv[-1] in ("-m", "py.test"):
        assert sandbox._looks_like_pytest([*argv, "pytest"] if argv[-1] == "-m" else argv)
