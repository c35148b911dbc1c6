"""Red team 48 on integrity: system calls failed under real processes, at every step.

Faults injected with ``strace --inject`` into one call of a real ``app serve`` (attached for
a workload, then restarted, checked and read back) or of a real command. What broke:

- ``app data check --repair`` (and a server's start-up check, and the repair a restore or an
  ``empty-trash`` runs first) whose fsync failed right after one of its repairs' changes (the
  rename that finishes a replace's move into the trash). The repair was reported "not done",
  "nothing was done about them" (exit 65, "needs a human"), though its rename was made; and
  the run went on changing the root after the failed fsync (finishing the next entry's move,
  reported "not done" too), where every other change of the process is refused once an fsync
  has failed (PostgreSQL's "fsyncgate"). A failed fsync now stops the repair there: the
  command exits 74 (``storage_sync_failed``: the change it began may be made), the repair it
  made is logged as made, nothing more is changed, and a server's start-up serves reads
  with its writes stopped, saying why.
- A file's record whose bytes are gone from ``blobs/`` (``fsck`` moved them to
  ``lost+found``; a backup restored without its large files). Every repair, and so every
  server's start-up, removed the record for good, saying "the audit line keeps it": the line
  kept its path only. The name, size and SHA-256 that let an operator find the bytes (in
  ``lost+found``, in a backup) and the ``uploaded_at`` were gone; the file left its session's
  listing without a word to anyone, and bytes put back later were an upload "never
  acknowledged" to the next repair, which moved them to the trash for ``empty-trash`` to
  remove. (The PostgreSQL backend never repairs its ``record-without-object``.) The repair
  now moves the record into the trash, whose ``trash.json`` keeps all of it: ``check`` names
  the entry and the SHA-256 to put back, a restore is refused naming them, and once the
  bytes are back in the entry the restore brings the file back, checked against its SHA-256.
  The same file under a live server: a download and a ``DELETE`` were 404 "has no file ...
  GET lists its files" of a listed file; a download is now ``file_damaged`` and a ``DELETE``
  moves it to the trash. A restore whose only copy lost its bytes said "no file in the
  trash"; it names the entry. For a file named ``trash.json`` the remedy said to put the
  bytes back as ``trash.json``, over the entry's manifest; it names ``.trash.json``.
- ``POST /trash/empty`` whose rename of an entry was interrupted (``EINTR``) after others
  were removed: 500 ``stopped_partway`` with the server's paths in the message, saying "the
  rest are unchanged" of an entry the filesystem may have moved. It names the errno only,
  and says the entry it stopped at may be removed too; ``app data purge`` alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import forked_app
import httpx
from faults import attach, detach, needs_strace, strace_prefix
from test_server_e2e import app_env, run_app

from app.config import Config, load
from app.storage import open_storage
from app.testing import LiveServer
from app.testing.live_server import stop_server


def _half_replaced(config: Config, title: str) -> tuple[str, Path, Path]:
    """A session whose replace of a.txt crashed after its commit, before the old bytes moved
    into the trash (what `app data check` reports as trash-unfinished): its id, the entry,
    and where the old bytes wait among the session's blobs."""
    with open_storage(config, writer=True, kind="tests", wanted="make") as store:
        sid = store.create_session(title)["id"]
        store.put_file(sid, "a.txt", f"{title} version 1".encode())
        store.put_file(sid, "a.txt", f"{title} version 2".encode(), replace=True)
    (entry,) = (config.data_root / ".trash").glob(f"*-{sid}-file-*")
    blob = json.loads((entry / "trash.json").read_bytes())["blob"]
    waiting = config.data_root / "sessions" / sid / "blobs" / blob
    (entry / "a.txt").rename(waiting)
    return sid, entry, waiting


def _app_under_strace(args: list[str], inject: str, path: Path) -> list[str]:
    """``python -m app *args`` under strace, ``inject`` failing one call that touches ``path``
    (seccomp: the process stops only at the traced call)."""
    return [*strace_prefix(inject, path, seccomp=True), sys.executable, "-m", "app", *args]


