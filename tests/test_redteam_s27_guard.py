"""Red team 27 on the guard: what pytest itself writes, outside any test, and nested runs.

Each case is real: an ``app serve`` holding its root, a stopped production root named by
the settings, pytest runs in subprocesses told (by options, ``PYTEST_ADDOPTS``, an ini file,
the directory they start in) to write there, and runs nested inside a run in a PID
namespace with a ``/proc`` of its own (outside this suite's run), whose children load
production with a hand-built environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import forked_app
import forked_pytest
import pytest
from project_copy import copy_project_settings
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_redteam_s24_guard import A_TEST, _inner_env, serving_one_session
from test_server_e2e import Server, app_env

#: How every refusal of this kind ends its first sentence's reason.
NOT_THE_APPS = "None of it goes through the app, so its sandbox cannot stop it, whoever's run it is"
MOVE_IT = (
    "Point it outside every data root, or leave it out (of the command line, PYTEST_ADDOPTS "
    "or the ini file)"
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A live server with one session."""
    root = tmp_path_factory.mktemp("s27") / "data"
    with serving_one_session(root, root.parent / "server.log") as server:
        yield server


def _tmpdir(tmp_path: Path) -> str:
    """A TMPDIR apart from the settings' roots, which lie in this test's own directory."""
    (tmp_path / "tmp").mkdir()
    return str(tmp_path / "tmp")


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def _cases(
    root: Path, session: Path, project: Path
) -> list[tuple[list[str], dict[str, str], Path]]:
    """Each case a pytest told to write in the live root: its arguments, the variables it is
    given on top of the test's environment (``APP_SETTINGS_DIR=""``: left out, xdist's case,
    the plugin inactive) and the directory it starts in; the plugin active but for xdist's."""
    test = "test_nothing.py"
    return [
        ([f"--junitxml={session}/session.json", test], {}, project),
        ([f"--debug={session}/session.json", test], {}, project),
        ([test], {"PYTEST_ADDOPTS": f"--log-file={root}/.server.lock"}, project),
        # with a pytest.ini whose cache_dir is the root's sessions/ (written for this run only)
        (["-p", "cacheprovider", test], {}, project),
        (
            [
                "-c",
                "/dev/null",
                "-W",
                "ignore::DeprecationWarning",
                "--dist",
                "load",
                "--tx",
                f"popen//chdir={root}",
                f"--rsyncdir={project}/sessions",
                test,
            ],
            {"APP_SETTINGS_DIR": ""},
            project,
        ),
        ([str(project / test)], {}, root / "sessions"),
    ]


def test_what_pytest_writes_outside_any_test_is_refused_in_a_live_data_root(
    live: Server, tmp_path: Path
) -> None:
    # pytest writes where its options and ini values say, before and after the tests, where
    # no sandbox applies: --junitxml and --debug rewrote a live session's session.json (the
    # server then answered 500 for it), --log-file emptied the server's lock file, a
    # cache_dir put v/cache/ into sessions/ (`app data check`: unknown-entry), xdist's
    # --tx popen//chdir= copied pytest into the root and rsynced a directory named sessions
    # over the live sessions/, deleting every session; a run started in the root writes
    # what its plugins write by relative paths there.
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_nothing.py").write_text(A_TEST)
    (project / "sessions").mkdir()
    (project / "sessions" / "notes.txt").write_text("a directory named sessions\n")
    session = next((live.root / "sessions").iterdir())
    before = _tree(live.root)
    settings = copy_project_settings(tmp_path / "settings")
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path))
    # Each pytest forked from a zygote that imported pytest once (tests/forked_pytest.py), one
    # after the other, as a shell would run them: what each is refused for is its options,
    # its ini file and its directory, none of which a fork changes (about 0.2 s of CPU each
    # less than six `python -m pytest` execs: bench/README.md, "perf-suite75").
    runs: list[tuple[int, str]] = []
    for args, extra, cwd in _cases(live.root, session, project):
        given = {k: v for k, v in {**env, **extra}.items() if v}
        if "cacheprovider" in args:
            (project / "pytest.ini").write_text(f"[pytest]\ncache_dir = {live.root}/sessions\n")
        try:
            done = forked_pytest.run(
                [sys.executable, "-m", "pytest", *args], given, cwd, merged=True
            )
        finally:
            (project / "pytest.ini").unlink(missing_ok=True)
        runs.append((done.returncode, done.stdout))
    said = "\n".join(f"{output}=== {code}" for code, output in runs)
    assert _tree(live.root) == before, said
    with live.client() as client:
        assert client.get(f"/sessions/{session.name}").status_code == 200
    assert len(runs) == 6, said
    assert all(code == 4 for code, _ in runs), said
    holder = f"held by pid {live.pid}, kind server, profile testing"
    lies = f"which lies in the data root {live.root} ({holder}"
    expected = [
        f"pytest's --junitxml rewrites {session}/session.json as the run ends, {lies}",
        f"pytest's --debug rewrites {session}/session.json as the run starts, {lies}",
        (
            f"pytest's log_file (--log-file) rewrites {live.root}/.server.lock as the run "
            f"starts, {lies}"
        ),
        f"pytest's cache provider writes its cache_dir, {live.root}/sessions, {lies}",
        f"xdist's --tx popen//chdir={live.root} runs its worker in {live.root}, {lies}",
        (
            "pytest's plugins write relative paths (hypothesis's .hypothesis/, a relative "
            f"--junitxml) in the current directory, {live.root}/sessions, {lies}"
        ),
    ]
    outputs = [output for _, output in runs]
    for run, says in zip(outputs, expected, strict=True):
        assert f"ERROR: app: refusing to run: {says}" in run, run
        assert NOT_THE_APPS in run, run
    for run in outputs[:4]:
        assert MOVE_IT in run, run
    assert "The app's plugin is inactive in this run (" in outputs[4], outputs[4]
    assert "and pytest writes there all the same" in outputs[4], outputs[4]
    assert "Run pytest from a directory outside every data root" in outputs[5], outputs[5]


