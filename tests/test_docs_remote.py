"""The how-to "Run production on PostgreSQL and object storage", run as written, against real
engines (tests/engines.py: a throwaway PostgreSQL cluster and SeaweedFS's S3 server).

The page's blocks are used in order:

- its first ``sh`` block names the engines (``PGHOST``..., ``AWS_*``); it is checked, then
  swapped for the test's engines, as the README's test swaps the development server's line;
- its two ``toml`` blocks are the ``[production]`` sections of ``settings.toml`` and
  ``.secrets.local.toml``: the committed settings.toml, with its ``[production]`` section
  replaced by the page's, goes into a settings directory of the test's (``APP_SETTINGS_DIR``),
  with the page's addresses and S3 credentials swapped for the engines'. The secrets are
  written as ``.secrets.toml``, which is read just before ``.secrets.local.toml``, since a
  process of a test run reads no ``.local`` file (docs/reference/configuration.md);
- every other ``sh`` block runs, in order, in one bash (background replicas started by one
  block are stopped by a later one), with ``app`` on ``PATH`` running this interpreter's
  ``python -m app``, the page's ports swapped for free ones. Each block's output is
  collected separately.

The commands are part of this test run (their process tree says so), so the app maps
production's ``database_url`` and ``blob_url`` onto the run's scratch database and prefix (the
plugin's rule for every process of a run: see docs/reference/pytest-plugin.md): the page's
database name is swapped for that scratch name in the ``psql`` and ``pg_dump`` commands, and
the prefix checked at the end is the scratch one. Nothing here can reach a configured
database, even on these throwaway engines.

``console`` blocks are what the suite cannot run here (a second machine, a restamp that needs
storage stamped by another profile, a copy to a second bucket); docs/conftest.py checks their
``app`` command lines against the real commands.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import head_start
import pytest
from engines import PostgresEngine, S3Engine, free_ports

PROJECT = Path(__file__).resolve().parent.parent
PAGE = PROJECT / "docs" / "how-to" / "run-on-postgresql.md"
SEPARATOR = "\x1e"

PAGE_ENDPOINT = "https://s3.example.com"
PAGE_DATABASE = "db.internal:5432"
PAGE_KEY_ID = "AKIAEXAMPLEAPP"
PAGE_SECRET = "example-app-secret"
PAGE_PORTS = ("8081", "8082")
PAGE_DATABASE_NAME = "app_production"


def blocks(kind: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(rf"```{kind}\n(.*?)```", text, re.DOTALL)


def test_the_page_names_its_engines_in_its_first_block_and_sets_two_toml_sections() -> None:
    first = blocks("sh")[0]
    assert first.startswith("export PGHOST=db.internal PGPORT=5432"), first
    assert "AWS_ENDPOINT_URL=https://s3.example.com" in first
    settings, secrets = blocks("toml")
    assert settings.startswith("[production]\n") and secrets.startswith("[production]\n")
    assert "database_url" not in settings and "data_root" not in settings
    assert PAGE_DATABASE in secrets and PAGE_KEY_ID in secrets and PAGE_SECRET in secrets
    # The committed .secrets.toml holds placeholders only: the page's secrets go elsewhere.
    text = PAGE.read_text(encoding="utf-8")
    before = text[: text.index(secrets)].rsplit("```toml", 2)[-2]
    assert "`.secrets.local.toml`" in before, before


def _settings_dir(where: Path, s3_engine: S3Engine, postgres_engine: PostgresEngine) -> Path:
    settings_text, secrets_text = blocks("toml")

    def swapped(text: str) -> str:
        return (
            text.replace(PAGE_DATABASE, f"{postgres_engine.host}:{postgres_engine.port}")
            .replace(PAGE_ENDPOINT, s3_engine.endpoint_url)
            .replace(PAGE_KEY_ID, s3_engine.access_key_id)
            .replace(PAGE_SECRET, s3_engine.secret_access_key)
        )

    committed = (PROJECT / "settings.toml").read_text(encoding="utf-8")
    # The committed [production] section, up to the next section or the end, is what the page
    # says to replace.
    without = re.sub(r"^\[production\]\n.*?(?=^\[|\Z)", "", committed, flags=re.S | re.M)
    assert "[production]" not in without
    where.mkdir()
    (where / "settings.toml").write_text(without.rstrip() + "\n\n" + swapped(settings_text))
    (where / ".secrets.toml").write_text(swapped(secrets_text))
    return where


# The project's environment first: the tests extra installs awscli there.
_PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def _needs(program: str, install: str) -> None:
    if shutil.which(program, path=_PATH) is None:
        reason = f"{program} is missing; {install}"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL how-to's commands: {reason}", pytrace=False)
        pytest.skip(reason)


@dataclass(frozen=True)
class HowTo:
    """The page's commands, run: their outcome, the ports they served on, the prefix."""

    result: subprocess.CompletedProcess[str]
    ports: list[str]
    scratch_prefix: str


