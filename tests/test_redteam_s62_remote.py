"""Red team 62 on PostgreSQL and object storage.

What broke:

- A database whose app tables (or their sequences) were made UNLOGGED (``ALTER TABLE ...
  SET UNLOGGED``, the common advice for a quick bulk load or restore, never set back).
  PostgreSQL writes no WAL for such a table and empties it as it starts again after a crash:
  the app opened the database, served and acknowledged every write, and after ``pg_ctl stop
  -m immediate`` (by hand, a cluster of its own) every session and file row was gone, the
  next open refused as a stamp "deleted by hand" with the advice to put the row back; `app
  doctor` said nothing of it beforehand. An open (every command, a replica's start) now
  refuses such a database before anything is written (``tables_unlogged``, 78), naming the
  tables and sequences, what a crash does to them, and the ``ALTER ... SET LOGGED``
  statements in an order PostgreSQL takes; after a crash emptied the stamp too, the refusal
  says the rows are lost and to restore them from a backup first; `app doctor` lists the
  same (``durability``, and its ``stamp`` line for the emptied case, which called the app's
  own tables "tables of another application").

- A trigger of another's on the app's tables that skips its writes (``BEFORE INSERT ON
  app_files ... RETURN NULL``), or a rule ``DO INSTEAD NOTHING``, under a live replica: the
  upload was answered 201 with its digest, then not found, its bytes deleted as no row's;
  a rule on ``UPDATE`` made every delete a bare ``FeatureNotSupported`` (500); one that
  skipped updates had a delete refused as "has no file" of a file that is there; one on
  ``app_audit`` let a delete through unaudited. An insert of a file's, a session's or an
  audit row, and an update of a row the app knows is there (a delete's, a replace's, a
  restore's), that writes none is now refused at the write (``write_not_stored``, 503/69:
  rolled back, the object deleted), and the open and `app
  doctor` refuse such triggers (run before or instead of each row's change), any rule, and
  the app's own triggers switched off (``tables_hooked``, 78), quoting each as PostgreSQL
  defines it and the statement that undoes it; an AFTER trigger (a change-data-capture
  tool's) is left alone.

- A custom endpoint combined with an option of the AWS config file that needs AWS's own
  (``s3 = use_accelerate_endpoint = true`` under ``[default]``, as a developer's
  ``~/.aws/config`` or ``AWS_CONFIG_FILE`` may hold for another project): every request
  was refused as the store being unavailable (69, retry later) and told to check
  ``s3_endpoint_url``, ``blob_url`` and the credentials, none of which was wrong. It is now
  ``s3_client_settings`` (78), naming where the S3 client read it.

- An ``ObjectStore`` given no endpoint (``s3_endpoint_url`` unset: AWS's, to the sandbox's
  check of a test's prefix as to the check of the profiles' prefixes) while the S3 client's
  own configuration names one (``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``, as a shell
  that points the ``aws`` command at a MinIO leaves them, or ``endpoint_url`` in the AWS
  config file): a test's store on ``s3://<bucket>/production/x<run's suffix>`` was apart
  from production's prefix at the suite's store to the sandbox, and the client sent its
  upload there, among production's objects. A client given no endpoint that its own
  configuration sends off AWS is now refused as it is made (``s3_endpoint_elsewhere``,
  78), naming the endpoint, where it is read, and the two remedies (set
  ``s3_endpoint_url`` to it, or unset it); `app doctor` lists it as the bucket's problem.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

import pytest
from engines import PostgresEngine, S3Engine, new_blob_url, scratch
from test_config_remote import REMOTE, SECRETS_FILE
from test_remote_store import PROFILE, _replica

from app.config import load
from app.errors import SandboxViolationError
from app.remote import objects, pg, storage
from app.remote.errors import (
    S3ClientSettingsError,
    S3EndpointElsewhereError,
    TablesHookedError,
    UnloggedTablesError,
    WriteNotStoredError,
)
from app.remote.objects import ObjectStore
from app.storage import Probe

_names = itertools.count()


def doctor_probes(url: str, where: str) -> list[Probe]:
    """What `app doctor` reports of the database at `url` (named `where`) for the testing
    profile given the remote store's profile name, as its checks of the database make it."""
    config = dataclasses.replace(load("testing"), profile=PROFILE)
    with pg.connect(url) as conn:
        return storage._database_state(conn, config, where, {})


