"""Every benchmark under bench/ still starts: its imports resolve and its options parse.

The benchmarks are run by hand, not by the suite, so one that stopped importing a helper
another change had moved (bench/remote.py did) went unnoticed until someone ran it. Each is
run with ``--help`` in one child process, which imports it whole and parses its options,
and measures nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_every_benchmark_imports_and_parses_its_options() -> None:
    scripts = sorted(str(p) for p in BENCH.glob("*.py") if not p.name.startswith("_"))
    assert len(scripts) >= 10
    done = subprocess.run(
        [sys.executable, "-c", _RUN_EACH, *scripts],
        capture_output=True,
        text=True,
        check=False,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", done.stdout
