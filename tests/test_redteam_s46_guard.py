"""Red team 46 on the guard (branch rt-guard29): how else a child reaches production's settings
alone, outside every run it could find.

What broke (but for the fourth, a process given production's settings alone that purged a
stopped production root, outside this suite's run: a PID namespace of its own):

- a pytest without the app's plugin (``-p no:app``, autoload off, or the plugin inactive in
  another project's run) was found by its children through its command line only. A test that
  rewrites its process's command line, as ``setproctitle`` does (a worker's code under test
  names its process), took every child it started afterwards out of it. Such a pytest now
  says in the registry that it runs without the plugin, as one under a runner script did;
- a test that moved the run's own process into a mount namespace of its own with a /tmp of
  its own (``unshare(CLONE_NEWNS)``, as code that isolates itself does, then a tmpfs on
  ``/tmp``) hid the run's registry from every process it then started, and no process of
  theirs was left in another namespace to read it through. An ancestor's entry is now also
  read in the /tmp its parent sees. With a tmpfs over ``/proc`` instead, the run's children
  walked no ancestor at all, under ``python -m pytest`` with the plugin active: a ``/proc``
  that something hides (a mount over it, without ``/proc/self``) now refuses them any
  profile but ``testing``;
- a daemon a test left whose script only looks like a pytest (a dev server's, with a
  self-test branch that calls ``pytest.main``) was skipped by the hand-over at the test's
  end, read as a pytest of its own by its command line; once a later test had killed the run,
  it purged production in its own process. Every pytest of the environment now says what it
  is in the registry, and the hand-over reads that alone;
- a test run as a user who may not look into another profile's root (a service's, kept by
  its own user in mode 0700, as the app makes it, named by the settings of the checkout the
  tests run from) stopped at once with a bare ``PermissionError`` from the probe of its
  lock. The run now goes on, and its header says that root's holder cannot be seen; strict
  mode refuses, naming why;
- a daemon a test left as another user (``sudo -u``, ``setpriv``) in a run as root: the run
  hands its entry on to what outlives it, in its own registry, and the daemon looked for its
  entry under its own user alone. Once the run had ended (a plain end), it purged
  production. A process now looks in root's registry too;
- a registry a test made writable by others (``chmod 777``), or replaced by a link to itself
  moved aside, counts for nothing (another user could have written it), and the check after
  the test puts it right too late for the children that test starts. Such a registry, where
  it holds an ancestor's entry, now refuses them any profile but ``testing``, as an
  unreadable one does (red team 41).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from side_by_side import users_registry
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_redteam_s24_guard import _inner_env
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s39_guard import NOBODY
from test_redteam_s41_guard import _left_behind_a_run
from test_redteam_s44_guard import _seen
from test_server_e2e import snapshot

#: How each inner test purges production: from a child given its settings alone (`$S`).
PURGE = """
import ctypes, os, subprocess, sys
from app import sandbox

def purge():
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": os.environ["S"]}
    done = subprocess.run(
        [sys.executable, "-m", "app", "--profile", "production", "data", "purge",
         "--yes-i-mean-it"], env=env, capture_output=True, text=True)
    print("CHILD", done.returncode, done.stdout + done.stderr)
"""

#: Writes a title over its process's arguments, as setproctitle does.
RETITLE = """
def retitle():
    raw = open("/proc/self/stat", "rb").read()
    fields = raw[raw.rfind(b")") + 2 :].split()
    start, end = int(fields[45]), int(fields[46])
    fd = os.open("/proc/self/mem", os.O_RDWR)
    os.pwrite(fd, b"celery worker".ljust(end - start, b"\\0"), start)
    os.close(fd)
"""

#: A test that writes a title over its process's arguments, then purges production.
RETITLED = (
    PURGE
    + RETITLE
    + """
def test_retitled():
    retitle()
    purge()
