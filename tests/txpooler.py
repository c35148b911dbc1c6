"""A transaction pooler for the tests, as PgBouncer's ``pool_mode = transaction`` is.

It speaks PostgreSQL's protocol on 127.0.0.1 (a port of its own): each client's startup is
answered by the pooler itself (trust, as the suite's cluster), and each of the client's
transactions runs on whichever server connection is idle, the last one given back first
(PgBouncer's default, ``server_round_robin = 0``). A server connection goes back to the
pool at each ``ReadyForQuery`` that says idle, so session state (advisory locks, ``SET``,
prepared statements) stays on the server connection, for the next client that gets it.
With ``session_mode``, a client keeps its server connection for its whole life, as
``pool_mode = session`` does (closed at the end, not handed on). In either mode the client
is told a process id of the pooler's own (``BackendKeyData``), as PgBouncer does.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One message: its type byte and the whole message (type and length included)."""
    head = _read_exactly(sock, 5)
    (length,) = struct.unpack("!i", head[1:])
    return head[:1], head + _read_exactly(sock, length - 4)


class TransactionPooler:
    """Listens on :attr:`port`; forwards to PostgreSQL at ``host``:``port``."""

    def __init__(self, host: str, port: int, *, session_mode: bool = False) -> None:
        self.server = (host, port)
        self.session_mode = session_mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.idle: dict[bytes, list[socket.socket]] = {}
        self.params: dict[bytes, list[bytes]] = {}
        self.lock = threading.Lock()
        self.backends: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, dbname: str, user: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for backend in self.backends:
            with contextlib.suppress(OSError):
                backend.sendall(b"X\0\0\0\4")  # Terminate: the server session ends now
            with contextlib.suppress(OSError):
                backend.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _backend(self, pool: bytes, startup: bytes) -> socket.socket:
        """An idle server connection of ``pool`` (user and database), the last one given
        back first, or a new one opened with this client's ``startup``."""
        with self.lock:
            idle = self.idle.setdefault(pool, [])
            if idle:
                return idle.pop()
        backend = socket.create_connection(self.server)
        # Each message is written as it comes: without this, Nagle's algorithm holds the
        # small ones back for the peer's delayed acknowledgement (40 ms a round trip).
        backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.backends.append(backend)
        backend.sendall(startup)
        status: list[bytes] = []
        while True:
            kind, message = _message(backend)
            if kind == b"S":
                status.append(message)
            elif kind == b"E":
                raise ConnectionError(message.decode(errors="replace"))
            elif kind == b"Z":
                break
        self.params.setdefault(pool, status)
        return backend

    def _give_back(self, pool: bytes, backend: socket.socket) -> None:
        with self.lock:
            self.idle.setdefault(pool, []).append(backend)

    def _serve(self, client: socket.socket) -> None:
        backend: socket.socket | None = None
        startup = pool = b""
        try:
            while True:
                (length,) = struct.unpack("!i", _read_exactly(client, 4))
                body = _read_exactly(client, length - 4)
                (code,) = struct.unpack("!i", body[:4])
                if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    client.sendall(b"N")
                    continue
                if code == _CANCEL_REQUEST:
                    return
                startup = struct.pack("!i", length) + body
                words = body[4:].split(b"\0")
                params = dict(zip(words[::2], words[1::2], strict=False))
                pool = params.get(b"user", b"") + b"\0" + params.get(b"database", b"")
                break
            self._give_back(pool, self._backend(pool, startup))
            reply = b"R" + struct.pack("!ii", 8, 0) + b"".join(self.params[pool])
            reply += b"K" + struct.pack("!iii", 12, 4242, 4242) + b"Z" + struct.pack("!i", 5) + b"I"
            client.sendall(reply)
            while True:
                kind, message = _message(client)
                if kind == b"X":
                    return
                if backend is None:
                    backend = self._backend(pool, startup)
                backend.sendall(message)
                if kind not in (b"Q", b"S"):
                    continue
                while True:
                    answer_kind, answer = _message(backend)
                    if answer_kind == b"Z":
                        break
                    client.sendall(answer)
                if answer[-1:] == b"I" and not self.session_mode:
                    # Given back before the client is told it is idle, as PgBouncer releases
                    # a server connection: given back after, a client that went on at once
                    # (another connection's transaction, say) could find the pool without
                    # it while this thread waited for a core, and get another server session
                    # (a test that expected the one last given back failed at load 22).
                    self._give_back(pool, backend)
                    backend = None
                client.sendall(answer)
        except (ConnectionError, OSError, struct.error):
            pass
        finally:
            client.close()
            if backend is not None:
                # In a transaction, or in session mode: closed rather than handed on (as
                # PgBouncer's server_reset_query, DISCARD ALL, would leave it).
                with contextlib.suppress(OSError):
                    backend.close()


@contextlib.contextmanager
def transaction_pooler(
    host: str, port: int, *, session_mode: bool = False
) -> Iterator[TransactionPooler]:
    pooler = TransactionPooler(host, port, session_mode=session_mode)
    try:
        yield pooler
    finally:
        pooler.close()
