"""Red team 71 on regress, round c (branch rt-regress71c): see docs/explanation/attacks/,
Layers 4 and 7.

What got through: `pg._raised_by_code` (red team 71 on the remote backend) named the first
PL/pgSQL function of an error's ``CONTEXT`` as another's code, the innermost frame. Where
that is the app's own function run by another's code, as ``app_audit_append_only`` (which
refuses any change of app_audit but an insert) under a DBA's trigger that prunes app_audit
after each record, the refusal called the app's guard "code of another's", and its remedy
found the app's own trigger and said to ``DISABLE`` it: an append-only audit made
writable, the DBA's trigger never named. The frame named is now the innermost that is not
the app's, each read from a line of its own.

What got through too: a prepared transaction's gid is any text; one with an escape
character or a newline was printed raw in the ``ROLLBACK PREPARED '...'`` that ends it, as
the terminal shows it (``\\x1b``, `app.errors.printable`): pasted, it named no transaction.
It is now an escape string (``E'...'``), which pastes as printed (`pg.describe_prepared`).

Round k (branch rt-regress71k): a DBA's function that pins its own ``search_path`` runs the
app's guard under it, whose frame then names its schema (``public.app_audit_append_only()``)
and was taken for another's again; a frame named as the app's in any schema is passed over.
Doctor's ``prepared`` line, cut at the description's first `` (``, was cut inside a gid
that holds one: it is now made from the gid, owner and time (`pg.name_prepared`). A frame
ended at the first ``)`` of its line, inside a quoted name holding a newline: it is read
whole, and given in the remedy's queries as an escape string where it needs one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from engines import PostgresEngine
from test_redteam_s62_remote import doctor_probes
from test_redteam_s71_remote import _raised
from test_remote_store import PROFILE

from app.errors import printable
from app.remote import pg
from app.remote.errors import DatabaseRefusedError, ReplicasLiveError

# Audit kept to 90 days by a trigger after each record, as a DBA may: app_audit refuses it.
_PRUNE = """CREATE FUNCTION dba_prune() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN DELETE FROM app_audit WHERE at < now() - interval '90 days'; RETURN NULL; END $$"""


@pytest.fixture(scope="module")
def database(postgres_engine: PostgresEngine) -> Iterator[tuple[str, str]]:
    """One database the app opened, for this module's tests (its name and URL)."""
    with postgres_engine.opened_database(PROFILE) as opened:
        yield opened


def test_the_apps_own_guard_run_by_anothers_trigger_names_the_trigger(
    postgres_engine: PostgresEngine, database: tuple[str, str]
) -> None:
    name, url = database
    where = pg.mask_url(url)
    with postgres_engine.connect(name) as dba:
        dba.execute(_PRUNE)
        dba.execute(
            "CREATE TRIGGER dba_prune AFTER INSERT ON app_audit"
            " FOR EACH STATEMENT EXECUTE FUNCTION dba_prune()"
        )
        try:
            with (
                pytest.raises(DatabaseRefusedError) as refused,
                pg.refusals(where, "the audit record"),
            ):
                pg.audit(dba, PROFILE, "test", "adopt-copy", "x")
        finally:  # the module's database, which its other tests share, as it was
            dba.execute("DROP TRIGGER dba_prune ON app_audit")
        assert refused.value.sqlstate == "P0001"
        assert "app_audit is append-only: DELETE refused" in refused.value.message
        # Before: "in function app_audit_append_only()", and its remedy to disable the
        # app's own trigger, which keeps app_audit append-only.
        assert refused.value.message.endswith("; nothing was changed. " + _raised("dba_prune()"))
        remedy = refused.value.message.split("; nothing was changed. ", 1)[1]
        assert "app_audit_append_only" not in remedy
        # The app's own guard alone: not another's code. The app never sends a DELETE of
        # app_audit, so under one of its statements that is a rewrite (red team 72 on the
        # remote backend: `test_a_rule_that_makes_a_change_of_the_audit_is_named`).
        with pytest.raises(psycopg.errors.RaiseException) as own:
            dba.execute("DELETE FROM app_audit")
        refused_own = pg.refusal(where, own.value, "a statement")
        assert refused_own is not None
        assert "refused a change to app_audit that the app never makes" in refused_own.message
        assert "DISABLE" not in refused_own.message


