"""The plugin's fixtures. Their names carry the ``app_`` prefix so that they do not collide
with pytest-django's and pytest-flask's ``client`` and ``live_server`` in a shared environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from app import config as appconfig
from app import sandbox as sandboxing
from app.errors import AppError, printable
from app.sandbox import scratch_blob_url, scratch_prefix_refusal
from app.testing.guard import (
    INACTIVE,
    STATE,
    RemoteTesting,
    local_address,
    port_served,
    scratch_names,
)

if TYPE_CHECKING:
    from app.storage import Storage
    from app.testing.live_server import LiveServer


@pytest.fixture(scope="session", autouse=True)
def _app_remote_scratch(request: pytest.FixtureRequest) -> Iterator[None]:
    """With a remote testing profile: create this process's scratch database (and use a
    fresh prefix) before its first test, drop both after its last (``--app-keep-remote``
    keeps them). Session-scoped in every process that runs tests: each xdist worker has
    its own; a controller that only distributes creates nothing."""
    state = request.config.stash.get(STATE, None)
    if state is None or state.remote is None or state.run is None:
        yield
        return
    suffix = state.run.scratch
    database, prefix = scratch_names(state.remote, suffix)
    # Before anything is made: a prefix the run's suffix took past S3's limits refused every
    # test with a traceback, and the run's end said it left objects there (red team 57).
    problem = scratch_prefix_refusal(state.remote.blob_url, prefix)
    refused = (
        f"app: testing's blob_url cannot be used by a test run: {problem}. Nothing was created"
        if problem
        else _claim_prefix(prefix, suffix, database)
        or _create_scratch(state.remote.database_url, suffix, database, prefix)
    )
    if refused:  # not in an except block: pytest would print the exception handled too
        pytest.fail(refused, pytrace=False)
    try:
        yield
    finally:
        if not request.config.getoption("app_keep_remote"):
            left = _remove_scratch(state.remote, suffix)
            if left:  # not in an except block: pytest would print each exception handled
                pytest.fail(
                    "app: the run's tests are done, but it could not remove "
                    + "; nor ".join(left)
                    + ". They are left on testing's server, as a killed run leaves them; "
                    "nothing else was changed. Clear them by hand once the server answers "
                    "(docs/explanation/remote.md, what a killed run leaves), or keep them on "
                    "purpose with --app-keep-remote",
                    pytrace=False,
                )


#: The run's own token, which its marker in each of its scratch prefixes carries
#: (`_claim_prefix`): drawn by the run's first process, inherited by its xdist workers, so
#: that a controller knows a crashed worker's prefix for its run's.
RUN_MARK_ENV = sandboxing.RUN_MARK_ENV


def run_token(worker: bool) -> str:
    """The run's token (`RUN_MARK_ENV`): a worker's is its controller's, where it has one."""
    inherited = os.environ.get(RUN_MARK_ENV, "")
    if worker and len(inherited) == 32 and all(c in "0123456789abcdef" for c in inherited):
        return inherited
    # secrets.token_hex(16) is os.urandom(16)'s hex: not `secrets`, whose import (with hmac,
    # base64 and random's) cost 1.25 M instructions of every run's start (bench/README.md,
    # "Session 69"); the sandbox draws its names the same way.
    return os.urandom(16).hex()


def _scratch_store(prefix: str) -> Any:
    """An object store on the run's scratch prefix, with testing's settings."""
    from app.remote.objects import ObjectStore

    config = appconfig.load("testing", serving=False)
    return ObjectStore(
        prefix, config.s3_endpoint_url, config.s3_access_key_id, config.s3_secret_access_key
    )


