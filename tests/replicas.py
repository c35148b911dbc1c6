"""Production replicas for the tests: real `app serve` processes of one production profile
on the engines of tests/engines.py, and the commands next to them.

The production profile comes from a settings.toml in a directory of the test's
(``APP_SETTINGS_DIR``) that names a fresh database and object prefix; under pytest the
processes open the run's scratch copies of those (see :func:`production_on`); the
credentials come from ``APP_*`` variables, as a deployment's would. Each server binds port 0
and publishes its URL in its holder row, which is where the tests find it. Waiting is bounded
polling, never a sleep taken as an assertion; a replica's start is given up on only when it
does nothing for that long (`wait_for`'s ``progress``), not when a loaded machine slows it.

Shared by tests/test_remote_replicas.py (a pair per test) and tests/test_remote_hostile.py
(one pair for a whole hostile run).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import forked_app
import httpx
import psycopg
import pytest
from engines import PostgresEngine, S3Engine

# With the module, not in `Production.holders`: a serial run's head start
# (tests/head_start.py) imported it in its thread while a pytester test's end put
# sys.modules back as it was, taking out the module mid-import (dataclasses' "'NoneType'
# object has no attribute '__dict__'", red team 63's speed round).
from app.remote import pg
from app.testing import wait_until_serving

#: `wait_for`'s first pause, growing by half at each poll up to `POLL_MAX`: most conditions
#: hold within a few polls, and a poll is a query or a request, which a replica's start (the
#: commonest wait) competes with. Every 10 ms, the polls of a whole run were about 6 s of the
#: workers' CPU (py-spy, bench/README.md), and as much again in the database's backends.
POLL = 0.005
POLL_MAX = 0.05
WAIT_SECONDS = 30.0  # bounded: 30 s at most for anything to happen (or with nothing done)
#: The bound of a wait that progress keeps going (`wait_for`'s ``progress``): a replica whose
#: start loops (a poll for tables a dead peer never made) uses CPU all along, and one that
#: serves ticks about every 7.5 s of its own (its lock check), so progress alone never gave
#: up (red team 75 on regress, round b). Eight times 35.6 s, the slowest start seen (at a
#: load of 20 on 2 cores).
WAIT_LIMIT = 300.0

SETTINGS = """\
[production]
database_url = "{database_url}"
blob_url = "{blob_url}"
s3_endpoint_url = "{endpoint}"
protected = true

[default]
host = "127.0.0.1"

[testing]
data_root = "{base}/testing"

[development]
data_root = "{base}/development"
"""


def wait_for(
    condition: Callable[[], Any],
    what: str,
    seconds: float = WAIT_SECONDS,
    progress: Callable[[], object] | None = None,
    limit: float = WAIT_LIMIT,
) -> Any:
    """Poll `condition` until it holds; give up once `seconds` pass with no progress, or
    `limit` pass in all.

    `progress`: a look at what the awaited processes have done (`cpu_and_output`); each time
    it changes the `seconds` start again, so a start that is slow because the machine is
    busy is waited for, and only one that does nothing for that long is given up on.
    Bounded by wall time alone, the hostile suites' production pair, which a serial run
    starts in its head-start thread (tests/head_start.py) at nice 10 (so as plain
    subprocesses, which import everything, not forks of the zygote), took 35.6 s to publish
    its URL at a load of 20 on 2 cores, never more than 1.24 s without a tick of CPU or a
    line of output: "gave up waiting for replica ... to publish its URL" at 30 s (red team
    75)."""
    start = time.monotonic()
    pause, deadline = POLL, start + seconds
    seen = None if progress is None else progress()
    while not (value := condition()):
        if progress is not None and (now := progress()) != seen:
            seen, deadline = now, min(time.monotonic() + seconds, start + limit)
        if time.monotonic() > deadline:
            idle = (
                ""
                if progress is None
                else f" (no CPU used, no output, for {seconds:g} s)"
                if time.monotonic() < start + limit
                else f" (at work all along, but not done in {limit:g} s: looping, not slow)"
            )
            pytest.fail(f"gave up waiting for {what}{idle}")
        time.sleep(pause)
        pause = min(POLL_MAX, pause * 1.5)
    return value


def cpu_and_output(processes: Iterable[Replica]) -> tuple[tuple[int, int], ...]:
    """What `processes` have done so far: each one's CPU time with its descendants' (the
    workers of ``serve --workers``), in clock ticks, and the size of its log; (0, 0) for one
    gone."""
    done = []
    for replica in processes:
        try:
            ticks, size = cpu_ticks(replica.pid), replica.log.stat().st_size
        except OSError:
            ticks = size = 0
        done.append((ticks, size))
    return tuple(done)


def cpu_ticks(pid: int) -> int:
    """The CPU time of `pid`, of its children it has reaped, and of its live descendants, in
    clock ticks (each one's threads, from ``/proc``); 0 for one gone. The workers of ``serve
    --workers`` start, load and connect in processes of their own: a wait on them bounded by
    `serve`'s own CPU, or by wall time alone (120 s for their rows, red team 75 on this
    session's leftovers), gave up on a start that a loaded machine slowed."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
        # utime, stime, cutime, cstime: fields 14 to 17.
        ticks = sum(int(value) for value in fields[11:15])
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except (OSError, IndexError, ValueError):
        return 0
    return ticks + sum(cpu_ticks(child) for child in children)


@dataclass
class Replica:
    """One `app serve` subprocess on the production profile."""

    process: subprocess.Popen[bytes] | forked_app.Forked
    log: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=60)


