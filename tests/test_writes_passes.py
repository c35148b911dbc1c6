"""What perf-startup65 made cheaper in the checks of what pytest writes answers as before.

Each check of a run walks some thirty paths up for a data root, looks at the mount table
three times at each and spells each option's value; the cuts (a walk that stops where a
walk from that directory was made, the mount table held for a path's three looks, the
nearest mount kept for one reading of the table, the options' names kept while the parser
has no new option, ``..`` found as text) are held here against the long way.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _pytest.config.argparsing import Parser

from app import dataroot
from app.dataroot import AUDIT_FILE, SESSIONS_DIR, STAMP_FILE, TMP_DIR, TRASH_DIR
from app.mountinfo import nearest
from app.testing import writes


def _tree(top: Path) -> list[Path]:
    """A stamped root and a root that lost its stamp and lock file (laid out, with its audit
    log), each with directories below, beside plain ones; every path of it, and some below."""
    stamped = top / "a" / "stamped"
    laid_out = top / "b" / "laid-out"
    for directory in (stamped / "sessions" / "x", top / "a" / "plain" / "deep", top / "c"):
        directory.mkdir(parents=True)
    (stamped / STAMP_FILE).write_text("{}")
    for name in (SESSIONS_DIR, TRASH_DIR, TMP_DIR):
        (laid_out / name / "inner").mkdir(parents=True)
    (laid_out / AUDIT_FILE).write_text("")
    found = sorted(top.rglob("*"))
    return [*found, *(path / "not-there" for path in found), top]


def test_a_walk_up_that_stops_at_a_directory_walked_from_finds_what_a_whole_walk_finds(
    tmp_path: Path,
) -> None:
    paths = _tree(tmp_path)
    found = 0
    for look in (writes._data_root_at_or_above, writes._own_directory_at_or_above):
        for order in (paths, paths[::-1], random.Random(65).sample(paths, len(paths))):
            seen: writes._Seen = {}  # one pass: shared by every path, as a check's is
            for path in order:
                answer = look(path, seen)
                assert answer == look(path, {}), (look.__name__, path)
                found += answer is not None
    assert found > 0  # the tree holds what each walk looks for


def test_dot_dot_read_as_text_is_a_dot_dot_of_pathlib_s_parts() -> None:
    words = ["..", ".", "", "a", "..a", "a..", "...", "/", "//", "~"]
    rng = random.Random(65)
    texts = ["/a/../b", "a/..", "/..", "//..//", "./../.", "/x/.../y", "/a/b/"]
    texts += ["/".join(rng.choice(words) for _ in range(rng.randrange(1, 7))) for _ in range(2000)]
    for text in texts:
        assert writes._goes_up(text) == (".." in Path(text).parts), text


def test_the_mount_table_held_for_a_block_is_the_reading_made_as_it_started() -> None:
    reading = dataroot._MOUNTS.looked_up()
    with dataroot.one_reading():
        held = dataroot._MOUNTS.looked_up()
        assert held == reading
        dataroot._MOUNTS._key = None  # as if the namespace changed: read again outside
        assert dataroot._MOUNTS.looked_up() is held
        other: list[Any] = []
        thread = threading.Thread(target=lambda: other.append(dataroot._HELD.get()))
        thread.start()
        thread.join()
        assert other == [None]  # another thread's looks are its own
    assert dataroot._HELD.get() is None
    dataroot._MOUNTS.looked_up()
    assert dataroot._MOUNTS._key is not None  # read again once the block ended


def test_the_nearest_mount_kept_for_a_reading_is_the_one_a_lookup_finds() -> None:
    _, _, (points, tops) = dataroot._MOUNTS.looked_up()
    wanted = [p.rstrip(b"/") + b"/x/y" for p in points] + [*points, b"/", b"/tmp/a/b", b"rel"]
    for path in wanted * 2:  # the second time, kept
        assert dataroot._nearest(path, points, tops) == nearest(path, points, tops), path
    other = dict(tops)  # a new reading of the table: a new mapping, the answers afresh
    other.pop(b"/", None)
    for path in wanted:
        assert dataroot._nearest(path, points, other) == nearest(path, points, other), path
    assert dataroot._NEAREST[0] is other


def test_the_options_names_are_read_again_once_an_option_is_added() -> None:
    parser = Parser(_ispytest=True)
    parser.addoption("--app-test-one", dest="one")
    config: Any = SimpleNamespace(_parser=parser)
    assert writes._option_names(config) == {"one": "--app-test-one"}
    parser.getgroup("later").addoption("--app-test-two", "-Z", dest="two")
    assert writes._option_names(config) == {"one": "--app-test-one", "two": "--app-test-two"}
    again: Any = SimpleNamespace(_parser=Parser(_ispytest=True))
    assert writes._option_names(again) == {}
