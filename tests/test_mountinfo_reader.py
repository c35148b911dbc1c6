"""`app.mountinfo` as THE reader of Linux's mount table (session 61's tidy-up).

`app.lock` parsed ``/proc/<pid>/mountinfo`` by hand in four places, `app.sandbox` in one and
`app.dataroot` kept its own parser for its cached table; now each uses `mountinfo.parse`
(one line: every field, octal escapes undone, a line of another shape left out) and asks
`mountinfo.showing` (or `nearest` with `by_point`, one rule) for the mount that shows a path:
the deepest mount point on its way that no mount stacked above it hides, and of mounts
stacked at one point the one on top, told by the parent ids.

What broke before, each checked with real mounts in a private mount namespace and failing
before the change:

- `_fuse_mount_of` and `_layer_files` took the FIRST of two mounts stacked at one point:
  a live root's session was purged through a bindfs mirror with a directory of it bound
  over its own mount point
  (`test_a_live_root_through_a_fuse_mirror_stacked_on_itself_is_not_purged`, now refused
  as red team 60's mirror is), and an overlay's layers were read at its root
  (`test_an_overlay_stacked_on_itself_is_read_from_the_one_on_top`);
- every reader took the later line for the mount on top, which a mount moved beneath
  another (``MOVE_MOUNT_BENEATH``, Linux 6.5) is not
  (`test_a_mount_moved_beneath_the_one_on_top_is_not_taken_for_it`);
- every reader took the deepest mount point, even one on a mount another mount at the same
  point hides (`test_a_mount_on_one_another_hides_is_not_taken_for_the_path_s`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from test_redteam_s59_guard import outside_any_run
from test_redteam_s60_guard import COMMON

from app import mountinfo

_LINE = (
    b"36 35 98:0 /mnt\\040a /mnt/b\\134c rw,noatime master:1 shared:2 - ext3 /dev/r\\040d "
    b"rw,errors=continue"
)


def test_a_line_is_parsed_into_every_field_with_its_escapes_undone() -> None:
    entry = mountinfo.parse(_LINE)
    assert entry == (
        36,
        35,
        b"98:0",
        b"/mnt a",
        b"/mnt/b\\c",
        b"rw,noatime",
        (b"master:1", b"shared:2"),
        b"ext3",
        b"/dev/r d",
        b"rw,errors=continue",
    )
    assert entry is not None
    assert entry.point == b"/mnt/b\\c"
    none = mountinfo.parse(b"1 0 0:1 / / rw - tmpfs none rw")
    assert none is not None
    assert none.optional == ()


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"garbage",
        b"36 35 98:0 /mnt /mnt rw",  # no " - "
        b"36 35 98:0 /mnt - ext3 /dev/root rw",  # too few fields before it
        b"x 35 98:0 / /mnt rw - ext3 /dev/root rw",  # not a mount id
        b"36 35 98:0 / /mnt rw - ext3",  # no source, no options
        b"\xff\xfe - \x00",
    ],
)
def test_a_line_of_another_shape_is_left_out(line: bytes) -> None:
    assert mountinfo.parse(line) is None
    assert mountinfo.shown_and_upper(line) == (b"", b"")


def test_an_option_s_value_is_split_before_its_escapes_are_undone() -> None:
    line = b"40 1 0:50 / /m rw - overlay overlay rw,lowerdir=/l,upperdir=/u\\054v\\040w,workdir=/w"
    entry = mountinfo.parse(line)
    assert entry is not None
    assert mountinfo.option_values(entry, b"upperdir") == [b"/u,v w"]
    assert mountinfo.upper_of(entry) == b"/u,v w"
    assert mountinfo.shown_and_upper(line) == (b"/", b"/u,v w")


def test_of_two_mounts_stacked_at_one_point_the_later_shows_the_path() -> None:
    lines = [
        b"1 0 0:1 / / rw - ext4 /dev/sda rw",
        b"2 1 0:2 / /m rw - tmpfs first rw",
        b"3 2 0:2 /sub /m rw - tmpfs second rw",
        b"4 1 0:3 / /other rw - tmpfs third rw",
    ]
    entries = [entry for line in lines if (entry := mountinfo.parse(line)) is not None]
    points = [entry.point for entry in entries]
    for path, source in ((b"/m/f", b"second"), (b"/m", b"second"), (b"/mx", b"/dev/sda")):
        found = mountinfo.showing(path, entries)
        assert found is not None
        assert found.source == source, path
        # The lookup `app.dataroot` keeps gives the same mount.
        assert mountinfo.nearest(path, points, mountinfo.by_point(points)) == entries.index(found)
    assert mountinfo.showing(b"/m/f", entries[1:2]) == entries[1]
    assert mountinfo.showing(b"/elsewhere", entries[1:]) is None


def test_a_mount_beneath_another_listed_after_it_is_not_on_top() -> None:
    # Mount 6 was moved beneath mount 5 (MOVE_MOUNT_BENEATH): 5 is now mounted on 6.
    lines = [b"1 0 0:1 / / rw - ext4 /dev/sda rw", b"5 6 0:4 / /n rw - tmpfs top rw"]
    lines.append(b"6 1 0:5 / /n rw - tmpfs beneath rw")
    entries = [entry for line in lines if (entry := mountinfo.parse(line)) is not None]
    points = [entry.point for entry in entries]
    found = mountinfo.showing(b"/n/f", entries)
    assert found is not None
    assert found.source == b"top"
    assert mountinfo.nearest(b"/n/f", points, mountinfo.by_point(points, entries)) == 1
    # Without the ids, the last line is all there is to go by.
    assert mountinfo.nearest(b"/n/f", points, mountinfo.by_point(points)) == 2


def test_a_mount_on_one_another_hides_does_not_show_the_path() -> None:
    lines = [b"1 0 0:1 / / rw - ext4 /dev/sda rw", b"2 1 0:2 / /x rw - tmpfs a rw"]
    lines += [b"3 2 0:3 / /x/y rw - tmpfs b rw", b"4 2 0:4 / /x rw - tmpfs c rw"]
    lines.append(b"5 4 0:5 / /x/z rw - tmpfs d rw")  # on the one on top: seen
    entries = [entry for line in lines if (entry := mountinfo.parse(line)) is not None]
    points = [entry.point for entry in entries]
    tops = mountinfo.by_point(points, entries)
    for path, source in ((b"/x/y/f", b"c"), (b"/x/y", b"c"), (b"/x/z/f", b"d")):
        found = mountinfo.showing(path, entries)
        assert found is not None
        assert found.source == source, path
        assert mountinfo.nearest(path, points, tops) == entries.index(found)


#: PID 1 of a PID namespace with its own /proc, in a private mount namespace (outside any
#: run; its end stops bindfs's daemons), production's environment on a copy of the
#: settings. argv: work, "fuse" where a FUSE mirror can be made.
#:
#: First (with FUSE) production's root at work/real/sub/production with one session, held by
#: a writer; a mirror of work/real by ``bindfs --ctime-from-mtime``, its ``sub`` bound over
#: the mirror's own mount point, a ``chmod`` of the lock file (its change time alone), then
#: a purge through mirror/production, which is the live root.
#:
#: Then in work/stacked, each caller of the table with real stacked mounts: an overlay and
#: a FUSE mirror each with a directory of it bound over its mount point, tmpfs mounts
#: stacked, one moved beneath another, one on a mount another hides; /proc mounted again.
SCRIPT = (
    COMMON
    + r"""

