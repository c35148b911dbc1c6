"""Red team 33 on integrity: decisions made from what was read before the lock that guards
them (a real data root; threads of one process, the gap forced with a hook, never by luck).

Each test runs the other change in another thread at the exact moment the code under test
has read what it decides from and has not yet taken the session's lock, and joins it before
going on: the widest gap a thread switch can fall in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from app.errors import AppError
from app.store import Store


class Gap:
    """Runs another change in another thread in a gap of the code under test, and waits
    until that change has ended or waits for a session's lock (which the code under test
    may hold, once fixed: then the change goes on when the lock is let go)."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.changed = threading.Condition()
        self.others: list[threading.Thread] = []
        self.blocked = False
        self.errors: list[BaseException] = []
        state = store.sessions.state
        lock_for = state.lock_for
        gap = self

        class Told:
            def __init__(self, lock: Any) -> None:
                self.lock = lock

            def __enter__(self) -> None:
                if not self.lock.acquire(blocking=False):
                    if threading.current_thread() in gap.others:
                        with gap.changed:
                            gap.blocked = True
                            gap.changed.notify_all()
                    self.lock.acquire()

            def __exit__(self, *exc: object) -> None:
                self.lock.release()

        monkeypatch.setattr(state, "lock_for", lambda session_id: Told(lock_for(session_id)))

    def run(self, during: Callable[[], object]) -> None:
        done: list[bool] = []

        def body() -> None:
            try:
                during()
            except BaseException as error:  # re-raised by join()
                self.errors.append(error)
            finally:
                with self.changed:
                    done.append(True)
                    self.changed.notify_all()

        other = threading.Thread(target=body)
        self.others.append(other)
        other.start()
        with self.changed:
            self.changed.wait_for(lambda: self.blocked or bool(done))

    def after_first(self, owner: Any, name: str, during: Callable[[], object]) -> None:
        """``owner.name(...)`` runs ``during`` in the gap after its first call returns."""
        original = getattr(owner, name)
        ran: list[bool] = []

        def hooked(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if not ran:
                ran.append(True)
                self.run(during)
            return result

        setattr(owner, name, hooked)

    def join(self) -> None:
        for other in self.others:
            other.join()
        if self.errors:
            raise self.errors[0]


def _read(store: Store, session_id: str, name: str) -> bytes:
    handle, _ = store.open_file(session_id, name)
    with handle:
        return handle.read()


def test_a_session_restore_racing_a_restore_and_delete_restores_the_newest_copy(
    app_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The session is in the trash (copy 1). A restore of it chooses that entry; before it
    # takes the session's lock, another thread restores the session, adds a file and
    # deletes it again (copy 2). In any order of the two the restore brings back copy 2
    # (or, first, copy 1 and the other thread's restore is refused): it failed instead,
    # its chosen entry emptied under it.
    store = app_store
    assert isinstance(store, Store)
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.txt", b"copy 1")
    store.delete_session(session_id)

    def restore_change_delete() -> None:
        store.restore(session_id)
        store.put_file(session_id, "b.txt", b"added in copy 2")
        store.delete_session(session_id)

    gap = Gap(store, monkeypatch)
    gap.after_first(store.trash, "latest", restore_change_delete)
    try:
        session = store.restore(session_id)
    except AppError as error:
        pytest.fail(f"refused, though the trash held the session: {error.code}: {error}")
    gap.join()
    assert [f["name"] for f in session["files"]] == ["a.txt", "b.txt"]
    assert _read(store, session_id, "b.txt") == b"added in copy 2"
    assert store.list_trash() == []
    assert store.check(repair=False).findings == []


def test_a_repairing_check_racing_an_upload_keeps_the_acknowledged_bytes(
    app_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `check --repair` (`Store.check(repair=True)`, the store API's) listed a session's
    # records, then its blobs; an upload that committed in between left a blob that no
    # record it had read named, which it moved to the trash as "an upload that stopped
    # before its commit (never acknowledged)". The upload's 201 stood, and its file then
    # had no bytes: a download was 404, and the next check removed the record.
    import app.check

    store = app_store
    assert isinstance(store, Store)
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "old.txt", b"there before")
    gap = Gap(store, monkeypatch)
    listing = app.check._listing

    def hooked(directory: Any) -> Any:
        found = listing(directory)
        if directory.name == "records" and not gap.others:
            gap.run(lambda: store.put_file(session_id, "new.txt", b"acknowledged"))
        return found

    monkeypatch.setattr(app.check, "_listing", hooked)
    report = store.check(repair=True)
    gap.join()
    assert report.findings == []
    assert _read(store, session_id, "new.txt") == b"acknowledged"
    assert store.list_trash() == []
    assert store.check(repair=False).findings == []


def test_a_repairing_check_racing_a_replace_keeps_the_replaced_version_restorable(
    app_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The replace had made its trash entry (the manifest, naming the old bytes) and not yet
    # switched the record: the check took the entry for one "that stopped before its
    # commit" and removed it. The replace then switched, found no entry for the old bytes
    # and left them among the session's blobs, and the next check moved them to the trash
    # as an orphan "never acknowledged": `restore --file` no longer found the version.
    store = app_store
    assert isinstance(store, Store)
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.txt", b"version 1")
    gap = Gap(store, monkeypatch)
    gap.after_first(store.trash, "new_entry", lambda: store.check(repair=True))
    store.put_file(session_id, "a.txt", b"version 2", replace=True)
    gap.join()
    assert _read(store, session_id, "a.txt") == b"version 2"
    [kept] = store.list_trash()
    assert (kept.file, kept.reason) == ("a.txt", "replace")
    assert (kept.path / "a.txt").read_bytes() == b"version 1"
    assert store.check(repair=False).findings == []


def test_an_empty_trash_racing_a_file_delete_leaves_no_bytes_behind(
    app_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `POST /trash/empty` and `DELETE` of a file, on one server, the empty-trash begun
    # while the delete has made its trash entry (the manifest) and not yet moved its bytes
    # in. Held: the empty-trash first waits for the session's lock to finish half-made
    # entries (red team 31), so it lists the entry whole. (Listed without the lock, an entry
    # a delete made later was taken away from under it; the removal now takes the lock.)
    store = app_store
    assert isinstance(store, Store)
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.txt", b"deleted")
    gap = Gap(store, monkeypatch)
    gap.after_first(store.trash, "new_entry", store.empty_trash)
    store.delete_file(session_id, "a.txt")
    gap.join()
    assert store.get_session(session_id)["files"] == []
    assert store.list_trash() == []
    assert store.check(repair=False).findings == []


def test_an_empty_trash_racing_a_restore_removes_the_rest(
    app_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An entry restored between the listing of the trash and its removal: the empty-trash
    # failed with a bare FileNotFoundError and removed nothing else.
    store = app_store
    assert isinstance(store, Store)
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.txt", b"restored")
    store.put_file(session_id, "b.txt", b"emptied")
    store.delete_file(session_id, "a.txt")
    store.delete_file(session_id, "b.txt")
    gap = Gap(store, monkeypatch)
    gap.after_first(store.trash, "entries", lambda: store.restore(session_id, file="a.txt"))
    removed = store.empty_trash()
    gap.join()
    assert [e.file for e in removed] == ["b.txt"]
    assert _read(store, session_id, "a.txt") == b"restored"
    assert store.list_trash() == []
    assert store.check(repair=False).findings == []


def _replicas(database_url: str, s3_engine: Any, blob_url: str) -> Any:
    from datetime import timedelta

    from app.remote import pg
    from app.remote.store import RemoteStore

    def replica() -> RemoteStore:
        objects = s3_engine.objects(blob_url)
        objects.open("production")
        return RemoteStore(database_url, objects, "production", orphan_grace=timedelta(0))

    pg.open_database(database_url, "production")
    return replica


def test_a_remote_delete_waiting_behind_a_replace_trashes_the_newer_version_as_newer(
    database_url: str, s3_engine: Any, blob_url: str
) -> None:
    # Found by the randomized history on two replicas (RT_HISTORY_REMOTE=1, seed 7081). A
    # delete dated its trash row before it took the session's row lock, behind which a
    # replace of the same file was committing: the version the delete trashed (the
    # replace's, newer) sorted older than the one the replace trashed, and a restore
    # brought back the older, a state no order of the two gives.
    replica = _replicas(database_url, s3_engine, blob_url)
    with replica() as one, replica() as two:
        session_id = one.create_session("s")["id"]
        one.put_file(session_id, "a.txt", b"version 1")
        change = two.files.db.change
        ran: list[bool] = []

        def hooked(*args: Any, **kwargs: Any) -> Any:
            # The delete is on its way to the session's lock: the replace commits first.
            if not ran:
                ran.append(True)
                other = threading.Thread(
                    target=lambda: one.put_file(session_id, "a.txt", b"version 2", replace=True)
                )
                other.start()
                other.join()
            return change(*args, **kwargs)

        two.files.db.change = hooked  # type: ignore[method-assign]
        two.delete_file(session_id, "a.txt")
        assert ran
        one.restore(session_id, file="a.txt")
        handle, _ = one.open_file(session_id, "a.txt")
        with handle:
            assert handle.read() == b"version 2"


def test_a_remote_replica_whose_clock_is_behind_still_trashes_a_version_as_newer(
    database_url: str, s3_engine: Any, blob_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same restore, with the replace made by a replica whose clock is 10 s ahead of the
    # one that deletes the new version after it: dated by each replica's clock alone, the
    # deleted version sorted older than the replaced one.
    from datetime import timedelta

    import app.remote.db
    import app.remote.files

    replica = _replicas(database_url, s3_engine, blob_url)
    with replica() as one, replica() as two:
        session_id = one.create_session("s")["id"]
        one.put_file(session_id, "a.txt", b"version 1")
        clock = app.remote.db.now
        with monkeypatch.context() as ahead:
            for module in (app.remote.db, app.remote.files):  # the name, wherever bound
                ahead.setattr(module, "now", lambda: clock() + timedelta(seconds=10), raising=False)
            one.put_file(session_id, "a.txt", b"version 2", replace=True)
        two.delete_file(session_id, "a.txt")
        two.restore(session_id, file="a.txt")
        handle, _ = two.open_file(session_id, "a.txt")
        with handle:
            assert handle.read() == b"version 2"