def test_a_database_whose_app_tables_are_unlogged_is_refused_before_a_crash_empties_them(
    postgres_engine: PostgresEngine,
) -> None:
    # Before: opened and served; a crash of the server then emptied every such table, and
    # the next open was refused as a stamp "deleted by hand" (by hand, a cluster of its own).
    name = postgres_engine.create_database()
    url = postgres_engine.url(name)
    where = pg.mask_url(url)
    try:
        pg.open_database(url, PROFILE)
        with postgres_engine.connect(name) as admin:
            # app_files references app_sessions: it goes first, as a bulk load's script does.
            for table in ("app_files", "app_sessions"):
                admin.execute(f"ALTER TABLE {table} SET UNLOGGED")  # type: ignore[arg-type]
            admin.execute("ALTER SEQUENCE app_audit_id_seq SET UNLOGGED")
        statements = (
            'ALTER TABLE "app_sessions" SET LOGGED; ALTER TABLE "app_files" SET LOGGED; '
            'ALTER SEQUENCE "app_audit_id_seq" SET LOGGED'
        )
        with pytest.raises(UnloggedTablesError) as refused:
            pg.open_database(url, PROFILE)
        assert refused.value.exit_code == 78
        assert refused.value.message == (
            f"profile {PROFILE!r}: database {where} has the app's tables app_sessions, "
            "app_files and sequence app_audit_id_seq UNLOGGED (`ALTER ... SET UNLOGGED`, as a "
            "bulk load or a restore is sped up): PostgreSQL writes none of their changes to "
            "its WAL, so it empties them as it starts again after a crash, and a standby or a "
            "restore of a base backup has none of their rows: every session, file or audit "
            "row the app acknowledged there would be lost. Refusing to open it; nothing was "
            f"changed. As their owner, run `{statements}` (in this order: a table another "
            "references first; each rewrites its table under an exclusive lock)"
        )
        probes = doctor_probes(url, where)
        durability = [p for p in probes if p.subject == "durability"]
        assert [(p.problem, p.exit_code) for p in durability] == [(refused.value.message, 78)]

        # What a restart after a crash leaves of an UNLOGGED stamp table: no row.
        with postgres_engine.connect(name) as admin:
            admin.execute("ALTER TABLE app_stamp SET UNLOGGED")
            admin.execute("DELETE FROM app_stamp")
        with pytest.raises(UnloggedTablesError) as emptied:
            pg.open_database(url, PROFILE)
        assert (
            "Its stamp row in app_stamp is gone, as such a restart leaves an UNLOGGED table: "
            "the server has restarted after a crash since, and the rows of those tables are "
            "lost; restore them from a backup taken before" in emptied.value.message
        )
        probes = doctor_probes(url, where)
        assert [(p.subject, p.problem) for p in probes][1:] == [("stamp", emptied.value.message)]

        # The remedy, run as written, opens it again (the stamp put back as a backup would).
        with postgres_engine.connect(name) as admin:
            admin.execute(emptied.value.message.split("run `")[-1].split("`")[0])  # type: ignore[arg-type]
            admin.execute(
                "INSERT INTO app_stamp (profile, schema_version) VALUES (%s, %s)",
                (PROFILE, pg.SCHEMA_VERSION),
            )
        assert pg.open_database(url, PROFILE).profile == PROFILE
    finally:
        postgres_engine.drop_database(name)


