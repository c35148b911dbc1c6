"""Red team 24 on the guard: what pytest deletes on its own, and who counts as a pytest run.

Each case is real: an ``app serve`` holding its root, real mounts in a mount namespace of
the test's own (root only), pytest runs in subprocesses, and children given a hand-built
environment in a PID namespace with a ``/proc`` of its own (outside this suite's run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import forked_pytest
import pytest
from _pytest.tmpdir import get_user
from project_copy import PROJECT
from side_by_side import INNER_PLUGINS_OFF
from test_redteam_s20_guard import _others_can_run_the_app
from test_redteam_s21_guard import HAND_BUILT_ENV, LOAD_PRODUCTION
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_server_e2e import Server, app_env, run_app

from app.errors import shell_word

A_TEST = "def test_nothing(tmp_path):\n    pass\n"


@contextlib.contextmanager
def serving_one_session(
    root: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A live server on `root` with one session (`_still_serves_its_session` checks it); on
    the testing profile unless `env` (`app_env`'s) says otherwise."""
    server = Server(app_env(root) if env is None else env, log).wait_ready()
    try:
        with server.client() as client:
            assert client.post("/sessions", json={"title": "kept"}).status_code == 201
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A live server on a failed test's data, in the oldest of four numbered directories of
    a pytest temporary root of its own, with one session."""
    base = tmp_path_factory.mktemp("s24")
    numbered = base / "temproot" / f"pytest-of-{get_user()}"
    root = numbered / "pytest-0" / "test_failed0" / "data"
    root.parent.mkdir(parents=True)
    for n in (1, 2, 3):
        (numbered / f"pytest-{n}").mkdir()
    with serving_one_session(root, base / "server.log") as server:
        yield server


def _still_serves_its_session(server: Server) -> None:
    assert server.process.poll() is None, server.output
    with server.client() as client:
        assert client.get("/sessions").json()["total"] == 1
    session = next((server.root / "sessions").iterdir())
    assert (session / "session.json").is_file()


#: What makes pytest print its short summary untruncated (`_pytest.terminal.running_on_ci`):
#: an inner run's output must read the same in CI as on a developer's terminal.
_OUTER_ONLY = frozenset({"PYTEST_ADDOPTS", "CI", "BUILD_NUMBER"})


def _inner_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OUTER_ONLY}
    # Without the autoloaded plugins no inner test uses (a test's own PYTEST_ADDOPTS wins).
    env["PYTEST_ADDOPTS"] = INNER_PLUGINS_OFF
    env.update(extra)
    return env


def test_a_basetemp_with_a_mount_in_it_or_at_it_is_refused(live: Server, tmp_path: Path) -> None:
    # pytest empties an existing --basetemp before the run, and its deletion goes on into a
    # filesystem mounted there. The plugin looked for a held lock file or a stamp under the
    # directory, but production's sessions/ bind-mounted into a scratch directory (to look at
    # it beside a test's data) holds neither: the run emptied the live server's sessions.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("only root makes a bind mount (unshare -m)")
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_nothing.py").write_text(A_TEST)
    holds = tmp_path / "holds"  # an earlier run's sandbox, say, with a mount in it
    (holds / "view").mkdir(parents=True)
    is_one = tmp_path / "is-one"
    is_one.mkdir()
    script = (
        'mount --bind "$1" "$2/view" && mount --bind "$1" "$3" || exit 9\n'
        'for basetemp in "$2" "$3"; do\n'
        '  "$4" -m pytest -p no:cacheprovider --basetemp="$basetemp" "$5"\n'
        '  echo "=== $?"\n'
        "done\n"
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
         str(live.root / "sessions"), str(holds), str(is_one), sys.executable,
         str(project / "test_nothing.py")],
        env=_inner_env(APP_SETTINGS_DIR=str(PROJECT)), cwd=project,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )  # fmt: skip
    _still_serves_its_session(live)
    runs = done.stdout.split("=== ")
    assert len(runs) == 3, done.stdout
    inside, at = runs[0], runs[1]
    assert runs[1].startswith("4") and runs[2].startswith("4"), runs
    point = holds / "view"
    assert (
        f"ERROR: app: refusing --basetemp {holds}: a filesystem is mounted in it at {point} "
        f"(`findmnt {point}` shows what), and pytest empties the --basetemp before the run: "
        "its deletion would go on into the mounted filesystem and delete what it holds. "
        f"Unmount it (umount {point}), or choose a --basetemp with nothing mounted in it"
    ) in inside, inside
    assert (
        f"ERROR: app: refusing --basetemp {is_one}: it is a mount point (`findmnt {is_one}` "
        "shows what)"
    ) in at, at
    assert f"Unmount it (umount {is_one})" in at, at


def test_a_run_whose_plugin_is_inactive_keeps_a_live_root_pytest_would_delete(
    live: Server, tmp_path: Path
) -> None:
    # Another project's run in this environment: the plugin stays inactive (its rootdir is
    # not the settings' project) and changed nothing, so pytest's clean-up of
    # pytest-of-<user>, shared by every project of the user, deleted the numbered directory
    # a developer had started a server in, on a failed test's data: the app's own runs keep it.
    numbered = live.root.parents[2]
    project = tmp_path / "another-project"
    project.mkdir()
    (project / "test_nothing.py").write_text(A_TEST)
    env = _inner_env(PYTEST_DEBUG_TEMPROOT=str(numbered.parent))
    for name in ("APP_SETTINGS_DIR", "PYTEST_APP_SANDBOX", "ENV_FOR_DYNACONF", "APP_DATA_ROOT"):
        env.pop(name, None)
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_nothing.py"],
        env=env, cwd=project,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "app: inactive, nothing neutralised or forced: the settings in " in output, output
    _still_serves_its_session(live)
    old = numbered / "pytest-0"
    assert (
        f"app: kept {old}: pytest deletes it at the end of this run (it keeps only the last 3 "
        f"of its temporary directories, tmp_path_retention_count), but it holds the data root "
        f"{live.root}, held by pid {live.pid}, kind server"
    ) in output, output
    assert not (numbered / "pytest-1").exists(), output  # the rest of the clean-up went on


#: A test that starts a child with a hand-built environment, which loads production.
CHILD_LOADS_PRODUCTION = f"""
import subprocess, sys

