"""The server's CPU time per request, one small call at a time, for each kind of call.

One ``app serve`` on 127.0.0.1 (development profile, a temporary data root, a token) gets
``--requests`` calls of one kind in a row over one keep-alive connection (raw HTTP/1.1, the
requests ``bench/load.py`` sends), and the server process's CPU time (all its threads, user
and system) is read before and after: CPU microseconds per call. With nothing else in flight
this is what the framework and the route cost per request, the figure that, under load, sets
how long every turn of the event loop takes. Kinds: ``GET /health``; create, get, list of
100, delete a session; upload 4 KiB (``PUT`` and multipart ``POST``); download it.

With ``--against DIR`` a second server runs from another checkout (its ``.venv`` if it has
one, else this interpreter; ``-m app`` imports the package of the directory it runs in), and
the two take turns, kind by kind, for ``--rounds`` rounds. Reported per kind: the mean over
all rounds (CPU time adds up; a median would hide what happens once in thousands of calls,
such as a full garbage collection) and the ratio to ``--against``'s.

Run: ``.venv/bin/python bench/request_cpu.py [--requests 1000] [--rounds 5] [--against DIR]``
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PROJECT, Connection, Server, app_server
from listing import seed
from load import BOUNDARY, UPLOAD, multipart

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def cpu_ns(pid: int) -> int:
    """CPU time of process ``pid`` so far, in nanoseconds (all its threads, user + system).

    The process's CPU clock rather than ``/proc/<pid>/stat``: that counts in clock ticks
    (10 ms), coarser than a few hundred calls of a few hundred microseconds each.
    """
    clock = ctypes.c_int()
    if _libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        raise OSError(ctypes.get_errno(), f"clock_getcpuclockid({pid})")
    return time.clock_gettime_ns(clock.value)


class Target:
    """A running server and what the calls of each kind work on."""

    def __init__(self, name: str, server: Server) -> None:
        self.name = name
        self.server = server
        self.connection = Connection(server.port)
        self.created: list[str] = []  # by the create kind, for the delete kind
        self.kept = [self._new_session() for _ in range(50)]  # hold the files; never deleted
        self.files: list[tuple[str, str]] = []
        self.uploads = 0

    def _new_session(self) -> str:
        return str(json.loads(self.ok((201,), "POST", "/sessions", b"{}"))["id"])

    def ok(self, expected: tuple[int, ...], method: str, path: str, *args: str | bytes) -> bytes:
        status, body = self.connection.call(method, path, *args)  # type: ignore[arg-type]
        if status not in expected:
            raise SystemExit(f"{self.name}: {method} {path} answered {status}: {body[:300]!r}")
        return body


def _health(target: Target, n: int) -> None:
    target.ok((200,), "GET", "/health")


def _create(target: Target, n: int) -> None:
    body = target.ok((201,), "POST", "/sessions", b'{"title": "cpu", "metadata": {}}')
    target.created.append(json.loads(body)["id"])


def _get(target: Target, n: int) -> None:
    target.ok((200,), "GET", f"/sessions/{target.kept[n % 50]}")


def _list(target: Target, n: int) -> None:
    target.ok((200,), "GET", "/sessions?limit=100")


def _put(target: Target, n: int) -> None:
    session = target.kept[n % 50]
    target.uploads += 1
    name = f"p{target.uploads}.bin"
    target.ok((201,), "PUT", f"/sessions/{session}/files/{name}", UPLOAD)
    target.files.append((session, name))


def _multipart(target: Target, n: int) -> None:
    session = target.kept[n % 50]
    target.uploads += 1
    name = f"m{target.uploads}.bin"
    body = multipart(name, UPLOAD)
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    target.ok((201,), "POST", f"/sessions/{session}/files", body, content_type)
    target.files.append((session, name))


def _download(target: Target, n: int) -> None:
    session, name = target.files[n % len(target.files)]
    target.ok((200,), "GET", f"/sessions/{session}/files/{name}")


def _delete(target: Target, n: int) -> None:
    target.ok((200,), "DELETE", f"/sessions/{target.created.pop()}")


KINDS: dict[str, Callable[[Target, int], None]] = {
    "health": _health,
    "create": _create,
    "get": _get,
    "list 100": _list,
    "upload 4 KiB (PUT)": _put,
    "upload 4 KiB (multipart)": _multipart,
    "download": _download,
    "delete": _delete,
}
"""Every kind of call, in the order they run: download needs uploads, delete needs creates."""


def measure(target: Target, kind: str, requests: int) -> float:
    """CPU microseconds per call of ``kind`` on ``target``'s server."""
    call = KINDS[kind]
    # A new connection: the last one may have idled past the server's keep-alive timeout
    # while the other server was measured.
    target.connection.close()
    target.connection = Connection(target.server.port)
    for n in range(min(requests, 50)):  # warm: caches, code paths, the worker threads
        call(target, n)
    before = cpu_ns(target.server.pid)
    for n in range(requests):
        call(target, n)
    return (cpu_ns(target.server.pid) - before) / requests / 1000


