"""The system calls a durable create makes in the server: `strace -c -f` of ``app serve``.

One ``app serve`` on 127.0.0.1 (as ``bench/create_sessions.py`` starts it), warmed with 200
creates; then ``strace -f -c`` is attached to every thread of the server (not the client)
while ``--creates`` creates are sent over ``--concurrency`` keep-alive connections, and
detached. Printed: each system call's count per create and its time per create as strace
reports it (the kernel's time plus strace's own stop, so compare counts, not times), and how
many of each kind a create makes: inodes made (``mkdir`` and ``O_CREAT`` opens), renames,
fsyncs, opens. Needs ``strace``. With ``--block-device`` (the disk the work directory is on,
as named under ``/sys/block``), also the disk's write requests and cache flushes per create,
from its ``stat`` file over the same window: exact only on a disk nothing else writes to (a
loop device of its own, say, in a private mount namespace).

Run: ``.venv/bin/python bench/create_syscalls.py [--creates 1000] [--work-dir /dev/shm]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import app_server, request_bytes
from create_sessions import load


def _summary(text: str) -> dict[str, tuple[int, float]]:
    """strace -c's table: call -> (calls, seconds)."""
    calls: dict[str, tuple[int, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
            try:
                calls[parts[-1]] = (int(parts[3]), float(parts[1]))
            except ValueError:
                continue
    return calls


_TIMED = "fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat,openat,futex,write,writev"
_CALL = re.compile(r"^(\d+)\s+\S+\s+(\w+)\((.*)\)\s+=\s+(?:-?\d+|\?).*<([\d.]+)>$")
_UNFINISHED = re.compile(r"^(\d+)\s+\S+\s+(\w+)\((.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+)\s+\S+\s+<\.\.\. (\w+) resumed>(.*)\s+=\s+(?:-?\d+|\?).*<([\d.]+)>$")


def _timed(text: str, loop: int) -> dict[tuple[str, str], list[float]]:
    """strace -f -T's lines: (thread's role, call) -> each call's seconds."""
    calls: list[tuple[int, str, str, float]] = []
    pending: dict[int, tuple[str, str]] = {}
    for line in text.splitlines():
        if m := _CALL.match(line):
            calls.append((int(m[1]), m[2], m[3], float(m[4])))
        elif m := _UNFINISHED.match(line):
            pending[int(m[1])] = (m[2], m[3])
        elif m := _RESUMED.match(line):
            name, args = pending.pop(int(m[1]), (m[2], ""))
            calls.append((int(m[1]), name, args + m[3], float(m[4])))
    makes = {tid for tid, name, _, _ in calls if name in ("mkdir", "mkdirat")}
    syncs = {tid for tid, name, _, _ in calls if name in ("fsync", "fdatasync")} - makes
    by: dict[tuple[str, str], list[float]] = {}
    for tid, name, args, seconds in calls:
        role = (
            "event loop"
            if tid == loop
            else "committer"
            if tid in makes
            else "sync helper"
            if tid in syncs
            else "other"
        )
        kind = name
        if name == "openat":
            kind += "(O_CREAT)" if "O_CREAT" in args else "(dir)" if "O_DIRECTORY" in args else ""
        by.setdefault((role, kind), []).append(seconds)
    return by


def _disk(device: str | None) -> tuple[int, int] | None:
    """The device's writes and flushes completed so far (Documentation/block/stat.rst)."""
    if device is None:
        return None
    fields = Path(f"/sys/block/{device}/stat").read_text().split()
    return int(fields[4]), int(fields[15])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--work-dir", help="where the data root goes (default: the system temp)")
    parser.add_argument("--block-device", help="e.g. loop3: its writes and flushes per create")
    parser.add_argument("--timed", action="store_true", help="strace -T: each call's time")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    raw = request_bytes("POST", "/sessions", b'{"title": "bench", "metadata": {"n": 1}}')
    with (
        tempfile.TemporaryDirectory(prefix="bench-syscalls-", dir=args.work_dir) as work,
        app_server(Path(work) / "data", Path(work) / "app.log") as app,
    ):
        load(app.port, raw, 200, args.concurrency, 30)  # warm-up: every thread started
        out = Path(work) / "strace.txt"
        how = ["-T", "-tt", "-e", f"trace={_TIMED}"] if args.timed else ["-c"]
        tracer = subprocess.Popen(
            ["strace", "-f", *how, "-o", str(out), "-p", str(app.pid)],
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(1.0)  # attached to every thread (strace says so on stderr first)
            disk_before = _disk(args.block_device)
            _, count = load(app.port, raw, args.creates, args.concurrency, 120)
            disk_after = _disk(args.block_device)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait()
        if args.timed:
            _print_timed(_timed(out.read_text(), app.pid), count, args.json)
            return
        calls = _summary(out.read_text())
    per = {name: (n / count, seconds * 1e6 / count) for name, (n, seconds) in calls.items()}

    def of(*names: str) -> float:
        return sum(per.get(name, (0.0, 0.0))[0] for name in names)

    kinds = {
        "system calls": sum(n for n, _ in per.values()),
        "mkdir": of("mkdir", "mkdirat"),
        "opens (all)": of("open", "openat"),
        "fsync": of("fsync", "fdatasync"),
        "rename": of("rename", "renameat", "renameat2"),
        "lstat/stat": of("newfstatat", "lstat", "stat", "statx", "fstat"),
        "futex (thread hand-overs)": of("futex"),
    }
    if disk_before is not None and disk_after is not None:
        kinds["disk write requests"] = (disk_after[0] - disk_before[0]) / count
        kinds["disk cache flushes"] = (disk_after[1] - disk_before[1]) / count
    if args.json:
        print(json.dumps({"creates": count, "per_create": per, "kinds": kinds}, indent=2))
        return
    print(f"{count} creates, {args.concurrency} connections, load average {os.getloadavg()[0]:.1f}")
    print(f"{'call':<18} {'per create':>10} {'us per create (strace)':>24}")
    for name, (n, us) in sorted(per.items(), key=lambda kv: -kv[1][0]):
        print(f"{name:<18} {n:10.2f} {us:24.1f}")
    for kind, n in kinds.items():
        print(f"{kind}: {n:.2f} a create")


def _print_timed(by: dict[tuple[str, str], list[float]], count: int, as_json: bool) -> None:
    rows = []
    for (role, name), times in sorted(by.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
        times.sort()
        rows.append(
            {
                "thread": role,
                "call": name,
                "per_create": round(len(times) / count, 2),
                "mean_us": round(sum(times) / len(times) * 1e6),
                "p50_us": round(times[len(times) // 2] * 1e6),
                "p90_us": round(times[int(len(times) * 0.9)] * 1e6),
            }
        )
    if as_json:
        print(json.dumps({"creates": count, "calls": rows}, indent=2))
        return
    print(f"{count} creates, load average {os.getloadavg()[0]:.1f}; strace -T (its stops included)")
    print(
        f"{'thread':<12} {'call':<16} {'per create':>10} {'mean us':>8} {'p50 us':>7} {'p90 us':>7}"
    )
    for r in rows:
        print(
            f"{r['thread']:<12} {r['call']:<16} {r['per_create']:10.2f} {r['mean_us']:8}"
            f" {r['p50_us']:7} {r['p90_us']:7}"
        )


if __name__ == "__main__":
    main()
