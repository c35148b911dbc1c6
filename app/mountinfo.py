"""Linux's mount table (``/proc/self/mountinfo``): where a mount shows a path from.

No import of the app's: `app.sandbox` (the registry) and `app.dataroot` (its cached table)
both use it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "Mount",
    "by_point",
    "nearest",
    "read",
    "shown_and_hidden_from",
    "shown_and_upper",
    "shown_from",
    "unescape",
    "upper_in_fact",
    "walk_nearest",
]

#: A mount: its device (``major:minor``), mount point, directory shown, upper directory.
Mount = tuple[bytes, bytes, bytes, bytes]


def read() -> list[Mount]:
    """This process's mount table, read now; empty where there is none (no ``/proc``)."""
    try:
        with open("/proc/self/mountinfo", "rb") as table:  # noqa: PTH123 - bytes, as a seq file
            lines = table.read().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            mounts.append((fields[2], unescape(fields[4]), *shown_and_upper(line)))
    return mounts


def shown_and_upper(line: bytes) -> tuple[bytes, bytes]:
    """A mount table line's directory of its filesystem that the mount shows (the fourth
    field: not ``/`` for a bind mount of a directory), and an overlay's upper directory
    (``b""`` for any other mount)."""
    fields = line.split(b" ")
    if len(fields) < 5:
        return b"", b""
    upper = b""
    # The type follows the " - " that ends the optional fields, then the source and the
    # superblock's options.
    if b"-" in fields[6:-1] and fields[fields.index(b"-", 6) + 1] == b"overlay":
        options = fields[-1].split(b",")
        upper = next((o[9:] for o in options if o.startswith(b"upperdir=")), b"")
    return unescape(fields[3]), unescape(upper)


def unescape(field: bytes) -> bytes:
    """A path of the table as it is: space, tab, newline and \\ are octal-escaped there."""
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)


def shown_from(path: Path, mounts: Sequence[Mount], *, hidden: bool = False) -> Path | None:
    """Where ``path`` (absolute, resolved) lies in fact, where a bind mount of a directory
    brings it here: the same file seen through a mount of its filesystem's root (or, on an
    overlay, where a write to it lands: in the upper directory). None where no such mount is
    on its way, or the directory shown is mounted nowhere else.

    A bind mount shows a directory under another path, with no link to resolve and nothing
    above it to say where it comes from (production's ``sessions/`` bound into a scratch
    directory holds no stamp, and its parent is the scratch directory): checks by path and
    by what lies above missed it (red team 44). Linux's mountinfo says which directory of
    its filesystem each mount shows.

    Args:
        path: the path, absolute and resolved.
        mounts: the mount table (`read`), in its order: device, mount point, directory
            shown and upper directory of each mount.
        hidden: also where that path is hidden here (another mount over it, as a bind
            mount over ``/tmp`` hides what it shows): the path as a namespace without
            that mount names it.
    """
    visible, hidden_too = shown_and_hidden_from(path, mounts)
    return hidden_too if hidden else visible


def by_point(points: Sequence[bytes]) -> dict[bytes, int]:
    """Each mount point (without its trailing ``/``: ``/`` is ``b""``) and the index of the
    last mount there in `points` (mount order: a later mount at the same point hides an
    earlier), for `nearest`."""
    return {point.rstrip(b"/"): index for index, point in enumerate(points)}


def nearest(wanted: bytes, points: Sequence[bytes], tops: Mapping[bytes, int]) -> int | None:
    """The index in `points` of the mount that ``wanted`` lies on (the deepest mount point on
    its way, the last mounted there), None where it lies on none, or -1 where the table
    must be walked to tell (`walk_nearest`): from a lookup in `tops` (`by_point`) per
    directory on the way, where a walk of the whole table compared every mount point, at
    each of the hundred paths every check of what pytest writes looks at."""
    end = len(wanted)
    while True:
        top = wanted[:end]
        if (index := tops.get(top)) is not None:
            # Any directory above `wanted` is on its way; `wanted` itself only where it is
            # the mount point as the table writes it.
            return index if end < len(wanted) or wanted == points[index] else -1
        end = wanted.rfind(b"/", 0, end)
        if end < 0:
            return None


