"""Red team 36 on integrity: the app's own files made something else under it (a FIFO, a
directory), multipart uploads cut at every point, pipelined writes, and a file size limit
met by a session's record.

A FIFO waits, when it is opened to be read, until something opens it to write: the check
that reads every byte (red team 35) opened a FIFO put at a blob's name that way, and waited
for good, and so did a server's start-up wherever a session had a blob more than records.
The tests here never hang on such a FIFO: a thread opens each one to write without waiting
(which succeeds only once a reader waits on it), closes it at once, so that a reader gets
end-of-file, and records that the app waited.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from engines import S3Engine
from redteam_s19_http import blob_of, one_server
from test_hostile_integrity import start_with_file_size_limit
from test_redteam_s19_integrity import file_size_limit
from test_server_e2e import Server, app_env

from app.errors import DamagedFileError, TrashCopyLostError, UnreadableSessionError
from app.store import Store
from app.testing import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(tmp_path_factory) as live:
        yield live


def _fifo_at(path: Path) -> None:
    path.unlink()
    os.mkfifo(path, 0o600)


def _threads_in_open() -> set[str]:
    """The threads of this process blocked in ``open``/``openat`` now (Linux's
    ``/proc/self/task/<tid>/syscall`` names the call a sleeping thread is in; a running one
    reads ``running``)."""
    found = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            number = (task / "syscall").read_text().split(" ", 1)[0]
            if number in _OPEN_CALLS:
                found.add(task.name)
    return found


#: x86-64's and arm64's numbers of open and openat.
_OPEN_CALLS = {"2", "257", "56"}


@contextlib.contextmanager
def _waits_released(*fifos: Path) -> Iterator[list[Path]]:
    """Releases any reader that waits on one of ``fifos``; yields those it had to release.

    A reader counts only where a thread of this process was blocked in ``open`` at two looks
    in a row before the release: the checks open what they look at with ``O_NONBLOCK`` (they
    must not wait), and such an open of a FIFO is a reader for an instant, which a loaded
    machine once stretched into the releaser's look (a false "waited")."""
    released: list[Path] = []
    done = threading.Event()

    def release() -> None:
        before: set[str] = set()
        while not done.is_set():
            blocked = _threads_in_open()
            waiting = blocked & before  # blocked at the last look too
            before = blocked
            for fifo in fifos if waiting else ():
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    continue  # ENXIO: no reader waits on it (or it is gone)
                os.close(fd)
                released.append(fifo)
            done.wait(0.01)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield released
    finally:
        done.set()
        thread.join()


# --- a FIFO at a blob's name ------------------------------------------------------------------


