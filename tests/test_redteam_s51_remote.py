"""Red team 51 on PostgreSQL and object storage: a run's scratch database made from a
template1 a DBA filled, and the command line's own refusals on a remote profile.

What broke:

- A table of a DBA's own in ``template1`` of testing's server: the plugin's scratch
  databases, plain ``CREATE DATABASE`` copies of it, were refused at their first open as
  holding "things that are not the app's", and every remote test of the run failed, told to
  point database_url at a new database, which the plugin makes itself. Scratch databases
  are now copies of ``template0``, in UTF-8.
- ``app data purge > /dev/full`` on a remote profile: ``output_failed`` said the failed
  write was "not in the data root" and that `app data check` shows "the data root as it
  is". The command line's own refusals now name the database and the object store.

All real: the suite's cluster and ``weed``, real commands forked from the suite's zygote.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import forked_app
import psycopg
import pytest
import test_remote_store
from engines import PostgresEngine, S3Engine, new_blob_url, scratch
from replicas import Production, production_on

from app.remote import pg
from app.remote.store import RemoteStore


@pytest.fixture(scope="module")
def production(
    tmp_path_factory: pytest.TempPathFactory, postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> Iterator[Production]:
    """A production profile on the suite's engines, opened (stamped and bound) by a command,
    shared by the tests below: each leaves it as it found it, but for its audit rows and
    trash."""
    base = tmp_path_factory.mktemp("production")
    with production_on(base, postgres_engine, s3_engine, new_blob_url(s3_engine)) as opened:
        assert opened.run("sessions", "list").returncode == 0
        yield opened


def test_a_scratch_database_holds_nothing_template1_was_given(
    postgres_engine: PostgresEngine,
) -> None:
    # A DBA's table in template1 of testing's server, so that every new database has it.
    # (This worker's cluster is its own, and its tests run one at a time: nothing else
    # creates a database while the table is there.)
    testing = postgres_engine.create_database("tpl")
    suffix = f"_t1{scratch()}"
    with postgres_engine.connect("template1") as conn:
        conn.execute("CREATE TABLE dba_notes (id int)")
    try:
        url = pg.create_scratch_database(postgres_engine.url(testing), suffix)
    finally:
        with postgres_engine.connect("template1") as conn:
            conn.execute("DROP TABLE dba_notes")
    try:
        # Before: UnstampedNotEmptyError, "it holds things that are not the app's
        # (public.dba_notes) ... Point database_url at a new or empty one", at the first
        # open of every run's scratch database.
        assert pg.open_database(url, "testing").profile == "testing"
        with psycopg.connect(url) as conn:
            encoding = conn.execute("SHOW server_encoding").fetchone()
        assert encoding == ("UTF8",)
    finally:
        pg.drop_scratch_database(postgres_engine.url(testing), suffix)
        postgres_engine.drop_database(testing)


def _run_to(env: dict[str, str], args: list[str], stdout: Path) -> tuple[int, str]:
    """`forked_app.run`, its standard output sent to `stdout` (``/dev/full``)."""
    zygote = forked_app._forking(env)
    if zygote is None:
        with stdout.open("w") as out:
            done = subprocess.run(
                [sys.executable, "-m", "app", *args], env=env, stdout=out,
                stderr=subprocess.PIPE, text=True, timeout=120, check=False,
            )  # fmt: skip
        return done.returncode, done.stderr
    with tempfile.TemporaryDirectory(prefix="rt51-") as directory:
        err = Path(directory) / "stderr"
        child = zygote.fork(env, args, stdout, err)
        code = child.wait(timeout=120)
        return code, err.read_text() if err.exists() else ""


def test_a_remote_command_s_refused_output_names_the_database_not_a_data_root(
    production: Production, s3_engine: S3Engine
) -> None:
    objects = test_remote_store._objects(s3_engine, production.blob_url)
    with RemoteStore(production.database_url, objects, "production") as served:
        served.create_session("kept")
    full = Path("/dev/full")
    code, err = _run_to(production.env, ["data", "purge", "--yes-i-mean-it"], full)
    said = " ".join(err.split())
    # Before: "..., not in the data root. Anything it changed is done ... `app data check`
    # show the data root as it is", of a profile that has none.
    assert code == 74 and "data root" not in said, said
    assert (
        "where the output was sent (a file, a full disk, a terminal gone), not in the "
        "profile's database or object store. Anything it changed is done"
    ) in said, said
    assert (
        "`app sessions list --trash` and `app data check` show the database and its objects "
        "as they are, which need no room made (do not empty the trash for this)"
    ) in said, said
    with psycopg.connect(production.database_url) as conn:
        trashed = conn.execute("SELECT count(*) FROM app_sessions WHERE deleted_at IS NOT NULL")
        assert trashed.fetchone() == (1,)  # the purge was made, as the refusal says
