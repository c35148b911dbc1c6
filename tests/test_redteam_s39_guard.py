"""Red team 39 on the guard: what a test and its children may reach.

Each case is real: pytest runs in a subprocess next to a stopped production root named by the
settings (and, by hand, next to live production and development servers and a stopped root of
another profile). What broke, each now refused or held:

- the process tree, read too little: a child at the end of a chain of 130 processes (the walk
  stopped after 128 ancestors); a child whose parent was reaped while it walked (the walk
  stopped there); each found no run and, given a hand-built environment, loaded production;
- the registry a run's children read, changed by a test beyond what the check after each test
  saw: made unreadable to them (`chmod`, an access control list), its entry replaced by a
  directory (which could not be put back) or a FIFO (every reader waited for ever), or an
  entry written by hand for a daemon of the test's own (a sandbox holding production's root):
  the processes later tests started were outside the run, and purged a stopped production
  root;
- the run's hand-over to what outlives it, taken away by a test that emptied `atexit`;
- a pytest a test runs in its own process with the plugin switched off, which emptied a
  production root given as its `--basetemp`, or made an older numbered directory holding a
  live root due for its clean-up;
- refusals that named the wrong cause: `TMPDIR` for a `PYTEST_DEBUG_TEMPROOT`, an `exec` for a
  subinterpreter.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import forked_app
import pytest
from project_copy import PROJECT, copy_project_settings
from side_by_side import INNER_PLUGINS_OFF, users_registry
from test_redteam_s22_guard import _own_proc_allowed
from test_redteam_s23_guard import _shell_without_the_run, numbered_with_a_failed_test_s_root
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s31_guard import CREATE, stopped  # noqa: F401 - a fixture
from test_redteam_s36_guard import _run, _run_beside
from test_server_e2e import Server, app_env, snapshot

from app import sandbox as sandboxing


def _project(tmp_path: Path, **files: str) -> Path:
    """A project directory in `tmp_path` holding `files` (name without ``.py``: text)."""
    project = tmp_path / "project"
    project.mkdir()
    for name, text in files.items():
        (project / f"{name}.py").write_text(text)
    return project


def _answers(out: Path, count: int) -> dict[str, str]:
    """What `count` daemons wrote into `out` (a directory, or one file), once each has."""
    for _ in range(400):  # a daemon acts once the run's process has ended
        found = list(out.iterdir()) if out.is_dir() else [out] * out.exists()
        if len(found) >= count and all(path.stat().st_size for path in found):
            return {path.name: path.read_text() for path in found}
        time.sleep(0.05)
    raise AssertionError(f"no answer from the daemons in {out}")


#: A chain of `$1` shells, each waiting for the next; the last, on a session of its own
#: (so that no run leads it), runs the app with production's settings alone.
DEEP_CHAIN = """
if [ "$1" -gt 0 ]; then sh "$0" $(($1 - 1)) "$2"; exit $?; fi
exec setsid env -i PATH="$PATH" APP_SETTINGS_DIR="$APP_SETTINGS_DIR" \\
    ENV_FOR_DYNACONF=production "$2" -m app data purge --yes-i-mean-it
"""

DEEP_CHILD_TEST = """
import pathlib, subprocess, sys

def test_a_child_130_processes_down():
    chain = pathlib.Path(__file__).with_name("chain.sh")
    done = subprocess.run(["sh", str(chain), "130", sys.executable],
                          capture_output=True, text=True)
    print("CHILD", done.returncode, done.stdout, done.stderr)
    assert done.returncode == 78
"""


def test_a_child_at_the_end_of_a_long_chain_of_processes_is_still_in_the_run(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # The walk of a child's ancestors stopped after 128: at the end of a chain of 130
    # shells, on a session of its own (no run leads it) and with production's settings as
    # its whole environment, it was outside every run and purged production.
    settings, production = stopped
    project = _project(tmp_path, test_deep=DEEP_CHILD_TEST)
    (project / "chain.sh").write_text(DEEP_CHAIN)
    code, output = _run_beside(production, project, settings, "-s", "-q")
    assert code == 0, output
    assert (
        "refused under pytest (sandbox: " in output
        and "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the process tree (an ancestor process, pytest pid "
        in output
    ), output


def test_a_pytest_debug_temproot_in_a_data_root_is_named_as_what_to_change(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # pytest's temporary root is PYTEST_DEBUG_TEMPROOT before TMPDIR (pytester sets it for
    # its runs). Refused, but told that "TMPDIR is <production>/sessions" and to point
    # TMPDIR elsewhere: TMPDIR named another directory, and changing it changed nothing.
    settings, production = stopped
    project = _project(tmp_path, test_a="def test_a():\n    pass\n")
    temproot = production / "sessions"
    code, output = _run_beside(production, project, settings, PYTEST_DEBUG_TEMPROOT=str(temproot))
    assert code == 4, output
    assert (
        f"refusing to run: pytest would create (and clean up) its temporary directories in "
        f"{temproot}/pytest-of-"
        in output
        and f"overlaps the data root of profile 'production' ({production}), because "
        f"PYTEST_DEBUG_TEMPROOT is {temproot}. Point PYTEST_DEBUG_TEMPROOT outside every data "
        "root, or pass --basetemp"
        in output
    ), output


SUBINTERPRETER_TEST = """
import importlib, os, subprocess, sys

