"""Red team 32 on the guard: data root paths that lead somewhere else when the process changes.

A data root is checked once, as a path, when it is opened, and every change after compares
the same path with what it led to then. A `Config` made by hand may name its root by a path
whose meaning is the process's state: relative (its current directory), or through a link
of ``/proc`` (``/proc/self/cwd``, ``/dev/fd/N``). A thread that changes directory back and
forth while the test deletes a session in its own root sent the delete's rename, between
two checks of the path, into a stopped production root. Each case is real: pytest runs in
subprocesses, next to a stopped production root named by the settings.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import forked_pytest
import pytest
from test_redteam_s24_guard import A_TEST, _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_server_e2e import snapshot

from app.config import Config
from app.errors import DataRootStateError
from app.storage import open_storage
from app.testing import writes

#: Each case opens the test's own root (`production/` in its tmp_path, holding a copy of
#: the stopped production's session) by a path that follows the current directory or a
#: descriptor, and deletes the session while a thread moves that between the test's
#: directory and production's parent. Bounded by count, never by time: on the code before
#: the fix, production's session moved within 40,000 deletes.
RACE = """
import os, shutil, sys, threading
from dataclasses import replace
from pathlib import Path

import pytest
from app.errors import AppError
from app.storage import open_storage
from app.testing import writes

PRODUCTION = Path(os.environ["PRODUCTION_ROOT"])


@pytest.mark.parametrize("shape", ["cwd", "link", "relative", "fd"])
def test_delete(shape, app_config, tmp_path):
    own = tmp_path / "production"
    own.mkdir()
    with open_storage(replace(app_config, data_root=own), writer=True):
        pass
    [session] = (PRODUCTION / "sessions").iterdir()
    shutil.copytree(session, own / "sessions" / session.name)
    mine, theirs = os.open(tmp_path, os.O_RDONLY), os.open(PRODUCTION.parent, os.O_RDONLY)
    fd = os.dup(mine)
    (tmp_path / "here").symlink_to("/proc/self/cwd")
    os.chdir(tmp_path)
    root = {
        "cwd": Path("/proc/self/cwd/production"),
        "link": tmp_path / "here" / "production",
        "relative": Path("production"),
        "fd": Path(f"/dev/fd/{fd}/production"),
    }[shape]
    try:
        store = open_storage(replace(app_config, data_root=root), writer=True)
    except AppError as refused:
        print(f"CASE {shape}: REFUSED {refused}")
        return
    stop = []

    def flip():
        while not stop:
            os.chdir(PRODUCTION.parent), os.dup2(theirs, fd)
            os.chdir(tmp_path), os.dup2(mine, fd)

    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=flip)
    thread.start()
    try:
        for _ in range(200_000):
            try:
                store.delete_session(session.name)
            except (AppError, OSError):
                continue
            if not session.exists():
                break
            shutil.copytree(session, own / "sessions" / session.name)
    finally:
        stop.append(True)
        thread.join()
    print(f"CASE {shape}: OPENED, production's session {'kept' if session.exists() else 'MOVED'}")
"""


def test_a_root_that_follows_the_current_directory_or_a_descriptor_is_refused(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    (tmp_path / "test_race.py").write_text(RACE)
    before = snapshot(production)
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q", "test_race.py"],
        cwd=tmp_path,
        env=_inner_env(
            APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path),
            PRODUCTION_ROOT=str(production),
        ),
        merged=True,
    )  # fmt: skip
    assert snapshot(production) == before, done.stdout
    cases = dict(re.findall(r"CASE (\w+): (.*)", done.stdout))
    assert set(cases) == {"cwd", "link", "relative", "fd"}, done.stdout
    through = "the path passes through {}, a link of /proc that names what a process has at "
    expected = {
        "cwd": through.format("/proc/self/cwd"),
        "link": through.format("/proc/self/cwd"),
        "relative": "the path is relative, so it names a directory under whatever the current",
        "fd": "the path passes through /proc/self/fd/",
    }
    for shape, says in expected.items():
        assert cases[shape].startswith("REFUSED data root "), (shape, cases[shape])
        assert says in cases[shape], (shape, cases[shape])
        fix = "give data_root of profile 'testing' as the directory's own absolute path (this "
        assert fix in cases[shape], (shape, cases[shape])


def test_the_refusal_names_the_link_and_where_it_leads_now(
    app_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Straight to /proc/self/cwd, the refusal was that "a filesystem is mounted inside it"
    # (/proc is one, and the root's own lstat was the link's), which sent its reader to
    # look for a mount that is not there.
    own = tmp_path / "root"
    own.mkdir()
    monkeypatch.chdir(own)
    with pytest.raises(DataRootStateError) as refused:
        open_storage(replace(app_config, data_root=Path("/proc/self/cwd")), writer=True)
    assert str(refused.value) == (
        "data root /proc/self/cwd: the path passes through /proc/self/cwd, a link of /proc "
        "that names what a process has at the moment it is followed (its current directory, "
        "an open descriptor, its root), not a directory: a chdir or a dup2 (by any thread) "
        "sends the writes that follow into another directory, in the middle of a change; "
        "give data_root of profile 'testing' as the directory's own absolute path (this one "
        f"leads to {own} now); `app.config.load` resolves every root so"
    )
    assert os.listdir(own) == []  # refused before anything was made there


#: pytest under a coverage measurement started before it, by coverage's .pth under
#: COVERAGE_PROCESS_START (`$1` python, `$2` the stopped production's sessions/, `$3` the
#: project): run from production's sessions/, and with COVERAGE_FILE there; and under
#: cProfile, told to write its profile there.
UNDER_COVERAGE = """
cd "$2" && COVERAGE_PROCESS_START="$3/.coveragerc" "$1" -m pytest -p no:cacheprovider "$3"
echo "=== $?"
cd "$3" && COVERAGE_PROCESS_START=.coveragerc COVERAGE_FILE="$2/.coverage" "$1" -m pytest \
  -p no:cacheprovider
