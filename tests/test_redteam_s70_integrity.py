"""Red team 70 on integrity (branch rt-integrity70): see docs/explanation/attacks/.

What broke: a data root on a filesystem that folds case (exFAT through FUSE, Debian's
exfat-fuse; FAT, NTFS, APFS and ext4's or tmpfs's ``casefold`` directories fold alike). A
file's trash entry keeps its bytes under the file's own name beside the entry's manifest,
``trash.json``; red team 38 kept a file named ``trash.json`` as ``.trash.json``, but
``Trash.json`` is the manifest's name to such a filesystem. Its delete was answered 200 with
its entry, whose manifest its bytes had replaced: the trash listed the entry as of no file,
the file's 404 named no entry, `app sessions restore <id> --file Trash.json` was refused
(``trash_manifest_damaged``, "put trash.json back from a backup"), and the acknowledged
name, SHA-256 and upload time were gone with the manifest. A name that folds to the
manifest's is now kept as ``.<name>`` too (`app.store.records.bytes_in_entry`), and an entry
made before is still read under the file's own name (`entry_bytes`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_redteam_s59_guard import outside_any_run

from app.config import Config
from app.storage import open_storage

#: On an exFAT image (argv[2]) served by exfat-fuse at argv[1]/v, in this process's private
#: mount namespace: a root there, files whose names fold to the manifest's deleted and
#: replaced, then what the trash, a restore and `check` make of their entries.
_ON_EXFAT = r"""
import json, os, subprocess, sys
from pathlib import Path

work, image = map(Path, sys.argv[1:3])
mount = work / "v"
mount.mkdir()
device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                        capture_output=True, text=True).stdout.strip()
subprocess.run(["mount.exfat-fuse", device, str(mount)], check=True, capture_output=True)
subprocess.run(["losetup", "-d", device], check=True)  # detached once exfat-fuse lets go
from app.config import load
from app.errors import AppError
from app.storage import open_storage

def read(store, session, name):
    file, _ = store.open_file(session, name)
    with file:
        return file.read().decode()


seen = {}
try:
    with open_storage(load(serving=False), writer=True) as store:
        sid = store.create_session("folded", {})["id"]
        store.put_file(sid, "Trash.json", b"acknowledged, then deleted")
        seen["deleted"] = store.delete_file(sid, "Trash.json").name
        # As a crash leaves a delete after its commit: the bytes not yet in the entry.
        entry = mount / "root" / ".trash" / seen["deleted"]
        blob = json.loads((entry / "trash.json").read_bytes())["blob"]
        (entry / ".Trash.json").rename(mount / "root" / "sessions" / sid / "blobs" / blob)
        repaired = store.check(repair=True).findings
        seen["finished"] = [f.problem for f in repaired], sorted(os.listdir(entry))
        seen["trash"] = [[e.name, e.file, e.reason] for e in store.list_trash()]
        seen["said"] = store.deleted_entry(sid, "Trash.json")
        seen["check"] = [f.to_dict() for f in store.check().findings]
        try:
            store.restore(sid, file="Trash.json")
        except AppError as refused:
            seen["restore"] = [refused.code, " ".join(str(refused).split())]
        else:
            seen["restore"] = read(store, sid, "Trash.json")
            store.delete_file(sid, "Trash.json")
        store.put_file(sid, "TRASH.JSON", b"acknowledged, then replaced")
        store.put_file(sid, "TRASH.JSON", b"its replacement", replace=True)
        store.delete_file(sid, "TRASH.JSON")
        replaced = [e.name for e in store.list_trash() if e.reason == "replace"]
        seen["replaced"] = [f.to_dict() for f in store.check().findings], len(replaced)
        if replaced:  # before: none, the entry listed as of no file ("unknown")
            store.restore(sid, file="TRASH.JSON", entry=replaced[0])
            seen["older"] = read(store, sid, "TRASH.JSON")
        # A second name of the live file's, once folded: each read and change refused.
        refused = []
        for change in (
            lambda: store.put_file(sid, "trash.JSON", b"another", replace=True),
            lambda: store.open_file(sid, "Trash.JSON"),
            lambda: store.delete_file(sid, "trash.json"),
        ):
            try:
                change()
            except AppError as error:
                refused.append([error.code, " ".join(str(error).split())])
        seen["folded"] = refused
        seen["kept"] = read(store, sid, "TRASH.JSON"), [f.to_dict() for f in store.check().findings]
        # A copy that lost its bytes (removed by hand) is said to, not read from the manifest.
        lost = mount / "root" / ".trash" / store.delete_file(sid, "TRASH.JSON").name
        (lost / ".TRASH.JSON").unlink()
        try:
            store.restore(sid, file="TRASH.JSON")
        except AppError as error:
            seen["lost"] = [error.code, " ".join(str(error).split())]
