"""pytest's writes to a standard stream (``--junitxml=/dev/stdout``), checked as the run ends.

The check as the tests end removes each name a test planted on the way to what pytest writes
(`app.testing.writes._unplant`). It took ``/dev/stdout`` for one: a symbolic link through
``/proc/self/fd/1``, which names what the process has open. So every run with
``--junitxml=/dev/stdout`` whose end found a planted link removed the machine's
``/dev/stdout`` (as root), and pytest then wrote its report as a regular file in its place,
where every later writer of ``/dev/stdout`` on the machine wrote too. A standard stream's link
is never removed now; where the stream itself was moved onto a production record by the test
(``os.dup2`` of a read-only descriptor under ``-s``), the run is stopped before pytest writes.

Each run is real (a pytest subprocess next to a stopped production root), in a mount
namespace whose ``/dev`` is a directory of the test's own, so that the machine's is never at
stake.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s31_guard import stopped  # noqa: F401 - the fixture
from test_server_e2e import snapshot

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a /dev of the test's own takes root and unshare(1)",
)

#: A test that links pytest's cache file to a production record; one that moves its
#: standard output onto a production record (read-only: reading is allowed).
PLANTS = """
import os, pathlib

def test_plants_a_link(request):
    cache = pathlib.Path(request.config.cache._cachedir) / "v" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.symlink(os.environ["RECORD"], cache / "nodeids")
"""
MOVES = """
import os

def test_moves_its_standard_output():
    os.dup2(os.open(os.environ["RECORD"], os.O_RDONLY), 1)
"""


def _dev(where: Path) -> Path:
    """A /dev for a mount namespace: the standard streams' links and the devices Python
    reads, and a mount point for the machine's /dev/shm (`_run`)."""
    where.mkdir()
    (where / "shm").mkdir()
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        (where / name).symlink_to(target)
    (where / "stdout").symlink_to("/proc/self/fd/1")
    (where / "stderr").symlink_to("/proc/self/fd/2")
    for name, minor in (("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)):
        os.mknod(where / name, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    return where


def _run(dev: Path, project: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    # The machine's /dev/shm shown again in it (--rbind): the temporary directory, and the
    # settings in it, lie there under scripts/test.
    own_dev = 'mount --rbind /dev/shm "$0/shm" && mount --rbind "$0" /dev && exec "$@"'
    command = ["unshare", "--mount", "sh", "-c", own_dev, str(dev), sys.executable, "-m"]
    done = subprocess.run(
        [*command, "pytest", "-p", "no:randomly", *args],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_a_standard_stream_is_never_removed_and_a_moved_one_stops_the_writes(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    record = next((production / "sessions").iterdir()) / "session.json"
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path), RECORD=str(record))
    before = snapshot(production)

    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "test_plants.py").write_text(PLANTS)
    dev = _dev(tmp_path / "dev1")
    code, output = _run(dev, planted, env, "-p", "cacheprovider", "--junitxml=/dev/stdout")
    assert (dev / "stdout").is_symlink(), output
    assert os.readlink(dev / "stdout") == "/proc/self/fd/1", output
    assert code == 1, output
    link = planted / ".pytest_cache" / "v" / "cache" / "nodeids"
    assert (
        f"Removed (the name only, never what it leads to): {link} (a symbolic link to "
        f"{record}), so pytest writes a new file there"
    ) in output, output
    assert "/dev/stdout (a symbolic link" not in output, output
    assert "<testsuite" in output, output  # the report, on the real standard output

    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "test_moves.py").write_text(MOVES)
    dev = _dev(tmp_path / "dev2")
    code, output = _run(
        dev, moved, env, "-s", "-p", "no:cacheprovider", "-p", "no:terminal",
        "--junitxml=/dev/stdout",
    )  # fmt: skip
    assert os.readlink(dev / "stdout") == "/proc/self/fd/1", output
    assert code == 3, output
    assert (
        f"app: stopping before pytest writes its results: pytest's --junitxml rewrites "
        f"{record} as the run ends, which lies in the data root of profile 'production' "
        f"({production}; no process holds it now). It was checked as the run started, and a "
        "test changed it since (a link on the way, a standard stream it names, moved with "
        "os.dup2, or the writer itself"
    ) in output, output
    assert snapshot(production) == before, output
