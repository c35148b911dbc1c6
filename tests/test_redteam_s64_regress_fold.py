"""Red team 64 on regress, case-folded roots (branch rt-regress26): red team 64 on the guard's
look for a live holder of a root named in another case on a FUSE filesystem that folds it.

What broke (as root, outside any run in a PID namespace with its own ``/proc``, in a private
mount namespace, on an exFAT filesystem served by ``mount.exfat-fuse``): a live holder of
``<mount>/App/prod``, the root named ``<mount>/app/PROD``. Red team 64 on the guard
(``app.lock._held_under_another_name``) took the holder's open file for this one only where
both showed the same size, times and bytes at the moment of each look, a holder's JSON. So:

- a lock file that shows no holder's JSON under a live holder (emptied by hand, or one whose
  holder has taken the flock and not yet written it, the instant a server starts) was no
  holder's: ``APP_DATA_ROOT=<mount>/app/PROD app data purge --yes-i-mean-it`` moved the live
  holder's sessions to the trash (exit 0) (and a writer opened the root beside it, by
  hand);
- a holder that rewrote its lock file between the writer's look at its own file and its look
  at the holder's (``RootLock.update(port=...)``, as a server publishes its port once bound)
  showed another size and other times: the writer took the root beside it;
- a holder in a mount namespace of its own that shows the filesystem at another point (a
  container's volume, a service's ``BindPaths=``) published a root, and named its lock file
  by a path, that are none of this process's: the purge moved its sessions beside it;
- layer 2: development's root named in the settings through a second mount of the filesystem
  (a bind mount at another point), in another case: the paths did not fold alike, and the
  identities differ per spelling, so ``app doctor`` said "every data root is distinct".

What changed (``app.lock._one_entry``): the holder's open file, as it names it, is looked up
here too; where it reaches that very file, its path and this one are alike once each part is
put in NFC and case-folded, and at each part spelled otherwise both spellings reach an entry
of a parent that lists one entry of that folded name, it is this file, whatever it shows (as
``app.config._folded_as_one`` tells two roots apart); a holder's path through another mount of
the filesystem is first put in this process's terms, by its mount's point and root in each
mount table (``app.lock._seen_from_here``); and ``app.config._folded_as_one`` puts a root
shown by another mount of one FUSE device in the other's terms the same way
(``app.config._through_a_s_mount``: read only for two roots on one device without an id).
The refusal (75) names the holder by
the kernel's pid, and that it published no details. A filesystem that keeps case apart (a
bindfs mirror of a directory holding ``App/prod`` and ``app/PROD``, two entries) keeps the two
roots apart as before (no false refusal).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_redteam_s59_guard import outside_any_run
from test_redteam_s64_guard import MOUNTED, exfat_image

#: PID 1 of a PID namespace with its own /proc, in a private mount namespace (outside any
#: run): an exFAT image served by exfat-fuse at work/v, production's root at v/App/prod held
#: by a writer of a fork (as a server holds it), every writer through v/app/PROD; and a bindfs
#: mirror of a directory that keeps case apart. argv: work, image.
FOLDED = (
    MOUNTED
    + r"""
import fcntl
root = mount / "App" / "prod"
root.mkdir(parents=True)
# A FUSE mirror (bindfs) of a directory that keeps case apart: App/prod and app/PROD there are
# two roots.
kept, mirror = work / "kept", work / "m"
(kept / "App" / "prod").mkdir(parents=True)
(kept / "app" / "PROD").mkdir(parents=True)
mirror.mkdir()
subprocess.run(["bindfs", str(kept), str(mirror)], check=True, capture_output=True)
import app.check, app.dataroot, app.lock, app.store  # once, before the fork: both use them
load(serving=False)

# A fork that holds a writer on production's root (a session in it) and on the mirror's
# App/prod, as a server holds its root, and publishes a port when asked.
read, write = os.pipe()
ask, asked = os.pipe()
holder = os.fork()
if holder == 0:
    os.close(read)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with open_storage(load(serving=False), writer=True) as store:
        store.create_session("a review", {})
        os.environ["APP_DATA_ROOT"] = str(mirror / "App" / "prod")
        with open_storage(load(serving=False), writer=True):
            os.write(write, b"held")
            while os.read(ask, 1):
                lock = next(one for one in app.lock.held_here() if one.root == root)
                lock.update(port=43210)  # "null" -> 5 digits: a new size
                os.write(write, b"done")
    os._exit(0)
