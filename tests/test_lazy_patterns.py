"""The app's regular expressions, compiled when first needed, answer as compiled ones do.

Compiling the patterns of `app.sandbox`, `app.config` and `app.cli` at import cost every `app`
command and every pytest start about 12 M instructions (bench/README.md, "Patterns compiled
when first needed"). They are `app.sandbox.LazyPattern`s now, whose ``starts`` and ``needs``
answer None without compiling for a string the pattern cannot match: these tests hold every
such answer against the compiled pattern's, over strings on both sides of each filter.
"""

from __future__ import annotations

from app import cli, config, sandbox

SAMPLES = (
    "",
    "x",
    "-",
    "--",
    "-m",
    "-c",
    "-Rm",
    "-bc",
    "-mpytest",
    "-x",
    "python",
    "python3.12",
    "python3-dbg",
    "Python3",
    "/usr/bin/python3",
    "pypy3",
    "graalpy",
    "ipython",
    "pytest",
    "pytest-3",
    "py.test",
    "py.test-3",
    "pytest-xdist",
    "nose2",
    "nose2-3",
    "green",
    "green3",
    "zope-testrunner",
    "import pytest; pytest.main()",
    "from pytest import main; main()",
    "from _pytest.config import _console_main",
    "import pytest as pt; pt.main()",
    "import runpy; runpy.run_module('pytest')",
    "/tmp/pytest-of-root/pytest-3",
    "import unittest; unittest.main()",
    "from unittest import main",
    "$HOME/data",
    "${ROOT}",
    "$(pwd)/data",
    "/srv/%h/data",
    "%S",
    "100%",
    "s3://bucket/${PREFIX}",
    "file:///srv/app/data",
    "file://localhost/srv",
    "C:/x",
    "data%2Fproduction",
    "data%zz",
    "data:x",
    "_pytest_12_abcd",
    "_pytest_3_00ff_gw1",
    "_pytest_x",
    "/proc/1/fd/3",
    "/proc/self/cwd",
    "/proc/12/task/13/root",
    "/proc/1/map_files/7f-80",
    "/procfs/1/cwd",
    "30m",
    "12h",
    "2w",
)


def _patterns() -> list[tuple[str, sandbox.LazyPattern]]:
    found = [
        (f"{module.__name__}.{name}", value)
        for module in (sandbox, config)
        for name, value in vars(module).items()
        if isinstance(value, sandbox.LazyPattern)
    ]
    return [*found, ("app.cli.Duration._FORM", cli.Duration._FORM)]


def _span(found: object) -> object:
    return None if found is None else (found.span(), found.groups())  # type: ignore[attr-defined]


def test_every_lazy_pattern_answers_as_its_compiled_pattern() -> None:
    patterns = _patterns()
    assert len(patterns) >= 10
    for name, pattern in patterns:
        for text in SAMPLES:
            for way in ("fullmatch", "search"):
                lazy = getattr(pattern, way)(text)
                compiled = getattr(pattern.compiled, way)(text)
                assert _span(lazy) == _span(compiled), (name, way, text)
