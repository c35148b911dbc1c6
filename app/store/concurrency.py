"""What every `Store` on one open data root shares: session locks, group commit, caches.

One :class:`RootState` belongs to each open :class:`app.dataroot.DataRoot` (it makes it).
Every Store on that root must serialise on the same session locks and see the same listing
index, or one Store's changes would be missing from another's listing, and two could
interleave changes to one session.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

from app.dataroot import fsync
from app.store.records import record_time

if TYPE_CHECKING:
    from app.store.records import FileRecord

__all__ = [
    "SYNCS",
    "GroupSync",
    "RecordCache",
    "RootState",
    "SyncHelpers",
    "identity_after_change",
    "records_identity",
]

_T = TypeVar("_T")

_LOCK_STRIPES: Final = 64
_RECORD_CACHE_LIMIT: Final = 200_000  # records (a few hundred bytes each) a writer keeps


class RootState:
    """The shared state of one open data root (see the module docstring)."""

    def __init__(self, sessions_dir: Path) -> None:
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self.sessions_sync = GroupSync(sessions_dir)
        self.records = RecordCache()
        # The sorted ids, kept for a writer only: while this process holds the root's lock
        # nobody else adds or removes sessions, so after one directory scan every change
        # goes through a Store on this root. A reader (no lock) scans on every call instead.
        self._index: list[str] | None = None
        self._index_lock = threading.Lock()
        # The `.new-<id>` staging directories of creates in progress.
        self.creating: set[str] = set()
        self.creating_lock = threading.Lock()
        # The time in the newest trash entry's name (see app.store.trash.Trash.moment).
        self.trash_moment: datetime | None = None
        self.trash_moment_lock = threading.Lock()
        # The `.emptying-<entry>` directories an `empty-trash` of this process removes now:
        # any other is what a killed one left, which the next one finishes (red team 34).
        self.emptying: set[str] = set()
        self.emptying_lock = threading.Lock()
        # The entries of session deletes (and purges) whose audit line is not written yet:
        # an `empty-trash` leaves them for the next one (see `unaudited_moves`).
        self.unaudited: set[str] = set()

    @contextlib.contextmanager
    def unaudited_moves(self) -> Iterator[set[str]]:
        """A set a session's move into the trash adds its entry's name to, from its making
        under the session's lock until its caller has written the audit line (this block's
        end). The move is made under the lock, its fsync (shared, `GroupSync`) and its line
        after it: an `empty-trash` in between removed the entry and wrote its own line first,
        and a crash then left no line of the delete at all (red team 50)."""
        names: set[str] = set()
        try:
            yield names
        finally:
            with self.emptying_lock:
                self.unaudited.difference_update(names)

    def being_audited(self, name: str) -> bool:
        """Whether ``name`` is an entry of a move whose audit line is not written yet."""
        with self.emptying_lock:
            return name in self.unaudited

    def add_unaudited(self, names: set[str], name: str) -> None:
        """Add ``name`` to a block of `unaudited_moves` (``names``) and to the root's set."""
        with self.emptying_lock:
            names.add(name)
            self.unaudited.add(name)

    def creation_frontier(self, prefix: int) -> str | None:
        """The lowest id of a session in creation (its staging name minus ``prefix``
        characters), if any."""
        with self.creating_lock:
            lowest = min(self.creating, default=None)
        return None if lowest is None else lowest[prefix:]

    def lock_for(self, session_id: str) -> threading.Lock:
        """The lock that serialises changes to ``session_id`` (one of a fixed set of stripes)."""
        return self._stripes[int(session_id[-4:], 16) % _LOCK_STRIPES]

    def ids(self, scan: Callable[[], list[str]], *, keep: bool) -> list[str]:
        """The sorted session ids (a copy): the index, or ``scan()`` (kept if ``keep``)."""
        with self._index_lock:
            return list(self._ids(scan, keep))

    def window(
        self, scan: Callable[[], list[str]], *, keep: bool, after: str | None, limit: int
    ) -> tuple[list[str], int, int]:
        """Up to ``limit`` ids after ``after``, the position of the first, and the total."""
        with self._index_lock:
            ids = self._ids(scan, keep)
            start = 0 if after is None else bisect.bisect_right(ids, after)
            return ids[start : start + limit], start, len(ids)

    def _ids(self, scan: Callable[[], list[str]], keep: bool) -> list[str]:
        if self._index is not None:
            return self._index
        ids = scan()
        if keep:
            self._index = ids
        return ids

    def index_update(self, *, add: str | None = None, remove: str | None = None) -> None:
        """Record a session created (``add``) or moved away (``remove``) in the index."""
        with self._index_lock:
            index = self._index
            if index is None:
                return  # not built yet: the next scan sees the change
            if add is not None:
                position = bisect.bisect_left(index, add)
                if position == len(index) or index[position] != add:
                    index.insert(position, add)
            if remove is not None:
                position = bisect.bisect_left(index, remove)
                if position < len(index) and index[position] == remove:
                    del index[position]