CODE = '''
import os
os.environ["ENV_FOR_DYNACONF"] = "production"
from app.config import load
try:
    load("production")
    print("LOADED")
except Exception as error:
    print("REFUSED", error)
'''

def test_a_subinterpreter_loads_production():
    try:
        interpreters = importlib.import_module("_interpreters")
        interpreters.run_string(interpreters.create(), CODE)
    except ImportError:
        interpreters = importlib.import_module("_xxsubinterpreters")
        interpreters.run_string(interpreters.create(), CODE)
"""


def test_a_subinterpreter_is_refused_naming_it_not_an_exec(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # A subinterpreter has a `sys` of its own, without the run's mark: it finds the run
    # through the process tree, by the run's own pid, and was refused, but told that the
    # process "ran another program in its place (exec)", which nothing had.
    if importlib.util.find_spec("_interpreters") is None and (
        importlib.util.find_spec("_xxsubinterpreters") is None
    ):
        pytest.skip("this Python has no subinterpreters")
    settings, production = stopped
    project = _project(tmp_path, test_sub=SUBINTERPRETER_TEST)
    code, output = _run_beside(production, project, settings, "-s", "-q")
    assert code == 0, output
    assert "LOADED" not in output, output
    assert (
        "REFUSED refused under pytest (sandbox: " in output
        and "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the process tree (this process, pytest pid "
        in output
        and ", in a subinterpreter (it has a sys module of its own, without the run's mark), "
        "registered in "
        in output
    ), output
    assert "(exec)" not in output, output


# --- a registry a test made unreadable to the run's children ------------------------------

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")

#: A runner script, as CI wrappers are: it calls pytest through a module of its own, so no
#: command line or script shows pytest, and only the registry keeps the children in the run.
RUNNER = "import helper\nhelper.go()\n"
HELPER = (
    "import sys\n\ndef go():\n    import pytest\n"
    "    sys.exit(pytest.main(['-q', '-s', '-p', 'no:cacheprovider', 'test_case.py']))\n"
)
HIDES_THE_REGISTRY = """
import os, subprocess, sys
from app.sandbox import RUNS_DIR, _own_entry

def test_1_hides_the_registry():
    os.chmod(RUNS_DIR, 0o311)

