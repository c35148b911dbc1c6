"""Red team 64 on PostgreSQL and object storage: durability settings a DBA sets.

What broke:

- ``synchronous_commit`` as a transaction of the app's commits with it. The app's
  connections set it ``on`` where they found it ``off`` as they opened (red team 27), and
  kept every other value. ``local`` (``ALTER ROLE/DATABASE ... SET synchronous_commit =
  local``, a speed setting beside a synchronous standby) answers a commit once the primary
  has it, before the standby named by ``synchronous_standby_names`` has: a failover to that
  standby loses what the app acknowledged. And a session's value can change after the
  connection opened: ``ALTER SYSTEM SET synchronous_commit = off`` and ``SELECT
  pg_reload_conf()`` change it in every session that found ``on`` and so set nothing (by
  hand, a cluster of its own), and a pooler hands on a server session with what another
  client ``SET``. The app's writes then committed with ``off``: answered before their WAL
  was written, lost by a crash of the server. Each write now sets it for its own
  transaction (``SET LOCAL``'s ``set_config(..., true)``, sent with its ``BEGIN``, no round
  trip more), ``off`` and ``local`` raised to ``on``; the connections raise ``local`` as
  they open too.
- A table of the app's made UNLOGGED under a live replica (red team 62's *not stopped*):
  the open refuses it, but the replica acknowledged every write until its next start, each
  lost if the server crashed meanwhile (PostgreSQL empties an UNLOGGED table as it starts
  after a crash). Each write now looks, at its commit point (after its statements locked
  what they wrote, in the query that checks the replica's hold), whether a table or
  sequence of the app's is UNLOGGED, and refuses the change (``write_unlogged``, 503/69,
  rolled back, an upload's object deleted), naming the ``ALTER ... SET LOGGED`` statements,
  which, run as written, let the next write through.
- ``fsync = off`` or ``full_page_writes = off`` on the server (a bulk load's advice): no
  setting of the app's connections can keep a crash of the machine from losing what was
  committed, and `app doctor` said nothing of it. Its ``server`` line now names each, where
  it is set, and the ``ALTER SYSTEM`` that resolves it (not refused: the suite's own cluster
  runs so on purpose).
- ``app data empty-trash`` (or ``POST /trash/empty``) in a bucket that keeps versions, as
  the how-to advises for backups: it deleted the objects, whose bytes stay in the bucket as
  noncurrent versions (billed, readable by whoever may read versions), and said only that
  it removed the entries, the command "that removes bytes". It now says so in its log
  (standard error for the command), with what removes them and the command that lists them.
- An upload whose multipart upload the store dropped while its body streamed (a lifecycle
  rule's ``AbortIncompleteMultipartUpload``, another client's abort): refused, nothing kept,
  but told to check ``s3_endpoint_url``, ``blob_url`` and the credentials, which had reached
  the store. It now says the multipart upload was aborted meanwhile, by what, the command
  that shows the bucket's lifecycle rules, and to send it again.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator

import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_redteam_s62_remote import doctor_probes
from test_remote_store import PROFILE, _replica
from test_rows66_remote import at_the_commit

from app.remote import pg
from app.remote.errors import ObjectStoreUnavailableError, UnloggedWriteError

MiB = 1024 * 1024

# A trigger after each row's update (left alone by the open: a change-data-capture tool's
# kind), run by the COMMIT itself (`at_the_commit`, session 66), that records the
# synchronous_commit the app's transaction commits with (red team 65 on regress: set at the
# commit point, no longer with the BEGIN).
_SEEN = """
CREATE SCHEMA rt64;
CREATE TABLE rt64.seen (id serial, value text);
CREATE FUNCTION rt64.seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rt64.seen (value) VALUES (current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
""" + at_the_commit("rt64", "app_sessions", "UPDATE")


def test_each_write_commits_with_synchronous_commit_on_whatever_its_session_says(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: the first delete committed with `local` (the database's), the second with
    # `off` (its session's, changed after the connection opened).
    with postgres_engine.opened_database(PROFILE) as (name, url):
        with postgres_engine.connect(name) as admin:
            admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = local')  # type: ignore[arg-type]
            admin.execute(_SEEN)  # type: ignore[arg-type]
        with _replica(s3_engine, (url, new_blob_url(s3_engine)), pool_size=1) as store:
            first, second = (store.create_session(t)["id"] for t in ("local", "off"))
            store.delete_session(first)  # with the database's local
            with store.db.conn() as conn:
                # What a reload of `ALTER SYSTEM SET synchronous_commit = off` does to a
                # session that set nothing, and a pooler's server session another client set.
                conn.execute("SET synchronous_commit = off")
            store.delete_session(second)  # after the session's value changed
            with store.db.conn() as conn:
                # The session's own value is left as it was: only the write's transaction.
                row = conn.execute("SELECT current_setting('synchronous_commit') AS v").fetchone()
                assert row is not None
                assert row["v"] == "off"
        with postgres_engine.connect(name) as admin:
            seen = [v for (v,) in admin.execute("SELECT value FROM rt64.seen ORDER BY id")]
    assert seen == ["on", "on"]


def test_a_table_made_unlogged_under_a_live_replica_is_refused_at_each_write(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: the upload was answered 201 into a table a crash empties.
    with (
        postgres_engine.opened_database(PROFILE) as (name, url),
        _replica(s3_engine, (url, new_blob_url(s3_engine)), pool_size=1) as store,
    ):
        where = pg.mask_url(url)
        session_id = store.create_session("t")["id"]
        store.put_file(session_id, "kept.txt", b"acknowledged")
        blobs = set(store.objects.objects())
        with postgres_engine.connect(name) as admin:
            admin.execute("ALTER TABLE app_files SET UNLOGGED")
        what = f"the upload of 'new.txt' into session {session_id}"
        with pytest.raises(UnloggedWriteError) as refused:
            store.put_file(session_id, "new.txt", b"not kept")
        error = refused.value
        assert (error.code, error.http_status, error.exit_code) == ("write_unlogged", 503, 69)
        assert error.message == (
            f"database {where} did not store {what}: the app's table app_files became "
            "UNLOGGED since this process opened the database (`ALTER ... SET UNLOGGED`, as a "
            "bulk load or a restore is sped up): PostgreSQL writes none of their changes to "
            "its WAL and empties them as it starts again after a crash, so a change "
            "acknowledged there would be lost. Refusing it; nothing was changed (its "
            "transaction was rolled back, and an upload's object deleted). The rows already "
            "there are lost as well if the server crashes before they are logged again: as "
            'their owner, run `ALTER TABLE "app_files" SET LOGGED` now (in this order: a '
            "table another references first; each rewrites its table under an exclusive "
            "lock), then retry"
        )
        assert set(store.objects.objects()) == blobs
        assert [f["name"] for f in store.list_files(session_id)] == ["kept.txt"]
        # A change to another table is refused alike: the check reads the app's tables.
        with pytest.raises(UnloggedWriteError):
            store.delete_session(session_id)

        statements = re.search(r"run `([^`]*)` now", error.message)
        assert statements is not None
        with postgres_engine.connect(name) as admin:
            admin.execute(statements[1])  # type: ignore[arg-type]
        store.put_file(session_id, "new.txt", b"kept now")
        assert sorted(f["name"] for f in store.list_files(session_id)) == ["kept.txt", "new.txt"]

        # The suite's cluster runs with fsync and full_page_writes off (-c): doctor said
        # nothing of either; it says so now, without refusing the profile.
        server = [p for p in doctor_probes(url, where) if p.subject == "server"]
        said = (
            "fsync off (set by the server's command line) and full_page_writes off (set "
            "by the server's command line): a crash of the server's machine (a power "
            "cut, a kernel panic) can lose or damage changes the app was told were "
            "committed, which no setting of the app's connections can prevent. As a "
            "superuser run `ALTER SYSTEM SET fsync = on; ALTER SYSTEM SET "
            "full_page_writes = on; SELECT pg_reload_conf()` (a `-c` on the server's "
            "command line wins over both: remove it there and restart the server)"
        )
        assert [(p.found, p.problem) for p in server] == [(said, None)]


def test_an_empty_trash_in_a_bucket_that_keeps_versions_says_the_bytes_stay(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the trash was emptied with nothing said, its bytes kept as versions.
    bucket = f"rt64-versioned-{os.getpid()}"
    client = s3_engine.client()
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    blob_url = new_blob_url(s3_engine).replace(f"s3://{s3_engine.bucket}/", f"s3://{bucket}/")
    prefix = blob_url.split("/", 3)[3]
    try:
        with (
            postgres_engine.opened_database(PROFILE) as (_, url),
            _replica(s3_engine, (url, blob_url), pool_size=1) as store,
        ):
            session_id = store.create_session("t")["id"]
            store.put_file(session_id, "a.txt", b"deleted for good?")
            store.delete_file(session_id, "a.txt")
            with caplog.at_level(logging.WARNING, logger="app.remote.store"):
                assert len(store.empty_trash()) == 1
        kept = client.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/blobs/")
        assert [v["IsLatest"] for v in kept.get("Versions", [])] == [False]
        said = (
            f"the trash's 1 object is deleted, but bucket {bucket!r} keeps versions "
            "(versioning Enabled): its bytes stay in it as noncurrent versions, billed and "
            "readable by whoever may read versions, until a lifecycle rule that expires "
            "noncurrent versions (NoncurrentVersionExpiration) or a delete of each version "
            f"removes them (`aws s3api list-object-versions --bucket {bucket} --prefix "
            f"{prefix}/blobs/` lists them); Object Lock's retention, where the bucket has it, "
            "keeps them until it ends"
        )
        assert [r.getMessage() for r in caplog.records if r.name == "app.remote.store"] == [said]
    finally:
        everything = client.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/")
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for kind in ("Versions", "DeleteMarkers")
            for v in everything.get(kind, [])
        ]
        if doomed:
            client.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})


def test_an_upload_whose_multipart_upload_was_aborted_meanwhile_says_so(
    s3_engine: S3Engine,
) -> None:
    # Before: refused (nothing kept), telling to check s3_endpoint_url, blob_url and the
    # credentials, which had reached the store.
    objects = s3_engine.objects(new_blob_url(s3_engine), part_bytes=5 * MiB)
    client, bucket = s3_engine.client(), objects.location.bucket

    def body() -> Iterator[bytes]:
        # As a lifecycle rule's AbortIncompleteMultipartUpload does, while the body streams.
        aborted = False
        for _ in range(16):
            yield b"x" * MiB
            if aborted:
                continue
            found = client.list_multipart_uploads(Bucket=bucket, Prefix=objects.location.key(""))
            for upload in found.get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted = True
        assert aborted

    with pytest.raises(ObjectStoreUnavailableError) as refused:
        objects.put(objects.new_blob_name(), body(), length=16 * MiB)
    assert "NoSuchUpload" in refused.value.message
    assert refused.value.message.endswith(
        "The store no longer has the multipart upload this write was streaming into: "
        "something aborted it meanwhile, as a lifecycle rule's AbortIncompleteMultipartUpload "
        f"does (`aws s3api get-bucket-lifecycle-configuration --bucket {bucket}` shows them), "
        "or another client's `aws s3api abort-multipart-upload`. These settings reach the "
        "store and need no change: send it again, and give such a rule more days than an "
        "upload takes"
    ), refused.value.message
    assert list(objects.objects()) == []
