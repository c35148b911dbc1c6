"""Linux's mount table (``/proc/<pid>/mountinfo``): THE reader of it in the app.

One parser of a line (`parse`: an `Entry`), one reader of a process's table (`table`), and
one answer to "which mount shows this path" (`showing`, and `nearest` where a caller keeps a
lookup of the points): the deepest mount point on the path's way, and of two mounts stacked
at one point the later line, the one on top, which is the one the kernel shows.
`app.lock`, `app.sandbox` and `app.dataroot` each read the table by hand, and two of those
readers told stacked mounts apart by opposite rules (session 61).

No import of the app's but `app.records` (which imports none): `app.sandbox` (the registry)
and `app.dataroot` (its cached table) both use it. `Entry` is a `Record`, a
`typing.NamedTuple` without its ten annotations compiled at every pytest run's start
(bench/README.md, "Session 69").
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from app.records import Record

__all__ = [
    "Entry",
    "Mount",
    "by_point",
    "emergency_read_only",
    "nearest",
    "option_values",
    "parse",
    "read",
    "read_looked_up",
    "showing",
    "shown_and_hidden_from",
    "shown_and_upper",
    "shown_from",
    "table",
    "unescape",
    "upper_in_fact",
    "upper_of",
    "walk_nearest",
]

#: A mount: its device (``major:minor``), mount point, directory shown, upper directory.
Mount = tuple[bytes, bytes, bytes, bytes]


class Entry(Record):
    """One line of the table (proc(5)), its paths' octal escapes undone."""

    mount_id: int
    parent_id: int
    #: ``major:minor`` as written.
    device: bytes
    #: The directory of its filesystem the mount shows (not ``/`` for a bind mount).
    root: bytes
    #: Where it is mounted, as the process that reads the table names it.
    point: bytes
    #: The mount's own options (``rw,nosuid``).
    options: bytes
    #: The optional fields (``shared:1``, ``master:2``), none or more.
    optional: tuple[bytes, ...]
    #: ``ext4``, ``overlay``, ``fuse.sshfs``.
    fstype: bytes
    #: The source the filesystem was mounted from (a device, ``none``, a daemon's word).
    source: bytes
    #: The superblock's options, as written: a value's escapes are undone by
    #: `option_values` once the options are split at their commas (a comma of a path is
    #: written as ``\054``).
    super_options: bytes


_new_entry = tuple.__new__  # a NamedTuple's own __new__ is a Python call per line


def parse(line: bytes) -> Entry | None:
    """A line of the table, None for a line of another shape (never an exception)."""
    head, dash, tail = line.partition(b" - ")
    fields = head.split(b" ")
    described = tail.split(b" ")
    if not dash or len(fields) < 6 or len(described) != 3:
        return None
    mount_id, parent_id = fields[0], fields[1]
    if not (mount_id.isdigit() and parent_id.isdigit()):
        return None
    return _new_entry(
        Entry,
        (
            int(mount_id),
            int(parent_id),
            fields[2],
            unescape(fields[3]),
            unescape(fields[4]),
            fields[5],
            tuple(fields[6:]),
            described[0],
            unescape(described[1]),
            described[2],
        ),
    )


def table(pid: int | str = "thread-self") -> list[Entry]:
    """The mount table of process `pid` (``"thread-self"``: the calling thread), read now, as
    that process names its mounts (from its mount namespace and its root); OSError where it
    cannot be read.

    The calling thread's by default, not ``"self"`` (the process's first thread): a thread
    may have a mount namespace and a root directory of its own (``unshare(CLONE_NEWNS)``,
    ``chroot`` after ``unshare(CLONE_FS)``), and a check it makes is about what it reaches
    (red team 70)."""
    with open(f"/proc/{pid}/mountinfo", "rb") as opened:  # noqa: PTH123 - a seq file, bytes
        lines = opened.read().splitlines()
    return [entry for line in lines if (entry := parse(line)) is not None]


