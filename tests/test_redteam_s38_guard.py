"""Red team 38 on the guard: where pytest imports from, and where it writes.

Each case is real: pytest runs in a subprocess next to a stopped production root named by
the settings, with bytecode on (as a developer's shell has it). One class broke: what
pytest imports lies in a data root by a way the start's check did not read. A ``testpaths``
entry is a glob pytest expands (``data/prod*/sessions/*/records`` names no root as written),
and ``--pyargs`` and ``-p`` find a module on ``sys.path`` (``PYTHONPATH`` naming a session's
``records/``): pytest imported a production record uploaded as ``conftest.py`` or
``test_notes.py``, and Python wrote ``__pycache__/`` into the production session. The rest
held, and are kept here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import forked_app
import forked_pytest
import pytest
from project_copy import copy_project_settings
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s36_guard import UPLOADS_TEST_FILES
from test_server_e2e import app_env, snapshot


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`uploads`' project, made once (one child that imports the app) and copied for each
    test: nothing in a stopped root names where it lies."""
    settings = copy_project_settings(tmp_path_factory.mktemp("uploaded") / "project")
    env = app_env(settings / "data" / "production", profile="production")
    forked_app.run_c(UPLOADS_TEST_FILES, env)
    return settings


@pytest.fixture
def uploads(uploaded: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A project whose settings keep production's root in it (``data/production``, stopped),
    with a session holding files uploaded as ``test_notes.py`` and ``conftest.py``: a copy
    of `uploaded` of its own, modes included."""
    settings = Path(shutil.copytree(uploaded, tmp_path / "project", symlinks=True))
    return settings, settings / "data" / "production"


def _run_with_bytecode(
    project: Path, settings: Path, production: Path, *args: str, **extra: str
) -> tuple[int, str]:
    """pytest in `project`, bytecode on, failing if it changed any file of production's."""
    tmpdir = project.parent / "tmp"  # apart from the settings' roots; one for every run
    tmpdir.mkdir(exist_ok=True)
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=str(tmpdir), **extra)
    for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"):
        env.pop(name, None)
    before = snapshot(production)
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=project, env=env
    )
    output = " ".join((done.stdout + done.stderr).split())
    assert snapshot(production) == before, output
    assert not list(production.rglob("__pycache__")), output
    return done.returncode, output


#: What every refusal of a write says after the path and the root, up to its fix.
NOT_THE_APP = (
    "None of it goes through the app, so its sandbox cannot stop it, whoever's run it is. "
    "Point it outside every data root, or leave it out (of the command line, PYTEST_ADDOPTS "
    "or the ini file)"
)


def _elsewhere(tmp_path: Path, *, tests: str = "") -> Path:
    """A project apart from the settings, with one passing test (in `tests` if given)."""
    project = tmp_path / "elsewhere"
    (project / tests).mkdir(parents=True, exist_ok=True)
    (project / tests / "test_a.py").write_text("def test_a():\n    pass\n")
    return project


# --- layer 3: what pytest imports, by a way the check did not read ----------------------


def test_a_testpaths_glob_into_a_data_root_is_refused_before_a_conftest_is_imported(
    uploads: tuple[Path, Path],
) -> None:
    # pytest globs each testpaths entry when given no argument; the check read the entry
    # as written, which names no root. pytest then imported production's
    # records/conftest.py (a record: JSON is a Python dict) before any collection, and
    # Python wrote records/__pycache__/ into the production session.
    settings, production = uploads
    (settings / "pytest.ini").write_text("[pytest]\ntestpaths = data/prod*/sessions/*/records\n")
    code, output = _run_with_bytecode(settings, settings, production)
    assert code == 4, output
    records = next(production.glob("sessions/*/records"))
    assert (
        "ERROR: app: refusing to run: pytest imports the conftest.py and test modules of the "
        f"test path {records.relative_to(settings)} (from testpaths = "
        f"['data/prod*/sessions/*/records'] in {settings / 'pytest.ini'}), and Python writes "
        f"their __pycache__/ in {records}, which lies in the data root of profile "
        f"'production' ({production}; no process holds it now)"
    ) in output, output


