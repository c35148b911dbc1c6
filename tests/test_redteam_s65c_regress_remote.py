"""Red team 65 on regress, durable commits outside a replica's writes (branch rt-regress65c):
see docs/explanation/attacks/.

What broke: rt-regress65b set ``synchronous_commit`` at each replica write's commit point,
after its triggers. The transactions of `app.remote.pg.committed` (a re-stamp, an open that
makes or upgrades the schema, a prefix forgotten) are no replica's writes: they had it only
as their connection set it when it opened, and a trigger of another's on the app's tables
that says ``SET LOCAL synchronous_commit = off`` (a logging tool's, on the stamp) made a
re-stamp commit with ``off``: "is now stamped", answered before its WAL was written.

What changed: `committed` sets it, as the replicas' writes do, after the body's statements.
"""

from __future__ import annotations

from engines import PostgresEngine
from test_rows66_remote import at_the_commit

from app.remote import pg

# A logging trigger that makes its transaction's commit asynchronous, and an observer run
# by the COMMIT itself that records the value the commit is made with (`at_the_commit`).
_LOGGING = """
CREATE SCHEMA rt65c;
CREATE TABLE rt65c.seen (id serial, value text);
CREATE FUNCTION rt65c.cheap_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL synchronous_commit = off;
    RETURN NULL;
END $$;
CREATE TRIGGER rt65c_cheap_log AFTER INSERT OR UPDATE OR DELETE ON app_stamp
    FOR EACH ROW EXECUTE FUNCTION rt65c.cheap_log();
CREATE FUNCTION rt65c.seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rt65c.seen (value) VALUES (current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
""" + at_the_commit("rt65c", "app_audit", "INSERT")


def test_a_restamp_commits_with_synchronous_commit_on_whatever_a_trigger_set(
    postgres_engine: PostgresEngine,
) -> None:
    # Before: the re-stamp and its audit row committed with `off`, the trigger's.
    name = postgres_engine.create_database("rt65c")
    url = postgres_engine.url(name)
    try:
        pg.open_database(url, "development")
        with postgres_engine.connect(name) as conn:
            conn.execute(_LOGGING)  # type: ignore[arg-type]
        with pg.maintenance(url, "production", "re-stamp it") as maintenance:
            stamp = maintenance.restamp("development")
        assert (stamp.profile, stamp.restamped_from) == ("production", "development")
        with postgres_engine.connect(name) as conn:
            seen = [v for (v,) in conn.execute("SELECT value FROM rt65c.seen ORDER BY id")]
        assert seen == ["on"]
    finally:
        postgres_engine.drop_database(name)
