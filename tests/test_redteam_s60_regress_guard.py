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
- such an entry of a live run whose PID namespace another run of its user cannot read (a
  run of a user other than root that a test made non-dumpable): that run's clean-up of the
  registry as it started took it for dead and removed it (its name's namespace was never
  the one it could read, None). An entry named with a namespace's number is kept now while
  a process started at its start time lives at its pid and its namespace cannot be read;
- a live root seen through a ``bindfs --ctime-from-mtime`` mirror, after anything changed
  its lock file's change time alone (an operator's ``chmod``, ``chown``, ``setfacl``): the
  mirror shows the modification time as the change time, so the lock file no longer looked
  like the holder's seen through FUSE (rt-guard43 compares the times to the nanosecond),
  and ``app data purge`` through the mirror moved the live holder's sessions to the trash;
  so did a purge of the directory with the holder on the mirror. Where the times differ, a
  FUSE mount whose daemon names its source directory (bindfs does) is now followed there,
  on both sides, to the file off FUSE it shows: where that is the holder's file, or where
  two mirrors of one directory show one file, the root is held;
- a root of its own opened through a ``bindfs --enable-lock-forwarding`` mirror, which no
  one else held (a false refusal since rt-guard43): the process's own lock, forwarded by
  the bindfs daemon to the directory's file, was taken for another holder's seen through a
  FUSE mirror, and every writer and purge there was refused as held by bindfs, "which
  published no details", and told not to use the path. A lock there that goes when the
  process lets go of its own (taken again at once) is its own now, and passed over.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from test_redteam_s46_guard import checkout_in_tmp
from test_redteam_s59_guard import outside_any_run
from test_redteam_s60_guard import COMMON

