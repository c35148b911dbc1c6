"""Red team 66 on regress, the object store's writes (branch rt-regress66b): see
docs/explanation/attacks/.

What broke: red team 65 made every upload ask for a CRC32 by name, which the client sends
whatever ``AWS_REQUEST_CHECKSUM_CALCULATION`` says and the store checks; the prefix's stamp,
the one other write, asked for none. Under ``when_required``, a stamp whose body something on
the way changed (one byte, its length kept) was kept by the store so: the open that wrote it
went on, and the next one refused the prefix as another profile's.

All real: the suite's ``weed``, behind an HTTP proxy of the test's.
"""

from __future__ import annotations

import json

import pytest
from engines import S3Engine
from test_redteam_s65_remote import _Changing, _changing

from app.errors import AppError
from app.remote.errors import ObjectStoreUnavailableError
from app.remote.objects import STAMP_NAME, ObjectStore


class _ChangingStamp(_Changing):
    """Forwards every request to ``weed``, one byte of the stamp's profile changed on the way
    (``production`` made ``productioo``, its length kept)."""

    def do_PUT(self) -> None:
        if STAMP_NAME not in self.path:
            self._any()
            return
        body = bytearray(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        at = body.find(b'"production"')
        if at >= 0:
            body[at + len(b'"productio')] ^= 0x01
            self.server.refusals += 1
        del self.headers["Expect"]
        self._answer(*self._forwarded(bytes(body)))


def test_a_stamp_changed_on_the_way_is_refused_whatever_the_client_s_checksum_setting(
    blob_url: str, s3_engine: S3Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")

    def store(endpoint: str) -> ObjectStore:
        return s3_engine.objects(blob_url, endpoint_url=endpoint, max_attempts=1)

    # Before: opened, the store keeping {"profile": "productioo", ...}.
    with (
        _changing(s3_engine, _ChangingStamp) as proxy,
        pytest.raises(ObjectStoreUnavailableError) as refused,
    ):
        store(proxy.url).open("production")
    assert proxy.refusals == 1
    message = str(refused.value)
    assert "BadDigest (HTTP 400)" in message, message
    assert "The store received other bytes than this process sent" in message, message
    bucket, _, prefix = blob_url.removeprefix("s3://").partition("/")
    listed = s3_engine.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    assert listed.get("KeyCount") == 0, listed  # nothing kept
    # Sent again unchanged, it is written, and the next open reads the profile written.
    direct = store(s3_engine.endpoint_url)
    try:
        direct.open("production")
    except AppError as error:  # before: the next open refused it as productioo's
        pytest.fail(str(error))
    stamp = direct.read_stamp()
    assert stamp is not None and stamp["profile"] == "production", json.dumps(stamp)
    store(s3_engine.endpoint_url).open("production")
