"""Roots compared by a path nobody compared, and processes the guard must see (red team 22).

Each case is a real arrangement: a bind mount made in a mount namespace of a forked child's
own, a pytest without the plugin whose shell left a local settings file behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from project_copy import copy_project_settings

from app import sandbox
from app.config import load
from app.errors import AppError

#: Linux's flags for unshare(2) and mount(2).
_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18


def _in_a_forked_child(work: Callable[[], str]) -> str:
    """What `work` returns (or raises), run in a fork of this process: a mount made there
    stays in the child's mount namespace."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read)
            answer = work()
        except BaseException as error:  # reported to the parent
            answer = f"CRASH {type(error).__name__}: {error}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read().decode()
    os.waitpid(pid, 0)
    return answer


def _bind_in_own_namespace(source: Path, target: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    # Private first, so that the bind mount never reaches the machine's namespace.
    for args in ((b"none", b"/", None, _MS_REC | _MS_PRIVATE, None),
                 (bytes(source), bytes(target), None, _MS_BIND, None)):  # fmt: skip
        if libc.mount(*args) != 0:
            raise OSError(ctypes.get_errno(), f"mount {args[0]!r} {args[1]!r}")


def _settings_with_roots(directory: Path, roots: dict[str, Path]) -> Path:
    settings = copy_project_settings(directory)
    text = (settings / "settings.toml").read_text()
    for profile, root in roots.items():
        text = text.replace(f'data_root = "data/{profile}"', f'data_root = "{root}"')
    (settings / "settings.toml").write_text(text)
    return settings


def test_two_profiles_whose_roots_are_one_directory_through_a_bind_mount_are_refused(
    tmp_path: Path,
) -> None:
    # Layer 2 compared the roots' paths only: development's root a bind mount of
    # production's (a container's volume, a developer's `mount --bind` to reach it from
    # home) is one directory with two paths, and no load refused it; nor a root inside such
    # a mount (a purge of development there empties production's sessions).
    if os.geteuid() != 0:
        pytest.skip("only root makes a bind mount")
    production = tmp_path / "srv-data"
    production.mkdir()
    alias = tmp_path / "alias"
    alias.mkdir()
    same = _settings_with_roots(tmp_path / "same", {"production": production, "development": alias})
    nested = _settings_with_roots(
        tmp_path / "nested", {"production": production, "development": alias / "dev"}
    )

    def load_both() -> str:
        _bind_in_own_namespace(production, alias)
        said = []
        for settings in (same, nested):
            try:
                load("testing", environ={"APP_SETTINGS_DIR": str(settings)})
            except AppError as refused:
                said.append(f"REFUSED {refused}")
            else:
                said.append("LOADED")
        return "\n".join(said)

    same_said, nested_said = _in_a_forked_child(load_both).splitlines()
    assert same_said.startswith(
        "REFUSED profiles 'development' and 'production' share the same data root, reached by "
        f"two paths (one directory, by device and inode: a bind mount): development -> {alias} "
        f"(from settings.toml [development]), production -> {production} (from settings.toml "
        "[production])"
    ), same_said
    assert f"`findmnt -T {alias}` shows the mount" in same_said, same_said
    assert nested_said.startswith(
        "REFUSED profiles 'development' and 'production' overlap: 'development''s data root "
        f"lies inside 'production''s, reached by another path (its directory {alias} is "
        f"{production}, by device and inode: a bind mount): development -> {alias / 'dev'}"
    ), nested_said


#: A process of a pytest run without the plugin (it inherited pytest's variable, and no
#: registry entry is in sight), loading the testing profile of each settings directory given.
LOAD_TESTING = (
    "import sys\n"
    "from app.config import load\n"
    "from app.errors import SandboxViolationError\n"
    "for settings in sys.argv[1:]:\n"
    "    try:\n"
    "        print('LOADED', load('testing', environ={'APP_SETTINGS_DIR': settings}).data_root)\n"
    "    except SandboxViolationError as refused:\n"
    "        print('REFUSED', refused)\n"
)
#: A PID namespace with a /proc of its own: the run of this test is out of its sight.
OWN_PROC = ("unshare", "--user", "--map-current-user", "--pid", "--fork", "--mount-proc")


def _own_proc_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*OWN_PROC, "true"], capture_output=True, check=False).returncode == 0


