"""Red team 67 on regress, the latest merges (branch rt-regress67c): see
docs/explanation/attacks/layer-3-sandbox.md.

What broke: in a bucket that keeps versions, a run's end deleted for good every delete
marker of a name the run had written a version of, another program's too. A program that
wrote over the run's object and then deleted its own had its object back, as if it had
never deleted it: its delete marker, which holds no byte of the run's, was taken for the
run's. A marker is the run's now where its name holds no version of another program, or
where the run's end made it itself (the store's answer to its delete names the markers it
made; where it names none, as a proxy here makes it, the current marker of each name the
end deleted, as listed right after).

And a version was judged by whatever metadata a ``HEAD`` with its id answered: a store
that ignores ``versionId`` (or a proxy that drops it) answers with the current version's,
and where a process of the run wrote the name again while the end judged it, another
program's earlier version was taken for the run's and deleted for good. A version is
judged by an answer that names it alone now.

All real: the suite's ``weed``, a bucket that keeps versions, behind a proxy that answers
as a store that ignores ``versionId`` does for the second.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pytest
from engines import S3Engine, new_blob_url
from test_redteam_s51_remote import _Forward, _Refusing, proxy_to, serving

from app.remote.objects import RUN_MARKER, ObjectStore
from app.sandbox import RUN_MARK_ENV
from app.testing import fixtures


def _versioned_store(s3_engine: S3Engine, name: str = "rt67c") -> ObjectStore:
    client, bucket = s3_engine.client(), f"{name}-{os.getpid()}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    blob_url = new_blob_url(s3_engine).replace(f"s3://{s3_engine.bucket}/", f"s3://{bucket}/")
    return s3_engine.objects(blob_url)


def _current(store: ObjectStore, name: str) -> bytes | None:
    client = store._client
    try:
        answer = client.get_object(Bucket=store.location.bucket, Key=store.location.key(name))
    except client.exceptions.NoSuchKey:
        return None
    return bytes(answer["Body"].read())


class _Headed(_Forward):
    """Forwards every request to ``weed``, a ``HEAD``'s answer with the object's length."""

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        if self.command != "HEAD":
            super()._answer(status, headers, data)
            return
        self.send_response(status)  # a HEAD's length is the object's, and no body follows
        for name, value in headers:
            if name.lower() not in {"connection", "transfer-encoding"}:
                self.send_header(name, value)
        self.end_headers()


class _Unnamed(_Headed):
    """Forwards every request to ``weed``, and its answers with the delete markers a
    delete made named nowhere in them, as a store that sends no
    ``DeleteMarkerVersionId`` answers."""

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        if self.command == "POST" and "delete" in self.path:
            data = re.sub(rb"<DeleteMarkerVersionId>[^<]*</DeleteMarkerVersionId>", b"", data)
        super()._answer(status, headers, data)


@contextlib.contextmanager
def _through(s3_engine: S3Engine, handler: type[_Forward] | None) -> Iterator[str]:
    """The URL of `s3_engine`, or of a proxy to it answering with `handler`."""
    if handler is None:
        yield s3_engine.endpoint_url
        return
    with serving(proxy_to(s3_engine, handler)) as proxy:
        yield proxy.url


@pytest.mark.parametrize("answer", ["markers named", "markers unnamed"])
def test_a_run_s_end_leaves_another_program_s_delete_marker_where_it_wrote_too(
    s3_engine: S3Engine, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    monkeypatch.setenv(RUN_MARK_ENV, "e" * 32)
    direct = _versioned_store(s3_engine, f"rt67c-{answer.split()[1]}")
    with _through(s3_engine, _Unnamed if answer == "markers unnamed" else None) as url:
        store = s3_engine.objects(direct.where.partition(" at ")[0], endpoint_url=url)
        _wrote_over_and_deleted(s3_engine, store)


def _wrote_over_and_deleted(s3_engine: S3Engine, store: ObjectStore) -> None:
    assert store.create_once(RUN_MARKER, fixtures._own_mark("_pytest_1_abcd", "db"))
    store.open("testing")
    other = s3_engine.client()
    bucket, key = store.location.bucket, store.location.key
    # The run writes a name; another program writes over it, then deletes its object.
    store.put("shared/deleted.txt", b"the run's")
    other.put_object(Bucket=bucket, Key=key("shared/deleted.txt"), Body=b"another's, deleted")
    other.delete_object(Bucket=bucket, Key=key("shared/deleted.txt"))
    # Another program writes a name first, the run writes over it: the run's end's own
    # delete marker hides the other's version, and is deleted with the run's.
    other.put_object(Bucket=bucket, Key=key("shared/over.txt"), Body=b"another's, kept")
    store.put("shared/over.txt", b"the run's, over it")
    with pytest.raises(fixtures._Left) as left:
        fixtures._empty_owned(store, "_pytest_1_abcd")
    assert left.value.what == "the objects it did not write"
    assert left.value.reason.startswith(
        "left as they are: shared/deleted.txt, shared/over.txt carry no mark of this run"
    )
    # Before: "another's, deleted", its delete marker deleted for good as the run's. And,
    # with the markers unnamed, the end's own without its listing's: "shared/over.txt"
    # hidden behind it.
    assert _current(store, "shared/deleted.txt") is None
    assert _current(store, "shared/over.txt") == b"another's, kept"
    listed = store.every_version()
    assert sorted((v.name, v.deleted) for v in listed) == [
        (RUN_MARKER, False),
        ("shared/deleted.txt", False),
        ("shared/deleted.txt", True),
        ("shared/over.txt", False),
    ]
    mine = [v for v in listed if v.name != RUN_MARKER and not v.deleted]
    assert all(store.mark_of(v.name, v.version_id) == {} for v in mine)


class _IgnoringVersions(_Headed):
    """Forwards every request to ``weed`` but a ``HEAD`` of a version, which it answers as a
    store that ignores ``versionId`` does: with the current version's headers (its own
    version id among them). `server.first` runs before the first such answer."""

    def _any(self) -> None:
        if self.command != "HEAD" or "versionId=" not in self.path:
            super()._any()
            return
        first, self.server.first = self.server.first, lambda: None  # type: ignore[attr-defined]
        first()
        bucket, _, key = unquote(urlsplit(self.path).path).lstrip("/").partition("/")
        answer = self.server.client.head_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
        self.send_response(200)
        for name, value in answer["ResponseMetadata"]["HTTPHeaders"].items():
            if name not in {"connection", "transfer-encoding"}:
                self.send_header(name, value)
        self.end_headers()

    do_HEAD = _any


def test_a_version_is_judged_by_the_metadata_of_that_version_alone(
    s3_engine: S3Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUN_MARK_ENV, "d" * 32)
    direct = _versioned_store(s3_engine, "rt67c-versions")
    other = s3_engine.client()
    bucket, key = direct.location.bucket, direct.location.key
    proxy = _Refusing(s3_engine.endpoint_url, lambda method, path: False, False)
    proxy.RequestHandlerClass = _IgnoringVersions
    # A process of the run writes the name again while the end judges its versions.
    proxy.first = lambda: direct.put("shared/late.txt", b"the run's, late")  # type: ignore[attr-defined]
    proxy.client = other  # type: ignore[attr-defined]
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        store = s3_engine.objects(direct.where.partition(" at ")[0], endpoint_url=proxy.url)
        assert store.create_once(RUN_MARKER, fixtures._own_mark("_pytest_1_abcd", "db"))
        other.put_object(Bucket=bucket, Key=key("shared/late.txt"), Body=b"another's, first")
        store.put("shared/late.txt", b"the run's, over it")
        with pytest.raises(fixtures._Left) as left:
            fixtures._empty_owned(store, "_pytest_1_abcd")
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()
    assert left.value.reason.startswith("left as they are: shared/late.txt carry no mark")
    # Before: the other program's version, answered with the run's late metadata, was
    # taken for the run's and deleted for good.
    kept = [v for v in direct.every_version() if v.name == "shared/late.txt" and not v.deleted]
    bodies = [
        other.get_object(Bucket=bucket, Key=key(v.name), VersionId=v.version_id)["Body"].read()
        for v in kept
    ]
    assert b"another's, first" in bodies
