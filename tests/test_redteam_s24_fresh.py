"""Red team 24: the newest code (the speed work's caches, /health in the protocol, group commit),
tried against a real `app serve` on 127.0.0.1, real files and real commands.

The records a writer keeps in memory were keyed on ``records/``'s device and inode. ext4 gives
a freed inode number to the next file or directory made: a session brought back by hand from a
copy (``rm -rf`` it, ``cp -a`` the copy in), which red team 23's fix was for, got a
``records/`` with the very inode of the one removed, and the server went on answering the files
of the directory that was gone. ``records/``'s ctime, which no process can set and which every
entry added, removed or renamed there changes, is now part of that identity.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from app.config import Config
    from app.store import Store
    from app.testing import LiveServer


def _names(server: LiveServer, sid: str) -> list[str]:
    got = httpx.get(f"{server.url}/sessions/{sid}", headers=server.headers)
    assert got.status_code == 200, got.text
    return [f["name"] for f in got.json()["files"]]


def _page_names(server: LiveServer, sid: str) -> list[str]:
    page = httpx.get(f"{server.url}/sessions?limit=100", headers=server.headers)
    assert page.status_code == 200, page.text
    (item,) = [s for s in page.json()["items"] if s["id"] == sid]
    return [f["name"] for f in item["files"]]


def _put(server: LiveServer, sid: str, name: str, data: bytes) -> None:
    url = f"{server.url}/sessions/{sid}/files/{name}"
    put = httpx.put(url, content=data, headers=server.headers)
    assert put.status_code == 201, put.text


def _run(*command: str) -> None:
    subprocess.run(command, check=True)  # rm and cp, as an operator types them


def _copy_back(backup: Path, target: Path, records: Path, inode: int) -> bool:
    """``rm -rf target && cp -a backup target``; whether ``records`` got ``inode`` again.

    ext4 hands the freed number out again at once, unless a journal commit came between the
    two; tried a few times so that the test meets the reuse it is about.
    """
    for _ in range(10):
        _run("rm", "-rf", str(target))
        _run("cp", "-a", str(backup), str(target))
        if records.stat().st_ino == inode:
            return True
    return False


def test_a_session_copied_back_by_hand_onto_a_reused_inode_is_answered_as_copied(
    app_live_server: LiveServer, tmp_path: Path
) -> None:
    server = app_live_server
    assert server.data_root is not None
    sid = httpx.post(f"{server.url}/sessions", json={}, headers=server.headers).json()["id"]
    _put(server, sid, "a.txt", b"a")
    directory = server.data_root / "sessions" / sid
    backup = tmp_path / "backup"
    _run("cp", "-a", str(directory), str(backup))
    _put(server, sid, "b.txt", b"b")
    assert _names(server, sid) == ["a.txt", "b.txt"]  # kept in memory now
    assert _page_names(server, sid) == ["a.txt", "b.txt"]
    inode = (directory / "records").stat().st_ino

    # The operator brings the session back from the copy while the server holds the root
    # (not what the docs advise, and what red team 23 made hold for `mv` aside).
    reused = _copy_back(backup, directory, directory / "records", inode)
    assert _names(server, sid) == ["a.txt"], f"records/ inode reused: {reused}"
    assert _page_names(server, sid) == ["a.txt"]
    gone = httpx.get(f"{server.url}/sessions/{sid}/files/b.txt", headers=server.headers)
    assert gone.status_code == 404, gone.text

    # records/ alone, its inode reused and its mtime kept by cp -a; session.json untouched.
    _put(server, sid, "c.txt", b"c")
    assert _names(server, sid) == ["a.txt", "c.txt"]
    records = directory / "records"
    inode = records.stat().st_ino
    reused = _copy_back(backup / "records", records, records, inode)
    assert _names(server, sid) == ["a.txt"], f"records/ inode reused: {reused}"
    assert _page_names(server, sid) == ["a.txt"]

    # A record removed by hand (and one added back by a rename, as an editor saves).
    _put(server, sid, "d.txt", b"d")
    assert _names(server, sid) == ["a.txt", "d.txt"]
    aside = tmp_path / "d-record"
    os.rename(records / "d.txt", aside)
    assert _names(server, sid) == ["a.txt"]
    os.rename(aside, records / "d.txt")
    assert _names(server, sid) == ["a.txt", "d.txt"]


def test_answers_kept_encoded_are_not_reused_for_records_copied_onto_a_reused_inode(
    app_store: Store, app_config: Config, tmp_path: Path
) -> None:
    # The encoded answers were kept under records/'s device, inode and mtime: `cp -a` keeps
    # the mtime, and ext4 the inode. In process, with answers kept at once (not after 2 s).
    app_store.sessions.meta.settled_ns = 0
    sid = app_store.create_session("kept", {})["id"]
    app_store.put_file(sid, "a.txt", b"a")
    assert app_config.data_root is not None
    records = app_config.data_root / "sessions" / sid / "records"
    backup = tmp_path / "records-copy"
    _run("cp", "-a", str(records), str(backup))
    app_store.put_file(sid, "b.txt", b"b")
    os.utime(records, ns=(backup.stat().st_atime_ns, backup.stat().st_mtime_ns))
    for _ in range(2):  # the second is answered from what was kept
        assert [f["name"] for f in json.loads(app_store.get_session_json(sid))["files"]] == [
            "a.txt",
            "b.txt",
        ]
    reused = _copy_back(backup, records, records, records.stat().st_ino)
    got = json.loads(app_store.get_session_json(sid))
    assert [f["name"] for f in got["files"]] == ["a.txt"], f"records/ inode reused: {reused}"
