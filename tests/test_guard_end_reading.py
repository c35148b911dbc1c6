"""The check of pytest's older directories as a run ends reads who holds what then.

The plugin reads ``/proc/locks`` ahead, on a thread (`app.testing.guard.read_flocks_ahead`),
to overlap the kernel's wait with the run's own work: once as it is imported, for the
start's check, and once as the tests end, for the end's. The reading for the start must
never stand in for the end's: a server started on an older directory's data while the
tests ran would go unseen, and pytest's clean-up would delete the root under it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from _pytest.tmpdir import get_user
from test_redteam_s23_guard import _shell_without_the_run
from test_server_e2e import Server, app_env


def test_a_server_started_while_the_tests_run_keeps_its_directory_at_the_end(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temproot = tmp_path / "temproot"
    numbered = temproot / f"pytest-of-{get_user()}"
    root = numbered / "pytest-1" / "test_failed0" / "data"
    root.parent.mkdir(parents=True)
    (numbered / "pytest-2").mkdir()
    ready, go = tmp_path / "ready", tmp_path / "go"
    _shell_without_the_run(monkeypatch, temproot)
    # pytest-1 is the oldest of the last three as the run (pytest-3) starts: nothing is due,
    # and the start's check reads nothing. Its one test makes pytest-9 (another run started
    # meanwhile), so pytest-1 is due as the run ends; it says it has started, and waits
    # until the server below holds the root in pytest-1.
    pytester.makepyfile(
        f"""
        import pathlib
        import time

        def test_waits_for_a_server_to_start():
            pathlib.Path({str(numbered / "pytest-9")!r}).mkdir()
            pathlib.Path({str(ready)!r}).touch()
            while not pathlib.Path({str(go)!r}).exists():
                time.sleep(0.01)
        """
    )
    run = pytester.popen(
        [sys.executable, "-mpytest", "-p", "pytester"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        while not ready.exists():
            assert run.poll() is None, run.communicate()[0].decode()
            time.sleep(0.01)
        server = Server(app_env(root), tmp_path / "server.log").wait_ready()
    finally:
        go.touch()
    try:
        output = run.communicate()[0].decode()
        assert run.returncode == 0, output
        assert server.process.poll() is None
        assert (root / "sessions").is_dir(), output
        assert (
            f"app: kept {numbered / 'pytest-1'}: pytest deletes it at the end of this run"
            in " ".join(output.split())
        ), output
        assert f"held by pid {server.pid}" in output, output
    finally:
        server.stop()


def test_the_start_s_reading_ahead_is_made_only_where_its_check_is_likely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reading nobody uses holds the kernel's file-lock list for writing while it waits:
    # every flock on the machine waits with it. An xdist worker or a run with --basetemp has
    # no check of pytest's older directories; a fresh machine has none due.
    from app.testing import guard

    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(tmp_path))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.setattr(sys, "argv", ["pytest", "tests"])
    numbered = tmp_path / f"pytest-of-{get_user()}"
    assert not guard.flocks_due_at_start()  # no directory at all
    for n in range(2):
        (numbered / f"pytest-{n}").mkdir(parents=True)
    assert not guard.flocks_due_at_start()  # the run's own makes three: none due
    (numbered / "pytest-2").mkdir()
    assert guard.flocks_due_at_start()
    monkeypatch.setattr(sys, "argv", ["pytest", "--basetemp=/tmp/elsewhere", "tests"])
    assert not guard.flocks_due_at_start()
    monkeypatch.setattr(sys, "argv", ["pytest", "tests"])
    monkeypatch.setenv("PYTEST_ADDOPTS", "--basetemp /tmp/elsewhere")
    assert not guard.flocks_due_at_start()
    monkeypatch.delenv("PYTEST_ADDOPTS")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    assert not guard.flocks_due_at_start()
