"""Opening a data root: sandbox check, creation, lock, profile stamp, layout, audit log.

The sandbox, the lock, the stamp, the trash and the audit log meet here. :func:`open_root`
is the only way the app gets a writable data root, and it checks in an order chosen so that
each step is protected by the ones before it:

1. the pytest sandbox (before touching the filesystem at all);
2. create the root, mode 0700, if it is new;
3. take the lock (so two writers never race on the stamp or on ``.tmp/``);
4. check or write the profile stamp ``.app-profile.json``;
5. create ``sessions/``, ``.trash/`` and ``.tmp/`` and clear ``.tmp/`` of a crash's leftovers.

A reader (``write=False``) does 1 and 4 only: it creates nothing and takes no lock.

Who owns which file:

* ``.server.lock``: see :mod:`app.lock`; never removed by anybody.
* ``.app-profile.json``: written once by the first writer (atomically), rewritten only by
  :func:`restamp`, never removed.
* ``audit.jsonl``: append-only, one JSON line per destructive operation; never rewritten.
* ``.tmp/``: in-flight writes of the lock holder, each under the writer's ``flock`` until
  its rename; a file found there unlocked when a writer opens the root was left by a crash
  and is deleted. A locked one belongs to a live process (one whose lock file was deleted
  under it) and is left alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import functools
import itertools
import json
import logging
import os
import re
import resource
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final, Self

from app import __version__, libc
from app.config_files import loop_at
from app.errors import (
    AFTER_FAILED_SYNC,
    NO_INODES,
    WATCH_FAILED,
    AppError,
    AuditLogAtLimit,
    DataRootChangedError,
    DataRootOwnerError,
    DataRootStateError,
    DataRootTooNewError,
    FsyncFailed,
    LockFileAliasedError,
    LockFileKindError,
    LockLostError,
    LockUncheckedError,
    LockUnwatchedError,
    ProfileStampMismatchError,
    SpecialFileFound,
    StampChangedError,
    json_loads,
    out_of_inodes,
    shell_word,
    user_words,
)
from app.lock import (
    LOCK_FILE,
    Probe,
    RootLock,
    a_root_s_lock_file,
    describe_holder,
    hard_links_fix,
    hard_links_said,
    held_here,
    locked_for_said,
    probe,
    refuse_shared_with_another_root,
    shared_with,
    special_kind,
    through_another_device,
)
from app.mountinfo import (
    by_point,
    nearest,
    parse,
    showing,
    shown_and_hidden_from,
    table,
    upper_in_fact,
    upper_of,
    walk_nearest,
)
from app.names import MAX_NAME_BYTES
from app.records import dataclass
from app.requester import REQUESTER
from app.sandbox import (
    LazyPattern,
    check_given_profile,
    check_root,
    check_same_filesystem,
    check_served,
    check_shown_from,
    checked,
    checked_as,
    current_run,
    inside,
    just_checked,
    name_there,
    path_as_text,
    process_link,
    seen_from_outside,
    unmapped_here,
)

if TYPE_CHECKING:
    from app.config import Config
    from app.sandbox import Run
    from app.store.concurrency import RootState

__all__ = [
    "AUDIT_FILE",
    "DEEPEST_INSIDE",
    "DIR_MODE",
    "FILE_MODE",
    "HASHED_KEY",
    "LAYOUT_MARK",
    "LOCAL_FILESYSTEMS",
    "SESSIONS_DIR",
    "STAMP_FILE",
    "TMP_DIR",
    "TRASH_DIR",
    "DataRoot",
    "NotRegularFileError",
    "Prepared",
    "RootStatus",
    "a_root_s_own",
    "describe",
    "filesystem_type",
    "fsync",
    "fsync_dir",
    "json_bytes",
    "layout_mark",
    "link_remedy",
    "mark_hashed",
    "marked_profile",
    "mount_point_at",
    "mounts_inside",
    "open_root",
    "raise_layout",
    "read_regular",
    "read_stamp",
    "restamp",
    "served_from",
    "shown_from_a_session",
    "syncfs",
    "tmp_in_flight",
    "write_all",
    "write_new_file",
]

STAMP_FILE: Final = ".app-profile.json"
LAYOUT_VERSION: Final = 2
"""The layout of a data root this release writes and reads: a release that lays out a root
in a way an earlier one would misread writes a higher ``layout_version`` into its stamp, and
earlier releases refuse it (:class:`~app.errors.DataRootTooNewError`). A stamp without one
was written before layouts were numbered: layout 1. Layout 2 is a root marked `HASHED_KEY`
(every file keyed): a build from before the mark writes files without keys (a trash.json
until session 67), which the mark makes damage, so it must not open one (red team 67 on
regress: a file that build deleted was unrestorable once this one ran again). A root not
marked stays layout 1, open to them."""
_UNMARKED_LAYOUT: Final = 1
HASHED_KEY: Final = "content_sha256_since"
"""The stamp's key that says every ``session.json``, file record and trash manifest in the
root carries its ``content_sha256`` (`app.store.records.CONTENT_KEY`), with the time it was
written: in a new root's first stamp (before its first write), or by `app data check
--repair` once it has hashed what an earlier build wrote without one. Without it a missing
key reads as "written before keys existed", unchecked: one removed from a file by an edit
made that file read as acknowledged (rows67). An earlier build keeps the key as it is."""
AUDIT_FILE: Final = "audit.jsonl"
SESSIONS_DIR: Final = "sessions"
TRASH_DIR: Final = ".trash"
TMP_DIR: Final = ".tmp"
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600

# What a data root may contain. A directory without a stamp that holds anything else is
# not a data root (a data_root pointed at $HOME by mistake): adopting it would create our
# layout there and clear its ".tmp/", so it is refused instead.
_LAYOUT: Final = frozenset(
    {LOCK_FILE, STAMP_FILE, AUDIT_FILE, SESSIONS_DIR, TRASH_DIR, TMP_DIR, "lost+found"}
)
# Entries that do not count as data when deciding whether an unstamped root is new.
_NOT_DATA: Final = frozenset({LOCK_FILE, TMP_DIR, "lost+found"})
# The extended attribute every writer's open gives a root's own directories (sessions/,
# .trash/, .tmp/): JSON naming the directory and the root's profile. It marks such a
# directory as a root's where nothing above it can be seen (a bind mount of it whose
# filesystem is mounted nowhere in sight) or where the root above lost its stamp and lock
# file (red team 63): a directory so marked is never adopted as a data root, nor one in it.
LAYOUT_MARK: Final = "user.app.layout"
_MARKED: Final = (SESSIONS_DIR, TRASH_DIR, TMP_DIR)

# How long a read-only check waits for a moment without a change in flight (each takes
# milliseconds; a longer wait means changes overlap without a gap, and it says so).
_QUIESCENT_SECONDS: Final = 10.0

log = logging.getLogger("app.dataroot")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class NotRegularFileError(SpecialFileFound):
    """One of the app's own files is something else at its name: a FIFO, a directory..."""

    def __init__(self, path: Path | str, mode: int) -> None:
        super().__init__(path, special_kind(mode) or "something else")


def read_regular(path: Path | str, limit: int | None = None) -> bytes:
    """The bytes of one of the app's own files, which must be a regular file.

    Opened without blocking and checked before it is read: a FIFO at the name (a log
    shipper's, a test's ``os.mkfifo``) would otherwise wait for a writer for good, hanging
    a request, a start-up or ``app data check``, and then hand over whatever the other end
    sent as the file's content. With `limit`, at most ``limit + 1`` bytes are read: one
    more than `limit` says the file is longer.

    Raises:
        NotRegularFileError: the name is a FIFO, a directory, a socket or a device.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, mode)
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read() if limit is None else file.read(limit + 1)
    except OSError as error:
        # A read or fstat that fails (EIO) names no file: `app data check` could then not
        # say which one it missed, and stopped whole (red team 39).
        if error.errno is not None and error.filename is None:
            error.filename = os.fspath(path)
        raise
    finally:
        os.close(fd)


def data_root_of(path: Path) -> Path | None:
    """The data root ``path`` lies in (a directory up its resolved path with a profile stamp
    or a lock file), if any."""
    try:
        here = path.resolve()
    except (OSError, RuntimeError):
        return None
    for directory in (here, *here.parents):
        if any(os.path.lexists(directory / name) for name in (LOCK_FILE, STAMP_FILE)):
            return directory
    return None


def lexists(path: Path | str) -> bool:
    """Whether anything is at ``path`` (an ``lstat``, links not followed); a look that fails
    otherwise (``EIO``, ``ESTALE``, ``EMFILE``) is raised, never read as an answer.

    ``os.path.lexists`` says "nothing" of a look that failed: `check` passed a trash entry
    over as restored meanwhile (red team 51), ``restore --entry`` said the entry was "not in
    the trash", and a replace logged its old bytes "removed from outside the app" (red
    team 52).
    """
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def link_remedy(link: Path, otherwise: str) -> str:
    """What a human does about a directory of a root's made a symbolic link (moved to another
    disk and linked back): move what it leads to back in its place, unless that lies in a data
    root (this one or another: a link a test planted into production's), whose data must
    never be moved; ``otherwise``: what to do if it does not lead to the directory."""
    target = link.readlink()
    if not link.exists():
        # Once "move that back in its place: `mv <target> ...`" of a target not there, or
        # "else" a restore that was refused again by the same link (red team 45).
        return (
            f"it leads to {shell_word(target)}, which is not there (removed, or on a disk not "
            f"mounted): mount that disk and retry, or {otherwise}"
        )
    inside = data_root_of(link.parent / target)
    if inside is not None:
        # "Remove the link, `rm ...`, and remove the link and let the app create the
        # directory", said of a root's own directory linked into another root (red team 60).
        then = otherwise.removeprefix("remove the link and ")
        return (
            f"it leads into the data root {inside}, whose data must stay there: remove the "
            f"link, `rm {shell_word(link)}`, and {then}"
        )
    return (
        "if it leads to the directory, moved out of the data root, move that back in its "
        f"place: `rm {shell_word(link)} && mv {shell_word(target)} {shell_word(link)}`, with "
        f"no server on the root; else {otherwise}"
    )


# --- fsync, and what one failure means for the rest of the process --------------------

# The first failed fsync in this process: never cleared. After a failed fsync Linux may
# have dropped the pages it could not write and marked them clean, so a later fsync
# succeeds without them (PostgreSQL's "fsyncgate", 2018); this process cannot tell which of
# its changes that was, so it acknowledges none any more, as PostgreSQL PANICs. A restart
# runs `check --repair`. One for the whole process, not one per filesystem: kept by the
# device number of the descriptor that failed, it was looked up by another one where a
# file's and its directory's differ (an overlay whose layers lie on two filesystems gives a
# file the upper layer's device, a directory the overlay's), or recorded under none where
# naming the descriptor failed (no `/proc`), and the next change was acknowledged after a
# failed fsync (red team 61). A process changes one data root.
_FAILED_SYNCS: dict[str, FsyncFailed] = {}
_FAILED_SYNCS_LOCK = threading.Lock()
# A descriptor that cannot be synced at all (closed, a pipe): nothing was written or lost.
_NOT_WRITEBACK_ERRNOS: Final = frozenset({errno.EBADF, errno.EINVAL})


def failed_sync() -> FsyncFailed | None:
    """The first fsync that failed in this process, if one did (see ``_FAILED_SYNCS``)."""
    return _FAILED_SYNCS.get("first")


def forget_failed_sync(run_s: RootLock | None = None) -> FsyncFailed | None:
    """Forget the fsync failure this process recorded (and return it): for the pytest plugin
    only, as one test ends (`app.testing.plugin`); None where nothing was forgotten.

    A process changes one data root, save a test run's, whose every test opens a throw-away
    root of its own in the sandbox: there, one test's failure (an ``os.fsync`` a test made
    fail on purpose, a fault it injected) refused every change of every later test in that
    process (pytest's, or an xdist worker's), each in a root of its own, naming the first
    test's file (red team 61). Never called outside a test run: a server or a command that
    forgot it would acknowledge what the kernel may have dropped.

    Kept while this process still holds a data root other than `run_s` (the run's own
    session root, which the plugin holds and no test writes through that lock): the test
    ended, but a root a module- or session-scoped fixture opened (a store, a server in a
    thread) is written by the tests after it, and the failure may have been that root's.
    Forgot there, the next test's change to the very root whose fsync had failed was
    acknowledged (red team 61 on regress, mounts). Once none is held, each later root is
    opened anew, as after a restart.
    """
    if any(lock is not run_s for lock in held_here()):
        return None
    with _FAILED_SYNCS_LOCK:
        return _FAILED_SYNCS.pop("first", None)


def _earlier(first: FsyncFailed) -> FsyncFailed:
    return FsyncFailed(
        first.errno or errno.EIO,
        first.strerror or "fsync failed",
        first.filename,
        at=first.at,
        earlier=True,
    )


def fsync(fd: int) -> None:
    """``os.fsync(fd)``, refused on a filesystem where one failed before, and never retried.

    Every fsync of the app's data goes through here (the group commit of ``sessions/``
    too): a success after a failure proves nothing (see ``_FAILED_SYNCS``).

    Raises:
        FsyncFailed: this fsync failed (``earlier`` false), or one in this process did
            before (``earlier`` true, with the first failure's errno and time).
    """
    _sync(fd, os.fsync)  # EINTR is retried by Python (PEP 475): the call was not made


def _syncfs(fd: int) -> None:
    # Not in the os module. Linux has had syncfs(2) since 2.6.39; elsewhere sync(2), which
    # does the same for every filesystem (and reports no error). ctypes is imported here:
    # `app config` and pytest's start-up import this module, and never call this.
    import ctypes

    call = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if call is None:
        os.sync()
        return
    while call(fd) != 0:
        if (number := ctypes.get_errno()) != errno.EINTR:  # ctypes does not retry (PEP 475)
            raise OSError(number, os.strerror(number))


def syncfs(path: Path | str) -> None:
    """Make durable all that the kernel holds of the filesystem ``path`` lies on (syncfs(2)).

    For what an earlier holder of the root left unsynced when it died: a kill keeps its
    writes in the kernel's cache, where they look made, and the next holder's changes build
    on them (an upload into a session whose create's rename was never synced), to be lost
    with them in a power cut (red team 29). PostgreSQL syncs its data directory on the
    same ground when it starts after a crash (``recovery_init_sync_method = syncfs``).
    Failures are those of :func:`fsync`.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _sync(fd, _syncfs)
    finally:
        os.close(fd)


def _sync(fd: int, sync: Callable[[int], None]) -> None:
    if (first := failed_sync()) is not None:
        raise _earlier(first)
    try:
        sync(fd)
    except OSError as error:
        if error.errno in _NOT_WRITEBACK_ERRNOS:
            raise
        # Named for the message only: a name that cannot be found (no `/proc`) records the
        # failure all the same.
        try:
            where = str(Path(f"/proc/self/fd/{fd}").readlink())
        except OSError:
            where = f"descriptor {fd}"
        failed = FsyncFailed(
            error.errno or errno.EIO,
            error.strerror or str(error),
            where,
            at=_now_iso(),
            earlier=False,
        )
        with _FAILED_SYNCS_LOCK:
            first = _FAILED_SYNCS.setdefault("first", failed)
        if first is failed:
            log.error(
                "fsync of %s failed (%s): this process acknowledges no more changes to its "
                "data root until it is restarted (what the kernel could not write it may "
                "have dropped, and a restart alone reads it as written): %s",
                where,
                failed.strerror,
                AFTER_FAILED_SYNC,
            )
        raise failed from error


def fsync_dir(path: Path | str) -> None:
    """fsync a directory: a rename into it, or a new entry, is durable only after this."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync(fd)
    finally:
        os.close(fd)


_TREE_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def walk_tree(
    top: Path | str,
    onerror: Callable[[str, OSError], None] | None = None,
    *,
    open_own: bool = False,
) -> Iterator[tuple[str, list[str], list[str], int]]:
    """``os.walk(top)`` (top-down, links not followed, a directory it cannot list left out),
    with each directory's depth below `top` (0 for `top`): (directory, dirs, files, depth).

    Python 3.11's ``os.walk`` recurses once per level (3.12 made it iterative): a tree 1,000
    levels deep (a test's ``tmp_path``, a tool's cache, a ``mkdir`` in a loop) in a
    ``--basetemp``, in pytest's cache or in a data root made every check of the plugin that
    walks them a ``RecursionError`` traceback, which ended the run before any test, or at its
    end before pytest wrote its report (red team 55). This keeps a list of its own, so
    neither Python's stack nor the depth bounds it. As with ``os.walk``, a caller may prune
    ``dirs`` in place; a link to a directory is named in ``dirs`` and not walked into; a
    directory that cannot be listed is given to `onerror` (with its error) and left out.

    With `open_own`, for a walk of what pytest is about to delete (which makes such a
    directory removable first), a directory of this process's own user that its mode keeps
    it from listing (a test's ``chmod 000``) is given its owner's read and search bits for
    the walk, and its mode back after: left out, every later run with the same --basetemp
    was refused, and the ``rm -rf`` the refusal named failed on it too (red team 56).
    """
    opened: list[tuple[int, int]] = []
    try:
        yield from _walk_tree(os.fspath(top), onerror, opened if open_own else None)
    finally:
        for fd, mode in reversed(opened):  # the deepest first: its parent still open
            with contextlib.suppress(OSError):
                Path(f"/proc/self/fd/{fd}").chmod(mode)
            os.close(fd)


def _opened_for_the_walk(directory: str, opened: list[tuple[int, int]] | None) -> bool:
    """Give `directory` its owner's read and search bits, where it is a directory of this
    process's user (`walk_tree`'s `open_own`); whether it was. Held by a descriptor, and
    changed through it (``/proc/self/fd``): a link swapped in meanwhile is not followed."""
    if opened is None:
        return False
    try:
        fd = os.open(directory, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        found = os.fstat(fd)
        if found.st_uid != os.geteuid():
            os.close(fd)
            return False
        mode = stat.S_IMODE(found.st_mode)
        Path(f"/proc/self/fd/{fd}").chmod(mode | stat.S_IRUSR | stat.S_IXUSR)
    except OSError:
        os.close(fd)
        return False
    opened.append((fd, mode))
    return True


def _walk_tree(
    top: str,
    onerror: Callable[[str, OSError], None] | None,
    opened: list[tuple[int, int]] | None,
) -> Iterator[tuple[str, list[str], list[str], int]]:
    pending: list[tuple[str, int]] = [(top, 0)]
    while pending:
        directory, depth = pending.pop()
        dirs: list[str] = []
        files: list[str] = []
        walk_into: list[str] = []
        try:
            try:
                entries = os.scandir(directory)
            except PermissionError:
                if not _opened_for_the_walk(directory, opened):
                    raise
                entries = os.scandir(directory)
            with entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    if not is_dir:
                        files.append(entry.name)
                        continue
                    dirs.append(entry.name)
                    try:
                        if not entry.is_symlink():
                            walk_into.append(entry.name)
                    except OSError:
                        continue
        except OSError as error:
            if onerror is not None:
                onerror(directory, error)
            continue
        yield directory, dirs, files, depth
        # What the caller left of `dirs`, in order: the last pushed is walked first.
        walkable = set(walk_into)
        below = [name for name in dirs if name in walkable]
        pending.extend(
            (os.path.join(directory, name), depth + 1)  # noqa: PTH118 - a walk's names
            for name in reversed(below)
        )


def remove_tree(
    path: Path | str, *, ignore_errors: bool = False, contents_only: bool = False
) -> None:
    """Remove the directory ``path`` and all it holds, at any depth, as ``rm -rf`` does
    (``contents_only``: what it holds, leaving the directory itself).

    ``shutil.rmtree`` recurses once per level: a session's directory holding a tree 1,000
    levels deep (left by hand, or by a tool, in a session that was then deleted) made
    ``empty-trash``, ``check --repair`` and every server's start-up a ``RecursionError``
    traceback, exit 1, with the entry half removed under ``.emptying-``, so a service
    manager restarted the server in a loop that never served (red team 51). This walks the
    tree with a list of its own and one open directory at a time (so neither Python's stack
    nor the file limit bounds the depth), relative to each directory's descriptor, never
    following a link (a link is removed as a file); it goes back up by ``..``, checked to be
    the directory it came down from (else it stops, ``ESTALE``: the tree was moved meanwhile).
    An ``OSError`` stops it, raised unless ``ignore_errors``; what is gone by then is gone.

    It never goes into a filesystem mounted in the tree, nor removes what a mount at ``path``
    itself shows (``EXDEV``): each directory is checked to lie on the mount ``path``'s
    parent does as it is opened (Linux's fdinfo; the device elsewhere). A directory of
    another root bound into a trash entry after `empty-trash`'s check of the root's mounts,
    before it removed the entry, had its files removed with the entry, for good (red team
    62).
    """
    try:
        _remove_tree(os.fspath(path), contents_only=contents_only)
    except OSError:
        if not ignore_errors:
            raise


def _remove_tree(top: str, *, contents_only: bool) -> None:
    found = os.lstat(top)
    if not stat.S_ISDIR(found.st_mode):
        # shutil.rmtree's refusal of a link (its callers then remove the link themselves).
        raise OSError(errno.ENOTDIR, "not a directory (a link is never followed)", top)
    fd = os.open(top, _TREE_DIR_FLAGS)
    try:
        opened = os.fstat(fd)
        if not os.path.samestat(found, opened):
            raise OSError(errno.ESTALE, "replaced while being removed", top)
        mount = _mount_above(fd, opened, top)
        # Each level: its name in its parent, its identity, the subdirectories left in it.
        levels: list[tuple[str, tuple[int, int], list[str]]] = [
            ("", (opened.st_dev, opened.st_ino), _remove_files(fd))
        ]
        while levels:
            name, _identity, left = levels[-1]
            if left:
                below = left.pop()
                try:
                    child = os.open(below, _TREE_DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as error:
                    if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise _named(error, top, levels, below) from error
                    # Made a link or a file since it was listed: removed as one.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(below, dir_fd=fd)
                    continue
                here = _on_mount(child, mount, top, levels, below)
                os.close(fd)
                fd = child
                levels.append((below, (here.st_dev, here.st_ino), []))
                levels[-1][2].extend(_named_on_failure(_remove_files, fd, top, levels))
                continue
            levels.pop()
            if not levels:
                break
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            above = os.fstat(parent)
            if (above.st_dev, above.st_ino) != levels[-1][1]:
                os.close(parent)
                raise OSError(errno.ESTALE, "moved while being removed", f"{top}/.../{name}")
            os.close(fd)
            fd = parent
            _named_on_failure(functools.partial(os.rmdir, name), fd, top, levels, name)
    finally:
        os.close(fd)
    if not contents_only:
        Path(top).rmdir()


def _mount_of(fd: int, device: int) -> tuple[str, int]:
    """The mount the directory ``fd`` (on `device`) lies on: its id in Linux's fdinfo, which a
    bind mount of a directory of the same filesystem changes where the device does not (and
    a btrfs subvolume, another device, does not); the device where there is no fdinfo."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:  # noqa: PTH123 - a seq file
            for line in info:
                if line.startswith(b"mnt_id:"):
                    return "mount", int(line.split()[1])
    except (OSError, ValueError):
        pass
    return "device", device


def _mount_above(fd: int, opened: os.stat_result, top: str) -> tuple[str, int]:
    """The mount of the directory that holds `top` (open as `fd`, `opened` its ``fstat``),
    which every directory of the tree must lie on; `top` itself a mount point is refused."""
    parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    try:
        mount = _mount_of(parent, os.fstat(parent).st_dev)
    finally:
        os.close(parent)
    if _mount_of(fd, opened.st_dev) != mount:
        raise _mounted_there(top)
    return mount


def _on_mount(
    child: int,
    mount: tuple[str, int],
    top: str,
    levels: list[tuple[str, tuple[int, int], list[str]]],
    below: str,
) -> os.stat_result:
    """The ``fstat`` of the directory `child` (`below`, opened under `levels`), which must lie
    on `mount`; else it is closed and refused."""
    here = os.fstat(child)
    if _mount_of(child, here.st_dev) != mount:
        os.close(child)
        raise _mounted_there(_named(OSError(0, ""), top, levels, below).filename)
    return here


def _mounted_there(path: str) -> OSError:
    """What `remove_tree` raises at a mount point in the tree, or at its top."""
    where = shell_word(path)
    return OSError(
        errno.EXDEV,
        f"a filesystem is mounted at {path} (`findmnt {where}` names what it shows), and "
        f"nothing is removed through a mount: unmount it (`umount {where}`), then run `app "
        "data check --repair`",
        path,
    )


