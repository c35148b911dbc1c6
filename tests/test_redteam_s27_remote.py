"""Red team 27 on PostgreSQL and object storage: the engines under failure, a live replica in
front of them.

All real: a lock another client of the cluster holds (what `psql` would: `SELECT ... FOR
UPDATE`, `LOCK TABLE`), the shared cluster restarted under a replica with requests in flight,
a ``weed`` of the test's own stopped with SIGSTOP (hung, not dead).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from engines import PostgresEngine, S3Engine
from replicas import Production, production_on
from test_remote_store import _objects

from app.remote import pg
from app.remote.errors import DatabaseBusyError
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
