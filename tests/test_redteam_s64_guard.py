"""Red team 64 on the guard (branch rt-guard64): the data root behind a name, one directory
under two names the kernel keeps apart.

What broke (as root, outside any run in a PID namespace with its own ``/proc``, in a private
mount namespace): a live production server on an exFAT filesystem served by FUSE
(``mount.exfat-fuse``, Debian's exfat-fuse; fusefat does the same), whose root is
``<mount>/App/prod``, and the same root named ``<mount>/app/PROD``. exFAT folds case, so both
names reach one directory; libfuse numbers a file by the name it was looked up by (no
``use_ino``), so the lock file has an inode number under each spelling, and the kernel keeps
a flock on each: the server's lock was not seen through the other spelling.
``APP_DATA_ROOT=<mount>/app/PROD app --profile production data purge --yes-i-mean-it`` moved
the live server's sessions to the trash, ``app data empty-trash --yes-i-mean-it`` removed
them, ``open_storage(..., writer=True)`` and a second ``app serve`` took the root beside the
server, and ``app status`` said "held by: nobody". Red team 59's look for the holder of a lock
file under another device, and red team 60's for one seen through a FUSE mirror, both look
for the same inode number only.

What changed (``app.lock._held_under_another_name``): taking a root's lock (outside a run's
sandbox, and in it on another filesystem than the sandbox's) and a probe of a free lock read
``/proc/locks`` for an exclusive flock on another inode number of the same device, where that
device is a FUSE mount; the holder's open file counts as this one where it shows the same
size, modification and change times and the same bytes, a live holder's JSON (as red team
60 tells a mirror from a copy). The refusal (``data_root_in_use``, 75) names the holder, its
lock file's path, the mount, why (a filesystem that folds case shows one file under each
spelling), and to name the root as its holder does; ``app status`` names the holder. Another
root on the same filesystem, held beside it, is opened as before (no false refusal).

And layer 2: development's root named in the settings as ``<mount>/app/PROD`` beside
production's ``<mount>/App/prod``: red team 22 compares roots by device and inode, which
exfat-fuse gives per spelling, so ``app doctor`` said "every data root is distinct" and only
production's stamp stood. Roots whose paths are alike once folded (NFC, ``str.casefold``)
are now looked at part by part (``app.config._folded_as_one``): where both spellings reach
an entry and the parent lists one entry of that folded name, they are one directory,
refused (``data_root_overlap``, 78) naming the directory and that it folds case. A root
spelled apart on the same filesystem stays distinct.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_redteam_s59_guard import assert_writers_refused, outside_any_run
from test_redteam_s60_guard import COMMON

#: COMMON, then an exFAT image (argv[2]) served by exfat-fuse at ``mount``, work/v (argv[1]
#: is work).
MOUNTED = (
    COMMON
    + r"""
work, image = map(Path, sys.argv[1:3])
mount = work / "v"
mount.mkdir()
device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                        capture_output=True, text=True).stdout.strip()
subprocess.run(["mount.exfat-fuse", device, str(mount)], check=True, capture_output=True)
# Detached once the daemon lets go of it (autoclear), however this script ends.
subprocess.run(["losetup", "-d", device], check=True)
"""
)

#: PID 1 of a PID namespace with its own /proc, in a private mount namespace (outside any
#: run): an exFAT image served by exfat-fuse at work/v, production's root at v/App/prod held
#: by a writer of another process (as a server holds it), every writer through v/app/PROD.
#: argv: work, image.
FOLDED = (
    MOUNTED
    + r"""
root = mount / "App" / "prod"
root.mkdir(parents=True)
import app.check, app.dataroot, app.store  # once, before the fork: both use them
load(serving=False)
read, write = os.pipe()
holder = os.fork()
if holder == 0:  # production's holder: a writer kept open, a session in it, until SIGTERM
    os.close(read)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with open_storage(load(serving=False), writer=True) as store:
        store.create_session("a review", {})
        os.write(write, b"held")
        while True:
            signal.pause()
os.close(write)
assert os.read(read, 4) == b"held"
results = {"before": names(root / "sessions"), "holder": holder}
there = {"APP_DATA_ROOT": str(mount / "app" / "PROD")}
results["PURGE"] = run(["data", "purge", "--yes-i-mean-it"], **there)
results["TRASH"] = run(["data", "empty-trash", "--yes-i-mean-it"], **there)
results["STATUS"] = run(["status"], **there)
results["WRITER"] = writer(**there)
# Another root on the same filesystem, beside the live one: no false refusal.
os.environ["APP_DATA_ROOT"] = str(mount / "Other")
with open_storage(load(serving=False), writer=True):
    results["OTHER"] = "opened"
# A copy of the held root beside it (`cp -a`: its lock file's bytes and times kept): another
# root, not refused as the held one.
import shutil
shutil.copytree(root, mount / "App" / "prod.bak")
results["COPY"] = run(["data", "purge", "--yes-i-mean-it"],
                      APP_DATA_ROOT=str(mount / "App" / "prod.bak"))
