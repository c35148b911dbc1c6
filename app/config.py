"""Configuration profiles: select strictly, resolve every data root, check them, freeze.

`load` reads the files of an explicit settings directory on every call and returns a new
frozen `Config`. Nothing in this module reads settings at import time, and there is no shared
settings object to patch: the incident this project exists for began with a second copy of
such a singleton. (What dynaconf makes of the files' bytes is memoised, see `_file_values`:
values only, copied out, never for files that use dynaconf's ``@`` syntax.)

Source precedence, lowest to highest (written once, here; the docs quote it):

1. the built-in default of a key (only for keys that have one);
2. ``settings.toml``: ``[default]``, then the profile's own section, then ``[global]``;
3. ``settings.local.toml`` (same sections), if present;
4. ``.secrets.toml``, then ``.secrets.local.toml`` (same sections), if present;
5. ``APP_<KEY>`` environment variables, for the selected profile only.

Under pytest (while `SANDBOX_ENV` is set) the local files are not read, only ``testing`` (or a
profile a test opted into) may be loaded, and every data root is mapped into the sandbox.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from app import sandbox as sandboxing
from app.errors import (
    ConfigError,
    ConfigProblems,
    DataRootOverlapError,
    DynaconfSwitchError,
    InvalidSettingError,
    SandboxViolationError,
    SettingsDirEmptyError,
    SettingsNotFoundError,
    SettingsSyntaxError,
    UnknownProfileError,
)

PROFILE_ENV = "ENV_FOR_DYNACONF"
SETTINGS_DIR_ENV = "APP_SETTINGS_DIR"
ENV_PREFIX = "APP"
DEFAULT_PROFILE = "development"
SANDBOX_ENV = sandboxing.SANDBOX_ENV
ALLOW_PROFILES_ENV = sandboxing.ALLOW_PROFILES_ENV

SETTINGS_FILE = "settings.toml"
SECRETS_FILE = ".secrets.toml"
LOCAL_FILES = ("settings.local.toml", ".secrets.local.toml")
NOT_PROFILES = frozenset({"default", "global", "dynaconf"})
_META_ENV = frozenset({SETTINGS_DIR_ENV})  # APP_ variables that are not settings


# --- the schema ------------------------------------------------------------------------

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_REQUIRED = object()


def _int_in(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number between {low} and {high}"
        if not low <= value <= high:
            return f"must be between {low} and {high}"
        return None

    return check


def _positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return "must be a number of seconds greater than 0"
    return None


def _non_empty_str(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _log_level(value: Any) -> str | None:
    if isinstance(value, str) and value.lower() in _LOG_LEVELS:
        return None
    return f"must be one of {', '.join(_LOG_LEVELS)}"


def _token(value: Any) -> str | None:
    if value is None:
        return None
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


# The records below are NamedTuples, not frozen dataclasses: as immutable, and this module is
# imported on every pytest start and `app` command, where creating a dataclass costs about
# half a millisecond (bench/plugin_startup.py). `Config`, the public value, stays a dataclass.
class Key(NamedTuple):
    """One configuration key: its check, built-in default and documentation."""

    name: str
    check: Callable[[Any], str | None]
    default: Any
    doc: str
    secret: bool = False
    #: Text keys take an environment variable's value as it is: ``APP_API_TOKEN=0123...``
    #: is a token, not a number. Other keys are parsed as TOML, the way dynaconf does.
    text: bool = False

    @property
    def env(self) -> str:
        """The environment variable that overrides this key for the selected profile."""
        return f"{ENV_PREFIX}_{self.name.upper()}"


KEYS: Mapping[str, Key] = MappingProxyType(
    {
        key.name: key
        for key in (
            Key(
                "data_root",
                _non_empty_str,
                _REQUIRED,
                "directory that holds the profile's data",
                text=True,
            ),
            Key("host", _non_empty_str, "127.0.0.1", "address the server listens on", text=True),
            Key("port", _int_in(1, 65535), 8000, "TCP port the server listens on"),
            Key(
                "api_token",
                _token,
                None,
                "bearer token clients must send",
                secret=True,
                text=True,
            ),
            Key("max_upload_bytes", _int_in(1, 2**50), 100 * 2**20, "largest accepted upload"),
            Key("page_size", _int_in(1, 1000), 50, "default page size of GET /sessions"),
            Key(
                "page_max_bytes",
                _int_in(1024, 2**30),
                2**20,
                "most bytes of sessions in one page of GET /sessions",
            ),
            Key(
                "max_header_bytes",
                _int_in(1024, 2**20),
                32 * 1024,
                "largest request line and headers the server reads (431 beyond)",
            ),
            Key(
                "request_idle_seconds",
                _positive_number,
                30.0,
                "longest silence while a request's head or body arrives (408 beyond)",
            ),
            Key(
                "request_seconds",
                _positive_number,
                600.0,
                "longest a request body may take to arrive, once its head came (408 beyond)",
            ),
            Key(
                "max_uploads_in_flight",
                _int_in(1, 100_000),
                32,
                "most uploads received at once (503 with Retry-After beyond)",
            ),
            Key(
                "max_files_per_session",
                _int_in(1, 10_000_000),
                10_000,
                "most files one session holds (a new name beyond it is 409 too_many_files)",
            ),
            Key(
                "lock_check_seconds", _positive_number, 5.0, "how often a server re-checks its lock"
            ),
            Key("log_level", _log_level, "info", "server log level", text=True),
            Key("protected", _bool, False, "removing data needs an explicit confirmation"),
        )
    }
)
_MIN_PRODUCTION_TOKEN = 16


# --- the value object ------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The resolved configuration of one profile. Immutable; pass it to what needs it.

    Attributes:
        profile: the selected profile, lower case.
        profile_source: where the profile name came from (``--profile``, ``ENV_FOR_DYNACONF``,
            ``default``, or ``load(profile=...)``).
        data_root: the absolute, symlink-resolved data root of this profile.
        sources: for every key, where its value came from.
        roots: every known profile's data root (the files' values for the other profiles).
        sandbox: the pytest sandbox this configuration was confined to, if any.
        warnings: things worth saying that do not stop the app (unknown ``APP_*`` variables).
    """

    profile: str
    profile_source: str
    data_root: Path
    host: str
    port: int
    api_token: str | None = field(repr=False)
    max_upload_bytes: int
    page_size: int
    lock_check_seconds: float
    log_level: str
    protected: bool
    page_max_bytes: int
    max_header_bytes: int
    request_idle_seconds: float
    request_seconds: float
    max_uploads_in_flight: int
    max_files_per_session: int
    settings_dir: Path
    sources: Mapping[str, str]
    roots: Mapping[str, Path]
    sandbox: Path | None = None
    warnings: tuple[str, ...] = ()

    def values(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        """The configured values by key, secrets masked unless asked otherwise."""
        out: dict[str, Any] = {}
        for name, key in KEYS.items():
            value = getattr(self, name)
            if key.secret and mask_secrets:
                value = mask(value)
            out[name] = str(value) if isinstance(value, Path) else value
        return out


def mask(secret: str | None) -> str:
    """How a secret is shown: whether it is set and how long it is, never its characters."""
    return "(not set)" if secret is None else f"****** (set, {len(secret)} characters)"


# --- the sandbox (layer 3; the rules live in app.sandbox, so every copy of the code obeys them)


def active_sandbox(environ: Mapping[str, str] | None = None) -> Path | None:
    """The sandbox of the pytest run this process belongs to, or None outside tests.

    Raises:
        SandboxViolationError: only the environment names a sandbox, and it is not one.
    """
    run = sandboxing.current_run(environ)
    return run.sandbox if run is not None else None


sandbox_root = sandboxing.sandbox_root


# --- reading the files ------------------------------------------------------------------


def settings_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The settings directory: ``$APP_SETTINGS_DIR``, else the project that holds this package.

    No upward search and no dependence on the current directory.

    Raises:
        SettingsNotFoundError: naming the directory it looked in.
    """
    env = os.environ if environ is None else environ
    raw = env.get(SETTINGS_DIR_ENV)
    if raw is not None and not raw.strip():
        raise SettingsDirEmptyError(SETTINGS_DIR_ENV, Path(__file__).resolve().parent.parent)
    if raw is not None:
        where = Path(raw).expanduser()
        if not where.is_absolute():
            where = Path.cwd() / where  # an explicit relative path given by the user
        reason = f"from {SETTINGS_DIR_ENV}"
    else:
        where = Path(__file__).resolve().parent.parent
        reason = f"the project directory of the app package; {SETTINGS_DIR_ENV} is not set"
    where = where.resolve()
    if not (where / SETTINGS_FILE).is_file():
        raise SettingsNotFoundError(where, reason)
    return where


def _toml_line(error: tomllib.TOMLDecodeError) -> tuple[int | None, str]:
    lineno = getattr(error, "lineno", None)  # Python 3.14+
    message = getattr(error, "msg", None) or str(error)
    found = re.search(r"\(at line (\d+), column \d+\)", str(error))
    if lineno is None and found:
        lineno = int(found.group(1))
    return lineno, re.sub(r"\s*\(at line \d+, column \d+\)", "", message)


# Parsed TOML by the file's bytes: every `load` reads the files, but the same bytes need not be
# parsed again (a fifth of what `load` cost once dynaconf's reading was memoised, issue 11).
_TOML_MEMO: dict[bytes, dict[str, Any]] = {}
_TOML_MEMO_SIZE = 16
_MEMO_LOCK = threading.Lock()  # loads may run on several threads (a server's, tests')


def _read_toml(path: Path) -> tuple[bytes, dict[str, Any]]:
    raw = path.read_bytes()
    parsed = _TOML_MEMO.get(raw)
    if parsed is None:
        try:
            parsed = tomllib.loads(raw.decode())
        except tomllib.TOMLDecodeError as error:
            line, problem = _toml_line(error)
            raise SettingsSyntaxError(path, line, problem) from None
        with _MEMO_LOCK:
            while len(_TOML_MEMO) >= _TOML_MEMO_SIZE:
                del _TOML_MEMO[next(iter(_TOML_MEMO))]
            _TOML_MEMO[raw] = parsed
    return raw, copy.deepcopy(parsed)  # callers get tables of their own


class _Files(NamedTuple):
    directory: Path
    paths: tuple[Path, ...]  # what dynaconf loads, in order
    skipped: tuple[Path, ...]  # local files present but not read (sandbox)
    data: Mapping[Path, dict[str, Any]]
    profiles: tuple[str, ...]
    #: Everything dynaconf's reading of these files depends on, or None when that is more
    #: than their bytes (see `_content_key`): the key of `_file_values`' memo.
    content_key: tuple[Any, ...] | None = None


def _dynaconf_syntax(value: Any) -> bool:
    """Whether a parsed TOML value uses dynaconf's own syntax anywhere in it.

    ``@``-strings are evaluated by dynaconf (``@format {env[HOME]}`` reads the environment,
    ``@read_file`` another file, ``@jinja`` whatever its template does) and ``dynaconf_*``
    keys (``dynaconf_include``, ``dynaconf_merge``) pull in or merge other sources.
    """
    if isinstance(value, str):
        return value.lstrip().startswith("@")
    if isinstance(value, dict):
        return any(
            str(key).lower().startswith("dynaconf") or _dynaconf_syntax(item)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return any(_dynaconf_syntax(item) for item in value)
    return False


def _content_key(
    directory: Path,
    raw: Mapping[Path, bytes],
    data: Mapping[Path, dict[str, Any]],
    skipped: tuple[Path, ...],
) -> tuple[Any, ...] | None:
    """What dynaconf's reading of plain files depends on: their paths and bytes, the files
    it skips, and its own ``*_FOR_DYNACONF``/``DYNACONF_*`` variables (which it reads from
    ``os.environ`` whatever `environ` says). None when a file uses dynaconf's syntax: its
    values may depend on anything, so they are read afresh every time."""
    if any(_dynaconf_syntax(body) for body in data.values()):
        return None
    switches = tuple(
        sorted(
            (name, os.environ[name])
            for name in os.environ
            if name.endswith("_FOR_DYNACONF") or name.startswith("DYNACONF_")
        )
    )
    files = tuple((str(path), content) for path, content in raw.items())
    return (str(directory), files, tuple(str(path) for path in skipped), switches)


def _read_files(environ: Mapping[str, str], sandboxed: bool) -> _Files:
    directory = settings_dir(environ)
    settings = directory / SETTINGS_FILE
    candidates = [settings, directory / LOCAL_FILES[0], directory / SECRETS_FILE]
    candidates.append(directory / LOCAL_FILES[1])
    present = [path for path in candidates if path.is_file()]
    skipped = tuple(p for p in present if p.name in LOCAL_FILES) if sandboxed else ()
    paths = tuple(p for p in present if p not in skipped)
    raw: dict[Path, bytes] = {}
    data: dict[Path, dict[str, Any]] = {}
    for path in paths:
        raw[path], data[path] = _read_toml(path)
    profiles = tuple(
        name.lower()
        for name, section in data[settings].items()
        if isinstance(section, dict) and name.lower() not in NOT_PROFILES
    )
    key = _content_key(directory, raw, data, skipped)
    return _Files(directory, paths, skipped, MappingProxyType(data), profiles, key)


def _file_problems(files: _Files) -> Iterator[ConfigError]:
    """Keys the app does not know, values outside any section, secrets-only profiles."""
    for path, data in files.data.items():
        for section, body in data.items():
            if not isinstance(body, dict):
                yield InvalidSettingError(
                    None,
                    section,
                    body,
                    "keys must sit in a [section] (a profile, default or global); move it into one",
                    f"{path}",
                )
                continue
            name = section.lower()
            if name not in NOT_PROFILES and name not in files.profiles:
                yield UnknownProfileError(name, files.profiles, f"section [{section}] of {path}")
            for key, value in body.items():
                if key.lower() not in KEYS:
                    near = difflib.get_close_matches(key.lower(), list(KEYS), n=1)
                    hint = (
                        f"did you mean {near[0]!r}?" if near else f"known keys: {', '.join(KEYS)}"
                    )
                    yield InvalidSettingError(
                        name, key, value, f"unknown key; {hint}", f"{path} [{section}]"
                    )


# --- selecting the profile ---------------------------------------------------------------


def _select(
    profile: str | None, source: str, environ: Mapping[str, str], known: tuple[str, ...]
) -> tuple[str, str]:
    if profile is not None:
        name = profile
    elif PROFILE_ENV in environ:
        name, source = environ[PROFILE_ENV], PROFILE_ENV
    else:
        name, source = DEFAULT_PROFILE, "default"
    normalised = name.strip().lower()
    if not normalised or normalised not in known:
        raise UnknownProfileError(name, known, source)
    return normalised, source


# Switches dynaconf honours that do not end in _FOR_DYNACONF: old spellings it still maps
# (dynaconf.utils.RENAMED_VARS; DYNACONF_SILENT_ERRORS=false made it crash on a missing
# section). The app loads with environments=False, so no env switcher applies. SETTINGS_MODULE and
# PROJECT_ROOT are left alone: common names elsewhere, and no effect on absolute files.
_OTHER_SWITCHES = frozenset(
    {
        "DYNACONF_NAMESPACE",
        "DYNACONF_SETTINGS_MODULE",
        "DYNACONF_SETTINGS",
        "DYNACONF_SILENT_ERRORS",
        "DYNACONF_ALWAYS_FRESH_VARS",
    }
)


def dynaconf_switches(environ: Mapping[str, str] | None = None) -> list[str]:
    """Variables that change how dynaconf loads, which it reads from ``os.environ`` itself.

    They beat the explicit arguments this module passes (``FORCE_ENV_FOR_DYNACONF`` picks
    the profile, ``INCLUDES_FOR_DYNACONF`` adds files), so the app refuses to load with any.
    """
    names = {*os.environ, *(environ or {})}
    return sorted(
        k
        for k in names
        if (k.endswith("_FOR_DYNACONF") and k != PROFILE_ENV) or k in _OTHER_SWITCHES
    )


def _dynaconf_key_problems(environ: Mapping[str, str]) -> Iterator[ConfigError]:
    for name in sorted(environ):
        if name.startswith("DYNACONF_") and name[len("DYNACONF_") :].lower() in KEYS:
            key = KEYS[name[len("DYNACONF_") :].lower()]
            yield InvalidSettingError(
                None,
                name,
                environ[name],
                f"dynaconf would apply it to every profile; this app "
                f"reads {key.env} for the selected profile only. Rename it to {key.env} "
                f"or unset {name}",
                "the environment",
            )


# --- one profile's values ---------------------------------------------------------------


class Resolved(NamedTuple):
    """One profile as the files (and, if selected, the environment) configure it."""

    profile: str
    values: Mapping[str, Any]
    sources: Mapping[str, str]
    problems: tuple[ConfigError, ...]
    #: Values the files leave to the environment (``@format {env[X]}``) that it does not
    #: provide: they stop this profile only, when it is selected.
    deferred: tuple[ConfigError, ...] = ()

    @property
    def data_root(self) -> Path | None:
        root = self.values.get("data_root")
        return root if isinstance(root, Path) else None


def _display(path: Path, directory: Path) -> str:
    return path.name if path.parent == directory else str(path)


# `_file_values` by `_Files.content_key`: a few entries (one per settings directory and
# sandboxing a process reads), so that `load` in every test (the `app_config` fixture) does
# not pay for a dynaconf load of files it has read before. Only file values are kept; every
# `load` still reads the files, applies the environment and builds a new frozen `Config`.
_FILE_VALUES_MEMO: dict[tuple[Any, ...], dict[str, dict[str, tuple[Any, str]]]] = {}
_FILE_VALUES_MEMO_SIZE = 8


def _fresh(values: dict[str, dict[str, tuple[Any, str]]]) -> dict[str, dict[str, tuple[Any, str]]]:
    """A copy that shares nothing mutable with the memo (TOML values can be lists, tables)."""
    scalar = (str, int, float, bool, type(None))
    return {
        profile: {
            key: (value if isinstance(value, scalar) else copy.deepcopy(value), source)
            for key, (value, source) in by_key.items()
        }
        for profile, by_key in values.items()
    }


def _file_values(files: _Files) -> dict[str, dict[str, tuple[Any, str]]]:
    """Every profile's values from the files, with their sources, from ONE dynaconf load.

    Memoised on everything the result depends on (`_Files.content_key`): the files' bytes,
    not their times, so a file rewritten within one clock tick is read again.
    """
    if files.content_key is None:
        return _dynaconf_file_values(files)
    cached = _FILE_VALUES_MEMO.get(files.content_key)
    if cached is None:
        cached = _fresh(_dynaconf_file_values(files))
        with _MEMO_LOCK:
            while len(_FILE_VALUES_MEMO) >= _FILE_VALUES_MEMO_SIZE:
                del _FILE_VALUES_MEMO[next(iter(_FILE_VALUES_MEMO))]
            _FILE_VALUES_MEMO[files.content_key] = cached
    return _fresh(cached)


def _dynaconf_file_values(files: _Files) -> dict[str, dict[str, tuple[Any, str]]]:
    """`_file_values` without the memo.

    dynaconf loads every file with ``environments=False`` and sections merged, so every
    section stays visible, parsed, cast and formatted as dynaconf does it (``@int``,
    ``@format``...). Which section of which file wins a key follows dynaconf's own layering
    for ``environments=True``: file after file, ``[default]``, the profile, ``[global]``,
    read from the files' own structure (dynaconf's history records merged sections, which
    would credit a key to the last file that touched its section). The winning layer's value
    is that section's merged value, since any later file that set the same key there would
    itself be a later layer. One load for every profile, instead of one each, keeps `load`
    (which checks every profile's root) close to the cost of a single dynaconf load.
    """
    from dynaconf import Dynaconf  # imported here: `import app.config` stays cheap

    # envvar_prefix=None: dynaconf's env loader reads os.environ itself, which would ignore
    # the `environ` the caller passed (load(environ=...), the pytest plugin's live_server).
    # The overrides are applied by `_resolve_profile`, parsed the way dynaconf parses them.
    settings = Dynaconf(
        settings_files=[str(path) for path in files.paths],
        skip_files=[str(path) for path in files.skipped],
        environments=False,
        merge_enabled=True,
        envvar_prefix=None,
        load_dotenv=False,
    )
    evaluated: dict[tuple[str, str], Any] = {}

    def value_of(section: str, key: str, raw: Any) -> Any:
        # One key at a time: a value that cannot be resolved here (`@format {env[X]}` with X
        # unset) is a problem of the profiles that use it, not of every profile.
        if (section, key) not in evaluated:
            try:
                evaluated[section, key] = settings.get(f"{section}.{key}")
            except Exception as error:  # any of dynaconf's formatters and casts
                evaluated[section, key] = Unresolved(raw, f"{type(error).__name__}: {error}")
        return evaluated[section, key]

    out: dict[str, dict[str, tuple[Any, str]]] = {name: {} for name in files.profiles}
    for path, data in files.data.items():
        where = _display(path, files.directory)
        sections = {name.lower(): body for name, body in data.items() if isinstance(body, dict)}
        for profile, values in out.items():
            for section in ("default", profile, "global"):
                for key, raw in sections.get(section, {}).items():
                    if key.lower() in KEYS:
                        value = value_of(section, key, raw)
                        values[key.lower()] = (value, f"{where} [{section}]")
    return out


class Unresolved(NamedTuple):  # not a dataclass: cheaper to create at import
    """A value from the files that dynaconf could not resolve (its error kept for the message)."""

    raw: Any
    error: str


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``APP_<KEY>`` variables in `environ`, TOML-parsed as dynaconf parses them."""
    from dynaconf.utils.parse_conf import boolean_fix, parse_conf_data

    return {
        name: environ[key.env]
        if key.text
        else parse_conf_data(boolean_fix(environ[key.env]), tomlfy=True, box_settings={})
        for name, key in KEYS.items()
        if key.env in environ
    }


def _resolve_profile(
    files: _Files,
    profile: str,
    from_files: Mapping[str, tuple[Any, str]],
    environ: Mapping[str, str] | None,
) -> Resolved:
    """One profile's typed values and sources; `environ` given means APP_* variables apply."""
    loaded = {name: value for name, (value, _) in from_files.items()}
    sources = {name: source for name, (_, source) in from_files.items()}
    if environ is not None:
        for name, value in _env_overrides(environ).items():
            loaded[name], sources[name] = value, f"environment {KEYS[name].env}"
    values: dict[str, Any] = {}
    problems: list[ConfigError] = []
    deferred: list[ConfigError] = []
    for name, key in KEYS.items():
        if isinstance(loaded.get(name), Unresolved):
            unresolved = loaded[name]
            deferred.append(
                InvalidSettingError(
                    profile,
                    name,
                    unresolved.raw,
                    f"cannot be resolved ({unresolved.error}); set what it reads (for "
                    f"`@format {{env[NAME]}}`, the variable NAME) in the environment of the "
                    f"commands that use profile {profile!r}, or set {key.env}",
                    sources[name],
                )
            )
            continue
        if name in loaded:
            values[name] = loaded[name]
        elif key.default is _REQUIRED:
            problems.append(
                InvalidSettingError(
                    profile,
                    name,
                    None,
                    f"is required; set it in [{profile}] of settings.toml or with {key.env}",
                    "nowhere",
                )
            )
            continue
        else:
            values[name] = key.default
            sources[name] = "built-in default"
        problem = key.check(values[name])
        if problem is not None:
            problems.append(
                InvalidSettingError(profile, name, values[name], problem, sources[name])
            )
            values.pop(name)
    if isinstance(values.get("log_level"), str):
        values["log_level"] = values["log_level"].lower()
    for seconds in ("lock_check_seconds", "request_idle_seconds", "request_seconds"):
        if seconds in values:
            values[seconds] = float(values[seconds])
    if "data_root" in values:
        values["data_root"] = _absolute_root(values["data_root"], files.directory)
    return Resolved(
        profile,
        MappingProxyType(values),
        MappingProxyType(sources),
        tuple(problems),
        tuple(deferred),
    )


def _absolute_root(value: str, directory: Path) -> Path:
    """A configured root made absolute: ``~`` expanded, relative to the settings directory
    (never the current one), symlinks resolved."""
    raw = Path(value).expanduser()
    return (raw if raw.is_absolute() else directory / raw).resolve()


def overlaps(roots: Mapping[str, tuple[Path, str]]) -> Iterator[DataRootOverlapError]:
    """Every pair of profiles whose roots are equal or nested.

    Args:
        roots: ``{profile: (root, where the root came from)}``.
    """
    names = list(roots)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            (a, a_source), (b, b_source) = roots[first], roots[second]
            if a.is_relative_to(b) or b.is_relative_to(a):
                yield DataRootOverlapError(first, a, a_source, second, b, b_source)


def _overlaps(resolved: Mapping[str, Resolved]) -> Iterator[ConfigError]:
    yield from overlaps(
        {
            name: (r.data_root, r.sources["data_root"])
            for name, r in resolved.items()
            if r.data_root is not None
        }
    )


def _runtime_problems(selected: Resolved, others: Mapping[str, Resolved]) -> Iterator[ConfigError]:
    """What the selected profile needs to actually run, beyond well-formed values."""
    values, sources = selected.values, selected.sources
    if selected.profile != "production":
        return
    token = values.get("api_token")
    if token is None:
        yield InvalidSettingError(
            "production",
            "api_token",
            None,
            "production requires an API token; set "
            "APP_API_TOKEN in the service's environment (or api_token in a secrets file that "
            "is not committed)",
            sources.get("api_token", "built-in default"),
        )
        return
    problem = _weak_token(token, [r.values.get("api_token") for r in others.values()])
    if problem is not None:
        yield InvalidSettingError(
            "production", "api_token", mask(token), problem, sources["api_token"]
        )
    if values.get("protected") is False:
        yield InvalidSettingError(
            "production",
            "protected",
            False,
            "production is always protected: commands that "
            "remove its data need a confirmation option",
            sources["protected"],
        )


# What a production token must resist: about 10^20 guesses (66 bits), by zxcvbn's estimate,
# which sees through repeats, sequences, keyboard walks, words and the other profiles' tokens.
_MIN_TOKEN_GUESSES_LOG10 = 20
_GENERATE_HINT = (
    "set a real one with APP_API_TOKEN, generated with "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)


def _weak_token(token: str, placeholders: list[str | None]) -> str | None:
    """Why ``token`` must not guard production, or ``None`` if it may."""
    if token != token.strip():
        # The server would compare the padded value and nobody could authenticate (#9).
        return (
            "has leading or trailing whitespace (a newline from `echo` or a secrets file?); "
            "remove it where the token is set: clients send it without, so nobody could "
            "authenticate"
        )
    known = [p for p in placeholders if p]
    if token.casefold() in {p.strip().casefold() for p in known}:
        return f"is the token of another profile (a committed placeholder); {_GENERATE_HINT}"
    if len(token) < _MIN_PRODUCTION_TOKEN:
        return f"is shorter than {_MIN_PRODUCTION_TOKEN} characters; {_GENERATE_HINT}"
    from zxcvbn import zxcvbn

    # zxcvbn refuses long inputs (its cost grows with length); a strong prefix is enough.
    guesses: float = zxcvbn(token[:64], user_inputs=known)["guesses_log10"]
    if guesses < _MIN_TOKEN_GUESSES_LOG10:
        return (
            f"is too easy to guess (about 10^{guesses:.0f} guesses; at least "
            f"10^{_MIN_TOKEN_GUESSES_LOG10} are needed: no repeats, sequences, words or "
            f"placeholders); {_GENERATE_HINT}"
        )
    return None


def _env_warnings(environ: Mapping[str, str]) -> tuple[str, ...]:
    out = []
    for name in sorted(environ):
        if name.startswith(f"{ENV_PREFIX}_") and name not in _META_ENV:
            key = name[len(ENV_PREFIX) + 1 :].lower()
            if key not in KEYS:
                near = difflib.get_close_matches(key, list(KEYS), n=1)
                hint = f" (did you mean {KEYS[near[0]].env}?)" if near else ""
                out.append(f"environment variable {name} is not an app setting; ignored{hint}")
    return tuple(out)


# --- the sandbox rules (layer 3) ----------------------------------------------------------


def _confine(resolved: Resolved, sandbox: Path) -> tuple[Resolved, ConfigError | None]:
    """Map a profile's root into the sandbox, unless it already lies inside.

    A root from the settings files moves to ``<sandbox>/data/<profile>``; a root from
    ``APP_DATA_ROOT`` outside the sandbox is refused instead, because a test set it on purpose
    and deserves to hear why it does not apply.
    """
    root = resolved.data_root
    if root is None or root.is_relative_to(sandbox):
        return resolved, None
    source = resolved.sources["data_root"]
    if source.startswith("environment"):
        return resolved, SandboxViolationError(
            f"data root {root} from {source}, which lies outside the test sandbox",
            sandbox,
            "Point APP_DATA_ROOT under tmp_path, or use the app_config fixture",
        )
    values = {**resolved.values, "data_root": sandbox_root(sandbox, resolved.profile)}
    sources = {**resolved.sources, "data_root": f"pytest sandbox (configured: {root}, {source})"}
    return Resolved(
        resolved.profile, MappingProxyType(values), MappingProxyType(sources), resolved.problems
    ), None


def _allowed(selected: Resolved, where: sandboxing.Context) -> None:
    """Under pytest, only the testing profile, or one a test opted into, may be loaded."""
    profile = selected.profile
    if where.bare is not None:
        without = f"while pytest runs without the app's sandbox ({where.bare})"
        if profile != "testing":
            raise SandboxViolationError(
                f"loading profile {profile!r} {without}",
                None,
                f"Run the tests with the app's pytest plugin: {sandboxing.why_no_plugin()}",
            )
        source = selected.sources.get("data_root", "")
        if source.startswith("environment"):
            # Without the plugin nothing neutralised the shell: its APP_DATA_ROOT may well be
            # production's (a conftest that forces ENV_FOR_DYNACONF=testing, as dynaconf's
            # docs suggest, does not change that).
            raise SandboxViolationError(
                f"data root {selected.data_root} from {source} {without}",
                None,
                "Run the tests with the app's pytest plugin, which neutralises the shell's "
                f"APP_DATA_ROOT ({sandboxing.why_no_plugin()}), or set data_root in [testing] "
                "of settings.toml and unset APP_DATA_ROOT",
            )
    run = where.run
    if run is None:
        return
    if profile != "testing" and profile not in sandboxing.allowed_profiles(run):
        raise SandboxViolationError(
            f"loading profile {profile!r}; tests run on the 'testing' profile (this process "
            f"belongs to the test run through {run.recognised_by})",
            run.sandbox,
            f"To test another profile, mark the test @pytest.mark.app_profile({profile!r}); "
            "its data root is then mapped into the sandbox",
        )


# --- where the roots are, cheaply (the pytest plugin's start-up) -------------------------------


def _plain_roots(files: _Files) -> dict[str, tuple[str, str]] | None:
    """Every profile's configured ``data_root`` straight from the parsed TOML, or None.

    None when any file writes a ``data_root`` in dynaconf's own syntax (``@format``...) or
    merges with ``dynaconf_merge``: then only dynaconf can say what it means. Otherwise this
    is exactly dynaconf's layering (file after file: ``[default]``, profile, ``[global]``;
    the test suite compares the two), without importing dynaconf, which costs more than
    everything else the pytest plugin does at start-up.
    """
    found: dict[str, tuple[str, str]] = {}
    for path, data in files.data.items():
        sections = {
            name.lower(): {key.lower(): value for key, value in body.items()}
            for name, body in data.items()
            if isinstance(body, dict)
        }
        for body in sections.values():
            value = body.get("data_root")
            if "dynaconf_merge" in body or (value is not None and not isinstance(value, str)):
                return None
            if isinstance(value, str) and value.lstrip().startswith("@"):
                return None
        for profile in files.profiles:
            for section in ("default", profile, "global"):
                value = sections.get(section, {}).get("data_root")
                if value is not None:
                    found[profile] = (value, f"{_display(path, files.directory)} [{section}]")
    return found


def configured_roots(
    profile: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, tuple[Path, str]]:
    """Every profile's data root as configured, with its source: no validation, no sandbox.

    What the pytest plugin needs before it neutralises anything: where would the shell put
    each profile's data? `profile` names the profile the environment selects (its
    ``APP_DATA_ROOT`` applies to it alone); None applies no override. Roots that are not set
    are left out (`load` reports those).

    Raises:
        ConfigError: a dynaconf switch, no settings directory, a file that is not TOML, an
            unknown `profile`.
    """
    env = os.environ if environ is None else environ
    switches = dynaconf_switches(env)
    if switches:
        raise DynaconfSwitchError(switches)
    files = _read_files(env, sandboxed=False)
    plain = _plain_roots(files)
    if plain is None:
        plain = {
            name: (values["data_root"][0], values["data_root"][1])
            for name, values in _file_values(files).items()
            if "data_root" in values and not isinstance(values["data_root"][0], Unresolved)
        }
    roots = {
        name: (_absolute_root(value, files.directory), source)
        for name, (value, source) in plain.items()
        if isinstance(value, str) and value.strip()
    }
    if profile is not None:
        selected, _ = _select(profile, PROFILE_ENV, env, files.profiles)
        override = env.get(KEYS["data_root"].env, "")
        if override.strip():
            roots[selected] = (
                _absolute_root(override, files.directory),
                f"environment {KEYS['data_root'].env}",
            )
    return roots


# --- public entry points ---------------------------------------------------------------


class LoadRecord(NamedTuple):
    """A `load` made in this process outside any sandbox: who asked, and what they got."""

    profile: str
    data_root: Path
    caller: str
    sandbox: Path | None = None


# Not settings, and not read by anything that decides a value: a diagnostic record of the
# loads made without a sandbox, so the pytest plugin can name a load that ran before it did.
_UNSANDBOXED_LOADS: list[LoadRecord] = []


def loaded() -> tuple[LoadRecord, ...]:
    """The loads this process made before its own pytest run marked it (at most 8)."""
    return tuple(_UNSANDBOXED_LOADS)


def _record(config: Config) -> None:
    # Before the plugin marked this process, a load may still be confined by an enclosing
    # run (a pytest started by a test), but not by this process's own run: record it too.
    if not sandboxing.marked() and len(_UNSANDBOXED_LOADS) < 8:
        frame = sys._getframe(2)
        caller = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        _UNSANDBOXED_LOADS.append(LoadRecord(config.profile, config.data_root, caller))


class Report(NamedTuple):
    """Everything known about every profile: what `app config --all` and `app doctor` show.

    Under pytest every root is already mapped into the sandbox; the overlap checks ran on the
    roots the files configure.
    """

    selected: str
    profile_source: str
    settings_dir: Path
    files: tuple[Path, ...]
    skipped_files: tuple[Path, ...]
    profiles: Mapping[str, Resolved]
    problems: tuple[ConfigError, ...]
    warnings: tuple[str, ...]
    sandbox: Path | None
    #: What only stops serving the selected profile (production's token), not looking at
    #: or maintaining its data root.
    serving_problems: tuple[ConfigError, ...] = ()
    where: sandboxing.Context = sandboxing.OUTSIDE
    #: Other profiles' values that this environment cannot resolve (they would stop those
    #: profiles, not the selected one).
    elsewhere: tuple[ConfigError, ...] = ()

    @property
    def all_problems(self) -> tuple[ConfigError, ...]:
        """Every problem: the selected profile's, serving's, and other profiles' deferred."""
        return self.problems + self.serving_problems + self.elsewhere


def inspect_profiles(
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    profile_source: str = "load(profile=...)",
) -> Report:
    """Resolve every profile and collect every problem instead of stopping at the first.

    The selected profile gets the ``APP_*`` environment variables; the others are what the
    files say. Runtime requirements (production's token) are checked for the selected one.

    Args:
        profile: the profile to select; None selects ``ENV_FOR_DYNACONF``, else development.
        environ: where ``ENV_FOR_DYNACONF``, ``APP_*`` and ``APP_SETTINGS_DIR`` are read
            (defaults to ``os.environ``). The pytest sandbox is always read from
            ``os.environ``: it is a fact about this process, not a configuration value.
        profile_source: how to name an explicit `profile` in messages (``--profile``).

    Raises:
        ConfigError: only for what makes the rest meaningless: a dynaconf switch variable,
            no settings directory, a settings file that is not TOML, an unknown profile.
    """
    env = os.environ if environ is None else environ
    switches = dynaconf_switches(env)
    if switches:  # every profile built with them would be wrong, so stop here
        raise DynaconfSwitchError(switches)
    where = sandboxing.context()
    run = where.run
    sandbox = run.sandbox if run is not None else None
    files = _read_files(env, sandboxed=sandbox is not None)
    selected, source = _select(profile, profile_source, env, files.profiles)
    problems: list[ConfigError] = [*_dynaconf_key_problems(env), *_file_problems(files)]
    from_files = _file_values(files)
    resolved = {
        name: _resolve_profile(files, name, from_files[name], env if name == selected else None)
        for name in files.profiles
    }
    for r in resolved.values():
        problems.extend(r.problems)
    problems.extend(resolved[selected].deferred)
    elsewhere = tuple(p for name, r in resolved.items() if name != selected for p in r.deferred)
    problems.extend(_overlaps(resolved))
    others = {name: r for name, r in resolved.items() if name != selected}
    serving = tuple(_runtime_problems(resolved[selected], others))
    if sandbox is not None:
        for name, r in resolved.items():
            resolved[name], refused = _confine(r, sandbox)
            if refused is not None:
                problems.append(refused)
        # A root from APP_DATA_ROOT inside the sandbox may still contain the mapped ones.
        seen = {problem.message for problem in problems}
        problems.extend(p for p in _overlaps(resolved) if p.message not in seen)
    return Report(
        selected,
        source,
        files.directory,
        files.paths,
        files.skipped,
        MappingProxyType(resolved),
        tuple(problems),
        _env_warnings(env),
        sandbox,
        serving,
        where,
        elsewhere,
    )


def load(
    profile: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    profile_source: str = "load(profile=...)",
    serving: bool = True,
) -> Config:
    """Load, validate and freeze the configuration of one profile.

    Args:
        profile: the profile to load; None selects ``ENV_FOR_DYNACONF``, else ``development``.
            Names are case-insensitive.
        environ: the environment to read settings from (defaults to ``os.environ``). The
            pytest sandbox is always read from ``os.environ``.
        profile_source: how to name an explicit `profile` in messages (``--profile``).
        serving: also require what serving needs (production's API token); commands that
            only look at or maintain a data root pass False.

    Returns:
        A frozen `Config` whose ``data_root`` is absolute and checked against every other
        profile's root.

    Raises:
        UnknownProfileError: the name is not a section of settings.toml.
        SandboxViolationError: under pytest, a profile or root outside the sandbox.
        ConfigError: any other problem; `ConfigProblems` lists several at once.

    Examples:
        >>> from app.config import load
        >>> load().profile  # under pytest the plugin forces the testing profile
        'testing'
    """
    report = inspect_profiles(profile, environ, profile_source=profile_source)
    _allowed(report.profiles[report.selected], report.where)
    problems = report.problems + (report.serving_problems if serving else ())
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigProblems(problems)
    selected = report.profiles[report.selected]
    roots = {name: r.data_root for name, r in report.profiles.items() if r.data_root}
    config = Config(
        profile=report.selected,
        profile_source=report.profile_source,
        settings_dir=report.settings_dir,
        sources=selected.sources,
        roots=MappingProxyType(roots),
        sandbox=report.sandbox,
        warnings=report.warnings,
        **selected.values,
    )
    _record(config)
    return config
