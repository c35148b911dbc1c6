"""What a test run's start and end cost on its scratch prefix: the S3 requests they make and
the CPU of the run's process, this tree against another (``--against DIR``: main's, exported
with ``git archive``), side by side in one run.

Starts a throwaway PostgreSQL cluster and ``weed mini`` (tests/engines.py's start functions)
and a counting proxy in front of ``weed`` (tests/test_redteam_s51_remote.py's forwarder). Each
round runs, for each tree in an order alternated per round, one inner pytest (a subprocess
with that tree first on ``PYTHONPATH``, and the app's plugin) whose testing profile is remote
on those engines, through the proxy. Its one test writes through the app: the prefix's stamp
(``ObjectStore.open``), ``--blobs`` uploads named as the app names them, and one object put
by name; its first and last requests are sentinels (a HEAD of ``bench-begin`` and of
``bench-end``), which split the proxy's log into the run's start, the test and the run's end.
A conftest records the run's process CPU (``time.process_time``) when collection ends, when
the test is called, when its teardown begins (the session fixture's end runs there) and when
the session finishes: start = collected to called, the test = called to teardown, end =
teardown to finish. The start and the end include the scratch database's creation and drop,
the same in either tree; the first request of a kind loads the S3 client's model of it,
wherever it comes (a GET at the start now, in the test before), so the three are summed too.

Run: ``git archive main | tar -x -C /tmp/main-tree`` and ``git archive HEAD | tar -x -C
/tmp/this-tree`` (one filesystem for both), then ``.venv/bin/python bench/scratch_prefix.py
--against /tmp/main-tree --this /tmp/this-tree [--rounds 9]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
sys.path.insert(0, str(PROJECT / "tests"))

from engines import start_postgres, start_s3  # noqa: E402
from test_redteam_s51_remote import _Forward, _Refusing  # noqa: E402

CONFTEST = """
import json, os, time
import pytest

T = {}

def pytest_collection_finish(session):
    T["collected"] = time.process_time()

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    T["called"] = time.process_time()

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    T["teardown"] = time.process_time()

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    T["finished"] = time.process_time()
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump(T, f)
"""

TEST = """
from app.config import load
from app.remote.objects import ObjectStore

def test_writes_through_the_app():
    config = load("testing")
    store = ObjectStore(config.blob_url, config.s3_endpoint_url,
                        config.s3_access_key_id, config.s3_secret_access_key)
    store.exists("bench-begin")
    store.open("testing")
    for _ in range({blobs}):
        store.put(store.new_blob_name(), b"x" * 1024)
    store.put("probe/named.txt", b"by name")
    store.exists("bench-end")
