"""An example test that opts into another profile (shown in docs/how-to/switch-profiles.md)."""

from __future__ import annotations

import pytest

from app.config import load


@pytest.mark.app_profile("development")
def test_development_listens_on_8000() -> None:
    config = load("development")
    assert config.port == 8000
    # Its data root is mapped into the test sandbox, never data/development.
    assert config.sandbox is not None
    assert config.data_root.is_relative_to(config.sandbox)
