"""Red team 31 on the guard: checks that trusted a path's name, not the file it names.

pytest's writers and the app's own test fixtures were checked by path: a path in a data
root, or leading into one through a symbolic link, is refused. A hard link has no such
path (it *is* the file, under another name, anywhere on the same filesystem), and a
symbolic link planted inside a directory pytest writes in (its cache) is never resolved by
a check of the directory. Each case is real: an ``app serve`` on the production profile
holding its root, a stopped production root named by the settings, pytest runs in
subprocesses.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import forked_app
import forked_pytest
import pytest
from project_copy import copy_project_settings
from test_redteam_s24_guard import A_TEST, _inner_env, serving_one_session
from test_redteam_s27_guard import NOT_THE_APPS, _tmpdir
from test_server_e2e import Server, app_env, snapshot

from app.config import Config
from app.errors import LockFileAliasedError
from app.storage import open_storage

TOKEN = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A live production server with one session."""
    root = tmp_path_factory.mktemp("s31") / "data"
    env = app_env(root, profile="production", APP_API_TOKEN=TOKEN)
    with serving_one_session(root, root.parent / "server.log", env) as server:
        yield server


#: A stopped production's one session, with a file, deleted once and restored (an audit line).
CREATE = """
from app.config import load
from app.storage import open_storage
with open_storage(load(serving=False), writer=True) as store:
    session = store.create_session("a review", {})
    store.put_file(session["id"], "notes.txt", b"production's notes")
    store.delete_file(session["id"], "notes.txt")
    store.restore(session["id"], file="notes.txt")
"""


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the project's settings, and production's root in it (no server): only the
    settings name it."""
    settings = copy_project_settings(tmp_path_factory.mktemp("s31-stopped") / "settings")
    production = settings / "data" / "production"
    env = app_env(production, profile="production")
    forked_app.run_c(CREATE, env)
    return settings, production


#: Tests that start the app's own live server, each after planting the server's log file as
#: a hard link or a symbolic link (`$LINKS`: `hard=PATH,symbolic=PATH`) to a record.
LIVE_SERVER_TESTS = """
import os
import subprocess

import pytest

LINKS = [link.split("=", 1) for link in os.environ["LINKS"].split(",")]


@pytest.fixture(params=LINKS, ids=[kind for kind, _ in LINKS])
def planted(request, tmp_path):
    kind, target = request.param
    log = tmp_path / "live-server.log"
    # A hard link by `ln`: the run refuses os.link of a protected root's file in its own
    # processes (app.testing.python_writes); this tests the fixture's log without that.
    if kind == "hard":
        subprocess.run(["ln", target, str(log)], check=True)
    else:
        log.symlink_to(target)


def test_serves(planted, app_live_server):
    pass
"""

#: A test that keeps a descriptor of a record open, read-only, at 49.
KEEPS_A_RECORD_OPEN = """
import os

def test_reads_a_record():
    os.dup2(os.open(os.environ["RECORD"], os.O_RDONLY), 49)
