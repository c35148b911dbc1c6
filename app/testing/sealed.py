"""The run's protected roots mounted read-only for every process of the run, Python or not.

The rest of layer 3 checks what goes through the app, and `app.testing.python_writes` checks
Python's own calls in the run's pytest processes. Neither sees another program a test runs:
``subprocess.run(["rm", "-rf", root])``, a shell script, the ``sqlite3`` program, C code that
raises no audit event of its path (SQLite's ``ATTACH``, ``dbm``, libc through ``ctypes``). The
kernel sees every one of them. So, in a run that asks for it (``--app-seal``, or ``app_seal =
true`` in the ini file; off by default, as several tests of the other layers build their attacks
with the very writes this refuses: docs/reference/pytest-plugin.md), the run's first process
(the controller), as the plugin starts and before any conftest is imported, any thread started
or any xdist worker forked, moves into a mount namespace of its own and mounts each protected
root that exists read-only over itself there (a bind mount of the root, recursive, made
read-only). Every process of the run, its workers, the programs its tests start and theirs, is
born in that namespace: a write, create, delete, rename or change of metadata in a sealed root
fails there with ``EROFS`` ("Read-only file system"), whoever asks. The live server, and every
process outside the run, see the same directories as before, writable: the namespace is the
run's alone, and ends with its last process. Mounts outside (made before or during the run)
still reach the run (its mounts are a "slave" of the machine's); the run's own mounts (the
suite's bind and loop mounts) never reach outside.

It needs ``CAP_SYS_ADMIN``: a run as root (CI, a container) is sealed; a run as another user
is not (a user namespace would give it the capability, but would show every file of another
user, root's included, as owned by the overflow id, which the app's ownership checks read),
and its header says so. A run that could not seal a root says which and why in its header;
the other layers hold without this one.

No library does this: ``mount(2)``, ``unshare(2)`` and ``mount_setattr(2)`` are called from
libc through `app.libc` (``_ctypes`` alone, as the plugin's other calls: importing ``ctypes``
cost every run's start about 5 M instructions; ``os.unshare`` is Python 3.12's, and the app
supports 3.11).
"""

from __future__ import annotations

import errno
import os
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from app import libc, mountinfo
from app.errors import shell_word

_CLONE_NEWNS: Final = 0x00020000
_MS_RDONLY: Final = 1
_MS_NOSUID: Final = 2
_MS_NODEV: Final = 4
_MS_NOEXEC: Final = 8
_MS_REMOUNT: Final = 32
_MS_NOATIME: Final = 1024
_MS_NODIRATIME: Final = 2048
_MS_BIND: Final = 4096
_MS_REC: Final = 16384
_MS_SLAVE: Final = 1 << 19
_MS_RELATIME: Final = 1 << 21
#: ``statvfs``'s flags of a mount, and the ``mount`` flags that keep them on a remount (a
#: remount that drops ``nosuid`` or ``nodev`` is refused where they are locked).
_KEPT: Final = (
    (os.ST_NOSUID, _MS_NOSUID),
    (os.ST_NODEV, _MS_NODEV),
    (os.ST_NOEXEC, _MS_NOEXEC),
    (os.ST_NOATIME, _MS_NOATIME),
    (os.ST_NODIRATIME, _MS_NODIRATIME),
    (os.ST_RELATIME, _MS_RELATIME),
)
#: ``mount_setattr(2)`` (Linux 5.12): the same number on every architecture.
_SYS_MOUNT_SETATTR: Final = 442
_AT_FDCWD: Final = -100
_AT_RECURSIVE: Final = 0x8000
_MOUNT_ATTR_RDONLY: Final = 0x00000001
#: ``CAP_SYS_ADMIN``'s bit in ``/proc/self/status``'s ``CapEff``.
_CAP_SYS_ADMIN: Final = 21

#: Why a root was not sealed where it does not exist (not said in the run's header).
MISSING: Final = "it does not exist (nothing in it to lose)"

#: What `seal` did, for the run's header: each root sealed, and each left as it was with why.
Outcome = tuple[list[Path], list[tuple[Path, str]]]