def _named_on_failure(
    call: Callable[..., Any],
    fd: int,
    top: str,
    levels: list[tuple[str, tuple[int, int], list[str]]],
    name: str | None = None,
) -> Any:
    """``call(dir_fd=fd)`` (``call(fd)`` without ``name``), its error `_named`."""
    try:
        return call(dir_fd=fd) if name is not None else call(fd)
    except OSError as error:
        raise _named(error, top, levels, name if name is not None else error.filename) from error


def _named(
    error: OSError, top: str, levels: list[tuple[str, tuple[int, int], list[str]]], name: object
) -> OSError:
    """``error`` of a call relative to a descriptor of `_remove_tree`, naming the whole path
    of what it failed on: ``name`` below the directory its ``levels`` lead to (the name
    alone, or ``top/.../name``, told an operator nothing of where to look)."""
    below = [name] if isinstance(name, str) else []  # a listing's error names its descriptor
    path = "/".join([top, *(level[0] for level in levels[1:]), *below])
    return OSError(error.errno, error.strerror, path)


def _remove_files(fd: int) -> list[str]:
    """Unlink everything in the directory ``fd`` but its subdirectories; their names."""
    subdirectories = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirectories.append(entry.name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=fd)
    return subdirectories


def visit_tree(path: Path | str, visit: Callable[[str, os.stat_result], bool]) -> None:
    """Call ``visit(relative, found)`` for everything under the directory ``path``, at any
    depth and any length of path: ``relative`` is its path below ``path``, ``found`` its
    ``lstat``; a directory is gone into when ``visit`` returns true. Links are never
    followed; what vanishes or cannot be read meanwhile is passed over, as ``os.walk`` does.

    ``os.walk`` recurses once per level and opens each directory by its whole path: a tree
    1,000 levels deep in a session made ``app data check`` run as another user than the
    owner (``sudo``, red team 55's ``wrong-owner``) a ``RecursionError`` traceback, and one
    whose path was longer than ``PATH_MAX`` (``ENAMETOOLONG``, 20 levels of long names) was
    passed over in silence, so a file of another user below it was said "clean" (red team
    56). This keeps a list of its own and one directory open at a time besides ``path``'s,
    opening each relative to its parent's descriptor, as `remove_tree` does; it goes back up
    by ``..``, and where that is not the directory it came down from (moved meanwhile),
    down again from ``path`` by name, leaving out the part that moved away.

    `walk_tree` is the pytest guard's walk, by whole paths (its callers read files by path
    and must hear of a directory they cannot list, which this passes over); this one is for
    a data root's entries, which only their descriptors reach at any length of path.
    """
    top = os.open(path, _TREE_DIR_FLAGS)
    fd = os.dup(top)
    # Each level: its name in its parent, its identity, the subdirectories left in it.
    levels: list[tuple[str, tuple[int, int], list[str]]] = []
    try:
        here = os.fstat(fd)
        levels.append(("", (here.st_dev, here.st_ino), _visit_entries(fd, "", visit)))
        while levels:
            left = levels[-1][2]
            if left:
                below = left.pop()
                try:
                    child = os.open(below, _TREE_DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # gone, made a link or a file, or unreadable since it was listed
                os.close(fd)
                fd = child
                here = os.fstat(fd)
                relative = "/".join([*(level[0] for level in levels[1:]), below])
                levels.append((below, (here.st_dev, here.st_ino), []))
                levels[-1][2].extend(_visit_entries(fd, relative, visit))
                continue
            levels.pop()
            if not levels:
                break
            parent = os.open("..", _TREE_DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            above = os.fstat(fd)
            if (above.st_dev, above.st_ino) != levels[-1][1]:
                os.close(fd)
                fd = _walk_down_again(top, levels)
    finally:
        os.close(fd)
        os.close(top)


def _walk_down_again(top: int, levels: list[tuple[str, tuple[int, int], list[str]]]) -> int:
    """`visit_tree`'s way back to its deepest level from ``top`` by name, where going up by
    ``..`` led elsewhere; levels that moved away or were replaced are dropped (their
    descriptor: the deepest that is still where it was)."""
    fd = os.dup(top)
    for depth, (name, identity, _left) in enumerate(levels[1:], start=1):
        try:
            child = os.open(name, _TREE_DIR_FLAGS, dir_fd=fd)
        except OSError:
            del levels[depth:]
            return fd
        found = os.fstat(child)
        if (found.st_dev, found.st_ino) != identity:
            os.close(child)
            del levels[depth:]
            return fd
        os.close(fd)
        fd = child
    return fd


def _visit_entries(
    fd: int, relative: str, visit: Callable[[str, os.stat_result], bool]
) -> list[str]:
    """`visit_tree`'s visit of each entry of the directory ``fd``; those to go into."""
    into = []
    try:
        with os.scandir(fd) as entries:
            names = sorted(entry.name for entry in entries)
    except OSError:
        return []
    for name in names:
        try:
            found = os.lstat(name, dir_fd=fd)
        except OSError:
            continue
        if visit(f"{relative}/{name}" if relative else name, found) and stat.S_ISDIR(found.st_mode):
            into.append(name)
    into.reverse()  # popped from the end: gone into in the order listed
    return into


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a short write is followed by the next)."""
    # A regular file takes part of a write where the file size limit or a full disk cuts
    # it; the next write then fails with the errno that says which (EFBIG, ENOSPC).
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the app's files hold JSON: indented, keys sorted, UTF-8, a final newline.

    The bytes of ``json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)``: with an
    indent, the standard library encodes in pure Python, a generator per container and a
    string per token; `_indented` builds the same text with the C string encoder, about
    three times sooner (every create's ``session.json``, every upload's record: see
    bench/README.md, "perf-server59"). Anything it does not know exactly (another type, a
    key that is not a string, nesting deeper than `_INDENT_DEPTH`, as a cycle is) goes to
    ``json.dumps`` itself, which answers as it always did.
    """
    try:
        text = _indented(obj, "\n")
    except _NotPlain:
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    return (text + "\n").encode()


_INDENT_DEPTH: Final = 32
_encode_string = json.encoder.encode_basestring  # ensure_ascii=False's (C) string encoder


class _NotPlain(Exception):
    """A value `_indented` leaves to ``json.dumps``."""


def _indented(value: Any, newline: str) -> str:  # noqa: PLR0911, PLR0912 - one per kind
    """``value`` as ``json.dumps(indent=2, sort_keys=True, ensure_ascii=False)`` writes it
    at the depth ``newline`` indents to; `_NotPlain` for anything but exact dicts with
    string keys, lists, strings, ints, floats, booleans and ``None``."""
    kind = type(value)
    if kind is str:
        return _encode_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        if value != value:  # noqa: PLR0124 - NaN, as json writes it
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if kind is dict:
        if not value:
            return "{}"
        inner = newline + "  "
        if len(inner) > 2 * _INDENT_DEPTH or not all(type(key) is str for key in value):
            raise _NotPlain
        items = [f"{_encode_string(key)}: {_indented(value[key], inner)}" for key in sorted(value)]
        return "{" + inner + ("," + inner).join(items) + newline + "}"
    if kind is list:
        if not value:
            return "[]"
        inner = newline + "  "
        if len(inner) > 2 * _INDENT_DEPTH:
            raise _NotPlain
        return "[" + inner + ("," + inner).join(_indented(v, inner) for v in value) + newline + "]"
    raise _NotPlain


def _resolved(path: str) -> str:
    """``str(Path(path).resolve())``: :func:`os.path.realpath`, and a loop of symbolic links
    refused as pathlib refuses it (``RuntimeError``), without pathlib's objects."""
    resolved = os.path.realpath(path)
    try:
        os.stat(resolved)  # noqa: PTH116 - a string, as realpath gives it
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RuntimeError(f"Symlink loop from {error.filename!r}") from None
    return resolved


def _within(path: str, directory: str) -> bool:
    """``Path(path).is_relative_to(directory)`` for two absolute, normalised paths."""
    if path == directory:
        return True
    return path.startswith(directory if directory.endswith("/") else directory + "/")


def write_new_file(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Create ``path`` (it must not exist) holding ``data``, fsynced; on failure it is removed.

    The one write-and-fsync of the app's atomic writes: the temporary files of
    :meth:`DataRoot.atomic_write_bytes` and the stamp, and the ``session.json`` that
    :mod:`app.store` writes into a new session's staging directory. The caller renames
    the file into place and fsyncs the directory (:func:`fsync_dir`). ``O_EXCL``: it never
    writes into a file that exists (someone else's). ``durable=False`` skips the fsync, for
    a test run's throw-away root only (see :func:`open_root`).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            write_all(fd, data)
            if durable:
                fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def _token() -> str:
    """A temporary file's random part: `secrets.token_hex(8)`, which is `os.urandom(8)`'s hex,
    without importing `secrets` (and hmac, base64) at every pytest run's start, which writes
    nothing here (bench/README.md, "Session 69")."""
    return os.urandom(8).hex()


def _write_temp_file(dir_: Path, data: bytes, *, durable: bool = True) -> Path:
    tmp = dir_ / f"write-{_token()}.part"
    write_new_file(tmp, data, durable=durable)
    return tmp


#: How many times `DataRoot.atomic_write_bytes` writes a file whose temporary name held another
#: file at its rename before it gives up (red team 76 on integrity).
_REWRITES: Final = 3


def _replace(tmp: Path, dest: Path, *, durable: bool = True) -> None:
    # The directory is opened before the rename: a process out of file descriptors then fails
    # while nothing has changed, instead of after the new file is already visible (an error
    # that says "nothing was changed" must be true).
    try:
        fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        try:
            tmp.replace(dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            fsync(fd)
    finally:
        os.close(fd)


def _open_for_append(path: Path) -> int:
    """Open ``path`` to append, after giving it an inode of its own if it shares one.

    audit.jsonl is the one file the app changes in place. A hard link (or a symbolic link)
    would carry those changes into another root's log, so a shared file is first replaced
    by a private copy of what it held: rename changes only this path, never the other one.
    """
    # O_NONBLOCK: a FIFO there must not hang the operation until something reads it; opened
    # read-write it never waits, and it is refused below as not a regular file.
    # O_RDWR, not O_WRONLY: the append reads the last byte (see _append_audit).
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as error:
        if error.errno == errno.ENXIO:
            raise NotRegularFileError(path, stat.S_IFIFO) from None
        if error.errno == errno.EISDIR:  # made a directory under a live server (red team 36)
            raise NotRegularFileError(path, stat.S_IFDIR) from None
        if error.errno != errno.ELOOP:
            raise
        fd = None  # a symbolic link
    if fd is not None:
        found = os.fstat(fd)
        if stat.S_ISREG(found.st_mode) and found.st_nlink == 1:
            return fd
        os.close(fd)
        if not stat.S_ISREG(found.st_mode):
            raise NotRegularFileError(path, found.st_mode)
    # Copied and renamed under the append lock: a line this process appended between the
    # copy and the rename went to the shared file only, lost to this root's log.
    with _AUDIT_APPEND_LOCK:
        content = read_regular(path)
        _replace(_write_temp_file(path.parent / TMP_DIR, content), path)
        return os.open(path, flags, FILE_MODE)


def _append_audit(root: Path, record: Mapping[str, Any]) -> None:
    path = root / AUDIT_FILE
    # From the open on, as the write: a Ctrl-C at the log's open cut the line of a change
    # already made (a repair's `check-repair`, which no later run writes), held only over
    # the write (red team 73 on regress c).
    with _signals_held():
        existed = path.exists()
        # O_APPEND and one write() per line: concurrent appenders (there are none while
        # the lock is held, but a reader's tooling may tail it) never interleave in a line.
        fd = _open_for_append(path)
        try:
            _write_audit_line(fd, record, path)
        finally:
            os.close(fd)
        if not existed:
            fsync_dir(root)


_AUDIT_APPEND_LOCK: Final = threading.RLock()
"""Held from an append's look at the log's size to its fsync, and over the private copy of a
log that shares its inode (`_open_for_append`). Two changes of the server at once each took
the size, and the one whose line did not fit (the file size limit, a full disk, a failed
fsync) cut the log back to it, past the other's line, acknowledged, without a word (red
team 49)."""


def _names_alone(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open at ``fd``, and nothing else does."""
    opened = os.fstat(fd)
    try:
        there = os.lstat(path)
    except FileNotFoundError:
        return False
    return (opened.st_dev, opened.st_ino) == (there.st_dev, there.st_ino) and opened.st_nlink == 1


#: The signals a command turns into an exception (`KeyboardInterrupt`, and the command
#: line's SIGTERM), which would cut a write they land in.
_HELD_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM, held while the block runs and acted on (as they would have been)
    after it: for the audit line of a change already made, which a signal must not cut.

    A Ctrl-C as `app data purge` wrote its one line, at its end, left every session it had
    moved without one, and a second Ctrl-C did so to the line a stopped purge writes for
    what it moved (red team 60). Python runs a signal's handler in the main thread, between
    two of its steps, so only there is a handler swapped (a thread's write is never cut by
    one); a handler installed from C, which cannot be put back, is left as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {sig: signal.getsignal(sig) for sig in _HELD_SIGNALS}
    if any(handler is None for handler in handlers.values()):
        yield
        return
    came: list[int] = []
    swapped: list[signal.Signals] = []
    try:
        for held in handlers:
            signal.signal(held, lambda signum, _frame: came.append(signum))
            swapped.append(held)
    except ValueError:  # a subinterpreter's main thread: its signals are the main one's
        swapped.clear()
    try:
        yield
    finally:
        for held in swapped:
            signal.signal(held, handlers[held])
        for signum in dict.fromkeys(came):
            signal.raise_signal(signum)


def _write_audit_line(fd: int, record: Mapping[str, Any], path: Path) -> None:
    """Append ``record``'s line to the log at ``path``, through ``fd`` (opened on it before
    the change) while ``path`` still names that file alone.

    The log is opened before a change and its line written after (`Prepared`), and a log
    rotated meanwhile (logrotate's default: a rename, then ``compress`` reads the renamed
    copy and removes it), or hard-linked by a snapshot (`cp -al`) and given a private copy
    by another of the server's changes, took the line through the old descriptor into a
    file the root's log no longer is: an `empty-trash` was made and audited nowhere, and
    `check` said "clean" (red team 57). Such a line goes to the file at ``path`` now (made
    again if the rotation left none, given an inode of its own if shared).
    """
    line = (json.dumps(dict(record), sort_keys=True, default=str) + "\n").encode()
    with _AUDIT_APPEND_LOCK, _signals_held():
        if _names_alone(fd, path):
            _append_line(fd, line)
            return
        existed = lexists(path)
        now = _open_for_append(path)
        try:
            _append_line(now, line)
        finally:
            os.close(now)
        if not existed:
            fsync_dir(path.parent)


def _append_line(fd: int, line: bytes) -> None:
    start = os.fstat(fd).st_size
    if start and os.pread(fd, 1, start - 1) != b"\n":
        # A fragment a crash left (a power loss mid-write): glued to it, this line would
        # be lost with it, and `check` would find its trash entry unaudited for ever.
        line = b"\n" + line
    try:
        write_all(fd, line)
        fsync(fd)
    except OSError:
        # A write cut short (the file size limit, a full disk) leaves a fragment: take
        # it back, so that the log holds whole lines only.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def _audit_record(
    profile: str, kind: str, operation: str, target: str | Path, details: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "time": _now_iso(),
        "pid": os.getpid(),
        "profile": profile,
        "kind": kind,
        "argv": list(sys.argv),
        "operation": operation,
        "target": str(target),
        "details": dict(details),
        # The HTTP client a server's change was made for (app.requester): the argv is the
        # server's own.
        **({} if (client := REQUESTER.get()) is None else {"client": client}),
    }


def _audit_line_lost(path: Path, record: Mapping[str, Any], error: OSError) -> None:
    # A line records a change already made, which can no longer be undone: raised, a full
    # disk (or EFBIG, EIO) turned a purge, an empty-trash or a repair that happened into
    # "nothing was changed". The line goes to the log instead; `check` writes again the
    # line of a move into the trash it finds unaudited.
    log.warning(
        "could not append to %s (%s); the line it should hold: %s",
        path,
        error.strerror or error,
        json.dumps(dict(record), sort_keys=True, default=str),
    )


_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})

# Room kept for the line of a change under the file size limit: a line naming one target
# (a 255-byte name, its trash entry, the command line) is under 1 KiB, and each session or
# trash entry a purge or an empty-trash lists adds under 100 bytes. A line that still does
# not fit goes to the server's log (`_audit_line_lost`).
_AUDIT_LINE_ROOM: Final = 1024
_AUDIT_ITEM_ROOM: Final = 100


def _refuse_audit_at_limit(fd: int, path: Path, items: int = 0) -> None:
    """Refuse a change before it is made if its audit line (listing ``items`` sessions or
    entries) may not fit under the process's file size limit (``RLIMIT_FSIZE``): found after
    it, every delete and ``empty-trash`` was made with its line only in the server's log, for
    as long as the log stayed at the limit (red team 46)."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return
    size = os.fstat(fd).st_size
    # The command line and the HTTP client the line names (app.requester: a User-Agent of
    # 200 characters is up to 1,200 bytes of JSON escapes) are counted as they are.
    asked = len(json.dumps(sys.argv)) + len(json.dumps(REQUESTER.get()))
    room = _AUDIT_LINE_ROOM + items * _AUDIT_ITEM_ROOM + asked
    if size + room > limit:
        raise AuditLogAtLimit(path, size, limit)


class Prepared:
    """What a change needs after its commit point, opened before it: directories, the audit log.

    A commit point (a rename, an unlink) needs no file descriptor, but the fsyncs that make
    it durable and the audit line that records it do. Opened after it, a process at its
    descriptor limit (EMFILE: a server's connections count against it too) failed once the
    change was made, and answered "nothing was changed" while the disk said otherwise, with
    no audit line and a stale listing. Opened before it, the limit refuses the change while
    nothing has changed, as :func:`_replace` does for the atomic writes. Get one from
    :meth:`DataRoot.prepare`; close it (``with``) when the change is recorded.
    """

    def __init__(
        self,
        root: DataRoot,
        dirs: tuple[Path, ...],
        *,
        audit: bool,
        items: int = 0,
        frees_space: bool = False,
    ) -> None:
        self._root = root
        self._dirs: dict[Path, int] = {}
        self._audit: int | None = None
        self._audit_new = False
        self._audit_later = False
        try:
            for path in dirs:
                self.open(path)
            if audit:
                root._require_writer("audit")
                log = root.audit_path
                self._audit_new = not log.exists()
                if self._audit_new:
                    self.open(root.path)  # its new entry is synced after the line
                try:
                    self._audit = _open_for_append(log)
                except OSError as error:
                    # A change that frees space (empty-trash) is the way out of a full disk,
                    # which a log to create, or to copy first (a hard link to it, as a backup
                    # snapshot makes), refused it: storage_full, "empty the trash" (red team
                    # 46). Its line is written once its bytes are gone.
                    if not (frees_space and error.errno in _FULL_ERRNOS):
                        raise
                    self._audit_later = True
                else:
                    _refuse_audit_at_limit(self._audit, log, items)
        except BaseException:
            self.close()
            raise

    def open(self, path: Path) -> int:
        """Open one more directory (before the commit point); its descriptor."""
        fd = self._dirs.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._dirs[path] = fd
        return fd

    def fd(self, path: Path) -> int:
        """The descriptor of a directory opened here."""
        return self._dirs[path]

    def sync(self, *paths: Path) -> None:
        """fsync these directories (all opened here), or every one."""
        for path in paths or tuple(self._dirs):
            fsync(self._dirs[path])

    def audit(self, operation: str, target: str | Path, **details: Any) -> bool:
        """Append the change's line through the log opened before it (see DataRoot.audit);
        whether the line was written."""
        root = self._root
        if self._audit_later:  # opened now that the change freed space (see __init__)
            return root.audit(operation, target, **details)
        assert self._audit is not None, "prepared without the audit log"
        record = _audit_record(root.config.profile, root.kind, operation, target, details)
        try:
            _write_audit_line(self._audit, record, root.audit_path)
            if self._audit_new:
                fsync(self._dirs[root.path])
                self._audit_new = False
        except OSError as error:
            _audit_line_lost(root.audit_path, record, error)
            root.note_line_lost(operation, error)
            return False
        return True

    def close(self) -> None:
        for fd in [*self._dirs.values(), *([] if self._audit is None else [self._audit])]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._dirs.clear()
        self._audit = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the profile stamp -------------------------------------------------------------------


#: More than any stamp the app writes (about 300 bytes) or a hand-written one holds.
_MAX_STAMP_BYTES: Final = 64 * 1024

_WRITE_STAMP: Final = (
    'restore the file from a backup, or write {"profile": "<the profile this root belongs '
    'to>"} into it by hand'
)


def _refuse_special_audit_log(root: Path) -> None:
    # Every destructive operation appends to it after its change is made: a FIFO or a
    # directory there would fail that line every time, or hand it to whatever reads the FIFO.
    path = root / AUDIT_FILE
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISREG(mode):
        raise DataRootStateError(
            root,
            str(NotRegularFileError(path, mode)),
            "move it away (the app starts a new audit.jsonl; keep the old one's lines, "
            "they are the record of what was deleted)",
        )


def read_stamp(root: Path) -> dict[str, Any] | None:
    """The profile stamp of ``root`` (``profile``, ``created_at``, ``app_version``), or ``None``.

    Creates nothing. A stamp that is not a JSON object naming a profile is refused
    (:class:`DataRootStateError`).
    """
    path = root / STAMP_FILE
    try:
        # Bounded: a stamp is a few hundred bytes. One grown to a gigabyte (`truncate -s`,
        # a file copied over it by a slip) was read whole at each open and, under a live
        # server, at each write: 13 s and 2.6 GB a request, acknowledged (red team 73).
        raw = read_regular(path, _MAX_STAMP_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotRegularFileError as error:
        raise DataRootStateError(root, str(error), f"move it away, then {_WRITE_STAMP}") from None
    if len(raw) > _MAX_STAMP_BYTES:
        raise DataRootStateError(
            root,
            f"its profile stamp {path} is longer than {_MAX_STAMP_BYTES // 1024} KiB, which "
            "no stamp is (the app writes a few hundred bytes): it was written over or grown "
            "by something else",
            f"move it away (`mv {shell_word(str(path))} <elsewhere>`), then {_WRITE_STAMP}",
        )
    try:
        stamp = json_loads(raw)
    except ValueError as error:
        problem = f"its profile stamp {path} is not valid JSON ({error})"
    else:
        if isinstance(stamp, dict) and isinstance(stamp.get("profile"), str) and stamp["profile"]:
            return stamp
        problem = f"its profile stamp {path} names no profile"
    raise DataRootStateError(
        root,
        problem,
        _WRITE_STAMP,
    )


def _layout_dir(root: Path, name: str) -> Path:
    # A symlink here (even to a directory) would send writes, clearing .tmp/ and emptying
    # the trash to wherever it points: files outside the data root would be deleted.
    path = root / name
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        _refuse_layout_kind(root, name)
    return path


def _refuse_layout_kind(root: Path, name: str, *, links: bool = True) -> None:
    """Refuse ``root/name`` (one of the app's own directories) if it is there as anything but
    a real directory; creates nothing. A reader checks it too: `app sessions list` and `app
    data check` on a root whose ``sessions`` was a file blamed the filesystem ("failed a call
    with ENOTDIR", read `dmesg`), sending the operator the wrong way (red team 53). With
    ``links=False`` a symbolic link is left to the reader: `app data check` reports it with
    the `rm && mv` that puts the directory back (red team 42)."""
    path = root / name
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode) and not links:
        return
    if stat.S_ISLNK(mode):
        # "Move it away and let the app create the directory", said of sessions/ or
        # .trash/ moved to another disk and linked back, served an empty profile, or
        # an empty trash, the deleted data left where nothing names it (red team 42).
        raise DataRootStateError(
            root,
            f"{path} is a symbolic link (to {path.readlink()}); the app's own directories "
            "must be real directories inside the data root, or its writes and clean-ups "
            "could reach outside it",
            link_remedy(path, "remove the link and let the app create the directory"),
        ) from None
    if not stat.S_ISDIR(mode):
        raise DataRootStateError(
            root,
            f"{path} is not a directory; the app's own directories must be real "
            "directories inside the data root",
            "move it away and let the app create the directory",
        ) from None


def _version_key(version: str) -> tuple[int, ...] | None:
    parts = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in parts.group().split(".")) if parts else None


def _refuse_later_layout(root: Path, stamp: Mapping[str, Any]) -> None:
    """Refuse a root a later release laid out in a way this one may not read (red team 38:
    one stamped ``"app_version": "9.0.0"``, with fields this release does not know, was
    opened, served and checked without a word). Readable: a ``layout_version`` of this
    release's or earlier, or, with none, an ``app_version`` not later than this one (or none:
    a stamp written by hand, as the docs say to)."""
    found = stamp.get("layout_version")
    version = str(stamp.get("app_version", "an unknown release"))
    if found is None:
        ours, theirs = _version_key(__version__), _version_key(version)
        if ours is None or theirs is None or theirs <= ours:
            return
        shown = "not recorded"
    elif type(found) is int and found <= LAYOUT_VERSION:
        return
    elif type(found) is int:
        shown = str(found)
    else:
        # `"layout_version": "1"` or `true` (a hand edit, another tool) read as "layout 1",
        # beside "this reads layout 1 and earlier only" (red team 61).
        shown = f"{found!r}, which is not a whole number"
    ours, theirs = _version_key(__version__), _version_key(version)
    # A stamp that names no release (no `app_version`, or one that is no version) was told
    # `pip install 'app>=an unknown release'`, a command no pip runs (red team 61): it is
    # told, as one naming no later release is, that no install helps.
    later = theirs is not None and (ours is None or theirs > ours)
    raise DataRootTooNewError(root, version, shown, __version__, LAYOUT_VERSION, later=later)


def _write_stamp(root: Path, profile: str, *, durable: bool = True, **extra: Any) -> dict[str, Any]:
    stamp = {
        "profile": profile,
        "created_at": _now_iso(),
        "app_version": __version__,
        "layout_version": LAYOUT_VERSION if HASHED_KEY in extra else _UNMARKED_LAYOUT,
        **extra,
    }
    tmp_dir = _layout_dir(root, TMP_DIR)
    data = (json.dumps(stamp, indent=2, sort_keys=True) + "\n").encode()
    tmp = _write_temp_file(tmp_dir, data, durable=durable)
    _replace(tmp, root / STAMP_FILE, durable=durable)
    return stamp


def _write_stamp_audited(
    root: Path, profile: str, record: Mapping[str, Any], *, durable: bool = True, **extra: Any
) -> dict[str, Any]:
    """:func:`_write_stamp`, then its audit line, the log opened (and its room under the
    file size limit checked) before the stamp is written.

    A line that failed after the stamp (the file size limit, a full disk) was raised as the
    command's failure: `app data restamp` said "nothing was changed" (exit 74) of a root it
    had re-stamped, with no line in the log (red team 46). It is now refused before, where
    the limit leaves no room; a line that fails after goes to the log, as a change's does.
    """
    _layout_dir(root, TMP_DIR)  # where a hard-linked log's private copy is made
    path = root / AUDIT_FILE
    existed = path.exists()
    fd = _open_for_append(path)
    try:
        _refuse_audit_at_limit(fd, path)
        stamp = _write_stamp(root, profile, durable=durable, **extra)
        # Dated once the stamp is, and naming it by its time (``details.stamp``): `app data
        # check` takes the line that names the stamp for its (`stamp-unaudited`), whatever
        # the clock did between the two (stepped back, the line was dated before the stamp
        # and taken for an earlier restamp's: red team 63, regress); a line of an earlier
        # release, which names none, by a time at the stamp's or later.
        details = record.get("details")
        if "restamped_from" in extra and isinstance(details, dict) and "created_at" in stamp:
            record = {**record, "details": {**details, "stamp": stamp["created_at"]}}
        record = {**record, "time": _now_iso()}
        try:
            _write_audit_line(fd, record, path)
            if not existed:
                fsync_dir(root)
        except OSError as error:
            _audit_line_lost(path, record, error)
        return stamp
    finally:
        os.close(fd)


def _is_empty_dir(path: str) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _has_data(root: Path, listed: list[os.DirEntry[str]] | None = None) -> bool:
    """Whether `root` holds anything but the app's own files and empty directories; from
    `listed` (its entries, read a moment before under the lock) where given."""
    if listed is None:
        with os.scandir(root) as entries:
            listed = list(entries)
    for entry in listed:
        if entry.name in _NOT_DATA:
            continue
        if (
            entry.name in {SESSIONS_DIR, TRASH_DIR}
            and entry.is_dir(follow_symlinks=False)
            and _is_empty_dir(entry.path)
        ):
            continue
        return True
    return False


def refuse_not_directory(config: Config, root: Path) -> None:
    """Refuse a data root that is there but is no directory (a file, a FIFO, a link to one).

    A backup's archive or a log restored to the root's path, or `cp` of a file onto the
    directory's name: `app serve` and every writer said the filesystem "failed a call with
    ENOTDIR" and sent the operator to `dmesg` and `findmnt` (exit 74), `app doctor` named
    `sessions/` the same way, and `app status` said the root "does not exist yet" (red team
    56). Nothing is wrong with the filesystem: the path names something else.
    """
    try:
        found = root.stat()  # through a link: what the root's path leads to
    except OSError:
        return  # not there (each command says so in its own words), or refused below
    if stat.S_ISDIR(found.st_mode):
        return
    kind = special_kind(found.st_mode) or f"a regular file of {found.st_size} bytes"
    raise DataRootStateError(
        root,
        f"it is {kind}, not a directory, so it holds no data root (no profile stamp, no "
        "sessions) and nothing can be read or written there; nothing was changed",
        f"if the path is mistyped, correct data_root of profile {config.profile!r} (from "
        f"{config.sources.get('data_root', 'the settings')}; `app config --all` shows every "
        f"profile's root); otherwise see what put it there (`file {shell_word(str(root))}`), "
        f"move it aside (`mv {shell_word(str(root))} {shell_word(str(root) + '.moved')}`), "
        "and put the data root's directory back from its backup, or create an empty one "
        "owned by the service's user for a first start",
    )


def _names_in(directory: Path) -> list[str]:
    return os.listdir(directory)  # noqa: PTH208 - names, not paths


def _refuse_foreign_directory(
    config: Config,
    root: Path,
    *,
    reading: bool = False,
    listed: list[os.DirEntry[str]] | None = None,
) -> None:
    """Refuse `root`, unstamped, where it holds what is not the app's; `listed`: its
    entries, where the caller read them (`_check_stamp`, which reads them once for this
    and `_has_data`: two listings of a fresh root a test, issue 11)."""
    names = [entry.name for entry in listed] if listed is not None else _names_in(root)
    foreign = sorted(name for name in names if name not in _LAYOUT)
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
    what = (
        f"the directory is not empty and has no profile stamp ({STAMP_FILE}), and it "
        f"holds files that are not the app's ({shown})"
    )
    if reading:
        # A reader used to take it for an empty root: `app data check` said "clean:
        # consistent" and `app sessions list` listed nothing, for a mistyped data_root
        # naming /usr, which after an incident reads as "production is empty" (red team 36).
        raise DataRootStateError(
            root,
            f"{what}: it is no data root, so there is nothing of the app's to read there",
            f"if the path is mistyped, correct data_root of profile {config.profile!r} "
            f"(from {config.sources.get('data_root', 'the settings')}; `app config --all` "
            "shows every profile's root)",
        )
    from app.config import home_at, home_remedy  # here: only such a refusal pays for it

    whose = home_at(root)
    if whose is not None:
        # Not a mistyped path: the files of the user's programs (red team 51).
        raise DataRootStateError(
            root,
            f"{what}; refusing to adopt it as a data root: it is {whose}, where programs run "
            "as that user keep their files (pip's cache in .cache, a shell's history)",
            f"{home_remedy(whose)}, then move those files out of the directory and start again",
        )
    raise DataRootStateError(
        root,
        f"{what}; refusing to adopt it as a data root",
        f"point data_root of profile {config.profile!r} at a new or empty directory "
        "(`app config` shows where it is set)",
    )


def _refuse_inside_another_root(config: Config, root: Path, here: Path | None = None) -> None:
    """Refuse to write a data root at `root` inside another one (a directory above it with
    a profile stamp or a lock file): `load` refuses one profile's root nested in another's,
    but a configuration changed in code skipped that, and under unittest a testing root at
    production's ``.trash`` or ``.tmp`` wrote its stamp, lock and sessions into
    production's root (red team 59).

    Where a mount on the way shows `root` from another directory (``mount --bind
    <production>/.trash ~/dev-data``, a container's volume of a root's subdirectory), the
    directories above that one count too: the path's own parents are the mount point's, and
    an empty ``.trash/`` or ``.tmp/`` of production's, so named, was adopted as development's
    root, stamped and written into, beside production's live server (red team 62).

    The path is resolved once for the three looks (the walk up, the mount's source, the
    marks): each resolved it again, about six lookups a time for a test's root. `here`: the
    caller's resolving of `root`, made a moment before with nothing made since (an open's
    `_check_mounted`). The mount's source and the marks' look ask one reading of the mount
    table (`one_reading`), read again where it changed.
    """
    with one_reading():
        _refuse_inside_another_root_at(config, root, here)


def _refuse_inside_another_root_at(config: Config, root: Path, here: Path | None) -> None:
    if here is None:
        try:
            here = root.resolve()
        except (OSError, RuntimeError):
            here = None
    outer = None if here is None else _stamped_root_above(here, resolve=False)
    seen = None
    if outer is None and here is not None:
        try:
            source = bound_from(here)
        except (OSError, RuntimeError):
            source = None
        if source is not None and source != here:
            # Not resolved: a directory hidden here is named through an ancestor's
            # /proc/<pid>/root, whose resolving names this namespace's "/" instead.
            outer, seen = _stamped_root_above(source, resolve=False), source
    if outer is None:
        if here is not None:
            _refuse_marked(config, root, here)
        return
    try:
        stamp = read_stamp(outer)
    except DataRootStateError:
        stamp = None
    if stamp is not None:
        whose = f"stamped for profile {stamp['profile']!r} in {outer / STAMP_FILE}"
    elif lexists(outer / LOCK_FILE):
        whose = f"it holds {outer / LOCK_FILE}"
    else:
        whose = _why_laid_out(outer)
    through = (
        ""
        if seen is None
        else f": it is {seen}, seen through a mount on its way (`findmnt -T "
        f"{shell_word(str(root))}` names it)"
    )
    raise DataRootStateError(
        root,
        f"it lies inside data root {outer} ({whose}){through}, and no data root may hold "
        "another; nothing was opened or changed",
        f"point data_root of profile {config.profile!r} at a directory outside {outer} "
        "(`app config` shows where it is set)"
        + ("" if seen is None else ", not at a mount of a directory of it"),
    )


def _stamped_root_above(path: Path, *, resolve: bool = True) -> Path | None:
    """The data root above `path` (a directory up its path, resolved unless `resolve` is
    False, its own excluded, with a profile stamp, a lock file of a root's, or a root's own
    directories: `_laid_out`), if any."""
    try:
        here = path.resolve() if resolve else path
    except (OSError, RuntimeError):
        return None
    try:
        for directory in here.parents:
            # Looked up as text: two paths joined a directory, ten a test's open (issue 11).
            text = os.fspath(directory)
            if (
                lexists(os.path.join(text, STAMP_FILE))  # noqa: PTH118
                or (lexists(os.path.join(text, LOCK_FILE)) and _a_root_s(directory))  # noqa: PTH118
                or _laid_out(text)
            ):
                return directory
    except OSError:
        pass  # out of this process's reach (another user's /proc/<pid>/root): unknown
    return None


def _laid_out(directory: Path | str) -> bool:
    """Whether `directory`, with neither stamp nor lock file, is still a data root by its own
    directories: ``sessions/``, ``.trash/`` and ``.tmp/`` all there (every writer's open makes
    the three), or one of them marked as a root's (`LAYOUT_MARK`).

    A stopped root whose stamp and lock file were both deleted (by hand, a restore that
    skipped dotfiles) was nothing above a root inside it: its ``.trash/``, named by its path
    or through a bind mount, was adopted and written into (red team 63). Paths as text: the
    checks of what pytest writes walk about thirty directories up for each of their paths.

    Unmarked, the three names alone are not enough: another tool's directory (a home
    directory with ``.tmp/``, ``.trash/`` and a ``sessions/`` of its own) is no root, and
    every root made under it, and every pytest run whose cache or report went there, was
    refused as inside a root "whose stamp and lock file are gone" (red team 63 on regress).
    Such a directory counts only where it also holds what the app writes there
    (`_holds_the_app_s`)."""
    found = []
    looked = False
    for name in _MARKED:
        path = os.path.join(directory, name)  # noqa: PTH118
        # Once one name was looked at, `directory` is known to be reached (an earlier name
        # there, or missing: ENOENT), and a name `access` says is not there is missing: no
        # `lstat` raising FileNotFoundError (11 K instructions, against 2 K) for the two
        # names after the first, at each of some 150 directories the checks of what pytest
        # writes walk a run (bench/README.md, "perf-start72"). The first name is the longest,
        # so a path too long for the system fails there, as it did. As this process's
        # effective ids (`name_there`): asked as the real ids, a setuid run's ``.trash/``
        # and ``.tmp/`` were not there, and a root known by a mark on either was missed (red
        # team 72 on regress, round d).
        if looked and not name_there(path):
            continue
        looked = True
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            found.append(name)
    if not found:
        return False
    if any(
        layout_mark(os.path.join(directory, name)) is not None  # noqa: PTH118
        for name in found
    ):
        return True
    return len(found) == len(_MARKED) and _holds_the_app_s(directory)


#: How the app names a session's directory in sessions/ (its id, or the id being made), and
#: a trash entry's in .trash/ (`_A_SESSION_S`, by entry).
#: Compiled when first needed (`LazyPattern`), as the two below: a pytest run's checks reach
#: them only for a root laid out without its marks, or seen through a mount of a directory.
_SESSION_ENTRY: Final = LazyPattern(r"(?:\.new-)?[0-9a-f]{32}")
_TRASH_ENTRY: Final = LazyPattern(
    r"(?:\.emptying-)?[0-9]{8}T[0-9]{12}Z-[0-9a-f]{32}(?:-file-[0-9a-f]+)?"
)
#: How many entries of sessions/ or .trash/ `_holds_the_app_s` reads at most: a root's
#: hold nothing else, so the first answers; another tool's may hold many.
_ENTRIES_READ: Final = 16


def _holds_the_app_s(directory: Path | str) -> bool:
    """Whether `directory`, holding ``sessions/``, ``.trash/`` and ``.tmp/`` unmarked, also
    holds what only the app writes in a root: its audit log, or a directory in ``sessions/``
    or ``.trash/`` named as a session's or a trash entry's. A root laid out by a release
    before the marks and never written into holds neither, and has nothing to lose."""
    if os.path.isfile(os.path.join(directory, AUDIT_FILE)):  # noqa: PTH113, PTH118
        return True
    for name, pattern in ((SESSIONS_DIR, _SESSION_ENTRY), (TRASH_DIR, _TRASH_ENTRY)):
        try:
            with os.scandir(os.path.join(directory, name)) as entries:  # noqa: PTH118
                for read, entry in enumerate(entries):
                    if read >= _ENTRIES_READ:
                        break
                    if pattern.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                        return True
        except OSError:
            continue  # out of reach: not known to be the app's
    return False


def layout_mark(directory: Path | str) -> dict[str, Any] | None:
    """The mark (`LAYOUT_MARK`) on `directory`, if it is one of a data root's own
    directories; None where there is none, or the filesystem keeps no extended attributes."""
    try:
        # Listed first: a directory without the mark (nearly every one the checks of what
        # pytest writes walk up, some 150 a run) answers an empty list, where `getxattr`
        # raised ENODATA, 8 K instructions against 2 K (bench/README.md, "perf-start72").
        # Where the list cannot be read, the mark is read all the same: past 64 KiB of
        # attribute names (another tool's, on tmpfs, XFS or btrfs) the list fails with E2BIG,
        # while the mark is read, and a marked directory was no root's (red team 72 on
        # regress, round d).
        try:
            listed = os.listxattr(directory)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                return None  # nothing there: its `getxattr` would raise the same
            listed = [LAYOUT_MARK]  # not known to be missing (E2BIG, a FUSE list not kept)
        if LAYOUT_MARK not in listed:
            return None
        value = os.getxattr(directory, LAYOUT_MARK)
    except OSError:
        return None  # no mark (ENODATA), none kept (ENOTSUP), or out of reach
    try:
        mark = json.loads(value)
    except ValueError:
        return None
    if not isinstance(mark, dict) or mark.get("dir") not in _MARKED:
        return None
    if not isinstance(mark.get("profile"), str):
        mark["profile"] = "unknown"  # written by hand, or damaged: the directory still is one
    return mark


def a_root_s_own(directory: Path | str) -> str | None:
    """Why `directory` is a data root's though it has no stamp nor lock file: one of a root's
    own directories (`LAYOUT_MARK`), or a root that lost both (`_laid_out`); None where it
    is neither. For the checks of what pytest writes, which look for a root above a path
    by its stamp or its holder (red team 63)."""
    mark = layout_mark(directory)
    if mark is not None:
        return (
            f"it is the {mark['dir']}/ directory of a data root of profile "
            f"{mark['profile']!r} (extended attribute {LAYOUT_MARK})"
        )
    if _laid_out(directory):
        return _why_laid_out(directory)
    return None


def _why_laid_out(directory: Path | str) -> str:
    """What a refusal says of a directory `_laid_out` found: the three directories, or, where
    fewer are there, the one whose mark counted, and the ``setfattr -x`` that frees a copy.
    A copy of a root's ``sessions/`` alone (``cp -a /srv/app/sessions /tmp/``) was said to
    hold all three, and nothing named the mark (red team 63 on regress)."""
    there = [
        name
        for name in _MARKED
        if os.path.isdir(os.path.join(directory, name))  # noqa: PTH112, PTH118
    ]
    if len(there) < len(_MARKED):
        for name in there:
            path = os.path.join(directory, name)  # noqa: PTH118
            if (mark := layout_mark(path)) is not None:
                return (
                    f"its stamp and lock file are gone, but it holds {name}/, one of a data "
                    f"root's own directories, marked as profile {mark['profile']!r}'s "
                    f"(extended attribute {LAYOUT_MARK}); if that directory is a copy that "
                    "belongs to no data root now, remove the mark (`setfattr -x "
                    f"{LAYOUT_MARK} {shell_word(path)}`)"
                )
    return (
        "its stamp and lock file are gone, but it holds a root's own directories, "
        f"{', '.join(name + '/' for name in _MARKED)}"
    )


#: Why a mark may not be written, and the open goes on without it: no user extended
#: attributes there (ENOTSUP, EPERM, EACCES, EROFS), or no room for one: a full filesystem,
#: a quota, or a directory whose attribute space other tools' attributes fill (ENOSPC,
#: EDQUOT, E2BIG). A full filesystem refused every writer's open of a root not marked yet,
#: `app data empty-trash` (which its refusal names to free space) and a server's start among
#: them (red team 63 on regress).
_UNMARKED: Final = frozenset(
    {errno.ENOTSUP, errno.EPERM, errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.E2BIG}
)


def _mark_layout(root: Path, profile: str, *, present: bool = False, fresh: bool = False) -> None:
    """Mark the root's own directories (`LAYOUT_MARK`), where they are not marked so yet;
    with `present`, only those there (a restamp, which makes none: a root restored from a
    copy of some of them, its stamp lost, lacks the others; its next open makes and marks
    them. Red team 63 on regress: the restamp failed there after writing the new stamp).

    With `fresh` (a root this open made: its directories were made with it, and carry no
    mark) each mark is written without reading it first. Reading only spares writing a mark
    that is there already: whatever a directory carried, it carries the wanted mark after
    either way."""
    for name in _MARKED:
        path = root / name
        if present and not path.is_dir():
            continue
        wanted = {"dir": name, "profile": profile}
        if not fresh and layout_mark(path) == wanted:
            continue
        try:
            os.setxattr(path, LAYOUT_MARK, json.dumps(wanted).encode(), follow_symlinks=False)
        except OSError as error:
            if error.errno not in _UNMARKED:
                raise
            # A filesystem without user extended attributes (or one that refuses them), or no
            # room for one: the root's directories go unmarked (until an open finds room);
            # their names and the stamp still mark it.


def _through_a_mount(root: Path, here: Path) -> str:
    """What a refusal says of a bind mount on the way that shows `here` from another directory
    of its filesystem, even one mounted nowhere in sight; "" where none does."""
    try:
        entry = showing(os.fsencode(here), table())
    except OSError:
        return ""
    if entry is None or not entry.root.rstrip(b"/"):
        return ""  # the filesystem's own top: no other directory to name
    inside = entry.root.rstrip(b"/") + os.fsencode(here)[len(entry.point.rstrip(b"/")) :]
    return (
        f", seen through a mount on its way that shows {os.fsdecode(inside)} of "
        f"{os.fsdecode(entry.source)} ({os.fsdecode(entry.fstype)}) there (`findmnt -T "
        f"{shell_word(str(root))}` names it)"
    )


#: A directory of a data root the app does not mark, by its place in its filesystem: a
#: session's ``records/`` or ``blobs/`` (empty once its files are deleted), or one in a trash
#: entry (``.trash/<time>-<id>/session/...``, or one an empty-trash is removing,
#: ``.trash/.emptying-<time>-<id>/...``), named as the app names them
#: (``app.store.trash.TRASH_NAME_RE``, ``EMPTYING_PREFIX``).
_A_SESSION_S: Final = LazyPattern(
    rb"(?:^|/)(?:sessions/(?:\.new-)?[0-9a-f]{32}/(?:records|blobs)"
    rb"|\.trash/(?:\.emptying-)?[0-9]{8}T[0-9]{12}Z-[0-9a-f]{32}(?:-file-[0-9a-f]+)?)(?:/|$)",
    needs=(b"sessions/", b".trash/"),
)
#: A session's own directory by its name alone, which other tools give theirs too (a CI
#: runner's or a notebook server's ``sessions/<uuid>/`` workspace): one only where it holds
#: what a session's does (`_A_SESSION_S_OWN`; red team 63 on regress).
_A_SESSION_DIR: Final = LazyPattern(
    rb"(?:^|/)sessions/(?:\.new-)?[0-9a-f]{32}(?=/|$)", needs=(b"sessions/",)
)
#: What a session's directory holds, any one of which names it a session's (one whose
#: session.json was lost keeps its records/ and blobs/).
_A_SESSION_S_OWN: Final = (b"session.json", b"records", b"blobs")


def shown_from_a_session(here: Path) -> bytes | None:
    """The directory of its filesystem a mount on the way shows `here` from, where that is a
    session's or a trash entry's of a data root by its place (`_A_SESSION_S`), or lies in a
    directory named as a session's that holds a ``session.json``, ``records/`` or
    ``blobs/`` (`_A_SESSION_DIR`); else None."""
    try:
        mounts, _, (points, tops) = _MOUNTS.looked_up()
    except OSError:
        return None
    wanted = os.fsencode(here)
    at = _nearest(wanted, points, tops)
    if at is not None and at < 0:
        at = walk_nearest(wanted, points, tops)
    if at is None:
        return None
    _, point, shown, _ = mounts[at]
    top = shown.rstrip(b"/")
    if not top:
        return None  # the filesystem's top: no directory above to name
    inside = top + wanted[len(point.rstrip(b"/")) :]
    if _A_SESSION_S.search(inside):
        return inside
    for found in _A_SESSION_DIR.finditer(inside):
        if found.end() < len(top):
            continue  # the mount shows a directory in it that no session has: not in sight
        # The directory named as a session's, as this process sees it (at the mount's point
        # or below): a session's holds its session.json, records/ and blobs/. Before red
        # team 63 on regress, a workspace bound from another tool's sessions/<uuid>/ refused
        # every root in it, and every pytest run whose cache or report went there.
        directory = point.rstrip(b"/") + inside[len(top) : found.end()]
        if any(
            os.path.lexists(os.path.join(directory, name))  # noqa: PTH118
            for name in _A_SESSION_S_OWN
        ):
            return inside
    return None


def _refuse_marked(config: Config, root: Path, here: Path) -> None:
    """Refuse `root` (resolved: `here`) where it, or a directory above it on its path, is one
    of another data root's own directories (`LAYOUT_MARK`): a bind mount of that root's
    ``.trash/`` whose filesystem is mounted nowhere this process can see shows nothing above
    it, and a root whose stamp and lock file were deleted is no root by them (red team
    63)."""
    session_s = shown_from_a_session(here)
    if session_s is not None:
        raise DataRootStateError(
            root,
            "it is a directory of a session of another data root, by its place in its "
            f"filesystem (a session's records/ or blobs/, or a trash entry's)"
            f"{_through_a_mount(root, here)}, and no data root may be made in another's; "
            "nothing was opened or changed",
            f"point data_root of profile {config.profile!r} at a directory outside that data "
            "root (`app config` shows where it is set), not at a mount of one of its "
            "directories",
        )
    for directory in (here, *here.parents):
        mark = layout_mark(directory)
        if mark is None:
            continue
        through = _through_a_mount(root, here)
        where = "it is" if directory == here else f"it lies in {directory}, which is"
        raise DataRootStateError(
            root,
            f"{where} the {mark['dir']}/ directory of a data root of profile "
            f"{mark['profile']!r}{through}: the app marks a root's own directories (extended "
            f"attribute {LAYOUT_MARK}), and no data root may be made in another's; nothing "
            "was opened or changed",
            f"point data_root of profile {config.profile!r} at a directory outside that data "
            "root (`app config` shows where it is set), not at a mount of one of its "
            "directories; if the directory is a copy that belongs to no data root now, "
            f"remove the mark (`setfattr -x {LAYOUT_MARK} {shell_word(str(directory))}`)",
        )


def _a_root_s(directory: Path) -> bool:
    """Whether the ``.server.lock`` in `directory`, which has no stamp, is a data root's:
    locked or holding a holder's JSON (`a_root_s_lock_file`), or, left empty by a holder that
    let go, beside the root's own ``sessions/`` and ``.trash/`` directories.

    An empty lock file was passed over as another program's (red team 59 on regress: a pid
    file in a home directory), so a stopped root whose stamp was lost (deleted by hand, a
    restore that skipped it) was no data root to a root inside it: its ``.trash/`` named as
    development's root, by its path or through a bind mount, was stamped and written into
    (red team 62 on regress)."""
    lock = directory / LOCK_FILE
    if a_root_s_lock_file(lock):
        return True
    try:
        return all(
            stat.S_ISDIR(os.lstat(directory / name).st_mode) for name in (SESSIONS_DIR, TRASH_DIR)
        ) and stat.S_ISREG(os.lstat(lock).st_mode)
    except OSError:
        return False


def marked_profile(root: Path) -> str | None:
    """The profile the marks on `root`'s own directories name (`LAYOUT_MARK`), if any."""
    found = _marked_at(root)
    return None if found is None else found[0]


def _marked_at(root: Path) -> tuple[str, Path] | None:
    """The profile the first mark on `root`'s own directories names, and that directory: the
    one a refusal names (a root restored in part may lack ``sessions/``, red team 63 on
    regress)."""
    for name in _MARKED:
        mark = layout_mark(root / name)
        if mark is not None:
            return str(mark["profile"]).lower(), root / name
    return None


def _refuse_stamp_lost(config: Config, root: Path) -> None:
    """Refuse to adopt a root with no stamp whose own directories were marked by another
    profile's writers: its stamp was deleted or lost, and the first writer of any profile
    claimed it, the other profile's sessions with it (red team 63). A root with no marks (a
    filesystem that keeps none, a release before them) is adopted as before."""
    found = _marked_at(root)
    if found is None or found[0] == config.profile:
        return  # none, or this profile's own: the open writes its stamp back
    marked, where = found
    # Quoted for the shell: a mark is a file's attribute, which whoever owns the directory
    # writes, and its profile went unquoted into the commands below (`--from x; rm -rf ~`,
    # red team 63 on regress), as a stamp's did before session 55's quoting.
    word = shell_word(marked)
    raise DataRootStateError(
        root,
        f"it has no profile stamp ({STAMP_FILE} was deleted or lost), but its own "
        f"directories are marked as profile {marked!r}'s (extended attribute {LAYOUT_MARK} "
        f"on {where}, written by every writer that opens a root): it is "
        f"{marked!r}'s data root, and profile {config.profile!r} may not adopt it; nothing "
        "was opened or changed",
        f"if it is {marked!r}'s root, a writer of that profile writes the stamp back (`app "
        f"--profile {word} data check --repair`, or its server's start); if it is to be "
        f"{config.profile!r}'s from now on, hand it over: `app data restamp --profile "
        f"{config.profile} --from {word} --yes-i-mean-it`; otherwise point data_root of "
        f"profile {config.profile!r} elsewhere (`app config` shows where it is set)",
    )


def _came_from(config: Config, stamped: str) -> str:
    from app.config import set_for_another_profile  # here: only a refusal pays for it

    return set_for_another_profile(config, "data_root", stamped)


def _refuse_other_stamp(config: Config, root: Path) -> None:
    """Refuse `root` if its stamp names another profile than `config`'s (as `_check_stamp`
    does), writing nothing: for a root that did not come through `open_root`."""
    stamp = read_stamp(root)
    if stamp is not None and (stamped := str(stamp["profile"]).lower()) != config.profile:
        raise ProfileStampMismatchError(
            root,
            stamped,
            config.profile,
            protected=config.taking_needs_confirmation(stamped),
            came_from=_came_from(config, stamped),
        )


def _check_stamp(
    config: Config,
    root: Path,
    *,
    kind: str,
    write: bool,
    durable: bool = True,
    sandbox: Path | None = None,
) -> dict[str, Any] | None:
    stamp = read_stamp(root)
    if stamp is not None:
        stamped = str(stamp["profile"]).lower()
        if stamped != config.profile:
            raise ProfileStampMismatchError(
                root,
                stamped,
                config.profile,
                protected=config.taking_needs_confirmation(stamped),
                came_from=_came_from(config, stamped),
            )
        _refuse_later_layout(root, stamp)
        return stamp
    if not write:
        if root.is_dir():
            _refuse_foreign_directory(config, root, reading=True)
        return None
    _refuse_stamp_lost(config, root)
    with os.scandir(root) as entries:
        listed = list(entries)
    _refuse_foreign_directory(config, root, listed=listed)
    legacy = _has_data(root, listed)
    # A root made inside a test run's sandbox says so: a later run that reuses the sandbox as
    # its --basetemp empties only the stamped roots that name it, never one a service made
    # (see app.testing.guard._refuse_data_roots_inside).
    made_in = {}
    if sandbox is not None and inside(root, sandbox):
        made_in["sandbox"] = path_as_text(sandbox)
    if legacy:
        # An unstamped root with data predates stamps; adopting it is worth a trace.
        record = _audit_record(config.profile, kind, "stamp", root / STAMP_FILE, {"legacy": True})
        return _write_stamp_audited(root, config.profile, record, durable=durable, **made_in)
    # A new root holds nothing an earlier build wrote: every key is required from the start.
    return _write_stamp(
        root, config.profile, durable=durable, **made_in, **{HASHED_KEY: _now_iso()}
    )


def mark_hashed(root: Path) -> dict[str, Any]:
    """Write `HASHED_KEY` into ``root``'s stamp, the rest of it as it is (the caller,
    `app data check --repair`, holds the root's lock and has hashed every record, session
    and trash manifest that had no key). Returns the stamp written."""
    stamp = read_stamp(root)
    if stamp is None:
        raise DataRootStateError(root, "it has no profile stamp to mark", _WRITE_STAMP)
    # Its layout with it: a build that reads layout 1 only refuses the root from now on.
    stamp = {**stamp, HASHED_KEY: _now_iso(), "layout_version": LAYOUT_VERSION}
    data = (json.dumps(stamp, indent=2, sort_keys=True) + "\n").encode()
    _replace(_write_temp_file(_layout_dir(root, TMP_DIR), data), root / STAMP_FILE)
    return stamp


def raise_layout(root: Path) -> dict[str, Any]:
    """Write this release's `LAYOUT_VERSION` into a marked root's stamp, the rest of it (the
    mark's time too) as it is: the builds between the mark and layout 2 marked roots at
    layout 1, which a build from before the mark opens and writes files without keys into.
    The caller holds the root's lock (`app data check --repair`, a server's start-up).
    Returns the stamp written."""
    stamp = read_stamp(root)
    if stamp is None or HASHED_KEY not in stamp:
        raise DataRootStateError(root, "it has no marked profile stamp to raise", _WRITE_STAMP)
    stamp = {**stamp, "layout_version": LAYOUT_VERSION}
    data = (json.dumps(stamp, indent=2, sort_keys=True) + "\n").encode()
    _replace(_write_temp_file(_layout_dir(root, TMP_DIR), data), root / STAMP_FILE)
    return stamp


# --- opening -----------------------------------------------------------------------------


PARENT_MODE: Final = 0o755


def _on_another_device(root: Path, sandbox: Path) -> bool:
    """Whether `root` lies on another filesystem than the `sandbox` it is in: one a test
    mounted there, whose holders the lock looks for through another device too (a second
    loop device of a live root's disk image, red team 59)."""
    try:
        return os.stat(root).st_dev != os.stat(sandbox).st_dev  # noqa: PTH116 - st_dev
    except OSError:
        return True


def _make_parents(path: Path) -> None:
    """``mkdir -p path``, each directory made with `PARENT_MODE` (which the umask can only
    narrow): never writable by the group or others."""
    missing = []
    while not lexists(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=PARENT_MODE)


def _create_root(root: Path, *, durable: bool = True) -> bool:
    """Make ``root`` if it is not there; True if this call made it."""
    try:
        root.mkdir(mode=DIR_MODE)
    except FileNotFoundError:
        # Parents get the usual permissions, never wider than 0755; only the root itself is
        # private. Made by `mkdir -p` under `umask 000` (a unit's `UMask=0000`, a shell's
        # slip) they were 0777: any user could move the root aside, and the next start made
        # a new, empty one in its place (red team 55).
        _make_parents(root.parent)
        try:
            root.mkdir(mode=DIR_MODE)
        except FileExistsError:
            return False
    except FileExistsError:
        if not root.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, "the data root exists but is not a directory", str(root)
            ) from None
        return False
    # mkdir's mode is filtered by the umask (and a setgid parent adds S_ISGID); the root we
    # created must be exactly 0700. A root that already existed keeps the permissions its
    # owner gave it. Changed only where it is not 0700: a chmod is one more journalled
    # metadata change per new root (every test's root; up to ~0.7 ms on a busy ext4).
    if stat.S_IMODE(root.lstat().st_mode) != DIR_MODE:
        root.chmod(DIR_MODE)
    if durable:
        fsync_dir(root.parent)
    return True


def _clear_tmp(tmp_dir: Path) -> list[str]:
    # Only the lock holder writes in .tmp/, and we hold the lock: a file here whose flock
    # nobody holds was left by a holder that crashed mid-write, and was never visible under
    # its real name. A held one is another process's write in flight: a server whose lock
    # file was deleted by hand may still be writing, and its upload is not ours.
    removed: list[str] = []
    with os.scandir(tmp_dir) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                continue  # the app never creates directories here; leave them for a human
            fd = _lock_file(entry.path)
            if fd is None:
                continue
            try:
                with contextlib.suppress(FileNotFoundError):
                    Path(entry.path).unlink()
                    removed.append(entry.name)
            finally:
                os.close(fd)
    return removed


def _lock_file(path: str, *, shared: bool = False) -> int | None:
    """flock ``path`` without waiting: its descriptor, or ``None`` if someone holds it.

    A file that cannot be opened (a symlink, gone meanwhile) is ``None`` too: not ours.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def tmp_in_flight(tmp_dir: Path) -> tuple[list[str], list[str]]:
    """What ``.tmp/`` holds, for ``app data check``: (left by a crash, in flight now).

    A file whose flock a live process holds is in flight; any other is a leftover.
    Changes nothing (a shared flock is taken for an instant).
    """
    leftovers: list[str] = []
    live: list[str] = []
    try:
        with os.scandir(tmp_dir) as entries:
            names = sorted(e.name for e in entries if not e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return [], []
    for name in names:
        fd = _lock_file(str(tmp_dir / name), shared=True)
        if fd is None:
            live.append(name)
        else:
            os.close(fd)
            leftovers.append(name)
    return leftovers, live


# Linux's PATH_MAX, the final NUL included: a longer path is ENAMETOOLONG, whatever the
# filesystem (the app's own renames and unlinks go by path, not relative to a directory).
_PATH_MAX: Final = 4096
# The longest path the app opens by name inside a root: a file's record in a session in the
# trash (a restore reads the session there before it moves it back), of the longest name.
# Emptying the trash goes deeper (.emptying-<entry>), but rmtree opens relative to each
# directory, as `rm -rf` does.
DEEPEST_INSIDE: Final = (
    len("/.trash/") + len("20261202T084803573233Z-") + 32 + len("/session/records/")
) + MAX_NAME_BYTES


def _refuse_too_deep(config: Config, root: Path) -> None:
    # Past the limit, a file is accepted into a session and its delete, replace or restore
    # then fails for good (its trash entry's path is longer), and `check` calls its bytes an
    # upload never acknowledged: refused when the root is opened instead.
    length = len(os.fsencode(root))
    room = _PATH_MAX - 1 - DEEPEST_INSIDE
    if length > room:
        raise DataRootStateError(
            root,
            f"its path is {length} bytes long, and the deepest path the app makes in it (a "
            f"session in the trash with a file of a {MAX_NAME_BYTES}-byte name) would be "
            f"{length + DEEPEST_INSIDE}, past the system's limit of {_PATH_MAX - 1}: files "
            "could be stored there that could never be deleted or restored",
            f"point data_root of profile {config.profile!r} at a path of at most {room} bytes "
            "(`app config` shows where it is set)",
        )


#: The calling thread's, not the process's: a thread may be in a mount namespace, and under a
#: root directory, of its own (``unshare(CLONE_NEWNS)``, ``chroot`` after
#: ``unshare(CLONE_FS)``), and ``/proc/self`` shows the first thread's (red team 70).
_MOUNTINFO: Final = "/proc/thread-self/mountinfo"


#: Whose mount table `_MountTable` holds: the process, the mount namespace, and the mount
#: and directory of the root directory (`_root_mount`).
_Whose = tuple[int, str, bytes]


def _root_mount() -> bytes:
    """The calling thread's root directory as the mount table sees it: its device, inode
    and mount id (``statx(2)``'s ``stx_mnt_id``), raw.

    The device and inode alone do not tell two mounts of one directory apart: a thread
    that ``chroot``s (after ``unshare(CLONE_FS)``) into a bind mount of ``/`` has a ``/``
    of that very device and inode, but its table names each mount from there, and the
    first thread's, read in its stead, named a bind mount of the root's ``.trash/`` it made
    at a path outside the root: a file's delete was acknowledged across it (EXDEV; red team
    70 on regress). The mount id is ``statx``'s alone (no ``os.statx`` before Python 3.15,
    and ``os.stat`` has none): libc's, through `app.libc` (``_ctypes`` alone: the plugin's
    start reads the table, and importing ``ctypes`` costs it more than the rest); about 0.7
    us more than ``os.stat`` (`bench/README.md`). Where libc has no ``statx``, or the kernel gives
    no mount id (before Linux 5.8), the device and inode as before.
    """
    call = _STATX[0] if _STATX else _statx()
    if call is None:
        top = os.stat("/")  # noqa: PTH116
        return top.st_dev.to_bytes(8, "little") + top.st_ino.to_bytes(8, "little")
    try:
        buffer = _STATX_BUFFER.buffer  # struct statx, the calling thread's
    except AttributeError:
        buffer = _STATX_BUFFER.buffer = libc.buffer(256)
    if call(_AT_FDCWD, b"/", 0, _STATX_INO | _STATX_MNT_ID, buffer) != 0:
        number = libc.get_errno()
        raise OSError(number, f"statx of /: {os.strerror(number)}")
    raw: bytes = buffer.raw
    return raw[136:144] + raw[32:40] + raw[144:152]  # stx_dev_*, stx_ino, stx_mnt_id


_AT_FDCWD: Final = -100
_STATX_INO: Final = 0x100
_STATX_MNT_ID: Final = 0x1000
#: libc's ``statx``, once looked up (None where it has none).
_STATX: list[Any] = []
#: Each thread's buffer for it (a new one per call cost a third of a microsecond more).
_STATX_BUFFER: Final = threading.local()


def _statx() -> Any:
    try:
        call = libc.function("statx")
    except (AttributeError, OSError):
        call = None
    _STATX[:] = [call]
    return call


#: What `_MountTable.looked_up` gives: `with_roots`, `with_uppers`, and the mount points
#: with their `mountinfo.by_point`.
_Reading = tuple[
    tuple[tuple[bytes, bytes, bytes, bytes], ...],
    tuple[tuple[bytes, bytes | None, bytes], ...],
    tuple[tuple[bytes, ...], dict[bytes, int]],
]


class _MountTable:
    """This process's mount table (Linux's mountinfo), read again only when it changed.

    Every open of a data root read /proc/self/mountinfo twice (the mounts inside the root,
    then the root's filesystem type): 0.1 to 0.2 ms with the 21 mounts of this VM, 1.1 to
    1.3 ms with 321 (a host running containers has hundreds; bench/README.md). The kernel
    says when the table changes: the open file polls ``POLLPRI`` after any mount or unmount
    in its namespace (proc(5); tests/test_integrity.py mounts to check it). The file shows
    the mounts as the process that opened it sees them, from its mount namespace and its
    root directory, so it is opened again when the process, the namespace or the root is
    not the same (a fork, ``unshare``, ``chroot``), each the calling thread's: a thread
    may have a namespace and root of its own, and one thread's open file serves another
    while both are the same. No library offers this (psutil reads the
    file at every call); it costs a poll, a ``statx`` (`_root_mount`), a readlink and ``getpid``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: _Whose | None = None
        self._fd = -1
        self._poll: Any = None
        self._mounts: list[tuple[bytes, bytes, bytes | None]] = []
        # What `with_roots` and `with_uppers` return, made once per reading of the table:
        # every check of what pytest writes asks both at each of about a hundred paths.
        self._with_roots: tuple[tuple[bytes, bytes, bytes, bytes], ...] = ()
        self._with_uppers: tuple[tuple[bytes, bytes | None, bytes], ...] = ()
        # The mount points in table order, and `mountinfo.by_point` of them: where a path
        # lies, from a lookup per directory on its way (`mountinfo.nearest`).
        self._points: tuple[bytes, ...] = ()
        self._tops: dict[bytes, int] = {}
        self._generation = 0

    @staticmethod
    def _whose() -> _Whose:
        # Called at every open and before every write: plain os calls, as a Path per call
        # costs as much again. The namespace's link names it (``mnt:[4026531841]``), read
        # in half the time of a stat of it (3 us against 6, through /proc's magic links).
        # This thread's, as `_MOUNTINFO` is: /proc/self/ns/mnt is the first thread's, and a
        # thread that entered a namespace of its own wrote unseen through its mounts.
        try:
            ns = os.readlink("/proc/thread-self/ns/mnt")  # noqa: PTH115
        except OSError:
            # Its namespace unknown (the link's read failed, /proc still mounted: a tracer's
            # injected fault): a key no other call has, so the table is opened and read
            # afresh, never another namespace's; whether it can be read is the table's own
            # read to say (`DataRoot._mount_inside`). Refused here, every write failed as a
            # root "mounted over" where red team 61's fsync failure was the cause to report.
            ns = f"unknown {next(_UNKNOWN_NAMESPACES)}"
        return os.getpid(), ns, _root_mount()

    def mounts(self) -> list[tuple[bytes, bytes, bytes | None]]:
        """Each mount's device (``major:minor``), mount point and filesystem type, parsed
        once per change; OSError where there is no table (no /proc)."""
        key = self._whose()
        with self._lock:
            self._current_locked(key)
            return self._mounts

    def _current_locked(self, key: _Whose) -> None:
        # The table of `key` (the calling thread's), opened again where the last caller's
        # was another's, and read again where it changed. Each reader asks and answers
        # under one hold of the lock: threads in two namespaces each switch the table to
        # theirs, and an answer read after a second hold could be the other's.
        import select

        if key != self._key:
            if self._fd >= 0:
                os.close(self._fd)  # in a forked child, its own copy
            self._key, self._fd = None, -1
            self._fd = os.open(_MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLPRI)
        elif not self._poll.poll(0):
            return
        self._read_locked(key)

    def with_roots(self) -> tuple[tuple[bytes, bytes, bytes, bytes], ...]:
        """Each mount's device, mount point, the directory of its filesystem it shows
        (mountinfo's fourth field: not ``/`` for a bind mount of a directory), and the
        directory that takes its writes where that is another (an overlay's ``upperdir``)."""
        key = self._whose()
        with self._lock:
            self._current_locked(key)
            return self._with_roots

    def with_uppers(self) -> tuple[tuple[bytes, bytes | None, bytes], ...]:
        """Each mount's mount point, filesystem type and an overlay's upper directory
        (``b""`` for any other mount), from one reading of the table."""
        key = self._whose()
        with self._lock:
            self._current_locked(key)
            return self._with_uppers

    def looked_up(self) -> _Reading:
        """`with_roots`, `with_uppers` and their mount points with `mountinfo.by_point` of
        them, from the same reading of the table (the one `one_reading` holds, in its
        block)."""
        if (held := _HELD.get()) is not None:
            return held
        key = self._whose()
        with self._lock:
            self._current_locked(key)
            return self._with_roots, self._with_uppers, (self._points, self._tops)

    def generation(self) -> int:
        """A number that changes whenever the table does: one poll while it has not.

        Made for a check before every write (`DataRoot.ensure_held`). The namespace and
        root directory are compared too, as `mounts` compares them: a process that entered
        a mount namespace of its own after its open (``unshare``, ``setns``) polled the
        table of the one it left, which never changes for what is mounted in the new one,
        and a bind mount of its root's ``.trash/`` made there went unseen, a delete
        acknowledged across it (red team 69); the calling thread's, as a thread may have
        its own (red team 70). OSError where there is no table (no /proc).
        """
        key = self._whose()
        with self._lock:
            self._current_locked(key)
            return self._generation

    def _read_locked(self, key: _Whose) -> None:
        # Read from the start, every time it changed (or is new): a seq file reads again.
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._fd, 65536):
            chunks.append(chunk)
        # `app.mountinfo.parse`, the one parser of a line: a line of another shape is left
        # out.
        lines = b"".join(chunks).splitlines()
        entries = [entry for line in lines if (entry := parse(line)) is not None]
        uppers = [upper_of(entry) for entry in entries]
        self._mounts = [(entry.device, entry.point, entry.fstype) for entry in entries]
        self._with_roots = tuple(
            (entry.device, entry.point, entry.root, upper)
            for entry, upper in zip(entries, uppers, strict=True)
        )
        self._with_uppers = tuple(
            (entry.point, entry.fstype, upper) for entry, upper in zip(entries, uppers, strict=True)
        )
        self._points = tuple(entry.point for entry in entries)
        self._tops = by_point(self._points, entries)
        self._key = key
        self._generation += 1


