"""The pytest guard, tested the way users meet it: pytest in a subprocess, with a hostile shell."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from project_copy import copy_project_settings
from side_by_side import inner_environ, pytest_side_by_side

from app.config import SANDBOX_ENV
from app.lock import RootLock

SETTINGS = """\
[default]
host = "127.0.0.1"
port = 8000

[development]
data_root = "{root}/development"

[testing]
data_root = "{testing}"

[production]
data_root = "{root}/production"
protected = true
"""


def write_settings(directory: Path, root: Path, testing: str | None = None) -> Path:
    """A settings directory whose profiles keep their data under `root`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "settings.toml").write_text(
        SETTINGS.format(root=root, testing=testing or f"{root}/testing")
    )
    return directory


@pytest.fixture
def settings_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings directory of the test's own, published as APP_SETTINGS_DIR."""
    directory = write_settings(tmp_path / "settings", tmp_path / "roots")
    monkeypatch.setenv("APP_SETTINGS_DIR", str(directory))
    return directory


PROBE_TEST = """
import json, os
from app.config import load

def test_probe():
    config = load()
    print("PROFILE", config.profile)
    print("ROOT", config.data_root)
    print("SANDBOX", config.sandbox)
    assert config.profile == "testing"
    assert config.data_root.is_relative_to(config.sandbox)
"""


PROD_TESTS = """
import pytest
from app.config import load
from app.errors import SandboxViolationError

def test_refused():
    with pytest.raises(SandboxViolationError) as refused:
        load("production")
    assert "mark the test @pytest.mark.app_profile('production')" in str(refused.value)

@pytest.mark.app_profile("production")
def test_opted_in(monkeypatch):
    monkeypatch.setenv("APP_API_TOKEN", "a-production-token-for-tests-only")
    config = load("production")
    assert config.data_root == config.sandbox / "data" / "production"
    assert config.sources["data_root"].startswith("pytest sandbox (configured: ")
"""

ESCAPE_TESTS = """
import pytest
from app.config import load
from app.errors import SandboxViolationError

def test_env_override(monkeypatch):
    monkeypatch.setenv("APP_DATA_ROOT", "/srv/app/production")
    with pytest.raises(SandboxViolationError, match="outside the test sandbox"):
        load()
"""

MARKER_TESTS = """
import os

def test_removes_it():
    del os.environ["PYTEST_APP_SANDBOX"]

def test_after_it():
    assert os.environ["PYTEST_APP_SANDBOX"]
"""

#: What the plugin's start-up must not import (start-up cost), read when the run's first
#: module is collected and when its first test runs. Its name sorts first: pytest collects
#: and runs a directory's modules in their names' order, and the modules after it import the
#: app's settings and load them.
AT_START_TESTS = """
import sys

AT_COLLECTION = set(sys.modules)

def test_dynaconf_was_not_needed_to_start():
    assert "dynaconf" not in sys.modules

def test_filelock_was_not_needed_to_start():
    assert "filelock" not in sys.modules

def test_ctypes_and_idna_were_not_needed_to_start():
    assert not {"ctypes", "encodings.idna", "stringprep"} & AT_COLLECTION

def test_the_run_adopts_its_orphans():
    import ctypes

    value = ctypes.c_int(0)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(37, ctypes.byref(value), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
    assert value.value == 1
"""

#: A pytest run inside a test (pytester's in-process one: `PLAIN_CONFTEST` loads pytester),
#: which must leave the outer run's environment and sandbox as they were (and the modules
#: after it, in the same run, load the settings again).
OUTER_TESTS = """
import os

from app.config import load


def test_inner_run(pytester):
    before = dict(os.environ)
    sandbox = load().sandbox
    pytester.makepyfile(test_inner="def test_ok():\\n    pass\\n")
    pytester.runpytest().assert_outcomes(passed=1)
    assert {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"} == {
        k: v for k, v in before.items() if k != "PYTEST_CURRENT_TEST"
    }
    assert load().sandbox == sandbox
"""