finally:
    subprocess.run(["umount", str(mount)], check=True)
print("RESULTS", json.dumps(seen))
"""
#: As red team 64's test (`outside_any_run`): the run's sandbox refuses a data root on FUSE.


def _needs_exfat_fuse() -> None:
    needed = ("unshare", "losetup", "mkfs.exfat", "mount.exfat-fuse")
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in needed):
        pytest.skip("needs root, unshare, losetup, mkfs.exfat and mount.exfat-fuse (exfat-fuse)")
    if not Path("/dev/fuse").exists():
        pytest.skip("needs /dev/fuse for exfat-fuse")


def test_a_file_named_as_the_manifest_once_folded_keeps_its_entry_on_exfat(
    tmp_path: Path,
) -> None:
    _needs_exfat_fuse()
    image = tmp_path / "exfat.img"
    with image.open("wb") as made:
        made.truncate(8 << 20)
    subprocess.run(["mkfs.exfat", str(image)], check=True, capture_output=True)
    seen = outside_any_run(tmp_path, tmp_path / "v" / "root", _ON_EXFAT, str(tmp_path), str(image))
    said = json.dumps(seen, indent=1)
    deleted = seen["deleted"]
    # Before: [deleted, None, "unknown"], its manifest the file's bytes; so the replaced one.
    assert seen["trash"] == [[deleted, "Trash.json", "delete"]], said
    # The repair finishes the delete: before, it took the manifest for the bytes moved in.
    assert seen["finished"] == [["trash-unfinished"], [".Trash.json", "trash.json"]], said
    # Before: None (no entry holds it), and two trash-no-manifest findings.
    assert seen["said"] == deleted, said
    assert seen["check"] == [], said
    # Before: trash_manifest_damaged, "put ... trash.json back from a backup".
    assert seen["restore"] == "acknowledged, then deleted", said
    # Before: the replace's entry as damaged as the delete's.
    assert seen["replaced"] == [[], 1], said
    assert seen["older"] == "acknowledged, then replaced", said
    # Before: "its record is there but the app cannot read it (it was damaged or replaced
    # outside the app)", of a record nothing had damaged.
    folded = (
        "the data root's filesystem folds case, and takes that name for the session's file "
        "'TRASH.JSON', whose record it reads there, so nothing was changed. Give the file a "
        "name that no file of the session has in any case, or move the data root to a "
        "filesystem that keeps case (ext4, xfs, btrfs without casefold)"
    )
    assert [code for code, _ in seen["folded"]] == ["file_record_unreadable"] * 3, said
    for (_, message), (action, name) in zip(
        seen["folded"],
        [("store", "trash.JSON"), ("send", "Trash.JSON"), ("delete", "trash.json")],
        strict=True,
    ):
        assert message.startswith(f"cannot {action} file {name!r} of session "), said
        assert message.endswith(folded), said
    assert seen["kept"] == ["acknowledged, then replaced", []], said
    code, message = seen["lost"]
    assert code == "trash_copy_lost", said
    assert "has lost its bytes" in message, said


def test_an_entry_made_before_keeps_a_folded_name_s_bytes_under_it(app_config: Config) -> None:
    """An entry an earlier build made (the bytes under the file's own name, on a filesystem
    that keeps case) is read and restored as it was."""
    with open_storage(app_config, writer=True, kind="tests", wanted="an earlier entry") as store:
        sid = store.create_session("earlier", {})["id"]
        store.put_file(sid, "Trash.json", b"acknowledged by an earlier build")
        entry = store.delete_file(sid, "Trash.json")
        kept = Path(entry.path)
        assert sorted(os.listdir(kept)) == [".Trash.json", "trash.json"]
        assert [f.to_dict() for f in store.check().findings] == []
        (kept / ".Trash.json").rename(kept / "Trash.json")  # as an earlier build kept them
        assert store.deleted_entry(sid, "Trash.json") == entry.name
        assert [f.to_dict() for f in store.check().findings] == []
        store.restore(sid, file="Trash.json")
        file, _ = store.open_file(sid, "Trash.json")
        with file:
            assert file.read() == b"acknowledged by an earlier build"