def test_a_pyargs_module_in_a_data_root_is_refused_before_it_is_imported(
    uploads: tuple[Path, Path], tmp_path: Path
) -> None:
    # `--pyargs test_notes` finds the module on sys.path, here PYTHONPATH naming a session's
    # records/: pytest imported the record and wrote its bytecode there.
    settings, production = uploads
    records = next(production.glob("sessions/*/records"))
    project = _elsewhere(tmp_path)
    code, output = _run_with_bytecode(
        project, settings, production, "--pyargs", "test_notes", PYTHONPATH=str(records)
    )
    assert code == 4, output
    assert (
        "ERROR: app: refusing to run: pytest imports the conftest.py and test modules of the "
        f"test path test_notes, and Python writes their __pycache__/ in {records}, which lies "
        f"in the data root of profile 'production' ({production}; no process holds it now)"
    ) in output, output


def test_a_sys_path_entry_in_a_data_root_is_refused_naming_what_was_imported_already(
    uploads: tuple[Path, Path], tmp_path: Path
) -> None:
    # `-p test_notes` imports the module before the app's plugin is imported: its bytecode
    # is written already when the refusal comes (not stopped, said), but the run goes no
    # further, and the refusal names the entry and what resolves it.
    settings, production = uploads
    records = next(production.glob("sessions/*/records"))
    project = _elsewhere(tmp_path)
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path), PYTHONPATH=str(records)
    )
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "test_notes"],
        cwd=project, env=env,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 4, output
    assert (
        "ERROR: app: refusing to run: Python imports modules from the sys.path entry "
        f"{records} (PYTHONPATH, a .pth file or pytest's own) and writes their __pycache__/ "
        f"there, which lies in the data root of profile 'production' ({production}; no "
        "process holds it now). None of it goes through the app, so its sandbox cannot stop "
        "it, whoever's run it is. Take that directory out of PYTHONPATH (or the .pth file "
        "that adds it); what Python imported from there before the plugin ran (a -p plugin) "
        "is written there already"
    ) in output, output


# --- layer 3: a conftest that changes directory as it is imported ------------------------

#: A conftest that changes into a directory (`$GO`) as it is imported
#: (`os.chdir(Path(__file__).parent)` is a common habit), or in its `pytest_configure`; a
#: test.
CHANGES_DIRECTORY = {
    "at-import": "import os\n\nos.chdir(os.environ['GO'])\n",
    "in-pytest-configure": "import os\n\n\ndef pytest_configure(config):\n"
    "    os.chdir(os.environ['GO'])\n",
    "test_a.py": "def test_a():\n    pass\n",
}


@pytest.mark.parametrize("moves", ["at-import", "in-pytest-configure"])
@pytest.mark.parametrize(
    ("option", "writer", "when"),
    [
        ("--debug", "pytest's --debug", "starts"),
        ("--log-file", "pytest's log_file (--log-file)", "starts"),
        ("--junitxml", "pytest's --junitxml", "ends"),
    ],
)
def test_a_relative_output_is_checked_where_a_conftest_moved_the_process(
    uploads: tuple[Path, Path], tmp_path: Path, option: str, writer: str, when: str, moves: str
) -> None:
    # pytest opens --debug (as its command line is parsed) and --log-file (in
    # pytest_configure) after the initial conftests are imported, against the directory the
    # process is in then; the check read them against the invocation directory. With a
    # conftest that moved into a production session, `--debug=session.json` rewrote its
    # record with pytest's trace, `--log-file=session.json` emptied it. `--junitxml` was
    # stopped at the end, told that a test had changed the writer. A conftest's own
    # pytest_configure runs after the plugin's check there, and before the logging plugin
    # opens its file (trylast): the same.
    settings, production = uploads
    session = next(production.glob("sessions/*"))
    project = _elsewhere(tmp_path)
    (project / "conftest.py").write_text(CHANGES_DIRECTORY[moves])
    code, output = _run_with_bytecode(
        project, settings, production, f"{option}=session.json", "test_a.py", GO=str(session)
    )
    assert code == 4, output
    assert (
        f"ERROR: app: refusing to run: {writer} rewrites {session / 'session.json'} as the "
        f"run {when}, which lies in the data root of profile 'production' ({production}; no "
        f"process holds it now). {NOT_THE_APP}. The process is in {session} now, not "
        f"in {project} where pytest was started: a conftest or a plugin changed directory (as "
        "it was imported, or in a hook), and pytest opens relative paths there; give the path "
        "absolute, or leave the directory as it was"
    ) in output, output


