"""The remote backend's own classes, built by hand under pytest, refuse what is not the run's.

`app.storage.open_storage` checks a Config's database and prefix (`app.sandbox.check_remote`);
these are the classes below it, which a test can build with any URL it read anywhere. Each
checks where it connects (`app.sandbox.check_scratch`), so a database or prefix that is not
one of the run's scratch ones is refused before a byte is sent to it. The stand-in for
production is a database of the test's cluster stamped for ``production`` and renamed out
of the run's scratch names, and a prefix of the test's bucket with an object in it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from engines import PostgresEngine, S3Engine, scratch
from psycopg.conninfo import make_conninfo

from app.errors import SandboxViolationError
from app.remote import pg
from app.remote.db import Database
from app.remote.objects import ObjectStore
from app.remote.store import RemoteStore


def _state(url: str) -> tuple[Any, ...]:
    with psycopg.connect(url, autocommit=True) as conn:
        holders = conn.execute("SELECT count(*) FROM app_holders").fetchone()
        audit = conn.execute("SELECT count(*) FROM app_audit").fetchone()
        sequences = conn.execute("SELECT last_value FROM pg_sequences ORDER BY 1").fetchall()
    return holders, audit, sequences


@pytest.fixture
def elsewhere(postgres_engine: PostgresEngine) -> Iterator[str]:
    """A stamped database that is none of the run's scratch ones, as production's is."""
    made = postgres_engine.create_database("elsewhere")
    pg.open_database(postgres_engine.url(made), "production")
    name = f"elsewhere_{os.getpid()}"
    with postgres_engine.connect() as conn:
        conn.execute(f'ALTER DATABASE "{made}" RENAME TO "{name}"')
    yield postgres_engine.url(name)
    postgres_engine.drop_database(name)


@pytest.fixture
def objects(s3_engine: S3Engine, blob_url: str) -> ObjectStore:
    """The run's own scratch prefix, so that only the database is in question."""
    return s3_engine.objects(blob_url)


def _refused(attempt: Callable[[], object], shown: str) -> str:
    with pytest.raises(SandboxViolationError) as refused:
        attempt()
    message = str(refused.value)
    assert f"{shown}, which is not a scratch " in message
    assert f"of this test run (suffix {scratch()}; this process belongs to the run" in message
    assert "Tests reach only the run's scratch databases and prefixes" in message
    assert refused.value.exit_code == 78
    return message


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda url, objects: pg.connect(url), id="pg.connect"),
        pytest.param(lambda url, objects: pg.open_database(url, "production"), id="open_database"),
        pytest.param(lambda url, objects: pg.Holder(url, "production").start(), id="Holder"),
        pytest.param(
            lambda url, objects: pg.maintenance(url, "production", "wipe").__enter__(),
            id="maintenance",
        ),
        pytest.param(
            lambda url, objects: Database(
                url, "production", holder=None, kind="maintenance", pool_size=1
            ),
            id="Database",
        ),
        pytest.param(
            lambda url, objects: RemoteStore(url, objects, "production", kind="maintenance"),
            id="RemoteStore",
        ),
    ],
)
def test_a_database_that_is_not_the_run_s_is_refused_where_it_is_connected(
    build: Callable[[str, ObjectStore], object], elsewhere: str, objects: ObjectStore
) -> None:
    before = _state(elsewhere)
    message = _refused(lambda: build(elsewhere, objects), f"database {pg.mask_url(elsewhere)}")
    assert message.startswith("refused under pytest (sandbox: ")
    assert _state(elsewhere) == before


def test_dropping_a_scratch_database_whose_suffix_completes_another_name_is_refused(
    elsewhere: str,
) -> None:
    # "elsewhere_<pid>" split into a URL and a "suffix": the name it drops is the whole one.
    name = pg.database_addresses(elsewhere)[0].dbname
    head = make_conninfo(elsewhere, dbname=name[:4])
    shown = f"dropping database {pg.mask_url(elsewhere)}"
    _refused(lambda: pg.drop_scratch_database(head, name[4:]), shown)
    assert _state(elsewhere)  # still there, still stamped
    another_run = "_pytest_1_abcd"
    assert another_run != scratch()
    made = f"creating database {pg.mask_url(pg.scratch_url(elsewhere, another_run))}"
    _refused(lambda: pg.create_scratch_database(elsewhere, another_run), made)


def test_a_prefix_that_is_not_the_run_s_is_refused_before_any_request(
    s3_engine: S3Engine,
) -> None:
    bucket = s3_engine.client()
    key = f"elsewhere-{os.getpid()}/blobs/kept"
    bucket.put_object(Bucket=s3_engine.bucket, Key=key, Body=b"production's")
    blob_url = f"s3://{s3_engine.bucket}/elsewhere-{os.getpid()}"
    message = _refused(
        lambda: s3_engine.objects(blob_url),
        f"object prefix {blob_url}",
    )
    assert "app.sandbox.scratch_blob_url(<that server's url>, app.sandbox.current_run()" in message
    assert bucket.get_object(Bucket=s3_engine.bucket, Key=key)["Body"].read() == b"production's"


def test_a_child_with_a_hand_built_environment_is_refused_too(elsewhere: str) -> None:
    # The process tree, not the environment, says that the child belongs to the run.
    code = "import sys; from app.remote import pg; pg.Holder(sys.argv[1], 'production').start()"
    done = subprocess.run(
        [sys.executable, "-c", code, elsewhere],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "SandboxViolationError" in done.stderr
    assert "this process belongs to the run through the process tree" in done.stderr
    assert _state(elsewhere)[0] == (0,)