# A rule of another's made beside a live replica (whose open refuses rules, not one made
# after it): an audit kept to 90 days, as a DBA may keep one, on each record the app adds.
_SESSION = "72" * 16
_RULE = (
    "CREATE RULE dba_keep_90_days AS ON INSERT TO app_audit DO ALSO"
    " DELETE FROM app_audit WHERE at < now() - interval '90 days'"
)


def test_a_rule_that_makes_a_change_of_the_audit_is_named(
    postgres_engine: PostgresEngine, database: tuple[str, str]
) -> None:
    """Red team 72 on the remote backend (branch rt-remote72): round k's *not stopped*. The
    app's guard of app_audit refused each audited operation under such a rule, its
    ``CONTEXT`` naming the app's guard alone: a bare ``RaiseException`` (a 500 from a
    replica, a traceback from a command), naming neither the rule nor what ends it. First
    found with a replica on the suite's engines (`RemoteStore.delete_session`); the app's
    statement here is the one each audited operation runs (`pg.audit`), in a transaction
    that changed a session's row first, as a delete does."""
    name, url = database
    where = pg.mask_url(url)
    with postgres_engine.connect(name) as dba:
        dba.execute(_RULE)
        try:
            with (
                pytest.raises(DatabaseRefusedError) as refused,
                pg.refusals(where, "the session's delete"),
                dba.transaction(),
            ):
                dba.execute(
                    "INSERT INTO app_sessions (id, title, created_at, updated_at)"
                    f" VALUES ('{_SESSION}', 'kept?', now(), now())"
                )
                pg.audit(dba, PROFILE, "server", "trash-session", _SESSION)
            message = refused.value.message
            assert refused.value.sqlstate == "P0001"
            # Before: psycopg.errors.RaiseException, bare.
            assert message.startswith(
                f"database {where} refused the session's delete: app_audit is append-only: "
                "DELETE refused CONTEXT: PL/pgSQL function app_audit_append_only() line 3 at "
                "RAISE (SQLSTATE P0001); nothing was changed. The app's guard of "
                "app_audit (its trigger app_audit_append_only, which keeps the audit "
                "append-only) refused a change to app_audit that the app never makes: it only "
                "inserts there. Something of another's on the app's tables made one of the "
                "app's statement: a rule"
            )
            assert "DISABLE" not in message  # never the app's guard switched off
            assert message.endswith(
                "As the owner of the app's tables, `DROP RULE <name> ON <schema>.<table>` or "
                "`ALTER TABLE <schema>.app_audit DROP CONSTRAINT <name>` resolves it; leave "
                "the app's trigger as it is. A function of another's in another language than "
                "PL/pgSQL that such a rule calls, or that a trigger of another's runs, is named "
                "in the reason's CONTEXT"
            )
            # Nothing was changed, as it says.
            kept = f"SELECT count(*) FROM app_sessions WHERE id = '{_SESSION}'"
            assert dba.execute(kept).fetchone() == (0,)
            # Its queries, run as they are printed, name the rule, and no foreign key.
            rules, keys = (part.split("`", 1)[0] for part in message.split("(`")[1:3])
            assert [row[1:3] for row in dba.execute(rules)] == [("app_audit", "dba_keep_90_days")]
            assert dba.execute(keys).fetchall() == []
        finally:
            dba.execute("DROP RULE dba_keep_90_days ON app_audit")
        pg.audit(dba, PROFILE, "server", "trash-session", _SESSION)  # ended as said


def prepare_holding_the_lock_shared(postgres_engine: PostgresEngine, name: str, gid: str) -> None:
    """Leave prepared transaction `gid` in database `name` holding the app's lock shared, as a
    transaction manager's crash between its two phases leaves one."""
    shared = "SELECT pg_advisory_xact_lock_shared({}, {})".format(*pg.HOLDERS_LOCK)
    with postgres_engine.connect(name) as dba:
        dba.execute("BEGIN")
        dba.execute(shared)
        dba.execute(psycopg.sql.SQL("PREPARE TRANSACTION {}").format(gid))


# A gid as a transaction manager may make one: an escape, a newline, a backslash, a quote.
GID = "xa:\x1b[2J\nfix\\1 'b' \u202e"


