"""Red team 25 on the guard: a run whose plugin stays inactive, and a child that leaves the
run's tree without leaving its process group.

Each case is real: an ``app serve`` holding its root, pytest runs in subprocesses, and
children given a hand-built environment in a PID namespace with a ``/proc`` of its own
(outside this suite's run), made by the ``clone`` system call itself.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from project_copy import PROJECT
from test_redteam_s21_guard import HAND_BUILT_ENV, LOAD_PRODUCTION
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_redteam_s24_guard import (
    A_TEST,
    _inner_env,
    _still_serves_its_session,
    serving_one_session,
)
from test_server_e2e import Server, app_env

from app.config import load
from app.storage import open_storage


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A live server with one session."""
    root = tmp_path_factory.mktemp("s25") / "data"
    with serving_one_session(root, root.parent / "server.log") as server:
        yield server


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


#: The `clone` system call's number (its first argument is the flags on both).
_CLONE = {"x86_64": 56, "aarch64": 220}.get(platform.machine())

#: Two tests that start a child with a hand-built environment that left the run's tree as
#: the child reads it: the first makes it the run's sibling, clone(CLONE_PARENT) making it
#: the child of the pytest process's parent; the second acts as another user for a moment
#: (os.seteuid, as a test of a service's permissions does) and starts it meanwhile (the
#: child takes root back to start the app, which only root can run here: its interpreter
#: lies under /root).
CHILDREN = f"""
import ctypes, os, sys

LOAD = {LOAD_PRODUCTION!r}
ENV = {HAND_BUILT_ENV!r}


def start(write):
    try:
        os.dup2(write, 1)
        os.execve(sys.executable, [sys.executable, "-c", LOAD], ENV)
    finally:
        os._exit(127)  # never back into pytest's code


def said(read, write):
    os.close(write)
    out = b""
    while chunk := os.read(read, 4096):
        out += chunk
    return out.decode().strip()


def test_a_sibling():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    read, write = os.pipe()
    pid = libc.syscall({_CLONE}, 0x8000 | 17, 0, 0, 0, 0)  # CLONE_PARENT | SIGCHLD
    if pid == 0:
        start(write)
    assert pid > 0
    print("CASE sibling:", said(read, write))


def test_as_another_user():
    read, write = os.pipe()
    try:
        os.seteuid(65534)
    except OSError as error:  # not root, or a user namespace that maps root alone
        print("CASE switched: SKIPPED", error)
        return
    try:
        pid = os.fork()
        if pid == 0:
            os.seteuid(0)
            start(write)
        print("CASE switched:", said(read, write))
        os.waitpid(pid, 0)
    finally:
        os.seteuid(0)
"""

#: The runner: a script that calls pytest.main(), whose command line shows no pytest (an
#: ancestor whose does is taken for a pytest without the plugin: its children are refused
#: other profiles whatever the run).
RUN_TESTS = (
    "import sys\n"
    "import pytest\n"
    "sys.exit(pytest.main(['-p', 'no:cacheprovider', '-s', '-q', *sys.argv[1:]]))\n"
)

