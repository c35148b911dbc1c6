"""The object store of the remote backend: files as objects under ``s3://bucket/prefix``.

**How a file becomes visible.** An upload is written once, straight to a fresh, immutable key
(``blobs/<random hex>``) that nothing references yet; it becomes visible only when the
transaction that inserts (or switches) the database row naming that key commits. Readers
reach objects only through rows, so an object whose transaction rolled back, or whose
process died mid-upload, is an orphan that nobody can see, and :meth:`ObjectStore.orphans`
finds it for ``app data check``. The alternative, a temporary key copied to the final key
("promoted"), costs a second write of every byte (S3 copies server-side, but still copies),
and copying *after* the commit would leave a committed row naming a key that a crash
could leave missing; copying *before* the commit is this design at twice the cost. Keys are
never overwritten, so a reader holding a row never sees a half-replaced file, and a replace
is one transaction that switches the row to the new key (the old object goes with the trash).

**Stamp.** ``<prefix>/.app-profile.json`` names the profile, like the local root's stamp; a
prefix with other objects and no stamp is refused.

**Client.** boto3: AWS's own SDK, which every S3-compatible server (SeaweedFS, MinIO, Ceph,
R2) tests against; its s3transfer layer streams a non-seekable upload in parts and aborts a
failed multipart upload. Its import costs 0.3-0.5 s, so it happens in
:class:`ObjectStore`'s constructor, never when this module is imported (``app config`` and
``app doctor`` import the configuration only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final
from urllib.parse import urlsplit

from app import sandbox
from app.config import RUN_PROFILE
from app.errors import AppError, InvalidSettingError, UploadTooLargeError, json_loads, shell_word
from app.remote.errors import (
    STATIC_CREDENTIALS,
    DatabaseCopiedError,
    DatabaseTimelineBehindError,
    InsideTestRunError,
    ObjectMissingError,
    ObjectStoreUnavailableError,
    PrefixEmptiedError,
    PrefixOfAnotherDatabaseError,
    PrefixStampDamagedError,
    PrefixStampMissingError,
    Protection,
    RemoteStampMismatchError,
    S3ClientSettingsError,
    S3EndpointElsewhereError,
    StorageMismatchError,
    StoreClockSkewError,
    UnstampedNotEmptyError,
    needs_confirmation,
)
from app.remote.hosts import is_this_machine

STAMP_NAME = ".app-profile.json"
#: The stamp's ``rewritten`` of its last write, where that write was of a database that may
#: have lost commits: its first open on a new timeline, an adoption of a copy
#: (`ObjectStore.stamp_rewritten`).
REWRITTEN: Final = ("timeline", "adopt-copy")
#: What a test run writes first in each scratch prefix it makes, by a create that the store
#: refuses where the object is there already (`app.testing.fixtures`): which run the prefix
#: is, so that a run whose suffix came out the same is refused, and a run's end empties
#: only a prefix that is its own. An open takes a prefix holding it alone as empty.
RUN_MARKER = ".app-pytest-run.json"
BLOBS = "blobs/"
# The names `new_blob_name` makes. Nothing else under blobs/ is the app's to delete: another
# profile's prefix nested there (`<prefix>/blobs/...`, which no overlap check sees across two
# sets of settings), or a copy made by hand.
_BLOB_NAME = re.compile(r"blobs/[0-9a-f]{32}")
#: The last segment of a test run's scratch prefix inside testing's (`app.sandbox.
#: scratch_blob_url`): where alone a run's marker is ever written.
_RUN_SEGMENT = re.compile(r"pytest_\d+_[0-9a-f]{4}(_gw\d+)?")
#: The metadata every object a store writes in a test run's scratch prefix carries
#: (``x-amz-meta-app-run``): a MAC of its name under the run's token, what the run's end
#: takes for proof that the run wrote it (`ObjectStore.written_here`).
RUN_METADATA = "app-run"
_CHUNK = 1024 * 1024

# S3's limits on one object and its multipart upload (AWS's; MinIO, R2 and SeaweedFS take
# at least these). Parts of 8 MiB alone reach 10,000 parts at about 78 GiB (red team 42).
S3_MIN_PART_BYTES = 5 * 2**20
S3_MAX_PART_BYTES = 5 * 2**30
S3_MAX_PARTS = 10_000
_PART_BYTES = 8 * 2**20
# s3transfer keeps up to this many of a streamed upload's parts in memory (its default, 10,
# at 8 MiB): larger parts keep fewer, so that an upload's memory stays about this.
_IN_MEMORY_BYTES = 10 * _PART_BYTES


# S3 refuses a request signed more than 15 minutes from its clock (RequestTimeTooSkewed); a
# bare 403 (a HEAD has no body to say why) is taken for that past the same 15 minutes, so
# that a 403 for another reason is not blamed on clocks the store still accepts.
_SKEW_ALLOWED = timedelta(minutes=15)


def _difference(now: datetime, there: datetime | None) -> str:
    if there is None or there.tzinfo is None:
        return "unknown size"
    seconds = round((now - there).total_seconds())
    ahead = "ahead of" if seconds > 0 else "behind"
    return f"{abs(seconds) // 60} min {abs(seconds) % 60} s, this machine {ahead} the store"


def part_size(
    length: int | None, preferred: int = _PART_BYTES, max_parts: int = S3_MAX_PARTS
) -> int:
    """The size of each part of a multipart upload of at most ``length`` bytes.

    ``preferred`` (at least S3's 5 MiB), raised to a whole MiB that fits ``length`` in
    ``max_parts`` parts; at most S3's largest part (5 GiB), which fits its largest object
    (5 TiB, app.config.S3_MAX_OBJECT_BYTES) in 10,000 parts. ``None``: the length is
    unknown, ``preferred`` it is.
    """
    size = max(preferred, S3_MIN_PART_BYTES)
    if length is not None and length > size * max_parts:
        needed = -(-length // max_parts)
        size = -(-needed // _CHUNK) * _CHUNK
    return min(size, S3_MAX_PART_BYTES)


_DEFAULT_PORTS = {"http": 80, "https": 443}
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})

# One boto3 session for every store of the process: each new session parses botocore's JSON
# service models again (about 0.2 s), which every replica start and every test store paid.
# The stores pass their own credentials and settings to their clients; a session is not safe
# to make clients from in two threads at once (boto3's documentation), hence the lock.
_session_lock = threading.Lock()
_sessions: list[Any] = []


_CHAIN: Final = (
    "from the S3 client's own chain ({}; s3_access_key_id and s3_secret_access_key are unset, "
    "so it looks in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/config "
    "and ~/.aws/credentials, and an instance or container role)"
)
"""Where credentials come from when neither key is set, with what the chain did ({})."""


def _one_line(error: BaseException) -> str:
    """``error`` on one line, without what looks like an AWS credential (`_hidden`): a
    `credential_process`'s standard error ends in a newline, and one that printed its keys
    there (a debugging ``print(json.dumps(...), file=sys.stderr)``, an SDK's dump of its
    answer) had them quoted in every refusal (red team 45's *not stopped*)."""
    return _CREDENTIAL_SHAPES.sub(_hidden, " ".join(str(error).split()))


#: What AWS credentials look like in text: an access key id (its four-letter kind, then 16
#: capitals and digits), and a run of 40 or more base64 characters, the length of a secret
#: access key and less than a session token's.
_CREDENTIAL_SHAPES: Final = re.compile(
    r"\b(?:AKIA|ASIA|AROA|AIDA|AGPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b"
    r"|(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40,}(?![A-Za-z0-9/+=])"
)


def _hidden(found: re.Match[str]) -> str:
    """A credential-shaped run, hidden; a path (more than two ``/``: a key has one at most
    in most draws) or a run of one kind of character (a line of ``=`` or ``-``) kept."""
    text = found.group()
    mixed = any(c.isdigit() for c in text) and any(c.isalpha() for c in text)
    if text.count("/") > 2 or not mixed:
        return text
    return "[a credential, hidden]"


def _session() -> Any:
    import boto3
    import botocore.session

    with _session_lock:
        if not _sessions:
            core = botocore.session.get_session()
            _bound_the_credential_process(core)
            _sessions.append(boto3.session.Session(botocore_session=core))
        return _sessions[0]


#: The longest the chain's `credential_process` may run (s3_credential_process_seconds), as
#: the last store made in this process was configured: one configuration per process, but
#: for tests, and the client's renewals of expiring credentials run the process again
#: later, from the session every store shares.
_credential_process_seconds: list[float] = [30.0]


def _bound_the_credential_process(core: Any) -> None:
    """Give the session's chain a `credential_process` provider that stops the process past
    `_credential_process_seconds` (`_BoundedProcess`), in the place of botocore's own.

    botocore waits for the process with no limit: one that never exited (a prompt no one
    answers, a network call that hangs) made every command of a profile that sets neither S3
    key wait with it, for ever, saying nothing (red team 45's *not stopped*). The provider
    is botocore's, built as botocore builds it (`create_credential_resolver`), with its
    public ``popen`` parameter; the chain is changed through its public methods."""
    from botocore.credentials import ProcessProvider

    resolver = core.get_component("credential_provider")
    if resolver.get_provider(ProcessProvider.METHOD) is None:
        return
    bounded = ProcessProvider(
        profile_name=core.get_config_variable("profile") or "default",
        load_config=lambda: core.full_config,
        popen=_BoundedProcess,
    )
    resolver.insert_after(ProcessProvider.METHOD, bounded)
    resolver.remove(ProcessProvider.METHOD)  # the first of that name: botocore's


class _BoundedProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A `credential_process`, in a process group of its own, stopped with everything it
    started once it has run for `_credential_process_seconds`: the refusal then says so
    (``CredentialRetrievalError``, which the store's refusals name, and where the setting
    is)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("start_new_session", True)
        super().__init__(*args, **kwargs)

    def communicate(self, input: Any = None, timeout: float | None = None) -> Any:
        limit = _credential_process_seconds[0]
        try:
            return super().communicate(input, timeout=limit if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            pass
        from botocore.credentials import ProcessProvider
        from botocore.exceptions import CredentialRetrievalError

        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        try:
            super().communicate(timeout=1.0)
        except subprocess.TimeoutExpired:
            # Something it started left its group and keeps the pipes open, or it could not
            # be killed (another user's, set-user-ID): not waited for, the command goes on.
            for stream in (self.stdout, self.stderr):
                if stream is not None:
                    stream.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(timeout=1.0)
        raise CredentialRetrievalError(
            provider=ProcessProvider.METHOD,
            error_msg=(
                f"the credential_process ran for longer than {limit:g} s "
                "(s3_credential_process_seconds), so it was stopped, with every process it "
                "started; it may be waiting for input no one gives it"
            ),
        )


#: Where the S3 client reads an endpoint of its own, in its order (botocore's configured
#: endpoints), for a client given none.
_CONFIGURED_ENDPOINTS: Final = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def _not_sent_elsewhere(client: Any, where: str) -> None:
    """Refuse a client made without an endpoint (``s3_endpoint_url`` unset: AWS's, to the app
    and to the check of the profiles' prefixes) that the S3 client's own configuration sends
    elsewhere: ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, or ``endpoint_url`` in the AWS
    config file, as a shell that points the ``aws`` command at a MinIO leaves them.

    Red team 62: a development profile on AWS's ``s3://app-data/production`` beside
    production's same prefix on a store of its own was apart to the check (`app config`
    said nothing), while the shell's ``AWS_ENDPOINT_URL`` sent development's every request to
    production's store; its stamp alone refused the open. Judged from where the client was
    made to send its requests (``meta.endpoint_url``), whatever set it.

    Raises:
        S3EndpointElsewhereError: naming the endpoint the client would use, where it is
            read, and the two remedies.
    """
    reached = str(client.meta.endpoint_url or "")
    # As urllib3 reads it, where the requests go (red team 62 on regress: `urlsplit` read
    # `http://<a store>\\@s3.amazonaws.com` as AWS's, and the upload reached the store).
    host = _sent_to(reached)[0]
    if host == "amazonaws.com" or host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        return
    given = [f"{name}={os.environ[name]}" for name in _CONFIGURED_ENDPOINTS if os.environ.get(name)]
    if given:
        source = f"the process's environment gives it: {', '.join(given)}"
        remedy = f"unset {' and '.join(g.split('=')[0] for g in given)} for the app's commands"
    else:
        source = (
            "the AWS config file gives it: endpoint_url in its profile's section, or in the s3 "
            "part of the services section it names"
        )
        remedy = "remove that endpoint_url (or give the app's commands another AWS_PROFILE)"
    raise S3EndpointElsewhereError(where, reached, source, remedy)


def _sent_to(url: str) -> tuple[str, int | None]:
    """The host (lower case, no final dot, no brackets) and port of ``url`` as urllib3, the
    S3 client's HTTP library, reads it: where a request to it is sent. ``("", None)`` for
    what it cannot read."""
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    try:
        parsed = parse_url(url)
    except LocationParseError:
        return "", None
    return (parsed.host or "").lower().rstrip(".").strip("[]"), parsed.port


def _read_alike(endpoint_url: str) -> None:
    """Refuse an endpoint whose host or port Python's ``urlsplit`` (which the check of the
    profiles' prefixes and the sandbox's compare by) reads otherwise than urllib3 (which
    sends the requests): ``http://<a store>\\@s3.amazonaws.com`` was AWS's to the check and
    reached the store (red team 62 on regress)."""
    parts = urlsplit(endpoint_url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    seen = ((parts.hostname or "").lower().rstrip("."), port)
    sent = _sent_to(endpoint_url)
    if seen == sent:
        return
    shown = [f"{host}:{port}" if port is not None else host for host, port in (sent, seen)]
    raise InvalidSettingError(
        None, "s3_endpoint_url", endpoint_url, f"its host is {shown[0]} to the S3 client's "
        f"HTTP library (urllib3), where its requests go, and {shown[1]} to the check that no two "
        "profiles share a prefix (Python's urlsplit), so the check would compare another store "
        "than the one reached; write the URL as scheme://host:port/path, without a backslash, "
        "'@' or another character the two read differently", "the caller",
    )  # fmt: skip


def _new_client(**kwargs: Any) -> Any:
    session = _session()
    with _session_lock:
        return session.client(**kwargs)


# --- locations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobLocation:
    """Where a profile's objects live: endpoint (normalised), bucket, prefix (no slashes at
    either end; ``""`` is the whole bucket); ``under``, the endpoint URL's path (no slashes
    at either end), which the S3 client puts before the bucket in every request."""

    endpoint: str
    bucket: str
    prefix: str
    under: str = ""
    #: The endpoint URL's host as written (lower case, no trailing dot), for the readings of
    #: it that name a bucket (:func:`_host_readings`); ``""`` for the client's default.
    host: str = ""

    def __str__(self) -> str:
        at = f" at {self.endpoint}" if self.endpoint else ""
        under = f"/{self.under}" if self.under else ""
        # The host as written where the endpoint hides it (AWS's, a name of this machine's)
        # and it names a bucket (red team 57).
        through = f" through {self.host}" if _host_readings(self.host, "") else ""
        return f"s3://{self.bucket}/{self.prefix}{at}{under}{through}"

    def key(self, name: str) -> str:
        """The object key of ``name`` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name


# AWS keeps one namespace of bucket names per partition: every S3 endpoint of it (regional,
# dual-stack, FIPS, virtual-hosted) reaches the same bucket as the client's default does, so
# they are one endpoint here. Erring towards "same" (GovCloud counted with the rest) costs a
# setting; "different" would let two profiles share a prefix.
_AWS_PARTITIONS = (("amazonaws.com.cn", "aws-cn"), ("amazonaws.com", ""))


def _normal_endpoint(endpoint_url: str | None) -> str:
    if not endpoint_url:
        return ""  # the client's default (AWS)
    parts = urlsplit(endpoint_url)
    scheme = parts.scheme.lower() or "https"
    host = (parts.hostname or "").lower().rstrip(".")
    for domain, partition in _AWS_PARTITIONS:
        if host == domain or host.endswith(f".{domain}"):
            return partition
    if is_this_machine(host):
        host = "localhost"
    return f"{scheme}://{host}:{parts.port or _DEFAULT_PORTS.get(scheme, 443)}"


# S3's limit on a key, in bytes of UTF-8; the longest name the app makes under a prefix
# (blobs/ and 32 hex digits, its stamp object), with room; a filesystem's limit on a name,
# which SeaweedFS's filer and MinIO apply to each segment of a key.
_MAX_KEY_BYTES: Final = 1024
_LONGEST_NAME: Final = 64
_MAX_PREFIX_BYTES: Final = _MAX_KEY_BYTES - 1 - _LONGEST_NAME
_MAX_SEGMENT_BYTES: Final = 255


def parse_blob_url(blob_url: str, endpoint_url: str | None = None) -> BlobLocation:
    """``s3://bucket/prefix`` (and the endpoint) as a :class:`BlobLocation`.

    Raises:
        InvalidSettingError: not an ``s3://`` URL with a bucket.
    """
    control = sorted({char for char in blob_url if ord(char) < 0x20 or ord(char) == 0x7F})
    if control:
        # urlsplit drops a tab or a line break without a word (`s3://b/pro\td` was `prod`),
        # and a store refuses a NUL with a bare InvalidRequest (red team 42).
        shown = ", ".join(repr(char) for char in control)
        raise InvalidSettingError(
            None, "blob_url", blob_url, f"has a control character ({shown}), which the URL's "
            "reading drops (a tab, a line break) or an object store refuses (NUL), so the "
            "prefix it names is not the one written; remove it", "blob_url",
        )  # fmt: skip
    parts = urlsplit(blob_url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise InvalidSettingError(
            None, "blob_url", blob_url, "expected s3://bucket/prefix (a bucket, then an "
            "optional prefix; no query)", "blob_url",
        )  # fmt: skip
    segments = [segment for segment in parts.path.split("/") if segment]
    if {".", ".."} & set(segments):
        # Object stores disagree on them: AWS keeps `a/../b` as a key of its own (another
        # prefix than the one it seems to name), SeaweedFS and MinIO refuse every request
        # with it (a bare InvalidRequest from boto, red team 37).
        raise InvalidSettingError(
            None, "blob_url", blob_url, "a prefix with a '.' or '..' segment names a "
            "different prefix on each object store (AWS keeps it as written, SeaweedFS and "
            "MinIO refuse it); write the prefix without them, as the path it means",
            "blob_url",
        )  # fmt: skip
    if "\\" in parts.path:
        # The same class (red team 41): SeaweedFS takes a backslash in a key for a slash, so
        # `prod\x` was `prod/x` there, another profile's prefix, which the overlap check
        # (and every other store) took for a prefix of its own.
        raise InvalidSettingError(
            None, "blob_url", blob_url, "a prefix with a backslash names a different prefix "
            "on each object store (SeaweedFS takes it for '/', AWS and MinIO keep it as a "
            "character of the name); write '/' where a path is meant, or another character",
            "blob_url",
        )  # fmt: skip
    long = [segment for segment in segments if len(segment.encode()) > _MAX_SEGMENT_BYTES]
    prefix = "/".join(segments)
    if long or len(prefix.encode()) > _MAX_PREFIX_BYTES:
        # Every upload was refused with KeyTooLongError, which the app called a problem of
        # the endpoint or the credentials, while `app doctor` said all was well (red team 38).
        what = (
            f"has a segment of {len(long[0].encode())} bytes ({long[0][:24]!r}...), past the "
            f"{_MAX_SEGMENT_BYTES} an object store on a filesystem (SeaweedFS, MinIO) takes "
            "in one"
            if long
            else f"is {len(prefix.encode())} bytes long"
        )
        raise InvalidSettingError(
            None, "blob_url", blob_url, f"its prefix {what}; the app's object names (up to "
            f"{_LONGEST_NAME} bytes) go under it, and S3 takes keys of up to 1024 bytes, so "
            f"the prefix may be {_MAX_PREFIX_BYTES} bytes at most, in segments of "
            f"{_MAX_SEGMENT_BYTES}: choose a shorter one", "blob_url",
        )  # fmt: skip
    under = "/".join(s for s in urlsplit(endpoint_url or "").path.split("/") if s)
    host = (urlsplit(endpoint_url or "").hostname or "").lower().rstrip(".")
    return BlobLocation(_normal_endpoint(endpoint_url), parts.netloc, prefix, under, host)


def scratch_prefix_problem(configured: str, scratch: str) -> str | None:
    """Why `scratch`, a test run's scratch prefix made from the prefix `configured` (which
    :func:`parse_blob_url` takes) with the run's suffix (`app.sandbox.scratch_blob_url`),
    is no prefix the app can use, or ``None``: the suffix took it past S3's limits.

    A testing prefix of 959 bytes, which ``app doctor`` takes, made every test of a run
    fail with a traceback of the app's refusal of a prefix of 977 bytes no one had written,
    and the run's end said that it left objects under it (red team 57).
    """
    before = [s for s in urlsplit(configured).path.split("/") if s]
    after = [s for s in urlsplit(scratch).path.split("/") if s]
    length, total = len("/".join(before).encode()), len("/".join(after).encode())
    added = total - length
    cause = f"a test run adds its suffix ({added} bytes here) to it"
    long = [segment for segment in after if len(segment.encode()) > _MAX_SEGMENT_BYTES]
    if long:
        room = _MAX_SEGMENT_BYTES - added
        return (
            f"under pytest it names the run's scratch prefix {scratch}, whose last segment is "
            f"{len(long[-1].encode())} bytes, past the {_MAX_SEGMENT_BYTES} an object store "
            f"on a filesystem takes in one: {cause}, so the last segment of its prefix may be "
            f"{room} bytes at most (it is {len(before[-1].encode())}): choose a shorter one"
        )
    if total > _MAX_PREFIX_BYTES:
        return (
            f"under pytest it names the run's scratch prefix {scratch}, of {total} bytes, past "
            f"the {_MAX_PREFIX_BYTES} that leave room for the app's object names within S3's "
            f"{_MAX_KEY_BYTES} bytes of a key: {cause}, so its prefix may be "
            f"{_MAX_PREFIX_BYTES - added} bytes at most (it is {length}): choose a shorter one"
        )
    return None


def _rewritten_at(stamp: dict[str, Any]) -> datetime | None:
    """A marked stamp's pinned time (`ObjectStore._pinned`), or ``None`` (none, or not a
    date with its zone: the stamp's own ``LastModified`` counts then)."""
    value = stamp.get("rewritten_at")
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return None if at is None or at.tzinfo is None else at.astimezone(UTC)


def _timeline(stamp: dict[str, Any]) -> int | None:
    value = stamp.get("timeline")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def binding_refusal(
    profile: str,
    stamp: dict[str, Any],
    database: tuple[str, str, str | None, int | None],
    where: str,
    protected: Protection,
) -> AppError | None:
    """What opening `database` (its id, how it is shown, :func:`app.remote.pg.instance`
    and timeline) over the prefix `where`, stamped `stamp`, is refused for, or ``None``:
    what an open raises and what ``app doctor`` reports.

    - a prefix bound to another database id;
    - a copy of the database it is bound to: its id is a row, which a restored dump has too
      (red team 39);
    - a timeline below the highest the prefix has seen: a standby of it was promoted, and
      this is the old primary, still taking writes, a split brain (red team 39).

    A stamp that names no database (or no instance) yet refuses nothing: the open claims it.
    """
    database_id, shown, instance, timeline = database
    bound = stamp.get("database")
    if bound is not None and bound != database_id:
        return StorageMismatchError("database", shown, where, str(bound), database_id=database_id)
    if (
        bound is not None
        and "instance" in stamp
        and instance is not None
        and not same_instance(str(stamp["instance"]), instance)
    ):
        return DatabaseCopiedError(
            profile, shown, where, str(stamp["instance"]), instance,
            protected=needs_confirmation(protected, profile),
        )  # fmt: skip
    recorded = _timeline(stamp)
    if timeline is not None and recorded is not None and timeline < recorded:
        return DatabaseTimelineBehindError(profile, shown, where, timeline, recorded)
    return None


def another_database(
    profile: str,
    stamp: dict[str, Any],
    where: str,
    database: tuple[str | None, str, str | None, int | None] | None,
) -> PrefixOfAnotherDatabaseError | None:
    """The refusal of a prefix stamped for another profile whose stamp names another
    database than ``database`` (its id, or ``None`` if not bound yet, and how it is shown),
    or ``None``: a re-stamp would hand that profile's objects to a database that names none
    of them (red team 41: a mistyped blob_url, then the re-stamp the refusal named, and
    production's next start was refused)."""
    bound = stamp.get("database")
    if database is None or bound is None or bound == database[0]:
        return None
    return PrefixOfAnotherDatabaseError(
        profile, where, str(stamp.get("profile")), str(bound), database[1],
        database[0] or "none: bound to no prefix",
    )  # fmt: skip


def same_instance(first: str, second: str) -> bool:
    """Whether two :func:`app.remote.pg.instance` values are one database (a system
    identifier that a role could not read, ``unknown``, matches any)."""
    (a_system, _, a_oid), (b_system, _, b_oid) = first.partition("/"), second.partition("/")
    return a_oid == b_oid and (a_system == b_system or "unknown" in (a_system, b_system))


def _host_readings(host: str, other: str) -> list[tuple[str, str]]:
    """The other readings of an endpoint's host, each (the host it is a name under, the
    bucket its first labels name), for a store that takes virtual-hosted requests
    (``<bucket>.<its domain>``: AWS, MinIO with ``MINIO_DOMAIN``, SeaweedFS with
    ``-s3.domainName``). The app sends path-style requests to an endpoint it is given, but
    such a store reads the bucket from the host first: ``http://app-data.store`` with
    ``s3://sub/x`` is bucket ``app-data``, keys ``sub/x/...`` (red team 57).

    A host is read so where its labels before AWS's ``s3`` label are a bucket, where it
    is a name under ``.localhost`` or under this machine's name, and where it is a name
    under `other`, the other endpoint's host (erring towards "same": a false one costs a
    setting). An address is never read so.
    """
    if not host or ":" in host or set(host) <= set("0123456789.x"):
        return []
    labels = host.split(".")
    found: list[tuple[str, str]] = []
    for domain, _ in _AWS_PARTITIONS:
        if host.endswith(f".{domain}"):
            for i, label in enumerate(labels):
                if label == "s3" or label.startswith("s3-"):
                    # An interface VPC endpoint's id comes between (`<bucket>.vpce-<id>.s3.
                    # <region>.vpce.amazonaws.com`): it is no part of the bucket's name.
                    vpce = [k for k in range(i) if labels[k].startswith("vpce-")]
                    end = vpce[0] if vpce else i
                    if end:
                        found.append((".".join(labels[i:]), ".".join(labels[:end])))
                    break
            return found
    for i in range(1, len(labels)):
        under = ".".join(labels[i:])
        if under == other or is_this_machine(under):
            found.append((under, ".".join(labels[:i])))
    return found


def overlap_note(first: BlobLocation, second: BlobLocation) -> str | None:
    """How one location's objects could lie under the other's (:func:`prefixes_overlap`):
    ``""`` as written (equal, or nested whole path segments, in one bucket on one
    endpoint), a sentence where it is through a host that names a bucket
    (:func:`_host_readings`), ``None`` where they cannot."""

    # The path each request names: an endpoint URL's own path goes before the bucket
    # (boto3 keeps it; `http://h/app-tests` with bucket `sub` is bucket `app-tests`, keys
    # `sub/...`, on SeaweedFS: red team 41). Case folded up to the bucket: virtual-hosted
    # addressing puts it in a host name, where case does not count (keys keep theirs: S3
    # compares them exactly).
    def path(location: BlobLocation) -> list[str]:
        before = (
            [*location.under.split("/"), location.bucket] if location.under else [location.bucket]
        )
        return [s.lower() for s in before] + (location.prefix.split("/") if location.prefix else [])

    def readings(location: BlobLocation, other: BlobLocation) -> list[tuple[str, list[str]]]:
        found = [(location.endpoint, path(location))]  # as the app sends it: path-style
        scheme, at, rest = location.endpoint.partition("://")
        for under, bucket in _host_readings(location.host, other.host):
            # AWS's names are one endpoint whatever the host (`_normal_endpoint`).
            endpoint = (
                _normal_endpoint(f"{scheme}://{under}:{rest.rpartition(':')[2]}")
                if at
                else location.endpoint
            )
            found.append((endpoint, [bucket.lower(), *path(location)]))
        return found

    for i, (endpoint_a, a) in enumerate(readings(first, second)):
        for j, (endpoint_b, b) in enumerate(readings(second, first)):
            shortest = min(len(a), len(b))
            if endpoint_a == endpoint_b and a[:shortest] == b[:shortest]:
                if not (i or j):
                    return ""
                return _through_host(first, a) if i else _through_host(second, b)
    return None


def prefixes_overlap(first: BlobLocation, second: BlobLocation) -> bool:
    """Whether one location's objects could lie under the other's (equal, or nested whole
    path segments, in one bucket on one endpoint), also where either endpoint's host names
    a bucket (:func:`_host_readings`)."""
    return overlap_note(first, second) is not None


def _through_host(location: BlobLocation, path: list[str]) -> str:
    bucket, rest = path[0], "/".join(path[1:])
    domain = location.host.removeprefix(f"{bucket}.")
    return (
        f"s3_endpoint_url's host {location.host} names bucket {bucket!r} to a store that takes "
        f"virtual-hosted requests (<bucket>.{domain}), so s3://{location.bucket}/"
        f"{location.prefix} is read there as bucket {bucket!r}, prefix {rest}: written with "
        f"the store's own host ({domain}) as s3_endpoint_url, it is s3://{bucket}/{rest}"
    )


# --- objects -----------------------------------------------------------------------------


#: The remedy of a write the store acknowledged and did not keep as sent.
_WRITE_LOST: Final = (
    "It loses writes it has answered as done: a node or disk failing, or a gateway, cache or "
    "proxy in front of it that answers before the store has kept the bytes. Nothing names "
    "the object, so nothing was saved: the client may send it again. Check the store's "
    "health and logs (`app data check` lists what no row names)"
)


@dataclass(frozen=True, slots=True)
class PutResult:
    """A written object: its name under the prefix, size and SHA-256."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object."""

    name: str
    size: int
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """One version of an object, or a delete marker (`deleted`), in a bucket that keeps
    versions (`ObjectStore.every_version`)."""

    name: str
    version_id: str
    deleted: bool = False
    latest: bool = False  # the current one of its name (a delete marker: the name's deleted)


@dataclass(frozen=True, slots=True)
class UnfinishedUpload:
    """A multipart upload begun and never completed nor aborted."""

    name: str
    upload_id: str
    initiated: datetime


class ObjectStream:
    """An object (or a range of it) being read: ``size`` is the whole object's, ``length``
    the bytes this stream yields. Iterate it, then close it (or use ``with``)."""

    def __init__(
        self,
        body: Any,
        size: int,
        length: int,
        refusal: Callable[[str], AppError] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self._body = body
        self.size = size
        self.length = length
        self._refusal = refusal
        #: The object's user metadata (``x-amz-meta-*``), as the store answered it.
        self.metadata = metadata or {}
        #: What the store's own checksum said of the bytes it served, once they were all
        #: read and it did not match them (``None``: it matched, or there was none).
        self.checksum_mismatch: str | None = None

    def __iter__(self) -> Iterator[bytes]:
        from botocore.exceptions import FlexibleChecksumError

        try:
            yield from self._body.iter_chunks(_CHUNK)
        except FlexibleChecksumError as error:
            # The S3 client checks the bytes against the checksum the store keeps of the
            # object (x-amz-checksum-*, SeaweedFS's and AWS's), after the last byte: a bare
            # FlexibleChecksumError traceback ended `app data check`, the one command meant
            # to report such an object (red team 57).
            self.checksum_mismatch = str(error)
            if self._refusal is None:
                raise
            raise self._refusal(str(error)) from None

    def hash_into(self, digest: Any) -> str | None:
        """Feed every byte of the stream to `digest` (a :mod:`hashlib` object); what the
        store's own checksum said of them where it did not match (every byte was read by
        then), else ``None``: for the checks that report such an object, not refuse it."""
        try:
            for chunk in self:
                digest.update(chunk)
        except ObjectStoreUnavailableError:
            if self.checksum_mismatch is None:
                raise
        return self.checksum_mismatch

    def read(self) -> bytes:
        """The whole stream at once (small objects: stamps, tests)."""
        return b"".join(self)

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _CountingReader(io.RawIOBase):
    # Gives s3transfer a file over an iterable of chunks, hashing and counting on the way,
    # and stops an upload past max_bytes (s3transfer then aborts the multipart upload).
    def __init__(self, chunks: Iterable[bytes], max_bytes: int | None) -> None:
        self._chunks = iter(chunks)
        self._pending = b""
        self._max = max_bytes
        self.size = 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = bytes(chunk)
            self.size += len(chunk)
            if self._max is not None and self.size > self._max:
                raise UploadTooLargeError(self._max, self.size)
            self.sha256.update(chunk)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _file_chunks(file: IO[bytes]) -> Iterator[bytes]:
    while chunk := file.read(_CHUNK):
        yield chunk


#: The remedy of a store that answered each attempt with a server error (5xx).
_SERVER_ERROR = (
    "It answered each of its {attempts} attempt(s) (s3_max_attempts) with a server error: it "
    "runs and these settings reach it, so it is failing or overloaded. Retry once it answers "
    "(`app doctor` checks it); nothing in the settings needs to change"
)
#: The remedy of a write whose multipart upload the store no longer has (red team 64: it said
#: to check s3_endpoint_url, blob_url and the credentials, which had reached it).
_UPLOAD_ABORTED = (
    "The store no longer has the multipart upload this write was streaming into: something "
    "aborted it meanwhile, as a lifecycle rule's AbortIncompleteMultipartUpload does "
    "(`aws s3api get-bucket-lifecycle-configuration --bucket {bucket}` shows them), or "
    "another client's `aws s3api abort-multipart-upload`. These settings reach the store and "
    "need no change: send it again, and give such a rule more days than an upload takes"
)
#: The remedy of a write whose bytes the store received changed (red team 65: it said to check
#: s3_endpoint_url, blob_url and the credentials, which had reached it).
_BODY_CHANGED = (
    "The store received other bytes than this process sent: their CRC32 (sent with every "
    "write) did not match, so it kept nothing of them. Something between the two changes "
    "what it carries (a proxy, a gateway or a load balancer that rewrites bodies, a faulty "
    "network card or its offload), or the store's own node is failing. Nothing names the "
    "object, so nothing was saved: the client may send it again. These settings reach the "
    "store and need no change; check what sits between this machine and the store"
)
#: The remedy of a multipart upload one of whose parts, acknowledged, the store did not have
#: when asked to complete it (red team 65: it said to check s3_endpoint_url, blob_url and the
#: credentials, which had reached it).
_PART_LOST = (
    "The store answered a part of this write as kept, then did not have it (or had it with "
    "another ETag) when asked to complete the upload: a node or disk failing, or a gateway, "
    "cache or proxy in front of it that answers before the store has kept the bytes. Nothing "
    "names the object, so nothing was saved: the client may send it again. These settings "
    "reach the store and need no change; check the store's health and logs"
)
#: The remedy of a store that did not answer in time.
NO_ANSWER = (
    "Retry once it answers (`app doctor` checks it); its address and credentials need no "
    "change for this"
)


#: What S3 and its imitations answer to a body whose checksum (CRC32, Content-MD5, the signed
#: payload hash) is not that of the bytes they received.
_BODY_CHECKS = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})


def _not_implemented(error: Exception) -> bool:
    """Whether the server said it does not implement a request (what some S3-compatible
    servers answer to a listing of uploads or a bucket's versioning)."""
    response = getattr(error, "response", None) or {}
    return bool(response.get("Error", {}).get("Code") == "NotImplemented")


def _timed_out(error: Exception) -> bool:
    """Whether botocore's "Connection was closed before we received a valid response" is a
    timeout while the request's body was sent: urllib3 reports a socket timeout in a send
    as a ``ProtocolError``, which botocore turns into ``ConnectionClosedError``. A store
    stopped while a part of 8 MiB was on its way (the socket's buffers full) was reported
    as a closed connection, not the timeout settings that ended the wait (a CI run)."""
    from botocore.exceptions import ConnectionClosedError

    if not isinstance(error, ConnectionClosedError):
        return False
    cause = error.kwargs.get("error")
    return any(isinstance(part, TimeoutError) for part in getattr(cause, "args", ()))


def _run_key() -> bytes | None:
    """The key of a test run's marks: its token (`app.sandbox.RUN_MARK_ENV`), where this
    process has one; ``None`` where not (a child given a hand-built environment: what it
    writes carries no mark, and the run's end leaves it, naming it)."""
    token = os.environ.get(sandbox.RUN_MARK_ENV, "")
    if len(token) != 32 or any(c not in "0123456789abcdef" for c in token):
        return None
    return bytes.fromhex(token)


def _mac(key: bytes, text: str) -> str:
    # hmac from the standard library: a keyed hash is what proves a name to its key's holder.
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def run_named(mark: dict[str, Any] | None) -> str:
    """A test run, as its marker (`RUN_MARKER`) names it."""
    if not mark:
        return "no run (it is not a run's marker)"
    return (
        f"run {mark.get('run')!s} of pid {mark.get('pid')!s} on host {mark.get('host')!s}, "
        f"started {mark.get('started')!s}, whose scratch database is {mark.get('database')!s}"
    )


class ObjectStore:
    """One profile's objects: ``s3://bucket/prefix`` on an S3-compatible endpoint.

    Names passed to the methods are relative to the prefix. The credentials are kept by the
    client only; ``repr`` and every message show the location alone.

    Raises:
        SandboxViolationError: under pytest, a prefix that is not one of the run's scratch
            prefixes (:func:`app.sandbox.check_scratch`).
        InvalidSettingError: ``blob_url`` is not ``s3://bucket/prefix``.
    """

    def _overlaps(self, blob_url: str, endpoint_url: str | None) -> bool:
        """Whether this store's location overlaps another's, given as in the settings (one
        that is no location overlaps nothing: `load` refuses it for its own profile)."""
        try:
            other = parse_blob_url(blob_url, endpoint_url)
        except InvalidSettingError:
            return False
        return prefixes_overlap(self.location, other)

    def __init__(
        self,
        blob_url: str,
        endpoint_url: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        *,
        region: str = "us-east-1",
        part_bytes: int = _PART_BYTES,
        max_parts: int = S3_MAX_PARTS,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_attempts: int = 3,
        credential_process_seconds: float = 30,
    ) -> None:
        from botocore.config import Config

        if endpoint_url:
            _read_alike(endpoint_url)
        self.location = parse_blob_url(blob_url, endpoint_url)
        # Before the client exists: every request goes through it, so none can reach a
        # prefix that the test run does not own.
        run = sandbox.check_scratch("blob_url", blob_url, "opening")
        sandbox.check_scratch_apart(self._overlaps, blob_url, "opening")
        self.where = str(self.location)
        #: In a test run (a process of it, its token inherited): the key of the mark every
        #: object this store writes carries (`written_here`); ``None`` outside any run.
        self._run_key = _run_key() if run is not None else None
        self._static = access_key_id is not None
        from botocore.exceptions import (
            BotoCoreError,
            CredentialRetrievalError,
            NoCredentialsError,
            PartialCredentialsError,
            ProfileNotFound,
        )

        _credential_process_seconds[0] = credential_process_seconds
        try:
            self._client = _new_client(
                service_name="s3",
                endpoint_url=endpoint_url or None,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                region_name=region,
                config=Config(
                    # Path-style: S3-compatible servers rarely have wildcard DNS for buckets.
                    s3={"addressing_style": "path" if endpoint_url else "auto"},
                    # total_: botocore's "max_attempts" counts the retries alone, one more
                    # attempt than s3_max_attempts says (red team 51).
                    retries={"mode": "standard", "total_max_attempts": max_attempts},
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                ),
            )
        except (
            CredentialRetrievalError,
            NoCredentialsError,
            PartialCredentialsError,
            ProfileNotFound,
        ) as error:
            if self._static:
                raise S3ClientSettingsError(self.where, _one_line(error).rstrip(".")) from error
            # Neither key set, the client loads the chain's credentials as it is made: a
            # failing `credential_process` (or an AWS_PROFILE no file has) was a traceback,
            # exit 1, from every command (red team 45).
            raise ObjectStoreUnavailableError(
                self.where,
                "the S3 client could not be made: it could not load credentials",
                credentials=_CHAIN.format(f"it could not load them: {_one_line(error)}"),
            ) from error
        except BotoCoreError as error:
            # An AWS_* variable or the AWS config file giving the client a value it refuses
            # (AWS_REQUEST_CHECKSUM_CALCULATION=bogus): a traceback too, keys set or not.
            raise S3ClientSettingsError(self.where, _one_line(error).rstrip(".")) from error
        if not endpoint_url:
            # "" too, which the client takes as none (red team 62 on regress).
            _not_sent_elsewhere(self._client, self.where)
        self.read_timeout = read_timeout
        # The database this process opened the prefix for (its id and instance), once
        # `open` checked the stamp names it: what `handed_away` compares with.
        self._owner: tuple[str, str | None, int | None] | None = None
        self._opened_for: tuple[str, str] = ("", "")  # the profile, and its confirmation
        #: Whether :meth:`handed_away` last found the stamp gone.
        self.stamp_gone = False
        #: An object this store is known to hold (one the database named at the open, or the
        #: first this process wrote): whether a store without its stamp lost its data.
        self._sample: str | None = None
        self._timeouts = (
            f"{read_timeout:g} s to read (s3_read_timeout_seconds) and {connect_timeout:g} s "
            f"to connect (s3_connect_timeout_seconds), {max_attempts} attempt(s) "
            "(s3_max_attempts)"
        )
        self._attempts = max_attempts
        self._part_bytes = part_bytes
        self._max_parts = max_parts
        self._transfers: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"ObjectStore({self.where})"

    def _fail(self, error: Exception, name: str | None = None) -> Exception:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            ReadTimeoutError,
        )

        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            if name is not None and code in _MISSING:
                return ObjectMissingError(f"{self.where}/{name}")
            skewed = self._clock_skew(error)
            if skewed is not None:
                return skewed
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            # Any other refusal is the store's answer to this process, named, not a bare 500:
            # a 5xx left after the client's retries (InternalError, SlowDown, a server still
            # starting), the credentials or the bucket gone (403, NoSuchBucket), and a 4xx
            # of its own (AWS's 403 InvalidObjectState for an archived object, a 409, a 412;
            # red team 38: only some codes were named, the others passed through).
            # A 5xx is the store failing, not the settings: they reached it (red team 51);
            # but a 501 is a request it does not implement, which no retry changes.
            failing = status >= 500 and status != 501
            remedy = _SERVER_ERROR.format(attempts=self._attempts) if failing else ""
            if code in _BODY_CHECKS:
                remedy = _BODY_CHANGED
            if code == "InvalidPart":
                remedy = _PART_LOST
            if code == "NoSuchUpload":
                remedy = _UPLOAD_ABORTED.format(bucket=shell_word(self.location.bucket))
            return self._unavailable(f"{code} (HTTP {status}): {error}", remedy)
        if isinstance(error, (ConnectTimeoutError, ReadTimeoutError)) or _timed_out(error):
            # A store that is stopped (SIGSTOP, a hung disk) or overloaded, not misconfigured.
            return self._unavailable(
                f"{error}: it did not answer within {self._timeouts}, so it may be stopped or "
                "overloaded (if it is only slow, raise those settings)",
                NO_ANSWER,
            )
        if isinstance(error, BotoCoreError):
            return self._client_refused(error) or self._unavailable(str(error))
        return error

    def _client_refused(self, error: Exception) -> S3ClientSettingsError | None:
        """A request the S3 client would not make for a setting it read itself that AWS's
        endpoints alone take, beside s3_endpoint_url (``s3 = use_accelerate_endpoint = true``
        in the AWS config file): every request was "unavailable" (69, retry later), told to
        check the endpoint, the prefix and the credentials (red team 62)."""
        from botocore.exceptions import EndpointResolutionError

        if not isinstance(error, EndpointResolutionError):
            return None
        reason = f"{_one_line(error).rstrip('.')}, so it sends no request to s3_endpoint_url"
        return S3ClientSettingsError(self.where, reason)

    @property
    def credentials(self) -> str:
        """Where this store's credentials come from, for a refusal to name: the profile's
        settings, or (neither key set) the S3 client's own chain, which renews credentials
        that expire (a role's, a `credential_process`'s, SSO's) as it goes."""
        if self._static:
            return STATIC_CREDENTIALS
        try:
            found = _session().get_credentials()
        except Exception as error:  # botocore's chain: a broken file, a failing process
            return _CHAIN.format(f"it could not load them: {_one_line(error)}")
        if found is None:
            return _CHAIN.format("it found none")
        return _CHAIN.format(f"its {found.method!r} provider found them")

    def _unavailable(self, reason: str, remedy: str = "") -> ObjectStoreUnavailableError:
        return ObjectStoreUnavailableError(
            self.where, reason, credentials=self.credentials, remedy=remedy
        )

    def _clock_skew(self, error: Any) -> StoreClockSkewError | None:
        """A refusal for a clock too far from the store's (red team 42: `RequestTimeTooSkewed`
        was told to check the endpoint and the credentials, and doctor's bare 403 of a HEAD,
        which has no code, that the credentials may not use the bucket)."""
        from email.utils import parsedate_to_datetime

        answer = error.response
        code = str(answer.get("Error", {}).get("Code", ""))
        status = int(answer.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if code != "RequestTimeTooSkewed" and status != 403:
            return None
        now = datetime.now(UTC)
        try:
            there = parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError):
            there = None
        if there is None or there.tzinfo is None:
            if code != "RequestTimeTooSkewed":
                return None
            shown = "(it sent no time)"
        else:
            if code != "RequestTimeTooSkewed" and abs(now - there) < _SKEW_ALLOWED:
                return None  # a 403 for another reason: the clocks agree
            shown = there.isoformat(timespec="seconds")
        reason = f"{code or status}, a difference of {_difference(now, there)}"
        return StoreClockSkewError(
            self.where, reason, here=now.isoformat(timespec="seconds"), there=shown
        )

    @staticmethod
    def is_blob_name(name: str) -> bool:
        """Whether ``name`` is one that :meth:`new_blob_name` makes."""
        return _BLOB_NAME.fullmatch(name) is not None

    def new_blob_name(self) -> str:
        """A fresh, never reused name for an upload's object (``blobs/<hex>``). In a test
        run, its last 16 hex digits are a MAC of the first 16 under the run's token: the
        proof that the run wrote it, read off the listing's names at the run's end, no
        request more (`written_here`)."""
        if self._run_key is None:
            return BLOBS + secrets.token_hex(16)
        drawn = secrets.token_hex(8)
        return BLOBS + drawn + _mac(self._run_key, drawn)[:16]

    def _mark(self, name: str) -> dict[str, str]:
        """The user metadata of object `name` as this store writes it: a test run's mark."""
        if self._run_key is None:
            return {}
        return {RUN_METADATA: _mac(self._run_key, name)}

    def written_here(self, name: str, metadata: dict[str, str] | None = None) -> bool:
        """Whether this process's test run wrote object `name`, as its blob name (no
        request) or, given, its `metadata` says (`_mark`); never outside a run.

        A run's end deleted every object in its scratch prefix: another program's written
        there while the run went on, and, on a store that ignores ``If-None-Match``, another
        run's of the same suffix (attacks/layer-3-sandbox.md; branch guard67). A mark is a MAC of
        the name under the run's token, not a bare token: a name another run's store wrote
        carries another run's."""
        if self._run_key is None:
            return False
        if metadata is None:
            expected = _mac(self._run_key, name[len(BLOBS) : len(BLOBS) + 16])[:16]
            return self.is_blob_name(name) and hmac.compare_digest(name[-16:], expected)
        # A header's name in any case: botocore keeps the case the store sent it in, and
        # MinIO sends Go's canonical one (`App-Run`); the run's end took every object its
        # run wrote there for another program's (red team 67 on regress, rt-regress67a).
        mark = next((v for k, v in metadata.items() if k.lower() == RUN_METADATA), "")
        return hmac.compare_digest(mark, _mac(self._run_key, name))

    def mark_of(self, name: str, version_id: str | None = None) -> dict[str, str] | None:
        """Object `name`'s user metadata (one HEAD), or that of its version `version_id`;
        ``None`` where it is not there, ``{}`` where the answer names another version.

        A store that ignores ``versionId`` (or a proxy that drops it) answers with the
        current version's: a run's end took another program's earlier version of a name for
        the run's wherever the current one was the run's, and deleted it for good (red team
        67 on regress, rt-regress67c)."""
        from botocore.exceptions import BotoCoreError, ClientError

        version = {} if version_id is None else {"VersionId": version_id}
        try:
            answer = self._client.head_object(
                Bucket=self.location.bucket, Key=self.location.key(name), **version
            )
        except (BotoCoreError, ClientError) as error:
            failed = self._fail(error, name)
            if isinstance(failed, ObjectMissingError):
                return None
            raise failed from error
        if version_id is not None and answer.get("VersionId") != version_id:
            return {}
        return dict(answer.get("Metadata") or {})

    def _transfer(self, length: int | None) -> Any:
        # Parts large enough for `length` in S3's 10,000 (red team 42: 8 MiB parts alone
        # refused a file past about 78 GiB at its 10,001st part, s3transfer knowing no length
        # of a stream); one TransferConfig per part size, kept.
        from boto3.s3.transfer import TransferConfig

        size = part_size(length, self._part_bytes, self._max_parts)
        if size not in self._transfers:
            transfer = TransferConfig(multipart_threshold=size, multipart_chunksize=size)
            transfer.max_in_memory_upload_chunks = max(2, _IN_MEMORY_BYTES // size)
            self._transfers[size] = transfer
        return self._transfers[size]

    def put(
        self,
        name: str,
        data: bytes | IO[bytes] | Iterable[bytes],
        *,
        max_bytes: int | None = None,
        length: int | None = None,
    ) -> PutResult:
        """Write an object, streamed (in parts past ``part_bytes``), hashing on the way.

        Args:
            name: the object's name under the prefix.
            data: its bytes, a file, or chunks.
            max_bytes: refuse more than this many bytes.
            length: the most bytes it may have (the upload's limit), from which the part
                size is chosen (:func:`part_size`); by default ``max_bytes``.

        Raises:
            UploadTooLargeError: more than ``max_bytes`` arrived; nothing was kept.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(data, bytes):
            chunks: Iterable[bytes] = (data,)
        elif hasattr(data, "read"):
            chunks = _file_chunks(data)  # type: ignore[arg-type]
        else:
            chunks = data
        reader = _CountingReader(chunks, max_bytes)
        try:
            self._client.upload_fileobj(
                io.BufferedReader(reader, _CHUNK),
                self.location.bucket,
                self.location.key(name),
                Config=self._transfer(max_bytes if length is None else length),
                # Asked for by name, so that the client sends it whatever its settings say:
                # AWS_REQUEST_CHECKSUM_CALCULATION=when_required (or the AWS config file's
                # request_checksum_calculation, a common setting for stores other than AWS)
                # sent no checksum at all, and SeaweedFS kept a body changed on the way (one
                # byte, its length kept), which the HEAD below cannot tell (red team 65). The
                # store checks each request's (each part's) CRC32 against what it received.
                ExtraArgs={"ChecksumAlgorithm": "CRC32", "Metadata": self._mark(name)},
            )
        except (BotoCoreError, ClientError) as error:
            raise self._fail(error) from error
        self._check_kept(name, reader.size)
        if self._sample is None and self.is_blob_name(name):
            self._sample = name
        return PutResult(name, reader.size, reader.sha256.hexdigest())

    def _check_kept(self, name: str, size: int) -> None:
        """Refuse a write the store acknowledged and does not hold as sent: one HEAD.

        A store (or a gateway, a cache, a proxy in front of it) that answered 200 to a write
        it did not keep, or kept cut short, had the app commit the row of a file that was
        never there: the upload was answered 201 and its bytes were lost, found only by the
        next download or `app data check` (red team 52). S3 reads its own writes at once,
        so a HEAD that misses the object or gives another size is the store's failure, said
        before anything names the object.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client.head_object(
                Bucket=self.location.bucket, Key=self.location.key(name)
            )
        except (BotoCoreError, ClientError) as error:
            failed = self._fail(error, name)
            if not isinstance(failed, ObjectMissingError):
                raise failed from error
            kept = "does not have it"
        else:
            found = int(answer.get("ContentLength", -1))
            if found == size:
                return
            kept = f"holds it with {found} bytes"
        raise self._unavailable(
            f"it acknowledged the write of object {name} ({size} bytes), then {kept} (a HEAD "
            "right after the write)",
            _WRITE_LOST,
        )

    def get(self, name: str, start: int | None = None, end: int | None = None) -> ObjectStream:
        """Open an object for streaming; ``start``/``end`` (inclusive) ask for a range.

        Raises:
            ObjectMissingError: no such object.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {}
        if start is not None or end is not None:
            extra["Range"] = f"bytes={start or 0}-{'' if end is None else end}"
        try:
            answer = self._client.get_object(
                Bucket=self.location.bucket, Key=self.location.key(name), **extra
            )
        except (BotoCoreError, ClientError) as error:
            raise self._fail(error, name) from error
        length = int(answer["ContentLength"])
        total = answer.get("ContentRange", "").rpartition("/")[2]

        def refusal(said: str) -> AppError:
            return self._unavailable(
                f"the bytes it served of object {self.location.key(name)} do not match its "
                f"own checksum of that object ({said}): they were damaged on the store's "
                "disks, or changed on the way (a proxy, a cache, a gateway)",
                "`app data check` lists the files whose bytes are not those acknowledged; "
                "bring a damaged object back from the bucket's versioning or a backup, and "
                "check the store's health and what stands between it and the app",
            )

        size = int(total) if total.isdigit() else length
        return ObjectStream(answer["Body"], size, length, refusal, answer.get("Metadata"))

    def exists(self, name: str) -> bool:
        """Whether the object is there (a HEAD: no byte of it read)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_object(Bucket=self.location.bucket, Key=self.location.key(name))
        except (BotoCoreError, ClientError) as error:
            failed = self._fail(error, name)
            if isinstance(failed, ObjectMissingError):
                return False
            raise failed from error
        return True

    def delete(
        self, *names: str, versions: Iterable[tuple[str, str]] = (), quiet: bool = True
    ) -> list[tuple[str, str]]:
        """Delete objects (a missing one is no error: deletes are retried after crashes).

        `versions`: (name, version id) pairs, each version (or delete marker) deleted for
        good, what :meth:`every_version` lists. Returns, not `quiet`, the (name, version id)
        of each delete marker the deletes of `names` made (in a bucket that keeps versions;
        ``[]`` where `quiet`): a run's end tells its own from another program's by them."""
        from botocore.exceptions import BotoCoreError, ClientError

        base = self.location.key("")
        batches = [{"Key": self.location.key(name)} for name in names]
        batches += [{"Key": self.location.key(n), "VersionId": v} for n, v in versions]
        made: list[tuple[str, str]] = []
        for start in range(0, len(batches), 1000):  # DeleteObjects takes at most 1000 keys
            batch = batches[start : start + 1000]
            try:
                answer = self._client.delete_objects(
                    Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": quiet}
                )
            except (BotoCoreError, ClientError) as error:
                raise self._fail(error) from error
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise self._unavailable(
                    f"could not delete {first.get('Key')}: {first.get('Message')}"
                )
            made += [
                (done["Key"][len(base) :], done["DeleteMarkerVersionId"])
                for done in answer.get("Deleted", ())
                if "VersionId" not in done and done.get("DeleteMarkerVersionId")
            ]
        return made

    def objects(self, under: str = "") -> Iterator[ObjectInfo]:
        """Every object whose name starts with ``under``, in key order."""
        from botocore.exceptions import BotoCoreError, ClientError

        base = self.location.key("")
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(
                Bucket=self.location.bucket, Prefix=self.location.key(under)
            ):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        item["Key"][len(base) :], int(item["Size"]), item["LastModified"]
                    )
        except (BotoCoreError, ClientError) as error:
            raise self._fail(error) from error

    def every_version(self) -> list[ObjectVersion]:
        """Every version and delete marker under the prefix, where the
        bucket keeps versions (``[]`` where it never did): what deleting an object in a
        versioned bucket leaves, shown by no listing of objects (red team 56). For a test
        run's own scratch prefix alone: a profile's versions are its backups."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.location.bucket
        try:
            if not self._client.get_bucket_versioning(Bucket=bucket).get("Status"):
                return []
        except (BotoCoreError, ClientError) as error:
            if _not_implemented(error):
                return []
            raise self._fail(error) from error
        try:  # Object Lock: its retention, not the app, says when a version may go.
            lock = self._client.get_object_lock_configuration(Bucket=bucket)
        except ClientError:
            lock = {}  # no configuration (each server names that its own way)
        except BotoCoreError as error:
            raise self._fail(error) from error
        if lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled":
            return []
        base = self.location.key("")
        found: list[ObjectVersion] = []
        paginator = self._client.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=base):
                for kind, deleted in (("Versions", False), ("DeleteMarkers", True)):
                    found += [
                        ObjectVersion(
                            item["Key"][len(base) :],
                            item["VersionId"],
                            deleted,
                            bool(item.get("IsLatest")),
                        )
                        for item in page.get(kind, ())
                    ]
        except (BotoCoreError, ClientError) as error:
            raise self._fail(error) from error
        return found

    def orphans(self, referenced: set[str]) -> list[ObjectInfo]:
        """Blobs that no row names, of any age: a young one may belong to an upload whose
        transaction has not committed yet, which the caller judges (`app.remote.check`)."""
        return [
            info
            for info in self.objects(BLOBS)
            if info.name not in referenced and self.is_blob_name(info.name)
        ]

    def unfinished_uploads(self, *, every_name: bool = False) -> list[UnfinishedUpload]:
        """Multipart uploads under ``blobs/``, of any age, never completed nor aborted: what a
        process killed mid-upload (or whose abort failed) leaves, or one still going (the
        caller judges by age). No listing of objects shows them, and the object store keeps
        their parts until they are aborted. ``[]`` where the server does not list them.

        `every_name`: every one under the whole prefix, whatever its key (a test run's own
        scratch prefix, emptied at the run's end: red team 56), not only the app's names
        under ``blobs/``, which alone a profile's prefix may call its own."""
        from botocore.exceptions import BotoCoreError, ClientError

        base = self.location.key("")
        found = []
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(
                Bucket=self.location.bucket, Prefix=self.location.key("" if every_name else BLOBS)
            ):
                for item in page.get("Uploads", ()):
                    if every_name or self.is_blob_name(item["Key"][len(base) :]):
                        found.append(
                            UnfinishedUpload(
                                item["Key"][len(base) :], item["UploadId"], item["Initiated"]
                            )
                        )
        except (BotoCoreError, ClientError) as error:
            if _not_implemented(error):
                return []
            raise self._fail(error) from error
        return found

    def abort_uploads(self, *uploads: UnfinishedUpload) -> None:
        """Abort unfinished multipart uploads (their parts go; one already gone is no error)."""
        from botocore.exceptions import BotoCoreError, ClientError

        for upload in uploads:
            try:
                self._client.abort_multipart_upload(
                    Bucket=self.location.bucket,
                    Key=self.location.key(upload.name),
                    UploadId=upload.upload_id,
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") not in {"NoSuchUpload", "404"}:
                    raise self._fail(error) from error
            except BotoCoreError as error:
                raise self._fail(error) from error

    def keeps_versions(self) -> str | None:
        """The bucket's versioning state where it keeps what a delete removes
        (``"Enabled"``, or ``"Suspended"``, which keeps the versions made before), ``None``
        where it never did or does not say: one request, never refused (what says that the
        bytes an ``empty-trash`` deleted are still in the bucket, red team 64)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            status = self._client.get_bucket_versioning(Bucket=self.location.bucket).get("Status")
        except (BotoCoreError, ClientError):
            return None
        return str(status) if status in {"Enabled", "Suspended"} else None

    def expiring_rules(self) -> list[str] | None:
        """The bucket's enabled lifecycle rules that expire current objects (an
        ``Expiration`` by ``Days`` or ``Date``) under this prefix, each said in a few words
        (its id, its prefix, when it expires them); ``[]`` where none does, ``None`` where
        the store does not say (no permission, not implemented). Reads only (``app doctor``).

        Such a rule deletes every file of the prefix once old enough, each acknowledged
        upload and the stamp object with them, which no lock of the app's stops, and nothing
        said so before it did (red team 71 on the remote backend). A rule that needs a tag
        matches none of the app's objects, which carry none; one that expires only
        noncurrent versions or delete markers leaves every file as it is."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client.get_bucket_lifecycle_configuration(Bucket=self.location.bucket)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            return [] if code == "NoSuchLifecycleConfiguration" else None
        except BotoCoreError:
            return None
        ours = self.location.key("")
        found = []
        for rule in answer.get("Rules", []):
            expiration = rule.get("Expiration") or {}
            when = (
                f"after {expiration['Days']} day{'' if expiration['Days'] == 1 else 's'}"
                if "Days" in expiration
                else f"from {expiration['Date']}"
                if "Date" in expiration
                else None
            )
            if rule.get("Status") != "Enabled" or when is None:
                continue
            given = rule.get("Filter", {})
            given = given.get("And", given)
            if "Tag" in given or given.get("Tags"):
                continue
            prefix = str(given.get("Prefix", rule.get("Prefix", "")))
            if ours.startswith(prefix) or prefix.startswith(ours):
                named = f"{rule['ID']!r}" if rule.get("ID") else "without an ID"
                found.append(f"rule {named} (prefix {prefix!r}) expires objects {when}")
        return found

    def bucket_versioning(self) -> str | None:
        """Check that the bucket exists and these credentials may use it; return its
        versioning state: ``"Enabled"``, ``"Suspended"``, ``None`` if never enabled (or the
        server does not say). Reads only (``app doctor``).

        Raises:
            ObjectStoreUnavailableError: the endpoint does not answer, the bucket does not
                exist, or the credentials are refused; the reason says which.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.location.bucket
        try:
            self._client.head_bucket(Bucket=bucket)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise self._unavailable(
                    f"bucket {bucket!r} does not exist on this endpoint"
                ) from None
            skewed = self._clock_skew(error)
            if skewed is not None:
                raise skewed from None
            if code in {"403", "AccessDenied", "Forbidden"}:
                raise self._unavailable(
                    f"the credentials may not use bucket {bucket!r} ({code})"
                ) from None
            raise self._fail(error) from None
        except BotoCoreError as error:
            raise self._fail(error) from None
        try:
            answer = self._client.get_bucket_versioning(Bucket=bucket)
        except (BotoCoreError, ClientError):
            return None  # some S3-compatible servers do not implement it
        status = answer.get("Status")
        return str(status) if status else None

    def reachable(self) -> None:
        """Ask the bucket's head, the cheapest request that needs the store and the
        credentials (readiness).

        Raises:
            ObjectStoreUnavailableError: it did not answer in time, or refused.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.location.bucket)
        except (BotoCoreError, ClientError) as error:
            raise self._fail(error) from None

    def first_names(self, count: int) -> list[str]:
        """Up to ``count`` names under the prefix, in key order (one listing request)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client.list_objects_v2(
                Bucket=self.location.bucket, Prefix=self.location.key(""), MaxKeys=count
            )
        except (BotoCoreError, ClientError) as error:
            raise self._fail(error) from None
        base = len(self.location.key(""))
        return [item["Key"][base:] for item in answer.get("Contents", ())]

    # --- the stamp ---------------------------------------------------------------------

    def stamp_rewritten(self) -> datetime | None:
        """When the prefix's stamp was last written, by the store's clock (its
        ``LastModified``, whole seconds on most stores), where that write was one of a
        database that may have lost commits (`REWRITTEN`: the first open on a new
        timeline, after a failover or a point-in-time recovery; an adoption of a copy by
        ``app data restamp``); otherwise ``None``. What `app data check` keeps the objects
        no row names from before (red team 70 on regress, the remote backend). Its other
        writes of a marked stamp (a re-stamp to another profile, a claim by a stamp of an
        older release, a first record of a timeline) keep the mark and pin its time
        (``rewritten_at``, read from the store before the write: `_pinned`): they dropped
        the mark, or moved its time to theirs, before, and ``--repair`` deleted the object
        of a commit a failover lost once ``app data restamp`` had run (red team 70 on
        regress, branch rt-regress70i). A stamp written anew (the first, a restore after
        a stamp lost) has none."""
        stamp = self.read_stamp() or {}
        if stamp.get("rewritten") not in REWRITTEN:
            return None
        if (pinned := _rewritten_at(stamp)) is not None:
            return pinned
        return self._stamp_written()

    def _stamp_written(self) -> datetime | None:
        """The stamp object's ``LastModified`` (the store's clock), or ``None``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client.head_object(
                Bucket=self.location.bucket, Key=self.location.key(STAMP_NAME)
            )
        except (BotoCoreError, ClientError) as error:
            failed = self._fail(error, STAMP_NAME)
            if isinstance(failed, ObjectMissingError):
                return None
            raise failed from error
        written = answer.get("LastModified")
        return written.astimezone(UTC) if isinstance(written, datetime) else None

    def _pinned(self, stamp: dict[str, Any]) -> dict[str, Any]:
        """`stamp`, about to be written again by a write that is no new mark of its own,
        with its mark's time pinned (``rewritten_at``: the store's date of the marked
        write, which this write is about to move): see `stamp_rewritten`."""
        if stamp.get("rewritten") not in REWRITTEN or _rewritten_at(stamp) is not None:
            return stamp
        written = self._stamp_written()
        return stamp if written is None else {**stamp, "rewritten_at": written.isoformat()}

    def read_stamp(self) -> dict[str, Any] | None:
        """The stamp object's content, or ``None`` where there is none."""
        try:
            with self.get(STAMP_NAME) as stream:
                raw = stream.read()
        except ObjectMissingError:
            return None
        # Written by hand or cut short: a bare JSONDecodeError or AttributeError before,
        # a traceback from every command (red team 37; the data root's stamp, red team 36).
        try:
            stamp = json_loads(raw)
        except ValueError as error:
            raise PrefixStampDamagedError(self.where, f"is not JSON ({error})") from None
        if not (isinstance(stamp, dict) and isinstance(stamp.get("profile"), str)):
            raise PrefixStampDamagedError(self.where, "names no profile")
        return stamp

    def open(
        self,
        profile: str,
        *,
        protected: Protection = False,
        database: tuple[str, str, str | None, int | None] | None = None,
        named: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Check (or, on an empty prefix, write) the stamp for ``profile``.

        ``database`` (its id, its address as messages show it, and :func:`app.remote.pg.
        instance`): the database whose rows name this prefix's objects. The stamp records
        the first; another is refused, since its rows name none of the objects here and its
        repair would delete them all; so is a copy of it (the same id in another database).
        ``named``: a few objects its rows name; an empty prefix is then not stamped anew.

        Raises:
            RemoteStampMismatchError: the prefix belongs to another profile.
            UnstampedNotEmptyError: it holds objects and no stamp.
            ObjectStoreUnavailableError: the bucket or the credentials cannot be used.
        """
        self.refuse_inside_a_run(profile)
        stamp = self.read_stamp()
        if stamp is None:
            # The stamp itself may appear between the read above and this listing (another
            # process stamping the empty prefix): it is the app's, and the create below
            # then loses the race and reads the winner's.
            # A run's marker is testing's alone to pass over: the scratch prefix it marks is
            # that run's, whose end empties it. Another profile's open took a prefix holding
            # it alone as empty, stamped it, and the run's end then deleted that profile's
            # stamp and uploads (red team 66 on regress, rt-regress66c).
            ours = (STAMP_NAME, RUN_MARKER) if profile == RUN_PROFILE else (STAMP_NAME,)
            names = (info.name for info in self.objects() if info.name not in ours)
            foreign = [name for _, name in zip(range(6), names, strict=False)]
            if foreign and all(self.is_blob_name(name) for name in foreign):
                # The app's own names: a stamp lost, not another application's prefix
                # (red team 37: "not the app's ... point blob_url at a new one", and no
                # command brought the prefix back).
                raise PrefixStampMissingError(
                    profile, self.where, foreign, protected=needs_confirmation(protected, profile)
                )
            if foreign:
                marked = (
                    f", a test run's scratch prefix (its marker {RUN_MARKER} is there, and that "
                    "run's end empties it),"
                    if RUN_MARKER in foreign
                    else ""
                )
                raise UnstampedNotEmptyError(
                    profile, "blob_url", f"object prefix {self.where}{marked}", foreign
                )
            if named:
                # The store lost the objects the database's rows name, or is another one
                # (a volume not mounted, a new bucket): stamped anew, it was served, and
                # what was uploaded into it lost once the right store was back (red team 41).
                raise PrefixEmptiedError(
                    profile, self.where, "?" if database is None else database[1], named,
                    protected=needs_confirmation(protected, profile),
                )  # fmt: skip
            stamp = {"profile": profile, "created": datetime.now(UTC).isoformat()}
            if database is not None:
                stamp["database"] = database[0]
                if database[2] is not None:
                    stamp["instance"] = database[2]
                if database[3] is not None:
                    stamp["timeline"] = database[3]
            if not self._create_stamp(stamp):
                stamp = self.read_stamp() or {}  # another process stamped it first: that one
        if stamp.get("profile") != profile:
            refused = another_database(profile, stamp, self.where, database)
            if refused is not None:
                raise refused
            raise RemoteStampMismatchError(
                f"object prefix {self.where}", f"its object {STAMP_NAME}",
                str(stamp.get("profile")), profile,
                protected=needs_confirmation(protected, str(stamp.get("profile"))),
            )  # fmt: skip
        self._sample = next(iter(named), None)
        if database is None:
            return stamp
        return self._bind(profile, stamp, database, protected)

    def refuse_inside_a_run(self, profile: str) -> None:
        """Refuse `profile`'s open of a prefix at or below a test run's scratch prefix: one
        whose marker (`RUN_MARKER`) is there, at a segment of the prefix named as a run's
        (`_RUN_SEGMENT`; one request each, none for a prefix that has none, as every
        profile's own has). Testing's is never refused here (a run's own processes open
        its scratch prefix); ``app doctor`` asks it too, as the open would.

        A process of another profile, outside the run, whose blob_url named a prefix inside
        the run's (set where no settings file shows it to the run) listed that prefix alone,
        where the marker one level up is not, found it empty and stamped it: it wrote
        among the run's tests, and the run's end failed, naming it (rt-regress66d's *not
        stopped*; branch guard67)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if profile == RUN_PROFILE:
            return
        segments = self.location.prefix.split("/") if self.location.prefix else []
        for depth, segment in enumerate(segments, 1):
            if not _RUN_SEGMENT.fullmatch(segment):
                continue
            scratch = "/".join(segments[:depth])
            try:
                answer = self._client.get_object(
                    Bucket=self.location.bucket, Key=f"{scratch}/{RUN_MARKER}"
                )
                raw = answer["Body"].read()
            except (BotoCoreError, ClientError) as error:
                failed = self._fail(error, RUN_MARKER)
                if isinstance(failed, ObjectMissingError):
                    continue
                raise failed from error
            try:
                mark = json_loads(raw)
            except ValueError:
                mark = {}
            raise InsideTestRunError(
                profile,
                self.where,
                str(dataclasses.replace(self.location, prefix=scratch)),
                run_named(mark if isinstance(mark, dict) else {}),
            )

    def _bind(
        self,
        profile: str,
        stamp: dict[str, Any],
        database: tuple[str, str, str | None, int | None],
        protected: Protection,
    ) -> dict[str, Any]:
        database_id, _, instance, timeline = database
        refusal = binding_refusal(profile, stamp, database, self.where, protected)
        if refusal is not None:
            raise refusal
        if stamp.get("database") is None:
            # Stamped before stamps named their database: this one, the first to open it
            # since, claims it (a plain PUT; two databases claiming one prefix in the same
            # instant is the race of two first stamps, see remote.md).
            stamp = {**self._pinned(stamp), "database": database_id, "instance": instance}
            self.put(STAMP_NAME, json.dumps(stamp).encode())
        elif "instance" not in stamp and instance is not None:
            # Stamped before stamps named the database itself: claimed as above.
            stamp = {**self._pinned(stamp), "instance": instance}
            self.put(STAMP_NAME, json.dumps(stamp).encode())
        recorded = _timeline(stamp)
        if timeline is not None and (recorded is None or timeline > recorded):
            # A failover (or a point-in-time recovery) began a new timeline: from now on,
            # the old one's primary is refused, and its replicas stop at their next check.
            if recorded is not None:
                # Not the first record of one (a stamp of before stamps kept it, or just
                # made): commits the old timeline acknowledged may be lost (`REWRITTEN`),
                # this write the mark's time.
                stamp = {k: v for k, v in stamp.items() if k != "rewritten_at"}
                stamp["rewritten"] = "timeline"
            else:
                stamp = self._pinned(stamp)
            stamp = {**stamp, "timeline": timeline}
            self.put(STAMP_NAME, json.dumps(stamp).encode())
        self._owner = (database_id, instance, timeline)
        self._opened_for = (
            profile,
            " --yes-i-mean-it" if needs_confirmation(protected, profile) else "",
        )
        return stamp

    def handed_away(self) -> tuple[str, str | None, str] | None:
        """Why the prefix no longer belongs to the database it was opened for, what lets
        a replica restart if not another ``database_url``, and what happened without the
        store's or the database's address (the HTTP answer); or ``None``.

        Its stamp names another database, or a copy of this one that ``app data restamp``
        adopted: what a replica writes from then on only its own database names, and the
        other's ``check --repair`` deletes it (red team 39). Or its stamp is gone
        (:attr:`stamp_gone` is then set), which the app never does: the store lost its data
        or is another store than the one opened (a volume not mounted, a new bucket), and
        what a replica uploads from then on is lost once the right one is back (red team
        41); every open is refused then. A stamp that cannot be read now is ``None``:
        readiness reports the store, and the next open the stamp.
        """
        self.stamp_gone = False
        if self._owner is None:
            return None
        database, instance, timeline = self._owner
        try:
            stamp = self.read_stamp()
        except (ObjectStoreUnavailableError, PrefixStampDamagedError):
            return None
        if stamp is None:
            lost = self._store_lost()
            self.stamp_gone = lost is not None
            return lost
        bound, now, recorded = stamp.get("database"), stamp.get("instance"), _timeline(stamp)
        ours = bound in (None, database) and (
            now is None or instance is None or same_instance(str(now), instance)
        )
        if ours and (timeline is None or recorded is None or recorded <= timeline):
            return None
        if ours:
            return (
                (
                    f"object prefix {self.where}'s stamp now records timeline {recorded} of "
                    f"this database, and this server's database is on timeline {timeline}: a "
                    "standby of it was promoted (a failover) while this primary still runs, "
                    "and a replica opened the new one (a split brain). What this server "
                    "wrote from now on only the old primary would name, and the new one's "
                    "`app data check --repair` would delete it"
                ),
                None,
                (
                    "this server's object prefix was opened by a promoted standby of its "
                    "database (a failover) and is now that one's"
                ),
            )
        return (
            (
                f"object prefix {self.where} was handed to another database: its stamp object now "
                f"names database {bound} ({now}), and this server's is {database} ({instance}), "
                "as `app data restamp` run on a copy of this database leaves it. What this server "
                "wrote from now on only its own database would name, and the other's `app data "
                "check --repair` would delete it"
            ),
            None,
            (
                "this server's object prefix was handed to another database (as `app data "
                "restamp` run on a copy of its database leaves it)"
            ),
        )

    def _store_lost(self) -> tuple[str, str, str] | None:
        """With the stamp gone: why the store lost its data too, and what resolves it, or
        ``None`` if an object it held is still there (or it cannot be asked now)."""
        # The stamp alone deleted (by hand, a lifecycle rule) is the open's to refuse; a
        # store that lost the objects too, or is another, is where uploads are lost.
        try:
            if self._sample is not None and self.exists(self._sample):
                return None
        except ObjectStoreUnavailableError:
            return None
        profile, confirm = self._opened_for
        return (
            (
                f"object prefix {self.where}'s stamp object {STAMP_NAME}, there when this "
                "server opened it, is gone"
                + (f", and so is {self._sample}" if self._sample else "")
                + ": the object store lost its data "
                "or is not the store this server opened (a volume not mounted, a new or "
                "emptied bucket, s3_endpoint_url's host now naming another store). What "
                "this server uploaded from now on could be lost once the right store is "
                "back"
            ),
            (
                "Its restart is refused until the prefix is stamped again: bring the "
                "store's data back (check s3_endpoint_url and blob_url, `app config`), "
                "or, if the objects are lost for good, stop every replica and run `app "
                "data restamp --profile "
                f"{profile} --from {profile}{confirm}` (`app doctor` on this server says "
                "which)"
            ),
            (
                "this server's object prefix lost its stamp, and the object store its data (or "
                "it is not the store this server opened)"
            ),
        )

    def _create_stamp(self, stamp: dict[str, Any]) -> bool:
        # If-None-Match: of two processes stamping an empty prefix at once, one wins and the
        # other reads the winner's stamp, rather than both believing they own it.
        return self.create_once(STAMP_NAME, json.dumps(stamp).encode())

    def create_once(self, name: str, body: bytes) -> bool:
        """Write object ``name`` where it is not there (``If-None-Match: *``), and say
        whether this call made it: of two processes, one wins."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(
                Bucket=self.location.bucket,
                Key=self.location.key(name),
                Body=body,
                IfNoneMatch="*",
                Metadata=self._mark(name),
                # As every upload's (`put`): asked for by name, the client sends it whatever
                # AWS_REQUEST_CHECKSUM_CALCULATION says, and the store refuses a stamp changed
                # on the way, which it kept under when_required (rt-regress66b).
                ChecksumAlgorithm="CRC32",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
                return False
            raise self._fail(error) from error
        except BotoCoreError as error:
            raise self._fail(error) from error
        return True

    def restore_stamp(self, profile: str, database: str, instance: str) -> dict[str, Any]:
        """Write back the lost stamp of a prefix whose objects ``database`` (its id, and
        :func:`app.remote.pg.instance`) names (under maintenance: the caller has checked
        that its rows name objects here)."""
        stamp = {
            "profile": profile,
            "created": datetime.now(UTC).isoformat(),
            "database": database,
            "instance": instance,
            "restored": True,
        }
        if not self._create_stamp(stamp):
            stamp = self.read_stamp() or {}
        return stamp

    def restamp(self, from_profile: str, profile: str) -> dict[str, Any]:
        """Hand the prefix stamped ``from_profile`` to ``profile`` (under maintenance)."""
        stamp = self.read_stamp()
        if stamp is not None and stamp.get("profile") == profile:
            return stamp
        if stamp is None or stamp.get("profile") != from_profile:
            raise RemoteStampMismatchError(
                f"object prefix {self.where}", f"its object {STAMP_NAME}",
                str((stamp or {}).get("profile")), profile,
            )  # fmt: skip
        new = {
            "profile": profile,
            "created": datetime.now(UTC).isoformat(),
            "restamped_from": from_profile,
        }
        # The same database: a mark (`stamp_rewritten`) still says which objects no row
        # names may be of commits it lost.
        stamp = self._pinned(stamp)
        for kept in ("database", "instance", "timeline", "rewritten", "rewritten_at"):
            if kept in stamp:
                new[kept] = stamp[kept]
        self.put(STAMP_NAME, json.dumps(new).encode())
        return new

    def adopt(
        self, profile: str, database: str, instance: str, timeline: int | None
    ) -> dict[str, Any] | None:
        """Hand the prefix to ``instance``, a copy of the database it belongs to
        (``database``, the id both carry), under maintenance; the old stamp, or ``None``
        when it named ``instance`` already."""
        stamp = self.read_stamp()
        if (
            stamp is None
            or stamp.get("profile") != profile
            or stamp.get("database") != database
            or stamp.get("instance") is None
            or same_instance(str(stamp["instance"]), instance)
        ):
            return None
        # The copy's timeline is its own server's: the original's means nothing to it.
        new = {k: v for k, v in stamp.items() if k not in {"timeline", "rewritten_at"}}
        new["instance"] = instance
        new["rewritten"] = "adopt-copy"
        if timeline is not None:
            new["timeline"] = timeline
        self.put(STAMP_NAME, json.dumps(new).encode())
        return stamp
