"""A test run's scratch prefix on an object store, owned end to end (branch guard67): see
docs/explanation/attacks/layer-3-sandbox.md.

What broke (three rows of one class: the run's end deleted what it did not own, or its
claim was not exclusive):

- another program's objects, written into a run's scratch prefix while the run went on,
  were deleted at its end as the run's own. Every object the app writes in a run's scratch
  prefix now carries the run's mark (a MAC of its name under the run's token: in a blob's
  name, else in its metadata), and the end deletes only those, naming what it left;
- on a store that takes ``If-None-Match: *`` without honouring it, a second run of the same
  suffix replaced the first's marker and went on, and its end emptied the first's prefix.
  The claim now reads the marker before writing it and reads it back after; a run whose
  writes straddle both reads deletes only its own objects at its end;
- a process of another profile whose blob_url named a prefix inside a run's scratch prefix
  opened it (listing that prefix alone) and stamped it. Its open is now refused, naming the
  run and blob_url.

All real: the suite's ``weed`` (through a proxy that drops ``If-None-Match`` where a store
that ignores it is needed), its cluster, and a pytest subprocess with the app's plugin.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from engines import PostgresEngine, S3Engine, new_blob_url, remote_testing_run, scratch
from side_by_side import pytest_side_by_side
from test_redteam_s51_remote import _Forward, _Refusing, proxy_to, serving

from app.remote.errors import InsideTestRunError
from app.remote.objects import RUN_MARKER, STAMP_NAME, ObjectStore
from app.sandbox import RUN_MARK_ENV
from app.testing import fixtures

_OTHER = {
    "run": "_pytest_1_abcd",
    "token": "0" * 32,
    "host": "ci-other",
    "pid": 1,
    "started": "2026-12-06T20:00:00+00:00",
    "database": "other/testing_pytest_1_abcd",
}
_OTHER_NAMED = (
    "run _pytest_1_abcd of pid 1 on host ci-other, started 2026-12-06T20:00:00+00:00, whose "
    "scratch database is other/testing_pytest_1_abcd"
)


class _Unconditional(_Forward):
    """Forwards every request to ``weed``, but writes an object whose PUT asks
    ``If-None-Match: *`` unconditionally, as an S3 imitation older than conditional writes
    does (its own request, signed by the engine's keys: the header is signed in the
    client's). With ``server.after_marker``, another run's marker is written over a marker
    right after it, as that run's write landing a moment later would."""

    def do_PUT(self) -> None:
        if "If-None-Match" not in self.headers:
            self._any()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        assert "aws-chunked" not in self.headers.get("Content-Encoding", ""), self.headers
        bucket, _, key = unquote(urlsplit(self.path).path).lstrip("/").partition("/")
        metadata = {
            name[len("x-amz-meta-") :]: value
            for name, value in self.headers.items()
            if name.lower().startswith("x-amz-meta-")
        }
        client = self.server.engine.client()  # type: ignore[attr-defined]
        answer = client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)
        if key.endswith(RUN_MARKER) and self.server.after_marker:  # type: ignore[attr-defined]
            client.put_object(Bucket=bucket, Key=key, Body=json.dumps(_OTHER).encode())
        self.server.refusals += 1
        self.send_response(200)
        self.send_header("ETag", answer["ETag"])
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def _ignoring_if_none_match(s3_engine: S3Engine, *, after_marker: bool) -> Iterator[_Refusing]:
    proxy = proxy_to(s3_engine, _Unconditional, engine=s3_engine, after_marker=after_marker)
    with serving(proxy):
        yield proxy


def _store(blob_url: str, endpoint: str, s3_engine: S3Engine) -> ObjectStore:
    return s3_engine.objects(blob_url, endpoint_url=endpoint)


def _names(s3_engine: S3Engine, store: ObjectStore) -> list[str]:
    base = store.location.key("")
    listed = s3_engine.client().list_objects_v2(Bucket=s3_engine.bucket, Prefix=base)
    return sorted(item["Key"][len(base) :] for item in listed.get("Contents", ()))


