"""Whether a create's own fsyncs can be shared: red team 29's power-loss model asked.

A durable create makes three fsyncs (bench/README.md, "Create-session throughput"): its
``session.json``, its staging directory ``sessions/.new-<id>/`` (which makes the file's name
durable), and its share of one fsync of ``sessions/`` (the rename). Could the staging
directories' fsyncs of a batch be one: each staging directory made inside one batch directory,
that parent synced once?

Each way is run for real under ``strace`` (a child process that makes ``--sessions`` sessions as
a batch and writes ``ACK create <id>`` to ``/dev/null`` once it would answer), and the trace
replayed by ``tests/powerloss.py`` (POSIX's weakest promise: a name is durable once the
directory holding it is synced, and only then). Reported: for every state a power cut can
leave after an fsync, the acknowledged sessions whose ``session.json`` is not there.

- ``each``: what the app does (`app.store.sessions.Sessions.create_many`);
- ``parent``: the staging directories inside ``sessions/.batch/``, that directory synced once
  instead of each staging directory.

(``O_TMPFILE`` and ``linkat`` were not replayed: the model refuses ``linkat``, which it does
not model. The name ``linkat`` gives is an entry of the staging directory like the one
``O_CREAT`` gives, durable by the same fsync, and it is one more system call.)

Not run by pytest (it needs strace). Run: ``.venv/bin/python bench/staging_syncs.py``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
WAYS = ("each", "parent")


def child(root: str, way: str, count: int) -> None:
    """The batch, made one way (run under strace)."""
    sessions = f"{root}/sessions"
    os.mkdir(sessions, 0o700)  # noqa: PTH102 - the call strace shows
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    sessions_fd = os.open(sessions, os.O_RDONLY | os.O_DIRECTORY)
    ack = os.open(os.devnull, os.O_WRONLY)
    parent = sessions
    if way == "parent":
        parent = f"{sessions}/.batch"
        os.mkdir(parent, 0o700)  # noqa: PTH102 - the call strace shows
        os.fsync(sessions_fd)  # the batch directory's own name, durable
    ids = [f"s{n}" for n in range(count)]
    dirs = []
    for name in ids:
        staging = f"{parent}/.new-{name}"
        os.mkdir(staging, 0o700)  # noqa: PTH102 - the call strace shows
        dirs.append(os.open(staging, os.O_RDONLY | os.O_DIRECTORY))
        body = b'{"id": "%s"}' % name.encode()
        file = os.open(f"{staging}/session.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(file, body)
        os.fsync(file)
        os.close(file)
    if way == "parent":
        batch = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(batch)
        os.close(batch)
    else:
        for staging_fd in dirs:
            os.fsync(staging_fd)
    for staging_fd in dirs:
        os.close(staging_fd)
    for name in ids:
        os.rename(f"{parent}/.new-{name}", f"{sessions}/{name}")  # noqa: PTH104 - the call strace shows
    os.fsync(sessions_fd)
    if way == "parent":  # the renames out of it, durable on both sides
        batch = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(batch)
        os.close(batch)
    for name in ids:
        os.write(ack, b"ACK create " + name.encode())


def replay(way: str, count: int) -> dict[str, object]:
    sys.path.insert(0, str(PROJECT / "tests"))
    from powerloss import TRACED, Model, parse, snapshot

    with tempfile.TemporaryDirectory(prefix="bench-staging-", dir="/var/tmp") as work:
        base, empty, log = Path(work) / "disk", Path(work) / "empty", Path(work) / "trace.log"
        base.mkdir()
        empty.mkdir()
        subprocess.run(
            [
                *("strace", "-f", "-qq", "-y", "-xx", "-s", "65536", "-o", str(log)),
                *("-e", f"trace={TRACED}", sys.executable, __file__, "--child", way),
                *(str(base), str(count)),
            ],
            check=True,
        )
        calls = parse(log.read_text())
        syncs = sum(1 for call in calls if call.name == "fsync")
        lost: set[str] = set()
        states = list(Model(base, snapshot(empty)).durable_states(calls))
        for state in states:
            for label in state.acked:
                name = label.split()[-1]
                if state.tree.get(f"sessions/{name}/session.json") is None:
                    lost.add(name)
        return {
            "fsyncs": syncs,
            "acknowledged": len(states[-1].acked),
            "acknowledged, session.json lost in some power cut": len(lost),
            "system calls traced": len(calls),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4, help="sessions in the batch")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        way, root, count = args.child
        child(root, way, int(count))
        return
    if shutil.which("strace") is None:
        raise SystemExit("strace is not installed: the power-loss model replays its trace")
    for way in WAYS:
        found = replay(way, args.sessions)
        print(f"{way:<8} " + ", ".join(f"{key} {value}" for key, value in found.items()))


if __name__ == "__main__":
    main()