_MOUNTS: Final = _MountTable()
#: Keys for `_MountTable._whose` where a thread's mount namespace could not be read.
_UNKNOWN_NAMESPACES: Final = itertools.count()


def _table_readable() -> bool:
    """Whether the calling thread reads a mount table (`_MountTable.generation`)."""
    try:
        _MOUNTS.generation()
    except OSError:
        return False
    return True


def _table_unread(error: OSError) -> str:
    """Why a writer whose mount table was read as its root was opened refuses to write
    where it cannot read it now (`DataRoot._mount_inside`), and what resolves it."""
    return (
        f"the mount table ({_MOUNTINFO}), read when it was opened, cannot be read from the "
        f"thread that writes now ({error.strerror}: a chroot with no /proc mounted in it, "
        "/proc unmounted, or its reads refused), so a filesystem mounted inside the root "
        "would go unseen and a rename across it lose data; write from where /proc is "
        "mounted (in a chroot: `mount -t proc proc <chroot>/proc`)"
    )


#: The reading `one_reading` holds in its block (in this thread's context only).
_HELD: contextvars.ContextVar[_Reading | None] = contextvars.ContextVar(
    "app-mounts-held", default=None
)


class one_reading:  # lower case: used as the function it was, `with one_reading():`
    """Within the block, `bound_from`, `served_from` and `shown_from_a_session` look at the
    mount table as it is read (again, where it changed) as the block starts: the checks of
    what pytest writes ask all three at each path, and each asked whether the table had
    changed (two stats, ``getpid`` and a poll), 75 times a check where 25 paths are
    looked at, microseconds apart (`bench/README.md`, "perf-startup65"). A change to the
    table after the first question was missed by the checks at that path all the same.

    A class, not a `contextlib.contextmanager`: its generator's end is a StopIteration
    raised and caught at each of the hundred paths a check looks at (perf-start72)."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        try:
            reading = _MOUNTS.looked_up()
        except OSError:  # no table: each look says so itself
            reading = None
        self._token = _HELD.set(reading)

    def __exit__(self, *_exc: object) -> None:
        _HELD.reset(self._token)


# A fork while another thread reads the table would leave the child's lock held for good.
os.register_at_fork(after_in_child=lambda: setattr(_MOUNTS, "_lock", threading.Lock()))


def mounts_inside(root: Path) -> list[Path]:
    """The mount points strictly inside ``root`` (Linux's mountinfo; none known elsewhere)."""
    try:
        mounts = _MOUNTS.mounts()
    except OSError:
        return []
    prefix = os.fsencode(root).rstrip(b"/") + b"/"
    inside = {Path(os.fsdecode(point)) for _, point, _ in mounts if point.startswith(prefix)}
    return sorted(inside)


def bound_from(path: Path) -> Path | None:
    """`app.mountinfo.shown_from` on this process's mount table, read again only when it
    changed: where a bind mount or an overlay on the way shows ``path`` from. Where that
    mount hides what it shows (production's ``sessions/``, under ``/tmp``, bound over
    ``/tmp``), as the nearest ancestor in another mount namespace sees it, through its
    ``/proc/<pid>/root`` (`app.sandbox.seen_from_outside`)."""
    try:
        mounts, _, lookup = _MOUNTS.looked_up()
    except OSError:
        return None
    source, hidden = shown_and_hidden_from(path, mounts, lookup)
    if source is not None:
        return source
    return seen_from_outside(hidden) if hidden is not None else None


#: Filesystems that keep their files on this machine's own disks or memory. On any other
#: (NFS, SMB, 9p, FUSE: ``fuse.sshfs``, bindfs's ``fuse``) a daemon or another machine
#: serves the files, and may serve any directory, one of this machine's included.
LOCAL_FILESYSTEMS: Final = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "zfs", "bcachefs"}
    | {"tmpfs", "ramfs", "overlay", "vfat", "exfat", "ntfs3", "hfsplus", "nilfs2", "minix"}
)