@contextmanager
def started(name: str, work: Path, checkout: Path | None) -> Iterator[Target]:
    root = work / name / "data"
    root.parent.mkdir(parents=True)
    seed(root, 200)  # list 100 lists a full page
    with app_server(root, work / name / "app.log", checkout or PROJECT) as server:
        target = Target(name, server)
        try:
            yield target
        finally:
            target.connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="calls per kind and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another checkout, measured in turn")
    parser.add_argument("--kinds", help="comma-separated subset of: " + ", ".join(KINDS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 50 <= args.requests <= 20_000 or not 1 <= args.rounds <= 50:
        parser.error("keep the run bounded: --requests in [50, 20000], --rounds in [1, 50]")
    kinds = list(KINDS) if not args.kinds else [k.strip() for k in args.kinds.split(",")]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    if "delete" in kinds and "create" not in kinds:
        kinds.insert(0, "create")
    if "download" in kinds and not {"upload 4 KiB (PUT)", "upload 4 KiB (multipart)"} & set(kinds):
        kinds.insert(0, "upload 4 KiB (PUT)")
    kinds = [kind for kind in KINDS if kind in kinds]  # in the order that supplies them
    names = ["this"] + (["against"] if args.against else [])
    samples: dict[str, dict[str, list[float]]] = {n: {k: [] for k in kinds} for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-request-cpu-") as work, ExitStack() as stack:
        targets = [stack.enter_context(started("this", Path(work), None))]
        if args.against:
            against = args.against.resolve()
            targets.append(stack.enter_context(started("against", Path(work), against)))
        for round_ in range(args.rounds):
            for kind in kinds:
                # Alternate which server goes first, so that drift hits both alike.
                for target in targets if round_ % 2 == 0 else targets[::-1]:
                    samples[target.name][kind].append(measure(target, kind, args.requests))
    result = {
        "requests": args.requests,
        "rounds": args.rounds,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_us_per_call": {
            name: {kind: round(statistics.fmean(v), 1) for kind, v in by_kind.items()}
            for name, by_kind in samples.items()
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    per_call = result["cpu_us_per_call"]
    print(
        f"server CPU per call (µs, mean of {args.rounds} rounds of {args.requests}); "
        f"load average {', '.join(map(str, result['load_average']))}"
    )
    header = f"  {'call':<26} {'this':>9}"
    if args.against:
        header += f" {'against':>9} {'ratio':>7}"
    print(header)
    for kind in kinds:
        row = f"  {kind:<26} {per_call['this'][kind]:>9}"
        if args.against:
            base = per_call["against"][kind]
            row += f" {base:>9} {per_call['this'][kind] / base:>7.2f}"
        print(row)


if __name__ == "__main__":
    main()
