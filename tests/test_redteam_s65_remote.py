"""Red team 65 on PostgreSQL and object storage.

What broke:

- An upload whose body was changed on the way to the object store (one byte, its length
  kept: a faulty gateway, proxy or NIC offload), in a process whose S3 client computes
  checksums only where an operation requires one (``AWS_REQUEST_CHECKSUM_CALCULATION=
  when_required``, or ``request_checksum_calculation`` in the AWS config file: a common
  setting for stores other than AWS). The client sent no checksum, SeaweedFS kept the bytes
  it received (it did not check the signed payload hash either), the HEAD after the write
  found the right size, and the upload was acknowledged: its bytes were lost, replaced by
  others; the same of a part of a multipart upload. Every upload now asks for a CRC32 by
  name (each part's too), which the client sends whatever its settings say and the store
  checks.
- A multipart upload's part that the store (or a proxy in front of it) answered as kept and
  did not keep: the completion was refused (``InvalidPart``) and nothing saved, but the
  refusal told to check ``s3_endpoint_url``, ``blob_url`` and the credentials, which had
  reached the store. It now names the store's failure.

All real: the suite's cluster and ``weed``, behind an HTTP proxy of the test's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator

import psycopg
import pytest
from engines import S3Engine
from test_redteam_s51_remote import _Forward, _Refusing, proxy_to, serving

from app.remote import pg
from app.remote.errors import ObjectStoreUnavailableError
from app.remote.objects import S3_MIN_PART_BYTES
from app.remote.store import RemoteStore


class _Changing(_Forward):
    """Forwards every request to ``weed``, one byte of an object's upload under ``blobs/``
    changed on the way (its length kept)."""

    def do_PUT(self) -> None:
        if "/blobs/" not in self.path:
            self._any()
            return
        body = bytearray(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        at = body.find(b"acknowledged")
        if at >= 0:  # (a later part has none)
            body[at] ^= 0x20  # "Acknowledged"
            self.server.refusals += 1
        del self.headers["Expect"]  # answered here already
        self._answer(*self._forwarded(bytes(body)))

    def do_HEAD(self) -> None:
        status, headers, _ = self._forwarded(b"")
        self._answer_head(status, headers)


class _Swallowing(_Changing):
    """Answers the upload of a multipart upload's second part 200 itself, with the ETag of
    its bytes, having sent on nothing; forwards every other request to ``weed``."""

    def do_PUT(self) -> None:
        if "partNumber=2&" not in self.path and not self.path.endswith("partNumber=2"):
            self._any()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.refusals += 1
        self.send_response(200)
        self.send_header("ETag", f'"{hashlib.md5(body).hexdigest()}"')
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def _changing(s3_engine: S3Engine, handler: type[_Forward] = _Changing) -> Iterator[_Refusing]:
    with serving(proxy_to(s3_engine, handler)) as proxy:
        yield proxy


def test_an_upload_changed_on_the_way_is_refused_whatever_the_client_s_checksum_setting(
    database_url: str,
    blob_url: str,
    s3_engine: S3Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pg.open_database(database_url, "production")
    small = b"acknowledged bytes " * 50
    # In two parts, the first of them changed (S3's smallest part, 5 MiB, and a byte more).
    large = small + bytes(S3_MIN_PART_BYTES + 1 - len(small))
    said: dict[tuple[str, int], str] = {}
    with _changing(s3_engine) as proxy:
        # (The client's default with a small body alone: a part is 5 MiB through this proxy.)
        cases = [("when_supported", small), ("when_required", small), ("when_required", large)]
        for calculation, body in cases:
            # Read as the client is made: each ObjectStore below is made under it.
            monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", calculation)
            objects = s3_engine.objects(
                blob_url, endpoint_url=proxy.url, max_attempts=1, part_bytes=S3_MIN_PART_BYTES
            )
            objects.open("production")
            with RemoteStore(database_url, objects, "production") as served:
                session = served.create_session("a body changed on the way")
                # Before, with when_required: the upload acknowledged, and its download
                # "Acknowledged bytes ...": another body than the one acknowledged.
                with pytest.raises(ObjectStoreUnavailableError) as refused:
                    served.put_file(session["id"], "a.txt", io.BytesIO(body))
                said[calculation, len(body)] = str(refused.value)
                assert served.list_files(session["id"]) == []
                served.delete_session(session["id"])
                served.empty_trash()
    assert proxy.refusals == 3
    for message in said.values():
        assert "BadDigest (HTTP 400)" in message, message
        assert "the upload of 'a.txt' into session" in message, message
        assert "was not saved, and the file is as it was" in message, message
        assert (
            "The store received other bytes than this process sent: their CRC32 (sent with "
            "every write) did not match, so it kept nothing of them. Something between the two "
            "changes what it carries"
        ) in message, message
        assert "Nothing names the object, so nothing was saved: the client may send it" in message
        assert "Check s3_endpoint_url" not in message, message
    # Nothing kept either: the store refused both bodies.
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM app_files").fetchone() == (0,)
    bucket, _, prefix = blob_url.removeprefix("s3://").partition("/")
    listed = s3_engine.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/blobs/")
    assert listed.get("KeyCount") == 0, listed


def test_a_part_the_store_acknowledged_and_did_not_keep_names_the_store_s_failure(
    database_url: str, blob_url: str, s3_engine: S3Engine
) -> None:
    pg.open_database(database_url, "production")
    body = bytes(S3_MIN_PART_BYTES + 1)  # two parts
    with _changing(s3_engine, _Swallowing) as proxy:
        objects = s3_engine.objects(
            blob_url, endpoint_url=proxy.url, max_attempts=1, part_bytes=S3_MIN_PART_BYTES
        )
        objects.open("production")
        with RemoteStore(database_url, objects, "production") as served:
            session = served.create_session("a store that loses a part")
            with pytest.raises(ObjectStoreUnavailableError) as refused:
                served.put_file(session["id"], "a.txt", io.BytesIO(body))
            assert served.list_files(session["id"]) == []
    assert proxy.refusals == 1
    message = str(refused.value)
    assert "InvalidPart (HTTP 400)" in message, message
    # Before: "Check s3_endpoint_url, blob_url and the credentials ...", which had reached it.
    assert "Check s3_endpoint_url" not in message, message
    assert (
        "The store answered a part of this write as kept, then did not have it (or had it with "
        "another ETag) when asked to complete the upload"
    ) in message, message
    assert "Nothing names the object, so nothing was saved: the client may send it" in message
