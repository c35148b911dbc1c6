"""Red team 63 on the guard (branch rt-guard63): the data root behind a name, where nothing
above the directory says it is another root's.

What broke (as root, outside any run in a PID namespace with its own ``/proc`` beside a
stopped production root and a live one, and in a test's child inside the run): layer 2's two
newest *not stopped* rows.

- a root named at (or through a bind mount of) a directory of a stopped root whose stamp and
  lock file were both deleted (by hand, a restore that skipped dotfiles): red team 62 on
  regress finds a root above by its stamp, or by a lock file of a root's; with both gone,
  ``APP_DATA_ROOT=<root>/.trash app --profile development data purge --yes-i-mean-it`` and
  ``open_storage(..., writer=True)`` stamped the other root's ``.trash/`` for development and
  wrote their lock, ``sessions/`` and ``.tmp/`` in it;
- a root named through a bind mount of an empty directory of another root (its ``.trash/``
  or ``.tmp/``) whose filesystem is then mounted nowhere the command can see (unmounted with
  ``umount -l`` after the bind, or hidden under another mount, with no ancestor in another
  mount namespace in sight): the mount table names the directory as ``/production/.trash``
  of a filesystem mounted nowhere, so red team 62's look above it found nothing, and the
  purge, ``data empty-trash`` and every writer adopted production's ``.trash/`` as
  development's root, beside production's live server; and so a session's ``records/`` or
  ``blobs/``, left empty once its files are deleted.

And pytest's own writes there (``--basetemp``, ``--junitxml``, the cache provider's
``cache_dir``): the plugin looks for a root above them by its stamp or its holder, and
through a mount whose source is in sight; ``pytest --basetemp=<bind>/run
--junitxml=<bind>/run.xml`` made the run's sandbox, its testing root and its report in
production's trash.

And layer 5's own row: a stopped root whose stamp was lost, named as another profile's
root where no settings name it, was adopted by the first writer (stamped for it, its
sessions purged).

What changed (``app.dataroot``, and the plugin's checks of what pytest writes,
``app.testing.guard`` and ``app.testing.writes``, through ``app.dataroot.a_root_s_own`` and
``shown_from_a_session``):

- every writer's open marks the root's own directories, ``sessions/``, ``.trash/`` and
  ``.tmp/``, with an extended attribute (``user.app.layout``: the directory's name and the
  root's profile), which lives on the directory itself and so goes wherever a mount shows
  it; a writer refuses a root that is, or lies in, a directory so marked
  (``data_root_state``, 78) before anything is made, naming the directory, the profile, the
  mount that shows it (``findmnt -T``) and the ``setfattr -x`` for a copy that belongs to no
  root now;
- a directory above a root, with neither stamp nor lock file, counts as a data root where it
  holds the three directories every writer's open makes (``sessions/``, ``.trash/``,
  ``.tmp/``) or one of them marked (``_laid_out``): a root of a release from before the mark
  is found by its path and through a visible bind mount too;
- a root that a mount shows from a directory whose place in its filesystem is a session's
  (``sessions/<id>/...``) or a trash entry's (``.trash/<time>-<id>/...``), which the app does
  not mark, is refused by that place (``shown_from_a_session``);
- the plugin's look for a data root above what pytest writes or empties (``--basetemp``,
  ``--junitxml``, the cache) counts the same directories as a root's, and refuses the run
  (exit 4) naming the directory and its mark;
- a writer of another profile refuses a root with no stamp whose own directories are marked
  as one profile's (``_refuse_stamp_lost``), naming a writer of that profile to write the
  stamp back and the ``app data restamp`` that hands it over, which reads the marks where
  the stamp is gone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import forked_app
import own_mounts
import pytest
from project_copy import assert_untouched, stopped_production, stopped_then_live
from test_redteam_s60_guard import COMMON as S60_COMMON
from test_redteam_s62_guard import SHELL_BESIDE, _needs_root
from test_server_e2e import app_env

from app.dataroot import LAYOUT_MARK

#: PID 1 of a PID namespace with its own /proc, in a private mount namespace (outside any
#: run). argv: the settings directory, production's root (stopped; served once it prints
#: STOPPED, until it reads a line). Development's root is a bind mount of production's
#: `.trash/` (`.tmp/` for one sample), production's directory then hidden under a tmpfs;
#: `lost` is a stopped root no settings name, on a tmpfs of its own, that lost its stamp and
#: lock file, bound at `dev.lost` and then unmounted (`umount -l`).
OUTSIDE = (
    S60_COMMON
    + SHELL_BESIDE
    + r"""
