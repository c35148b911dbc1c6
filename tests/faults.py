"""Faults injected into one system call of a real process with strace(1) (``--inject``).

The red teams' integrity tests fail a chosen call (``rename``, ``fsync``, a ``write`` to the
audit log, a look at a trash entry) of a real ``app`` command or of a live ``app serve``, with
an error (``error=EIO``) or a signal (``signal=KILL``), and check what the next command, or
the next request, makes of what was left. No mock stands in for the disk: the kernel's call
fails, or the process dies there.

strace is the tool for it (``inject=`` since strace 4.15; ``-P`` keeps the fault to the calls
that touch one path), so these helpers only spell its command line once; a test that needs
strace's other options builds its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from app.config import Config

needs_strace = pytest.mark.skipif(
    shutil.which("strace") is None or os.geteuid() != 0,
    reason="a fault injected into one call of a real process takes strace(1) and root",
)


#: The environment of a traced Python child, added to its own: it writes no bytecode. Under
#: pytest the children keep theirs in one shared directory (tests/conftest.py), which a
#: fresh clone (CI's) starts without, so the first child to import a module writes its
#: ``.pyc``: an ``openat``, a ``write`` and a ``rename`` of the interpreter's own. A fault
#: counted among every such call (``when=N`` with no path) then struck the import instead
#: of the N-th change of the app (a red team 35 test read a ``KeyboardInterrupt`` raised in
#: ``_write_atomic``), and which child compiled first depended on the run's order and load.
NO_BYTECODE = {"PYTHONDONTWRITEBYTECODE": "1"}


def strace_prefix(
    inject: str, *paths: Path, seccomp: bool = False, also: tuple[str, ...] = ()
) -> list[str]:
    """strace's command line, up to the traced command or ``-p``: ``inject`` (``CALLS:FAULT``,
    e.g. ``rename,renameat:signal=KILL:when=1``) fails the calls it names that touch any of
    ``paths`` (every such call when none is given), and each of ``also`` (the same form)
    fails its calls as well. With ``seccomp``, the traced process stops only at those calls
    (``--seccomp-bpf``), which keeps a command's timing near its own."""
    calls = ",".join(spec.split(":", 1)[0] for spec in (inject, *also))
    only = [argument for path in paths for argument in ("-P", str(path))]
    filter_ = ["--seccomp-bpf"] if seccomp else []
    faults = [argument for spec in (inject, *also) for argument in ("-e", f"inject={spec}")]
    return [
        "strace", "-f", "-qq", *filter_, "-o", "/dev/null", *only,
        "-e", f"trace={calls}", *faults,
    ]  # fmt: skip


def app_with_fault(
    root: Path, inject: str, *paths: Path, command: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    """``python -m app *command`` on the data root ``root``, under strace failing ``inject``
    at the calls that touch ``paths``; its exit code and output, whatever they are."""
    return subprocess.run(
        [*strace_prefix(inject, *paths), sys.executable, "-m", "app", *command],
        capture_output=True,
        text=True,
        env={**os.environ, **NO_BYTECODE, "APP_DATA_ROOT": str(root)},
        check=False,
    )


def killed_app(root: Path, inject: str, *paths: Path, command: tuple[str, ...]) -> None:
    """``app *command`` on ``root``, killed by strace at the call ``inject`` names
    (``CALLS:signal=KILL:when=N``) that touches ``paths``; it must have died there."""
    killed = app_with_fault(root, inject, *paths, command=command)
    assert killed.returncode in (-9, 137), (killed.stdout, killed.stderr)


def traced(pid: int) -> bool:
    """Whether every thread of ``pid`` is under a tracer (strace has attached to them all)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            with (task / "status").open() as status:
                tracer = next(line for line in status if line.startswith("TracerPid:"))
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended since the listing: nothing left to trace
        if tracer.split()[1] == "0":
            return False
    return True


def attach(
    pid: int, inject: str, *paths: Path, also: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """strace attached to every thread of the running process ``pid``, failing ``inject``
    (and each of ``also``) at the calls that touch ``paths`` (any, when none is given),
    until ``detach``."""
    tracer = subprocess.Popen(
        [*strace_prefix(inject, *paths, also=also), "-p", str(pid)], stderr=subprocess.DEVNULL
    )
    while not traced(pid):
        assert tracer.poll() is None, "strace could not attach"
        time.sleep(0.01)
    return tracer


def detach(tracer: subprocess.Popen[bytes]) -> None:
    tracer.terminate()
    tracer.wait()


@contextmanager
def attached(pid: int, inject: str, *paths: Path, also: tuple[str, ...] = ()) -> Iterator[None]:
    """``attach`` for the length of a ``with`` block."""
    tracer = attach(pid, inject, *paths, also=also)
    try:
        yield
    finally:
        detach(tracer)


def a_root_to_repair(config: Config) -> Path:
    """What ``app data check --repair`` mends in `config`'s (local) root, writing one audit
    line each: a session with a file, a blob no record names (an upload killed before its
    commit: ``trash-file``) and a leftover in ``.tmp/`` (the open's ``clear-tmp``); then
    ``check-repair``. Returns the orphan blob's path."""
    from app.dataroot import open_root
    from app.store import Store

    with open_root(config, kind="tests") as opened:
        store = Store(opened)
        session = store.create_session("kept")["id"]
        store.put_file(session, "a.txt", b"acknowledged")
    orphan = config.data_root / "sessions" / session / "blobs" / ("0" * 32)
    orphan.write_bytes(b"never acknowledged")
    (config.data_root / ".tmp" / "upload-leftover").write_bytes(b"partial")
    return orphan
