"""A ``session.json`` edited by hand knowingly, for the tests that change one on the disk.

Since red team 65, ``session.json`` keeps the SHA-256 of the id, title, metadata and creation
time its create acknowledged (``content_sha256``, `app.store.records.content_sha256`), and a
session whose file no longer matches it is damage (500 ``session_unreadable``, `app data
check`'s ``session-unreadable``). The tests that change a title on the disk to see that a
change is read afresh (the caches of session.json, the watch) make the change an operator
would make on purpose: the text edited, and the key put right for it.
"""

from __future__ import annotations

import json
import re

from app.store.records import CONTENT_KEY, content_sha256

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
