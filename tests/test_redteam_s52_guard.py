"""Red team 52 on the guard (branch rt-guard35): what a test run reaches over HTTP through
the configuration the app gives it.

What broke (pytest in a subprocess, as a user's ordinary suite would have it, next to a live
server that is not the run's):

- a live server of the testing profile outside the run (a developer's own
  ``ENV_FOR_DYNACONF=testing app serve``, on the port ``[testing]`` names) and a suite whose
  fixture starts the app's own entry point (``python -m app serve``) in the sandbox, waits
  for ``/health`` at ``app_config.port`` and cleans the sessions with
  ``app_config.api_token`` before each test. The run's server could not bind the port, the
  developer's answered, and the clean-up moved its sessions to its trash; the run passed.
  The app gives every test the testing profile's port and its token (the committed
  ``.secrets.toml``'s), so every request a test sends to "the testing server" went to
  whoever listens there; the sandbox guards what the app opens, never where a test's
  requests go.

Now the plugin looks, as the run starts (before any test could start a server of its own),
whether anything listens on the testing profile's port on this machine, and refuses the run
naming it (the app holder's details where one of the roots the settings name is held by it,
else the pid and command line of what listens) and how to resolve it. And the ``app_config``
fixture, which hands a test the port and the token, looks again at each test, for a server
started since the run began. A test that opts into another profile (development) is not
refused where that profile's server runs: running the suite beside the development server
is what the app is for (see the attacks' catalogue, red team 52's *not stopped*).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import forked_pytest
import pytest
from engines import free_ports
from project_copy import copy_project_settings
from test_redteam_s24_guard import _inner_env
from test_server_e2e import Server, app_env

#: A user's suite written against the app: a fixture that serves the run's testing profile
#: with the app's own entry point and waits until it answers, and a test that starts from a
#: clean slate. Its server cannot bind a port someone else serves.
USER_SUITE = """
import subprocess, sys, time

import httpx, pytest


@pytest.fixture
def server(app_config):
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve"])
    url = f"http://{app_config.host}:{app_config.port}"
    for _ in range(400):
        try:
            httpx.get(url + "/health")
            break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url, {"Authorization": f"Bearer {app_config.api_token}"}
    proc.terminate()
    proc.wait()


def test_starts_from_a_clean_slate(server):
    url, auth = server
    for session in httpx.get(url + "/sessions", headers=auth).json()["items"]:
        httpx.delete(f"{url}/sessions/{session['id']}", headers=auth).raise_for_status()
    assert httpx.get(url + "/sessions", headers=auth).json()["items"] == []
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the settings whose [testing] names a port of its own, and a user's suite."""
    base = tmp_path_factory.mktemp("s52")
    settings = copy_project_settings(base / "settings")
    (port,) = free_ports(1)
    text = settings.joinpath("settings.toml").read_text()
    settings.joinpath("settings.toml").write_text(text.replace("port = 8001", f"port = {port}"))
    (base / "suite").mkdir()
    (base / "suite" / "test_user.py").write_text(USER_SUITE)
    return settings


def _port(settings: Path) -> int:
    for line in settings.joinpath("settings.toml").read_text().splitlines():
        if line.startswith("port = ") and "8000" not in line and "8080" not in line:
            return int(line.split()[-1])
    raise AssertionError("no testing port")


def _run_suite(settings: Path) -> subprocess.CompletedProcess[str]:
    temporary = settings.parent / "tmp"  # pytest's own, outside the settings' roots
    temporary.mkdir(exist_ok=True)
    return forked_pytest.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "test_user.py"],
        cwd=settings.parent / "suite",
        env=_inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=str(temporary)),
    )


