"""Red team 60 on the guard (branch rt-guard43): the data root behind a name, reached through
a FUSE mirror of its directory.

What broke (as root, outside any test run: a PID namespace with its own ``/proc``, in a
private mount namespace):

- a live production server on a directory, and that directory mirrored by a FUSE filesystem
  (``bindfs <root's parent> <mount>``, as one shows a service's data in a home directory or
  a container, or with other owners), the root named through the mirror
  (``APP_DATA_ROOT=<mount>/production``). FUSE keeps its locks on its own inodes (bindfs
  passes no ``flock`` on): the server's lock was not seen there. ``app data purge
  --yes-i-mean-it`` moved the live server's sessions to the trash, ``app data empty-trash
  --yes-i-mean-it`` and a second ``app serve`` took the root beside the live server,
  ``open_storage(..., writer=True)`` opened it for writing, and ``app status`` said "held
  by: nobody". The other way round too: a holder on the mirror, a purge of the directory.
  Red team 59's holder through another device saw the lock on the same inode number on the
  other device, and passed it over: a FUSE mount reports no filesystem id (``f_fsid`` 0),
  and only a holder whose file had this one's id counted. (Inside a run, red team 49 refuses
  a root on FUSE in the sandbox before anything is opened; the same purge there was refused.)

What changed: a lock on this inode number on another device whose file is this one seen
through a FUSE mount (one of the two devices a FUSE mount, the two files alike in size,
modification and change times to the nanosecond, and in their bytes) is this file's holder
too, when a root's lock is taken and when a free lock is probed. The refusal
(``data_root_in_use``, exit 75) names the holder, its lock file, the FUSE mount, and to work
through the holder's own path, not to stop the holder nor to use this path; ``app status``
names the holder.

In the same run: a file mounted over a live root's lock file in one mount namespace
(``mount --bind <empty file> <root>/.server.lock``), its holder in another. The purge there
was refused, but said the lock file "was moved to" its own path and that its holder would
stop within lock_check_seconds, which it never does; once free, the mount was told ``cp -a``
of the mounted file over the root's own and ``rmdir`` of a file. Both now name a file
mounted over the name, with ``findmnt`` and ``umount``.

Beside it (in the run's process, on roots of the test's own): a root's ``.tmp/`` or
``.trash/`` made a symbolic link into another root's ``sessions/`` was refused before
anything was cleaned, but told "remove the link, `rm ...`, and remove the link and let the
app create the directory"; the step is now said once. And a value of a later settings file
that dynaconf cannot resolve (``.secrets.toml``'s ``[production] data_root = "@format
{env[X]}/data"`` with ``X`` unset) was refused quoting the first file's text for that key
(settings.toml's ``data/production``) with the later file's name; it now quotes its own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from project_copy import copy_project_settings
from test_redteam_s59_guard import COMMON as S59_COMMON
from test_redteam_s59_guard import outside_any_run

#: Red team 59's drivers' `run` (the app's command line in this process, its output kept),
#: its server started in a fork and read on later, with a writer, a holder and a listing.
COMMON = (
    S59_COMMON
    + r"""
def writer(**env):
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with open_storage(load(serving=False), writer=True):
            return [0, "opened"]
    except Exception as e:
        return [type(e).__name__, " ".join(str(e).split())]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def stop(pid):
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)


def holding(*roots):
    # A fork in a mount namespace of its own (a copy of this one's, whose mounts are private)
    # that holds a writer on each of `roots` until SIGTERM: its pid, once it holds them.
    import ctypes

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(0x00020000) != 0:  # CLONE_NEWNS
                raise OSError(ctypes.get_errno(), "unshare")
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            with contextlib.ExitStack() as stack:
                for root in roots:
                    os.environ["APP_DATA_ROOT"] = str(root)
                    stack.enter_context(open_storage(load(serving=False), writer=True))
                os.write(write, b"held")
                while True:
                    signal.pause()
        finally:
            os._exit(0)
    os.close(write)
    said = os.read(read, 4)
    os.close(read)
    assert said == b"held", said
    return pid