def _claim_prefix(prefix: str, suffix: str, database: str, store: Any = None) -> str:
    """Write the run's marker in its scratch prefix before anything else is made there, by
    a create the store refuses where the marker is there already; what refuses the run
    (``""``: nothing).

    Two runs whose testing profiles name two databases (two servers, or two names) and one
    bucket and prefix, whose suffixes (a pid and 16 random bits) came out the same (two CI
    containers whose pytest is pid 1 draw once in 65,536), had one scratch prefix: the
    second's opens were refused, and its end emptied the prefix under the first run's tests
    (rt-remote65's *not stopped*; session 66). The second is now refused before its first
    test, naming the first, and a run's end empties only a prefix whose marker is its own
    (`_empty_scratch_prefix`).

    The claim is read, not taken from the store's answer: a store that takes
    ``If-None-Match: *`` without honouring it (an S3 imitation older than conditional
    writes) let the second run's marker replace the first's, and the second's end emptied
    the first's prefix under its tests (rows66's *not stopped*; branch guard67). The marker
    is read before it is written (one there is another run's), and read back after (one
    that another run's write replaced meanwhile is that run's); two writes that straddle
    both reads are left to the end, which deletes only what its own run wrote
    (`_empty_scratch_prefix`)."""
    from app.remote.objects import RUN_MARKER

    try:
        store = _scratch_store(prefix) if store is None else store
        other = _marker(store)
        if other is None and store.create_once(RUN_MARKER, _own_mark(suffix, database)):
            other = _marker(store)
            if _is_own(other):
                return _found_there(store, prefix)
        other = _marker(store) if other is None else other
    except Exception as error:  # the app's refusals, and the S3 client's
        return (
            f"app: cannot write the run's marker {RUN_MARKER} in its scratch prefix {prefix}: "
            f"{_reason(error)}. Nothing was created. Check blob_url and the S3 settings of "
            "[testing] (`app doctor`)"
        )
    return (
        f"app: the run's scratch prefix {prefix} is another test run's: its marker "
        f"{RUN_MARKER} names {_named(other)}. The two runs drew the same scratch suffix "
        f"({suffix}: a pid and 16 random bits, which two CI containers whose pytest is pid 1 "
        "draw alike once in 65,536) with one bucket and prefix in their testing profiles, "
        "and this run's end would have emptied that run's prefix under its tests. Nothing "
        "was created; run again (a new suffix is drawn)"
    )


def _found_there(store: Any, prefix: str) -> str:
    """What refuses a run whose scratch prefix, just marked as its own, held objects already
    (``""``: none); its marker is removed then, and the objects are left as they are.

    A new suffix's prefix is empty: one that is not is another's, whose end will not empty
    it (a process of another profile whose blob_url names it, set where no settings file
    shows it to the run; a run killed before runs marked their prefixes), and this run's end
    deleted every object there, another profile's stamp and uploads with them (red team 66
    on regress, rt-regress66c)."""
    from app.remote.objects import RUN_MARKER, STAMP_NAME

    found = [info.name for _, info in zip(range(6), store.objects(), strict=False)]
    found = [name for name in found if name != RUN_MARKER]
    if not found:
        return ""
    with contextlib.suppress(Exception):  # the refusal being made says what matters
        store.delete(RUN_MARKER)
    stamp: dict[str, Any] | None = None
    with contextlib.suppress(AppError):  # a stamp that is no JSON names no profile
        stamp = store.read_stamp()
    whose = (
        f"its stamp {STAMP_NAME} names profile {stamp['profile']!r}"
        if stamp is not None
        else "it has no stamp"
    )
    shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
    return (
        f"app: the run's scratch prefix {prefix} holds objects already ({shown}), and no run's "
        f"marker; {whose}. A run's scratch prefix is new, and its end empties it: this run's "
        "would have deleted them. Nothing was created, and they are left as they are; run "
        "again (a new suffix is drawn), and see whose they are before clearing them by hand"
    )


def _is_own(mark: dict[str, Any] | None) -> bool:
    """Whether `mark` (a marker as `_marker` read it) is this run's: its token."""
    token = os.environ.get(RUN_MARK_ENV)
    return mark is not None and bool(token) and mark.get("token") == token


def _own_mark(suffix: str, database: str) -> bytes:
    """This run's marker: which run, where, since when, and the run's token."""
    from datetime import UTC, datetime

    mark = {
        "run": suffix,
        "token": os.environ.get(RUN_MARK_ENV, ""),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": database,
    }
    return json.dumps(mark).encode()


def _marker(store: Any) -> dict[str, Any] | None:
    """The marker in a scratch prefix, or ``None`` where there is none; one that is no JSON
    object is read as ``{}`` (no run's)."""
    from app.remote.errors import ObjectMissingError
    from app.remote.objects import RUN_MARKER

    try:
        with store.get(RUN_MARKER) as stream:
            raw = stream.read()
    except ObjectMissingError:
        return None
    try:
        mark = json.loads(raw)
    except ValueError:
        return {}
    return mark if isinstance(mark, dict) else {}