"""

#: Each case a pytest told to write a file that is a hard link of a production session's
#: record, or whose cache holds a link to one, or hypothesis's directory in production
#: (`$1` python, `$2` the live session's session.json, `$3` the stopped production's, `$4`
#: the project).
CASES = """
cd "$4"
ln "$2" report.xml && "$1" -m pytest --junitxml=report.xml test_nothing.py; echo "=== $?"
rm -f report.xml
HYPOTHESIS_STORAGE_DIRECTORY="${3%/*/*}" "$1" -m pytest test_nothing.py; echo "=== $?"
rm -rf .pytest_cache
mkdir -p .pytest_cache/v/cache && ln -s "$2" .pytest_cache/v/cache/nodeids
"$1" -m pytest -p cacheprovider test_nothing.py; echo "=== $?"
rm -f .pytest_cache/v/cache/nodeids && ln "$3" .pytest_cache/v/cache/nodeids
"$1" -m pytest -p cacheprovider test_nothing.py; echo "=== $?"
rm -rf .pytest_cache
RECORD="$3" "$1" -m pytest --junitxml=/dev/fd/49 test_keeps_a_record_open.py; echo "=== $?"
"""


def test_a_hard_or_symbolic_link_to_a_production_record_is_not_rewritten_by_pytest(
    live: Server, stopped: tuple[Path, Path], tmp_path: Path
) -> None:
    # pytest rewrites its files in place (open "w"): --junitxml, --debug, --log-file, and
    # its cache's v/cache/nodeids (every run) and lastfailed. A path in a data root is
    # refused; a hard link of a live or a stopped production session's session.json, made
    # anywhere on the same filesystem, is no such path, and a symbolic link inside the
    # cache directory was never looked at: pytest wrote its XML and its list of tests into
    # production's records (the server then answers 500 for them). hypothesis's
    # HYPOTHESIS_STORAGE_DIRECTORY, which red team 30 left unread, is read now too. And
    # --junitxml=/dev/fd/49 named nothing when checked; a test then left a read-only
    # descriptor of a production record there, which pytest's write at the end reopened.
    settings, production = stopped
    record = next((production / "sessions").iterdir()) / "session.json"
    session = next((live.root / "sessions").iterdir())
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_nothing.py").write_text(A_TEST)
    (project / "test_keeps_a_record_open.py").write_text(KEEPS_A_RECORD_OPEN)
    before = snapshot(live.root), snapshot(production)
    done = subprocess.run(
        ["sh", "-c", CASES, "sh", sys.executable, str(session / "session.json"), str(record),
         str(project)],
        env=_inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )  # fmt: skip
    after = snapshot(live.root), snapshot(production)
    changed = [k for b, a in zip(before, after, strict=True) for k in b if b[k] != a.get(k)]
    assert after == before, (changed, done.stdout)
    with live.client() as client:
        assert client.get(f"/sessions/{session.name}").status_code == 200
    runs = done.stdout.split("=== ")
    assert len(runs) == 6, done.stdout
    assert all(run.startswith("4") for run in runs[1:]), runs
    cache = project / ".pytest_cache" / "v" / "cache" / "nodeids"
    in_production = f"in the data root of profile 'production' ({production}"
    expected = [
        (
            f"pytest's --junitxml rewrites {project}/report.xml as the run ends, which is a "
            "hard link (2 names): pytest rewrites it in place, which changes it under every "
            "other name too, and one may lie in a data root"
        ),
        (
            "hypothesis writes its example database (examples/, constants/) under "
            f"HYPOTHESIS_STORAGE_DIRECTORY, {production}/sessions, which lies {in_production}"
        ),
        f"pytest's cache provider rewrites {session}/session.json in place, which lies in",
        (
            f"pytest's cache provider rewrites {cache} in place, which is a hard link "
            f"(2 names) of {record} {in_production}"
        ),
        ("pytest's --junitxml rewrites /dev/fd/49 as the run ends, which passes through /proc/"),
    ]
    for run, says in zip(runs[:5], expected, strict=True):
        assert f"ERROR: app: refusing to run: {says}" in run, run
        assert NOT_THE_APPS in run, run


def test_the_live_server_fixture_never_writes_its_log_through_a_link(
    live: Server, stopped: tuple[Path, Path], tmp_path: Path
) -> None:
    # app_live_server opened tmp_path/"live-server.log" with open("wb") and gave it to the
    # server as its output: a link planted there by a fixture that runs first (a hard link
    # of a stopped production session's session.json, or a symbolic link to a live one's)
    # was emptied and filled with the server's log.
    settings, production = stopped
    record = next((production / "sessions").iterdir()) / "session.json"
    session = next((live.root / "sessions").iterdir()) / "session.json"
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_serves.py").write_text(LIVE_SERVER_TESTS)
    before = snapshot(live.root), snapshot(production)
    try:
        done = forked_pytest.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_serves.py"],
            cwd=project,
            env=_inner_env(
                APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path),
                LINKS=f"hard={record},symbolic={session}",
            ),
            merged=True,
        )  # fmt: skip
    finally:
        shutil.rmtree(tmp_path / "tmp")  # the hard link: other tests count the record's names
    assert (snapshot(live.root), snapshot(production)) == before, done.stdout
    assert "2 errors" in done.stdout, done.stdout
    refused = "app: refusing to write the live server's log "
    assert f"{refused}" in done.stdout, done.stdout
    assert "live-server.log: it has 2 hard links (`find / -xdev -samefile " in done.stdout
    assert f"live-server.log: it is a symbolic link (to {session})" in done.stdout
    assert "Remove it (rm " in done.stdout, done.stdout


def test_a_testing_root_made_of_hard_links_of_production_changes_none_of_its_files(
    stopped: tuple[Path, Path], app_config: Config
) -> None:
    # Held: a testing root whose files are hard links of a stopped production root's (as
    # `cp -al` or an rsync --link-dest snapshot makes them), driven through every change
    # the app makes. The app replaces files by rename, never in place, but for two: its
    # lock file (refused when it has other names) and audit.jsonl (given an inode of its
    # own first). Production's bytes stay as they were.
    _, production = stopped
    with open_storage(app_config, writer=True):
        pass  # the testing root, stamped testing
    root = app_config.data_root
    before = snapshot(production)
    (root / ".server.lock").unlink()
    os.link(production / ".server.lock", root / ".server.lock")
    with pytest.raises(LockFileAliasedError, match="has 2 hard links"):
        open_storage(app_config, writer=True)
    (root / ".server.lock").unlink()
    for path in sorted(production.rglob("*")):
        copy = root / path.relative_to(production)
        if path.is_dir():
            copy.mkdir(exist_ok=True)
        elif path.name not in {".app-profile.json", ".server.lock"}:
            os.link(path, copy)
    try:
        with open_storage(app_config, writer=True) as store:
            [linked] = [s["id"] for s in store.list_sessions().items]
            store.put_file(linked, "notes.txt", b"the test's", replace=True)
            store.put_file(linked, "more.txt", b"more")
            store.delete_file(linked, "more.txt")
            store.restore(linked, file="more.txt")
            store.delete_session(linked)
            store.restore(linked)
            store.check(repair=True)
            store.delete_session(linked)
            store.empty_trash()
            store.purge()
        assert snapshot(production) == before
    finally:
        shutil.rmtree(root)
