"""Red team 61 on PostgreSQL and object storage.

What broke:

- The restore of a whole session from the trash whose row's ``metadata`` a tool rewrote to
  something other than an object (``null``, a list, a string) while it was in the trash.
  The restore made the row live, audited it, and only then read the session back: the
  command failed ``session_unreadable`` ("cannot read session ...: delete the session to
  move it to the trash as it is"), a session it had just taken out of the trash, now live
  and unreadable, with a restore in the audit. It is now refused before anything changes
  (``session_unreadable``, naming the row, that nothing was changed, and what corrects the
  row), as a file's restore of a row of another shape is since red team 60.
  On a data root such a session comes back by design (audited, to be mended in place), but
  the command said "cannot read session" alone, read as a restore that failed: it now says
  it was restored, from which entry, and that it cannot be read.

- The ``empty-trash`` audit row's ``objects``: it counted every removed file row's object,
  those the emptying kept because their row named a key the app never makes (red team 60)
  among them, so the audit said objects were deleted that are still there. It now counts
  the objects the emptying deletes, and names the kept keys (``kept_objects``); the
  returned count, which a refusal of the deletion quotes, is the same.

- A maintenance command behind a pooler in transaction mode (``tests/txpooler.py``) whose
  server session the pooler gave another client's transaction before it ended: its unlock
  ran in another session, and the command ended without a word while its lock stayed,
  refusing every replica and maintenance after it as beside a command that had ended. The
  end of the hold now unlocks and looks where it ran in one transaction, and says in its
  log which server session keeps the lock and what ends it (the lock itself stays: not
  stopped since red team 56).

- An ``s3_endpoint_url`` whose path has a ``.`` or ``..`` segment (``http://h:8333/.``,
  ``/x/..``): SeaweedFS serves it as the endpoint itself, while the check of the profiles'
  prefixes took the path for one before the bucket, so staging's ``s3://app-data/production``
  there was apart from production's. It is refused as a setting now, as a ``blob_url``'s dot
  segments are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from fastapi.testclient import TestClient
from test_config_remote import REMOTE, SECRETS_FILE
from test_redteam_s60_remote import serving
from test_remote_store import PROFILE
from txpooler import transaction_pooler

from app.config import inspect_profiles
from app.errors import InvalidSettingError, UnreadableSessionError
from app.remote import pg
from app.remote.store import RemoteStore
from app.store import Store


@pytest.fixture(scope="module")
def served(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> Iterator[tuple[RemoteStore, TestClient]]:
    """A replica over a scratch database and prefix of this module's, and an HTTP client."""
    with serving(postgres_engine, s3_engine) as pair:
        yield pair


def test_a_trashed_session_whose_metadata_a_tool_rewrote_is_refused_before_its_restore(
    served: tuple[RemoteStore, TestClient],
) -> None:
    # Before: the restore made the row live and audited it, then failed reading it back
    # (session_unreadable, "delete the session to move it to the trash as it is").
    store, client = served
    session_id = client.post("/sessions", json={"title": "t"}).json()["id"]
    assert client.delete(f"/sessions/{session_id}").status_code == 200
    with psycopg.connect(store.database_url, autocommit=True) as admin:
        admin.execute("UPDATE app_sessions SET metadata = '[1, 2]' WHERE id = %s", (session_id,))
        audits = admin.execute("SELECT count(*) FROM app_audit").fetchone()
    with pytest.raises(UnreadableSessionError) as refused:
        store.restore(session_id)
    message = refused.value.message
    assert message.startswith(
        f"cannot restore session {session_id}: its row in app_sessions has a list in "
        "'metadata', which the app never writes (it was changed outside the app), and "
        "nothing was changed: the session stays in the trash."
    ), message
    assert "`app data check` reports it as row-of-another-shape" in message
    assert "with every replica stopped" in message
    assert "`app data empty-trash`" in message
    with psycopg.connect(store.database_url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT deleted_at IS NOT NULL FROM app_sessions WHERE id = %s", (session_id,)
        ).fetchone()
        assert row == (True,)
        assert admin.execute("SELECT count(*) FROM app_audit").fetchone() == audits
        # Corrected as the message says, it restores.
        admin.execute("UPDATE app_sessions SET metadata = '{}' WHERE id = %s", (session_id,))
    assert store.restore(session_id)["id"] == session_id


