"""The pytest plugin: tests run on the testing profile, inside a sandbox, next to live servers.

Registered through the ``pytest11`` entry point, so it is active wherever the package is
installed (disable with ``-p no:app``). Its earliest hook runs before any conftest or test
module can import the app, and in this order:

1. look at the user's shell: where would every profile's data root be, and does a live
   process hold any of them? (probes only: nothing is created);
2. neutralise what could point the testing profile elsewhere: ``APP_*`` and ``DYNACONF_*``
   variables, every ``*_FOR_DYNACONF`` switch, a shell opt-in to other profiles; force
   ``ENV_FOR_DYNACONF=testing``; local settings files are not read under the sandbox and
   ``.env`` files never are (each is reported);
3. create the sandbox (pytest's own base temporary directory, one per xdist worker) and
   publish it in ``PYTEST_APP_SANDBOX``, which `app.config` and `app.dataroot` obey in every
   copy of the code and every subprocess;
4. check that the testing root overlaps no other profile's, and take the lock on the session's
   (sandboxed) testing data root for the whole run.

None of this imports dynaconf when the settings files use plain values: the plugin runs on
every pytest start, and the first test that calls `app.config.load` pays for dynaconf instead.

Every conflict stops the run with a usage error (exit 4) that names it and its fix.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from app import config as appconfig
from app import sandbox as sandboxing
from app.errors import AppError, SettingsNotFoundError, UnknownProfileError
from app.lock import describe_holder

if TYPE_CHECKING:
    from app.lock import RootLock
    from app.store import Store

#: What the plugin neutralises: the app's own overrides (``APP_<KEY>``), dynaconf's names for
#: the same keys (``DYNACONF_<KEY>``, which the app refuses), and a shell's opt-in. Other
#: ``APP_*`` and ``DYNACONF_*`` names belong to other software and are left alone.
_NEUTRALISED = frozenset(
    {key.env for key in appconfig.KEYS.values()}
    | {f"DYNACONF_{name.upper()}" for name in appconfig.KEYS}
    | {appconfig.ALLOW_PROFILES_ENV}
)


class LiveHolder(NamedTuple):
    """A live process seen holding a data root when the run started."""

    profile: str
    root: Path
    holder: dict[str, Any] | None


@dataclass
class GuardState:
    """What the plugin decided, kept in ``config.stash`` (not in module globals)."""

    sandbox: Path
    data_root: Path
    data_root_source: str
    shell_profile: str | None
    neutralised: list[str] = field(default_factory=list)
    live: list[LiveHolder] = field(default_factory=list)
    settings_note: str = ""
    session_lock: RootLock | None = None
    factory: Any = None  # _pytest.tmpdir.TempPathFactory, private to pytest
    roots: dict[str, Path] = field(default_factory=dict)
    run: sandboxing.Run | None = None
    #: The variables the plugin changed, with their values before (None: unset), put back
    #: when the run ends (a run inside a test, with pytester.runpytest, must leave no trace).
    saved_env: dict[str, str | None] = field(default_factory=dict)


#: Why the plugin does nothing in this run (the settings found are not this run's).
INACTIVE = pytest.StashKey[str]()


STATE = pytest.StashKey[GuardState]()
#: Written into every sandbox, so that a --basetemp reused from an earlier run is recognised.
_SANDBOX_MARK = ".app-sandbox"
#: The pid of the run that created the sandbox, so that its xdist workers recognise it.
_OWNER_ENV = "PYTEST_APP_SANDBOX_OWNER"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("app", "app: keep tests away from live data")
    group.addoption(
        "--app-strict",
        action="store_true",
        default=None,
        help="refuse to run while a live server holds any profile's data root (ini: app_strict)",
    )
    parser.addini(
        "app_strict",
        type="bool",
        default=False,
        help="refuse to run while a live server holds any profile's data root",
    )


# --- step 1: what the user's shell points at ----------------------------------------------


def _shell_roots() -> tuple[str | None, dict[str, Path], Path | None]:
    """Every profile's root as the shell would resolve it, before anything is neutralised.

    `app.config.configured_roots` reads them without dynaconf when the files allow it: the
    plugin runs on every pytest start, and importing dynaconf would cost more than all the
    rest of what it does. The testing profile itself is loaded by the first test that asks.
    """
    shell_profile = os.environ.get(appconfig.PROFILE_ENV)
    try:
        roots = appconfig.configured_roots(shell_profile or appconfig.DEFAULT_PROFILE)
    except UnknownProfileError:
        # The shell's profile name is a typo: its overrides apply to no profile, so the files
        # alone say where the roots are.
        roots = appconfig.configured_roots(None)
    except SettingsNotFoundError:
        # The package is installed where it has no settings (a dependency of another
        # project): nothing to probe, but the sandbox and the forcing still apply.
        return shell_profile, {}, None
    return (
        shell_profile,
        {name: root for name, (root, _) in roots.items()},
        appconfig.settings_dir(),
    )


def _probe_live(roots: dict[str, Path]) -> list[LiveHolder]:
    from app.lock import probe

    live = []
    for name, root in roots.items():
        seen = probe(root)
        # Another test run's session root (seen from a nested run) is not a live server.
        if seen.held and (seen.holder or {}).get("kind") != "tests":
            live.append(LiveHolder(name, root, seen.holder))
    return live


# --- step 2: neutralise -------------------------------------------------------------------


def _remove_switches() -> list[str]:
    """Remove dynaconf's switch variables first: with any of them set the app refuses to load,
    so no live server can be using them, and the shell's roots are resolved without them."""
    switches = appconfig.dynaconf_switches()
    for name in switches:
        del os.environ[name]
    return switches


