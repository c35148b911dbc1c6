"""Receiving an upload: how many at once, how large, and its bytes written to disk once.

Both upload routes stream the body into the destination's temporary file in ``<root>/.tmp/``
(`Store.begin_upload`). FastAPI's ``UploadFile`` is not used: it spools every byte to a
temporary file of its own first, so each byte would be written to disk twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Final

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from app.errors import BadRequestError, TooManyUploadsError, UploadTooLargeError
from app.server.protocol import READ_AHEAD
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
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextlib.contextmanager
    def hold(self, request: Request) -> Iterator[None]:
        """Take a slot for ``request``'s upload, and let the server read its body ahead.

        The read-ahead is one batch (`app.server.protocol.READ_AHEAD`): the next batch
        arrives while the worker thread writes the last one, and the slots bound the memory.
        """
        if self.used >= self.limit:
            raise TooManyUploadsError(self.limit, _RETRY_AFTER_SECONDS)
        self.used += 1
        request.scope[READ_AHEAD] = _BATCH_BYTES
        try:
            yield
        finally:
            self.used -= 1


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
