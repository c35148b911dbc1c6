"""Red team 54 on integrity: a client that shuts its side of the connection after its request.

What broke:

* A client that sent its whole request and then shut its sending side (``shutdown(SHUT_WR)``,
  ``nc -N``, a client library that signals the end of its request so; RFC 9112, 9.6, lets it
  and still read the answer) was never answered. uvicorn let asyncio close the connection at
  the end of the client's stream and marked the request disconnected, so what happened to it
  depended on a race: a ``PUT`` after ``Expect: 100-continue``, or a ``DELETE`` (no body to
  read), was done (a file replaced, a file moved to the trash) and its answer dropped, the
  client told nothing of a change it made; a ``PUT`` whose body came with its head dropped a
  body that had come whole. A request that has all come when its client shuts its side is
  now answered (with ``Connection: close``), then the connection closes
  (`app.server.protocol`'s ``eof_received``); one whose body has not all come is abandoned as
  before, and nothing of it is stored.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from live_http import Answers, a_session, connect, head_of
from redteam_s19_http import one_server

from app.testing import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(tmp_path_factory) as live:
        yield live


def _a_file(server: LiveServer, content: bytes) -> str:
    """A new session holding ``old`` with ``content``; the session's id."""
    session = a_session(server)
    url = f"{server.url}/sessions/{session}/files/old"
    response = httpx.put(url, content=content, headers=server.headers)
    assert response.status_code == 201, response.text
    return session


def _answer_after_shutting(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Shut the client's side, then read the one answer the server sends before it closes."""
    sock.shutdown(socket.SHUT_WR)
    answers = Answers(sock)
    answer = answers.next()
    assert answers.rest() == b"", "the connection stays open after its last answer"
    return answer


def _bytes_of(server: LiveServer, session: str) -> bytes | int:
    response = httpx.get(f"{server.url}/sessions/{session}/files/old", headers=server.headers)
    return response.content if response.status_code == 200 else response.status_code


@pytest.mark.parametrize("expect", [False, True], ids=["body-with-head", "after-100-continue"])
def test_a_put_whose_client_shuts_its_side_is_answered(server: LiveServer, expect: bool) -> None:
    session = _a_file(server, b"old bytes")
    sent = b"new bytes, sent whole"
    extra = f"Content-Length: {len(sent)}\r\n" + ("Expect: 100-continue\r\n" if expect else "")
    with connect(server) as sock:
        sock.sendall(head_of(server, f"PUT /sessions/{session}/files/old", extra))
        if expect:
            status, _, _ = Answers(sock).next()  # the 100 comes alone: nothing is read past it
            assert status == 100
        sock.sendall(sent)
        status, headers, body = _answer_after_shutting(sock)
    assert (status, headers.get("connection")) == (200, "close"), body
    assert _bytes_of(server, session) == sent


def test_a_delete_whose_client_shuts_its_side_is_answered(server: LiveServer) -> None:
    session = _a_file(server, b"old bytes")
    with connect(server) as sock:
        sock.sendall(head_of(server, f"DELETE /sessions/{session}/files/old"))
        status, headers, body = _answer_after_shutting(sock)
    assert (status, headers.get("connection")) == (200, "close"), body
    assert _bytes_of(server, session) == 404


def test_a_body_cut_by_its_client_shutting_its_side_stores_nothing(server: LiveServer) -> None:
    session = _a_file(server, b"old bytes")
    extra = "Content-Length: 100\r\n"
    with connect(server) as sock:
        sock.sendall(head_of(server, f"PUT /sessions/{session}/files/old", extra) + b"x" * 60)
        sock.shutdown(socket.SHUT_WR)
        assert Answers(sock).rest() == b""
    assert _bytes_of(server, session) == b"old bytes"
