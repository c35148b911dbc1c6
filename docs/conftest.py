"""Run the examples in the documentation pages as tests (Sybil).

- ```python blocks are executed, top to bottom, in one namespace per page; ``>>>`` blocks are
  doctests. pytest fixtures named in FIXTURES are available in that namespace. The pages run
  under the app's pytest plugin like every other test: the profile is ``testing`` and data
  roots live in the sandbox.
- ```console blocks are not run (they start servers and talk to production), but every
  ``$ app ...`` line in them is parsed against the real click commands, so a page cannot show
  a command or an option that does not exist.
- A ```python block that only includes a file (``--8<-- "docs/examples/x.py"``, the snippets
  syntax) is not run here: the check is that the file, and the section it names, exist and
  that tests/test_docs_examples.py runs the file as tests.
- ``<!-- skip: next -->`` before a block skips it; use it only with a reason next to it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

FIXTURES = ["tmp_path", "monkeypatch"]

# Separators of a shell line; each part is checked on its own.
_SHELL_SEPARATORS = {"&&", "||", "|", ";"}


def _app_command_words(line: str) -> list[list[str]]:
    """The argument lists of every `app` invocation in one shell command line."""
    words = shlex.split(line, comments=True)
    commands: list[list[str]] = [[]]
    for word in words:
        if word in _SHELL_SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    found = []
    for words_of_command in commands:
        command = words_of_command
        while command and "=" in command[0] and not command[0].startswith("-"):
            command = command[1:]  # VAR=value prefixes
        if not command:
            continue
        program = command[0].rsplit("/", 1)[-1]
        if program == "app":
            found.append(command[1:])
        elif program.startswith("python") and command[1:3] == ["-m", "app"]:
            found.append(command[3:])
    return found


def _options(command: click.Command, ctx: click.Context) -> dict[str, click.Parameter]:
    known: dict[str, click.Parameter] = {}
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            for name in [*param.opts, *param.secondary_opts]:
                known[name] = param
    return known


def check_app_arguments(args: list[str]) -> None:
    """Fail if `app <args>` names a command or an option the click commands do not have."""
    from app.cli import cli

    command: click.Command = cli
    path = ["app"]
    ctx = click.Context(cli, info_name="app", help_option_names=["-h", "--help"])
    index = 0
    while index < len(args):
        word = args[index]
        index += 1
        if word == "--":
            break
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            param = _options(command, ctx).get(name)
            if param is None:
                raise AssertionError(
                    f"`{' '.join(path)}` has no option {name!r} (shown in the docs as "
                    f"`app {' '.join(args)}`)"
                )
            takes_value = not (getattr(param, "is_flag", False) or getattr(param, "count", False))
            if takes_value and "=" not in word:
                index += 1
            continue
        if isinstance(command, click.Group):
            sub = command.get_command(ctx, word)
            if sub is None:
                raise AssertionError(
                    f"`{' '.join(path)}` has no command {word!r} (shown in the docs as "
                    f"`app {' '.join(args)}`); it has: {', '.join(command.list_commands(ctx))}"
                )
            command = sub
            path.append(word)
            ctx = click.Context(command, info_name=word, parent=ctx)


def _shell_lines(source: str) -> list[str]:
    """The commands of a console block: lines after `$ `, with `\\` continuations joined."""
    lines: list[str] = []
    pending: str | None = None
    for raw in source.splitlines():
        if pending is not None:
            pending += " " + raw.strip()
        elif raw.startswith("$ "):
            pending = raw[2:].strip()
        else:
            continue  # output
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        lines.append(pending)
        pending = None
    return lines


def evaluate_console(example: Example) -> None:
    for line in _shell_lines(str(example.parsed)):
        for args in _app_command_words(line):
            check_app_arguments(args)


PROJECT = Path(__file__).resolve().parent.parent
_INCLUDE = re.compile(r'--8<-- "([^":]+)(?::(\w+))?"')


def _includes(source: str) -> list[re.Match[str]] | None:
    """The snippet includes of a block made of nothing else, else None."""
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    found = [_INCLUDE.fullmatch(line) for line in lines]
    if not lines or not all(found):
        return None
    return [match for match in found if match]


def evaluate_include(example: Example) -> None:
    """An included example file exists, has the section named, and runs as tests."""
    runner = (PROJECT / "tests" / "test_docs_examples.py").read_text(encoding="utf-8")
    for match in _includes(str(example.parsed)) or []:
        path, section = PROJECT / match.group(1), match.group(2)
        assert path.is_file(), f"the page includes {match.group(1)}, which does not exist"
        if section:
            text = path.read_text(encoding="utf-8")
            assert f"--8<-- [start:{section}]" in text, f"{path} has no section {section!r}"
        assert f'_import("{path.stem}")' in runner, (
            f"the page includes {match.group(1)} as a tested example, but "
            "tests/test_docs_examples.py does not run it"
        )


class PythonOrIncludeParser(PythonCodeBlockParser):
    """Python blocks run; blocks that only include an example file are checked instead."""

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in super().__call__(document):
            if _includes(str(region.parsed)) is not None:
                region.evaluator = evaluate_include
            yield region


def _setup(namespace: dict[str, Any]) -> None:
    namespace["__name__"] = "docs_example"


pytest_collect_file = Sybil(
    parsers=[
        PythonOrIncludeParser(),
        CodeBlockParser("console", evaluate_console),
        SkipParser(),
    ],
    patterns=["*.md"],
    fixtures=FIXTURES,
    setup=_setup,
).pytest()