os.kill(holder, signal.SIGTERM)
os.waitpid(holder, 0)
results["after"] = names(root / "sessions")
results["trash"] = names(root / ".trash")
# Layer 2: development's root named in settings as production's, in another case.
os.environ.pop("APP_DATA_ROOT")
settings = Path(os.environ["APP_SETTINGS_DIR"]) / "settings.toml"
text = settings.read_text()
settings.write_text(text.replace('data_root = "data/development"',
                                 f'data_root = "{mount / "app" / "PROD"}"'))
for tag, args in [("DOCTOR", ["doctor"]), ("DEV", ["data", "purge", "--yes-i-mean-it"])]:
    results[tag] = run(["--profile", "development", *args])
settings.write_text(text.replace('data_root = "data/development"',
                                 f'data_root = "{mount / "app"}"'))
results["INSIDE"] = run(["--profile", "development", "doctor"])
settings.write_text(text.replace('data_root = "data/development"',
                                 f'data_root = "{mount / "app" / "prod2"}"'))
results["APART"] = run(["--profile", "development", "doctor"])
results["dev_after"] = names(root / "sessions")
subprocess.run(["umount", str(mount)], check=True)
print("RESULTS", json.dumps(results))
"""
)


def _needs_exfat_fuse() -> None:
    needed = ("unshare", "losetup", "mkfs.exfat", "mount.exfat-fuse")
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in needed):
        pytest.skip("needs root, unshare, losetup, mkfs.exfat and mount.exfat-fuse (exfat-fuse)")
    if not Path("/dev/fuse").exists():
        pytest.skip("needs /dev/fuse for exfat-fuse")


def exfat_image(tmp_path: Path) -> Path:
    """An empty exFAT image of 8 MiB in `tmp_path`, for `MOUNTED` (skips where exfat-fuse,
    root or /dev/fuse is missing)."""
    _needs_exfat_fuse()
    import subprocess

    image = tmp_path / "exfat.img"
    with image.open("wb") as made:
        made.truncate(8 << 20)
    subprocess.run(["mkfs.exfat", str(image)], check=True, capture_output=True)
    return image


def test_a_live_root_named_in_another_case_on_a_fuse_exfat_is_refused(tmp_path: Path) -> None:
    image = exfat_image(tmp_path)
    root = tmp_path / "v" / "App" / "prod"
    seen = outside_any_run(tmp_path, root, FOLDED, str(tmp_path), str(image))
    said = json.dumps(seen, indent=1)
    # Before the fix: the purge moved the live server's session to the trash and the
    # empty-trash removed it (exit 0 both), the writer and a second server took the root,
    # `app status` said "held by: nobody".
    assert seen["before"], said
    assert seen["after"] == seen["before"], said
    assert seen["trash"] == [], said
    other, pid = tmp_path / "v" / "app" / "PROD", seen["holder"]
    held = (
        f"data root {other} is held by pid {pid}, kind maintenance, profile production, "
        f"host {os.uname().nodename}, since "
    )
    through = (
        f"through its lock file {root}/.server.lock, which is {other}/.server.lock under "
        f"another name on the FUSE filesystem mounted at {tmp_path / 'v'} (one that folds "
        "case, such as exFAT or FAT through FUSE, shows one file under each spelling of its "
        "name, each with an inode number of its own, and a lock taken through one spelling "
        "is not seen through another; device "
    )
    assert_writers_refused(seen, held, through, "): name the root as its holder does")
    code, out = seen["STATUS"]
    assert code == 0, said
    assert f"held by: pid {pid}, kind maintenance, profile production" in out, said
    assert seen["OTHER"] == "opened", said
    code, out = seen["COPY"]
    assert code == 0, said
    assert "moved 1 session(s) to " in out, said
    assert seen["dev_after"] == seen["before"], said
    # Layer 2: before the fix, `app doctor` said "every data root is distinct" (exit 0).
    folded = (
        f"profiles 'development' and 'production' share the same data root, spelled two ways "
        f"that the filesystem of {tmp_path / 'v'} takes for one (it folds case, as exFAT, "
        "FAT, NTFS or a `casefold` directory do: one entry answers both spellings): "
        f"development -> {other} (from settings.toml [development]), production -> {root} "
    )
    for tag in ("DOCTOR", "DEV"):
        code, out = seen[tag]
        assert code == 78, said
        assert folded in out, said
        assert f"`ls -a {tmp_path / 'v'}` lists the one entry" in out, said
    code, out = seen["INSIDE"]
    assert code == 78, said
    assert "overlap: 'production''s data root lies inside 'development''s, spelled two" in out, said
    code, out = seen["APART"]
    assert code == 0, said
    assert "every data root is distinct" in out, said
