"""Receiving an upload: how many at once, how large, and its bytes written to disk once.

Both upload routes stream the body into the destination's temporary file in ``<root>/.tmp/``
(`Store.begin_upload`). FastAPI's ``UploadFile`` is not used: it spools every byte to a
temporary file of its own first, so each byte would be written to disk twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import time
from collections.abc import Callable, Iterator
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Final

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from app.errors import BadRequestError, TooManyUploadsError, UploadTooLargeError
from app.server.protocol import READ_AHEAD, TRAILERS
from app.storage import Upload

# Uploads are hashed and written by a worker thread in batches of this size.
_BATCH_BYTES: Final = 1024 * 1024
# What a 503 `too_many_uploads` asks a client to wait: uploads in flight end within seconds
# unless they stall, and a stalled one is cut off after request_idle_seconds.
_RETRY_AFTER_SECONDS: Final = 5


class UploadSlots:
    """How many uploads are received at once; one more is refused, never queued.

    Each upload in flight holds a connection and a temporary file: 150 slow ones used up a
    256-descriptor limit and other requests got 500. The count lives on the event loop, which
    is the only place it changes, so it needs no lock.

    The refusal says who holds the slots: one client that trickles the bodies of
    ``max_uploads_in_flight`` uploads, a byte within each ``request_idle_seconds``, holds
    them all for up to ``request_seconds`` each, and every other client's upload was refused
    with a 503 that said only to raise the limit (red team 71 on the HTTP contract).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: Each upload in flight: its client's address and when it took its slot.
        self.holders: dict[object, tuple[str, float]] = {}

    @property
    def used(self) -> int:
        return len(self.holders)

    @contextlib.contextmanager
    def hold(self, request: Request) -> Iterator[None]:
        """Take a slot for ``request``'s upload, and let the server read its body ahead.

        The read-ahead is one batch (`app.server.protocol.READ_AHEAD`): the next batch
        arrives while the worker thread writes the last one, and the slots bound the memory.
        """
        if len(self.holders) >= self.limit:
            raise TooManyUploadsError(self.limit, self._held_by(), _RETRY_AFTER_SECONDS)
        key = object()
        self.holders[key] = (client_named(request), time.monotonic())
        request.scope[READ_AHEAD] = _BATCH_BYTES
        try:
            yield
        finally:
            del self.holders[key]

    def _held_by(self) -> str:
        """Who holds the slots, for the refusal: the clients with the most, and the age of
        the oldest (``"31 from 192.0.2.7 and 1 from 127.0.0.1; the oldest began 412 s
        ago"``)."""
        counts = collections.Counter(client for client, _ in self.holders.values())
        most = counts.most_common(3)
        named = " and ".join(f"{n} from {client}" for client, n in most)
        others = sum(counts.values()) - sum(n for _, n in most)
        if others:
            named += f" and {others} from {len(counts) - len(most)} other clients"
        oldest = min((since for _, since in self.holders.values()), default=time.monotonic())
        return f"{named}; the oldest began {time.monotonic() - oldest:.0f} s ago"


def client_named(request: Request) -> str:
    """``request``'s client as the refusal of another client names it: its address.

    Behind a proxy uvicorn trusts (127.0.0.1 by default: ``FORWARDED_ALLOW_IPS``), the
    client's address is what the ``X-Forwarded-For`` header says, any text without a comma:
    a client on the same host put sentences of its own into every other client's 503 (``1
    from 198.51.100.7; the oldest began 0 s ago. Nothing is wrong: raise ...``), up to
    ``max_header_bytes`` long (red team 71 on regress, rt-regress71d). Only an address is
    named; an address such a client gives is still taken for its own.
    """
    host = request.client.host if request.client is not None else ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "a client whose X-Forwarded-For gave no address" if host else "an unknown client"
    # As given, as the access log names it: str() of an IPv4-mapped address is in hex, so
    # an IPv4 client of a server on "::" was named ::ffff:c633:6407, never 198.51.100.7
    # (red team 71 on regress, rt-regress71h). An IPv6 address's zone may be any text
    # (``fe80::1%<sentences>``): an interface's name (letters, digits, "-", "_", ".").
    named, _, zone = host.partition("%")
    fine = zone.isascii() and zone.replace("-", "").replace("_", "").replace(".", "").isalnum()
    return f"{named}%{zone}" if fine and len(zone) < 16 else named


