"""The consistency check of :class:`app.remote.store.RemoteStore`: rows against objects.

Rows are the truth: an object is reachable only through a row that names it. An upload that
never commits leaves an object no row names; bytes lost outside the app leave a row naming
nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from app.errors import AppError, AppText
from app.remote import pg
from app.remote.db import Database, utc
from app.remote.errors import ObjectMissingError
from app.remote.objects import BLOBS, ObjectInfo, ObjectStore, UnfinishedUpload
from app.remote.rows import (
    CONTENT_CHANGED,
    CONTENT_FINDING,
    CONTENT_MISSING,
    FINDING,
    SESSION_ROW,
    UPDATED_CHANGED,
    UPDATED_KEY,
    content_fault,
    row_fault,
    session_fault,
    updated_fault,
    updated_sha256,
)
from app.storage import CheckReport, Finding
from app.store.records import CONTENT_KEY, content_sha256_or_none, record_sha256

__all__ = ["check"]

log = logging.getLogger("app.remote.store")


def check(
    db: Database,
    objects: ObjectStore,
    *,
    orphan_grace: timedelta,
    repair: bool,
    thorough: bool,
    hash_bytes: bool = True,
) -> CheckReport:
    """Reconcile rows and objects.

    Finds objects that no row names (an upload whose transaction never committed: nobody
    ever saw them, so ``repair`` deletes them) and multipart uploads never finished
    (``repair`` aborts them), while a replica is live only those older than ``orphan_grace``
    (`_unnamed`); and, with ``thorough``, rows whose object is missing (bytes lost outside
    the app: reported, never repaired, since only a backup has them) or of another size,
    or, with ``hash_bytes`` (not `app data check --quick`), of another SHA-256.
    """
    if repair:
        db.ensure_held()
    # Only a maintenance command holds the database exclusively. Under a replica's shared
    # hold, an object without a row may be another replica's upload still streaming (for
    # longer than orphan_grace, on a slow link): deleting it would lose that upload. Row
    # and object switch atomically, so a replica's start-up has nothing to finish; it
    # skips the scan, which lists every object.
    exclusive = db.kind == "maintenance"
    if not thorough and not exclusive:
        return CheckReport([], repair)
    hashed = db.hashed
    with db.conn("the check's read of every file's row and of the live sessions' count") as conn:
        rows = conn.execute(
            "SELECT blob, session_id, name, size, sha256, deleted_at IS NOT NULL AS trashed,"  # noqa: S608
            f" {utc('uploaded_at')} AS uploaded_at, content_sha256 FROM app_files"
        ).fetchall()
        # One statement, one snapshot: the count is kept by trigger in the same transactions
        # as the rows, so the two agree under live replicas too, unless no trigger fired.
        counted = conn.execute(
            "SELECT (SELECT coalesce(sum(live), 0) FROM app_session_counts) AS kept,"
            " (SELECT count(*) FROM app_sessions WHERE deleted_at IS NULL) AS live"
        ).fetchone()
        # Of the server that gave the rows: behind a URL that reaches several servers, the
        # next connection may be another's (red team 59).
        known_to = _rows_known_to(conn)
        # A database made before the index of trashed rows by name (red team 70 on regress),
        # or one whose index of that name is no use (red team 70 on the remote backend).
        index_problem = pg.trashed_index_problem(conn)
        # A session's row a tool wrote (red team 60): its metadata not an object.
        sessions = conn.execute(
            "SELECT id, metadata, deleted_at IS NOT NULL AS trashed FROM app_sessions"
            " WHERE json_typeof(metadata) <> 'object'"
        ).fetchall()
        # A session's row whose title, metadata, id or creation time are no longer those
        # its content_sha256 was written with (session 66), live or in the trash: every
        # row that keeps one is read, as `app data check` reads every session.json.
        changed = (
            [
                row
                for row in conn.execute(
                    f"SELECT id, title, metadata, {utc('created_at')} AS created_at,"  # noqa: S608
                    f" {utc('updated_at')} AS updated_at, updated_sha256,"
                    " content_sha256, deleted_at IS NOT NULL AS trashed FROM app_sessions"
                    " WHERE (content_sha256 IS NOT NULL OR %s)"
                    " AND json_typeof(metadata) = 'object' ORDER BY id",
                    (hashed,),
                )
                if content_fault(row, hashed=hashed) or updated_fault(row, hashed=hashed)
            ]
            if thorough
            else []
        )
    referenced = {row["blob"] for row in rows}
    findings: list[Finding] = []
    orphans, unfinished = _unnamed(db, objects, referenced, orphan_grace, known_to=known_to)
    # Written before this database was adopted as a copy of the prefix's (red team 70 on the
    # remote backend), or before the prefix's stamp was last rewritten (a failover's or a
    # point-in-time recovery's first open, red team 70 on regress, the remote backend): an
    # object of a file acknowledged in commits this database does not have.
    adopted = _adopted_at(db) if orphans else None
    stamped = objects.stamp_rewritten() if orphans else None
    original = [(i, _before(i, adopted, stamped)) for i in orphans]
    findings.extend(_of_the_original(i, objects, since) for i, since in original if since)
    orphans = [info for info, since in original if since is None]
    for info in orphans:
        findings.append(
            Finding(
                "object-without-record",
                info.name,
                f"object {info.name} ({info.size} bytes, written "
                f"{info.last_modified:%Y-%m-%d %H:%M:%S}) is named by no row: an upload "
                "whose transaction never committed",
                "delete the object (nobody could ever read it)"
                if exclusive
                else "`app data check --repair` deletes it once no replica is live "
                "(a live replica may still be uploading it)",
            )
        )
    for upload in unfinished:
        findings.append(
            Finding(
                "upload-without-object",
                upload.name,
                f"an upload into object {upload.name} (begun "
                f"{upload.initiated:%Y-%m-%d %H:%M:%S}) never finished: its process died or "
                "lost the object store mid-way; the object store keeps its parts, which no "
                "listing of objects shows",
                "abort the upload (its parts are deleted; nobody could ever read them)"
                if exclusive
                else "`app data check --repair` aborts it once no replica is live "
                "(a live replica may still be uploading it)",
            )
        )
    drift = _count_drift(counted, exclusive)
    findings.extend([] if drift is None else [drift])
    if not exclusive:
        orphans, unfinished = [], []
    if thorough:
        findings.extend(_session_finding(row) for row in sessions)
        findings.extend(_changed_finding(row) for row in changed)
        present = {info.name: info.size for info in objects.objects(BLOBS)}
        for name in sorted(n for n in present if not objects.is_blob_name(n)):
            findings.append(
                Finding(
                    "object-not-the-apps",
                    name,
                    f"object {name} lies among the uploads but is not named as the app names "
                    "them: another profile's prefix nested inside this one, or a copy made by "
                    "hand; no row names it, and the app never deletes it",
                    "nothing: move the other prefix out of this one (`app config` shows each "
                    "profile's blob_url), or delete the object by hand if it is no one's",
                )
            )
        # Rows read before the listing: another replica's empty-trash may have removed one,
        # and its object, since. Its object was reported lost, "restore them from a backup",
        # of a delete that came first (red team 49): a row is missing its object only if it
        # is still there once the listing is done.
        gone = _removed_since(db, {row["blob"] for row in rows if row["blob"] not in present})
        for row in rows:
            if row["blob"] in gone:
                continue
            finding = _compare(
                row, present.get(row["blob"]), objects, hash_bytes=hash_bytes, hashed=hashed
            )
            if finding is not None:
                findings.append(finding)
    # The recount first: the database may refuse it ("nothing was changed"), which was said
    # after the orphans were deleted, and no row recorded their deletion (red team 51). The
    # deletions, which nothing undoes, come last, just before the row that records them.
    findings = _recount(db, findings) if repair and exclusive and drift else findings
    findings += (
        []
        if index_problem is None
        else [_trashed_index(db, index_problem, made=repair and exclusive)]
    )
    findings += _marked(db, hashed=hashed) if repair and exclusive else []
    if repair and (orphans or unfinished):
        repaired, refused = _repair_unnamed(objects, orphans, unfinished)
        findings = [
            Finding(f.problem, f.target, f.detail, f.repair, True)
            if (f.problem, f.target) in repaired
            else f
            for f in findings
        ]
        if refused is not None:
            # Some are gone already: the row records which, then the repair is refused,
            # saying what it did and what it left (red team 51: every finding was recorded
            # as not repaired, the deleted objects too, and the refusal was only the store's).
            raise _cut_short(db, objects, findings, repaired, refused)
    unaudited = _record(db, findings) if repair and findings else None
    return CheckReport(findings, repair, unaudited)


_Repaired = set[tuple[str, str]]
"""The ``(problem, target)`` of each finding a repair made good."""


def _repair_unnamed(
    objects: ObjectStore, orphans: list[ObjectInfo], unfinished: list[UnfinishedUpload]
) -> tuple[_Repaired, tuple[str, AppError] | None]:
    """Delete the orphan objects, then abort the unfinished uploads: what it repaired, and
    what the object store refused with its refusal (None if nothing).

    A refused batch of deletions may have deleted some of its objects (S3 answers for each
    key; a request cut off may have been carried out): the listing says which are gone.
    """
    repaired: _Repaired = set()
    if orphans:
        try:
            objects.delete(*(info.name for info in orphans))
        except AppError as error:
            try:
                present = {info.name for info in objects.objects(BLOBS)}
            except AppError:
                present = {info.name for info in orphans}  # not known: none counted
            gone = {("object-without-record", i.name) for i in orphans if i.name not in present}
            what = f"the deletion of {_count(len(orphans), 'orphan object')}"
            return gone, (what, error)
        repaired |= {("object-without-record", info.name) for info in orphans}
    for upload in unfinished:
        try:
            objects.abort_uploads(upload)
        except AppError as error:
            return repaired, (f"the abort of the unfinished upload into {upload.name}", error)
        repaired.add(("upload-without-object", upload.name))
    return repaired, None


def _count(number: int, what: str) -> str:
    return f"{number} {what}" + ("" if number == 1 else "s")


def _cut_short(
    db: Database,
    objects: ObjectStore,
    findings: list[Finding],
    repaired: _Repaired,
    refused: tuple[str, AppError],
) -> AppError:
    """Record what a repair cut short by the object store found and did; its refusal."""
    from app.remote.errors import ObjectStoreCutShortError

    what, error = refused
    unaudited = _record(db, findings)
    kinds = {"object-without-record": "orphan object", "upload-without-object": "unfinished upload"}
    verbs = {"object-without-record": "deleted", "upload-without-object": "aborted"}
    done = [
        f"{verbs[k]} {_count(n, kinds[k])}"
        for k in kinds
        if (n := sum(1 for problem, _ in repaired if problem == k))
    ]
    left = [
        _count(n, kinds[k])
        for k in kinds
        if (n := sum(1 for f in findings if f.problem == k and not f.repaired))
    ]
    # The recount, made before the deletions, is the one row the repair changed.
    recounted = any(f.problem == "session-count-drift" and f.repaired for f in findings)
    if recounted:
        done.insert(0, "recounted the live sessions")
    rows = "but for that count" if recounted else "as it was"
    recorded = (
        "The check-repair row of the audit log records which findings were repaired"
        if unaudited is None
        else "The audit log could not record which findings were repaired "
        f"({unaudited}): its row is in this command's log, above"
    )
    return ObjectStoreCutShortError(
        "app data check --repair",
        objects.where,
        what,
        str(getattr(error, "reason", "") or error.message),
        f"By then it had {' and '.join(done)}" if done else "It had repaired nothing yet",
        f"{' and '.join(left) or 'nothing else it found'} as found, and every row of the "
        f"database {rows}",
        recorded,
        "it finds and repairs what is left",
    )


def _record(db: Database, findings: list[Finding]) -> str | None:
    """The ``check-repair`` audit row of what the repair found and did.

    Its objects are deleted by then, which no rollback brings back: a refusal of the row (a
    lock held on ``app_audit``, the database's disk full, its connection lost) turned a
    repair that happened into "nothing was changed", exit 69, and left no record of it (red
    team 49). The row goes to the process's log instead, as a data root's line does.
    """
    details = {"findings": [f.to_dict() for f in findings]}
    try:
        db.audit_alone("check-repair", db.where, **details)
    except AppError as error:
        # Its reason alone: the refusal's "nothing was changed" is of the row, not the repair.
        reason = str(getattr(error, "reason", "") or error.message)
        sqlstate = getattr(error, "sqlstate", None)
        remedy = getattr(error, "remedy", "")
        # The remedy's `app ...` (`app doctor`) given the profile in the log line (AppText).
        why = AppText(
            reason
            + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
            + (f"; {remedy}" if remedy else "")
        )
        log.warning(
            "could not record the repair in %s's audit table (%s); the row it should hold: %s",
            db.where,
            why,
            json.dumps({"operation": "check-repair", "target": db.where, **details}),
        )
        return why
    return None


def _removed_since(db: Database, missing: set[str]) -> set[str]:
    """Of the objects ``missing`` from the listing, those whose rows are gone now too."""
    if not missing:
        return set()
    with db.conn() as conn:
        kept = conn.execute(
            "SELECT blob FROM app_files WHERE blob = ANY(%s)", (list(missing),)
        ).fetchall()
    return missing - {row["blob"] for row in kept}


def _count_drift(counted: dict[str, Any] | None, exclusive: bool) -> Finding | None:
    """The live sessions' count kept by trigger against the rows (red team 37: under
    ``session_replication_role = replica`` no trigger fired, and it drifted for good)."""
    if counted is None or counted["kept"] == counted["live"]:
        return None
    return Finding(
        "session-count-drift",
        "app_session_counts",
        f"the count of live sessions the app keeps says {counted['kept']}, and "
        f"{counted['live']} are live: changes made while its trigger did not fire "
        "(session_replication_role = replica for the database or the role, or the trigger "
        "disabled by hand); GET /sessions reports the wrong total",
        "recount it from the sessions' rows"
        if exclusive
        else "`app data check --repair` recounts it once no replica is live",
    )


def _recount(db: Database, findings: list[Finding]) -> list[Finding]:
    # Under maintenance: no replica changes sessions meanwhile.
    with db.write("the recount of live sessions") as conn:
        conn.execute(
            "UPDATE app_session_counts SET live = CASE WHEN slot = 0 THEN (SELECT"
            " count(*) FROM app_sessions WHERE deleted_at IS NULL) ELSE 0 END"
        )
    return [
        Finding(f.problem, f.target, f.detail, f.repair, True)
        if f.problem == "session-count-drift"
        else f
        for f in findings
    ]


def _compare(
    row: dict[str, Any],
    found: int | None,
    objects: ObjectStore,
    *,
    hash_bytes: bool,
    hashed: bool = False,
) -> Finding | None:
    """A row against its object's size (``found``, None if missing) and, of that size, its
    bytes' SHA-256: what the thorough check reports of it, if anything."""
    fault = row_fault(row, hashed=hashed)
    if fault is not None:
        return _misshapen(row, fault, found, objects, hash_bytes=hash_bytes)
    target = f"{row['session_id']}/{row['name']}"
    if found is None:
        state = "a trashed version of" if row["trashed"] else "the live"
        return Finding(
            "record-without-object",
            target,
            f"the row for {state} file {row['name']!r} of session "
            f"{row['session_id']} names object {row['blob']}, which is missing",
            "nothing: the bytes are gone; restore them from a backup of the "
            "object store, or delete the file",
        )
    if found != row["size"]:
        return Finding(
            "record-object-changed",
            target,
            f"file {row['name']!r} of session {row['session_id']} was saved as "
            f"{row['size']} bytes, but its object {row['blob']} is {found} bytes: "
            "it was overwritten outside the app, and downloads of it are refused",
            "nothing: bring back the object's version of "
            f"{row['size']} bytes from the bucket's versioning or a backup, or "
            "delete the file",
        )
    # Of the recorded size, other bytes: a whole download is cut before its last byte, and
    # the check, which read no object's bytes, called the bucket consistent (red team 35).
    if not hash_bytes:
        return None
    got, mismatch = _sha256(objects, row["blob"])
    if got is None or (got == row["sha256"] and mismatch is None):
        return None
    how = (
        "it was overwritten outside the app"
        if mismatch is None
        else "the store's own checksum of the object does not match the bytes it served "
        f"either ({mismatch}): they were damaged on its disks, or are changed on the way "
        "(a proxy, a cache)"
    )
    return Finding(
        "record-object-changed",
        target,
        f"file {row['name']!r} of session {row['session_id']} was saved with the SHA-256 "
        f"{row['sha256']}, but its object {row['blob']} has {got}: {how}, and downloads of "
        "it are cut before their last byte",
        "nothing: bring back the object's version with that SHA-256 from the bucket's "
        "versioning or a backup, or delete the file",
    )


