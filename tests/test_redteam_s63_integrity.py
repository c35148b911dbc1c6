"""Red team 63 on integrity (branch rt-integrity63): see docs/explanation/attacks/.

What broke: the audit line of a change whose only other trace the change itself removes,
lost without a word from `app data check`. Each line is written after its change, and a
line that cannot be written (``ENOSPC`` or ``EIO`` at the log's write or fsync) goes to the
process's log alone; `check` writes again the line of a change it can see (a trash entry
the log does not name), and a kill before the line leaves such a trace on purpose (red
teams 51 and 52). A failed line did not:

- an ``empty-trash`` (``POST /trash/empty``, ``app data empty-trash``) removed its emptied
  directories after the line, written or not: the entries were gone for good, recorded
  nowhere in the root, and `check` said "clean";
- a restore (``app sessions restore``) removed its emptied trash entry after the line,
  written or not: the same;
- ``app data restamp`` wrote the new stamp, then its line: one that failed (or a kill
  between) left the root handed to another profile with no line, and `check` "clean".

What changed: `Prepared.audit` and `DataRoot.audit` say whether the line was written. An
``empty-trash`` whose line was not keeps its emptied ``.emptying-`` directories, and a
restore its emptied entry, as a kill would: the next ``empty-trash`` or `check --repair`
(a server's start-up) writes the line (``trash-emptying``, ``trash-manifest-only``). And
`check` compares a stamp that names the profile it was taken from (``restamped_from``) with
the log's ``restamp`` lines: ``stamp-unaudited``, whose repair writes the line.

Each fault is a real ``ENOSPC`` from the kernel, injected by strace attached to this
process for the one call, on the app's own code (no server: these are a store's steps).

And a ``PUT`` with ``If-Match`` retried after its answer was lost (the first try made the
change): 412 "which another request wrote since", and told to send it again with the
current ``ETag``, which replaces the file with itself. RFC 9110 (13.1.1) names the case: the
change is made already. Where the request's ``Repr-Digest`` or ``Content-Digest`` (or, at the
commit, its body) shows the current version holds the bytes it sends, the refusal now says
so, and that nothing needs to be sent again; without them, it says how to tell.

And a ``HEAD`` of a file refused for its ``If-Match`` (412) or its ``If-Unmodified-Since``
(400) was answered with another ``Content-Length`` than the ``GET`` it stands for: its
message named its own method. RFC 9110 (9.3.2) has a ``HEAD`` answered with the ``GET``'s
header fields, as every other route's is; the file's ``HEAD`` now gets the ``GET``'s
refusal, word for word (the app in process: the route's answer, which uvicorn sends as it
is).

And a file "copied" within its session outside the app (a second record, of the app's
shape, naming the same blob): a delete or a replace of one moved the shared bytes into its
trash entry, and the other, acknowledged and untouched, became a 500 "its bytes are not
there". The change's old bytes are now linked into the entry where another record still
names them, and `check --repair`, finishing such a change, links them too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from faults import attached, needs_strace
from session_files import by_hand
from test_server_e2e import app_env

from app.config import Config, load
from app.dataroot import AUDIT_FILE, STAMP_FILE, restamp
from app.storage import Storage, open_storage

FULL = "write:error=ENOSPC"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def config(root: Path) -> Config:
    config = load("testing", environ=app_env(root))
    if config.data_root != root:
        pytest.skip("the testing profile is remote here: these are a local root's steps")
    return config


@pytest.fixture
def store(config: Config) -> Iterator[Storage]:
    with open_storage(config, writer=True, kind="maintenance", wanted="test it") as opened:
        yield opened


def operations(root: Path) -> list[object]:
    return [json.loads(line)["operation"] for line in (root / AUDIT_FILE).read_text().splitlines()]


def checked(config: Config, *, repair: bool = False) -> list[str]:
    """What `app data check` (``--repair``) finds, each finding as one line of its report."""
    with open_storage(config, writer=repair, kind="maintenance", wanted="check it") as store:
        report = store.check(repair=repair)
    return [f"{f.problem} {f.target}: {f.detail}; {f.repair}" for f in report.findings]


def log_full(root: Path) -> AbstractContextManager[None]:
    """The root's audit log on a full disk (ENOSPC at its writes) for the block."""
    return attached(os.getpid(), FULL, root / AUDIT_FILE)


def deleted_file(store: Storage) -> tuple[str, str]:
    sid = store.create_session("kept")["id"]
    store.put_file(sid, "a.txt", b"acknowledged")
    return sid, store.delete_file(sid, "a.txt").name


