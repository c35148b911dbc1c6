"""End to end: real `app serve` subprocesses on 127.0.0.1 with data roots under tmp_path.

Each test starts its own servers (``python -m app serve``) and commands (``python -m app
...``) with ``APP_DATA_ROOT`` under ``tmp_path`` (inside the pytest sandbox, which every
subprocess obeys) and port 0: each server binds a free port itself and publishes it in its
lock file, so parallel tests never race for one. Waiting is bounded polling, never a sleep
taken as an assertion.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import certifi
import forked_app
import httpx
import pytest
from engines import free_ports

from app.lock import probe
from app.testing import published_port
from app.testing.live_server import make_first_deploy_root

POLL = 0.02
ATTEMPTS = 1500  # bounded: 30 s at most for anything to happen


#: What httpx would verify a certificate with: every request here is plain HTTP to 127.0.0.1,
#: but each client builds its certificate store anyway (~35 ms of CPU reading certifi's bundle),
#: so the clients of these tests share one, built once.
TLS = ssl.create_default_context(cafile=certifi.where())


def wait_for(condition: Any, what: str) -> None:
    for _ in range(ATTEMPTS):
        if condition():
            return
        time.sleep(POLL)
    pytest.fail(f"gave up waiting for {what}")


def app_env(
    root: Path,
    *,
    profile: str = "testing",
    port: int | None = None,
    base: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of an `app` child on `root`: `base` (this process's environment by
    default; a head start's thread passes the run's, which a test may be changing meanwhile)
    with the root, host, profile and port set."""
    env = {**(os.environ if base is None else base), "APP_DATA_ROOT": str(root)}
    env["APP_HOST"] = "127.0.0.1"
    env["ENV_FOR_DYNACONF"] = profile
    if port is not None:
        env["APP_PORT"] = str(port)
    if profile != "testing":
        # Opt in the way @pytest.mark.app_profile does: the root stays inside the sandbox.
        allowed = {p for p in env.get("PYTEST_APP_ALLOW_PROFILES", "").split(",") if p}
        env["PYTEST_APP_ALLOW_PROFILES"] = ",".join(sorted(allowed | {profile}))
    env.update(extra)
    return env


