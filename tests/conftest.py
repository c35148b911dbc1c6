"""Shared test configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # Registered here (and not only in docs/conftest.py) so that `pytest tests/...` alone
    # knows the marker under --strict-markers. Deselect with `-m "not browser"`.
    config.addinivalue_line(
        "markers", "browser: opens the built documentation in headless Chromium (/usr/bin/chromium)"
    )


@pytest.fixture(autouse=True)
def _inner_runs_use_this_project(request: pytest.FixtureRequest) -> None:
    # A pytester run's rootdir is a temporary directory: another project, as far as the
    # plugin can tell, so it would stay inactive. Say whose settings the inner run tests.
    if "pytester" in request.fixturenames and "APP_SETTINGS_DIR" not in os.environ:
        request.getfixturevalue("monkeypatch").setenv("APP_SETTINGS_DIR", str(PROJECT))
