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

import contextlib
import functools
import math
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlparse, urlsplit

from app import config_files
from app import sandbox as sandboxing
from app.config_files import Files, Unresolved
from app.errors import (
    AppError,
    ConfigError,
    ConfigProblems,
    DataRootOverlapError,
    DynaconfSwitchError,
    InvalidSettingError,
    RemoteBackendError,
    SandboxViolationError,
    SectionNotAProfileError,
    SettingsCastError,
    UnknownProfileError,
    VariableMisspeltError,
    folded,
    not_utf8_byte,
    noting_odd,
    shell_word,
)
from app.records import Record, dataclass

if TYPE_CHECKING:
    # Imported where used: the remote backend's modules come after this one (and
    # app.remote.errors' import is paid only by configurations that name a database).
    from app.remote.errors import ResourceOverlapError

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
#: The profile a process of a pytest run loads where nothing names one (`_select`).
RUN_PROFILE = "testing"
#: Where that selection comes from, as `Config.profile_source` and messages say it.
RUN_DEFAULT = (
    f"the test run's default: {PROFILE_ENV} is not set in this process's environment, and a "
    f"process of a test run loads {RUN_PROFILE!r} unless a profile is named or the test "
    f"opted into {DEFAULT_PROFILE!r}"
)
ALWAYS_PROTECTED = config_files.ALWAYS_PROTECTED
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


#: The longest any number of seconds may be: every wait it feeds accepts it (a thread's
#: wait takes at most `threading.TIMEOUT_MAX`, about 292 years; PostgreSQL's
#: lock_timeout and statement_timeout at most 2**31 - 1 ms, about 24 days).
_MAX_SECONDS: Final = 7 * 86_400


def _positive_number(value: Any) -> str | None:
    # TOML and the environment both give nan and inf: lock_check_seconds = nan passed
    # `app config` and crashed `app serve`; inf never checked the lock file again. Nor did
    # 1e10 ("never", written as a large number): past threading.TIMEOUT_MAX the lock
    # watcher's first wait raised OverflowError, its thread died with a traceback, and the
    # server served on without it (red team 73). The bounds before `isfinite`: an integer
    # past a float's range (TOML's and `@int`'s have no limit) made it raise OverflowError,
    # a traceback from `app config`, `app serve` and every command (red team 73 on regress).
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value > _MAX_SECONDS
        or not math.isfinite(value)
        or value <= 0
    ):
        return (
            f"must be a finite number of seconds greater than 0 and at most {_MAX_SECONDS} (a week)"
        )
    return None


#: The least lock_check_seconds: ten looks a second. Each look is a few system calls
#: (an lstat of the lock file, a read of its bytes, a stat of the stamp); 1e-9 was
#: accepted, and the watcher then spent a quarter of a core looking (red team 73).
LOCK_CHECK_FLOOR_SECONDS: Final = 0.1


def _lock_check_seconds(value: Any) -> str | None:
    if _positive_number(value) is None and value >= LOCK_CHECK_FLOOR_SECONDS:
        return None
    return (
        f"must be a finite number of seconds from {LOCK_CHECK_FLOOR_SECONDS:g} (ten looks at "
        f"the lock file a second; below it the server spends its CPU looking) to "
        f"{_MAX_SECONDS} (a week)"
    )