def test_child():
    done = subprocess.run(
        [sys.executable, "-c", {LOAD_PRODUCTION!r}],
        env={HAND_BUILT_ENV!r}, capture_output=True, text=True,
    )
    print("CHILD", done.stdout.strip() or done.stderr.strip()[-300:])
"""


@pytest.mark.skipif(not _own_proc_allowed(), reason="needs unshare --pid --mount-proc")
def test_pytest_behind_python_s_r_option_is_a_pytest_run(tmp_path: Path) -> None:
    # `python -Rm pytest -p no:app`: Python's -R (hash randomisation, accepted and ignored
    # since 3.3) run together with -m. Every other short option was read, this one not, so
    # the run's command line was no pytest, and a child of its test, given a hand-built
    # environment, loaded production. In a PID namespace with a /proc of its own, outside
    # this suite's run.
    (tmp_path / "test_child.py").write_text(CHILD_LOADS_PRODUCTION)
    done = subprocess.run(
        [*OWN_PROC, sys.executable, "-Rm", "pytest", "-p", "no:app", "-p", "no:cacheprovider",
         "-s", "-q", "test_child.py"],
        env=HAND_BUILT_ENV, cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    said = [line for line in output.splitlines() if "CHILD" in line]
    assert len(said) == 1, output
    assert said[0].startswith(
        "CHILD REFUSED refused under pytest: loading profile 'production' while pytest runs "
        "without the app's sandbox (an ancestor process (pid 1: "
    ), said[0]
    assert " -Rm pytest -p no:app " in said[0], said[0]


#: Run as a process of its own: the ways to reach a live server's lock from outside it.
#: argv: server pid, lock file. pidfd_open and pidfd_getfd have one number on every arch.
TAKE_OVER = """
import ctypes, fcntl, os, sys, time
pid, lock = int(sys.argv[1]), sys.argv[2]
fd = next(
    int(n) for n in os.listdir(f"/proc/{pid}/fd")
    if os.readlink(f"/proc/{pid}/fd/{n}") == lock
)
reopened = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR)  # a new open file description
try:
    fcntl.flock(reopened, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("REOPENED LOCKED", flush=True)
except BlockingIOError:
    print("REOPENED REFUSED", flush=True)
libc = ctypes.CDLL(None, use_errno=True)
taken = libc.syscall(438, libc.syscall(434, pid, 0), fd, 0)  # the server's own description
print("TAKEN" if taken >= 0 else f"NOT TAKEN {ctypes.get_errno()}", flush=True)
time.sleep(120)
"""


def test_a_lock_kept_by_another_process_after_its_server_died_names_that_process(
    tmp_path: Path,
) -> None:
    # A flock belongs to an open file description: a descriptor of the server's lock that
    # another process holds (taken with pidfd_getfd, as a debugger or a checkpoint tool
    # can; or inherited by a child forked below Python) keeps the lock once the server is
    # gone. /proc/locks and the lock file still named the dead server: `app status` said it
    # was serving at its URL, and every refusal said to `kill` a pid that no longer existed,
    # a lock that looks stale, which one then deletes by hand.
    root = tmp_path / "data"
    server = Server(app_env(root), tmp_path / "server.log").wait_ready()
    lock = root / ".server.lock"
    thief = subprocess.Popen(
        [sys.executable, "-c", TAKE_OVER, str(server.pid), str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert thief.stdout is not None
        # Opened again through /proc/<pid>/fd, it is a description of its own: refused.
        assert thief.stdout.readline().strip() == "REOPENED REFUSED"
        taken = thief.stdout.readline().strip()
        if taken != "TAKEN":
            pytest.skip(f"pidfd_getfd is not allowed here: {taken}")
        # A stopped server still holds its root.
        os.kill(server.pid, signal.SIGSTOP)
        stopped = run_app("data", "purge", env=app_env(root))
        os.kill(server.pid, signal.SIGCONT)
        assert stopped.returncode == 75, stopped.stderr
        assert f"is held by pid {server.pid}, kind server" in stopped.stderr
        os.kill(server.pid, signal.SIGKILL)
        server.wait_exit()
        status = run_app("status", env=app_env(root))
        purge = run_app("data", "purge", env=app_env(root))
    finally:
        thief.kill()
        thief.wait()
        server.stop()
    # The script's newlines in printf's words (`shell_word`), not as they are: a newline
    # in a command line wrote a line of its own (red team 71 on regress, round n).
    script = r"'\012import ctypes, fcntl, os, sys, time\012"
    keeps = f"""pid {thief.pid} ({sys.executable} -c "$(printf -- {script}"""
    assert status.returncode == 0, status.stderr
    assert f"held by: {keeps}" in status.stdout, status.stdout
    taken_by = (
        f", which keeps open the lock taken by pid {server.pid} (kind server, profile "
        "testing, host "
    )
    assert taken_by in status.stdout, status.stdout
    assert (
        f"; pid {server.pid} no longer holds it (it exited, or closed it), and the descriptor "
        "was inherited or passed on"
    ) in status.stdout, status.stdout
    assert "serving:" not in status.stdout, status.stdout
    assert purge.returncode == 75, purge.stderr
    assert f"is held by {keeps}" in purge.stderr, purge.stderr
    assert (
        f"stop it (kill {thief.pid}) or wait for it to finish (`flock -s "  # red team 62
        f"{shell_word(lock)} true` returns once it lets go) and retry"
    ) in purge.stderr
    # Free once that process is gone: nothing was stale, and nothing needed deleting.
    assert run_app("data", "purge", env=app_env(root)).returncode == 0


#: Loaded with `-p` before the app's plugin configures the run: a library that starts
#: multiprocessing's forkserver at import, while the shell's production settings are set.
EARLY_FORKSERVER = """
import multiprocessing
from multiprocessing import forkserver

multiprocessing.get_context("forkserver").set_forkserver_preload(["app.config"])
forkserver.ensure_running()
"""

#: Children of one test that leave the run's environment in different ways, started at once.
CHILDREN = f"""
import multiprocessing, os, subprocess, sys
from concurrent.futures import ProcessPoolExecutor

LOAD = {LOAD_PRODUCTION!r}
ENV = {HAND_BUILT_ENV!r}
#: /proc shows every process to group 65534 (hidepid's gid=), and none of root's to 1234.
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
HIDDEN = ["setpriv", "--reuid=65534", "--regid=1234", "--clear-groups"]


def load_in_worker():
    import contextlib, io
    os.environ.clear()
    os.environ.update(ENV)
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        exec(LOAD)
    return said.getvalue().strip()


def test_children():
    kept = dict(ENV, PYTEST_APP_SANDBOX=os.environ["PYTEST_APP_SANDBOX"])
    cases = {{
        "python -I": ([sys.executable, "-I", "-c", LOAD], ENV),
        "setpriv": ([*AS_NOBODY, sys.executable, "-c", LOAD], ENV),
        "setpriv, hidden, sandbox kept": ([*HIDDEN, sys.executable, "-c", LOAD], kept),
    }}
    started = {{
        name: subprocess.Popen(
            argv, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for name, (argv, env) in cases.items()
    }}
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        print("CASE forkserver:", pool.submit(load_in_worker).result())
    for name, child in started.items():
        print(f"CASE {{name}}:", child.communicate()[0].strip())
"""


def test_children_that_leave_the_run_s_environment_another_way_are_in_the_run(
    tmp_path: Path,
) -> None:
    # Held: a forkserver started before the plugin (by a `-p` plugin, with the shell's
    # production settings), `python -I` (ignores PYTHON* variables), a child as another
    # user (setpriv), each given a hand-built environment. Not held: the same child as
    # another user where /proc hides other users' processes from it (hidepid): it cannot
    # see its ancestors. The run now says so in its header, with what keeps such a child in
    # the run (its PYTEST_APP_SANDBOX), which is then refused.
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("only root starts a child as another user")
    if (why := _others_can_run_the_app()) is not None:  # a clone under `mktemp -d` (0700)
        pytest.skip(f"the children switch to user 65534, who cannot import the app: {why}")
    (tmp_path / "early_forkserver.py").write_text(EARLY_FORKSERVER)
    (tmp_path / "test_children.py").write_text(CHILDREN)
    tmp_path.chmod(0o755)
    script = (
        "mount -t proc -o hidepid=invisible,gid=65534 proc /proc || exit 9\n"
        'exec "$1" -m pytest -p early_forkserver -p no:cacheprovider -s test_children.py\n'
    )
    shell = _inner_env(
        APP_SETTINGS_DIR=str(PROJECT), ENV_FOR_DYNACONF="production", APP_DATA_ROOT="/srv/x"
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", sys.executable],
        env=shell, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        check=False,
    )  # fmt: skip
    output = done.stdout
    said = dict(
        line.partition("CASE ")[2].split(": ", 1) for line in output.splitlines() if "CASE " in line
    )
    assert list(said) == ["forkserver", "python -I", "setpriv", "setpriv, hidden, sandbox kept"]
    refused = "REFUSED refused under pytest (sandbox: "
    in_run = "loading profile 'production'; tests run on the 'testing' profile"
    for name, outcome in said.items():
        assert outcome.startswith(refused), (name, outcome)
        assert in_run in outcome, (name, outcome)
        how = "the environment (PYTEST_APP_SANDBOX)" if "hidden" in name else "the process tree"
        assert f"(this process belongs to the test run through {how}" in outcome, outcome
    assert (
        "app: /proc is mounted with hidepid=invisible: a process a test starts as another user "
        "(sudo -u, runuser, setpriv) cannot see this run's processes, so given a hand-built "
        "environment (sudo resets it) it is outside the run; keep PYTEST_APP_SANDBOX in its "
        "environment (sudo --preserve-env=PYTEST_APP_SANDBOX), or let that user see them "
        "(mount /proc with gid=)"
    ) in output, output
