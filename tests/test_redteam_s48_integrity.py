"""Red team 48 on integrity: system calls failed under real processes, at every step.

Faults injected with ``strace --inject`` into one call of a real ``app serve`` (attached for
a workload, then restarted, checked and read back) or of a real command. What broke:

- ``app data check --repair`` (and a server's start-up check, and the repair a restore or an
  ``empty-trash`` runs first) whose fsync failed right after one of its repairs' changes (the
  rename that finishes a replace's move into the trash). The repair was reported "not done",
  "nothing was done about them" (exit 65, "needs a human"), though its rename was made; and
  the run went on changing the root after the failed fsync (finishing the next entry's move,
  reported "not done" too), where every other change of the process is refused once an fsync
  has failed (PostgreSQL's "fsyncgate"). A failed fsync now stops the repair there: the
  command exits 74 (``storage_sync_failed``: the change it began may be made), the repair it
  made is logged as made, nothing more is changed, and a server's start-up serves reads
  with its writes stopped, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Config
from app.storage import open_storage

needs_strace = pytest.mark.skipif(
    shutil.which("strace") is None or os.geteuid() != 0,
    reason="a fault injected into one call of a real process takes strace(1) and root",
)


def _half_replaced(config: Config, title: str) -> tuple[str, Path, Path]:
    """A session whose replace of a.txt crashed after its commit, before the old bytes moved
    into the trash (what `app data check` reports as trash-unfinished): its id, the entry,
    and where the old bytes wait among the session's blobs."""
    with open_storage(config, writer=True, kind="tests", wanted="make") as store:
        sid = store.create_session(title)["id"]
        store.put_file(sid, "a.txt", f"{title} version 1".encode())
        store.put_file(sid, "a.txt", f"{title} version 2".encode(), replace=True)
    (entry,) = (config.data_root / ".trash").glob(f"*-{sid}-file-*")
    blob = json.loads((entry / "trash.json").read_bytes())["blob"]
    waiting = config.data_root / "sessions" / sid / "blobs" / blob
    (entry / "a.txt").rename(waiting)
    return sid, entry, waiting


def _traced(args: list[str], inject: str, path: Path, env: dict[str, str]) -> list[str]:
    """``python -m app *args`` under strace, ``inject`` failing one call that touches ``path``
    (seccomp: the process stops only at the traced call)."""
    call = inject.split(":", 1)[0]
    return [
        "strace", "-f", "-qq", "--seccomp-bpf", "-o", "/dev/null", "-P", str(path),
        "-e", f"trace={call}", "-e", f"inject={inject}", sys.executable, "-m", "app", *args,
    ]  # fmt: skip


@needs_strace
def test_a_repair_whose_fsync_fails_stops_there_and_says_its_change_may_be_made(
    app_config: Config,
) -> None:
    root = app_config.data_root
    first, entry, waiting = _half_replaced(app_config, "first")
    second, later, still = _half_replaced(app_config, "second")
    assert entry.name < later.name  # the check finishes the first entry first
    env = {**os.environ, "APP_DATA_ROOT": str(root)}
    command = _traced(["data", "check", "--repair"], "fsync:error=EIO:when=1", entry, env)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    # The rename into the entry was made; its fsync failed. Not "not done", not 65.
    assert done.returncode == 74, done.stdout + done.stderr
    assert "storage_sync_failed" in done.stderr or "an fsync" in done.stderr, done.stderr
    assert "it may be made" in done.stderr, done.stderr
    assert "nothing was done" not in done.stdout + done.stderr
    assert (entry / "a.txt").read_bytes() == b"first version 1"
    assert not waiting.exists()
    # Nothing changed after the failed fsync: the next entry still waits for its bytes.
    assert still.read_bytes() == b"second version 1"
    assert (later / "trash.json").exists() and not (later / "a.txt").exists()
    # The repair made is in the command's log, as a line the audit log should hold.
    assert "check-repair" in done.stderr and "trash-unfinished" in done.stderr, done.stderr
    # Without the fault, the next repair finishes the rest; both old versions are kept.
    again = subprocess.run(
        [sys.executable, "-m", "app", "data", "check", "--repair"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert (later / "a.txt").read_bytes() == b"second version 1"
    with open_storage(app_config, writer=False, kind="tests", wanted="read") as store:
        for sid, title in ((first, "first"), (second, "second")):
            handle, _ = store.open_file(sid, "a.txt")
            with handle:
                assert handle.read() == f"{title} version 2".encode()