def run_the_how_to(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, tmp_path: Path, environ: dict[str, str]
) -> HowTo:
    """The page's blocks in one bash, as the module's docstring says, in `environ` (the
    test's): a serial run starts this when collection ends (tests/head_start.py)."""
    _needs("curl", "apt-get install curl")
    _needs("aws", "pip install awscli")
    settings = _settings_dir(tmp_path / "settings", s3_engine, postgres_engine)
    # The directory the page's commands run in stands for the project: `.venv/bin/app` runs
    # this interpreter's `python -m app`.
    work = tmp_path / "work"
    (work / ".venv" / "bin").mkdir(parents=True)
    app = work / ".venv" / "bin" / "app"
    app.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m app "$@"\n')
    app.chmod(0o755)

    env = {
        name: value
        for name, value in environ.items()
        if not name.startswith(("APP_", "DYNACONF_", "PYTEST_", "AWS_", "PG"))
        and not name.endswith("_FOR_DYNACONF")
    }
    # psql, pg_dump and pg_restore of the cluster's own version come first.
    env["PATH"] = f"{postgres_engine.bindir}:{_PATH}"
    env["APP_SETTINGS_DIR"] = str(settings)
    env["HOME"] = str(work)  # aws reads ~/.aws; nothing of the user's
    # The commands are part of this test run (their process tree says so): a sandbox narrowed
    # to this test's directory, and production allowed, make them behave as in a shell. The
    # database and the bucket are the test's own engines'.
    env["PYTEST_APP_SANDBOX"] = str(tmp_path)
    env["PYTEST_APP_ALLOW_PROFILES"] = "development,testing,production"

    engines = (
        f"export PGHOST={postgres_engine.host} PGPORT={postgres_engine.port} "
        f"PGUSER={postgres_engine.user} PGDATABASE=postgres\n"
        f"export AWS_ENDPOINT_URL={s3_engine.endpoint_url} AWS_DEFAULT_REGION=us-east-1\n"
        f"export AWS_ACCESS_KEY_ID={s3_engine.access_key_id} "
        f"AWS_SECRET_ACCESS_KEY={s3_engine.secret_access_key}\n"
    )
    from app.sandbox import context, scratch_blob_url

    this_run = context().run
    assert this_run is not None and this_run.scratch, "the suite runs under the app's plugin"
    scratch_name = PAGE_DATABASE_NAME + this_run.scratch
    scratch_prefix = scratch_blob_url(
        "s3://app-data/production", this_run.scratch, "production"
    ).removeprefix("s3://app-data/")
    run = [engines, *(b.replace(PAGE_DATABASE_NAME, scratch_name) for b in blocks("sh")[1:])]
    ports = [str(port) for port in free_ports(len(PAGE_PORTS))]
    for page_port, port in zip(PAGE_PORTS, ports, strict=True):
        run = [block.replace(page_port, port) for block in run]
    # Whatever happens, no replica outlives the script.
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + "".join(
        f"{block}\nprintf '\\n{SEPARATOR}\\n'\n" for block in run
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    return HowTo(result, ports, scratch_prefix)


def test_the_postgresql_how_to_runs_as_written(
    postgres_engine: PostgresEngine,
    s3_engine: S3Engine,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    how_to = head_start.result(
        request.config,
        "postgresql-how-to",
        lambda: run_the_how_to(postgres_engine, s3_engine, tmp_path, dict(os.environ)),
    )
    result, ports, scratch_prefix = how_to.result, how_to.ports, how_to.scratch_prefix
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    out = [o.strip("\n") for o in result.stdout.split(f"\n{SEPARATOR}\n")]
    (
        _engines,
        _created,
        _bucket,
        configured,
        first_start,
        replicas,
        requests,
        refused,
        maintained,
        backup,
        *_rest,
    ) = out

    assert "profile: production" in configured, configured
    # What the page says doctor shows before the first start: it reached both, created nothing.
    assert "profile production, reached from here (read-only):" in configured, configured
    assert "  stamp: none yet: the database is empty" in configured, configured
    assert ": reachable, versioning on" in configured, configured
    assert ": empty; the first open stamps it for 'production'" in configured, configured
    assert "profile production's database and bucket answer" in configured, configured
    assert "correct-horse-battery-staple" not in configured + first_start + replicas
    assert s3_engine.secret_access_key not in result.stdout + result.stderr
    assert "stamp: profile production" in first_start, first_start
    assert "served by 3 live replica(s):" in replicas, replicas
    for port in ports:
        assert f"http://127.0.0.1:{port}" in replicas, replicas
    assert "notes" in requests.splitlines(), requests
    assert "refused: exit 75" in refused, refused
    assert "3 live replica(s) hold it" in result.stderr, result.stderr
    assert "error" not in maintained.lower(), maintained
    assert int(backup.splitlines()[-1]) > 0, backup

    # What the page says the suite proved: the bucket is versioned, the prefix stamped.
    client = s3_engine.client()
    versioning = client.get_bucket_versioning(Bucket="app-data")
    assert versioning.get("Status") == "Enabled", versioning
    stamp = client.get_object(Bucket="app-data", Key=f"{scratch_prefix}/.app-profile.json")
    assert b'"production"' in stamp["Body"].read()
