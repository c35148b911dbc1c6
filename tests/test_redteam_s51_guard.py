"""Red team 51 on the guard (branch rt-guard34): what argparse writes as pytest reads its
command line.

What broke (next to a stopped production root named by the settings, pytest in a
subprocess, as a user's ordinary suite would have it):

- an option declared with ``type=argparse.FileType("w")`` (a conftest's ``--report-to``, a
  plugin's ``--plug-out``), given a production session's ``session.json``, or holding it as
  its string default: argparse opens such a file as it parses the arguments, before any
  hook of pytest's runs after the parse, so the record was emptied and the run passed. The
  walk of option values found no path there (the value is an open file by then), and the
  checks of what pytest writes come after the parse.

Now every option argparse opens for writing is checked before argparse opens it, by the
plugin and by its fallback (``-p no:app``), for the options registered before either and
after: the run is refused, naming the option, the path, the data root and what to write
instead.

- a user name that is a path: pytest keeps its numbered directories in
  ``<TMPDIR>/pytest-of-<user>``, the name taken from ``LOGNAME`` (or ``USER``) as it is, so
  a child pytest given ``LOGNAME=x/../../<production's root>`` (beside an existing
  ``pytest-of-x``) made ``pytest-0``, ``pytest-1`` and ``pytest-current`` in production's
  root, with the plugin active or switched off: the check of that directory read it
  lexically, and only the directories above it. It is now read where the system opens it,
  the directory itself included, and the refusal names the variable (tested with the
  plugin; its fallback asks the same check, tried by hand).
- coverage's debug output file under pytest-cov's ``--cov``: ``COVERAGE_DEBUG_FILE`` (or
  ``[run] debug_file``) naming a production record, which coverage opens for appending as
  its measurement starts: ``COVERAGE_DEBUG=sys`` appended 11 kB of text to the record. The
  data file and the reports were checked, the debug file was not; it is now, with the
  plugin and under ``-p no:app`` (one code path: the test runs the first).
- ``TMPDIR`` in a production root's ``sessions/`` with a ``--basetemp``: pytest then makes
  nothing in the temporary root, so nothing checked it, and every temporary file and
  directory the tests made through Python's ``tempfile`` (``mkdtemp``,
  ``NamedTemporaryFile``; multiprocessing's ``pymp-*``) was made among production's
  sessions. It is now a path the run writes in, refused as the run starts.
- a ``--basetemp`` that names a file (a settings file, say): pytest's own error, which it
  reports as a test's where it makes the directory itself, was a ``FileExistsError``
  traceback through the plugin, which makes the sandbox first. It is now a refusal that
  names the option and what to give (nothing was ever removed: pytest's emptying fails on a
  file).
- ``pytest -p no:app --basetemp=data`` in the project (or a test's child given the
  settings), where ``data/`` holds every profile's root, and the same ``--basetemp`` in a
  run whose plugin stays inactive (another project's): pytest emptied it, a stopped
  production root with it. Without the plugin, or inactive, a stamped root below a
  ``--basetemp`` counted for nothing (another project's tests may stamp roots of their
  own), and the fallback checked only the roots an enclosing run protects, whose settings
  may be other ones. The fallback now checks the settings' own roots too, as the plugin
  does, and both refuse a root below whose stamp names another profile than ``testing``:
  under pytest the app opens no other profile outside a sandbox of the plugin's.
- a settings file that is not UTF-8 without a byte order mark: a Latin-1 ``é`` in a
  comment, or a file saved as UTF-16 (Windows PowerShell's ``>``), was a bare
  ``UnicodeDecodeError`` traceback from every command and from the plugin before the run;
  a UTF-8 file with a byte order mark (Notepad's) was "invalid TOML: Invalid statement" on
  a first line that looks right. Each is now ``settings_syntax`` (exit 78) naming the
  encoding, the byte, its line and column, and the command that converts the file.
"""

from __future__ import annotations

import codecs
import shutil
import sys
from pathlib import Path

import forked_app
import forked_pytest
import pytest
from project_copy import copy_project_settings
from side_by_side import WITH_COVERAGE
from test_redteam_s24_guard import _inner_env
from test_server_e2e import app_env, snapshot

from app.config import load
from app.errors import SettingsSyntaxError

CREATE = """
from app.config import load
from app.storage import open_storage
with open_storage(load(serving=False), writer=True) as store:
    store.create_session("a review", {})
"""


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A copy of the project's settings, production's root in it with a session (no server),
    and a temporary root for the inner runs beside the settings."""
    base = tmp_path_factory.mktemp("s51")
    settings = copy_project_settings(base / "settings")
    production = settings / "data" / "production"
    forked_app.run_c(CREATE, app_env(production, profile="production"))
    (base / "tmp" / "pytest-of-x").mkdir(parents=True)
    return settings, production, base / "tmp"


#: A conftest whose option argparse opens for writing (emptying it) as pytest parses it.
CONFTEST = """
import argparse