def _named(mark: dict[str, Any] | None) -> str:
    """A run, as its marker names it."""
    from app.remote.objects import run_named

    return run_named(mark)


def _create_scratch(
    database_url: str, suffix: str, database: str, prefix: str | None = None
) -> str:
    """Create the run's scratch database and connect to it once; what refuses the run
    (``""``: nothing), its marker removed from `prefix` then. `database`: its URL as
    messages show it."""
    from app.remote.pg import connect, create_scratch_database, drop_scratch_database

    try:
        url = create_scratch_database(database_url, suffix)
    except Exception as error:  # psycopg's errors, and the app's (server unreachable)
        _unclaim(prefix)
        return (
            f"app: cannot create the run's scratch database {database} on the testing "
            f"profile's server: {_reason(error)}.{_password_hint(error, database)} Check "
            "database_url of [testing] (`app doctor`); the user needs CREATEDB"
        )
    try:
        # Once, here: not at every test's open, each refused alike.
        connect(url, purpose="app reaching its scratch database").close()
    except Exception as error:
        drop_scratch_database(database_url, suffix)
        _unclaim(prefix)
        return (
            f"app: created the run's scratch database {database} on the testing profile's "
            f"server, and cannot connect to it: {_reason(error)}."
            f"{_password_hint(error, database)} It was dropped again"
        )
    return ""


def _unclaim(prefix: str | None) -> None:
    """Remove the run's marker (just written, nothing else made there) from `prefix`."""
    from app.remote.objects import RUN_MARKER

    if prefix is None:
        return
    with contextlib.suppress(Exception):  # the refusal being made says what matters
        _scratch_store(prefix).delete(RUN_MARKER)


def _password_hint(error: BaseException, database: str) -> str:
    """What a refusal for want of a password (or of the right one) adds: the run connects
    to databases testing's ``database_url`` does not name (red team 55: a password in a
    password file for testing's database alone reached ``app doctor``, not the run)."""
    if "password" not in _reason(error).lower():
        return ""
    return (
        f" The run connects to the server's database postgres to create and drop its scratch "
        f"database, then to the scratch database itself ({database}), each a database "
        "testing's database_url does not name: a password file (PGPASSFILE, ~/.pgpass) line "
        "for testing's database alone gives libpq no password for them, while `app doctor` "
        "reaches testing's; write * as that line's database (host:port:*:user:password), or "
        "give the password in testing's database_url (libpq reads no password file that "
        "its group or others may read: chmod 600 it)."
    )


def _reason(error: BaseException) -> str:
    if isinstance(error, AppError):
        return error.message
    # psycopg's own words name the database, never the password.
    return " ".join(str(error).split()) or type(error).__name__


def clear_crashed_worker(config: pytest.Config, worker: str, exited: bool | None) -> str:
    """In an xdist controller, once worker `worker` crashed (xdist replaces it with another
    of another id): drop its scratch database and empty its prefix, which its own end never
    did (red team 56), and what to say of it. `exited`: whether its process is gone (None:
    not known); a worker still running keeps them."""
    state = config.stash.get(STATE, None)
    if state is None or state.remote is None or state.run is None or state.worker:
        return ""
    suffix = f"{state.run.scratch}_{worker}"
    database, prefix = scratch_names(state.remote, suffix)
    what = f"its scratch database {database} and prefix {prefix}"
    if config.getoption("app_keep_remote"):
        return f"app: worker {worker} crashed; {what} are kept (--app-keep-remote)"
    if not exited:
        how = "not known to have ended" if exited is None else "still running"
        return (
            f"app: worker {worker} crashed, and its process is {how}: {what} are left on "
            "testing's server, as a killed run leaves them. Clear them by "
            "hand once it has ended (docs/explanation/remote.md, what a killed run leaves)"
        )
    left = _remove_scratch(state.remote, suffix, crashed=True)
    if left:
        return (
            f"app: worker {worker} crashed, and the run could not remove "
            + "; nor ".join(left)
            + ". They are left on testing's server, as a killed run leaves them; nothing else "
            "was changed. Clear them by hand once the server answers "
            "(docs/explanation/remote.md, what a killed run leaves)"
        )
    return f"app: worker {worker} crashed; {what} are removed"


