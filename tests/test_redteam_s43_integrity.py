"""Red team 43 on integrity: what a listing leaves out, and what streams while a session goes.

Real commands on real files, and a real server on 127.0.0.1. What broke:

- A session directory moved out of the root and linked back (red team 42's *not stopped*),
  and a session whose ``session.json`` was damaged, were left out of ``app sessions list``
  without a word (and of ``GET /sessions``, whose ``total`` counts them). The list now names
  each one on stderr, why it is left out and what puts it back; the server logs the same when
  a page leaves one out.

What held is kept too: an upload (``PUT`` new, ``PUT`` over a file, multipart ``POST``) whose
session is deleted while its body streams is refused 404, nothing of it acknowledged, left in
``.tmp/`` or put in the trash; a body cut after its last byte of data but before its chunked
or multipart end writes nothing; and a ``DELETE`` whose move of the bytes into the trash fails
after its commit (``EBUSY`` injected with strace) is restored whole by ``app sessions restore``
before any check.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
from faults import attach, detach, needs_strace
from test_server_e2e import Server, app_env, run_app, wait_for

from app.config import Config
from app.storage import open_storage


def test_sessions_list_names_each_session_it_leaves_out_and_what_puts_it_back(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    env = app_env(root)
    linked, directory, elsewhere, damaged = _move_away_and_damage(app_config, tmp_path)

    for args in ((), ("--json",)):
        listed = run_app("sessions", "list", *args, env=env)
        assert listed.returncode == 0, listed.stderr
        assert linked not in listed.stdout and damaged not in listed.stdout
        # It said nothing of either.
        assert (
            f"warning: session {linked} is not listed: {directory} is a symbolic link "
            f"(to {elsewhere}) where a session's directory belongs"
        ) in listed.stderr, listed.stderr
        assert f"`rm {directory} && mv '{elsewhere}' {directory}`" in listed.stderr
        assert (
            f"warning: session {damaged} is not listed: cannot read session {damaged}: its "
            "session.json is not a JSON object"
        ) in listed.stderr, listed.stderr
        assert "`app data check` reports" in listed.stderr


def _move_away_and_damage(config: Config, tmp_path: Path) -> tuple[str, Path, Path, str]:
    """Sessions ``linked`` (its directory moved to ``other disk`` and linked back) and
    ``damaged`` (its session.json not an object), and a third one, plain."""
    root = config.data_root
    with open_storage(config, writer=True, kind="tests", wanted="make") as store:
        linked, damaged, _ = (store.create_session(t)["id"] for t in ("l", "d", "p"))
    directory, elsewhere = root / "sessions" / linked, tmp_path / "other disk" / linked
    elsewhere.parent.mkdir()
    shutil.move(directory, elsewhere)
    directory.symlink_to(elsewhere)
    (root / "sessions" / damaged / "session.json").write_text("[]")
    return linked, directory, elsewhere, damaged


def _left_out_of(linked: str, damaged: str) -> list[dict[str, str]]:
    """What a page says of the two sessions `_move_away_and_damage` leaves out, by id."""
    said = {
        linked: {
            "id": linked,
            "reason": "linked",
            "message": (
                f"session {linked} is counted but not shown: its directory is a symbolic link "
                "(moved out of the data root and linked back), which the app never follows; "
                "the server's log and `app data check` name the link and the command that "
                "puts the directory back"
            ),
        },
        damaged: {
            "id": damaged,
            "reason": "unreadable",
            "message": (
                f"session {damaged} is counted but not shown: its session.json cannot be read "
                "(damaged, or not written by the app); the server's log and `app data check` "
                "name the file and what to do"
            ),
        },
    }
    return [said[session] for session in sorted(said)]


def _wait_for_bytes_in_tmp(root: Path) -> None:
    def arrived() -> bool:
        return any(p.is_file() and p.stat().st_size > 0 for p in (root / ".tmp").rglob("*"))

    wait_for(arrived, f"an upload's first bytes in {root / '.tmp'}")


def _slow_body(first: bytes, rest: bytes, go: threading.Event) -> Iterator[bytes]:
    yield first
    go.wait()
    yield rest


def _upload(
    http: httpx.Client, mode: str, session: str, go: threading.Event, answers: list[object]
) -> None:
    """Upload ``a.bin`` (2 MiB) to ``session`` by ``mode``, its second half once ``go``."""
    first, rest = b"x" * (1 << 20), b"y" * (1 << 20)
    if mode == "multipart":
        head = (
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.bin"'
            b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        answers.append(
            http.post(
                f"/sessions/{session}/files",
                content=_slow_body(head + first, rest + b"\r\n--B--\r\n", go),
                headers={"Content-Type": "multipart/form-data; boundary=B"},
            )
        )
    else:
        url = f"/sessions/{session}/files/a.bin"
        answers.append(http.put(url, content=_slow_body(first, rest, go)))


def test_an_upload_whose_session_is_deleted_while_it_streams_is_refused_and_leaves_nothing(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    linked, directory, _, damaged = _move_away_and_damage(app_config, tmp_path)
    server = Server(app_env(root), tmp_path / "server.log").wait_ready()
    try:
        with server.client() as http, server.client() as other:
            # Broke: GET /sessions left both out (its total counts them) and the log said
            # nothing; now it names each, once. And the answer itself said nothing but its
            # total (red team 43's not-stopped row): each page names them in `left_out`,
            # with no path of the server's, on the route and on its direct path alike.
            for limit in (1, 2, 50, 1000):  # pages of one to all: each names its own
                items, passed, after = [], [], None
                while True:
                    query = {"limit": limit} | ({} if after is None else {"after": after})
                    page = http.get("/sessions", params=query).json()
                    assert page["total"] == 3, page
                    items += page["items"]
                    passed += page["left_out"]
                    if (after := page["next"]) is None:
                        break
                assert len(items) == 1 and passed == _left_out_of(linked, damaged), limit
                assert str(root) not in str(passed)
            assert (
                server.output.count(
                    f"session {linked} is left out of GET /sessions: {directory} is a symbolic link"
                )
                == 1
            ), server.output
            assert (
                server.output.count(
                    f"session {damaged} is left out of GET /sessions: cannot read session {damaged}"
                )
                == 1
            ), server.output
            for mode in ("put-new", "put-replace", "multipart"):
                session = http.post("/sessions", json={"title": mode}).json()["id"]
                url = f"/sessions/{session}/files/a.bin"
                if mode == "put-replace":
                    assert http.put(url, content=b"old").status_code == 201
                go, answers = threading.Event(), []
                sender = threading.Thread(target=_upload, args=(http, mode, session, go, answers))
                sender.start()
                # The server has the first chunk once its blob holds bytes in .tmp/.
                _wait_for_bytes_in_tmp(root)
                assert other.delete(f"/sessions/{session}").status_code == 200
                go.set()
                sender.join()
                [answer] = answers
                assert answer.status_code == 404, (mode, answer.text)
                assert f"no session '{session}'" in answer.json()["message"]
                assert not any((root / ".tmp").iterdir())
                trashed = [p.name for p in (root / ".trash").rglob("*") if p.is_file()]
                assert trashed.count("trash.json") == len(list((root / ".trash").iterdir()))
    finally:
        server.stop()


def _cut(server: Server, request: bytes) -> bytes:
    """Send ``request`` on a connection of its own, end it there (FIN: the client sends
    nothing more) and read what the server answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_a_body_cut_before_its_chunked_or_multipart_end_changes_nothing(
    app_config: Config, tmp_path: Path
) -> None:
    # Held: every byte of the file arrived, only the end of the body did not (the chunked
    # body's last chunk, the multipart closing boundary): nothing is written or acknowledged.
    root = app_config.data_root
    server = Server(app_env(root), tmp_path / "server.log").wait_ready()
    try:
        with server.client() as http:
            session = http.post("/sessions", json={"title": "cut"}).json()["id"]
            url = f"/sessions/{session}/files/a.txt"
            assert http.put(url, content=b"version 1").status_code == 201
            body = os.urandom(200_000)
            chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n"
            auth = f"Authorization: Bearer {server.token}\r\nHost: x\r\n"
            put = f"PUT {url} HTTP/1.1\r\n{auth}Transfer-Encoding: chunked\r\n\r\n".encode()
            part = (
                b'--B\r\nContent-Disposition: form-data; name="file"; filename="b.txt"\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n" + body
            )
            post = (
                f"POST /sessions/{session}/files HTTP/1.1\r\n{auth}"
                f"Content-Type: multipart/form-data; boundary=B\r\n"
                f"Content-Length: {len(part) + 9}\r\n\r\n"
            ).encode()
            for request in (
                put + chunk,
                put + chunk + b"0\r\n",
                *(post + part + tail for tail in (b"", b"\r\n", b"\r\n--B", b"\r\n--B--")),
            ):
                answer = _cut(server, request)
                assert not answer.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")), answer[:300]
                assert http.get(url).content == b"version 1"
                assert http.get(f"/sessions/{session}/files/b.txt").status_code == 404
    finally:
        server.stop()
    # Once the server has stopped (SIGTERM: it finishes what it was doing), not as the last
    # connection closes: a cut body's route removes its temporary file after the server
    # closed that connection, and a serial run once looked between the two.
    assert not any((root / ".tmp").iterdir())
    checked = run_app("data", "check", env=app_env(root))
    assert checked.returncode == 0, checked.stdout


