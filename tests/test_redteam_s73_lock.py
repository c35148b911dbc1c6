"""Red team 73 on the holder's lock (layer 4): a live holder's root replaced under it.

Real parts: a data root opened as a writer by the app (its lock taken, as `app data purge`
and a server's start take it), in a child with a mount namespace of its own
(tests/own_mounts.py); the root then moved aside (`mv`), exchanged with another directory
(`renameat2`'s ``RENAME_EXCHANGE``, as `mv --exchange` makes it), or hidden by a bind mount
over it, as an operator does to a live server. The writer's next check before a write
(`DataRoot.ensure_held`, which a server's lock watcher makes too) refuses it; what it says is
what this file holds.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import threading
from pathlib import Path

import own_mounts
import pytest
from test_redteam_s62_guard import _needs_root

from app import config as appconfig
from app.dataroot import check_opens, describe, open_root
from app.errors import DataRootInUseError, LockFileAliasedError, LockUnwatchedError
from app.lock import LOCK_FILE, LockWatcher
from app.storage import serving_url

#: The child: opens the root as a writer, replaces it each way, records what the next check
#: before a write says, puts it back. argv: the root, a directory beside it.
REPLACED = r"""
import ctypes, dataclasses, json, os, subprocess, sys
from pathlib import Path

from app.config import load
from app.dataroot import open_root, read_stamp
from app.errors import AppError

root, other = map(Path, sys.argv[1:3])
aside = root.with_name("data.old")
libc = ctypes.CDLL(None, use_errno=True)
said = []


def check(opened):
    try:
        opened.ensure_held()
        said.append("held")
    except AppError as error:
        said.append(" ".join(str(error).split()))


with open_root(dataclasses.replace(load(serving=False), data_root=root)) as opened:
    root.rename(aside)
    check(opened)
    aside.rename(root)
    # RENAME_EXCHANGE (<linux/fs.h>): both names stay, each on the other's directory.
    assert libc.renameat2(-100, bytes(root), -100, bytes(other), 2) == 0, ctypes.get_errno()
    check(opened)
    assert libc.renameat2(-100, bytes(root), -100, bytes(other), 2) == 0, ctypes.get_errno()
    subprocess.run(["mount", "--bind", other, root], check=True)
    check(opened)
    subprocess.run(["umount", root], check=True)
    check(opened)
    # A file bound over the lock file alone.
    (other / "lock").write_text("{}")
    subprocess.run(["mount", "--bind", other / "lock", root / ".server.lock"], check=True)
    check(opened)
    subprocess.run(["umount", root / ".server.lock"], check=True)
    # The stamp grown past any stamp's size (`truncate -s`): each write's check read it
    # whole, and again at the next, for as long as it stayed so.
    stamp = os.fspath(root / ".app-profile.json")
    reads = []
    sys.addaudithook(
        lambda event, args: reads.append(1)
        if event == "open" and args[0] == stamp else None
    )
    os.truncate(stamp, 256 * 1024)
    for _ in range(3):
        check(opened)
    said.append(len(reads))
try:
    read_stamp(root)
except AppError as error:
    said.append(" ".join(str(error).split()))
# Red team 73 on regress: the root's parent moved with it (`mv /srv/app /srv/app.old`),
# and the filesystem holding a root unmounted lazily (`umount -l`, as a busy one must be).
app = other / "app"
for data_root in (app / "data", other / "disk" / "data"):
    data_root.parent.mkdir()
    if data_root.parent.name == "disk":
        subprocess.run(["mount", "-t", "tmpfs", "none", data_root.parent], check=True)
    with open_root(dataclasses.replace(load(serving=False), data_root=data_root)) as opened:
        if data_root.parent == app:
            app.rename(other / "app.old")
            check(opened)
            (other / "app.old").rename(app)
        else:
            subprocess.run(["umount", "-l", data_root.parent], check=True)
            check(opened)
# Round e: a second bind of that filesystem stays (`mount --bind /mnt/disk /mnt/twin`).
disk, twin = other / "disk", other / "twin"
twin.mkdir()
subprocess.run(["mount", "-t", "tmpfs", "none", disk], check=True)
subprocess.run(["mount", "--bind", disk, twin], check=True)
with open_root(dataclasses.replace(load(serving=False), data_root=disk / "data")) as opened:
    subprocess.run(["umount", "-l", disk], check=True)
    check(opened)
