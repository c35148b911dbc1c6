"""A kill -9 before every change a store operation makes on disk, one at a time (red team 18).

The random kill -9 replay (tests/test_integrity.py) hits creates, uploads, replaces and
deletes where a timer happens to land. Here each operation, restores and the purge included,
runs in a child that sends itself SIGKILL just before its N-th change to the filesystem (an
open for writing, a rename, an unlink, a mkdir, an rmdir: Python's audit events), for every N
until the operation completes. After each kill the root is opened again, repaired as a
server's start-up repairs it, and must hold every byte it held before, in a session or in the
trash, and pass a second check clean. After a replace's kills the start-up is killed too, at
each of its changes: in the suite after one crash point of each kind of start-up (`SWEEP`),
after every one with ``RT_CRASH_POINTS_SWEEP=1`` (``bash scripts/sweeps``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import step_ahead

from app.config import Config, load
from app.storage import open_storage
from app.store import Store

#: One store operation by name, as the red teams' children run it (their code includes it).
RUN_OPERATION = """
def run_operation(store, op, args):
    if op == "replace":
        store.put_file(args[0], args[1], args[2].encode(), replace=True)
    elif op == "upload":
        store.put_file(args[0], args[1], args[2].encode())
    elif op == "delete-file":
        store.delete_file(*args)
    elif op == "delete-session":
        store.delete_session(*args)
    elif op == "restore-file":
        store.restore(args[0], file=args[1])
    elif op == "restore-session":
        store.restore(args[0])
    elif op == "purge":
        store.purge()
    elif op == "empty-trash":
        store.empty_trash()
    elif op == "create":
        store.create_session(*args)
    elif op == "create-many":  # the server's committer's batch (app.server.committer)
        made = store.create_sessions([(title, None) for title in args])
        assert not [m for m in made if isinstance(m, Exception)], made
    elif op == "repair":
        store.check(repair=True)
    else:
        raise ValueError(f"no store operation {op!r}")
"""

#: For a zygote that has imported the app (after `from app.config import load`): the settings
#: loaded once, before its first fork, as its children load them (`env`: their environment,
#: their root), so that each child's own load() finds dynaconf's and the app's caches warm:
#: about 14 ms of CPU a child before, 4 ms after (bench/README.md, "The suite after suite12").
#: Each child still loads, and checks, its own; a load writes nothing.
WARM_UP = """
WARMED = []


def warm_up(env):
    if not WARMED:
        WARMED.append(True)
        os.environ.clear()
        os.environ.update(env)
        try:
            load()
        except Exception:
            pass  # the child meets it again, and answers it
"""

#: For a zygote (after `from app.config import load`, `import json, os`): the settings of an
#: environment loaded once in the zygote, with that environment, for each child forked with
#: it to take. The steps of one case share an environment (their root is a fresh copy of one
#: template at one path, which is what a load there finds), and each child's own load walked
#: the process tree again to find its run; each child still opens its store afresh, checking
#: the root and walking (bench/README.md, "perf-suite73a"). A load that failed is raised in
#: the child, as its own load raised it.
SETTINGS_ONCE = """
SETTINGS = {}


def settings(env):
    key = json.dumps(env, sort_keys=True)
    if key not in SETTINGS:
        os.environ.clear()
        os.environ.update(env)
        try:
            SETTINGS[key] = load()
        except Exception as error:
            SETTINGS[key] = error
    return SETTINGS[key]


def loaded(config):
    if isinstance(config, Exception):
        raise config
    return config
"""

# Each case runs in a child forked from one "zygote" that has already imported the app: a
# fresh interpreter per case (~0.4 s of start-up, 176 cases) made this file the slowest
# of the suite. The child is still a process of its own, with the test's environment, that
# SIGKILLs itself in its audit hook, just before the syscall of its N-th change; the zygote only
# imports, and loads the settings of each environment once (which writes nothing,
# `SETTINGS_ONCE`), so every child starts from the state a fresh interpreter has after its
# imports and its load, and makes every change of its own.
_ZYGOTE = (
    RUN_OPERATION
    + SETTINGS_ONCE
    + """
