"""Red team 56 on red team 55's own checks (branch rt-regress1): false refusals and the
commands refusals name.

What broke:

- a data root that is a volume's mount point, owned by root and writable by the service's
  group (Kubernetes' ``fsGroup`` makes it ``root:<group>``, mode 2775; a Docker volume's top
  directory is root's), with the service running as its own user: red team 55's writers-only-
  as-the-root's-owner check refused every writer of the service (``app serve``, ``app data
  check --repair``) with 78, saying root was "the user the app runs as" and telling the
  operator to run the service as root (``sudo -u root ...``);
- a root whose owner has no name here (Kubernetes' ``runAsUser``, OpenShift's random uids):
  the ``chown -R 1234: <root>`` that ``app data check`` (run as root), ``app doctor`` and a
  writer's refusal named is refused by GNU chown ("invalid spec: '1234:'"), and the
  ``sudo -u '#1234'`` sudo refuses unless its sudoers allow unknown ids;
- the hand-over every writer's refusal named for the user that ran it, ``chown -R 0:
  <root>``: GNU chown refuses a number followed by a colon, whatever the number;
- a writer in a user namespace whose map leaves the root's owner out (``unshare -r``, a
  rootless container): the owner showed as 65534, and the refusal named ``sudo -u nobody``;
- a data root in a directory really named with a ``%XX`` or a ``\\`` (``50%41off``): red team
  55's refusal of URL escapes left no way to give it, and named a decoded path that does
  not exist.
- a fixed ``--basetemp`` in which a test had left a directory of mode 000: red team 55's
  refusal of a directory the walk cannot list refused every later run of any project (the
  plugin inactive too), and the ``rm -rf`` it named failed on it.

What changed: the user the app runs as on a root (`app.dataroot.app_user`) is the root's
owner, but for a root owned by root, the owner of what the app made in it (its stamp first);
root's root with nothing of the app's in it yet is left to a first writer that may write it.
A uid with no name is handed a root with ``chown -R uid:gid`` and run with ``setpriv
--reuid= --regid= --clear-groups``; a named one with ``chown -R name:``. An owner that shows
as the overflow id of this process's own user namespace is said to be unmapped. Marks in a
path setting that all lie in directories that exist as written, where what they would
otherwise mean does not, are taken as written. The walks of what pytest deletes look through a
directory of this user's that its mode keeps closed, and give it its mode back.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
from project_copy import PROJECT
from test_redteam_s39_guard import NOBODY as NOBODY_SETPRIV
from test_server_e2e import app_env, run_app

NOBODY = 65534

SERVICE = 1234  # a uid with no name here, as Kubernetes' runAsUser and OpenShift's are
GROUP = 4321  # the volume's group (fsGroup)

#: The service's user, given only the capability to read and search, to reach the run's
#: sandbox and Python; it writes the volume by its group alone.
AS_SERVICE = (
    "setpriv", f"--reuid={SERVICE}", f"--regid={GROUP}", "--clear-groups",
    "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
)  # fmt: skip


def test_a_service_on_a_root_owned_volume_runs_and_what_refusals_name_runs(
    tmp_path: Path,
) -> None:
    # A volume's mount point: root's, group-writable for the service's group, setgid.
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux): the service runs as another user")
    volume = tmp_path / "data"
    volume.mkdir()
    os.chown(volume, 0, GROUP)
    volume.chmod(0o2775)
    first = _as_service(volume, "data", "check", "--repair")
    if "Operation not permitted" in first.stderr and "setpriv" in first.stderr:
        pytest.skip(f"setpriv cannot give the capability here: {first.stderr}")
    # Before the fix: 78, "data root ... belongs to user 'root' (uid 0), the user the app
    # runs as, and this process runs as uid 1234 ... `sudo -u root ...`".
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert (volume / ".app-profile.json").stat().st_uid == SERVICE

    # Root, on the service's volume, is still "another user" (red team 55's case), named
    # with a command that runs for an id with no name.
    before = sorted((p.name, p.lstat().st_uid) for p in volume.iterdir())
    refused = run_app("data", "check", "--repair", env=app_env(volume))
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 78, (refused.stdout, refused.stderr)
    assert (
        f"data root {volume} is root's (as a volume's mount point is), and what the app made "
        f"in it belongs to uid {SERVICE} (no user of that id here), the user the app runs as, "
        "and this process runs as user 'root' (uid 0)"
    ) in said, said
    assert (
        f"`setpriv --reuid={SERVICE} --regid={GROUP} --clear-groups env ENV_FOR_DYNACONF=testing "
    ) in said, said
    # With what chose the root before the command (red team 57: sudo's reset drops it).
    assert f" {sys.executable} -m app data check --repair` as root" in said, said
    assert "sudo -u" not in said
    hand_over = f"chown -R root: {volume}"  # before the fix: `chown -R 0: ...`, invalid
    assert f"give it the root first (`{hand_over}`)" in said, said
    assert sorted((p.name, p.lstat().st_uid) for p in volume.iterdir()) == before

    # Root's leftover in the service's root (an earlier release's `sudo app ...`): named by
    # `app doctor` (and `app data check` run as root) with a chown that runs as written.
    leftover = volume / "audit.jsonl"
    leftover.touch()
    os.chown(leftover, 0, 0)
    refused = run_app("doctor", env=app_env(volume))
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 78, (refused.stdout, refused.stderr)
    assert (
        f"audit.jsonl (owned by user 'root' (uid 0)) is not owned by uid {SERVICE}, who runs "
        "the app (the root itself is root's, as a volume's mount point is)"
    ) in said, said
    command = f"chown -R {SERVICE}:{GROUP} {volume}"
    assert f"(`{command}`)" in said, said
    done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    # Before the fix: `chown -R 1234: <root>`, "chown: invalid spec: '1234:'".
    assert done.returncode == 0, done.stderr
    assert leftover.stat().st_uid == SERVICE

    # Root meant to run the app from now on: the hand-over the writer's refusal named runs.
    done = subprocess.run(hand_over, shell=True, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr  # before: "chown: invalid spec: '0:'"
    repaired = run_app("data", "check", "--repair", env=app_env(volume))
    assert repaired.returncode == 0, (repaired.stdout, repaired.stderr)


def _as_service(root: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AS_SERVICE, sys.executable, "-m", "app", *command],
        env=app_env(root), capture_output=True, text=True, check=False, cwd="/",
    )  # fmt: skip


def test_a_directory_really_named_with_an_escape_or_a_backslash_is_a_root(tmp_path: Path) -> None:
    # Red team 55 refused '%XX' and '\' in a path setting (a spelling of '/' or of a
    # character), but a directory really named so could then not be given at all, and the
    # refusal told the operator to write a path that does not exist.
    for name in ("50%41off", "blue\\green"):
        (tmp_path / name).mkdir()
        root = tmp_path / name / "data"
        done = run_app("config", env=app_env(root))
        # Before the fix: 78, "holds '%41', a URL's escape of 'A' ... write the path with
        # the character itself: '.../50Aoff/data'".
        assert done.returncode == 0, (name, done.stdout, done.stderr)
        assert str(root) in done.stdout
    # A mark in a name the first start would make is still refused (red team 55's case), and
    # so is one whose directory exists beside the one it would mean: said how to mean it.
    (tmp_path / "50Aoff").mkdir()
    for root in (tmp_path / "new%2Fdata", tmp_path / "50%41off" / "data"):
        refused = run_app("config", env=app_env(root))
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 78, (refused.stdout, refused.stderr)
        assert "a URL's escape of" in said, said
        assert (
            "(if a directory really has '%" in said
            and "in its name, make it first: a path whose directories exist as written is "
            "taken, where the path it would otherwise mean does not exist)"
            in said
        ), said


def test_a_root_whose_owner_a_user_namespace_leaves_out_is_not_sent_to_nobody(
    tmp_path: Path,
) -> None:
    # `unshare -r` (a rootless container): the root's real owner is not in the namespace's
    # map and shows as 65534, the overflow id. The refusal named `sudo -u nobody ...`, which
    # can never write it.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare, to give the root to a user the map leaves out")
    root = tmp_path / "data"
    root.mkdir()
    os.chown(root, SERVICE, SERVICE)
    refused = subprocess.run(
        ["unshare", "-r", sys.executable, "-m", "app", "data", "check", "--repair"],
        env=app_env(root), capture_output=True, text=True, check=False,
    )  # fmt: skip
    said = " ".join(refused.stderr.split())
    if refused.returncode != 78 and "unshare" in said:
        pytest.skip(f"no user namespace here: {said}")
    assert refused.returncode == 78, (refused.stdout, refused.stderr)
    assert (
        f"data root {root} shows as owned by uid 65534, the overflow id of this process's user "
        "namespace (`unshare -r`, a rootless container): its real owner, the user the app "
        "runs as, is not mapped into it"
    ) in said, said
    assert "Run the command outside the user namespace as the root's owner" in said
    assert "sudo -u nobody" not in said  # before the fix
    assert list(root.iterdir()) == []


def test_a_basetemp_a_test_left_a_mode_000_directory_in_is_looked_through() -> None:
    # Another project's suite as a user (not root, whom modes do not bind), with a fixed
    # --basetemp, whose test left a directory of mode 000 (a test of a permission error).
    # Red team 55 refused every later run ("cannot be looked through for a data root
    # (Permission denied)"), even with the app's plugin inactive, and the `rm -rf` it named
    # failed on that directory too. pytest makes it removable itself, and so does the look.
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv, to run pytest as a user whom modes bind")
    path = os.pathsep.join([str(PROJECT), sysconfig.get_paths()["purelib"]])
    # Where user 65534 can reach it (this run's tmp_path is root's, mode 0700).
    work = Path(tempfile.mkdtemp(prefix="app-s56-basetemp-", dir="/tmp"))
    try:
        locked = work / "bt" / "test_locked0" / "locked"
        locked.mkdir(parents=True)
        (locked / "kept.txt").write_text("x")
        hidden = work / "hidden"  # beside: a stopped production root behind such a directory
        (hidden / "root").mkdir(parents=True)
        (hidden / "root" / ".app-profile.json").write_text('{"profile": "production"}')
        (work / "test_other.py").write_text("def test_other(tmp_path):\n    pass\n")
        for found in [work, *work.rglob("*")]:
            os.chown(found, NOBODY, NOBODY)
        locked.chmod(0)
        hidden.chmod(0)

        def inner(basetemp: Path, python: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*NOBODY_SETPRIV, "env", "-i", "PATH=/usr/bin:/bin", f"HOME={work}",
                 f"PYTHONPATH={path}", python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 f"--basetemp={basetemp}", str(work / "test_other.py")],
                capture_output=True, text=True, check=False, cwd="/",
            )  # fmt: skip

        # An interpreter user 65534 can run (this one may sit under root's home), tried on
        # the run itself rather than probed first.
        for python in dict.fromkeys(("/usr/bin/python3", sys.executable)):
            done = inner(work / "bt", python)
            if "No module named" not in done.stderr and done.returncode not in (126, 127):
                break
        else:
            pytest.skip(f"no interpreter here that user 65534 can run with the app: {done}")
        # Before the fix: 4, "refusing --basetemp .../bt: it holds .../locked, which cannot be
        # looked through for a data root (Permission denied)".
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert not (work / "bt" / "test_locked0").exists()  # emptied by pytest, as asked
        refused = inner(work, python)
        said = " ".join((refused.stdout + refused.stderr).split())
        assert refused.returncode == 4, said
        assert f"it holds the data root {hidden / 'root'} (it has a profile stamp" in said, said
        assert stat.S_IMODE(hidden.stat().st_mode) == 0  # its mode given back
    finally:
        shutil.rmtree(work)
