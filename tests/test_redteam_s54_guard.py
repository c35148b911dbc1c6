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

What changed: a selected name (``--profile``, ``ENV_FOR_DYNACONF``, ``load(profile)``) and
an ``app_profile`` mark are compared only when they are ASCII once stripped; otherwise the
refusal is ``unknown_profile`` (exit 78), naming the character and the profile it only looks
like.
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


def test_an_app_profile_mark_so_written_is_no_profile(settings: Path, tmp_path: Path) -> None:
    (tmp_path / "test_marked.py").write_text(MARKED)
    basetemp = f"--basetemp={tmp_path / 'inner'}"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", basetemp],
        cwd=tmp_path,
        env=_inner_env(APP_SETTINGS_DIR=str(settings)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"@pytest.mark.app_profile names '{KELVIN}iosk', which is no profile" in done.stdout, (
        done.stdout
    )