def _remove_scratch(remote: RemoteTesting, suffix: str, *, crashed: bool = False) -> list[str]:
    """Drop the scratch database and empty the prefix of `suffix` (this process's, or, in a
    controller, a `crashed` worker's); what could not be removed, and why."""
    from app.remote.pg import drop_scratch_database

    database, prefix = scratch_names(remote, suffix)
    left = []
    try:
        # Only names that end with the run's suffix: never a configured database.
        drop_scratch_database(remote.database_url, suffix)
    except Exception as error:  # the app's refusals, and psycopg's
        left.append(f"its scratch database {database} ({_reason(error)})")
    try:
        _empty_scratch_prefix(prefix, suffix, remote.blob_url if crashed else None)
    except _Left as error:
        left.append(f"{error.what} under its scratch prefix {prefix} ({error.reason})")
    except Exception as error:  # the app's refusals, and the S3 client's
        left.append(f"the objects under its scratch prefix {prefix} ({_reason(error)})")
    return left


def _empty_scratch_prefix(prefix: str, suffix: str, configured: str | None = None) -> None:
    """Delete every object the run wrote under its scratch prefix (the scratch one alone:
    its last segment is the run's suffix, checked again here; in a controller, a crashed
    worker's: `configured`), every earlier version of them where the bucket keeps versions,
    and abort every multipart upload of a name it made left unfinished there (a replica a
    test killed mid-upload): no listing of objects shows either, the store keeps them, and
    nothing else ever looks under a run's prefix for them (red team 56). What the run did
    not write is left, and named (`_not_written`; branch guard67)."""
    from app.remote.objects import ObjectStore

    if prefix.rstrip("/").rpartition("/")[2] != suffix.lstrip("_"):
        raise ValueError(f"refusing to empty {prefix}: not a scratch prefix of {suffix!r}")
    config = appconfig.load("testing", serving=False)
    # A crashed worker's (`configured`: testing's configured prefix), in its controller.
    expected = config.blob_url if configured is None else scratch_blob_url(configured, suffix)
    if expected != prefix:
        raise ValueError(f"refusing to empty {prefix}: the run's testing profile uses another")
    store = ObjectStore(
        prefix, config.s3_endpoint_url, config.s3_access_key_id, config.s3_secret_access_key
    )
    _empty_owned(store, suffix)


