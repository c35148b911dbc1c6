"""One small exception hierarchy for the whole app.

Every error carries its data as attributes, builds a message that names the value,
the reason and the fix, and knows the process exit code (sysexits) and, where it can
reach a client, the HTTP status and a stable machine-readable ``code``.

Errors pickle cleanly (they cross process boundaries under pytest-xdist), which the
default ``Exception.__reduce__`` would not do for keyword-only constructors.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

# sysexits.h, the exit codes the command line promises (see docs/reference/errors.md).
EX_OK = 0
EX_USAGE = 2  # click's own code for usage errors; sysexits' 64 is not used on purpose
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


def _restore(cls: type[AppError], state: dict[str, Any]) -> AppError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error.message)
    return error


class AppError(Exception):
    """Base class of every error the app raises on purpose.

    Attributes:
        exit_code: the process exit code the command line uses for this error.
        code: a stable identifier for machines (HTTP error bodies, ``--json`` output).
        http_status: the HTTP status the server answers with.
    """

    exit_code: ClassVar[int] = EX_SOFTWARE
    code: ClassVar[str] = "app_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), dict(self.__dict__)))

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON-ready mapping: ``code`` and ``message``."""
        return {"code": self.code, "message": self.message}


# --- configuration (exit 78) -------------------------------------------------------


class ConfigError(AppError):
    """The configuration cannot be used as it stands."""

    exit_code = EX_CONFIG
    code = "config_error"


class SettingsNotFoundError(ConfigError):
    """The settings directory or its ``settings.toml`` does not exist."""

    code = "settings_not_found"

    def __init__(self, looked_in: Path, reason: str) -> None:
        self.looked_in = looked_in
        self.reason = reason
        super().__init__(
            f"no settings.toml found: looked in {looked_in} ({reason}); "
            "set APP_SETTINGS_DIR to the directory that holds settings.toml"
        )


class SettingsDirEmptyError(SettingsNotFoundError):
    """``APP_SETTINGS_DIR`` is set to an empty string, which names no directory."""

    code = "settings_dir_empty"

    def __init__(self, variable: str, project_dir: Path) -> None:
        self.variable = variable
        self.project_dir = project_dir
        self.looked_in = project_dir  # where unsetting the variable would look
        self.reason = f"{variable} is set but empty"
        ConfigError.__init__(
            self,
            f"{variable} is set but empty, so it names no settings directory; unset it "
            f"(`unset {variable}`) to use the project directory {project_dir}, or set it to "
            "the directory that holds settings.toml",
        )


class SettingsSyntaxError(ConfigError):
    """A settings file is not valid TOML."""

    code = "settings_syntax"

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: invalid TOML: {problem}; fix the file and run `app doctor`")


class UnknownProfileError(ConfigError):
    """A profile name that is not a section of ``settings.toml``."""

    code = "unknown_profile"

    def __init__(self, name: str, known: Sequence[str], source: str) -> None:
        self.name = name
        self.known = tuple(known)
        self.source = source
        shown = repr(name) if name else "an empty name"
        super().__init__(
            f"unknown profile {shown} (from {source}); known profiles: "
            f"{', '.join(self.known)}. Set ENV_FOR_DYNACONF or --profile to one of them, "
            "or add a section to settings.toml"
        )


class DynaconfSwitchError(ConfigError):
    """A dynaconf switch variable that would silently change how settings load."""

    code = "dynaconf_switch"

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        super().__init__(
            f"environment variable(s) {', '.join(self.names)} would change which files or "
            "profile dynaconf loads behind the app's back; the app configures dynaconf itself "
            "and selects the profile with ENV_FOR_DYNACONF or --profile only. "
            f"Unset them: unset {' '.join(self.names)}"
        )


class InvalidSettingError(ConfigError):
    """One setting has a value the app cannot use."""

    code = "invalid_setting"

    def __init__(
        self, profile: str | None, key: str, value: object, problem: str, source: str
    ) -> None:
        self.profile = profile  # None: the setting belongs to no profile (a stray variable)
        self.key = key
        self.value = value
        self.problem = problem
        self.source = source
        shown = "is not set" if value is None else f"= {value!r}"
        where = f"profile {profile!r}: " if profile is not None else ""
        super().__init__(f"{where}{key} {shown} (from {source}): {problem}")


