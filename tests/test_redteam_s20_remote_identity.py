"""Red team, round three: is "the same database, the same prefix" recognised however the
settings spell it? Two profiles that reach one bucket prefix or one database must be refused
(a false "different" is the incident); nothing here connects to a server."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from app.config import inspect_profiles
from app.remote.errors import ResourceOverlapError

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
