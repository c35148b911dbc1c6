"""Shared test configuration."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import forked_app
import forked_pytest
import head_start
import httpcore  # noqa: F401  (see below)
import pytest
from children_bytecode import CHILDREN_BYTECODE, refusal, seed_with_installed_bytecode
from docs_site import build
from project_copy import copy_project_settings
from side_by_side import INNER_ADDOPTS, NEXT_ITEM

if TYPE_CHECKING:
    from starlette.testclient import TestClient
    from test_server_e2e import Server

    from app.config import Config
    from app.store import Store
    from app.testing import LiveServer

# httpx imports httpcore only when it first sends a request, and keeps httpcore's exception
# classes from then on. When that first request came from a pytester run in process, pytester
# removed that httpcore from sys.modules afterwards: the next import made new classes, which
# httpx no longer recognised, and a refused connection escaped `except httpx.TransportError`
# (a server's readiness poll failed at once instead of retrying). Imported here, httpcore
# predates every inner run.

_plain_popen = pytest.Pytester.popen


def _popen(
    self: pytest.Pytester,
    cmdargs: Sequence[str | os.PathLike[str]],
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
    stdin: Any = pytest.Pytester.CLOSE_STDIN,
    **kw: Any,
) -> Any:
    # `runpytest_subprocess`'s inner pytest forked from an interpreter that imported pytest
    # (tests/forked_pytest.py: about half an inner run's start-up), else started as pytester
    # starts it.
    forked = forked_pytest.popen(self, cmdargs, stdout, stderr, stdin, kw)
    if forked is not None:
        return forked
    return _plain_popen(self, cmdargs, stdout, stderr, stdin, **kw)


pytest.Pytester.popen = _popen  # type: ignore[method-assign]

# Real PostgreSQL and S3 servers, started only by the tests that ask for them.
pytest_plugins = ["engines"]


def pytest_configure(config: pytest.Config) -> None:
    # Registered here (and not only in docs/conftest.py) so that `pytest tests/...` alone
    # knows the marker under --strict-markers. Deselect with `-m "not browser"`.
    config.addinivalue_line(
        "markers", "browser: opens the built documentation in headless Chromium (/usr/bin/chromium)"
    )
    _children_keep_their_bytecode(config)
    forked_app.children_take_sigint()
    forked_app.remember_the_run()  # the environment every test's children start from


def _children_keep_their_bytecode(config: pytest.Config) -> None:
    # Under PYTHONDONTWRITEBYTECODE every Python child (hundreds of pytest runs, `app serve`s,
    # CLI calls) compiled its imports afresh, and every pytest child rewrote the assertions of
    # its plugins' modules (anyio's, xdist's: ~0.45 s of its ~0.9 s start-up) again. Children
    # (xdist workers included) keep their bytecode in CHILDREN_BYTECODE beside pytest's cache
    # instead, in a run that keeps that cache: the source tree and the virtualenv stay free
    # of it, as the variable wants. Not inside the cache (its d/pycache before): the app's
    # plugin checks every file in pytest's cache at each start (app.testing.writes), and the
    # thousands there (a run adds about 180, its inner runs' modules under /tmp) cost each
    # start in the tree 2 to 3 s of CPU (bench/README.md, branch suite7).
    # scripts/test gives this process the prefix from its start where the variable is set
    # (tests/children_bytecode.py): the same state, reached before pytest's own start.
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    prefix = config.rootpath / CHILDREN_BYTECODE
    given = os.environ.get("PYTHONPYCACHEPREFIX") == str(prefix)
    if not (os.environ.get("PYTHONDONTWRITEBYTECODE") or given) or cache is None:
        return
    if (why := refusal(prefix)) is not None:
        raise pytest.UsageError(
            f"tests/conftest.py: refusing to keep the run's bytecode in {prefix}: {why}"
        )
    shutil.rmtree(cache.mkdir("pycache"), ignore_errors=True)  # the earlier place, emptied
    prefix.mkdir(exist_ok=True)
    seed_with_installed_bytecode(prefix, config.rootpath)
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    # This process too, from here on: what it imports and rewrites (the test modules it
    # collects) is written where the workers look for it. scripts/test collects once so in a
    # fresh clone while lint and types run, instead of each of the three workers rewriting
    # the suite's assertions and compiling the app afresh, about 7.7 s of CPU each
    # (bench/README.md, "session 68").
    sys.pycache_prefix = str(prefix)
    sys.dont_write_bytecode = False


#: schemathesis against a real server (tests/test_openapi.py), the suite's longest wait.
FUZZING = "tests/test_openapi.py::test_schemathesis_finds_nothing"
#: Servers killed with SIGKILL at random instants (tests/test_integrity.py).
KILL_9 = "tests/test_integrity.py::test_kill_9_at_random_instants_loses_nothing_acknowledged"
#: The PostgreSQL how-to's commands, run as written on the engines.
POSTGRESQL_HOW_TO = "tests/test_docs_remote.py::test_the_postgresql_how_to_runs_as_written"
#: The hostile suites next to production's replica pair on the engines.
REMOTE_HOSTILE = (
    "tests/test_remote_hostile.py::test_hostile_runs_leave_production_s_replica_pair_byte_identical"
)
#: A part of the suite in a pytest subprocess next to live servers of every profile.
NEXT_TO_LIVE_SERVERS = (
    "tests/test_next_to_live_servers.py::"
    "test_the_suite_passes_next_to_a_live_server_of_every_profile"
)


def pytest_collection_finish(session: pytest.Session) -> None:
    # What collection made (test items, modules, the app's imports) lives to the end: kept
    # out of the collector's reach, every full collection no longer walks it again. Six
    # in-process files, serially, alternated: 8.29 and 7.45 s of user CPU without, 7.33 and
    # 6.66 s with (system time 0.1 to 0.3 s more); bench/README.md.
    gc.collect()
    gc.freeze()
    if session.config.option.collectonly:
        return  # nothing will run: no engine to start
    # What the collected tests will ask for, started now on the idle core (tests/head_start.py).
    # engines is imported here, not above: as a plugin (pytest_plugins) its asserts are
    # rewritten only if pytest imports it first.
    from engines import start_postgres, start_s3

    from app.config import load

    config, factory = session.config, session.config._tmp_path_factory  # type: ignore[attr-defined]
    # The environment is copied here, before a test can change it under the threads.
    environ = dict(os.environ)
    # In the order the tests need them (alphabetical files): one runs at a time.
    if head_start.wanted(session, "postgres_engine"):
        head_start.begin(
            config, "postgres", start_postgres, lambda engine: engine.stop(), serves_tests=True
        )
    if head_start.wanted(session, "s3_engine"):
        start_s3_here = lambda: start_s3(factory.mktemp("seaweedfs"))  # noqa: E731
        head_start.begin(
            config, "s3", start_s3_here, lambda engine: engine.stop(), serves_tests=True
        )
    if head_start.wanted(session, "built_site"):
        head_start.begin(config, "docs-site", lambda: build(factory, environ), _nothing)
    how_to = head_start.collected(session, POSTGRESQL_HOW_TO)
    if isinstance(how_to, pytest.Function):  # it asks for both engines, queued above
        run_how_to = how_to.module.run_the_how_to

        def run_the_how_to() -> object:
            postgres, s3 = (head_start.shared(config, name) for name in ("postgres", "s3"))
            with postgres.for_a_head_start():  # no test restarts it meanwhile
                return run_how_to(postgres, s3, factory.mktemp("postgresql-how-to"), environ)

        head_start.begin(config, "postgresql-how-to", run_the_how_to, _nothing)
    kill_9 = head_start.collected(session, KILL_9)
    if isinstance(kill_9, pytest.Function):
        run_kills = kill_9.module.kill_9_at_random_instants
        where_kills = lambda: factory.mktemp("kill-9-at-random-instants")  # noqa: E731
        head_start.begin(config, "kill-9", lambda: run_kills(where_kills(), environ), _nothing)
    beside = head_start.collected(session, NEXT_TO_LIVE_SERVERS)
    if isinstance(beside, pytest.Function):
        run = beside.module.run_next_to_live_servers
        where = lambda: factory.mktemp("next-to-live-servers")  # noqa: E731
        head_start.begin(config, "next-to-live-servers", lambda: run(where(), environ), _nothing)
    fuzzing = head_start.collected(session, FUZZING)
    if isinstance(fuzzing, pytest.Function) and load("testing").database_url is None:
        # Its own server, as app_live_server starts a local one: only on a local profile.
        fuzz = fuzzing.module.fuzz_a_server_of_its_own
        head_start.begin(config, "schemathesis", lambda: fuzz(factory, environ), _nothing)
    hostile = head_start.collected(session, REMOTE_HOSTILE)
    if isinstance(hostile, pytest.Function):  # it asks for both engines, queued above
        # Its thread imports the app's modules as it needs them: imported there while a
        # pytester test of this process put `sys.modules` back as it was at its start, one
        # was taken out mid-import (serial runs: "KeyError: 'app.remote.errors'"). Imported
        # here, before any test, no restore takes them out.
        _import_every_module_of("app")
        run_hostile = hostile.module.run_hostile_next_to_a_pair

        def next_to_a_pair() -> object:
            postgres, s3 = (head_start.shared(config, name) for name in ("postgres", "s3"))
            where = factory.mktemp("remote-hostile")
            with postgres.for_a_head_start():  # no test restarts it meanwhile
                return run_hostile(where, postgres, s3, environ)

        head_start.begin(config, "remote-hostile", next_to_a_pair, _nothing)


def _import_every_module_of(package: str) -> None:
    import importlib
    import pkgutil

    for found in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
        if not found.name.endswith(".__main__"):  # `python -m app`'s: it runs the command line
            importlib.import_module(found.name)


#: The order in which xdist hands out the slow files (`scripts/test`: ``-n 3 --dist loadfile``).
#: Each file's figures are its tests' seconds (set-up, call and tear-down) and the CPU of its
#: worker's process tree meanwhile, in one whole run (2026-12-05, branch suite12, the machine
#: shared with other runs at load 6 to 9: about 1.6 times a quiet run's seconds; bench/README.md,
#: "The suite after suite12"). The longest first, so that the run does not end on one worker;
#: but right after the incident's file, which keeps both cores busy (two inner runs side by
#: side), the files whose tests mostly wait (stopped engines, stalled servers and clients: a
#: fifth of a core), so that the other workers run those beside it instead of files that want
#: both cores. Refresh it when a file's tests grow: a slow file left out of it only runs in its
#: alphabetical place again.
SLOWEST_FILES = (
    "tests/test_incident.py",  # 81 s, 45 s of CPU
    "tests/test_redteam_s28_remote.py",  # 21 s, 4 s of CPU
    "tests/test_redteam_s27_remote.py",  # 19 s, 5 s of CPU
    "tests/test_server_resources.py",  # 19 s, 2 s of CPU
    "tests/test_remote_replicas.py",  # 30 s, 11 s of CPU
    "tests/test_redteam_s38_ops.py",  # 75 s, 19 s of CPU
    "tests/test_plugin_remote.py",  # 43 s, 14 s of CPU; perf-remote74: 6.4 s less
    "tests/test_docs_browser.py",  # 40 s, 24 s of CPU; perf-browser74 5 s, perf-attacks75 2 s less
    "tests/test_remote_hostile.py",  # 31 s, 14 s of CPU
    "tests/test_redteam_s20_store_refusals.py",  # 58 s, 12 s of CPU
    "tests/test_redteam_s39_ops.py",  # 41 s, 19 s of CPU
    "tests/test_plugin.py",  # 37 s, 11 s of CPU
    "tests/test_next_to_live_servers.py",  # 31 s, 9 s of CPU
    "tests/test_redteam_s28_faults.py",  # 27 s, 8 s of CPU
    "tests/test_openapi.py",  # 26 s, 8 s of CPU
    "tests/test_redteam_s18_crash_points.py",  # 24 s, 7 s of CPU
    "tests/test_redteam_s37_remote.py",  # 22 s, 10 s of CPU
    "tests/test_remote_credentials.py",  # 22 s, 8 s of CPU; perf-remote74: about 6.5 s less
    "tests/test_docs_remote.py",  # 21 s, 9 s of CPU
    "tests/test_redteam_s39_guard.py",  # 21 s, 12 s of CPU
    "tests/test_remote_store.py",  # 21 s, 7 s of CPU
    "tests/test_redteam_s36_guard.py",  # 20 s, 15 s of CPU
    "tests/test_redteam_s27_guard.py",  # 18 s, 6 s of CPU
    "tests/test_integrity.py",  # 18 s, 4 s of CPU
    "tests/test_server_transfers.py",  # 17 s, 4 s of CPU
    "tests/test_redteam_s40_guard.py",  # 16 s, 9 s of CPU
    "tests/test_redteam_s38_guard.py",  # 14 s, 10 s of CPU
    "tests/test_redteam_s42_guard.py",  # 14 s, 7 s of CPU
    "tests/test_redteam_s45_remote.py",  # 14 s, 5 s of CPU
    "tests/test_redteam_s42_remote.py",  # 13 s, 5 s of CPU
    "tests/test_redteam_s37_guard.py",  # 13 s, 10 s of CPU
    "tests/test_redteam_s38_integrity.py",  # suite13: 21 and 17 s (load 3 to 18)
    "tests/test_server_e2e.py",  # 12 s, 3 s of CPU
    "tests/test_redteam_s29_powerloss.py",  # 12 s, 4 s of CPU
    "tests/test_redteam_s41_guard.py",  # 11 s, 6 s of CPU
    "tests/test_server_upload_bodies.py",  # 10 s, 3 s of CPU
    "tests/test_cli_config.py",  # 10 s, 5 s of CPU
    "tests/test_redteam_s41_remote.py",  # 10 s, 4 s of CPU
    "tests/test_redteam_s37_ops.py",  # 10 s, 3 s of CPU
    "tests/test_redteam_s39_integrity.py",  # 10 s, 5 s of CPU
    "tests/test_redteam_s26_remote.py",  # 9 s, 4 s of CPU
    "tests/test_redteam_s46_guard.py",  # 9 s, 5 s of CPU
    "tests/test_redteam_s44_guard.py",  # 9 s, 3 s of CPU
    "tests/test_fixtures.py",  # 9 s, 3 s of CPU
    "tests/test_redteam_s43_guard.py",  # 8 s, 3 s of CPU
    "tests/test_redteam_s47_guard.py",  # suite13: 16 and 8 s (load 3 to 18)
    "tests/test_redteam_s48_guard.py",  # suite13: 14 and 8 s
    "tests/test_redteam_s46_integrity.py",  # suite13: 14 and 7 s
    "tests/test_redteam_s32_maintenance.py",  # 8 s, 2 s of CPU
    "tests/test_redteam_s35_guard.py",  # 8 s, 5 s of CPU
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Under xdist, the slowest files first (each file's tests stay together, in their order:
    # module fixtures and NEXT_ITEM rely on it), the others after them in their order. xdist
    # hands out tests in this order: the run's last ones are then short ones, and both
    # workers end together instead of one running a long test alone at the end (under
    # `--dist loadfile` a file is one unit: scripts/test). A serial run keeps the
    # alphabetical order, which its head starts were queued for.
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: place for place, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def _nothing(_: object) -> None:
    pass  # what the head start returned holds nothing to stop


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # Kept for tests that start the next test's child while theirs runs (side_by_side.py);
    # returning None leaves the protocol to pytest.
    item.stash[NEXT_ITEM] = nextitem


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # At the end of each file (its module fixtures torn down too): a variable a test left in
    # this process's environment (``os.environ[...] = ...`` rather than monkeypatch's
    # ``setenv``) made every later `app` command of this worker start plainly rather than
    # forked, for the rest of the run (tests/forked_app.py, `Zygote.fits`): test_planted.py's
    # ``PLANTED_RAN``, about 120 plain starts and some 15 s of CPU of a whole run
    # (bench/README.md, "perf-suite70"). An error of the file's last test, naming them; the
    # run's values are put back, so that the next file is neither slowed nor blamed.
    result = yield
    if nextitem is None or nextitem.path != item.path:
        left = forked_app.left_in_the_environment()
        if left:
            forked_app.put_back_the_environment(left)
            pytest.fail(
                f"{item.path.name} left {', '.join(left)} in this process's environment: "
                "every later `app` command of this worker would start plainly rather than "
                "forked (tests/forked_app.py). Set it with monkeypatch.setenv, or in the "
                "environment of the child that needs it",
                pytrace=False,
            )
    return result


@pytest.fixture(autouse=True)
def _inner_runs_use_a_copy_of_the_project_settings(request: pytest.FixtureRequest) -> None:
    # A pytester run's rootdir is a temporary directory: another project, as far as the
    # plugin can tell, so it would stay inactive. Give the inner run the project's settings,
    # copied, so that its roots are its own: a developer's live `app serve` on the project's
    # development root must not change what the inner run sees (a test's own settings_dir
    # fixture or setenv still wins, being set after this one).
    if "pytester" in request.fixturenames:
        copy = copy_project_settings(request.getfixturevalue("tmp_path") / "project-settings")
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("APP_SETTINGS_DIR", str(copy))
        # After pytester has removed the outer run's PYTEST_ADDOPTS from the environment (its
        # set-up does): the inner runs load no plugin they do not use (side_by_side.py).
        request.getfixturevalue("pytester")
        monkeypatch.setenv("PYTEST_ADDOPTS", INNER_ADDOPTS)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """`app serve` processes a test starts (`test_server_e2e.Server`): killed after it if
    still running."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.kill()


