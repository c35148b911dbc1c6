"""The remote backend's keys: one backend per profile, distinct databases and prefixes,
secrets never shown, and what a test run maps them to.

Nothing here connects to a server: the checks are the configuration's. Under this pytest run
every remote profile is confined to the run's scratch names (see test_plugin_remote.py for
the plugin creating and dropping them against real engines).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import forked_app
import psycopg
import pytest
from engines import PostgresEngine, S3Engine

from app import config as appconfig
from app import sandbox as sandboxing
from app.config import REMOTE_KEYS, inspect_profiles, load
from app.errors import ConfigError, ConfigProblems, InvalidSettingError, SandboxViolationError
from app.remote.errors import ResourceOverlapError

PASSWORD = "Pa55-w0rd-never-shown"
ACCESS_KEY = "AKIA-ACCESS-KEY-NEVER-SHOWN"
SECRET_KEY = "secret-access-key-never-shown"
SECRETS = (PASSWORD, ACCESS_KEY, SECRET_KEY)

LOCAL = """\
[development]
data_root = "roots/development"
"""

REMOTE = """\
[default]
s3_endpoint_url = "http://127.0.0.1:8333"

[development]
data_root = "roots/development"

[testing]
database_url = "postgresql://app@db.internal:5432/app_testing"
blob_url = "s3://app-data/testing"

[production]
database_url = "postgresql://app@db.internal:5432/app_production"
blob_url = "s3://app-data/production"
protected = true
"""

SECRETS_FILE = f"""\
[default]
s3_access_key_id = "{ACCESS_KEY}"
s3_secret_access_key = "{SECRET_KEY}"

[production]
database_url = "postgresql://app:{PASSWORD}@db.internal:5432/app_production"
"""


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write settings.toml (and .secrets.toml) into a directory of the test's own."""
    for name in [n for n in os.environ if n.startswith("APP_") and n != "APP_SETTINGS_DIR"]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("ENV_FOR_DYNACONF", raising=False)
    directory = tmp_path / "settings"
    directory.mkdir()
    monkeypatch.setenv("APP_SETTINGS_DIR", str(directory))

    def write(text: str, secrets: str | None = SECRETS_FILE) -> Path:
        (directory / "settings.toml").write_text(text)
        if secrets is not None:
            (directory / ".secrets.toml").write_text(secrets)
        return directory

    return write


def _problems(error: ConfigError) -> list[ConfigError]:
    return list(error.problems) if isinstance(error, ConfigProblems) else [error]


def test_a_profile_with_a_data_root_is_local_and_needs_no_remote_key(settings) -> None:
    settings(LOCAL + '[testing]\ndata_root = "roots/testing"\n', secrets=None)
    config = load("testing")
    assert config.backend == "local"
    assert all(getattr(config, key) is None for key in REMOTE_KEYS)


def test_a_profile_with_a_database_and_a_prefix_is_remote_and_has_no_data_root(settings) -> None:
    settings(REMOTE)
    config = load("testing")
    assert config.backend == "remote"
    assert config.data_root is None
    assert config.s3_endpoint_url == "http://127.0.0.1:8333"
    assert config.s3_access_key_id == ACCESS_KEY


def test_both_backends_in_one_profile_is_refused_naming_both_sources(settings) -> None:
    settings(REMOTE.replace("[testing]\n", '[testing]\ndata_root = "roots/testing"\n'))
    with pytest.raises(InvalidSettingError) as refused:
        load("testing")
    message = str(refused.value)
    assert "profile 'testing': data_root" in message
    assert "database_url (from settings.toml [testing])" in message
    assert "blob_url (from settings.toml [testing])" in message
    assert "never both" in message


def test_a_remote_profile_missing_a_key_is_refused_naming_what_is_missing(settings) -> None:
    # One S3 key without the other is a mistake; neither is the S3 client's own credentials.
    only_the_id = f'[testing]\ns3_access_key_id = "{ACCESS_KEY}"\n'
    settings(REMOTE.replace('blob_url = "s3://app-data/testing"\n', ""), secrets=only_the_id)
    with pytest.raises(ConfigError) as refused:
        load("testing")
    problems = [p for p in _problems(refused.value) if isinstance(p, InvalidSettingError)]
    missing = {p.key for p in problems if p.profile == "testing"}
    assert missing == {"blob_url", "s3_secret_access_key"}
    blob = next(p for p in problems if p.key == "blob_url")
    assert "database_url (from settings.toml [testing])" in blob.message
    secret = next(p for p in problems if p.key == "s3_secret_access_key")
    assert secret.message.endswith(
        "set it in .secrets.toml [testing] or APP_S3_SECRET_ACCESS_KEY (with s3_access_key_id, "
        "which is set; or unset both to use the S3 client's own credentials: a role, AWS_* "
        "variables, ~/.aws)"
    ), secret.message


def test_a_remote_profile_without_either_s3_key_takes_the_s3_client_s_credentials(
    settings,
) -> None:
    settings(REMOTE, secrets="")
    config = load("testing")
    assert (config.backend, config.s3_access_key_id, config.s3_secret_access_key) == (
        "remote",
        None,
        None,
    )


def test_a_profile_with_neither_backend_is_refused_naming_both_choices(settings) -> None:
    settings(LOCAL + "[testing]\nport = 8001\n", secrets=None)
    with pytest.raises(InvalidSettingError) as refused:
        load("testing")
    assert refused.value.key == "data_root"
    assert "database_url, blob_url" in refused.value.message


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("blob_url", "https://bucket/prefix", "expected s3://bucket/prefix"),
        ("blob_url", "s3:///no-bucket", "expected s3://bucket/prefix"),
        ("s3_endpoint_url", "ftp://s3.example.com", "http:// or https://"),
        ("s3_endpoint_url", "https://user:pw@s3.example.com", "must not carry credentials"),
        ("database_url", "postgresql://app@db:notaport/x", "neither a PostgreSQL URL"),
        # A port urllib cannot read was a bare ValueError traceback from every command.
        ("s3_endpoint_url", "http://127.0.0.1:x", "has a port that is not a number"),
        ("s3_endpoint_url", "http://127.0.0.1:99999", "has a port that is not a number"),
        ("s3_endpoint_url", "http://127.0.0.1:8333 ", "ends with whitespace, U+0020 SPACE"),
        ("blob_url", "s3://app-data/testing\n", "U+000A LINE FEED"),
        ("s3_access_key_id", f"{ACCESS_KEY}\r", "U+000D CARRIAGE RETURN"),
    ],
)
def test_a_malformed_remote_value_is_refused_naming_key_and_source(
    settings, key: str, value: str, problem: str
) -> None:
    settings(REMOTE)
    os.environ[f"APP_{key.upper()}"] = value
    try:
        with pytest.raises(ConfigError) as refused:
            load("testing")
    finally:
        del os.environ[f"APP_{key.upper()}"]
    found = [p for p in _problems(refused.value) if getattr(p, "key", None) == key]
    assert found, refused.value
    assert problem in found[0].message
    assert f"(from environment APP_{key.upper()})" in found[0].message


def test_an_unparsable_database_url_is_shown_without_its_password(settings) -> None:
    settings(REMOTE)
    os.environ["APP_DATABASE_URL"] = f"postgresql://app:{PASSWORD}@db:notaport/x"
    try:
        with pytest.raises(ConfigError) as refused:
            load("testing")
    finally:
        del os.environ["APP_DATABASE_URL"]
    assert PASSWORD not in str(refused.value)
    assert "******" in str(refused.value)


def test_two_profiles_on_one_database_are_refused_naming_both_and_their_sources(settings) -> None:
    # The same database, spelled differently: a loopback name and a key=value string.
    settings(
        REMOTE.replace("db.internal", "localhost").replace(
            'database_url = "postgresql://app@localhost:5432/app_testing"',
            'database_url = "host=127.0.0.1 port=5432 dbname=app_production user=app"',
        ),
        secrets=SECRETS_FILE.replace("db.internal", "localhost"),
    )
    report = inspect_profiles("development")
    overlaps = [p for p in report.problems if isinstance(p, ResourceOverlapError)]
    assert len(overlaps) == 1
    message = overlaps[0].message
    assert "profiles 'testing' and 'production' name the same database" in message
    assert "(from settings.toml [testing])" in message
    assert "(from .secrets.toml [production])" in message
    assert PASSWORD not in message
    assert "change database_url for one of them" in message


def test_nested_object_prefixes_are_refused_like_nested_data_roots(settings) -> None:
    settings(REMOTE.replace('"s3://app-data/testing"', '"s3://app-data/production/testing"'))
    with pytest.raises(ConfigError) as refused:
        load("testing")
    overlaps = [p for p in _problems(refused.value) if isinstance(p, ResourceOverlapError)]
    assert [o.kind for o in overlaps] == ["object prefix"]
    assert "s3://app-data/production/testing" in overlaps[0].message
    assert "change blob_url for one of them" in overlaps[0].message


