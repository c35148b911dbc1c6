"""Red team 35 on the guard: what changed after the run's start was checked.

What pytest writes was checked once as the run started (and once more when the conftests
had added their options): every path it is told to write, each file in its cache, a hard
link of a file in a data root. A test runs after those checks. One that plants a link at a
path pytest writes only as the run ends (the ``--junitxml`` report, the cache's
``v/cache/nodeids``), or changes the writer itself (``config.cache._cachedir``), got a
production session's ``session.json`` rewritten by pytest. Each case is real: pytest runs
in a subprocess, next to a stopped production root named by the settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import forked_pytest
import pytest
from project_copy import PROJECT
from side_by_side import WITH_COVERAGE
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_server_e2e import snapshot

from app import sandbox

#: Tests that plant, mid-run, a hard link of a record at the --junitxml path and a symbolic
#: link to it in pytest's cache, where pytest writes as the run ends.
PLANTS_LINKS = """import os
import subprocess
from pathlib import Path


def test_plants_a_hard_link_at_the_report(request):
    # By `ln`: the run refuses os.link of a protected root's file in its own processes
    # (app.testing.python_writes); this tests the check of pytest's writes without that.
    subprocess.run(["ln", os.environ["RECORD"], "report.xml"], check=True)


def test_plants_a_symbolic_link_in_the_cache(request):
    nodeids = request.config.cache._cachedir / "v" / "cache" / "nodeids"
    nodeids.parent.mkdir(parents=True, exist_ok=True)
    nodeids.unlink(missing_ok=True)
    nodeids.symlink_to(os.environ["RECORD"])
"""


def _run(project: Path, settings: Path, *args: str, **extra: str) -> tuple[int, str]:
    """pytest in `project`, on `settings`; `WRAP` in `extra` is a command to run it under."""
    wrap = extra.pop("WRAP", "").split()
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(project), **extra)
    done = forked_pytest.run(  # a wrapper's (`WRAP`) starts the plain way
        [*wrap, sys.executable, "-m", "pytest", "-p", "cacheprovider", "-q", *args],
        cwd=project, env=env,
    )  # fmt: skip
    return done.returncode, " ".join((done.stdout + done.stderr).split())


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_link_a_test_plants_where_pytest_writes_at_the_end_is_removed_not_followed(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    workers: list[str],
) -> None:
    # Under xdist the workers' tests plant the links, and the controller writes the report
    # and the cache (the workers' own check at their end once raced on one link).
    settings, production = stopped
    [record] = production.glob("sessions/*/session.json")
    (tmp_path / "test_inner.py").write_text(PLANTS_LINKS)
    before = snapshot(production)
    code, output = _run(
        tmp_path, settings, *workers, "--junitxml=report.xml", "test_inner.py",
        RECORD=str(record),
    )  # fmt: skip
    assert snapshot(production) == before, output
    assert code == 1, output
    report, nodeids = tmp_path / "report.xml", tmp_path / ".pytest_cache/v/cache/nodeids"
    assert (
        f"app: after the tests, pytest's --junitxml rewrites {report} as the run ends, which "
        f"is a hard link (2 names) of {record} in the data root of profile 'production' "
        f"({production}; no process holds it now); it was checked as the run started, and a "
        f"test planted a link since. Removed (the name only, never what it leads to): "
        f"{report} (a name of that file, which has 2); {nodeids} (a symbolic link to "
        f"{record}), so pytest writes a new file there and the data root is unchanged; the "
        "run fails. Tests must not link pytest's outputs into a data root: look for the test "
        "that made it (os.link, os.symlink)"
    ) in output, output
    assert "2 passed" in output, output
    # pytest wrote new files of its own at both names.
    assert report.read_text().startswith("<?xml"), output
    assert not nodeids.is_symlink() and nodeids.read_text().startswith("["), output


#: A test that points pytest's cache at a data root, after the start's check of it.
MOVES_THE_CACHE = """import os
from pathlib import Path


def test_moves_the_cache(request):
    request.config.cache._cachedir = Path(os.environ["ROOT"]) / "sessions"