class DataRootOverlapError(ConfigError):
    """Two profiles resolve to the same data root, or one root lies inside another."""

    code = "data_root_overlap"

    def __init__(
        self,
        first: str,
        first_root: Path,
        first_source: str,
        second: str,
        second_root: Path,
        second_source: str,
    ) -> None:
        self.first = first
        self.first_root = first_root
        self.first_source = first_source
        self.second = second
        self.second_root = second_root
        self.second_source = second_source
        if first_root == second_root:
            relation = "share the same data root"
        elif second_root.is_relative_to(first_root):
            relation = f"overlap: {second!r}'s data root lies inside {first!r}'s"
        else:
            relation = f"overlap: {first!r}'s data root lies inside {second!r}'s"
        super().__init__(
            f"profiles {first!r} and {second!r} {relation}: "
            f"{first} -> {first_root} (from {first_source}), "
            f"{second} -> {second_root} (from {second_source}). "
            "Every profile needs its own data root, not nested in another; "
            "change data_root for one of them"
        )


class ConfigProblems(ConfigError):
    """Several configuration problems at once (what ``app doctor`` reports)."""

    code = "config_problems"

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        self.problems = tuple(problems)
        lines = [f"{len(self.problems)} configuration problem(s):"]
        lines += [f"  - {problem.message}" for problem in self.problems]
        super().__init__("\n".join(lines))


# --- tests and sandbox (exit 78: the configuration was pointed somewhere it may not go) ---


class SandboxViolationError(ConfigError):
    """A test process tried to reach a data root or profile outside its sandbox."""

    code = "sandbox_violation"

    def __init__(self, what: str, sandbox: Path | None, fix: str) -> None:
        self.what = what
        self.sandbox = sandbox
        self.fix = fix
        inside = f" (sandbox: {sandbox})" if sandbox is not None else ""
        super().__init__(f"refused under pytest{inside}: {what}. {fix}")


# --- data roots ----------------------------------------------------------------------


def describe_holder(holder: Mapping[str, Any] | None) -> str:
    """One line naming a lock holder: pid, kind, profile, host, port and since when."""
    if not holder:
        return "a process that published no details (pid unknown)"
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("kind"):
        parts.append(f"kind {holder['kind']}")
    if holder.get("profile"):
        parts.append(f"profile {holder['profile']}")
    if holder.get("host"):
        parts.append(f"host {holder['host']}")
    if holder.get("port"):
        parts.append(f"port {holder['port']}")
    if holder.get("started_at"):
        parts.append(f"since {holder['started_at']}")
    return ", ".join(parts)


class DataRootInUseError(AppError):
    """Another live process holds the data root's lock."""

    exit_code = EX_TEMPFAIL
    code = "data_root_in_use"
    http_status = 409

    def __init__(self, root: Path, holder: Mapping[str, Any] | None, wanted: str) -> None:
        self.root = root
        self.holder = dict(holder) if holder else None
        self.wanted = wanted
        stop = (
            f"stop it (kill {self.holder['pid']}) or wait for it to finish and retry"
            if self.holder and self.holder.get("pid")
            else "stop that process or wait for it to finish and retry"
        )
        super().__init__(
            f"cannot {wanted}: data root {root} is held by {describe_holder(self.holder)}; "
            f"{stop}. `app status` shows the holder"
        )


class DataRootStateError(ConfigError):
    """A data root's directory is in a state the app cannot use (a broken stamp, say)."""

    code = "data_root_state"

    def __init__(self, root: Path, problem: str, fix: str) -> None:
        self.root = root
        self.problem = problem
        self.fix = fix
        super().__init__(f"data root {root}: {problem}; {fix}")


class LockUnavailableError(AppError):
    """The filesystem does not support the kernel lock the app relies on."""

    exit_code = EX_UNAVAILABLE
    code = "lock_unavailable"

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"cannot take an OS lock on {path}: {reason}. The app refuses to run without one; "
            "put the data root on a local filesystem that supports flock"
        )


