"""Red team 26 on the guard: tox-style wrappers, pytest's debugger, and nested runs.

Each case is real: a runner script that builds its pytest's environment from scratch (as
tox's ``pass_env`` does: ``PATH`` and a few set variables), pytest in a subprocess with
``--pdb`` fed on stdin, a ``breakpoint()`` after the plugin ended its run, ``pytest.main``
in the test's own process, and a nested pytest whose plugin stays inactive; all next to a
stopped production root with one session, which the settings name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import forked_app
import pytest
from project_copy import copy_project_settings
from test_redteam_s21_guard import LOAD_PRODUCTION
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_redteam_s24_guard import _inner_env
from test_server_e2e import app_env

#: The runner, as tox runs a test environment: a new environment with PATH, the settings
#: tox's `set_env` gives (production exported, as the incident's shell did) and nothing of
#: its own caller's, pytest under `--pdb`, the debugger's commands on stdin.
RUNNER = """
import os, subprocess, sys

settings, basetemp, data, commands, load = sys.argv[1:6]
env = {
    "PATH": os.environ["PATH"],
    "APP_SETTINGS_DIR": settings,
    "ENV_FOR_DYNACONF": "production",
    "S26_DATA": data,
    "APP_API_TOKEN": "Zq8vN3xR7kLp2WmC9tYb4HsD6fJg1QeA",
}
tests = subprocess.Popen(
    [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "--pdb",
     "-p", "app", "-p", "app", f"--basetemp={basetemp}", "test_tox.py"],
    env=env, stdin=subprocess.PIPE, text=True,
)
# The app the wrapper starts next to its tests (not a test's): production is its own.
app = subprocess.run(
    [sys.executable, "-c", open(load).read()], env=env, capture_output=True, text=True
)
tests.communicate(open(commands).read())
print("CASE runner's app:", (app.stdout + app.stderr).strip())
sys.exit(tests.returncode)
"""

#: The load of production each case makes: in a child given PATH and the settings alone
#: (`child()`), and in the test's own process (`here()`); and the runner's own app.
LOAD = LOAD_PRODUCTION

TESTS = """
import os, subprocess, sys

import pytest
from conftest import child, here


def test_in_process_pytest_main_without_the_plugin(tmp_path):
    # pytest.main in the test's own process, the plugin switched off for it (and a second
    # time, loaded twice with -p app), then a child and a load.
    (tmp_path / "test_inner.py").write_text("def test_inner():\\n    pass\\n")
    for extra in (["-p", "no:app"], ["-p", "app", "-p", "app"]):
        code = pytest.main(
            ["-q", "-p", "no:cacheprovider", *extra, f"--basetemp={tmp_path / 'bt'}",
             str(tmp_path / "test_inner.py")]
        )
        print("CASE main", extra[1], "exit:", int(code))
        print("CASE main", extra[1], "child:", child())
        print("CASE main", extra[1], "here:", end=" ")
        here()


def test_nested_run_elsewhere(tmp_path):
    # A nested tox-style run: another project's directory, PATH alone; the plugin stays
    # inactive there (no settings), and pytest empties its --basetemp.
    other = tmp_path / "other"
    other.mkdir()
    (other / "test_nothing.py").write_text("def test_nothing(tmp_path):\\n    pass\\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
         "--basetemp=" + os.environ["S26_DATA"], "test_nothing.py"],
        env={"PATH": os.environ["PATH"]}, cwd=other, capture_output=True, text=True,
    )
    print("CASE nested exit:", done.returncode, done.stdout + done.stderr, "END nested")


def test_debugged():
    assert False, "into the debugger"
"""

#: A breakpoint() after the plugin ended the run (its unconfigure restored the runner's
#: environment: production exported).
CONFTEST = f"""
import os, subprocess, sys

import pytest