def _neutralise(settings_dir: Path | None, switches: list[str]) -> list[str]:
    """Remove every variable that could redirect the testing profile; say what was removed."""
    removed = set(switches)
    for name in list(os.environ):
        if name in _NEUTRALISED:
            del os.environ[name]
            removed.add(name)
    report = sorted(removed)
    previous = os.environ.get(appconfig.PROFILE_ENV)
    if previous is not None and previous.strip().lower() != "testing":
        report.append(f"{appconfig.PROFILE_ENV}={previous}")
    os.environ[appconfig.PROFILE_ENV] = "testing"
    if settings_dir is None:
        return report
    for local in appconfig.LOCAL_FILES:
        if (settings_dir / local).is_file():
            report.append(f"{local} (not read under the sandbox)")
    if (settings_dir / ".env").is_file():
        report.append(".env (never read by the app)")
    return report


# --- step 3: the sandbox ------------------------------------------------------------------


def _overlapping(paths: list[Path], roots: dict[str, Path]) -> tuple[str, Path] | None:
    for path in paths:
        for name, root in roots.items():
            if root.is_relative_to(path) or path.is_relative_to(root):
                return name, root
    return None


def _check_basetemp(given: Path, roots: dict[str, Path]) -> None:
    """pytest empties a given --basetemp before use: never let that be a data root."""
    __tracebackhide__ = True
    # pytest empties os.path.abspath(given), which reads `link/..` lexically, while resolve()
    # follows the link first: check both spellings.
    lexical = Path(os.path.abspath(given.expanduser()))  # noqa: PTH100 - what pytest uses
    target = given.expanduser().resolve()
    found = _overlapping([lexical, lexical.resolve(), target], roots)
    if found is not None:
        name, root = found
        spelled = f" (as {lexical})" if str(lexical) != str(given) else ""
        raise pytest.UsageError(
            f"app: refusing --basetemp {given}: pytest empties it{spelled} before the run, "
            f"and it overlaps the data root of profile {name!r} ({root}). Choose a --basetemp "
            "outside every data root, or omit it"
        )
    target = lexical
    from app.lock import probe

    seen = probe(appconfig.sandbox_root(target, "testing"))
    if seen.held:
        raise pytest.UsageError(
            f"app: refusing --basetemp {given}: another run uses it; its testing data root is "
            f"held by {describe_holder(seen.holder)}. pytest would empty it under that run. "
            "Give each concurrent run its own --basetemp"
        )
    if target.is_dir():
        _refuse_data_roots_inside(given, target)


