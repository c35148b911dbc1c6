"""Shared helpers of the benchmarks: servers on 127.0.0.1 that stop by themselves.

Every server a benchmark starts listens on 127.0.0.1 only, gets SIGTERM from the kernel if
the benchmark process dies (``PR_SET_PDEATHSIG``), and is stopped by the benchmark when it
is done. Data lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-" + "x" * 24


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once ``url``'s ``/health`` answers 200; RuntimeError (with the server's log if
    it exited) when the process dies or 30 s pass."""
    for _ in range(600):  # bounded: 30 s
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server on {url} did not answer /health")


class Server:
    """A server subprocess on 127.0.0.1 (``app serve`` or a bare baseline)."""

    def __init__(
        self, argv: list[str], env: dict[str, str], log: Path, listening: socket.socket | Path
    ) -> None:
        """``listening``: a bound socket the server inherits, or the data root in which
        ``app serve --port 0`` publishes the port it bound. Either way nothing can take the
        port between its choice and its use, as it could with a port picked in advance."""
        self.log = log
        inherited = (listening.fileno(),) if isinstance(listening, socket.socket) else ()
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=out,
                pass_fds=inherited,
                # Servers start before the benchmark starts threads; it only calls prctl.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        self.pid = self.process.pid
        if isinstance(listening, socket.socket):
            self.port: int = listening.getsockname()[1]
        else:
            self.port = self._published_port(listening)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_for_health(self.url, self.process, log)
        except RuntimeError:
            self.stop()
            raise

    def _published_port(self, root: Path) -> int:
        # Not app.testing.published_port: importing pytest here would make app.config treat
        # the benchmark as a test run and refuse its development profile.
        from app.lock import read_holder

        for _ in range(600):  # bounded: 30 s
            holder = read_holder(root)
            if holder and holder.get("pid") == self.pid and holder.get("port"):
                return int(holder["port"])
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited {self.process.returncode}:\n{self.log.read_text()}"
                )
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server published no port in {root / '.server.lock'}")

    def stop(self) -> None:
        stop(self.process)


def app_env(root: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APP_", "PYTEST_", "DYNACONF_")) and k != "ENV_FOR_DYNACONF"
    }
    env.update(
        {
            "ENV_FOR_DYNACONF": "development",
            "APP_DATA_ROOT": str(root),
            "APP_HOST": "127.0.0.1",
            "APP_API_TOKEN": TOKEN,
            "APP_LOG_LEVEL": "warning",  # no access log: measure the server, not its logging
        }
    )
    env.update(extra)
    return env


@contextmanager
def app_server(
    root: Path, log: Path, checkout: Path | None = None, **extra: str
) -> Iterator[Server]:
    """``app serve`` on ``root``; with ``checkout``, that checkout's code (and its ``.venv``).

    ``-m app`` imports the package of the directory the server starts in, so a checkout's
    server starts there; without one, in the benchmark's working directory.
    """
    python = sys.executable
    if checkout is not None and (checkout / ".venv" / "bin" / "python").exists():
        python = str(checkout / ".venv" / "bin" / "python")
    argv = [python, "-m", "app", "serve", "--port", "0"]
    cwd = Path.cwd()
    if checkout is not None:
        os.chdir(checkout)
    try:
        server = Server(argv, app_env(root, **extra), log, root)
    finally:
        os.chdir(cwd)
    try:
        yield server
    finally:
        server.stop()


class Connection:
    """One blocking keep-alive HTTP/1.1 connection to 127.0.0.1, one call at a time.

    Raw sockets rather than httpx: a client this small costs a fraction of the server's time
    per request, so the benchmarks measure the server, not their client.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def call(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """Send one request with the benchmarks' token; its status and body."""
        return self.send(request_bytes(method, path, body, content_type))

    def send(self, raw: bytes) -> tuple[int, bytes]:
        """Send a request already encoded (see `request_bytes`); its status and body."""
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return int(lines[0].split(b" ", 2)[1]), rest[:length]

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


