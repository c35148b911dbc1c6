"""Red team over HTTP: the sessions' listing walked while sessions are created and deleted.

A client that pages ``GET /sessions`` with ``after=<the last id it saw>`` (and so one that
polls for new sessions that way) relies on one promise: a session appears after every session
listed before it. The attack: many clients create sessions at once while a walker follows the
cursor, and others delete some.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from redteam_s19_http import one_server

from app.testing import LiveServer

CREATORS = 8
EACH = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(tmp_path_factory) as server:
        yield server


def _walk(client: httpx.Client, after: str | None) -> tuple[list[str], str | None]:
    """Every id listed after ``after``, following ``next``; and the last id seen."""
    seen: list[str] = []
    while True:
        params: dict[str, str | int] = {"limit": 7}
        if after is not None:
            params["after"] = after
        page = client.get("/sessions", params=params).json()
        seen += [item["id"] for item in page["items"]]
        after = seen[-1] if seen else after
        if page["next"] is None:
            return seen, after
        after = page["next"]


def test_a_walk_that_polls_with_its_cursor_sees_every_session_created_meanwhile_once(
    server: LiveServer,
) -> None:
    with httpx.Client(base_url=server.url, headers=server.headers) as client:
        before = [client.post("/sessions", json={}).json()["id"] for _ in range(5)]
        doomed = before[1::2]
        done = threading.Event()
        created: list[str] = []

        def create() -> None:
            with httpx.Client(base_url=server.url, headers=server.headers) as mine:
                for _ in range(EACH):
                    response = mine.post("/sessions", json={})
                    assert response.status_code == 201, response.text
                    created.append(response.json()["id"])

        def delete() -> None:
            with httpx.Client(base_url=server.url, headers=server.headers) as mine:
                for session_id in doomed:
                    assert mine.delete(f"/sessions/{session_id}").status_code == 200

        seen: list[str] = []
        with ThreadPoolExecutor(CREATORS + 1) as pool:
            jobs = [pool.submit(create) for _ in range(CREATORS)] + [pool.submit(delete)]
            finished = threading.Thread(target=lambda: ([j.result() for j in jobs], done.set()))
            finished.start()
            cursor = None
            while not done.is_set():
                more, cursor = _walk(client, cursor)
                seen += more
            more, cursor = _walk(client, cursor)  # once more after the last create answered
            seen += more
            finished.join()
            for job in jobs:
                job.result()
    assert len(seen) == len(set(seen)), "a session was listed twice"
    kept = [s for s in before if s not in doomed]
    missed = sorted((set(created) | set(kept)) - set(seen))
    assert missed == [], f"{len(missed)} of {len(created)} sessions never listed to the walker"
