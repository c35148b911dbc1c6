"""`app.mountinfo.nearest` (the mount a path lies on, from a lookup per directory on its
way) against a walk of the whole table, as `app.dataroot.bound_from` and `served_from` did
before it (bench/README.md, "perf-startup60"): the same mount for every path, on tables with
mounts stacked at one point, nested points, the root and a line the parser could not read."""

from __future__ import annotations

import random
from pathlib import Path

from app import mountinfo
from app.dataroot import _MOUNTS

_NAMES = (b"a", b"b", b"ab", b"a b", b"proc", b"tmp")


def _path(rng: random.Random, depth: int) -> bytes:
    return b"/" + b"/".join(rng.choice(_NAMES) for _ in range(depth)) if depth else b"/"


def test_the_lookup_finds_the_mount_a_walk_of_the_table_finds() -> None:
    rng = random.Random(60)
    for _ in range(300):
        points = [b"/"] + [_path(rng, rng.randint(0, 3)) for _ in range(rng.randint(0, 8))]
        if rng.random() < 0.2:
            points.insert(rng.randrange(len(points) + 1), b"")  # an unreadable line
        rng.shuffle(points)
        tops = mountinfo.by_point(points)
        for _ in range(20):
            wanted = _path(rng, rng.randint(0, 4)) + rng.choice((b"", b"/"))
            found = mountinfo.nearest(wanted, points, tops)
            if found is not None and found < 0:
                found = mountinfo.walk_nearest(wanted, points)
            assert found == mountinfo.walk_nearest(wanted, points), (wanted, points)


def test_this_machine_s_table_gives_the_same_answers_both_ways() -> None:
    mounts, _, lookup = _MOUNTS.looked_up()
    for mount in mounts:
        for path in (Path(mount[1].decode()), Path(mount[1].decode(), "below", "it")):
            assert mountinfo.shown_and_hidden_from(path, mounts, lookup) == (
                mountinfo.shown_and_hidden_from(path, mounts)
            )
