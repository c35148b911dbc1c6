"""A sandboxed root swapped for a link to a root outside the sandbox while it is opened
(red team 18).

The path is checked before the lock is taken; a test that replaces a directory on it in
between (an audit hook times the swap exactly) had the app lock, stamp-check and open the
root the link leads to. Outside here is a root stamped for the testing profile, as
production's is for production when a test opts into that profile.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Config

_SWAP_WHILE_OPENING = """
import os, sys
from pathlib import Path

from app.config import load
from app.storage import open_storage

config = load()
root, outside = config.data_root, Path(sys.argv[1])
root.mkdir(parents=True, exist_ok=True)
swapped = []


def swap_at_the_lock(event, args):
    if event == "open" and str(args[0]).endswith(".server.lock") and not swapped:
        swapped.append(True)
        root.rename(root.with_name("moved-away"))
        root.symlink_to(outside)


sys.addaudithook(swap_at_the_lock)
with open_storage(config, writer=True, kind="tests", wanted="run a test on it") as store:
    store.purge()
    print("opened", store.root.path.resolve())
"""


@pytest.fixture
def outside() -> Iterator[Path]:
    """A stamped data root outside the sandbox, with a session in it."""
    path = Path(tempfile.mkdtemp(prefix="s18-outside-")) / "data"
    sid = "0" * 31 + "1"
    (path / "sessions" / sid).mkdir(parents=True)
    (path / "sessions" / sid / "session.json").write_text(json.dumps({"id": sid, "title": "x"}))
    (path / ".app-profile.json").write_text(json.dumps({"profile": "testing"}))
    yield path
    shutil.rmtree(path.parent)


def test_a_root_swapped_for_a_link_outside_while_it_is_opened_is_refused(
    app_config: Config, outside: Path
) -> None:
    assert not outside.is_relative_to(app_config.sandbox or Path("/nonexistent"))
    before = data(outside)
    done = subprocess.run(
        [sys.executable, "-c", _SWAP_WHILE_OPENING, str(outside)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "opened" not in done.stdout, "the app opened the root outside the sandbox"
    assert done.returncode == 1, done.stderr
    assert "which lies outside the test sandbox" in done.stderr, done.stderr
    assert str(outside) in done.stderr
    # What the open did before the second check (the lock file, the app's empty
    # directories) is not data; no session, stamp or trash entry changed.
    assert data(outside) == before


def data(root: Path) -> dict[str, bytes]:
    skip = {".server.lock", ".trash", ".tmp"}
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"dir"
        for p in root.rglob("*")
        if not skip & set(p.relative_to(root).parts)
    } | {".trash": str(sorted(root.glob(".trash/*"))).encode()}
