"""The event loop's longest steps under ``bench/load.py``'s mix: which callbacks hold it.

Runs ``bench/load.py`` (its options after ``--``) with ``bench/_loop_steps/sitecustomize.py``
loaded into the server through ``PYTHONPATH``: every task step and every HTTP protocol callback
on the server's event loop is timed (wall and the loop thread's CPU), and a timer due every
millisecond records how late it runs; each garbage collection is timed (`gc.callbacks`) and the
resident memory sampled every second. Reported for the mixed phase once under way (from
``--skip`` seconds after the first create to the first page of 1,000), or for its first
``--skip`` seconds with ``--burst``: each kind of step (a route and its step number, or a
protocol callback) by its share of the loop's time in steps, its p50/p99 and longest duration,
and the longest single steps. Each step also carries the loop thread's voluntary and involuntary
context switches inside it: the loop makes no blocking call in a step, so a voluntary one is a
wait for the interpreter lock (a system call gave it away and another thread took it), an
involuntary one a preemption; each kind says how many of its steps slept or were preempted.
The wrapping costs the server some CPU, so read the shares and the longest steps, not the
load's throughput.

Run: ``.venv/bin/python bench/loop_steps.py [--top 15] [--json] [-- --seconds 15]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def collected_in(step: list[Any], collections: list[list[Any]]) -> dict[str, float]:
    """The loop thread's collections that ran inside ``step``: generation -> ms."""
    found: dict[str, float] = {}
    for start, wall, _, generation, on_loop, *_ in collections:
        if on_loop and step[0] <= start < step[0] + step[1]:
            found[str(generation)] = round(found.get(str(generation), 0) + wall * 1000, 2)
    return found


