"""pytest's own clean-up of its older temporary directories, next to a live server.

Without ``--basetemp``, every pytest run makes ``$TMPDIR/pytest-of-<user>/pytest-<N>`` and, at
its end, deletes the numbered directories older than the last ``tmp_path_retention_count``
(3). A server left running on a data root inside one of them (started by hand on a failed
test's data, to look at it) is deleted under it by a later, unrelated run, whose settings
know nothing of that root.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import forked_app
import pytest
from _pytest.tmpdir import get_user
from test_server_e2e import Server, app_env


def test_a_run_that_would_delete_a_live_server_s_root_among_its_old_directories_is_refused(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temproot = tmp_path / "temproot"
    numbered = temproot / f"pytest-of-{get_user()}"
    root = numbered / "pytest-0" / "test_failed0" / "data"
    root.parent.mkdir(parents=True)
    for n in range(1, 4):
        (numbered / f"pytest-{n}").mkdir()
    # The server needs nothing of what pytester changed (its HOME, its colours): forked.
    env = forked_app.as_the_run_for_the_rest(app_env(root))
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        with server.client() as client:
            assert client.post("/sessions", json={"title": "kept"}).status_code == 201
        # A shell that knows nothing of that server: its root is in no settings file.
        for name in ("APP_DATA_ROOT", "ENV_FOR_DYNACONF", "PYTEST_APP_SANDBOX"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(temproot))
        pytester.makepyfile("def test_nothing():\n    pass\n")
        result = pytester.run(sys.executable, "-mpytest", "-p", "pytester")
        assert result.ret == 4, result.stdout.str() + result.stderr.str()
        refused = (
            f"ERROR: app: refusing to run: pytest deletes {numbered / 'pytest-0'} at the end "
            "of this run (it keeps only the last 3 of its temporary directories, "
            f"tmp_path_retention_count), and it holds the data root {root}, held by pid "
            f"{server.pid}, kind server*. Stop that process, or move its data root out of "
            f"{numbered}*"
        )
        result.stderr.fnmatch_lines([refused])
        assert server.process.poll() is None
        with server.client() as client:
            assert client.get("/sessions").json()["total"] == 1
        assert (root / "sessions").is_dir()
        assert os.listdir(numbered / "pytest-0") == ["test_failed0"]
    finally:
        server.stop()


def test_a_pytest_of_user_directory_linked_to_a_live_server_s_root_is_not_followed(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Followed, the link would put pytest's numbered directories (and their clean-up) in
    # the data root.
    root = tmp_path / "srv" / "data"
    root.parent.mkdir()
    temproot = tmp_path / "temproot"
    temproot.mkdir()
    (temproot / f"pytest-of-{get_user()}").symlink_to(root, target_is_directory=True)
    env = forked_app.as_the_run_for_the_rest(app_env(root))
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        for name in ("APP_DATA_ROOT", "ENV_FOR_DYNACONF", "PYTEST_APP_SANDBOX"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(temproot))
        pytester.makepyfile("def test_nothing():\n    pass\n")
        result = pytester.run(sys.executable, "-mpytest", "-p", "pytester")
        # pytest itself refuses it (since 7.3), before anything is created in there.
        assert result.ret != 0, result.stdout.str() + result.stderr.str()
        result.stderr.fnmatch_lines(["*pytest-of-* is a symbolic link. Fix this and try again."])
        assert sorted(p.name for p in root.iterdir() if p.name.startswith("pytest-")) == []
    finally:
        server.stop()
