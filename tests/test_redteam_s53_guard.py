"""Red team 53 on the guard (branch rt-guard36): the plugin's fixtures used as a user's suite
uses them.

What broke (pytest in a subprocess, next to a developer's own testing server outside the
run, unless said otherwise):

- the configuration the ``app_live_server`` fixture hands a test (``server.config``) named
  the testing profile's port from the settings, not the port of the server the fixture
  started (``app serve --port 0``), and its token is the testing profile's. A test that
  built its URL from that configuration (``f"http://{cfg.host}:{cfg.port}"``, as it would
  from ``app_config``) reached whatever listened on the testing port: a developer's own
  ``ENV_FOR_DYNACONF=testing app serve``, which red team 52's look again at each test
  looks for in ``app_config`` alone. Its clean-up moved the developer's sessions to their
  trash, and the run passed;
- a conftest that gives the testing profile the team's own token at its import
  (``os.environ["APP_API_TOKEN"] = ...``), next to a developer's testing server run with
  that token: the run's look as it starts asked that server with the settings files' token,
  got 401, and left its socket alone for the rest of the run, so ``app_config``'s look at
  each test did too, while every test carried the token the server accepts;
- a test that removed ``ENV_FOR_DYNACONF`` (as a test of the default profile does) and then
  asked for ``app_live_server`` got a server of development, refused, whose refusal told it
  to opt into development, where its server would run on development's profile and token
  while ``server.config`` and ``server.headers`` named testing's;
- (in this process, with a real listener) a testing host given as the machine's own address
  on its network (``192.0.2.2``: for a container or a phone to reach the server), where a
  developer's server listens on the wildcard address: the look took any address but a
  loopback or a wildcard one for another machine's, and looked at nothing;
- (in a mount namespace whose hosts file names ``localhost`` for ``::1`` first) a testing
  host ``localhost`` and a server outside the run on ``[::1]`` alone: the look connected to
  ``127.0.0.1`` alone, a test's client reached ``::1``.

What changed: ``server.config`` names the server the fixture started (its host and the port
it bound; ``sources`` says so), and the fixture gives its server the testing profile, as
that configuration says. A server that refuses a token is left alone for that token only,
and ``app_config`` asks with the token the test gets. An address one of the machine's
interfaces has is looked at as the loopback is (found by binding it: no lookup), and so is
each loopback address of ``localhost``, in the order a client tries them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import forked_pytest
import pytest
from engines import free_ports
from project_copy import copy_project_settings
from test_redteam_s24_guard import _inner_env
from test_server_e2e import Server, app_env

from app.testing import guard

TOKEN = "the-team-s-testing-token"

#: A user's suite: its conftest gives the testing profile the team's own token (as a conftest
#: sets what its tests need, at its import); each test cleans "the testing server" through
#: the configuration a fixture hands it.
CONFTEST = f"""
import os

os.environ["APP_API_TOKEN"] = "{TOKEN}"
"""

SUITE = """
import httpx


def clean(cfg):
    url = f"http://{cfg.host}:{cfg.port}"
    auth = {"Authorization": f"Bearer {cfg.api_token}"}
    for session in httpx.get(url + "/sessions", headers=auth).json()["items"]:
        httpx.delete(f"{url}/sessions/{session['id']}", headers=auth).raise_for_status()


def test_through_the_live_server_s_configuration(monkeypatch, request):
    monkeypatch.delenv("ENV_FOR_DYNACONF")  # as a test of the default profile does
    app_live_server = request.getfixturevalue("app_live_server")
    clean(app_live_server.config)
    assert app_live_server.config.profile == "testing"
    assert app_live_server.config.port == int(app_live_server.url.rpartition(":")[2])
    assert "app_live_server" in app_live_server.config.sources["port"]


def test_through_app_config(app_config):
    clean(app_config)

