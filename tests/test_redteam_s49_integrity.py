"""Red team 49 on integrity (work in progress)."""

from __future__ import annotations

import json
from pathlib import Path

from test_server_e2e import app_env, run_app

from app.config import Config
from app.storage import open_storage


def _lost_record(config: Config, title: str) -> tuple[str, dict, Path, bytes]:
    root = config.data_root
    data = f"{title}: acknowledged bytes fsck moved to lost+found".encode()
    with open_storage(config, writer=True, kind="tests", wanted="make") as store:
        sid = store.create_session(title)["id"]
        store.put_file(sid, "x.txt", data)
    record = json.loads((root / "sessions" / sid / "records" / "x.txt").read_bytes())
    found = root.parent / f"lost+found-{sid}"
    (root / "sessions" / sid / "blobs" / record["blob"]).rename(found)
    return sid, record, found, data


def test_a_lost_files_entry_outlives_its_sessions_delete_and_a_repair(app_config: Config) -> None:
    root = app_config.data_root
    env = app_env(root)
    sid, record, found, data = _lost_record(app_config, "deleted after")
    assert run_app("data", "check", "--repair", env=env).returncode == 0
    (entry,) = (root / ".trash").glob(f"*-{sid}-file-*")
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        store.delete_session(sid)
    # The session in the trash, the entry is no crash's leftover: it was removed ("a file
    # lost that stopped before its commit; the file is unchanged") with the name, size and
    # SHA-256 that find the bytes.
    for args in (("data", "check"), ("data", "check", "--repair")):
        done = run_app(*args, env=env)
        assert done.returncode == 65, done.stdout + done.stderr
        assert "file-damaged" in done.stdout and entry.name in done.stdout, done.stdout
        assert "trash-manifest-only" not in done.stdout, done.stdout
    assert json.loads((entry / "trash.json").read_bytes())["entry"]["sha256"] == record["sha256"]
    # The session back, the bytes put back: the file is restored, checked.
    assert run_app("sessions", "restore", sid, env=env).returncode == 0
    found.rename(entry / "x.txt")
    restored = run_app("sessions", "restore", sid, "--file", "x.txt", env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert run_app("data", "check", env=env).returncode == 0
    with open_storage(app_config, writer=False, kind="tests", wanted="read") as store:
        handle, _ = store.open_file(sid, "x.txt")
        with handle:
            assert handle.read() == data


def test_experiment(app_config: Config) -> None:
    root = app_config.data_root
    sid, record, found, data = _lost_record(app_config, "deleted after")
    env = app_env(root)
    r = run_app("data", "check", "--repair", env=env)
    print(r.stdout, r.stderr)
    (entry,) = (root / ".trash").glob(f"*-{sid}-file-*")
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        store.delete_session(sid)
    r = run_app("data", "check", env=env)
    print("CHECK", r.returncode, r.stdout, r.stderr)
    r = run_app("data", "check", "--repair", env=env)
    print("REPAIR", r.returncode, r.stdout, r.stderr)
    print(list((root / ".trash").iterdir()), entry.exists())
    print(open(root / "audit.jsonl").read())
    assert entry.exists()


def test_experiment2(app_config: Config) -> None:
    import os
    root = app_config.data_root
    sid, record, found, data = _lost_record(app_config, "put back")
    env = app_env(root)
    r = run_app("data", "check", "--repair", env=env)
    (entry,) = (root / ".trash").glob(f"*-{sid}-file-*")
    restore = ("sessions", "restore", sid, "--file", "x.txt")
    for label, make in (
        ("wrong", lambda p: p.write_bytes(b"x" * len(data))),
        ("half", lambda p: p.write_bytes(data[: len(data) // 2])),
        ("symlink", lambda p: p.symlink_to(found)),
        ("dir", lambda p: p.mkdir()),
        ("fifo", lambda p: os.mkfifo(p)),
    ):
        make(entry / "x.txt")
        c = run_app("data", "check", env=env)
        print(label, "CHECK", c.returncode, c.stdout[-600:], c.stderr[-300:])
        r = run_app(*restore, env=env)
        print(label, "RESTORE", r.returncode, r.stdout[-300:], r.stderr[-600:])
        c = run_app("data", "check", "--repair", env=env)
        print(label, "REPAIR", c.returncode, c.stdout[-600:], c.stderr[-300:])
        p = entry / "x.txt"
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        elif os.path.lexists(p):
            p.unlink()
        assert entry.exists(), label
    os.link(found, entry / "x.txt")
    r = run_app(*restore, env=env)
    print("hardlink RESTORE", r.returncode, r.stdout[-300:], r.stderr[-600:])
