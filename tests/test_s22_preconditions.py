"""Optimistic concurrency on a file's writes: ``If-Match`` over real servers, on both backends.

Two clients that read a file and replace it with ``If-Match: <the ETag they read>`` at once:
exactly one writes, the other is refused with 412 naming the version the first wrote. The
comparison sits where the write commits (under the session's lock on a data root, in the
transaction that switches the row on PostgreSQL), so the race is run many times against one
real ``app serve`` on a data root and against two replicas sharing a database and a bucket,
each client on its own replica.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest
from engines import PostgresEngine, S3Engine
from redteam_s19_http import one_server
from replicas import production_on

ROUNDS = 25


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest() + '"'


@pytest.fixture(scope="module")
def local_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, ...]]:
    """Two clients of one real ``app serve`` on a data root."""
    with (
        one_server(tmp_path_factory) as server,
        httpx.Client(base_url=server.url, headers=server.headers) as one,
        httpx.Client(base_url=server.url, headers=server.headers) as other,
    ):
        yield one, other


@pytest.fixture
def remote_pair(
    tmp_path: Path, postgres_engine: PostgresEngine, blob_url: str, s3_engine: S3Engine
) -> Iterator[tuple[httpx.Client, ...]]:
    """Two clients, each of its own replica, on one database and one object prefix."""
    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as production:
        first, second = production.start_pair()
        with production.client(first) as one, production.client(second) as other:
            yield one, other


def _session(client: httpx.Client) -> str:
    created = client.post("/sessions", json={})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _at_once(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """The calls, each on its own thread, released together."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _race(one: httpx.Client, other: httpx.Client) -> None:
    session_id = _session(one)
    url = f"/sessions/{session_id}/files/shared.txt"
    body = b"version 0"
    assert one.put(url, content=body).status_code == 201
    for round_ in range(ROUNDS):
        read = _etag(body)
        assert other.head(url).headers["etag"] == read
        mine, theirs = f"mine {round_}".encode(), f"theirs {round_}".encode()
        # Every third round, one of the two deletes the version it read instead.
        deleting = round_ % 3 == 2
        condition = {"If-Match": read}
        answers = _at_once(
            partial(one.put, url, content=mine, headers=condition),
            partial(other.delete, url, headers=condition)
            if deleting
            else partial(other.put, url, content=theirs, headers=condition),
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 412], [(a.status_code, a.text) for a in answers]
        won = 0 if answers[0].status_code == 200 else 1
        refused = answers[1 - won].json()
        assert refused["code"] == "precondition_failed"
        if won == 1 and deleting:
            assert "has no file 'shared.txt'" in refused["message"], refused
            assert one.get(url).status_code == 404
            body = b"version 0"
            assert one.put(url, content=body).status_code == 201
            continue
        body = mine if won == 0 else theirs
        # The refusal names the version that won, which is the file now.
        assert f"current version, ETag {_etag(body)}" in refused["message"], refused
        assert f"If-Match: {read} does not name" in refused["message"], refused
        assert one.get(url).content == body


def test_two_clients_replacing_one_version_at_once_on_a_data_root_one_wins(
    local_pair: tuple[httpx.Client, httpx.Client],
) -> None:
    _race(*local_pair)


def test_two_replicas_replacing_one_version_at_once_on_postgres_one_wins(
    remote_pair: tuple[httpx.Client, httpx.Client],
) -> None:
    _race(*remote_pair)


def test_if_match_takes_a_list_and_a_star_and_never_a_weak_tag(
    local_pair: tuple[httpx.Client, httpx.Client],
) -> None:
    client, _ = local_pair
    session_id = _session(client)
    url = f"/sessions/{session_id}/files/doc.txt"

    missing = client.put(url, content=b"a", headers={"If-Match": "*"})
    assert missing.status_code == 412, missing.text
    assert "has no file 'doc.txt'" in missing.json()["message"]
    assert "send the PUT without If-Match" in missing.json()["message"]
    assert client.get(url).status_code == 404

    assert client.put(url, content=b"a").status_code == 201
    assert client.put(url, content=b"b", headers={"If-Match": "*"}).status_code == 200
    listed = f'"{"0" * 64}", , {_etag(b"b")}'
    assert client.put(url, content=b"c", headers={"If-Match": listed}).status_code == 200

    weak = client.put(url, content=b"d", headers={"If-Match": "W/" + _etag(b"c")})
    assert weak.status_code == 412, weak.text
    assert "a weak tag, W/, never matches" in weak.json()["message"]

    malformed = client.put(
        url, content=b"d", headers={"If-Match": hashlib.sha256(b"c").hexdigest()}
    )
    assert malformed.status_code == 400, malformed.text
    assert "is not * or a list of entity tags" in malformed.json()["message"]

    # A date cannot tell two versions of one second apart: refused alone, ignored next to
    # If-Match (RFC 9110, 13.1.4).
    dated = {"If-Unmodified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"}
    alone = client.put(url, content=b"d", headers=dated)
    assert alone.status_code == 400, alone.text
    assert alone.json()["code"] == "precondition_unsupported"
    assert "does not evaluate If-Unmodified-Since" in alone.json()["message"]
    assert "Send If-Match with the file's ETag" in alone.json()["message"]
    both = client.put(url, content=b"d", headers={**dated, "If-Match": _etag(b"c")})
    assert both.status_code == 200, both.text

    stale = client.delete(url, headers={"If-Match": _etag(b"c")})
    assert stale.status_code == 412, stale.text
    assert f"DELETE of file 'doc.txt' in session {session_id} refused" in stale.json()["message"]
    assert client.get(url).content == b"d"
    assert client.delete(url, headers={"If-Match": _etag(b"d")}).status_code == 200

    session = client.delete(f"/sessions/{session_id}", headers={"If-Match": "*"})
    assert session.status_code == 400, session.text
    assert "a session has no ETag to compare with" in session.json()["message"]
    assert client.get(f"/sessions/{session_id}").status_code == 200