@needs_strace
def test_an_empty_trash_whose_audit_line_fails_leaves_what_writes_it_again(
    store: Storage, config: Config, root: Path
) -> None:
    _, entry = deleted_file(store)
    with log_full(root):
        [emptied] = store.empty_trash()
    assert emptied.name == entry
    assert operations(root)[-1] == "trash-file"  # no line of the empty-trash
    # Before: its emptied directory removed at once, and `check` "clean".
    left = root / ".trash" / f".emptying-{entry}"
    assert left.is_dir() and not any(left.iterdir())
    [said] = checked(config)
    assert said.startswith(f"trash-emptying .trash/.emptying-{entry}: "), said
    assert "or whose audit line it could not write (a full disk, an I/O error)" in said, said
    # The next empty-trash writes the line, naming it, and removes what was left.
    assert store.empty_trash() == []
    assert not left.exists()
    line = json.loads((root / AUDIT_FILE).read_text().splitlines()[-1])
    assert (line["operation"], line["details"]["finished"]) == ("empty-trash", [entry])


@needs_strace
def test_a_restore_whose_audit_line_fails_keeps_its_entry_for_check_to_write_it(
    store: Storage, config: Config, root: Path
) -> None:
    sid, entry = deleted_file(store)
    with log_full(root):
        store.restore(sid, file="a.txt")
    store.close()
    assert operations(root) == ["trash-file"]
    # Before: the entry removed, the restore recorded nowhere, `check` "clean".
    assert (root / ".trash" / entry / "trash.json").is_file()
    [said] = checked(config)
    assert said.startswith(f"trash-manifest-only .trash/{entry}: a restore of file 'a.txt'"), said
    assert "the restore's audit line was not written" in said, said
    assert checked(config, repair=True) == [said]
    assert operations(root) == ["trash-file", "restore-file", "check-repair"]
    assert checked(config) == [] and not (root / ".trash" / entry).exists()


@needs_strace
def test_a_restamp_whose_audit_line_fails_is_found_and_its_line_written(
    store: Storage, config: Config, root: Path
) -> None:
    store.close()
    # The root as another profile's (development's), handed to testing by the command's
    # own code: its stamp is written, then its line, which the disk refuses.
    stamp = json.loads((root / STAMP_FILE).read_text())
    (root / STAMP_FILE).write_text(json.dumps({**stamp, "profile": "development"}))
    with log_full(root):
        made = restamp(config, "development")
    assert (made["profile"], made["restamped_from"]) == ("testing", "development")
    assert not (root / AUDIT_FILE).exists() or "restamp" not in operations(root)
    # Before: "clean", the hand-over recorded nowhere.
    [said] = checked(config)
    assert said.startswith(
        "stamp-unaudited .app-profile.json: stamped 'testing' by `app data restamp` from "
        f"'development' at {made['created_at']}, without its restamp line"
    ), said
    assert "or could not write the line (a full disk, an I/O error)" in said, said
    assert checked(config, repair=True) == [said]
    [line] = [
        json.loads(text)
        for text in (root / AUDIT_FILE).read_text().splitlines()
        if json.loads(text)["operation"] == "restamp"
    ]
    assert line["details"] == {
        "from": "development",
        "to": "testing",
        "stamp": made["created_at"],
        "recovered": True,
    }
    assert checked(config) == []
    # Rotated away (logrotate keeps so many copies), with later lines in a new log: the log
    # no longer reaches back to the restamp, and says nothing of it either way.
    (root / AUDIT_FILE).unlink()
    with open_storage(config, writer=True, kind="maintenance", wanted="test it") as again:
        deleted_file(again)
    assert checked(config) == []


def test_a_file_s_conditional_refusals_say_what_was_done_as_a_get_would(app_client: Any) -> None:
    # One app for both (its import is most of what they cost).
    a_put_retried_after_its_answer_was_lost_is_told_it_was_made(app_client)
    a_create_retried_after_its_answer_was_lost_is_told_how_to_tell(app_client)
    a_head_refused_for_its_precondition_has_the_get_s_headers(app_client)


