"""Red team 65 on regress, session.json's ``content_sha256`` (branch rt-regress65c): see
docs/explanation/attacks/.

What broke: a session the app itself wrote was refused as changed. The store's own API
(``create_session``, as a Python caller or a plugin's fixture uses it) took metadata with keys
that are not strings (``{2: "a", 10: "b"}``): JSON writes them as text, so ``session.json``
held ``{"10": "b", "2": "a"}``, while the SHA-256 written beside it was of the keys as the
caller gave them, sorted as numbers. Every read then found the hash of other content: the
session, 201 a moment before, was ``session_unreadable`` for good (and its create answered
metadata with keys no read would ever give back).

What changed: the store refuses a key that is not a string, at any depth, as it refuses
NaN and an unpaired surrogate (a JSON object's keys are strings: RFC 8259, 4); the server's
parser never gives one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from app.errors import BadRequestError, UnreadableSessionError
from app.storage import Storage
from app.store.records import CONTENT_KEY, content_sha256


def invoke(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        ({2: "a", 10: "b"}, "2"),
        ({"outer": {1.5: "x"}}, "1.5"),
        ({"list": [{None: 1}]}, "None"),
        ({True: "yes"}, "True"),
    ],
    ids=["int-keys", "nested-float-key", "null-key-in-a-list", "bool-key"],
)
def test_metadata_keys_that_are_not_strings_are_refused_and_nothing_is_made(
    app_store: Storage, metadata: dict[object, object], named: str
) -> None:
    before = app_store.list_sessions(limit=10).total
    with pytest.raises(BadRequestError) as refused:
        app_store.create_session("keys", metadata)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "not a string" in message, message
    assert named in message, message
    assert "nothing was stored" in message, message
    assert "as a string" in message, message  # what resolves it
    assert app_store.list_sessions(limit=10).total == before


def test_a_created_session_reads_back_with_the_content_its_hash_was_written_for(
    app_store: Storage,
) -> None:
    # The values JSON carries whose text differs from a naive round trip: -0.0, an exponent,
    # the largest exact integer, a key order the sort reverses, text in NFD and astral planes.
    metadata = {
        "z": -0.0,
        "a": [1e16, 5e-324, 9007199254740991, -9007199254740991, 1.5],
        "e\u0301": "\U0001f600\u2028\ufeff",
        "10": {"2": None, "1": [True, False, {}]},
    }
    made = app_store.create_session("t\u00e9\u0065\u0301", metadata)
    read = app_store.get_session(made["id"])
    assert read == made
    # -0.0 == 0.0: the text tells them apart.
    assert json.dumps(read, sort_keys=True) == json.dumps(made, sort_keys=True)
    if hasattr(app_store, "sessions_dir"):  # a data root: the file as written
        stored = json.loads(
            (app_store.sessions_dir / made["id"] / "session.json").read_bytes()  # type: ignore[attr-defined]
        )
        kept = stored.pop(CONTENT_KEY)
        stored.pop("updated_at", None)
        assert kept == content_sha256(stored)


def test_the_migration_of_a_legacy_layout_keeps_the_content_sha256_it_found(
    app_config: Any,
) -> None:
    """A session made by this build, its files then listed in session.json by a build from
    before records/ (a downgrade, as `test_integrity`'s migration test makes one): the
    repair's migration rewrote session.json without ``content_sha256``, and a title changed
    on the disk after it was served as acknowledged, `app data check` clean."""
    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        sid = Store(opened).create_session("sent", {"n": 1})["id"]
    directory = app_config.data_root / "sessions" / sid
    meta = json.loads((directory / "session.json").read_text())
    assert CONTENT_KEY in meta
    (directory / "files").mkdir()
    (directory / "files" / "a.txt").write_bytes(b"first")
    listed = [{"name": "a.txt", "size": 5, "sha256": hashlib.sha256(b"first").hexdigest()}]
    (directory / "session.json").write_text(json.dumps({**meta, "files": listed}))
    code, out = invoke("data", "check", "--repair")
    assert code == 0, out
    migrated = json.loads((directory / "session.json").read_text())
    assert "files" not in migrated
    assert migrated.get(CONTENT_KEY) == meta[CONTENT_KEY], migrated
    # And it still guards: one letter of the title flipped on the disk is named, not served.
    raw = (directory / "session.json").read_bytes()
    (directory / "session.json").write_bytes(raw.replace(b'"sent"', b'"sENT"'))
    code, out = invoke("data", "check")
    assert code != 0, out
    assert f"session-unreadable  sessions/{sid}" in out, out
    assert "other than those its create acknowledged" in out, out
    with open_root(app_config, write=False) as opened, pytest.raises(UnreadableSessionError):
        Store(opened).get_session(sid)


@pytest.mark.parametrize(
    "misspelled",
    [b'"content_sha257"', b'"content_sha256 "', b'"Content_sha256"', b'"note"'],
    ids=["one-bit-flipped", "a-space", "a-capital", "a-tool-s-own-key"],
)
def test_a_key_no_build_writes_is_named_never_served_nor_a_way_past_the_check(
    app_store: Storage, app_client: Any, misspelled: bytes
) -> None:
    """One bit of ``content_sha256``'s name flipped (``"content_sha257"``) made the file one
    "without the key", read unchecked: the hash (never part of an answer) was served under
    its new name, in GET and in every page, and a title damaged after it was served as
    acknowledged, `app data check` clean."""
    if not hasattr(app_store, "sessions_dir"):
        pytest.skip("session.json is a data root's file")
    made = app_client.post("/sessions", json={"title": "sent", "metadata": {"n": 1}})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    kept = app_client.post("/sessions", json={"title": "kept"}).json()["id"]
    path = app_store.sessions_dir / sid / "session.json"  # type: ignore[attr-defined]
    acknowledged = path.read_bytes()
    if misspelled == b'"note"':  # a key added by hand beside the app's
        damaged = acknowledged.replace(b"{\n", b'{\n  "note": "by hand",\n', 1)
    else:
        damaged = acknowledged.replace(b'"content_sha256"', misspelled)
    path.write_bytes(damaged.replace(b'"sent"', b'"sENT"'))
    name = misspelled.decode().strip('"')

    got = app_client.get(f"/sessions/{sid}")
    assert got.status_code == 500, got.text
    assert got.json()["code"] == "session_unreadable"
    assert (
        f"its session.json has the key {name!r}, which no build of the app writes"
        in (got.json()["detail"])
    )
    assert "remove that key" in got.json()["detail"]
    page = app_client.get("/sessions").json()
    assert [s["id"] for s in page["items"]] == [kept]
    assert [(s["id"], s["reason"]) for s in page["left_out"]] == [(sid, "unreadable")]
    assert b"sENT" not in app_client.get("/sessions").content
    found = [(f.problem, f.target, f.detail, f.repair) for f in app_store.check().findings]
    assert found == [
        (
            "session-unreadable",
            f"sessions/{sid}",
            (
                f"a session directory whose session.json has the key {name!r}, which no build of "
                "the app writes: damage from outside the app, or an edit by hand"
            ),
            (
                "nothing: left for a human (restore session.json from a backup; after an edit "
                "made on purpose, remove that key)"
            ),
        )
    ]
    # Put back, it is served as acknowledged again.
    path.write_bytes(acknowledged)
    assert app_client.get(f"/sessions/{sid}").json()["title"] == "sent"
