"""A data root whose path leaves too little room for the app's own paths (red team 20).

Linux refuses a path of more than 4095 bytes (ENAMETOOLONG), whatever each name's length.
A session's file record sits shallower than that file's trash entry, so under a long enough
root a file with a long name was accepted, and then could not be replaced whole, deleted,
or restored: each moved its bytes to a path the kernel refused, and `check` called them an
upload that was never acknowledged.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.config import load
from app.dataroot import DEEPEST_INSIDE
from app.errors import DataRootStateError
from app.storage import open_storage
from app.store import Store

_ROOM = 4095 - DEEPEST_INSIDE
NAME = "n" * 251 + ".txt"  # 255 bytes, the most a name may have


def root_of_length(base: Path, length: int) -> Path:
    path = str(base)
    while length - len(path) > 256:
        path += "/" + "d" * 200
    return Path(path + "/" + "r" * (length - len(path) - 1))


def test_a_root_at_the_limit_keeps_every_operation_on_a_longest_name_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = root_of_length(tmp_path, _ROOM)
    assert len(os.fsencode(root)) == _ROOM
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    with open_storage(load("testing"), writer=True, kind="tests", wanted="go deep") as store:
        assert isinstance(store, Store)
        session = store.create_session("deep")["id"]
        store.put_file(session, NAME, b"version 1")
        store.put_file(session, NAME, b"version 2", replace=True)
        store.delete_file(session, NAME)
        store.restore(session, file=NAME)
        store.delete_session(session)
        store.restore(session)
        store.delete_session(session)
        # The deepest path: a session with such a file, in the trash, being emptied.
        assert [e.kind for e in store.empty_trash()] == ["file", "session"]
        assert not store.check(repair=False).findings


def test_a_root_one_byte_deeper_is_refused_before_anything_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = root_of_length(tmp_path, _ROOM + 1)
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    with pytest.raises(DataRootStateError) as refused:
        open_storage(load("testing"), writer=True, kind="tests", wanted="go too deep")
    assert str(refused.value) == (
        f"data root {root}: its path is {_ROOM + 1} bytes long, and the deepest path the app "
        f"makes in it (a session in the trash with a file of a 255-byte name) would be "
        f"{_ROOM + 1 + DEEPEST_INSIDE}, past the system's limit of 4095: files could be stored "
        f"there that could never be deleted or restored; point data_root of profile 'testing' "
        f"at a path of at most {_ROOM} bytes (`app config` shows where it is set)"
    )
    assert not root.exists()