def test_a_gid_a_terminal_acts_on_is_printed_to_paste_as_it_shows(
    postgres_engine: PostgresEngine, database: tuple[str, str]
) -> None:
    name, url = database
    prepare_holding_the_lock_shared(postgres_engine, name, GID)
    try:
        with pytest.raises(ReplicasLiveError) as live, pg.maintenance(url, PROFILE, "check"):
            pass
        # As `app` prints a refusal (`app.cli.fail`): each line printable.
        shown = "\n".join(printable(line) for line in live.value.message.split("\n"))
        assert "\n" not in shown  # one line, as doctor's `prepared` line too
        [statement] = re.findall(r"`(ROLLBACK PREPARED [^`]*)` ends it", shown)
        assert statement == ("ROLLBACK PREPARED E'xa:\\x1b[2J\\x0afix\\\\1 \\'b\\' \\u202e'")
        with postgres_engine.connect(name) as dba:
            # Before: "ROLLBACK PREPARED 'xa:\\x1b[2J" and "fix\\1 ''b'' \\u202e'" on two
            # lines, which named no prepared transaction.
            dba.execute(statement.encode())
    finally:
        with postgres_engine.connect(name) as dba:
            left = dba.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
            ).fetchall()
            for (gid,) in left:
                dba.execute(psycopg.sql.SQL("ROLLBACK PREPARED {}").format(gid))
    assert left == []


# Red team 71 on regress, round k: the DBA's trigger function pins its own search_path, as
# PostgreSQL's docs advise for a SECURITY DEFINER function; the app's guard it runs is
# compiled under that path, which leaves the app's schema out: its frame names the schema.
_PINNED = """CREATE FUNCTION dba.prune() RETURNS trigger LANGUAGE plpgsql
SET search_path = dba, pg_temp AS $$
BEGIN DELETE FROM {}.app_audit WHERE at < now() - interval '90 days'; RETURN NULL; END $$"""
# Another's function in another schema, named as the app's guard is: its own code.
_NAMESAKE = """CREATE FUNCTION dba.app_audit_append_only() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'audit frozen for a migration'; END $$"""


@contextlib.contextmanager
def _dba_schema(
    postgres_engine: PostgresEngine, name: str, own: str
) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """A DBA's session of its own on database `name` (the app's guard compiled in it first),
    with a schema `own` of the DBA's, dropped at the end with what uses it: the session and
    the app's schema."""
    with postgres_engine.connect(name) as dba:
        [(schema,)] = dba.execute("SELECT current_schema()").fetchall()
        dba.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(own)))
        try:
            yield dba, schema
        finally:
            dba.execute(
                psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(own))
            )


def _audit_refused(dba: psycopg.Connection[Any], where: str) -> str:
    """The message of the refusal of an audit record the app writes on `dba`."""
    with (
        pytest.raises(DatabaseRefusedError) as refused,
        pg.refusals(where, "the audit record"),
    ):
        pg.audit(dba, PROFILE, "test", "adopt-copy", "x")
    return refused.value.message


@contextlib.contextmanager
def _pasted_under(dba: psycopg.Connection[Any], path: str, schema: str) -> Iterator[None]:
    """`dba`'s search_path set to `path` (a session that leaves the app's schema out, as a
    remedy's queries are pasted into), then back to the app's `schema`."""
    dba.execute(f"SET search_path = {path}".encode())
    try:
        yield
    finally:
        dba.execute(psycopg.sql.SQL("SET search_path = {}").format(psycopg.sql.Identifier(schema)))


def test_the_apps_own_guard_under_a_pinned_search_path_is_the_apps(
    postgres_engine: PostgresEngine, database: tuple[str, str]
) -> None:
    name, url = database
    where = pg.mask_url(url)
    with _dba_schema(postgres_engine, name, "dba") as (dba, schema):
        dba.execute(psycopg.sql.SQL(_PINNED).format(psycopg.sql.Identifier(schema)))
        dba.execute(
            "CREATE TRIGGER dba_prune AFTER INSERT ON app_audit"
            " FOR EACH STATEMENT EXECUTE FUNCTION dba.prune()"
        )
        message = _audit_refused(dba, where)
        context = f"PL/pgSQL function {schema}.app_audit_append_only() line 3 at RAISE"
        assert context in message
        # Before: "in function public.app_audit_append_only()", its remedy to disable
        # the app's own trigger. The DBA's function is named as its pinned path shows it.
        assert message.endswith("; nothing was changed. " + _raised("prune()"))
        remedy = message.split("; nothing was changed. ", 1)[1]
        assert "app_audit_append_only" not in remedy
        # Its query, pasted as printed into a session whose path leaves `dba` out (psql's
        # default), names the trigger. Before (round k's *not stopped*, closed by red team
        # 72 on the remote backend): `'prune()'::regprocedure`, an error there,
        # `function "prune()" does not exist`.
        [query] = re.findall(r"\(`(SELECT tgrelid.*?)` names it", remedy)
        with _pasted_under(dba, '"$user", public', schema):
            assert [row[1] for row in dba.execute(query)] == ["dba_prune"]
        # A namesake of the app's guard in another schema, raising alone: named.
        dba.execute("DROP TRIGGER dba_prune ON app_audit")
        dba.execute(_NAMESAKE)
        dba.execute(
            "CREATE TRIGGER dba_freeze AFTER INSERT ON app_audit"
            " FOR EACH STATEMENT EXECUTE FUNCTION dba.app_audit_append_only()"
        )
        assert _audit_refused(dba, where).endswith(
            "; nothing was changed. " + _raised("dba.app_audit_append_only()")
        )