@needs_strace
def test_a_delete_whose_move_to_the_trash_fails_after_its_commit_is_restored_whole(
    app_config: Config, tmp_path: Path
) -> None:
    # Held: the record is removed (the commit), then the rename of the bytes into the trash
    # entry fails (EBUSY, as a bind mount answers). The DELETE is 200, the server logs that
    # `check` will finish the move, and a restore with no check between brings the version
    # deleted back, not the one replaced before it.
    root = app_config.data_root
    env = app_env(root)
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        with server.client() as http:
            session = http.post("/sessions", json={"title": "busy"}).json()["id"]
            url = f"/sessions/{session}/files/a.txt"
            assert http.put(url, content=b"version 1").status_code == 201
            assert http.put(url, content=b"version 2").status_code == 200
            # Its first rename is the bytes' into the trash (the record is unlinked).
            tracer = attach(server.pid, "rename:error=EBUSY:when=1")
            try:
                assert http.delete(url).status_code == 200
            finally:
                detach(tracer)
            assert http.get(url).status_code == 404
    finally:
        server.stop()
    assert "to the trash yet ([Errno 16] Device or resource busy" in server.output
    assert "`check` will" in server.output
    restored = run_app("sessions", "restore", session, "--file", "a.txt", env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.file_path(session, "a.txt")[0].read_bytes() == b"version 2"
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout
