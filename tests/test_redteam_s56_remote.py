"""Red team 56 on PostgreSQL and object storage.

What broke:

- A run's end left unfinished multipart uploads under its scratch prefix. The plugin drops
  the run's scratch database and deletes every object under its scratch prefix, but an
  upload begun and never completed nor aborted (a replica the test killed mid-upload, a
  store that went away before the abort) is no object: no listing of objects shows it, the
  store keeps its parts and bills them, and ``app data check`` on testing's prefix looks
  under ``<prefix>/blobs/`` alone, never under a run's ``<prefix>/pytest_.../``. Every run
  of a suite that kills a replica mid-upload left parts that nothing would ever find. The
  end of a run now also aborts every unfinished upload under its own scratch prefix (any
  key there: the prefix is the run's alone), and what it could not abort is said in the
  same one line as an object it could not delete; docs/explanation/remote.md's commands to
  clear a killed run's prefix by hand now abort its uploads too (``aws s3 rm`` does not).

- A run's end left every version of the objects it wrote, in a bucket that keeps versions
  (as docs/how-to/run-on-postgresql.md sets up ``app-data``, where the plugin's reference shows
  testing's prefix). Deleting an object there only puts a delete marker over it: the run's
  prefix looked empty to every listing of objects, and every byte each run wrote stayed,
  billed, for ever. The end of a run now also deletes every version and delete marker under
  its own scratch prefix (none of another's, nor of any profile's: those are its backups),
  unless the bucket has Object Lock, whose retention decides; what it could not delete is
  said in the same one line.

- An xdist worker that crashed (a test that killed it, the OOM killer): xdist started another
  in its place and the run went on, but the crashed worker's session end never ran, so its
  scratch database, objects and uploads were left with nothing said, though its controller
  had seen it die. The controller now drops and empties them once the worker's process has
  exited (the proof a killed run's leftovers lack), and says so in one line; the sandbox's
  check of a scratch name lets a run's process (not a worker) reach its workers' names.

What held, in the same run: it drops and empties its own scratch database and prefix alone; a
killed run's leftovers beside them (a database and a prefix named like a run's, an unfinished
upload in it) and production's prefix beside testing's (its objects and its unfinished upload)
are untouched. By hand (not kept: about 8 s), two runs under ``-n 2`` at once on one cluster
and one bucket, beside a third under ``-n 2`` killed with ``SIGKILL`` mid-test: five scratch
databases and prefixes, none shared; the two ended runs left nothing; the killed one left its
workers' databases, objects and uploads, as docs/explanation/remote.md says (and said nothing:
it was killed), and the next run neither touched nor named them.

All real: the suite's cluster and ``weed``, pytest subprocesses with the app's plugin.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from engines import PostgresEngine, S3Engine, remote_testing_run
from side_by_side import pytest_side_by_side

_INNER = '''
import os
import signal
import uuid

import pytest

from app.remote.objects import ObjectStore


@pytest.mark.parametrize("key", ["blobs/", "elsewhere/", "crash/"])
def test_leaves_an_unfinished_upload(app_config, key):
    """What a replica killed mid-upload leaves: a multipart upload with a part, no object;
    then, for "crash/", the worker killed as the kernel's OOM killer would."""
    store = ObjectStore(
        app_config.blob_url,
        app_config.s3_endpoint_url,
        app_config.s3_access_key_id,
        app_config.s3_secret_access_key,
    )
    client, bucket = store._client, store.location.bucket
    # A name the app makes (since guard67 the run's end aborts only uploads whose name
    # shows the run made it: S3 lists no upload's metadata); `key` says where the test ends.
    name = store.location.key(store.new_blob_name())
    upload = client.create_multipart_upload(Bucket=bucket, Key=name)["UploadId"]
    client.upload_part(Bucket=bucket, Key=name, UploadId=upload, PartNumber=1, Body=b"x" * 64)
    store.put("blobs/" + uuid.uuid4().hex, b"an object")  # marked in its metadata
    listed = client.list_multipart_uploads(Bucket=bucket, Prefix=store.location.key(""))
    assert name in [u["Key"] for u in listed.get("Uploads", ())]
    if key == "crash/":
        os.kill(os.getpid(), signal.SIGKILL)