def _refuse_data_roots_inside(given: Path, target: Path) -> None:
    """Look through an existing --basetemp before pytest deletes all of it.

    The roots the settings name are not the only ones: a service may get its data root from
    its own environment, which this shell never saw. Any data root held by a live process is
    refused, and so is any stamped data root unless the directory is a sandbox this plugin
    made before (those hold the earlier run's stamped roots). Walking costs what pytest's
    deletion of the same tree is about to cost anyway.
    """
    __tracebackhide__ = True
    from app.dataroot import STAMP_FILE
    from app.lock import LOCK_FILE, probe

    earlier_sandbox = (target / _SANDBOX_MARK).is_file()
    for directory, _dirs, files in os.walk(target):
        here = Path(directory)
        what = "it is" if here == target else "it holds"
        if LOCK_FILE in files and (seen := probe(here)).held:
            raise pytest.UsageError(
                f"app: refusing --basetemp {given}: {what} the data root {here}, held by "
                f"{describe_holder(seen.holder)}; pytest empties the --basetemp before the "
                "run. Choose a --basetemp outside every data root"
            )
        if STAMP_FILE in files and not earlier_sandbox:
            raise pytest.UsageError(
                f"app: refusing --basetemp {given}: {what} the data root {here} (it has a "
                f"profile stamp, {STAMP_FILE}), and pytest empties the --basetemp before the "
                "run. Choose a --basetemp outside every data root, or a new directory"
            )


def _check_default_basetemp(roots: dict[str, Path]) -> None:
    """pytest keeps its temporary directories in ``<TMPDIR>/pytest-of-<user>``, creating them
    and deleting old ones there: a TMPDIR inside a data root would reach into it."""
    __tracebackhide__ = True
    import tempfile

    from _pytest.tmpdir import get_user

    temproot = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()).resolve()
    rootdir = temproot / f"pytest-of-{get_user() or 'unknown'}"
    found = _overlapping([rootdir], roots)
    if found is not None:
        name, root = found
        raise pytest.UsageError(
            f"app: refusing to run: pytest would create (and clean up) its temporary "
            f"directories in {rootdir}, which overlaps the data root of profile {name!r} "
            f"({root}), because TMPDIR is {temproot}. Point TMPDIR outside every data root, "
            "or pass --basetemp"
        )


def _mark_sandbox(sandbox: Path) -> None:
    """Say that this directory is a sandbox, so that a later run may empty it (see above)."""
    (sandbox / _SANDBOX_MARK).write_text(
        "A pytest sandbox of the app's plugin: pytest empties it when it is reused.\n"
    )


def _make_sandbox(config: pytest.Config, given: str | None, roots: dict[str, Path]) -> Any:
    """pytest's own base temporary directory, created now, as the factory tmp_path will use."""
    from _pytest.tmpdir import TempPathFactory

    if given:
        _check_basetemp(Path(given), roots)
    else:
        _check_default_basetemp(roots)
    return TempPathFactory(
        given_basetemp=Path(given) if given else None,
        retention_count=int(config.getini("tmp_path_retention_count")),
        retention_policy=config.getini("tmp_path_retention_policy"),
        trace=config.trace.get("tmpdir"),
        _ispytest=True,
    )


