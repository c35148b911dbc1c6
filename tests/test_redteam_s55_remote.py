"""Red team 55 on PostgreSQL and object storage.

What broke:

- A ``database_url`` whose password holds an ``@`` or a ``/`` not percent-encoded
  (``postgresql://app:Tr0ub4dor@3x@db/prod``, ``postgresql://app:1234/x@db/prod``), as a
  password generator or a copy from a password manager gives it. libpq ends the user and
  password at the first ``@``, and only before the first ``/``: the rest of the password was
  read as the host (``3x@db``), or the user as the host, the password's start as the port and
  its rest as the database's name. `app doctor` and `app data check` printed the URL, "masked",
  with that rest of the password in it (and psycopg's "failed to resolve host '3x@db'"), and
  `app config`'s refusal of a URL psycopg could not read quoted it whole, password and all.
  Such a URL is now a configuration error (78) that says how libpq reads it and to write
  ``%40`` and ``%2F`` (or to use PGPASSFILE), and every display of a URL that libpq would not
  read as written, or cannot read, stars everything before its last ``@``.

- A testing profile whose password is in a password file (``PGPASSFILE``, ``~/.pgpass``)
  on a line for testing's database alone, as libpq's documentation shows one. `app doctor`
  reached that database and said ok, but the plugin connects to the server's ``postgres``
  to create the run's scratch database, then to that one, neither of which the line
  matches: every run failed with "fe_sendauth: no password supplied ... Check that the
  server runs and that database_url names it; `app doctor` checks the settings", and, the
  ``postgres`` line added, every test's open of the scratch database failed alike, once per
  test. The plugin now connects to its scratch database once, as it creates it (dropping it
  again if it cannot), and a refusal for want of a password names both databases, why the
  file's line does not reach them, and the ``*`` that does.

- A run whose object store refused the emptying of its scratch prefix at its end (credentials
  rotated during the run, the store down): pytest printed the plugin's teardown as an error
  with botocore's and urllib3's whole traceback, and nothing said what was left or what to
  do. It is now one line naming what the run could not remove (the database, the prefix),
  why, that they are left as a killed run leaves them, and how to clear them.

- ``sslpassword=`` (the passphrase of the client's SSL key) in a ``database_url`` written in
  settings.toml, the committed file: red team 38's refusal of a password there read
  ``password=`` alone, so the passphrase was committed with nothing said. It is a password
  to that check now, and to the scrubbing of the drivers' messages.

- The plugin's creation of its scratch database under a ``statement_timeout`` of the
  role's (or of the ``postgres`` database's): "canceling statement due to statement timeout
  ... the user needs CREATEDB", nothing of the setting. The creation and the drop now give the
  app's own refusal, naming the database connected to, the SQLSTATE, and the query that says
  where the setting comes from with each place to change it.

All real: ``python -m app`` commands (forked: tests/forked_app.py) on a production profile
opted into the way ``@pytest.mark.app_profile`` does, libpq's own reading of each URL; the
suite's cluster, with a role of the test's own that must give a password (a ``pg_hba.conf``
line for that role alone), and a real password file.
"""

from __future__ import annotations

import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import forked_app
import psycopg
import pytest
from engines import PostgresEngine, S3Engine, remote_testing_run, scratch
from psycopg.conninfo import conninfo_to_dict
from side_by_side import pytest_side_by_side

from app.config import mask_database_url
from app.testing import fixtures

# Each password's rest, after its '@' or '/', is what was shown.
_URLS = [
    ("postgresql://app:Tr0ub4dor@3xSecretTail@127.0.0.1:9/prod", "doctor"),
    ("postgresql://app:1234/xSecretTail@127.0.0.1:9/prod", "data check"),
    ("postgresql://app:pa/SecretTail@127.0.0.1:9/prod", "config"),
]