"""


class _Counting(_Forward):
    """Forwards every request to ``weed``, and logs it: (method, what it asks)."""

    def _any(self) -> None:
        parts = urlsplit(self.path)
        key = unquote(parts.path).lstrip("/").partition("/")[2]
        query = parse_qs(parts.query, keep_blank_values=True)
        kind = "list" if "list-type" in query or "versions" in query or "uploads" in query else ""
        name = key.rsplit("/", 1)[-1] if key else ""
        self.server.log.append((self.command, kind or name))  # type: ignore[attr-defined]
        if self.command != "HEAD":
            super()._any()
            return
        status, headers, _ = self._forwarded(b"")
        self._answer_head(status, headers)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any


def _kind(request: tuple[str, str]) -> str:
    method, what = request
    if what == "list":
        return "GET (list)"
    if what in {".app-pytest-run.json", ".app-profile.json"}:
        return f"{method} {what}"
    if method == "POST":
        return "POST (delete)"
    return f"{method} (other)"


def _phases(log: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    begin = log.index(("HEAD", "bench-begin"))
    end = log.index(("HEAD", "bench-end"))
    return log[:begin], log[end + 1 :]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--against", type=Path, required=True, help="the other tree (main's)")
    parser.add_argument(
        "--this",
        type=Path,
        default=PROJECT,
        help="this tree, exported beside the other (read from the worktree instead, its "
        "start read 30 to 100 ms more CPU in one run: bytecode read from another place)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--blobs", type=int, default=20)
    args = parser.parse_args()
    trees = {"main": args.against.resolve(), "branch": args.this.resolve()}
    for tree in trees.values():
        # Each tree's bytecode written first: under PYTHONDONTWRITEBYTECODE=1 (this machine's)
        # a tree without it compiles every module it imports in every run, mostly at the
        # start and the end being measured (a tree exported by `git archive` has none).
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "app")], check=True)
    work = Path(tempfile.mkdtemp(prefix="bench-scratch-"))
    postgres = start_postgres()
    s3 = start_s3(work / "seaweedfs")
    proxy = _Refusing(s3.endpoint_url, lambda method, path: False, False)
    proxy.RequestHandlerClass = _Counting
    proxy.log = []  # type: ignore[attr-defined]
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    cpu: dict[str, dict[str, list[float]]] = {
        t: {"start": [], "test": [], "end": [], "all three": []} for t in trees
    }
    requests: dict[str, dict[str, Counter[str]]] = {}
    try:
        for n in range(args.rounds):
            order = list(trees) if n % 2 == 0 else list(reversed(trees))
            for tree in order:
                place = work / f"{tree}-{n}"
                project, settings, out = place / "project", place / "settings", place / "out"
                for directory in (project, settings):
                    directory.mkdir(parents=True)
                (project / "conftest.py").write_text(CONFTEST)
                (project / "test_bench.py").write_text(TEST.replace("{blobs}", str(args.blobs)))
                (settings / "settings.toml").write_text(
                    f'[development]\ndata_root = "{place}/development"\n'
                    f'[testing]\ndatabase_url = "{postgres.url(f"bench_{tree}_{n}")}"\n'
                    f'blob_url = "s3://{s3.bucket}/bench-{tree}-{n}"\n'
                    f's3_endpoint_url = "{proxy.url}"\n'
                )
                (settings / ".secrets.toml").write_text(
                    f'[testing]\ns3_access_key_id = "{s3.access_key_id}"\n'
                    f's3_secret_access_key = "{s3.secret_access_key}"\n'
                )
                env = {
                    key: value
                    for key, value in os.environ.items()
                    if not key.startswith(("PYTEST_", "APP_"))
                }
                env |= {
                    "APP_SETTINGS_DIR": str(settings),
                    "PYTHONPATH": f"{trees[tree]}:{project}",
                    "BENCH_OUT": str(out),
                    "HOME": str(place),
                }
                proxy.log.clear()  # type: ignore[attr-defined]
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pytest",
                        "-q",
                        "-p",
                        "no:randomly",
                        "-p",
                        "no:cacheprovider",
                    ],
                    check=False,
                    cwd=project,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if done.returncode != 0:
                    raise SystemExit(f"{tree}'s run failed:\n{done.stdout}\n{done.stderr}")
                times = json.loads(out.read_text())
                cpu[tree]["start"].append(times["called"] - times["collected"])
                cpu[tree]["end"].append(times["finished"] - times["teardown"])
                cpu[tree]["test"].append(times["teardown"] - times["called"])
                cpu[tree]["all three"].append(times["finished"] - times["collected"])
                start, end = _phases(list(proxy.log))  # type: ignore[attr-defined]
                requests[tree] = {
                    "start": Counter(map(_kind, start)),
                    "end": Counter(map(_kind, end)),
                }
    finally:
        proxy.shutdown()
        s3.stop()
        postgres.stop()
    print(f"{args.rounds} rounds, {args.blobs} uploads and one object by name in the test")
    for phase in ("test", "all three"):
        # The first request of a kind loads the S3 client's model of it: a GET the start
        # makes now was the test's first before.
        for tree in ("main", "branch"):
            values = sorted(1000 * v for v in cpu[tree][phase])
            print(
                f"{phase}: CPU {tree:6} median {statistics.median(values):6.1f} ms  "
                f"(min {values[0]:.1f}, max {values[-1]:.1f})"
            )
    for phase in ("start", "end"):
        print(f"\n{phase}: requests (the same every round)")
        kinds = sorted(set(requests["main"][phase]) | set(requests["branch"][phase]))
        for kind in kinds:
            print(
                f"  {kind:32} main {requests['main'][phase][kind]:3}  "
                f"branch {requests['branch'][phase][kind]:3}"
            )
        totals = [sum(requests[t][phase].values()) for t in ("main", "branch")]
        print(f"  {'total':32} main {totals[0]:3}  branch {totals[1]:3}")
        for tree in ("main", "branch"):
            values = sorted(1000 * v for v in cpu[tree][phase])
            print(
                f"  CPU {tree:6} median {statistics.median(values):6.1f} ms  "
                f"(min {values[0]:.1f}, max {values[-1]:.1f})"
            )


if __name__ == "__main__":
    main()
