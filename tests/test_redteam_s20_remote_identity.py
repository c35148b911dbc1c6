"""Red team, round three: is "the same database, the same prefix" recognised however the
settings spell it? Two profiles that reach one bucket prefix or one database must be refused
(a false "different" is the incident); and one profile's database and prefix, named by two
machines whose settings disagree, must be refused rather than read as two halves of one."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from engines import PostgresEngine, S3Engine

from app.config import Config, inspect_profiles
from app.remote.errors import ResourceOverlapError, StorageMismatchError
from app.remote.store import RemoteStore
from app.storage import open_storage

TESTING = {
    "database_url": "postgresql://app@db.internal:5432/app_testing",
    "blob_url": "s3://app-data/testing",
}
PRODUCTION = {
    "database_url": "postgresql://app@db.internal:5432/app_production",
    "blob_url": "s3://app-data/production",
}


def _section(name: str, keys: dict[str, str]) -> str:
    return f"[{name}]\n" + "".join(f'{key} = "{value}"\n' for key, value in keys.items())


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Write settings.toml: ``testing`` and ``production`` keys over the defaults above."""
    for name in [n for n in os.environ if n.startswith("APP_") and n != "APP_SETTINGS_DIR"]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("ENV_FOR_DYNACONF", raising=False)
    directory = tmp_path / "settings"
    directory.mkdir()
    monkeypatch.setenv("APP_SETTINGS_DIR", str(directory))

    def write(testing: dict[str, str], production: dict[str, str] | None = None) -> None:
        text = _section("development", {"data_root": "roots/development"})
        text += _section("testing", TESTING | testing)
        text += _section("production", PRODUCTION | (production or {}))
        (directory / "settings.toml").write_text(text)

    return write


def _overlaps() -> list[ResourceOverlapError]:
    report = inspect_profiles("development")
    return [p for p in report.problems if isinstance(p, ResourceOverlapError)]


@pytest.mark.parametrize(
    ("testing", "production"),
    [
        # AWS has one namespace of buckets: every regional endpoint, and the client's default
        # (no s3_endpoint_url), reach the same bucket.
        ("https://s3.eu-west-1.amazonaws.com", None),
        ("https://s3.dualstack.us-east-1.amazonaws.com", "https://S3.AmazonAWS.com:443/"),
        ("https://s3-fips.us-east-2.amazonaws.com", None),
    ],
)
def test_one_bucket_named_through_two_aws_endpoints_is_one_prefix(
    settings: Callable[..., None], testing: str, production: str | None
) -> None:
    endpoint = {"s3_endpoint_url": production} if production else {}
    settings({"s3_endpoint_url": testing, "blob_url": "s3://app-data/production/"}, endpoint)
    [overlap] = _overlaps()
    assert overlap.kind == "object prefix"
    assert "profiles 'testing' and 'production' name overlapping object prefixes" in overlap.message
    assert "change blob_url for one of them" in overlap.message


def test_a_prefix_spelled_with_extra_slashes_is_the_same_prefix(
    settings: Callable[..., None],
) -> None:
    settings({"blob_url": "s3://app-data//production/"})
    assert [o.kind for o in _overlaps()] == ["object prefix"]


@pytest.mark.parametrize(
    "database_url",
    [
        # Another user, upper-case host, default port, options and sslmode: one database.
        "postgresql://bob@DB.internal/app_production?options=-csearch_path%3Dother&sslmode=require",
        "host=db.internal dbname=app_production user=alice application_name=x",
    ],
)
def test_one_database_reached_as_another_user_or_with_options_is_one_database(
    settings: Callable[..., None], database_url: str
) -> None:
    settings({"database_url": database_url})
    assert [o.kind for o in _overlaps()] == ["database"]


def test_database_names_that_differ_in_case_are_two_databases(
    settings: Callable[..., None],
) -> None:
    # PostgreSQL compares database names exactly: App_Production is another database.
    settings({"database_url": "postgresql://app@db.internal:5432/App_Production"})
    assert _overlaps() == []


# --- one profile, two machines, settings that disagree (real engines) --------------------


def _config(base: Config, s3_engine: S3Engine, database_url: str, blob_url: str) -> Config:
    # The run's own configuration, pointed at the engines' scratch database and prefix.
    return replace(
        base,
        profile="production",
        data_root=None,
        database_url=database_url,
        blob_url=blob_url,
        s3_endpoint_url=s3_engine.endpoint_url,
        s3_access_key_id=s3_engine.access_key_id,
        s3_secret_access_key=s3_engine.secret_access_key,
    )


def test_check_repair_from_a_machine_that_names_another_database_cannot_delete_the_prefix_s_objects(
    postgres_engine: PostgresEngine, database_url: str, s3_engine: S3Engine, blob_url: str,
    app_config: Config,
) -> None:  # fmt: skip
    production = _config(app_config, s3_engine, database_url, blob_url)
    with open_storage(production, writer=True, kind="server") as replica:
        session = replica.create_session("acknowledged")["id"]
        replica.put_file(session, "a.txt", b"acknowledged bytes")
    # Another machine's settings name a fresh database (a typo, a new host, a staging copy)
    # and production's prefix: every object there is one its rows do not name.
    other = postgres_engine.create_database("other")
    elsewhere = replace(production, database_url=postgres_engine.url(other))
    try:
        with pytest.raises(StorageMismatchError) as caught:
            store = open_storage(elsewhere, writer=True, wanted="check and repair")
            assert isinstance(store, RemoteStore)
            with store:
                store.orphan_grace = timedelta(0)
                store.check(repair=True)
    finally:
        postgres_engine.drop_database(other)
    message = caught.value.message
    assert "belongs to another database" in message
    assert "`app data check --repair` would delete" in message
    assert "fix database_url" in message and "Nothing was changed" in message
    with open_storage(production, writer=False) as reader:
        handle, _ = reader.open_file(session, "a.txt")
        with handle:
            assert handle.read() == b"acknowledged bytes"


def test_a_replica_that_names_another_prefix_for_the_same_database_is_refused(
    database_url: str, s3_engine: S3Engine, blob_url: str, app_config: Config
) -> None:
    production = _config(app_config, s3_engine, database_url, blob_url)
    with open_storage(production, writer=True, kind="server") as replica:
        session = replica.create_session("here")["id"]
        replica.put_file(session, "a.txt", b"bytes")
    # The same prefix spelled with slashes is the same prefix; another one is refused.
    with open_storage(replace(production, blob_url=f"{blob_url}/"), writer=False) as same:
        assert same.get_session(session)["files"][0]["size"] == 5
    other = blob_url.replace("/t", "/other-t", 1)
    with pytest.raises(StorageMismatchError) as caught:
        open_storage(replace(production, blob_url=other), writer=True, kind="server")
    message = caught.value.message
    assert f"keeps its files' bytes in s3://{blob_url[5:]}" in message
    assert f"but blob_url names s3://{other[5:]}" in message
    assert "fix blob_url" in message and "Nothing was changed" in message


def test_bucket_names_that_differ_only_in_case_are_one_bucket(
    settings: Callable[..., None],
) -> None:
    # Virtual-hosted addressing puts the bucket in a host name, where case does not count.
    settings({"blob_url": "s3://App-Data/production"})
    assert [o.kind for o in _overlaps()] == ["object prefix"]