def analyse(data: dict[str, Any], skip: float, burst: bool, top: int) -> dict[str, Any]:
    steps = data["steps"]
    first_create = min(s[0] for s in steps if s[3].startswith("POST /sessions #"))
    big = [s[0] for s in steps if "limit=1000" in s[3]]
    if burst:
        start, end = first_create, first_create + skip
    else:
        start, end = first_create + skip, min(big) if big else max(s[0] for s in steps)
    chosen = [s for s in steps if start <= s[0] < end]
    busy = sum(s[1] for s in chosen)
    kinds: dict[str, list[tuple[float, float, int, int]]] = defaultdict(list)
    for _, wall, used, label, *switched in chosen:
        kinds[label].append((wall, used, *(switched or (0, 0))))
    table = []
    for label, runs in sorted(kinds.items(), key=lambda kv: -sum(r[0] for r in kv[1]))[:top]:
        walls = [r[0] for r in runs]
        table.append(
            {
                "step": label,
                "count": len(runs),
                "share": round(sum(walls) / busy, 3),
                "p50_ms": round(quantile(walls, 0.5) * 1000, 3),
                "p99_ms": round(quantile(walls, 0.99) * 1000, 3),
                "max_ms": round(max(walls) * 1000, 2),
                "cpu_p50_ms": round(quantile([r[1] for r in runs], 0.5) * 1000, 3),
                # Steps in which the loop's thread slept (waited for the interpreter lock)
                # or was taken off its core, and the time those steps took.
                "waited_gil": sum(1 for r in runs if r[2]),
                "waited_gil_s": round(sum(r[0] for r in runs if r[2]), 3),
                "preempted": sum(1 for r in runs if r[3]),
                "preempted_s": round(sum(r[0] for r in runs if r[3] and not r[2]), 3),
            }
        )
    late = [lag for at, lag in data["late"] if start <= at < end]
    walls = [s[1] for s in chosen]
    collections = [c for c in data.get("collections", []) if start <= c[0] < end]
    gc_table: dict[str, dict[str, Any]] = {}
    for generation in (0, 1, 2):
        passes = [c for c in collections if c[3] == generation]
        if not passes:
            continue
        durations = [c[1] for c in passes]
        used = [c[2] for c in passes]
        gc_table[str(generation)] = {
            "count": len(passes),
            "on_loop": sum(1 for c in passes if c[4]),
            "p50_ms": round(quantile(durations, 0.5) * 1000, 3),
            "max_ms": round(max(durations) * 1000, 2),
            "cpu_p50_ms": round(quantile(used, 0.5) * 1000, 3),
            "cpu_max_ms": round(max(used) * 1000, 2),
            "share_of_time": round(sum(durations) / (end - start), 4),
            "collected": sum(c[5] for c in passes),
        } | ({"objects_left": [c[6] for c in passes]} if generation == 2 else {})
    rss = [(at, size) for at, size in data.get("rss", []) if start <= at < end]
    return {
        "window_s": round(end - start, 2),
        "steps": len(chosen),
        "busy_share": round(busy / (end - start), 3),
        "step_p50_ms": round(quantile(walls, 0.5) * 1000, 3),
        "step_p99_ms": round(quantile(walls, 0.99) * 1000, 3),
        "steps_over_3ms": sum(1 for w in walls if w > 0.003),
        # Of the steps over 3 ms: how many slept (voluntary switches: the interpreter lock)
        # and how many were only taken off their core (involuntary ones).
        "over_3ms_slept": sum(1 for s in chosen if s[1] > 0.003 and s[4:5] and s[4]),
        "over_3ms_preempted_only": sum(
            1 for s in chosen if s[1] > 0.003 and s[4:6] and not s[4] and s[5]
        ),
        "timer_late_ms": {
            q: round(quantile(late, v) * 1000, 1) for q, v in (("p50", 0.5), ("p99", 0.99))
        }
        | {"max": round(max(late, default=0) * 1000, 1)},
        "gc": gc_table,
        "garbage_types": data.get("garbage_types") or {},  # the whole run (LOOP_STEPS_GC_TYPES)
        "rss_mib": {
            "first": round(rss[0][1] / 2**20, 1) if rss else None,
            "last": round(rss[-1][1] / 2**20, 1) if rss else None,
            "max": round(max(size for _, size in rss) / 2**20, 1) if rss else None,
        },
        "kinds": table,
        "longest": [
            {"ms": round(s[1] * 1000, 2), "cpu_ms": round(s[2] * 1000, 2), "step": s[3]}
            | {"switches": s[4:6]}
            | {"gc_ms": collected_in(s, collections)}
            for s in sorted(chosen, key=lambda s: -s[1])[:top]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", type=float, default=2.0, help="seconds after the first create")
    parser.add_argument("--burst", action="store_true", help="report the first --skip seconds")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("load_args", nargs="*", help="bench/load.py's options, after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-loop-steps-") as work:
        out = Path(work) / "steps"
        env = {
            **os.environ,
            "LOOP_STEPS_OUT": str(out),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(BENCH / "_loop_steps"), os.environ.get("PYTHONPATH")) if p
            ),
        }
        load = subprocess.run(
            [sys.executable, str(BENCH / "load.py"), "--json", *args.load_args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        dumps = list(Path(work).glob("steps.*"))
        if len(dumps) != 1:
            sys.exit(f"expected the server's record, found {len(dumps)}: {load.stderr[-2000:]}")
        result = analyse(json.loads(dumps[0].read_text()), args.skip, args.burst, args.top)
    result["load"] = json.loads(load.stdout)["health"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['window_s']} s, {result['steps']} steps, the loop in steps "
        f"{result['busy_share']:.0%} of the time; a step p50 {result['step_p50_ms']} ms, p99 "
        f"{result['step_p99_ms']} ms, {result['steps_over_3ms']} over 3 ms; a 1 ms timer late "
        f"by {result['timer_late_ms']} ms; /health p99 under the mix "
        f"{result['load']['mixed']['p99_ms']} ms (idle {result['load']['idle']['p99_ms']})"
    )
    print(
        f"steps over 3 ms: {result['over_3ms_slept']} slept in them (the interpreter lock), "
        f"{result['over_3ms_preempted_only']} only taken off their core"
    )
    print(
        f"{'step':44} {'count':>6} {'share':>6} {'p50':>7} {'p99':>7} {'max':>7} {'cpu p50':>8}"
        f" {'slept':>6} {'slept s':>8} {'preempt':>7}"
    )
    for row in result["kinds"]:
        print(
            f"{row['step'][:44]:44} {row['count']:6d} {row['share']:6.1%} {row['p50_ms']:7.3f} "
            f"{row['p99_ms']:7.3f} {row['max_ms']:7.2f} {row['cpu_p50_ms']:8.3f}"
            f" {row['waited_gil']:6d} {row['waited_gil_s']:8.3f} {row['preempted']:7d}"
        )
    for generation, row in result["gc"].items():
        print(
            f"gc generation {generation}: {row['count']} collections ({row['on_loop']} on the "
            f"loop's thread), p50 {row['p50_ms']} ms (CPU {row['cpu_p50_ms']}), longest "
            f"{row['max_ms']} ms (CPU {row['cpu_max_ms']}), "
            f"{row['share_of_time']:.2%} of the time, {row['collected']} objects collected"
            + (f"; objects left {row['objects_left']}" if "objects_left" in row else "")
        )
    print(f"resident memory (MiB): {result['rss_mib']}")
    if result["garbage_types"]:
        print("garbage found, by type:", result["garbage_types"])
    print(
        "longest:",
        ", ".join(
            f"{s['step']} {s['ms']} ms (CPU {s['cpu_ms']}, switches {s['switches']}"
            + "".join(f", gc {g}: {ms} ms" for g, ms in s["gc_ms"].items())
            + ")"
            for s in result["longest"][:8]
        ),
    )


if __name__ == "__main__":
    main()
