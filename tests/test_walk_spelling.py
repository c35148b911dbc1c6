"""The walk of a process's ancestors reads the same texts as before it stopped making a
`Path` of each (bench/README.md, "perf-child66"): names and links as pathlib spelled them.

A walk lists the registry and every Python ancestor's descriptors, and looks at each
ancestor's /tmp; a `Path` made for each was most of a walk's CPU, in every `app` command and
every pytest a test starts. These tests hold the plain texts it now reads against what
pathlib gave, over the spellings pathlib changes and the ones the kernel writes.
"""

from __future__ import annotations

import os
from pathlib import Path

from app import sandbox

#: Links as ``/proc/<pid>/fd`` shows them, and spellings that pathlib changes (a link bound
#: over such a directory may read as anything).
SPELLINGS = (
    "/tmp/app-pytest-runs-0/123-456.json",
    "/tmp/a file (deleted)",
    "/memfd:app-run-entry-123-456.json (deleted)",
    "pipe:[123]",
    "socket:[456]",
    "anon_inode:[eventfd]",
    "/",
    "//tmp",
    "///tmp",
    "/tmp//x",
    "/tmp/./x",
    "/tmp/x/.",
    "/tmp/x/",
    "./x",
    ".",
    "",
    "x/../y",
    "/tmp/..",
    "/tmp/a\nb",
)


def test_a_links_text_is_spelled_as_pathlib_spelled_it() -> None:
    for text in SPELLINGS:
        assert sandbox._link_text(text) == str(Path(text)), text


def test_an_identity_given_as_text_is_the_one_pathlib_found(tmp_path: Path) -> None:
    # pathlib drops a trailing slash, where a plain `stat` of a file so spelled fails
    # (ENOTDIR): a text handed to `identity` is still read as pathlib read it.
    file = tmp_path / "entry.json"
    file.write_text("{}")
    found = os.stat(file)
    expected = (found.st_dev, found.st_ino)
    for spelled in (str(file), f"{file}/", f"{tmp_path}//entry.json", f"{tmp_path}/./entry.json"):
        assert sandbox.identity(spelled) == expected, spelled
    assert sandbox.identity(file) == expected
    assert sandbox.identity(f"{tmp_path}/missing") is None


def test_a_processs_descriptors_name_what_it_keeps_open(tmp_path: Path) -> None:
    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    fd = os.open(kept, os.O_RDONLY)
    reader, writer = os.pipe()
    try:
        listed = dict(sandbox._descriptors(os.getpid()) or [])
        own = f"/proc/{os.getpid()}/fd"
        assert listed[f"{own}/{fd}"] == str(kept)
        assert listed[f"{own}/{reader}"] == os.readlink(f"{own}/{reader}")
        assert listed[f"{own}/{reader}"].startswith("pipe:[")
        for path, text in listed.items():
            # What a Path of the link read (`str(Path(path).readlink())`), where it still
            # names the same descriptor (the listing's own is closed by now).
            if os.path.exists(path):
                assert text == str(Path(path).readlink()), path
    finally:
        for each in (fd, reader, writer):
            os.close(each)


def test_a_registrys_listing_is_its_entries_names(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir(mode=0o700)
    names = {"1-2.json", "3-4-5.json", "odd\nname", os.fsdecode(b"\xff-bytes.json")}
    for name in names:
        (registry / name).write_text("{}")
    seen = sandbox._Seen()
    listed = sandbox._registered(registry, os.getuid(), seen)
    assert listed == names == {entry.name for entry in registry.iterdir()}
    assert seen[registry] is listed
