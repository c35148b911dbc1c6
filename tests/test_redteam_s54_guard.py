"""Red team 54 on the guard (branch rt-guard37): the app's Python API used from a test, the
settings files rewritten during a run, mounts and links in the sandbox, and profile names.

What broke (settings copied into the test's directory, with a profile ``kiosk`` beside the
three of the project, as a team adds one for a device):

- a profile name that ``str.lower`` turns into ASCII: ``ENV_FOR_DYNACONF=\\u212aiosk`` (the
  first letter U+212A KELVIN SIGN, which an input method or a copy from a document gives
  for ``K``) selected ``kiosk``, and so did ``app --profile \\u212aIOSK`` and an
  ``@pytest.mark.app_profile`` so written, while a section so named is refused ("a profile
  is named with ASCII letters, digits, '-' and '_' only, so that no name can pass for
  another") and every other look-alike of a name (a Cyrillic ``\\u0440``, a byte 0xFF) is refused
  as not plain ASCII. ``lower()`` runs before the comparison, and U+212A is the one
  character whose lower case is an ASCII letter, so it passed as ``k``.

- a conftest that defines a ``tmp_path`` fixture of its own returning a fixed directory
  (here production's ``sessions/``): ``app_config``, ``app_store`` and ``app_live_server``
  failed with a ``ConfigProblems`` traceback through the app's frames whose fix was "point
  APP_DATA_ROOT under tmp_path, or use the app_config fixture" (the test did both); with a
  remote testing profile (by reading), ``app_live_server`` wrote its log there.

What changed: a selected name (``--profile``, ``ENV_FOR_DYNACONF``, ``load(profile)``) and
an ``app_profile`` mark are compared only when they are ASCII once stripped; otherwise the
refusal is ``unknown_profile`` (exit 78), naming the character and the profile it only looks
like. ``app_config`` and ``app_live_server`` fail a test whose ``tmp_path`` lies outside the
run's sandbox before they use it, naming the fixture that overrides pytest's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import copy_project_settings
from test_redteam_s24_guard import _inner_env

KELVIN = "\u212a"

MARKED = f"""
import pytest


@pytest.mark.app_profile("{KELVIN}iosk")
def test_marked():
    pass
"""

#: A suite that keeps its scratch files in one place, to look at them after a run.
OWN_TMP_PATH = """
import pathlib
import pytest

@pytest.fixture
def tmp_path():
    return pathlib.Path("{sessions}")
"""

SCRATCH = """
def test_config(app_config):
    pass


def test_store(app_store):
    pass


def test_live(app_live_server):
    pass
"""


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = copy_project_settings(tmp_path_factory.mktemp("settings"))
    with (directory / "settings.toml").open("a") as toml:
        toml.write('\n[kiosk]\ndata_root = "data/kiosk"\n')
    return directory


def _app(settings: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args, "config"],
        env=_inner_env(APP_SETTINGS_DIR=str(settings), **env),
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_profile_name_that_lower_case_makes_ascii_selects_nothing(settings: Path) -> None:
    # The control: the plain name is selected (and then refused under pytest, as any profile
    # but testing is: the refusal names the profile it selected).
    plain = _app(settings, ENV_FOR_DYNACONF="KIOSK")
    assert plain.returncode == 78, plain.stderr
    assert "loading profile 'kiosk'" in plain.stderr, plain.stderr
    for done in (
        _app(settings, ENV_FOR_DYNACONF=f"{KELVIN}iosk"),
        _app(settings, "--profile", f" {KELVIN}IOSK "),
    ):
        assert done.returncode == 78, done.stderr
        assert "unknown profile" in done.stderr, done.stderr
        assert "U+212A KELVIN SIGN, not plain ASCII, and only looks like 'kiosk'" in (
            done.stderr
        ), done.stderr
        assert "loading profile 'kiosk'" not in done.stderr, done.stderr


def test_a_mark_so_written_and_a_tmp_path_outside_the_sandbox_are_refused(
    settings: Path, tmp_path: Path
) -> None:
    # One inner run for both: the mark at the top, the suite that keeps its scratch files in
    # production's sessions/ in a directory of its own (a conftest there overrides tmp_path).
    sessions = settings / "data" / "production" / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    (tmp_path / "test_marked.py").write_text(MARKED)
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "conftest.py").write_text(OWN_TMP_PATH.format(sessions=sessions))
    (tmp_path / "scratch" / "test_scratch.py").write_text(SCRATCH)
    basetemp = f"--basetemp={tmp_path / 'inner'}"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", basetemp],
        cwd=tmp_path,
        env=_inner_env(APP_SETTINGS_DIR=str(settings)),
        capture_output=True,
        text=True,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"@pytest.mark.app_profile names '{KELVIN}iosk', which is no profile" in out, out
    for fixture in ("app_config", "app_live_server"):
        assert (
            f"app: refusing this test: the tmp_path it gets, {sessions}, lies outside the "
            f"run's sandbox ({tmp_path / 'inner'}) (its fixture is defined in "
            f"{tmp_path / 'scratch' / 'conftest.py'}, line 5, which overrides pytest's). The "
            f"{fixture} fixture makes the test's data root and files under tmp_path"
        ) in out, out
    assert out.count("app: refusing this test: the tmp_path it gets") == 3, out
    assert "Traceback" not in out and "ConfigProblems" not in out, out
    assert list(sessions.iterdir()) == []
