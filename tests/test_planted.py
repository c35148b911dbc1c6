"""What a test leaves for the environment's later Python processes to run (app.testing.planted).

Session 67's own hostile case: a test wrote a ``.pth`` into the environment's site-packages
whose line runs ``app --profile production data purge --yes-i-mean-it``; the run passed, and
the developer's next command in that environment, outside any run, purged a stopped
production root. The guard cannot refuse a write it does not make: it looks after every test,
puts the environment back, and fails the test, naming the file.

Each case runs in an environment of its own (a virtualenv without pip whose ``.pth`` adds the
project's site-packages), never the suite's: what a test plants there would be seen, put back
and blamed on their own tests by the other workers of this run.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: The inner run's tests: one plants a start-up file and a command, one changes an existing
#: .pth, one changes nothing.
PLANTING = """
import site
from pathlib import Path

SITE = Path(site.getsitepackages()[0])
RUNS = "import os; os.makedirs(os.environ['PLANTED_RAN'], exist_ok=True)\\n"

def test_plants():
    (SITE / "zz_planted.pth").write_text(RUNS)
    (SITE / "sitecustomize.py").write_text(RUNS)

def test_rewrites_a_pth():
    link = SITE / "link.pth"
    link.write_text(link.read_text() + RUNS)

def test_adds_a_command():
    command = Path(__import__("sys").prefix, "bin", "app-later")
    command.write_text("#!/bin/sh\\nmkdir -p \\"$PLANTED_RAN\\"\\n")
    command.chmod(0o755)

def test_nothing():
    pass
"""


@pytest.fixture
def environment(tmp_path: Path) -> Path:
    """A virtualenv of the suite's interpreter that sees the suite's packages (the app and
    its plugin included, through site-packages' own ``.pth`` files) but has its own."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    (own,) = env.glob("lib/python3*/site-packages")
    suites = site.getsitepackages()[0]
    (own / "link.pth").write_text(f"import site; site.addsitedir({suites!r})\n")
    return env


def test_a_test_that_plants_start_up_code_is_failed_and_the_environment_put_back(
    pytester: pytest.Pytester, environment: Path, tmp_path: Path
) -> None:
    (own,) = environment.glob("lib/python3*/site-packages")
    link_before = (own / "link.pth").read_bytes()
    ran = tmp_path / "planted-ran"
    pytester.makepyfile(test_planting=PLANTING)
    os.environ["PLANTED_RAN"] = str(ran)  # pytester's monkeypatch puts os.environ back
    result = pytester.run(str(environment / "bin" / "python"), "-m", "pytest", "-p", "no:randomly")
    out = result.stdout.str()
    result.assert_outcomes(passed=4, errors=3)
    planted = own / "zz_planted.pth"
    flat = " ".join(out.split())
    assert (
        "app: test_planting.py::test_plants changed what later Python processes of this "
        "environment run as they start, or its commands, outside any test run: "
    ) in flat, out
    assert f"{planted} was added (moved aside to {planted}.app-planted, which nothing runs)" in flat
    assert f"{own / 'sitecustomize.py'} was added" in flat, out
    assert (
        f"{own / 'link.pth'} was changed (as the run began again; the test's version moved "
        f"aside to {own / 'link.pth'}.app-planted)"
    ) in flat, out
    command = environment / "bin" / "app-later"
    assert "test_planting.py::test_adds_a_command changed what later" in flat, out
    assert f"{command} was added" in flat, out
    assert "install what a test needs into an environment it makes for itself" in flat, out
    # Put back: nothing the tests wrote runs in a later process of that environment.
    assert (own / "link.pth").read_bytes() == link_before
    assert not (own / "zz_planted.pth").exists() and not (own / "sitecustomize.py").exists()
    assert not command.exists() and (environment / "bin" / "app-later.app-planted").exists()
    later = subprocess.run(
        [str(environment / "bin" / "python"), "-c", "import app"],
        env={**os.environ, "PLANTED_RAN": str(ran)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert later.returncode == 0, later.stderr
    assert not ran.exists(), "the planted code ran in a later process"


def test_a_command_changed_in_place_fails_the_run_at_its_end(
    pytester: pytest.Pytester, environment: Path
) -> None:
    command = environment / "bin" / "app-tool"
    command.write_text("#!/bin/sh\necho tool\n")
    command.chmod(0o755)
    pytester.makepyfile(
        test_changing=textwrap.dedent(
            f"""
            from pathlib import Path

            def test_changes_a_command():
                Path({str(command)!r}).write_text("#!/bin/sh\\necho planted\\n")
            """
        )
    )
    result = pytester.run(str(environment / "bin" / "python"), "-m", "pytest", "-p", "no:randomly")
    out = result.stdout.str() + result.stderr.str()
    flat = " ".join(out.split())
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "1 passed" in flat, out
    assert "app: a test of this run changed what later Python processes" in flat, out
    assert f"{command} was changed (not put back: install this environment again)" in flat, out
