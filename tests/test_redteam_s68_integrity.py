"""Red team 68 on integrity (branch rt-integrity68): see docs/explanation/attacks/.

What broke: on PostgreSQL, `app sessions restore` (a session, or a file with ``--file``)
read the session it answers with on another connection once its transaction had
committed. A read that failed there (its connection lost: a failover, a restart, an
operator's ``pg_terminate_backend``, a proxy between the two) answered a restore that was
made, and audited, as one that failed: "lost the connection ... during a read ...: a read
changes nothing, so nothing was changed. Retry it", and the retry was refused ("no session
... in the trash", "a live file has that name"). And a file's restore into a session whose
row is not what its writes acknowledged was made, then refused as "cannot read session".
A data root's restore answers with what it read before its move; the remote one now reads
its answer in its own transaction, before the commit, and a file's restore refuses such a
session before it changes anything.

Found by a sweep not kept here: a TCP relay in front of the suite's cluster cut each
client message of a replace, a delete with If-Match, a file's and a session's restore, an
empty-trash and a session's delete, forwarded or not (one case a message); only the
restores' last read was answered as a failure of a change that was made.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator

import psycopg
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_redteam_s20_remote import _COMMIT, Relay, _close
from test_remote_store import PROFILE, _replica

from app.errors import UnreadableSessionError
from app.remote.store import RemoteStore
from app.storage import Storage

#: The empty query the pool sends to check a connection before it lends it (passed on: a
#: connection it finds cut is replaced, and the statement after it goes on a new one).
_CHECK = b"Q\x00\x00\x00\x05\x00"


class _ReadAfterCommitCut(Relay):
    """Red team 20's relay, which once armed forwards the next ``COMMIT``, then cuts the
    connection of the first statement any client sends after it, before it reaches the
    server: a read that follows a change's commit loses its connection."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self._armed = False
        self.committed = threading.Event()  # the armed COMMIT went through
        self.cut_read = threading.Event()  # ... and a statement after it was cut

    def arm_read_cut(self) -> None:
        self.committed.clear()
        self.cut_read.clear()
        self._armed = True

    def disarm(self) -> bool:
        """Disarm it; whether it cut a statement."""
        self._armed = False
        return self.cut_read.is_set()

    def _up(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self._armed and self.committed.is_set() and data != _CHECK:
                    self._armed = False
                    self.cut_read.set()
                    break
                if self._armed and _COMMIT in data:
                    # Before it is forwarded: set after, the client could have its answer,
                    # and the test look, first.
                    self.committed.set()
                server.sendall(data)
        _close(client, server)


@contextlib.contextmanager
def _through_relay(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> Iterator[tuple[_ReadAfterCommitCut, RemoteStore, str]]:
    """A replica whose every connection goes through the relay; the database's own URL."""
    with postgres_engine.opened_database(PROFILE) as (name, url):
        relay = _ReadAfterCommitCut(postgres_engine.port)
        try:
            with _replica(
                s3_engine, (relay.url(postgres_engine, name), new_blob_url(s3_engine))
            ) as store:
                yield relay, store, url
        finally:
            relay.close()


def _restores(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT operation, target FROM app_audit WHERE operation LIKE 'restore-%' ORDER BY id"
        ).fetchall()
    return [(str(operation), str(target)) for operation, target in rows]


def test_a_restore_made_is_answered_as_made_though_a_read_after_its_commit_fails(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with _through_relay(postgres_engine, s3_engine) as (relay, store, url):
        session = store.create_session("kept", {"n": 1})["id"]
        store.put_file(session, "a.txt", b"acknowledged bytes")
        store.delete_file(session, "a.txt")

        relay.arm_read_cut()
        # Before: StatementConnectionLostError, "a read changes nothing, so nothing was
        # changed. Retry it", of a file back in its session (and a retry refused).
        restored = store.restore(session, file="a.txt")
        assert relay.committed.is_set()
        assert not relay.disarm()  # nothing read after the commit
        assert [f["name"] for f in restored["files"]] == ["a.txt"]
        assert restored == store.get_session(session)  # the session as it now reads
        assert _restores(url) == [("restore-file", f"{session}/a.txt")]

        store.delete_session(session)
        relay.arm_read_cut()
        back = store.restore(session)
        assert relay.committed.is_set()
        assert not relay.disarm()
        assert back == store.get_session(session)
        assert back["title"] == "kept"
        assert [f["name"] for f in back["files"]] == ["a.txt"]
        assert _restores(url)[-1] == ("restore-session", session)
        with store.open_file(session, "a.txt")[0] as file:
            assert file.read() == b"acknowledged bytes"


def test_a_file_s_restore_into_a_session_not_as_acknowledged_changes_nothing(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: the file was restored (live, audited), then "cannot read session" was said,
    # as of a restore refused. A data root refuses it before its move, as now here.
    with _through_relay(postgres_engine, s3_engine) as (_, store, url):
        session = store.create_session("sent", {})["id"]
        store.put_file(session, "a.txt", b"acknowledged bytes")
        store.delete_file(session, "a.txt")
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("UPDATE app_sessions SET title = 'edited' WHERE id = %s", (session,))
        with pytest.raises(UnreadableSessionError) as refused:
            store.restore(session, file="a.txt")
        assert f"cannot read session {session}: its row in app_sessions" in str(refused.value)
        assert _restores(url) == []
        assert [(e.kind, e.file) for e in store.list_trash()] == [("file", "a.txt")]


def test_a_data_root_s_create_answers_the_metadata_in_the_order_every_read_gives(
    app_store: Storage,
) -> None:
    # Before: answered in the order sent ({"zeta", "alpha"}), and by every read after it in
    # session.json's, its keys sorted, as PostgreSQL's column retyped jsonb did (red team 63).
    sent = {"zeta": 1, "alpha": {"y": [{"b": 2, "a": 1}], "b": 3}}
    made = app_store.create_session("t", sent)
    assert made["metadata"] == sent
    read = app_store.get_session(made["id"])
    listed = app_store.list_sessions().items
    for answer in (read, *listed):
        assert json.dumps(answer["metadata"]) == json.dumps(made["metadata"])
    assert json.dumps(made["metadata"]) == '{"alpha": {"b": 3, "y": [{"a": 1, "b": 2}]}, "zeta": 1}'