@needs_strace
def test_a_repair_whose_fsync_fails_stops_there_and_says_its_change_may_be_made(
    app_config: Config,
) -> None:
    root = app_config.data_root
    first, entry, waiting = _half_replaced(app_config, "first")
    second, later, still = _half_replaced(app_config, "second")
    assert entry.name < later.name  # the check finishes the first entry first
    env = {**os.environ, "APP_DATA_ROOT": str(root)}
    command = _app_under_strace(["data", "check", "--repair"], "fsync:error=EIO:when=1", entry)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    # The rename into the entry was made; its fsync failed. Not "not done", not 65.
    assert done.returncode == 74, done.stdout + done.stderr
    assert "storage_sync_failed" in done.stderr or "an fsync" in done.stderr, done.stderr
    assert "it may be made" in done.stderr, done.stderr
    assert "nothing was done" not in done.stdout + done.stderr
    assert (entry / "a.txt").read_bytes() == b"first version 1"
    assert not waiting.exists()
    # Nothing changed after the failed fsync: the next entry still waits for its bytes.
    assert still.read_bytes() == b"second version 1"
    assert (later / "trash.json").exists() and not (later / "a.txt").exists()
    # The repair made is in the command's log, as a line the audit log should hold.
    assert "check-repair" in done.stderr and "trash-unfinished" in done.stderr, done.stderr
    # Without the fault, the next repair finishes the rest; both old versions are kept.
    again = run_app("data", "check", "--repair", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (later / "a.txt").read_bytes() == b"second version 1"
    with open_storage(app_config, writer=False, kind="tests", wanted="read") as store:
        for sid, title in ((first, "first"), (second, "second")):
            handle, _ = store.open_file(sid, "a.txt")
            with handle:
                assert handle.read() == f"{title} version 2".encode()


@needs_strace
def test_a_failed_call_at_each_commit_point_answers_truly_and_the_repair_keeps_every_byte(
    tmp_path: Path,
) -> None:
    # The hand sweep (docs/explanation/attacks/) walked N over every rename, unlink,
    # fsync, mkdir and write of seven write paths; these are its commit points, kept.
    root = tmp_path / "live-data"
    env = app_env(root)
    config = load("testing", environ=env)
    process, url = forked_app.start_server(env, root, tmp_path / "first.log")
    server = LiveServer(url, root, process.pid, config.api_token, tmp_path / "first.log", config)
    try:
        with httpx.Client(base_url=url, headers=server.headers, timeout=30) as http:
            sid = http.post("/sessions", json={"title": "faults"}).json()["id"]
            other = http.post("/sessions", json={"title": "to the trash"}).json()["id"]
            files = f"/sessions/{sid}/files"
            assert http.put(f"{files}/a.txt", content=b"a version 1").status_code == 201
            assert http.put(f"{files}/b.txt", content=b"b kept").status_code == 201
            assert http.put(f"{files}/gone.txt", content=b"lost+found").status_code == 201
            assert http.put(f"{files}/lost.txt", content=b"in a backup").status_code == 201
            records = root / "sessions" / sid / "records"
            for name in ("gone.txt", "lost.txt"):
                blob = json.loads((records / name).read_bytes())["blob"]
                (root / "sessions" / sid / "blobs" / blob).rename(tmp_path / name)
            # Deleted as any listed file is (it was 404 "no file"): its record goes into the
            # trash entry, which waits for the bytes; put back, the entry is whole.
            trashed = http.delete(f"{files}/lost.txt")
            assert trashed.status_code == 200, trashed.text
            (tmp_path / "lost.txt").rename(root / ".trash" / trashed.json()["trash"] / "lost.txt")
            # An empty-trash whose rename of its second entry is interrupted (EINTR: a
            # network filesystem mounted to allow it, which may have carried the call out).
            # It said "the rest are unchanged", with the server's paths, to the client.
            assert http.delete(f"/sessions/{other}").status_code == 200
            tracer = attach(server.pid, "rename:error=EINTR:when=2")
            try:
                emptied = http.post("/trash/empty")
            finally:
                detach(tracer)
            assert emptied.status_code == 500, emptied.text
            assert emptied.json()["code"] == "stopped_partway", emptied.text
            said = emptied.json()["message"]
            assert "empty-trash stopped after 1 of " in said, said
            assert str(root) not in said and "EINTR" in said, said
            assert "the entry it stopped at may be removed too" in said, said
            # A replace's second rename (its blob's first): the record's, its commit point.
            # strace's -P does not match a rename's destination, so it is counted.
            tracer = attach(server.pid, "rename:error=EIO:when=2")
            try:
                replaced = http.put(f"{files}/a.txt", content=b"a version 2")
            finally:
                detach(tracer)
            tracer = attach(server.pid, "unlink:error=EIO", records / "b.txt")
            try:
                deleted = http.delete(f"{files}/b.txt")
            finally:
                detach(tracer)
            for refused in (replaced, deleted):
                assert refused.status_code == 503, refused.text
                assert refused.json()["code"] == "storage_io_error", refused.text
                assert "not acknowledged" in refused.json()["message"]
            assert http.get(f"{files}/a.txt").content == b"a version 1"
            assert http.get(f"{files}/b.txt").content == b"b kept"
            assert http.put(f"{files}/a.txt", content=b"a version 3").status_code == 200
            # A replace whose fsync of records/ fails after its rename: made, never a 2xx,
            # and nothing after it acknowledged (fsyncgate).
            tracer = attach(server.pid, "fsync:error=EIO", records)
            try:
                synced = http.put(f"{files}/a.txt", content=b"a version 4")
            finally:
                detach(tracer)
            assert synced.status_code == 503, synced.text
            assert synced.json()["code"] == "storage_sync_failed", synced.text
            later = http.put(f"{files}/c.txt", content=b"never")
            assert later.json()["code"] == "storage_sync_failed", later.text
            # A listed file whose bytes were removed from outside the app (by the test, as
            # fsck would): named damaged, not 404 "no file ... GET lists its files".
            gone = http.get(f"{files}/gone.txt")
            assert gone.status_code == 500, gone.text
            assert gone.json()["code"] == "file_damaged", gone.text
            assert "removed from outside the app" in gone.json()["message"], gone.text
    finally:
        stop_server(process)
    # What the next start-up repairs (the failed fsync's replace left its old bytes to move
    # into the trash), then a check that finds the root clean and every acknowledged byte.
    repaired = run_app("data", "check", "--repair", env=env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    # gone.txt's record is in the trash now (`record-without-file`); its bytes go back there.
    (kept_record,) = (
        p for p in (root / ".trash").glob(f"*-{sid}-file-*")
        if json.loads((p / "trash.json").read_bytes())["file"] == "gone.txt"
    )  # fmt: skip
    (tmp_path / "gone.txt").rename(kept_record / "gone.txt")
    # Named until it is back in its session (red team 49: "clean" left it out for good).
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 65 and "file-lost-found" in checked.stdout, checked.stdout
    assert run_app("sessions", "restore", sid, "--file", "gone.txt", env=env).returncode == 0
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with open_storage(config, writer=False, kind="tests", wanted="read") as store:
        served = {}
        for entry in store.list_files(sid):
            handle, _ = store.open_file(sid, entry["name"])
            with handle:
                served[entry["name"]] = handle.read()
            assert entry["sha256"] == hashlib.sha256(served[entry["name"]]).hexdigest()
    assert served["b.txt"] == b"b kept"
    assert served["gone.txt"] == b"lost+found"
    assert served["a.txt"] in (b"a version 3", b"a version 4")  # 3 was acknowledged
    assert "c.txt" not in served
    # Every acknowledged version of a.txt is served or kept in the trash.
    kept = {p.read_bytes() for p in (root / ".trash").glob("*/a.txt")} | {served["a.txt"]}
    assert {b"a version 1", b"a version 3"} <= kept


def test_a_record_whose_bytes_are_gone_is_kept_in_the_trash_by_the_repair_not_removed(
    app_config: Config,
) -> None:
    root = app_config.data_root
    data = b"acknowledged bytes, moved to lost+found by fsck"
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        sid = store.create_session("lost bytes")["id"]
        store.put_file(sid, "x.txt", data)
        store.put_file(sid, "y.txt", b"kept")
        store.put_file(sid, "trash.json", b"a file of the manifest's name")
    record = json.loads((root / "sessions" / sid / "records" / "x.txt").read_bytes())
    lost_found = root.parent / "lost+found"
    lost_found.mkdir()
    (root / "sessions" / sid / "blobs" / record["blob"]).rename(lost_found / "#1234")
    named = json.loads((root / "sessions" / sid / "records" / "trash.json").read_bytes())
    (root / "sessions" / sid / "blobs" / named["blob"]).rename(lost_found / "#1235")
    env = app_env(root)
    repaired = run_app("data", "check", "--repair", env=env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "record-without-file" in repaired.stdout
    # The record is in the trash, whole, with the SHA-256 that finds the bytes again.
    entries = {
        json.loads((p / "trash.json").read_bytes())["file"]: p
        for p in (root / ".trash").glob(f"*-{sid}-file-*")
    }
    entry = entries["x.txt"]
    manifest = json.loads((entry / "trash.json").read_bytes())
    assert manifest["file"] == "x.txt"
    fields = ("name", "size", "sha256", "uploaded_at", "content_sha256")  # rt-regress66b: the key
    assert manifest["entry"] == {k: record[k] for k in fields}
    assert manifest["blob"] == record["blob"]
    # Reported, for a human, every time, naming the entry and the bytes to put back.
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 65, checked.stdout + checked.stderr
    assert entry.name in checked.stdout and "put the bytes back" in checked.stdout
    assert "into the entry as '.trash.json'" in checked.stdout, checked.stdout
    restore = ("sessions", "restore", sid, "--file", "x.txt")
    refused = run_app(*restore, env=env)
    assert refused.returncode == 65, refused.stdout + refused.stderr
    assert entry.name in refused.stderr
    # The operator finds the bytes by their SHA-256 and puts them back: restored, checked.
    assert hashlib.sha256((lost_found / "#1234").read_bytes()).hexdigest() == record["sha256"]
    (lost_found / "#1234").rename(entry / "x.txt")
    restored = run_app(*restore, env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    # A file named as the manifest is kept as .trash.json; the remedy said "as 'trash.json'",
    # over the manifest that holds the SHA-256 to find the bytes by.
    other = ("sessions", "restore", sid, "--file", "trash.json")
    refused = run_app(*other, env=env)
    assert "Put the bytes back into that entry as '.trash.json'" in refused.stderr, refused
    (lost_found / "#1235").rename(entries["trash.json"] / ".trash.json")
    assert run_app(*other, env=env).returncode == 0
    assert run_app("data", "check", env=env).returncode == 0
    with open_storage(app_config, writer=False, kind="tests", wanted="read") as store:
        files = {f["name"]: f for f in store.list_files(sid)}
        assert files["x.txt"]["sha256"] == record["sha256"]
        assert files["x.txt"]["uploaded_at"] == record["uploaded_at"]
        handle, _ = store.open_file(sid, "x.txt")
        with handle:
            assert handle.read() == data