def _testing_root(sandbox: Path) -> tuple[Path, str, dict[str, Path]]:
    """The session's testing data root, as `load("testing")` will place it, its source, and
    every profile's root as the files alone configure them.

    Refuses a testing root that overlaps another profile's: `load` would refuse it in every
    test, and a root nested in production's is the incident's shape.
    """
    __tracebackhide__ = True
    try:
        roots = appconfig.configured_roots(None)  # after neutralising: the files alone
    except SettingsNotFoundError as error:
        return appconfig.sandbox_root(sandbox, "testing"), f"pytest sandbox ({error})", {}
    except AppError as error:
        raise pytest.UsageError(f"app: cannot read the settings: {error}") from None
    for overlap in appconfig.overlaps(roots):
        raise pytest.UsageError(
            f"app: the testing profile cannot be used: {overlap}. Fix settings.toml "
            "(see `app doctor`)"
        )
    if "testing" not in roots:
        raise pytest.UsageError(
            f"app: settings.toml in {appconfig.settings_dir()} has no [testing] profile with a "
            "data_root; the tests run on it. Add one (see `app doctor`)"
        )
    configured, source = roots["testing"]
    files = {name: root for name, (root, _) in roots.items()}
    if configured.is_relative_to(sandbox):
        return configured, source, files
    return (
        appconfig.sandbox_root(sandbox, "testing"),
        f"pytest sandbox (configured: {configured}, {source})",
        files,
    )


# --- the hooks ----------------------------------------------------------------------------


def _applies(config: pytest.Config) -> str | None:
    """None if the plugin acts in this run, else why it does not.

    Like pytest-django, which does nothing until Django is configured, the plugin acts only
    where this app's settings are the run's: ``APP_SETTINGS_DIR`` names them, or the run's
    rootdir and the settings directory are one project. In a virtual environment shared
    with another project, that project's runs keep their environment untouched.
    """
    try:
        directory = appconfig.settings_dir()
    except SettingsNotFoundError as error:
        return f"{error}"
    except AppError:
        return None  # settings that are this app's but broken: acting reports it
    if os.environ.get(appconfig.SETTINGS_DIR_ENV):
        return None
    rootdir = config.rootpath.resolve()
    if rootdir.is_relative_to(directory) or directory.is_relative_to(rootdir):
        return None
    return (
        f"the settings in {directory} belong to another project than this run's rootdir "
        f"({rootdir}); set {appconfig.SETTINGS_DIR_ENV} to use them"
    )


def _save_env(saved: dict[str, str | None], names: Iterable[str]) -> None:
    for name in names:
        saved.setdefault(name, os.environ.get(name))


