"""Consistency of a data root: what :meth:`app.store.Store.check` finds and repairs.

Every write of :mod:`app.store` has one commit point, so a crash can only leave
recognisable leftovers (a temporary file, a half-made trash entry, bytes without a record,
...). :class:`Checker` walks the root once, in an order where each pass relies on the
last (the trash before the sessions: a half trash entry may still wait for a blob that
would otherwise look like an orphan), and with ``repair`` reconciles each finding without
ever deleting acknowledged bytes.

Kept apart from :mod:`app.store` because it runs at start-up and from ``app data check``
only, never on a request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from app.dataroot import (
    AUDIT_FILE,
    HASHED_KEY,
    LAYOUT_VERSION,
    SESSIONS_DIR,
    STAMP_FILE,
    TMP_DIR,
    TRASH_DIR,
    NotRegularFileError,
    app_user,
    chown_back,
    foreign_root_entries,
    lexists,
    link_remedy,
    mark_hashed,
    raise_layout,
    read_regular,
    refusal_words,
    remove_tree,
    root_mounts,
    runs_the_app,
    tmp_in_flight,
    unmount_keeping,
    user_name,
    visit_tree,
)
from app.errors import (
    FsyncFailed,
    InvalidNameError,
    SessionNotFoundError,
    UnreadableSessionError,
    json_loads,
    shell_word,
)
from app.lock import special_kind
from app.names import check_stored_name
from app.storage import CheckReport, Finding, TrashEntry
from app.store.ids import ID_RE
from app.store.records import (
    BLOBS_DIR,
    CONTENT_CHANGED,
    CONTENT_KEY,
    CONTENT_MISSING,
    ENTRY_REHASH,
    LEGACY_FILES_DIR,
    LEGACY_FILES_KEY,
    MANIFEST_CHANGED,
    NEW_PREFIX,
    RECORDS_DIR,
    REHASH,
    SESSION_FILE,
    TRASH_MANIFEST,
    TRASHED_SESSION,
    UNKNOWN_KEY,
    FileRecord,
    bytes_in_entry,
    content_sha256_or_none,
    date_records,
    entry_bytes,
    entry_fault,
    keyed_record,
    load_record,
    manifest_changed,
    manifest_sha256,
    open_regular,
    read_meta,
    record_blob,
    record_sha256_or_none,
    scan_records,
    session_object,
    shape_damage,
    trashed_entry,
)
from app.store.trash import EMPTYING_PREFIX, MISSING_MANIFEST, TRASH_NAME_RE

if TYPE_CHECKING:
    from app.store import Store

# Finding and CheckReport are the seam's (every backend reports its check the same way).
__all__ = ["CheckReport", "Checker", "Finding"]


class Checker:
    """One run of `Store.check`: the passes, in an order where each relies on the last."""

    def __init__(
        self, store: Store, repair: bool, thorough: bool, *, hash_bytes: bool = True
    ) -> None:
        self.store = store
        self.root = store.root
        self.repair = repair
        self.thorough = thorough
        self.hash_bytes = hash_bytes
        self.findings: list[Finding] = []
        # Blobs a half trash entry still waits for: they are not files without records.
        self.awaited: set[tuple[str, str]] = set()
        # Trash entries a restore's audit line names (`_audited`).
        self.restored_from: set[str] = set()
        # What this run's repairs of half-made trash entries finished: how many a restore
        # left (`_restored`), and each other change's, named (a restore run again says which:
        # red team 75).
        self.restores_finished = 0
        self.changes_finished: list[str] = []
        # Sessions with a trash entry this run could not check (a read the filesystem
        # failed), by the entry's name: it may wait for any of their unnamed blobs.
        self.unchecked: dict[str, str] = {}

    def found(self, problem: str, target: Path | str, detail: str, repair: str) -> bool:
        """Record a finding; returns whether to repair it now (the caller then does)."""
        path = Path(target)
        rel = path.relative_to(self.root.path) if path.is_absolute() else path
        self.findings.append(Finding(problem, str(rel), detail, repair, repaired=self.repair))
        return self.repair

    def unrepaired(self, problem: str, target: Path, detail: str, repair: str) -> None:
        self.findings.append(
            Finding(problem, str(target.relative_to(self.root.path)), detail, repair)
        )

    def run(self) -> None:
        self.check_owners()
        self.check_layout()
        self.check_stamp()
        self.check_tmp()
        self.check_staging()
        self.check_trash()
        for session_id in self.store.sessions.scan_ids():
            with self.item(), self.locked(session_id):
                if self.repair and not (self.store.sessions_dir / session_id).is_dir():
                    continue  # deleted meanwhile (read again under the lock)
                self.check_session(session_id)
        with self.item():  # a full disk: reported as not done, the root left unmarked
            self.hash_unkeyed()

    def hash_unkeyed(self) -> None:
        """In a root not marked yet (no `HASHED_KEY` in its stamp: laid out by an earlier
        build), with ``repair``: give every ``session.json``, file record and trash manifest
        an earlier build wrote without its ``content_sha256`` one, of what it holds now (as
        each is read today, unchecked), then mark the stamp, from which on one without it is
        damage (rows67). Every server start-up runs this repair: the first one by this build
        marks the root. What cannot be hashed (damaged: not the app's shape) is left as it is,
        refused as it was."""
        if not self.repair or self.root.stamp is None:
            return
        if self.root.hashed:
            # Marked by a build between the mark (rows67) and layout 2, which wrote the mark
            # at layout 1: a build from before the mark still opened it and wrote files
            # without keys, damage here (red team 67 on regress, rt-regress67d).
            if self.root.stamp.get("layout_version") != LAYOUT_VERSION:
                self.root.stamp = raise_layout(self.root.path)
            return
        hashed = {"session.json": 0, "record": 0, TRASH_MANIFEST: 0}
        keyed = []
        for path, kind in _keyable(self.root.path):
            copy = _keyed_copy(path, kind)
            if copy is not None:
                keyed.append((path, copy))
                hashed[kind] += 1
        done = {kind: count for kind, count in hashed.items() if count}
        if done:
            counts = ", ".join(f"{count} {kind}" for kind, count in done.items())
            self.found(
                "content-unhashed",
                self.root.path / STAMP_FILE,
                f"files an earlier build wrote without their {CONTENT_KEY} ({counts}), read "
                "unchecked: one whose line was removed by an edit read so too",
                f"hash each as it is now, then mark the stamp ({HASHED_KEY}): from then on "
                "one without it is damage",
            )
            for path, copy in keyed:
                self.root.atomic_write_json(path, copy)
            self.root.append_audit_line("hash", self.root.path / STAMP_FILE, done)
        self.root.stamp = mark_hashed(self.root.path)
        self.store.sessions.meta.hashed = True

    def check_owners(self) -> None:
        """Run as another user than the root's owner (root's `sudo app data check`, which
        reads all): what is not the owner's among the root's own entries and in `sessions/`
        and `.trash/`, which the server running as the owner cannot write, nor read at mode
        0600. Said "clean" of a record a restore run as root had left root's while the
        server refused its session (red team 55), and of `sessions/` or `.trash/` themselves
        left root's, for which every writer refuses the root (red team 56). The owner's own
        check finds what it may not read as ``permission-denied``."""
        root = self.root.path
        owner = app_user(root)
        if owner is None or os.geteuid() == owner:
            return
        owner_words = user_name(owner)
        fix = (
            "nothing: left for a human (with the server stopped, give it back as root: "
            f"`{chown_back(owner, root)}`)"
        )

        runs = runs_the_app(root, owner, "the data root")

        def visit(directory: Path, relative: str, found: os.stat_result) -> bool:
            if found.st_uid == owner:
                return True
            self.unrepaired(  # a directory: reported once, with what it holds
                "wrong-owner",
                directory / relative,
                f"owned by {user_name(found.st_uid)}, not by {owner_words}, {runs} (a "
                "command run as another user made it): the "
                "server cannot change it, and cannot read it if its mode keeps others "
                "out, so its session's changes are refused",
                fix,
            )
            return False

        foreign = dict(foreign_root_entries(root, owner))
        for name, uid in foreign.items():
            self.unrepaired(
                "wrong-owner",
                root / name,
                f"owned by {user_name(uid)}, not by {owner_words}, {runs} (a command run as "
                "another user made it): every writer (a "
                "server's start-up, a restore, a purge, `check --repair`) refuses the root "
                "while it is",
                fix,
            )
        for name in (SESSIONS_DIR, TRASH_DIR):
            if name in foreign:
                continue  # reported above, with what it holds
            # At any depth and length of path (`visit_tree`; red team 56): `os.walk` was a
            # RecursionError traceback 1,000 levels down, and passed over in silence what
            # lay past PATH_MAX. (A link or a file in its place: check_layout names it.)
            with contextlib.suppress(OSError):
                visit_tree(root / name, functools.partial(visit, root / name))

    def check_layout(self) -> None:
        """The root's own directories made symbolic links: read through here, said "clean",
        while every writer refuses the root (`data_root_state`; red team 42)."""
        for name in (SESSIONS_DIR, TRASH_DIR, TMP_DIR):
            path = self.root.path / name
            if path.is_symlink():
                self.unrepaired(
                    "unknown-entry",
                    path,
                    f"a symbolic link (to {path.readlink()}) where the data root keeps its own "
                    "directory: read through it here, but every writer (a server's start-up, "
                    "a restore, a purge, `check --repair`) refuses to open the root",
                    self._link_fix(path, "remove the link and let the app create the directory"),
                )
        # A filesystem mounted inside the root (a tmpfs on .tmp/): said "clean" here while
        # every writer refused the root, `app serve` included (red team 44).
        for path in root_mounts(self.root.path):
            self.unrepaired(
                "unknown-entry",
                path,
                "a filesystem mounted inside the data root: the app moves data within the "
                "root by rename, which cannot cross a mount point, so every writer (a "
                "server's start-up, a restore, a purge, `check --repair`) refuses to open it",
                f"nothing: left for a human ({unmount_keeping(path)})",
            )

    def locked(self, session_id: str | None) -> contextlib.AbstractContextManager[object]:
        """For a repair, the session's lock, which every change of the session takes.

        A repair decides from what it read: read without the lock, a change made meanwhile
        by another thread of the process (a `Store` used from two) looked like a crash's
        leftover. An upload committed between the listing of the records and that of the
        blobs left a blob no record read named, moved to the trash as "never acknowledged"
        (the upload's file then had no bytes); a replace's entry made before its switch was
        removed as "stopped before its commit" (red team 33). Under the lock, each of them is
        whole or not begun. A read-only check takes no lock: another process's changes are
        waited out instead (`Store.check`).
        """
        if not self.repair or session_id is None:
            return contextlib.nullcontext()
        return self.store.sessions.state.lock_for(session_id)

    @contextlib.contextmanager
    def item(self, entry: re.Match[str] | None = None) -> Iterator[None]:
        """One entry's checks: a repair the filesystem refuses is reported as not made.

        Each repair is whole on its own, so the others still run: a full disk (which a
        repair's new trash entry, or its audit line, needs room on) once stopped the
        whole run, and so every server's start-up, with "nothing was changed" said of
        repairs already made.

        ``entry``: the trash entry checked (its name matched by `TRASH_NAME_RE`). Where a
        read of it fails, its session is `unchecked`: the entry may be one that waits for
        bytes still among the session's blobs (a delete or a replace stopped after its
        commit), which `_check_files` must not take for an upload never acknowledged.
        """
        start = len(self.findings)
        try:
            yield
        except FsyncFailed as error:
            # The repair's change (a rename, an unlink) may be made, and is not durable; no
            # change of this process is from now on (app.dataroot's fsyncgate). Taken for
            # "not done", it was so reported (exit 65, "nothing was done about them"), and
            # the run went on changing the root (red team 48): it stops here.
            tried = [i for i in range(start, len(self.findings)) if self.findings[i].repaired]
            if tried:
                finding = self.findings[tried[-1]]
                self.findings[tried[-1]] = dataclasses.replace(
                    finding,
                    repaired=False,
                    repair=f"{finding.repair} (stopped: an fsync failed during it "
                    f"({error.strerror or error}), so it may be made, in part or whole, and "
                    "not durable; no repair was made after it. Mend the disk (`dmesg`), then "
                    "run `app data check --repair` again)",
                )
            raise
        except OSError as error:
            tried = [i for i in range(start, len(self.findings)) if self.findings[i].repaired]
            if not tried:
                if entry is not None and error.filename:
                    self.unchecked.setdefault(entry.group(2), entry.group(0))
                if isinstance(error, PermissionError) and error.filename:
                    # One file this process may not read (mode 000, another user's) once
                    # stopped every check, and so every server's start-up, at it.
                    self.unrepaired(
                        "permission-denied",
                        Path(os.fsdecode(error.filename)),
                        f"this process may not read or change it ({error.strerror}), so "
                        "what holds it was not checked",
                        "nothing: an operator gives it back to the user the app runs as "
                        "(`ls -l`, `chown`, `chmod u+rw`), then checks again",
                    )
                    return
                if error.filename:
                    # One file that failed a read (EIO, ESTALE) stopped every check, and so
                    # every server's start-up, at it, as a blob once did (red team 39).
                    self.unrepaired(
                        "unreadable",
                        Path(os.fsdecode(error.filename)),
                        f"this process could not read it ({error.strerror or error}: a failing "
                        "disk, a network filesystem's stale handle), so what holds it was not "
                        "checked",
                        "nothing: an operator mends the filesystem (`dmesg`, `findmnt -T`), "
                        "then checks again",
                    )
                    return
                raise  # a read failed, not a repair: the check cannot say what it missed
            finding = self.findings[tried[-1]]
            self.findings[tried[-1]] = dataclasses.replace(
                finding,
                repaired=False,
                repair=f"{finding.repair} (not done: {refusal_words(error, self.root.path)}; "
                "resolve that, then run `app data check --repair` again)",
            )

    def check_stamp(self) -> None:
        """A stamp that ``app data restamp`` wrote, without the ``restamp`` line that says so.

        The line is written after the stamp: a restamp killed between the two, or whose
        line failed (a full disk, EIO), handed the root to another profile with no line in
        the log, and `check` said "clean" (red team 63): the one change of a stamp the log
        exists to record, recorded nowhere. The stamp names the profile it was taken from
        (``restamped_from``) and when (``created_at``): a ``restamp`` line from that profile
        to this one, written then or after, is its line.
        """
        stamp = self.root.stamp
        if not isinstance(stamp, dict) or not isinstance(stamp.get("restamped_from"), str):
            return
        made = _when(stamp.get("created_at"))
        if made is None:
            return  # a stamp dated by no time it could be matched with: nothing to compare
        wanted = (stamp["restamped_from"], stamp.get("profile"))
        if restamp_logged(self.root.path, stamp):
            return
        if self.found(
            "stamp-unaudited",
            self.root.path / STAMP_FILE,
            f"stamped {wanted[1]!r} by `app data restamp` from {wanted[0]!r} at "
            f"{stamp['created_at']}, without its restamp line in audit.jsonl or a rotated copy "
            "beside it: the command stopped between the stamp and the line, or could not write "
            "the line (a full disk, an I/O error)",
            "append the restamp line it should have had",
        ):
            self.root.append_audit_line(
                "restamp",
                self.root.path / STAMP_FILE,
                {
                    "from": wanted[0],
                    "to": wanted[1],
                    "stamp": stamp["created_at"],
                    "recovered": True,
                },
            )

    def check_tmp(self) -> None:
        if self.repair:
            return  # the writer that opened the root cleared .tmp/ already (audited)
        leftovers, _live = tmp_in_flight(self.root.tmp_dir)
        for name in leftovers:
            self.found(
                "tmp-leftover",
                self.root.tmp_dir / name,
                "a write in flight when its process died; it was never visible",
                "delete it (the next writer to open the root does)",
            )

    def check_staging(self) -> None:
        state = self.root.store_state
        for path in _listing(self.store.sessions_dir):
            name = path.name
            if name.startswith(NEW_PREFIX):
                with state.creating_lock:
                    # Read again with the set: a create that finished since the listing was
                    # reported as one that crashed.
                    if name in state.creating or not lexists(path):
                        continue
                if self.found(
                    "unfinished-create",
                    path,
                    "a session create that crashed before its rename; it was never acknowledged",
                    "delete it",
                ):
                    remove_tree(path, ignore_errors=True)
            elif not ID_RE.fullmatch(name):
                self.unrepaired(
                    "unknown-entry", path, "not a session directory", "nothing: left for a human"
                )

    def _audited(self, *, rotated: bool = False) -> tuple[set[str], set[str]]:
        """The trash entries, and the purged sessions, the audit log names (``rotated``: the
        rotated copies beside it too, `_rotated_logs`)."""
        trash: set[str] = set()
        purged: set[str] = set()
        try:
            lines = read_regular(self.root.audit_path).splitlines()
        except FileNotFoundError:
            lines = []
        for older in _rotated_logs(self.root.path) if rotated else []:
            lines += older
        self.restored_from = set()
        for line in lines:
            try:
                record = json_loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-append names nothing
            # Only the app's shape counts: a line of another (a note appended by hand, a log
            # shipper's marker) names nothing, and must not stop a server's start-up check.
            details = record.get("details") if isinstance(record, dict) else None
            if not isinstance(details, dict):
                continue
            if isinstance(details.get("trash"), str):
                trash.add(details["trash"])
                if record.get("operation") in ("restore-file", "restore-session"):
                    self.restored_from.add(details["trash"])
            sessions, entries = details.get("sessions"), details.get("entries")
            if record.get("operation") == "purge" and isinstance(entries, list):
                # Its entries by name (since red team 52): a line of an earlier purge of the
                # same session no longer stands for a later purge's entry.
                trash.update(e for e in entries if isinstance(e, str))
            elif record.get("operation") == "purge" and isinstance(sessions, list):
                purged.update(s for s in sessions if isinstance(s, str))
        return trash, purged

    def check_trash(self) -> None:
        audited, purged = self._audited()
        listing = _listing(self.root.trash_dir)
        if any(_unaudited(path.name, audited, purged) for path in listing):
            # A log rotated as logs are (`mv audit.jsonl audit.jsonl.1`, logrotate) took
            # their lines with it: every entry was reported as a crash between its move and
            # its line, and its line written again (red team 36). Read only when needed.
            audited, purged = self._audited(rotated=True)
        for path in listing:
            found = TRASH_NAME_RE.fullmatch(path.name.removeprefix(EMPTYING_PREFIX))
            entry = TRASH_NAME_RE.fullmatch(path.name)  # not one `empty-trash` took out
            with self.item(entry), self.locked(None if found is None else found.group(2)):
                if self.repair and not lexists(path):
                    continue  # restored or emptied meanwhile (read again under the lock)
                self.check_trash_entry(path, audited, purged)

    def finish_half_entries(self, session_id: str | None) -> None:
        """Finish or remove the half-made trash entries of one session (``None``: of every
        session), as the start-up's repair would (`_complete`), each under its session's
        lock; their audit lines are left to the next whole check.

        A restore runs it first: a crash between a file's commit and the move of its old
        bytes leaves the newest entry waiting for them, and a restore that skipped it brought
        back the version before (red team 30). `empty-trash` runs it for every session: it
        removed such an entry, and left the bytes it waited for among the session's blobs,
        where the next check took them for an upload never acknowledged (red team 31). By
        name, as `Trash.latest` reads, and only entries that hold nothing but their manifest:
        a complete entry's manifest is not read.
        """
        # A restore's (one session's) is strict: a look at an entry that fails is raised, the
        # restore refused by it. Passed over, an entry waiting for bytes still among the
        # session's blobs was then found without them: the restore refused, saying they were
        # "removed from outside the app", and named `--entry` of the copy before it, older
        # than the version deleted (red team 51). An `empty-trash` goes on: one entry that
        # cannot be read must not keep the rest of the trash from being emptied.
        strict = session_id is not None
        audited: tuple[set[str], set[str]] | None = None  # read once, if an entry needs it
        rotated = False
        for path in _listing(self.root.trash_dir):
            found = TRASH_NAME_RE.fullmatch(path.name)
            if found is None or (session_id is not None and found.group(2) != session_id):
                continue
            try:
                if path.is_symlink() or not path.is_dir():
                    continue  # reported by the whole check; never followed
                if {p.name for p in path.iterdir()} != {TRASH_MANIFEST}:
                    continue  # holds its data (`_complete` has nothing to do), or is empty
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone meanwhile (restored, emptied)
            except OSError:
                if strict:
                    raise
                continue  # unreadable: the whole check reports it
            with self.store.sessions.state.lock_for(found.group(2)):
                # Read again under the lock: a change of the session may have been making it.
                entry = self.store.trash.read_entry(path.name)
                assert entry is not None
                try:
                    manifest = json_loads(read_regular(path / TRASH_MANIFEST))
                    contents = {p.name for p in path.iterdir()} - {TRASH_MANIFEST}
                except (*MISSING_MANIFEST, ValueError, PermissionError):
                    # No data a restore could choose, or one it refuses, naming the entry
                    # (`Trash.latest`): left to the whole check, which reports both.
                    continue
                if _app_shaped(manifest, found.group(2)):
                    # Whether the log names the change that made it: a restore's leftover
                    # was said to be "a delete that stopped before its commit" in the
                    # repair's audit line, and the restore's own line never written (red
                    # team 52).
                    if audited is None:
                        audited = self._audited()
                    if _unaudited(path.name, *audited) and not rotated:
                        audited, rotated = self._audited(rotated=True), True
                    purged = manifest.get("reason") == "purge" and found.group(2) in audited[1]
                    with contextlib.nullcontext() if strict else self.item():
                        self._complete(
                            entry, manifest, contents, logged=path.name in audited[0], purged=purged
                        )

    def check_trash_entry(self, path: Path, audited: set[str], purged: set[str]) -> None:
        name = path.name
        found = TRASH_NAME_RE.fullmatch(name)
        if name.startswith(EMPTYING_PREFIX) and path.is_dir() and not path.is_symlink():
            if self.found(
                "trash-emptying",
                path,
                "an entry that `empty-trash` had taken out of the trash when it was stopped, or "
                "whose audit line it could not write (a full disk, an I/O error)",
                "finish removing it",
            ):
                # Its line first: the repair's own line comes at the end of the run, and a
                # kill between the removal and it left the entry's removal logged nowhere
                # (the `empty-trash` stopped before its own line; red team 52).
                self.root.append_audit_line(
                    "empty-trash",
                    self.root.trash_dir,
                    {
                        "entries": [name.removeprefix(EMPTYING_PREFIX)],
                        "via": "check",
                        "recovered": True,
                    },
                )
                remove_tree(path)
            return
        if found is not None and path.is_symlink():
            # Moved to another disk and linked back: "not a trash entry", and the trash read as
            # empty to `restore` and `sessions list --trash` (red team 41).
            self.unrepaired(
                "unknown-entry",
                path,
                f"a symbolic link (to {path.readlink()}) where a trash entry belongs: the app "
                "never follows one, so what it holds is neither listed nor restored",
                self._link_fix(path, "leave it"),
            )
            return
        if found is None or path.is_symlink() or not path.is_dir():
            self.unrepaired("unknown-entry", path, "not a trash entry", "nothing: left for a human")
            return
        entry = self.store.trash.read_entry(name)
        assert entry is not None
        try:
            manifest = json_loads(read_regular(path / TRASH_MANIFEST))
        except (*MISSING_MANIFEST, ValueError):
            manifest = None
        contents = {p.name for p in path.iterdir()} - {TRASH_MANIFEST}
        if not self._manifest_usable(manifest, entry, contents):
            return
        reason = manifest.get("reason")
        purge = reason == "purge" and entry.session_id in purged
        if not self._complete(entry, manifest, contents, logged=name in audited, purged=purge):
            return
        file, previous = manifest.get("file"), manifest.get("entry")
        if entry.kind == "file" and isinstance(file, str) and isinstance(previous, dict):
            if (fault := entry_fault(previous, hashed=self.root.hashed)) is not None:
                # What a restore refuses (`TrashCopyLostError`), named before it is asked
                # for (rt-regress66b); its bytes are left, as a damaged version's are.
                self.unrepaired(
                    "file-damaged",
                    path / TRASH_MANIFEST,
                    f"the version of file {file!r} this entry holds has a {TRASH_MANIFEST} "
                    f"whose {fault}: damage from outside the app, or an edit by hand; a "
                    "restore of it is refused",
                    "nothing: left for a human (put the entry's trash.json back from a backup; "
                    f"{ENTRY_REHASH})",
                )
            # A version a restore would bring back, checked as a file is (red team 35).
            whole = self._verify(path, entry_bytes(path, file), file, previous)
            if whole and reason == "lost":
                self._lost_and_found(entry, file)
        if name in audited or purge:
            return
        operation = (
            "trash-session"
            if entry.kind == "session"
            else ("replace-file" if reason == "replace" else "trash-file")
        )
        if self.found(
            "trash-unaudited",
            path,
            f"a complete trash entry ({reason}) without its audit line in audit.jsonl or a "
            "rotated copy beside it (audit.jsonl.1, audit.jsonl-<date>.gz): the process "
            "stopped between the move and the line, or the log that held it was moved out "
            "of the data root",
            f"append the {operation} line it should have had",
        ):
            target = entry.session_id + ("" if entry.file is None else f"/{entry.file}")
            details = {"trash": name, "reason": reason, "recovered": True}
            self.root.append_audit_line(operation, target, details)

    def _manifest_usable(
        self, manifest: object, entry: TrashEntry, contents: set[str]
    ) -> TypeGuard[dict[str, Any]]:
        """Whether ``manifest`` is the app's for ``entry`` as its delete wrote it; a finding
        where it is not."""
        if not isinstance(manifest, dict) or not _app_shaped(manifest, entry.session_id):
            self._no_manifest(entry, contents)
            return False
        if manifest_changed(manifest, hashed=self.root.hashed):
            # Listed by its name alone (`Trash._entry`): its title was listed as what the
            # session had when it was deleted, whatever an edit made it (rows67).
            self.unrepaired(
                "trash-no-manifest",
                entry.path / TRASH_MANIFEST,
                f"a trash entry whose {TRASH_MANIFEST} is not what its delete wrote "
                f"({MANIFEST_CHANGED}): damage from outside the app, or an edit by hand; it is "
                "listed by its name alone, and a restore of a file from it is refused",
                f"nothing: left for a human (put the entry's {TRASH_MANIFEST} back from a "
                f"backup; {REHASH})",
            )
            return False
        return True

    def _no_manifest(self, entry: TrashEntry, contents: set[str]) -> None:
        """A trash entry whose trash.json is missing, unreadable or not the app's manifest."""
        path = entry.path
        if not contents and _held_bytes(path / TRASH_MANIFEST):
            # Before red team 38 a file named trash.json went over its entry's manifest
            # when deleted or replaced: these may be the only copy of its bytes.
            self.unrepaired(
                "trash-no-manifest",
                path,
                "a trash entry whose trash.json holds bytes that are not a manifest: a "
                "file named trash.json, deleted or replaced by an earlier build of the app, "
                "left them there (or a power loss tore the manifest)",
                "nothing: left for a human (its bytes are kept; restore them by hand)",
            )
        elif not contents:
            # A restore removes its entry's manifest, then the directory: one stopped between
            # the two (SIGKILL) was said to be "a delete that stopped before its manifest", a
            # delete nobody made (red team 74). Its line in the log names the entry.
            why = (
                "a restore from it (its line is in the audit log) that stopped before it "
                "removed the entry's directory"
                if entry.name in self.restored_from
                else "a delete that stopped before its manifest"
            )
            if self.found(
                "trash-empty",
                path,
                f"an empty trash entry: {why}",
                "remove the empty directory",
            ):
                self.store.trash.remove_empty(entry)
        else:
            self.unrepaired(
                "trash-no-manifest",
                path,
                "a trash entry with data but no readable trash.json",
                "nothing: left for a human (its data is kept)",
            )

    def _linked_session_copy(self, held: Path) -> bool:
        """Whether a session entry's copy of the session is a symbolic link (reported)."""
        if not held.is_symlink():
            return False
        # Moved to another disk and linked back: read as clean, and a restore moved the link
        # into sessions/ and answered "no session" (red team 42).
        self.unrepaired(
            "session-unreadable",
            held,
            f"a symbolic link (to {held.readlink()}) where a trash entry keeps its session's "
            "directory: the app never follows one, so the session is not restored",
            self._link_fix(held, "leave it"),
        )
        return True

    def _complete(
        self,
        entry: TrashEntry,
        manifest: dict[str, Any],
        contents: set[str],
        *,
        logged: bool = False,
        purged: bool = False,
    ) -> bool:
        """Whether a trash entry holds its data; repairs a half one. False: done with it.

        ``logged``: whether the audit log names the change that made the entry, which is
        written only after its commit: an entry of it left holding only its manifest, where
        the session (or the file's record) has its data again, is a restore's that stopped
        between putting the data back and removing the entry (`_restored`). ``purged``: a
        purge's line names the session (a purge's names sessions, not entries: which purge
        made the entry, the log cannot tell).
        """
        path = entry.path
        session_dir = self.store.sessions_dir / entry.session_id
        if entry.kind == "session":
            if TRASHED_SESSION in contents:
                return not self._linked_session_copy(path / TRASHED_SESSION)
            if logged and session_dir.is_dir():
                self._restored(entry, None)
            elif self._finishing(
                entry,
                f"a session {manifest.get('reason')} that stopped before its move: removed, "
                "it held no data",
            ) and self.found(
                "trash-manifest-only",
                path,
                f"a session {manifest.get('reason')} that stopped before its move"
                + (
                    ", or a restore from this entry that stopped after its commit (a line of "
                    "the log names a purge of the session, and a purge's line names no entry)"
                    if purged and session_dir.is_dir()
                    else ""
                )
                + "; the session "
                + (
                    ("is there" if purged else "is unchanged")
                    if session_dir.is_dir()
                    else "is not there either"
                ),
                "remove the entry (it holds no data)",
            ):
                self.store.trash.remove_empty(entry)
            return False
        file, blob = manifest.get("file"), manifest.get("blob")
        if isinstance(file, str) and entry_bytes(path, file).name in contents:
            return True
        named = isinstance(blob, str) and ID_RE.fullmatch(blob) is not None
        if named and not session_dir.exists():
            # The session went to the trash after the crash (a purge, run before any
            # start-up), its blobs with it: the bytes this entry waits for are in its copy
            # there. Taken for "the file is unchanged", the entry was removed, and a restore
            # of the file brought back the version before it (red team 31).
            session_dir = self._trashed_copy(entry.session_id, str(blob)) or session_dir
        blob_path = session_dir / BLOBS_DIR / str(blob)
        switched = False
        # Neither the blob nor blobs/ a link: a rename follows every directory in its path.
        linked = blob_path.is_symlink() or blob_path.parent.is_symlink()
        if named and isinstance(file, str) and blob_path.is_file() and not linked:
            with contextlib.suppress(InvalidNameError):
                current = record_blob(session_dir / RECORDS_DIR / check_stored_name(file))
                switched = current != blob
        if not switched:
            lost = named and isinstance(file, str) and self._lost(entry, file, blob)
            restored = logged and named and isinstance(file, str) and not linked
            if not lost and restored and blob_path.is_file():
                self._restored(entry, file)  # the record names the entry's bytes again
            elif (
                not lost
                and self._finishing(
                    entry,
                    f"a {manifest.get('reason')} of file {file!r} that stopped before its "
                    "commit: removed, it held no data",
                )
                and self.found(
                    "trash-manifest-only",
                    path,
                    f"a file {manifest.get('reason')} that stopped before its commit; the file "
                    "is unchanged",
                    "remove the entry (it holds no data)",
                )
            ):
                self.store.trash.remove_empty(entry)
            return False
        assert isinstance(file, str) and isinstance(blob, str)
        self.awaited.add((entry.session_id, blob))
        reason = manifest.get("reason")
        self._finishing(
            entry,
            f"the record of file {file!r} kept when its bytes were lost from outside the "
            "app: those bytes, found back among the session's blobs, moved into it (a "
            "restore of the file checks them)"
            if reason == "lost"
            else f"a {reason} of file {file!r} that stopped after its commit: its old bytes "
            "moved into it",
        )
        if not self.found(
            "trash-unfinished",
            path,
            f"the bytes of file {file!r}, lost from outside the app, are back among the "
            "session's blobs"
            if reason == "lost"
            else f"a file {reason} that stopped after its commit: the old bytes are still "
            "among the session's blobs"
            + (
                f" (or a restore of {file!r} from this entry that stopped before its commit, "
                "which brought nothing back)"
                if logged
                else ""
            ),
            "move them into the entry and append its audit line",
        ):
            return False
        # The directories it syncs opened before the move: out of descriptors after it, the
        # repair was reported "not done" of bytes it had moved (red team 48).
        with self.root.prepare(path, blob_path.parent) as prepared:
            _into_entry(blob_path, path / bytes_in_entry(file), session_dir)
            prepared.sync()
        return True

    def _restored(self, entry: TrashEntry, file: str | None) -> None:
        """An entry whose data a restore put back, left by that restore holding only its
        manifest (killed, or its removal refused, after the data moved): removed, and the
        restore's audit line appended where it lacks one.

        Said to be "a delete that stopped before its commit; the file is unchanged", it
        told the operator a restore that had happened had not (red team 52)."""
        what = "the session" if file is None else f"file {file!r}"
        back = "the session is back" if file is None else "the file is back in its session"
        logged = entry.name in self.restored_from
        if logged:
            detail = (
                f"a restore of {what} from this entry that stopped before removing it: "
                f"{back}, and the log has the restore's line"
            )
            fix = "remove the entry (it holds no data)"
        else:
            detail = (
                f"a restore of {what} from this entry that stopped after its commit: {back}, "
                "and the restore's audit line was not written"
            )
            fix = "remove the entry (it holds no data) and append the restore's audit line"
        if not self.found("trash-manifest-only", entry.path, detail, fix):
            return
        self.restores_finished += 1
        if not logged:
            # The line first: killed between the two, the next run finds the entry with
            # the line (and removes it), where the other order left the restore unlogged.
            operation = "restore-session" if file is None else "restore-file"
            target = entry.session_id + ("" if file is None else f"/{file}")
            self.root.append_audit_line(operation, target, {"trash": entry.name, "recovered": True})
        if file is None and not logged:
            # Dated as the restore would have been (it dates before its line), before its
            # entry goes (red team 59).
            self.store.sessions.date_recovered(entry)
        self.store.trash.remove_empty(entry)

    def _finishing(self, entry: TrashEntry, what: str) -> bool:
        """Note, where this run repairs, that it finishes `entry` of another change than a
        restore (`what` it was and what is done); always True, to sit in a condition."""
        if self.repair:
            self.changes_finished.append(f"entry {entry.name}, {what}")
        return True

    def _lost(self, entry: TrashEntry, file: str, blob: object) -> bool:
        """Whether a file's entry holding only its manifest lost its bytes from outside the
        app (reported, left for a human), rather than being a crash's leftover.

        A delete or a replace renames the bytes into the entry after its commit: a crash
        leaves them among the session's blobs, or the record still naming them. Neither
        there, nor kept by another entry, they were removed: taken for "a delete that
        stopped before its commit", the entry was removed, and a restore brought back the
        version before it, as the one deleted (red team 36).
        """
        if not isinstance(blob, str) or self._not_lost_here(entry, file, blob):
            return False
        if lexists(entry_bytes(entry.path, file)):
            return False  # moved in since the entry was listed (a delete next to a read-only check)
        if self._trashed_copy(entry.session_id, blob) is not None or self._kept(entry, blob):
            return False
        self.unrepaired(
            "file-damaged",
            entry.path,
            f"the bytes of the version of file {file!r} this entry keeps are not there, nor "
            "among the session's blobs, and the session no longer has that version: removed "
            "from outside the app; a restore of the file is refused while this is its "
            "newest entry",
            f"nothing: left for a human (put the bytes back into the entry as "
            f"{bytes_in_entry(file)!r} from a backup, their SHA-256 is in its trash.json; or "
            "move the entry out of .trash/ to let a restore bring back the copy before it)",
        )
        return True

    def _not_lost_here(self, entry: TrashEntry, file: str, blob: str) -> bool:
        """Whether the entry's session (live, or its copy in the trash) still holds ``blob``
        or a record naming it (a crash's leftover), or nothing can tell (`_lost`)."""
        live = self.store.sessions_dir / entry.session_id
        if live.is_symlink():
            return True
        # The session deleted or purged since (its copy in the trash): looked for there. Taken
        # for "stopped before its commit", the entry was removed, and with it the only
        # record of a lost file's name, size and SHA-256 (red team 49).
        homes = [live] if live.is_dir() else self._trashed_sessions(entry.session_id)
        if not homes and entry.reason != "lost":
            return True  # the session is gone for good: nothing tells a crash's leftover
        for home in homes:
            if lexists(home / BLOBS_DIR / blob):
                return True
            with contextlib.suppress(InvalidNameError):
                if record_blob(home / RECORDS_DIR / check_stored_name(file)) == blob:
                    return True  # the delete did not commit: the record names them still
        return False

    def _kept(self, entry: TrashEntry, blob: str) -> bool:
        """Whether another of the session's entries records ``blob`` as the bytes it holds."""
        for path in _listing(self.root.trash_dir):
            found = TRASH_NAME_RE.fullmatch(path.name)
            if found is None or found.group(2) != entry.session_id or path == entry.path:
                continue
            try:
                manifest = json_loads(read_regular(path / TRASH_MANIFEST))
            except (OSError, ValueError):
                continue
            held = manifest.get("file") if isinstance(manifest, dict) else None
            # Under the name an entry keeps bytes as: a file named trash.json has its
            # manifest at its own name, which made any entry of it "keep" the bytes.
            if (
                manifest.get("blob") == blob
                and isinstance(held, str)
                and entry_bytes(path, held).exists()
            ):
                return True
        return False

    def _trashed_copy(self, session_id: str, blob: str) -> Path | None:
        """The session's newest copy in the trash that holds ``blob`` among its blobs."""
        for copy in self._trashed_sessions(session_id):
            if (copy / BLOBS_DIR / blob).is_file():
                return copy
        return None

    def _trashed_sessions(self, session_id: str) -> list[Path]:
        """The session's copies in the trash, newest first (links never followed)."""
        copies = []
        for path in reversed(_listing(self.root.trash_dir)):
            found = TRASH_NAME_RE.fullmatch(path.name)
            if found is None or found.group(2) != session_id or found.group(3) is not None:
                continue
            copy = path / TRASHED_SESSION
            if not (path.is_symlink() or copy.is_symlink()) and copy.is_dir():
                copies.append(copy)
        return copies

    def _linked(self, directory: Path) -> bool:
        """Whether a link stands where the session keeps its files (reported, left alone).

        The app never makes one, and it could lead anywhere, another data root included:
        the migration and the repairs rename through every directory of a path.
        """
        for name in (LEGACY_FILES_DIR, RECORDS_DIR, BLOBS_DIR):
            path = directory / name
            leads, fix = "", "nothing: left for a human (put the directory back from a backup)"
            if path.is_symlink():
                # Moved elsewhere and linked back: the directory is there, whole (red team 41).
                what = "a symbolic link"
                leads = f", leading to {path.readlink()}"
                fix = self._link_fix(path, "put it back from a backup")
            elif (kind := _not_a_directory(path)) is not None:
                # A records/ made a file read as no records: the start-up's repair moved
                # every acknowledged blob to the trash as "never acknowledged" (red team 36).
                what = kind
            else:
                continue
            self.unrepaired(
                "unknown-entry",
                path,
                f"{what} where the session keeps its files{leads}; nothing is read or moved "
                "through it, and none of the session's files is repaired",
                fix,
            )
            return True
        return False

    def _link_fix(self, link: Path, otherwise: str) -> str:
        return f"nothing: left for a human ({link_remedy(link, otherwise)})"

    def _session_meta(self, directory: Path, session_id: str) -> dict[str, Any] | None:
        """``session.json``, or None (reported) for a session the checks must leave alone."""
        if directory.is_symlink():
            # Once "without a readable session.json ... restore session.json from a backup",
            # of a session.json that was there, through the link (red team 41).
            self.unrepaired(
                "session-unreadable",
                directory,
                f"a symbolic link (to {directory.readlink()}) where a session's directory "
                "belongs: the app never follows one, so the session is not served",
                self._link_fix(directory, "restore the session from a backup"),
            )
            return None
        try:
            meta = read_meta(directory, session_id, hashed=self.root.hashed)
        except (SessionNotFoundError, UnreadableSessionError) as error:
            # A session.json whose title or metadata changed on the disk reads as JSON:
            # "without a readable session.json" would send an operator looking for another
            # fault, so it is named (red team 65).
            # So is a key no build writes (a bit of CONTENT_KEY's name flipped: red team 65
            # on regress).
            damage = getattr(error, "damage", "")
            if damage == CONTENT_MISSING:
                # Its line removed by an edit in a root that requires it (rows67).
                self.unrepaired(
                    "session-unreadable",
                    directory,
                    f"a session directory whose session.json {CONTENT_MISSING.split(' (')[0]}: "
                    "damage from outside the app, or an edit by hand",
                    "nothing: left for a human (restore session.json from a backup; after an "
                    f"edit made on purpose, remove the {HASHED_KEY} line of the root's stamp, "
                    f"{STAMP_FILE}, with no server on the root, then run `app data check "
                    "--repair`, which hashes the session again)",
                )
                return None
            changed = damage == CONTENT_CHANGED
            unknown = damage.endswith(UNKNOWN_KEY)
            self.unrepaired(
                "session-unreadable",
                directory,
                f"a session directory whose session.json {CONTENT_CHANGED}: damage from "
                "outside the app, or an edit by hand"
                if changed
                else f"a session directory whose session.json {damage.removesuffix(UNKNOWN_KEY)}"
                "which no build of the app writes: damage from outside the app, or an edit by "
                "hand"
                if unknown
                else "a session directory without a readable session.json",
                f"nothing: left for a human (restore session.json from a backup; {REHASH})"
                if changed
                else "nothing: left for a human (restore session.json from a backup; after an "
                "edit made on purpose, remove that key)"
                if unknown
                else "nothing: left for a human (restore session.json from a backup)",
            )
            return None
        return None if self._linked(directory) else meta

    def check_session(self, session_id: str) -> None:
        directory = self.store.sessions_dir / session_id
        meta = self._session_meta(directory, session_id)
        if meta is None:
            return
        if isinstance(meta.get(LEGACY_FILES_KEY), list):
            if (damage := _legacy_damage(meta[LEGACY_FILES_KEY])) is not None:
                # Stopped the whole repair, and with it every server start-up (red team 38).
                self.unrepaired(
                    "session-unreadable",
                    directory,
                    "a session written before records/ and blobs/ whose list of files in "
                    f"session.json {damage}, which no build of the app wrote: damage from "
                    "outside the app",
                    "nothing: left for a human (its files/ is kept; correct the list in "
                    "session.json, then run the repair, which migrates the session)",
                )
                return
            if not self.found(
                "legacy-layout",
                directory,
                "a session written before records/ and blobs/ (its files listed in "
                "session.json, their bytes in files/)",
                "move each file's bytes to blobs/ and give it a record; then drop the list",
            ):
                return  # the rest of the checks assume the current layout
            self.store.sessions.migrate_legacy(directory, meta)
        records, blobs = _listing(directory / RECORDS_DIR), _listing(directory / BLOBS_DIR)
        if not self.thorough and len(records) == len(blobs):
            # Every crash of a write leaves one blob more than records (an upload before its
            # commit, an old blob not yet retired); only damage from outside the app (a
            # partial restore) can hide behind equal counts, which the command reads for.
            return
        self._check_files(session_id, records, blobs)

    def _lost_and_found(self, entry: TrashEntry, file: str) -> None:
        """A file whose record a repair moved into the trash when its bytes were lost
        (`_keep_lost_record`), whose bytes are back: reported while its session, there,
        lacks it. No client deleted it: said "clean", the acknowledged file stayed out of
        its session without a word once its bytes were found (red team 49)."""
        live = self.store.sessions_dir / entry.session_id
        if not live.is_dir() or live.is_symlink():
            return  # the session is in the trash, or gone: its own restore comes first
        with contextlib.suppress(InvalidNameError):
            if lexists(live / RECORDS_DIR / check_stored_name(file)):
                return  # uploaded again since: this copy is an older version, as a replace's
        if self._newer_entry_of(entry, file):
            return  # uploaded again and deleted by a client since: the newer one is restored
        self.unrepaired(
            "file-lost-found",
            entry.path,
            f"file {file!r}, moved into the trash when its bytes were lost from outside the "
            "app (reason 'lost'), holds "
            + ("its bytes again, as acknowledged" if self.hash_bytes else "bytes of its size")
            + " and is not in its session: no client deleted it",
            f"nothing: left for a human (`app sessions restore {entry.session_id} --file "
            f"{shell_word(file)}` puts it back, or empty the trash to let it go)",
        )

    def _newer_entry_of(self, entry: TrashEntry, file: str) -> bool:
        """Whether an entry newer than ``entry`` holds a version of its session's ``file``."""
        for path in _listing(self.root.trash_dir):
            found = TRASH_NAME_RE.fullmatch(path.name)
            if found is None or path.name <= entry.name or found.group(2) != entry.session_id:
                continue
            with contextlib.suppress(OSError, ValueError, AttributeError):
                if json_loads(read_regular(path / TRASH_MANIFEST)).get("file") == file:
                    return True
        return False

    def _verify(self, target: Path, data: Path, name: str, acknowledged: Mapping[str, Any]) -> bool:
        """A file's bytes against what was acknowledged (thorough only: it reads them all);
        whether they are as acknowledged (False also where they were not read).

        Nothing is repaired: the app cannot tell which bytes were meant, and a repair that
        moved them aside would lose the only copy there is. A download refuses them
        (`DamagedFileError`), where it once sent them as the acknowledged file (red team 35).
        """
        if not self.thorough:
            return False
        damage = _damage(data, acknowledged, hash_bytes=self.hash_bytes)
        if damage is not None:
            self.unrepaired(
                "file-damaged",
                target,
                f"the bytes of file {name!r} {damage}: "
                "changed from outside the app (a disk fault, an edit, a partial restore); "
                "a download of it is refused",
                "nothing: left for a human (put the bytes back from a backup, whose "
                "`sha256sum` is the one acknowledged, or upload the file again, which keeps "
                "these bytes in the trash)",
            )
        return damage is None

    def _check_files(self, session_id: str, records: list[Path], blobs: list[Path]) -> None:
        """A session's records against its blobs: each record's bytes there, each blob named."""
        referenced: set[str] = set()
        blobs_dir = self.store.sessions_dir / session_id / BLOBS_DIR
        unreadable: list[str] = []
        dangling: list[tuple[Path, FileRecord]] = []
        for path in records:
            record = load_record(path, hashed=self.root.hashed)
            if record is None:
                unreadable.append(path.name)
                shape = shape_damage(path, hashed=self.root.hashed)
                self.unrepaired(
                    "unknown-entry",
                    path,
                    "a file record that cannot be read (not a record of the app's shape: "
                    "damage from outside the app); the file is not listed"
                    if shape is None
                    else f"a file record of another shape than the app writes ({shape[0]}: "
                    "damage from outside the app); the file is not listed, and requests for "
                    "its name are refused",
                    "nothing: left for a human "
                    f"({'put the record back from a backup' if shape is None else shape[1]})",
                )
                continue
            blob = blobs_dir / record["blob"]
            if blob.is_file() and not blob.is_symlink():
                referenced.add(record["blob"])
                self._verify(path, blob, path.name, record)
                continue
            if (kind := _special(blob)) is not None:
                # A FIFO at a blob's name hung this check for good, and a server's start-up
                # with it (red team 36); it holds no bytes, and is not the app's to move. A
                # symbolic link (bytes moved to another disk and linked back, a dedup tool)
                # was "bytes not there" and "never acknowledged": the repair removed the
                # record and moved the link to the trash as an orphan (red team 41).
                referenced.add(record["blob"])
                self.unrepaired(
                    "file-damaged",
                    path,
                    f"the bytes of file {path.name!r} are not there: their name holds {kind}, "
                    "not a regular file (changed from outside the app); a download of it is "
                    "refused",
                    _not_regular_fix(blob),
                )
                continue
            dangling.append((path, record))
        orphans = [
            path
            for path in blobs
            if path.name not in referenced and (session_id, path.name) not in self.awaited
        ]
        # Neither a torn record nor one naming bytes not there is left by a crash of the
        # app: damage from outside it (a restore from a backup taken mid-write, an edit).
        # Repaired apart, the record went, and its bytes went to the trash as an upload
        # "never acknowledged", for `empty-trash` to remove for good. Left for a human:
        # every unnamed blob next to a torn record, and one whose hash a record names.
        named = [p for p in orphans if ID_RE.fullmatch(p.name)]
        wanted = {str(r.get("sha256")) for _, r in dangling}
        found = {p: _sha256_or_none(p) for p in named} if wanted else {}
        held = [p for p in named if unreadable or found.get(p) in wanted]
        hashes = set(found.values()) & wanted
        damaged = [*unreadable, *(p.name for p, r in dangling if r.get("sha256") in hashes)]
        for path in held:
            self.unrepaired(
                "file-without-record",
                path,
                "bytes no record names, next to damaged records of the session "
                f"({', '.join(map(repr, damaged))}): damage from outside the app, and these "
                "may be one of those files' bytes",
                "nothing: left for a human (put the record back from a backup, or point it "
                "at these bytes; `sha256sum` tells which file they are)",
            )
        for path, record in dangling:
            if str(record.get("sha256")) in hashes:
                self.unrepaired(
                    "record-without-file",
                    path,
                    f"the record of {path.name!r} names bytes that are not there, and bytes "
                    "no record names have its sha256: damage from outside the app",
                    "nothing: left for a human (point the record at those bytes)",
                )
            elif self.found(
                "record-without-file",
                path,
                f"the record of {path.name!r} names bytes that are not there (removed from "
                "outside the app: `fsck` may have moved them to lost+found, a backup may have "
                "left them out)",
                "move the record into the trash, whose trash.json keeps its name, size and "
                "SHA-256: `check` then names the entry and the bytes to put back into it, "
                "and a restore of the file checks them",
            ):
                self._keep_lost_record(session_id, path, record)

        self._orphans(session_id, [path for path in orphans if path not in held])

    def _orphans(self, session_id: str, orphans: list[Path]) -> None:
        """A session's blobs no record names, nor a half trash entry waits for."""
        unchecked = self.unchecked.get(session_id)
        for path in orphans:
            if (what := _not_a_blob(path)) is not None:
                self.unrepaired("unknown-entry", path, what, "nothing: left for a human")
                continue
            if unchecked is not None:
                # Taken for an upload never acknowledged, the old bytes a replace (or a
                # delete) that stopped after its commit left for that entry went to the
                # trash as an orphan, and its entry was "removed from outside the app" for
                # good: a restore of the file refused, after one read that failed (red
                # team 51).
                self.unrepaired(
                    "file-without-record",
                    path,
                    f"bytes no record names, in a session whose trash entry {unchecked} this "
                    "run could not check (a read failed, above): they may be the old bytes "
                    "of an acknowledged version that entry waits for, left by a delete or a "
                    "replace that stopped after its commit",
                    "nothing now: left until that entry reads again (an operator mends the "
                    "filesystem: `dmesg`, `findmnt -T`), then `app data check --repair` "
                    "moves them into it, or to the trash if no entry waits for them",
                )
                continue
            name = f"orphan-{path.name}"
            if self.found(
                "file-without-record",
                path,
                "bytes no record names: an upload that stopped before its commit (never "
                "acknowledged)",
                f"move them to the trash as file {name!r} (reason 'orphan')",
            ):
                self._trash_orphan(session_id, path, name)

    def _trash_orphan(self, session_id: str, path: Path, name: str) -> None:
        """Move bytes no record names into a trash entry of their own, as file ``name``."""
        entry = self.store.trash.new_entry(session_id, "file", name, "orphan")
        self._into_entry(entry, path, lambda: path.rename(entry.path / name), moved_in=True)

    def _keep_lost_record(self, session_id: str, path: Path, record: FileRecord) -> None:
        """Move an acknowledged file's record whose bytes are gone into a trash entry.

        Removed, its name, size, SHA-256 and upload time went for good (the audit line said
        only its path), at every server's start-up: bytes found again later (in lost+found,
        in a backup) were "never acknowledged" to the next repair (red team 48). In the
        entry they wait for a human, as a file whose trash copy lost its bytes does
        (`_lost`): put back, a restore checks them against the SHA-256.
        """
        # Dated as a delete is (`Files.delete`): after the session's newest change, and the
        # session's updated_at moved on to it. With the clock behind the session's newest
        # record (stepped back), the entry was named before the version it holds, and the
        # session's updated_at went back as the file went, so a client that looks for
        # sessions changed since never saw it go (red team 59).
        entry = self.store.trash.new_entry(
            session_id,
            "file",
            path.name,
            "lost",
            previous=trashed_entry(record),
            blob=record["blob"],
            after=self.store.files.floor(path.parent.parent, session_id, record),
        )
        self._into_entry(entry, path, path.unlink, moved_in=False)
        date_records(path.parent, entry.deleted_at)

    def _into_entry(
        self, entry: TrashEntry, path: Path, move: Callable[[], object], *, moved_in: bool
    ) -> None:
        """Take `path` (a session's blob or record) out of its directory by `move`, for the
        new file entry `entry` (its manifest written), synced and audited; the entry is
        removed again where `path` is still there. `moved_in`: whether `move` puts something
        into the entry, whose directory then changes too."""
        changed = (path.parent, entry.path) if moved_in else (path.parent,)
        try:
            prepared = self.root.prepare(path.parent, entry.path, audit=True)
        except BaseException:
            self.store.trash.remove_empty(entry)
            raise
        with prepared:
            try:
                move()
            except BaseException:
                if lexists(path):
                    self.store.trash.remove_empty(entry)
                raise
            prepared.sync(*changed)
            prepared.audit(
                "trash-file",
                f"{entry.session_id}/{entry.file}",
                trash=entry.name,
                reason=entry.reason,
            )


def _damage(path: Path, acknowledged: Mapping[str, Any], *, hash_bytes: bool) -> str | None:
    """How the bytes at ``path`` differ from the size and SHA-256 ``acknowledged``, if they do
    (their size only without ``hash_bytes``: `app data check --quick` reads no bytes).

    A blob is never changed once written: bytes that differ were changed from outside the
    app. ``None`` too for bytes gone meanwhile (a replace or a delete next to a read-only
    check moves them): what is still there is read again (`Store.check`).
    """
    size, sha256 = acknowledged.get("size"), acknowledged.get("sha256")
    try:
        if (kind := _special(path)) is not None:
            return f"are not there: their name holds {kind}, not a regular file"
        on_disk = path.stat().st_size
        if isinstance(size, int) and on_disk != size:
            return f"are {on_disk} bytes long, where {size} were acknowledged"
        found = _sha256(path) if hash_bytes and isinstance(sha256, str) else None
    except FileNotFoundError:
        return None
    except PermissionError:
        raise  # this process's, not the bytes': `permission-denied` (`Checker.item`)
    except OSError as error:
        # EIO from a bad sector: the bytes are damaged too, and the rest of the root is
        # checked, where one unreadable file stopped the whole check (red team 35).
        return f"cannot be read ({error.strerror or error})"
    if found is not None and found != sha256:
        return f"have the SHA-256 {found}, where {sha256} was acknowledged"
    return None


def _sha256(path: Path) -> str:
    # Without blocking, and only a regular file: opened as it was, a FIFO put at a blob's
    # name waited for a writer for good (red team 36).
    with open(path, "rb", opener=open_regular) as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, mode)
        return hashlib.file_digest(file, "sha256").hexdigest()


