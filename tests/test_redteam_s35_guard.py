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

import subprocess
import sys
from pathlib import Path

from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_server_e2e import snapshot

#: Tests that plant, mid-run, a hard link of a record at the --junitxml path and a symbolic
#: link to it in pytest's cache, where pytest writes as the run ends.
PLANTS_LINKS = """import os
from pathlib import Path


def test_plants_a_hard_link_at_the_report(request):
    os.link(os.environ["RECORD"], "report.xml")


def test_plants_a_symbolic_link_in_the_cache(request):
    nodeids = request.config.cache._cachedir / "v" / "cache" / "nodeids"
    nodeids.parent.mkdir(parents=True, exist_ok=True)
    nodeids.unlink(missing_ok=True)
    nodeids.symlink_to(os.environ["RECORD"])
"""


def _run(project: Path, settings: Path, *args: str, **extra: str) -> tuple[int, str]:
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(project), **extra)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "cacheprovider", "-q", *args],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_a_link_a_test_plants_where_pytest_writes_at_the_end_is_removed_not_followed(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    [record] = production.glob("sessions/*/session.json")
    (tmp_path / "test_inner.py").write_text(PLANTS_LINKS)
    before = snapshot(production)
    code, output = _run(
        tmp_path, settings, "--junitxml=report.xml", "test_inner.py", RECORD=str(record)
    )
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
    assert not nodeids.is_symlink() and "test_inner.py::" in nodeids.read_text(), output


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
        "started, and a test changed it since (a link on the way, or the writer itself: "
        "config.cache, the junitxml writer); nothing pytest writes at the end is written for "
        "this run (no report, no cache). Look for the test that changed it, and run again"
    ) in output, output
    assert not (tmp_path / "report.xml").exists(), output
