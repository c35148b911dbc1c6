"""The data-root lock: one kernel lock per data root, held for a holder's whole life.

A live holder owns its data root. A holder (a server, a test session or a maintenance
command) takes an exclusive ``flock`` on ``<root>/.server.lock`` through
:class:`filelock.UnixFileLock` (the pytest session's own root, inside the sandbox pytest made
for the run, takes the same flock directly: see `_SandboxFlock`) and publishes who it is, as
JSON, inside that file while it holds it. The kernel drops the lock when the holder's last
descriptor closes, so a crash (even ``kill -9``) never leaves a stale lock behind.

Lifecycle of ``<root>/.server.lock``:

* **Created** by the first :meth:`RootLock.acquire` on a root (``O_CREAT`` without
  ``O_TRUNC``, mode 0600). The root itself must already exist: :mod:`app.dataroot` creates
  it, the lock never does.
* **Written** only by the process that holds the lock, only after the lock is taken, in
  place on the locked descriptor (never by rename: see below). On a full disk the holder
  keeps the lock without writing it: the file then names no holder.
* **Emptied** by the holder when it releases, while it still holds the lock. A holder that
  crashed leaves its last JSON behind; that content means nothing once the lock is free,
  and the next holder overwrites it.
* **Removed or replaced by nobody**, ever. A second process that opened the path after a
  deletion or a rename-over would lock a *different* inode and both would believe they own
  the root. :meth:`RootLock.still_ours` and :class:`LockWatcher` detect that it happened
  anyway, so the holder can stop instead of sharing the root.

A :func:`probe` opens the file read-only, never creates anything, and describes one moment
only: anything destructive must take the lock for the whole operation instead of probing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self

from app import __version__, mountinfo
from app.errors import (
    DataRootInUseError,
    LockFileAliasedError,
    LockFileKindError,
    LockFileUnreadableError,
    LockUnavailableError,
    json_loads,
    shell_word,
    watch_failed,
)
from app.records import dataclass
from app.sandbox import (
    check_given_profile,
    check_root,
    command_line,
    identity,
    own_start,
    process_starts,
)

if TYPE_CHECKING:
    from filelock import UnixFileLock

__all__ = [
    "BOOT_ID_FILE",
    "KINDS",
    "LOCK_FILE",
    "HolderKind",
    "LockWatcher",
    "Probe",
    "RootLock",
    "describe_holder",
    "held_here",
    "holder_info",
    "probe",
    "read_holder",
]

LOCK_FILE: Final = ".server.lock"
"""Name of the lock file inside a data root."""

BOOT_ID_FILE: Final = Path("/proc/sys/kernel/random/boot_id")
"""Where Linux publishes the boot id: a pid only names a process within one boot."""

HolderKind = Literal["server", "tests", "maintenance"]
KINDS: Final[tuple[str, ...]] = ("server", "tests", "maintenance")

# flock errors that mean "this filesystem cannot lock", not "someone else holds it".
# NFS mounted with nolock, some FUSE and overlay setups answer with these.
_UNSUPPORTED_ERRNOS: Final = frozenset(
    {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}
)
_CONTENDED_ERRNOS: Final = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})
# Pauses between looks at a lock file whose check failed (EIO, ESTALE) before the holder
# gives up, each at most the interval between checks: a blip of the filesystem does not stop
# a server whose flock is still its own.
_RECHECK_PAUSES: Final = (0.1, 0.5, 2.0)
# A full disk (or quota): the holder's JSON cannot be written, and the lock is held unnamed.
_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})

log = logging.getLogger("app.lock")

#: Whose view the holder looks compare with the holder's (``/proc/<pid>``): the calling
#: thread's, as `mountinfo.table`'s. A thread may have a mount namespace of its own
#: (``unshare(CLONE_NEWNS)``), and ``"self"``, the first thread's table, did not hold the
#: FUSE mirror of a live root that thread had mounted: it opened the mirror as a second
#: writer beside the holder (red team 70 on regress).
_HERE: Final = "thread-self"
#: Opens a file to name it only: no read, no write, no wait (a FIFO), a link itself.
_PATH_ONLY: Final = os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW

# A reader can catch the holder between truncating and writing its JSON (or, on update,
# with a stale tail after a shorter record). A few short retries ride that window out.
_READ_ATTEMPTS: Final = 5
_READ_RETRY_DELAY: Final = 0.02
_MAX_HOLDER_BYTES: Final = 64 * 1024

_POLL_INTERVAL: Final = 0.05
# A shared flock seen by a probe is another probe's instant unless its process still holds
# it after these pauses (seconds): paid only where another process holds one.
_SHARED_PAUSES: Final = (0.05, 0.2)


@functools.cache  # a process lives within one boot: read once, not on every publish
def _boot_id() -> str | None:
    try:
        return BOOT_ID_FILE.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def holder_info(kind: str, profile: str, *, port: int | None = None, root: Path) -> dict[str, Any]:
    """The JSON a holder publishes in the lock file.

    Args:
        kind: ``"server"``, ``"tests"`` or ``"maintenance"``.
        profile: the profile the holder runs on (lower case).
        port: the port a server listens on; ``None`` until it is bound, and for other kinds.
        root: the data root being held.

    Returns:
        A JSON-ready mapping with ``pid``, ``host``, ``boot_id``, ``profile``, ``kind``,
        ``started_at`` (ISO 8601, UTC), ``argv``, ``version``, ``port``, ``root``,
        ``root_id`` (the root directory's device and inode) and ``pid_started`` (when this
        process started, in clock ticks since boot as ``/proc/<pid>/stat`` gives it: with the
        pid, it names this process and no other that is given the pid later).
    """
    if kind not in KINDS:
        msg = f"holder kind must be one of {', '.join(KINDS)}, not {kind!r}"
        raise ValueError(msg)
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "profile": profile,
        "kind": kind,
        "started_at": _now_iso(),
        "argv": list(sys.argv),
        "version": __version__,
        "port": port if kind == "server" else None,
        "root": str(root),
        "root_id": _dir_id(root),
        "pid_started": own[1] if (own := own_start()) is not None else None,
    }


def _dir_id(path: Path) -> str | None:
    """A directory's identity (``<device>:<inode>``), which no move or second path changes:
    the holder of a lock file moved away is told apart by it (red team 46)."""
    found = identity(path)
    return None if found is None else f"{found[0]}:{found[1]}"


def describe_holder(holder: Mapping[str, Any] | None) -> str:
    """One line naming a lock holder: pid, kind, profile, host, port and since when."""
    if not holder:
        return "a process that published no details (pid unknown)"
    if "took_lock" in holder:  # see `_kept_by`
        took = holder["took_lock"]
        original = {k: v for k, v in holder.items() if k not in ("pid", "took_lock")}
        # Its own words for the taker, which start "pid N, " only where it published details:
        # an empty lock file's taker was "pid N (pid N (command line unknown), which published
        # ...)" (red team 71 on regress, round i).
        taker = describe_holder({**original, "pid": took})
        if taker.startswith(f"pid {took}, "):
            taker = f"pid {took} ({taker.removeprefix(f'pid {took}, ')})"
        keeper = (
            f"pid {holder['pid']} ({holder.get('keeper_argv') or 'command line unknown'})"
            if holder.get("pid")
            else "a process of another user, which this one cannot see (as root, `fuser -v` "
            "on the lock file names it)"
        )
        return (
            f"{keeper}, which keeps open the lock taken by {taker}; pid {took} "
            "no longer holds it (it exited, or closed it), and the descriptor was inherited "
            "or passed on"
        )
    if holder.get("shared_lock"):  # see `_shared_holder`
        others = holder.get("shared_with") or []
        listed = ", ".join(map(str, others))
        also = f" (and pid{'s' if len(others) > 1 else ''} {listed})" if others else ""
        named = holder.get("file_names")
        stale = (
            f"; the lock file names pid {named}, which did not write it (a holder of the app "
            "never holds the lock shared): a holder that was killed left it, and its pid was "
            "given again since"
            if holder.get("file_names_reused")
            else f"; the lock file names pid {named}, which does not hold the lock (a holder "
            "that was killed left it so)"
            if named is not None
            else ""
        )
        paused = _details({k: v for k, v in holder.items() if k in PAUSED_KEYS})
        return (
            f"pid {holder['pid']} ({holder.get('holder_argv') or 'command line unknown'}){also}"
            ", which holds a shared lock on the lock file, as `flock -s` takes one: not a "
            f"holder of the app, it keeps every writer off the root until it lets go{stale}"
        ) + "".join(f", {part}" for part in paused)
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("unreadable"):
        return (
            f"pid {holder['pid']} ({_command_line(holder['pid'])}), as the kernel lists it: "
            f"its details in the lock file cannot be read ({holder['unreadable']})"
        )
    if holder.get("unpublished"):
        argv = _command_line(holder["pid"])
        return (
            f"pid {holder['pid']} ({argv}), which published no details in the lock file (it "
            "took the lock on a full disk, is releasing it, or the file was emptied by hand; "
            "or it is not a holder of the app but a program that writes nothing there, as "
            "`flock` around a backup)"
        )
    if "pid_written_over" in holder and "pid_in_its_namespace" not in holder:
        over = holder["pid_written_over"]
        # Red team 70: a server killed (-9) left its JSON, and `flock .server.lock <backup>`
        # took the lock since: it was named as that server, its port and URL, "a server
        # names itself again", and `app status` said it served where nothing did.
        argv = holder.get("holder_argv") or command_line(holder["pid"]) or "command line unknown"
        said = (
            _REUSED.format(pid=over)
            if holder.get("pid_reused")
            else (
                f"the lock file names pid {over}, which does not hold the lock, so the details "
                "after this are not this process's: they were written over, as a backup "
                "copied into a live data root does, or left by a holder that was killed, and "
                "the lock taken since"
            )
        )
        described = (
            f"pid {holder['pid']} ({argv}; {said} by a program that writes nothing in it, such "
            "as `flock`; a server names itself again within lock_check_seconds, another "
            "program never does)"
        )
        parts = [described]
    if "pid_in_its_namespace" in holder:  # see `_seen_here`
        theirs = holder["pid_in_its_namespace"]
        reused = (
            f"; {_REUSED.format(pid=theirs)} by a program that writes nothing in it, such as "
            "`flock`"
            if holder.get("pid_reused")
            else ""
        )
        host = holder.get("host")
        parts = [
            f"pid {holder['pid']} (pid {theirs} in a PID namespace of its own{reused})"
            if holder.get("pid")
            # The kernel lists no process here for a lock of another machine that mounts
            # the same share (NFS), whose holder was said to be in a PID namespace of this
            # one, "another container's, or the host's" (red team 72).
            else f"pid {theirs} on another host than this one, {host}, as the lock file "
            "names it (a machine that shares this filesystem, as over NFS, or a container on "
            "such a machine, whose processes this one cannot see: stop it there)"
            if _on_another_host(holder)
            else f"pid {theirs} in a PID namespace this process cannot see (another "
            "container's, or the host's: stop it there)"
        ]
    parts.extend(_details(holder))
    return ", ".join(parts)


def _on_another_host(holder: Mapping[str, Any]) -> bool:
    """Whether the record `holder` names another machine than this one: another host name,
    and not this boot's id. A container with a host name of its own (Docker gives each one)
    runs on this kernel, whose boot id every namespace reads alike: a probe there of a root
    held by the host's server, or a probe on a host whose name was changed under a live
    server, was told that server ran "on another host than this one", when it was in a PID
    namespace of this machine (red team 72 on regress, round b)."""
    host = holder.get("host")
    if not isinstance(host, str) or not host or host == socket.gethostname():
        return False
    ours = _boot_id()
    return ours is None or holder.get("boot_id") != ours


#: How `describe_holder` says a record names the pid of the holder, as another process
#: (`_started_otherwise`): a holder killed, its pid given again since.
_REUSED: Final = (
    "the lock file names pid {pid} as a process that started at another time than this one, "
    "so the details after this are not this process's: the pid was given again since the "
    "process that wrote them (a holder that was killed) ended, and the lock taken"
)


#: The fields `_seen_here` adds to a record that names the pid of another process.
_REUSED_KEYS: Final = frozenset({"pid_written_over", "pid_reused", "holder_argv"})


#: The fields `_paused` adds to a holder: how its process is kept from running.
PAUSED_KEYS: Final = frozenset({"stopped", "traced_by", "frozen", "thaw"})


def _details(holder: Mapping[str, Any]) -> list[str]:
    """What a holder published besides its pid, as `describe_holder` lists it."""
    parts: list[str] = []
    if holder.get("kind"):
        parts.append(f"kind {holder['kind']}")
    if holder.get("profile"):
        parts.append(f"profile {holder['profile']}")
    if holder.get("host"):
        parts.append(f"host {holder['host']}")
    if holder.get("port"):
        parts.append(f"port {holder['port']}")
    if holder.get("started_at"):
        parts.append(f"since {holder['started_at']}")
    if holder.get("kind") == "maintenance" and (command := _maintenance_command(holder)):
        # "kind maintenance" alone did not tell a `data check` that reads from an
        # `empty-trash` that deletes, which decides between waiting and stopping it.
        parts.append(f"running `{command}`")
    if holder.get("stopping_since"):
        parts.append(f"stopping since {holder['stopping_since']}")
    if holder.get("stopped"):
        parts.append("stopped by a signal (SIGSTOP, Ctrl-Z in its shell): it waits to be resumed")
    if "traced_by" in holder:
        tracer = holder["traced_by"]
        parts.append(
            "stopped by a debugger"
            + (f" (pid {tracer} traces it)" if tracer else "")
            + ": it waits for the debugger to continue it"
        )
    if holder.get("frozen"):
        parts.append(f"frozen with its cgroup {holder['frozen']}: it waits to be thawed")
    return parts


def _maintenance_command(holder: Mapping[str, Any]) -> str | None:
    """The command a maintenance holder runs, as typed (``app data purge``), from its argv."""
    argv = holder.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    program = argv[0]
    if Path(program).name in ("app", "__main__.py"):  # the console script, `python -m app`
        program = "app"
    return " ".join(shell_word(word) for word in [program, *argv[1:]])


def _parse_holder(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = json_loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _read_holder_fd(fd: int) -> dict[str, Any] | None:
    for attempt in range(_READ_ATTEMPTS):
        holder = _parse_holder(os.pread(fd, _MAX_HOLDER_BYTES, 0))
        if holder is not None:
            return holder
        if attempt + 1 < _READ_ATTEMPTS:
            time.sleep(_READ_RETRY_DELAY)
    return None


def _open_existing(path: Path) -> int | None:
    # O_RDONLY without O_CREAT: looking must never create the file (or, via filelock's
    # helpers, the directory) it looks at. O_NOFOLLOW: the lock file is never a symlink.
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        # A symbolic link there (dangling, or to another root's lock file) was a traceback
        # from `app status` and from every open of the root.
        if error.errno == errno.ELOOP:
            if not _is_link(path):
                # A loop of symbolic links on the root's way, not a link here: nothing is
                # opened through it, so no lock file is there; it was "refusing to lock
                # ... it is a symbolic link", a traceback from pytest's start with such an
                # APP_DATA_ROOT in its shell (red team 61 on regress).
                return None
            raise LockFileAliasedError(path, "is a symbolic link") from None
        raise


def _is_link(path: Path) -> bool:
    """Whether `path` itself is a symbolic link (False where its directory cannot be
    reached: a loop of links on its way)."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _unreadable(path: Path) -> OSError | LockFileUnreadableError:
    """The refusal of a lock file this process may not open, naming whoever the kernel
    says holds it: its mode keeps its JSON from us, not its flock from /proc/locks."""
    try:
        found = path.lstat()
    except OSError as error:
        return error  # the directory is out of reach too: the storage refusal says so
    pid = _flock_pid_of(found, path)
    return LockFileUnreadableError(
        path,
        f"{stat.S_IMODE(found.st_mode):04o}",
        found.st_uid,
        os.geteuid(),
        pid,
        _command_line(pid) if pid else "",
    )