def _empty_owned(store: Any, suffix: str) -> None:
    """`_empty_scratch_prefix` once its prefix is checked: `store` on it."""
    from app.remote.objects import RUN_MARKER, STAMP_NAME

    # Only a prefix whose marker is this run's (`_claim_prefix`): another run that drew the
    # same suffix has its tests there (session 66).
    mark = _marker(store)
    if mark is None and store.create_once(RUN_MARKER, _own_mark(suffix, "")):
        # Removed by a test (one that empties the prefix): no other run took the prefix
        # since (its marker would be there), and none can now: it is this run's again,
        # once read back (a store that ignores If-None-Match took another's meanwhile too).
        mark = _marker(store)
    mark = _marker(store) if mark is None else mark
    if not _is_own(mark):
        raise _Left(
            "the objects",
            f"nothing deleted: its marker {RUN_MARKER} names another run, {_named(mark)}, "
            "which drew the same suffix: they are that run's, whose end empties them",
        )
    # Nor a prefix another profile took as its own: its stamp names that profile, whose
    # objects these are (its blob_url, set where no settings file shows it to the run, names
    # the run's scratch prefix). Its replica's open took the prefix holding the run's marker
    # alone as empty, and the run's end deleted its stamp and uploads (red team 66 on
    # regress, rt-regress66c). A stamp that is no JSON (a test's) names no profile.
    stamp_mark: dict[str, str] | None = None
    with contextlib.suppress(AppError):
        stamp, stamp_mark = _stamp_and_mark(store)
        if stamp is not None and stamp["profile"] != appconfig.RUN_PROFILE:
            raise _Left(
                "the objects",
                f"nothing deleted: its stamp {STAMP_NAME} names profile {stamp['profile']!r}, "
                f"not {appconfig.RUN_PROFILE!r}: a process of that profile took the prefix "
                "as its own (its blob_url names it), and they are that profile's. Leave them; "
                f"point that profile's blob_url, or {appconfig.RUN_PROFILE}'s, where the other's "
                "prefix is not",
            )
    names = [info.name for info in store.objects() if info.name != RUN_MARKER]
    # Nor one another profile stamped below it: a prefix inside the run's is a prefix of its
    # own to that profile's open, which lists it alone (the run's marker, one level up, is
    # not in it), found empty and stamped; the run's end, whose listing is every key under
    # the scratch prefix, deleted that profile's stamp and uploads (red team 66 on regress,
    # rt-regress66d). A look only where a stamp is below: none in a run of the app's
    # fixtures, which use the scratch prefix itself.
    nested = _stamped_below(store, names)
    if nested is not None:
        raise _Left(
            "the objects",
            f"nothing deleted: {nested[0]}, inside it, names profile {nested[1]!r}, not "
            f"{appconfig.RUN_PROFILE!r}: a process of that profile took the prefix "
            f"{nested[0].rpartition('/')[0]}/ below the run's as its own (its blob_url names "
            "it), and the objects there are that profile's. Leave them; point that profile's "
            "blob_url where no test run's scratch prefix is",
        )
    # Only what the run wrote: every object the app writes in a run's scratch prefix
    # carries the run's mark (`ObjectStore.written_here`: its blob name, read off the
    # listing, or its metadata, read with the stamp or by one HEAD for another name).
    # Another program's objects written there while the run went on were deleted as the
    # run's (attacks/layer-3-sandbox.md; branch guard67); a run of the same suffix, on a store
    # that ignores If-None-Match, has its own mark.
    own = {name for name in names if _written(store, name, stamp_mark)}
    foreign = [name for name in names if name not in own]
    # The delete markers it makes, known by the store's answer: its own alone, of those
    # over a name another program wrote too (`_versions_written`).
    made = store.delete(*sorted(own), quiet=False) if own else []
    # In a versioned bucket (as docs/how-to/run-on-postgresql.md sets one up) a delete
    # only hides an object behind a marker: every version the run wrote stayed, shown by no
    # listing of objects (red team 56). Object Lock's retention is left to decide.
    what = "the earlier versions of the objects"
    try:
        listed = store.every_version()
        versions = [v for v in listed if v.name != RUN_MARKER]
        # A store that names no marker in its answer: the current one of each name the
        # end deleted, as listed right after, is the end's own.
        named = {name for name, _ in made}
        made += [
            (v.name, v.version_id)
            for v in versions
            if v.deleted and v.latest and v.name in own and v.name not in named
        ]
        mine, theirs = _versions_written(store, versions, {*made})
        foreign += sorted({v.name for v in theirs} - {*foreign})
        if mine:
            store.delete(versions=[(v.name, v.version_id) for v in mine])
        what = "the unfinished multipart uploads"
        uploads = store.unfinished_uploads(every_name=True)
        store.abort_uploads(*(u for u in uploads if store.written_here(u.name)))
        foreign += [u.name for u in uploads if not store.written_here(u.name)]
        if foreign:
            raise _Left("the objects it did not write", _not_written(foreign))
        # The marker last: until the prefix is empty, it still says whose it is.
        what = f"the run's marker {RUN_MARKER}"
        marker = [(v.name, v.version_id) for v in listed if v.name == RUN_MARKER]
        store.delete(*([] if marker else [RUN_MARKER]), versions=marker)
    except _Left:
        raise
    except Exception as error:  # the app's refusals, and the S3 client's
        raise _Left(what, _reason(error)) from error


def _versions_written(
    store: Any, versions: list[Any], made: set[tuple[str, str]]
) -> tuple[list[Any], list[Any]]:
    """`versions` (`ObjectVersion`, the run's marker's aside) split into those the run
    wrote and those it did not: a version by its own metadata (one HEAD each, in a bucket
    that keeps versions alone; none for the one version of a name the run made, an
    upload's, which nothing wrote over), a delete marker by its name's versions (the run's
    where no other program wrote one of them: a marker holds no byte), or, over a name
    another program wrote too, where the run's end made it (`made`, (name, version id) as
    `ObjectStore.delete` answers): one that hid another program's version written over the
    run's after the run's end read it.

    Before red team 67 on regress's third round (rt-regress67c), a marker was the run's
    wherever the run wrote one version of its name: another program that wrote over the
    run's object and deleted its own had it back after the run's end, its marker deleted
    for good.

    A version was the run's where its name was (listed, or a blob's name the run made):
    the run's end took the versions of an object the run wrote and then deleted, under a
    name of its own, for another program's, failed naming it, and left them for ever; and
    deleted for good another program's version of a name the run wrote, one written over
    the run's (red team 67 on regress, rt-regress67a)."""
    real = [v for v in versions if not v.deleted]
    counts = Counter(v.name for v in real)
    mine = [
        v
        for v in real
        if (counts[v.name] == 1 and store.written_here(v.name))
        or store.written_here(v.name, store.mark_of(v.name, v.version_id) or {})
    ]
    theirs = [v for v in real if v not in mine]
    held = {v.name for v in theirs}
    markers = [v for v in versions if v.deleted]
    ours = [v for v in markers if v.name not in held or (v.name, v.version_id) in made]
    return [*mine, *ours], [*theirs, *(v for v in markers if v not in ours)]


