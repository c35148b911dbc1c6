"""Red team 60 on regress, the late merges (branch rt-regress12): what rt-regress10 (an
ignored stop signal kept, commands printed for any sh, log lines as text), rt-regress9 (a
lock forwarded by a FUSE mirror) and 9769748 (a resolved root's name read as UTF-8) broke.

What broke:

- ``app serve`` started with SIGINT ignored (``app serve &`` in a script, whose shell
  ignores SIGINT there so that the terminal's Ctrl-C leaves it running; a supervisor that
  ignores it on purpose). rt-regress10 kept such a signal ignored for every command
  (`app.cli._listened`), but ``serve`` takes its signals itself (`_StopRequest`, then
  uvicorn's ``capture_signals``, and ``serve --workers``' parent), and each took SIGINT and
  SIGTERM whatever it found: the script's Ctrl-C stopped the server. A stop signal the
  server was started with ignored now stays ignored there too (`app.server.run._ignored`),
  in its workers as well, which inherit it; SIGTERM still stops it gracefully;
- a file's row on the remote backend named with a noncharacter (U+FFFF, U+FDD0): rt-regress10
  took every code point this Python calls unassigned as a newer Unicode's
  (`app.remote.rows._known`), and a noncharacter is unassigned in every version: the tool's
  row was served, and `app data check` no longer named it. It is judged as before.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from test_server_e2e import app_env

#: ``app serve --port 0`` exec'd with SIGINT ignored, as sh starts ``cmd &`` without job
#: control (an ignored signal stays ignored through exec).
_SERVE_IGNORING_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, '-m', 'app', 'serve', '--port', '0'])"
)


def _ignored_mask(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigIgn in /proc/{pid}/status")


def test_a_server_started_with_sigint_ignored_keeps_it_ignored_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """``app serve`` started with SIGINT ignored, as a script's ``app serve &``: the
    script's Ctrl-C stopped it (``_StopRequest`` and uvicorn took SIGINT whatever they
    found). It now stays ignored while the server serves: a SIGINT leaves it answering, and
    SIGTERM stops it gracefully, its hold released."""
    env = app_env(tmp_path / "root")
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVE_IGNORING_SIGINT],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        seen = []
        for line in server.stdout:
            seen.append(line)
            if " on http://" in line:
                break
        assert seen and " on http://" in seen[-1], "".join(seen)
        url = seen[-1].rsplit(" on ", 1)[1].split()[0]
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/health").status_code == 200, "".join(seen)
            # Serving now, under uvicorn's handlers: SIGINT is still ignored by the kernel.
            assert _ignored_mask(server.pid) & (1 << (signal.SIGINT - 1)), "".join(seen)
            os.kill(server.pid, signal.SIGINT)
            assert client.get("/health").status_code == 200
        assert server.poll() is None
        server.terminate()
        rest, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    output = "".join(seen) + rest
    assert server.returncode == 0, output
    assert "Shutting down" in output and "releasing the hold on" in output, output


def test_a_remote_row_named_with_a_noncharacter_is_still_named_as_a_tool_s() -> None:
    """A file's row on the remote backend named with a noncharacter (U+FFFF, U+FDD0,
    U+10FFFE): rt-regress10 took every code point this Python calls unassigned as a newer
    Unicode's, whose row is its writer's; a noncharacter is unassigned in every version, so
    no writer takes it, and the tool's row was served where `app data check` named it. It is
    judged as before; a code point a later version may assign is still taken."""
    from app.remote.rows import row_fault  # the remote backend's: here

    empty = {"size": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    for name in ("a\uffff.txt", "a\ufdd0", "a\U0010fffe"):
        fault = row_fault({"name": name, **empty})
        assert fault is not None, name
        assert f"U+{ord(name[1]):04X}" in fault and "not one a request can name" in fault, fault
    assert row_fault({"name": "a\U000e0080.txt", **empty}) is None
