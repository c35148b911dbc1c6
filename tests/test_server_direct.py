"""`app.server.direct.DirectReads`: gets and pages answered before FastAPI's route, as it would."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from app.server import create_app
from app.server.direct import DirectReads

if TYPE_CHECKING:
    from app.config import Config
    from app.store import Store

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def call(app: Any, method: str, path: str, query: bytes = b"", **headers: str) -> Answer:
    """One request through an ASGI application, as uvicorn would make it; its whole answer."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, *body = sent
    return start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in body)


async def _fastapi_route(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError(f"left to FastAPI: {scope['method']} {scope['path']}")


@pytest.fixture
def layers(app_store: Store, app_config: Config) -> tuple[Any, Any]:
    """The whole application, and FastAPI's stack under `DirectReads` (what it stands before)."""
    app = create_app(app_store, app_config)
    layer = app.build_middleware_stack()
    while not isinstance(layer, DirectReads):
        layer = layer.app
    return app, layer.app


def test_it_answers_a_get_and_a_page_itself_with_the_stores_bytes(
    app_store: Store, app_config: Config
) -> None:
    direct = DirectReads(_fastapi_route, app_store, app_config)
    ids = [app_store.create_session(f"s{i}")["id"] for i in range(3)]
    token = f"Bearer {app_config.api_token}"
    status, headers, body = call(direct, "GET", f"/sessions/{ids[1]}", authorization=token)
    assert (status, body) == (200, app_store.get_session_json(ids[1]))
    assert (b"content-type", b"application/json") in headers
    status, _, body = call(
        direct, "GET", "/sessions", b"limit=2", authorization=token, content_length="0"
    )
    page = app_store.list_sessions_json(limit=2, max_bytes=app_config.page_max_bytes)
    assert (status, body) == (200, page)


@pytest.mark.parametrize(
    ("path", "query", "headers"),
    [
        ("/sessions/{id}", b"", {"authorization": "Bearer wrong"}),
        ("/sessions/{id}", b"", {"authorization": None}),
        ("/sessions/{id}", b"", {"authorization": "Basic {token}"}),
        ("/sessions/{id}", b"limit=2", {}),
        ("/sessions/{id}", b"", {"if_match": '"x"'}),
        ("/sessions/{id}", b"", {"content_length": "3"}),
        ("/sessions/{id}", b"", {"content_length": "10"}),
        ("/sessions/{id}", b"", {"transfer_encoding": "chunked"}),
        ("/sessions/{unknown}", b"", {}),
        ("/sessions/ABC", b"", {}),
        ("/sessions", b"limit=101", {}),
        ("/sessions", b"limit=%2B5", {}),
        ("/sessions", b"limit=0", {}),
        ("/sessions", b"limit=2&limit=3", {}),
        ("/sessions", b"limt=2", {}),
        ("/sessions", b"after=", {"if_none_match": "*"}),
    ],
)
def test_it_leaves_to_fastapi_what_its_route_would_check_or_refuse_and_fastapi_answers_alike(
    layers: tuple[Any, Any],
    app_store: Store,
    app_config: Config,
    path: str,
    query: bytes,
    headers: dict[str, str | None],
) -> None:
    app, route = layers
    direct = DirectReads(_fastapi_route, app_store, app_config)
    sid = app_store.create_session("one")["id"]
    path = path.format(id=sid, unknown="0" * 32)
    given = {"authorization": f"Bearer {app_config.api_token}"} | {
        k: v.format(token=app_config.api_token) for k, v in headers.items() if v is not None
    }
    given = {k: v for k, v in given.items() if headers.get(k, "") is not None}
    with pytest.raises(AssertionError, match="left to FastAPI"):
        call(direct, "GET", path, query, **given)
    whole = call(app, "GET", path, query, **given)
    assert whole == call(route, "GET", path, query, **given)
    assert whole[0] != 500


def test_its_answers_are_fastapis_byte_for_byte(
    layers: tuple[Any, Any], app_store: Store, app_config: Config
) -> None:
    app, route = layers
    ids = [app_store.create_session(f"s{i}", {"n": i})["id"] for i in range(5)]
    app_store.put_file(ids[2], "a.txt", b"abc")
    token = {"authorization": f"Bearer {app_config.api_token}"}
    asked = [
        ("GET", f"/sessions/{ids[2]}", b""),
        ("GET", "/sessions", b""),
        ("GET", "/sessions", b"limit=2"),
        ("GET", "/sessions", b"limit=002&after=" + ids[1].encode()),
        ("GET", "/sessions", b"after=" + ids[3].encode() + b"&limit=100"),
        ("GET", "/sessions", b"after=" + ids[4].encode()),  # the last: an empty page
    ]
    for method, path, query in asked:
        answer = call(app, method, path, query, **token)
        assert answer[0] == 200, answer
        assert answer == call(route, method, path, query, **token), (path, query)
        # Some clients send Content-Length: 0 with every request (bench/load.py's does).
        assert answer == call(app, method, path, query, **token, content_length="0")
    # The store's refusals: read again by FastAPI's route, and answered by its handlers.
    for query in (b"after=", b"after=nothing"):
        answer = call(app, "GET", "/sessions", query, **token)
        assert answer[0] == 400, answer
        assert b"invalid session id" in answer[2]
        assert answer == call(route, "GET", "/sessions", query, **token)
    # HEAD is the GET's answer (RequestGuard makes it one before DirectReads sees it).
    assert (
        call(app, "HEAD", f"/sessions/{ids[0]}", **token)[:2]
        == (call(route, "GET", f"/sessions/{ids[0]}", **token)[:2])
    )
