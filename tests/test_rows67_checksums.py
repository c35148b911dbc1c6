"""What integrity's checksums left out, on a data root (branch rows67): see
docs/explanation/attacks/layer-7-atomic-writes.md.

What got through: a ``session.json``, a file's record or a trash entry's ``trash.json``
without its ``content_sha256`` was read as one written before the key existed, unchecked.
An edit that removed the line, whatever else it changed (a title, an upload time), was
served as acknowledged; and a trash entry's title, kept by its ``trash.json``, had no key at
all: changed on the disk, it was listed as the title the session had when it was deleted.

What changed: a root this build lays out says in its stamp (``content_sha256_since``,
written before its first write) that every one of them carries its key, and one without is
damage; ``trash.json`` keeps the SHA-256 of its own fields. A root an earlier build laid out
reads as before until the repair (`app data check --repair`, which every server start-up
runs) has hashed what it holds and marked it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from app.dataroot import STAMP_FILE
from app.errors import UnreadableSessionError
from app.store.records import CONTENT_KEY

#: The stamp's mark (`app.dataroot.HASHED_KEY`), spelt out: these tests run against the build
#: before it too, to see them fail there.
HASHED_KEY = "content_sha256_since"


def invoke(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def _unkeyed(path: Path, **changed: Any) -> None:
    """``path``'s JSON with its ``content_sha256`` line removed and ``changed`` set: the
    edit of someone who knows the key is checked only where it is."""
    found = json.loads(path.read_bytes())
    del found[CONTENT_KEY]
    path.write_text(json.dumps({**found, **changed}, indent=2))


def _made(app_config: Any) -> tuple[str, dict[str, Any]]:
    """A session with one file, made by this build; its id and the file's entry."""
    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        sid = store.create_session("acknowledged", {"k": 1})["id"]
        made = store.put_file(sid, "a.txt", io.BytesIO(b"bytes"))
    return sid, made


def _earlier_build(root: Path) -> None:
    """The root as a build from before this one left it: its stamp without the mark."""
    stamp = json.loads((root / STAMP_FILE).read_bytes())
    del stamp[HASHED_KEY]
    (root / STAMP_FILE).write_text(json.dumps(stamp, indent=2))


def test_a_key_removed_with_an_edit_is_refused_in_a_root_this_build_laid_out(
    app_config: Any,
) -> None:
    from app.dataroot import open_root
    from app.store import Store

    sid, _ = _made(app_config)
    root = app_config.data_root
    assert HASHED_KEY in json.loads((root / STAMP_FILE).read_bytes())  # before the first write
    session_dir = root / "sessions" / sid
    _unkeyed(session_dir / "session.json", title="edited")

    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        # Before: the title "edited" served as acknowledged.
        with pytest.raises(UnreadableSessionError) as refused:
            store.get_session(sid)
        message = str(refused.value)
        assert f"has no {CONTENT_KEY}, which every session.json of this data root" in message
        assert "remove the content_sha256_since line of the root's stamp" in message
        assert "`app data check --repair`, which hashes the session again" in message
    code, out = invoke("data", "check")
    assert code == 65, out  # before: 0, clean
    assert f"session-unreadable  sessions/{sid}" in out, out
    assert f"session.json has no {CONTENT_KEY}" in out, out
    assert f"remove the {HASHED_KEY} line of the root's stamp, {STAMP_FILE}" in out, out
    # The repair does not hash them: in a marked root a missing key is damage.
    code, out = invoke("data", "check", "--repair")
    assert code == 65, out
    assert CONTENT_KEY not in json.loads((session_dir / "session.json").read_bytes())
    assert f"session.json has no {CONTENT_KEY}" in out, out


def test_a_record_without_its_key_is_named_with_what_resolves_it(app_config: Any) -> None:
    from app.dataroot import open_root
    from app.store import Store

    sid, made = _made(app_config)
    record = app_config.data_root / "sessions" / sid / "records" / "a.txt"
    _unkeyed(record, uploaded_at="2036-01-01T00:00:00.000000+00:00")
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        assert store.list_files(sid) == []  # before: listed, dated 2036
        assert not store.get_session(sid)["updated_at"].startswith("2036")
    code, out = invoke("data", "check")
    assert code == 65, out  # before: 0, clean
    assert f"unknown-entry  sessions/{sid}/records/a.txt" in out, out
    assert (
        f"it has no {CONTENT_KEY}, which every record of this data root (on PostgreSQL, every "
        "file's row of this database) carries since its stamp's content_sha256_since"
    ) in out, out
    assert "with no server on the root, the content_sha256_since line of the root's" in out, out
    # What resolves it, done: the stamp's line removed, the repair hashes it and marks again.
    _earlier_build(app_config.data_root)
    code, out = invoke("data", "check", "--repair")
    assert "content-unhashed" in out, out
    assert HASHED_KEY in json.loads((app_config.data_root / STAMP_FILE).read_bytes())
    with open_root(app_config, kind="tests") as opened:
        [listed] = Store(opened).list_files(sid)
    assert listed == {**made, "uploaded_at": "2036-01-01T00:00:00.000000+00:00"}


