"""Red team 60 on regress, the guard (branch rt-regress9): the registry's entries named with a
PID namespace's number (rt-flaky1) and the lock seen through a FUSE mirror (rt-guard43).

What broke:

- a run whose registry name another PID namespace's run held (two runs, each pid 1 of a
  namespace of its own sharing ``/tmp``, started in the same tick: its entry is then named
  ``<pid>-<start>-<namespace>.json``), from which a test then hid the registry (a tmpfs
  mounted on ``/tmp`` in the run's own mount namespace, red team 47's case). Its children
  found it through the descriptors it keeps open, at its plain name alone: there they found
  the other run's entry (another namespace's: passed over), or nothing once that run had
  ended, and looked for the namespaced name only where a registry's listing showed one,
  which a hidden registry never does. A child given a hand-built environment was outside
  any run. The walk now looks for the namespaced name wherever an entry may be found other
  than through a listing: a process that keeps a registry's entry or a directory open, a
  registry it may not list or does not trust, an ancestor whose ``/tmp`` is not its own;
- a live root seen through a ``bindfs --ctime-from-mtime`` mirror, after anything changed
  its lock file's change time alone (an operator's ``chmod``, ``chown``, ``setfacl``): the
  mirror shows the modification time as the change time, so the lock file no longer looked
  like the holder's seen through FUSE (rt-guard43 compares the times to the nanosecond),
  and ``app data purge`` through the mirror moved the live holder's sessions to the trash;
  so did a purge of the directory with the holder on the mirror. Where the times differ, a
  FUSE mount whose daemon names its source directory (bindfs does) is now followed there:
  the file at the same place below it is the holder's, and the root is held.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_redteam_s59_guard import outside_any_run
from test_redteam_s60_guard import COMMON, _needs_bindfs

needs_namespaces = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="a mount and PID namespace of its own with its own /proc takes unshare(1) and root",
)

#: Run as pid 1 of a PID namespace of its own, with a tmpfs of its own on /tmp (so it shares
#: no registry with the tests of other workers): another namespace's run's entry at its name
#: (as `tests/test_registry_pid_namespaces.py` writes it), then a run registered here, then a
#: child with a hand-built environment, asked to lock production's root, after each of: the
#: registry hidden by a tmpfs on /tmp (the children of a run whose registry is in sight are
#: `tests/test_registry_pid_namespaces.py`'s); the other run's entry gone (that run ended),
#: and the registry hidden again.
HIDDEN_BESIDE = """
import json, os, subprocess, sys
from pathlib import Path
from app import sandbox

registry = sandbox._own_runs_dir()
registry.mkdir(parents=True, exist_ok=True)
registry.chmod(0o755)
theirs = registry / sandbox._entry_name(1, sandbox._stat_fields(1)[1])
theirs.write_text(json.dumps({
    "pid": 1, "argv": ["pytest"], "sandbox": sys.argv[2], "protected": [], "scratch": "",
    "pid_namespace": 1, "own_pid_namespace": 1,
}))
theirs.chmod(0o644)
sandbox.register(Path(sys.argv[1]), ())
print("NAMES", len(list(registry.iterdir())))

CHILD = '''
from pathlib import Path
from app import sandbox
from app.errors import SandboxViolationError
print(sandbox.active_sandbox())
try:
    sandbox.check_root(Path("/srv/app/data/production"), "lock data root")
    print("allowed")
except SandboxViolationError as error:
    print("refused:", str(error).splitlines()[0])
'''

def child(what):
    found = subprocess.run(
        [sys.executable, "-c", CHILD], env={"PATH": os.environ["PATH"]},
        capture_output=True, text=True, check=False,
    )
    print(what, " | ".join((found.stdout + found.stderr).strip().splitlines()))

def hide():
    subprocess.run(["mount", "-t", "tmpfs", "rt60-hidden", "/tmp"], check=True)

