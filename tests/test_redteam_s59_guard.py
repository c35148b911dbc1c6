"""Red team 59 on the guard (branch rt-guard42): the data root behind a name, reached through
a second superblock of its own filesystem, or through another mount namespace's /proc link.

What broke (as root, in a mount namespace of the test's own, outside any test run in a PID
namespace with its own ``/proc``, and in a test's child inside the run):

- a live production server on a disk image's ext4 (``mount -o loop``), the same image attached
  through a second loop device (``losetup -f --show``, then ``mount``) and the root named
  through that mount (``APP_DATA_ROOT=<second mount>/srv/production``). The kernel keeps a
  flock per superblock, and a second loop device is a second superblock of one filesystem:
  the server's lock was not seen there. ``app data purge --yes-i-mean-it`` moved its sessions
  to the trash, ``app data empty-trash`` and a second ``app serve`` took the root beside the
  live server, ``open_storage(..., writer=True)`` opened it for writing, and ``app status``
  said "held by: nobody". Red team 50 closed this for a test run's protected roots only (by
  ``f_fsid``, in the sandbox); outside a run, and for a root a test's own live holder keeps
  in its sandbox, only the lock stood, and it saw nothing.

- a data root named through ``/proc/<pid>/root`` of a process in another mount namespace (a
  container's), meant for the container's own data at that path:
  ``APP_DATA_ROOT=/proc/<pid>/root<production's path> app --profile production data purge
  --yes-i-mean-it``. The link's text is ``/``, so the path resolved to this host's production
  root, and the purge emptied it; ``--profile development`` was refused as sharing a root
  the operator never named. The same through ``APP_SETTINGS_DIR=/proc/<pid>/root<settings>``:
  the host's settings were read, and the purge emptied the host's production root.

What changed: a path setting whose deepest existing directory is another directory (device
and inode) than its resolved path names is refused (``invalid_setting``, exit 78), naming
both and the link of ``/proc`` into another mount namespace; such a settings directory is
``settings_not_found`` (78), saying so. Taking a root's lock (outside
a run's sandbox, and in it where the root lies on another filesystem than the sandbox's) and
a probe of a free lock now read ``/proc/locks`` for a lock on the lock file's inode number
on another device, and count it as this file's holder where the holder's open file has this
filesystem's id (``statfs``'s ``f_fsid``) and, for two loop devices, the same backing file. The
refusal (``data_root_in_use``, exit 75) names the holder, its lock file's path, both devices,
and to unmount the second mount rather than stop the holder; ``app status`` names the holder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import assert_untouched, copy_project_settings, stopped_production

#: What both drivers share: the app's command line run in this process, its output kept.
COMMON = r'''
import contextlib, io, json, os, signal, subprocess, sys
from pathlib import Path

from app.cli import cli
from app.config import load
from app.dataroot import syncfs
from app.storage import open_storage


def run(args, **env):
    saved = dict(os.environ)
    os.environ.update(env)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            cli.main(args, prog_name="app")
            code = 0
        except SystemExit as e:
            code = e.code
        except Exception as e:  # open_storage's refusal, or a traceback's cause
            code, out = repr(type(e).__name__), io.StringIO(f"{out.getvalue()} {e}")
    os.environ.clear()
    os.environ.update(saved)
    return [code, " ".join(out.getvalue().split())]


def started(args, **env):
    """`app <args>` in a fork: its pid and its output, read with `read_until`."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.environ.update(env)
        try:
            cli.main(args, prog_name="app")
        finally:
            os._exit(0)
    os.close(write)
    return pid, os.fdopen(read)


def read_until(pid, output, text):
    """`started`'s output up to a line that holds `text`, with its pid; or to its exit, with
    None."""
    lines = []
    for line in output:
        lines.append(line)
        if text in line:
            return pid, " ".join("".join(lines).split())
    output.close()
    os.waitpid(pid, 0)
    return None, " ".join("".join(lines).split())


def forked(args, until, **env):
    """`app <args>` in a fork, its output read until a line holds `until` or it exits."""
    return read_until(*started(args, **env), until)


def loop_mount(image, point):
    device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    subprocess.run(["mount", device, str(point)], check=True)
    return device