"""
)


def _a_runner_script(directory: Path) -> None:
    """``ci.py`` in `directory`, which runs pytest through a module of its own (`runner.py`):
    no command line shows pytest."""
    (directory / "runner.py").write_text(
        "import sys, pytest\nsys.exit(pytest.main(sys.argv[1:]))\n"
    )
    (directory / "ci.py").write_text("import runner\n")


def _outside_any_run(production: Path, argv: list[str], **run: object) -> str:
    """`argv` in a PID namespace of its own (out of this suite's run), its output on one
    line; production's root must be unchanged after it."""
    if not _own_proc_allowed():
        pytest.skip("needs unshare of a user and a PID namespace")
    before = snapshot(production)
    done = subprocess.run(  # type: ignore[call-overload]
        [*OWN_PROC, *argv], capture_output=True, text=True, check=False, **run
    )
    output = " ".join((done.stdout + done.stderr).split())
    assert snapshot(production) == before, output
    return output


@pytest.mark.parametrize("without", ["-p no:app", "inactive"])
def test_a_pytest_without_the_plugin_that_a_test_retitled_keeps_its_children(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    without: str,
) -> None:
    settings, production = stopped
    (tmp_path / "test_retitled.py").write_text(RETITLED)
    (tmp_path / "tmp").mkdir()
    env = _inner_env(S=str(settings), TMPDIR=str(tmp_path / "tmp"))
    off = ["-p", "no:app"]
    if without == "-p no:app":
        env["APP_SETTINGS_DIR"] = str(settings)
    else:
        env.pop("APP_SETTINGS_DIR", None)  # another project's run: no settings of the app's
        off = []
    output = _outside_any_run(
        production,
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", *off,
         "test_retitled.py"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert "1 passed" in output, output
    assert "CHILD 78 error: refused under pytest: loading profile 'production' while pytest " in (
        output
    )
    assert re.search(
        r"runs without the app's sandbox \(an ancestor process \(pid \d+: 'celery worker', its "
        r"command line rewritten since \(a process title\); it started as \S+/pytest/"
        r"__main__\.py -p no:cacheprovider -q -s (-p no:app )?test_retitled\.py\) runs pytest "
        r"without the app's plugin\)",
        output,
    ), output


#: Tests that make the registry untrustworthy, each then purging production from a child given
#: its settings alone (`$S`); run by a runner that calls pytest through a module of its own, so
#: that no command line shows pytest.
UNTRUSTED = (
    PURGE
    + """
def close_kept():
    # What the run keeps open of the registry (red team 47), closed as code that daemonises
    # in the test's process does: the refusal below is what is left then.
    for fd in sandbox._KEPT_OPEN.values():
        os.close(fd)

def test_writable_by_others():
    close_kept()
    os.chmod(sandbox.RUNS_DIR, 0o777)
    purge()

def test_a_link_to_it_moved_aside():
    close_kept()
    sandbox.RUNS_DIR.rename("/tmp/moved")
    sandbox.RUNS_DIR.symlink_to("/tmp/moved")
    purge()
"""
)

#: In the namespace: the real /tmp at /mnt, a /tmp of its own (the registry private) that
#: shows the checkout and its interpreter again where they lie in /tmp (`$KEEP`:
#: `checkout_in_tmp`), then the runner in `$1` (the test's directory, as /mnt shows it).
#: The binds are recursive: in the namespace of a user namespace of its own (`OWN_PROC`) a
#: plain bind of /tmp fails with EINVAL while another worker's test has a mount below /tmp
#: (a locked mount; tests/test_redteam_s47_guard.py's `OWN_TMP` says more).
PRIVATE_TMP = """
mount --rbind /tmp /mnt && mount -t tmpfs none /tmp || exit 9
for keep in $KEEP; do mkdir -p "$keep" && mount --rbind "/mnt${keep#/tmp}" "$keep" || exit 9; done
cd "$1" && "$2" ci.py -p no:cacheprovider -q -s test_untrusted.py
"""


def checkout_in_tmp() -> str:
    """The directories of /tmp that hold this checkout and its interpreter, if any (CI clones
    into `mktemp -d`): a /tmp of a test's own binds them back in, or nothing can start."""
    wanted = (Path(__file__).resolve().parents[1], Path(sys.prefix).resolve())
    return " ".join(dict.fromkeys(f"/tmp/{p.parts[2]}" for p in wanted if p.is_relative_to("/tmp")))


def test_a_registry_a_test_made_untrustworthy_refuses_its_children_other_profiles(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    (tmp_path / "test_untrusted.py").write_text(UNTRUSTED)
    _a_runner_script(tmp_path)
    output = _outside_any_run(
        production, ["sh", "-c", PRIVATE_TMP, "sh", _seen(tmp_path), sys.executable],
        env=_inner_env(
            S=_seen(settings), APP_SETTINGS_DIR=_seen(settings), TMPDIR="/tmp",
            KEEP=checkout_in_tmp(),
        ),
    )  # fmt: skip
    registry = f"/tmp/app-pytest-runs-{os.getuid()}"
    for why in ("others may write it (drwxrwxrwx)", "a symbolic link to /tmp/moved is at its name"):
        assert re.search(
            r"CHILD 78 error: refused under pytest: loading profile 'production' while a test "
            rf"run may be above this process \(ancestor pid \d+: \S+ ci\.py -p no:cacheprovider "
            rf"-q -s test_untrusted\.py\), whose entry in the registry of test runs {registry} "
            rf"counts for nothing: {re.escape(why)}, so another user could have written it\. "
            rf"Make {registry} a directory that only its user may write again \(chmod 755 "
            rf"{registry}; a link at its name removed\)",
            output,
        ), output
    # The check after each test still fails the test that did it, and puts it right.
    assert "2 passed, 2 errors" in output, output


#: Tests that move the run's own process into a mount namespace of its own (each keeps the
#: one before), then purge production from a child given its settings alone (`$S`): one with
#: a tmpfs on /tmp (the real one at /mnt, and the run's own directory and the checkout with
#: its interpreter where they lie in /tmp, `$TOP`, bound back in place: CI clones into
#: `mktemp -d`), one with a tmpfs over /proc (taken off again at its end). The binds are
#: recursive, as `PRIVATE_TMP`'s: the run lives in a user namespace of its own.
OWN_NAMESPACE = (
    PURGE
    + """
def mount(*mounts):
    assert ctypes.CDLL(None, use_errno=True).unshare(0x00020000) == 0  # CLONE_NEWNS
    for argv in (["--make-rprivate", "/"], *mounts):
        subprocess.run(["mount", *argv], check=True)

def test_own_tmp():
    tops = ["/tmp/" + top for top in os.environ["TOP"].split(":") if top]
    mount(["--rbind", "/tmp", "/mnt"], ["-t", "tmpfs", "none", "/tmp"],
          *(["-m", "--rbind", "/mnt" + top[4:], top] for top in tops))
    purge()

def test_proc_hidden():
    mount(["-t", "tmpfs", "none", "/proc"])
    purge()
    subprocess.run(["umount", "/proc"], check=True)
"""
)


def _tops_in_tmp(tmp_path: Path) -> str:
    """The directories of /tmp that a test's own /tmp must show again: the one the test's
    directory lies in, and the checkout's and its interpreter's where they lie in /tmp."""
    wanted = (tmp_path.resolve(), Path(__file__).resolve().parents[1], Path(sys.prefix).resolve())
    tops = [path.parts[2] for path in wanted if path.is_relative_to("/tmp")]
    return ":".join(dict.fromkeys(tops))


def test_a_run_a_test_moved_into_a_namespace_of_its_own_keeps_its_children(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    if os.geteuid() != 0 or not Path("/mnt").is_dir():
        pytest.skip("only root mounts a /tmp of its own in the test's process")
    # Where the test's directories lie under /tmp, which the test mounts over, their
    # directory there is bound back (`$TOP`); elsewhere (a TMPDIR on /dev/shm, as scripts/
    # test's) they stay in sight as they are.
    top, here = Path("/tmp"), tmp_path.resolve()
    shared = top / here.relative_to(top).parts[0] if here.is_relative_to(top) else None
    if settings.resolve().is_relative_to(top) and not (
        shared and settings.resolve().is_relative_to(shared)
    ):
        pytest.skip("the settings and the test's directory must share their directory in /tmp")
    (tmp_path / "test_own_namespace.py").write_text(OWN_NAMESPACE)
    _a_runner_script(tmp_path)
    (tmp_path / "tmp").mkdir()
    output = _outside_any_run(
        production,
        ["sh", "-c", '"$@"; echo "=== $?"', "sh", sys.executable, "ci.py", "-p",
         "no:cacheprovider", "-q", "-s", "test_own_namespace.py"],
        cwd=tmp_path,
        env=_inner_env(S=str(settings), APP_SETTINGS_DIR=str(settings),
                       TMPDIR=str(tmp_path / "tmp"), TOP=_tops_in_tmp(tmp_path)),
    )  # fmt: skip
    assert re.search(
        r"CHILD 78 error: refused under pytest \(sandbox: \S+\): loading profile 'production'; "
        r"tests run on the 'testing' profile \(this process belongs to the test run through "
        r"the process tree \(an ancestor process, pytest pid \d+, registered in /proc/\d+/root/"
        rf"tmp/app-pytest-runs-{os.getuid()}\)\)",
        output,
    ), output
    assert (
        f"the registry /tmp/app-pytest-runs-{os.getuid()} is out of this process's sight: a "
        "test moved this process into a mount namespace of its own (unshare) whose /tmp is "
        "another directory; it was put back"
    ) in output, output
    assert (
        "CHILD 78 error: refused under pytest: loading profile 'production' while /proc is "
        "hidden from this process (a filesystem that is not Linux's proc is mounted there, "
        "without /proc/self), so it cannot tell whether a test run is above it. Mount Linux's "
        "proc filesystem at /proc where this runs (mount -t proc proc /proc), or run it "
        "outside the mount namespace that hides it"
    ) in output, output


#: What each daemon below runs, once the run's process is gone (`$RUN_FD`, a pidfd of it):
#: a purge of production in its own process, its output in `$OUT`.
PURGES_ONCE_THE_RUN_IS_GONE = """
import os, select, sys
select.select([int(os.environ["RUN_FD"])], [], [])
out = os.open(os.environ["OUT"], os.O_WRONLY | os.O_CREAT, 0o644)
os.dup2(out, 1)
os.dup2(out, 2)
sys.argv = ["app", "data", "purge", "--yes-i-mean-it"]
from app.cli import main
main()
"""

#: How the inner tests below start their daemon: `argv`, given production's settings alone
#: and a pidfd of the run's process, in a session of its own.
STARTS_A_DAEMON = """
import os, signal, subprocess, sys

def start(argv):
    run = os.pidfd_open(os.getpid())
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR", "OUT")}
    env.update(ENV_FOR_DYNACONF="production", RUN_FD=str(run))
    subprocess.Popen(argv, env=env, pass_fds=[run], start_new_session=True)
"""

#: A dev server's script, with a self-test branch that calls pytest.main, which it does not
#: take: a pytest to its command line.
DEVSERVER = (
    'import sys\nif "--selftest" in sys.argv:\n    import pytest\n    pytest.main([__file__])\n'
    + PURGES_ONCE_THE_RUN_IS_GONE
)

#: A test that leaves that dev server. A later test ends the run at once.
LOOKS_LIKE_PYTEST = (
    STARTS_A_DAEMON
    + f"""
DEVSERVER = {DEVSERVER!r}

def test_1_starts_a_dev_server(tmp_path):
    (tmp_path / "devserver.py").write_text(DEVSERVER)
    start([sys.executable, str(tmp_path / "devserver.py")])

def test_2_ends_the_run():
    os.kill(os.getpid(), signal.SIGKILL)
"""
)


def test_a_run_as_a_user_who_may_not_look_into_a_root_says_so_and_goes_on(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
) -> None:
    _, production = stopped
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("only root runs pytest as another user (setpriv)")
    can = [*NOBODY, sys.executable, "-c", "import app.config, pytest"]
    if subprocess.run(can, capture_output=True, cwd="/", check=False).returncode != 0:
        # A checkout in a directory only root may enter (CI clones into `mktemp -d`, 0700).
        pytest.skip(f"user 65534 cannot run {sys.executable} with the app and pytest here")
    # Outside this suite's own directories, which only root may enter: a project, its
    # settings and production's root there, kept by user 65533 in mode 0700.
    # In /tmp by name: TMPDIR may be closed to user 65534 (scripts/test's, 0700).
    project = Path(tempfile.mkdtemp(prefix="rt46-", dir="/tmp"))
    try:
        project.chmod(0o755)
        settings = project / "settings"
        shutil.copytree(production.parents[1], settings, symlinks=True)
        root = settings / "data" / "production"
        shutil.chown(root.parent, 65533, 65533)
        for path in (root, *root.rglob("*")):
            shutil.chown(path, 65533, 65533)
        (project / "tmp").mkdir(mode=0o777)
        (project / "tmp").chmod(0o777)
        (project / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
        env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=str(project / "tmp"),
                         HOME=str(project / "tmp"))  # fmt: skip
        said = []
        # Its runs register in user 65534's registry, which other workers' tests change.
        with users_registry(65534):
            for strict in ([], ["--app-strict"]):
                done = subprocess.run(
                    ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                     sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *strict],
                    cwd=project, env=env, capture_output=True, text=True, check=False,
                )  # fmt: skip
                said.append((done.returncode, " ".join((done.stdout + done.stderr).split())))
    finally:
        shutil.rmtree(project)
    (code, output), (strict_code, strict_output) = said
    why = (
        re.escape(f"{root} is drwx------, owned by user 65533")
        + r"( \(\w+\))?"
        + re.escape(", and this process runs as user 65534")
    )
    assert code == 0, output
    assert "Traceback" not in output, output
    assert re.search(
        re.escape(f"app: the data root of profile 'production' at {root} cannot be looked into (")
        + why
        + re.escape(
            "): whether a server holds it is not known here; tests will not touch it (nor can "
            "this user)"
        ),
        output,
    ), output
    assert strict_code == 4, strict_output
    assert re.search(
        re.escape(
            "app: strict mode refuses to run where it cannot tell whether a live process holds "
            f"a data root: profile 'production' at {root} ("
        )
        + why
        + re.escape("). Run the tests as a user who may look into it, or without --app-strict"),
        strict_output,
    ), strict_output


#: A test that leaves a daemon as another user (`setpriv`; given root's access to files, so
#: that it reads this suite's directories). The run then ends as runs do.
ANOTHER_USER_S_DAEMON = (
    STARTS_A_DAEMON
    + f"""
CAPS = "+dac_override,+dac_read_search"

def test_leaves_a_daemon_as_another_user():
    start(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps",
           CAPS, "--ambient-caps", CAPS, sys.executable, "-c", {PURGES_ONCE_THE_RUN_IS_GONE!r}])
"""
)


@pytest.mark.parametrize(
    "tests", [LOOKS_LIKE_PYTEST, ANOTHER_USER_S_DAEMON], ids=["looks-like-pytest", "another-user"]
)
def test_a_daemon_a_test_left_stays_in_the_run_once_the_run_has_ended(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    tests: str,
) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    said = _left_behind_a_run(stopped, tmp_path, tests)
    assert said.startswith("error: refused under pytest (sandbox: "), said
    assert re.search(
        r"loading profile 'production'; tests run on the 'testing' profile \(this process "
        r"belongs to the test run through the process tree \(this process, started by the "
        r"test run of pytest pid \d+, which has ended, registered in /tmp/app-pytest-runs-0\)",
        said,
    ), said


def test_a_run_that_has_exited_but_is_not_reaped_has_ended() -> None:
    # A daemon that waits on a pidfd of its run wakes at the run's exit, before its parent
    # reaps it: the zombie's /proc entry still has the run's start time, and the refusal
    # said the run had "left" the daemon "running" (a whole run under load failed on it).
    from app import sandbox

    child = subprocess.Popen([sys.executable, "-c", ""])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        assert Path(f"/proc/{child.pid}/stat").exists()
        assert sandbox._exited(child.pid)
        assert not sandbox._exited(os.getpid())
    finally:
        child.wait()
    assert sandbox._exited(child.pid)
