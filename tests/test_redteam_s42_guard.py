"""Red team 42 on the guard (branch rt-guard26): a test's child pytest that loads neither of
the package's pytest entry points.

Beside a stopped production root, a test's child ``python -m pytest`` with plugin autoload
off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` in a hand-built environment, or pytest's own
``--disable-plugin-autoload`` option, which needs no environment at all), or with
``-p no:app -p no:app_fallback``, ran none of the app's code: ``--basetemp=<production
root>`` emptied the whole root as its first test asked for ``tmp_path``, ``--junitxml``
rewrote its profile stamp, ``TMPDIR`` in it made pytest's directories there, and without a
``--basetemp`` its clean-up at its end deleted an older numbered directory holding a live
server's root (kept as a case of ``tests/test_redteam_s39_guard.py``; the *not stopped* rows
of red teams 39 to 41). The package now installs
``app-pytest-guard.pth``, which registers the fallback (`app.testing.startup`) in every
pytest run of the environment that has not registered the app's plugin: each is refused, or
the directory kept, with the fallback's words.

And under ``python ci.py``, whose module calls ``pytest.main`` (no command line shows
pytest), a ``-p`` plugin's child, started from its ``pytest_addoption`` or as it was
imported, given production's settings alone, purged a stopped production root, and so did a
test's child with ``-p no:app``: the ``.pth``'s hook now announces the run in the registry as
pytest reads its ``-p`` options, and says so where the app's plugin stays off.
"""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

import pytest
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s40_guard import CHILD, INNER, _tests_beside
from test_server_e2e import snapshot

from app import sandbox as sandboxing

ROOT = 'os.environ["PRODUCTION"]'
AUTOLOAD_OFF = '{"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}'
BASETEMP = (
    "app: refusing --basetemp {production}: pytest empties it before the run, and it "
    "overlaps the data root of profile 'production (protected by the enclosing test run, "
    "pytest pid "
)


#: Each case: the child's environment, its arguments, and the words of its refusal.
CASES = {
    "autoload_off": (AUTOLOAD_OFF, f'["--basetemp=" + {ROOT}]', BASETEMP),
    "option": ("{}", f'["--disable-plugin-autoload", "--basetemp=" + {ROOT}]', BASETEMP),
    "both_off": (
        "{}",
        (
            '["-p", "no:app", "-p", "no:app_fallback", "-p", '
            f'"no:app.testing.startup:fallback", "--basetemp=" + {ROOT}]'
        ),
        BASETEMP,
    ),
    "xdist": (AUTOLOAD_OFF, f'["-p", "xdist.plugin", "-n", "2", "--basetemp=" + {ROOT}]', BASETEMP),
    "junitxml": (
        AUTOLOAD_OFF,
        f'["--junitxml=" + os.path.join({ROOT}, ".app-profile.json")]',
        (
            "app: refusing to run: pytest's --junitxml rewrites {production}/"
            ".app-profile.json as the run ends, which lies in the data root of profile "
            "'production (protected by the enclosing test run, pytest pid "
        ),
    ),
    "junitxml_option": (
        "{}",
        f'["--disable-plugin-autoload", "--junitxml=" + os.path.join({ROOT}, "x.xml")]',
        (
            "The app's plugin is switched off in this run (`--disable-plugin-autoload` on "
            "pytest's command line), and pytest writes there all the same"
        ),
    ),
    "tmpdir": (
        f'{{"TMPDIR": {ROOT}, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}}',
        "[]",
        (
            "app: refusing to run: pytest would create (and clean up) its temporary "
            "directories in {production}/pytest-of-"
        ),
    ),
}


