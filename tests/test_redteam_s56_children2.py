"""Red team 56 on the children of tests, second round (branch rt-children2): a unittest run
whose program the walk up the process tree did not know for Python.

What broke (next to a stopped production root of the test's own settings, a test's child
given production's settings alone ran ``python -m app data purge --profile production
--yes-i-mean-it``):

- a TestCase run by ``/lib64/ld-linux-x86-64.so.2 python -m unittest`` (Python run by its
  loader, as a tool that picks a glibc or a library path does), or through a link to the
  loader under another name: the kernel shows such a process's command line as the
  loader's (or the link's), and its program (``/proc/<pid>/exe``) as the loader. The walk
  took it for no Python, so not for unittest, found no run above the child, and the purge
  moved every production session to the trash (``python -m unittest`` was refused);
- the same with ``bash -c 'exec -a <the environment's bin>/runner python -m unittest'``:
  Python's first word renamed, it was no Python to the walk.

What changed: a command line is read from the program that runs (``_program_words``)
wherever the walk asks whether a process runs pytest or unittest: past the loader and its
own options where it starts with the loader (by its name, or by its program where a later
word names a Python or is Python's ``-m``/``-c``), and with Python's path for a renamed
first word; a process whose program is the loader is looked at for a run's registry
descriptor as a Python's is.
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
            [os.environ["RT56_PYTHON"], "-m", "app", "data", "purge", "--profile", "production",
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
    os.geteuid() != 0 or shutil.which("unshare") is None or not LOADERS or not shutil.which("bash"),
    reason="the unittest run is kept out of this run's tree in a PID namespace of its own "
    "(unshare --pid needs root here), run through glibc's loader (ld-linux*.so.*) and "
    "renamed by bash's `exec -a`",
)
def test_a_child_of_unittest_run_by_the_loader_or_renamed_is_refused(tmp_path: Path) -> None:
    settings, production, token, sessions = stopped_production(tmp_path)
    project = inner_project(tmp_path, "test_purge.py", INNER)
    env = _inner_env(RT56_SETTINGS=str(settings), RT56_TOKEN=token, RT56_PYTHON=sys.executable)
    # In a PID namespace with its own /proc, so that this run is not above the unittest runs
    # (a child there finds no run of ours). The loader runs Python with an option of its own
    # first, through a link of another name (known then by its program, `exe`); `exec -a`
    # renames Python, in its environment's bin (elsewhere it loses that environment).
    loader = tmp_path / "run"
    loader.symlink_to(LOADERS[0])
    renamed = Path(sys.executable).with_name("runner")
    script = (
        'RT56_OUT="$0/loader" "$1" --inhibit-cache "$2" -m unittest test_purge '
        '&& RT56_OUT="$0/renamed" exec -a "$3" "$2" -m unittest test_purge'
    )
    run_inner(
        [
            *("unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", script),
            *(str(tmp_path), str(loader), sys.executable, str(renamed)),
        ],
        env,
        project,
    )
    for name, shown in (("loader", f"{loader} --inhibit-cache "), ("renamed", f"{renamed} ")):
        code, _, said = (tmp_path / name).read_text().partition("\n")
        assert_untouched(production, sessions, said)
        assert code == "78", said
        assert "refused under unittest: loading profile 'production' while unittest " in said
        assert "an ancestor process runs tests with unittest (pid " in said, said
        assert f": {shown}{sys.executable if name == 'loader' else ''}" in said, said
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