def test_2_a_child_given_production_s_settings_alone():
    env = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "APP_SETTINGS_DIR")}
    env["ENV_FOR_DYNACONF"] = "production"
    done = subprocess.run(
        ["setsid", sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
        env=env, capture_output=True, text=True,
    )
    print("CHILD", done.returncode, done.stdout, done.stderr)

def test_3_hides_its_entry():
    os.chmod(_own_entry(), 0o200)

test_4_a_child_given_production_s_settings_alone = test_2_a_child_given_production_s_settings_alone
"""
#: In a PID namespace of its own (outside this suite's run), the work directory mounted
#: where user 65534 can reach it, then the runner as that user.
AS_NOBODY_OUTSIDE = """
mount --bind "$1" "$2" || exit 9
cd "$2/project" || exit 9
shift 3
exec "$@"
"""


@functools.cache
def _python_for_nobody(path: str) -> str | None:
    """An interpreter that user 65534 can run, and run again from there, with the app
    importable through `path` (this one may sit under root's home, which that user cannot
    enter: its own children could not start it). Asked once per process (two Pythons as that
    user, importing the app and pytest: about 0.28 s of CPU) for every test that needs it:
    the answer is the machine's, the same for each."""
    probe = (
        "import subprocess, sys, app.config, pytest; "
        "subprocess.run([sys.executable, '-c', ''], check=True)"
    )
    for python in dict.fromkeys((sys.executable, "/usr/bin/python3")):
        done = subprocess.run(
            [*NOBODY, "env", f"PYTHONPATH={path}", python, "-c", probe],
            capture_output=True, check=False, cwd="/",
        )  # fmt: skip
        if done.returncode == 0:
            return python
    return None


def nobody_in_a_pid_namespace() -> tuple[str, str]:
    """An interpreter user 65534 can run with the app, and the ``PYTHONPATH`` it needs, for a
    run as that user in a PID namespace of its own; the test is skipped where there is none
    (not root, no ``setpriv``, ``setsid`` or ``unshare``, no ``--mount-proc``)."""
    if os.geteuid() != 0 or not all(map(shutil.which, ("setpriv", "setsid", "unshare"))):
        pytest.skip("needs root, setpriv and unshare, to run as a user whom file modes bind")
    if not _own_proc_allowed():
        pytest.skip("needs unshare --pid --mount-proc")
    path = os.pathsep.join([str(PROJECT), sysconfig.get_paths()["purelib"]])
    python = _python_for_nobody(path)
    if python is None:
        pytest.skip("no interpreter here that user 65534 can run with the app")
    return python, path


def _outside_as_nobody(
    tmp_path: Path, tests: str, script: str, *, inner_user: tuple[str, ...] = NOBODY
) -> tuple[str, Path, dict[str, str]]:
    """Run `tests` (a module ``test_case.py``) with a runner script (`RUNNER`: no command
    line shows pytest), in a PID namespace of its own (outside this suite's run), by `script`
    (given the work directory, an empty mount point where user 65534 can reach it, and
    the registry's path, then the command): its output, production's root and its snapshot
    before. Skipped where user 65534 cannot run the app here."""
    python, path = nobody_in_a_pid_namespace()
    work = tmp_path / "work"
    settings = copy_project_settings(work / "settings")
    production = settings / "data" / "production"
    forked_app.run_c(CREATE, app_env(production, profile="production"))
    project = work / "project"
    project.mkdir()
    for name, text in (("ci.py", RUNNER), ("helper.py", HELPER), ("test_case.py", tests)):
        (project / name).write_text(text)
    subprocess.run(["chown", "-R", "65534:65534", str(work)], check=True)
    before = snapshot(production)
    seen = Path(tempfile.mkdtemp(prefix="app-rt39-", dir="/tmp"))  # a mount point, empty
    seen.chmod(0o755)
    inner = {
        "PATH": os.environ["PATH"], "PYTHONPATH": path, "HOME": str(seen), "TMPDIR": str(seen),
        "APP_SETTINGS_DIR": str(seen / "settings"), "PYTEST_ADDOPTS": INNER_PLUGINS_OFF,
        "NOBODY_PYTHON": python,
    }  # fmt: skip
    runner = sys.executable if not inner_user else python
    # The registry user 65534's run hides, and removes if it made it: no other run of that
    # user's (another worker's test) may use it meanwhile.
    with users_registry(65534) as registry:
        made_registry = not registry.exists()
        try:
            done = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
                 "--mount-proc", "sh", "-c", script, "sh", str(work), str(seen),
                 str(sandboxing.RUNS_DIR), *inner_user, "env", "-i",
                 *(f"{k}={v}" for k, v in inner.items()), runner, "ci.py"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
        finally:
            seen.rmdir()
            if made_registry:
                shutil.rmtree(registry, ignore_errors=True)
    return " ".join((done.stdout + done.stderr).split()), production, before


def test_a_registry_a_test_made_unreadable_to_the_run_s_children_is_put_back(
    tmp_path: Path,
) -> None:
    # A test's `chmod 0311` of the registry (or `chmod 0200` of its run's entry): still the
    # user's own, written by no one else, so trusted, and the run's own process reached its
    # entry through the search bit, so the check after the test saw nothing wrong. The
    # processes later tests started could not list it or read the entry: outside the run,
    # a child given production's settings alone, under a runner script, purged production.
    # Run as user 65534, whom file modes bind (root reads any directory).
    output, production, before = _outside_as_nobody(tmp_path, HIDES_THE_REGISTRY, AS_NOBODY_OUTSIDE)
    assert snapshot(production) == before, output
    assert output.count("CHILD 78 ") == 2, output
    for test, what in (
        ("test_1_hides_the_registry", "the registry /tmp/app-pytest-runs-65534"),
        ("test_3_hides_its_entry", "this run's entry in /tmp/app-pytest-runs-65534"),
    ):
        assert (
            f"app: after test_case.py::{test}, {what} was made unreadable to the processes "
            "the run starts ("
        ) in output, output
    assert (
        "); it was put back. Until then, a process started with a hand-built environment "
        "(and any after the run) was part of the run only through the descriptors of the "
        "registry and of its entry that the run keeps open." in output
    ), output


REPLACES_THE_ENTRY = """
import os, subprocess, sys
from app.sandbox import _own_entry

def _replace_the_entry(make):
    # This run's own entry, where it wrote it: another PID namespace's run is pid 1 too,
    # and may hold its name (app.sandbox._name_to_write).
    entry = _own_entry()
    entry.unlink()
    make(entry)

def test_1_makes_its_entry_a_directory():
    _replace_the_entry(lambda path: path.mkdir())  # empty: moved aside, then removed

def test_2_a_child_given_production_s_settings_alone():
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
    env["ENV_FOR_DYNACONF"] = "production"
    done = subprocess.run(
        ["setsid", sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    print("CHILD", done.returncode, done.stdout, done.stderr)

def test_3_makes_its_entry_a_fifo():
    _replace_the_entry(os.mkfifo)

test_4_a_child_given_production_s_settings_alone = test_2_a_child_given_production_s_settings_alone
"""


#: A registry of its own at `$1` (a tmpfs, in the caller's mount namespace of its own), then
#: the command that follows.
PRIVATE_REGISTRY_ONLY = 'mount -t tmpfs -o mode=0755 tmpfs "$1" && shift && exec "$@"'


def test_an_entry_a_test_replaced_by_a_directory_or_a_fifo_is_put_back(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # A directory at the run's entry name: the check after the test saw the change, but the
    # rename of a new entry cannot replace a directory ("it cannot be put back: Is a
    # directory"), so for the rest of the run every process it started found no entry to
    # read: under a runner script, a child given production's settings alone purged
    # production. A FIFO there made every reader (the run's own check, each child) wait for
    # ever. Both are now removed and the entry written again, naming what was there.
    settings, production = stopped
    project = _project(tmp_path, ci=RUNNER, helper=HELPER, test_case=REPLACES_THE_ENTRY)
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path))
    env = {k: v for k, v in env.items() if not k.startswith("PYTEST_APP")}
    before = snapshot(production)
    # In a registry of its own (a tmpfs at its path, in a mount namespace of its own): every
    # run that starts on the machine forgets what it cannot read at the name of a process it
    # does not see, and one on another worker, starting while the FIFO was there, removed
    # it (the check then said the entry was removed, not replaced by a FIFO).
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
         "sh", "-c", PRIVATE_REGISTRY_ONLY, "sh", str(sandboxing.RUNS_DIR), sys.executable,
         "ci.py"],
        cwd=project, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert snapshot(production) == before, output
    assert output.count("CHILD 78 ") == 2, output
    for test, kind in (("test_1_makes_its_entry_a_directory", "a directory"),
                       ("test_3_makes_its_entry_a_fifo", "a FIFO")):  # fmt: skip
        assert (
            f"app: after test_case.py::{test}, this run's entry in {sandboxing.RUNS_DIR} "
            f"was replaced by {kind}, which its children cannot read as one; it was put back."
        ) in output, output