def why_not() -> str | None:
    """Why a run cannot seal roots on this machine, as this user, or None where it can."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if not _capable():
        return "the run lacks CAP_SYS_ADMIN (run as root, or in a container, to have it)"
    return None


def _threads() -> str | None:
    """Why this process cannot move into a namespace of its own now: its other threads."""
    try:
        threads = len(list(Path("/proc/self/task").iterdir()))
    except OSError:
        return "/proc/self/task cannot be read"
    if threads != 1:
        # ``unshare(CLONE_NEWNS)`` moves the calling thread alone: the others would stay in
        # the machine's namespace, and a child forked from one of them would too.
        return f"the process has {threads} threads as the run starts (a plugin started them)"
    return None


def seal(roots: Iterable[Path], keep_writable: Iterable[Path]) -> Outcome:
    """Move this process into a mount namespace of its own and mount each of ``roots`` that
    exists read-only over itself there; a root that holds one of ``keep_writable`` (the run's
    own sandbox and temporary root) is left as it is. What was sealed, and what was not and
    why (`why_not` first: nothing is sealed where it answers)."""
    roots = list(roots)
    reason = why_not() or _threads()
    if reason is not None:
        return [], [(root, reason) for root in roots]
    if libc.function("unshare")(_CLONE_NEWNS) != 0:
        return [], [(root, f"unshare: {os.strerror(libc.get_errno())}") for root in roots]
    # The machine's mounts still reach the run; none of the run's reaches the machine.
    try:
        _mount(None, "/", _MS_REC | _MS_SLAVE)
    except OSError as error:
        return [], [(root, f"mount: {error.strerror}") for root in roots]
    writable = [Path(os.path.realpath(path)) for path in keep_writable]
    sealed: list[Path] = []
    left: list[tuple[Path, str]] = []
    for root in roots:
        real = Path(os.path.realpath(root))
        holding = next((w for w in writable if w == real or real in w.parents), None)
        if holding is not None:
            left.append((root, f"it holds the run's own {shell_word(str(holding))}"))
            continue
        if not real.is_dir():
            left.append((root, MISSING))
            continue
        try:
            _mount(str(real), str(real), _MS_BIND | _MS_REC)
            _read_only(real)
        except OSError as error:
            left.append((root, error.strerror or str(error)))
            continue
        sealed.append(real)
    return sealed, left


def _read_only(path: Path) -> None:
    """``path``'s bind mount and every mount below it read-only: ``mount_setattr`` where
    the kernel has it, else a remount of the top one (a mount below it stays as it was)."""
    attr = struct.pack("=QQQQ", _MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr
    setattr_ = libc.function("syscall")
    if setattr_(_SYS_MOUNT_SETATTR, _AT_FDCWD, os.fsencode(path), _AT_RECURSIVE, attr, 32) == 0:
        return
    if libc.get_errno() != errno.ENOSYS:
        raise OSError(libc.get_errno(), os.strerror(libc.get_errno()), str(path))
    flags = os.statvfs(path).f_flag
    kept = sum(flag for found, flag in _KEPT if flags & found)
    _mount(None, str(path), _MS_REMOUNT | _MS_BIND | _MS_RDONLY | kept)


def _mount(source: str | None, target: str, flags: int) -> None:
    encoded = os.fsencode(source) if source is not None else None
    if libc.function("mount")(encoded, os.fsencode(target), None, flags, None) != 0:
        code = libc.get_errno()
        raise OSError(code, os.strerror(code), target)


def unsealed(sealed: list[Path]) -> list[Path]:
    """Which of ``sealed`` a process of the run made writable again since (a remount of the
    seal read-write, or an unmount of it): one ``statvfs`` each, whose flags are those of
    the mount on top at that path (about 2 us; reading the mount table was 1.9 ms)."""
    return [path for path in sealed if not _read_only_here(path)]


def read_only_mounts(paths: list[Path]) -> list[Path]:
    """Which of ``paths`` are read-only in this process's mount namespace: a worker's record
    of what its controller sealed."""
    return [path for path in paths if _read_only_here(path)]


def _read_only_here(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def reseal(paths: list[Path]) -> list[tuple[Path, str]]:
    """Seal ``paths`` read-only again in this process's namespace (a test made them writable):
    what could not be, with why."""
    try:
        points = {entry.point for entry in mountinfo.table()}
    except OSError:
        points = set()  # then each is bound again: a bind over the seal is sealed as well
    failed = []
    for path in paths:
        try:
            if os.fsencode(path) not in points:  # the seal unmounted: bound again
                _mount(str(path), str(path), _MS_BIND | _MS_REC)
            _read_only(path)
        except OSError as error:
            failed.append((path, error.strerror or str(error)))
    return failed


def _capable() -> bool:
    try:
        with Path("/proc/self/status").open(encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except (OSError, ValueError):
        return False
    return False