# --- layer 3: `..` after a symbolic link ---------------------------------------------------


def test_a_path_with_dot_dot_after_a_link_is_read_as_the_system_opens_it(
    uploads: tuple[Path, Path], tmp_path: Path
) -> None:
    # `--debug=link/../session.json`, with `link` a symbolic link to a production session's
    # records/: pytest opens the path as given, and the system goes up from where the link
    # leads, to the session's record; the check read it lexically (`session.json` beside
    # the link) and the run rewrote the record with pytest's trace.
    settings, production = uploads
    session = next(production.glob("sessions/*"))
    project = _elsewhere(tmp_path)
    (project / "link").symlink_to(session / "records")
    code, output = _run_with_bytecode(
        project, settings, production, "--debug=link/../session.json", "test_a.py"
    )
    assert code == 4, output
    assert (
        f"ERROR: app: refusing to run: pytest's --debug rewrites {session / 'session.json'} "
        "as the run starts, which lies in the data root of profile 'production' "
        f"({production}; no process holds it now)"
    ) in output, output


# --- layer 3: values the check skipped, or failed on --------------------------------------


@pytest.mark.parametrize("option", ["--debug", "--log-file"])
def test_a_path_with_a_newline_in_its_name_is_checked_like_any_other(
    uploads: tuple[Path, Path], tmp_path: Path, option: str
) -> None:
    # A value holding a newline was never read as a path: through a link named `x\ny` to a
    # production session, `--debug` rewrote its record with pytest's trace and
    # `--log-file` emptied it.
    settings, production = uploads
    session = next(production.glob("sessions/*"))
    project = _elsewhere(tmp_path)
    (project / "x\ny").symlink_to(session)
    code, output = _run_with_bytecode(
        project, settings, production, f"{option}=x\ny/session.json", "test_a.py"
    )
    assert code == 4, output
    assert f"rewrites {session / 'session.json'} as the run starts" in output, output


def test_an_ini_value_of_text_past_the_filesystem_s_limit_does_not_stop_the_run(
    uploads: tuple[Path, Path], tmp_path: Path
) -> None:
    # Every ini value is read as a place a plugin may write: one longer than a name may be
    # (a suite's name, a long log format) ended the run before any test with a bare
    # `OSError: [Errno 36] File name too long` from the app's plugin.
    settings, production = uploads
    project = _elsewhere(tmp_path)
    code, output = _run_with_bytecode(
        project, settings, production, "--junitxml=report.xml",
        "-o", f"junit_suite_name={'a' * 300}",
        "-o", f"log_file_format=%(message)s {'b' * 300}", "test_a.py",
    )  # fmt: skip
    assert code == 0, output
    assert "1 passed" in output, output
    assert "Traceback" not in output and "OSError" not in output, output
    # So does a sys.path entry of such a name (PYTHONPATH), read since this red team.
    code, output = _run_with_bytecode(
        project, settings, production, "test_a.py", PYTHONPATH=str(tmp_path / ("p" * 300))
    )
    assert code == 0, output
    assert "Traceback" not in output and "OSError" not in output, output


# --- layer 3: sys.pycache_prefix set after the start's check ------------------------------