def _stamp_and_mark(store: Any) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """The stamp of `store`'s prefix and its metadata (one GET, as `ObjectStore.read_stamp`
    reads it); a stamp that is no JSON, or names no profile (a test's), is ``None``."""
    from app.remote.errors import ObjectMissingError
    from app.remote.objects import STAMP_NAME

    try:
        with store.get(STAMP_NAME) as stream:
            raw, metadata = stream.read(), stream.metadata
    except ObjectMissingError:
        return None, None
    try:
        stamp = json.loads(raw)
    except ValueError:
        return None, metadata
    named = isinstance(stamp, dict) and isinstance(stamp.get("profile"), str)
    return (stamp if named else None), metadata


def _written(store: Any, name: str, stamp_mark: dict[str, str] | None) -> bool:
    """Whether the run wrote object `name` (`ObjectStore.written_here`): its blob name says
    so, or its metadata does (the stamp's, read with it; another's, one HEAD: a name the
    app's `new_blob_name` did not make, `put` by a test)."""
    from app.remote.objects import STAMP_NAME

    if store.written_here(name):
        return True
    metadata = stamp_mark if name == STAMP_NAME and stamp_mark is not None else None
    if metadata is None:
        metadata = store.mark_of(name)
    return metadata is not None and bool(store.written_here(name, metadata))


def _not_written(names: list[str]) -> str:
    """Why a run's end leaves `names` in its scratch prefix, and what to do."""
    from app.remote.objects import RUN_MARKER

    # A child given an environment of its own writes through the app with no mark: what
    # gives it its run's token was named nowhere (red team 67 on regress, rt-regress67a).
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return (
        f"left as they are: {shown} carry no mark of this run, which every object the "
        "app writes in a run's scratch prefix carries (in its blob name or its metadata): a "
        "program other than the app (a test's own S3 client among them), a child of this run "
        f"given an environment without {RUN_MARK_ENV}, or a process of another run wrote them "
        "there while the run went on. The run's own objects are deleted; its marker "
        f"{RUN_MARKER} is left with them. See whose they are before clearing them by hand; a "
        "test that writes there itself deletes what it wrote before it ends, or writes it "
        "through the app's ObjectStore, which marks it; a child given an environment of its "
        f"own is given {RUN_MARK_ENV} in it, and what it writes through the app is marked; "
        "point any other program's bucket and prefix away from testing's blob_url, under "
        "which each test run draws its scratch prefix"
    )


def _stamped_below(store: Any, names: list[str]) -> tuple[str, str] | None:
    """The first stamp below the top of `store`'s prefix among `names` (its objects) that
    names a profile other than the run's, as (its name, that profile); None where none does.
    A stamp that is no JSON names no profile, as the prefix's own (`_empty_scratch_prefix`)."""
    from app.remote.objects import STAMP_NAME

    for name in names:
        if not name.endswith(f"/{STAMP_NAME}"):
            continue
        with contextlib.suppress(AppError, ValueError):
            with store.get(name) as stream:
                stamp = json.loads(stream.read())
            profile = stamp.get("profile") if isinstance(stamp, dict) else None
            if isinstance(profile, str) and profile != appconfig.RUN_PROFILE:
                return name, profile
    return None


