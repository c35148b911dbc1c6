"""A file's newest trashed version on PostgreSQL, with and without ``app_files_trashed``.

Starts the suite's throwaway PostgreSQL cluster (tests/engines.py), makes two databases
with this tree's schema (`pg.open_database`), drops ``app_files_trashed`` from one (a
database made before it: red team 70 on regress), and fills both alike: one session of
``--names`` files, each replaced ``--versions`` times (the trashed rows written directly,
as the app writes them: a ``trash_name`` of the time and the session). Then, in turns
(``--rounds``, the two databases alternated), the statements a file's 404 runs
(`RemoteTrash.deleted_entry`, of a name never there and of one with versions), a restore
(`app.remote.trash._TRASHED_FILE`), and each upload, delete or replace of a file under
the session's lock (`Database.write`'s newest ``deleted_at`` of its name: a new name's and
one with versions), each timed by the server
(``EXPLAIN (ANALYZE)``'s execution time). Reported: the median per statement and
database, in milliseconds, and the plan's first line.

Run: ``.venv/bin/python bench/trashed_lookup.py [--names 10000 --versions 20 --rounds 15]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
SESSION = "0" * 31 + "1"


def _statements() -> dict[str, tuple[str, tuple[object, ...]]]:
    from app.remote import db, trash

    return {
        "404, a name never there": (trash._NEWEST_TRASHED, (SESSION, "never-there.txt")),
        "404, a name of 20 versions": (trash._NEWEST_TRASHED, (SESSION, "f-5000.txt")),
        "restore's look": (trash._TRASHED_FILE, (SESSION, "f-5000.txt", None, None)),
        "an upload's newest deleted_at, a new name": (
            db.NEWEST_DELETE,
            (SESSION, "never-there.txt"),
        ),
        "an upload's newest deleted_at, another session's new name": (
            db.NEWEST_DELETE,
            ("0" * 31 + "2", "never-there.txt"),
        ),
        "a replace's newest deleted_at": (db.NEWEST_DELETE, (SESSION, "f-5000.txt")),
    }


def _fill(conn: object, names: int, versions: int) -> None:
    conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO app_sessions (id, title, created_at, updated_at)"
        " VALUES (%s, 'bench', now(), now())",
        (SESSION,),
    )
    conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO app_files (session_id, name, blob, size, sha256, uploaded_at,"
        " deleted_at, deleted_reason, trash_name)"
        " SELECT %s, 'f-' || n || '.txt', md5(n || '-' || v), 1, repeat('0', 64), now(),"
        " now() - (v || ' seconds')::interval, 'replace',"
        " to_char(now() - (v || ' seconds')::interval, 'YYYYMMDD\"T\"HH24MISSUS\"Z\"')"
        " || '-' || %s || '-file-' || md5(n || '-' || v)"
        " FROM generate_series(1, %s) n, generate_series(1, %s) v",
        (SESSION, SESSION, names, versions),
    )
    conn.execute("ANALYZE app_files")  # type: ignore[attr-defined]


def _nodes(plan: dict[str, object]) -> str:
    """A plan's nodes, outermost first, with the index each scan takes."""
    shown = str(plan["Node Type"]) + (f" {plan['Index Name']}" if "Index Name" in plan else "")
    below = plan.get("Plans")
    return shown + (" > " + _nodes(below[0]) if isinstance(below, list) and below else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    sys.path.insert(0, str(PROJECT / "tests"))
    sys.path.insert(0, str(PROJECT))
    import psycopg
    from engines import start_postgres

    from app.remote import pg

    postgres = start_postgres()
    kinds = ("without the index", "with it")
    times: dict[tuple[str, str], list[float]] = {}
    plans: dict[tuple[str, str], str] = {}
    try:
        urls = {}
        for kind in kinds:
            database = postgres.create_database("bench")
            urls[kind] = postgres.url(database)
            pg.open_database(urls[kind], "production")
            with psycopg.connect(urls[kind], autocommit=True) as conn:
                if kind == kinds[0]:
                    conn.execute("DROP INDEX app_files_trashed")
                _fill(conn, args.names, args.versions)
        statements = _statements()
        for round_ in range(args.rounds):
            for kind in kinds if round_ % 2 == 0 else tuple(reversed(kinds)):
                with psycopg.connect(urls[kind], autocommit=True) as conn:
                    for label, (sql, params) in statements.items():
                        rows = conn.execute(
                            "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params
                        ).fetchone()
                        found = rows[0][0]  # type: ignore[index]
                        times.setdefault((label, kind), []).append(found["Execution Time"])
                        plans[(label, kind)] = _nodes(found["Plan"])
    finally:
        postgres.stop()
    print(
        f"{args.names} names x {args.versions} trashed versions in one session, "
        f"{args.rounds} rounds, load {os.getloadavg()[0]:.1f}"
    )
    for label in statements:
        row = [f"{label}:"]
        for kind in kinds:
            median = statistics.median(times[(label, kind)])
            row.append(f"{kind} {median:.3f} ms ({plans[(label, kind)]})")
        print("  ".join(row))


if __name__ == "__main__":
    main()
