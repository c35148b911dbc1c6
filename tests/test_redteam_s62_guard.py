"""Red team 62 on the guard (branch rt-guard62): the data root behind a name, through a bind
mount of a directory inside another profile's root.

What broke (outside any run, in a PID namespace with its own ``/proc``, beside a stopped
production root and a live one; and in a test's child inside the run): a data root named
through a bind mount of an empty directory of production's root, its ``.trash/`` or
``.tmp/`` (``mount --bind /srv/app/data/production/.trash ~/dev-data``, to look at
production's trash from a home directory, or a container's volume of a root's
subdirectory). Red team 22 compares the roots by device and inode, and red team 59 refuses a
root whose path lies inside another (a directory above it with a stamp or a lock file), but
the bind mount's parents are the mount point's, not production's, and an empty directory
with no stamp is a new root to claim: ``APP_DATA_ROOT=~/dev-data app --profile development
data purge --yes-i-mean-it`` (and ``data empty-trash``, ``open_storage(..., writer=True)``,
and ``app serve``, tried by hand) stamped production's ``.trash/`` for development and wrote
its lock, audit log, ``sessions/`` and ``.tmp/`` there, beside production's live server (its
lock is another file), after which production's ``app data check`` reported six findings
that need a human (exit 65); in ``.tmp/``, production's next start-up removes what
development keeps there. ``app config`` and ``app doctor`` said "every data root is
distinct". Inside a run, a test that binds such a directory of a root its run does not
protect (one no settings name) into its sandbox did the same with the testing profile.

What changed:

- layer 2 (``app.config.overlaps``, outside a run): where a mount on a root's way shows it
  from another directory (Linux's mountinfo, ``app.mountinfo.shown_from``), that directory
  is compared too; a root so inside another profile's is refused (``data_root_overlap``,
  exit 78), naming the directory the mount shows and ``findmnt -T``;
- every writer's open (``_refuse_inside_another_root``), for a root no settings name: it
  looks above the directory a mount shows the root from too, and refuses it
  (``data_root_state``, exit 78) before anything is made, naming the outer root and its
  stamp, the directory shown, ``findmnt -T``, and to point ``data_root`` at a directory
  outside the outer root, not at a mount of one of its directories (a directory hidden here
  under another mount is looked at where an ancestor in another mount namespace shows it,
  through ``/proc/<pid>/root``, unresolved: resolving names this namespace's ``/``); ``app
  doctor`` (``check_opens``) refuses it as every writer does, and so a root inside another
  by its path alone.

Beside it (layer 6): a directory of production's root (a session's) bound into a trash entry
of a test's own root after ``empty-trash`` looked for mounts inside the root and renamed the
entry out of the trash, before it removed the entry's files (a test's child, stopped there by
strace): the removal went through the mount and removed production's ``session.json`` for
good, and the command said "removed 1 trash entry". ``remove_tree`` now checks each
directory it opens to lie on the mount of the tree's top (fdinfo's ``mnt_id``), and stops
there (``EXDEV``), naming the mount, ``findmnt``, ``umount`` and ``app data check
--repair``; the mounted directory's files are kept.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import assert_untouched, stopped_production, stopped_then_live
from test_redteam_s60_guard import COMMON as S60_COMMON

#: PID 1 of a PID namespace with its own /proc, in a private mount namespace (outside any
#: run). argv: the settings directory, production's root (stopped; served once it prints
#: STOPPED, until it reads a line). Development's root is a bind mount of production's
#: `.trash/` (`.tmp/` for one sample); `shell/` holds settings that do not name production's
#: root (a shell beside a service configured in its own environment).
#: The head of such a script: its argv read, and `shell/` made.
SHELL_BESIDE = r"""
settings, production = map(Path, sys.argv[1:3])
shell = settings.parent / "shell"
shell.mkdir()
(shell / "settings.toml").write_bytes((settings / "settings.toml").read_bytes())
results = {}
"""
OUTSIDE = (
    S60_COMMON
    + SHELL_BESIDE
    + r"""
mounted = {}
for name in (".trash", ".tmp"):
    point = settings.parent / f"dev{name}"
    point.mkdir()
    subprocess.run(["mount", "--bind", str(production / name), str(point)], check=True)
    mounted[name] = str(point)
dev = mounted[".trash"]
development = ["--profile", "development"]
purge = [*development, "data", "purge", "--yes-i-mean-it"]


def attempts(stage):
    unnamed = {"APP_SETTINGS_DIR": str(shell), "APP_DATA_ROOT": dev}
    results[stage + "PURGE"] = run(purge, APP_DATA_ROOT=dev)
    results[stage + "UNNAMED_PURGE"] = run(purge, **unnamed)
    results[stage + "UNNAMED_WRITER"] = writer(ENV_FOR_DYNACONF="development", **unnamed)
    if stage == "LIVE_":
        return
    results[stage + "WRITER"] = writer(ENV_FOR_DYNACONF="development", APP_DATA_ROOT=dev)
    results[stage + "DOCTOR"] = run([*development, "doctor"], **unnamed)
    results[stage + "UNNAMED_TRASH"] = run(
        [*development, "data", "empty-trash", "--yes-i-mean-it"], **unnamed)
    results[stage + "UNNAMED_TMP"] = run(
        purge, APP_SETTINGS_DIR=str(shell), APP_DATA_ROOT=mounted[".tmp"])