def test_a_fifo_at_a_blobs_name_is_reported_and_no_check_waits_on_it(app_store: Store) -> None:
    # `app data check` waited for good on such a FIFO (it hashes every blob), and so did a
    # server's start-up (its check reads a session's blobs when there is one more than
    # records). Now the file is `file-damaged`, left for a human as damaged bytes are, and a
    # FIFO no record names is an `unknown-entry`; nothing is opened to be read.
    store = app_store
    root = store.root.path
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "f.txt", b"hello")
    store.put_file(session_id, "e.txt", b"")
    store.put_file(session_id, "e.txt", b"newer", replace=True)  # b"" in the trash
    store.put_file(session_id, "gone.txt", b"gone")
    fifo = blob_of(root, session_id, "f.txt")
    _fifo_at(fifo)
    (entry,) = store.list_trash()
    _fifo_at(entry.path / "e.txt")  # 0 bytes acknowledged: the size alone matched
    # A record whose bytes are gone next to a FIFO no record names: their hashes compared.
    blob_of(root, session_id, "gone.txt").unlink()
    stray = fifo.with_name("01" + "0" * 30)
    os.mkfifo(stray, 0o600)
    with _waits_released(fifo, entry.path / "e.txt", stray) as released:
        for repair in (False, True):
            findings = {f.target: f for f in store.check(repair=repair).findings}
            damaged = findings[f"sessions/{session_id}/records/f.txt"]
            assert damaged.problem == "file-damaged" and not damaged.repaired
            assert damaged.detail.startswith(
                "the bytes of file 'f.txt' are not there: their name holds a FIFO, not a "
                "regular file (changed from outside the app); a download of it is refused"
            )
            assert damaged.repair.startswith("nothing: left for a human (move it away")
            version = findings[f".trash/{entry.name}"]
            assert version.problem == "file-damaged"
            assert "the bytes of file 'e.txt' are not there: their name holds a FIFO" in (
                version.detail
            )
            unknown = findings[f"sessions/{session_id}/blobs/{stray.name}"]
            assert unknown.problem == "unknown-entry"
            assert unknown.detail == (
                "not a blob: a FIFO, not a regular file (put there from outside the app)"
            )
        # The start-up's check (not thorough, and it repairs): one blob more than records.
        store.check(repair=True, thorough=False)
    assert released == [], "a check waited on a FIFO for something to write into it"
    assert fifo.exists() and stray.exists() and (entry.path / "e.txt").exists()
    assert sorted(f["name"] for f in store.get_session(session_id)["files"]) == ["e.txt", "f.txt"]


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node takes root")
def test_a_device_at_an_empty_files_blob_is_no_empty_file(app_store: Store) -> None:
    # /dev/null's node at the blob of an empty file: its size (0) and the SHA-256 of what it
    # reads (nothing) matched, so `check` called it consistent; /dev/zero's would have been
    # read for ever. Now any node that is not a regular file is `file-damaged`, unread.
    store = app_store
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "empty.txt", b"")
    blob = blob_of(store.root.path, session_id, "empty.txt")
    blob.unlink()
    os.mknod(blob, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    (finding,) = store.check().findings
    assert finding.problem == "file-damaged"
    assert finding.detail.startswith(
        "the bytes of file 'empty.txt' are not there: their name holds a device, not a regular file"
    )
    with pytest.raises(DamagedFileError, match="their name holds a device"):
        store.open_file(session_id, "empty.txt")


def test_a_download_of_a_file_whose_blob_is_a_fifo_says_it_is_damaged(server: LiveServer) -> None:
    # It was a 404 "has no file 'f.txt'", while the session's listing had it.
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session_id = http.post("/sessions", json={}).json()["id"]
        url = f"/sessions/{session_id}/files/f.txt"
        assert http.put(url, content=b"hello").status_code == 201
        _fifo_at(blob_of(server.data_root, session_id, "f.txt"))
        for method in ("GET", "HEAD"):
            answer = http.request(method, url)
            assert answer.status_code == 500, (method, answer.text)
        answer = http.get(url)
        assert answer.json()["code"] == "file_damaged"
        assert answer.json()["message"].startswith(
            f"cannot send file 'f.txt' of session {session_id}: its bytes are not there (their "
            "name holds a FIFO, not a regular file), so they are not the file that was "
            "acknowledged"
        )
        assert "nothing of it was sent" in answer.json()["message"]
        listed = http.get(f"/sessions/{session_id}/files").json()["items"]
        assert [f["name"] for f in listed] == ["f.txt"]
        # A new upload replaces it, as it does damaged bytes.
        assert http.put(url, content=b"again").status_code == 200
        assert http.get(url).content == b"again"


@pytest.mark.parametrize("what", ["a regular file", "a symbolic link"])
def test_a_records_directory_made_something_else_keeps_every_acknowledged_blob(
    app_store: Store, tmp_path: Path, what: str
) -> None:
    # records/ made a file (or a link) by hand read as "no records": GET showed the session
    # with no files, a state it never had, and the start-up's repair moved every blob of the
    # session to the trash as "an upload never acknowledged", for `empty-trash` to remove.
    store = app_store
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "keep.txt", b"precious")
    records = store.root.path / "sessions" / session_id / "records"
    kept = tmp_path / "records"
    records.rename(kept)
    if what == "a regular file":
        records.write_text("junk")
    else:
        records.symlink_to(kept)
    blob = _blob_in(store.root.path / "sessions" / session_id)
    for thorough in (False, True):  # the start-up's check, and the command's
        (finding,) = store.check(repair=True, thorough=thorough).findings
        assert finding.problem == "unknown-entry" and not finding.repaired
        assert finding.target == f"sessions/{session_id}/records"
        # A link names where it leads (red team 41: with the `mv` that puts it back).
        leads = "" if what == "a regular file" else f", leading to {kept}"
        assert finding.detail == (
            f"{what} where the session keeps its files{leads}; nothing is read or moved "
            "through it, and none of the session's files is repaired"
        )
        assert blob.read_bytes() == b"precious"
    assert store.list_trash() == []
    with pytest.raises(UnreadableSessionError) as refused:
        store.get_session(session_id)
    damage = (
        "is not a directory"
        if what == "a regular file"
        else ("is a symbolic link, not the app's directory")
    )
    assert str(refused.value) == (
        f"cannot read session {session_id}: its records/ {damage} (it was changed outside "
        "the app). `app data check` reports it as unknown-entry. Put records/ back from a "
        f"backup, or delete the session (DELETE /sessions/{session_id}) to move it to the "
        "trash as it is"
    )
    assert store.list_sessions().items == []  # a page leaves it out, as a damaged session.json
    records.unlink()
    kept.rename(records)
    assert [f["name"] for f in store.get_session(session_id)["files"]] == ["keep.txt"]
    assert store.check().findings == []