'''


def _uploads(client: Any, bucket: str, prefix: str) -> list[str]:
    listed = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return sorted(upload["Key"] for upload in listed.get("Uploads", ()))


def _versions(client: Any, bucket: str, prefix: str) -> list[tuple[str, str]]:
    """Every version and delete marker under `prefix`: (key, version id)."""
    listed = client.list_object_versions(Bucket=bucket, Prefix=prefix)
    found = [*listed.get("Versions", ()), *listed.get("DeleteMarkers", ())]
    return sorted((item["Key"], item["VersionId"]) for item in found)


def _objects(client: Any, bucket: str, prefix: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", ()))


def test_a_run_s_end_leaves_no_upload_nor_version_under_its_scratch_prefix_and_nothing_else(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, tmp_path: Path
) -> None:
    testing, prefix = f"rt56t_{os.getpid()}", f"rt56-{os.getpid()}"
    # A bucket that keeps versions, as docs/how-to/run-on-postgresql.md sets one up.
    client, bucket = s3_engine.client(), f"rt56v-{os.getpid()}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    project, env = remote_testing_run(
        tmp_path, postgres_engine, s3_engine, (testing, prefix), _INNER, bucket=bucket
    )
    # Beside the run: a killed run's database and prefix (named as a run's), and
    # production's prefix next to testing's, each with an object, an earlier version of it
    # and a deleted one (a marker over its version), and an unfinished upload.
    killed = f"{prefix}/pytest_1_dead"
    beside = [f"{killed}/blobs/{'a' * 32}", f"{prefix}-production/blobs/{'b' * 32}"]
    kept = []
    for key in beside:
        client.put_object(Bucket=bucket, Key=key, Body=b"earlier")
        client.put_object(Bucket=bucket, Key=key, Body=b"kept")
        client.put_object(Bucket=bucket, Key=key[:-1] + "d", Body=b"deleted")
        client.delete_object(Bucket=bucket, Key=key[:-1] + "d")
        upload = key[:-1] + "c"
        client.create_multipart_upload(Bucket=bucket, Key=upload)
        kept.append(upload)
    versions = {where: _versions(client, bucket, where) for where in (killed, beside[1][:-39])}
    assert [len(found) for found in versions.values()] == [4, 4]
    with postgres_engine.connect() as conn:
        conn.execute(f'CREATE DATABASE "{testing}_pytest_1_dead"')
    try:
        (result,) = pytest_side_by_side(project, env, ["-p", "no:randomly", "-n", "1"])
        output = "\n".join(result.outlines + result.errlines)
        assert "1 failed, 2 passed" in result.outlines[-1], output
        # The run's scratch names, and its crashed worker's (xdist replaced it).
        (run,) = re.findall(rf"prefix=s3://{bucket}/{prefix}/(pytest_\w+) \(\+ _gw<N>", output)
        (worker,) = re.findall(r"app: worker (gw\d) crashed; its scratch database", output)
        # Before: nothing said, and the crashed worker's database, objects and upload left.
        assert (
            f"app: worker {worker} crashed; its scratch database "
            f"postgresql://app@{postgres_engine.host}:{postgres_engine.port}/"
            f"{testing}_{run}_{worker} and prefix s3://{bucket}/{prefix}/{run}_{worker} "
            "are removed"
        ) in output
        # Before: the uploads the tests began were left under the workers' prefixes, and
        # the versions of their objects (each hidden behind a marker), invisible to every
        # listing of objects, and nothing would ever abort or delete them. Only the killed
        # run's are left under testing's prefix.
        assert _versions(client, bucket, f"{prefix}/") == versions[killed]
        assert {where: _versions(client, bucket, where) for where in versions} == versions
        assert _uploads(client, bucket, f"{prefix}/") == [kept[0]]
        assert _objects(client, bucket, f"{prefix}/") == [beside[0]]
        assert _uploads(client, bucket, f"{prefix}-production/") == [kept[1]]
        assert _objects(client, bucket, f"{prefix}-production/") == [beside[1]]
        with postgres_engine.connect() as conn:
            left = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (testing.replace("_", "\\_") + "%",),
            ).fetchall()
        assert left == [(f"{testing}_pytest_1_dead",)]
    finally:
        with postgres_engine.connect() as conn:
            for name in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (testing.replace("_", "\\_") + "%",),
            ).fetchall():
                conn.execute(f'DROP DATABASE IF EXISTS "{name[0]}" WITH (FORCE)')
        for key in _uploads(client, bucket, prefix):
            for upload in client.list_multipart_uploads(Bucket=bucket, Prefix=key)["Uploads"]:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
