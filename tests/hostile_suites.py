"""Hostile test suites for tests/test_incident.py: what a careless (or clever) suite does.

Each suite is a set of files that `pytester` writes into a fresh directory and runs in a
pytest subprocess whose shell points at a live production server's data root. The suites
find production through ``HOSTILE_*`` variables (a test that hard-coded the path would do the
same); the plugin leaves those alone because they configure nothing.

Every inner test asserts on the refusal it meets, so an inner pass means "refused, with this
message", and the outer test then checks that production is byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_RUN_APP = '''

def second_copy(name, filename):
    """The incident's second copy: a module of the app imported again under another name."""
    import importlib.util

    import app as package

    spec = importlib.util.spec_from_file_location(name, Path(package.__file__).parent / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def app(*args, env=None):
    """Run the `app` command line; a safety timeout only, never an assertion."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
'''

#: Imported by every hostile suite: where production is, and how to run the app.
HELPERS = (
    """
import os
import subprocess
import sys
from pathlib import Path

PRODUCTION = Path(os.environ["HOSTILE_PRODUCTION_ROOT"])
TOKEN = os.environ["HOSTILE_PRODUCTION_TOKEN"]
SERVER_PID = int(os.environ["HOSTILE_SERVER_PID"])
SETTINGS_DIR = os.environ["APP_SETTINGS_DIR"]
# What the shell exported before the plugin neutralised it.
PRODUCTION_SHELL = {
    "ENV_FOR_DYNACONF": "production",
    "APP_DATA_ROOT": str(PRODUCTION),
    "APP_API_TOKEN": TOKEN,
    "APP_SETTINGS_DIR": SETTINGS_DIR,
}
"""
    + _RUN_APP
)

# (1) The incident's own fixture: clean `data_root / "sessions"` around every test.
INCIDENT_CONFTEST = """
import shutil

import pytest

from app.config import load


@pytest.fixture(autouse=True)
def clean_sessions():
    sessions = load().data_root / "sessions"
    shutil.rmtree(sessions, ignore_errors=True)
    sessions.mkdir(parents=True, exist_ok=True)
    yield
    shutil.rmtree(sessions, ignore_errors=True)
    sessions.mkdir(parents=True, exist_ok=True)
"""

INCIDENT_TESTS = """
import pytest

from app.config import load
from hostile_helpers import PRODUCTION


@pytest.mark.parametrize("n", range(2))
def test_the_cleanup_ran_in_the_sandbox(n):
    config = load()
    assert config.profile == "testing"
    assert config.data_root.is_relative_to(config.sandbox)
    assert not config.data_root.is_relative_to(PRODUCTION)
    assert (config.data_root / "sessions").is_dir()
"""

# (2) load("production") and delete its data root.
LOAD_PRODUCTION_TESTS = """
import shutil

import pytest

from app.config import load
from app.errors import ConfigError, SandboxViolationError
from hostile_helpers import PRODUCTION, TOKEN


def test_without_opting_in_it_is_refused():
    with pytest.raises(SandboxViolationError) as refused:
        shutil.rmtree(load("production").data_root)
    message = str(refused.value)
    assert message.startswith("refused under pytest (sandbox: ")
    assert "loading profile 'production'; tests run on the 'testing' profile" in message
    assert "mark the test @pytest.mark.app_profile('production')" in message


@pytest.mark.app_profile("production")
def test_opting_in_maps_the_root_into_the_sandbox(monkeypatch):
    monkeypatch.setenv("APP_API_TOKEN", TOKEN)
    config = load("production")
    assert config.data_root == config.sandbox / "data" / "production"
    assert config.sources["data_root"] == (
        f"pytest sandbox (configured: {PRODUCTION}, settings.toml [production])"
    )
    config.data_root.mkdir(parents=True)
    shutil.rmtree(config.data_root)


@pytest.mark.app_profile("production")
def test_opting_in_with_the_production_root_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("APP_API_TOKEN", TOKEN)
    monkeypatch.setenv("APP_DATA_ROOT", str(PRODUCTION))
    with pytest.raises(ConfigError) as refused:
        shutil.rmtree(load("production").data_root)
    assert (
        f"data root {PRODUCTION} from environment APP_DATA_ROOT, which lies outside the test "
        "sandbox. Point APP_DATA_ROOT under tmp_path"
    ) in str(refused.value)
"""

# (3) The maintenance commands in a subprocess, with the environment the test inherited.
MAINTENANCE_TESTS = """
import os

from app.config import load
from hostile_helpers import PRODUCTION_SHELL, app

SANDBOXED = "error: refused under pytest (sandbox: "
NOT_PRODUCTION = "loading profile 'production'; tests run on the 'testing' profile"


def test_purge_on_production_is_refused():
    done = app("--profile", "production", "data", "purge", "--yes-i-mean-it")
    assert done.returncode == 78, done.stderr
    assert done.stderr.startswith(SANDBOXED) and NOT_PRODUCTION in done.stderr


def test_empty_trash_lands_on_the_sandbox_root_this_run_holds():
    done = app("data", "empty-trash")
    assert done.returncode == 75, done.stderr
    root = load().data_root
    assert root.is_relative_to(load().sandbox)
    assert (
        f"error: cannot empty the trash: data root {root} is held by pid {os.getpid()}, "
        "kind tests, profile testing"
    ) in done.stderr


def test_re_exporting_the_production_shell_is_refused():
    env = {**os.environ, **PRODUCTION_SHELL}
    for args in (["data", "purge", "--yes-i-mean-it"], ["data", "empty-trash", "--yes-i-mean-it"]):
        done = app(*args, env=env)
        assert done.returncode == 78, done.stderr
        assert done.stderr.startswith(SANDBOXED) and NOT_PRODUCTION in done.stderr


def test_forging_an_opt_in_still_keeps_the_production_root_out():
    env = {**os.environ, **PRODUCTION_SHELL, "PYTEST_APP_ALLOW_PROFILES": "production"}
    done = app("data", "purge", "--yes-i-mean-it", env=env)
    assert done.returncode == 78, done.stderr
    assert (
        f"data root {PRODUCTION_SHELL['APP_DATA_ROOT']} from environment APP_DATA_ROOT, which "
        "lies outside the test sandbox"
    ) in done.stderr


def test_serving_production_from_a_test_is_refused():
    done = app("serve", "--port", "0", env={**os.environ, **PRODUCTION_SHELL})
    assert done.returncode == 78, done.stderr
    assert NOT_PRODUCTION in done.stderr
"""

# (3b) A subprocess with a cleared environment: no sandbox marker, no PYTEST_CURRENT_TEST.
CLEARED_ENV_TESTS = """
import os

import pytest

from hostile_helpers import PRODUCTION, PRODUCTION_SHELL, app

TREE = "this process belongs to the test run through the process tree (an ancestor process"


@pytest.mark.parametrize(
    "args",
    [
        ["--profile", "production", "data", "purge", "--yes-i-mean-it"],
        ["data", "empty-trash", "--yes-i-mean-it"],
        ["serve", "--port", "0"],
    ],
)
def test_the_process_tree_refuses_it(args):
    env = {"PATH": os.environ["PATH"], **PRODUCTION_SHELL}
    done = app(*args, env=env)
    assert done.returncode == 78, done.stderr
    assert "loading profile 'production'; tests run on the 'testing' profile" in done.stderr
    assert TREE in done.stderr
"""

# (4) The incident's second copy: the config module imported under another name.
SECOND_COPY_TESTS = """
import dataclasses
import importlib
import sys
from pathlib import Path

import pytest

import app
import app.config
from app.errors import SandboxViolationError
from hostile_helpers import PRODUCTION, TOKEN, second_copy

APP_DIR = Path(app.__file__).resolve().parent
OUTSIDE = f"open data root {PRODUCTION}, which lies outside the test sandbox"


def test_a_second_copy_of_config_refuses_production(monkeypatch):
    config2 = second_copy("src.app.config", "config.py")
    assert config2 is not app.config
    monkeypatch.setenv("APP_API_TOKEN", TOKEN)
    with pytest.raises(SandboxViolationError) as refused:
        config2.load("production")
    assert "loading profile 'production'; tests run on the 'testing' profile" in str(
        refused.value
    )
    testing = config2.load()
    assert testing.data_root.is_relative_to(testing.sandbox)


def test_a_second_copy_of_dataroot_refuses_the_production_root(monkeypatch):
    config2 = second_copy("src.app.config", "config.py")
    sandbox2 = second_copy("src.app.sandbox", "sandbox.py")
    # The second dataroot imports `app.config` and `app.sandbox`: make those second copies.
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "app.config", config2)
        patched.setitem(sys.modules, "app.sandbox", sandbox2)
        dataroot2 = second_copy("src.app.dataroot", "dataroot.py")
    assert dataroot2.check_root is sandbox2.check_root
    # The run is marked on `sys`, which every copy shares, even with the variables gone.
    monkeypatch.delenv("PYTEST_APP_SANDBOX")
    assert sandbox2.current_run().sandbox == config2.load().sandbox
    forged = dataclasses.replace(config2.load(), profile="production", data_root=PRODUCTION)
    for write in (True, False):
        with pytest.raises(SandboxViolationError) as refused:
            dataroot2.open_root(forged, write=write)
        assert OUTSIDE in str(refused.value)


