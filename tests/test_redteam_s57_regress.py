"""Red team 57 on the session's own fixes (branch rt-regress2): false refusals beside them.

What broke (real processes, the app's plugin active):

- rt-children3 read every word after a runner module (``coverage``, ``cProfile``, ``pdb``,
  ``trace``, ...) as the runner's own, to find ``-m unittest`` behind its options. The
  program the runner runs has arguments too: ``python -m cProfile -o prof.out -m app
  sessions create green`` or ``coverage run tool.py /srv/trial`` was read as a run of
  unittest's TestCases (``green``, ``trial`` and ``nose2`` are runners' names), and a child of
  it loading a profile the test had opted into was refused, told to run its tests with
  pytest instead.

What changed: ``app.sandbox._runs_unittest_next`` stops at the program a runner's ``-m``
names (a runner behind a runner is read on), and after a script it names (a ``.py``, an
absolute path to an executable) reads only a later ``-m``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: A program run under a profiler, which starts the app as a child with its own arguments.
TOOL = """
import subprocess, sys
done = subprocess.run([sys.executable, "-m", "app", "--profile", "development", "config"],
                      capture_output=True, text=True)
print(done.returncode, done.stdout[:200] + done.stderr[-1500:])
"""


@pytest.mark.app_profile("development")
def test_a_profiled_programs_own_arguments_are_not_a_unittest_run(tmp_path: Path) -> None:
    (tmp_path / "tool.py").write_text(TOOL)
    (tmp_path / "trial").mkdir()
    # The program's own arguments: a word that names a runner, a path that ends in one.
    for program in (["-m", "tool", "green"], [str(tmp_path / "tool.py"), str(tmp_path / "trial")]):
        done = subprocess.run(
            [sys.executable, "-m", "cProfile", "-o", str(tmp_path / "prof.out"), *program],
            capture_output=True, text=True, check=False, cwd=tmp_path,
        )  # fmt: skip
        said = done.stdout + done.stderr
        # Before the fix: "1 error: refused under pytest: loading profile 'development' an
        # ancestor process runs tests with unittest (...) Run the tests with pytest instead".
        assert done.returncode == 0 and said.startswith("0 profile: development"), said