#: `mountinfo.nearest`'s answers for one reading of the mount table: that reading's
#: `by_point` (a new object at each reading), and the answer for each path. Replaced whole,
#: never changed for another reading: a thread that reads it meanwhile keeps a pair that
#: agrees.
_NEAREST: tuple[Mapping[bytes, int], dict[bytes, int | None]] = ({}, {})
#: How many answers are kept at most (a long run's servers open many roots): then afresh.
_NEAREST_KEPT: Final = 1024


def _nearest(wanted: bytes, points: Sequence[bytes], tops: Mapping[bytes, int]) -> int | None:
    """`mountinfo.nearest` on the table as read now, kept until it is read again: the checks
    of what pytest writes ask `served_from` and `shown_from_a_session` at each of their
    paths, the same thirty paths at each of a run's four checks, while the table stays the
    same (`bench/README.md`, "perf-startup65")."""
    global _NEAREST  # noqa: PLW0603 - replaced whole, see above
    kept = _NEAREST
    if kept[0] is not tops or len(kept[1]) >= _NEAREST_KEPT:
        kept = _NEAREST = (tops, {})
    if wanted not in kept[1]:
        kept[1][wanted] = nearest(wanted, points, tops)
    return kept[1][wanted]


def served_from(path: Path) -> tuple[Path, str] | None:
    """The mount point and type of the filesystem ``path`` (absolute, resolved) lies on,
    where that type is not one of `LOCAL_FILESYSTEMS`; None where it is, or where the mount
    table cannot tell.

    Neither such a filesystem's device and inodes nor the mount table say what it shows:
    bindfs (a FUSE daemon any user may mount) showed a stopped production root, and a live
    server's, in a test's ``tmp_path``, and a test that opted into production purged it
    there, past every check by identity, mount source and lock (FUSE keeps its own locks,
    so the live server's flock was not seen; red team 49).

    An overlay is one of this machine's own, but where it writes is told by its upper
    directory as the mount was given it, which may be a link or a relative path: one whose
    upper directory cannot be told for certain (`upper_in_fact`) is reported too, of type
    ``overlay``, as nothing else says what it shows (red team 50).
    """
    try:
        _, mounts, (points, tops) = _MOUNTS.looked_up()
    except OSError:
        return None
    wanted = os.fsencode(path)
    # The longest mount point on the way: the nearest mount.
    if (at := _nearest(wanted, points, tops)) is not None and at < 0:
        at = walk_nearest(wanted, points, tops)
    found = mounts[at] if at is not None else None
    if found is None or found[1] is None:
        return None
    point, kind = found[0], os.fsdecode(found[1])
    if kind == "overlay" and found[2] and upper_in_fact(point, found[2]) is None:
        return Path(os.fsdecode(point)), kind
    return None if kind in LOCAL_FILESYSTEMS else (Path(os.fsdecode(point)), kind)


