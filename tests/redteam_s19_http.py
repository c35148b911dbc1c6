"""What the ``test_redteam_s19_http_*`` files share: one real ``app serve`` per module."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import forked_app
import httpx
import pytest

from app import config as appconfig
from app.testing import LiveServer
from app.testing.live_server import stop_server


@contextlib.contextmanager
def one_server(factory: pytest.TempPathFactory, **settings: str) -> Iterator[LiveServer]:
    """A real ``app serve`` on a data root of its own, with ``APP_*`` ``settings``; its tests
    must not disturb each other (each works in a session of its own). Forked from the run's
    zygote when the environment fits (tests/forked_app.py), else started as
    `app.testing.start_server` starts it."""
    where = factory.mktemp("server")
    root = where / "live-data"
    env = {**os.environ, "APP_HOST": "127.0.0.1", "APP_DATA_ROOT": str(root), **settings}
    config = appconfig.load("testing", environ=env)
    log = where / "live-server.log"
    process, url = forked_app.start_server(env, root, log)
    try:
        yield LiveServer(url, root, process.pid, config.api_token, log, config)
    finally:
        stop_server(process)


@contextlib.contextmanager
def server_and_client(factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """`one_server` and an HTTP client of it, with its token."""
    with (
        one_server(factory) as server,
        httpx.Client(base_url=server.url, headers=server.headers) as client,
    ):
        yield server, client


@contextlib.contextmanager
def one_client(factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """An HTTP client of `one_server`, with its token."""
    with server_and_client(factory) as (_, client):
        yield client


def blob_of(root: Path, session_id: str, name: str) -> Path:
    """Where a local root keeps the bytes of file `name` of a session (its record names it)."""
    directory = root / "sessions" / session_id
    record = json.loads((directory / "records" / name).read_text())
    return directory / "blobs" / record["blob"]
