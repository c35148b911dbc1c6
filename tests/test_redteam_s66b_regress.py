"""Red team 66 on regress, integrity (branch rt-regress66b): see docs/explanation/attacks/.

What broke: rt-regress65d closed the class "an acknowledged time changed on the disk, served
and dated past" for ``session.json`` alone. A file's record keeps its ``uploaded_at`` beside
the ``size`` and ``sha256`` a download compares with the bytes; nothing compared the time.
One bit of it flipped in ``records/<name>`` (``2026`` made ``2036``) was the file's and the
session's ``updated_at``, the session's next upload was dated after it (the damage written
into a new record), and `app data check` said clean; a trash entry's ``trash.json`` so
changed was restored as acknowledged.

What changed: a record keeps ``content_sha256``, the SHA-256 of its name, size, SHA-256 and
upload time (`app.store.records.record_sha256`), compared on every read; a trash entry's
manifest keeps the record's, compared by a restore and by `app data check`.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from app.errors import FileRecordUnreadableError, TrashCopyLostError
from app.store.records import CONTENT_KEY, RECORD_CHANGED


def invoke(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def _flip_year(path: Path, key: bytes = b'"uploaded_at": "') -> tuple[bytes, str]:
    """One bit of the third digit of the year after ``key`` flipped in place (2026 made
    2036): the same size, still JSON and a time. The bytes before, and the year after."""
    acknowledged = path.read_bytes()
    at = acknowledged.index(key) + len(key) + 2
    damaged = bytearray(acknowledged)
    damaged[at] ^= 0x01
    with open(path, "r+b") as file:  # in place, as a disk's fault is: no rename
        file.write(damaged)
    return acknowledged, damaged[at - 2 : at + 2].decode()


def _store(app_config: Any) -> Any:
    from app.dataroot import open_root
    from app.store import Store

    return open_root(app_config, kind="tests"), Store


def test_an_upload_time_changed_on_the_disk_is_named_never_served_nor_dated_past(
    app_config: Any,
) -> None:
    opening, store_of = _store(app_config)
    with opening as opened:
        store = store_of(opened)
        sid = store.create_session("sent", {})["id"]
        made = store.put_file(sid, "a.txt", io.BytesIO(b"acknowledged"))
    record_path = app_config.data_root / "sessions" / sid / "records" / "a.txt"
    record = json.loads(record_path.read_bytes())
    acknowledged, year = _flip_year(record_path)
    assert year != made["uploaded_at"][:4]

    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        session = store.get_session(sid)
        # Before: the file listed with uploaded_at 2036-..., and the session's updated_at too.
        assert session["files"] == []
        assert not session["updated_at"].startswith(year), session
        with pytest.raises(FileRecordUnreadableError) as refused:
            store.open_file(sid, "a.txt")
        assert "its record is there but the app cannot read it" in str(refused.value)
        with pytest.raises(FileRecordUnreadableError):
            store.put_file(sid, "a.txt", io.BytesIO(b"over it"))
        # Before: dated 2036-..., just after the damaged time.
        other = store.put_file(sid, "b.txt", io.BytesIO(b"y"))
        assert not other["uploaded_at"].startswith(year), other
    code, out = invoke("data", "check")
    assert code == 65, out  # before: 0, clean
    assert f"unknown-entry  sessions/{sid}/records/a.txt" in out, out
    assert RECORD_CHANGED in out, out
    assert f"after an edit made on purpose, remove its {CONTENT_KEY} line" in out, out
    code, out = invoke("data", "check", "--repair")
    assert code == 65, out
    blob = app_config.data_root / "sessions" / sid / "blobs" / record["blob"]
    assert blob.read_bytes() == b"acknowledged"  # left where it is, not taken for an orphan

    # The key: of the four fields an upload answers, as one compact JSON array.
    fields = [made["name"], made["size"], made["sha256"], made["uploaded_at"]]
    canonical = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    assert record[CONTENT_KEY] == hashlib.sha256(canonical.encode()).hexdigest()
    # Put back, it is served as acknowledged again; a record without the key (written
    # before this round) is read as it is in a root an earlier build laid out, whose stamp
    # does not say every record has one (rows67).
    record_path.write_bytes(acknowledged)
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        assert store.list_files(sid)[0]["uploaded_at"] == made["uploaded_at"]
        unkeyed = {k: v for k, v in record.items() if k != CONTENT_KEY}
        record_path.write_text(json.dumps(unkeyed))
        store.close()
    stamp_path = app_config.data_root / ".app-profile.json"
    stamp = json.loads(stamp_path.read_bytes())
    del stamp["content_sha256_since"]
    stamp_path.write_text(json.dumps(stamp))
    with open_root(app_config, kind="tests") as opened:
        assert Store(opened).list_files(sid)[0] == made
    assert invoke("data", "check")[0] == 0


def test_an_upload_time_changed_in_a_trash_entry_is_never_restored_as_acknowledged(
    app_config: Any,
) -> None:
    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        sid = store.create_session("sent", {})["id"]
        made = store.put_file(sid, "a.txt", io.BytesIO(b"acknowledged"))
        entry = store.delete_file(sid, "a.txt")
    manifest_path = app_config.data_root / ".trash" / entry.name / "trash.json"
    manifest = json.loads(manifest_path.read_bytes())
    acknowledged, year = _flip_year(manifest_path)

    code, out = invoke("data", "check")
    assert code == 65, out  # before: 0, clean
    assert f"file-damaged  .trash/{entry.name}/trash.json" in out, out
    assert "a restore of it is refused" in out, out
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        with pytest.raises(TrashCopyLostError) as refused:
            # Before: restored, listed with uploaded_at 2036-... under a key of its own.
            store.restore(sid, file="a.txt")
        said = str(refused.value)
        assert f"has a trash.json whose {RECORD_CHANGED.removeprefix('its ')}" in said, said
        assert "Put that entry's trash.json back from a backup (after an edit made on" in said
        assert "Put the bytes back" not in said, said  # they are whole
        assert store.list_files(sid) == []
    manifest_path.write_bytes(acknowledged)
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        restored = store.restore(sid, file="a.txt")
        assert restored["files"] == [made]
    record = json.loads((app_config.data_root / "sessions" / sid / "records" / "a.txt").read_text())
    assert record[CONTENT_KEY] == manifest["entry"][CONTENT_KEY]  # the key it was deleted with
    assert not year.startswith(made["uploaded_at"][:4])
