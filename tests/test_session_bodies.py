"""The sessions the server answers as bytes: the same JSON as ever, and never stale.

The local store keeps each session's answer encoded (``get_session_json``,
``list_sessions_json``) under session.json's stat, its records' token and records/'s mtime.
These tests make every session settled at once (``settled_ns = 0``), so each read after the
first could come from a kept copy if a validator missed a change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from app.config import Config
from app.errors import SessionNotFoundError
from app.storage import json_body, page_body
from app.store import Store


@pytest.fixture
def store(app_store: Store) -> Store:
    app_store.sessions.meta.settled_ns = 0
    return app_store


def files_of(store: Store, session_id: str) -> list[str]:
    answer = json.loads(store.get_session_json(session_id))
    return [f["name"] for f in answer["files"]]


def listed(store: Store, **kwargs: Any) -> dict[str, Any]:
    page: dict[str, Any] = json.loads(store.list_sessions_json(limit=100, **kwargs))
    return page


def session_json(store: Store, session_id: str) -> Path:
    return store.sessions_dir / session_id / "session.json"


# --- the same answer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"title": "héllo ✓ 𝄞", "n": 2**70, "x": 1e16, "y": -0.0, "z": [None, True, 1.5]},
        {"items": [], "total": 0, "next": None},
        "\u2028",
    ],
)
def test_json_body_is_what_starlettes_json_response_sends(value: Any) -> None:
    assert json_body(value) == JSONResponse(value).body


def test_json_body_refuses_nan_as_the_server_always_did() -> None:
    with pytest.raises(ValueError, match="Out of range float values"):
        json_body({"x": float("nan")})


def test_a_session_and_a_page_as_bytes_are_the_bytes_of_their_dicts(store: Store) -> None:
    ids = [
        store.create_session("plain")["id"],
        store.create_session("ünïcode ✓", {"big": 2**80, "f": 0.1, "nested": {"b": 1, "a": 2}})[
            "id"
        ],
        store.create_session("with files")["id"],
    ]
    store.put_file(ids[2], "b.txt", b"bee")
    store.put_file(ids[2], "a.txt", b"a")
    for _ in range(2):  # read, then kept
        for session_id in ids:
            assert store.get_session_json(session_id) == json_body(store.get_session(session_id))
        for limit, after in [(100, None), (1, None), (1, ids[0]), (2, ids[0]), (5, ids[2])]:
            page = store.list_sessions(limit=limit, after=after)
            body = store.list_sessions_json(limit=limit, after=after)
            assert body == json_body(page.to_dict())


def test_a_page_cut_by_max_bytes_stops_where_the_dict_page_stops(store: Store) -> None:
    for i in range(6):
        store.create_session(f"s{i}", {"blob": "é" * (300 * i)})
    for max_bytes in [1, 500, 1000, 2000, 4000, 10**6]:
        for _ in range(2):
            page = store.list_sessions(limit=100, max_bytes=max_bytes)
            assert store.list_sessions_json(limit=100, max_bytes=max_bytes) == json_body(
                page.to_dict()
            )


def test_page_body_joins_encoded_items_into_the_pages_json() -> None:
    items = [{"id": "a", "t": "ü"}, {"id": "b"}]
    for cursor in [None, "b"]:
        joined = page_body([json_body(i) for i in items], 7, cursor)
        assert joined == json_body({"items": items, "total": 7, "next": cursor})
    assert page_body([], 0, None) == json_body({"items": [], "total": 0, "next": None})


def test_the_routes_send_the_stores_bytes_as_json(
    store: Store, app_client: TestClient, app_config: Config
) -> None:
    session_id = store.create_session("ü", {"n": 2**70})["id"]
    store.put_file(session_id, "a", b"one")
    for _ in range(2):
        got = app_client.get(f"/sessions/{session_id}")
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/json"
        assert got.content == json_body(store.get_session(session_id))
        for limit in ("1", "100", "1000"):
            page = app_client.get("/sessions", params={"limit": limit})
            assert page.headers["content-type"] == "application/json"
            expected = store.list_sessions(limit=int(limit), max_bytes=app_config.page_max_bytes)
            assert page.content == json_body(expected.to_dict())
    missing = app_client.get(f"/sessions/{'0' * 32}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


# --- never stale ---------------------------------------------------------------------------


def test_an_upload_and_a_file_delete_show_at_once_whichever_store_on_the_root_makes_them(
    store: Store,
) -> None:
    other = Store(store.root)
    session_id = store.create_session()["id"]
    assert files_of(store, session_id) == []
    assert listed(store)["items"][0]["files"] == []
    other.put_file(session_id, "a", b"one")
    assert files_of(store, session_id) == ["a"]
    assert [f["name"] for f in listed(store)["items"][0]["files"]] == ["a"]
    store.put_file(session_id, "a", b"two!", replace=True)
    assert json.loads(other.get_session_json(session_id))["files"][0]["size"] == 4
    other.delete_file(session_id, "a")
    assert files_of(store, session_id) == []
    assert listed(store)["items"][0]["files"] == []
    store.restore(session_id, file="a")
    assert files_of(other, session_id) == ["a"]


def test_writes_within_one_tick_of_records_dirs_clock_still_show(store: Store) -> None:
    # records/'s mtime moves in clock ticks of a few milliseconds: two writes in one tick
    # leave it as it was, which putting it back plays here.
    session_id = store.create_session()["id"]
    store.put_file(session_id, "a", b"one")
    records = store.sessions_dir / session_id / "records"
    tick = records.stat().st_mtime_ns
    assert files_of(store, session_id) == ["a"]
    listed(store)
    for change, names in [
        (lambda: store.put_file(session_id, "b", b"bee"), ["a", "b"]),
        (lambda: store.delete_file(session_id, "a"), ["b"]),
    ]:
        change()
        os.utime(records, ns=(tick, tick))
        assert files_of(store, session_id) == names
        assert [f["name"] for f in listed(store)["items"][0]["files"]] == names


def test_a_session_rewritten_out_of_process_with_its_size_and_mtime_put_back_is_read_afresh(
    store: Store,
) -> None:
    session_id = store.create_session("aaaa")["id"]
    path = session_json(store, session_id)
    assert json.loads(store.get_session_json(session_id))["title"] == "aaaa"
    assert listed(store)["items"][0]["title"] == "aaaa"
    before = path.stat()
    path.write_bytes(path.read_bytes().replace(b'"aaaa"', b'"bbbb"'))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert json.loads(store.get_session_json(session_id))["title"] == "bbbb"
    assert listed(store)["items"][0]["title"] == "bbbb"


def test_a_session_json_renamed_over_is_read_afresh(store: Store) -> None:
    session_id = store.create_session("old")["id"]
    path = session_json(store, session_id)
    assert listed(store)["items"][0]["title"] == "old"
    assert json.loads(store.get_session_json(session_id))["title"] == "old"
    replacement = path.with_name("replacement")
    replacement.write_bytes(path.read_bytes().replace(b'"old"', b'"new"'))
    replacement.rename(path)
    assert json.loads(store.get_session_json(session_id))["title"] == "new"
    assert listed(store)["items"][0]["title"] == "new"


def test_a_change_of_records_dir_moves_updated_at_as_it_always_did(store: Store) -> None:
    session_id = store.create_session()["id"]
    store.put_file(session_id, "a", b"one")
    records = store.sessions_dir / session_id / "records"
    assert store.get_session_json(session_id) == json_body(store.get_session(session_id))
    later = records.stat().st_mtime_ns + 3_600 * 10**9
    os.utime(records, ns=(later, later))
    answer = json.loads(store.get_session_json(session_id))
    assert answer["updated_at"] == store.get_session(session_id)["updated_at"]
    assert answer["updated_at"] > answer["files"][0]["uploaded_at"]
    assert listed(store)["items"][0]["updated_at"] == answer["updated_at"]


def test_a_deleted_session_is_not_found_and_not_listed_and_comes_back_restored(
    store: Store,
) -> None:
    session_id = store.create_session("gone")["id"]
    kept = store.get_session_json(session_id)
    assert listed(store)["total"] == 1
    Store(store.root).delete_session(session_id)
    with pytest.raises(SessionNotFoundError):
        store.get_session_json(session_id)
    assert listed(store) == {"items": [], "total": 0, "next": None}
    store.restore(session_id)
    assert store.get_session_json(session_id) == kept


def test_a_session_directory_replaced_by_a_symlink_is_not_answered_from_memory(
    store: Store, tmp_path: Path
) -> None:
    session_id = store.create_session("kept")["id"]
    store.get_session_json(session_id)
    listed(store)
    directory = store.sessions_dir / session_id
    elsewhere = tmp_path / "elsewhere"
    directory.rename(elsewhere)
    directory.symlink_to(elsewhere)
    with pytest.raises(SessionNotFoundError):
        store.get_session_json(session_id)
    assert listed(store)["items"] == []


def test_a_session_changed_in_the_last_two_seconds_is_not_kept(app_store: Store) -> None:
    # A later write within the same clock tick could leave session.json's stat as it was.
    session_id = app_store.create_session("new")["id"]
    app_store.get_session_json(session_id)
    listed(app_store)
    assert len(app_store.sessions.bodies) == 0
    app_store.sessions.meta.settled_ns = 0
    app_store.get_session_json(session_id)
    assert len(app_store.sessions.bodies) == 1


def test_a_reader_answers_the_writers_bytes_without_keeping_any(store: Store) -> None:
    from app.dataroot import open_root

    session_id = store.create_session("shared", {"k": [1, 2]})["id"]
    store.put_file(session_id, "a", b"one")
    with Store(open_root(store.root.config, write=False)) as reader:
        reader.sessions.meta.settled_ns = 0
        assert reader.get_session_json(session_id) == store.get_session_json(session_id)
        assert reader.list_sessions_json() == store.list_sessions_json()
        assert len(reader.sessions.bodies) == 0


def test_the_kept_bodies_are_bounded_in_bytes_and_answer_only_their_validator() -> None:
    from app.store.records import ValidatedCache

    cache: ValidatedCache[bytes] = ValidatedCache(limit=10)
    cache.put("a", 1, b"aaaa", 4)
    cache.put("b", 1, b"bbbb", 4)
    assert cache.get("a", 2) is None  # another validator: changed since
    assert cache.get("a", 1) == b"aaaa"  # and now the most recently used
    cache.put("c", 1, b"cccc", 4)
    assert (cache.get("a", 1), cache.get("b", 1), cache.get("c", 1)) == (b"aaaa", None, b"cccc")
    cache.put("a", 2, b"a" * 11, 11)  # too large to keep: and the old one goes too
    assert (cache.get("a", 1), cache.get("a", 2), len(cache)) == (None, None, 1)
