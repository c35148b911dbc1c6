"""uvicorn's h11 protocol, bounding how large a request may be and how long it may take.

h11 is chosen over httptools (uvicorn's default) because it bounds the request line and
headers (``h11_max_incomplete_event_size``); httptools has no limit, and a 64 MiB header
stalled the event loop for seconds and cost 110 MiB. uvicorn bounds the wait between
requests (``timeout_keep_alive``) but not for a head once its first byte came, nor on a new
connection: a client that connects and sends nothing, or a header a byte at a time, held its
connection for ever. Here the head must arrive within ``request_idle_seconds`` of the
connection opening or of its first byte. Both refusals are problem documents.

A request answered before its body came (a refusal) has the rest of its body read and
dropped, so that a request pipelined after it is read as one, within the same bounds as a
body, and the connection closes beyond them. Where what follows the answer cannot be told
from a request, the answer says ``Connection: close`` and the connection closes: a body framed
both by ``Content-Length`` and by chunks, and a refusal sent before ``100 Continue``.

The body and the response are bounded here too (`_Exchange`), where it is known whether a
``receive`` or a ``send`` will wait at all: a timer is armed only then. As ASGI middleware,
every ``receive`` and every ``send`` of every request armed and cancelled one (two
``asyncio.timeout`` per response, about 10 of the 210 µs of CPU a ``GET /health`` took). A
body that pauses for ``request_idle_seconds``, or is not complete ``request_seconds`` after
its head, is refused with 408 from the application's ``receive``, so that the route cleans
up as for any other error; a response its client reads nothing of for
``request_idle_seconds`` is abandoned (`SlowReader`).

A response's head is written with the first piece of its body, in one write: uvicorn wrote
them separately, two system calls and two segments for every small answer.

The body of a request with a ``Content-Length`` bypasses h11's parser (`_body_taken`): h11
copied each received chunk three times (into its buffer, out of it twice) and uvicorn once
more, on the event loop, about a third of the server's CPU time per uploaded MiB (see
docs/reference/performance.md). The bytes and h11's own count of what is left are the same
either way; the request head, chunked bodies and everything after the body still go through
h11. The bytes taken are handed to the application as the transport read them (`_Taken`):
uvicorn's own ``receive`` copies every chunk twice more (into a ``bytearray``, then out of it
with ``bytes()``).

``GET /health`` (and ``HEAD``) is answered here, as soon as its head is parsed in
``data_received`` (`_answers_health`), by the same ASGI response the route sends, through the
same request cycle (uvicorn's ``send``, `_Exchange`): the same bytes. Through the application,
its one step was a new task, queued behind every step already waiting for the event loop's
next pass; here it waits only for the rest of the pass in progress (bench/README.md, tenth
session). What it still proves is that the event loop turns, reads and writes; not that a
route's work gets done. Anything unusual (a body, a repeated header, a response in progress
or another request behind it, a transport that cannot take more) goes through the
application. A request answered here still has the task uvicorn created as it parsed the
head: it finds the request answered (`ANSWERED`) and leaves the application alone.

This subclasses uvicorn internals (``cycle``, ``conn``, ``send_400_response``) and reads
h11's (``_reader``, ``_receive_buffer``): pyproject.toml pins both minor releases for that
reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import re
import socket
import struct
import termios
import types
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from app.errors import (
    AppError,
    BadRequestError,
    BodyLineTooLargeError,
    HeaderTooLargeError,
    RequestTimeoutError,
)
from app.server.problems import PROBLEM_MEDIA_TYPE, problem_of, title

if TYPE_CHECKING:
    from collections.abc import Coroutine, Generator, Iterable

    from starlette.types import ASGIApp, Receive, Scope, Send
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.h11_impl import RequestResponseCycle

log = logging.getLogger(__name__)

READ_AHEAD: Final = "app.read_ahead"
"""The scope key by which a route that streams its body lets this protocol read further ahead.