def _blob_in(session: Path) -> Path:
    (blob,) = (session / "blobs").iterdir()
    return blob


@pytest.mark.parametrize("rotated", ["audit.jsonl.1", "audit.jsonl-20261204.gz"])
def test_a_rotated_audit_log_is_no_crash_to_report_nor_lines_to_write_again(
    app_store: Store, rotated: str
) -> None:
    # `mv audit.jsonl audit.jsonl.1` (logrotate, or the app's own advice for a FIFO there)
    # took the trash entries' lines with it: `app data check` reported each entry as a
    # process stopped "between the move and the line" (exit 65), and the start-up's repair
    # wrote every line again, as its own. The rotated copies beside the log are now read.
    store = app_store
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.txt", b"1")
    store.put_file(session_id, "a.txt", b"2", replace=True)
    store.delete_file(session_id, "a.txt")
    store.delete_session(session_id)
    log = store.root.audit_path
    lines = log.read_bytes()
    log.unlink()
    data = gzip.compress(lines) if rotated.endswith(".gz") else lines
    (log.parent / rotated).write_bytes(data)
    assert store.check(repair=True, thorough=False).findings == []  # a start-up's
    assert store.check().findings == []
    assert not log.exists()
    # A copy damaged beside it (its deflate data overwritten) is read past, never a stop.
    damaged = bytearray(gzip.compress(lines))
    damaged[12:40] = b"\xff" * 28
    (log.parent / "audit.jsonl.2.gz").write_bytes(bytes(damaged))
    assert store.check().findings == []
    # A line truly missing is still found, and only its line written.
    other = store.create_session("t")["id"]
    store.delete_session(other)
    log.write_bytes(b"")
    (finding,) = store.check(repair=True).findings
    assert finding.problem == "trash-unaudited" and finding.repaired
    assert finding.detail == (
        "a complete trash entry (delete) without its audit line in audit.jsonl or a rotated "
        "copy beside it (audit.jsonl.1, audit.jsonl-<date>.gz): the process stopped between "
        "the move and the line, or the log that held it was moved out of the data root"
    )
    (line,) = [json.loads(raw) for raw in log.read_bytes().splitlines()][:1]
    assert (line["target"], line["details"]["recovered"]) == (other, True)