@pytest.fixture
def small(
    request: pytest.FixtureRequest, app_store: Store, app_config: Config
) -> Iterator[TestClient]:
    """The in-process app, its upload limit the requesting test module's ``LIMIT`` bytes."""
    from starlette.testclient import TestClient

    from app.server import create_app

    app_store.max_upload_bytes = request.module.LIMIT
    headers = {"Authorization": f"Bearer {app_config.api_token}"}
    with TestClient(create_app(app_store, app_config), headers=headers) as client:
        yield client


@pytest.fixture
def tight(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """A live server (`forked_server`) with the ``APP_*`` settings given as the test's
    indirect parameter."""
    for name, value in getattr(request, "param", {}).items():
        monkeypatch.setenv(name, value)
    yield request.getfixturevalue("forked_server")


@pytest.fixture
def forked_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """`app_live_server`'s server, forked from the run's zygote when it fits
    (tests/forked_app.py): on a local testing profile, ``app serve --port 0`` on ``tmp_path /
    "live-data"``, found by its published port, stopped after the test; on a remote one,
    `app_live_server` itself. tests/test_fixtures.py covers `app_live_server`.
    """
    from app.config import load
    from app.testing import LiveServer, published_port, stop_server, wait_until_serving

    if load("testing").database_url is not None:
        yield request.getfixturevalue("app_live_server")
        return
    root, log = tmp_path / "live-data", tmp_path / "live-server.log"
    env = {**os.environ, "APP_HOST": "127.0.0.1", "APP_DATA_ROOT": str(root)}
    config = load("testing", environ=env)
    process = forked_app.serve(env, log, ["serve", "--port", "0"])
    try:
        url = f"http://127.0.0.1:{published_port(root, process, log)}"
        wait_until_serving(url, process, log=log)
        yield LiveServer(url, root, process.pid, config.api_token, log, config)
    finally:
        stop_server(process)
