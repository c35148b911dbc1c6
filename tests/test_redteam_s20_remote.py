"""Red team, round three, on PostgreSQL and object storage: a commit whose outcome the app
cannot see, and a hold lost between a write's check and its commit.

A real TCP relay stands between the store and the real cluster and acts on the client's
``COMMIT`` message: it forwards it and cuts the connection before the server's answer comes
back (the commit happened, the client cannot know), cuts it instead of forwarding it (the
commit never happened), or holds it until the test lets it go. Nothing of PostgreSQL or of
the object store is mocked; the relay only moves bytes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from engines import PostgresEngine, S3Engine

from app.remote import pg
from app.remote.errors import (
    CommitUnknownError,
    DatabaseUnavailableError,
    HolderLostError,
    MaintenanceLostError,
    ObjectStoreUnavailableError,
    ReplicasLiveError,
)
from app.remote.objects import BLOBS, ObjectStore
from app.remote.store import RemoteStore

PROFILE = "production"
# The simple-protocol message psycopg sends to end a transaction: 'Q', length, text, NUL.
_COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"


class Relay:
    """A TCP relay to the cluster that can cut or hold the next ``COMMIT`` it forwards."""

    def __init__(self, port: int) -> None:
        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._mode: str | None = None
        self._refuse = False
        self.release = threading.Event()
        self.reached = threading.Event()  # the armed COMMIT arrived
        self.done = threading.Event()  # ... and was dealt with
        self._sockets: list[socket.socket] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, engine: PostgresEngine, dbname: str) -> str:
        return f"postgresql://{engine.user}@127.0.0.1:{self.port}/{dbname}"

    def arm(self, mode: str, *, then_refuse: bool = False) -> None:
        """``after``: forward the next COMMIT, cut before its answer; ``before``: cut instead
        of forwarding it; ``half-open``: cut the client's side only, leaving the server's open;
        ``hold``: forward it once :attr:`release` is set. ``then_refuse``:
        refuse every new connection from that moment (the database unreachable)."""
        self._refuse = then_refuse
        self.reached.clear()
        self.done.clear()
        self.release.clear()
        self._mode = mode

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            self._sockets += [client, server]
            cut = threading.Event()
            threading.Thread(target=self._up, args=(client, server, cut), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, cut), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                mode = self._mode
                if mode is not None and _COMMIT in data:
                    self._mode = None
                    if self._refuse:
                        _close(self._listener)
                    self.reached.set()
                    if mode == "before":
                        _close(client, server)
                        self.done.set()
                        return
                    if mode == "half-open":
                        # The client's side goes; the server's stays open, its backend
                        # idle in the transaction, as behind a partition.
                        self.held.append(server)
                        _close(client)
                        self.done.set()
                        return
                    if mode == "hold":
                        self.release.wait()
                    else:
                        cut.set()  # the answer to this COMMIT is never delivered
                server.sendall(data)
                if mode == "hold":
                    self.done.set()
        _close(client, server)

    def _down(self, server: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if cut.is_set():
                    # The server has answered the COMMIT: it is decided, and the client
                    # never hears how.
                    _close(client, server)
                    self.done.set()
                    return
                client.sendall(data)
        _close(client, server)

    def close(self) -> None:
        _close(self._listener)
        for sock in self._sockets:
            _close(sock)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.fixture
def relay(postgres_engine: PostgresEngine) -> Iterator[Relay]:
    relay = Relay(postgres_engine.port)
    yield relay
    relay.close()


def _objects(s3_engine: S3Engine, blob_url: str) -> ObjectStore:
    objects = s3_engine.objects(blob_url)
    objects.open(PROFILE)
    return objects


@pytest.fixture
def through_relay(
    postgres_engine: PostgresEngine, database_url: str, s3_engine: S3Engine, blob_url: str,
    relay: Relay,
) -> Iterator[tuple[RemoteStore, str]]:  # fmt: skip
    """A store whose pool reaches the cluster through the relay, and the direct URL."""
    pg.open_database(database_url, PROFILE)
    dbname = database_url.rsplit("/", 1)[1]
    store = RemoteStore(
        relay.url(postgres_engine, dbname),
        _objects(s3_engine, blob_url),
        PROFILE,
        orphan_grace=timedelta(0),
        pool_size=2,
    )
    with store:
        yield store, database_url


def _blobs(store: RemoteStore) -> set[str]:
    return {info.name for info in store.objects.objects(BLOBS)}


# --- the commit's outcome unknown --------------------------------------------------------


def test_an_upload_whose_commit_answer_is_lost_is_answered_as_it_was_decided(
    through_relay: tuple[RemoteStore, str], relay: Relay
) -> None:
    store, _ = through_relay
    session = store.create_session("lost answers")["id"]
    store.put_file(session, "a.txt", b"first version")
    relay.arm("after")
    entry = store.put_file(session, "a.txt", b"second version", replace=True)
    assert relay.done.is_set()
    # The server committed the replace: the answer says so, and the bytes it names are there.
    assert entry["size"] == len(b"second version")
    handle, served = store.open_file(session, "a.txt")
    with handle:
        assert handle.read() == b"second version"
    assert served["sha256"] == entry["sha256"]
    assert store.check().findings == []
    assert [e.file for e in store.list_trash()] == ["a.txt"]


def test_a_create_whose_commit_answer_is_lost_is_not_made_twice_by_the_retry_it_would_need(
    through_relay: tuple[RemoteStore, str], relay: Relay
) -> None:
    store, _ = through_relay
    relay.arm("after")
    made = store.create_session("once")
    assert relay.done.is_set()
    assert store.session_ids() == [made["id"]]
    assert store.get_session(made["id"])["title"] == "once"


def test_an_upload_whose_commit_never_reached_the_server_changes_nothing_and_says_so(
    through_relay: tuple[RemoteStore, str], relay: Relay
) -> None:
    store, _ = through_relay
    session = store.create_session("cut before")["id"]
    store.put_file(session, "a.txt", b"first version")
    before = _blobs(store)
    relay.arm("before")
    with pytest.raises(DatabaseUnavailableError) as caught:
        store.put_file(session, "a.txt", b"second version", replace=True)
    assert not isinstance(caught.value, CommitUnknownError)
    assert "was not saved" in caught.value.message and "retry" in caught.value.message
    handle, _ = store.open_file(session, "a.txt")
    with handle:
        assert handle.read() == b"first version"
    assert _blobs(store) == before  # the upload's object went with it
    assert store.list_trash() == []


def test_a_commit_lost_on_a_half_open_connection_is_settled_by_ending_its_backend(
    through_relay: tuple[RemoteStore, str], relay: Relay
) -> None:
    store, direct = through_relay
    session = store.create_session("half-open")["id"]
    relay.arm("half-open")
    with pytest.raises(DatabaseUnavailableError) as caught:
        store.put_file(session, "a.txt", b"never committed")
    # The backend, still in the transaction, was ended, so its COMMIT can never arrive.
    assert "the database says it was not saved" in caught.value.message
    with psycopg.connect(direct, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM app_files").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
            " AND datname = current_database()"
        ).fetchone() == (0,)
    assert list(store.objects.objects(BLOBS)) == []


def test_an_outcome_that_cannot_be_learnt_keeps_the_object_and_says_what_to_check(
    through_relay: tuple[RemoteStore, str], relay: Relay
) -> None:
    store, _ = through_relay
    session = store.create_session("unknown")["id"]
    relay.arm("after", then_refuse=True)  # the commit happens; the database is then unreachable
    with pytest.raises(CommitUnknownError) as caught:
        store.put_file(session, "a.txt", b"saved after all")
    assert caught.value.http_status == 503
    message = caught.value.message
    assert f"the upload of 'a.txt' into session {session}" in message
    assert "whether it was saved is unknown" in message
    assert "were kept" in message and "app data check" in message
    # It was saved: the row names the object, which must still be there.
    [row] = store.objects.objects(BLOBS)
    with psycopg.connect(through_relay[1], autocommit=True) as conn:
        assert conn.execute("SELECT blob FROM app_files").fetchall() == [(row.name,)]


# --- a hold lost between a write's check and its commit ----------------------------------


def test_maintenance_cannot_take_the_database_between_a_replica_s_check_and_its_commit(
    through_relay: tuple[RemoteStore, str], relay: Relay, postgres_engine: PostgresEngine,
) -> None:  # fmt: skip
    store, direct = through_relay
    dbname = direct.rsplit("/", 1)[1]
    holder = pg.Holder(relay.url(postgres_engine, dbname), PROFILE).start()
    store.db.holder = holder
    session = store.create_session("racing")["id"]
    store.put_file(session, "a.txt", b"kept")
    relay.arm("hold")
    outcome: list[Any] = []

    def delete() -> None:
        try:
            outcome.append(store.delete_file(session, "a.txt"))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=delete)
    thread.start()
    relay.reached.wait()  # checked its hold, and sent COMMIT: the relay holds it
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s, 10000)", (holder.row["backend_pid"],))
    # The replica's lock is gone; the write it checked is still to commit.
    with pytest.raises(ReplicasLiveError) as refused, pg.maintenance(direct, PROFILE, "x"):
        pass
    assert "Nothing was changed" in refused.value.message
    assert "a write of a replica that has stopped is still committing (backend pid" in (
        refused.value.message
    )
    relay.release.set()
    thread.join()
    [done] = outcome
    assert not isinstance(done, BaseException)
    with pg.maintenance(direct, PROFILE, "empty the trash"):
        pass
    holder.close()


def test_a_maintenance_command_that_lost_its_exclusive_hold_writes_nothing_more(
    database_url: str, s3_engine: S3Engine, blob_url: str
) -> None:
    pg.open_database(database_url, PROFILE)
    with RemoteStore(database_url, _objects(s3_engine, blob_url), PROFILE) as replica:
        session = replica.create_session("in the trash")["id"]
        replica.delete_session(session)
    with pg.maintenance(database_url, PROFILE, "empty the trash") as held:
        store = RemoteStore(
            database_url, _objects(s3_engine, blob_url), PROFILE, kind="maintenance",
            maintenance=held,
        )  # fmt: skip
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s, 10000)", (held.backend_pid,))
        # A replica may start now, and does; the command must not go on as if it held all.
        with pg.Holder(database_url, PROFILE), pytest.raises(MaintenanceLostError) as caught:
            store.empty_trash()
        store.close()
    message = caught.value.message
    assert "empty the trash" in message and "exclusively" in message
    assert "nothing more was changed" in message and "run it again" in message
    assert caught.value.exit_code == 70
    with RemoteStore(database_url, _objects(s3_engine, blob_url), PROFILE) as replica:
        assert [entry.session_id for entry in replica.list_trash()] == [session]


def test_a_replica_whose_database_restarted_refuses_writes_until_it_holds_again(
    postgres_engine: PostgresEngine, database_url: str, s3_engine: S3Engine, blob_url: str
) -> None:
    pg.open_database(database_url, PROFILE)
    noticed = threading.Event()
    holder = pg.Holder(database_url, PROFILE, on_lost=lambda error: noticed.set()).start()
    store = RemoteStore(database_url, _objects(s3_engine, blob_url), PROFILE, holder=holder)
    session = store.create_session("before the restart")["id"]
    # For real, as a crash and a restart by the service manager would (after a checkpoint:
    # the throwaway cluster commits asynchronously, and a crash would lose its last commits).
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    postgres_engine.restart()
    # Maintenance may take the database before the replica's watch speaks; a write of the
    # replica, on a connection its pool opens again, must not commit.
    with pg.maintenance(database_url, PROFILE, "purge"), pytest.raises(HolderLostError):
        store.delete_session(session)
    noticed.wait()
    with pytest.raises(HolderLostError):
        store.delete_session(session)
    assert store.session_ids() == [session]
    store.close()


# --- an upload cut off in the object store -----------------------------------------------


def test_the_parts_of_an_upload_cut_off_mid_way_are_found_by_check_and_removed_by_repair(
    database_url: str, s3_engine: S3Engine, blob_url: str
) -> None:
    # What a replica killed in the middle of a large (multipart) upload leaves, or one whose
    # object store went away before the upload could be aborted: parts, and no object. No
    # listing of objects shows them, and the object store keeps (and bills) them for good.
    pg.open_database(database_url, PROFILE)
    objects = _objects(s3_engine, blob_url)
    with RemoteStore(database_url, objects, PROFILE, orphan_grace=timedelta(0)) as replica:
        session = replica.create_session("big uploads")["id"]
        replica.put_file(session, "kept.bin", b"kept")
    key = objects.location.key(objects.new_blob_name())
    client = s3_engine.client()
    started = client.create_multipart_upload(Bucket=s3_engine.bucket, Key=key)
    client.upload_part(
        Bucket=s3_engine.bucket, Key=key, UploadId=started["UploadId"], PartNumber=1,
        Body=b"x" * 1024,
    )  # fmt: skip
    with pg.maintenance(database_url, PROFILE, "check") as held:
        store = RemoteStore(
            database_url, objects, PROFILE, kind="maintenance", maintenance=held,
            orphan_grace=timedelta(0),
        )  # fmt: skip
        with store:
            found = store.check().findings
            assert [(f.problem, f.target) for f in found] == [
                ("upload-without-object", key.rsplit("/", 2)[-2] + "/" + key.rsplit("/", 1)[-1])
            ]
            assert "never finished" in found[0].detail and "abort the upload" in found[0].repair
            repaired = store.check(repair=True)
            assert [f.repaired for f in repaired.findings] == [True]
            assert store.check().findings == []
            handle, _ = store.open_file(session, "kept.bin")
            with handle:
                assert handle.read() == b"kept"
    listed = client.list_multipart_uploads(Bucket=s3_engine.bucket, Prefix=key)
    assert listed.get("Uploads", []) == []


def test_an_object_store_that_stops_mid_replace_keeps_the_old_version_and_says_so(
    database_url: str, tmp_path: Path
) -> None:
    # Its own `weed`, stopped mid-upload and started again on the same data and ports.
    from engines import _s3_ready, scratch, start_s3

    engine = start_s3(tmp_path / "weed")
    try:
        pg.open_database(database_url, PROFILE)
        objects = engine.objects(f"s3://{engine.bucket}/own{scratch()}", max_attempts=1)
        objects.open(PROFILE)
        with RemoteStore(database_url, objects, PROFILE, orphan_grace=timedelta(0)) as store:
            session = store.create_session("outage")["id"]
            old = store.put_file(session, "a.bin", b"old version " * 1000)
            upload = store.begin_upload(session, "a.bin", replace=True)
            upload.write(b"new version " * 1000)
            engine.process.kill()  # as a crash would; what it acknowledged is on its disk
            engine.process.wait()
            with pytest.raises(ObjectStoreUnavailableError) as caught:
                upload.commit()
            message = caught.value.message
            assert caught.value.http_status == 503
            assert f"cannot use object store {objects.where}" in message
            assert f"the upload of 'a.bin' into session {session} was not saved" in message
            assert "the file is as it was" in message and "retry" in message
            again = tmp_path / "weed" / "again.log"
            engine.start_again(again)
            client = engine.client()
            while not _s3_ready(engine, client):
                assert engine.process.poll() is None, again.read_text()
            assert store.get_session(session)["files"] == [old]
            while True:
                # A store still loading its volumes answers 500 for a while: a 503 here.
                try:
                    handle, _ = store.open_file(session, "a.bin")
                except ObjectStoreUnavailableError:
                    # Until it answers, or exits: a wait that ends on its condition only
                    # would hang the run on a `weed` that died.
                    assert engine.process.poll() is None, again.read_text()
                    continue
                break
            with handle:
                assert handle.read() == b"old version " * 1000
            assert store.check().findings == []
    finally:
        engine.stop()