def test_a_restore_refuses_to_pass_a_newest_copy_that_lost_its_bytes(app_store: Store) -> None:
    # The newest version's bytes removed from its trash entry (its trash.json kept): the
    # check took the entry for "a file delete that stopped before its commit; the file is
    # unchanged" and removed it, and `restore --file` then brought back the version before
    # it, answering "restored", as if it were the one deleted.
    store = app_store
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.txt", b"version 1")
    store.put_file(session_id, "a.txt", b"version 2", replace=True)
    store.delete_file(session_id, "a.txt")
    older, newest = sorted(store.list_trash(), key=lambda e: e.name)
    (newest.path / "a.txt").unlink()
    with pytest.raises(TrashCopyLostError) as refused:
        store.restore(session_id, file="a.txt")
    assert str(refused.value) == (
        f"cannot restore file 'a.txt' of session {session_id}: its newest copy in the trash, "
        f"entry {newest.name}, has lost its bytes (removed from outside the app; `app data "
        "check` reports it as file-damaged), and the copy before it is not the version that "
        "was deleted; nothing was changed. Put the bytes back into that entry as 'a.txt' "
        "from a backup (their SHA-256 is in its trash.json), or, to restore the copy before "
        f"it instead, run `app sessions restore {session_id} --file a.txt --entry "
        f"{older.name}`"
    )
    assert store.get_session(session_id)["files"] == []
    for thorough in (False, True):
        (finding,) = store.check(repair=True, thorough=thorough).findings
        assert (finding.problem, finding.target) == ("file-damaged", f".trash/{newest.name}")
        assert not finding.repaired
        assert "this entry keeps are not there, nor among the session's blobs" in finding.detail
    assert sorted(e.name for e in store.list_trash()) == [older.name, newest.name]
    # The bytes put back: the restore brings back the version deleted.
    (newest.path / "a.txt").write_bytes(b"version 2")
    store.restore(session_id, file="a.txt")
    file, _ = store.open_file(session_id, "a.txt")
    with file:
        assert file.read() == b"version 2"


def test_a_restore_refuses_a_newest_copy_that_is_a_fifo(app_store: Store) -> None:
    # A FIFO where the newest version's bytes should be (the class of the FIFO at a blob):
    # the restore passed over the entry, as one that was not complete, and brought back the
    # version before it.
    store = app_store
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.txt", b"version 1")
    store.put_file(session_id, "a.txt", b"version 2", replace=True)
    store.delete_file(session_id, "a.txt")
    _, newest = sorted(store.list_trash(), key=lambda e: e.name)
    _fifo_at(newest.path / "a.txt")
    with _waits_released(newest.path / "a.txt") as released:
        with pytest.raises(TrashCopyLostError, match="holds a FIFO where its bytes should be"):
            store.restore(session_id, file="a.txt")
        (finding,) = store.check().findings
    assert released == []
    assert (finding.problem, finding.target) == ("file-damaged", f".trash/{newest.name}")
    assert store.get_session(session_id)["files"] == []
    # The only copy so: refused by name too, where "no file 'b.txt' ... in the trash" was
    # said of an entry the trash listing shows.
    store.put_file(session_id, "b.txt", b"only")
    store.delete_file(session_id, "b.txt")
    (only,) = [e for e in store.list_trash() if e.file == "b.txt"]
    _fifo_at(only.path / "b.txt")
    with pytest.raises(TrashCopyLostError, match=f"entry {only.name}, holds a FIFO"):
        store.restore(session_id, file="b.txt")


def test_a_restore_refuses_a_copy_whose_size_is_not_the_one_acknowledged(
    app_store: Store,
) -> None:
    # A version cut short in the trash was restored with the size found on disk written
    # into its record, under the acknowledged SHA-256: listed at that size, past a
    # download's check of the size before any byte, and past `app data check --quick`.
    store = app_store
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.bin", os.urandom(3000))
    store.delete_file(session_id, "a.bin")
    (entry,) = store.list_trash()
    os.truncate(entry.path / "a.bin", 1000)
    with pytest.raises(TrashCopyLostError) as refused:
        store.restore(session_id, file="a.bin")
    assert str(refused.value).startswith(
        f"cannot restore file 'a.bin' of session {session_id}: its newest copy in the trash, "
        f"entry {entry.name}, holds 1000 bytes, where 3000 were acknowledged (changed from "
        "outside the app; `app data check` reports it as file-damaged)"
    )
    assert store.get_session(session_id)["files"] == []
    assert [e.name for e in store.list_trash()] == [entry.name]


