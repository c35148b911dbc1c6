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

- an ``s3_endpoint_url`` whose host the S3 client (botocore) refuses, a name in Unicode
  (``http://bücket.store:9000``) or with ``_`` (``http://minio_1:9000``, a Docker Compose
  service's), passed every check: ``app doctor`` said "ok", ``app config`` and ``app
  status`` showed it, and ``app doctor`` on that profile and every command that opened its
  bucket stopped with botocore's bare ``ValueError: Invalid endpoint`` traceback. Red team
  57's overlap check (rt-remote31) compared such a host's Unicode and IDNA spellings as two
  stores. The setting is now refused as botocore would refuse it, naming the host's ASCII
  (IDNA) form where it has one (``app.config._endpoint_host_problem``). A host of an S3
  interface VPC endpoint (``<bucket>.vpce-<id>.s3.<region>.vpce.amazonaws.com``) was read as
  naming bucket ``<bucket>.vpce-<id>``: its overlap with that bucket's prefix on AWS went
  unseen; the endpoint's id is no part of the bucket now (``_host_readings``).

- since rt-guard40 a test's child given a hand-built environment (the README's ``app serve``,
  ``app data check --repair``) loads ``testing``, whose root the run holds for its whole
  length: refused as held (right), but told "wait for that test run to finish and retry, or
  stop it (kill <pid>)", the child's own run. Where the holder is a test run that is an
  ancestor of the refused process, the refusal now says so and names what gives a test's
  child a root (``APP_DATA_ROOT`` under its ``tmp_path``, the ``app_live_server`` fixture).

- the ``curl`` a held root's ``app data empty-trash`` prints (rt-ops29) read a settings
  file's token with ``$(python -c 'from app.config import load; ...')`` in the shell it is
  pasted into: with ``APP_SETTINGS_DIR`` set for the command alone, that read loaded the
  project's settings and sent their token (401). It now carries the settings directory the
  command read; a token set for the command alone (``APP_API_TOKEN=...``) is written
  ``${APP_API_TOKEN:?...}``, which the shell refuses instead of sending an empty bearer.

- a child that a test marked ``@pytest.mark.app_profile("development")`` gave a hand-built
  environment lost the opt-in (``PYTEST_APP_ALLOW_PROFILES``) and was refused, rightly, but
  told to mark the test, which it was. The refusal now says where the opt-in travels.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import forked_app
import pytest
from project_copy import PROJECT, copy_project_settings
from test_server_e2e import app_env, run_app

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
    # The program's own arguments: a word that names a runner, a path that ends in one.
    # The program's own arguments: a word that names a runner (`green`), after the program
    # `-m` names (a script's, `tool.py /srv/trial`, was read so too: by hand).
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(tmp_path / "prof.out"), "-m", "tool", "green"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    said = done.stdout + done.stderr
    # Before the fix: "78 error: refused under unittest: loading profile 'development' while
    # unittest runs without the app's sandbox (an ancestor process runs tests with unittest
    # (pid N: python -m cProfile -o prof.out -m tool green)). Run the tests with pytest
    # instead".
    assert done.returncode == 0 and said.startswith("0 profile: development"), said


#: Remote profiles' settings (nothing listens: the refusals come first): two hosts the S3
#: client refuses, and an interface VPC endpoint of S3 whose host names bucket `prod`.
VPCE = "https://prod.vpce-1a2b3c4d-5e6f.s3.us-east-1.vpce.amazonaws.com"
REMOTE = f"""\
[development]
database_url = "postgresql://app@127.0.0.1:1/development"
blob_url = "s3://app-data/development"
s3_endpoint_url = "http://BÜCKET.store.:9000"

[staging]
database_url = "postgresql://app@127.0.0.1:1/staging"
blob_url = "s3://app-data/staging"
s3_endpoint_url = "http://minio_1:9000"

[demo]
database_url = "postgresql://app@127.0.0.1:1/demo"
blob_url = "s3://app-data/demo"
s3_endpoint_url = "{VPCE}"

[production]
database_url = "postgresql://app@127.0.0.1:1/production"
blob_url = "s3://prod/app-data/demo"

[testing]
data_root = "data/testing"
"""