def inside(name):
    return sorted(p.name for p in (production / name).iterdir())


attempts("STOPPED_")
results["STOPPED_IN"] = [inside(".trash"), inside(".tmp")]
print("STOPPED", flush=True)
sys.stdin.readline()  # the test has started a server on production's root meanwhile
attempts("LIVE_")
results["LIVE_IN"] = [inside(".trash"), inside(".tmp")]
print("RESULTS", json.dumps(results))
"""
)


def _needs_root() -> None:
    if os.geteuid() != 0 or any(shutil.which(t) is None for t in ("unshare", "mount")):
        pytest.skip("needs root, unshare and mount to bind a directory of a root elsewhere")


def _inside_production(root: Path, production: Path, shown: Path) -> str:
    """What every writer is told of `root`, a bind mount of `shown`, inside `production`."""
    return (
        f"data root {root}: it lies inside data root {production} (stamped for profile "
        f"'production' in {production}/.app-profile.json): it is {shown}, seen through a "
        f"mount on its way (`findmnt -T {root}` names it), and no data root may hold another; "
        "nothing was opened or changed; point data_root of profile "
    )


def test_a_root_bound_from_a_directory_of_production_s_root_is_refused_outside_any_run(
    tmp_path: Path,
) -> None:
    _needs_root()
    settings, production, token, sessions = stopped_production(tmp_path)
    seen = stopped_then_live(OUTSIDE, settings, production, token)
    said = json.dumps(seen, indent=1)
    # Before the fix: each command ran (exit 0), development's stamp, lock, audit log,
    # sessions/ and .tmp/ written into production's .trash/ (and .tmp/), beside the server.
    assert seen["STOPPED_IN"] == seen["LIVE_IN"] == [[], []], said
    assert_untouched(production, sessions, said)
    dev = settings.parent / "dev.trash"
    # Layer 2, where the settings name production's root: refused as an overlap.
    overlap = (
        "error: profiles 'development' and 'production' overlap: 'development''s data root "
        f"lies inside 'production''s, reached by another path (it is {production}/.trash, "
        "seen through a mount on its way: a bind mount of a directory of that root): "
        f"development -> {dev} (from environment APP_DATA_ROOT), production -> {production} "
        "(from settings.toml [production]). Every profile needs its own data root, not "
        f"nested in another; change data_root for one of them (`findmnt -T {dev}` shows the "
        "mount)"
    )
    for tag in ("STOPPED_PURGE", "LIVE_PURGE"):
        assert seen[tag] == [78, overlap], said
    assert seen["STOPPED_WRITER"] == ["DataRootOverlapError", overlap.removeprefix("error: ")]
    # Every writer's open, where no settings name it (layer 5 adopted the empty directory).
    refusal = _inside_production(dev, production, production / ".trash")
    for tag in ("STOPPED_UNNAMED_PURGE", "LIVE_UNNAMED_PURGE", "STOPPED_UNNAMED_TRASH"):
        code, out = seen[tag]
        assert code == 78, said
        assert out.startswith(f"error: {refusal}'development' at a directory outside "), said
        assert out.endswith(
            # The command line's remedy carries the --profile it was given (red team 62 on
            # operations: a bare `app config` showed development's, the default).
            f"{production} (`app --profile development config` shows where it is set), not at "
            "a mount of a "
            "directory of it"
        ), said
    for tag in ("STOPPED_UNNAMED_WRITER", "LIVE_UNNAMED_WRITER"):
        assert seen[tag][0] == "DataRootStateError", said
        assert seen[tag][1].startswith(refusal), said
    # Before the fix: "ok for profile development: ... every data root is distinct", exit 0.
    code, out = seen["STOPPED_DOCTOR"]
    assert code == 78, said
    assert f"1 problem(s): - {refusal}'development' at a directory outside " in out, said
    code, out = seen["STOPPED_UNNAMED_TMP"]
    tmp = settings.parent / "dev.tmp"
    assert code == 78, said
    assert out.startswith(f"error: {_inside_production(tmp, production, production / '.tmp')}")


@pytest.mark.app_profile("production")
def test_a_testing_root_bound_from_a_directory_of_another_root_is_refused_in_a_run(
    tmp_path: Path,
) -> None:
    _needs_root()
    import ctypes
    import dataclasses

    from app.config import load
    from app.errors import AppError
    from app.storage import open_storage

    # A root no settings of the run name: the run does not protect it, only its stamp says.
    production = tmp_path / "elsewhere" / "production"
    made = dataclasses.replace(load("production", serving=False), data_root=production)
    with open_storage(made, writer=True) as store:
        store.create_session("a review", {})
    point = tmp_path / "testing-root"
    point.mkdir()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a test's child, in a mount namespace of its own: nothing outlives it
        said: list[list[str]] = []

        def attempt() -> None:
            testing = dataclasses.replace(load(serving=False), data_root=point)
            try:
                with open_storage(testing, writer=True):
                    said.append(["opened"])
            except AppError as error:
                said.append([type(error).__name__, " ".join(str(error).split())])

        try:
            os.close(read)
            if ctypes.CDLL(None, use_errno=True).unshare(0x00020000) != 0:  # CLONE_NEWNS
                raise OSError(ctypes.get_errno(), "unshare")
            for argv in (["--make-rprivate", "/"], ["--bind", f"{production}/.trash", point]):
                subprocess.run(["mount", *argv], check=True)
            attempt()
            # The other root's directory hidden here (a tmpfs over it): seen where the run's
            # process, in another mount namespace, sees it.
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", production.parent], check=True)
            attempt()
        finally:
            os.write(write, json.dumps(said).encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as output:
        seen = json.loads(output.read())
    os.waitpid(pid, 0)
    said = json.dumps(seen, indent=1)
    # Before the fix: opened; testing's stamp, lock and sessions/ in production's .trash/.
    assert sorted(p.name for p in (production / ".trash").iterdir()) == [], said
    assert len(seen) == 2, said
    assert [kind for kind, *_ in seen] == ["DataRootStateError"] * 2, said
    (_, visible), (_, hidden) = seen
    assert visible.startswith(_inside_production(point, production, production / ".trash"))
    assert visible.endswith(
        f"'testing' at a directory outside {production} (`app config` shows where it is "
        "set), not at a mount of a directory of it"
    ), said
    there = Path(f"/proc/{os.getpid()}/root{production}")
    assert hidden.startswith(_inside_production(point, there, there / ".trash")), said


@pytest.mark.app_profile("production")
def test_a_directory_bound_into_a_trash_entry_as_it_is_emptied_keeps_its_files(
    tmp_path: Path,
) -> None:
    _needs_root()
    if shutil.which("strace") is None or shutil.which("nsenter") is None:
        pytest.skip("needs strace, to stop empty-trash between its check and its removal")
    import dataclasses

    from test_server_e2e import app_env

    from app.config import load
    from app.storage import open_storage

    # Production's root (one the run does not protect) and a testing root with a session
    # in its trash.
    production = tmp_path / "elsewhere" / "production"
    made = dataclasses.replace(load("production", serving=False), data_root=production)
    with open_storage(made, writer=True) as store:
        kept = store.create_session("a review", {})
    session = production / "sessions" / kept["id"]
    before = {p.name: p.read_bytes() for p in session.iterdir()}
    testing = tmp_path / "testing"
    with open_storage(
        dataclasses.replace(load(serving=False), data_root=testing), writer=True
    ) as s:
        s.delete_session(s.create_session("deleted", {})["id"])
    (entry,) = (testing / ".trash").iterdir()
    # empty-trash stopped (SIGSTOP) once it has renamed the entry out of the trash, after its
    # look for mounts inside the root; in a mount namespace of its own.
    read, write = os.pipe()
    renames = "rename,renameat,renameat2"
    emptying = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "strace", "-f", "-qq", "-o",
         f"/dev/fd/{write}", "-P", str(entry), "-e", f"trace={renames}", "-e",
         f"inject={renames}:signal=STOP:when=1", sys.executable, "-m", "app", "data",
         "empty-trash"],
        env=app_env(testing), pass_fds=(write,), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(write)
    with os.fdopen(read) as trace:
        lines = []
        for line in trace:
            lines.append(line)
            if "stopped by SIGSTOP" in line:
                break
        assert lines and "stopped by SIGSTOP" in lines[-1], lines
        pid = lines[-1].split()[0]
        point = testing / ".trash" / f".emptying-{entry.name}" / "x"
        point.mkdir()
        bound = ["nsenter", "-t", pid, "-m", "mount", "--bind", str(session), str(point)]
        subprocess.run(bound, check=True)
        os.kill(int(pid), signal.SIGCONT)
        _, err = emptying.communicate(timeout=120)
        trace.read()
    # Before the fix: production's session.json removed for good, through the mount.
    assert {p.name: p.read_bytes() for p in session.iterdir()} == before, err
    assert emptying.returncode == 0, err
    assert (
        f"a filesystem is mounted at {point} (`findmnt {point}` names what it shows), and "
        f"nothing is removed through a mount: unmount it (`umount {point}`), then run `app "
        "data check --repair`); `app data check --repair` finishes it once that is resolved"
    ) in " ".join(err.split()), err