def _sha256_or_none(path: Path) -> str | None:
    """`_sha256`, or ``None`` for bytes that cannot be read (a bad sector, not a file)."""
    try:
        return _sha256(path)
    except PermissionError:
        raise  # this process's, not the bytes': `permission-denied` (`Checker.item`)
    except OSError:
        return None


def _not_a_blob(path: Path) -> str | None:
    """Why the entry at ``path`` in a session's ``blobs/`` is no blob, if it is not."""
    if not ID_RE.fullmatch(path.name):
        return "not a blob"
    if (kind := _special(path)) is not None:
        return f"not a blob: {kind}, not a regular file (put there from outside the app)"
    return None


#: How logrotate (and a hand's `mv`) names the audit log's older copies beside it:
#: ``audit.jsonl.1``, ``audit.jsonl.2.gz``, ``audit.jsonl-20261204``, ``audit.jsonl-20261204.gz``.
_ROTATED_LOG = re.compile(
    # `audit.jsonl.1`, `audit.jsonl-20261206.gz` (logrotate, `mv`), and the names logrotate's
    # `extension .jsonl` gives, the extension kept last (`audit.1.jsonl`,
    # `audit-20261206.jsonl.gz`): not read, their lines were reported lost (red team 63,
    # regress).
    re.escape(AUDIT_FILE)
    + r"[.-][0-9A-Za-z._-]+|"
    + re.escape(Path(AUDIT_FILE).stem)
    + r"[.-][0-9A-Za-z_-][0-9A-Za-z._-]*"
    + re.escape(Path(AUDIT_FILE).suffix)
    + r"(?:\.[0-9A-Za-z]+)?"
)