#: Marks the plugin would misread: each was read as no profile (or as one named
#: "['production']"), and its test's refusal told it to add the mark it had; a misspelt mark
#: pytest only warns of (the plain run has ``-p no:warnings``).
MARK_TESTS = """
import pytest

@pytest.mark.app_profiles("production")
def test_misspelt(): pass

@pytest.mark.app_profile(names=["production"])
def test_keyword(): pass

@pytest.mark.app_profile(["production"])
def test_list(): pass

@pytest.mark.app_profile()
def test_empty(): pass

@pytest.mark.app_profile("development", "production")
def test_right(): pass
"""

#: The inner test modules that need nothing of their own: pytester's environment with the
#: project's settings copied (tests/conftest.py gives a pytester test that), no option but
#: ``-p no:warnings``, a conftest that loads pytester (`PLAIN_CONFTEST`). They run in one
#: inner pytest (`plain_run`) instead of one each (an inner pytest's start-up is about 0.3 s
#: of CPU), and each test below asserts on its own module's outcomes in that run's ``-rA``
#: report, and on the lines it checked before.
PLAIN = {
    "test_at_start": AT_START_TESTS,
    "test_probe": PROBE_TEST,
    "test_prod": PROD_TESTS,
    "test_escape": ESCAPE_TESTS,
    "test_marker": MARKER_TESTS,
    "test_outer": OUTER_TESTS,
    "test_marks": MARK_TESTS,
}
PLAIN_CONFTEST = "pytest_plugins = ['pytester']\n"


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> pytest.RunResult:
    """`PLAIN`'s modules run in one pytest subprocess, as ``pytester.runpytest_subprocess``
    runs one (`side_by_side.pytest_side_by_side`, in a directory of its own holding them),
    with ``-rA`` so that each module's outcomes can be read apart, ``-p no:warnings`` and
    `PLAIN_CONFTEST`."""
    where = tmp_path_factory.mktemp("plain-run")
    project, tmproot = where / "project", where / "tmproot"
    project.mkdir()
    tmproot.mkdir()
    for module, source in PLAIN.items():
        (project / f"{module}.py").write_text(source)
    (project / "conftest.py").write_text(PLAIN_CONFTEST)
    env = inner_environ(os.environ, project, tmproot)
    env["APP_SETTINGS_DIR"] = str(copy_project_settings(where / "project-settings"))
    (result,) = pytest_side_by_side(project, env, ["-rA", "-p", "no:warnings"])
    return result


def outcomes(result: pytest.RunResult, module: str) -> list[str]:
    """`module`'s lines in the short summary of an ``-rA`` run (``PASSED test_x.py::test_y``,
    ``ERROR test_x.py::test_z``), without the reasons, sorted."""
    kinds = ("PASSED ", "FAILED ", "ERROR ", "SKIPPED ", "XFAIL ", "XPASS ")
    return sorted(
        line.split(" - ", 1)[0]
        for line in result.outlines
        if line.startswith(kinds) and f" {module}.py::" in line
    )


def test_the_plain_run_ran_each_module_and_nothing_else(plain_run: pytest.RunResult) -> None:
    plain_run.assert_outcomes(passed=12, errors=5)


def test_the_header_names_profile_data_root_source_and_sandbox(
    plain_run: pytest.RunResult,
) -> None:
    result = plain_run
    assert outcomes(result, "test_probe") == ["PASSED test_probe.py::test_probe"]
    result.stdout.fnmatch_lines(
        [
            (
                "app: profile=testing (forced), data_root=*/data/testing "
                "(from pytest sandbox (configured: *settings.toml [[]testing]))"
            ),
            "app: sandbox=*, settings=*, neutralised: nothing",
        ]
    )


