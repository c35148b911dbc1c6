"""What the event loop pays for ``GET /sessions/{id}`` and ``GET /sessions?limit=100``.

For the local store the server answers a get and a page of up to 100 on its event loop, so
their in-process cost is added to every loop iteration that all other requests wait for.
This seeds a data root with ``--seed`` sessions (a quarter of them with one to four files),
as ``bench/load.py`` does, waits until their files have settled (the caches keep nothing
changed in the last two seconds), then times, in one process, both ways to make each answer:

* **bytes**: ``get_session_json`` / ``list_sessions_json``, what the routes send as is (the
  local store keeps each session encoded while its files are unchanged);
* **dict + encode**: ``get_session`` / ``list_sessions`` and Starlette's ``JSONResponse``,
  what the routes did before;
* **bytes, watched**: the bytes again once the store trusts the kernel's change events for
  kept answers (``Store.watch_sessions``, what a server does) instead of three stat calls a
  session (``watched_us``; absent where inotify cannot be had).

Reported: the best of ``--repeat`` timings, in microseconds per call, for a random session
and for a page of 100 after a random cursor, and the ratio of the two ways.

Run: ``.venv/bin/python bench/session_reads.py [--seed 1200] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import app_env
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from app.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1200, help="sessions in the data root")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 101 <= args.seed <= 100_000:
        parser.error("keep the run bounded: --seed in [101, 100000]")

    from app.config import load
    from app.dataroot import open_root
    from app.store import Store

    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="bench-reads-") as work:
        config = load("development", environ=app_env(Path(work) / "data"))
        real_fsync = os.fsync
        os.fsync = lambda fd: None  # seeding only: durability is not what is measured here
        try:
            with open_root(config, kind="maintenance", wanted="bench session reads") as root:
                store = Store(root)
                ids = [
                    store.create_session(f"session {i}", {"seeded": True, "n": i})["id"]
                    for i in range(args.seed)
                ]
                for session_id in rng.sample(ids, args.seed // 4):
                    for k in range(rng.randint(1, 4)):
                        store.put_file(session_id, f"file-{k}.txt", b"x" * 4096)
                os.fsync = real_fsync
                time.sleep(2.1)  # settled: what a server reads again and again
                result = measure(store, ids, config.page_max_bytes, rng, args.repeat)
        finally:
            os.fsync = real_fsync
    result["seed"] = args.seed
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for kind in ("get", "page of 100"):
        row = result[kind]
        assert isinstance(row, dict)
        print(
            f"{kind:12} bytes {row['bytes_us']:8.1f} us   dict + encode {row['dict_us']:8.1f} us"
            f"   {row['ratio']:.1f} x   bytes, watched {row.get('watched_us', 'n/a')} us"
        )
    print(f"load average {result['load_average']}")


def measure(
    store: Store, ids: list[str], max_bytes: int, rng: random.Random, repeat: int
) -> dict[str, dict[str, float]]:
    cursors = ids[: len(ids) - 100]

    def get_bytes() -> bytes:
        return store.get_session_json(rng.choice(ids))

    def get_dict() -> bytes:
        return JSONResponse(store.get_session(rng.choice(ids))).body

    def page_bytes() -> bytes:
        return store.list_sessions_json(limit=100, after=rng.choice(cursors), max_bytes=max_bytes)

    def page_dict() -> bytes:
        page = store.list_sessions(limit=100, after=rng.choice(cursors), max_bytes=max_bytes)
        return JSONResponse(page.to_dict()).body

    def best(call: Callable[[], bytes], number: int) -> float:
        for _ in range(number // 10):
            call()  # warm: every session read once
        return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6

    result: dict[str, dict[str, float]] = {}
    for kind, fast, slow, number in [
        ("get", get_bytes, get_dict, 2000),
        ("page of 100", page_bytes, page_dict, 200),
    ]:
        fast_us, slow_us = best(fast, number), best(slow, number)
        result[kind] = {
            "bytes_us": round(fast_us, 1),
            "dict_us": round(slow_us, 1),
            "ratio": round(slow_us / fast_us, 1),
        }
    if store.watch_sessions():
        for kind, fast, number in [("get", get_bytes, 2000), ("page of 100", page_bytes, 200)]:
            result[kind]["watched_us"] = round(best(fast, number), 1)
    return dict(result)


if __name__ == "__main__":
    main()