def _session_finding(row: dict[str, Any]) -> Finding:
    """A session's row of another shape than the app writes (`rows.session_fault`)."""
    state = "trashed session" if row["trashed"] else "session"
    return Finding(
        FINDING,
        row["id"],
        f"the {SESSION_ROW} of {state} {row['id']} {session_fault(row['metadata'])} (a tool "
        "or an edit wrote it); it is left out of pages of sessions, and reads of it are "
        "refused (session_unreadable)",
        "nothing: left for a human (with every replica stopped, give it its metadata back "
        "from a backup, or '{}'; or delete the session, which moves it to the trash as it is)",
    )


def _adopted_at(db: Database) -> datetime | None:
    """When this database was last adopted as a copy of the one its prefix belonged to
    (``app data restamp`` of a restore: its ``adopt-copy`` row), or None."""
    with db.conn("the read of the database's adoption as a copy") as conn:
        row = conn.execute(
            "SELECT max(at) AS at FROM app_audit WHERE operation = 'adopt-copy'"
        ).fetchone()
    return None if row is None or row["at"] is None else row["at"].astimezone(UTC)


def _before(info: ObjectInfo, adopted: datetime | None, stamped: datetime | None) -> str | None:
    """What an object no row names was written before that its row may have been lost
    with, in the words of `_of_the_original`, or None (an orphan).

    ``adopted`` (the database's clock, microseconds): its newest ``adopt-copy`` row; an
    object the store dates in the same second counts as before. ``stamped`` (the store's
    clock, as the object's: `ObjectStore.stamp_rewritten`): the prefix's stamp's last write
    where it was the first open on a new timeline (a failover to a standby that had not
    received the last commits, a point-in-time recovery to an earlier moment: the same
    database, no restamp, no row of an adoption; red team 70 on regress) or an adoption
    (whose row may be missing: the audit's write failed, as `restamp` then says). Strictly
    before that second: an orphan of a crashed upload in the same second as the open is
    an orphan, as an object of a commit lost in it is too (a window of under a second)."""
    if adopted is not None and info.last_modified < adopted:
        return (
            "this database was adopted as a copy of the one the prefix belonged to (app "
            f"data restamp, {adopted:%Y-%m-%d %H:%M:%S}): it may be a file the original "
            "acknowledged after the copy was made (a dump restored), whose row went with "
            "the original"
        )
    if stamped is not None and info.last_modified < stamped:
        return (
            "the object prefix's stamp was last rewritten (the store's clock, "
            f"{stamped:%Y-%m-%d %H:%M:%S}), as the first open after a failover or a "
            "point-in-time recovery of the database (a new timeline) and an adoption of a "
            "copy rewrite it: it may be a file acknowledged in commits the database no "
            "longer has, whose row went with them"
        )
    return None