def test_a_claim_on_a_store_that_ignores_if_none_match_is_read_before_and_after(
    s3_engine: S3Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = "a" * 32, "b" * 32
    with _ignoring_if_none_match(s3_engine, after_marker=False) as proxy:
        store = _store(new_blob_url(s3_engine), proxy.url, s3_engine)
        monkeypatch.setenv(RUN_MARK_ENV, first)
        assert fixtures._claim_prefix(store.where, "_pytest_1_abcd", "db-first", store) == ""
        # A second run of the same suffix, a moment later. Before: its create, not
        # honoured, replaced the first's marker, and it went on (its end then emptied the
        # first's prefix under its tests).
        monkeypatch.setenv(RUN_MARK_ENV, second)
        refused = fixtures._claim_prefix(store.where, "_pytest_1_abcd", "db-second", store)
        assert proxy.refusals == 1  # the first's create went through the proxy's own PUT
    assert refused.startswith(
        f"app: the run's scratch prefix {store.where} is another test run's: its marker "
        f"{RUN_MARKER} names run _pytest_1_abcd of pid {os.getpid()} on host "
    )
    assert "whose scratch database is db-first. The two runs drew the same scratch suffix" in (
        refused
    )
    assert refused.endswith("Nothing was created; run again (a new suffix is drawn)")
    with store.get(RUN_MARKER) as stream:
        assert json.loads(stream.read())["token"] == first


def test_a_claim_whose_marker_another_run_s_replaced_at_once_is_refused_naming_it(
    s3_engine: S3Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUN_MARK_ENV, "c" * 32)
    with _ignoring_if_none_match(s3_engine, after_marker=True) as proxy:
        store = _store(new_blob_url(s3_engine), proxy.url, s3_engine)
        # Before: its create answered 200, and it went on, in the other run's prefix.
        refused = fixtures._claim_prefix(store.where, "_pytest_1_abcd", "db", store)
    assert refused == (
        f"app: the run's scratch prefix {store.where} is another test run's: its marker "
        f"{RUN_MARKER} names {_OTHER_NAMED}. The two runs drew the same scratch suffix "
        "(_pytest_1_abcd: a pid and 16 random bits, which two CI containers whose pytest is "
        "pid 1 draw alike once in 65,536) with one bucket and prefix in their testing "
        "profiles, and this run's end would have emptied that run's prefix under its tests. "
        "Nothing was created; run again (a new suffix is drawn)"
    )
    assert _names(s3_engine, store) == [RUN_MARKER]  # the other's, left


def test_a_run_s_end_deletes_only_what_the_run_wrote_where_another_run_wrote_too(
    s3_engine: S3Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs whose writes straddled both reads of the claim (or a store that lost the
    # first's marker): each wrote in one prefix; the second's marker is the one there.
    blob_url = new_blob_url(s3_engine)
    monkeypatch.setenv(RUN_MARK_ENV, "d" * 32)
    theirs = _store(blob_url, s3_engine.endpoint_url, s3_engine)
    monkeypatch.setenv(RUN_MARK_ENV, "e" * 32)
    ours = _store(blob_url, s3_engine.endpoint_url, s3_engine)
    assert ours.create_once(RUN_MARKER, fixtures._own_mark("_pytest_1_abcd", "db"))
    assert theirs.open("testing")["profile"] == "testing"  # the first's stamp
    their_blob = theirs.new_blob_name()
    theirs.put(their_blob, b"the first run's upload")
    theirs.put("notes/first.txt", b"the first run's")
    ours.put(ours.new_blob_name(), b"the second run's upload")
    ours.put("notes/second.txt", b"the second run's")
    with pytest.raises(fixtures._Left) as left:
        # Before: every object under the prefix deleted, the first run's with the rest.
        fixtures._empty_owned(ours, "_pytest_1_abcd")
    assert left.value.what == "the objects it did not write"
    assert left.value.reason == (
        f"left as they are: {STAMP_NAME}, {their_blob}, notes/first.txt carry no mark of this "
        "run, which every object the app writes in a run's scratch prefix carries (in its "
        "blob name or its metadata): a program other than the app (a test's own S3 client "
        "among them), a child of this run given an environment without PYTEST_APP_RUN_MARK, "
        "or a process of another run wrote them there while the run went on. The run's own "
        f"objects are deleted; its marker {RUN_MARKER} is left with them. See whose they are "
        "before clearing them by hand; a test that writes there itself deletes what it wrote "
        "before it ends, or writes it through the app's ObjectStore, which marks it; a child "
        "given an environment of its own is given PYTEST_APP_RUN_MARK in it, and what it "
        "writes through the app is marked; point any other program's bucket and prefix away "
        "from testing's blob_url, under which each test run draws its scratch prefix"
    )
    kept = sorted([RUN_MARKER, STAMP_NAME, their_blob, "notes/first.txt"])
    assert _names(s3_engine, ours) == kept
    theirs.delete(*_names(s3_engine, ours))


def test_another_profile_s_open_below_a_run_s_scratch_prefix_is_refused_naming_the_run(
    s3_engine: S3Engine,
) -> None:
    base = new_blob_url(s3_engine)
    run = f"{base}/pytest_1_abcd"
    client, key = s3_engine.client(), run.removeprefix(f"s3://{s3_engine.bucket}/")
    client.put_object(Bucket=s3_engine.bucket, Key=f"{key}/{RUN_MARKER}", Body=json.dumps(_OTHER))
    below = _store(f"{run}/replica{scratch()}", s3_engine.endpoint_url, s3_engine)
    with pytest.raises(InsideTestRunError) as refused:
        # Before: it listed its own prefix alone, found it empty and stamped it.
        below.open("production")
    assert str(refused.value) == (
        f"profile 'production': object prefix {below.where} lies inside a test run's scratch "
        f"prefix, s3://{s3_engine.bucket}/{key} at {below.location.endpoint} (its marker "
        f"{RUN_MARKER} names {_OTHER_NAMED}): that run's tests write there, and its end "
        "empties what it wrote; refusing to open it, and nothing was written. Point "
        "blob_url of profile 'production' at a prefix outside testing's scratch prefixes "
        "(outside testing's blob_url, under which each test run draws its own)"
    )
    assert refused.value.code == "inside_test_run"
    assert _names(s3_engine, below) == []
    # Held: a segment named as a run's with no marker is no run's (one GET, then stamped).
    client.delete_object(Bucket=s3_engine.bucket, Key=f"{key}/{RUN_MARKER}")
    assert below.open("production")["profile"] == "production"
    below.delete(STAMP_NAME)


# The inner run (row 1): its test writes through the app (the prefix's stamp, an upload
# named as the app names them, an object put by name; no database, which would cost the
# run's start its schema and change nothing here), and another program, not the app, writes
# two objects into the same scratch prefix while the run goes on: one named as the app
# names uploads, one elsewhere.
_INNER = """
import boto3
from app.config import load
from app.remote.objects import ObjectStore

def test_writes_beside_another_program():
    config = load("testing")
    store = ObjectStore(config.blob_url, config.s3_endpoint_url,
                        config.s3_access_key_id, config.s3_secret_access_key)
    store.open("testing")
    store.put(store.new_blob_name(), b"the run's upload")
    store.put("probe/run.txt", b"the run's, by name")
    other = boto3.client(
        "s3", endpoint_url=config.s3_endpoint_url, region_name="us-east-1",
        aws_access_key_id=config.s3_access_key_id,
        aws_secret_access_key=config.s3_secret_access_key,
    )
    base = store.location.key("")
    for name in ("blobs/" + "cd" * 16, "backup/notes.txt"):
        other.put_object(Bucket=store.location.bucket, Key=base + name, Body=b"another's")
"""


def test_a_run_s_end_leaves_another_program_s_objects_and_names_them(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, tmp_path: Path
) -> None:
    testing, prefix = f"owned_{os.getpid()}", f"owned-{os.getpid()}"
    project, env = remote_testing_run(
        tmp_path, postgres_engine, s3_engine, (testing, prefix), _INNER
    )
    (result,) = pytest_side_by_side(project, env, ["-p", "no:randomly"])
    # Before: it passed, and its end deleted both of the other program's objects.
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            (
                "*app: the run's tests are done, but it could not remove the objects it did "
                f"not write under its scratch prefix s3://{s3_engine.bucket}/{prefix}/pytest_* "
                f"(left as they are: backup/notes.txt, blobs/{'cd' * 16} carry no mark of this "
                "run, *"
            )
        ]
    )
    listed = s3_engine.client().list_objects_v2(Bucket=s3_engine.bucket, Prefix=f"{prefix}/")
    keys = sorted(item["Key"] for item in listed.get("Contents", ()))
    assert [key.split("/", 2)[2] for key in keys] == [
        RUN_MARKER, "backup/notes.txt", f"blobs/{'cd' * 16}"
    ]  # fmt: skip
    s3_engine.client().delete_objects(
        Bucket=s3_engine.bucket, Delete={"Objects": [{"Key": key} for key in keys]}
    )