def mount_point_at(path: Path) -> bool:
    """Whether a filesystem is mounted at ``path`` itself (Linux's mountinfo; False where
    that cannot be told)."""
    try:
        mounts = _MOUNTS.mounts()
    except OSError:
        return False
    wanted = os.fsencode(path).rstrip(b"/") or b"/"
    return any(point == wanted for _, point, _ in mounts)


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem ``path`` lies on (``ext4``, ``nfs4``, ``fuse.sshfs``), from
    Linux's mountinfo by device number; None where that cannot be told."""
    try:
        device = path.stat().st_dev
        mounts = _MOUNTS.mounts()
    except OSError:
        return None
    wanted = f"{os.major(device)}:{os.minor(device)}".encode()
    for found, _, kind in mounts:
        if found == wanted:
            return os.fsdecode(kind) if kind else None
    return None


def unmount_keeping(mount: Path) -> str:
    """How to take a mount out of a root without losing what it holds.

    "Unmount it" alone, said of a ``.trash/`` on a tmpfs or a ``sessions/`` on a disk of its
    own that held the data, destroyed every deleted version (a tmpfs's files go with it) or
    served an empty profile (a disk's are hidden), no ``empty-trash`` run (red team 42).
    """
    copy = mount.with_name(f"{mount.name}.copy")
    m, c = shell_word(mount), shell_word(copy)
    if not mount.is_dir():
        # A file mounted over a name of the root (a bind mount, a container's volume of one
        # file): `cp -a` would put the mounted file in the place of the root's own, hidden
        # under it, and `rmdir` of a file fails (red team 60).
        return (
            f"a file is mounted over {m}, hiding the root's own file of that name under it: "
            f"unmount it (`umount {m}`, with no server on the root; `findmnt {m}` names where "
            "the mounted file comes from, which keeps it)"
        )
    return (
        "copy what it holds onto the data root's own filesystem before you unmount it (a "
        "tmpfs's files are gone once it is unmounted, a disk's are hidden): with no server "
        f"on the root, `cp -a {m} {c} && umount {m} && rmdir {m} && mv {c} {m}` (`rmdir` "
        "stops it if files lie under the mount point: look at them first)"
    )


def root_mounts(root: Path) -> list[Path]:
    """The mount points inside ``root`` (the root's own directories first checked by device,
    for a mount ``/proc`` does not list)."""
    mounts = mounts_inside(root)
    device = None
    for name in (SESSIONS_DIR, TRASH_DIR, TMP_DIR):
        path = root / name
        with contextlib.suppress(OSError):
            there = path.lstat().st_dev
            if device is None:
                # The root's own, looked up once (it was three times): after its first
                # directory, as it was, so a root gone meanwhile still finds nothing.
                device = root.lstat().st_dev
            if there != device and path not in mounts:
                mounts.append(path)
    return mounts


def _refuse_mounts_inside(config: Config, root: Path) -> None:
    # The app moves data between sessions/, .trash/ and .tmp/ by rename, which the kernel
    # refuses across mount points (EXDEV), even two of one filesystem. With .trash/ on a
    # tmpfs, replaces and deletes were acknowledged with their old bytes left behind, a
    # session's delete was a bare 500, and the repair that finishes the moves failed every
    # server start-up. The root itself may be a mount point; nothing inside it may be.
    mounts = root_mounts(root)
    if mounts:
        shown = ", ".join(str(m) for m in mounts[:3]) + (", ..." if len(mounts) > 3 else "")
        raise DataRootStateError(
            root,
            f"a filesystem is mounted inside it ({shown}); the app moves sessions, files and "
            "trash entries within the root by rename, which cannot cross a mount point "
            "(EXDEV), so deletes and replaces would fail or leave their bytes behind",
            f"{unmount_keeping(mounts[0])}, and keep the whole data root on one "
            f"filesystem; to keep the data elsewhere, point data_root of profile "
            f"{config.profile!r} there (`app config` shows where it is set)",
        )


def _loop_on(root: Path, resolved: Path | None = None) -> str | None:
    """`loop_at` of `root`; None where its links cannot be read (`process_link` names those).

    `resolved`: `root` as ``Path.resolve`` resolved it a moment ago with nothing made since
    (an open's `checked_as`): no loop is on its way, or ``resolve`` had raised
    ``RuntimeError`` (its ``stat`` after ``realpath`` fails with ``ELOOP`` there), and the
    check refused it; its six lookups and ``stat`` are not made again (issue 11)."""
    if resolved is not None:
        return None
    try:
        return loop_at(os.path.realpath(root))
    except OSError:
        return None


