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
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_redteam_s39_ops import _overlaps, _settings

_DB = "postgresql://app@db.internal"


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
    _settings(
        tmp_path,
        monkeypatch,
        production={"database_url": f"{_DB}/a", "blob_url": production[0],
                    "s3_endpoint_url": production[1]},
        staging={"database_url": f"{_DB}/b", "blob_url": staging[0],
                 "s3_endpoint_url": staging[1]},
    )  # fmt: skip
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
    _settings(
        tmp_path,
        monkeypatch,
        production={"database_url": f"{_DB}/a", "blob_url": production[0],
                    "s3_endpoint_url": production[1]},
        staging={"database_url": f"{_DB}/b", "blob_url": staging[0],
                 "s3_endpoint_url": staging[1]},
    )  # fmt: skip
    assert _overlaps() == []