@pytest.fixture(scope="module")
def developers_server(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`ENV_FOR_DYNACONF=testing app serve` on the settings' own testing root and port, not a
    process of the inner run (a child of this test's run, beside it)."""
    port = _port(project)
    env = app_env(project / "data" / "testing", port=port, APP_SETTINGS_DIR=str(project))
    server = Server(env, tmp_path_factory.mktemp("s52-log") / "server.log").wait_ready()
    with server.client() as client:
        client.post("/sessions", json={"title": "the developer's"}).raise_for_status()
    yield server
    server.stop()


def test_a_server_outside_the_run_on_the_testing_port_refuses_the_run(
    project: Path, developers_server: Server
) -> None:
    done = _run_suite(project)
    with developers_server.client() as client:
        titles = [s["title"] for s in client.get("/sessions").json()["items"]]
    assert titles == ["the developer's"], done.stdout + done.stderr
    assert done.returncode == 4, done.stdout + done.stderr
    port = _port(project)
    assert (
        f"app: refusing to run: the testing profile's port {port} (settings.toml [testing]) "
        f"is already served on 127.0.0.1 by pid {developers_server.pid}, kind server, "
        "profile testing"
    ) in done.stderr
    assert f"serving the data root of profile 'testing' ({project / 'data' / 'testing'})" in (
        done.stderr
    )
    assert "a process outside this run" in done.stderr
    assert "Stop that server, or serve it on another port (`app serve --port N`)" in done.stderr


def test_anything_else_listening_there_is_named_by_its_pid(project: Path, tmp_path: Path) -> None:
    # Not an app server (no root the settings name is held): what listens is named by its
    # pid and command line. Here, this test's own process.
    other = copy_project_settings(tmp_path / "settings")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        text = other.joinpath("settings.toml").read_text()
        other.joinpath("settings.toml").write_text(text.replace("port = 8001", f"port = {port}"))
        (tmp_path / "suite").mkdir()
        (tmp_path / "suite" / "test_user.py").write_text("def test_nothing():\n    pass\n")
        done = _run_suite(other)
    assert done.returncode == 4, done.stdout + done.stderr
    assert (
        f"the testing profile's port {port} (settings.toml [testing]) is already served on "
        f"127.0.0.1 by pid {os.getpid()} ("
    ) in done.stderr


#: A server outside the run that starts listening on the testing port once the run has
#: begun: the first test lets it listen (through two FIFOs, no waiting on time), the
#: second asks for `app_config`.
LATE_SUITE = """
import os


def test_a_first_one():
    with open(os.environ["RT_GO"], "w") as go:
        go.write("listen")
    with open(os.environ["RT_READY"]) as ready:
        assert ready.read() == "listening"


def test_a_later_one(app_config):
    pass
"""

LATE_LISTENER = """
import socket, sys
with socket.socket() as s:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    with open(sys.argv[2]) as go:
        go.read()
    s.listen()
    with open(sys.argv[3], "w") as ready:
        ready.write("listening")
    sys.stdin.read()  # until the test is done with it
"""


def test_a_server_that_starts_on_the_testing_port_during_the_run_fails_app_config(
    tmp_path: Path,
) -> None:
    other = copy_project_settings(tmp_path / "settings")
    (port,) = free_ports(1)
    text = other.joinpath("settings.toml").read_text()
    other.joinpath("settings.toml").write_text(text.replace("port = 8001", f"port = {port}"))
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_user.py").write_text(LATE_SUITE)
    go, ready = tmp_path / "go", tmp_path / "ready"
    os.mkfifo(go)
    os.mkfifo(ready)
    listener = subprocess.Popen(
        [sys.executable, "-c", LATE_LISTENER, str(port), str(go), str(ready)],
        stdin=subprocess.PIPE,
    )
    try:
        temporary = tmp_path / "tmp"
        temporary.mkdir()
        done = forked_pytest.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rE"],
            cwd=tmp_path / "suite",
            env=_inner_env(
                APP_SETTINGS_DIR=str(other),
                TMPDIR=str(temporary),
                RT_GO=str(go),
                RT_READY=str(ready),
            ),
        )
    finally:
        listener.communicate(b"")
    assert "1 passed, 1 error" in done.stdout, done.stdout + done.stderr
    assert (
        f"app: refusing this test: the testing profile's port {port} (settings.toml "
        f"[testing]) is already served on 127.0.0.1 by pid {listener.pid} ("
    ) in done.stdout


PLAIN_SUITE = """
def test_testing(app_config):
    assert app_config.profile == "testing"
"""


def test_another_profiles_server_there_that_refuses_the_runs_token_is_left_alone(
    tmp_path: Path,
) -> None:
    # The README's development server, on a port the settings give testing too (both at
    # [default]'s): it answers the run's token 401, so no request of the run gets in. The
    # refusal of any listener there refused this project's own inner runs beside it.
    settings = copy_project_settings(tmp_path / "settings")
    (port,) = free_ports(1)
    text = settings.joinpath("settings.toml").read_text()
    settings.joinpath("settings.toml").write_text(text.replace("port = 8001", f"port = {port}"))
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_user.py").write_text(PLAIN_SUITE)
    env = app_env(
        settings / "data" / "development",
        profile="development",
        port=port,
        APP_SETTINGS_DIR=str(settings),
    )
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        done = _run_suite(settings)
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
