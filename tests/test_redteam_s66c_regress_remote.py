"""Red team 66 on regress, this session's merges, on the remote backend (branch
rt-regress66c): see docs/explanation/attacks/.

What broke: a test run's scratch prefix holds its marker (``.app-pytest-run.json``) before
anything else, and the open took a prefix holding it alone as empty, for every profile: a
replica of another profile whose blob_url named the prefix stamped it as its own, and the
run's end, its marker its own, deleted that profile's stamp and uploads. Only testing's open
passes over the marker now; another profile's is refused, naming it.
"""

from __future__ import annotations

import json

import pytest
from engines import S3Engine, new_blob_url

from app.remote.errors import UnstampedNotEmptyError
from app.remote.objects import RUN_MARKER, STAMP_NAME


def test_only_testing_s_open_takes_a_prefix_holding_a_run_s_marker_alone_as_empty(
    s3_engine: S3Engine,
) -> None:
    blob_url = new_blob_url(s3_engine)

    store = s3_engine.objects(blob_url)
    marker = {"run": "_pytest_1_abcd", "token": "0" * 32, "host": "ci", "pid": 1}
    assert store.create_once(RUN_MARKER, json.dumps(marker).encode())
    for profile in ("production", "staging"):
        with pytest.raises(UnstampedNotEmptyError) as refused:
            # Before: stamped as that profile's, an empty prefix.
            store.open(profile)
        assert str(refused.value) == (
            f"profile {profile!r}: object prefix {store.where}, a test run's scratch prefix (its "
            f"marker {RUN_MARKER} is there, and that run's end empties it), is not empty and has "
            f"no profile stamp, and it holds things that are not the app's ({RUN_MARKER}); "
            "refusing to adopt it. Point blob_url at a new or empty one"
        )
        assert store.read_stamp() is None
    # The run's own profile takes it as the empty prefix it is.
    assert store.open("testing")["profile"] == "testing"
    names = sorted(info.name for info in store.objects())
    assert names == sorted([RUN_MARKER, STAMP_NAME])
    store.delete(*names)
