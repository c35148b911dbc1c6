"""The app's pytest plugin (hooks in `app.testing.plugin`, the ``pytest11`` entry point) and
the helpers tests use to run a real server next to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.testing.live_server import (
        LiveServer,
        published_port,
        published_url,
        start_replica,
        start_server,
        stop_server,
        wait_until_serving,
    )

__all__ = [
    "LiveServer",
    "published_port",
    "published_url",
    "start_replica",
    "start_server",
    "stop_server",
    "wait_until_serving",
]


def __getattr__(name: str) -> Any:
    # Imported on first use, not with the plugin: every pytest start loads this package, and
    # few runs start a server (about 1 ms of the plugin's start-up).
    if name in __all__:
        from app.testing import live_server

        return getattr(live_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
