"""Red team 63 on regress, forks of the run (branch rt-regress24): the anchored copy of the run's
entry that a fork inherits (`app.sandbox._forked_run`, red team 63 on the children of tests),
made something a fork does not inherit or cannot read by ``madvise``.

``mseal`` refuses ``munmap``, ``mremap``, ``mprotect`` and a mapping put over the run's
anchored copy, but lets any process give a file-backed shared mapping ``MADV_DONTFORK`` (its
forks then map nothing there) and guard pages (``MADV_GUARD_INSTALL``, Linux 6.13: every read
of it faults, ``/proc/self/mem`` answers EIO). What broke: a test that marked the run's copy
``MADV_DONTFORK`` and then forked, or a fork that put guard pages on the copy it inherited,
found no anchored run in the fork (``_forked_run`` returned None); the fork of red team 63 on
the children of tests that outlived the run, its mark deleted, its handed-on entry removed and
pytest's modules forgotten, then found no run at all, and a purge of production's settings
alone ran in it.

What changed: a process that anchored a copy takes ``MADV_DONTFORK`` and guard pages off it
before each fork (``os.register_at_fork``, `app.sandbox._anchor_forks`), and a reader takes
guard pages off its own copy and reads a copy through ``/proc/<pid>/map_files`` (the memfd
itself, pages untouched) where it may, before ``/proc/<pid>/mem``. A fork made by libc's
``fork`` called through ctypes, which runs no at-fork hook, is not stopped (the attacks' catalogue).

And: a fork of the run's process that ran a pytest of its own in line anchored the nested
run's entry as its first; once that run ended, the run's entry put back was wider than the
anchored copy, and the fork's children were held to the ended run's sandbox (the test's own
root refused). Such a fork now writes the run it belongs to first (`app.sandbox.register`).
A project's own ini keys (``parser.addini`` in its conftest) spelt close to the plugin's
(``app_strict_mode``, ``app_live_servers``) stopped every run as misspellings; the check now
runs after the initial conftests and passes over keys pytest knows.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import sandbox

_MADV_DONTFORK = 10
_MADV_DOFORK = 11
_MADV_GUARD_INSTALL = 102

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _anchor() -> tuple[int, int]:
    mapped = sandbox._anchors_mapped()
    if not mapped:
        pytest.skip("this run's process maps no anchored copy (its address was taken)")
    first, _, last = mapped[0][0].partition("-")
    return int(first, 16), int(last, 16) - int(first, 16)


def _advise(address: int, size: int, advice: int) -> None:
    if _libc.madvise(address, size, advice) != 0:
        error = ctypes.get_errno()
        pytest.skip(f"this kernel refuses madvise advice {advice}: {os.strerror(error)}")


def _in_a_fork_of_a_fork(before: int | None, after: int | None) -> dict[str, object]:
    """What `_forked_run` finds in a fork G of a fork F of this run's process (nothing of
    this process's own state changed): F gives its inherited copy advice `before` and then
    forks G; G gives its own copy advice `after`, deletes the run's mark, and asks."""
    address, size = _anchor()
    read, write = os.pipe()
    first = os.fork()
    if first == 0:  # F
        code = 1
        try:
            os.close(read)
            if before is not None:
                _libc.madvise(address, size, before)
            second = os.fork()
            if second == 0:  # G
                try:
                    if after is not None:
                        _libc.madvise(address, size, after)
                    delattr(sys, "_app_pytest_runs")
                    run = sandbox._forked_run(None)
                    said = {"run": None if run is None else str(run.sandbox)}
                    said["by"] = "" if run is None else run.recognised_by
                    os.write(write, json.dumps(said).encode())
                finally:
                    os._exit(0)
            code = os.waitstatus_to_exitcode(os.waitpid(second, 0)[1])
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        text = answer.read()
    assert os.waitstatus_to_exitcode(os.waitpid(first, 0)[1]) == 0
    return json.loads(text)  # type: ignore[no-any-return]


