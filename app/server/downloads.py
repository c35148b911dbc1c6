"""A download sent from the file the route opened, so that a delete in between cannot break it."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
from collections.abc import AsyncIterator, Callable, Mapping
from typing import IO, Any, BinaryIO

import anyio
from fastapi.responses import FileResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Message, Receive, Scope, Send

from app.errors import DamagedFileError, storage_error
from app.server.problems import ProblemResponse, problem
from app.server.protocol import Abandoned

# One range of RFC 9110's range-set (14.1.2): first-last, first- or -suffix, in ASCII digits.
_RANGE_SPEC = re.compile(r"[0-9]+-[0-9]*|-[0-9]+", re.ASCII)

log = logging.getLogger("app.server")


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

    # Read, hashed and sent 1 MiB at a time, where Starlette's default is 64 KiB: each chunk
    # costs a hop to a worker thread and back, and at 64 KiB those hops, not the hash, were
    # most of a download's CPU. A 256 MiB download (bench/download.py, medians of 7 runs)
    # went from 0.68 to 1.94 to 2.31 times the rate of the code before the hash, at 0.98 to
    # 1.09 ms of server CPU per MiB against 2.11 to 2.73; reading the next chunk while one
    # is sent gained nothing more. At most 1 MiB is held per download being sent.
    chunk_size = 2**20

    def __init__(
        self, file: BinaryIO, *, session_id: str, entry: Mapping[str, Any], **kwargs: Any
    ) -> None:
        self._file = file
        try:
            stat_result = os.fstat(file.fileno())
        except (OSError, AttributeError):  # io.UnsupportedOperation is an OSError
            stat_result = _object_stat(file)
        # The bytes must be those the file's record acknowledged. A blob is never changed
        # once written, so bytes of another size (cut, grown: a disk fault, an edit, a
        # partial restore) were answered as a 200 of that size under the old ETag, and the
        # client took a damaged file for the acknowledged one (red team 35).
        self._session_id, self._name = session_id, str(entry.get("name", ""))
        # What `app data check` calls such bytes: an object's check has names of its own.
        self._finding = str(getattr(file, "damage_finding", "file-damaged"))
        size, self._sha256 = entry.get("size"), entry.get("sha256")
        if isinstance(size, int) and size != stat_result.st_size:
            raise DamagedFileError(
                session_id,
                self._name,
                f"are {stat_result.st_size} bytes long, where {size} were acknowledged",
                finding=self._finding,
            )
        super().__init__(str(getattr(file, "name", "")), stat_result=stat_result, **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # pathsend would hand the server the path to reopen: the very race this avoids.
        extensions = dict(scope.get("extensions") or {})
        extensions.pop("http.response.pathsend", None)
        wanted = Headers(scope=scope).get("range")
        if wanted is not None and wanted.partition("=")[0].strip(" \t").lower() != "bytes":
            # RFC 9110 (14.2): an origin server MUST ignore a Range of a unit it does not
            # understand; Starlette answered 400 "Only support bytes range" (red team 36).
            kept = [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]
            scope = {**scope, "headers": kept}
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            refusal = self._refuse_range(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            await super().__call__({**scope, "extensions": extensions}, receive, sending)
        except OSError as error:
            if not started:
                raise  # answered as the refusal it is (app.server.problems)
            # A read that failed once the answer had begun (a bad sector: EIO) was Starlette's
            # "Caught handled exception, but response already started" traceback, naming
            # neither the file nor the cause (red team 39). The client sees its answer cut.
            doing = f"{scope.get('method', 'GET')} {scope.get('path', '')}"
            said = storage_error(error, doing) or f"cannot {doing}: {error}"
            log.error("%s (the download was cut before its end)", said)
            raise Abandoned from error
        finally:
            self._file.close()

    def _refuse_range(self, scope: Scope) -> ProblemResponse | None:
        # FileResponse answers a Range it cannot serve in plain text; every error of this API
        # is a problem document. The same conditions as FileResponse's, checked first.
        headers = Headers(scope=scope)
        wanted, if_range = headers.get("range"), headers.get("if-range")
        if wanted is None or (if_range is not None and not self._should_use_range(if_range)):
            return None
        assert self.stat_result is not None  # given by __init__
        size = self.stat_result.st_size
        if (part := _malformed_range(wanted)) is not None:
            return problem(
                400,
                "bad_request",
                f"malformed Range header {wanted!r}: {part!r} is not a range; each is "
                "first-last, first- or -suffix in digits (bytes=0-99, bytes=100-, bytes=-50). "
                "Nothing was sent",
            )
        try:
            self._parse_range_header(wanted, size)
        except MalformedRangeHeader as error:
            return problem(
                400, "bad_request", f"malformed Range header {wanted!r}: {error.content}"
            )
        except RangeNotSatisfiable:
            # An empty file has no byte to ask for: its message said "ask for bytes=0--1".
            fix = (
                "the file is empty, so no range of it can be sent; send the GET without Range"
                if size == 0
                else f"each range starts past its end or is -0, a suffix of no byte; ask for "
                f"bytes=0-{size - 1} at most"
            )
            return problem(
                416,
                "range_not_satisfiable",
                f"Range {wanted!r} is outside the file's {size} bytes: {fix}",
                headers={"Content-Range": f"bytes */{size}"},
            )
        return None

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        """Starlette's ranges, of the range-specs of ``http_range`` the file can serve.

        RFC 9110 (14.1.1) calls a Range satisfiable if one of its ranges is, and has a 206
        carry the satisfiable ones (14.2); 416 is for a Range none of whose ranges starts
        within the file (15.5.17). Starlette answered 416 when any one did not:
        ``bytes=0-1,20000-`` of a 10 KiB file, or ``bytes=-0,0-1``, was refused as "each
        range starts past its end or is -0", which the first range belies (red team 71 on
        the HTTP contract). A range of neither kind stays, for Starlette to refuse.

        Numbers are compared as digits, never by int(), which refuses a string of over
        4,300 digits (ValueError): ``bytes=0-1,<4,301 digits>-`` was a 500 here, where
        Starlette skips such a part. Each range that reaches past the end is given to
        Starlette as one to the end (``first-``, ``0-`` for a suffix), as RFC 9110 reads it
        (14.1.2), so such a number there is not skipped either: ``bytes=0-<4,301 digits>``
        was 400 "range must be requested" (red team 71 on regress, rt-regress71d).

        A range whose last byte is before its first is refused here, as Starlette refuses
        ``9-5``, at any length: ``bytes=0-1,<4,301 digits>-5`` was a 206 of ``0-1`` alone
        (Starlette skipped the part its int() refused), ``bytes=<4,301 digits>-5`` 400 "range
        must be requested", and ``bytes=0-1,20-3`` of a 10-byte file 416 "each range starts
        past its end", which ``0-1`` belies (red team 71 on regress, rt-regress71h). The
        refusal names the range, and asks for last at least first: Starlette's words, "start
        must be less than end", of its end past the last byte, refused ``5-5``, one byte,
        to the letter, and named no range of several (rt-regress71m).
        """
        unit, _, specs = http_range.partition("=")
        parts = specs.split(",")
        if len(parts) <= cls.max_ranges and unit.strip().lower() == "bytes":
            if backwards := next((part.strip(" \t") for part in parts if _backwards(part)), ""):
                raise MalformedRangeHeader(
                    f"{backwards!r} ends before it starts; each range is "
                    "first-last with last at least first (bytes=5-9, or bytes=5-5 for one "
                    "byte). Nothing was sent"
                )
            kept = [_to_the_end(part, file_size) for part in parts if not _beyond(part, file_size)]
            if not any(part.strip(" \t") for part in kept):
                if any(part.strip(" \t") for part in parts):
                    raise RangeNotSatisfiable(file_size)  # each is past the end, or -0
            else:
                http_range = f"{unit}={','.join(kept)}"
        return super()._parse_range_header(http_range, file_size)

    def _should_use_range(self, http_if_range: str) -> bool:
        # Only the ETag (the bytes' SHA-256) may let a Range through an If-Range. Starlette
        # also honours the Last-Modified date, which has whole seconds: a file replaced
        # within the second of a partial download kept its date, and the resumed download
        # got the new version's tail after the old one's head. RFC 9110 (13.1.5) lets a
        # date count only when it is known to be strong, which a second is not here;
        # without a match the whole file is sent, which is always correct.
        return http_if_range == self.headers.get("etag")

    async def _handle_simple(self, send: Send, send_header_only: bool, send_pathsend: bool) -> None:
        """The whole file (not a range), its SHA-256 compared before its last byte goes."""
        if send_header_only or send_pathsend or not isinstance(self._sha256, str):
            await super()._handle_simple(send, send_header_only, send_pathsend)
            return
        await self._send_checked(send, self.status_code, self.raw_headers)

    async def _handle_single_range(
        self, send: Send, start: int, end: int, file_size: int, send_header_only: bool
    ) -> None:
        """A range; one of the whole file (``bytes=0-``, a download manager's first request)
        is checked as the whole file is, where it was a complete 206 of damaged bytes."""
        whole = start == 0 and end == file_size
        if send_header_only or not whole or not isinstance(self._sha256, str):
            await super()._handle_single_range(send, start, end, file_size, send_header_only)
            return
        headers = MutableHeaders(raw=list(self.raw_headers))
        headers["content-range"] = f"bytes 0-{file_size - 1}/{file_size}"
        headers["content-length"] = str(file_size)
        await self._send_checked(send, 206, headers.raw)

    async def _send_checked(
        self, send: Send, status: int, raw_headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Send the whole file, its SHA-256 compared with the ``ETag`` before its last byte.

        Bytes of the acknowledged size may still differ (a flipped bit). Comparing before
        the answer would read the file twice; instead the chunk that completes the file is
        held back until the hash of everything read matches, and on a mismatch the
        connection is cut there: the client sees a download cut short, never a complete
        answer of the wrong bytes under the acknowledged ``ETag`` (which a cache would keep).
        A range of part of the file cannot be checked so, and is sent as read (its size was).
        """
        expected = self._sha256
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        assert self.stat_result is not None  # given by __init__
        left = self.stat_result.st_size
        digest = hashlib.sha256()
        async with self._open_file() as file:
            raw = file.wrapped

            def read_hashed() -> bytes:  # on the worker thread that reads, not the loop
                # No more than is left: a read of 1 MiB allocates 1 MiB first (15 us for a
                # 4 KiB file, against 1 us for a read of its size).
                chunk = raw.read(min(self.chunk_size, left))
                digest.update(chunk)
                return chunk

            more_body = True
            while more_body:
                chunk = await anyio.to_thread.run_sync(read_hashed)
                left -= len(chunk)
                more_body = bool(chunk) and left > 0
                # At the chunk that completes the file's length, not at the empty read after
                # it: by then a client framed by Content-Length would hold a whole answer.
                if not more_body and digest.hexdigest() != expected:
                    error = DamagedFileError(
                        self._session_id,
                        self._name,
                        f"have the SHA-256 {digest.hexdigest()}, where {expected} was acknowledged",
                        "its download was cut before its last byte",
                        finding=self._finding,
                    )
                    log.error("%s", error)
                    raise Abandoned from error
                await send({"type": "http.response.body", "body": chunk, "more_body": more_body})

    @contextlib.asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        self._file.seek(0)
        assert self.stat_result is not None  # given by __init__
        # closed by __call__, once, whatever was sent
        yield _ShortReads(self._file, self.stat_result.st_size, self._cut)

    def _cut(self, at: int) -> None:
        """A read that ended at ``at``, short of the size the answer's headers promised:
        the file was cut under the download (`truncate` from outside the app). Starlette's
        ranges then failed in h11 ("Too little data for declared Content-Length") or with
        a `RuntimeError` naming the server's path, a traceback that named neither the file
        nor the cause (red team 44). The client sees its answer cut short, as before."""
        assert self.stat_result is not None  # given by __init__
        error = DamagedFileError(
            self._session_id,
            self._name,
            f"ended at byte {at} while they were sent, where {self.stat_result.st_size} "
            "were acknowledged",
            "its download was cut before its last byte",
            finding=self._finding,
        )
        log.error("%s", error)
        raise Abandoned from error


class _ShortReads(anyio.AsyncFile[bytes]):
    """A file read through `anyio`, that calls ``cut`` at a read that ends before ``size``
    (the length the answer's headers were built from)."""

    def __init__(self, file: IO[bytes], size: int, cut: Callable[[int], None]) -> None:
        super().__init__(file)
        self._size, self._cut, self._at = size, cut, 0

    async def seek(self, offset: int, whence: int | None = os.SEEK_SET) -> int:
        self._at = await super().seek(offset, whence)
        return self._at

    async def read(self, size: int = -1) -> bytes:
        chunk = await super().read(size)
        self._at += len(chunk)
        if len(chunk) < size and self._at < self._size:
            self._cut(self._at)
        return chunk


def _object_stat(file: BinaryIO) -> os.stat_result:
    # What FileResponse reads of a stat: the size (Content-Length, ranges) and the time
    # (Last-Modified). A seekable object knows its size; its `mtime` is the upload's time.
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    mtime = float(getattr(file, "mtime", 0.0))
    return os.stat_result((stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, size, mtime, mtime, mtime))


def _beyond(spec: str, size: int) -> bool:
    """Whether ``spec``, one range of a ``bytes=`` Range, is a valid one that no byte of a
    file of ``size`` bytes is in (RFC 9110, 14.1.2): a first byte at or past its end (with
    a last byte not before it), or ``-0``, a suffix of no byte."""
    first, dash, last = spec.strip(" \t").partition("-")
    if not dash or not (first + last).isdigit() or not (first + last).isascii():
        return False
    if not first:
        return _number(last) == _number("0")
    return _number(first) >= _number(str(size)) and (not last or _number(last) >= _number(first))


def _backwards(spec: str) -> bool:
    """Whether ``spec``, one range of a ``bytes=`` Range, is ``first-last`` in digits with
    ``last`` before ``first`` (RFC 9110, 14.1.1: invalid)."""
    first, _, last = spec.strip(" \t").partition("-")
    if not (first and last and (first + last).isdigit() and (first + last).isascii()):
        return False
    return _number(last) < _number(first)


def _to_the_end(spec: str, size: int) -> str:
    """``spec`` (a range of a ``bytes=`` Range) without leading zeros, and, if it reaches
    past the end of a file of ``size`` bytes, as ``first-`` (``0-`` for a suffix of ``size``
    or more), the same bytes."""
    first, dash, last = spec.strip(" \t").partition("-")
    if not dash or not (first + last).isdigit() or not (first + last).isascii():
        return spec
    # Leading zeros count toward int()'s limit too.
    first, last = first.lstrip("0") or first[:1], last.lstrip("0") or last[:1]
    if last and _number(last) >= _number(str(size)) and _number(last) >= _number(first):
        return f"{first}-" if first else "0-"
    return f"{first}-{last}"


def _number(digits: str) -> tuple[int, str]:
    """ASCII ``digits`` ordered as the number they spell, at any length (int() refuses over
    4,300 digits)."""
    significant = digits.lstrip("0")
    return len(significant), significant


def _malformed_range(wanted: str) -> str | None:
    """The first range of a ``bytes=`` Range that is not one, else None.

    Starlette skips such a part and serves the rest, and reads a number as Python's int()
    does: ``bytes=2-4,x`` was a 206 of one range where two were asked for, and ``+2``,
    ``1_0`` or a full-width digit were numbers. Empty list elements are allowed, as
    RFC 9110 (5.6.1) says a recipient must accept them; another unit is left to Starlette.
    """
    unit, _, ranges = wanted.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    for element in ranges.split(","):
        part = element.strip(" \t")
        if part and _RANGE_SPEC.fullmatch(part) is None:
            return part
    return None