def test_it_forces_testing_over_a_shell_that_exported_production(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENV_FOR_DYNACONF", "production")
    monkeypatch.setenv("FORCE_ENV_FOR_DYNACONF", "production")
    monkeypatch.setenv("APP_DATA_ROOT", "/srv/app/production")
    pytester.makepyfile(test_probe=PROBE_TEST)
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "app: profile=testing (forced; the shell asked for 'production'), *",
            "*neutralised: APP_DATA_ROOT, FORCE_ENV_FOR_DYNACONF, ENV_FOR_DYNACONF=production",
            "*PROFILE testing",
        ]
    )
    assert "/srv/app/production" not in result.stdout.str().split("neutralised")[-1]


def test_it_reports_every_neutralised_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, settings_dir: Path
) -> None:
    (settings_dir / "settings.local.toml").write_text('[testing]\ndata_root = "/elsewhere"\n')
    (settings_dir / ".secrets.local.toml").write_text('[testing]\napi_token = "x"\n')
    (settings_dir / ".env").write_text("APP_DATA_ROOT=/elsewhere\n")
    for name, value in {
        "APP_DATA_ROOT": "/elsewhere",
        "APP_PORT": "1",
        "DYNACONF_DATA_ROOT": "/elsewhere",
        "SETTINGS_FILE_FOR_DYNACONF": "/elsewhere/settings.toml",
        "INCLUDES_FOR_DYNACONF": "/elsewhere/*.toml",
        "PYTEST_APP_ALLOW_PROFILES": "production",
    }.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(
        test_env="""
import os
from app.config import load

def test_nothing_is_left():
    leftovers = [k for k in os.environ if k.startswith(("APP_", "DYNACONF_"))
                 and k != "APP_SETTINGS_DIR"]
    assert leftovers == []
    assert "PYTEST_APP_ALLOW_PROFILES" not in os.environ
    config = load()
    assert config.data_root.is_relative_to(config.sandbox)
    assert config.api_token is None  # .secrets.local.toml was not read
"""
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            (
                "*neutralised: APP_DATA_ROOT, APP_PORT, DYNACONF_DATA_ROOT, INCLUDES_FOR_DYNACONF, "
                "PYTEST_APP_ALLOW_PROFILES, SETTINGS_FILE_FOR_DYNACONF, "
                "settings.local.toml (not read under the sandbox), "
                ".secrets.local.toml (not read under the sandbox), .env (never read by the app)"
            )
        ]
    )


def test_it_names_a_live_server_and_leaves_it_alone(
    pytester: pytest.Pytester, settings_dir: Path, tmp_path: Path
) -> None:
    production = tmp_path / "roots" / "production"
    production.mkdir(parents=True)
    with RootLock(production, kind="server", profile="production", port=8080):
        pytester.makepyfile(test_probe=PROBE_TEST)
        result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            (
                f"app: live server on profile 'production' (pid {os.getpid()}, kind server, "
                f"profile production, host *, port 8080, since *) at {production}: "
                "tests will not touch it"
            )
        ]
    )


@pytest.mark.parametrize("how", [["--app-strict"], ["-o", "app_strict=true"]])
def test_strict_mode_refuses_to_run_while_a_server_is_live(
    pytester: pytest.Pytester, settings_dir: Path, tmp_path: Path, how: list[str]
) -> None:
    production = tmp_path / "roots" / "production"
    production.mkdir(parents=True)
    with RootLock(production, kind="server", profile="production", port=8080):
        pytester.makepyfile(test_probe=PROBE_TEST)
        result = pytester.runpytest_subprocess(*how)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            (
                "ERROR: app: strict mode refuses to run while a live process holds a data root: "
                f"profile 'production' at {production} held by pid {os.getpid()}, kind server*"
                "Stop it, or run without --app-strict*"
            )
        ]
    )


def test_strict_mode_runs_when_no_server_is_live(
    pytester: pytest.Pytester, settings_dir: Path
) -> None:
    pytester.makepyfile(test_probe=PROBE_TEST)
    pytester.runpytest_subprocess("--app-strict").assert_outcomes(passed=1)


