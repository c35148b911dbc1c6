"""Red team 72 on the guard (branch rt-guard72): a run that starts under a ``/proc`` which
hides processes forgets the entries of the runs and daemons it cannot see.

A run, as it starts, forgets the entries of runs it takes for dead (`_forget_dead_runs`): an
entry whose pid ``/proc`` shows with another start time, or not at all. A run of root
started without capabilities where ``/proc`` is mounted ``hidepid=invisible`` for a group it
is not in (systemd's ``ProtectProc=invisible`` with an empty ``CapabilityBoundingSet=``, or
``setpriv --bounding-set=-all`` in a mount namespace of its own) sees none of the processes
that keep them, so it took every one of them for dead. Among them the entry that an earlier
run's end had handed on to a daemon a test of it left running: the daemon, given production's
settings alone, then ran ``app data purge --profile production --yes-i-mean-it``, found no
run, and moved every session of a stopped production root to its trash.

What changed: an entry whose process ``/proc`` does not show, or shows but denies, is kept
where that process is there all the same (``/proc`` shows its directory, or signal 0 finds
it); the next run that sees it forgets it once it is dead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import assert_untouched, inner_project, stopped_production
from test_redteam_s24_guard import _inner_env

from app import sandbox

#: The inner run's one test: a daemon (double-forked, so the run's end hands its entry on)
#: that waits for SIGUSR1, then purges production given its settings alone.
INNER = '''
import os
import signal
import sys

DAEMON = """
import os, runpy, signal, sys
signal.sigwait({signal.SIGUSR1})  # blocked since before its exec: never lost
settings, token = os.environ["RT72_SETTINGS"], os.environ["RT72_TOKEN"]
os.environ.clear()
os.environ.update(PATH="/usr/bin:/bin", APP_SETTINGS_DIR=settings, APP_API_TOKEN=token)
sys.argv = ["app", "data", "purge", "--profile", "production", "--yes-i-mean-it"]
try:
    runpy.run_module("app", run_name="__main__")
except SystemExit as end:
    print(f"exit {end.code}", flush=True)
"""


def test_leaves_a_daemon():
    out = os.environ["RT72_OUT"]
    if os.fork() == 0:
        os.setsid()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        daemon = os.fork()
        if daemon == 0:
            said = os.open(f"{out}/said", os.O_WRONLY | os.O_CREAT, 0o644)
            os.dup2(said, 1)
            os.dup2(said, 2)
            os.execv(sys.executable, [sys.executable, "-c", DAEMON])
        with open(f"{out}/daemon", "w") as pid:
            pid.write(str(daemon))
        os._exit(0)
    os.wait()
'''

#: What a run does first as it starts (`register`), in a Python without capabilities where
#: /proc hides the processes of root that hold them (for a group it is not in).
FORGET = "from app import sandbox; sandbox._forget_dead_runs(sandbox._own_runs_dir())"

#: Out of this run's tree, in a PID namespace of its own with a registry of its own: the run
#: (not pid 1 there, so that its daemon outlives it), then the hidden view's look at the
#: registry, then the daemon let go, which writes what it said in `said`.
SCRIPT = r"""
mount -t tmpfs -o mode=0700 app-runs "$REG" || exit 1
"$PY" -m pytest -q -p no:cacheprovider -p no:xdist --basetemp="$OUT/inner" test_entry.py
ls "$REG" > "$OUT/before"
unshare -m --propagation private sh -c \
  'mount -t proc -o hidepid=invisible,gid=54380 proc /proc && exec "$@"' sh \
  setpriv --bounding-set=-all --inh-caps=-all --ambient-caps=-all "$PY" -c "$FORGET"
ls "$REG" > "$OUT/after"
kill -USR1 "$(cat "$OUT/daemon")"
# Pid 1 here, whose exit would end the daemon: it waits for every child it has, the daemon
# (re-parented to it as the run ended) among them, however each ends.
exec "$PY" -c "$WAIT"
"""

#: Pid 1's wait for every child it has (`SCRIPT`).
WAIT = """
import os
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "setpriv"))),
    reason="only root mounts /proc in a mount namespace of its own and has capabilities to "
    "drop; the inner run is kept out of this run's process tree in a PID namespace of its "
    "own (unshare --pid, root's)",
)
def test_a_run_under_a_proc_that_hides_a_daemon_leaves_its_handed_on_entry(
    tmp_path: Path,
) -> None:
    settings, production, token, sessions = stopped_production(tmp_path)
    project = inner_project(tmp_path, "test_entry.py", INNER)
    out = tmp_path / "out"
    out.mkdir()
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings),
        RT72_SETTINGS=str(settings),
        RT72_TOKEN=token,
        RT72_OUT=str(out),
        REG=str(sandbox.RUNS_DIR),
        OUT=str(out),
        PY=sys.executable,
        FORGET=FORGET,
    )
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", SCRIPT],
        env={**env, "WAIT": WAIT},
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    ran = done.stdout + done.stderr
    said = (out / "said").read_text() if (out / "said").exists() else ""
    shown = f"{ran}\n{said}"
    before, after = ((out / name).read_text().split() for name in ("before", "after"))
    # The run's own entry (its process gone) and the daemon's, handed on as the run ended.
    assert len(before) == 2, shown
    assert_untouched(production, sessions, shown)
    # The daemon's entry stays (the ended run's goes: its process is gone, which signal 0
    # tells), and the daemon is refused as the run's.
    assert len(after) == 1 and after[0] in before, (before, after, shown)
    assert said.endswith("exit 78\n"), shown
    assert "which has ended" in said and "loading profile 'production'" in said, said
