"""Red team 59 on operations (branch rt-ops30): the states an operator meets, tried on real
commands.

What broke:

- a settings file's name that is there but names no regular file: ``.secrets.toml`` linked
  to a secrets volume that is not mounted (``/run/secrets/app.toml``), a directory or a FIFO
  at its name, ``settings.toml`` linked to ``/dev/null``. Each was read as absent
  (``Path.is_file()`` is false for all of them), and every value it sets with it: a
  profile's token from ``.secrets.toml`` became "(not set)", so development's (and
  testing's) server started and answered every request without one, ``app config`` and
  ``app doctor`` said ok; production was refused as "api_token is not set (from built-in
  default) ... set ... api_token in a secrets file", of a secrets file that sets it. Every
  settings file's name is now refused as what it is (``settings_not_a_file``, 78), naming
  the link's missing target (or the directory, the FIFO, the device), why, and the ``rm``
  (``rmdir``) that resolves it; a FIFO is never opened. A sandboxed run still reads no local
  file, whatever is at its name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_server_e2e import app_env, run_app

from app.config_files import read_files
from app.errors import SettingsNotAFileError

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's settings, its committed ``.secrets.toml`` beside it."""
    directory = tmp_path_factory.mktemp("s59ops") / "settings"
    directory.mkdir()
    for name in ("settings.toml", ".secrets.toml"):
        shutil.copy(PROJECT / name, directory / name)
    return directory


def _refused(settings: Path, what: str, *, sandboxed: bool = True) -> None:
    with pytest.raises(SettingsNotAFileError) as refused:
        read_files({"APP_SETTINGS_DIR": str(settings)}, sandboxed=sandboxed)
    assert what in refused.value.message
    assert refused.value.exit_code == 78


def test_a_settings_file_that_is_no_regular_file_is_refused_not_left_out(
    settings: Path, tmp_path: Path
) -> None:
    env = app_env(tmp_path / "root", APP_SETTINGS_DIR=str(settings))
    secrets = settings / ".secrets.toml"
    kept = secrets.read_bytes()
    secrets.unlink()
    missing = tmp_path / "run-secrets" / "app.toml"  # a secrets volume that is not mounted
    secrets.symlink_to(missing)
    try:
        for command in (["config", "--json"],):
            done = run_app(*command, env=env)
            assert done.returncode == 78, (command, done.stdout, done.stderr)
            assert done.stdout == "", command  # no JSON of a profile that lost its token
            message = " ".join(done.stderr.split())
            assert f"the settings file {secrets}: it is a symbolic link to {missing}" in message
            assert "which does not exist" in message
            assert "the values it sets (a token, a data_root) would silently be missing" in message
            assert f"(`rm {secrets}`)" in message
            assert "Traceback" not in done.stderr
        # The class, through the same reader every command's load calls: a FIFO named, never
        # opened (an open would wait for a writer for ever); settings.toml linked to a device,
        # named rather than "no settings.toml found"; a directory at a local file's name,
        # refused where local files are read and left alone in a sandbox, which reads none.
        secrets.unlink()
        os.mkfifo(secrets)
        _refused(settings, "it is a FIFO (named pipe), where a regular file belongs")
        secrets.unlink()
        secrets.write_bytes(kept)
        main = settings / "settings.toml"
        main.rename(settings / "settings.toml.real")
        main.symlink_to("/dev/null")
        try:
            _refused(settings, "it is a symbolic link to /dev/null, which is a character device")
        finally:
            main.unlink()
            (settings / "settings.toml.real").rename(main)
        local = settings / "settings.local.toml"
        local.mkdir()
        try:
            _refused(settings, "it is a directory, where a regular file belongs", sandboxed=False)
            assert read_files({"APP_SETTINGS_DIR": str(settings)}, sandboxed=True).profiles
        finally:
            local.rmdir()
        # The remedy as written: a dangling link removed, the command runs (here the file
        # is put back, as mounting the volume would).
        secrets.unlink()
        secrets.symlink_to(missing)
        missing.parent.mkdir()
        missing.write_bytes(kept)
        done = run_app("config", "--json", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["values"]["api_token"].startswith("****** (set")
    finally:
        secrets.unlink(missing_ok=True)
        secrets.write_bytes(kept)
