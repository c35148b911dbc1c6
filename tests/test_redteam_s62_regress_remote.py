"""Red team 62 on the session's remote fixes (regress).

What broke:

- The check that a client given no endpoint is not sent off AWS by the S3 client's own
  configuration (``s3_endpoint_elsewhere``, red team 62) was skipped for an endpoint given
  as ``""``, which the client takes as none: ``ObjectStore(blob_url, "", ...)`` in a process
  with ``AWS_ENDPOINT_URL`` naming production's store wrote a test's object among
  production's, as before that fix. It judged the endpoint's host with Python's
  ``urlsplit`` too, while the requests go where urllib3 (the S3 client's HTTP library)
  reads it: ``AWS_ENDPOINT_URL=http://<production's store>\\@s3.amazonaws.com`` was AWS's
  to the check (``urlsplit`` reads the host after the ``@``; urllib3 ends the host at the
  backslash), and the upload reached production's store, where only the signature, made for
  another host, had it refused (a store that takes unsigned writes keeps it). The same
  endpoint given to an ``ObjectStore`` by hand was AWS's to the sandbox's check of a test's
  prefix, and its upload reached production's store the same way. An empty
  endpoint is now judged as none, the host the client's own endpoint names is read as
  urllib3 reads it, and an endpoint on which the two readings disagree is refused as it is
  parsed (``invalid_setting``, naming both hosts).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engines import S3Engine, new_blob_url, scratch
from test_config_remote import REMOTE, SECRETS_FILE

from app.errors import InvalidSettingError
from app.remote import objects
from app.remote.errors import S3EndpointElsewhereError
from app.remote.objects import ObjectStore


def test_an_endpoint_is_judged_where_the_s3_client_sends_its_requests(
    s3_engine: S3Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: each store below was made, apart from production's prefix to the sandbox, and
    # its upload reached production's store: the first was written among production's
    # objects, the others refused there by their signature alone.
    production = f"p{os.getpid()}r"
    endpoint = s3_engine.endpoint_url
    (tmp_path / ".secrets.toml").write_text(SECRETS_FILE)
    (tmp_path / "settings.toml").write_text(
        REMOTE.replace('"http://127.0.0.1:8333"', f'"{endpoint}"').replace(
            "s3://app-data/production", f"s3://{s3_engine.bucket}/{production}"
        )
    )
    monkeypatch.setenv("APP_SETTINGS_DIR", str(tmp_path))
    monkeypatch.setattr(objects, "_sessions", [])
    inside = f"s3://{s3_engine.bucket}/{production}/x{scratch()}"
    keys = (s3_engine.access_key_id, s3_engine.secret_access_key)

    def put(endpoint_url: str | None) -> None:
        ObjectStore(inside, endpoint_url, *keys, max_attempts=1).put("planted", b"production?")

    disguised = f"{endpoint}\\@s3.amazonaws.com"
    hostport = endpoint.split("//")[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(S3EndpointElsewhereError, match=f"would send every request to {endpoint},"):
        put("")  # "" is no endpoint to the S3 client, as None is
    monkeypatch.setenv("AWS_ENDPOINT_URL", disguised)
    with pytest.raises(S3EndpointElsewhereError) as refused:
        put(None)
    assert f"would send every request to {disguised}, an endpoint" in refused.value.message
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(InvalidSettingError) as given:
        put(disguised)
    assert given.value.exit_code == 78
    assert given.value.message == (
        f"s3_endpoint_url = {disguised!r} (from the caller): its host is {hostport} to the S3 "
        "client's HTTP library (urllib3), where its requests go, and s3.amazonaws.com to the "
        "check that no two profiles share a prefix (Python's urlsplit), so the check would "
        "compare another store than the one reached; write the URL as scheme://host:port"
        "/path, without a backslash, '@' or another character the two read differently"
    )
    listed = s3_engine.client().list_objects_v2(Bucket=s3_engine.bucket, Prefix=production)
    assert listed.get("KeyCount") == 0, listed

    # Held: AWS's own endpoints, however the client's configuration names them, are AWS's.
    for variable, value in (
        ("AWS_ENDPOINT_URL", "https://s3-fips.us-east-1.amazonaws.com"),
        ("AWS_ENDPOINT_URL_S3", "https://s3.dualstack.eu-west-1.amazonaws.com"),
        ("AWS_USE_DUALSTACK_ENDPOINT", "true"),
    ):
        with monkeypatch.context() as each:
            each.setenv(variable, value)
            ObjectStore(new_blob_url(s3_engine), None, *keys)
    with monkeypatch.context() as ignored:
        ignored.setenv("AWS_ENDPOINT_URL", endpoint)
        ignored.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
        store = ObjectStore(new_blob_url(s3_engine), None, *keys)
        assert store._client.meta.endpoint_url == "https://s3.amazonaws.com"
