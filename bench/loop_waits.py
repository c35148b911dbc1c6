"""Where the server's event-loop thread is while it is off its core, under ``bench/load.py``.

Runs ``bench/load.py`` (its options after ``--``) under ``perf record -a -k CLOCK_MONOTONIC``
of the scheduler's switches (with the kernel's call chain, to tell what a thread went to sleep
in), wake-ups and forks on every CPU, stamped with the clock ``load.py`` marks its phases with
(``LOAD_PHASES_FILE``). Then, for the idle windows and the mixed phase once under
way, the time of the server's main thread (its event loop) split into: on a core; taken off
its core while runnable (preempted), by whom the core went to; asleep (waiting for events, or
for the interpreter lock another thread holds), by whom it was woken and in what it slept (a
``futex``: the interpreter lock, or another lock; ``epoll``: waiting for a request); and woken
but not yet on a core. "Whom" is the server's own threads, the benchmark's processes (its
clients and its ``/health`` probe: ``load.py``'s process tree), ``perf`` itself, or the rest of
the machine.
A ``/health`` under the mix waits for the loop's pass in progress; this says what stretches
that pass. Needs ``perf`` and the right to trace the scheduler (root, or
``kernel.perf_event_paranoid`` at -1).

Run: ``.venv/bin/python bench/loop_waits.py [--json] [-- --seconds 12 --big-lists 10]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
_EVENT = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s+(.*)$")
_SWITCH = re.compile(r"prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+)")
_WAKING = re.compile(r"comm=.* pid=(\d+) prio")
_FORK = re.compile(r"pid=(\d+) child_comm=.* child_pid=(\d+)")


def _phases(path: Path) -> tuple[dict[str, list[tuple[float, float]]], int, int]:
    """The idle and mixed windows (monotonic seconds), the server's pid and load.py's."""
    marks = [line.split() for line in path.read_text().splitlines()]
    server = bench = 0
    begun: list[tuple[float, str]] = []
    for fields in marks:
        begun.append((float(fields[0]), fields[1]))
        if fields[1] == "idle":
            server, bench = int(fields[2]), int(fields[3])
    ends = {name: begun[i + 1][0] for i, (_, name) in enumerate(begun[:-1])}
    starts = dict((name, t) for t, name in begun)
    windows = {
        "idle": [(starts["idle"], ends["idle"]), (starts["idle_after"], ends["idle_after"])],
        "mixed": [(starts["mixed"], ends["mixed"])],
    }
    return windows, server, bench


def analyse(
    script: str, windows: dict[str, list[tuple[float, float]]], server: int, bench: int
) -> dict[str, Any]:
    """The loop's thread's time in each window, by state and by whom (see the module)."""
    tgid: dict[int, int] = {}
    children: dict[int, list[int]] = defaultdict(list)
    events: list[tuple[float, str, int, str, str, list[str]]] = []
    chain: list[str] | None = None  # the last switch's kernel call chain, frame by frame
    for line in script.splitlines():
        m = _EVENT.match(line)
        if m is None:
            if chain is not None and line.strip():
                chain.append(line.split()[-1])
            continue
        pid, tid, t, name, rest = int(m[2]), int(m[3]), float(m[4]), m[5], m[6]
        tgid.setdefault(tid, pid)
        chain = None
        if name == "sched:sched_process_fork":
            f = _FORK.search(rest)
            if f:
                children[int(f[1])].append(int(f[2]))
        elif name in ("sched:sched_switch", "sched:sched_waking"):
            chain = []
            events.append((t, name, tid, m[1], rest, chain))
    tree, todo = set(), [bench]
    while todo:
        tid = todo.pop()
        if tid not in tree:
            tree.add(tid)
            todo.extend(children.get(tid, ()))

    def who(tid: int, comm: str) -> str:
        if tgid.get(tid) == server or tid == server:
            return "the server's threads"
        if tid in tree:
            return "the benchmark (clients, probe)"
        if comm.startswith("perf"):
            return "perf"
        return "the rest of the machine"

    def phase_of(t: float) -> str | None:
        for phase, spans in windows.items():
            if any(a <= t < b for a, b in spans):
                return phase
        return None

    per: dict[str, dict[str, Any]] = {
        p: {
            "on a core": 0.0,
            "preempted": Counter(),
            "asleep": Counter(),
            "woken": Counter(),
            "preemptions": 0,
            "sleeps": 0,
            "others": Counter(),
            "slept in": Counter(),
            "woken from": Counter(),
        }
        for p in windows
    }
    on_at: float | None = None
    off: tuple[float, str, str] | None = None  # when, state, taker or waker
    slept_in = ""
    woken_at: float | None = None
    for t, name, tid, comm, rest, frames in events:
        if name == "sched:sched_waking":
            w = _WAKING.search(rest)
            if w and int(w[1]) == server and off is not None and woken_at is None:
                woken_at, off = t, (off[0], off[1], who(tid, comm))
            continue
        s = _SWITCH.search(rest)
        if s is None:
            continue
        prev, state, next_comm, nxt = int(s[1]), s[2], s[3], int(s[4])
        if prev == server:
            if on_at is not None and (p := phase_of(on_at)):
                per[p]["on a core"] += t - on_at
            on_at, woken_at = None, None
            taker = who(nxt, next_comm) if state.startswith("R") else "?"
            off = (t, state, taker)
            slept_in = _slept_in(frames)
            if state.startswith("R") and taker == "the rest of the machine" and (p := phase_of(t)):
                per[p]["others"][next_comm] += 1
        elif nxt == server:
            on_at = t
            if off is not None and (p := phase_of(off[0])):
                since, state, whom = off
                if state.startswith("R"):
                    per[p]["preempted"][whom] += t - since
                    per[p]["preemptions"] += 1
                else:
                    per[p]["sleeps"] += 1
                    awake = woken_at if woken_at is not None else t
                    per[p]["asleep"][whom] += awake - since
                    per[p]["woken"][whom] += t - awake
                    per[p]["slept in"][slept_in] += awake - since
                    per[p]["woken from"][slept_in] += t - awake
            off = None
    out: dict[str, Any] = {}
    for phase, spans in windows.items():
        total = sum(b - a for a, b in spans)
        row = per[phase]
        out[phase] = {
            "seconds": round(total, 2),
            "on a core": round(row["on a core"] / total, 3),
            "preempted, runnable": {
                k: round(v / total, 3) for k, v in row["preempted"].most_common()
            },
            "asleep, by its waker": {
                k: round(v / total, 3) for k, v in row["asleep"].most_common()
            },
            "woken, waiting for a core": {
                k: round(v / total, 3) for k, v in row["woken"].most_common()
            },
            "asleep, in": {k: round(v / total, 3) for k, v in row["slept in"].most_common()},
            "woken, waiting for a core, from": {
                k: round(v / total, 3) for k, v in row["woken from"].most_common()
            },
            "preemptions per s": round(row["preemptions"] / total, 1),
            "sleeps per s": round(row["sleeps"] / total, 1),
            "preempted by, the rest of the machine": dict(row["others"].most_common(6)),
        }
    return out


def _slept_in(frames: list[str]) -> str:
    """What a thread went to sleep in, from its switch's kernel call chain."""
    if any("futex" in frame for frame in frames):
        return "a futex (the interpreter lock, or another lock)"
    if any("epoll" in frame for frame in frames):
        return "epoll (waiting for a request)"
    return "something else"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("rest", nargs="*", help="bench/load.py's options (after --)")
    args = parser.parse_args()
    rest = args.rest or ["--seconds", "12", "--big-lists", "10"]
    with tempfile.TemporaryDirectory(prefix="loop-waits-") as work:
        phases, data = Path(work) / "phases", Path(work) / "sched.data"
        env = {**os.environ, "LOAD_PHASES_FILE": str(phases)}
        load = subprocess.run(
            [
                "perf",
                "record",
                "-a",
                "-k",
                "CLOCK_MONOTONIC",
                # The switches' kernel call chains only: what a thread went to sleep in.
                "-e",
                "sched:sched_switch/call-graph=fp,max-stack=10/",
                "-e",
                "sched:sched_waking",
                "-e",
                "sched:sched_process_fork",
                "-o",
                str(data),
                "--",
                sys.executable,
                str(BENCH / "load.py"),
                "--json",
                *rest,
            ],
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        windows, server, bench = _phases(phases)
        script = subprocess.run(
            ["perf", "script", "-i", str(data), "-F", "comm,pid,tid,time,event,trace,ip,sym"],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ).stdout
    result = json.loads(load.stdout)
    found = {
        "load_average": result["load_average"],
        "health_p99_ms": {p: result["health"][p]["p99_ms"] for p in ("idle", "mixed")},
        "health_p99_ratio_mixed": result["health_p99_ratio_mixed"],
        "calls_per_s": result["mixed"]["per_s"],
        "loop": analyse(script, windows, server, bench),
    }
    if args.json:
        print(json.dumps(found, indent=2))
        return
    print(
        f"load average {found['load_average']}; /health p99 idle {found['health_p99_ms']['idle']}"
        f" ms, under the mix {found['health_p99_ms']['mixed']} ms "
        f"({found['health_p99_ratio_mixed']} x); {found['calls_per_s']} calls/s"
    )
    for phase, row in found["loop"].items():
        print(
            f"\n{phase} ({row['seconds']} s): the loop's thread on a core {row['on a core']:.1%}"
            f" of the time; {row['preemptions per s']} preemptions and {row['sleeps per s']}"
            " sleeps a second"
        )
        for what in (
            "preempted, runnable",
            "asleep, by its waker",
            "asleep, in",
            "woken, waiting for a core",
            "woken, waiting for a core, from",
        ):
            print(f"  {what}: " + ", ".join(f"{k} {v:.1%}" for k, v in row[what].items()))
        others = row["preempted by, the rest of the machine"].items()
        print(
            "  preempted by, the rest of the machine: " + ", ".join(f"{k} {v}" for k, v in others)
        )


if __name__ == "__main__":
    main()
