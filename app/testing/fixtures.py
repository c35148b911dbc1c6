"""The plugin's fixtures. Their names carry the ``app_`` prefix so that they do not collide
with pytest-django's and pytest-flask's ``client`` and ``live_server`` in a shared environment.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from app import config as appconfig
from app.testing.guard import INACTIVE

if TYPE_CHECKING:
    from app.store import Store
    from app.testing.live_server import LiveServer


@pytest.fixture
def app_config(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> appconfig.Config:
    """The testing configuration with a fresh data root of its own under ``tmp_path``.

    The root is published as ``APP_DATA_ROOT`` for the test's duration, so subprocesses the
    test starts use it too.
    """
    inactive = request.config.stash.get(INACTIVE, None)
    if inactive is not None:
        pytest.fail(
            f"app: the app_config fixture needs the app's pytest plugin, which is inactive in "
            f"this run: {inactive}",
            pytrace=False,
        )
    root = tmp_path / "app-data"
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    return appconfig.load("testing")


@pytest.fixture
def app_store(app_config: appconfig.Config) -> Iterator[Store]:
    """An open, writable store on the test's own data root (lock held for the test)."""
    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, kind="tests", wanted="run a test on it") as root:
        yield Store(root)


@pytest.fixture
def app_client(app_store: Store, app_config: appconfig.Config) -> Iterator[Any]:
    """An httpx client (Starlette's TestClient) on the in-process app, token included."""
    from starlette.testclient import TestClient

    from app.server import create_app

    headers = {"Authorization": f"Bearer {app_config.api_token}"} if app_config.api_token else {}
    with TestClient(create_app(app_store, app_config), headers=headers) as test_client:
        yield test_client


@pytest.fixture
def app_live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real ``app serve`` on 127.0.0.1 and a data root of its own; stopped after the test."""
    from app.testing.live_server import LiveServer, start_server

    root = tmp_path / "live-data"
    env = {**os.environ, "APP_DATA_ROOT": str(root), "APP_HOST": "127.0.0.1"}
    config = appconfig.load("testing", environ=env)
    log = tmp_path / "live-server.log"
    process, url = start_server(env, root, log)
    try:
        yield LiveServer(url, root, process.pid, config.api_token, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
