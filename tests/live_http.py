"""Raw calls to a live `app serve` (`app.testing.LiveServer`) that several test files make."""

from __future__ import annotations

import socket

import httpx

from app.testing import LiveServer

# Bounds a socket operation of a broken server, so that a hung test fails: it measures nothing.
WAIT = 15.0


def address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(address(server), timeout=WAIT)


def a_session(server: LiveServer) -> str:
    """A new empty session's id."""
    response = httpx.post(f"{server.url}/sessions", json={}, headers=server.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
