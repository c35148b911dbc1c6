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


def console_commands(markdown: str) -> list[str]:
    """The `$ ` lines of a page's console blocks, with `\\` continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```console\n(.*?)```", markdown, re.DOTALL):
        pending: str | None = None
        for raw in block.splitlines():
            if pending is not None:
                pending += " " + raw.strip()
            elif raw.lstrip().startswith("$ "):
                pending = raw.lstrip()[2:].strip()
            else:
                continue
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
                continue
            commands.append(pending)
            pending = None
    return commands


def test_the_home_page_shows_the_readme_commands_verbatim() -> None:
    shown = console_commands((DOCS / "index.md").read_text(encoding="utf-8"))
    commands = _readme_commands()
    assert len(commands) == 2, commands
    for command in commands:
        assert command in shown, f"docs/index.md does not show the README's `{command}`"


def test_the_readme_links_to_the_documentation() -> None:
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    assert "mkdocs serve" in readme
    assert "docs/index.md" in readme


def _error_messages() -> list[str]:
    """One real message of every error (the catalogue's examples) and the captured outputs."""
    import importlib.util
    import sys

    path = DOCS / "examples" / "error_examples.py"
    spec = importlib.util.spec_from_file_location("_docs_example_error_examples", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    from app.errors import DataRootOverlapError

    messages = [str(error) for error in module.EXAMPLES]
    shared = Path("/srv/app/data")  # the catalogue shows the nested case; this is the other
    messages.append(str(DataRootOverlapError("a", shared, "here", "b", shared, "there")))
    messages += [p.read_text() for p in (DOCS / "generated").glob("refusal-*.txt")]
    return messages


def test_the_refusal_table_quotes_messages_the_code_produces() -> None:
    page = (DOCS / "how-to" / "resolve-refusals.md").read_text(encoding="utf-8")
    table = page[page.index("## Other refusals you may meet") :]
    patterns = re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE)
    assert len(patterns) >= 10, patterns
    messages = _error_messages()
    for pattern in patterns:
        parts = [re.escape(part.strip()) for part in pattern.split("...")]
        regex = re.compile(".+?".join(part for part in parts if part))
        assert any(regex.search(message) for message in messages), (
            f"docs/how-to/resolve-refusals.md quotes `{pattern}`, which no message of the "
            "code matches (see docs/examples/error_examples.py)"
        )


_MEASURED = re.compile(r"\d[\d,]*\.\d+|\d{1,3}(?:,\d{3})+|\d+(?= MiB/s| req/s| us\b| ms\b)")


def _measured_numbers(text: str) -> set[str]:
    return set(_MEASURED.findall(text))


def test_the_performance_numbers_are_the_ones_bench_readme_records() -> None:
    """Numbers are copied from bench/README.md (the benchmarks' own record), never invented."""
    bench = (PROJECT / "bench" / "README.md").read_text(encoding="utf-8")
    performance = (DOCS / "reference" / "performance.md").read_text(encoding="utf-8")
    isolation = (DOCS / "explanation" / "isolation.md").read_text(encoding="utf-8")
    costs = isolation[isolation.index("## What it costs") : isolation.index("## The guarantees")]
    for page, text in (("reference/performance.md", performance), ("isolation.md", costs)):
        numbers = _measured_numbers(text)
        assert len(numbers) > 5, numbers
        missing = sorted(n for n in numbers if n not in bench)
        assert not missing, f"docs/{page} cites {missing}, which bench/README.md does not record"


def test_pages_that_include_an_example_file_report_no_skip() -> None:
    """`pytest -rs` showed three skips pointing into site-packages, one per page that
    includes docs/examples/*.py: Sybil could not run a snippet include, so it was skipped."""
    import subprocess
    import sys

    pages = ["how-to/restore-session.md", "how-to/switch-profiles.md", "reference/pytest-plugin.md"]
    for page in pages:
        assert '--8<-- "docs/examples/' in (DOCS / page).read_text(encoding="utf-8"), page
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider"]
        + [str(DOCS / page) for page in pages],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" not in result.stdout.lower(), result.stdout
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
