"""Red team 62 on the session's remote fixes (regress).

What broke:

- The check that a client given no endpoint is not sent off AWS by the S3 client's own
  configuration (``s3_endpoint_elsewhere``, red team 62) was skipped for an endpoint given
  as ``""``, which the client takes as none: ``ObjectStore(blob_url, "", ...)`` in a process
  with ``AWS_ENDPOINT_URL`` naming production's store wrote a test's object among
  production's, as before that fix. It judged the endpoint's host with Python's
  ``urlsplit`` too, while the requests go where urllib3 (the S3 client's HTTP library)
  reads it: ``AWS_ENDPOINT_URL=http://<production's store>\\@s3.amazonaws.com`` was AWS's
  to the check (``urlsplit`` reads the host after the ``@``; urllib3 ends the host at the
  backslash), and the upload reached production's store, where only the signature, made for
  another host, had it refused (a store that takes unsigned writes keeps it). The same
  endpoint given to an ``ObjectStore`` by hand was AWS's to the sandbox's check of a test's
  prefix, and its upload reached production's store the same way. An empty
  endpoint is now judged as none, the host the client's own endpoint names is read as
  urllib3 reads it, and an endpoint on which the two readings disagree is refused as it is
  parsed (``invalid_setting``, naming both hosts).

- Row level security on an app table, switched on for the role the app connects as
  (``ALTER TABLE app_files ENABLE ROW LEVEL SECURITY`` and, for the tables' owner, ``FORCE``,
  as a hardening script or a hosted database's advice sets it on every table, no policy
  yet): the open took it, the app's reads saw no file row, and `app data check --repair`
  took every upload's object for an orphan and deleted it, bytes the app had acknowledged;
  once row security was off again, every file's row named a missing object. The open and
  `app doctor` now refuse it with the triggers and rules of red team 62 (``tables_hooked``,
  naming the table and the role, and ``ALTER TABLE ... DISABLE ROW LEVEL SECURITY``), and
  every connection reads with ``row_security`` off, so that a query it would filter (row
  security switched on under a live replica) is refused, naming it and its remedy, rather
  than answered with some rows as all of them.

- The check of the app's own triggers (red team 62) knew them by name and asked only
  whether they were off: a trigger of another's given the name of the app's (run before
  each insert, returning NULL) was taken for the app's, and the app's dropped, or its
  function replaced, was not looked at (the audit no longer append-only, the count of live
  sessions drifting). Each is now ``tables_hooked`` at the open and in `app doctor`, with
  the statements that make the app's again.

- A trigger after each insert into ``app_files`` (left alone by the open, as a
  change-data-capture tool's) that deletes the row at the commit (a deferred constraint
  trigger): the insert wrote its row, the upload was answered with its digest, then not
  found, its bytes deleted as no row's. An upload now reads its row back before its commit,
  every deferred trigger run first, and refuses a row gone or not the one sent (a digest
  changed by a trigger before the insert, added under a live replica, too):
  ``write_not_stored``, rolled back, its object deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engines import PostgresEngine, S3Engine, new_blob_url, scratch
from test_config_remote import REMOTE, SECRETS_FILE
from test_redteam_s62_remote import doctor_probes
from test_remote_store import PROFILE, _maintenance, _replica

from app.errors import InvalidSettingError
from app.remote import objects, pg
from app.remote.errors import (
    DatabaseRefusedError,
    S3EndpointElsewhereError,
    TablesHookedError,
    WriteNotStoredError,
)
from app.remote.objects import ObjectStore


def test_an_endpoint_is_judged_where_the_s3_client_sends_its_requests(
    s3_engine: S3Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: each store below was made, apart from production's prefix to the sandbox, and
    # its upload reached production's store: the first was written among production's
    # objects, the others refused there by their signature alone.
    production = f"p{os.getpid()}r"
    endpoint = s3_engine.endpoint_url
    (tmp_path / ".secrets.toml").write_text(SECRETS_FILE)
    (tmp_path / "settings.toml").write_text(
        REMOTE.replace('"http://127.0.0.1:8333"', f'"{endpoint}"').replace(
            "s3://app-data/production", f"s3://{s3_engine.bucket}/{production}"
        )
    )
    monkeypatch.setenv("APP_SETTINGS_DIR", str(tmp_path))
    monkeypatch.setattr(objects, "_sessions", [])
    inside = f"s3://{s3_engine.bucket}/{production}/x{scratch()}"
    keys = (s3_engine.access_key_id, s3_engine.secret_access_key)

    def put(endpoint_url: str | None) -> None:
        ObjectStore(inside, endpoint_url, *keys, max_attempts=1).put("planted", b"production?")

    disguised = f"{endpoint}\\@s3.amazonaws.com"
    hostport = endpoint.split("//")[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(S3EndpointElsewhereError, match=f"would send every request to {endpoint},"):
        put("")  # "" is no endpoint to the S3 client, as None is
    monkeypatch.setenv("AWS_ENDPOINT_URL", disguised)
    with pytest.raises(S3EndpointElsewhereError) as refused:
        put(None)
    assert f"would send every request to {disguised}, an endpoint" in refused.value.message
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(InvalidSettingError) as given:
        put(disguised)
    assert given.value.exit_code == 78
    assert given.value.message == (
        f"s3_endpoint_url = {disguised!r} (from the caller): its host is {hostport} to the S3 "
        "client's HTTP library (urllib3), where its requests go, and s3.amazonaws.com to the "
        "check that no two profiles share a prefix (Python's urlsplit), so the check would "
        "compare another store than the one reached; write the URL as scheme://host:port"
        "/path, without a backslash, '@' or another character the two read differently"
    )
    listed = s3_engine.client().list_objects_v2(Bucket=s3_engine.bucket, Prefix=production)
    assert listed.get("KeyCount") == 0, listed

    # Held: AWS's own endpoints, however the client's configuration names them, are AWS's.
    for variable, value in (
        ("AWS_ENDPOINT_URL", "https://s3-fips.us-east-1.amazonaws.com"),
        ("AWS_ENDPOINT_URL_S3", "https://s3.dualstack.eu-west-1.amazonaws.com"),
        ("AWS_USE_DUALSTACK_ENDPOINT", "true"),
    ):
        with monkeypatch.context() as each:
            each.setenv(variable, value)
            ObjectStore(new_blob_url(s3_engine), None, *keys)
    with monkeypatch.context() as ignored:
        ignored.setenv("AWS_ENDPOINT_URL", endpoint)
        ignored.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
        store = ObjectStore(new_blob_url(s3_engine), None, *keys)
        assert store._client.meta.endpoint_url == "https://s3.amazonaws.com"


def test_row_security_on_the_app_s_tables_is_refused_before_a_repair_deletes_hidden_files(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: opened; `app data check --repair` read no file row, took the upload's object
    # for an orphan and deleted it; once row security was off, the row named a missing object.
    role = f"rt62r_{os.getpid()}"
    with postgres_engine.owned_by_a_role(role) as (name, url):
        where = pg.mask_url(url)
        blob_url = new_blob_url(s3_engine)
        pg.open_database(url, PROFILE)
        with _replica(s3_engine, (url, blob_url)) as store:
            session_id = store.create_session("t")["id"]
            store.put_file(session_id, "kept.txt", b"acknowledged")
            with postgres_engine.connect(name) as admin:
                # A hardening script's (or a hosted database's advice): no policy yet.
                admin.execute(
                    "ALTER TABLE app_files ENABLE ROW LEVEL SECURITY;"
                    "ALTER TABLE app_files FORCE ROW LEVEL SECURITY"
                )
            # Under a live replica (opened before): every read of the table is refused,
            # naming row security and its remedy, rather than answered with no rows.
            with pytest.raises(DatabaseRefusedError) as live:
                store.check()
            assert 'row-level security policy for table "app_files"' in live.value.message
            assert "`ALTER TABLE <that table> DISABLE ROW LEVEL SECURITY`" in live.value.message
        # The open that `app data check --repair` starts with (a replica's start too).
        with pytest.raises(TablesHookedError) as refused:
            pg.open_database(url, PROFILE)
        # A maintenance store made past it: its repair is refused, nothing deleted.
        with _maintenance(s3_engine, (url, blob_url)) as maintenance:
            with pytest.raises(DatabaseRefusedError, match="row-level security policy"):
                maintenance.check(repair=True)
            assert len(list(maintenance.objects.objects())) == 2  # the upload, the stamp
        message = refused.value.message
        assert refused.value.exit_code == 78
        assert message.startswith(
            f"profile {PROFILE!r}: database {where} has, on the app's tables, what the app did "
            f"not put there or switched off: row level security on app_files, which role "
            f"{role} is subject to. A trigger run BEFORE or INSTEAD OF each row's change"
        ), message
        assert "row level security hides rows from the app's reads (a repair took" in message
        undo = 'ALTER TABLE "app_files" DISABLE ROW LEVEL SECURITY'
        assert f"As the tables' owner, run `{undo}`" in message
        probes = doctor_probes(url, where)
        assert [p.problem for p in probes if p.subject == "triggers"] == [message]

        # The remedy, run as written, opens it again, the upload and its bytes kept.
        with postgres_engine.connect(name) as admin:
            admin.execute(undo)  # type: ignore[arg-type]
        with _maintenance(s3_engine, (url, blob_url)) as maintenance:
            assert maintenance.check(repair=True).findings == []
            file, _ = maintenance.open_file(session_id, "kept.txt")
            with file:
                assert file.read() == b"acknowledged"


def test_the_app_s_triggers_dropped_replaced_or_impersonated_are_refused_at_the_open(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: each opened; a trigger named as the app's, run before each insert and
    # returning NULL, was taken for the app's own, and one of the app's dropped or its
    # function replaced was not looked at (the count drifting for good, the audit open).
    name = postgres_engine.create_database()
    url = postgres_engine.url(name)
    try:
        pg.open_database(url, PROFILE)
        with postgres_engine.connect(name) as admin:
            admin.execute(
                "CREATE FUNCTION rt62_skip() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RETURN NULL; END $$;"
                "DROP TRIGGER app_audit_append_only ON app_audit;"
                "DROP TRIGGER app_session_count ON app_sessions;"
                "CREATE TRIGGER app_session_count BEFORE INSERT ON app_sessions FOR EACH ROW"
                " EXECUTE FUNCTION rt62_skip()"
            )
        with pytest.raises(TablesHookedError) as refused:
            pg.open_database(url, PROFILE)
        message = refused.value.message
        assert (
            "switched off: the app's trigger app_audit_append_only on app_audit is gone; "
            "CREATE TRIGGER app_session_count BEFORE INSERT ON public.app_sessions FOR EACH ROW "
            "EXECUTE FUNCTION rt62_skip(), made in place of the app's. A trigger" in message
        ), message
        undo = (
            "CREATE TRIGGER app_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON "
            "app_audit FOR EACH STATEMENT EXECUTE FUNCTION app_audit_append_only(); DROP "
            'TRIGGER "app_session_count" ON "app_sessions"; CREATE TRIGGER app_session_count '
            "AFTER INSERT OR DELETE OR UPDATE OF deleted_at ON app_sessions FOR EACH ROW "
            "EXECUTE FUNCTION app_session_count()"
        )
        assert f"run `{undo}`" in message
        with postgres_engine.connect(name) as admin:
            admin.execute(undo)  # type: ignore[arg-type]
            admin.execute(
                "CREATE OR REPLACE FUNCTION app_audit_append_only() RETURNS trigger"
                " LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$"
            )
        with pytest.raises(TablesHookedError) as replaced:
            pg.open_database(url, PROFILE)
        assert "the function app_audit_append_only() of the app's trigger" in (
            replaced.value.message
        )
        with postgres_engine.connect(name) as admin:
            admin.execute(replaced.value.message.split("run `")[-1].split("`")[0])  # type: ignore[arg-type]
        assert pg.open_database(url, PROFILE).profile == PROFILE

        # A trigger after each insert, which the open leaves alone (a CDC tool's kind), that
        # deletes the row at the commit. Before: the upload was answered with its digest,
        # then not found, its bytes deleted as no row's.
        with _replica(s3_engine, (url, new_blob_url(s3_engine))) as store:
            session_id = store.create_session("t")["id"]
            with postgres_engine.connect(name) as admin:
                admin.execute(
                    "CREATE FUNCTION rt62_gone() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                    " DELETE FROM app_files WHERE id = NEW.id; RETURN NULL; END $$;"
                    "CREATE CONSTRAINT TRIGGER rt62_gone AFTER INSERT ON app_files"
                    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rt62_gone()"
                )
            objects = len(list(store.objects.objects()))
            with pytest.raises(WriteNotStoredError) as gone:
                store.put_file(session_id, "a.txt", b"acknowledged?")
            assert gone.value.http_status == 503
            assert gone.value.message == (
                f"database {pg.mask_url(url)} did not store the upload of 'a.txt' into session "
                f"{session_id}: its INSERT into app_files wrote a row, but once every trigger "
                "had run that row was gone or not as sent (its object, size or digest), as a "
                "trigger of another's that changes a row before it is stored, or deletes or "
                "updates it after, makes it; nothing was changed (its transaction was rolled "
                "back, and the upload's object deleted). `SELECT tgname, "
                "pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'app_files'::regclass "
                "AND NOT tgisinternal` lists the triggers on that table: drop the one that "
                "changes its rows (`DROP TRIGGER <name> ON app_files`), then retry"
            )
            assert len(list(store.objects.objects())) == objects
            # One that changes the digest before the row is stored, added under the replica
            # (red team 62's not stopped: the row stored was not the one sent).
            with postgres_engine.connect(name) as admin:
                admin.execute(
                    "DROP TRIGGER rt62_gone ON app_files;"
                    "CREATE FUNCTION rt62_digest() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                    " NEW.sha256 := repeat('0', 64); RETURN NEW; END $$;"
                    "CREATE TRIGGER rt62_digest BEFORE INSERT ON app_files FOR EACH ROW"
                    " EXECUTE FUNCTION rt62_digest()"
                )
            with pytest.raises(WriteNotStoredError, match="not as sent"):
                store.put_file(session_id, "a.txt", b"acknowledged?")
            assert len(list(store.objects.objects())) == objects
            with postgres_engine.connect(name) as admin:
                admin.execute("DROP TRIGGER rt62_digest ON app_files")
            store.put_file(session_id, "a.txt", b"kept")
            assert [f["name"] for f in store.list_files(session_id)] == ["a.txt"]
    finally:
        postgres_engine.drop_database(name)
