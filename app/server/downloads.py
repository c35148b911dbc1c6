"""A download sent from the file the route opened, so that a delete in between cannot break it."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import anyio
from fastapi.responses import FileResponse
from starlette.datastructures import Headers
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from app.server.problems import ProblemResponse, problem
from app.server.threads import run_on_worker

if TYPE_CHECKING:
    from app.storage import FileEntry, Storage

# FileResponse's chunk: a file no larger is sent in one piece either way.
_CHUNK: Final = FileResponse.chunk_size


class OpenFileResponse(FileResponse):
    """A `FileResponse` that sends a file the route already opened, and closes it.

    Starlette's `FileResponse` stats and opens its path only when it sends, after the route
    returned: a file deleted (moved to the trash) in between made the download a 500. The
    route opens the file instead (`Store.open_file`, which answers 404 for a file that is
    gone); the open descriptor keeps its bytes whatever happens to the name afterwards.
    Ranges work as in `FileResponse`, which reads through `_open_file` (a private method:
    pyproject.toml bounds starlette's major release for that reason).

    A file without a descriptor (an object in object storage, read through ranged GETs:
    :class:`app.remote.transfer.ObjectFile`) is sent the same way: `FileResponse` needs only its
    size and time, which :func:`_object_stat` gives it, and it streams by seeking and reading,
    so a ``Range`` gets its 206 (or 416) and the headers are those of a local file.
    """

    def __init__(self, file: BinaryIO, *, data: bytes | None = None, **kwargs: Any) -> None:
        self._file = file
        self._data = data
        try:
            stat_result = os.fstat(file.fileno())
        except (OSError, AttributeError):  # io.UnsupportedOperation is an OSError
            stat_result = _object_stat(file)
        super().__init__(str(getattr(file, "name", "")), stat_result=stat_result, **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # pathsend would hand the server the path to reopen: the very race this avoids.
        extensions = dict(scope.get("extensions") or {})
        extensions.pop("http.response.pathsend", None)
        try:
            refusal = self._refuse_range(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            if self._data is not None and self._sent_whole(scope):
                head_only = scope["method"] == "HEAD"
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                body = b"" if head_only else self._data
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self._file.close()

    def _sent_whole(self, scope: Scope) -> bool:
        # The cases in which FileResponse sends the whole file, one chunk of it here: no
        # Range, or an If-Range that no longer matches. It would also start a task to watch
        # for a disconnect while it streams, and read on a worker thread: two more turns of
        # the event loop for bytes that are in memory already.
        headers = Headers(scope=scope)
        wanted, if_range = headers.get("range"), headers.get("if-range")
        return wanted is None or (if_range is not None and not self._should_use_range(if_range))

    def _refuse_range(self, scope: Scope) -> ProblemResponse | None:
        # FileResponse answers a Range it cannot serve in plain text; every error of this API
        # is a problem document. The same conditions as FileResponse's, checked first.
        headers = Headers(scope=scope)
        wanted, if_range = headers.get("range"), headers.get("if-range")
        if wanted is None or (if_range is not None and not self._should_use_range(if_range)):
            return None
        assert self.stat_result is not None  # given by __init__
        size = self.stat_result.st_size
        try:
            self._parse_range_header(wanted, size)
        except MalformedRangeHeader as error:
            return problem(
                400, "bad_request", f"malformed Range header {wanted!r}: {error.content}"
            )
        except RangeNotSatisfiable:
            return problem(
                416,
                "range_not_satisfiable",
                f"Range {wanted!r} is outside the file's {size} bytes; ask for bytes=0-{size - 1}"
                " at most",
                headers={"Content-Range": f"bytes */{size}"},
            )
        return None

    @contextlib.asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        self._file.seek(0)
        yield anyio.wrap_file(self._file)  # closed by __call__, once, whatever was sent


async def file_response(store: Storage, session_id: str, name: str, *, read: bool) -> FileResponse:
    """The response of a download (``read``) or of its ``HEAD``: the file opened to send."""
    file, entry, data = await run_on_worker(_open_for_sending, store, session_id, name, read)
    try:
        headers = {"X-Content-Type-Options": "nosniff"}
        if entry.get("sha256"):
            headers["ETag"] = f'"{entry["sha256"]}"'
        return OpenFileResponse(
            file,
            data=data,
            media_type="application/octet-stream",
            filename=entry["name"],
            headers=headers,
        )
    except BaseException:
        file.close()
        raise


def _open_for_sending(
    store: Storage, session_id: str, name: str, read: bool
) -> tuple[BinaryIO, FileEntry, bytes | None]:
    """Open a file to send, and read it if it is one chunk at most (``read``); one call.

    Made on a worker thread: the open and a small file's read together cost
    one hand-over to the thread instead of two, and the response sends the bytes as they
    are. A larger file is streamed from the descriptor, a chunk at a time.
    """
    file, entry = store.open_file(session_id, name)
    try:
        if not read or entry.get("size", _CHUNK + 1) > _CHUNK:
            return file, entry, None
        data = file.read(_CHUNK + 1)
    except BaseException:
        file.close()
        raise
    # A file whose bytes are not what its entry says (not a size the read confirms) is
    # streamed as before, from the descriptor.
    return file, entry, data if len(data) <= _CHUNK else None


def _object_stat(file: BinaryIO) -> os.stat_result:
    # What FileResponse reads of a stat: the size (Content-Length, ranges) and the time
    # (Last-Modified). A seekable object knows its size; its `mtime` is the upload's time.
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    mtime = float(getattr(file, "mtime", 0.0))
    return os.stat_result((stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, size, mtime, mtime, mtime))