hide()
child("HIDDEN")
subprocess.run(["umount", "/tmp"], check=True)
theirs.unlink()
hide()
child("ENDED")
sys.stdout.flush()
os._exit(0)  # no exit hook: its /tmp goes with its namespace
"""


@needs_namespaces
def test_a_run_named_beside_another_namespace_s_is_found_through_its_descriptors(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork",
            "--mount-proc", "sh", "-c", 'mount -t tmpfs rt60 /tmp && exec "$0" -c "$1" "$2" "$3"',
            sys.executable, HIDDEN_BESIDE, str(tmp_path), str(tmp_path / "other-run"),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "NAMES 2", done.stdout  # its own, named with its namespace's number
    for what, line in zip(("HIDDEN", "ENDED"), lines[1:], strict=True):
        assert line.startswith(f"{what} {tmp_path} | refused: refused under pytest"), done.stdout
        assert "lock data root /srv/app/data/production, which lies outside the test" in line


#: PID 1 of a PID namespace with its own /proc in a private mount namespace (outside any
#: run): two roots mirrored by ``bindfs --ctime-from-mtime``, one held on the directory and
#: purged through the mirror (and through a mirror of the mirror), the other held on the
#: mirror and purged on the directory, each after a ``chmod`` of its lock file, which changes
#: its change time alone.
CTIME_FROM_MTIME = (
    COMMON
    + r"""
work = Path(sys.argv[1])
real, mirror, again = work / "real", work / "mirror", work / "again"
for made in (real / "production", real / "second"):
    os.environ["APP_DATA_ROOT"] = str(made)
    with open_storage(load(serving=False), writer=True) as store:
        store.create_session("a review", {})
for source, made in ((real, mirror), (mirror, again)):  # and a mirror of the mirror
    made.mkdir()
    subprocess.run(["bindfs", "--ctime-from-mtime", str(source), str(made)], check=True)
results = {"before": [names(real / made / "sessions") for made in ("production", "second")]}
holder = holding(real / "production", mirror / "second")
for made in ("production", "second"):
    lock = real / made / ".server.lock"
    os.chmod(lock, os.stat(lock).st_mode & 0o7777)  # an operator's chmod: the ctime alone
results["holder"] = holder
for tag, purged in (
    ("REAL", mirror / "production"), ("MIRROR", real / "second"), ("AGAIN", again / "production")
):
    results[tag] = run(["data", "purge", "--yes-i-mean-it"], APP_DATA_ROOT=str(purged))
stop(holder)
results["after"] = [names(real / made / "sessions") for made in ("production", "second")]
results["trash"] = [names(real / made / ".trash") for made in ("production", "second")]
for made in (again, mirror):
    subprocess.run(["fusermount", "-u", str(made)], check=True)
print("RESULTS", json.dumps(results))
"""
)


def test_a_live_root_through_a_mirror_showing_other_times_is_still_held(tmp_path: Path) -> None:
    _needs_bindfs()
    (tmp_path / "real").mkdir()
    seen = outside_any_run(
        tmp_path, tmp_path / "real" / "production", CTIME_FROM_MTIME, str(tmp_path)
    )
    said = json.dumps(seen, indent=1)
    # Before the fix: "moved 1 session(s) to .../mirror/production/.trash", beside the
    # holder, and the same on the directory with the holder on the mirror.
    assert seen["after"] == seen["before"], said
    assert seen["trash"] == [[], []], said
    real, mirror, again = tmp_path / "real", tmp_path / "mirror", tmp_path / "again"
    for tag, held, purged in (
        ("REAL", real / "production", mirror / "production"),
        ("MIRROR", mirror / "second", real / "second"),
        ("AGAIN", real / "production", again / "production"),
    ):
        code, out = seen[tag]
        assert code == 75, said
        assert f"data root {purged} is held by pid {seen['holder']}, kind maintenance" in out
        assert f"through its lock file {held}/.server.lock" in out, said
        assert "seen through a FUSE mount" in out, said
        assert f"Work through the holder's own path, {held}, where the lock is shared" in out