import json, os, re, signal, sys, traceback

from app.config import load
from app.storage import open_storage

# What loading the settings and opening a store import lazily: a case pays for a fork.
import _strptime, dynaconf, dynaconf.loaders.toml_loader, filelock
import app.dataroot, app.store.concurrency

WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC


# What makes two changes alike, where they differ by name only: hex ids, a trash entry's
# time, the random part of a temporary file's name.
ALIKE = re.compile(r"[0-9a-f]{8,}|[0-9]{8}T[0-9]+Z|(?<=-)[a-z0-9_]{8}(?=[.]part$)")


CHANGES = []  # the child's changes so far: said once it has run to its end


def child(op, crash_at, args, config):
    changes = CHANGES

    def crash_before_the_change(event, details):
        if event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir") or (
            event == "open" and isinstance(details[2], int) and details[2] & WRITES
        ):
            if len(changes) >= crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            where = details[0]
            if isinstance(where, (str, bytes, os.PathLike)):
                where = os.path.relpath(os.fsdecode(where), os.environ["APP_DATA_ROOT"])
            changes.append(f"{event} {ALIKE.sub('*', str(where))}")

    if op != "start":  # a start-up's own changes (the lock, .tmp/, the repair) are crashed too
        store = open_storage(loaded(config), writer=True, kind="tests", wanted="run one operation")
    sys.addaudithook(crash_before_the_change)
    if op == "start":
        store = open_storage(
            loaded(config), writer=True, kind="tests", wanted="start as a server does"
        )
        store.check(repair=True, thorough=False)
    else:
        run_operation(store, op, args)
    store.close()


for line in sys.stdin:
    request = json.loads(line)
    config = settings(request["env"])
    errors_r, errors_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(errors_r)
        os.dup2(errors_w, 1)  # the zygote's stdout carries its answers: none of the child's
        os.dup2(errors_w, 2)
        os.environ.clear()
        os.environ.update(request["env"])
        code = 0
        try:
            child(request["op"], request["crash_at"], request["args"], config)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        # Exit as an interpreter does at its end (atexit handlers, under the audit hook
        # still), but without the zygote's loop and stdin: a child never returns to them.
        import atexit
        atexit._run_exitfuncs()
        print("CHANGES", json.dumps(CHANGES), file=sys.stderr, flush=True)
        os._exit(code)
    os.close(errors_w)
    with os.fdopen(errors_r, errors="replace") as errors:
        stderr = errors.read()
    _, status = os.waitpid(pid, 0)
    answer = {"returncode": os.waitstatus_to_exitcode(status), "stderr": stderr}
    print(json.dumps(answer), flush=True)
"""
)


class Zygote:
    """A Python process that has imported the app and forks one child per `run`."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, op: str, crash_at: int, args: list[str], root: Path) -> bool:
        """Run ``op`` in a child killed before its change ``crash_at``; whether it completed.

        The child gets this process's environment as it is now, on the data root `root`."""
        assert self.process.stdin is not None and self.process.stdout is not None
        env = {**os.environ, "APP_DATA_ROOT": str(root)}
        request = {"op": op, "crash_at": crash_at, "args": args, "env": env}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the zygote exited with {self.process.wait()}"
        answer = json.loads(line)
        assert answer["returncode"] in (0, -9), answer["stderr"]
        said = [line for line in answer["stderr"].splitlines() if line.startswith("CHANGES ")]
        #: The changes of the last run that completed, each as its audit event and where,
        #: names made alike (`ALIKE`); empty after a run killed.
        self.changes: list[str] = json.loads(said[-1].split(" ", 1)[1]) if said else []
        return bool(answer["returncode"] == 0)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait() == 0


@pytest.fixture(scope="module")
def zygotes() -> Iterator[list[Zygote]]:
    """One zygote per lane of `step_ahead.steps` (two in a serial run, one under xdist)."""
    started = [Zygote() for _ in range(step_ahead.width())]
    yield started
    for zygote in started:
        zygote.close()


