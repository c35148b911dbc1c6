"""Red team 35 on integrity: bytes changed on disk after they were acknowledged, and a
command stopped by Ctrl-C right after one of its changes.

A blob is never changed once written, so bytes that no longer have the size or the SHA-256
their record acknowledged were changed from outside the app (a disk or filesystem fault, an
edit, a partial restore). They were served as a 200 under the acknowledged ``ETag``, and
``app data check`` called the root consistent. A download now refuses them, and a thorough
check reports them (``file-damaged``) without moving anything.

Python raises ``KeyboardInterrupt`` between two bytecodes, so after the very call that made
a change: the undo handlers that decided from the exception, not from the disk, undid the
bookkeeping of a change that was made (``strace --inject ...:signal=SIGINT`` delivers it
right after the N-th rename or unlink of the real process).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import forked_app
import httpx
import pytest
from engines import S3Engine
from faults import NO_BYTECODE, strace_prefix
from live_http import Answers, connect
from redteam_s19_http import blob_of, one_server

from app.config import Config
from app.server.downloads import OpenFileResponse
from app.storage import open_storage
from app.store import Store
from app.testing import LiveServer

CHUNK = OpenFileResponse.chunk_size  # what a download reads, hashes and sends at a time


# --- bytes changed on disk after they were acknowledged ---------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(tmp_path_factory) as live:
        yield live


def _damage(path: Path, how: str) -> None:
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    if how == "cut":
        data = data[: len(data) // 2]
    else:
        at = {"flip-first": 0, "flip-middle": len(data) // 2, "flip-last": len(data) - 1}[how]
        data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _received(
    server: LiveServer, url: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, str | None]:
    """The status, the bytes that came, and the error that cut them short (if any)."""
    got = b""
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        try:
            with http.stream("GET", url, headers=headers) as answer:
                for piece in answer.iter_raw():
                    got += piece
        except httpx.RemoteProtocolError as error:
            return answer.status_code, got, str(error)
    return answer.status_code, got, None


@pytest.mark.parametrize("size", [10, CHUNK + 10, 2 * CHUNK])
@pytest.mark.parametrize("how", ["flip-first", "flip-middle", "flip-last"])
def test_a_download_of_bytes_flipped_on_disk_is_cut_before_its_last_byte(
    server: LiveServer, size: int, how: str
) -> None:
    # Same size, another SHA-256: it was a 200 whose body, complete, was the damaged bytes
    # under the acknowledged ETag and Repr-Digest. Now the connection is cut before the last
    # byte (also where the size is a whole number of chunks: the check may not wait for
    # the empty read after them), so no client, and no cache, holds a complete answer.
    data = os.urandom(size)
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session_id = http.post("/sessions", json={}).json()["id"]
        assert http.put(f"/sessions/{session_id}/files/f.bin", content=data).status_code == 201
    _damage(blob_of(server.data_root, session_id, "f.bin"), how)
    status, got, cut = _received(server, f"/sessions/{session_id}/files/f.bin")
    assert status == 200
    assert cut is not None, "a complete answer of bytes that are not the acknowledged ones"
    assert "without sending complete message body" in cut, cut
    assert len(got) < size
    log = server.log.read_text()
    assert f"cannot send file 'f.bin' of session {session_id}: its bytes have the SHA-256" in log
    assert f"where {hashlib.sha256(data).hexdigest()} was acknowledged" in log
    assert "its download was cut before its last byte" in log
    assert "`app data check` reports every such file as file-damaged" in log


def test_a_range_of_the_whole_file_is_checked_as_the_whole_file_is(server: LiveServer) -> None:
    # `Range: bytes=0-` (a download manager's first request) was a complete 206 of the
    # damaged bytes; a range of part of the file cannot be checked, and is sent as read.
    data = os.urandom(2 * CHUNK + 10)
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session_id = http.post("/sessions", json={}).json()["id"]
        assert http.put(f"/sessions/{session_id}/files/r.bin", content=data).status_code == 201
    _damage(blob_of(server.data_root, session_id, "r.bin"), "flip-middle")
    url = f"/sessions/{session_id}/files/r.bin"
    for whole in ("bytes=0-", f"bytes=0-{len(data) - 1}", f"bytes=0-{len(data) + 99}"):
        status, got, cut = _received(server, url, {"Range": whole})
        assert status == 206, whole
        assert cut is not None and len(got) < len(data), whole
    status, got, cut = _received(server, url, {"Range": "bytes=0-9"})
    assert (status, got, cut) == (206, data[:10], None)


def test_a_download_of_bytes_cut_on_disk_is_refused_before_a_byte_is_sent(
    server: LiveServer,
) -> None:
    data = os.urandom(CHUNK * 3)
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session_id = http.post("/sessions", json={}).json()["id"]
        url = f"/sessions/{session_id}/files/cut.bin"
        assert http.put(url, content=data).status_code == 201
        assert http.put(f"/sessions/{session_id}/files/kept.bin", content=b"kept").is_success
        _damage(blob_of(server.data_root, session_id, "cut.bin"), "cut")
        for method, headers in [("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=0-9"})]:
            answer = http.request(method, url, headers=headers)
            assert answer.status_code == 500, (method, headers)
            if method == "HEAD":
                continue
            assert answer.json()["code"] == "file_damaged"
            message = answer.json()["message"]
            assert message.startswith(
                f"cannot send file 'cut.bin' of session {session_id}: its bytes are "
                f"{len(data) // 2} bytes long, where {len(data)} were acknowledged"
            ), message
            for words in (
                "changed outside the app",
                "nothing of it was sent",
                "`app data check` reports every such file as file-damaged",
                "Put the file back from a backup (its SHA-256 is the ETag",
                f"PUT /sessions/{session_id}/files/cut.bin",
            ):
                assert words in message, words
        # The rest of the session is served, and the damaged file can be replaced.
        assert http.get(f"/sessions/{session_id}/files/kept.bin").content == b"kept"
        assert http.put(url, content=b"again").status_code == 200
        assert http.get(url).content == b"again"


def test_check_reports_damaged_bytes_and_a_repair_moves_none_of_them(
    app_store: Store,
) -> None:
    # `app data check` read every record and no byte: it called a root consistent whose
    # files were cut or flipped. A thorough check (the command's) now compares each file's
    # bytes, and each version in the trash, with the size and SHA-256 acknowledged;
    # nothing is repaired (the app cannot tell which bytes were meant), and the start-up's
    # check (not thorough) does not read them.
    store = app_store
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "cut.txt", b"0123456789" * 10)
    store.put_file(session_id, "flip.txt", b"abcdefghij" * 10)
    store.put_file(session_id, "kept.txt", b"kept")
    store.put_file(session_id, "old.txt", b"version 1" * 10)
    store.put_file(session_id, "old.txt", b"version 2", replace=True)
    root = store.root.path
    _damage(blob_of(root, session_id, "cut.txt"), "cut")
    _damage(blob_of(root, session_id, "flip.txt"), "flip-middle")
    (entry,) = store.list_trash()
    _damage(entry.path / "old.txt", "cut")

    assert store.check(repair=False, thorough=False).findings == []
    for repair in (False, True):
        findings = {f.target: f for f in store.check(repair=repair).findings}
        assert sorted(findings) == sorted(
            [
                f"sessions/{session_id}/records/cut.txt",
                f"sessions/{session_id}/records/flip.txt",
                f".trash/{entry.name}",
            ]
        )
        for finding in findings.values():
            assert finding.problem == "file-damaged"
            assert not finding.repaired
            assert "changed from outside the app" in finding.detail
            assert finding.repair.startswith("nothing: left for a human (put the bytes back")
        cut = findings[f"sessions/{session_id}/records/cut.txt"].detail
        assert "the bytes of file 'cut.txt' are 50 bytes long, where 100 were acknowledged" in cut
        flip = findings[f"sessions/{session_id}/records/flip.txt"].detail
        wanted = hashlib.sha256(b"abcdefghij" * 10).hexdigest()
        assert "the bytes of file 'flip.txt' have the SHA-256 " in flip
        assert f"where {wanted} was acknowledged" in flip
        old = findings[f".trash/{entry.name}"].detail
        assert "the bytes of file 'old.txt' are 45 bytes long, where 90 were acknowledged" in old
    # Nothing moved: every file is listed, the version is still in the trash.
    names = [f["name"] for f in store.get_session(session_id)["files"]]
    assert names == ["cut.txt", "flip.txt", "kept.txt", "old.txt"]
    assert [e.name for e in store.list_trash()] == [entry.name]
    # Without hashing (`app data check --quick`): the sizes alone, no byte read.
    quick = {f.target for f in store.check(hash_bytes=False).findings}
    assert quick == {f"sessions/{session_id}/records/cut.txt", f".trash/{entry.name}"}


def test_data_check_quick_compares_sizes_and_reads_no_bytes(
    app_config: Config, template: tuple[Path, list[str]]
) -> None:
    # ~1 s: reading every byte makes `app data check` as long as reading the root; --quick
    # keeps the check a cron job or a deploy script can afford: sizes only, no byte read
    # (strace sees no read of a blob), so a change of the same size goes unseen.
    _, ids = template
    flipped = blob_of(app_config.data_root, ids[0], "a.txt")
    _damage(flipped, "flip-last")
    env = {**os.environ, "APP_DATA_ROOT": str(app_config.data_root)}
    command = [sys.executable, "-m", "app", "data", "check"]
    # The untraced checks forked from the run's zygote (tests/forked_app.py: about 0.4 s of
    # CPU less each than a fresh interpreter); the traced one is exec'd under strace.
    full = forked_app.run(env, ["data", "check"])
    assert full.returncode == 65, full.stderr
    assert full.stdout.startswith(f"file-damaged  sessions/{ids[0]}/records/a.txt"), full.stdout
    traced = ["strace", "-f", "-qq", "-o", "/dev/stdout", "-P", str(flipped), "-e", "trace=read"]
    quick = subprocess.run(
        [*(traced if shutil.which("strace") else []), *command, "--quick"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert quick.returncode == 0, quick.stderr
    assert "read(" not in quick.stdout, quick.stdout
    _damage(blob_of(app_config.data_root, ids[1], "a.txt"), "cut")
    quick = forked_app.run(env, ["data", "check", "--quick"])
    assert quick.returncode == 65, quick.stderr
    assert quick.stdout.startswith(f"file-damaged  sessions/{ids[1]}/records/a.txt: the bytes")


# --- a command stopped by Ctrl-C right after one of its changes -------------------------------

needs_strace = pytest.mark.skipif(
    shutil.which("strace") is None or os.geteuid() != 0,
    reason="a signal delivered at one syscall of a real process takes strace(1) and root",
)

#: The changes a delete and a purge make: an unlink (a file's commit) and renames.
_CHANGES = "rename,renameat,renameat2,unlink,unlinkat"

_DELETE_FILE = """
import sys
from app.config import load
from app.storage import open_storage
store = open_storage(load(), writer=True, kind="maintenance", wanted="delete a file")
store.delete_file(sys.argv[1], "a.txt")
"""


@pytest.fixture
def template(app_config: Config, tmp_path: Path) -> tuple[Path, list[str]]:
    """Two sessions of one file each, on a root copied aside (and left unlocked)."""
    store = open_storage(app_config, writer=True, kind="tests", wanted="make a template")
    ids = []
    with store:
        for name in ("a", "b"):
            ids.append(store.create_session(name)["id"])
            store.put_file(ids[-1], "a.txt", f"the bytes of {name}".encode())
    saved = tmp_path / "template"
    shutil.copytree(app_config.data_root, saved, symlinks=True)
    return saved, ids


def _interrupted(
    config: Config, template: Path, nth: int, command: list[str], sig: str = "SIGINT"
) -> str:
    """Run ``command`` on a fresh copy of ``template`` with ``sig`` delivered right after its
    ``nth`` change; its standard error."""
    shutil.rmtree(config.data_root)
    shutil.copytree(template, config.data_root, symlinks=True)
    # Every rename and unlink the command makes counts, so it writes no bytecode of its own
    # (faults.NO_BYTECODE): the N-th is the app's.
    run = subprocess.run(
        [*strace_prefix(f"{_CHANGES}:signal={sig}:when={nth}"), *command],
        capture_output=True,
        text=True,
        env={**os.environ, **NO_BYTECODE, "APP_DATA_ROOT": str(config.data_root)},
        check=False,
    )
    assert run.returncode != 0, f"not interrupted at change {nth}: {run.stderr}"
    if sig == "SIGTERM":  # 128 + 15, as a shell reports a command `kill` stopped
        assert run.returncode == 143, (run.returncode, run.stderr)
    return run.stderr


def _everything_back(config: Config, ids: list[str]) -> None:
    """A repair (which finishes every trash entry) then restores give back every byte, each
    under its own name, and a second check finds the root clean."""
    store = open_storage(config, writer=True, kind="tests", wanted="check after Ctrl-C")
    assert isinstance(store, Store)
    with store:
        left = [f for f in store.check(repair=True).findings if not f.repaired]
        assert left == [], left
        for session_id, name in zip(ids, ("a", "b"), strict=True):
            if not (store.sessions_dir / session_id).is_dir():
                store.restore(session_id)
            if not any(f["name"] == "a.txt" for f in store.list_files(session_id)):
                store.restore(session_id, file="a.txt")
            handle, _ = store.open_file(session_id, "a.txt")
            with handle:
                assert handle.read() == f"the bytes of {name}".encode()
        assert store.check(repair=False).findings == []


@needs_strace
@pytest.mark.parametrize("nth", [1, 2])
@pytest.mark.parametrize(
    ("sig", "says"),
    [("SIGINT", "was interrupted (Ctrl-C, SIGINT)"), ("SIGTERM", "was stopped (SIGTERM)")],
)
def test_a_purge_interrupted_leaves_every_session_restorable(
    app_config: Config, template: tuple[Path, list[str]], nth: int, sig: str, says: str
) -> None:
    # At the first change (the rename that moves a session into its entry), the undo took
    # the exception for a move that had not happened and removed the entry's trash.json:
    # the session lay in the trash without it (`trash-no-manifest`, left for a human).
    # SIGTERM (`kill`, `timeout`, a CI job's or a supervisor's stop) ended the command at
    # once and silently (Python's default); it now stops it as Ctrl-C does, with the same
    # undo, exit 143 and a message that says what was stopped and what finishes it.
    saved, ids = template
    command = [sys.executable, "-m", "app", "data", "purge"]
    stderr = _interrupted(app_config, saved, nth, command, sig=sig)
    assert "Aborted!" not in stderr
    assert stderr.startswith(
        f"error: `app data purge` {says} before it finished: what it had changed stays changed"
    ), stderr
    assert "Run `app data check --repair` (with no server on the data root)" in stderr
    assert "then `app data purge` again if it is still wanted" in stderr
    _everything_back(app_config, ids)


@needs_strace
def test_a_file_delete_interrupted_right_after_its_commit_keeps_the_file_restorable(
    app_config: Config, template: tuple[Path, list[str]]
) -> None:
    # Interrupted right after the unlink of its record (its commit), the delete's undo
    # removed the trash entry that waited for the bytes: they stayed among the session's
    # blobs, which `check --repair` moved to the trash as an upload "never acknowledged"
    # (`orphan-<version>`), and `restore --file a.txt` answered that the trash had no such
    # file. The entry now stays, and the repair moves the bytes into it.
    saved, ids = template
    _interrupted(app_config, saved, 1, [sys.executable, "-c", _DELETE_FILE, ids[0]])
    _everything_back(app_config, ids)
    store = open_storage(app_config, writer=True, kind="tests", wanted="read the audit")
    with store:
        assert not [e for e in store.list_trash() if e.reason == "orphan"]


# --- the wall clock stepped around the trash's retention -------------------------------------


def test_empty_trash_older_than_counts_an_entrys_age_on_the_boot_clock(
    app_store: Store,
) -> None:
    # An entry is named by the wall clock of its delete. A delete made while the clock was a
    # year behind (a board that boots before NTP, a VM restored from a snapshot) was named a
    # year ago, and the first `empty-trash --older-than 7d` after NTP set the clock right
    # removed it for good, minutes after the delete. Within one boot an entry's age is now
    # read on the boot clock, which no step of the wall clock moves (so a clock set far
    # ahead at the empty-trash no longer makes every entry old enough either).
    import time_machine

    store = app_store
    now = datetime.now(UTC)
    behind = store.create_session("deleted while the clock was a year behind")["id"]
    store.put_file(behind, "a.txt", b"precious")
    with time_machine.travel(now - timedelta(days=365), tick=True):
        store.delete_session(behind)
    ahead = store.create_session("deleted, then the clock was set a year ahead")["id"]
    store.delete_session(ahead)
    (named,) = [e for e in store.list_trash() if e.session_id == behind]
    assert named.deleted_at < now - timedelta(days=300)  # named by the clock it had

    assert store.empty_trash(older_than=timedelta(days=7)) == []
    with time_machine.travel(now + timedelta(days=365), tick=True):
        assert store.empty_trash(older_than=timedelta(days=7)) == []
    assert {e.session_id for e in store.list_trash()} == {behind, ahead}
    store.restore(behind)
    handle, _ = store.open_file(behind, "a.txt")
    with handle:
        assert handle.read() == b"precious"

    # Old enough on the boot clock, an entry goes whatever its name says.
    store.delete_session(behind)
    removed = store.empty_trash(older_than=timedelta(microseconds=1))
    assert {e.session_id for e in removed} == {behind, ahead}


def test_an_entry_from_another_boot_is_aged_by_the_time_in_its_name(app_store: Store) -> None:
    # Across a reboot the boot clock starts again: the wall clock is all there is.
    store = app_store
    session_id = store.create_session("s")["id"]
    store.delete_session(session_id)
    (entry,) = store.list_trash()
    manifest = json.loads((entry.path / "trash.json").read_text())
    assert manifest["boot"]["id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert store.empty_trash(older_than=timedelta(days=7)) == []
    # A boot clock that says older than the name (a time namespace's offset) does not count
    # alone: the younger of the two ages does.
    manifest["boot"]["seconds"] -= 30 * 86400
    (entry.path / "trash.json").write_text(json.dumps(manifest))
    assert store.empty_trash(older_than=timedelta(days=7)) == []
    manifest["boot"]["id"] = "a boot before this one"
    (entry.path / "trash.json").write_text(json.dumps(manifest))
    assert store.empty_trash(older_than=timedelta(days=7)) == []  # its name: just now
    renamed = entry.path.with_name("20200101T000000000000Z-" + entry.name.split("-", 1)[1])
    entry.path.rename(renamed)
    assert [e.session_id for e in store.empty_trash(older_than=timedelta(days=7))] == [session_id]


# --- a digest sent in a chunked body's trailer ------------------------------------------------


def _chunked(
    server: LiveServer, line: str, body: bytes, trailer: str, extra: str = ""
) -> tuple[int, dict[str, Any]]:
    """One chunked request on a raw connection (httpx sends no trailers): status and body."""
    token = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    request = (
        (
            f"{line} HTTP/1.1\r\nHost: x\r\n{token}{extra}Transfer-Encoding: chunked\r\n"
            f"Connection: close\r\n\r\n{len(body):x}\r\n"
        ).encode()
        + body
        + f"\r\n0\r\n{trailer}\r\n".encode()
    )
    with connect(server) as sock:
        sock.sendall(request)
        status, _, answer = Answers(sock).next()
    return status, json.loads(answer)


def _field(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


@pytest.mark.parametrize("field", ["Repr-Digest", "Content-Digest"])
def test_a_digest_in_a_chunked_trailer_is_checked_before_the_commit(
    server: LiveServer, field: str
) -> None:
    # uvicorn drops a request's trailer (ASGI has none), and a client that sent its digest
    # there, as RFC 9530 allows, had a body changed on the way stored and acknowledged.
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session_id = http.post("/sessions", json={}).json()["id"]
        path = f"/sessions/{session_id}/files/t.txt"
        assert http.put(path, content=b"acknowledged").status_code == 201

        status, problem = _chunked(
            server, f"PUT {path}", b"changed on the way", f"{field}: {_field(b'sent')}\r\n"
        )
        assert status == 400, problem
        assert problem["code"] == "digest_mismatch"
        assert problem["message"].startswith(
            f"PUT of file 't.txt' in session {session_id} refused: {field} (in the trailer): "
            f"{_field(b'sent')} is not the SHA-256 of the body the server received"
        ), problem["message"]
        assert "nothing was stored and the file is as it was" in problem["message"]
        assert http.get(path).content == b"acknowledged"

        boundary = "B0und"
        form = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.txt"'
            f"\r\n\r\nchanged\r\n--{boundary}--\r\n"
        ).encode()
        status, problem = _chunked(
            server,
            f"POST /sessions/{session_id}/files",
            form,
            f"Trailer-Note: read past\r\n{field}: {_field(b'another form')}\r\n",
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n",
        )
        assert status == 400, problem
        assert f"{field} (in the trailer)" in problem["message"]
        assert "the multipart body" in problem["message"]
        assert http.get(f"/sessions/{session_id}/files/m.txt").status_code == 404

        twice = f"{field}: {_field(b'x')}\r\n{field}: {_field(b'x')}\r\n"
        status, problem = _chunked(server, f"PUT {path}", b"x", twice)
        assert (status, problem["code"]) == (400, "bad_request"), problem
        assert f"the trailer of the body has {field} twice" in problem["message"]
        status, problem = _chunked(server, f"PUT {path}", b"x", f"{field}: md5=:AAAA:\r\n")
        assert (status, problem["code"]) == (400, "digest_unsupported"), problem
        assert http.get(path).content == b"acknowledged"

        right = b"the bytes sent"
        status, entry = _chunked(server, f"PUT {path}", right, f"{field}: {_field(right)}\r\n")
        assert status == 200, entry
        assert entry["sha256"] == hashlib.sha256(right).hexdigest()
        assert http.get(path).content == right


# --- name limits ---------------------------------------------------------------------------


def test_a_name_that_normal_form_c_makes_too_long_is_refused_saying_so() -> None:
    # U+FB2C is 3 bytes, and 6 in NFC (a composition exclusion): 85 of them are 255 bytes as
    # sent and 510 as stored. Refused, as it must be, the message named 510 bytes and no
    # reason a client could see; names NFC shortens (NFD accents, U+2126) are taken whole.
    from app.errors import InvalidNameError
    from app.names import check_file_name

    with pytest.raises(InvalidNameError) as refused:
        check_file_name("\ufb2c" * 85)
    assert (
        "it is 510 bytes long in UTF-8 once normalised to NFC (255 bytes as sent); the limit "
        "is 255" in refused.value.message
    )
    assert check_file_name("e\u0301" * 85) == "\u00e9" * 85
    assert check_file_name("\u2126" * 127 + "a") == "\u03a9" * 127 + "a"


@needs_strace
def test_a_file_that_cannot_be_read_is_reported_and_the_rest_checked(
    app_config: Config, template: tuple[Path, list[str]]
) -> None:
    # Now that the check reads every byte, a bad sector (EIO) is one more way bytes are
    # damaged: it stopped the whole check (a read failed, so it could not say what it had
    # missed), and the other files went unchecked.
    _, ids = template
    first = blob_of(app_config.data_root, ids[0], "a.txt")
    _damage(blob_of(app_config.data_root, ids[1], "a.txt"), "flip-last")
    strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(first), "-e", "trace=read"]
    run = subprocess.run(
        [*strace, "-e", "inject=read:error=EIO", sys.executable, "-m", "app", "data", "check"],
        capture_output=True,
        text=True,
        env={**os.environ, "APP_DATA_ROOT": str(app_config.data_root)},
        check=False,
    )
    assert run.returncode == 65, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(
        f"file-damaged  sessions/{ids[0]}/records/a.txt: the bytes of file 'a.txt' cannot be "
        "read (Input/output error)"
    ), lines
    assert lines[1].startswith(f"file-damaged  sessions/{ids[1]}/records/a.txt"), lines


# --- an object rewritten in the bucket (PostgreSQL and object storage) -----------------------


def test_an_object_rewritten_with_bytes_of_the_same_length_is_never_a_complete_download(
    s3_engine: S3Engine, database_url: str, blob_url: str, app_config: Config
) -> None:
    # Layer 3's *not stopped*: an object rewritten by hand with bytes of the same length was
    # served whole under the recorded ETag. A whole download is now hashed as it is sent and
    # cut before its last byte; one of another length was already refused before a byte.
    from fastapi.testclient import TestClient

    from app.remote import pg
    from app.remote.store import RemoteStore
    from app.server import create_app

    objects = s3_engine.objects(blob_url)
    pg.open_database(database_url, "production")
    objects.open("production")
    data = os.urandom(CHUNK + 10)
    with RemoteStore(database_url, objects, "production") as store:
        session_id = store.create_session("s")["id"]
        store.put_file(session_id, "same.bin", data)
        store.put_file(session_id, "short.bin", data)
        with pg.connect(database_url, purpose="test", autocommit=True) as conn:
            rows = conn.execute(
                "SELECT name, blob FROM app_files WHERE session_id = %s AND deleted_at IS NULL",
                (session_id,),
            ).fetchall()
        blobs = {name: blob for name, blob in rows}
        objects.put(blobs["same.bin"], bytes(b ^ 1 for b in data))
        objects.put(blobs["short.bin"], data[:10])
        headers = {"Authorization": f"Bearer {app_config.api_token}"}
        with TestClient(create_app(store, app_config), headers=headers) as client:
            short = client.get(f"/sessions/{session_id}/files/short.bin")
            # Refused as a data root refuses another length (red team 49: object_changed).
            assert (short.status_code, short.json()["code"]) == (500, "file_damaged")
            assert f"file 'short.bin' of session {session_id}: its bytes are 10 bytes" in short.text
            with client.stream("GET", f"/sessions/{session_id}/files/same.bin") as same:
                got = b"".join(same.iter_raw())
            assert same.status_code == 200
            assert len(got) < len(data), "a complete answer of bytes no one acknowledged"
        # `app data check` there compared sizes only, and called such a bucket consistent.
        found = {f.target: f for f in store.check().findings}
        assert {f.problem for f in found.values()} == {"record-object-changed"}
        same_finding = found[f"{session_id}/same.bin"].detail
        assert f"was saved with the SHA-256 {hashlib.sha256(data).hexdigest()}" in same_finding
        assert "downloads of it are cut before their last byte" in same_finding
        assert f"was saved as {len(data)} bytes" in found[f"{session_id}/short.bin"].detail
