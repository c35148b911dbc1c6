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
from app.remote import errors as remote_errors
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


@pytest.mark.parametrize(
    ("said", "remedy", "restart"),
    [
        (
            (
                "this server's object prefix was handed to another database (as `app data "
                "restamp` run on a copy of its database leaves it)"
            ),
            None,
            (
                "Its restart is refused until database_url names the database the prefix belongs "
                "to now (`app doctor` on the server says which)"
            ),
        ),
        (
            (
                "this server's database session moved to another PostgreSQL backend (a pooler in "
                "transaction mode), which does not hold its locks"
            ),
            remote_errors.POOLER_REMEDY,
            remote_errors.POOLER_REMEDY,
        ),
    ],
)
def test_a_replica_whose_prefix_was_handed_away_says_so_over_http(
    said: str, remedy: str | None, restart: str
) -> None:
    # The remote backend's `stamp_changed`: a replica whose object prefix a copy of its
    # database was handed (or whose session a pooler moved) answered its writes "this server
    # lost its connection to the database ... Retry once the server is restarted", and its
    # restart is refused. Its log said why (the reason, with the addresses); the answer now
    # says it too, without them, as the local server's does.
    reason = (
        "object prefix s3://bucket/app was handed to another database: its stamp object "
        "now names database 7300000000000000001/16384 (db-copy:5432)"
    )
    refused = remote_errors.HolderLostError(
        "postgresql://app@db.internal:5432/app_production",
        reason,
        handed_away=True,
        remedy=remedy,
        said=said,
    )
    answer = refused.to_dict()
    assert answer == {
        "code": "holder_lost",
        "message": (
            f"{said} while this server ran, so it refuses every write and is stopping; "
            f"nothing was written. {restart}"
        ),
    }
    assert "lost its connection" not in answer["message"]
    assert "db.internal" not in answer["message"] and "s3://" not in answer["message"]
    assert refused.message.startswith(reason)  # the log's, with the addresses
