"""Red team 25 on the guard: a run whose plugin stays inactive.

Each case is real: an ``app serve`` holding its root, and pytest runs in subprocesses.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_redteam_s24_guard import A_TEST, _inner_env
from test_server_e2e import Server, app_env


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A live server with one session."""
    root = tmp_path_factory.mktemp("s25") / "data"
    server = Server(app_env(root), root.parent / "server.log").wait_ready()
    try:
        with server.client() as client:
            assert client.post("/sessions", json={"title": "kept"}).status_code == 201
        yield server
    finally:
        server.stop()


def _still_serves_its_session(server: Server) -> None:
    assert server.process.poll() is None, server.output
    with server.client() as client:
        assert client.get("/sessions").json()["total"] == 1
    session = next((server.root / "sessions").iterdir())
    assert (session / "session.json").is_file()


def test_a_run_whose_plugin_is_inactive_refuses_a_basetemp_in_a_live_data_root(
    live: Server, tmp_path: Path
) -> None:
    # The plugin stays inactive where the run's rootdir is another project than its
    # settings' (`-c /dev/null`, an ini file or test files outside the project,
    # `--rootdir`), and it then checked nothing: pytest empties a given --basetemp before
    # the first test whoever's run it is, and `--basetemp=<live root>/sessions` emptied the
    # live server's sessions (its index still counted one, with nothing behind it).
    project = tmp_path / "another-project"
    project.mkdir()
    (project / "test_nothing.py").write_text(A_TEST)
    script = (
        'for basetemp in "$2/sessions" "$2"; do\n'
        '  "$1" -m pytest -p no:cacheprovider -c /dev/null --basetemp="$basetemp" '
        "test_nothing.py\n"
        '  echo "=== $?"\n'
        "done\n"
    )
    done = subprocess.run(
        ["sh", "-c", script, "sh", sys.executable, str(live.root)],
        env=_inner_env(), cwd=project,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )  # fmt: skip
    _still_serves_its_session(live)
    runs = done.stdout.split("=== ")
    assert len(runs) == 3, done.stdout
    assert runs[1].startswith("4") and runs[2].startswith("4"), runs
    inside, at = runs[0], runs[1]
    holder = f"held by pid {live.pid}, kind server, profile testing"
    inactive = (
        "The app's plugin is inactive in this run (the settings in "
        f"{Path(__file__).resolve().parent.parent} belong to another project than this run's "
        f"rootdir ({project}); set APP_SETTINGS_DIR to use them), and pytest empties a "
        "--basetemp all the same"
    )
    sessions = live.root / "sessions"
    assert (
        f"ERROR: app: refusing --basetemp {sessions}: pytest empties it in {sessions}, which "
        f"lies inside the data root {live.root} ({holder}"
    ) in inside, inside
    assert inactive in inside, inside
    assert (
        f"ERROR: app: refusing --basetemp {live.root}: it is the data root {live.root}, {holder}"
    ) in at, at
    assert inactive in at, at
