"""The data-root lock: real flocks, real files, real subprocesses."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from live_http import WAIT
from waits import until_set

import app
from app.errors import (
    DataRootInUseError,
    LockFileAliasedError,
    LockFileKindError,
    LockUnavailableError,
    shell_word,
)
from app.lock import (
    LOCK_FILE,
    LockWatcher,
    RootLock,
    describe_holder,
    holder_info,
    probe,
    read_holder,
)

# A holder in another process: takes the lock, says so, then waits for stdin to close
# (or for a signal). With "fork", it forks a child that outlives it and the child reports.
HOLDER_SCRIPT = """
import os, sys
from pathlib import Path
from app.lock import RootLock
own = "own-sandbox" in sys.argv[3:]
lock = RootLock(Path(sys.argv[1]), kind=sys.argv[2], profile="development", own_sandbox=own)
lock.acquire("hold the root for a test")
if "fork" in sys.argv[3:]:
    if os.fork() == 0:
        # Fork handlers have run by now: report, then linger without stdin.
        print(os.getpid(), flush=True)
        os.close(0)
        while True:
            os.pause()
else:
    print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


class Holder:
    """A subprocess holding a root's lock until stopped or killed."""

    def __init__(self, root: Path, kind: str = "server", *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER_SCRIPT, str(root), kind, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        # Blocks until the child has the lock; an empty line means it died first.
        self.line = self.proc.stdout.readline().strip()
        assert self.line, f"holder exited early with {self.proc.wait()}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def holder(root: Path):
    held = Holder(root)
    yield held
    held.close()


def test_it_refuses_a_data_root_held_by_a_live_server(root: Path, holder: Holder) -> None:
    lock = RootLock(root, kind="maintenance", profile="development")
    with pytest.raises(DataRootInUseError) as refused:
        lock.acquire("purge sessions", timeout=0)
    error = refused.value
    assert error.exit_code == 75
    assert error.holder is not None
    assert error.holder["pid"] == holder.pid
    message = str(error)
    assert message.startswith(f"cannot purge sessions: data root {root} is held by ")
    assert f"pid {holder.pid}, kind server, profile development" in message
    # Not "or wait for it to finish", which a server never does.
    assert message.endswith(
        f"; a server holds its data root until it is stopped: stop it (kill {holder.pid}, or its "
        "service's stop, such as `systemctl stop`), retry, and start it again. `app status` "
        "shows the holder"
    ), message
    assert not lock.held


def test_a_root_held_by_another_test_run_says_to_wait_for_it(root: Path) -> None:
    run = Holder(root, "tests")
    try:
        with pytest.raises(DataRootInUseError) as refused:
            RootLock(root, kind="maintenance", profile="testing").acquire("purge", timeout=0)
    finally:
        run.close()
    assert str(refused.value).endswith(
        # The command that waits, named since red team 62.
        f"; wait for that test run to finish (`flock -s {shell_word(root / '.server.lock')} "
        f"true` returns once it lets go) and retry, or stop it (kill {run.pid}). `app "
        "status` shows the holder"
    ), refused.value


def test_the_refusal_survives_a_pickle_round_trip_with_its_holder(
    root: Path, holder: Holder
) -> None:
    # pytest-xdist sends errors back from its workers as pickles.
    with pytest.raises(DataRootInUseError) as refused:
        RootLock(root, kind="maintenance", profile="development").acquire("purge", timeout=0)
    copy = pickle.loads(pickle.dumps(refused.value))
    assert (str(copy), copy.args) == (str(refused.value), refused.value.args)
    assert (copy.root, copy.holder, copy.wanted) == (root, refused.value.holder, "purge")


def test_a_holder_is_described_by_what_it_published() -> None:
    assert describe_holder(None) == "a process that published no details (pid unknown)"
    published = {"pid": 7, "kind": "server", "port": 8080, "host": "", "argv": ["app"]}
    assert describe_holder(published) == "pid 7, kind server, port 8080"


def test_a_second_lock_in_the_same_process_is_refused_too(root: Path) -> None:
    with RootLock(root, kind="server", profile="development"):
        second = RootLock(root, kind="tests", profile="development")
        with pytest.raises(DataRootInUseError, match=f"pid {os.getpid()}, kind server"):
            second.acquire("run the tests", timeout=0)


def test_the_lock_is_free_again_after_its_holder_stops(root: Path, holder: Holder) -> None:
    assert holder.stop() == 0
    with RootLock(root, kind="maintenance", profile="development") as lock:
        assert lock.held


def test_a_holder_killed_with_sigkill_releases_the_lock_at_once(root: Path, holder: Holder) -> None:
    holder.kill()
    # No retry window: the kernel dropped the flock when the process died.
    lock = RootLock(root, kind="server", profile="development").acquire("restart", timeout=0)
    try:
        assert lock.holder is not None
        assert lock.holder["pid"] == os.getpid()
        assert read_holder(root) == lock.holder
    finally:
        lock.release()


# The session's own root is locked without filelock: its fork handling must hold too.
@pytest.mark.parametrize(
    "holder_args", [("server", "fork"), ("tests", "fork", "own-sandbox")], ids=["server", "session"]
)
def test_a_forked_child_does_not_keep_its_dead_parents_lock(
    root: Path, holder_args: tuple[str, ...]
) -> None:
    parent = Holder(root, *holder_args)
    child_pid = int(parent.line)
    try:
        parent.kill()
        lock = RootLock(root, kind="server", profile="development").acquire("restart", timeout=0)
        lock.release()
    finally:
        os.kill(child_pid, signal.SIGKILL)
        parent.close()


def test_a_session_lock_and_a_server_lock_refuse_each_other(root: Path, holder: Holder) -> None:
    session = RootLock(root, kind="tests", profile="testing", own_sandbox=True)
    with pytest.raises(DataRootInUseError, match=f"pid {holder.pid}, kind server"):
        session.acquire("run the tests", timeout=0)
    assert not session.held
    holder.stop()
    with RootLock(root, kind="tests", profile="testing", own_sandbox=True) as session:
        assert probe(root).holder == session.holder
        server = RootLock(root, kind="server", profile="testing")
        with pytest.raises(DataRootInUseError, match=f"pid {os.getpid()}, kind tests"):
            server.acquire("start the server", timeout=0)
    assert (root / LOCK_FILE).read_bytes() == b""
    assert probe(root).held is False


def test_a_session_lock_refuses_a_lock_file_that_is_a_symbolic_link(
    root: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "other.lock"
    elsewhere.write_text("another root's holder\n")
    (root / LOCK_FILE).symlink_to(elsewhere)
    lock = RootLock(root, kind="tests", profile="testing", own_sandbox=True)
    with pytest.raises(LockFileAliasedError, match="is a symbolic link"):
        lock.acquire("run the tests")
    assert not lock.held
    assert elsewhere.read_text() == "another root's holder\n"


def test_a_lock_path_that_leads_to_another_file_than_the_one_locked_says_so(
    tmp_path: Path,
) -> None:
    # Not a link at the path itself (a `/proc/<pid>/root/...` path that resolves into another
    # mount namespace, or the file replaced): the refusal called it "a symbolic link".
    from app.lock import _refuse_aliased

    path = tmp_path / LOCK_FILE
    path.write_text("")
    opened = os.stat(path)
    path.rename(tmp_path / "the file locked")  # kept: its inode is not reused
    path.write_text("")
    with pytest.raises(LockFileAliasedError) as refused:
        _refuse_aliased(path, opened)
    assert str(refused.value).startswith(
        f"refusing to lock {path}: it leads to another file than the one its lock was opened "
        "on (a directory on the way, such as /proc/<pid>/root, resolves elsewhere, or the "
        "file was replaced), so a lock taken on it would also lock"
    )


@pytest.mark.parametrize("own_sandbox", [True, False], ids=["sandbox-flock", "filelock"])
@pytest.mark.parametrize("kind", ["a directory", "a FIFO"])
def test_something_other_than_a_file_at_the_lock_path_is_refused_by_name(
    root: Path, kind: str, own_sandbox: bool
) -> None:
    # filelock raised a bare IsADirectoryError for a directory; a FIFO was locked, and the
    # holder's JSON then failed with ESPIPE (Illegal seek).
    path = root / LOCK_FILE
    if kind == "a directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    lock = RootLock(root, kind="tests", profile="testing", own_sandbox=own_sandbox)
    with pytest.raises(LockFileKindError) as refused:
        lock.acquire("run the tests")
    assert str(refused.value) == (
        f"refusing to lock {path}: it is {kind}, not the lock file the app makes, so no "
        "process can hold this data root; nothing was changed. See what put it there, move "
        "it out of the data root, and let the app create the data root's own .server.lock"
    )
    assert not lock.held
    assert path.is_dir() if kind == "a directory" else stat.S_ISFIFO(path.lstat().st_mode)


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_session_lock_on_a_filesystem_without_flock_is_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    import fcntl

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = RootLock(root, kind="tests", profile="testing", own_sandbox=True)
    with pytest.raises(LockUnavailableError) as refused:
        lock.acquire("run the tests")
    assert refused.value.path == root / LOCK_FILE
    assert not lock.held
    assert sorted(p.name for p in root.iterdir()) == [LOCK_FILE]
    assert (root / LOCK_FILE).read_bytes() == b""


def test_the_lock_file_is_never_deleted_on_release(root: Path) -> None:
    lock = RootLock(root, kind="maintenance", profile="development").acquire("x")
    inode = (root / LOCK_FILE).stat().st_ino
    lock.release()
    assert (root / LOCK_FILE).exists()
    assert (root / LOCK_FILE).stat().st_ino == inode
    assert (root / LOCK_FILE).read_bytes() == b""  # emptied while still held
    again = RootLock(root, kind="maintenance", profile="development").acquire("x")
    assert (root / LOCK_FILE).stat().st_ino == inode
    again.release()


def test_a_refused_attempt_leaves_the_holders_json_intact(root: Path, holder: Holder) -> None:
    before = (root / LOCK_FILE).read_bytes()
    assert json.loads(before)["pid"] == holder.pid
    for _ in range(3):
        with pytest.raises(DataRootInUseError):
            RootLock(root, kind="tests", profile="testing").acquire("x", timeout=0)
    assert (root / LOCK_FILE).read_bytes() == before


def test_the_lock_file_holds_the_holders_json(root: Path) -> None:
    with RootLock(root, kind="maintenance", profile="development") as lock:
        published = json.loads((root / LOCK_FILE).read_text())
        assert published == lock.holder
    assert published["pid"] == os.getpid()
    assert published["host"] == socket.gethostname()
    assert published["kind"] == "maintenance"
    assert published["profile"] == "development"
    assert published["argv"] == sys.argv
    assert published["version"] == app.__version__
    assert published["port"] is None
    assert published["root"] == str(root)
    assert published["started_at"].endswith("+00:00")
    boot_id = Path("/proc/sys/kernel/random/boot_id")
    expected_boot = boot_id.read_text().strip() if boot_id.exists() else None
    assert published["boot_id"] == expected_boot


def test_a_server_publishes_its_port_once_bound(root: Path) -> None:
    with RootLock(root, kind="server", profile="development") as lock:
        assert json.loads((root / LOCK_FILE).read_text())["port"] is None
        before = lock.holder
        lock.update(port=8123)
        assert before is not None
        assert probe(root).holder == {**before, "port": 8123}
        assert lock.holder == {**before, "port": 8123}


def test_holder_info_refuses_an_unknown_kind(root: Path) -> None:
    with pytest.raises(ValueError, match="server, tests, maintenance"):
        holder_info("prod-server", "production", root=root)
    assert holder_info("tests", "testing", port=80, root=root)["port"] is None


def test_a_probe_creates_nothing(tmp_path: Path, root: Path) -> None:
    missing = tmp_path / "missing" / "root"
    assert probe(missing).held is False
    assert not (tmp_path / "missing").exists()

    before = sorted(tmp_path.rglob("*"))
    result = probe(root)
    assert result.held is False
    assert result.holder is None
    assert result.path == root / LOCK_FILE
    assert sorted(tmp_path.rglob("*")) == before
    assert list(root.iterdir()) == []


def test_a_probe_of_a_held_root_returns_the_holder(root: Path, holder: Holder) -> None:
    result = probe(root)
    assert result.held is True
    assert result.holder is not None
    assert result.holder["pid"] == holder.pid
    assert result.holder["kind"] == "server"
    assert result.to_dict()["held"] is True


def test_a_probe_ignores_what_a_killed_holder_left_behind(root: Path, holder: Holder) -> None:
    holder.kill()
    assert json.loads((root / LOCK_FILE).read_text())["pid"] == holder.pid
    result = probe(root)
    assert result.held is False
    assert result.holder is None


def test_a_probe_does_not_take_the_lock_from_its_holder(root: Path) -> None:
    with RootLock(root, kind="server", profile="development") as lock:
        assert probe(root).held is True
        assert lock.still_ours() is None
        assert json.loads((root / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_holder_that_published_nothing_is_reported_without_details(root: Path) -> None:
    # Another flock user, or a holder caught between truncating and writing: held, no JSON.
    import fcntl

    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert probe(root).held is True
        # The kernel still names it (red team 37: a server that took its lock on a full disk).
        assert probe(root).holder == {"pid": os.getpid(), "unpublished": True}
        with pytest.raises(DataRootInUseError, match=f"pid {os.getpid()} .*published no details"):
            RootLock(root, kind="tests", profile="testing").acquire("x", timeout=0)
    finally:
        os.close(fd)


def test_a_half_written_holder_json_reads_as_unknown(root: Path) -> None:
    (root / LOCK_FILE).write_text('{"pid": 12, "kind": "ser')
    assert read_holder(root) is None
    (root / LOCK_FILE).write_text('{"pid": 12}\n')
    assert read_holder(root) == {"pid": 12}


def test_still_ours_detects_that_the_lock_file_was_deleted(root: Path) -> None:
    with RootLock(root, kind="server", profile="development") as lock:
        assert lock.still_ours() is None
        (root / LOCK_FILE).unlink()
        assert lock.still_ours() == "was deleted"


def test_still_ours_detects_that_the_lock_file_was_replaced(root: Path) -> None:
    with RootLock(root, kind="server", profile="development") as lock:
        (root / "impostor").write_text("")
        (root / "impostor").replace(root / LOCK_FILE)
        assert lock.still_ours() == "was replaced by another file"
        # Why it matters: the new inode is free, and only the holder's descriptor of the
        # replaced one, found through /proc, keeps a second holder out of "the same" root.
        with pytest.raises(DataRootInUseError, match="which was deleted while it held it"):
            RootLock(root, kind="maintenance", profile="development").acquire("x")


def test_still_ours_detects_deletion_followed_by_recreation(root: Path) -> None:
    with RootLock(root, kind="server", profile="development") as lock:
        (root / LOCK_FILE).unlink()
        (root / LOCK_FILE).write_text("")
        assert lock.still_ours() == "was replaced by another file"


def test_a_lock_taken_on_one_thread_can_be_released_on_another(root: Path) -> None:
    lock = RootLock(root, kind="server", profile="development").acquire("serve")
    releaser = threading.Thread(target=lock.release)
    releaser.start()
    releaser.join()
    assert not lock.held
    assert probe(root).held is False


def test_entering_a_lock_taken_by_acquire_does_not_take_it_twice(root: Path) -> None:
    with RootLock(root, kind="maintenance", profile="development").acquire("purge") as lock:
        assert lock.held
    assert not lock.held
    assert probe(root).held is False


def test_acquiring_twice_with_one_instance_is_a_programming_error(root: Path) -> None:
    with RootLock(root, kind="server", profile="development") as lock:
        with pytest.raises(RuntimeError, match="already held"):
            lock.acquire("x")
        lock.release()
        lock.release()  # idempotent


def test_the_lock_never_creates_its_data_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        RootLock(tmp_path / "nope", kind="server", profile="development").acquire("x")
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_filesystem_without_flock_is_refused_rather_than_soft_locked(
    root: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    import filelock._native._unix as unix

    def no_flock(fd: int) -> bool:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(unix, "lock_fd_nonblocking", no_flock)
    lock = RootLock(root, kind="server", profile="development")
    with pytest.raises(LockUnavailableError) as refused:
        lock.acquire("serve")
    assert refused.value.path == root / LOCK_FILE
    assert "flock" in str(refused.value)
    assert not lock.held
    # No soft-lock marker or other file took the lock's place.
    assert sorted(p.name for p in root.iterdir()) == [LOCK_FILE]
    assert (root / LOCK_FILE).read_bytes() == b""


def test_the_watcher_reports_a_deleted_lock_file_once(root: Path) -> None:
    reasons: list[str] = []
    called = threading.Event()

    def on_lost(reason: str) -> None:
        reasons.append(reason)
        called.set()

    with RootLock(root, kind="server", profile="development") as lock:
        watcher = LockWatcher(lock, 0.01, on_lost).start()
        (root / LOCK_FILE).unlink()
        # Returns once the callback ran; the watcher then ends by itself.
        until_set(called, watcher._thread, "the watcher's callback")
        watcher.stop()
        assert reasons == ["was deleted"]
        assert watcher.lost == "was deleted"
        assert not watcher.running


def test_the_watcher_stays_quiet_while_the_lock_is_ours_and_stops_on_request(
    root: Path,
) -> None:
    reasons: list[str] = []
    with RootLock(root, kind="server", profile="development") as lock:
        checks = 0
        original = lock.still_ours
        enough = threading.Event()

        def counting() -> str | None:
            nonlocal checks
            checks += 1
            if checks >= 3:
                enough.set()
            return original()

        lock.still_ours = counting  # type: ignore[method-assign]
        with LockWatcher(lock, 0.01, reasons.append) as watcher:
            until_set(enough, watcher._thread, "three checks of the lock")
        assert not watcher.running
    assert reasons == []


def test_the_watcher_ends_quietly_when_the_lock_is_released_on_purpose(root: Path) -> None:
    reasons: list[str] = []
    lock = RootLock(root, kind="server", profile="development").acquire("serve")
    watcher = LockWatcher(lock, 0.01, reasons.append).start()
    lock.release()
    watcher._thread.join()
    assert reasons == []


def test_the_watcher_refuses_a_non_positive_interval(root: Path) -> None:
    lock = RootLock(root, kind="server", profile="development")
    with pytest.raises(ValueError, match="positive"):
        LockWatcher(lock, 0, print)


def test_the_watcher_reports_a_data_root_replaced_by_a_file(root: Path, tmp_path: Path) -> None:
    reasons: list[str] = []
    with RootLock(root, kind="server", profile="development") as lock:
        watcher = LockWatcher(lock, 0.01, reasons.append).start()
        root.rename(tmp_path / "moved-away")
        root.write_text("not a directory")
        watcher._thread.join()  # ends after reporting (or, before, when the check raised)
    # Where the file went (red team 46); `DataRoot.lost_error` says the root itself moved.
    assert reasons == [f"was moved to {tmp_path / 'moved-away' / LOCK_FILE} (never move it)"]


def test_the_watcher_reports_a_check_that_fails_instead_of_dying_quietly(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reasons: list[str] = []

    def failing() -> str | None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("app.lock._RECHECK_PAUSES", (0.01, 0.01))
    with RootLock(root, kind="server", profile="development") as lock:
        lock.still_ours = failing  # type: ignore[method-assign]
        watcher = LockWatcher(lock, 0.01, reasons.append).start()
        watcher._thread.join()  # ends after reporting (or, before, when the check raised)
    assert len(reasons) == 1
    assert reasons[0].startswith("could not be checked (Input/output error; 3 looks in 0.")


def test_a_live_published_holder_is_refused_without_waiting_out_the_timeout(
    root: Path, holder: Holder
) -> None:
    # The retries are for a probe's instant; a server that published itself is not going
    # away. Were the whole timeout waited for, the thread would still be waiting below.
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            RootLock(root, kind="tests", profile="testing").acquire("run tests", timeout=1e9)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "acquire waited for its whole timeout"
    assert isinstance(outcome[0], DataRootInUseError)
    assert f"pid {holder.pid}" in str(outcome[0])


def test_a_holder_that_has_not_published_yet_is_waited_for(root: Path) -> None:
    # Between its flock and its JSON a starting holder looks like a probe: retried, so a
    # holder that lets go within the timeout does not refuse the next one.
    import fcntl

    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    released = threading.Event()

    def let_go() -> None:
        released.wait(WAIT)
        os.close(fd)

    thread = threading.Thread(target=let_go)
    thread.start()
    lock = RootLock(root, kind="tests", profile="testing")
    try:
        released.set()
        lock.acquire("run tests", timeout=WAIT)
        assert lock.held
    finally:
        lock.release()
        thread.join()


def test_a_second_writer_in_the_holding_process_is_told_to_close_the_first_not_to_kill(
    root: Path,
) -> None:
    # `kill <pid>` named the very process that asked.
    with RootLock(root, kind="maintenance", profile="testing", own_sandbox=True):
        second = RootLock(root, kind="maintenance", profile="testing", own_sandbox=True)
        with pytest.raises(DataRootInUseError) as refused:
            second.acquire("purge sessions", timeout=0)
    message = str(refused.value)
    assert message.endswith(
        "that is this process: close the storage it opened first (`.close()`, or leave its "
        "`with` block) before opening it again, or use that one. `app status` shows the holder"
    )
    assert "kill" not in message
