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


#: Names of a data root's directories and paths through mounts, for `app.dataroot`'s patterns.
_ID = "0123456789abcdef" * 2
NAME_SAMPLES = (
    "",
    _ID,
    f".new-{_ID}",
    f"{_ID}x",
    _ID[:-1],
    f"20261206T225100123456Z-{_ID}",
    f".emptying-20261206T225100123456Z-{_ID}",
    f"20261206T225100123456Z-{_ID}-file-1f",
    "20261206T2251Z-x",
)
PATH_SAMPLES = (
    b"",
    b"/",
    b"/srv/data",
    b"sessions/",
    f"/srv/data/sessions/{_ID}".encode(),
    f"/srv/data/sessions/{_ID}/records".encode(),
    f"/srv/data/sessions/.new-{_ID}/blobs/x".encode(),
    f"sessions/{_ID}/other".encode(),
    f"/srv/data/.trash/20261206T225100123456Z-{_ID}/session".encode(),
    f"/srv/data/.trash/.emptying-20261206T225100123456Z-{_ID}".encode(),
    b"/srv/data/.trash/x",
    f"/srv/mysessions/{_ID}/records".encode(),
    f"/a/sessions/{_ID}/sessions/{_ID}".encode(),
    # Red team 67 on regress (rt-regress67c): the filters' words in another case, after a
    # NUL, before a final newline (which `$` matches before), as one word twice.
    f"/srv/Sessions/{_ID}/records".encode(),
    f"/srv/.TRASH/20261206T225100123456Z-{_ID}".encode(),
    f"/srv/x\x00sessions/{_ID}/blobs".encode(),
    f"/srv/\x00/sessions/{_ID}/blobs".encode(),
    f"/srv/sessions/{_ID}/records\n".encode(),
    f"/srv/sessions/{_ID}\n".encode(),
    f"sessions/sessions/{_ID}/.trash/".encode(),
)


def test_the_data_root_s_patterns_answer_as_compiled_ones() -> None:
    """`app.dataroot`'s four patterns, compiled at import before perf-plugin67 (3.3 M
    instructions of every pytest start, which reaches them only for a root laid out without
    its marks or a directory seen through a mount), answer as their compiled patterns do."""
    from app import dataroot

    for pattern in (dataroot._SESSION_ENTRY, dataroot._TRASH_ENTRY):
        for name in NAME_SAMPLES:
            for way in ("fullmatch", "search"):
                lazy = getattr(pattern, way)(name)
                assert _span(lazy) == _span(getattr(pattern.compiled, way)(name)), (way, name)
    for pattern in (dataroot._A_SESSION_S, dataroot._A_SESSION_DIR):
        for path in PATH_SAMPLES:
            assert _span(pattern.search(path)) == _span(pattern.compiled.search(path)), path
            lazy_all = [_span(found) for found in pattern.finditer(path)]
            assert lazy_all == [_span(found) for found in pattern.compiled.finditer(path)], path
    # Both sides of the filters are among the samples: some match, some are answered None.
    assert dataroot._A_SESSION_S.search(PATH_SAMPLES[5]) is not None
    assert dataroot._A_SESSION_DIR.search(PATH_SAMPLES[2]) is None


def test_the_settings_files_module_compiles_no_pattern_at_import() -> None:
    """`app.config_files` compiled `SHOWS_AS_NOTHING` as it was imported, 2.5 M instructions
    of every pytest start and `app` command, for names that are not ASCII alone
    (perf-start72). It is compiled at the first such name, and still drops what shows as
    nothing (red team 71 on regress, round r)."""
    import re

    from app import config_files

    compiled = [name for name, value in vars(config_files).items() if isinstance(value, re.Pattern)]
    assert compiled == []
    assert config_files._as_seen("settings.local.toml\u034f") == "settings.local.toml"
    assert config_files._as_seen("settings\u00a0local.toml\u200b") == "settings local.toml"
