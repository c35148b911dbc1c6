"""Red team 37 on the guard: the sandbox itself, pytest's own modes, and children.

Each case is real: pytest runs in a subprocess next to a stopped production root named by
the settings. One class broke: a test (run as root) that mounts production's root over the
run's sandbox itself, pytest's ``getbasetemp()``. Under ``tmp_path_retention_policy =
"failed"`` pytest emptied production as the run passed (its lock file and stamp with it),
and under every policy the next tests' ``tmp_path`` directories were made in production's
root; the run passed and said nothing. The rest held, and are kept here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s35_guard import _run
from test_redteam_s36_guard import _run_beside as run_beside
from test_server_e2e import snapshot
from waits import until

#: Runs the inner pytest in a mount namespace of its own, where its tests may mount.
_OWN_MOUNTS = "unshare --mount --propagation private"


def _can_mount() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("only root mounts (unshare -m)")


def _run_beside(production: Path, project: Path, settings: Path, *args: str, **extra: str):
    """Red team 36's `_run_beside`, on red team 35's `_run` (which takes `WRAP`)."""
    return run_beside(production, project, settings, *args, run=_run, **extra)


#: A test that bind-mounts a stopped production root over the sandbox itself, and passes.
MOUNTS_OVER_THE_SANDBOX = """import os, subprocess


