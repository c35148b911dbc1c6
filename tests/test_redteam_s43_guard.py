"""Red team 43 on the guard (branch rt-guard27): the start-up hook red team 42 installed
(``app-pytest-guard.pth``), attacked as a user who did not write it.

What broke: a pytest imported from a zip archive (``PYTHONPATH=pytest.zip``, a zipapp).
The hook armed pytest's configuration module by setting ``exec_module`` on the loader that
found it, in place; a ``zipimporter`` is one loader for every module of its archive, so
each module pytest imported from the zip afterwards was "armed" too, and every run of that
pytest in the environment failed as it started (``AttributeError: ... has no attribute
'PytestPluginManager'``), a normal run as much as a child's ``--basetemp=<production>``. The
hook now wraps the loader for that one module. The child is refused with the fallback's
words, and a plain run passes.

And a ``sitecustomize`` whose import hook instruments every module (the shape of
typeguard's ``install_import_hook()``), which puts itself first on ``sys.meta_path`` after
the ``.pth`` has run: that finder found pytest's configuration module, the hook never saw it,
and a child with autoload off and ``--basetemp=<production>`` emptied a stopped production
root. The hook now puts itself first again at the next import that reaches it, asks the
others in their turn, and arms pytest's configuration module if another finder (or a
program that ran before the ``.pth``) imported it already.

And a test that forks the run's process, whose fork runs another program (given production's
settings alone) once a later test has killed the run: the check after each test skipped the
fork as a pytest of its own (its command line is the run's until it runs another program),
handed it nothing, and it purged a stopped production root out of any run's tree. A pytest
a test left still starting as a later test kills the run held (red team 42 did not try it).

What held, beside a stopped production root: a child whose conftest unregisters every plugin
of the app's (``pluginmanager.unregister``) as pytest configures (``set_blocked`` and
``PYTEST_PLUGINS=app`` with autoload off held too, tried by hand): the fallback's guard of
pytest's base directory is in place from its registration on, and refuses the
``--basetemp``.
"""

from __future__ import annotations

import importlib.util
import marshal
import re
import sys
import types
import zipfile
from pathlib import Path

import _pytest
import iniconfig
import packaging
import pluggy
import pytest
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s40_guard import CHILD, INNER, _tests_beside
from test_redteam_s41_guard import _left_behind_a_run
from test_redteam_s42_guard import AUTOLOAD_OFF, BASETEMP, ROOT

#: A conftest that takes every plugin of the app's away as pytest configures.
TAKE_AWAY = """
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    manager = config.pluginmanager
    for name, plugin in manager.list_name_plugin():
        if name.startswith("app") or getattr(plugin, "__name__", "").startswith("app."):
            manager.unregister(plugin)
"""


#: A `sitecustomize` with an import hook that instruments every module (the shape of
#: typeguard's ``install_import_hook()``), put first on ``sys.meta_path`` after the ``.pth``.
INSTRUMENT = """
import sys
from importlib.machinery import PathFinder, SourceFileLoader

class Instrument:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        spec = PathFinder.find_spec(name, path, target)
        return spec if spec is not None and isinstance(spec.loader, SourceFileLoader) else None

sys.meta_path.insert(0, Instrument)
"""


