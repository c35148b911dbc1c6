"""Red team 42 on PostgreSQL and object storage.

All real: the suite's cluster and ``weed``, real commands and ``app serve`` replicas
(tests/replicas.py). What broke:

- ``app status`` on a profile whose object prefix every other command refuses (its stamp
  object deleted, or the store come back without its data) said nothing was wrong: only
  ``app doctor`` named it;
- an upload is streamed to the object store in parts of 8 MiB, and S3 takes at most 10,000
  parts: a file above about 78 GiB, which a ``max_upload_bytes`` of more allowed, would have
  been refused by the store at its 10,001st part; and a ``max_upload_bytes`` above S3's
  largest object (5 TiB) was taken without a word;
- an ``ObjectStore`` a test built on ``s3://<bucket>/production/x<run's suffix>`` passed the
  sandbox (which read the prefix's last segment only) and wrote among production's objects.
"""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import forked_app
import psycopg
import pytest
import test_redteam_s37_remote
from engines import S3Engine
from replicas import Production
from test_redteam_s37_remote import _delete_the_prefixs_stamp, _set_for_database, _stamp_object
from test_redteam_s39_ops import _kept

from app import sandbox
from app.config import S3_MAX_OBJECT_BYTES, load
from app.errors import ConfigError, InvalidSettingError, SandboxViolationError
from app.remote import objects as remote_objects

production = test_redteam_s37_remote.production  # the fixture, as red team 37 made it
MiB = 1024 * 1024


def test_status_names_a_prefix_that_every_other_command_refuses(
    production: Production, s3_engine: S3Engine
) -> None:
    replica = production.start()
    _kept(production, replica)
    assert replica.stop() == 0, replica.output
    healthy = production.run("status", "--json")
    assert json.loads(healthy.stdout)["objects_error"] is None, healthy.stdout
    # Before: `app status` showed the stamp and "held by: nobody", and nothing else, while
    # every command and `app serve` was refused and `app doctor` named the prefix.
    _delete_the_prefixs_stamp(production, s3_engine)
    _status_names(production, "its stamp object .app-profile.json is gone", as_json=False)
    client, bucket, key = _stamp_object(production, s3_engine)
    for item in client.list_objects_v2(Bucket=bucket, Prefix=key.rpartition("/")[0])["Contents"]:
        client.delete_object(Bucket=bucket, Key=item["Key"])  # the store came back empty
    _status_names(production, "is empty")


def _status_names(production: Production, lost: str, *, as_json: bool = True) -> None:
    status = production.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    said = " ".join(status.stdout.split())
    assert "objects: profile 'production':" in said, said
    assert lost in said and "nothing was changed" in said, said
    assert "app data restamp --profile production --from production" in said
    if as_json:
        report = production.run("status", "--json")
        assert report.returncode == 0, report.stdout + report.stderr
        assert lost in json.loads(report.stdout)["objects_error"]