def _into_entry(blob_path: Path, target: Path, session_dir: Path) -> None:
    """Move a change's old bytes into its trash entry; linked there where another file's
    record names them too (copied outside the app), as the change would have
    (`app.store.files.Files._retire_blob`; red team 63)."""
    if _named_by_a_record(session_dir, blob_path.name):
        os.link(blob_path, target)
    else:
        blob_path.rename(target)


def _named_by_a_record(session_dir: Path, blob: str) -> bool:
    """Whether a record of the session in ``session_dir`` names ``blob`` (``True`` where the
    records cannot be read: the bytes are then kept where they are too)."""
    try:
        return any(record.get("blob") == blob for record in scan_records(session_dir))
    except (OSError, UnreadableSessionError):
        return True


def restamp_logged(root: Path, stamp: Mapping[str, Any]) -> bool:
    """Whether the log of the data root at ``root``, or a rotated copy beside it, has the
    ``restamp`` line of ``stamp`` (one `app data restamp` wrote: ``restamped_from`` the
    profile it was taken from, ``created_at`` when; `_names_restamp`), or cannot say: every
    copy of it that holds a dated line begins after the stamp (rotation removed the older
    ones, as it removes every line in time; a copy without one, as logrotate's
    ``copytruncate`` leaves the log until the next change, says nothing either way: red team
    63, regress). ``True`` for a stamp no restamp wrote, or dated by no time to compare.

    Read by `app data check` (``stamp-unaudited``) and by `app data restamp` run again on a
    root stamped already, which writes the line a run stopped before it (red team 74)."""
    made = _when(stamp.get("created_at"))
    source = stamp.get("restamped_from")
    if made is None or not isinstance(source, str):
        return True  # no restamp's, or dated by no time it could be matched with
    wanted, stamped = (source, stamp.get("profile")), str(stamp["created_at"])
    try:
        log = read_regular(root / AUDIT_FILE)
    except FileNotFoundError:
        log = None  # rotated by a rename (`mv`, logrotate's `nocreate`), until the next line
    # Only the lines that name a restamp are split out of the log: every line was, and a
    # restamp run again on a root of a million lines (293 MB) took 2.5 s and 665 MB, where it
    # had read nothing before red team 74 (red team 74 on regress).
    if log is not None and _names_restamp([_restamp_lines(log)], wanted, made, stamped):
        return True
    rotated = list(_rotated_logs(root))
    # Every rotated copy: the first was skipped where the log itself was missing (renamed
    # away), and the stamp was said unaudited, its line written again (red team 74 on regress).
    if _names_restamp(rotated, wanted, made, stamped):
        return True
    copies = [*([] if log is None else [_lines_of(log)]), *rotated]
    begins = [time for lines in copies if (time := _line_time(lines)) is not None]
    return bool(begins) and all(time > made for time in begins)


