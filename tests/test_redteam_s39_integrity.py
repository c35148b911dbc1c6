"""Red team 39 on integrity: what the data root's filesystem answers beside the usual errors.

Each fault is injected with ``strace --inject`` into one call of a real ``app serve`` (attached
for one request) or of a real command, so the tests need strace(1) and root. What broke:

- An errno no refusal named: ``ENOLCK`` from the flock every change takes on ``.tmp/`` (an NFS
  lock manager out of locks), ``ESTALE`` (a stale NFS handle), ``ENOTCONN`` (a dead FUSE
  daemon). A replace and a download were a bare 500 ``internal_error``, a command a traceback
  with exit 1. Every errno now maps to a refusal (``storage_failed``, 503, exit 74, naming it);
  an upload whose temporary file's flock was refused no longer leaks the file and its
  descriptor.
- A failed look read as an answer. An ``lstat`` of ``sessions/`` that failed (``EIO``) was
  refused as ``data_root_changed``, "put it back", of a root nobody moved; one failed ``lstat``
  of ``.server.lock`` stopped the server saying its lock was lost and never to delete it (its
  flock was still its own: the watcher now looks again, and a look that keeps failing stops it
  as ``lock_unchecked``); and ``check --repair`` (every start-up) took a failed ``lstat`` of a
  trash manifest holding the only copy of a file's bytes for "no bytes", and removed it.
- One unreadable file stopped everything that read it: a read of a trash manifest or a record
  that failed stopped the whole check (now an ``unreadable`` finding naming it), one such
  manifest made ``POST /trash/empty`` a 503 for the whole trash (now listed as unreadable), and
  a stamp that could not be read failed ``app status``, which then named no holder.
- A lock file of mode 000 under a live server: ``app status`` named no holder, and a second
  server was told to ``chattr -i``; both now name the holder the kernel lists and ``chmod 600``.
- A download whose read failed midway was cut, rightly, with only Starlette's "response already
  started" in the log; a multipart file name with a backslash was refused naming the whole
  ``Content-Disposition``.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import forked_app
import httpx
import pytest
from faults import attach, detach, needs_strace
from redteam_s19_http import blob_of, one_server

from app import config as appconfig
from app.config import Config
from app.storage import open_storage
from app.testing import LiveServer
from app.testing.live_server import stop_server

pytestmark = needs_strace


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(tmp_path_factory) as live:
        yield live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as client:
        yield client


def _session_with(http: httpx.Client, content: bytes) -> str:
    session = str(http.post("/sessions", json={"title": "faults"}).json()["id"])
    assert http.put(f"/sessions/{session}/files/a.txt", content=content).status_code == 201
    return session


def _old_bytes_kept_and_writes_go_on(http: httpx.Client, session: str) -> None:
    assert http.get(f"/sessions/{session}/files/a.txt").content == b"version 1"
    assert http.put(f"/sessions/{session}/files/a.txt", content=b"version 3").status_code == 200


_KEPT = (
    "A change it met is not acknowledged, and may be made in part. An operator mends the "
    "filesystem (the kernel's log, `dmesg`, and `findmnt -T` on the data root say which it "
    "is), then runs `app data check --repair` (a server runs it at start-up) before clients "
    "retry"
)


def test_a_lock_the_filesystem_refuses_is_named_and_the_old_bytes_stay(
    server: LiveServer, http: httpx.Client
) -> None:
    # Every change takes a shared flock on .tmp/ (app.dataroot.DataRoot.changing); NFS's
    # lock manager answers ENOLCK when it has no lock to give. It was a bare 500.
    assert server.data_root is not None
    session = _session_with(http, b"version 1")
    tracer = attach(server.pid, "flock:error=ENOLCK:when=1", server.data_root / ".tmp")
    try:
        refused = http.put(f"/sessions/{session}/files/a.txt", content=b"version 2")
    finally:
        detach(tracer)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "storage_failed"
    assert refused.json()["message"] == (
        f"cannot PUT /sessions/{session}/files/a.txt: the data root's filesystem failed a call "
        "with ENOLCK (No locks available): the filesystem could not take a lock (flock) the "
        "app takes around every change, as an NFS lock manager out of locks or not running "
        "answers; keep the data root on a local filesystem, where flock always works. " + _KEPT
    )
    _old_bytes_kept_and_writes_go_on(http, session)


def test_an_upload_whose_temporary_file_cannot_be_locked_leaves_nothing_behind(
    server: LiveServer, http: httpx.Client
) -> None:
    # The temporary file stayed in .tmp/ and its descriptor open, one more each time.
    assert server.data_root is not None
    session = _session_with(http, b"version 1")
    before = len(os.listdir(f"/proc/{server.pid}/fd"))
    for _ in range(3):
        tracer = attach(server.pid, "flock:error=ENOLCK:when=1")  # the upload's own, first
        try:
            refused = http.put(f"/sessions/{session}/files/a.txt", content=b"version 2")
        finally:
            detach(tracer)
        assert refused.status_code == 503, refused.text
        assert "ENOLCK (No locks available)" in refused.json()["message"]
    assert os.listdir(server.data_root / ".tmp") == []
    assert len(os.listdir(f"/proc/{server.pid}/fd")) <= before
    assert http.get(f"/sessions/{session}/files/a.txt").content == b"version 1"


def test_a_stale_network_file_handle_is_named_on_a_download(
    server: LiveServer, http: httpx.Client
) -> None:
    assert server.data_root is not None
    session = _session_with(http, b"version 1")
    record = server.data_root / "sessions" / session / "records" / "a.txt"
    tracer = attach(server.pid, "openat:error=ESTALE:when=1", record)
    try:
        refused = http.get(f"/sessions/{session}/files/a.txt")
    finally:
        detach(tracer)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "storage_failed"
    assert refused.json()["message"].startswith(
        f"cannot GET /sessions/{session}/files/a.txt: the data root's filesystem failed a call "
        "with ESTALE (Stale file handle): a network filesystem (NFS) whose server restarted "
        "or whose export changed under the mount, so the file handles the kernel holds name "
        "nothing; remount it. "
    )
    assert http.get(f"/sessions/{session}/files/a.txt").content == b"version 1"


@pytest.mark.parametrize(
    ("fault", "code", "says"),
    [
        ("EIO", "storage_io_error", "the data root's disk failed to read or store it"),
        ("ENOTCONN", "storage_failed", "a FUSE filesystem (sshfs, s3fs, rclone) whose daemon"),
    ],
)
def test_a_look_at_sessions_that_fails_is_not_called_a_moved_root(
    server: LiveServer, http: httpx.Client, fault: str, code: str, says: str
) -> None:
    # Every write lstats the root's own directories to see that they are the ones opened; a
    # look that failed was taken for a directory gone: "replaced, moved or mounted over",
    # to be put back before a restart, of a root nobody had touched.
    assert server.data_root is not None
    session = _session_with(http, b"version 1")
    sessions = server.data_root / "sessions"
    tracer = attach(server.pid, f"newfstatat:error={fault}:when=1", sessions)
    try:
        refused = http.put(f"/sessions/{session}/files/a.txt", content=b"version 2")
    finally:
        detach(tracer)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == code
    assert says in refused.json()["message"]
    assert "moved" not in refused.json()["message"]
    assert http.get("/health").json()["status"] == "ok"
    _old_bytes_kept_and_writes_go_on(http, session)


def test_a_command_given_a_stale_handle_exits_74_naming_it(
    server: LiveServer, http: httpx.Client
) -> None:
    # A traceback and exit 1, which the table of exit codes does not have.
    assert server.data_root is not None
    session = _session_with(http, b"version 1")
    record = server.data_root / "sessions" / session / "session.json"
    env = {**os.environ, "APP_DATA_ROOT": str(server.data_root)}
    strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(record)]
    strace += ["-e", "inject=all:error=ESTALE"]
    shown = subprocess.run(
        [*strace, sys.executable, "-m", "app", "sessions", "show", session],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert shown.returncode == 74, shown.stderr
    assert "Traceback" not in shown.stderr
    assert shown.stderr.startswith(
        f"error: cannot run `app sessions show` ({record}): the data root's filesystem failed "
        "a call with ESTALE (Stale file handle): a network filesystem (NFS)"
    ), shown.stderr


# --- the lock's watcher, when a look at the lock file fails ----------------------------------


def test_a_lock_file_that_cannot_be_looked_at_once_does_not_stop_the_server_and_always_does_truly(
    tmp_path: Path,
) -> None:
    # One failed lstat of .server.lock (a stale NFS handle, a bad read) stopped the server,
    # saying that another process could now take the root and never to delete the file: its
    # flock was still its own, and nobody had touched the file.
    root = tmp_path / "live-data"
    env = {
        **os.environ,
        "APP_HOST": "127.0.0.1",
        "APP_DATA_ROOT": str(root),
        "APP_LOCK_CHECK_SECONDS": "0.2",
    }
    log = tmp_path / "server.log"
    process, url = forked_app.start_server(env, root, log)
    lock = root / ".server.lock"
    try:
        live = LiveServer(url, root, process.pid, None, log, appconfig.load("testing", environ=env))
        tracer = attach(live.pid, "newfstatat:error=ESTALE:when=1", lock)
        try:
            while "checked again: still this process's" not in log.read_text():
                assert process.poll() is None, log.read_text()
                time.sleep(0.05)
        finally:
            detach(tracer)
        token = {"Authorization": "Bearer testing-token-not-secret"}
        with httpx.Client(base_url=url, headers=token) as http:
            assert http.post("/sessions", json={"title": "still served"}).status_code == 201
        tracer = attach(live.pid, "newfstatat:error=ESTALE", lock)
        try:
            assert process.wait(timeout=60) == 70
        finally:
            detach(tracer)
    finally:
        stop_server(process)
    said = log.read_text()
    assert (
        f"stopping: lock file {lock} could not be checked (Stale file handle; 4 looks in " in said
    )
    assert (
        "s): the data root's filesystem failed the look, and nobody need have touched the "
        "file, but this process cannot tell whether it still holds the data root, so it stops "
        "rather than risk sharing it. An operator mends the filesystem (the kernel's log, "
        f"`dmesg`; `findmnt -T {lock}` names it), then restarts the server"
    ) in said
    assert "Never delete" not in said


def test_every_errno_of_the_filesystem_is_a_refusal_that_names_it() -> None:
    # The class behind the breaks above: an errno with no refusal of its own was a bare 500
    # over HTTP and a traceback from a command. Every one now maps to a refusal naming it.
    from app.errors import StorageError, storage_error

    for number, name in sorted(errno.errorcode.items()):
        mapped = storage_error(OSError(number, os.strerror(number)), "PUT /sessions/s/files/a")
        assert isinstance(mapped, StorageError), name
        assert mapped.message.startswith("cannot PUT /sessions/s/files/a: "), name
        if mapped.code == "storage_failed":
            assert f"with {name} ({os.strerror(number)})" in mapped.message
    assert storage_error(OSError("no errno"), "x") is None
    assert storage_error(ValueError("x"), "x") is None


@pytest.mark.parametrize("wanted", [None, "bytes=10-2000000"])
def test_a_download_whose_bytes_fail_to_read_midway_is_cut_and_logged_by_cause(
    server: LiveServer, http: httpx.Client, wanted: str | None
) -> None:
    # The answer had begun: a read's EIO (a bad sector) was Starlette's "Caught handled
    # exception, but response already started" traceback, naming neither file nor cause.
    assert server.data_root is not None
    session = _session_with(http, b"small")
    path = f"/sessions/{session}/files/big.bin"
    assert http.put(path, content=os.urandom(3_000_000)).status_code == 201
    blob = blob_of(server.data_root, session, "big.bin")
    tracer = attach(server.pid, "read:error=EIO:when=2", blob)
    try:
        headers = {} if wanted is None else {"Range": wanted}
        with pytest.raises(httpx.RemoteProtocolError):  # fewer bytes than Content-Length
            http.get(path, headers=headers)
    finally:
        detach(tracer)
    said = server.log.read_text()
    assert (
        f"ERROR:    cannot GET {path}: the data root's disk failed to read or store it (an I/O "
        "error; the kernel's log, `dmesg`, says where)."
    ) in said
    assert "(the download was cut before its end)" in said
    assert "response already started" not in said
    assert len(http.get(path).content) == 3_000_000


# --- a lock file whose mode keeps a process out ---------------------------------------------

_WITHOUT_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv(1)")
def test_a_lock_file_made_mode_000_under_a_live_server_still_names_it(
    server: LiveServer,
) -> None:
    # `app status` said only that the filesystem refused it, naming no holder (and the test
    # run's guards had a bare PermissionError from the same probe); a second server (and a
    # purge, which takes the lock the same way) were told to `chattr -i` or `chown` a file
    # whose owner was right.
    assert server.data_root is not None
    lock = server.data_root / ".server.lock"
    env = {**os.environ, "APP_DATA_ROOT": str(server.data_root)}

    def app(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*_WITHOUT_OVERRIDE, sys.executable, "-m", "app", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, check=False)

    lock.chmod(0)
    try:
        status = app("status")
        serve = app("serve", "--port", "0")  # a purge takes the lock the same way
    finally:
        lock.chmod(0o600)
    why = (
        "permission denied: its mode is 0000, its owner uid 0, and this process runs as uid "
        f"0; `chmod 600 {lock}`, and `chown` it if its owner is wrong, gives it back; never "
        "delete it"
    )
    assert status.returncode == 0, status.stderr
    assert f"held by: pid {server.pid} (" in status.stdout
    assert (
        f"), as the kernel lists it: its details in the lock file cannot be read ({why})\n"
    ) in status.stdout
    for refused in (serve,):
        assert refused.returncode == 74, refused.stderr
        assert refused.stderr.startswith(
            f"error: cannot open lock file {lock} ({why}), so this process can neither read "
            "the holder's details nor take the data root; nothing was changed. The kernel "
            f"lists process {server.pid} ("
        ), refused.stderr
        assert refused.stderr.endswith(") as holding it: that process holds the data root now.\n")


# --- `app data check --repair` when a look at the trash fails ---------------------------------


def test_a_failed_look_at_a_trash_manifest_never_removes_its_bytes(
    app_config: Config, tmp_path: Path
) -> None:
    # A trash entry whose trash.json holds the only copy of bytes that are not a manifest
    # (an earlier build's delete of a file named trash.json, red team 38) is left for a
    # human. An lstat of it that failed (EIO) read as "no bytes": `--repair`, which every
    # server start-up runs, removed it as "an empty trash entry". A read that failed
    # stopped the whole check, and so every start-up, naming no file.
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        store.put_file(session, "a.txt", b"hello")
        store.delete_file(session, "a.txt")
    root = app_config.data_root
    (entry,) = (root / ".trash").iterdir()
    (entry / "a.txt").unlink()
    (entry / "trash.json").write_bytes(b"the only copy of these bytes")
    saved = tmp_path / "saved"
    shutil.copytree(root, saved, symlinks=True)
    manifest = entry / "trash.json"
    env = {**os.environ, "APP_DATA_ROOT": str(root)}
    for nth in range(1, 9):  # every look the check makes at it
        shutil.rmtree(root)
        shutil.copytree(saved, root, symlinks=True)
        strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(manifest)]
        strace += ["-e", "trace=newfstatat", "-e", f"inject=newfstatat:error=EIO:when={nth}"]
        checked = subprocess.run(
            [*strace, sys.executable, "-m", "app", "data", "check", "--repair"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert "trash-empty" not in checked.stdout, (nth, checked.stdout)
        assert "cannot run `app data check`" not in checked.stderr, (nth, checked.stderr)
        assert manifest.read_bytes() == b"the only copy of these bytes", nth
        said = checked.stdout.splitlines()[0]
        assert said.startswith(("trash-no-manifest  ", "unreadable  ")), (nth, said)
        if said.startswith("unreadable"):
            assert said == (
                f"unreadable  .trash/{entry.name}/trash.json: this process could not read it "
                "(Input/output error: a failing disk, a network filesystem's stale handle), "
                "so what holds it was not checked; fix: nothing: an operator mends the "
                "filesystem (`dmesg`, `findmnt -T`), then checks again"
            )


def test_a_record_that_fails_to_read_is_named_and_its_file_kept_by_the_repair(
    app_config: Config,
) -> None:
    # The read's EIO named no file: the whole check stopped, and so every start-up.
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        store.put_file(session, "a.txt", b"hello")
    record = app_config.data_root / "sessions" / session / "records" / "a.txt"
    strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(record)]
    strace += ["-e", "inject=read:error=EIO"]
    checked = subprocess.run(
        [*strace, sys.executable, "-m", "app", "data", "check", "--repair"],
        capture_output=True,
        text=True,
        env={**os.environ, "APP_DATA_ROOT": str(app_config.data_root)},
        check=False,
    )
    assert checked.stdout.startswith(
        f"unreadable  sessions/{session}/records/a.txt: this process could not read it "
        "(Input/output error: "
    ), (checked.stdout, checked.stderr)
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.file_path(session, "a.txt")[0].read_bytes() == b"hello"
        assert store.check(repair=False).findings == []


def test_status_names_the_holder_of_a_root_whose_stamp_cannot_be_read(
    server: LiveServer,
) -> None:
    # `app status` failed whole (74), naming no holder: what it is run for.
    assert server.data_root is not None
    stamp = server.data_root / ".app-profile.json"
    strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(stamp)]
    strace += ["-e", "inject=read:error=EIO"]
    status = subprocess.run(
        [*strace, sys.executable, "-m", "app", "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "APP_DATA_ROOT": str(server.data_root)},
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert (
        f"stamp: unreadable: {stamp} could not be read (Input/output error); every command "
        "that opens the data root is refused until it can be\n"
        f"held by: pid {server.pid}, kind server, profile testing"
    ) in status.stdout


def test_one_trash_manifest_that_fails_to_read_does_not_block_emptying_the_trash(
    server: LiveServer, http: httpx.Client
) -> None:
    # POST /trash/empty, the remedy a full disk's refusal names, was a 503 for the whole
    # trash while one entry's trash.json failed a read (EIO: one bad sector).
    assert server.data_root is not None
    session = _session_with(http, b"version 1")
    assert http.put(f"/sessions/{session}/files/a.txt", content=b"version 2").status_code == 200
    assert http.delete(f"/sessions/{session}/files/a.txt").status_code == 200
    trash = server.data_root / ".trash"
    mine = sorted(p for p in trash.iterdir() if session in p.name)
    assert len(mine) == 2
    tracer = attach(server.pid, "read:error=EIO", mine[0] / "trash.json")
    try:
        emptied = http.post("/trash/empty")
    finally:
        detach(tracer)
    assert emptied.status_code == 200, emptied.text
    assert {p.name for p in mine} <= set(emptied.json()["entries"])
    assert not any(session in p.name for p in trash.iterdir())


def test_a_multipart_file_name_with_a_backslash_is_refused_naming_that_name(
    server: LiveServer, http: httpx.Client
) -> None:
    # The pattern that finds the quoted filename wanted two backslashes where a quoted
    # string has one, so the refusal named the whole Content-Disposition as the file name.
    session = _session_with(http, b"version 1")
    cases = [
        (b"filename=", rb"C:\dir\evil.txt", r"C:\dir\evil.txt"),
        (b"filename=", rb"a\\b", "a\\b"),
        (b"FILENAME=", rb"C:\x\evil.txt", r"C:\x\evil.txt"),
        (b"filename = ", rb"C:\x\evil.txt", r"C:\x\evil.txt"),
    ]
    for parameter, sent, named in cases:
        body = (
            b'--B\r\nContent-Disposition: form-data; name="file"; '
            + parameter
            + b'"'
            + sent
            + b'"\r\n\r\nDATA\r\n--B--\r\n'
        )
        refused = http.post(
            f"/sessions/{session}/files",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=B"},
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["message"].startswith(
            f"invalid file name {named!r}: it contains a path separator"
        ), refused.json()["message"]
    listed = http.get(f"/sessions/{session}/files").json()["items"]
    assert [f["name"] for f in listed] == ["a.txt"]