def test_prefixes_on_other_endpoints_or_buckets_do_not_overlap(settings) -> None:
    settings(
        REMOTE.replace('"s3://app-data/testing"', '"s3://app-tests/production"').replace(
            "[production]\n", '[production]\ns3_endpoint_url = "https://s3.example.com"\n'
        )
    )
    assert load("testing").backend == "remote"


def test_under_pytest_a_remote_profile_is_mapped_to_the_run_s_scratch_names(settings) -> None:
    settings(REMOTE)
    config = load("testing")
    run = sandboxing.current_run()
    assert run is not None and run.scratch
    assert config.database_url is not None and config.blob_url is not None
    assert f"dbname=app_testing{run.scratch}" in config.database_url
    assert config.blob_url == f"s3://app-data/testing/{run.scratch.lstrip('_')}"
    assert config.sources["database_url"].startswith("pytest scratch database (configured: ")
    assert config.sources["blob_url"].startswith("pytest scratch object prefix (configured: ")


def test_under_pytest_an_exported_production_database_is_refused(settings) -> None:
    settings(REMOTE)
    os.environ["APP_DATABASE_URL"] = "postgresql://app@db.internal:5432/app_production"
    try:
        with pytest.raises(ConfigError) as refused:
            load("testing")
    finally:
        del os.environ["APP_DATABASE_URL"]
    messages = " ".join(p.message for p in _problems(refused.value))
    # Both the overlap with production and the sandbox's rule say so.
    assert "name the same database" in messages
    assert any(isinstance(p, SandboxViolationError) for p in _problems(refused.value))
    assert "Unset APP_DATABASE_URL" in messages


def test_under_pytest_another_profile_is_never_its_configured_database(settings) -> None:
    settings(REMOTE)
    os.environ[appconfig.ALLOW_PROFILES_ENV] = "production"
    try:
        config = load("production", serving=False)
    finally:
        del os.environ[appconfig.ALLOW_PROFILES_ENV]
    assert config.database_url is not None
    assert "dbname=app_production_pytest_" in config.database_url
    # Beside production's prefix, never inside it: a live production server lists (and
    # repairs) everything under its own prefix.
    assert "/production_pytest_" in str(config.blob_url)


def test_a_forged_scratch_suffix_cannot_name_a_real_database() -> None:
    assert sandboxing._scratch_suffix("_production") == ""
    assert sandboxing._scratch_suffix("_pytest_12_ab12_gw3") == "_pytest_12_ab12_gw3"
    assert sandboxing.scratch_suffix("gw1", "_x") != "_x_gw1"


def test_config_all_and_doctor_show_the_remote_keys_and_no_secret(settings) -> None:
    directory = settings(REMOTE)
    env = {**os.environ, "APP_SETTINGS_DIR": str(directory)}
    outputs, stdouts = [], []
    for argv in (
        ["config", "--all"],
        ["config", "--all", "--json"],
        ["doctor"],
        ["--profile", "testing", "config"],
        ["--profile", "testing", "config", "--json"],
    ):
        done = forked_app.run(env, argv)  # `python -m app *argv` (tests/forked_app.py)
        outputs.append(done.stdout + done.stderr)
        stdouts.append(done.stdout)
    everything = "\n".join(outputs)
    for secret in SECRETS:
        assert secret not in everything
    assert "postgresql://app@db.internal:5432/app_production" in outputs[0]
    assert "****** (set, 27 characters)" in outputs[0]
    doctor = outputs[2]
    # A process of the run that names no profile is on the run's own (red team 57).
    assert "profile testing (selected): database_url = postgresql://app@db.internal:5432/" in doctor
    assert "blob_url = s3://app-data/testing" in doctor
    # JSON on standard output alone: warnings (a secrets file others may read) go to stderr.
    single = json.loads(stdouts[4])
    assert single["backend"] == "remote"
    assert single["data_root"] is None