#: Starts the command in `job.json` as a job of its own, as an interactive shell does.
AS_A_JOB = """
import json, subprocess, sys
from pathlib import Path

command = json.loads((Path(sys.argv[0]).parent / "job.json").read_text())
sys.exit(subprocess.run(command, process_group=0).returncode)
"""


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The output of the tests in CHILDREN, run by a runner script once as a terminal's
    job (pytest leads its process group) and once under `sh -c` (it leads nothing), in a
    PID namespace with a /proc of its own (as root: no user namespace, so that a test can
    switch its effective user)."""
    if _CLONE is None or not _own_proc_allowed():
        pytest.skip("needs the clone system call's number and unshare --pid --mount-proc")
    where = tmp_path_factory.mktemp("s25children")
    (where / "test_children.py").write_text(CHILDREN)
    (where / "run_tests.py").write_text(RUN_TESTS)
    (where / "as_a_job.py").write_text(AS_A_JOB)
    job = [sys.executable, str(where / "run_tests.py"), f"--basetemp={where / 'bt1'}"]
    (where / "job.json").write_text(json.dumps([*job, str(where / "test_children.py")]))
    script = (
        '"$1" "$2/as_a_job.py"\n'
        'echo "=== $?"\n'
        '"$1" "$2/run_tests.py" --basetemp="$2/bt2" "$2/test_children.py"\n'
        'echo "=== $?"\n'
    )
    own_proc = ("unshare", "--pid", "--fork", "--mount-proc") if os.geteuid() == 0 else OWN_PROC
    done = subprocess.run(
        [*own_proc, "sh", "-c", script, "sh", sys.executable, str(where)],
        env=_inner_env(APP_SETTINGS_DIR=str(PROJECT)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )  # fmt: skip
    runs = done.stdout.split("=== ")
    assert len(runs) == 3, done.stdout
    assert runs[1].startswith("0") and runs[2].startswith("0"), done.stdout
    return runs[0], runs[1]


def test_a_child_cloned_as_the_runs_sibling_stays_in_the_run_it_leads(
    children: tuple[str, str],
) -> None:
    # clone(CLONE_PARENT) needs no privilege: the child's parent is the pytest process's
    # parent, outside the run's tree, and with a hand-built environment it loaded
    # production. It keeps the run's session and process group, which pytest leads as a
    # terminal's job (or under `setsid`): a run found there now holds. Not held: a pytest
    # that leads neither (started by `sh -c`, a CI step, tox), shown by the second run.
    as_a_job, under_sh = children
    assert "CASE sibling: REFUSED refused under pytest" in as_a_job, as_a_job
    assert (
        "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the process tree (pytest pid "
    ) in as_a_job, as_a_job
    assert (
        "which leads this process's process group though it is not its ancestor: a clone "
        "with CLONE_PARENT, made the child of its caller's parent, or another command of the "
        "run's pipeline"
    ) in as_a_job, as_a_job
    assert "CASE sibling: LOADED " in under_sh, under_sh


def test_a_child_started_while_its_test_acts_as_another_user_stays_in_the_run(
    children: tuple[str, str],
) -> None:
    # A run names its registry by its real user, and a child looked for its ancestors'
    # entries under the user that owns each one's /proc entry: the effective user. A test
    # run as root that switched its effective user for a moment (os.seteuid) had every
    # child it started meanwhile outside the run; given a hand-built environment, under a
    # runner script (whose command line shows no pytest) it loaded production.
    for run in children:
        if "CASE switched: SKIPPED" in run:
            pytest.skip("only root switches its effective user (outside a user namespace)")
        assert "CASE switched: REFUSED refused under pytest (sandbox: " in run, run
        assert (
            "loading profile 'production'; tests run on the 'testing' profile (this process "
            "belongs to the test run through the process tree (an ancestor process, pytest "
            "pid "
        ) in run.partition("CASE switched:")[2], run


#: A test with its own home in the sandbox, in production's root, that opts into
#: production and names its root `~/..`, which the guard read as $HOME/.. (in the sandbox).
TILDE = """
import dataclasses, os
from pathlib import Path

import pytest
from app.config import load
from app.errors import SandboxViolationError
from app.storage import open_storage


@pytest.mark.app_profile("production")
def test_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(os.environ["PRODUCTION_ROOT"])
    config = dataclasses.replace(load("production", serving=False), data_root=Path("~/.."))
    try:
        with open_storage(config, writer=True, wanted="clean up") as store:
            print("CASE home: PURGED", os.path.abspath(config.data_root), len(store.purge()))
    except SandboxViolationError as refused:
        print("CASE home: REFUSED", refused)
"""


@pytest.mark.app_profile("production")
def test_a_tilde_is_checked_as_pytest_and_the_app_open_it_never_expanded(
    live: Server, tmp_path: Path
) -> None:
    # pytest and the app take a path with `~` as it is (relative, `~` a directory name),
    # but the guard expanded it with $HOME: `--basetemp='~/../sessions'` (an ini file's
    # addopts, a quoted word: no shell expands it) was checked as $HOME/../sessions, and
    # pytest emptied ./sessions, a live server's from its root; and a test with $HOME in
    # its sandbox opened `~/..` from production's root: production itself, and purged it.
    production = tmp_path / "production"  # a stopped server's, with one session
    env = app_env(production, profile="production")
    with open_storage(load(environ=env, serving=False), writer=True) as store:
        store.create_session("a review", {})
    (tmp_path / "test_home.py").write_text(TILDE)
    (tmp_path / "home").mkdir()
    script = (
        'cd "$3" && "$1" -m pytest -p no:cacheprovider "--basetemp=~/../sessions" '
        '"$2/test_home.py"\n'
        'echo "=== $?"\n'
        'cd "$2" && "$1" -m pytest -p no:cacheprovider -s -q --basetemp="$2/bt" test_home.py\n'
        'echo "=== $?"\n'
    )
    env = _inner_env(
        APP_SETTINGS_DIR=str(PROJECT), HOME=str(tmp_path / "home"),
        PRODUCTION_ROOT=str(production),
    )  # fmt: skip
    done = subprocess.run(
        ["sh", "-c", script, "sh", sys.executable, str(tmp_path), str(live.root)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )  # fmt: skip
    _still_serves_its_session(live)
    assert len(list((production / "sessions").iterdir())) == 1
    assert not (production / "~").exists()
    runs = done.stdout.split("=== ")
    assert len(runs) == 3, done.stdout
    basetemp, opened = runs[0], runs[1]
    assert runs[1].startswith("4"), basetemp
    sessions = live.root / "sessions"
    assert (
        f"ERROR: app: refusing --basetemp ~/../sessions: pytest empties it in {sessions}, "
        f"which lies inside the data root {live.root} (held by pid {live.pid}, kind server"
    ) in basetemp, basetemp
    assert runs[2].startswith("0"), opened
    assert (
        f"CASE home: REFUSED refused under pytest (sandbox: {tmp_path / 'bt'}): open data root "
        f"{production}, which lies outside the test sandbox"
    ) in opened, opened
