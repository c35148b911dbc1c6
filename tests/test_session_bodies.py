"""The sessions the server answers as bytes: the same JSON as ever, and never stale.

The local store keeps each session's answer encoded (``get_session_json``,
``list_sessions_json``) under session.json's stat, its records' token and records/'s mtime.
These tests make every session settled at once (``settled_ns = 0``), so each read after the
first could come from a kept copy if a validator missed a change; each runs twice, with each
kept answer checked by its stat calls, and as the server reads, trusting the kernel's change
events (`app.store.watch`) instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from session_files import edited, record_edited
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from app.config import Config
from app.errors import SessionNotFoundError
from app.storage import LEFT_OUT_LINKED, LeftOut, Page, json_body, page_body
from app.store import Store


@pytest.fixture(params=["stat calls", "watched"])
def store(app_store: Store, request: pytest.FixtureRequest) -> Iterator[Store]:
    """The store, with every read checked by its stat calls, or as the server reads: kept
    answers trusted on the kernel's change events (`app.store.watch`)."""
    app_store.sessions.meta.settled_ns = 0
    if request.param == "watched":
        assert app_store.watch_sessions()
    yield app_store
    if app_store.sessions.watch is not None:
        app_store.sessions.watch.close()
        app_store.sessions.watch = None


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
        assert joined == json_body({"items": items, "total": 7, "next": cursor, "left_out": []})
    empty = {"items": [], "total": 0, "next": None, "left_out": []}
    assert page_body([], 0, None) == json_body(empty)
    passed = LeftOut("c", LEFT_OUT_LINKED, "why ü")
    assert page_body([], 1, None, [passed]) == json_body(
        {**empty, "total": 1, "left_out": [{"id": "c", "reason": "linked", "message": "why ü"}]}
    )
    assert page_body([], 1, None, [passed]) == json_body(Page([], 1, None, (passed,)).to_dict())


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
    path.write_bytes(edited(path.read_bytes(), b'"aaaa"', b'"bbbb"'))
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
    replacement.write_bytes(edited(path.read_bytes(), b'"old"', b'"new"'))
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
    assert listed(store) == {"items": [], "total": 0, "next": None, "left_out": []}
    store.restore(session_id)
    back = json.loads(store.get_session_json(session_id))
    # Dated by its restore (red team 59), the rest as it was.
    before = json.loads(kept)
    assert back.pop("updated_at") > before.pop("updated_at")
    assert back == before


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


# --- the watch: what the server's reads trust instead of three stat calls a session ---------


@pytest.fixture
def watched(app_store: Store) -> Iterator[Store]:
    app_store.sessions.meta.settled_ns = 0
    assert app_store.watch_sessions()
    yield app_store
    app_store.close()


