"""The trash of a data root: entries made before anything moves in, listed, emptied.

Deleting a session, deleting a file and replacing a file each move the old data into a new
entry of ``.trash/`` whose manifest (``trash.json``) was written first; only
:meth:`Trash.empty` removes bytes. Putting an entry back into a session is the session's
business (:meth:`app.store.Store.restore`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import secrets
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from app.dataroot import (
    NotRegularFileError,
    fsync_dir,
    json_bytes,
    lexists,
    link_remedy,
    read_regular,
    refusal_words,
    remove_tree,
    write_new_file,
)
from app.errors import (
    COMMAND_LOG,
    PARTWAY_RESOLVE,
    SERVER_LOG,
    PermissionDeniedStorageError,
    StoppedPartwayError,
    TrashCopyLostError,
    TrashEntryLinkedError,
    TrashManifestDamagedError,
    json_loads,
    partway_cause,
    unaudited,
)
from app.lock import BOOT_ID_FILE, special_kind
from app.storage import LINKED, Emptied, FileEntry, TrashEntry, entry_holds_other
from app.store.records import (
    LATEST_FLOOR,
    MANIFEST_CHANGED,
    TRASH_MANIFEST,
    TRASHED_SESSION,
    TrashManifest,
    entry_bytes,
    manifest_changed,
    manifest_sha256,
)

if TYPE_CHECKING:
    from typing import Literal

    from app.dataroot import DataRoot, Prepared

__all__ = [
    "EMPTYING_PREFIX",
    "LINKED",
    "MISSING_MANIFEST",
    "TRASH_NAME_RE",
    "UNREADABLE",
    "Trash",
    "linked_entry_remedy",
]

_TIME_FORMAT: Final = "%Y%m%dT%H%M%S%fZ"
TRASH_NAME_RE: Final = re.compile(r"(\d{8}T\d{12}Z)-([0-9a-f]{32})(-file-[0-9a-f]+)?")
"""An entry's name: when it was made, the session, and for a file a random suffix."""

_NEVER: Final = datetime.min.replace(tzinfo=UTC)
EMPTYING_PREFIX: Final = ".emptying-"
"""An entry ``empty-trash`` took out of the trash and is removing (``check`` finishes it)."""

log = logging.getLogger("app.store")

#: How long the trash directory must have been left as it is for its times to tell any
#: change after a listing (`Trash._names_of`): more than the coarsest filesystem's step (FAT's
#: 2 s) and a jiffy.
_SETTLED_NS: Final = 3_000_000_000

UNREADABLE: Final = "unreadable"
"""The reason an entry is listed with when its manifest may not be read (EACCES, EPERM)."""

MISSING_MANIFEST: Final = (FileNotFoundError, NotADirectoryError, NotRegularFileError)
"""A manifest that is not there to read. Any other failure (EMFILE, EIO) is raised: read as
"no manifest", it once made a restore answer "not in the trash" for a file that was."""


@functools.cache
def _boot_id() -> str | None:
    try:
        return BOOT_ID_FILE.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def _since_boot() -> tuple[str, float] | None:
    """This boot's id and the seconds since it began (``CLOCK_BOOTTIME``: it counts time
    suspended, and no one sets it), or None where the kernel gives no boot id."""
    boot = _boot_id()  # a process lives within one boot
    return None if boot is None else (boot, time.clock_gettime(time.CLOCK_BOOTTIME))


def _boot_of(recorded: object) -> tuple[str, float] | None:
    """A manifest's ``boot``, if it is of the shape `Trash.new_entry` writes."""
    if not isinstance(recorded, dict):
        return None
    boot, seconds = recorded.get("id"), recorded.get("seconds")
    if not isinstance(boot, str) or isinstance(seconds, bool):
        return None
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return None
    return boot, float(seconds)


def linked_entry_remedy(link: Path) -> str:
    """What puts back a trash entry moved out of the data root and linked back."""
    # "else restore again" alone was refused again by the same link (red team 45).
    return link_remedy(link, "remove the link and restore again to bring back the copy before it")


def _linked_remedy(link: Path) -> str:
    """`linked_entry_remedy`, said for a listing: the link may go meanwhile."""
    try:
        return linked_entry_remedy(link)
    except OSError as error:
        return f"it is gone since ({error.strerror}): list the trash again"


