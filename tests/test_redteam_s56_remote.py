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
import uuid

import pytest
from psycopg.conninfo import conninfo_to_dict

from app.remote.objects import ObjectStore


@pytest.mark.parametrize("key", ["blobs/", "elsewhere/"])
def test_leaves_an_unfinished_upload(app_config, key):
    """What a replica killed mid-upload leaves: a multipart upload with a part, no object."""
    store = ObjectStore(
        app_config.blob_url,
        app_config.s3_endpoint_url,
        app_config.s3_access_key_id,
        app_config.s3_secret_access_key,
    )
    client, bucket = store._client, store.location.bucket
    name = store.location.key(key + uuid.uuid4().hex)
    upload = client.create_multipart_upload(Bucket=bucket, Key=name)["UploadId"]
    client.upload_part(Bucket=bucket, Key=name, UploadId=upload, PartNumber=1, Body=b"x" * 64)
    store.put("blobs/" + uuid.uuid4().hex, b"an object")
    print("SCRATCH", app_config.blob_url, conninfo_to_dict(app_config.database_url)["dbname"])
    listed = client.list_multipart_uploads(Bucket=bucket, Prefix=store.location.key(""))
    assert name in [u["Key"] for u in listed.get("Uploads", ())]
'''


def _uploads(client: Any, bucket: str, prefix: str) -> list[str]:
    listed = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return sorted(upload["Key"] for upload in listed.get("Uploads", ()))


def _objects(client: Any, bucket: str, prefix: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", ()))


def test_a_run_s_end_aborts_the_uploads_left_under_its_scratch_prefix_and_nothing_else(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, tmp_path: Path
) -> None:
    testing, prefix = f"rt56t_{os.getpid()}", f"rt56-{os.getpid()}"
    project, env = remote_testing_run(
        tmp_path, postgres_engine, s3_engine, (testing, prefix), _INNER
    )
    client, bucket = s3_engine.client(), s3_engine.bucket
    # Beside the runs: a killed run's database and prefix (named as a run's), and
    # production's prefix next to testing's, each with an object and an unfinished upload.
    killed = f"{prefix}/pytest_1_dead"
    beside = [f"{killed}/blobs/{'a' * 32}", f"{prefix}-production/blobs/{'b' * 32}"]
    kept = []
    for key in beside:
        client.put_object(Bucket=bucket, Key=key, Body=b"kept")
        upload = key[:-1] + "c"
        client.create_multipart_upload(Bucket=bucket, Key=upload)
        kept.append(upload)
    with postgres_engine.connect() as conn:
        conn.execute(f'CREATE DATABASE "{testing}_pytest_1_dead"')
    try:
        (result,) = pytest_side_by_side(project, env, ["-p", "no:randomly", "-s"])
        output = "\n".join(result.outlines + result.errlines)
        assert result.ret == 0 and "2 passed" in result.outlines[-1], output
        # The run's own scratch database and prefix, where the tests left their uploads.
        ((blob, database),) = set(re.findall(r"SCRATCH (\S+) (\S+)", output))
        assert blob.startswith(f"s3://{bucket}/{prefix}/pytest_"), blob
        assert database.startswith(f"{testing}_pytest_"), database
        # Before: the two uploads the tests began were left under the run's prefix,
        # invisible to every listing of objects, and nothing would ever abort them.
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