import dataclasses
points = {}
for name in ("dev.trash", "dev.tmp", "dev.lost", "lostfs"):
    points[name] = settings.parent / name
    points[name].mkdir()
development = ["--profile", "development"]
purge = [*development, "data", "purge", "--yes-i-mean-it"]
unnamed = {"APP_SETTINGS_DIR": str(shell)}

# A stopped root no settings name, its stamp and lock file deleted.
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(points["lostfs"])], check=True)
lost = points["lostfs"] / "staging"
os.environ["APP_SETTINGS_DIR"] = str(shell)
with open_storage(dataclasses.replace(load("production", serving=False), data_root=lost),
                  writer=True) as store:
    store.create_session("a review", {})
for name in (".app-profile.json", ".server.lock"):
    (lost / name).unlink()
results["LOST_PATH"] = run(purge, APP_DATA_ROOT=str(lost / ".trash"), **unnamed)
subprocess.run(["mount", "--bind", str(lost / ".trash"), str(points["dev.lost"])], check=True)
results["LOST_BOUND"] = run(purge, APP_DATA_ROOT=str(points["dev.lost"]), **unnamed)
subprocess.run(["umount", "-l", str(points["lostfs"])], check=True)
results["LOST_UNMOUNTED"] = run(purge, APP_DATA_ROOT=str(points["dev.lost"]), **unnamed)
results["LOST_WRITER"] = writer(
    ENV_FOR_DYNACONF="development", APP_DATA_ROOT=str(points["dev.lost"]), **unnamed)

for name in (".trash", ".tmp"):
    subprocess.run(["mount", "--bind", str(production / name), str(points["dev" + name])],
                   check=True)
# Production's directory hidden here: nothing above the binds is in sight.
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(production.parent)], check=True)
dev = str(points["dev.trash"])


def attempts(stage):
    results[stage + "PURGE"] = run(purge, APP_DATA_ROOT=dev)
    results[stage + "UNNAMED_PURGE"] = run(purge, APP_DATA_ROOT=dev, **unnamed)
    results[stage + "UNNAMED_WRITER"] = writer(
        ENV_FOR_DYNACONF="development", APP_DATA_ROOT=dev, **unnamed)
    if stage == "LIVE_":
        return
    results[stage + "UNNAMED_TRASH"] = run(
        [*development, "data", "empty-trash", "--yes-i-mean-it"], APP_DATA_ROOT=dev, **unnamed)
    results[stage + "UNNAMED_TMP"] = run(purge, APP_DATA_ROOT=str(points["dev.tmp"]), **unnamed)
    # A pytest run (outside any other) whose --basetemp and --junitxml lie in it.
    project = settings.parent / "project"
    project.mkdir()
    (project / "test_it.py").write_text("def test_it(tmp_path):\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
         f"--basetemp={dev}/run", f"--junitxml={dev}/run.xml", str(project)],
        cwd=project, env={**os.environ, **unnamed}, capture_output=True, text=True)
    results[stage + "PYTEST"] = [done.returncode, " ".join((done.stdout + done.stderr).split())]


def inside():
    return [names(points[name]) for name in ("dev.trash", "dev.tmp", "dev.lost")]