'''

#: PID 1 of a PID namespace with its own /proc, in a private mount namespace: outside any
#: test run, and every mount and process it makes ends with it. argv: work, image, settings.
OUTSIDE = (
    COMMON
    + r"""
work, image, settings = map(Path, sys.argv[1:4])
first, second = work / "a", work / "b"
first.mkdir(); second.mkdir()
subprocess.run(["mount", "-o", "loop", str(image), str(first)], check=True)
with open_storage(load(serving=False), writer=True) as store:
    store.create_session("a review", {})
root = first / "srv" / "production"
before = sorted(p.name for p in (root / "sessions").iterdir())
import app.server, app.server.run, uvicorn, fastapi  # once, before the forks
server, said = forked(["serve", "--port", "0"], "serving profile production")
assert server is not None, said
results = {"server": server}
device = loop_mount(image, second)
there = {"APP_DATA_ROOT": str(second / "srv" / "production")}
results["PURGE"] = run(["data", "purge", "--yes-i-mean-it"], **there)
results["TRASH"] = run(["data", "empty-trash", "--yes-i-mean-it"], **there)
results["STATUS"] = run(["status"], **there)
os.environ.update(there)
try:
    with open_storage(load(serving=False), writer=True):
        results["WRITER"] = [0, "opened"]
except Exception as e:
    results["WRITER"] = [type(e).__name__, " ".join(str(e).split())]
second_server, said = forked(["serve", "--port", "0"], "serving profile production")
results["SERVE"] = said
for pid in (server, second_server):
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
# Through both mounts: the second's is what a purge there did (the first may show its cache).
results["before"] = before
results["after"] = [sorted(p.name for p in (top / "srv/production/sessions").iterdir())
                    for top in (first, second)]
results["trash"] = [sorted(p.name for p in (top / "srv/production/.trash").iterdir())
                    for top in (first, second)]
subprocess.run(["umount", str(second)], check=True)
subprocess.run(["losetup", "-d", device], check=True)
subprocess.run(["umount", str(first)], check=True)
print("RESULTS", json.dumps(results))
"""
)

#: A test's child (inside the run), in a private mount namespace: its own root in the sandbox,
#: on a disk image mounted in tmp_path and held by it (a writer kept open), purged by a fork
#: through a second loop device. argv: work, image.
INSIDE = (
    COMMON
    + r"""
work, image = map(Path, sys.argv[1:3])
first, second = work / "a", work / "b"
first.mkdir(); second.mkdir()
subprocess.run(["mount", "-o", "loop", str(image), str(first)], check=True)
os.environ["APP_DATA_ROOT"] = str(first / "root")
with open_storage(load(serving=False), writer=True) as store:
    store.create_session("the test's own", {})
    syncfs(first)  # on the disk, as a live root's data is after a while
    device = loop_mount(image, second)
    pid, said = forked(["data", "purge"], "\0", APP_DATA_ROOT=str(second / "root"))
    sessions = len(list((first / "root" / "sessions").iterdir()))
subprocess.run(["umount", str(second)], check=True)
subprocess.run(["losetup", "-d", device], check=True)
subprocess.run(["umount", str(first)], check=True)
print("RESULTS", json.dumps({"PURGE": said, "sessions": sessions}))
"""
)


#: PID 1 of a PID namespace with its own /proc, in a private mount namespace (outside any
#: run): a "container" (a mount namespace of its own) shows its own settings and data, a
#: copy, at the path of this host's settings directory, which holds a stopped production
#: root; each command names the root, or the settings, through the container's
#: /proc/<pid>/root. argv: the settings directory, the container's copy.
CONTAINER = (
    COMMON
    + r"""
settings, copy = sys.argv[1:3]
container = subprocess.Popen(
    ["unshare", "-m", "--propagation", "private", "sh", "-c",
     'mount --bind "$1" "$2" && exec 3<"$2" && echo ready && exec cat', "sh", copy, settings],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert container.stdout.readline() == "ready\n"
inside = f"/proc/{container.pid}/root{settings}"
purge = ["data", "purge", "--yes-i-mean-it"]
results = {"inside": inside}
for tag, profile in [("PRODUCTION", "production"), ("DEVELOPMENT", "development")]:
    results[tag] = run(["--profile", profile, *purge],
                       APP_DATA_ROOT=f"{inside}/data/production")
results["SETTINGS"] = run(["--profile", "production", *purge], APP_SETTINGS_DIR=inside)
# A descriptor of the container's settings directory (as one passed over a UNIX socket).
results["DESCRIPTOR"] = run(["--profile", "production", *purge],
                            APP_DATA_ROOT=f"/proc/{container.pid}/fd/3/data/production")
# The same descriptor through a link of one's own to it (red team 73 on regress).
link = os.path.join(os.path.dirname(copy), "descriptor-link")
os.symlink(f"/proc/{container.pid}/fd/3", link)
results["LINKED"] = run(["--profile", "production", *purge],
                        APP_DATA_ROOT=f"{link}/data/production")
container.stdin.close()
container.wait()
print("RESULTS", json.dumps(results))
"""
)


def _needs_loop_devices() -> None:
    needed = ("unshare", "losetup", "mkfs.ext4", "mount")
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in needed):
        pytest.skip("needs root, unshare, losetup, mount and mkfs.ext4 for disk images")


def _image(work: Path) -> Path:
    image = work / "disk.img"
    with image.open("wb") as made:
        made.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-O", "^has_journal", str(image)], check=True)
    return image


def _results(done: subprocess.CompletedProcess[str]) -> dict:
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert found, done.stdout + done.stderr
    return json.loads(found[0].removeprefix("RESULTS "))


def outside_any_run(work: Path, production: Path, script: str, *args: str) -> dict:
    """`script` (argv: `args`) as PID 1 of a PID namespace with its own /proc, in a private
    mount namespace (outside any run), its environment production's on a copy of the
    project's settings in ``work/settings`` whose production root is `production`: what it
    printed after ``RESULTS``."""
    settings = copy_project_settings(work / "settings")
    text = (settings / "settings.toml").read_text()
    (settings / "settings.toml").write_text(
        text.replace('data_root = "data/production"', f'data_root = "{production}"')
    )
    env = {
        "PATH": os.environ["PATH"],
        "APP_SETTINGS_DIR": str(settings),
        "APP_API_TOKEN": "Rt59-" + os.urandom(24).hex(),
        "ENV_FOR_DYNACONF": "production",
    }
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "-p", "-f", "--mount-proc",
         sys.executable, "-c", script, *args],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    return _results(done)


def assert_writers_refused(seen: dict, *wanted_in_each: str) -> None:
    """That `seen`'s purge and empty-trash exited 75, and its writer was refused as held, each
    naming what it could not do and holding every text of `wanted_in_each`."""
    said = json.dumps(seen, indent=1)
    for tag, wanted in [
        ("PURGE", "purge every session"),
        ("TRASH", "empty the trash"),
        ("WRITER", "open the data root"),
    ]:
        code, out = seen[tag]
        assert code == (75 if tag != "WRITER" else "DataRootInUseError"), said
        assert f"cannot {wanted}" in out, said
        for text in wanted_in_each:
            assert text in out, said


def _refusal(second: str) -> str:
    return (
        "do not use this mount, and do not stop that process for it: the filesystem is "
        "mounted twice, and its two mounts overwrite each other's writes. Unmount this one "
        f"(`umount $(findmnt -n -o TARGET -T {second})`, then `losetup -d` its device if it "
        "is a loop device) and work through the holder's path"
    )


def test_a_live_root_through_a_second_loop_device_is_refused_outside_any_run(
    tmp_path: Path,
) -> None:
    _needs_loop_devices()
    image = _image(tmp_path)
    first = tmp_path / "a" / "srv" / "production"
    settings = tmp_path / "settings"
    seen = outside_any_run(tmp_path, first, OUTSIDE, str(tmp_path), str(image), str(settings))
    said = json.dumps(seen, indent=1)
    # Before the fix: the purge moved the live server's session to the trash (exit 0), the
    # writer and a second server took the root beside it, `app status` said "held by: nobody".
    assert seen["after"] == [seen["before"], seen["before"]], said
    assert seen["trash"] == [[], []], said
    second, pid = str(tmp_path / "b" / "srv" / "production"), seen["server"]
    held = (
        f"data root {second} is held by pid {pid}, kind server, profile production, host "
        f"{os.uname().nodename}, port "
    )
    through = (
        f"through its lock file {first}/.server.lock, which is {second}/.server.lock on the "
        "same filesystem mounted again through another device (device 7:"
    )
    assert_writers_refused(
        seen,
        held,
        through,
        "one filesystem id and inode: a disk image attached through a second loop",
        _refusal(second),
    )
    assert f"cannot start the server on 127.0.0.1:0: {held}" in seen["SERVE"], said
    assert through in seen["SERVE"], said
    code, out = seen["STATUS"]
    assert code == 0, said
    assert f"held by: pid {pid}, kind server, profile production" in out, said
    assert through in out, said


def test_a_test_s_held_root_through_a_second_loop_device_is_refused(tmp_path: Path) -> None:
    _needs_loop_devices()
    image = _image(tmp_path)
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private",
         sys.executable, "-c", INSIDE, str(tmp_path), str(image)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    seen = _results(done)
    assert seen["sessions"] == 1, seen
    second = str(tmp_path / "b" / "root")
    # Before the fix: the fork's purge moved the session the test holds to the trash.
    assert seen["PURGE"].startswith(
        f"error: cannot purge every session: data root {second} is held by pid "
    ), seen
    assert "on the same filesystem mounted again through another device" in seen["PURGE"], seen
    assert _refusal(second) in seen["PURGE"], seen


def test_a_root_named_through_a_container_s_proc_root_is_refused(tmp_path: Path) -> None:
    # Meant for the container's own data (a copy, mounted there at the host's path), each
    # path resolved to this host's directory: `/proc/<pid>/root` reads as `/`. Before the fix
    # the production purges emptied the host's production root (exit 0), through
    # APP_DATA_ROOT and through APP_SETTINGS_DIR alike; the container's copy was untouched.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for mount namespaces")
    settings, production, token, sessions = stopped_production(tmp_path)
    copy = tmp_path / "container"
    shutil.copytree(settings, copy, symlinks=True)
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": str(settings), "APP_API_TOKEN": token}
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "-p", "-f", "--mount-proc",
         sys.executable, "-c", CONTAINER, str(settings), str(copy)],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    seen = _results(done)
    said = json.dumps(seen, indent=1)
    assert_untouched(production, sessions, said)
    assert_untouched(copy / "data" / "production", sessions, said)
    inside = seen["inside"]
    for tag, profile in [("PRODUCTION", "production"), ("DEVELOPMENT", "development")]:
        code, out = seen[tag]
        assert code == 78, said
        assert out.startswith(f"error: profile {profile!r}: data_root = '/proc/"), said
        assert (
            f"(from environment APP_DATA_ROOT): leads through {inside}/data/production to "
            f"another directory than the one it resolves to in this process, {production}: a "
            "link of /proc (/proc/<pid>/root or cwd) into another mount namespace, a "
            "container's, names the directory as that namespace does, which is another "
            "directory here; name the directory as this machine sees it"
        ) in out, said
    # Named as a process's root or current directory before red team 73's change.
    code, out = seen["DESCRIPTOR"]
    assert code == 78, said
    assert (
        f"to another directory than the one it resolves to in this process, {production}: a "
        "link of /proc to a descriptor (/proc/<pid>/fd/<n>, /dev/fd/<n>) of a directory "
        "opened in another mount namespace (a container's process holds it, or it was passed "
        "over a UNIX socket or inherited from there) names the directory as that namespace "
        "does, which is another directory here"
    ) in out, said
    # Through a link of one's own to that descriptor: named as a process's root or current
    # directory before red team 73 on regress (the link's text was read, not its way).
    code, out = seen["LINKED"]
    assert code == 78, said
    assert "names the directory as that namespace does, which is another directory here" in out
    assert "a link of /proc to a descriptor (/proc/<pid>/fd/<n>, /dev/fd/<n>)" in out, said
    code, out = seen["SETTINGS"]
    assert code == 78, said
    assert (
        f"error: no settings.toml found: looked in {inside} (from APP_SETTINGS_DIR; it leads "
        f"through {inside} to another directory than the one it resolves to in this process, "
        f"{settings}: a link of /proc (/proc/<pid>/root or cwd) into another mount namespace"
    ) in out, said