def _refuse_unfixed_path(config: Config, root: Path, resolved: Path | None = None) -> None:
    """Refuse a root whose path leads to another directory when the process changes: a
    relative one (its current directory), or one through a link of /proc (its current
    directory, an open descriptor, its root), itself or by a symbolic link on the way.

    ``load`` never makes one (it resolves every root), but a `Config` made by hand can: a
    root that was a link in the sandbox to ``/proc/self/cwd``, opened while the current
    directory was the test's root, passed every check, and a thread that changed directory
    back and forth meanwhile sent a delete's rename into a stopped production root (its
    session moved to its trash; every check between is of the path, which then led there).
    Straight to ``/proc/self/cwd``, it was refused as a root with a filesystem mounted
    inside it (/proc is one), which it is not.
    """
    if not root.is_absolute():
        problem = (
            "the path is relative, so it names a directory under whatever the current "
            "directory of this process is at each write: a chdir (by any thread) sends "
            "the writes that follow into another directory, in the middle of a change"
        )
    elif (link := process_link(root)) is not None:
        problem = (
            f"the path passes through {link}, a link of /proc that names what a process "
            "has at the moment it is followed (its current directory, an open descriptor, "
            "its root), not a directory: a chdir or a dup2 (by any thread) sends the "
            "writes that follow into another directory, in the middle of a change"
        )
    elif (loop := _loop_on(root, resolved)) is not None:
        # "RuntimeError: Symlink loop" from the checks that follow, a traceback from every
        # open of such a root (red team 61 on regress).
        raise DataRootStateError(
            root,
            f"the path passes through {loop}, a symbolic link that leads back to itself "
            "through a loop of links, so it names no directory: nothing can be opened "
            "through it",
            f"point the link at the directory it means (`ls -l {shell_word(loop)}`), or give "
            f"data_root of profile {config.profile!r} as that directory's own absolute path; "
            "`app.config.load` refuses such a root so",
        )
    else:
        return
    try:
        now = f"this one leads to {os.path.realpath(root)} now"
    except OSError:
        # A link of another user's process: this one may not follow it (red team 61); of a
        # process that has ended (ENOENT, red team 61 on regress).
        now = "this one leads nowhere this process may follow"
    raise DataRootStateError(
        root,
        problem,
        f"give data_root of profile {config.profile!r} as the directory's own absolute "
        f"path ({now}); `app.config.load` resolves every root so",
    )


def _command_line(root: Path | None = None) -> str:
    """This process's command as a shell would run it again (``python -m app`` for a
    ``__main__``), for the ``sudo -u`` a refusal names; on `root`, the refused data root,
    given whole as ``APP_DATA_ROOT``.

    With the variables of this process that chose what it opens (the profile, the settings
    directory, an ``APP_<KEY>`` such as ``APP_DATA_ROOT``) before it, through ``env``: sudo
    resets the environment, so ``sudo -u app app data check --repair``, run as the refusal
    wrote it, selected development from the default settings directory and opened another
    profile's root than the one refused (red team 57). A secret is left out (it would be
    shown, and put on a command line every user may read); the guides' environment file,
    which the refusal names next, passes it."""
    from app.config import KEYS, PROFILE_ENV, SETTINGS_DIR_ENV

    argv = list(sys.argv) or ["app"]
    if argv[0].endswith("__main__.py"):
        argv[:1] = [sys.executable, "-m", "app"]
    names = [PROFILE_ENV, SETTINGS_DIR_ENV]
    names += [key.env for key in KEYS.values() if not key.secret and key.name != "database_url"]
    found = {name: os.environ[name] for name in names if name in os.environ}
    if found.get(SETTINGS_DIR_ENV, "").strip():  # relative: to the cwd, which may change
        with contextlib.suppress(RuntimeError):  # `~user` unknown: refused before any open
            found[SETTINGS_DIR_ENV] = str(Path(found[SETTINGS_DIR_ENV]).expanduser().absolute())
    if root is not None:
        # A `~` (in APP_DATA_ROOT or the settings' data_root) is expanded with HOME, and
        # sudo gives the owner's: `APP_DATA_ROOT='~/data'`, passed on as written, named
        # another root than the one refused (red team 71). The refused one, whole.
        found[KEYS["data_root"].env] = str(root)
    chosen = [f"{name}={value}" for name, value in found.items()]
    words = ["env", *chosen, *argv] if chosen else argv
    return " ".join(shell_word(word) for word in words)