def test_the_src_spelling_of_the_incident_is_refused(tmp_path, monkeypatch):
    (tmp_path / "src").symlink_to(APP_DIR.parent, target_is_directory=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    config2 = importlib.import_module("src.app.config")
    dataroot2 = importlib.import_module("src.app.dataroot")
    assert config2 is not app.config
    with pytest.raises(SandboxViolationError):
        config2.load("production")
    forged = dataclasses.replace(config2.load(), data_root=PRODUCTION)
    with pytest.raises(SandboxViolationError) as refused:
        dataroot2.open_root(forged)
    assert OUTSIDE in str(refused.value)
"""

# (5) A test that exports production itself, mid-test.
EXPORTS_MID_TEST_TESTS = """
import os
import shutil

import pytest

from app.config import load
from app.errors import ConfigError, SandboxViolationError
from hostile_helpers import PRODUCTION, TOKEN


@pytest.fixture
def restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_exporting_production_is_refused(restore_environ):
    os.environ.update(
        ENV_FOR_DYNACONF="production", APP_DATA_ROOT=str(PRODUCTION), APP_API_TOKEN=TOKEN
    )
    with pytest.raises(SandboxViolationError) as refused:
        shutil.rmtree(load().data_root / "sessions")
    assert "loading profile 'production'; tests run on the 'testing' profile" in str(
        refused.value
    )


def test_pointing_the_testing_profile_at_production_is_refused(restore_environ):
    os.environ.update(ENV_FOR_DYNACONF="testing", APP_DATA_ROOT=str(PRODUCTION))
    with pytest.raises(ConfigError) as refused:
        shutil.rmtree(load().data_root / "sessions")
    message = str(refused.value)
    assert "profiles 'testing' and 'production' share the same data root" in message
    assert (
        f"data root {PRODUCTION} from environment APP_DATA_ROOT, which lies outside the test "
        "sandbox"
    ) in message


def test_forging_the_opt_in_maps_production_into_the_sandbox(restore_environ):
    os.environ.update(
        ENV_FOR_DYNACONF="production", PYTEST_APP_ALLOW_PROFILES="production", APP_API_TOKEN=TOKEN
    )
    config = load()
    assert config.profile == "production"
    assert config.data_root == config.sandbox / "data" / "production"
    shutil.rmtree(config.data_root, ignore_errors=True)
"""

# (6) A Config made by hand, and a DataRoot made by hand.
HAND_MADE_TESTS = """
import dataclasses

import pytest

from app.config import load
from app.dataroot import DataRoot, describe, open_root, restamp
from app.errors import SandboxViolationError
from app.lock import RootLock
from app.store import Store
from hostile_helpers import PRODUCTION, SERVER_PID

OUTSIDE = "lies outside the test sandbox"


@pytest.fixture
def forged():
    return dataclasses.replace(load(), profile="production", data_root=PRODUCTION)


def test_open_root_refuses_it(forged):
    for write in (True, False):
        with pytest.raises(SandboxViolationError) as refused:
            Store(open_root(forged, write=write, kind="maintenance")).purge()
        assert f"open data root {PRODUCTION}, which {OUTSIDE}" in str(refused.value)


def test_restamp_refuses_it(forged):
    with pytest.raises(SandboxViolationError) as refused:
        restamp(dataclasses.replace(forged, profile="testing"), "production")
    assert f"re-stamp data root {PRODUCTION}, which {OUTSIDE}" in str(refused.value)


def test_a_hand_made_data_root_is_refused(forged):
    with pytest.raises(SandboxViolationError) as refused:
        Store(DataRoot(forged, kind="maintenance", lock=None, stamp=None)).purge()
    assert f"use data root {PRODUCTION}, which {OUTSIDE}" in str(refused.value)


def test_a_hand_made_lock_is_refused_before_the_live_server_would(forged):
    with pytest.raises(SandboxViolationError) as refused:
        RootLock(PRODUCTION, kind="maintenance", profile="production").acquire("purge")
    assert f"lock data root {PRODUCTION}, which {OUTSIDE}" in str(refused.value)
    # Without the sandbox the live server's lock would still refuse it (layer 4).
    assert describe(PRODUCTION).probe.holder["pid"] == SERVER_PID
"""

# (7) A test that removes the sandbox marker, then loads production.
MARKER_REMOVED_TESTS = """
import dataclasses
import os

import pytest

from app.config import load
from app.dataroot import open_root
from app.errors import SandboxViolationError
from hostile_helpers import PRODUCTION, TOKEN


def test_removing_the_marker(monkeypatch):
    del os.environ["PYTEST_APP_SANDBOX"]
    monkeypatch.setenv("APP_API_TOKEN", TOKEN)
    with pytest.raises(SandboxViolationError) as refused:
        load("production")
    assert (
        "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through this process)"
    ) in str(refused.value)
    # The run is marked in the process, not only in the variable: the path is still checked.
    forged = dataclasses.replace(load(), profile="production", data_root=PRODUCTION)
    with pytest.raises(SandboxViolationError) as outside:
        open_root(forged, kind="maintenance")
    assert f"open data root {PRODUCTION}, which lies outside the test sandbox" in str(
        outside.value
    )
"""

# (7b) The incident's shape without the app (session 75): the settings read with tomllib and
# the root they name deleted, rewritten, moved and opened as a database by plain Python. Each
# call is refused before it does anything (app.testing.python_writes), and the test that
# made it fails at its end even where it caught the refusal.
LITERAL_WRITES_TESTS = """
import os
import shutil
import socket
import sqlite3
import tomllib
from pathlib import Path

import pytest
from filelock import FileLock

from app.testing.python_writes import ProtectedRootError
from hostile_helpers import PRODUCTION, SETTINGS_DIR

SETTINGS = tomllib.loads(Path(SETTINGS_DIR, "settings.toml").read_text())
ROOT = Path(SETTINGS["production"]["data_root"])
SESSION = next(ROOT.glob("sessions/*/session.json"))
BEFORE = sorted(p.name for p in ROOT.iterdir())


def refused(call, *args, **kwargs):
    with pytest.raises(ProtectedRootError) as error:
        call(*args, **kwargs)
    return str(error.value)


def test_rmtree_of_the_root_the_settings_name():
    assert ROOT == PRODUCTION
    message = refused(shutil.rmtree, ROOT)
    assert (
        f"app: refused to delete the tree {ROOT}: it lies in production's data root {ROOT} "
        "(held by pid "
    ) in message
    assert (
        "which this test run protects. A test's files belong in its sandbox: write to "
        "`tmp_path`, or open a root of the run's own with the `app_store` fixture"
    ) in message
    assert refused(shutil.rmtree, ROOT.parent).startswith(  # and a directory that holds it
        f"app: refused to delete the tree {ROOT.parent}: it holds production's data root {ROOT}"
    )


def test_files_rewritten_removed_and_moved(tmp_path, monkeypatch):
    assert "refused to write" in refused(SESSION.write_text, "{}")
    assert "refused to write" in refused(os.open, SESSION, os.O_WRONLY | os.O_TRUNC)
    assert "refused to delete" in refused(SESSION.unlink)
    assert "refused to move" in refused(os.rename, ROOT / "sessions", tmp_path / "gone")
    assert "refused to truncate" in refused(os.truncate, SESSION, 0)
    assert "refused to open a database at" in refused(sqlite3.connect, ROOT / "x.db")
    assert "refused to link" in refused(os.link, SESSION, tmp_path / "alias")
    # Through a link of the test's own, and from the root as the working directory.
    (tmp_path / "link").symlink_to(ROOT)
    assert "refused to delete the tree" in refused(shutil.rmtree, tmp_path / "link" / "sessions")
    monkeypatch.chdir(ROOT.parent)
    relative = f"{ROOT.name}/audit.jsonl"
    assert f"refused to write {relative} (that is, {ROOT}/audit.jsonl): it lies" in refused(
        open, relative, "a"
    )
    # Red team 75a: '..' after a link with a trailing slash, `os.open` relative to a
    # descriptor of the root, a SQLite URI, and filelock called by the test itself.
    (tmp_path / "into").symlink_to(ROOT / "sessions")
    assert "refused to move" in refused(os.rename, f"{tmp_path}/into/../sessions/", tmp_path / "x")
    fd = os.open(ROOT, os.O_RDONLY)
    assert f"refused to write planted (that is, {ROOT}/planted)" in refused(
        os.open, "planted", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd
    )
    os.close(fd)
    assert f"x.db?mode=rwc' (that is, {ROOT}/x.db): it lies" in refused(
        lambda: sqlite3.connect(f"file:{ROOT}/x.db?mode=rwc", uri=True)
    )
    assert "refused to make the directory" in refused(FileLock(ROOT / "new" / "x.lock").acquire)
    # Red team 76: the app's own helpers, given a path of the test's choosing, directly or
    # through a link in the sandbox, are checked as the test's own calls.
    from app import dataroot
    from app.testing import planted

    audit = ROOT / "audit.jsonl"
    assert f"refused to delete {audit}.app-restoring: it lies in production's" in refused(
        planted._write_back, audit, b"", None
    )
    assert "refused to write" in refused(dataroot.write_new_file, tmp_path / "link" / "x", b"")
    assert "refused to make the directory" in refused(dataroot._write_stamp, ROOT, "testing")
    # ... and a Unix socket bound at a path in the root, which its bind creates.
    unix = socket.socket(socket.AF_UNIX)
    assert "refused to make a socket at" in refused(unix.bind, str(ROOT / "sessions" / "s"))
    unix.close()
    assert sorted(p.name for p in ROOT.iterdir()) == BEFORE
    # Reading stays allowed.
    assert SESSION.read_bytes()


def test_the_check_switched_off():
    from app.testing import python_writes

    python_writes._Hook.shields = ()


def test_the_checks_function_replaced():
    from app.testing import python_writes

    python_writes._check = lambda *args, **kwargs: None  # every later call unchecked


def test_the_refusal_caught_and_ignored():
    try:
        shutil.rmtree(ROOT / "sessions")
    except OSError:
        pass
"""

# (7c) The incident's shape by another program (session 76): a test's child that runs
# `rm -rf` on production's sessions, a shell that writes into the root, both with a
# hand-built environment (nothing of the run's in it), SQLite's `ATTACH` (C code, no audit
# event of its path) in a child, and a test that remounts the root's seal read-write. The
# kernel refuses each write (the root is read-only in the run's mount namespace,
# app.testing.sealed); the remount is found after the test, which fails, and sealed again.
CHILD_PROGRAM_TESTS = """
import subprocess
import sys

from hostile_helpers import PRODUCTION

BARE = {"PATH": "/usr/bin:/bin"}


def run(*argv):
    return subprocess.run(argv, env=BARE, capture_output=True, text=True, check=False)


def test_rm_rf_of_the_sessions_in_a_child():
    done = run("rm", "-rf", str(PRODUCTION / "sessions"))
    assert done.returncode == 1
    assert "Read-only file system" in done.stderr


def test_a_shell_that_writes_moves_and_truncates():
    for command in (
        f"echo planted > {PRODUCTION}/planted",
        f": > {PRODUCTION}/audit.jsonl",
        f"mv {PRODUCTION}/sessions {PRODUCTION}/gone",
        f"touch -d 2001-01-01 {PRODUCTION}/sessions",
    ):
        done = run("sh", "-c", command)
        assert done.returncode != 0, command
        assert "Read-only file system" in done.stderr, (command, done.stderr)


def test_sqlite_attach_in_a_child_python_without_the_app():
    code = (
        "import sqlite3, sys; c = sqlite3.connect(':memory:'); "
        "c.execute('ATTACH ? AS x', (sys.argv[1] + '/x.db',)); c.execute('CREATE TABLE x.t(a)')"
    )
    done = run(sys.executable, "-I", "-c", code, str(PRODUCTION))
    assert done.returncode == 1
    assert "sqlite3.OperationalError: unable to open database" in done.stderr, done.stderr


def test_the_seal_remounted_read_write():
    done = run("mount", "-o", "remount,bind,rw", str(PRODUCTION))
    assert done.returncode == 0, done.stderr
"""


# (8) A conftest that loads the configuration at import time, like the incident's singleton.
IMPORT_TIME_CONFTEST = """
import shutil

import pytest

from app.config import load

SETTINGS = load()


@pytest.fixture(autouse=True)
def clean_sessions():
    shutil.rmtree(SETTINGS.data_root / "sessions", ignore_errors=True)
    (SETTINGS.data_root / "sessions").mkdir(parents=True)
    yield
"""

IMPORT_TIME_TESTS = """
from conftest import SETTINGS
from hostile_helpers import PRODUCTION


def test_the_import_time_settings_are_the_sandboxed_testing_ones():
    assert SETTINGS.profile == "testing"
    assert SETTINGS.data_root.is_relative_to(SETTINGS.sandbox)
    assert not SETTINGS.data_root.is_relative_to(PRODUCTION)
"""

IMPORT_TIME_PRODUCTION_CONFTEST = """
import shutil

from app.config import load

shutil.rmtree(load("production").data_root / "sessions")
"""

# (10) The dynaconf documentation's pattern: the conftest forces the testing environment.
FORCE_TESTING_CONFTEST = """
import os
import shutil

import pytest

from app.config import load

os.environ["ENV_FOR_DYNACONF"] = "testing"


@pytest.fixture(autouse=True)
def clean_sessions():
    sessions = load().data_root / "sessions"
    shutil.rmtree(sessions, ignore_errors=True)
    sessions.mkdir(parents=True, exist_ok=True)
    yield
"""

NOTHING_TESTS = """
def test_something():
    pass
"""


# --- issue 8: the guarantee without props ------------------------------------------------

# (11) The environment wiped inside the test process, then maintenance in-process.
WIPED_ENV_TESTS = """
import atexit
import os
import subprocess
import sys
import time
from unittest import mock

from click.testing import CliRunner

from app import sandbox
from app.cli import cli
from hostile_helpers import PRODUCTION, PRODUCTION_SHELL, SETTINGS_DIR, TOKEN

REFUSED = (
    "loading profile 'production'; tests run on the 'testing' profile",
    "loading profile 'production' while pytest runs without the app's sandbox",
    "from environment APP_DATA_ROOT, which lies outside the test sandbox",
    "from environment APP_DATABASE_URL: under pytest, profile 'production' uses this run's",
)


def refused(output):
    return any(reason in output for reason in REFUSED)


def purge():
    return CliRunner().invoke(cli, ["data", "purge", "--yes-i-mean-it"])


def test_patch_dict_clear_then_purge_production():
    wiped = {
        "ENV_FOR_DYNACONF": "production",
        "APP_API_TOKEN": TOKEN,
        "APP_SETTINGS_DIR": SETTINGS_DIR,
    }
    with mock.patch.dict(os.environ, wiped, clear=True):
        result = purge()
    assert result.exit_code == 78, result.output
    assert refused(result.output), result.output


def test_a_cleared_environment_with_a_forged_opt_in_and_the_production_root():
    forged = {
        **PRODUCTION_SHELL,
        "PYTEST_APP_ALLOW_PROFILES": "production",
        "PYTEST_APP_SANDBOX": "/",
    }
    with mock.patch.dict(os.environ, forged, clear=True):
        result = purge()
    assert result.exit_code == 78, result.output
    assert refused(result.output), result.output


def test_a_forked_child_that_clears_the_environment():
    pid = os.fork()
    if pid == 0:  # the child: no exec, so it keeps the parent's memory, and so its mark
        os.environ.clear()
        os.environ.update(PRODUCTION_SHELL)
        result = purge()
        os._exit(0 if result.exit_code == 78 and refused(result.output) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_daemon_double_forked_from_the_test_process_itself(tmp_path):
    # No exec between: the daemon has pytest's command line, and pytest's run is its
    # ancestor (the subreaper) once its parent is gone. It is the run, not a bare pytest.
    out = tmp_path / "daemon.out"
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork():
            os._exit(0)
        done = subprocess.run(
            [sys.executable, "-m", "app", "--profile", "production", "data", "purge",
             "--yes-i-mean-it"],
            env=PRODUCTION_SHELL, capture_output=True, text=True,
        )
        (tmp_path / "daemon.part").write_text(f"{done.returncode} {done.stderr}")
        os.rename(tmp_path / "daemon.part", out)
        os._exit(0)
    os.waitpid(pid, 0)
    for _ in range(1200):  # a safety bound while the daemon runs, not a time assertion
        if out.exists():
            break
        time.sleep(0.05)
    code, _, stderr = out.read_text().partition(" ")
    assert code == "78", stderr
    assert refused(stderr), stderr
    if sandbox.marked():  # the plugin runs: refused by the run, not as a bare pytest
        assert "without the app's sandbox" not in stderr, stderr


def test_an_atexit_clean_up_after_pytest_is_gone():
    def clean_up():
        os.environ.clear()
        os.environ.update(PRODUCTION_SHELL)
        result = purge()
        verdict = "refused" if refused(result.output) else "NOT REFUSED"
        shown = f"ATEXIT exit={result.exit_code} {verdict}: {result.output.strip()}"
        print(shown, file=sys.__stdout__)

    atexit.register(clean_up)
"""

# (12) A child started with a hand-built environment, at any depth.
HAND_BUILT_CHILD_TESTS = """
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostile_helpers import PRODUCTION, SETTINGS_DIR, TOKEN, app

TREE = "belongs to the test run through the process tree (an ancestor process, pytest pid"
BARE_TREE = "runs pytest without the app's plugin"
# A daemon re-parented to an outer run (its subreaper) as a test of that run ends gets the
# run's entry then (red team 41's hand-over after each test).
HANDED = "left running by a test of the run of pytest pid"
HAND_BUILT = {
    "PATH": os.environ["PATH"],
    "PYTHONPATH": os.pathsep.join(sys.path),
    "APP_SETTINGS_DIR": SETTINGS_DIR,
    "APP_API_TOKEN": "t" * 32,
}
PURGES = [
    ["data", "purge", "--yes-i-mean-it"],
    ["--profile", "production", "data", "purge", "--yes-i-mean-it"],
    ["--profile", "testing", "data", "purge", "--yes-i-mean-it"],
]


def refused(done):
    assert done.returncode in (75, 78), done.stderr
    reasons = (TREE, BARE_TREE, "is held by")
    assert any(reason in done.stderr for reason in reasons), done.stderr


@pytest.mark.parametrize("args", PURGES, ids=["development", "production", "testing"])
def test_a_child_with_a_hand_built_environment(args):
    done = app(*args, env=HAND_BUILT)
    if args[1:2] == ["testing"]:
        # The testing profile lands on the run's own sandboxed root, which the run holds.
        assert done.returncode in (0, 75, 78), done.stderr
    else:
        refused(done)


def test_the_production_root_in_a_hand_built_environment():
    env = {
        **HAND_BUILT,
        "ENV_FOR_DYNACONF": "production",
        "APP_DATA_ROOT": str(PRODUCTION),
        "APP_API_TOKEN": TOKEN,
    }
    refused(app("data", "purge", "--yes-i-mean-it", env=env))


def test_a_grandchild_through_a_shell_with_env_i():
    command = " ".join(
        [
            "env -i",
            *(f"{name}={value}" for name, value in HAND_BUILT.items()),
            f"APP_API_TOKEN={TOKEN}",
            sys.executable,
            "-m app --profile production data purge --yes-i-mean-it",
        ]
    )
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, check=False, timeout=120
    )
    refused(done)


def test_a_daemon_that_detaches_from_its_parent(tmp_path):
    out = tmp_path / "daemon.out"
    daemon = Path(__file__).with_name("daemon.py")
    subprocess.run([sys.executable, str(daemon), str(out)], env=HAND_BUILT, check=True, timeout=120)
    for _ in range(1200):  # a safety bound while the daemon runs, not a time assertion
        if out.exists():
            break
        time.sleep(0.05)
    code, _, stderr = out.read_text().partition(" ")
    assert code in ("75", "78"), stderr
    assert any(why in stderr for why in (TREE, BARE_TREE, HANDED, "is held by")), stderr
"""

# Run as a script by the test above: double-forks away from its parent, then purges.
DAEMON = """
import os
import subprocess
import sys

out = sys.argv[1]
if os.fork():
    os._exit(0)
os.setsid()
args = ["--profile", "production", "data", "purge", "--yes-i-mean-it"]
done = subprocess.run(
    [sys.executable, "-m", "app", *args], env=dict(os.environ), capture_output=True, text=True
)
with open(out + ".part", "w") as handle:
    handle.write(f"{done.returncode} {done.stderr}")
os.rename(out + ".part", out)
"""

# (13) Aliases a path comparison does not see.
ALIAS_TESTS = """
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from app.config import load
from app.dataroot import open_root
from app.errors import (
    DataRootChangedError,
    DataRootInUseError,
    LockFileAliasedError,
    SandboxViolationError,
)
from app.store import Store
from hostile_helpers import PRODUCTION


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("APP_DATA_ROOT", str(tmp_path / "mine"))
    return load()


def test_a_bind_mount_of_the_production_root_inside_the_sandbox(config, tmp_path):
    mount = tmp_path / "mounted"
    mount.mkdir()
    bind = ["mount", "--bind", str(PRODUCTION), str(mount)]
    done = subprocess.run(bind, capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot bind-mount here: {done.stderr.strip()}")
    try:
        for path in (mount, mount / "sessions"):
            with pytest.raises(SandboxViolationError) as refused:
                open_root(dataclasses.replace(config, data_root=path))
            assert "is another path to the data root of profile 'production'" in str(refused.value)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_symbolic_link_to_the_production_root(config, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(PRODUCTION, target_is_directory=True)
    with pytest.raises(SandboxViolationError) as refused:
        open_root(dataclasses.replace(config, data_root=link))
    assert "lies outside the test sandbox" in str(refused.value)


def ln(target, link):
    # A hard link made by another program, which Python's audit events do not see.
    subprocess.run(["ln", str(target), str(link)], check=True)


def test_a_hard_linked_audit_log_is_not_written_through(config):
    before = (PRODUCTION / "audit.jsonl").read_bytes()
    with open_root(config) as root:
        store = Store(root)
        session = store.create_session("doomed")
        (root.path / "audit.jsonl").unlink(missing_ok=True)
        # By `ln`, not os.link: the run refuses the latter in its own processes (session 75),
        # and this checks that the app's own layer holds without that.
        ln(PRODUCTION / "audit.jsonl", root.path / "audit.jsonl")
        store.delete_session(session["id"])
        assert (root.path / "audit.jsonl").stat().st_nlink == 1
        assert b"trash-session" in (root.path / "audit.jsonl").read_bytes()
    assert (PRODUCTION / "audit.jsonl").read_bytes() == before


def test_a_hard_linked_lock_file_is_refused(config):
    config.data_root.mkdir(parents=True)
    ln(PRODUCTION / ".server.lock", config.data_root / ".server.lock")  # as above
    try:
        with pytest.raises((LockFileAliasedError, DataRootInUseError)) as refused:
            open_root(config)
        assert "has 2 hard links" in str(refused.value) or "is held by" in str(refused.value)
    finally:
        (config.data_root / ".server.lock").unlink()


def test_sessions_swapped_for_a_link_after_the_root_was_opened(config):
    with open_root(config) as root:
        store = Store(root)
        store.create_session("mine")
        sessions = root.path / "sessions"
        sessions.rename(root.path / "sessions.old")
        sessions.symlink_to(PRODUCTION / "sessions", target_is_directory=True)
        for destroy in (store.purge, store.empty_trash):
            with pytest.raises(DataRootChangedError) as refused:
                destroy()
            assert "sessions/ was replaced or moved since it was opened" in str(refused.value)


def test_a_data_root_whose_path_is_reassigned(config):
    with open_root(config) as root:
        with pytest.raises(AttributeError):
            root.path = PRODUCTION
        root._path = PRODUCTION
        with pytest.raises(DataRootChangedError) as refused:
            Store(root).purge()
        assert "is not the file it locked" in str(refused.value)
"""

# (13b) A lock and a data root made by hand, next to a stopped server: no lock refuses them.
HAND_MADE_LOCK_TESTS = """
import dataclasses

import pytest

from app.config import load
from app.dataroot import DataRoot
from app.errors import SandboxViolationError
from app.lock import RootLock
from app.store import Store
from hostile_helpers import PRODUCTION


def test_a_lock_taken_by_hand_on_the_production_root():
    with pytest.raises(SandboxViolationError) as refused:
        RootLock(PRODUCTION, kind="maintenance", profile="production").acquire("purge")
    assert f"lock data root {PRODUCTION}, which lies outside the test sandbox" in str(
        refused.value
    )


def test_a_data_root_made_by_hand_around_a_lock_made_by_hand(tmp_path):
    forged = dataclasses.replace(load(), profile="production", data_root=PRODUCTION)
    mine = tmp_path / "mine"
    mine.mkdir()
    with RootLock(mine, kind="maintenance", profile="testing").acquire("forge") as lock:
        with pytest.raises(SandboxViolationError) as refused:
            Store(DataRoot(forged, kind="maintenance", lock=lock, stamp=None)).purge()
    assert "lies outside the test sandbox" in str(refused.value)
"""

# (14) The guard's own switches, set by hand.
SWITCHES_TESTS = """
import os

import pytest

from app.config import load
from app.errors import ConfigError
from hostile_helpers import PRODUCTION, PRODUCTION_SHELL, TOKEN, app


def test_widening_the_marker_and_opting_in_by_hand(monkeypatch):
    monkeypatch.setenv("PYTEST_APP_SANDBOX", "/")
    monkeypatch.setenv("PYTEST_APP_ALLOW_PROFILES", "production")
    monkeypatch.setenv("APP_DATA_ROOT", str(PRODUCTION))
    monkeypatch.setenv("APP_API_TOKEN", TOKEN)
    with pytest.raises(ConfigError) as refused:
        load("production")
    assert "which lies outside the test sandbox" in str(refused.value)
    monkeypatch.delenv("APP_DATA_ROOT")
    config = load("production")
    assert config.data_root == config.sandbox / "data" / "production"


# Loaded at conftest import: between the plugin's first hook and pytest_configure, where a
# forged worker would still have its inherited sandbox.
NESTED_CONFTEST = '''
import os

from app.config import load

os.environ["PYTEST_APP_ALLOW_PROFILES"] = "production"
os.environ["APP_DATA_ROOT"] = os.environ["HOSTILE_PRODUCTION_ROOT"]
load("production")
'''


def test_a_pytest_started_as_a_forged_xdist_worker_with_a_sandbox_of_slash(tmp_path):
    import subprocess
    import sys

    (tmp_path / "conftest.py").write_text(NESTED_CONFTEST)
    (tmp_path / "test_nested.py").write_text("def test_nothing():\\n    pass\\n")
    env = {
        **os.environ,
        "PYTEST_XDIST_WORKER": "gw0",
        "PYTEST_APP_SANDBOX_OWNER": str(os.getpid()),
        "PYTEST_APP_SANDBOX": "/",
        "APP_API_TOKEN": TOKEN,
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "which lies outside the test sandbox" in done.stdout + done.stderr


def test_the_same_switches_in_a_child():
    env = {
        "PATH": os.environ["PATH"],
        **PRODUCTION_SHELL,
        "PYTEST_APP_SANDBOX": "/",
        "PYTEST_APP_ALLOW_PROFILES": "production",
    }
    done = app("data", "purge", "--yes-i-mean-it", env=env)
    assert done.returncode == 78, done.stderr
    assert "which lies outside the test sandbox" in done.stderr
"""


# (16) Cases nobody had named: the profile's spelling, dynaconf's own switches, reloaded
# modules, multiprocessing's start methods, exec, pytest.main in-process, cwd tricks and a
# link planted inside a sandboxed session. Each inner test passes only if it was refused.
UNNAMED_TESTS = """
import dataclasses
import importlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.config import load
from app.errors import AppError, SandboxViolationError
from hostile_helpers import PRODUCTION, PRODUCTION_SHELL, SETTINGS_DIR, TOKEN, app

PURGE = ["data", "purge", "--yes-i-mean-it"]
REFUSALS = (
    "loading profile 'production'; tests run on the 'testing' profile",
    "which lies outside the test sandbox",
    "variables that change how dynaconf loads",
    "is held by pid",
    "without the app's sandbox",
)


def refused(code, output):
    assert code in (75, 78), output
    assert any(reason in output for reason in REFUSALS), output


SPELLINGS = ["Production", " production", "production\\n", "PRODUCTION\\t"]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_the_production_profile_spelled_otherwise_in_a_child(spelling):
    done = app(*PURGE, env={**os.environ, **PRODUCTION_SHELL, "ENV_FOR_DYNACONF": spelling})
    refused(done.returncode, done.stderr)


@pytest.mark.parametrize("spelling", ["Production", " production", "production\\n"])
def test_the_production_profile_spelled_otherwise_in_process(spelling, monkeypatch):
    monkeypatch.setenv("ENV_FOR_DYNACONF", spelling)
    monkeypatch.setenv("APP_API_TOKEN", TOKEN)
    with pytest.raises(SandboxViolationError):
        load()


@pytest.mark.parametrize(
    "name", ["default", "DEFAULT", "global", "dynaconf", "testing,production"]
)
def test_dynaconf_s_special_environment_names_are_unknown_profiles(name, monkeypatch):
    from app.errors import UnknownProfileError

    monkeypatch.setenv("ENV_FOR_DYNACONF", name)
    with pytest.raises(UnknownProfileError):
        load()


THREAD_RESULT = {}
TEST_OVER = threading.Event()


@pytest.mark.app_profile("production")
def test_a_thread_started_by_an_opted_in_test(monkeypatch):
    def later():
        TEST_OVER.wait()
        try:
            THREAD_RESULT["config"] = load("production", serving=False)
        except Exception as error:  # whatever it is, the next test shows it
            THREAD_RESULT["refused"] = repr(error)

    threading.Thread(target=later, daemon=True).start()
    config = load("production", serving=False)
    assert config.data_root.is_relative_to(config.sandbox)


def test_outlives_its_test_and_loses_the_opt_in():
    TEST_OVER.set()
    while not THREAD_RESULT:  # a safety-free wait: the thread always writes a result
        threading.Event().wait(0.01)
    assert "mark the test @pytest.mark.app_profile('production')" in THREAD_RESULT.get(
        "refused", ""
    ), THREAD_RESULT


def dynaconf_switches(tmp_path):
    evil = tmp_path / "evil"
    evil.mkdir()
    toml = f'[testing]\\ndata_root = "{PRODUCTION}"\\n[production]\\ndata_root = "{PRODUCTION}"\\n'
    (evil / "settings.toml").write_text(toml)
    (evil / "evil.toml").write_text(toml)
    return {
        "SETTINGS_FILE_FOR_DYNACONF": str(evil / "evil.toml"),
        "SETTINGS_FILES_FOR_DYNACONF": str(evil / "evil.toml"),
        "INCLUDES_FOR_DYNACONF": str(evil / "evil.toml"),
        "ROOT_PATH_FOR_DYNACONF": str(evil),
        "ENVVAR_PREFIX_FOR_DYNACONF": "HOSTILE",
        "DYNACONF_DATA_ROOT": str(PRODUCTION),
        "DYNACONF_TESTING__DATA_ROOT": str(PRODUCTION),
        "APP_TESTING__DATA_ROOT": str(PRODUCTION),
        "HOSTILE_DATA_ROOT": str(PRODUCTION),
    }


def test_dynaconf_s_own_switches_in_a_child(tmp_path):
    # The testing profile: had a switch worked, its root would be production's. Each child
    # is refused for the switch (78), or lands on the run's own root, which the run holds.
    root = load().data_root
    switches = dynaconf_switches(tmp_path)
    # Side by side: a child refused by the run's lock first retries it for a second.
    with ThreadPoolExecutor(len(switches)) as pool:
        children = {
            name: pool.submit(app, *PURGE, env={**os.environ, name: value})
            for name, value in switches.items()
        }
    for name, child in children.items():
        done = child.result()
        if done.returncode == 75:
            assert f"data root {root} is held by pid {os.getpid()}" in done.stderr, name
        else:
            assert done.returncode == 78, (name, done.stdout, done.stderr)
            assert name in done.stderr, (name, done.stderr)


def test_dynaconf_s_own_switches_in_process(tmp_path, monkeypatch):
    for name, value in dynaconf_switches(tmp_path).items():
        with monkeypatch.context() as patched:
            patched.setenv(name, value)
            try:
                config = load()
            except AppError:
                continue
            assert config.data_root.is_relative_to(config.sandbox), name


def test_reloading_the_app_s_modules_keeps_the_run(monkeypatch):
    import app.config
    import app.dataroot
    import app.lock
    import app.sandbox

    for module in (app.sandbox, app.lock, app.config, app.dataroot):
        importlib.reload(module)
    monkeypatch.delenv("PYTEST_APP_SANDBOX")
    for name, value in PRODUCTION_SHELL.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SandboxViolationError):
        app.config.load("production")
    result = CliRunner().invoke(cli, PURGE)
    refused(result.exit_code, result.output)
    forged = dataclasses.replace(app.config.load("testing", environ={}), data_root=PRODUCTION)
    with pytest.raises(SandboxViolationError):
        app.dataroot.open_root(forged)


def purge_in_child(queue):
    os.environ.clear()
    os.environ.update(PRODUCTION_SHELL)
    result = CliRunner().invoke(cli, PURGE)
    queue.put((result.exit_code, result.output))


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_multiprocessing_children_with_a_cleared_environment(method):
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    child = context.Process(target=purge_in_child, args=(queue,))
    child.start()
    code, output = queue.get(timeout=120)
    child.join()
    refused(code, output)


def child_refused(pid, read, write):
    # The child `pid`, its stderr on the pipe (`read`, `write`), was refused.
    os.close(write)
    with os.fdopen(read) as stderr:
        output = stderr.read()
    _, status = os.waitpid(pid, 0)
    refused(os.waitstatus_to_exitcode(status), output)


def test_a_forked_child_that_execs_the_app_with_an_empty_environment():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(write, 2)
        os.execve(sys.executable, [sys.executable, "-m", "app", *PURGE], PRODUCTION_SHELL)
    child_refused(pid, read, write)


def test_posix_spawn_of_the_app_with_production_s_environment_only():
    # posix_spawn: no fork in Python, so no at-fork hook of the app's runs in between.
    read, write = os.pipe()
    pid = os.posix_spawn(
        sys.executable,
        [sys.executable, "-m", "app", *PURGE],
        PRODUCTION_SHELL,
        file_actions=[(os.POSIX_SPAWN_DUP2, write, 2)],
    )
    child_refused(pid, read, write)


def test_a_child_on_a_new_terminal_and_session_with_production_s_environment_only():
    import pty

    pid, terminal = pty.fork()  # setsid() and a new controlling terminal, as `pty.spawn`
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "app", *PURGE], PRODUCTION_SHELL)
    chunks = []
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(terminal)
    _, status = os.waitpid(pid, 0)
    refused(os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace"))


def test_pytest_main_in_process_on_production_s_root(tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_inner.py").write_text(
        "from click.testing import CliRunner\\n"
        "from app.cli import cli\\n"
        "def test_purge(monkeypatch):\\n"
        f"    monkeypatch.setenv('APP_DATA_ROOT', {str(PRODUCTION)!r})\\n"
        "    result = CliRunner().invoke(cli, ['data', 'purge', '--yes-i-mean-it'])\\n"
        "    assert result.exit_code in (75, 78), result.output\\n"
    )
    code = pytest.main([str(inner), "-p", "no:randomly", "-p", "no:cacheprovider",
                        f"--basetemp={tmp_path / 'bt'}", f"--rootdir={inner}", "-q"])
    assert code == 0
    for basetemp in (PRODUCTION / "sessions", PRODUCTION / ".trash"):
        code = pytest.main([str(inner), "-p", "no:cacheprovider", f"--basetemp={basetemp}", "-q"])
        assert code == 4  # usage error: refused before pytest empties it


def test_a_test_inside_production_s_root_with_relative_paths(monkeypatch):
    monkeypatch.chdir(PRODUCTION)
    for spelling in (".", "sessions/..", "/proc/self/cwd", f"/proc/{os.getpid()}/cwd"):
        monkeypatch.setenv("APP_DATA_ROOT", spelling)
        try:
            config = load()
        except AppError:
            pass
        else:
            assert config.data_root.is_relative_to(config.sandbox), spelling
        forged = dataclasses.replace(load("testing", environ={}), data_root=Path(spelling))
        from app.dataroot import open_root

        with pytest.raises(SandboxViolationError):
            open_root(forged)


def test_a_link_planted_in_a_session_s_directory(app_config):
    # records/ and blobs/ of a sandboxed session made links to a production session's: a
    # delete would unlink production's record and move its bytes into this run's trash.
    from app.errors import DataRootChangedError
    from app.storage import open_storage

    sessions = sorted((PRODUCTION / "sessions").iterdir())
    victim = next(p for p in sessions if (p / "records").is_dir())
    name = sorted(p.name for p in (victim / "records").iterdir())[0]
    with open_storage(app_config, writer=True, kind="tests", wanted="t") as store:
        sid = store.create_session("mine", {})["id"]
        store.put_file(sid, name, b"mine")
        store.delete_file(sid, name)  # a trash entry to restore from, below
        mine = store.sessions_dir / sid
        for part in ("records", "blobs"):
            (mine / part).rename(mine / (part + ".away"))
            (mine / part).symlink_to(victim / part, target_is_directory=True)
        for action in (
            lambda: store.delete_file(sid, name),
            lambda: store.put_file(sid, name, b"replaced", replace=True),
            lambda: store.put_file(sid, "new.txt", b"new"),
            lambda: store.restore(sid, file=name),
        ):
            with pytest.raises(DataRootChangedError) as refused:
                action()
            assert f"{mine / 'records'} is a symbolic link or another non-directory" in str(
                refused.value
            )
        # A repair that finds a replace stopped after its commit moves the old blob named
        # in the trash entry's manifest into the entry: never through a linked blobs/.
        (mine / "records").unlink()
        (mine / "records.away").rename(mine / "records")
        blob = sorted(p.name for p in (victim / "blobs").iterdir())[0]
        store.trash.new_entry(sid, "file", "x.bin", "replace", blob=blob)
        store.check(repair=True)
        # A session in the layout before records/ and blobs/, whose files/ is a link to
        # production's blobs: the repair's migration would move them into this root.
        old = store.create_session("legacy", {})["id"]
        (store.sessions_dir / old / "files").symlink_to(victim / "blobs")
        meta = json.loads((store.sessions_dir / old / "session.json").read_text())
        meta["files"] = [{"name": blob, "size": 1, "sha256": None, "uploaded_at": None}]
        (store.sessions_dir / old / "session.json").write_text(json.dumps(meta))
        report = store.check(repair=True)
        links = sorted([f"sessions/{sid}/blobs", f"sessions/{old}/files"])
        assert sorted(f.target for f in report.unresolved) == links, report
        for finding in report.unresolved:
            assert "a symbolic link where the session keeps its files" in finding.detail
        store.delete_session(sid)  # moves the links themselves, never what they lead to
        store.delete_session(old)
        store.empty_trash()
"""


@dataclass(frozen=True)
class Suite:
    """One hostile suite and what the outer test expects of its run.

    ``stdout`` and ``stderr`` are fnmatch patterns, formatted with ``root`` (the production
    data root), ``pid`` and ``port`` (the production server's).
    """

    files: dict[str, str]
    layer: str
    args: tuple[str, ...] = ()
    outcomes: dict[str, int] = field(default_factory=dict)
    ret: int = 0
    stdout: tuple[str, ...] = ()
    stderr: tuple[str, ...] = ()
    #: "production": the shell exported production's settings; "unaware": it exported
    #: APP_DATA_ROOT but its settings files put production elsewhere (the root is known only
    #: to the service's environment); "clean": it exported nothing about production at all.
    shell: str = "production"
    #: More variables for the inner run's shell, formatted like ``stdout``.
    env: dict[str, str] = field(default_factory=dict)
    #: Symbolic links made before the run (link: target, formatted like ``stdout``, with
    #: ``others``: the other profiles' roots' directory), removed after it.
    links: dict[str, str] = field(default_factory=dict)
    #: False: run without pytester's --basetemp, so that pytest picks its default one.
    basetemp: bool = True
    #: True: the suite needs the run's roots sealed read-only (`app.testing.sealed`), which
    #: takes CAP_SYS_ADMIN: skipped where the run has it not.
    sealed_only: bool = False


HEADER = (
    "app: profile=testing (forced; the shell asked for 'production'), data_root=*/data/testing *",
    "*neutralised: APP_API_TOKEN, APP_DATA_ROOT, ENV_FOR_DYNACONF=production",
    (
        "app: live server on profile 'production' (pid {pid}, kind server, profile production, "
        "host *, port {port}, since *) at {root}: tests will not touch it"
    ),
)
NO_SANDBOX = "*loading profile 'production' while pytest runs without the app's sandbox*"
BARE = "pytest is imported in this process, and the app's plugin did not start in it"
ENV_ROOT_WITHOUT_SANDBOX = (
    "*SandboxViolationError: refused under pytest: data root {root} from environment "
    f"APP_DATA_ROOT while pytest runs without the app's sandbox ({BARE}). Run the tests with "
    "the app's pytest plugin, which neutralises the shell's APP_DATA_ROOT (the plugin was "
    "disabled (`-p no:app`)*"
)

WIPED = {"test_wiped.py": WIPED_ENV_TESTS}
ATEXIT_REFUSED = ("ATEXIT exit=78 refused: *",)
CHILDREN = {"test_children.py": HAND_BUILT_CHILD_TESTS, "daemon.py": DAEMON}
NO_AUTOLOAD = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

#: Issue 8's classes: each runs next to a live production server and next to a stopped one.
SUITES_WITHOUT_PROPS: dict[str, Suite] = {
    "the_environment_wiped_inside_the_test_process": Suite(
        WIPED, "sandbox: the run is marked on sys", outcomes={"passed": 5}, stdout=ATEXIT_REFUSED
    ),
    "the_environment_wiped_under_xdist": Suite(
        WIPED, "sandbox: every worker is marked on sys", args=("-n", "2"), outcomes={"passed": 5}
    ),
    "the_environment_wiped_with_the_plugin_disabled": Suite(
        WIPED,
        "config: pytest is imported in this process without the plugin",
        args=("-p", "no:app"),
        outcomes={"passed": 5},
        stdout=ATEXIT_REFUSED,
    ),
    "the_environment_wiped_without_plugin_autoload": Suite(
        WIPED,
        "config: pytest is imported in this process without the plugin",
        outcomes={"passed": 5},
        stdout=ATEXIT_REFUSED,
        env=NO_AUTOLOAD,
    ),
    "children_with_hand_built_environments": Suite(
        CHILDREN,
        "sandbox: the process tree (the run is the daemon's subreaper)",
        outcomes={"passed": 6},
    ),
    "children_with_hand_built_environments_under_xdist": Suite(
        CHILDREN,
        "sandbox: the process tree, from a worker",
        args=("-n", "2"),
        outcomes={"passed": 6},
    ),
    "children_with_hand_built_environments_with_the_plugin_disabled": Suite(
        CHILDREN,
        "config: an ancestor runs pytest without the plugin",
        args=("-p", "no:app"),
        outcomes={"passed": 6},
    ),
    "children_with_hand_built_environments_without_plugin_autoload": Suite(
        CHILDREN,
        "config: an ancestor runs pytest without the plugin",
        outcomes={"passed": 6},
        env=NO_AUTOLOAD,
    ),
    "aliases_of_the_production_root": Suite(
        {"test_aliases.py": ALIAS_TESTS},
        "sandbox: identities of protected roots; dataroot: identities of what was opened",
    ),
    "a_lock_and_a_data_root_made_by_hand": Suite(
        {"test_hand_made_lock.py": HAND_MADE_LOCK_TESTS},
        "sandbox: RootLock and DataRoot check the run's sandbox themselves",
        outcomes={"passed": 2},
    ),
    "the_guards_own_switches_set_by_hand": Suite(
        {"test_switches.py": SWITCHES_TESTS},
        "sandbox: the variable may narrow the run's sandbox, never widen it",
        outcomes={"passed": 3},
    ),
    "a_tmpdir_inside_the_production_root": Suite(
        {"test_nothing.py": NOTHING_TESTS},
        "plugin: the default basetemp's directory is checked against data roots",
        ret=4,
        stderr=(
            (
                "ERROR: app: refusing to run: pytest would create (and clean up) its temporary "
                "directories in {root}/pytest-of-*, which overlaps the data root of profile "
                "'production' ({root}), because TMPDIR is {root}*"
            ),
        ),
        env={"TMPDIR": "{root}"},
        basetemp=False,
    ),
    "a_basetemp_through_a_link_and_dotdot": Suite(
        {"test_nothing.py": NOTHING_TESTS},
        "plugin: --basetemp is checked as pytest spells it (os.path.abspath)",
        args=("--basetemp={root}/../hop/..",),
        ret=4,
        stderr=(
            (
                "ERROR: app: refusing --basetemp {root}/../hop/..: pytest empties it (as *) "
                "before the run, and it overlaps the data root of profile 'production' ({root})*"
            ),
        ),
        # Resolved, the link leads somewhere harmless; pytest empties the lexical {root}/..
        links={"{root}/../hop": "{root}/../../elsewhere/deeper"},
    ),
    "cases_nobody_had_named": Suite(
        {"test_unnamed.py": UNNAMED_TESTS},
        "config, sandbox, dataroot, store: see docs/explanation/attacks/, the list of cases",
    ),
    "a_basetemp_inside_a_production_root_the_shell_does_not_know": Suite(
        {"test_nothing.py": NOTHING_TESTS},
        "plugin: a --basetemp inside a data root (stamped, or held) is refused",
        args=("--basetemp={root}/sessions",),
        ret=4,
        stderr=(
            (
                "ERROR: app: refusing --basetemp {root}/sessions: pytest empties it in "
                "{root}/sessions, which lies inside the data root {root} (*). Choose a temporary "
                "directory outside every data root"
            ),
        ),
        shell="clean",
    ),
    "a_tmpdir_inside_a_production_root_the_shell_does_not_know": Suite(
        {"test_nothing.py": NOTHING_TESTS},
        "plugin: pytest's temporary root inside a data root (stamped, or held) is refused",
        ret=4,
        stderr=(
            (
                "ERROR: app: refusing to run: pytest would create (and clean up) its temporary "
                "directories in {root}/sessions/pytest-of-*, which lies inside the data root "
                "{root} (*), because TMPDIR is {root}/sessions. Point TMPDIR outside every data "
                "root, or pass --basetemp"
            ),
        ),
        env={"TMPDIR": "{root}/sessions"},
        basetemp=False,
        shell="clean",
    ),
}

SUITES: dict[str, Suite] = {
    "the_incidents_autouse_cleanup_fixture": Suite(
        {"conftest.py": INCIDENT_CONFTEST, "test_sessions.py": INCIDENT_TESTS},
        "plugin: testing forced, APP_DATA_ROOT neutralised, root mapped into the sandbox",
        outcomes={"passed": 2},
        stdout=HEADER,
    ),
    "a_test_that_loads_production_and_deletes_its_root": Suite(
        {"test_production.py": LOAD_PRODUCTION_TESTS},
        "config: other profiles refused without app_profile; with it, mapped into the sandbox",
        outcomes={"passed": 3},
    ),
    "maintenance_commands_in_a_subprocess": Suite(
        {"test_maintenance.py": MAINTENANCE_TESTS},
        "config in the child (inherited sandbox marker); the run's own lock for its testing root",
        outcomes={"passed": 5},
    ),
    "maintenance_commands_with_a_cleared_environment": Suite(
        {"test_cleared.py": CLEARED_ENV_TESTS},
        "sandbox: the child is part of the run through the process tree (exit 78)",
        outcomes={"passed": 3},
    ),
    "a_second_copy_of_the_config_module": Suite(
        {"test_second_copy.py": SECOND_COPY_TESTS},
        "sandbox: the run is marked on sys, which every copy of the code shares",
        outcomes={"passed": 3},
    ),
    "a_test_that_exports_production_itself": Suite(
        {"test_exports.py": EXPORTS_MID_TEST_TESTS},
        "config: profile allow-list; an APP_DATA_ROOT outside the sandbox is refused",
        outcomes={"passed": 3},
    ),
    "a_hand_made_config_and_data_root": Suite(
        {"test_hand_made.py": HAND_MADE_TESTS},
        "dataroot: every open checks the sandbox; store: only a lock holder writes; lock",
        outcomes={"passed": 4},
    ),
    "plain_python_that_deletes_the_root_its_settings_name": Suite(
        {"test_literal.py": LITERAL_WRITES_TESTS},
        "sandbox: Python's audit events of every write, checked against the protected roots",
        outcomes={"passed": 5, "errors": 5},
        ret=1,
        stdout=(
            (
                "*test_the_check_switched_off took the run's check of Python's writes out of "
                "app.testing.python_writes; it was put back*"
            ),
            (
                "*test_the_checks_function_replaced took the run's check of Python's writes out "
                "of app.testing.python_writes; it was put back*"
            ),
            (
                "*test_the_refusal_caught_and_ignored made a call that the run refused, and "
                "the test went on: app: refused to delete the tree *"
            ),
        ),
    ),
    "a_child_program_that_deletes_the_root": Suite(
        {"test_child_program.py": CHILD_PROGRAM_TESTS},
        "sandbox: the protected roots read-only in the run's mount namespace (as root)",
        args=("--app-seal", "-n", "2"),  # the workers check after each test too
        outcomes={"passed": 4, "errors": 1},
        ret=1,
        stdout=(
            "app: read-only for every process of this run (a mount namespace of its own): *{root}*",
            (
                "*test_the_seal_remounted_read_write made {root} writable again for the run's "
                "processes (a remount read-write, or an unmount, of the read-only mount the run "
                "put over it); it was sealed again. Tests must not switch off the guard*"
            ),
        ),
        sealed_only=True,
    ),
    "a_test_that_removes_the_sandbox_marker": Suite(
        {"test_marker.py": MARKER_REMOVED_TESTS},
        "sandbox: the in-process marker; the plugin fails the test afterwards",
        outcomes={"passed": 1, "errors": 1},
        ret=1,
        stdout=("*test_removing_the_marker changed PYTEST_APP_SANDBOX; it was put back*",),
    ),
    "a_conftest_that_loads_at_import_time": Suite(
        {"conftest.py": IMPORT_TIME_CONFTEST, "test_import_time.py": IMPORT_TIME_TESTS},
        "plugin: its first hook runs before conftest files are imported",
        outcomes={"passed": 1},
    ),
    "a_conftest_that_loads_production_at_import_time": Suite(
        {"conftest.py": IMPORT_TIME_PRODUCTION_CONFTEST, "test_nothing.py": NOTHING_TESTS},
        "config: other profiles refused under the sandbox, even at conftest import",
        ret=4,
        stderr=(
            "ImportError while loading conftest *",
            (
                "*SandboxViolationError: refused under pytest (sandbox: *): loading profile "
                "'production'; tests run on the 'testing' profile*"
            ),
        ),
    ),
    "the_incident_under_xdist": Suite(
        {"conftest.py": INCIDENT_CONFTEST, "test_sessions.py": INCIDENT_TESTS},
        "plugin: every worker gets its own sandbox",
        args=("-n", "2"),
        outcomes={"passed": 2},
        stdout=HEADER,
    ),
    "the_incident_with_the_plugin_disabled": Suite(
        {"conftest.py": INCIDENT_CONFTEST, "test_sessions.py": INCIDENT_TESTS},
        "config: pytest imported without the plugin: other profiles refused",
        args=("-p", "no:app"),
        outcomes={"errors": 2},
        ret=1,
        stdout=(NO_SANDBOX,),
    ),
    "the_dynaconf_docs_pattern_with_the_plugin_disabled": Suite(
        {"conftest.py": FORCE_TESTING_CONFTEST, "test_nothing.py": NOTHING_TESTS},
        "config: without the sandbox, an APP_DATA_ROOT under pytest is refused (and it "
        "overlaps production's root in the settings files)",
        args=("-p", "no:app"),
        outcomes={"errors": 1},
        ret=1,
        stdout=(ENV_ROOT_WITHOUT_SANDBOX,),
    ),
    "a_basetemp_on_the_production_root": Suite(
        {"test_nothing.py": NOTHING_TESTS},
        "plugin: a --basetemp that overlaps a known data root is refused",
        args=("--basetemp={root}",),
        ret=4,
        stderr=(
            (
                "ERROR: app: refusing --basetemp {root}: pytest empties it before the run, and it "
                "overlaps the data root of profile 'production' ({root})*"
            ),
        ),
    ),
    "a_basetemp_above_the_production_root": Suite(
        {"test_nothing.py": NOTHING_TESTS},
        "plugin: a --basetemp that holds a known data root is refused",
        args=("--basetemp={root}/..",),
        ret=4,
        stderr=("ERROR: app: refusing --basetemp {root}/..: pytest empties it* before the run*",),
    ),
    "a_conftest_that_loads_at_import_time_with_the_plugin_disabled": Suite(
        {"conftest.py": IMPORT_TIME_CONFTEST, "test_nothing.py": NOTHING_TESTS},
        "config: pytest imported without the plugin (no test runs yet)",
        args=("-p", "no:app"),
        ret=4,
        stderr=(
            "ImportError while loading conftest *",
            f"*loading profile 'production' while pytest runs without the app's sandbox ({BARE})*",
        ),
    ),
    "the_dynaconf_docs_pattern_without_the_plugin_and_production_known_only_to_the_env": Suite(
        {"conftest.py": FORCE_TESTING_CONFTEST, "test_nothing.py": NOTHING_TESTS},
        "config: without the sandbox, an APP_DATA_ROOT under pytest is refused",
        args=("-p", "no:app"),
        outcomes={"errors": 1},
        ret=1,
        stdout=(ENV_ROOT_WITHOUT_SANDBOX,),
        shell="unaware",
    ),
    "a_basetemp_on_a_production_root_the_shell_does_not_know": Suite(
        {"test_nothing.py": NOTHING_TESTS},
        "plugin: a --basetemp that is itself a data root (stamped, or held) is refused",
        args=("--basetemp={root}",),
        ret=4,
        stderr=(
            (
                "ERROR: app: refusing --basetemp {root}: it is the data root {root}, held by "
                "pid {pid}, kind server, profile production*"
            ),
        ),
        shell="clean",
    ),
    "a_basetemp_above_a_production_root_the_shell_does_not_know": Suite(
        {"test_nothing.py": NOTHING_TESTS},
        "plugin: a --basetemp that holds a live data root anywhere inside is refused",
        args=("--basetemp={root}/..",),
        ret=4,
        stderr=(
            (
                "ERROR: app: refusing --basetemp {root}/..: it holds the data root {root}, held by "
                "pid {pid}, kind server*"
            ),
        ),
        shell="clean",
    ),
}


# --- the remote backend: a live production replica pair on PostgreSQL and S3 ---------------

#: Imported by every remote suite (as ``hostile_helpers``, like `HELPERS`, so that a local
#: suite that needs only what both define runs on either backend): production's database and
#: prefix (what the replicas serve), its replicas, and the shell that exported it.
#: ``HOSTILE_*`` configure nothing, so the plugin leaves them alone; the ``APP_*`` copies are
#: what the plugin neutralises.
REMOTE_HELPERS = (
    '''
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from app.config import load
from app.remote.pg import database_addresses, same_database
from app.sandbox import current_run

PRODUCTION_URL = PRODUCTION = os.environ["HOSTILE_DATABASE_URL"]
PRODUCTION_BLOB = os.environ["HOSTILE_BLOB_URL"]
TOKEN = os.environ["HOSTILE_PRODUCTION_TOKEN"]
REPLICA_PIDS = [int(pid) for pid in os.environ["HOSTILE_REPLICA_PIDS"].split(",")]
SETTINGS_DIR = os.environ["APP_SETTINGS_DIR"]
CREDENTIALS = {
    "APP_S3_ENDPOINT_URL": os.environ["HOSTILE_S3_ENDPOINT_URL"],
    "APP_S3_ACCESS_KEY_ID": os.environ["HOSTILE_S3_ACCESS_KEY_ID"],
    "APP_S3_SECRET_ACCESS_KEY": os.environ["HOSTILE_S3_SECRET_ACCESS_KEY"],
}
# What the shell exported before the plugin neutralised it.
PRODUCTION_SHELL = {
    "ENV_FOR_DYNACONF": "production",
    "APP_DATABASE_URL": PRODUCTION_URL,
    "APP_BLOB_URL": PRODUCTION_BLOB,
    "APP_API_TOKEN": TOKEN,
    "APP_SETTINGS_DIR": SETTINGS_DIR,
    **CREDENTIALS,
}
NOT_PRODUCTION = "loading profile 'production'; tests run on the 'testing' profile"
TREE = "belongs to the test run through the process tree (an ancestor process, pytest pid"
ENV_URL = (
    "from environment APP_DATABASE_URL: under pytest, profile '{}' uses this run's scratch "
    "database (suffix {}), never a configured one"
)
NOT_SCRATCH = "which is not a scratch database of this test run (suffix {};"


def scratch():
    return current_run().scratch


def on_scratch(config):
    """The config's database is this run's scratch one, and not production's."""
    name = database_addresses(config.database_url)[0].dbname
    return name.endswith(scratch()) and not same_database(config.database_url, PRODUCTION_URL)


def forged(config=None):
    """A Config made by hand that names production's database and prefix."""
    return dataclasses.replace(
        config or load(), profile="production", database_url=PRODUCTION_URL,
        blob_url=PRODUCTION_BLOB,
    )
'''
    + _RUN_APP
)

# (R1) The incident's clean-up on this backend: every row of every table of the database the
# configuration names, and every object under its prefix, around every test.
REMOTE_INCIDENT_CONFTEST = """
import psycopg
import pytest

from app.config import load
from app.remote.objects import ObjectStore


@pytest.fixture(autouse=True)
def wipe_everything():
    config = load()
    with psycopg.connect(config.database_url, autocommit=True) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in tables.fetchall():
            conn.execute(f'TRUNCATE "{table}" CASCADE')
    objects = ObjectStore(
        config.blob_url, config.s3_endpoint_url, config.s3_access_key_id,
        config.s3_secret_access_key,
    )
    objects.put("left-by-the-clean-up", b"x")
    names = [info.name for info in objects.objects()]
    objects.delete(*names)
    yield
"""

REMOTE_INCIDENT_TESTS = """
import psycopg
import pytest

from app.config import load
from hostile_helpers import on_scratch, scratch


@pytest.mark.parametrize("n", range(2))
def test_the_clean_up_ran_on_the_run_s_scratch_database_and_prefix(n):
    config = load()
    assert config.profile == "testing"
    assert on_scratch(config)
    assert config.sources["database_url"].startswith("pytest scratch database (configured: ")
    assert config.blob_url.endswith("/" + scratch().lstrip("_"))
    with psycopg.connect(config.database_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0].endswith(scratch())
"""

# (R2) load("production"): refused; opted into, it is mapped to a scratch database that only
# the test could have created; with production's URL exported, refused even then.
REMOTE_LOAD_PRODUCTION_TESTS = """
import os

import pytest

from app.config import load
from app.errors import ConfigError, SandboxViolationError
from app.remote.objects import ObjectStore, parse_blob_url, prefixes_overlap
from app.storage import open_storage
from hostile_helpers import ENV_URL, NOT_PRODUCTION, PRODUCTION_BLOB, PRODUCTION_URL, TOKEN
from hostile_helpers import app, on_scratch, scratch


def test_without_opting_in_it_is_refused():
    with pytest.raises(SandboxViolationError) as refused:
        open_storage(load("production"), writer=True, wanted="purge every session").purge()
    assert str(refused.value).startswith("refused under pytest (sandbox: ")
    assert NOT_PRODUCTION in str(refused.value)
    assert "mark the test @pytest.mark.app_profile('production')" in str(refused.value)


@pytest.mark.app_profile("production")
def test_opting_in_maps_production_to_a_scratch_database_of_the_run(monkeypatch):
    monkeypatch.setenv("APP_API_TOKEN", TOKEN)
    config = load("production")
    assert on_scratch(config)
    assert config.sources["database_url"].startswith("pytest scratch database (configured: ")
    assert config.blob_url != PRODUCTION_BLOB


@pytest.mark.app_profile("production")
def test_opting_in_keeps_the_scratch_prefix_out_of_production_s_prefix(monkeypatch):
    monkeypatch.setenv("APP_API_TOKEN", TOKEN)
    config = load("production")
    here = parse_blob_url(config.blob_url, config.s3_endpoint_url)
    assert not prefixes_overlap(here, parse_blob_url(PRODUCTION_BLOB, config.s3_endpoint_url))
    objects = ObjectStore(
        config.blob_url, config.s3_endpoint_url, config.s3_access_key_id,
        config.s3_secret_access_key,
    )
    objects.put("written-by-a-test", b"not production's")
    objects.delete("written-by-a-test")


def test_serving_production_with_a_forged_opt_in_finds_no_database():
    env = {
        **os.environ,
        "ENV_FOR_DYNACONF": "production",
        "PYTEST_APP_ALLOW_PROFILES": "production",
        "APP_API_TOKEN": TOKEN,
    }
    done = app("serve", "--port", "0", env=env)
    assert done.returncode == 69, done.stderr
    assert scratch() + '" does not exist' in done.stderr


@pytest.mark.app_profile("production")
def test_opting_in_with_production_s_url_exported_is_refused(monkeypatch):
    monkeypatch.setenv("APP_API_TOKEN", TOKEN)
    monkeypatch.setenv("APP_DATABASE_URL", PRODUCTION_URL)
    with pytest.raises(ConfigError) as refused:
        load("production")
    assert ENV_URL.format("production", scratch()) in str(refused.value)
    assert "Unset APP_DATABASE_URL" in str(refused.value)
"""

# (R3) Maintenance and serving in a subprocess, with the environment the test inherited.
REMOTE_MAINTENANCE_TESTS = """
import os

import pytest

from hostile_helpers import ENV_URL, NOT_PRODUCTION, PRODUCTION_SHELL, app, scratch

SANDBOXED = "refused under pytest (sandbox: "
MAINTENANCE = [
    ["data", "purge", "--yes-i-mean-it"],
    ["data", "empty-trash", "--older-than", "0s", "--yes-i-mean-it"],
    ["data", "check", "--repair"],
    ["data", "restamp", "--from", "development", "--yes-i-mean-it"],
    ["sessions", "list"],
    ["serve", "--port", "0"],
]


SHELL = {**os.environ, **PRODUCTION_SHELL}
FORGED = {**SHELL, "PYTEST_APP_ALLOW_PROFILES": "production"}
TESTING_ON_PRODUCTION = {**SHELL, "ENV_FOR_DYNACONF": "testing"}
CASES = {
    **{
        f"profile-production-{'-'.join(args[:2])}": (
            ["--profile", "production", *args], None, NOT_PRODUCTION
        )
        for args in MAINTENANCE
    },
    "production-shell-purge": (MAINTENANCE[0], SHELL, NOT_PRODUCTION),
    "production-shell-serve": (MAINTENANCE[-1], SHELL, NOT_PRODUCTION),
    "forged-opt-in": (MAINTENANCE[0], FORGED, ENV_URL.format("production", scratch())),
    "testing-on-production": (
        MAINTENANCE[0], TESTING_ON_PRODUCTION, ENV_URL.format("testing", scratch())
    ),
}


@pytest.mark.parametrize(("args", "env", "reason"), CASES.values(), ids=CASES.keys())
def test_the_child_refuses_production(args, env, reason):
    done = app(*args, env=env)
    assert done.returncode == 78, done.stderr
    assert SANDBOXED in done.stderr and reason in done.stderr
"""

# (R4) The same commands from a child whose environment was wiped or built by hand: the
# process tree still says it belongs to the run.
REMOTE_CLEARED_ENV_TESTS = """
import os
import subprocess
import sys

import pytest

from hostile_helpers import NOT_PRODUCTION, PRODUCTION_SHELL, TREE, app

PURGE = ["--profile", "production", "data", "purge", "--yes-i-mean-it"]


@pytest.mark.parametrize(
    "args",
    [PURGE, ["data", "empty-trash", "--yes-i-mean-it"], ["serve", "--port", "0"]],
    ids=["purge", "empty-trash", "serve"],
)
def test_a_hand_built_environment_with_production_s_settings(args):
    done = app(*args, env={"PATH": os.environ["PATH"], **PRODUCTION_SHELL})
    assert done.returncode == 78, done.stderr
    assert NOT_PRODUCTION in done.stderr and TREE in done.stderr


def test_an_empty_environment():
    # No APP_SETTINGS_DIR either: the project's own settings, whose production is elsewhere.
    done = app(*PURGE, env={})
    assert done.returncode == 78, done.stderr
    assert NOT_PRODUCTION in done.stderr and TREE in done.stderr


def test_a_grandchild_through_a_shell_with_env_i():
    exported = " ".join(f"{name}='{value}'" for name, value in PRODUCTION_SHELL.items())
    command = f"env -i {exported} {sys.executable} -m app {' '.join(PURGE)}"
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 78, done.stderr
    assert NOT_PRODUCTION in done.stderr and TREE in done.stderr
"""

# (R6) Production exported by the test itself, mid-test; the testing profile pointed at
# production's database and prefix.
REMOTE_EXPORTS_MID_TEST_TESTS = """
import os
from unittest import mock

import pytest

from app.config import load
from app.errors import ConfigError, SandboxViolationError
from app.storage import open_storage
from hostile_helpers import ENV_URL, NOT_PRODUCTION, PRODUCTION_SHELL, TOKEN, on_scratch, scratch

FORGED_OPT_IN = {
    "ENV_FOR_DYNACONF": "production",
    "PYTEST_APP_ALLOW_PROFILES": "production",
    "APP_API_TOKEN": TOKEN,
}


def purge():
    open_storage(load(), writer=True, wanted="purge every session").purge()


def test_exporting_production_is_refused():
    with mock.patch.dict(os.environ, PRODUCTION_SHELL), pytest.raises(SandboxViolationError) as no:
        purge()
    assert NOT_PRODUCTION in str(no.value)


def test_pointing_the_testing_profile_at_production_is_refused():
    exported = {**PRODUCTION_SHELL, "ENV_FOR_DYNACONF": "testing"}
    with mock.patch.dict(os.environ, exported), pytest.raises(ConfigError) as refused:
        purge()
    message = str(refused.value)
    assert "profiles 'testing' and 'production' name the same database" in message
    assert ENV_URL.format("testing", scratch()) in message


def test_forging_the_opt_in_maps_production_to_a_scratch_database():
    with mock.patch.dict(os.environ, FORGED_OPT_IN):
        config = load()
    assert config.profile == "production"
    assert on_scratch(config)
"""

# (R7) The incident's second copy of the configuration module, and a Config made by hand
# (with production's URL from the settings file, read with dynaconf itself).
REMOTE_HAND_MADE_TESTS = """
import dataclasses

import pytest
from dynaconf import Dynaconf

import app
import app.config
from app.config import load
from app.errors import SandboxViolationError
from app.remote import pg
from app.remote.storage import restamp
from app.storage import open_storage
from hostile_helpers import NOT_PRODUCTION, NOT_SCRATCH, PRODUCTION_URL, SETTINGS_DIR
from hostile_helpers import forged, on_scratch, scratch, second_copy


def test_the_incident_s_second_copy_of_config_refuses_production():
    config2 = second_copy("src.app.config", "config.py")
    assert config2 is not app.config and on_scratch(config2.load())
    with pytest.raises(SandboxViolationError, match=NOT_PRODUCTION):
        config2.load("production", serving=False)


@pytest.mark.parametrize("writer", [True, False], ids=["writer", "reader"])
def test_a_config_made_by_hand_is_refused_when_opened(writer):
    with pytest.raises(SandboxViolationError) as refused:
        open_storage(forged(), writer=writer, wanted="purge every session").purge()
    assert NOT_SCRATCH.format(scratch()) in str(refused.value)


def test_production_s_url_read_with_dynaconf_itself_is_refused_when_opened():
    files = Dynaconf(settings_files=[f"{SETTINGS_DIR}/settings.toml"], environments=True)
    production = files.from_env("production")
    assert pg.same_database(production.database_url, PRODUCTION_URL)
    by_hand = dataclasses.replace(
        load(), database_url=production.database_url, blob_url=production.blob_url
    )
    with pytest.raises(SandboxViolationError) as refused:
        open_storage(by_hand, writer=True, wanted="purge every session")
    assert NOT_SCRATCH.format(scratch()) in str(refused.value)


def test_a_restamp_made_by_hand_is_refused():
    with pytest.raises(SandboxViolationError) as refused:
        restamp(forged(), "production")
    assert NOT_SCRATCH.format(scratch()) in str(refused.value)
"""

# (R10) Below the seam: the remote backend's own classes and functions, built by hand on
# production's URL (each would change production's rows or objects, or drop its database),
# in the test process and in a child with a hand-built environment.
REMOTE_BELOW_SEAM_TESTS = """
import os
import subprocess
import sys

import pytest
from psycopg.conninfo import make_conninfo

from app.config import load
from app.errors import SandboxViolationError
from app.remote import pg
from app.remote.db import Database
from app.remote.objects import ObjectStore
from app.remote.store import RemoteStore
from hostile_helpers import CREDENTIALS, NOT_SCRATCH, PRODUCTION_BLOB, PRODUCTION_URL, scratch

FIX = "Tests reach only the run's scratch databases and prefixes"


def refused(attempt):
    with pytest.raises(SandboxViolationError) as caught:
        attempt()
    message = str(caught.value)
    assert FIX in message
    return message


def objects(blob_url):
    return ObjectStore(
        blob_url, CREDENTIALS["APP_S3_ENDPOINT_URL"], CREDENTIALS["APP_S3_ACCESS_KEY_ID"],
        CREDENTIALS["APP_S3_SECRET_ACCESS_KEY"],
    )


def purge_with_a_store_by_hand():
    # The run's own scratch prefix, production's database: only the database is refused.
    with RemoteStore(PRODUCTION_URL, objects(load().blob_url), "production") as store:
        store.purge()


def a_holder_row_by_hand():
    pg.Holder(PRODUCTION_URL, "production", "http://hostile:1").start()


def maintenance_by_hand():
    with pg.maintenance(PRODUCTION_URL, "production", "purge every session") as held:
        held.conn.execute("UPDATE app_sessions SET deleted_at = now(), trash_name = id")


def a_pool_by_hand():
    db = Database(PRODUCTION_URL, "production", holder=None, kind="maintenance", pool_size=1)
    with db.write() as conn:
        conn.execute("UPDATE app_sessions SET title = 'hostile'")


def the_app_s_connect():
    with pg.connect(PRODUCTION_URL) as conn:
        conn.execute("UPDATE app_sessions SET title = 'hostile'")


def a_stamp_by_hand():
    pg.open_database(PRODUCTION_URL, "testing")


def drop_it_as_a_scratch_database():
    # Its name split into a "URL" and a "suffix": the scratch name is production's whole one.
    name = pg.database_addresses(PRODUCTION_URL)[0].dbname
    pg.drop_scratch_database(make_conninfo(PRODUCTION_URL, dbname=name[:5]), name[5:])


DATABASE = {
    "RemoteStore": purge_with_a_store_by_hand,
    "Holder": a_holder_row_by_hand,
    "maintenance": maintenance_by_hand,
    "Database": a_pool_by_hand,
    "connect": the_app_s_connect,
    "open_database": a_stamp_by_hand,
    "drop_scratch_database": drop_it_as_a_scratch_database,
}


@pytest.mark.parametrize("attempt", DATABASE.values(), ids=DATABASE.keys())
def test_production_s_database_by_hand_is_refused(attempt):
    assert NOT_SCRATCH.format(scratch()) in refused(attempt)


def test_an_object_store_by_hand_on_production_s_prefix_is_refused():
    def delete_everything():
        store = objects(PRODUCTION_BLOB)
        store.delete(*[info.name for info in store.objects()])

    message = refused(delete_everything)
    assert f"opening object prefix {PRODUCTION_BLOB}, which is not a scratch object" in message


CHILD = '''
import sys
from app.remote.objects import ObjectStore
from app.remote.store import RemoteStore
objects = ObjectStore(*sys.argv[2:6])
RemoteStore(sys.argv[1], objects, "production").purge()
'''


def test_a_child_with_a_hand_built_environment_is_refused():
    # The environment says nothing of the run; the process tree does.
    endpoint, key, secret = CREDENTIALS.values()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, PRODUCTION_URL, PRODUCTION_BLOB, endpoint, key, secret],
        env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, check=False,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "SandboxViolationError: refused under pytest" in done.stderr
    assert "belongs to the run through the process tree (an ancestor process" in done.stderr
    assert f"opening object prefix {PRODUCTION_BLOB}, which is not a scratch" in done.stderr
"""

# (R8) Cases nobody named: variables other software reads (DATABASE_URL, libpq's PG*),
# dynaconf's own names for the app's keys, a settings.local.toml written by the test, and
# load() given an environment of its own.
REMOTE_UNNAMED_TESTS = """
from pathlib import Path

import pytest

from app.config import load
from app.errors import ConfigError, SandboxViolationError
from app.remote import pg
from hostile_helpers import NOT_PRODUCTION, PRODUCTION_BLOB, PRODUCTION_SHELL, PRODUCTION_URL
from hostile_helpers import SETTINGS_DIR, app, on_scratch


def test_database_url_and_libpq_variables_change_nothing(monkeypatch):
    production = pg.database_addresses(PRODUCTION_URL)[0]
    monkeypatch.setenv("DATABASE_URL", PRODUCTION_URL)
    monkeypatch.setenv("PGDATABASE", production.dbname)
    monkeypatch.setenv("PGHOST", str(production.host))
    monkeypatch.setenv("PGPORT", str(production.port))
    config = load()
    assert on_scratch(config)
    with pg.connect(config.database_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
    assert name != production.dbname


def test_dynaconf_s_names_for_the_app_s_keys_are_refused(monkeypatch):
    monkeypatch.setenv("DYNACONF_DATABASE_URL", PRODUCTION_URL)
    with pytest.raises(ConfigError) as refused:
        load()
    assert "DYNACONF_DATABASE_URL" in str(refused.value)


def test_a_local_settings_file_that_points_testing_at_production_never_reaches_it():
    local = Path(SETTINGS_DIR) / "settings.local.toml"
    local.write_text(
        f'[testing]\\ndatabase_url = "{PRODUCTION_URL}"\\nblob_url = "{PRODUCTION_BLOB}"\\n'
    )
    try:
        assert on_scratch(load())  # not read under the sandbox, as the header says
        done = app("data", "purge", "--yes-i-mean-it")
    finally:
        local.unlink()
    assert done.returncode == 0, done.stderr  # the run's scratch database, purged


def test_load_given_production_s_environment_is_refused():
    with pytest.raises(SandboxViolationError) as refused:
        load(environ=PRODUCTION_SHELL)
    assert NOT_PRODUCTION in str(refused.value)
"""

# (R9) The same shell with the plugin disabled (``-p no:app``): nothing is neutralised or
# confined, and app.config refuses what pytest without the app's sandbox must not load.
REMOTE_WITHOUT_PLUGIN_TESTS = """
import os
from unittest import mock

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.config import load
from app.errors import SandboxViolationError
from hostile_helpers import PRODUCTION_SHELL, app

BARE = "while pytest runs without the app's sandbox"
PURGE = ["data", "purge", "--yes-i-mean-it"]


def test_the_shell_s_production_is_refused():
    with pytest.raises(SandboxViolationError, match="loading profile 'production' " + BARE):
        load()


def test_the_dynaconf_docs_pattern_is_refused(monkeypatch):
    monkeypatch.setenv("ENV_FOR_DYNACONF", "testing")
    with pytest.raises(SandboxViolationError) as refused:
        load()
    assert f"from environment APP_DATABASE_URL {BARE}" in str(refused.value)
    assert "neutralises the shell's APP_DATABASE_URL" in str(refused.value)


def test_a_cleared_environment_then_purge_in_process_is_refused():
    with mock.patch.dict(os.environ, PRODUCTION_SHELL, clear=True):
        result = CliRunner().invoke(cli, PURGE)
    assert result.exit_code == 78, result.output
    assert "loading profile 'production' " + BARE in result.output


def test_a_child_with_a_hand_built_environment_is_refused():
    done = app(*PURGE, env={"PATH": os.environ["PATH"], **PRODUCTION_SHELL})
    assert done.returncode == 78, done.stderr
    assert "runs pytest without the app's plugin" in done.stderr
"""

#: The suites run again under ``-n 2``: what a worker must refuse on its own (its mark on
#: sys, its process tree, its scratch suffix). Not the ones that write shared files.
REMOTE_XDIST_SUITES = ("incident", "wiped_env", "hand_made", "below_the_seam")

#: One inner run, each suite in a directory of its own (a conftest applies to its directory).
REMOTE_SUITES: dict[str, dict[str, str]] = {
    "incident": {"conftest.py": REMOTE_INCIDENT_CONFTEST, "test_cleanup.py": REMOTE_INCIDENT_TESTS},
    "load_production": {"test_load_production.py": REMOTE_LOAD_PRODUCTION_TESTS},
    "maintenance": {"test_maintenance.py": REMOTE_MAINTENANCE_TESTS},
    "cleared_env": {"test_cleared_env.py": REMOTE_CLEARED_ENV_TESTS},
    "wiped_env": WIPED,
    "exports": {"test_exports.py": REMOTE_EXPORTS_MID_TEST_TESTS},
    "hand_made": {"test_hand_made.py": REMOTE_HAND_MADE_TESTS},
    "below_the_seam": {"test_below_the_seam.py": REMOTE_BELOW_SEAM_TESTS},
    "unnamed": {"test_unnamed.py": REMOTE_UNNAMED_TESTS},
}
#: Run with ``-p no:app``, apart from the others.
REMOTE_WITHOUT_PLUGIN = {"without_plugin": {"test_without_plugin.py": REMOTE_WITHOUT_PLUGIN_TESTS}}