def _stopped_production(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the project's settings, and production's root in it holding one session,
    with no server: only the settings name the root."""
    settings = copy_project_settings(tmp_path / "settings")
    production = settings / "data" / "production"
    forked_app.run_c(CREATE, app_env(production, profile="production"))
    return settings, production


def test_what_pytest_would_write_in_a_stopped_production_root_is_refused(
    tmp_path: Path,
) -> None:
    # With no server, production's root holds no lock: the settings name it. A nested run's
    # pyproject.toml sets cache_dir there, and --junitxml names a session's session.json.
    settings, production = _stopped_production(tmp_path)
    session = next((production / "sessions").iterdir())
    before = _tree(production)
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_nothing.py").write_text(A_TEST)
    (project / "pyproject.toml").write_text(
        f'[tool.pytest.ini_options]\ncache_dir = "{production}"\n'
    )
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path))
    runs = [
        forked_pytest.run(
            [sys.executable, "-m", "pytest", *extra, "test_nothing.py"], env=env, cwd=project
        )
        for extra in ([], [f"--junitxml={session}/session.json"])
    ]
    assert _tree(production) == before, [run.stdout + run.stderr for run in runs]
    cache, junit = (run.stdout + run.stderr for run in runs)
    assert [run.returncode for run in runs] == [4, 4], (cache, junit)
    stopped = f"the data root of profile 'production' ({production}; no process holds it now)"
    assert (
        f"ERROR: app: refusing to run: pytest's cache provider writes its cache_dir, "
        f"{production}, which lies in {stopped}. {NOT_THE_APPS}. {MOVE_IT}"
    ) in cache, cache
    assert (
        f"ERROR: app: refusing to run: pytest's --junitxml rewrites {session}/session.json "
        f"as the run ends, which lies in {stopped}"
    ) in junit, junit


CREATE = (
    "from app.config import load\n"
    "from app.storage import open_storage\n"
    "with open_storage(load(serving=False), writer=True) as store:\n"
    "    store.create_session('a review', {})\n"
)


def test_a_pycache_prefix_in_a_data_root_is_refused_before_the_tests_are_compiled(
    tmp_path: Path,
) -> None:
    # PYTHONPYCACHEPREFIX puts every module's bytecode under one directory, and pytest's
    # assertion rewriting writes each test module's there too: in a data root, hundreds of
    # files under its sessions/. The run is refused once the plugin runs; what Python
    # compiled before (pytest itself) is written already, which the refusal says.
    settings, production = _stopped_production(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_nothing.py").write_text(A_TEST)
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings),
        PYTHONPYCACHEPREFIX=str(production),
        TMPDIR=_tmpdir(tmp_path),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_nothing.py"],
        env=env, cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 4, out
    assert not list(production.rglob("test_nothing*.pyc")), out
    assert (
        "ERROR: app: refusing to run: Python and pytest's assertion rewriting write the "
        "bytecode of every module they import under sys.pycache_prefix, "
        f"{production}, which lies in the data root of profile 'production' ({production}; "
        "no process holds it now)"
    ) in out, out
    assert (
        "Unset PYTHONPYCACHEPREFIX (or -X pycache_prefix), or point it outside every data "
        "root (what Python imported before the plugin ran is written there already)"
    ) in out, out


#: The load of production each nested case makes, in its test's process and in a child
#: given PATH and the settings alone; recorded in a file, as xdist's workers print nothing.
PROBE = """
import os, subprocess, sys

LOAD = (
    "from app.config import load\\n"
    "from app.errors import SandboxViolationError\\n"
    "try:\\n"
    "    print('LOADED', load('production').data_root)\\n"
    "except SandboxViolationError as refused:\\n"
    "    print('REFUSED', refused)\\n"
)


def record(name):
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": os.environ["S27_SETTINGS"]}
    child = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True)
    try:
        from app.config import load

        here = f"LOADED {load('production').data_root}"
    except Exception as error:
        here = f"REFUSED {error}"
    with open(os.environ["S27_OUT"], "a") as out:
        said = (child.stdout + child.stderr).strip().replace("\\n", " ")
        out.write(f"CASE {name} child: {said}\\nCASE {name} here: {here}\\n")