# --- the audit log made a FIFO or a directory under a live server -----------------------------


@pytest.mark.parametrize("kind", ["a FIFO", "a directory"])
def test_a_change_whose_audit_log_is_not_a_file_is_refused_saying_which_and_why(
    server: LiveServer, kind: str
) -> None:
    # A root whose audit.jsonl is not a regular file is refused when it is opened (red team
    # 18); made so under a live server (a log shipper's FIFO, a slip), every change that
    # removes data was a bare 500 "internal server error".
    log = server.data_root / "audit.jsonl"
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session_id = http.post("/sessions", json={}).json()["id"]
        other = http.post("/sessions", json={}).json()["id"]
        files = f"/sessions/{session_id}/files"
        for name in ("a", "b"):
            assert http.put(f"{files}/{name}", content=name.encode()).status_code == 201
        kept = log.with_name("audit.kept")
        log.rename(kept)
        try:
            if kind == "a FIFO":
                os.mkfifo(log, 0o600)
            else:
                log.mkdir()
            for method, url, body in [
                ("DELETE", f"{files}/a", None),
                ("PUT", f"{files}/b", b"new"),
                ("DELETE", f"/sessions/{other}", None),
                ("POST", "/trash/empty", None),
            ]:
                answer = http.request(method, url, content=body)
                assert answer.status_code == 503, (method, url, answer.text)
                problem = answer.json()
                assert problem["code"] == "storage_not_regular_file"
                assert problem["message"] == (
                    f"cannot {method} {url}: the data root's audit.jsonl is {kind}, not a "
                    "regular file (put there from outside the app), and the change needs "
                    "it; nothing was changed. An operator moves it away (for audit.jsonl the "
                    "app starts a new one at the next change: keep the old one's lines, they "
                    "are the record of what was deleted), then retries"
                )
        finally:
            if log.is_dir():
                log.rmdir()
            else:
                log.unlink()
            kept.rename(log)
        # Nothing was changed, and once it is a file again the changes are made.
        assert [(f["name"], f["size"]) for f in http.get(files).json()["items"]] == [
            ("a", 1),
            ("b", 1),
        ]
        assert http.get(f"/sessions/{other}").status_code == 200
        assert http.delete(f"{files}/a").status_code == 200
        assert http.put(f"{files}/b", content=b"new").status_code == 200
    assert f'"target": "{session_id}/a"' in log.read_text()


# --- multipart uploads cut short, pipelined writes --------------------------------------------


def _raw(server: LiveServer, data: bytes, *, read: bool = True) -> bytes:
    """Send ``data`` on one connection and read what comes back until the server closes it
    (the last request says ``Connection: close``); or, not ``read``, close it at once."""
    with socket.create_connection(("127.0.0.1", _port(server))) as s:
        s.sendall(data)
        got = b""
        while read and (chunk := s.recv(65536)):
            got += chunk
    return got


