"""The pytest plugin's hooks (``pytest11`` entry point ``app``; disable with ``-p no:app``).

Its first hook acts before any conftest or test module can import the app, since the
incident this guards against was a settings object built at import time: it looks at the
shell's roots, creates the sandbox, neutralises the environment and holds the testing root,
in the order and with the refusals the pytest plugin reference page gives.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Final

import iniconfig
import pytest

from app import config as appconfig
from app import config_files
from app import sandbox as sandboxing
from app.errors import AppError, printable
from app.lock import describe_holder
from app.testing import fixtures, guard, planted, python_writes, sealed, watch, writes, zygote
from app.testing.fixtures import (  # noqa: F401 - registered with the plugin, as pytest-django does
    FORKED,
    LIVE_SERVER_STARTS,
    _app_remote_scratch,
    app_client,
    app_config,
    app_live_server,
    app_store,
    unknown_start,
)
from app.testing.guard import INACTIVE, MARKED, STATE, GuardState

# As pytest imports the plugin, before any later plugin's import: a child such an import
# (PYTEST_PLUGINS) started with a hand-built environment found no run (red team 28). Our
# first hook, a wrapper that runs before every plugin's own, registers the run over it, or
# says that this pytest runs without the plugin (an inactive one).
sandboxing.announce_start()
# Read while pytest loads its other plugins and options, for the start's check of its older
# directories, where that check is likely; dropped once the first hook is done.
if guard.flocks_due_at_start():
    guard.read_flocks_ahead()


def pytest_addoption(parser: pytest.Parser) -> None:
    # Also where the fallback is switched off: argparse opens a FileType option as it parses.
    writes.guard_file_options(parser)
    group = parser.getgroup("app", "app: keep tests away from live data")
    group.addoption(
        "--app-strict",
        action="store_true",
        default=None,
        help="refuse to run while a live server holds any profile's data root (ini: app_strict)",
    )
    group.addoption(
        "--app-seal",
        action="store_true",
        default=None,
        help="mount the roots the run protects read-only for every process of the run, in a "
        "mount namespace of its own (needs CAP_SYS_ADMIN; ini: app_seal)",
    )
    group.addoption(
        "--app-keep-remote",
        action="store_true",
        default=False,
        help="keep the run's scratch database and object prefix (a remote testing profile) "
        "instead of dropping them at the end, to look at them; the header names them",
    )
    group.addoption(
        "--app-live-server",
        choices=LIVE_SERVER_STARTS,
        default=None,
        help="how app_live_server starts its app serve: forked from one warm interpreter per "
        "pytest process, which imported the server's modules (the default), or a plain "
        "subprocess (ini: app_live_server)",
    )
    parser.addini(
        "app_live_server",
        default=FORKED,
        help="how app_live_server starts its app serve: forked (the default) or subprocess",
    )
    parser.addini(
        "app_strict",
        type="bool",
        default=False,
        help="refuse to run while a live server holds any profile's data root",
    )
    parser.addini(
        "app_seal",
        type="bool",
        default=False,
        help="mount the roots the run protects read-only for every process of the run",
    )


def _save_env(saved: dict[str, str | None], names: Iterable[str]) -> None:
    # From one copy of the environment: `os.environ.get` of a name not set raises and catches
    # a KeyError inside, 6 K instructions, for most of some 120 names at every start
    # (bench/README.md, "perf-start72").
    environ = os.environ.copy()
    for name in names:
        saved.setdefault(name, environ.get(name))


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Iterator[None]:
    """A wrapper, so that it runs before every plugin's own implementation, tryfirst ones
    included: pytest-cov's (tryfirst, and registered after the app's plugin or before it,
    as entry points come) starts coverage there, which erases its data file first; with
    ``COVERAGE_FILE`` naming a live ``session.json``, that deleted it before the check of
    what the run writes refused the run (red team 30)."""
    __tracebackhide__ = True
    given = list(args)
    try:
        _before_the_conftests(early_config)
    finally:
        guard.drop_flocks_ahead()
    result = yield
    watch.after_the_conftests(early_config, args, given)
    if early_config.stash.get(STATE, None) is not None:
        # After the conftests: a key one of them registers (``parser.addini``) is known.
        try:
            _refuse_misspelt_ini(early_config)
        except pytest.UsageError:
            # pytest unconfigures no run it refuses here: the run's variables put back, its
            # entry and lock given up, as at its end.
            pytest_unconfigure(early_config)
            del early_config.stash[STATE]
            raise
    return result


def _enclosing_run() -> sandboxing.Run | None:
    """The run this pytest starts in, if any; a usage error where only the environment names
    a sandbox and it is none: ``PYTEST_APP_SANDBOX`` left in the shell (relative, ``/``, or
    through a /proc link this user may not follow) was a traceback through the plugin before
    any test (red team 61)."""
    __tracebackhide__ = True
    try:
        return sandboxing.current_run()
    except AppError as error:
        raise guard.usage_error(
            f"app: refusing to run: {error} (in this shell: `unset {appconfig.SANDBOX_ENV}`, "
            "then run pytest again)"
        ) from None


def _inside(path: Path, sandbox: Path) -> bool:
    """Whether `path` resolves into `sandbox`; no where it names no directory (a loop of
    symbolic links, a link of /proc this process may not follow), whose resolve was a
    traceback (red team 61 on regress)."""
    try:
        return path.resolve().is_relative_to(sandbox)
    except (OSError, RuntimeError):
        return False


def _publish_scratch(scratch: str, *, worker: bool) -> None:
    """The run's scratch suffix, and what marks its scratch prefixes as its own
    (`fixtures._claim_prefix`; a worker's is its controller's), for its children."""
    os.environ[sandboxing.SCRATCH_ENV] = scratch
    os.environ[fixtures.RUN_MARK_ENV] = fixtures.run_token(worker)


def _before_the_conftests(early_config: pytest.Config) -> None:
    __tracebackhide__ = True
    known = early_config.known_args_namespace
    if getattr(known, "help", False) or getattr(known, "version", False):
        # pytest --help / --version: read, create and lock nothing (pytest-django #235). It
        # still imports the conftests, and a load there was refused as if the plugin were
        # disabled (`-p no:app`): say why it is not running.
        option = "--help" if getattr(known, "help", False) else "--version"
        sandboxing.note_inactive(
            f"pytest {option} imports the conftests but runs no test, so the plugin makes no "
            "sandbox; run the tests to load the configuration under it"
        )
        return
    inactive = guard.applies(early_config)
    if inactive is not None:
        _stay_inactive(early_config, inactive)
        return
    _refuse_before_the_run(early_config)
    saved: dict[str, str | None] = {}
    _save_env(saved, [*guard.NEUTRALISED, *appconfig.dynaconf_switches(), appconfig.PROFILE_ENV])
    _save_env(
        saved,
        [appconfig.SANDBOX_ENV, sandboxing.SCRATCH_ENV, guard.OWNER_ENV, fixtures.RUN_MARK_ENV],
    )
    try:
        switches = guard.remove_switches()
        shell_profile, roots, settings_dir, spelled = guard.shell_roots_and_spellings()
    except AppError as error:
        raise guard.usage_error(f"app: cannot read the settings before the run: {error}") from None
    live, unseen = guard.probe_live(roots)
    inherited = os.environ.get(appconfig.SANDBOX_ENV)
    # An xdist worker learns its --basetemp only after this hook (xdist sets it once the
    # config is parsed); until then it stays inside the controller's sandbox, which it
    # inherited, and narrows to its own in pytest_configure.
    # A worker's parent is the run that published the sandbox. A test that runs pytest from
    # inside a worker inherits PYTEST_XDIST_WORKER too, but its parent is that worker.
    # The variables alone can be forged by a test that starts pytest: a worker's sandbox
    # must also lie in the run its parent registered (the controller's).
    enclosing = _enclosing_run()
    worker = (
        bool(os.environ.get("PYTEST_XDIST_WORKER"))
        and inherited is not None
        and os.environ.get(guard.OWNER_ENV) == str(os.getppid())
        and enclosing is not None
        and enclosing.pid == sandboxing.parent_pid()
        and _inside(Path(inherited), enclosing.sandbox)
    )
    # A run started inside another (a test that runs pytest) keeps that run's protected roots.
    inherited_protected = enclosing.protected if enclosing is not None else ()
    guarded = {**(guard.enclosing_roots(enclosing) if enclosing is not None else {}), **roots}
    factory = None
    if worker:
        assert inherited is not None
        sandbox = Path(inherited)
    else:
        factory, sandbox = guard.make_sandbox(early_config, known.basetemp, guarded)
        os.environ[guard.OWNER_ENV] = str(os.getpid())
    # A worker checks what pytest writes too, never trusting its controller to have done
    # it: a pytest that a test of a run without xdist starts with PYTEST_XDIST_WORKER set
    # passes for one (its parent, the test's process, is the run, and it inherits the
    # sandbox and the owner), and its --junitxml rewrote a live session's record (red team
    # 33). A real worker is told what its controller was, so it passes what that passed.
    watch.refuse_pytest_writes(early_config, {**guarded, **{h.profile: h.root for h in live}})
    neutralised = guard.neutralise(settings_dir, switches)
    os.environ[appconfig.SANDBOX_ENV] = str(sandbox)
    data_root, source, files = guard.testing_root(sandbox)
    note = str(settings_dir) if settings_dir else "none found"
    state = GuardState(sandbox, data_root, source, shell_profile, neutralised, live, note, unseen)
    state.factory = factory
    # A worker's --basetemp, known in pytest_configure, is checked against the enclosing
    # run's roots too, as any other run's is here.
    state.roots = guarded
    state.saved_env = saved
    state.remote = guard.testing_remote()
    state.worker = worker
    state.controller = enclosing if worker else None
    # A worker's scratch names are its controller's with its id: the controller's header
    # can name them all, and each worker drops its own.
    scratch = sandboxing.scratch_suffix(
        os.environ.get("PYTEST_XDIST_WORKER") if worker else None,
        os.environ.get(sandboxing.SCRATCH_ENV),
    )
    _publish_scratch(scratch, worker=bool(worker))
    protected = [*guard.protected(roots, files, live, sandbox, spelled), *inherited_protected]
    # The enclosing run's roots are joined here (`_enclosing_run`, as the run started): the
    # registry's own look-up of it would walk the process's ancestors again.
    state.run = guard.register(sandbox, protected, scratch=scratch, enclosing_joined=True)
    _guard_the_roots(early_config, state, protected, live, enclosing)
    if not worker:  # its controller looked, before any test started a server
        _refuse_live(known.app_strict or early_config.getini("app_strict"), live, unseen)


def _guard_the_roots(
    early_config: pytest.Config,
    state: GuardState,
    protected: list[sandboxing.Protected],
    live: list[guard.LiveHolder],
    enclosing: sandboxing.Run | None,
) -> None:
    """What the run guards from before any conftest is imported: where it asks for it
    (``--app-seal``), every write into the protected roots by the run's processes, each root
    mounted read-only in a mount namespace of the run's own (app.testing.sealed: a worker is
    born in its controller's); Python's own writes into them, by code that does not go
    through the app, with a message (app.testing.python_writes); and the environment's
    start-up files (`_watch_planted`)."""
    # `tempfile` picks its directory at its first use by writing a file there: in a root
    # sealed read-only, or one whose writes the hook refuses, it would quietly pick another,
    # and the refusal of a TMPDIR in a protected root (a test's work written there, kept by
    # pytest) never come.
    tempfile.gettempdir()
    if early_config.known_args_namespace.app_seal or early_config.getini("app_seal"):
        # Once each: a root is protected as another profile's and as a live holder's.
        paths = list(dict.fromkeys(path for root in protected for path in root.paths_now()))
        if state.worker:  # its controller's run (`enclosing`), which sealed them all
            state.sealed = (sealed.read_only_mounts(paths), [])
        else:
            # An enclosing run's roots (a pytest a test runs) were sealed by that run, in the
            # namespace this process was born in: only the run's own are sealed, and named.
            above = enclosing.protected if enclosing is not None else ()
            inherited = {path for root in above for path in root.paths_now()}
            state.sealed = sealed.seal(
                [path for path in paths if path not in inherited],
                (state.sandbox, early_config.rootpath, Path.cwd()),
            )
    state.shield = python_writes.guard(protected, {h.root: describe_holder(h.holder) for h in live})
    early_config.stash[STATE] = state
    _watch_planted(early_config, state, enclosing)


def _watch_planted(
    early_config: pytest.Config, state: GuardState, enclosing: sandboxing.Run | None
) -> None:
    """Look at what later processes of the environment run as they start before any conftest
    is imported: one that wrote a ``.pth`` as pytest imported it had it taken for the
    environment's own, as the run began (red team 75 on the guard). And register the last
    look of the run (`_the_last_look`) and the look at exit (`_look_at_exit`), before any
    conftest can register a clean-up or an ``atexit`` handler."""
    state.planted = planted.Planted().take()
    # A clean-up of the run's configuration, registered first, runs last of them (pytest
    # closes them last in, first out), after every plugin's and conftest's
    # ``pytest_unconfigure`` (a ``wrapper`` one's code after its ``yield`` included), and
    # before `pytest.main` returns the session's exit status, which it can still fail.
    early_config.add_cleanup(functools.partial(_the_last_look, early_config))
    if _pytest_is_the_program() and (enclosing is None or enclosing.pid != os.getpid()):
        # Not a run nested in this process's own (pytester's `runpytest_inprocess`), whose
        # look would come after the outer run's put-backs; nor a script's `pytest.main()`,
        # whose process may install a package after the run, on purpose.
        atexit.register(_look_at_exit, early_config)


def _sealed_lines(state: GuardState) -> list[str]:
    """The header's word on the roots this run's processes see read-only (a worker's is its
    controller's, said there)."""
    if state.sealed is None:
        return []
    done, left = state.sealed
    lines = []
    if done:
        lines.append(
            "app: read-only for every process of this run (a mount namespace of its own): "
            + ", ".join(str(path) for path in done)
        )
    lines.extend(
        f"app: not read-only for this run's other processes: {path}: {why}"
        for path, why in left
        if why != sealed.MISSING
    )
    return lines


def _refuse_live(
    strict: bool, live: list[guard.LiveHolder], unseen: list[guard.UnseenRoot]
) -> None:
    """What a live process outside the run refuses it for: in strict mode, any live holder;
    always, a process that serves the testing profile's port (red team 52)."""
    __tracebackhide__ = True
    if strict:
        _refuse_strict(live, unseen)
    guard.refuse_testing_port_served(live)


def _refuse_strict(live: list[guard.LiveHolder], unseen: list[guard.UnseenRoot]) -> None:
    """Strict mode's refusal: a live holder of any profile's root, or a root whose holder
    this user cannot see."""
    __tracebackhide__ = True
    if live:
        seen = "; ".join(
            f"profile {h.profile!r} at {h.root} held by {describe_holder(h.holder)}" for h in live
        )
        raise guard.usage_error(
            f"app: strict mode refuses to run while a live process holds a data root: {seen}. "
            "Stop it, or run without --app-strict (the tests would not touch it anyway)"
        )
    if unseen:
        seen = "; ".join(f"profile {u.profile!r} at {u.root} ({u.why})" for u in unseen)
        raise guard.usage_error(
            "app: strict mode refuses to run where it cannot tell whether a live process holds "
            f"a data root: {seen}. Run the tests as a user who may look into it, or without "
            "--app-strict (the tests cannot open it either)"
        )


def _refuse_before_the_run(config: pytest.Config) -> None:
    """What refuses an active run before it changes anything: a wrong ini value, a load (a
    misspelt ini key: after the conftests, `_refuse_misspelt_ini`)."""
    __tracebackhide__ = True
    _refuse_unknown_start(config)
    guard.refuse_early_loads()


def _refuse_misspelt_ini(config: pytest.Config) -> None:
    """Refuse an ini key spelt close to the plugin's own (``app_stirct = true``).

    pytest only warns of a key it does not know (an error under ``--strict-config`` alone),
    so the run went on without the strict mode its ini file asked for.
    """
    __tracebackhide__ = True
    path = config.inipath
    if path is None:
        return
    for key in _ini_keys(path):
        if key in _INI_KEYS or _registered(config, key):
            continue
        for meant in get_close_matches(key, _INI_KEYS, n=1, cutoff=0.8):
            raise guard.usage_error(
                f"app: {path} sets {key!r}, which is no ini key of the app (did you mean "
                f"{meant!r}?); the run would go on without what it asks for. Spell it "
                f"{meant}"
            )


def _registered(config: pytest.Config, key: str) -> bool:
    """Whether pytest knows ini `key`: a plugin or a conftest registered it (``parser.addini``).
    A project's own ``app_strict_mode`` or ``app_live_servers`` is no misspelling of the
    app's, and stopped the run as one (red team 63 on regress, forks); a conftest registers
    its keys as pytest imports it, so the check runs after the initial conftests."""
    try:
        config.getini(key)
    except ValueError:
        return False
    return True


#: The plugin's own ini keys, against which a key pytest does not know is compared.
_INI_KEYS = ["app_strict", "app_live_server", "app_seal"]


def _refuse_unknown_start(config: pytest.Config) -> None:
    """Refuse an ini ``app_live_server`` value that is no way to start a server.

    A wrong ``--app-live-server`` is argparse's usage error; the same value in the ini
    file failed each test that asked for the fixture, and the others ran (docs62).
    """
    __tracebackhide__ = True
    value = config.getini("app_live_server")
    if str(value).strip().lower() not in LIVE_SERVER_STARTS:
        raise guard.usage_error(unknown_start(config, value))


def _ini_keys(path: Path) -> list[str]:
    """The keys of pytest's section of the file pytest read its ini values from.

    Read here: pytest keeps them in ``config.inicfg``, which it deprecates (pytest 9) with no
    public way to list the keys it does not know. A file it read parses; if it does not,
    pytest has said so.
    """
    try:
        if path.suffix == ".toml":
            tool = tomllib.loads(path.read_text("utf-8"))
            if path.name in {"pytest.toml", ".pytest.toml"}:
                return list(tool.get("pytest", {}))
            pytest_tool = tool.get("tool", {}).get("pytest", {})
            return [*pytest_tool, *pytest_tool.get("ini_options", {})]
        ini = iniconfig.IniConfig(path)
    except (OSError, ValueError, iniconfig.ParseError):
        return []
    return [key for name in ("pytest", "tool:pytest") if name in ini for key in ini[name]]


def _stay_inactive(config: pytest.Config, reason: str) -> None:
    """Change nothing of the run, but refuse what pytest would delete or write in a data
    root (by what is on disk, and the roots an enclosing run protects)."""
    __tracebackhide__ = True
    guard.stay_inactive(config, reason)
    # The enclosing run's roots read once for both checks (a walk of this process's
    # ancestors, 2 to 5 ms of CPU in each of the suite's inactive inner runs): nothing runs
    # between the two, and what each guards (pytest's emptying of its temporary directory,
    # its writes) happens after both, so a second read, a moment later, saw no change the
    # first could miss and that the act itself, later still, would not outlast.
    run = guard.enclosing_run_here()
    guard.guard_python_writes_without_the_plugin(run)
    enclosing = guard.enclosing_roots(run) if run is not None else {}
    guard.refuse_deletions_inactive(config, reason, dict(enclosing))  # a copy: one each
    watch.refuse_pytest_writes(config, enclosing, reason)


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
        state.factory, state.sandbox = guard.make_sandbox(
            config, config.option.basetemp, state.roots
        )
        os.environ[appconfig.SANDBOX_ENV] = str(state.sandbox)
        state.data_root, state.data_root_source, _ = guard.testing_root(state.sandbox)
        assert state.run is not None
        state.run = guard.register(
            state.sandbox, state.run.protected, replacing=state.run, scratch=state.run.scratch
        )
    # tmpdir's own pytest_configure made a second factory (a second numbered directory);
    # put ours back so that tmp_path and tmp_path_factory lie inside the sandbox. Private:
    # see the pytest bound in pyproject.toml.
    config._tmp_path_factory = state.factory  # type: ignore[attr-defined]
    # The legacy tmpdir_factory wrapped tmpdir's factory already (legacypath's configure
    # ran first): its directories were a second numbered directory beside the sandbox, and
    # a data root made there was refused as outside it (red team 37). Private, as above.
    if hasattr(config, "_tmpdirhandler"):
        config._tmpdirhandler = pytest.TempdirFactory(state.factory, _ispytest=True)
    state.session_lock = guard.hold_session_root(state.data_root, state.sandbox)
    # What a test might leave for the environment's later processes, as the run begins: the
    # look before the conftests (`_watch_planted`) compared, then joined by the directories
    # they put on the path.
    if state.planted is None:
        state.planted = planted.Planted().take()
    elif said := state.planted.check(_AT_IMPORT):
        config.stash[_PLANTED_AT_IMPORT] = said  # said at the end, which it fails
    state.planted.extend()
    # What a live server forked from the run's warm interpreter must match: the run's
    # environment now that the plugin set its own variables, before any test changed one.
    zygote.remember_the_run(config)


def pytest_collection_finish(session: pytest.Session) -> None:
    # How many live servers the run's fixture may start: one is started the plain way.
    asking = sum("app_live_server" in getattr(i, "fixturenames", ()) for i in session.items)
    zygote.expect(session.config, asking)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist's: a worker is down; with `error`, it crashed (a test killed it, or the kernel's
    OOM killer did), and its session's end, which drops its scratch database and empties
    its prefix, never ran (red team 56). Its controller clears them once its process has
    exited (what proves that no test of it still uses them)."""
    if error is None:
        return
    from app.testing.fixtures import clear_crashed_worker

    popen = getattr(getattr(getattr(node, "gateway", None), "_io", None), "popen", None)
    exited = None if popen is None else _exits(popen)
    said = clear_crashed_worker(node.config, str(node.gateway.id), exited)
    if said:
        watch.say(node.config, said)


#: How long a controller waits for a crashed worker's process to be gone before it clears
#: its scratch names (a worker ended by `os._exit` closes its channel first, then exits).
_CRASHED_WORKER_EXIT: Final = 10.0


def _exits(popen: Any) -> bool:
    """Whether a crashed worker's process has exited, waiting for it a bounded time: its
    channel is seen closed a moment before the kernel has ended the process, and a look at
    once (``poll``) found it "still running" under load, leaving its scratch names behind
    with nothing removed (a run of the whole suite on a busy machine)."""
    import subprocess

    try:
        popen.wait(timeout=_CRASHED_WORKER_EXIT)
    except subprocess.TimeoutExpired:
        return False
    return True


#: The run's session, kept at its end for the last look (`_the_last_look`).
_SESSION: Final = pytest.StashKey[pytest.Session]()
#: What the look as the run began found planted by the initial conftests (`_watch_planted`).
_PLANTED_AT_IMPORT: Final = pytest.StashKey[str]()
#: Who wrote what the last looks find: code of the run that ran after the tests.
_AFTER_THE_TESTS: Final = (
    "code of this run after its tests (a conftest's pytest_sessionfinish or "
    "pytest_unconfigure, a session-scoped fixture's teardown, a clean-up added with "
    "config.add_cleanup)"
)
_AT_IMPORT: Final = "a conftest of this run, or a plugin, as pytest imported it"
_AT_EXIT: Final = "code of this run's process after pytest ended (an atexit handler)"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # Before tmpdir's own, which runs pytest's clean-up of its older numbered directories,
    # and deletes the sandbox of a run that passed under tmp_path_retention_policy failed.
    state = session.config.stash.get(STATE, None)
    session.config.stash[_SESSION] = session  # for `_the_last_look`
    if state is None and INACTIVE in session.config.stash:
        guard.keep_held_directories_inactive(session.config)
    if state is not None and (kept := guard.keep_sandbox_with_mounts(state, "as the run ends")):
        watch.say(session.config, kept)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if state is not None and state.planted is not None:
        said = state.planted.check("a test of this run", commands=True)
        if (at_import := session.config.stash.get(_PLANTED_AT_IMPORT, None)) is not None:
            said = at_import if said is None else f"{at_import}\n{said}"
        if said is not None:
            watch.say(session.config, said)
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(tryfirst=True)
def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Never collect in a data root: a root the run protects, or a directory stamped as one.

    pytest walks the rootdir, and the settings' relative roots (``data/production``) lie in
    the project: a file uploaded as ``test_notes.py`` has its record at
    ``records/test_notes.py`` there, which pytest imported, writing ``__pycache__/`` into a
    production session (red team 36). Whatever the run is told, a root holds no tests.
    """
    from app.dataroot import STAMP_FILE  # loaded by the run's own root already

    if os.path.lexists(collection_path / STAMP_FILE):
        return True
    state = config.stash.get(STATE, None)
    protected = state.run.protected if state is not None and state.run is not None else ()
    found = sandboxing.identity(collection_path)
    for root in protected:
        if collection_path == root.path or (found is not None and found in root.identities):
            return True
    if _linked_into_a_data_root(collection_path, [root.path for root in protected]):
        return True
    return None


def _linked_into_a_data_root(path: Path, protected: list[Path]) -> bool:
    """Whether `path` leads, through a symbolic link, to somewhere inside a data root.

    pytest's walk follows a linked directory: ``tests/uploads`` linked to a production
    session's ``records/`` (fixtures kept "beside" the tests) got its ``conftest.py`` and
    ``test_notes.py`` imported, and ``__pycache__/`` written there (red team 38). The walk
    stops at a root itself (above); a link may lead below one, where no stamp is in sight.
    """
    from app.dataroot import STAMP_FILE
    from app.lock import LOCK_FILE

    try:
        if not path.is_dir():
            return False  # a linked file's bytecode goes beside the link, not where it leads
        real = path.resolve()
    except (OSError, RuntimeError):
        return False
    if real == path.absolute():
        return False  # no link on the way: the walk met any root above it already
    if any(real.is_relative_to(root) for root in protected):
        return True
    return any(
        os.path.lexists(directory / STAMP_FILE) or os.path.lexists(directory / LOCK_FILE)
        for directory in [real, *real.parents]
    )


#: The per-test guard's fixture, as `_refuse_replaced_guard` finds it.
_GUARD_FIXTURE = "_app_sandbox_guard"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    state = item.config.stash.get(STATE, None)
    if state is not None:
        python_writes.refused_since()  # what was refused between tests, already raised
        _refuse_replaced_guard(item)
        _refuse_misread_marks(item)
        _apply_marks(item, state)


def _apply_marks(item: pytest.Item, state: GuardState) -> None:
    """Apply the test's ``app_profile`` marks before any of its fixtures is set up.

    In this process, and for the children the test starts; either only maps those profiles'
    roots into the sandbox. Applied by the guard's function-scoped fixture, they came after
    the test's wider-scoped fixtures: a module-scoped fixture of a marked test that loaded
    the profile was refused, and told to mark the test, which was marked (red team 36).
    """
    names = [name for mark in item.iter_markers("app_profile") for name in mark.args]
    if not names or state.run is None:
        return
    previous = os.environ.get(appconfig.ALLOW_PROFILES_ENV)
    os.environ[appconfig.ALLOW_PROFILES_ENV] = ",".join(str(n).lower() for n in names)
    marked = sandboxing.allowing(state.run, (str(n).lower() for n in names))
    sandboxing.swap(state.run, marked)
    item.stash[MARKED] = (marked, previous)


def _undo_marks(item: pytest.Item, state: GuardState) -> None:
    found = item.stash.get(MARKED, None)
    if found is None:
        return
    del item.stash[MARKED]
    marked, previous = found
    if state.run is not None and marked is not None:
        sandboxing.swap(marked, state.run)
    if previous is None:
        os.environ.pop(appconfig.ALLOW_PROFILES_ENV, None)
    else:
        os.environ[appconfig.ALLOW_PROFILES_ENV] = previous


def _refuse_replaced_guard(item: pytest.Item) -> None:
    # A fixture of the guard's name in a conftest or a test module, or a parametrize of that
    # name, replaced it: pytest lets the closer one win, silently, and the checks after each
    # test were gone with it (red team 36; `_after_the_test`).
    info = getattr(item, "_fixtureinfo", None)  # private: see pyproject.toml
    defs = info.name2fixturedefs.get(_GUARD_FIXTURE) if info is not None else None
    if not defs:
        return  # not a test with fixtures (a doctest, a plugin's own item)
    func = defs[-1].func
    if getattr(func, "__module__", "") == __name__ and func.__name__ == _GUARD_FIXTURE:
        return
    if func.__name__ == "get_direct_param_fixture_func":
        who = f"a parametrize of the argument {_GUARD_FIXTURE!r}"
    else:
        code = getattr(func, "__code__", None)
        where = code.co_filename if code is not None else func.__module__
        who = f"a fixture of that name in {where}"
    pytest.fail(
        f"app: {item.nodeid}: the app's per-test guard, the fixture {_GUARD_FIXTURE!r}, is "
        f"replaced here by {who}, so what the test changes of the run's marks would be "
        "checked and put back by the plugin's hooks alone, which a test can unregister. "
        "Rename that fixture or argument: names starting with _app_ are the app's plugin's",
        pytrace=False,
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Around the test's teardown: before it, tmp_path's teardown deletes the directory of a
    test that passed under tmp_path_retention_policy failed, through a mount in it; after
    it, what the test changed of the run's marks is put back (`_after_the_test`)."""
    state = item.config.stash.get(STATE, None)
    if state is None:
        return (yield)
    kept = guard.keep_sandbox_with_mounts(state, f"after {item.nodeid}")
    try:
        result = yield
    except BaseException:
        _undo_marks(item, state)
        _after_the_test(item, state)  # put back, even when a teardown failed
        _forget_failed_sync(state)
        raise
    _undo_marks(item, state)
    _forget_failed_sync(state)
    failures = [kept] if kept is not None else []
    if kept is None:
        replaced = guard.refuse_replaced_sandbox(state, f"after {item.nodeid}")
        failures += [replaced] if replaced is not None else []
    failures += _after_the_test(item, state)
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
    return result


def _forget_failed_sync(state: GuardState) -> None:
    """Forget a failed fsync of the test that ended (`app.dataroot.forget_failed_sync`).

    Kept for the whole process, it refused every change of every later test in this process
    (each in a throw-away root of its own, in the sandbox), naming the first test's file: a
    test that made an fsync fail on purpose failed the rest of its worker (red team 61).
    Forgotten once the test's fixtures are torn down: the test itself, and its fixtures, see
    every later change refused, as a server's would be. Only the run's throw-away roots are
    written in this process (the guard refuses the others), so no change of a kept root is
    acknowledged after a failure forgotten here; and not while a root a module- or
    session-scoped fixture opened is still held, which the next tests write (red team 61 on
    regress, mounts: the change of a later test to the root whose fsync failed was
    acknowledged). Only the run's own lock on its session root is not counted.
    """
    dataroot = sys.modules.get("app.dataroot")  # not imported: no root opened, none failed
    if dataroot is not None:
        dataroot.forget_failed_sync(state.session_lock)


def _after_the_test(item: pytest.Item, state: guard.GuardState) -> list[str]:
    """Put back what a test changed of the run's marks, and say what it was.

    Called twice, by the guard's fixture as it is torn down and by the plugin's teardown
    hook after it, and the second finds nothing left to do: each can be taken away where the
    other stays. A fixture of the guard's name in a conftest replaced the fixture, and
    ``config.pluginmanager.unregister(name="app")`` removes the hooks (fixtures, once
    collected, stay). Without the checks a later test's rewrite of the run's registry entry
    stayed for the rest of the run, and a child purged a stopped production root (red team
    36).
    """
    failures = [
        f"app: {item.nodeid} made a call that the run refused, and the test went on: {refused}"
        for refused in python_writes.refused_since()
    ]
    if state.shield is not None and not python_writes.guarding(state.shield):
        python_writes.reinstate(state.shield)
        failures.append(
            f"app: {item.nodeid} took the run's check of Python's writes out of "
            "app.testing.python_writes; it was put back. Tests must not switch off the guard"
        )
    if state.sealed is not None and (opened := sealed.unsealed(state.sealed[0])):
        failed = sealed.reseal(opened)
        again = (
            "it could not be sealed again ("
            + "; ".join(f"{path}: {why}" for path, why in failed)
            + ")"
            if failed
            else "it was sealed again"
        )
        failures.append(
            f"app: {item.nodeid} made {', '.join(map(str, opened))} writable again for the "
            "run's processes (a remount read-write, or an unmount, of the read-only mount the "
            f"run put over it); {again}. Tests must not switch off the guard"
        )
    if os.environ.get(appconfig.SANDBOX_ENV) != str(state.sandbox):
        os.environ[appconfig.SANDBOX_ENV] = str(state.sandbox)
        failures.append(
            f"app: {item.nodeid} changed {appconfig.SANDBOX_ENV}; it was put back. "
            "Tests must not leave the sandbox"
        )
    # A test that cleans up /tmp/app-* took the run's later children out of it.
    if state.run is not None and (lost := sandboxing.restore_entry(state.run)):
        meanwhile = (
            "read the run's rules from the sealed copy of its entry that the run keeps, where "
            "it could read this process's descriptors (a process of another user, or one "
            "without this process's capabilities, could not, and followed the changed entry)"
            if "was changed" in lost and sandboxing.keeps_sealed_copy()
            else "followed the changed entry, not the run's rules"
            if "was changed" in lost
            else "was part of the run only through the descriptors of the registry and of "
            "its entry that the run keeps open"
        )
        if "goes on in process" in lost:
            failures.append(
                f"app: after {item.nodeid}, {lost}. Until then, a process it started with a "
                "hand-built environment was part of the run only through the anchored copy of "
                "the run's entry that the fork maps, where the kernel seals one (Linux 6.10 "
                "and later). Tests must not daemonise the run's own process (fork it and end "
                "the parent): start what must outlive the test as a subprocess"
            )
            lost = ""
        # Another run of this user beside this one shares the registry: its test's clean-up
        # of /tmp/app-* is found here, after this run's test, which did nothing.
        if lost:
            failures.append(
                f"app: after {item.nodeid}, {lost}. Until then, a process started "
                f"with a hand-built environment (and any after the run) {meanwhile}. Tests "
                f"must not remove or change {sandboxing.RUNS_DIR} (if this test did not, "
                f"another process of user {os.getuid()} did meanwhile, such as a test of "
                "another run beside this one)"
            )
    if state.planted is not None and (said := state.planted.check(item.nodeid)):
        failures.append(said)
    if state.run is not None:
        # What the test left running stays in the run even if the run is killed later.
        sandboxing.hand_on(state.run)
    return failures


def _the_last_look(config: pytest.Config) -> None:
    """Look again at what later processes of the environment run as they start, after every
    other plugin's and conftest's end of the run, and fail the run if that changed: the
    first clean-up registered on the run's configuration (`_watch_planted`), so the last
    to run, after the ``pytest_unconfigure`` hook and every clean-up registered since.

    The look at the session's end (`pytest_sessionfinish`, tryfirst) came before a
    conftest's own ``pytest_sessionfinish`` and ``pytest_unconfigure``, and before what
    pytest tears down of the session's fixtures there: a ``.pth`` written by one of them ran
    in the environment's next process, outside any run (red team 75 on the guard). A
    ``pytest_unconfigure`` of its own (``trylast``) then came before a conftest's
    ``wrapper`` one's code after its ``yield`` and before what ``config.add_cleanup``
    registered: a run that called ``pytest.main()`` (an IDE's runner) passed and left that
    ``.pth`` to run, and one of ``pytest`` passed (exit 0), put back only as it exited (red
    team 75 on regress, round b).
    """
    state = config.stash.get(STATE, None)
    if state is None or state.planted is None:
        return
    # Commands added or removed only, as after each test: each file of bin/ compared (a
    # command changed in place) once, at the session's end (about 0.25 ms of CPU a look).
    said = state.planted.check(_AFTER_THE_TESTS)
    if said is None:
        return
    watch.say(config, said)
    session = config.stash.get(_SESSION, None)
    if session is not None and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _look_at_exit(config: pytest.Config) -> None:
    """The last look of all, as this process exits (registered before any conftest is
    imported, so that ``atexit`` runs it after every handler registered since): what is
    found is put back and said on stderr; the exit status is pytest's, decided already."""
    state = config.stash.get(STATE, None)
    if state is None or state.planted is None:
        return
    said = state.planted.check(_AT_EXIT)
    if said is not None:
        sys.stderr.write(f"{said}\n")
        sys.stderr.flush()


def _pytest_is_the_program() -> bool:
    """Whether this process is a pytest started as a program (``pytest``, ``python -m
    pytest``), which exits as its run ends, not a script that calls ``pytest.main()``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name in ("pytest", "pytest.__main__"):
        return True
    return Path(sys.argv[0]).name in ("pytest", "py.test") if sys.argv else False


def pytest_unconfigure(config: pytest.Config) -> None:
    zygote.end_the_run(config)  # before the run's lock goes: no server of its is left running
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.session_lock is not None:
        state.session_lock.release()
        state.session_lock = None
    if state.run is not None:
        sandboxing.unregister(state.run)
    if state.shield is not None:
        python_writes.release(state.shield)
        state.shield = None
    present = set(os.environ)  # as in `_save_env`: no KeyError raised for each name not set
    for name, value in state.saved_env.items():
        if value is None:
            if name in present:
                os.environ.pop(name, None)  # not `del`: another thread may have unset it since
        else:
            os.environ[name] = value


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(STATE, None)
    if state is None:
        inactive = config.stash.get(INACTIVE, None)
        said = f"app: inactive, nothing neutralised or forced: {inactive}"
        return [printable(said)] if inactive else []
    forced = "forced"
    if state.shell_profile is not None and state.shell_profile.strip().lower() != "testing":
        forced += f"; the shell asked for {state.shell_profile!r}"
    if state.remote is not None and state.run is not None:
        database, prefix = guard.scratch_names(state.remote, state.run.scratch)
        distributing = bool(getattr(config.option, "numprocesses", None)) and not state.worker
        workers = " (+ _gw<N> per xdist worker)" if distributing else ""
        fate = (
            "kept at the end (--app-keep-remote)"
            if config.getoption("app_keep_remote")
            else "dropped at the end"
        )
        where = (
            f"app: profile=testing ({forced}), database={database}{workers}, "
            f"prefix={prefix}{workers}: scratch, created for this run on testing's server "
            f"and bucket (from {state.remote.source}), {fate}"
        )
    else:
        where = (
            f"app: profile=testing ({forced}), data_root={state.data_root} "
            f"(from {state.data_root_source})"
        )
    lines = [
        where,
        (
            f"app: sandbox={state.sandbox}, settings={state.settings_note}, "
            f"neutralised: {', '.join(state.neutralised) or 'nothing'}"
        ),
    ]
    hidden = sandboxing.proc_hides_processes()
    if hidden is not None:
        lines.append(
            f"app: /proc is mounted with {hidden}: a process a test starts as another user "
            "(sudo -u, runuser, setpriv) cannot see this run's processes, so given a "
            "hand-built environment (sudo resets it) it is outside the run; keep "
            f"{appconfig.SANDBOX_ENV} in its environment (sudo --preserve-env="
            f"{appconfig.SANDBOX_ENV}), or let that user see them (mount /proc with gid=)"
        )
    for live in state.live:
        lines.append(
            f"app: live server on profile {live.profile!r} ({describe_holder(live.holder)}) "
            f"at {live.root}: tests will not touch it"
        )
    lines.extend(_sealed_lines(state))
    for unseen in state.unseen:
        lines.append(
            f"app: the data root of profile {unseen.profile!r} at {unseen.root} cannot be "
            f"looked into ({unseen.why}): whether a server holds it is not known here; tests "
            "will not touch it (nor can this user)"
        )
    # Each line as text: a data root's name, a holder's published details, are whatever
    # their writers made them, and one holding a newline or a terminal's escape forged
    # lines of the header (red team 47).
    return [printable(line) for line in lines]


@functools.cache
def _misspells_app_profile(name: str) -> bool:
    # Once per mark name, not per test: difflib was most of what this check cost each test.
    return name != "app_profile" and bool(get_close_matches(name, ["app_profile"], cutoff=0.8))


def _refuse_misread_marks(node: pytest.Item) -> None:
    """Fail a test whose ``app_profile`` mark would not say what its writer meant.

    A misspelt mark (``app_profiles``) is one pytest only warns of; a keyword
    (``app_profile(names=["production"])``) or a list (``app_profile(["production"])``) was
    read as no profile, or as one named ``"['production']"``. Each test then ran without the
    profiles it asked for, and its refusal said to add the mark it had.
    """
    for mark in node.iter_markers():
        if _misspells_app_profile(mark.name):
            pytest.fail(
                f"app: {node.nodeid} is marked {mark.name!r}, which is no mark of the app "
                "(did you mean 'app_profile'?); the test would run without the profiles it "
                "names. Spell it @pytest.mark.app_profile(...)",
                pytrace=False,
            )
    for mark in node.iter_markers("app_profile"):
        wrong = [repr(a) for a in mark.args if not isinstance(a, str)]
        wrong += [f"{k}={v!r}" for k, v in mark.kwargs.items()]
        if wrong or not mark.args:
            what = f"takes {', '.join(wrong)}" if wrong else "names no profile"
            pytest.fail(
                f"app: {node.nodeid}: @pytest.mark.app_profile {what}, and it reads only "
                "profile names given as strings; the test would run without the profiles it "
                "means. Write @pytest.mark.app_profile('production', ...)",
                pytrace=False,
            )
        _refuse_unknown_profiles(node, mark.args)


def _refuse_unknown_profiles(node: pytest.Item, names: Iterable[str]) -> None:
    """Fail a test whose ``app_profile`` mark names no profile of the settings.

    ``app_profile("prodution")`` was taken as it was: the test ran without production, and
    the refusal of its load told it to add the mark it had. Names compare case-insensitively,
    as profiles do; read from the settings files as `app.config.load` reads them.
    """
    try:
        known = config_files.read_files(os.environ, sandboxed=True).profiles
    except AppError:
        return  # no settings to check against: `load` refuses the profile itself
    for name in names:
        if not name.isascii() or name.lower() not in known:  # as `load` compares (red team 54)
            close = get_close_matches(name.lower(), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            pytest.fail(
                f"app: {node.nodeid}: @pytest.mark.app_profile names {name!r}, which is no "
                f"profile of these settings{hint}; known profiles: {', '.join(known)}. The test "
                "would run without the profile it means. Name one of them, or add a section "
                f"to settings.toml in {config_files.settings_dir(os.environ)}",
                pytrace=False,
            )


@pytest.fixture(autouse=True)
def _app_sandbox_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Check, as the test's fixtures are torn down, what it changed of the run's marks.

    The teardown hook checks again after it (`_after_the_test`); its marks are applied and
    put back by the hooks around its set-up and teardown (`_apply_marks`).
    """
    yield
    state = request.config.stash.get(STATE, None)
    if state is not None and (failures := _after_the_test(request.node, state)):
        pytest.fail("\n".join(failures), pytrace=False)