def test_it_refuses_a_testing_root_that_overlaps_another_profile(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    roots = tmp_path / "roots"
    directory = write_settings(tmp_path / "settings", roots, testing=f"{roots}/production/tests")
    monkeypatch.setenv("APP_SETTINGS_DIR", str(directory))
    pytester.makepyfile(test_probe=PROBE_TEST)
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            (
                "ERROR: app: the testing profile cannot be used: profiles 'testing' and "
                "'production' overlap: 'testing''s data root lies inside 'production''s*"
                "change data_root for one of them*"
            )
        ]
    )


def test_it_refuses_a_basetemp_that_holds_a_data_root(
    pytester: pytest.Pytester, settings_dir: Path, tmp_path: Path
) -> None:
    production = tmp_path / "roots" / "production"
    production.mkdir(parents=True)
    (production / "precious").write_text("keep me")
    pytester.makepyfile(test_probe=PROBE_TEST)
    result = pytester.runpytest_subprocess(f"--basetemp={tmp_path / 'roots'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            (
                f"ERROR: app: refusing --basetemp {tmp_path / 'roots'}: pytest empties it before "
                "the run, and it overlaps the data root of profile 'development'*"
            )
        ]
    )
    assert (production / "precious").read_text() == "keep me"


def test_a_reused_sandbox_is_emptied_only_of_the_roots_its_runs_made(
    pytester: pytest.Pytester, settings_dir: Path, tmp_path: Path
) -> None:
    # A --basetemp an earlier run used holds its tests' stamped roots, which pytest empties
    # when the directory is reused. Its .app-sandbox mark vouched for every stamped root in
    # it: a service's root (set in its own environment) made there afterwards was deleted.
    basetemp = tmp_path / "reused"
    pytester.makepyfile(test_store="def test_store(app_store):\n    pass\n")
    pytester.runpytest_subprocess(f"--basetemp={basetemp}").assert_outcomes(passed=1)
    made = list(basetemp.rglob(".app-profile.json"))
    assert made
    for stamp in made:
        assert json.loads(stamp.read_text())["sandbox"] == str(basetemp.resolve())

    service = basetemp / "srv"
    (service / "sessions" / "kept").mkdir(parents=True)
    (service / "sessions" / "kept" / "session.json").write_text('{"title": "kept"}')
    (service / ".app-profile.json").write_text('{"profile": "production"}')
    refused = pytester.runpytest_subprocess(f"--basetemp={basetemp}")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        [
            (
                f"ERROR: app: refusing --basetemp {basetemp}: it is marked as an earlier run's "
                f"sandbox (.app-sandbox), but it holds the data root {service}, which no run of "
                "the app's plugin made there (its stamp, for profile 'production', names no "
                "sandbox); pytest empties the --basetemp before the run. Choose another "
                "--basetemp; if that root is only an old test's, delete it yourself first"
            )
        ]
    )
    assert (service / "sessions" / "kept" / "session.json").read_text() == '{"title": "kept"}'

    # Moved away, the earlier run's own roots are emptied as before.
    service.rename(tmp_path / "srv")
    left = [stamp.with_name("left-by-the-earlier-run") for stamp in made]
    for path in left:
        path.write_text("")
    pytester.runpytest_subprocess(f"--basetemp={basetemp}").assert_outcomes(passed=1)
    assert not any(path.exists() for path in left)


def test_it_refuses_a_basetemp_that_another_live_run_uses(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    basetemp = tmp_path / "shared-basetemp"
    held = basetemp / "data" / "testing"
    held.mkdir(parents=True)
    (basetemp / "other-run-file").write_text("in use")
    with RootLock(held, kind="tests", profile="testing"):
        pytester.makepyfile(test_probe=PROBE_TEST)
        result = pytester.runpytest_subprocess(f"--basetemp={basetemp}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            (
                f"ERROR: app: refusing --basetemp {basetemp}: another run uses it; its testing "
                f"data root is held by pid {os.getpid()}, kind tests*Give each concurrent run*"
            )
        ]
    )
    assert (basetemp / "other-run-file").read_text() == "in use"