def test_a_password_libpq_does_not_read_as_written_is_refused_and_never_shown(
    tmp_path: Path,
) -> None:
    (tmp_path / "settings.toml").write_text(
        f'[development]\ndata_root = "{tmp_path}/development"\n'
        f'[testing]\ndata_root = "{tmp_path}/testing"\n'
        '[production]\nprotected = true\nblob_url = "s3://b/prod"\n'
        's3_endpoint_url = "http://127.0.0.1:9"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    env |= {
        "APP_SETTINGS_DIR": str(tmp_path),
        "ENV_FOR_DYNACONF": "production",
        "APP_API_TOKEN": secrets.token_urlsafe(32),
        "PYTEST_APP_ALLOW_PROFILES": "production",
    }
    for url, _ in _URLS:
        # libpq's own reading: the password cut at the '@' or gone, its rest elsewhere.
        read = conninfo_to_dict(url)
        assert read.get("password") != url.partition("app:")[2].rpartition("@")[0]
        assert "SecretTail" in f"{read.get('host')}/{read.get('port')}/{read.get('dbname')}"
    # sslpassword= (the SSL key's passphrase) in settings.toml, the committed file.
    ssl = tmp_path / "ssl"
    ssl.mkdir()
    (ssl / "settings.toml").write_text(
        (tmp_path / "settings.toml").read_text()
        + 'database_url = "postgresql://app@127.0.0.1:9/prod?sslmode=require&sslkey='
        '/etc/app/key.pem&sslpassword=KeyPassphrase55"\n'
    )
    commands = [({**env, "APP_DATABASE_URL": url}, command.split()) for url, command in _URLS]
    commands.append(({**env, "APP_SETTINGS_DIR": str(ssl)}, ["config"]))
    # In the service's environment, as the deploy guide has it; side by side, their
    # start-ups overlapping.
    with ThreadPoolExecutor(len(commands)) as pool:
        *runs, ssl_run = list(pool.map(lambda case: forked_app.run(*case), commands))
    # Before: exit 0, the passphrase committed with nothing said (the URL shown without it).
    output = ssl_run.stdout + ssl_run.stderr
    assert ssl_run.returncode == 78, output
    assert "KeyPassphrase55" not in output
    assert (
        "has a password (password=, or sslpassword=, the SSL key's passphrase), and "
        "settings.toml is committed with the code"
    ) in " ".join(output.split())
    for done in runs:
        output = done.stdout + done.stderr
        assert "SecretTail" not in output, output
        assert done.returncode == 78, output
        message = " ".join(output.split())
        assert "database_url = 'postgresql://******@127.0.0.1:9/prod'" in message
        assert "has an '@' that libpq does not read as the end of the user and password" in (
            message
        )
        assert "percent-encode a password's (or a user's) '@' as %40 and '/' as %2F" in message
        assert "PGPASSFILE" in message


def test_every_display_of_a_url_hides_what_may_be_its_password() -> None:
    for url, _ in _URLS:
        assert mask_database_url(url) == "postgresql://******@127.0.0.1:9/prod"
    # Unreadable by libpq (a bad percent-escape): starred as a whole, not quoted.
    assert mask_database_url("postgresql://app:p%zzSecretTail@db/x") == "postgresql://******@db/x"
    # Written as libpq reads it: the user and the server shown, the password not.
    assert mask_database_url("postgresql://app:p%40ss%2Fx@db/x") == "postgresql://app@db:5432/x"
    assert mask_database_url("host=db user=app password='a@b/c' dbname=x") == (
        "postgresql://app@db:5432/x"
    )


