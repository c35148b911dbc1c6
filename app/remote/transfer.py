"""Bytes in and out of the object store for :mod:`app.remote.store`: a file read through
ranged GETs, and an upload streamed into a new object.

Both work on immutable objects (``blobs/<hex>``): a reader never sees an object change, and an
upload's object is seen by nobody until the transaction that records it commits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from app import storage
from app.digests import Digests
from app.errors import DamagedFileError, UploadTooLargeError
from app.remote.errors import (
    CommitUnknownError,
    ObjectMissingError,
    ObjectStoreUnavailableError,
)
from app.remote.objects import NO_ANSWER, ObjectStore, ObjectStream, PutResult
from app.storage import FileEntry, IfMatch

__all__ = ["ObjectFile", "RemoteUpload"]

log = logging.getLogger("app.remote.store")

_FEED_DEPTH: Final = 16  # chunks an upload may queue ahead of the object store


# --- reading a file ---------------------------------------------------------------------------


#: What a download says of a file whose row is there and whose object is not.
OBJECT_LOST: Final = (
    "are not there (their object was removed from the object store from outside the app: "
    "by hand, a lifecycle rule, a restore that left it out; `app data check` names it, and "
    "only a backup or the bucket's versioning has it)"
)


#: What `app data check` reports of a row whose object is missing.
MISSING_FINDING: Final = "record-without-object"


class ObjectFile(io.RawIOBase):
    """A file's object, readable and seekable, fetched with ranged GETs as it is read.

    It has no ``fileno``: the server's download sends it as a stream (honouring ``Range``).
    A seek only moves the position; a read from anywhere but where the open stream stands
    closes it and opens one from there (so seeking to the end for the size and back costs
    no request). ``size`` and ``mtime`` come from the file's row.
    """

    #: What `app data check` reports of bytes not those acknowledged (`DamagedFileError`).
    damage_finding: Final = "record-object-changed"

    def __init__(
        self, objects: ObjectStore, blob: str, size: int, mtime: float, name: str, session_id: str
    ) -> None:
        super().__init__()
        self.session_id = session_id
        self._objects = objects
        self._blob = blob
        self.size = size
        self.mtime = mtime
        self.name = name
        self._position = 0
        self._at = 0  # where the open stream stands
        self._stream: ObjectStream | None = None
        self._chunks: Iterator[bytes] | None = None
        self._pending = memoryview(b"")

    def _open(self, start: int) -> None:
        # No Range for the start: an empty object has no byte 0 to ask for (416).
        try:
            self._stream = self._objects.get(self._blob, start=start or None)
        except ObjectMissingError:
            # As a data root answers a file whose bytes are gone, without the bucket or the
            # endpoint, which were sent to the client as "object_missing" (red team 49).
            raise DamagedFileError(
                self.session_id, self.name, OBJECT_LOST, finding=MISSING_FINDING
            ) from None
        found = self._stream.size
        if found != self.size:
            # Rewritten by hand: the bytes are not those the row describes (a shorter object
            # would end a response early, a longer one be cut at the recorded size).
            self._drop()
            raise DamagedFileError(
                self.session_id,
                self.name,
                f"are {found} bytes long, where {self.size} were acknowledged (their object "
                "was overwritten outside the app, which never rewrites one: the bucket's "
                "versioning may keep the version acknowledged)",
                finding=self.damage_finding,
            )
        self._chunks = iter(self._stream)
        self._pending = memoryview(b"")
        self._at = start

    def _drop(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream, self._chunks, self._pending = None, None, memoryview(b"")

    def _next_chunk(self) -> bytes | None:
        # The store died or cut the stream mid-object: the response has started, so its
        # client sees it end short of its Content-Length; the server's log names the file.
        from botocore.exceptions import BotoCoreError

        assert self._chunks is not None
        try:
            return next(self._chunks, None)
        except ObjectStoreUnavailableError:
            # Bytes unlike the store's own checksum of them (red team 57), said as such.
            self._drop()
            raise
        except BotoCoreError as error:
            self._drop()
            raise ObjectStoreUnavailableError(
                self._objects.where,
                f"{error}; the download of {self.name!r} from session {self.session_id} "
                f"(object {self._blob}) was cut off after {self._position} of {self.size} "
                "bytes: its client got a short answer and must download it again once the "
                "object store answers",
                credentials=self._objects.credentials,
                remedy=NO_ANSWER,
            ) from error

    def _move(self) -> None:
        """Have the stream stand at the position: a new GET from there.

        The object may be gone since the open: another replica's delete and empty-trash,
        which the download came before. A range past byte 0 was then cut, where a whole
        download goes on with the stream it opened, which the store serves whole (red team
        49). The stream open before, if it stands before the position, is then read on to it.
        """
        kept = (self._stream, self._chunks, self._pending, self._at)
        self._stream, self._chunks, self._pending = None, None, memoryview(b"")
        stream, chunks, pending, at = kept
        try:
            self._open(self._position)
        except DamagedFileError as error:
            if stream is None or at > self._position or error.finding != MISSING_FINDING:
                raise
            self._stream, self._chunks, self._pending, self._at = stream, chunks, pending, at
            stream = None  # read on, not closed
            self._skip(self._position - at)
        finally:
            if stream is not None:
                stream.close()

    def _skip(self, count: int) -> None:
        """Read ``count`` bytes of the open stream, and drop them."""
        while count > 0:
            if not self._pending:
                chunk = self._next_chunk()
                if chunk is None:
                    return  # the object ended early: the read after this says so
                self._pending = memoryview(chunk)
            dropped = min(count, len(self._pending))
            self._pending = self._pending[dropped:]
            self._at += dropped
            count -= dropped

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        # Fills the whole buffer unless the object ends: the server's sender takes a short
        # read for the end of the file.
        view = memoryview(buffer).cast("B")
        filled = 0
        if self._chunks is not None and self._at != self._position:
            self._move()
        while filled < len(view) and self._position < self.size:
            if not self._pending:
                if self._chunks is None:
                    self._open(self._position)
                assert self._chunks is not None
                chunk = self._next_chunk()
                if chunk is None:
                    break
                self._pending = memoryview(chunk)
            count = min(len(view) - filled, len(self._pending))
            view[filled : filled + count] = self._pending[:count]
            self._pending = self._pending[count:]
            filled += count
            self._position += count
            self._at += count
        return filled

    def close(self) -> None:
        self._drop()
        super().close()


# --- uploads ----------------------------------------------------------------------------------


class RemoteUpload(storage.Upload):
    """A file being streamed into a session; create it with
    :meth:`app.remote.store.RemoteStore.begin_upload`.

    The bytes go to a new object as they arrive (a thread runs :meth:`ObjectStore.put` over
    a bounded queue, so memory stays bounded and the object store sees one streamed write);
    :meth:`commit` finishes the object, then calls ``record``, which writes the row naming
    it in one transaction. Used as a context manager, an upload not committed by the end of
    the block is aborted.
    """

    def __init__(
        self,
        objects: ObjectStore,
        record: Callable[[RemoteUpload, PutResult], FileEntry],
        session_id: str,
        name: str,
        *,
        replace: bool,
        limit: int,
        if_match: IfMatch | None = None,
        digests: Digests | None = None,
    ) -> None:
        self.objects = objects
        self._record = record
        # if_match is checked again in the transaction that records it; digests before the
        # row is written.
        self._begin(
            session_id, name, replace=replace, limit=limit, if_match=if_match, digests=digests
        )
        self.blob = objects.new_blob_name()
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(_FEED_DEPTH)
        self._result: PutResult | None = None
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._put, name="app-upload", daemon=True)
        self._thread.start()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self) -> None:
        try:
            self._result = self.objects.put(self.blob, self._chunks(), length=self.limit)
        except BaseException as error:  # handed to the writer, which raises it
            self._error = error

    def _feed(self, item: bytes | BaseException | None) -> None:
        while True:
            if self._error is not None or not self._thread.is_alive():
                break  # the writer has stopped reading: nothing more to hand it
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.2)
                return
        if self._error is not None and not isinstance(item, BaseException):
            error = self._refusal(self._error)
            self.abort()
            raise error

    def _refusal(self, error: BaseException) -> BaseException:
        # The object store's own words name the store, not what it refused: say which upload
        # went, and that the file (a replace's old version) is untouched.
        if not isinstance(error, ObjectStoreUnavailableError):
            return error
        # The object store may keep what it received of it (a multipart upload whose abort
        # did not get through either): said, with the command that finds it (red team 28).
        log.warning(
            "the upload of %r into session %s (object %s) was not saved: %s",
            self.name, self.session_id, self.blob, error.reason,
        )  # fmt: skip
        reason = (
            f"{error.reason}; the upload of {self.name!r} into session {self.session_id} was "
            "not saved, and the file is as it was: retry once the object store answers. What "
            f"it may have kept of it (object {self.blob}, or its parts) no file names; "
            "`app data check` lists it and --repair removes it"
        )
        # Its own kind kept: a clock's refusal keeps the clock's remedy (red team 42).
        return dataclasses.replace(error, reason=reason)

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Send ``chunk`` on to the object.

        Raises:
            UploadTooLargeError: the upload went over ``max_upload_bytes`` (it is aborted).
        """
        if self._done:
            msg = f"upload of {self.name!r} is already finished"
            raise RuntimeError(msg)
        self.received += len(chunk)
        if self.received > self.limit:
            received = self.received
            self.abort()
            raise UploadTooLargeError(self.limit, received)
        if chunk:
            self._feed(bytes(chunk))

    def write_all(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Send every chunk in order (see :meth:`write`)."""
        for chunk in chunks:
            self.write(chunk)

    def commit(self) -> FileEntry:
        """Finish the object, then record it in one transaction.

        Returns:
            The file's entry: ``name``, ``size``, ``sha256``, ``uploaded_at``.

        Raises:
            SessionNotFoundError: the session was deleted meanwhile.
            FileExistsInSessionError: the name exists and ``replace`` was not asked for.
            TooManyFilesError: the session filled up meanwhile.
            HolderLostError: this replica lost its hold on the database.
            CommitUnknownError: the connection broke while the row committed, and the
                database could not say whether it did; the object is kept.
        """
        if self._done:
            msg = f"upload of {self.name!r} is already finished"
            raise RuntimeError(msg)
        try:
            self._feed(None)
            self._thread.join()
            if self._error is not None:
                raise self._refusal(self._error) from self._error
            assert self._result is not None
            if self.digests is not None:
                # Before the row: an object no row names is deleted by abort (or `check`).
                self.digests.require(self.session_id, self.name, self._result.sha256)
            entry = self._record(self, self._result)
        except CommitUnknownError:
            # A row may name the object: deleting it could lose a saved file. If the commit
            # did not happen, `app data check` finds the object that no row names.
            self._done = True
            raise
        except BaseException:
            self.abort()
            raise
        self._done = True
        return entry

    def abort(self) -> None:
        """Forget the upload and delete its object, if it got that far. Idempotent."""
        if self._done:
            return
        self._done = True
        if self._thread.is_alive():
            self._feed(RuntimeError(f"upload of {self.name!r} aborted"))
            self._thread.join()
        if self._result is not None:
            # Never recorded, so nobody can see it; if this delete fails, `check` removes it.
            try:
                self.objects.delete(self.blob)
            except Exception as error:  # the abort itself must not fail
                log.warning("could not delete the aborted upload's object %s: %s", self.blob, error)

    @property
    def finished(self) -> bool:
        """Whether the upload was committed or aborted."""
        return self._done
