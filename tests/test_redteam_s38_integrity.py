"""Red team 38 on integrity: what a live server's root meets beside it.

- A bind mount made inside a live root (``mount --bind .trash .trash``, the first step of
  making a directory read-only, or a tmpfs at a session's ``blobs/``). Red team 20 refused a
  mount inside a root when it is opened, and every write compared the identities of
  ``sessions/``, ``.trash/`` and ``.tmp/``; a bind of a directory onto itself keeps its
  device and inode, and a mount deeper in is no directory compared. A replace and a delete
  were acknowledged with the old bytes left among the session's (the rename to the trash
  failed with EXDEV, and waited for a `check` that failed the same way), and a session's
  delete was a bare ``OSError`` (a 500). Every write now looks at the mount table when the
  kernel says it changed, and refuses (``data_root_changed``, naming the mount and the
  ``umount``); ``/health`` says so.
- A data root on overlayfs (a container's own layer) whose sessions came with the image (its
  lower layer): overlayfs renames such a directory only with ``redirect_dir``, and answers
  EXDEV. A session's delete was a bare 500 (a traceback from ``app data purge``), and so were
  ``empty-trash`` and a session's restore of entries from the image. EXDEV is now
  ``storage_cross_device`` (503, exit 74), saying that nothing was changed and naming both
  causes and their remedies.
- A file named ``trash.json``, a legal name. A trash entry keeps a deleted (or replaced)
  file's bytes under the file's own name, beside its manifest, ``trash.json``: the rename of
  the bytes went over the manifest. The delete was acknowledged, ``restore --file`` said the
  trash held no such file, and ``check --repair`` (every server start-up) removed the entry
  as "a file None that stopped before its commit", its bytes with it. Such a file's bytes are
  now kept as ``.trash.json`` in its entry, a name no file may have.
- A session the first build wrote (its files listed in ``session.json``, their bytes in
  ``files/``) with a name that build took and today's rule refuses: a no-break space (a
  name copied from a word processor), a trailing space, a zero-width space. Its migration
  to ``records/`` and ``blobs/`` raised "invalid file name ...: use a plain name", so
  ``app serve`` exited 65 before serving anything, and ``app data check --repair`` too.
  A name already stored is now held only to what keeps it one name in its directory
  (`check_stored_name`): migrated, listed, downloaded, replaced, deleted and restored under
  it; a new file is still held to today's rule. Same class: a list hand-edited to hold
  an entry no build wrote (``../evil``, ``7``) stopped the whole repair, and every start-up
  with it; such a session is now ``session-unreadable``, left for a human, and the rest of
  the root is migrated and served.
- A server under a limit of address space (``LimitAS=``, ``ulimit -v``), which refuses
  threads as a limit of tasks does: its refusals named ``TasksMax=`` and the pids limit only.

The children mount in a mount namespace of their own, so nothing outlives them.

Held, and kept: ``HEAD``, ``GET`` and a ``Range`` from the middle of a file, each during a storm
of replaces with versions of different sizes, every answer's ``ETag``, ``Content-Length``,
``Content-Range`` and ``Repr-Digest`` those of the one version whose bytes it sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from redteam_s19_http import one_server
from test_server_e2e import Server, app_env, run_app, wait_for

from app.config import Config
from app.storage import open_storage
from app.store import Store
from app.testing import LiveServer
from app.testing.live_server import published_port

needs_mounts = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mounting a filesystem takes root and unshare(1)",
)

_UNSHARED = ["unshare", "--mount", "--propagation", "private", sys.executable]

_MOUNT_UNDER_A_WRITER = """
import subprocess, sys
from app.config import load
from app.storage import open_storage

mount, session, how = sys.argv[1:]
with open_storage(load(), writer=True, kind="tests", wanted="use it") as store:
    if how == "bind":
        subprocess.run(["mount", "--bind", mount, mount], check=True)
    else:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", mount], check=True)
    for step in (
        lambda: store.put_file(session, "a.txt", b"version 2", replace=True),
        lambda: store.delete_file(session, "b.txt"),
        lambda: store.delete_session(session),
        lambda: store.create_session("new"),
    ):
        try:
            step()
        except Exception as error:
            print(type(error).__name__, error)
        else:
            print("made")
    subprocess.run(["umount", mount], check=True)
    store.put_file(session, "c.txt", b"after the umount")
    print("made")