def walk_nearest(wanted: bytes, points: Sequence[bytes]) -> int | None:
    """`nearest`, by a walk of the whole table."""
    found = None
    for index, point in enumerate(points):  # in mount order: a later mount at the same
        top = point.rstrip(b"/")  # point hides an earlier
        on_it = wanted == point or wanted.startswith(top + b"/")
        if on_it and (found is None or len(top) >= len(points[found].rstrip(b"/"))):
            found = index
    return found


def shown_and_hidden_from(
    path: Path,
    mounts: Sequence[Mount],
    lookup: tuple[Sequence[bytes], Mapping[bytes, int]] | None = None,
) -> tuple[Path | None, Path | None]:
    """`shown_from` without and with ``hidden``, from one look at the table: a caller that
    wants where ``path`` is hidden only where it is shown from nowhere (`bound_from`, at
    each of the hundred paths every check of what pytest writes looks at) read the table
    twice for it. `lookup`: `mounts`' points and their `by_point`, where the caller keeps
    them with the table."""
    wanted = os.fsencode(path)
    points = lookup[0] if lookup is not None else [mount[1] for mount in mounts]
    at = nearest(wanted, points, lookup[1]) if lookup is not None else -1
    if at is not None and at < 0:
        at = walk_nearest(wanted, points)
    found = mounts[at] if at is not None else None
    if found is None:
        return None, None
    device, point, shown, upper = found
    if upper and (real := upper_in_fact(point, upper)) is not None:
        # An overlay writes into its upper directory, wherever that lies: what pytest
        # writes through `<tmp_path>/o`, mounted with `upperdir=<root>/sessions`, lands there.
        lands = Path(os.fsdecode(real.rstrip(b"/") + wanted[len(point.rstrip(b"/")) :]))
        return lands, lands
    # A mount of a filesystem's root (``/`` shown) is where it lies in fact, unless that
    # filesystem is mounted elsewhere too: a whole volume mounted at a data root after the
    # run took the root's identity (a disk attached, a restore, a tmpfs made anew), then
    # bound into the sandbox, was opened and purged as the sandbox's (red team 48).
    inside = (shown.rstrip(b"/") + wanted[len(point.rstrip(b"/")) :]) or b"/"
    first = None
    for other_device, other_point, other_shown, _ in mounts:
        top = other_shown.rstrip(b"/")
        if other_device == device and (inside == other_shown or inside.startswith(top + b"/")):
            there = (other_point.rstrip(b"/") + inside[len(top) :]).rstrip(b"/") or b"/"
            # That path may be hidden in turn (another mount over it, in this namespace):
            # only one that leads to the same file counts, unless where it is hidden is
            # asked for (the first such path).
            if there == wanted:
                continue  # the mount itself (a directory bound over the path it comes from)
            if first is None:
                first = Path(os.fsdecode(there))
            if _same_file_or_place(wanted, there):
                return Path(os.fsdecode(there)), first
    return None, first


def upper_in_fact(point: bytes, upper: bytes) -> bytes | None:
    """The directory an overlay mounted at `point` writes into, where the mount table's
    `upper` (its ``upperdir=`` as the mount was given it) leads there now; None where it
    does not, or where that cannot be told (`point` hidden, a container's upper directory
    in another namespace).

    The kernel keeps the option as it was written: a relative path (resolved against the
    working directory of whoever mounted it), or a link (to a live root's directory, or
    swapped for an empty directory since), was taken for a directory of the sandbox, and a
    test that opted into production purged the real root through it (red team 50). The
    overlay's root shows its upper directory's inode number (its layer's own, unmapped), so
    where the path leads now is checked against it.
    """
    if not upper.startswith(b"/"):
        return None
    real = os.path.realpath(upper)
    try:
        shown, there = os.stat(point), os.stat(real)  # noqa: PTH116 - bytes from the table
    except OSError:
        return None
    return real if stat.S_ISDIR(there.st_mode) and shown.st_ino == there.st_ino else None


def _same_file_or_place(path: bytes, other: bytes) -> bool:
    """Whether `path` and `other`, which end alike, name one file: the nearest existing
    one of `path` and its parents, and the same of `other`."""
    while True:
        try:
            here = os.stat(path)  # noqa: PTH116 - bytes from the mount table
        except OSError:
            up, other = os.path.dirname(path), os.path.dirname(other)  # noqa: PTH120
            if up == path:
                return False
            path = up
            continue
        try:
            seen = os.stat(other)  # noqa: PTH116 - as above
        except OSError:
            return False
        return (here.st_dev, here.st_ino) == (seen.st_dev, seen.st_ino)