def test_mounts_production_over_the_sandbox(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    subprocess.run(["mount", "--bind", os.environ["ROOT"], str(base)], check=True)
"""


#: A test after it, which needs no directory.
NEXT_TEST = """

def test_after_it():
    pass
"""


@pytest.mark.parametrize("policy", ["failed", "none"])
def test_a_data_root_mounted_over_the_sandbox_is_not_emptied_by_the_retention_policy(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    policy: str,
) -> None:
    # Under "failed" pytest deletes the sandbox of a run that passed; the look for mounts
    # saw only those strictly inside it, so production's root was emptied, lock and stamp.
    # Under "none" pytest renames the directory first (EBUSY on a mount point): it held.
    _can_mount()
    settings, production = stopped
    (tmp_path / "test_inner.py").write_text(MOUNTS_OVER_THE_SANDBOX + NEXT_TEST)
    code, output = _run_beside(
        production, tmp_path, settings, "-o", f"tmp_path_retention_policy={policy}",
        "test_inner.py", ROOT=str(production), WRAP=_OWN_MOUNTS,
    )  # fmt: skip
    assert code == 1, output
    # Said once, after the test that did it, not again after the next one.
    assert output.count("app: after test_inner.py::") == 1, output
    assert "2 passed, 1 error" in output, output
    where = "app: after test_inner.py::test_mounts_production_over_the_sandbox"
    if policy == "failed":
        assert (
            f"{where}, pytest was about to delete what passed (tmp_path_retention_policy = "
            "'failed'), but the sandbox "
        ) in output, output
        assert (
            "is a mount point now (`findmnt " in output
            and "the deletion would empty whatever it leads to now (a data root mounted on "
            "the sandbox was emptied, its lock file and stamp with it). The policy keeps "
            "everything for the rest of this run. Undo it (umount "
            in output
        ), output
    else:
        assert f"{where}: the test sandbox " in output, output
        assert "is a mount point now (`findmnt " in output, output


#: The first test leaves production mounted over the sandbox; the second asks for its
#: tmp_path, the third's fixture for a directory of the factory's.
LEAVES_A_MOUNT_OVER_THE_SANDBOX = """import os, subprocess

import pytest


def test_1_mounts_production_over_the_sandbox(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    subprocess.run(["mount", "--bind", os.environ["ROOT"], str(base)], check=True)


def test_2_uses_tmp_path(tmp_path):
    (tmp_path / "notes.txt").write_text("a test's notes")


@pytest.fixture(scope="session")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("scratch")


def test_3_uses_a_session_fixture(scratch):
    (scratch / "notes.txt").write_text("a fixture's notes")
"""


@pytest.mark.parametrize(
    "workers", [[], ["-n", "2", "--dist", "loadfile"]], ids=["serial", "xdist"]
)
def test_a_sandbox_mounted_over_gets_no_test_directories_made_in_it(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    workers: list[str],
) -> None:
    # pytest makes every tmp_path by the sandbox's path: production's root got
    # `test_2_uses_tmp_path0/` and the link `test_2_uses_tmp_pathcurrent`, and the run passed.
    _can_mount()
    settings, production = stopped
    (tmp_path / "test_inner.py").write_text(LEAVES_A_MOUNT_OVER_THE_SANDBOX)
    code, output = _run_beside(
        production, tmp_path, settings, "-p", "no:randomly", *workers, "test_inner.py",
        ROOT=str(production), WRAP=_OWN_MOUNTS,
    )  # fmt: skip
    assert code == 1, output
    assert (
        "app: after test_inner.py::test_1_mounts_production_over_the_sandbox: the test sandbox "
    ) in output, output
    for name in ("test_2_uses_tmp_path", "scratch"):
        assert f"app: refusing to make a directory {name!r}: the test sandbox " in output
    assert (
        "is a mount point now (`findmnt " in output
        and "so pytest would make tmp_path and tmp_path_factory.mktemp directories in "
        "whatever it leads to now (a data root mounted over the sandbox got the next tests' "
        "directories made in it). Undo it (umount "
        in output
    ), output
    # Said once, after the test that did it; the later ones are refused at their set-up.
    assert output.count("app: after test_inner.py::") == 1, output
    assert "1 passed, 3 errors" in output, output


#: Tests that mount over the sandbox and then use it at once, in the same test.
USES_THE_SANDBOX_IT_MOUNTED_OVER = """import os, subprocess

import pytest


@pytest.fixture
def over(request, tmp_path_factory):
    # What each test mounts: `MOUNT_<the test's name>`.
    base = tmp_path_factory.getbasetemp()
    mount = os.environ[f"MOUNT_{request.node.name}"]
    subprocess.run(["mount", "--bind", mount, str(base)], check=True)
    yield base
    subprocess.run(["umount", str(base)], check=True)


def test_asks_for_a_directory_after_mounting_production(over, tmp_path_factory):
    tmp_path_factory.mktemp("after")


@pytest.mark.app_profile("production")
def test_opts_in_after_mounting_the_settings_over_it(over):
    from app.config import load
    from app.storage import open_storage

    with open_storage(load("production", serving=False), writer=True) as store:
        store.purge()
"""


def test_a_test_that_mounts_over_its_sandbox_then_uses_it_is_refused(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    _can_mount()
    settings, production = stopped
    # One run of both tests (each its own mount, which its fixture undoes at its end), where
    # each had a run of its own (`-k`): about 0.6 s of CPU less (bench/README.md,
    # "perf-suite76a"). What each is refused for names what only it does.
    (tmp_path / "test_inner.py").write_text(USES_THE_SANDBOX_IT_MOUNTED_OVER)
    mounts = {
        "test_asks_for_a_directory_after_mounting_production": production,
        "test_opts_in_after_mounting_the_settings_over_it": settings,
    }
    code, output = _run_beside(
        production, tmp_path, settings, "-rf", "test_inner.py",
        WRAP=_OWN_MOUNTS, **{f"MOUNT_{test}": str(mount) for test, mount in mounts.items()},
    )  # fmt: skip
    assert code == 1, output
    assert "2 failed" in output, output
    for test in mounts:
        assert f"FAILED test_inner.py::{test} " in output, output
    # The first test's mktemp, which made `after0/` and `aftercurrent` in production's root.
    assert "app: refusing to make a directory 'after': the test sandbox " in output, output
    # The second's: held before, `<sandbox>/data/production` is production's root by identity.
    assert (
        "it is another path to the data root of profile 'production' "
        f"({production}), or lies in it or holds it (same device and inode, through a "
        "bind mount or link)"
    ) in output, output


#: Children a test starts in each way Python and the shell offer, each given production's
#: settings alone, each running `app data purge --yes-i-mean-it`; one acts after the run.
CHILDREN = """import os, pty, shlex, shutil, subprocess, sys
from pathlib import Path

import pytest

ENV = {"PATH": "/usr/bin:/bin", "ENV_FOR_DYNACONF": "production",
       "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
PURGE = [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"]
ASSIGN = " ".join(f"{k}={shlex.quote(v)}" for k, v in ENV.items())
CMD = shlex.join(PURGE)
REFUSED = "tests run on the 'testing' profile"


def test_os_system(tmp_path):
    out = tmp_path / "out"
    status = os.system(f"env -i {ASSIGN} {CMD} > {out} 2>&1")
    assert os.waitstatus_to_exitcode(status) == 78 and REFUSED in out.read_text()


def test_os_popen():
    with os.popen(f"env -i {ASSIGN} {CMD} 2>&1") as pipe:
        assert REFUSED in pipe.read()


def test_posix_spawnp_in_a_session_of_its_own(tmp_path):
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    pid = os.posix_spawnp(PURGE[0], PURGE, ENV, setsid=True,
                          file_actions=[(os.POSIX_SPAWN_DUP2, out, 2)])
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 78
    assert REFUSED in (tmp_path / "out").read_text()


@pytest.mark.parametrize("how", [{"preexec_fn": os.setsid}, {"start_new_session": True},
                                 {"process_group": 0}], ids=["setsid", "session", "group"])
def test_subprocess_away_from_the_run(how):
    done = subprocess.run(PURGE, env=ENV, capture_output=True, text=True, **how)
    assert done.returncode == 78 and REFUSED in done.stderr, done.stderr


def test_a_script_that_execs_a_clean_environment(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text(f"#!/bin/sh\\nexec env -i {ASSIGN} {CMD}\\n")
    script.chmod(0o755)
    done = subprocess.run([str(script)], env={}, capture_output=True, text=True)
    assert done.returncode == 78 and REFUSED in done.stderr, done.stderr


def test_setpriv():
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv")
    done = subprocess.run(["setpriv", f"--reuid={os.getuid()}", "--clear-groups", "env", "-i",
                           *[f"{k}={v}" for k, v in ENV.items()], *PURGE],
                          capture_output=True, text=True)
    assert done.returncode == 78 and REFUSED in done.stderr, done.stderr


def test_on_a_terminal_of_its_own():
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(PURGE[0], PURGE, ENV)
    seen = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 78, seen


def test_nohup_and_disown_acting_after_the_run():
    log = Path(os.environ["LOGS"]) / "nohup.log"
    # It acts once the run (this process) is gone: a fixed sleep acted while a loaded
    # machine's run was still on, and was refused as a test's child instead.
    wait = f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.05; done"
    script = f"nohup env -i {ASSIGN} sh -c '{wait}; {CMD}' > {log} 2>&1 & disown"
    subprocess.run(["bash", "-c", script], check=True)


def test_a_relative_root_from_production_s_directory(monkeypatch):
    monkeypatch.chdir(os.environ["ROOT"])
    env = {**ENV, "ENV_FOR_DYNACONF": "testing", "APP_DATA_ROOT": "."}
    done = subprocess.run(PURGE, env=env, capture_output=True, text=True)
    assert done.returncode == 78, done.stderr


@pytest.mark.parametrize("value", [".", "./sessions/..", "data/production"])
def test_a_relative_root_in_process_from_production_s_directory(monkeypatch, value):
    from app.config import load
    from app.errors import ConfigError

    monkeypatch.chdir(os.environ["ROOT"])
    monkeypatch.setenv("APP_DATA_ROOT", value)
    with pytest.raises(ConfigError, match="which lies outside the test sandbox"):
        load()
"""


def test_children_started_every_other_way_are_refused_production(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    (tmp_path / "test_inner.py").write_text(CHILDREN)
    logs = tmp_path / "logs"
    logs.mkdir()
    code, output = _run_beside(
        production, tmp_path, settings, "test_inner.py", ROOT=str(production), LOGS=str(logs)
    )
    assert code == 0, output
    # The nohup'd child acts after the run: wait for its log. A poll every 10 ms, not a
    # spin: the child's start-up (0.5 to 2 s) needs the core. Bounded (a net, not a speed:
    # tests/waits.py): a child that was not refused writes no "error:", and the wait hung.
    done = logs / "nohup.log"
    until(lambda: "error:" in done.read_text(), lambda: f"no refusal in {done}: {done.read_text()}")
    assert "tests run on the 'testing' profile" in done.read_text(), done.read_text()
    assert "This process outlived the test run that started it" in done.read_text()


#: A test whose child, given production's settings alone, purges.
CHILD_PURGES = """import os, subprocess, sys


def test_a_child_with_a_hand_built_environment():
    env = {"PATH": "/usr/bin:/bin", "ENV_FOR_DYNACONF": "production",
           "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
    done = subprocess.run([sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 78, done.stdout + done.stderr
    assert "runs pytest without the app's plugin" in done.stderr, done.stderr
"""

#: A runner script, as an IDE or a CI wrapper writes one.
RUNNER = """import sys

import pytest

sys.exit(pytest.main(["-p", "no:app", "-p", "no:cacheprovider", "test_inner.py"]))
"""


@pytest.mark.parametrize(
    "how",
    ["pytest", "py.test", "a-link-named-t", "a-copy-named-run", "a-runner-script", "coverage"],
)
def test_pytest_under_another_name_is_still_a_test_run_to_its_children(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    how: str,
) -> None:
    # `./t -p no:app` (a link to the venv's pytest script), which the kernel shows as
    # `python ./t`: the command line was no pytest, so a child given production's settings
    # alone purged it (layer 6 kept the sessions in its trash). Outside any run: in a PID
    # namespace of its own, where this suite's run is not an ancestor.
    if not _own_proc_allowed():
        pytest.skip("this machine does not let this user make a PID namespace")
    settings, production = stopped
    (tmp_path / "test_inner.py").write_text(CHILD_PURGES)
    pytest_script = Path(sys.executable).parent / "pytest"
    if how in ("pytest", "py.test"):  # held: their names are read
        script = str(Path(sys.executable).parent / how)
        command = [script, "-p", "no:app", "-p", "no:cacheprovider", "test_inner.py"]
    elif how in ("a-link-named-t", "coverage"):
        (tmp_path / "t").symlink_to(pytest_script)
        command = ["./t", "-p", "no:app", "-p", "no:cacheprovider", "test_inner.py"]
        if how == "coverage":  # coverage runs its program in its own process
            command = [str(Path(sys.executable).parent / "coverage"), "run", *command]
    elif how == "a-copy-named-run":
        shutil.copy(pytest_script, tmp_path / "run")
        command = ["./run", "-p", "no:app", "-p", "no:cacheprovider", "test_inner.py"]
    else:
        (tmp_path / "run_tests.py").write_text(RUNNER)
        command = [sys.executable, "run_tests.py"]
    env = _inner_env(APP_SETTINGS_DIR=str(settings))
    before = snapshot(production)
    done = subprocess.run(
        [*OWN_PROC, *command], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    output = done.stdout + done.stderr
    assert snapshot(production) == before, output
    assert done.returncode == 0, output


#: A `-p` plugin whose `pytest_addoption` starts a child given production's settings alone,
#: before pytest imports the app's plugin.
EARLY_CHILD = """import os, subprocess, sys


def pytest_addoption(parser):
    env = {"PATH": "/usr/bin:/bin", "ENV_FOR_DYNACONF": "production",
           "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
    done = subprocess.run([sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
                          env=env, capture_output=True, text=True)
    print("early child:", done.returncode, done.stdout, done.stderr)
"""


def test_a_child_of_a_plugin_s_first_hook_under_a_runner_script_is_refused(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # Listed as not stopped by red team 36: no command line showed pytest, so the child
    # purged a stopped production root. The runner's script is read now (above).
    if not _own_proc_allowed():
        pytest.skip("this machine does not let this user make a PID namespace")
    settings, production = stopped
    (tmp_path / "early.py").write_text(EARLY_CHILD)
    (tmp_path / "test_inner.py").write_text("def test_nothing():\n    pass\n")
    (tmp_path / "run_tests.py").write_text(
        "import sys, pytest\n"
        'sys.exit(pytest.main(["-s", "-p", "early", "-p", "no:cacheprovider", "test_inner.py"]))\n'
    )
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings), PYTHONPATH=str(tmp_path), TMPDIR=_tmpdir(tmp_path)
    )
    before = snapshot(production)
    done = subprocess.run(
        [*OWN_PROC, sys.executable, "run_tests.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert snapshot(production) == before, output
    assert done.returncode == 0, output
    assert "early child: 78 " in output, output
    assert "run_tests.py) runs pytest without the app's plugin" in output, output
    assert (
        "or had not started yet (a `-p` plugin's import or `pytest_addoption` runs before "
        "pytest imports it)"
    ) in output, output


#: The first test moves the sandbox aside and puts a link to production's root at its
#: path (no privilege needed); the second asks for its tmp_path.
LINKS_THE_SANDBOX = """import os


def test_1_replaces_the_sandbox_by_a_link(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    base.rename(base.with_name(base.name + "-aside"))
    base.symlink_to(os.environ["ROOT"])


def test_2_uses_tmp_path(tmp_path):
    (tmp_path / "notes.txt").write_text("a test's notes")
"""


@pytest.mark.parametrize("policy", ["all", "failed"])
def test_a_sandbox_replaced_by_a_link_gets_no_test_directories_made_through_it(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    policy: str,
) -> None:
    settings, production = stopped
    (tmp_path / "test_inner.py").write_text(LINKS_THE_SANDBOX)
    code, output = _run_beside(
        production, tmp_path, settings, "-p", "no:randomly", "-o",
        f"tmp_path_retention_policy={policy}", "test_inner.py", ROOT=str(production),
    )  # fmt: skip
    assert code == 1, output
    assert f"is a symbolic link now, to {production}" in output, output
    assert "app: refusing to make a directory 'test_2_uses_tmp_path': the test sandbox " in output


#: A session fixture that makes its data root with the legacy `tmpdir_factory`.
LEGACY_FACTORY = """import dataclasses, os
from pathlib import Path

import pytest

from app.storage import open_storage


@pytest.fixture(scope="session")
def shared_root(tmpdir_factory):
    return Path(tmpdir_factory.mktemp("shared")) / "app-data"


def test_a_store_in_a_directory_of_the_legacy_factory(shared_root, app_config):
    assert shared_root.is_relative_to(os.environ["PYTEST_APP_SANDBOX"]), shared_root
    with open_storage(dataclasses.replace(app_config, data_root=shared_root), writer=True):
        pass
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_legacy_tmpdir_factory_makes_its_directories_in_the_sandbox(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    workers: list[str],
) -> None:
    # legacypath wrapped tmpdir's own factory before the plugin put the run's in its place:
    # `tmpdir_factory` made a second numbered directory beside the sandbox, and a data root
    # there was refused as "outside the test sandbox", though pytest's own fixture made it.
    settings, production = stopped
    (tmp_path / "test_inner.py").write_text(LEGACY_FACTORY)
    code, output = _run_beside(production, tmp_path, settings, *workers, "test_inner.py")
    assert code == 0, output
    assert "1 passed" in output, output