def run_app(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m app *args`` run to its end, its output captured (forked from the run's
    zygote when it fits: tests/forked_app.py)."""
    return forked_app.run(env, list(args))


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its content hash: what 'changes nothing' compares."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class Server:
    """One `app serve` subprocess; its output goes to a file (a full pipe would block it).

    It is forked from the run's zygote (tests/forked_app.py), which imported the app once,
    when the environment fits (else ``python -m app serve``); it then runs ``app serve`` as
    ``python -m app`` would, with the same ``sys.argv`` and environment, as a process of its
    own: a test that kills it with SIGKILL kills that process and no other.
    """

    def __init__(
        self, env: dict[str, str], log: Path, limits: dict[int, tuple[int, int]] | None = None
    ) -> None:
        self.env = env
        # Without a port of its own it gets `--port 0`, which overrides the profile's.
        self._port = int(env["APP_PORT"]) if "APP_PORT" in env else None
        self.root = Path(env["APP_DATA_ROOT"])
        self.token = env.get("APP_API_TOKEN", "testing-token-not-secret")
        self.log = log
        args = ["serve", *(["--port", "0"] if self._port is None else [])]
        make_first_deploy_root(env, self.root)
        self.process = forked_app.serve(env, log, args, limits)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = published_port(self.root, self.process, self.log)
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, token: str | None = "default") -> httpx.Client:
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=TLS)

    def wait_ready(self) -> Server:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"app serve exited {self.process.returncode}:\n{self.output}")
            try:
                return probe.get(f"{self.url}/health").status_code == 200
            except httpx.TransportError:
                return False

        with httpx.Client(timeout=2, verify=TLS) as probe:
            wait_for(ready, f"{self.url}/health")
        return self

    def wait_exit(self) -> int:
        return self.process.wait(timeout=60)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.wait_exit()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=60)


@pytest.fixture
def start(servers: list[Server], tmp_path: Path) -> Any:
    def start(env: dict[str, str], *, ready: bool = True) -> Server:
        server = Server(env, tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server.wait_ready() if ready else server

    return start


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


# --- one holder per root ----------------------------------------------------------------


def test_a_second_server_on_the_same_root_exits_75_naming_the_first_pid(
    start: Any, root: Path
) -> None:
    first = start(app_env(root))
    second = start(app_env(root), ready=False)
    assert second.wait_exit() == 75
    assert f"held by pid {first.pid}, kind server" in second.output
    assert f"kill {first.pid}" in second.output
    assert httpx.get(f"{first.url}/health").status_code == 200


def test_app_status_names_the_holder_and_nobody_once_it_stopped(start: Any, root: Path) -> None:
    server = start(app_env(root))
    result = run_app("status", env=app_env(root))
    assert result.returncode == 0, result.stderr
    assert f"held by: pid {server.pid}, kind server, profile testing" in result.stdout
    assert f"port {server.port}" in result.stdout
    assert "stamp: profile testing" in result.stdout
    as_json = json.loads(run_app("status", "--json", env=app_env(root)).stdout)
    assert as_json["held"] is True
    assert as_json["holder"]["pid"] == server.pid
    assert server.stop() == 0
    result = run_app("status", env=app_env(root))
    assert result.returncode == 0
    assert "held by: nobody" in result.stdout
    # The start that created the root said so (after a first deploy: a mistyped path); the
    # next start on it does not.
    created = f"data root {root} did not exist: created it, empty, for profile testing"
    assert created in server.output
    again = start(app_env(root))
    assert again.stop() == 0
    assert "did not exist" not in again.output


def test_status_of_a_root_that_does_not_exist_creates_nothing(root: Path) -> None:
    result = run_app("status", env=app_env(root))
    assert result.returncode == 0, result.stderr
    assert "does not exist yet" in result.stdout
    assert "held by: nobody" in result.stdout
    assert not root.exists()


def test_a_port_in_use_exits_69_and_releases_the_lock(start: Any, root: Path) -> None:
    # A port outside the ephemeral range: once `taken` closes, no connect() can take it
    # before the server does (see engines.free_ports).
    (port,) = free_ports(1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        server = start(app_env(root, port=port), ready=False)
        assert server.wait_exit() == 69
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in server.output
    assert probe(root).held is False
    start(app_env(root, port=port))  # the lock is free and the port too now


# --- crashes ----------------------------------------------------------------------------


def test_kill_9_then_an_immediate_restart_keeps_every_acknowledged_write(
    start: Any, root: Path
) -> None:
    # Its own port, not port 0's: between the kill and the restart, a connect() anywhere on
    # the machine could take a port from the ephemeral range (see engines.free_ports).
    (port,) = free_ports(1)
    env = app_env(root, port=port)
    server = start(env)
    acknowledged: dict[str, bytes] = {}
    with server.client() as client:
        for i in range(20):
            sid = client.post("/sessions", json={"title": f"s{i}"}).json()["id"]
            data = secrets.token_bytes(1000 + i)
            response = client.put(f"/sessions/{sid}/files/f{i}.bin", content=data)
            assert response.status_code == 201
            acknowledged[sid] = data
    server.process.send_signal(signal.SIGKILL)
    server.wait_exit()
    restarted = start(env)  # same root, same port, at once
    with restarted.client() as client:
        listing = client.get("/sessions", params={"limit": 100}).json()
        assert [s["id"] for s in listing["items"]] == list(acknowledged)
        for i, (sid, data) in enumerate(acknowledged.items()):
            assert client.get(f"/sessions/{sid}/files/f{i}.bin").content == data
        # Red team 76 on the server: no answer said how long a cache may keep it, and a
        # browser (Chromium, on the API's own /docs page) answered a download after an
        # acknowledged replace with the old bytes from its cache (a Last-Modified's
        # heuristic), never asking. Every answer, a 404 and /health's included, is no-store.
        answers = [
            client.get("/sessions"),
            client.get(f"/sessions/{sid}"),
            client.head(f"/sessions/{sid}/files/f{i}.bin"),
            client.get("/sessions/0123456789abcdef0123456789abcdef"),
            client.get("/health"),
        ]
        assert [a.headers.get_list("cache-control") for a in answers] == [["no-store"]] * 5


def open_upload(server: Server, path: str, head: bytes, declared: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    request = (
        f"{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Length: {declared}\r\n"
    ).encode()
    sock.sendall(request + head)
    return sock


def test_a_server_killed_mid_upload_leaves_no_partial_file_visible(start: Any, root: Path) -> None:
    env = app_env(root, APP_MAX_UPLOAD_BYTES=str(64 * 2**20))
    server = start(env)
    with server.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
    total = 32 * 2**20
    put = open_upload(server, f"PUT /sessions/{sid}/files/raw.bin", b"\r\n" + b"r" * 2**21, total)
    body_head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="form.bin"\r\n\r\n'
    form = open_upload(
        server,
        f"POST /sessions/{sid}/files",
        b"Content-Type: multipart/form-data; boundary=B\r\n\r\n" + body_head + b"m" * 2**21,
        total,
    )
    tmp = root / ".tmp"

    def both_in_flight() -> bool:
        return len([p for p in tmp.iterdir() if p.stat().st_size >= 2**20]) == 2

    wait_for(both_in_flight, "both uploads to reach .tmp/")
    server.kill()
    put.close()
    form.close()
    records = root / "sessions" / sid / "records"
    assert not (records / "raw.bin").exists()
    assert not (records / "form.bin").exists()
    assert not list((root / "sessions" / sid).glob("blobs/*"))
    assert not any(p.name.startswith(".") for p in (root / "sessions").iterdir())
    restarted = start(env)
    assert list(tmp.iterdir()) == []  # the crash's junk is cleared by the next writer
    with restarted.client() as client:
        assert client.get(f"/sessions/{sid}/files").json()["items"] == []


def test_sigterm_lets_an_in_flight_upload_finish_then_releases_the_lock(
    start: Any, root: Path
) -> None:
    server = start(app_env(root))
    with server.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
    data = b"x" * 300_000
    sock = open_upload(server, f"PUT /sessions/{sid}/files/late", b"\r\n" + data[:1000], len(data))
    wait_for(lambda: any((root / ".tmp").iterdir()), "the upload to start")
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "Shutting down" in server.output, "the server to begin shutting down")
    sock.sendall(data[1000:])
    response = sock.makefile("rb").readline()
    sock.close()
    assert response.startswith(b"HTTP/1.1 201"), response
    assert server.wait_exit() == 0
    record = json.loads((root / "sessions" / sid / "records" / "late").read_text())
    assert (root / "sessions" / sid / "blobs" / record["blob"]).read_bytes() == data
    assert probe(root).held is False
    assert (root / ".server.lock").read_bytes() == b""  # emptied before unlocking


def test_a_server_whose_lock_file_is_deleted_stops_with_a_logged_reason(
    start: Any, root: Path
) -> None:
    server = start(app_env(root, APP_LOCK_CHECK_SECONDS="0.1"))
    (root / ".server.lock").unlink()
    assert server.wait_exit() == 70
    assert "ERROR:" in server.output
    assert "lock file" in server.output
    assert "was deleted" in server.output
    assert "stops instead of sharing it" in server.output


# --- maintenance against a live server, protected profiles, stamps ---------------------


def test_purge_while_a_server_runs_exits_75_and_changes_nothing(start: Any, root: Path) -> None:
    server = start(app_env(root))
    with server.client() as client:
        for _ in range(3):
            sid = client.post("/sessions", json={}).json()["id"]
            client.put(f"/sessions/{sid}/files/a", content=b"keep")
    before = snapshot(root)
    commands = (["data", "purge"], ["data", "empty-trash"], ["sessions", "restore", sid])
    # Side by side: each first retries the server's lock for a second, then is refused.
    with ThreadPoolExecutor(len(commands)) as pool:
        results = [pool.submit(run_app, *command, env=app_env(root)) for command in commands]
    for command, running in zip(commands, results, strict=True):
        result = running.result()
        assert result.returncode == 75, (command, result.stderr)
        assert f"held by pid {server.pid}, kind server" in result.stderr
    assert snapshot(root) == before
    with server.client() as client:
        assert client.get("/sessions").json()["total"] == 3


TOKEN = secrets.token_urlsafe(24)


def production_env(root: Path, **extra: str) -> dict[str, str]:
    return app_env(root, profile="production", APP_API_TOKEN=TOKEN, **extra)


def test_production_purge_without_confirmation_exits_77_and_changes_nothing(
    start: Any, root: Path
) -> None:
    server = start(production_env(root))
    with server.client() as client:
        client.post("/sessions", json={"title": "precious"}).raise_for_status()
    before = snapshot(root)
    # Refused for the missing confirmation before the lock is even tried: 77, not 75.
    for command in (["data", "purge"], ["data", "empty-trash", "--older-than", "1d"]):
        result = run_app(*command, env=production_env(root))
        assert result.returncode == 77, result.stderr
        assert "protected profile 'production'" in result.stderr
        assert "--yes-i-mean-it" in result.stderr
    assert server.stop() == 0
    after_stop = snapshot(root)
    result = run_app("data", "purge", env=production_env(root))
    assert result.returncode == 77
    assert snapshot(root) == after_stop
    assert {k: v for k, v in before.items() if k != ".server.lock"} == {
        k: v for k, v in after_stop.items() if k != ".server.lock"
    }
    confirmed = run_app("data", "purge", "--yes-i-mean-it", env=production_env(root))
    assert confirmed.returncode == 0, confirmed.stderr
    assert "moved 1 session(s)" in confirmed.stdout


def test_a_root_stamped_production_is_refused_as_development(start: Any, root: Path) -> None:
    start(production_env(root)).stop()
    development = app_env(root, profile="development")
    server = start(development, ready=False)
    assert server.wait_exit() == 78
    assert "belongs to profile 'production'" in server.output
    assert "profile 'development' tried to open it" in server.output
    assert "app data restamp --profile development --from production" in server.output
    stamp = json.loads((root / ".app-profile.json").read_text())
    assert stamp["profile"] == "production"
    refused = run_app("data", "restamp", "--profile", "development", "--from", "production",
                      env=development)  # fmt: skip
    assert refused.returncode == 77
    done = run_app(
        "data", "restamp", "--profile", "development", "--from", "production", "--yes-i-mean-it",
        env=development,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    start(development)
    audit = [json.loads(x) for x in (root / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["operation"] == "restamp"


def test_a_deleted_session_is_restorable_and_audited(start: Any, root: Path) -> None:
    env = app_env(root)
    server = start(env)
    with server.client() as client:
        sid = client.post("/sessions", json={"title": "oops"}).json()["id"]
        client.post(f"/sessions/{sid}/files", files={"file": ("a.txt", b"data")})
        agent = {"User-Agent": "cleanup-script/1.0"}
        assert client.delete(f"/sessions/{sid}", headers=agent).status_code == 200
        assert client.get(f"/sessions/{sid}").status_code == 404
    assert run_app("sessions", "restore", sid, env=env).returncode == 75
    assert server.stop() == 0
    trash = run_app("sessions", "list", "--trash", env=env)
    assert sid in trash.stdout
    assert "delete" in trash.stdout
    restored = run_app("sessions", "restore", sid, env=env)
    assert restored.returncode == 0, restored.stderr
    assert f"restored session {sid} (oops)" in restored.stdout
    shown = run_app("sessions", "show", sid, env=env)
    assert "a.txt" in shown.stdout
    audit = [json.loads(x) for x in (root / "audit.jsonl").read_text().splitlines()]
    trashed, back = audit[-2], audit[-1]
    assert {k: trashed[k] for k in ("operation", "kind", "target")} == {
        "operation": "trash-session",
        "kind": "server",
        "target": sid,
    }
    # Who asked the server (red team 75 on the documentation: the line named the server's
    # argv alone, `app serve`, and the pages said the log "says who ran it"). A command's
    # line has no client: its argv is who.
    assert trashed["client"] == {"address": "127.0.0.1", "user_agent": "cleanup-script/1.0"}
    assert "client" not in back
    assert {k: back[k] for k in ("operation", "kind", "target")} == {
        "operation": "restore-session",
        "kind": "maintenance",
        "target": sid,
    }
    assert "restore" in back["argv"]
    again = start(env)
    with again.client() as client:
        assert client.get(f"/sessions/{sid}/files/a.txt").content == b"data"


# --- limits, names, tokens over real HTTP -----------------------------------------------


def test_an_oversized_upload_is_413_and_leaves_no_temporary_file(start: Any, root: Path) -> None:
    server = start(app_env(root, APP_MAX_UPLOAD_BYTES="4096"))
    with server.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        declared = client.put(f"/sessions/{sid}/files/a", content=b"x" * 5000)
        chunked = client.put(f"/sessions/{sid}/files/b", content=iter([b"y" * 3000] * 2))
        form = client.post(f"/sessions/{sid}/files", files={"file": ("c", b"z" * 5000)})
        for response in (declared, chunked, form):
            assert response.status_code == 413, response.text
            assert response.json()["code"] == "upload_too_large"
        assert client.get(f"/sessions/{sid}/files").json()["items"] == []
        assert client.put(f"/sessions/{sid}/files/ok", content=b"x" * 4096).status_code == 201
    assert list((root / ".tmp").iterdir()) == []
    assert sorted(p.name for p in (root / "sessions" / sid / "records").iterdir()) == ["ok"]
    assert len(list((root / "sessions" / sid / "blobs").iterdir())) == 1


def test_hostile_file_names_never_write_outside_the_session(
    start: Any, root: Path, tmp_path: Path
) -> None:
    server = start(app_env(root))
    with server.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        before = snapshot(tmp_path)
        for raw in ["..%2Fx", "..%2F..%2F..%2Fescape", "%2Fetc%2Fpasswd", "a%00b", "x" * 256]:
            response = client.put(f"/sessions/{sid}/files/{raw}", content=b"payload")
            assert response.status_code == 400, (raw, response.text)
            assert response.json()["code"] == "invalid_name"
        for name in [b"../x", b"/abs/path", b"a\0b", b"y" * 300, b".."]:
            body = (
                b'--B\r\nContent-Disposition: form-data; name="file"; filename="' + name
                + b'"\r\n\r\npayload\r\n--B--\r\n'
            )  # fmt: skip
            response = client.post(
                f"/sessions/{sid}/files",
                content=body,
                headers={"Content-Type": "multipart/form-data; boundary=B"},
            )
            assert response.status_code == 400, (name, response.text)
        response = client.put(f"/sessions/{'0' * 31}g/files/a", content=b"payload")
        assert response.status_code == 400
    after = snapshot(tmp_path)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert {k for k in changed if not k.startswith("server-")} == set()  # logs aside


def test_a_request_without_the_token_on_production_is_401(start: Any, root: Path) -> None:
    server = start(production_env(root))
    with server.client(token=None) as anonymous:
        assert anonymous.get("/health").status_code == 200
        for method, path in [("GET", "/sessions"), ("POST", "/sessions")]:
            response = anonymous.request(method, path)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["code"] == "unauthorized"
    with server.client(token="testing-token-not-secret") as wrong:
        assert wrong.get("/sessions").status_code == 401
    with server.client() as right:
        assert right.get("/sessions").status_code == 200
    assert list((root / "sessions").iterdir()) == []
