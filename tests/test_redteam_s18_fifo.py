"""A file of the app's replaced by a FIFO (a named pipe) inside a data root (red team 18).

A FIFO is what a log shipper or a hand-made "stream the audit log" asks for, and what a
test that plays with `os.mkfifo` leaves behind. Opening one waits for the other end: a read
of one of the app's files through it would hang a request, a start-up or `app data check`
for good, or take whatever the other end writes for the file. Each FIFO here has a real
other end (a thread) that answers once the app opens it, so that the old behaviour shows
as a wrong answer, not a hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_http import WAIT

from app.config import Config
from app.errors import DataRootStateError, SessionNotServedError
from app.storage import open_storage
from app.store import Store


class Fifo:
    """A FIFO at ``path`` whose writer sends ``content`` to each reader that opens it."""

    def __init__(self, path: Path, content: bytes) -> None:
        self.path = path
        self.content = content
        os.mkfifo(path, 0o600)
        self._released = False
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        while True:
            fd = os.open(self.path, os.O_WRONLY)  # waits for a reader
            if self._released:
                os.close(fd)
                return
            with contextlib.suppress(BrokenPipeError):
                os.write(fd, self.content)
            os.close(fd)

    def release(self) -> None:
        """End the writer whatever the app did: be the reader it waits for, once more.

        And read what it wrote: a writer that had passed its check before the flag was set
        may be blocked in ``write`` on a full pipe (it loops while any reader holds the FIFO
        open), which only a read ends. Bounded by `WAIT`: a FIFO the app moved away leaves
        a writer that nothing will ever open, a daemon thread.
        """
        self._released = True
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return
        try:
            for _ in range(int(WAIT / 0.01)):
                with contextlib.suppress(BlockingIOError):
                    while os.read(fd, 65536):
                        pass
                self.thread.join(0.01)
                if not self.thread.is_alive():
                    return
        finally:
            os.close(fd)


@pytest.fixture
def fifos() -> Iterator[list[Fifo]]:
    made: list[Fifo] = []
    yield made
    for fifo in made:
        fifo.release()


def open_store(config: Config) -> Store:
    store = open_storage(config, writer=True, kind="tests", wanted="run a test on it")
    assert isinstance(store, Store)
    return store


def test_a_session_whose_session_json_is_a_fifo_takes_no_upload(
    app_config: Config, fifos: list[Fifo]
) -> None:
    with open_store(app_config) as store:
        session = store.create_session("planted")
        sid = session["id"]
        path = store.sessions_dir / sid / "session.json"
        path.unlink()
        fifos.append(Fifo(path, json.dumps(session).encode()))
        # As GET /sessions/{id} already says: a session.json that is no file is no session,
        # served by no read, change or delete (and said so, not "no session": a listing
        # names it unreadable; tests/test_session_not_served.py), and none opens the FIFO.
        with pytest.raises(SessionNotServedError):
            store.get_session(sid)
        with pytest.raises(SessionNotServedError):
            store.put_file(sid, "a.txt", b"bytes")
        with pytest.raises(SessionNotServedError):
            store.delete_session(sid)


def test_a_trash_manifest_that_is_a_fifo_is_not_read_as_one(
    app_config: Config, fifos: list[Fifo]
) -> None:
    with open_store(app_config) as store:
        sid = store.create_session("to the trash")["id"]
        entry = store.delete_session(sid)
        manifest = entry.path / "trash.json"
        manifest.unlink()
        planted = {"kind": "session", "file": "planted.txt", "reason": "planted"}
        fifos.append(Fifo(manifest, json.dumps(planted).encode()))
        [listed] = store.list_trash()
        assert (listed.name, listed.reason, listed.file) == (entry.name, "unknown", None)


@pytest.mark.parametrize("name", [".app-profile.json", "audit.jsonl"])
def test_a_root_whose_stamp_or_audit_log_is_a_fifo_is_refused_naming_it(
    app_config: Config, fifos: list[Fifo], name: str
) -> None:
    with open_store(app_config) as store:
        store.delete_session(store.create_session("audited")["id"])
        root = store.root.path
    (root / name).unlink()
    fifos.append(Fifo(root / name, json.dumps({"profile": "testing"}).encode() + b"\n"))
    with pytest.raises(DataRootStateError) as refused:
        open_store(app_config).close()
    message = str(refused.value)
    assert f"{root / name} is a FIFO, not a regular file" in message
    assert "move it away" in message


def test_a_file_record_that_is_a_fifo_is_not_read_as_one(
    app_config: Config, fifos: list[Fifo]
) -> None:
    # The same class, at a name the red team did not try: a record under records/.
    with open_store(app_config) as store:
        sid = store.create_session("records")["id"]
        store.put_file(sid, "kept.txt", b"kept")
        store.put_file(sid, "planted.txt", b"planted")
        records = store.sessions_dir / sid / "records"
        [planted] = [p for p in records.iterdir() if b"planted.txt" in p.read_bytes()]
        record = planted.read_bytes()
        planted.unlink()
        fifos.append(Fifo(planted, record))
        names = [entry["name"] for entry in store.get_session(sid)["files"]]
        assert names == ["kept.txt"]
        handle, entry = store.open_file(sid, "kept.txt")
        with handle:
            assert handle.read() == b"kept"
        assert entry["size"] == 4