def _of_the_original(info: ObjectInfo, objects: ObjectStore, since: str) -> Finding:
    """An object no row names, written before this database was adopted as a copy of the
    prefix's (a restore of a dump), or before the prefix's stamp was last rewritten (a
    failover, a point-in-time recovery; `_before` says which): the database it was
    acknowledged in may have had its row, lost since. `app data check --repair` deleted it
    as "an upload whose transaction never committed (nobody could ever read it)": the last
    bytes of a file a client was told were saved (red team 70 on the remote backend; on
    regress, for a new timeline)."""
    url = f"s3://{objects.location.bucket}/{objects.location.key(info.name)}"
    return Finding(
        "object-of-the-original",
        info.name,
        f"object {info.name} ({info.size} bytes, written "
        f"{info.last_modified:%Y-%m-%d %H:%M:%S}) is named by no row, and was written before "
        f"{since}",
        f"nothing: the app never deletes it; its bytes are at {url}: upload them again where "
        f"they belong (`aws s3 cp {url} <file>`, then a PUT of the file to its session), or "
        f"delete it by hand once it is no one's (`aws s3 rm {url}`)",
    )


def _trashed_index(db: Database, problem: tuple[str, bool], *, made: bool) -> Finding:
    """The finding of a database whose index ``app_files_trashed`` (`pg.TRASHED_INDEX`) is
    missing (made before it) or no use (`pg.trashed_index_problem`: INVALID, another
    definition, a relation of someone's of that name), which ``made`` (a maintenance
    repair) mends where it may: it drops the index that is there and makes the app's.
    Without it, each upload of a name new to a session that held 200,000 trashed rows
    looked for the name's newest trashed row through the index of trashed rows by time
    (every session's), and took 100 to 125 ms of the database's time, under the session's
    lock (red team 70 on regress); a file's 404 and a restore sorted the session's rows.
    Built under maintenance's exclusive hold (it holds writes to app_files for the while: a
    second or two a million rows), never at a replica's open, which would hold every other
    replica's uploads."""
    detail, mendable = problem
    missing = detail.startswith("the database has no index")
    made = made and mendable
    if made:
        with db.write("the index of trashed files' rows by session and name") as conn:
            if not missing:
                conn.execute("DROP INDEX app_files_trashed")
            conn.execute(pg.TRASHED_INDEX.encode())
    consequence = (
        "an upload of a name new to a session that holds many trashed rows looks through "
        "every trashed row, and a file's 404 and a restore sort the session's, slower as the "
        "trash grows"
    )
    holds = "with every replica stopped: it holds writes to app_files while it is built"
    if detail.startswith("the index app_files_trashed is being built"):
        repair = (
            "nothing while it is built: let the build end (`SELECT pid, phase FROM "
            "pg_stat_progress_create_index` shows it; it waits for every transaction that "
            "writes app_files), then run `app data check` again"
        )
    elif not mendable:
        repair = (
            "nothing: rename or drop that app_files_trashed (not the app's, which never drops "
            "it), then run `app data check --repair` with every replica stopped to make the "
            "index"
        )
    elif missing:
        repair = f"make it (`app data check --repair`, {holds})"
    else:
        repair = f"drop it and make it again (`app data check --repair`, {holds})"
    return Finding(
        "index-missing" if missing else "index-unusable",
        "app_files_trashed",
        f"{detail}: {consequence}",
        repair,
        made,
    )