def records_identity(path: str) -> tuple[int, int, int] | None:
    """A ``records/`` directory's identity: device, inode and ctime; ``None`` if not there.

    The inode alone does not tell another directory: ext4 gives a freed inode number to the
    next one made, so a session removed and copied back by hand (``rm -rf``, ``cp -a``) had
    a ``records/`` with the inode of the one removed (red team 24). The ctime tells it: no
    process can set it, a directory made later has a later one, and every entry added,
    removed or renamed in it changes it (a record removed or put back by hand, too).

    A look that fails otherwise (``EIO``, ``ESTALE``, ``ENOTCONN``) is raised: read as "not
    there", the session was answered with no files, a state it never had, and that empty
    copy was kept; a change then added its one file to it, and the session was listed with
    that file alone (red team 51).
    """
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return info.st_dev, info.st_ino, info.st_ctime_ns


def identity_after_change(path: str) -> tuple[int, int, int] | None:
    """`records_identity` of a ``records/`` a write has just changed, ``None`` where the
    look fails: the write is made, and must be answered as made; given no identity, the
    cache forgets the session's copy (`RecordCache.changed`), which is read again."""
    try:
        return records_identity(path)
    except OSError:
        return None


class RecordCache:
    """A writer's copy of each recently read session's records, so reads stay O(1) too.

    Only the holder of the root writes, and every write updates (or drops) its session here
    under a generation count: a reader that scanned a session while a write happened does
    not store its possibly stale scan. Each session's copy is also kept under the identity
    of its ``records/`` directory (`records_identity`: device, inode and ctime), taken before
    the scan, and a write through this root gives its session the identity its change left:
    a session directory or its ``records/`` replaced by hand under a live server (a restore
    from a backup, red teams 23 and 24), or a record added or removed there by hand, is read
    afresh, not answered with the records the server kept. Bounded by the number of records
    held (LRU).

    A record rewritten in place by hand (``O_TRUNC`` and a write, a write through a descriptor,
    ``copy_file_range``, ``fallocate``, ``truncate``) changes no identity, so each copy also
    has an age: a read asks :meth:`due` with how old it may be (a second, a minute for a
    session the kernel's events watch: `app.store.sessions`), an event expires it
    (:meth:`expire`), and a copy with a record linked elsewhere (``st_nlink`` > 1, whose writes
    through the other name raise no event on records/) is never trusted. A copy read again
    moves the session's token only if the records differ (:meth:`store`).
    """

    def __init__(self, limit: int = _RECORD_CACHE_LIMIT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, dict[str, FileRecord]] = OrderedDict()
        self._identities: dict[str, object] = {}
        self._read_at: dict[str, float] = {}  # when each copy was read (monotonic)
        self._linked: set[str] = set()  # copies with a record linked elsewhere
        self._generations: dict[str, int] = {}
        # The newest change among each copy's records (`newest`): kept as writes change the
        # copy, so a change need not read the whole session again to be dated after it.
        self._newest: dict[str, datetime | None] = {}
        # Each copy's names the app itself changed since it was read, whose event (a name
        # event in records/, `SessionWatch`) has not come yet: one event each (`entry`).
        self._own: dict[str, Counter[str]] = {}
        self._epoch = 0
        self._held = 0

    def token(self, session_id: str) -> tuple[int, int]:
        """A value every write of ``session_id``'s records through this root changes.

        What is derived from records read while the token held can be kept under it: it is
        as fresh as the records here while the token is unchanged (:meth:`get` gives both).
        """
        with self._lock:
            return self._epoch, self._generations.get(session_id, 0)

    def get(
        self, session_id: str, identity: object, max_age: float = math.inf
    ) -> tuple[list[FileRecord] | None, tuple[int, int]]:
        """The records kept for ``session_id`` if its ``records/`` is still ``identity`` and
        they were read at most ``max_age`` seconds ago (not :meth:`due`)."""
        with self._lock:
            token = (self._epoch, self._generations.get(session_id, 0))
            records = self._kept(session_id, identity, max_age)
            if records is None:
                return None, token
            self._sessions.move_to_end(session_id)
            return list(records.values()), token

    def newest(
        self,
        session_id: str,
        identity: object,
        max_age: float,
        fold: Callable[[Iterable[FileRecord]], datetime | None],
    ) -> tuple[bool, datetime | None]:
        """``(True, fold(records))`` for the copy kept of ``session_id``'s records, if
        :meth:`get` would give it; ``(False, None)`` if it must be read again.

        ``fold`` (`app.store.records.change_floor`) runs over the whole copy once; each write
        through :meth:`changed` then keeps the result, which is a maximum: a record added
        later than it becomes it, and only the removal of the record it came from makes the
        whole copy be folded again. At 9,000 files, folding a session on every upload and
        delete took a third of the change's time.
        """
        with self._lock:
            records = self._kept(session_id, identity, max_age)
            if records is None:
                return False, None
            if session_id not in self._newest:
                self._newest[session_id] = fold(records.values())
            return True, self._newest[session_id]

    def _kept(
        self, session_id: str, identity: object, max_age: float
    ) -> dict[str, FileRecord] | None:
        """The copy of ``session_id``'s records, if still ``identity`` and not :meth:`due`
        (under the lock)."""
        records = self._sessions.get(session_id)
        if (
            records is None
            or self._identities.get(session_id) != identity
            or self._due(session_id, max_age)
        ):
            return None
        return records

    def due(self, session_id: str, max_age: float) -> bool:
        """Whether ``session_id``'s records must be read again: none kept, kept more than
        ``max_age`` seconds, expired by an event, or with a record linked elsewhere."""
        return self._due(session_id, max_age)  # dict and set reads: no lock (every read asks)

    def linked(self, session_id: str) -> bool:
        """Whether the copy kept has a record linked elsewhere (never trusted on events)."""
        return session_id in self._linked  # a set read: atomic under the interpreter lock

    def expire(self, session_id: str | None) -> None:
        """Something may have changed ``session_id``'s records (None: any session's)."""
        with self._lock:
            if session_id is None:
                self._read_at.clear()
                self._own.clear()
            else:
                self._read_at.pop(session_id, None)
                self._own.pop(session_id, None)

    def entry(self, session_id: str, name: str) -> None:
        """The watch saw ``name`` added, removed or renamed in ``session_id``'s records/ (no
        name: records/' own times set; the app's own is a delete's, `changed`'s ``dated``).

        The app's own change of ``name`` (`changed`) is one such event, and its copy stays:
        records/'s identity, taken after the write, tells every later change of names there.
        Any other expires the copy. An identity taken after the write does not tell a change
        by hand made between the app's rename and its look (the directory's ``fsync``): the
        copy was kept under the identity that change left, for a minute for a change's floor
        and a second for reads (red team 58 on the merges)."""
        with self._lock:
            own = self._own.get(session_id)
            if own is not None and own[name] > 0:
                own[name] -= 1
                if not own[name]:
                    del own[name]  # each name's count goes as its event comes
                return
            self._read_at.pop(session_id, None)
            self._own.pop(session_id, None)

    def _due(self, session_id: str, max_age: float) -> bool:
        read_at = self._read_at.get(session_id)
        return read_at is None or session_id in self._linked or time.monotonic() - read_at > max_age

    def store(
        self,
        session_id: str,
        records: list[FileRecord],
        token: tuple[int, int],
        identity: object,
        linked: bool = False,
    ) -> None:
        """Keep a scan of ``session_id``'s ``records/`` (``identity`` taken before the scan;
        ``linked``: a record there is linked elsewhere).

        A scan that differs from the copy kept (or with no copy to compare with: what was
        derived from an evicted one may still be kept) moves the session's token, so that
        nothing derived from the records before it is answered again.
        """
        with self._lock:
            if token != (self._epoch, self._generations.get(session_id, 0)):
                return  # a write happened during the scan
            scanned = {r["name"]: r for r in records}
            if (
                self._identities.get(session_id) != identity
                or self._sessions.get(session_id) != scanned
            ):
                self._generations[session_id] = token[1] + 1
            if len(records) > self.limit:
                self._forget(session_id)
                return
            self._forget(session_id)
            self._sessions[session_id] = scanned
            self._identities[session_id] = identity
            self._read_at[session_id] = time.monotonic()
            if linked:
                self._linked.add(session_id)
            self._held += len(records)
            while self._held > self.limit:
                self._forget(next(iter(self._sessions)))  # the least recently used

    def changed(
        self,
        session_id: str,
        name: str | None = None,
        record: FileRecord | None = None,
        identity: object = None,
        *,
        dated: bool = False,
    ) -> None:
        """A write changed ``name`` (now ``record``, ``None`` if gone); no name: drop all.

        ``identity``: with a name, ``records/``'s identity once the write was made (the
        writer holds the session's lock, so no other write of the app came between).
        ``dated``: the write also set records/' own time (a delete's,
        `app.store.records.date_records`), an event of the watch's that is the app's own too
        (`entry` with no name).
        """
        with self._lock:
            self._generations[session_id] = self._generations.get(session_id, 0) + 1
            records = self._sessions.get(session_id)
            if records is None:
                return
            if name is None or identity is None:
                self._forget(session_id)
                return
            self._identities[session_id] = identity
            own = self._own.setdefault(session_id, Counter())
            own[name] += 1
            if dated:
                own[""] += 1
            if session_id in self._newest:
                self._keep_newest(session_id, records.get(name), record)
            if record is None:
                self._held -= records.pop(name, None) is not None
            else:
                self._held += name not in records
                records[name] = record

    def _keep_newest(self, session_id: str, old: FileRecord | None, new: FileRecord | None) -> None:
        """The fold kept for ``session_id`` once ``old`` gives way to ``new`` (`newest`)."""
        newest = self._newest[session_id]
        added = record_time(new)
        if added is not None and (newest is None or added >= newest):
            self._newest[session_id] = added
        elif newest is not None and (gone := record_time(old)) is not None and gone >= newest:
            del self._newest[session_id]  # the newest may have gone with it: fold again

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self._sessions.clear()
            self._identities.clear()
            self._newest.clear()
            self._read_at.clear()
            self._own.clear()
            self._linked.clear()
            self._held = 0

    def _forget(self, session_id: str) -> None:
        """Drop everything kept of ``session_id`` (the one place that knows all of it)."""
        records = self._sessions.pop(session_id, None)
        self._identities.pop(session_id, None)
        self._newest.pop(session_id, None)
        self._read_at.pop(session_id, None)
        self._own.pop(session_id, None)
        self._linked.discard(session_id)
        if records is not None:
            self._held -= len(records)