def test_an_aws_config_option_no_custom_endpoint_takes_is_a_setting_named_where_it_is_read(
    s3_engine: S3Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: ObjectStoreUnavailableError (69, retry later), "Check s3_endpoint_url, blob_url
    # and the credentials", each of which was right.
    config_file = tmp_path / "aws-config"
    config_file.write_text("[default]\ns3 =\n    use_accelerate_endpoint = true\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # The S3 client's session reads the file once per process: a process started with it.
    monkeypatch.setattr(objects, "_sessions", [])
    store = s3_engine.objects(new_blob_url(s3_engine), max_attempts=1)
    with pytest.raises(S3ClientSettingsError) as refused:
        store.read_stamp()
    assert refused.value.exit_code == 78
    assert refused.value.message == (
        f"cannot make the S3 client for object store {store.where}: A custom endpoint cannot "
        "be combined with S3 Accelerate, so it sends no request to s3_endpoint_url. The S3 "
        "client (boto3) reads this from the process's environment (AWS_* variables) or from "
        "the AWS config file (AWS_CONFIG_FILE, else ~/.aws/config; its AWS_PROFILE section): "
        "correct or unset it there; nothing was changed"
    )


def test_a_store_given_no_endpoint_that_the_client_s_own_sends_elsewhere_is_refused(
    s3_engine: S3Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the sandbox took a client given no endpoint for AWS's, apart from production's
    # prefix at the suite's store, while the shell's AWS_ENDPOINT_URL sent it there: the
    # object below was written among production's.
    production = f"p{os.getpid()}-{next(_names)}"
    (tmp_path / ".secrets.toml").write_text(SECRETS_FILE)
    (tmp_path / "settings.toml").write_text(
        REMOTE.replace('"http://127.0.0.1:8333"', f'"{s3_engine.endpoint_url}"').replace(
            "s3://app-data/production", f"s3://{s3_engine.bucket}/{production}"
        )
    )
    monkeypatch.setenv("APP_SETTINGS_DIR", str(tmp_path))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_engine.endpoint_url)
    inside = f"s3://{s3_engine.bucket}/{production}/x{scratch()}"
    with pytest.raises(S3EndpointElsewhereError) as refused:
        ObjectStore(inside, None, s3_engine.access_key_id, s3_engine.secret_access_key).put(
            "planted", b"among production's"
        )
    assert refused.value.exit_code == 78
    assert refused.value.message == (
        f"cannot use object store {inside}: s3_endpoint_url is unset, which names AWS's "
        "endpoint to the app and to the check that no two profiles share a prefix, but the "
        f"S3 client (boto3) would send every request to {s3_engine.endpoint_url}, an endpoint "
        "it reads itself (the process's environment gives it: "
        f"AWS_ENDPOINT_URL={s3_engine.endpoint_url}), where the check never looked. Refusing "
        "to use it; nothing was changed. If that store is the one meant, set s3_endpoint_url "
        f"to {s3_engine.endpoint_url} (the check then compares the profiles where they are); "
        "otherwise unset AWS_ENDPOINT_URL for the app's commands"
    )
    listed = s3_engine.client().list_objects_v2(Bucket=s3_engine.bucket, Prefix=production)
    assert listed.get("KeyCount") == 0, listed
    # Given there, as the message says, it is production's prefix to the sandbox too.
    with pytest.raises(SandboxViolationError, match="the prefix of profile 'production'"):
        ObjectStore(inside, s3_engine.endpoint_url, s3_engine.access_key_id, "x")


def test_a_trigger_or_rule_that_skips_the_app_s_writes_is_refused_at_the_write_and_the_open(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: the upload was acknowledged (PUT's 201, by hand) with its digest, then not
    # found, its bytes deleted as no row's; the open said nothing of the trigger, the rule
    # or the app's trigger off.
    name = postgres_engine.create_database()
    url = postgres_engine.url(name)
    where = pg.mask_url(url)
    pg.open_database(url, PROFILE)
    try:
        with _replica(s3_engine, (url, new_blob_url(s3_engine))) as store:
            session_id = store.create_session("t")["id"]
            other = store.create_session("u")["id"]
            store.put_file(session_id, "old.txt", b"kept before")
            with postgres_engine.connect(name) as admin:
                admin.execute(
                    "CREATE FUNCTION rt62_skip() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN RETURN NULL; END $$;"
                    "CREATE TRIGGER rt62_skip BEFORE INSERT OR UPDATE ON app_files FOR EACH ROW"
                    " EXECUTE FUNCTION rt62_skip();"
                    "CREATE TRIGGER rt62_skip BEFORE INSERT ON app_audit FOR EACH ROW"
                    " EXECUTE FUNCTION rt62_skip();"
                    "CREATE RULE rt62_nothing AS ON INSERT TO app_sessions DO INSTEAD NOTHING;"
                    "ALTER TABLE app_audit DISABLE TRIGGER app_audit_append_only"
                )
            objects = len(list(store.objects.objects()))
            with pytest.raises(WriteNotStoredError) as skipped:
                store.put_file(session_id, "a.txt", b"acknowledged?")
            assert (skipped.value.http_status, skipped.value.exit_code) == (503, 69)
            assert skipped.value.message == (
                f"database {where} did not store the upload of 'a.txt' into session "
                f"{session_id}: its INSERT into app_files wrote no row, as a trigger that "
                "returns NULL before it or a rule DO INSTEAD on that table makes it; nothing "
                "was changed (its transaction was rolled back, and an upload's object "
                "deleted). `app doctor` names the triggers and rules on the app's tables that "
                "the app did not make: drop them (`DROP TRIGGER <name> ON app_files`), then "
                "retry"
            )
            assert [f["name"] for f in store.list_files(session_id)] == ["old.txt"]
            assert len(list(store.objects.objects())) == objects
            with pytest.raises(WriteNotStoredError, match="INSERT into app_sessions wrote no"):
                store.create_session("kept?")
            # Before: "has no file 'old.txt'", of a file that is there.
            with pytest.raises(WriteNotStoredError, match="UPDATE of app_files wrote no row"):
                store.delete_file(session_id, "old.txt")
            # Before: the delete was done, and no audit row said so.
            with pytest.raises(WriteNotStoredError, match="INSERT into app_audit wrote no row"):
                store.delete_session(other)
            assert store.get_session(other)["id"] == other

            with pytest.raises(TablesHookedError) as refused:
                pg.open_database(url, PROFILE)
            undo = (
                'ALTER TABLE "app_audit" ENABLE TRIGGER "app_audit_append_only"; DROP TRIGGER '
                '"rt62_skip" ON "app_audit"; DROP TRIGGER "rt62_skip" ON "app_files"; DROP RULE '
                '"rt62_nothing" ON "app_sessions"'
            )
            message = refused.value.message
            assert message.startswith(
                f"profile {PROFILE!r}: database {where} has, on the app's tables, what the app "
                "did not put there or switched off: the app's trigger app_audit_append_only "
                "on app_audit is off; CREATE TRIGGER rt62_skip BEFORE INSERT ON "
                "public.app_audit FOR EACH ROW EXECUTE FUNCTION rt62_skip(); CREATE TRIGGER "
                "rt62_skip BEFORE INSERT OR UPDATE ON public.app_files FOR EACH ROW EXECUTE "
                "FUNCTION rt62_skip(); CREATE RULE "
                "rt62_nothing AS ON INSERT TO public.app_sessions DO INSTEAD NOTHING. A "
                "trigger run BEFORE or INSTEAD OF each row's change, or a rule, can skip"
            ), message
            assert f"nothing was changed. As the tables' owner, run `{undo}`" in message
            probes = doctor_probes(url, where)
            assert [p.problem for p in probes if p.subject == "triggers"] == [message]

            # An AFTER trigger (a change-data-capture tool's) is left alone; the remedy, run
            # as written, opens the database again, and the upload is kept.
            with postgres_engine.connect(name) as admin:
                admin.execute(undo)  # type: ignore[arg-type]
                admin.execute(
                    "CREATE TRIGGER rt62_after AFTER INSERT ON app_files FOR EACH ROW"
                    " EXECUTE FUNCTION rt62_skip()"
                )
            assert pg.open_database(url, PROFILE).profile == PROFILE
            assert store.put_file(session_id, "a.txt", b"kept")["size"] == 4
            assert [f["name"] for f in store.list_files(session_id)] == ["old.txt", "a.txt"]
    finally:
        postgres_engine.drop_database(name)
