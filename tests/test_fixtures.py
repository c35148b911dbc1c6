"""The plugin's fixtures, used the way the project's own tests and its users use them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import forked_app
import httpx
import pytest

from app.config import Config
from app.store import Store
from app.testing import LiveServer


def test_app_config_gives_each_test_a_fresh_testing_root_under_tmp_path(
    app_config: Config, tmp_path: Path
) -> None:
    assert app_config.profile == "testing"
    assert app_config.data_root == tmp_path / "app-data"
    assert app_config.sources["data_root"] == "environment APP_DATA_ROOT"
    assert os.environ["APP_DATA_ROOT"] == str(app_config.data_root)


def test_app_store_is_open_for_writing_and_holds_its_root(
    app_store: Store, app_config: Config
) -> None:
    session = app_store.create_session("fixture")
    assert (app_config.data_root / "sessions" / session["id"] / "session.json").is_file()
    holder = json.loads((app_config.data_root / ".server.lock").read_text())
    assert (holder["pid"], holder["kind"]) == (os.getpid(), "tests")


def test_a_test_s_root_is_resolved_once_before_its_lock_and_once_after_and_listed_once(
    app_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 11: an open of a fresh root in a run resolved its path three times before the
    # lock (the sandbox's check, the look for a loop of links, the look at the mounts on its
    # way), each an lstat of every directory on it. The check's resolving serves the looks
    # before the lock (`sandbox.checked_as`); after it, all is resolved and checked again.
    from app.storage import open_storage

    assert app_config.data_root is not None
    parent = str(app_config.data_root.parent)
    looked: list[str] = []
    lstat = os.lstat

    def counted(path: str | Path, *args: object, **kwargs: object) -> os.stat_result:
        looked.append(os.fsdecode(path))
        return lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    listed: list[str] = []
    scandir, listdir = os.scandir, os.listdir

    def counted_scandir(path: str | Path) -> object:
        listed.append(os.fsdecode(path))
        return scandir(path)

    def counted_listdir(path: str | Path) -> list[str]:
        listed.append(os.fsdecode(path))
        return listdir(path)

    monkeypatch.setattr(os, "lstat", counted)
    monkeypatch.setattr(os, "scandir", counted_scandir)
    monkeypatch.setattr(os, "listdir", counted_listdir)
    with open_storage(app_config, writer=True, kind="tests") as store:
        monkeypatch.undo()
        assert store.session_ids() == []
    # The sandbox's check before the lock, the walk for a link of /proc on the way (which a
    # resolving follows, so cannot answer), the sandbox's check after the lock.
    assert looked.count(parent) == 3, looked
    # The new root's entries, read once under the lock for the refusal of files not the
    # app's and for the look for data of a release before stamps (they were read twice).
    assert listed.count(str(app_config.data_root)) == 1, listed


def test_app_client_talks_to_the_in_process_app_with_the_token(app_client: httpx.Client) -> None:
    created = app_client.post("/sessions", json={"title": "over the client fixture"})
    assert created.status_code == 201
    assert app_client.get(f"/sessions/{created.json()['id']}").json()["title"] == (
        "over the client fixture"
    )
    assert app_client.get("/sessions", headers={"Authorization": ""}).status_code == 401


def test_app_live_server_is_a_real_server_holding_its_own_root(app_live_server: LiveServer) -> None:
    assert str(app_live_server) == app_live_server.url
    assert app_live_server.url.startswith("http://127.0.0.1:")
    created = httpx.post(
        f"{app_live_server.url}/sessions", json={"title": "live"}, headers=app_live_server.headers
    )
    assert created.status_code == 201
    assert (app_live_server.data_root / "sessions" / created.json()["id"]).is_dir()
    # Forked from the run's zygote (tests/forked_app.py): what it reads is the root's lock.
    status = forked_app.run(
        {**os.environ, "APP_DATA_ROOT": str(app_live_server.data_root)}, ["status", "--json"]
    )
    assert status.returncode == 0, status.stdout + status.stderr
    holder = json.loads(status.stdout)["holder"]
    assert (holder["pid"], holder["kind"]) == (app_live_server.pid, "server")


def test_app_live_server_survives_many_requests_without_blocking_on_its_output(
    app_live_server: LiveServer,
) -> None:
    # Its log goes to a file: a pipe nobody reads would fill and stall the server. What
    # fills a pipe is bytes, not requests: each request's access-log line carries a 1 KB
    # query (which /health ignores), so that a hundred of them write about 105 KB, more
    # than a pipe holds, for a fifteenth of the CPU that 1,500 bare ones took (each a
    # request through the server and this client).
    padding = "p" * 1000
    with httpx.Client(base_url=app_live_server.url, headers=app_live_server.headers) as http:
        for n in range(100):
            assert http.get("/health", params={"n": n, "pad": padding}).status_code == 200
    assert app_live_server.log.stat().st_size > 96 * 1024


@pytest.mark.app_profile("production")
def test_an_opted_in_profile_is_mapped_into_the_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.config import load

    monkeypatch.setenv("APP_API_TOKEN", "a-production-token-for-tests-only")
    config = load("production")
    assert config.sandbox is not None
    assert config.data_root == config.sandbox / "data" / "production"


def test_tmp_path_and_tmp_path_factory_lie_in_the_sandbox(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The plugin installs its own TempPathFactory through pytest's private attribute (see the
    # pytest bound in pyproject.toml): a pytest release that moved it would fail here.
    sandbox = Path(os.environ["PYTEST_APP_SANDBOX"])
    assert tmp_path_factory.getbasetemp() == sandbox
    assert tmp_path.is_relative_to(sandbox)
    assert (sandbox / ".app-sandbox").is_file()


def test_the_bare_fixture_names_are_left_to_other_plugins(pytester: pytest.Pytester) -> None:
    # pytest-django and pytest-flask define client and live_server: a shared environment must
    # see theirs under the bare names, and the app's under the prefixed ones.
    pytester.makeconftest(
        """
import pytest

@pytest.fixture
def client():
    return "another plugin's client"

@pytest.fixture
def live_server():
    return "another plugin's live_server"

@pytest.fixture
def store():
    return "another plugin's store"
"""
    )
    pytester.makepyfile(
        test_both="""
def test_both(client, live_server, store, app_client, app_store):
    assert (client, live_server, store) == (
        "another plugin's client", "another plugin's live_server", "another plugin's store"
    )
    assert app_client.get("/health").status_code == 200
    assert app_store.session_ids() == []
"""
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
