"""Red team 67 on regress, integrity's marks (branch rt-regress67b): see
docs/explanation/attacks.md, Layer 7, "Red team 67 on regress, integrity's marks".

What the repair that marks a root (`app data check --repair`, run by every server start-up)
left keyless, and what then read as damage: an acknowledged version in the trash refused.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from app.dataroot import STAMP_FILE
from app.store.records import CONTENT_KEY

HASHED_KEY = "content_sha256_since"  # spelt out: these tests run against the build before


def invoke(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def _earlier_build(root: Path) -> None:
    """The root's stamp as a build from before the mark left it."""
    stamp = json.loads((root / STAMP_FILE).read_bytes())
    del stamp[HASHED_KEY]
    (root / STAMP_FILE).write_text(json.dumps(stamp, indent=2))


def test_a_file_trashed_before_keys_is_restorable_after_the_repair_marks_the_root(
    app_config: Any,
) -> None:
    """A file uploaded before records had keys and deleted before the mark: its trash.json's
    ``entry`` (the version's record) has none. The repair keyed the manifest but not its
    entry, then marked the root, and the restore of that acknowledged version was refused as
    damage (`entry_changed`), and `app data check` named it for a human."""
    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        sid = store.create_session("kept", {})["id"]
        made = store.put_file(sid, "a.txt", io.BytesIO(b"bytes"))
        entry = store.delete_file(sid, "a.txt")
    root = app_config.data_root
    _earlier_build(root)
    manifest = entry.path / "trash.json"
    found = json.loads(manifest.read_bytes())
    del found[CONTENT_KEY]
    del found["entry"][CONTENT_KEY]  # a record from before keys: `trashed_entry` kept none
    manifest.write_text(json.dumps(found, indent=2))

    code, out = invoke("data", "check", "--repair")
    assert code == 0, out
    assert HASHED_KEY in json.loads((root / STAMP_FILE).read_bytes())
    assert CONTENT_KEY in json.loads(manifest.read_bytes())["entry"]
    code, out = invoke("data", "check")
    assert code == 0, out  # before: 65, the entry named as damaged
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        store.restore(sid, file="a.txt")  # before: refused (trash_copy_lost)
        assert store.list_files(sid) == [made]
