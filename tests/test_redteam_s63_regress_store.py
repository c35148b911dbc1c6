"""Red team 63 on regress, the store (branch rt-regress25): see docs/explanation/attacks/.

What broke: `app data check`'s ``stamp-unaudited`` (red team 63, integrity) reported a
restamp whose ``restamp`` line is in the log as written, or was rotated away as logs are:

- a copy of the log with no dated line (logrotate's ``copytruncate`` leaves ``audit.jsonl``
  empty until the next change, and rotates an empty log by default, ``ifempty``) was taken
  for a log that reaches back before the stamp: every other copy beginning after it, the
  rotation that removed the line was reported as a restamp whose line was never written;
- a copy named as logrotate's ``extension .jsonl`` names it (``audit-20261206.jsonl.gz``,
  ``audit.1.jsonl``) was not read, by ``stamp-unaudited`` nor by ``trash-unaudited``;
- a line dated before its stamp by more than a minute (the clock stepped back between the
  two) was not the stamp's line.

Each time `--repair` wrote a second ``restamp`` line, "recovered", for a hand-over the log
had recorded. What changed: a copy without a dated line says nothing either way; the rotated
copies' names include the ``extension`` forms; and the ``restamp`` line names the stamp it
records (``details.stamp``: the stamp's ``created_at``), which ties the two whatever the clock
did (a line without it, an earlier release's, is matched by its time as before).

Each on the app's own code (no server: these are a store's steps), on a real root.
"""

from __future__ import annotations

import gzip
import json
import lzma
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_redteam_s63_integrity import checked, config, root

from app.config import Config
from app.dataroot import AUDIT_FILE, STAMP_FILE, restamp
from app.errors import BadRequestError
from app.storage import open_storage

__all__ = ["config", "root"]  # the fixtures: a testing profile on a local root


def restamped(config: Config, root: Path) -> dict[str, object]:
    """A root of testing's, taken from development's by `app data restamp`, its line written."""
    with open_storage(config, writer=True, kind="maintenance", wanted="test it"):
        pass
    stamp = json.loads((root / STAMP_FILE).read_text())
    (root / STAMP_FILE).write_text(json.dumps({**stamp, "profile": "development"}))
    made = restamp(config, "development")
    assert [json.loads(x)["operation"] for x in lines(root)][-1] == "restamp"
    return made


def lines(root: Path) -> list[str]:
    return (root / AUDIT_FILE).read_text().splitlines()


def a_change(config: Config) -> None:
    """One change, whose lines follow the stamp's."""
    with open_storage(config, writer=True, kind="maintenance", wanted="test it") as store:
        sid = store.create_session("later")["id"]
        store.put_file(sid, "a.txt", b"acknowledged")
        store.delete_file(sid, "a.txt")


def copytruncate(root: Path, name: str, *, compress: bool = True) -> Path:
    """logrotate's ``copytruncate`` (``compress``): the log copied to ``name``, then emptied."""
    log = root / AUDIT_FILE
    copy = root / name
    if compress:
        copy.write_bytes(gzip.compress(log.read_bytes()))
    else:
        shutil.copyfile(log, copy)
    log.write_bytes(b"")
    return copy


def test_a_restamp_rotated_away_by_copytruncate_is_not_reported(config: Config, root: Path) -> None:
    restamped(config, root)
    # logrotate, daily, `copytruncate`, `dateext`, `compress`, `rotate 1`: the line is in
    # the first copy, which the second day's rotation removes.
    first = copytruncate(root, "audit.jsonl-20261206.gz")
    assert checked(config) == []
    a_change(config)
    copytruncate(root, "audit.jsonl-20261207.gz")
    first.unlink()
    # Before: "stamp-unaudited ... without its restamp line": the emptied log, which holds
    # no line, was taken for a log that reaches back before the stamp.
    assert checked(config) == []
    # An empty log rotated as well (`ifempty`, logrotate's default) says nothing either.
    copytruncate(root, "audit.jsonl-20261208", compress=False)
    assert checked(config) == []


def test_copies_named_by_logrotate_s_extension_are_read(config: Config, root: Path) -> None:
    restamped(config, root)
    a_change(config)  # a trash entry, whose line rotates with the restamp's
    # `extension .jsonl`: the copy keeps the extension last (`audit-20261206.jsonl.gz`).
    copytruncate(root, "audit-20261206.jsonl.gz")
    # Before: both lines in a copy `check` did not read: a stamp-unaudited and a
    # trash-unaudited finding, each of whose repairs wrote its line a second time.
    assert checked(config) == []
    copytruncate(root, "audit.1.jsonl", compress=False)
    assert checked(config) == []
    # `compresscmd xz` (`compressext .xz`): read as gzip's copies are.
    (root / "audit-20261206.jsonl.xz").write_bytes(
        lzma.compress(gzip.decompress((root / "audit-20261206.jsonl.gz").read_bytes()))
    )
    (root / "audit-20261206.jsonl.gz").unlink()
    # A copy damaged (cut short) is passed over, as a damaged gzip one: no traceback.
    (root / "audit.jsonl.3.xz").write_bytes(b"\xfd7zXZ\x00cut")
    assert checked(config) == []


def test_a_restamp_line_dated_before_its_stamp_by_a_stepped_clock_is_its_line(
    config: Config, root: Path
) -> None:
    made = restamped(config, root)
    # The clock stepped back ten minutes between the stamp and its line (NTP, a VM resumed):
    # the line as it was written then.
    text = lines(root)
    line = json.loads(text[-1])
    assert line["details"]["stamp"] == made["created_at"]
    when = datetime.fromisoformat(str(made["created_at"])) - timedelta(minutes=10)
    line["time"] = when.isoformat()
    (root / AUDIT_FILE).write_text("\n".join([*text[:-1], json.dumps(line)]) + "\n")
    # Before: stamp-unaudited, its repair a second line "recovered".
    assert checked(config) == []


def test_metadata_no_backend_can_store_is_refused_by_the_store_s_own_api(config: Config) -> None:
    nested: object = 1
    for _ in range(2000):
        nested = {"d": nested}
    with open_storage(config, writer=True, kind="maintenance", wanted="test it") as store:
        before = store.session_ids()
        # Before: NaN stored (and its listing not encodable), the surrogates and the nesting
        # bare UnicodeEncodeError and RecursionError; on PostgreSQL, NaN refused as "the
        # app's tables are not as the app made them", a surrogate stored.
        for title, metadata, said in [
            ("t", {"a": float("nan")}, "metadata is not JSON (Out of range float values are"),
            ("t", {"\udc00": 1}, "metadata contains the unpaired surrogate U+DC00, which is not"),
            ("t\ud800", {}, "title contains the unpaired surrogate U+D800, which is not text"),
            ("t", {"x": nested}, "metadata is nested too deep to be written as JSON (past"),
        ]:
            with pytest.raises(BadRequestError) as refused:
                store.create_session(title, metadata)
            assert refused.value.message.startswith(said), refused.value.message
            assert "nothing was stored" in refused.value.message
        assert store.session_ids() == before