attempts("STOPPED_")
results["STOPPED_IN"] = inside()
print("STOPPED", flush=True)
sys.stdin.readline()  # the test has started a server on production's root meanwhile
attempts("LIVE_")
results["LIVE_IN"] = inside()
print("RESULTS", json.dumps(results))
"""
)


def _marked(root: Path, name: str, profile: str, *, shown: str = "") -> str:
    """What every writer is told of `root`, a bind mount of another root's `name`."""
    return (
        f"data root {root}: it is the {name}/ directory of a data root of profile {profile!r}, "
        f"seen through a mount on its way that shows {shown}"
    )


MARKED_TAIL = (
    "the app marks a root's own directories (extended attribute user.app.layout), and no "
    "data root may be made in another's; nothing was opened or changed; point data_root of "
    "profile "
)


def _lost_above(root: Path, outer: Path) -> str:
    return (
        f"data root {root}: it lies inside data root {outer} (its stamp and lock file are "
        "gone, but it holds a root's own directories, sessions/, .trash/, .tmp/)"
    )


def test_a_root_at_a_directory_of_a_hidden_or_unstamped_root_is_refused_outside_any_run(
    tmp_path: Path,
) -> None:
    _needs_root()
    settings, production, token, sessions = stopped_production(tmp_path)
    seen = stopped_then_live(OUTSIDE, settings, production, token)
    said = json.dumps(seen, indent=1)
    # Before the fix: each command ran (exit 0); development's stamp, lock, sessions/ and
    # .tmp/ written into production's .trash/ and .tmp/ (and the lost root's .trash/).
    assert seen["STOPPED_IN"] == seen["LIVE_IN"] == [[], [], []], said
    assert_untouched(production, sessions, said)
    lost = settings.parent / "lostfs" / "staging"
    code, out = seen["LOST_PATH"]
    assert code == 78, said
    refused = f"error: {_lost_above(lost / '.trash', lost)}, and no data root may hold another"
    assert out.startswith(refused), said
    bound = settings.parent / "dev.lost"
    code, out = seen["LOST_BOUND"]
    assert code == 78, said
    assert out.startswith(
        f"error: {_lost_above(bound, lost)}: it is {lost}/.trash, seen through a mount on its "
        f"way (`findmnt -T {bound}` names it)"
    ), said
    # Unmounted: only the mark on the directory itself is left to say whose it is.
    for tag in ("LOST_UNMOUNTED", "LOST_WRITER"):
        code, out = seen[tag]
        assert out.removeprefix("error: ").startswith(
            _marked(bound, ".trash", "production", shown="/staging/.trash of tmpfs (tmpfs) there")
        ), said
        assert code == (78 if tag == "LOST_UNMOUNTED" else "DataRootStateError"), said
    dev = settings.parent / "dev.trash"
    for tag in ("PURGE", "UNNAMED_PURGE", "UNNAMED_WRITER"):
        for stage in ("STOPPED_", "LIVE_"):
            code, out = seen[stage + tag]
            assert code == (78 if "PURGE" in tag else "DataRootStateError"), said
            out = out.removeprefix("error: ")
            assert out.startswith(_marked(dev, ".trash", "production")), said
            assert "/.trash of " in out, said
            assert f"there (`findmnt -T {dev}` names it): {MARKED_TAIL}'development' " in out, said
            assert out.endswith(
                f"not at a mount of one of its directories; if the directory is a copy that "
                f"belongs to no data root now, remove the mark (`setfattr -x {LAYOUT_MARK} "
                f"{dev}`)"
            ), said
    code, out = seen["STOPPED_UNNAMED_TRASH"]
    assert code == 78 and out.startswith(f"error: {_marked(dev, '.trash', 'production')}"), said
    tmp = settings.parent / "dev.tmp"
    code, out = seen["STOPPED_UNNAMED_TMP"]
    assert code == 78 and out.startswith(f"error: {_marked(tmp, '.tmp', 'production')}"), said
    # Before the fix: the run's sandbox made in production's .trash/ (its testing root with
    # it), the report written there.
    code, out = seen["STOPPED_PYTEST"]
    assert code == 4, said
    assert (
        f"ERROR: app: refusing --basetemp {dev}/run: pytest empties it in {dev}/run, which "
        f"lies inside {dev}, which is the .trash/ directory of a data root of profile "
        "'production' (extended attribute user.app.layout). Choose a temporary directory "
        "outside every data root"
    ) in out, said