class LockFileAliasedError(AppError):
    """The lock file is reachable by another path (a symbolic or hard link)."""

    exit_code = EX_UNAVAILABLE
    code = "lock_file_aliased"

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"refusing to lock {path}: it {reason}, so a lock taken on it would also lock "
            "(and publish into) another data root's lock file. Remove the link, and let the "
            "app create the data root's own .server.lock"
        )


class DataRootChangedError(AppError):
    """The data root, or a directory of the app's in it, is no longer what was opened."""

    exit_code = EX_SOFTWARE
    code = "data_root_changed"
    http_status = 503

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"data root {path} changed while open: {reason}. Nothing was changed; this "
            "process stops writing to it. Put the directory back (the app never uses "
            "symbolic links or mounts inside a data root) and restart"
        )

    def to_dict(self) -> dict[str, Any]:
        """Over HTTP: the same refusal without the path (``/health`` never shows it either)."""
        return {
            "code": self.code,
            "message": (
                "this server's data root, or a directory of the app's in it, was replaced or "
                "moved while the server ran, so it refuses every write; nothing was written. "
                "The operator must put it back and restart the server"
            ),
        }


class LockLostError(AppError):
    """The lock file a holder locked was deleted or replaced under it; writes are refused."""

    exit_code = EX_SOFTWARE
    code = "lock_lost"
    http_status = 503

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"lock file {path} {reason}; another process could now take the data root, so this "
            "one stops instead of sharing it. Never delete .server.lock; restart the server"
        )

    def to_dict(self) -> dict[str, Any]:
        """Over HTTP: the same refusal without the path (``/health`` never shows it either)."""
        return {
            "code": self.code,
            "message": (
                f"this server's data-root lock file {self.reason}, so it refuses every write "
                "and is stopping rather than share its data with another process; nothing was "
                "written. Retry once the server is restarted"
            ),
        }


class ProfileStampMismatchError(ConfigError):
    """The data root is stamped with another profile than the one opening it."""

    code = "profile_stamp_mismatch"

    def __init__(
        self, root: Path, stamped: str, requested: str, *, protected: bool = False
    ) -> None:
        self.root = root
        self.stamped = stamped
        self.requested = requested
        self.protected = protected
        # The command it names must be one that runs: re-stamping to or from a protected
        # profile (production always is) needs the confirmation option.
        confirm = " --yes-i-mean-it" if protected or "production" in (stamped, requested) else ""
        super().__init__(
            f"data root {root} belongs to profile {stamped!r} (see {root}/.app-profile.json) "
            f"but profile {requested!r} tried to open it. If that root really should now serve "
            f"{requested!r}, re-stamp it explicitly: "
            f"app data restamp --profile {requested} --from {stamped}{confirm}"
        )


class ConfirmationRequiredError(AppError):
    """A destructive command on a protected profile ran without its confirmation option."""

    exit_code = EX_NOPERM
    code = "confirmation_required"
    http_status = 403

    def __init__(self, operation: str, profile: str, option: str) -> None:
        self.operation = operation
        self.profile = profile
        self.option = option
        super().__init__(
            f"refusing to {operation} on protected profile {profile!r} without confirmation; "
            f"nothing was changed. Re-run with {option} if you mean it"
        )


class PortInUseError(AppError):
    """The server's port is taken by another process."""

    exit_code = EX_UNAVAILABLE
    code = "port_in_use"

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(
            f"cannot listen on {host}:{port}: {reason}. Another process uses that port; "
            f"stop it, or choose another port with APP_PORT or --port"
        )


# --- store (errors a client can cause) ---------------------------------------------


class StoreError(AppError):
    """A request against the store cannot be served."""

    exit_code = EX_DATAERR
    code = "store_error"
    http_status = 400


class SessionNotFoundError(StoreError):
    """No session with that id (or not in the trash, for restore)."""

    exit_code = EX_NOINPUT
    code = "session_not_found"
    http_status = 404

    def __init__(self, session_id: str, where: str = "sessions") -> None:
        self.session_id = session_id
        self.where = where
        hint = (
            "`app sessions list` shows the sessions"
            if where == "sessions"
            else ("`app sessions list --trash` shows what can be restored")
        )
        super().__init__(f"no session {session_id!r} in {where}; {hint}")


