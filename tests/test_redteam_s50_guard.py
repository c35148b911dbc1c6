"""Red team 50 on the guard (branch rt-guard33): a data root shown in the sandbox by a mount
of one of this machine's own filesystems that says nothing true of what it shows.

What broke (a test run as root, as on this machine, mounting in its own tmp_path):

- an overlay whose ``upperdir=`` (kept by the kernel as the mount was given it) is a link to
  production's root, a path relative to where it was mounted from, a link swapped for one
  to an empty directory since, or production's root under a bind mount of its parent: red
  team 44's check took the text for where writes land, and a child of a test that opted
  into production purged the real root through it (an overlay keeps no device or inode of
  its upper directory, and a live server's flock is not seen through it);
- the same overlay mounted outside any sandbox, over production's ``sessions/``: a child
  pytest's ``--junitxml`` replaced a session's record, its ``--basetemp`` was made there;
- production's root on a disk image, the image mounted again through a second loop device
  in the sandbox: another device number, so the check by device and inode passed, and the
  purge moved the sessions to the trash on the disk.

Now an overlay's upper directory counts only where its path leads to the directory the
overlay's root shows (by inode), and one that cannot be told is refused in the sandbox and,
for what pytest writes, anywhere but a container's root; a root on another device than a
protected root with the same filesystem id (``f_fsid``) and inode is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import forked_app
import forked_pytest
import own_mounts
import pytest
from project_copy import copy_project_settings
from test_redteam_s24_guard import _inner_env
from test_redteam_s31_guard import CREATE, stopped  # noqa: F401 - a fixture
from test_redteam_s49_guard import kept  # noqa: F401 - a fixture
from test_server_e2e import app_env, snapshot

#: A test that opts into production, then purges it from a child through an overlay in its
#: tmp_path whose upper directory is production's root (`$REAL`) spelled another way: a link
#: (then swapped for one to an empty directory), a path relative to where it was mounted
#: from, a bind mount of the directory above it. Each child's output is printed after `CASE <what>`.
#: What both inner tests start with: a child that purges production's root at `root`.
PURGE = """
import os, shutil, subprocess, sys, tempfile, pytest

def purge(root):
    env = {**os.environ, "ENV_FOR_DYNACONF": "production", "APP_DATA_ROOT": str(root)}
    done = subprocess.run([sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
                          env=env, capture_output=True, text=True)
    return f"{done.returncode} {done.stdout + done.stderr}"
"""

OVERLAID = (
    PURGE
    + """

@pytest.mark.app_profile("production")
def test_purges_through_overlays(tmp_path):
    real = os.environ["REAL"]
    link, decoy = tmp_path / "link", tmp_path / "decoy"
    link.symlink_to(real)
    # The directory above production's root, bound into tmp_path: the work directory must
    # lie on the upper directory's mount (it is made beside the root, not in it).
    above = tmp_path / "above"
    above.mkdir()
    subprocess.run(["mount", "--bind", os.path.dirname(real), str(above)], check=True)
    cases = [("link", str(link)), ("relative", os.path.relpath(real, tmp_path)),
             ("swapped", str(link)), ("bound", f"{above}/{os.path.basename(real)}")]
    try:
        for n, (what, upper) in enumerate(cases):
            scratch, point = tmp_path / f"s{n}", tmp_path / f"o{n}"
            for made in (scratch / "l", scratch / "w", point):
                made.mkdir(parents=True)
            work = f"{above}/rt50-work" if what == "bound" else f"{scratch}/w"
            os.makedirs(work, exist_ok=True)
            options = f"lowerdir={scratch}/l,upperdir={upper},workdir={work}"
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(point)],
                           check=True, cwd=tmp_path)
            try:
                if what == "swapped":  # a link to production's root when mounted, not now
                    link.unlink()
                    decoy.mkdir()
                    link.symlink_to(decoy)
                print("CASE", what, point, purge(point))
            finally:
                subprocess.run(["umount", str(point)], check=True)
    finally:
        subprocess.run(["umount", str(above)], check=True)


def test_pytest_writes_nothing_through_such_an_overlay_outside_the_sandbox(tmp_path):
    # Outside any sandbox, where a test may mount one too: production's sessions/ as the
    # upper directory, relative to the directory it was mounted from. In the temporary
    # directory of the run above (`$OUTSIDE`), which holds production's root: an overlay's
    # work directory lies on its upper directory's filesystem (/tmp is another one where
    # that temporary directory is a tmpfs, as scripts/test's on /dev/shm).
    sessions = os.path.join(os.environ["REAL"], "sessions")
    session = os.listdir(sessions)[0]
    outside = tempfile.mkdtemp(prefix="rt50-", dir=os.environ["OUTSIDE"])
    point = os.path.join(outside, "o")
    for made in ("l", "w", "o"):
        os.mkdir(os.path.join(outside, made))
    options = f"lowerdir=l,upperdir={os.path.relpath(sessions, outside)},workdir=w"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, point],
                   check=True, cwd=outside)
    (tmp_path / "test_inner.py").write_text("def test_nothing():\\n    pass\\n")
    try:
        for option in (f"--junitxml={point}/{session}/session.json",
                       f"--basetemp={point}/made"):
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", option,
                 "test_inner.py"],
                cwd=tmp_path, capture_output=True, text=True,
            )
            print("CASE", option[2:10], point, done.returncode, done.stdout + done.stderr)
    finally:
        subprocess.run(["umount", point], check=True)
        shutil.rmtree(outside)
