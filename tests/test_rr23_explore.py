from __future__ import annotations

import psycopg
import test_redteam_s37_remote
from engines import S3Engine
from replicas import Production
from test_redteam_s37_remote import _set_for_database
from test_redteam_s39_ops import _kept

production = test_redteam_s37_remote.production


def _show(tag, done):
    print(f"\n=== {tag}: exit {done.returncode}\n{done.stdout[-1500:]}\n{done.stderr[-2500:]}")


def test_read_only(production: Production, s3_engine: S3Engine) -> None:
    replica = production.start()
    sid = _kept(production, replica)
    _set_for_database(production.database_url, "default_transaction_read_only", "on")
    with production.client(replica) as http:
        # new connections only: end the pool's backends
        dbname = production.database_url.rpartition("/")[2]
        with psycopg.connect(production.database_url, autocommit=True) as admin:
            admin.execute("SET default_transaction_read_only = off")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')", (dbname,))
        for i in range(3):
            r = http.put(f"/sessions/{sid}/files/b{i}.txt", content=b"b")
            print("PUT", r.status_code, r.text[:1500])
        with psycopg.connect(production.database_url, autocommit=True) as admin:
            admin.execute("SET default_transaction_read_only = off")
            admin.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
        for i in range(4):
            r = http.put(f"/sessions/{sid}/files/c{i}.txt", content=b"c")
            print("PUT-after", r.status_code, r.text[:300])
    replica.stop()
    for args in (("doctor",),):
        _show(args, production.run(*args))