# Round k: a gid with " (" in it, as a transaction manager's retry count may give one.
RETRIED = "xa (retry 2) of role x, prepared"


def test_doctors_prepared_line_gives_a_gid_with_a_parenthesis_whole(
    postgres_engine: PostgresEngine, database: tuple[str, str]
) -> None:
    name, url = database
    prepare_holding_the_lock_shared(postgres_engine, name, RETRIED)
    try:
        [found] = [p for p in doctor_probes(url, pg.mask_url(url)) if p.subject == "prepared"]
        # Before: "prepared transaction 'xa", cut at the gid's own " (".
        assert re.fullmatch(
            r"prepared transaction 'xa \(retry 2\) of role x, prepared' of role \w+, "
            r"prepared \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
            found.found,
        )
        assert found.exit_code == 69
    finally:
        with postgres_engine.connect(name) as dba:
            dba.execute(psycopg.sql.SQL("ROLLBACK PREPARED {}").format(RETRIED))


# Round k: a DBA's function whose quoted name holds a newline, then the app's guard's frame.
FORGED = '"f\nPL/pgSQL function app_audit_append_only"()'


def test_a_function_whose_quoted_name_holds_a_newline_is_named_whole(
    postgres_engine: PostgresEngine, database: tuple[str, str]
) -> None:
    name, url = database
    with postgres_engine.connect(name) as dba:
        dba.execute(
            f"CREATE FUNCTION {FORGED} RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RAISE EXCEPTION 'audit frozen'; END $$"
        )
        dba.execute(
            f"CREATE TRIGGER dba_freeze AFTER INSERT ON app_audit"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {FORGED}"
        )
        try:
            with (
                pytest.raises(DatabaseRefusedError) as refused,
                pg.refusals(pg.mask_url(url), "the audit record"),
            ):
                pg.audit(dba, PROFILE, "test", "adopt-copy", "x")
            # Before: "in function app_audit_append_only\"()", the frame ended at the newline
            # inside its name, and a query that named no function.
            assert f"Code of another's raised it, in function {FORGED}: " in refused.value.message
            [found] = re.findall(r"tgfoid (.*?)` names it", refused.value.message)
            assert found == (
                "IN (SELECT oid FROM pg_proc WHERE proname = "
                "E'f\\x0aPL/pgSQL function app_audit_append_only' AND pronargs = 0)"
            )
            # Pasted as printed, it names the trigger.
            named = dba.execute(
                f"SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgfoid {found}"
            ).fetchall()
            assert named == [("dba_freeze",)]
        finally:
            dba.execute(f"DROP FUNCTION {FORGED} CASCADE")


# Red team 72 on regress, round h: the rule of red team 72 on the remote backend, calling a
# DBA's SQL function that pins its own search_path, as PostgreSQL's docs advise for one that
# is SECURITY DEFINER (a function with SET is never inlined: it runs under its own path).
_PINNED_SQL = """CREATE FUNCTION dba72h.keep_90_days() RETURNS void LANGUAGE sql
SECURITY DEFINER SET search_path = dba72h, pg_temp AS $$
DELETE FROM {}.app_audit WHERE at < now() - interval '90 days' $$"""