_CONTENT_COLUMNS = ("id", "title", "metadata", "created_at")  # `rows.content_sha256`'s


def _marked(db: Database, *, hashed: bool) -> list[Finding]:
    """The database marked (`_hash_unkeyed`), or, marked already, its schema raised."""
    if not hashed:
        return _hash_unkeyed(db)
    _raise_schema(db)
    return []


def _raise_schema(db: Database) -> None:
    """A marked database's schema version raised to this release's (`pg.SCHEMA_VERSION`):
    the releases between the mark (rows67) and schema 2 marked at 1, which a release from
    before the mark opens, and writes rows without keys beside the mark (red team 67 on
    regress, rt-regress67d). Under maintenance's exclusive hold, as the mark itself."""
    with db.write("the raise of a marked database's schema version") as conn:
        conn.execute(
            "UPDATE app_stamp SET schema_version = %s WHERE schema_version < %s",
            (pg.SCHEMA_VERSION, pg.SCHEMA_VERSION),
        )


def _hash_unkeyed(db: Database) -> list[Finding]:
    """In a database not marked yet (`pg.content_sha256_since`: made by an earlier build),
    give every session's row without a ``content_sha256`` one, of what it holds now (as it
    is read today, unchecked), then mark the stamp, in one transaction, audited: from then
    on a row without one is damage (rows67). A row no hash can be made of is left, as the
    reads leave it. Under maintenance's exclusive hold only: a replica of an earlier build
    serving beside it writes rows without the key."""
    what = "the hashing of the sessions' rows written without content_sha256"
    keyed: dict[str, set[Any]] = {"app_sessions": set(), "app_files": set()}

    def still_there(conn: Any) -> None:
        # At the commit point, every trigger run (red team 69 on integrity).
        for table, ids in keyed.items():
            pg.kept(conn, db.where, what, table, ids)

    with db.write(what, settled=still_there) as conn:
        rows = conn.execute(
            f"SELECT id, title, metadata, {utc('created_at')} AS created_at"  # noqa: S608
            " FROM app_sessions WHERE content_sha256 IS NULL FOR UPDATE"
        ).fetchall()
        hashed = times = 0
        for row in rows:
            key = content_sha256_or_none(
                {k: row[k] for k in ("id", "title", "metadata", "created_at")}
            )
            if key is not None and isinstance(row["metadata"], dict):
                conn.execute(
                    "UPDATE app_sessions SET content_sha256 = %s WHERE id = %s", (key, row["id"])
                )
                keyed["app_sessions"].add(row["id"])
                hashed += 1
        # Every row's updated_sha256 too, where it is not that of its updated_at: before the
        # mark, a replica of an earlier build sets the time without it.
        for row in conn.execute(
            f"SELECT id, {utc('updated_at')} AS updated_at, updated_sha256"  # noqa: S608
            " FROM app_sessions FOR UPDATE"
        ).fetchall():
            key = updated_sha256(row["id"], row["updated_at"])
            if row["updated_sha256"] != key:
                conn.execute(
                    "UPDATE app_sessions SET updated_sha256 = %s WHERE id = %s", (key, row["id"])
                )
                keyed["app_sessions"].add(row["id"])
                times += 1
        files = 0
        for row in conn.execute(
            f"SELECT id, name, size, sha256, {utc('uploaded_at')} AS uploaded_at, blob"  # noqa: S608
            " FROM app_files WHERE content_sha256 IS NULL FOR UPDATE"
        ).fetchall():
            if row_fault(row) is None:
                conn.execute(
                    "UPDATE app_files SET content_sha256 = %s WHERE id = %s",
                    (record_sha256(row), row["id"]),
                )
                keyed["app_files"].add(row["id"])
                files += 1
        # Its schema version with it: a release from before the mark, which writes rows
        # without keys, refuses the database from now on (`pg.SCHEMA_VERSION`).
        conn.execute(
            "UPDATE app_stamp SET content_sha256_since = now(), schema_version = %s",
            (pg.SCHEMA_VERSION,),
        )
        if hashed or files or times:
            db.audit(conn, "hash", db.where, sessions=hashed, files=files, updated=times)
    db.marked_hashed()
    if not (hashed or files or times):
        return []
    return [
        Finding(
            "content-unhashed",
            "app_stamp",
            f"{hashed} session rows and {files} file rows an earlier build wrote without their "
            f"{CONTENT_KEY}, and {times} session rows whose updated_at it set without its "
            f"{UPDATED_KEY}, read unchecked: one set to NULL by an edit read so too",
            "hash each as it is now, then mark the stamp (content_sha256_since): from then on "
            "a row without it is damage",
            True,
        )
    ]


