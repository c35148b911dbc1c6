"""The storage seam: the one interface the server and the command line use.

A profile's data lives in one backend; :func:`open_storage` picks it from the
:class:`~app.config.Config` and returns a :class:`Storage`: the local data root
(:class:`app.store.Store` on an :class:`app.dataroot.DataRoot`) for a profile that sets
``data_root``, PostgreSQL plus object storage (:class:`app.remote.store.RemoteStore`, opened
by :mod:`app.remote.storage`) for one that sets ``database_url`` and ``blob_url``. The
configuration refuses a profile that sets both.

Why a :class:`typing.Protocol` rather than an abstract base class: the backends share no
code, so a base class would carry nothing but abstract stubs, and the local one would have
to import this module to inherit from it. A protocol is checked by mypy wherever a backend
is returned as a :class:`Storage` (in :func:`open_storage`), and neither the server nor the
command line needs to know which class it got.

The values that cross the seam (:class:`SessionRecord`, :class:`FileEntry`, :class:`Page`,
:class:`TrashEntry`, :class:`CheckReport`) are defined here, once, for every backend.

The server sends ``GET /sessions/{id}`` and ``GET /sessions`` as the bytes
:meth:`Storage.get_session_json` and :meth:`Storage.list_sessions_json` return. The
protocol implements both by encoding what :meth:`Storage.get_session` and
:meth:`Storage.list_sessions` return (:func:`json_body`), so every backend answers them; one
that keeps its sessions encoded overrides them with those bytes (the local store does), and
must return the same bytes as the encoding would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal, Protocol, Self, TypedDict

from app.config import REMOTE
from app.errors import BadRequestError, shell_word

if TYPE_CHECKING:
    from app.config import Config
    from app.digests import Digests
    from app.errors import AppError

__all__ = [
    "LEFT_OUT_LINKED",
    "LEFT_OUT_UNREADABLE",
    "MAX_METADATA_BYTES",
    "MAX_TITLE_CHARS",
    "TITLE_NUL",
    "CheckReport",
    "Emptied",
    "FileEntry",
    "Finding",
    "HolderWatch",
    "IfMatch",
    "LeftOut",
    "Page",
    "Probe",
    "SessionRecord",
    "Status",
    "Storage",
    "TrashEntry",
    "Upload",
    "check_session_id",
    "checked_session_fields",
    "entry_holds_other",
    "holder_lost",
    "json_body",
    "open_storage",
    "page_body",
    "probe",
    "restamp",
    "status",
]


# --- the values that cross the seam ------------------------------------------------------

MAX_TITLE_CHARS: Final = 1000
"""Longest session title, in characters (every backend enforces it)."""
MAX_METADATA_BYTES: Final = 64 * 1024
"""Largest session metadata, as compact JSON (every backend enforces it)."""


#: Why a title with U+0000 is refused, by every backend alike.
TITLE_NUL = (
    "title contains the character U+0000 (NUL), which no backend stores in a title "
    "(PostgreSQL's text cannot hold it); remove it from the title"
)


def checked_session_fields(title: object, metadata: object) -> dict[str, Any]:
    """Refuse a title or metadata that no backend may store; return the metadata to store."""
    if not isinstance(title, str):
        raise BadRequestError("title must be a string")
    if len(title) > MAX_TITLE_CHARS:
        raise BadRequestError(
            f"title is {len(title)} characters long; the limit is {MAX_TITLE_CHARS}"
        )
    if "\x00" in title:
        raise BadRequestError(TITLE_NUL)
    _refuse_surrogate("title", title)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise BadRequestError("metadata must be a JSON object")
    # As the server's parser refuses them (`app.server.session_body`), for a caller of the
    # store's own API too (red team 63, regress): NaN and Infinity were stored on a data
    # root (and its listing then failed to encode them), and refused by PostgreSQL as "the
    # app's tables are not as the app made them"; an unpaired surrogate was a bare
    # UnicodeEncodeError on a data root, and stored on PostgreSQL; metadata nested past
    # Python's recursion limit a bare RecursionError on both.
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise BadRequestError(
            "metadata is nested too deep to be written as JSON (past Python's recursion "
            "limit); nothing was stored. Send it nested less deep"
        ) from None
    except ValueError as error:
        raise BadRequestError(
            f"metadata is not JSON ({error}: RFC 8259 has no NaN or Infinity, and no value "
            "that holds itself); nothing was stored. Send such a number as a string, or leave "
            "it out"
        ) from None
    except TypeError as error:
        raise BadRequestError(f"metadata is not JSON-serialisable: {error}") from None
    _refuse_surrogate("metadata", text)
    _refuse_keys_not_text(metadata)
    # Its size as the ASCII JSON the limit is stated in (what the strict dump above took,
    # this one takes: it cannot fail).
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise BadRequestError(
            f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"
        )
    return metadata


def _refuse_keys_not_text(metadata: dict[Any, Any]) -> None:
    """Refuse a key of ``metadata`` (at any depth) that is not a string.

    ``json.dumps`` writes ``2``, ``1.5``, ``None`` or ``True`` as a key's text, so the store's
    own API took ``{2: "a", 10: "b"}``: its create answered keys no read gives back, and on a
    data root ``session.json`` kept ``{"10": "b", "2": "a"}`` beside the SHA-256 of the keys
    as given, sorted as numbers, so the session it had just made was ``session_unreadable``
    for good (red team 65 on regress). A JSON object's keys are strings (RFC 8259, 4); the
    server's parser never gives another. Called after ``json.dumps`` took ``metadata``: no
    cycle and no nesting past Python's stack, so this walk ends.
    """
    pending: list[Any] = [metadata]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            for key, inner in value.items():
                if not isinstance(key, str):
                    kind, text = type(key).__name__, json.dumps({key: 0})[1:-4]
                    raise BadRequestError(
                        f"metadata has the key {key!r} (of type {kind}), not a string: JSON's "
                        f"object keys are strings, and it would be read back as the text {text}, "
                        "not as the key given; nothing was stored. Send the key as a string"
                    )
                pending.append(inner)
        elif isinstance(value, (list, tuple)):
            pending.extend(value)


def _refuse_surrogate(what: str, text: str) -> None:
    """Refuse an unpaired surrogate in ``text`` (a title, metadata as JSON): not text, it
    cannot be written as UTF-8 (a data root) and is no character (PostgreSQL)."""
    found = _SURROGATE.search(text)
    if found is not None:
        raise BadRequestError(
            f"{what} contains the unpaired surrogate U+{ord(found.group()):04X}, which is not "
            "text; nothing was stored. Send valid UTF-16 pairs or the character itself"
        )


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class FileEntry(TypedDict):
    """A file of a session, as the API shows it."""

    name: str
    size: int
    sha256: str | None
    uploaded_at: str | None


class SessionRecord(TypedDict):
    """A session, as the API shows it (the local backend's ``session.json`` plus its files)."""

    id: str
    title: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    files: list[FileEntry]


def json_body(value: Any) -> bytes:
    """``value`` as the server's JSON answers are encoded (as Starlette's ``JSONResponse``).

    UTF-8, compact, no NaN or Infinity (refused with ValueError, as the server always has).
    """
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def page_body(
    items: Iterable[bytes], total: int, next: str | None, left_out: Sequence[LeftOut] = ()
) -> bytes:
    """The :func:`json_body` of a :class:`Page` whose items are already encoded.

    The same bytes as ``json_body(page.to_dict())``, by joining the items' bytes instead of
    encoding them again.
    """
    cursor = b"null" if next is None else json_body(next)
    passed = json_body([one.to_dict() for one in left_out])
    return b'{"items":[%s],"total":%d,"next":%s,"left_out":%s}' % (
        b",".join(items),
        total,
        cursor,
        passed,
    )


# RFC 9110, 8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text.
# Parsed here rather than by a library: Starlette has no parser, and werkzeug's parse_etags
# would be a dependency for one regular expression.
_ENTITY_TAG: Final = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*')


@dataclass(frozen=True, slots=True)
class IfMatch:
    """A write's ``If-Match`` (RFC 9110, 13.1.1): change the file only at these versions.

    Evaluated by the backend where the write commits, under the lock (or in the
    transaction) that makes the write, so that of two clients naming the same version one
    writes and the other is refused: a check before the commit could pass for both.

    Attributes:
        header: the header as the client sent it (for messages).
        tags: the strong opaque tags it names (a file's ETag is ``"<sha256>"``); ``None``
            for ``*``, any current version. A weak tag (``W/"..."``) is kept out: If-Match
            compares strongly, so it never matches.
    """

    header: str
    tags: frozenset[str] | None

    @classmethod
    def parse(cls, header: str) -> IfMatch:
        """``If-Match``'s value: ``*``, or a comma-separated list of entity tags.

        Raises:
            BadRequestError: anything else (an unquoted tag, a stray character).
        """
        if header.strip(" \t") == "*":
            return cls(header, None)
        tags: set[str] = set()
        for element in header.split(","):
            if not element.strip(" \t"):
                continue  # RFC 9110, 5.6.1: empty list elements are allowed and ignored
            found = _ENTITY_TAG.fullmatch(element)
            if found is None:
                raise BadRequestError(
                    f"If-Match: {header} is not * or a list of entity tags such as "
                    '"<sha256>" (with the quotes); nothing was changed. Send the ETag that '
                    "GET or HEAD gave, as it came"
                )
            if found.group(1) is None:
                tags.add(found.group(2))
        return cls(header, frozenset(tags))

    def require(
        self, method: str, session_id: str, name: str, current: str | None, sent: str | None = None
    ) -> None:
        """Refuse the write unless ``current`` (the file's SHA-256, ``None`` if there is no
        such file) is a version this condition names. ``sent``: the SHA-256 of the bytes a
        ``PUT`` sends, where known (its digest field before the body, the body at its
        commit), for the refusal's message.

        Raises:
            PreconditionFailedError: it is not (HTTP 412).
        """
        if current is not None and (self.tags is None or current in self.tags):
            return
        from app.errors import PreconditionFailedError

        etag = None if current is None else f'"{current}"'
        raise PreconditionFailedError(method, session_id, name, self.header, etag, sent=sent)


#: Why a page passes over a session it counts: its directory is a symbolic link (moved out
#: of the data root and linked back), which the app never follows.
LEFT_OUT_LINKED: Final = "linked"
#: Why a page passes over a session it counts: its ``session.json`` cannot be read.
LEFT_OUT_UNREADABLE: Final = "unreadable"


@dataclass(frozen=True, slots=True)
class LeftOut:
    """A session a page counts in its ``total`` but does not show, and why.

    Attributes:
        id: the session's id.
        reason: ``"linked"`` (its directory is a symbolic link) or ``"unreadable"`` (its
            ``session.json`` cannot be read).
        message: what that means and what to run on the server (no path of the server's:
            the server's log and ``app data check`` name those).
    """

    id: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "reason": self.reason, "message": self.message}