def test_a_rule_calling_a_pinned_sql_function_is_a_rewrite_not_the_guards_code(
    postgres_engine: PostgresEngine, database: tuple[str, str]
) -> None:
    """Red team 72 on regress, round h (branch rt-regress72h). The app's guard, compiled
    first in a session under the DBA's function's path (which leaves the app's schema out),
    is named ``<schema>.app_audit_append_only()`` there, and was not the bare name the
    rewrite's refusal looked for: it was "Code of another's raised it, in function
    public.app_audit_append_only()", whose remedy found the app's own trigger and said to
    DISABLE it, and never named the rule. First found by reading `_raised_by_code`'s
    ``called == [_AUDIT_GUARD]`` beside round k's pinned-path test, then run here. Its queries
    leaned on the path of the session they were pasted into (``current_schema()``,
    ``'app_audit'::regclass``): they now name no schema and need none."""
    name, url = database
    where = pg.mask_url(url)
    with _dba_schema(postgres_engine, name, "dba72h") as (dba, schema):  # and the rule using it
        dba.execute(psycopg.sql.SQL(_PINNED_SQL).format(psycopg.sql.Identifier(schema)))
        dba.execute(
            "CREATE RULE dba_keep_90_days AS ON INSERT TO app_audit"
            " DO ALSO SELECT dba72h.keep_90_days()"
        )
        message = _audit_refused(dba, where)
        context = f"PL/pgSQL function {schema}.app_audit_append_only() line 3 at RAISE"
        assert context in message  # the frame as its path showed it
        assert "refused a change to app_audit that the app never makes" in message
        remedy = message.split("; nothing was changed. ", 1)[1]
        assert "DISABLE" not in remedy  # never the app's guard switched off
        assert "app_audit_append_only()" not in remedy
        # Its queries, pasted as printed into a session whose path leaves the app's schema
        # out (the app's given in its URL's options; psql's own), name the rule and run.
        # Before: `schemaname = current_schema()` found none there, and
        # `'app_audit'::regclass` was an error, `relation "app_audit" does not exist`.
        rules, keys = (part.split("`", 1)[0] for part in remedy.split("(`")[1:3])
        with _pasted_under(dba, "pg_catalog", schema):
            assert [row[:3] for row in dba.execute(rules)] == [
                (schema, "app_audit", "dba_keep_90_days")
            ]
            assert dba.execute(keys).fetchall() == []


# Red team 72 on regress, round j: another application's tables in the same database, named
# as Django names an app `app`'s (`app_<model>`), or beginning so (`apps_log`), each with a
# rule of its own, as its owner may.
_OTHERS = """CREATE SCHEMA other72j;
CREATE TABLE other72j.app_user (id integer);
CREATE TABLE other72j.apps_log (id integer);
CREATE RULE other_user_kept AS ON DELETE TO other72j.app_user DO INSTEAD NOTHING;
CREATE RULE other_log_kept AS ON DELETE TO other72j.apps_log DO INSTEAD NOTHING"""


def test_the_rewrites_query_names_no_rule_of_another_applications_table(
    postgres_engine: PostgresEngine, database: tuple[str, str]
) -> None:
    """Red team 72 on regress, round j (branch rt-regress72j). The rewrite's query of rules,
    ``pg_rules WHERE tablename LIKE 'app\\_%'`` in every schema since round h, listed the
    rules of another application's tables named so (`other72j.app_user`), beside the one on
    app_audit, each with the remedy's ``DROP RULE <name> ON <schema>.<table>`` said to
    resolve it; pasted under ``standard_conforming_strings`` off, its ``\\_`` was a bare
    ``_``, any character, and it listed `other72j.apps_log`'s too. First found by reading
    round h's query beside its brief, then run here. It names the app's tables now."""
    name, url = database
    where = pg.mask_url(url)
    with postgres_engine.connect(name) as dba:
        dba.execute(_OTHERS)
        dba.execute(_RULE)
        try:
            with pytest.raises(DatabaseRefusedError) as refused, pg.refusals(where, "the audit"):
                pg.audit(dba, PROFILE, "server", "trash-session", _SESSION)
            rules = refused.value.message.split("(`")[1].split("`", 1)[0]
            found = [("app_audit", "dba_keep_90_days")]
            assert [row[1:3] for row in dba.execute(rules)] == found
            dba.execute("SET standard_conforming_strings = off")
            try:
                assert [row[1:3] for row in dba.execute(rules)] == found
            finally:
                dba.execute("RESET standard_conforming_strings")
        finally:
            dba.execute("DROP RULE dba_keep_90_days ON app_audit")
            dba.execute("DROP SCHEMA other72j CASCADE")
