"""A server is warm before it serves: its first requests pay nothing the next ones do not.

`app.server.warm.warm_up` runs in `serve`'s event loop before uvicorn serves the socket. These
tests check what it leaves behind, on a real `app serve` (its worker threads, its data root
untouched) and in process over a real store (each call's answer, FastAPI's per-route context
primed, the threads kept through anyio's idle pruning). bench/README.md ("Eleventh session")
has the timings; no test here measures time.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from fastapi import routing
from fastapi.routing import APIRoute

from app.config import Config
from app.server import create_app
from app.server.warm import SessionWarmer, warm_up
from app.store import Store
from app.testing import LiveServer

ANYIO_DEFAULT_THREADS = 40  # anyio's default thread limiter, which the server does not change


def test_a_served_server_has_its_worker_threads_and_has_written_nothing_before_any_request(
    forked_server: LiveServer,
) -> None:
    # Before this test's first request: the threads are there (the main thread, the lock
    # watcher and anyio's forty workers), and the warm-up's calls wrote nothing.
    threads = os.listdir(f"/proc/{forked_server.pid}/task")
    assert len(threads) >= 1 + ANYIO_DEFAULT_THREADS, threads
    assert forked_server.data_root is not None
    assert list((forked_server.data_root / "sessions").iterdir()) == []
    assert (forked_server.data_root / "audit.jsonl").read_text() == ""
    page = httpx.get(f"{forked_server.url}/sessions", headers=forked_server.headers)
    assert page.status_code == 200, page.text
    assert page.json()["total"] == 0


def test_the_warm_up_is_a_read_and_refusals_primes_every_route_and_keeps_its_threads(
    app_store: Store, app_config: Config
) -> None:
    app_store.create_session("there before", {})
    application = create_app(app_store, app_config)
    kept: list[int] = []

    async def main() -> list[str]:
        answered = await warm_up(application, application, app_config)
        # anyio stops every worker idle for MAX_IDLE_TIME when the next call comes: make them
        # all look idle for an hour, then call once. All of them must still be there.
        from anyio._backends import _asyncio

        idle = _asyncio._threadpool_idle_workers.get()
        for worker in idle:
            worker.idle_since -= 3600
        await anyio.to_thread.run_sync(int)
        kept.append(sum(worker.is_alive() for worker in _asyncio._threadpool_workers.get()))
        return answered

    answered = asyncio.run(main())
    assert answered == [
        "GET /health 200",
        "GET /sessions 200",
        "GET /sessions/00000000000000000000000000000000 404",
        "POST /sessions 422",
        "DELETE /sessions/warm-up 400",
    ]
    assert kept == [ANYIO_DEFAULT_THREADS]
    assert [s["title"] for s in app_store.list_sessions().items] == ["there before"]
    # FastAPI fills this cache on each route's first request by reading the route's source
    # file; if a release renames it, warm_up primes nothing and this says so.
    endpoints = [r.dependant.call for r in application.routes if isinstance(r, APIRoute)]
    assert endpoints
    assert all(id(call) in routing._endpoint_context_cache for call in endpoints)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {os.fspath(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def test_the_session_warmer_keeps_the_oldest_answers_reading_only_and_stops_when_told(
    app_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_store.sessions.meta.settled_ns = 0  # settled at once: kept on the first read
    assert app_store.watch_sessions()
    ids = [app_store.create_session(f"s{n}")["id"] for n in range(5)]
    before = tree(app_store.root.path)
    warmer = SessionWarmer(app_store, limit=3)
    warmer.warm(ids[:3])
    assert (warmer.read, len(app_store.sessions.bodies)) == (3, 3)
    checked: list[str] = []
    real = app_store.sessions.meta.stat

    def stat(directory: str, session_id: str) -> Any:
        checked.append(session_id)
        return real(directory, session_id)

    monkeypatch.setattr(app_store.sessions.meta, "stat", stat)
    app_store.list_sessions_json(limit=5)
    assert set(checked) == set(ids[3:])  # the three warmed: kept, trusted on the watch
    assert tree(app_store.root.path) == before  # nothing written, moved or touched
    told = SessionWarmer(app_store)
    told.stop()
    told.warm(ids)
    assert told.read == 0
    app_store.close()


_SIGNAL_AT_START_UP = """
import os, signal, sys
import app.server.run as run

build = run.create_app
stop_with = getattr(signal, sys.argv.pop(1))

def create_app(*args, **kwargs):
    # The port listens and the start-up check is done: what a supervisor or a reader sees
    # as "up", before the server serves.
    os.kill(os.getpid(), stop_with)
    return build(*args, **kwargs)

run.create_app = create_app
from app.cli import main
main()
"""


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_server_told_to_stop_once_its_port_listens_stops_gracefully(
    app_config: Config, signal_name: str
) -> None:
    # It was killed by SIGTERM (143) or exited 130 as an interrupted maintenance command,
    # telling the reader to run `app data check --repair`, until its handlers were in place.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AT_START_UP, signal_name, "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "stopped; releasing the hold" in output, output
    assert "interrupted" not in output, output
