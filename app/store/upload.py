"""An upload: a file streamed into ``.tmp/``, hashed on the way, visible only on commit."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Final

from app import storage
from app.errors import UploadChangedOnDiskError, UploadTooLargeError
from app.store.records import moved_changed

if TYPE_CHECKING:
    from pathlib import Path

    from app.digests import Digests
    from app.storage import FileEntry, IfMatch
    from app.store.files import Files

__all__ = ["Upload"]

#: How much of an upload's temporary file its commit reads back at a time (`_Reread`), and
#: up to which size it reads it on the commit's own thread.
_REREAD_BYTES: Final = 1 << 20


class Upload(storage.Upload):
    """A file being streamed into a session; create it with :meth:`Store.begin_upload`.

    The bytes go to a new temporary file in ``.tmp/`` as they arrive, are hashed on the
    way, and appear under their name only on :meth:`commit`. Used as a context manager, an
    upload not committed by the end of the block is aborted.

    Examples:
        >>> with store.begin_upload(session_id, "notes.txt") as upload:
        ...     for chunk in chunks:
        ...         upload.write(chunk)
        ...     entry = upload.commit()
    """

    def __init__(
        self,
        files: Files,
        session_id: str,
        name: str,
        *,
        replace: bool,
        if_match: IfMatch | None = None,
        digests: Digests | None = None,
    ) -> None:
        self.files = files
        # if_match is checked again under the session's lock, as the commit renames.
        self._begin(
            session_id,
            name,
            replace=replace,
            limit=files.max_upload_bytes,
            if_match=if_match,
            digests=digests,
        )
        self._hash = hashlib.sha256()
        self._file: IO[bytes] | None
        self._file, self.temp_path = files.root.new_temp_file()
        self._done = False
        self._written: os.stat_result | None = None
        self._reread: _Reread | None = None

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append ``chunk``; over ``max_upload_bytes``, abort and raise UploadTooLargeError."""
        if self._file is None:
            msg = f"upload of {self.name!r} is already finished"
            raise RuntimeError(msg)
        self.received += len(chunk)
        if self.received > self.limit:
            received = self.received
            self.abort()
            raise UploadTooLargeError(self.limit, received)
        self._hash.update(chunk)
        self._file.write(chunk)

    def write_all(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Append every chunk in order (one call for a batch; see :meth:`write`)."""
        for chunk in chunks:
            self.write(chunk)

    def commit(self) -> FileEntry:
        """Make the file durable and switch it into the session; returns its entry.

        On any refusal (the session was deleted meanwhile, the name was taken and
        ``replace`` was not asked for) the upload is aborted.
        """
        if self._file is None:
            msg = f"upload of {self.name!r} is already finished"
            raise RuntimeError(msg)
        try:
            # Flushed, not closed: the open file's flock marks it in flight until the
            # rename (another writer's clean-up of .tmp/ skips it); commit_temp_file fsyncs.
            self._file.flush()
            self._check_on_disk()
            sha256 = self._hash.hexdigest()
            if self.digests is not None:
                self.digests.require(self.session_id, self.name, sha256)
            entry: FileEntry = {
                "name": self.name,
                "size": self.received,
                "sha256": sha256,
                # Stamped by the commit, under the session's lock (`Files._moment`).
                "uploaded_at": "",
            }
            self.files.commit_upload(self, entry)
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._reread = None  # waited for by check_moved
        with contextlib.suppress(OSError):
            self._file.close()
        self._file = None
        return entry

    def _check_on_disk(self) -> None:
        """Refuse a temporary file that is not what was written: the commit renames it by
        its path and records the SHA-256 of the bytes received (red team 44). Then seal it
        and start reading it back (`_Reread`), which :meth:`check_moved` waits for."""
        assert self._file is not None
        written = os.fstat(self._file.fileno())
        try:
            named = os.lstat(self.temp_path)
        except FileNotFoundError:
            named = None
        damage = None
        if named is None or (named.st_dev, named.st_ino) != (written.st_dev, written.st_ino):
            damage = "is gone" if named is None else "is another file than the one written"
        elif written.st_size != self.received:
            damage = f"holds {written.st_size} bytes where {self.received} were received"
        if damage is not None:
            raise UploadChangedOnDiskError(self.session_id, self.name, damage)
        fd = self._file.fileno()
        # Sealed: its modification time set to just before the app's last write's, which no
        # later write gives it, in this very clock tick too (`moved_changed` compares it).
        os.utime(fd, ns=(written.st_atime_ns, written.st_mtime_ns - 1))
        self._written = os.fstat(fd)
        self._reread = _Reread(fd, self.received)

    def check_moved(self, dest: Path) -> None:
        """Refuse the file renamed to ``dest`` if it is not the one :meth:`_check_on_disk`
        saw, as it was: the commit renames by path, after a wait for the session's lock, and
        another file put at the temporary name meanwhile went in its place (red team 75 on
        integrity, round 2), or if it does not hold the bytes received (`_Reread`).
        The caller removes what it renamed."""
        assert self._file is not None and self._written is not None
        assert self._reread is not None
        damage = moved_changed(self._file.fileno(), self._written, dest)
        if damage is None and (digest := self._reread.digest()) != self._hash.hexdigest():
            damage = (
                f"holds other bytes than were received (their SHA-256 is {digest}, that of "
                f"the bytes received {self._hash.hexdigest()})"
            )
        if damage is not None:
            raise UploadChangedOnDiskError(self.session_id, self.name, damage)

    def abort(self) -> None:
        """Forget the upload and remove its temporary file. Idempotent."""
        if self._reread is not None:
            # Before the close: the read goes through this descriptor's number.
            with contextlib.suppress(OSError):
                self._reread.digest()
            self._reread = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if not self._done:
            self._done = True
            with contextlib.suppress(FileNotFoundError):
                self.temp_path.unlink()

    @property
    def finished(self) -> bool:
        """Whether the upload was committed or aborted."""
        return self._done


class _Reread:
    """The SHA-256 of what an upload's temporary file holds, read back through the
    descriptor it was written by (mkstemp's reads as well as writes).

    A write in place from outside (``dd conv=notrunc``, a tool that rewrites what it finds
    in ``.tmp/``) while the body streamed left the size as received, and the app's next
    write set the modification time: the upload was acknowledged with the SHA-256 of bytes
    the disk did not hold (red team 76 on integrity). Read after the seal, this finds a
    write before it; `moved_changed` finds one after it. Past `_REREAD_BYTES`, read on a
    thread of its own while the commit waits for the session's lock and fsyncs (the hash
    and the disk's writes overlap); the commit waits for it before it answers.
    """

    def __init__(self, fd: int, size: int) -> None:
        self._fd, self._size = fd, size
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if size > _REREAD_BYTES:
            thread = threading.Thread(target=self._run, name="upload-reread", daemon=True)
            # No thread to be had (the process at its limit): read on this one, slower.
            with contextlib.suppress(RuntimeError):
                thread.start()
                self._thread = thread
        if self._thread is None:
            self._run()

    def _run(self) -> None:
        try:
            found = hashlib.sha256()
            view = memoryview(bytearray(_REREAD_BYTES))
            offset = 0
            while offset < self._size:
                got = os.preadv(self._fd, [view], offset)
                if got == 0:
                    break
                found.update(view[:got])
                offset += got
            self._digest = found.hexdigest()
        except BaseException as error:  # raised where the commit waits (`digest`)
            self._error = error

    def digest(self) -> str:
        """The SHA-256 read, once the read is done; raises what the read raised."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._digest is not None
        return self._digest