#: A conftest of a subdirectory, imported as pytest collects, that points Python's bytecode
#: at `$GO`; a test module there and one beside it, imported after it. And a test that
#: does the same, before a later test imports a module of the project's.
SETS_PYCACHE_PREFIX = {
    "sub/conftest.py": "import os, sys\n\nsys.pycache_prefix = os.environ['GO']\n",
    "sub/test_b.py": "def test_b():\n    pass\n",
    "test_c.py": "def test_c():\n    pass\n",
}
SETS_PYCACHE_PREFIX_IN_A_TEST = {
    "helper.py": "VALUE = 1\n",
    "test_d.py": """import importlib, os, sys


def test_1_sets_the_prefix():
    sys.pycache_prefix = os.environ["GO"]


def test_2_imports_a_module():
    assert importlib.import_module("helper").VALUE == 1
""",
}


@pytest.mark.parametrize("where", ["a-conftest", "a-test"])
def test_a_pycache_prefix_set_into_a_data_root_during_the_run_is_put_back(
    uploads: tuple[Path, Path], tmp_path: Path, where: str
) -> None:
    # PYTHONPYCACHEPREFIX in a data root is refused as the run starts (red team 32), and
    # the value is read again at pytest_configure; code that set it later was not seen: a
    # subdirectory's conftest got the bytecode of every test module imported after it
    # written under production's sessions/ (`root/...`, `tmp/...`: unknown entries to `app
    # data check`), and the run stopped only at its end, saying a test had changed what
    # pytest writes.
    settings, production = uploads
    project = tmp_path / "elsewhere"  # its own tests only: the output names them
    files = SETS_PYCACHE_PREFIX if where == "a-conftest" else SETS_PYCACHE_PREFIX_IN_A_TEST
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    sessions = production / "sessions"
    code, output = _run_with_bytecode(
        project, settings, production, "-p", "no:randomly", GO=str(sessions)
    )
    assert code == 1, output
    assert not list(sessions.rglob("*.pyc")), output
    who = (
        "code run as pytest collected (a conftest, or a test module as it was imported), "
        "before sub/test_b.py,"
        if where == "a-conftest"
        else "test_d.py::test_1_sets_the_prefix (or its fixtures)"
    )
    assert (
        f"app: {who} set sys.pycache_prefix to {sessions}, which lies in the data root of "
        f"profile 'production' ({production}; no process holds it now): Python and pytest's "
        "assertion rewriting write the bytecode of every module imported after it there. It "
        "was put back to None"
    ) in output, output
    if where == "a-test":
        assert "2 passed, 1 error" in output, output  # the first test fails at its teardown


# --- layer 3: a conftest's pytest_configure that sets where pytest writes ----------------


@pytest.mark.parametrize(
    ("dest", "writer", "when"),
    [
        ("log_file", "pytest's log_file (--log-file)", "starts"),
        ("xmlpath", "pytest's --junitxml", "ends"),
    ],
)
def test_an_output_a_conftest_s_pytest_configure_sets_is_checked_before_it_is_opened(
    uploads: tuple[Path, Path], tmp_path: Path, dest: str, writer: str, when: str
) -> None:
    # A conftest's pytest_configure runs after the plugin's check there (tryfirst) and
    # before the logging plugin opens log_file (trylast): `config.option.log_file = ...`
    # (a recipe for a log file per xdist worker) naming a production record emptied it, and
    # the run stopped only at its end; `xmlpath` was stopped at the end too, blaming a test.
    settings, production = uploads
    [record] = production.glob("sessions/*/session.json")
    project = _elsewhere(tmp_path)
    (project / "conftest.py").write_text(
        f"def pytest_configure(config):\n    config.option.{dest} = {str(record)!r}\n"
    )
    (project / "test_a.py").write_text(CHANGES_DIRECTORY["test_a.py"])
    code, output = _run_with_bytecode(project, settings, production, "test_a.py")
    assert code == 4, output
    assert (
        f"ERROR: app: refusing to run: {writer} rewrites {record} as the run {when}, which "
        f"lies in the data root of profile 'production' ({production}; no process holds it "
        f"now). {NOT_THE_APP}. It was not so as the run's options were first "
        "checked: a conftest's or a plugin's own pytest_configure changed it (config.option, or "
        "a variable it names), and pytest would write there all the same; change it there"
    ) in output, output