@dataclass(frozen=True, slots=True)
class Page:
    """One page of sessions, oldest first.

    Attributes:
        items: the sessions of this page.
        total: how many sessions exist at this moment.
        next: the cursor of the next page (pass it as ``after``), ``None`` on the last page.
        left_out: the sessions in this page's range that it counts in ``total`` but does not
            show (a local session directory linked back, a damaged ``session.json``), with
            why; empty on a backend whose pages leave none out.
    """

    items: list[SessionRecord]
    total: int
    next: str | None
    left_out: tuple[LeftOut, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (the body of ``GET /sessions``)."""
        return {
            "items": self.items,
            "total": self.total,
            "next": self.next,
            "left_out": [one.to_dict() for one in self.left_out],
        }


def entry_holds_other(
    name: str, holds: str, holds_file: str | None, session_id: str, file: str | None
) -> BadRequestError:
    """The refusal of ``app sessions restore --entry NAME`` where that entry holds session
    ``holds`` (or its file ``holds_file``), not what was asked for: what it holds, and the
    command that restores that (every backend says it alike)."""
    if holds_file is None:
        what, option = f"session {holds}", ""
    else:
        what, option = (
            f"file {holds_file!r} of session {holds}",
            f" --file {shell_word(holds_file)}",
        )
    asked = f"session {session_id}" if file is None else f"file {file!r} of session {session_id}"
    return BadRequestError(
        f"trash entry {name} holds {what}, not {asked}; nothing was changed. `app sessions "
        f"restore {holds}{option} --entry {name}` restores what it holds; `app sessions list "
        "--trash --json` shows every entry"
    )


#: The reason a trash entry is listed with when it is a symbolic link (moved out of the data
#: root and linked back), which the app never follows: what it holds is not read.
LINKED: Final = "linked"


@dataclass(frozen=True, slots=True)
class TrashEntry:
    """A deleted session, or a deleted or replaced file, kept until ``empty-trash``.

    Attributes:
        name: the entry's name (``app sessions list --trash --json`` shows it, and
            ``app sessions restore --entry`` takes it).
        path: where it is (the local backend: its directory in ``.trash/``).
        kind: ``"session"`` or ``"file"``.
        session_id: the session it came from.
        file: the file name, for a file entry.
        deleted_at: when it was moved to the trash (UTC).
        reason: ``"delete"``, ``"purge"``, ``"replace"``, ``"orphan"`` or ``"lost"`` (a record
            `check` kept after its bytes were removed from outside the app); ``"unknown"`` for a
            damaged manifest, ``"unreadable"`` for one this process may not read, ``"linked"``
            for a symbolic link at an entry's name (never followed).
        title: the session's title when it was deleted (session entries).
        since_boot: the boot it was made in and the seconds since that boot (Linux's
            ``CLOCK_BOOTTIME``), where the backend records them (a local data root): its
            age within that boot, whatever the wall clock did since.
        remedy: for a ``"linked"`` entry, what puts it back (the link's target and the
            commands), as the backend says it where it lists the entry.
    """

    name: str
    path: Path
    kind: Literal["session", "file"]
    session_id: str
    file: str | None
    deleted_at: datetime
    reason: str
    title: str | None = None
    since_boot: tuple[str, float] | None = field(default=None, compare=False)
    remedy: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``app sessions list --trash --json``)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "kind": self.kind,
            "session_id": self.session_id,
            "file": self.file,
            "deleted_at": self.deleted_at.isoformat(timespec="microseconds"),
            "reason": self.reason,
            "title": self.title,
        }


class Emptied(list[TrashEntry]):
    """The entries an ``empty_trash`` removed, and ``finished``: the names of those an earlier
    one, stopped after it had taken them out of the trash (SIGKILL), left for it to finish
    (a data root's; none elsewhere). Run again after such a stop, `app data empty-trash`
    said "removed 0 trash entries" of the entries whose bytes it had just removed (red team
    74). A list, so that every caller that counts or lists the entries reads it as before."""

    finished: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a check found that consistent storage does not hold.

    Attributes:
        problem: a stable identifier, such as ``tmp-leftover`` on a data root or
            ``index-missing`` on PostgreSQL; docs/reference/on-disk-layout.md lists each
            backend's, with what ``--repair`` does about it.
        target: what it concerns, relative to the data root.
        detail: what it is and how it came about.
        repair: what ``--repair`` does about it (``"nothing: ..."`` if it needs a human).
        repaired: whether this run repaired it.
    """

    problem: str
    target: str
    detail: str
    repair: str
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``app data check --json``, the audit line)."""
        return {
            "problem": self.problem,
            "target": self.target,
            "detail": self.detail,
            "repair": self.repair,
            "repaired": self.repaired,
        }


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What a check found, and what it repaired.

    Attributes:
        findings: everything found, repaired or not.
        repair: whether the check ran with repair.
        unaudited: why the audit refused the repair's record, which went to the process's
            log instead (red team 49: on PostgreSQL, after its objects were deleted).
        repairs_audited: the lines ``unaudited`` names are the open's alone (a local root's
            ``clear-tmp``), and every line of the repairs is in the audit log: the report
            said "could not record them" of repairs the log held (red team 64, regress).
    """

    findings: list[Finding]
    repair: bool
    unaudited: str | None = None
    repairs_audited: bool = False

    @property
    def unresolved(self) -> list[Finding]:
        """The findings still there after this run."""
        return [f for f in self.findings if not f.repaired]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``app data check --json``)."""
        return {
            "repair": self.repair,
            "clean": not self.unresolved,
            "findings": [f.to_dict() for f in self.findings],
            **({} if self.unaudited is None else {"unaudited": self.unaudited}),
            **({"repairs_audited": True} if self.unaudited and self.repairs_audited else {}),
        }


@dataclass(frozen=True, slots=True)
class Probe:
    """One thing ``app doctor`` found by reaching a profile's storage (read-only).

    Attributes:
        subject: what was reached: ``database``, ``stamp``, ``replica``, ``maintenance``,
            ``bucket`` or ``prefix``.
        found: what it found, for a person; never a password or a key.
        problem: why the profile cannot run on it (``None`` if it can); doctor lists it
            with the settings' problems and exits with its code.
        exit_code: the code of ``problem`` (sysexits: 69 unreachable, 78 configuration).
    """

    subject: str
    found: str
    problem: str | None = None
    exit_code: int = 0


# --- the interface ------------------------------------------------------------------------


class Upload(Protocol):
    """A file being streamed into a session; visible only once :meth:`commit` returns.

    Used as a context manager, an upload not committed by the end of the block is aborted.
    """

    session_id: str
    name: str
    replace: bool
    """Whether it may replace a file of its name (a PUT), or only add one (a POST)."""
    if_match: IfMatch | None
    """The version the commit must replace (checked again as it commits)."""
    digests: Digests | None
    """The SHA-256 the client sent (checked before the commit makes the file visible)."""
    limit: int
    """The most bytes it accepts; one more raises :class:`~app.errors.UploadTooLargeError`."""
    received: int
    """The bytes written so far."""
    replaced: bool
    """After :meth:`commit`: whether it replaced a file (whose old bytes went to the trash)."""

    # Both backends' uploads subclass this protocol and start with this.
    def _begin(
        self,
        session_id: str,
        name: str,
        *,
        replace: bool,
        limit: int,
        if_match: IfMatch | None,
        digests: Digests | None,
    ) -> None:
        self.session_id = session_id
        self.name = name
        self.replace = replace
        self.if_match = if_match
        self.digests = digests
        self.limit = limit
        self.received = 0
        self.replaced = False

    def write(self, chunk: bytes | bytearray | memoryview) -> None: ...
    def write_all(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None: ...
    def commit(self) -> FileEntry: ...
    def abort(self) -> None: ...

    @property
    def finished(self) -> bool:
        """Whether the upload was committed or aborted."""
        ...

    # Both backends' uploads subclass this protocol for the one `with` behaviour below.
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.finished:
            self.abort()


class Status(Protocol):
    """Who holds a profile's storage and how it is stamped, at one moment (``app status``).

    A local root has at most one holder (its lock's); a remote profile has one per live
    replica, all listed in :attr:`holders`.
    """

    @property
    def location(self) -> str:
        """Where the data lives, for a person: the data root, or the database and prefix."""
        ...

    @property
    def exists(self) -> bool: ...
    @property
    def held(self) -> bool: ...
    @property
    def holder(self) -> dict[str, Any] | None: ...
    @property
    def holders(self) -> list[dict[str, Any]]: ...
    @property
    def held_by(self) -> str: ...
    @property
    def stamp(self) -> dict[str, Any] | None: ...
    @property
    def stamp_error(self) -> str | None: ...
    @property
    def marked(self) -> str | None:
        """With no stamp: the profile its own directories are marked as (a data root that
        lost its stamp, refused to every other profile's writer), else ``None``."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


class HolderWatch(Protocol):
    """A running check that this process still owns its storage (see :meth:`Storage.watch`)."""

    def stop(self) -> None: ...


class FileLimits(Protocol):
    """What a backend's files keep of the profile's limits."""

    max_upload_bytes: int
    max_files: int


class Storage(Protocol):
    """Sessions, their files, the trash, the audit trail and the holder of one profile's data.

    A writer (``open_storage(..., writer=True)``) owns the data until :meth:`close`: every
    change first checks that it still does. A reader changes nothing and owns nothing.
    """

    files: FileLimits
    """The backend's files, which keep the profile's limits."""

    # Both backends' stores subclass this protocol for the limits below, kept by their files.
    @property
    def max_upload_bytes(self) -> int:
        """The largest file accepted, in bytes (the profile's ``max_upload_bytes``)."""
        return self.files.max_upload_bytes

    @max_upload_bytes.setter
    def max_upload_bytes(self, value: int) -> None:
        self.files.max_upload_bytes = value

    @property
    def max_files(self) -> int:
        """The most live files one session may hold (the profile's ``max_files_per_session``)."""
        return self.files.max_files

    @max_files.setter
    def max_files(self, value: int) -> None:
        self.files.max_files = value

    @property
    def location(self) -> str:
        """Where the data lives, for messages (the local backend: the data root)."""
        ...

    @property
    def trash_location(self) -> str:
        """Where deleted sessions and files are kept, for messages."""
        ...

    # sessions
    def create_session(
        self, title: str = "", metadata: dict[str, Any] | None = None
    ) -> SessionRecord: ...
    def get_session(self, session_id: str) -> SessionRecord: ...
    def require_session(self, session_id: str) -> None: ...
    def list_sessions(
        self, *, limit: int = 50, after: str | None = None, max_bytes: int | None = None
    ) -> Page: ...
    def iter_all(self) -> Iterator[SessionRecord]: ...
    def left_out(self, listed: set[str]) -> list[tuple[str, str]]:
        """The sessions a listing leaves out, but for those in ``listed``: each id with why
        and what puts it back (a local session directory linked back, a damaged
        ``session.json``). Empty on a backend whose listing leaves none out."""
        return []

    # What the server sends as it is (see the module docstring): encoded here for backends
    # that keep nothing encoded (the remote store); the local store overrides both.
    def get_session_json(self, session_id: str) -> bytes:
        """:meth:`get_session`'s session as :func:`json_body` encodes it."""
        return json_body(self.get_session(session_id))

    def list_sessions_json(
        self, *, limit: int = 50, after: str | None = None, max_bytes: int | None = None
    ) -> bytes:
        """:meth:`list_sessions`'s page as :func:`json_body` encodes its ``to_dict()``."""
        page = self.list_sessions(limit=limit, after=after, max_bytes=max_bytes)
        return json_body(page.to_dict())

    def delete_session(self, session_id: str, *, reason: str = "delete") -> TrashEntry: ...
    def purge(self) -> list[TrashEntry]: ...

    # files
    def list_files(self, session_id: str) -> list[FileEntry]: ...
    def open_file(self, session_id: str, name: str) -> tuple[BinaryIO, FileEntry]: ...
    def begin_upload(
        self,
        session_id: str,
        name: str,
        *,
        replace: bool = False,
        if_match: IfMatch | None = None,
        digests: Digests | None = None,
    ) -> Upload:
        """Start streaming a file into a session; with ``if_match``, it commits only over a
        current version that the condition names (checked here, and again at the commit);
        with ``digests``, only if the bytes' SHA-256 is the one they name (at the commit)."""
        ...

    def put_file(
        self, session_id: str, name: str, data: bytes | Iterable[bytes], *, replace: bool = False
    ) -> FileEntry: ...
    def delete_file(
        self, session_id: str, name: str, *, if_match: IfMatch | None = None
    ) -> TrashEntry:
        """Move a file to the trash; with ``if_match``, only a current version it names."""
        ...

    # trash
    def list_trash(self) -> list[TrashEntry]: ...
    def deleted_entry(self, session_id: str, file: str | None = None) -> str | None:
        """The name of the newest trash entry that holds the deleted session ``session_id``
        (or its ``file``, where a delete made it), for a refusal of a request to it to name
        (``app sessions restore`` brings it back); None where it is not in the trash, or the
        trash cannot say now."""
        ...

    def restore(
        self, session_id: str, *, file: str | None = None, entry: str | None = None
    ) -> SessionRecord: ...
    def empty_trash(
        self, older_than: timedelta | None = None, *, via: str = "command"
    ) -> list[TrashEntry]: ...

    # consistency
    def check(
        self, *, repair: bool = False, thorough: bool = True, hash_bytes: bool = True
    ) -> CheckReport: ...

    # the holder
    def ensure_held(self) -> None:
        """Raise unless this process still owns the data (a writer's lock, or connection)."""
        ...

    def audit(self, operation: str, target: str | Path, **details: Any) -> None: ...
    def publish(self, **fields: Any) -> None:
        """Add to what this holder publishes about itself (a server's ``port``)."""
        ...

    def watch(self, interval: float, on_lost: Callable[[str], object]) -> HolderWatch:
        """Check every ``interval`` seconds that this process still owns the data."""
        ...

    def lost_error(self, reason: str) -> AppError:
        """The error a holder that lost its data stops with (exit 70)."""
        ...

    def readiness(self) -> dict[str, str | None]:
        """What a server's ``GET /ready`` says of each backend this storage needs: ``None``
        when it answers, else why not. From what the storage already knows: never a request
        of its own per call."""
        return {}

    def close(self) -> None: ...

    # Both backends' stores subclass this protocol for the one `with` behaviour below.
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- choosing the backend -----------------------------------------------------------------


def open_storage(
    config: Config,
    *,
    writer: bool,
    kind: str = "maintenance",
    wanted: str | None = None,
    timeout: float = 1.0,
) -> Storage:
    """Open the profile's storage, as a writer that owns it, or as a reader.

    Args:
        config: the profile's configuration; it says which backend holds the data.
        writer: own the data (refused while another live process does) so as to change it.
        kind: the holder kind a writer publishes: ``"server"``, ``"tests"``,
            ``"maintenance"``.
        wanted: what the caller is doing, for the refusal message.
        timeout: seconds to retry an owner that is contended.

    Returns:
        The storage; close it (or use ``with``) to give up ownership.
    """
    if config.backend == REMOTE:
        from app.remote.storage import open_remote

        return open_remote(config, writer=writer, kind=kind, wanted=wanted, timeout=timeout)

    from app.dataroot import open_root
    from app.store import Store

    root = open_root(config, kind=kind, write=writer, wanted=wanted, timeout=timeout)
    try:
        return Store(root)
    except BaseException:
        root.close()
        raise


def check_session_id(value: str) -> str:
    """Return ``value`` if it is a session id, as every backend names one; raise
    :class:`~app.errors.InvalidNameError` (exit 65, 400) if not."""
    from app.store.ids import check_session_id as check

    return check(value)


def status(config: Config) -> Status:
    """Who holds the profile's storage and how it is stamped, at one moment (``app status``)."""
    if config.backend == REMOTE:
        from app.remote.storage import describe as describe_remote

        return describe_remote(config)

    from app.dataroot import describe

    return describe(config.local_root("show the status of a data root"))


def serving_url(holder: Mapping[str, Any], configured_host: str) -> str | None:
    """Where a command on this machine reaches the server a data root's ``holder`` describes
    (from the address it listens on, which it publishes), or ``None``."""
    from app.lock import local_url

    return local_url(holder, configured_host)


def well_formed_url(url: str) -> bool:
    """Whether ``url`` may be printed for a user to paste (`app.lock.well_formed_url`): a
    replica's URL comes from the database's rows, which any client of its role writes."""
    from app.lock import well_formed_url as well_formed

    return well_formed(url)


def paused_words(pid: int) -> list[str]:
    """How the process `pid` of this machine is kept from running (stopped, at a debugger's
    breakpoint, frozen), each with what resumes it; empty where it runs
    (`app.lock.paused_words`)."""
    from app.lock import paused_words as paused

    return paused(pid)


def probe(config: Config) -> list[Probe]:
    """Reach the profile's storage as ``app doctor`` does: read-only, each wait bounded.

    On PostgreSQL and object storage: the database (reachable, its stamp and schema
    version, live replicas, a maintenance command) and the bucket (reachable, versioning,
    the prefix's stamp object). On a data root: what every command that opens it would
    refuse (another profile's stamp, a stamp or lock file that is not a file, one of the
    app's directories that is not one), found read-only; nothing when it is fine or not
    there yet (red team 53: doctor said "ok" of a root every start refused).
    """
    if config.backend == REMOTE:
        from app.remote.storage import diagnose

        return diagnose(config)
    from app import dataroot
    from app.errors import AppError

    try:
        dataroot.check_opens(config)
        if config.data_root is not None:
            _check_serves_here(config.data_root)
    except AppError as error:
        return [Probe("data root", str(config.data_root), error.message, error.exit_code)]
    return []


def _check_serves_here(root: Path) -> None:
    """Refuse, as `app serve` would, a root this user does not own or a read-only mount.

    `app serve` and every writer refuse a root another user owns (red team 55), and doctor,
    run by that user, said "ok" of it (red team 56): the deploy guide's first step made by
    hand without ``-o app``, or doctor run with ``sudo`` alone. Serve's first write (the lock
    file's holder) meets a read-only mount (74), which doctor said "ok" of too (a remount
    after errors, a container's ``:ro``), and so did it of ext4 made read-only by its errors
    (``emergency_ro``, red team 64)."""
    import os

    from app import dataroot, mountinfo
    from app.errors import ReadOnlyStorageError

    if not root.exists():
        return
    dataroot.refuse_other_owner(
        root, "run `app serve`, or any command that changes the root, as this user"
    )
    # ext4 made read-only by its errors keeps the mount read-write (red team 64).
    if os.statvfs(root).f_flag & os.ST_RDONLY or mountinfo.emergency_read_only(root):
        raise ReadOnlyStorageError(doing=f"serve or change data root {root}")


def restamp(
    config: Config, from_profile: str, *, confirm: Callable[[str], None] | None = None
) -> Mapping[str, Any]:
    """Hand the storage stamped ``from_profile`` to ``config.profile`` (``app data restamp``).

    ``confirm`` is called with the profile the storage is stamped with before it is changed,
    and raises to refuse, once the stamp is read and found ``from_profile``'s (a mistyped
    ``--from`` is then told the stamp it found, not asked to confirm), on a data root and on
    PostgreSQL and object storage alike.

    Returns the new stamp, with ``changed``: ``False`` when it was this profile's already (a
    repeated command, which changes nothing and audits nothing, or finishes, on a data root,
    what a run stopped after its stamp left undone: ``finished`` says what).
    """
    if config.backend == REMOTE:
        from app.remote import storage as remote

        return remote.restamp(config, from_profile, confirm=confirm)

    from app import dataroot
    from app.check import restamp_logged

    return dataroot.restamp(config, from_profile, confirm=confirm, logged=restamp_logged)


def holder_lost(error: BaseException) -> bool:
    """Whether ``error`` says this process no longer owns its storage: a local lock file
    deleted or replaced, or a replica's database connection gone. A server stops on it."""
    from app.errors import LockLostError
    from app.remote.errors import HolderLostError

    return isinstance(error, LockLostError | HolderLostError)
