"""Red team 59 on the last merges, operations side (branch rt-regress6): rt-ops30's refusal of
a settings file's name that names no regular file, tried on the names operators give them.

What broke:

- a settings file's name linked into a directory this user may not search
  (``.secrets.toml -> /run/secrets/app.toml``, ``/run/secrets`` 0700 root, the service run
  as its own user): ``Path.is_file()`` raised ``PermissionError``, and every command said
  "the data root's filesystem refused it ... `lsattr -R` and `ls -lR` on the data root", of
  a data root it never opened; a run under pytest failed the same way on a local file it
  never reads, and ``APP_SETTINGS`` (a habit's name for ``APP_SETTINGS_DIR``) naming such a
  directory failed so before any settings were looked at. Every settings name is now
  ``stat``ed by one function: a name this process may not ``stat`` is
  ``settings_unreadable`` (78), naming where its link leads; a local file under pytest is
  left alone whatever its target; a link whose target is only unreadable is never told
  to be removed (its ``rm`` would have removed the service's own secrets link); a link to a
  file this user may not read names that file, not the link (whose ``ls -ld`` shows a
  link's mode);
- a directory at a settings file's name that is not empty or is a mount point (a Kubernetes
  secret volume mounted at ``.secrets.toml`` without ``subPath``: a directory of ``..data``
  links holding ``.secrets.toml`` itself; a Docker bind mount whose missing source Docker made
  a directory) was told ``rmdir``, which refuses both ("Directory not empty", "Device or
  resource busy"). It is now told what resolves it as written: the ``mv ... && ln -s`` that
  links the file it holds, the ``mv`` that sets a directory aside (nothing deleted), or, for a
  mount point, the ``subPath`` (or a file's source) that mounts the file itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_redteam_s59_ops import settings
from test_server_e2e import app_env

from app.config_files import read_files
from app.errors import SettingsNotAFileError

NOBODY = 65534
__all__ = ["settings"]  # the module fixture: a copy of the project's settings, of this module


def _as_a_user_kept_out(private: Path) -> list[str]:
    """The command prefix of a process `private` keeps out: root without the capabilities that
    override a directory's mode (`private` is then another user's), or this user as it is
    (`private` then has mode 0)."""
    if os.geteuid() != 0:
        private.chmod(0)
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run a child that a 0700 directory keeps out")
    os.chown(private, NOBODY, NOBODY)
    private.chmod(0o700)
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_a_settings_name_linked_where_this_user_may_not_look_is_said_so(
    settings: Path, tmp_path: Path
) -> None:
    private = tmp_path / "run-secrets"  # a secrets volume only the service's user may search
    private.mkdir()
    secrets = settings / ".secrets.toml"
    kept = secrets.read_bytes()
    (private / "app.toml").write_bytes(kept)
    local = settings / "settings.local.toml"
    secrets.unlink()
    secrets.symlink_to(private / "app.toml")
    local.symlink_to(private / "local.toml")
    prefix = _as_a_user_kept_out(private)
    env = app_env(tmp_path / "root", APP_SETTINGS_DIR=str(settings), APP_SETTINGS=str(private))
    script = (
        "import sys; from app.config_files import read_files; from app.errors import AppError\n"
        "print(read_files({'APP_SETTINGS_DIR': sys.argv[1]}, sandboxed=True).paths)\n"
        "try: read_files({'APP_SETTINGS_DIR': sys.argv[2]}, sandboxed=True)\n"
        "except AppError as error: print(error.code, error.message)"
    )
    # Beside it, a settings directory whose secrets link leads to a file it may not read, in a
    # directory it may search: named as the file, since `ls -ld` of the link shows a link.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(settings / "settings.toml", other / "settings.toml")
    unreadable = tmp_path / "app.toml"
    unreadable.write_bytes(kept)
    unreadable.chmod(0)
    if os.geteuid() == 0:
        os.chown(unreadable, NOBODY, NOBODY)
    (other / ".secrets.toml").symlink_to(unreadable)
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "app", "config"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if "setpriv" in done.stderr and "Operation not permitted" in done.stderr:
            pytest.skip(f"setpriv cannot drop the capabilities here: {done.stderr}")
        said = " ".join(done.stderr.split())
        assert done.returncode == 78, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert "data root" not in said, said  # it never opened one
        target = private / "app.toml"
        assert f"cannot read the settings at {target}: permission denied for this process" in said
        assert f"`ls -ld {target}`" in said
        assert "rm " not in said  # the link is the service's own, its target only unreadable
        # Under pytest, a local file is never read, whatever its name leads to: the settings
        # load beside a local file linked where this user may not look.
        secrets.unlink()
        secrets.write_bytes(kept)
        done = subprocess.run(
            [*prefix, sys.executable, "-c", script, str(settings), str(other)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        loaded, said = done.stdout.splitlines()
        assert str(secrets) in loaded
        assert str(local) not in loaded
        assert said.startswith(f"settings_unreadable cannot read the settings at {unreadable}:")
    finally:
        private.chmod(0o700)
        local.unlink()
        secrets.unlink(missing_ok=True)
        secrets.write_bytes(kept)


def _remedy(settings: Path) -> str:
    with pytest.raises(SettingsNotAFileError) as refused:
        read_files({"APP_SETTINGS_DIR": str(settings)}, sandboxed=True)
    message = refused.value.message
    assert "it is a directory, where a regular file belongs" in message
    assert "(`rmdir" not in message  # which refuses a directory that holds anything
    found = re.search(r"\(`([^`]+)`\)", message)
    assert found is not None, message
    return found.group(1)


def test_a_directory_at_a_settings_name_is_told_what_resolves_it_as_written(
    settings: Path,
) -> None:
    secrets = settings / ".secrets.toml"
    kept = secrets.read_bytes()
    secrets.unlink()
    # A Kubernetes secret volume mounted at the file's own name, without subPath: its files
    # are links through `..data` to the dated directory of the secret's current version.
    version = secrets / "..2026_12_06_02_00_00.000000001"
    version.mkdir(parents=True)
    (version / ".secrets.toml").write_bytes(kept)
    (secrets / "..data").symlink_to(version.name)
    (secrets / ".secrets.toml").symlink_to("..data/.secrets.toml")
    aside = settings / ".secrets.toml.dir"
    try:
        command = _remedy(settings)
        assert command.startswith(f"mv {secrets} {aside} && ln -s "), command
        subprocess.run(["sh", "-c", command], check=True)  # as written
        loaded = read_files({"APP_SETTINGS_DIR": str(settings)}, sandboxed=True)
        assert "api_token" in loaded.data[secrets]["testing"]  # through the volume's links
        # A directory holding other files: set aside, nothing deleted, under a name nothing
        # holds (`mv` to the first one's name would move it inside it).
        secrets.unlink()
        secrets.mkdir()
        (secrets / "notes.txt").write_text("kept")
        command = _remedy(settings)
        assert command == f"mv {secrets} {aside}1", command
        subprocess.run(["sh", "-c", command], check=True)
        assert (settings / ".secrets.toml.dir1" / "notes.txt").read_text() == "kept"
        assert read_files({"APP_SETTINGS_DIR": str(settings)}, sandboxed=True).profiles
    finally:
        if secrets.is_symlink() or secrets.is_file():
            secrets.unlink()
        elif secrets.is_dir():
            shutil.rmtree(secrets)
        for name in (aside, settings / ".secrets.toml.dir1"):
            shutil.rmtree(name, ignore_errors=True)
        secrets.write_bytes(kept)
