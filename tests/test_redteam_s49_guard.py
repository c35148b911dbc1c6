"""Red team 49 on the guard (branch rt-guard32): a data root shown in the sandbox by a
filesystem that a daemon serves.

What broke: bindfs (a FUSE daemon that any user may mount, no root needed) showing a
production root in a test's ``tmp_path``. Neither the device and inodes of what it shows nor
the mount table say where they come from, and FUSE keeps its own locks, so a live server's
flock is not seen through it:

- a child given production's settings and the opt-in of ``@pytest.mark.app_profile``, its
  root the bindfs, purged the real root, of a stopped service and of a live server alike
  (found by hand against a real server);
- a child on the testing profile, its root the same bindfs, was refused by the stamp, but
  only after it had taken the lock and published itself in the root's ``.server.lock``, then
  cleared it: a live server's lock file was left empty (the server named itself there again
  at its next check, warning of "a backup copied into a live data root");
- a child pytest given ``--basetemp=<tmp_path>/bf/x``, where ``bf`` is a bindfs of a live
  root's ``sessions/``: no mark lies above that path, and pytest made ``x/`` in the sessions;
  with the bindfs outside the sandbox and ``--basetemp=<it>/<a session>``, pytest emptied
  the live server's session.

- the same bindfs mounted above the sandbox, in a child's mount namespace, over a tree in
  which production's root lies at the sandbox's path: the child purged it as the sandbox's.

A data root, and what pytest writes, on a filesystem that is not one of this machine's own
(FUSE, NFS, SMB) mounted in a sandbox is now refused, before anything is opened; elsewhere,
a --basetemp there that holds what no run made; and a root under such a mount above the
sandbox where the sandbox is no longer the directory the run made (its entry records it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import forked_pytest
import pytest
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_server_e2e import app_env, run_app, snapshot

from app import config as appconfig
from app import sandbox

pytestmark = pytest.mark.skipif(
    shutil.which("bindfs") is None or not os.access("/dev/fuse", os.R_OK | os.W_OK),
    reason="needs bindfs and /dev/fuse (apt-get install bindfs)",
)


@contextmanager
def bindfs(source: Path, point: Path) -> Iterator[Path]:
    """`source` shown at `point` by a bindfs daemon, unmounted at the end."""
    point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bindfs", str(source), str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["fusermount", "-u", str(point)], check=True)


def _run(argv: list[str], **how: object) -> tuple[int, str]:
    """`argv` run to its end: its exit status and its output on one line."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **how)  # type: ignore[call-overload]
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def _pytest(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """`_run` of a ``python -m pytest`` in `cwd` and `env`, forked where it can be
    (tests/forked_pytest.py: its start is not what a case checks)."""
    done = forked_pytest.run(argv, cwd=cwd, env=env)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


@pytest.fixture
def kept(stopped: tuple[Path, Path]) -> Iterator[tuple[Path, Path]]:  # noqa: F811 - the fixture
    """`stopped`'s settings and production root, which the test must leave as they were."""
    settings, production = stopped
    before = snapshot(production)
    yield settings, production
    assert snapshot(production) == before


def test_a_root_shown_in_the_sandbox_by_a_fuse_daemon_is_refused_before_it_is_opened(
    kept: tuple[Path, Path], tmp_path: Path
) -> None:
    settings, production = kept
    lock = production / ".server.lock"
    touched = lock.stat().st_mtime_ns
    with bindfs(production, tmp_path / "bf") as shown:
        purge = ("data", "purge", "--yes-i-mean-it")
        for profile in ("production", "testing"):  # opted in; stamped another profile's
            env = app_env(shown, profile=profile, APP_SETTINGS_DIR=str(settings))
            done = run_app(*purge, env=env)
            output = " ".join((done.stdout + done.stderr).split())
            assert done.returncode == 78, output
            assert f"open data root {shown}: it lies on a filesystem of type fuse" in output
            assert f"mounted at {shown}, in the sandbox" in output
            assert f"`fusermount -u {shown}`" in output
    assert lock.stat().st_mtime_ns == touched  # not even the lock was taken


#: A shell in a mount namespace of its own.
OWN_MOUNTS = ("unshare", "-m", "--propagation", "private", "sh", "-c")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace of its own")
def test_a_fuse_daemon_mounted_above_the_sandbox_that_shows_a_root_in_its_place(
    kept: tuple[Path, Path], tmp_path: Path
) -> None:
    settings, production = kept
    run = sandbox.current_run()
    assert run is not None and run.sandbox_identity is not None
    # In a mount namespace of the child's own: a tree in which production's root lies at
    # <sandbox>/rt (bound there), shown by bindfs over the sandbox's parent.
    # The settings are bound there too, where the child looks for them.
    tree, above = tmp_path / "tree", run.sandbox.parent
    (tree / run.sandbox.name / "rt").mkdir(parents=True)
    (tree / settings.relative_to(above)).mkdir(parents=True)
    script = (
        f'mount --bind "$1" "$2/{run.sandbox.name}/rt" && mount --bind "$5" '
        f'"$2/{settings.relative_to(above)}" && bindfs -o nonempty "$2" "$3" || exit 9\n'
        '"$4" -m app data purge --yes-i-mean-it; done=$?; fusermount -u "$3"; exit $done'
    )
    env = app_env(run.sandbox / "rt", profile="production", APP_SETTINGS_DIR=str(settings))
    words = map(str, (production, tree, above, sys.executable, settings))
    status, output = _run([*OWN_MOUNTS, script, "sh", *words], env=env)
    assert status == 78, output
    assert "the sandbox is not the directory the run made: a filesystem of type fuse" in output
    assert f"`fusermount -u {above}`" in output


INNER = "def test_nothing(tmp_path):\n    pass\n"
PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:randomly")


def test_pytest_writes_nothing_through_a_fuse_daemon_in_the_sandbox(
    kept: tuple[Path, Path], tmp_path: Path
) -> None:
    settings, production = kept
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "test_inner.py").write_text(INNER)
    session = next((production / "sessions").iterdir()).name
    env = {**os.environ, "APP_SETTINGS_DIR": str(settings)}
    with bindfs(production / "sessions", tmp_path / "bf") as shown:
        for option, refused in (
            (f"--basetemp={shown}/x", f"refusing --basetemp {shown}/x: it lies on"),
            (f"--junitxml={shown}/{session}/report.xml", "--junitxml"),
        ):
            basetemp = [] if option.startswith("--basetemp") else [f"--basetemp={tmp_path}/t"]
            status, output = _pytest([*PYTEST, option, *basetemp], tmp_path / "inner", env)
            assert status == 4, output
            assert refused in output
            assert f"a filesystem of type fuse mounted at {shown}" in output
    # Outside the sandbox, where a home on NFS is a usual place for a --basetemp: pytest
    # would empty a directory there that no run made, a live session's through bindfs.
    outside = Path(tempfile.mkdtemp(prefix="rt49-", dir="/tmp"))
    try:
        with bindfs(production / "sessions", outside / "bf") as shown:
            given = f"--basetemp={shown}/{session}"
            status, output = _pytest([*PYTEST, given], tmp_path / "inner", env)
    finally:
        shutil.rmtree(outside)
    assert status == 4, output
    assert f"refusing --basetemp {shown}/{session}: it holds files that no run" in output


@pytest.mark.filterwarnings("ignore:.* is deprecated please use:DeprecationWarning")
def test_dynaconf_s_old_names_for_its_files_change_no_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """*held*: ``SETTINGS_MODULE`` and ``PROJECT_ROOT`` (dynaconf's old spellings, which no
    ``*_FOR_DYNACONF`` check names) with a production root that only dynaconf can read."""
    settings = tmp_path / "settings"
    settings.mkdir()
    text = (Path(appconfig.__file__).parent.parent / "settings.toml").read_text()
    written = text.replace('data_root = "data/production"', 'data_root = "@format data/prod"')
    assert written != text
    (settings / "settings.toml").write_text(written)
    (tmp_path / "evil.toml").write_text('[production]\ndata_root = "/elsewhere"\n')
    for name in ("SETTINGS_MODULE", "PROJECT_ROOT"):
        monkeypatch.setenv(name, str(tmp_path / "evil.toml"))
    roots = appconfig.configured_roots(environ={"APP_SETTINGS_DIR": str(settings)})
    assert roots["production"] == (settings / "data" / "prod", "settings.toml [production]")