def stat_calls(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sessions whose session.json is stat'ed from now on (each check of a kept answer
    begins with one)."""
    calls: list[str] = []
    real = store.sessions.meta.stat

    def counting(directory: str, session_id: str) -> tuple[int, ...]:
        calls.append(session_id)
        return real(directory, session_id)

    monkeypatch.setattr(store.sessions.meta, "stat", counting)
    return calls


def titles(store: Store) -> list[str]:
    return [item["title"] for item in listed(store)["items"]]


def test_a_watched_kept_page_makes_no_stat_call_until_one_of_its_sessions_changes(
    watched: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [watched.create_session(f"s{n}")["id"] for n in range(3)]
    watched.put_file(ids[1], "a", b"one")
    first = listed(watched)
    one = watched.get_session_json(ids[0])
    calls = stat_calls(watched, monkeypatch)
    assert listed(watched) == first
    assert watched.get_session_json(ids[0]) == one
    assert calls == []
    path = session_json(watched, ids[2])
    path.write_bytes(edited(path.read_bytes(), b'"s2"', b'"t2"'))  # in place, by hand
    assert titles(watched) == ["s0", "s1", "t2"]
    assert set(calls) == {ids[2]}  # the one changed, checked and read again
    Store(watched.root).put_file(ids[0], "b", b"two")  # another store on the root
    assert [f["name"] for f in listed(watched)["items"][0]["files"]] == ["b"]


def test_a_watched_session_json_changed_through_a_hard_link_elsewhere_shows(
    watched: Store, tmp_path: Path
) -> None:
    # The session's directory hears nothing of it: the watch on the file itself does.
    session_id = watched.create_session("aaaa")["id"]
    path = session_json(watched, session_id)
    link = tmp_path / "link"
    os.link(path, link)
    assert titles(watched) == ["aaaa"]
    assert titles(watched) == ["aaaa"]  # kept, and trusted
    with link.open("r+b", buffering=0) as file:  # written, and still open
        data = file.read()
        file.seek(0)
        file.write(edited(data, b'"aaaa"', b'"bbbb"'))
        assert titles(watched) == ["bbbb"]
        assert json.loads(watched.get_session_json(session_id))["title"] == "bbbb"


def test_a_watched_answer_is_checked_again_once_older_than_the_watchs_max_age(
    watched: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # For what the kernel does not report (a mount over a session, another machine's write).
    from app.store.watch import MAX_AGE_SECONDS

    assert MAX_AGE_SECONDS == 1.0
    session_id = watched.create_session("x")["id"]
    listed(watched)
    calls = stat_calls(watched, monkeypatch)
    listed(watched)
    assert calls == []
    assert watched.sessions.watch is not None
    watched.sessions.watch.max_age = 0.0
    listed(watched)
    assert calls == [session_id]


def test_sessions_swapped_for_a_copy_under_a_watch_are_read_from_the_copy(
    watched: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    session_id = watched.create_session("original")["id"]
    assert titles(watched) == ["original"]
    sessions = watched.sessions_dir
    copy = sessions.with_name("copy")
    shutil.copytree(sessions, copy, symlinks=True)
    sessions.rename(sessions.with_name("put-aside"))
    copy.rename(sessions)
    path = session_json(watched, session_id)
    path.write_bytes(edited(path.read_bytes(), b'"original"', b'"copied!!"'))
    assert titles(watched) == ["copied!!"]
    calls = stat_calls(watched, monkeypatch)
    assert titles(watched) == ["copied!!"]
    assert calls == [session_id]  # no watch any more: checked by its stat calls


def test_lost_events_make_every_watched_answer_checked_again(
    watched: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import struct

    ids = [watched.create_session(f"s{n}")["id"] for n in range(2)]
    listed(watched)
    calls = stat_calls(watched, monkeypatch)
    assert watched.sessions.watch is not None
    watched.sessions.watch._take(struct.pack("iIII", -1, 0x4000, 0, 0))  # IN_Q_OVERFLOW
    listed(watched)
    assert calls == ids


def test_a_watched_session_changed_in_the_last_two_seconds_is_kept_on_the_watchs_word_only(
    app_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not settled (the default two seconds): the stat calls cannot tell two writes in one
    # clock tick apart, an event can. Kept apart from the settled answers, for a second.
    assert app_store.watch_sessions()
    session_id = app_store.create_session("aaaa")["id"]
    assert titles(app_store) == ["aaaa"]
    assert (len(app_store.sessions.bodies), len(app_store.sessions.unsettled)) == (0, 1)
    calls = stat_calls(app_store, monkeypatch)
    assert titles(app_store) == ["aaaa"]
    assert calls == []
    path = session_json(app_store, session_id)
    before = path.stat()
    path.write_bytes(edited(path.read_bytes(), b'"aaaa"', b'"bbbb"'))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as if in the same tick
    assert titles(app_store) == ["bbbb"]
    assert json.loads(app_store.get_session_json(session_id))["title"] == "bbbb"
    assert app_store.sessions.watch is not None
    app_store.sessions.watch.max_age = 0.0  # past its second: checked by its stat calls
    calls.clear()
    assert titles(app_store) == ["bbbb"]
    assert calls
    app_store.close()


# --- what else changes a session's bytes: each must show (the branch `watch20`) -------------


def record_of(store: Store, session_id: str, name: str) -> Path:
    return store.sessions_dir / session_id / "records" / name


def sizes(store: Store, session_id: str) -> list[int]:
    """The sizes a get and a page of 100 answer for the session's files (both must agree)."""
    got = [f["size"] for f in json.loads(store.get_session_json(session_id))["files"]]
    (item,) = [i for i in listed(store)["items"] if i["id"] == session_id]
    assert [f["size"] for f in item["files"]] == got
    return got


def kept_with_one_record(store: Store) -> tuple[str, Path]:
    """A session with one file of 3 bytes, read twice (kept, and trusted if watched)."""
    session_id = store.create_session()["id"]
    store.put_file(session_id, "a", b"one")
    for _ in range(2):
        assert sizes(store, session_id) == [3]
    if store.sessions.watch is None:
        # Checked by its stat calls, which never see a record's bytes change: the records are
        # read again once a second old (RECORDS_MAX_AGE_SECONDS); here at once.
        store.sessions.records_max_age = 0.0
    return session_id, record_of(store, session_id, "a")


def resized(data: bytes) -> bytes:
    assert b'"size": 3' in data
    return record_edited(data, b'"size": 3', b'"size": 7')  # as an edit made on purpose


def rewrite_truncated(path: Path) -> None:
    data = path.read_bytes()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, resized(data))
    finally:
        os.close(fd)


