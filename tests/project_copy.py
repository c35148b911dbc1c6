"""The project's settings, copied, for tests whose inner runs must not see the real roots."""

from __future__ import annotations

from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def copy_project_settings(directory: Path) -> Path:
    """The project's settings files, copied into ``directory``; relative roots land there."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("settings.toml", ".secrets.toml"):
        (directory / name).write_bytes((PROJECT / name).read_bytes())
    return directory
