from __future__ import annotations

import forked_app
import psycopg
import test_redteam_s37_remote
from engines import S3Engine
from replicas import Production
from test_redteam_s39_ops import _kept

production = test_redteam_s37_remote.production


def _show(tag, done):
    print(f"\n=== {tag}: exit {done.returncode}\n{done.stdout[-1500:]}\n{done.stderr[-2500:]}")


def test_schemas(production: Production, s3_engine: S3Engine) -> None:
    replica = production.start()
    _kept(production, replica)
    with psycopg.connect(production.database_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA staging")
    from app import sandbox
    scratch = sandbox.current_run(production.env).scratch
    env = {**production.env, "APP_DATABASE_URL": production.database_url + "?options=-c%20search_path%3Dstaging",
           "APP_BLOB_URL": production.blob_url.removesuffix(scratch) + "-staging" + scratch}
    for args in (("data", "check"), ("status",), ("data", "empty-trash", "--yes-i-mean-it"), ("sessions", "list")):
        _show(args, forked_app.run(env, list(args)))
    r2 = forked_app.serve(env, production.tmp_path / "r2.log", ["serve", "--port", "0"])
    import time; time.sleep(5)
    print("R2", r2.poll(), (production.tmp_path / "r2.log").read_text()[-2500:])
    r2.kill()
    _show("prod check", production.run("data", "check"))
    _show("prod status", production.run("status"))