def _changed_finding(row: dict[str, Any]) -> Finding:
    """A session's row whose acknowledged content changed (`rows.content_fault`): the
    local store's ``session-unreadable`` of a session.json so changed."""
    state = "trashed session" if row["trashed"] else "session"
    if content_fault(row, hashed=True) is None:  # its updated_at alone (`updated_fault`)
        return Finding(
            CONTENT_FINDING,
            row["id"],
            f"the {SESSION_ROW} of {state} {row['id']} {UPDATED_CHANGED}: damage from outside "
            "the app, or an edit by hand; it is left out of pages of sessions, and reads of "
            "it are refused (session_unreadable)",
            "nothing: left for a human (with every replica stopped, put its updated_at back "
            "from a backup; after an edit made on purpose, set app_stamp.content_sha256_since "
            "to NULL, then run `app data check --repair`, which hashes it again)",
        )
    if row.get(CONTENT_KEY) is None:
        return Finding(
            CONTENT_FINDING,
            row["id"],
            f"the {SESSION_ROW} of {state} {row['id']} {CONTENT_MISSING.split(' (')[0]}: "
            "damage from outside the app, or an edit by hand; it is left out of pages of "
            "sessions, and reads of it are refused (session_unreadable)",
            "nothing: left for a human (with every replica stopped, put the row back from a "
            "backup; after an edit made on purpose, set app_stamp.content_sha256_since to "
            "NULL, then run `app data check --repair`, which hashes the row again)",
        )
    return Finding(
        CONTENT_FINDING,
        row["id"],
        f"the {SESSION_ROW} of {state} {row['id']} {CONTENT_CHANGED}: damage from outside "
        "the app, or an edit by hand; it is left out of pages of sessions, and reads of it "
        "are refused (session_unreadable)",
        "nothing: left for a human (with every replica stopped, put its title and metadata "
        f"back from a backup; after an edit made on purpose, set its {CONTENT_KEY} and "
        "app_stamp.content_sha256_since to NULL, then run `app data check --repair`, which "
        "hashes it again; or delete the session, which moves it to the trash as it is)",
    )