def a_put_retried_after_its_answer_was_lost_is_told_it_was_made(http: Any) -> None:
    sid = http.post("/sessions", json={"title": "retried"}).json()["id"]
    path = f"/sessions/{sid}/files/a.txt"
    first = http.put(path, content=b"one").json()["sha256"]
    sent = hashlib.sha256(b"two").digest()
    headers = {
        "If-Match": f'"{first}"',
        "Repr-Digest": f"sha-256=:{base64.b64encode(sent).decode()}:",
    }
    assert http.put(path, content=b"two", headers=headers).status_code == 200  # answer lost
    again = http.put(path, content=b"two", headers=headers)
    assert again.status_code == 412, again.text
    said = " ".join(again.json()["message"].split())
    # Before: "which another request wrote since ... send the PUT again with If-Match: <its
    # own version>", which replaces the file with itself.
    assert f'ETag "{sent.hex()}", whose bytes are the very bytes this PUT sends' in said, said
    assert "this one's own, if its answer was lost). Nothing was changed, and nothing" in said
    # Without a digest field, the bytes are not known before the body: it says how to tell.
    bare = http.put(path, content=b"two", headers={"If-Match": f'"{first}"'})
    said = " ".join(bare.json()["message"].split())
    assert "(or an earlier try of this PUT, whose answer was lost: an ETag is the" in said, said
    assert [e["name"] for e in http.get(f"/sessions/{sid}/files").json()["items"]] == ["a.txt"]


def a_create_retried_after_its_answer_was_lost_is_told_how_to_tell(http: Any) -> None:
    sid = http.post("/sessions", json={"title": "created twice"}).json()["id"]
    creates = [
        lambda: http.post(f"/sessions/{sid}/files", files={"file": ("m.txt", b"form")}),
        lambda: http.put(
            f"/sessions/{sid}/files/p.txt", content=b"raw", headers={"If-None-Match": "*"}
        ),
    ]
    for create in creates:
        assert create().status_code == 201  # its answer lost
        again = create()
        assert again.status_code in (409, 412), again.text
        said = " ".join(again.json()["message"].split())
        # Before: told to replace or delete it, and nothing of its own first try.
        assert "is a retry of one whose answer was lost, its first try may have stored" in said


def a_head_refused_for_its_precondition_has_the_get_s_headers(http: Any) -> None:
    sid = http.post("/sessions", json={"title": "heads"}).json()["id"]
    put = http.put(f"/sessions/{sid}/files/a.txt", content=b"0123456789")
    etag = put.headers.get("etag") or f'"{put.json()["sha256"]}"'
    for headers in (
        {"If-Match": '"an-older-version"'},
        {"If-Match": f"W/{etag}"},
        {"If-Unmodified-Since": "Sun, 06 Dec 2026 12:00:00 GMT"},
        {"If-Match": etag, "Range": "bytes=-3"},
    ):
        got = http.get(f"/sessions/{sid}/files/a.txt", headers=headers)
        head = http.head(f"/sessions/{sid}/files/a.txt", headers=headers)
        fields = ("content-length", "content-type", "etag", "content-range")
        # Before: a 412's and a 400's Content-Length four bytes over the GET's.
        assert [head.status_code, *map(head.headers.get, fields)] == [
            got.status_code,
            *map(got.headers.get, fields),
        ], (headers, got.text)
        assert head.content == b""


@needs_strace
def test_a_file_whose_record_was_copied_keeps_its_bytes_when_the_other_goes(
    store: Storage, config: Config, root: Path
) -> None:
    sid = store.create_session("copied")["id"]
    store.put_file(sid, "a.pdf", b"acknowledged once")
    records = root / "sessions" / sid / "records"
    # What a tool (or `cp` and an edit) makes of "copy this file": a record of its own, of the
    # app's shape, that names the same bytes.
    record = json.loads((records / "a.pdf").read_text())
    (records / "copy.pdf").write_text(json.dumps(by_hand({**record, "name": "copy.pdf"})))
    blob = root / "sessions" / sid / "blobs" / record["blob"]

    def read(name: str) -> bytes:
        file, _ = store.open_file(sid, name)
        with file:
            return file.read()

    assert read("copy.pdf") == b"acknowledged once"
    # The delete's link into the trash refused once (EIO): its entry waits for the bytes,
    # and the repair links them as the delete would have.
    with attached(os.getpid(), "link,linkat:error=EIO", blob):
        store.delete_file(sid, "a.pdf")
    # Before: the bytes moved into a.pdf's trash entry, and copy.pdf a 500 "its bytes are not
    # there (removed from outside the app)"; the repair did the same.
    assert read("copy.pdf") == b"acknowledged once"
    store.close()
    [said] = checked(config)
    assert said.startswith("trash-unfinished"), said
    checked(config, repair=True)
    assert checked(config) == []
    with open_storage(config, writer=True, kind="maintenance", wanted="test it") as again:
        file, _ = again.open_file(sid, "copy.pdf")
        with file:
            assert file.read() == b"acknowledged once"
        # A replace of the last file that names them moves them, as ever.
        again.put_file(sid, "copy.pdf", b"its own bytes", replace=True)
    assert not blob.exists()
    assert checked(config) == []
