"""Red team 49 on PostgreSQL and object storage: a file's object gone from the bucket, and
changes made in the object store that the database then refuses to record.

What broke:

- A download of a listed file whose object was removed from the bucket from outside the app
  (by hand, a lifecycle rule, a restore that left it out) was 500 ``object_missing``, "object
  s3://<bucket>/<prefix> at <endpoint>/blobs/<hex> is recorded but missing": the bucket and
  endpoint sent to the HTTP client, neither the file nor its session named, and no remedy but
  "`app data check` lists such rows". An object of another size was 500 ``object_changed``,
  the bucket named too. The local backend, and the API reference for both, answer such a
  file 500 ``file_damaged``, naming the file, its session, what happened to its bytes and
  what resolves it. Both now answer ``file_damaged`` on PostgreSQL too, naming the finding
  `app data check` reports (``record-without-object``, ``record-object-changed``), and no
  bucket or endpoint.
- A download whose file was deleted (or replaced) and the trash emptied by another replica
  between the download's read of the file's row and its first read of the object (a
  ``POST /trash/empty`` that is not aged) was that same 500, saying the object was "missing
  from the object store" and to run `app data check`, which found nothing wrong: no damage,
  only a delete that came first. It is now what a download after the delete is: 404 (or the
  new version, after a replace). A ``Range`` past byte 0 overtaken so was cut, the object
  asked for again from the range's start: the stream opened first is now read on to it.
  `app data check` beside live replicas reported such a row ``record-without-object``.
- ``trash_copy_lost`` of a file with one copy said "the copy before it is not the version
  that was deleted", then that there was no other copy.
- ``app data check --repair`` whose ``check-repair`` audit row the database refused (a lock
  another client held on ``app_audit``) after it had deleted the orphan objects: exit 69,
  "nothing was changed", the deletions recorded nowhere. ``app data restamp`` the same after
  writing a lost stamp back: a psycopg traceback, exit 1. The row now goes to the command's
  log, and the command says what it did and that the audit log could not record it.
- ``app data restamp`` reading which rows name its objects behind another client's lock
  (``VACUUM FULL app_files``): a psycopg traceback; now ``database_refused`` (69).
- A new database with a monitoring extension (``pg_stat_statements``, often in template1)
  was refused as holding "things that are not the app's", with the remedy "a new or empty
  one", which held them too. An extension's relations no longer count.

What held is kept below: a ``DELETE`` and a replacing ``PUT`` of such a file work under a live
server; `app data check --repair` never removes its row; `app sessions restore` of it is
refused by name (``trash_copy_lost``); `empty-trash` removes its trashed row.

All real: the suite's cluster and ``weed``, two replicas as two RemoteStores, the HTTP app.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import forked_app
import psycopg
import pytest
import test_redteam_s37_remote
import test_remote_store
from engines import S3Engine
from fastapi.testclient import TestClient
from replicas import Production

from app.config import Config
from app.errors import DamagedFileError, FileNotFoundInSessionError, TrashCopyLostError
from app.remote import pg
from app.remote.errors import UnstampedNotEmptyError
from app.remote.store import RemoteStore
from app.server import create_app

opened, store, pair = test_remote_store.opened, test_remote_store.store, test_remote_store.pair
production = test_redteam_s37_remote.production


def _blob(store: RemoteStore, session_id: str, name: str) -> str:
    row = store.db.conn
    with row() as conn:
        found = conn.execute(
            "SELECT blob FROM app_files WHERE session_id = %s AND name = %s AND deleted_at IS NULL",
            (session_id, name),
        ).fetchone()
    assert found is not None
    return str(found["blob"])


@pytest.fixture
def http(store: RemoteStore, app_config: Config) -> Iterator[TestClient]:
    headers = {"Authorization": f"Bearer {app_config.api_token}"}
    with TestClient(create_app(store, app_config), headers=headers) as client:
        yield client


def test_a_file_whose_object_is_gone_or_rewritten_is_file_damaged_as_on_a_data_root(
    store: RemoteStore, http: TestClient, s3_engine: S3Engine
) -> None:
    sid = store.create_session("lost")["id"]
    store.put_file(sid, "gone.txt", b"acknowledged")
    store.put_file(sid, "short.txt", b"the saved bytes")
    s3 = s3_engine.client()
    location = store.objects.location
    s3.delete_object(Bucket=s3_engine.bucket, Key=location.key(_blob(store, sid, "gone.txt")))
    s3.put_object(
        Bucket=s3_engine.bucket, Key=location.key(_blob(store, sid, "short.txt")), Body=b"x"
    )
    # Before: 500 object_missing / object_changed, naming the bucket and the endpoint.
    lost = "are not there (their object was removed from the object store"
    for name, damage, finding in [
        ("gone.txt", lost, "record-without-object"),
        ("short.txt", "are 1 bytes long, where 15 were acknowledged", "record-object-changed"),
    ]:
        path = f"/sessions/{sid}/files/{name}"
        for answer in (http.get(path), http.head(path)):
            assert answer.status_code == 500, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
        got = http.get(f"/sessions/{sid}/files/{name}").json()
        said = got["detail"]
        assert got["code"] == "file_damaged", said
        assert f"cannot send file {name!r} of session {sid}: its bytes {damage}" in said
        assert f"`app data check` reports every such file as {finding}" in said, said
        assert f"upload it again (PUT /sessions/{sid}/files/{name})" in said, said
        assert s3_engine.bucket not in said and "http" not in said, said
        with pytest.raises(DamagedFileError):
            store.open_file(sid, name)
    # Held: the check names each, its repair removes neither row.
    findings = store.check(repair=False).findings
    assert sorted((f.problem, f.target) for f in findings) == [
        ("record-object-changed", f"{sid}/short.txt"),
        ("record-without-object", f"{sid}/gone.txt"),
    ]
    # Held: a replace and a delete of such files work; the rows wait in the trash.
    assert http.put(f"/sessions/{sid}/files/short.txt", content=b"new").status_code == 200
    assert http.get(f"/sessions/{sid}/files/short.txt").content == b"new"
    assert http.delete(f"/sessions/{sid}/files/gone.txt").status_code == 200
    assert [f["name"] for f in http.get(f"/sessions/{sid}").json()["files"]] == ["short.txt"]
    # Held, refused by name; broke in its words: "and the copy before it is not the version
    # that was deleted", then "no other copy of it is in the trash".
    with pytest.raises(TrashCopyLostError) as refused:
        store.restore(sid, file="gone.txt")
    said = str(refused.value)
    assert "record-without-object), nothing was changed. Put the object back" in said, said
    assert said.endswith("; no other copy of it is in the trash"), said
    assert "the copy before it" not in said, said


def _at_next(replica: RemoteStore, method: str, step: Callable[[], Any]) -> None:
    """Run ``step`` once, at ``replica``'s next call of its object store's ``method``:
    ``get``, after a download has read the file's row, before the object store answers it;
    ``objects`` (a listing), in a check, after the rows were read. The windows another
    replica's requests fall into."""
    objects = replica.objects
    real = getattr(objects, method)

    def once(*args: Any, **kwargs: Any) -> Any:
        delattr(objects, method)  # the bound method again, for this and every later call
        step()
        return real(*args, **kwargs)

    setattr(objects, method, once)


