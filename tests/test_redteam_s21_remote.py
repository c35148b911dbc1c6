"""Red team, round four, on PostgreSQL and object storage: a database that answers but
refuses (read-only, a statement timeout), and an object rewritten by hand under its row.

The refusals come from the real cluster, set per connection through the URL's ``options``
(as an operator's ``ALTER DATABASE ... SET`` or ``ALTER ROLE ... SET`` would, for every new
connection); the object is rewritten through the real S3 server's own API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from engines import PostgresEngine, S3Engine
from fastapi.testclient import TestClient
from test_remote_store import _objects

from app import sandbox
from app.config import Config
from app.errors import DamagedFileError, SandboxViolationError
from app.remote import pg
from app.remote.errors import DatabaseRefusedError
from app.remote.objects import BLOBS
from app.remote.store import RemoteStore
from app.server import create_app

PROFILE = "production"


def _with(database_url: str, setting: str) -> str:
    """``database_url`` with a server setting for each of its connections."""
    return f"{database_url}?options={quote(f'-c {setting}')}"


@pytest.fixture
def store(database_url: str, s3_engine: S3Engine, blob_url: str) -> Iterator[RemoteStore]:
    pg.open_database(database_url, PROFILE)
    objects = _objects(s3_engine, blob_url)
    with RemoteStore(database_url, objects, PROFILE, orphan_grace=timedelta(0)) as opened:
        yield opened


def _blobs(store: RemoteStore) -> set[str]:
    return {info.name for info in store.objects.objects(BLOBS)}


# --- PostgreSQL answers, and refuses ---------------------------------------------------------


def test_a_read_only_database_refuses_every_write_saying_so_and_keeps_nothing(
    store: RemoteStore, s3_engine: S3Engine, app_config: Config
) -> None:
    # The database was writable when the profile first opened it; then an operator (or a
    # failover onto a standby) made it read-only. Every write was a bare psycopg error: a
    # 500 `internal_error` over HTTP, a traceback from `app serve` when it took its hold.
    session_id = store.create_session("before")["id"]
    store.put_file(session_id, "a.txt", b"first version")
    before = _blobs(store)
    read_only = _with(store.database_url, "default_transaction_read_only=on")
    with RemoteStore(read_only, store.objects, PROFILE, pool_size=2) as refused:
        with pytest.raises(DatabaseRefusedError) as caught:
            refused.create_session("after")
        message = caught.value.message
        assert "refused the creation of a session titled 'after'" in message
        assert "read-only transaction (SQLSTATE 25006); nothing was changed" in message
        assert "default_transaction_read_only" in message and "primary" in message
        dbname = store.database_url.rsplit("/", 1)[1]
        assert f"ALTER DATABASE {dbname} RESET default_transaction_read_only" in message
        with pytest.raises(DatabaseRefusedError, match=r"refused the upload of 'a\.txt'"):
            refused.put_file(session_id, "a.txt", b"second version", replace=True)
        assert _blobs(store) == before  # the upload's object went with it
        app = create_app(refused, app_config)
        headers = {"Authorization": f"Bearer {app_config.api_token}"}
        with TestClient(app, headers=headers) as client:
            answer = client.post("/sessions", json={"title": "over http"})
        assert (answer.status_code, answer.json()["code"]) == (503, "database_refused")
    with pytest.raises(DatabaseRefusedError, match="refused this replica's hold"):
        pg.Holder(read_only, PROFILE).start()
    assert store.session_ids() == [session_id]
    with store.open_file(session_id, "a.txt")[0] as handle:
        assert handle.read() == b"first version"


def test_a_statement_past_statement_timeout_is_not_called_a_lost_connection(
    store: RemoteStore,
) -> None:
    # It was DatabaseUnavailableError's "cannot connect to database ...; check that the
    # server runs": the server ran, and answered.
    impatient = _with(store.database_url, "statement_timeout=200")
    with (
        RemoteStore(impatient, store.objects, PROFILE, pool_size=1) as hurried,
        psycopg.connect(store.database_url, autocommit=True) as other,
    ):
        other.execute("BEGIN")
        other.execute("LOCK TABLE app_sessions IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(DatabaseRefusedError) as caught:
            hurried.create_session("waits")
        other.execute("ROLLBACK")
        assert caught.value.code == "database_refused"
        message = caught.value.message
        assert "statement timeout (SQLSTATE 57014); nothing was changed" in message
        assert "cannot connect" not in message
        assert "pg_stat_activity" in message and "statement_timeout" in message
        assert hurried.create_session("now it can")["title"] == "now it can"


# --- an object rewritten by hand ---------------------------------------------------------------


@pytest.mark.parametrize("bytes_now", [b"short", b"a longer body than the one saved"])
def test_an_object_overwritten_by_hand_is_refused_not_served_as_the_file(
    store: RemoteStore, s3_engine: S3Engine, bytes_now: bytes
) -> None:
    # A shorter object ended the download early (the response had promised the recorded
    # length), a longer one was served cut to it: bytes that are not the file, under its
    # recorded SHA-256. And `check` found nothing.
    session_id = store.create_session()["id"]
    store.put_file(session_id, "a.txt", b"the saved bytes")
    [blob] = _blobs(store)
    key = store.objects.location.key(blob)
    s3_engine.client().put_object(Bucket=s3_engine.bucket, Key=key, Body=bytes_now)
    with pytest.raises(DamagedFileError) as caught:
        store.open_file(session_id, "a.txt")
    # The data root's refusal since red team 49 (it was object_changed, naming the bucket).
    assert caught.value.message.startswith(
        f"cannot send file 'a.txt' of session {session_id}: its bytes are {len(bytes_now)} "
        "bytes long, where 15 were acknowledged (their object was overwritten outside the "
        "app, which never rewrites one: the bucket's versioning may keep the version "
        "acknowledged)"
    )
    assert "reports every such file as record-object-changed" in caught.value.message
    [finding] = store.check().findings
    assert (finding.problem, finding.target) == ("record-object-changed", f"{session_id}/a.txt")
    assert f"is {len(bytes_now)} bytes" in finding.detail


# --- a database named through libpq's service file ---------------------------------------------


def _service_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    (tmp_path / "pg_service.conf").write_text(text)
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "pg_service.conf"))
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path))  # no system file of this machine's
    monkeypatch.delenv("PGSERVICE", raising=False)


def test_a_service_file_names_the_database_libpq_will_connect_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpq fills what the URL leaves out from the service's section before the environment.
    # The overlap check read neither: two profiles each naming a service were one database
    # (localhost:5432/<user>) to it, and `service=review` was not the review database.
    _service_file(
        tmp_path,
        monkeypatch,
        "# production and staging\n[review]\nhost=db.internal\ndbname=review\n\n"
        "[staging]\nhost=db.internal\nport=5433\ndbname=review\n",
    )
    monkeypatch.setenv("PGDATABASE", "elsewhere")
    assert [str(a) for a in pg.database_addresses("service=review")] == ["db.internal:5432/review"]
    assert pg.same_database("service=review", "postgresql://app@DB.internal/review")
    assert not pg.same_database("service=review", "service=staging")
    # What the URL says wins over the service, as in libpq.
    assert not pg.same_database("service=review dbname=other", "service=review")
    assert pg.mask_url("postgresql://app@/?service=staging") == (
        "postgresql://app@db.internal:5433/review"
    )


def test_a_test_cannot_reach_a_database_through_a_service_file(
    postgres_engine: PostgresEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sandbox read the database's name from the URL and PGDATABASE, so a URL that names
    # a service, with PGDATABASE ending in the run's suffix, passed it, and libpq connected
    # to the service's database: production's, for a service file that names it.
    outside = postgres_engine.create_database("production", outside_the_run=True)
    ours = postgres_engine.create_database("ours")
    _service_file(
        tmp_path,
        monkeypatch,
        f"[production]\ndbname={outside}\n\n[ours]\ndbname={ours}\n",
    )
    run = sandbox.current_run()
    assert run is not None
    monkeypatch.setenv("PGDATABASE", f"anything{run.scratch}")
    address = f"postgresql://{postgres_engine.user}@127.0.0.1:{postgres_engine.port}/"
    try:
        with pytest.raises(SandboxViolationError) as caught:
            pg.connect(f"{address}?service=production", purpose="a hostile test")
        assert f"127.0.0.1:{postgres_engine.port}/{outside}, which is not a scratch" in str(
            caught.value
        )
        with pg.connect(f"{address}?service=ours", autocommit=True) as conn:
            assert conn.info.dbname == ours
    finally:
        postgres_engine.drop_database(outside)
        postgres_engine.drop_database(ours)


def test_a_name_past_postgresqls_limit_is_checked_as_the_server_cuts_it(
    postgres_engine: PostgresEngine,
) -> None:
    # The server cuts a database name to 63 bytes. The sandbox checked the whole name, so a
    # URL naming a 63-byte database plus the run's suffix passed it, and reached that
    # database; and a scratch name cut so lost its suffix, or its worker's id (`_gw1`), and
    # two workers' names were one.
    run = sandbox.current_run()
    assert run is not None
    outside = "p" * 63
    with postgres_engine.connect() as conn:
        conn.execute(f'CREATE DATABASE "{outside}"')
    try:
        with pytest.raises(SandboxViolationError) as caught:
            pg.connect(postgres_engine.url(outside + run.scratch), purpose="a hostile test")
        assert f"/{outside}, which is not a scratch database" in str(caught.value)
    finally:
        postgres_engine.drop_database(outside)
    long = postgres_engine.url("q" * 50)
    with pytest.raises(ValueError, match="which would cut the run's suffix off") as refused:
        pg.create_scratch_database(long, run.scratch)
    assert f"name a database of at most {63 - len(run.scratch)} bytes" in str(refused.value)


def test_a_prefix_nested_among_another_profiles_uploads_is_never_repaired_away(
    database_url: str, s3_engine: S3Engine, blob_url: str
) -> None:
    # Two sets of settings (two machines, two apps) see no overlap between `<p>` and
    # `<p>/blobs/staging`. The outer profile's `check --repair` took every object under its
    # `blobs/` that no row named for an upload that never committed: the inner profile's
    # stamp and files, all deleted.
    run = sandbox.current_run()
    assert run is not None
    pg.open_database(database_url, PROFILE)
    outer = _objects(s3_engine, blob_url)
    inner = s3_engine.objects(f"{blob_url}/blobs/staging{run.scratch}")
    inner.open("staging")
    inner.put(inner.new_blob_name(), b"staging's file")
    inner.put("blobs/" + "0" * 31, b"a name one short of the app's")
    theirs = {info.name for info in inner.objects()}
    hold = contextlib.ExitStack()
    hold.enter_context(pg.maintenance(database_url, PROFILE, "check and repair"))
    with RemoteStore(
        database_url, outer, PROFILE, kind="maintenance", orphan_grace=timedelta(0),
        on_close=hold.close,
    ) as store:  # fmt: skip
        store.objects.put(store.objects.new_blob_name(), b"an upload that never committed")
        report = store.check(repair=True)
    problems = sorted((f.problem, f.repaired) for f in report.findings)
    assert problems == [("object-not-the-apps", False)] * 3 + [("object-without-record", True)]
    assert {info.name for info in inner.objects()} == theirs
    assert inner.read_stamp() is not None