@dataclass
class Production:
    """A production profile on the engines, and the replicas a test started on it."""

    tmp_path: Path
    database_url: str
    blob_url: str
    env: dict[str, str]
    token: str
    replicas: list[Replica] = field(default_factory=list)
    _conn: psycopg.Connection[Any] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, replica: Replica) -> httpx.Client:
        return httpx.Client(base_url=replica.url, headers=self.headers, timeout=30)

    def stamp_both(self, s3_engine: S3Engine, profile: str) -> tuple[Any, str, str]:
        """Stamp the opened database and prefix ``profile``'s (a copy of its storage, say),
        the app's own JSON in the stamp object; the S3 client, the bucket and that key."""
        bucket, _, prefix = self.blob_url.removeprefix("s3://").partition("/")
        s3 = s3_engine.client()
        key = f"{prefix}/.app-profile.json"
        stamp = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({**stamp, "profile": profile}))
        with psycopg.connect(self.database_url) as conn:
            conn.execute("UPDATE app_stamp SET profile = %s", (profile,))
        return s3, bucket, key

    def holders(self) -> list[dict[str, Any]]:
        """The holder rows of live replicas, as the database shows them."""
        # One connection for every poll: a connection per poll (every 10 ms while a replica
        # starts) had the cluster fork a backend each time, on the cores the replica needs.
        # With no idle timeout of its own: a test that sets one for the database (red team
        # 37's 300 ms) lost this connection between the start's last poll and its next look
        # on a loaded machine (IdleSessionTimeout in the test, not in the replica).
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.database_url, autocommit=True, options="-c idle_session_timeout=0"
            )
        return pg.live_holders(self._conn)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def start(self, *args: str, ready: bool = True, **extra: str) -> Replica:
        log = self.tmp_path / f"replica-{len(self.replicas)}.log"
        # ``python -m app serve``, forked from a process that imported the app once
        # (tests/forked_app.py): a process of its own all the same.
        process = forked_app.serve({**self.env, **extra}, log, ["serve", "--port", "0", *args])
        replica = Replica(process, log)
        self.replicas.append(replica)
        if ready:
            self.wait_ready(replica)
        return replica

    def start_pair(self) -> tuple[Replica, Replica]:
        """Two replicas started side by side (as a deployment starts them), once both serve:
        the second one's imports no longer wait for the first one's start-up."""
        first, second = self.start(ready=False), self.start(ready=False)
        return self.wait_ready(first), self.wait_ready(second)

    def wait_ready(self, replica: Replica) -> Replica:
        replica.url = self._published_url(replica)
        wait_until_serving(replica.url, replica.process, log=replica.log)
        return replica

    def _published_url(self, replica: Replica) -> str:
        def published() -> str | None:
            if replica.process.poll() is not None:
                pytest.fail(f"app serve exited {replica.process.returncode}:\n{replica.output}")
            try:
                rows = self.holders()
            except psycopg.Error:
                return None  # the first replica is still creating the tables
            urls = [str(r["url"]) for r in rows if r["pid"] == replica.pid and r["url"]]
            return urls[0] if urls else None

        # Every replica of the profile still starting: one waits for another's tables (the
        # first creates them), and their start is slow, not stuck, while either is at work.
        # Not one that serves: its lock check alone ticks every few seconds, and a start
        # that hung beside it was waited for without end (red team 75 on regress, round b).
        url: str = wait_for(
            published,
            f"replica {replica.pid} to publish its URL",
            progress=lambda: cpu_and_output(r for r in self.replicas if not r.url),
        )
        return url

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m app *args`` in production's environment (forked: tests/forked_app.py),
        its output captured."""
        return forked_app.run(self.env, list(args))

    def run_side_by_side(
        self, *commands: tuple[str, ...]
    ) -> list[subprocess.CompletedProcess[str]]:
        """Commands that must each be refused (and so change nothing), run at the same time:
        their start-ups overlap instead of adding up."""
        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(lambda args: self.run(*args), commands))


_databases = itertools.count()


@contextlib.contextmanager
def production_on(
    base: Path,
    postgres_engine: PostgresEngine,
    s3_engine: S3Engine,
    blob_url: str,
    environ: Mapping[str, str] | None = None,
) -> Iterator[Production]:
    """Production on the engines, as the test run's processes see it; the replicas started
    on it are killed at the end, and its database dropped. Its processes' environment is
    `environ` (this process's by default) with production's settings.

    Under pytest every remote profile is confined to the run's scratch database and prefix
    (the configured names plus the run's suffix; app.sandbox.confine_remote), production
    included: the replicas a test starts open those, never the configured ones. So this
    creates the scratch database that production's configured one maps to, and the tests
    talk to it directly.
    """
    from app import sandbox

    environ = os.environ if environ is None else environ
    run = sandbox.current_run(environ)
    assert run is not None and run.scratch, "the app plugin names a scratch suffix per run"
    configured = f"prod_{os.getpid()}_{next(_databases)}"
    scratch = configured + run.scratch
    # Not the fixture's prefix itself, which is a scratch one already (and would be kept
    # as it is): production's configured prefix, a sibling, maps to a scratch one of its own.
    configured_blob = f"{blob_url}-production"
    # On the fixtures' kept connection, its files copied (`PostgresEngine.create_database`'s
    # way): a new connection for each was a new backend each, about 20 ms of the server's
    # CPU more per production (bench/README.md, perf-engines67 and perf-suite76b).
    postgres_engine.create_database_named(scratch)
    settings_dir = base / "settings"
    settings_dir.mkdir()
    (settings_dir / "settings.toml").write_text(
        SETTINGS.format(
            base=base / "other-profiles",
            database_url=postgres_engine.url(configured),
            blob_url=configured_blob,
            endpoint=s3_engine.endpoint_url,
        )
    )
    # 16 random bytes (22 characters, 128 bits): as strong as the production token needs
    # (`app.config._weak_token`: 10^22 guesses by zxcvbn's estimate, 10^20 needed), and
    # zxcvbn's estimate, which every command and replica of the profile makes as it loads
    # its settings, costs about 2 ms of CPU for it against 12 ms for `token_urlsafe(32)`'s
    # 43 characters (its cost grows with the length; bench/README.md, perf-suite76b).
    token = secrets.token_urlsafe(16)
    env = {
        **environ,
        "ENV_FOR_DYNACONF": "production",
        "APP_SETTINGS_DIR": str(settings_dir),
        "APP_API_TOKEN": token,
        "APP_S3_ACCESS_KEY_ID": s3_engine.access_key_id,
        "APP_S3_SECRET_ACCESS_KEY": s3_engine.secret_access_key,
        # Opt in the way @pytest.mark.app_profile does.
        "PYTEST_APP_ALLOW_PROFILES": "production",
    }
    env.pop("APP_DATA_ROOT", None)
    prod = Production(
        base,
        postgres_engine.url(scratch),
        sandbox.scratch_blob_url(configured_blob, run.scratch, "production"),
        env,
        token,
    )
    try:
        yield prod
    finally:
        for replica in prod.replicas:
            if replica.process.poll() is None:
                replica.process.kill()
                replica.process.wait()
        prod.close()
        postgres_engine.drop_database(scratch)
