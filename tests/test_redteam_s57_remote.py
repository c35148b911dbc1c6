"""Red team 57 on PostgreSQL and object storage.

What broke:

- An ``s3_endpoint_url`` whose host names a bucket (``https://app-data.s3.eu-west-1.
  amazonaws.com``, copied from a console's "object URL"; ``http://app-data.store.lan``
  beside ``http://store.lan``; ``http://app-data.localhost``), as a store that takes
  virtual-hosted requests reads it: AWS, MinIO with ``MINIO_DOMAIN``, SeaweedFS with
  ``-s3.domainName``. The app sends path-style requests to the endpoint it is given, and
  such a store takes the bucket from the host first: staging's ``s3://sub/x`` there was
  bucket ``app-data``, keys ``sub/x/...``, which is production's ``s3://app-data/sub/x``.
  The overlap check compared hosts (and took every AWS host for one endpoint) and buckets,
  and took the two for two prefixes, with nothing said. Tried by hand against a real
  ``weed mini -s3.domainName=localhost``, through boto3 with the app's path-style client:
  an object production's client put under ``app-data/sub/x/k`` was read back by staging's,
  and staging's ``x/k2`` was listed among production's keys. Each host that may name a
  bucket (labels before AWS's ``s3`` label, a name under ``.localhost`` or this machine's
  name, a name under the other profile's host) is now also read so, and a pair that
  overlaps by either reading is refused (``resource_overlap``), the refusal saying which
  host names which bucket and what the prefix is when written with the store's own host.
  Tested on the overlap check the configuration loads with (as red team 41's endpoint
  path): the suite's ``weed`` takes path-style requests only.

- A testing ``blob_url`` whose prefix the run's suffix takes past S3's limits (959 bytes,
  which ``app doctor`` takes: the app's names need 65 more of a key's 1,024; or a last
  segment near 255 bytes, for a profile a test opts into, whose scratch prefix lengthens
  it). Every test of the run failed with a traceback of the app's refusal of a prefix of
  977 bytes that no one had written, told to "choose a shorter one", and the run's end
  said that it could not remove "the objects under its scratch prefix" and left them,
  where nothing had been made. The run now refuses before it creates anything, in one
  line naming the scratch prefix, that the run's suffix adds its bytes, and how long the
  configured prefix may be; so does every load of such a profile under a run
  (``invalid_setting``). Red team 21 had closed the same for the scratch database's name.

- An object whose bytes, as the store serves them, do not match the store's own checksum of
  it (``x-amz-checksum-crc32``, which SeaweedFS and AWS keep and the S3 client checks after
  the last byte): bytes damaged on the store's disks, or changed on the way by a proxy or a
  cache (a proxy of the test's that flips the last byte of a ``GET``'s body). ``app data
  check``, the command meant to list such a file, ended in botocore's bare
  ``FlexibleChecksumError`` traceback, and so did every open whose stamp read met it. Every
  read of an object now turns it into the app's ``object_store_unavailable`` naming the
  object, that its bytes do not match the store's checksum and why that may be, and ``app
  data check`` lists the file (``record-object-changed``), saying so; a trashed version's
  check of its bytes says the same.

- A ``database_url`` (or its service's section, or ``PGTARGETSESSIONATTRS``) with
  ``target_session_attrs`` of ``read-only`` or ``standby``: every command and ``app serve``
  were refused as "cannot connect to database ...: session is not read-only. Check that the
  server runs", which it did; with ``prefer-standby``, libpq connects to a standby whenever
  one answers, where every change is refused and told to point ``database_url`` at the
  primary, which it names. The app writes (its stamp, a replica's hold, every change), so
  such a value is now refused as a setting (``invalid_setting``, 78) before any connection,
  naming it, where it is set, and to remove it or set ``read-write``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from engines import PostgresEngine, S3Engine, remote_testing_run
from side_by_side import pytest_side_by_side
from test_redteam_s20_remote_identity import _config
from test_redteam_s39_ops import _overlaps, _settings

from app import config as appconfig
from app import sandbox
from app.config import Config
from app.errors import InvalidSettingError
from app.remote.errors import ObjectStoreUnavailableError
from app.remote.store import RemoteStore
from app.sandbox import ALLOW_PROFILES_ENV
from app.storage import open_storage

_DB = "postgresql://app@db.internal"


def _two_profiles(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    staging: tuple[str, str],
    production: tuple[str, str],
) -> None:
    """Settings of production and staging, each (blob_url, s3_endpoint_url)."""
    _settings(
        tmp_path,
        monkeypatch,
        production={"database_url": f"{_DB}/a", "blob_url": production[0],
                    "s3_endpoint_url": production[1]},
        staging={"database_url": f"{_DB}/b", "blob_url": staging[0],
                 "s3_endpoint_url": staging[1]},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("staging", "production", "host", "bucket"),
    [
        # A name of this machine's, under .localhost, as the store of the hand experiment.
        (("s3://sub/x", "http://app-data.localhost:8333"),
         ("s3://app-data/sub", "http://127.0.0.1:8333"), "app-data.localhost", "app-data"),
        # AWS's virtual-hosted name (a bucket with dots, the older `s3-<region>` form).
        (("s3://sub/x", "https://my.data.s3-eu-west-1.amazonaws.com"),
         ("s3://my.data/sub/x", "https://s3.eu-west-1.amazonaws.com"),
         "my.data.s3-eu-west-1.amazonaws.com", "my.data"),
        # A store's own domain: the bucket's name under the other profile's host.
        (("s3://sub/x/staging", "https://app-data.store.lan"),
         ("s3://app-data/sub/x", "https://store.lan"), "app-data.store.lan", "app-data"),
    ],
)  # fmt: skip
def test_an_endpoint_whose_host_names_a_bucket_is_that_bucket_s_prefix(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    staging: tuple[str, str],
    production: tuple[str, str],
    host: str,
    bucket: str,
) -> None:
    _two_profiles(tmp_path, monkeypatch, staging, production)
    # Before: two prefixes to the check (another host, or another bucket), with nothing said.
    [overlap] = _overlaps()
    said = " ".join(overlap.message.split())
    assert overlap.kind == "object prefix"
    assert "'production' and 'staging'" in said, said
    read_as = staging[0].removeprefix("s3://")  # the bucket, then the prefix: its keys
    assert f"s3_endpoint_url's host {host} names bucket {bucket!r}" in said, said
    assert f"is read there as bucket {bucket!r}, prefix {read_as}" in said, said
    assert f"it is s3://{bucket}/{read_as}" in said, said
    assert said.endswith("change blob_url for one of them"), said


@pytest.mark.parametrize(
    ("staging", "production"),
    [
        # Another port, another bucket under the host, another prefix in the host's bucket.
        (("s3://sub/x", "https://app-data.store.lan:9000"),
         ("s3://app-data/sub/x", "https://store.lan")),
        (("s3://sub/x", "https://app-data.store.lan"),
         ("s3://other/sub/x", "https://store.lan")),
        (("s3://sub/x", "https://app-data.s3.eu-west-1.amazonaws.com"),
         ("s3://app-data/production", "https://s3.eu-west-1.amazonaws.com")),
        # An address is never a bucket's name.
        (("s3://sub/x", "http://10.0.0.5:8333"), ("s3://0/sub/x", "http://0.5:8333")),
    ],
)  # fmt: skip
def test_an_endpoint_whose_host_names_another_bucket_or_prefix_is_apart(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    staging: tuple[str, str],
    production: tuple[str, str],
) -> None:
    _two_profiles(tmp_path, monkeypatch, staging, production)
    assert _overlaps() == []


def _long_prefix(head: str, length: int) -> str:
    """A prefix of `length` bytes under `head`, in segments of 250 bytes at most."""
    prefix = head
    while len(prefix) < length:
        prefix += "/" + "p" * min(250, length - len(prefix) - 1)
    assert len(prefix) == length
    return prefix


def test_a_testing_prefix_the_run_s_suffix_takes_past_s3_s_limits_is_refused_in_one_line(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, tmp_path: Path
) -> None:
    testing = f"rt57t_{os.getpid()}"
    prefix = _long_prefix(f"rt57-{os.getpid()}", 959)  # the most `app doctor` takes
    project, env = remote_testing_run(
        tmp_path,
        postgres_engine,
        s3_engine,
        (testing, prefix),
        "def test_store(app_store):\n    app_store.create_session(title='t')\n",
    )
    (result,) = pytest_side_by_side(project, env, ["-p", "no:randomly"])
    output = "\n".join(result.outlines + result.errlines)
    said = " ".join(output.split())
    # Before: InvalidSettingError's traceback from app_config, then "could not remove the
    # objects under its scratch prefix ... They are left on testing's server".
    assert "1 error" in said and "passed" not in said, output
    assert "Traceback" not in output and "InvalidSettingError" not in output, output
    assert "could not remove" not in said, output
    assert "app: testing's blob_url cannot be used by a test run: under pytest it names" in said
    assert f"the run's scratch prefix s3://{s3_engine.bucket}/{prefix}/pytest_" in said, said
    added = re.search(r"a test run adds its suffix \((\d+) bytes here\)", said)
    assert added is not None, said
    room = 959 - int(added[1])
    assert f"so its prefix may be {room} bytes at most (it is 959): choose a shorter one" in said
    # Once in the error itself; pytest's summary repeats it whole where CI is set (it cuts
    # summary lines to the terminal's width elsewhere), so it is not counted.
    error = output.split("short test summary info")[0]
    assert error.count("Nothing was created") == 1, output
    with postgres_engine.connect() as conn:  # nothing made on testing's server
        made = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (testing,)
        ).fetchall()
    assert made == []


def _staging_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, blob_url: str
) -> str:
    """The refusal of a load of profile staging, opted into by the test, as one line."""
    _settings(
        tmp_path,
        monkeypatch,
        staging={"database_url": database_url, "blob_url": blob_url,
                 "s3_endpoint_url": "http://127.0.0.1:9"},
    )  # fmt: skip
    monkeypatch.setenv(ALLOW_PROFILES_ENV, "staging")
    with pytest.raises(InvalidSettingError) as refused:
        appconfig.load("staging", serving=False)
    return " ".join(refused.value.message.split())


def test_a_profile_whose_scratch_prefix_s_last_segment_is_too_long_is_refused_at_its_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A profile a test opts into: its scratch prefix is a sibling of its prefix (red team
    # 42), the run's suffix added to the last segment, here one of 250 bytes.
    last = "s" * 250
    # Before: the load went on, and every request of the store was refused by the store.
    said = _staging_refused(tmp_path, monkeypatch, f"{_DB}/s", f"s3://b/x/{last}")
    assert f"profile 'staging': blob_url = 's3://b/x/{last}'" in said, said
    assert f"the run's scratch prefix s3://b/x/{last}_pytest_" in said, said
    assert "past the 255 an object store on a filesystem takes in one" in said, said
    added = len(sandbox.current_run().scratch)
    assert f"adds its suffix ({added} bytes here)" in said, said
    assert f"may be {255 - added} bytes at most (it is 250): choose a shorter one" in said


class _Flipping(ThreadingHTTPServer):
    """A proxy in front of the store that flips the last byte of each `GET`'s body whose
    path holds `flip` (headers, the store's checksum among them, passed on as they are)."""

    flip = "/blobs/"


@contextlib.contextmanager
def _flipping_proxy(target: str) -> Iterator[_Flipping]:
    store = urlsplit(target)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            conn = http.client.HTTPConnection(store.hostname or "", store.port, timeout=10)
            conn.request(self.command, self.path, body, dict(self.headers.items()))
            answer = conn.getresponse()
            data = answer.read()
            conn.close()
            assert isinstance(self.server, _Flipping)
            if self.command == "GET" and self.server.flip in self.path and data:
                data = data[:-1] + bytes([data[-1] ^ 1])
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in {"content-length", "transfer-encoding", "connection"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    server = _Flipping(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_object_served_unlike_the_store_s_own_checksum_is_listed_by_check(
    database_url: str, s3_engine: S3Engine, blob_url: str, app_config: Config
) -> None:
    production = _config(app_config, s3_engine, database_url, blob_url)
    with open_storage(production, writer=True) as replica:
        session = replica.create_session("acknowledged")["id"]
        replica.put_file(session, "a.txt", b"acknowledged bytes")
    with _flipping_proxy(s3_engine.endpoint_url) as proxy:
        through = replace(production, s3_endpoint_url=f"http://127.0.0.1:{proxy.server_port}")
        store = open_storage(through, writer=True, wanted="check and repair")
        assert isinstance(store, RemoteStore)
        with store:
            # Before: botocore's FlexibleChecksumError, a traceback from `app data check`.
            report = store.check(repair=False)
        [finding] = report.findings
        assert finding.problem == "record-object-changed"
        assert finding.target == f"{session}/a.txt"
        said = " ".join(finding.detail.split())
        assert "the store's own checksum of the object does not match the bytes it served" in said
        assert "damaged on its disks, or are changed on the way (a proxy, a cache)" in said
        # The stamp's read alike: every open was the same traceback.
        proxy.flip = ".app-profile.json"
        with pytest.raises(ObjectStoreUnavailableError) as refused:
            open_storage(through, writer=False)
        said = " ".join(refused.value.message.split())
        assert "do not match its own checksum of that object" in said, said
        assert ".app-profile.json" in said and "`app data check` lists the files" in said


@pytest.mark.parametrize(
    ("attrs", "where"),
    [("read-only", "url"), ("prefer-standby", "url"), ("standby", "PGTARGETSESSIONATTRS")],
)
def test_a_database_url_that_asks_libpq_for_a_standby_is_refused_as_a_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attrs: str, where: str
) -> None:
    url = f"{_DB}/s" + (f"?target_session_attrs={attrs}" if where == "url" else "")
    if where != "url":
        monkeypatch.setenv(where, attrs)
    # Before: loaded, then every connection refused as a server that may not run
    # ("session is not read-only"), or, with a standby up, every change refused there.
    said = _staging_refused(tmp_path, monkeypatch, url, "s3://b/staging")
    assert "profile 'staging': database_url" in said, said
    source = "database_url" if where == "url" else "the environment's PGTARGETSESSIONATTRS"
    assert f"(target_session_attrs={attrs}, from {source})" in said, said
    assert "has libpq connect to a standby or a read-only server" in said, said
    assert "Remove target_session_attrs there, or set it to read-write" in said, said
