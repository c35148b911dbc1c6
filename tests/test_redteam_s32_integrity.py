"""Red team 32 on integrity: concurrent maintenance of one file, and failures injected into
the real store's system calls (a real data root; threads of one process where the store's
own locks are what is tried).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from app.errors import AppError, BadRequestError
from app.store import Store


def _racing(store: Store, during: Any) -> None:
    """Run ``during()`` in another thread right after a restore has chosen its trash entry,
    before it takes the session's lock (the widest gap a thread switch can fall in)."""
    chosen = store.trash.latest
    ran: list[bool] = []

    def latest(session_id: str, file: str | None, **options: Any) -> Any:
        entry = chosen(session_id, file, **options)
        if not ran:
            ran.append(True)
            other = threading.Thread(target=during)
            other.start()
            other.join()
        return entry

    store.trash.latest = latest  # type: ignore[method-assign]


def test_a_restore_racing_a_delete_of_its_file_never_brings_back_an_older_version(
    app_store: Any,
) -> None:
    # Version 1 replaced (in the trash), version 2 deleted by another thread while a restore
    # of the file runs. Whichever came first, the restore may only bring back version 2 (the
    # delete first) or be refused (the file was there): version 1 back, version 2 in the
    # trash, is a state no order of the two gives.
    store = app_store
    assert isinstance(store, Store)
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.txt", b"version 1")
    store.put_file(session_id, "a.txt", b"version 2", replace=True)
    _racing(store, lambda: store.delete_file(session_id, "a.txt"))
    try:
        store.restore(session_id, file="a.txt")
    except BadRequestError:
        pytest.fail("refused, though the file was deleted before the restore took its lock")
    handle, _ = store.open_file(session_id, "a.txt")
    with handle:
        assert handle.read() == b"version 2"
    assert [(e.file, e.reason) for e in store.list_trash()] == [("a.txt", "replace")]
    assert store.check(repair=False).findings == []


def test_a_restore_racing_an_upload_of_its_file_is_refused_and_keeps_both(
    app_store: Any,
) -> None:
    # The other order: the name taken again meanwhile (an upload, not a replace). The
    # restore is refused as it is when it comes second, and the trash keeps what it held.
    store = app_store
    assert isinstance(store, Store)
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.txt", b"deleted")
    store.delete_file(session_id, "a.txt")
    _racing(store, lambda: store.put_file(session_id, "a.txt", b"uploaded meanwhile"))
    with pytest.raises(BadRequestError, match=r"has a file 'a\.txt' again"):
        store.restore(session_id, file="a.txt")
    handle, _ = store.open_file(session_id, "a.txt")
    with handle:
        assert handle.read() == b"uploaded meanwhile"
    [kept] = store.list_trash()
    assert (kept.path / "a.txt").read_bytes() == b"deleted"
    assert store.check(repair=False).findings == []


def test_restores_replaces_and_deletes_of_one_file_from_three_threads_lose_no_version(
    app_store: Any,
) -> None:
    # No gap forced: three threads race on one name, 30 changes each. Every version a
    # replace or an upload acknowledged is afterwards the file or a trash entry, whole, and
    # the root checks clean. Refusals (the file there or not, nothing in the trash) are the
    # races' ordinary answers.
    store = app_store
    assert isinstance(store, Store)
    session_id = store.create_session("s")["id"]
    store.put_file(session_id, "a.txt", b"version 0")
    acked = {b"version 0"}
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(30):
            data = f"version {n}.{i}".encode()
            try:
                if i % 3 == 0:
                    store.delete_file(session_id, "a.txt")
                elif i % 3 == 1:
                    store.put_file(session_id, "a.txt", data, replace=True)
                    with lock:
                        acked.add(data)
                else:
                    store.restore(session_id, file="a.txt")
            except AppError:
                pass

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = [(e.path / "a.txt").read_bytes() for e in store.list_trash()]
    if [f["name"] for f in store.get_session(session_id)["files"]] == ["a.txt"]:
        handle, _ = store.open_file(session_id, "a.txt")
        with handle:
            kept.append(handle.read())
    assert acked <= set(kept), acked - set(kept)
    assert len(kept) == len(set(kept)), "a version kept twice"
    assert store.check(repair=False).findings == []
