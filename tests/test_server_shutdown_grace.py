"""A server told to stop keeps its data root until the last write it began has ended.

Past its shutdown grace uvicorn cancels the requests still running, but not the worker
threads they wait on. A create whose rename was slow (here a real ``app serve`` whose
``os.rename`` of a staging directory waits two seconds, as on a stalled disk) went on after
the server had released its lock: for that time a maintenance command could take the root
while the server still wrote to it, and the client was told "Internal Server Error" in plain
text about a session that then existed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
from live_http import WAIT

from app import config as appconfig
from app.lock import probe
from app.testing.live_server import start_server, stop_server

# Each create's rename into sessions/ waits, once the test has seen it begin.
_SLOW_RENAME = """
import os, sys, time

def _slow(event, args):
    if event == "os.rename" and os.path.basename(str(args[0])).startswith(".new-"):
        open(os.environ["SLOW_RENAME_MARK"], "w").close()
        time.sleep(2.0)

sys.addaudithook(_slow)
"""


def test_a_write_past_the_grace_ends_before_the_lock_is_released(tmp_path: Path) -> None:
    root = tmp_path / "live-data"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_SLOW_RENAME)
    mark = tmp_path / "rename-began"
    env = {
        **os.environ,
        "APP_HOST": "127.0.0.1",
        "APP_DATA_ROOT": str(root),
        "APP_SHUTDOWN_GRACE_SECONDS": "1",
        "SLOW_RENAME_MARK": str(mark),
        "PYTHONPATH": os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    token = appconfig.load("testing", environ=env).api_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    log = tmp_path / "server.log"
    process, url = start_server(env, root, log)
    answers: list[httpx.Response] = []
    client = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{url}/sessions", json={"title": "slow"}, headers=headers, timeout=WAIT)
        )
    )
    try:
        client.start()
        deadline = time.monotonic() + WAIT
        while not mark.exists():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        # The first moment the lock is free, the create's rename has happened: nothing of
        # the server writes to the root once another process could take it.
        while probe(root).held:
            time.sleep(0.005)
        created = [p.name for p in (root / "sessions").iterdir() if not p.name.startswith(".")]
        assert len(created) == 1, (created, log.read_text())
        client.join(WAIT)
        assert process.wait(WAIT) == 0, log.read_text()
    finally:
        if process.poll() is None:
            stop_server(process)

    # The client is told what happened, in the app's own words, not a bare 500.
    (answer,) = answers
    assert answer.status_code == 503, answer.text
    assert answer.headers["connection"] == "close"
    assert answer.json()["code"] == "server_stopped"
    assert answer.json()["message"] == (
        "POST /sessions was cut short: the server was told to stop, and this request ran past "
        "the 1 s it gives requests in flight (shutdown_grace_seconds, "
        "APP_SHUTDOWN_GRACE_SECONDS). A write it began still ends before the server gives up "
        "its data root, so it may have taken effect: read the resource (GET) before you retry, "
        "once a server runs again"
    )
    server_log = log.read_text()
    assert "waiting for 1 request(s) still at work in worker threads before releasing" in (
        server_log
    )
    assert server_log.index("waiting for 1 request(s)") < server_log.index("releasing the hold")
