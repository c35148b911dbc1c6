"""Red team 54 on the guard (branch rt-guard37): the app's Python API used from a test, the
settings files rewritten during a run, mounts and links in the sandbox, and profile names.

What broke (pytest or the app in a subprocess, with settings of the test's own):

- (settings with a profile ``kiosk`` beside the project's three, as a team adds one for a
  device) a profile name that ``str.lower`` turns into ASCII: ``ENV_FOR_DYNACONF=\\u212aiosk`` (the
  first letter U+212A KELVIN SIGN, which an input method or a copy from a document gives
  for ``K``) selected ``kiosk``, and so did ``app --profile \\u212aIOSK`` and an
  ``@pytest.mark.app_profile`` so written, while a section so named is refused ("a profile
  is named with ASCII letters, digits, '-' and '_' only, so that no name can pass for
  another") and every other look-alike of a name (a Cyrillic ``\\u0440``, a byte 0xFF) is refused
  as not plain ASCII. ``lower()`` runs before the comparison, and U+212A is the one
  character whose lower case is an ASCII letter, so it passed as ``k``;
- a conftest that defines a ``tmp_path`` fixture of its own returning a fixed directory
  (here production's ``sessions/``): ``app_config``, ``app_store`` and ``app_live_server``
  failed with a ``ConfigProblems`` traceback through the app's frames whose fix was "point
  APP_DATA_ROOT under tmp_path, or use the app_config fixture" (the test did both); with a
  remote testing profile (real PostgreSQL and SeaweedFS), ``app_live_server`` loads no data
  root and wrote its log there: a production file named ``live-server.log`` was emptied
  and filled with the replica's output, and the run passed.

What changed: a selected name (``--profile``, ``ENV_FOR_DYNACONF``, ``load(profile)``) and
an ``app_profile`` mark are compared only when they are ASCII once stripped; otherwise the
refusal is ``unknown_profile`` (exit 78), naming the character and the profile it only looks
like. ``app_config`` and ``app_live_server`` fail a test whose ``tmp_path`` lies outside the
run's sandbox before they use it, naming the fixture that overrides pytest's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import forked_app
import forked_pytest
import pytest
from engines import PostgresEngine, S3Engine
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
    # Forked from the run's zygote where it can be (tests/forked_app.py): the profile's name
    # is read as the command loads its settings, not as the interpreter starts.
    return forked_app.run_inner(
        _inner_env(APP_SETTINGS_DIR=str(settings), **env), [*args, "config"]
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
    done = forked_pytest.run(
        [sys.executable, "-mpytest", "-q", "-p", "no:cacheprovider", "-rfE", basetemp],
        _inner_env(APP_SETTINGS_DIR=str(settings)),
        tmp_path,
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


REMOTE_SETTINGS = """\
[default]
s3_endpoint_url = "{endpoint}"

[development]
data_root = "roots/development"

[testing]
database_url = "{testing_url}"
blob_url = "s3://{bucket}/testing-s54-{pid}"

[production]
data_root = "roots/production"
protected = true
"""

REMOTE_SECRETS = """\
[default]
s3_access_key_id = "{key}"
s3_secret_access_key = "{secret}"
"""


def test_a_replica_s_log_is_not_written_in_a_tmp_path_outside_the_sandbox(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, tmp_path: Path
) -> None:
    # With a remote testing profile, app_live_server loads no data root: nothing refused the
    # conftest's tmp_path, and the replica's log emptied a production file of its name.
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(
        REMOTE_SETTINGS.format(
            endpoint=s3_engine.endpoint_url,
            testing_url=postgres_engine.url(f"testing_s54_{os.getpid()}"),
            bucket=s3_engine.bucket,
            pid=os.getpid(),
        )
    )
    (settings / ".secrets.toml").write_text(
        REMOTE_SECRETS.format(key=s3_engine.access_key_id, secret=s3_engine.secret_access_key)
    )
    (settings / ".secrets.toml").chmod(0o600)
    sessions = settings / "roots" / "production" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "live-server.log").write_text("a production file of that name\n")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(OWN_TMP_PATH.format(sessions=sessions))
    (suite / "test_live.py").write_text("def test_live(app_live_server):\n    pass\n")
    basetemp = f"--basetemp={tmp_path / 'inner'}"
    done = forked_pytest.run(
        [sys.executable, "-mpytest", "-q", "-p", "no:cacheprovider", "-rfE", basetemp],
        _inner_env(APP_SETTINGS_DIR=str(settings)),
        suite,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"app: refusing this test: the tmp_path it gets, {sessions}, lies outside" in out, out
    assert "The app_live_server fixture makes" in out, out
    assert (sessions / "live-server.log").read_text() == "a production file of that name\n"
    assert [p.name for p in sessions.iterdir()] == ["live-server.log"]
