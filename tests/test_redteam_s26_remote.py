"""Red team 26 on PostgreSQL and object storage: connections ended under a write, the object
store killed under a download, and a replica killed between an object and its row.

All real: the shared cluster's ``pg_terminate_backend`` ends the app's own backend while it
waits, inside its transaction, for a row another connection holds (the way to stop a write at
a chosen step without a hook in the app); a ``weed`` of the test's own is killed with SIGKILL;
a replica is a Python child killed with SIGKILL while its commit waits on that lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from engines import PostgresEngine, S3Engine, scratch
from replicas import production_on
from test_remote_store import _blobs, _objects

from app.remote import pg
from app.remote.errors import DatabaseUnavailableError
from app.remote.store import RemoteStore

PROFILE = "production"


@pytest.fixture
def store(database_url: str, s3_engine: S3Engine, blob_url: str) -> Iterator[RemoteStore]:
    pg.open_database(database_url, PROFILE)
    objects = _objects(s3_engine, blob_url)
    with RemoteStore(database_url, objects, PROFILE, orphan_grace=timedelta(0)) as opened:
        yield opened


def _waiting_backend(conn: psycopg.Connection[Any], blocker: int) -> int:
    """The pid of the backend that waits for a lock `blocker` holds (polled: it is on its way)."""
    while True:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (blocker,)
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.01)


def _ended_while_waiting(database_url: str, session: str, step: Any) -> BaseException:
    """Run ``step`` while another connection holds the session's row, end the backend that
    waits for it (as an operator's ``pg_terminate_backend`` or a failover would), and return
    what ``step`` raised."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            step()
        except BaseException as error:  # handed to the test
            caught.append(error)

    with (
        psycopg.connect(database_url, autocommit=True) as admin,
        psycopg.connect(database_url) as blocker,
    ):
        blocker.execute("SELECT 1 FROM app_sessions WHERE id = %s FOR UPDATE", (session,))
        thread = threading.Thread(target=run)
        thread.start()
        waiting = _waiting_backend(admin, blocker.info.backend_pid)
        admin.execute("SELECT pg_terminate_backend(%s)", (waiting,))
        thread.join()
        blocker.rollback()
    assert len(caught) == 1, caught
    return caught[0]


@pytest.mark.parametrize("replace", [False, True], ids=["upload", "replace"])
def test_a_write_whose_backend_is_ended_mid_transaction_says_what_was_not_saved(
    store: RemoteStore, database_url: str, replace: bool
) -> None:
    session = store.create_session("terminated")["id"]
    old = store.put_file(session, "a.bin", b"old") if replace else None
    before = _blobs(store)
    upload = store.begin_upload(session, "a.bin", replace=replace)
    upload.write(b"new bytes")
    error = _ended_while_waiting(database_url, session, upload.commit)
    assert isinstance(error, DatabaseUnavailableError), error
    assert error.http_status == 503
    assert f"the upload of 'a.bin' into session {session}" in error.message
    assert "not saved" in error.message and "retry" in error.message
    assert "cannot connect" not in error.message  # it did connect
    # Nothing of it was kept, the pool healed, and the acknowledged file is as it was.
    assert _blobs(store) == before
    assert store.get_session(session)["files"] == ([old] if old else [])
    again = store.put_file(session, "a.bin", b"retried", replace=True)
    handle, entry = store.open_file(session, "a.bin")
    with handle:
        assert (handle.read(), entry) == (b"retried", again)


def test_a_delete_whose_backend_is_ended_mid_transaction_says_what_was_not_deleted(
    store: RemoteStore, database_url: str
) -> None:
    session = store.create_session("terminated")["id"]
    kept = store.put_file(session, "a.bin", b"kept")
    error = _ended_while_waiting(database_url, session, lambda: store.delete_file(session, "a.bin"))
    assert isinstance(error, DatabaseUnavailableError), error
    assert f"the delete of 'a.bin' from session {session}" in error.message
    assert "not saved" in error.message and "retry" in error.message
    assert store.get_session(session)["files"] == [kept]
    assert store.list_trash() == []


# --- a replica killed between its object and its row -------------------------------------


def test_a_replica_killed_between_the_object_and_its_row_loses_nothing_acknowledged(
    tmp_path: Path, postgres_engine: PostgresEngine, s3_engine: S3Engine, blob_url: str
) -> None:
    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as production:
        replica = production.start()
        with production.client(replica) as client:
            session = client.post("/sessions", json={"title": "killed"}).json()["id"]
            old = client.put(f"/sessions/{session}/files/a.bin", content=b"acknowledged")
            assert old.status_code == 201, old.text
        url = f"{replica.url}/sessions/{session}/files/a.bin"
        with psycopg.connect(production.database_url, autocommit=True) as admin:
            with psycopg.connect(production.database_url) as blocker:
                blocker.execute("SELECT 1 FROM app_sessions WHERE id = %s FOR UPDATE", (session,))
                # The replace's object is written whole before its row's transaction
                # begins; that transaction now waits for the session's row.
                sent = threading.Thread(
                    target=_put_ignoring_the_end, args=(url, production.headers), daemon=True
                )
                sent.start()
                _waiting_backend(admin, blocker.info.backend_pid)
                replica.process.kill()
                replica.process.wait()
                blocker.rollback()  # its backend goes on, and finds no COMMIT coming
            sent.join()
        # Nothing acknowledged was lost: a new replica serves the old version.
        again = production.start()
        with production.client(again) as client:
            read = client.get(f"/sessions/{session}/files/a.bin")
            assert (read.status_code, read.content) == (200, b"acknowledged")
            assert [f["sha256"] for f in client.get(f"/sessions/{session}").json()["files"]] == [
                old.json()["sha256"]
            ]
        again.stop()
        # The killed replace's object is named by nobody: check says so, and what removes it.
        checked = production.run("data", "check")
        assert checked.returncode == 65, checked.stdout + checked.stderr
        (line,) = [f for f in checked.stdout.splitlines() if f.startswith("object-without-")]
        assert "is named by no row: an upload whose transaction never committed" in line
        assert "--repair: delete the object (nobody could ever read it)" in line
        repaired = production.run("data", "check", "--repair")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert "repaired 1 finding(s)" in repaired.stdout
        assert "clean" in production.run("data", "check").stdout
        listed = s3_engine.client().list_objects_v2(
            Bucket=s3_engine.bucket, Prefix=production.blob_url.split("/", 3)[3] + "/blobs/"
        )
        assert len(listed.get("Contents", [])) == 1  # the acknowledged version's alone


def _put_ignoring_the_end(url: str, headers: dict[str, str]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.put(url, content=b"never acknowledged", headers=headers, timeout=60)


# --- the object store killed under a download ------------------------------------------


def test_a_download_cut_by_the_object_store_dying_is_never_a_complete_looking_200(
    tmp_path: Path, postgres_engine: PostgresEngine
) -> None:
    from engines import start_s3

    engine = start_s3(tmp_path / "weed")  # its own: killed mid-download
    try:
        with production_on(
            tmp_path, postgres_engine, engine, f"s3://{engine.bucket}/own{scratch()}"
        ) as production:
            replica = production.start()
            body = os.urandom(64 * 1024 * 1024)  # past what the sockets between them buffer
            with production.client(replica) as client:
                session = client.post("/sessions", json={"title": "cut"}).json()["id"]
                put = client.put(f"/sessions/{session}/files/big.bin", content=body)
                assert put.status_code == 201, put.text
                url = f"/sessions/{session}/files/big.bin"
                received = 0
                with client.stream("GET", url) as answer:
                    assert answer.status_code == 200
                    assert answer.headers["content-length"] == str(len(body))
                    chunks = answer.iter_raw()
                    received += len(next(chunks))
                    engine.process.kill()
                    engine.process.wait()
                    with pytest.raises(
                        httpx.RemoteProtocolError, match="without sending complete message body"
                    ):
                        for chunk in chunks:
                            received += len(chunk)
                assert received < len(body)
                # The replica still serves, and says what is wrong with the object store.
                again = client.get(url)
                cut = f"the download of 'big.bin' from session {session}"
                assert f"{cut} (object blobs/" in replica.output
                assert "was cut off after" in replica.output
                assert again.status_code == 503, again.text
                assert again.json()["code"] == "object_store_unavailable"
    finally:
        engine.stop()