def test_a_download_or_check_that_another_replica_s_delete_and_empty_trash_overtook(
    pair: tuple[RemoteStore, RemoteStore],
) -> None:
    first, second = pair
    sid = first.create_session("raced")["id"]
    first.put_file(sid, "a.txt", b"one")
    first.put_file(sid, "b.txt", b"two")

    def delete_and_empty() -> None:
        second.delete_file(sid, "a.txt")
        second.empty_trash(None, via="test")

    # Before: ObjectMissingError, a 500 "recorded but missing from the object store".
    _at_next(first, "get", delete_and_empty)
    with pytest.raises(FileNotFoundInSessionError):
        first.open_file(sid, "a.txt")

    # A range past byte 0 asks for the object again from its start: gone by then, it was
    # cut (and logged as damaged). The stream opened first is read on to it.
    first.put_file(sid, "c.txt", bytes(range(256)) * 64)
    file, _ = first.open_file(sid, "c.txt")
    with file:
        second.delete_file(sid, "c.txt")
        second.empty_trash(None, via="test")
        file.seek(5000)
        assert file.read(300) == (bytes(range(256)) * 64)[5000:5300]
        file.seek(100)  # behind the stream: asked for again, and it is gone
        with pytest.raises(DamagedFileError):
            file.read(1)

    def replace_and_empty() -> None:
        second.put_file(sid, "b.txt", b"three", replace=True)
        second.empty_trash(None, via="test")

    # A replace that came first: the download is of the new version, as after it.
    _at_next(first, "get", replace_and_empty)
    file, entry = first.open_file(sid, "b.txt")
    with file:
        assert (file.read(), entry["size"]) == (b"three", 5)
    assert first.check(repair=False).findings == []

    # The same race in `app data check` beside live replicas: it reads the rows, then lists
    # the objects. Before: record-without-object "the bytes are gone; restore them from a
    # backup", of a row the other replica's empty-trash removed with its object meanwhile.
    first.put_file(sid, "d.txt", b"one")
    first.delete_file(sid, "d.txt")
    first.put_file(sid, "kept.txt", b"kept")
    _at_next(first, "objects", lambda: second.empty_trash(None, via="test"))
    assert first.check(repair=False).findings == []
    # Held: an object really gone is still reported, beside the race.
    first.objects.delete(_blob(first, sid, "kept.txt"))
    [lost] = first.check(repair=False).findings
    assert (lost.problem, lost.target) == ("record-without-object", f"{sid}/kept.txt")


