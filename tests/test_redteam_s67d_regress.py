"""Red team 67 on regress, the newest merges (branch rt-regress67d): see
docs/explanation/attacks/ (layers 2 and 3).

What broke in the layout marks (rt-regress67b): a root or a database marked by the builds
between rows67 (7c21408b) and the layout's raise (7dfe435b) says ``content_sha256_since`` at
layout 1 (schema version 1): every root those builds made, and every one their start-up's
repair marked. Their next server start, and ``app data check --repair``, saw a marked root
and left it so: a build from before the mark still opened it, and a file it deleted left a
trash entry without its key, which the mark makes damage. The repair now raises a marked
root's layout (a marked database's schema) to this release's, as the mark does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_redteam_s67b_regress import invoke
from test_remote_store import PROFILE, _maintenance, _replica

from app.dataroot import STAMP_FILE

HASHED_KEY = "content_sha256_since"


def test_a_root_marked_at_layout_1_is_raised_by_the_repair(
    app_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import dataroot
    from app.dataroot import open_root
    from app.errors import DataRootTooNewError
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        Store(opened).create_session("kept", {})
    root = app_config.data_root
    stamp = json.loads((root / STAMP_FILE).read_bytes())
    # As the builds between the mark and layout 2 wrote it: marked, layout 1.
    (root / STAMP_FILE).write_text(json.dumps({**stamp, "layout_version": 1}, indent=2))
    code, out = invoke("data", "check", "--repair")
    assert code == 0, out
    raised = json.loads((root / STAMP_FILE).read_bytes())
    assert raised["layout_version"] == 2, raised  # before: 1, open to a build before the mark
    assert raised[HASHED_KEY] == stamp[HASHED_KEY]  # the mark's own time kept
    monkeypatch.setattr(dataroot, "LAYOUT_VERSION", 1)
    with pytest.raises(DataRootTooNewError):
        open_root(app_config, kind="tests")


def test_a_database_marked_at_schema_1_is_raised_by_the_repair(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with postgres_engine.opened_database(PROFILE) as (name, url):
        blob_url = new_blob_url(s3_engine)
        with _replica(s3_engine, (url, blob_url)) as store:
            store.create_session("kept", {})
        stamp = "SELECT schema_version, content_sha256_since IS NOT NULL FROM app_stamp"
        with postgres_engine.connect(name) as admin:
            # As the releases between the mark and schema 2 left it: marked, schema 1.
            admin.execute("UPDATE app_stamp SET schema_version = 1")
        with _maintenance(s3_engine, (url, blob_url)) as maintenance:
            assert maintenance.check(repair=True).findings == []
        with postgres_engine.connect(name) as admin:
            assert admin.execute(stamp).fetchone() == (2, True)  # before: (1, True)
