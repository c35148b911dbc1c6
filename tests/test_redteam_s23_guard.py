"""pytest's own clean-up at the end of a run, next to live servers (red team 23).

A run checks, when it starts, that no live process holds a data root in the numbered
directories pytest deletes at its end. But pytest decides which to delete at the end, from
the directories there then: a run started meanwhile (another project's, another terminal's)
makes older ones due, and a server started meanwhile is not seen at all.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from _pytest.tmpdir import get_user
from test_server_e2e import Server, app_env


def _shell_without_the_run(monkeypatch: pytest.MonkeyPatch, temproot: Path) -> None:
    # A shell that knows nothing of that server: its root is in no settings file.
    for name in ("APP_DATA_ROOT", "ENV_FOR_DYNACONF", "PYTEST_APP_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(temproot))


def test_a_live_root_in_a_directory_due_only_at_the_run_s_end_is_kept(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temproot = tmp_path / "temproot"
    numbered = temproot / f"pytest-of-{get_user()}"
    root = numbered / "pytest-2" / "test_failed0" / "data"
    root.parent.mkdir(parents=True)
    for n in (1, 3):
        (numbered / f"pytest-{n}").mkdir()
    server = Server(app_env(root), tmp_path / "server.log").wait_ready()
    try:
        with server.client() as client:
            assert client.post("/sessions", json={"title": "kept"}).status_code == 201
        _shell_without_the_run(monkeypatch, temproot)
        # pytest-2 is the newest but one when the run starts (pytest-4): kept. Another run
        # starts meanwhile and makes pytest-9 (it runs on; its numbered directory is
        # there when this run ends), so at this run's end pytest keeps 7 to 9 only.
        pytester.makepyfile(
            f"""
            import os

            def test_another_run_starts_meanwhile():
                os.mkdir({str(numbered / "pytest-9")!r})
            """
        )
        result = pytester.run(sys.executable, "-mpytest", "-p", "pytester")
        output = result.stdout.str() + result.stderr.str()
        assert result.ret == 0, output
        assert server.process.poll() is None
        assert (root / "sessions").is_dir(), output
        with server.client() as client:
            assert client.get("/sessions").json()["total"] == 1
        result.stdout.fnmatch_lines(
            [
                f"app: kept {numbered / 'pytest-2'}: pytest deletes it at the end of this run "
                "(it keeps only the last 3 of its temporary directories, "
                f"tmp_path_retention_count), but it holds the data root {root}, held by pid "
                f"{server.pid}, kind server*. Stop that process, then delete the directory "
                f"(rm -rf {numbered / 'pytest-2'}), or move its data root out of {numbered}*"
            ]
        )
        # The rest of pytest's clean-up went on.
        assert not (numbered / "pytest-1").exists()
    finally:
        server.stop()


def test_a_directory_due_for_deletion_with_another_root_mounted_in_it_is_kept(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A data root bind-mounted into a failed test's directory, to look at its data next to
    # the test's: no lock file under the directory shows it (a live server's names the
    # root's own path), and pytest's deletion went on into the mount and emptied the root,
    # its lock file and stamp included. Live or not does not matter: the mount does.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("only root makes a bind mount (unshare -m)")
    temproot = tmp_path / "temproot"
    numbered = temproot / f"pytest-of-{get_user()}"
    mount_point = numbered / "pytest-0" / "test_failed0" / "production"
    mount_point.mkdir(parents=True)
    for n in range(1, 4):
        (numbered / f"pytest-{n}").mkdir()
    root = tmp_path / "srv" / "data"
    (root / "sessions" / "0123").mkdir(parents=True)
    (root / "sessions" / "0123" / "session.json").write_text('{"title": "kept"}')
    (root / ".app-profile.json").write_text('{"profile": "production"}')
    _shell_without_the_run(monkeypatch, temproot)
    pytester.makepyfile("def test_nothing(tmp_path):\n    pass\n")
    # The mount lives in the run's own mount namespace: the machine's never sees it.
    script = 'mount --bind "$1" "$2" && exec "$3" -mpytest -p pytester'
    result = pytester.run(
        "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
        str(root), str(mount_point), sys.executable,
    )  # fmt: skip
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, output
    assert (root / "sessions" / "0123" / "session.json").read_text() == '{"title": "kept"}'
    assert (root / ".app-profile.json").is_file()
    result.stdout.fnmatch_lines(
        [
            f"app: kept {numbered / 'pytest-0'}: pytest deletes it at the end of this run "
            "(it keeps only the last 3 of its temporary directories, "
            f"tmp_path_retention_count), but a filesystem is mounted in it at "
            f"{mount_point} (`findmnt {mount_point}` shows what), and the deletion would "
            f"go on into it and delete what it holds. Unmount it (umount {mount_point}), "
            f"then delete the directory (rm -rf {numbered / 'pytest-0'})"
        ]
    )
    assert not (numbered / "pytest-1").exists()
