"""``GET /sessions`` with a page of 100, as the number of sessions grows.

Sessions are seeded directly through the `Store` (in process, holding the root's lock;
fsync is skipped while seeding, which only makes the seeding faster), then an ``app serve``
on 127.0.0.1 answers ``GET /sessions?limit=100``: the first page and pages after random
cursors, over one keep-alive connection. Reported: median and 90th percentile latency in
milliseconds, over HTTP (the server holds the lock, so it lists from its in-memory index
of ids) and for `Store.list_sessions` on a read-only root (what ``app sessions list`` and
any reader do: scan and sort the directory on every call), at each size.

Run: ``.venv/bin/python bench/listing.py [--sizes 1000,10000,100000] [--requests 200]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TOKEN, app_env, app_server, median


def seed(root: Path, count: int) -> None:
    """Create sessions until the root holds ``count`` of them."""
    from app.config import load
    from app.dataroot import open_root
    from app.store import Store

    config = load("development", environ=app_env(root))
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # seeding only: durability is not what is measured here
    try:
        with open_root(config, kind="maintenance", wanted="seed sessions") as opened:
            store = Store(opened)
            missing = count - len(store.session_ids())

            def work(n: int) -> None:
                for i in range(n):
                    store.create_session(f"session {i}", {"seeded": True})

            threads = [threading.Thread(target=work, args=(missing // 4,)) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            work(count - len(store.session_ids()))
    finally:
        os.fsync = real_fsync


def in_process(root: Path, requests: int) -> list[float]:
    from app.config import load
    from app.dataroot import open_root
    from app.store import Store

    config = load("development", environ=app_env(root))
    store = Store(open_root(config, write=False))
    ids = store.session_ids()
    times = []
    for _ in range(requests):
        after = random.choice(ids)
        start = time.perf_counter()
        page = store.list_sessions(limit=100, after=after)
        times.append(time.perf_counter() - start)
        assert page.total == len(ids)
    return times


def over_http(url: str, root: Path, requests: int) -> tuple[list[float], list[float]]:
    from app.config import load
    from app.dataroot import open_root
    from app.store import Store

    config = load("development", environ=app_env(root))
    ids = Store(open_root(config, write=False)).session_ids()
    first, cursor = [], []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        client.get("/sessions", params={"limit": 100}).raise_for_status()  # warm-up
        for i in range(requests):
            params: dict[str, str | int] = {"limit": 100}
            if i % 2:
                params["after"] = random.choice(ids)
            start = time.perf_counter()
            response = client.get("/sessions", params=params)
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            assert response.json()["total"] == len(ids)
            (cursor if i % 2 else first).append(elapsed)
    return first, cursor


def ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(median(values) * 1000, 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--work-dir", help="where the data root goes (default: the system temp)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-listing-", dir=args.work_dir) as work:
        root = Path(work) / "data"
        for size in sizes:
            started = time.perf_counter()
            seed(root, size)
            seeded = time.perf_counter() - started
            store_times = in_process(root, args.requests)
            with app_server(root, Path(work) / "app.log") as app:
                first, cursor = over_http(app.url, root, args.requests)
            row = {
                "sessions": size,
                "seed_seconds": round(seeded, 1),
                "http_first_page": ms(first),
                "http_after_cursor": ms(cursor),
                "reader_scan": ms(store_times),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("\nGET /sessions?limit=100, latency in ms (median / p90):")
    names = ("sessions", "HTTP first page", "HTTP after cursor", "reader scan")
    print(f"  {names[0]:>9}  {names[1]:>16}  {names[2]:>18}  {names[3]:>14}")
    for row in results:
        cells = [
            f"{row[key]['median_ms']:.2f} / {row[key]['p90_ms']:.2f}"  # type: ignore[index]
            for key in ("http_first_page", "http_after_cursor", "reader_scan")
        ]
        print(f"  {row['sessions']:>9}  {cells[0]:>16}  {cells[1]:>18}  {cells[2]:>14}")


if __name__ == "__main__":
    main()