"""


def test_a_writer_a_test_points_into_a_data_root_writes_nothing(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    (tmp_path / "test_inner.py").write_text(MOVES_THE_CACHE)
    before = snapshot(production)
    code, output = _run(
        tmp_path, settings, "--junitxml=report.xml", "test_inner.py", ROOT=str(production)
    )
    assert snapshot(production) == before, output
    assert code == 3, output
    assert (
        "Exit: app: stopping before pytest writes its results: pytest's cache provider writes "
        f"its cache_dir, {production}/sessions, which lies in the data root of profile "
        f"'production' ({production}; no process holds it now). It was checked as the run "
        "started, and a test changed it since (a link on the way, a standard stream it "
        "names, moved with os.dup2, or the writer itself: config.cache, the junitxml "
        "writer); nothing pytest writes at the end is written for this run (no report, no "
        "cache). Look for the test that changed it, and run again"
    ) in output, output
    assert not (tmp_path / "report.xml").exists(), output


#: Tests of an inner run in a /tmp of its own: the first replaces the run's registry by a
#: symbolic link to a stopped production root's sessions/; the second starts a child with a
#: hand-built environment that asks for production.
LINKS_THE_REGISTRY = """import os, shutil, subprocess, sys
from pathlib import Path
from app import sandbox


def test_1_replaces_the_registry_by_a_link():
    shutil.rmtree(sandbox.RUNS_DIR)
    os.symlink(Path(os.environ["ROOT"]) / "sessions", sandbox.RUNS_DIR)


def test_2_a_child_with_a_hand_built_environment_asks_for_production():
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
    code = "from app.config import load; print('LOADED', load('production').data_root)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "LOADED" not in done.stdout
    assert "tests run on the 'testing' profile" in done.stderr, done.stderr
"""


def _private_tmp(*keep: Path) -> tuple[str, ...]:
    """``unshare`` into a mount namespace with a /tmp of its own, where `keep` (and the
    checkout with its interpreter) stay visible at their paths (tests/test_redteam_s21_guard.py
    does the same)."""
    kept = [p for p in (*keep, PROJECT, Path(sys.prefix)) if p.is_relative_to("/tmp")]
    binds = "".join(
        f'mkdir -p {path}; mount --bind "$old"/{path.relative_to("/tmp")} {path}; '
        for path in dict.fromkeys(kept)
    )
    script = (
        'set -e; old=$(mktemp -d /run/app-s35-tmp.XXXXXX); mount --bind /tmp "$old"; '
        f'mount -t tmpfs none /tmp; {binds}umount "$old"; rmdir "$old"; exec "$@"'
    )
    return ("unshare", "--mount", "sh", "-c", script, "sh")


def test_a_registry_replaced_by_a_link_takes_no_entry_and_is_put_back(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # The run writes its entry as it ends (kept for what its exit hooks start, and handed
    # on to the processes that outlive it). It wrote it at the registry's name, through a
    # symbolic link a test left there: the entry's JSON landed in a stopped production
    # root's sessions/ (an `unknown-entry` to `app data check`), and the rest of the run
    # was unguarded for children with a hand-built environment.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("only root mounts a tmpfs without a user namespace")
    settings, production = stopped
    run = sandbox.current_run()
    assert run is not None
    (tmp_path / "test_inner.py").write_text(LINKS_THE_REGISTRY)
    before = snapshot(production)
    env = _inner_env(APP_SETTINGS_DIR=str(settings), ROOT=str(production), TMPDIR=_tmpdir(tmp_path))
    done = subprocess.run(
        [*_private_tmp(run.sandbox, settings), sys.executable, "-m", "pytest",
         "-p", "no:cacheprovider", "-q", "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert snapshot(production) == before, output
    assert "2 passed, 1 error" in output, output
    assert (
        "app: after test_inner.py::test_1_replaces_the_registry_by_a_link, the registry "
        f"{sandbox.RUNS_DIR} was replaced by a symbolic link to {production}/sessions (the "
        "name removed, never its target); it was put back. Until then, a process started "
        "with a hand-built environment (and any after the run) was part of the run only "
        "through the descriptors of the registry and of its entry that the run keeps open. "
        f"Tests must not remove or change {sandbox.RUNS_DIR}"
    ) in output, output


#: A `-p` plugin that loads production as pytest registers it (its pytest_addoption), before
#: the app's plugin is imported, and purges it.
EARLY_PLUGIN = """from app.config import load
from app.storage import open_storage


def pytest_addoption(parser):
    try:
        with open_storage(load("production", serving=False), writer=True) as store:
            store.purge()
    except Exception as error:
        print("REFUSED", type(error).__name__, error)