def test_a_child_pytest_that_loads_no_entry_point_of_the_app_cannot_reach_a_stopped_root(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # Installed by `pip install -e .` since red team 42: an older environment lacks it.
    assert "_app_pytest_guard" in sys.modules, (
        "app-pytest-guard.pth is not installed in this environment: run "
        "`.venv/bin/python -m pip install -e .` again"
    )
    # One outer run, one test per case (each a child pytest of its own).
    tests = "".join(
        CHILD.replace("ENV", env)
        .replace("ARGS", args)
        .replace("CONFTEST)", "'')")
        .replace("INNER)", f"{INNER!r})")
        .replace("def test_a_child_pytest_without_the_plugin", f"def test_{name}")
        .replace('print("CHILD",', f'print("CHILD {name}",')
        for name, (env, args, _) in CASES.items()
    )
    # `_tests_beside` fails the test if a child changed any file of production's root.
    production, output = _tests_beside(stopped, tmp_path, tests)
    said = dict(part.split(" ", 1) for part in output.split("CHILD ")[1:])
    assert said.keys() == CASES.keys(), output
    for name, (_, _, refused) in CASES.items():
        assert not said[name].startswith("0 "), (name, said[name])
        assert refused.format(production=production) in said[name], (name, said[name])


def test_pytest_s_own_option_that_turns_autoload_off_is_named_where_the_plugin_is_missed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `_switched_off_by` knew the variable only: a refusal said nothing of the option.
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.setattr(sys, "argv", ["pytest", "--disable-plugin-autoload", "-q"])
    by = "`--disable-plugin-autoload` on pytest's command line"
    assert sandboxing._switched_off_by() == by
    assert sandboxing.why_no_plugin().startswith(f"plugin autoload is off ({by}): add `-p app`")


# --- what held: other ways to start a child, and other spellings of a profile -------------

#: Each probe starts a child given production's settings alone (a purge of production) in
#: its own way, and prints ``PROBE <name> <exit> <stderr>``.
HELD = r"""
import concurrent.futures, multiprocessing, os, pty, subprocess, sys, tempfile, time

import pytest

APP = [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"]
SHELL_APP = "env -i PATH=/usr/bin:/bin APP_SETTINGS_DIR=$APP_SETTINGS_DIR " + (
    "ENV_FOR_DYNACONF=production " + " ".join(APP))


def hand_built(**more):
    env = {"PATH": "/usr/bin:/bin", "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"],
           "ENV_FOR_DYNACONF": "production"}
    return {**env, **more}


def say(name, code, text=""):
    print(f"PROBE {name} {code} {' '.join(text.split())}")


def test_posix_spawn(tmp_path):
    out = os.open(tmp_path / "o", os.O_WRONLY | os.O_CREAT)
    pid = os.posix_spawn(sys.executable, APP, hand_built(),
                         file_actions=[(os.POSIX_SPAWN_DUP2, out, 2)], setsid=True)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    say("posix_spawn", code, (tmp_path / "o").read_text())


def test_fork_then_execve(tmp_path):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.dup2(os.open(tmp_path / "o", os.O_WRONLY | os.O_CREAT), 2)
        os.execve(sys.executable, APP, hand_built())
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    say("fork_execve", code, (tmp_path / "o").read_text())


def test_pty_fork():
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, APP, hand_built())
    text = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not chunk:
            break
        text += chunk
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    say("pty_fork", code, text.decode(errors="replace"))


@pytest.mark.parametrize("how", ["process_group", "preexec_setsid", "-I", "-S", "home"])
def test_subprocess(how):
    kw, command, env = {}, list(APP), hand_built()
    if how == "process_group":
        kw["process_group"] = 0
    elif how == "preexec_setsid":
        kw["preexec_fn"] = os.setsid
    elif how.startswith("-"):
        command.insert(1, how)
        if how == "-S":  # no site: the app and pytest found through PYTHONPATH alone
            env["PYTHONPATH"] = os.environ["WORKTREE"] + ":" + os.environ["SITE"]
    else:
        env.update(HOME="/nonexistent", XDG_CONFIG_HOME="/nonexistent", XDG_RUNTIME_DIR="/x")
    done = subprocess.run(command, env=env, capture_output=True, text=True, **kw)
    say(how, done.returncode, done.stderr)


def test_env_i_through_setsid_fork_and_nohup(tmp_path):
    out = tmp_path / "o"
    subprocess.run(["sh", "-c", f"setsid --fork {SHELL_APP} >{out}.s 2>&1"], check=True)
    daemon = f"sleep 0.2; {SHELL_APP} >{out}.n 2>&1; echo $? >{out}.rc"
    subprocess.run(["sh", "-c", f"(nohup sh -c '{daemon}' &); exit 0"], check=True)
    for _ in range(400):
        if (tmp_path / "o.rc").exists() and (tmp_path / "o.s").stat().st_size:
            break
        time.sleep(0.05)
    say("setsid_fork", "-", (tmp_path / "o.s").read_text())
    say("nohup_daemon", (tmp_path / "o.rc").read_text().strip(), (tmp_path / "o.n").read_text())


SPELLINGS = {"lead": " production", "upper-tab": "PRODUCTION\t", "newline": "production\n",
             "token": "@format x"}


@pytest.mark.parametrize("label", SPELLINGS)
def test_profile_spellings(label):
    env = hand_built(ENV_FOR_DYNACONF=SPELLINGS[label])
    done = subprocess.run(APP, env=env, capture_output=True, text=True)
    say(f"spelling-{label}", done.returncode, done.stderr)


POOL = []


def _purge_in_worker(env):
    os.environ.clear()
    os.environ.update(env)
    from app.config import load
    from app.storage import open_storage

    try:
        with open_storage(load("production", serving=False), writer=True) as store:
            store.purge()
        return "PURGED"
    except Exception as error:
        return f"{type(error).__name__}: {error}"


def test_1_leaves_a_forkserver_pool_alive():
    tempfile.tempdir = "/tmp"  # the forkserver's socket: a worker's tmp_path is too long a path
    context = multiprocessing.get_context("forkserver")
    POOL.append(concurrent.futures.ProcessPoolExecutor(1, mp_context=context))
    POOL[0].submit(int, 1).result()


def test_2_uses_the_pool_left_alive():
    say("forkserver_left", "-", POOL[0].submit(_purge_in_worker, hand_built()).result())
    POOL[0].shutdown()
"""

REFUSED = "refused under pytest (sandbox: "


def test_children_started_every_other_way_and_other_spellings_are_refused(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # os.posix_spawn, fork then execve, pty.fork, subprocess's process_group and preexec_fn,
    # python -I and -S, another HOME and XDG_*, env -i through setsid --fork and nohup (a
    # daemon whose shell exited), a forkserver pool a test left alive for the next, and
    # ENV_FOR_DYNACONF with whitespace, in upper case, or with a dynaconf token.
    monkeypatch.setenv("WORKTREE", str(Path(__file__).resolve().parents[1]))
    monkeypatch.setenv("SITE", site.getsitepackages()[0])
    _, output = _tests_beside(stopped, tmp_path, HELD)
    probes = dict(line.split(" ", 1) for line in output.split("PROBE ")[1:])
    assert len(probes) == 15, output
    for name, said in probes.items():
        if name == "spelling-token":
            assert said.startswith("78 error: unknown profile '@format x'"), said
        else:
            assert REFUSED in said and "loading profile 'production'" in said, (name, said)


# --- a -p plugin's first hook, under a runner that calls pytest through another module ----

#: A `-p` plugin whose `pytest_addoption` starts a child given production's settings alone,
#: before pytest imports the app's plugin.
EARLY_CHILD = """import os, subprocess, sys


def purge():
    env = {"PATH": "/usr/bin:/bin", "ENV_FOR_DYNACONF": "production",
           "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
    done = subprocess.run([sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
                          env=env, capture_output=True, text=True)
    print("early child:", done.returncode, done.stdout, done.stderr)
"""
HOOKS = {
    "addoption": "\n\ndef pytest_addoption(parser):\n    purge()\n",
    "import": "\n\npurge()\n",
    # The app's plugin switched off, and a test's child given production's settings alone.
    "a-test-plugin-off": "",
}
STARTING = (
    "early child: 78 error: refused under pytest: loading profile 'production' while a "
    "pytest run (an ancestor process, pytest pid 1: {python} ci.py) is starting and the app's "
    "plugin has not made its sandbox yet. Use the app (load a profile, or start a process "
    "that does) from a test or a fixture, once the run has its sandbox"
)
WITHOUT_PLUGIN = (
    "early child: 78 error: refused under pytest: loading profile 'production' while pytest "
    "runs without the app's sandbox (an ancestor process (pid 1: {python} ci.py) runs pytest "
    "without the app's plugin)"
)
A_TEST_S_CHILD = EARLY_CHILD + "\n\ndef test_a_child():\n    purge()\n"


@pytest.mark.parametrize("when", HOOKS)
def test_a_child_of_a_plugin_s_import_or_first_hook_under_a_runner_of_a_runner_is_refused(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    when: str,
) -> None:
    # Red team 37 read a runner script that calls `pytest.main` itself; `python ci.py`,
    # whose module `checks` calls it, showed pytest nowhere: a `-p` plugin's child, started
    # from its `pytest_addoption` or as it was imported (before the app's plugin was), purged
    # a stopped production root, and so did a test's child with the app's plugin switched
    # off. Outside any run: in a PID namespace of its own.
    if not _own_proc_allowed():
        pytest.skip("this machine does not let this user make a PID namespace")
    settings, production = stopped
    plugin_off = when == "a-test-plugin-off"
    (tmp_path / "early.py").write_text(EARLY_CHILD + HOOKS[when])
    (tmp_path / "test_inner.py").write_text(
        A_TEST_S_CHILD if plugin_off else "def test_nothing():\n    pass\n"
    )
    off = '"-p", "no:app", ' if plugin_off else ""
    (tmp_path / "checks.py").write_text(
        "import pytest\n\n\ndef run():\n"
        f'    return pytest.main([{off}"-s", "-p", "early", "-p", "no:cacheprovider", '
        '"test_inner.py"])\n'
    )
    (tmp_path / "ci.py").write_text("import sys\n\nimport checks\n\nsys.exit(checks.run())\n")
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings), PYTHONPATH=str(tmp_path), TMPDIR=_tmpdir(tmp_path)
    )
    before = snapshot(production)
    done = subprocess.run(
        [*OWN_PROC, sys.executable, "ci.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert snapshot(production) == before, output
    assert done.returncode == 0, output
    said = WITHOUT_PLUGIN if plugin_off else STARTING
    assert said.format(python=sys.executable) in output, output