#: A test's child, in a mount namespace of its own (`own_mounts`). argv: an empty directory
#: where it mounts a tmpfs holding a root no settings of the run name (production's), whose
#: stamp and lock file it deletes; two mount points, for that root's `.trash/` and for an
#: emptied session's `records/`, bound there before the tmpfs is unmounted (`umount -l`).
IN_A_RUN = r"""
import dataclasses, json, subprocess, sys
from pathlib import Path

from app.config import load
from app.errors import AppError
from app.storage import open_storage
from app.testing.writes import Target, _conflict

fs, point, records = map(Path, sys.argv[1:4])
other = fs / "production"
said = []


def attempt(where):
    testing = dataclasses.replace(load(serving=False), data_root=where)
    try:
        with open_storage(testing, writer=True):
            said.append(["opened", *sorted(p.name for p in where.iterdir())])
    except AppError as error:
        said.append([type(error).__name__, " ".join(str(error).split())])


subprocess.run(["mount", "-t", "tmpfs", "tmpfs", fs], check=True)
made = dataclasses.replace(load("production", serving=False), data_root=other)
with open_storage(made, writer=True) as store:
    session = store.create_session("a review", {})["id"]
    # Its records/ and blobs/ are left empty, and unmarked.
    store.put_file(session, "notes.txt", b"kept")
    store.delete_file(session, "notes.txt")
for name in (".app-profile.json", ".server.lock"):
    (other / name).unlink()
attempt(other / ".trash")
subprocess.run(["mount", "--bind", other / ".trash", point], check=True)
attempt(point)
subprocess.run(["mount", "--bind", other / "sessions" / session / "records", records], check=True)
subprocess.run(["umount", "-l", fs], check=True)
attempt(point)
attempt(records)
# What the plugin says of a report pytest would write there (`--junitxml`).
for where in (point, records):
    target = Target(where / "report.xml", "pytest's --junitxml writes {path}")
    said.append(["conflict", str(_conflict(target, {}, {}))])
said.append([*(sorted(p.name for p in d.iterdir()) for d in (point, records))])
said.append([f"/production/sessions/{session}/records"])
print(json.dumps(said))
"""


