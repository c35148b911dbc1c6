"""Red team 58 on the guard (branch rt-guard41): a test that wipes its environment and its
process's mark.

What broke (pytest in a subprocess, the app's plugin active, beside a stopped production root
of the test's own settings):

- a test that cleared ``os.environ`` and deleted the run's mark on ``sys``
  (``_app_pytest_runs``, with or without the plugin's modules in ``sys.modules``), then ran
  the app in its own process (``app data purge --yes-i-mean-it``, with and without
  ``--profile production``). The process tree still found the run, by the registry entry of
  this very process, but pytest's presence in it was read as "a pytest without the app's
  plugin": the refusal said "while pytest runs without the app's sandbox (pytest is imported
  in this process, and the app's plugin did not start in it)" and told the test to run
  without ``-p no:app``, and, with nothing naming a profile, the process chose
  ``development``'s default rather than the run's ``testing`` (red team 57's fix did not
  reach it). Nothing was opened, but both refusals named a cause that was not there. The
  same in a fork of the run's process (a test's ``os.fork``) that deleted the mark it
  inherited.
- the same commands in a subinterpreter (``_xxsubinterpreters.run_string``; its ``sys`` has
  no mark) stopped with a bare ``ValueError: signal only works in main thread of the main
  interpreter``, from the SIGTERM handler the command line sets, before any check.

What changed: a run found by this process's own registry entry (its pid, start time and
``sys.argv`` as the plugin registered them; not a subinterpreter, not an exec, not a
handed-on daemon), or the entry of the run a process is a fork of (the run's command line
and ``sys.argv``), is the run's own pytest, its mark gone (``Run.itself``):
``app.sandbox.context`` applies the run's rules alone, as under the mark. The default purge
now reaches the run's own testing root (refused as held by this process, exit 75), and
``--profile production`` is refused as a profile the test did not opt into. ``app.cli``
runs a command without its SIGTERM handler where Python refuses to set one (a
subinterpreter), as it does in a thread.
"""

from __future__ import annotations

import sys
from pathlib import Path

import forked_pytest
from project_copy import assert_untouched, stopped_production
from test_redteam_s24_guard import _inner_env

#: The inner test: it wipes its environment (keeping only the settings and production's
#: token, which a test may read from a file), deletes the run's mark and the plugin's
#: modules, then runs the app's commands in its own process.
INNER = """
import contextlib, io, os, sys

from app.cli import cli


def run(tag, args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        try:
            cli.main(args, prog_name="app")
            code = 0
        except SystemExit as e:
            code = e.code
    print(tag, code, err.getvalue().replace(chr(10), " "))


def test_a_wiped_environment_and_mark():
    kept, mark = dict(os.environ), sys._app_pytest_runs
    plugin = {n: m for n, m in sys.modules.items() if n.startswith("app.testing")}
    os.environ.clear()
    # The plugin neutralised APP_API_TOKEN in the run: the outer test passes it as RT_TOKEN.
    os.environ.update(APP_SETTINGS_DIR=kept["APP_SETTINGS_DIR"], APP_API_TOKEN=kept["RT_TOKEN"])
    del sys._app_pytest_runs
    for name in plugin:
        del sys.modules[name]
    try:
        run("PROD", ["--profile", "production", "data", "purge", "--yes-i-mean-it"])
        run("DEFAULT", ["data", "purge", "--yes-i-mean-it"])
        run("TRASH", ["data", "empty-trash", "--yes-i-mean-it"])
        # The command line's own argv, as a test of a command line sets it (red team 73).
        argv, sys.argv = sys.argv, ["app", "data", "purge", "--yes-i-mean-it"]
        try:
            run("ARGVPROD", ["--profile", "production", "data", "purge", "--yes-i-mean-it"])
            run("ARGVDEFAULT", ["data", "purge", "--yes-i-mean-it"])
            # Its sealed copies closed too: still no exec (red team 73 on regress).
            for fd in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:app-run-entry:"):
                        os.close(int(fd))
            run("ARGVCLOSED", ["--profile", "production", "data", "purge", "--yes-i-mean-it"])
        finally:
            sys.argv = argv
    finally:
        sys._app_pytest_runs = mark
        sys.modules.update(plugin)
        os.environ.clear()
        os.environ.update(kept)


def test_a_fork_that_wipes_both():
    pid = os.fork()
    if pid == 0:
        try:
            token = os.environ["RT_TOKEN"]
            settings = os.environ["APP_SETTINGS_DIR"]
            os.environ.clear()
            os.environ.update(APP_SETTINGS_DIR=settings, APP_API_TOKEN=token)
            del sys._app_pytest_runs
            run("FORKPROD", ["--profile", "production", "data", "purge", "--yes-i-mean-it"])
            run("FORKDEFAULT", ["data", "purge", "--yes-i-mean-it"])
            sys.stdout.flush()
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0


#: The same commands in a subinterpreter, whose sys has no mark of its own.
IN_SUBINTERPRETER = '''
import contextlib, io
from app.cli import cli
for tag, args in [("SUBPROD", ["--profile", "production", "data", "purge", "--yes-i-mean-it"]),
                  ("SUBDEFAULT", ["data", "purge", "--yes-i-mean-it"])]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        try:
            cli.main(args, prog_name="app"); code = 0
        except SystemExit as e:
            code = e.code
        except BaseException as e:
            code = repr(e)
    print(tag, code, err.getvalue().replace(chr(10), " "), flush=True)
'''


def test_a_subinterpreter_that_wipes_its_environment():
    try:
        import _xxsubinterpreters as interpreters
    except ImportError:
        try:
            import _interpreters as interpreters
        except ImportError:
            print("SUBPROD none", flush=True)
            return
    kept = dict(os.environ)
    os.environ.clear()
    os.environ.update(APP_SETTINGS_DIR=kept["APP_SETTINGS_DIR"], APP_API_TOKEN=kept["RT_TOKEN"])
    try:
        code = f"import sys; sys.path[:] = {sys.path!r}" + chr(10) + IN_SUBINTERPRETER
        interpreters.run_string(interpreters.create(), code)
    finally:
        os.environ.clear()
        os.environ.update(kept)
"""


