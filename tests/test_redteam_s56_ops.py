"""Red team 56 on operations (branch rt-ops28): `app doctor` and `app status` in the broken
states an operator can leave a data root's path in, each beside what `app serve` does there.

What broke:

- ``app doctor`` said "ok" (exit 0) of a protected profile's data root that is not there
  (``APP_DATA_ROOT`` mistyped in ``/etc/app.env``, or a link to a disk not mounted), which
  ``app serve`` refuses (78: a protected profile's server does not create its root). The
  deploy guide runs doctor "before starting anything"; it now lists serve's refusal, with
  the ``install -d`` of a first deploy and the setting to correct, and exits 78; ``app
  status`` no longer says the root "does not exist yet", which promised a first start;
- a data root's path that names a file or a FIFO (a backup archive or a log restored to the
  root's name): ``app serve``, every writer and ``app doctor`` said the filesystem "failed a
  call with ENOTDIR" and sent the operator to ``dmesg`` and ``findmnt`` (exit 74), ``app data
  restamp`` said the directory "does not exist", and ``app status`` that it "does not exist
  yet". Every open and ``restamp`` now refuse it as what it is (``data_root_state``, 78),
  naming the setting and the ``mv`` that moves it aside, and ``status`` says "(not a
  directory)" with the same reason as its stamp line;
- ``app doctor`` run by another user than the root's owner (the first step of the deploy
  guide made without ``-o app``, then doctor run as ``app``; or doctor run with ``sudo``
  alone) said "ok" of a root that ``app serve`` and every writer run by that user refuse
  (red team 55's ``data_root_owner``). It now lists that refusal, with the ``sudo -u``;
  so of a root on a read-only mount, which ``app serve`` refuses (74);
- a root made writable by others by hand (``chmod 777``), or kept under a directory others
  may write with no sticky bit: the barrier the docs name for code that bypasses the app was
  gone, and nothing said so. Every command now warns, with the ``chmod`` that restores it;
- a downgrade to a build from before ``records/`` and ``blobs/``, then the upgrade back: the
  earlier build, blind to the records, replaced a file (its list in ``session.json``, its
  bytes in ``files/``). The upgrade's migration kept the record it found, dropped the list,
  and left the last acknowledged version's bytes in ``files/`` out of the listing, while
  ``app data check`` said "clean". The list's version now becomes the file's, and the
  record's bytes go to the trash (an orphan, with a log line naming both SHA-256s).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from test_integrity import mount, small_fs, umount  # noqa: F401 - the fixture
from test_server_e2e import app_env, run_app

from app.storage import open_storage

NOBODY = 65534


def _production(root: Path) -> dict[str, str]:
    return app_env(root, profile="production", APP_API_TOKEN=secrets.token_urlsafe(32))


def test_doctor_refuses_a_protected_profile_s_missing_root_as_serve_does(tmp_path: Path) -> None:
    mistyped = tmp_path / "srv" / "dta"
    for root in (mistyped, tmp_path / "link"):
        if root.name == "link":
            root.symlink_to(tmp_path / "unmounted" / "data")  # a disk not mounted
        env = _production(root)
        doctor = run_app("doctor", env=env)
        assert doctor.returncode == 78, doctor.stdout
        assert "ok" not in doctor.stdout.split("\n")[-2]
        assert "the directory does not exist, so there is nothing to serve" in doctor.stderr
        assert "correct data_root of profile 'production'" in doctor.stderr
        assert "install -d -m 0700 -o app -g app" in doctor.stderr
        if root == mistyped:
            serve = run_app("serve", "--port", "0", env=env)
            assert serve.returncode == 78  # what doctor foretold
            status = run_app("status", env=env).stdout
            assert (
                "(does not exist, and a server of a protected profile does not create it;" in status
            )
    assert not mistyped.parent.exists()  # doctor made nothing


def test_a_root_that_is_a_file_is_named_not_blamed_on_the_filesystem(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.write_bytes(b"a backup archive restored to the root's name")
    env = app_env(root)
    for args in (("doctor",), ("sessions", "list"), ("serve", "--port", "0")):
        refused = run_app(*args, env=env)
        assert refused.returncode == 78, (args, refused.stderr)
        assert "it is a regular file of 44 bytes, not a directory" in refused.stderr, args
        assert f"mv {root} {root}.moved" in refused.stderr
        assert "ENOTDIR" not in refused.stderr
        assert "Traceback" not in refused.stderr
    restamp = run_app("data", "restamp", "--from", "development", env=env)
    assert restamp.returncode == 78
    assert "it is a regular file" in restamp.stderr
    status = run_app("status", env=env)
    assert status.returncode == 0
    assert f"data root: {root} (not a directory)" in status.stdout
    assert "is a regular file, not a directory" in status.stdout
    root.unlink()
    os.mkfifo(root)  # never opened: a read of it would wait for a writer
    refused = run_app("doctor", env=env)
    assert refused.returncode == 78
    assert "it is a FIFO, not a directory" in refused.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a root to another user needs root")
def test_doctor_run_as_another_user_than_the_root_s_owner_is_not_ok(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    os.chown(root, NOBODY, NOBODY)
    env = app_env(root)
    doctor = run_app("doctor", env=env)
    assert doctor.returncode == 78, doctor.stdout
    assert "belongs to user 'nobody' (uid 65534)" in doctor.stderr
    assert "and this process runs as user 'root' (uid 0)" in doctor.stderr
    assert "sudo -u nobody " in doctor.stderr
    assert run_app("serve", "--port", "0", env=env).returncode == 78  # what doctor foretold
    assert os.listdir(root) == []


def test_doctor_names_a_read_only_mount_that_serve_refuses(
    small_fs: Path,  # noqa: F811 - the fixture
) -> None:
    root = small_fs / "root"
    root.mkdir(mode=0o700)
    env = app_env(root)
    mount("--bind", str(root), str(root))  # over itself, in the test's own tmpfs
    try:
        mount("-o", "remount,bind,ro", str(root))
        doctor = run_app("doctor", env=env)
    finally:
        umount(root)
    assert doctor.returncode == 74, doctor.stdout
    assert (
        f"cannot serve or change data root {root}: the data root's filesystem is read-only"
        in doctor.stderr
    )
    assert "Remount it read-write" in doctor.stderr


def test_a_root_other_users_may_write_is_said_by_every_command(tmp_path: Path) -> None:
    parent = tmp_path / "srv"
    root = parent / "data"
    root.mkdir(parents=True)
    root.chmod(0o777)  # made by hand, "so that the service can write it"
    env = app_env(root)
    doctor = run_app("doctor", env=env)
    assert doctor.returncode == 0, doctor.stderr  # a warning: the server runs as before
    assert f"({root}) is writable by others (mode 0777)" in doctor.stderr
    assert f"`chmod o-w {root}`" in doctor.stderr
    assert "is writable by" in run_app("status", env=env).stderr
    root.chmod(0o2770)  # a volume shared with its service's group (fsGroup): no warning
    assert "writable" not in run_app("doctor", env=env).stderr
    root.chmod(0o700)
    parent.chmod(0o777)  # no sticky bit: anyone may rename the root away
    doctor = run_app("doctor", env=env)
    assert (
        f"lies under {parent}, which others may write (mode 0777, no sticky bit)" in doctor.stderr
    )
    assert f"`chmod go-w {parent}`" in doctor.stderr
    parent.chmod(0o1777)  # as /tmp is
    assert "writable" not in run_app("doctor", env=env).stderr


def test_a_replace_made_by_a_build_before_records_survives_the_upgrade_back(
    app_config: Any,
) -> None:
    with open_storage(app_config, writer=True) as store:
        session = store.create_session("kept across a downgrade")["id"]
        store.put_file(session, "a.txt", b"version 1, this layout")
        store.put_file(session, "b.txt", b"untouched")
    directory = app_config.data_root / "sessions" / session
    # What the downgraded build wrote, blind to records/: a replace of a.txt, its list.
    newer = b"version 2, from the build before records/"
    (directory / "files").mkdir()
    (directory / "files" / "a.txt").write_bytes(newer)
    meta = json.loads((directory / "session.json").read_text())
    entry = {"name": "a.txt", "size": len(newer), "uploaded_at": "t"}
    entry["sha256"] = hashlib.sha256(newer).hexdigest()
    (directory / "session.json").write_text(json.dumps({**meta, "files": [entry]}))
    env = app_env(app_config.data_root)
    repair = run_app("data", "check", "--repair", env=env)
    assert repair.returncode == 0, repair.stderr
    assert "legacy-layout" in repair.stdout
    assert "version (sha256 " + entry["sha256"] in repair.stderr
    with open_storage(app_config, writer=False) as store:
        files = {file["name"]: file for file in store.list_files(session)}
        assert files["a.txt"]["sha256"] == entry["sha256"]
        assert "b.txt" in files
        handle, _ = store.open_file(session, "a.txt")
        with handle:
            assert handle.read() == newer
    kept = [p for p in app_config.data_root.glob(".trash/*/orphan-*")]
    assert [p.read_bytes() for p in kept] == [b"version 1, this layout"]
    assert not (directory / "files").exists()
    assert run_app("data", "check", env=env).returncode == 0


def test_doctor_names_a_lock_file_every_start_refuses(app_config: Any, tmp_path: Path) -> None:
    with open_storage(app_config, writer=True):
        pass  # laid out and stamped
    root = app_config.data_root
    env = app_env(root)
    copy = tmp_path / "copy"
    copy.mkdir()
    os.link(root / ".server.lock", copy / ".server.lock")  # the backups guide's `cp -al`
    doctor = run_app("doctor", env=env)
    assert doctor.returncode == 69, doctor.stdout
    assert ".server.lock: it has 2 hard links" in doctor.stderr
    assert "find " in doctor.stderr and "-samefile" in doctor.stderr
    (copy / ".server.lock").unlink()
    (root / ".server.lock").unlink()
    (root / ".server.lock").symlink_to(copy / "elsewhere.lock")
    doctor = run_app("doctor", env=env)
    assert doctor.returncode == 69
    assert ".server.lock: it is a symbolic link" in doctor.stderr
    (root / ".server.lock").unlink()
    if os.geteuid() != 0:
        return  # mounting a tmpfs needs root
    mount("-t", "tmpfs", "-o", "size=64k,mode=0700", "app-tests-s56", str(root / "sessions"))
    try:
        doctor = run_app("doctor", env=env)
    finally:
        umount(root / "sessions")
    assert doctor.returncode == 78
    assert f"a filesystem is mounted inside it ({root / 'sessions'})" in doctor.stderr