echo "=== $?"
"$1" -m cProfile -s time -o "$2/prof.out" -m pytest -p no:cacheprovider
echo "=== $?"
"""


def test_a_measurement_that_wraps_pytest_writes_nothing_in_a_data_root(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # The run was refused for its current directory in production's sessions/, but
    # coverage, measuring the process since its start (its .pth, under the
    # COVERAGE_PROCESS_START a project sets for subprocess coverage; `coverage run -m
    # pytest` the same, tried by hand next to a live server), wrote its 53 kB .coverage
    # there as the process exited; and with COVERAGE_FILE there, from anywhere. cProfile
    # (and profile, trace: by hand) dumps its profile once pytest returns, refused or not:
    # 547 kB into a live sessions/ by hand.
    settings, production = stopped
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_nothing.py").write_text(A_TEST)
    (project / ".coveragerc").write_text("[run]\nbranch = true\n")
    before = snapshot(production)
    done = subprocess.run(
        ["sh", "-c", UNDER_COVERAGE, "sh", sys.executable, str(production / "sessions"),
         str(project)],
        env=_inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )  # fmt: skip
    assert snapshot(production) == before, done.stdout
    runs = done.stdout.split("=== ")
    assert len(runs) == 4, done.stdout
    # cProfile's main swallows pytest's SystemExit, so its run exits 0 whatever pytest says.
    assert [run[:1] for run in runs[1:]] == ["4", "4", "0"], runs
    for run in runs[:2]:
        assert (
            "ERROR: app: refusing to run: coverage, measuring this process since before pytest "
            "started (`coverage run`, or its .pth under COVERAGE_PROCESS_START), writes its "
            f"data file {production}/sessions/.coverage (or files beside it, with parallel) "
            f"as the process exits, which lies in the data root of profile 'production' "
        ) in run, run
        assert "this process's coverage data is not saved" in run, run
    assert (
        "ERROR: app: refusing to run: python -m cProfile, which runs pytest in this process, "
        f"writes {production}/sessions/prof.out once pytest returns, which lies in the data "
        "root of profile 'production' "
    ) in runs[2], runs[2]
    assert "nothing of it is written for this run" in runs[2], runs[2]


@pytest.mark.parametrize(
    ("argv", "found"),
    [
        (
            ["py", "-m", "cProfile", "-s", "time", "-o", "p.out", "-m", "pytest"],
            [("cProfile", "p.out")],
        ),
        (["py", "-mprofile", "--outfile=p.out", "-m", "pytest", "-o", "x"], [("profile", "p.out")]),
        (["py", "-m", "cProfile", "-m", "pytest", "-o", "cache_dir=x"], []),
        # trace's -m is --missing, a flag: the options after it are still trace's.
        (
            ["py", "-m", "trace", "-c", "-m", "-C", "cover", "--module", "pytest"],
            [("trace", "cover")],
        ),
        (
            ["py", "-m", "trace", "--count", "--file=c.out", "-Cdir", "run.py", "-f", "x"],
            [("trace", "c.out"), ("trace", "dir")],
        ),
    ],
)
def test_a_wrappers_outputs_are_read_from_its_command_line(
    argv: list[str], found: list[tuple[str, str]]
) -> None:
    # Red team 32 named it: the scan stopped at trace's -m (--missing), and missed a -C after it.
    assert list(writes._wrapper_outputs(argv)) == found
