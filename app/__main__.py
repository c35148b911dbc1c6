"""``python -m app``: the same command line as the ``app`` script."""

from __future__ import annotations

from app.cli import main

if __name__ == "__main__":
    main()
