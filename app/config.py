"""Configuration profiles: select strictly, resolve every data root, check them, freeze.

`load` reads the files of an explicit settings directory on every call and returns a new
frozen `Config`. Nothing in this module reads settings at import time, and there is no shared
settings object to patch: the incident this project exists for began with a second copy of
such a singleton.

Source precedence, lowest to highest (written once, here; the docs quote it):

1. the built-in default of a key (only for keys that have one);
2. ``settings.toml``: ``[default]``, then the profile's own section, then ``[global]``;
3. ``settings.local.toml`` (same sections), if present;
4. ``.secrets.toml``, then ``.secrets.local.toml`` (same sections), if present;
5. ``APP_<KEY>`` environment variables, for the selected profile only.

Steps 2 to 4 are `app.config_files.layers`. Under pytest the local files are not read, and
`app.sandbox` decides which profiles may be loaded and maps every data root into the sandbox.

The schema is declared once, as the fields of `Config`: each key's annotation is its type, and
its `setting` carries the check, the built-in default, the doc and the secret flag. `KEYS`,
the checks, the masking and the docs' table of keys are derived from it. Not a pydantic model:
this module is imported on every pytest start and every ``app`` command, and importing
pydantic and building a model costs more than the rest of the plugin's start-up, while the
messages here name the profile, the source and the fix, not a model's field path. Not
dynaconf's ``Validator``: it validates one settings object after a dynaconf load, while the
plugin reads the roots without importing dynaconf, and every profile is checked at once.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from app import config_files
from app import sandbox as sandboxing
from app.config_files import Files, Unresolved
from app.errors import (
    ConfigError,
    ConfigProblems,
    DataRootOverlapError,
    DynaconfSwitchError,
    InvalidSettingError,
    SandboxViolationError,
    UnknownProfileError,
)

PROFILE_ENV = "ENV_FOR_DYNACONF"
# Imported from here by the pytest plugin, the CLI and the tests; they live where they are used.
LOCAL_FILES = config_files.LOCAL_FILES
SETTINGS_DIR_ENV = config_files.SETTINGS_DIR_ENV
settings_dir = config_files.settings_dir
SANDBOX_ENV = sandboxing.SANDBOX_ENV
ALLOW_PROFILES_ENV = sandboxing.ALLOW_PROFILES_ENV
active_sandbox = sandboxing.active_sandbox
loaded = sandboxing.loaded
sandbox_root = sandboxing.sandbox_root
ENV_PREFIX = "APP"
DEFAULT_PROFILE = "development"
#: The profile whose data always needs a confirmation to remove, whatever its files say.
ALWAYS_PROTECTED = "production"
_META_ENV = frozenset({SETTINGS_DIR_ENV})  # APP_ variables that are not settings


# --- the checks -------------------------------------------------------------------------

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
    return None if value is None else _non_empty_str(value)


# --- the schema -------------------------------------------------------------------------

_SETTING = "app.setting"


# NamedTuples, not dataclasses: as immutable, and cheaper to create at import (this module
# is imported on every pytest start and `app` command; bench/plugin_startup.py).
class _Setting(NamedTuple):
    check: Callable[[Any], str | None]
    default: Any
    doc: str
    secret: bool
    normalise: Callable[[Any], Any] | None


def setting(
    check: Callable[[Any], str | None],
    doc: str,
    default: Any = _REQUIRED,
    *,
    secret: bool = False,
    normalise: Callable[[Any], Any] | None = None,
) -> Any:
    """Declare a field of `Config` as a configuration key (the default is the key's, not the
    field's: `load` always passes every field)."""
    return field(
        repr=not secret, metadata={_SETTING: _Setting(check, default, doc, secret, normalise)}
    )


@dataclass(frozen=True)
class Config:
    """The resolved configuration of one profile. Immutable; pass it to what needs it.

    Attributes:
        profile: the selected profile, lower case.
        profile_source: where the profile name came from (``--profile``, ``ENV_FOR_DYNACONF``,
            ``default``, or ``load(profile=...)``).
        settings_dir: the directory the settings files were read from.
        sources: for every key, where its value came from.
        roots: every known profile's data root (the files' values for the other profiles).
        protected_profiles: every known profile whose data needs a confirmation to remove
            (production always); a root stamped with one of them too.
        data_root: the absolute, symlink-resolved data root of this profile.
        protected: removing data needs an explicit confirmation; always True on production.
        sandbox: the pytest sandbox this configuration was confined to, if any.
        warnings: things worth saying that do not stop the app (unknown ``APP_*`` variables).
    """

    profile: str
    profile_source: str
    settings_dir: Path
    sources: Mapping[str, str]
    roots: Mapping[str, Path]
    protected_profiles: frozenset[str]
    data_root: Path = setting(_non_empty_str, "directory that holds the profile's data")
    host: str = setting(_non_empty_str, "address the server listens on", "127.0.0.1")
    port: int = setting(_int_in(1, 65535), "TCP port the server listens on", 8000)
    api_token: str | None = setting(_token, "bearer token clients must send", None, secret=True)
    max_upload_bytes: int = setting(_int_in(1, 2**50), "largest accepted upload", 100 * 2**20)
    page_size: int = setting(_int_in(1, 1000), "default page size of GET /sessions", 50)
    page_max_bytes: int = setting(
        _int_in(1024, 2**30), "most bytes of sessions in one page of GET /sessions", 2**20
    )
    max_header_bytes: int = setting(
        _int_in(1024, 2**20),
        "largest request line and headers the server reads (431 beyond)",
        32 * 1024,
    )
    request_idle_seconds: float = setting(
        _positive_number,
        "longest silence while a request's head or body arrives (408 beyond)",
        30.0,
    )
    request_seconds: float = setting(
        _positive_number,
        "longest a request body may take to arrive, once its head came (408 beyond)",
        600.0,
    )
    max_uploads_in_flight: int = setting(
        _int_in(1, 100_000), "most uploads received at once (503 with Retry-After beyond)", 32
    )
    max_files_per_session: int = setting(
        _int_in(1, 10_000_000),
        "most files one session holds (a new name beyond it is 409 too_many_files)",
        10_000,
    )
    lock_check_seconds: float = setting(
        _positive_number, "how often a server re-checks its lock", 5.0
    )
    log_level: str = setting(_log_level, "server log level", "info", normalise=str.lower)
    protected: bool = setting(_bool, "removing data needs an explicit confirmation", False)
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


class Key(NamedTuple):
    """One configuration key, as `Config` declares it."""

    name: str
    #: The annotation of the field: ``"int"``, ``"str | None"``, ``"Path"``...
    type: str
    check: Callable[[Any], str | None]
    default: Any
    doc: str
    secret: bool = False
    normalise: Callable[[Any], Any] | None = None

    @property
    def env(self) -> str:
        """The environment variable that overrides this key for the selected profile."""
        return f"{ENV_PREFIX}_{self.name.upper()}"

    @property
    def required(self) -> bool:
        """Whether every profile must set this key (it has no built-in default)."""
        return self.default is _REQUIRED

    @property
    def text(self) -> bool:
        """Whether an environment value is taken as it is: ``APP_API_TOKEN=0123...`` is a
        token, not a number. Other keys are parsed as TOML, the way dynaconf does."""
        return self.type in ("str", "str | None", "Path")


KEYS: Mapping[str, Key] = MappingProxyType(
    {
        f.name: Key(f.name, str(f.type), *f.metadata[_SETTING])
        for f in fields(Config)
        if _SETTING in f.metadata
    }
)


def mask(secret: str | None) -> str:
    """How a secret is shown: whether it is set and how long it is, never its characters."""
    return "(not set)" if secret is None else f"****** (set, {len(secret)} characters)"


# --- what the files say -----------------------------------------------------------------


def _file_problems(files: Files) -> Iterator[ConfigError]:
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
            if name not in config_files.NOT_PROFILES and name not in files.profiles:
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
    #: What only stops serving this profile.
    serving: tuple[ConfigError, ...] = ()

    @property
    def data_root(self) -> Path | None:
        root = self.values.get("data_root")
        return root if isinstance(root, Path) else None


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``APP_<KEY>`` variables in `environ`, TOML-parsed as dynaconf parses them."""
    # dynaconf's own env loader calls this function; its public route (`Dynaconf.set(...,
    # tomlfy=True)`) calls it too, but needs a settings object built on every load.
    from dynaconf.utils.parse_conf import boolean_fix, parse_conf_data

    return {
        name: environ[key.env]
        if key.text
        else parse_conf_data(boolean_fix(environ[key.env]), tomlfy=True, box_settings={})
        for name, key in KEYS.items()
        if key.env in environ
    }


def _resolve_profile(
    files: Files,
    profile: str,
    from_files: Mapping[str, tuple[Any, str]],
    environ: Mapping[str, str] | None,
) -> Resolved:
    """One profile's typed values and sources; `environ` given means APP_* variables apply."""
    given = {name: value for name, (value, _) in from_files.items()}
    sources = {name: source for name, (_, source) in from_files.items()}
    if environ is not None:
        for name, value in _env_overrides(environ).items():
            given[name], sources[name] = value, f"environment {KEYS[name].env}"
    values: dict[str, Any] = {}
    problems: list[ConfigError] = []
    deferred: list[ConfigError] = []
    for name, key in KEYS.items():
        value = given.get(name, key.default)
        if isinstance(value, Unresolved):
            deferred.append(
                InvalidSettingError(
                    profile,
                    name,
                    value.raw,
                    f"cannot be resolved ({value.error}); set what it reads (for "
                    f"`@format {{env[NAME]}}`, the variable NAME) in the environment of the "
                    f"commands that use profile {profile!r}, or set {key.env}",
                    sources[name],
                )
            )
            continue
        if value is _REQUIRED:
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
        sources.setdefault(name, "built-in default")
        problem = key.check(value)
        if problem is not None:
            problems.append(InvalidSettingError(profile, name, value, problem, sources[name]))
            continue
        if key.normalise is not None:
            value = key.normalise(value)
        elif key.type == "float":
            value = float(value)
        elif key.type == "Path":
            value = _absolute_root(value, files.directory)
        values[name] = value
    serving: list[ConfigError] = []
    # Resolved here, so that whatever removes data asks `Config.protected` and nothing else;
    # an explicit false only stops serving, and maintenance still needs its confirmation.
    if profile == ALWAYS_PROTECTED and values.get("protected") is False:
        if sources["protected"] != "built-in default":
            serving.append(
                InvalidSettingError(
                    profile,
                    "protected",
                    False,
                    f"{profile} is always protected: commands that "
                    "remove its data need a confirmation option",
                    sources["protected"],
                )
            )
        values["protected"] = True
    return Resolved(
        profile,
        MappingProxyType(values),
        MappingProxyType(sources),
        tuple(problems),
        tuple(deferred),
        tuple(serving),
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


def _serving_problems(selected: Resolved, others: Mapping[str, Resolved]) -> Iterator[ConfigError]:
    """What the selected profile needs to serve, beyond well-formed values."""
    if selected.profile == "production":
        token = selected.values.get("api_token")
        source = selected.sources.get("api_token", "built-in default")
        if token is None:
            yield InvalidSettingError(
                "production",
                "api_token",
                None,
                "production requires an API token; set "
                "APP_API_TOKEN in the service's environment (or api_token in a secrets file "
                "that is not committed)",
                source,
            )
        else:
            problem = _weak_token(token, [r.values.get("api_token") for r in others.values()])
            if problem is not None:
                yield InvalidSettingError("production", "api_token", mask(token), problem, source)
    yield from selected.serving


# What a production token must resist: about 10^20 guesses (66 bits), by zxcvbn's estimate,
# which sees through repeats, sequences, keyboard walks, words and the other profiles' tokens.
_MIN_TOKEN_GUESSES_LOG10 = 20
_MIN_PRODUCTION_TOKEN = 16
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


# --- public entry points ---------------------------------------------------------------


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
    files = config_files.read_files(env, sandboxed=False)
    plain = config_files.plain_roots(files)
    if plain is None:
        plain = {
            name: values["data_root"]
            for name, values in config_files.file_values(files, KEYS).items()
            if "data_root" in values
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


def _confined(resolved: Resolved, run: sandboxing.Run) -> Resolved:
    root = resolved.data_root
    if root is None:
        return resolved
    root, source = sandboxing.confine(
        resolved.profile, root, resolved.sources["data_root"], run.sandbox
    )
    return resolved._replace(
        values=MappingProxyType({**resolved.values, "data_root": root}),
        sources=MappingProxyType({**resolved.sources, "data_root": source}),
    )


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
    files = config_files.read_files(env, sandboxed=run is not None)
    selected, source = _select(profile, profile_source, env, files.profiles)
    problems: list[ConfigError] = [*_dynaconf_key_problems(env), *_file_problems(files)]
    from_files = config_files.file_values(files, KEYS)
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
    serving = tuple(_serving_problems(resolved[selected], others))
    if run is not None:
        for name, r in resolved.items():
            try:
                resolved[name] = _confined(r, run)
            except SandboxViolationError as refused:
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
        run.sandbox if run is not None else None,
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
    selected = report.profiles[report.selected]
    sandboxing.check_profile(
        selected.profile, selected.data_root, selected.sources.get("data_root", ""), report.where
    )
    problems = report.problems + (report.serving_problems if serving else ())
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigProblems(problems)
    roots = {name: r.data_root for name, r in report.profiles.items() if r.data_root}
    config = Config(
        profile=report.selected,
        profile_source=report.profile_source,
        settings_dir=report.settings_dir,
        sources=selected.sources,
        roots=MappingProxyType(roots),
        protected_profiles=frozenset(
            name for name, r in report.profiles.items() if r.values.get("protected")
        ),
        sandbox=report.sandbox,
        warnings=report.warnings,
        **selected.values,
    )
    sandboxing.record_load(config.profile, config.data_root)
    return config
