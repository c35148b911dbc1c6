"""A clock that goes backwards between two runs of the app on one data root (red team 18).

Machines step their clocks: a VM restored from a snapshot, a board whose real-time clock
lost its battery and boots before NTP, an operator's `date -s`. Each run here is a real
process on a real data root; only its clock is moved (time-machine, in that process).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from app.config import Config

_RUN = """
import json, sys
from datetime import UTC, datetime, timedelta

from app.config import load
from app.storage import open_storage

hours, steps = float(sys.argv[1]), json.loads(sys.argv[2])
out = []
with open_storage(load(), writer=True, kind="tests", wanted="run a step") as store:
    # Imported only now: it imports pytest, and the app takes a process that imports pytest
    # after the plugin started for one that runs tests without it.
    import time_machine

    with time_machine.travel(datetime.now(UTC) + timedelta(hours=hours), tick=True):
        for op, *args in steps:
            args = [out[0] if a == "$" else a for a in args]  # "$": what the first step gave
            if op == "create":
                out.append(store.create_session(*args)["id"])
            elif op in ("put", "put-entry"):
                entry = store.put_file(args[0], args[1], args[2].encode(), replace=True)
                if op == "put-entry":
                    out.append(entry)
            elif op in ("delete-file", "delete-entry"):
                trashed = store.delete_file(*args)
                if op == "delete-entry":
                    moment = trashed.deleted_at.isoformat(timespec="microseconds")
                    out.append([trashed.name, moment])
            elif op == "session":
                out.append(store.get_session(args[0]))
            elif op == "restore-file":
                store.restore(args[0], file=args[1])
            elif op == "read":
                handle, _ = store.open_file(*args)
                with handle:
                    out.append(handle.read().decode())
            elif op == "ids":
                out.append(store.session_ids())
            elif op == "after":
                out.append([s["id"] for s in store.list_sessions(after=args[0]).items])
print(json.dumps(out))
"""


def run(hours: float, *steps: list[Any]) -> list[Any]:
    """Run ``steps`` on the test's data root in a new process whose clock is ``hours`` off."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(hours), json.dumps(steps)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: list[Any] = json.loads(done.stdout)
    return result


def test_a_session_made_after_the_clock_stepped_back_lists_after_every_older_one(
    app_config: Config,
) -> None:
    [first] = run(0, ["create", "before the step"])
    [second, ids, after_first] = run(-1, ["create", "after"], ["ids"], ["after", first])
    # A client that pages (or polls) from the last id it saw must find the new session.
    assert ids == [first, second]
    assert after_first == [second]


def test_restore_brings_back_the_most_recently_deleted_version_after_the_clock_stepped_back(
    app_config: Config,
) -> None:
    [sid] = run(0, ["create", "file history"])
    run(0, ["put", sid, "a.txt", "one"], ["put", sid, "a.txt", "two"])  # "one" to the trash
    # "two" is deleted last, so it is the version a restore brings back.
    [read] = run(
        -1, ["delete-file", sid, "a.txt"], ["restore-file", sid, "a.txt"], ["read", sid, "a.txt"]
    )
    assert read == "two"