# --- an entry a test wrote for a process of its own ---------------------------------------

#: Each test starts a daemon given production's settings and the opt-in alone, and writes a
#: registry entry for it by hand: a sandbox holding production's root, nothing protected.
#: The first daemon acts during the run (half a second after its entry is written), the
#: second once the run's process has ended.
FORGES_AN_ENTRY = """
import json, os, subprocess, sys, time
from pathlib import Path
import pytest
from app.sandbox import RUNS_DIR, _entry_name, _stat_fields

WAITS = {"0.5": "sleep 0.5",
         "after": f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.05; done"}

@pytest.mark.parametrize("sandbox", ["/", os.environ["ABOVE"], "malformed"])
@pytest.mark.parametrize("delay", WAITS)
def test_writes_an_entry_for_its_daemon(sandbox, delay):
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
    env.update(ENV_FOR_DYNACONF="production", PYTEST_APP_ALLOW_PROFILES="production")
    out = os.path.join(os.environ["OUT"], f"{sandbox.replace('/', '_')}-{delay}")
    purge = f"{sys.executable} -m app data purge --yes-i-mean-it > {out} 2>&1"
    daemon = subprocess.Popen(["sh", "-c", f"{WAITS[delay]}; exec {purge}"], env=env,
                              start_new_session=True)
    entry = {"pid": daemon.pid, "argv": ["pytest"], "sandbox": sandbox, "protected": []}
    if sandbox == "malformed":  # not as a run writes one: its readers stopped in a traceback
        entry.update(sandbox=os.environ["ABOVE"], protected="abc")
    name = _entry_name(daemon.pid, _stat_fields(daemon.pid)[1])
    (RUNS_DIR / name).write_text(json.dumps(entry))

def test_waits_for_the_first_daemons():
    first = lambda: [path.stat().st_size for path in Path(os.environ["OUT"]).glob("*-0.5")]
    while len(first()) < 3 or not all(first()):  # each has answered, during the run
        time.sleep(0.05)
"""


