"""What session 67's checksums add to a write and a listing, in CPU time (branch rows67).

Usage (from the project directory)::

    .venv/bin/python bench/rows67_checksums.py [--calls 20000] [--rounds 7]

A delete (of a session or a file) now writes its trash entry's ``trash.json`` with the
SHA-256 of its fields (`app.store.records.manifest_sha256`); an upload on PostgreSQL writes
its file row's key (`app.store.records.record_sha256`), which every read of the row
compares; and a listing of the trash
compares each entry's, locally, or each trashed session's row's ``content_sha256``, on
PostgreSQL (`app.remote.rows.content_fault`); the reads of ``session.json`` and records
only test one more flag. These are the calls added, each timed on its own (the best of
``--rounds`` rounds of ``--calls`` calls, process CPU time): a whole delete costs
milliseconds of system calls and fsyncs, which no change here touches. Beside them, the
keyed MAC a signature would need (`hmac.digest` with a 32-byte key) against the plain
SHA-256 of the same bytes, the choice the brief asked to measure.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import time
from collections.abc import Callable

from app.dataroot import json_bytes
from app.remote.rows import content_fault, updated_sha256
from app.store.records import (
    CONTENT_KEY,
    content_sha256,
    manifest_changed,
    manifest_sha256,
    record_sha256,
)


def _best(call: Callable[[], object], calls: int, rounds: int) -> float:
    """The best of ``rounds`` rounds' CPU time per call, in microseconds."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            call()
        times.append((time.process_time() - started) / calls * 1e6)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    manifest = {
        "kind": "file",
        "session_id": "01a24d9aae7e76abb5c1c13fe6a8ce29",
        "file": "report.pdf",
        "deleted_at": "2026-12-06T23:03:20.186045+00:00",
        "reason": "delete",
        "title": None,
        "entry": {
            "name": "report.pdf",
            "size": 12345,
            "sha256": "ab" * 32,
            "uploaded_at": "2026-12-06T23:03:20.170346+00:00",
            CONTENT_KEY: "cd" * 32,
        },
        "blob": "01a24d9aae7e76abb5c1c13fe6a8ce30",
        "boot": {"id": "0" * 36, "seconds": 1234.5},
    }
    keyed = {**manifest, CONTENT_KEY: manifest_sha256(manifest)}
    row = {
        "id": "01a24d9aae7e76abb5c1c13fe6a8ce29",
        "title": "a trashed session",
        "metadata": {"run": 1, "tags": ["a", "b"]},
        "created_at": "2026-12-06T23:03:20.170346+00:00",
    }
    row[CONTENT_KEY] = content_sha256(row)
    data = json_bytes(manifest)
    key = b"k" * 32
    results = {
        "manifest_sha256 (a delete's trash.json)": _best(
            lambda: manifest_sha256(manifest), args.calls, args.rounds
        ),
        "manifest_changed (each entry a local trash listing reads)": _best(
            lambda: manifest_changed(keyed, hashed=True), args.calls, args.rounds
        ),
        "record_sha256 (each upload's file row on PostgreSQL, and each read of one)": _best(
            lambda: record_sha256(manifest["entry"]), args.calls, args.rounds
        ),
        "updated_sha256 (each write that sets a session's updated_at, each read of one)": _best(
            lambda: updated_sha256(row["id"], row["created_at"]), args.calls, args.rounds
        ),
        "content_fault (each trashed row a PostgreSQL trash listing reads)": _best(
            lambda: content_fault(row, hashed=True), args.calls, args.rounds
        ),
        "sha256 of the manifest's bytes": _best(
            lambda: hashlib.sha256(data).hexdigest(), args.calls, args.rounds
        ),
        "hmac.digest of the same bytes (a keyed MAC)": _best(
            lambda: hmac.digest(key, data, "sha256").hex(), args.calls, args.rounds
        ),
    }
    for what, micros in results.items():
        print(f"{micros:8.2f} us  {what}")
    print(f"trash.json: {len(data)} bytes before, {len(json_bytes(keyed))} with its key")


if __name__ == "__main__":
    main()
