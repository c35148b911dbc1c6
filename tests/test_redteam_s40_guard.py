"""Red team 40 on the guard: the fallback entry point (``app_fallback``) and the wrapper of
pytest's ``TempPathFactory.getbasetemp`` that guards a pytest run with the app's plugin
switched off (``-p no:app``), beside a stopped production root. What broke, each now refused:

- a test's child ``python -m pytest -p no:app`` given ``TMPDIR`` (or
  ``PYTEST_DEBUG_TEMPROOT``) in a stopped production root, and no ``--basetemp``: pytest made
  its ``pytest-of-<user>`` and the tests' directories in production's root (only a given
  ``--basetemp`` was checked); the same child with the plugin left on, inactive for want
  of settings where it ran;
- the same child whose conftest made pytest's base directory in a ``tryfirst``
  ``pytest_configure``, before the fallback's own: the ``--basetemp`` (production's
  ``sessions/``) was emptied unchecked;
- outside any test run, ``pytest -p no:app --basetemp=<stopped production>/sessions`` emptied
  it, where the same run with the plugin inactive (another project's) refuses it;
- outside any run, a ``TMPDIR`` in a stopped production root, the plugin off or inactive:
  pytest made its ``pytest-of-<user>`` there;
- a user's own ``pytest -p no:app`` in a shell with a broken ``PYTEST_APP_SANDBOX`` (``export
  PYTEST_APP_SANDBOX=``): every test that asked for ``tmp_path`` errored with a traceback
  through the wrapper, though no run was there to guard.

Red team 76 added two cases to the children's: a child pytest of the run, plugin off or
inactive, whose conftest removes production's stamp by plain Python (the check of Python's
writes was the plugin's alone).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s36_guard import _run_beside
from test_redteam_s39_guard import _answers, _project
from test_server_e2e import Server, app_env, snapshot

INNER = "def test_inner(tmp_path):\n    (tmp_path / 'x').write_text('x')\n"

#: A test whose child runs pytest with the plugin off, given a hand-built environment
#: (`ENV`, added to PATH) and arguments (`ARGS`), a conftest (`CONFTEST`) beside its test.
CHILD = """
import os, subprocess, sys

