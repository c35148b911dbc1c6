"""Red team 59 on regress, the guard (branch rt-regress4): false refusals of red team 59's
new checks (rt-guard42's holder through another device, rt-children5's root inside another).

Outside any run (PID 1 of a PID namespace with its own ``/proc``, in a mount namespace of
its own where it mounts), roots of profile development in the test's directory, a writer
opened on each (``open_storage(..., writer=True)``, as ``app serve`` and every writing
command do, their locks durable):

What broke, refused though nothing was shared:

- two overlays over one lower layer that holds a data root (two containers of one image, or
  two working copies of one template root), each with its own upper directory, on a kernel
  before 6.6 or with ``uuid=off``/``uuid=null``: the overlay reports its upper filesystem's
  id and a copied-up file's lower inode number, so the lock file of one looked like the
  other's seen "through another device". A writer of the second root, which no process
  held, was refused (``data_root_in_use``; ``app data purge`` there exited 75) as held by
  the first one's writer, telling the user that "its two mounts overwrite each other's
  writes" and to unmount it. Two overlays are two filesystems whose writes never meet: a
  holder through another device now counts only where the two are not two overlays with
  two upper directories (as two loop devices of two files already did not).
- a root beneath a directory holding an unrelated file named ``.server.lock`` (another
  program's pid file in a home directory or ``/tmp``), no profile stamp beside it: the
  writer's open was refused as "inside data root <that directory>", and ``app serve`` of a
  new root there could never start. A directory above counts as a data root now where it
  has a stamp, or its ``.server.lock`` is locked by a process or holds a holder's JSON (a
  crashed root whose stamp was lost stays refused, and this test keeps it so).

What broke, let through beside a live holder:

- a root on an overlay (a container's root filesystem), held by a writer, named through the
  overlay's upper directory (``/var/lib/docker/overlay2/<id>/diff/...`` on a host): a
  second writer opened it, and the other way round (held through the upper directory,
  opened through the overlay), and a root of the image's layer held through the overlay and
  opened through the lower directory. The flock is the overlay's inode's, another inode to the
  kernel than its upper file's, and the overlay reports a filesystem id of its own (Linux
  6.6 and later), so red team 59's holder through another device saw nothing. A holder's
  open file that is this one, one seen through an overlay and the other in one of its layer
  directories (by the overlay's mount, its upper and lower directories and the path below
  it, device and inode), now holds it: ``data_root_in_use`` names both paths and says not to unmount
  anything (``findmnt`` there would name the host's own filesystem) but to work through
  the holder's path.
- red team 59's own case, a live root's disk image attached again through a second loop
  device, on XFS (mounted with ``-o nouuid``, its id taken from the device) and btrfs (a
  temporary id for the second device, Linux 6.7 and later): each mount reported another
  filesystem id, and a second writer opened the root. Two loop devices that read one file
  at one offset now count as one filesystem whatever ids they report (btrfs's anonymous
  device resolved to its block device through the mount table); a btrfs snapshot of the
  live root (the same inode numbers, another subvolume on the same device) still opens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import copy_project_settings

#: PID 1 of a PID namespace with its own /proc, in a private mount namespace: outside any
#: test run (every lock durable), each root in the test's directory. argv: work.
CHILD = r'''
import json, os, subprocess, sys
from pathlib import Path

from app.config import load
from app.dataroot import syncfs
from app.storage import open_storage

work = Path(sys.argv[1])
results = {}


def forked(then):
    """`then()` in a fork (the parent keeps its writer open): what it returned."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.write(write, then().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as output:
        said = output.read()
    os.waitpid(pid, 0)
    return said


def opened(root):
    os.environ["APP_DATA_ROOT"] = str(root)
    try:
        with open_storage(load(serving=False), writer=True):
            return "opened"
    except Exception as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())}"


# 1. Two overlays over one lower layer holding a root, each with its own upper directory.
lower = work / "lower"
os.environ["APP_DATA_ROOT"] = str(lower / "root")
with open_storage(load(serving=False), writer=True) as store:
    store.create_session("the template's", {})
mounted = []
for name in ("one", "two"):
    for part in ("upper", "work", "merged"):
        (work / name / part).mkdir(parents=True)
    options = f"lowerdir={lower},upperdir={work}/{name}/upper,workdir={work}/{name}/work"
    done = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options + ",uuid=off",
                           str(work / name / "merged")], capture_output=True, text=True)
    if done.returncode == 0:
        mounted.append(name)
