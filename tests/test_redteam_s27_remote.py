"""Red team 27 on PostgreSQL and object storage: the engines under failure, a live replica in
front of them.

All real: a lock another client of the cluster holds (what `psql` would: `SELECT ... FOR
UPDATE`, `LOCK TABLE`), the shared cluster restarted under a replica with requests in flight,
a ``weed`` of the test's own stopped with SIGSTOP (hung, not dead).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from engines import PostgresEngine, S3Engine, scratch, start_s3
from replicas import Production, production_on, wait_for
from test_remote_store import _objects

from app.remote import pg
from app.remote.errors import DatabaseBusyError, ObjectStoreUnavailableError
from app.remote.objects import ObjectStore
from app.remote.store import RemoteStore

PROFILE = "production"


def _blobs(production: Production, s3_engine: S3Engine) -> set[str]:
    prefix = production.blob_url.split("/", 3)[3] + "/blobs/"
    listed = s3_engine.client().list_objects_v2(Bucket=s3_engine.bucket, Prefix=prefix)
    return {item["Key"] for item in listed.get("Contents", [])}


def _refused(answer: httpx.Response, what: str) -> str:
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["code"] == "database_refused", body
    message: str = body["message"]
    assert f"refused {what}:" in message
    assert "lock timeout" in message and "SQLSTATE 55P03" in message
    assert "nothing was changed" in message
    assert "pg_stat_activity" in message  # who holds it
    assert "database_lock_wait_seconds (APP_DATABASE_LOCK_WAIT_SECONDS)" in message  # the fix
    return message


# --- a lock another client holds ----------------------------------------------------------


def test_a_lock_another_client_holds_never_keeps_a_request_waiting_for_ever(
    tmp_path: Path, postgres_engine: PostgresEngine, s3_engine: S3Engine, blob_url: str
) -> None:
    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as production:
        replica = production.start(APP_DATABASE_LOCK_WAIT_SECONDS="0.3")
        with production.client(replica) as client:
            session = client.post("/sessions", json={"title": "locked"}).json()["id"]
            url = f"/sessions/{session}/files/a.bin"
            kept = client.put(url, content=b"acknowledged")
            assert kept.status_code == 201, kept.text
            before = _blobs(production, s3_engine)
            with psycopg.connect(production.database_url) as other:
                # A client holding the session's row (psql in an open transaction).
                other.execute("SELECT 1 FROM app_sessions WHERE id = %s FOR UPDATE", (session,))
                _refused(
                    client.put(url, content=b"never saved"),
                    f"the upload of 'a.bin' into session {session}",
                )
                _refused(client.delete(url), f"the delete of 'a.bin' from session {session}")
                other.rollback()
                # A client holding the whole table: reads wait for it too.
                other.execute("LOCK TABLE app_sessions IN ACCESS EXCLUSIVE MODE")
                _refused(client.get(f"/sessions/{session}"), "a statement")
                _refused(
                    client.post("/sessions", json={"title": "t"}),
                    "the creation of a session titled 't'",
                )
                assert client.get("/health").status_code == 200
                other.rollback()
            # Nothing was kept of what was refused; the acknowledged version is served, and
            # the replica serves on.
            assert _blobs(production, s3_engine) == before
            read = client.get(url)
            assert (read.status_code, read.content) == (200, b"acknowledged")
            assert client.put(url, content=b"v2").status_code == 200
            assert client.get(url).content == b"v2"
            assert replica.process.poll() is None


@pytest.fixture
def store(database_url: str, s3_engine: S3Engine, blob_url: str) -> Iterator[RemoteStore]:
    pg.open_database(database_url, PROFILE)
    objects = _objects(s3_engine, blob_url)
    with RemoteStore(
        database_url,
        objects,
        PROFILE,
        orphan_grace=timedelta(0),
        pool_size=1,
        pool_wait_seconds=0.1,
    ) as opened:
        yield opened


def test_a_pool_held_by_this_process_is_not_called_a_database_that_does_not_answer(
    store: RemoteStore,
) -> None:
    session = store.create_session("busy")["id"]
    with store.db.conn():  # the pool's one connection, held as a request waiting would
        with pytest.raises(DatabaseBusyError) as read:
            store.get_session(session)
        with pytest.raises(DatabaseBusyError) as write:
            store.create_session("second")
    for error in (read.value, write.value):
        assert error.http_status == 503 and error.code == "database_busy"
        assert "cannot connect" not in error.message  # it answers
        assert "all 1 of this process's pool are held by requests still running" in error.message
        assert "pg_stat_activity" in error.message and "database_lock_wait_seconds" in error.message
    assert "the creation of a session titled 'second' was not begun" in write.value.message
    assert [s["id"] for s in store.list_sessions().items] == [session]


# --- the database crashed and restarted under requests in flight ---------------------------


@dataclass
class _Client:
    """One client's run of changes to its own session's file, and what each was answered."""

    number: int
    session: str | None = None
    created: list[str] = field(default_factory=list)
    # (the file's bytes after the change, or None once deleted; the answer's status, or 0)
    changes: list[tuple[bytes | None, int]] = field(default_factory=list)
    refusals: list[dict[str, str]] = field(default_factory=list)

    def run(self, url: str, headers: dict[str, str], stop: threading.Event) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            step = 0
            while not stop.is_set():
                step += 1
                body = f"{self.number}-{step}".encode() * 20_000
                try:
                    if self.session is None:
                        answer = client.post("/sessions", json={"title": f"c{self.number}"})
                        if answer.status_code == 201:
                            self.session = answer.json()["id"]
                            self.created.append(self.session)
                    elif step % 4 == 0:
                        answer = client.delete(f"/sessions/{self.session}/files/f.bin")
                        self.changes.append((None, answer.status_code))
                    else:
                        answer = client.put(f"/sessions/{self.session}/files/f.bin", content=body)
                        self.changes.append((body, answer.status_code))
                except httpx.TransportError:
                    if self.session is not None and step % 4:
                        self.changes.append((body, 0))
                    time.sleep(0.05)  # the replica has stopped; the test stops us soon
                    continue
                if answer.status_code >= 500:
                    self.refusals.append(answer.json())

    def possible(self) -> set[bytes | None]:
        """What the file may hold now: what the last acknowledged change left, or what a
        change after it that was not acknowledged would have."""
        states: set[bytes | None] = {None}
        for content, status in self.changes:
            if status in (200, 201) or (content is None and status == 404):
                states = {content}
            elif status == 0 or status >= 500:
                states.add(content)
        return states


def test_what_was_acknowledged_survives_a_database_crash_with_requests_in_flight(
    tmp_path: Path, postgres_engine: PostgresEngine, s3_engine: S3Engine, blob_url: str
) -> None:
    # The cluster as an operator may run it: synchronous_commit off (the suite's cluster
    # runs so already, for speed); a WAL writer that waits long makes its loss certain.
    settings = dict(postgres_engine.settings)
    assert settings["synchronous_commit"] == "off"
    postgres_engine.restart(signal.SIGINT, {**settings, "wal_writer_delay": "10s"})
    try:
        with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as production:
            replica = production.start()
            stop = threading.Event()
            clients = [_Client(number) for number in range(3)]
            threads = [
                threading.Thread(target=c.run, args=(replica.url, production.headers, stop))
                for c in clients
            ]
            for thread in threads:
                thread.start()
            wait_for(lambda: all(len(c.changes) >= 3 for c in clients), "changes under way")
            # An immediate shutdown, as a crash (no checkpoint; recovery at the start).
            postgres_engine.restart(signal.SIGQUIT, {**settings, "wal_writer_delay": "10s"})
            assert replica.process.wait(timeout=60) == 70  # its hold went with the server
            stop.set()
            for thread in threads:
                thread.join()
            assert "lost the connection that holds database" in replica.output
            # Every request in flight was answered, and each refusal named what it refused and
            # whether it was saved.
            for refusal in (r for c in clients for r in c.refusals):
                if refusal["code"] == "commit_outcome_unknown":  # the server went mid-COMMIT
                    assert "whether it was saved is unknown" in refusal["message"], refusal
                    continue
                if refusal["code"] == "database_unavailable":  # an upload's first read
                    assert "Check that the server runs" in refusal["message"], refusal
                    continue
                if refusal["code"] == "connection_lost" and "during a read" in refusal["message"]:
                    # A read the crash cut (red team 52's refusal): it changed nothing.
                    said = refusal["message"]
                    assert "a read changes nothing, so nothing was changed" in said, refusal
                    continue
                assert refusal["code"] in {"holder_lost", "connection_lost"}, refusal
                assert "nothing was" in refusal["message"], refusal
                assert "write" in refusal["message"] or "session" in refusal["message"]
            again = production.start()
            with production.client(again) as client:
                for c in clients:
                    for session in c.created:
                        assert client.get(f"/sessions/{session}").status_code == 200, session
                    read = client.get(f"/sessions/{c.session}/files/f.bin")
                    found = read.content if read.status_code == 200 else None
                    assert read.status_code in (200, 404), read.text
                    assert found in c.possible(), (c.number, c.changes[-3:], read.status_code)
    finally:
        postgres_engine.restart(signal.SIGINT, settings)


# --- the object store hung (SIGSTOP), not dead --------------------------------------------


def test_a_hung_object_store_ends_each_transfer_and_says_it_did_not_answer(
    tmp_path: Path, database_url: str
) -> None:
    engine = start_s3(tmp_path / "weed")  # its own: stopped mid-transfer
    try:
        pg.open_database(database_url, PROFILE)
        url = f"s3://{engine.bucket}/own{scratch()}"
        keys = (engine.endpoint_url, engine.access_key_id, engine.secret_access_key)
        body = bytes(range(256)) * 98_304  # 24 MiB: past what the sockets buffer
        # The file is put with a deployment's timeouts: a fresh engine on a busy machine
        # took more than the short second below to answer a part (CI, 2026-12-03).
        patient = ObjectStore(url, *keys, read_timeout=60, connect_timeout=10, max_attempts=3)
        patient.open(PROFILE)
        with RemoteStore(database_url, patient, PROFILE, pool_size=1) as store:
            session = store.create_session("hung")["id"]
            kept = store.put_file(session, "a.bin", body)
        # The timeouts a deployment would have (60 s, 3 attempts), made short.
        objects = ObjectStore(url, *keys, read_timeout=1, connect_timeout=1, max_attempts=1)
        objects.open(PROFILE)
        with RemoteStore(database_url, objects, PROFILE, pool_size=1) as store:
            # Mid-download: the stream ends with an error, never a short "complete" read.
            handle, _ = store.open_file(session, "a.bin")
            with handle:
                first = handle.read(1024 * 1024)
                engine.process.send_signal(signal.SIGSTOP)
                with pytest.raises(ObjectStoreUnavailableError) as cut:
                    while handle.read(1024 * 1024):
                        pass
            assert len(first) == 1024 * 1024
            assert f"the download of 'a.bin' from session {session}" in cut.value.message
            assert "was cut off after" in cut.value.message

            # Before a download's first byte: refused, naming it and that the store hangs.
            with pytest.raises(ObjectStoreUnavailableError) as before:
                store.open_file(session, "a.bin")
            message = before.value.message
            assert f"the download of 'a.bin' from session {session} was not begun" in message
            assert (
                "did not answer within 1 s to read (s3_read_timeout_seconds) and 1 s to connect"
                in message
            )
            assert "may be stopped or overloaded" in message

            # Mid-upload: refused, naming it; it held no database connection meanwhile.
            engine.process.send_signal(signal.SIGCONT)
            upload = store.begin_upload(session, "a.bin", replace=True)
            upload.write(body)
            engine.process.send_signal(signal.SIGSTOP)
            assert store.get_session(session)["files"] == [kept]  # the pool's one connection
            with pytest.raises(ObjectStoreUnavailableError) as put:
                upload.write(b"the rest")
                upload.commit()
            message = put.value.message
            assert f"the upload of 'a.bin' into session {session} was not saved" in message
            assert "the file is as it was" in message

            # Once it answers again: the acknowledged version, whole.
            engine.process.send_signal(signal.SIGCONT)
            handle, entry = store.open_file(session, "a.bin")
            with handle:
                assert (handle.read(), entry) == (body, kept)
    finally:
        engine.process.send_signal(signal.SIGCONT)
        engine.stop()
