"""Red team 44 on the guard (branch rt-guard28): what a user who did not write it tries next.

What broke: a test's child pytest in a mount namespace of its own where a stopped production
root is mounted at ``/tmp`` (``unshare -m``, ``bwrap --bind <root> /tmp``, as root). Every
pytest in the environment announces itself in the registry, ``/tmp/app-pytest-runs-<uid>``,
as the app's plugin is imported, before anything checks where pytest writes: it made that
directory inside production's root, and wrote its entry there, whether its plugin was active,
inactive (no settings found) or switched off. The registry now refuses to be made, or
written, where ``/tmp`` lies in a data root (a stamp or a lock file there or above), and a run
whose plugin is active is refused, naming the root and what to do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import forked_pytest
import pytest
from test_redteam_s24_guard import _inner_env
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_server_e2e import snapshot

TMP = Path("/tmp")  # the registry's own parent, which the namespace replaces
SEEN_FROM = Path("/mnt")  # where the namespace shows the real /tmp


def _beside(production: Path, *argv: str, **run: object) -> str:
    """`argv` run (as root, skipped otherwise), its output on one line; production's root
    must be unchanged after it."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or not SEEN_FROM.is_dir():
        pytest.skip("only root makes a mount namespace with a mount in it (unshare -m)")
    before = snapshot(production)
    if argv[1:3] == ("-m", "pytest"):  # a pytest's start is not what a case checks: forked
        done = forked_pytest.run(argv, **run)  # type: ignore[arg-type]
    else:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, **run)  # type: ignore[call-overload]
    output = " ".join((done.stdout + done.stderr).split())
    assert snapshot(production) == before, output
    return output


def _a_test_and_a_session(tmp_path: Path, production: Path) -> str:
    """A test for a child pytest in `tmp_path`; the id of a session of production's."""
    (tmp_path / "test_inner.py").write_text("def test_inner(tmp_path):\n    pass\n")
    return next((production / "sessions").iterdir()).name


def _own_mounts(*argv: str) -> tuple[str, ...]:
    return ("unshare", "-m", "--propagation", "private", *argv)


#: In a mount namespace of its own: the real /tmp at /mnt, production's root at /tmp, then a
#: child pytest with the plugin active (`$2` the settings), and one with it switched off;
#: then production's sessions/ at /tmp (no mark there or above), and the first again; last,
#: with the real /tmp out of sight (so the settings too: the plugin inactive), a run from a
#: tmpfs at /mnt told to write its report over a session's record at /tmp (`$5` the session).
SCRIPT = """
mount --bind /tmp /mnt && mount --bind "$1" /tmp || exit 9
cd "$3" || exit 9
for off in "" "-p no:app"; do
  APP_SETTINGS_DIR="$2" "$4" -m pytest -p no:cacheprovider -q $off --basetemp="$3/bt" \
      test_inner.py
  echo "=== $?"
done
umount /tmp && mount --bind "$1/sessions" /tmp || exit 9
APP_SETTINGS_DIR="$2" "$4" -m pytest -p no:cacheprovider -q --basetemp="$3/bt" test_inner.py
echo "=== $?"
cd / && umount /mnt && mount -t tmpfs none /mnt && cd /mnt || exit 9
printf 'def test_inner():\n    pass\n' > test_inner.py
"$4" -m pytest -p no:cacheprovider -q --basetemp=/mnt/bt --junitxml="/tmp/$5/session.json" \
    test_inner.py
echo "=== $?"
"""


def _seen(path: Path) -> str:
    """`path` as the namespace shows it (anything under /tmp is at /mnt there)."""
    path = path.resolve()
    return str(SEEN_FROM / path.relative_to(TMP)) if path.is_relative_to(TMP) else str(path)


