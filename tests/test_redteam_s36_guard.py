"""Red team 36 on the guard: what a user who did not write it tries next.

Each case is real: pytest runs in a subprocess next to a stopped production root named by
the settings, or the `app` command runs on a real directory. Three broke, each a refusal no
one could act on (a bare traceback, or a command that does not do what it says): a data
root no filesystem can name, a run with one of pytest's own plugins blocked (``-p
no:tmpdir``, ``-p no:logging``), and a profile stamp whose name is not a plain name. The
rest held, and are kept here too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_server_e2e import app_env, run_app


def _run(project: Path, settings: Path, *args: str, **extra: str) -> tuple[int, str]:
    """pytest in `project`, on `settings`, its output on one line."""
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(project), **extra)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.returncode, " ".join((done.stdout + done.stderr).split())


# --- layer 2: a root no filesystem can name ---------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["data", "check"], ["serve", "--port", "0"]])
@pytest.mark.parametrize("shape", ["a-long-name", "a-long-path"])
def test_a_data_root_no_filesystem_can_name_is_refused_naming_the_limit(
    tmp_path: Path, command: list[str], shape: str
) -> None:
    # A name past NAME_MAX or a path past PATH_MAX was taken as any other root: `app status`
    # and `app serve` ended in a bare `OSError: File name too long` traceback, and `app data
    # check` said the directory does not exist.
    if shape == "a-long-name":
        root = tmp_path / ("n" * 300)
        problem = (
            "has a name of 300 bytes ('nnnnnnnnnnnnnnnnnnnnnnnn'...), past the filesystem's "
            "limit of 255 bytes for one name (NAME_MAX): no directory can be made or opened "
            "there, so every command would fail on it; shorten that name"
        )
    else:
        root = tmp_path.joinpath(*["p" * 200] * 25)
        length = len(os.fsencode(root))
        problem = (
            f"is {length} bytes long, past the system's limit of 4095 bytes for a path "
            "(PATH_MAX): no directory can be made or opened there, so every command would "
            "fail on it; point it at a path of a few hundred bytes at most"
        )
    done = run_app(*command, env=app_env(root))
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: profile 'testing': data_root = '"), done.stderr
    assert f"bytes)' (from environment APP_DATA_ROOT): {problem}" in done.stderr, done.stderr
