"""The object store against a real S3 server (SeaweedFS), and visibility through the database."""

from __future__ import annotations

import hashlib
import os
import threading

import psycopg
import pytest
from engines import S3Engine, scratch

from app.errors import InvalidSettingError, UploadTooLargeError
from app.remote import pg
from app.remote.errors import (
    ObjectMissingError,
    ObjectStoreUnavailableError,
    RemoteStampMismatchError,
    UnstampedNotEmptyError,
)
from app.remote.objects import ObjectStore, parse_blob_url, prefixes_overlap


@pytest.fixture
def store(s3_engine: S3Engine, blob_url: str) -> ObjectStore:
    return s3_engine.objects(blob_url)


def _bucket_keys(s3_engine: S3Engine, prefix: str) -> list[str]:
    answer = s3_engine.client().list_objects_v2(Bucket=s3_engine.bucket, Prefix=prefix)
    return [item["Key"] for item in answer.get("Contents", ())]


def test_put_get_range_list_and_delete(store: ObjectStore) -> None:
    data = os.urandom(300_000)
    result = store.put("blobs/a", data)
    assert (result.size, result.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    with store.get("blobs/a") as stream:
        assert (stream.size, stream.length) == (len(data), len(data))
        assert stream.read() == data
    with store.get("blobs/a", 1000, 1999) as stream:
        assert (stream.size, stream.length) == (len(data), 1000)
        assert stream.read() == data[1000:2000]
    with store.get("blobs/a", start=len(data) - 10) as stream:
        assert stream.read() == data[-10:]
    store.put("blobs/b", iter([b"x", b"yz"]))
    store.put("other", b"")
    assert [(info.name, info.size) for info in store.objects()] == [
        ("blobs/a", len(data)),
        ("blobs/b", 3),
        ("other", 0),
    ]
    assert [info.name for info in store.objects("blobs/")] == ["blobs/a", "blobs/b"]
    store.delete("blobs/a", "blobs/missing")
    assert [info.name for info in store.objects()] == ["blobs/b", "other"]
    with pytest.raises(ObjectMissingError, match="app data check"):
        store.get("blobs/a")


def test_a_large_upload_is_streamed_in_parts(s3_engine: S3Engine, blob_url: str) -> None:
    store = ObjectStore(
        blob_url,
        s3_engine.endpoint_url,
        s3_engine.access_key_id,
        s3_engine.secret_access_key,
        part_bytes=5 * 1024 * 1024,  # S3's smallest part
    )
    chunks = [os.urandom(1024 * 1024) for _ in range(12)]
    result = store.put(store.new_blob_name(), iter(chunks))
    assert result.size == 12 * 1024 * 1024
    head = s3_engine.client().head_object(
        Bucket=s3_engine.bucket, Key=store.location.key(result.name)
    )
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    with store.get(result.name) as stream:
        assert hashlib.sha256(b"".join(stream)).hexdigest() == result.sha256


def test_an_upload_past_its_limit_keeps_nothing(s3_engine: S3Engine, store: ObjectStore) -> None:
    chunks = (b"x" * 1024 * 1024 for _ in range(20))
    with pytest.raises(UploadTooLargeError):
        store.put("blobs/big", chunks, max_bytes=10 * 1024 * 1024)
    assert list(store.objects()) == []
    uploads = s3_engine.client().list_multipart_uploads(Bucket=s3_engine.bucket)
    assert [u for u in uploads.get("Uploads", ()) if u["Key"].endswith("blobs/big")] == []


def test_the_prefix_is_stamped_and_another_profile_is_refused(store: ObjectStore) -> None:
    assert store.open("production")["profile"] == "production"
    assert store.open("production")["profile"] == "production"
    with pytest.raises(RemoteStampMismatchError) as caught:
        store.open("testing", protected=lambda stamped: stamped == "production")
    assert "app data restamp --profile testing --from production (add --yes-i-mean-it" in str(
        caught.value
    )
    assert store.restamp("production", "staging")["restamped_from"] == "production"
    store.open("staging")


def test_of_two_profiles_stamping_an_empty_prefix_at_once_one_wins(
    s3_engine: S3Engine, blob_url: str
) -> None:
    stores = [s3_engine.objects(blob_url) for _ in range(2)]
    outcomes: list[str] = []

    def open_as(store: ObjectStore, profile: str) -> None:
        try:
            outcomes.append(store.open(profile)["profile"])
        except RemoteStampMismatchError as error:
            outcomes.append(f"refused: {error.stamped}")

    threads = [
        threading.Thread(target=open_as, args=(store, profile))
        for store, profile in zip(stores, ("production", "testing"), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winner = stores[0].read_stamp()
    assert winner is not None
    assert sorted(outcomes) == sorted([winner["profile"], f"refused: {winner['profile']}"])


def test_a_prefix_with_other_objects_and_no_stamp_is_refused(store: ObjectStore) -> None:
    store.put("photos/cat.jpg", b"meow")
    with pytest.raises(UnstampedNotEmptyError, match=r"photos/cat\.jpg"):
        store.open("production")
    assert store.read_stamp() is None


def test_wrong_credentials_or_bucket_are_refused_by_name(
    s3_engine: S3Engine, blob_url: str
) -> None:
    wrong = ObjectStore(blob_url, s3_engine.endpoint_url, s3_engine.access_key_id, "wrong")
    with pytest.raises(ObjectStoreUnavailableError, match="s3_secret_access_key") as caught:
        wrong.open("production")
    assert "wrong" not in str(caught.value)
    nobucket = s3_engine.objects(f"s3://no-such-bucket/p{scratch()}")
    with pytest.raises(ObjectStoreUnavailableError, match="no-such-bucket"):
        list(nobucket.objects())


def test_an_upload_is_visible_only_once_its_transaction_commits(
    store: ObjectStore, database_url: str
) -> None:
    # The backend's files table will be its own; this one stands for any row naming a key.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE files (name text PRIMARY KEY, blob text NOT NULL)")
    visible = "SELECT blob FROM files WHERE name = 'notes.txt'"
    with psycopg.connect(database_url) as writer, psycopg.connect(database_url) as reader:
        put = store.put(store.new_blob_name(), b"draft")
        writer.execute("INSERT INTO files VALUES ('notes.txt', %s)", (put.name,))
        assert reader.execute(visible).fetchone() is None
        reader.rollback()
        writer.rollback()  # the request failed: the object is an orphan nobody can reach
        assert reader.execute(visible).fetchone() is None
        reader.rollback()
        assert [o.name for o in store.orphans(set())] == [put.name]

        second = store.put(store.new_blob_name(), b"final")
        with writer.transaction():
            writer.execute("INSERT INTO files VALUES ('notes.txt', %s)", (second.name,))
        (blob,) = reader.execute(visible).fetchone() or (None,)
        with store.get(blob) as stream:
            assert stream.read() == b"final"
        assert [o.name for o in store.orphans({blob})] == [put.name]
        # A young orphan may be an upload whose transaction is still open: `check` keeps it
        # while a replica lives (test_remote_store's test of a young object without a row).


# --- locations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("s3://b/prod", "s3://b/prod/", True),
        ("s3://b/prod", "s3://b/prod/tests", True),
        ("s3://b", "s3://b/anything", True),
        ("s3://b/prod", "s3://b/production", False),
        ("s3://b/prod", "s3://other/prod", False),
    ],
)
def test_prefixes_overlap_by_whole_segments(first: str, second: str, overlap: bool) -> None:
    endpoint = "http://127.0.0.1:8333"
    a, b = parse_blob_url(first, endpoint), parse_blob_url(second, endpoint)
    assert prefixes_overlap(a, b) is overlap
    assert prefixes_overlap(b, a) is overlap


def test_the_same_prefix_on_another_endpoint_is_another_store() -> None:
    a = parse_blob_url("s3://b/p", "http://localhost:8333")
    assert prefixes_overlap(a, parse_blob_url("s3://b/p", "http://127.0.0.1:8333/"))
    assert not prefixes_overlap(a, parse_blob_url("s3://b/p", "https://s3.example"))


@pytest.mark.parametrize("bad", ["b/prefix", "s3:///prefix", "https://b/p", "s3://b/p?x=1"])
def test_a_blob_url_that_is_not_s3_bucket_prefix_is_refused(bad: str) -> None:
    with pytest.raises(InvalidSettingError, match="s3://bucket/prefix"):
        parse_blob_url(bad)


def test_the_stamp_and_the_database_stamp_agree_on_the_profile(
    store: ObjectStore, database_url: str
) -> None:
    assert (
        pg.open_database(database_url, "production").profile == store.open("production")["profile"]
    )
