"""Every benchmark under bench/ still starts: its imports resolve and its options parse.

The benchmarks are run by hand, not by the suite, so one that stopped importing a helper
another change had moved (bench/remote.py did) went unnoticed until someone ran it. Each is
run with ``--help`` in one child process, which imports it whole and parses its options,
and measures nothing.

That child, and the session-size benchmark's run, are forked from the run's warm interpreter
(tests/forked_app.py, `run_python`) where the environment fits: what they check is each
script's imports and work, which a fork resolves as a fresh interpreter does (a name a
script imports that its module no longer has still fails), not the interpreter's start; the
app's imports, made once there, were most of each child's CPU (about 1 s of the first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import forked_app
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

_RUN_EACH = """
import contextlib, io, runpy, sys
failed = []
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as end:
        if end.code not in (0, None):
            failed.append(f"{path}: exit {end.code}")
        elif "usage:" not in out.getvalue():
            failed.append(f"{path}: --help printed no usage")
    except BaseException as error:
        failed.append(f"{path}: {type(error).__name__}: {error}")
    else:
        failed.append(f"{path}: ran without parsing --help")
print("\\n".join(failed))
"""


#: ``python SCRIPT *args`` as ``python -c`` runs it: the script's directory first on the path
#: (not the working directory), its path as ``sys.argv[0]``, run as ``__main__``.
_AS_A_SCRIPT = """
import runpy, sys
sys.argv[:] = sys.argv[1:]
sys.path[0] = sys.argv[0].rpartition("/")[0]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_every_benchmark_imports_and_parses_its_options() -> None:
    scripts = sorted(str(p) for p in BENCH.glob("*.py") if not p.name.startswith("_"))
    assert len(scripts) >= 10
    done = forked_app.run_python(_RUN_EACH, scripts, dict(os.environ), BENCH.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", done.stdout


def test_the_plugin_s_breakdown_finds_and_times_the_steps_it_names(tmp_path: Path) -> None:
    # bench/plugin_phases.py wraps the plugin's functions by name: one renamed would leave
    # its step empty, and its template once broke with no test to run it.
    out = tmp_path / "phases.json"
    argv = [str(BENCH / "plugin_phases.py"), "--rounds", "1", "--warmup", "0", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, check=False, cwd=BENCH.parent
    )
    assert done.returncode == 0, done.stdout + done.stderr
    steps = json.loads(out.read_text())["results"]["this checkout"]
    # The checks of pytest's older directories run only where some are due: not asked.
    always = ["import", "start", "start: what pytest writes", "start: registry", "configure"]
    always += ["end: what pytest writes", "unconfigure", "whole process"]
    assert all(isinstance(steps[step], float) and steps[step] > 0 for step in always), steps


@pytest.mark.app_profile("development")  # the profile the benchmarks run on, as they do by hand
def test_the_session_size_benchmark_times_each_change(tmp_path: Path) -> None:
    # bench/session_size.py times the store's own whole-session steps by name (`floor`,
    # `_refuse_one_file_too_many`): one renamed would stop it where no one looks.
    script = str(BENCH / "session_size.py")
    argv = [script, "--sizes", "0,3", "--calls", "2", "--rounds", "1", "--json"]
    argv += ["--work-dir", str(tmp_path)]
    done = forked_app.run_python(_AS_A_SCRIPT, argv, dict(os.environ), BENCH.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)["rows"]
    assert [row["files"] for row in rows] == [0, 3]
    kinds = ("upload", "replace", "delete", "whole session")
    assert all(row[kind] > 0 for row in rows for kind in kinds), rows