class NotInTrashError(SessionNotFoundError):
    """Nothing in the trash to restore: no deleted session, or no deleted file of it."""

    code = "not_in_trash"

    def __init__(self, session_id: str, file: str | None = None) -> None:
        super().__init__(session_id, where="the trash")
        self.file = file
        if file is not None:
            self.message = (
                f"no file {file!r} of session {session_id!r} in the trash; "
                "`app sessions list --trash` shows what can be restored"
            )


class FileNotFoundInSessionError(StoreError):
    """The session has no file of that name."""

    exit_code = EX_NOINPUT
    code = "file_not_found"
    http_status = 404

    def __init__(self, session_id: str, name: str) -> None:
        self.session_id = session_id
        self.name = name
        super().__init__(
            f"session {session_id!r} has no file {name!r}; "
            f"GET /sessions/{session_id}/files lists its files"
        )


class InvalidNameError(StoreError):
    """A session id or file name that could escape its directory or is otherwise unsafe."""

    code = "invalid_name"
    http_status = 400

    def __init__(self, kind: str, name: str, problem: str) -> None:
        self.kind = kind
        self.name = name
        self.problem = problem
        fix = (
            "copy an id from `app sessions list` or GET /sessions"
            if kind == "session id"
            else "use a plain name of printable characters without '/', '\\' or '..'"
        )
        super().__init__(f"invalid {kind} {name!r}: {problem}; {fix}")


class UploadTooLargeError(StoreError):
    """An upload exceeded the configured size limit."""

    code = "upload_too_large"
    http_status = 413

    def __init__(self, limit: int, received: int | None = None) -> None:
        self.limit = limit
        self.received = received
        got = f" (received {received} bytes so far)" if received is not None else ""
        super().__init__(
            f"upload refused: larger than the limit of {limit} bytes{got}; nothing was kept. "
            "Raise max_upload_bytes (APP_MAX_UPLOAD_BYTES) if the file is legitimate"
        )


class BodyTooLargeError(StoreError):
    """A request body (other than an upload's) exceeded what the route reads."""

    code = "body_too_large"
    http_status = 413

    def __init__(self, what: str, limit: int, received: int | None = None) -> None:
        self.what = what
        self.limit = limit
        self.received = received
        got = f" (received {received} bytes so far)" if received is not None else ""
        super().__init__(
            f"{what} refused: the request body is larger than {limit} bytes{got}; nothing was "
            "written. Send less, and keep large data in files (PUT /sessions/{id}/files/{name})"
        )


class MetadataTooLargeError(StoreError):
    """A session's metadata is larger, as compact JSON, than a session may hold."""

    code = "metadata_too_large"
    http_status = 413

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"metadata is {size} bytes as compact JSON; the limit is {limit} bytes, and nothing "
            "was written. Keep large data in files (PUT /sessions/{id}/files/{name})"
        )


class BadRequestError(StoreError):
    """A malformed request body or parameter."""

    code = "bad_request"
    http_status = 400

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class FileExistsInSessionError(StoreError):
    """A file of that name already exists and the request did not ask to replace it."""

    code = "file_exists"
    http_status = 409

    def __init__(self, session_id: str, name: str) -> None:
        self.session_id = session_id
        self.name = name
        super().__init__(
            f"session {session_id!r} already has a file {name!r}; "
            f"use PUT /sessions/{session_id}/files/{name} to replace it, or delete it first"
        )


# --- a client that holds the server's resources (#9, item 9) ---------------------------


class RequestTimeoutError(StoreError):
    """A request's head or body arrived too slowly; the server closed the connection."""

    code = "request_timeout"
    http_status = 408

    def __init__(self, what: str, seconds: float, setting: str) -> None:
        self.what = what
        self.seconds = seconds
        self.setting = setting
        super().__init__(
            f"request refused: {what} within {seconds:g} seconds; nothing was kept and the "
            f"connection is closed. Send the request without pauses (the server's {setting} "
            f"setting, APP_{setting.upper()}, sets the bound)"
        )