# Left open by round e (leftovers74): a bind of a directory of a filesystem that stays
# mounted (`mount --bind /mnt/vol/sub /srv/app`).
vol, bind = other / "vol", other / "bind"
vol.mkdir()
bind.mkdir()
subprocess.run(["mount", "-t", "tmpfs", "none", vol], check=True)
(vol / "sub").mkdir()
subprocess.run(["mount", "--bind", vol / "sub", bind], check=True)
with open_root(dataclasses.replace(load(serving=False), data_root=bind / "data")) as opened:
    subprocess.run(["umount", "-l", bind], check=True)
    check(opened)
print(json.dumps(said))
"""


def test_a_root_replaced_under_its_writer_is_said_where_it_is_and_how_to_put_it_back(
    tmp_path: Path,
) -> None:
    # Before: each was "the data root itself was moved, renamed or deleted since it was
    # opened, so nothing is at its path now" or "... was replaced since it was opened: its
    # path names another directory now", then "Put the directory back", with no word on
    # where it was, nor that a mount hid it (nothing had moved: `umount` shows it again).
    _needs_root()
    root, other = tmp_path / "data", tmp_path / "other"
    other.mkdir()
    done = own_mounts.python_c(REPLACED, str(root), str(other))
    said = json.loads(done.stdout.splitlines()[-1])
    moved, exchanged, mounted, put_back, lock_hidden, *grown, reads, refused = said[:-4]
    parent_moved, unmounted, bound_too, bound_directory = said[-4:]
    changed = f"data root {root} changed while open: "
    assert moved.startswith(
        f"{changed}the data root itself was moved, renamed or deleted since it was opened, so "
        f"nothing is at its path now: the directory this process opened is at {root}.old "
        f"(`mv {root}.old {root}` puts it back). Nothing was changed; "
    ), moved
    assert exchanged.startswith(
        f"{changed}the data root itself was replaced since it was opened: its path names "
        f"another directory now, and the directory this process opened is at {other} (moved "
        f"aside, or exchanged with the other one): move the other one out of the way, then "
        f"`mv {other} {root}`. Nothing was changed; "
    ), exchanged
    assert mounted.startswith(
        f"{changed}a filesystem was mounted over it, or over a directory above it, since it "
        f"was opened (at {root}): the directory this process opened is still at its path, "
        f"hidden under the mount; `umount {root}` shows it again (`findmnt --target {root}` "
        "names the mount). Nothing was changed; "
    ), mounted
    assert put_back == "held", done.stdout
    # Before: "lock file <root>/.server.lock was moved to <root>/.server.lock (never move it)".
    lock = root / ".server.lock"
    assert lock_hidden.startswith(
        f"lock file {lock} is hidden by a file mounted over it since it was locked (`umount "
        f"{lock}` shows it again; `findmnt {lock}` names the mount); another process could "
        "now take the data root, so this one stops"
    ), lock_hidden
    # A stamp grown to 256 KiB under a live writer: its writes go on (a damaged stamp is the
    # next open's to refuse), and the stamp is read once, not at every write; the open is
    # refused by its size, without reading it whole.
    assert (grown, reads) == (["held"] * 3, 1), said
    stamp = root / ".app-profile.json"
    assert refused == (
        f"data root {root}: its profile stamp {stamp} is longer than 64 KiB, which no stamp is "
        "(the app writes a few hundred bytes): it was written over or grown by something else; "
        f"move it away (`mv {stamp} <elsewhere>`), then restore the file from a backup, or "
        'write {"profile": "<the profile this root belongs to>"} into it by hand'
    ), refused
    # Red team 73 on regress. Before: "`mv <other>/app.old/data <other>/app/data` puts it
    # back", which fails with <other>/app gone; and of the unmounted filesystem, "the data
    # root itself was moved, renamed or deleted ...", where nothing had moved.
    app, disk = other / "app", other / "disk"
    assert parent_moved.startswith(
        f"data root {app}/data changed while open: the data root itself was moved, renamed or "
        f"deleted since it was opened, so nothing is at its path now: the directory this "
        f"process opened is at {other}/app.old/data (`mkdir -p {app} && mv {other}/app.old/data "
        f"{app}/data` puts it back). Nothing was changed; "
    ), parent_moved
    assert unmounted.startswith(
        f"data root {disk}/data changed while open: the filesystem that holds it was unmounted "
        f"from {disk} since it was opened (`umount -l`, or its device went away), so nothing "
        "is at its path now: this process still has the directory open on the detached "
        f"filesystem, at /data of it; mount that filesystem at {disk} again (`findmnt {disk}` "
        "says what is mounted there now). Nothing was changed; "
    ), unmounted
    # Round e: "mount that filesystem at <disk> again", where another bind of it stayed.
    assert (
        f"at /data of it; it is still mounted at {other}/twin too, where the directory is "
        f"{other}/twin/data: `mount --bind {other}/twin {disk}` puts it back at its path. "
    ) in bound_too, bound_too
    # Left open by round e (leftovers74). Before: "at /data of it" (the bind's path, not the
    # filesystem's), and "mount that filesystem at <bind> again", which shows its top there.
    vol, bind = other / "vol", other / "bind"
    assert bound_directory.startswith(
        f"data root {bind}/data changed while open: the filesystem that holds it was "
        f"unmounted from {bind} since it was opened (`umount -l`, or its device went away), "
        "so nothing is at its path now: this process still has the directory open on the "
        "detached filesystem, at /sub/data of it (the mount unmounted showed its directory "
        f"/sub); its directory /sub is still reached at {vol}/sub, where the directory is "
        f"{vol}/sub/data: `mount --bind {vol}/sub {bind}` puts it back at its path. Nothing "
        "was changed; "
    ), bound_directory


def test_a_lock_file_exchanged_with_another_live_root_s_names_that_root_and_no_url(
    app_config: appconfig.Config,
) -> None:
    # Two live roots, their lock files exchanged (`mv --exchange`, renameat2): each root's
    # path names the file the other's server locked. Before: `app status` said "held by:
    # pid N, kind server, ..." and "serving: <the other root's server>", a refusal said "a
    # server holds its data root until it is stopped: stop it (kill N)", of a server of
    # another root that stops by itself, and `empty-trash`'s hint was a `curl` that POSTed
    # /trash/empty (with the confirmation) to that other root's server.
    here, there = app_config.data_root, app_config.data_root.with_name("there")
    other = dataclasses.replace(app_config, data_root=there)
    with open_root(app_config, kind="server", port=1), open_root(other, kind="server", port=2):
        libc = ctypes.CDLL(None, use_errno=True)
        here_lock, there_lock = (bytes(root / LOCK_FILE) for root in (here, there))
        assert libc.renameat2(-100, here_lock, -100, there_lock, 2) == 0, ctypes.get_errno()
        status = describe(here)  # what `app status` prints
        with pytest.raises(DataRootInUseError) as refused:
            open_root(app_config, wanted="empty the trash", timeout=0.0)
        assert libc.renameat2(-100, here_lock, -100, there_lock, 2) == 0, ctypes.get_errno()
        # Red team 73 on regress: a copy made with links (`cp -al there copy`) was said
        # "serving: <there's server>" by its `app status`; there itself still is.
        copy = here.with_name("copy")
        copy.mkdir()
        (copy / LOCK_FILE).hardlink_to(there / LOCK_FILE)
        linked, live = describe(copy), describe(there)
        # And `app doctor` of the copy said to remove every name of the file but the copy's:
        # the live root's lock file, which stops its server.
        with pytest.raises(LockFileAliasedError) as doctor:
            check_opens(dataclasses.replace(app_config, data_root=copy))
        # Round e: that root renamed (`mv there there.old`), then removed (`rm -rf`: the
        # copy's name the file's last) while its server lives. Before: the copy's `app
        # status` said "serving:" at that server, which serves nothing of the copy's.
        gone = there.with_name("there.old")
        there.rename(gone)
        renamed = describe(copy)
        renamed_by = renamed.held_by  # what `app status` prints, said while there is gone
        (gone / LOCK_FILE).unlink()
        removed = describe(copy)
        removed_by = removed.held_by
        with pytest.raises(DataRootInUseError) as serve:
            open_root(dataclasses.replace(app_config, data_root=copy), timeout=0.0)
        (gone / LOCK_FILE).hardlink_to(copy / LOCK_FILE)
        gone.rename(there)
    assert (
        f"Leave that process running: it holds {there}, not {copy}. Remove this root's name "
        f"for the file (`rm {copy}/.server.lock`: the app makes a new one where it opens {copy})"
    ) in doctor.value.message, doctor.value.message
    assert "is a hard link of that root's" in (linked.held_by or ""), linked.held_by
    assert serving_url(linked.probe.holder or {}, app_config.host) is None
    for seen in (renamed, removed):
        assert serving_url(seen.probe.holder or {}, app_config.host) is None, seen.probe.holder
    assert "is a hard link of that root's" in renamed_by, renamed_by
    assert (
        f"moved or exchanged here since (`mv`, `mv --exchange`), or linked here (`cp -al`, "
        f"`ln`) before {there} was removed or renamed; that process serves nothing of this "
        "root"
    ) in removed_by, removed_by
    assert "leave it running: it stops by itself" in serve.value.message, serve.value.message
    assert serving_url(live.probe.holder or {}, app_config.host) == "http://127.0.0.1:2"
    moved = (
        f", for data root {there}, not this one: this root's .server.lock is the file that "
        f"process locked in {there}, moved or exchanged here since (`mv`, `mv --exchange`)"
    )
    since = (status.probe.holder or {}).get("started_at")
    assert (status.held_by or "").endswith(f", port 2, since {since}{moved}"), status.held_by
    assert serving_url(status.probe.holder or {}, app_config.host) is None  # "serving:"
    message = refused.value.message
    assert (
        f"{moved}; leave it running: it stops by itself at its next look at its lock file "
        "(within its lock_check_seconds) or its next write, which find the file gone from "
        f"{there} (`flock -s {here}/.server.lock true` returns once it lets go); then put "
        "each root's .server.lock back in its own root (or remove the one here: the app "
        "makes a new one where it opens a root) and retry"
    ) in message, message
    assert serving_url(refused.value.holder or {}, app_config.host) is None  # empty-trash's hint


def test_a_lock_watcher_that_fails_stops_its_holder_naming_the_failure(
    app_config: appconfig.Config, caplog: pytest.LogCaptureFixture
) -> None:
    """Red team 73, left open (leftovers74): the thread that looks at the lock file every
    lock_check_seconds ended silently on any exception but an OSError, and its server
    served on with the file never looked at again. It now reports a loss (the server stops,
    exit 70), naming the exception, its traceback logged. The fault is real: an interval
    past `threading.TIMEOUT_MAX`, which a server's settings refuse since red team 73 but
    `LockWatcher` takes, makes its first wait raise OverflowError."""
    reasons: list[str] = []
    with (
        open_root(app_config, kind="server") as root,
        caplog.at_level(logging.ERROR, logger="app.lock"),
    ):
        assert root.lock is not None
        watcher = LockWatcher(root.lock, 1e10, reasons.append, root.stamp_changed).start()
        watcher._thread.join()
        reason = f"could not be watched: its watcher failed with {too_long_a_wait()}"
        assert reasons == [reason]
        refused = root.lost_error(reason)
    assert isinstance(refused, LockUnwatchedError)
    assert (refused.exit_code, refused.http_status) == (70, 503)
    assert refused.message == (
        f"lock file {root.path / LOCK_FILE} {reason}: the file need not have changed, but "
        "this process no longer looks at whether it still holds the data root, so it stops "
        "rather than serve unwatched. The server's log holds the watcher's traceback: report "
        "it (a fault of the app's), then restart the server (`app serve`)"
    )
    [logged] = caplog.records
    assert logged.getMessage() == f"the watcher of lock file {root.path / LOCK_FILE} failed"
    assert logged.exc_info is not None
    assert isinstance(logged.exc_info[1], OverflowError)


def too_long_a_wait() -> str:
    """The interpreter's own words for a wait past `threading.TIMEOUT_MAX`, as the watcher
    names it (``OverflowError: ...``): its wording is CPython's and changes between versions.
    The replica's watch test in tests/test_remote_store.py takes it too."""
    with pytest.raises(OverflowError) as raised:
        threading.Event().wait(1e10)
    return f"OverflowError: {raised.value}"