"""


@needs_mounts
@pytest.mark.parametrize("how", ["bind", "tmpfs"])
def test_a_filesystem_mounted_inside_a_live_root_is_refused_at_the_next_write(
    app_config: Config, how: str
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("kept")["id"]
        store.put_file(session, "a.txt", b"version 1")
        store.put_file(session, "b.txt", b"b")
    mount = root / ".trash" if how == "bind" else root / "sessions" / session / "blobs"
    child = subprocess.run(
        [*_UNSHARED, "-c", _MOUNT_UNDER_A_WRITER, str(mount), session, how],
        capture_output=True,
        text=True,
        check=True,
    )
    refusal = (
        f"DataRootChangedError data root {root} changed while open: a filesystem was "
        f"mounted inside it since it was opened ({mount}; `umount {mount}`): the app moves "
        "data within the root by rename, which cannot cross a mount point (EXDEV), even one "
        "of the same filesystem. Nothing was changed; this process stops writing to it. Put "
        "the directory back (the app never uses symbolic links or mounts inside a data root) "
        "and restart"
    )
    assert child.stdout.splitlines() == [refusal] * 4 + ["made"], child.stderr
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert not store.check(repair=False).findings
        assert not store.list_trash()
        kept = {"a.txt": b"version 1", "b.txt": b"b", "c.txt": b"after the umount"}
        for name, held in kept.items():
            assert store.file_path(session, name)[0].read_bytes() == held


@needs_mounts
@pytest.mark.skipif(shutil.which("nsenter") is None, reason="needs nsenter(1)")
def test_a_live_server_refuses_writes_and_says_so_once_a_bind_mount_is_made_in_its_root(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    env = app_env(root)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        # In a mount namespace of its own, so the mount below dies with it.
        process = subprocess.Popen(
            [*_UNSHARED, "-m", "app", "serve", "--port", "0"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{published_port(root, process, log)}"
        token = env.get("APP_API_TOKEN", "testing-token-not-secret")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            wait_for(lambda: http.get("/health").status_code == 200, "the server's /health")
            session = http.post("/sessions", json={"title": "kept"}).json()["id"]
            files = f"/sessions/{session}/files"
            assert http.put(f"{files}/a.txt", content=b"version 1").status_code == 201
            trash = root / ".trash"
            mount = ["nsenter", "-t", str(process.pid), "-m", "mount", "--bind"]
            subprocess.run([*mount, str(trash), str(trash)], check=True)
            refused = http.put(f"{files}/a.txt", content=b"version 2")
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "data_root_changed"
            assert "mounted over" in refused.json()["message"]
            assert http.delete(f"{files}/a.txt").status_code == 503
            assert http.delete(f"/sessions/{session}").status_code == 503
            health = http.get("/health")
            assert health.status_code == 503
            assert health.json()["status"] == "writes_stopped"
            assert health.json()["reason"] == (
                "a filesystem was mounted inside the data root, at its .trash/ while the "
                "server ran: every change is refused until it is put back as it was"
            )
            assert http.get(f"{files}/a.txt").content == b"version 1"
            nsenter = ["nsenter", "-t", str(process.pid), "-m", "umount", str(trash)]
            subprocess.run(nsenter, check=True)
            assert http.get("/health").status_code == 200
            assert http.put(f"{files}/a.txt", content=b"version 2").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=60)
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert not store.check(repair=False).findings
        assert [entry.file for entry in store.list_trash()] == ["a.txt"]


_ON_AN_OVERLAY = """
import json, subprocess, sys
from app.config import load
from app.errors import storage_error
from app.storage import open_storage
from app.testing.live_server import published_port
import httpx

lower, upper, work, root, session, deleted = sys.argv[1:]
# Off, as the kernel's default is on many distributions (CONFIG_OVERLAY_FS_REDIRECT_DIR).
options = f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off"
subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, root], check=True)
with open_storage(load(), writer=True, kind="tests", wanted="use it") as store:
    for doing, step in (
        ("DELETE /sessions/" + session, lambda: store.delete_session(session)),
        ("restore " + deleted, lambda: store.restore(deleted)),
    ):
        try:
            step()
        except OSError as error:
            print(storage_error(error, doing))
for command in (["data", "purge"], ["data", "empty-trash"]):
    done = subprocess.run([sys.executable, "-m", "app", *command], capture_output=True, text=True)
    print(done.returncode, done.stderr.strip().splitlines()[-1])
with open(f"{root}/../serve.log", "wb") as log:
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", "0"], stdout=log, stderr=log
    )