"""


def test_a_plugin_that_loads_production_before_the_app_s_is_told_the_run_is_starting(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # Refused (pytest is imported, so no profile but testing), but told that the app's
    # plugin was disabled (`-p no:app`) or inactive: it was neither, only not started yet.
    settings, production = stopped
    (tmp_path / "early_plugin.py").write_text(EARLY_PLUGIN)
    (tmp_path / "test_inner.py").write_text("def test_nothing():\n    pass\n")
    before = snapshot(production)
    code, output = _run(
        tmp_path, settings, "-p", "early_plugin", "-s", "test_inner.py",
        ENV_FOR_DYNACONF="production",
    )  # fmt: skip
    assert snapshot(production) == before, output
    assert code == 0, output
    assert (
        "REFUSED SandboxViolationError refused under pytest: loading profile 'production' "
        "while pytest is starting in this process (loading its plugins and options: a `-p` "
        "plugin's or a PYTEST_PLUGINS module's import, or its pytest_addoption), before the "
        "app's plugin has made its sandbox. Use the app (load a profile, or start a process "
        "that does) from a test or a fixture, once the run has its sandbox, not at a "
        "plugin's import or in its start-up hooks"
    ) in output, output


#: A test that makes coverage's data file a hard link of a stopped root's lock file (empty:
#: SQLite takes an empty file for a new database, and writes its pages into it).
LINKS_COVERAGE = """import os
import subprocess


def test_links_coverage_s_data_file():
    if os.path.lexists(".coverage"):
        os.unlink(".coverage")
    subprocess.run(["ln", os.environ["LOCK"], ".coverage"], check=True)  # as PLANTS_LINKS
"""


def test_a_link_a_test_plants_where_coverage_writes_after_the_tests_is_removed(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # pytest-cov writes coverage's data file and its reports right after the test loop,
    # before pytest's end-of-session hooks: the lock file of a stopped production root took
    # 53 kB of SQLite there.
    settings, production = stopped
    lock = production / ".server.lock"
    assert lock.stat().st_size == 0
    (tmp_path / "test_inner.py").write_text(LINKS_COVERAGE)
    before = snapshot(production)
    code, output = _run(
        tmp_path, settings, "--cov=test_inner", "--cov-report=", "test_inner.py",
        LOCK=str(lock), PYTEST_ADDOPTS=WITH_COVERAGE,
    )  # fmt: skip
    assert snapshot(production) == before, output
    assert code == 1, output
    data = tmp_path / ".coverage"
    assert (
        f"app: after the tests, coverage (pytest-cov's --cov) erases its data file {data} "
        "(and the parallel ones beside it) as the run starts, and writes it at the end, which "
        f"is a hard link (2 names) of {lock} in the data root of profile 'production'"
    ) in output, output
    assert f"Removed (the name only, never what it leads to): {data} (a name of" in output


#: What pytest-env does with `env =` in an ini file: set variables in a tryfirst
#: pytest_load_initial_conftests, which runs after the app's plugin (a wrapper) neutralised
#: the environment.
SETS_THE_ENVIRONMENT_LATE = """import os
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    os.environ["ENV_FOR_DYNACONF"] = "production"
    os.environ["APP_DATA_ROOT"] = os.environ["ROOT"]
"""

#: Each test tries to reach the stopped production root, and passes when it is refused.
HELD = """import os, shutil, subprocess, sys
from pathlib import Path

import pytest
from app.config import load
from app.errors import ConfigError, SandboxViolationError
from app.storage import open_storage

ROOT = os.environ["ROOT"]


def test_variables_set_after_the_plugin_neutralised_them():
    with pytest.raises(SandboxViolationError, match="loading profile 'production'; tests run"):
        load(serving=False)


def test_an_environment_given_to_load_with_production_s_root_for_testing():
    environ = {**os.environ, "ENV_FOR_DYNACONF": "testing", "APP_DATA_ROOT": ROOT}
    with pytest.raises(ConfigError, match="which lies outside the test sandbox"):
        load("testing", serving=False, environ=environ)


def test_an_environment_given_to_load_that_opts_into_production():
    environ = {**os.environ, "PYTEST_APP_ALLOW_PROFILES": "production"}
    with pytest.raises(SandboxViolationError, match="loading profile 'production'; tests run"):
        load("production", serving=False, environ=environ)


@pytest.mark.app_profile("production")
def test_an_opted_in_profile_s_mapped_root_made_a_link_to_the_real_one(monkeypatch):
    monkeypatch.delenv("APP_DATA_ROOT")
    mapped = load("production", serving=False).data_root
    mapped.parent.mkdir(parents=True, exist_ok=True)
    mapped.symlink_to(ROOT)
    with pytest.raises(SandboxViolationError, match="which lies outside the test sandbox"):
        with open_storage(load("production", serving=False), writer=True) as store:
            store.purge()