"""

#: A run (in a PID namespace of its own, production exported) whose test starts nested
#: runs, each told something new: --import-mode=importlib, a PYTEST_PLUGINS module that
#: loads production at import, and PYTEST_ADDOPTS that switch the plugin off.
NESTING = """
import os, subprocess, sys
from pathlib import Path

INNER = "import sys; sys.path.insert(0, {probe!r})\\nfrom probe import record\\n\\n\\n" \\
    "def test_inner():\\n    record({name!r})\\n"
EVIL = "from app.config import load\\ntry:\\n    load('production')\\nexcept Exception as e:\\n" \\
    "    print('AT IMPORT', type(e).__name__)\\n"


def nested(tmp_path, name, args, **env):
    where = tmp_path / name
    where.mkdir()
    (where / "test_inner.py").write_text(INNER.format(probe=os.environ["S27_PROBE"], name=name))
    (where / "evil.py").write_text(EVIL)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--basetemp={where / 'bt'}", *args, "test_inner.py"],
        cwd=where, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    with open(os.environ["S27_OUT"], "a") as out:
        said = (done.stdout + done.stderr).replace("\\n", " ")
        out.write(f"EXIT {name}: {done.returncode} {said}\\n")


def test_nested(tmp_path):
    nested(tmp_path, "importlib", ["--import-mode=importlib"])
    nested(tmp_path, "plugins", [], PYTEST_PLUGINS="evil", PYTHONPATH=str(tmp_path / "plugins"))
    nested(tmp_path, "addopts", [], PYTEST_ADDOPTS="-p no:app -p no:xdist")
"""


def test_nested_runs_told_other_environments_and_options_stay_in_the_run(
    tmp_path: Path,
) -> None:
    # Held: a run's test starts pytest with --import-mode=importlib, a PYTEST_PLUGINS
    # module that loads production at import, and PYTEST_ADDOPTS="-p no:app -p no:xdist"
    # (xdist's --tx popen//env: and popen//python=env -i ... were tried by hand): in each, the
    # test's own load of production and a child's, given PATH and the settings alone, are
    # refused, and production's session is left alone.
    if not _own_proc_allowed():
        pytest.skip("needs unshare --pid --mount-proc")
    settings, production = _stopped_production(tmp_path)
    before = _tree(production)
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "probe.py").write_text(PROBE)
    (tmp_path / "outer").mkdir()
    (tmp_path / "outer" / "test_nesting.py").write_text(NESTING)
    out = tmp_path / "out.txt"
    own_proc = ("unshare", "--pid", "--fork", "--mount-proc") if os.geteuid() == 0 else OWN_PROC
    done = subprocess.run(
        [*own_proc, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'bt'}", "test_nesting.py"],
        env=_inner_env(
            APP_SETTINGS_DIR=str(settings), ENV_FOR_DYNACONF="production",
            S27_SETTINGS=str(settings), S27_OUT=str(out), S27_PROBE=str(tmp_path / "probe"),
        ),
        cwd=tmp_path / "outer", capture_output=True, text=True, check=False,
    )  # fmt: skip
    said = out.read_text() if out.exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + said
    assert _tree(production) == before, said
    for name in ("importlib", "plugins", "addopts"):
        assert f"EXIT {name}: 0 " in said, said
        for where in ("child", "here"):
            assert f"CASE {name} {where}: REFUSED refused under pytest" in said, said
        assert f"CASE {name} here: LOADED" not in said, said
    assert "AT IMPORT SandboxViolationError" in said, said
    assert "LOADED" not in said, said