if mounted == ["one", "two"]:
    one, two = work / "one/merged/root", work / "two/merged/root"
    os.environ["APP_DATA_ROOT"] = str(one)
    with open_storage(load(serving=False), writer=True):
        results["SECOND"] = forked(lambda: opened(two))
    subprocess.run(["umount", str(work / "one/merged"), str(work / "two/merged")], check=True)
else:
    results["SECOND"] = None  # no overlay with uuid=off here

# 2. A root beneath an unrelated file named as a lock file; one beneath a crashed root's.
(work / "home").mkdir()
(work / "home" / ".server.lock").write_text("4242\n")  # another program's pid file
results["UNRELATED"] = opened(work / "home" / "project" / "data" / "root")
(work / "crashed").mkdir()
(work / "crashed" / ".server.lock").write_text(json.dumps({"kind": "server", "pid": 1}))
results["CRASHED"] = opened(work / "crashed" / "inner")
# 3. A root on an overlay (a container's), held, named through the overlay's upper directory.
for part in ("lower3", "upper3", "work3", "merged3"):
    (work / part).mkdir()
os.environ["APP_DATA_ROOT"] = str(work / "lower3" / "image")  # a root of the image's layer
with open_storage(load(serving=False), writer=True) as store:
    store.create_session("the image's", {})
subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={work}/lower3,"
                f"upperdir={work}/upper3,workdir={work}/work3", str(work / "merged3")], check=True)
os.environ["APP_DATA_ROOT"] = str(work / "merged3" / "root")
with open_storage(load(serving=False), writer=True) as store:
    store.create_session("the container's", {})
    results["HOLDER"] = os.getpid()
    results["UPPER"] = forked(lambda: opened(work / "upper3" / "root"))
os.environ["APP_DATA_ROOT"] = str(work / "upper3" / "root")
with open_storage(load(serving=False), writer=True):  # the other way round
    results["MERGED"] = forked(lambda: opened(work / "merged3" / "root"))
os.environ["APP_DATA_ROOT"] = str(work / "merged3" / "image")
with open_storage(load(serving=False), writer=True):  # its lock file copied up, not the rest
    results["LOWER"] = forked(lambda: opened(work / "lower3" / "image"))
subprocess.run(["umount", str(work / "merged3")], check=True)
# 4. A live root's disk image attached through a second loop device: XFS (`-o nouuid`) and
# btrfs (a temporary id, Linux 6.7+) report another id there; a btrfs snapshot beside it.
for fs in ("xfs", "btrfs"):
    image, first, second = work / f"{fs}.img", work / f"{fs}_a", work / f"{fs}_b"
    with image.open("wb") as made:
        made.truncate(300 << 20)
    if subprocess.run([f"mkfs.{fs}", "-q", str(image)], capture_output=True).returncode:
        results[fs] = None  # no mkfs for it here
        continue
    first.mkdir(); second.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(first)], check=True)
    top = first
    if fs == "btrfs":
        subprocess.run(["btrfs", "-q", "subvolume", "create", str(first / "vol")], check=True)
        top = first / "vol"
    os.environ["APP_DATA_ROOT"] = str(top / "root")
    with open_storage(load(serving=False), writer=True) as store:
        store.create_session("the disk's", {})
        syncfs(first)
        device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                                capture_output=True, text=True).stdout.strip()
        nouuid = ["-o", "nouuid"] if fs == "xfs" else []
        subprocess.run(["mount", *nouuid, device, str(second)], check=True)
        results[fs] = forked(lambda: opened(second / top.relative_to(first) / "root"))
        if fs == "btrfs":
            subprocess.run(["btrfs", "-q", "subvolume", "snapshot", str(top), str(first / "snap")],
                           check=True)
            results["SNAPSHOT"] = forked(lambda: opened(first / "snap" / "root"))
    subprocess.run(["umount", str(second)], check=True)
    subprocess.run(["losetup", "-d", device], check=True)
    subprocess.run(["umount", str(first)], check=True)