def test_without_the_plugin_a_testing_root_from_a_local_settings_file_is_refused(
    tmp_path: Path,
) -> None:
    # The plugin leaves the local settings files out, as it neutralises APP_DATA_ROOT: both
    # are this machine's overrides, which may name real data. Without the plugin
    # (`-p no:app`), a testing root from APP_DATA_ROOT was refused, and one from
    # settings.local.toml was opened: a developer's `[testing] data_root` there, pointed at
    # their real data, was the run's root.
    if not _own_proc_allowed():
        pytest.skip("this machine does not let this user make a PID namespace")
    real = tmp_path / "real-data"
    locals_ = ("settings.local.toml", ".secrets.local.toml")
    directories = []
    for local in locals_:
        settings = copy_project_settings(tmp_path / local)
        (settings / local).write_text(f'[testing]\ndata_root = "{real}"\n')
        directories.append(str(settings))
    env = {"PATH": os.environ["PATH"], "PYTEST_VERSION": "9"}
    done = subprocess.run(
        [*OWN_PROC, sys.executable, "-c", LOAD_TESTING, *directories],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    said = done.stdout.splitlines()
    assert len(said) == len(locals_), done.stdout + done.stderr
    for local, refused in zip(locals_, said, strict=True):
        assert refused.startswith(
            f"REFUSED refused under pytest: data root {real} from {local} [testing] while "
            "pytest's variable PYTEST_VERSION is set in this process's environment"
        ), refused
        assert f"run the tests with the app's pytest plugin, which leaves {local} out (" in refused
        assert (
            f"or set data_root in [testing] of settings.toml and remove it from {local}; if "
            "it runs none, unset PYTEST_VERSION"
        ) in refused, refused
    assert not real.exists()


#: A child with a hand-built environment asks to open a data root outside the sandbox (what
#: `load` asks for a profile's root; the sandbox check alone imports no settings reader).
OPEN_A_ROOT = (
    "from pathlib import Path\n"
    "from app.errors import SandboxViolationError\n"
    "from app.sandbox import check_root\n"
    "try:\n"
    "    check_root(Path('/srv/app/data'), 'open data root')\n"
    "    print('OPENED')\n"
    "except SandboxViolationError as refused:\n"
    "    print('REFUSED', refused)\n"
)


def test_a_child_in_a_user_namespace_that_maps_its_user_to_another_id_belongs_to_the_run() -> None:
    # `unshare -r` (a developer's rootless container tool, `podman unshare`, `bwrap
    # --unshare-user --uid 0`) shows every process's owner by the ids of the child's user
    # namespace: the run's user, 1000 outside, is 0 in there (and 65534 where it is not
    # mapped at all). The registry directory is named by the id outside, so the child looked
    # for its run's entry in another user's directory, found none, and with a hand-built
    # environment opened any data root, and loaded any profile (production's too).
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    # The user id the run's user gets inside, root's way and an unprivileged user's way.
    mapped = ["--map-user=5", "--map-group=5"] if os.geteuid() == 0 else ["--map-root-user"]
    registry = f"registered in {sandbox.RUNS_DIR})"
    for how in (mapped, []):  # [] maps nothing: every owner is the overflow id
        done = subprocess.run(
            ["unshare", "--user", *how, sys.executable, "-c", OPEN_A_ROOT],
            env={"PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        printed = done.stdout + done.stderr
        if "unshare failed" in printed or "unshare:" in printed:
            pytest.skip(f"this machine does not let this user make a user namespace: {printed}")
        assert printed.startswith("REFUSED refused under pytest (sandbox: "), f"{how}: {printed}"
        assert (
            "open data root /srv/app/data, which lies outside the test sandbox (this process "
            "belongs to the test run through the process tree (an ancestor process, pytest pid "
            f"{os.getpid()}, {registry}"
        ) in printed, f"{how}: {printed}"


def test_a_run_in_a_user_namespace_registers_under_its_user_s_id_on_the_machine() -> None:
    # The reverse: a run inside `unshare -r` is user 0 to itself, and named its registry
    # directory after root's. Where root had run tests first, it was refused, told that the
    # directory was user 65534's and that only that user could remove it; where it came
    # first, root's runs were refused, their directory another user's.
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    mapped = ["--map-user=5", "--map-group=5"] if os.geteuid() == 0 else ["--map-root-user"]
    code = "import os; from app import sandbox; print(os.getuid(), sandbox.RUNS_DIR)"
    done = subprocess.run(
        ["unshare", "--user", *mapped, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"this machine does not let this user make a user namespace: {done.stderr}")
    inside, registry = done.stdout.split()
    assert int(inside) != os.getuid()
    assert registry == str(sandbox.RUNS_DIR)


@pytest.mark.parametrize(
    "code",
    [
        "from pytest import main; raise SystemExit(main())",
        "from pytest import console_main\nconsole_main()",
        "import pytest as pt; pt.main(['-p', 'no:app'])",
        "__import__('pytest').main()",
        "import runpy; runpy.run_module('pytest', run_name='__main__')",
    ],
)
def test_python_c_code_that_runs_pytest_by_another_spelling_is_taken_for_a_pytest_run(
    code: str,
) -> None:
    # Without the plugin, a run is known to its children by its command line alone. Only
    # `pytest.main` was read in `python -c` code, so a run started as `python -c "from pytest
    # import main; main()"` with `-p no:app` was no pytest to them, and a child of one of its
    # tests with a hand-built environment loaded production.
    assert sandbox._looks_like_pytest([sys.executable, "-c", code])


@pytest.mark.parametrize(
    "code",
    ["import pytest; print(pytest.__version__)", "from pytest import fixture", "main()"],
)
def test_python_c_code_that_only_imports_pytest_is_not_taken_for_a_pytest_run(code: str) -> None:
    assert not sandbox._looks_like_pytest([sys.executable, "-c", code])


def test_a_test_that_rewrites_its_run_s_entry_is_named_and_the_entry_put_back() -> None:
    # The entry is what a child with a hand-built environment reads its run's sandbox and
    # protected roots from. A removed entry was put back after the test, and the test
    # failed; one rewritten in place (a sandbox of `/`, no protected roots) stayed so for the
    # rest of the run, silently. (The plugin calls this after every test, as here.)
    run = sandbox.current_run()
    assert run is not None and run.pid is not None
    started = sandbox._stat_fields(run.pid)
    assert started is not None
    entry = sandbox.RUNS_DIR / sandbox._entry_name(run.pid, started[1])
    original = entry.read_bytes()
    try:
        with entry.open("r+b") as rewritten:  # in place: the same file, another sandbox
            rewritten.truncate()
            rewritten.write(original.replace(str(run.sandbox).encode(), b"/"))
        assert sandbox.restore_entry(run) == (
            f"this run's entry in {sandbox.RUNS_DIR} was changed (the sandbox and the "
            "protected roots that its children read there); it was put back"
        )
        assert entry.read_bytes() == original
        os.utime(entry)  # touched, as a clean-up script may: nothing to put back
        assert sandbox.restore_entry(run) is None
    finally:
        if entry.read_bytes() != original:
            entry.write_bytes(original)