def refuse_unframed_body(request: Request, what: str, *, required: bool) -> None:
    """Refuse a request that takes a body and gives it no length (411), before reading it.

    With neither ``Content-Length`` nor ``Transfer-Encoding``, a request has no body (RFC
    9112, 6.3), and what its client sends after the head is read as the next request. A
    ``PUT`` of a file so (an HTTP/1.0 client that ends its body by closing, a client that
    streams without chunks) was a 201 for a file of 0 bytes, or a 200 that replaced the
    current version with 0 bytes, and the bytes sent were dropped without a word; a
    ``POST /sessions`` on HTTP/1.0 made a session without the title and metadata its body
    held (RFC 1945, 7.2.2: an HTTP/1.0 request with a body must give its length). RFC 9110
    (15.5.12) answers such a request with 411. The connection closes: what follows the head
    cannot be told from a request.

    Args:
        request: the request, before its body is read.
        what: what the body would have been taken for, for the message.
        required: the route takes a body always (a file's ``PUT``, a form); otherwise (a
            session's JSON, which may be left out; a route that takes none) only HTTP/1.0's
            is refused, whose client cannot send chunks and would have ended its body by
            closing, and only if it gives the type of a body (``Content-Type``): nginx's
            ``proxy_pass`` speaks HTTP/1.0 by default and forwards ``curl -X POST``, no
            body and no type, without a length, which was refused 411 (red team 64, regress).
    """
    headers = request.headers
    if "content-length" in headers or "transfer-encoding" in headers:
        return
    old = request.scope.get("http_version") == "1.0"
    if not required and not (old and "content-type" in headers):
        return
    rule = (
        "on HTTP/1.0 the server cannot tell where its body ends (RFC 1945, 7.2.2, asks for "
        "the length)"
        if old
        else "such a request has no body (RFC 9112, 6.3), and what follows its head is read "
        "as the next request"
    )
    how = "Content-Length: <its size>" + ("" if old else ", or Transfer-Encoding: chunked")
    raise HTTPException(
        411,
        f"{request.method} {request.url.path} refused: it gives neither Content-Length nor "
        f"Transfer-Encoding; {rule}, so {what}. Nothing was changed, and the connection is "
        f"closed. Send it again with {how} (curl's -T, --data-binary and -d give the length; "
        "an empty body is Content-Length: 0)",
        headers={"Connection": "close"},
    )


def trailer_of(request: Request) -> Callable[[], list[tuple[bytes, bytes]]] | None:
    """For a chunked body, what gives its trailer fields once it has come (`TRAILERS`)."""
    if "chunked" not in request.headers.get("transfer-encoding", "").lower():
        return None
    return lambda: list(request.scope.get(TRAILERS) or ())


def refuse_declared_length(request: Request, allowed: int, limit: int) -> None:
    # Refuse before reading a byte when the client says up front that it is too large.
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise BadRequestError(f"Content-Length {declared!r} is not a number") from None
    if length > allowed:
        raise UploadTooLargeError(limit)


def refuse_repeated_parameter(request: Request) -> None:
    """Refuse a ``Content-Type`` that gives one parameter twice, before the body is read.

    Python-multipart keeps the last of two, where a proxy or a virus scanner in front may read
    the first (RFC 2045, 5.1, has two an error): ``boundary=B; boundary=A`` stored the file
    framed by ``A`` while the first boundary framed another, and ``charset=latin-1;
    charset=utf-8`` was read as UTF-8. Parsed by the standard library's ``email`` package,
    which keeps every parameter in order (quoted, RFC 2231 ``charset*=`` too).

    Raises:
        BadRequestError: naming the parameter and its values; nothing was read or changed.
    """
    header = request.headers.get("content-type")
    if header is None or header.count(";") < 2:  # fewer than two parameters
        return
    parsed = Message()
    parsed["content-type"] = header
    params = [(name.lower(), value) for name, value in parsed.get_params(failobj=[])[1:] if name]
    names = [name for name, _ in params]
    for name in names:
        if names.count(name) > 1:
            values = ", ".join(repr(collapse_rfc2231_value(v)) for n, v in params if n == name)
            raise BadRequestError(
                f"{request.method} {request.url.path} refused: its Content-Type names the "
                f"parameter {name!r} {names.count(name)} times ({values}). A proxy or a scanner "
                "in front may read one and this server another, so which one counts is "
                "ambiguous, and nothing was changed. Give each parameter once"
            )


