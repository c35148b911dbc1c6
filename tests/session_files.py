"""A ``session.json`` edited by hand knowingly, for the tests that change one on the disk.

Since red team 65, ``session.json`` keeps the SHA-256 of the id, title, metadata and creation
time its create acknowledged (``content_sha256``, `app.store.records.content_sha256`), and a
session whose file no longer matches it is damage (500 ``session_unreadable``, `app data
check`'s ``session-unreadable``). The tests that change a title on the disk to see that a
change is read afresh (the caches of session.json, the watch) make the change an operator
would make on purpose: the text edited, and the key put right for it.

Since rt-regress66b a file's record keeps one too, of its name, size, SHA-256 and upload time
(`app.store.records.record_sha256`): the tests that change a record on the disk to see how
the app reads it (a time of another form, a size changed under a cache) make the same edit
(`record_edited`, `by_hand`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from app.store.records import CONTENT_KEY, content_sha256, keyed_record, manifest_sha256

_KEPT = re.compile(rb'("' + CONTENT_KEY.encode() + rb'": ")([0-9a-f]{64})(")')


def edited(raw: bytes, old: bytes, new: bytes) -> bytes:
    """``raw`` (a session.json) with ``old`` replaced by ``new`` once, and its
    ``content_sha256`` made that of the edited content: the same size if ``old`` and ``new``
    are, so that an edit in place keeps the file's size."""
    assert raw.count(old) == 1, (old, raw)
    changed = raw.replace(old, new)
    digest = content_sha256(json.loads(changed)).encode()
    made, count = _KEPT.subn(lambda found: found.group(1) + digest + found.group(3), changed)
    assert count == 1, raw
    return made


def record_edited(raw: bytes, old: bytes, new: bytes) -> bytes:
    """``raw`` (a file's record) with ``old`` replaced by ``new`` once, and its
    ``content_sha256`` made that of the edited fields (`edited`, for a record)."""
    assert raw.count(old) == 1, (old, raw)
    changed = raw.replace(old, new)
    digest = by_hand(json.loads(changed))[CONTENT_KEY].encode()
    made, count = _KEPT.subn(lambda found: found.group(1) + digest + found.group(3), changed)
    assert count == 1, raw
    return made


def by_hand(record: Mapping[str, Any]) -> dict[str, Any]:
    """A file's record as an edit made on purpose leaves it: its ``content_sha256`` that of
    the fields it now has (none where they cannot be hashed, as `keyed_record` writes)."""
    return dict(keyed_record(record))


def manifest_by_hand(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A trash entry's ``trash.json`` as an edit made on purpose leaves it: its
    ``content_sha256`` that of the fields it now has (`app.store.records.manifest_sha256`),
    as a delete writes it (rows67)."""
    fields = {key: value for key, value in manifest.items() if key != CONTENT_KEY}
    return {**fields, CONTENT_KEY: manifest_sha256(fields)}


def session_by_hand(session: Mapping[str, Any]) -> dict[str, Any]:
    """A ``session.json`` written by hand as a create writes it: with its
    ``content_sha256``, which a root this build laid out requires of every one (rows67)."""
    fields = {key: value for key, value in session.items() if key != CONTENT_KEY}
    return {**fields, CONTENT_KEY: content_sha256(fields)}