def _protected(
    shell: dict[str, Path], files: dict[str, Path], live: list[LiveHolder], sandbox: Path
) -> list[sandboxing.Protected]:
    """Every root the run must never open, by path and identity: the shell's view, the
    files', and the live holders'. A root inside the sandbox is the run's own."""
    found: dict[tuple[str, Path], sandboxing.Protected] = {}
    pairs = [*shell.items(), *files.items(), *((h.profile, h.root) for h in live)]
    for name, root in pairs:
        if not root.is_relative_to(sandbox) and (name, root) not in found:
            found[name, root] = sandboxing.Protected.of(name, root)
    return list(found.values())


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """Decide everything before conftest files (and so the app) are imported."""
    __tracebackhide__ = True
    known = early_config.known_args_namespace
    if getattr(known, "help", False) or getattr(known, "version", False):
        return  # pytest --help / --version: read, create and lock nothing (pytest-django #235)
    inactive = _applies(early_config)
    if inactive is not None:
        early_config.stash[INACTIVE] = inactive
        return
    _refuse_early_loads()
    saved: dict[str, str | None] = {}
    _save_env(saved, [*_NEUTRALISED, *appconfig.dynaconf_switches(), appconfig.PROFILE_ENV])
    _save_env(saved, [appconfig.SANDBOX_ENV, _OWNER_ENV])
    try:
        switches = _remove_switches()
        shell_profile, roots, settings_dir = _shell_roots()
    except AppError as error:
        raise pytest.UsageError(f"app: cannot read the settings before the run: {error}") from None
    live = _probe_live(roots)
    inherited = os.environ.get(appconfig.SANDBOX_ENV)
    # An xdist worker learns its --basetemp only after this hook (xdist sets it once the
    # config is parsed); until then it stays inside the controller's sandbox, which it
    # inherited, and narrows to its own in pytest_configure.
    # A worker's parent is the run that published the sandbox. A test that runs pytest from
    # inside a worker inherits PYTEST_XDIST_WORKER too, but its parent is that worker.
    # The variables alone can be forged by a test that starts pytest: a worker's sandbox
    # must also lie in the run its parent registered (the controller's).
    enclosing = sandboxing.current_run()
    worker = (
        bool(os.environ.get("PYTEST_XDIST_WORKER"))
        and inherited is not None
        and os.environ.get(_OWNER_ENV) == str(os.getppid())
        and enclosing is not None
        and enclosing.pid == os.getppid()
        and Path(inherited).resolve().is_relative_to(enclosing.sandbox)
    )
    # A run started inside another (a test that runs pytest) keeps that run's protected roots.
    inherited_protected = enclosing.protected if enclosing is not None else ()
    guarded = {**{f"{p.profile} (enclosing run)": p.path for p in inherited_protected}, **roots}
    factory = None
    if worker:
        assert inherited is not None
        sandbox = Path(inherited)
    else:
        factory = _make_sandbox(early_config, known.basetemp, guarded)
        sandbox = factory.getbasetemp().resolve()
        _mark_sandbox(sandbox)
        os.environ[_OWNER_ENV] = str(os.getpid())
    neutralised = _neutralise(settings_dir, switches)
    os.environ[appconfig.SANDBOX_ENV] = str(sandbox)
    data_root, source, files = _testing_root(sandbox)
    note = str(settings_dir) if settings_dir else "none found"
    state = GuardState(sandbox, data_root, source, shell_profile, neutralised, live, note)
    state.factory = factory
    state.roots = roots
    state.saved_env = saved
    protected = [*_protected(roots, files, live, sandbox), *inherited_protected]
    try:
        state.run = sandboxing.register(sandbox, protected)
    except OSError as error:
        raise pytest.UsageError(
            f"app: cannot register the test run, so its subprocesses could not be told apart "
            f"from a production shell: {error}"
        ) from None
    early_config.stash[STATE] = state
    strict = known.app_strict or early_config.getini("app_strict")
    if strict and live and not worker:
        seen = "; ".join(
            f"profile {h.profile!r} at {h.root} held by {describe_holder(h.holder)}" for h in live
        )
        raise pytest.UsageError(
            f"app: strict mode refuses to run while a live process holds a data root: {seen}. "
            "Stop it, or run without --app-strict (the tests would not touch it anyway)"
        )


def _refuse_early_loads() -> None:
    """Someone loaded the configuration before the plugin could act (outside its sandbox)."""
    __tracebackhide__ = True
    early = appconfig.loaded()
    if early:
        first = early[0]
        raise pytest.UsageError(
            f"app: the configuration was loaded (profile {first.profile!r}, data root "
            f"{first.data_root}) at {first.caller} before the app pytest plugin could confine "
            "it to the test sandbox. Call app.config.load() inside a fixture or function, "
            "never at import time of a plugin or conftest"
        )


