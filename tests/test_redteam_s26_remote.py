"""Red team 26 on PostgreSQL and object storage: connections ended under a write, the object
store killed under a download, and a replica killed between an object and its row.

All real: the shared cluster's ``pg_terminate_backend`` ends the app's own backend while it
waits, inside its transaction, for a row another connection holds (the way to stop a write at
a chosen step without a hook in the app); a ``weed`` of the test's own is killed with SIGKILL;
a replica is a Python child killed with SIGKILL while its commit waits on that lock.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from engines import S3Engine
from test_remote_store import _objects

from app.remote import pg
from app.remote.errors import DatabaseUnavailableError
from app.remote.objects import BLOBS
from app.remote.store import RemoteStore

PROFILE = "production"


@pytest.fixture
def store(database_url: str, s3_engine: S3Engine, blob_url: str) -> Iterator[RemoteStore]:
    pg.open_database(database_url, PROFILE)
    objects = _objects(s3_engine, blob_url)
    with RemoteStore(database_url, objects, PROFILE, orphan_grace=timedelta(0)) as opened:
        yield opened


def _blobs(store: RemoteStore) -> set[str]:
    return {info.name for info in store.objects.objects(BLOBS)}


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

    with psycopg.connect(database_url, autocommit=True) as admin, psycopg.connect(
        database_url
    ) as blocker:
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
    error = _ended_while_waiting(
        database_url, session, lambda: store.delete_file(session, "a.bin")
    )
    assert isinstance(error, DatabaseUnavailableError), error
    assert f"the delete of 'a.bin' from session {session}" in error.message
    assert "not saved" in error.message and "retry" in error.message
    assert store.get_session(session)["files"] == [kept]
    assert store.list_trash() == []