def test_a_child_of_another_interpreter_given_production_s_settings_alone():
    other = "/usr/bin/python3"
    if not Path(other).exists() or Path(other).resolve() == Path(sys.executable).resolve():
        pytest.skip("no other interpreter")
    paths = [p for p in sys.path if p.endswith("site-packages")] + [os.environ["PROJECT"]]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(paths),
           "ENV_FOR_DYNACONF": "production", "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
    code = "from app.cli import main; main()"
    done = subprocess.run([other, "-c", code, "data", "purge", "--yes-i-mean-it"], env=env,
                          capture_output=True, text=True)
    if "No module named" in done.stderr:
        pytest.skip(f"{other} cannot import the app: {done.stderr[-200:]}")
    assert done.returncode == 78, done.stderr
    assert "tests run on the 'testing' profile" in done.stderr, done.stderr


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_a_worker_thread_of_the_event_loop_loads_production():
    import anyio

    with pytest.raises(SandboxViolationError, match="loading profile 'production'; tests run"):
        await anyio.to_thread.run_sync(lambda: load("production", serving=False))


@pytest.mark.anyio
async def test_a_process_of_the_event_loop_given_production_s_settings_alone():
    import anyio

    env = {"PATH": os.environ["PATH"], "ENV_FOR_DYNACONF": "production",
           "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
    done = await anyio.run_process(
        [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"], env=env, check=False
    )
    assert done.returncode == 78, done.stderr
    assert b"tests run on the 'testing' profile" in done.stderr, done.stderr


def test_a_child_in_a_session_of_its_own_with_an_empty_environment():
    if shutil.which("setsid") is None:
        pytest.skip("no setsid")
    done = subprocess.run(
        ["setsid", "env", "-i", "PATH=/usr/bin:/bin", "ENV_FOR_DYNACONF=production",
         f"APP_SETTINGS_DIR={os.environ['APP_SETTINGS_DIR']}", sys.executable, "-m", "app",
         "data", "purge", "--yes-i-mean-it"],
        capture_output=True, text=True,
    )
    assert done.returncode == 78, done.stderr
    assert "tests run on the 'testing' profile" in done.stderr, done.stderr
"""


def test_what_held_without_a_change(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    (tmp_path / "sets_env_late.py").write_text(SETS_THE_ENVIRONMENT_LATE)
    (tmp_path / "test_inner.py").write_text(HELD)
    before = snapshot(production)
    code, output = _run(
        tmp_path, settings, "-p", "sets_env_late", "-rs", "test_inner.py",
        ROOT=str(production), PROJECT=str(PROJECT),
        PYTEST_ADDOPTS="-p no:time_machine -p no:platformdirs",  # two of its tests use anyio
    )  # fmt: skip
    assert snapshot(production) == before, output
    assert code == 0, output
    assert " 8 passed" in output or "7 passed, 1 skipped" in output, output


#: A test that bind-mounts a stopped production root into its own tmp_path, to look at it
#: beside its data, and passes.
MOUNTS_INTO_TMP_PATH = """import os, subprocess


def test_mounts_production_into_its_tmp_path(tmp_path):
    view = tmp_path / "view"
    view.mkdir()
    subprocess.run(["mount", "--bind", os.environ["ROOT"], str(view)], check=True)
"""


@pytest.mark.parametrize("policy", ["failed", "none"])
def test_a_mount_a_test_makes_in_its_sandbox_is_not_emptied_by_the_retention_policy(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    policy: str,
) -> None:
    # Under "failed" pytest deletes a passed test's tmp_path after it, under "none" the
    # whole sandbox at the end; both deletions went on into the mount and emptied the root.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("only root mounts (unshare -m)")
    settings, production = stopped
    (tmp_path / "test_inner.py").write_text(MOUNTS_INTO_TMP_PATH)
    before = snapshot(production)
    code, output = _run(
        tmp_path, settings, "-o", f"tmp_path_retention_policy={policy}", "test_inner.py",
        ROOT=str(production), WRAP="unshare --mount --propagation private",
    )  # fmt: skip
    assert snapshot(production) == before, output
    # Under "failed" the test whose directory was to go fails; under "none" the sandbox is
    # kept at the end and the run says so, as for an older directory with a mount.
    assert code == (1 if policy == "failed" else 0), output
    if policy == "failed":
        assert (
            "app: after test_inner.py::test_mounts_production_into_its_tmp_path, pytest was "
            "about to delete what passed (tmp_path_retention_policy = 'failed'), but a "
            "filesystem is mounted in the sandbox at "
        ) in output, output
        assert "The policy keeps everything for the rest of this run. Unmount it" in output
    else:
        assert "(it keeps only the last 0 of its temporary directories" in output, output
        assert "but a filesystem is mounted in it at " in output, output