def test_it_refuses_a_configuration_loaded_before_it_could_act(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plugin that loads the settings at import time, as the incident's singleton did.
    monkeypatch.delenv(SANDBOX_ENV)
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    pytester.makepyfile(
        early_plugin="from app.config import load\nSETTINGS = load('testing')\n",
        test_probe=PROBE_TEST,
    )
    result = pytester.runpytest_subprocess("-p", "early_plugin")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            (
                "ERROR: app: the configuration was loaded (profile 'testing', data root *) at "
                "*early_plugin.py:2 before the app pytest plugin could confine it*"
                "never at import time of a plugin or conftest"
            )
        ]
    )


def test_a_test_may_not_load_production_without_opting_in(plain_run: pytest.RunResult) -> None:
    assert outcomes(plain_run, "test_prod") == [
        "PASSED test_prod.py::test_opted_in",
        "PASSED test_prod.py::test_refused",
    ]


def test_a_data_root_outside_the_sandbox_is_refused_inside_a_test(
    plain_run: pytest.RunResult,
) -> None:
    assert outcomes(plain_run, "test_escape") == ["PASSED test_escape.py::test_env_override"]


def test_a_test_that_removes_the_sandbox_marker_fails_and_it_is_put_back(
    plain_run: pytest.RunResult,
) -> None:
    # Its test passes, then errors in its teardown (the plugin's check); the next one passes.
    assert outcomes(plain_run, "test_marker") == [
        "ERROR test_marker.py::test_removes_it",
        "PASSED test_marker.py::test_after_it",
        "PASSED test_marker.py::test_removes_it",
    ]
    plain_run.stdout.fnmatch_lines(
        ["*test_removes_it changed PYTEST_APP_SANDBOX; it was put back*"]
    )


def test_xdist_workers_get_distinct_roots_inside_the_sandbox(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "seen"
    out.mkdir()
    monkeypatch.setenv("SEEN_DIR", str(out))
    pytester.makepyfile(
        test_workers="""
import os, time
from pathlib import Path
import pytest
from app.config import load

@pytest.mark.parametrize("n", range(4))
def test_record(n, tmp_path):
    config = load()
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert tmp_path.is_relative_to(config.sandbox)
    assert config.data_root.is_relative_to(config.sandbox)
    seen = Path(os.environ["SEEN_DIR"], f"{worker}-{n}")
    seen.write_text(f"{config.sandbox}\\n{config.data_root}")
    time.sleep(0.2)  # keep both workers busy so that each records something
"""
    )
    result = pytester.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=4)
    seen: dict[str, set[tuple[str, str]]] = {}
    for path in out.iterdir():
        sandbox, root = path.read_text().splitlines()
        seen.setdefault(path.name.split("-")[0], set()).add((sandbox, root))
    assert set(seen) == {"gw0", "gw1"}
    ((sandbox0, root0),) = seen["gw0"]
    ((sandbox1, root1),) = seen["gw1"]
    assert root0 != root1
    assert Path(sandbox0).name == "popen-gw0" and Path(sandbox1).name == "popen-gw1"
    assert Path(sandbox0).parent == Path(sandbox1).parent