def rewrite_with_times_put_back(path: Path) -> None:
    before = path.stat()
    rewrite_truncated(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def rewrite_through_copy_file_range(path: Path) -> None:
    source = path.parent.parent / "source"  # outside records/: its identity stays
    source.write_bytes(resized(path.read_bytes()))
    with source.open("rb") as src, path.open("r+b") as dst:
        os.copy_file_range(src.fileno(), dst.fileno(), source.stat().st_size)
    source.unlink()


def cut_by_truncate(path: Path) -> None:
    os.truncate(path, 10)  # no longer a record: the file is not shown


def grown_by_fallocate(path: Path) -> None:
    with path.open("r+b") as file:
        os.posix_fallocate(file.fileno(), 0, path.stat().st_size + 4096)  # NULs: not a record


@pytest.mark.parametrize(
    "change",
    [
        rewrite_truncated,
        rewrite_with_times_put_back,
        rewrite_through_copy_file_range,
        cut_by_truncate,
        grown_by_fallocate,
    ],
)
def test_a_record_changed_in_place_by_hand_shows(store: Store, change: Any) -> None:
    session_id, path = kept_with_one_record(store)
    change(path)
    assert sizes(store, session_id) == ([7] if "rewrite" in change.__name__ else [])


def test_a_record_written_through_a_descriptor_opened_before_and_passed_along_shows(
    store: Store,
) -> None:
    import socket

    session_id = store.create_session()["id"]
    store.put_file(session_id, "a", b"one")
    path = record_of(store, session_id, "a")
    opened = os.open(path, os.O_RDWR)  # before the answer is kept and trusted
    left, right = socket.socketpair(socket.AF_UNIX)
    try:
        for _ in range(2):
            assert sizes(store, session_id) == [3]
        if store.sessions.watch is None:
            store.sessions.records_max_age = 0.0
        socket.send_fds(left, [b"x"], [opened])  # as another process would hand it over
        _, (passed,), _, _ = socket.recv_fds(right, 1, 1)
        data = resized(os.pread(passed, 4096, 0))
        os.pwrite(passed, data, 0)
        os.close(passed)
        assert sizes(store, session_id) == [7]
    finally:
        os.close(opened)
        left.close()
        right.close()


def test_a_record_made_after_the_session_was_first_watched_is_watched_too(
    watched: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id = watched.create_session()["id"]
    assert files_of(watched, session_id) == []  # watched, before records/ is there
    watched.put_file(session_id, "a", b"one")  # records/ made by the first upload
    for _ in range(2):
        assert sizes(watched, session_id) == [3]
    calls = stat_calls(watched, monkeypatch)
    assert sizes(watched, session_id) == [3]
    assert calls == []  # trusted on the watch's word
    watch = watched.sessions.watch
    assert watch is not None
    assert len(watch._dirs[f"{watched.sessions.where}/{session_id}"]) == 3  # records/ too
    rewrite_truncated(record_of(watched, session_id, "a"))
    assert sizes(watched, session_id) == [7]


def test_lost_events_make_every_kept_answer_read_again_records_too(watched: Store) -> None:
    import struct

    ids = [watched.create_session(f"s{n}")["id"] for n in range(3)]
    for session_id in ids:
        watched.put_file(session_id, "a", b"one")
    for _ in range(2):
        assert [sizes(watched, i) for i in ids] == [[3]] * 3
    for session_id in ids:
        rewrite_truncated(record_of(watched, session_id, "a"))
    watch = watched.sessions.watch
    assert watch is not None
    while True:  # the events are lost: the kernel says only that some were
        try:
            os.read(watch._fd, 65536)
        except BlockingIOError:
            break
    watch._take(struct.pack("iIII", -1, 0x4000, 0, 0))  # IN_Q_OVERFLOW
    assert [sizes(watched, i) for i in ids] == [[7]] * 3


def test_an_unwatched_session_reads_its_records_again_after_a_second(
    watched: Store,
) -> None:
    # Past the watch's allowance (a quarter of max_user_watches): checked by its stat calls.
    assert watched.sessions.watch is not None
    watched.sessions.watch._limit = 0
    session_id = watched.create_session()["id"]
    watched.put_file(session_id, "a", b"one")
    for _ in range(2):
        assert sizes(watched, session_id) == [3]
    rewrite_truncated(record_of(watched, session_id, "a"))
    assert watched.sessions.records_max_age == 1.0
    watched.sessions.records_max_age = 0.0  # a second later
    assert sizes(watched, session_id) == [7]


def test_a_record_hard_linked_elsewhere_is_read_again_on_every_read(
    watched: Store, tmp_path: Path
) -> None:
    # Written through its other name, the record's directory (watched) hears nothing.
    session_id = watched.create_session()["id"]
    watched.put_file(session_id, "a", b"one")
    link = tmp_path / "link"
    os.link(record_of(watched, session_id, "a"), link)
    for _ in range(2):
        assert sizes(watched, session_id) == [3]
    rewrite_truncated(link)
    assert sizes(watched, session_id) == [7]


def test_a_watched_sessions_records_are_read_again_at_least_once_a_minute(
    watched: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # For what no event tells (a write through a shared mapping, a bind mount over records/).
    import mmap

    from app.store.sessions import WATCHED_RECORDS_MAX_AGE_SECONDS

    assert WATCHED_RECORDS_MAX_AGE_SECONDS == 60.0
    session_id = watched.create_session()["id"]
    watched.put_file(session_id, "a", b"one")
    path = record_of(watched, session_id, "a")
    with path.open("r+b") as file, mmap.mmap(file.fileno(), 0) as mapped:
        for _ in range(2):  # mapped before: its close (IN_CLOSE_WRITE) comes after the reads
            assert sizes(watched, session_id) == [3]
        mapped[:] = resized(mapped[:])  # no event: the kernel reports no write to a mapping
        watch = watched.sessions.watch
        assert watch is not None
        watch.max_age = 0.0  # its second past: checked by its stat calls, which see no change
        assert sizes(watched, session_id) == [3]  # the bound this documents
        watched.sessions.watched_records_max_age = 0.0  # its minute past
        assert sizes(watched, session_id) == [7]


def test_a_directory_added_or_removed_by_hand_in_a_session_shows_as_the_disk_has_it(
    store: Store,
) -> None:
    import shutil

    session_id = store.create_session()["id"]
    store.put_file(session_id, "a", b"one")
    for _ in range(2):
        assert sizes(store, session_id) == [3]
    directory = store.sessions_dir / session_id
    (directory / "records" / "b").mkdir()  # a directory is no record
    (directory / "stray").mkdir()
    assert sizes(store, session_id) == [3]
    (directory / "stray").rmdir()
    shutil.rmtree(directory / "records")
    assert sizes(store, session_id) == []


def test_a_session_directory_swapped_by_hand_while_it_is_read_is_read_again(
    watched: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import shutil

    session_id = watched.create_session("first")["id"]
    directory = watched.sessions_dir / session_id
    other = tmp_path / "other"
    shutil.copytree(directory, other)
    path = other / "session.json"
    path.write_bytes(edited(path.read_bytes(), b'"first"', b'"other"'))
    watch = watched.sessions.watch
    assert watch is not None
    real = watched.sessions.meta.stat
    swaps = []

    def swapping(directory_: str, session_id_: str) -> tuple[int, ...]:
        key = real(directory_, session_id_)  # what this read answers: the first one
        if not swaps:
            swaps.append(directory_)
            directory.rename(tmp_path / "aside")
            other.rename(directory)
            watch.drain()  # another thread's read takes the events meanwhile
        return key

    monkeypatch.setattr(watched.sessions.meta, "stat", swapping)
    json.loads(watched.get_session_json(session_id))
    monkeypatch.setattr(watched.sessions.meta, "stat", real)
    assert swaps
    assert json.loads(watched.get_session_json(session_id))["title"] == "other"
    assert titles(watched) == ["other"]
    session_file = directory / "session.json"
    session_file.write_bytes(edited(session_file.read_bytes(), b'"other"', b'"third"'))
    assert titles(watched) == ["third"]
    assert json.loads(watched.get_session_json(session_id))["title"] == "third"


def test_a_record_linked_elsewhere_after_it_was_read_shows_within_the_minute(
    watched: Store, tmp_path: Path
) -> None:
    # link(2) raises IN_ATTRIB on the file's own watches only, not on records/: the link made
    # after the records were read is not known until they are read again (at most a minute).
    session_id = watched.create_session()["id"]
    watched.put_file(session_id, "a", b"one")
    for _ in range(2):
        assert sizes(watched, session_id) == [3]
    link = tmp_path / "link"
    os.link(record_of(watched, session_id, "a"), link)
    rewrite_truncated(link)
    watch = watched.sessions.watch
    assert watch is not None
    watch.max_age = 0.0  # its second past: checked by its stat calls, which see no change
    assert sizes(watched, session_id) == [3]  # the bound this documents
    watched.sessions.watched_records_max_age = 0.0  # its minute past
    assert sizes(watched, session_id) == [7]
    watch.max_age = watched.sessions.watched_records_max_age = 60.0
    assert sizes(watched, session_id) == [7]  # linked now: read on every read
    link.write_bytes(record_edited(link.read_bytes(), b'"size": 7', b'"size": 9'))
    assert sizes(watched, session_id) == [9]
