"""pytest's own clean-up at the end of a run, next to live servers (red team 23).

A run checks, when it starts, that no live process holds a data root in the numbered
directories pytest deletes at its end. But pytest decides which to delete at the end, from
the directories there then: a run started meanwhile (another project's, another terminal's)
makes older ones due, and a server started meanwhile is not seen at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import forked_app
import pytest
from _pytest.tmpdir import get_user
from project_copy import copy_project_settings
from test_redteam_s21_guard import HAND_BUILT_ENV, LOAD_PRODUCTION
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_server_e2e import Server, app_env

from app import sandbox


def _shell_without_the_run(monkeypatch: pytest.MonkeyPatch, temproot: Path) -> None:
    # A shell that knows nothing of that server: its root is in no settings file.
    for name in ("APP_DATA_ROOT", "ENV_FOR_DYNACONF", "PYTEST_APP_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(temproot))


def numbered_with_a_failed_test_s_root(temproot: Path) -> tuple[Path, Path]:
    """pytest's numbered directories 1 to 3 in `temproot`'s ``pytest-of-<user>``, and the
    data root of a failed test in pytest-2 (not made), where a server is to be started."""
    numbered = temproot / f"pytest-of-{get_user()}"
    root = numbered / "pytest-2" / "test_failed0" / "data"
    root.parent.mkdir(parents=True)
    for n in (1, 3):
        (numbered / f"pytest-{n}").mkdir()
    return numbered, root


def test_a_live_root_in_a_directory_due_only_at_the_run_s_end_is_kept(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temproot = tmp_path / "temproot"
    numbered, root = numbered_with_a_failed_test_s_root(temproot)
    # The server needs nothing of what pytester changed (its HOME, its colours): forked.
    env = forked_app.as_the_run_for_the_rest(app_env(root))
    server = Server(env, tmp_path / "server.log").wait_ready()
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
        kept = (
            f"app: kept {numbered / 'pytest-2'}: pytest deletes it at the end of this run "
            "(it keeps only the last 3 of its temporary directories, "
            f"tmp_path_retention_count), but it holds the data root {root}, held by pid "
            f"{server.pid}, kind server*. Stop that process, then delete the directory "
            f"(rm -rf {numbered / 'pytest-2'}), or move its data root out of {numbered}*"
        )
        result.stdout.fnmatch_lines([kept])
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
    # pytest's mark of a directory in use, planted as a dangling link into the root: making
    # the mark fresh (touch) followed it and made that file in production's sessions/.
    planted = root / "sessions" / "planted"
    (numbered / "pytest-0" / ".lock").symlink_to(planted)
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
    kept = (
        f"app: kept {numbered / 'pytest-0'}: pytest deletes it at the end of this run "
        "(it keeps only the last 3 of its temporary directories, "
        "tmp_path_retention_count), but a filesystem is mounted in it at "
        f"{mount_point} (`findmnt {mount_point}` shows what), and the deletion would "
        f"go on into it and delete what it holds. Unmount it (umount {mount_point}), "
        f"then delete the directory (rm -rf {numbered / 'pytest-0'})"
    )
    result.stdout.fnmatch_lines([kept])
    assert not (numbered / "pytest-1").exists()
    assert not planted.exists() and not planted.is_symlink(), output
    mark = numbered / "pytest-0" / ".lock"
    assert mark.is_file() and not mark.is_symlink()  # a fresh mark of its own: kept


#: Run outside any pytest run (a PID namespace with a /proc of its own): production's root
#: made by the app, then a unittest run whose test starts the incident's maintenance command
#: with a hand-built environment, and loads the shell's profile itself.
MAKE_PRODUCTION = (
    "from app.config import load\n"
    "from app.storage import open_storage\n"
    "with open_storage(load(serving=False), writer=True, wanted='fill it') as store:\n"
    "    store.create_session('a review', {})\n"
)
INCIDENT_TESTCASE = """
import os, subprocess, sys, unittest
from app.config import load
from app.errors import SandboxViolationError