Its value is how many body bytes may wait for the application before reading pauses
(uvicorn's mark is 64 KiB). The upload routes set it while they hold an upload slot, so
their number bounds the memory it takes. With 64 KiB a single read (up to 256 KiB with
uvloop) paused the transport, to be resumed at the next ``receive``.
"""


TURN: Final = "app.turn"
"""The scope key of a request's place among the transfers the server works on at once.

Its value (`app.server.limits.Turn`) is given up while the request waits for its client,
for more of the body or for room to send, and taken again before the request goes on, so a
client that reads or sends slowly holds no place while it does (`_Exchange`).
"""


TRAILERS: Final = "app.trailers"
"""The scope key of a chunked request's trailer fields (RFC 9112, 7.1.2): ``(name, value)``
byte pairs, set once the body's last chunk has come and before the application hears that
the body ended. uvicorn drops them (ASGI has no request trailers), and a client that sent its
``Repr-Digest`` in the trailer, as RFC 9530 allows, had its upload stored unchecked."""


ANSWERED: Final = "app.answered"
"""The scope key of a request the protocol answered itself (``GET /health``): its task, which
uvicorn created as it parsed the head, then leaves the application alone (`_UnlessAnswered`)."""

HEALTH_PATH: Final = b"/health"
#: A CR that the next byte shows is not the start of a CRLF (RFC 9112, 2.2: a bare CR).
_BARE_CR: Final = re.compile(rb"\r[^\n]")
#: The chunks of a chunked body one turn of the event loop reads: h11, this protocol and
#: uvicorn each handle every chunk in Python, about 28 µs a chunk whatever its size, and a
#: read of 256 KiB of one-byte chunks (43,000) held the server's other clients for over a
#: second; a body of 1 MB of them held a `GET /health` up to 5.9 s (red team 73). Past this
#: many, the rest waits for the next turn with reading paused (`_go_on`), so a body of small
#: chunks costs its own client time and the others about 7 ms a turn. Red team 73 refused
#: such a body instead, and with it every client that streams a file a line at a time (httpx
#: or requests given a generator of lines, curl -T - from a pipe): a CSV of 5,000 lines was
#: refused at its 1,025th (red team 73 on regress, round d).
TURN_CHUNKS: Final = 256


# How long an idle timer that fired late waits again, once bytes were found unread: one turn
# of the event loop, whose next wait for events reads them.
_READ_FIRST: Final = 0.001


def came_unread(transport: Any, flow: FlowControl) -> bool:
    """Whether bytes from the client wait in the kernel that the event loop has not read.

    An idle timer measures the client's silence by when the server last read from it. When
    the server itself ran late (a loaded machine, a stopped process) and the loop runs its due
    timers before it reads, a request that came in time looked like an idle client, and was
    dropped unanswered or refused with 408. A timer that finds bytes waiting lets them be
    read first, then decides. Bytes held back by flow control (reading paused) do not count:
    the client is not waiting on the server then, and they would hold the timer off for ever.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or transport.is_closing() or flow.read_paused:
        return False
    try:
        waiting = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return False
    return bool(struct.unpack("i", waiting)[0])


def unsent(transport: Any) -> int | None:
    """How many bytes of the response the kernel still holds for the client (``TIOCOUTQ``).

    `came_unread`'s other half: a client that read in time while the server ran late looked
    like one that stopped reading its download, and was abandoned (`SlowReader`). A queue
    that shrank while the server waited means the client read.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or transport.is_closing():
        return None
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    return int(struct.unpack("i", queued)[0])


def drop(transport: Any) -> None:
    """Close a connection at once, with what is still queued for the client discarded.

    For a client given up on because it reads nothing (`SlowReader`). A close waits until
    what was written has gone out, which such a client never lets happen: the connection,
    its descriptor and the megabytes queued for it stayed for good (red team 24). Even once
    the process lets go of the socket, the kernel keeps sending what it queued
    (``FIN_WAIT1``, to a window that stays shut); a zero linger time resets it instead.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _left_for(transport: Any) -> int | None:
    """What the client has still to read, a closing transport's too: the transport's buffer
    and the kernel's queue (``TIOCOUTQ``); ``None`` once the socket is gone."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):  # closed meanwhile: its descriptor is -1 or another's
        return None
    return int(struct.unpack("i", queued)[0]) + int(transport.get_write_buffer_size())


def close_within(transport: Any, idle: float) -> None:
    """Close a connection, dropping it (`drop`) if its client then reads nothing for ``idle``.

    A close waits until what was written has gone out. A client that had its whole answer
    handed to the transport (so no `SlowReader` was ever raised) and read nothing of its last
    part held the connection for good: after a ``Connection: close`` answer, or at the
    keep-alive wait's end (red team 24, a download just larger than the socket buffers).
    """
    transport.close()
    left = _left_for(transport) if transport.get_write_buffer_size() else None
    if left is None:
        return  # closed, or the kernel alone holds what is left: it gives up on its own

    def check(before: int) -> None:
        now = _left_for(transport) if transport.get_write_buffer_size() else None
        if now is None:
            return  # all out: the close is done
        if now < before:
            loop.call_later(idle, check, now)  # it read some: another wait
            return
        log.warning(
            "a client read nothing of the end of its answer for %g seconds "
            "(request_idle_seconds); dropping its connection",
            idle,
        )
        drop(transport)

    loop = asyncio.get_running_loop()
    loop.call_later(idle, check, left)


class _Turn(Protocol):
    async def enter(self) -> None: ...
    def leave(self) -> None: ...
    async def yield_if_others_wait(self) -> None: ...


class _Taken:
    """The body bytes `_body_taken` took for one request, until its application receives them.

    It stands in for the request cycle's ``receive``. With nothing taken, uvicorn's own
    runs (the ``100 Continue``, the wait, the bytes h11 delivered, the disconnect); the bytes
    taken are then handed out one read at a time, as the transport read them: never joined,
    so no large buffer is allocated and freed per batch (on ext4 that cost more than the
    copies it saved).
    """

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self.cycle = cycle
        self.pieces: deque[bytes] = deque()
        self.size = 0
        self._receive = cycle.receive
        # The application's task has not run yet (uvicorn creates it, the loop starts it
        # later), and uvicorn's run_asgi looks ``self.receive`` up when it starts.
        cycle.receive = self.receive  # type: ignore[method-assign]

    def add(self, data: bytes) -> None:
        self.pieces.append(data)
        self.size += len(data)

    async def receive(self) -> Any:
        cycle = self.cycle
        if (
            not self.pieces
            or cycle.body  # h11's bytes come first: the body is taken only after them
            or cycle.waiting_for_100_continue
            or cycle.disconnected
            or cycle.response_complete
        ):
            message = await self._receive()
            if not self.pieces or message["type"] != "http.request":
                return message
            if message["body"]:
                return {**message, "more_body": True}
        else:
            cycle.flow.resume_reading()  # as uvicorn's receive does on every call
        piece = self.pieces.popleft()
        self.size -= len(piece)
        if not self.pieces:
            cycle.message_event.clear()  # the next receive waits, in uvicorn's
        return {
            "type": "http.request",
            "body": piece,
            "more_body": bool(self.pieces) or cycle.more_body,
        }


class Abandoned(Exception):
    """A response begun that the application leaves unfinished, on purpose and already logged.

    `app.server.limits.RequestGuard` ends the request quietly (no traceback: the answer has
    begun, so nothing more can be said to the client), and uvicorn closes the connection, so
    the client sees its answer cut short, never complete.
    """


class SlowReader(Abandoned):
    """The client read nothing of its response for ``request_idle_seconds``: it is abandoned.

    Raised from the application's ``send`` (so that a download stops reading its file);
    `app.server.limits.RequestGuard` ends the request quietly, and uvicorn closes a
    connection whose response was left unfinished. Already logged.
    """


class _Exchange:
    """One request's ``receive`` and ``send``, bounded in time, and its transport.

    It stands in for the request cycle's ``receive`` and ``send`` (uvicorn's, or `_Taken`'s
    receive), and for its ``transport``, whose writes it passes on, except the response's
    head: that waits for the first piece of the body (or for the transport's closing) and
    leaves with it. The body's write comes before uvicorn's ``on_response`` callback, so a
    pipelined request's answer still follows this one.
    """

    def __init__(self, cycle: RequestResponseCycle, idle: float, total: float, now: float) -> None:
        self.cycle = cycle
        self.idle = idle
        self.total = total
        self.deadline = now + total  # from the end of the request's head
        self.transport = cycle.transport
        self.head: bytes | None = None
        self._holding = False
        self._receive = cycle.receive
        self._send = cycle.send
        # As in `_Taken`: the application's task has not started, and uvicorn's run_asgi
        # looks ``self.receive`` and ``self.send`` up when it does.
        cycle.receive = self.receive  # type: ignore[method-assign]
        cycle.send = self.send  # type: ignore[method-assign]
        cycle.transport = self  # type: ignore[assignment]

    def release(self, _task: object = None) -> None:
        """Give the cycle back its own ``receive``, ``send`` and transport once its task ended.

        The cycle and this exchange held each other: a reference cycle per request, with the
        request's scope, event and FastAPI's exit stacks, which only the cyclic collector
        freed (its full collections, 12 ms on the event loop, were mostly that garbage).
        """
        cycle = self.cycle
        del cycle.receive, cycle.send  # uvicorn's methods again (or `_Taken`'s receive: gone)
        cycle.transport = self.transport

    def _turn(self) -> _Turn | None:
        """The request's place among the transfers (`TURN`), if it is one."""
        return cast("_Turn | None", self.cycle.scope.get(TURN))

    async def receive(self) -> Any:
        cycle = self.cycle
        if (
            not cycle.more_body  # all of the body came: only a disconnect is left to wait for
            or cycle.message_event.is_set()  # some of it is here
            or cycle.disconnected
            or cycle.response_complete
        ):
            turn = self._turn()
            # Only for body that is here: a task that only waits for a disconnect while the
            # response is sent (Starlette's) must not give the request's turn away.
            if turn is not None and cycle.message_event.is_set():
                await turn.yield_if_others_wait()
            return await self._receive()
        left = self.deadline - asyncio.get_running_loop().time()
        turn = self._turn()
        if turn is not None:
            turn.leave()
        message = await self._receive_within(min(self.idle, max(left, 0)))
        if message is None:
            if left <= self.idle:
                raise RequestTimeoutError(
                    "the request did not arrive in full", self.total, "request_seconds"
                )
            raise RequestTimeoutError(
                "the client sent no more of its body", self.idle, "request_idle_seconds"
            )
        if turn is not None:
            await turn.enter()
        return message

    async def _receive_within(self, seconds: float) -> Any:
        """The next message, or ``None`` when the client sent nothing for ``seconds``."""
        while True:
            try:
                async with asyncio.timeout(seconds):
                    return await self._receive()
            except TimeoutError:
                cycle = self.cycle
                # Read in the loop's last turn (it woke this task as its timer fired), or
                # still in the kernel: either way the client sent in time.
                if not cycle.message_event.is_set() and not came_unread(self.transport, cycle.flow):
                    return None
                seconds = _READ_FIRST

    async def _drained_within(self, seconds: float) -> bool:
        """Whether the transport took the response's bytes again, the client reading some
        of them in every ``seconds``."""
        flow = self.cycle.flow
        queued = unsent(self.transport)
        while True:
            try:
                async with asyncio.timeout(seconds):
                    await flow.drain()
                return True
            except TimeoutError:
                if not flow.write_paused:
                    seconds = _READ_FIRST  # writing resumed as the timer fired
                    continue
                now = unsent(self.transport)
                if now is None or queued is None or now >= queued:
                    return False
                # It read (perhaps while the server ran late): it has another wait.
                queued, seconds = now, self.idle

    async def send(self, message: Any) -> None:
        cycle = self.cycle
        # uvicorn's send waits while the transport's buffer is over its high-water mark.
        if cycle.flow.write_paused and not cycle.disconnected:
            turn = self._turn()
            if turn is not None:
                turn.leave()
            if not await self._drained_within(self.idle):
                log.warning(
                    "%s %s: the client read nothing of the response for %g seconds "
                    "(request_idle_seconds); closing its connection",
                    cycle.scope["method"],
                    cycle.scope["path"],
                    self.idle,
                )
                drop(self.transport)
                raise SlowReader
            if turn is not None:
                await turn.enter()
        else:
            turn = self._turn()
            if turn is not None:
                await turn.yield_if_others_wait()
        self._holding = message["type"] == "http.response.start"
        if self._holding and cycle.waiting_for_100_continue and cycle.more_body:
            # A final answer before "100 Continue": the client may send its body or not
            # (RFC 9110, 10.1.1), so what it sends next cannot be told from a request.
            cycle.keep_alive = False
        if self._holding and not cycle.keep_alive:
            # A stopping server (SIGTERM) finishes the requests in flight, then closes their
            # connections; uvicorn's answer did not say so, and a client that sent its next
            # request on the connection lost it. The header tells it to open a new one.
            headers = list(message.get("headers", ()))
            if not any(name.lower() == b"connection" for name, _ in headers):
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        try:
            await self._send(message)
        finally:
            self._holding = False

    # --- the cycle's transport ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._holding:
            self.head = data
            self._holding = False
        elif self.head is not None:
            head, self.head = self.head, None
            self.transport.writelines((head, data))
        else:
            self.transport.write(data)

    def writelines(self, pieces: Iterable[bytes]) -> None:
        for piece in pieces:
            self.write(piece)

    def close(self) -> None:
        if self.head is not None:  # the application failed after its head: send what it sent
            self.transport.write(self.head)
            self.head = None
        close_within(self.transport, self.idle)

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class _UnlessAnswered:
    """The application, for a request the protocol has not answered itself (`ANSWERED`)."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if ANSWERED not in scope:
            await self.app(scope, receive, send)


def run_now(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> bool:
    """Run ``coro`` here, not in a task queued behind the event loop's turn; whether it ended.

    What Python 3.12's ``eager_task_factory`` does, for a coroutine that needs no task of
    its own (no ``current_task``: no ``asyncio.timeout``, no anyio cancel scope) and is
    expected to end without waiting. Should it wait after all, a task resumes it once what
    it waits for is done.
    """
    try:
        waiting = coro.send(None)
    except StopIteration:
        return True
    loop.create_task(_resumed(waiting, coro))
    return False


@types.coroutine
def _resumed(waiting: Any, coro: Coroutine[Any, Any, None]) -> Generator[Any, None, None]:
    # The future it yielded is handed to the task as its own await would have: the task
    # waits for it, then sends None, which resumes the coroutine where it left off.
    yield waiting
    yield from coro


def _raw_problem(error: AppError) -> bytes:
    """A whole HTTP/1.1 response carrying ``error``, for answers given before any request."""
    response = problem_of(error)
    status = error.http_status
    head = (
        f"HTTP/1.1 {status} {title(status)}\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"content-length: {len(response.body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + bytes(response.body)


def _framed_twice(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request has both a ``Content-Length`` and a ``Transfer-Encoding``."""
    names = {name for name, _ in headers}
    return b"transfer-encoding" in names and b"content-length" in names


def bounded_h11(
    max_header_bytes: int,
    idle_seconds: float,
    request_seconds: float,
    health: ASGIApp | None = None,
) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with this module's bounds.

    Args:
        max_header_bytes: the longest request line and headers.
        idle_seconds: ``request_idle_seconds``.
        request_seconds: ``request_seconds``.
        health: the response of ``GET /health`` (an ASGI application that answers without
            waiting, as the route's `Response` does), to answer it in the protocol; ``None``
            leaves it to the application.
    """
    # Imported here: only `serve` needs uvicorn, and the in-process test client does not.
    import h11
    from h11._readers import ChunkedReader, ContentLengthReader
    from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from app.server.limits import refused_head  # which imports this module

    # A request read whole: the client may send another (DONE) or has said it will not
    # (MUST_CLOSE: "Connection: close", HTTP/1.0).
    _REQUEST_DONE = (h11.DONE, h11.MUST_CLOSE)
    too_large = _raw_problem(HeaderTooLargeError(max_header_bytes))
    malformed = _raw_problem(
        BadRequestError(
            "malformed HTTP request: it is not HTTP/1.1 as RFC 9112 describes it (request line, "
            "header syntax, framing); the connection is closed. Check the client"
        )
    )
    too_slow = _raw_problem(
        RequestTimeoutError(
            "the request line and headers did not arrive", idle_seconds, "request_idle_seconds"
        )
    )

    class _TrailerKeeping(h11.Connection):
        """h11's connection, keeping the trailer fields of the request body that just
        ended (`TRAILERS`), which uvicorn, reading its events, drops, and holding a head, a
        chunk's size line and a trailer to ``max_header_bytes`` however they arrived.

        h11 bounds only an event still incomplete (``h11_max_incomplete_event_size``): one
        that came whole in one read passed at any size, so a head of 70,000 bytes sent in
        one write was answered 200, and one of 40,000 in small writes 431 (red team 61).
        Here the bytes an event took from the buffer are counted as well.
        """

        trailer: list[tuple[bytes, bytes]] | None = None
        #: The size of the head, chunk size line or trailer refused over the bound.
        oversized = 0
        #: What calls that ended in NEED_DATA took from the buffer: h11 takes a chunk's
        #: size line (or the last chunk's, before its trailer) as soon as it is whole, and
        #: only then waits for the bytes after it, so a line that came in a read of its own
        #: is counted with the event that follows it (red team 61 on regress).
        _framing = 0
        #: The bytes of the CRLF that ends a chunk's data h11 has still to take first.
        _crlf = 0
        #: What ended a chunk's size line bare, ``"LF"`` or ``"CR"`` (refused, 400).
        bare_ending = ""
        #: The chunks this turn of the event loop may still read (`TURN_CHUNKS`), and whether
        #: it stopped with a chunked body's bytes left in the buffer for the next turn.
        turn_left = TURN_CHUNKS
        backlog = False
        #: How much of the buffer `_size_line_bare` and `_lines_bare_cr` looked at and found
        #: clean, as the last call that took nothing ended: only the bytes after it are
        #: looked at next (a head sent a byte a read was scanned whole at each byte, its
        #: cost quadratic: 0.40 s of CPU for 32,000 bytes where h11 took 0.10 s, up to
        #: 1 MiB a packet at the largest ``max_header_bytes``; red team 72 on regress, g).
        _clean = 0

        def next_event(self) -> Any:
            before = len(self._receive_buffer)
            if self.turn_left <= 0 and before and type(self._reader) is ChunkedReader:
                self.backlog = True
                return h11.NEED_DATA  # uvicorn stops reading events; `_go_on` goes on
            event: Any = super().next_event()
            kind = type(event)
            # What the call took beside a body's data: a head, a chunk's size line, a
            # trailer (not the CRLF that ended the chunk before, the chunk's own).
            took = before - len(self._receive_buffer)
            if kind is h11.Data:
                took -= len(event.data)
            ended = min(self._crlf, took)
            took -= ended
            self._crlf = 2 if kind is h11.Data and event.chunk_end else self._crlf - ended
            framing = self._framing + took
            self._framing = framing if event is h11.NEED_DATA else 0
            # What was looked at is the buffer's start still only where this call took
            # nothing from it. h11 changes what it waits for without taking a byte too (a
            # body's end, PAUSED, the next cycle started), but `_clean` is kept only from a
            # call that ended waiting with bytes in the buffer, for one line h11 leaves only
            # as it takes it (red team 72 on regress, round i). A CR last of what was looked
            # at is looked at again, with the byte after it.
            start = max(self._clean - 1, 0) if before == len(self._receive_buffer) else 0
            self._clean = 0
            if event is h11.NEED_DATA and len(self._receive_buffer):
                # Bytes that cannot end the line or lines h11 waits for (none between
                # requests on a kept-alive connection, nothing looked at then).
                self.bare_ending = self._size_line_bare(start)
                if self.bare_ending:
                    self._process_error(self.their_role)
                    raise h11.RemoteProtocolError(
                        f"a chunk size line ended by a bare {self.bare_ending}"
                    )
                if self._lines_bare_cr(start):
                    self._process_error(self.their_role)
                    raise h11.RemoteProtocolError("a bare CR in a head or a trailer")
                self._clean = len(self._receive_buffer)
            if framing > max_header_bytes:
                self.oversized = framing
                self._process_error(self.their_role)
                raise h11.RemoteProtocolError(
                    f"{framing} bytes of head or body framing", error_status_hint=431
                )
            if kind is h11.Data and type(self._reader) is ChunkedReader:
                self.turn_left -= event.chunk_start
            if kind is h11.EndOfMessage and event.headers:
                self.trailer = list(event.headers)
            return event

        def _lines_bare_cr(self, start: int) -> bool:
            """Whether h11 waits for the end of a head or a trailer that has a bare CR.

            h11 ends their lines at LF (a CRLF or a bare LF), so a head whose lines ended
            with CRs alone (``GET /health HTTP/1.1\\rHost: x\\r\\r``) was waited on as one
            still coming, and its client got 408 "the request line and headers did not
            arrive" after ``request_idle_seconds``, and a trailer so ended 408 too, where
            RFC 9112 (2.2) calls an element with a bare CR invalid, and a bare CR in a head
            that came whole was a 400 at once (red team 72 on the HTTP contract).
            """
            reader = self._reader
            waiting = self.their_state is h11.IDLE or (
                type(reader) is ChunkedReader and reader._reading_trailer
            )
            # h11's own bytearray, searched from `start` in place (no copy of the buffer).
            return waiting and _BARE_CR.search(self._receive_buffer._data, start) is not None

        def _size_line_bare(self, start: int) -> str:
            """What ended bare a chunk's size line h11 waits for the CRLF of (``""``: nothing).

            h11 ends that line at a CRLF alone (a head's lines and a trailer's may end at a
            bare LF, as RFC 9112 2.2 lets it): ``5\\nabcde\\n0\\n\\n`` (``printf`` into
            ``nc``) was waited on as one line still coming, and its client, which had sent
            its whole body, got 408 "sent no more of its body" after ``request_idle_seconds``
            (or nothing, had it shut its side) rather than the 400 a malformed chunk gets
            (red team 72 on the HTTP contract). While h11 waits for that line, its buffer
            holds no CRLF (it would have taken the line), so any LF there ends it bare; and a
            CR followed by anything but LF is a bare CR, which no size line or chunk extension
            may hold (``5\\rabcde\\r0\\r\\r`` waited for a 408 as well, red team 72 on
            regress, round g). A CR last in the buffer may be a CRLF's first half: not looked at.
            """
            reader = self._reader
            if not (
                type(reader) is ChunkedReader
                and reader._bytes_in_chunk == 0
                and not reader._bytes_to_discard
                and not reader._reading_trailer
            ):
                return ""
            waited = self._receive_buffer._data
            if waited.find(b"\n", start) >= 0:
                return "LF"
            return "CR" if _BARE_CR.search(waited, start) is not None else ""

    class BoundedH11Protocol(H11Protocol):
        #: h11's connection class each connection gets (tests feed it bytes directly).
        connection_class = _TrailerKeeping
        _head_timer: asyncio.TimerHandle | None = None
        _taken: _Taken | None = None
        _deadline = 0.0  # when the current request's body must have come whole
        _refused: RequestResponseCycle | None = None  # answered before its body came
        _soon: asyncio.Handle | None = None  # the next turn's reading of a backlog (`_go_on`)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if health is not None:
                self.app = _UnlessAnswered(self.app)
            # A class of our own rather than a wrapper of its method: a closure kept on the
            # connection would tie it and this protocol in a cycle, left to the collector.
            self.conn.__class__ = self.connection_class

        def handle_events(self) -> None:
            before, known = self.cycle, set(self.tasks)
            conn = self.conn
            if isinstance(conn, _TrailerKeeping):
                conn.turn_left = TURN_CHUNKS
            super().handle_events()
            if isinstance(conn, _TrailerKeeping) and conn.backlog:
                # Not the flow control's pause: the application's receive resumes that,
                # and each read would add up to 256 KiB to what waits (`_go_on` resumes).
                conn.backlog = False
                self.transport.pause_reading()
                if self._soon is None:
                    self._soon = self.loop.call_soon(self._go_on)
            cycle = self.cycle
            if isinstance(conn, _TrailerKeeping) and conn.trailer is not None:
                # The application runs only once this returns, and finds the trailer of the
                # body that just ended (h11 pauses after it: the cycle is still its own).
                if cycle is not None:
                    cycle.scope[TRAILERS] = conn.trailer  # type: ignore[typeddict-unknown-key]
                conn.trailer = None
            if cycle is not before and cycle is not None:
                # Only a request whose Content-Length body has not all come with its head
                # can have bytes taken: the others (GET /health) keep uvicorn's receive.
                pending = (
                    self.conn.their_state is h11.SEND_BODY
                    and type(self.conn._reader) is ContentLengthReader
                )
                self._taken = _Taken(cycle) if pending else None
                if _framed_twice(cycle.scope["headers"]):
                    # RFC 9112, 6.3: the chunks frame the body, and the connection closes
                    # after the answer: a proxy in front may have framed it by the length
                    # and taken what follows for another request (request smuggling).
                    cycle.keep_alive = False
                self._deadline = self.loop.time() + request_seconds
                exchange = _Exchange(cycle, idle_seconds, request_seconds, self.loop.time())
                if health is not None and self._answers_health(cycle):
                    cycle.scope[ANSWERED] = True  # type: ignore[typeddict-unknown-key]
                    if not run_now(self.loop, cycle.run_asgi(cast("Any", health))):
                        return  # still answering when uvicorn's task ends: left to the collector
                for task in self.tasks - known:  # the one uvicorn made for this cycle
                    task.add_done_callback(exchange.release)

        def _answers_health(self, cycle: RequestResponseCycle) -> bool:
            """Whether ``cycle`` is a plain ``GET`` or ``HEAD /health`` to answer here.

            Its head and its body (none) all came, nothing follows it in h11's buffer (what
            follows is read once it is answered, as by the application), the transport takes
            writes without waiting, and the application would answer it as the route does:
            the raw path is ``/health`` itself (not ``/heal%74h``), ``RequestGuard`` would not
            refuse its head (`refused_head`: a header of `ONCE_ONLY` repeated, one spelt with
            ``_``, HTTP/1.0 with a Transfer-Encoding, another version than 1.x: each was
            answered 200 here and 400 by the application, red team 70 on regress), and
            uvicorn did not refuse it (``limit_concurrency``, unset here).
            """
            scope = cycle.scope
            return (
                scope["raw_path"] == HEALTH_PATH
                and scope["method"] in ("GET", "HEAD")
                and self.conn.their_state in _REQUEST_DONE
                and not cycle.body
                and not self.conn.trailing_data[0]
                and self.limit_concurrency is None
                and not cycle.flow.write_paused
                and not cycle.disconnected
                and not self.transport.is_closing()
                and refused_head(cast("Any", scope)) is None
            )

        def _should_upgrade(self) -> bool:
            """Never: the API speaks HTTP/1.1 alone, and a request that offers another protocol
            (``Connection: Upgrade`` with ``Upgrade: websocket`` or ``h2c``) is answered as the
            request it is, with its route's guards, token and answers (RFC 9110, 7.8, lets a
            server ignore ``Upgrade``).

            uvicorn handed a WebSocket handshake to the websockets library (``uvicorn[standard]``
            installs it) before any of this server's checks: every route answered it in that
            library's words, ``GET /sessions`` with a good token a 403 with no body, a
            ``DELETE`` a 405 in plain text with ``Allow: GET``, a missing key a 400 naming
            it, none in the problem shape, none with a ``code``; and a ``PUT`` with a body
            was cut by this protocol's timer for a head, which it answered 408 "the request
            line and headers did not arrive", into a connection it no longer read (red team
            70 on the HTTP contract). ``ws="none"`` (`app.server.run`) alone would answer
            as this does, but log two warnings, one telling the operator to install a
            WebSocket library, for every such request any client sends.
            """
            return False

        def _go_on(self) -> None:
            """Read the next `TURN_CHUNKS` chunks of the backlog, then reading again once it
            is all read (unless the flow control paused it: the application's receive
            resumes it then)."""
            self._soon = None
            if self.transport.is_closing():
                return
            self.handle_events()
            if self._soon is None and not self.flow.read_paused:
                self.transport.resume_reading()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._wait_for_head()

        def data_received(self, data: bytes) -> None:
            taken = self._body_taken(data)
            if taken == len(data):
                return
            super().data_received(data[taken:] if taken else data)
            if self._refused is not None:
                self._read_past_refused()
            # A head that came whole started its request: no timer for it. One that did not
            # (h11 holds its first bytes) has request_idle_seconds from now to come whole.
            if self._head_timer is None and self._between_requests() and self.conn.trailing_data[0]:
                self._wait_for_head()

        def _body_taken(self, data: bytes) -> int:
            """Hand the body bytes in ``data`` to the request as they are; return how many.

            What h11 would do for a ``Data`` event of a ``Content-Length`` body, less its
            copies: count them off its reader, then as uvicorn does, hold them for the
            request (`_Taken`), pause reading over the high-water mark (`READ_AHEAD`) and wake
            the application. Only when h11 has nothing buffered (the head and any earlier
            bytes went through it) and is not waiting to send ``100 Continue`` (its first body
            event clears that).
            """
            conn, cycle, held = self.conn, self.cycle, self._taken
            reader = conn._reader
            if (
                cycle is None
                or held is None
                or held.cycle is not cycle
                or type(reader) is not ContentLengthReader
                or conn.their_state is not h11.SEND_BODY
                or conn.our_state is h11.DONE
                or conn.client_is_waiting_for_100_continue
                or conn._receive_buffer
            ):
                return 0
            taken = min(len(data), reader._remaining)
            if taken == 0:
                return 0
            reader._remaining -= taken
            self._unset_keepalive_if_required()
            held.add(data if taken == len(data) else data[:taken])
            read_ahead = cycle.scope.get(READ_AHEAD)
            if not isinstance(read_ahead, int):
                read_ahead = HIGH_WATER_LIMIT
            if held.size + len(cycle.body) > read_ahead:
                self.flow.pause_reading()
            cycle.message_event.set()
            if reader._remaining == 0:
                self.handle_events()  # h11 reports the end of the message
            return taken

        def on_response_complete(self) -> None:
            self._stop_waiting()  # uvicorn's keep-alive timeout bounds the wait for the next
            super().on_response_complete()
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                # Answered before its body came (a refusal: 413, 404, 409...). h11 reads the
                # rest and drops it, so that a request pipelined after it is read as one;
                # every byte that comes cancelled uvicorn's keep-alive timer, so that reading
                # was bounded by nothing, and nothing waited for the next request after it.
                # The rest is held to the bounds of a body (`_read_past_refused`).
                self._unset_keepalive_if_required()
                self._refused = self.cycle
                self._wait_for_rest()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def eof_received(self) -> bool | None:  # type: ignore[override]
            """The client shut its side down (``shutdown(SHUT_WR)``, ``nc -N``): keep the
            connection open for the answer if its request has all come.

            uvicorn returned nothing, so asyncio closed the connection at once and the request
            was marked disconnected: a route that had read the whole body (or needs none: a
            ``DELETE``) committed its write and its answer was dropped, the client told
            nothing of a file replaced or deleted; one that had not read it yet dropped a
            body that had come whole. RFC 9112 (9.6) lets a client close its side after its
            request and still read the answer. A request whose body has not all come is
            abandoned as before (it cannot come now), and so is a connection between
            requests. The answer says ``Connection: close``, and the connection closes after
            it: a request pipelined behind it is not run, which that header tells its client
            (RFC 9112, 9.3.2: it may send it again).
            """
            cycle = self.cycle
            if (
                cycle is not None
                and not cycle.response_complete
                and not cycle.disconnected
                and self.conn.their_state in _REQUEST_DONE
            ):
                cycle.keep_alive = False
                return True
            return None

        def send_400_response(self, msg: str) -> None:
            # h11 refuses a head over its bound as a protocol error; uvicorn answers every one
            # with the same plain-text 400. Say which, in the problem shape of every error.
            received = max(len(self.conn.trailing_data[0]), getattr(self.conn, "oversized", 0))
            cycle = self.cycle
            if cycle is not None and (not cycle.response_complete or self._refused is cycle):
                # After its head, in a chunked body (its trailer, a chunk's size line, the
                # framing): the answers for a head misnamed it (red team 56, third round).
                self.transport.write(self._body_refused(cycle, received))
                self.transport.close()
                return
            if received > max_header_bytes:
                log.warning("refused a request head over %d bytes (max_header_bytes)", received)
            self.transport.write(too_large if received > max_header_bytes else malformed)
            self.transport.close()

        def _body_refused(self, cycle: RequestResponseCycle, received: int) -> bytes:
            """The answer to a request whose chunked body h11 refused after its head."""
            request = f"{cycle.scope['method']} {cycle.scope['path']}"
            error: AppError
            if received > max_header_bytes:
                log.warning(
                    "refused %s: a line of its chunked body over %d bytes", request, received
                )
                error = BodyLineTooLargeError(max_header_bytes, request)
            elif ending := getattr(self.conn, "bare_ending", ""):
                error = BadRequestError(
                    f"{request} refused: a chunk's size line of its body ends with a bare "
                    f"{ending}; "
                    "RFC 9112 (7.1) ends it with CRLF. Nothing of it was kept and the "
                    "connection is closed. Check the client"
                )
            else:
                error = BadRequestError(
                    f"{request} refused: its chunked body is malformed (chunk framing, a size "
                    "that is not hexadecimal, a trailer field's syntax, RFC 9112 7.1); nothing "
                    "of it was kept and the connection is closed. Check the client"
                )
            if cycle.response_started:
                return b""  # answered already (a refusal whose rest was being read past)
            return _raw_problem(error)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _wait_for_head(self) -> None:
            self._head_timer = self.loop.call_later(idle_seconds, self._head_timed_out)

        def _stop_waiting(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _read_past_refused(self) -> None:
            """After bytes of a refused request's body: wait for more, or for the next request."""
            self._stop_waiting()
            if self.transport.is_closing():
                self._refused = None
            elif self.cycle is self._refused and self.conn.their_state is h11.SEND_BODY:
                self._wait_for_rest()
            else:
                # Its body has all come. Either the next request started (its cycle bounds
                # it), part of its head came (`data_received` arms the head's timer), or
                # nothing yet: uvicorn's keep-alive timeout bounds that wait, as after a
                # response to a request read whole.
                self._refused = None
                if self._between_requests() and not self.conn.trailing_data[0]:
                    self.timeout_keep_alive_task = self.loop.call_later(
                        self.timeout_keep_alive, self.timeout_keep_alive_handler
                    )

        def _wait_for_rest(self) -> None:
            left = self._deadline - self.loop.time()
            why = (
                f"did not arrive within {request_seconds:g} seconds (request_seconds)"
                if left <= idle_seconds
                else f"paused for {idle_seconds:g} seconds (request_idle_seconds)"
            )
            self._head_timer = self.loop.call_later(
                max(min(idle_seconds, left), 0), self._rest_timed_out, why
            )

        def _rest_timed_out(self, why: str) -> None:
            self._head_timer = None
            self._refused = None
            if self.transport.is_closing():
                return
            # Its answer is sent; nothing more can be said to this client.
            log.warning(
                "%s %s: the rest of the body of this refused request %s; closing its connection",
                self.scope["method"],
                self.scope["path"],
                why,
            )
            close_within(self.transport, idle_seconds)

        def timeout_keep_alive_handler(self) -> None:
            if came_unread(self.transport, self.flow):
                self.timeout_keep_alive_task = self.loop.call_later(
                    _READ_FIRST, self.timeout_keep_alive_handler
                )
                return
            super().timeout_keep_alive_handler()
            # Closed, once what its last answer left queued has gone out, or dropped.
            close_within(self.transport, idle_seconds)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self._between_requests() or self.transport.is_closing():
                return  # a request is running: its body is bounded by the application
            if came_unread(self.transport, self.flow):
                self._head_timer = self.loop.call_later(_READ_FIRST, self._head_timed_out)
                return
            if self.conn.trailing_data[0]:
                self.transport.write(too_slow)  # part of a head came: say why it is refused
            self.transport.close()

    return BoundedH11Protocol
