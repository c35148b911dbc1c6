"""The walk's last name of a command line's word (`app.sandbox._word_name`) is
``Path(word).name`` for every word: it reads the text after the last slash where that is
the name, and asks `Path` otherwise (perf-startup63, bench/README.md)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from app import sandbox

WORDS = [
    "",
    ".",
    "..",
    "/",
    "//",
    "///x",
    "python3",
    "/usr/bin/python3.11",
    "./pytest",
    "pytest/",
    "pytest//",
    "pytest/.",
    "pytest/./",
    "a/./.",
    "a/..",
    "../pytest",
    "-m",
    "--basetemp=/tmp/x/",
    "ld-linux-x86-64.so.2",
    "/lib64/ld-linux-x86-64.so.2",
    "py.test-3",
    "x\x00y/z",
    "caf\udcc3/\u00e9",
    " /space ",
]


@pytest.mark.parametrize("word", WORDS)
def test_the_last_name_is_the_paths(word: str) -> None:
    assert sandbox._word_name(word) == Path(word).name


def test_the_last_name_is_the_paths_for_random_words() -> None:
    draw = random.Random(63)
    for _ in range(2000):
        word = "".join(draw.choice("/.ab-") for _ in range(draw.randrange(8)))
        assert sandbox._word_name(word) == Path(word).name, word
