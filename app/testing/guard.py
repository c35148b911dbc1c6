"""What the plugin decides before any conftest imports the app: the sandbox, what it
neutralises, and which runs it refuses. The hooks in `app.testing.plugin` call these in order.

Nothing here imports dynaconf when the settings files use plain values: the plugin runs on
every pytest start, and the first test that calls `app.config.load` pays for dynaconf instead.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import stat
import sys
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import pytest

from app import config as appconfig
from app import sandbox as sandboxing
from app.errors import (
    AppError,
    SettingsNotFoundError,
    UnknownProfileError,
    json_loads,
    out_of_inodes,
    printable,
)
from app.lock import describe_holder
from app.records import Record, dataclass

if TYPE_CHECKING:
    from types import FrameType

    from app.lock import RootLock
    from app.testing.planted import Planted

#: The app's own overrides (``APP_<KEY>``), dynaconf's names for the same keys
#: (``DYNACONF_<KEY>``, which the app refuses), and a shell's opt-in. Other ``APP_*`` and
#: ``DYNACONF_*`` names belong to other software and are left alone.
NEUTRALISED = frozenset(
    {key.env for key in appconfig.KEYS.values()}
    | {f"DYNACONF_{name.upper()}" for name in appconfig.KEYS}
    | {appconfig.ALLOW_PROFILES_ENV}
)
#: Written into every sandbox, so that a --basetemp reused from an earlier run is recognised.
SANDBOX_MARK = ".app-sandbox"
#: The pid of the run that created the sandbox, so that its xdist workers recognise it.
OWNER_ENV = "PYTEST_APP_SANDBOX_OWNER"


def usage_error(message: str) -> pytest.UsageError:
    """pytest's refusal of the run, `message` shown as text (`app.errors.printable`): the
    paths it names are whatever their directories were called."""
    return pytest.UsageError(printable(message))


class RemoteTesting(Record):
    """The testing profile's database and object prefix as the files configure them: what
    the run's scratch ones are named from (the configured ones are never opened)."""

    #: May hold a password: shown only through `app.config.mask_database_url`.
    database_url: str
    blob_url: str
    source: str


class LiveHolder(Record):
    """A live process seen holding a data root when the run started."""

    profile: str
    root: Path
    holder: dict[str, Any] | None


class UnseenRoot(Record):
    """A data root the run could not look into when it started (another user's)."""

    profile: str
    root: Path
    why: str


@dataclass
class GuardState:
    """What the plugin decided, kept in ``config.stash``."""

    sandbox: Path
    #: The session's testing data root; with a remote testing profile, a root in the
    #: sandbox that only marks the run (concurrent runs on one --basetemp see it held).
    data_root: Path
    data_root_source: str
    shell_profile: str | None
    neutralised: list[str] = field(default_factory=list)
    live: list[LiveHolder] = field(default_factory=list)
    settings_note: str = ""
    #: The roots the run could not look into, whose holder it cannot name.
    unseen: list[UnseenRoot] = field(default_factory=list)
    session_lock: RootLock | None = None
    factory: pytest.TempPathFactory | None = None
    roots: dict[str, Path] = field(default_factory=dict)
    run: sandboxing.Run | None = None
    #: The variables the plugin changed, with their values before (None: unset), put back
    #: when the run ends (a run inside a test, with pytester.runpytest, must leave no trace).
    saved_env: dict[str, str | None] = field(default_factory=dict)
    #: The testing profile's configured database and prefix, when it uses them.
    remote: RemoteTesting | None = None
    #: Whether this process is an xdist worker of the run (not a run a worker started).
    worker: bool = False
    #: A worker's controller: a server it started (in a hook of a conftest, for the
    #: workers to share) is the run's own, as the worker's are (`own_runs`).
    controller: sandboxing.Run | None = None
    #: Whether a test was already failed for replacing the sandbox (said once; `mktemp`
    #: refuses on every call).
    replaced_reported: bool = False
    #: The environment's start-up files and commands as the run began, looked at after
    #: every test and at the run's end (`app.testing.planted`).
    planted: Planted | None = None
    #: What `app.testing.python_writes.guard` returned for this run (released at its end).
    shield: object | None = None
    #: The protected roots this run's processes see read-only (`app.testing.sealed`), and
    #: those left as they were, with why; a worker inherits its controller's (None).
    sealed: tuple[list[Path], list[tuple[Path, str]]] | None = None

    @property
    def own_runs(self) -> tuple[sandboxing.Run | None, ...]:
        """The runs whose processes' servers are this run's own (`port_served`)."""
        return (self.run, self.controller)

    @property
    def sandbox_identity(self) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the sandbox as the run made it (a link not followed), to
        tell it replaced or mounted over (`sandbox_replaced`); None before it is made."""
        made: tuple[int, int] | None = getattr(self.factory, _IDENTITY, None)
        return made


def _stash_key(name: str) -> Any:
    # Kept on sys, like the process's mark: `importlib.reload` of this module made new keys,
    # every hook then found no state in config.stash and checked nothing, silently, and a
    # registry entry a later test rewrote stayed for the rest of the run (red team 36).
    keys: dict[str, Any] = sys.__dict__.setdefault("_app_pytest_stash_keys", {})
    return keys.setdefault(name, pytest.StashKey())


STATE: pytest.StashKey[GuardState] = _stash_key("state")
#: Why the plugin does nothing in this run (the settings found are not this run's).
INACTIVE: pytest.StashKey[str] = _stash_key("inactive")
#: On a test item: the run its app_profile marks made current, and the opt-in variable's
#: value before them, until its teardown puts both back.
MARKED: pytest.StashKey[tuple[sandboxing.Run | None, str | None]] = _stash_key("marked")


def applies(config: pytest.Config) -> str | None:
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


def stay_inactive(config: pytest.Config, reason: str) -> None:
    """Leave this run alone, saying why: in the header, to the fixtures, and to a refusal
    of `app.config` in this process (which would otherwise guess that it was disabled)."""
    config.stash[INACTIVE] = reason
    sandboxing.note_inactive(reason)


def enclosing_roots(run: sandboxing.Run) -> dict[str, Path]:
    """The roots an enclosing run protects, named for a refusal, one entry each.

    Keyed by profile alone, a run nested two deep lost all but the last root of each
    profile (the enclosing run's own production, and the one it inherited).
    """
    named: dict[str, Path] = {}
    for number, root in enumerate(run.protected, 1):
        name = f"{root.profile} (protected by the enclosing test run, pytest pid {run.pid})"
        if named.get(name, root.path) != root.path:
            name = f"{name[:-1]}, root {number})"
        named[name] = root.path
    return named


def enclosing_roots_here() -> dict[str, Path]:
    """The roots the run this process is inside protects (a pytest a test started), if any."""
    enclosing = enclosing_run_here()
    return enclosing_roots(enclosing) if enclosing is not None else {}


def enclosing_run_here() -> sandboxing.Run | None:
    """The run this process is inside (a pytest a test started), if any."""
    try:
        return sandboxing.current_run()
    except AppError:
        return None  # only a broken PYTEST_APP_SANDBOX says so; what is on disk stays


def guard_python_writes_without_the_plugin(enclosing: sandboxing.Run | None) -> None:
    """A pytest inside a run whose own plugin does not run here (switched off with ``-p
    no:app`` or autoload off, or inactive): the run's roots guarded against this process's
    Python writes too, as in the run's own pytest processes. A test's child ``python -m
    pytest -p no:app`` whose test called ``os.remove`` on a file of a root the run protects
    removed it (red team 76 on the guard)."""
    if enclosing is not None and enclosing.protected:
        import tempfile

        from app.testing import python_writes

        # pytest's temporary root decided first, as a run of the plugin decides it before
        # its hook: `tempfile` takes a directory whose probe the hook refuses for one it
        # cannot write, and goes on to the next unsaid, so a TMPDIR in a protected root was
        # used as /tmp, where it was refused naming TMPDIR (red team 40's cases).
        tempfile.gettempdir()
        python_writes.guard(enclosing.protected, {})


def refuse_deletions_inactive(
    config: pytest.Config, reason: str, enclosing: dict[str, Path] | None = None
) -> None:
    """In a run where the plugin stays inactive: refuse a ``--basetemp`` that pytest's
    emptying would take into a data root on disk, as an active run does.

    Inactive, the plugin changes nothing of the run; but pytest empties a given
    ``--basetemp`` before the first test whoever's run it is, and a run of the app's own
    tests is inactive too where its rootdir is elsewhere (``-c /dev/null``, ``-c`` with an
    ini file outside the project, ``--rootdir``, or a test file outside it):
    ``--basetemp=/srv/app/data/sessions`` there emptied a live server's sessions. Only what
    is on disk counts (a held lock, a stamp at or above it, a mount, another run's sandbox):
    the settings are not this run's to read. Inside a run of the plugin (a pytest a test
    started), so do the roots that run protects: `enclosing`, where the caller has just
    read them (`enclosing_roots_here`), else read here.
    """
    __tracebackhide__ = True
    given = config.known_args_namespace.basetemp
    if enclosing is None:
        enclosing = enclosing_roots_here()
    if not given:
        # Without one, pytest makes pytest-of-<user> in its temporary root: a test's child
        # pytest, inactive (no settings where it runs), given TMPDIR=<production> by hand,
        # wrote there (red team 40). Inside a run, the roots that run protects are known;
        # outside, what is on disk counts.
        try:
            _check_temproot(enclosing, enclosing=True)
        except pytest.UsageError as refused:
            raise usage_error(
                f"{refused}. The app's plugin is inactive in this run ({reason}), and "
                "pytest makes its temporary directories there all the same"
            ) from None
        return
    # A pytest a test starts (a tox-style wrapper's, with a hand-built environment and its
    # rootdir elsewhere) stays inactive too, but it is still inside that run: the roots the
    # enclosing run protects are known exactly, stamped or not, and pytest's emptying of a
    # --basetemp above a stopped production root deleted it.
    try:
        _check_basetemp(Path(given), enclosing, stamped_inside=False)
    except pytest.UsageError as refused:
        raise usage_error(
            f"{refused}. The app's plugin is inactive in this run ({reason}), and pytest "
            "empties a --basetemp all the same"
        ) from None


def refuse_early_loads() -> None:
    __tracebackhide__ = True
    early = appconfig.loaded()
    if early:
        first = early[0]
        raise usage_error(
            f"app: the configuration was loaded (profile {first.profile!r}, "
            f"{first.storage}) at {first.caller} before the app pytest plugin could confine "
            "it to the test sandbox. Call app.config.load() inside a fixture or function, "
            "never at import time of a plugin or conftest"
        )


# --- what the user's shell points at ------------------------------------------------------


def shell_roots(*, resolved: bool = True) -> tuple[str | None, dict[str, Path], Path | None]:
    """Every profile's root as the shell would resolve it, before anything is neutralised
    (`resolved` False: as spelled, see `appconfig.configured_roots`)."""
    shell_profile, readings, directory = _shell_root_readings((resolved,))
    return shell_profile, readings[0], directory


def shell_roots_and_spellings() -> tuple[str | None, dict[str, Path], Path | None, dict[str, Path]]:
    """`shell_roots` and its roots as spelled (``shell_roots(resolved=False)[1]``), from one
    reading of the settings files (`appconfig.configured_root_readings`)."""
    shell_profile, (roots, spelled), directory = _shell_root_readings((True, False))
    return shell_profile, roots, directory, spelled


def _shell_root_readings(
    readings: tuple[bool, ...],
) -> tuple[str | None, list[dict[str, Path]], Path | None]:
    shell_profile = os.environ.get(appconfig.PROFILE_ENV)
    try:
        found = appconfig.configured_root_readings(
            shell_profile or appconfig.DEFAULT_PROFILE, readings=readings
        )
    except UnknownProfileError:
        # The shell's profile name is a typo: its overrides apply to no profile, so the files
        # alone say where the roots are.
        found = appconfig.configured_root_readings(None, readings=readings)
    except SettingsNotFoundError:
        # The package is installed where it has no settings (a dependency of another
        # project): nothing to probe, but the sandbox and the forcing still apply.
        return shell_profile, [{} for _ in readings], None
    return (
        shell_profile,
        [{name: root for name, (root, _) in roots.items()} for roots in found],
        appconfig.settings_dir(),
    )


def _settings_roots() -> dict[str, Path]:
    """Every profile's root as the settings name them, where they can be read; none where
    they cannot (a run without the plugin goes on, checked by what is on disk alone)."""
    try:
        roots = shell_roots()[1]
    except (AppError, OSError):
        return {}
    # A refusal names the first root a path overlaps: one with data, production's first.
    return dict(
        sorted(
            roots.items(),
            key=lambda item: (not item[1].exists(), item[0] != appconfig.ALWAYS_PROTECTED),
        )
    )


def probe_live(roots: dict[str, Path]) -> tuple[list[LiveHolder], list[UnseenRoot]]:
    """The live holders of `roots`, and the roots this user may not look into at all."""
    from app.lock import probe

    live, unseen = [], []
    for name, root in roots.items():
        try:
            seen = probe(root)
        except PermissionError:
            # A service's root, kept by its own user in mode 0700 (as the app makes it), named
            # by the settings of a checkout the tests run from as another user: every run
            # stopped at once with a bare PermissionError (red team 46). That user cannot
            # open it either; only its holder cannot be seen.
            unseen.append(UnseenRoot(name, root, out_of_reach(root)))
            continue
        # Another test run's session root (seen from a nested run) is not a live server.
        if seen.held and (seen.holder or {}).get("kind") != "tests":
            live.append(LiveHolder(name, root, seen.holder))
    return live, unseen


def _local_address(host: str) -> str | None:
    """The address a client of this machine reaches a server configured with `host` at,
    where that is this machine (a loopback address, ``localhost``, a wildcard one, or an
    address of one of its interfaces); None for a name (not probed: a name may take a DNS
    lookup) or an address of another machine."""
    import ipaddress

    text = host.strip().strip("[]").lower()
    if text == "localhost":
        return "localhost"  # each of its addresses is looked at (`_loopbacks`)
    if text == "":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.is_unspecified:  # a wildcard is reached through the loopback
        return "::1" if address.version == 6 else "127.0.0.1"
    if address.is_loopback or _assigned_here(str(address), address.version):
        return str(address)
    return None


def _host_bytes(host: str) -> bytes | str:
    """`host` as the bytes the resolver is given: an ASCII name as it is, any other through
    the ``idna`` codec as before. A name given as text always went through that codec, whose
    import (with ``stringprep`` and its patterns) cost about 5 M instructions of every run's
    start for the look at the testing port; for ASCII it gives the same bytes, or refuses an
    empty or over-long label, which the resolver then refuses as a name it cannot find."""
    return host.encode("ascii") if host.isascii() else host


def _loopbacks(host: str) -> list[str]:
    """The addresses a client reaches `host` at, in the order it tries them: ``localhost``'s
    loopback addresses as this machine's hosts file gives them (``::1`` first where it comes
    first, and a client falls back to the next where nothing listens there), else `host`.

    A server outside the run on ``[::1]`` alone, on a machine that names ``localhost`` for
    ``::1`` first, was reached by a test's client while the look connected to ``127.0.0.1``
    alone (red team 53)."""
    import ipaddress
    import socket

    if host != "localhost":
        return [host]
    try:
        found = socket.getaddrinfo(_host_bytes(host), None, type=socket.SOCK_STREAM)
    except OSError:
        found = []
    addresses = []
    for _family, _type, _proto, _name, sockaddr in found:
        text = str(sockaddr[0])
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(text).is_loopback and text not in addresses:
                addresses.append(text)
    return addresses or ["127.0.0.1"]


def _assigned_here(address: str, version: int) -> bool:
    """Whether `address` (a literal, no lookup) is one of this machine's own interfaces'.

    A testing host given as the machine's own address on its network (``192.0.2.2``, for a
    container or a phone to reach the server) reaches a developer's server listening on the
    wildcard address there as surely as the loopback does, and was not looked at (red team
    53). Only a local address can be bound, unless the system lets any be
    (``ip_nonlocal_bind``): then none counts, so no request goes to another machine.
    """
    import socket

    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    switch = Path("/proc/sys/net") / ("ipv6" if version == 6 else "ipv4") / "ip_nonlocal_bind"
    try:
        if switch.read_text().strip() != "0":
            return False
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


def local_address(host: str, port: int, source: str) -> tuple[str, int, str] | None:
    """`port_served`'s address of a loaded configuration's `host` and `port` (its value
    and source): None where the port is 0 or the host not this machine's."""
    address = _local_address(host)
    return (address, port, source) if address is not None and 0 < port < 65536 else None


