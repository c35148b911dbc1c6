"""Red team 61 on regress, children and mounts (branch rt-regress15): the merges of
rt-children61 (a run's sealed copy of its registry entry) and tidy-mountinfo61
(`app.mountinfo`, the one reader of the mount table, the mount on top told by parent ids).

What broke:

- a mount hidden by one made later on a directory above it on the same mount (a tmpfs at
  ``<tmp_path>/m/production``, then a bindfs mirror of production's parent at
  ``<tmp_path>/m``) was still taken for the mount that shows the path: the deepest mount
  point on its way, as before the merge, which told a mount hidden only where another was
  stacked at the very point of the mount beneath. So the root through the mirror was taken
  for one on the tmpfs, one of this machine's own filesystems, and a test's child given
  production's settings and the opt-in purged production's stopped root through the mirror
  (``moved 1 session(s) to .../m/production/.trash``). And a mount made on a hidden
  directory through a descriptor kept from before (listed after the mount that shows the
  point) took the point out of the lookup altogether: the path was taken for the mount
  above, a tmpfs, and the same purge went through;
- `app.sandbox.proc_hides_processes` took the last line at ``/proc``, not the proc shown: a
  proc moved beneath another (``MOVE_MOUNT_BENEATH``) said ``hidepid=`` where it is not in
  force, and nothing where it is;
- `app.lock` followed a FUSE mirror (and read an overlay's layers) from the mount that one
  device's mounts alone say shows a path, without the ids of the mounts between them: a
  bind of the mirror's ``sub`` on a tmpfs that a bind of the mirror's root hides was taken,
  and the mirror followed to the file of another path.

`app.mountinfo.by_point` now tells, where the table's ids are at hand, which mounts a path
can reach at all (`_shown`: from the mounts whose parent is not in the table down through
the mounts each lies on, none hidden by another on the same mount at a directory on its way
or covered by one stacked on it), and every reader (`showing`, `nearest`, `app.dataroot`'s
cached table, the registry's check, the check of ``hidepid=``, and `app.lock` through the
whole table) looks only at those. Each case is checked against the kernel with real mounts,
each in a private mount namespace of a fork of one forked child of the test (one
``python -c`` of `tests/forked_app.py` for the module), and with tables by hand.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import forked_app
import pytest
from project_copy import copy_project_settings
from test_mountinfo_reader import once_for_the_session
from test_server_e2e import app_env

from app import mountinfo

FUSE = shutil.which("bindfs") is not None and os.access("/dev/fuse", os.R_OK | os.W_OK)

#: ``python -c`` (forked: a child of the test, so of the run) in production's environment on
#: a copy of the settings, argv-free: WORK substituted. It creates a session in production's
#: root, then, for each way (`WAYS`) in a fork in a mount namespace of its own, makes a decoy
#: tmpfs hidden beneath a bindfs mirror of production's parent, asks the readers and the
#: kernel which mount shows the root's path through the mirror, then runs ``app data purge``
#: there (`runpy`, as ``python -m app`` would), and prints what each said as JSON.
NAMESPACED = r"""
import contextlib, ctypes, io, json, os, runpy, subprocess, sys

from app import dataroot, mountinfo
from app.config import load
from app.storage import open_storage

with open_storage(load(serving=False), writer=True) as store:
    store.create_session("a review", {})
production = os.environ["APP_DATA_ROOT"]
name, mirrored = os.path.basename(production), os.path.dirname(production)
libc = ctypes.CDLL(None, use_errno=True)


def sh(*argv):
    subprocess.run(argv, check=True)