try:
    url = f"http://127.0.0.1:{published_port(__import__('pathlib').Path(root), server, log.name)}"
    headers = {"Authorization": "Bearer testing-token-not-secret"}
    for _ in range(500):
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.TransportError:
            __import__("time").sleep(0.02)
    answer = httpx.delete(f"{url}/sessions/{session}", headers=headers)
    print(answer.status_code, json.dumps(answer.json()))
finally:
    server.terminate()
    server.wait()
"""


@needs_mounts
def test_a_session_from_an_overlays_lower_layer_is_refused_naming_the_cause(
    app_config: Config, tmp_path: Path
) -> None:
    if "overlay" not in Path("/proc/filesystems").read_text():
        pytest.skip("this kernel has no overlayfs")
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("from the image")["id"]
        store.put_file(session, "a.txt", b"kept")
        deleted = store.create_session("in the image's trash")["id"]
        store.delete_session(deleted)
    # The root as an image holds it: its lower layer; the container writes to the upper.
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    root.rename(lower)
    for directory in (root, upper, work):
        directory.mkdir()
    child = subprocess.run(
        [*_UNSHARED, "-c", _ON_AN_OVERLAY]
        + [str(p) for p in (lower, upper, work, root)]
        + [session, deleted],
        capture_output=True,
        text=True,
        check=False,
    )
    cause = (
        "the data root's filesystem refused to move it within the data root (EXDEV: a rename "
        "across filesystems); nothing was changed. Either a filesystem is mounted inside the "
        "data root (`findmnt -R` on it lists the mount: unmount it), or the data root lies on "
        "overlayfs (a container's own layer) and the directory came from a lower layer (the "
        "image), which overlayfs cannot rename without its redirect_dir option: keep the data "
        "root on a volume, then retry"
    )
    lines = child.stdout.splitlines()
    assert lines[:2] == [
        f"cannot DELETE /sessions/{session}: {cause}",
        f"cannot restore {deleted}: {cause}",
    ], child.stderr
    assert lines[2].startswith("74 ") and "EXDEV" in lines[2], lines
    assert lines[3].startswith("74 ") and "EXDEV" in lines[3], lines
    assert lines[4].startswith("503 ") and '"storage_cross_device"' in lines[4], lines
    # Nothing was changed: above the image's layer, only the lock and copies made unchanged.
    assert sorted(str(p.relative_to(upper)) for p in upper.rglob("*")) == [
        ".server.lock",
        ".trash",
        "audit.jsonl",
    ]
    assert (upper / "audit.jsonl").read_bytes() == (lower / "audit.jsonl").read_bytes()


def _address_space(pid: int) -> int:
    """What ``pid`` has mapped now (VmSize), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmSize for {pid}")