def test_disabling_the_plugin_still_keeps_tests_off_other_profiles(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SANDBOX_ENV)
    pytester.makepyfile(
        test_bare="""
import pytest
from app.config import load
from app.errors import SandboxViolationError

def test_production_is_refused():
    with pytest.raises(SandboxViolationError, match="without the app's sandbox"):
        load("production")
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:app")
    result.assert_outcomes(passed=1)
    assert "app: profile=" not in result.stdout.str()


def test_a_live_server_is_found_even_when_the_shell_sets_dynaconf_switches(
    pytester: pytest.Pytester,
    settings_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # FORCE_ENV_FOR_DYNACONF would make dynaconf resolve every profile as production.
    monkeypatch.setenv("FORCE_ENV_FOR_DYNACONF", "production")
    development = tmp_path / "roots" / "development"
    development.mkdir(parents=True)
    with RootLock(development, kind="server", profile="development", port=8000):
        pytester.makepyfile(test_probe=PROBE_TEST)
        result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*neutralised: FORCE_ENV_FOR_DYNACONF*",
            (
                f"app: live server on profile 'development' (*) at {development}: "
                "tests will not touch it"
            ),
        ]
    )


def test_the_plugin_starts_without_importing_dynaconf_or_filelock(
    plain_run: pytest.RunResult,
) -> None:
    # Start-up cost: the plugin reads plain settings with tomllib; the first load() pays.
    # The session's own root, in the sandbox, is flocked without filelock; the first
    # server or store a test opens pays for it.
    passed = outcomes(plain_run, "test_at_start")
    assert "PASSED test_at_start.py::test_dynaconf_was_not_needed_to_start" in passed
    assert "PASSED test_at_start.py::test_filelock_was_not_needed_to_start" in passed


def test_the_plugin_starts_without_ctypes_or_the_idna_codec(plain_run: pytest.RunResult) -> None:
    # Start-up cost (bench/README.md, "perf-startup60"): the run becomes its children's
    # subreaper through `_ctypes` alone, and the look at the testing port gives the resolver
    # an ASCII host as bytes; `ctypes` and the `idna` codec cost 5 M instructions each.
    passed = outcomes(plain_run, "test_at_start")
    assert "PASSED test_at_start.py::test_ctypes_and_idna_were_not_needed_to_start" in passed
    assert "PASSED test_at_start.py::test_the_run_adopts_its_orphans" in passed
    assert len(passed) == 4, passed


def test_in_another_project_without_settings_it_changes_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Installed in a virtual environment shared with another project: that project's
    # variables, its own APP_* and DYNACONF_* included, are its business.
    empty = tmp_path / "no-settings-here"
    empty.mkdir()
    monkeypatch.setenv("APP_SETTINGS_DIR", str(empty))
    monkeypatch.setenv("APP_DATA_ROOT", "/srv/other-project")
    monkeypatch.setenv("DYNACONF_DEBUG", "1")
    monkeypatch.setenv("ENV_FOR_DYNACONF", "staging")
    pytester.makepyfile(
        test_other="""
import os

def test_other_project():
    assert os.environ["APP_DATA_ROOT"] == "/srv/other-project"
    assert os.environ["DYNACONF_DEBUG"] == "1"
    assert os.environ["ENV_FOR_DYNACONF"] == "staging"
"""
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            (
                "app: inactive, nothing neutralised or forced: no settings.toml found: "
                f"looked in {empty}*"
            )
        ]
    )


def test_in_another_project_sharing_the_environment_it_changes_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An editable install finds this project's settings, but the run belongs to a project
    # elsewhere (its rootdir): leave it alone.
    monkeypatch.delenv("APP_SETTINGS_DIR", raising=False)
    monkeypatch.setenv("APP_DATA_ROOT", "/srv/other-project")
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_other="""
import os

def test_other_project():
    assert os.environ["APP_DATA_ROOT"] == "/srv/other-project"
"""
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            (
                "app: inactive, nothing neutralised or forced: the settings in * belong to "
                "another project than this run's rootdir (*); set APP_SETTINGS_DIR to use them"
            )
        ]
    )


def test_it_neutralises_only_the_names_that_affect_the_app(
    pytester: pytest.Pytester, settings_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_DATA_ROOT", "/srv/production")
    monkeypatch.setenv("APP_NAME", "someone else's")
    monkeypatch.setenv("DYNACONF_DEBUG", "1")
    pytester.makepyfile(
        test_env="""
import os

def test_env():
    assert "APP_DATA_ROOT" not in os.environ
    assert os.environ["APP_NAME"] == "someone else's"
    assert os.environ["DYNACONF_DEBUG"] == "1"
"""
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["app: sandbox=*, neutralised: APP_DATA_ROOT"])


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_and_version_work_with_broken_settings_and_touch_nothing(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "settings.toml").write_text("[testing\ndata_root = \n")
    monkeypatch.setenv("APP_SETTINGS_DIR", str(broken))
    basetemp = tmp_path / "basetemp"
    result = pytester.runpytest_subprocess(option, f"--basetemp={basetemp}")
    assert result.ret == 0
    assert not basetemp.exists()
    assert sorted(p.name for p in broken.iterdir()) == ["settings.toml"]


def test_a_pytest_run_inside_a_test_leaves_the_outer_run_as_it_was(
    plain_run: pytest.RunResult,
) -> None:
    assert outcomes(plain_run, "test_outer") == ["PASSED test_outer.py::test_inner_run"]


def test_without_the_plugin_the_refusal_says_why_it_is_not_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata

    from app import sandbox

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
    assert sandbox.why_no_plugin().startswith(
        "the app's pytest plugin is not registered: the package is imported from "
    )
    assert "not installed in this Python environment; install it (`pip install -e .`)" in (
        sandbox.why_no_plugin()
    )
    monkeypatch.undo()
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert sandbox.why_no_plugin().startswith("PYTEST_DISABLE_PLUGIN_AUTOLOAD is set")
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    assert sandbox.why_no_plugin() == (
        "the plugin was disabled (`-p no:app`), or stayed inactive because the run's rootdir "
        "is another project than these settings' (pytest's header then says `app: inactive`), "
        "or had not started yet (a `-p` plugin's import or `pytest_addoption` runs before "
        "pytest imports it); run without `-p no:app`, from the project, or with "
        "APP_SETTINGS_DIR naming its settings directory, and start what uses the app from a "
        "test or a fixture"
    )


def test_without_plugin_autoload_the_refusal_names_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(
        test_bare="""
import pytest
from app.config import load
from app.errors import SandboxViolationError

def test_production_is_refused():
    with pytest.raises(SandboxViolationError) as refused:
        load("production")
    assert "is set: add `-p app`, or unset it" in str(refused.value)
"""
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_a_production_root_from_an_unset_variable_does_not_stop_the_tests(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(
        f'[testing]\ndata_root = "{tmp_path}/testing"\n\n'
        '[production]\ndata_root = "@format {env[PROD_ROOT]}"\nprotected = true\n'
    )
    monkeypatch.setenv("APP_SETTINGS_DIR", str(settings))
    monkeypatch.delenv("PROD_ROOT", raising=False)
    pytester.makepyfile(test_probe=PROBE_TEST)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_the_fixtures_say_why_they_cannot_work_where_the_plugin_is_inactive(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APP_SETTINGS_DIR", raising=False)
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_fixture="def test_it(app_config):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            (
                "*app: the app_config fixture needs the app's pytest plugin, which is inactive in "
                "this run: the settings in * belong to another project*"
            )
        ]
    )


def test_an_app_profile_mark_it_would_misread_fails_its_test_naming_it(
    plain_run: pytest.RunResult,
) -> None:
    result = plain_run
    assert outcomes(result, "test_marks") == [
        "ERROR test_marks.py::test_empty",
        "ERROR test_marks.py::test_keyword",
        "ERROR test_marks.py::test_list",
        "ERROR test_marks.py::test_misspelt",
        "PASSED test_marks.py::test_right",
    ]
    tail = "; the test would run without the profiles it means. Write @pytest.mark.app_profile("
    misspelt = (
        "*test_misspelt is marked 'app_profiles', which is no mark of the app (did you mean "
        "'app_profile'?); the test would run without the profiles it names. Spell it*"
    )
    keyword = (
        "*test_keyword: @pytest.mark.app_profile takes names=['production'], and it reads "
        f"only profile names given as strings{tail}*"
    )
    lines = [
        misspelt,
        keyword,
        "*test_list: @pytest.mark.app_profile takes ['production'], and it reads*",
        "*test_empty: @pytest.mark.app_profile names no profile, and it reads*",
    ]
    # fnmatch reads [ as a character class: [[] is a [.
    result.stdout.fnmatch_lines_random([line.replace("[", "[[]") for line in lines])
