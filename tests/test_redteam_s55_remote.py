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

All real: ``python -m app`` commands (forked: tests/forked_app.py) on a production profile
opted into the way ``@pytest.mark.app_profile`` does, libpq's own reading of each URL.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import forked_app
from psycopg.conninfo import conninfo_to_dict

from app.config import mask_database_url

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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "PG"))}
    env |= {
        "APP_SETTINGS_DIR": str(tmp_path),
        "ENV_FOR_DYNACONF": "production",
        "APP_API_TOKEN": secrets.token_urlsafe(32),
        "PYTEST_APP_ALLOW_PROFILES": "production",
    }
    for url, command in _URLS:
        # libpq's own reading: the password cut at the '@' or gone, its rest elsewhere.
        read = conninfo_to_dict(url)
        assert read.get("password") != url.partition("app:")[2].rpartition("@")[0]
        assert "SecretTail" in f"{read.get('host')}/{read.get('port')}/{read.get('dbname')}"
        # In the service's environment, as the deploy guide has it.
        done = forked_app.run({**env, "APP_DATABASE_URL": url}, command.split())
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