def test_a_root_an_earlier_build_laid_out_reads_as_before_until_the_repair_marks_it(
    app_config: Any,
) -> None:
    from app.dataroot import open_root
    from app.store import Store

    sid, made = _made(app_config)
    root = app_config.data_root
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        gone = store.create_session("deleted", {})["id"]
        entry = store.delete_session(gone)
    # As a build from before the keys wrote them: no stamp mark, no key anywhere.
    _earlier_build(root)
    session_dir = root / "sessions" / sid
    _unkeyed(session_dir / "session.json")
    _unkeyed(session_dir / "records" / "a.txt")
    _unkeyed(entry.path / "trash.json")
    _unkeyed(entry.path / "session" / "session.json")

    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        assert store.get_session(sid)["title"] == "acknowledged"
        assert store.list_files(sid) == [made]
        assert [e.title for e in store.list_trash()] == ["deleted"]
    code, out = invoke("data", "check")
    assert code == 0, out  # read as they are, nothing to report until the repair
    code, out = invoke("data", "check", "--repair")
    assert code == 0, out
    assert (
        "content-unhashed  .app-profile.json: files an earlier build wrote without their "
        "content_sha256 (2 session.json, 1 record, 1 trash.json)"
    ) in out, out
    assert HASHED_KEY in json.loads((root / STAMP_FILE).read_bytes())
    for path in (
        session_dir / "session.json",
        session_dir / "records" / "a.txt",
        entry.path / "trash.json",
        entry.path / "session" / "session.json",
    ):
        assert CONTENT_KEY in json.loads(path.read_bytes()), path
    assert '"operation": "hash"' in (root / "audit.jsonl").read_text()
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        assert store.get_session(sid)["title"] == "acknowledged"
        assert store.list_files(sid) == [made]
        store.restore(gone)
        assert store.get_session(gone)["title"] == "deleted"
    assert invoke("data", "check")[0] == 0
    # Marked now: the same removal is refused.
    _unkeyed(session_dir / "session.json", title="edited")
    with open_root(app_config, kind="tests") as opened, pytest.raises(UnreadableSessionError):
        Store(opened).get_session(sid)


def test_a_trashed_session_s_title_changed_in_its_trash_json_is_not_listed(
    app_config: Any,
) -> None:
    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        gone = store.create_session("acknowledged", {})["id"]
        entry = store.delete_session(gone)
    manifest = entry.path / "trash.json"
    kept = manifest.read_bytes()
    manifest.write_bytes(kept.replace(b'"acknowledged"', b'"edited"'))
    with open_root(app_config, kind="tests") as opened:
        [listed] = Store(opened).list_trash()
        assert listed.title is None  # before: "edited", listed as the deleted session's
        assert listed.reason == "unknown"
    code, out = invoke("data", "check")
    assert code == 65, out  # before: 0, clean
    assert f"trash-no-manifest  .trash/{entry.name}/trash.json" in out, out
    assert f"its {CONTENT_KEY} is not the SHA-256 of its fields, or it has none" in out, out
    assert "put the entry's trash.json back from a backup" in out, out
    # Its key removed too, in a root that requires it: the same.
    _unkeyed(manifest)
    with open_root(app_config, kind="tests") as opened:
        assert Store(opened).list_trash()[0].title is None
    manifest.write_bytes(kept)
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        assert store.list_trash()[0].title == "acknowledged"
        store.restore(gone)
        assert store.get_session(gone)["title"] == "acknowledged"


def test_a_restamp_keeps_the_mark(app_config: Any) -> None:
    """Held: `app data restamp` writes a new stamp; what the root holds is as hashed under
    any profile, so the new one keeps `content_sha256_since` (without it, every key removed
    after the hand-over would read unchecked)."""
    from app.dataroot import restamp

    _made(app_config)
    path = app_config.data_root / STAMP_FILE
    stamp = json.loads(path.read_bytes())
    path.write_text(json.dumps({**stamp, "profile": "development"}))
    made = restamp(app_config, "development")
    assert (made["profile"], made[HASHED_KEY]) == ("testing", stamp[HASHED_KEY])
    assert json.loads(path.read_bytes())[HASHED_KEY] == stamp[HASHED_KEY]