def _port(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _multipart(server: LiveServer, session_id: str, body: bytes, length: int) -> bytes:
    return (
        f"POST /sessions/{session_id}/files HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.token}\r\n"
        "Content-Type: multipart/form-data; boundary=B\r\nConnection: close\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body


def test_a_multipart_upload_cut_anywhere_stores_nothing(server: LiveServer) -> None:
    # Held: a client that stops (FIN) after the headers, inside the part's headers, inside
    # its bytes, or just before the closing boundary; and bodies that end, by their length,
    # without a closing boundary. Nothing is stored and nothing is left in .tmp/.
    data = os.urandom(150_000)
    head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="m.bin"\r\n\r\n'
    body = head + data + b"\r\n--B--\r\n"
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session_id = http.post("/sessions", json={}).json()["id"]
        for cut in (0, 10, len(head), len(head) + 75_000, len(body) - 3, len(body) - 1):
            _raw(server, _multipart(server, session_id, body[:cut], len(body)), read=False)
        for ending in (b"", b"\r\n--B", b"\r\n--B\r\n"):
            short = head + data + ending
            answer = _raw(server, _multipart(server, session_id, short, len(short)))
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
            assert b"the multipart body ended before its closing boundary" in answer
        assert http.get(f"/sessions/{session_id}/files").json()["items"] == []
        assert list((server.data_root / ".tmp").iterdir()) == []
        # The whole body: stored, byte for byte.
        _raw(server, _multipart(server, session_id, body, len(body)))
        got = http.get(f"/sessions/{session_id}/files/m.bin")
        assert got.content == data
        assert got.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'


def test_pipelined_writes_of_one_file_are_answered_in_order(server: LiveServer) -> None:
    # Held: ten requests sent in one write on one connection, each seeing the one before.
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session_id = http.post("/sessions", json={}).json()["id"]
    token = server.token
    path = f"/sessions/{session_id}/files/p.txt"

    def request(method: str, body: bytes | None = None, extra: str = "") -> bytes:
        length = "" if body is None else f"Content-Length: {len(body)}\r\n"
        start = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        return f"{start}{extra}{length}\r\n".encode() + (body or b"")

    sent = [
        request("PUT", b"one"),
        request("GET"),
        request("PUT", b"two-two"),
        request("HEAD"),
        request("GET", extra="Range: bytes=0-2\r\n"),
        request("DELETE"),
        request("GET"),
        request("PUT", b"three", "If-None-Match: *\r\n"),
        request("PUT", b"four", "If-None-Match: *\r\n"),
        request("GET", extra="Connection: close\r\n"),
    ]
    answers = _raw(server, b"".join(sent)).split(b"HTTP/1.1 ")[1:]
    statuses = [a.split(b"\r\n", 1)[0].decode() for a in answers]
    assert statuses == [
        "201 Created",
        "200 OK",
        "200 OK",
        "200 OK",
        "206 Partial Content",
        "200 OK",
        "404 Not Found",
        "201 Created",
        "412 Precondition Failed",
        "200 OK",
    ]
    bodies = [a.split(b"\r\n\r\n", 1)[1] for a in answers]
    assert bodies[1] == b"one"
    assert bodies[3] == b""
    assert bodies[4] == b"two"
    assert bodies[9] == b"three"


# --- If-Match corner cases ----------------------------------------------------------------------


def test_an_empty_if_match_never_matches_and_says_so(server: LiveServer) -> None:
    # `curl -H "If-Match: $ETAG"` with the variable unset sends it empty: a list of no tags,
    # which never matches (412, nothing changed, as RFC 9110 reads it). The message said the
    # empty value did not name the current version "which another request wrote since".
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session_id = http.post("/sessions", json={}).json()["id"]
        url = f"/sessions/{session_id}/files/f.txt"
        assert http.put(url, content=b"one").status_code == 201
        etag = f'"{hashlib.sha256(b"one").hexdigest()}"'
        for method, body in [("PUT", b"two"), ("DELETE", None), ("GET", None)]:
            answer = http.request(method, url, content=body, headers={"If-Match": ""})
            assert answer.status_code == 412, (method, answer.text)
            assert answer.json()["message"] == (
                f"{method} of file 'f.txt' in session {session_id} refused: its If-Match is "
                "empty, a list of no entity tags, which names no version and so never "
                f"matches (the current one is ETag {etag}); nothing was changed. Send the "
                f"ETag that GET or HEAD gave, with its quotes, as If-Match: {etag}, or send "
                "no If-Match to write whatever the current version is"
            )
        # A weak tag of the current version, and the tag without its quotes: never a write.
        weak = http.put(url, content=b"two", headers={"If-Match": f"W/{etag}"})
        assert weak.status_code == 412
        assert "(a weak tag, W/, never matches" in weak.json()["message"]
        bare = http.put(url, content=b"two", headers={"If-Match": etag.strip('"')})
        assert bare.status_code == 400
        assert "is not * or a list of entity tags" in bare.json()["message"]
        assert http.get(url).content == b"one"


def test_a_range_of_a_unit_the_server_does_not_know_is_ignored(server: LiveServer) -> None:
    # RFC 9110 (14.2): an origin server MUST ignore a Range of a unit it does not
    # understand. It was 400 "Only support bytes range", Starlette's words.
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session_id = http.post("/sessions", json={}).json()["id"]
        url = f"/sessions/{session_id}/files/r.txt"
        assert http.put(url, content=b"0123456789").status_code == 201
        for unit in ("items=0-1", "none", "lines=1-2"):
            answer = http.get(url, headers={"Range": unit})
            assert (answer.status_code, answer.content) == (200, b"0123456789"), unit
        for bytes_unit in ("bytes=0-1", "Bytes=0-1", "BYTES =0-1"):
            answer = http.get(url, headers={"Range": bytes_unit})
            assert (answer.status_code, answer.content) == (206, b"01"), bytes_unit


# --- a file size limit met by a session's record ----------------------------------------------


def test_a_create_over_the_file_size_limit_is_told_about_its_metadata_not_a_file(
    tmp_path: Path, servers: list[Server]
) -> None:
    # A create whose session.json the server's file size limit (LimitFSIZE=) refused was
    # 507 "the file is larger ... Send a smaller file, or ... set max_upload_bytes": it sent
    # no file, and no upload setting helps it.
    # No bytecode written by the server: CPython takes the short write of a .pyc at the limit
    # for a whole one, and the run's cached bytecode would be left truncated.
    env = {**app_env(tmp_path / "data"), "PYTHONDONTWRITEBYTECODE": "1"}
    server = start_with_file_size_limit(env, tmp_path / "log", 4096)
    servers.append(server)
    with server.client() as client:
        answer = client.post("/sessions", json={"metadata": {"notes": "n" * 6000}})
        assert answer.status_code == 507, answer.text
        assert answer.json()["code"] == "file_too_large_for_server"
        assert answer.json()["message"] == (
            "cannot POST /sessions: the session's record, with its metadata, would be larger "
            "than this process may write in the data root (its file size limit: systemd's "
            "LimitFSIZE=, `ulimit -f`); nothing was changed. Send less metadata, or have an "
            "operator raise that limit"
        )
        assert client.get("/sessions").json()["total"] == 0
        assert client.post("/sessions", json={"metadata": {"notes": "n"}}).status_code == 201
    assert server.stop() == 0


# --- on PostgreSQL and object storage -------------------------------------------------------------


def test_a_remote_restore_refuses_a_newest_copy_whose_object_is_gone(
    s3_engine: S3Engine, database_url: str, blob_url: str
) -> None:
    # The local refusal's twin: the newest trashed version's object deleted behind the app
    # (a bucket lifecycle rule, a hand). The restore made that row the file again and said
    # so, and every download of it was then 500 object_missing; the version before it,
    # whole, stayed in the trash.
    from app.remote import pg
    from app.remote.store import RemoteStore

    objects = s3_engine.objects(blob_url)
    pg.open_database(database_url, "production")
    objects.open("production")
    with RemoteStore(database_url, objects, "production") as store:
        session_id = store.create_session("s")["id"]
        store.put_file(session_id, "a.txt", b"version 1")
        store.put_file(session_id, "a.txt", b"version 2", replace=True)
        store.delete_file(session_id, "a.txt")
        with pg.connect(database_url, purpose="test", autocommit=True) as conn:
            (blob, trash_name), (_, older) = conn.execute(
                "SELECT blob, trash_name FROM app_files WHERE session_id = %s"
                " ORDER BY deleted_at DESC LIMIT 2",
                (session_id,),
            ).fetchall()
        objects.delete(blob)
        with pytest.raises(TrashCopyLostError) as refused:
            store.restore(session_id, file="a.txt")
        assert str(refused.value) == (
            f"cannot restore file 'a.txt' of session {session_id}: its newest copy in the "
            f"trash, entry {trash_name}, has lost its bytes (its object is gone from "
            f"{objects.where}: deleted outside the app; `app data check` reports it as "
            "record-without-object), and the copy before it is not the version that was "
            "deleted; nothing was changed. Put the object back from a backup or a bucket "
            "version, or, to restore the copy before it instead, run `app sessions restore "
            f"{session_id} --file a.txt --entry {older}`"
        )
        assert store.get_session(session_id)["files"] == []
        assert len(store.list_trash()) == 2


def test_a_delete_over_the_file_size_limit_is_not_told_to_send_a_smaller_file(
    app_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A limit smaller than a file's trash entry's manifest (trash.json; tried by hand on a
    # real server under `prlimit --fsize=420`): the delete was refused rightly, but told
    # "the file is larger ... Send a smaller file, or ... set max_upload_bytes", an upload's
    # advice. In this process, as red team 19's test: a server's own log passes 420 bytes.
    session_id = app_client.post("/sessions", json={}).json()["id"]
    url = f"/sessions/{session_id}/files/a"
    assert app_client.put(url, content=b"a").status_code == 201
    # CPython's write of a .pyc takes a short write for a whole one: a module first
    # imported under the limit would be cached truncated ("marshal data too short").
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    with file_size_limit(420):
        answer = app_client.delete(url)
    assert answer.status_code == 507, answer.text
    assert answer.json()["message"] == (
        f"cannot DELETE {url}: a file it writes (a trash entry's manifest, a session's "
        "record) would be larger than this process may write in the data root (its file "
        "size limit: systemd's LimitFSIZE=, `ulimit -f`); nothing was changed. Have an "
        "operator raise that limit"
    )
    assert app_client.get(url).content == b"a"


# --- a command whose standard output is closed ------------------------------------------------


def test_a_purge_whose_output_is_closed_says_it_was_done(app_config: Any) -> None:
    # `app data purge --yes-i-mean-it | head -0` (a reader that exits): click exited 1 and
    # said nothing, after the purge had moved every session to the trash.
    from app.storage import open_storage

    with open_storage(app_config, writer=True) as store:
        ids = [store.create_session("s")["id"] for _ in range(3)]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    env = {**os.environ, "APP_DATA_ROOT": str(app_config.data_root)}
    done = subprocess.run(
        [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        check=False,
    )
    os.close(write)
    assert done.returncode == 74, done.stderr
    assert done.stderr == (
        "error: `app data purge` could not write all of its output: its standard output "
        "was closed (a pipe whose reader exited, such as `| head`). Anything it changed is "
        "done: each change stays made, whole and audited, and `app sessions list --trash` "
        "and `app data check` show the data root as it is. Send its output to a file, or to "
        "a reader that reads all of it\n"
    )
    with open_storage(app_config, writer=True) as store:
        assert store.session_ids() == []
        assert sorted(e.session_id for e in store.list_trash()) == sorted(ids)


@pytest.mark.parametrize(
    "argv", [["config"], ["status"], ["sessions", "list"], ["data", "check", "--quick"]]
)
def test_a_command_that_changes_nothing_whose_output_is_closed_ends_quietly(
    app_config: Any, argv: list[str]
) -> None:
    # `app config | head -1`: a reader that has read enough is no failure worth a paragraph;
    # it ends as any tool `head` stops does, with the status a shell gives SIGPIPE.
    from app.storage import open_storage

    with open_storage(app_config, writer=True) as store:
        for _ in range(3):
            store.create_session("s")
    read, write = os.pipe()
    os.close(read)
    done = subprocess.run(
        [sys.executable, "-m", "app", *argv],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "APP_DATA_ROOT": str(app_config.data_root)},
        check=False,
    )
    os.close(write)
    assert (done.returncode, done.stderr) == (141, "")
