"""Red team 71 on the live holder's lock (layer 4): a data root on btrfs.

Linux's lock lists (``/proc/locks``, a descriptor's ``fdinfo``) name a file by its
superblock's device; ``stat`` gives btrfs's files the anonymous device of their subvolume
(the top one too), another number. Every look the app made for a holder there keyed on
``st_dev``, and missed. Real parts: a btrfs image on a loop device, mounted in a mount
namespace of the test's own, outside any run (every lock durable, as production's); a
writer holding production's root there, opened as ``app serve`` and every ``app data``
command open one (a fork: its lock is the same `RootLock`); a second writer; util-linux's
``flock -s``; a snapshot of the filesystem, whose copy of the root has the live lock file's
inode number (btrfs numbers each subvolume's files from 256 on one superblock). One child
for those four tests, no server start: about 2 s of wall under load, most of it the waits
the probes make by design (a shared holder is looked at three times over 0.25 s).

And, on the run's own root, a shared lock kept by the shell of flock(1)'s own example
(``exec 9<lock; flock -s 9``), whose taker exited at once.

Red team 71 on regress (round f) added to that child an overlay whose layers are two
filesystems (its files' ``st_dev`` is neither its directories' nor the lock list's), and a
second child, the image mounted again outside a PID namespace (where a lock whose taker
exited is listed): another program's ``.server.lock`` sharing a kept lock's key.

Round i added to that second child (now a module fixture) a shell that keeps an overlay's
root's lock past its taker, its lock file deleted; and to the ext4 test the words for a lock
kept past a taker that published nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_redteam_s59_guard import outside_any_run

from app.config import Config
from app.dataroot import open_root
from app.errors import DataRootInUseError
from app.lock import LOCK_FILE, RootLock, describe_holder, probe
from app.storage import REMOTE

#: PID 1 of a PID namespace of its own, outside any run (`outside_any_run`: production's
#: settings, every lock durable). argv: the work directory. A btrfs image mounted at
#: `<work>/btrfs`, production's root on it, held by a writer (a fork, as `app serve` and every
#: `app data` command open one); what a probe and a second writer say then, with its lock
#: file deleted, and beside `flock -s` once the holder is gone.
_ON_BTRFS = r"""
import json, os, signal, subprocess, sys
from collections.abc import Iterator
from pathlib import Path
from app.config import load
from app.lock import describe_holder, probe
from app.dataroot import open_root
from app.storage import open_storage

work = Path(sys.argv[1])
# One CPU for every process here: the kernel lists the newest lock first on a CPU's list,
# so that the order of two holders' lines below is the order they locked in.
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
image, at, root = work / "disk.img", work / "btrfs", work / "btrfs" / "production"
with open(image, "wb") as sparse:
    sparse.truncate(120 << 20)
subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
subprocess.run(["mount", "-t", "btrfs", "-o", "loop", str(image), str(at)], check=True)
seen = {"device_major": os.major(os.stat(at).st_dev)}

def looked(path=root):
    found = probe(path)
    return describe_holder(found.holder) if found.held else "nobody"

def second_writer():  # as every writer opens one, with no retries (a command waits 1 s)
    try:
        with open_root(load(serving=False), wanted="empty the trash", timeout=0.0):
            return "opened"
    except Exception as error:
        return f"{type(error).__name__}: {' '.join(str(error).split())}"