def _restamp_lines(log: bytes) -> list[bytes]:
    """The lines of ``log`` that hold ``"restamp"`` (a superset of its restamp lines)."""
    found: list[bytes] = []
    at = log.find(b'"restamp"')
    while at != -1:
        start = log.rfind(b"\n", 0, at) + 1
        end = log.find(b"\n", at)
        end = len(log) if end == -1 else end
        found.append(log[start:end])
        at = log.find(b'"restamp"', end)
    return found


def _lines_of(log: bytes) -> Iterator[bytes]:
    """The lines of ``log`` one at a time (`_line_time` reads the first few)."""
    start = 0
    while start < len(log):
        end = log.find(b"\n", start)
        end = len(log) if end == -1 else end
        yield log[start:end]
        start = end + 1


def _records_of_restamp(lines: list[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if b'"restamp"' not in line:
            continue
        try:
            record = json_loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("operation") == "restamp":
            yield record


def _names_restamp(
    copies: list[list[bytes]], wanted: tuple[str, object], made: datetime, stamped: str
) -> bool:
    """Whether the ``restamp`` line of the stamp taken ``stamped`` (its ``created_at``),
    ``wanted`` (from, to), is among ``copies`` (each a log's lines): one that names it
    (``details.stamp``, whatever its own time: a clock stepped back between the two dated
    it before the stamp, red team 63, regress), or, naming none (a release before that),
    one dated ``made`` less a minute or later (a build before red team 63 dated its line
    before it wrote the stamp)."""
    for lines in copies:
        for record in _records_of_restamp(lines):
            details, when = record.get("details"), _when(record.get("time"))
            if not isinstance(details, dict) or (details.get("from"), details.get("to")) != wanted:
                continue
            if "stamp" in details:
                if details["stamp"] == stamped:
                    return True
            elif when is not None and when >= made - timedelta(minutes=1):
                return True
    return False


def _line_time(lines: Iterable[bytes]) -> datetime | None:
    """The time of a log's first line that has one (an append-only log begins with its
    oldest), ``None`` if none has."""
    for line in lines:
        try:
            record = json_loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and (when := _when(record.get("time"))) is not None:
            return when
    return None


def _when(value: object) -> datetime | None:
    """An ISO 8601 time the app wrote (a stamp's ``created_at``, a line's ``time``), aware;
    ``None`` for anything else."""
    if not isinstance(value, str):
        return None
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def _unaudited(name: str, audited: set[str], purged: set[str]) -> bool:
    """Whether a trash entry's name is in no line read (a purge's line names its sessions)."""
    found = TRASH_NAME_RE.fullmatch(name)
    return found is not None and name not in audited and found.group(2) not in purged


def _rotated_logs(root: Path) -> Iterator[list[bytes]]:
    """The lines of each rotated copy of the audit log in ``root`` (gzip'ed, xz'ed, bzip2'ed
    or not), skipping any that is not a regular file or cannot be read: they only spare a
    false report."""
    for path in _listing(root):
        if not _ROTATED_LOG.fullmatch(path.name) or path.is_symlink():
            continue  # never followed: it could lead anywhere
        try:
            data = read_regular(path)
            if data[:2] == b"\x1f\x8b":  # gzip's magic number
                data = gzip.decompress(data)
            elif data[:6] == b"\xfd7zXZ\x00":  # xz's (logrotate's `compresscmd xz`)
                import lzma  # only for such a copy (its import costs)

                try:
                    data = lzma.decompress(data)
                except lzma.LZMAError:
                    continue
            elif data[:3] == b"BZh":  # bzip2's (`compresscmd bzip2`)
                import bz2  # only for such a copy (its import costs)

                data = bz2.decompress(data)  # OSError or EOFError where damaged
        except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
            continue  # a copy damaged or cut short: it spares no report, and stops no check
        yield data.splitlines()


def _not_a_directory(path: Path) -> str | None:
    """What is at ``path`` if it is there and not a directory ("a regular file", "a FIFO")."""
    try:
        mode = path.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISDIR(mode):
        return None
    return "a regular file" if stat.S_ISREG(mode) else special_kind(mode) or "something else"


def _not_regular_fix(blob: Path) -> str:
    """What a human does about something other than a regular file at a blob's name."""
    if blob.is_symlink():
        return (
            "nothing: left for a human (the app never follows a link; if it leads to the "
            f"file's bytes, put them in its place: `cp --remove-destination \"$(readlink -f "
            f'{shell_word(blob)})" {shell_word(blob)}`, after checking that their `sha256sum` is '
            "the one acknowledged; else put them back from a backup, or upload the file again)"
        )
    return (
        "nothing: left for a human (move it away and put the bytes back from a backup, whose "
        "`sha256sum` is the one acknowledged, or upload the file again)"
    )


def _special(path: Path) -> str | None:
    """What is at ``path`` if it is neither a regular file nor missing: a symbolic link (with
    where it leads), which the app never follows, or a special file's kind."""
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            return f"a symbolic link (to {path.readlink()})"
    except (FileNotFoundError, NotADirectoryError):
        return None
    return special_kind(mode)


def _listing(directory: Path) -> list[Path]:
    if directory.is_symlink():
        return []
    try:
        with os.scandir(directory) as entries:
            return sorted(directory / e.name for e in entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _held_bytes(path: Path) -> bool:
    """Whether ``path`` is a file with bytes in it (lstat only); raises where it cannot be
    looked at: a look that failed (EIO) read as "no bytes" made a trash entry whose
    trash.json held the only copy of a file's bytes "an empty trash entry", which
    `--repair` removed (red team 39)."""
    try:
        found = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return stat.S_ISREG(found.st_mode) and found.st_size > 0


def _keyable(root: Path) -> Iterator[tuple[Path, str]]:
    """Every ``session.json``, file record and trash manifest in ``root``, live or in the
    trash, with its kind (`Checker.hash_unkeyed`); nothing through a link."""

    def session(directory: Path) -> Iterator[tuple[Path, str]]:
        yield directory / SESSION_FILE, "session.json"
        for record in _listing(directory / RECORDS_DIR):
            yield record, "record"

    for directory in _listing(root / SESSIONS_DIR):
        if ID_RE.fullmatch(directory.name):
            yield from session(directory)
    for entry in _listing(root / TRASH_DIR):
        if TRASH_NAME_RE.fullmatch(entry.name) and not entry.is_symlink():
            yield entry / TRASH_MANIFEST, TRASH_MANIFEST
            yield from session(entry / TRASHED_SESSION)


def _keyed_copy(path: Path, kind: str) -> dict[str, Any] | None:
    """What ``path`` (`_keyable`) holds, with its ``content_sha256`` added; ``None`` where it
    has one, is not there, is no regular file, or is not of the app's shape (damage, left
    for a human and reported as such)."""
    raw, found = b"", None
    try:
        if not path.is_symlink():
            raw = read_regular(path)
            found = json_loads(raw)
    except (OSError, ValueError):  # NotRegularFileError is an OSError
        found = None
    if not isinstance(found, dict):
        return None
    if kind == TRASH_MANIFEST:
        return _keyed_manifest(found)
    key: str | None = None  # where it has one already, none is added
    if CONTENT_KEY in found:
        key = None
    elif kind == "session.json":
        try:
            session_object(
                raw, path.parent.name if ID_RE.fullmatch(path.parent.name) else str(found.get("id"))
            )
        except UnreadableSessionError:
            return None
        key = content_sha256_or_none(found)
    else:  # a record
        record = load_record(path)
        kept = None if record is None else keyed_record(record).get(CONTENT_KEY)
        key = kept if isinstance(kept, str) else None
    return None if key is None else {**found, CONTENT_KEY: key}


def _keyed_manifest(found: dict[str, Any]) -> dict[str, Any] | None:
    """A trash manifest (`_keyed_copy`) with its own key and its ``entry``'s, each where it
    has none; ``None`` where neither is added. The entry, the record of the version a file's
    entry holds, is keyed on its own: a record from before keys deleted by an earlier build
    (or by this one before the mark) kept none there, the manifest's own key was added
    without it, and once the root was marked the restore of that acknowledged version was
    refused as damaged (`entry_changed`; red team 67 on regress)."""
    if not _app_shaped(found, str(found.get("session_id"))):
        return None
    copy = dict(found)
    previous = found.get("entry")
    if isinstance(previous, dict) and previous and CONTENT_KEY not in previous:
        key = record_sha256_or_none(previous)
        if key is not None:
            copy["entry"] = {**previous, CONTENT_KEY: key}
    if CONTENT_KEY not in found:
        key = manifest_sha256(found)
        if key is not None:
            copy[CONTENT_KEY] = key
    return None if copy == found else copy


def _app_shaped(manifest: object, session_id: str) -> bool:
    """Whether a trash entry's ``trash.json`` is a manifest the app wrote for that session's
    entry (a JSON object naming its kind, its session and, for a file, the file); a JSON
    object of another shape was a file named trash.json, whose bytes took its place."""
    if not isinstance(manifest, dict) or manifest.get("session_id") != session_id:
        return False
    kind = manifest.get("kind")
    return kind == "session" or (kind == "file" and isinstance(manifest.get("file"), str))


def _legacy_damage(listed: list[Any]) -> str | None:
    """What in a legacy session's list of files no build wrote (an entry that is not an
    object, a name that is not one name of its directory), or ``None``."""
    for entry in listed:
        if not isinstance(entry, dict):
            return f"holds {entry!r} where a file's entry belongs"
        name = entry.get("name")
        if not isinstance(name, str):
            return f"holds an entry whose name is {name!r}"
        try:
            check_stored_name(name)
        except InvalidNameError as refused:
            return f"names the file {name!r} ({refused.problem})"
    return None
