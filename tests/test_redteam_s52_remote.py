"""Red team 52 on PostgreSQL and object storage.

What broke:

- A connection service file whose section is given twice (``[staging]`` appended again to
  change its database), or whose section names a key twice (a ``dbname=`` line added below
  the old one). The app read the file with `configparser`, which merges the two and keeps
  the last value; libpq stops at the end of the section's first appearance and keeps a
  key's first value. Staging's ``service=staging`` reached production's database while the
  overlap check saw another one, and said nothing. The file is now read as libpq reads it.
- ``app data empty-trash`` whose deletion of the removed entries' objects the object store
  refused (a 500), after the entries' rows were deleted and audited: it said "`app data
  check --repair` was cut short ... every row of the database as it was", or, its listing
  refused, only that the store could not be used, of a command that had removed every
  entry. Now ``object_store_cut_short`` names the empty-trash, the entries it removed, the
  objects it left, and `app data check --repair`, which deletes them and removes no entry.
- An object store (or a gateway in front of it) that answers 200 to a write it does not
  keep, or keeps cut short: the app committed the file's row, the upload was acknowledged,
  and its bytes were gone, found by the next download. A write is now read back with one
  HEAD (S3 reads its own writes at once): a missing object or another size refuses the
  upload, naming the store's failure, before any row names the object.
- This machine's own address (``192.0.2.2``, ``fd00::2``) as a database's host or an
  object store's endpoint, beside ``127.0.0.1``: a server that listens on every address
  is one server by both, and the overlap check, which knew loopback's spellings alone,
  took them for two. Its own addresses (from ``/proc``, no lookup) are now this machine.
- A connection the database had answered on, ended under a read (an operator's
  ``pg_terminate_backend``, a restart, a failover): "cannot connect to database ...: check
  that the server runs and that database_url names it", of settings that reached it
  (`app data check --repair`). It is now ``connection_lost``, naming the read and that
  nothing was changed; and an empty-trash whose search for what no row names ended so says
  what it had removed, as the object store's refusal above does.

All real: the suite's cluster (and ``weed``), libpq's own connection to show where a URL
leads.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import forked_app
import psycopg
import pytest
import test_remote_store
from engines import PostgresEngine, S3Engine, new_blob_url
from replicas import Production, production_on, wait_for
from test_redteam_s39_ops import _overlaps, _settings
from test_redteam_s51_remote import _Forward, _Refusing, _refusing, proxy_to, serving

from app.remote import hosts, pg
from app.remote.errors import ObjectStoreUnavailableError
from app.remote.store import RemoteStore


@pytest.fixture(scope="module")
def production(
    tmp_path_factory: pytest.TempPathFactory, postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> Iterator[Production]:
    """A production profile on the suite's engines, opened (stamped and bound) by a command,
    shared by the tests below."""
    base = tmp_path_factory.mktemp("production")
    with production_on(base, postgres_engine, s3_engine, new_blob_url(s3_engine)) as opened:
        assert opened.run("sessions", "list").returncode == 0
        yield opened


# --- a service file read as libpq reads it ---------------------------------------------------


def test_a_service_given_twice_is_the_database_libpq_connects_to(
    postgres_engine: PostgresEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    production = postgres_engine.create_database("production", outside_the_run=True)
    staging = postgres_engine.create_database("staging", outside_the_run=True)
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "pg_service.conf"))
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path))  # no system file of this machine's
    for name in ("PGSERVICE", "PGDATABASE", "PGHOST", "PGHOSTADDR", "PGPORT"):
        monkeypatch.delenv(name, raising=False)
    via_service = f"postgresql://{postgres_engine.user}@/?service=staging"
    _settings(
        tmp_path,
        monkeypatch,
        production={**_KEYS, "database_url": postgres_engine.url(production)},
        staging={**_KEYS, "blob_url": "s3://b/y", "database_url": via_service},
    )
    try:
        # Staging's section, once naming production's database, changed by appending to the
        # file rather than editing it: the section again, or the key again.
        for again in ("\n[staging]\n", ""):
            (tmp_path / "pg_service.conf").write_text(
                f"[staging]\nhost=127.0.0.1\nport={postgres_engine.port}\ndbname={production}\n"
                f"{again}dbname={staging}\n"
            )
            # Where libpq goes, for real: production's database.
            with psycopg.connect(via_service, connect_timeout=10) as conn:
                assert conn.info.dbname == production
            assert [a.dbname for a in pg.database_addresses(via_service)] == [production]
            # Before: none, the check reading the section's last dbname, staging's.
            [overlap] = _overlaps()
            assert overlap.kind == "database"
            assert "'production' and 'staging' name the same database" in overlap.message
    finally:
        postgres_engine.drop_database(production)
        postgres_engine.drop_database(staging)


_KEYS = {"blob_url": "s3://b/x", "s3_endpoint_url": "http://127.0.0.1:9"}


# --- an empty-trash cut short by the object store ---------------------------------------------


def test_an_empty_trash_cut_short_by_the_object_store_says_what_it_removed(
    production: Production, s3_engine: S3Engine
) -> None:
    bucket, _, prefix = production.blob_url.removeprefix("s3://").partition("/")
    s3 = s3_engine.client()
    objects = test_remote_store._objects(s3_engine, production.blob_url)

    def trashed() -> str:
        """A session with a file, deleted: a trash entry whose object empty-trash deletes."""
        with RemoteStore(production.database_url, objects, "production") as served:
            session = served.create_session("to be emptied")
            served.put_file(session["id"], "a.txt", io.BytesIO(b"acknowledged, then deleted"))
            served.delete_session(session["id"])
        return session["id"]

    def blobs() -> int:
        return s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/blobs/").get("KeyCount", 0)

    def emptied(refused: str) -> tuple[int, str]:
        def refuses(method: str, path: str) -> bool:
            if refused == "delete":
                return method == "POST" and "delete" in path
            return "list-type=2" in path

        with _refusing(s3_engine, refuses) as proxy:
            env = {**production.env, "APP_S3_ENDPOINT_URL": proxy.url, "APP_S3_MAX_ATTEMPTS": "1"}
            done = forked_app.run(env, ["data", "empty-trash", "--yes-i-mean-it"])
        return done.returncode, " ".join(done.stderr.split())

    trashed()
    # Its deletion of the entry's object answered 500, then its repair's deletion again.
    # Before: "`app data check --repair` was cut short ... It had repaired nothing yet; it
    # left 1 orphan object as found, and every row of the database as it was", of an
    # empty-trash that had deleted the entry's rows for good.
    code, said = emptied("delete")
    assert code == 69 and "every row of the database as it was" not in said, said
    assert "error: `app data empty-trash` was cut short: object store" in said, said
    assert "refused the deletion of 1 orphan object (InternalError (HTTP 500)" in said, said
    assert (
        "By then it had removed 1 trash entry for good (deleted from the database; the "
        "empty-trash row of its audit log names them); it left 1 orphan object, which no row "
        "names, in the object store. Run `app data check --repair` once the object store "
        "answers (`app doctor` checks it): it deletes the objects no row names, and removes "
        "no trash entry"
    ) in said, said
    # Its listing of what no row names answered 500. Before: "cannot use object store ...",
    # nothing of the entry it had removed.
    trashed()
    code, said = emptied("list")
    assert code == 69 and "refused the listing of the objects no row names" in said, said
    assert "By then it had removed 1 trash entry for good" in said, said
    assert (
        "names them) and deleted the 1 object they named; it left any other object no row "
        "names (it could not list them) in the object store"
    ) in said, said
    with psycopg.connect(production.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM app_sessions").fetchone() == (0,)
    assert blobs() == 1  # the first's
    # The remedy it names: both objects deleted, no entry to remove.
    done = production.run("data", "check", "--repair")
    assert done.returncode == 0, done.stderr
    assert blobs() == 0


# --- an object store that acknowledges a write it does not keep --------------------------------


class _Losing(_Forward):
    """Forwards every request to ``weed`` but the upload of an object under ``blobs/``,
    which it answers 200 itself, as S3 does, having sent on nothing (with the server's
    ``cut``, the body's first half): a gateway or cache that acknowledges before the store
    has kept the bytes."""

    def do_PUT(self) -> None:
        if "/blobs/" not in self.path or "uploadId=" in self.path:
            self._any()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if getattr(self.server, "cut", False):  # its first half kept, by a request of its own
            bucket, _, key = unquote(urlsplit(self.path).path).lstrip("/").partition("/")
            client = getattr(self.server, "client")  # noqa: B009 - set by `_losing`
            client.put_object(Bucket=bucket, Key=key, Body=body[: len(body) // 2])
        self.server.refusals += 1
        self.send_response(200)
        self.send_header("ETag", f'"{hashlib.md5(body).hexdigest()}"')
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def _losing(s3_engine: S3Engine) -> Iterator[_Refusing]:
    with serving(proxy_to(s3_engine, _Losing, client=s3_engine.client())) as proxy:
        yield proxy


def test_a_write_the_object_store_acknowledges_and_does_not_keep_is_refused(
    production: Production, s3_engine: S3Engine
) -> None:
    body = b"acknowledged bytes " * 50
    said: dict[bool, str] = {}
    with _losing(s3_engine) as proxy:
        objects = s3_engine.objects(production.blob_url, endpoint_url=proxy.url, max_attempts=1)
        objects.open("production")
        with RemoteStore(production.database_url, objects, "production") as served:
            session = served.create_session("a store that loses writes")
            for cut in (False, True):
                setattr(proxy, "cut", cut)  # noqa: B010 - read by `_Losing`
                # Before: the file's row committed, the upload answered as saved, and the
                # download then refused ("their object was removed from the object store
                # from outside the app"): acknowledged bytes, lost.
                with pytest.raises(ObjectStoreUnavailableError) as refused:
                    served.put_file(session["id"], "a.txt", io.BytesIO(body))
                said[cut] = str(refused.value)
                assert served.list_files(session["id"]) == []
            # As found, for the tests after it: no session, no trash, no object.
            served.delete_session(session["id"])
            served.empty_trash()
    bucket, _, prefix = production.blob_url.removeprefix("s3://").partition("/")
    s3 = s3_engine.client()
    for found in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/blobs/").get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=found["Key"])
    assert proxy.refusals == 2
    for cut, message in said.items():
        # (The body the proxy cut may be S3's chunked framing of it: the size is the store's.)
        kept = r"holds it with \d+ bytes" if cut else "does not have it"
        assert re.search(
            rf"\({len(body)} bytes\), then {kept} \(a HEAD right after the write\)", message
        ), message
        assert (
            "It loses writes it has answered as done: a node or disk failing, or a gateway, "
            "cache or proxy in front of it that answers before the store has kept the bytes. "
            "Nothing names the object, so nothing was saved: the client may send it again"
        ) in message, message
        assert "Check s3_endpoint_url" not in message, message


# --- this machine's own address ------------------------------------------------------------------


class _Everywhere(_Refusing):
    """The suite's ``weed`` as a store listening on every address (``0.0.0.0``) serves:
    the proxy of red team 51, bound there, refusing nothing."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.refused = lambda method, path: False
        self.after = False
        self.refusals = 0
        ThreadingHTTPServer.__init__(self, ("0.0.0.0", 0), _Forward)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


def test_this_machine_s_own_address_is_the_server_its_loopback_reaches(
    s3_engine: S3Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = sorted(str(a) for a in hosts.own_addresses() if a.version == 4 and not a.is_loopback)
    if not own:
        pytest.skip("this machine has no IPv4 address but loopback's")
    proxy = _Everywhere(s3_engine.endpoint_url)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        port = proxy.server_address[1]
        blob_url = new_blob_url(s3_engine)
        bucket, _, prefix = blob_url.removeprefix("s3://").partition("/")
        by_address = f"http://{own[0]}:{port}"
        import boto3

        def client(endpoint: str) -> Any:
            return boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=s3_engine.access_key_id,
                aws_secret_access_key=s3_engine.secret_access_key,
                region_name="us-east-1",
            )

        # One store by both, for real: written by loopback, read by the machine's address.
        client(proxy.url).put_object(Bucket=bucket, Key=f"{prefix}/probe", Body=b"one store")
        found = client(by_address).get_object(Bucket=bucket, Key=f"{prefix}/probe")
        assert found["Body"].read() == b"one store"
        _settings(
            tmp_path,
            monkeypatch,
            production={"database_url": "postgresql://app@127.0.0.1/production",
                        "blob_url": blob_url, "s3_endpoint_url": proxy.url},
            staging={"database_url": "postgresql://app@127.0.0.1/staging",
                     "blob_url": blob_url, "s3_endpoint_url": by_address},
        )  # fmt: skip
        # Before: none, the machine's own address taken for another machine's.
        [overlap] = _overlaps()
        assert overlap.kind == "object prefix", overlap.message
        assert "'production' and 'staging' name overlapping object prefixes" in overlap.message
        # And a database reached by it: the same server as 127.0.0.1's on that port.
        assert pg.same_database(
            "postgresql://app@127.0.0.1/production", f"postgresql://app@{own[0]}/production"
        )
        for address in hosts.own_addresses():
            assert hosts.is_this_machine(f"[{address}]" if address.version == 6 else str(address))
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


# --- a connection ended under a read ----------------------------------------------------------


def _killed_in(production: Production, args: list[str], table: str) -> tuple[int, str]:
    """Run `args` while another client holds `table` (ACCESS EXCLUSIVE), and end the
    command's backend (``pg_terminate_backend``) once it waits there."""
    env = {**production.env, "APP_DATABASE_LOCK_WAIT_SECONDS": "20"}
    done: list[Any] = []
    with psycopg.connect(production.database_url) as holding:
        holding.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        command = threading.Thread(target=lambda: done.append(forked_app.run(env, args)))
        command.start()
        with psycopg.connect(production.database_url, autocommit=True) as operator:
            waiting = (
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND application_name LIKE 'app %' AND pid <> pg_backend_pid()"
            )
            [(pid,)] = wait_for(lambda: operator.execute(waiting).fetchall(), "a wait")
            operator.execute("SELECT pg_terminate_backend(%s)", (pid,))
        command.join()
    return done[0].returncode, " ".join(done[0].stderr.split())


def test_a_connection_ended_under_a_read_is_not_a_database_it_cannot_connect_to(
    production: Production, s3_engine: S3Engine
) -> None:
    # `app data check --repair`, its read of the live sessions' count ended.
    code, said = _killed_in(production, ["data", "check", "--repair"], "app_session_counts")
    # Before: "cannot connect to database ...: terminating connection due to administrator
    # command ... Check that the server runs and that database_url (APP_DATABASE_URL) names
    # it; `app doctor` checks the settings".
    assert code == 69 and "cannot connect" not in said, said
    # Nor, above it, psycopg's pool: "discarding closed connection: <...BoundedConnection [BAD]
    # at 0x7f...>".
    assert said.startswith("error: lost the connection to database"), said
    assert (
        "during the check's read of every file's row and of the live sessions' count "
        "(terminating connection due to administrator command"
    ) in said, said
    assert (
        "the server ended it after it had answered on it (an operator's pg_terminate_backend, "
        "a restart, a failover), so database_url reaches it and nothing in the settings needs "
        "to change; a read changes nothing, so nothing was changed. Retry it"
    ) in said, said
    # `app data empty-trash`, the same read of its search for what no row names, after it
    # had removed the entry: before, that "a read changes nothing, so nothing was changed".
    objects = test_remote_store._objects(s3_engine, production.blob_url)
    with RemoteStore(production.database_url, objects, "production") as served:
        session = served.create_session("to be emptied")
        served.delete_session(session["id"])
    with psycopg.connect(production.database_url) as conn:
        [(entries,)] = conn.execute(
            "SELECT (SELECT count(*) FROM app_sessions WHERE deleted_at IS NOT NULL)"
            " + (SELECT count(*) FROM app_files WHERE trash_name IS NOT NULL)"
        ).fetchall()  # another test's too
    args = ["data", "empty-trash", "--yes-i-mean-it"]
    code, said = _killed_in(production, args, "app_session_counts")
    assert code == 69 and "nothing was changed" not in said, said
    assert "`app data empty-trash` was cut short: database postgresql://" in said, said
    assert "failed its search for the objects no row names (terminating connection" in said, said
    assert (
        f"By then it had removed {entries} trash entr{'y' if entries == 1 else 'ies'} for "
        "good (deleted from the database; the "
        "empty-trash row of its audit log names them); it left any other object no row names "
        "(it could not list them) in the object store. Run `app data check --repair` once the "
        "database answers"
    ) in said, said
    with psycopg.connect(production.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM app_sessions").fetchone() == (0,)
