"""Red team 30 on the guard: coverage's files, which pytest-cov writes where coverage says.

pytest-cov keeps ``--cov-report=TYPE:DEST`` in a mapping (``{"xml": DEST}``), which the check
of what a run writes did not walk, pytest-benchmark takes its storage as a ``file://`` URL,
which it did not read as a path, and coverage's data file and default report paths are no
option's value at all (``COVERAGE_FILE``, ``.coveragerc``). pytest-cov also acts in a
tryfirst ``pytest_load_initial_conftests`` (registered before or after the app's plugin, as
entry points come), where coverage erases its data file before the plugin's check ran.

Each case is real: an ``app serve`` on the production profile holding its root, a stopped
production root named by the settings, pytest runs in subprocesses with pytest-cov told (by
an option, ``PYTEST_ADDOPTS``, ``COVERAGE_FILE`` or a ``.coveragerc``) to write there.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from side_by_side import WITH_COVERAGE
from test_redteam_s24_guard import A_TEST, _inner_env, serving_one_session
from test_redteam_s27_guard import MOVE_IT, NOT_THE_APPS, _stopped_production, _tmpdir
from test_server_e2e import Server, app_env, snapshot

TOKEN = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A live production server with one session."""
    root = tmp_path_factory.mktemp("s30") / "data"
    env = app_env(root, profile="production", APP_API_TOKEN=TOKEN)
    with serving_one_session(root, root.parent / "server.log", env) as server:
        yield server


#: A plugin whose option takes a path as a ``file:`` URL, as pytest-benchmark's
#: ``--benchmark-storage`` does (``file://PATH``, where ``--benchmark-autosave`` writes).
CONFTEST = """
from pathlib import Path


def pytest_addoption(parser):
    parser.addoption("--runs-store", default="file://./.runs", help="where runs are kept")


def pytest_sessionfinish(session):
    store = Path(session.config.getoption("runs_store").removeprefix("file://"))
    store.mkdir(parents=True, exist_ok=True)
    (store / "run.json").write_text("{}")
"""

#: Each case a pytest with pytest-cov (or the plugin above) told to write in a data root
#: (`$1` python, `$2` the live root, `$3` its session, `$4` the project, `$5` the stopped
#: production's session).
CASES = """
cd "$4"
"$1" -m pytest --cov=app --cov-report=xml:"$3/session.json" test_nothing.py; echo "=== $?"
PYTEST_ADDOPTS="--runs-store=file://$2/sessions" "$1" -m pytest test_nothing.py; echo "=== $?"
COVERAGE_FILE="$3/session.json" "$1" -m pytest --cov=app test_nothing.py; echo "=== $?"
printf '[html]\\ndirectory = %s/sessions\\n' "$2" > .coveragerc
"$1" -m pytest --cov=app --cov-report=html test_nothing.py; echo "=== $?"
printf '[run]\\ndata_file = %s/session.json\\n' "$5" > .coveragerc
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$1" -m pytest -p app -p pytest_cov.plugin --cov=app \\
  test_nothing.py; echo "=== $?"
"""


def test_what_coverage_writes_is_refused_in_a_live_and_a_stopped_production_root(
    live: Server, tmp_path: Path
) -> None:
    # Before the fix: the xml report rewrote the live session's session.json (the server
    # then answers 500 for it), the html report put 90 files into its sessions/, a plugin
    # wrote its runs into sessions/ through a file:// URL (pytest-benchmark's form), and
    # COVERAGE_FILE or a .coveragerc's data_file had coverage erase a session.json as the
    # run started (then write its database there), live or stopped; with autoload off and
    # pytest-cov named by its module (-p pytest_cov.plugin), too.
    settings, production = _stopped_production(tmp_path)
    stopped = next((production / "sessions").iterdir())
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_nothing.py").write_text(A_TEST)
    (project / "conftest.py").write_text(CONFTEST)
    session = next((live.root / "sessions").iterdir())
    before = snapshot(live.root), snapshot(production)
    done = subprocess.run(
        ["sh", "-c", CASES, "sh", sys.executable, str(live.root), str(session), str(project),
         str(stopped)],
        env=_inner_env(
            APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path), PYTEST_ADDOPTS=WITH_COVERAGE
        ),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )  # fmt: skip
    assert (snapshot(live.root), snapshot(production)) == before, done.stdout
    with live.client() as client:
        assert client.get(f"/sessions/{session.name}").status_code == 200
    runs = done.stdout.split("=== ")
    assert len(runs) == 6, done.stdout
    assert all(run.startswith("4") for run in runs[1:]), runs
    holder = f"held by pid {live.pid}, kind server, profile production"
    lies = f"which lies in the data root {live.root} ({holder}"
    erases = (
        "coverage (pytest-cov's --cov) erases its data file {} (and the parallel ones beside "
        "it) as the run starts, and writes it at the end"
    )
    expected = [
        f"pytest-cov's --cov-report=xml writes its report to {session}/session.json, {lies}",
        f"the option --runs-store names {live.root}/sessions, where a plugin may write, {lies}",
        f"{erases.format(f'{session}/session.json')}, {lies}",
        f"pytest-cov's --cov-report=html writes its report to {live.root}/sessions, {lies}",
        (
            f"{erases.format(f'{stopped}/session.json')}, which lies in the data root of "
            f"profile 'production' ({production}; no process holds it now)"
        ),
    ]
    for run, says in zip(runs[:5], expected, strict=True):
        assert f"ERROR: app: refusing to run: {says}" in run, run
        assert NOT_THE_APPS in run, run
        assert MOVE_IT in run, run
