"""Red team 60 on operations (branch rt-ops31): every command and message run as written.

What broke:

- ``app data purge`` stopped by a signal that lands while it writes its audit line. Its one
  line comes after the last move, so a single Ctrl-C (or SIGTERM) there, as the operator
  gives up on a long purge at its very end, cut the write: every session it had moved was
  left without a line (``app data check``: ``trash-unaudited`` for each), where the stop's
  message promises that at most the last one may lack it. A second Ctrl-C at the line red
  team 59 writes for a stopped purge did the same, and one more while the command printed
  its refusal was a ``KeyboardInterrupt`` traceback in place of the message. An audit line
  (the record of a change already made, `app.dataroot._write_audit_line`, every command's
  and the server's) is now written whole before a SIGINT or SIGTERM that came meanwhile is
  acted on; and a command stopped once by either finishes what the stop began (its line,
  its undo, its message) through later ones, as red team 35 made SIGTERM do, saying so on
  standard error (``kill -9`` forces it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from faults import needs_strace
from test_server_e2e import app_env

from app.config import load
from app.storage import open_storage


def _root_of_three(root: Path) -> tuple[dict[str, str], list[str]]:
    """A testing root of three sessions (made in this process: a child costs more than the
    test), and the environment of an `app` command on it."""
    env = app_env(root)
    with open_storage(load("testing", environ=env), writer=True) as store:
        ids = [store.create_session(f"review {n}", {})["id"] for n in range(3)]
    return env, ids


def _purge_under(
    env: dict[str, str], paths: list[Path], injects: list[str], stderr: Path
) -> subprocess.Popen[bytes]:
    """``app data purge`` under strace, which sends SIGINT at the calls ``injects`` name
    (each as ``CALL:error=EINTR:signal=INT:when=N``: the call is cut, as a signal cuts a
    slow write, and the signal handled there) that touch ``paths``."""
    argv = ["strace", "-f", "-qq", "-o", "/dev/null"]
    for path in paths:
        argv += ["-P", str(path)]
    calls = sorted({inject.split(":", 1)[0] for inject in injects})
    argv += ["-e", f"trace={','.join(calls)}"]
    for inject in injects:
        argv += ["-e", f"inject={inject}"]
    argv += [sys.executable, "-m", "app", "data", "purge"]
    with stderr.open("wb") as err:
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )


def _unaudited(env: dict[str, str]) -> list[str]:
    """What ``app data check`` names ``trash-unaudited`` on the root ``env`` names."""
    with open_storage(load("testing", environ=env), writer=False) as store:
        findings = store.check(hash_bytes=False).findings
    return [f.target for f in findings if f.problem == "trash-unaudited"]


@needs_strace
def test_a_ctrl_c_while_a_purge_writes_its_line_leaves_no_session_unaudited(
    tmp_path: Path,
) -> None:
    """One Ctrl-C as the purge writes its line at the end, and Ctrl-C twice in a purge
    stopped partway (the second as it writes the line for what it moved, a third as it
    prints why it stopped): each left every moved session without its line, and the last a
    traceback for a message."""
    at_end = tmp_path / "end"
    twice = tmp_path / "twice"
    env_end, _ = _root_of_three(at_end)
    env_twice, ids = _root_of_three(twice)
    said = tmp_path / "twice.err"
    # Started together: each waits on its strace, not on the other.
    end = _purge_under(
        env_end,
        [at_end / "audit.jsonl"],
        ["write:error=EINTR:signal=INT:when=1"],
        tmp_path / "end.err",
    )
    stopped = _purge_under(
        env_twice,
        [twice / "sessions" / ids[1], twice / "audit.jsonl", said],
        [
            "rename:signal=INT:when=1",  # the first Ctrl-C, as the second session moves
            # The second at the stopped line's write (retried once the signal is handled,
            # so the 2nd write is the line again), a third at the next write to standard
            # error: the note of the second, or, where the second stopped the line, the
            # message that says why it stopped.
            "write:error=EINTR:signal=INT:when=1..3+2",
        ],
        said,
    )
    assert end.wait(60) in (0, 130), (tmp_path / "end.err").read_text()
    assert stopped.wait(60) == 130, said.read_text()

    (line,) = [json.loads(t) for t in (at_end / "audit.jsonl").read_text().splitlines()]
    assert line["operation"] == "purge" and line["details"]["count"] == 3, line
    assert _unaudited(env_end) == []

    message = " ".join(said.read_text().split())
    assert "Traceback" not in message, message
    assert "`app data purge` was interrupted (Ctrl-C, SIGINT)" in message, message
    assert "already stopping" in message and "kill -9" in message, message
    (line,) = [json.loads(t) for t in (twice / "audit.jsonl").read_text().splitlines()]
    assert line["details"]["stopped"] == "interrupted (SIGINT or SIGTERM)", line
    moved = {p.name for p in (twice / ".trash").iterdir()}
    assert len(moved) == 2 and set(line["details"]["entries"]) < moved, (line, moved)
    assert len(_unaudited(env_twice)) <= 1  # the one the stop came in
    assert os.listdir(twice / "sessions") == [ids[2]]