def _hold_session_root(root: Path) -> RootLock:
    """Hold the session's testing root for the whole run, as a server holds its own."""
    __tracebackhide__ = True
    from app.errors import DataRootInUseError
    from app.lock import RootLock

    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return RootLock(root, kind="tests", profile="testing").acquire("run the tests on it")
    except DataRootInUseError as error:
        raise pytest.UsageError(
            f"app: the testing data root is held by a live process: {error}"
        ) from None


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    __tracebackhide__ = True
    config.addinivalue_line(
        "markers",
        "app_profile(*names): allow this test to load those profiles; their data roots are "
        "mapped into the test sandbox",
    )
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.factory is None:  # an xdist worker: its --basetemp is known now
        state.factory = _make_sandbox(config, config.option.basetemp, state.roots)
        state.sandbox = state.factory.getbasetemp().resolve()
        _mark_sandbox(state.sandbox)
        os.environ[appconfig.SANDBOX_ENV] = str(state.sandbox)
        state.data_root, state.data_root_source, _ = _testing_root(state.sandbox)
        assert state.run is not None
        state.run = sandboxing.register(state.sandbox, state.run.protected, replacing=state.run)
    # tmpdir's own pytest_configure made a second factory (a second numbered directory);
    # put ours back so that tmp_path and tmp_path_factory lie inside the sandbox.
    config._tmp_path_factory = state.factory  # type: ignore[attr-defined]
    state.session_lock = _hold_session_root(state.data_root)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.session_lock is not None:
        state.session_lock.release()
        state.session_lock = None
    if state.run is not None:
        sandboxing.unregister(state.run)
    for name, value in state.saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(STATE, None)
    if state is None:
        inactive = config.stash.get(INACTIVE, None)
        return [f"app: inactive, nothing neutralised or forced: {inactive}"] if inactive else []
    forced = "forced"
    if state.shell_profile is not None and state.shell_profile.strip().lower() != "testing":
        forced += f"; the shell asked for {state.shell_profile!r}"
    lines = [
        (
            f"app: profile=testing ({forced}), data_root={state.data_root} "
            f"(from {state.data_root_source})"
        ),
        (
            f"app: sandbox={state.sandbox}, settings={state.settings_note}, "
            f"neutralised: {', '.join(state.neutralised) or 'nothing'}"
        ),
    ]
    for live in state.live:
        lines.append(
            f"app: live server on profile {live.profile!r} ({describe_holder(live.holder)}) "
            f"at {live.root}: tests will not touch it"
        )
    return lines


@pytest.fixture(autouse=True)
def _app_sandbox_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Apply ``app_profile`` marks and make sure no test removes the sandbox marker."""
    state = request.config.stash.get(STATE, None)
    if state is None:
        yield
        return
    names = [name for mark in request.node.iter_markers("app_profile") for name in mark.args]
    previous = os.environ.get(appconfig.ALLOW_PROFILES_ENV)
    marked = state.run
    if names and state.run is not None:
        # In this process, and for the children the test starts; either only maps those
        # profiles' roots into the sandbox.
        os.environ[appconfig.ALLOW_PROFILES_ENV] = ",".join(str(n).lower() for n in names)
        marked = sandboxing.allowing(state.run, (str(n).lower() for n in names))
        sandboxing.swap(state.run, marked)
    try:
        yield
    finally:
        if state.run is not None and marked is not None:
            sandboxing.swap(marked, state.run)
        if previous is None:
            os.environ.pop(appconfig.ALLOW_PROFILES_ENV, None)
        else:
            os.environ[appconfig.ALLOW_PROFILES_ENV] = previous
        if os.environ.get(appconfig.SANDBOX_ENV) != str(state.sandbox):
            os.environ[appconfig.SANDBOX_ENV] = str(state.sandbox)
            pytest.fail(
                f"app: {request.node.nodeid} changed {appconfig.SANDBOX_ENV}; it was put back. "
                "Tests must not leave the sandbox",
                pytrace=False,
            )


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def app_config(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> appconfig.Config:
    """The testing configuration with a fresh data root of its own under ``tmp_path``.

    The root is published as ``APP_DATA_ROOT`` for the test's duration, so subprocesses the
    test starts use it too.
    """
    inactive = request.config.stash.get(INACTIVE, None)
    if inactive is not None:
        pytest.fail(
            f"app: the app_config fixture needs the app's pytest plugin, which is inactive in "
            f"this run: {inactive}",
            pytrace=False,
        )
    root = tmp_path / "app-data"
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    return appconfig.load("testing")


@pytest.fixture
def store(app_config: appconfig.Config) -> Iterator[Store]:
    """An open, writable store on the test's own data root (lock held for the test)."""
    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, kind="tests", wanted="run a test on it") as root:
        yield Store(root)


@pytest.fixture
def client(store: Store, app_config: appconfig.Config) -> Iterator[Any]:
    """An httpx client (Starlette's TestClient) on the in-process app, token included."""
    from starlette.testclient import TestClient

    from app.server import create_app

    headers = {"Authorization": f"Bearer {app_config.api_token}"} if app_config.api_token else {}
    with TestClient(create_app(store, app_config), headers=headers) as test_client:
        yield test_client


@dataclass(frozen=True)
class LiveServer:
    """A real ``app serve`` subprocess started by the `live_server` fixture."""

    url: str
    data_root: Path
    pid: int
    token: str | None
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header the server expects, if it has a token."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def __str__(self) -> str:
        return self.url


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Only right now: another process may take it before a server binds it. To start a server,
    prefer ``app serve --port 0`` and :func:`published_port`.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def published_port(
    root: Path, process: subprocess.Popen[bytes], log: Path, attempts: int = 600
) -> int:
    """The port an ``app serve --port 0`` bound, read from the holder JSON of its lock file.

    The server binds the socket itself and then publishes the port, so nothing can take the
    port between choosing and binding it (as with :func:`free_port`).

    Args:
        root: the server's data root.
        process: the ``app serve`` process.
        log: the file its output goes to, shown if it exits first.
        attempts: how many polls, 50 ms apart, before giving up.
    """
    from app.lock import read_holder

    for _ in range(attempts):
        holder = read_holder(root)
        if holder and holder.get("pid") == process.pid and holder.get("port"):
            return int(holder["port"])
        if process.poll() is not None:
            out = log.read_text(errors="replace")
            pytest.fail(f"app serve exited with {process.returncode}:\n{out}", pytrace=False)
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"app serve published no port in {root / '.server.lock'}", pytrace=False)


def start_server(
    env: Mapping[str, str], root: Path, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``app serve --port 0`` with ``env``, its output in ``log``; return it and its URL
    once it answers. The caller stops it (``terminate()``, then ``wait()``).

    Args:
        env: the server's whole environment (its profile, root and token come from it).
        root: the data root that environment gives it, where it publishes its port.
        log: the file its output goes to: a file, not a pipe, which nobody would read.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", "0"],
            env=dict(env),
            stdout=output,
            stderr=output,
        )
    try:
        url = f"http://127.0.0.1:{published_port(root, process, log)}"
        wait_until_serving(url, process, log=log)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, url


def wait_until_serving(
    url: str, process: subprocess.Popen[bytes], attempts: int = 300, log: Path | None = None
) -> None:
    """Poll ``GET /health`` until it answers; fail with the server's output if it exits.

    Args:
        url: the server's base URL.
        process: the ``app serve`` process.
        attempts: how many polls, 50 ms apart, before giving up.
        log: the file the server writes its output to, shown if it exits (else its stdout
            pipe is read).
    """
    import httpx

    for _ in range(attempts):
        if process.poll() is not None:
            if log is not None:
                out = log.read_text(errors="replace")
            else:
                out = process.stdout.read().decode(errors="replace") if process.stdout else ""
            pytest.fail(f"app serve exited with {process.returncode}:\n{out}", pytrace=False)
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"app serve did not answer {url}/health", pytrace=False)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real ``app serve`` on a free 127.0.0.1 port and a data root of its own; stopped after."""
    root = tmp_path / "live-data"
    env = {**os.environ, "APP_DATA_ROOT": str(root), "APP_HOST": "127.0.0.1"}
    config = appconfig.load("testing", environ=env)
    log = tmp_path / "live-server.log"
    # A file, not a pipe: nobody reads a pipe while the test runs, and a full one would
    # block the server after a few hundred logged requests. Port 0: the server binds a free
    # port itself and publishes it, so no other test can take it in between (-n 2).
    process, url = start_server(env, root, log)
    try:
        yield LiveServer(url, root, process.pid, config.api_token, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