def _misshapen(
    row: dict[str, Any], fault: str, found: int | None, objects: ObjectStore, *, hash_bytes: bool
) -> Finding:
    """A row of another shape than the app writes (`app.remote.rows`), with what its object
    holds: compared as the app's own, a SHA-256 in capitals was "overwritten outside the
    app", of bytes that were the file's, and a name no request can reach went unreported
    (red team 60)."""
    state = "a trashed version of" if row["trashed"] else "the live"
    blob = row["blob"]
    if not objects.is_blob_name(blob):
        held = f"it names object {blob!r}, which may be another file's or the prefix's stamp"
        fix = "name an object of its own under blobs/, or delete the row"
    elif found is None:
        held = f"its object {blob} is missing"
        fix = "restore its object from a backup of the object store, then correct the row"
    else:
        digest = _sha256(objects, blob)[0] if hash_bytes else None
        held = f"its object {blob} is {found} bytes" + (
            f" with the SHA-256 {digest}" if digest else ""
        )
        values = f"size {found}" + (f" and sha256 '{digest}'" if digest else "")
        fix = f"if those bytes are the file's, give the row {values}, and a name a request can name"
    return Finding(
        FINDING,
        f"{row['session_id']}/{row['name']}",
        f"the row for {state} file {row['name']!r} of session {row['session_id']} is of "
        f"another shape than the app writes ({fault}: a tool or an edit wrote it); {held}. "
        "The file is left out of its session's files, and reads of it are refused",
        "nothing: left for a human (with every replica stopped, correct the row of "
        f"app_files whose blob is '{blob}': {fix})",
    )