def request_bytes(
    method: str, path: str, body: bytes = b"", content_type: str = "application/json"
) -> bytes:
    """One HTTP/1.1 request to 127.0.0.1 with the benchmarks' bearer token, encoded."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def io_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/<pid>/io")


def cpu_seconds(pid: int) -> float:
    """The CPU time of process ``pid`` so far: all its threads, user and system."""
    # Fields 14 and 15 of /proc/<pid>/stat, after the parenthesised command name.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_counters(pid: int) -> dict[str, float]:
    """CPU seconds (user, system; all threads and the main one) and context switches so far.

    The main thread is the server's event loop; the others are its worker threads. A switch is
    voluntary when a thread blocks (on a lock such as the interpreter's, or on the disk) and
    involuntary when the scheduler takes its core.
    """
    tick = os.sysconf("SC_CLK_TCK")
    totals = dict.fromkeys(
        ("user", "system", "loop_user", "loop_system", "voluntary", "involuntary"), 0.0
    )
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        user, system = int(stat[11]) / tick, int(stat[12]) / tick
        totals["user"] += user
        totals["system"] += system
        if task.name == str(pid):
            totals["loop_user"] += user
            totals["loop_system"] += system
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                totals["voluntary"] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                totals["involuntary"] += int(line.split()[1])
    return totals


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/<pid>/status")


def median(values: list[float]) -> float:
    return statistics.median(values)


def per_run_ratio(samples: dict[str, list[float]], kind: str, base: str) -> float:
    """The median of `kind`'s ratio to `base` run by run.

    Each run measures every kind back to back; the disk's and the machine's speed drift
    between runs (this VM's host cache absorbs the first gigabytes), so a ratio is taken per
    run, then the median of those.
    """
    return median([k / b for k, b in zip(samples[kind], samples[base], strict=True)])


def run_workers(target: Callable[..., object], arguments: list[tuple[object, ...]]) -> float:
    """Run `target` once per argument tuple, each on a thread of its own, all at once; the
    wall time until the last has ended, in seconds."""
    threads = [threading.Thread(target=target, args=args) for args in arguments]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def write_json(path: Path | None, report: dict[str, object]) -> None:
    """Write `report` to `path` (a script's ``--json FILE``), if one was given."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))


# --- whole-process start-up timings (config_startup.py, plugin_startup.py) -------------------


def name_the_settings(env: dict[str, str], work: Path) -> None:
    """Point ``env`` at a copy of the project's settings in ``work``.

    The pytest plugin acts only where this app's settings are the run's; a suite generated in
    a scratch directory names them, as a project that uses the app as a dependency would.
    """
    settings = work / "settings"
    settings.mkdir(exist_ok=True)
    for name in ("settings.toml", ".secrets.toml"):
        shutil.copy(PROJECT / name, settings / name)
    env["APP_SETTINGS_DIR"] = str(settings)


def clean_environment() -> dict[str, str]:
    """This process's environment without what would change the app's configuration.

    Drops ``APP_*``, ``DYNACONF_*``, ``*_FOR_DYNACONF`` and pytest's variables, and
    ``PYTHONDONTWRITEBYTECODE``: users run with cached bytecode, while with that variable
    (set in some sandboxes and CI images) the app's own modules, unlike installed packages,
    are compiled from source on every start (about 12 ms); the warm-up runs write the caches.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APP_", "DYNACONF_", "PYTEST_"))
        and not name.endswith("_FOR_DYNACONF")
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_once(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall time of one whole process, in seconds; exits with its output if it fails."""
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise SystemExit(f"{argv} exited {result.returncode}:\n{output}")
    return elapsed


def run_timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one whole process, in seconds.

    CPU time moves far less than wall time when other work shares the cores: the wall time
    is the figure users feel, the CPU time says whether a difference is real.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = run_once(argv, cwd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def p90(samples: list[float]) -> float:
    """The 90th percentile."""
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL after a minute."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def transfer_main(
    description: str,
    *,
    prefix: str,
    runs: int,
    baseline_metavar: str,
    serve_baseline: Callable[[int, str], None],
    measure: Callable[[argparse.Namespace, Path], dict[str, object]],
    extra: Callable[[argparse.ArgumentParser], None] = lambda parser: None,
) -> tuple[argparse.Namespace, dict[str, object]] | None:
    """The command line the transfer benchmarks (upload.py, download.py) share.

    ``--serve-baseline FD X`` is how a benchmark starts its own bare Starlette baseline in a
    child; ``--json`` prints the results. Returns the arguments and the results to print as
    text, or None when there is nothing left to print.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=runs)
    extra(parser)
    parser.add_argument("--serve-baseline", nargs=2, metavar=("FD", baseline_metavar))
    parser.add_argument("--work-dir", help="where the data goes (default: the system temp)")
    parser.add_argument("--against", type=Path, help="another checkout, measured in every run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(int(args.serve_baseline[0]), args.serve_baseline[1])
        return None
    with tempfile.TemporaryDirectory(prefix=prefix, dir=args.work_dir) as work:
        result = measure(args, Path(work))
    if args.json:
        print(json.dumps(result, indent=2))
        return None
    return args, result