work = Path(sys.argv[1])
results = {"work": str(work)}
if sys.argv[2] == "fuse":
    real, mirror = work / "real", work / "mirror"
    root = real / "sub" / "production"
    with open_storage(load(serving=False), writer=True) as store:
        store.create_session("a review", {})
    mirror.mkdir()
    subprocess.run(["bindfs", "--ctime-from-mtime", str(real), str(mirror)], check=True)
    subprocess.run(["mount", "--bind", str(mirror / "sub"), str(mirror)], check=True)
    results["before"] = names(root / "sessions")
    holder = holding(root)
    lockfile = root / ".server.lock"
    os.chmod(lockfile, os.stat(lockfile).st_mode & 0o7777)
    purge = ["data", "purge", "--yes-i-mean-it"]
    results["PURGE"] = run(purge, APP_DATA_ROOT=str(mirror / "production"))
    stop(holder)
    results["after"] = names(root / "sessions")
    subprocess.run(["umount", str(mirror)], check=True)
    subprocess.run(["fusermount", "-u", str(mirror)], check=True)

from app import lock, mountinfo, sandbox

d = str(work / "stacked")
os.mkdir(d)
out = results["stacked"] = {}


def sh(*argv):
    subprocess.run(argv, check=True)


def write(path, text):
    with open(path, "w") as opened:
        opened.write(text)


def read(path):
    with open(path) as opened:
        return opened.read()


def ids(path):
    seen = os.stat(path)
    return [seen.st_dev, seen.st_ino]


sh("mount", "-t", "tmpfs", "rt61", d)
# An overlay, and a directory of it bound over its own mount point.
for name in ("lower", "upper", "work", "m"):
    os.mkdir(f"{d}/{name}")