def pytest_addoption(parser):
    parser.addoption("--report-to", type=argparse.FileType("w"), default=None)
"""

#: A `-p` plugin (registered before the app's) whose option's string default argparse
#: opens for appending, given or not.
PLUGIN = """
import argparse, os

def pytest_addoption(parser):
    parser.addoption("--plug-out", type=argparse.FileType("a"), default=os.environ["RECORD"])
"""


def test_an_option_argparse_opens_for_writing_is_refused_before_it_is_opened(
    stopped: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    settings, production, tmp = stopped
    (record,) = production.glob("sessions/*/session.json")
    before = snapshot(production)
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "fileplug.py").write_text(PLUGIN)
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings),
        RECORD=str(record),
        PYTHONPATH=str(tmp_path / "plugins"),
        TMPDIR=str(tmp),  # pytest's own, outside the settings' roots
    )
    runs = {
        "conftest": [f"--report-to={record}"],
        "plugin, app off": ["-p", "fileplug", "-p", "no:app"],
    }
    for what, options in runs.items():
        done = forked_pytest.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options],
            cwd=project, env=env,
        )  # fmt: skip
        output = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 4, (what, output)
        option, mode = ("--report-to", "'w'") if what == "conftest" else ("--plug-out", "'a'")
        assert (
            f"app: refusing to run: argparse opens {record} for writing (mode {mode}"
        ) in output, (what, output)
        assert f"as pytest parses the option {option}, whose type is argparse.FileType" in output
        root = (
            f"the data root of profile 'production' ({production}"
            if what == "conftest"
            else f"the data root {production} (it has a profile stamp"
        )
        assert root in output, (what, output)
        assert f"Give {option} a path outside every data root" in output, (what, output)
        assert "Traceback" not in output, (what, output)
        assert snapshot(production) == before, what


#: What a settings file's bytes are made into, and what the refusal says of them.
ENCODINGS = {
    "latin-1": (
        lambda text: text + "# réglages\n".encode("latin-1"),
        (
            "line {lines}: invalid TOML: the byte 0xE9 at column 4 is not UTF-8 (the file, or that "
            "line, was saved in another encoding, such as Latin-1 or Windows-1252)"
        ),
    ),
    "utf-8-bom": (
        lambda text: codecs.BOM_UTF8 + text,
        (
            "line 1: invalid TOML: the file is saved as UTF-8 with a byte order mark (it starts "
            "with the bytes EF BB BF, a byte order mark), and TOML reads UTF-8 without one"
        ),
    ),
    "utf-16": (
        lambda text: codecs.BOM_UTF16_LE + text.decode().encode("utf-16-le"),
        (
            "line 1: invalid TOML: the file is saved as UTF-16 (it starts with the bytes FF FE, "
            "a byte order mark), and TOML reads UTF-8 without one: save it as UTF-8 without a "
            "byte order mark (`iconv -f UTF-16 -t UTF-8 {path}`, into a new file"
        ),
    ),
}


@pytest.mark.parametrize("name", [".secrets.toml", "settings.toml"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_settings_file_saved_in_another_encoding_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoding: str, name: str
) -> None:
    settings = copy_project_settings(tmp_path / "settings")
    path = settings / name
    text = path.read_bytes()
    change, said = ENCODINGS[encoding]
    path.write_bytes(change(text))
    monkeypatch.setenv("APP_SETTINGS_DIR", str(settings))
    with pytest.raises(SettingsSyntaxError) as caught:
        load("testing")
    expected = said.format(lines=text.count(b"\n") + 1, path=path)
    assert f"{path}, {expected}" in str(caught.value)
    assert caught.value.exit_code == 78


def test_a_settings_file_not_in_utf8_is_no_traceback_from_the_command_line(
    tmp_path: Path,
) -> None:
    settings = copy_project_settings(tmp_path / "settings")
    path = settings / "settings.toml"
    path.write_bytes(ENCODINGS["latin-1"][0](path.read_bytes()))
    # Forked from the run's zygote (tests/forked_app.py): the file is read as the command
    # loads its settings, not as the interpreter starts.
    done = forked_app.run_inner({**_inner_env(), "APP_SETTINGS_DIR": str(settings)}, ["config"])
    output = done.stdout + done.stderr
    assert done.returncode == 78, output
    assert "Traceback" not in output
    assert "the byte 0xE9 at column 4 is not UTF-8" in output
    assert "`iconv -f LATIN1 -t UTF-8`" in output


def test_a_user_name_that_leads_pytest_s_directories_into_a_root_is_refused(
    stopped: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    settings, production, tmp = stopped
    before = snapshot(production)
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_nothing.py").write_text("def test_nothing(tmp_path):\n    pass\n")
    # <tmp>/pytest-of-x/../.. holds the settings: pytest-of-<user> is production's root.
    name = "x/../../settings/data/production"
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=str(tmp), LOGNAME=name)
    # One run: under -p no:app the fallback's wrapper of getbasetemp asks the same check
    # (tried by hand: refused as the first test asks for tmp_path, nothing made).
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project, env=env,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 4, output
    assert (
        "app: refusing to run: pytest would create (and clean up) its temporary "
        f"directories in {tmp}/pytest-of-{name} (it is {production}), which "
    ) in output, output
    assert (
        f"because the user name pytest reads from LOGNAME is {name!r}, a path rather "
        "than a name. Set LOGNAME to the user's own name, or unset it"
    ) in output, output
    assert snapshot(production) == before


def test_coverage_s_debug_file_in_a_root_is_refused(
    stopped: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    settings, production, tmp = stopped
    (record,) = production.glob("sessions/*/session.json")
    before = snapshot(production)
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=str(tmp), PYTEST_ADDOPTS=WITH_COVERAGE)
    env |= {"COVERAGE_DEBUG": "sys", "COVERAGE_DEBUG_FILE": str(record)}
    env.pop("COVERAGE_PROCESS_START", None)
    # One run: the plugin's fallback (-p no:app) reads coverage's paths with the same code.
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--cov=app",
         "--cov-report="],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 4, output
    assert (
        f"app: refusing to run: coverage appends its debug output to COVERAGE_DEBUG_FILE, "
        f"{record}, opening it as the measurement starts, which lies in the data root of "
        f"profile 'production' ({production}"
    ) in output, output
    assert "unset it (COVERAGE_DEBUG_FILE, or debug_file in coverage's configuration)" in output
    assert snapshot(production) == before


def test_a_temporary_root_in_a_root_is_refused_with_a_basetemp_too(
    stopped: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    settings, production, _tmp = stopped
    before = snapshot(production)
    (tmp_path / "test_temporary.py").write_text(
        "import tempfile\n\ndef test_temporary():\n    tempfile.mkdtemp(prefix='suite-')\n"
    )
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=str(production / "sessions"))
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'bt'}"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 4, output
    assert (
        "app: refusing to run: Python's tempfile makes the temporary files and directories of "
        "the run's code (tempfile.mkdtemp, NamedTemporaryFile, multiprocessing's pymp-*) and "
        f"of every process it starts in {production / 'sessions'}, which lies in the data root"
    ) in output, output
    assert "Point TMPDIR (or TEMP, TMP) outside every data root" in output
    assert snapshot(production) == before


def test_a_basetemp_that_is_a_file_is_a_refusal_not_a_traceback(
    stopped: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    settings, _production, tmp = stopped
    given = settings / "settings.toml"
    kept = given.read_bytes()
    (tmp_path / "test_nothing.py").write_text("def test_nothing(tmp_path):\n    pass\n")
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={given}"],
        cwd=tmp_path, env=_inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=str(tmp)),
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 4, output
    assert "Traceback" not in output, output
    assert (
        f"app: pytest cannot make --basetemp {given}, the test sandbox: [Errno 17] File "
        f"exists: '{given}'. Give --basetemp a directory of its own (pytest empties it)"
    ) in output, output
    assert given.read_bytes() == kept


def test_a_basetemp_that_holds_a_production_root_is_refused_without_the_plugin(
    stopped: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _settings, production, tmp = stopped
    # Settings of its own, their production root a copy of the stopped one (stamped, no
    # holder): the fixture's stays out of reach if pytest empties this one.
    settings = copy_project_settings(tmp_path / "settings")
    shutil.copytree(production, settings / "data" / "production")
    data = settings / "data"
    before = snapshot(data)
    (tmp_path / "test_nothing.py").write_text("def test_nothing(tmp_path):\n    pass\n")
    env = _inner_env(TMPDIR=str(tmp))
    env.pop("APP_SETTINGS_DIR", None)
    runs = {
        # Switched off, given the settings: the first test to ask for tmp_path errors.
        "off": (["-p", "no:app"], {"APP_SETTINGS_DIR": str(settings)}, 1),
        # Inactive (the settings are the package's project's, the rootdir this directory).
        "inactive": ([], {}, 4),
    }
    for what, (options, extra, code) in runs.items():
        done = forked_pytest.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options,
             f"--basetemp={data}"],
            cwd=tmp_path, env={**env, **extra},
        )  # fmt: skip
        output = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == code, (what, output)
        refused = (
            f"app: refusing --basetemp {data}: pytest empties it before the run, and it "
            f"overlaps the data root of profile 'production' ({data / 'production'})"
            if what == "off"
            else f"app: refusing --basetemp {data}: it holds the data root "
            f"{data / 'production'} (it has a profile stamp, .app-profile.json)"
        )
        assert refused in output, (what, output)
        assert snapshot(data) == before, what
