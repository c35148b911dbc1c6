"""Start a real ``app serve`` for a test, on a port the server binds itself."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class LiveServer:
    """A real ``app serve`` subprocess started by the `app_live_server` fixture."""

    url: str
    data_root: Path
    pid: int
    token: str | None
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header the server expects, if it has a token."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def __str__(self) -> str:
        return self.url


def published_port(
    root: Path, process: subprocess.Popen[bytes], log: Path, attempts: int = 600
) -> int:
    """The port an ``app serve --port 0`` bound, read from the holder JSON of its lock file.

    The server binds the socket itself and then publishes the port, so no other process can
    take the port between its choice and its use (a race under ``pytest -n 2``).

    Args:
        root: the server's data root.
        process: the ``app serve`` process.
        log: the file its output goes to, shown if it exits first.
        attempts: how many polls, 50 ms apart, before giving up.
    """
    from app.lock import read_holder

    for _ in range(attempts):
        holder = read_holder(root)
        if holder and holder.get("pid") == process.pid and holder.get("port"):
            return int(holder["port"])
        if process.poll() is not None:
            out = log.read_text(errors="replace")
            pytest.fail(f"app serve exited with {process.returncode}:\n{out}", pytrace=False)
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"app serve published no port in {root / '.server.lock'}", pytrace=False)


def start_server(
    env: Mapping[str, str], root: Path, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``app serve --port 0`` with ``env``; return it and its URL once it answers.

    The caller stops it (``terminate()``, then ``wait()``).

    Args:
        env: the server's whole environment (its profile, root and token come from it).
        root: the data root that environment gives it, where it publishes its port.
        log: where its output goes: a file, not a pipe, which nobody would read while the
            test runs, and which would block the server once full.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", "0"],
            env=dict(env),
            stdout=output,
            stderr=output,
        )
    try:
        url = f"http://127.0.0.1:{published_port(root, process, log)}"
        wait_until_serving(url, process, log=log)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, url


def wait_until_serving(
    url: str, process: subprocess.Popen[bytes], attempts: int = 300, log: Path | None = None
) -> None:
    """Poll ``GET /health`` until it answers; fail with the server's output if it exits.

    Args:
        url: the server's base URL.
        process: the ``app serve`` process.
        attempts: how many polls, 50 ms apart, before giving up.
        log: the file the server writes its output to, shown if it exits (else its stdout
            pipe is read).
    """
    import httpx

    for _ in range(attempts):
        if process.poll() is not None:
            if log is not None:
                out = log.read_text(errors="replace")
            else:
                out = process.stdout.read().decode(errors="replace") if process.stdout else ""
            pytest.fail(f"app serve exited with {process.returncode}:\n{out}", pytrace=False)
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"app serve did not answer {url}/health", pytrace=False)