options = f"lowerdir={d}/lower,upperdir={d}/upper,workdir={d}/work"
sh("mount", "-t", "overlay", "overlay", "-o", options, f"{d}/m")
os.mkdir(f"{d}/m/sub")
write(f"{d}/m/f", "root")
write(f"{d}/m/sub/f", "sub")
sh("mount", "--bind", f"{d}/m/sub", f"{d}/m")
top = mountinfo.showing(f"{d}/m/f", mountinfo.table())
out["overlay"] = {
    "kernel": read(f"{d}/m/f"),
    "shown": top.root.decode(),
    "layers": sorted(lock._layer_files(os.stat(f"{d}/m/f").st_dev, f"{d}/m/f", "self")),
    "upper_sub": ids(f"{d}/upper/sub/f"),
    "upper_root": ids(f"{d}/upper/f"),
}

# Two tmpfs stacked at one point, the one on top naming a block device as its source.
os.mknod(f"{d}/blk", 0o600 | 0o060000, os.makedev(7, 61))
os.mkdir(f"{d}/s")
sh("mount", "-t", "tmpfs", "below", f"{d}/s")
sh("mount", "-t", "tmpfs", f"{d}/blk", f"{d}/s")
out["block"] = lock._block_device(os.stat(f"{d}/s").st_dev, f"{d}/s/x", "self")
out["block_wanted"] = os.makedev(7, 61)

# A third moved beneath the one on top (move_mount with MOVE_MOUNT_BENEATH, Linux 6.5): the
# table lists it after the one that hides it.
import ctypes

libc = ctypes.CDLL(None, use_errno=True)
os.mknod(f"{d}/blk2", 0o600 | 0o060000, os.makedev(7, 62))
os.mkdir(f"{d}/bsrc")
sh("mount", "-t", "tmpfs", f"{d}/blk2", f"{d}/bsrc")
tree = libc.syscall(428, -100, f"{d}/bsrc".encode(), 1 | os.O_CLOEXEC)  # open_tree, a clone
# move_mount(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH)
if tree >= 0 and libc.syscall(429, tree, b"", -100, f"{d}/s".encode(), 0x4 | 0x200) == 0:
    from app.dataroot import _MOUNTS

    entries = mountinfo.table()
    here = os.stat(f"{d}/s").st_dev
    mounts, _, (points, tops) = _MOUNTS.looked_up()
    at = mountinfo.nearest(f"{d}/s/x".encode(), points, tops)
    out["beneath"] = {
        "listed": [e.source.decode() for e in entries if e.point == f"{d}/s".encode()],
        "showing": mountinfo.showing(f"{d}/s/x", entries).source.decode(),
        "block": lock._block_device(here, f"{d}/s/x", "self"),
        "cached": mounts[at][0].decode(),
        "device": f"{os.major(here)}:{os.minor(here)}",
    }

# A mount on one another mount then hides: the second at {d}/h shows {d}/h/y.
os.mkdir(f"{d}/h")
sh("mount", "-t", "tmpfs", "first", f"{d}/h")
os.mkdir(f"{d}/h/y")
sh("mount", "-t", "tmpfs", f"{d}/blk2", f"{d}/h/y")
sh("mount", "-t", "tmpfs", f"{d}/blk", f"{d}/h")
os.mkdir(f"{d}/h/y")
from app.dataroot import _MOUNTS

here = os.stat(f"{d}/h/y").st_dev
mounts, _, (points, tops) = _MOUNTS.looked_up()
at = mountinfo.nearest(f"{d}/h/y/x".encode(), points, tops)
out["hidden_below"] = {
    "block": lock._block_device(here, f"{d}/h/y/x", "self"),
    "cached": mounts[at][0].decode(),
    "device": f"{os.major(here)}:{os.minor(here)}",
}

# A FUSE mirror (bindfs), and a directory of it bound over its own mount point.
if sys.argv[2] == "fuse":
    os.makedirs(f"{d}/fsrc/sub")
    os.mkdir(f"{d}/fm")
    write(f"{d}/fsrc/f", "root")
    write(f"{d}/fsrc/sub/f", "sub")
    sh("bindfs", f"{d}/fsrc", f"{d}/fm")
    sh("mount", "--bind", f"{d}/fm/sub", f"{d}/fm")
    seen = os.stat(f"{d}/fm/f")
    origin = lock._fuse_origin(seen, f"{d}/fm/f", "self")
    out["fuse"] = {
        "kernel": read(f"{d}/fm/f"),
        "mount": list(lock._fuse_mount_of(seen.st_dev, f"{d}/fm/f", "self")),
        "origin": [origin[0], list(origin[1])] if origin else None,
        "sub": ids(f"{d}/fsrc/sub/f"),
    }

