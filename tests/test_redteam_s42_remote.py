"""Red team 42 on PostgreSQL and object storage.

All real: the suite's cluster and ``weed``, real commands and ``app serve`` replicas
(tests/replicas.py). What broke:

- ``app status`` on a profile whose object prefix every other command refuses (its stamp
  object deleted, or the store come back without its data) said nothing was wrong: only
  ``app doctor`` named it;
- an upload is streamed to the object store in parts of 8 MiB, and S3 takes at most 10,000
  parts: a file above about 78 GiB, which a ``max_upload_bytes`` of more allowed, would have
  been refused by the store at its 10,001st part; and a ``max_upload_bytes`` above S3's
  largest object (5 TiB) was taken without a word.
"""

from __future__ import annotations

import json

import pytest
import test_redteam_s37_remote
from engines import S3Engine
from replicas import Production
from test_redteam_s20_remote import _objects
from test_redteam_s37_remote import _delete_the_prefixs_stamp, _stamp_object
from test_redteam_s39_ops import _kept

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
    _status_names(production, "its stamp object .app-profile.json is gone")
    client, bucket, key = _stamp_object(production, s3_engine)
    for item in client.list_objects_v2(Bucket=bucket, Prefix=key.rpartition("/")[0])["Contents"]:
        client.delete_object(Bucket=bucket, Key=item["Key"])  # the store came back empty
    _status_names(production, "is empty")


def _status_names(production: Production, lost: str) -> None:
    status = production.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    said = " ".join(status.stdout.split())
    assert "objects: profile 'production':" in said, said
    assert lost in said and "nothing was changed" in said, said
    assert "app data restamp --profile production --from production" in said
    report = production.run("status", "--json")
    assert report.returncode == 0, report.stdout + report.stderr
    assert lost in json.loads(report.stdout)["objects_error"]
