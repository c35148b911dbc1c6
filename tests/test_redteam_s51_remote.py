"""Red team 51 on PostgreSQL and object storage: a run's scratch database made from a
template1 a DBA filled, a database named by libpq's default user, a store answering 5xx,
and maintenance commands cut short by the object store or the database after they had
changed something.

What broke:

- A table of a DBA's own in ``template1`` of testing's server: the plugin's scratch
  databases, plain ``CREATE DATABASE`` copies of it, were refused at their first open as
  holding "things that are not the app's", and every remote test of the run failed, told to
  point database_url at a new database, which the plugin makes itself. Scratch databases
  are now copies of ``template0``, in UTF-8.
- ``app data check --repair`` whose abort of an unfinished upload the object store refused
  (a 500) after it had deleted the orphan objects: its audit row said none was repaired, and
  the refusal was the store's alone, "check s3_endpoint_url, blob_url and the credentials".
  The same with a deletion carried out whose answer was a 500. The row now says what was
  done, and the refusal (``object_store_cut_short``) what was done, what was left, and to
  run the command again.
- ``app data restamp`` whose write of the prefix's stamp the store refused after the
  database was handed over: the same bare refusal, with both profiles refused until it was
  finished. Now ``object_store_cut_short``, naming the command that finishes it.
- ``app data check --repair`` whose recount of live sessions the database refused (a lock
  past ``lock_timeout``) after it had deleted the orphans: "nothing was changed", and no
  audit row. The recount now comes before the deletions.
- A store that answered every attempt with a 5xx: "Check s3_endpoint_url, blob_url and the
  credentials", of settings that had reached it. Its refusal now says the store runs and is
  failing or overloaded, and to retry. And ``s3_max_attempts = 1`` tried each request twice
  (botocore's ``max_attempts`` counts the retries alone): it is now the total.
- A ``database_url`` naming no user nor database beside one naming ``root``, in a process
  of root whose ``$USER`` names another: libpq reaches ``root`` for both (its default user
  is the effective uid's), the overlap check read ``$USER`` and saw two databases.
- ``app data purge > /dev/full`` on a remote profile: ``output_failed`` said the failed
  write was "not in the data root" and that `app data check` shows "the data root as it
  is". The command line's own refusals now name the database and the object store.

All real: the suite's cluster and ``weed`` (behind an HTTP proxy of the test's that answers
the requests it picks with S3's ``InternalError``), real commands forked from the suite's
zygote, sharing one production profile (each test leaves it as it found it).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import forked_app
import psycopg
import psycopg.sql
import pytest
import test_remote_store
from engines import PostgresEngine, S3Engine, new_blob_url, scratch
from replicas import Production, production_on
from test_redteam_s39_ops import _overlaps, _settings

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


# --- an object store that refuses one kind of request -------------------------------------


class _Refusing(ThreadingHTTPServer):
    """An HTTP proxy on 127.0.0.1 to the suite's ``weed`` that answers the requests
    `refused` picks with an S3 ``InternalError`` of its own, as a store's overloaded node or
    a load balancer in front of it does (with `after`, once ``weed`` has carried it out: an
    answer lost), and forwards every other request as it came."""

    daemon_threads = True

    def __init__(self, target: str, refused: Callable[[str, str], bool], after: bool) -> None:
        self.target = urlsplit(target)
        self.refused = refused
        self.after = after
        self.refusals = 0  # how many requests it answered with its error
        super().__init__(("127.0.0.1", 0), _Forward)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: _Refusing
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        refused = self.server.refused(self.command, self.path)
        if refused and self.server.after:
            self._forwarded(body)
        if refused:
            self.server.refusals += 1
            error = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                b"<Message>We encountered an internal error. Please try again.</Message></Error>"
            )
            self.send_response(500)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        self._answer(*self._forwarded(body))

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        """Send the store's answer on: its status and headers, `data` as the body."""
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in {"connection", "transfer-encoding", "content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the store's answer to a HEAD on: its headers with the object's own
        Content-Length, which `_answer` would replace by the empty body's."""
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in {"connection", "transfer-encoding"}:
                self.send_header(key, value)
        self.end_headers()

    def _forwarded(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        target = self.server.target
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        return answer.status, answer.getheaders(), data

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any


@contextlib.contextmanager
def _refusing(
    s3_engine: S3Engine, refused: Callable[[str, str], bool], *, after: bool = False
) -> Iterator[_Refusing]:
    with serving(_Refusing(s3_engine.endpoint_url, refused, after)) as proxy:
        yield proxy


_Served = TypeVar("_Served", bound=ThreadingHTTPServer)


@contextlib.contextmanager
def serving(proxy: _Served) -> Iterator[_Served]:
    """`proxy` served from a thread of its own for the block, then stopped and closed (the
    proxies of red teams 51, 52, 65 and 67 alike)."""
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


def proxy_to(s3_engine: S3Engine, handler: type[_Forward], **read: Any) -> _Refusing:
    """A proxy to `s3_engine` that refuses nothing and answers with `handler`, the
    attributes `read` set on it for the handler to read (``self.server.<name>``)."""
    proxy = _Refusing(s3_engine.endpoint_url, lambda method, path: False, False)
    proxy.RequestHandlerClass = handler
    for name, value in read.items():
        setattr(proxy, name, value)
    return proxy


def _audited_repairs(database_url: str) -> list[dict[str, bool]]:
    """Each ``check-repair`` audit row's findings: target to repaired."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT detail FROM app_audit WHERE operation = 'check-repair' ORDER BY id"
        ).fetchall()
    return [{f["target"]: f["repaired"] for f in row[0]["findings"]} for row in rows]


def test_an_object_store_that_fails_in_the_middle_of_a_repair_is_said_and_audited(
    production: Production, s3_engine: S3Engine
) -> None:
    bucket, _, prefix = production.blob_url.removeprefix("s3://").partition("/")
    s3 = s3_engine.client()

    def orphans(*numbers: int) -> list[str]:
        names = [f"blobs/{i:032x}" for i in numbers]
        for name in names:
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=b"never committed")
        return names

    def listed() -> list[str]:
        found = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/blobs/")
        return [o["Key"].removeprefix(f"{prefix}/") for o in found.get("Contents", [])]

    first = orphans(0, 1)
    upload = f"blobs/{9:032x}"
    s3.create_multipart_upload(Bucket=bucket, Key=f"{prefix}/{upload}")

    def aborts(method: str, path: str) -> bool:
        return method == "DELETE" and "uploadId=" in path

    def repair(
        refused: Callable[[str, str], bool], *, after: bool = False, command: str = "--repair"
    ) -> tuple[int, str]:
        with _refusing(s3_engine, refused, after=after) as proxy:
            env = {**production.env, "APP_S3_ENDPOINT_URL": proxy.url, "APP_S3_MAX_ATTEMPTS": "1"}
            args = ["data", "check", "--repair"] if command == "--repair" else ["data", "check"]
            done = forked_app.run(env, args)
        # One attempt, as s3_max_attempts = 1 says (before: two, botocore's "max_attempts"
        # counting the retries alone).
        assert proxy.refusals == 1, proxy.refusals
        return done.returncode, " ".join(done.stderr.split())

    # Its listing answered 500 each time (s3_max_attempts): before, "cannot use object
    # store ...: InternalError (HTTP 500) ... Check s3_endpoint_url, blob_url and the
    # credentials", of settings that had reached it.
    code, said = repair(lambda method, path: "list-type=2" in path, command="check")
    assert code == 69 and "Check s3_endpoint_url" not in said, said
    assert (
        "InternalError (HTTP 500): An error occurred (InternalError) when calling the "
        "ListObjectsV2 operation (reached max retries: 0)"
    ) in said, said
    assert (
        "It answered each of its 1 attempt(s) (s3_max_attempts) with a server error: it runs "
        "and these settings reach it, so it is failing or overloaded. Retry once it answers "
        "(`app doctor` checks it); nothing in the settings needs to change"
    ) in said, said
    # The orphans deleted, then the abort answered 500 (an overloaded node, a balancer).
    # Before: the store's refusal alone, "cannot use object store ...: InternalError (HTTP
    # 500) ... Check s3_endpoint_url, blob_url and the credentials", and an audit row that
    # marked both deleted objects "repaired": false.
    code, said = repair(aborts)
    assert code == 69 and "Check s3_endpoint_url" not in said, said
    assert "`app data check --repair` was cut short: object store" in said, said
    assert f"refused the abort of the unfinished upload into {upload} (InternalError" in said
    assert "By then it had deleted 2 orphan objects; it left 1 unfinished upload as found" in said
    assert "The check-repair row of the audit log records which findings were repaired" in said
    assert "Run `app data check --repair` again once the object store answers" in said, said
    assert listed() == []
    assert _audited_repairs(production.database_url)[-1] == {
        first[0]: True, first[1]: True, upload: False
    }  # fmt: skip
    # A deletion the store carried out whose answer was a 500 (a request cut off after the
    # store acted): the listing says they are gone, and the row says so.
    second = orphans(3, 4)
    code, said = repair(lambda method, path: method == "POST" and "delete" in path, after=True)
    assert code == 69 and "refused the deletion of 2 orphan objects" in said, said
    assert "By then it had deleted 2 orphan objects; it left 1 unfinished upload" in said
    assert _audited_repairs(production.database_url)[-1] == {
        second[0]: True, second[1]: True, upload: False
    }  # fmt: skip
    # What is left is left for the next repair (the recount's test runs one to its end).
    [left] = s3.list_multipart_uploads(Bucket=bucket, Prefix=f"{prefix}/blobs/")["Uploads"]
    s3.abort_multipart_upload(Bucket=bucket, Key=left["Key"], UploadId=left["UploadId"])


def test_a_restamp_whose_prefix_the_object_store_refuses_says_the_database_was_handed_over(
    production: Production, s3_engine: S3Engine
) -> None:
    # A database and prefix of staging's (a copy, say) to be handed to production: both
    # stamped 'staging', the app's own JSON in the stamp object.
    s3, bucket, key = production.stamp_both(s3_engine, "staging")
    restamp = ["data", "restamp", "--profile", "production", "--from", "staging"]
    restamp.append("--yes-i-mean-it")
    with _refusing(s3_engine, lambda method, path: method == "PUT" and path.endswith(key)) as proxy:
        env = {**production.env, "APP_S3_ENDPOINT_URL": proxy.url, "APP_S3_MAX_ATTEMPTS": "1"}
        done = forked_app.run(env, restamp)
    said = " ".join(done.stderr.split())
    # Before: "cannot use object store ...: InternalError (HTTP 500) ... Check
    # s3_endpoint_url, blob_url and the credentials", the database handed over already.
    assert done.returncode == 69 and "Check s3_endpoint_url" not in said, said
    assert (
        "`app data restamp --profile production --from staging --yes-i-mean-it` was cut "
        "short: object store"
    ) in said, said
    assert "refused the write of the prefix's stamp (.app-profile.json) (InternalError" in said
    assert "By then it had re-stamped database postgresql://" in said, said
    assert "from 'staging' to 'production'; it left the object prefix stamped 'staging'" in said
    assert (
        "Run `app data restamp --profile production --from staging --yes-i-mean-it` again" in said
    )
    assert "it finds the database stamped 'production' already and re-stamps the prefix" in said
    again = production.run(*restamp)
    assert again.returncode == 0, again.stderr
    assert "is now stamped 'production' (was 'staging')" in again.stdout, again.stdout
    assert json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["profile"] == (
        "production"
    )


def test_a_repair_whose_recount_the_database_refuses_deletes_nothing(
    production: Production, s3_engine: S3Engine
) -> None:
    bucket, _, prefix = production.blob_url.removeprefix("s3://").partition("/")
    s3 = s3_engine.client()
    orphans = [f"blobs/{i:032x}" for i in (20, 21)]
    for name in orphans:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=b"never committed")
    # The live sessions' count drifted (changes made while its trigger did not fire), and
    # another client holds a lock its recount waits for (reads pass), past lock_timeout.
    with psycopg.connect(production.database_url) as conn:
        conn.execute("UPDATE app_session_counts SET live = live + 5 WHERE slot = 3")
    env = {**production.env, "APP_DATABASE_LOCK_WAIT_SECONDS": "0.1"}
    with psycopg.connect(production.database_url) as other:
        other.execute("LOCK TABLE app_session_counts IN SHARE MODE")
        done = forked_app.run(env, ["data", "check", "--repair"])
    said = " ".join(done.stderr.split())
    assert done.returncode == 69, said
    assert "refused the recount of live sessions: canceling statement due to lock" in said
    # Before: that "nothing was changed" came after both orphans were deleted, and no
    # check-repair row recorded it. The recount now comes first: it is true.
    assert "nothing was changed" in said, said
    found = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/blobs/")
    assert sorted(o["Key"].removeprefix(f"{prefix}/") for o in found.get("Contents", [])) == orphans
    done = production.run("data", "check", "--repair")
    assert done.returncode == 0, done.stderr
    assert _audited_repairs(production.database_url)[-1] == {
        orphans[0]: True, orphans[1]: True, "app_session_counts": True
    }  # fmt: skip


# --- two profiles that leave the database's name to libpq ----------------------------------


def test_a_database_named_by_libpq_s_default_user_is_the_one_it_reaches(
    postgres_engine: PostgresEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpq's user, when a URL names none (nor PGUSER), is the name of the process's
    # effective uid, and the database's name defaults to that user's: not $USER nor
    # $LOGNAME, which a container's ENV, `sudo -E` or `su` without `-` leave naming another.
    me = pwd.getpwuid(os.geteuid()).pw_name
    for name in ("PGUSER", "PGDATABASE", "PGSERVICE", "PGHOST", "PGHOSTADDR", "PGPORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER", "rt51-someone-else")
    monkeypatch.setenv("LOGNAME", "rt51-someone-else")
    named = f"postgresql://127.0.0.1:{postgres_engine.port}/{me}"
    unnamed = f"postgresql://127.0.0.1:{postgres_engine.port}/"
    role = psycopg.sql.Identifier(me)
    with postgres_engine.connect() as conn:
        # The cluster's own superuser where initdb ran as this user (not as root).
        made_role = not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (me,)).fetchone()
        if made_role:
            conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(role))
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
    try:
        # It is the same database, for real.
        with psycopg.connect(unnamed) as conn:
            reached = conn.execute("SELECT current_database(), current_user").fetchone()
        assert reached == (me, me)
        _settings(
            tmp_path,
            monkeypatch,
            production={**_KEYS, "database_url": named},
            staging={**_KEYS, "blob_url": "s3://b/y", "database_url": unnamed},
        )
        # Before: none, the check taking the unnamed one for database 'rt51-someone-else'.
        [overlap] = _overlaps()
        assert overlap.kind == "database"
        assert "'production' and 'staging' name the same database" in overlap.message
    finally:
        with postgres_engine.connect() as conn:
            conn.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(role))
            if made_role:
                conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(role))


_KEYS = {"blob_url": "s3://b/x", "s3_endpoint_url": "http://127.0.0.1:9"}