class GroupSync:
    """Group commit for one directory: concurrent callers share one ``fsync``.

    A caller's change (a rename into the directory) is made before it calls :meth:`sync`;
    it returns once an fsync that *started* after the call has completed. While one fsync
    runs, later callers queue and the next fsync covers all of them, so N concurrent
    creates cost about two directory syncs instead of N. A failed fsync is never followed
    by a success: each caller it covered runs its own, which :func:`app.dataroot.fsync`
    refuses (red team 28: they were answered 201 by a later fsync that succeeded).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._running = False

    def sync(self, fd: int) -> None:
        """Return once an fsync of the directory that started after this call completed.

        Args:
            fd: the caller's descriptor of the directory, opened before its change (see
                :class:`app.dataroot.Prepared`): whoever runs the fsync uses its own.
        """
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._completed < ticket and self._running:
                self._cond.wait()
            if self._completed >= ticket:
                return
            self._running = True
            covers = self._requested
        try:
            # Through app.dataroot.fsync: after a failure there, the waiters it covered
            # each run their own and are refused too, never answered by a later success.
            fsync(fd)
        except BaseException:
            with self._cond:
                self._running = False
                self._cond.notify_all()
            raise
        with self._cond:
            self._running = False
            self._completed = max(self._completed, covers)
            self._cond.notify_all()


# --- fsyncs of one batch made at once ----------------------------------------------------

#: Helper threads (beside the caller's own) that make a batch's fsyncs at once.
SYNC_HELPERS: Final = 7
#: An idle helper ends after this many seconds; the next batch starts another.
_HELPER_IDLE_SECONDS: Final = 5.0


class _Batch:
    """``step(item)`` for each item, claimed one at a time by whichever thread comes."""

    def __init__(self, step: Callable[[_T], None], items: Sequence[_T]) -> None:
        self.step = step
        self.items = items
        self.results: list[BaseException | None] = [None] * len(items)
        self._lock = threading.Lock()
        self._next = 0
        self._done = 0
        self._finished = threading.Event()
        if not items:
            self._finished.set()

    def work(self) -> None:
        """Make steps until none is left to claim (each made once, by one thread)."""
        while True:
            with self._lock:
                index = self._next
                if index >= len(self.items):
                    return
                self._next += 1
            try:
                self.step(self.items[index])
            except BaseException as error:  # this item's answer (re-raised if not an Exception)
                self.results[index] = error
            finally:
                with self._lock:
                    self._done += 1
                    if self._done == len(self.items):
                        self._finished.set()

    def wait(self) -> None:
        self._finished.wait()


class SyncHelpers:
    """Threads that make the fsyncs of one batch of creates at once (`at_once`).

    A batch's fsyncs, one after another on its committer thread, waited for the disk one at a
    time: on this machine's virtio disk eight files and their staging directories synced one
    after another took 9 to 15 ms, and from eight threads at once 0.7 to 1 ms, the disk and
    the block layer's flush taking them together (bench/README.md, "perf-server61"). Nothing
    waits for a helper: the caller makes steps itself until none is left, then waits only for
    those a helper began, so a helper that never started (the process's thread limit) or came
    late only makes the batch slower, never unmade.
    """

    def __init__(self, most: int = SYNC_HELPERS) -> None:
        self._most = most
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._batches: deque[_Batch] = deque()
        self._idle = 0
        self._threads = 0

    def at_once(
        self, step: Callable[[_T], None], items: Sequence[_T]
    ) -> list[BaseException | None]:
        """``step(item)`` for every item, on this thread and helpers at once; each one's
        error or ``None``, in order, once every step has ended."""
        batch = _Batch(step, items)
        if len(items) > 1:
            wanted = min(len(items) - 1, self._most)
            with self._cond:
                self._batches.extend([batch] * wanted)
                self._cond.notify(min(self._idle, wanted))
                for _ in range(min(wanted - self._idle, self._most - self._threads)):
                    if not self._start():
                        break
        batch.work()
        if len(items) > 1:
            with self._cond:  # what no helper took: nothing left in it to claim
                if batch in self._batches:
                    self._batches = deque(b for b in self._batches if b is not batch)
        batch.wait()
        return batch.results

    def _start(self) -> bool:
        # Under _cond. Daemon threads, as the committer's: serve waits for the committer,
        # which waits for its batch, before the root is released.
        thread = threading.Thread(target=self._run, name="app-sync", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # at the process's limit of threads: the caller makes them all
            return False
        self._threads += 1
        return True

    def _run(self) -> None:
        cond = self._cond
        try:
            while True:
                with cond:
                    while not self._batches:
                        self._idle += 1
                        try:
                            woken = cond.wait(_HELPER_IDLE_SECONDS)
                        finally:
                            self._idle -= 1
                        if not woken and not self._batches:
                            return
                    batch = self._batches.popleft()
                batch.work()
        finally:
            with cond:
                if cond is self._cond:  # not a forked child's copy, reset since
                    self._threads -= 1


#: The helpers every store of this process shares.
SYNCS = SyncHelpers()
# A forked child has none of the parent's threads: it starts its own.
os.register_at_fork(after_in_child=SYNCS._reset)