def _address(profile: str) -> tuple[str, int, str] | None:
    """`profile`'s host and port as the run's tests get them (the files but the local ones:
    ``APP_HOST`` and ``APP_PORT`` are neutralised), with where the port is set; None where
    it is 0 (each server picks one), not a plain value of the files (dynaconf's syntax: not
    read before the run, to keep dynaconf out of the start-up), not a host of this machine,
    or where the run cannot authenticate to its server (a protected profile, production,
    whose token the files the run reads do not hold)."""
    found = _profile_values(profile)
    if found is None:
        return None
    source = found.pop("source")
    host, port = found["host"], found["port"]
    if found["protected"] is not False and not found["api_token"]:
        return None
    if not isinstance(host, str) or type(port) is not int or not 0 < port < 65536:
        return None
    address = _local_address(host)
    return (address, port, source) if address is not None else None


def _profile_values(profile: str) -> dict[str, Any] | None:
    """`profile`'s host, port, protection and token as the run's tests get them (the files
    but the local ones), and where its port is set (``source``); None where the files cannot
    be read before the run (they are refused later, with their own message)."""
    from app import config_files

    try:
        files = config_files.read_files(os.environ, sandboxed=True)
    except (AppError, OSError):
        return None
    found: dict[str, Any] = {
        key: appconfig.KEYS[key].default for key in ("host", "port", "protected", "api_token")
    }
    found["source"] = "built-in default"
    for layer in config_files.layers(files, profile):
        found.update({key: layer.body[key] for key in found if key in layer.body})
        if "port" in layer.body:
            found["source"] = layer.source
    return found


def _opens_with(host: str, port: int, token: object) -> bool | None:
    """Whether the server listening at `host`:`port` serves a request with `token`, the one
    every test gets (``GET /sessions?limit=1``, a read): True where it answers 200, False
    where it answers anything else (401: another profile's server, whose token the run does
    not hold; 404: no server of this app), None where it gives no answer in time.

    Looked at only where something listens on the testing port: a run beside the README's
    development server, on a port that a user's settings also give testing (both at
    ``[default]``'s 8000, as in this project's own inner runs), was refused for a server
    that answers every request of the run 401 (red team 52's first check). The standard
    library's client: httpx builds a TLS context per client, 16 ms here."""
    import http.client

    headers = {"Host": "localhost"}
    if isinstance(token, str) and token:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        connection.request("GET", "/sessions?limit=1", headers=headers)
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    return status == 200