LOAD = {LOAD!r}
ENV = {{"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}}


def child():
    done = subprocess.run([sys.executable, "-c", LOAD], env=ENV, capture_output=True, text=True)
    return (done.stdout + done.stderr).strip()


def here():
    try:
        exec(LOAD, {{}})
    except Exception as error:  # what a debugger shows
        print("RAISED", type(error).__name__, error)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    breakpoint()
"""

COMMANDS = (
    "!print('CASE pdb child:', child())\n"
    "!print('CASE pdb here:', end=' '); here()\n"
    "c\n"
    "!print('CASE after child:', child())\n"
    "!print('CASE after here:', end=' '); here()\n"
    "!print('CASE after env:', os.environ.get('ENV_FOR_DYNACONF'))\n"
    "c\n"
)


CREATE = (
    "from app.config import load\n"
    "from app.storage import open_storage\n"
    "with open_storage(load(serving=False), writer=True) as store:\n"
    "    store.create_session('a review', {})\n"
)


@pytest.fixture(scope="module")
def tox_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The production root (stopped, one session) and the output of the runner's run."""
    if not _own_proc_allowed():
        pytest.skip("needs unshare --pid --mount-proc")
    where = tmp_path_factory.mktemp("s26")
    settings = copy_project_settings(where / "project")
    production = settings / "data" / "production"
    # In a child: the opt-in of a module's fixture is the environment's (app_env's).
    forked_app.run_c(CREATE, app_env(production, profile="production"))
    tests = where / "tests"
    tests.mkdir()
    (tests / "test_tox.py").write_text(TESTS)
    (tests / "conftest.py").write_text(CONFTEST)
    (where / "runner.py").write_text(RUNNER)
    (where / "commands").write_text(COMMANDS)
    (where / "load.py").write_text(LOAD)
    # In a PID namespace with a /proc of its own: the wrapper is a shell's, outside this
    # suite's run, as tox is.
    own_proc = ("unshare", "--pid", "--fork", "--mount-proc") if os.geteuid() == 0 else OWN_PROC
    done = subprocess.run(
        [*own_proc, sys.executable, str(where / "runner.py"), str(settings), str(where / "bt"),
         str(settings / "data"), str(where / "commands"), str(where / "load.py")],
        env=_inner_env(), cwd=tests,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )  # fmt: skip
    return production, done.stdout


REFUSED_IN_THE_RUN = (
    "REFUSED refused under pytest (sandbox: {bt}): loading profile 'production'; tests run "
    "on the 'testing' profile (this process belongs to the test run through {how}). To test "
    "another profile, mark the test @pytest.mark.app_profile('production'); its data root "
    "is then mapped into the sandbox"
)
BY_THE_TREE = "the process tree (an ancestor process, pytest pid "


def _case(out: str, name: str) -> str:
    assert f"CASE {name}:" in out, out
    return out.partition(f"CASE {name}:")[2].partition("\n")[0].strip()


def test_a_nested_run_whose_plugin_is_inactive_keeps_its_enclosing_runs_roots(
    tox_run: tuple[Path, str],
) -> None:
    # A test of a tox-style run starts another pytest as tox would: PATH alone, in another
    # project's directory. Its plugin stays inactive (no settings there), and checked its
    # --basetemp only against what is on disk, skipping a stamped root below it (another
    # project's tests may stamp roots of their own): `--basetemp=<settings>/data` deleted
    # the stopped production root in it, which the enclosing run protects. Keyed by
    # profile, the enclosing run's roots also lost all but the last of each profile.
    production, out = tox_run
    assert (production / "sessions").is_dir(), out
    assert len(list((production / "sessions").iterdir())) == 1, out
    nested = _case(out, "nested exit")
    data = production.parent
    assert nested.startswith(
        f"4 ERROR: app: refusing --basetemp {data}: pytest empties it before the run, and it "
        "overlaps the data root of profile 'development (protected by the enclosing test "
        "run, pytest pid "
    ), nested
    assert (
        f"({data / 'development'}). Choose a --basetemp outside every data root, or omit it. "
        "The app's plugin is inactive in this run ("
    ) in nested, nested
    assert nested.endswith("and pytest empties a --basetemp all the same"), nested


def test_the_debugger_and_pytest_main_of_a_tox_style_run_stay_in_the_run(
    tox_run: tuple[Path, str],
) -> None:
    # Held: code typed into `--pdb` (on stdin) and into a breakpoint() after the plugin
    # ended its run and put the runner's production settings back, and pytest.main in the
    # test's process with the plugin off (-p no:app) or loaded twice (-p app -p app): each
    # starts a child with PATH alone and loads production in-process; all refused.
    production, out = tox_run
    bt = production.parent.parent.parent / "bt"
    tree = REFUSED_IN_THE_RUN.format(bt=bt, how=BY_THE_TREE)
    here = REFUSED_IN_THE_RUN.format(bt=bt, how="this process")
    for case in ("pdb", "after", "main no:app", "main app"):
        assert _case(out, f"{case} child").startswith(tree.partition(" (an ancestor")[0]), out
        assert BY_THE_TREE in _case(out, f"{case} child"), out
        assert _case(out, f"{case} here") == here, out
    assert _case(out, "after env") == "production", out  # what the breakpoint saw
    assert _case(out, "main no:app exit") == "0", out
    assert _case(out, "main app exit") == "0", out
    # The app the wrapper started next to its tests is no test's: it loads production.
    assert _case(out, "runner's app") == f"LOADED {production}", out