def refuse_content_coding(request: Request, stored_as: str) -> None:
    """Refuse a body in a content coding (``Content-Encoding: gzip``...) before reading it.

    The server decodes none: a gzip body was stored as the file's bytes, compressed, and
    downloaded so, without the coding, under the SHA-256 of the compressed bytes (red team
    25). RFC 9110 (15.5.16) answers such a body with 415 and ``Accept-Encoding`` naming what
    the server takes. ``identity`` is no coding, and is let through.

    Args:
        request: the request, before its body is read.
        stored_as: what the body would have been taken for, for the message.
    """
    given = request.headers.getlist("content-encoding")
    codings = [c.strip().lower() for value in given for c in value.split(",")]
    if any(c and c != "identity" for c in codings):
        raise HTTPException(
            415,
            f"{request.method} {request.url.path} refused: its body has Content-Encoding: "
            f"{', '.join(given)}, which this server does not decode; it would have taken the "
            f"encoded bytes as {stored_as}. Nothing was changed. Send the bytes themselves, "
            "without Content-Encoding (a compressed file is kept as it is when it is sent "
            "without the header, under a name that says so: report.csv.gz)",
            headers={"Accept-Encoding": "identity"},
        )


def refuse_put_before_its_body(request: Request, files_url: str, limit: int) -> None:
    """Refuse a ``PUT`` whose body is not the whole file, or too large, before reading it.

    * no length at all, neither ``Content-Length`` nor chunks (`refuse_unframed_body`);
    * a declared length over ``limit`` (`refuse_declared_length`);
    * a content coding (`refuse_content_coding`);
    * ``Content-Range``: part of a file (a client resuming an upload, or patching bytes).
      RFC 9110 (14.5): a server that does not do partial PUT MUST answer 400, "since the
      payload is likely to be partial content"; it was stored as the whole file.
    * ``Content-Type: multipart/form-data``: a form (``curl -X PUT -F file=@x``), whose
      boundaries and part headers were stored as the file's bytes. A form goes to ``POST``.

    Args:
        request: the ``PUT``, before its body is read.
        files_url: the session's files, where a form is posted.
        limit: ``max_upload_bytes``.
    """
    refuse_unframed_body(
        request,
        "the file would have been stored as 0 bytes (an existing one replaced by them), "
        "and the bytes sent dropped",
        required=True,
    )
    refuse_declared_length(request, limit, limit)
    refuse_content_coding(request, "the file's bytes, and stored them so")
    path = request.url.path
    ranges = request.headers.getlist("content-range")
    if ranges:
        raise HTTPException(
            400,
            f"PUT {path} refused: it has Content-Range: {', '.join(ranges)}, so its body is "
            "part of a file, and a PUT here replaces whole files only (RFC 9110, 14.5): "
            "stored as the whole file, the part would have cut it. Nothing was changed. To "
            "change part of a file, GET it, change it, and send the whole file without "
            "Content-Range (with If-Match: its ETag, so that no other version is replaced)",
        )
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        raise HTTPException(
            415,
            f"PUT {path} refused: its body is a multipart/form-data form (what curl -F "
            "sends), whose boundaries and part headers would have been stored as the file's "
            f"bytes. Nothing was changed. POST the form to {files_url} (its part's filename "
            "names the file), or PUT the file's bytes themselves (curl -T <file>, or "
            "--data-binary @<file>)",
        )


class Pipeline:
    """Hash and write an upload on a worker thread while the event loop receives more.

    Chunks are collected into batches of about `_BATCH_BYTES`; one batch at a time is
    written by a threadpool worker (hashlib and ``write`` release the GIL) while the next
    one is received, so receiving, hashing and writing overlap on two cores. At most two
    batches are held in memory. The size limit is checked as bytes arrive, not when they
    are written.
    """

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.total = 0
        self._batch: list[bytes | memoryview] = []
        self._batch_bytes = 0
        self._pending: asyncio.Future[None] | None = None

    def queue(self, data: bytes | memoryview) -> None:
        """Add bytes to the current batch (synchronous: for parser callbacks)."""
        self.total += len(data)
        if self.total > self.upload.limit:
            raise UploadTooLargeError(self.upload.limit, self.total)
        self._batch.append(data)
        self._batch_bytes += len(data)

    async def add(self, data: bytes) -> None:
        if data:
            self.queue(data)
            await self.flush_if_full()

    async def flush_if_full(self) -> None:
        if self._batch_bytes >= _BATCH_BYTES:
            await self._flush()

    async def drain(self) -> None:
        """Write everything queued and wait for it (before commit)."""
        await self._flush()
        await self._wait()

    async def settle(self) -> None:
        """Wait for a write in flight, ignoring its outcome, so that abort never races it."""
        with contextlib.suppress(Exception):
            await self._wait()

    async def _flush(self) -> None:
        await self._wait()  # one batch in flight at a time: memory stays bounded
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._pending = asyncio.ensure_future(run_in_threadpool(self.upload.write_all, batch))

    async def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending
