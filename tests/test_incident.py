"""The incident, replayed: hostile test suites run next to a live production server.

One real ``app serve`` on the production profile (module scope), with a token, on a data root
of its own, filled over HTTP. Each hostile suite (tests/hostile_suites.py) then runs in a
pytest subprocess from a shell that exported production's settings (ENV_FOR_DYNACONF,
APP_DATA_ROOT, APP_API_TOKEN, and an APP_SETTINGS_DIR whose [production] data_root is that
root), and afterwards every production file must be byte-identical and the server must
still answer with the same sessions. The case that runs next starts its pytest while the
current one runs (`Launcher`): two inner runs side by side, each checked by its own test.
The suites of `SHARED` that would run alike (the same production, shell, arguments and
variables, in either test) share one pytest subprocess, a module each (a directory of its
own for a suite that brings a conftest), and each case asserts on its own module's outcomes
in that run's ``-rA`` report.

Which layer stops each suite (the design's numbering):

- the incident's autouse fixture that rmtree's ``load().data_root / "sessions"``: layer 3,
  the plugin forces testing and neutralises APP_DATA_ROOT before any conftest is imported;
  the root is mapped into the run's sandbox, and the header names the live server;
- ``load("production")`` then rmtree: layer 3 in config (other profiles are refused without
  ``app_profile``; with it the root is mapped into the sandbox; an APP_DATA_ROOT outside the
  sandbox is refused even then);
- ``app data purge`` / ``empty-trash`` / ``serve`` in a subprocess with the inherited
  environment: layer 3 in the child's config (the marker is inherited; exit 78). With the
  testing profile the child lands on the run's own root, which the run holds (layer 4, 75);
- the same commands with a cleared environment (no marker, no PYTEST_CURRENT_TEST): layer 4,
  the live server's lock (exit 75, naming the server);
- a second copy of config (and of dataroot) imported under ``src.app``: layer 3, because the
  rule lives in config and dataroot and reads the marker from ``os.environ``;
- a test that exports production mid-test: layer 3 in config (profile allow-list; an
  APP_DATA_ROOT outside the sandbox), and layer 2 (testing's root overlaps production's);
- a Config or DataRoot made by hand: layer 3 in dataroot (every open checks the sandbox),
  the store (only a lock holder writes) and layer 4 (the server holds the lock);
- a test that deletes PYTEST_APP_SANDBOX: the PYTEST_CURRENT_TEST rule in config, layer 4
  for a hand-made root, and the plugin fails the test and puts the marker back;
- a conftest that loads at import time: layer 3, the plugin's first hook runs before any
  conftest is imported (a production load there is refused outright);
- the incident under ``-n 2``: layer 3, each worker has its own sandbox;
- the incident with ``-p no:app``: the PYTEST_CURRENT_TEST rule in config; a conftest that
  loads at import time with ``-p no:app`` (before any test runs): the PYTEST_VERSION rule in
  config; the dynaconf docs' pattern (force ENV_FOR_DYNACONF=testing in a conftest) with
  ``-p no:app``: config refuses a data root from APP_DATA_ROOT under pytest without the
  sandbox (layer 2 would also see the overlap, but only where the settings files name
  production's root; the "unaware" shell checks the case where they do not);
- ``--basetemp`` on or above the production root: the plugin refuses it before pytest would
  empty it, whether the shell's settings name that root (overlap) or not (the plugin walks an
  existing --basetemp for live or stamped data roots); *inside* a root the settings do not
  name (``{root}/sessions``, and a ``TMPDIR`` there): the plugin looks above the directory
  for a held lock or a stamp;
- the cases nobody had named (a profile spelled ``" production"``, dynaconf's own switches,
  reloaded modules, multiprocessing's start methods, exec, ``pytest.main()``, ``chdir`` and
  ``/proc/self/cwd``, a thread that outlives its opt-in, links planted inside a sandboxed
  session): each refused by the layer docs/explanation/attacks/ files it under.

Known limits, not tested here because no app code runs or nothing can tell them apart from
production: ``-p no:app --basetemp=<root>`` (pytest itself empties it), a test that deletes
every pytest variable or points PYTEST_APP_SANDBOX at a directory above production, then
``shutil.rmtree``'s a path it already knows.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import forked_app
import forked_pytest
import httpx
import pytest
from forked_app import Forked
from hostile_suites import HELPERS, SUITES, SUITES_WITHOUT_PROPS, Suite
from side_by_side import INNER_ADDOPTS, NEXT_ITEM

from app.lock import LOCK_FILE
from app.testing import sealed

SETTINGS = """\
[default]
host = "127.0.0.1"

[development]
data_root = "{base}/development"

[testing]
data_root = "{base}/testing"

[production]
data_root = "{root}"
port = 8080
protected = true
"""


#: Suites that share one inner run with those of them that would run alike (the same
#: production, shell, arguments and variables, whichever test of this module they are
#: cases of: the live production's cases of both tests without arguments share one run),
#: one test module each, about 0.5 s of CPU less for every inner pytest (and xdist's
#: workers) not started. Each writes files of its own names (a conftest only in a directory
#: of its own, with its tests: `placed`); each expects its tests to pass, and the only output
#: it matches is the run's header, which is the plugin's for the whole run; each case still
#: asserts its own module's outcomes (`check_shared_run`, from the run's ``-rA`` report) and
#: production after it. The suites whose conftest must be imported at the run's start (it
#: loads at import time), or that expect another exit code, run alone.
SHARED = [
    *(
        SUITES[name]
        for name in (
            # The incident's autouse fixture, in a directory of its own (`placed`): its
            # conftest's fixture applies to its own tests only; alone and under xdist.
            "the_incidents_autouse_cleanup_fixture",
            "the_incident_under_xdist",
            "a_test_that_loads_production_and_deletes_its_root",
            "maintenance_commands_in_a_subprocess",
            "maintenance_commands_with_a_cleared_environment",
            "a_second_copy_of_the_config_module",
            "a_test_that_exports_production_itself",
            "a_hand_made_config_and_data_root",
        )
    ),
    *(
        SUITES_WITHOUT_PROPS[name]
        for name in (
            # The environment wiped, and children with hand-built environments: each of
            # the four ways (plain, under xdist, the plugin disabled, autoload off) one run.
            "the_environment_wiped_inside_the_test_process",
            "children_with_hand_built_environments",
            "the_environment_wiped_under_xdist",
            "children_with_hand_built_environments_under_xdist",
            "the_environment_wiped_with_the_plugin_disabled",
            "children_with_hand_built_environments_with_the_plugin_disabled",
            "the_environment_wiped_without_plugin_autoload",
            "children_with_hand_built_environments_without_plugin_autoload",
            "aliases_of_the_production_root",
            "a_lock_and_a_data_root_made_by_hand",
            "the_guards_own_switches_set_by_hand",
            "cases_nobody_had_named",
        )
    ),
]


@dataclass(frozen=True)
class Production:
    """A production server (live, or stopped after it was filled) and what it held before
    any hostile suite ran."""

    root: Path
    settings_dir: Path
    unaware_settings_dir: Path
    url: str
    token: str
    port: int
    #: Forked from the run's zygote (tests/forked_app.py): a process of its own, its pid, its
    #: lock and its registry entry the server's; only its command line is the zygote's.
    process: subprocess.Popen[bytes] | Forked
    files: dict[str, str]
    sessions: dict[str, Any]
    #: Where the settings put the other profiles' roots (development's among them).
    others: Path
    development: dict[str, str]
    #: The `stopped_production` fixture's: only the second test's cases run next to it.
    stopped: bool = False

    @property
    def live(self) -> bool:
        return self.process.poll() is None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def fingerprint(root: Path) -> dict[str, str]:
    """Every file and directory under `root`: a sha256 per file, "dir" per directory.

    The lock file is left out: its content is the holder's, and changes only if the holder does.
    """
    seen: dict[str, str] = {}
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        for name in dirs:
            seen[str((here / name).relative_to(root))] = "dir"
        for name in files:
            path = here / name
            if path == root / LOCK_FILE:
                continue
            seen[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def list_sessions(url: str, headers: dict[str, str]) -> dict[str, Any]:
    response = httpx.get(f"{url}/sessions", params={"limit": 1000}, headers=headers)
    assert response.status_code == 200, response.text
    listing: dict[str, Any] = response.json()
    return listing


def fill(url: str, headers: dict[str, str]) -> None:
    """Sessions with files, a deleted file and a deleted session (so the trash has data too)."""
    with httpx.Client(base_url=url, headers=headers) as client:
        ids = []
        for n in range(4):
            response = client.post("/sessions", json={"title": f"review {n}", "metadata": {"n": n}})
            assert response.status_code == 201, response.text
            session_id = response.json()["id"]
            ids.append(session_id)
            for k in range(3):
                body = os.urandom(512 + 97 * k) + f"session {n} file {k}".encode()
                uploaded = client.post(
                    f"/sessions/{session_id}/files",
                    files={"file": (f"upload-{k}.bin", body, "application/octet-stream")},
                )
                assert uploaded.status_code in (200, 201), uploaded.text
            put = client.put(f"/sessions/{session_id}/files/notes.txt", content=b"notes %d" % n)
            assert put.status_code in (200, 201), put.text
        deleted = client.delete(f"/sessions/{ids[0]}/files/upload-1.bin")
        assert deleted.status_code in (200, 204), deleted.text
        deleted = client.delete(f"/sessions/{ids[3]}")
        assert deleted.status_code in (200, 204), deleted.text


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    """A real production-profile server on a temporary root, filled over HTTP."""
    yield from _production(tmp_path_factory, stop=False)


@pytest.fixture(scope="module")
def stopped_production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    """The same, stopped once filled: nobody holds the root, no lock can refuse anything."""
    yield from _production(tmp_path_factory, stop=True)


def _production(tmp_path_factory: pytest.TempPathFactory, *, stop: bool) -> Iterator[Production]:
    base = tmp_path_factory.mktemp("production")
    # The other profiles' roots live apart, so that production's parent holds only its own.
    others = tmp_path_factory.mktemp("other-profiles")
    root = base / "root"
    settings_dir = base / "settings"
    settings_dir.mkdir()
    (settings_dir / "settings.toml").write_text(SETTINGS.format(base=others, root=root))
    # Settings files that put production elsewhere: the service's environment alone knows.
    unaware_settings_dir = base / "unaware-settings"
    unaware_settings_dir.mkdir()
    (unaware_settings_dir / "settings.toml").write_text(
        SETTINGS.format(base=others, root=others / "production")
    )
    token = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "ENV_FOR_DYNACONF": "production",
        "APP_API_TOKEN": token,
        "APP_DATA_ROOT": str(root),
        "APP_SETTINGS_DIR": str(settings_dir),
        # Our own run is sandboxed and the production root lives inside that sandbox; the
        # hostile runs get sandboxes of their own, which do not contain it.
        "PYTEST_APP_ALLOW_PROFILES": "production",
    }
    process, url = forked_app.start_server(env, root, base / "server.log")
    port = int(url.rsplit(":", 1)[1])
    try:
        headers = {"Authorization": f"Bearer {token}"}
        fill(url, headers)
        sessions = list_sessions(url, headers)
        if stop:
            process.terminate()
            process.wait()
        yield Production(
            root,
            settings_dir,
            unaware_settings_dir,
            url,
            token,
            port,
            process,
            fingerprint(root),
            sessions,
            others,
            fingerprint(others / "development"),
            stop,
        )
    finally:
        process.terminate()
        process.wait()


@dataclass(frozen=True)
class Case:
    """One parametrized case of this module: a suite, next to which production."""

    suite: Suite
    production: Production
    #: Whether the suite's props (env, links, a run without --basetemp) apply: the cases of
    #: `test_production_and_development_survive_a_suite_without_props` only.
    props: bool

    @property
    def fields(self) -> dict[str, Any]:
        production = self.production
        fields = {"root": production.root, "pid": production.process.pid, "port": production.port}
        return {**fields, "others": production.others} if self.props else fields

    @property
    def pytester_basetemp(self) -> bool:
        """Whether the inner run gets pytester's ``--basetemp`` (and its temporary root)."""
        return self.suite.basetemp or not self.props

    @property
    def shared(self) -> tuple[object, ...] | None:
        """The inner run this case shares with the others of `SHARED` that would run alike
        (the same production, shell, arguments and variables: of either test of this
        module), if it is one of them."""
        suite = self.suite
        if not any(suite is shared for shared in SHARED):
            return None
        env = tuple(sorted(suite.env.items())) if self.props else ()
        return (self.production.root, suite.shell, suite.args, env, self.pytester_basetemp)


@dataclass
class Launch:
    """A case's inner pytest, started: its links, and where its output goes."""

    process: subprocess.Popen[bytes] | forked_pytest.ForkedRun
    out: Path
    err: Path
    links: list[Path]
    began: float

    def result(self) -> pytest.RunResult:
        ret = self.process.wait()
        lines = [path.read_text(encoding="utf8").splitlines() for path in (self.out, self.err)]
        return pytest.RunResult(ret, *lines, time.monotonic() - self.began)


class Launcher:
    """Starts each case's inner pytest as `pytester.runpytest_subprocess` would (a directory
    of its own holding the suite's files, ``python -mpytest`` with a ``--basetemp`` in it,
    pytester's variables), from the shell of the incident, and starts the case that runs next
    in this process while the current one runs: two inner runs side by side instead of one
    after the other. Each still runs next to its own production, and is checked by its own
    test; it runs alone in its pytest unless its suite is one of `SHARED`, whose cases that
    would run alike share one run (each suite a module of it, the run's report given
    ``-rA``), started once for the first of them that runs."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        # The outer run's environment before any test changed it (each builds its own).
        self.environ = dict(os.environ)
        #: By node id, or by `Case.shared` for a shared run.
        self.started: dict[object, Launch] = {}
        #: The shared runs that ended, by `Case.shared`.
        self.ended: dict[object, tuple[pytest.RunResult, Launch]] = {}

    def start(self, nodeid: str, case: Case) -> Launch:
        suite, fields = case.suite, case.fields
        directory = self.factory.mktemp("case", numbered=True)
        (directory / "hostile_helpers.py").write_text(HELPERS)
        shared = case.shared is not None
        files = {name: text for each in sharing(case) for name, text in placed(each, shared)}
        assert sum(len(each.files) for each in sharing(case)) == len(files), "a name twice"
        for name, source in files.items():
            (directory / name).parent.mkdir(exist_ok=True)
            (directory / name).write_text(source)
        env = self._shell(case, directory)
        links = [Path(link.format(**fields)) for link in suite.links] if case.props else []
        for link, target in zip(links, suite.links.values(), strict=True):
            link.symlink_to(target.format(**fields), target_is_directory=True)
        args = [arg.format(**fields) for arg in suite.args]
        if case.shared is not None:
            args.append("-rA")  # each module's outcomes, for its own case
        if not case.pytester_basetemp:
            argv = [sys.executable, "-mpytest", "-p", "pytester", *args]
        else:
            argv = [sys.executable, "-mpytest", f"--basetemp={directory / 'runpytest-0'}", *args]
        out, err = directory / "stdout", directory / "stderr"
        out.touch()
        err.touch()
        process = forked_pytest.start(argv, env, directory, out, err)  # or the plain way:
        if process is None:
            with out.open("wb") as stdout, err.open("wb") as stderr:
                process = subprocess.Popen(
                    argv, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                    stderr=stderr,
                )  # fmt: skip
        key = case.shared or nodeid
        self.started[key] = Launch(process, out, err, links, time.monotonic())
        return self.started[key]

    def _shell(self, case: Case, directory: Path) -> dict[str, str]:
        """The shell of the incident: production's settings exported, no pytest of ours
        around; and what pytester changes for an inner run (its home, no outer options)."""
        production, suite = case.production, case.suite
        env = dict(self.environ)
        env.pop("TOX_ENV_DIR", None)
        # Not the outer run's options: only those that skip plugins no suite uses.
        env["PYTEST_ADDOPTS"] = INNER_ADDOPTS
        env |= {"HOME": str(directory), "USERPROFILE": str(directory), "PY_COLORS": "0"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(directory), env.get("PYTHONPATH")]))
        env["PYTEST_DEBUG_TEMPROOT"] = str(self.factory.mktemp("tmp-case", numbered=True))
        if not case.pytester_basetemp:
            # pytester points pytest's default temporary root elsewhere; let TMPDIR decide.
            del env["PYTEST_DEBUG_TEMPROOT"]
        for name in ("PYTEST_APP_SANDBOX", "PYTEST_APP_SANDBOX_OWNER", "PYTEST_CURRENT_TEST"):
            env.pop(name, None)
        env["HOSTILE_PRODUCTION_ROOT"] = str(production.root)
        env["HOSTILE_PRODUCTION_TOKEN"] = production.token
        env["HOSTILE_SERVER_PID"] = str(production.process.pid)
        if suite.shell == "production":
            env["APP_SETTINGS_DIR"] = str(production.settings_dir)
        else:
            env["APP_SETTINGS_DIR"] = str(production.unaware_settings_dir)
        if suite.shell in ("production", "unaware"):
            env["ENV_FOR_DYNACONF"] = "production"
            env["APP_DATA_ROOT"] = str(production.root)
            env["APP_API_TOKEN"] = production.token
        if case.props:
            env |= {name: value.format(**case.fields) for name, value in suite.env.items()}
        return env

    def run(self, request: pytest.FixtureRequest, case: Case) -> tuple[pytest.RunResult, Launch]:
        """This case's run (started now, unless the case before started it), once the case
        after it, if it runs next in this process, has been started."""
        key = case.shared or request.node.nodeid
        if key in self.ended:  # a shared run that an earlier case waited for
            return self.ended[key]
        launch = self.started.pop(key, None) or self.start(request.node.nodeid, case)
        following = next_case(request)
        if following is not None:
            after = following[1].shared or following[0]
            if after not in self.started and after not in self.ended and after != key:
                self.start(*following)
        ended = launch.result(), launch
        if case.shared is not None:
            self.ended[key] = ended
        return ended


def placed(suite: Suite, shared: bool) -> list[tuple[str, str]]:
    """`suite`'s files by their path in the inner run's directory: in a shared run, a suite
    that brings a conftest has a directory of its own, where its fixtures apply to its own
    tests only (the incident's autouse fixture); every other file lies at the top."""
    if not shared or "conftest.py" not in suite.files:
        return list(suite.files.items())
    modules = sorted(name for name in suite.files if name.startswith("test_"))
    apart = "apart_" + modules[0].removeprefix("test_").removesuffix(".py")
    return [(f"{apart}/{name}", source) for name, source in suite.files.items()]


def sharing(case: Case) -> list[Suite]:
    """The suites whose inner run `case` shares (its own alone if it shares none), in the
    order of the two test functions' parameters."""
    if case.shared is None:
        return [case.suite]
    # The first test's cases (without props) run next to the live production only.
    suites = [] if case.production.stopped else [(suite, False) for suite in SUITES.values()]
    suites += [(suite, True) for suite in SUITES_WITHOUT_PROPS.values()]
    return [
        suite
        for suite, props in suites
        if Case(suite, case.production, props).shared == case.shared
    ]


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory)
    yield launcher
    for launch in launcher.started.values():  # started for a case that then did not run
        launch.process.kill()
        launch.process.wait()
        for link in launch.links:
            try:
                link.unlink()
            except FileNotFoundError:
                # `<root>/../hop` once its root is gone (its fixture ended first, as under
                # -k): the same link, spelled without the directory that is gone.
                Path(os.path.normpath(link)).unlink(missing_ok=True)


def next_case(request: pytest.FixtureRequest) -> tuple[str, Case] | None:
    """The case that this process runs right after the current test (tests/conftest.py
    keeps pytest's `nextitem`), if it is one of this module's, and its productions are up."""
    item = request.node.stash.get(NEXT_ITEM, None)
    if item is None or item.module is not request.module or not hasattr(item, "callspec"):
        return None
    params = item.callspec.params
    state = params.get("state", "live")
    production = request.getfixturevalue("production" if state == "live" else "stopped_production")
    if item.originalname == "test_production_survives_a_hostile_suite":
        return item.nodeid, Case(params["suite"], production, props=False)
    return item.nodeid, Case(params["suite"], production, props=True)


def test_the_production_server_is_live_and_filled(production: Production) -> None:
    assert production.process.poll() is None
    assert production.sessions["total"] == 3
    assert any(name.startswith(".trash/") for name in production.files)
    assert sum(name.endswith(".bin") for name in production.files) >= 9


@pytest.mark.parametrize("suite", SUITES.values(), ids=SUITES.keys())
def test_production_survives_a_hostile_suite(
    production: Production,
    stopped_production: Production,
    launcher: Launcher,
    request: pytest.FixtureRequest,
    suite: Suite,
) -> None:
    # Both productions are fixtures of every case, so that the case after this one (started
    # while this one runs) finds its own up, whichever it is.
    if suite.sealed_only and (why := sealed.why_not()) is not None:
        pytest.skip(f"the run cannot seal roots read-only: {why}")
    result, _ = launcher.run(request, Case(suite, production, props=False))
    try:
        check_run(result, Case(suite, production, props=False))
    finally:
        # Whatever the inner run reported, production must be untouched.
        assert production.process.poll() is None, "the production server died"
        assert fingerprint(production.root) == production.files
        assert list_sessions(production.url, production.headers) == production.sessions


@pytest.mark.parametrize("state", ["live", "stopped"])
@pytest.mark.parametrize("suite", SUITES_WITHOUT_PROPS.values(), ids=SUITES_WITHOUT_PROPS.keys())
def test_production_and_development_survive_a_suite_without_props(
    production: Production,
    stopped_production: Production,
    launcher: Launcher,
    request: pytest.FixtureRequest,
    suite: Suite,
    state: str,
) -> None:
    """Issue 8's classes: whatever a test does to its environment or its children's, next to
    a live production server and next to a stopped one (where no lock can help)."""
    if state == "stopped":
        production = stopped_production
    assert production.live == (state == "live")
    case = Case(suite, production, props=True)
    result, launch = launcher.run(request, case)
    try:
        check_run(result, case)
    finally:
        for link in launch.links:
            link.unlink()
        assert production.live == (state == "live"), "the production server died"
        assert fingerprint(production.root) == production.files
        assert fingerprint(production.others / "development") == production.development
        if production.live:
            assert list_sessions(production.url, production.headers) == production.sessions


def check_run(result: pytest.RunResult, case: Case) -> None:
    """The inner run ended as the suite says: exit code, outcomes, output lines. In a shared
    run, the suite's own module's outcomes, and an exit code that only another module's
    failures explain."""
    suite, fields = case.suite, case.fields
    if case.shared is not None:
        check_shared_run(result, suite)
    else:
        assert result.ret == suite.ret, result.stdout.str() + result.stderr.str()
        if suite.outcomes:
            result.assert_outcomes(**suite.outcomes)
    if suite.stdout:
        result.stdout.fnmatch_lines([line.format(**fields) for line in suite.stdout])
    if suite.stderr:
        result.stderr.fnmatch_lines([line.format(**fields) for line in suite.stderr])


def check_shared_run(result: pytest.RunResult, suite: Suite) -> None:
    """`suite`'s modules' outcomes in a shared run's ``-rA`` report: the suite's own (or at
    least one test passed where it gives none), none failed and no error; and the run's
    exit code its (0), or 1 where another module's test failed."""
    output = result.stdout.str() + result.stderr.str()
    modules = {name for name, _ in placed(suite, True) if Path(name).name.startswith("test_")}
    _, found, summary = result.stdout.str().partition(" short test summary info ")
    assert found, output
    kinds = {"PASSED": "passed", "FAILED": "failed", "ERROR": "errors"}
    counts = {"passed": 0, "failed": 0, "errors": 0}
    others_failed = False
    for line in summary.splitlines():
        word, _, rest = line.partition(" ")
        if word in kinds:
            if rest.split("::", 1)[0].split(" ", 1)[0] in modules:
                counts[kinds[word]] += 1
            elif word != "PASSED":
                others_failed = True
    expected = {"failed": 0, "errors": 0, **suite.outcomes}
    assert {kind: counts[kind] for kind in expected} == expected, output
    assert counts["passed"] >= 1, output
    assert suite.ret == 0 and result.ret in ((0, 1) if others_failed else (0,)), output