"""


def test_the_configuration_a_fixture_hands_a_test_reaches_no_server_outside_the_run(
    tmp_path: Path,
) -> None:
    settings = copy_project_settings(tmp_path / "settings")
    (port,) = free_ports(1)
    text = settings.joinpath("settings.toml").read_text()
    settings.joinpath("settings.toml").write_text(text.replace("port = 8001", f"port = {port}"))
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "test_user.py").write_text(SUITE)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    # The developer's own testing server, with the team's token, outside the run.
    env = app_env(
        settings / "data" / "testing",
        port=port,
        APP_SETTINGS_DIR=str(settings),
        APP_API_TOKEN=TOKEN,
    )
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        with server.client() as client:
            client.post("/sessions", json={"title": "the developer's"}).raise_for_status()
        done = forked_pytest.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"],
            cwd=suite,
            env=_inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=str(temporary)),
        )
        with server.client() as client:
            titles = [s["title"] for s in client.get("/sessions").json()["items"]]
    finally:
        server.stop()
    assert titles == ["the developer's"], done.stdout + done.stderr
    assert "1 passed, 1 error" in done.stdout, done.stdout + done.stderr
    assert (
        f"app: refusing this test: the testing profile's port {port} (settings.toml "
        f"[testing]) is already served on 127.0.0.1 by pid {server.pid}, kind server, "
        "profile testing"
    ) in done.stdout, done.stdout
    assert "Stop that server, or serve it on another port" in done.stdout


def _own_network_address() -> str:
    """An address of this machine's own network interface (the one a route out leaves by;
    a UDP socket's connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))
        except OSError:
            pytest.skip("this machine has no route out, so no address but its loopback")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("this machine's route out leaves by its loopback")
    return address


def test_the_machine_s_own_network_address_is_looked_at_too() -> None:
    address = _own_network_address()
    with socket.socket() as listener:
        # A developer's server on the wildcard address, answering whatever it is asked 200.
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        stop = threading.Event()

        def answer() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError), listener.accept()[0] as connection:
                    connection.settimeout(1.0)
                    if connection.recv(4096):
                        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        try:
            found = guard.local_address(address, port, "settings.toml [testing]")
            assert found == (address, port, "settings.toml [testing]")
            refusal = guard.port_served("testing", [], address=found)
        finally:
            stop.set()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                pass
            thread.join()
    assert refusal is not None
    assert (
        f"the testing profile's port {port} (settings.toml [testing]) is already served on "
        f"{address} by pid {os.getpid()} ("
    ) in refusal


#: In a mount namespace of its own whose hosts file names ``localhost`` for ``::1`` first: a
#: server on ``[::1]`` alone on a port (answering 200 to whatever it is asked), and the look
#: at a testing host ``localhost`` there.
IPV6_FIRST = """
import socket, sys, threading
from app.testing import guard

with socket.socket(socket.AF_INET6) as listener:
    listener.bind(("::1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def answer():
        while True:
            connection = listener.accept()[0]
            with connection:
                if connection.recv(4096):
                    connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n")

    threading.Thread(target=answer, daemon=True).start()
    first = socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)[0][4][0]
    print(first, port)
    print(guard.port_served("testing", [], address=guard.local_address("localhost", port, "x")))
"""


def test_localhost_s_ipv6_address_is_looked_at_where_it_comes_first(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"):
        pytest.skip("only root makes a mount namespace with its own hosts file (unshare -m)")
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 localhost\n127.0.0.1 localhost\n")
    done = subprocess.run(
        [
            "unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$1" /etc/hosts && exec "$2" -c "$3"', "sh",
            str(hosts), sys.executable, IPV6_FIRST,
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    first, port = done.stdout.splitlines()[0].split()
    if first != "::1":
        pytest.skip(f"this machine's resolver gives localhost's {first} first, even so")
    assert (
        f"the testing profile's port {port} (x) is already served on ::1 by pid "
    ) in done.stdout, done.stdout + done.stderr