#: PID 1 of a PID namespace with its own /proc in a private mount namespace (outside any
#: run), production's environment on a copy of the settings. argv: work, "fuse" where a FUSE
#: mirror can be made.
#:
#: MIRROR: two roots mirrored by ``bindfs --ctime-from-mtime``, one held on the directory and
#: purged through the mirror (and through a mirror of the mirror), the other held on the
#: mirror and purged on the directory, each after a ``chmod`` of its lock file, which
#: changes its change time alone.
#:
#: Then with a tmpfs of its own on /tmp (no registry shared with other workers' tests):
#:
#: HIDDEN, ENDED: another namespace's run's entry at this process's name (as
#: `tests/test_registry_pid_namespaces.py` writes it), a run registered here, and a child
#: with a hand-built environment asked to lock production's root, after the registry was
#: hidden by a tmpfs on /tmp; then after the other run's entry went (that run ended), hidden
#: again. (A child of a run whose registry is in sight: that file's.)
#:
#: FORGOTTEN: a process of user 65534 made non-dumpable (as a test can make its run), its
#: entry named with its PID namespace's number in that user's registry, then that user's
#: clean-up of the registry as another run of it starts, which cannot read its namespace.
SCRIPT = (
    COMMON
    + r"""
import ctypes

work = Path(sys.argv[1])
results = {}
if sys.argv[2] == "fuse":
    real, mirror, again = work / "real", work / "mirror", work / "again"
    for made in (real / "production", real / "second"):
        os.environ["APP_DATA_ROOT"] = str(made)
        with open_storage(load(serving=False), writer=True) as store:
            store.create_session("a review", {})
    for source, made in ((real, mirror), (mirror, again)):  # and a mirror of the mirror
        made.mkdir()
        subprocess.run(["bindfs", "--ctime-from-mtime", str(source), str(made)], check=True)
    forwards = work / "forwards"  # a mirror that passes locks on to the directory's files
    forwards.mkdir()
    subprocess.run(
        ["bindfs", "--enable-lock-forwarding", "--multithreaded", str(real), str(forwards)],
        check=True,
    )
    results["before"] = [names(real / made / "sessions") for made in ("production", "second")]
    holder = holding(real / "production", mirror / "second")
    for made in ("production", "second"):
        lock = real / made / ".server.lock"
        os.chmod(lock, os.stat(lock).st_mode & 0o7777)  # an operator's chmod: the ctime alone
    results["holder"] = holder
    for tag, purged in (
        ("REAL", mirror / "production"),
        ("MIRROR", real / "second"),
        ("AGAIN", again / "production"),
    ):
        results[tag] = run(["data", "purge", "--yes-i-mean-it"], APP_DATA_ROOT=str(purged))
    for tag, made in (("FORWARDS_HELD", "production"), ("FORWARDS_BESIDE", "second")):
        results[tag] = writer(APP_DATA_ROOT=str(forwards / made))
    stop(holder)
    results["FORWARDS_FREE"] = writer(APP_DATA_ROOT=str(forwards / "second"))
    results["after"] = [names(real / made / "sessions") for made in ("production", "second")]
    results["trash"] = [names(real / made / ".trash") for made in ("production", "second")]
    # `again` is a mirror of `mirror`: its daemon keeps `mirror` open until it has exited,
    # which it does after `fusermount -u` returned, so `mirror` was busy for a moment (a
    # loaded run's unmount failed so). This is PID 1, the daemons' parent: wait for each.
    daemons = {
        argv[-1]: int(proc.name)
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and (argv := (proc / "cmdline").read_text().split("\0")[:-1])
        and os.path.basename(argv[0]) == "bindfs"
    }
    for made in (forwards, again, mirror):
        subprocess.run(["fusermount", "-u", str(made)], check=True)
        os.waitpid(daemons[str(made)], 0)

from app import sandbox

subprocess.run(["mount", "-t", "tmpfs", "rt60", "/tmp"], check=True)
registry = sandbox._own_runs_dir()
theirs = registry / sandbox._entry_name(1, sandbox._stat_fields(1)[1])
theirs.write_text(json.dumps({
    "pid": 1, "argv": ["pytest"], "sandbox": str(work / "other-run"), "protected": [],
    "scratch": "", "pid_namespace": 1, "own_pid_namespace": 1,
}))
theirs.chmod(0o644)
sandbox.register(work, ())
results["NAMES"] = len(list(registry.iterdir()))

CHILD = (
    "from pathlib import Path\n"
    "from app import sandbox\n"
    "from app.errors import SandboxViolationError\n"
    "print(sandbox.active_sandbox())\n"
    "try:\n"
    "    sandbox.check_root(Path('/srv/app/data/production'), 'lock data root')\n"
    "    print('allowed')\n"
    "except SandboxViolationError as error:\n"
    "    print('refused:', str(error).splitlines()[0])\n"
)


def child():
    found = subprocess.run(
        [sys.executable, "-c", CHILD], env={"PATH": os.environ["PATH"]},
        capture_output=True, text=True, check=False,
    )
    return " | ".join((found.stdout + found.stderr).strip().splitlines())


subprocess.run(["mount", "-t", "tmpfs", "rt60-hidden", "/tmp"], check=True)
results["HIDDEN"] = child()
subprocess.run(["umount", "/tmp"], check=True)
theirs.unlink()
subprocess.run(["mount", "-t", "tmpfs", "rt60-hidden", "/tmp"], check=True)
results["ENDED"] = child()


def as_nobody():
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)


read, write = os.pipe()
nobody = os.fork()
if nobody == 0:  # a run of user 65534 that a test made non-dumpable
    as_nobody()
    ctypes.CDLL(None).prctl(4, 0)  # PR_SET_DUMPABLE
    os.close(write)
    os.read(read, 1)
    os._exit(0)
os.close(read)
nobodys = sandbox._runs_dir(65534)
nobodys.mkdir(mode=0o755)
os.chown(nobodys, 65534, 65534)
namespace = sandbox._own_pid_namespace(nobody)
entry = nobodys / sandbox._entry_name(nobody, sandbox._stat_fields(nobody)[1], namespace)
entry.write_text(json.dumps({
    "pid": nobody, "argv": ["pytest"], "sandbox": "/nowhere", "protected": [], "scratch": "",
    "pid_namespace": sandbox._pid_namespace(), "own_pid_namespace": namespace,
}))
os.chown(entry, 65534, 65534)
entry.chmod(0o644)
cleans = os.fork()
if cleans == 0:  # another run of user 65534 starting
    as_nobody()
    sandbox._forget_dead_runs(nobodys)
    os._exit(0)
os.waitpid(cleans, 0)
results["FORGOTTEN"] = not entry.exists()
os.close(write)
os.waitpid(nobody, 0)
print("RESULTS", json.dumps(results), flush=True)
os._exit(0)  # no exit hook: its /tmp goes with its namespace
"""
)