"""
)


def test_an_overlay_whose_upper_directory_is_spelled_another_way_is_refused(
    kept: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount an overlay")
    settings, production = kept
    real = production.resolve()
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_overlaid.py").write_text(OVERLAID)
    (tmp_path / "tmp").mkdir()
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings),
        REAL=str(real),
        TMPDIR=str(tmp_path / "tmp"),
        OUTSIDE=tempfile.gettempdir(),
    )
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s"],
        cwd=project, env=env,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    cases = dict(re.findall(r"CASE (\w+) (.*?)(?=\.? ?CASE \w+ /|\.\s*2 passed|$)", output))
    assert sorted(cases) == ["basetemp", "bound", "junitxml", "link", "relative", "swapped"], output
    # Where it lies in fact is production's root: the link followed, the bind mount's
    # directory the root by device and inode.
    assert f": it is {real}, seen through a mount (`findmnt -T " in cases["link"], output
    assert (
        f"/above/{real.name}, seen through a mount (`findmnt -T {cases['bound'].split()[0]}`), "
        f"which is, lies in or holds the data root of profile 'production' ({real}) under "
        "another path (same device and inode)"
    ) in cases["bound"], output
    for what in ("link", "bound"):
        assert " 78 error: refused under pytest (sandbox: " in cases[what], output
        assert f"the data root of profile 'production' ({real})" in cases[what], output
    for what in ("relative", "swapped"):  # nothing says where it writes
        point = cases[what].split()[0]
        assert (
            f"open data root {point}: it lies on a filesystem of type overlay mounted at "
            f"{point}, in the sandbox, whose upper directory, where its writes land, the "
            "mount table names as the mount was given it (a relative path, or a link), which "
            "does not lead there now"
        ) in cases[what], output
        assert f"`umount {point}`" in cases[what], output
    # Outside any sandbox: pytest replaced a session's record with its report, and made its
    # --basetemp among the sessions.
    for what, refused in (
        ("junitxml", "refusing to run: pytest's --junitxml rewrites"),
        ("basetemp", "refusing --basetemp"),
    ):
        point = cases[what].split()[0]
        assert cases[what].split()[1] == "4", output
        assert refused in cases[what], output
        assert (
            f"lies on a filesystem of type overlay mounted at {point}, outside any sandbox, "
            "whose upper directory, where its writes land, the mount table names as the "
            "mount was given it (a relative path, or a link), which does not lead there now"
        ) in cases[what], output


#: A test that opts into production, then purges it from a child through a second loop
#: device of the disk image production's root lies on, mounted in its tmp_path: the same
#: filesystem under another device number (`$IMAGE`, the root's path in it `$INSIDE`).
AGAIN = (
    PURGE
    + """

@pytest.mark.app_profile("production")
def test_purges_through_a_second_loop_device(tmp_path):
    device = subprocess.run(["losetup", "-f", "--show", os.environ["IMAGE"]], check=True,
                            capture_output=True, text=True).stdout.strip()
    point = tmp_path / "disk"
    point.mkdir()
    try:
        subprocess.run(["mount", device, str(point)], check=True)
        try:
            root = point / os.environ["INSIDE"]
            print("CASE", root, device, purge(root))
        finally:
            subprocess.run(["umount", str(point)], check=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
"""
)


def test_a_root_on_its_filesystem_mounted_again_through_another_device_is_refused(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0 or shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root, losetup and mkfs.ext4 for a disk image of its own")
    image = tmp_path / "disk.img"
    with own_mounts.ext4_image(image, tmp_path / "disk") as disk:
        settings = copy_project_settings(tmp_path / "settings")
        production = disk / "srv" / "production"
        text = (settings / "settings.toml").read_text()
        (settings / "settings.toml").write_text(
            text.replace('data_root = "data/production"', f'data_root = "{production}"')
        )
        env = app_env(production, profile="production", APP_SETTINGS_DIR=str(settings))
        forked_app.run_c(CREATE, env)
        os.sync()  # on the disk, as a server's data is after a while
        before = snapshot(production)
        project = tmp_path / "project"
        project.mkdir()
        (project / "test_again.py").write_text(AGAIN)
        (tmp_path / "tmp").mkdir()
        inner = _inner_env(
            APP_SETTINGS_DIR=str(settings), IMAGE=str(image), INSIDE="srv/production",
            TMPDIR=str(tmp_path / "tmp"),
        )  # fmt: skip
        done = forked_pytest.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s"],
            cwd=project, env=inner,
        )  # fmt: skip
        output = " ".join((done.stdout + done.stderr).split())
        subprocess.run(["umount", str(disk)], check=True)  # what the disk holds now
        subprocess.run(["mount", "-o", "loop", str(image), str(disk)], check=True)
        assert snapshot(production) == before, output
    found = re.search(r"CASE (\S+) (\S+) (\d+) ", output)
    assert found is not None, output
    root, _, status = found.groups()
    assert status == "78", output
    assert (
        f"open data root {root}: it is the data root of profile 'production' ({production}), "
        f"its filesystem mounted again through another device ({root} is device "
    ) in output
    assert "one filesystem id and inode: a second loop device of its disk image" in output
    assert f"`umount $(findmnt -n -o TARGET -T {root})`, then `losetup -d` the device" in output