def _refiled(code: types.CodeType, filename: str) -> types.CodeType:
    """`code`, and every code object in it, as compiled from `filename`."""
    consts = tuple(
        _refiled(const, filename) if isinstance(const, types.CodeType) else const
        for const in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def _bytecode(source: Path, filename: str) -> bytes | None:
    """The bytecode of `source` that this environment compiled already (its
    ``__pycache__``, if it is current), as zipimport reads a module's ``.pyc`` beside its
    source in an archive: an unchecked hash-based ``.pyc`` (what ``py_compile`` writes with
    ``PycInvalidationMode.UNCHECKED_HASH``), its code objects named as compiled from
    `filename` (where zipimport puts them when it compiles the source itself)."""
    try:
        cached = Path(importlib.util.cache_from_source(str(source))).read_bytes()
    except OSError:
        return None
    stat = source.stat()
    if (
        cached[:4] != importlib.util.MAGIC_NUMBER
        or int.from_bytes(cached[4:8], "little") != 0  # timestamp-based, as pip compiles
        or int.from_bytes(cached[8:12], "little") != int(stat.st_mtime) & 0xFFFFFFFF
        or int.from_bytes(cached[12:16], "little") != stat.st_size & 0xFFFFFFFF
    ):
        return None  # stale: zipimport compiles this one from its source
    code = _refiled(marshal.loads(cached[16:]), filename)
    source_hash = importlib.util.source_hash(source.read_bytes())
    flags = (0b01).to_bytes(4, "little")  # hash-based, unchecked
    return importlib.util.MAGIC_NUMBER + flags + source_hash + marshal.dumps(code)


def _zip_of_pytest(tmp_path: Path) -> Path:
    """pytest and what it imports, from this environment, in one zip archive, each module's
    bytecode beside its source (`_bytecode`), as a zipapp built with its bytecode holds it.
    Without it each run of the zip's pytest compiled every module it imports from source
    (zipimport writes no bytecode), about 0.4 s of CPU a run for pytest's own imports alone
    (bench/README.md, "perf-suite76a"); what the case is about is the loader, one
    ``zipimporter`` for every module of the archive, which loads both the same way."""
    archive = tmp_path / "pytest.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for package in (pytest, _pytest, pluggy, iniconfig, packaging):
            top = Path(package.__file__).parent
            for path in top.rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    name = path.relative_to(top.parent)
                    zipped.write(path, name)
                    if path.suffix == ".py":
                        compiled = _bytecode(path, f"{archive}/{name}")
                        if compiled is not None:
                            zipped.writestr(f"{name}c", compiled)
    return archive


def test_a_pytest_from_a_zip_or_behind_another_import_hook_is_guarded_and_runs(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    zipped = f'"PYTHONPATH": {str(_zip_of_pytest(tmp_path))!r}'
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(INSTRUMENT)
    instrumented = f'"PYTHONPATH": {str(tmp_path / "site")!r}'
    cases = {
        # A normal run of the zip's pytest: it failed as it started.
        "zip_plain": (f"{{{zipped}}}", "[]", "", None),
        "zip": (f"{{{zipped}}}", f'["--disable-plugin-autoload", "--basetemp=" + {ROOT}]', "", 1),
        "sitecustomize": (
            f'{{{instrumented}, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}}',
            f'["--basetemp=" + {ROOT}]',
            "",
            1,
        ),
        "unregister": (
            AUTOLOAD_OFF,
            f'["--basetemp=" + {ROOT}]',
            TAKE_AWAY,
            1,
        ),
    }
    tests = "".join(
        CHILD.replace("ENV", env)
        .replace("ARGS", args)
        .replace("CONFTEST)", f"{conftest!r})")
        .replace("INNER)", f"{INNER!r})")
        .replace("def test_a_child_pytest_without_the_plugin", f"def test_{name}")
        .replace('print("CHILD",', f'print("CHILD {name}",')
        for name, (env, args, conftest, _) in cases.items()
    )
    # `_tests_beside` fails the test if a child changed any file of production's root.
    production, output = _tests_beside(stopped, tmp_path, tests)
    said = dict(part.split(" ", 1) for part in output.split("CHILD ")[1:])
    assert said.keys() == cases.keys(), output
    assert said["zip_plain"].startswith("0 "), said["zip_plain"]
    refused = BASETEMP.format(production=production)
    for name, (_, _, _, code) in cases.items():
        if code is not None:
            assert said[name].startswith(f"{code} "), (name, said[name])
            assert refused in " ".join(said[name].split()), (name, said[name])


# --- the hand-over at a test's end, and what a test forked ---------------------------------

#: A test that forks its run's process; the fork waits for the run's process to be gone,
#: then becomes a program given production's settings alone (`os.execve`). A later test ends
#: the run at once.
FORKS_THEN_EXECS = """
import os, select, signal, sys

def test_1_forks():
    run = os.pidfd_open(os.getpid())
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
    env["ENV_FOR_DYNACONF"] = "production"
    out = os.open(os.environ["OUT"], os.O_WRONLY | os.O_CREAT, 0o644)
    if os.fork() == 0:
        os.setsid()
        select.select([run], [], [])  # readable once the run's process has exited
        os.dup2(out, 1)
        os.dup2(out, 2)
        argv = [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"]
        os.execve(sys.executable, argv, env)
    os.close(out)
    os.close(run)

def test_2_ends_the_run():
    os.kill(os.getpid(), signal.SIGKILL)
"""

#: A test that starts a pytest without the app's plugins (a hand-built environment with
#: production's settings), still starting as the test ends: its conftest waits for the
#: outer run's process to be gone, then starts a purge. A later test ends the run at once.
NESTED_STILL_STARTING = '''
import os, signal, subprocess, sys

CONFTEST = """
import os, select, subprocess, sys
select.select([int(os.environ["RUN_FD"])], [], [])
with open(os.environ["OUT"], "w") as out:
    subprocess.run([sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
                   stdout=out, stderr=out)
"""

def test_1_starts_a_pytest(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_inner.py").write_text("def test_inner():\\n    pass\\n")
    run = os.pidfd_open(os.getpid())
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR", "OUT")}
    env.update(ENV_FOR_DYNACONF="production", RUN_FD=str(run))
    subprocess.Popen(
        [sys.executable, "-m", "pytest", "--disable-plugin-autoload", "-p", "no:app", "-q",
         "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path, env=env, pass_fds=[run], start_new_session=True,
    )

def test_2_ends_the_run():
    os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.parametrize(
    ("script", "by"),
    [
        (FORKS_THEN_EXECS, "this process, started by the test run of pytest pid "),
        (NESTED_STILL_STARTING, "an ancestor process, pid "),
    ],
    ids=["fork", "nested-pytest-still-starting"],
)
def test_what_a_test_left_is_refused_once_a_later_test_kills_the_run(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    script: str,
    by: str,
) -> None:
    said = _left_behind_a_run(stopped, tmp_path, script)
    if script is NESTED_STILL_STARTING and "without the app's sandbox" in said:
        # Its purge came first as a pytest without the app's plugin, found in the tree.
        assert said.startswith(
            "error: refused under pytest: loading profile 'production' while pytest runs "
            "without the app's sandbox (an ancestor process (pid "
        ), said
        return
    assert said.startswith("error: refused under pytest (sandbox: "), said
    assert re.search(
        re.escape(
            "loading profile 'production'; tests run on the 'testing' profile (this process "
            "belongs to the test run through the process tree ("
        )
        + re.escape(by)
        + r"(\d+, started by the test run of pytest pid )?\d+, which has ended, ",
        said,
    ), said


def test_the_installed_start_up_hook_is_the_project_s() -> None:
    # An editable install copies `_app_pytest_guard.py` into site-packages: a checkout newer
    # than its environment runs the older hook (before red team 43 it broke every run of a
    # pytest imported from a zip), and this says so rather than a case above.
    installed = Path(sys.modules["_app_pytest_guard"].__file__ or "")
    project = Path(__file__).parents[1] / "_app_pytest_guard.py"
    assert installed.read_bytes() == project.read_bytes(), (
        f"{installed} is not this checkout's {project}: run "
        "`.venv/bin/python -m pip install -e .` again"
    )