def hold(path):
    # A fork holding the root at `path` as a writer, until killed: its pid.
    read, write = os.pipe()
    holder = os.fork()
    if holder == 0:
        try:
            os.environ["APP_DATA_ROOT"] = str(path)
            with open_storage(load(serving=False), writer=True):
                os.write(write, b"held\n")
                signal.pause()
        except BaseException as error:
            os.write(write, f"{type(error).__name__}: {' '.join(str(error).split())}\n".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        said = pipe.readline()
    assert said == "held\n", said
    return holder

holder = hold(root)
try:
    seen["holder"] = holder
    seen["held"] = looked()
    seen["held_writer"] = second_writer()
    os.unlink(root / ".server.lock")  # as one deletes a stale pid file
    seen["deleted"] = looked()
    seen["deleted_writer"] = second_writer()
finally:
    os.kill(holder, signal.SIGKILL)
    os.waitpid(holder, 0)
backup = subprocess.Popen(
    ["flock", "-s", str(root / ".server.lock"), "-c", "echo locked; exec sleep 600"],
    stdout=subprocess.PIPE, text=True, start_new_session=True,
)
try:
    assert backup.stdout.readline() == "locked\n"
    seen["backup"] = backup.pid
    seen["shared"] = looked()
    seen["shared_writer"] = second_writer()
finally:
    os.killpg(backup.pid, signal.SIGKILL)  # its `sleep` too, which holds the lock with it
    backup.wait()
# A snapshot of the whole filesystem (a backup's), its copy of the root held by one writer,
# then the root itself by another: the two lock files have one inode number, and one key.
subprocess.run(["btrfs", "-q", "subvolume", "snapshot", str(at), str(at / "snap")], check=True)
copy = at / "snap" / "production"
seen["inodes"] = [(root / ".server.lock").stat().st_ino, (copy / ".server.lock").stat().st_ino]
holders = [hold(copy)]
try:
    holders.append(hold(root))
    seen["snapshot_holders"] = holders
    os.environ["APP_DATA_ROOT"] = str(copy)
    seen["snapshot"] = looked(copy)
    seen["snapshot_writer"] = second_writer()
finally:
    for each in holders:
        os.kill(each, signal.SIGKILL)
        os.waitpid(each, 0)
# An overlay whose layers are two filesystems (a container's upper directory on another
# filesystem than its image's layers), xino off as Linux's default is: its `stat` gives a
# file another device than its directory's, and `/proc/locks` the directory's.
lower, upper, merged = work / "lower", work / "upper", work / "merged"
for each in (lower, upper, merged):
    each.mkdir()
for layer in (lower, upper):
    subprocess.run(["mount", "-t", "tmpfs", "layer", str(layer)], check=True)
(upper / "up").mkdir()
(upper / "work").mkdir()
subprocess.run(
    ["mount", "-t", "overlay", "overlay", "-o",
     f"lowerdir={lower},upperdir={upper / 'up'},workdir={upper / 'work'}", str(merged)],
    check=True,
)
layered = merged / "production"
holder = hold(layered)
try:
    seen["overlay_holder"] = holder
    devices = [os.stat(layered).st_dev, os.stat(layered / ".server.lock").st_dev]
    seen["overlay_devices"] = [f"{os.major(d)}:{os.minor(d)}" for d in devices]
    os.environ["APP_DATA_ROOT"] = str(layered)
    seen["overlay_held"] = looked(layered)
    os.unlink(layered / ".server.lock")
    seen["overlay_deleted"] = looked(layered)
    seen["overlay_writer"] = second_writer()
finally:
    os.kill(holder, signal.SIGKILL)
    os.waitpid(holder, 0)
print("RESULTS", json.dumps(seen))
"""


#: argv: the work directory of `on_btrfs`, its image mounted again (its snapshot made), in
#: a mount namespace of its own but this PID namespace, where Linux lists a lock whose taker
#: exited. In the snapshot, another program's empty `.server.lock` (not a root's) with the
#: inode number of the live root's lock file, which a shell holds as flock(1)'s own example
#: does (`exec 9<lock; flock 9`: the `flock` process exits at once): is a root under that
#: directory said to lie inside a data root?
_BESIDE_A_KEPT_LOCK = r"""
import json, os, subprocess, sys
from collections.abc import Iterator
from pathlib import Path
from app.dataroot import _stamped_root_above
from app.errors import DataRootInUseError
from app.lock import RootLock, a_root_s_lock_file, describe_holder, probe

work = Path(sys.argv[1])
at = work / "again"
at.mkdir()
subprocess.run(["mount", "-o", "loop", str(work / "disk.img"), str(at)], check=True)
live, home = at / "production" / ".server.lock", at / "snap" / "home"
home.mkdir()
other = home / ".server.lock"
os.rename(at / "snap" / "production" / ".server.lock", other)  # its inode, as it was
os.truncate(other, 0)
seen = {"inodes": [live.stat().st_ino, other.stat().st_ino]}
# Its stdin a pipe of this process: it ends with it, whatever happens here.
shell = subprocess.Popen(
    ["bash", "-c", f"exec 9<{live}; flock 9; echo locked; read"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
try:
    assert shell.stdout.readline() == "locked\n"
    found = live.stat()
    seen["listed"] = f":{found.st_ino} " in Path("/proc/locks").read_text()
    # What a writer's open of a root there asks (`open_root` refuses a root inside one;
    # this process's PID namespace is the test run's, whose guard refuses production).
    seen["root_above"] = str(_stamped_root_above(home / "data"))
    # And the same idiom on that very file: it is a lock file in use, as it is elsewhere.
    kept = subprocess.Popen(
        ["bash", "-c", f"exec 9<{other}; flock 9; echo locked; read"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert kept.stdout.readline() == "locked\n"
        seen["a_root_s_kept"] = a_root_s_lock_file(other)
    finally:
        kept.stdin.close()
        kept.wait()
finally:
    shell.stdin.close()
    shell.wait()
# Round i: round f's overlay of two filesystems (a file's device is its layer's), its root's
# lock kept by the same shell idiom, and the lock file deleted: is a writer kept off?
layers = [work / name for name in ("ov_lower", "ov_upper", "ov_merged")]
for each in layers:
    each.mkdir()
for layer in layers[:2]:
    subprocess.run(["mount", "-t", "tmpfs", "layer", str(layer)], check=True)
(layers[1] / "up").mkdir()
(layers[1] / "work").mkdir()
subprocess.run(
    ["mount", "-t", "overlay", "overlay", "-o",
     f"lowerdir={layers[0]},upperdir={layers[1] / 'up'},workdir={layers[1] / 'work'}",
     str(layers[2])],
    check=True,
)
layered = layers[2] / "root"
layered.mkdir()
(layered / ".server.lock").touch()
seen["overlay_devices"] = [os.stat(layered).st_dev, os.stat(layered / ".server.lock").st_dev]
shell = subprocess.Popen(
    ["bash", "-c", f"exec 9<{layered / '.server.lock'}; flock 9; echo locked; read"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
try:
    assert shell.stdout.readline() == "locked\n"
    seen["overlay_shell"] = shell.pid
    os.unlink(layered / ".server.lock")
    found = probe(layered)
    seen["overlay_kept_deleted"] = describe_holder(found.holder) if found.held else "nobody"
    writer = RootLock(layered, kind="maintenance", profile="testing")
    try:
        writer.acquire(wanted="empty the trash", timeout=0.0)
        writer.release()
        seen["overlay_kept_writer"] = "acquired"
    except DataRootInUseError as error:
        seen["overlay_kept_writer"] = str(error)
finally:
    shell.stdin.close()
    shell.wait()
print("RESULTS", json.dumps(seen))
"""


@pytest.fixture(scope="module")
def on_btrfs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    needed = ("mkfs.btrfs", "mount", "flock", "unshare")
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in needed):
        pytest.skip("needs root, mkfs.btrfs, mount, unshare and flock for a btrfs image")
    if "btrfs" not in Path("/proc/filesystems").read_text():
        pytest.skip("this kernel mounts no btrfs")
    work = tmp_path_factory.mktemp("on_btrfs")
    (work / "btrfs").mkdir()
    root = work / "btrfs" / "production"
    return {"root": str(root), **outside_any_run(work, root, _ON_BTRFS, str(work))}


@pytest.fixture(autouse=True)
def _local_only(app_config: Config) -> None:
    if app_config.backend == REMOTE:
        pytest.skip("a local root's lock")


def test_a_lock_file_deleted_under_a_live_writer_on_btrfs_keeps_a_second_one_off(
    on_btrfs: dict,
) -> None:
    # Found by reading `_deleted_lock_holder` (keyed on the root's `st_dev`), then by
    # experiment: on btrfs `/proc/locks` said `00:28:257`, `stat` `00:29`. With the lock
    # file deleted under a live writer (red team 20's case), `app status` said "nobody" and
    # a second writer opened the root beside it ("opened"): two writers of one root.
    said = json.dumps(on_btrfs, indent=1)
    root, holder = on_btrfs["root"], on_btrfs["holder"]
    assert on_btrfs["device_major"] == 0, said  # an anonymous device: the case itself
    named = f"pid {holder}, kind maintenance, profile production"
    assert on_btrfs["deleted"].startswith(named), said
    assert on_btrfs["deleted_writer"].startswith(
        f"DataRootInUseError: cannot empty the trash: data root {root} is held by {named}"
    ), said
    assert (
        f"through its lock file {root}/.server.lock, which was deleted while it held it"
    ) in on_btrfs["deleted_writer"], said


def test_a_holder_on_btrfs_is_named_as_this_namespace_sees_it(on_btrfs: dict) -> None:
    # Before: refused (the kernel's flock), but named "pid N in a PID namespace this process
    # cannot see (another container's, or the host's: stop it there)", with no `kill` hint,
    # of a holder in the very same namespace.
    said = json.dumps(on_btrfs, indent=1)
    holder = on_btrfs["holder"]
    assert on_btrfs["held"].startswith(f"pid {holder}, kind maintenance, profile production"), said
    assert "PID namespace" not in on_btrfs["held"] + on_btrfs["held_writer"], said
    assert f"or stop it (kill {holder};" in on_btrfs["held_writer"], said


def test_a_shared_flock_on_btrfs_is_said_held_and_named(on_btrfs: dict) -> None:
    # Before: `app status` said "nobody" while every writer was refused, "by a process that
    # published no details (pid unknown)": red team 70's case, back on btrfs.
    said = json.dumps(on_btrfs, indent=1)
    root, backup = on_btrfs["root"], on_btrfs["backup"]
    shared = (
        f"pid {backup} (flock -s {root}/.server.lock -c 'echo locked; exec sleep 600'), which "
        "holds a shared lock on the lock file, as `flock -s` takes one"
    )
    assert on_btrfs["shared"].startswith(shared), said
    assert f"is held by {shared}" in on_btrfs["shared_writer"], said
    assert f"stop it (kill {backup})" in on_btrfs["shared_writer"], said


def test_a_holder_of_a_btrfs_snapshot_s_root_is_not_named_for_the_live_root(
    on_btrfs: dict,
) -> None:
    # Found by experiment after the fix above: btrfs's subvolumes number their files from
    # 256 on one superblock, so a snapshot's lock file (or that of a root made alike in
    # another subvolume) has the live one's key in /proc/locks. With the snapshot's root held
    # by one writer and the live root by another (listed first), the probe and the refusal
    # of the snapshot's root named the live root's writer: "pid <it> (...; the lock file
    # names pid <the snapshot's holder>, which does not hold the lock ...)", and told the
    # operator to `kill` production's holder.
    said = json.dumps(on_btrfs, indent=1)
    copy, live = on_btrfs["snapshot_holders"]
    assert on_btrfs["inodes"][0] == on_btrfs["inodes"][1], said  # the case itself
    named = f"pid {copy}, kind maintenance, profile production"
    assert on_btrfs["snapshot"].startswith(named), said
    assert f"is held by {named}" in on_btrfs["snapshot_writer"], said
    assert f"kill {copy};" in on_btrfs["snapshot_writer"], said
    both = on_btrfs["snapshot"] + on_btrfs["snapshot_writer"]
    assert f"pid {live}" not in both, said
    assert f"kill {live}" not in both, said


def test_a_shared_lock_kept_by_the_shell_of_flock_s_own_example_names_the_shell(
    app_config: Config,
) -> None:
    # Found by experiment: `exec 9<lock; flock -s 9` (flock(1)'s own example, around a
    # backup) takes the lock in a `flock` process that exits at once, and the shell keeps
    # it. The kernel lists the exited pid: `app status` and every refusal named "pid N
    # (command line unknown)" and said `kill N`, a process that no longer runs (or, once
    # its number is taken again, another). The shell, which keeps the lock, is named now.
    root = app_config.data_root
    with open_root(app_config):
        pass
    lock = root / LOCK_FILE
    idiom = f"exec 9<{lock}; flock -s 9; echo locked; exec sleep 600"
    shell = subprocess.Popen(
        ["bash", "-c", idiom], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert shell.stdout is not None
        assert shell.stdout.readline() == "locked\n"
        found = lock.stat()
        key = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
        if f" {key} " not in Path("/proc/locks").read_text():
            # In a PID namespace Linux lists no line for a lock whose taker it cannot name.
            pytest.skip("this PID namespace's /proc/locks hides a lock whose taker exited")
        seen = probe(root)
        with pytest.raises(DataRootInUseError) as refused:
            open_root(app_config, wanted="empty the trash", timeout=0.0)
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
    shared = (
        f"pid {shell.pid} (sleep 600), which holds a shared lock on the lock file, as "
        "`flock -s` takes one"
    )
    assert seen.held
    assert describe_holder(seen.holder).startswith(shared), seen.holder
    said = str(refused.value)
    assert f"is held by {shared}" in said, said
    assert f"stop it (kill {shell.pid})" in said, said


def test_a_lock_file_deleted_under_a_live_writer_on_an_overlay_of_two_filesystems(
    on_btrfs: dict,
) -> None:
    # Found by experiment (the brief's "overlayfs"): an overlay whose upper directory is on
    # another filesystem than its lower one, xino off (Linux's default), gives its files
    # another `st_dev` than their directory's, which `/proc/locks` names. The look for a
    # holder of a deleted lock file compared the holder's file's device with the root
    # directory's: with the lock file deleted under a live writer, `app status` said
    # "nobody" and a second writer opened the root beside it ("opened").
    said = json.dumps(on_btrfs, indent=1)
    holder = on_btrfs["overlay_holder"]
    root = on_btrfs["root"].replace("/btrfs/production", "/merged/production")
    directory, file = on_btrfs["overlay_devices"]
    assert directory != file, said  # the case itself
    named = f"pid {holder}, kind maintenance, profile production"
    assert on_btrfs["overlay_held"].startswith(named), said  # held before: its own fdinfo
    assert on_btrfs["overlay_deleted"].startswith(named), said
    assert on_btrfs["overlay_writer"].startswith(
        f"DataRootInUseError: cannot empty the trash: data root {root} is held by {named}"
    ), said
    assert (
        f"through its lock file {root}/.server.lock, which was deleted while it held it"
    ) in on_btrfs["overlay_writer"], said


@pytest.fixture(scope="module")
def beside_a_kept_lock(on_btrfs: dict) -> dict:
    """What `_BESIDE_A_KEPT_LOCK` saw: one child for the two tests below."""
    work = Path(on_btrfs["root"]).parent.parent
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private",
         sys.executable, "-c", _BESIDE_A_KEPT_LOCK, str(work)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert found, done.stdout + done.stderr
    seen: dict = json.loads(found[0].removeprefix("RESULTS "))
    return seen


def test_a_lock_kept_past_its_taker_in_another_subvolume_makes_no_root_of_a_plain_file(
    beside_a_kept_lock: dict,
) -> None:
    # Found by reading `_of_this_file`, then by experiment: a pid listed for the shared key
    # that cannot be looked at counted as this file's holder, and one that exited cannot be.
    # A shell around a job (`exec 9<lock; flock 9`, flock(1)'s own example) keeps a lock
    # whose taker exited; another program's empty `.server.lock` in another subvolume with
    # that inode number (each numbers its files from 256) was "a root's lock file", and a
    # root beneath it was refused: "it lies inside data root ... (it holds ...)".
    seen = beside_a_kept_lock
    said = json.dumps(seen, indent=1)
    assert seen["inodes"][0] == seen["inodes"][1], said  # the case itself
    if not seen["listed"]:
        pytest.skip("this PID namespace's /proc/locks hides a lock whose taker exited")
    assert seen["root_above"] == "None", said
    assert seen["a_root_s_kept"] is True, said  # kept on this very file: a lock file in use


def a_writer_s_refusal(root: Path) -> str:
    """The words a maintenance writer beside `root`'s holder is refused in (it must be)."""
    with pytest.raises(DataRootInUseError) as refused:
        RootLock(root, kind="maintenance", profile="testing").acquire(
            wanted="empty the trash", timeout=0.0
        )
    return str(refused.value)


#: flock(1)'s own example in a shell, as its keeper is named: `a_shell_keeping_its_lock`.
KEPT_BY = "bash -c 'exec 9<{lock}; flock 9; echo locked; read'"


@contextlib.contextmanager
def a_shell_keeping_its_lock(lock: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """A shell that keeps the lock of `lock` past its taker: `exec 9<lock; flock 9`, flock(1)'s
    own example, takes it in a `flock` process that exits at once. Yields the shell and the
    pids ``/proc/locks`` lists as the lock's takers; skips where this PID namespace's
    ``/proc/locks`` hides a lock whose taker exited. The shell ends as the block does."""
    lock.touch()
    shell = subprocess.Popen(
        ["bash", "-c", f"exec 9<{lock}; flock 9; echo locked; read"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert shell.stdout is not None
        assert shell.stdout.readline() == "locked\n"
        found = lock.stat()
        key = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
        listed = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
        takers = [parts[4] for parts in listed if len(parts) > 5 and parts[5] == key]
        if not takers:
            pytest.skip("this PID namespace's /proc/locks hides a lock whose taker exited")
        yield shell, takers
    finally:
        assert shell.stdin is not None
        shell.stdin.close()
        shell.wait()


def test_a_lock_file_deleted_under_a_shell_that_keeps_its_lock_keeps_a_writer_off(
    tmp_path: Path,
) -> None:
    # Found by experiment (the brief's "inherited descriptor after the original holder
    # exits"), on ext4: `exec 9<lock; flock 9` (flock(1)'s own example, a shell around a
    # backup) takes the lock in a `flock` process that exits at once, and the shell keeps
    # it. With that lock file deleted, the look for a deleted lock file's holder read the
    # descriptors of the pid the kernel lists, which has none: `app status` said "nobody"
    # and a writer took the root beside the shell ("acquired").
    lock = tmp_path / LOCK_FILE
    with a_shell_keeping_its_lock(lock) as (shell, takers):
        live = describe_holder(probe(tmp_path).holder)  # round i: its lock file in place
        lock.unlink()
        seen = probe(tmp_path)
        described = describe_holder(seen.holder)  # while the shell runs: its command line
        said = a_writer_s_refusal(tmp_path)
    assert seen.held, seen
    # Round i: the command line was unquoted here, shell-quoted where the lock file is in
    # place; and there the taker was "pid N (pid N (command line unknown), which ...)".
    named = f"pid {shell.pid} ({KEPT_BY.format(lock=lock)})"
    assert described.startswith(named), seen.holder
    (taker,) = takers
    assert live.startswith(
        f"{named}, which keeps open the lock taken by pid {taker} (command line unknown), "
        "which published no details in the lock file (it took the lock on a full disk, "
    ), live
    assert f"a backup); pid {taker} no longer holds it (it exited, or closed it)" in live, live
    assert f"data root {tmp_path} is held by {named}" in said, said
    assert f"through its lock file {lock}, which was deleted while it held it" in said, said


def test_a_lock_file_deleted_under_a_shell_that_keeps_its_lock_on_an_overlay_keeps_a_writer_off(
    beside_a_kept_lock: dict,
) -> None:
    # Found by reading `_keeping` beside `_on_device` (round f's two fixes), then by
    # experiment: on an overlay of two filesystems (a file's device is its layer's, not its
    # directory's), the keeper of an exited taker's lock was looked for among descriptors of
    # a file on the directory's device, and found none. With the lock file deleted under a
    # shell keeping its lock (`exec 9<lock; flock 9`), `app status` said "nobody" and a
    # writer took the root beside it ("acquired").
    seen = beside_a_kept_lock
    said = json.dumps(seen, indent=1)
    directory, file = seen["overlay_devices"]
    assert directory != file, said  # the case itself
    if not seen["listed"]:
        pytest.skip("this PID namespace's /proc/locks hides a lock whose taker exited")
    named = f"pid {seen['overlay_shell']} (bash -c 'exec 9<"
    assert seen["overlay_kept_deleted"].startswith(named), said
    assert "which published no details in the lock file" in seen["overlay_kept_deleted"], said
    writer = seen["overlay_kept_writer"]
    assert writer.startswith("cannot empty the trash: data root "), said
    assert f"/ov_merged/root is held by {named}" in writer, said
    assert "/ov_merged/root/.server.lock, which was deleted while it held it" in writer, said
    assert f"stop it (kill {seen['overlay_shell']})" in writer, said


def test_a_holder_s_command_line_with_a_newline_writes_no_line_of_its_own(tmp_path: Path) -> None:
    # Found by reading round i's `_command_line` (now `command_line`, `shlex.join`): a word
    # with a newline was quoted as it was, newline and all, where the words had been joined
    # with spaces; and `fail` (every command's refusal) and `_echo` (`app status`) print each
    # line of a message as a line of its own. A holder run as `flock lock cmd
    # $'x\nerror: ...'` (any process that can open the lock file) wrote "error: ..." as a
    # line of the app's into every refusal that named it. Its escape and right-to-left
    # override were printed as escapes (`printable`); the newline was not. Now each word that
    # is not printable is written as `shell_word` writes it, which a shell pastes back.
    (tmp_path / LOCK_FILE).touch()
    forged = "x\nerror: forged\x1b]0;t\x07\u202e"
    holder = subprocess.Popen(
        ["flock", LOCK_FILE, "sh", "-c", "echo locked; read x", "sh", forged, "e\n"],
        cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        described = describe_holder(probe(tmp_path).holder)
        said = a_writer_s_refusal(tmp_path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
    word = r"""'x\012error: forged\033]0;t\007\342\200\256'"""
    shown = f"""flock {LOCK_FILE} sh -c 'echo locked; read x' sh "$(printf -- {word})" """
    # A newline that ends a word, which a command substitution would drop, as text.
    named = f"""pid {holder.pid} ({shown}"$(printf -- 'e')"'\\n')"""
    assert described.startswith(f"{named}, which published no details"), described
    assert f"data root {tmp_path} is held by {named}, which published" in said, said
    for text in (described, said):
        assert text.isprintable(), text  # no newline, escape or override, as they are
    pasted = subprocess.run(
        ["sh", "-c", f'printf %s "$(printf -- {word})"'], capture_output=True, check=True
    )
    assert pasted.stdout == forged.encode()  # what the holder was given, in any POSIX shell


def test_a_lock_file_moved_within_the_root_under_a_shell_that_keeps_its_lock_keeps_a_writer_off(
    tmp_path: Path,
) -> None:
    # Round f's not-stopped row, by its own steps: the lock file of a shell that keeps its
    # lock past its `flock` (`exec 9<lock; flock 9`) moved aside within the root (`mv
    # .server.lock .server.lock.old`, as one sets a stale pid file aside). Its keeper was
    # looked for among descriptors of a file named `.server.lock` only: `app status` said
    # "nobody" and a writer took the root beside the shell ("acquired"). A descriptor of a
    # file in the root's directory (as the descriptor's link names it) counts too now.
    lock = tmp_path / LOCK_FILE
    with a_shell_keeping_its_lock(lock) as (shell, _):
        aside = lock.with_name(f"{LOCK_FILE}.old")
        lock.rename(aside)
        seen = probe(tmp_path)
        described = describe_holder(seen.holder)  # while the shell runs: its command line
        said = a_writer_s_refusal(tmp_path)
    assert seen.held, seen
    named = f"pid {shell.pid} ({KEPT_BY.format(lock=lock)})"
    assert described.startswith(named), seen.holder
    assert f"data root {tmp_path} is held by {named}" in said, said
    assert (
        f"through its lock file {lock}, which was moved to {aside} while it held it (never move "
        "or delete the lock file: a free one is never in the way); stop it "
    ) in said, said  # not "it stops within lock_check_seconds": only the app's holder does


def test_a_lock_file_moved_into_a_directory_of_the_root_under_a_shell_keeps_a_writer_off(
    tmp_path: Path,
) -> None:
    # Found by trying round n's fix another road (red team 71 on regress, round q): the lock
    # file of a shell that keeps its lock past its `flock` (`exec 9<lock; flock 9`) moved
    # into a directory of the root (`mkdir old; mv .server.lock old/.server.lock.old`), not
    # beside it. Its keeper was looked for among descriptors of files in the root's
    # directory only, and a holder that published nothing with its file anywhere but there
    # was taken for another program's lock moved out of the root: `app status` said
    # "nobody" and a writer took the root beside the shell. A file beneath the root's
    # directory counts now, where it reads as a lock file (empty, or a holder's JSON):
    # another program's flock on a file of data there does not keep a writer off.
    lock = tmp_path / LOCK_FILE
    lock.touch()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "data.bin").write_bytes(b"data")
    other = subprocess.Popen(
        ["flock", "old/data.bin", "sh", "-c", "echo locked; read x"],
        cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    stack = contextlib.ExitStack()
    try:
        shell, _ = stack.enter_context(a_shell_keeping_its_lock(lock))
        aside = tmp_path / "old" / f"{LOCK_FILE}.old"
        lock.rename(aside)
        seen = probe(tmp_path)
        said = a_writer_s_refusal(tmp_path)
        stack.close()  # the shell gone: its lock with it
        assert other.stdout is not None
        assert other.stdout.readline() == "locked\n"
        with RootLock(tmp_path, kind="maintenance", profile="testing").acquire(
            wanted="empty the trash", timeout=0.0
        ):
            pass  # only another program's lock on a file of data is left beneath the root
    finally:
        stack.close()
        assert other.stdin is not None
        other.stdin.close()
        other.wait()
    assert seen.held, seen
    named = f"pid {shell.pid} ({KEPT_BY.format(lock=lock)})"
    assert f"data root {tmp_path} is held by {named}" in said, said
    assert (
        f"through its lock file {lock}, which was moved to {aside} while it held it (never move "
        f"or delete the lock file: a free one is never in the way); stop it (kill {shell.pid})"
    ) in said, said


def test_a_lock_file_deleted_under_a_shared_holder_keeps_a_writer_off(tmp_path: Path) -> None:
    # Found by trying round n's steps with `flock -s` (red team 71 on regress, round q): a
    # shared lock keeps a writer off as long as its file is at the root's path, but the look
    # for the holder of a deleted or moved lock file read the exclusive locks only: with
    # `rm .server.lock` under `flock -s .server.lock <backup>`, `app status` said "nobody"
    # and a writer took the root beside the backup. Shared locks are read there too.
    lock = tmp_path / LOCK_FILE
    lock.touch()
    backup = subprocess.Popen(
        ["flock", "-s", str(lock), "sh", "-c", "echo locked; read x"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert backup.stdout is not None
        assert backup.stdout.readline() == "locked\n"
        lock.unlink()
        seen = probe(tmp_path)
        said = a_writer_s_refusal(tmp_path)
    finally:
        assert backup.stdin is not None
        backup.stdin.close()
        backup.wait()
    assert seen.held, seen
    named = f"pid {backup.pid} (flock -s {lock} sh -c 'echo locked; read x')"
    assert f"data root {tmp_path} is held by {named}, which published no details" in said, said
    assert (
        f"through its lock file {lock}, which was deleted while it held it (never delete the "
        f"lock file: a free one is never in the way); stop it (kill {backup.pid})"
    ) in said, said


def test_another_program_s_flock_on_an_empty_file_of_a_session_keeps_no_writer_off(
    tmp_path: Path,
) -> None:
    # Found by attacking round q's rule in the other direction (red team 71 on regress,
    # round u): a file beneath the root that reads as a lock file (empty) and is flocked,
    # exclusively or shared, counted as the root's lock file moved there, whatever its name.
    # An empty file of a session's (an upload of no bytes, a `.lock` a user's script keeps
    # there) under `flock`, with no writer on the root: `app status` said it held, and every
    # writer was refused, told to kill the script. Only a file that keeps the lock file's name
    # in its own (`mv .server.lock old/.server.lock.old`) counts there now.
    files = tmp_path / "sessions" / "abc123" / "files"
    files.mkdir(parents=True)
    (files / "empty.txt").touch()
    (files / ".lock").touch()
    commands = [
        ["flock", *shared, str(files / name), "sh", "-c", "echo locked; read x"]
        for shared, name in (([], "empty.txt"), (["-s"], ".lock"))
    ]
    scripts = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for command in commands
    ]
    try:
        for script in scripts:
            assert script.stdout is not None
            assert script.stdout.readline() == "locked\n"
        seen = probe(tmp_path)
        with RootLock(tmp_path, kind="maintenance", profile="testing").acquire(
            wanted="empty the trash", timeout=0.0
        ):
            taken = True
    finally:
        for script in scripts:
            assert script.stdin is not None
            script.stdin.close()
            script.wait()
    assert not seen.held, seen
    assert taken