def test_a_child_pytest_without_the_plugin(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {"PATH": os.environ["PATH"], **ENV}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", *ARGS,
         "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    print("CHILD", done.returncode, done.stdout + done.stderr)
"""

#: A conftest that makes pytest's base directory before any other plugin's configure.
CONFTEST_FIRST = """
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    print("EARLY", pytest.TempPathFactory.from_config(config, _ispytest=True).getbasetemp())
"""

SESSIONS = 'os.path.join(os.environ["PRODUCTION"], "sessions")'

#: Red team 76: a conftest that removes production's stamp by plain Python, at its import.
REMOVES_THE_STAMP = """
import os

os.remove(os.environ["VICTIM"])
"""
STAMP = 'os.path.join(os.environ["PRODUCTION"], ".app-profile.json")'


def _tests_beside(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    tests: str,
) -> tuple[Path, str]:
    """Run `tests` beside the stopped production root (given as ``$PRODUCTION``), which they
    must leave unchanged, and pass: production's root and the run's output."""
    settings, production = stopped
    project = _project(tmp_path, test_given=tests)
    code, output = _run_beside(
        production, project, settings, "-q", "-s", "-p", "no:randomly", PRODUCTION=str(production)
    )
    assert code == 0, output
    return production, output


#: Each case of a child pytest without the plugin: its environment, its arguments, its
#: conftest, and the words of its refusal.
CHILD_CASES = {
    "tmpdir": ('{"TMPDIR": os.environ["PRODUCTION"]}', "[]", "", "TMPDIR is {production}"),
    # The plugin left on, and inactive (no settings where the child runs).
    "tmpdir-inactive": (
        '{"TMPDIR": os.environ["PRODUCTION"]}',
        "PLUGIN_ON",
        "",
        "TMPDIR is {production}",
    ),
    "debug-temproot": (
        f'{{"PYTEST_DEBUG_TEMPROOT": {SESSIONS}}}',
        "[]",
        "",
        "PYTEST_DEBUG_TEMPROOT is {production}/sessions",
    ),
    "conftest-first": (
        "{}",
        f'["--basetemp=" + {SESSIONS}]',
        CONFTEST_FIRST,
        "--basetemp {production}",
    ),
    # What held: the --basetemp given through the environment's or an ini option's
    # addopts, and to a child's xdist controller.
    "addopts-env": (f'{{"PYTEST_ADDOPTS": "--basetemp=" + {SESSIONS}}}', "[]", "", "--basetemp"),
    "addopts-ini": ("{}", f'["-o", "addopts=--basetemp=" + {SESSIONS}]', "", "--basetemp"),
    "xdist": ("{}", f'["-n", "2", "--basetemp=" + {SESSIONS}]', "", "--basetemp"),
    "xdist-tmpdir": (
        '{"TMPDIR": os.environ["PRODUCTION"]}',
        '["-n", "2"]',
        "",
        "TMPDIR is {production}",
    ),
    # Red team 76: Python's own writes, checked in a child pytest of the run whose plugin
    # is switched off or inactive too (the stamp was removed).
    "python-write": (
        f'{{"VICTIM": {STAMP}}}',
        "[]",
        REMOVES_THE_STAMP,
        "app: refused to delete {production}/.app-profile.json: it lies in production's",
    ),
    "python-write-inactive": (
        f'{{"VICTIM": {STAMP}}}',
        "PLUGIN_ON",
        REMOVES_THE_STAMP,
        "app: refused to delete {production}/.app-profile.json: it lies in production's",
    ),
}


@pytest.fixture(scope="module")
def beside_a_stopped_root(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, str], str, str]:
    """One outer run beside the stopped production root (given as ``$PRODUCTION``), with
    three modules: a test whose forked child leaves a daemon (`FORKED_CHILD_LEAVES_A_DAEMON`,
    first), the tests that run pytest in the run's own process (`IN_PROCESS`), and one test
    per case of `CHILD_CASES`, each starting its own child pytest (the plugin switched off
    with ``-p no:app``, or left on and inactive), whose exit code and output it prints after
    ``CHILD <case>``. Fails if the run did not pass, or if it or the daemon changed any file
    of production's root. Production's root, what each case's child said, what the
    in-process tests printed, and what the daemon was told once the run had ended.

    One outer pytest for the three, where each had its own (about 0.5 s of CPU each)."""
    children = "".join(
        CHILD.replace("ENV", env)
        .replace("ARGS", "[]" if args == "PLUGIN_ON" else f'["-p", "no:app", *{args}]')
        .replace("CONFTEST)", f"{conftest!r})")
        .replace("INNER)", f"{INNER!r})")
        .replace("def test_a_child_pytest_without_the_plugin", f"def test_{name.replace('-', '_')}")
        .replace('print("CHILD",', f'print("CHILD {name}",')
        for name, (env, args, conftest, _) in CHILD_CASES.items()
    )
    tmp_path = tmp_path_factory.mktemp("s40-beside")
    settings, production = stopped
    # Modules run in their names' order: the daemon's first, the children's last.
    project = _project(
        tmp_path,
        test_a_daemon=FORKED_CHILD_LEAVES_A_DAEMON,
        test_b_in_process=IN_PROCESS,
        test_c_children=children,
    )
    out = tmp_path / "out.txt"
    before = snapshot(production)
    code, output = _run_beside(
        production, project, settings, "-q", "-s", "-p", "no:randomly",
        PRODUCTION=str(production), OUT=str(out),
    )  # fmt: skip
    assert code == 0, output
    said = _answers(out, 1)[out.name]  # the daemon acts once the run's process has ended
    assert snapshot(production) == before, said
    assert said.startswith("error: refused under pytest (sandbox: "), said
    in_process, *parts = output.split("CHILD ")
    by_case = dict(part.split(" ", 1) for part in parts)
    assert by_case.keys() == CHILD_CASES.keys(), output
    return production, by_case, in_process, said


@pytest.fixture(scope="module")
def children_without_the_plugin(
    beside_a_stopped_root: tuple[Path, dict[str, str], str, str],
) -> tuple[Path, dict[str, str]]:
    """Production's root, and what each case of `CHILD_CASES` said (`beside_a_stopped_root`)."""
    production, said, _, _ = beside_a_stopped_root
    return production, said


@pytest.mark.parametrize("case", CHILD_CASES)
def test_a_child_pytest_without_the_plugin_cannot_reach_a_stopped_root(
    children_without_the_plugin: tuple[Path, dict[str, str]], case: str
) -> None:
    production, said = children_without_the_plugin
    output, refused = said[case], CHILD_CASES[case][3]
    assert not output.startswith("0 "), output  # the child's exit code
    assert "app: refus" in output and refused.format(production=production) in output, output
    if refused.startswith("TMPDIR"):
        assert (
            "which overlaps the data root of profile 'production (protected by the enclosing "
            "test run, pytest pid "
        ) in output, output
        assert (
            f"({production}), because TMPDIR is {production}. Point TMPDIR outside every data "
            "root, or pass --basetemp"
        ) in output, output


def _pytest_outside_any_run(cwd: Path, *args: str, **env: str) -> tuple[int, str]:
    """``python -m pytest -p no:app`` in a PID namespace of its own: no run above it."""
    if not _own_proc_allowed():
        pytest.skip("this machine does not let this user make a PID namespace")
    given = [f"PATH={os.environ['PATH']}", *(f"{k}={v}" for k, v in env.items())]
    done = subprocess.run(
        [*OWN_PROC, "env", "-i", *given,
         sys.executable, "-m", "pytest", "-p", "no:app", "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_outside_any_run_a_basetemp_in_a_stopped_root_is_refused_with_the_plugin_off(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    _settings, production = stopped
    (tmp_path / "test_inner.py").write_text(INNER)
    before = snapshot(production)
    code, output = _pytest_outside_any_run(tmp_path, f"--basetemp={production}/sessions")
    assert snapshot(production) == before, output
    assert code == 1, output
    assert (
        f"app: refusing --basetemp {production}/sessions: pytest empties it in "
        f"{production}/sessions, which lies inside the data root {production} (it has a "
        "profile stamp, .app-profile.json). Choose a temporary directory outside every data root"
    ) in output, output


@pytest.mark.parametrize("value", ["", "relative/sandbox"])
def test_a_broken_sandbox_variable_leaves_a_run_without_the_plugin_alone(
    tmp_path: Path, value: str
) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    code, output = _pytest_outside_any_run(tmp_path, PYTEST_APP_SANDBOX=value)
    assert code == 0, output
    assert "1 passed" in output, output


#: Tests that run pytest in the run's own process with the plugin off, each reaching
#: production's sessions/ another way.
IN_PROCESS = """
import os
import pytest

SESSIONS = os.path.join(os.environ["PRODUCTION"], "sessions")
INNER = "def test_inner(tmp_path):\\n    (tmp_path / 'x').write_text('x')\\n"

def _inner(tmp_path):
    path = tmp_path / f"test_inner_{tmp_path.name}.py"  # each its own module
    path.write_text(INNER)
    return str(path)

def test_debug_temproot(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", SESSIONS)
    print("MAIN", pytest.main(["-p", "no:app", "-q", _inner(tmp_path)]))

def test_link(tmp_path):
    (tmp_path / "link").symlink_to(SESSIONS)
    print("MAIN", pytest.main(["-p", "no:app", "-q", "--basetemp", str(tmp_path / "link"),
                               _inner(tmp_path)]))

def test_above(tmp_path):
    above = os.path.dirname(os.path.dirname(os.environ["PRODUCTION"]))
    print("MAIN", pytest.main(["-p", "no:app", "-q", "--basetemp", above, _inner(tmp_path)]))

def test_relative_after_chdir(tmp_path, monkeypatch):
    inner = _inner(tmp_path)
    monkeypatch.chdir(os.environ["PRODUCTION"])
    print("MAIN", pytest.main(["-p", "no:app", "-q", "--basetemp=sessions", inner]))
"""


def test_a_pytest_in_the_run_s_process_reaches_no_root_another_way(
    beside_a_stopped_root: tuple[Path, dict[str, str], str, str],
) -> None:
    # Held: PYTEST_DEBUG_TEMPROOT in production (checked since this red team), a
    # --basetemp that is a symbolic link to production's sessions/, one above production's
    # root, and a relative one given after a chdir into production's root (refused as the
    # nested run starts since red team 41, its current directory a data root: exit 4).
    # `beside_a_stopped_root` fails if the run changed any file of production's root.
    _production, _said, output, _daemon = beside_a_stopped_root
    assert output.count("MAIN 1") == 3 and output.count("MAIN 4") == 1, output
    assert output.count("app: refusing") >= 4, output


def test_outside_any_run_a_basetemp_above_a_live_root_is_refused_with_the_plugin_off(
    tmp_path: Path,
) -> None:
    # Held since the fix above: a live server's root below the --basetemp (held, its stamp
    # below, not above, the directory pytest empties).
    root = tmp_path / "above" / "data"
    server = Server(app_env(root), tmp_path / "server.log").wait_ready()
    try:
        (tmp_path / "test_inner.py").write_text(INNER)
        before = snapshot(root)
        code, output = _pytest_outside_any_run(tmp_path, f"--basetemp={tmp_path / 'above'}")
        assert snapshot(root) == before, output
        assert code == 1, output
        assert f"app: refusing --basetemp {tmp_path / 'above'}" in output, output
        assert f"pid {server.pid}" in output, output
        assert server.process.poll() is None
    finally:
        server.stop()


@pytest.mark.parametrize("plugin", ["off", "inactive"])
def test_outside_any_run_a_temporary_root_in_a_stopped_root_is_refused(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    plugin: str,
) -> None:
    # Outside any run, pytest made its pytest-of-<user> in a stopped production root named
    # as TMPDIR, with the plugin off or inactive (another project's run): refused by its
    # stamp now, as a --basetemp there is.
    _settings, production = stopped
    (tmp_path / "test_inner.py").write_text(INNER)
    before = snapshot(production)
    args = ["-p", "app"] if plugin == "inactive" else []
    code, output = _pytest_outside_any_run(tmp_path, *args, TMPDIR=str(production))
    assert snapshot(production) == before, output
    assert code == (4 if plugin == "inactive" else 1), output
    assert ("The app's plugin is inactive in this run" in output) == (plugin == "inactive")
    assert (
        f"pytest would create (and clean up) its temporary directories in {production}/"
        f"pytest-of-{os.environ.get('USER', 'root')}, which lies inside the data root "
        f"{production} (it has a profile stamp, .app-profile.json), because TMPDIR is "
        f"{production}. Point TMPDIR outside every data root, or pass --basetemp"
    ) in output, output


#: A test whose forked child (multiprocessing's fork: it runs threading's shutdown hooks,
#: the run's hand-over among them, and exits) leaves a daemon, given production's settings
#: alone, that acts once the run has ended.
FORKED_CHILD_LEAVES_A_DAEMON = """
import multiprocessing, os, subprocess, sys

def _leave(run):
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
    env["ENV_FOR_DYNACONF"] = "production"
    purge = f"{sys.executable} -m app data purge --yes-i-mean-it > {os.environ['OUT']} 2>&1"
    ended = f"while kill -0 {run} 2>/dev/null; do sleep 0.05; done"  # the run's process
    # Its output goes to $OUT alone: under `-s` the run's own output is the pipe its caller
    # reads to its end, which a daemon holding it would keep open for ever.
    subprocess.Popen(["sh", "-c", f"{ended}; exec {purge}"], env=env, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)

def test_a_forked_child_leaves_a_daemon():
    child = multiprocessing.get_context("fork").Process(target=_leave, args=(os.getpid(),))
    child.start()
    child.join()
    assert child.exitcode == 0
"""


def test_a_daemon_a_forked_child_leaves_stays_in_the_run(
    beside_a_stopped_root: tuple[Path, dict[str, str], str, str],
) -> None:
    # Held: the forked child runs the run's hand-over at its own exit (threading's hooks),
    # as a fork of the run: its daemon, the run's subreaper's child once the fork exited,
    # is handed an entry of its own when the run ends, and refused (`beside_a_stopped_root`
    # asserts the refusal and production's root unchanged once the daemon has acted).
    _production, _said, _output, said = beside_a_stopped_root
    assert "belongs to the test run" in said, said