def _remove_contents(directory: Path) -> None:
    """Remove everything in ``directory`` (an entry `empty-trash` took out of the trash),
    and leave the directory itself; links are removed, never followed, at any depth
    (`remove_tree`: red team 51's tree deeper than Python's stack), each name relative to
    its directory's descriptor: by whole paths, a file of a root near the path length limit
    was left (``ENAMETOOLONG``) and its entry with it (red team 20's longest names)."""
    remove_tree(directory, contents_only=True)


def _not_bytes(path: Path) -> str | None:
    """``None`` if ``path`` is a regular file, else what is wrong with it, for a refusal."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "has lost its bytes"
    if stat.S_ISREG(mode):
        return None
    kind = "a symbolic link" if stat.S_ISLNK(mode) else special_kind(mode) or "something else"
    # A FIFO there was passed over, and the version before it restored (red team 36).
    return f"holds {kind} where its bytes should be"


class Trash:
    """The entries of ``<root>/.trash/``."""

    def __init__(self, root: DataRoot) -> None:
        self.root = root
        self.path = root.trash_dir
        #: The names of the entries by session (`_names_of`), with what they were read under:
        #: the root's change mark and the trash directory's identity and times.
        self._index: tuple[int | None, tuple[int, ...], bool, dict[str, list[str]]] | None = None

    def new_entry(
        self,
        session_id: str,
        kind: Literal["session", "file"],
        file: str | None,
        reason: str,
        *,
        title: str | None = None,
        previous: FileEntry | None = None,
        blob: str | None = None,
        after: datetime | None = None,
    ) -> TrashEntry:
        """Make an empty entry with its manifest, durably, for data about to move in
        (named no earlier than just ``after``: see :meth:`moment`)."""
        moment = self.moment(after)
        # File names can be 255 bytes on their own, so a file entry is named by a random
        # suffix; the file keeps its name inside the entry, and trash.json says what it was.
        suffix = f"-file-{secrets.token_hex(4)}" if kind == "file" else ""
        name = f"{moment.strftime(_TIME_FORMAT)}-{session_id}{suffix}"
        path = self.path / name
        manifest: TrashManifest = {
            "kind": kind,
            "session_id": session_id,
            "file": file,
            "deleted_at": moment.isoformat(timespec="microseconds"),
            "reason": reason,
            "title": title,
            "entry": previous,
        }
        if blob is not None:
            manifest["blob"] = blob
        manifest["content_sha256"] = manifest_sha256(manifest)  # CONTENT_KEY
        since_boot = _since_boot()
        if since_boot is not None:
            manifest["boot"] = {"id": since_boot[0], "seconds": since_boot[1]}
        data = json_bytes(manifest)
        path.mkdir(mode=0o700)
        try:
            # Written in place, not through .tmp/ and a rename: the entry is new, ours, and
            # empty, so a partial manifest is what a missing one already was to a reader and
            # to `app data check` (an entry without a readable trash.json and no data: removed).
            # That saves, on every delete, a cross-directory rename (a filesystem-wide lock),
            # a flock, and the resolve() of the destination's every parent.
            write_new_file(path / TRASH_MANIFEST, data)
            fsync_dir(path)
            fsync_dir(self.path)
            # The last moment before the caller moves data in (the check the atomic write
            # made): the root and .trash/ must still be the ones this process holds.
            self.root.ensure_held()
        except BaseException:
            # A full disk must not leave an empty entry behind.
            with contextlib.suppress(OSError):
                (path / TRASH_MANIFEST).unlink(missing_ok=True)
                path.rmdir()
            raise
        return TrashEntry(name, path, kind, session_id, file, moment, reason, title, since_boot)

    def moment(self, after: datetime | None = None) -> datetime:
        """The time a new entry is named by: now, or just after the newest entry if later.

        Entries sort by the time in their name, and that order is what :meth:`latest`
        restores and ``empty-trash --older-than`` reads. A clock stepped back since the
        newest entry was made (a restored VM snapshot, a board that boots before NTP) would
        otherwise name a later deletion before an earlier one, and a restore would bring
        back an older version. Erring later only keeps an entry longer.

        ``after``: no earlier than just after it too (the newest change of the session a
        file's delete changes, `app.store.records.change_floor`), so that a delete never
        reads as made before the version it deleted (red team 56, second round).
        """
        state = self.root.store_state
        with state.trash_moment_lock:
            newest = state.trash_moment
            if newest is None:
                # An entry named later than any clock gives (by hand) is not followed: just
                # after the last microsecond Python holds was an OverflowError on each delete.
                names = (moment for moment, _ in self._names() if moment < LATEST_FLOOR)
                newest = max(names, default=_NEVER)
            moment = max(datetime.now(UTC), newest + timedelta(microseconds=1))
            if after is not None and after < LATEST_FLOOR:
                moment = max(moment, after + timedelta(microseconds=1))
            state.trash_moment = moment
            return moment

    def newest_session_id(self) -> str | None:
        """The newest session id among the entries (by id, not by when it was deleted)."""
        return max((session_id for _, session_id in self._names()), default=None)

    def _names(self) -> list[tuple[datetime, str]]:
        """Each entry's time and session, from its name alone (no manifest is read)."""
        try:
            with os.scandir(self.path) as entries:
                names = [e.name for e in entries]
        except FileNotFoundError:
            return []
        return [
            (datetime.strptime(found.group(1), _TIME_FORMAT).replace(tzinfo=UTC), found.group(2))
            for name in names
            if (found := TRASH_NAME_RE.fullmatch(name)) is not None
        ]

    def latest(
        self,
        session_id: str,
        file: str | None,
        *,
        lost: bool = False,
        odd: bool = False,
        within: int | None = None,
        indexed: bool = False,
    ) -> TrashEntry | None:
        """The most recent entry that still holds the session (or its ``file``).

        ``lost``: refuse (`TrashCopyLostError`) where a newer entry of the file holds only
        its manifest. Only under the session's lock, after `Store._finish_half_entries`:
        a crash's leftovers are gone by then, and what is left lost its bytes from outside
        the app (red team 36: the restore brought back the version before it, as the one
        deleted). ``odd``: refuse only where that entry holds something that is not a
        regular file (a FIFO, a link), which no change in flight leaves: safe without the
        lock. ``within``: look only at the session's newest entries of that kind, as many
        (a refusal's look, which must stay cheap: a file's entry is known by its manifest
        alone). ``indexed``: the session's names from the index kept of them (`_names_of`),
        for a refusal's look alone (a restore lists the trash as it is).
        """
        # By name first (it says the session and the kind): only this session's manifests
        # are read. Reading every one made a restore cost 0.4 s next to 10,000 entries.
        names = self._names_of(session_id) if indexed else self._entry_names()
        for name in reversed(names):
            found = TRASH_NAME_RE.fullmatch(name)
            if found is None or found.group(2) != session_id:
                continue
            if (found.group(3) is None) != (file is None):
                continue
            if within is not None:
                if within <= 0:
                    return None
                within -= 1
            entry = self.read_entry(name)
            if entry is None:
                continue
            entry = self._checked(entry, session_id, file)
            if file is not None and self._unnamed(entry, file):
                # It may hold the version deleted last: passed over, the restore brought
                # back the one before it as the one deleted (red team 45).
                raise self._damaged(entry, session_id, file, older=True)
            if self._holds(entry, session_id, file, lost=lost, odd=odd):
                return entry
        return None

    def older_whole(self, session_id: str, file: str, newer: str) -> str | None:
        """The name of the newest entry older than ``newer`` that holds ``file`` whole, for
        a refusal to name (``app sessions restore --entry``); None if none does."""
        for name in reversed(self._entry_names()):
            found = TRASH_NAME_RE.fullmatch(name)
            if name >= newer or found is None or found.group(2) != session_id:
                continue
            entry = self.read_entry(name) if found.group(3) else None
            if entry is None or entry.reason in (LINKED, UNREADABLE):
                continue
            whole = entry.kind == "file" and entry.file == file
            if whole and _not_bytes(entry_bytes(entry.path, file)) is None:
                return name
        return None

    def chosen(
        self,
        session_id: str,
        file: str | None,
        entry: str | None,
        *,
        lost: bool = False,
        odd: bool = False,
    ) -> TrashEntry | None:
        """The entry a restore takes: `latest`, or the one called ``entry`` (`named`)."""
        if entry is None:
            return self.latest(session_id, file, lost=lost, odd=odd)
        return self.named(entry, session_id, file)

    def named(self, name: str, session_id: str, file: str | None) -> TrashEntry | None:
        """The entry called ``name``, where it holds the session (or its ``file``) to restore
        (``app sessions restore --entry``, which may take a copy older than the newest);
        None where there is no such entry, or it holds nothing to restore any more.

        An entry that holds another session, another file, or the other kind is refused
        naming what it holds and the command that restores that; one whose copy is damaged
        or missing is refused as `latest` refuses the newest (`TrashCopyLostError`), as no
        change in flight leaves an entry by a name already given out.
        """
        # A look at it that fails is raised: read as "nothing there", `restore --entry`
        # said it was not in the trash, of an entry the listing shows (red team 52).
        if TRASH_NAME_RE.fullmatch(name) is None or not lexists(self.path / name):
            return None
        entry = self.read_entry(name)
        assert entry is not None  # its name is an entry's
        entry = self._checked(entry, session_id, file)
        if entry.kind == "file" and (
            not isinstance(entry.file, str) or (file is not None and self._unnamed(entry, file))
        ):
            # Once "holds file '?'", and a command `--file '?'` that could not restore it.
            raise self._damaged(entry, session_id, file, asked=True)
        kind = "session" if file is None else "file"
        if (entry.session_id, entry.kind, entry.file if file else None) != (
            session_id,
            kind,
            file,
        ):
            held = None if entry.kind == "session" else entry.file  # a name: refused above if not
            raise entry_holds_other(name, entry.session_id, held, session_id, file)
        return entry if self._holds(entry, session_id, file, lost=True, asked=True) else None

    @staticmethod
    def _unnamed(entry: TrashEntry, file: str) -> bool:
        """Whether ``entry`` is a file's whose manifest does not say which (missing, torn,
        not the app's) or names another whose bytes it does not hold, and holds bytes by
        ``file``'s name."""
        if entry.kind != "file" or entry.file == file or entry.reason == LINKED:
            return False
        if isinstance(entry.file, str) and lexists(entry_bytes(entry.path, entry.file)):
            return False  # another file's copy, as its manifest says
        return lexists(entry_bytes(entry.path, file))

    def _damaged(
        self,
        entry: TrashEntry,
        session_id: str,
        file: str | None,
        *,
        asked: bool = False,
        older: bool = False,
    ) -> TrashManifestDamagedError:
        """The refusal of a restore that needs ``entry``, whose manifest cannot say what it
        holds (`_unnamed`)."""
        try:
            holds = tuple(sorted(p.name for p in entry.path.iterdir() if p.name != TRASH_MANIFEST))
        except OSError:
            holds = ()
        return TrashManifestDamagedError(
            session_id,
            file,
            entry.name,
            str(entry.path),
            holds,
            names=entry.file if isinstance(entry.file, str) else None,
            asked=asked,
            older=self.older_whole(session_id, file, entry.name) if older and file else None,
        )

    def _checked(self, entry: TrashEntry, session_id: str, file: str | None) -> TrashEntry:
        """``entry`` as a restore may read it: refused if it is a link, read again if its
        manifest could not be read."""
        if entry.reason == LINKED:
            # It may hold what is asked for, newer than any entry below. Passed over, the
            # restore said "no such file in the trash" of a file deleted a moment before,
            # or brought back an older copy (red team 42).
            raise TrashEntryLinkedError(
                session_id, file, entry.name, str(entry.path), linked_entry_remedy(entry.path)
            )
        if entry.reason == UNREADABLE:
            # It may hold what is asked for, newer than any entry below: restoring an
            # older copy instead would answer with the wrong version.
            what = f"session {session_id}" if file is None else f"file {file!r}"
            entry = self._read_again(entry.name, what)
        return entry

    def _holds(
        self,
        entry: TrashEntry,
        session_id: str,
        file: str | None,
        *,
        lost: bool = False,
        odd: bool = False,
        asked: bool = False,
    ) -> bool:
        """Whether ``entry`` holds the session (or its ``file``) whole (see `latest`)."""
        if file is None:
            held = entry.path / TRASHED_SESSION
            if entry.kind == "session" and held.is_symlink():
                # Moved back, the link was said "no session in sessions" (red team 42).
                raise TrashEntryLinkedError(
                    session_id, None, entry.name, str(held), linked_entry_remedy(held)
                )
            return entry.kind == "session" and held.is_dir()
        if entry.kind != "file" or entry.file != file:
            return False
        damage = _not_bytes(entry_bytes(entry.path, file))
        if damage is None:
            return True
        if lost or (odd and not damage.startswith("has lost")):
            # Taken as the newest, the refusal names the copy before it and its --entry.
            older = None if asked else self.older_whole(session_id, file, entry.name)
            raise TrashCopyLostError(
                session_id, file, entry.name, damage=damage, asked=asked, older=older
            )
        return False

    def remove_empty(self, entry: TrashEntry, prepared: Prepared | None = None) -> None:
        """Remove an entry that holds only its manifest (a change that did not happen, or
        one undone). ``prepared``: ``.trash/`` opened before (see DataRoot.prepare).

        An entry that holds anything else is left whole. The undo of a change calls this
        when the change raised, and an exception can come after the change was made: a
        Ctrl-C (``KeyboardInterrupt``) lands right after the rename that moved a session in.
        The manifest was removed and the entry left with the session in it, which `check`
        could only leave for a human (``trash-no-manifest``; red team 35).
        """
        try:
            held = any(p.name != TRASH_MANIFEST for p in entry.path.iterdir())
        except FileNotFoundError:
            held = False
        except OSError as error:
            # A listing that fails (EIO) says nothing of what the entry holds: read as
            # "nothing but the manifest", a session moved in just before a Ctrl-C lost
            # it, and `check` could only leave the entry for a human (red team 52).
            log.warning(
                "trash entry %s could not be listed (%s): kept whole, with its manifest; "
                "`app data check --repair` removes it if it holds nothing",
                entry.name,
                error.strerror,
            )
            return
        if held:
            log.warning("trash entry %s holds data: kept whole, with its manifest", entry.name)
            return
        with contextlib.suppress(FileNotFoundError):
            (entry.path / TRASH_MANIFEST).unlink()
        with contextlib.suppress(OSError):
            entry.path.rmdir()  # anything else in it: it stays
        if prepared is None:
            fsync_dir(self.path)
        else:
            prepared.sync(self.path)

    def remove_restored(self, entry: TrashEntry, prepared: Prepared, audited: object) -> None:
        """Remove an entry whose data a restore has moved back: a failure is logged.

        ``audited``: what the restore's audit line gave (`Prepared.audit`); ``False`` where
        the line could not be written (a full disk, EIO), and the entry is then kept: the
        one trace of the restore `check` can write the line from (`trash-manifest-only`).
        Removed, the restore was in the process's log alone, and `check` said "clean" (red
        team 63).
        """
        # The restore is made and must be answered as made; what is left (the manifest
        # alone) holds no data, and `check` removes it (`trash-manifest-only`).
        if audited is False:
            log.warning(
                "kept the trash entry %s, emptied by its restore, for the audit line the "
                "restore could not write: `app data check --repair` (a server's start-up) "
                "writes it and removes the entry",
                entry.name,
            )
            return
        try:
            self.remove_empty(entry, prepared)
        except OSError as error:
            log.warning("could not remove the emptied trash entry %s (%s)", entry.name, error)

    def entries(self) -> list[TrashEntry]:
        """Every entry, oldest first; one without a readable manifest, by what its name says."""
        return [
            entry for name in self._entry_names() if (entry := self.read_entry(name)) is not None
        ]

    def _names_of(self, session_id: str) -> list[str]:
        """The names of the session's entries, oldest first (and perhaps a few that are not
        entries: `latest` checks each), from an index of the trash read once and kept while
        the directory stays as it was (its identity, times, links and size).

        Equal times alone do not say so: a filesystem's clock ticks in steps (a jiffy, 2 s on
        FAT), and a change in the tick of the listing left them equal. So they are trusted
        only where no change of this process's to the root began or ended since the listing
        (`DataRoot.change_mark`), or where the directory had not changed for
        `_SETTLED_NS` when it was listed (as git trusts its index's times: a change after
        that listing has later times).

        A file's 404 looks for its entry (`Store.deleted_entry`): listing the trash each time
        cost 30 ms of CPU next to 20,000 entries of other sessions, 160 ms next to 100,000,
        for any client's request of a name never used (red team 69 on regress, b).
        """
        mark = self.root.change_mark()
        try:
            found = self.path.stat()
        except FileNotFoundError:
            return []
        seen = (found.st_ino, found.st_mtime_ns, found.st_ctime_ns, found.st_nlink, found.st_size)
        index = self._index
        if index is not None and index[1] == seen and (index[2] or index[0] == mark is not None):
            return index[3].get(session_id, [])
        settled = time.time_ns() - max(found.st_mtime_ns, found.st_ctime_ns) > _SETTLED_NS
        by_session: dict[str, list[str]] = {}
        for name in self._entry_names():
            # The session's id by its place in the name (`new_entry`), not by the pattern:
            # one match of a pattern per entry was most of the listing's cost.
            by_session.setdefault(name[23:55], []).append(name)
        self._index = (mark, seen, settled, by_session)
        return by_session.get(session_id, [])

    def _entry_names(self) -> list[str]:
        try:
            with os.scandir(self.path) as entries:
                # A link at an entry's name is listed too (`_entry`), never followed: left out,
                # the trash read as empty to `sessions list --trash` and to `restore` (red
                # team 42).
                return sorted(
                    e.name
                    for e in entries
                    if e.is_dir(follow_symlinks=False)
                    or (e.is_symlink() and TRASH_NAME_RE.fullmatch(e.name) is not None)
                )
        except FileNotFoundError:
            return []

    def _read_again(self, name: str, what: str) -> TrashEntry:
        """The entry called ``name``, whose manifest could not be read, read again; refused
        as the storage error it still is (`latest`: a restore may need it)."""
        try:
            entry = self._entry(name, strict=True)
        except PermissionError:
            raise PermissionDeniedStorageError(
                f"restore {what}: trash entry {name} may hold its newest copy, and its "
                f"{TRASH_MANIFEST} may not be read by this process"
            ) from None
        # Any other failure (EMFILE, EIO) is raised as it is, naming the manifest: its own
        # refusal says what it is (a restore said "not in the trash" when it was read as
        # "no manifest").
        assert entry is not None  # its name was an entry's
        return entry

    def read_entry(self, name: str) -> TrashEntry | None:
        """The entry called ``name``, or ``None`` if that is not an entry's name."""
        return self._entry(name, strict=False)

    def _entry(self, name: str, *, strict: bool) -> TrashEntry | None:
        """`read_entry`; ``strict``: raise what a manifest that cannot be read raised."""
        found = TRASH_NAME_RE.fullmatch(name)
        if found is None:
            return None
        path = self.path / name
        # A link is never followed (it may lead into another data root): listed by its name.
        linked = path.is_symlink()
        manifest = {"reason": LINKED} if linked else self._manifest(path, strict=strict)
        if (
            manifest
            and manifest.get("reason") not in (LINKED, UNREADABLE)
            and manifest_changed(manifest, hashed=self.root.hashed)
        ):
            # Its title was listed as the session's when it was deleted, whatever an edit
            # made it (rows67): read as a damaged manifest is, by its name alone.
            log.warning(
                "trash entry %s: its %s is not what its delete wrote (%s); listed by its "
                "name alone, and `app data check` names it (trash-no-manifest)",
                name,
                TRASH_MANIFEST,
                MANIFEST_CHANGED,
            )
            manifest = {}
        return TrashEntry(
            name=name,
            path=path,
            kind="file" if found.group(3) else "session",
            session_id=found.group(2),
            file=manifest.get("file"),
            deleted_at=datetime.strptime(found.group(1), _TIME_FORMAT).replace(tzinfo=UTC),
            reason=manifest.get("reason", "unknown"),
            title=manifest.get("title"),
            since_boot=_boot_of(manifest.get("boot")),
            remedy=_linked_remedy(path) if linked else None,
        )

    @staticmethod
    def _manifest(path: Path, *, strict: bool) -> dict[str, Any]:
        """The manifest of the entry at ``path`` (`_entry`), ``{}`` for a damaged one."""
        try:
            manifest = json_loads(read_regular(path / TRASH_MANIFEST))
        except (*MISSING_MANIFEST, ValueError):
            manifest = {}
        except OSError:
            if strict:
                raise
            # Mode 000, another user's, or a read that fails (EIO, ESTALE): one such entry
            # once failed the whole listing, and POST /trash/empty with it, the remedy a full
            # disk's refusal names (red team 39 for EIO). Listed by its name; `check` reports
            # it (`permission-denied`, `unreadable`), and a restore that may need it refuses
            # (`latest`).
            manifest = {"reason": UNREADABLE}
        if not isinstance(manifest, dict):
            # JSON of another shape is as unreadable as a torn file: listed by its name, not
            # a crash of the trash listing, of restore, of empty-trash and of `check` (which
            # every server start-up runs).
            manifest = {}
        return manifest

    def read_manifest(self, entry: TrashEntry) -> TrashManifest:
        manifest: TrashManifest = json_loads(read_regular(entry.path / TRASH_MANIFEST))
        return manifest

    def empty(self, older_than: timedelta | None, *, via: str) -> list[TrashEntry]:
        """Remove entries for good (all, or those deleted longer ago than ``older_than``)."""
        self.root.ensure_held()
        now, here = datetime.now(UTC), _since_boot()

        def old_enough(entry: TrashEntry) -> bool:
            if older_than is None:
                return True
            if not entry.deleted_at <= now - older_than:
                return False
            if here is not None and entry.since_boot is not None:
                boot, seconds = entry.since_boot
                if boot == here[0]:
                    # Made in this boot: old enough on the boot clock too, which no step of
                    # the wall clock moves. An entry named while the clock was behind (a
                    # board that boots before NTP) was emptied as old once NTP set the clock
                    # right, minutes after its delete; and a clock set far ahead made every
                    # entry old enough (red team 35). The younger of the two ages counts: a
                    # boot clock offset in a time namespace errs only towards keeping.
                    return here[1] - seconds >= older_than.total_seconds()
            return True

        listed = [entry for entry in self.entries() if old_enough(entry)]
        # never follow anything out of the trash
        chosen = [e for e in listed if e.path.parent == self.path and e.reason != LINKED]
        for entry in listed:
            if entry.reason != LINKED:
                continue
            # Left, and "removed 0 trash entries" said of a trash that still listed it.
            with contextlib.suppress(OSError):  # gone since the listing: nothing to say
                log.warning(
                    "empty-trash left %s: a symbolic link where a trash entry belongs, never "
                    "followed (%s)",
                    entry.path,
                    link_remedy(entry.path, "remove the link, then empty the trash again"),
                )
        state = self.root.store_state
        # .trash/ and the audit log are opened first: once an entry has left the trash, a
        # process out of descriptors must not answer "nothing was changed".
        with self.root.prepare(
            self.path, audit=True, items=len(chosen), frees_space=True
        ) as prepared:
            # What an empty-trash killed after its renames left out of the trash: finished
            # here, with this one's audit line (it left them for a repair to find, and a
            # read-only check after this one reported them, exit 65; red team 34).
            with state.emptying_lock:
                left = [name for name in self._emptying_names() if name not in state.emptying]
                state.emptying.update(left)
            try:
                return self._empty(chosen, left, prepared, older_than, via)
            finally:
                with state.emptying_lock:
                    state.emptying.difference_update(left)

    def _emptying_names(self) -> list[str]:
        try:
            with os.scandir(self.path) as entries:
                return sorted(
                    e.name
                    for e in entries
                    if e.name.startswith(EMPTYING_PREFIX) and e.is_dir(follow_symlinks=False)
                )
        except FileNotFoundError:
            return []

    def _remove_and_audit(
        self,
        taken: list[str],
        prepared: Prepared,
        left: list[str],
        removed: list[TrashEntry],
        older_than: timedelta | None,
        via: str,
    ) -> tuple[bool, list[str]]:
        """Remove the bytes of the entries ``taken`` out of the trash, write the line that
        names them, then remove their emptied directories; whether the line was written, and
        the entries of ``left`` (an earlier run's) whose bytes went.

        Each entry's directory goes after the line that names it: removed with its bytes, a
        kill (or a power cut) before the line removed the entries for good and recorded that
        nowhere. Left, it is named by the next `empty-trash` (``finished``) or `check
        --repair` (``trash-emptying``), which audit it (red team 51). An empty directory frees
        no space the line waits for.
        """
        unfinished = set()
        for name in taken:
            try:
                _remove_contents(self.path / name)
            except OSError as error:
                # Out of the trash already (the rename before): `check` finishes it.
                unfinished.add(name)
                log.warning(
                    "could not finish removing %s yet (%s); `app data check --repair` finishes "
                    "it once that is resolved (a server's start-up runs it)",
                    name,
                    refusal_words(error, self.root.path),
                )
        if taken:
            prepared.sync(self.path)
        # Only those whose bytes went: one an earlier empty-trash left that this one could not
        # empty either (out of descriptors again) was named "finished" in every line until
        # one did, its bytes still there (red team 71 on the HTTP contract).
        done = [n.removeprefix(EMPTYING_PREFIX) for n in left if n not in unfinished]
        finished = {"finished": done} if done else {}
        # After the bytes are gone: on a full disk, the line needs the space this freed.
        written = prepared.audit(
            "empty-trash",
            self.path,
            count=len(removed),
            entries=[e.name for e in removed],
            older_than=None if older_than is None else older_than.total_seconds(),
            via=via,
            **finished,
        )
        if not written and taken:
            # The line could not be written (a full disk, EIO at its write or fsync): its
            # emptied directories are the only trace of the removal in the root. Removed
            # as after a written line, the entries were gone for good and recorded in the
            # server's log alone, and `app data check` said "clean" (red team 63). Left,
            # they are named by the next `empty-trash` or by `check --repair` (a server's
            # start-up), which write the line, as after a kill before it.
            log.warning(
                "empty-trash left %s in %s, emptied, for the audit line it could not write: "
                "the next `empty-trash`, or `app data check --repair` (a server's start-up), "
                "writes it and removes them",
                ", ".join(taken),
                self.path,
            )
            return False, done
        # Not synced: an empty directory a power cut brings back is finished as one a kill
        # left, and a failed fsync here would answer a change that was made as one that failed.
        for name in taken:
            with contextlib.suppress(OSError):
                (self.path / name).rmdir()  # what could not be emptied stays for `check`
        return written, done

    def _empty(
        self,
        chosen: list[TrashEntry],
        left: list[str],
        prepared: Prepared,
        older_than: timedelta | None,
        via: str,
    ) -> Emptied:
        removed = Emptied()
        stopped: OSError | None = None
        state = self.root.store_state
        for entry in chosen:
            # One rename takes the whole entry out of the trash before any byte of it
            # goes: a crash in the middle of rmtree left a restorable half (a session
            # missing some of its files) that `check` could only leave for a human; now
            # it finishes it.
            # Under the entry's session's lock, which a delete, a replace and a restore
            # take: listed before it, an entry restored meanwhile failed the whole
            # empty-trash with a bare FileNotFoundError, and one a delete had made but
            # not yet filled was taken away from under it, its bytes left among the
            # session's blobs (red team 33). One gone meanwhile is not removed here.
            with self.root.store_state.lock_for(entry.session_id):
                if not lexists(entry.path):
                    continue
                if state.being_audited(entry.name):
                    # A session's delete made it, and has not written its audit line yet:
                    # removed now, the log named its removal before its making (red team 50).
                    # Left, as an entry made after this empty-trash began.
                    continue
                emptying = f"{EMPTYING_PREFIX}{entry.name}"
                with state.emptying_lock:
                    state.emptying.add(emptying)
                try:
                    entry.path.rename(self.path / emptying)
                except OSError as error:
                    with state.emptying_lock:
                        state.emptying.discard(emptying)
                    if not removed:
                        raise
                    stopped = error
                    break
            removed.append(entry)
        if removed:
            prepared.sync(self.path)
        names = [f"{EMPTYING_PREFIX}{entry.name}" for entry in removed]
        try:
            written, done = self._remove_and_audit(
                [*left, *names], prepared, left, removed, older_than, via
            )
            removed.finished = tuple(done)
        finally:
            with state.emptying_lock:
                state.emptying.difference_update(names)
        if stopped is not None:
            cause, maybe_done = partway_cause(stopped)
            raise StoppedPartwayError(
                doing="empty-trash",
                done=len(removed),
                total=len(chosen),
                cause=cause,
                where="removed for good",
                fix=f"{PARTWAY_RESOLVE}, then empty the trash again to remove the rest",
                # Its line refused too: not "audited" (red team 73 on regress c).
                **(
                    {}
                    if written
                    else {
                        "audited": unaudited(
                            self.root.lines_lost[-1],
                            SERVER_LOG if self.root.kind == "server" else COMMAND_LOG,
                        )
                    }
                ),
                **(
                    {
                        "rest": "the entry it stopped at may be removed too (the filesystem "
                        "may have made the call it failed: `app data check` says), and the "
                        "rest are unchanged"
                    }
                    if maybe_done
                    else {}
                ),
            ) from stopped
        return removed