@pytest.mark.parametrize("length", [None, 1, 78 * 2**30, 80 * 2**30, 2**40, S3_MAX_OBJECT_BYTES])
def test_the_part_size_fits_any_upload_the_store_can_take_in_s3s_parts(length: int | None) -> None:
    # Before: every upload went in parts of 8 MiB, 10,000 of which hold 78.1 GiB.
    size = remote_objects.part_size(length)
    assert remote_objects.S3_MIN_PART_BYTES <= size <= remote_objects.S3_MAX_PART_BYTES
    assert size % MiB == 0
    assert size == 8 * MiB or (length is not None and length > 8 * MiB * 10_000)
    if length is not None:
        assert -(-length // size) <= remote_objects.S3_MAX_PARTS


def test_a_streamed_upload_is_sent_in_parts_sized_for_its_limit(
    s3_engine: S3Engine, blob_url: str
) -> None:
    # A real multipart upload to the store with a part count forced small: 12 MiB in at most
    # two parts is two of 6 MiB, where the 5 MiB asked for would have made three.
    store = s3_engine.objects(blob_url, part_bytes=5 * MiB, max_parts=2)
    data = bytes(range(256)) * (12 * MiB // 256)
    chunks = (data[at : at + MiB] for at in range(0, len(data), MiB))  # a stream, no length
    for name, length, parts, part in (("sized", len(data), 2, 6), ("unsized", None, 3, 5)):
        store.put(name, chunks if name == "sized" else iter([data]), length=length)
        bucket, key = store.location.bucket, store.location.key(name)
        head = s3_engine.client().head_object(Bucket=bucket, Key=key, PartNumber=1)
        assert head["PartsCount"] == parts, head
        assert head["ContentLength"] == part * MiB
        assert store.get(name).read() == data


def test_a_max_upload_bytes_above_s3s_largest_object_is_refused_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("APP_") and n != "APP_SETTINGS_DIR"]:
        monkeypatch.delenv(name)
    (tmp_path / "settings.toml").write_text(
        '[testing]\ndatabase_url = "postgresql://app@db.internal:5432/app_testing"\n'
        'blob_url = "s3://app-data/testing"\ns3_endpoint_url = "http://127.0.0.1:8333"\n'
        '[development]\ndata_root = "dev"\n'
    )
    (tmp_path / ".secrets.toml").write_text(
        '[testing]\ns3_access_key_id = "k"\ns3_secret_access_key = "s"\n'
    )
    monkeypatch.setenv("APP_SETTINGS_DIR", str(tmp_path))
    monkeypatch.setenv("APP_MAX_UPLOAD_BYTES", str(S3_MAX_OBJECT_BYTES))
    assert load("testing").max_upload_bytes == S3_MAX_OBJECT_BYTES
    # Before: taken, and a file past 5 TiB refused by the store once every byte was sent.
    monkeypatch.setenv("APP_MAX_UPLOAD_BYTES", str(S3_MAX_OBJECT_BYTES + 1))
    with pytest.raises(ConfigError) as refused:
        load("testing")
    message = str(refused.value)
    assert "max_upload_bytes" in message and "APP_MAX_UPLOAD_BYTES" in message
    assert "largest object S3 stores" in message and "5 TiB" in message
    assert f"Set max_upload_bytes (APP_MAX_UPLOAD_BYTES) to {5 * 2**40} or less" in message


def test_doctor_names_a_database_that_makes_every_transaction_read_only(
    production: Production,
) -> None:
    # A failover's old primary kept read-only, or an operator's freeze: every change and
    # every replica's start is refused (clearly, 69), and `GET /ready` says that `app
    # doctor` says more. Before: doctor, which sets the same for itself, said "ok".
    assert production.run("data", "check").returncode == 0  # creates and stamps it
    _set_for_database(production.database_url, "default_transaction_read_only", "on")
    doctor = production.run("doctor")
    said = " ".join((doctor.stdout + doctor.stderr).split())
    assert doctor.returncode == 69, said
    assert "writes: refused: every transaction is read-only" in said
    assert "read_only is on for its connections (set by the database's settings)" in said
    assert "RESET default_transaction_read_only" in said and "nothing was changed" in said
    # The admin connection is the role in that database too, so it inherits what an earlier
    # call set there (a statement_timeout of 1 ms cancels its own RESET under load): it
    # sets its own session's values first, as options at connect time.
    with psycopg.connect(
        production.database_url,
        autocommit=True,
        options="-c statement_timeout=0 -c default_transaction_read_only=off",
    ) as admin:
        admin.execute(f'ALTER DATABASE "{_dbname(production)}" RESET default_transaction_read_only')
    doctor = production.run("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "writes:" not in doctor.stdout


def _dbname(production: Production) -> str:
    return production.database_url.rpartition("/")[2]


def test_a_schema_of_its_own_in_productions_database_is_refused_as_no_database_of_its_own(
    production: Production,
) -> None:
    # Staging given production's database with a search_path of its own schema: refused
    # (rightly: the app's tables are production's), but only told to put production's schema
    # on the path, which hands staging production's rows.
    assert production.run("data", "check").returncode == 0  # creates and stamps it
    with psycopg.connect(production.database_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA staging")
    scratch = production.blob_url.rpartition("_pytest_")[2]
    env = {
        **production.env,
        "APP_DATABASE_URL": production.database_url + "?options=-c%20search_path%3Dstaging",
        "APP_BLOB_URL": production.blob_url.replace(f"_pytest_{scratch}", f"-s_pytest_{scratch}"),
    }
    for args in (["data", "check"], ["sessions", "list"]):
        refused = forked_app.run(env, args)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 78, said
        assert "in schema public, which this connection's search_path ('staging')" in said
        assert "If schema staging is meant for another profile, that does not separate them" in said
        assert "Point that profile's database_url at a new database instead" in said
    with psycopg.connect(production.database_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'"
        ).fetchone() == (0,)


_FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def test_a_clock_far_from_the_stores_is_named_as_the_clock_not_the_credentials(
    production: Production,
) -> None:
    if not _FAKETIME.exists():
        pytest.skip(f"needs libfaketime ({_FAKETIME}: Debian's faketime package)")
    assert production.run("data", "check").returncode == 0  # creates and stamps it
    # This machine's clock two hours ahead (libfaketime), its monotonic clock left alone.
    ahead = {
        **production.env,
        "LD_PRELOAD": str(_FAKETIME),
        "FAKETIME": "+2h",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    # Before: a replica's start (and every command) was refused as `RequestTimeTooSkewed
    # ... Check s3_endpoint_url, blob_url and the credentials`; doctor's HEAD of the bucket,
    # a bare 403, said "the credentials may not use bucket".
    log = production.tmp_path / "ahead.log"
    replica = forked_app.serve(ahead, log, ["serve", "--port", "0"])
    assert replica.wait(timeout=120) == 69, log.read_text()
    doctor = forked_app.run(ahead, ["doctor"])
    for output in (log.read_text(), doctor.stdout + doctor.stderr):
        said = " ".join(output.split())
        _names_the_clock(said)
        assert "may not use" not in said and "the credentials s3_access_key_id" not in said
    assert doctor.returncode == 69


def _names_the_clock(message: str) -> None:
    assert "refused the request as signed at a time too far from its own clock" in message
    assert "this machine's clock says" in message and "the store's says" in message
    assert "min" in message and "this machine ahead of the store" in message
    assert "set the wrong clock right" in message and "nothing was changed" in message


def _for_the_role_in_the_database(production: Production, statement: str) -> None:
    # The admin connection is the role in that database too, so it inherits what an earlier
    # call set there (a statement_timeout of 1 ms cancels its own RESET under load): it
    # sets its own session's values first, as options at connect time.
    with psycopg.connect(
        production.database_url,
        autocommit=True,
        options="-c statement_timeout=0 -c default_transaction_read_only=off",
    ) as admin:
        admin.execute(f'ALTER ROLE current_user IN DATABASE "{_dbname(production)}" {statement}')


def test_settings_of_the_role_in_the_database_are_named_where_they_are_set(
    production: Production,
) -> None:
    assert production.run("data", "check").returncode == 0  # creates and stamps it
    db = _dbname(production)
    # A statement_timeout of a millisecond for the app's role in this database only (source
    # 'database user'). Before: the remedy named ALTER DATABASE and ALTER ROLE, neither of
    # which undoes it, and doctor said "cannot connect ... Check that PostgreSQL runs".
    _for_the_role_in_the_database(production, "SET statement_timeout = 1")
    refused = production.run("sessions", "list")
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 69, said
    assert "(SQLSTATE 57014); nothing was changed" in said
    assert f"ALTER ROLE <role> IN DATABASE {db} SET statement_timeout = ..." in said
    doctor = production.run("doctor")
    said = " ".join((doctor.stdout + doctor.stderr).split())
    assert doctor.returncode == 69, said
    assert "connected, then refused the app's settings" in said
    assert "cannot connect" not in said and "Check that PostgreSQL runs" not in said
    _for_the_role_in_the_database(production, "RESET statement_timeout")
    # The same for default_transaction_read_only.
    _for_the_role_in_the_database(production, "SET default_transaction_read_only = on")
    refused = production.run("data", "empty-trash", "--yes-i-mean-it")
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 69, said
    assert f"`ALTER ROLE <role> IN DATABASE {db} RESET default_transaction_read_only`" in said
    doctor = production.run("doctor")
    said = " ".join((doctor.stdout + doctor.stderr).split())
    assert "(set by the role's settings in this database)" in said
    _for_the_role_in_the_database(production, "RESET default_transaction_read_only")
    assert production.run("data", "empty-trash", "--yes-i-mean-it").returncode == 0


@pytest.mark.parametrize("written", ["s3://b/prod/\n", "s3://b/pro\td", "s3://b/prod\x00x"])
def test_a_prefix_with_a_control_character_is_refused_as_a_setting(written: str) -> None:
    # Before: a tab or a line break was dropped by the URL's reading (`pro\td` was `prod`,
    # production's), and a NUL was a bare InvalidRequest from the store at the first open.
    with pytest.raises(InvalidSettingError) as refused:
        remote_objects.parse_blob_url(written)
    message = refused.value.message
    assert "blob_url" in message and "has a control character" in message
    assert "the prefix it names is not the one written; remove it" in message


def test_spellings_of_a_prefix_are_one_prefix_where_the_store_takes_them_for_one(
    s3_engine: S3Engine, blob_url: str
) -> None:
    endpoint = s3_engine.endpoint_url

    def overlap(first: str, second: str) -> bool:
        return remote_objects.prefixes_overlap(
            remote_objects.parse_blob_url(first, endpoint),
            remote_objects.parse_blob_url(second, endpoint),
        )

    # With a trailing slash and without, doubled slashes: one prefix (held).
    assert overlap("s3://b/prod/", "s3://b/prod")
    assert overlap("s3://b//prod//x", "s3://b/prod/x/")
    # Percent-encoding and unicode are taken as written, by the overlap check and by the
    # store alike (a key is bytes to it): `prod%2Fx` is not `prod/x`, NFD `café` not NFC.
    client = s3_engine.client()
    bucket, _, prefix = blob_url.removeprefix("s3://").partition("/")
    for written, other in (
        ("p%2Fx", "p/x"),
        ("q%20x", "q x"),
        ("r+x", "r x"),
        (unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")),
    ):
        assert not overlap(f"s3://b/{written}", f"s3://b/{other}")
        client.put_object(Bucket=bucket, Key=f"{prefix}/{written}/k", Body=b"one")
        with pytest.raises(client.exceptions.NoSuchKey):
            client.get_object(Bucket=bucket, Key=f"{prefix}/{other}/k")
        assert client.get_object(Bucket=bucket, Key=f"{prefix}/{written}/k")["Body"].read()


def test_a_bucket_with_object_lock_takes_uploads_and_keeps_deleted_versions(
    s3_engine: S3Engine, blob_url: str
) -> None:
    # Held: a bucket with object lock (versioning on, a default retention in compliance
    # mode, as a backup policy sets one). Its puts need a checksum, which boto3 sends; a
    # delete leaves a delete marker, the retained version kept, and the app sees it gone.
    client = s3_engine.client()
    bucket = f"locked-{os.getpid()}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    prefix = blob_url.removeprefix("s3://").partition("/")[2]
    store = s3_engine.objects(f"s3://{bucket}/{prefix}", part_bytes=5 * MiB)
    assert store.bucket_versioning() == "Enabled"
    small, large = store.new_blob_name(), store.new_blob_name()
    store.put(small, b"small")
    store.put(large, iter([b"l" * MiB] * 11), length=11 * MiB)  # in parts
    assert store.get(small).read() == b"small"
    assert len(store.get(large).read()) == 11 * MiB
    store.delete(small, large)
    assert not store.exists(small) and not store.exists(large)
    kept = client.list_object_versions(Bucket=bucket, Prefix=prefix).get("Versions", [])
    assert {version["Key"].rpartition("/")[2] for version in kept} == {
        small.rpartition("/")[2],
        large.rpartition("/")[2],
    }


def test_a_prefix_with_the_runs_suffix_inside_another_profiles_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Red team 42's *not stopped* row: the sandbox took any prefix whose last segment ends
    # with the run's suffix for the run's, and `s3://<bucket>/production/x<suffix>` let a
    # test write objects among production's. Now a prefix in, or holding, a prefix the
    # settings give another profile is refused, whatever its last segment.
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(
        '[production]\ndatabase_url = "postgresql://app@db.invalid/app"\n'
        'blob_url = "s3://app-data/production"\ns3_endpoint_url = "http://127.0.0.1:9"\n'
    )
    monkeypatch.setenv("APP_SETTINGS_DIR", str(settings))
    suffix = sandbox.current_run().scratch
    keys = ("key", "secret")
    for nested in (f"s3://app-data/production/x{suffix}", f"s3://app-data/production/a/b{suffix}"):
        with pytest.raises(SandboxViolationError) as refused:
            remote_objects.ObjectStore(nested, "http://127.0.0.1:9", *keys)
        said = str(refused.value)
        assert f"opening object prefix {nested}, which lies in or holds the prefix" in said
        assert "of profile 'production', s3://app-data/production (from " in said
        assert "settings.toml" in said
        assert "app.sandbox.scratch_blob_url(" in said
    # Held: the scratch prefix beside production's, and the same names on another store.
    remote_objects.ObjectStore(f"s3://app-data/production{suffix}", "http://127.0.0.1:9", *keys)
    remote_objects.ObjectStore(f"s3://app-data/production/x{suffix}", "http://127.0.0.1:10", *keys)