def _sha256(objects: ObjectStore, name: str) -> tuple[str | None, str | None]:
    """The SHA-256 of an object's bytes, read whole (None if it is gone meanwhile: a
    replica's empty-trash), and what the store's own checksum said of them where it did not
    match (red team 57: a traceback of the S3 client's, from this check)."""
    digest = hashlib.sha256()
    try:
        with objects.get(name) as stream:
            mismatch = stream.hash_into(digest)
    except ObjectMissingError:
        return None, None
    return digest.hexdigest(), mismatch


def _rows_known_to(conn: Any) -> datetime | None:
    """Up to when ``conn``'s server has the primary's commits: ``None`` on a primary (all
    of them), on a standby the last commit it replayed (the oldest time there is, where it
    replayed none since it started: then every object is young)."""
    row = conn.execute(
        "SELECT pg_is_in_recovery() AS standby, pg_last_xact_replay_timestamp() AS replayed"
    ).fetchone()
    if row is None or not row["standby"]:
        return None
    return row["replayed"] or datetime.min.replace(tzinfo=UTC)


def _unnamed(
    db: Database,
    objects: ObjectStore,
    referenced: set[str],
    orphan_grace: timedelta,
    *,
    known_to: datetime | None,
) -> tuple[list[ObjectInfo], list[UnfinishedUpload]]:
    """The objects and unfinished uploads under ``blobs/`` that no row names.

    Listed first, then aged: one younger than ``orphan_grace`` may be a live replica's upload
    whose row has not committed yet, so it is left out while any replica lives. With none
    live (asked after the listing, so that a replica starting in between has nothing in it),
    no row can ever name it: a replica killed between its object and its row left it, and it
    is found now rather than an hour later. Under maintenance's exclusive hold no replica
    lives, nor can one start.
    """
    orphans = objects.orphans(referenced)
    unfinished = objects.unfinished_uploads()
    if orphans or unfinished:
        with db.conn() as conn:
            # On a standby no replica is seen, live or not: the grace stays (red team 39:
            # an upload in flight on the primary was "never committed" there); so where the
            # rows were read on one (``known_to``), whichever server answers now.
            live = known_to is not None or pg.live_holders(conn) or pg.in_recovery(conn)
        if live:
            # A standby's rows are those of the last commit it replayed: an object written
            # since may have its row on the primary, however old (a paused replay, or one
            # delayed by recovery_min_apply_delay; red team 59).
            now = datetime.now(UTC)
            base = now if known_to is None else min(known_to, now)
            young = base - min(orphan_grace, base - datetime.min.replace(tzinfo=UTC))
            orphans = [info for info in orphans if info.last_modified < young]
            unfinished = [upload for upload in unfinished if upload.initiated < young]
    return orphans, unfinished