@pytest.mark.app_profile("production")
def test_a_testing_root_at_a_directory_of_an_unstamped_or_unmounted_root_is_refused_in_a_run(
    tmp_path: Path,
) -> None:
    """In a test's child: a testing root at the ``.trash/`` of a root the run does not
    protect, whose stamp and lock file were deleted, by its path and through a bind mount;
    and, its filesystem unmounted after the bind, through the mount alone."""
    _needs_root()
    fs = tmp_path / "fs"
    point = tmp_path / "testing-root"
    records = tmp_path / "records-root"
    for directory in (fs, point, records):
        directory.mkdir()
    env = {**os.environ, "PYTEST_APP_ALLOW_PROFILES": "production"}
    done = own_mounts.python_c(IN_A_RUN, str(fs), str(point), str(records), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    other = fs / "production"
    seen = json.loads(done.stdout.splitlines()[-1])
    said = json.dumps(seen, indent=1)
    assert len(seen) == 8, said
    *refused, (_, in_the_trash), (_, in_the_records), left, (shown,) = seen
    # Before the fix: "None", nothing above the mount says it is a data root's.
    assert in_the_trash == (
        f"which lies in {point}, which is the .trash/ directory of a data root of profile "
        "'production' (extended attribute user.app.layout)"
    ), said
    assert in_the_records == (
        f"which lies in a directory of a session of a data root, by its place in its "
        f"filesystem ({shown}/report.xml), seen through a mount (`findmnt -T "
        f"{records}/report.xml` shows it)"
    ), said
    # Before the fix: opened, testing's stamp, lock, sessions/ and .tmp/ in the other .trash/
    # (and in the session's records/).
    (entry,), emptied = left  # the deleted file's trash entry alone
    assert "-file-" in entry and emptied == [], said
    assert [kind for kind, _ in refused] == ["DataRootStateError"] * 4, said
    by_path, bound, unmounted, session_s = (message for _, message in refused)
    assert by_path.startswith(_lost_above(other / ".trash", other)), said
    assert bound.startswith(
        f"{_lost_above(point, other)}: it is {other}/.trash, seen through a mount on its way"
    ), said
    assert unmounted.startswith(
        _marked(point, ".trash", "production", shown="/production/.trash of tmpfs (tmpfs) "
                "there")
    ), said  # fmt: skip
    assert f"{MARKED_TAIL}'testing' at a directory outside that data root" in unmounted, said
    assert session_s.startswith(
        f"data root {records}: it is a directory of a session of another data root, by its "
        "place in its filesystem (a session's records/ or blobs/, or a trash entry's), seen "
        f"through a mount on its way that shows {shown} of tmpfs (tmpfs) there (`findmnt -T "
        f"{records}` names it), and no data root may be made in another's; nothing was opened "
        "or changed; point data_root of profile 'testing' at a directory outside that data root"
    ), said


@pytest.mark.app_profile("production")
def test_a_root_whose_stamp_was_lost_is_not_adopted_by_another_profile(tmp_path: Path) -> None:
    """Layer 5: production's root (one no settings of the run name) lost its stamp and its
    lock file; testing's writer adopted it, stamped it and purged its sessions. The marks on
    its own directories name production now: refused, handed over only by `restamp`."""
    from app.config import load
    from app.dataroot import restamp
    from app.errors import AppError
    from app.storage import open_storage

    root = tmp_path / "elsewhere" / "production"
    made = dataclasses.replace(load("production", serving=False), data_root=root)
    with open_storage(made, writer=True) as store:
        session = store.create_session("a review", {})["id"]
    for name in (".app-profile.json", ".server.lock"):
        (root / name).unlink()
    testing = dataclasses.replace(load(serving=False), data_root=root)
    with pytest.raises(AppError) as refused, open_storage(testing, writer=True) as store:
        store.purge()
    # Before the fix: opened, stamped for testing, its session moved to the trash.
    assert sorted(p.name for p in root.iterdir()) == [".tmp", ".trash", "sessions"]
    assert [p.name for p in (root / "sessions").iterdir()] == [session]
    message = " ".join(str(refused.value).split())
    assert message == (
        f"data root {root}: it has no profile stamp (.app-profile.json was deleted or lost), "
        f"but its own directories are marked as profile 'production''s (extended attribute "
        f"{LAYOUT_MARK} on {root}/sessions, written by every writer that opens a root): it is "
        "'production''s data root, and profile 'testing' may not adopt it; nothing was opened "
        "or changed; if it is 'production''s root, a writer of that profile writes the stamp "
        "back (`app --profile production data check --repair`, or its server's start); if it "
        "is to be 'testing''s from now on, hand it over: `app data restamp --profile testing "
        "--from production --yes-i-mean-it`; otherwise point data_root of profile 'testing' "
        "elsewhere (`app config` shows where it is set)"
    ), message
    # `app status` said the first writer to open it would stamp it.
    shown = forked_app.run(app_env(root), ["status"])
    assert shown.returncode == 0, shown.stderr
    assert (
        "stamp: none (deleted or lost: its own directories are marked as profile "
        "'production''s, so a writer of 'testing' is refused; `app data restamp --profile "
        "testing --from production` hands it over)"
    ) in shown.stdout, shown.stdout
    as_json = forked_app.run(app_env(root), ["status", "--json"])
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["marked"] == "production", as_json.stdout
    # The hand-over the refusal names, then testing's own open.
    assert restamp(testing, "production")["restamped_from"] == "production"
    with open_storage(testing, writer=True) as store:
        assert [s["id"] for s in store.list_sessions().items] == [session]