def _published_by_live_process(path: Path) -> bool:
    """Whether the lock file at ``path`` names a process alive on this host and boot.

    Read once, without the retries of `read_holder`: an empty or half-written file is a
    holder that has not published yet, and the caller keeps retrying for it.
    """
    fd = _open_existing(path)
    if fd is None:
        return False
    try:
        holder = _parse_holder(os.pread(fd, _MAX_HOLDER_BYTES, 0))
    finally:
        os.close(fd)
    pid = holder.get("pid") if holder else None
    if (
        holder is None
        or type(pid) is not int
        or pid <= 0
        or holder.get("boot_id") != _boot_id()
        or holder.get("host") != socket.gethostname()
    ):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def read_holder(root: Path) -> dict[str, Any] | None:
    """The JSON the current holder of ``root`` published, without locking anything.

    Tolerates a holder caught between truncating and rewriting the file by retrying
    briefly. Content left by a holder that crashed is returned as is: only a lock attempt
    (or :func:`probe`) can tell whether anybody holds the lock.

    Args:
        root: the data root.

    Returns:
        The parsed holder mapping, or ``None`` if the file is missing, empty or unreadable.
    """
    fd = _open_existing(root / LOCK_FILE)
    if fd is None:
        return None
    try:
        return _read_holder_fd(fd)
    finally:
        os.close(fd)


_PROC_LOCKS: Final = Path("/proc/locks")


def _flock_pid_here(fd: int) -> int | None:
    """The pid, as this process's PID namespace numbers it, of the process that holds the
    exclusive flock on `fd`'s file: 0 if none is listed (the kernel leaves out holders in a
    PID namespace it cannot see), None where ``/proc/locks`` cannot be read."""
    try:
        found = os.fstat(fd)
    except OSError:
        return None
    return _flock_pid_of(found, fd)


def _exclusive_flocks() -> list[tuple[str, str]]:
    """Each exclusive flock held now, from ``/proc/locks``: its holder's pid as the kernel
    writes it and its file as ``<major>:<minor>:<inode>`` (hex device numbers). A waiter's
    line ("->") is none. ``OSError`` where the file cannot be read."""
    # "1: FLOCK  ADVISORY  WRITE 15858 fe:00:2371224 0 EOF" ("1: -> FLOCK ..." a waiter)
    return [
        (parts[4], parts[5])
        for parts in map(str.split, _PROC_LOCKS.read_text().splitlines())
        if len(parts) > 5 and parts[1:4] == ["FLOCK", "ADVISORY", "WRITE"]
    ]


def _shared_flock_pids(found: os.stat_result, fd: int) -> list[int]:
    """The pids, as this process numbers them, of the processes other than this one that
    hold a shared flock on the file whose stat is `found` (``flock -s``; `fd` opens it), from
    ``/proc/locks``; empty where none does or the list cannot be read."""
    try:
        lines = _PROC_LOCKS.read_text().splitlines()
    except OSError:
        return []
    shared = [
        (parts[4], parts[5])
        for parts in map(str.split, lines)
        if len(parts) > 5 and parts[1:4] == ["FLOCK", "ADVISORY", "READ"]
    ]
    key, alike = _listed_key(found, [file for _, file in shared], fd)
    listed = [pid for pid, file in shared if file == key]
    pids = {int(pid) for pid in (_of_this_file(found, key, listed) if alike else listed)}
    pids.discard(os.getpid())
    # The pid listed is the process that took the lock, which may have exited since while
    # another keeps its descriptor: flock(1)'s own example, `exec 9<lock; flock -s 9`, leaves
    # the shell holding it. It was named "pid N (command line unknown)" with `kill N` for a
    # process that no longer runs (one that took its number since, after a while), and in a
    # PID namespace, where the kernel lists such a lock's pid as 0, "nobody" (red team 71).
    # The processes that keep its open file description are named instead, as `_kept_by`
    # names an exclusive lock's.
    if gone := {pid for pid in pids if _lock_line(pid, key) is False}:
        pids -= gone
        pids.update(_keepers(Path(LOCK_FILE), key, found.st_dev))
        pids.discard(os.getpid())
    return sorted(pids)


def _shared_holder(
    fd: int, holder: dict[str, Any] | None, pids: list[int] | None = None
) -> dict[str, Any] | None:
    """Who holds the lock of `fd`'s file shared, where no process holds it exclusively, or
    None: a program that keeps every writer off the root (`flock -s <lock> <backup>`), which
    `app status` said was "nobody", and every refusal named the pid a killed holder's JSON
    names "in a PID namespace this process cannot see" (red team 70)."""
    if pids is None:
        try:
            pids = _shared_flock_pids(os.fstat(fd), fd)
        except OSError:
            return None
    if not pids:
        return None
    shared: dict[str, Any] = {
        "pid": pids[0],
        "shared_lock": True,
        "holder_argv": command_line(pids[0]) or "command line unknown",
    }
    if len(pids) > 1:
        shared["shared_with"] = pids[1:]
    if holder and isinstance(holder.get("pid"), int):
        shared["file_names"] = holder["pid"]
        if holder["pid"] in pids:
            # A holder of the app takes the lock exclusive: the process at the pid its
            # record names, holding it shared, is another, given that pid since (red team
            # 72), which was said not to hold the lock.
            shared["file_names_reused"] = True
    return {**shared, **_paused(pids[0])}  # Ctrl-Z on the backup holds the root for ever too


def _flock_pid_of(found: os.stat_result, where: int | Path) -> int | None:
    """`_flock_pid_here` for the file whose stat is `found` (`where`: a descriptor of it, or
    its path)."""
    try:
        flocks = _exclusive_flocks()
    except OSError:
        return None
    key, alike = _listed_key(found, [file for _, file in flocks], where)
    listed = [pid for pid, file in flocks if file == key]
    for pid in _of_this_file(found, key, listed) if alike else listed:
        return int(pid) if pid.isdigit() else None
    return 0


def _lock_key(device: int, inode: int) -> str:
    """A file's key in ``/proc/locks`` and in a descriptor's ``fdinfo`` lock lines
    (``<major>:<minor>:<inode>``, hex device numbers), on `device` as those name it."""
    return f"{os.major(device):02x}:{os.minor(device):02x}:{inode}"


def _listed_key(found: os.stat_result, files: list[str], where: int | Path) -> tuple[str, bool]:
    """The key the kernel's lock lists give the file whose stat is `found` (`where`: a
    descriptor of it, or its path), among `files`, the keys listed now; and whether that key
    may name other files too, told apart by `_of_this_file`.

    Linux names a lock's file by its superblock's device, which is the device ``stat``
    gives on most filesystems but not on btrfs: each of its subvolumes, the top one too,
    gives an anonymous device of its own. A key built from ``st_dev`` matched no lock there,
    and a live holder on btrfs was named "in a PID namespace this process cannot see", a
    shared ``flock -s`` was "nobody", and a lock file deleted under its live holder let a
    second writer take the root beside it (red team 71). The mount table is read only where
    the key from ``st_dev`` is not listed and this inode number is, on another device.

    Such a key names a file of each subvolume with that inode number (each numbers its files
    from 256: a snapshot, or two roots made alike in two subvolumes, repeat them), all on
    one superblock: a holder listed for it is this file's only where `_of_this_file` says."""
    key = _lock_key(found.st_dev, found.st_ino)
    inode = f":{found.st_ino}"
    if key in files or not any(file.endswith(inode) for file in files):
        return key, False
    listed = _lock_key(_listed_device(where, found.st_dev), found.st_ino)
    return listed, listed != key


def _of_this_file(found: os.stat_result, key: str, pids: list[str]) -> list[str]:
    """Of `pids`, the processes listed for a lock on `key` (``/proc/locks``' words), those
    with an open file description of the file whose stat is `found` that holds it, then
    those whose descriptors cannot be told (another user's, or gone: a descriptor kept past
    its taker, `_kept_by`), in their order. Where `key` names other files too (`_listed_key`:
    btrfs's subvolumes), another root's holder was named for this one, and its pid given
    to `kill` (red team 71).

    A pid that exited (not 0: a taker another PID namespace hides) holds nothing itself: a
    process keeps its lock through an inherited descriptor (flock(1)'s own example, `exec
    9<lock; flock 9`, in a shell). It counts only where a process keeps this very file's
    (`_keepers`): one kept on another subvolume's file of that inode number made another
    program's empty ``.server.lock`` a root's lock file, and every root beneath it was
    refused as inside a data root (red team 71 on regress)."""
    mine, unknown = [], []
    kept: bool | None = None
    for pid in pids:
        holds = _holds_file(pid, found, key) if pid.isdigit() else None
        if holds:
            mine.append(pid)
        elif holds is None:
            if pid.isdigit() and int(pid) and _lock_line(pid, key) is False:
                if kept is None:  # read once: it looks at every process's descriptors
                    kept = bool(_keepers(Path(LOCK_FILE), key, found.st_dev))
                if not kept:
                    continue
            unknown.append(pid)
    return mine + unknown