def test_a_password_file_line_for_testing_s_database_alone_is_named_as_what_the_run_misses(
    postgres_engine: PostgresEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    role, password = f"rt55pw_{os.getpid()}", secrets.token_urlsafe(16)
    hba = postgres_engine.base / "data" / "pg_hba.conf"
    before = hba.read_text()
    # For this role alone: every other connection to the cluster stays as it was.
    rule = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
    testing = postgres_engine.create_database("rt55", outside_the_run=True)
    with postgres_engine.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
        hba.write_text(rule + before)
        conn.execute("SELECT pg_reload_conf()")
    url = f"postgresql://{role}@{postgres_engine.host}:{postgres_engine.port}/{testing}"
    suffix = f"_pw{scratch()}"
    passfile = tmp_path / "pgpass"
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    line = f"{postgres_engine.host}:{postgres_engine.port}:{{}}:{role}:{password}\n"
    try:
        passfile.write_text(line.format(testing))
        passfile.chmod(0o600)
        with psycopg.connect(url):  # what `app doctor` reaches: testing's database
            pass
        # Before: "cannot connect to database .../postgres: ... fe_sendauth: no password
        # supplied. Check that the server runs and that database_url ... names it; `app
        # doctor` checks the settings", and nothing more; with postgres's line added, no
        # refusal here, then every test's open of the scratch database refused alike.
        for lines, done in (([testing], "cannot create"), ([testing, "postgres"], "created")):
            passfile.write_text("".join(line.format(name) for name in lines))
            said = " ".join(fixtures._create_scratch(url, suffix, "the-scratch").split())
            assert said.startswith(f"app: {done} the run's scratch database the-scratch"), said
            assert "fe_sendauth: no password supplied" in said
            assert (
                "The run connects to the server's database postgres to create and drop its "
                "scratch database, then to the scratch database itself (the-scratch), each a "
                "database testing's database_url does not name"
            ) in said
            assert "write * as that line's database (host:port:*:user:password)" in said
            assert password not in said
            with postgres_engine.connect() as conn:  # nothing left behind
                assert not conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (testing + suffix,)
                ).fetchall()
        passfile.write_text(line.format("*"))
        assert fixtures._create_scratch(url, suffix, "the-scratch") == ""
        # A statement_timeout of the role's: before, "canceling statement due to statement
        # timeout. Check database_url of [testing] (`app doctor`); the user needs CREATEDB".
        with postgres_engine.connect() as conn:
            conn.execute(f"ALTER ROLE {role} SET statement_timeout = '1ms'")
        said = " ".join(fixtures._create_scratch(url, f"_to{scratch()}", "the-scratch").split())
        assert f"database postgresql://{role}@{postgres_engine.host}:{postgres_engine.port}/" in (
            said
        )
        assert "/postgres refused the creation of the scratch database" in said, said
        assert "(SQLSTATE 57014); nothing was changed" in said
        assert "SELECT setting, source FROM pg_settings WHERE name = 'statement_timeout'" in said
    finally:
        with postgres_engine.connect() as conn:
            hba.write_text(before)
            conn.execute("SELECT pg_reload_conf()")
            for name in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (_like_prefix(testing),)
            ).fetchall():
                conn.execute(f'DROP DATABASE IF EXISTS "{name[0]}" WITH (FORCE)')
            conn.execute(f'DROP DATABASE IF EXISTS "{testing}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_scratch_prefix_the_store_refuses_to_empty_at_the_end_is_said_in_one_line(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, tmp_path: Path
) -> None:
    testing = f"rt55t_{os.getpid()}"
    # Keys the store refuses (rotated while the run ran): answered at once, no retries. The
    # run's start writes its marker in the prefix (session 66) with the keys as they were.
    rotate = (
        "import os, pathlib\n"
        "def test_nothing_stored():\n"
        "    kept = pathlib.Path(os.environ['APP_SETTINGS_DIR']) / '.secrets.toml'\n"
        f"    kept.write_text(kept.read_text().replace({s3_engine.secret_access_key!r}, "
        "'rotated-away'))\n"
    )
    project, env = remote_testing_run(
        tmp_path, postgres_engine, s3_engine, (testing, f"rt55-{os.getpid()}"), rotate
    )
    (result,) = pytest_side_by_side(project, env, ["-p", "no:randomly"])
    output = "\n".join(result.outlines + result.errlines)
    said = " ".join(output.split())
    # Before: "ERROR at teardown of test_nothing_stored", then botocore's and urllib3's
    # frames, ending in ObjectStoreUnavailableError; nothing of what was left.
    assert "1 passed, 1 error" in said, output
    assert "Traceback" not in output and "botocore/" not in output, output
    assert (
        "app: the run's tests are done, but it could not remove the objects under its scratch "
        f"prefix s3://{s3_engine.bucket}/rt55-{os.getpid()}/pytest_"
    ) in said, output
    assert (
        "They are left on testing's server, as a killed run leaves them; nothing else was "
        "changed. Clear them by hand once the server answers"
    ) in said
    assert "--app-keep-remote" in said
    with postgres_engine.connect() as conn:  # the database was dropped all the same
        assert not conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (_like_prefix(testing),)
        ).fetchall()


def _like_prefix(name: str) -> str:
    """A LIKE pattern of the names that start with `name` and `_` (its `_` taken as written)."""
    return name.replace("_", "\\_") + "\\_%"