def _listening_sockets(port: int) -> set[str]:
    """The TCP sockets listening on `port` on this machine (``/proc/net/tcp``, ``tcp6``), as
    a process's descriptor links name them (``socket:[<inode>]``)."""
    inodes = set()
    for name in ("tcp", "tcp6"):
        try:
            rows = (Path("/proc/net") / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local address (hex ip:port), state 0A (LISTEN), inode in the tenth column
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rpartition(":")[2], 16) == port
            ):
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def _holding(sockets: set[str]) -> list[int]:
    """The processes that hold one of `sockets` open, as far as this user may see them."""
    found = []
    for entry in Path("/proc").iterdir() if sockets else ():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(_fd_target(fd) in sockets for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
    return found


#: Listening sockets found to be held by processes of this run alone (`port_served`): each
#: is looked up once, not at every test.
_OWN_SOCKETS: set[str] = set()

#: Listening sockets, each with the token its server refused (`port_served`): left alone
#: for that token only. A conftest that gives the testing profile another token at its
#: import (``os.environ["APP_API_TOKEN"] = ...``) hands every test one that the server
#: asked as the run started was never asked with (red team 53).
_REFUSING: set[tuple[str, str | None]] = set()


def _fd_target(link: Path) -> str:
    try:
        return str(link.readlink())
    except OSError:
        return ""


def _descends_from(pid: int, ancestors: set[int]) -> bool:
    """Whether `pid` is, or descends from, one of `ancestors` (``/proc`` numbering)."""
    seen: set[int] = set()
    while pid > 0 and pid not in seen:
        if pid in ancestors:
            return True
        seen.add(pid)
        fields = sandboxing._stat_fields(pid)
        if fields is None:
            return False
        pid = fields[0]
    return False


def port_served(
    profile: str,
    live: list[LiveHolder],
    *,
    runs: tuple[sandboxing.Run | None, ...] = (),
    address: tuple[str, int, str] | None = None,
    token: str | Literal[False] | None = False,
) -> str | None:
    """Why the run (or, given `runs`, a test) may not go on where a process outside the run
    already listens on `profile`'s port on this machine; None where nothing does.

    Every test gets the testing profile's host, port and token (the committed
    ``.secrets.toml``'s), and a test that opts into development gets development's. A suite
    whose fixture starts ``app serve`` in the sandbox and waits for ``/health`` at that
    port, as a suite written against the app does, found a developer's own
    ``ENV_FOR_DYNACONF=testing app serve`` there: the run's server could not bind the port,
    the developer's answered, and the test's clean-up deleted its sessions (red team 52).
    Nothing of the run listens as it starts, so whoever does is someone else's server.
    Later (a test that opts into a profile), one that a process of `runs` (this run)
    started is the run's own, and is left alone (a suite's own server on that port).

    A server that refuses `token` (the one the test gets; the settings files' where it is
    ``False``, as the run starts) is left alone too, for that token only.
    """
    address = address or _address(profile)
    if address is None:
        return None
    given, port, source = address
    import socket

    for host in _loopbacks(given):
        try:
            # typeshed names a str host only; the resolver takes bytes as well.
            resolved = (_host_bytes(host), port)
            with socket.create_connection(resolved, timeout=1.0):  # type: ignore[arg-type]
                break
        except OSError:
            continue  # nothing listens (refused), or the address is not this machine's
    else:
        return None
    sockets = _listening_sockets(port)
    if token is False:
        files_token = (_profile_values(profile) or {}).get("api_token")
        token = files_token if isinstance(files_token, str) and files_token else None
    if sockets and all(s in _OWN_SOCKETS or (s, token) in _REFUSING for s in sockets):
        return None
    pids = _holding(sockets)
    holders = [h for h in live if _serves(h.holder, port, pids)]
    if _opens_with(host, port, token) is False:
        # Not the run's, but no request with this token gets in.
        _REFUSING.update((s, token) for s in sockets)
        return None
    own = {run.pid for run in runs if run is not None and run.pid is not None}
    if pids and own and all(_descends_from(pid, own) for pid in pids):
        _OWN_SOCKETS.update(sockets)
        return None
    if holders:
        who = "; ".join(
            f"{describe_holder(h.holder)}, serving the data root of profile {h.profile!r} "
            f"({h.root})"
            for h in holders
        )
    elif pids:
        who = "; ".join(
            f"pid {pid} ({sandboxing.command_line(pid) or 'command line unknown'})" for pid in pids
        )
    else:
        who = "a process this user cannot see (as root, `ss -ltnp` names it)"
    return (
        f"app: refusing {'this test' if runs else 'to run'}: the {profile} profile's port "
        f"{port} ({source}) is already "
        f"served on {host} by {who}, a process outside this run. Every test gets that port and the "
        f"{profile} profile's token, so a request a test sends to the {profile} profile's "
        "server (a fixture that starts `app serve` and waits for /health there) reaches that "
        "server and changes its data. Stop that server, or serve it on another port (`app "
        f"serve --port N`); or give [{profile}] a port no other server uses in settings.toml "
        "(the app_live_server fixture picks a free one for itself)"
    )


def _serves(holder: dict[str, Any] | None, port: int, pids: list[int]) -> bool:
    """Whether the live `holder` of a root is what serves `port`: its record names that port
    and is its own, and, where the processes listening there are known, it is one of them.

    A record that is not the live holder's (a server killed with SIGKILL left it, and
    `flock <root>/.server.lock <backup>` holds the lock since; a copy written over it; a
    descriptor kept past its server) names a port nobody of that root serves: the run's
    refusal named the `flock` process as "serving the data root of profile 'testing'", and
    left out the process that listens there (red team 70 on regress).
    """
    if holder is None or holder.get("port") != port:
        return False
    if {"took_lock", "pid_written_over", "unpublished", "shared_lock"} & holder.keys():
        return False  # as `app.lock.local_url` builds no URL from it
    return not pids or holder.get("pid") in pids


def refuse_testing_port_served(live: list[LiveHolder]) -> None:
    """Refuse the run where a process outside it serves the testing profile's port
    (`port_served`): checked as the run starts, before any test could start a server. A
    server of a run enclosing this one counts as outside it: its data is not in this run's
    sandbox (a test that runs pytest next to a server it started, as this project's own
    tests put a live server beside an inner run)."""
    __tracebackhide__ = True
    refusal = port_served("testing", live)
    if refusal is not None:
        raise usage_error(refusal)


def out_of_reach(root: Path) -> str:
    """Why this process may not look into `root`: the first directory on its way (or the
    root itself) that it may not search, its mode and owner."""
    import pwd

    for directory in (*reversed(root.parents), root):
        try:
            found = directory.stat()
        except OSError:
            break
        if not os.access(directory, os.X_OK):
            owner = f"user {found.st_uid}"
            with contextlib.suppress(KeyError):
                owner += f" ({pwd.getpwuid(found.st_uid).pw_name})"
            return (
                f"{directory} is {stat.filemode(found.st_mode)}, owned by {owner}, and this "
                f"process runs as user {os.geteuid()}"
            )
    return f"its lock file cannot be opened by user {os.geteuid()}"


# --- neutralising -------------------------------------------------------------------------


def remove_switches() -> list[str]:
    # First: with any of dynaconf's switches set the app refuses to load, so no live server
    # can be using them, and the shell's roots are then resolved without them.
    switches = appconfig.dynaconf_switches()
    for name in switches:
        del os.environ[name]
    return switches


def neutralise(settings_dir: Path | None, switches: list[str]) -> list[str]:
    """Remove every variable that could redirect the testing profile; return what to report."""
    removed = set(switches)
    for name in list(os.environ):
        if name in NEUTRALISED:
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


# --- the sandbox --------------------------------------------------------------------------


def _overlapping(paths: list[Path], roots: dict[str, Path]) -> tuple[str, Path] | None:
    for path in paths:
        for name, root in roots.items():
            if root.is_relative_to(path) or path.is_relative_to(root):
                return name, root
    return None


def _check_basetemp(given: Path, roots: dict[str, Path], *, stamped_inside: bool = True) -> None:
    """pytest empties a given --basetemp before use: never let that be a data root.

    Args:
        stamped_inside: also refuse a stamped (not held) data root below the --basetemp
            itself, unless the directory is an earlier sandbox (an inactive run's tests may
            stamp roots of their own there, using the app as a library).
    """
    __tracebackhide__ = True
    # pytest empties os.path.abspath(given), which reads `link/..` lexically, while resolve()
    # follows the link first: check both spellings. Neither expands `~`, so neither does
    # this: `--basetemp='~/../sessions'` (no shell expands it in an ini file's addopts or a
    # quoted word) was checked as $HOME/../sessions while pytest emptied ./sessions.
    from app.dataroot import bound_from, served_from

    lexical = Path(os.path.abspath(given))  # noqa: PTH100 - what pytest uses
    target = given.resolve()
    found = _overlapping([lexical, lexical.resolve(), target], roots)
    spelled = f" (as {lexical})" if str(lexical) != str(given) else ""

    def refuse_overlap() -> None:
        if found is not None:
            name, root = found
            raise usage_error(
                f"app: refusing --basetemp {given}: pytest empties it{spelled} before the "
                f"run, and it overlaps the data root of profile {name!r} ({root}). Choose a "
                "--basetemp outside every data root, or omit it"
            )

    refuse_overlap()
    for spelling in dict.fromkeys((lexical, lexical.resolve(), target)):
        _refuse_enclosing_data_root(
            f"--basetemp {given}", "empties it", spelling, through_mounts=False
        )
    from app.lock import probe

    seen = probe(appconfig.sandbox_root(lexical, "testing"))
    if seen.held:
        raise usage_error(
            f"app: refusing --basetemp {given}: another run uses it; its testing data root is "
            f"held by {describe_holder(seen.holder)}. pytest would empty it under that run. "
            "Give each concurrent run its own --basetemp"
        )
    _refuse_mounts(given, (lexical, lexical.resolve(), target))
    # On a FUSE or network filesystem mounted in a sandbox (bindfs of a live root's
    # sessions/ at <tmp_path>/bf, then a child's --basetemp=<tmp_path>/bf/x): nothing says
    # what it shows, and pytest made x/ in the live root (red team 49).
    served = served_from(target)
    if served is not None and (where := unknown_mount_at(*served)) is not None:
        point, kind = served
        raise usage_error(
            f"app: refusing --basetemp {given}: it lies on a filesystem of type {kind} "
            f"mounted at {point}, {where}, {sandboxing.served_by(kind)}: it "
            "may show any directory, a data root too, and nothing here says which; pytest "
            "empties the --basetemp before the run. "
            f"Unmount it (`fusermount -u {point}`, or `umount {point}`), or choose a "
            "--basetemp on the sandbox's own filesystem"
        )
    # Elsewhere (a home on NFS is a usual place for one) only what pytest would empty: a
    # bindfs of a live root's sessions/ and --basetemp=<it>/<a session> emptied the session.
    # (Not a container's root: an overlay at / whose upper directory is the host's.)
    if served is not None and served[0] != Path("/") and _holds_what_no_run_made(target):
        point, kind = served
        raise usage_error(
            f"app: refusing --basetemp {given}: it holds files that no run of this plugin "
            f"made (no {SANDBOX_MARK}), on a filesystem of type {kind} mounted at {point} "
            f"{sandboxing.served_by(kind)}: they may "
            "be a data root's, which nothing here can tell, and pytest empties the "
            "--basetemp before the run. Give a --basetemp that is empty or new, or one on a "
            "local filesystem"
        )
    # Where a mount above it shows it from (production's sessions/ bound into a scratch
    # directory): after the refusal of a mount at or in it, which says how to undo it.
    if (source := bound_from(target)) is not None:
        found = _overlapping([source], roots)
        spelled = f" (it is {source}, seen through a mount)"
        refuse_overlap()
    _refuse_enclosing_data_root(f"--basetemp {given}", "empties it", target)
    if lexical.is_dir():
        _refuse_data_roots_inside(given, lexical, stamped=stamped_inside)


def _holds_what_no_run_made(directory: Path) -> bool:
    """Whether `directory` exists, holds anything, and is no earlier sandbox."""
    try:
        with os.scandir(directory) as entries:
            held = any(True for _ in entries)
    except OSError:
        return False
    return held and not (directory / SANDBOX_MARK).is_file()


def unknown_mount_at(point: Path, kind: str) -> str | None:
    """Where a mount that `app.dataroot.served_from` reported lies, said for a refusal of
    what pytest writes through it; None where that is allowed.

    In a sandbox, any such mount was made by a test. Elsewhere a FUSE or network
    filesystem is a usual place for reports (a home on NFS), but an overlay whose upper
    directory cannot be told is not, except a container's root: through one mounted with
    ``upperdir=../data/production/sessions`` a child's ``--junitxml`` replaced a session's
    record, and its new ``--basetemp`` was made among the sessions (red team 50).
    """
    if in_a_sandbox(point):
        return "in a test run's sandbox"
    if kind == "overlay" and point != Path("/"):
        return "outside any sandbox"
    return None


def in_a_sandbox(path: Path) -> bool:
    """Whether `path` lies in this process's run's sandbox, or in a directory the plugin
    marked as one (an enclosing run's, seen from a run a test started inside it)."""
    run = sandboxing.current_run()
    if run is not None and path.is_relative_to(run.sandbox):
        return True
    return any((above / SANDBOX_MARK).is_file() for above in (path, *path.parents))


def _refuse_mounts(given: Path, spellings: tuple[Path, ...]) -> None:
    """Refuse a --basetemp that is a mount point or has one inside it.

    pytest's emptying (``rm_rf``, like ``shutil.rmtree``) goes on into a filesystem mounted
    there, and what a mount holds shows nothing of where it comes from: production's
    ``sessions/`` bind-mounted into a scratch directory to look at it holds no lock file and
    no stamp, so the walk below found nothing and pytest emptied the live server's sessions.
    A mount point as the --basetemp itself is emptied too (pytest then fails to recreate it).
    """
    __tracebackhide__ = True
    from app.dataroot import mounts_inside

    for spelling in dict.fromkeys(spellings):
        found = [m for m in mounts_inside(spelling.parent) if m.is_relative_to(spelling)]
        if found:
            point = found[0]
            where = (
                "it is a mount point"
                if point == spelling
                else f"a filesystem is mounted in it at {point}"
            )
            raise usage_error(
                f"app: refusing --basetemp {given}: {where} (`findmnt {point}` shows what), "
                "and pytest empties the --basetemp before the run: its deletion would go on "
                f"into the mounted filesystem and delete what it holds. Unmount it (umount "
                f"{point}), or choose a --basetemp with nothing mounted in it"
            )


def _enclosing_data_root(path: Path, *, through_mounts: bool = True) -> tuple[Path, str] | None:
    """The data root that ``path`` lies in (held by a live process, or stamped), if any,
    with who holds it: by what is on disk, not by what the settings say."""
    from app.dataroot import STAMP_FILE, a_root_s_own, bound_from, shown_from_a_session
    from app.lock import LOCK_FILE, probe

    def above(path: Path) -> tuple[Path, str] | None:
        for directory in path.parents:
            if (directory / LOCK_FILE).is_file() and (seen := probe(directory)).held:
                return directory, f"held by {describe_holder(seen.holder)}"
            if (directory / STAMP_FILE).is_file():
                return directory, f"it has a profile stamp, {STAMP_FILE}"
        return None

    found = above(path)
    # Through a bind mount of a root's directory (production's sessions/ bound into a
    # scratch directory) nothing above the path says so; where it lies in fact does.
    source = bound_from(path) if found is None and through_mounts else None
    if source is not None and (found := above(source)) is not None:
        root, who = found
        found = root, f"{who}; it is {source}, seen through a mount"
    if found is None and through_mounts:
        # A root's .trash/ bound where its filesystem is mounted nowhere in sight, or a root
        # whose stamp and lock file were deleted: a --basetemp in it was made there, the
        # run's sandbox and testing root inside it (red team 63). What the directories carry
        # (the mark), or where a mount shows them from, once nothing above is a root.
        for directory in path.parents:
            if (own := a_root_s_own(directory)) is not None:
                return directory, own
        if (session_s := shown_from_a_session(path)) is not None:
            return path, (
                "a directory of a session of a data root by its place in its filesystem, "
                f"{os.fsdecode(session_s)}, seen through a mount"
            )
    return found


def _refuse_enclosing_data_root(
    what: str, does: str, path: Path, *, through_mounts: bool = True
) -> None:
    """Refuse a temporary directory inside a data root that the settings do not name (a
    service's root set in its own environment): pytest would create or empty it in there."""
    __tracebackhide__ = True
    found = _enclosing_data_root(path, through_mounts=through_mounts)
    if found is not None:
        raise usage_error(
            f"app: refusing {what}: pytest {does} in {path}, which lies inside "
            f"{_named_root(*found)}. Choose a temporary directory outside every data root"
        )


def _named_root(root: Path, who: str) -> str:
    """A data root `_enclosing_data_root` found, named for a refusal: "the data root <root>
    (<who>)", or "<directory>, which is the .trash/ directory of ..." for one of a root's
    own directories (red team 63)."""
    if who.startswith("it is the "):
        return f"{root}, which {who.removeprefix('it ')}"
    return f"the data root {root} ({who})"


def _refuse_data_roots_inside(given: Path, target: Path, *, stamped: bool = True) -> None:
    """Look through an existing --basetemp before pytest deletes all of it.

    The roots the settings name are not the only ones: a service may get its data root from
    its own environment, which this shell never saw. Any data root held by a live process is
    refused, and so is any stamped data root, unless the directory is a sandbox this plugin
    made before and the root's stamp says a run made it there (its ``sandbox``, which lies
    within the directory): the ``.app-sandbox`` mark alone is a name anyone can write, and a
    stopped service's root below it was emptied on its word. Walking costs what pytest's
    deletion of the same tree is about to cost anyway.
    """
    __tracebackhide__ = True
    from app.dataroot import STAMP_FILE, walk_tree
    from app.lock import LOCK_FILE, probe

    earlier_sandbox = (target / SANDBOX_MARK).is_file()
    deepest = (0, os.fspath(target))
    unseen: list[tuple[str, OSError]] = []
    # A directory of this user's that a test left unlistable (`chmod 000`) is looked through
    # as pytest's emptying makes it removable (`walk_tree`'s `open_own`).
    walk = walk_tree(target, lambda *found: unseen.append(found), open_own=True)
    for directory, _dirs, files, depth in walk:
        deepest = max(deepest, (depth, directory))
        here = Path(directory)
        what = "it is" if here == target else "it holds"
        if LOCK_FILE in files and (seen := probe(here)).held:
            raise usage_error(
                f"app: refusing --basetemp {given}: {what} the data root {here}, held by "
                f"{describe_holder(seen.holder)}; pytest empties the --basetemp before the "
                "run. Choose a --basetemp outside every data root"
            )
        if STAMP_FILE not in files:
            continue
        # Without the plugin (or inactive), a stamped root below counts only where its stamp
        # names another profile than testing: under pytest the app opens no other profile
        # outside a sandbox of the plugin's, so no test made it, and a stopped production
        # root below another project's --basetemp was emptied (red team 51).
        if not (stamped or here == target or _stamped_beyond_testing(here / STAMP_FILE)):
            continue
        if not earlier_sandbox:
            raise usage_error(
                f"app: refusing --basetemp {given}: {what} the data root {here} (it has a "
                f"profile stamp, {STAMP_FILE}), and pytest empties the --basetemp before the "
                "run. Choose a --basetemp outside every data root, or a new directory"
            )
        if (made := _made_by_a_run(here, target)) is not None:
            raise usage_error(
                f"app: refusing --basetemp {given}: it is marked as an earlier run's sandbox "
                f"({SANDBOX_MARK}), but it holds the data root {here}, which no run of the "
                f"app's plugin made there ({made}); pytest empties the --basetemp before the "
                "run. Choose another --basetemp; if that root is only an old test's, delete "
                "it yourself first"
            )
    # A directory the walk cannot list hides what it holds, and pytest empties it all the
    # same: a production root (stamped) below a path longer than the system's limit, or
    # behind a directory of mode 000 (pytest makes it removable first), was emptied unseen
    # (red team 55).
    for directory, error in unseen:
        if isinstance(error, FileNotFoundError):
            continue  # gone meanwhile: nothing to empty there
        why = error.strerror or str(error)
        if error.errno == errno.ENAMETOOLONG:
            why = f"{why}: its path is longer than the system's limit"
        raise usage_error(
            f"app: refusing --basetemp {given}: it holds {_shortened(directory)}, which "
            f"cannot be looked through for a data root ({why}), and pytest empties the "
            "--basetemp, all of it, before the run. Look at what it holds yourself, and "
            f"remove it (rm -rf {given}) or give another --basetemp"
        )
    if deepest[0] >= (reach := _removable_depth()):
        raise usage_error(
            f"app: refusing --basetemp {given}: it holds a directory tree {deepest[0]} levels "
            f"deep ({_shortened(deepest[1])}), and pytest empties the --basetemp before the "
            "run with shutil.rmtree, which goes down one level per Python call: past about "
            f"{reach} levels (Python's recursion limit, {sys.getrecursionlimit()}) it stops in "
            "a RecursionError traceback, the tree half removed. Nothing in it is a data root: "
            f"remove it yourself (rm -rf {given}), or give another --basetemp"
        )


def _removable_depth() -> int:
    """How many levels deep a tree can be for a ``shutil.rmtree`` called from about here:
    Python's recursion limit, less the calls under way and a margin for pytest's own."""
    frame: FrameType | None = sys._getframe()
    calls = 0
    while frame is not None:
        frame, calls = frame.f_back, calls + 1
    return max(sys.getrecursionlimit() - calls - 100, 1)


def _shortened(text: str, keep: int = 120) -> str:
    """`text`, cut in the middle past `keep` characters, for a path in a message."""
    return text if len(text) <= keep else f"{text[: keep // 2]}...{text[-keep // 2 :]}"


def _stamped_beyond_testing(stamp: Path) -> bool:
    """Whether the profile stamp `stamp` names a profile other than ``testing`` (one that
    cannot be read says nothing: an earlier test's own may be damaged on purpose)."""
    try:
        profile = json_loads(stamp.read_bytes()).get("profile")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(profile, str) and profile.strip().lower() != "testing"


def _made_by_a_run(root: Path, sandbox: Path) -> str | None:
    """None if `root`'s stamp says a run of the plugin made it in `sandbox` (or in a run's
    sandbox inside it), else what the stamp says instead."""
    from app.dataroot import read_stamp
    from app.errors import AppError

    try:
        stamp = read_stamp(root)
    except (AppError, OSError) as error:
        return f"its stamp cannot be read: {error}"
    made_in = (stamp or {}).get("sandbox")
    if not isinstance(made_in, str):
        profile = (stamp or {}).get("profile")
        return f"its stamp, for profile {profile!r}, names no sandbox"
    try:
        made = Path(sandboxing.path_from_text(made_in))
    except ValueError:
        return f"its stamp names no sandbox a path can be: {made_in!r}"
    if made.is_relative_to(sandbox.resolve()) and root.resolve().is_relative_to(made):
        return None
    return f"its stamp names the sandbox {made_in}"


def _old_directories(
    rootdir: Path, keep: int, *, adding: int = 1, alive_after: float | None = None
) -> list[Path]:
    """The numbered directories pytest deletes at the end of a run: those beyond the last
    `keep`, counting the `adding` a run about to start makes (0 at its end), unless a live
    pytest holds them (its ``.lock``, younger than `alive_after`: pytest's lock timeout ago
    by default). Mirrors ``_pytest.pathlib.cleanup_numbered_dir``, which has no
    side-effect-free form."""
    import time

    from _pytest.pathlib import LOCK_TIMEOUT

    try:
        with os.scandir(rootdir) as entries:
            names = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    numbers = {n: int(n[7:]) for n in names if n.startswith("pytest-") and n[7:].isdigit()}
    last = max(numbers.values(), default=-1) + adding - keep
    doomed = [n for n, number in numbers.items() if number <= last]
    doomed += [n for n in names if n.startswith("garbage-")]
    if alive_after is None:
        alive_after = time.time() - LOCK_TIMEOUT
    found = []
    for name in sorted(doomed):
        lock = rootdir / name / ".lock"
        with contextlib.suppress(OSError):
            if lock.stat().st_mtime >= alive_after:
                continue  # a live (or recent) pytest run's: pytest leaves it alone
        found.append(rootdir / name)
    return found


class _FlockReading:
    """``/proc/locks``, read on a thread of its own from the moment this is made.

    The read waits 10 to 30 ms here (wall time, hardly any CPU): Linux's ``/proc/locks``
    takes the file-lock list's per-CPU semaphore for writing, which waits for an RCU grace
    period (``locks_start`` in fs/locks.c). Two such waits, one as the run starts and one as
    it ends, were a third of what the plugin added to a one-test run. Started ahead
    (`read_flocks_ahead`), each wait overlaps work the run does anyway: pytest loading its
    other plugins and options, the checks as the tests end. A thread, not a process or
    asyncio: a blocking read that releases the GIL is what threads are for, and
    ``threading`` is imported already.
    """

    def __init__(self) -> None:
        import threading

        self._text: str | None = None
        self._thread = threading.Thread(target=self._read, name="app-proc-locks", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self._text = _read_flocks()

    def text(self) -> str | None:
        """What the read found; None where ``/proc/locks`` could not be read."""
        self._thread.join()
        return self._text


def _read_flocks() -> str | None:
    """``/proc/locks`` now; None where it cannot be read."""
    try:
        return Path("/proc/locks").read_text()
    except OSError:
        return None


#: The reading started ahead for the next `_flock_holders` (at most one), used once.
_FLOCKS_AHEAD: list[_FlockReading] = []


def read_flocks_ahead() -> None:
    """Start reading ``/proc/locks`` now for the next check of live roots among pytest's
    older directories, which comes within a few milliseconds (the plugin's import, before
    the start's check; the tests' end, before the end's): what that check sees is the same,
    read that much earlier, as any check is read a little before pytest deletes."""
    _FLOCKS_AHEAD[:] = [_FlockReading()]


def drop_flocks_ahead() -> None:
    """Forget a reading started ahead and not used: a later check reads afresh."""
    _FLOCKS_AHEAD.clear()


#: pytest's default tmp_path_retention_count.
_DEFAULT_KEEP: Final = 3


def flocks_due_at_start() -> bool:
    """Whether the start's check of pytest's older directories is likely to come, guessed as
    pytest imports the plugin (before any option is parsed): not in an xdist worker nor with
    a ``--basetemp`` (neither has that check), and only where pytest's default directory
    holds numbered directories enough for one to be due.

    A guess either way costs no safety, only time: a check with no reading ahead reads
    then. But a reading nobody uses is not free for others: it takes the kernel's file-lock
    list for writing while it waits, and every ``flock`` on the machine waits with it.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return False
    if any("--basetemp" in arg for arg in [*sys.argv, os.environ.get("PYTEST_ADDOPTS", "")]):
        return False
    return bool(_old_directories(_default_rootdir()[1], _DEFAULT_KEEP))


def _default_rootdir() -> tuple[Path, Path]:
    """Where pytest keeps its numbered directories without ``--basetemp``: the temporary
    root (``PYTEST_DEBUG_TEMPROOT``, else ``TMPDIR``...) and its ``pytest-of-<user>``."""
    import tempfile

    from _pytest.tmpdir import get_user  # private: see the pytest bound in pyproject.toml

    temproot = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()).resolve()
    return temproot, temproot / f"pytest-of-{get_user() or 'unknown'}"


def _temproot_variable(temproot: Path) -> str:
    """The variable that put pytest's temporary root at `temproot`, for a refusal to name
    what to change: a refusal that blamed TMPDIR for a ``PYTEST_DEBUG_TEMPROOT`` (which
    pytester sets, and which wins) told its reader to change what was not set."""
    if os.environ.get("PYTEST_DEBUG_TEMPROOT"):
        return "PYTEST_DEBUG_TEMPROOT"
    for name in ("TMPDIR", "TEMP", "TMP"):  # tempfile's order
        value = os.environ.get(name)
        if value and Path(value).resolve() == temproot:
            return name
    return "TMPDIR"


def flocks_due_at_end(config: pytest.Config) -> bool:
    """Whether the check just before pytest deletes its older directories will come: pytest
    made a numbered directory for the run, and older ones are due now."""
    factory = getattr(config, "_tmp_path_factory", None)  # private: see pyproject.toml
    basetemp = getattr(factory, "_basetemp", None)
    if factory is None or basetemp is None or factory._given_basetemp is not None:
        return False
    return bool(_old_directories(basetemp.parent, _retention_keep(config), adding=0))


def _flock_holders() -> set[int] | None:
    """The pids that hold a ``flock`` (Linux ``/proc/locks``), or None where unknown: as read
    ahead (`read_flocks_ahead`), else now."""
    text = _FLOCKS_AHEAD.pop().text() if _FLOCKS_AHEAD else _read_flocks()
    if text is None:
        return None
    lines = text.splitlines()
    pids = set()
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 15858 fe:00:2371224 0 EOF"; "->" marks a waiter.
        if len(parts) > 4 and parts[1] == "FLOCK" and parts[4].isdigit():
            pids.add(int(parts[4]))
    return pids


def _lock_files_under(directories: list[Path]) -> set[Path]:
    """The ``.server.lock`` files under `directories` that some process holds open now.

    Read from the open files of the processes that hold a flock: walking the directories
    instead cost 236 ms at every start on a busy machine (4,008 directories in the two old
    ones). Where ``/proc`` says nothing, every lock file in them is walked for.
    """
    from app.lock import LOCK_FILE

    holders = _flock_holders()
    if holders is None:
        from app.dataroot import walk_tree

        return {
            Path(directory) / LOCK_FILE
            for old in directories
            for directory, _dirs, files, _depth in walk_tree(old)
            if LOCK_FILE in files
        }
    found = set()
    ending = f"/{LOCK_FILE}"
    for pid in holders:
        fds = f"/proc/{pid}/fd"
        names: list[str] = []
        with contextlib.suppress(OSError):  # gone meanwhile, or another user's
            names = os.listdir(fds)  # noqa: PTH208 - text, see below
        for name in names:
            # As text, a Path made only for a lock file's name: an object store's or a
            # database's process holds a flock with a hundred files open, and making a Path
            # of each was most of this check's cost on a busy machine.
            with contextlib.suppress(OSError):
                # A lock file deleted under its holder still holds its root (app.lock
                # finds that holder): the kernel names it "<path> (deleted)".
                text = os.readlink(f"{fds}/{name}")  # noqa: PTH115 - text, as above
                text = text.removesuffix(" (deleted)")
                if text.endswith(ending) and any(
                    (target := Path(text)).is_relative_to(old) for old in directories
                ):
                    found.add(target)
    return found


def _refuse_live_roots_in_old_directories(config: pytest.Config, rootdir: Path) -> None:
    """pytest deletes its older numbered directories at the end of the run: refuse to start
    if a live process (a server started by hand on a test's data) holds a data root there."""
    __tracebackhide__ = True
    from app.lock import probe

    keep = _retention_keep(config)
    doomed = _old_directories(rootdir, keep)
    if not doomed:
        return
    for lock in sorted(_lock_files_under(doomed)):
        if (seen := probe(lock.parent)).held:
            old = next(d for d in doomed if lock.is_relative_to(d))
            raise usage_error(
                f"app: refusing to run: pytest deletes {old} at the end of this run (it "
                f"keeps only the last {keep} of its temporary directories, "
                f"tmp_path_retention_count), and it holds the data root {lock.parent}, held "
                f"by {describe_holder(seen.holder)}. Stop that process, or move its data "
                f"root out of {rootdir}"
            )


def _check_default_basetemp(config: pytest.Config, roots: dict[str, Path]) -> None:
    """pytest keeps its temporary directories in ``<TMPDIR>/pytest-of-<user>``, creating them
    and deleting old ones there: a TMPDIR inside a data root would reach into it, and a data
    root inside an old one is deleted with it."""
    __tracebackhide__ = True
    rootdir = _check_temproot(roots)
    _refuse_live_roots_in_old_directories(config, rootdir)


def _check_temproot(roots: dict[str, Path], *, enclosing: bool = False) -> Path:
    """Refuse a temporary root (``TMPDIR``, ``PYTEST_DEBUG_TEMPROOT``) that puts pytest's
    ``pytest-of-<user>`` in a data root, or a data root in it; return that directory.

    With ``enclosing`` (`roots` are the roots an enclosing run protects, not this run's
    settings), only a root that holds ``pytest-of-<user>`` counts: the enclosing run's own
    test data, its roots among them, lives inside ``pytest-of-<user>`` by design (a test's
    ``tmp_path``), in the numbered directory that run holds, which pytest never deletes
    while it runs; a live root in an older one is kept at the end (`_keep_held_directories`).
    """
    __tracebackhide__ = True
    temproot, rootdir = _default_rootdir()
    # Where the system opens it: the user's name is pytest's text, taken from LOGNAME or
    # USER as it is, so `USER=root/../../srv/app/data` (with /tmp/pytest-of-root there)
    # made pytest-of-<user> production's root itself, and pytest made its numbered
    # directories in it, plugin active or off (red team 51).
    # A link at that name itself pytest refuses before it makes anything (since 7.3), with a
    # message of its own that says what to fix.
    linked = rootdir.is_symlink()
    real = rootdir if linked else Path(os.path.realpath(rootdir))
    if enclosing:
        roots = {
            name: root
            for name, root in roots.items()
            if not (root.is_relative_to(rootdir) or root.is_relative_to(real))
        }
    # A root the settings name, else one found on disk (a service's root set in its own
    # environment): the same refusal, saying how the root was recognised.
    where = None
    if (named := _overlapping([rootdir, real], roots)) is not None:
        name, root = named
        where = f"overlaps the data root of profile {name!r} ({root})"
    elif (on_disk := _enclosing_data_root(rootdir)) is not None:
        where = f"lies inside {_named_root(*on_disk)}"
    elif not linked and (on_disk := _data_root_at(real)) is not None:
        where = f"is or lies inside {_named_root(*on_disk)}"
    if where is not None:
        if (user := _user_variable()) is not None:
            variable, name = user
            seen = f" (it is {real})" if real != rootdir else ""
            raise usage_error(
                f"app: refusing to run: pytest would create (and clean up) its temporary "
                f"directories in {rootdir}{seen}, which {where}, because the user name "
                f"pytest reads from {variable} is {name!r}, a path rather than a name. Set "
                f"{variable} to the user's own name, or unset it"
            )
        variable = _temproot_variable(temproot)
        raise usage_error(
            f"app: refusing to run: pytest would create (and clean up) its temporary "
            f"directories in {rootdir}, which {where}, because {variable} is {temproot}. "
            f"Point {variable} outside every data root, or pass --basetemp"
        )
    return rootdir


def _data_root_at(path: Path) -> tuple[Path, str] | None:
    """`_enclosing_data_root` of `path`, `path` itself included: pytest makes its numbered
    directories right inside ``pytest-of-<user>``, which may be a data root itself."""
    return _enclosing_data_root(path / "pytest-0")


def _user_variable() -> tuple[str, str] | None:
    """The variable pytest's user name comes from (``getpass.getuser``'s order), and its
    value, where that name is a path rather than a name (a ``/`` in it, or ``..``)."""
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if name := os.environ.get(variable):
            return (variable, name) if "/" in name or name in {".", ".."} else None
    return None


def keep_sandbox_with_mounts(state: GuardState, when: str) -> str | None:
    """Under ``tmp_path_retention_policy = "failed"``, before pytest deletes what passed (a
    passed test's ``tmp_path`` after it, the whole sandbox at the end of a run that passed),
    keep everything if a filesystem is mounted in the sandbox; say so.

    pytest's ``rmtree`` goes on into a mount: a test (run as root) that bind-mounted a
    production root into its ``tmp_path``, to look at it beside its own data, got it emptied
    as the test passed (red team 35). The policy becomes ``all`` for the rest of the run.
    Under ``none`` the sandbox goes with pytest's older directories at the end, where
    `_keep_held_directories` keeps one with a mount point.

    Args:
        state: the run's guard state (its sandbox and tmp_path factory).
        when: when the deletion was to come ("after <test>", "as the run ends").

    Returns:
        None where nothing is mounted there, or the policy is not ``failed``; else the
        message, naming the mount, what pytest was about to do, and what resolves it.
    """
    factory = state.factory
    if factory is None or factory._retention_policy != "failed":  # private: see pyproject
        return None
    from app.dataroot import mounts_inside

    if (replaced := sandbox_replaced(state.sandbox, state.sandbox_identity)) is not None:
        factory._retention_policy = "all"
        state.replaced_reported = True
        return (
            f"app: {when}, pytest was about to delete what passed (tmp_path_retention_policy "
            f"= 'failed'), but the sandbox {state.sandbox} {replaced}: the deletion would "
            "empty whatever it leads to now (a data root mounted on the sandbox was emptied, "
            "its lock file and stamp with it). The policy keeps everything for the rest of "
            f"this run. Undo it (umount {state.sandbox}, or remove what was put at that "
            "path), and never mount or link a real data root over the sandbox or a test's "
            "directory"
        )
    found = mounts_inside(state.sandbox)
    if not found:
        return None
    factory._retention_policy = "all"
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (
        f"app: {when}, pytest was about to delete what passed (tmp_path_retention_policy = "
        f"'failed'), but a filesystem is mounted in the sandbox at {found[0]}{more}: the "
        "deletion would go on into the mount and empty what it holds (a data root "
        "bind-mounted into a test's directory is emptied with it). The policy keeps "
        f"everything for the rest of this run. Unmount it (umount {found[0]}; `findmnt -R "
        f"{state.sandbox}` lists them), and never mount a real data root into the sandbox"
    )


def refuse_replaced_sandbox(state: GuardState, when: str) -> str | None:
    """Where the sandbox's path no longer names the run's sandbox, the message that says so
    (after the test that did it, whose `mktemp` calls are refused from then on); else None.
    """
    if state.replaced_reported:
        return None
    found = _replaced_message(state.sandbox, state.sandbox_identity, when)
    state.replaced_reported = found is not None
    return found


def _replaced_message(sandbox: Path, made: tuple[int, int] | None, when: str) -> str | None:
    replaced = sandbox_replaced(sandbox, made)
    if replaced is None:
        return None
    return (
        f"app: {when}: the test sandbox {sandbox} {replaced}, so pytest would make "
        "tmp_path and tmp_path_factory.mktemp directories in whatever it leads to now (a "
        "data root mounted over the sandbox got the next tests' directories made in it). "
        f"Undo it (umount {sandbox}, or remove what was put at that path and rerun), "
        "and never mount or link a real data root over the sandbox or a test's directory"
    )


#: Where `_guard_mktemp` keeps the sandbox's identity on the factory it guards.
_IDENTITY = "_app_sandbox_identity"


def _guard_mktemp(factory: pytest.TempPathFactory, sandbox: Path) -> None:
    """Make the factory's `mktemp` refuse a sandbox whose path names something else now.

    pytest makes every ``tmp_path`` and ``tmp_path_factory.mktemp`` directory by that path:
    a test (run as root) that mounted a production root over the sandbox and left it there
    got the next tests' directories, and pytest's ``<name>current`` links, made in
    production's root, and the run passed (red team 37). A poll and an ``lstat`` a call.
    """
    made = sandbox_identity(sandbox)
    setattr(factory, _IDENTITY, made)
    original = factory.mktemp

    def mktemp(basename: str, numbered: bool = True) -> Path:
        __tracebackhide__ = True
        refused = _replaced_message(sandbox, made, f"refusing to make a directory {basename!r}")
        if refused is not None:
            pytest.fail(refused, pytrace=False)
        return original(basename, numbered)

    factory.mktemp = mktemp  # type: ignore[method-assign]


def sandbox_identity(sandbox: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the sandbox directory itself, a link not followed."""
    try:
        found = os.lstat(sandbox)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def sandbox_replaced(sandbox: Path, made: tuple[int, int] | None) -> str | None:
    """How the sandbox's path no longer names the directory the run made (``made``, its
    `sandbox_identity` then), or None.

    A test (run as root) that bind-mounted a production root on the sandbox itself, pytest's
    ``getbasetemp()``, got it emptied as the run passed under ``tmp_path_retention_policy
    = "failed"``, its lock file and stamp with it, and nothing said (red team 37): the look
    for mounts saw only those strictly inside the sandbox. A mount on the path, or the
    directory renamed away and something else put there, changes what the path names.
    """
    if made is None:
        return None
    from app.dataroot import mount_point_at

    if mount_point_at(sandbox):
        return f"is a mount point now (`findmnt {sandbox}` shows what is mounted there)"
    now = sandbox_identity(sandbox)
    if now == made:
        return None
    if now is None:
        return "is gone"
    if sandbox.is_symlink():
        return f"is a symbolic link now, to {sandbox.readlink()}"
    return "names another file than the directory this run made (it was replaced)"


#: pytest's own ini values the plugin reads, with pytest's defaults.
_PYTEST_INI_DEFAULTS: dict[str, Any] = {
    "tmp_path_retention_count": 3,
    "tmp_path_retention_policy": "all",
    "log_file": "",
    "log_file_mode": "w",
}


def pytest_ini(config: pytest.Config, name: str) -> Any:
    """An ini value of one of pytest's own plugins, or pytest's default where that plugin is
    blocked: ``-p no:tmpdir`` or ``-p no:logging`` removes the plugin that declares it, and
    `getini` then raises, which stopped the run with a bare traceback from the app's plugin
    (red team 36). pytest itself then neither deletes old temporary directories at the end
    of the session nor writes a log file, so its defaults are what the run does."""
    try:
        return config.getini(name)
    except ValueError:
        return _PYTEST_INI_DEFAULTS[name]


def _retention_keep(config: pytest.Config) -> int:
    # As pytest reads it (`TempPathFactory.getbasetemp`): policy "none" keeps no directory.
    if pytest_ini(config, "tmp_path_retention_policy") == "none":
        return 0
    return int(pytest_ini(config, "tmp_path_retention_count"))


def _keep_held_directories(
    config: pytest.Config | None, rootdir: Path, keep: int, alive_after: float, sandbox: Path
) -> None:
    """Just before pytest's own clean-up at the end of the run: keep each numbered directory
    it would delete that holds a data root a live process holds, or a mount point.

    The start of the run looked already (`_refuse_live_roots_in_old_directories`), but pytest
    picks what to delete only now, from the directories there now: a run started meanwhile
    (another project's, another terminal's) makes older ones due, and a server started
    meanwhile on a failed test's data was never seen. And its deletion goes on into a
    filesystem mounted there (production's root bind-mounted to look at it, an sshfs), which
    no lock file under the directory shows. pytest leaves alone a directory whose ``.lock``
    is fresh (its own mark of one in use): that mark keeps it, and the run says so.
    """
    due = _old_directories(rootdir, keep, adding=0, alive_after=alive_after)
    # The run's own sandbox (due under policy "none"): what is live in it is the run's own,
    # but a mount in it is not, and was emptied with it (red team 35).
    doomed = [old for old in due if old != sandbox]
    if not due:
        return
    from app.dataroot import mounts_inside
    from app.lock import probe

    reasons: dict[Path, str] = {}
    for lock in sorted(_lock_files_under(doomed)):
        if (seen := probe(lock.parent)).held:
            old = next(d for d in doomed if lock.is_relative_to(d))
            reasons.setdefault(
                old,
                f"it holds the data root {lock.parent}, held by {describe_holder(seen.holder)}. "
                f"Stop that process, then delete the directory (rm -rf {old}), or move its "
                f"data root out of {rootdir}",
            )
    for old in due:
        mounts = mounts_inside(old)
        if mounts and old not in reasons:
            reasons[old] = (
                f"a filesystem is mounted in it at {mounts[0]} (`findmnt {mounts[0]}` shows "
                "what), and the deletion would go on into it and delete what it holds. "
                f"Unmount it (umount {mounts[0]}), then delete the directory (rm -rf {old})"
            )
    reporter = config.pluginmanager.get_plugin("terminalreporter") if config else None
    for old, reason in reasons.items():
        lock = old / ".lock"
        try:
            _fresh_mark(lock)
        except OSError as error:
            done = f"app: could not keep {old} ({error.strerror}, writing {lock}): pytest"
        else:
            done = f"app: kept {old}: pytest"
        line = (
            f"{done} deletes it at the end of this run (it keeps only the last {keep} of its "
            f"temporary directories, tmp_path_retention_count), but {reason}"
        )
        if reporter is not None:
            reporter.write_line(line, yellow=True)
        else:
            print(line, file=sys.stderr)


def _fresh_mark(lock: Path) -> None:
    """pytest's mark of a directory in use, ``.lock``, made anew: a fresh file of one name.

    ``touch`` and ``utime`` go through a link: a ``.lock`` planted as a symbolic link to a
    file of a live data root had that file's times changed, and a dangling one made the
    file it names there; a hard link changed the times of the file under all its names.
    The name is removed (never what it leads to) and a new file made in its place,
    ``O_EXCL``: a link planted in between fails it rather than being followed.
    """
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    os.close(os.open(lock, flags, 0o644))


def _keep_held_directories_after(
    factory: pytest.TempPathFactory, basetemp: Path, config: pytest.Config | None = None
) -> None:
    """Before `factory`'s clean-up of the numbered directories older than `basetemp`, keep
    each one that holds a live data root or a mount point (`_keep_held_directories`)."""
    from _pytest.pathlib import LOCK_TIMEOUT

    try:
        alive_after = basetemp.stat().st_mtime - LOCK_TIMEOUT
    except OSError:
        return
    keep = 0 if factory._retention_policy == "none" else factory._retention_count
    # pytest registered its clean-up on this stack as it made the directory; the stack runs
    # last in, first out, so this runs just before it (private: see the pytest bound in
    # pyproject.toml). Its locks count as alive against the directory's creation, as there.
    # pytest 8 registers it with atexit instead, also last in, first out: there, every run
    # with the plugin active stopped here with an AttributeError before any test.
    stack = getattr(factory, "_exit_stack", None)
    register = stack.callback if stack is not None else atexit.register
    register(_keep_held_directories, config, basetemp.parent, keep, alive_after, basetemp)


def keep_held_directories_inactive(config: pytest.Config) -> None:
    """In a run where the plugin stays inactive (another project's, in this environment):
    keep, as an active run does, each numbered directory pytest is about to delete that holds
    a live data root or a mount point.

    Inactive, the plugin changes nothing of the run; but pytest's clean-up of
    ``pytest-of-<user>`` is shared by every project of the user, and another project's run
    deleted a live server's root there (a server started on a failed test's data) that the
    app's own runs keep. Only pytest's own factory, only where it made a numbered directory
    (so registered that clean-up), and only its ``.lock`` is touched, in a directory kept.
    """
    factory = getattr(config, "_tmp_path_factory", None)  # private: see pyproject.toml
    basetemp = getattr(factory, "_basetemp", None)
    if factory is None or basetemp is None or factory._given_basetemp is not None:
        return
    _keep_held_directories_after(factory, basetemp, config)


def make_sandbox(
    config: pytest.Config, given: str | None, roots: dict[str, Path]
) -> tuple[pytest.TempPathFactory, Path]:
    """pytest's own base temporary directory, created now, and the factory tmp_path must use.

    The sandbox has to exist before any conftest imports the app, while pytest makes its
    factory only in its own pytest_configure, too late: so the plugin builds it (pytest offers
    no public constructor; see the pytest bound in pyproject.toml).
    """
    if given:
        _check_basetemp(Path(given), roots)
    else:
        _check_default_basetemp(config, roots)
    factory = pytest.TempPathFactory(
        given_basetemp=Path(given) if given else None,
        retention_count=int(pytest_ini(config, "tmp_path_retention_count")),
        retention_policy=pytest_ini(config, "tmp_path_retention_policy"),
        trace=config.trace.get("tmpdir"),
        _ispytest=True,
    )
    setattr(factory, _KEEPS, True)
    try:
        sandbox = factory.getbasetemp().resolve()
    except OSError as error:
        # pytest's own refusal (a --basetemp that names a file, or under one; its
        # pytest-of-<user> a link), which pytest says as a test's error where it makes the
        # directory itself: made here first, it was a traceback through the plugin.
        if not given:  # pytest's own words end it: they say what to fix
            raise usage_error(
                f"app: pytest cannot make its base temporary directory, the test sandbox: {error}"
            ) from None
        raise usage_error(
            f"app: pytest cannot make --basetemp {given}, the test sandbox: {error}. Give "
            "--basetemp a directory of its own (pytest empties it)"
        ) from None
    if not given:
        # Just before pytest's clean-up of the older numbered directories, at the session's
        # end or at exit.
        _keep_held_directories_after(factory, sandbox, config)
    (sandbox / SANDBOX_MARK).write_text(
        "A pytest sandbox of the app's plugin: pytest empties it when it is reused.\n"
    )
    _guard_mktemp(factory, sandbox)
    return factory, sandbox


_MARKS_THE_RUN = (
    "pytest sandbox (it only marks the run: the testing profile uses PostgreSQL and object storage)"
)


def testing_root(sandbox: Path) -> tuple[Path, str, dict[str, Path]]:
    """The session's testing data root, as `load("testing")` will place it, its source, and
    every profile's root as the files alone configure them.

    A testing root that overlaps another profile's is refused: `load` would refuse it in every
    test, and a root nested in production's is the incident's shape.
    """
    __tracebackhide__ = True
    try:
        roots = appconfig.configured_roots(None)  # after neutralising: the files alone
    except SettingsNotFoundError as error:
        return appconfig.sandbox_root(sandbox, "testing"), f"pytest sandbox ({error})", {}
    except AppError as error:
        raise usage_error(f"app: cannot read the settings: {error}") from None
    for overlap in appconfig.overlaps(roots):
        raise usage_error(
            f"app: the testing profile cannot be used: {overlap}. Fix settings.toml "
            "(see `app doctor`)"
        )
    if "testing" not in roots:
        if testing_remote() is not None:
            files = {name: root for name, (root, _) in roots.items()}
            return appconfig.sandbox_root(sandbox, "testing"), _MARKS_THE_RUN, files
        raise usage_error(
            f"app: settings.toml in {appconfig.settings_dir()} has no [testing] profile with a "
            "data_root, or a database_url and blob_url; the tests run on it. Add one (see "
            "`app doctor`)"
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


def testing_remote() -> RemoteTesting | None:
    """The testing profile's configured database and prefix, or None if it uses a data root.

    Any two profiles naming one database or overlapping prefixes are refused here, as
    `load` would refuse them in every test; the settings.local.toml's values count too.
    """
    __tracebackhide__ = True
    try:
        every = appconfig.configured_remote(sandboxed=False)
        testing = appconfig.configured_remote(sandboxed=True).get("testing", {})
        databases = {n: v["database_url"] for n, v in every.items() if "database_url" in v}
        blobs = {
            name: (v["blob_url"][0], v.get("s3_endpoint_url", (None, ""))[0], v["blob_url"][1])
            for name, v in every.items()
            if "blob_url" in v
        }
        clashes = list(appconfig.remote_overlaps(databases, blobs))
    except SettingsNotFoundError:
        return None
    except AppError as error:
        raise usage_error(f"app: cannot read the settings: {error}") from None
    for clash in clashes:
        raise usage_error(
            f"app: the testing profile cannot be used: {clash}. Fix settings.toml "
            "(see `app doctor`)"
        )
    if "database_url" not in testing or "blob_url" not in testing:
        return None
    (database_url, source), (blob_url, _) = testing["database_url"], testing["blob_url"]
    return RemoteTesting(database_url, blob_url, source)


def scratch_names(remote: RemoteTesting, suffix: str) -> tuple[str, str]:
    """The run's scratch database (its URL masked) and prefix, as the header names them."""
    database = sandboxing.scratch_database_url(remote.database_url, suffix)
    return appconfig.mask_database_url(database), sandboxing.scratch_blob_url(
        remote.blob_url, suffix
    )


def protected(
    shell: dict[str, Path],
    files: dict[str, Path],
    live: list[LiveHolder],
    sandbox: Path,
    spelled: dict[str, Path] | None = None,
) -> list[sandboxing.Protected]:
    """Every root the run must never open, by path and identity: the shell's view, the
    files', and the live holders'. A root inside the sandbox is the run's own. `spelled`:
    the shell's roots as spelled (`shell_roots`), kept where a link leads there."""
    found: dict[tuple[str, Path], sandboxing.Protected] = {}
    spellings = {(name, _resolved(path)): path for name, path in (spelled or {}).items()}
    pairs = [*shell.items(), *files.items(), *((h.profile, h.root) for h in live)]
    for name, root in pairs:
        if not root.is_relative_to(sandbox) and (name, root) not in found:
            found[name, root] = sandboxing.Protected.of(name, root, spellings.get((name, root)))
    return list(found.values())


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


#: What lets the registry take an entry again, by errno; anything else: its mode.
_REGISTRY_FIXES = {
    errno.ENOSPC: "Free space in {tmp} (`df -h {tmp}`) and run again",
    errno.EDQUOT: "Free space in {tmp} within this user's quota (`quota`) and run again",
    errno.EROFS: "{tmp} is mounted read-only: the run needs it writable",
    errno.EMFILE: "Raise this process's limit of open files (`ulimit -n`) and run again",
}
#: ENOSPC where every inode is used and blocks are free: `df -h` showed room (red team 75).
_NO_INODES_FIX: Final = (
    "{tmp} has no free inodes (each file takes one: `df -i {tmp}` counts them, where `df -h` "
    "shows free space): remove files there and run again"
)


#: Set on a factory whose run's plugin keeps its held directories itself (`make_sandbox`).
_KEEPS: Final = "_app_keeps_held_directories"


def _guard_basetemps_in_this_process(*, switched_off: bool = False) -> None:
    """Check the ``--basetemp`` of every pytest run this process starts later, the app's
    plugin switched off in it or not, before pytest empties it.

    With ``switched_off`` (`app.testing.fallback`: this process's pytest runs without the
    app's plugin), the run is also looked for through the process tree, as a child's
    configuration is (a test's child ``python -m pytest -p no:app`` given a hand-built
    environment), a ``--basetemp`` is checked against what is on disk outside any run too,
    and pytest's older numbered directories holding a live data root are kept in any run.
    Inside a run, a pytest without ``--basetemp`` is refused a temporary root in a root the
    run protects.

    A test's ``pytest.main(["-p", "no:app", "--basetemp=<root>/sessions", ...])`` (or
    pytester's ``runpytest_inprocess`` so) runs no hook of the app's, and its pytest emptied
    a stopped production root's ``sessions/`` as its first test asked for ``tmp_path`` (red
    team 39). It runs in this process, though, whose run knows the roots it protects: the
    class's own ``getbasetemp``, which every run in the process calls before it empties the
    directory, is wrapped once, and checks it as an inactive run's plugin would, against the
    roots this process's run protects and what is on disk.
    """
    factory = pytest.TempPathFactory
    if getattr(factory.getbasetemp, "_app_guarded", False):
        if switched_off:
            factory.getbasetemp._app_switched_off = True  # type: ignore[attr-defined]
        return
    original = factory.getbasetemp

    def getbasetemp(self: pytest.TempPathFactory) -> Path:
        __tracebackhide__ = True
        given = self._given_basetemp  # private: see the pytest bound in pyproject.toml
        made = self._basetemp is None
        anywhere = getbasetemp._app_switched_off  # type: ignore[attr-defined]
        run = None
        if made and (anywhere or sandboxing.marked()):
            # A run is found through the process tree first; outside any, a broken
            # PYTEST_APP_SANDBOX (`export PYTEST_APP_SANDBOX=` in the shell) errored every
            # test of a user's own `pytest -p no:app` run that asked for tmp_path, with a
            # traceback through this wrapper (red team 40): what is on disk is still checked.
            with contextlib.suppress(AppError):
                run = sandboxing.current_run()
        guarded = run is not None or (made and anywhere)
        if guarded:
            # Outside any run too, where the app's plugin is switched off; only what is on
            # disk counts there, as in an inactive run.
            # The settings' own roots too, in a run and outside: `pytest -p no:app
            # --basetemp=data` in the project, where `data/` holds every profile's root,
            # emptied a stopped production root, whose stamp below a --basetemp counts for
            # nothing here (another project's tests may stamp roots of their own there), and
            # which an enclosing run protects only where its own settings name it (red team
            # 51).
            roots = {  # the enclosing run's first: a refusal names the run that protects it
                **(enclosing_roots(run) if run is not None else {}),
                **_settings_roots(),
            }
            if given is not None and getattr(self, _FROM_OPTIONS, False):
                # A user's `pytest -p no:app --basetemp=/srv/app/data/sessions` emptied a
                # stopped production root's sessions that the same run with the plugin
                # inactive refuses (red team 40).
                _check_basetemp(Path(given), roots, stamped_inside=False)
            elif given is not None:
                _check_factory_basetemp(Path(given), roots)
            else:
                # No --basetemp: pytest makes pytest-of-<user> in its temporary root, which
                # a test's child given TMPDIR=<production> (or PYTEST_DEBUG_TEMPROOT) put
                # in a stopped production root, writing there (red team 40).
                _check_temproot(roots, enclosing=True)
        basetemp = original(self)
        if guarded and given is None and not getattr(self, _KEEPS, False):
            # Its numbered directory makes an older one due for pytest's clean-up at its end
            # (a live server's root there, which this run's own start found not due, was
            # deleted): keep such a directory, as an inactive run's plugin does.
            _keep_held_directories_after(self, basetemp)
        return basetemp

    getbasetemp._app_guarded = True  # type: ignore[attr-defined]
    getbasetemp._app_switched_off = switched_off  # type: ignore[attr-defined]
    factory.getbasetemp = getbasetemp  # type: ignore[method-assign]
    made_from = factory.from_config.__func__  # type: ignore[attr-defined]

    def from_config(
        cls: type[pytest.TempPathFactory], config: pytest.Config, *, _ispytest: bool = False
    ) -> pytest.TempPathFactory:
        made: pytest.TempPathFactory = made_from(cls, config, _ispytest=_ispytest)
        setattr(made, _FROM_OPTIONS, True)  # its given_basetemp is the run's --basetemp
        return made

    factory.from_config = classmethod(from_config)  # type: ignore[method-assign, assignment]


#: Set on a ``TempPathFactory`` pytest made from a run's options (``from_config``): its given
#: base directory is that run's ``--basetemp``, where one made in code has none.
_FROM_OPTIONS = "_app_from_options"


def _check_factory_basetemp(given: Path, roots: dict[str, Path]) -> None:
    """`_check_basetemp` for a ``TempPathFactory`` made in code with a base directory (a
    conftest's own ``tmp_path_factory`` fixture returning one), which pytest empties as the
    first ``tmp_path`` asks for it, as it does a ``--basetemp``.

    Its refusal read ``refusing --basetemp <dir>`` where no run was given the option, as a
    ``UsageError`` with a traceback through the guard's frames in the test's setup (red team
    54, changed by red team 55): it now names what gave the directory, and fails the test
    alone, without a traceback.
    """
    __tracebackhide__ = True
    try:
        _check_basetemp(given, roots, stamped_inside=False)
    except pytest.UsageError as error:
        refused = str(error)
    else:
        return
    named = (
        f"the base directory {given} of a pytest.TempPathFactory made in code, not from "
        "the run's options (a conftest's own tmp_path_factory fixture, say: no "
        "--basetemp was given)"
    )
    message = (
        refused.replace(f"--basetemp {given}", named)
        .replace("empties the --basetemp", "empties that directory")
        .replace(" before the run", " as the first test asks for tmp_path")
        .replace("Choose a --basetemp", "Give that TempPathFactory a base directory")
        .replace("give another --basetemp", "give it another base directory")
        .replace("Give a --basetemp", "Give it a base directory")
        .replace("Choose another --basetemp", "Give it another base directory")
    )
    message = message.replace(
        "or omit it", "or return the run's own tmp_path_factory fixture instead"
    )
    pytest.fail(message, pytrace=False)


def register(
    sandbox: Path,
    protected: list[sandboxing.Protected] | tuple[sandboxing.Protected, ...],
    *,
    replacing: sandboxing.Run | None = None,
    scratch: str = "",
    enclosing_joined: bool = False,
) -> sandboxing.Run:
    """`app.sandbox.register`, refusing the run, with the fix, where the registry cannot
    take its entry: running on would leave every process a test starts with a hand-built
    environment (or after the run) outside the run, silently."""
    __tracebackhide__ = True
    _guard_basetemps_in_this_process()
    try:
        return sandboxing.register(
            sandbox,
            protected,
            replacing=replacing,
            scratch=scratch,
            enclosing_joined=enclosing_joined,
        )
    except OSError as error:
        tmp = sandboxing.RUNS_DIR.parent
        if error.strerror is None:  # the registry's own refusal (another user's directory)
            why, fix = str(error), ""
        else:
            # A name made relative to the registry's descriptor (`dir_fd`): said by its path.
            written = sandboxing.RUNS_DIR / os.fsdecode(error.filename or "")
            why = f"{error.strerror}, writing {written}"
            default = f"Make {sandboxing.RUNS_DIR} writable by this user and run again"
            fixes = _REGISTRY_FIXES.get(error.errno or 0, default)
            if error.errno == errno.ENOSPC and out_of_inodes(written):
                fixes = _NO_INODES_FIX
            fix = ". " + fixes.format(tmp=tmp)
        raise usage_error(
            f"app: refusing to run: the test run cannot be registered in {sandboxing.RUNS_DIR} "
            f"({why}); without its entry there, a process its tests start with a hand-built "
            f"environment could not be told apart from a production shell{fix}"
        ) from None


def hold_session_root(root: Path, sandbox: Path) -> RootLock:
    """Hold the session's testing root for the whole run, as a server holds its own."""
    __tracebackhide__ = True
    from app.errors import DataRootInUseError
    from app.lock import RootLock

    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A root inside the run's sandbox is thrown away with it: nothing reads its holder after
    # a power loss, so its two fsyncs (up to 11 ms each on a busy disk) buy nothing. The
    # flock, which is what other processes check, does not depend on them; it is taken
    # without importing filelock there (see `app.lock._SandboxFlock`).
    own = root.is_relative_to(sandbox)
    try:
        lock = RootLock(root, kind="tests", profile="testing", durable=not own, own_sandbox=own)
        return lock.acquire("run the tests on it")
    except DataRootInUseError as error:
        raise usage_error(
            f"app: the testing data root is held by a live process: {error}"
        ) from None