def _non_empty_str(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


# What the characters seen most in such values are called, and where they come from;
# `unicodedata` names no control character.
_UNSEEN = {
    "\x00": ("NUL", "a NUL cannot be in a path, a URL or a key"),
    "\t": ("TAB", "a stray tab?"),
    "\n": ("LINE FEED", "a newline left by `echo` or `$(cat FILE)`?"),
    "\r": ("CARRIAGE RETURN", "a file saved with Windows line endings?"),
    " ": ("SPACE", "a stray space?"),
}


def _unseen(value: Any) -> str | None:
    """Why a text value holds what its writer cannot have meant, or ``None``.

    A control or invisible character anywhere (a NUL, the ``\\r`` of a file saved with Windows
    line endings, a zero-width space pasted from a web page), or whitespace at either end: a
    data root ``/srv/app/data `` is a new, empty directory next to the real one, shown by every
    message as if it were the real one, and a URL's port ``1 `` cannot be parsed.
    ``str.isprintable`` is the one pass over the text for the common case.
    """
    if not isinstance(value, str) or (value.isprintable() and value == value.strip()):
        return None
    if value != value.strip():
        where, char = ("starts", value[0]) if value[0].isspace() else ("ends", value[-1])
        what = f"{where} with whitespace"
    else:
        position, char = next((i, c) for i, c in enumerate(value) if not c.isprintable())
        what = f"contains an invisible character at position {position}"
    import unicodedata  # only for a value about to be refused

    if byte := not_utf8_byte(char):
        what = what.replace("an invisible character", "a byte that is not text")
        return f"{what}, {byte}; remove it, or write it in UTF-8, where the value is set"
    name, cause = _UNSEEN.get(
        char, (unicodedata.name(char, "a control character"), "pasted from a web page?")
    )
    return f"{what}, U+{ord(char):04X} {name} ({cause}); remove it where the value is set"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _log_level(value: Any) -> str | None:
    if isinstance(value, str) and value.lower() in _LOG_LEVELS:
        return None
    return f"must be one of {', '.join(_LOG_LEVELS)}"


def _token(value: Any) -> str | None:
    return None if value is None else _non_empty_str(value)


def _unsendable_token(token: str) -> str | None:
    """Why no client could send ``token`` as the server compares it, or ``None``.

    On every profile, not only a protected one (`_weak_token`): a header carries bytes, and
    the server reads them as Starlette does (Latin-1), so a token with a character outside
    ASCII matched a client that encodes its header in Latin-1 (Python's requests) and never
    one that sends UTF-8 (curl, a browser): the right token answered 401 "invalid bearer
    token". A control character cannot be sent at all, and whitespace at an end is dropped
    by every client and proxy (red team 61). Never quotes the token, nor any of it.
    """
    if token != token.strip():
        where = "start" if token[0].isspace() else "end"
        return (
            f"has whitespace at its {where} (a newline from `echo` or a secrets file?); "
            "remove it where the token is set: clients send it without, so nobody could "
            "authenticate"
        )
    position = next((i for i, c in enumerate(token) if not " " <= c <= "~"), None)
    if position is None:
        return None
    kind = "outside ASCII" if ord(token[position]) > 0x7F else "a control character"
    return (
        f"has a character that is not printable ASCII ({kind}) at position {position + 1} "
        f"of {len(token)}: a client sends the token as bytes in its Authorization header, "
        "curl and browsers in UTF-8, others in Latin-1, and a control character is refused "
        "or changed on the way, so a client that sends it right could be refused (401). "
        "Remove it where the token is set, or set one of printable ASCII, generated with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
    )


def _database_url(value: Any) -> str | None:
    if value is None:
        return None
    problem = _non_empty_str(value)
    if problem is not None:
        return problem
    # Imported only when a profile names a database: psycopg's import is not free, and a
    # local profile never pays it.
    from app.remote.pg import database_addresses, read_only_target

    problem = _url_userinfo_problem(value)
    if problem is not None:
        return problem
    try:
        database_addresses(value)
        target = read_only_target(value)
    except (AppError, ValueError):  # ValueError: a port that is not a number
        # Not psycopg's own words: they may quote the part of the string that holds the
        # password.
        return (
            "is neither a PostgreSQL URL (postgresql://user@host:port/dbname) nor a "
            "key=value connection string"
        )
    if target is not None:
        attrs, where = target
        first = " first, where one answers" if attrs == "prefer-standby" else ""
        return (
            f"has libpq connect to a standby or a read-only server{first} "
            f"(target_session_attrs={attrs}, from {where}), where the app is refused: it "
            "writes (its stamp, a replica's hold, every change). Remove target_session_attrs "
            "there, or set it to read-write (with several hosts: the primary among them)"
        )
    return None


def _blob_url(value: Any) -> str | None:
    if value is None:
        return None
    problem = _non_empty_str(value)
    if problem is not None:
        return problem
    from app.remote.objects import parse_blob_url

    try:
        parse_blob_url(value)
    except InvalidSettingError as error:
        return error.problem
    return None


def _endpoint_url(value: Any) -> str | None:
    if value is None:
        return None
    problem = _non_empty_str(value)
    if problem is not None:
        return problem
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL of the S3 server (https://s3.example.com)"
    try:
        parts.port  # noqa: B018 - a property that parses, and raises on what is not a port
    except ValueError:
        return (
            f"has a port that is not a number from 0 to 65535 ({parts.netloc!r}); write the "
            "URL as https://s3.example.com:9000"
        )
    if parts.username is not None or parts.password is not None:
        return (
            "must not carry credentials; set s3_access_key_id and s3_secret_access_key in "
            ".secrets.toml or APP_S3_ACCESS_KEY_ID / APP_S3_SECRET_ACCESS_KEY instead"
        )
    return (
        _endpoint_params_problem(value, parts.path)
        or _endpoint_path_problem(parts.path)
        or _endpoint_host_problem(parts.hostname, value)
    )


def _endpoint_params_problem(value: str, path: str) -> str | None:
    """Why an ``s3_endpoint_url``'s path is not the path its requests go under, or None.

    The S3 client (botocore) reads the endpoint with ``urlparse``, which cuts a last path
    segment's ``;`` and what follows off as URL parameters, and drops them: it sent
    ``http://h:8333/;`` and ``/x/..;`` to the endpoint itself (``/x/..`` then resolved),
    where the check of the profiles' prefixes took ``;`` and ``x/..;`` for a path before the
    bucket: staging's ``s3://app-data/production`` there was production's, unseen (red team
    61 on regress).
    """
    query = urlsplit(value).query
    if query:
        # Taken by `app config` and `app doctor`, refused by the client at every request as
        # the store being unavailable (exit 69; red team 61 on regress).
        return (
            f"has a query ({'?' + query!r}), which the S3 client refuses as no valid URI of an "
            "endpoint (every request would fail); write the URL without it"
        )
    sent = urlparse(value).path
    if sent == path:
        return None
    return (
        f"has {path[len(sent) :]!r} at the end of its path, which the S3 client drops as URL "
        f"parameters: its requests go under {sent or '/'!r}, so the bucket and prefix it "
        "reaches are not the ones the check of the profiles' prefixes compares; write the "
        "path without it, as the path it means"
    )


def _endpoint_path_problem(path: str) -> str | None:
    """Why an ``s3_endpoint_url``'s path names another place than it seems to, or None.

    SeaweedFS serves ``http://h:8333/.`` and ``/x/..`` as the endpoint itself, where the
    check of the profiles' prefixes took them for a path before the bucket: staging's
    ``s3://app-data/production`` there was production's, unseen (red team 61). As a
    blob_url's dot segments are refused (red team 37).
    """
    dotted = [s for s in path.split("/") if unquote(s) in (".", "..")]
    if not dotted:
        return None
    return (
        f"has a '.' or '..' segment in its path ({dotted[0]!r}), which an object store "
        "resolves (SeaweedFS serves http://h:8333/x/.. as http://h:8333 itself), so the "
        "bucket and prefix it reaches are not the ones the check of the profiles' prefixes "
        "compares; write the path without it, as the path it means"
    )


#: A label of a host name as the S3 client (botocore) takes it.
_HOST_LABEL = r"(?!-)[A-Za-z\d-]{1,63}(?<!-)"


def _endpoint_host_problem(host: str, value: str) -> str | None:
    """Why botocore would refuse `host`, an ``s3_endpoint_url``'s, or None.

    The S3 client takes a host of ASCII letters, digits and ``-`` only (or an IPv6
    address): ``http://bücket.store:9000`` (a name in Unicode, which DNS and every browser
    take) or ``http://minio_1:9000`` (a Docker Compose service's name) passed every check,
    ``app config`` and ``app status`` showed it, and ``app doctor`` and every command that
    opened the bucket stopped with botocore's bare ``ValueError: Invalid endpoint``
    traceback (red team 57 on the session's fixes).
    """
    if ":" in host:
        return None  # an IPv6 address, which urlsplit has read between its brackets
    name = host[:-1] if host.endswith(".") else host
    if len(name) <= 255 and re.fullmatch(rf"(?:{_HOST_LABEL}\.)*{_HOST_LABEL}", name):
        return None
    fix = "the store's DNS name or its address"
    if "_" in name:
        fix += " (a Docker Compose service whose name has '_' needs an alias without it)"
    elif not name.isascii():
        try:
            ascii_form = name.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_form = None
        if ascii_form is not None:
            written = value.replace(urlsplit(value).netloc.rpartition("@")[2].split(":")[0],
                                    ascii_form, 1)  # fmt: skip
            fix = f"its ASCII (IDNA) form, {written}"
    return (
        f'has a host ({host!r}) that the S3 client refuses ("Invalid endpoint"): it takes '
        "only letters, digits and '-' in each label (up to 63, not starting or ending with "
        f"'-'), or an IP address; write {fix}"
    )


# A pattern, not a compiled one: `re` compiles it on first use (a URL psycopg cannot parse),
# not on every start.
_CONNINFO_PAIR = r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)"
_URL_SCHEMES = ("postgresql://", "postgres://")


def _url_userinfo_problem(value: str) -> str | None:
    """Why libpq would not read a URL's user and password as they were written, or None.

    libpq takes the user and password from the text before the first ``@``, and only when no
    ``/`` comes before that ``@`` (red team 55): a password with an ``@`` not written ``%40``
    (``app:p@ss@db``) leaves the rest of it in the host (``ss@db``), and one with a ``/`` not
    written ``%2F`` (``app:1234/x@db``) makes the user the host, the password's start its
    port and the rest the database's name. Either way the server named is not the one meant,
    and the password's rest was shown as a host, a port or a database in every message.
    Never quotes the value: it holds the password.
    """
    if not value.startswith(_URL_SCHEMES):
        return None
    authority, _, path = value.partition("://")[2].partition("/")
    if authority.count("@") > 1 or "@" in path.partition("?")[0]:
        return (
            "has an '@' that libpq does not read as the end of the user and password (it "
            "ends them at the first '@', and only before the first '/'), so it would connect "
            "to another host, port or database than the one written and show the rest of "
            "the password as one; percent-encode a password's (or a user's) '@' as %40 and "
            "'/' as %2F, or give the password in PGPASSFILE instead (shown here with "
            "everything before its last '@' starred)"
        )
    return None


def _userinfo_masked(value: str) -> str:
    # Everything up to the last '@' may be a user or password (written as meant or not).
    scheme, _, rest = value.partition("://")
    return f"{scheme}://******@{rest.rpartition('@')[2]}" if "@" in rest else value


def mask_database_url(value: Any) -> Any:
    """How a ``database_url`` is shown: without its password (`app.remote.pg.mask_url`),
    or, when libpq would not read it as written or it cannot be parsed, with everything
    that may be a user or password starred."""
    if not isinstance(value, str):
        return value
    if _url_userinfo_problem(value) is None:
        try:
            from app.remote.pg import mask_url

            return mask_url(value)
        except (AppError, ValueError):
            pass
    return re.sub(_CONNINFO_PAIR, r"\1******", _userinfo_masked(value))


# --- the schema -------------------------------------------------------------------------

_SETTING = "app.setting"


# NamedTuples (`Record`), not dataclasses: as immutable, and cheaper to create at import (this
# module is imported on every pytest start and `app` command; bench/plugin_startup.py).
class _Setting(Record):
    check: Callable[[Any], str | None]
    default: Any
    doc: str
    secret: bool
    normalise: Callable[[Any], Any] | None
    display: Callable[[Any], Any] | None


def setting(
    check: Callable[[Any], str | None],
    doc: str,
    default: Any = _REQUIRED,
    *,
    secret: bool = False,
    normalise: Callable[[Any], Any] | None = None,
    display: Callable[[Any], Any] | None = None,
) -> Any:
    """Declare a field of `Config` as a configuration key (the default is the key's, not the
    field's: `load` always passes every field). `display` shows a value that is partly
    secret (a URL's password); `secret` masks all of it."""
    return field(
        repr=not secret and display is None,
        metadata={_SETTING: _Setting(check, default, doc, secret, normalise, display)},
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
        profiles: every profile these settings define.
        data_root: the absolute, symlink-resolved data root of this profile, or None when
            it uses PostgreSQL and object storage (`backend`).
        database_url: the profile's PostgreSQL database (the remote backend), or None.
        blob_url: ``s3://bucket/prefix``, where the profile's files live (remote), or None.
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
    profiles: frozenset[str]
    data_root: Path | None = setting(
        _token, "directory that holds the profile's data (the local backend)", None
    )
    database_url: str | None = setting(
        _database_url,
        "PostgreSQL database of the profile's metadata (the remote backend; password masked)",
        None,
        display=mask_database_url,
    )
    blob_url: str | None = setting(
        _blob_url, "s3://bucket/prefix of the profile's files (the remote backend)", None
    )
    s3_endpoint_url: str | None = setting(
        _endpoint_url, "URL of the S3-compatible server that holds blob_url's bucket", None
    )
    s3_access_key_id: str | None = setting(
        _token, "S3 access key id (a secret: .secrets.toml or APP_*)", None, secret=True
    )
    s3_secret_access_key: str | None = setting(
        _token, "S3 secret access key (a secret: .secrets.toml or APP_*)", None, secret=True
    )
    database_lock_wait_seconds: float = setting(
        _positive_number,
        "longest a statement waits for a row or table lock another client of the database "
        "holds (PostgreSQL's lock_timeout; 503 database_refused beyond)",
        10.0,
    )
    database_wait_seconds: float = setting(
        _positive_number,
        "longest the app waits for one answer of the database (a statement, a commit) "
        "before it closes that connection and answers 503 database_timeout (a command "
        "exits 69); more than database_lock_wait_seconds",
        30.0,
    )
    s3_connect_timeout_seconds: float = setting(
        _positive_number,
        "longest one request to the object store waits to connect (503 "
        "object_store_unavailable beyond, after s3_max_attempts)",
        10.0,
    )
    s3_read_timeout_seconds: float = setting(
        _positive_number,
        "longest one request to the object store waits for the next bytes of its answer "
        "(503 object_store_unavailable beyond, after s3_max_attempts)",
        60.0,
    )
    s3_credential_process_seconds: float = setting(
        _positive_number,
        "longest the S3 client's credential_process (a remote profile that sets neither S3 "
        "key) may run before it is stopped, with what it started, and the command refused",
        30.0,
    )
    s3_max_attempts: int = setting(
        _int_in(1, 10),
        "attempts of one request to the object store, the first included (retried on a "
        "timeout, a dropped connection or a 5xx)",
        3,
    )
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
    max_transfers_at_once: int = setting(
        _int_in(1, 10_000),
        "most uploads and downloads a server on a local data root works on at once; "
        "the others wait their turn",
        2,
    )
    max_files_per_session: int = setting(
        _int_in(1, 10_000_000),
        "most files one session holds (a new name beyond it is 409 too_many_files)",
        10_000,
    )
    shutdown_grace_seconds: int = setting(
        _int_in(1, 86_400),
        "how long requests in flight may still run once the server is told to stop; longer "
        "ones are answered 503 server_stopped, and a write they began ends before the "
        "server gives up its data root",
        30,
    )
    lock_check_seconds: float = setting(
        _lock_check_seconds,
        f"how often a server re-checks its lock (at least {LOCK_CHECK_FLOOR_SECONDS:g} s)",
        5.0,
    )
    log_level: str = setting(_log_level, "server log level", "info", normalise=str.lower)
    protected: bool = setting(_bool, "removing data needs an explicit confirmation", False)
    sandbox: Path | None = None
    warnings: tuple[str, ...] = ()

    def __init__(
        self,
        profile: str,
        profile_source: str,
        settings_dir: Path,
        sources: Mapping[str, str],
        roots: Mapping[str, Path],
        protected_profiles: frozenset[str],
        profiles: frozenset[str],
        data_root: Path | None,
        database_url: str | None,
        blob_url: str | None,
        s3_endpoint_url: str | None,
        s3_access_key_id: str | None,
        s3_secret_access_key: str | None,
        database_lock_wait_seconds: float,
        database_wait_seconds: float,
        s3_connect_timeout_seconds: float,
        s3_read_timeout_seconds: float,
        s3_credential_process_seconds: float,
        s3_max_attempts: int,
        host: str,
        port: int,
        api_token: str | None,
        max_upload_bytes: int,
        page_size: int,
        page_max_bytes: int,
        max_header_bytes: int,
        request_idle_seconds: float,
        request_seconds: float,
        max_uploads_in_flight: int,
        max_transfers_at_once: int,
        max_files_per_session: int,
        shutdown_grace_seconds: int,
        lock_check_seconds: float,
        log_level: str,
        protected: bool,
        sandbox: Path | None = None,
        warnings: tuple[str, ...] = (),
    ) -> None:
        # Written out, where the dataclass decorator would write and compile it at its first
        # use: about 9 M instructions of `app config`'s start (bench/README.md,
        # "perf-startup64"). The standard decorator's frozen constructor, line for line;
        # tests/test_records.py holds it to the one the decorator writes for these fields.
        _set = object.__setattr__
        _set(self, "profile", profile)
        _set(self, "profile_source", profile_source)
        _set(self, "settings_dir", settings_dir)
        _set(self, "sources", sources)
        _set(self, "roots", roots)
        _set(self, "protected_profiles", protected_profiles)
        _set(self, "profiles", profiles)
        _set(self, "data_root", data_root)
        _set(self, "database_url", database_url)
        _set(self, "blob_url", blob_url)
        _set(self, "s3_endpoint_url", s3_endpoint_url)
        _set(self, "s3_access_key_id", s3_access_key_id)
        _set(self, "s3_secret_access_key", s3_secret_access_key)
        _set(self, "database_lock_wait_seconds", database_lock_wait_seconds)
        _set(self, "database_wait_seconds", database_wait_seconds)
        _set(self, "s3_connect_timeout_seconds", s3_connect_timeout_seconds)
        _set(self, "s3_read_timeout_seconds", s3_read_timeout_seconds)
        _set(self, "s3_credential_process_seconds", s3_credential_process_seconds)
        _set(self, "s3_max_attempts", s3_max_attempts)
        _set(self, "host", host)
        _set(self, "port", port)
        _set(self, "api_token", api_token)
        _set(self, "max_upload_bytes", max_upload_bytes)
        _set(self, "page_size", page_size)
        _set(self, "page_max_bytes", page_max_bytes)
        _set(self, "max_header_bytes", max_header_bytes)
        _set(self, "request_idle_seconds", request_idle_seconds)
        _set(self, "request_seconds", request_seconds)
        _set(self, "max_uploads_in_flight", max_uploads_in_flight)
        _set(self, "max_transfers_at_once", max_transfers_at_once)
        _set(self, "max_files_per_session", max_files_per_session)
        _set(self, "shutdown_grace_seconds", shutdown_grace_seconds)
        _set(self, "lock_check_seconds", lock_check_seconds)
        _set(self, "log_level", log_level)
        _set(self, "protected", protected)
        _set(self, "sandbox", sandbox)
        _set(self, "warnings", warnings)

    def taking_needs_confirmation(self, stamped: str) -> bool:
        """Whether handing storage stamped by profile ``stamped`` to this profile needs
        ``--yes-i-mean-it``: this profile or that one is protected, or these settings do not
        know that one (it may be another deployment's production). Both backends ask this."""
        return self.protected or stamped in self.protected_profiles or stamped not in self.profiles

    @property
    def backend(self) -> str:
        """``"local"`` (a data root) or ``"remote"`` (PostgreSQL and object storage)."""
        return REMOTE if self.database_url is not None else LOCAL

    @property
    def storage(self) -> str:
        """Where the profile keeps its data, as messages name it (no password, no key)."""
        if self.data_root is not None:
            return f"data root {self.data_root}"
        return f"database {mask_database_url(self.database_url)}, objects {self.blob_url}"

    def local_root(self, wanted: str) -> Path:
        """The data root, for what only works on the local backend.

        Raises:
            RemoteBackendError: the profile uses PostgreSQL and object storage; names
                `wanted` and what the profile uses instead.
        """
        if self.data_root is None:
            raise RemoteBackendError(
                self.profile, wanted, mask_database_url(self.database_url), str(self.blob_url)
            )
        return self.data_root

    def values(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        """The configured values by key, secrets masked unless asked otherwise."""
        return {
            name: key.show(getattr(self, name)) if mask_secrets else _plain(getattr(self, name))
            for name, key in KEYS.items()
        }


LOCAL = "local"
REMOTE = "remote"
#: The keys that choose the remote backend, and every key it needs.
REMOTE_CHOOSERS = ("database_url", "blob_url")
REMOTE_KEYS = (*REMOTE_CHOOSERS, "s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key")


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


class Key(Record):
    """One configuration key, as `Config` declares it."""

    name: str
    #: The annotation of the field: ``"int"``, ``"str | None"``, ``"Path"``...
    type: str
    check: Callable[[Any], str | None]
    default: Any
    doc: str
    secret: bool = False
    normalise: Callable[[Any], Any] | None = None
    display: Callable[[Any], Any] | None = None

    def show(self, value: Any) -> Any:
        """`value` as every output shows it: secrets masked, a database URL's password left
        out, a path as text."""
        if self.secret:
            return mask(value)
        if self.display is not None and value is not None:
            return self.display(value)
        return _plain(value)

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
        return self.type in ("str", "str | None", "Path", "Path | None")


KEYS: Mapping[str, Key] = MappingProxyType(
    {
        f.name: Key(f.name, str(f.type), *f.metadata[_SETTING])
        for f in fields(Config)
        if _SETTING in f.metadata
    }
)


#: The path settings (``data_root``): their text is checked as a path's. Named once, not
#: asked of each key at each load (three profiles of some thirty keys).
_PATH_KEYS: Final = frozenset(name for name, key in KEYS.items() if key.type.startswith("Path"))


def environment_now() -> dict[str, str]:
    """A copy of this process's environment as it is now, whichever variable another thread
    removes meanwhile: ``dict(os.environ)`` lists the names, then reads each value, and a
    variable removed in between (another thread's ``os.environ.pop``, a test's
    ``monkeypatch.delenv`` beside a live server's thread) was a bare ``KeyError`` traceback out
    of `load` (red team 66 on regress, rt-regress66d). Such a variable is left out, as a copy
    made a moment later would leave it."""
    environ = os.environ
    return {name: value for name in environ if (value := environ.get(name)) is not None}


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
                yield SectionNotAProfileError(
                    name,
                    files.profiles,
                    f"section [{section}] of {path}",
                    section,
                    path,
                    files.directory / config_files.SETTINGS_FILE,
                )
            for key, value in body.items():
                if key.lower() not in KEYS:
                    import difflib  # here: only a typo pays for it

                    near = difflib.get_close_matches(folded(key), list(KEYS), n=1)
                    hint = (
                        f"did you mean {near[0]!r}?" if near else f"known keys: {', '.join(KEYS)}"
                    )
                    what = noting_odd("unknown key", key)
                    yield InvalidSettingError(
                        name, key, value, f"{what}; {hint}", f"{path} [{section}]"
                    )


def _select(
    profile: str | None,
    source: str,
    environ: Mapping[str, str],
    known: tuple[str, ...],
    *,
    in_run: bool = False,
) -> tuple[str, str]:
    if profile is not None:
        name = profile
    elif PROFILE_ENV in environ:
        name, source = environ[PROFILE_ENV], PROFILE_ENV
    else:
        _refuse_misspelt_selector(environ, known, RUN_PROFILE if in_run else DEFAULT_PROFILE)
        # A process of a test run whose environment lost the plugin's ENV_FOR_DYNACONF (a
        # test's `os.environ.clear()`, a child given a hand-built environment) is still on
        # the profile the run forces (red team 57): development's default was refused
        # there, with the advice to opt into development, which no test had asked for. A
        # test that opted into development keeps it as its default (`inspect_profiles`).
        name, source = (RUN_PROFILE, RUN_DEFAULT) if in_run else (DEFAULT_PROFILE, "default")
    # ASCII only, as a section's name is (red team 54): ``str.lower`` makes U+212A KELVIN
    # SIGN a plain ``k``, so ``ENV_FOR_DYNACONF=\u212aiosk`` selected ``kiosk`` while every
    # other non-ASCII look-alike of a name is refused as not plain ASCII.
    normalised = name.strip().lower()
    if not normalised or normalised not in known or not name.strip().isascii():
        raise UnknownProfileError(name, known, source)
    return normalised, source


def set_for_another_profile(config: Config, key: str, stamped: str) -> str:
    """Why `config`'s `key` names storage stamped for profile `stamped`, where the
    environment explains it, for the refusal of that storage (else ""): the key came from
    its ``APP_<KEY>`` variable in an environment whose ``ENV_FOR_DYNACONF`` selects
    `stamped`, and ``--profile`` chose the command's profile. ``app --profile development
    data purge`` run in the production service's environment took its ``APP_DATA_ROOT`` for
    development, and production's stamp refused it with "data_root is wrong here (`app
    config` shows where it came from)", naming neither the variable nor whose it was (red
    team 74). Read from this process's environment: only the command line says
    ``--profile``."""
    variable = KEYS[key].env
    source = config.sources.get(key, "")
    shell = os.environ.get(PROFILE_ENV, "").strip().lower()
    if source != f"environment {variable}" or config.profile_source != "--profile":
        return ""
    if shell != stamped or shell == config.profile:
        return ""
    # Every storage variable this environment sets is the shell's profile's, not only the
    # one refused first: `env -u APP_DATABASE_URL` alone, run as given where the service's
    # environment also sets APP_BLOB_URL, was refused again on the prefix (red team 74 on
    # regress, round b).
    unset = " ".join(
        f"-u {KEYS[other].env}"
        for other in _RESOURCE_KEYS
        if config.sources.get(other) == f"environment {KEYS[other].env}"
    )
    return (
        f"it came from {source}, which this environment sets for profile {stamped!r} (its "
        f"{PROFILE_ENV} selects that one), and --profile {config.profile} applied it to "
        f"profile {config.profile!r}: for {config.profile}'s own {key}, run the command "
        f"without it (`env {unset} app --profile {config.profile} ...`)"
    )


#: Names people give the profile's variable from other tools' habits (``APP_ENV`` as in
#: Laravel, dynaconf's own ``DYNACONF_ENV`` of old examples).
_PROFILE_HABITS = frozenset(
    {
        "APP_ENV",
        "APP_ENVIRONMENT",
        "APP_PROFILE",
        "DYNACONF_ENV",
        "DYNACONF_ENVIRONMENT",
        "DYNACONF_PROFILE",
    }
)


#: The settings that choose where a profile's data is.
_RESOURCE_KEYS = ("data_root", "database_url", "blob_url")
#: Names people give the data root's variable from other habits, when a path is their value
#: (not ``APP_ROOT`` or ``APP_DATA``: images set those for the application's own files).
_DATA_ROOT_HABITS = frozenset({"APP_DATA_DIR", "APP_DATA_DIRECTORY", "APP_DATA_PATH"})


def _misspelt_resource_variables(
    environ: Mapping[str, str], selected: str
) -> Iterator[VariableMisspeltError]:
    """A variable meant to say where the selected profile's data is, which the app ignores.

    ``APP_DATA_DIR=/srv/copy app --profile production data purge --yes-i-mean-it``, meant
    for a copy, warned that the variable is not a setting and purged production's own root;
    lower case (``app_data_root``) was not even warned of, and dynaconf's nesting
    (``APP_PRODUCTION__DATA_ROOT``) only warned (red team 36). A near miss of the name, the
    name in another case, the nesting, or a habit whose value is a path is now refused
    while the real variable is not set, as a misspelt ``ENV_FOR_DYNACONF`` is.
    """

    def is_path(value: str) -> bool:
        return value.strip().startswith(("/", "~", "."))

    for key in _RESOURCE_KEYS:
        meant = KEYS[key].env
        if meant in environ:
            continue
        habits = _DATA_ROOT_HABITS if key == "data_root" else frozenset()
        name = config_files.misspelt(environ, meant, habits, is_path)
        nested = f"{ENV_PREFIX}_{selected}__{key}".upper()
        name = name or next((n for n in sorted(environ) if n.upper() == nested), None)
        if name is None:
            continue
        yield VariableMisspeltError(
            name,
            environ[name],
            meant,
            f"sets {key} of the selected profile, {selected!r}",
            f"{key} of profile {selected!r} as the settings files give it",
            f"export {meant}={shell_word(environ[name])}; unset {name}",
        )


def _refuse_misspelt_selector(
    environ: Mapping[str, str], known: tuple[str, ...], default: str = DEFAULT_PROFILE
) -> None:
    """Refuse a variable meant to select the profile, before falling back to `default`.

    Layer 1 refuses ``ENV_FOR_DYNACONF=prod`` rather than falling back; a typo in the
    variable's *name* (``ENV_FOR_DYNACOF``, ``env_for_dynaconf``) fell back silently, and so
    did another tool's habit (``APP_ENV``) naming a profile. A habit is refused only when its
    value names a profile other than the default (``APP_ENV=local`` is another tool's).
    """

    def names_another_profile(value: str) -> bool:
        meant = value.strip().lower()
        return meant in known and meant != default

    name = config_files.misspelt(environ, PROFILE_ENV, _PROFILE_HABITS, names_another_profile)
    if name is not None:
        meant = environ[name].strip().lower()
        fix = (
            f"export {PROFILE_ENV}={meant}; unset {name}"
            if meant in known
            else f"set {PROFILE_ENV} to one of {', '.join(known)} and unset {name}"
        )
        raise VariableMisspeltError(
            name,
            environ[name],
            PROFILE_ENV,
            "(or --profile) selects the profile",
            f"the default profile {default!r}",
            fix,
        )


def _refuse_selector_among_switches(environ: Mapping[str, str], switches: list[str]) -> None:
    """Refuse a switch variable that looks meant as ``ENV_FOR_DYNACONF`` as the misspelt
    selector it is (`_refuse_misspelt_selector`), where that is not set.

    ``\u0415NV_FOR_DYNACONF=production`` (a Cyrillic first letter) or ``ENB_FOR_DYNACONF``
    ends in ``_FOR_DYNACONF``: it was refused as a switch that "would change which files or
    profile dynaconf loads", and the fix named was to unset it, for the default profile,
    with no word of the name it looks meant as, while its look-alikes elsewhere in the name
    name it and the ``export`` (red team 72). Still refused when the settings cannot be read
    (that refusal comes next, once the switch is gone).
    """
    candidates = {name: environ[name] for name in switches if name in environ}
    if config_files.misspelt(candidates, PROFILE_ENV, (), lambda _: False) is None:
        return
    where = sandboxing.context()
    run = where.run
    try:
        known = config_files.read_files(environ, sandboxed=run is not None).profiles
    except ConfigError:
        return
    in_run = (
        run is not None
        and where.bare is None
        and DEFAULT_PROFILE not in sandboxing.allowed_profiles(run)
    )
    _refuse_misspelt_selector(candidates, known, RUN_PROFILE if in_run else DEFAULT_PROFILE)


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
        if (k.endswith("_FOR_DYNACONF") and visible(k) != PROFILE_ENV) or k in _OTHER_SWITCHES
    )


def visible(name: str) -> str:
    """`name` without the characters that show as nothing (Unicode's format characters: a
    byte-order mark U+FEFF, a zero-width space U+200B)."""
    import unicodedata

    return "".join(c for c in name if unicodedata.category(c) != "Cf")


def _hidden_character_variables(
    environ: Mapping[str, str], selected: str
) -> Iterator[VariableMisspeltError]:
    """A variable named as one of the app's settings with a character that shows as nothing.

    The first line of an environment file saved with a byte-order mark (as some editors on
    Windows save it) names ``\\ufeffAPP_API_TOKEN``: `env $(... | xargs)`, as the guides run
    commands, passes it so. Production was then refused as "api_token is not set (from
    built-in default)", though the file plainly sets it, and ``\\ufeffENV_FOR_DYNACONF`` as a
    dynaconf switch that "would change which files ... dynaconf loads" (red team 51). The
    resource keys are `_misspelt_resource_variables`'.
    """
    # A character that shows as nothing is not ASCII, and the app's names are: only the
    # environment's other names can hide one (each read once; every name, once per key, cost
    # `app config` 5% of its instructions).
    hidden: dict[str, str] = {}
    for other in sorted(environ):
        if not other.isascii():
            hidden.setdefault(visible(other), other)
    for key, spec in KEYS.items():
        meant = spec.env
        if key in _RESOURCE_KEYS or meant in environ:
            continue
        name = hidden.get(meant)
        if name is None:
            continue
        secret = spec.secret
        yield VariableMisspeltError(
            name,
            "******" if secret else environ[name],
            meant,
            f"sets {key} of the selected profile, {selected!r}",
            f"{key} of profile {selected!r} as the settings files give it",
            f"name it {meant} where it is set (the file's first line, if it was saved with a "
            f"byte-order mark: save it without one), or export {meant} with its value and "
            f"unset {name}",
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


class Resolved(Record):
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


def _env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``APP_<KEY>`` variables in `environ`, as they are (`_env_value` parses them)."""
    return {name: environ[key.env] for name, key in KEYS.items() if key.env in environ}


def _env_value(name: str, raw: str) -> tuple[Any, str | None]:
    """An ``APP_<KEY>`` value parsed as dynaconf parses a variable, or why it cannot be used.

    A text key's value is used as it is. Any other is TOML-parsed with dynaconf's ``@``-casts
    (``@int 8080``, ``@json [..]``), as dynaconf's own environment loader does; its public
    route (``Dynaconf.set(..., tomlfy=True)``) calls the same function, but needs a settings
    object built on every load. A cast that fails, and a token that only means something
    inside dynaconf's own merge (``@del``, ``@merge``, ``@reset``, ``@insert``) or evaluates
    later (``@format``, ``@jinja``, ``@get``, ``@read_file``), is refused: the guard checks
    the value that is used, and a variable overrides one key of the selected profile.
    """
    key = KEYS[name]
    token = _dynaconf_token(raw)
    if key.text:
        if token is None:
            return raw, None
        return raw, (
            f"is dynaconf's `{token}` syntax, which the app does not evaluate in an "
            "environment variable: APP_* values are used as they are, so that what the "
            "guard checks is what is opened. Give the value itself, or write the "
            "@-string in settings.toml, where dynaconf evaluates it"
        )
    from dynaconf.utils.parse_conf import (
        DynaconfParseError,
        Lazy,
        MetaValue,
        boolean_fix,
        parse_conf_data,
    )

    default = str(key.default).lower() if isinstance(key.default, bool) else key.default
    such_as = "" if default is None or default is _REQUIRED else f" (such as {key.env}={default})"
    other = next((c for c in raw if not c.isascii()), None)
    if other is not None:
        # dynaconf's @int is Python's int(): APP_PORT='@int <Arabic-Indic 1234>' was port 1234.
        return raw, (
            f"holds U+{ord(other):04X} ({unicodedata.name(other, 'unnamed')}); a number or a "
            f"boolean is written in ASCII{such_as}"
        )
    try:
        value = parse_conf_data(boolean_fix(raw), tomlfy=True, box_settings={})
    except DynaconfParseError as error:
        return raw, (
            f"cannot be cast ({error}); give the value itself{such_as} or a cast that fits "
            f"it, or unset {key.env}"
        )
    if isinstance(value, (Lazy, MetaValue)):
        return raw, (
            f"is dynaconf's `{token}` syntax, which the app does not apply to an environment "
            f"variable: {key.env} sets the selected profile's {name} to a value. Give the "
            f"value itself{such_as}, or write the @-string in settings.toml, where dynaconf "
            "evaluates it"
        )
    return value, None


def _dynaconf_token(value: str) -> str | None:
    """The dynaconf ``@token`` a text value starts with (``@format``, ``@jinja``...), if any."""
    if not value.lstrip().startswith("@"):
        return None
    from dynaconf.utils.parse_conf import converters  # only for such a value

    token = value.split(maxsplit=1)[0]
    return token if token in converters else None


def _unresolved(profile: str, name: str, value: Unresolved, source: str) -> ConfigError:
    """The refusal for a value from the files that dynaconf could not cast or resolve."""
    if value.cast is not None:
        c = value.cast
        return SettingsCastError(c.path, c.section, c.key, c.value, c.problem, profile)
    if value.selection in config_files.WORKING_DIRECTORY:
        return InvalidSettingError(
            profile,
            name,
            value.raw,
            f"reads {value.selection}, the working directory of the shell that runs the "
            "command, so the value would move with each `cd` (a new, empty root, or another "
            "profile's, depending on where the command is run); a relative path resolves "
            "against the settings directory, never the working directory. Write the path out "
            f"in full, or relative to the settings directory, in [{profile}]",
            source,
        )
    if value.selection is not None:
        return InvalidSettingError(
            profile,
            name,
            value.raw,
            f"reads {value.selection!r}, dynaconf's own notion of the selected environment, "
            f"which is not profile {profile!r}: the app reads every profile's section in one "
            "load and selects the profile itself, so the value would be resolved from "
            "ENV_FOR_DYNACONF as the shell typed it ('Production' selects production too), "
            "from dynaconf's default where it is not set, or as 'main', and name another "
            "place for each (another profile's, or a new, empty one). Write the value out in "
            f"[{profile}] (`app config --all` shows each profile's), or give it where the "
            f"profile runs with {KEYS[name].env}",
            source,
        )
    if value.unapplied:
        import json  # here: only such a refusal pays for it

        token = (str(value.raw).split(maxsplit=1) or ["@"])[0]
        default = KEYS[name].default
        example = (
            f" (such as {name} = {json.dumps(default)})"
            if isinstance(default, int | float | str) and default is not _REQUIRED
            else ""
        )
        return InvalidSettingError(
            profile,
            name,
            value.raw,
            f"is dynaconf's `{token}`, an instruction to change a value already there (merge "
            "into it, reset it, insert into it or delete it), which in a profile's section "
            f"finds none to change: dynaconf leaves its own {value.error} object as the value. "
            f"Write the value itself{example}, or remove the line to take [default]'s or the "
            "built-in one",
            source,
        )
    return InvalidSettingError(
        profile,
        name,
        value.raw,
        f"cannot be resolved ({value.error}); set what it reads (for "
        f"`@format {{env[NAME]}}`, the variable NAME) in the environment of the "
        f"commands that use profile {profile!r}, or set {KEYS[name].env}",
        source,
    )


def _resolve_profile(
    files: Files,
    profile: str,
    from_files: Mapping[str, tuple[Any, str]],
    environ: Mapping[str, str] | None,
) -> Resolved:
    """One profile's typed values and sources; `environ` given means APP_* variables apply."""
    given = {name: _from_file(name, value) for name, (value, _) in from_files.items()}
    sources = {name: source for name, (_, source) in from_files.items()}
    problems: list[ConfigError] = []
    if environ is not None:
        for name, raw in _env_overrides(environ).items():
            source = f"environment {KEYS[name].env}"
            value, refusal = _env_value(name, raw)
            if refusal is not None:
                problems.append(
                    InvalidSettingError(profile, name, KEYS[name].show(raw), refusal, source)
                )
                continue
            given[name], sources[name] = value, source
    values: dict[str, Any] = {}
    deferred: list[ConfigError] = []
    for name, key in KEYS.items():
        value = given.get(name, key.default)
        if isinstance(value, Unresolved):
            # One that reads the selection is the same text in every shell: a problem of the
            # files, refused in every profile's loads (where another profile's root would be
            # compared as the one this shell's spelling makes).
            refused = problems if value.selection is not None else deferred
            refused.append(_unresolved(profile, name, value, sources[name]))
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
        problem, root = _value_problem(key, value, files.directory)
        if problem is not None:
            shown = _shortened(key.show(value)) if isinstance(value, str) else value
            invalid = InvalidSettingError(profile, name, shown, problem, sources[name])
            # A home this process cannot expand (`~appsvc/data` where no user appsvc exists:
            # a developer's machine, a CI container) is resolved where the profile runs, as
            # `@format {env[NAME]}` is: refused for that profile's commands, and listed by
            # `app doctor` elsewhere. It refused every command of every profile, and every
            # test run, on each machine without that user (red team 71).
            (deferred if problem == _home_unknown(key, value) else problems).append(invalid)
            continue
        if key.normalise is not None:
            value = key.normalise(value)
        elif key.type == "float":
            value = float(value)
        elif name in _PATH_KEYS and value is not None:
            value = root if root is not None else _absolute_root(value, files.directory)
        values[name] = value
    unset = _unset_root(files, profile) if given.get("data_root") is None else None
    problems.extend(_backend_problems(profile, given, sources, unset))
    problems.extend(_committed_secrets(profile, values, sources))
    problems.extend(_wait_problems(profile, values, sources))
    problems.extend(_upload_problems(profile, values, sources))
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


def _value_problem(key: Key, value: Any, directory: Path) -> tuple[str | None, Path | None]:
    """Why one profile's `value` of `key` cannot be used, or None; and, for a path setting's
    text, the directory it resolves to (`_followed`'s, None otherwise)."""
    path = key.name in _PATH_KEYS and isinstance(value, str)
    # The API token keeps its own rule (`_weak_token`), which says what whitespace costs.
    # A path's text is checked as the UTF-8 text of its bytes: under an ASCII locale
    # (``LC_ALL=C PYTHONUTF8=0``) every byte beyond ASCII is an escape, and ``/srv/données``
    # was refused as "a byte that is not UTF-8" (red team 56).
    checked = sandboxing.path_as_text(value) if path else value
    problem = (None if key.name == "api_token" else _unseen(checked)) or key.check(value)
    if problem is not None:
        return problem, None
    if path:
        # A path setting's text: the same checks in the same order as ever, its links
        # followed once for all of them (`_followed`: one `realpath` and one `stat`, which
        # `_unfollowable`, `_unnameable`, `_not_text_resolved` and the value itself each made
        # before, four walks of the same path within one profile's resolving; issue 11).
        root, unfollowable = _followed(value, directory)
        return (
            unfollowable
            or _spelled_as_url(key, value, directory)
            or _escaped(key, value, directory)
            or _unexpanded(key, value, directory, root)
            or _unnameable(key, value, directory, root)
            or _not_text_resolved(key, value, directory, root)
            or _misresolved(key, value, directory, root)
        ), root
    if key.name == "blob_url":
        # The only check left for a value that is no path's text: each other one returned
        # at once for such a value (seven calls a key and profile before).
        return _unexpanded(key, value, directory), None
    return None, None


def _unset_root(files: Files, profile: str) -> str | None:
    """The text of the file's ``data_root`` of `profile` that dynaconf gave no value
    (``@del``, ``@none``), for the refusal; None where the last file to set it wrote no
    dynaconf syntax (a key outside any section named as the profile replaced the section
    in dynaconf's load: refused as such, "keys must sit in a [section]")."""
    raw = next(
        (
            layer.body["data_root"]
            for layer in reversed(list(config_files.layers(files, profile)))
            if "data_root" in layer.body
        ),
        None,
    )
    return raw if isinstance(raw, str) and raw.lstrip().startswith("@") else None


def _backend_problems(
    profile: str, given: Mapping[str, Any], sources: Mapping[str, str], unset: str | None = None
) -> Iterator[ConfigError]:
    """The backend rule: `data_root` (local) or every remote key, never both, never neither.

    `given` holds what the files and the environment set, valid or not: a key set to a bad
    value is reported once, by its own check, not again as missing. `unset`: the text of
    the file's ``data_root`` that dynaconf gave no value (``@del``), where one did.
    """
    chosen = [name for name in REMOTE_CHOOSERS if given.get(name) is not None]
    if given.get("data_root") is not None and chosen:
        named = ", ".join(f"{name} (from {sources[name]})" for name in chosen)
        yield InvalidSettingError(
            profile,
            "data_root",
            str(given["data_root"]),
            f"is set together with {named}: a profile keeps its data either in a data root "
            "(the local backend) or in PostgreSQL and object storage, never both. Remove "
            "data_root or the remote keys from this profile",
            sources["data_root"],
        )
        return
    if not chosen:
        if given.get("data_root") is None and unset is not None:
            # "is not set (from nowhere) ... set data_root in [production] of settings.toml",
            # where it is set and a later file's `@del` undid it (red team 70).
            where = sources.get("data_root", "nowhere")
            yield InvalidSettingError(
                profile,
                "data_root",
                None,
                f"is required, and {unset!r} there leaves it with no value (dynaconf's "
                "syntax: `@del` and `@none` remove the value an earlier file or section "
                f"gives); remove that line from {where}, or give data_root a path there, for "
                "the local backend (or database_url, blob_url, s3_endpoint_url and the S3 "
                "credentials for PostgreSQL and object storage)",
                where,
            )
        elif given.get("data_root") is None:
            yield InvalidSettingError(
                profile,
                "data_root",
                None,
                f"is required: set data_root in [{profile}] of settings.toml (or "
                f"{KEYS['data_root'].env}) for the local backend, or database_url, blob_url, "
                "s3_endpoint_url and the S3 credentials for PostgreSQL and object storage",
                "nowhere",
            )
        return
    why = ", ".join(f"{name} (from {sources[name]})" for name in chosen)
    keys = ("s3_access_key_id", "s3_secret_access_key")
    # Neither key: the S3 client's own credential chain (a role, SSO, a credential_process,
    # AWS_* variables), which renews credentials that expire. One without the other is a
    # mistake, never a choice.
    chain = all(given.get(name) is None for name in keys)
    for name in REMOTE_KEYS:
        if given.get(name) is None and not (chain and name in keys):
            where = (
                f"{_secrets_file(profile)} [{profile}] or {KEYS[name].env}"
                if KEYS[name].secret
                else f"[{profile}] of settings.toml or {KEYS[name].env}"
            )
            pair = (
                f" (with {next(k for k in keys if k != name)}, which is set; or unset both to "
                "use the S3 client's own credentials: a role, AWS_* variables, ~/.aws)"
                if name in keys
                else ""
            )
            yield InvalidSettingError(
                profile,
                name,
                None,
                f"is required by the PostgreSQL and object storage backend, which this "
                f"profile uses because it sets {why}; set it in {where}{pair}",
                "nowhere",
            )


def _wait_problems(
    profile: str, values: Mapping[str, Any], sources: Mapping[str, str]
) -> Iterator[ConfigError]:
    """The client's bound on a database answer must outlast the server's lock_timeout: else a
    statement that waits for a lock (and would be refused 55P03, naming the blocker) has its
    connection closed first, with a vaguer message."""
    wait, lock = values.get("database_wait_seconds"), values.get("database_lock_wait_seconds")
    if wait is None or lock is None or wait > lock:
        return
    yield InvalidSettingError(
        profile,
        "database_wait_seconds",
        wait,
        f"must be more than database_lock_wait_seconds ({lock:g}, from "
        f"{sources['database_lock_wait_seconds']}): a statement may wait that long for a lock "
        "another client holds, and is then refused naming who holds it; raise "
        "database_wait_seconds or lower database_lock_wait_seconds",
        sources["database_wait_seconds"],
    )


#: The largest object S3 stores (5 TiB): the most ``max_upload_bytes`` may be on object
#: storage. Here, not in app.remote.objects, so that loading a profile imports no backend.
S3_MAX_OBJECT_BYTES: Final = 5 * 2**40


def _upload_problems(
    profile: str, values: Mapping[str, Any], sources: Mapping[str, str]
) -> Iterator[ConfigError]:
    """An upload limit the object store cannot take: S3 keeps no object above 5 TiB, so a
    larger file would be refused by the store after every byte of it was sent (red team 42)."""
    most = values.get("max_upload_bytes")
    if values.get("blob_url") is None or most is None or most <= S3_MAX_OBJECT_BYTES:
        return
    yield InvalidSettingError(
        profile,
        "max_upload_bytes",
        most,
        f"is more than the largest object S3 stores ({S3_MAX_OBJECT_BYTES} bytes, 5 TiB), "
        "and this profile keeps its files in object storage (blob_url, from "
        f"{sources['blob_url']}): a larger file would be refused by the store after it was "
        f"sent whole. Set max_upload_bytes ({KEYS['max_upload_bytes'].env}) to "
        f"{S3_MAX_OBJECT_BYTES} or less",
        sources["max_upload_bytes"],
    )


def _committed_secrets(
    profile: str, values: Mapping[str, Any], sources: Mapping[str, str]
) -> Iterator[ConfigError]:
    """The remote backend's secrets written into settings.toml, the file that is committed."""
    for name in REMOTE_KEYS:
        value = values.get(name)
        if value is None or not sources[name].startswith(f"{config_files.SETTINGS_FILE} "):
            continue
        if name == "database_url":
            if not _has_password(value):
                continue
            what = "has a password (password=, or sslpassword=, the SSL key's passphrase)"
        elif KEYS[name].secret:
            what = "is a secret"
        else:
            continue
        yield InvalidSettingError(
            profile,
            name,
            KEYS[name].show(value),
            f"{what}, and {config_files.SETTINGS_FILE} is committed with the code; move it "
            f"to [{profile}] of {_secrets_file(profile, why=True)} or set "
            f"{KEYS[name].env} in the environment of the commands that use it",
            sources[name],
        )


def _secrets_file(profile: str, *, why: bool = False) -> str:
    """The file where `profile`'s secrets belong. The committed .secrets.toml holds only the
    placeholders of development and testing (a test run reads no .local file); it once was
    named "not committed" for production's database password too."""
    if profile in (DEFAULT_PROFILE, "testing"):
        name, note = config_files.SECRETS_FILE, "committed, for placeholders like this profile's"
    else:
        name, note = config_files.LOCAL_FILES[1], "which git ignores"
    return f"{name} ({note})" if why else name


#: libpq's parameters that hold a secret: the password, and the passphrase of the client's
#: SSL key (red team 55: ``?sslpassword=`` in settings.toml was neither refused nor warned of).
DATABASE_SECRETS = ("password", "sslpassword")


def _has_password(database_url: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(database_url)
    return any(params.get(name) for name in DATABASE_SECRETS)


def _from_file(name: str, value: Any) -> Any:
    """A path setting's text from a settings file (UTF-8, as TOML is) as this process names
    the same bytes, whatever its locale: under ``LC_ALL=C PYTHONUTF8=0`` (names in ASCII) a
    ``data_root`` with an ``é`` made every command a ``UnicodeEncodeError`` traceback, and a
    locale of another encoding would name other bytes than the server's (red team 56). Text
    no bytes make is left as it is, for the checks to refuse."""
    if name not in KEYS or not KEYS[name].type.startswith("Path") or not isinstance(value, str):
        return value
    try:
        return sandboxing.path_from_text(value)
    except ValueError:
        return value


def _absolute_root(value: str, directory: Path) -> Path:
    """A configured root made absolute: ``~`` expanded, relative to the settings directory
    (never the current one), symlinks resolved; as spelled where a link on its way is one
    this process may not read, or a loop of links (`_unfollowable` refuses both for a
    profile's root; the plugin's start protects a shell's ``APP_DATA_ROOT`` so spelled, where
    a ``PermissionError`` or ``RuntimeError: Symlink loop`` traceback stopped the run, red
    team 61)."""
    spelled = _spelled_root(value, directory)
    try:
        return spelled.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.normpath(spelled))


def _followed(value: str, directory: Path) -> tuple[Path, str | None]:
    """A path setting's `value` with its links followed once: `_absolute_root`'s answer and
    `_unfollowable`'s (why a link on its way cannot be followed, or None), from the one
    ``realpath`` and ``stat`` that ``Path.resolve`` and `config_files.unresolvable` each
    made of the same spelled path (pathlib's ``resolve`` is ``os.path.realpath`` and, for a
    loop, a ``stat`` that fails with ``ELOOP``). Nothing is kept: every call walks the path
    as it is then. ``tests/test_config_followed.py`` holds both answers to the two
    functions' for links, loops, unreadable links and missing directories."""
    spelled = _spelled_root(value, directory)
    try:
        resolved = os.path.realpath(spelled)  # what Path.resolve reads
    except PermissionError as e:
        return Path(os.path.normpath(spelled)), config_files.unfollowable_reason(
            str(e.filename or spelled)
        )
    except OSError as e:
        return Path(os.path.normpath(spelled)), config_files.unreadable_link_reason(
            str(e.filename or spelled), e
        )
    loop = config_files.loop_at(resolved)
    if loop is not None:
        # Path.resolve's RuntimeError (a loop), where `_absolute_root` keeps the spelling.
        return Path(os.path.normpath(spelled)), config_files.loop_reason(loop)
    return Path(resolved), None


def _spelled_settings_dir(env: Mapping[str, str], directory: Path) -> Path:
    """The settings directory `directory` (resolved) as ``APP_SETTINGS_DIR`` spells it, where
    that leads there through a link (a deploy's ``current``): a root relative to it moves
    with the link."""
    raw = env.get(config_files.SETTINGS_DIR_ENV, "")
    try:
        spelled = Path(raw).expanduser()
        spelled = spelled if spelled.is_absolute() else Path.cwd() / spelled
        return spelled if raw.strip() and spelled.resolve() == directory else directory
    except (OSError, RuntimeError):
        return directory


def _spelled_root(value: str, directory: Path) -> Path:
    """`_absolute_root` before its symbolic links are resolved."""
    raw = Path(value)
    with contextlib.suppress(RuntimeError):  # `~user` unknown here: refused by `_unexpanded`
        raw = raw.expanduser()
    return raw if raw.is_absolute() else directory / raw


def _limit(path: Path, name: str, default: int) -> int:
    # Asked of the nearest directory that exists: the limits are the filesystem's. `path` is
    # absolute (`_absolute_root`'s), walked up as text, one name at a time: `os.path.dirname`
    # of pathlib's spelling gives its `parents` in order, where `(path, *path.parents)` built
    # every parent before the first question, six times a load (bench/README.md,
    # "perf-fixture73").
    directory = os.fspath(path)
    while True:
        try:
            return os.pathconf(directory, name)
        except (OSError, ValueError):
            pass
        parent = os.path.dirname(directory)  # noqa: PTH120 - text, as above
        if parent == directory:
            return default
        directory = parent


#: What a shell or a service manager expands and the app never does: ``$NAME``, ``${...}``,
#: ``$(...)``, and a systemd specifier (``%h``, ``%S``) as a whole name.
_UNEXPANDED = sandboxing.LazyPattern(
    r"\$(?:\{[^}]*\}?|\([^)]*\)?|[A-Za-z_][A-Za-z0-9_]*)|(?:(?<=/)|^)%[A-Za-z](?=/|$)",
    needs=("$", "%"),
)


def _unexpanded(key: Key, value: Any, directory: Path, root: Path | None = None) -> str | None:
    """Why a path setting's `value` holds text something else was meant to expand, or None.

    ``APP_DATA_ROOT='${STATE_DIRECTORY}/data'`` in a systemd ``Environment=`` or an env file
    (neither expands a variable), or ``data_root = "$HOME/data"`` in ``settings.toml``: the
    app took the text as a relative path, a new, empty root under the settings directory,
    which ``app serve`` created and served beside the real one (red team 36). The same in
    ``blob_url`` (``s3://bucket/${PREFIX}``) named a new, empty prefix in the real bucket,
    which the first server stamps and serves; ``database_url`` is left alone, where a ``$``
    may be part of a password.
    """
    if key.name == "blob_url" and isinstance(value, str):
        found = _UNEXPANDED.search(value.partition("://")[2])
        if found is None:
            return None
        return (
            f"holds {found.group()!r}, which a shell or a service manager expands, but "
            "nothing did: the app takes the URL as written, so it names a prefix of that very "
            "text, beside the one meant; write the URL out in full where the value is set "
            f"{_WHERE_EXPANDED}"
        )
    if not key.type.startswith("Path") or not isinstance(value, str):
        return None
    problem = (
        _shell_shorthand(value)
        or _home_unknown(key, value)
        or _process_relative(value, directory, root)
    )
    if problem is not None:
        return problem
    found = _UNEXPANDED.search(value)
    if found is None:
        return None
    return (
        f"holds {found.group()!r}, which a shell or a service manager expands, but nothing "
        "did: the app takes a path as written, so this root would be "
        f"{_shortened(str(_absolute_root(value, directory)))}, beside the one meant; write the "
        f"path out in full where the value is set {_WHERE_EXPANDED}"
    )


#: A URL's scheme (``file://``, ``file:/``), and a URL's escape of a byte (``%2F``).
#: Compiled when first needed (`sandboxing.LazyPattern`): every load checks each path setting.
_URL_SCHEME = sandboxing.LazyPattern(r"^[A-Za-z][A-Za-z0-9+.-]*:(?=/)", needs=(":",))
_URL_ESCAPE = sandboxing.LazyPattern(r"%[0-9A-Fa-f]{2}", needs=("%",))


def _beside(value: str, directory: Path) -> str:
    """The directory a path setting's `value` would be taken for, as a refusal names it:
    worked out only for a refusal (it resolves links, on every load of every profile)."""
    return f"{_shortened(str(_absolute_root(value, directory)))}, beside the one meant"


def _spelled_as_url(key: Key, value: Any, directory: Path) -> str | None:
    """Why a path setting's `value` is written as a URL (or with a URL's escapes), or None.

    ``data_root = "file:///srv/app/data"`` (a path copied from a browser's address bar, an
    object store's ``file://`` backend, or pytest-benchmark's storage option) was taken as a
    relative path, ``<settings dir>/file:/srv/app/data``: a new, empty root beside the real
    one, which ``app serve`` created, stamped and served; ``data%2Fproduction`` (a path
    escaped for a URL) and ``data\\production`` (Windows' separator) named a directory of
    that very text (red team 55).
    """
    from urllib.parse import unquote, urlsplit

    if not key.type.startswith("Path") or not isinstance(value, str):
        return None
    if (scheme := _URL_SCHEME.search(value)) is not None:
        where = _beside(value, directory)
        if scheme.group().lower() != "file:":
            spelled = (
                f"is written as a URL ({scheme.group()}//...)"
                if value[scheme.end() :].startswith("//")
                else f"starts with {scheme.group()!r}, a URL's scheme or another system's drive"
            )
            return (
                f"{spelled}, but a path setting takes a path on this machine: the app takes "
                f"it as written, so this root would be {where}; write the directory's path, "
                "starting with '/'"
            )
        parts = urlsplit(value)
        if parts.netloc not in ("", "localhost"):
            return (
                f"is a file:// URL of the machine {parts.netloc!r}, but a path setting takes "
                f"a path on this machine: the app takes it as written, so this root would be "
                f"{where}; mount that machine's directory here and write its path"
            )
        return (
            "is written as a file:// URL, but a path setting takes a path: the app takes it "
            f"as written, so this root would be {where}; write the path alone: "
            f"{unquote(parts.path)!r}"
        )
    return None


def _escaped(key: Key, value: Any, directory: Path) -> str | None:
    """Why a path setting's `value` holds a URL's escape (``%2F``) or Windows' separator,
    which the app takes as characters of a name, or None (see `_spelled_as_url`)."""
    from urllib.parse import unquote

    if not key.type.startswith("Path") or not isinstance(value, str):
        return None
    if "\\" in value:
        slashed = value.replace("\\", "/")
        slash = "\\".__contains__
        if _really_named(value, directory, lambda path: path.replace("\\", "/"), slash):
            return None
        return (
            "holds '\\', the separator of Windows' paths, which is a character of a name "
            f"here: this root would be {_beside(value, directory)}; write '/' instead: "
            f"{slashed!r}"
            f"{_MEANT_AS_WRITTEN.format(what=chr(92))}"
        )
    if (escape := _URL_ESCAPE.search(value)) is not None:
        if _really_named(value, directory, unquote, _URL_ESCAPE.search):
            return None
        return (
            f"holds {escape.group()!r}, a URL's escape of {unquote(escape.group())!r}, which "
            f"the app does not decode: it takes a path as written, so this root would be "
            f"{_beside(value, directory)}; write the path with the character itself: "
            f"{unquote(value)!r}"
            f"{_MEANT_AS_WRITTEN.format(what=escape.group())}"
        )
    return None


#: How an `_escaped` refusal says what to do where the name is meant as written.
_MEANT_AS_WRITTEN: Final = (
    " (if a directory really has {what!r} in its name, make it first: a path whose "
    "directories exist as written is taken, where the path it would otherwise mean does not "
    "exist)"
)


def _really_named(
    value: str, directory: Path, meant: Callable[[str], str], marked: Callable[[str], Any]
) -> bool:
    """Whether `value`'s marks (a ``\\``, a ``%XX``; `marked` finds them) all lie in names of
    directories that exist as written, while what they would otherwise mean (`meant` of
    those directories' path) does not exist: a directory really named so (``50%41off``,
    made by hand), not a spelling. Refused, such a root could not be given at all, and the
    refusal's advice named a path that does not exist (red team 56). Where both exist, or
    the marks are in names still to be made (the first start would make a directory of that
    very text beside the one meant: red team 55), it is refused."""
    spelled = _spelled_root(value, directory)
    existing = next(p for p in (spelled, *spelled.parents) if os.path.lexists(p))
    if marked(str(spelled)[len(str(existing)) :]):
        return False
    return not os.path.lexists(meant(str(existing)))


def _shell_shorthand(value: str) -> str | None:
    """Why `value` starts with a shell's shorthand for a directory of its own (bash's
    ``~+``, ``~-``, ``~N``), or None where a user of that name has a home here.

    Python expands ``~`` and ``~user`` only: ``APP_DATA_ROOT='~+/data'`` was refused as
    under the home of "user '+'", a user of another machine, which named nothing to fix
    (red team 71). Text, not a fact about where the app runs: refused for every profile.
    """
    home = value.split("/", 1)[0]
    rest = home[1:]
    if not home.startswith("~") or not (rest in ("+", "-") or rest.lstrip("+-").isdigit()):
        return None
    try:
        Path(home).expanduser()
    except RuntimeError:
        meant = {"+": "the current directory, $PWD", "-": "the previous current directory, $OLDPWD"}
        return (
            f"starts with {home!r}, a shell's shorthand for "
            f"{meant.get(rest, 'an entry of its directory stack (`dirs`)')}, which only a "
            "shell expands, and none did here: the app would take it for the home of a user "
            f"{rest!r}; write the path out in full where the value is set"
        )
    return None  # a user of that name


#: A link of procfs of the reading process's own (`sandbox.process_link`'s answer): its
#: working directory, its root, an open descriptor (``/dev/fd/N``, ``/dev/stdin`` lead there).
_OWN_PROCESS_LINK = sandboxing.LazyPattern(
    r"^/proc/(self|thread-self|\d+)(?:/task/\d+)?/", needs=("proc",)
)


def _process_relative(value: str, directory: Path, root: Path | None = None) -> str | None:
    """Why a path setting's `value` names the reading process's working directory, root or
    an open descriptor through procfs (``/proc/self/cwd/data``), or None: a root that moved
    with `cd` (``/tmp/data`` run from ``/tmp``, ``/var/tmp/data`` from ``/var/tmp``), as
    ``{env[PWD]}`` and bash's ``~+`` did (red team 74). Spelled so, or reached so: a symbolic
    link to ``/proc/self/cwd`` on the way, or ``/dev/fd/N`` (a link to ``/proc/self/fd``),
    was followed at each load to wherever the process was (red team 75). `root`: the value
    resolved a moment ago (`_followed`); where it is the spelling, no link is on the way."""
    if root is not None and "proc" not in value and ".." not in value and value[:1] != "~":
        # As text (every load of every profile comes here): the spelling made absolute is
        # the resolved root, so no symbolic link is on the way, nor a link of /proc.
        spelled_text = value if value[:1] == "/" else os.path.join(directory, value)  # noqa: PTH118
        if os.path.normpath(spelled_text) == str(root):
            return None
    spelled = _spelled_root(value, directory)
    normal = os.path.normpath(spelled)
    link = sandboxing.process_link(spelled)
    found = None if link is None else _OWN_PROCESS_LINK.search(link)
    if found is None:
        return None
    assert link is not None
    kind = link.rsplit("/", 2)
    via = _first_link(spelled)
    reached = (
        ""
        if via is None or normal.startswith(link.rstrip("/") + "/") or normal == link
        else f" (reached through the symbolic link {via[0]}, which points to {via[1]!r})"
    )
    repoint = (
        ", or point the link at the directory it means"
        if reached and via is not None and not _kernels_own_link(via[0])
        else ""
    )
    if found.group(1) not in ("self", "thread-self", str(os.getpid())):
        problem = _other_process_relative(link, kind[-2] if kind[-2] == "fd" else kind[-1], reached)
        return None if problem is None else problem + repoint
    what = (
        "the working directory"
        if kind[-1] == "cwd"
        else "the root directory"
        if kind[-1] == "root"
        else "an open descriptor"
    )
    return (
        f"goes through {link}{reached}, {what} of the process that reads it, so the root "
        "would move with each `cd` (or `dup2`, or `chroot`: a new, empty root, or another "
        "profile's, depending on where and how the command runs); a relative path resolves "
        "against the settings directory, never the working directory: write the path out in "
        "full where the value is set" + repoint
    )


def _other_process_relative(link: str, kind: str, reached: str) -> str | None:
    """Why a path setting through `link`, another process's working directory or open
    descriptor (`kind`: ``cwd``, ``fd``) in this mount namespace, cannot be a root, or None
    (`reached`: the symbolic link that led there, said as `_process_relative` says it).

    ``/proc/$$/cwd/data`` set in a shell is that shell's ``$PWD`` (refused as
    ``{env[PWD]}``: red team 74): each command's root moved with the shell's `cd`, and,
    once that process ended, named nothing or another process's directory, its pid reused
    (red team 75 on regress, round b). A container's root (``/proc/<pid>/root``), a link
    this process may not follow, one of a process that has ended, one whose directory was
    removed or lies in another mount namespace: each refused by `app.config_files` for
    what it is (red teams 59 and 61), not here."""
    if kind not in ("cwd", "fd"):
        return None
    try:
        here = os.stat(link)  # noqa: PTH116 - the kernel's own walk, as config_files'
        # What its text names: another directory (or none), where the link leads into
        # another mount namespace or to a directory that was removed.
        if here.st_nlink == 0 or not os.path.samestat(here, os.stat(os.path.realpath(link))):  # noqa: PTH116
            return None
    except OSError:
        return None
    pid = link.split("/")[2]
    try:
        command = Path(f"/proc/{pid}/comm").read_text().strip()
        owner = config_files._user_name(os.stat(f"/proc/{pid}").st_uid)  # noqa: PTH116
        whose = f"process {pid} ({command}, user {owner})"
    except OSError:
        whose = f"process {pid}"
    what, moves = (
        ("the working directory", "`cd`") if kind == "cwd" else ("an open descriptor", "`dup2`")
    )
    return (
        f"goes through {link}{reached}, {what} of {whose}, another process than the one "
        f"that reads it, so the root would move with each {moves} of that process (a "
        "shell's /proc/$$/cwd is its $PWD), and name nothing, or another process's "
        "directory, once it ends and its pid is used again: write the path out in full "
        "where the value is set"
    )


def _kernels_own_link(path: str) -> bool:
    """Whether ``path`` is a link the kernel or the system keeps (`/proc`'s, `/dev/fd`, the
    standard streams'), which a user cannot point elsewhere. Not any path under `/dev/`:
    `/dev/shm` is a tmpfs where a user's own links live (a test run's temporary root there
    was told not to point its link elsewhere)."""
    return path.startswith("/proc/") or any(
        path == link or path.startswith(link + "/")
        for link in ("/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr")
    )


def _first_link(path: Path) -> tuple[str, str] | None:
    """The first symbolic link on `path`'s way and its text, or None (for a refusal only)."""
    current = Path("/")
    for name in path.parts[1:]:
        current = current / name
        with contextlib.suppress(OSError):
            return str(current), str(current.readlink())
    return None


def _home_unknown(key: Key, value: Any) -> str | None:
    """Why this process cannot expand the ``~`` or ``~user`` a path setting's `value` starts
    with (`_home_problem`), or None: a fact about where the app runs, not about the text."""
    if not key.type.startswith("Path") or not isinstance(value, str):
        return None
    home = value.split("/", 1)[0]
    return _home_problem(home) if home.startswith("~") else None


def _home_problem(home: str) -> str | None:
    """Why `home` (``~`` or ``~user``, a path's first name) names no home directory, or None."""
    if home == "~" and (unusable := _unusable_home()) is not None:
        return (
            f"starts with '~', but {unusable}: write the path out in full where the value is "
            "set, or set HOME to this user's home directory"
        )
    try:
        Path(home).expanduser()
    except RuntimeError:
        # pathlib raised it from every command, a bare traceback (red team 36).
        who = f"user {home[1:]!r}" if home != "~" else "this process (HOME is not set)"
        return (
            f"starts with {home!r}, but this system knows no home directory of {who} "
            "(a user of another machine, or one a container lacks): write the path out "
            "in full where the value is set"
        )
    return None


def _unusable_home() -> str | None:
    """Why ``~`` cannot stand for this process's home directory, or None.

    Python expands ``~`` to ``$HOME`` as it is: ``HOME=`` (empty, as an ``env`` line or a
    container's ``ENV HOME=`` leaves it) made ``~/data`` the root ``/data``, and a relative
    ``HOME`` a root under the settings directory, each created and served, empty, beside the
    real one (red team 48). ``HOME`` unset is the password database's home (pathlib).
    """
    if "HOME" not in os.environ:
        return None
    home = os.environ["HOME"]
    if not home:
        return "HOME is set and empty, so '~' would name the filesystem's root '/'"
    if not home.startswith("/"):
        return f"HOME is {home!r}, not an absolute path, so '~' names no home directory"
    return None


_WHERE_EXPANDED = (
    "(systemd expands ${VAR} in ExecStart= only, not in Environment= or an EnvironmentFile=, "
    "and docker's --env-file expands nothing)"
)


def _unnameable(key: Key, value: Any, directory: Path, root: Path | None = None) -> str | None:
    """Why the system cannot name the directory a path setting's `value` names, or None.

    A name past ``NAME_MAX`` or a path past ``PATH_MAX`` was taken as any other root: `app
    status` and `app serve` then failed with a bare ``OSError: File name too long``
    traceback, and `app data check` said the directory does not exist (red team 36).
    """
    if not key.type.startswith("Path") or not isinstance(value, str):
        return None
    root = _absolute_root(value, directory) if root is None else root  # `_followed`'s
    encoded = os.fsencode(root)
    path_max = _limit(root, "PC_PATH_MAX", 4096)
    if len(encoded) >= path_max:
        return (
            f"is {len(encoded)} bytes long, past the system's limit of {path_max - 1} bytes "
            "for a path (PATH_MAX): no directory can be made or opened there, so every "
            "command would fail on it; point it at a path of a few hundred bytes at most"
        )
    name_max = _limit(root, "PC_NAME_MAX", 255)
    for part in root.parts[1:]:
        if len(os.fsencode(part)) > name_max:
            return (
                f"has a name of {len(os.fsencode(part))} bytes ({part[:24]!r}...), "
                f"past the filesystem's limit of {name_max} bytes for one name (NAME_MAX): "
                "no directory can be made or opened there, so every command would fail on "
                "it; shorten that name"
            )
    return None


def _not_text_resolved(
    key: Key, value: Any, directory: Path, root: Path | None = None
) -> str | None:
    """Why the directory a path setting's `value` resolves to has a name that is not text
    (a byte that is not UTF-8), where `value` itself is text, or None.

    Such a byte in the value (``APP_DATA_ROOT=$'/srv/r\\xff'``) is refused by `_unseen`
    (red team 59), but one that came with the settings directory (``data_root =
    "data/production"`` under ``APP_SETTINGS_DIR=$'/opt/app\\xff'``) or through a symbolic
    link was taken: every message and ``--json`` output named the root as ``\\udcff`` text
    that names no path, and the ``install -d`` a protected profile's missing root is told
    to run made another directory (red team 60).
    """
    if not key.type.startswith("Path") or not isinstance(value, str):
        return None
    root = _absolute_root(value, directory) if root is None else root  # `_followed`'s
    # Its bytes read as UTF-8, not as this process's locale reads them: under an ASCII one
    # (``LC_ALL=C PYTHONUTF8=0``) every byte beyond ASCII is an escape, and a settings
    # directory under ``données/`` was refused as "the byte 0xC3, which is not UTF-8" (red
    # team 60 on regress, red team 56's tests).
    text = sandboxing.path_as_text(root)
    if text.isascii():  # no U+DC80 to U+DCFF in it: one pass in C, not a call a character
        return None
    position = next((i for i, char in enumerate(text) if not_utf8_byte(char)), None)
    if position is None:
        return None
    parts = Path(text).parts
    cut = next(i for i, part in enumerate(parts) if any(map(not_utf8_byte, part)))
    holder = Path(*root.parts[: cut + 1])
    # The name as its writer most likely meant it: each byte that is not UTF-8 read as
    # Latin-1 (0xE9 is é), the rest kept.
    meant = "".join(chr(ord(char) - 0xDC00) if not_utf8_byte(char) else char for char in parts[cut])
    renamed = holder.with_name(meant)
    settings = directory.resolve()
    if settings.is_relative_to(holder):
        came = f"the settings directory, {shell_word(settings)}, is in it"
        then = (
            "then give the settings directory by its new name "
            f"(`export APP_SETTINGS_DIR={shell_word(renamed / settings.relative_to(holder))}`)"
        )
    else:
        came = "a symbolic link on its way leads there"
        then = "then point that link at the new name"
    return (
        f"resolves to {shell_word(root)}, whose name holds, at position {position}, "
        f"{not_utf8_byte(text[position])} ({came}): every message and JSON output would "
        "name the root as text that is no path, and the commands they print would act on "
        "another one; rename the directory that holds it to a name in UTF-8, here its bytes "
        f"read as Latin-1 (`mv {shell_word(holder)} {shell_word(renamed)}`), {then}"
    )


def _unfollowable(key: Key, value: Any, directory: Path) -> str | None:
    """Why a path setting's `value` names no directory in this process, where it passes
    through a link this process may not read (``/proc/<pid>/root`` of another user's
    process) or a loop of links, or None (`config_files.unresolvable`; red team 61)."""
    if not key.type.startswith("Path") or not isinstance(value, str):
        return None
    return config_files.unresolvable(str(_spelled_root(value, directory)))


def _misresolved(key: Key, value: Any, directory: Path, root: Path | None = None) -> str | None:
    """Why a path setting's `value` leads to another directory than the one it resolves to
    in this process, or None (`config_files.resolved_elsewhere`).

    ``APP_DATA_ROOT=/proc/<container's pid>/root/srv/app/data/production``, meant for the
    container's own data, resolved to this host's ``/srv/app/data/production``, and
    ``app --profile production data purge --yes-i-mean-it`` purged the host's production
    root (red team 59).
    """
    if not key.type.startswith("Path") or not isinstance(value, str):
        return None
    # `root`: `_followed`'s resolving of the same spelled path, a moment ago, nothing made
    # since (the checks between only read); taken where the path itself exists (issue 11).
    found = config_files.resolved_elsewhere(
        str(_spelled_root(value, directory)), None if root is None else str(root)
    )
    if found is None:
        return None
    here, resolved = found
    if (gone := config_files.deleted_reason(here, resolved)) is not None:
        return gone
    return (
        f"leads through {_shortened(here, 400)} to another directory than the one it resolves "
        f"to in this process, {_shortened(resolved, 400)}: {config_files.elsewhere_link(here)}, "
        "which is another directory here; name the directory as this "
        "machine sees it (where the container's volume is mounted, `findmnt` or `docker "
        "inspect` shows it)"
    )


def _shortened(text: str, keep: int = 100) -> str:
    """`text`, cut to its first `keep` characters in a message (a path of 6 kB, say)."""
    return text if len(text) <= keep else f"{text[:keep]}... ({len(os.fsencode(text))} bytes)"


def overlaps(
    roots: Mapping[str, tuple[Path, str]],
    *,
    by_identity: bool = True,
    through_mounts: bool = False,
) -> Iterator[DataRootOverlapError]:
    """Every pair of profiles whose roots are equal or nested, by path and, unless
    `by_identity` is False, by device and inode; with `through_mounts`, also where a bind
    mount on a root's way shows it from a directory inside another root (`_shown_from`).

    Args:
        roots: ``{profile: (root, where the root came from)}``.
    """
    names = list(roots)
    # By device and inode too: a bind mount is one directory under two paths that no
    # comparison of paths shows (a container's volume, `mount --bind` into a home directory).
    seen: dict[str, _Identity | None] = {}
    found = {
        name: _identities(root, seen) if by_identity else (None, {})
        for name, (root, _) in roots.items()
    }
    shown = _shown_from([root for root, _ in roots.values()]) if through_mounts else {}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            (a, a_source), (b, b_source) = roots[first], roots[second]
            if sandboxing.inside(a, b) or sandboxing.inside(b, a):
                yield DataRootOverlapError(first, a, a_source, second, b, b_source)
                continue
            (a_own, a_above), (b_own, b_above) = found[first], found[second]
            if a_own is not None and a_own == b_own:
                yield DataRootOverlapError(first, a, a_source, second, b, b_source, a)
            elif b_own is not None and b_own in a_above:
                alias = Path(a_above[b_own])
                yield DataRootOverlapError(first, a, a_source, second, b, b_source, alias, first)
            elif a_own is not None and a_own in b_above:
                alias = Path(b_above[a_own])
                yield DataRootOverlapError(first, a, a_source, second, b, b_source, alias, second)
            elif by_identity and (folded := _folded_as_one(a, b, a_own, b_own)) is not None:
                # One directory spelled in two cases on a filesystem that folds case (exFAT
                # through FUSE numbers it once per spelling): neither the paths nor the
                # identities showed it (red team 64).
                yield DataRootOverlapError(first, a, a_source, second, b, b_source, folded=folded)
            elif a in shown or b in shown:
                # A bind mount of a directory inside the other root (its empty .trash/,
                # bound into a home directory): neither the paths nor the identities of the
                # two roots and their parents show it (red team 62).
                a_is, b_is = shown.get(a, a), shown.get(b, b)
                if sandboxing.inside(a_is, b_is):
                    inner, alias, real = first, a, a_is
                elif sandboxing.inside(b_is, a_is):
                    inner, alias, real = second, b, b_is
                else:
                    continue
                yield DataRootOverlapError(
                    first, a, a_source, second, b, b_source, alias, inner, shown=real
                )


def fold(name: str) -> str:
    """`name` as a filesystem that folds case compares it: in NFC, then case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def one_entry_each(one: tuple[str, ...], other: tuple[str, ...]) -> bool:
    """Whether each part at which the paths `one` and `other` (their parts, compared as far
    as the shorter goes) are spelled otherwise is one directory entry under both spellings:
    both reach an entry, and their parent lists one entry of that folded name. A filesystem
    that keeps case apart lists two; a part out of reach is not known to be one. The look
    `_folded_as_one` makes of two roots and `app.lock` of a holder's lock file (red team
    64)."""
    try:
        for i, (a, b) in enumerate(zip(one, other, strict=False)):
            if a == b:
                continue
            parent = Path(*one[:i])
            with os.scandir(parent) as entries:
                if sum(1 for entry in entries if fold(entry.name) == fold(a)) != 1:
                    return False  # two entries: a filesystem that keeps case apart
            (parent / a).lstat()
            (parent / b).lstat()
    except (OSError, ValueError):
        return False
    return True


def _folded_as_one(
    a: Path, b: Path, a_own: _Identity | None = None, b_own: _Identity | None = None
) -> Path | None:
    """The first directory where `a` and `b` (absolute, resolved, neither inside the other
    by path) take two spellings of one name that its filesystem answers with one entry (one
    that folds case: exFAT, FAT, NTFS, a ``casefold`` directory), where every other
    component is alike and one path is the other or lies inside it that way; None where not.

    A FUSE filesystem that numbers its files by the name they are looked up by (exfat-fuse)
    gives ``/m/App/prod`` and ``/m/app/PROD`` two inode numbers, so `_identities` saw two
    directories, and ``app doctor`` said "every data root is distinct" of production's root
    and development's named in another case (red team 64). Told by the parent's listing:
    both spellings reach an entry, and the parent lists one entry of that folded name.
    Nothing is looked at unless the folded paths match (a ``str.casefold`` per part).
    """
    short, long = (a.parts, b.parts) if len(a.parts) <= len(b.parts) else (b.parts, a.parts)
    if [fold(p) for p in short] != [fold(p) for p in long[: len(short)]]:
        # One FUSE filesystem mounted (or bound) at two points, each root through one (red
        # team 64 on regress): `b` as the mount that shows `a` shows it.
        if (seen := _through_a_s_mount(a, b, a_own, b_own)) is None:
            return None
        return _folded_as_one(a, seen)
    pairs = zip(short, long, strict=False)
    differs = next((i for i, (x, y) in enumerate(pairs) if x != y), None)
    if differs is None or not one_entry_each(short, long):
        return None
    return Path(*short[:differs])


def _through_a_s_mount(
    a: Path, b: Path, a_own: _Identity | None, b_own: _Identity | None
) -> Path | None:
    """`b` as the mount that shows `a` shows it, where both roots exist on one device of a
    filesystem that gives no id (FUSE: exfat-fuse numbers a file once per spelling, so the
    identities of ``/mnt/usb/App/prod`` and ``/media/usb/app/PROD``, the one filesystem
    mounted at two points, differ) and two mounts of it show them; None where not. The
    mount table is read only for such a pair."""
    if a_own is None or b_own is None or a_own[0] != b_own[0]:
        return None
    from app import mountinfo

    try:
        if os.statvfs(a).f_fsid:
            return None  # a disk or a tmpfs gives an id: its identities already told
        entries = mountinfo.table()
    except OSError:
        return None
    one, other = mountinfo.showing(str(a), entries), mountinfo.showing(str(b), entries)
    if one is None or other is None or one is other or one.device != other.device:
        return None
    try:
        inside = Path(os.fsdecode(other.root)) / b.relative_to(os.fsdecode(other.point))
        seen = Path(os.fsdecode(one.point)) / inside.relative_to(os.fsdecode(one.root))
    except ValueError:
        return None  # a directory the mount that shows `a` does not show
    return seen if seen != b else None


def _shown_from(roots: Iterable[Path]) -> dict[Path, Path]:
    """Each of `roots` (absolute, resolved) that a mount on its way shows from another
    directory (`app.mountinfo.shown_from`: a bind mount of a directory), and that directory.
    One reading of Linux's mountinfo; nothing where there is none."""
    from app import mountinfo

    mounts, lookup = mountinfo.read_looked_up()
    if not mounts:
        return {}
    shown = {}
    for root in roots:
        source, _ = mountinfo.shown_and_hidden_from(root, mounts, lookup)
        if source is not None and source != root:
            shown[root] = source
    return shown


_Identity = tuple[int, int]


def _identities(
    root: Path, seen: dict[str, _Identity | None]
) -> tuple[_Identity | None, dict[_Identity, str]]:
    """``(st_dev, st_ino)`` of `root` (None if it does not exist yet), and of each of its
    existing ancestors, with its path: a root lies in another if one of them is the other.
    `seen` keeps each path's, for the next root (profiles' roots share most ancestors)."""
    # os.stat on strings: on every load, a Path per ancestor cost more than the stats.
    own = None
    above: dict[_Identity, str] = {}
    path = start = str(root)
    while True:
        if path not in seen:
            try:
                found = os.stat(path)  # noqa: PTH116 - see above
            except OSError:
                seen[path] = None
            else:
                seen[path] = (found.st_dev, found.st_ino)
        key = seen[path]
        if key is not None and path == start:
            own = key
        elif key is not None:
            above.setdefault(key, path)
        parent = os.path.dirname(path)  # noqa: PTH120 - see above
        if parent == path:
            return own, above
        path = parent


def remote_overlaps(
    databases: Mapping[str, tuple[str, str]], blobs: Mapping[str, tuple[str, str | None, str]]
) -> Iterator[ResourceOverlapError]:
    """Every pair of profiles that name one database, or overlapping object prefixes.

    Args:
        databases: ``{profile: (database_url, where it came from)}``.
        blobs: ``{profile: (blob_url, s3_endpoint_url, where blob_url came from)}``.
    """
    if not databases and not blobs:
        return  # a local-only configuration never imports psycopg (every pytest start)
    from app.remote.errors import ResourceOverlapError
    from app.remote.objects import overlap_note, parse_blob_url
    from app.remote.pg import same_database

    names = list(databases)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            (a, a_source), (b, b_source) = databases[first], databases[second]
            if same_database(a, b):
                yield ResourceOverlapError(
                    "database", first, mask_database_url(a), a_source,
                    second, mask_database_url(b), b_source,
                )  # fmt: skip
    located = {
        name: (parse_blob_url(url, endpoint), src) for name, (url, endpoint, src) in blobs.items()
    }
    names = list(located)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            (here, here_source), (there, there_source) = located[first], located[second]
            note = overlap_note(here, there)
            if note is not None:
                yield ResourceOverlapError(
                    "object prefix", first, str(here), here_source,
                    second, str(there), there_source, note=note,
                )  # fmt: skip


def _overlaps(
    resolved: Mapping[str, Resolved], *, by_identity: bool = True, through_mounts: bool = False
) -> Iterator[ConfigError]:
    yield from overlaps(
        {
            name: (r.data_root, r.sources["data_root"])
            for name, r in resolved.items()
            if r.data_root is not None
        },
        by_identity=by_identity,
        through_mounts=through_mounts,
    )
    databases = {
        name: (r.values["database_url"], r.sources["database_url"])
        for name, r in resolved.items()
        if r.values.get("database_url") is not None
    }
    blobs = {
        name: (r.values["blob_url"], r.values.get("s3_endpoint_url"), r.sources["blob_url"])
        for name, r in resolved.items()
        if r.values.get("blob_url") is not None
    }
    if databases or blobs:
        yield from remote_overlaps(databases, blobs)


def _serving_problems(selected: Resolved, others: Mapping[str, Resolved]) -> Iterator[ConfigError]:
    """What the selected profile needs to serve, beyond well-formed values."""
    # Keyed on `protected`, not on the name: a profile that guards data worth a confirmation
    # guards it over HTTP too (production is always protected).
    if selected.values.get("protected"):
        name = selected.profile
        token = selected.values.get("api_token")
        source = selected.sources.get("api_token", "built-in default")
        if token is None:
            yield InvalidSettingError(
                name,
                "api_token",
                None,
                f"{name} is protected and requires an API token; set "
                "APP_API_TOKEN in the service's environment (or api_token in a secrets file "
                "that is not committed)",
                source,
            )
        else:
            problem = _weak_token(token, [r.values.get("api_token") for r in others.values()])
            if problem is not None:
                yield InvalidSettingError(name, "api_token", mask(token), problem, source)
    elif isinstance(token := selected.values.get("api_token"), str):
        problem = _unsendable_token(token)
        if problem is not None:
            source = selected.sources.get("api_token", "built-in default")
            yield InvalidSettingError(selected.profile, "api_token", mask(token), problem, source)
    yield from selected.serving


# What a production token must resist: about 10^20 guesses (66 bits), by zxcvbn's estimate,
# which sees through repeats, sequences, keyboard walks, words and the other profiles' tokens.
_MIN_TOKEN_GUESSES_LOG10 = 20
_MIN_PROTECTED_TOKEN = 16
_GENERATE_HINT = (
    "set a real one with APP_API_TOKEN, generated with "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)


def _weak_token(token: str, placeholders: list[str | None]) -> str | None:
    """Why ``token`` must not guard a protected profile, or ``None`` if it may."""
    if token != token.strip():
        # The server would compare the padded value and nobody could authenticate (#9).
        return (
            "has leading or trailing whitespace (a newline from `echo` or a secrets file?); "
            "remove it where the token is set: clients send it without, so nobody could "
            "authenticate"
        )
    unsendable = _unsendable_token(token)
    if unsendable is not None:
        return unsendable
    known = [p for p in placeholders if p]
    if token.casefold() in {p.strip().casefold() for p in known}:
        return f"is the token of another profile (a committed placeholder); {_GENERATE_HINT}"
    if len(token) < _MIN_PROTECTED_TOKEN:
        return f"is shorter than {_MIN_PROTECTED_TOKEN} characters; {_GENERATE_HINT}"
    guesses = _guesses_log10(token, tuple(known))
    if guesses < _MIN_TOKEN_GUESSES_LOG10:
        return (
            f"is too easy to guess (about 10^{guesses:.0f} guesses; at least "
            f"10^{_MIN_TOKEN_GUESSES_LOG10} are needed: no repeats, sequences, words or "
            f"placeholders); {_GENERATE_HINT}"
        )
    return None


@functools.lru_cache(maxsize=8)
def _guesses_log10(token: str, known: tuple[str, ...]) -> float:
    """zxcvbn's estimate for `token` (its first 64 characters) beside `known`, once per
    process for the same two: it is pure Python, about 12 ms of CPU for a 43-character token
    on this project's machine (bench/README.md, branch perf-suite76b), and ``app doctor``
    resolves the selected profile's serving problems twice."""
    from zxcvbn import zxcvbn

    # zxcvbn refuses long inputs (its cost grows with length); a strong prefix is enough.
    guesses: float = zxcvbn(token[:64], user_inputs=list(known))["guesses_log10"]
    return guesses


def home_at(path: Path) -> str | None:
    """Whose home directory ``path`` is, in words, or ``None``: ``HOME``'s (when absolute),
    or the password database's home of the user running the app or of the path's owner.

    The deploy guide made the service user with ``useradd --home /var/lib/app``, its data
    root: its step 2, ``sudo -u app pip install``, then wrote pip's cache into
    ``/var/lib/app/.cache``, and the first start was refused as a directory holding files
    that are not the app's, told to point data_root at an empty directory (red team 51).
    Whatever runs as that user keeps its files there (caches, a shell's history).
    """
    try:
        found = path.stat()
    except OSError:
        return None
    import pwd  # here: only a root that exists pays for it

    candidates: list[tuple[str, str]] = []
    home = os.environ.get("HOME", "")
    if home and Path(home).is_absolute():
        candidates.append((home, f"HOME ({home})"))
    for uid in dict.fromkeys((os.geteuid(), found.st_uid)):
        with contextlib.suppress(KeyError):
            user = pwd.getpwuid(uid)
            candidates.append((user.pw_dir, f"the home directory of user {user.pw_name!r}"))
    for directory, whose in candidates:
        with contextlib.suppress(OSError):
            if os.path.samestat(Path(directory).stat(), found):
                return whose
    return None


def home_remedy(whose: str) -> str:
    """What gives the user of `home_at`'s answer a home outside its data root."""
    if whose.startswith("HOME"):
        return "set HOME to a directory outside the data root where the app runs"
    user = whose.rsplit(" ", 1)[-1].strip("'")
    return (
        f"give user {user!r} a home outside the data root (as root, with none of its "
        f"processes running: `usermod --home /opt/app {user}`, the directory the app is "
        "installed in; Deploy production, step 1)"
    )


def _roots_at_home(resolved: Mapping[str, Resolved]) -> tuple[str, ...]:
    """A data root that is a user's home directory (`home_at`)."""
    out = []
    for name, profile in resolved.items():
        root = profile.data_root
        whose = None if root is None else home_at(root)
        if whose is not None:
            out.append(
                f"data_root of profile {name!r} ({root}) is {whose}: what programs run as that "
                "user keep in their home (pip's cache in .cache, a shell's history) is written "
                "into the data root, and a root that holds such files before its first start "
                f"is refused; {home_remedy(whose)}"
            )
    return tuple(out)


def _roots_writable_by_others(resolved: Mapping[str, Resolved]) -> tuple[str, ...]:
    """A data root that other users may change without the app (red team 56).

    The docs name the operating system as the barrier for whatever bypasses the app (a
    test's literal ``rm -rf``, a script): run tests as a user who cannot write production's
    data. A root made by hand ``chmod 777``, or kept under a
    directory others may write that has no sticky bit, takes that barrier away, and every
    command said nothing. Only a root that is there is looked at; creating nothing.
    """
    import stat

    out = []
    for name, profile in resolved.items():
        root = profile.data_root
        try:
            mode = None if root is None else root.stat().st_mode
        except OSError:
            continue  # not there yet (the first start makes it 0700), or refused elsewhere
        if root is None or mode is None or not stat.S_ISDIR(mode):
            continue
        if mode & stat.S_IWOTH:
            # Others only: a group's write bit is how a volume is shared with its service
            # (Kubernetes' fsGroup makes it root:<group>, mode 2775; red team 56 on regress).
            out.append(
                f"data_root of profile {name!r} ({root}) is writable by others "
                f"(mode {stat.S_IMODE(mode):04o}): any local user, and a test suite run by one, "
                "can delete or move what is in it without the app (`rm -rf`, a script), where "
                "no check of the app's can see it, and the permission is the barrier; "
                f"`chmod o-w {shell_word(root)}` (the app makes its roots 0700)"
            )
            continue
        for parent in root.parents:
            try:
                found = parent.stat().st_mode
            except OSError:
                break
            if found & stat.S_IWOTH and not found & stat.S_ISVTX:
                out.append(
                    f"data_root of profile {name!r} ({root}) lies under {parent}, which others "
                    f"may write (mode {stat.S_IMODE(found):04o}, no sticky bit): any local user "
                    "can move the whole root aside (`mv`) and put another directory in its "
                    f"place; `chmod go-w {shell_word(parent)}`"
                )
                break
    return tuple(out)


def _readable_secrets(resolved: Mapping[str, Resolved], paths: Iterable[Path]) -> tuple[str, ...]:
    """A protected profile's secret kept in a settings file other users may read (red team
    37: a ``.secrets.local.toml`` of mode 0644 with production's token, said nowhere)."""
    by_name = {path.name: path for path in paths}
    out = []
    for name, profile in resolved.items():
        if not profile.values.get("protected"):
            continue
        for key, source in profile.sources.items():
            # The file may be named inside the source, as in a test run's "pytest scratch
            # database (configured: ..., .secrets.toml [production])": the value is there.
            named = [path for file, path in by_name.items() if f"{file} [" in source]
            path = named[0] if named else None
            if path is None or key not in KEYS or profile.values.get(key) is None:
                continue
            if key == "database_url":
                # Its password is as much a secret as the token (red team 38: a 0644 file
                # with production's database password was said nothing of).
                try:
                    secret = _has_password(str(profile.values[key]))
                except Exception:  # an unparsable URL is refused elsewhere, naming it
                    secret = False
                if not secret:
                    continue
                key_shown = "database_url (its password)"
            elif KEYS[key].secret:
                key_shown = key
            else:
                continue
            try:
                mode = path.stat().st_mode & 0o777
            except OSError:
                continue
            if mode & 0o077:
                out.append(
                    f"{path} holds profile {name}'s {key_shown} and other users of this host may "
                    f"read it (mode {mode:04o}): `chmod 600 {path}` (owned by the user the "
                    f"app runs as), or set {ENV_PREFIX}_{key.upper()} in the service's "
                    "environment instead"
                )
    return tuple(out)


def _another_profile_s(key: str, profiles: Iterable[str]) -> tuple[str, str] | None:
    """``(profile, key)`` where `key` (of ``APP_<KEY>``, in lower case) reads as a profile's
    name and one of the app's keys (``production__data_root``, ``production_port``)."""
    for profile in profiles:
        for joint in ("__", "_"):
            rest = key.removeprefix(profile.lower() + joint)
            if rest != key and rest in KEYS:
                return profile, rest
    return None


def _env_warnings(
    environ: Mapping[str, str], selected: str, profiles: Iterable[str] = ()
) -> tuple[str, ...]:
    out = []
    for name in sorted(environ):
        if name.startswith(f"{ENV_PREFIX}_") and name not in _META_ENV:
            key = name[len(ENV_PREFIX) + 1 :].lower()
            if key not in KEYS:
                import difflib  # here: only a typo pays for it

                near = difflib.get_close_matches(folded(key), list(KEYS), n=1)
                hint = f" (did you mean {KEYS[near[0]].env}?)" if near else ""
                meant = _another_profile_s(key, profiles)
                if meant is not None and meant[0] == selected:
                    env = KEYS[meant[1]].env
                    hint = f" (did you mean {env}? it sets the selected profile's, {selected!r})"
                elif meant is not None:
                    # `APP_PRODUCTION__DATA_ROOT`: "did you mean APP_DATA_ROOT?" named a
                    # variable that sets the selected profile's root, not production's
                    # (red team 70).
                    other, wanted = meant
                    hint = (
                        f" (APP_ variables set the selected profile's keys only, {selected!r} "
                        f"here: for profile {other!r}, select it, `ENV_FOR_DYNACONF={other}` "
                        f"or `--profile {other}`, with {KEYS[wanted].env}, or set {wanted} in "
                        f"[{other}] of a settings file)"
                    )
                what = noting_odd(name, name)
                out.append(f"environment variable {what} is not an app setting; ignored{hint}")
    return tuple(out)


# --- public entry points ---------------------------------------------------------------


def configured_roots(
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    resolved: bool = True,
) -> dict[str, tuple[Path, str]]:
    """Every profile's data root as configured, with its source: no validation, no sandbox.

    What the pytest plugin needs before it neutralises anything: where would the shell put
    each profile's data? `profile` names the profile the environment selects (its
    ``APP_DATA_ROOT`` applies to it alone); None applies no override. Roots that are not set
    are left out (`load` reports those). `resolved` False: each absolute, as spelled, its
    symbolic links not followed (where the root lies may change while a run goes on: a
    deploy that switches a ``current`` link).

    Raises:
        ConfigError: a dynaconf switch, no settings directory, a file that is not TOML, an
            unknown `profile`, a root with a NUL in it.
    """
    return configured_root_readings(profile, environ, (resolved,))[0]


def configured_root_readings(
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
    readings: tuple[bool, ...] = (True, False),
) -> list[dict[str, tuple[Path, str]]]:
    """`configured_roots` once for each of `readings` (its `resolved`), from one reading of
    the settings files: the pytest plugin's first hook wants the roots resolved and as
    spelled, and read the files, found their directory and picked the profile twice over
    for them (bench/README.md, "perf-start71"). Nothing runs between the two readings, so
    one read of the files gives each what its own read gave."""
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
    for name, (value, source) in plain.items():
        if isinstance(value, str) and "\x00" in value:
            # No path can hold it, so no root to protect can be named: refused here, not
            # skipped, or the plugin would take the profile for one with no data root.
            raise InvalidSettingError(name, "data_root", value, str(_unseen(value)), source)
    found = []
    for resolved in readings:
        absolute = _absolute_root if resolved else _spelled_root
        directory = files.directory if resolved else _spelled_settings_dir(env, files.directory)
        roots = {
            name: (absolute(_from_file("data_root", value), directory), source)
            for name, (value, source) in plain.items()
            if isinstance(value, str) and value.strip()
        }
        found.append((roots, absolute, directory))
    if profile is not None:
        selected, _ = _select(profile, PROFILE_ENV, env, files.profiles)
        override = env.get(KEYS["data_root"].env, "")
        if override.strip():
            for roots, absolute, directory in found:
                roots[selected] = (
                    absolute(override, directory),
                    f"environment {KEYS['data_root'].env}",
                )
    return [roots for roots, _, _ in found]


def configured_remote(
    environ: Mapping[str, str] | None = None, *, sandboxed: bool = True
) -> dict[str, dict[str, tuple[str, str]]]:
    """Every profile's ``database_url``, ``blob_url`` and ``s3_endpoint_url`` as the files
    alone configure them, with their sources: no validation, no sandbox mapping, no
    environment overrides. What the pytest plugin reads, after neutralising, to name the
    run's scratch database and prefix; profiles that set none are left out.

    Args:
        sandboxed: leave the local files out, as `load` does under pytest.

    Raises:
        ConfigError: no settings directory, a file that is not TOML.
    """
    env = os.environ if environ is None else environ
    files = config_files.read_files(env, sandboxed=sandboxed)
    keys = (*REMOTE_CHOOSERS, "s3_endpoint_url")
    found = config_files.plain_values(files, keys)
    if found is None:
        found = config_files.file_values(files, keys)
    return {
        name: {key: (value, source) for key, (value, source) in values.items() if value}
        for name, values in found.items()
        if any(values.get(key, (None, ""))[0] for key in REMOTE_CHOOSERS)
    }


class Report(Record):
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
    values, sources = dict(resolved.values), dict(resolved.sources)
    root = resolved.data_root
    if root is not None:
        values["data_root"], sources["data_root"] = sandboxing.confine(
            resolved.profile, root, resolved.sources["data_root"], run.sandbox
        )
    for key in REMOTE_CHOOSERS:
        value = values.get(key)
        if value is not None:
            values[key], sources[key] = sandboxing.confine_remote(
                resolved.profile, key, value, sources[key], run, str(KEYS[key].show(value))
            )
    if values == resolved.values:
        return resolved
    return resolved._replace(values=MappingProxyType(values), sources=MappingProxyType(sources))


def _scratch_clashes(
    confined: Mapping[str, Resolved], configured: Mapping[str, Resolved]
) -> Iterator[ConfigError]:
    """A scratch database or prefix that is another profile's configured one: only a
    scratch suffix chosen to hit it could do that, and it would be the incident."""
    mark = " (under pytest)"
    databases: dict[str, tuple[str, str]] = {}
    blobs: dict[str, tuple[str, str | None, str]] = {}
    for suffix, profiles in (("", configured), (mark, confined)):
        for name, r in profiles.items():
            if suffix and r is configured.get(name):
                continue  # not confined: compared as configured already
            if r.values.get("database_url") is not None:
                databases[name + suffix] = (r.values["database_url"], r.sources["database_url"])
            if r.values.get("blob_url") is not None:
                endpoint = r.values.get("s3_endpoint_url")
                blobs[name + suffix] = (r.values["blob_url"], endpoint, r.sources["blob_url"])
    refused = {
        frozenset((clash.first, clash.second))
        for clash in remote_overlaps(
            {n: v for n, v in databases.items() if not n.endswith(mark)},
            {n: v for n, v in blobs.items() if not n.endswith(mark)},
        )
    }
    for clash in remote_overlaps(databases, blobs):
        ours = [n for n in (clash.first, clash.second) if n.endswith(mark)]
        pair = frozenset(n.removesuffix(mark) for n in (clash.first, clash.second))
        if len(ours) == 1 and len(pair) == 2 and pair not in refused:
            yield clash


def _pair(problem: ConfigError) -> tuple[Any, ...]:
    # An overlap (of data roots, databases or prefixes) by the two profiles it names.
    first, second = getattr(problem, "first", None), getattr(problem, "second", None)
    if isinstance(first, str) and isinstance(second, str):
        return (problem.code, first, second)
    return (problem.message,)


def _storage(resolved: Resolved) -> tuple[str, str]:
    """Where a profile keeps its data, as messages name it, and where that came from (a
    value from the environment or a local settings file first: that is what a test run
    without the plugin refuses)."""
    if resolved.data_root is not None:
        return f"data root {resolved.data_root}", resolved.sources["data_root"]
    present = [key for key in REMOTE_CHOOSERS if resolved.values.get(key) is not None]
    present.sort(key=lambda key: sandboxing.shell_override(resolved.sources[key]) is None)
    for key in present:
        return f"{key} {KEYS[key].show(resolved.values[key])}", resolved.sources[key]
    return "no storage", "nowhere"


def inspect_profiles(
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    profile_source: str = "load(profile=...)",
    refusing: bool = False,
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
        refusing: raise the sandbox's refusal of the selected profile as soon as the profile
            is known (`load`'s), rather than leave it to the caller.

    Raises:
        ConfigError: only for what makes the rest meaningless: a dynaconf switch variable,
            no settings directory, a settings file that is not TOML, an unknown profile.
        SandboxViolationError: with `refusing`, a profile other than testing that tests may
            not load here.
    """
    # One copy of the environment for the load, read once: each look at `os.environ`
    # decodes every name again (six scans of it a load made about 300 decodes; issue 11).
    # Nothing is kept: the next load copies it again.
    env = environment_now() if environ is None else environ
    switches = dynaconf_switches(env)
    if switches:  # every profile built with them would be wrong, so stop here
        if profile is None and PROFILE_ENV not in env:
            _refuse_selector_among_switches(env, switches)
        raise DynaconfSwitchError(switches)
    where = sandboxing.context()
    run = where.run
    files = config_files.read_files(env, sandboxed=run is not None)
    # The default a test may not load (it did not opt into it) is the run's profile instead;
    # not under a pytest without the app's plugin (`bare`), where nothing forced testing.
    in_run = (
        run is not None
        and where.bare is None
        and DEFAULT_PROFILE not in sandboxing.allowed_profiles(run)
    )
    selected, source = _select(profile, profile_source, env, files.profiles, in_run=in_run)
    if refusing and selected != "testing":
        # `load` refuses such a profile, under a pytest without the plugin or one the test
        # did not opt into, whatever its storage and wherever that came from (only testing's
        # refusal names them): refused here, before the files' values are resolved, the
        # refused command never imports dynaconf (about 70 ms of CPU, most of a refused
        # child's; bench/README.md, "perf-suite70"). The same refusal `load` raised after
        # the resolution, which raises nothing of its own (every problem is collected).
        sandboxing.check_profile(selected, "", "", where)
    problems: list[ConfigError] = [*_dynaconf_key_problems(env), *_file_problems(files)]
    if run is None:  # under a run every root is the sandbox's, whatever a variable says
        problems.extend(_misspelt_resource_variables(env, selected))
    # A run reads no local file, whatever its name (its header names those it left out).
    problems.extend(config_files.misnamed_files(files, local=run is None))
    # In a run too: it names no root, and a test's child given such a name meant the setting.
    problems.extend(_hidden_character_variables(env, selected))
    from_files = config_files.file_values(files, KEYS)
    resolved = {
        name: _resolve_profile(files, name, from_files[name], env if name == selected else None)
        for name in files.profiles
    }
    for r in resolved.values():
        problems.extend(r.problems)
    problems.extend(resolved[selected].deferred)
    elsewhere = tuple(p for name, r in resolved.items() if name != selected for p in r.deferred)
    # Through the mount table too, outside a run (a tenth of a millisecond a load): in a
    # run every root is the sandbox's, and the sandbox's check looks through mounts itself.
    problems.extend(_overlaps(resolved, through_mounts=run is None))
    others = {name: r for name, r in resolved.items() if name != selected}
    serving = tuple(_serving_problems(resolved[selected], others))
    if run is not None:
        configured = dict(resolved)
        for name, r in resolved.items():
            try:
                resolved[name] = _confined(r, run)
            except SandboxViolationError as refused:
                problems.append(refused)
        # A root from APP_DATA_ROOT inside the sandbox may still contain the mapped ones.
        # A pair already refused as configured is not refused again as mapped.
        seen = {_pair(problem) for problem in problems}
        # By path only: the sandbox check compares the identities of what is opened there
        # with every protected root's, and the configured roots were compared above.
        mapped = _overlaps(resolved, by_identity=False)
        problems.extend(p for p in mapped if _pair(p) not in seen)
        problems.extend(_scratch_clashes(resolved, configured))
    return Report(
        selected,
        source,
        files.directory,
        files.paths,
        files.skipped,
        MappingProxyType(resolved),
        tuple(problems),
        _env_warnings(env, selected, files.profiles)
        + _readable_secrets(resolved, files.paths)
        + _roots_at_home(resolved)
        + _roots_writable_by_others(resolved),
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
    report = inspect_profiles(profile, environ, profile_source=profile_source, refusing=True)
    selected = report.profiles[report.selected]
    sandboxing.check_profile(selected.profile, *_storage(selected), report.where)
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
        profiles=frozenset(report.profiles),
        sandbox=report.sandbox,
        warnings=report.warnings,
        **selected.values,
    )
    sandboxing.record_load(config.profile, config.storage)
    return config
