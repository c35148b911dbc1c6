"""Red team 65 on regress, session.json's ``updated_at`` (branch rt-regress65d): see
docs/explanation/attacks/.

What broke: ``content_sha256`` covered a session's id, title, metadata and creation time,
not its ``updated_at``, which a create writes equal to ``created_at`` and which nothing
rewrites. One bit of it flipped on the disk (``2026`` made ``2036``, the same size, still
JSON and a time) was every answer's ``updated_at``, the next upload's record was dated
after it (the damage written into a new record), and `app data check` said clean.

What changed: the hash covers ``updated_at`` too where it is not ``created_at`` (the legacy
migration keeps an earlier build's), so the key of every session.json written before is the
same.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from app.errors import UnreadableSessionError
from app.storage import Storage
from app.store.records import CONTENT_CHANGED, CONTENT_KEY


def invoke(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def test_an_update_time_changed_on_the_disk_is_named_never_served_nor_dated_past(
    app_store: Storage, app_client: Any
) -> None:
    made = app_client.post("/sessions", json={"title": "sent", "metadata": {"n": 1}})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    path = app_store.sessions_dir / sid / "session.json"  # type: ignore[attr-defined]
    acknowledged = path.read_bytes()
    meta = json.loads(acknowledged)
    # The key of a session.json written before this round is unchanged: of the four fields.
    four = [meta["id"], meta["title"], meta["metadata"], meta["created_at"]]
    canonical = json.dumps(four, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert meta[CONTENT_KEY] == hashlib.sha256(canonical.encode()).hexdigest()
    assert meta["updated_at"] == meta["created_at"]

    at = acknowledged.index(b'"updated_at": "') + len(b'"updated_at": "') + 2
    damaged = bytearray(acknowledged)
    damaged[at] ^= 0x01  # one bit: "2026-..." made "2036-..."
    path.write_bytes(bytes(damaged))
    year = json.loads(bytes(damaged))["updated_at"][:4]
    assert year != meta["updated_at"][:4]

    got = app_client.get(f"/sessions/{sid}")
    # Before: 200, "updated_at": "2036-...".
    assert got.status_code == 500, got.text
    assert got.json()["code"] == "session_unreadable"
    assert CONTENT_CHANGED in got.json()["detail"]
    page = app_client.get("/sessions").json()
    assert page["items"] == []
    assert [(s["id"], s["reason"]) for s in page["left_out"]] == [(sid, "unreadable")]
    # Before: 201, its record's uploaded_at dated 2036 (past the damaged time).
    upload = app_client.put(f"/sessions/{sid}/files/a.txt", content=b"x")
    assert upload.status_code == 500, upload.text
    assert upload.json()["code"] == "session_unreadable"
    assert not list((path.parent / "records").glob("*"))
    code, out = invoke("data", "check")
    assert code != 0, out
    assert f"session-unreadable  sessions/{sid}" in out, out
    assert "creation or update time other than those its create acknowledged" in out, out
    # Put back, it is served as acknowledged again.
    path.write_bytes(acknowledged)
    assert app_client.get(f"/sessions/{sid}").json()["updated_at"] == meta["updated_at"]


def test_a_migrated_session_keeps_its_earlier_update_time_guarded(app_config: Any) -> None:
    """The one writer that keeps an ``updated_at`` other than ``created_at``: the legacy
    migration of a session this build made whose files a build from before records/ then
    listed (and dated later). Served with it after the repair; that time changed is refused."""
    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        sid = Store(opened).create_session("sent", {"n": 1})["id"]
    directory = app_config.data_root / "sessions" / sid
    meta = json.loads((directory / "session.json").read_text())
    later = (datetime.fromisoformat(meta["created_at"]) + timedelta(hours=1)).isoformat()
    (directory / "files").mkdir()
    (directory / "files" / "a.txt").write_bytes(b"first")
    listed = [{"name": "a.txt", "size": 5, "sha256": hashlib.sha256(b"first").hexdigest()}]
    (directory / "session.json").write_text(
        json.dumps({**meta, "updated_at": later, "files": listed})
    )
    code, out = invoke("data", "check", "--repair")
    assert code == 0, out
    migrated = json.loads((directory / "session.json").read_text())
    assert migrated["updated_at"] == later
    assert migrated[CONTENT_KEY] != meta[CONTENT_KEY]  # of the five fields now
    with open_root(app_config, write=False) as opened:
        assert Store(opened).get_session(sid)["updated_at"] >= later
    code, out = invoke("data", "check")
    assert code == 0, out
    raw = (directory / "session.json").read_bytes()
    year = later[:4].encode()
    flipped = str(int(later[:4]) + 10).encode()  # one bit of its third digit
    (directory / "session.json").write_bytes(
        raw.replace(b'"updated_at": "' + year, b'"updated_at": "' + flipped)
    )
    code, out = invoke("data", "check")
    assert code != 0, out
    assert f"session-unreadable  sessions/{sid}" in out, out
    with open_root(app_config, write=False) as opened, pytest.raises(UnreadableSessionError):
        Store(opened).get_session(sid)
