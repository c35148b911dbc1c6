"""Shared test configuration."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered here (and not only in docs/conftest.py) so that `pytest tests/...` alone
    # knows the marker under --strict-markers. Deselect with `-m "not browser"`.
    config.addinivalue_line(
        "markers", "browser: opens the built documentation in headless Chromium (/usr/bin/chromium)"
    )
