"""Red team 25 on PostgreSQL and object storage: a database that does not carry text as UTF-8.

File names, titles and metadata are Unicode. A database created with another encoding
(``initdb`` under a C locale gives SQL_ASCII; ``CREATE DATABASE`` copies its template's, and
an old cluster's may be LATIN1), or a connection whose ``client_encoding`` is not UTF8
(``PGCLIENTENCODING`` in the service's environment), was used as it came, against the real
cluster:

* LATIN1: an emoji in a title or a file name was a ``UnicodeEncodeError`` (a 500 over HTTP);
  ``é.txt`` was written, and then its own upload failed reading its row back;
* SQL_ASCII: psycopg reads text as bytes, so the profile's own stamp read as
  ``b'production'``: the second open was refused as another profile's database, and told to
  ``app data restamp --from b'production'``.

Such a database, or connection, is now refused where it is opened, before anything is read or
written, naming the encoding and the fix; the app asks for UTF8 as its connections'
``client_encoding``, so the environment's no longer counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from engines import PostgresEngine, S3Engine
from test_redteam_s25_data import names_hold
from test_remote_store import _objects

from app.remote import pg
from app.remote.errors import DatabaseEncodingError
from app.remote.store import RemoteStore

PROFILE = "production"


@pytest.fixture
def encoded(postgres_engine: PostgresEngine, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh scratch database made with the encoding ``request.param``."""
    name = postgres_engine.create_database()
    with postgres_engine.connect() as conn:
        conn.execute(f'DROP DATABASE "{name}"')
        conn.execute(
            f"CREATE DATABASE \"{name}\" ENCODING '{request.param}' LC_COLLATE 'C' "
            "LC_CTYPE 'C' TEMPLATE template0"
        )
    yield postgres_engine.url(name)
    postgres_engine.drop_database(name)


def _tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("encoded", ["LATIN1", "SQL_ASCII"], indirect=True)
def test_a_database_not_in_utf8_is_refused_before_anything_is_written(
    encoded: str, s3_engine: S3Engine, blob_url: str
) -> None:
    with pytest.raises(DatabaseEncodingError) as caught:
        pg.open_database(encoded, PROFILE)
    error = caught.value
    encoding = error.server_encoding
    assert encoding in ("LATIN1", "SQL_ASCII")
    assert error.code == "database_encoding"
    assert error.exit_code == 78
    message = error.message
    assert f"stores text as {encoding}, not UTF8" in message
    assert "refusing to use it, nothing was changed" in message
    assert "CREATE DATABASE <name> ENCODING 'UTF8' TEMPLATE template0" in message
    assert "point database_url at it" in message
    assert f"database {pg.mask_url(encoded)} stores" in message
    assert _tables(encoded) == []  # not stamped, no schema
    # A store opened on it (a replica whose database was stamped before) is refused alike.
    with pytest.raises(DatabaseEncodingError, match=f"stores text as {encoding}"):
        RemoteStore(encoded, _objects(s3_engine, blob_url), PROFILE)


def test_a_connection_not_in_utf8_is_refused_and_the_environment_s_does_not_count(
    database_url: str, s3_engine: S3Engine, blob_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # client_encoding in the URL: refused, naming it.
    with pytest.raises(DatabaseEncodingError) as caught:
        pg.open_database(f"{database_url}?client_encoding=LATIN1", PROFILE)
    message = caught.value.message
    assert "use client_encoding LATIN1, not UTF8" in message
    assert "Remove client_encoding from database_url" in message
    assert _tables(database_url) == []
    # PGCLIENTENCODING in the environment (libpq reads it when the URL says nothing): the app
    # asks for UTF8 itself, so names outside LATIN1 are stored and read back.
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    pg.open_database(database_url, PROFILE)
    with RemoteStore(
        database_url, _objects(s3_engine, blob_url), PROFILE, orphan_grace=timedelta(0)
    ) as store:
        session = store.create_session("\U0001f600 review", {"k": "é\U0001f600"})
        store.put_file(session["id"], "\U0001f600.txt", b"bytes")
        again = store.get_session(session["id"])
        assert again["title"] == "\U0001f600 review"
        assert again["metadata"] == {"k": "é\U0001f600"}
        assert [f["name"] for f in store.list_files(session["id"])] == ["\U0001f600.txt"]
        opened, entry = store.open_file(session["id"], "\U0001f600.txt")
        with opened:
            assert opened.read() == b"bytes"
        assert entry["name"] == "\U0001f600.txt"


def test_names_that_normalise_alike_are_one_row_and_the_rest_stay_apart(
    database_url: str, s3_engine: S3Engine, blob_url: str
) -> None:
    # Held: PostgreSQL compares text exactly (a deterministic collation), after the app's NFC;
    # an object's key is the blob's id, never the name.
    pg.open_database(database_url, PROFILE)
    objects = _objects(s3_engine, blob_url)
    with RemoteStore(database_url, objects, PROFILE, orphan_grace=timedelta(0)) as store:
        names_hold(store)