def test_an_entry_a_test_writes_for_its_own_daemon_is_no_run(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # A test that writes a registry entry by hand for a daemon it starts (a sandbox of `/`,
    # or one that holds production's root, and nothing protected): the daemon walked to the
    # nearest entry, its own, and with production's settings and the opt-in alone purged a
    # stopped production root, during the run and after it (the run hands its entry on only
    # to a descendant without an entry of its own). A run started inside another keeps the
    # roots that one protects, so an entry that leaves them out is no run inside it.
    settings, production = stopped
    project = _project(tmp_path, test_forges=FORGES_AN_ENTRY)
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(production)
    code, output = _run(
        project, settings, "-q", "-p", "no:randomly", ABOVE=str(production.parent), OUT=str(out)
    )
    assert code == 0, output
    answers = _answers(out, 6)
    assert snapshot(production) == before, answers
    for name, said in answers.items():
        # Mapped into the run's sandbox (where it does not exist), or refused as a root the
        # run protects: never production's own.
        assert "moved" not in said, (name, said)
        assert said.startswith("error: "), (name, said)
        assert (
            "data_root of profile 'production' (from pytest sandbox (configured: " in said
            or "refused under pytest (sandbox: " in said
        ), (name, said)


# --- a run whose exit hooks a test emptied --------------------------------------------------

#: A test that empties atexit (as tests of exit handlers do) and leaves a daemon, given
#: production's settings alone, that acts once the run has ended.
CLEARS_ATEXIT = """
import atexit, os, subprocess, sys

def test_empties_atexit_and_leaves_a_daemon():
    atexit._clear()
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
    env["ENV_FOR_DYNACONF"] = "production"
    purge = f"{sys.executable} -m app data purge --yes-i-mean-it > {os.environ['OUT']} 2>&1"
    ended = f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.05; done"  # the run's process
    subprocess.Popen(["sh", "-c", f"{ended}; exec {purge}"], env=env, start_new_session=True)
"""


def daemon_refused(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture's value
    tmp_path: Path,
    tests: str,
) -> str:
    """Run `tests` (whose daemon writes what it was told into ``$OUT``) beside the stopped
    production root, which must stay unchanged: what the daemon was told, a refusal."""
    settings, production = stopped
    project = _project(tmp_path, test_daemon=tests)
    out = tmp_path / "out.txt"
    before = snapshot(production)
    code, output = _run(project, settings, "-q", "-p", "no:randomly", OUT=str(out))
    assert code == 0, output
    said = _answers(out, 1)[out.name]
    assert snapshot(production) == before, said
    assert said.startswith("error: refused under pytest (sandbox: "), said
    return said


def test_a_daemon_left_by_a_test_that_empties_atexit_stays_in_the_run(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # The run hands its entry on to what outlives it from an atexit hook: a test that ran
    # atexit._clear() took it away, and the daemon it left, re-parented to init once the
    # run had ended, was outside any run (no command line above it shows pytest either),
    # and purged a stopped production root. The hand-over now also runs from threading's
    # shutdown hooks, which Python calls before atexit's.
    said = daemon_refused(stopped, tmp_path, CLEARS_ATEXIT)
    assert (
        "(this process belongs to the test run through the process tree (this process, "
        "started by the test run of pytest pid "
    ) in said, said


# --- a pytest a test runs in its own process, the plugin switched off in it -------------------

NESTED_WITHOUT_THE_PLUGIN = """
import os
import pytest

pytest_plugins = ["pytester"]
INNER = "def test_inner(tmp_path):\\n    pass\\n"
BASETEMP = "--basetemp=" + os.path.join(os.environ["PRODUCTION"], "sessions")

def test_pytest_main(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    print("MAIN", pytest.main(["-p", "no:app", "-q", BASETEMP, str(tmp_path / "test_inner.py")]))

def test_pytester_in_process(pytester):
    pytester.makepyfile(test_in_pytester=INNER)
    result = pytester.runpytest_inprocess("-p", "no:app", BASETEMP)
    print("PYTESTER", result.ret, result.outlines[-3:])
"""


CHILD_WITHOUT_THE_PLUGIN = """
import os, subprocess, sys

INNER = "def test_inner(tmp_path):\\n    pass\\n"

def test_a_child_pytest_without_the_plugin(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {"PATH": os.environ["PATH"]}  # hand-built: no marker, no settings, no pytest variable
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:app", "-p", "no:cacheprovider", "-q",
         "--basetemp=" + os.path.join(os.environ["PRODUCTION"], "sessions"), "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    print("CHILD", done.returncode, done.stdout + done.stderr)
"""


@pytest.mark.parametrize(
    ("test_file", "answers"),
    [
        (NESTED_WITHOUT_THE_PLUGIN, ["MAIN 1", "PYTESTER 1"]),
        (CHILD_WITHOUT_THE_PLUGIN, ["CHILD 1"]),
    ],
    ids=["in-process", "child"],
)
def test_a_pytest_run_by_a_test_without_the_plugin_keeps_its_roots(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    test_file: str,
    answers: list[str],
) -> None:
    # pytest.main(["-p", "no:app", "--basetemp=<production>/sessions", ...]) in a test (or
    # pytester's runpytest_inprocess so) runs no hook of the app's: its pytest emptied the
    # stopped production root's sessions/ as its first test asked for tmp_path. It runs in
    # the run's own process, whose run knows the roots it protects: refused now. The same as
    # a child `python -m pytest -p no:app ...` given a hand-built environment (session 39):
    # the package's second entry point (app.testing.fallback), which `-p no:app` leaves
    # loaded, finds the run through the process tree.
    settings, production = stopped
    project = _project(tmp_path, test_nested=test_file)
    code, output = _run_beside(
        production, project, settings, "-q", "-s", "-p", "no:randomly", PRODUCTION=str(production)
    )
    assert code == 0, output
    assert all(answer in output for answer in answers), output
    assert (
        f"app: refusing --basetemp {production}/sessions: pytest empties it before the run, "
        "and it overlaps the data root of profile 'production (protected by the enclosing "
        "test run, pytest pid "
    ) in output, output


# --- what held ------------------------------------------------------------------------------

RUNS_PYTEST_TWICE = """
import pytest
print("FIRST", pytest.main(["-q", "-s", "-p", "no:randomly", "test_twice.py"]))
print("SECOND", pytest.main(["-q", "-s", "-p", "no:randomly", "test_twice.py"]))
"""
TWICE = """
import os, subprocess, sys

def test_store_and_a_child(app_store, app_config):
    print("ROOT", app_config.data_root)
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
    env["ENV_FOR_DYNACONF"] = "production"
    done = subprocess.run(
        [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
        env=env, capture_output=True, text=True,
    )
    print("CHILD", done.returncode)
"""


def test_a_runner_that_calls_pytest_main_twice_sandboxes_both_runs(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # The plugin is imported once; the second run in the process gets its own sandbox,
    # and a child given production's settings alone is refused in each.
    settings, production = stopped
    project = _project(tmp_path, runner=RUNS_PYTEST_TWICE, test_twice=TWICE)
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path))
    env = {k: v for k, v in env.items() if not k.startswith("PYTEST_APP")}
    before = snapshot(production)
    done = subprocess.run(
        [sys.executable, "runner.py"], cwd=project, env={**env, "ENV_FOR_DYNACONF": "production"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert snapshot(production) == before, output
    assert "FIRST 0" in output and "SECOND 0" in output, output
    assert output.count("CHILD 78") == 2, output
    roots = [line.split()[1] for line in output.splitlines() if line.startswith("ROOT ")]
    assert len(roots) == 2 and roots[0] != roots[1], output
    assert all(root.startswith(str(tmp_path / "tmp")) for root in roots), output


@pytest.mark.parametrize(
    "args",
    [
        ["--version", "--debug={record}"],
        ["--help", "--debug={record}"],
        ["--rootdir={root}", "test_a.py"],
        ["-c", "{root}/.app-profile.json", "test_a.py"],
        ["--confcutdir={root}", "--junitxml={record}", "test_a.py"],
    ],
    ids=["version", "help", "rootdir", "ini-file", "confcutdir"],
)
def test_what_pytest_is_told_to_read_or_write_in_a_root_changes_nothing(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    args: list[str],
) -> None:
    settings, production = stopped
    project = _project(tmp_path, test_a="def test_a(tmp_path):\n    pass\n")
    record = next(production.glob("sessions/*/session.json"))
    given = [arg.format(root=production, record=record) for arg in args]
    code, output = _run_beside(production, project, settings, *given)
    # Refused (4: by the app, or pytest's own refusal of a JSON "ini" file), or nothing
    # written (--version and --help, which open --debug only once refused).
    assert code in {0, 4}, output
    if code == 4:
        assert str(production) in output, output


IN_PROCESS_WITHOUT_THE_PLUGIN = """
import pytest

def test_runs_pytest_without_the_plugin(tmp_path):
    (tmp_path / "test_inner.py").write_text("def test_inner(tmp_path):\\n    pass\\n")
    print("MAIN", pytest.main(["-p", "no:app", "-q", str(tmp_path / "test_inner.py")]))
"""


@pytest.mark.parametrize("where", ["in-process", "child", "child-autoload-off"])
def test_a_live_root_a_pytest_without_the_plugin_makes_due_is_kept(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # A live server's root in an older numbered directory that the run's start found not
    # due (pytest-2 of 1 to 4): a test's pytest.main(["-p", "no:app", ...]), in the run's
    # own process, made pytest-5, and its clean-up at its end deleted pytest-2 with the
    # live root in it; the run's own keep came later. Kept now, as an inactive run keeps it.
    # The same for a pytest of its own with the plugin switched off (`python -m pytest -p
    # no:app`, pytest-2 of 1 to 5; session 39): the fallback entry point keeps it. And with
    # autoload off instead (red team 42): no entry point is loaded, and the root was
    # deleted (the server answered from memory); the fallback registered through the
    # package's .pth keeps it.
    numbered, root = numbered_with_a_failed_test_s_root(tmp_path / "temproot")
    # The server needs nothing of what pytester changed (its HOME, its colours): forked.
    env = forked_app.as_the_run_for_the_rest(app_env(root))
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        with server.client() as client:
            assert client.post("/sessions", json={"title": "kept"}).status_code == 201
        _shell_without_the_run(monkeypatch, tmp_path / "temproot")
        if where == "in-process":
            pytester.makepyfile(IN_PROCESS_WITHOUT_THE_PLUGIN)
            result = pytester.run(sys.executable, "-mpytest", "-s", "-p", "pytester")
        else:
            (numbered / "pytest-4").mkdir()
            pytester.makepyfile(test_inner="def test_inner(tmp_path):\n    pass\n")
            off = ["-p", "no:app", "-p", "no:randomly"]
            if where == "child-autoload-off":
                monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
                off = []
            result = pytester.run(
                sys.executable, "-mpytest", *off, "-p", "no:cacheprovider", "test_inner.py"
            )
        output = result.stdout.str() + result.stderr.str()
        assert result.ret == 0, output
        assert "MAIN 0" in output or where != "in-process", output
        assert (numbered / "pytest-5").is_dir(), output
        assert (root / ".app-profile.json").is_file(), output  # the server may answer from memory
        assert server.process.poll() is None
        with server.client() as client:
            assert client.get("/sessions").json()["total"] == 1, output
        assert (
            f"app: kept {numbered / 'pytest-2'}: pytest deletes it at the end of this run (it "
            "keeps only the last 3 of its temporary directories, tmp_path_retention_count), "
            f"but it holds the data root {root}, held by pid {server.pid}, kind server"
        ) in output, output
    finally:
        server.stop()


# --- a parent that exits while its child walks its ancestors ---------------------------------


def test_an_ancestor_reaped_while_the_walk_reads_it_is_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `sh -c 'python -m app ... & exit'`: the shell exits as its child starts, and the child
    # becomes the run's subreaper's child. A walk that had read the shell's pid as its parent
    # and then found it reaped stopped there, outside any run: measured, 8 of 4,019 walks
    # made in a loop by such children (20 of them, a second each) said no run. Here the
    # reaping is timed exactly: the parent's entry in /proc is gone the first time it is read.
    full = list(sandboxing._ancestry())
    assert len(full) > 1
    parent = full[1][0]
    real = sandboxing._stat_fields
    reaped = [parent]

    def read(pid: int) -> tuple[int, int] | None:
        if pid in reaped:
            reaped.remove(pid)
            return None
        return real(pid)

    monkeypatch.setattr(sandboxing, "_stat_fields", read)
    assert list(sandboxing._ancestry()) == full
    assert not reaped


DENIES_A_USER_THE_REGISTRY = """
import os, struct, subprocess
from app.sandbox import RUNS_DIR

ANY = 0xFFFFFFFF

def test_1_denies_the_service_user_the_registry():
    # setfacl -m u:65534:--- on the registry: the mode still says 0755.
    entries = [(0x01, 7, ANY), (0x02, 0, 65534), (0x04, 5, ANY), (0x10, 5, ANY), (0x20, 5, ANY)]
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)
    os.setxattr(RUNS_DIR, "system.posix_acl_access", acl)

def test_2_a_child_as_the_service_user_given_production_s_settings_alone():
    env = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "APP_SETTINGS_DIR")}
    env["ENV_FOR_DYNACONF"] = "production"
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         os.environ["NOBODY_PYTHON"], "-m", "app", "data", "purge", "--yes-i-mean-it"],
        env=env, capture_output=True, text=True, cwd="/",
    )
    print("CHILD", done.returncode, done.stdout, done.stderr)
"""
#: In a PID namespace of its own (outside this suite's run) and a mount namespace whose
#: registry is a tmpfs of its own (the machine's is shared), the work directory mounted
#: where user 65534 can reach it, then the runner, as root.
PRIVATE_REGISTRY = """
mount -t tmpfs -o mode=0755 tmpfs "$3" || exit 9
mount --bind "$1" "$2" || exit 9
cd "$2/project" || exit 9
shift 3
exec "$@"
"""


def test_an_access_control_list_a_test_put_on_the_registry_is_removed(
    tmp_path: Path,
) -> None:
    # A run as root (a CI container); a test denies the service's user the registry with
    # an access control list (the mode still says 0755, so the check after it saw nothing),
    # and a later test's child, run as that user (as a test of the service's permissions
    # does) with production's settings alone, could not list it: outside the run, under a
    # runner script, it purged the production root that user owns. The registry here is a
    # tmpfs of the inner run's own (the machine's is shared).
    output, production, before = _outside_as_nobody(
        tmp_path, DENIES_A_USER_THE_REGISTRY, PRIVATE_REGISTRY, inner_user=()
    )
    assert snapshot(production) == before, output
    assert "CHILD 78 " in output, output
    assert (
        f"app: after test_case.py::test_1_denies_the_service_user_the_registry, the registry "
        f"{sandboxing.RUNS_DIR} was given an access control list, which can hide it from the "
        "processes the run starts as another user (now removed); it was put back."
    ) in output, output


#: A test that writes an entry by hand for the shell that started its pytest (above the
#: run): a sandbox holding every root, one made-up root protected.
FORGES_AN_ENTRY_ABOVE = """
import json, os, subprocess, sys
from app.sandbox import RUNS_DIR, _entry_name, _stat_fields

def test_writes_an_entry_for_the_shell_above_its_run():
    shell = os.getppid()
    entry = {"pid": shell, "argv": ["sh"], "sandbox": os.environ["ABOVE"],
             "protected": [{"profile": "made-up", "path": "/nonexistent"}]}
    (RUNS_DIR / _entry_name(shell, _stat_fields(shell)[1])).write_text(json.dumps(entry))
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
    env.update(ENV_FOR_DYNACONF="production", PYTEST_APP_ALLOW_PROFILES="production")
    done = subprocess.run(
        [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
        env=env, capture_output=True, text=True,
    )
    print("CHILD", done.returncode, done.stdout, done.stderr)
"""


def test_an_entry_a_test_writes_for_a_process_above_its_run_changes_nothing(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # Found in this red team's own first fix for the entry above, which took a run further
    # up that protects a root the nearest leaves out instead of the nearest: an entry a test
    # wrote for the shell above pytest (a sandbox holding production's root, one made-up
    # root protected) then became its children's run, and one given production's settings
    # and the opt-in alone purged production. Neither entry may widen what the other allows.
    settings, production = stopped
    project = _project(tmp_path, test_above=FORGES_AN_ENTRY_ABOVE)
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path), ABOVE=str(production.parent)
    )
    before = snapshot(production)
    done = subprocess.run(
        ["sh", "-c", '"$0" -m pytest -q -s -p no:randomly -p no:cacheprovider; exit $?',
         sys.executable],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert snapshot(production) == before, output
    assert "CHILD 78 " in output, output
    assert "from pytest sandbox (configured: " in output, output