def test_config_repr_never_shows_a_secret(settings) -> None:
    settings(REMOTE)
    os.environ[appconfig.ALLOW_PROFILES_ENV] = "production"
    os.environ["APP_API_TOKEN"] = "k3Jq9vXz-0aB7cD1eF2gH3iJ4kL5mN6o"
    try:
        config = load("production")
    finally:
        del os.environ[appconfig.ALLOW_PROFILES_ENV], os.environ["APP_API_TOKEN"]
    shown = repr(config) + str(config.values()) + config.storage
    for secret in SECRETS:
        assert secret not in shown


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("s3_secret_access_key", f's3_secret_access_key = "{SECRET_KEY}"'),
        ("s3_access_key_id", f's3_access_key_id = "{ACCESS_KEY}"'),
        (
            "database_url",
            f'database_url = "postgresql://app:{PASSWORD}@db.internal:5432/app_testing"',
        ),
    ],
)
def test_a_secret_in_the_committed_settings_file_is_refused_without_showing_it(
    settings, key: str, line: str
) -> None:
    text = REMOTE.replace(
        'database_url = "postgresql://app@db.internal:5432/app_testing"\n', ""
    ).replace("[testing]\n", f"[testing]\n{line}\n", 1)
    if key != "database_url":
        text = text.replace("[testing]\n", '[testing]\ndatabase_url = "postgresql://db/t"\n', 1)
    settings(text, secrets="")
    with pytest.raises(ConfigError) as refused:
        load("testing")
    found = [p for p in _problems(refused.value) if getattr(p, "key", None) == key]
    assert found, refused.value
    assert "settings.toml is committed with the code; move it to [testing] of .secrets.toml" in (
        found[0].message
    )
    for secret in SECRETS:
        assert secret not in str(refused.value)


def test_production_secrets_are_sent_to_the_file_git_ignores_not_the_committed_one(
    settings,
) -> None:
    # The refusal said "move it to [production] of .secrets.toml (not committed)": that file
    # is committed, with development's and testing's placeholders.
    settings(
        REMOTE.replace(
            "postgresql://app@db.internal:5432/app_production",
            f"postgresql://app:{PASSWORD}@db.internal:5432/app_production",
        ),
        secrets="",
    )
    problems = {
        (p.profile, p.key): p.message
        for p in inspect_profiles("development").problems
        if isinstance(p, InvalidSettingError)
    }
    password = problems["production", "database_url"]
    assert "move it to [production] of .secrets.local.toml (which git ignores)" in password
    # Neither S3 key set is the S3 client's own credentials, not a problem (red team 42's
    # leftover: expiring credentials); a password's place is still said.
    assert not {key for _, key in problems} & {"s3_access_key_id", "s3_secret_access_key"}
    assert "not committed" not in " ".join(problems.values())
    for secret in SECRETS:
        assert secret not in " ".join(problems.values())


def test_two_spellings_of_a_real_database_are_one_database(
    settings, postgres_engine: PostgresEngine
) -> None:
    name = postgres_engine.create_database("spelled")
    try:
        url = postgres_engine.url(name)
        other = f"host=localhost port={postgres_engine.port} dbname={name} user=app"
        with psycopg.connect(url), psycopg.connect(other):
            pass  # both reach the server: the same database, however spelled
        settings(
            REMOTE.replace("postgresql://app@db.internal:5432/app_testing", url).replace(
                "postgresql://app@db.internal:5432/app_production", other
            ),
            secrets=SECRETS_FILE.split("[production]", maxsplit=1)[0],
        )
        overlaps = [
            p for p in inspect_profiles("development").problems
            if isinstance(p, ResourceOverlapError)
        ]  # fmt: skip
        assert [o.kind for o in overlaps] == ["database"]
    finally:
        postgres_engine.drop_database(name)


def test_under_pytest_an_allowed_production_profile_reaches_no_real_database(
    settings, postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    name = postgres_engine.create_database("production", outside_the_run=True)
    with postgres_engine.connect(name) as conn:
        conn.execute("CREATE TABLE ledger (n int)")
        conn.execute("INSERT INTO ledger VALUES (1)")
    try:
        settings(
            REMOTE.replace(
                "postgresql://app@db.internal:5432/app_production", postgres_engine.url(name)
            ).replace("http://127.0.0.1:8333", s3_engine.endpoint_url),
            secrets=SECRETS_FILE.split("[production]", maxsplit=1)[0],
        )
        os.environ[appconfig.ALLOW_PROFILES_ENV] = "production"
        try:
            config = load("production", serving=False)
        finally:
            del os.environ[appconfig.ALLOW_PROFILES_ENV]
        assert config.database_url is not None
        # The configured database exists; the one a test gets is the run's scratch name,
        # which this run never created for production: nothing reaches the real one.
        with pytest.raises(psycopg.OperationalError, match="does not exist"):
            psycopg.connect(config.database_url).close()
        with postgres_engine.connect(name) as conn:
            assert conn.execute("SELECT n FROM ledger").fetchall() == [(1,)]
    finally:
        postgres_engine.drop_database(name)
