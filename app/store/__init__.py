"""The local backend: sessions and their files in a data root on this machine's disk.

One module per job: :mod:`~app.store.ids` (session ids), :mod:`~app.store.records` (the
layout and its typed records), :mod:`~app.store.store` (sessions and files, restore),
:mod:`~app.store.upload` (streamed uploads), :mod:`~app.store.trash` (the trash) and
:mod:`~app.store.concurrency` (what every Store on one root shares). The server and the
command line reach it through :mod:`app.storage` only.
"""

from __future__ import annotations

from app.names import MAX_NAME_BYTES, check_file_name
from app.storage import FileEntry, Page, SessionRecord, TrashEntry
from app.store.ids import check_session_id, new_session_id
from app.store.records import FileRecord
from app.store.store import MAX_METADATA_BYTES, MAX_TITLE_CHARS, Store
from app.store.upload import Upload

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_NAME_BYTES",
    "MAX_TITLE_CHARS",
    "FileEntry",
    "FileRecord",
    "Page",
    "SessionRecord",
    "Store",
    "TrashEntry",
    "Upload",
    "check_file_name",
    "check_session_id",
    "new_session_id",
]
