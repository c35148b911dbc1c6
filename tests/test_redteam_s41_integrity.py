"""Red team 41 on integrity: what a backup, a move or a dedup tool leaves in a data root.

Real servers on 127.0.0.1 and real commands on real files. What broke:

- A blob made a symbolic link (the bytes moved to another disk and linked back, a restore or
  a dedup tool that links equal files, as ``rdfind -makesymlinks`` does). A download said 404
  "has no file" of a file its listing showed, and ``app data check`` called the record one
  that "names bytes that are not there" and the link "bytes no record names ... never
  acknowledged": ``--repair`` removed the acknowledged file's record and moved the link to
  the trash as an orphan upload, for ``empty-trash`` to remove. The link is now left for a
  human (``file-damaged``, the record kept), naming where it leads and how to put the bytes
  back; a download is refused as damaged, naming the link.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from redteam_s19_http import blob_of
from test_server_e2e import Server, app_env, run_app

from app.config import Config
from app.store.ids import new_session_id


def test_a_blob_made_a_symbolic_link_is_left_for_a_human_and_never_repaired_away(
    app_config: Config, tmp_path: Path
) -> None:
    env = app_env(app_config.data_root)
    root = app_config.data_root
    moved = tmp_path / "other-disk"
    moved.mkdir()
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        with server.client() as http:
            session = http.post("/sessions", json={"title": "linked"}).json()["id"]
            for name in ("moved.txt", "gone.txt"):
                url = f"/sessions/{session}/files/{name}"
                assert http.put(url, content=name.encode() * 100).status_code == 201
            # One blob moved to another disk and linked back, one link whose target is gone.
            linked, dangling = blob_of(root, session, "moved.txt"), blob_of(root, session, "gone.txt")
            shutil.move(linked, moved / linked.name)
            os.symlink(moved / linked.name, linked)
            dangling.unlink()
            os.symlink(moved / "nothing-here", dangling)
            listed = [f["name"] for f in http.get(f"/sessions/{session}/files").json()["items"]]
            assert sorted(listed) == ["gone.txt", "moved.txt"]
            for name in listed:
                answer = http.get(f"/sessions/{session}/files/{name}")
                # Listed, yet 404 "has no file" contradicted the listing.
                assert answer.status_code == 500, answer.text
                assert answer.json()["code"] == "file_damaged"
                assert "a symbolic link" in answer.json()["message"]
    finally:
        server.stop()
    # And a link no record names, beside them (a dedup tool's, in a blob's shape).
    stray = linked.parent / new_session_id()
    os.symlink(moved / linked.name, stray)
    repaired = run_app("data", "check", "--repair", env=env)
    out = repaired.stdout + repaired.stderr
    assert repaired.returncode == 65, out
    # The records stay, the links stay where they are, nothing went to the trash.
    records = sorted(p.name for p in (linked.parent.parent / "records").iterdir())
    assert records == ["gone.txt", "moved.txt"]
    assert linked.is_symlink() and dangling.is_symlink() and stray.is_symlink()
    assert not list((root / ".trash").iterdir())
    assert "never acknowledged" not in out and "record-without-file" not in out, out
    for name, blob, target in (
        ("moved.txt", linked, moved / linked.name),
        ("gone.txt", dangling, moved / "nothing-here"),
    ):
        assert (
            f"file-damaged  sessions/{session}/records/{name}: the bytes of file {name!r} are "
            f"not there: their name holds a symbolic link (to {target}), not a regular file"
        ) in out, out
        assert f'`cp --remove-destination "$(readlink -f {blob})" {blob}`' in out
    assert (
        f"unknown-entry  sessions/{session}/blobs/{stray.name}: not a blob: a symbolic link "
        f"(to {moved / linked.name})"
    ) in out, out
    stray.unlink()
    # The remedy it names puts the bytes back: the file is whole again, the check clean.
    os.unlink(linked)
    shutil.copyfile(moved / linked.name, linked)
    dangling.unlink()
    dangling.write_bytes(b"gone.txt" * 100)
    assert hashlib.sha256(linked.read_bytes()).hexdigest() == hashlib.sha256(b"moved.txt" * 100).hexdigest()
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