class TestCleanUp(unittest.TestCase):
    def test_starts_clean(self):
        env = {key: os.environ[key] for key in ("PATH", "APP_SETTINGS_DIR", "ENV_FOR_DYNACONF")}
        done = subprocess.run(
            [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
            env=env, capture_output=True, text=True,
        )
        print("CHILD", done.returncode, (done.stderr.strip().splitlines() or [""])[-1])
        try:
            print("LOADED", load(serving=False).data_root)
        except SandboxViolationError as refused:
            print("REFUSED", refused)
"""


def test_a_unittest_run_in_a_production_shell_is_refused_production(tmp_path: Path) -> None:
    # unittest's runner has no plugin of the app's: a TestCase run by `python -m unittest`
    # in a shell that exported ENV_FOR_DYNACONF=production loaded it, and its child (a
    # hand-built environment, as the incident's clean-up) purged production's sessions,
    # a stopped server's root, which no lock defends.
    if not _own_proc_allowed():
        pytest.skip("this machine does not let this user make a PID namespace")
    settings = copy_project_settings(tmp_path / "settings")
    production = settings / "data" / "production"
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_clean.py").write_text(INCIDENT_TESTCASE)
    env = {
        "PATH": os.environ["PATH"],
        "APP_SETTINGS_DIR": str(settings),
        "ENV_FOR_DYNACONF": "production",
    }
    script = '"$1" -c "$2" && cd "$3" && exec "$1" -m unittest discover -s tests'
    done = subprocess.run(
        [*OWN_PROC, "sh", "-c", script, "sh", sys.executable, MAKE_PRODUCTION, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    said = done.stdout.splitlines()
    assert len(said) == 2, done.stdout + done.stderr
    assert said[0].startswith("CHILD 78 "), said
    ancestor = (
        "refused under unittest: loading profile 'production' while unittest runs without the "
        "app's sandbox (an ancestor process runs tests with unittest (pid "
    )
    assert ancestor in said[0], said[0]
    assert "-m unittest discover -s tests)). Run the tests with pytest instead (" in said[0]
    assert said[1] == (
        "REFUSED refused under unittest: loading profile 'production' while unittest runs tests "
        "in this process, without the app's sandbox (its command line is unittest's, or a "
        "TestCase runs on this thread). Run the tests with pytest instead (`python -m pytest "
        "<the same test files>` runs unittest's TestCases too, in a sandbox of the app's "
        "plugin; to test profile 'production' there, mark the test "
        "@pytest.mark.app_profile('production')), or load the testing profile "
        "(ENV_FOR_DYNACONF=testing)"
    ), said[1]
    assert len(list((production / "sessions").iterdir())) == 1
    assert not any((production / ".trash").iterdir())


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "unittest"],
        ["-munittest", "discover", "-s", "tests"],
        ["-Im", "unittest", "test_x"],
        ["-c", "import unittest; unittest.main(module='test_x')"],
        ["-c", "from unittest import main; main()"],
    ],
)
def test_a_command_line_that_runs_unittest_is_taken_for_a_test_run(argv: list[str]) -> None:
    assert sandbox._looks_like_unittest([sys.executable, *argv])


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "import unittest.mock"],
        ["script.py", "-m", "unittest"],
        ["-m", "app", "unittest"],
        ["-X", "dev", "-m", "app"],
    ],
)
def test_a_command_line_that_only_names_unittest_is_not_taken_for_a_test_run(
    argv: list[str],
) -> None:
    assert not sandbox._looks_like_unittest([sys.executable, *argv])


#: A run (registered as the plugin does) whose test starts a supervisor with a hand-built
#: environment, which starts a worker; the run ends once the worker is up. The supervisor
#: exits once the run has ended (its pipe closes); the worker, once the supervisor has, then
#: asks for production and writes what it got to a FIFO.
SUPERVISOR_AFTER_THE_RUN = """
import json, os, subprocess, sys
from pathlib import Path
from app import sandbox
sandbox.register(Path(sys.argv[1]), ())
run_ended, _run_running = os.pipe()
up, worker_up = os.pipe()
env = {**json.loads(sys.argv[2]), "LOAD": sys.argv[3], "FIFO": sys.argv[4]}
worker = '''
import os, sys
os.write(int(os.environ["UP"]), b"up")
os.read(int(os.environ["SUPERVISOR"]), 1)
with open(os.environ["FIFO"], "w") as sys.stdout:
    try:
        exec(os.environ["LOAD"])
    except BaseException as error:
        print("CRASH", error)
'''
supervisor = f'''
import os, subprocess, sys
ended, _running = os.pipe()
env = dict(os.environ, SUPERVISOR=str(ended))
up = int(os.environ["UP"])
subprocess.Popen([sys.executable, "-c", {worker!r}], env=env, pass_fds=[ended, up])
os.close(ended)
os.close(up)
os.read(int(os.environ["RUN"]), 1)
'''
env.update(RUN=str(run_ended), UP=str(worker_up))
subprocess.Popen([sys.executable, "-c", supervisor], env=env, pass_fds=[run_ended, worker_up])
os.close(worker_up)
os.read(up, 2)
"""


def test_a_worker_that_outlives_its_supervisor_after_the_run_still_belongs_to_the_run(
    tmp_path: Path,
) -> None:
    # The run hands its entry on, as it ends, to its children still running, but not to
    # theirs: a supervisor a test started (a process manager, `sh -c 'worker & ...'`) kept
    # its worker in the run only while it lived. Once it exited, the worker was re-parented
    # to init, outside any run, and with a hand-built environment loaded production. In a
    # PID namespace with a /proc of its own, so that init there, not this run (a subreaper),
    # adopts it.
    if not _own_proc_allowed():
        pytest.skip("this machine does not let this user make a PID namespace")
    inner_sandbox = tmp_path / "inner-sandbox"
    inner_sandbox.mkdir()
    answer = tmp_path / "answer"
    os.mkfifo(answer)
    args = [str(inner_sandbox), json.dumps(HAND_BUILT_ENV), LOAD_PRODUCTION, str(answer)]
    # pid 1 of the namespace runs the run, then reads the worker's answer.
    script = 'py=$1; shift; "$py" -c "$@" && exec cat "$5"'
    done = subprocess.run(
        [*OWN_PROC, "sh", "-c", script, "sh", sys.executable, SUPERVISOR_AFTER_THE_RUN, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    printed = done.stdout + done.stderr
    assert printed.startswith("REFUSED"), printed
    assert f"(sandbox: {inner_sandbox})" in printed, printed
    assert re.search(
        r"this process, started by the test run of pytest pid \d+, which has ended, registered "
        rf"in {re.escape(str(sandbox.RUNS_DIR.parent))}/app-pytest-runs-\d+\)",
        printed,
    ), printed
    assert re.search(
        r"This process outlived the test run that started it \(pytest pid \d+\) and stays "
        r"under its rules while it runs: if no test needs it, stop it \(kill \d+\)$",
        printed.rstrip(),
    ), printed
