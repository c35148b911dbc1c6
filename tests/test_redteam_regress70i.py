"""Red team 70 on regress, the newest integrity merges (branch rt-regress70i): see
docs/explanation/attacks/layer-7-atomic-writes.md.

What got through: the first open on a new timeline (a failover, a point-in-time recovery)
marks the prefix's stamp (``rewritten``), and `app data check` keeps the objects no row
names written before that write's ``LastModified`` (`ObjectStore.stamp_rewritten`, branch
rt-regress70g). ``app data restamp`` to another profile wrote a new stamp of the same
database without the mark: from then on the objects of the commits the failover lost were
"uploads whose transaction never committed", and ``--repair`` deleted them. A first record
of a timeline over a marked stamp (an adoption whose server gave none) kept the mark but
moved its time, keeping every orphan written since.

What changed: a write of a marked stamp that is no new mark keeps the mark and pins its
time (``rewritten_at``, the store's date of the marked write, read before the write).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_remote_store import PROFILE, _maintenance

from app import config as appconfig
from app.dataroot import STAMP_FILE, open_root, read_stamp
from app.errors import StampChangedError
from app.remote import pg
from app.remote.objects import ObjectStore
from app.store import Store

DATABASE = ("5f0c8a4e-a1b2-4c3d-9e8f-0a1b2c3d4e5f", "files", "7301/16384")


def _opened_on_timeline_1(s3_engine: S3Engine) -> ObjectStore:
    """A fresh prefix opened for production, bound to `DATABASE` on its first timeline."""
    objects = s3_engine.objects(new_blob_url(s3_engine))
    objects.open("production", database=(*DATABASE, 1))
    return objects


def test_a_restamp_after_a_failover_keeps_the_mark_and_its_time(s3_engine: S3Engine) -> None:
    objects = _opened_on_timeline_1(s3_engine)
    assert objects.stamp_rewritten() is None  # the first open marks nothing
    # The first open on a new timeline (a failover to a standby that had not received the
    # last commits): the mark, dated by the store.
    objects.open("production", database=(*DATABASE, 2))
    marked = objects.stamp_rewritten()
    assert marked is not None and (objects.read_stamp() or {})["rewritten"] == "timeline"
    # Before: the re-stamp wrote no mark, stamp_rewritten() was None, and an object of a
    # commit the failover lost was an "object-without-record" that --repair deleted.
    stamp = objects.restamp("production", "staging")
    assert stamp.get("rewritten") == "timeline" and stamp["restamped_from"] == "production"
    assert objects.stamp_rewritten() == marked
    objects.open("staging", database=(*DATABASE, 2))  # an open that writes nothing
    assert objects.stamp_rewritten() == marked
    # Another failover is a mark of its own, dated anew: the pinned time goes.
    objects.open("staging", database=(*DATABASE, 3))
    again = objects.read_stamp() or {}
    assert again["rewritten"] == "timeline" and "rewritten_at" not in again
    assert (objects.stamp_rewritten() or marked) >= marked


def test_a_stamp_that_is_a_link_is_compared_by_what_it_names(
    app_config: appconfig.Config, tmp_path: Path
) -> None:
    # A stamp the open accepts as a symbolic link to a regular file (kept with a deployment's
    # files): another profile's stamp copied over it (cp writes through a link at the
    # destination) changed the file, not the link. Before: `stamp_changed` compared the
    # link's lstat alone, and every write went through, the watcher's looks too.
    with open_root(app_config, kind="tests") as first:
        stamp = first.path / STAMP_FILE
        kept = tmp_path / "kept-stamp.json"
        kept.write_bytes(stamp.read_bytes())
    stamp.unlink()
    stamp.symlink_to(kept)
    with open_root(app_config, kind="tests") as root:
        store = Store(root)
        store.create_session("before")
        developments = {**(read_stamp(root.path) or {}), "profile": "development"}
        with stamp.open("r+") as copied:  # through the link, in place, as cp writes
            copied.truncate(0)
            copied.write(json.dumps(developments))
        assert stamp.is_symlink()
        with pytest.raises(StampChangedError) as refused:
            store.create_session("after")
        assert str(refused.value).startswith(
            f"profile stamp {stamp} now names profile 'development', and this process writes "
            "for profile 'testing'"
        ), refused.value
        assert len(store.session_ids()) == 1  # nothing more was written


def test_a_first_record_of_a_timeline_keeps_an_adoptions_mark_at_its_time(
    s3_engine: S3Engine,
) -> None:
    objects = _opened_on_timeline_1(s3_engine)
    # A copy adopted by a role that may not read its timeline (`pg.timeline` is None), then
    # opened once it may: the first record of a timeline, no new mark of its own.
    copy = (DATABASE[0], DATABASE[1], "7302/16384")
    assert objects.adopt("production", DATABASE[0], copy[2], None) is not None
    adopted = objects.stamp_rewritten()
    assert adopted is not None and (objects.read_stamp() or {})["rewritten"] == "adopt-copy"
    objects.open("production", database=(*copy, 4))
    stamp = objects.read_stamp() or {}
    assert stamp["timeline"] == 4 and stamp["rewritten"] == "adopt-copy"
    # Before: the stamp's LastModified moved to this write, and every orphan written since
    # the adoption was kept for good; the adoption's time is now written into the stamp.
    assert stamp.get("rewritten_at") == adopted.isoformat()
    assert objects.stamp_rewritten() == adopted


def test_the_app_s_schema_named_with_a_space_opens_and_checks_clean(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    name = postgres_engine.create_database()
    try:
        with postgres_engine.connect() as admin:
            admin.execute(f'ALTER DATABASE "{name}" SET search_path = "App files", public'.encode())
        with postgres_engine.connect(name) as conn:
            conn.execute('CREATE SCHEMA "App files"')
        url = postgres_engine.url(name)
        pg.open_database(url, PROFILE)
        pg.open_database(url, PROFILE)  # the second open compares what the first made
        with _maintenance(s3_engine, (url, new_blob_url(s3_engine))) as maintenance:
            assert maintenance.check().findings == []
    finally:
        postgres_engine.drop_database(name)
