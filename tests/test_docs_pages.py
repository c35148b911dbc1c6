"""Facts the documentation pages repeat from elsewhere, checked against their source."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DOCS = PROJECT / "docs"


def _readme_commands() -> list[str]:
    """The commands of the README's first shell block (comment lines left out)."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```(?:sh|bash|console)\n(.*?)```", readme, re.DOTALL)
    assert block, "README.md has no shell block"
    return [
        line.strip()
        for line in block.group(1).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_home_page_shows_the_readme_commands_verbatim() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    commands = _readme_commands()
    assert len(commands) == 2, commands
    for command in commands:
        assert f"$ {command}\n" in index, f"docs/index.md does not show the README's `{command}`"


def test_the_readme_links_to_the_documentation() -> None:
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    assert "mkdocs serve" in readme
    assert "docs/index.md" in readme
