"""Red team 57 on the guard (branch rt-guard40): a test that wipes its own environment.

What broke (pytest in a subprocess, the app's plugin active, on a copy of the project's
settings):

- the plugin forces the ``testing`` profile by setting ``ENV_FOR_DYNACONF`` in the run's
  environment. A test that clears ``os.environ`` (or deletes every variable with
  ``monkeypatch.delenv``), or a child it gives a hand-built environment without that
  variable, then loaded the default profile, ``development``: refused (nothing was opened),
  but told "loading profile 'development'; tests run on the 'testing' profile ... mark the
  test @pytest.mark.app_profile('development')", a fix for a choice no test had made. The
  profile a test is forced onto did not survive the wipe.

What changed: ``app.config`` selects ``testing`` where nothing names a profile (no
``--profile``, no ``load(profile=...)``, no ``ENV_FOR_DYNACONF``) in a process of a test run
(the run's own, or any process it starts, found as the sandbox finds it), unless the test
opted into ``development``, and says so as the profile's source. A profile that is named
(``ENV_FOR_DYNACONF=production``) is refused as before, and a pytest without the app's plugin
keeps ``development``'s default (refused).
"""

from __future__ import annotations

import sys
from pathlib import Path

import forked_pytest
from project_copy import copy_project_settings
from test_redteam_s24_guard import _inner_env

#: The inner test: its own process with an emptied environment loads the app, and a child
#: given PATH and the settings alone (no ENV_FOR_DYNACONF) purges.
INNER = """
import os, subprocess, sys

from app.config import load


def test_a_wiped_environment():
    kept = dict(os.environ)
    os.environ.clear()
    try:
        config = load()
        print("OWN", config.profile, config.data_root, "|", config.profile_source)
        os.environ["APP_ENV"] = "production"  # another tool's habit, meant as the profile
        try:
            load()
        except Exception as error:
            print("HABIT", type(error).__name__, str(error).replace(chr(10), " "))
    finally:
        os.environ.update(kept)
    alone = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
    done = subprocess.run(
        [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
        env=alone, capture_output=True, text=True,
    )
    print("PURGE", done.returncode, repr(done.stdout[-2000:] + done.stderr[-2000:]))
"""


def test_a_test_that_wipes_its_environment_stays_on_testing(tmp_path: Path) -> None:
    settings = copy_project_settings(tmp_path / "settings")
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_inner.py").write_text(INNER)
    basetemp = tmp_path / "bt"
    done = forked_pytest.run(
        [sys.executable, "-mpytest", "-q", "-s", "-p", "no:randomly",
         "-p", "no:cacheprovider", f"--basetemp={basetemp}", "test_inner.py"],
        _inner_env(APP_SETTINGS_DIR=str(settings)), project,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    lines = {line.split(" ", 1)[0]: line for line in done.stdout.splitlines()}
    # Before the fix: "loading profile 'development'; tests run on the 'testing' profile
    # (...) mark the test @pytest.mark.app_profile('development')", in the test's own
    # process and in its child alike.
    assert lines["OWN"].startswith(f"OWN testing {basetemp / 'data' / 'testing'} | "), out
    assert "the test run's default: ENV_FOR_DYNACONF is not set" in lines["OWN"], out
    # What the app would use instead of a misspelt selector is the run's default too.
    assert lines["HABIT"].startswith("HABIT VariableMisspeltError "), out
    assert "the app would use the default profile 'testing'" in lines["HABIT"], out
    # The purge goes to the run's own testing root, in its sandbox, which the run holds:
    # refused as held, exit 75 (before the fix: exit 78, the same advice to opt into
    # development).
    testing = basetemp / "data" / "testing"
    assert lines["PURGE"].startswith(
        f"PURGE 75 'error: cannot purge every session: data root {testing}"
    ), out
    assert "Traceback" not in out, out
    assert not (settings / "data").exists(), out  # no configured root was made or opened
