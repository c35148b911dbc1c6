"""Review sessions over HTTP, with configuration profiles that keep tests away from production data.

Nothing here reads settings: import costs nothing and leaves no singleton behind.
Call :func:`app.config.load` to get a frozen :class:`app.config.Config`.
"""

from __future__ import annotations

__version__ = "0.1.0"
