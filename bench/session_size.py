"""What a file change costs as its session grows, against the same change in an empty session.

Each upload, replace and delete of a file works out, under the session's lock, when the
change happened: no earlier than just after the session's newest change
(`app.store.records.change_floor`, which keeps a stepped-back clock from dating a change
before the one it follows), and a new name counts the session's files against
``max_files_per_session``. Both read the whole session, so their cost grows with its files,
which ``max_files_per_session`` (10,000 by default) bounds. This measures how much.

In one process on a data root of its own (``--work-dir``, default the system's temporary
directory), for each of ``--sizes``: a fresh session is filled to that many files (with
``fsync`` switched off while filling only), then ``--calls`` of each change are timed one by
one with every ``fsync`` made: a new name's upload, a replace of an existing name, a delete.
Also timed alone, under the session's lock, the part that reads the whole session (the
change's floor and one count of its files); and an upload made a second after the session's
last change, when what the store keeps of its records is due to be read again (a write
trusts it a second at most). The sizes are measured in turn for ``--rounds``
rounds, so that the disk's drift touches each alike. The store watches its sessions as a
server does (`Store.watch_sessions`), so that what it keeps of each session is trusted for
a minute, not a second. Reported: the median per call, in ms,
with its ratio to the same call in the empty session of the same run, and the whole-session
part's share of an upload.

Run: ``.venv/bin/python bench/session_size.py [--sizes 0,1000,3000,9000] [--calls 20] [--rounds 3]
[--work-dir DIR] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import app_env, median

if TYPE_CHECKING:
    from app.store import Store


def _timed(call: Callable[[int], object], calls: int) -> list[float]:
    """The wall times of ``calls`` calls of ``call(i)``, in ms."""
    times = []
    for i in range(calls):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1000)
    return times


def fill(store: Store, size: int) -> str:
    """A new session of ``size`` files (``fsync`` off while filling only)."""
    session_id = store.create_session(f"{size} files")["id"]
    real_fsync = os.fsync
    os.fsync = lambda fd: None
    try:
        for i in range(size):
            store.put_file(session_id, f"seed-{i:05d}.txt", b"x")
    finally:
        os.fsync = real_fsync
    return session_id


def measure(store: Store, session_id: str, calls: int, rnd: int) -> dict[str, list[float]]:
    """One round of each change on ``session_id``, every fsync made."""
    files = store.files
    with files.sessions.locked(session_id) as directory:

        def whole_session(_: int) -> None:
            files.floor(directory, session_id, None)
            files._refuse_one_file_too_many(session_id, directory / "records")

        in_lock = _timed(whole_session, calls)
    name = f"new-{rnd}-{{:05d}}.txt".format
    return {
        "upload": _timed(lambda i: store.put_file(session_id, name(i), b"y"), calls),
        "replace": _timed(lambda i: store.put_file(session_id, name(i), b"z", replace=True), calls),
        "delete": _timed(lambda i: store.delete_file(session_id, name(i)), calls),
        "whole session": in_lock,
        "upload, 1 s on": _spaced(store, session_id, f"late-{rnd}-{{:05d}}.txt".format),
    }


def _spaced(store: Store, session_id: str, name: Callable[[int], str]) -> list[float]:
    """Uploads made once what the store keeps of the session's records is due again (a
    write trusts it a second at most: `app.store.sessions.RECORDS_MAX_AGE_SECONDS`)."""
    times = []
    for i in range(SPACED):
        time.sleep(1.1)
        start = time.perf_counter()
        store.put_file(session_id, name(i), b"y")
        times.append((time.perf_counter() - start) * 1000)
    return times


SPACED: Final = 2  # such uploads per size and round


KINDS = ("upload", "replace", "delete", "whole session", "upload, 1 s on")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,1000,3000,9000", help="files per session, 0 first")
    parser.add_argument("--calls", type=int, default=20, help="timed calls of each, per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the sizes in turn")
    parser.add_argument("--work-dir", default=None, help="where the data root is made")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if (
        sizes[0] != 0
        or any(not 0 <= s <= 9_900 for s in sizes)
        or not (1 <= args.calls <= 100 and 1 <= args.rounds <= 10)
    ):
        parser.error(
            "keep it bounded: --sizes from 0, each at most 9900; --calls 1..100, --rounds 1..10"
        )

    from app.config import load
    from app.dataroot import open_root
    from app.store import Store

    with tempfile.TemporaryDirectory(prefix="bench-size-", dir=args.work_dir) as work:
        config = load("development", environ=app_env(Path(work) / "data"))
        with open_root(config, kind="maintenance", wanted="bench session size") as root:
            store = Store(root)
            watched = store.watch_sessions()  # as a server does: records kept on inotify's word
            sessions = {size: fill(store, size) for size in sizes}
            times: dict[int, dict[str, list[float]]] = {s: {k: [] for k in KINDS} for s in sizes}
            for rnd in range(args.rounds):  # the sizes in turn: drift touches each alike
                for size, session_id in sessions.items():
                    for kind, values in measure(store, session_id, args.calls, rnd).items():
                        times[size][kind].extend(values)
    rows = [
        {"files": size, **{k: round(median(v), 3) for k, v in times[size].items()}}
        for size in sizes
    ]
    report = {
        "rows": rows,
        "watched": watched,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("median ms per call (ratio to the empty session); whole session: its share of an upload")
    print(f"{'files':>6} " + " ".join(f"{k:>18}" for k in KINDS))
    for row in rows:
        cells = [f"{row[k]:7.2f} ({row[k] / rows[0][k]:4.2f} x)" for k in KINDS]
        cells[3] = f"{row['whole session']:7.2f} ({row['whole session'] / row['upload']:4.0%})"
        print(f"{row['files']:6d} " + " ".join(f"{c:>18}" for c in cells))
    print(f"sessions watched: {watched}; load average {report['load_average']}")


if __name__ == "__main__":
    main()