def test_a_variable_a_conftest_s_pytest_configure_sets_in_the_junitxml_path_is_checked(
    uploads: tuple[Path, Path], tmp_path: Path
) -> None:
    # junitxml expands `$VAR` in its path as it is configured, after a conftest's own
    # pytest_configure: `--junitxml='$OUT/session.json'`, with OUT set there to a production
    # session, was stopped only at the run's end, blaming a test, with no report written.
    settings, production = uploads
    [record] = production.glob("sessions/*/session.json")
    project = _elsewhere(tmp_path)
    (project / "conftest.py").write_text(
        "import os\n\n\ndef pytest_configure(config):\n"
        f"    os.environ['OUT'] = {str(record.parent)!r}\n"
    )
    code, output = _run_with_bytecode(
        project, settings, production, "--junitxml=$OUT/session.json", "test_a.py"
    )
    assert code == 4, output
    assert (
        f"ERROR: app: refusing to run: pytest's --junitxml rewrites {record} as the run ends"
    ) in output, output
    assert "a conftest's or a plugin's own pytest_configure changed it" in output, output


# --- layer 3: a linked directory in the tests that leads into a data root ---------------


def test_a_directory_linked_into_a_data_root_is_not_collected(
    uploads: tuple[Path, Path], tmp_path: Path
) -> None:
    # pytest's walk follows a linked directory: `tests/uploads` linked to a production
    # session's records/ (kept beside the tests as fixtures) got the records uploaded as
    # conftest.py and test_notes.py imported, and __pycache__/ written there. The walk
    # stopped only at a root itself, whose stamp a link below it never shows.
    settings, production = uploads
    [records] = production.glob("sessions/*/records")
    project = _elsewhere(tmp_path, tests="tests")
    (project / "tests" / "uploads").symlink_to(records)
    code, output = _run_with_bytecode(project, settings, production, "tests")
    assert code == 0, output
    assert "1 passed" in output, output


def test_a_pycache_prefix_set_after_the_last_test_is_put_back_before_pytest_s_end(
    uploads: tuple[Path, Path], tmp_path: Path
) -> None:
    # After the last test's teardown (a thread that test left running, here a conftest's
    # hook), pytest-cov imports coverage's reporters and pytest more of its modules; the
    # run was stopped at its very end, telling the user to look for a test that changed
    # what pytest writes, and writing no report.
    settings, production = uploads
    sessions = production / "sessions"
    project = _elsewhere(tmp_path)
    (project / "conftest.py").write_text(
        "import os, sys\n\n\ndef pytest_runtest_logfinish(nodeid, location):\n"
        "    sys.pycache_prefix = os.environ['GO']\n"
    )
    code, output = _run_with_bytecode(
        project, settings, production, "--junitxml=report.xml", GO=str(sessions)
    )
    assert code == 1, output
    assert (
        f"app: code run after the last test (a thread it left, a hook) set sys.pycache_prefix "
        f"to {sessions}, which lies in the data root of profile 'production'"
    ) in output, output
    assert (project / "report.xml").is_file(), output


# --- layer 3: a plugin that adds to pytest's arguments -----------------------------------


