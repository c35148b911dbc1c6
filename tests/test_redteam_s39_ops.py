"""Red team 39 on operations: the remote backend as an operator meets it.

All real: the suite's PostgreSQL cluster and ``weed`` (tests/engines.py), ``app`` commands
and ``app serve`` replicas in processes of their own (tests/replicas.py). What broke:

- a copy of production's database (a dump restored into a new database to check the
  backup, as the PostgreSQL how-to's restore step says to run ``app data check`` on it) was
  taken for production's own: its rows carry the same database id, so the object prefix
  accepted it, and with production's replicas live on the original, the copy's ``app data
  check`` called every file uploaded since the dump "an upload whose transaction never
  committed" and ``--repair`` deleted it: an acknowledged file lost.
"""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path

import forked_app
import test_redteam_s37_remote
from engines import PostgresEngine
from replicas import Production

from app import sandbox

production = test_redteam_s37_remote.production  # the fixture, as red team 37 made it


def _pg_bin(name: str) -> str:
    return str(Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]) / name)


def _restored_copy(production: Production, postgres_engine: PostgresEngine) -> dict[str, str]:
    """Production's database dumped and restored into a new database, as the how-to's
    backup and restore steps do; the environment of a production command that names it."""
    run = sandbox.current_run(production.env)
    assert run is not None
    scratch = production.database_url.rpartition("/")[2]
    configured = scratch.removesuffix(run.scratch)
    copy = f"copy_{configured}"
    with postgres_engine.connect() as admin:
        admin.execute(f'CREATE DATABASE "{copy}{run.scratch}"')
    dump = subprocess.run(
        [_pg_bin("pg_dump"), "--format=custom", production.database_url],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(
        [
            _pg_bin("pg_restore"),
            "--no-owner",
            f"--dbname={postgres_engine.url(copy + run.scratch)}",
        ],
        input=dump,
        check=True,
    )
    settings = Path(production.env["APP_SETTINGS_DIR"])
    other = settings.parent / "settings-of-the-copy"
    other.mkdir()
    text = (settings / "settings.toml").read_text()
    assert f'/{configured}"' in text
    (other / "settings.toml").write_text(text.replace(f'/{configured}"', f'/{copy}"'))
    return {**production.env, "APP_SETTINGS_DIR": str(other)}


def test_a_restored_copy_of_the_database_cannot_repair_away_what_the_original_acknowledged(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    replica = production.start()
    with production.client(replica) as client:
        sid = client.post("/sessions", json={"title": "kept"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/a.txt", content=b"dumped").status_code == 201
        copy = _restored_copy(production, postgres_engine)
        # Acknowledged after the dump: only the original's rows name its object.
        assert client.put(f"/sessions/{sid}/files/b.txt", content=b"later").status_code == 201

        for argv in (["data", "check"], ["data", "check", "--repair"]):
            done = forked_app.run(copy, argv)
            assert done.returncode == 78, done.stdout + done.stderr
            message = " ".join(done.stderr.split())
            assert "one is a copy of the other (a restored dump" in message
            assert "cluster system identifier/database oid" in message
            assert "would delete the files acknowledged by the other since the copy" in message
            assert "nothing was changed" in message
            assert "app data restamp --profile production --from production --yes-i-mean-it" in (
                message
            )
            assert "repaired" not in done.stdout
        assert client.get(f"/sessions/{sid}/files/b.txt").content == b"later"

        # The original, meanwhile, is as it was.
        assert replica.stop() == 0, replica.output
    done = production.run("data", "check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_restored_copy_is_adopted_by_restamp_and_the_original_is_then_refused(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    replica = production.start()
    with production.client(replica) as client:
        sid = client.post("/sessions", json={"title": "kept"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/a.txt", content=b"dumped").status_code == 201
    assert replica.stop() == 0, replica.output
    copy = _restored_copy(production, postgres_engine)

    # The documented restore: the copy replaces the original, once restamped.
    done = forked_app.run(
        copy,
        ["data", "restamp", "--profile", "production", "--from", "production", "--yes-i-mean-it"],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = forked_app.run(copy, ["data", "check"])
    assert done.returncode == 0, done.stdout + done.stderr
    done = forked_app.run(copy, ["sessions", "show", sid])
    assert done.returncode == 0 and "a.txt" in done.stdout, done.stdout + done.stderr

    # One writer: the original is now the copy's stranger.
    done = production.run("data", "check", "--repair")
    assert done.returncode == 78, done.stdout + done.stderr
    assert "one is a copy of the other" in " ".join(done.stderr.split())