# /proc mounted again with hidepid=, then once more without it on top.
sh("mount", "-t", "proc", "-o", "hidepid=2", "proc", "/proc")
out["hidden"] = sandbox.proc_hides_processes()
sh("mount", "-t", "proc", "proc", "/proc")
out["hidden_on_top"] = sandbox.proc_hides_processes()
print("RESULTS", json.dumps(results))
"""
)


def _fuse() -> bool:
    return all(shutil.which(tool) for tool in ("bindfs", "fusermount")) and (
        Path("/dev/fuse").exists()
    )


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`SCRIPT`'s results, from one run for the whole session: under xdist, the first
    worker to come runs it and the other reads what it wrote (the session's base directory,
    shared by the workers, holds it)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("mounts in a mount and PID namespace of their own take unshare(1) and root")

    def made() -> dict:
        work = tmp_path_factory.mktemp("mountinfo-reader")
        root = work / "real" / "sub" / "production"
        root.parent.mkdir(parents=True)
        return outside_any_run(work, root, SCRIPT, str(work), "fuse" if _fuse() else "-")

    return once_for_the_session(tmp_path_factory, "mountinfo-reader", made)


def once_for_the_session(
    tmp_path_factory: pytest.TempPathFactory, name: str, made: Callable[[], dict]
) -> dict:
    """What `made` returns (JSON), made once for the whole session: under xdist, the first
    worker to come makes it and the others read what it wrote (the session's base
    directory, shared by the workers, holds it as `name`.json)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    kept = shared / f"{name}.json"
    with (shared / f"{name}.lock").open("a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not kept.is_file():
            kept.write_text(json.dumps(made()))
    return json.loads(kept.read_text())


@pytest.fixture
def stacked(seen: dict) -> dict:
    return seen["stacked"]


def test_an_overlay_stacked_on_itself_is_read_from_the_one_on_top(stacked: dict) -> None:
    seen = stacked["overlay"]
    assert seen["kernel"] == "sub", seen  # the kernel shows the later mount
    assert seen["shown"] == "/sub", seen
    # Before: the first mount's directory, the overlay's root: upper/f, not upper/sub/f.
    assert seen["upper_sub"] in seen["layers"], seen
    assert seen["upper_root"] not in seen["layers"], seen


def test_a_fuse_mount_stacked_on_itself_is_followed_from_the_one_on_top(stacked: dict) -> None:
    if "fuse" not in stacked:
        pytest.skip("needs bindfs, fusermount and /dev/fuse for a FUSE mirror")
    seen = stacked["fuse"]
    assert seen["kernel"] == "sub", seen
    # Before: the first mount's directory ("/"), and so fsrc/f for the file at fm/f.
    assert seen["mount"][1] == "/sub", seen
    assert seen["origin"] is not None, seen
    assert seen["origin"][1] == seen["sub"], seen


def test_a_block_device_is_read_from_the_mount_on_top(stacked: dict) -> None:
    assert stacked["block"] == stacked["block_wanted"]


def test_a_live_root_through_a_fuse_mirror_stacked_on_itself_is_not_purged(seen: dict) -> None:
    if "PURGE" not in seen:
        pytest.skip("needs bindfs, fusermount and /dev/fuse for a FUSE mirror")
    said = json.dumps(seen, indent=1)
    work = seen["work"]
    root = f"{work}/real/sub/production"
    # Before: "moved 1 session(s) to .../mirror/production/.trash", the holder's session.
    assert seen["after"] == seen["before"] != [], said
    code, message = seen["PURGE"]
    assert code == 75, said
    assert f"through its lock file {root}/.server.lock" in message, said
    assert f"seen through a FUSE mount ({work}/mirror:" in message, said
    assert f"Work through the holder's own path, {root}" in message, said


def test_a_mount_moved_beneath_the_one_on_top_is_not_taken_for_it(stacked: dict) -> None:
    if "beneath" not in stacked:
        pytest.skip("needs move_mount's MOVE_MOUNT_BENEATH (Linux 6.5)")
    seen = stacked["beneath"]
    assert seen["listed"][-1].endswith("/blk2"), seen  # the one beneath, listed last
    assert seen["showing"].endswith("/blk"), seen
    assert seen["block"] == stacked["block_wanted"], seen
    assert seen["cached"] == seen["device"], seen  # `app.dataroot`'s table says the same


def test_a_mount_on_one_another_hides_is_not_taken_for_the_path_s(stacked: dict) -> None:
    seen = stacked["hidden_below"]
    assert seen["block"] == stacked["block_wanted"], seen
    assert seen["cached"] == seen["device"], seen


def test_hidepid_is_read_from_the_proc_on_top(stacked: dict) -> None:
    assert stacked["hidden"] in ("hidepid=2", "hidepid=invisible"), stacked
    assert stacked["hidden_on_top"] is None, stacked