def _holds_file(pid: str, found: os.stat_result, key: str) -> bool | None:
    """Whether process `pid` has a descriptor of the file whose stat is `found` whose open
    file description holds a flock on `key` (its ``fdinfo`` lists it); None where its
    descriptors cannot be read (another user's process) or it is gone."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")  # noqa: PTH208 - text, per descriptor
    except OSError:
        return None
    for name in names:
        with contextlib.suppress(OSError):
            if _fd_inode(int(pid), name) not in (None, found.st_ino):
                continue  # not this inode: never stat'ed (it may hang, on NFS)
            there = os.stat(f"/proc/{pid}/fd/{name}")  # noqa: PTH116 - the open file itself
            if (there.st_dev, there.st_ino) != (found.st_dev, found.st_ino):
                continue
            with open(f"/proc/{pid}/fdinfo/{name}") as info:  # noqa: PTH123 - a seq file
                if any(
                    line.startswith("lock:") and " FLOCK " in line and f" {key} " in line
                    for line in info
                ):
                    return True
    return False


def _listed_device(where: int | Path, device: int) -> int:
    """The device the kernel's lock lists name a file by (its superblock's), `where` a
    descriptor of the file or its path, `device` its ``st_dev``: the mount table's device of
    the mount the file is reached through (its ``mnt_id`` in ``fdinfo``), which is the
    superblock's. `device` where that cannot be read (no ``/proc``, a mount of another
    namespace than this thread's).

    Only that mount's line is parsed (`mountinfo.parse`): a probe of a free root on a
    filesystem with no block device (tmpfs) asks this each time, and parsing the whole
    table cost about as much as the rest of the probe."""
    try:
        fd = where if isinstance(where, int) else os.open(where, _PATH_ONLY)
    except OSError:
        return device
    try:
        with open(f"/proc/{_HERE}/fdinfo/{fd}", "rb") as info:  # noqa: PTH123 - a seq file
            ids = [line.split()[1] for line in info if line.startswith(b"mnt_id:")]
        if not ids or not ids[0].isdigit():
            return device
        with open(f"/proc/{_HERE}/mountinfo", "rb") as opened:  # noqa: PTH123 - a seq file
            table = opened.read()
    except (OSError, IndexError):
        return device
    finally:
        if not isinstance(where, int):
            os.close(fd)
    at = (b"\n" + table).find(b"\n" + ids[0] + b" ")  # its line, where it starts in `table`
    if at < 0:
        return device
    end = table.find(b"\n", at)
    entry = mountinfo.parse(table[at:] if end < 0 else table[at:end])
    if entry is not None:
        major, _, minor = entry.device.partition(b":")
        if major.isdigit() and minor.isdigit():
            return os.makedev(int(major), int(minor))
    return device


def _seen_here(holder: dict[str, Any] | None, pid_here: int | None) -> dict[str, Any] | None:
    seen = _seen_here_as_published(holder, pid_here)
    if seen is not None and pid_here:
        # Ctrl-Z on a maintenance command, left in a forgotten shell job (or a SIGSTOP), a
        # server at a debugger's breakpoint, a container paused: it holds the root for ever,
        # and neither "wait for it to finish" nor `kill` (acted on only once it runs) was a
        # remedy.
        return {**seen, **_paused(pid_here)}
    return seen


def _paused(pid: int) -> dict[str, Any]:
    """How `pid` is kept from running, as a holder's fields: ``stopped`` (SIGSTOP, Ctrl-Z's
    SIGTSTP: state T), ``traced_by`` (the debugger's pid: state t, a tracing stop),
    ``frozen`` (the directory of the cgroup that freezes it) and ``thaw`` (the command that
    thaws that cgroup); empty where it runs."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return {}
    state = stat_line.rpartition(")")[2].split()[:1]
    if state == ["T"]:
        return {"stopped": True}
    if state == ["t"]:
        return {"traced_by": _tracer(pid)}
    # A frozen task sleeps (S, or D under cgroup v1's freezer), as a running one may.
    frozen = _frozen_cgroup(pid) if state in (["S"], ["D"]) else None
    return {} if frozen is None else {"frozen": frozen[0], "thaw": frozen[1]}


def paused_fields(pid: int) -> dict[str, Any]:
    """How `pid`, a process of this machine, is kept from running, as a data root's holder's
    fields (`_paused`): ``stopped``, ``traced_by``, ``frozen`` and ``thaw``; empty where it
    runs. For a replica's entry in ``app status --json`` (red team 76 on the server: a
    stopped worker was said so only in words)."""
    return _paused(pid)


def paused_words(pid: int, paused: Mapping[str, Any] | None = None) -> list[str]:
    """How `pid`, a process of this machine, is kept from running, in `describe_holder`'s
    words, each with what lets it act on a stop; empty where it runs.

    For a replica of the remote backend on this machine (`app.remote.errors.describe_replica`),
    which a row names by its pid alone: a worker of `serve --workers` stopped with SIGSTOP
    was "serving" in `app status` and in each maintenance refusal, which said to stop it,
    and a `kill` is acted on only once it runs again (red team 75 on serve --workers).
    ``paused``: its `paused_fields`, read already (the words then say what they say)."""
    paused = _paused(pid) if paused is None else paused
    words = _details(paused)
    if paused.get("stopped"):
        words[-1] += f"; a stop (kill {pid}) takes effect once it is resumed (kill -CONT {pid})"
    elif "traced_by" in paused:
        words[-1] += f", and acts on no signal but kill -KILL {pid} until then"
    elif paused.get("thaw"):
        words[-1] += f" (`{paused['thaw']}`), and acts on no signal but kill -KILL {pid} until then"
    return words


def _tracer(pid: int) -> int | None:
    """The pid of the process that traces `pid` (``TracerPid``), None where unknown."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    found = next((line.split()[1:] for line in lines if line.startswith("TracerPid:")), [])
    return int(found[0]) if found and found[0].isdigit() and found[0] != "0" else None


def _frozen_cgroup(pid: int) -> tuple[str, str] | None:
    """The directory of the cgroup that freezes `pid` (`docker pause`, `systemctl freeze`,
    cgroup v1's freezer) and the command that thaws it, None where none does or it cannot be
    read.

    By hand, not with a library: psutil reads neither a cgroup's freezer nor where this
    process sees the hierarchy mounted, and the table and two short files are all it takes.
    """
    try:
        groups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        table = mountinfo.table()  # the calling thread's, which reads the paths below
    except OSError:
        return None
    for group in groups:
        hierarchy, _, rest = group.partition(":")
        controllers, _, path = rest.partition(":")
        unified = hierarchy == "0" and not controllers
        if not unified and "freezer" not in controllers.split(","):
            continue
        for entry in table:
            if entry.fstype != (b"cgroup2" if unified else b"cgroup"):
                continue
            if not unified and b"freezer" not in entry.super_options.split(b","):
                continue
            # A mount shows the hierarchy from its fourth field down (a container's `/`).
            root = os.fsdecode(entry.root).rstrip("/")
            if path != root and not path.startswith(root + "/"):
                continue
            where = Path(os.fsdecode(entry.point), path[len(root) :].lstrip("/"))
            try:
                if unified:
                    frozen = "frozen 1" in (where / "cgroup.events").read_text().splitlines()
                else:
                    frozen = (where / "freezer.state").read_text().strip() != "THAWED"
            except OSError:
                continue
            if frozen:
                value, control = ("0", "cgroup.freeze") if unified else ("THAWED", "freezer.state")
                return str(where), f"echo {value} > {shell_word(str(where / control))}"
    return None


def _seen_here_as_published(
    holder: dict[str, Any] | None, pid_here: int | None
) -> dict[str, Any] | None:
    # A holder publishes its pid as its own PID namespace numbers it: a server in a
    # container is pid 1 there, and advising `kill 1` (or the pid of an unrelated process
    # here) would stop the wrong process. The pid the kernel lists for the flock is ours.
    if holder is None and pid_here:
        # An empty lock file under a live lock: its holder took it on a full disk, which
        # left no room for its JSON (`_write_in_place`). The kernel still names it.
        return {"pid": pid_here, "unpublished": True}
    if holder is None or pid_here is None:
        return holder
    own_pid = holder.get("pid") == pid_here
    if own_pid and not _started_otherwise(holder, pid_here):
        return holder
    if own_pid or (pid_here and _innermost_pid(pid_here) == pid_here):
        # In this PID namespace, so it published this very pid: the bytes are another
        # process's, written over the file (a backup copied into a live root), or left by a
        # holder that was killed, under a lock taken since by a program that writes nothing
        # (`flock(1)` around a backup). Its own command line is said, not the file's. Where
        # the record names the very pid but another start, that holder's pid was given since
        # to such a program (a wrap of the pid numbers, a reboot: red team 72), which was
        # named as the killed server, "serving" at its port.
        return {
            **holder,
            "pid": pid_here,
            "pid_written_over": holder.get("pid"),
            "holder_argv": command_line(pid_here) or "command line unknown",
            **({"pid_reused": True} if own_pid else {}),
        }
    seen = {**holder, "pid": pid_here or None, "pid_in_its_namespace": holder.get("pid")}
    if pid_here and _started_otherwise(holder, pid_here):
        # A container's server as its pid 1, killed, and the next container's pid 1 a
        # program that writes nothing: the pid in its namespace is the record's again (red
        # team 72). Its start time, unlike its pid, is the same seen from every namespace.
        return {**seen, "pid_written_over": holder.get("pid"), "pid_reused": True}
    return seen


def _started_otherwise(holder: Mapping[str, Any], pid: int) -> bool:
    """Whether the record `holder` names a process that started at another time than `pid`,
    which holds the lock now: so the record is not its own. False where the record names no
    start (a holder of a release before red team 72's) or `pid`'s cannot be read.

    A tick apart is the same start: a holder in a time namespace whose offset is not a whole
    number of ticks (a checkpoint restored) records the earlier of its two possible starts
    (`own_start`), and a process given a pid its holder had starts after that holder has
    gone, not within a tick of its start."""
    recorded = holder.get("pid_started")
    if type(recorded) is not int:
        return False
    found = process_starts(pid)
    return found is not None and all(abs(recorded - start) > 1 for start in found[1])


def _command_line(pid: int) -> str:
    """`pid`'s command line as a shell would read it (`command_line`), or what says it
    cannot be read. Its words were joined with spaces, so that a holder found through a
    deleted lock file was "pid N (bash -c exec 9<lock; flock 9; ...)" where the same
    holder, its lock file in place, was "pid N (bash -c 'exec 9<lock; flock 9; ...')" (red
    team 71 on regress, round i)."""
    return command_line(pid) or "command line unknown"


def _innermost_pid(pid: int) -> int | None:
    """`pid` as its own PID namespace numbers it (the last ``NSpid`` of its status), None
    where that cannot be read."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("NSpid:"):
            numbers = line.split()[1:]
            return int(numbers[-1]) if numbers and numbers[-1].isdigit() else None
    return None


def _lock_line(pid: int | str, key: str) -> bool | None:
    """Whether a descriptor of `pid` is the open file description that holds the exclusive
    flock on the file `key` (``major:minor:inode``, as ``/proc/locks`` names it): only such a
    descriptor lists the lock in its ``fdinfo``. None where its descriptors cannot be read
    (another user's process)."""
    try:
        infos = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except FileNotFoundError:
        return False  # gone
    except OSError:
        return None
    for info in infos:
        with contextlib.suppress(OSError):
            for line in info.read_text().splitlines():
                if line.startswith("lock:") and " FLOCK " in line and f" {key} " in line:
                    return True
    return False


def _keepers(path: Path, key: str, device: int, listed: int | None = None) -> list[int]:
    """The processes with a descriptor of the open file description that holds the flock on
    the lock file at `path` (or at it once, deleted since): read from every process's open
    files, so only where the process the kernel lists for the lock does not hold it.
    `device`: the file's, or its directory's where `listed` (the device the lock list names
    its files by) is given (`_on_device`)."""
    inode = int(key.rpartition(":")[2])
    # The root's directory as a descriptor's link names it (the real path, no symbolic link
    # in it), each with a slash: a file beneath it of another name is a lock file moved
    # aside (`_names_lock`). Not for a bare name, whose directory would be this process's.
    within = (
        {f"{str(path.parent).rstrip('/')}/", f"{os.path.realpath(path.parent).rstrip('/')}/"}
        if path.is_absolute()
        else set()
    )
    found = []
    with contextlib.suppress(OSError), os.scandir(_PROC_LOCKS.parent) as processes:
        for process in processes:
            if not process.name.isdigit():
                continue
            with contextlib.suppress(OSError), os.scandir(f"{process.path}/fd") as descriptors:
                opened = any(
                    _names_lock(Path(d.path), path.name, inode, device, listed, within)
                    for d in descriptors
                )
                if opened and _lock_line(process.name, key):
                    found.append(int(process.name))
    return found


def _names_lock(
    descriptor: Path,
    name: str,
    inode: int,
    device: int,
    listed: int | None = None,
    within: Collection[str] = (),
) -> bool:
    """Whether a descriptor opens a file called `name` (deleted or not) whose inode is
    `inode` on `device`: by the file itself, since the root may be reached at another path
    than the descriptor names (a bind mount, red team 46). Only a file of that name is looked
    at. The device too: btrfs's subvolumes repeat inode numbers (red team 71). Where
    `device` is a directory's and `listed` the lock list's, as `_on_device` tells it: on an
    overlay of two filesystems a file's device is its layer's, and a shell that kept the
    lock of a deleted lock file there went unseen, so that a writer took the root beside it
    (red team 71 on regress, round i).

    A file of another name beneath a directory `within` (the root's, as the link names it,
    ending in a slash) is looked at too: a shell's lock file moved aside (`mv .server.lock
    .server.lock.old`) went unseen, and a writer took the root beside it (red team 71 on
    regress, round n); so did one moved into a directory of the root (`mv .server.lock
    old/`), whose link's directory is not the root's (round q). By the link's text, which
    costs no more than the name's: a look at every descriptor's file would stat every open
    file of every process at each probe (red team 64 on regress)."""
    try:
        named = str(descriptor.readlink()).removesuffix(" (deleted)")
        if Path(named).name != name and not named.startswith(tuple(within)):
            return False
        seen = descriptor.stat()
        if listed is None:
            return (seen.st_ino, seen.st_dev) == (inode, device)
        pid = int(descriptor.parent.parent.name)
        return seen.st_ino == inode and _on_device(seen, device, listed, pid, descriptor.name)
    except (OSError, ValueError):
        return False


def _kept_by(fd: int, path: Path, holder: dict[str, Any] | None) -> dict[str, Any] | None:
    """`holder`, or who really keeps its lock, if the process the kernel lists for the flock
    no longer holds it.

    A flock belongs to an open file description, not a process: a descriptor of the lock
    that a server's child inherited (a fork below Python, whose at-fork hook closes it), or
    that another process took (``pidfd_getfd``, ``SCM_RIGHTS``), keeps it after the server
    has exited. ``/proc/locks`` still lists the server's pid, its published JSON still names
    it, and the refusal told the operator to `kill` a process that no longer exists, and
    `app status` to use its URL: a lock that looks stale, which one then deletes.
    """
    pid = _flock_pid_here(fd)
    if not pid:
        return holder  # unknown, or in a PID namespace this one cannot see
    try:
        found = os.fstat(fd)
        key, _ = _listed_key(found, [file for _, file in _exclusive_flocks()], fd)
    except OSError:
        return holder
    if _lock_line(pid, key) is not False:
        return holder  # it holds it, or it cannot be told (another user's process)
    keepers = _keepers(path, key, found.st_dev)
    taken = holder or {}
    if taken.get("pid_reused"):
        # The listed pid took the lock and wrote the record, then exited, and the pid is
        # another process's since, which holds nothing: the taker is the record's (red
        # team 72), not that process.
        taken = {k: v for k, v in taken.items() if k not in _REUSED_KEYS}
    kept = {**taken, "pid": keepers[0] if keepers else None, "took_lock": pid}
    if keepers:
        kept["keeper_argv"] = command_line(keepers[0])
    return kept


_STAMP_NAME: Final = ".app-profile.json"  # app.dataroot.STAMP_FILE (this module is below it)
_TMP_NAME: Final = ".tmp"  # app.dataroot.TMP_DIR


def _deleted_lock_holder(path: Path) -> dict[str, Any] | None:
    """The live process that still holds the flock of a lock file once at ``path``, deleted
    or moved (or replaced) since, as its published JSON; None if there is none.

    The holder keeps its flock on the old inode, and a newcomer would lock a new file at
    the path: the kernel no longer keeps them apart. Found through Linux's ``/proc``: the
    exclusive flocks on the root's device (``/proc/locks``), then those processes'
    descriptors of a locked inode that name ``<path> (deleted)``, another name in the root
    (``mv .server.lock .server.lock.old``: red team 46, where `app data check --repair` took
    the root beside its live server), or a file moved out of the root alone whose JSON names
    this root (a whole root moved away is another root: its stamp went with it). The holder
    gets ``lock_file_moved_to`` where the file is now. Another user's process is not visible
    (its descriptors are not ours to read); neither is anything on a system without ``/proc``.
    """
    try:
        # The root first: no root, no holder in it, and the first read of /proc/locks in a
        # process costs 12 to 18 ms here (every pytest start probes each profile's root,
        # and a production root is seldom on a developer's machine).
        device = path.parent.stat().st_dev
        # The device the kernel's lock list names the root's files by, where it is not
        # stat's (btrfs; red team 71): a directory's st_dev with a major number is a block
        # device's, its superblock's, so the mount table is read only for the others.
        listed = device if os.major(device) else _listed_device(path.parent, device)
        locked = _flocks_on(listed)
    except OSError:
        return None
    try:
        current: int | None = path.lstat().st_ino  # the file at the path is not moved
    except OSError:
        current = None
    for pid, inodes in _keeping(locked, path, listed, device).items():
        with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/fd") as descriptors:
            for descriptor in descriptors:
                with contextlib.suppress(OSError):
                    if _fd_inode(pid, descriptor.name) not in (None, *inodes):
                        continue  # not a locked file: never stat'ed (it may hang, on NFS)
                    opened = Path(descriptor.path)
                    found = opened.stat()  # the open file itself, not a name
                    if (
                        found.st_ino in inodes
                        and _on_device(found, device, listed, pid, descriptor.name)
                        and found.st_ino != current
                        and stat.S_ISREG(found.st_mode)
                        and (seen := _moved_lock_file(opened, path)) is not None
                    ):
                        return {**(_seen_here(seen[0], pid) or {"pid": pid}), **seen[1]}
    return None


def _keeping(
    locked: dict[int, set[int]], path: Path, listed: int, device: int
) -> dict[int, set[int]]:
    """`locked` (`_flocks_on`), each pid that exited replaced by the processes that keep
    its locks on files once named like the lock file at `path` (`_keepers`).

    The kernel lists a flock under the pid that took it, which may have exited while another
    process keeps its descriptor: flock(1)'s own example, ``exec 9<lock; flock 9``, in a
    shell around a backup. With the lock file deleted under such a shell, `app status` said
    "nobody" and a writer took the root beside it (red team 71 on regress). Read only where
    a listed pid is gone: it looks at every process's descriptors."""
    found: dict[int, set[int]] = {}
    for pid, inodes in locked.items():
        if os.path.isdir(f"/proc/{pid}/fd"):  # noqa: PTH112 - text, as the loop's
            found.setdefault(pid, set()).update(inodes)
            continue
        if not pid:
            continue  # a taker another PID namespace hides: its keepers are out of sight too
        for inode in inodes:
            for keeper in _keepers(path, _lock_key(listed, inode), device, listed):
                found.setdefault(keeper, set()).add(inode)
    return found


def _on_device(found: os.stat_result, device: int, listed: int, pid: int, fd: str) -> bool:
    """Whether the file a holder's descriptor `fd` opens (`found` its stat) is on the root's
    filesystem: the root directory's `device`, whose files the lock list names by `listed`.

    An overlay whose layers are two filesystems (xino off, Linux's default) gives its files
    another device than its directories (each layer's own), while `/proc/locks` names them
    by the overlay's, the directory's: a live writer whose lock file was deleted went unseen
    there and a second writer took the root beside it (red team 71 on regress). Where the
    directory's device is the listed one, the descriptor's own lock (its ``fdinfo``) on that
    device and inode says it; `_moved_lock_file` then tells whose root the file was, as for
    every holder. On btrfs each subvolume has a device of its own and all one listed device,
    so there the device must be the directory's (a snapshot's file has the same inode)."""
    if found.st_dev == device:
        return True
    if listed != device:
        return False
    key = f" {_lock_key(listed, found.st_ino)} "
    text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    return any(
        line.startswith("lock:") and " FLOCK " in line and key in line for line in text.splitlines()
    )


def _fd_inode(pid: int, fd: str) -> int | None:
    """The inode a process's descriptor opens, from its ``fdinfo`` (procfs: never waits on
    the file's filesystem); None where the kernel does not say (before Linux 5.x); -1 for a
    descriptor whose link names no path (a socket, a pipe, an anonymous inode: no lock
    file), told by the link alone: a server's 4000 connections made each probe of a free
    root on its filesystem read 4000 ``fdinfo`` files, 0.5 s (red team 64 on regress)."""
    if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/"):  # noqa: PTH115
        return -1
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("ino:"):
            return int(line.split()[1])
    return None


def _flocks_on(device: int) -> dict[int, set[int]]:
    """Each process's flocks on ``device``, by inode, from ``/proc/locks``: shared ones too,
    which keep a writer off as an exclusive one does (``flock -s``, a backup's). With only
    the exclusive ones read, a shared holder's lock file deleted or moved aside under it
    let a writer take the root beside it (red team 71 on regress, round q)."""
    on_device = f"{os.major(device):02x}:{os.minor(device):02x}:"
    locked: dict[int, set[int]] = {}
    for parts in map(str.split, _PROC_LOCKS.read_text().splitlines()):
        if len(parts) < 6 or parts[1:3] != ["FLOCK", "ADVISORY"]:
            continue  # a waiter's line ("1: -> FLOCK ...") is none
        pid, file = parts[4], parts[5]
        if pid.isdigit() and file.startswith(on_device):
            locked.setdefault(int(pid), set()).add(int(file.rpartition(":")[2]))
    return locked


def _held_through_another_device(
    found: os.stat_result, fd: int, ignore: frozenset[tuple[str, str]] = frozenset()
) -> dict[str, Any] | None:
    """The live process that holds the lock file `fd` opens (`found` its stat) through
    another device of the same filesystem, as its published JSON; None if there is none.

    A disk image attached through a second loop device (``losetup -f --show <image>``, then
    ``mount``), or a device-mapper copy of a disk, is a second superblock of one filesystem:
    the kernel keeps a flock per superblock, so a live server's lock was not seen through
    the second mount, and `app data purge` emptied its root there (red team 59; red team 50
    closed it for a test run's protected roots only). ``/proc/locks`` lists each lock by
    device and inode: a lock on this inode number on another device whose file has this
    filesystem's id (``statfs``'s ``f_fsid``, from an ext4 or XFS volume's UUID) is this
    file. The holder gets ``through_device`` (its device), ``device_here`` and
    ``lock_file_there`` (the file as the holder opened it). Another user's holder is not
    visible (its descriptors are not ours to read). `ignore`: locks of ``/proc/locks`` that
    are this process's own, forwarded by a FUSE mount (`_forwarded_for`).
    """
    try:
        flocks = [lock for lock in _exclusive_flocks() if lock not in ignore]
    except OSError:
        return None
    here = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:"
    inode = f":{found.st_ino}"
    pids = [
        int(pid)
        for pid, file in flocks
        if pid.isdigit() and file.endswith(inode) and not file.startswith(here)
    ]
    if not pids:
        return _held_under_another_name(found, fd, flocks)
    try:
        fsid = os.fstatvfs(fd).f_fsid  # 0: a filesystem that gives no id is not told apart
    except OSError:
        return None
    for pid in dict.fromkeys(pids):
        with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/fd") as descriptors:
            for descriptor in descriptors:
                with contextlib.suppress(OSError):
                    if _fd_inode(pid, descriptor.name) not in (None, found.st_ino):
                        continue  # not this inode: never stat'ed (it may hang, on NFS)
                    there = os.stat(descriptor.path)  # noqa: PTH116 - the open file itself
                    if (
                        there.st_ino != found.st_ino
                        or there.st_dev == found.st_dev
                        or not stat.S_ISREG(there.st_mode)
                    ):
                        continue
                    there_path = os.readlink(descriptor.path)  # noqa: PTH115 - str in, str out
                    through_upper = _through_upper(there, there_path, pid, found, fd)
                    one_image = _one_image(there.st_dev, there_path, pid, found.st_dev, fd)
                    mirror = _fuse_mirror(there, descriptor.path, there_path, pid, found, fd)
                    if not (through_upper or one_image or mirror) and (
                        not fsid
                        or os.statvfs(descriptor.path).f_fsid != fsid
                        or _another_image(there.st_dev, found.st_dev, pid)
                    ):
                        continue
                    opened = os.open(descriptor.path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        published = _read_holder_fd(opened)
                    finally:
                        os.close(opened)
                    return {
                        **(_seen_here(published, pid) or {"pid": pid}),
                        "through_device": f"{os.major(there.st_dev)}:{os.minor(there.st_dev)}",
                        "device_here": f"{os.major(found.st_dev)}:{os.minor(found.st_dev)}",
                        "lock_file_there": there_path,
                        **({"through_upper": True} if through_upper else {}),
                        **({"through_fuse": mirror} if mirror else {}),
                    }
    return _held_under_another_name(found, fd, flocks)


def _held_under_another_name(
    found: os.stat_result, fd: int, flocks: list[tuple[str, str]]
) -> dict[str, Any] | None:
    """The live process that holds the lock file `fd` opens (`found` its stat) under another
    name of the same FUSE filesystem, with an inode number of its own, as its published JSON
    (with ``under_another_name``, the mount point, and ``lock_file_there``); None if none.

    A FUSE daemon that numbers its files by the name they were looked up by (libfuse's own
    numbering, without ``use_ino``: exfat-fuse, fusefat) gives one file an inode number for
    each spelling of its name that reaches it, and on a filesystem that folds case
    (exFAT, FAT) ``/srv/App/data`` and ``/srv/app/DATA`` are one directory: the kernel keeps
    a flock on each inode number, so a live production server's lock was not seen through
    the other spelling, and `app data purge`, `data empty-trash` and a second `app serve`
    took the root beside it (red team 64). Only on a FUSE mount (a kernel filesystem gives
    a file one inode number), and only against a lock file that shows what this one shows:
    the same size, modification and change times to the nanosecond, and the same bytes, a
    live holder's JSON (as `_fuse_mirror` tells a mirror from a copy), published for a root
    whose path is this one's in another spelling (`_one_spelling`): a ``cp -a`` of the root
    beside it, its lock file's bytes and times kept, is another root. Or, whatever the two
    files show, where the holder's path for its file reaches that file here and names one
    entry with this one in each parent's listing (`_one_entry`): a holder that rewrote its
    JSON between this process's looks, or whose lock file shows none (emptied, or not written
    yet), was missed (red team 64 on regress).
    """
    here = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:"
    others: dict[int, set[int]] = {}
    for listed, file in flocks:
        number = file.rpartition(":")[2]
        if listed.isdigit() and file.startswith(here) and number.isdigit():
            others.setdefault(int(listed), set()).add(int(number))
    for inodes in others.values():
        inodes.discard(found.st_ino)
    others = {pid: inodes for pid, inodes in others.items() if inodes}
    if not others:
        return None
    try:
        if os.fstatvfs(fd).f_fsid:
            return None  # a disk or a tmpfs gives an id; FUSE reports none (0)
        here_path = os.readlink(f"/proc/thread-self/fd/{fd}")  # noqa: PTH115 - str in, str out
        ours = os.pread(fd, _MAX_HOLDER_BYTES, 0)
    except OSError:
        return None
    if (mount := _fuse_mount(found.st_dev, here_path, _HERE)) is None:
        return None
    for pid, inodes in others.items():
        if (seen := _same_file_under(pid, inodes, found, ours, here_path)) is not None:
            there_path, published = seen
            return {
                **(_seen_here(published, pid) or {"pid": pid}),
                "under_another_name": mount,
                "lock_file_there": there_path,
                "device_here": f"{os.major(found.st_dev)}:{os.minor(found.st_dev)}",
            }
    return None


def _same_file_under(
    pid: int, inodes: set[int], found: os.stat_result, ours: bytes, here_path: str
) -> tuple[str, dict[str, Any] | None] | None:
    """The path, as process `pid` names it, of its open file on one of `inodes` of
    `found`'s device that shows what `found` shows (`ours` its bytes), with the holder JSON
    it holds for the root `here_path` lies in under another spelling; None if none."""
    shown = (found.st_size, found.st_mtime_ns, found.st_ctime_ns)
    with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/fd") as descriptors:
        for descriptor in descriptors:
            with contextlib.suppress(OSError, ValueError):
                if _fd_inode(pid, descriptor.name) not in inodes:
                    continue
                there = os.stat(descriptor.path)  # noqa: PTH116 - the open file itself
                if (
                    there.st_dev != found.st_dev
                    or there.st_ino not in inodes
                    or not stat.S_ISREG(there.st_mode)
                ):
                    continue
                there_path = os.readlink(descriptor.path)  # noqa: PTH115 - str in, str out
                # One entry, by its parents' listings: whatever the file shows meanwhile (a
                # holder that rewrote its JSON between this process's looks, or had not
                # written it yet; red team 64 on regress).
                one_entry = _one_entry(there_path, there, here_path) or (
                    (seen := _seen_from_here(pid, there_path, there.st_dev, here_path)) is not None
                    and _one_entry(seen, there, here_path)
                )
                if not one_entry and (
                    not ours or (there.st_size, there.st_mtime_ns, there.st_ctime_ns) != shown
                ):
                    continue
                opened = os.open(descriptor.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                try:
                    theirs = os.pread(opened, _MAX_HOLDER_BYTES, 0)
                finally:
                    os.close(opened)
                published = _parse_holder(theirs) if one_entry or theirs == ours else None
                if one_entry:
                    return there_path, published  # None: not written yet
                if published is not None and _one_spelling(published.get("root"), here_path):
                    return there_path, published
    return None


def _seen_from_here(pid: int, there_path: str, device: int, here_path: str) -> str | None:
    """`there_path`, process `pid`'s path of a file on the FUSE mount `device`, as this
    process names it through its own mount of that filesystem (the one that shows
    `here_path`); None where it has none that shows that directory. A holder in a mount
    namespace of its own (a container, a service's ``BindPaths=``) that mounts the filesystem
    at another point named its file by a path this process does not reach (red team 64 on
    regress)."""
    theirs = _fuse_mount_of(device, there_path, pid)
    ours = _fuse_mount_of(device, here_path, _HERE)
    if theirs is None or ours is None:
        return None
    try:
        inside = Path(theirs[1]) / Path(there_path).relative_to(theirs[0])
        return str(Path(ours[0]) / inside.relative_to(ours[1]))
    except ValueError:
        return None  # not under its mount's point, or not shown by this process's mount


def _one_entry(there_path: str, there: os.stat_result, here_path: str) -> bool:
    """Whether `there_path` (a holder's open file as it names it, `there` its stat) and
    `here_path` (this process's lock file) are one directory entry spelled two ways: the
    holder's path reaches its very file here too, both paths are alike once each part is put
    in NFC and case-folded, and at each part spelled otherwise both spellings reach an entry
    of a parent that lists one entry of that folded name (as `app.config` tells two roots
    apart, red team 64). A filesystem that keeps case apart lists two entries; the bytes and
    times the two files show are not asked, so a holder that rewrites its lock file between
    two looks (``update(port=...)`` as a server starts) or has not written it yet is found."""
    from app.config import fold, one_entry_each  # only on a FUSE mount that folds case

    one, other = Path(there_path).parts, Path(here_path).parts
    if len(one) != len(other) or [fold(p) for p in one] != [fold(p) for p in other]:
        return False
    try:
        seen = os.stat(there_path)  # noqa: PTH116 - the holder's path, seen from here
    except (OSError, ValueError):
        return False
    if (seen.st_dev, seen.st_ino) != (there.st_dev, there.st_ino):
        return False  # another mount namespace's path, or another file there
    return one_entry_each(one, other)


def _one_spelling(root: object, lock_path: str) -> bool:
    """Whether `root` (a holder's published root) and the directory of `lock_path` are one
    path once each part is put in NFC and case-folded: two spellings of one name, as a
    filesystem that folds case takes them, and not a copy of the root beside it."""
    from app.config import fold

    if not isinstance(root, str):
        return False
    return [fold(p) for p in Path(root).parts] == [fold(p) for p in Path(lock_path).parent.parts]


def _forwarded_for(fd: int, found: os.stat_result) -> frozenset[tuple[str, str]]:
    """The locks ``/proc/locks`` lists on this inode number on other devices that are this
    process's own exclusive lock on `fd` (`found` its stat), forwarded by the FUSE mount it
    opened the file through (``bindfs --enable-lock-forwarding`` locks the directory's file
    for it, as the FUSE daemon): those that go when it lets go of its own, which it takes
    again at once. Empty where none go, or where another process took the lock meanwhile.

    rt-guard43 took such a lock for another holder's seen through a FUSE mirror: a root
    used through a lock-forwarding mirror, which no one else held, was refused to every
    writer and purge as held by the bindfs daemon, "which published no details", and told
    not to use the path (red team 60 on regress). A lock that a forwarding mirror holds for
    this process is granted only where no one holds the directory's file."""
    here = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:"
    inode = f":{found.st_ino}"

    def elsewhere() -> set[tuple[str, str]]:
        return {
            (pid, file)
            for pid, file in _exclusive_flocks()
            if file.endswith(inode) and not file.startswith(here)
        }

    try:
        before = elsewhere()
        fcntl.flock(fd, fcntl.LOCK_UN)
        try:
            gone = before - elsewhere()
        finally:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return frozenset()  # taken meanwhile: the holder found stands
    return frozenset(gone)


def _fuse_mount(device: int, path: str, pid: int | str) -> str | None:
    """The mount point, as process `pid` (`_HERE`) names it, of the FUSE mount on
    `device` that shows the file at `path`; None where `device` is no FUSE mount."""
    mount = _fuse_mount_of(device, path, pid)
    return mount[0] if mount is not None else None


def _fuse_mount_of(device: int, path: str, pid: int | str) -> tuple[str, str, str] | None:
    """`_fuse_mount`'s mount point, with the directory of its filesystem it shows and the
    source its daemon names (bindfs: the directory it mirrors), as written: the mount of
    `device` that shows `path` (`mountinfo.showing`: of two stacked at one point, the one
    on top, where the first one in the table was taken and its directory read as the one
    shown; session 61), else the first mount of `device` in the table."""
    number = f"{os.major(device)}:{os.minor(device)}".encode()
    try:
        entries = mountinfo.table(pid)
    except OSError:
        return None
    mounts = [entry for entry in entries if entry.device == number]
    if not mounts or any(not _is_fuse(entry.fstype) for entry in mounts):
        return None
    best = _showing_of(path, entries, mounts) or mounts[0]
    return os.fsdecode(best.point), os.fsdecode(best.root), os.fsdecode(best.source)


def _showing_of(
    path: str, entries: list[mountinfo.Entry], mounts: list[mountinfo.Entry]
) -> mountinfo.Entry | None:
    """The mount of `mounts` (one device's, of the table `entries`) that shows `path`: the
    one the whole table says shows it (`mountinfo.showing`), where it is one of them, else
    the one `mounts` alone say. Asked of one device's mounts only, the ids of the mounts
    between them were missing: of two, one on a mount that another hides (a tmpfs on the
    way, then a bind of the mirror's root above it), the deeper was taken (red team 61 on
    regress)."""
    best = mountinfo.showing(path, entries)
    if best is not None and any(entry is best for entry in mounts):
        return best
    return mountinfo.showing(path, mounts)


def _is_fuse(kind: bytes) -> bool:
    return kind == b"fuse" or kind.startswith((b"fuse.", b"fuseblk"))


def _fuse_origin(
    seen: os.stat_result, path: str, pid: int | str
) -> tuple[str, tuple[int, int]] | None:
    """The FUSE mount point through which file `seen` (at `path`, as process `pid` names
    it) shows a file of another filesystem, with that file's device and inode, followed by
    the directory the mount's daemon names as its source (bindfs names the one it mirrors),
    mirror by mirror (a few deep); None where `seen` is on no FUSE mount, or no source leads
    to a file off FUSE.

    bindfs ``--ctime-from-mtime`` shows each file's modification time as its change time:
    once anything had changed the lock file's change time alone (an operator's ``chmod``,
    ``chown`` or ``setfacl``, a backup's extended attribute), the mirror of a live root no
    longer looked like it (`_fuse_mirror`), and `app data purge` through it emptied the
    root beside its holder, as it did through a second mirror of the directory the holder's
    mirror shows (red team 60 on regress). Only a directory given as an absolute path is
    looked at, and only ``stat``'ed there: the source a daemon names is its own word, which
    can only make this refuse more."""
    point: str | None = None
    for _ in range(_FUSE_MIRRORS_FOLLOWED + 1):
        mount = _fuse_mount_of(seen.st_dev, path, pid)
        if mount is None:
            return (point, (seen.st_dev, seen.st_ino)) if point is not None else None
        at, shown, source = mount
        if not source.startswith("/") or (path != at and not path.startswith(at.rstrip("/") + "/")):
            return None
        point = point or at
        inside = path[len(at.rstrip("/")) :].lstrip("/")
        path = str(Path(source, shown.lstrip("/"), inside))
        try:
            reached = path if pid == _HERE else f"/proc/{pid}/root{path}"
            seen = os.stat(reached, follow_symlinks=False)  # noqa: PTH116 - another root's
        except (OSError, ValueError):
            return None
    return None


def _fuse_source_shows(
    found: os.stat_result, here_path: str, there: os.stat_result, there_path: str, pid: int
) -> str | None:
    """The FUSE mount point through which this file (`found`, at `here_path`) and the
    holder's (`there`, at `there_path` as process `pid` names it) are one file, by the
    sources of their FUSE mounts (`_fuse_origin`): one shows the other, or both show one."""
    here = _fuse_origin(found, here_path, _HERE)
    theirs = _fuse_origin(there, there_path, pid)
    if here is not None and here[1] in ((there.st_dev, there.st_ino), theirs and theirs[1]):
        return here[0]
    if theirs is not None and theirs[1] == (found.st_dev, found.st_ino):
        return theirs[0]
    return None


#: How many FUSE mirrors of mirrors `_fuse_origin` follows to a file off FUSE.
_FUSE_MIRRORS_FOLLOWED: Final = 4


def _fuse_mirror(
    there: os.stat_result,
    opened: str,
    there_path: str,
    pid: int,
    found: os.stat_result,
    fd: int,
) -> str | None:
    """The FUSE mount point through which the holder's open file (`there`, open as
    `opened`, `there_path` as the holder names it) and this one (`found`, open as `fd`) are
    one file, one of them seen through a FUSE mirror of the other's directory (``bindfs``);
    None where they are not.

    A FUSE filesystem that does not pass ``flock`` on keeps its locks on its own inodes, and
    reports no filesystem id (``f_fsid`` 0): a live server's lock was not seen through a
    mirror of its root, nor the mirror's holder's from the directory itself, and `app data
    purge` emptied its root (red team 60). Told apart from a copy by what a copy never keeps:
    the size, modification and change times to the nanosecond, with the same bytes; or, where
    a mirror shows other times (`_fuse_source_shows`), by the directory its daemon names.
    """
    try:
        here_path = os.readlink(f"/proc/thread-self/fd/{fd}")  # noqa: PTH115 - str in, str out
    except OSError:
        return None
    if (there.st_size, there.st_mtime_ns, there.st_ctime_ns) != (
        found.st_size,
        found.st_mtime_ns,
        found.st_ctime_ns,
    ):
        return _fuse_source_shows(found, here_path, there, there_path, pid)
    mount = _fuse_mount(found.st_dev, here_path, _HERE)
    if mount is None and (mount := _fuse_mount(there.st_dev, there_path, pid)) is None:
        return None
    theirs = os.open(opened, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        same = os.pread(theirs, _MAX_HOLDER_BYTES, 0) == os.pread(fd, _MAX_HOLDER_BYTES, 0)
    finally:
        os.close(theirs)
    return mount if same else None


def _loop_backing(device: int) -> tuple[int, int, int] | None:
    """The file (device, inode) and offset a loop device reads, None for another device."""
    here = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/loop")
    try:
        backing = (here / "backing_file").read_text().rstrip("\n")
        offset = int((here / "offset").read_text())
        found = os.stat(backing.removesuffix(" (deleted)"))  # noqa: PTH116 - st_dev, st_ino
    except (OSError, ValueError):
        return None
    return found.st_dev, found.st_ino, offset


def _overlay_mounts(device: int, pid: int | str) -> list[tuple[str, str, list[str]]]:
    """Each mount of the overlay `device` in the mount namespace of process `pid` (`_HERE`):
    its mount point, the directory of the overlay it shows, and its layers' directories, the
    upper one first, as that process names them (none where `device` is no overlay with an
    upper directory)."""
    return [
        (os.fsdecode(entry.point), os.fsdecode(entry.root), layers)
        for entry, layers in _overlay_entries(device, pid)
    ]


def _overlay_entries(
    device: int, pid: int | str, entries: list[mountinfo.Entry] | None = None
) -> list[tuple[mountinfo.Entry, list[str]]]:
    """`_overlay_mounts`, each mount as the table's entry (of `entries`, where given: the
    table of process `pid`, read already)."""
    number = f"{os.major(device)}:{os.minor(device)}".encode()
    if entries is None:
        try:
            entries = mountinfo.table(pid)
        except OSError:
            return []
    found = []
    for entry in entries:
        if entry.device != number:
            continue
        if entry.fstype != b"overlay":
            return []
        upper, lowers = None, []
        for option in entry.super_options.split(b","):
            name, _, value = option.partition(b"=")
            if name == b"upperdir":
                upper = mountinfo.unescape(value)
            elif name == b"lowerdir":  # "a:b", a colon of a path escaped as "\:"
                lowers += re.split(rb"(?<!\\):", mountinfo.unescape(value))
            elif name == b"lowerdir+":
                lowers.append(mountinfo.unescape(value))
        if upper is not None:
            layers = [os.fsdecode(layer.replace(b"\\:", b":")) for layer in (upper, *lowers)]
            found.append((entry, layers))
    return found


def _seen_by(pid: int | str, path: str) -> tuple[int, int] | None:
    """The (device, inode) of `path` as process `pid` names it (through its root)."""
    try:
        found = os.stat(path if pid == _HERE else f"/proc/{pid}/root{path}")  # noqa: PTH116
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _overlay_upper(device: int, pid: int | str) -> tuple[int, int] | None:
    """The upper directory (device, inode) of the overlay mounted from `device` in the mount
    namespace of process `pid` (`_HERE`), None for another filesystem or where not seen."""
    mounts = _overlay_mounts(device, pid)
    return _seen_by(pid, mounts[0][2][0]) if mounts else None


def _layer_files(device: int, path: str, pid: int | str) -> set[tuple[int, int]]:
    """The (device, inode) of each file in the overlay's layer directories (upper and lower)
    at the place of the file at `path` (as process `pid` names it) on overlay `device`: in
    the mount of it that shows `path` (`mountinfo.showing`: of two stacked at one point,
    the one on top, where the first one in the table was taken; session 61)."""
    try:
        entries = mountinfo.table(pid)
    except OSError:
        return set()
    mounts = _overlay_entries(device, pid, entries)
    best = _showing_of(path, entries, [entry for entry, _ in mounts])
    if best is None:
        return set()
    layers = next(layers for entry, layers in mounts if entry is best)
    point, shown = os.fsdecode(best.point), os.fsdecode(best.root)
    below = path[len(point.rstrip("/")) :].lstrip("/")
    seen = (_seen_by(pid, os.path.join(layer, shown.lstrip("/"), below)) for layer in layers)  # noqa: PTH118
    return {found for found in seen if found is not None}


def _through_upper(
    there: os.stat_result, there_path: str, pid: int, found: os.stat_result, fd: int
) -> bool:
    """Whether the holder's open file (`there`, `there_path` as it names it) and this one
    (`found`, open as `fd`) are one file, one of them reached through an overlay and the
    other through that overlay's upper directory (or a lower one, where it was not copied
    up): a container's root on the host's disk
    (``/var/lib/docker/overlay2/<id>/diff/...``). Each is a lock of its own to the kernel,
    and an overlay reports an id of its own (Linux 6.6 and later), whatever its upper
    filesystem's is (red team 59)."""
    if (found.st_dev, found.st_ino) in _layer_files(there.st_dev, there_path, pid):
        return True
    try:
        here_path = os.readlink(f"/proc/thread-self/fd/{fd}")  # noqa: PTH115 - str in, str out
    except OSError:
        return False
    return (there.st_dev, there.st_ino) in _layer_files(found.st_dev, here_path, _HERE)


def _block_device(device: int, path: str, pid: int | str) -> int:
    """The block device the filesystem of the file at `path` (on `device`) reads, as process
    `pid` (`_HERE`) names and mounts it: btrfs gives each subvolume an anonymous device
    number, and only the mount table names its block device; `device` itself where it is a
    block device, or no other is found."""
    if Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}").exists():
        return device
    try:
        best = mountinfo.showing(path, mountinfo.table(pid))
    except OSError:
        return device
    source = os.fsdecode(best.source) if best is not None else ""
    if not source.startswith("/"):
        return device
    try:
        found = os.stat(source if pid == _HERE else f"/proc/{pid}/root{source}")  # noqa: PTH116
    except OSError:
        return device
    return found.st_rdev if stat.S_ISBLK(found.st_mode) else device


def _one_image(one: int, there_path: str, pid: int, other: int, fd: int) -> bool:
    """Whether the holder's file (on device `one`, `there_path` as process `pid` names it)
    and this one (on `other`, open as `fd`) lie on two loop devices that read one file at
    one offset: one filesystem, whatever id each mount reports. XFS takes its id from the device
    (a second mount needs ``-o nouuid``), and btrfs gives a second device of a mounted
    filesystem a temporary id of its own (Linux 6.7 and later): the second mount of a live
    root's image was not seen (red team 59)."""
    holders = _block_device(one, there_path, pid)
    first = _loop_backing(holders)
    if first is None:
        return False
    try:
        here_path = os.readlink(f"/proc/thread-self/fd/{fd}")  # noqa: PTH115 - str in, str out
    except OSError:
        return False
    # One device: one superblock, whose subvolumes (btrfs snapshots) are other files.
    ours = _block_device(other, here_path, _HERE)
    return ours != holders and first == _loop_backing(ours)


def _another_image(one: int, other: int, pid: int) -> bool:
    """Whether the holder's device `one` (process `pid`'s) and this device `other` hold two
    filesystems that share an id and inode numbers, whose locks are other locks: two loop
    devices reading two files (a byte copy of a disk image), or two overlays with two upper
    directories over one lower layer (two containers of one image, on a kernel before 6.6
    or with ``uuid=off``: the overlay reports its upper filesystem's id and a copied-up
    file's lower inode number), whose writes never meet (red team 59)."""
    first, second = _loop_backing(one), _loop_backing(other)
    if first is not None and second is not None:
        return first != second
    upper, upper_here = _overlay_upper(one, pid), _overlay_upper(other, _HERE)
    return upper is not None and upper_here is not None and upper != upper_here


def through_another_device(path: Path, holder: Mapping[str, Any]) -> str:
    """Appended to the description of a holder `_held_through_another_device` found: why a
    root whose lock file is free here is held."""
    if holder.get("under_another_name"):
        return (
            f", through its lock file {holder['lock_file_there']}, which is {path} under "
            f"another name on the FUSE filesystem mounted at {holder['under_another_name']} "
            "(one that folds case, such as exFAT or FAT through FUSE, shows one file under "
            "each spelling of its name, each with an inode number of its own, and a lock "
            "taken through one spelling is not seen through another; device "
            f"{holder['device_here']}): name the root as its holder does"
        )
    if holder.get("through_fuse"):
        return (
            f", through its lock file {holder['lock_file_there']}, which is {path} seen "
            f"through a FUSE mount ({holder['through_fuse']}: a mirror of a directory, such "
            "as bindfs, does not pass a lock on to the directory it shows; device "
            f"{holder['through_device']} there, {holder['device_here']} here)"
        )
    if holder.get("through_upper"):
        return (
            f", through its lock file {holder['lock_file_there']}, which is {path}: one of "
            "the two is the file seen through an overlay (a container's root), the other the "
            "same file in a layer directory of that overlay, its upper or a lower one (device "
            f"{holder['through_device']} there, {holder['device_here']} here)"
        )
    return (
        f", through its lock file {holder['lock_file_there']}, which is {path} on the same "
        f"filesystem mounted again through another device (device {holder['through_device']}"
        f" there, {holder['device_here']} here; one filesystem id and inode: a disk image "
        "attached through a second loop device, say)"
    )


def a_root_s_lock_file(path: Path) -> bool:
    """Whether the file at `path`, named as a data root's lock file, is one: locked by a
    process (``/proc/locks``, nothing taken or opened for writing) or holding a holder's
    JSON (one that crashed). An empty or other file of that name left by anything else (a
    pid file, another program's lock) is not: a root beneath it was refused as inside a
    data root, and ``app serve`` of a root under ``~`` with an unrelated ``~/.server.lock``
    could never start (red team 59)."""
    try:
        found = os.lstat(path)
        if not stat.S_ISREG(found.st_mode):
            return False
        flocks = _exclusive_flocks()
        key, alike = _listed_key(found, [file for _, file in flocks], path)
        listed = [pid for pid, file in flocks if file == key]
        if _of_this_file(found, key, listed) if alike else listed:
            return True
        with path.open("rb") as opened:
            text = opened.read(1 << 16)
    except OSError:
        return True  # not read: counted as a root's, as before
    try:
        published = json.loads(text)
    except ValueError:
        return False
    return isinstance(published, dict) and published.get("kind") in KINDS


def _moved_lock_file(
    opened: Path, path: Path
) -> tuple[dict[str, Any] | None, dict[str, Any]] | None:
    """Whether the locked file a descriptor (``/proc/<pid>/fd/<n>``) opens was the lock file
    at ``path``: its published JSON and where it is now; None if it is another lock.

    Directories are compared by identity, not by path: a root reached through a bind mount
    (a container's volume, the same directory mounted at two paths) has another path in the
    holder's descriptor, and a newcomer there took the root beside a holder whose lock file
    was deleted or moved (red team 46).
    """
    root = path.parent.resolve()
    named = str(opened.readlink())
    fd = os.open(opened, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        text = os.pread(fd, _MAX_HOLDER_BYTES, 0)
    finally:
        os.close(fd)
    holder = _parse_holder(text)
    deleted = named.endswith(" (deleted)")  # as the kernel names it
    moved = Path(named.removesuffix(" (deleted)"))
    published = (holder or {}).get("root_id")
    same_root = published == _dir_id(root) if isinstance(published, str) else None
    if deleted:
        # Red team 20's rule (where the file was) stands beside the identity, so that no
        # filesystem whose directory identities move can make a deleted lock file unseen.
        at_path = moved.name == path.name and _same_dir(moved.parent, root)
        return (holder, {}) if same_root or at_path else None
    if moved.name == path.name and _same_dir(moved.parent, root) and same_root is not False:
        # Not moved: the holder's file is at this very name of this directory as the holder
        # sees it, and another file is there here. A file mounted over the name (a bind
        # mount, in this mount namespace or the holder's) was said to be "moved to" the
        # path itself, and the holder to stop within lock_check_seconds: it never sees a
        # change (red team 60).
        return holder, {"lock_file_mounted_over": named}
    if same_root is not None:
        # The directory its holder opened, wherever the file went (into another root too),
        # and never a root that moved away whole: a new one at its path is another.
        return (holder, {"lock_file_moved_to": named}) if same_root else None
    # A holder that published no root_id (an earlier build, or one without its JSON):
    # told apart by where the file is. Beneath the root is in it: a shell's lock file moved
    # into a directory of the root (`mv .server.lock old/`) was taken for one moved out, and
    # a writer took the root beside the shell (red team 71 on regress, round q). There, only
    # a lock file's text (none, or a holder's JSON) and not in `.tmp/`: a writer's files
    # there and those it put in place hold its flocks until it closes them. And only under
    # a name that keeps the lock file's (`old/.server.lock.old`): any empty file a program
    # flocked there (an upload of no bytes, a `.lock` a user's script keeps in a session's
    # directory) counted, and no writer could take the root (red team 71, round u).
    beneath = not _same_dir(moved.parent, root) and (
        path.name in moved.name
        and (holder is not None or not text)
        and not _same_dir(moved.parent, root / _TMP_NAME)
        and any(_same_dir(parent, root) for parent in moved.parents[1:])
    )
    if (
        not _same_dir(moved.parent, root)
        and not beneath
        and (
            # Moved out of the root: ours only if it names this root, and the root did not
            # move with it (then it is another root, its stamp beside it).
            not _same_dir(Path(str((holder or {}).get("root") or "/nonexistent")), root)
            or (moved.parent / _STAMP_NAME).exists()
        )
    ):
        return None  # another program's lock, or another root's
    return holder, {"lock_file_moved_to": named}


def _same_dir(one: Path, other: Path) -> bool:
    """Whether two paths name one directory (by path, else by device and inode)."""
    if one == other:
        return True
    found = identity(one)
    return found is not None and found == identity(other)


def _through_deleted(path: Path, holder: Mapping[str, Any]) -> str:
    # Appended to the holder's description: why a root with a free (or no) lock file is held.
    if (over := holder.get("lock_file_mounted_over")) is not None:
        pid = holder.get("pid")
        word = shell_word(str(over))
        there = f"`nsenter -t {pid} -m findmnt {word}`" if pid else f"`findmnt {word}`"
        return (
            f", through its lock file {over}, which is another file than the one {path} names "
            "here: a file is mounted over that name, in this mount namespace or in the "
            f"holder's (a bind mount, a container's volume), and each side locks its own "
            f"(`findmnt {shell_word(path)}` here, {there} there). Unmount it (`umount "
            f"{shell_word(path)}` where it is mounted) and never mount over a root's lock file"
        )
    if (moved := holder.get("lock_file_moved_to")) is not None:
        # Only the app's own holder looks at its lock file: a program that published nothing
        # there, or one keeping a lock its taker left, was said to stop "within
        # lock_check_seconds", and never does (red team 71 on regress, round n).
        stops = not holder.get("unpublished") and "took_lock" not in holder
        return (
            f", through its lock file {path}, which was moved to {moved} while it held it "
            "(never move or delete the lock file: a free one is never in the way)"
            + ("; it stops within lock_check_seconds, then retry" if stops else "")
        )
    return (
        f", through its lock file {path}, which was deleted while it held it (never delete "
        "the lock file: a free one is never in the way)"
    )


def _holder_here(path: Path) -> dict[str, Any] | None:
    """The holder JSON of the lock file at `path`, its pid as this process numbers it."""
    fd = _open_existing(path)
    if fd is None:
        return None
    try:
        pid_here = _flock_pid_here(fd)
        published = _read_holder_fd(fd)
        if pid_here == 0 and (shared := _shared_holder(fd, published)) is not None:
            return shared
        return _kept_by(fd, path, _seen_here(published, pid_here))
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Probe:
    """What a probe saw: one moment only.

    By the time a caller reads this, the holder may have gone or a new one may have
    arrived. Use it to *report* (``app status``, the pytest header); anything destructive
    must take the lock with :class:`RootLock` for the whole operation instead.

    Attributes:
        path: the lock file looked at.
        held: whether a live process held the lock at that moment.
        holder: the holder's published JSON while held, ``None`` if free or unreadable.
    """

    path: Path
    held: bool
    holder: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``app status --json``)."""
        return {"path": str(self.path), "held": self.held, "holder": self.holder}


def probe(root: Path) -> Probe:
    """Look at ``root``'s lock without creating or changing anything.

    Takes a shared, non-blocking ``flock`` for an instant and releases it at once. A
    missing root or lock file means nobody holds the root. A starting holder may see the
    probe's momentary hold; :meth:`RootLock.acquire` retries for that reason.

    Args:
        root: the data root; it need not exist.

    Returns:
        A :class:`Probe` describing that one moment.

    Raises:
        LockUnavailableError: the filesystem does not support ``flock``.
    """
    path = root / LOCK_FILE
    try:
        fd = _open_existing(path)
    except PermissionError:
        if (seen := _unreadable_probe(path)) is None:
            raise  # /proc/locks cannot say either: as before, the caller's to report
        return seen
    if fd is None:
        return _deleted_or_free(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in _CONTENDED_ERRNOS:
                holder = _kept_by(fd, path, _seen_here(_read_holder_fd(fd), _flock_pid_here(fd)))
                return Probe(path=path, held=True, holder=_marked_locked_for(root, path, holder))
            if error.errno in _UNSUPPORTED_ERRNOS:
                raise LockUnavailableError(path, os.strerror(error.errno)) from error
            raise
        # Free: whatever the file still contains was left by a holder that crashed. Free of
        # an exclusive holder only, where another program holds it shared (`flock -s`
        # around a backup): that keeps every writer off too (red team 70).
        fcntl.flock(fd, fcntl.LOCK_UN)
        if (shared := _shared_holder_still(fd)) is not None:
            return Probe(path=path, held=True, holder=shared)
        with contextlib.suppress(OSError):
            # Free here, held through a second mount of the same filesystem (red team 59).
            if (holder := _held_through_another_device(os.fstat(fd), fd)) is not None:
                return Probe(path=path, held=True, holder=holder)
        return _deleted_or_free(path)
    finally:
        os.close(fd)


def _shared_holder_still(fd: int) -> dict[str, Any] | None:
    """`_shared_holder` of `fd`'s file where the same process still holds the shared lock
    after each of `_SHARED_PAUSES`: another probe (a second `app status`, each pytest-xdist
    worker's start) holds one for an instant, which must not read as a holder (the run's
    guards refuse a run beside a held root)."""
    try:
        found = os.fstat(fd)
    except OSError:
        return None
    kept = set(_shared_flock_pids(found, fd))
    if not kept:
        return None  # the usual case: one read of /proc/locks, no pause
    for pause in _SHARED_PAUSES:
        time.sleep(pause)
        kept &= set(_shared_flock_pids(found, fd))
        if not kept:
            return None
    return _shared_holder(fd, _read_holder_fd(fd), sorted(kept))


def _unreadable_probe(path: Path) -> Probe | None:
    """A probe of a lock file this process may not open (``chmod 000``, another owner): the
    kernel still says whether a process holds it. A bare PermissionError once, from
    `app status` and the test run's guards, which name the holder to stay away from.
    ``None`` where the kernel's list cannot be read either."""
    refusal = _unreadable(path)
    if not isinstance(refusal, LockFileUnreadableError) or refusal.pid is None:
        return None
    holder = {"pid": refusal.pid, "unreadable": refusal.why} if refusal.pid else None
    return Probe(path=path, held=holder is not None, holder=holder)


def _deleted_or_free(path: Path) -> Probe:
    # A free (or missing) lock file does not make a free root: its holder may hold the
    # file that was at the path before someone deleted it.
    holder = _deleted_lock_holder(path)
    return Probe(path=path, held=holder is not None, holder=holder)


# Our duplicate of the locked descriptor must not keep the lock alive in a forked child
# after the parent dies (flock belongs to the open file description, which fork shares).
_LIVE_LOCKS: weakref.WeakSet[RootLock] = weakref.WeakSet()


def held_here() -> list[RootLock]:
    """The locks of data roots this process holds now (writers not yet closed)."""
    return [lock for lock in list(_LIVE_LOCKS) if lock._fd is not None]


_TAKEN = [0]


def taken_so_far() -> int:
    """How many times this process has taken a data root's lock: a command stopped before
    its count grew changed nothing in a data root (`app.cli`, red team 62)."""
    return _TAKEN[0]


def _forget_locks_in_child() -> None:  # pragma: no cover - runs in a forked child
    for lock in list(_LIVE_LOCKS):
        lock._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


def _keep_aged(root: Path) -> int | None:
    """The root's directory, opened and flocked shared for as long as the root is held; None
    where that cannot be had (the holder goes on without it, with a warning).

    A root under a directory that ``systemd-tmpfiles --clean`` ages (``/tmp`` after 10 days
    and ``/var/tmp`` after 30 on Fedora and Debian 13, a ``d`` line with an age in a
    ``tmpfiles.d`` file) lost every file not changed for that long, under a live server:
    acknowledged uploads, the trash's entries, the lock file, the stamp (red team 57).
    systemd-tmpfiles leaves alone a directory another process holds a BSD ``flock`` on
    (tried with systemd 252), so a live holder now holds one on its root. Shared: it never
    stands in the way of another holder's look, nor of the root's own exclusive lock on
    ``.server.lock``. A stopped root is not protected: keep data roots out of such
    directories.
    """
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        log.warning("could not open %s to keep it from age-based clean-ups: %s", root, error)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        log.warning(
            "could not flock %s to keep it from age-based clean-ups (systemd-tmpfiles): %s",
            root,
            error.strerror or error,
        )
        return None
    return fd


class RootLock:
    """The exclusive lock on one data root, held by one holder.

    One instance per holder. It is shared across threads (``thread_local=False``): a
    server acquires it on the main thread and may release it from a signal handler or
    another thread. It is not reentrant across instances: a second instance on the same
    root, even in the same process, is refused like any other process.

    The lock file is created if missing, never truncated on acquire (a failed attempt
    must not erase the holder's JSON), emptied on release while still held, and never
    deleted or replaced (see the module docstring).

    Entering the lock acquires it (with a generic refusal message) unless it is already
    held; leaving releases it. So ``with lock.acquire("purge sessions"):`` works too.

    Examples:
        >>> with RootLock(root, kind="maintenance", profile="development") as lock:
        ...     ...  # the root is ours until the block ends
    """

    def __init__(
        self,
        root: Path,
        *,
        kind: str,
        profile: str,
        port: int | None = None,
        durable: bool = True,
        own_sandbox: bool = False,
        on_a_mount: bool = False,
    ) -> None:
        """Prepare a lock on ``root``; nothing is opened or created until :meth:`acquire`.

        Args:
            root: the data root (absolute); it must exist before :meth:`acquire`.
            kind: ``"server"``, ``"tests"`` or ``"maintenance"``.
            profile: the holder's profile.
            port: a server's port, if already known (see :meth:`update`).
            durable: fsync the holder JSON and its removal. Only a throw-away root (one
                inside a test run's sandbox, see :func:`app.dataroot.open_root`) passes
                ``False``: the flock and what live processes read never depend on it.
            own_sandbox: the root lies in the sandbox pytest created for a run found in
                the process tree (the session's root, a test's): take the flock without
                filelock (see `_SandboxFlock`).
            on_a_mount: a root of the sandbox on another filesystem than the sandbox's (a
                test mounted one there): its holders are looked for through another device
                of that filesystem too, as a root's outside the sandbox always are.
        """
        if kind not in KINDS:
            msg = f"holder kind must be one of {', '.join(KINDS)}, not {kind!r}"
            raise ValueError(msg)
        self.root = root
        self.path = root / LOCK_FILE
        self.kind = kind
        self.profile = profile
        self._port = port
        self._durable = durable
        self._on_a_mount = on_a_mount
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._holder: dict[str, Any] | None = None
        self._written = b""  # the holder JSON as last written (empty on a full disk)
        #: The directory of its filesystem that the mount the lock file was opened through
        #: shows (``/``, or a bind's directory), read as it was locked: gone from the table
        #: once that mount is unmounted (`mount_root`).
        self._mount_root: Path | None = None
        self._guard = threading.RLock()
        self._wanted = ""
        self._lock: UnixFileLock | None = None
        self._sandbox_flock: _SandboxFlock | None = None
        self._root_fd: int | None = None  # the root's directory, flocked shared (`_keep_aged`)
        if own_sandbox:
            self._sandbox_flock = _SandboxFlock(self.path, self._publish)
            return
        # Imported here: probes, holder descriptions and a pytest run where the plugin stays
        # inactive need no filelock, whose import costs several ms (bench/plugin_startup.py).
        from filelock import UnixFileLock

        # Explicitly UnixFileLock: FileLock silently becomes a soft (existence) lock where
        # fcntl is missing. preserve_lock_file and on_acquired both disable UnixFileLock's
        # own soft fall-back on ENOSYS, so an unsupported filesystem surfaces as an error.
        self._lock = UnixFileLock(
            self.path,
            mode=0o600,
            thread_local=False,
            fallback_to_soft=False,
            preserve_lock_file=True,
            poll_interval=_POLL_INTERVAL,
            on_acquired=self._publish,
        )

    # -- acquisition -----------------------------------------------------------------

    def acquire(self, wanted: str, timeout: float = 1.0) -> Self:
        """Take the lock and publish the holder JSON, or refuse naming the current holder.

        Non-blocking in spirit: it only retries for ``timeout`` seconds, so that a
        concurrent :func:`probe`'s momentary shared hold does not refuse a starting server.

        Args:
            wanted: what the caller is trying to do, for the refusal message
                (``"start the server"``, ``"purge sessions"``).
            timeout: seconds to keep retrying while the lock is contended.

        Returns:
            This lock, held.

        Raises:
            DataRootInUseError: another holder has the lock; names it (exit 75).
            LockUnavailableError: the filesystem does not support ``flock``.
            FileNotFoundError: the data root does not exist (create it with
                :func:`app.dataroot.open_root`; the lock never creates directories).
            RuntimeError: this instance already holds the lock.
        """
        with self._guard:
            if self.held:
                msg = f"{self.path} is already held by this RootLock"
                raise RuntimeError(msg)
            # A lock taken by hand is refused outside a test run's sandbox like an open_root:
            # even with no server to refuse it, it would write into that root's lock file.
            check_root(self.root, "lock data root")
            # Even inside a `checked` block, which code can open by hand (red team 59); it
            # costs nothing for testing.
            check_given_profile(self.profile, f"data root {self.root}", "lock")
            if not self.root.is_dir():
                # filelock would create missing parent directories; a data root is only
                # ever created by app.dataroot, with mode 0700 and a profile stamp.
                raise FileNotFoundError(
                    errno.ENOENT,
                    "data root does not exist (open it with open_root)",
                    str(self.root),
                )
            self._wanted = wanted
            with contextlib.suppress(FileNotFoundError):  # none yet: the lock creates it
                _refuse_other_kinds(self.path, os.lstat(self.path).st_mode)
            try:
                taken = self._take(timeout)
            except OSError as error:
                if error.errno in _UNSUPPORTED_ERRNOS:
                    reason = os.strerror(error.errno) if error.errno else str(error)
                    raise LockUnavailableError(self.path, reason) from error
                if error.errno == errno.ELOOP:  # filelock opens it with O_NOFOLLOW
                    raise LockFileAliasedError(self.path, "is a symbolic link") from None
                if isinstance(error, PermissionError) and self.path.exists():
                    raise _unreadable(self.path) from None
                raise
            if not taken:
                holder = _holder_here(self.path)
                if self._try(0.0):
                    # The holder let go between the last try and that read: the kernel then
                    # lists no flock, which read as a holder in a PID namespace out of sight
                    # ("another container's ...: stop it there"), of two maintenance
                    # commands a cron job started together (red team 62). Taken now.
                    holder = None
                    taken = True
            if not taken:
                refuse_shared_with_another_root(self.root, self.path, holder)
                holder = _marked_locked_for(self.root, self.path, holder)
                held_by = describe_holder(holder)
                if holder and "locked_for" in holder:
                    held_by += locked_for_said(Path(holder["locked_for"]))
                raise DataRootInUseError(self.root, holder, wanted, held_by=held_by)
            _LIVE_LOCKS.add(self)
            _TAKEN[0] += 1
            return self

    def _take(self, timeout: float) -> bool:
        if self._try(0.0):
            return True
        # The retries are for a probe's instant of shared hold and for a holder caught
        # between its flock and its JSON: neither publishes a live process. A holder that
        # did (a server, a test run) will not let go within the timeout, and every refusal
        # waited for all of it. One more try after a poll interval still lets a probe pass
        # when a crashed holder's JSON names a pid that was reused since.
        if _published_by_live_process(self.path):
            timeout = min(timeout, _POLL_INTERVAL)
        return timeout > 0 and self._try(timeout)

    def _try(self, timeout: float) -> bool:
        if self._sandbox_flock is not None:
            return self._sandbox_flock.acquire(timeout)
        from filelock import Timeout  # imported by __init__ already

        assert self._lock is not None
        try:
            self._lock.acquire(timeout=timeout, poll_interval=_POLL_INTERVAL)
        except Timeout:
            return False
        return True

    def _publish(self, fd: int) -> None:
        # filelock calls this with its borrowed, locked descriptor after every physical
        # acquire; raising here makes filelock release the lock again. We keep a duplicate
        # (same open file description, so same lock) to write, truncate and fstat later.
        own = os.dup(fd)
        try:
            found = os.fstat(own)
            _refuse_other_kinds(self.path, found.st_mode)  # swapped in since the check
            _refuse_aliased(self.path, found)
            # A root of the run's own sandbox is held only by the run's processes; looking
            # through /proc there would cost every test's root for nothing.
            if self._durable and (holder := _deleted_lock_holder(self.path)) is not None:
                described = describe_holder(holder) + _through_deleted(self.path, holder)
                raise DataRootInUseError(
                    self.root, holder, self._wanted, held_by=described, lock_elsewhere=True
                )
            if (
                (self._durable or self._on_a_mount)
                and (holder := _held_through_another_device(found, own)) is not None
                and (
                    not holder.get("through_fuse")
                    or not (ours := _forwarded_for(own, found))
                    or (holder := _held_through_another_device(found, own, ours)) is not None
                )
            ):
                described = describe_holder(holder) + through_another_device(self.path, holder)
                raise DataRootInUseError(self.root, holder, self._wanted, held_by=described)
            holder = holder_info(self.kind, self.profile, port=self._port, root=self.root)
            written = _write_in_place(own, holder, durable=self._durable)
        except BaseException:
            os.close(own)
            raise
        self._fd = own
        self._identity = (found.st_dev, found.st_ino)
        self._holder = holder
        self._written = written
        if self._durable or self._on_a_mount:
            # Not for the run's own roots, which nothing unmounts under them (a read of the
            # mount table, about 0.2 ms, for every test's root for nothing).
            self._mount_root = _mount_root(own)
        if self._root_fd is None:
            self._root_fd = _keep_aged(self.root)

    def release(self) -> None:
        """Empty the lock file while still holding it, then unlock. Idempotent.

        The file itself stays: deleting it would let a newcomer lock a new inode while
        someone still holds the old one.
        """
        with self._guard:
            fd = self._fd
            if fd is None:
                return
            try:
                # Truncate first, while we still hold the lock: a reader never sees our
                # JSON in a file nobody holds (apart from after a crash, which probe handles).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    if self._durable:
                        os.fsync(fd)
                if self._sandbox_flock is not None:
                    self._sandbox_flock.release()
                else:
                    assert self._lock is not None
                    self._lock.release()
            finally:
                self._fd = None
                self._identity = None
                self._holder = None
                _LIVE_LOCKS.discard(self)
                os.close(fd)
                root_fd, self._root_fd = self._root_fd, None
                if root_fd is not None:
                    os.close(root_fd)

    def _forget_after_fork(self) -> None:  # pragma: no cover - runs in a forked child
        # The child must neither keep the parent's lock alive nor truncate its file.
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        if self._root_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._root_fd)
        self._root_fd = None
        if self._sandbox_flock is not None:
            self._sandbox_flock.forget()
        self._fd = None
        self._identity = None
        self._holder = None
        self._guard = threading.RLock()

    def __enter__(self) -> Self:
        # Like filelock's proxy: `with lock.acquire(wanted):` must not try a second time.
        if self.held:
            return self
        return self.acquire(f"take data root {self.root} for {self.kind}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- while held ------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """Whether this instance holds the lock (as far as this process knows)."""
        return self._fd is not None

    @property
    def identity(self) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the file this holder locked, None when not held."""
        return self._identity

    @property
    def holder(self) -> dict[str, Any] | None:
        """A copy of the JSON this holder published, ``None`` when not held."""
        return dict(self._holder) if self._holder is not None else None

    def update(self, **fields: Any) -> None:
        """Publish changed holder fields, e.g. ``port`` once the server socket is bound.

        Args:
            **fields: JSON-serialisable values merged into the published holder JSON.
        """
        with self._guard:
            if self._fd is None or self._holder is None:
                msg = f"cannot update {self.path}: the lock is not held"
                raise RuntimeError(msg)
            holder = {**self._holder, **fields}
            self._written = _write_in_place(self._fd, holder, durable=self._durable)
            self._holder = holder
            if "port" in fields:
                self._port = fields["port"]

    def restore_holder(self) -> str | None:
        """Write this holder's JSON again where the lock file's bytes are no longer it.

        The file's inode is ours, but anyone who may write it can change its bytes: a backup
        copied back over a live root with ``cp -a`` or ``tar`` writes into the existing file,
        and the lock file then named the copy's holder (a dead pid, its start time, its port)
        to `app status` and to every refusal.

        A holder that found no room for its JSON (a full disk) tries again at each check,
        quietly, so that it is named once there is room.

        Returns:
            Why the bytes were written again, ``None`` if they were not.
        """
        with self._guard:
            if self._fd is None or self._holder is None:
                return None
            size = os.fstat(self._fd).st_size
            if not self._written and not size:
                self._written = _write_in_place(
                    self._fd, self._holder, durable=self._durable, warn=False
                )
                return (
                    "it had no room to name itself when it took the lock" if self._written else None
                )
            if size == len(self._written) and os.pread(self._fd, size, 0) == self._written:
                return None
            self._written = _write_in_place(self._fd, self._holder, durable=self._durable)
            return (
                "its bytes were written over, as a backup copied into a live data root does. "
                "Copy backups in only while the server is stopped, and never copy .server.lock"
            )

    def names(self) -> int:
        """How many names (hard links) the locked file has; 0 when not held."""
        with self._guard:
            return 0 if self._fd is None else os.fstat(self._fd).st_nlink

    def still_ours(self) -> str | None:
        """Check that the lock path still names the inode this holder locked.

        Returns:
            ``None`` while it does; otherwise the reason, phrased to follow the path:
            ``"was deleted"``, ``"was replaced by another file"`` or ``"is not held"``.
        """
        with self._guard:
            if self._fd is None or self._identity is None:
                return "is not held"
            try:
                current = os.lstat(self.path)
            except (FileNotFoundError, NotADirectoryError):
                # NotADirectoryError: the data root itself was replaced by a file.
                return self._moved() or "was deleted"
            if (current.st_dev, current.st_ino) != self._identity:
                return self._moved() or "was replaced by another file"
            return None

    def _moved(self) -> str | None:
        # Said "was deleted" of a file renamed (`mv .server.lock .server.lock.old`): one then
        # looks for who deleted a file that is still there (red team 46).
        # A whole root moved is told apart by the caller (`DataRoot.lost_error`).
        now = self.now_at()
        if now is not None and now == self.path:
            # Still at its name, as the kernel names it, yet another file is there: something
            # is mounted over it (a file bound over the lock, a filesystem over the root:
            # `DataRoot.lost_error` says so of the root). It was said "moved to" its own
            # path, "never move it" (red team 73).
            path = shell_word(self.path)
            return (
                f"is hidden by a file mounted over it since it was locked (`umount {path}` "
                f"shows it again; `findmnt {path}` names the mount)"
            )
        return None if now is None else f"was moved to {now} (never move it)"

    def now_at(self) -> Path | None:
        """Where the file this holder locked is now, as the kernel names its descriptor
        (``/proc/self/fd``), or ``None`` where it was deleted, is not held, cannot be named,
        or its filesystem was unmounted (`unmounted_at`). A file under a directory something
        was mounted over keeps its old name."""
        named = self._named()
        return None if named is None or self._detached() else named

    def unmounted_at(self) -> Path | None:
        """Where the file this holder locked is inside its own filesystem, where that
        filesystem is no longer in this thread's mount table (``umount -l`` of a busy one,
        its device gone); ``None`` otherwise.

        The kernel then names the descriptor from the detached filesystem's top: a root at
        ``/mnt/disk/data`` was "at /data" to `now_at`, a directory that is not it (red team
        73 on regress)."""
        named = self._named()
        return named if named is not None and self._detached() else None

    @property
    def mount_root(self) -> Path:
        """The directory of its filesystem that the mount the lock file was locked through
        shows: ``/`` for a mount of the whole filesystem, a bind mount's directory
        (``mount --bind /mnt/disk/sub /srv/app``: ``/sub``), ``/`` where it was not read."""
        return self._mount_root or Path("/")

    def reachable_through(self) -> Path | None:
        """Where the top of the mount `unmounted_at` was unmounted from is still reached
        through another mount of its filesystem, the locked file at the same place below
        it (a second bind mount of it, or the whole filesystem's mount where the one
        unmounted bound a directory of it), or ``None``. "Mount that filesystem again" named
        no command where `mount --bind` of that other place puts the root back (red team 73
        on regress, round e); the bind of a directory was looked for at the filesystem's
        top, and not found (left open there; leftovers74)."""
        inside, fd = self.unmounted_at(), self._fd
        if inside is None or fd is None:
            return None
        try:
            locked = os.fstat(fd)
            entries = mountinfo.table()
        except OSError:
            return None
        device = f"{os.major(locked.st_dev)}:{os.minor(locked.st_dev)}".encode()
        bound = self.mount_root
        for entry in entries:
            if entry.device != device:
                continue  # only the same filesystem's mounts are looked at (no other is waited on)
            try:
                # Where the unmounted mount's top is below this mount's own top, if it is.
                top = Path(os.fsdecode(entry.point)) / bound.relative_to(os.fsdecode(entry.root))
                found = (top / inside.relative_to("/")).stat()
            except (OSError, ValueError):
                continue
            if (found.st_dev, found.st_ino) == (locked.st_dev, locked.st_ino):
                return top
        return None

    def _named(self) -> Path | None:
        fd = self._fd
        if fd is None:
            return None
        try:
            now = str(Path(f"/proc/self/fd/{fd}").readlink())
        except OSError:
            return None
        return None if now.endswith(" (deleted)") or not now.startswith("/") else Path(now)

    def _detached(self) -> bool:
        """Whether the mount the locked descriptor was opened through (its ``mnt_id``,
        ``/proc/self/fdinfo``) is gone from this thread's mount table; ``False`` where
        either cannot be read."""
        fd = self._fd
        if fd is None:
            return False
        try:
            with open(f"/proc/self/fdinfo/{fd}", "rb") as opened:  # noqa: PTH123 - a seq file
                info = opened.read()
            entries = mountinfo.table()
        except OSError:
            return False
        found = re.search(rb"^mnt_id:\s*(\d+)$", info, re.MULTILINE)
        if found is None:
            return False
        mount = int(found.group(1))
        return all(entry.mount_id != mount for entry in entries)

    def __repr__(self) -> str:
        state = "held" if self.held else "not held"
        return f"RootLock({str(self.root)!r}, kind={self.kind!r}, {state})"


class _SandboxFlock:
    """The same exclusive ``flock`` on the same file as filelock's `UnixFileLock` takes, for
    the roots filelock's extra machinery has nothing to guard: those in the directory pytest
    has created (mode 0700) for a run alone, the session's own and every test's.

    Not filelock, because its import is about 9 ms of every pytest start with the plugin
    (a third of what the plugin adds to bare pytest, bench/plugin_startup.py), and its
    acquire and release (fork tracking, its registry, polling) about 0.5 ms of every test
    that opens a root (bench/README.md, branch perf23). What the app
    relies on from filelock is kept: one flock per open file, so servers, probes and other
    `RootLock`s see this one; the file created mode 0600 without ``O_TRUNC`` and never
    removed; a symbolic link refused (``O_NOFOLLOW``); a filesystem without flock refused,
    never soft-locked (`_UNSUPPORTED_ERRNOS`, in `RootLock.acquire`); retries until the
    timeout (a probe's momentary shared hold); an inode unlinked before the flock was won
    is not taken; and a forked child closes its copy without unlocking (`forget`), so it
    neither releases the run's lock nor keeps it alive after the run. What filelock adds
    for directories other accounts write (hard links planted there, soft markers, leased
    files) has no such directory to guard here.
    """

    def __init__(self, path: Path, on_acquired: Callable[[int], None]) -> None:
        self._path = path
        self._on_acquired = on_acquired
        self._fd: int | None = None

    def acquire(self, timeout: float) -> bool:
        """Take the lock, retrying for `timeout` seconds; False if it stayed contended."""
        deadline = time.monotonic() + timeout
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno not in _CONTENDED_ERRNOS:
                    raise
            else:
                if os.fstat(fd).st_nlink > 0:
                    try:
                        self._on_acquired(fd)
                    except BaseException:
                        os.close(fd)  # closing the only descriptor drops the lock
                        raise
                    self._fd = fd
                    return True
                os.close(fd)  # unlinked before the flock was won: open the path again
                continue
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL)

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            return os.open(self._path, flags, 0o600)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise LockFileAliasedError(self._path, "is a symbolic link") from None
            raise

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def forget(self) -> None:  # pragma: no cover - runs in a forked child
        # Closing is not unlocking: the parent's open file description keeps its flock.
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


#: What else than a file can sit at a file's name, as messages name it.
_KINDS_OF_FILE: Final = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


#: What a command on this machine connects to for a server listening on every address.
_LOOPBACK_FOR: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def http_url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets (``http://::1:8000`` is no URL)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def local_url(holder: Mapping[str, Any], configured_host: str) -> str | None:
    """Where a command on this machine reaches the server ``holder`` describes, or ``None``:
    `_reached_at`'s URL, where it is one (`well_formed_url`)."""
    url = _reached_at(holder, configured_host)
    port = holder.get("port")
    return url if url is not None and isinstance(port, int) and well_formed_url(url, port) else None


#: A host name as DNS spells one (RFC 1123 labels, an underscore too, which `hostname`
#: takes: `docker run --hostname web_2`), the words a URL here is built from.
_LABEL: Final = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOST_NAME: Final = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")


def well_formed_url(url: str, port: int | None = None) -> bool:
    """Whether ``url`` is ``http://host:port`` (``port`` the holder's, where given) with
    ``host`` a host name or an IP address, nothing else: the URL and the address come from the lock
    file, which whoever writes the data root writes, and `empty-trash`'s refusal prints
    them in a ``curl`` the operator pastes, inside double quotes, with the token's header.
    A record copied or written with ``"url": "http://web-2:8000\"; rm -rf ~; \""`` (or a
    ``$(...)``, or an ``address`` so spelled) had the pasted line run that command, as the
    operator (red team 72 on regress, round l)."""
    scheme, _, rest = url.partition("://")
    host, _, given = rest.rpartition(":")
    if scheme != "http" or not given.isdigit() or given != str(port or given):
        return False
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return _HOST_NAME.fullmatch(host) is not None


def _reached_at(holder: Mapping[str, Any], configured_host: str) -> str | None:
    """Where a command on this machine reaches the server ``holder`` describes, or ``None``.

    From the address the server listens on, which it publishes (``address``): `app status`
    and `empty-trash`'s refusal built the URL from the command's own ``host`` setting, so a
    server started with ``--host ::1`` (or an ``APP_HOST`` the shell does not have) was
    said to serve at ``http://127.0.0.1:PORT``, where nothing, or another server, answers;
    and ``APP_HOST=::1`` gave ``http://::1:PORT``, which curl refuses (red team 51). An
    address of every interface is reached at the loopback of its family. A holder of an
    earlier build, which published no address, is named by the URL it published.
    """
    port = holder.get("port")
    if holder.get("kind") != "server" or not isinstance(port, int) or not port:
        return None
    if {
        "took_lock",
        "pid_written_over",
        "unpublished",
        "shared_lock",
        "locked_for",
        "linked_for",
    } & holder.keys():
        # The port is the file's, not the live holder's: a killed server's, whose port
        # another program may listen on now (red team 70: `app status` said "serving" there,
        # and `empty-trash`'s refusal printed a `curl` to POST /trash/empty at it). Or the
        # server of another root whose lock file was moved here: that `curl` emptied the
        # other root's trash (red team 73), or linked here (`cp -al`: `app status` of the
        # copy said "serving:" at the live root's server, red team 73 on regress).
        return None
    address = holder.get("address")
    if not holder.get("pid") and _on_another_host(holder):
        # A server of another machine (`describe_holder`: the kernel lists no process here
        # for its lock, and its record names another host): its loopback, or every
        # interface's loopback, is that machine's, and the URL built from it here reached
        # this machine's port, where nothing or another server listens (`app status` said
        # "serving: http://127.0.0.1:PORT"; found by trying the on-disk layout page's words
        # by experiment, docs review 72).
        return _url_on_another_host(holder, address, port)
    if not isinstance(address, str):
        published = holder.get("url")
        if isinstance(published, str) and published.startswith("http"):
            return published
        address = configured_host
    return http_url(_LOOPBACK_FOR.get(address, address), port)


def _url_on_another_host(holder: Mapping[str, Any], address: object, port: int) -> str | None:
    """Where this machine reaches a server of another host listening on ``address``: nowhere
    where that is its own loopback (or unknown, an earlier build's record), by the URL it
    published (its host name) where it listens on every interface, else at that address."""
    if not isinstance(address, str) or _is_loopback(address):
        return None
    if address in _LOOPBACK_FOR or _ip(address) in _EVERY_INTERFACE:
        published = holder.get("url")
        if not isinstance(published, str) or not published.startswith("http"):
            return None
        # Its server names itself by the address where that is no wildcard of its own
        # spelling (`::ffff:0.0.0.0`): this machine's, as its loopback is.
        named = published.partition("://")[2].rpartition(":")[0]
        return None if _is_loopback(named) or _ip(named) in _EVERY_INTERFACE else published
    return http_url(address, port)


#: The addresses of every interface, as `_ip` reads them.
_EVERY_INTERFACE: Final = frozenset(
    {ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")}  # noqa: S104
)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``address`` spells (in brackets or not), an IPv4-mapped IPv6 one as
    its IPv4 address (``::ffff:127.0.0.1`` is 127.0.0.1, which a server binds on an IPv6
    socket), or None for a host name."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_loopback(address: str) -> bool:
    """Whether a server listening on ``address`` is reached only from its own machine: a
    loopback address, IPv4-mapped too (red team 72 on regress, round l: a server of another
    host on ``--host ::ffff:127.0.0.1`` was said to serve at ``http://[::ffff:127.0.0.1]:PORT``,
    this machine's loopback, which `ipaddress` does not call one before Python 3.13)."""
    ip = _ip(address)
    return ip.is_loopback if ip is not None else address == "localhost"


def special_kind(mode: int) -> str | None:
    """What a file of this ``st_mode`` is ("a FIFO", "a directory"...), or None for a regular
    file or a symbolic link."""
    return next((name for is_kind, name in _KINDS_OF_FILE if is_kind(mode)), None)


def _refuse_other_kinds(path: Path, mode: int) -> None:
    # filelock's open of a directory failed with a bare IsADirectoryError, and a FIFO was
    # locked, then the holder's JSON failed with ESPIPE: both were tracebacks. A symbolic
    # link is `_refuse_aliased`'s to name.
    if (kind := special_kind(mode)) is not None:
        raise LockFileKindError(path, kind)


def _refuse_aliased(path: Path, locked: os.stat_result) -> None:
    # filelock follows a symbolic link, and a hard link shares the inode: either way the
    # holder JSON would be written into another root's lock file, and that root's holder
    # would see its lock taken. Checked before anything is written.
    try:
        named = os.lstat(path)
    except OSError:
        return  # deleted already: still_ours reports it
    if (named.st_dev, named.st_ino) != (locked.st_dev, locked.st_ino):
        if stat.S_ISLNK(named.st_mode):
            raise LockFileAliasedError(path, "is a symbolic link")
        # Not a link itself, yet another file than the one opened through the same path: a
        # directory on the way resolves differently for the lock than for this look (a
        # `/proc/<pid>/root/...` path into another mount namespace), or it was replaced.
        raise LockFileAliasedError(
            path,
            "leads to another file than the one its lock was opened on (a directory on the "
            "way, such as /proc/<pid>/root, resolves elsewhere, or the file was replaced)",
        )
    if locked.st_nlink > 1:
        # "Remove the link" named no link: a hard link's other name is anywhere on the
        # filesystem, often a copy of the root made with links while it lived (red team 41).
        raise LockFileAliasedError(
            path, hard_links_said(path, locked.st_nlink), hard_links_fix(path)
        )


def refuse_shared_with_another_root(
    root: Path, path: Path, holder: Mapping[str, Any] | None
) -> None:
    """Refuse a lock file that is also another root's, held there (a hard-link copy of a
    live root opened): "stop it (``kill <pid>``)" named the server of the other root, which
    serves on rightly (red team 41)."""
    other = shared_with(root, path, holder)
    if other is None:
        return
    count = path.stat().st_nlink
    raise LockFileAliasedError(
        path,
        f"has {count} hard links: it is also {other / LOCK_FILE}, as a copy of a data root "
        "made with links has it (`cp -al`, `cp -l`, `rsync --link-dest`), and "
        f"{describe_holder(holder)} holds it for data root {other}",
        f"Leave that process running: it holds {other}, not {root}. Remove this root's name "
        f"for the file (`rm {shell_word(path)}`: the app makes a new one where it opens "
        f"{root}), then retry; leave .server.lock out of such copies",
    )


def shared_with(root: Path, path: Path, holder: Mapping[str, Any] | None) -> Path | None:
    """The other data root whose lock file ``path`` also is (a hard link), by the root its
    holder published, if that is not ``root``; ``None`` otherwise."""
    published = holder.get("root") if holder else None
    if not isinstance(published, str):
        return None
    try:
        if path.stat().st_nlink < 2:
            return None
        if root.samefile(published):
            return None
    except FileNotFoundError:
        # Nothing at the published path: that root removed or renamed since its copy was made
        # with links, or out of sight (another mount namespace). Told apart by the identity
        # it published: the copy's `app status` said "serving:" at that root's server (red
        # team 73 on regress, round e).
        return _published_elsewhere(root, holder)
    except OSError:
        return None
    return Path(published)


def _published_elsewhere(root: Path, holder: Mapping[str, Any] | None) -> Path | None:
    """The root `holder` published, where nothing is at its path now, if the directory
    identity it published is not ``root``'s; ``None`` otherwise (no identity published)."""
    published = holder.get("root") if holder else None
    published_id = holder.get("root_id") if holder else None
    if not isinstance(published, str) or not isinstance(published_id, str):
        return None
    here = _dir_id(root)
    return None if here is None or published_id == here else Path(published)


def locked_for(root: Path, path: Path, holder: Mapping[str, Any] | None) -> Path | None:
    """The other data root whose holder locked ``path`` there before the file was moved or
    exchanged into ``root`` (`mv`, `mv --exchange`), by the root and the directory identity
    its record published, if that identity is not ``root``'s; ``None`` otherwise (a record
    that is not the holder's own, one with no ``root_id``, a hard link: `shared_with`)."""
    if not holder or {"pid_written_over", "unpublished", "shared_lock"} & holder.keys():
        return None
    published, published_id = holder.get("root"), holder.get("root_id")
    if not isinstance(published, str) or not isinstance(published_id, str):
        return None
    try:
        found = path.stat()
    except OSError:
        return None
    try:
        there_dev = Path(published).stat().st_dev
    except FileNotFoundError:
        # That root removed since, this root's lock file the last name of the file its
        # server locked (`cp -al` of the live root, then `rm -rf` of it): said "serving:"
        # at that server (red team 73 on regress, round e). Its published device instead.
        there_dev = int(device) if (device := published_id.partition(":")[0]).isdigit() else -1
    except OSError:
        return None
    # A rename never leaves its filesystem: a lock file seen through another device (an
    # overlay or a FUSE mirror of the live root, whose directory has another identity) was
    # not moved here, and is the through-device look's to name.
    if found.st_nlink != 1 or found.st_dev != there_dev:
        return None
    here = _dir_id(root)
    return None if here is None or published_id == here else Path(published)


def _marked_locked_for(
    root: Path, path: Path, holder: dict[str, Any] | None
) -> dict[str, Any] | None:
    """`holder` with ``locked_for`` (`locked_for`) where it locked the file as another
    root's, or ``linked_for`` where the file is also that root's by a hard link
    (`shared_with`): no URL is built from it (`local_url`), and no refusal tells to stop
    it."""
    if holder and (other := locked_for(root, path, holder)) is not None:
        return {**holder, "locked_for": str(other)}
    if holder and (other := shared_with(root, path, holder)) is not None:
        return {**holder, "linked_for": str(other)}
    return holder


def locked_for_said(other: Path) -> str:
    """What follows a holder's description where it locked this root's lock file as
    `other`'s (`locked_for`): a writer told "a server holds its data root until it is
    stopped: stop it (``kill <pid>``)" was sent to stop the server of another root, after lock
    files exchanged between two live roots (red team 73)."""
    said = (
        f", for data root {other}, not this one: this root's {LOCK_FILE} is the file that "
        f"process locked in {other}, moved or exchanged here since (`mv`, `mv --exchange`)"
    )
    if not os.path.lexists(other):
        # Or its last name: a copy made with links while that root lived, which was then
        # removed (red team 73 on regress, round e).
        said += (
            f", or linked here (`cp -al`, `ln`) before {other} was removed or renamed; that "
            "process serves nothing of this root"
        )
    return said


def hard_links_said(path: Path, count: int) -> str:
    """What a lock file with ``count`` names is (`LockFileAliasedError`'s reason)."""
    return (
        f"has {count} hard links: it is also named elsewhere on its filesystem, as a copy of "
        "the data root made with links is (`cp -al`, `cp -l`, `rsync --link-dest`)"
    )


def hard_links_fix(path: Path) -> str:
    """How to give a lock file its one name back: the command that lists the others."""
    return (
        f"List its other names with `find {shell_word(path.parent.parent)} -xdev -samefile "
        f"{shell_word(path)}` (a copy usually lies beside the root; start at "
        f"{_mount_point(path)} to search its "
        f"whole filesystem) and remove each of them but {path} itself (a copy of a data root "
        "needs no .server.lock: the app makes one where it opens a root), then start again; "
        "leave .server.lock out of such copies"
    )


def _mount_point(path: Path) -> Path:
    """The directory the filesystem holding ``path`` is mounted on (where ``find -xdev``
    starts), found by walking up while the device stays the same; ``/`` if unknown."""
    try:
        here = path.parent.resolve()
        device = here.stat().st_dev
        while here.parent != here and here.parent.stat().st_dev == device:
            here = here.parent
    except OSError:
        return Path("/")
    return here


def _mount_root(fd: int) -> Path | None:
    """The directory of its filesystem that the mount ``fd`` was opened through shows (its
    ``mnt_id``, ``/proc/self/fdinfo``, in the mount table), or ``None`` where either cannot
    be read."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as opened:  # noqa: PTH123 - a seq file
            found = re.search(rb"^mnt_id:\s*(\d+)$", opened.read(), re.MULTILINE)
        entries = mountinfo.table() if found is not None else []
    except OSError:
        return None
    mount = int(found.group(1)) if found is not None else None
    shown = next((entry.root for entry in entries if entry.mount_id == mount), None)
    return None if shown is None else Path(os.fsdecode(shown))


def _write_in_place(
    fd: int, holder: Mapping[str, Any], *, durable: bool = True, warn: bool = True
) -> bytes:
    """Write `holder` into the locked file; return the bytes the file now holds (none on a
    full disk)."""
    # In place on the locked descriptor, never write-temp-and-rename: a rename would put
    # a different, unlocked inode at the lock path. Write first, then cut to length, so an
    # update never shows readers an empty file; a stale tail fails to parse and readers
    # retry (see _read_holder_fd).
    data = (json.dumps(dict(holder), sort_keys=True) + "\n").encode()
    view = memoryview(data)
    offset = 0
    try:
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
    except OSError as error:
        if error.errno not in _FULL_ERRNOS:
            raise
        # The flock is the lock; this JSON only names its holder. On a full disk (the
        # file is emptied on release, so it needs a block again) it stopped every holder,
        # `app data empty-trash` that frees space included: the holder goes unnamed.
        os.ftruncate(fd, 0)
        if warn:
            log.warning("the lock is held without naming its holder in the lock file: %s", error)
        return b""
    os.ftruncate(fd, len(data))
    if durable:
        os.fsync(fd)
    return data


class LockWatcher:
    """A daemon thread that checks :meth:`RootLock.still_ours` every ``interval`` seconds.

    On the first failed check it calls ``on_lost(reason)`` once (the server logs the
    reason and shuts down rather than share its root) and stops. A check that raises
    ``OSError`` counts as failed, with the reason ``"could not be checked (...)"``; any other
    exception ends the watching, logged with its traceback, and is a loss too, with the
    reason ``"could not be watched: ..."`` naming it (the server stops rather than serve
    unwatched). A lock released on purpose is not a loss: the watcher then ends quietly.

    Examples:
        >>> watcher = LockWatcher(lock, 5.0, on_lost=shutdown).start()
        >>> ...
        >>> watcher.stop()
    """

    def __init__(
        self,
        lock: RootLock,
        interval: float,
        on_lost: Callable[[str], object],
        also: Callable[[], str | None] | None = None,
    ) -> None:
        """Prepare the watcher; :meth:`start` starts the thread.

        Args:
            lock: the held lock to watch.
            interval: seconds between checks (positive).
            on_lost: called once, from the watcher thread, with the reason.
            also: a further check made at each look while the lock is still ours (a
                root's stamp, `app.dataroot.DataRoot.stamp_changed`): a reason it returns
                is a loss too.
        """
        if not interval > 0:
            msg = f"interval must be a positive number of seconds, not {interval!r}"
            raise ValueError(msg)
        self.lock = lock
        self.interval = interval
        self.on_lost = on_lost
        self.also = also
        self.lost: str | None = None
        self._names_warned = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lock-watcher {lock.path}", daemon=True
        )

    def start(self) -> Self:
        """Start the watcher thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop watching and wait for the thread; safe to call from ``on_lost`` too."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the watcher thread is alive."""
        return self._thread.is_alive()

    def _run(self) -> None:
        # Any exception, not only the OSError a look may raise (which `_check` says as one):
        # a watcher that ended silently left its server serving with its lock file never
        # looked at again (red team 73, left open; leftovers74). It stops the server instead.
        try:
            self._watch()
        except Exception as error:
            log.exception("the watcher of lock file %s failed", self.lock.path)
            if self.lost is None and self.lock.held and not self._stop.is_set():
                self.lost = watch_failed(error)
                self.on_lost(self.lost)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.lock.held:
                return
            reason = self._check()
            if reason is None and self.also is not None:
                reason = self.also()
            if reason is not None and self.lock.held and not self._stop.is_set():
                self.lost = reason
                self.on_lost(reason)
                return
            try:
                if (why := self.lock.restore_holder()) is not None:
                    log.warning(
                        "lock file %s did not name this process (%s); named it now",
                        self.lock.path,
                        why,
                    )
                self._warn_of_hard_links()
            except OSError as error:
                log.warning("could not check the holder in %s: %s", self.lock.path, error)

    def _warn_of_hard_links(self) -> None:
        # A copy of the live root made with links (`cp -al root root.bak` before an upgrade)
        # gave the lock file a second name: the server ran on, and its next start was
        # refused, unannounced (red team 41). Said once for each count of names.
        count = self.lock.names()
        if count > 1 and count != self._names_warned:
            log.warning(
                "lock file %s %s: this server runs on, but its next start will be refused "
                "until the file has its one name again. %s",
                self.lock.path,
                hard_links_said(self.lock.path, count),
                hard_links_fix(self.lock.path).replace("then start again", "before then"),
            )
        self._names_warned = count

    def _check(self) -> str | None:
        """:meth:`RootLock.still_ours`, looked at again where the look itself fails.

        A check that cannot be made proves nothing (an exception would end this thread
        silently, the server running unwatched), and neither does one failure: one failed
        ``lstat`` (a stale NFS handle, one bad read) stopped a server whose flock was still
        its own (red team 39). Writes meanwhile are refused by their own check.
        """
        started = time.monotonic()
        for attempt, pause in enumerate((*_RECHECK_PAUSES, None), start=1):
            try:
                reason = self.lock.still_ours()
            except OSError as error:
                cause = error.strerror or str(error)
                # A root made unreachable (chmod 000) stays so: said at once (red team 37).
                if (
                    pause is None
                    or isinstance(error, PermissionError)
                    or self._stop.wait(min(pause, self.interval))
                ):
                    spent = time.monotonic() - started
                    return f"could not be checked ({cause}; {attempt} looks in {spent:.1f} s)"
                log.warning(
                    "lock file %s could not be checked (%s); looking again", self.lock.path, cause
                )
                continue
            if attempt > 1:
                log.warning("lock file %s checked again: still this process's", self.lock.path)
            return reason
        return None  # not reached: the last pause is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