class _Left(Exception):
    """The objects of a scratch prefix are deleted, and `what` else was there is not."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(what, reason)
        self.what, self.reason = what, reason


def _refuse_tmp_path_outside(request: pytest.FixtureRequest, tmp_path: Path, fixture: str) -> None:
    """Fail the test if the ``tmp_path`` it gets lies outside the run's sandbox.

    A conftest (or a plugin) may define a ``tmp_path`` fixture of its own, to keep a suite's
    scratch files in one place; pytest lets the closer one win. The app's fixtures make the
    test's data root and a live server's log under it: a ``tmp_path`` in a data root's
    ``sessions/`` had ``app_config`` fail with a traceback through the app's frames that told
    the test to use ``app_config`` (it did), and ``app_live_server`` on a remote testing
    profile wrote its log there (red team 54).
    """
    state = request.config.stash.get(STATE, None)
    if state is None:
        return
    resolved = tmp_path.resolve()
    if sandboxing.inside(resolved, state.sandbox.resolve()):
        return
    info = getattr(request.node, "_fixtureinfo", None)  # private: see pyproject.toml
    defs = info.name2fixturedefs.get("tmp_path") if info is not None else None
    code = getattr(defs[-1].func, "__code__", None) if defs else None
    where = (
        f" (its fixture is defined in {code.co_filename}, line {code.co_firstlineno}, which "
        "overrides pytest's)"
        if code is not None and "_pytest" not in Path(code.co_filename).parts
        else ""
    )
    pytest.fail(
        printable(
            f"app: refusing this test: the tmp_path it gets, {tmp_path}, lies outside the run's "
            f"sandbox ({state.sandbox}){where}. The {fixture} fixture makes the test's data "
            "root and files under tmp_path, and a test run writes nowhere else. Remove that "
            "tmp_path fixture, or have it return a directory the run makes "
            "(`tmp_path_factory.mktemp(...)`)"
        ),
        pytrace=False,
    )


@pytest.fixture
def app_config(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> appconfig.Config:
    """The testing configuration with a fresh data root of its own under ``tmp_path``.

    The root is published as ``APP_DATA_ROOT`` for the test's duration, so subprocesses the
    test starts use it too. With a remote testing profile it is the run's scratch database
    and prefix instead (shared by the tests of one process), published as
    ``APP_DATABASE_URL`` and ``APP_BLOB_URL``.
    """
    inactive = request.config.stash.get(INACTIVE, None)
    if inactive is not None:
        pytest.fail(
            f"app: the app_config fixture needs the app's pytest plugin, which is inactive in "
            f"this run: {inactive}",
            pytrace=False,
        )
    state = request.config.stash.get(STATE, None)
    if state is not None and state.remote is not None:
        config = appconfig.load("testing")
        assert config.database_url is not None and config.blob_url is not None
        monkeypatch.setenv("APP_DATABASE_URL", config.database_url)
        monkeypatch.setenv("APP_BLOB_URL", config.blob_url)
    else:
        _refuse_tmp_path_outside(request, tmp_path, "app_config")
        monkeypatch.setenv("APP_DATA_ROOT", str(tmp_path / "app-data"))
        config = appconfig.load("testing")
    if state is not None:
        # The run looked as it started; a server outside it may have started since (a
        # developer's `app serve` on the testing port, red team 52): this test gets the
        # port and the token that reach it.
        refusal = port_served(
            "testing",
            state.live,
            runs=state.own_runs,
            address=local_address(config.host, config.port, config.sources.get("port", "")),
            # The token this test gets, which a conftest may have set (red team 53).
            token=config.api_token,
        )
        if refusal is not None:
            pytest.fail(printable(refusal), pytrace=False)
    return config


@pytest.fixture
def app_store(app_config: appconfig.Config) -> Iterator[Storage]:
    """An open, writable store on the test's own storage: a data root of its own, held for
    the test; or, with a remote testing profile, the run's scratch database and prefix, held
    like a replica for the test."""
    from app.storage import open_storage

    with open_storage(app_config, writer=True, kind="tests", wanted="run a test on it") as store:
        yield store


@pytest.fixture
def app_client(app_store: Storage, app_config: appconfig.Config) -> Iterator[Any]:
    """An httpx client (Starlette's TestClient) on the in-process app, token included."""
    from starlette.testclient import TestClient

    from app.server import create_app

    headers = {"Authorization": f"Bearer {app_config.api_token}"} if app_config.api_token else {}
    with TestClient(create_app(app_store, app_config), headers=headers) as test_client:
        yield test_client


@pytest.fixture
def app_live_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """A real ``app serve`` on 127.0.0.1, on a port it binds itself; stopped after the test.

    With a local testing profile it serves a data root of its own (``tmp_path /
    "live-data"``). With a remote one it is a replica on the run's scratch database and
    prefix (those of ``app_config`` and ``app_store``: shared by the tests of one process,
    so sessions earlier tests created are there too), found by the row it publishes in the
    database; after the test it is stopped and its row is gone.
    """
    from app.testing.live_server import LiveServer, start_replica, start_server, stop_server

    _refuse_tmp_path_outside(request, tmp_path, "app_live_server")
    state = request.config.stash.get(STATE, None)
    log = tmp_path / "live-server.log"
    # The testing profile, whatever the test's environment selects: its configuration
    # (below) is testing's. A test that had removed ENV_FOR_DYNACONF (as a test of the
    # default profile does) got a server of development, refused, whose refusal told it to
    # opt into development; opted in, its server ran on development's profile and token
    # while `config` and `headers` named testing's (red team 53).
    # A copy that a variable removed meanwhile by another of the test's threads leaves
    # whole (`environment_now`), not a KeyError.
    env = {**appconfig.environment_now(), "APP_HOST": "127.0.0.1", appconfig.PROFILE_ENV: "testing"}
    if state is not None and state.remote is not None:
        # Every process of the run maps testing's database and prefix to the run's scratch
        # ones; exporting them says so to the server explicitly, as app_config does.
        config = appconfig.load("testing", environ=env)
        assert config.database_url is not None and config.blob_url is not None
        env |= {"APP_DATABASE_URL": config.database_url, "APP_BLOB_URL": config.blob_url}
        forked = live_server_start(request.config) == FORKED
        warm = request.config if forked else None
        process, url = start_replica(env, config.database_url, log, warm=warm)
        try:
            config = _served_at(config, url)
            yield LiveServer(url, None, process.pid, config.api_token, log, config)
        finally:
            stop_server(process, config.database_url)
        return

    root = tmp_path / "live-data"
    env["APP_DATA_ROOT"] = str(root)
    config = appconfig.load("testing", environ=env)
    forked = live_server_start(request.config) == FORKED
    process, url = start_server(env, root, log, warm=request.config if forked else None)
    try:
        config = _served_at(config, url)
        yield LiveServer(url, root, process.pid, config.api_token, log, config)
    finally:
        stop_server(process)


#: The ways `app_live_server` starts its server (``--app-live-server``, ini
#: ``app_live_server``): forked from the run's warm interpreter where the test's environment
#: allows it (`app.testing.zygote`), or a plain ``python -m app serve`` process.
FORKED, SUBPROCESS = "forked", "subprocess"
LIVE_SERVER_STARTS = (FORKED, SUBPROCESS)


def live_server_start(config: pytest.Config) -> str:
    """How this run's `app_live_server` starts its server: the option, else the ini value."""
    chosen = config.getoption("app_live_server", None) or config.getini("app_live_server")
    start = str(chosen or FORKED).strip().lower()
    if start not in LIVE_SERVER_STARTS:
        # The plugin refuses such an ini value before the run (a usage error); a run that
        # registered the fixture without the plugin's checks fails the test instead.
        pytest.fail(unknown_start(config, chosen), pytrace=False)
    return start


def unknown_start(config: pytest.Config, value: object) -> str:
    """The refusal of an ini ``app_live_server`` value that is no way to start a server."""
    return (
        f"app: {config.inipath} sets app_live_server = {value!r}, which is not a way the "
        f"app_live_server fixture starts its server: write one of "
        f"{', '.join(LIVE_SERVER_STARTS)} (forked, the default: from the run's warm "
        "interpreter; subprocess: a plain python -m app serve)"
    )


def _served_at(config: appconfig.Config, url: str) -> appconfig.Config:
    """`config` with the host and port of the server the fixture started (at `url`).

    The settings' port is the testing profile's, where a server outside the run may listen
    (a developer's own ``app serve``, started after the run's look as it began): a test that
    built its URL from the configuration the fixture hands it, as it would from
    ``app_config``'s, reached that server with the testing token and cleaned its sessions
    (red team 53). The configuration now names the fixture's own server alone.
    """
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"app_live_server: no host and port in the server's URL {url!r}")
    said = "app_live_server (the address its own server listens on)"
    sources = {**config.sources, "host": said, "port": said}
    return dataclasses.replace(config, host=parts.hostname, port=parts.port, sources=sources)
