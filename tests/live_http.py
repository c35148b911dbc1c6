"""Raw calls to a live `app serve` (`app.testing.LiveServer`) that several test files make."""

from __future__ import annotations

import json
import socket

import httpx

from app.testing import LiveServer

# Bounds a socket operation of a broken server, so that a hung test fails: it measures nothing.
WAIT = 15.0


def address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(address(server), timeout=WAIT)


def a_session(server: LiveServer) -> str:
    """A new empty session's id."""
    response = httpx.post(f"{server.url}/sessions", json={}, headers=server.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def a_file(server: LiveServer, client: httpx.Client, content: bytes) -> str:
    """The path of a new file ``kept.txt`` of ``content``, in a new session of its own."""
    path = f"/sessions/{a_session(server)}/files/kept.txt"
    assert client.put(path, content=content).status_code == 201
    return path


def head_of(server: LiveServer, line: str, extra: str = "") -> bytes:
    """A request head with the server's token, ready to send raw."""
    token = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    return f"{line} HTTP/1.1\r\nHost: x\r\n{token}{extra}\r\n".encode()


class Answers:
    """The responses on one connection, read one at a time (several may come in one read)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    def _more(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        self.data += chunk
        return bool(chunk)

    def next(self) -> tuple[int, dict[str, str], bytes]:
        """The next response (by its Content-Length); the connection may stay open."""
        while b"\r\n\r\n" not in self.data:
            assert self._more(), self.data
        head, _, rest = self.data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            assert self._more(), rest
            rest = self.data.partition(b"\r\n\r\n")[2]
        self.data = rest[length:]
        return int(lines[0].split()[1]), headers, rest[:length]

    def rest(self) -> bytes:
        """Everything else, until the server closes the connection (a socket timeout of `WAIT`
        seconds fails the test: the server kept it open)."""
        while self._more():
            pass
        return self.data


def sent_closed(
    server: LiveServer, line: str, extra: str = "", body: bytes = b""
) -> tuple[int, dict]:
    """Send ``line``'s head (the token, ``extra`` headers; HTTP/1.0 if it ends ``" 1.0"``),
    then ``body``, then end the sending side; the answer's status and JSON (after a ``100
    Continue``), after checking the server closed and read nothing more as a request."""
    version = "HTTP/1.0" if line.endswith(" 1.0") else "HTTP/1.1"
    line = line.removesuffix(" 1.0")
    token = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    with connect(server) as sock:
        sock.sendall(f"{line} {version}\r\nHost: x\r\n{token}{extra}\r\n".encode() + body)
        sock.shutdown(socket.SHUT_WR)
        answers = Answers(sock)
        status, headers, content = answers.next()
        if status == 100:
            status, headers, content = answers.next()
        assert headers.get("connection", "").lower() == "close", headers
        assert answers.rest() == b""  # closed: nothing more was read as a request
    return status, json.loads(content)