class HeaderTooLargeError(StoreError):
    """A request line and headers larger than the server reads."""

    code = "header_too_large"
    http_status = 431

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"request refused: its request line and headers are larger than {limit} bytes; the "
            "connection is closed. Send shorter headers (large data belongs in the body); the "
            "server's max_header_bytes setting (APP_MAX_HEADER_BYTES) sets the bound"
        )


class TooManyFilesError(StoreError):
    """A new file name for a session that holds as many files as one session may."""

    code = "too_many_files"
    http_status = 409

    def __init__(self, session_id: str, limit: int) -> None:
        self.session_id = session_id
        self.limit = limit
        super().__init__(
            f"refusing a new file in session {session_id}: it holds {limit} files, the most one "
            "session may hold (max_files_per_session), and every read of the session lists "
            "them all; nothing was kept. Replace or delete a file, start another session, or "
            "have an operator raise max_files_per_session (APP_MAX_FILES_PER_SESSION)"
        )


class TooManyUploadsError(StoreError):
    """As many uploads as the server receives at once are in flight already."""

    code = "too_many_uploads"
    http_status = 503

    def __init__(self, limit: int, retry_after: int) -> None:
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"upload refused: the server already receives {limit} uploads at once, its limit; "
            f"nothing was kept. Retry after {retry_after} seconds (see Retry-After); an operator "
            "can raise max_uploads_in_flight (APP_MAX_UPLOADS_IN_FLIGHT)"
        )


# --- the disk under the data root (a client cannot fix these; an operator can) ------


class StorageError(AppError):
    """The data root's filesystem refused a write; the request changed nothing."""

    exit_code = EX_IOERR
    code = "storage_error"
    http_status = 500


class StorageFullError(StorageError):
    """The data root's filesystem is full (or the owner's quota is used up)."""

    code = "storage_full"
    http_status = 507

    def __init__(self, doing: str) -> None:
        self.doing = doing
        # No path: the message reaches HTTP clients, and /health hides where the data is.
        super().__init__(
            f"cannot {doing}: the data root's filesystem is full; nothing was changed. "
            "Free space, then retry: POST /trash/empty empties the trash without stopping the "
            "server (`app data empty-trash` does it while no server runs), or grow the "
            "filesystem"
        )


class ReadOnlyStorageError(StorageError):
    """The data root's filesystem is mounted read-only."""

    code = "storage_read_only"
    http_status = 503

    def __init__(self, doing: str) -> None:
        self.doing = doing
        super().__init__(
            f"cannot {doing}: the data root's filesystem is read-only; nothing was changed. "
            "Reads still work. Remount it read-write (and check why it went read-only), then "
            "retry"
        )


class TooManyOpenFilesError(StorageError):
    """The process (or the system) has as many files open as its limit allows."""

    code = "too_many_open_files"
    http_status = 503

    def __init__(self, doing: str, retry_after: int = 5) -> None:
        self.doing = doing
        self.retry_after = retry_after
        super().__init__(
            f"cannot {doing}: the process has as many files open as its limit allows; nothing "
            f"was changed. Retry after {retry_after} seconds; an operator can raise the file "
            "limit (systemd's LimitNOFILE=, `ulimit -n`) or, for a server, lower "
            "max_uploads_in_flight (APP_MAX_UPLOADS_IN_FLIGHT)"
        )


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Every connection and open file counts against the limit: 150 slow uploads once used up
# 256 and others got 500 (#9, item 9).
_DESCRIPTOR_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS})


def storage_error(error: BaseException, doing: str) -> StorageError | None:
    """The `StorageError` an ``OSError`` means (disk full, read-only), or ``None``.

    Args:
        error: any exception; only an ``OSError`` with a known errno maps.
        doing: what was being done, for the message ("store the upload").

    Returns:
        A `StorageFullError`, a `ReadOnlyStorageError` or a `TooManyOpenFilesError`, else
        ``None``.
    """
    if not isinstance(error, OSError):
        return None
    if error.errno in _FULL_ERRNOS:
        return StorageFullError(doing)
    if error.errno in _READ_ONLY_ERRNOS:
        return ReadOnlyStorageError(doing)
    if error.errno in _DESCRIPTOR_ERRNOS:
        return TooManyOpenFilesError(doing)
    return None