print("RESULTS", json.dumps(results))
'''


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs root, unshare and mount for overlays in a mount namespace")
    work = tmp_path_factory.mktemp("regress_guard")
    settings = copy_project_settings(work / "settings")
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": str(settings)}
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "-p", "-f", "--mount-proc",
         sys.executable, "-c", CHILD, str(work)],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert found, done.stdout + done.stderr
    return {"work": str(work), **json.loads(found[0].removeprefix("RESULTS "))}


def test_two_overlays_of_one_lower_root_are_two_roots(seen: dict) -> None:
    if seen["SECOND"] is None:
        pytest.skip("this kernel mounts no overlay with uuid=off")
    # Before the fix: "DataRootInUseError: cannot open the data root as a tests process: data
    # root <two> is held by pid N ..., through its lock file <one>/.server.lock, which is
    # <two>/.server.lock on the same filesystem mounted again through another device ...".
    assert seen["SECOND"] == "opened", json.dumps(seen, indent=1)


def test_an_unrelated_lock_file_above_a_root_is_no_data_root(seen: dict) -> None:
    said = json.dumps(seen, indent=1)
    # Before the fix: "DataRootStateError: data root <work>/home/project/data/root: it lies
    # inside data root <work>/home (it holds <work>/home/.server.lock) ...".
    assert seen["UNRELATED"] == "opened", said
    crashed = Path(seen["work"]) / "crashed"
    assert seen["CRASHED"].startswith(
        f"DataRootStateError: data root {crashed}/inner: it lies inside data root {crashed} "
        f"(it holds {crashed}/.server.lock), and no data root may hold another; nothing was "
        "opened or changed"
    ), said


def test_a_container_s_held_root_through_its_overlay_s_upper_directory_is_refused(
    seen: dict,
) -> None:
    said = json.dumps(seen, indent=1)
    work = Path(seen["work"])
    upper, merged = work / "upper3" / "root", work / "merged3" / "root"
    # Before the fix: "opened", a second writer beside the live one: the flock is the
    # overlay's inode's, and the overlay reports an id of its own (Linux 6.6 and later).
    held = (
        f"DataRootInUseError: cannot open the data root as a maintenance process: data root "
        "{} is held by pid 1, kind maintenance, profile development, host "
        f"{os.uname().nodename}, since "
    )
    why = (
        "which is {}/.server.lock: one of the two is the file seen through an overlay (a "
        "container's root), the other the same file in a layer directory of that overlay, its "
        "upper or a lower one (device "
    )
    stop = (
        "do not use this path, and do not stop that process for it: the overlay and its "
        "layer directory show one file, and what is written through a layer directory while "
        "the overlay is mounted is undefined. Work through the holder's path (inside its "
        "container: `docker exec`, `nsenter`), or stop it first. `app status` shows the holder"
    )
    image = [work / "lower3" / "image", work / "merged3" / "image"]
    for tag, here, there in [
        ("UPPER", upper, merged),
        ("MERGED", merged, upper),
        ("LOWER", *image),
    ]:
        assert seen[tag].startswith(held.format(here)), said
        assert f"through its lock file {there}/.server.lock, {why.format(here)}" in seen[tag]
        assert seen[tag].endswith(stop), said


@pytest.mark.parametrize("fs", ["xfs", "btrfs"])
def test_a_live_root_through_a_second_loop_device_is_refused_whatever_id_it_reports(
    seen: dict, fs: str
) -> None:
    if seen[fs] is None:
        pytest.skip(f"no mkfs.{fs} here")
    said = json.dumps(seen, indent=1)
    work = Path(seen["work"])
    below = "vol/root" if fs == "btrfs" else "root"
    # Before the fix: "opened", a second writer on the same bytes through a second superblock.
    assert seen[fs].startswith(
        "DataRootInUseError: cannot open the data root as a maintenance process: data root "
        f"{work}/{fs}_b/{below} is held by pid 1, kind maintenance, profile development"
    ), said
    assert (
        f"through its lock file {work}/{fs}_a/{below}/.server.lock, which is "
        f"{work}/{fs}_b/{below}/.server.lock on the same filesystem mounted again through "
        "another device"
    ) in seen[fs], said
    assert "its two mounts overwrite each other's writes" in seen[fs], said
    if fs == "btrfs":
        # A snapshot of the live root: its inode numbers, another subvolume, its own writes.
        assert seen["SNAPSHOT"] == "opened", said
