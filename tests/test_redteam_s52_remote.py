"""Red team 52 on PostgreSQL and object storage.

What broke:

- A connection service file whose section is given twice (``[staging]`` appended again to
  change its database), or whose section names a key twice (a ``dbname=`` line added below
  the old one). The app read the file with `configparser`, which merges the two and keeps
  the last value; libpq stops at the end of the section's first appearance and keeps a
  key's first value. Staging's ``service=staging`` reached production's database while the
  overlap check saw another one, and said nothing. The file is now read as libpq reads it.

All real: the suite's cluster (and ``weed``), libpq's own connection to show where a URL
leads.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from engines import PostgresEngine

from app.config import inspect_profiles
from app.remote import pg
from app.remote.errors import ResourceOverlapError

# --- a service file read as libpq reads it ---------------------------------------------------


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **profiles: dict[str, str]) -> None:
    """A settings directory of its own, with `profiles` besides development and testing."""
    for name in [n for n in os.environ if n.startswith("APP_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("ENV_FOR_DYNACONF", raising=False)
    text = f'[development]\ndata_root = "{tmp_path}/development"\n'
    text += f'[testing]\ndata_root = "{tmp_path}/testing"\n'
    for name, keys in profiles.items():
        text += f"[{name}]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    (tmp_path / "settings.toml").write_text(text)
    monkeypatch.setenv("APP_SETTINGS_DIR", str(tmp_path))


def _overlaps() -> list[ResourceOverlapError]:
    report = inspect_profiles("development")
    return [p for p in report.problems if isinstance(p, ResourceOverlapError)]


@pytest.mark.parametrize("twice", ["section", "key"])
def test_a_service_given_twice_is_the_database_libpq_connects_to(
    postgres_engine: PostgresEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, twice: str
) -> None:
    production = postgres_engine.create_database("production", outside_the_run=True)
    staging = postgres_engine.create_database("staging", outside_the_run=True)
    # Staging's section, once naming production's database, changed by appending to the file
    # rather than editing it: the section again, or the key again.
    again = "\n[staging]\n" if twice == "section" else ""
    (tmp_path / "pg_service.conf").write_text(
        f"[staging]\nhost=127.0.0.1\nport={postgres_engine.port}\ndbname={production}\n"
        f"{again}dbname={staging}\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "pg_service.conf"))
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path))  # no system file of this machine's
    for name in ("PGSERVICE", "PGDATABASE", "PGHOST", "PGHOSTADDR", "PGPORT"):
        monkeypatch.delenv(name, raising=False)
    via_service = f"postgresql://{postgres_engine.user}@/?service=staging"
    try:
        # Where libpq goes, for real: production's database.
        with psycopg.connect(via_service, connect_timeout=10) as conn:
            assert conn.info.dbname == production
        assert [a.dbname for a in pg.database_addresses(via_service)] == [production]
        _settings(
            tmp_path,
            monkeypatch,
            production={**_KEYS, "database_url": postgres_engine.url(production)},
            staging={**_KEYS, "blob_url": "s3://b/y", "database_url": via_service},
        )
        # Before: none, the check reading the section's last dbname, staging's.
        [overlap] = _overlaps()
        assert overlap.kind == "database"
        assert "'production' and 'staging' name the same database" in overlap.message
    finally:
        postgres_engine.drop_database(production)
        postgres_engine.drop_database(staging)


_KEYS = {"blob_url": "s3://b/x", "s3_endpoint_url": "http://127.0.0.1:9"}
