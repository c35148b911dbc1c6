"""Red team 70 on regress, the latest merges: another profile's stamp copied over a live
local root, and the writes made before the lock watcher's next look at it (layer 5).

Real parts: a root opened in this process with a real lock, as a server or a CLI writer
holds it, and its stamp written over in place as ``cp`` writes into an existing file; the
writes go through the store, as a request's would.
"""

from __future__ import annotations

import json

import pytest

from app import config as appconfig
from app.dataroot import STAMP_FILE, open_root, read_stamp
from app.errors import StampChangedError
from app.store import Store


def test_a_write_after_another_profiles_stamp_landed_is_refused_before_the_watchers_look(
    app_config: appconfig.Config,
) -> None:
    # Before: the stamp was compared only by the lock watcher, every lock_check_seconds (5 s
    # by default); a create made after `cp -a <development's backup>/. <root>/` and before
    # that look was written into a root stamped for development, and a CLI writer (no
    # watcher) never looked at all.
    with open_root(app_config, kind="tests") as root:
        store = Store(root)
        kept = store.create_session("before")["id"]
        stamp = root.path / STAMP_FILE
        developments = {**(read_stamp(root.path) or {}), "profile": "development"}
        with stamp.open("r+") as copied:  # in place, as cp writes into an existing file
            copied.truncate(0)
            copied.write(json.dumps(developments))
        with pytest.raises(StampChangedError) as refused:
            store.create_session("after")
        assert str(refused.value).startswith(
            f"profile stamp {stamp} now names profile 'development', and this process writes "
            "for profile 'testing': another profile's stamp was copied over it while this "
            "process ran"
        ), refused.value
        assert "`app data restamp --profile testing --from development`" in str(refused.value)
        assert store.session_ids() == [kept]  # nothing more was written
        # The same profile's stamp written again (a restamp's rename, `check --repair`
        # marking it, an editor's save): not refused, at the write either.
        stamp.write_text(json.dumps({**developments, "profile": "testing"}))
    with open_root(app_config, kind="tests") as again:
        store = Store(again)
        stamp.write_text(json.dumps({**developments, "profile": "testing", "note": 1}))
        assert store.create_session("same profile")["id"]
        assert len(store.session_ids()) == 2