def option_values(entry: Entry, name: bytes) -> list[bytes]:
    """The values of superblock option `name` (``upperdir``) of `entry`, in order, their
    escapes undone."""
    prefix = name + b"="
    return [
        unescape(option[len(prefix) :])
        for option in entry.super_options.split(b",")
        if option.startswith(prefix)
    ]


def upper_of(entry: Entry) -> bytes:
    """An overlay's upper directory as the mount was given it, ``b""`` for another mount."""
    if entry.fstype != b"overlay":
        return b""
    return next(iter(option_values(entry, b"upperdir")), b"")


def read() -> list[Mount]:
    """This thread's mount table (`table`), read now; empty where there is none (no ``/proc``)."""
    try:
        entries = table()
    except OSError:
        return []
    return [(e.device, e.point, e.root, upper_of(e)) for e in entries]


def shown_and_upper(line: bytes) -> tuple[bytes, bytes]:
    """A mount table line's directory of its filesystem that the mount shows (the fourth
    field: not ``/`` for a bind mount of a directory), and an overlay's upper directory
    (``b""`` for any other mount); both ``b""`` for a line of another shape."""
    entry = parse(line)
    return (entry.root, upper_of(entry)) if entry is not None else (b"", b"")


def unescape(field: bytes) -> bytes:
    """A path of the table as it is: space, tab, newline and \\ are octal-escaped there."""
    if b"\\" not in field:
        return field
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


def by_point(points: Sequence[bytes], entries: Sequence[Entry] | None = None) -> dict[bytes, int]:
    """Each mount point (without its trailing ``/``: ``/`` is ``b""``) and the index in
    `points` of the mount that shows it, for `nearest`: where `entries` (what `points` were
    taken from, in their order) say, only the mounts a path can reach (`_shown`); without
    them, the last mount at each point in the table (mount order: a later mount at the same
    point mostly hides an earlier).

    The table lists mounts as they were made, and a mount is mostly made on top of what is
    there; but one moved beneath another (``move_mount`` with ``MOVE_MOUNT_BENEATH``, Linux
    6.5) is listed after the mount that hides it, and a mount made before another on a
    directory above it (``/x/y`` mounted, then a second mount at ``/x``) has the deeper
    point, though the path is the second mount's (session 61; red team 61 on regress: a
    tmpfs at a root's path, then a FUSE mirror above it, and the root was taken for the
    tmpfs's, one of this machine's own)."""
    keys = [point.rstrip(b"/") for point in points]
    if entries is not None:
        return {keys[index]: index for index in _shown(entries, keys)}
    return {key: index for index, key in enumerate(keys)}


def _shown(entries: Sequence[Entry], keys: Sequence[bytes]) -> list[int]:
    """The indexes, in table order, of the mounts of `entries` (their points without the
    trailing ``/``: `keys`) that show their mount point: each one reached from a mount whose
    parent is not in `entries` (the namespace's root, a mount above a chroot, or a part of
    the table), through the mounts it lies on, and not hidden by another mount on the same
    parent at a directory on its way (``/x`` hides ``/x/y``; one at the parent's own point,
    stacked on it, hides all the others), nor covered by one stacked on it. Of two at one
    point on one parent (no kernel makes them), the later."""
    by_id = {entry.mount_id: index for index, entry in enumerate(entries)}
    children: dict[int, dict[bytes, int]] = {}
    for index, entry in enumerate(entries):
        parent = entry.parent_id
        if not keys[index] and parent in by_id and parent != entry.mount_id:
            # Stacked on the table's process's root (``mount -t tmpfs none /`` in a namespace
            # of its own): a lookup starts at that root and never crosses a mount on it, and
            # a process whose root it became lists neither the old root nor its mounts
            # (unreachable). Taken for the one on top, it hid every mount of the namespace:
            # a live root bound into the sandbox was shown from nowhere (red team 61 on
            # regress, mounts).
            continue
        # Its own parent: the namespace's root (-1 is no mount's id).
        children.setdefault(-1 if parent == entry.mount_id else parent, {})[keys[index]] = index
    pending = [group for parent, group in children.items() if parent not in by_id]
    for group in pending:
        if len(group) > 1:
            # The same, in a chroot into a directory that is no mount point: its mount is not
            # listed (unreachable), its mounts under the new root are, and so is one mounted
            # over that root since, at ``/``, beside them.
            group.pop(b"", None)
    shown: list[int] = []
    covered: set[int] = set()
    seen: set[int] = set()
    while pending:
        group = pending.pop()
        for key, index in group.items():
            above, hidden = key, False
            while not hidden and (cut := above.rfind(b"/")) >= 0:
                above = above[:cut]
                hidden = above in group
            if hidden or index in seen:
                continue
            seen.add(index)
            shown.append(index)
            parent = by_id.get(entries[index].parent_id, index)
            if parent != index and keys[parent] == key:
                covered.add(parent)  # stacked on its parent
            if (under := children.get(entries[index].mount_id)) is not None:
                pending.append(under)
    return sorted(index for index in shown if index not in covered)


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