def test_an_output_a_plugin_adds_to_pytest_s_arguments_is_checked_before_it_is_opened(
    uploads: tuple[Path, Path], tmp_path: Path
) -> None:
    # A plugin's pytest_load_initial_conftests may change `args`, which pytest parses again
    # after the hook (the plugin's check ran before it): `--debug=<record>` added there got
    # the record rewritten with pytest's trace before the refusal at pytest_configure.
    settings, production = uploads
    [record] = production.glob("sessions/*/session.json")
    project = _elsewhere(tmp_path)
    (project / "addargs.py").write_text(
        "def pytest_load_initial_conftests(early_config, parser, args):\n"
        f"    args.append('--debug=' + {str(record)!r})\n"
    )
    code, output = _run_with_bytecode(
        project, settings, production, "-p", "addargs", "test_a.py", PYTHONPATH=str(project)
    )
    assert code == 4, output
    assert (
        f"ERROR: app: refusing to run: pytest's --debug rewrites {record} as the run starts, "
        f"which lies in the data root of profile 'production' ({production}; no process "
        f"holds it now). {NOT_THE_APP}. A plugin's pytest_load_initial_conftests changed "
        f"pytest's arguments (added: --debug={record}): change it there"
    ) in output, output


# --- what held ------------------------------------------------------------------------------


def test_a_testing_root_written_as_dot_dot_after_a_link_into_production_is_refused(
    tmp_path: Path,
) -> None:
    # `[testing] data_root = "lnk/.."`, `lnk` a link to a directory inside production's root:
    # read lexically it is the settings' data/, but it leads to production's root. Roots are
    # resolved as the system opens them, so the two are one, and refused.
    settings = copy_project_settings(tmp_path / "settings")
    (settings / "data" / "production" / "sub").mkdir(parents=True)
    (settings / "lnk").symlink_to(settings / "data" / "production" / "sub")
    text = (settings / "settings.toml").read_text()
    assert 'data_root = "data/testing"' in text
    (settings / "settings.toml").write_text(text.replace('"data/testing"', '"lnk/.."'))
    env = {**os.environ, "APP_SETTINGS_DIR": str(settings), "ENV_FOR_DYNACONF": "testing"}
    env.pop("APP_DATA_ROOT", None)
    done = subprocess.run(
        [sys.executable, "-m", "app", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    production = settings / "data" / "production"
    assert done.returncode == 78, done.stdout + done.stderr
    assert (
        f"profiles 'testing' and 'production' share the same data root: testing -> "
        f"{production} (from settings.toml [testing]), production -> {production}"
    ) in done.stdout + done.stderr, done.stdout + done.stderr


def test_a_pycache_prefix_in_a_data_root_is_refused_with_bytecode_off_too(
    uploads: tuple[Path, Path], tmp_path: Path
) -> None:
    # With PYTHONDONTWRITEBYTECODE set, a prefix in a data root was let through; a
    # subdirectory's conftest that turned bytecode on (`sys.dont_write_bytecode = False`)
    # then got the test modules' bytecode written under production's sessions/. Given
    # through a link of the test's own to the root, the refusal named the link "the data
    # root" (red team 74), where `rm -rf <link>/` empties the root it leads to.
    settings, production = uploads
    link = tmp_path / "bytecode"
    link.symlink_to(production)
    project = tmp_path / "elsewhere"  # its own tests only
    (project / "sub").mkdir(parents=True)
    (project / "sub" / "conftest.py").write_text("import sys\n\nsys.dont_write_bytecode = False\n")
    (project / "sub" / "test_b.py").write_text("def test_b():\n    pass\n")
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings), PYTHONDONTWRITEBYTECODE="1", TMPDIR=_tmpdir(tmp_path)
    )
    env.pop("PYTHONPYCACHEPREFIX", None)
    done = subprocess.run(
        [sys.executable, "-X", f"pycache_prefix={link}", "-m", "pytest",
         "-p", "no:cacheprovider"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert not list(production.rglob("*.pyc")), output
    assert done.returncode == 4, output
    assert (
        "ERROR: app: refusing to run: Python and pytest's assertion rewriting write the "
        f"bytecode of every module they import under sys.pycache_prefix, {link}, which lies "
        f"in the data root of profile 'production' ({production.resolve()}; no process holds "
        f"it now): it is {production.resolve()}, reached through a symbolic link on its way"
    ) in output, output