def _fuse() -> bool:
    tools = ("bindfs", "fusermount")
    return all(shutil.which(tool) for tool in tools) and Path("/dev/fuse").exists()


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a mount and PID namespace of its own takes unshare(1) and root")
    if checkout_in_tmp():
        # Its script mounts a tmpfs on /tmp, which hides an interpreter there (CI clones
        # into `mktemp -d`), and then starts children.
        pytest.skip(f"{sys.prefix} lies under /tmp, which this test mounts over")
    work = tmp_path_factory.mktemp("rt60-regress-guard")
    (work / "real").mkdir()
    found = outside_any_run(
        work, work / "real" / "production", SCRIPT, str(work), "fuse" if _fuse() else "-"
    )
    return {**found, "work": str(work), "said": json.dumps(found, indent=1)}


def test_a_run_named_beside_another_namespace_s_is_found_through_its_descriptors(
    seen: dict,
) -> None:
    said = seen["said"]
    assert seen["NAMES"] == 2, said  # its own, named with its namespace's number
    for what in ("HIDDEN", "ENDED"):
        # Before the fix: "None | allowed", outside any run.
        assert seen[what].startswith(f"{seen['work']} | refused: refused under pytest"), said
        assert "lock data root /srv/app/data/production, which lies outside the" in seen[what]


def test_a_live_run_named_beside_whose_namespace_cannot_be_read_is_not_forgotten(
    seen: dict,
) -> None:
    # Before the fix: forgotten, its children then outside any run once the other
    # namespace's entry at its plain name was gone.
    assert seen["FORGOTTEN"] is False, seen["said"]


def test_a_live_root_through_a_mirror_showing_other_times_is_still_held(seen: dict) -> None:
    if "REAL" not in seen:
        pytest.skip("needs bindfs, fusermount and /dev/fuse for a FUSE mirror")
    said = seen["said"]
    # Before the fix: "moved 1 session(s) to .../mirror/production/.trash", beside the
    # holder, and the same on the directory with the holder on the mirror.
    assert seen["after"] == seen["before"], said
    assert seen["trash"] == [[], []], said
    work = Path(seen["work"])
    real, mirror, again = work / "real", work / "mirror", work / "again"
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


def test_a_root_of_its_own_through_a_lock_forwarding_mirror_is_not_refused(seen: dict) -> None:
    if "REAL" not in seen:
        pytest.skip("needs bindfs, fusermount and /dev/fuse for a FUSE mirror")
    said = seen["said"]
    # Before the fix: DataRootInUseError, "held by pid <bindfs> (bindfs
    # --enable-lock-forwarding ...), which published no details": its own lock, forwarded.
    assert seen["FORWARDS_FREE"] == [0, "opened"], said
    # Held on the directory: the forwarded lock is refused by the kernel (its holder named
    # as out of sight: not stopped, the attacks' catalogue); held through another mirror of the same
    # directory (beside this one's own forwarded lock): refused as that holder's.
    assert seen["FORWARDS_HELD"][0] == "DataRootInUseError", said
    assert seen["FORWARDS_BESIDE"][0] == "DataRootInUseError", said
    assert f"is held by pid {seen['holder']}, kind maintenance" in seen["FORWARDS_BESIDE"][1]
    work = Path(seen["work"])
    assert f"through its lock file {work}/mirror/second/.server.lock" in seen["FORWARDS_BESIDE"][1]