def test_a_child_whose_tmp_is_a_data_root_writes_no_registry_there(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    # The namespace mounts production's root over /tmp: a project or a virtualenv there (a
    # CI job's clone under /tmp) would be out of its own children's sight.
    for needed in (Path(sys.prefix).absolute(), Path(__file__).resolve().parents[1]):
        if needed.is_relative_to(TMP):
            pytest.skip(f"{needed} lies under {TMP}, which this test mounts over")
    session = _a_test_and_a_session(tmp_path, production)
    output = _beside(
        production,
        *_own_mounts("sh", "-c", SCRIPT, "sh", str(production), _seen(settings)),
        _seen(tmp_path), sys.executable, session, env=_inner_env(),
    )  # fmt: skip
    assert not (production / TMP.joinpath(f"app-pytest-runs-{os.getuid()}").name).exists()
    active, switched_off = output.split("=== ")[1:3]
    assert active.startswith("4"), output
    assert (
        f"refusing to run: the test run cannot be registered in /tmp/app-pytest-runs-"
        f"{os.getuid()} (/tmp lies in a data root here (/tmp has .server.lock), so the "
        "registry"
    ) in output
    assert "run the tests where /tmp is a temporary directory" in output
    # Switched off, the run goes on, without a registry (nothing of the app's runs there).
    assert switched_off.startswith("0"), output
    sessions = output.split("=== ")[3]
    assert sessions.startswith("4"), output
    # (Seen at /mnt here, where this namespace shows the real /tmp too.)
    assert (
        f"(/tmp (it is {_seen(production)}/sessions, seen through a mount) lies in a data "
        f"root here ({_seen(production)} has .server.lock)"
    ) in output
    # Hidden by that mount, what it shows is read as the test's own namespace sees it: no
    # registry there, and the report refused (the plugin inactive: no settings in sight).
    assert output.split("=== ")[4].startswith("4"), output
    assert (
        f"/sessions/{session}/session.json, seen through a mount (`findmnt -T "
        f"/tmp/{session}/session.json` shows it)"
    ) in output, output
    assert not (production / "sessions" / f"app-pytest-runs-{os.getuid()}").exists()


#: In a mount namespace of its own: production's sessions/ bound into the test's directory
#: (`$2`), then a child pytest with the plugin active and one with it switched off, each told
#: to write its report over a session's record through it (`$3` the session); then pytest's
#: base directory made through it, by `--basetemp` and by `TMPDIR`; last, the report written
#: through an overlay whose upper directory is production's sessions/; last, a report into
#: the whole root bound at `$2/r`.
BOUND = """
mount --bind "$1/sessions" "$2/s" || exit 9
cd "$2" || exit 9
for off in "" "-p no:app"; do
  "$4" -m pytest -p no:cacheprovider -q $off --junitxml="s/$3/session.json" test_inner.py
  echo "=== $?"
done
"$4" -m pytest -p no:cacheprovider -q --basetemp=s/made test_inner.py
echo "=== $?"
TMPDIR="$2/s" "$4" -m pytest -p no:cacheprovider -q -p no:app test_inner.py
echo "=== $?"
mount -t overlay overlay -o "lowerdir=$2/l,upperdir=$1/sessions,workdir=$2/w" "$2/o" || exit 9
"$4" -m pytest -p no:cacheprovider -q -p no:app --junitxml="o/$3/session.json" test_inner.py
echo "=== $?"
mount --bind "$1" "$2/r" || exit 9
"$4" -m pytest -p no:cacheprovider -q --junitxml=r/report.xml test_inner.py
echo "=== $?"
"""


def test_a_report_written_through_a_bind_mount_of_production_s_sessions_is_refused(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # pytest's writers were checked by path, and by a stamp or a held lock at or above the
    # path: production's sessions/ bound into the test's own directory is neither, so the
    # report replaced a session's record, with the plugin active or switched off. The mount
    # table says which directory a bind mount shows; it is checked where it lies in fact.
    _, production = stopped
    for directory in ("s", "o", "l", "w", "r"):
        (tmp_path / directory).mkdir()
    session = _a_test_and_a_session(tmp_path, production)
    output = _beside(
        production, *_own_mounts("sh", "-c", BOUND, "sh", str(production), str(tmp_path)),
        session, sys.executable, env=_inner_env(),
    )  # fmt: skip
    record = production.resolve() / "sessions" / session / "session.json"
    said = (
        f"pytest's --junitxml rewrites {tmp_path.resolve()}/s/{session}/session.json as the "
        f"run ends, which lies in the data root {production.resolve()} (it has a profile "
        f"stamp, .app-profile.json): it is {record}, seen through a mount (`findmnt -T "
    )
    assert output.count(said) == 2, output
    overlay = said.replace(f"{tmp_path.resolve()}/s/", f"{tmp_path.resolve()}/o/")
    assert overlay in output, output
    assert "The app's plugin is switched off in this run" in output
    sessions = production.resolve() / "sessions"
    # (The copy of the settings that names production is not this run's: found by its stamp.)
    assert (
        f"refusing --basetemp s/made: pytest empties it in {tmp_path.resolve()}/s/made, which "
        f"lies inside the data root {production.resolve()} (it has a profile stamp, "
        f".app-profile.json; it is {sessions}/made, seen through a mount)"
    ) in output
    assert (f"(it has a profile stamp, .app-profile.json; it is {sessions}/pytest-of-") in output
    assert f", seen through a mount), because TMPDIR is {tmp_path}/s" in output
    # The whole root bound: the mount point was named "the data root", and not the root.
    assert (
        f"pytest's --junitxml rewrites {tmp_path.resolve()}/r/report.xml as the run ends, which "
        f"lies in the data root {production.resolve()} (it has a profile stamp, "
        f".app-profile.json): it is {production.resolve()}/report.xml, seen through a mount "
        f"(`findmnt -T {tmp_path.resolve()}/r/report.xml` shows it)"
    ) in output
    assert re.findall(r"=== (\d+)", output) == ["4", "4", "4", "1", "4", "4"], output


#: A test that opts into production, then purges it from a child in a mount namespace of its
#: own where an overlay over the sandbox's data/ shows the settings' data/ (its upper
#: directory), so that the sandbox's production root is the real one, stamp and all.
OVERLAID = """
import os, subprocess, sys, pytest

SCRIPT = '''
mount -t overlay overlay -o "lowerdir=$1/l,upperdir=$2/data,workdir=$1/w" "$3/data" || exit 9
ENV_FOR_DYNACONF=production "$4" -m app data purge --yes-i-mean-it
'''

@pytest.mark.app_profile("production")
def test_purges_through_an_overlay(tmp_path):
    (tmp_path / "l").mkdir()
    (tmp_path / "w").mkdir()
    sandbox = os.environ["PYTEST_APP_SANDBOX"]
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT, "sh", str(tmp_path),
         os.environ["APP_SETTINGS_DIR"], sandbox, sys.executable],
        capture_output=True, text=True,
    )
    print("CHILD", done.returncode, done.stdout + done.stderr)
"""


def test_a_production_root_seen_through_an_overlay_over_the_sandbox_is_refused(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # The sandbox maps an opted-in production to <sandbox>/data/production, and refuses a
    # path that is production's root by device and inode (a bind mount). An overlay keeps
    # neither: through one, that path was the real root, its stamp said production, and the
    # purge moved every session to the trash. Where a mount shows it from is checked too.
    settings, production = stopped
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_overlaid.py").write_text(OVERLAID)
    (tmp_path / "tmp").mkdir()
    output = _beside(
        production, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s",
        cwd=project,
        env=_inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=str(tmp_path / "tmp")),
    )  # fmt: skip
    assert "CHILD 78 error: refused under pytest (sandbox: " in output, output
    assert (
        f"/data/production: it is {production.resolve()}, seen through a mount (`findmnt -T "
    ) in output
    assert (
        f"and that is, lies in or holds the data root of profile 'production' "
        f"({production.resolve()})"
    ) in output


#: In a mount namespace of its own (`unshare -m`), a root in the sandbox whose session's
#: directory is made a bind mount of a production session's, after the open and before it.
SESSION_BOUND = """
import os, subprocess, sys
from app.config import load
from app.storage import open_storage

production = sys.argv[1]
theirs = os.path.join(production, "sessions", os.listdir(os.path.join(production, "sessions"))[0])
config = load()
with open_storage(config, writer=True) as store:
    ours = store.create_session("a test's", {})["id"]
    store.put_file(ours, "notes.txt", b"a test's notes")
    mine = os.path.join(config.data_root, "sessions", ours)
    subprocess.run(["mount", "--bind", theirs, mine], check=True)
    try:
        store.delete_file(ours, "notes.txt")
        print("AFTER changed")
    except Exception as error:
        print("AFTER", type(error).__name__, error)
try:
    with open_storage(config, writer=True) as store:
        store.delete_file(ours, "notes.txt")
        print("BEFORE changed")
except Exception as error:
    print("BEFORE", type(error).__name__, error)
"""


def test_a_session_directory_made_a_bind_mount_of_production_s_changes_nothing(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # The row "a session's directory replaced by a bind mount of production's" was written
    # before a root refused mounts inside it (at its open, and at every change since red
    # team 38): tried again here, once made after the open and once before it.
    _, production = stopped
    output = _beside(
        production, *_own_mounts(sys.executable, "-c", SESSION_BOUND, str(production)),
        env={**os.environ, "APP_DATA_ROOT": str(tmp_path / "root")},
    )  # fmt: skip
    root = (tmp_path / "root").resolve()
    assert "AFTER DataRootChangedError" in output, output
    assert "a filesystem was mounted inside it since it was opened" in output, output
    assert (
        f"BEFORE DataRootStateError data root {root}: a filesystem is mounted inside it "
        f"({root}/sessions/"
    ) in output, output
    assert "AFTER changed" not in output and "BEFORE changed" not in output, output