@pytest.mark.skipif(
    not sandbox._seals_in_place(),
    reason="the run's anchored copy needs a kernel that seals a mapping in place (mseal, "
    "Linux 6.10, 64-bit)",
)
@pytest.mark.parametrize(
    ("before", "after"),
    [(_MADV_DONTFORK, None), (None, _MADV_GUARD_INSTALL)],
    ids=["dontfork-in-the-parent", "guard-pages-in-the-fork"],
)
def test_a_fork_keeps_the_runs_anchored_copy_whatever_madvise_said(
    before: int | None, after: int | None
) -> None:
    # The kernel takes each advice on the sealed copy (mseal refuses munmap alone).
    address, size = _anchor()
    if after is not None:
        _advise(address, size, after)  # and taken off again at once, as the reader does
        _libc.madvise(address, size, 103)  # MADV_GUARD_REMOVE
    said = _in_a_fork_of_a_fork(before, after)
    run = sandbox.current_run()
    assert run is not None and said["run"] is not None, said
    # The run's first entry's sandbox: an xdist worker's own lies within it (the worker
    # narrows its entry later; the anchored copy is the first).
    assert run.sandbox.is_relative_to(str(said["run"])), said
    assert "the run's own memory (this process, a fork of pytest pid " in str(said["by"]), said
    assert "which maps the sealed copy of the run's entry " in str(said["by"]), said


@pytest.mark.skipif(not sandbox._seals_in_place(), reason="no anchored copy on this kernel")
def test_munmap_of_the_anchored_copy_is_refused() -> None:
    # Held (mseal): the copy cannot be unmapped, the run's own process included.
    address, size = _anchor()
    _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    assert _libc.munmap(address, size) == -1
    assert ctypes.get_errno() == 1  # EPERM
    assert sandbox._anchors_mapped()


def test_a_known_ini_key_spelt_close_to_the_apps_is_no_misspelling(
    pytester: pytest.Pytester,
) -> None:
    # A project's own keys (its conftest registers them) were refused as misspellings of
    # app_strict and app_live_server, and no test of the project ran.
    pytester.makeini("[pytest]\napp_strict_mode = yes\napp_live_servers = 2\n")
    pytester.makeconftest(
        "def pytest_addoption(parser):\n"
        "    parser.addini('app_strict_mode', 'the project own')\n"
        "    parser.addini('app_live_servers', 'the project own')\n"
    )
    pytester.makepyfile(
        test_keys="def test_keys(request):\n"
        "    assert request.config.getini('app_live_servers') == '2'\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:warnings")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1)


#: A child that opens a data root of the test's for writing, as the test's own code would.
_OPEN_ROOT = """
import os, sys
os.environ["APP_DATA_ROOT"] = sys.argv[1]
from app import config
from app.storage import open_storage
try:
    with open_storage(config.load("testing"), writer=True, kind="tests", wanted="a test"):
        print("opened")
except Exception as error:
    print(type(error).__name__, error)
"""


@pytest.mark.skipif(not sandbox._seals_in_place(), reason="no anchored copy on this kernel")
def test_a_fork_that_ran_pytest_in_line_keeps_its_tests_root(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    # A fork of the run's process that runs a pytest of its own in line (pytester's): its
    # first entry, which it anchors, was the nested run's; once that run ended, the run's
    # entry put back was wider than the anchored copy, and the fork's children were held to
    # the ended run's sandbox: the test's own root was refused as outside the test sandbox.
    pytester.makepyfile(test_inner="def test_inner(tmp_path): pass\n")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            inner = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider")
            root = str(tmp_path / "data")
            done = subprocess.run(
                [sys.executable, "-c", _OPEN_ROOT, root],
                capture_output=True,
                text=True,
                check=False,
            )
            said = {"inner": int(inner.ret), "child": done.stdout + done.stderr}
            os.write(write, json.dumps(said).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    said = json.loads(text)
    assert said["inner"] == 0, said
    assert said["child"] == "opened\n", said