_NOT_CONTENT = {".server.lock", ".app-profile.json", "audit.jsonl", "trash.json", "session.json"}


def contents(root: Path, *, trash: bool = True) -> set[str]:
    """The SHA-256 of every byte string the root keeps for a user: blobs, in sessions or trash
    (``trash=False``: in sessions only)."""
    found = set()
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        skipped = {".tmp"} if trash else {".tmp", ".trash"}
        if not path.is_file() or path.name in _NOT_CONTENT or parts[0] in skipped:
            continue
        if "records" in parts:
            continue
        found.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def sha(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


def open_store(config: Config) -> Store:
    store = open_storage(config, writer=True, kind="tests", wanted="check after a crash")
    assert isinstance(store, Store)
    return store


@pytest.fixture
def template(app_config: Config, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A root with a session of two files, a replaced version, a deleted file and session."""
    with open_store(app_config) as store:
        ids = fill_template(store)
    saved = tmp_path / "template"
    shutil.copytree(app_config.data_root, saved, symlinks=True)
    return saved, ids


def fill_template(store: Store) -> dict[str, str]:
    """Make `template`'s sessions in ``store``: their ids, as ``keep`` and ``gone``."""
    keep = store.create_session("kept")["id"]
    store.put_file(keep, "a.txt", b"a, version 1")
    store.put_file(keep, "a.txt", b"a, version 2", replace=True)
    store.put_file(keep, "b.txt", b"b")
    store.put_file(keep, "gone.txt", b"deleted file")
    store.delete_file(keep, "gone.txt")
    # Named as a trash entry's manifest, whose bytes once went over it (red team 38).
    store.put_file(keep, "trash.json", b"a user's JSON, version 1")
    store.put_file(keep, "trash.json", b"a user's JSON, version 2", replace=True)
    gone = store.create_session("deleted")["id"]
    store.put_file(gone, "c.txt", b"in a deleted session")
    store.delete_session(gone)
    return {"keep": keep, "gone": gone}


OPERATIONS: dict[str, tuple[str, list[str]]] = {
    "replace": ("replace", ["{keep}", "a.txt", "a, version 3"]),
    "upload": ("upload", ["{keep}", "new.txt", "a new file"]),
    "delete-file": ("delete-file", ["{keep}", "b.txt"]),
    "replace-trash-json": ("replace", ["{keep}", "trash.json", "a user's JSON, version 3"]),
    "delete-trash-json": ("delete-file", ["{keep}", "trash.json"]),
    "delete-session": ("delete-session", ["{keep}"]),
    "restore-file": ("restore-file", ["{keep}", "gone.txt"]),
    "restore-session": ("restore-session", ["{gone}"]),
    "purge": ("purge", []),
    "create": ("create", ["new session"]),
    "create-many": ("create-many", ["one", "two", "three"]),
    "empty-trash": ("empty-trash", []),
}


# The operation whose half-made states the start-up's repair has most to do for (a retired
# blob to move, a trash entry to finish or remove); a killed start-up is run for it only,
# as it costs a child per change of the start-up for every change of the operation.
KILLED_START_UPS = {"replace"}

#: Whether the start-up is killed at each of its changes after every crash point of those
#: operations (``RT_CRASH_POINTS_SWEEP=1``; docs/explanation/attacks/, "Longer runs by
#: hand"). Without it, only after the crash points whose start-up makes changes that no
#: start-up killed before it made: a kind of its own (the audit events in order, and what
#: each changes, names made alike). After every crash point a start-up still runs to its end
#: and the root the kill left is checked; the kinds come from what the code does, not from a
#: list kept here. For replace, six kinds of nine crash points (2026-12-05; the three that
#: repeat one: after the upload's rename, as after the change before it; after the open of
#: the audit log or of the next temporary file, as after that of the trash entry's
#: manifest): 56 killed start-ups, not 87.
SWEEP = bool(os.environ.get("RT_CRASH_POINTS_SWEEP"))


@pytest.mark.parametrize("name", OPERATIONS)
def test_a_kill_before_any_change_of_an_operation_loses_no_byte_and_leaves_a_clean_root(
    app_config: Config, template: tuple[Path, dict[str, str]], zygotes: list[Zygote], name: str
) -> None:
    saved, ids = template
    op, raw_args = OPERATIONS[name]
    args = [arg.format(**ids) for arg in raw_args]
    # Emptying the trash removes its bytes on purpose, each entry in its turn.
    before = contents(saved, trash=name != "empty-trash")
    root = app_config.data_root
    # Each kill on a fresh copy, the next one run meanwhile on a second root if a core is
    # spare (tests/step_ahead.py). With killed start-ups, those are the steps run ahead.
    lanes = step_ahead.lanes(root)
    configs = [on_root(app_config, lane) for lane in lanes]

    def kill(crash_at: int, lane: int) -> bool:
        shutil.rmtree(lanes[lane], ignore_errors=True)
        shutil.copytree(saved, lanes[lane], symlinks=True)
        return zygotes[lane].run(op, crash_at, args, lanes[lane])

    crashed = root.with_name("crashed")

    def start(start_at: int, lane: int) -> bool:
        shutil.rmtree(lanes[lane], ignore_errors=True)
        shutil.copytree(crashed, lanes[lane], symlinks=True)
        return zygotes[lane].run("start", start_at, [], lanes[lane])

    ahead = 1 if name in KILLED_START_UPS else len(lanes)
    swept: list[tuple[str, ...]] = []  # the start-ups killed at each change, by kind
    with step_ahead.steps(kill, ahead) as kills:
        for crash_at, lane, completed in kills:
            if not completed and name in KILLED_START_UPS:
                # And the start-up that finds what the kill left is killed too, at each change
                # (a sample without SWEEP): first run to its end, for the changes it makes.
                shutil.rmtree(crashed, ignore_errors=True)
                shutil.copytree(root, crashed, symlinks=True)
                assert start(sys.maxsize, 0), f"{name} at {crash_at}: the start-up was killed"
                kind = tuple(zygotes[0].changes)
                assert kind, f"{name} at {crash_at}: a start-up that changed nothing"
                if SWEEP or kind not in swept:
                    swept.append(kind)
                    with step_ahead.steps(start, len(lanes)) as starts:
                        for start_at, start_lane, started in starts:
                            if started:
                                break
                            what = f"{name} at {crash_at}, start at {start_at}"
                            check_after_crashes(configs[start_lane], before, what)
                shutil.rmtree(root)
                shutil.copytree(crashed, root, symlinks=True)
            after = check_after_crashes(configs[lane], before, f"{name} at {crash_at}")
            if completed:
                break
    assert crash_at > 0
    print(f"{name}: killed before each of its {crash_at} changes")
    if name in KILLED_START_UPS:
        print(f"{name}: start-ups killed at each change after {len(swept)} of them,")
        print(f"{len(set(swept))} kinds of start-up")
    if name in {"replace", "upload"}:
        assert sha(args[2]) in after


def on_root(config: Config, root: Path) -> Config:
    """`config` (the test's), on the data root `root`."""
    if root == config.data_root:
        return config
    return load("testing", environ={**os.environ, "APP_DATA_ROOT": str(root)})


def check_after_crashes(config: Config, before: set[str], what: str) -> set[str]:
    """Open, repair and check the root; every byte of ``before`` is still kept."""
    root = config.data_root
    with open_store(config) as store:
        store.check(repair=True)
        report = store.check(repair=False)
        assert not report.findings, (what, [f.to_dict() for f in report.findings])
        after = contents(root)
        assert not before - after, f"{what}: bytes lost"
        for session in store.iter_all():
            for entry in session["files"]:
                handle, served = store.open_file(session["id"], entry["name"])
                with handle:
                    assert hashlib.sha256(handle.read()).hexdigest() == served["sha256"]
    return after