def walk_nearest(
    wanted: bytes, points: Sequence[bytes], tops: Mapping[bytes, int] | None = None
) -> int | None:
    """`nearest`, by a walk of the whole table: the deepest mount point on the way of
    ``wanted``, and there the mount on top by `tops` (`by_point`), else the last one."""
    found = None
    for index, point in enumerate(points):  # in mount order: a later mount at the same
        top = point.rstrip(b"/")  # point hides an earlier
        on_it = wanted == point or wanted.startswith(top + b"/")
        if on_it and tops is not None and top not in tops:
            continue  # hidden (`by_point`)
        if on_it and (found is None or len(top) >= len(points[found].rstrip(b"/"))):
            found = index
    if found is not None and tops is not None:
        return tops.get(points[found].rstrip(b"/"), found)
    return found


def emergency_read_only(path: bytes | str | os.PathLike[str]) -> bool:
    """Whether the table shows `path`'s filesystem made read-only by its own error handling:
    ext4's ``errors=remount-ro`` on Linux 6.x, which keeps the mount read-write and says
    ``emergency_ro`` among the superblock's options, where ``statvfs`` shows nothing (red
    team 64). ``False`` if the table cannot be read or no mount shows `path`."""
    try:
        shown = showing(os.fsencode(path), table())
    except OSError:
        return False
    return shown is not None and b"emergency_ro" in shown.super_options.split(b",")


def showing(path: bytes | str, entries: Sequence[Entry]) -> Entry | None:
    """The mount of `entries` that shows `path` (absolute, as the table's process names
    it): the deepest mount point on its way and, of mounts stacked at one point, the one on
    top, which the kernel shows (`by_point`); None where none of them holds it. `entries`
    may be a part of the table (one device's mounts, in table order).

    `nearest` and `walk_nearest` answer by the same rule for a caller that keeps the
    table's points and their `by_point`.
    """
    points = [entry.point for entry in entries]
    at = walk_nearest(os.fsencode(path), points, by_point(points, entries))
    return entries[at] if at is not None else None


def read_looked_up() -> tuple[list[Mount], tuple[list[bytes], dict[bytes, int]]]:
    """`read`, with the table's points and their `by_point` for `shown_and_hidden_from`."""
    try:
        entries = table()
    except OSError:
        return [], ([], {})
    points = [entry.point for entry in entries]
    mounts = [(e.device, e.point, e.root, upper_of(e)) for e in entries]
    return mounts, (points, by_point(points, entries))


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
        at = walk_nearest(wanted, points, lookup[1] if lookup is not None else None)
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
        if other_device != device:
            continue  # first: at each of the checks' hundred paths, most mounts are another's
        top = other_shown.rstrip(b"/")
        if inside == other_shown or inside.startswith(top + b"/"):
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