def test_a_test_that_drops_its_mark_keeps_its_runs_rules(tmp_path: Path) -> None:
    settings, production, token, sessions = stopped_production(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_inner.py").write_text(INNER)
    basetemp = tmp_path / "bt"
    env = _inner_env(APP_SETTINGS_DIR=str(settings), RT_TOKEN=token)
    done = forked_pytest.run(
        [sys.executable, "-mpytest", "-q", "-s", "-p", "no:randomly",
         "-p", "no:cacheprovider", f"--basetemp={basetemp}", "test_inner.py"],
        env, project,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    # pytest's progress dot may lead a line (-q).
    said = [line.lstrip(".") for line in done.stdout.splitlines()]
    lines = {line.split(" ", 1)[0]: line for line in said}
    assert "Traceback" not in out, out
    assert_untouched(production, sessions, out)
    # Before the fix: "loading profile 'production' while pytest runs without the app's
    # sandbox (pytest is imported in this process, and the app's plugin did not start in
    # it) ... run without `-p no:app`".
    assert lines["PROD"].startswith("PROD 78 error: refused under pytest (sandbox: "), out
    assert "loading profile 'production'; tests run on the 'testing' profile" in out, out
    assert "(this process, registered in " in lines["PROD"], out
    # The same with `sys.argv` set to the command's, as a test of a command line sets it:
    # before red team 73's fix, "(this process, pytest pid N until it ran another program in
    # its place (exec), ...", an exec that never happened.
    assert lines["ARGVPROD"].startswith("ARGVPROD 78 error: refused under pytest (sandbox: "), out
    assert "(this process, registered in " in lines["ARGVPROD"], out
    assert "another program" not in out, out
    # Named as one by the copy alone before red team 73 on regress, which this closed.
    assert "(this process, registered in " in lines["ARGVCLOSED"], out
    assert lines["ARGVDEFAULT"].startswith("ARGVDEFAULT 75 error: "), out
    assert "that is this process" in lines["ARGVDEFAULT"], out
    assert "without the app's sandbox" not in out, out
    # Before the fix: development's default, refused (78) as under a pytest without the
    # plugin. Now the run's testing root in its sandbox, which this very process holds.
    testing = basetemp / "data" / "testing"
    for tag in ("DEFAULT", "TRASH"):
        assert lines[tag].startswith(f"{tag} 75 error: "), out
        assert f"data root {testing} is held by pid " in lines[tag], out
        assert "that is this process" in lines[tag], out
    # The same in a fork of the run's process (a test's os.fork) that drops the mark it
    # inherited: the run's rules, and its testing root, held by the run (its parent).
    assert lines["FORKPROD"].startswith("FORKPROD 78 error: refused under pytest (sandbox: "), out
    assert "(an ancestor process, pytest pid " in lines["FORKPROD"], out
    assert lines["FORKDEFAULT"].startswith("FORKDEFAULT 75 error: "), out
    assert "that is the test run this process belongs to" in lines["FORKDEFAULT"], out
    # In a subinterpreter (a sys of its own, no mark): every command stopped with a bare
    # ValueError "signal only works in main thread of the main interpreter" before the fix.
    if lines["SUBPROD"] != "SUBPROD none":
        assert lines["SUBPROD"].startswith("SUBPROD 78 error: refused under pytest (sandbox: "), out
        assert "in a subinterpreter" in lines["SUBPROD"], out
        assert lines["SUBDEFAULT"].startswith("SUBDEFAULT 75 error: "), out
        assert f"data root {testing} is held by pid " in lines["SUBDEFAULT"], out