def test_a_create_refused_by_the_address_space_limit_names_that_limit(
    app_config: Config, tmp_path: Path
) -> None:
    # systemd's LimitAS=, `ulimit -v`: a thread reserves its stack and, with glibc, a malloc
    # arena of 64 MiB in the address space, so the limit refuses threads as TasksMax= does.
    # Under 1 GiB a server started 19 of its 40 worker threads and no committer: every
    # create was refused, naming TasksMax=, the pids limit and `ulimit -u` alone.
    server = Server(app_env(app_config.data_root), tmp_path / "server.log").wait_ready()
    try:
        limit = _address_space(server.pid) + 2 * 2**20  # less than one more thread's stack
        unlimited = resource.RLIM_INFINITY
        resource.prlimit(server.pid, resource.RLIMIT_AS, (limit, unlimited))  # the soft one
        with server.client() as http:
            refused = http.post("/sessions", json={"title": "never made"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "thread_limit"
        assert (
            f"an operator can raise that limit: its address space, which may not pass "
            f"{limit // 2**20} MiB (systemd's LimitAS=, `ulimit -v`): each thread reserves"
        ) in refused.json()["message"]
        resource.prlimit(server.pid, resource.RLIMIT_AS, (unlimited, unlimited))
        with server.client() as http:
            assert http.post("/sessions", json={"title": "made"}).status_code == 201
            assert [s["title"] for s in http.get("/sessions").json()["items"]] == ["made"]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(tmp_path_factory) as live:
        yield live


def test_head_get_and_a_middle_range_during_replaces_each_describe_one_version(
    server: LiveServer,
) -> None:
    versions = {}
    for n in range(5):
        data = bytes([n]) * (3000 * (n + 1) + n)
        versions[hashlib.sha256(data).hexdigest()] = data
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        session = http.post("/sessions", json={"title": "storm"}).json()["id"]
        url = f"/sessions/{session}/files/a.bin"
        assert http.put(url, content=next(iter(versions.values()))).status_code == 201
    done = threading.Event()

    def replace() -> None:
        with httpx.Client(base_url=server.url, headers=server.headers) as writer:
            while not done.is_set():
                for data in versions.values():
                    assert writer.put(url, content=data).status_code == 200

    writers = [threading.Thread(target=replace) for _ in range(2)]
    for writer in writers:
        writer.start()
    wrong = []
    try:
        with httpx.Client(base_url=server.url, headers=server.headers) as http:
            for _ in range(60):
                for answer in (
                    http.head(url),
                    http.get(url),
                    http.get(url, headers={"Range": "bytes=100-"}),
                ):
                    tag = answer.headers["etag"].strip('"')
                    data = versions.get(tag, b"")
                    digest = base64.b64encode(bytes.fromhex(tag)).decode()
                    if answer.request.method == "HEAD":
                        sent, length = None, len(data)
                    elif answer.status_code == 206:
                        sent, length = data[100:], len(data) - 100
                        if (
                            answer.headers["content-range"]
                            != f"bytes 100-{len(data) - 1}/{len(data)}"
                        ):
                            wrong.append(("content-range", answer.headers["content-range"]))
                    else:
                        sent, length = data, len(data)
                    if (
                        not data
                        or int(answer.headers["content-length"]) != length
                        or (sent is not None and answer.content != sent)
                        or answer.headers["repr-digest"] != f"sha-256=:{digest}:"
                    ):
                        wrong.append((answer.request.method, answer.status_code, answer.headers))
    finally:
        done.set()
        for writer in writers:
            writer.join()
    assert not wrong, wrong[:3]


def test_a_file_named_as_the_trash_manifest_is_deleted_replaced_and_restored_whole(
    app_config: Config, tmp_path: Path
) -> None:
    env = app_env(app_config.data_root)
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        with server.client() as http:
            session = http.post("/sessions", json={"title": "a JSON file"}).json()["id"]
            url = f"/sessions/{session}/files/trash.json"
            assert http.put(url, content=b'{"kind": "the user\'s"}').status_code == 201
            assert http.put(url, content=b"version 2").status_code == 200
            assert http.delete(url).status_code == 200
    finally:
        server.stop()
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # A start-up (its repair) between the delete and the restore, as a restart makes one.
    Server(env, tmp_path / "again.log").wait_ready().stop()
    restored = run_app("sessions", "restore", session, "--file", "trash.json", env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.file_path(session, "trash.json")[0].read_bytes() == b"version 2"
        # The version the replace put in the trash, whole (the check reads its bytes).
        assert [(e.file, e.reason) for e in store.list_trash()] == [("trash.json", "replace")]
        assert not store.check(repair=False).findings


@pytest.mark.parametrize("held", [b'{"kind": "the user\'s", "n": 1}', b"version 2"])
def test_an_entry_whose_manifest_an_earlier_build_overwrote_is_kept_for_a_human(
    app_store: Store, held: bytes
) -> None:
    # What a delete of a file named trash.json left before the fix: its bytes at the
    # manifest's name, nothing else in the entry. The repair (every start-up's) removed it.
    session = app_store.create_session("before the fix")["id"]
    app_store.put_file(session, "trash.json", b"bytes")
    entry = app_store.delete_file(session, "trash.json")
    (entry.path / ".trash.json").unlink(missing_ok=True)  # where the fix keeps them
    (entry.path / "trash.json").write_bytes(held)
    findings = app_store.check(repair=True).findings
    assert [(f.problem, f.target, f.repaired) for f in findings] == [
        ("trash-no-manifest", f".trash/{entry.name}", False)
    ]
    assert "a file named trash.json, deleted or replaced by an earlier build" in (
        findings[0].detail
    )
    assert (entry.path / "trash.json").read_bytes() == held


def _first_builds_session(store: Store, names: dict[str, bytes]) -> str:
    """A session as the first build wrote it: its files listed in session.json, their
    bytes in files/<name> (a writer's start-up migrates it to records/ and blobs/)."""
    session = store.create_session("from the first build")["id"]
    directory = store.sessions_dir / session
    meta = json.loads((directory / "session.json").read_text())
    (directory / "files").mkdir()
    listed = []
    for name, data in names.items():
        (directory / "files" / name).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        listed.append({"name": name, "size": len(data), "sha256": digest, "uploaded_at": "t"})
    (directory / "session.json").write_text(json.dumps({**meta, "files": listed}))
    return session


def test_names_the_first_build_stored_survive_the_upgrade_and_stay_reachable(
    app_config: Config, tmp_path: Path
) -> None:
    names = {
        "report\u00a0final.pdf": b"a no-break space",
        "notes ": b"a trailing space",
        "\u200bhidden.txt": b"a zero-width space",
        "plain.txt": b"plain",
    }
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = _first_builds_session(store, names)
    env = app_env(app_config.data_root)
    server = Server(env, tmp_path / "server.log").wait_ready()  # its start-up migrates
    try:
        with server.client() as http:
            files = f"/sessions/{session}/files"
            listed = http.get(f"/sessions/{session}").json()["files"]
            assert sorted(f["name"] for f in listed) == sorted(names)
            for name, data in names.items():
                assert http.get(f"{files}/{quote(name)}").content == data
            nbsp = quote("report\u00a0final.pdf")
            assert http.put(f"{files}/{nbsp}", content=b"replaced").status_code == 200
            assert http.delete(f"{files}/{quote('notes ')}").status_code == 200
            new = quote("new\u00a0one.txt")
            refused = http.put(f"{files}/{new}", content=b"x")
            assert refused.status_code == 400, refused.text
            assert "U+00A0" in refused.json()["message"]
            # A multipart POST names the file in its form: one that has the name already is
            # a conflict there too, as for any name (it was 400 invalid_name); a new one with
            # such a name is refused as by a PUT.
            upload = {"file": ("report\u00a0final.pdf", b"again", "application/pdf")}
            conflict = http.post(files, files=upload)
            assert conflict.status_code == 409, conflict.text
            upload = {"file": ("new\u00a0one.txt", b"x", "text/plain")}
            refused = http.post(files, files=upload)
            assert refused.status_code == 400, refused.text
            assert "U+00A0" in refused.json()["message"]
    finally:
        server.stop()
    restored = run_app("sessions", "restore", session, "--file", "notes ", env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with open_storage(app_config, writer=False, kind="tests", wanted="look") as store:
        assert store.file_path(session, "notes ")[0].read_bytes() == b"a trailing space"
        kept = store.file_path(session, "report\u00a0final.pdf")[0]
        assert kept.read_bytes() == b"replaced"


@pytest.mark.parametrize("damage", [{"name": "../evil", "size": 1}, 7, {"name": None}])
def test_a_first_builds_list_damaged_from_outside_is_left_for_a_human_and_the_rest_migrates(
    app_store: Store, damage: object
) -> None:
    # A hand-edited list stopped the whole repair: every `app serve` exited 65.
    damaged = _first_builds_session(app_store, {"a.txt": b"kept in files/"})
    meta_path = app_store.sessions_dir / damaged / "session.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "files": [*meta["files"], damage]}))
    whole = _first_builds_session(app_store, {"b.txt": b"migrated"})
    findings = app_store.check(repair=True).findings
    assert [(f.problem, f.target, f.repaired) for f in findings] == [
        ("session-unreadable", f"sessions/{damaged}", False),  # its id sorts first
        ("legacy-layout", f"sessions/{whole}", True),
    ]
    assert "which no build of the app wrote" in next(
        f.detail for f in findings if f.problem == "session-unreadable"
    )
    assert app_store.file_path(whole, "b.txt")[0].read_bytes() == b"migrated"
    assert (app_store.sessions_dir / damaged / "files" / "a.txt").read_bytes() == b"kept in files/"


def test_a_first_builds_session_restored_from_the_trash_comes_back_migrated(
    app_store: Store,
) -> None:
    # Deleted before the upgrade, restored after it (before any restart): it came back in
    # the first build's layout, and `app data check` failed (exit 65) until the next
    # start-up migrated it.
    session = _first_builds_session(app_store, {"a.txt": b"kept", "b\u00a0c.txt": b"also"})
    app_store.delete_session(session)
    restored = app_store.restore(session)
    assert sorted(f["name"] for f in restored["files"]) == ["a.txt", "b\u00a0c.txt"]
    assert app_store.check().findings == []
    assert app_store.file_path(session, "a.txt")[0].read_bytes() == b"kept"
    assert app_store.file_path(session, "b\u00a0c.txt")[0].read_bytes() == b"also"
    assert not (app_store.sessions_dir / session / "files").exists()
