"""Red team 61 on the HTTP contract (branch rt-api3): see docs/explanation/attacks/.

The promise: the routes, bounds and error bodies of docs/reference/http-api.md and the OpenAPI
document are what the server does, on every path. Red teams 59 and 60 did data a tool wrote,
ranges, conditions, methods, query strings and percent-encoding; these tests send, to one real
``app serve``, the bounds at their edge and what authenticates.

What broke, and what changed:

- ``max_header_bytes`` (32 KiB, "431 ``header_too_large``") held a head only while it was
  still coming: h11 bounds an incomplete event (``h11_max_incomplete_event_size``), so a head
  that came whole in one read passed at any size. A 70,000-byte head sent in one write was
  answered 200 where the same head in small writes was 431, and so were a chunked body's
  trailer fields and a chunk's size line of 60,000 bytes (documented as ``431
  body_line_too_large``, nothing kept): the bound depended on how TCP cut the bytes. h11's
  connection now counts the bytes each head, chunk size line and trailer took from its buffer
  (`app.server.protocol.bounded_h11`): one byte over is 431 however it arrived;
- an ``api_token`` with a character outside printable ASCII (``tökén...``), a control
  character, or (on a profile that is not protected) whitespace at an end was served: the
  server compares the header as Starlette decodes it (Latin-1), so a client that sent the
  right token in UTF-8 (curl, a browser) was refused 401 "invalid bearer token", and one in
  Latin-1 (Python's requests) was let in; a token with a trailing newline let nobody in. Such
  a token is now a configuration error on every profile (exit 78), naming what is wrong and
  where, never quoting it (`app.config._unsendable_token`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
from live_http import Answers, a_file, connect, head_of
from redteam_s19_http import server_and_client

from app import config as appconfig
from app.errors import InvalidSettingError
from app.testing import LiveServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """One server for the module; each test works in sessions of its own."""
    with server_and_client(tmp_path_factory) as both:
        yield both


def _sent_at_once(server: LiveServer, data: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    """Send ``data`` in one write; the answer's status, headers and JSON body."""
    with connect(server) as sock:
        sock.sendall(data)
        answers = Answers(sock)
        status, headers, body = answers.next()
        if headers.get("connection") == "close":
            assert answers.rest() == b""
    shown = httpx.Response(status, content=body).json() if body else {}
    return status, headers, shown


def _padded_head(server: LiveServer, line: str, size: int, extra: str = "") -> bytes:
    """A request head of exactly ``size`` bytes, a header ``X-Pad`` making up the rest."""
    plain = head_of(server, line, f"{extra}Connection: close\r\nX-Pad: \r\n")
    head = head_of(
        server, line, f"{extra}Connection: close\r\nX-Pad: {'a' * (size - len(plain))}\r\n"
    )
    assert len(head) == size
    return head


def test_a_head_over_max_header_bytes_is_431_however_it_arrives(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    server, _ = served
    bound = server.config.max_header_bytes
    status, _, _ = _sent_at_once(server, _padded_head(server, "GET /sessions?limit=1", bound))
    assert status == 200
    for size in (bound + 1, 70_000):
        # Before: 200 (the head came whole in one read, which h11 does not bound).
        status, headers, body = _sent_at_once(
            server, _padded_head(server, "GET /sessions?limit=1", size)
        )
        assert status == 431, (size, body)
        assert headers["connection"] == "close"
        assert headers["content-type"] == "application/problem+json"
        assert body["code"] == "header_too_large", body
        assert f"larger than {bound} bytes" in body["message"], body
        assert "max_header_bytes setting (APP_MAX_HEADER_BYTES)" in body["message"], body


def test_a_trailer_or_chunk_line_over_the_bound_is_431_and_nothing_kept(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    server, client = served
    bound = server.config.max_header_bytes
    path = a_file(server, client, b"old")
    put = head_of(server, f"PUT {path}", "Transfer-Encoding: chunked\r\nConnection: close\r\n")
    # Small ones are read past, as before.
    assert (
        _sent_at_once(server, put + b"3;x=1\r\nnew\r\n0\r\nX-T: " + b"b" * 1000 + b"\r\n\r\n")[0]
        == 200
    )
    assert client.get(path).content == b"new"
    for body in (
        b"3\r\nbad\r\n0\r\nX-T: " + b"b" * (bound + 10) + b"\r\n\r\n",  # a trailer field
        b"3;" + b"e" * (bound + 10) + b"\r\nbad\r\n0\r\n\r\n",  # a chunk's extensions
    ):
        # Before: 200, the file replaced by "bad" (the body came whole in one read).
        status, headers, problem = _sent_at_once(server, put + body)
        assert_line_refused(status, headers, problem, path)
        assert client.get(path).content == b"new"


def assert_line_refused(
    status: int, headers: Mapping[str, str], problem: dict[str, Any], path: str
) -> None:
    """The answer to a `PUT` of `path` whose chunked body has a line over the bound: 431
    ``body_line_too_large``, the connection closed, nothing of the body kept."""
    assert status == 431, problem
    assert headers["connection"] == "close"
    assert problem["code"] == "body_line_too_large", problem
    assert f"PUT {path} refused" in problem["message"], problem
    assert "nothing of it was kept" in problem["message"], problem


def _token_env(tmp_path: os.PathLike[str], token: str) -> dict[str, str]:
    return {**os.environ, "APP_DATA_ROOT": str(tmp_path), "APP_API_TOKEN": token}


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("tökén-Zq8#xW2!pLm9vR4", "not printable ASCII (outside ASCII) at position 2 of 21"),
        ("testing-token\t2", "not printable ASCII (a control character) at position 14 of 15"),
        ("testing-token-2\n", "has whitespace at its end"),
    ],
)
def test_a_token_no_client_can_send_is_a_configuration_error(
    tmp_path: os.PathLike[str], token: str, problem: str
) -> None:
    # Before: loaded, and served: the right token in UTF-8 (curl) was 401, and one padded
    # with a newline let nobody in, on every profile but a protected one.
    with pytest.raises(InvalidSettingError) as caught:
        appconfig.load("testing", environ=_token_env(tmp_path, token))
    message = str(caught.value)
    assert (caught.value.key, caught.value.exit_code) == ("api_token", 78)
    assert problem in message, message
    assert "APP_API_TOKEN" in message and "remove it where the token is set" in message.lower()
    assert token.strip() not in message and "ö" not in message
    # A space inside is sent and compared as it is.
    assert appconfig.load("testing", environ=_token_env(tmp_path, "two words")).api_token


def test_a_header_of_bytes_outside_ascii_is_a_401(served: tuple[LiveServer, httpx.Client]) -> None:
    server, _ = served
    for token in ("tökén".encode(), "tökén".encode("latin-1"), b"\xff\xfe"):
        head = b"GET /sessions?limit=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        status, headers, body = _sent_at_once(
            server, head + b"Authorization: Bearer " + token + b"\r\n\r\n"
        )
        assert status == 401, body
        assert headers["www-authenticate"] == "Bearer"
        assert body["message"] == "invalid bearer token"