def refuse_other_owner(root: Path, wanted: str) -> None:
    """Refuse a writer whose effective user is not the one the app runs as on this root
    (`app_user`: the root's owner, or, for a root owned by root, the owner of what the app
    made in it).

    Everything a writer makes in a root (the audit log, ``.tmp/``, a record, a trash entry,
    the lock file) is its own, mode 0600 or 0700: made by root in the service user's root,
    it cannot be written by the server afterwards, which then refuses every upload and
    delete while ``/health`` says ok (red team 55, `DataRootOwnerError`). A root that is
    not there yet (the writer makes it, and owns it) or cannot be looked at (refused below
    with its own reason) is left to the open.
    """
    try:
        found = root.stat()
    except OSError:
        return
    uid = os.geteuid()
    user = app_user(root, found)
    if user is None:
        # Root's, group-writable, and nothing of the app's in it yet: a volume's mount point
        # (Kubernetes' fsGroup, a shared directory) whose first writer is the service.
        if os.access(root, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
            return
        user = found.st_uid
    if user == uid:
        return
    raise DataRootOwnerError(
        root,
        user,
        login(user),
        uid,
        login(uid),
        wanted,
        _command_line(root),
        owner_group=found.st_gid,
        user_group=os.getegid(),
        by_entries=user != found.st_uid,
        unmapped=unmapped_here(user),
    )


#: The root's own entries, in the order they tell who runs the app (`app_user`): the stamp
#: and the lock file its first writer made, then the rest.
_OWN_ENTRIES: Final = (STAMP_FILE, LOCK_FILE, AUDIT_FILE, SESSIONS_DIR, TRASH_DIR, TMP_DIR)


def app_user(root: Path, found: os.stat_result | None = None) -> int | None:
    """The uid the app runs as on `root` (whose ``stat`` is `found`, if read already).

    The root's owner; but a root owned by root whose service runs as another user is the
    rule where the root is a volume's mount point (Kubernetes' ``fsGroup`` makes it
    ``root:<group>``, mode 2775; a Docker volume's top directory is root's): there the owner
    of the app's own entries, which the first writer made, says who runs it. Taken for
    the owner alone, every command of such a service (``app serve`` included) was refused
    as "another user than root, the user the app runs as" (red team 56). None for such a
    root with nothing of the app's in it yet (its first writer decides).
    """
    if found is None:
        found = root.stat()
    if found.st_uid != 0:
        return found.st_uid
    for name in _OWN_ENTRIES:
        try:
            return (root / name).lstat().st_uid
        except OSError:
            continue
    return None


def login(uid: int) -> str:
    """The password database's name of ``uid``, ``""`` for an id it does not know."""
    import pwd  # here: only a refusal pays for it

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def user_name(uid: int) -> str:
    """``user 'name' (uid N)``, or ``uid N`` for an id the password database does not know."""
    return user_words(login(uid), uid)


def refusal_words(error: OSError, root: Path) -> str:
    """What ``error``, met by a change of the data root ``root``, tells an operator: its
    reason, the path it names, and, where a permission was refused, which of that path and
    its directory is another user's than the root's owner, with the ``chown -R`` that gives
    it back. "Permission denied; resolve that" alone (a directory of root's in a trash
    entry, which the owner's `check --repair` cannot remove) named nothing (red team 56)."""
    words = error.strerror or str(error)
    if error.errno == errno.ENOSPC and out_of_inodes(error.filename):
        return f"{words} ({NO_INODES})"  # "free space" was not what `df -h` said (red team 75)
    if not error.filename or not isinstance(error, PermissionError):
        return words  # a full disk, a failing one: the path is not where the fix lies
    path = Path(os.fsdecode(error.filename))
    words = f"{words}: {path}"
    try:
        owner = app_user(root)
    except OSError:
        return words
    if owner is None:
        return words
    for candidate in (path, path.parent):
        try:
            uid = candidate.lstat().st_uid
        except OSError:
            continue
        if uid != owner:
            whose = "it is" if candidate == path else "its directory is"
            return (
                f"{words}; {whose} owned by {user_name(uid)}, not by "
                f"{user_name(owner)}, {runs_the_app(root, owner, 'the data root')} (a command "
                "run as another user made it): with the server stopped, give it back as root "
                f"(`{chown_back(owner, root)}`)"
            )
    return words


def chown_spec(uid: int, gid: int) -> str:
    """``chown``'s owner for `uid`: ``name:`` (its login group), or ``uid:gid`` for an id the
    password database does not know, where GNU chown refuses ``uid:`` ("invalid spec")."""
    name = login(uid)
    return f"{name}:" if name else f"{uid}:{gid}"


def chown_back(uid: int, root: Path) -> str:
    """The command that gives every file of ``root`` back to ``uid`` (with the root's group
    where ``uid`` has no name here)."""
    try:
        gid = root.stat().st_gid
    except OSError:
        gid = uid
    return f"chown -R {chown_spec(uid, gid)} {shell_word(str(root))}"


#: The root's own files and directories, which every writer needs to be the owner's
#: (`refuse_foreign_entries`), and `app data check` run as another user names (red team 56).
ROOT_ENTRIES: Final = (LOCK_FILE, STAMP_FILE, AUDIT_FILE, SESSIONS_DIR, TRASH_DIR, TMP_DIR)


def foreign_root_entries(root: Path, owner: int) -> list[tuple[str, int]]:
    """The root's own entries (`ROOT_ENTRIES`) that are not ``owner``'s, with their owner."""
    foreign = []
    for name in ROOT_ENTRIES:
        try:
            found = (root / name).lstat()
        except OSError:
            continue
        if found.st_uid != owner:
            foreign.append((name, found.st_uid))
    return foreign


def refuse_foreign_entries(root: Path) -> None:
    """Refuse a root whose own files and directories are not all its owner's.

    What a command run as root left in the service user's root before `refuse_other_owner`
    (``.tmp/``, ``audit.jsonl``, mode 0700 and 0600) kept the server from writing them: it
    started, ``/health`` said ok, and every upload and delete was a 503 (red team 55). Only
    the root's own entries are looked at (a few ``lstat``): a file of a session so made is
    found by ``app data check``, as ``wrong-owner`` run as root, as ``permission-denied``
    run as the server's user.
    """
    try:
        owner = app_user(root)
    except OSError:
        return
    if owner is None:
        return  # root's, with nothing of the app's in it
    foreign = [
        f"{name} (owned by {user_name(uid)})" for name, uid in foreign_root_entries(root, owner)
    ]
    if foreign:
        raise DataRootStateError(
            root,
            f"{', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not owned by "
            f"{user_name(owner)}, {runs_the_app(root, owner)}: a command run as "
            "another user (`sudo app ...`) made them, and the server could not write them, "
            "refusing every upload and delete while /health says ok. Nothing was changed",
            f"with the server stopped, give them back as root (`{chown_back(owner, root)}`), "
            "then start it again",
        )


def runs_the_app(root: Path, owner: int, named: str = "the root") -> str:
    """How a refusal names `owner` (`app_user`): the root's owner, or the owner of the app's
    files in a root owned by root (a volume's mount point)."""
    with contextlib.suppress(OSError):
        if root.stat().st_uid != owner:
            return f"who runs the app ({named} itself is root's, as a volume's mount point is)"
    return f"who owns {named} and runs the app"


def _local_root(config: Config, wanted: str) -> Path:
    # A profile on PostgreSQL and object storage has no data root: refused by name, rather
    # than failing on None somewhere below.
    return config.data_root if config.data_root is not None else config.local_root(wanted)


def open_root(
    config: Config,
    *,
    kind: str = "maintenance",
    write: bool = True,
    port: int | None = None,
    wanted: str | None = None,
    timeout: float = 1.0,
) -> DataRoot:
    """Open the configured profile's data root, as a writer (locked) or a reader.

    Args:
        config: the resolved configuration; its ``profile`` and ``data_root`` are used.
        kind: the holder kind published in the lock: ``"server"``, ``"tests"`` or
            ``"maintenance"``.
        write: take the lock and create what is missing; ``False`` opens read-only,
            creating nothing and taking no lock.
        port: a server's port, if already bound (or publish it later with
            ``root.lock.update(port=...)``).
        wanted: what the caller is doing, for the refusal message (``"start the server"``).
        timeout: seconds to retry a contended lock (see :meth:`RootLock.acquire`).

    Returns:
        An open :class:`DataRoot`; close it (or use ``with``) to release the lock.

    Inside a test run (the process, or one of its ancestors, is a pytest run of the app's
    plugin) the root lies in the run's sandbox, which pytest throws away: creating it,
    stamping it, publishing and removing the lock's holder, and the ``syncfs`` of what an
    earlier holder left, skip their syncs there (five journal commits, most of what a fresh
    test root cost on ext4). Elsewhere every writer's open ends with that ``syncfs``
    (see :func:`syncfs`), before the stale ``.tmp/`` files are cleared. Every write of the
    store on that root stays as durable as anywhere else, and a root outside a test run,
    or in one that only the environment (``PYTEST_APP_SANDBOX``) names, is always synced.
    """
    root = _local_root(config, wanted or f"open a data root as a {kind} process")
    check_given_profile(config.profile, f"data root {root}", "open")
    run = current_run()
    # Before anything touches the filesystem, so that even mkdir never happens outside.
    with checked(root, "open data root", run):
        return _open_checked(config, run, kind, write, port, wanted, timeout)


def _open_checked(
    config: Config,
    run: Run | None,
    kind: str,
    write: bool,
    port: int | None,
    wanted: str | None,
    timeout: float,
) -> DataRoot:
    root = _local_root(config, wanted or f"open a data root as a {kind} process")
    # The path as `open_root`'s check resolved it a moment ago (in a run), nothing made
    # since: the look for a loop of links and at the mounts on its way take that resolving,
    # not two more of their own (issue 11). After the lock it is all resolved and checked
    # again (`_refuse_swapped_while_opening`).
    known = checked_as(root)
    _refuse_unfixed_path(config, root, known)
    _refuse_too_deep(config, root)
    # Before the lock: taken through a mount that shows another root (a FUSE daemon keeps
    # its own locks), it published this process in that root's lock file, and cleared it
    # again as the stamp was refused, under its live server (red team 49).
    if known is not None:
        here = _check_mounted(known, "open data root", run, resolved=True)
    else:
        here = _check_mounted(root, "open data root", run)
    refuse_not_directory(config, root)
    # A power loss ends the test run with it: nothing will open its sandbox again. Only a
    # run found in the process tree counts; the variable alone could be set by anyone.
    durable = run is None or run.pid is None
    if not write:
        stamp = _check_stamp(config, root, kind=kind, write=False)
        _refuse_special_audit_log(root)
        for name in (SESSIONS_DIR, TRASH_DIR, TMP_DIR):
            _refuse_layout_kind(root, name, links=False)
        return DataRoot(config, kind=kind, lock=None, stamp=stamp)

    # Before anything is made in it: a root-run command left root's files in the service
    # user's root, which the server then could not write (red team 55).
    # Nothing was made since `_check_mounted` resolved the path: its resolving is the look's.
    _refuse_inside_another_root(config, root, here)
    refuse_other_owner(root, wanted or f"open the data root as a {kind} process")
    refuse_foreign_entries(root)
    if root.is_dir() and not (root / STAMP_FILE).exists():
        # Checked again under the lock; this early look only spares a directory that is
        # not ours even the lock file.
        _refuse_stamp_lost(config, root)
        _refuse_foreign_directory(config, root)
    created = _create_root(root, durable=durable)
    # A root of a run found in the process tree lies in the run's sandbox, which pytest made
    # for the run alone (mode 0700): its flock is taken as the run's own root's is.
    lock = RootLock(
        root,
        kind=kind,
        profile=config.profile,
        port=port,
        durable=durable,
        own_sandbox=not durable,
        on_a_mount=not durable and run is not None and _on_another_device(root, run.sandbox),
    )
    lock.acquire(wanted or f"open the data root as a {kind} process", timeout=timeout)
    try:
        sandbox = run.sandbox if run is not None else None
        stamp = _check_stamp(config, root, kind=kind, write=True, durable=durable, sandbox=sandbox)
        _refuse_special_audit_log(root)
        for name in (SESSIONS_DIR, TRASH_DIR, TMP_DIR):
            _layout_dir(root, name)
        _mark_layout(root, config.profile, fresh=created)
        _refuse_mounts_inside(config, root)
        if durable:
            # The directories just made are in the root only once it is synced, and what a
            # holder that died left unsynced must be durable before anything builds on it
            # (see syncfs): a create and an upload acknowledged on a new root were lost.
            syncfs(root)
        opened = DataRoot(config, kind=kind, lock=lock, stamp=stamp, created=created)
        _refuse_swapped_while_opening(opened, lock, run)
        if removed := _clear_tmp(opened.tmp_dir):
            opened.audit("clear-tmp", opened.tmp_dir, removed=removed)
    except BaseException:
        lock.release()
        raise
    return opened


def _refuse_swapped_while_opening(opened: DataRoot, lock: RootLock, run: Run | None) -> None:
    # The path was checked before the lock was taken, and a directory on it can be replaced
    # in between (by a link to another root, in a race a test can time with an audit hook).
    # Checked again once the identities that every later write compares with are taken:
    # the path must still be the sandbox's, and the lock the file the path leads to now.
    checked_as = check_root(opened.path, "open data root", run, again=True)
    # Resolved once for the sandbox's check, the mounts' and the lock's (`check_root`'s
    # resolving, made a moment ago; outside a run, here): the lock file is looked up through
    # the path as it is now either way (a directory replaced on it since is followed).
    resolved = checked_as if checked_as is not None else opened.path.resolve()
    _check_mounted(resolved, "open data root", run, resolved=True)
    if _lstat_identity(resolved / LOCK_FILE) != lock.identity:
        raise DataRootChangedError(
            opened.path,
            f"{LOCK_FILE} is not the file it locked: a directory on the path was replaced "
            "while the root was being opened",
        )


def _check_mounted(
    path: Path, what: str, run: Run | None = None, *, resolved: bool = False
) -> Path:
    """`check_same_filesystem` (a protected root's filesystem mounted again through another
    device), `check_shown_from` where a mount on the way shows `path` from elsewhere, and
    `check_served` where `path` lies on a filesystem that is not one of this machine's own
    (`served_from`). With `resolved`, `path` is the caller's resolving of it, just made.
    Returns `path` resolved, as it was checked.

    `bound_from` and `served_from` look at one reading of the mount table (`one_reading`):
    each asked whether it had changed (two stats, ``getpid`` and a poll), microseconds
    apart, at every open twice (issue 11). Each call reads it again where it changed."""
    here = path if resolved else path.resolve()
    check_same_filesystem(here, what, run)
    with one_reading():
        if (source := bound_from(here)) is not None and source != here:
            check_shown_from(here, source, what, run)
        if (served := served_from(here)) is not None:
            check_served(here, *served, what, run)
    return here


def check_opens(config: Config) -> dict[str, Any] | None:
    """Refuse what every command that opens ``config``'s data root would refuse, read-only.

    For ``app doctor``: it said "ok" of a root stamped with another profile (a backup
    restored into the wrong root), of a stamp that is not JSON, of a lock file that is a
    directory, while every start and command was refused (red team 53). Takes no lock and
    creates nothing; a root that does not exist yet is not checked (the first start makes it).

    Returns:
        The root's stamp, ``None`` if it has none yet.
    """
    root = _local_root(config, "check the data root")
    if not lexists(root):
        return None
    with open_root(config, write=False, wanted="check the data root") as opened:
        stamp = opened.stamp
    refuse_foreign_entries(root)
    for name in (SESSIONS_DIR, TRASH_DIR, TMP_DIR):
        # A link too, which a reader leaves to `app data check` but every writer refuses.
        _refuse_layout_kind(root, name)
    # What a writer's open refuses further on, each found by a look (red team 56: doctor
    # said "ok" of a lock file with a second name, the backups guide's `cp -al` copy, of one
    # made a symbolic link, and of a filesystem mounted inside the root, all of which every
    # start refused).
    _refuse_mounts_inside(config, root)
    # And of a root inside another one, by its path or through a bind mount of a directory of
    # it, which every writer refuses before it makes anything (red team 62).
    _refuse_inside_another_root(config, root)
    lock_file = root / LOCK_FILE
    try:
        found = lock_file.lstat()
    except FileNotFoundError:
        return stamp
    if stat.S_ISLNK(found.st_mode):
        raise LockFileAliasedError(lock_file, "is a symbolic link")
    if (kind := special_kind(found.st_mode)) is not None:
        raise LockFileKindError(lock_file, kind)
    if found.st_nlink > 1:
        # Of a copy made with links while its root lives: "remove each of them but <this
        # copy's>" told to delete the live root's lock file, which stops its server (red
        # team 73 on regress). Its holder is looked at, as a writer's open does.
        if (seen := probe(root)).held:
            refuse_shared_with_another_root(root, lock_file, seen.holder)
        raise LockFileAliasedError(
            lock_file, hard_links_said(lock_file, found.st_nlink), hard_links_fix(lock_file)
        )
    return stamp


def restamp(
    config: Config,
    from_profile: str,
    *,
    timeout: float = 1.0,
    confirm: Callable[[str], None] | None = None,
    logged: Callable[[Path, Mapping[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Re-stamp the root of ``config.profile`` that is stamped ``from_profile``.

    This is ``app data restamp --profile P --from Q``: the explicit, audited way to hand a
    data root to another profile. It takes the lock for the whole operation.

    Args:
        config: the configuration of the profile that should own the root from now on.
        from_profile: the profile the root must currently be stamped with.
        timeout: seconds to retry a contended lock.
        confirm: called with the profile the root is stamped with, once the stamp is read
            and found to be ``from_profile``'s, before anything is written; it raises to
            refuse (``app data restamp`` asks for ``--yes-i-mean-it`` there). Asked before
            the stamp was read, a mistyped ``--from prodution`` was told to confirm a
            hand-over from a profile the root was not stamped with, and the command, re-run
            with the confirmation as told, met another refusal (red team 61).
        logged: whether the root's audit log holds the ``restamp`` line of a stamp
            (`app.check.restamp_logged`, which `app.storage.restamp` passes): a root stamped
            for ``config.profile`` already gets the line there where it has none.

    Returns:
        The new stamp, with ``changed``: ``False`` when the root was stamped for
        ``config.profile`` already (a repeated command), and then ``finished``: what an
        earlier run, stopped after its stamp, had left undone and this one did (its audit
        line, the marks on the root's directories, what a write that stopped left in
        ``.tmp/``), empty where nothing was changed; a changed root has ``cleared``, the
        files of ``.tmp/`` it removed, in words, where there were any.
    """
    root = _local_root(config, "re-stamp a data root")
    check_root(root, "re-stamp data root")
    # A root handed away from another profile than testing, under unittest or a pytest
    # without the app's plugin: there a configuration changed in code to name testing and
    # production's root re-stamped it for testing, and purged it (red team 59).
    check_given_profile(
        from_profile.lower(),
        f"data root {root}",
        "re-stamp",
        made=f"to hand it to profile {config.profile!r}",
    )
    _check_mounted(root, "re-stamp data root")
    _refuse_unfixed_path(config, root)
    from_profile = from_profile.lower()
    refuse_not_directory(config, root)
    if not root.is_dir():
        raise DataRootStateError(
            root,
            "the directory does not exist, so there is no stamp to change",
            f"check data_root of profile {config.profile!r} (`app config` shows where it is set)",
        )
    refuse_other_owner(root, "re-stamp it")
    refuse_foreign_entries(root)
    with RootLock(root, kind="maintenance", profile=config.profile).acquire(
        f"re-stamp data root {root} from {from_profile!r} to {config.profile!r}", timeout=timeout
    ):
        stamp = read_stamp(root)
        if stamp is None and (marked := marked_profile(root)) not in {None, config.profile}:
            # A stamp lost from a root whose own directories name its profile: opening it
            # for another profile is refused (`_refuse_stamp_lost`); this hands it over.
            stamp = {"profile": marked}
        if stamp is None:
            raise DataRootStateError(
                root,
                "it has no profile stamp to change",
                f"opening it (any `app` command on profile {config.profile!r}, such as "
                f"`app sessions list --profile {config.profile}`) stamps it",
            )
        # Before anything is written: a new stamp would record this release's layout.
        _refuse_later_layout(root, stamp)
        stamped = str(stamp["profile"]).lower()
        if stamped == config.profile:
            # A repeated command, or one after a run stopped between its stamp and its line
            # or its marks (killed, a full disk), which said "nothing was changed" of a
            # hand-over logged nowhere and left the directories marked for the profile the
            # root was taken from (red team 74): finished now, as the remote backend's is.
            finished, unfinished = _finish_restamp(root, stamp, config.profile, logged)
            if cleared := _clear_restamp_tmp(root, config.profile):
                finished.append(f"the removal of {cleared}")
            return {**stamp, "changed": False, "finished": finished, "unfinished": unfinished}
        if stamped != from_profile:
            # Names the stamp actually found, so the message gives the right --from.
            raise ProfileStampMismatchError(
                root, stamped, config.profile, protected=config.taking_needs_confirmation(stamped)
            )
        if confirm is not None:
            confirm(stamped)
        # Where the root was made (a test run's sandbox) does not change with its profile.
        made_in = {"sandbox": stamp["sandbox"]} if "sandbox" in stamp else {}
        if HASHED_KEY in stamp:  # what the root holds is as hashed under any profile
            made_in[HASHED_KEY] = stamp[HASHED_KEY]
        record = _audit_record(
            config.profile,
            "maintenance",
            "restamp",
            root / STAMP_FILE,
            {"from": stamped, "to": config.profile},
        )
        new = _write_stamp_audited(root, config.profile, record, restamped_from=stamped, **made_in)
        if marked_profile(root) is not None:
            _mark_layout(root, config.profile, present=True)
        if cleared := _clear_restamp_tmp(root, config.profile):
            new = {**new, "cleared": cleared}
        return {**new, "changed": True}


def _clear_restamp_tmp(root: Path, profile: str) -> str | None:
    """``.tmp/`` of ``root`` cleared under the restamp's lock, as a writer's open clears it
    (audited, ``clear-tmp``); what it removed, in words, or ``None``.

    A restamp killed while it wrote its stamp leaves ``.tmp/write-*.part``: its rerun
    re-stamped the root and said nothing of it, and `app data check` then reported it
    (``tmp-leftover``) until the next writer opened the root (red team 74 on regress)."""
    try:
        removed = _clear_tmp(root / TMP_DIR)
    except FileNotFoundError:
        return None  # no .tmp/ yet: nothing was ever written there
    if not removed:
        return None
    details = {"removed": removed}
    record = _audit_record(profile, "maintenance", "clear-tmp", root / TMP_DIR, details)
    try:
        _append_audit(root, record)
    except OSError as error:
        _audit_line_lost(root / AUDIT_FILE, record, error)
    return (
        f"{len(removed)} file(s) in {TMP_DIR}/ that a write which stopped left "
        f"({', '.join(sorted(removed))}; a clear-tmp line in the audit log names them)"
    )


def _finish_restamp(
    root: Path,
    stamp: Mapping[str, Any],
    profile: str,
    logged: Callable[[Path, Mapping[str, Any]], bool] | None,
) -> tuple[list[str], list[str]]:
    """What a restamp of ``root`` to ``profile`` stopped after its stamp left undone, done
    now under the restamp's lock: its audit line (as `app data check --repair` writes it,
    ``recovered``) and its directories' marks. Returns what it did and what it could not
    do, in words."""
    finished: list[str] = []
    unfinished: list[str] = []
    source = stamp.get("restamped_from")
    if logged is not None and isinstance(source, str) and not logged(root, stamp):
        details = {"from": source, "to": profile, "stamp": stamp.get("created_at")}
        record = _audit_record(
            profile, "maintenance", "restamp", root / STAMP_FILE, {**details, "recovered": True}
        )
        try:
            _append_audit(root, record)
            finished.append("its restamp line in the audit log")
        except OSError as error:
            # Said "nothing was changed" under the warning that the line was not written,
            # the hand-over still logged nowhere (red team 74 on regress).
            _audit_line_lost(root / AUDIT_FILE, record, error)
            unfinished.append(
                f"its restamp line, which the audit log refused ({error.strerror or error}): "
                "the line is in this command's log, above, and `app data check --repair` "
                "writes it once that is resolved"
            )
    stale = [
        name
        for name in _MARKED
        if (mark := layout_mark(root / name)) is not None and mark.get("profile") != profile
    ]
    if stale:
        _mark_layout(root, profile, present=True)
        finished.append(f"the mark of profile {profile!r} on {', '.join(stale)}")
    return finished, unfinished


# --- the open root -----------------------------------------------------------------------


def _lstat_identity(path: Path | str) -> tuple[int, int] | None:
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _mounted_over(path: Path) -> Path | None:
    """The deepest mount point of this thread's mount table at `path` or above it (the one a
    mount over a live root or its parent made), ``None`` where the table cannot be read."""
    try:
        entries = table()
    except OSError:
        return None
    wanted = os.fsencode(path)
    points = [
        entry.point
        for entry in entries
        if entry.point == wanted or wanted.startswith(entry.point.rstrip(b"/") + b"/")
    ]
    return Path(os.fsdecode(max(points, key=len))) if points else None


def _unmounted_said(
    root: Path, inside: Path, *, gone: bool, through: Path | None, bound: Path = Path("/")
) -> str:
    """How a root whose filesystem was unmounted under its writer (``umount -l``) is said:
    `inside` is where the root is within the mount unmounted, and `bound` the directory of
    its filesystem that mount showed (``/``, or a bind's directory). It was "moved, renamed
    or deleted ... Put the directory back": one looked for a directory nobody had moved (red
    team 73 on regress). A bind of a directory (``mount --bind /mnt/disk/sub /srv/app``) was
    said "at /data of it" (the bind's path, not the filesystem's) and "mount that filesystem
    at /srv/app again", which shows its top there, not the directory (left open by round e;
    leftovers74)."""
    text, within = str(root), str(inside)
    point: Path | None = root
    if within != "/":
        point = Path(text[: -len(within)] or "/") if text.endswith(within) else None
    at = f" from {point}" if point is not None else ""
    now = "nothing is at its path now" if gone else "its path names another directory now"
    whole = bound == Path("/")
    of_it = str(inside if whole else bound / inside.relative_to("/"))
    shown = "" if whole else f" (the mount unmounted showed its directory {bound})"
    again = (
        f"mount that filesystem at {point} again (`findmnt {shell_word(str(point))}` says "
        "what is mounted there now)"
        if point is not None
        else "mount that filesystem again where it was"
    )
    if not whole:
        again = (
            # The directory quoted as the point is: `<where ...>/app data` was two words, and
            # the command, pasted, bound /mnt/disk/app (red team 74 on regress).
            f"bind its directory {bound} at {point} again (`mount --bind <where the filesystem "
            f"is mounted>{shell_word(str(bound))} {shell_word(str(point))}`; `findmnt "
            f"{shell_word(str(point))}` says what is mounted there now)"
            if point is not None
            else f"bind its directory {bound} again where it was"
        )
    if through is not None and point is not None:
        # Another bind of it stays (red team 73 on regress, round e): the exact command.
        still = (
            f"it is still mounted at {through} too"
            if whole
            else f"its directory {bound} is still reached at {through}"
        )
        again = (
            f"{still}, where the directory is {through / inside.relative_to('/')}: `mount "
            f"--bind {shell_word(str(through))} {shell_word(str(point))}` puts it back at its "
            "path"
        )
    return (
        f"the filesystem that holds it was unmounted{at} since it was opened (`umount -l`, or "
        f"its device went away), so {now}: this process still has the directory open on the "
        f"detached filesystem, at {of_it} of it{shown}; {again}"
    )


def _present_identity(path: Path | str) -> tuple[int, int] | None:
    """`path`'s device and inode, ``None`` if nothing is there; raises if it cannot be looked
    at (EIO, ESTALE, ENOTCONN, EACCES). A look that failed once made every write say the
    root "was replaced or moved since it was opened", to be put back (red team 39)."""
    try:
        found = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found.st_dev, found.st_ino


def _how_changed(where: Path | str, opened: tuple[int, int] | None) -> str | None:
    """How the directory at `where` differs from the one opened (its identity `opened`), as
    a phrase, or ``None`` if it is the same. A look that fails is said as such, never as a
    directory moved: nobody may have touched it (red team 39)."""
    try:
        found = os.lstat(where)
    except PermissionError:
        return "became unreachable to the server (permission denied)"
    except (FileNotFoundError, NotADirectoryError):
        return "was moved, replaced or deleted"
    except OSError as error:
        return f"could not be looked at ({error.strerror or error})"
    if (found.st_dev, found.st_ino) != opened:
        return "was moved, replaced or deleted"
    return None


def _layout_identities(root: Path) -> dict[str, tuple[int, int] | None]:
    return {name: _lstat_identity(root / name) for name in ("", SESSIONS_DIR, TRASH_DIR, TMP_DIR)}


class DataRoot:
    """An open data root. A writer holds its lock until :meth:`close`.

    Obtain one with :func:`open_root`, never by constructing it directly.

    Attributes:
        path: the data root (absolute).
        config: the configuration it was opened with.
        kind: the holder kind (``"server"``, ``"tests"``, ``"maintenance"``).
        lock: the held :class:`RootLock` of a writer; ``None`` for a reader.
        stamp: the profile stamp read or written when opening (``None`` for a reader of an
            unstamped root).
        store_state: what every :class:`app.store.Store` on this root shares (its session
            locks, listing index and record cache), made with the root and gone with it.
    """

    def __init__(
        self,
        config: Config,
        *,
        kind: str,
        lock: RootLock | None,
        stamp: dict[str, Any] | None,
        created: bool = False,
    ) -> None:
        # Here too, not only in open_root: a DataRoot made by hand is refused the same way.
        self._path = _local_root(config, "use a data root")
        check_root(self._path, "use data root")
        # Even inside a `checked` block (public): code that opened one on production's root
        # by hand made this DataRoot, and its lock, unchecked (red team 59). Free for testing.
        check_given_profile(config.profile, f"data root {self._path}", "use")
        if not just_checked(self._path):  # open_root's own check, a moment ago
            _refuse_unfixed_path(config, self._path)
            _check_mounted(self._path, "use data root")
            if lock is not None:
                _refuse_inside_another_root(config, self._path)
        if stamp is None or not just_checked(self._path):
            # The stamp, as open_root compares it (and hands it here): a DataRoot made by
            # hand with a lock of its own compared none, and a configuration changed in code
            # to name testing and another profile's root (which the profile's rule lets
            # through) purged that root under unittest or a pytest without the app's plugin
            # (red team 59).
            _refuse_other_stamp(config, self._path)
        self.config = config
        self.kind = kind
        self.lock = lock
        self.stamp = stamp
        #: True when the open that made this object created the directory: a server says so,
        #: since on a machine that has served before it means a mistyped path.
        self.created = created
        #: Why each audit line this process could not write was lost (the error, at its
        #: operation's line), in order: `app data check --repair` said "the audit log lists
        #: them" of repairs whose lines had all gone to its own log alone (red team 64), and
        #: a check tells its open's lost line from its repairs' by their count (regress).
        self.lines_lost: list[str] = []
        # This process's changes of the root (`changing`): how many began or ended, and how
        # many are in flight; what is read once and kept (`Trash`'s index of its entries)
        # holds while the mark stays the same (`change_mark`).
        self._changes = threading.Lock()
        self._changes_made = 0
        self._changes_in_flight = 0
        # What the root and the app's directories in it are, by identity, as opened: every
        # destructive operation checks that the same paths still lead to the same places.
        identities = _layout_identities(self._path) if lock is not None else {}
        # Their paths as strings, made once: ensure_held runs before every write (twice per
        # create), and building its five Path objects each time was about a third of it.
        # The root itself is its own path, never "<root>/": a trailing slash would follow a
        # symbolic link put in its place.
        where = os.fspath(self._path)
        self._held_paths = tuple(
            (name, f"{where}/{name}" if name else where, opened)
            for name, opened in identities.items()
        )
        self._layout_intact_until = 0.0  # see layout_changed
        self._mounts_checked = -1  # the mount table's generation found with none inside
        self._table_read = lock is not None and _table_readable()  # see _mount_inside
        # See `stamp_changed`: the stamp file as last read (its lstat), and the refusal of
        # every write once it names another profile.
        self._stamp_seen: tuple[int, ...] | None = None
        self._stamp_lost: StampChangedError | None = None
        from app.store.concurrency import RootState  # app.store builds on this module

        self.store_state: RootState = RootState(self.sessions_dir)

    @property
    def path(self) -> Path:
        """The data root (absolute). Read-only: a root is opened, never re-pointed."""
        return self._path

    @property
    def writable(self) -> bool:
        """Whether this root was opened as a writer and its lock is still held."""
        return self.lock is not None and self.lock.held

    @property
    def hashed(self) -> bool:
        """Whether every record, session.json and trash manifest here must carry its
        ``content_sha256`` (the stamp's `HASHED_KEY`): one without it is damage."""
        return self.stamp is not None and HASHED_KEY in self.stamp

    @property
    def sessions_dir(self) -> Path:
        """``<root>/sessions``: one directory per session."""
        return self.path / SESSIONS_DIR

    @property
    def trash_dir(self) -> Path:
        """``<root>/.trash``: deleted sessions and files, until ``empty-trash``."""
        return self.path / TRASH_DIR

    @property
    def tmp_dir(self) -> Path:
        """``<root>/.tmp``: in-flight writes, renamed into place when complete."""
        return self.path / TMP_DIR

    @property
    def audit_path(self) -> Path:
        """``<root>/audit.jsonl``."""
        return self.path / AUDIT_FILE

    def _require_writer(self, doing: str) -> None:
        if self.lock is None:
            msg = f"cannot {doing}: data root {self.path} was opened read-only"
            raise RuntimeError(msg)
        if not self.lock.held:
            msg = f"cannot {doing}: data root {self.path} is closed"
            raise RuntimeError(msg)

    @property
    def sync_failed(self) -> FsyncFailed | None:
        """The first fsync that failed in this process, if any: every change is refused from
        then on (see :func:`fsync`)."""
        return failed_sync()

    def ensure_held(self) -> None:
        """Check, before any write, that the lock file is still the one we hold (one lstat),
        and that no fsync has failed on the root's filesystem (:func:`fsync`).

        A lock file deleted or replaced is :class:`LockLostError`; the root or a directory
        of the app's in it replaced is :class:`DataRootChangedError`; a failed fsync is
        :class:`~app.errors.FsyncFailed`; the stamp found naming another profile
        (:meth:`stamp_changed`) is :class:`~app.errors.StampChangedError`.
        """
        self._require_writer("check the lock")
        if (failed := self.sync_failed) is not None:
            raise _earlier(failed)
        if self._stamp_lost is not None:
            raise self._stamp_lost
        assert self.lock is not None
        if (reason := self.lock.still_ours()) is not None:
            raise self.lost_error(reason)
        # Through this root's own path too, where it is not the lock's (a path re-pointed by
        # hand): the lock must be the one in the directory the operation is about to change.
        moved = self.path != self.lock.root
        if moved and _present_identity(self.path / LOCK_FILE) != self.lock.identity:
            raise DataRootChangedError(self.path, f"{LOCK_FILE} is not the file it locked")
        for name, where, opened in self._held_paths:
            if _present_identity(where) != opened:  # lstat: a symbolic link is another inode
                self._layout_intact_until = 0.0  # GET /health looks again at once
                path = self.path / name
                what = "the data root" if not name else f"{name}/"
                raise DataRootChangedError(
                    self.path, f"{what} was replaced or moved since it was opened ({path})"
                )
        if isinstance(mount := self._mount_inside(), OSError):
            self._layout_intact_until = 0.0
            raise DataRootChangedError(self.path, _table_unread(mount))
        if mount is not None:
            self._layout_intact_until = 0.0
            raise DataRootChangedError(
                self.path,
                f"a filesystem was mounted inside it since it was opened ({mount}; "
                f"`umount {shell_word(mount)}`): the app moves data within the root by rename, "
                "which cannot cross a mount point (EXDEV), even one of the same filesystem",
            )
        # Its stamp too, as the lock watcher looks at it (`stamp_changed`): one stat, a
        # read only when it changed. Between another profile's stamp copied over the root
        # and the watcher's next look (`lock_check_seconds`), every write went through (red
        # team 70 on regress, branch rt-regress70e); a CLI writer, which has no watcher,
        # never looked at all.
        if self.stamp_changed() is not None and (lost := self._stamp_lost) is not None:
            raise lost

    def _mount_inside(self) -> Path | OSError | None:
        """A mount point inside the root made since it was opened (open_root refuses one
        there before), or ``None``; one poll of the mount table while it has not changed.
        The error where the table, read as the root was opened, cannot be read now.

        A directory's identity does not tell: a bind mount of ``.trash/`` onto itself, made
        under a live server, kept its device and inode, and every delete and replace was
        acknowledged with its old bytes left among the session's (EXDEV), a session's
        delete a bare 500 (red team 38).

        A table that cannot be read passed as one with nothing inside the root: a thread
        that ``chroot``s where no ``/proc`` is mounted (or whose reads of it fail: a
        seccomp filter's errno) wrote across a bind mount of the root's ``.trash/`` it made
        there (red team 70 on regress). Only a process that never had a table (no /proc at
        all, as the root was opened) goes without the check.
        """
        try:
            generation = _MOUNTS.generation()
        except OSError as error:
            return error if self._table_read else None
        if generation == self._mounts_checked:
            return None
        if inside := mounts_inside(self._path):
            return inside[0]
        self._mounts_checked = generation
        return None

    def layout_changed(self) -> str | None:
        """Which of the root and the app's directories in it is no longer what was opened
        (moved, replaced, deleted, or out of reach), and how, by name only; ``None`` while
        all are, and for a reader.

        Every change is refused then (:meth:`ensure_held`), and the server runs on: its
        ``GET /health`` says so, or a monitor saw "ok" from a server that refused every write.
        """
        if not self.writable:
            return None
        if self._stamp_lost is not None:  # see stamp_changed
            return (
                f"the data root's {STAMP_FILE} was stamped for profile {self._stamp_lost.stamped!r}"
            )
        # Asked at every GET /health, on the event loop: four lstats cost 24 us, a fifth of
        # what answering it costs. A layout found intact is trusted for 50 ms (a monitor
        # polls every few seconds); one found changed is looked at every time, and a write
        # refused for a change (ensure_held) makes the next call look again at once.
        now = time.monotonic()
        if now < self._layout_intact_until:
            return None
        for name, where, opened in self._held_paths:
            if (how := _how_changed(where, opened)) is not None:
                what = "the data root" if not name else f"the data root's {name}/"
                return f"{what} {how}"
        if (mounted := self._mount_said()) is not None:
            return mounted
        self._layout_intact_until = now + 0.05
        return None

    def _mount_said(self) -> str | None:
        """`layout_changed`'s words for `_mount_inside`'s answer, or ``None``."""
        if isinstance(mount := self._mount_inside(), OSError):
            return (
                f"the mount table cannot be read ({mount.strerror}: /proc is not mounted, or "
                "not readable, where the thread that asks runs)"
            )
        if mount is not None:
            inside = mount.relative_to(self._path)
            return f"a filesystem was mounted inside the data root, at its {inside}/"
        return None

    def stamp_changed(self) -> str | None:
        """Why this writer must stop writing for its stamp, or ``None``: the stamp now
        names another profile than its own, as another profile's stamp copied over the root
        leaves it (``cp -a <another profile's backup>/. <root>/``, red team 70). Every write
        is refused from then on (:meth:`ensure_held`, :meth:`lost_error` says why).

        A server's lock watcher asks it every ``lock_check_seconds``, and every write's
        :meth:`ensure_held` (red team 70 on regress, rt-regress70e): one ``stat`` while
        the file is as last read (its inode, size and change time: cp writes in place, a
        restamp renames; of the file a link at its name points to, rt-regress70i), a read
        only when it changed. A stamp gone, damaged or unreadable says nothing here: the
        next open refuses it, as before.
        """
        if self._stamp_lost is not None or self.lock is None:
            return None if self._stamp_lost is None else self._stamp_lost.reason
        stamped = self._stamp_if_changed()
        if stamped is None or stamped == self.config.profile:
            return None
        self._stamp_lost = StampChangedError(
            self._path / STAMP_FILE,
            f"now names profile {stamped!r}, and this process writes for profile "
            f"{self.config.profile!r}",
            stamped=stamped,
            profile=self.config.profile,
            protected=self.config.taking_needs_confirmation(stamped),
        )
        return self._stamp_lost.reason

    def _stamp_if_changed(self) -> str | None:
        """The profile the stamp names, where it changed since last read; else ``None``."""
        try:
            # stat, not lstat: the open reads a stamp that is a symbolic link to a regular
            # file (`read_regular` follows it), and a copy over it writes through the link;
            # the link's own lstat never changed, and neither this look nor the watcher's
            # saw another profile's stamp land (red team 70 on regress, rt-regress70i).
            seen = os.stat(f"{self._path}/{STAMP_FILE}")  # noqa: PTH116 - per write, no Path
        except OSError:
            return None
        key = (seen.st_dev, seen.st_ino, seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns)
        if key == self._stamp_seen:
            return None
        try:
            stamp = read_stamp(self._path)
        except AppError:
            # Damaged: read once, not again at every write until it changes (red team 73).
            self._stamp_seen = key
            return None
        except OSError:
            return None
        self._stamp_seen = key
        return None if stamp is None else str(stamp["profile"]).lower()

    def lost_error(self, reason: str) -> LockLostError | DataRootChangedError:
        """The error for a lock file found lost for `reason` (:meth:`RootLock.still_ours`),
        or for a stamp found changed (:meth:`stamp_changed`).

        Where the root itself moved (``mv``, a rename, ``rm -rf``), its lock file went with
        it: that is said, rather than that someone deleted ``.server.lock``.
        """
        assert self.lock is not None, "only a writer holds a lock to lose"
        if self._stamp_lost is not None and reason == self._stamp_lost.reason:
            return self._stamp_lost
        opened = self._held_paths[0][2] if self._held_paths else None
        try:
            now = _present_identity(self._path)
        except OSError:
            now = opened  # a root that cannot be looked at is not said to be moved (red team 39)
        if opened is not None and now != opened:
            return DataRootChangedError(self.path, self._replaced_how(opened, gone=now is None))
        try:
            os.lstat(self.lock.path)
        except PermissionError:
            # chmod 000 or a chown of the root under its server: the lock cannot be checked,
            # but nobody deleted it, and a process that may not enter cannot take it either.
            return DataRootChangedError(
                self.path,
                "its mode or owner no longer lets this process reach its lock file "
                "(permission denied: a chmod or chown while it ran?); give it back to the "
                "user the app runs as (`ls -ld` it, then `chown` or `chmod 0700`)",
            )
        except OSError:
            pass
        if reason.startswith("could not be checked"):
            return LockUncheckedError(self.lock.path, reason)
        if reason.startswith(WATCH_FAILED):
            return LockUnwatchedError(self.lock.path, reason)
        return LockLostError(self.lock.path, reason)

    def _replaced_how(self, opened: tuple[int, int], *, gone: bool) -> str:
        """How the root's path came to name another directory than the one opened (or none),
        and where that one is now, as its lock file's descriptor names it.

        "Put the directory back" alone was said of a root moved aside (`mv`, `renameat2`'s
        exchange of two directories, `mv --exchange`) and of one a filesystem was mounted
        over (`mount --bind`), where nothing had moved: the operator was told neither where
        the directory was nor that an `umount` showed it again (red team 73)."""
        assert self.lock is not None
        if (inside := self.lock.unmounted_at()) is not None:
            through = self.lock.reachable_through()
            return _unmounted_said(
                self._path, inside.parent, gone=gone, through=through, bound=self.lock.mount_root
            )
        lock_now = self.lock.now_at()
        path = shell_word(str(self._path))
        if lock_now is not None and lock_now == self.lock.path:
            # The kernel names the file by the path it had: the directory is still there,
            # hidden by a mount at its path or above it.
            point = _mounted_over(self._path)
            where = f" (at {point})" if point is not None else ""
            undo = f"`umount {shell_word(str(point))}`" if point is not None else "`umount` it"
            return (
                f"a filesystem was mounted over it, or over a directory above it, since it was "
                f"opened{where}: the directory this process opened is still at its path, "
                f"hidden under the mount; {undo} shows it again (`findmnt --target {path}` "
                "names the mount)"
            )
        moved_to = lock_now.parent if lock_now is not None else None
        try:
            there = _present_identity(moved_to) if moved_to is not None else None
        except OSError:
            there = None
        if moved_to is None or there != opened:
            return (
                "the data root itself was moved, renamed or deleted since it was opened, so "
                "nothing is at its path now"
                if gone
                else "the data root itself was replaced since it was opened: its path names "
                "another directory now"
            )
        back = shell_word(str(moved_to))
        if gone:
            # Its parent moved with it (`mv /srv/app /srv/app.old`): `mv` into a directory
            # that is not there fails, "No such file or directory" (red team 73 on regress).
            parent = self._path.parent
            make = "" if os.path.lexists(parent) else f"mkdir -p {shell_word(str(parent))} && "
            return (
                "the data root itself was moved, renamed or deleted since it was opened, so "
                f"nothing is at its path now: the directory this process opened is at "
                f"{moved_to} (`{make}mv {back} {path}` puts it back)"
            )
        return (
            "the data root itself was replaced since it was opened: its path names another "
            f"directory now, and the directory this process opened is at {moved_to} (moved "
            "aside, or exchanged with the other one): move the other one out of the way, then "
            f"`mv {back} {path}`"
        )

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Mark a change to the root as in flight for the block: a shared flock on ``.tmp/``.

        What a change leaves between its steps (a staging directory, a trash entry before its
        move, a blob before its record) is what a crash leaves too. A read-only check in
        another process waits for a moment without any (:meth:`quiescent`) and reports only
        what is still there after it: it once told an operator that a server's writes in
        flight were crashed ones, and to stop the server to repair them.
        """
        if not self.writable:
            yield  # a reader's change is refused by the change itself
            return
        with self._changes:
            self._changes_made += 1
            self._changes_in_flight += 1
        try:
            try:
                fd = os.open(self.tmp_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                self.ensure_held()  # .tmp/ removed or moved by hand: names it
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                yield
            finally:
                os.close(fd)
        finally:
            with self._changes:
                self._changes_made += 1
                self._changes_in_flight -= 1

    def change_mark(self) -> int | None:
        """A number that differs after any change of this process's to the root has begun or
        ended since it was taken; None while one is in flight (nothing read now can be kept),
        and always for a reader, whose root the writer changes unseen."""
        if not self.writable:
            return None  # a reader: another process (the server) changes it unseen
        with self._changes:
            return None if self._changes_in_flight else self._changes_made

    def quiescent(self, timeout: float = _QUIESCENT_SECONDS) -> bool:
        """Wait for a moment when no change is in flight on this root (see :meth:`changing`).

        Returns ``False`` if changes overlapped for all of ``timeout`` seconds: a flock taken
        exclusively can wait for ever behind shared ones that keep overlapping, so it is
        polled, and the writers are never held up by more than one poll.
        """
        try:
            fd = os.open(self.tmp_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True  # no writer ever opened the root
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        return False
                    time.sleep(0.005)
                else:
                    return True
        finally:
            os.close(fd)

    def audit(self, operation: str, target: str | Path, **details: Any) -> bool:
        """Append one JSON line to ``audit.jsonl`` and fsync it; whether it was written.

        The line holds ``time`` (ISO 8601, UTC), ``pid``, ``profile``, ``kind``, ``argv``,
        ``operation``, ``target`` and ``details``. It records a change already made: a line
        that cannot be written (a full disk) is logged, whole, as a warning, not raised; a
        change whose trace lets `app data check --repair` write it again keeps that trace.

        Args:
            operation: what was done (``"trash-session"``, ``"empty-trash"``, ...).
            target: what it was done to (a path or an id).
            **details: anything else worth recording (JSON-serialisable, else ``str()``).
        """
        try:
            self.append_audit_line(operation, target, details)
        except OSError as error:
            record = _audit_record(self.config.profile, self.kind, operation, target, details)
            _audit_line_lost(self.audit_path, record, error)
            self.note_line_lost(operation, error)
            return False
        return True

    @property
    def line_lost(self) -> str | None:
        """Why the first audit line this process could not write was lost, or ``None``."""
        return self.lines_lost[0] if self.lines_lost else None

    def note_line_lost(self, operation: str, error: OSError) -> None:
        """Remember an audit line that could not be written (`lines_lost`)."""
        self.lines_lost.append(f"{error.strerror or error}, at its {operation} line")

    def append_audit_line(
        self, operation: str, target: str | Path, details: Mapping[str, Any]
    ) -> None:
        """:meth:`audit`, raising what the write raised: for a repair that is the line."""
        self._require_writer(f"audit {operation}")
        record = _audit_record(self.config.profile, self.kind, operation, target, details)
        _append_audit(self.path, record)

    def prepare(
        self, *dirs: Path, audit: bool = False, items: int = 0, frees_space: bool = False
    ) -> Prepared:
        """Open, before a change's commit point, what the change needs after it.

        Args:
            dirs: the directories the change will fsync.
            audit: open ``audit.jsonl`` too, for :meth:`Prepared.audit`.
            items: how many sessions or trash entries its audit line will list (a purge,
                an empty-trash), for the room it needs under the file size limit.
            frees_space: the change frees space (empty-trash): a full disk that refuses to
                open the log defers it until after the change, rather than refusing.
        """
        return Prepared(self, dirs, audit=audit, items=items, frees_space=frees_space)

    def _check_dest(self, dest: Path) -> Path:
        # Only the directory is resolved: the last component is replaced by the rename, so a
        # symlink planted there is replaced too, never written through (it could point at
        # another session's file, or out of the root).
        #
        # In strings: the same resolutions and comparisons as pathlib's `resolve`,
        # `is_relative_to` and `relative_to`, without building a path object for each step
        # (every durable write of a session's file passes here: perf-server59).
        root = _resolved(os.fspath(self.path))  # Config resolves it already; cheap insurance
        parent = _resolved(os.fspath(dest.parent))
        name = dest.name
        if not _within(parent, root) or name in {"", ".", ".."}:
            msg = f"refusing to write {dest}: it is not inside data root {self.path}"
            raise ValueError(msg)
        final = os.path.join(parent, name)  # noqa: PTH118 - strings, see above
        if _within(final, os.path.join(root, TMP_DIR)):  # noqa: PTH118
            msg = f"refusing to write {dest}: {self.tmp_dir} holds only in-flight temporary files"
            raise ValueError(msg)
        # A symlinked directory that stays inside the root still leads a write somewhere
        # else than the path says, e.g. from one session into another.
        lexical = os.path.abspath(dest.parent)  # noqa: PTH100 - resolve() follows links
        given = os.fspath(self.path)
        if _within(lexical, given):
            lexical = root + lexical[len(given) :] if lexical != given else root
        if lexical != parent:
            msg = (
                f"refusing to write {dest}: its directory passes through a symbolic link "
                f"(it resolves to {parent}); the data root holds no symbolic links"
            )
            raise ValueError(msg)
        return Path(final)

    def new_temp_file(self) -> tuple[IO[bytes], Path]:
        """A new temporary file in ``.tmp/`` (mode 0600) for streaming a write into.

        Write to it, flush it, :meth:`commit_temp_file` it into place (or delete it), and
        only then close it: the open file holds a ``flock`` that tells another writer's
        clean-up of ``.tmp/`` it is in flight. A crash ends the flock and leaves the file
        in ``.tmp/``, where the next writer to open the root removes it.

        Returns:
            The open binary file and its path.
        """
        self.ensure_held()
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-", suffix=".part")
        try:
            # Appended to, not written at an offset: a file cut from outside while it is
            # written then ends short of the bytes received, which the commit refuses; the
            # writes went on at their offset, after a hole of zeros (red team 44).
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            # A flock refused (ENOLCK) left the file in .tmp/ and its descriptor open, one
            # more each time (red team 39): not in flight, so nothing of it is kept.
            Path(name).unlink(missing_ok=True)
            os.close(fd)
            raise
        return os.fdopen(fd, "wb"), Path(name)

    def commit_temp_file(self, tmp: Path, dest: Path) -> None:
        """Make a closed temporary file durable and rename it to ``dest``.

        fsyncs the file, replaces ``dest`` atomically and fsyncs ``dest``'s directory, so
        after a crash ``dest`` is either its old content or the complete new one. On
        failure the temporary file is removed.

        Args:
            tmp: a file from :meth:`new_temp_file`, flushed and best still open (its
                flock keeps another writer's clean-up away until the rename).
            dest: where it belongs, inside the data root (never in ``.tmp/``).
        """
        self._require_writer(f"write {dest}")
        dest = self._check_dest(dest)
        try:
            self.ensure_held()  # the last moment before the write becomes visible
            _fsync_path(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _replace(tmp, dest)

    def atomic_write_bytes(self, dest: Path, data: bytes) -> None:
        """Write ``data`` to ``dest`` atomically and durably (temp file, fsync, rename, fsync).

        The temporary file is read back before the rename and ``dest`` looked at after it:
        where it is not the file written, with ``data`` (another file put at the temporary
        name, or one written to in place), it is written again, `_REWRITES` times at most.

        Args:
            dest: the destination, inside the data root (its directory must exist).
            data: the complete new content.

        Raises:
            OSError: ``EAGAIN`` where another file was put at the temporary name each time,
                and what the filesystem's calls raise.
        """
        self._require_writer(f"write {dest}")
        dest = self._check_dest(dest)
        self.ensure_held()
        # The rename goes by name: another file put at the temporary one (`mv`, an editor's
        # or rsync's save) was renamed into place, and a PUT answered 201 of a record that
        # was that file's, the acknowledged one gone (red team 76 on integrity). Written
        # again where what was renamed is not the file written, as the change asks.
        for _ in range(_REWRITES):
            if self._write_renamed(dest, data):
                return
        err = errno.EAGAIN
        raise OSError(err, f"{os.strerror(err)}: a file put at its temporary name each time", dest)

    def _write_renamed(self, dest: Path, data: bytes) -> bool:
        """One attempt of :meth:`atomic_write_bytes`: whether ``dest`` now holds the file it
        wrote (False: another file, put at the temporary name, went in its place)."""
        tmp = self.tmp_dir / f"write-{_token()}.part"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            # Held until the rename: another writer's clean-up skips it (see _clear_tmp).
            fcntl.flock(fd, fcntl.LOCK_EX)
            write_all(fd, data)
            fsync(fd)
            written = os.fstat(fd)
            if os.pread(fd, len(data) + 1, 0) != data:  # written in place from outside
                tmp.unlink(missing_ok=True)
                return False
            _replace(tmp, dest)
            there = os.lstat(dest)
            return (there.st_dev, there.st_ino) == (written.st_dev, written.st_ino)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)

    def atomic_write_json(self, dest: Path, obj: Any) -> None:
        """Write ``obj`` as indented JSON to ``dest``, like :meth:`atomic_write_bytes`."""
        self.atomic_write_bytes(dest, json_bytes(obj))

    def close(self) -> None:
        """Release the lock of a writer. Idempotent; a reader has nothing to release."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "writer" if self.lock is not None else "reader"
        return f"DataRoot({str(self.path)!r}, profile={self.config.profile!r}, {mode})"


# --- status ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootStatus:
    """What ``app status`` shows about a data root, at one moment.

    Attributes:
        path: the data root.
        exists: whether the directory exists.
        probe: the lock probe (who held the root at that moment).
        stamp: the profile stamp, ``None`` if absent.
        stamp_error: why the stamp could not be read, if it exists but is broken.
        marked: with no stamp, the profile the root's own directories are marked as
            (`LAYOUT_MARK`): its stamp was lost, and another profile's writer is refused.
    """

    path: Path
    exists: bool
    probe: Probe
    stamp: dict[str, Any] | None
    stamp_error: str | None = None
    marked: str | None = None

    @property
    def location(self) -> str:
        """The data root, as ``app status`` names it."""
        return str(self.path)

    @property
    def held(self) -> bool:
        """Whether a live process held the root at that moment."""
        return self.probe.held

    @property
    def holders(self) -> list[dict[str, Any]]:
        """The holder, as a list (a remote profile has one per replica): empty if none."""
        return [self.probe.holder or {}] if self.probe.held else []

    @property
    def holder(self) -> dict[str, Any] | None:
        """What the holder published about itself (pid, host, kind, port...), if anything."""
        return self.probe.holder

    @property
    def held_by(self) -> str:
        """The holder in words (pid, host, since, for what), for a person to act on."""
        said = describe_holder(self.probe.holder)
        if self.probe.holder and "through_device" in self.probe.holder:
            return said + through_another_device(self.probe.path, self.probe.holder)
        if self.probe.holder and "locked_for" in self.probe.holder:
            return said + locked_for_said(Path(self.probe.holder["locked_for"]))
        if (other := shared_with(self.path, self.probe.path, self.probe.holder)) is not None:
            # A hard-link copy of a live root: its holder is the other root's (red team 41).
            said += (
                f", for data root {other}, not this one: this root's {LOCK_FILE} is a hard "
                "link of that root's. Leave that process running, and "
                f"`rm {shell_word(self.probe.path)}` before this root is opened (the app "
                "makes a new one)"
            )
        return said

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``app status --json``)."""
        return {
            "path": str(self.path),
            "exists": self.exists,
            "held": self.probe.held,
            "holder": self.probe.holder,
            "lock_file": str(self.probe.path),
            "stamp": self.stamp,
            "stamp_error": self.stamp_error,
            # With no stamp, the profile the root's own directories are marked as: the
            # text's "stamp: none (deleted or lost ...)" line, for a script (null otherwise).
            "marked": self.marked,
        }


def describe(root: Path) -> RootStatus:
    """Describe ``root`` for ``app status``: who holds it and how it is stamped.

    Creates nothing, takes no lasting lock, and is not confined to the pytest sandbox (the
    plugin uses it to look at other profiles' roots for live servers). Like
    :func:`app.lock.probe`, it describes one moment only.

    Args:
        root: a data root; it need not exist.

    Returns:
        A :class:`RootStatus`.
    """
    stamp: dict[str, Any] | None = None
    stamp_error: str | None = None
    try:
        found = root.stat()
    except OSError:
        found = None
    if found is not None and not stat.S_ISDIR(found.st_mode):
        # It said "does not exist yet" and "stamp: none" of a root's path that names a file
        # (red team 56): a first start would not lay it out, and every command refuses it.
        kind = special_kind(found.st_mode) or "a regular file"
        stamp_error = (
            f"{root} is {kind}, not a directory: every command that opens the data root is "
            "refused until the path names the root's directory (`app doctor` says what to do)"
        )
        return RootStatus(path=root, exists=False, probe=probe(root), stamp=None,
                          stamp_error=stamp_error)  # fmt: skip
    try:
        stamp = read_stamp(root)
        if stamp is not None:
            _refuse_later_layout(root, stamp)
    except DataRootStateError as error:
        stamp_error = f"{error.problem}; {error.fix}"
    except DataRootTooNewError as error:
        # Said by `app status` too, not only by the commands it refuses (red team 38).
        stamp_error = error.message
    except OSError as error:
        # A stamp that could not be read (EIO, mode 000) failed the whole `app status`, which
        # then named no holder: the very thing it is run for (red team 39).
        stamp_error = (
            f"{root / STAMP_FILE} could not be read ({error.strerror or error}); every "
            "command that opens the data root is refused until it can be"
        )
    exists = root.is_dir()
    marked = marked_profile(root) if exists and stamp is None and stamp_error is None else None
    return RootStatus(
        path=root,
        exists=exists,
        probe=probe(root),
        stamp=stamp,
        stamp_error=stamp_error,
        marked=marked,
    )