def test_an_endpoint_host_the_s3_client_refuses_or_that_names_a_bucket_is_refused(
    tmp_path: Path,
) -> None:
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(REMOTE)
    done = subprocess.run(
        [sys.executable, "-m", "app", "doctor"],
        env={"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": str(settings)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    said = done.stdout + done.stderr
    # Before the fix: "ok: every profile is valid" here, and where such a profile runs
    # (`ENV_FOR_DYNACONF=development app doctor`, `app sessions list`) botocore's bare
    # "ValueError: Invalid endpoint" traceback, exit 1; the VPC endpoint's bucket was read
    # as `prod.vpce-1a2b3c4d-5e6f`, no overlap.
    assert done.returncode == 78 and "Traceback" not in said, said
    refused = "that the S3 client refuses"
    for profile, endpoint, fix in (
        ("development", "http://BÜCKET.store.:9000",
         "write its ASCII (IDNA) form, http://xn--bcket-kva.store:9000"),
        ("staging", "http://minio_1:9000",
         "a Docker Compose service whose name has '_' needs an alias without it"),
    ):  # fmt: skip
        assert f"s3_endpoint_url = '{endpoint}' (from settings.toml [{profile}])" in said, said
        assert refused in said and fix in said, said
    assert f"s3_endpoint_url's host {VPCE[8:]} names bucket 'prod'" in said, said
    assert "prefix app-data/demo" in said, said


def _alone(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m app *args`` in the project, given a hand-built environment (PATH alone),
    as a test's child may be."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={"PATH": os.environ["PATH"]}, cwd=PROJECT, capture_output=True, text=True,
        check=False,
    )  # fmt: skip


def test_a_child_refused_its_runs_testing_root_is_not_told_to_kill_its_run() -> None:
    # A test's child given a hand-built environment loads the run's default profile,
    # testing (rt-guard40), whose root the run holds for its whole length.
    done = _alone("data", "check", "--repair")
    said = done.stderr
    assert done.returncode == 75 and "is held by pid" in said and "kind tests" in said, said
    # Before the fix: "wait for that test run to finish and retry, or stop it (kill <the
    # run's pid>)": the child's own run.
    assert "that is the test run this process belongs to (pid " in said, said
    assert "APP_DATA_ROOT in its environment" in said and "app_live_server" in said, said
    assert "kill" not in said, said


#: The testing token of the test's own settings, not the project's.
OWN_TOKEN = "own-testing-token-0123456789abcdef"


def test_the_trash_hint_s_curl_reads_the_token_as_the_command_did(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("needs curl, which the hint names")
    from app.testing import stop_server

    settings = copy_project_settings(tmp_path / "settings")
    secrets = settings / ".secrets.toml"
    secrets.write_text(secrets.read_text().replace("testing-token-not-secret", OWN_TOKEN))
    root, log = tmp_path / "root", tmp_path / "serve.log"
    env = app_env(root, APP_SETTINGS_DIR=str(settings))
    server, _url = forked_app.start_server(env, root, log)
    try:
        # The command had the settings directory, then the token, set for itself alone
        # (`APP_SETTINGS_DIR=... app data empty-trash`): the shell the curl is pasted into
        # has neither.
        shell = {k: v for k, v in env.items() if k != "APP_SETTINGS_DIR"}
        for extra, asked_ok in (({}, True), ({"APP_API_TOKEN": OWN_TOKEN}, False)):
            held = run_app("data", "empty-trash", env={**env, **extra})
            assert held.returncode == 75 and OWN_TOKEN not in held.stderr, held.stderr
            hint = re.search(r"ask it: (curl .+)", held.stderr)
            assert hint, held.stderr
            asked = subprocess.run(
                ["sh", "-c", hint.group(1) + " --silent --show-error"],
                env=shell, capture_output=True, text=True, check=False, cwd="/",
            )  # fmt: skip
            if asked_ok:
                # Before the fix: the project's testing token, read from its settings: 401.
                assert asked.returncode == 0, (hint.group(1), asked.stdout, asked.stderr)
                assert json.loads(asked.stdout) == {"removed": 0, "entries": []}, asked.stdout
            else:
                # Before the fix: an empty bearer sent, 401 "missing bearer token".
                assert asked.returncode != 0 and asked.stdout == "", asked.stdout
                assert "APP_API_TOKEN: is not set in this shell: export it" in asked.stderr
    finally:
        stop_server(server)


@pytest.mark.app_profile("development")
def test_a_marked_test_s_child_without_its_opt_in_is_told_where_it_went() -> None:
    # The README's development command, from a test marked for development, given a
    # hand-built environment: the opt-in travels in the run's environment, which it lacks.
    done = _alone("--profile", "development", "config")
    said = done.stderr
    assert done.returncode == 78 and "loading profile 'development'" in said, said
    # Before the fix: only "mark the test @pytest.mark.app_profile('development')", which
    # it is.
    assert "If the test is marked already: its opt-in reaches the processes it starts" in said
    assert "PYTEST_APP_ALLOW_PROFILES, which the environment of this process lacks" in said, said