def test_empty_trash_audits_the_objects_it_deleted_not_those_it_kept(
    served: tuple[RemoteStore, TestClient],
) -> None:
    # Before: objects=2 in the audit, for one object deleted and one kept.
    store, client = served
    session_id = client.post("/sessions", json={"title": "t"}).json()["id"]
    files = f"/sessions/{session_id}/files"
    for name in ("a.txt", "b.txt"):
        assert client.put(f"{files}/{name}", content=name.encode()).status_code == 201
    foreign = f"not-the-apps/{session_id}"
    with psycopg.connect(store.database_url, autocommit=True) as admin:
        admin.execute("UPDATE app_files SET blob = %s WHERE name = 'b.txt'", (foreign,))
    for name in ("a.txt", "b.txt"):
        assert client.delete(f"{files}/{name}").status_code == 200
    store.empty_trash()
    with psycopg.connect(store.database_url, autocommit=True) as admin:
        detail = admin.execute(
            "SELECT detail FROM app_audit WHERE operation = 'empty-trash' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert detail is not None
    assert detail[0]["objects"] == 1, detail
    assert detail[0]["kept_objects"] == [foreign], detail


def test_maintenance_whose_lock_a_pooler_left_on_another_client_s_session_says_so(
    postgres_engine: PostgresEngine,
    served: tuple[RemoteStore, TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: the command ended without a word; its unlock ran on another server session
    # (false, a bare WARNING from PostgreSQL), the lock stayed on the one the pooler gave
    # another client, and every replica and maintenance after it was refused, naming a
    # maintenance command that had ended.
    store, _ = served
    name = store.database_url.rsplit("/", 1)[1]
    with transaction_pooler(postgres_engine.host, postgres_engine.port) as pooler:
        url = pooler.url(name, postgres_engine.user)
        with caplog.at_level(logging.WARNING, logger="app.remote.store"):
            with pg.maintenance(url, PROFILE, "empty the trash") as held:
                other = psycopg.connect(url)
                # The server session holding the lock, given to another client's transaction.
                assert other.execute("SELECT pg_backend_pid()").fetchone() == (held.backend_pid,)
            said = caplog.text
            assert (
                f"the hold to empty the trash ended, but its exclusive lock stays on server "
                f"session {held.backend_pid}" in said
            ), said
            assert "another client's transaction runs there now" in said
            assert f"SELECT pg_terminate_backend({held.backend_pid})" in said
            assert "pool_mode = session" in said
            # Not stopped: the lock stays there until that session ends (the pooler's).
            with psycopg.connect(store.database_url, autocommit=True) as direct:
                assert any(
                    f"backend pid {held.backend_pid}" in who for who in pg.lock_holders(direct)
                )
            other.close()


def test_an_endpoint_whose_path_has_a_dot_segment_is_refused_as_the_store_resolves_it(
    s3_engine: S3Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: `http://<store>/.` (or `/x/..`) was another endpoint to the check of profiles'
    # prefixes, while SeaweedFS serves it as the endpoint itself: staging's prefix was
    # production's, and `app config` said nothing.
    key = f"{new_blob_url(s3_engine).split('/', 3)[3]}/probe"
    dotted = s3_engine.client(f"{s3_engine.endpoint_url}/x/..")
    dotted.put_object(Bucket=s3_engine.bucket, Key=key, Body=b"reached")
    assert s3_engine.client().get_object(Bucket=s3_engine.bucket, Key=key)["Body"].read() == (
        b"reached"
    )
    (tmp_path / ".secrets.toml").write_text(SECRETS_FILE)
    (tmp_path / "settings.toml").write_text(
        REMOTE + '\n[staging]\ndatabase_url = "postgresql://app@db.internal:5432/app_staging"\n'
        'blob_url = "s3://app-data/production"\n'
        's3_endpoint_url = "http://127.0.0.1:8333/x/.."\n'
    )
    monkeypatch.setenv("APP_SETTINGS_DIR", str(tmp_path))
    problems = inspect_profiles("development").problems
    refused = [p for p in problems if isinstance(p, InvalidSettingError)]
    assert [(p.profile, p.key) for p in refused] == [("staging", "s3_endpoint_url")], problems
    assert refused[0].message == (
        "profile 'staging': s3_endpoint_url = 'http://127.0.0.1:8333/x/..' (from "
        "settings.toml [staging]): has a '.' or '..' segment in its path ('..'), which an "
        "object store resolves (SeaweedFS serves http://h:8333/x/.. as http://h:8333 itself), "
        "so the bucket and prefix it reaches are not the ones the check of the profiles' "
        "prefixes compares; write the path without it, as the path it means"
    )


def test_a_local_restore_of_a_damaged_session_says_it_was_restored(app_store: Store) -> None:
    # Before: "cannot read session ...", exit 65, of a session the restore had brought back
    # (audited): read as a restore that failed, its retry "not in the trash".
    session_id = app_store.create_session("t")["id"]
    entry = app_store.delete_session(session_id)
    (entry.path / "session" / "session.json").write_text("[1, 2]")
    with pytest.raises(UnreadableSessionError) as refused:
        app_store.restore(session_id)
    assert refused.value.message == (
        f"restored session {session_id} from trash entry {entry.name} (audited), but cannot "
        "read it: its session.json is not a JSON object (it was changed outside the app). "
        "`app data check` reports it as session-unreadable. Put session.json back from a "
        f"backup, or delete the session again (DELETE /sessions/{session_id}) to move it to "
        "the trash as it is"
    )
    assert (Path(app_store.location) / "sessions" / session_id / "session.json").exists()