def hide(how, point):
    # The root's path through the mirror, with a tmpfs hidden beneath the mirror.
    root = f"{point}/{name}"
    os.makedirs(root)
    if how == "below":
        # A tmpfs at the root's path first, then the mirror on the directory above it.
        sh("mount", "-t", "tmpfs", "decoy", root)
        sh("bindfs", "-o", "nonempty", mirrored, point)
        return root, point
    # A tmpfs at the point, the root's directory in it kept open, a second tmpfs over it,
    # the mirror at <point>/<name> on that, then a tmpfs on the hidden directory through
    # the descriptor: listed after the mirror, at the same point.
    sh("mount", "-t", "tmpfs", "first", point)
    os.mkdir(root)
    kept = os.open(root, os.O_PATH)
    sh("mount", "-t", "tmpfs", "second", point)
    os.mkdir(root)
    sh("bindfs", mirrored, root)
    # mount(2) itself: mount(8) would resolve the link to the path, now the mirror's.
    if libc.mount(b"decoy", f"/proc/self/fd/{kept}".encode(), b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")
    return f"{root}/{name}", root


def seen(how, point):
    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        raise OSError(ctypes.get_errno(), "unshare")
    sh("mount", "--make-rprivate", "/")
    root, mirror = hide(how, point)
    try:
        table = mountinfo.table()
        mounts, _, (points, tops) = dataroot._MOUNTS.looked_up()
        at = mountinfo.nearest(root.encode(), points, tops)
        if at is not None and at < 0:
            at = mountinfo.walk_nearest(root.encode(), points, tops)
        device = os.stat(root).st_dev
        out = {
            "mirror": mirror,
            "kernel": f"{os.major(device)}:{os.minor(device)}",
            "showing": mountinfo.showing(root, table).device.decode(),
            "cached": mounts[at][0].decode(),
            "served": [str(p) for p in dataroot.served_from(dataroot.Path(root)) or ()],
        }
        said, status = io.StringIO(), None
        sys.argv[1:] = ["data", "purge", "--yes-i-mean-it"]
        os.environ["APP_DATA_ROOT"] = root
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            try:
                runpy.run_module("app", run_name="__main__", alter_sys=True)
            except SystemExit as stop:
                status = stop.code
        out["purge"] = [status, " ".join(said.getvalue().split())]
        return out
    finally:
        subprocess.run(["fusermount", "-u", mirror], check=False)


def proc(how):
    # A proc with hidepid= moved beneath the /proc shown, then one without it beneath a
    # /proc with it (move_mount with MOVE_MOUNT_BENEATH, Linux 6.5): each listed last.
    from app import sandbox

    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        raise OSError(ctypes.get_errno(), "unshare")
    sh("mount", "--make-rprivate", "/")
    made = f"{WORK}/proc"
    os.mkdir(made)
    out = {}
    for options, said in (("hidepid=2", "hidden beneath"), ("hidepid=0", "shown above")):
        if said == "shown above":
            sh("mount", "-t", "proc", "-o", "hidepid=2", "proc", "/proc")
        sh("mount", "-t", "proc", "-o", options, "proc", made)
        tree = libc.syscall(428, -100, made.encode(), 1 | os.O_CLOEXEC)  # open_tree, a clone
        sh("umount", made)
        # move_mount(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH)
        if tree < 0 or libc.syscall(429, tree, b"", -100, b"/proc", 0x4 | 0x200) != 0:
            return {"unsupported": os.strerror(ctypes.get_errno())}
        last = [e for e in mountinfo.table() if e.point == b"/proc"][-1]
        out[said] = [sandbox.proc_hides_processes(), last.super_options.decode()]
    return out


def partial(how):
    # A FUSE mirror at m; a tmpfs at a, another at a/b, a bind of the mirror's sub at
    # a/b/c, then a bind of the mirror's root over a: a/b/c/f is the mirror's b/c/f, and
    # of the mirror's mounts alone the one at a/b/c (on a tmpfs another hides) is deeper.
    from app import lock

    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        raise OSError(ctypes.get_errno(), "unshare")
    sh("mount", "--make-rprivate", "/")
    d = f"{WORK}/fuse"
    src = f"{d}/src"
    for made in (f"{src}/b/c", f"{src}/sub", f"{d}/m", f"{d}/a"):
        os.makedirs(made)
    for name in ("b/c/f", "sub/f"):
        with open(f"{src}/{name}", "w") as opened:
            opened.write(name)
    sh("bindfs", src, f"{d}/m")
    try:
        sh("mount", "-t", "tmpfs", "t", f"{d}/a")
        os.mkdir(f"{d}/a/b")
        sh("mount", "-t", "tmpfs", "t2", f"{d}/a/b")
        os.mkdir(f"{d}/a/b/c")
        sh("mount", "--bind", f"{d}/m/sub", f"{d}/a/b/c")
        sh("mount", "--bind", f"{d}/m", f"{d}/a")
        path = f"{d}/a/b/c/f"
        with open(path) as opened:
            kernel = opened.read()
        seen = os.stat(path)
        origin = lock._fuse_origin(seen, path, "self")
        wanted, wrong = (os.stat(f"{src}/{name}") for name in ("b/c/f", "sub/f"))
        return {
            "kernel": kernel,
            "mount": list(lock._fuse_mount_of(seen.st_dev, path, "self")),
            "origin": list(origin[1]) if origin else None,
            "wanted": [wanted.st_dev, wanted.st_ino],
            "wrong": [wrong.st_dev, wrong.st_ino],
        }
    finally:
        # In an order that reaches each: the daemon ends with its last mount.
        for point in ("a", "a/b/c", "a/b", "a"):
            subprocess.run(["umount", f"{d}/{point}"], check=False)
        subprocess.run(["fusermount", "-u", f"{d}/m"], check=False)


results = {}
for how in (*WAYS, "proc", "fuse partial"):
    read, write = os.pipe()
    if (pid := os.fork()) == 0:
        os.close(read)
        try:
            if how in ("proc", "fuse partial"):
                seeing = (proc if how == "proc" else partial)(how)
            else:
                seeing = seen(how, f"{WORK}/{len(results)}")
            text = json.dumps(seeing)
        except BaseException as error:
            text = json.dumps({"error": repr(error)})
        os.write(write, text.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        results[how] = json.loads(answer.read())
    os.waitpid(pid, 0)
print("RESULTS", json.dumps(results))
"""

#: The ways of hiding a decoy tmpfs beneath the mirror.
WAYS = ("below", "through a descriptor")


@pytest.fixture(scope="module")
def hidden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """`NAMESPACED`'s results for each way (`WAYS`, ``proc``, ``fuse partial``), and
    production's sessions after them (a purge that went through is what broke): from one
    run for the whole session, under xdist the first worker to come runs it and the other
    reads what it wrote (the session's base directory, shared by the workers, holds it)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounts in a mount namespace of their own take root")
    if not FUSE:
        pytest.skip("needs bindfs and /dev/fuse (apt-get install bindfs)")
    return once_for_the_session(
        tmp_path_factory,
        "rt61-regress-children",
        lambda: _seen(tmp_path_factory.mktemp("rt61-hidden")),
    )


def _seen(work: Path) -> dict[str, dict]:
    settings = copy_project_settings(work / "settings")
    production = settings / "data" / "production"
    code = NAMESPACED.replace("WORK", repr(str(work))).replace("WAYS", repr(WAYS))
    env = app_env(production, profile="production", APP_SETTINGS_DIR=str(settings))
    done = forked_app.run_c(code, env)
    found = json.loads(done.stdout.rpartition("RESULTS ")[2])
    sessions = sorted(path.name for path in (production / "sessions").iterdir())
    found["sessions"] = {"left": sessions}
    return found


@pytest.mark.parametrize("how", WAYS)
def test_a_mount_hidden_by_a_later_one_above_it_is_not_taken_for_the_path_s(
    hidden: dict[str, dict], how: str
) -> None:
    seen = hidden[how]
    said = json.dumps(hidden, indent=1)
    assert seen["showing"] == seen["kernel"], said
    assert seen["cached"] == seen["kernel"], said
    mirror = seen["mirror"]
    assert seen["served"] == [mirror, "fuse"], said
    code, message = seen["purge"]
    # Before: 0, "moved 1 session(s) to .../production/.trash", production's session.
    assert code == 78, said
    assert f"it lies on a filesystem of type fuse mounted at {mirror}, in the sandbox" in message
    assert f"`fusermount -u {mirror}`" in message, said
    assert len(hidden["sessions"]["left"]) == 1, said


def _entries(lines: bytes) -> list[mountinfo.Entry]:
    parsed = (mountinfo.parse(line.strip()) for line in lines.splitlines())
    return [entry for entry in parsed if entry is not None]


#: Tables the kernel writes (by hand, in a mount namespace of their own), and the mount that
#: shows each path, by its source.
TABLES = {
    # /x/y mounted, then /x on the same mount: /x hides it.
    "under a later mount above": (
        b"""1 0 0:1 / / rw - ext4 /dev/sda rw
        2 1 0:2 / /x/y rw - tmpfs y rw
        3 1 0:3 / /x rw - fuse.bindfs mirror rw""",
        {b"/x/y/f": b"mirror", b"/x/y": b"mirror", b"/x": b"mirror", b"/z": b"/dev/sda"},
    ),
    # A mount on a hidden directory (a descriptor kept from before a second mount at /m),
    # listed after the mount at its point that the path reaches.
    "on a hidden directory, listed later": (
        b"""1 0 0:1 / / rw - ext4 /dev/sda rw
        2 1 0:2 / /m rw - tmpfs first rw
        3 2 0:3 / /m rw - tmpfs second rw
        4 3 0:4 / /m/r rw - fuse.bindfs mirror rw
        5 2 0:5 / /m/r rw - tmpfs hidden rw""",
        {b"/m/r/f": b"mirror", b"/m/f": b"second", b"/m/rx": b"second"},
    ),
    # The namespace's root, its own parent, with a second root stacked on it, three tmpfs
    # stacked at /s, and a mount of the first root that the second hides.
    "its own parent, three stacked": (
        b"""20 20 0:1 / / rw - ext4 /dev/sda rw
        21 20 0:2 / /old rw - tmpfs old rw
        22 20 0:3 / / rw - ext4 /dev/sdb rw
        23 22 0:4 / /s rw - tmpfs s1 rw
        24 23 0:5 / /s rw - tmpfs s2 rw
        25 24 0:6 / /s rw - tmpfs s3 rw""",
        {b"/old/f": b"/dev/sdb", b"/s/f": b"s3", b"/f": b"/dev/sdb"},
    ),
    # A chroot's table (or another mount namespace's, seen from outside): parents no line
    # has, one mount each, and one the other hides.
    "parents no line has": (
        b"""40 30 0:7 / /proc rw - proc proc rw
        41 30 0:8 / /dev/pts rw - devpts pts rw
        42 30 0:9 / /dev rw - tmpfs dev rw
        43 42 0:10 / /dev/shm rw - tmpfs shm rw""",
        {b"/proc/1": b"proc", b"/dev/pts/0": b"dev", b"/dev/shm/x": b"shm", b"/etc": None},
    ),
}


@pytest.mark.parametrize("name", list(TABLES))
def test_the_mount_a_path_reaches_is_told_from_the_table_s_ids(name: str) -> None:
    lines, wanted = TABLES[name]
    entries = _entries(lines)
    assert len(entries) == len(lines.splitlines())
    points = [entry.point for entry in entries]
    tops = mountinfo.by_point(points, entries)
    for path, source in wanted.items():
        found = mountinfo.showing(path, entries)
        assert (found.source if found is not None else None) == source, path
        at = mountinfo.nearest(path, points, tops)
        if at is not None and at < 0:
            at = mountinfo.walk_nearest(path, points, tops)
        assert (entries[at] if at is not None else None) == found, path


def test_hidepid_is_read_from_the_proc_that_shows_proc_not_the_last_line(
    hidden: dict[str, dict],
) -> None:
    seen = hidden["proc"]
    if "unsupported" in seen:
        pytest.skip(f"needs move_mount's MOVE_MOUNT_BENEATH (Linux 6.5): {seen['unsupported']}")
    said = json.dumps(seen)
    # Before: "hidepid=invisible" from the hidden proc listed last, None for the one shown.
    assert "hidepid=invisible" in seen["hidden beneath"][1], said
    assert seen["hidden beneath"][0] is None, said
    assert "hidepid" not in seen["shown above"][1], said
    assert seen["shown above"][0] in ("hidepid=2", "hidepid=invisible"), said


def test_a_fuse_mirror_is_followed_from_the_mount_the_whole_table_says_shows_the_path(
    hidden: dict[str, dict],
) -> None:
    seen = hidden["fuse partial"]
    said = json.dumps(seen)
    assert seen["kernel"] == "b/c/f", said
    # Before: the bind of the mirror's sub at a/b/c, on a tmpfs the bind over a hides, and
    # so the mirror's sub/f for the file at a/b/c/f.
    assert seen["mount"][0].endswith("/fuse/a"), said
    assert seen["mount"][1] == "/", said
    assert seen["origin"] == seen["wanted"] != seen["wrong"], said