def names(path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []
"""
)

#: PID 1 of a PID namespace with its own /proc, in a private mount namespace: outside any
#: test run, and every mount and process it makes ends with it. argv: work (the settings'
#: production root is work/real/production). A live server on production's root, each
#: writer through a mirror of its directory.
SERVED = (
    COMMON
    + r"""
work = Path(sys.argv[1])
real, mirror = work / "real", work / "mirror"
root = real / "production"
with open_storage(load(serving=False), writer=True) as store:
    store.create_session("a review", {})
mirror.mkdir()
subprocess.run(["bindfs", str(real), str(mirror)], check=True)
purge, trash = ["data", "purge", "--yes-i-mean-it"], ["data", "empty-trash", "--yes-i-mean-it"]
results = {"before": names(root / "sessions")}
server, said = read_until(*started(["serve", "--port", "0"]), "serving profile production")
assert server is not None, said
there = {"APP_DATA_ROOT": str(mirror / "production")}
challenger = started(["serve", "--port", "0"], **there)
seen = results["MIRROR"] = {"holder": server}
seen["PURGE"] = run(purge, **there)
seen["TRASH"] = run(trash, **there)
seen["STATUS"] = run(["status"], **there)
seen["WRITER"] = writer(**there)
challenger, seen["SERVE"] = read_until(*challenger, "serving profile production")
stop(challenger)
stop(server)
results["after"] = names(root / "sessions")
results["trash"] = names(root / ".trash")
subprocess.run(["fusermount", "-u", str(mirror)], check=True)
print("RESULTS", json.dumps(results))
"""
)

#: As `SERVED`, with a holder in a mount namespace of its own (a fork): one root held through
#: a mirror and purged as it is, another held as it is and purged where a file is mounted
#: over its lock file.
HELD = (
    COMMON
    + r"""
work = Path(sys.argv[1])
real, other = work / "real", work / "other"
second, third = real / "second", real / "third"
for made in (second, third):
    os.environ["APP_DATA_ROOT"] = str(made)
    with open_storage(load(serving=False), writer=True) as store:
        store.create_session("a review", {})
other.mkdir()
# A mirror which shows each file's modification time as its change time.
subprocess.run(["bindfs", "--ctime-from-mtime", str(real), str(other)], check=True)
purge = ["data", "purge", "--yes-i-mean-it"]
holder = holding(other / "second", third)
results = {"before": [names(made / "sessions") for made in (second, third)]}
seen = results["REAL"] = {"holder": holder}
seen["PURGE"] = run(purge, APP_DATA_ROOT=str(second))
seen["STATUS"] = run(["status"], APP_DATA_ROOT=str(second))
# A file mounted over the third root's lock file here, not where its holder runs.
(work / "empty").touch()
subprocess.run(["mount", "--bind", str(work / "empty"), str(third / ".server.lock")], check=True)
seen = results["OVER"] = {"holder": holder}
seen["PURGE"] = run(purge, APP_DATA_ROOT=str(third))
stop(holder)
seen["FREE"] = run(purge, APP_DATA_ROOT=str(third))
subprocess.run(["umount", str(third / ".server.lock")], check=True)
results["after"] = [names(made / "sessions") for made in (second, third)]
results["trash"] = [names(made / ".trash") for made in (second, third)]
subprocess.run(["fusermount", "-u", str(other)], check=True)
print("RESULTS", json.dumps(results))
"""
)


def _needs_bindfs() -> None:
    needed = ("unshare", "bindfs", "fusermount")
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in needed):
        pytest.skip("needs root, unshare, bindfs and fusermount for a FUSE mirror")
    if not Path("/dev/fuse").exists():
        pytest.skip("needs /dev/fuse for a FUSE mirror")


def _mirror_refusal(served: str, named: str) -> str:
    return (
        f"through its lock file {served}/.server.lock, which is {named}/.server.lock seen "
        "through a FUSE mount"
    )


def _outside(work: Path, script: str) -> tuple[dict, str]:
    _needs_bindfs()
    (work / "real").mkdir()
    seen = outside_any_run(work, work / "real" / "production", script, str(work))
    return seen, json.dumps(seen, indent=1)


def _refused_through_a_mirror(result: dict, served: str, named: str, said: str) -> None:
    pid = result["holder"]
    held = f"data root {named} is held by pid {pid}, kind "
    for tag, wanted in [
        ("PURGE", "purge every session"),
        ("TRASH", "empty the trash"),
        ("WRITER", "open the data root"),
    ]:
        if tag not in result:
            continue
        code, out = result[tag]
        assert code == (75 if tag != "WRITER" else "DataRootInUseError"), said
        assert f"cannot {wanted}" in out, said
        assert held in out, said
        assert _mirror_refusal(served, named) in out, said
        assert (
            "do not use this path, and do not stop that process for it: the holder's lock "
            "is not seen through the FUSE mount, so nothing here would keep the two of "
            f"you apart. Work through the holder's own path, {served}, where the lock is "
            "shared (or stop the holder first)"
        ) in out, said
    code, out = result["STATUS"]
    assert code == 0, said
    assert f"held by: pid {pid}, kind " in out, said
    assert _mirror_refusal(served, named) in out, said


def test_a_live_root_through_a_fuse_mirror_is_refused_outside_any_run(tmp_path: Path) -> None:
    seen, said = _outside(tmp_path, SERVED)
    # Before the fix: the purge moved the live server's session to the trash (exit 0), the
    # writer and a second server took the root beside it, `app status` said "held by: nobody".
    assert seen["after"] == seen["before"], said
    assert seen["trash"] == [], said
    root, through = str(tmp_path / "real" / "production"), str(tmp_path / "mirror" / "production")
    _refused_through_a_mirror(seen["MIRROR"], root, through, said)
    assert "kind server, profile production" in seen["MIRROR"]["PURGE"][1], said
    assert (
        f"cannot start the server on 127.0.0.1:0: data root {through} is held by pid "
        f"{seen['MIRROR']['holder']}, kind server, profile production"
    ) in seen["MIRROR"]["SERVE"], said


def test_a_root_held_through_a_fuse_mirror_or_under_a_mounted_lock_file_is_refused(
    tmp_path: Path,
) -> None:
    seen, said = _outside(tmp_path, HELD)
    assert seen["after"] == seen["before"], said
    assert seen["trash"] == [[], []], said
    # A holder through a mirror with --ctime-from-mtime, a purge of the directory itself.
    second, other = str(tmp_path / "real" / "second"), str(tmp_path / "other" / "second")
    _refused_through_a_mirror(seen["REAL"], other, second, said)
    # A file mounted over the third root's lock file, not where its holder runs: refused,
    # but said to be "moved to" its own path, its holder to stop on its own; then, free, the
    # mount was told `cp -a` over the root's own file and `rmdir` of a file.
    third, pid = tmp_path / "real" / "third", seen["OVER"]["holder"]
    lock = third / ".server.lock"
    code, out = seen["OVER"]["PURGE"]
    assert code == 75, said
    assert (
        f"data root {third} is held by pid {pid}, kind maintenance, profile production"
    ) in out, said
    assert (
        f"through its lock file {lock}, which is another file than the one {lock} names here: "
        "a file is mounted over that name, in this mount namespace or in the holder's (a bind "
        f"mount, a container's volume), and each side locks its own (`findmnt {lock}` here, "
        f"`nsenter -t {pid} -m findmnt {lock}` there). Unmount it (`umount {lock}` where it is "
        "mounted) and never mount over a root's lock file"
    ) in out, said
    assert "moved to" not in out, said
    code, out = seen["OVER"]["FREE"]
    assert code == 78, said
    assert f"a filesystem is mounted inside it ({lock})" in out, said
    assert (
        f"a file is mounted over {lock}, hiding the root's own file of that name under it: "
        f"unmount it (`umount {lock}`, with no server on the root; `findmnt {lock}` names "
        "where the mounted file comes from, which keeps it)"
    ) in out, said
    assert "rmdir" not in out, said


def test_a_root_s_directory_linked_into_another_root_is_told_its_fix_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A development root's `.tmp/` (or `.trash/`) made a link into another root's sessions:
    # refused before anything is cleaned, but told "remove the link, `rm ...`, and remove the
    # link and let the app create the directory".
    from click.testing import CliRunner

    from app.cli import cli

    other, root = tmp_path / "other", tmp_path / "root"
    for made in (other, root):
        monkeypatch.setenv("APP_DATA_ROOT", str(made))
        done = CliRunner().invoke(cli, ["data", "check", "--repair"], catch_exceptions=False)
        assert done.exit_code == 78, done.output  # no root yet: made by a writer below
        made.mkdir()
        done = CliRunner().invoke(cli, ["data", "check", "--repair"], catch_exceptions=False)
        assert done.exit_code == 0, done.output
    for name in (".tmp", ".trash"):
        link = root / name
        shutil.rmtree(link)
        link.symlink_to(other / "sessions")
        done = CliRunner().invoke(cli, ["data", "purge"], catch_exceptions=False)
        assert done.exit_code == 78, done.output
        assert (
            f"it leads into the data root {other}, whose data must stay there: remove the link, "
            f"`rm {link}`, and let the app create the directory\n"
        ) in done.stderr, done.stderr
        link.unlink()
        link.mkdir()


@pytest.mark.app_profile("production")
def test_a_value_that_cannot_be_resolved_is_named_as_its_own_file_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `.secrets.toml` gives production's root as an `@format` of a variable unset here; the
    # refusal named settings.toml's text with .secrets.toml's name:
    # "data_root = 'data/production' (from .secrets.toml [production]): cannot be resolved".
    from click.testing import CliRunner

    from app.cli import cli

    settings = copy_project_settings(tmp_path / "settings")
    with (settings / ".secrets.toml").open("a") as secrets:
        secrets.write('\n[production]\ndata_root = "@format {env[RT60_STATE]}/data"\n')
    monkeypatch.setenv("APP_SETTINGS_DIR", str(settings))
    monkeypatch.delenv("RT60_STATE", raising=False)
    done = CliRunner().invoke(cli, ["--profile", "production", "config"], catch_exceptions=False)
    assert done.exit_code == 78, done.output
    assert (
        "profile 'production': data_root = '@format {env[RT60_STATE]}/data' (from .secrets.toml "
        "[production]): cannot be resolved (DynaconfFormatError: "
    ) in done.stderr, done.stderr