def test_changes_in_the_object_store_whose_audit_row_is_refused_are_said_and_logged(
    production: Production, s3_engine: S3Engine
) -> None:
    # Opened as a command opens it (the database bound to the prefix), then served for a
    # while: a file kept (this process for a replica: cheaper than a server).
    assert production.run("sessions", "list").returncode == 0
    objects = test_remote_store._objects(s3_engine, production.blob_url)
    with RemoteStore(production.database_url, objects, "production") as served:
        sid = served.create_session("kept")["id"]
        served.put_file(sid, "a.txt", b"kept")
    bucket, _, prefix = production.blob_url.removeprefix("s3://").partition("/")
    s3 = s3_engine.client()
    s3.delete_object(Bucket=bucket, Key=f"{prefix}/.app-profile.json")  # the stamp lost
    orphans = [f"blobs/{i:032x}" for i in range(2)]
    for name in orphans:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=b"never committed")
    env = {**production.env, "APP_DATABASE_LOCK_WAIT_SECONDS": "0.1"}
    restamp = ["data", "restamp", "--profile", "production", "--from", "production",
               "--yes-i-mean-it"]  # fmt: skip
    # What `VACUUM FULL app_files` (or an ALTER TABLE) holds while it runs, past the app's
    # lock_timeout: the re-stamp's read of which rows name which objects waits behind it.
    with psycopg.connect(production.database_url) as other:
        other.execute("LOCK TABLE app_files IN ACCESS EXCLUSIVE MODE")
        waited = forked_app.run(env, restamp)
    # Before: psycopg's LockNotAvailable, a traceback, exit 1.
    said = " ".join(waited.stderr.split())
    assert waited.returncode == 69 and "Traceback" not in said, said
    assert (
        "refused the re-stamp of its object prefix: canceling statement due to lock timeout"
    ) in said, said
    assert "nothing was changed" in said and "pg_stat_activity" in said, said
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/.app-profile")
    # Another client holds a lock the audit row's INSERT waits for (a SHARE lock: reads
    # pass), past the app's lock_timeout.
    with psycopg.connect(production.database_url) as other:
        other.execute("LOCK TABLE app_audit IN SHARE MODE")
        restamped = forked_app.run(env, restamp)
        repaired = forked_app.run(env, ["data", "check", "--repair"])
    # Before: a traceback, psycopg's LockNotAvailable, exit 1, with the stamp written back.
    out, err = restamped.stdout, " ".join(restamped.stderr.split())
    assert restamped.returncode == 0 and "Traceback" not in err, err
    assert "is now stamped 'production'" in out, out
    assert "the audit log could not record it (canceling statement due to lock timeout" in out
    assert "its record is in this command's log, above" in out, out
    logged = json.loads(err.rpartition("the row it should hold: ")[2])
    assert logged == {
        "operation": "restamp", "target": logged["target"], "restored": True, "to": "production"
    }  # fmt: skip
    assert s3.head_object(Bucket=bucket, Key=f"{prefix}/.app-profile.json")
    # Before: exit 69, "refused the audit record of check-repair: ... lock timeout ...;
    # nothing was changed", the orphans deleted all the same and recorded nowhere.
    out, err = repaired.stdout, " ".join(repaired.stderr.split())
    assert repaired.returncode == 0, err
    assert "nothing was changed" not in out + err
    assert out.count("object-without-record") == 2 and "repaired: delete the object" in out
    assert "repaired 2 finding(s); the audit log could not record them (canceling" in out, out
    assert "lock timeout" in out and "their record is in this command's log, above" in out
    assert "could not record the repair in" in err, err
    logged = json.loads(err.rpartition("the row it should hold: ")[2])
    assert logged["operation"] == "check-repair"
    assert [f["target"] for f in logged["findings"]] == orphans
    assert all(f["repaired"] for f in logged["findings"])
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/blobs/")["Contents"]
    assert [o["Key"].rpartition("/")[2] for o in listed] == [_blob_of(production.database_url, sid)]
    # With the lock gone, the next change is audited as before.
    assert production.run("data", "check").returncode == 0


def _blob_of(database_url: str, sid: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT blob FROM app_files WHERE session_id = %s", (sid,)).fetchone()
    assert row is not None
    return str(row[0]).rpartition("/")[2]


def test_a_new_database_with_a_monitoring_extension_is_opened_as_empty(
    database_url: str, s3_engine: S3Engine, blob_url: str
) -> None:
    # What a DBA installs in every database (often in template1, so every new one has it):
    # views and tables that belong to an extension, not to another application.
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION pg_stat_statements")
        admin.execute("CREATE EXTENSION pg_buffercache")
        admin.execute("CREATE TABLE reports (id int)")  # another application's: refused
    # Before: UnstampedNotEmptyError, "holds things that are not the app's
    # (public.pg_buffercache, public.pg_stat_statements, ...)", "point database_url at a
    # new or empty one", which has them too.
    with pytest.raises(UnstampedNotEmptyError) as refused:
        pg.open_database(database_url, "production")
    assert "it holds things that are not the app's (public.reports)" in str(refused.value)
    assert "`CREATE DATABASE <name> TEMPLATE template0` makes one without" in str(refused.value)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("DROP TABLE reports")
    stamp = pg.open_database(database_url, "production")
    assert stamp.profile == "production"
    with RemoteStore(
        database_url, test_remote_store._objects(s3_engine, blob_url), "production"
    ) as opened:
        sid = opened.create_session("kept")["id"]
        assert opened.check(repair=False).findings == []
        assert opened.get_session(sid)["title"] == "kept"
