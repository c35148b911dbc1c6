"""`SparePool`: staging directories made ahead of the creates that will take them.

A create (`app.store.sessions.Sessions.create`) makes its session complete in a staging
directory and renames it into ``sessions/``. Making that directory (``mkdir``), the empty
``session.json`` in it (a second new inode) and the ``fsync`` that makes the file's entry in
it durable cost a create about a third of its system calls' time on this project's disks
(``bench/fs_ops.py``: 83, 56 and 65 us on ext4), on the request's path. A server keeps a few
of them ready instead: ``sessions/.spare-<32 hex>/`` holding an empty ``session.json``, made
by one background thread in batches (the directories and their files, then one ``fsync``
each, then one of ``sessions/``). A create that takes one writes its session into the empty
file, fsyncs it, and renames the directory into place; ``sessions/`` is then fsynced as
before (`app.store.concurrency.GroupSync`). What a 201 promises is unchanged: the file's
bytes, its entry in its directory, and the directory's entry in ``sessions/`` are all
durable before the answer. With no spare ready, a create makes its own staging directory as
it always did.

A spare is never a session: its name is not an id (listings read only ids), and a blank one
(an empty ``session.json``, or none) is nothing a crash leaves to repair. The writer that
opens a root removes every spare it did not make (`Sessions.clear_unfinished`); one that
holds bytes is a create that crashed before its rename, reported and removed as such
(``unfinished-create``). Every spare is made after the same holder check every write makes
(:meth:`app.dataroot.DataRoot.ensure_held`); a lost lock stops the pool for good, and the
spares then stay for the next holder to clear. A clean close removes the ready ones.

Why not a library: this is the store's own staging discipline; nothing outside it knows
which entries of ``sessions/`` a crash may leave.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
import threading
from typing import TYPE_CHECKING, Final

from app.dataroot import FILE_MODE, fsync_dir
from app.errors import AppError
from app.store.records import SESSION_FILE, SPARE_PREFIX

if TYPE_CHECKING:
    from app.dataroot import DataRoot

__all__ = ["SparePool", "is_blank_spare", "write_into_spare"]

log = logging.getLogger(__name__)

#: How long the pool waits after a batch failed for want of room or descriptors (creates
#: meanwhile make their own staging directories, and say what failed to their clients).
_RETRY_SECONDS: Final = 1.0


def spare_name() -> str:
    """A new spare's name: the prefix and 128 random bits (never an id, never reused)."""
    return f"{SPARE_PREFIX}{secrets.token_hex(16)}"


def is_blank_spare(path: str) -> bool:
    """Whether ``path`` is a spare as the pool makes it, before a create wrote into it: a
    real directory holding nothing but an empty regular ``session.json`` (or, if the pool
    stopped between the two, nothing)."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        names = os.listdir(path)  # noqa: PTH208 - string paths, as on the read paths
        if not names:
            return True
        if names != [SESSION_FILE]:
            return False
        info = os.lstat(f"{path}/{SESSION_FILE}")
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == 0


def write_into_spare(directory: str, data: bytes) -> bool:
    """Write ``data`` into a spare's empty ``session.json`` and fsync it.

    Returns ``False``, having written nothing, if the file is not the empty regular file the
    pool made (changed from outside meanwhile): the caller then stages the create itself.
    """
    fd = os.open(f"{directory}/{SESSION_FILE}", os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != 0 or info.st_nlink != 1:
            return False
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


class SparePool:
    """Spare staging directories of one held data root, refilled by one daemon thread.

    Args:
        root: the open data root; it must be held by this process (a writer).
        size: how many spares to keep ready; a batch refills to ``size`` once half are taken.
    """

    def __init__(self, root: DataRoot, size: int) -> None:
        self.root = root
        self.where = os.fspath(root.sessions_dir)
        self.size = size
        self._low = size // 2
        self._cond = threading.Condition()
        self._ready: list[str] = []
        # Every spare this pool made and did not give up: ready, being made, or taken by a
        # create that has not renamed or removed it yet. No clear or check of this process
        # touches these.
        self._known: set[str] = set()
        self._stopped = False
        self.lost: str | None = None
        """Why the pool stopped for good, if the root's hold was lost (else ``None``)."""
        self._thread = threading.Thread(target=self._run, name="app-spare-sessions", daemon=True)
        self._thread.start()

    def take(self) -> str | None:
        """A ready spare's name, now the caller's (give it back with :meth:`done`), or
        ``None`` if none is ready."""
        with self._cond:
            name = self._ready.pop() if self._ready and not self._stopped else None
            if len(self._ready) <= self._low:
                self._cond.notify_all()
        return name

    def done(self, name: str) -> None:
        """The spare ``name`` is no longer the pool's: renamed into a session, or removed."""
        with self._cond:
            self._known.discard(name)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is one of this pool's spares (ready, being made, or taken)."""
        with self._cond:
            return name in self._known

    def ready(self) -> int:
        """How many spares are ready now."""
        with self._cond:
            return len(self._ready)

    def wait_ready(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` spares are ready (for tests and the server's start)."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: len(self._ready) >= count or self._stopped, timeout=timeout
                )
                and len(self._ready) >= count
            )

    def close(self) -> None:
        """Stop the thread, then remove the ready spares if the root is still held."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            ready, self._ready = self._ready, []
        if not ready or self.lost is not None:
            return  # a root this process no longer holds is the next holder's to clear
        try:
            self.root.ensure_held()
        except (AppError, RuntimeError):  # lost, or released: no longer this process's
            return
        for name in ready:
            shutil.rmtree(f"{self.where}/{name}", ignore_errors=True)
            self.done(name)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or len(self._ready) <= self._low)
                if self._stopped:
                    return
                want = self.size - len(self._ready)
            try:
                made = self._make(want)
            except (AppError, RuntimeError) as error:
                # The hold is lost (LockLostError, DataRootChangedError), or the root closed.
                self.lost = str(error)
                log.warning("no more spare staging directories: %s", error)
                with self._cond:
                    self._stopped = True
                    self._cond.notify_all()
                return
            except OSError as error:  # no room, no descriptors: creates stage themselves
                log.warning(
                    "could not make spare staging directories in %s (%s); creates make "
                    "their own meanwhile, trying again in %.0f s",
                    self.where,
                    error,
                    _RETRY_SECONDS,
                )
                with self._cond:
                    self._cond.wait_for(lambda: self._stopped, timeout=_RETRY_SECONDS)
                continue
            with self._cond:
                self._ready.extend(made)
                self._cond.notify_all()

    def _make(self, want: int) -> list[str]:
        """Make up to ``want`` spares, durable: each directory and its empty file, one fsync
        of each directory, one of ``sessions/``. Each is made after the holder check."""
        made: list[str] = []
        try:
            with self.root.changing():
                for _ in range(want):
                    if self._stopped:
                        break
                    self.root.ensure_held()  # as every write: never in a root not held
                    name = spare_name()
                    with self._cond:
                        self._known.add(name)
                    made.append(name)
                    path = f"{self.where}/{name}"
                    os.mkdir(path, 0o700)  # noqa: PTH102 - string paths: a batch of many
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    os.close(os.open(f"{path}/{SESSION_FILE}", flags, FILE_MODE))
                for name in made:
                    fsync_dir(f"{self.where}/{name}")
                if made:
                    fsync_dir(self.where)
        except (AppError, RuntimeError):
            raise  # the hold is lost: what is made stays for the next holder to clear
        except BaseException:
            for name in made:
                shutil.rmtree(f"{self.where}/{name}", ignore_errors=True)
                self.done(name)
            raise
        return made
