"""What one client may hold of a real server, and that nobody else notices (#9, items 9, 10).

Every test runs a real ``app serve`` (the `forked_server` fixture: `app_live_server`'s
server) with tight bounds set through ``APP_*`` variables, and plays the slow or greedy client
with a raw socket: a header that never ends, a body that stops or trickles, more uploads at
once than the server takes. Meanwhile a normal client's request must succeed. Waits are
bounded by a condition, never by a duration.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_http import WAIT, Answers, a_session, address, connect, head_of
from starlette.requests import Request
from starlette.testclient import TestClient

from app.server.uploads import client_named
from app.store import Store
from app.testing import LiveServer


def read_answer(sock: socket.socket, data: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Read until the server closes the connection; the status, headers and body."""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0] else 0
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def token_header(server: LiveServer) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in server.headers.items())


def others_still_served(server: LiveServer) -> None:
    """A normal client meanwhile: create a session, upload to it, list."""
    session_id = a_session(server)
    put = httpx.put(
        f"{server.url}/sessions/{session_id}/files/ok.txt", content=b"ok", headers=server.headers
    )
    assert put.status_code == 201, put.text
    assert httpx.get(f"{server.url}/sessions", headers=server.headers).status_code == 200


def problem(body: bytes, code: str, *texts: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(body)
    assert document["code"] == code, document
    for text in texts:
        assert text in document["message"], document
    return document


# --- headers are bounded in size (9) ----------------------------------------------------------


@pytest.mark.parametrize("tight", [{"APP_MAX_HEADER_BYTES": "8192"}], indirect=True)
def test_a_header_larger_than_max_header_bytes_is_431_and_others_are_served(
    tight: LiveServer,
) -> None:
    with connect(tight) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        # 64 MiB once stalled the event loop for seconds and cost 110 MiB (#9).
        # Twice the bound, and no end of the headers: the server must not wait for more. (It
        # reads no further either; a client still sending would meet a reset, not the 431.)
        sock.sendall(b"a" * 16384)
        others_still_served(tight)
        status, headers, body = read_answer(sock)
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    problem(body, "header_too_large", "larger than 8192 bytes", "max_header_bytes")


def test_headers_are_bounded_by_default(forked_server: LiveServer) -> None:
    with connect(forked_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000)
        status, _, body = read_answer(sock)
    assert status == 431
    problem(body, "header_too_large", "larger than 32768 bytes")


def test_a_request_that_is_not_http_is_a_400_problem_document(forked_server: LiveServer) -> None:
    with connect(forked_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n")
        status, headers, body = read_answer(sock)
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    problem(body, "bad_request", "malformed HTTP request", "RFC 9112")


# --- a slow client is cut off (9) -----------------------------------------------------------

_QUICK = {"APP_REQUEST_IDLE_SECONDS": "0.5", "APP_REQUEST_SECONDS": "120"}


@pytest.mark.parametrize("tight", [_QUICK], indirect=True)
def test_a_client_that_sends_nothing_is_disconnected(tight: LiveServer) -> None:
    with connect(tight) as sock:
        others_still_served(tight)
        status, _, body = read_answer(sock)  # returns once the server closed the connection
    assert (status, body) == (0, b"")  # nothing was asked, so nothing is answered


def _queued(sock: socket.socket) -> int:
    """Bytes the kernel holds for this socket, not yet read."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0])


def _read_what_is_there(sock: socket.socket) -> bytes:
    data = bytearray()
    sock.setblocking(False)
    try:
        while True:
            data += sock.recv(1 << 20)
    except BlockingIOError:
        return bytes(data)
    finally:
        sock.settimeout(WAIT)


def _stopped(pid: int) -> str:
    """Stop the process; what its main thread was doing: a system call's number, or "-1"."""
    os.kill(pid, signal.SIGSTOP)
    while Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "T":
        time.sleep(0.001)
    return Path(f"/proc/{pid}/syscall").read_text().split()[0]


@pytest.mark.parametrize("tight", [_QUICK], indirect=True)
def test_bytes_that_came_while_the_server_stalled_are_not_taken_for_an_idle_client(
    tight: LiveServer,
) -> None:
    # Here the server is slow, not the client: its process did not run (starved of CPU on a
    # loaded machine, or stopped) while each request arrived in time. Caught in the middle of
    # its event loop's work, it runs its due timers before it reads what came: the idle
    # timers dropped the connection, its request unanswered ("disconnected without sending a
    # response"), refused a body that had all come with 408, or abandoned a download its
    # client had read. Four waits: between requests (keep-alive), within a head, within a
    # body, and for the client to read.
    session_id = a_session(tight)
    waiting_for_events = _stopped(tight.pid)  # an idle server waits in epoll (or its like)
    os.kill(tight.pid, signal.SIGCONT)
    busy = threading.Event()

    def keep_busy() -> None:  # a steady stream of new requests for the loop to work on
        with httpx.Client(base_url=tight.url, headers=tight.headers) as client:
            while not busy.is_set():
                # A keep-alive connection the server closed as idle (0.5 s here) just as
                # this thread, starved on a loaded machine, sent its next request on it:
                # HTTP's own race (RFC 9112 9.3.1), which a client meets by asking again on
                # a new connection, as here. Raised, it ended the thread in a warning.
                with contextlib.suppress(httpx.RemoteProtocolError):
                    client.get("/sessions")

    idle = float(_QUICK["APP_REQUEST_IDLE_SECONDS"])

    @contextlib.contextmanager
    def stalled() -> Iterator[None]:
        # Caught idle, it would read first: it is let go and caught again, at most for half
        # the idle time since the client's last byte. Longer, and the client itself would be
        # late (a loaded machine took the time), which the server rightly takes as idle; the
        # server is then stopped where it is (the bytes still come while it does not run).
        late = time.monotonic() + idle / 2
        while _stopped(tight.pid) == waiting_for_events and time.monotonic() < late:
            os.kill(tight.pid, signal.SIGCONT)
        try:
            yield
            # The stall itself, which must outlast request_idle_seconds: the server's timer
            # started before the stop, so a fifth more makes it due when the server runs again.
            time.sleep(1.2 * idle)
        finally:
            os.kill(tight.pid, signal.SIGCONT)

    big = b"0123456789abcdef" * (1 << 19)  # 8 MiB: more than both sockets' buffers hold
    put = httpx.put(
        f"{tight.url}/sessions/{session_id}/files/big.bin", content=big, headers=tight.headers
    )
    assert put.status_code == 201, put.text
    hammers = [threading.Thread(target=keep_busy) for _ in range(4)]
    for hammer in hammers:
        hammer.start()
    try:
        with connect(tight) as sock:
            answers = Answers(sock)
            sock.sendall(head_of(tight, "GET /health"))
            assert answers.next()[0] == 200
            with stalled():
                sock.sendall(head_of(tight, "GET /health"))
            assert answers.next()[0] == 200
            request = head_of(tight, "GET /health")
            sock.sendall(request[:20])
            with stalled():
                sock.sendall(request[20:])
            assert answers.next()[0] == 200
            put_head = head_of(
                tight, f"PUT /sessions/{session_id}/files/a.bin", "Content-Length: 8\r\n"
            )
            sock.sendall(put_head + b"1234")
            with stalled():
                sock.sendall(b"5678")
            status, _, body = answers.next()
            assert status == 201, body
            # A download whose client reads all it can while the server does not run.
            sock.sendall(head_of(tight, f"GET /sessions/{session_id}/files/big.bin"))
            queued = -1
            while queued != (queued := _queued(sock)) or not queued:  # until the pipe is full
                time.sleep(0.05)
            with stalled():
                answers.data += _read_what_is_there(sock)
            head, _, body = answers.rest().partition(b"\r\n\r\n")  # until the idle close
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert len(body) == len(big)  # the whole file, not abandoned partway
            assert body == big
    finally:
        busy.set()
        for hammer in hammers:
            hammer.join()
    stored = httpx.get(f"{tight.url}/sessions/{session_id}/files/a.bin", headers=tight.headers)
    assert stored.content == b"12345678"


@pytest.mark.parametrize("tight", [_QUICK], indirect=True)
def test_a_request_head_that_stops_halfway_is_408(tight: LiveServer) -> None:
    with connect(tight) as sock:
        sock.sendall(b"GET /sessions HTTP/1.1\r\nHost: x\r\n")
        others_still_served(tight)
        status, headers, body = read_answer(sock)
    assert status == 408
    assert headers["connection"] == "close"
    problem(body, "request_timeout", "request line and headers", "request_idle_seconds")


@pytest.mark.parametrize("tight", [_QUICK], indirect=True)
def test_an_upload_whose_body_stops_is_408_and_keeps_nothing(tight: LiveServer) -> None:
    session_id = a_session(tight)
    with connect(tight) as sock:
        sock.sendall(
            f"PUT /sessions/{session_id}/files/slow.bin HTTP/1.1\r\nHost: x\r\n".encode()
            + token_header(tight)
            + b"Content-Length: 1000\r\n\r\n"
            + b"x" * 10
        )
        others_still_served(tight)
        status, headers, body = read_answer(sock)
    assert status == 408
    assert headers["connection"] == "close"
    problem(body, "request_timeout", "its body", "0.5 seconds", "request_idle_seconds")
    files = httpx.get(f"{tight.url}/sessions/{session_id}/files", headers=tight.headers)
    assert files.json()["items"] == []
    leftovers = [p for p in (tight.data_root / ".tmp").rglob("*") if p.is_file()]
    assert leftovers == []


@pytest.mark.parametrize(
    "tight", [{"APP_REQUEST_IDLE_SECONDS": "30", "APP_REQUEST_SECONDS": "0.5"}], indirect=True
)
def test_an_upload_that_trickles_past_request_seconds_is_408(tight: LiveServer) -> None:
    session_id = a_session(tight)
    with connect(tight) as sock:
        sock.sendall(
            f"PUT /sessions/{session_id}/files/trickle.bin HTTP/1.1\r\nHost: x\r\n".encode()
            + token_header(tight)
            + b"Content-Length: 100000\r\n\r\n"
        )
        # A byte now and then: never idle, never done.
        sock.settimeout(0.2)
        first = b""
        for _ in range(600):  # 2 minutes at most: a bound for a broken server, not a timing
            try:
                sock.sendall(b"x")
            except OSError:
                break  # closed before this byte's answer was read: read_answer gets it
            try:
                first = sock.recv(65536)
            except TimeoutError:
                continue
            break
        else:
            pytest.fail("the server never cut the trickling upload off")
        others_still_served(tight)
        sock.settimeout(WAIT)
        status, _, body = read_answer(sock, first)
    assert status == 408
    problem(body, "request_timeout", "in full", "0.5 seconds", "request_seconds")
    files = httpx.get(f"{tight.url}/sessions/{session_id}/files", headers=tight.headers)
    assert files.json()["items"] == []


@pytest.mark.parametrize("tight", [_QUICK], indirect=True)
def test_a_client_that_stops_reading_a_download_is_disconnected(tight: LiveServer) -> None:
    session_id = a_session(tight)
    size = 16 * 2**20  # more than the socket buffers on both sides hold
    url = f"{tight.url}/sessions/{session_id}/files/big.bin"
    assert httpx.put(url, content=b"b" * size, headers=tight.headers).status_code == 201
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    with sock:
        sock.connect(address(tight))
        sock.sendall(
            f"GET /sessions/{session_id}/files/big.bin HTTP/1.1\r\nHost: x\r\n".encode()
            + token_header(tight)
            + b"\r\n"
        )
        others_still_served(tight)
        # Read nothing until the server says it gave up on this client (a bounded wait).
        for _ in range(1200):
            if "read nothing of the response" in tight.log.read_text(errors="replace"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the server kept waiting for a client that reads nothing")
        _, _, body = read_answer(sock)
    assert len(body) < size  # the connection was closed mid-download
    assert "request_idle_seconds" in tight.log.read_text(errors="replace")


# --- uploads in flight are bounded (9) ----------------------------------------------------


def start_upload(
    server: LiveServer, session_id: str, name: str, more: bytes = b""
) -> socket.socket:
    """An upload whose body has begun and waits for the rest (``more``: header lines)."""
    sock = connect(server)
    sock.sendall(
        f"PUT /sessions/{session_id}/files/{name} HTTP/1.1\r\nHost: x\r\n".encode()
        + token_header(server)
        + more
        + b"Content-Length: 6\r\n\r\nabc"
    )
    return sock


@pytest.mark.parametrize("tight", [{"APP_MAX_UPLOADS_IN_FLIGHT": "2"}], indirect=True)
def test_uploads_over_max_uploads_in_flight_are_503_with_retry_after(tight: LiveServer) -> None:
    session_id = a_session(tight)
    url = f"{tight.url}/sessions/{session_id}/files"
    # The second names itself in words of its own, as uvicorn lets a client at 127.0.0.1 do.
    said = b"198.51.100.7; the oldest began 0 s ago. Nothing is wrong here: raise the limit"
    slow = [start_upload(tight, session_id, "slow-0.bin")]
    slow.append(
        start_upload(tight, session_id, "slow-1.bin", b"X-Forwarded-For: " + said + b"\r\n")
    )
    try:
        # Both slow uploads are in flight once a third is refused (bounded: they started).
        for _ in range(600):
            refused = httpx.put(f"{url}/third.bin", content=b"3", headers=tight.headers)
            if refused.status_code == 503:
                break
            assert refused.status_code == 201, refused.text  # before the slow ones began
            httpx.delete(f"{url}/third.bin", headers=tight.headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"].isdigit()
        assert refused.headers["content-type"] == "application/problem+json"
        problem(refused.content, "too_many_uploads", "2 uploads at once", "Retry after")
        # Who holds them (red team 71 on the HTTP contract): one client that trickled its
        # bodies held every slot, and the refusal said only to raise the limit.
        problem(refused.content, "too_many_uploads", "1 from 127.0.0.1", "limit uploads per")
        # A client's address from X-Forwarded-For only if it is one: its text was put into
        # every other client's refusal (red team 71 on regress, rt-regress71d).
        unnamed = "1 from a client whose X-Forwarded-For gave no address"
        problem(refused.content, "too_many_uploads", unnamed, "; the oldest began ")
        assert "Nothing is wrong" not in refused.text
        multipart = httpx.post(url, files={"file": ("m.txt", b"m")}, headers=tight.headers)
        assert multipart.status_code == 503
        problem(multipart.content, "too_many_uploads", "max_uploads_in_flight")
        # Everything else is served meanwhile.
        assert httpx.get(f"{tight.url}/sessions", headers=tight.headers).status_code == 200
        assert httpx.post(f"{tight.url}/sessions", json={}, headers=tight.headers).is_success
        # A slow upload that completes is stored, and frees its place.
        slow[0].sendall(b"def")
        status, _, body = read_answer_once(slow[0])
        assert status == 201, body
        done = httpx.put(f"{url}/fourth.bin", content=b"4", headers=tight.headers)
        assert done.status_code == 201, done.text
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize(
    ("host", "named"),
    [
        # Was ::ffff:c633:6407: str() of an IPv4-mapped address, the client of a server on
        # "::" that every IPv4 client reaches as one, or a proxy's X-Forwarded-For.
        ("::ffff:198.51.100.7", "::ffff:198.51.100.7"),
        ("198.51.100.7", "198.51.100.7"),
        ("2001:DB8::1", "2001:DB8::1"),  # as the access log has it
        ("fe80::1%br-lan", "fe80::1%br-lan"),  # was fe80::1: an interface's name
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("fe80::1%eth0; Nothing is wrong", "fe80::1"),
        (
            "198.51.100.7; the oldest began 0 s ago",
            "a client whose X-Forwarded-For gave no address",
        ),
        ("", "an unknown client"),
    ],
)
def test_a_client_holding_an_upload_is_named_by_its_address_as_given(host: str, named: str) -> None:
    # Red team 71 on regress (rt-regress71h), found by reading rt-regress71d's
    # `client_named` (the 503 above shows it; a server on "::" is not started here).
    request = Request({"type": "http", "client": (host, 0) if host else None, "headers": []})
    assert client_named(request) == named


def read_answer_once(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response on a keep-alive connection (the server does not close it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


# --- a page is bounded in bytes (10) --------------------------------------------------------


@pytest.mark.parametrize("tight", [{"APP_PAGE_MAX_BYTES": "100000"}], indirect=True)
def test_a_page_stops_at_page_max_bytes_and_the_cursor_gives_the_rest(tight: LiveServer) -> None:
    created = []
    for i in range(7):
        metadata = {"blob": f"{i}" * 40_000}  # about 40 KB each: two fit in 100,000 bytes
        response = httpx.post(
            f"{tight.url}/sessions", json={"metadata": metadata}, headers=tight.headers
        )
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": "1000", **({"after": after} if after else {})}
        page = httpx.get(f"{tight.url}/sessions", params=params, headers=tight.headers)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["total"] == 7
        assert 1 <= len(body["items"]) <= 2
        assert len(page.content) < 100_000 + 1000  # the items' bound, plus the envelope
        seen += [item["id"] for item in body["items"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert seen == created
    assert pages == 4


@pytest.mark.parametrize("tight", [{"APP_PAGE_MAX_BYTES": "1024"}], indirect=True)
def test_a_session_larger_than_page_max_bytes_still_gets_a_page_of_its_own(
    tight: LiveServer,
) -> None:
    ids = [
        httpx.post(
            f"{tight.url}/sessions", json={"metadata": {"x": "y" * 5000}}, headers=tight.headers
        ).json()["id"]
        for _ in range(2)
    ]
    first = httpx.get(f"{tight.url}/sessions", headers=tight.headers).json()
    assert [item["id"] for item in first["items"]] == ids[:1]
    assert first["next"] == ids[0]
    second = httpx.get(
        f"{tight.url}/sessions", params={"after": ids[0]}, headers=tight.headers
    ).json()
    assert [item["id"] for item in second["items"]] == ids[1:]
    assert second["next"] is None


# --- the OpenAPI document says so ------------------------------------------------------------


def test_the_openapi_document_declares_the_bounds_of_every_request(
    forked_server: LiveServer,
) -> None:
    document = httpx.get(f"{forked_server.url}/openapi.json").json()
    operations = {
        operation["operationId"]: operation
        for path in document["paths"].values()
        for operation in path.values()
    }
    for name, operation in operations.items():
        for status in ("408", "431"):
            declared = operation["responses"].get(status)
            assert declared is not None, (name, status)
            schema = declared["content"]["application/problem+json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}
        busy = operation["responses"]["503"]  # any route may be out of file descriptors
        assert "too_many_open_files" in busy["description"], name
        assert "Retry-After" in busy["headers"], name
    for name in ("uploadFile", "putFile"):
        assert "too_many_uploads" in operations[name]["responses"]["503"]["description"]
    listing = document["components"]["schemas"]["SessionPage"]["properties"]["next"]
    assert "page_max_bytes" in listing["description"]


# --- out of file descriptors: 503, never 500 (9) ------------------------------------------------


def test_an_upload_when_the_process_is_out_of_file_descriptors_is_503_not_500(
    app_client: TestClient, app_store: Store
) -> None:
    session_id = app_client.post("/sessions", json={}).json()["id"]
    url = f"/sessions/{session_id}/files/report.txt"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The limit where this process stands now: the next open() is EMFILE, as when 150 slow
    # uploads had used up a server's 256 descriptors (#9).
    # (listdir's own descriptor is listed too, and closed again: hence the - 1.)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) - 1, hard))
    try:
        refused = app_client.put(url, content=b"report")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "5"
    problem(refused.content, "too_many_open_files", "files open", "LimitNOFILE")
    assert app_store.list_files(session_id) == []
    assert app_client.put(url, content=b"report").status_code == 201


# --- a body arrives whole however the packets split it ---------------------------------------


def test_bodies_split_across_packets_and_a_pipelined_request_arrive_whole(
    forked_server: LiveServer,
) -> None:
    # app.server.protocol hands a Content-Length body past h11's parser, counting it off
    # h11's reader: the head and the first bytes in one packet, a body's end and the next
    # head in another, a client that asks for 100 Continue and sends its body anyway (its
    # first bytes go through h11), then a pipelined GET.
    server = forked_server
    session_id = a_session(server)
    body = os.urandom(300_000)

    def put(name: str, extra: bytes = b"") -> bytes:
        return (
            f"PUT /sessions/{session_id}/files/{name} HTTP/1.1\r\nHost: x\r\n".encode()
            + token_header(server)
            + f"Content-Length: {len(body)}\r\n".encode()
            + extra
            + b"\r\n"
        )

    listing = (
        f"GET /sessions/{session_id}/files HTTP/1.1\r\nHost: x\r\n".encode()
        + token_header(server)
        + b"Connection: close\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(put("a.bin") + body[:7])
        sock.sendall(body[7:200_000])
        sock.sendall(body[200_000:] + put("b.bin", b"Expect: 100-continue\r\n") + body[:5])
        sock.sendall(body[5:] + listing)
        status, _, answers = read_answer(sock)
    assert status in (201, 100)
    assert answers.count(b"HTTP/1.1 201 ") + (status == 201) == 2, answers[:2000]
    files = httpx.get(f"{server.url}/sessions/{session_id}/files", headers=server.headers)
    digest = hashlib.sha256(body).hexdigest()
    assert sorted((f["name"], f["size"], f["sha256"]) for f in files.json()["items"]) == [
        ("a.bin", len(body), digest),
        ("b.bin", len(body), digest),
    ]
    assert b'"a.bin"' in answers.rsplit(b"HTTP/1.1 200 ", 1)[1]
