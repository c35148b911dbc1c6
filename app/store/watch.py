"""`SessionWatch`: whether a kept session may have changed, told by Linux's inotify.

A kept session's answer (`Sessions._encoded`) was checked on every read with three system
calls: an ``lstat`` of its directory, a ``stat`` of its session.json and an ``lstat`` of its
records/. A page of 100 made 300 of them, most of its 2 ms on the server's event loop
(bench/README.md, "Latency under mixed load", the seventeenth and eighteenth sessions).

With this, the server asks the kernel to tell it of every change there instead: each kept
session's directory, its session.json and its records/ are watched, and so is sessions/.
A read first takes what the kernel queued (one ``read``, and one ``stat`` of sessions/),
and a session with no event since its answer was last checked is answered from the kept
bytes without a system call. The kernel queues an event before the call that made the
change returns (fsnotify runs inside the ``write``, ``rename``, ``unlink``, ``chmod``), so
a change that was made before a read began, by any process, is seen by that read: what a
stale answer can be is exactly what it was with the ``stat`` calls, a change made while
the read runs.

What inotify cannot see, and what covers it:

- a filesystem mounted over a session directory after the start (it needs root; the start
  refuses mounts inside the root), or a change made by another machine on a network
  filesystem (the watch is used on local filesystems only: `Store.watch_sessions`): every
  kept answer is checked with the ``stat`` calls again once it is `MAX_AGE_SECONDS` old,
  so such a change shows within that time;
- sessions/ or the whole root put aside and a copy put in its place: sessions/'s device
  and inode are compared on every read; another directory there turns the watch off;
- an event queue that overflowed (more than ``max_queued_events`` changes between two
  reads): every session is checked again.

Only the kernel's three calls are used, through ctypes: a library (watchdog, watchfiles)
delivers events on its own thread some time later, which cannot say that nothing changed
before now, and that is the one thing needed here. inotify_simple, which reads the queue when
asked, was measured (the branch `watch20`'s predecessor): 5.07 ms to start against 2.11 ms,
and it runs ``ldconfig -p`` in a subprocess to find libc, which the server's start does not
need. Where inotify cannot be had (no instance left, not Linux), nothing is watched and every
read checks as before.

What the watch says of a session's records (records/<name>, written in place by hand, through
a descriptor, `copy_file_range`, `fallocate`, `truncate`) is handed to the record cache
(:attr:`SessionWatch.stale`): any event for a session makes its records read again, but for a
record added, removed or renamed in records/ (which moves records/'s identity, compared by the
record cache on every use: the app's own uploads and deletes do, and expired the copy each
time), and an overflow makes every session's. A change of a session takes the events first
too (`app.store.sessions.Sessions.newest_change`, red team 58). Only the app's own such
changes keep the copy (`app.store.concurrency.RecordCache.entry` counts them): one by hand
between the app's rename and its look at records/ moved the identity the copy was then kept
under (red team 58 on the merges). A write through a shared mapping (``mmap``) raises no
event at all: the records of a watched session are read again at least once a minute
(`app.store.sessions.WATCHED_RECORDS_MAX_AGE_SECONDS`), its session.json once a second.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import fcntl
import os
import struct
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["MAX_AGE_SECONDS", "SessionWatch"]

#: How long a kept answer is trusted on the kernel's word alone before its ``stat`` calls
#: are made again (for what inotify cannot see; the module docstring).
MAX_AGE_SECONDS: Final = 1.0

_MODIFY: Final = 0x2
_ATTRIB: Final = 0x4
_CLOSE_WRITE: Final = 0x8
_MOVED_FROM: Final = 0x40
_MOVED_TO: Final = 0x80
_CREATE: Final = 0x100
_DELETE: Final = 0x200
_DELETE_SELF: Final = 0x400
_MOVE_SELF: Final = 0x800
_Q_OVERFLOW: Final = 0x4000
_IGNORED: Final = 0x8000
_ONLYDIR: Final = 0x01000000
_DONT_FOLLOW: Final = 0x02000000
_CHANGES: Final = (
    _MODIFY
    | _ATTRIB
    | _CLOSE_WRITE
    | _MOVED_FROM
    | _MOVED_TO
    | _CREATE
    | _DELETE
    | _DELETE_SELF
    | _MOVE_SELF
)
# A record's bytes or inode changed (not its name). Not IN_CLOSE_WRITE: the app's own write
# closes its record after the rename, and a write by hand raises IN_MODIFY in any case.
_IN_PLACE: Final = _MODIFY | _ATTRIB
# A name added, removed or renamed in a directory (one each for the app's own write of a
# record, `RecordCache.entry`).
_NAMED: Final = _MOVED_FROM | _MOVED_TO | _CREATE | _DELETE
_EVENT_KINDS: Final = 0xFFF  # the mask's event bits, without IN_ISDIR and the like
_EVENT: Final = struct.Struct("iIII")  # wd, mask, cookie, len; then the name
#: At most this many watches per server, and at most a quarter of the user's allowance
#: (`/proc/sys/fs/inotify/max_user_watches`, shared by all the user's processes): three a
#: session; sessions past it are checked with the ``stat`` calls, as before.
_WATCHES: Final = 12288
_SESSION_FILE: Final = "session.json"
_RECORDS_DIR: Final = "records"


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for name in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch"):
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
    return libc


def _allowance() -> int:
    try:
        return min(_WATCHES, int(Path("/proc/sys/fs/inotify/max_user_watches").read_text()) // 4)
    except (OSError, ValueError):
        return 1024


class SessionWatch:
    """The kernel's word on which kept sessions of one ``sessions/`` may have changed.

    Thread-safe: pages of more than 100 sessions are read on worker threads.
    """

    def __init__(self, libc: ctypes.CDLL, fd: int, sessions_dir: str, identity: tuple[int, int]):
        self._libc = libc
        self._fd = fd
        self._where = sessions_dir
        self._identity = identity
        self._lock = threading.Lock()
        self._limit = _allowance()
        self.max_age = MAX_AGE_SECONDS
        self._on = True
        self._wds: dict[int, set[str]] = {}  # a watch: the session directories it stands for
        self._dirs: dict[str, set[int]] = {}  # a session directory: its watches
        self._clean: dict[str, tuple[object, float]] = {}  # checked: validator, when
        self._events = 0  # events taken so far
        self._changed: dict[str, int] = {}  # a watched directory: the count at its last event
        self._intact: set[str] = set()  # watched, and no event for it since: nothing to add
        self._entries: set[int] = set()  # the watches of records/ directories
        self._queued = array.array("i", [0])  # FIONREAD's answer
        #: Told of each session directory an event came for (None: events were lost, every
        #: one), under the watch's lock: what it keeps of them must be read again.
        self.stale: Callable[[str | None], object] = lambda directory: None
        #: Told of each name added, removed or renamed in a session's records/: the app's
        #: own such change keeps the copy of its records, any other expires it.
        self.entry: Callable[[str, str], object] = lambda directory, name: None
        wd = self._add(sessions_dir, _CHANGES | _ONLYDIR | _DONT_FOLLOW)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"cannot watch {sessions_dir}")
        self._top = wd

    @classmethod
    def start(cls, sessions_dir: str) -> SessionWatch | None:
        """A watch of ``sessions_dir``, or None where inotify cannot be had."""
        libc = _libc()
        if libc is None:
            return None
        try:
            info = os.lstat(sessions_dir)
        except OSError:
            return None
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None  # EMFILE: the user's instances are all taken (max_user_instances)
        try:
            return cls(libc, fd, sessions_dir, (info.st_dev, info.st_ino))
        except OSError:
            os.close(fd)
            return None

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._on = False
            self._clean.clear()

    # -- what a read asks ---------------------------------------------------------------------

    def drain(self) -> None:
        """Take every event queued so far; call it once before a read uses :meth:`clean`."""
        with self._lock:
            if not self._on:
                return
            try:
                info = os.lstat(self._where)
                same = (info.st_dev, info.st_ino) == self._identity
            except OSError:
                same = False
            if not same:  # sessions/ (or the root) swapped for another: watch nothing more
                self._on = False
                self._clean.clear()
                return
            try:
                # FIONREAD first: with nothing queued (most reads) one ioctl, 0.6 us,
                # against a read that fails with EAGAIN, 1.7 us and an exception.
                fcntl.ioctl(self._fd, termios.FIONREAD, self._queued, True)
                if self._queued[0] <= 0:
                    return
                # Every event queued when the ioctl looked, in one read (it returns as many
                # whole events as the buffer holds). No second look: what came after the
                # first is a change made after this drain began, which the read that called
                # it need not see (as with the stat calls), and each system call here gives
                # the interpreter lock away on the event loop, to wait for it again.
                data = os.read(self._fd, max(65536, self._queued[0]))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the descriptor is gone (EBADF): nothing is known any more
                self._on = False
                self._clean.clear()
                self.stale(None)
                return
            self._take(data)

    def clean(self, directory: str) -> object | None:
        """The validator ``directory``'s answer was kept under, if nothing there changed since
        it was checked (per the events :meth:`drain` took) and it was checked lately."""
        entry = self._clean.get(directory)  # a dict read: atomic under the interpreter lock
        if entry is None or time.monotonic() - entry[1] > self.max_age:
            return None
        return entry[0]

    def begin(self, directory: str) -> int | None:
        """Watch ``directory`` (before its answer is checked); the count to give
        :meth:`checked`, or None if it cannot be watched (then it is checked every time)."""
        with self._lock:
            if not self._on:
                return None
            count = self._events
            if directory in self._intact:  # checked again after its second: watches unchanged
                return count
            wds = []
            for path, flags, needed in (
                (directory, _ONLYDIR | _DONT_FOLLOW, True),
                (f"{directory}/{_SESSION_FILE}", _DONT_FOLLOW, True),
                # not there until the first upload; its making is an event of the directory
                (f"{directory}/{_RECORDS_DIR}", _ONLYDIR | _DONT_FOLLOW, False),
            ):
                if len(self._wds) >= self._limit:
                    return None
                wd = self._add(path, _CHANGES | flags)
                if wd < 0:
                    if needed or ctypes.get_errno() not in (errno.ENOENT, errno.ENOTDIR):
                        return None
                    continue
                if not needed:
                    self._entries.add(wd)
                wds.append(wd)
            for wd in wds:
                self._wds.setdefault(wd, set()).add(directory)
                self._dirs.setdefault(directory, set()).add(wd)
            self._intact.add(directory)
            return count

    def watched(self, directory: str) -> bool:
        """Whether every change of ``directory`` since its watches were added raises an
        event (call :meth:`drain` first): watched, and no event since that needs them added
        again."""
        with self._lock:
            return self._on and directory in self._intact

    def checked(self, directory: str, count: int, validator: object) -> None:
        """``directory``'s answer is kept under ``validator``, checked after :meth:`begin`
        returned ``count``: trusted from now on, unless an event for it came since."""
        with self._lock:
            # Still watched too: one moved out of sessions/ meanwhile (a session directory
            # swapped for another by hand while it was read) lost its watches, and the
            # directory in its place has none until `begin` adds them.
            if self._on and directory in self._intact and self._changed.get(directory, -1) <= count:
                self._clean[directory] = (validator, time.monotonic())

    # -- the kernel's events ------------------------------------------------------------------

    def _add(self, path: str, mask: int) -> int:
        return int(self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask))

    def _take(self, data: bytes) -> None:
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            self._events += 1
            if mask & _Q_OVERFLOW:  # events were lost: nothing is known clean any more
                self._clean.clear()
                self._intact.clear()
                for directory in self._dirs:
                    self._changed[directory] = self._events
                self.stale(None)  # the records of every session, watched or not
                continue
            if wd == self._top:
                if mask & (_DELETE_SELF | _MOVE_SELF | _IGNORED):
                    self._on = False
                    self._clean.clear()
                elif name:
                    directory = f"{self._where}/{os.fsdecode(name)}"
                    self._touch(directory)
                    if mask & (_MOVED_FROM | _DELETE):  # it left sessions/ (a delete): unwatch
                        self._forget(directory)
                continue
            if wd in self._entries and name and not mask & _IN_PLACE:
                self._named(wd, mask, name)
                continue
            if mask & _EVENT_KINDS == _ATTRIB and self._records_times(wd, name):
                continue
            for directory in list(self._wds.get(wd, ())):
                self._touch(directory)
            if mask & _IGNORED:  # the watched file or directory is gone
                self._entries.discard(wd)
                for directory in self._wds.pop(wd, ()):
                    self._dirs.get(directory, set()).discard(wd)

    def _records_times(self, wd: int, name: bytes) -> bool:
        """An attribute event (``wd``, ``name``) that is records/' own times being set,
        taken here: True. Raised twice, by records/' watch (no name) and by its session
        directory's (``records``); the first tells the record cache (`RecordCache.entry`,
        no name), the second only that the session changed.

        A delete sets them (`app.store.records.date_records`) after a clock's step back, and
        whenever the kernel's coarse clock lagged the delete's moment, which is often: as
        any other event, it expired the kept records, and the session's next change read
        every record again (about 150 ms at 9,000 files). The app's own keeps them; one by
        hand expires them (`RecordCache.entry`).
        """
        if name and name != _RECORDS_DIR.encode():
            return False
        told = not name
        directories = self._wds.get(wd, ())
        if told and wd not in self._entries:
            return False
        if not told and not all(
            any(w in self._entries for w in self._dirs.get(d, ())) for d in directories
        ):
            return False  # records/ is not watched: its session is read again
        for directory in directories:
            self._clean.pop(directory, None)
            self._changed[directory] = self._events
            if told:
                self.entry(directory, "")
        return True

    def _named(self, wd: int, mask: int, name: bytes) -> None:
        """A name event (``name``, ``mask``) in a watched records/ (``wd``)."""
        # A record added, removed or renamed: records/'s identity (its ctime) moved,
        # which the record cache compares on every use, and records/ is still the
        # directory watched. So the session stays watched and its copy of records kept:
        # the app's own upload expired it, and the next change of the session then
        # read every record again, or (trusting the copy for its floor without a look
        # at the events, as it did) missed a record rewritten in place by hand (red
        # team 58).
        # But only the app's own: another (a record renamed onto, linked or removed by
        # hand between the app's rename and its look at records/) expires it too
        # (`entry`, red team 58 on the merges).
        for directory in self._wds.get(wd, ()):
            self._clean.pop(directory, None)
            self._changed[directory] = self._events
            if mask & _NAMED:  # not the close after the app's rename: no change
                self.entry(directory, os.fsdecode(name))

    def _touch(self, directory: str) -> None:
        self.stale(directory)  # a record written in place: only an event tells it
        self._clean.pop(directory, None)
        self._intact.discard(directory)  # what is watched may be another file now: add again
        if directory in self._dirs:
            self._changed[directory] = self._events

    def _forget(self, directory: str) -> None:
        for wd in self._dirs.pop(directory, set()):
            users = self._wds.get(wd)
            if users is None:
                continue
            users.discard(directory)
            if not users:
                del self._wds[wd]
                self._entries.discard(wd)
                with contextlib.suppress(OSError):
                    self._libc.inotify_rm_watch(self._fd, wd)
        self._changed.pop(directory, None)
