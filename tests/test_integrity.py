"""Integrity under faults (issue 9, items 1 to 4 and 11), with real servers and real disks.

A full disk is a real, small tmpfs filled with a file until the kernel says ENOSPC, then
shrunk to leave exactly the room a test needs; a read-only one is a real read-only bind
mount. Both need root (CI runs as root); elsewhere these tests skip, saying why.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engines
import head_start
import httpx
import pytest
from session_files import by_hand
from test_server_e2e import TLS, Server, app_env, open_upload, run_app, wait_for

from app import dataroot

PAGE = 4096


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start `app serve` subprocesses; whatever still runs is killed at the end."""
    started: list[Server] = []

    def start(env: dict[str, str]) -> Server:
        started.append(Server(env, tmp_path / f"server-{len(started)}.log"))
        return started[-1].wait_ready()

    yield start
    for server in started:
        if server.process.poll() is None:
            server.kill()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


#: What a small tmpfs is mounted from (its "source", which /proc/self/mountinfo shows, and
#: the read-only bind mounts made on it show too), followed by the identity of the process
#: whose run mounted it (PID namespace, pid, start time; tests/engines.py).
_SOURCE = "app-tests-tmpfs"


def _source(identity: str) -> str:
    return "@".join([_SOURCE, *identity.split()])