os.close(write)
assert os.read(read, 4) == b"held"
results = {"before": names(root / "sessions"), "holder": holder}
other = mount / "app" / "PROD"
# The writer's look, its flock taken on its own inode number, with the holder's rewrite of its
# JSON between the writer's stat of its file and its look at the holder's (the order of
# `RootLock._publish`, with a server's `update(port=...)` in between).
fd = os.open(other / ".server.lock", os.O_RDWR | os.O_CLOEXEC)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
found = os.fstat(fd)
os.write(asked, b"x")
assert os.read(read, 4) == b"done"
seen = app.lock._held_through_another_device(found, fd)
results["REWRITTEN"] = seen and {k: seen.get(k) for k in ("pid", "port", "lock_file_there")}
os.close(fd)
# The holder's JSON gone from its lock files (emptied by hand; or not written yet).
os.truncate(root / ".server.lock", 0)
os.truncate(mirror / "App" / "prod" / ".server.lock", 0)
there = {"APP_DATA_ROOT": str(other)}
results["PURGE"] = run(["data", "purge", "--yes-i-mean-it"], **there)
# On the mirror that keeps case apart, the other root is opened beside the held one.
results["APART"] = writer(APP_DATA_ROOT=str(mirror / "app" / "PROD"))
# A holder in a mount namespace of its own that shows the filesystem at another point (a
# container's volume): its path for its lock file is none of this process's.
(mount / "Two" / "prod").mkdir(parents=True)
(work / "c").mkdir()
read, write = os.pipe()
boxed = os.fork()
if boxed == 0:
    import ctypes
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x00020000) or libc.mount(bytes(mount), bytes(work / "c"), None, 4096, None):
        os._exit(1)  # CLONE_NEWNS, then MS_BIND
    os.environ["APP_DATA_ROOT"] = str(work / "c" / "Two" / "prod")
    with open_storage(load(serving=False), writer=True) as store:
        store.create_session("a boxed review", {})
        os.write(write, b"held")
        while True:
            signal.pause()
os.close(write)
assert os.read(read, 4) == b"held"
results["boxed"] = boxed
boxed_other = {"APP_DATA_ROOT": str(mount / "two" / "PROD")}
results["BOXED"] = run(["data", "purge", "--yes-i-mean-it"], **boxed_other)
results["boxed_after"] = names(mount / "Two" / "prod" / "sessions")
stop(boxed)
stop(holder)
results["after"] = names(root / "sessions")
results["trash"] = names(root / ".trash")
# Layer 2: development's root through a second mount of the filesystem, in another case.
bound = work / "w"
bound.mkdir()
subprocess.run(["mount", "--bind", str(mount), str(bound)], check=True)
settings = Path(os.environ["APP_SETTINGS_DIR"]) / "settings.toml"
settings.write_text(settings.read_text().replace(
    'data_root = "data/development"', f'data_root = "{bound / "app" / "PROD"}"'))
results["DOCTOR"] = run(["--profile", "development", "doctor"])
subprocess.run(["umount", str(bound)], check=True)
subprocess.run(["umount", str(mount)], check=True)
subprocess.run(["umount", str(mirror)], check=True)
print("RESULTS", json.dumps(results))
"""
)


def test_a_holder_whose_lock_file_shows_other_bytes_is_found_under_another_case(
    tmp_path: Path,
) -> None:
    if shutil.which("bindfs") is None:
        pytest.skip("needs bindfs")
    image = exfat_image(tmp_path)
    root = tmp_path / "v" / "App" / "prod"
    seen = outside_any_run(tmp_path, root, FOLDED, str(tmp_path), str(image))
    said = json.dumps(seen, indent=1)
    pid, other = seen["holder"], tmp_path / "v" / "app" / "PROD"
    # Before the fix: None (the holder's file showed another size and other times).
    assert seen["REWRITTEN"] == {
        "pid": pid,
        "port": 43210,
        "lock_file_there": f"{root}/.server.lock",
    }, said
    # Before the fix: the purge moved the live holder's session to the trash (exit 0) and
    # the writer opened the root beside it.
    assert seen["before"], said
    assert seen["after"] == seen["before"], said
    assert seen["trash"] == [], said
    held = (
        f"data root {other} is held by pid {pid} (",
        (
            "which published no details in the lock file (it took the lock on a full disk, is "
            "releasing it, or the file was emptied by hand; or it is not a holder of the app "
            "but a program that writes nothing there, as `flock` around a backup), through "
            "its lock file "
            f"{root}/.server.lock, which is {other}/.server.lock under another name on the "
            f"FUSE filesystem mounted at {tmp_path / 'v'} (one that folds case"
        ),
        f"name the root as its holder does; stop it (kill {pid})",
    )
    code, out = seen["PURGE"]
    assert code == 75, said
    assert "cannot purge every session" in out, said
    for text in held:
        assert text in out, said
    # A holder that shows the filesystem at another point, in a mount namespace of its own:
    # before the fix, its path was none of this process's, and the purge went on (exit 0).
    code, out = seen["BOXED"]
    assert code == 75, said
    assert len(seen["boxed_after"]) == 1, said
    assert f"is held by pid {seen['boxed']}, kind maintenance, profile production" in out, said
    assert f"through its lock file {tmp_path / 'c' / 'Two' / 'prod'}/.server.lock, which" in out
    # Layer 2, development's root through a bind mount of the filesystem at another point, in
    # another case: before the fix, `app doctor` said "every data root is distinct" (exit 0).
    code, out = seen["DOCTOR"]
    assert code == 78, said
    assert (
        "profiles 'development' and 'production' share the same data root, spelled two ways "
        f"that the filesystem of {tmp_path / 'w'} takes for one (it folds case"
    ) in out, said
    assert f"`ls -a {tmp_path / 'w'}` lists the one entry" in out, said
    assert f"development -> {tmp_path / 'w' / 'app' / 'PROD'} (from settings.toml" in out, said
    # A filesystem that keeps case apart: two roots, the other one opened beside the held one.
    assert seen["APART"] == [0, "opened"], said