def _mounts() -> list[tuple[str, Path]]:
    """Every mount of this namespace: its source and its mount point (/proc/self/mountinfo,
    where spaces and the like are octal escapes, ``\\040``)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        mounts.append((fields[fields.index("-") + 2], Path(point)))
    return mounts


def _unmount_what_dead_runs_left() -> list[Path]:
    """Unmount (lazily: with the bind mounts on them) the small tmpfs of runs that are gone:
    a run killed mid-test (SIGKILL, a CI timeout's SIGTERM) ran no teardown, and its tmpfs
    stayed mounted in the pytest directory it left. Those it unmounted, deepest first."""
    ours = engines._process_identity(os.getpid())
    assert ours is not None
    dead = []
    for source, point in _mounts():
        owner = source.split("@")
        if owner[0] != _SOURCE or len(owner) != 4 or owner[1] != ours.split()[0]:
            continue  # not ours, or of another PID namespace: its pids cannot be checked
        if engines._process_identity(int(owner[2])) != " ".join(owner[1:]):
            dead.append(point)  # its run is gone
    dead.sort(key=lambda path: len(path.parts), reverse=True)
    for path in dead:
        umount(path)
    return dead


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs inside the sandbox, unmounted (lazily) at the end; those of runs killed
    before their end are unmounted first."""
    path = tmp_path / "fs"
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    _unmount_what_dead_runs_left()
    identity = engines._process_identity(os.getpid())
    assert identity is not None
    try:
        mount("-t", "tmpfs", "-o", "size=4m,mode=0700", _source(identity), str(path))
    except subprocess.CalledProcessError as error:
        pytest.skip(f"cannot mount a tmpfs here: {error.stderr.strip()}")
    yield path
    umount(path)


class Filler:
    """Fills a filesystem with one file, then leaves exactly `pages` free pages."""

    def __init__(self, fs: Path) -> None:
        self.fs = fs
        self.path = fs / "filler"

    def leave(self, pages: int) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                try:
                    os.write(fd, b"\0" * PAGE)
                except OSError as error:
                    assert error.errno == 28  # ENOSPC: the disk is full
                    break
            os.ftruncate(fd, os.fstat(fd).st_size - pages * PAGE)
        finally:
            os.close(fd)
        assert os.statvfs(self.fs).f_bavail == pages

    def remove(self) -> None:
        self.path.unlink()


def assert_refused_without_path(response: httpx.Response, status: int, code: str, root: Path):  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert str(root) not in body["message"]
    assert str(root.parent) not in body["message"]
    return body["message"]


def trash_entries(root: Path) -> list[str]:
    return sorted(p.name for p in (root / ".trash").iterdir())


def test_a_full_disk_is_507_changes_nothing_and_the_trash_can_be_emptied_while_serving(
    small_fs: Path,
    serve: Any,
) -> None:
    root = small_fs / "root"
    env = app_env(root)
    server = serve(env)
    filler = Filler(small_fs)
    upload = b"2" * (16 * PAGE)
    with server.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/a.txt", content=b"version 1").status_code == 201
        client.put(f"/sessions/{sid}/files/big.bin", content=b"b" * (64 * PAGE))
        assert client.delete(f"/sessions/{sid}/files/big.bin").status_code == 200
        before = client.get(f"/sessions/{sid}").json()
        entries = trash_entries(root)

        # Room for the upload and one page more, not for everything a replace writes:
        # the acknowledged bytes and their record must stay together (item 1).
        filler.leave(16 + 1)
        refused = client.put(f"/sessions/{sid}/files/a.txt", content=upload)
        message = assert_refused_without_path(refused, 507, "storage_full", root)
        assert "filesystem is full; nothing was changed" in message
        assert "POST /trash/empty" in message
        got = client.get(f"/sessions/{sid}/files/a.txt")
        assert (got.content, got.headers["etag"]) == (b"version 1", f'"{sha(b"version 1")}"')
        assert client.get(f"/sessions/{sid}").json() == before
        assert trash_entries(root) == entries  # nothing acknowledged moved to the trash

        # A new name with room for its bytes alone: refused, no orphan left behind.
        filler.remove()
        filler.leave(16)
        refused = client.put(f"/sessions/{sid}/files/new.txt", content=upload)
        assert_refused_without_path(refused, 507, "storage_full", root)
        assert client.get(f"/sessions/{sid}").json() == before

        # Completely full: deletes, creates and multipart uploads are 507, and a refused
        # delete leaves no empty trash entry (item 4).
        filler.remove()
        filler.leave(0)
        for response in (
            client.delete(f"/sessions/{sid}/files/a.txt"),
            client.delete(f"/sessions/{sid}"),
            client.post("/sessions", json={}),
            client.post(f"/sessions/{sid}/files", files={"file": ("m.txt", b"m" * PAGE)}),
        ):
            assert_refused_without_path(response, 507, "storage_full", root)
        assert trash_entries(root) == entries
        assert client.get(f"/sessions/{sid}").json() == before

        # Space comes back while the server runs: an explicit, audited, authenticated route.
        # The command is refused (the server holds the root) and says how to ask the server.
        command = run_app("data", "empty-trash", "--older-than", "1s", env=env)
        assert command.returncode == 75, command.stderr
        assert (
            "hint: to free space without stopping the server, ask it: curl -X POST "
            '-H "Authorization: Bearer '
        ) in command.stderr
        # The token as the command read it (red team 57: `$APP_API_TOKEN` was empty when a
        # settings file gave it).
        assert (
            f'print(load("testing").api_token)\')" '
            f'"http://127.0.0.1:{server.port}/trash/empty?older_than=1"'
        ) in command.stderr, command.stderr
        assert client.post("/trash/empty", headers={"Authorization": ""}).status_code == 401
        emptied = client.post("/trash/empty")
        assert emptied.status_code == 200, emptied.text
        assert emptied.json()["removed"] == len(entries)
        assert trash_entries(root) == []
        assert client.put(f"/sessions/{sid}/files/after.txt", content=b"ok").status_code == 201
    audit = [json.loads(x) for x in (root / "audit.jsonl").read_text().splitlines()]
    [line] = [x for x in audit if x["operation"] == "empty-trash"]
    assert (line["kind"], line["details"]["via"], line["details"]["count"]) == (
        "server",
        "http",
        len(entries),
    )
    filler.remove()
    assert server.stop() == 0
    check = run_app("data", "check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "clean" in check.stdout


def test_a_read_only_root_is_503_without_a_path_and_still_serves_reads(
    small_fs: Path, serve: Any
) -> None:
    root = small_fs / "root"
    server = serve(app_env(root))
    with server.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        client.put(f"/sessions/{sid}/files/a.txt", content=b"kept")
        # The lock file stays open for writing, so the root's own mount cannot turn
        # read-only; a bind of the root over itself does (a real read-only mount). One over
        # each directory the store writes in is a mount inside the root, refused as such
        # (red team 38): one over .trash/ alone let deletes commit and leave their bytes.
        ro = [root]
        try:
            for path in ro:
                mount("--bind", str(path), str(path))
                mount("-o", "remount,bind,ro", str(path))
            for response in (
                client.put(f"/sessions/{sid}/files/b.txt", content=b"x"),
                client.post(f"/sessions/{sid}/files", files={"file": ("m.txt", b"m")}),
                client.delete(f"/sessions/{sid}/files/a.txt"),
                client.delete(f"/sessions/{sid}"),
                client.post("/sessions", json={}),
            ):
                message = assert_refused_without_path(response, 503, "storage_read_only", root)
                assert "read-only; nothing was changed" in message
            assert client.get(f"/sessions/{sid}/files/a.txt").content == b"kept"
        finally:
            for path in ro:
                umount(path)
        assert client.put(f"/sessions/{sid}/files/b.txt", content=b"x").status_code == 201


def test_a_server_that_lost_its_lock_refuses_writes_at_once_and_a_second_one_spares_its_upload(
    serve: Any, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    # A poll an hour away: only the check every write makes can refuse in time.
    first = serve(app_env(root, APP_LOCK_CHECK_SECONDS="3600"))
    with first.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
    data = b"u" * 200_000
    sock = open_upload(first, f"PUT /sessions/{sid}/files/late", b"\r\n" + data[:1000], len(data))
    tmp = root / ".tmp"
    wait_for(lambda: any(tmp.iterdir()), "the upload to reach .tmp/")
    [in_flight] = list(tmp.iterdir())

    (root / ".server.lock").unlink()
    with first.client() as client:
        refused = client.post("/sessions", json={})
    message = assert_refused_without_path(refused, 503, "lock_lost", root)
    assert "lock file was deleted, so it refuses every write" in message

    second = serve(app_env(root))  # takes the root: the first one's lock file is gone
    assert in_flight.exists(), "the second server's clean-up deleted an upload in flight"
    sock.sendall(data[1000:])
    response = sock.makefile("rb").readline()
    sock.close()
    assert response.startswith(b"HTTP/1.1 503"), response
    assert first.wait_exit() == 70
    with second.client() as client:
        assert client.get(f"/sessions/{sid}").json()["files"] == []
        assert client.get("/sessions").json()["total"] == 1  # the refused create is not there
    assert not in_flight.exists()  # the first server removed its own upload


def test_an_upload_does_not_rewrite_anything_that_grows_with_the_number_of_files(
    app_store: Any,
) -> None:
    sid = app_store.create_session("many")["id"]
    for i in range(40):
        app_store.put_file(sid, f"f{i}", b"x")
    session_json = app_store.sessions_dir / sid / "session.json"
    before = session_json.stat()
    app_store.put_file(sid, "one-more", b"y")
    app_store.put_file(sid, "f0", b"z", replace=True)
    app_store.delete_file(sid, "f1")
    after = session_json.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    files = {f["name"]: f for f in app_store.get_session(sid)["files"]}
    assert len(files) == 40
    assert files["f0"]["sha256"] == sha(b"z")
    assert "f1" not in files


# --- crash leftovers: `app data check` and the start-up repair (item 2) ------------------


def crash_leftovers(config: Any) -> dict[str, Any]:
    """Every state a crash can leave, made on disk the way the interrupted code leaves it."""
    from app.dataroot import open_root
    from app.store import Store, new_session_id

    root = config.data_root
    with open_root(config, kind="tests") as opened:
        store = Store(opened)
        sid = store.create_session("kept")["id"]
        store.put_file(sid, "kept.txt", b"acknowledged")
        store.put_file(sid, "r.txt", b"old")
        store.put_file(sid, "r.txt", b"new", replace=True)
        gone = store.create_session("deleted")["id"]
        store.delete_session(gone)
        [replaced] = [e for e in store.list_trash() if e.kind == "file"]
        [deleted] = [e for e in store.list_trash() if e.kind == "session"]
        # A session delete that stopped before its move: the manifest alone.
        half = store.trash.new_entry(sid, "session", None, "delete", title="kept")
        # A file delete that stopped before its commit: the manifest names the live blob.
        record = json.loads((root / "sessions" / sid / "records" / "kept.txt").read_text())
        store.trash.new_entry(sid, "file", "kept.txt", "delete", blob=record["blob"])
    # A replace that stopped after its switch: the old bytes still among the blobs.
    manifest = json.loads((replaced.path / "trash.json").read_text())
    (replaced.path / "r.txt").rename(root / "sessions" / sid / "blobs" / manifest["blob"])
    # Audit lines never written: that replace's, and the session delete's.
    lines = (root / "audit.jsonl").read_text().splitlines(keepends=True)
    kept_lines = [x for x in lines if replaced.name not in x and deleted.name not in x]
    (root / "audit.jsonl").write_text("".join(kept_lines))
    # An empty entry, a temp file, a create that never finished, bytes without a record,
    # a record without bytes.
    (root / ".trash" / f"{half.name[:22]}-{new_session_id()}").mkdir()
    (root / ".tmp" / "upload-x.part").write_bytes(b"partial")
    staging = root / "sessions" / f".new-{new_session_id()}"
    staging.mkdir()
    (staging / "session.json").write_text("{}")
    (root / "sessions" / sid / "blobs" / new_session_id()).write_bytes(b"never acknowledged")
    ghost = {"name": "ghost", "size": 1, "sha256": "0" * 64, "uploaded_at": "", "blob": "0" * 32}
    (root / "sessions" / sid / "records" / "ghost").write_text(json.dumps(by_hand(ghost)))
    return {"sid": sid, "gone": gone, "replaced": replaced.name, "deleted": deleted.name}


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else sha(p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


def invoke(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def test_data_check_finds_every_crash_leftover_and_repair_reconciles_them(
    app_config: Any,
) -> None:
    made = crash_leftovers(app_config)
    root = app_config.data_root
    before = snapshot(root)
    code, out = invoke("data", "check")
    assert code == 65, out
    for problem in (
        "tmp-leftover  .tmp/upload-x.part",
        "unfinished-create  sessions/.new-",
        "trash-empty  .trash/",
        "trash-manifest-only  .trash/",
        "trash-unfinished  .trash/",
        f"trash-unaudited  .trash/{made['deleted']}",
        f"record-without-file  sessions/{made['sid']}/records/ghost",
        f"file-without-record  sessions/{made['sid']}/blobs/",
    ):
        assert problem in out
    assert out.count("trash-manifest-only") == 2
    assert "finding(s); `app data check --repair` reconciles them" in out
    assert snapshot(root) == before  # read-only: nothing changed, not even the lock file

    code, out = invoke("data", "check", "--repair")
    assert code == 0, out
    # Opening the root for the repair cleared .tmp/ (its own audit line); the rest is the
    # check's.
    assert "repaired 8 finding(s)" in out
    code, out = invoke("data", "check")
    # The record without bytes is no crash's leftover: its record waits in the trash for
    # them (red team 48), reported until a human puts them back or empties the trash.
    assert code == 65, out
    [left] = out.splitlines()[:-1]
    assert left.startswith("file-damaged  .trash/") and "'ghost'" in left, out

    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, write=False) as opened:
        store = Store(opened)
        path, entry = store.file_path(made["sid"], "r.txt")
        assert (path.read_bytes(), entry["sha256"]) == (b"new", sha(b"new"))
        assert store.file_path(made["sid"], "kept.txt")[0].read_bytes() == b"acknowledged"
        assert [f["name"] for f in store.get_session(made["sid"])["files"]] == [
            "kept.txt",
            "r.txt",
        ]
        trash = {e.name: e for e in store.list_trash()}
        assert (trash[made["replaced"]].path / "r.txt").read_bytes() == b"old"
        assert made["deleted"] in trash
        [orphan] = [e for e in trash.values() if e.reason == "orphan"]
        assert (orphan.path / orphan.file).read_bytes() == b"never acknowledged"
        [lost] = [e for e in trash.values() if e.reason == "lost"]
        assert lost.file == "ghost"
        assert len(trash) == 4
    audit = [json.loads(x) for x in (root / "audit.jsonl").read_text().splitlines()]
    recovered = {
        x["details"]["trash"]: x["operation"] for x in audit if x["details"].get("recovered")
    }
    assert recovered == {made["replaced"]: "replace-file", made["deleted"]: "trash-session"}
    [summary] = [x for x in audit if x["operation"] == "check-repair"]
    assert len(summary["details"]["findings"]) == 8
    [cleared] = [x for x in audit if x["operation"] == "clear-tmp"]
    assert cleared["details"]["removed"] == ["upload-x.part"]


def test_data_check_repair_is_refused_while_a_server_holds_the_root(
    serve: Any, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    env = app_env(root)
    serve(env)
    result = run_app("data", "check", "--repair", env=env)
    assert result.returncode == 75, result.stderr
    assert "cannot repair the data root: data root" in result.stderr
    result = run_app("data", "check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


# --- kill -9 at random instants (the "done when") -------------------------------


KILLS = 15


class Writer(threading.Thread):
    """Creates, uploads, replaces and deletes on its own sessions until its server dies.

    `model` holds what the server acknowledged; `pending` the change in flight when the
    connection broke, which may or may not have happened.
    """

    def __init__(self, url: str, token: str, rng: random.Random, model: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60, verify=TLS
        )
        self.rng = rng
        self.model = model
        self.pending: tuple[str, ...] | None = None

    def run(self) -> None:
        try:
            while True:
                self.step()
        except httpx.TransportError:
            return  # killed

    def step(self) -> None:
        rng, model = self.rng, self.model
        data = rng.randbytes(rng.choice([1, 4096, 65536, 300_000]))
        if not model or rng.random() < 0.15:
            self.pending = ("create",)
            sid = self.client.post("/sessions", json={"title": "crash"}).json()["id"]
            model[sid] = {}
        else:
            sid = rng.choice(sorted(model))
            files = model[sid]
            choice = rng.random()
            if choice < 0.05:
                self.pending = ("delete-session", sid)
                assert self.client.delete(f"/sessions/{sid}").status_code == 200
                del model[sid]
            elif choice < 0.2 and files:
                name = rng.choice(sorted(files))
                self.pending = ("delete-file", sid, name)
                assert self.client.delete(f"/sessions/{sid}/files/{name}").status_code == 200
                del files[name]
            else:
                name = rng.choice([*sorted(files), f"f{rng.randrange(1000)}.bin"])
                self.pending = ("put", sid, name, sha(data))
                response = self.client.put(f"/sessions/{sid}/files/{name}", content=data)
                assert response.status_code in {200, 201}, response.text
                files[name] = data
        self.pending = None


def listed_ids(client: httpx.Client) -> set[str]:
    ids: set[str] = set()
    params: dict[str, Any] = {"limit": 1000}
    while True:
        page = client.get("/sessions", params=params).json()
        ids |= {s["id"] for s in page["items"]}
        if not page["next"]:
            return ids
        params["after"] = page["next"]


def verify(
    client: httpx.Client, models: list[dict[str, Any]], pending: list[tuple[str, ...] | None]
) -> None:
    """Every acknowledged session and file is there and byte-identical; resolve `pending`."""
    listed = listed_ids(client)
    extra = listed - {sid for model in models for sid in model}
    for model, change in zip(models, pending, strict=True):
        kind = change[0] if change else None
        if kind == "create" and extra:
            sid = min(extra)  # a create in flight may have happened; it has no files yet
            extra.discard(sid)
            model[sid] = {}
        if kind == "delete-session" and change and change[1] not in listed:
            del model[change[1]]
        for sid, files in model.items():
            session = client.get(f"/sessions/{sid}")
            assert session.status_code == 200, f"acknowledged session {sid} lost"
            listed_files = {f["name"]: f for f in session.json()["files"]}
            if kind in {"put", "delete-file"} and change and change[1] == sid:
                name = change[2]
                if name not in listed_files:
                    files.pop(name, None)  # a delete that happened, or a new name that did not
                elif kind == "put" and listed_files[name]["sha256"] == change[3]:
                    files[name] = client.get(f"/sessions/{sid}/files/{name}").content
            assert set(listed_files) == set(files), f"session {sid}: files differ"
            for name, data in files.items():
                got = client.get(f"/sessions/{sid}/files/{name}")
                assert got.status_code == 200
                assert got.content == data, f"{sid}/{name}: not the acknowledged bytes"
                etag = f'"{listed_files[name]["sha256"]}"'
                assert got.headers["etag"] == f'"{sha(data)}"' == etag
    assert extra == set(), "sessions nobody acknowledged"


def kill_9_at_random_instants(tmp_path: Path, environ: dict[str, str]) -> None:
    """`KILLS` servers on one root, each killed with SIGKILL at a random instant while two
    writers work on it, then a last one: every acknowledged change is there, nothing else,
    and the root is clean. Raises what the test reports (its seed in a note: rerun with
    ``random.Random(seed)``). A serial run starts this when collection ends, on the core its
    tests leave idle (tests/head_start.py): ~11 s of kills and recoveries beside them."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    root = tmp_path / "data"
    env = app_env(root, base=environ)
    started: list[Server] = []

    def serve() -> Server:
        # Forked from the zygote (tests/forked_app.py) when it fits: it recovers the root
        # the last one left, without paying for the app's imports at each of the kills.
        started.append(Server(env, tmp_path / f"server-{len(started)}.log"))
        return started[-1].wait_ready()

    models: list[dict[str, Any]] = [{}, {}]
    pending: list[tuple[str, ...] | None] = [None, None]
    try:
        for _ in range(KILLS):
            server = serve()
            with server.client() as client:
                verify(client, models, pending)
            writers = [
                Writer(server.url, server.token, random.Random(rng.random()), model)
                for model in models
            ]
            for writer in writers:
                writer.start()
            time.sleep(rng.uniform(0.05, 0.3))  # when to kill: not a timing assertion
            server.kill()
            for writer in writers:
                writer.join()
            pending = [writer.pending for writer in writers]
            assert "NOT repaired" not in server.output
        server = serve()
        with server.client() as client:
            verify(client, models, pending)
        assert server.stop() == 0
        assert "NOT repaired" not in server.output
        assert sum(len(m) for m in models) > 0
        check = run_app("data", "check", env=env)
        assert (check.returncode, check.stdout.strip()) == (
            0,
            f"clean: data root {root} is consistent",
        ), check.stdout + check.stderr
    except BaseException as error:
        error.add_note(f"seed {seed}: rerun with random.Random({seed})")
        raise
    finally:
        for server in started:
            if server.process.poll() is None:
                server.kill()


def test_kill_9_at_random_instants_loses_nothing_acknowledged(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    head_start.result(
        request.config, "kill-9", lambda: kill_9_at_random_instants(tmp_path, dict(os.environ))
    )


def test_a_session_written_before_records_and_blobs_is_migrated_by_the_repair(
    app_config: Any,
) -> None:
    from app.dataroot import open_root
    from app.store import Store

    root = app_config.data_root
    with open_root(app_config, kind="tests") as opened:
        sid = Store(opened).create_session("old")["id"]
    directory = root / "sessions" / sid
    meta = json.loads((directory / "session.json").read_text())
    (directory / "files").mkdir()
    listed = []
    for name, data in (("a.txt", b"first"), ("b.bin", b"second")):
        (directory / "files" / name).write_bytes(data)
        listed.append({"name": name, "size": len(data), "sha256": sha(data), "uploaded_at": "t"})
    (directory / "session.json").write_text(json.dumps({**meta, "files": listed}))

    code, out = invoke("data", "check")
    assert code == 65
    assert f"legacy-layout  sessions/{sid}" in out
    code, out = invoke("data", "check", "--repair")
    assert code == 0, out
    assert invoke("data", "check")[0] == 0
    with open_root(app_config, write=False) as opened:
        store = Store(opened)
        assert [f["sha256"] for f in store.get_session(sid)["files"]] == [
            sha(b"first"),
            sha(b"second"),
        ]
        assert store.file_path(sid, "b.bin")[0].read_bytes() == b"second"
    assert not (directory / "files").exists()
    assert "files" not in json.loads((directory / "session.json").read_text())


@pytest.mark.parametrize("linked", ["files", "blobs", "records"])
def test_the_migration_itself_refuses_a_linked_directory_and_moves_nothing(
    app_config: Any, tmp_path: Path, linked: str
) -> None:
    """`app data check` reports such a session and leaves it alone; the migration holds on
    its own too, for any other caller: it renames through every directory of a path."""
    from app.dataroot import open_root
    from app.errors import DataRootChangedError
    from app.store import Store

    elsewhere = tmp_path / "another-root"
    (elsewhere / "files").mkdir(parents=True)
    (elsewhere / "files" / "a.txt").write_bytes(b"theirs")
    for name in ("blobs", "records"):
        (elsewhere / name).mkdir()
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        sid = store.create_session("old")["id"]
        directory = app_config.data_root / "sessions" / sid
        meta = json.loads((directory / "session.json").read_text())
        listed = [{"name": "a.txt", "size": 6, "sha256": sha(b"theirs"), "uploaded_at": "t"}]
        meta = {**meta, "files": listed}
        (directory / "session.json").write_text(json.dumps(meta))
        for name in ("files", "blobs", "records"):
            if name == linked:
                (directory / name).symlink_to(elsewhere / name)
            elif name == "files":
                (directory / name).mkdir()
                (directory / name / "a.txt").write_bytes(b"theirs")
        before = sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*"))
        with pytest.raises(DataRootChangedError, match=f"{linked} is a symbolic link"):
            store.sessions.migrate_legacy(directory, meta)
    assert sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*")) == before
    assert (elsewhere / "files" / "a.txt").read_bytes() == b"theirs"


def test_the_small_tmpfs_of_a_run_killed_mid_test_is_unmounted_by_the_next(
    small_fs: Path, tmp_path: Path
) -> None:
    # A run that is gone (its process ended) and one that is still on (this one, small_fs).
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1) as gone:
        identity = engines._process_identity(gone.pid)
        assert identity is not None
    left = tmp_path / "left"
    left.mkdir()
    mount("-t", "tmpfs", "-o", "size=1m", _source(identity), str(left))
    (left / "sessions").mkdir()
    mount("--bind", str(left / "sessions"), str(left / "sessions"))  # as the read-only test
    try:
        assert {left, left / "sessions"} <= {point for _, point in _mounts()}
        assert _unmount_what_dead_runs_left() == [left / "sessions", left]
        points = {point for _, point in _mounts()}
        assert left not in points
        assert left / "sessions" not in points
        assert small_fs in points, "a live run's tmpfs is left alone"
    finally:
        umount(left)


# --- the mount table, read again when it changes ----------------------------------------------


def test_a_mount_made_or_removed_after_the_table_was_read_is_seen_at_the_next_open(
    small_fs: Path,
) -> None:
    # app.dataroot keeps the parsed mountinfo until the kernel says it changed (POLLPRI):
    # a mount inside a root made after any earlier open must still refuse the next one.
    assert dataroot.mounts_inside(small_fs) == []
    assert dataroot.filesystem_type(small_fs) == "tmpfs"
    inner = small_fs / "root" / ".trash"
    inner.mkdir(parents=True)
    identity = engines._process_identity(os.getpid())
    assert identity is not None
    mount("-t", "tmpfs", "-o", "size=1m,mode=0700", _source(identity), str(inner))
    try:
        assert dataroot.mounts_inside(small_fs) == [inner]
        assert dataroot.mounts_inside(small_fs / "root") == [inner]
    finally:
        umount(inner)
    assert dataroot.mounts_inside(small_fs) == []


_IN_A_NAMESPACE_OF_ITS_OWN = """
import ctypes, os, subprocess, sys
from pathlib import Path
from app import dataroot
directory = Path(sys.argv[1])
assert dataroot.mounts_inside(directory) == [], "before"  # the table, read and kept
if ctypes.CDLL(None, use_errno=True).unshare(0x00020000) != 0:  # CLONE_NEWNS
    sys.exit(3)
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
own = str(directory / "own")
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", own], check=True)
# The table kept is the old namespace's, where nothing changed: this one's must be read.
seen = dataroot.mounts_inside(directory)
sys.exit(0 if seen == [directory / "own"] else f"saw {seen}")
"""


def test_a_process_that_moves_to_a_mount_namespace_of_its_own_reads_its_table(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("a mount namespace and a mount need root (CI runs as root)")
    (tmp_path / "own").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _IN_A_NAMESPACE_OF_ITS_OWN, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 3:
        pytest.skip("unshare(CLONE_NEWNS) is not allowed here")
    assert done.returncode == 0, done.stderr
