"""Red team 53 on operations (branch rt-ops26): the command line as an operator runs it, on a
local data root, in the broken states the guides lead to.

What broke:

- ``app doctor``, which the deploy guide runs "before starting anything", said "ok" (exit 0)
  of a selected profile's data root that every start and every command refused: a backup of
  production restored into a staging root (the backups guide's own example: its stamp names
  ``production``), a stamp that is not JSON or is a directory, a ``.server.lock`` that is a
  directory, a ``sessions`` that is a file. On PostgreSQL and object storage it already
  reported what opening would refuse; on a data root it looked at nothing. It now opens the
  root read-only (no lock, nothing created) as every command does, lists the refusal with its
  fix, and exits with its code (`app.dataroot.check_opens`);
- ``app sessions list`` and ``app data check`` on a root whose ``sessions`` (or ``.trash``,
  ``.tmp``) is a file blamed the filesystem: "failed a call with ENOTDIR ... read ``dmesg``,
  ``findmnt``", exit 74, sending the operator to the kernel's log for a file put in the wrong
  place. A read-only open now checks the app's directories as a writer's does, and names the
  file and what to do (78);
- a root whose stamp's ``layout_version`` is later than this release reads, but whose
  ``app_version`` is this release's own (a development build of the next release that still
  calls itself so, or a hand edit), was refused with "Run app 0.1.0 or later on it (`pip
  install 'app>=0.1.0'`)": the release already running. The refusal now names no release when
  the stamp's is not later, and says to run the build that laid it out or restore the stamp.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from test_server_e2e import app_env, run_app

from app import __version__
from app.storage import open_storage


def _copy(app_config: Any, tmp_path: Path) -> Path:
    with open_storage(app_config, writer=True) as store:
        store.create_session("kept")
    root = tmp_path / "copy"
    shutil.copytree(app_config.data_root, root, symlinks=True)
    (root / ".server.lock").unlink()
    return root


def test_doctor_names_what_every_command_refuses_in_the_selected_root(
    app_config: Any, tmp_path: Path
) -> None:
    root = _copy(app_config, tmp_path)
    env = app_env(root)
    ok = run_app("doctor", env=env)
    assert ok.returncode == 0, ok.stderr
    stamp = root / ".app-profile.json"
    # A backup of production restored into this profile's root, as the backups guide warns.
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "profile": "production"}))
    refused = run_app("doctor", env=env)
    assert refused.returncode == 78, refused.stdout
    assert "ok " not in refused.stdout
    assert "belongs to profile 'production'" in refused.stderr
    assert "app data restamp --profile testing --from production (add --yes-i-mean-it" in (
        refused.stderr
    )
    assert run_app("sessions", "list", env=env).returncode == 78  # what doctor foretold
    stamp.write_text("{not json")
    refused = run_app("doctor", env=env)
    assert refused.returncode == 78
    assert "is not valid JSON" in refused.stderr
    stamp.write_text(json.dumps({"profile": "testing"}))
    (root / ".server.lock").mkdir()
    refused = run_app("doctor", env=env)
    assert refused.returncode == 69
    assert ".server.lock: it is a directory, not the lock file the app makes" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_file_where_sessions_belongs_is_named_not_blamed_on_the_filesystem(
    app_config: Any, tmp_path: Path
) -> None:
    root = _copy(app_config, tmp_path)
    shutil.rmtree(root / "sessions")
    (root / "sessions").write_text("not a directory\n")
    env = app_env(root)
    for command in (("sessions", "list"), ("data", "check"), ("doctor",)):
        refused = run_app(*command, env=env)
        assert refused.returncode == 78, (command, refused.stderr)
        assert f"{root / 'sessions'} is not a directory" in refused.stderr
        assert "move it away and let the app create the directory" in refused.stderr
        assert "ENOTDIR" not in refused.stderr and "dmesg" not in refused.stderr


def test_a_later_layout_under_this_release_s_own_version_names_no_release_to_install(
    app_config: Any, tmp_path: Path
) -> None:
    root = _copy(app_config, tmp_path)
    stamp = root / ".app-profile.json"
    stamped = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**stamped, "layout_version": 3}))
    refused = run_app("sessions", "list", env=app_env(root))
    assert refused.returncode == 78, refused.stderr
    said = " ".join(refused.stderr.split())
    assert f"laid out by app {__version__} (layout 3" in said
    assert "pip install" not in said and f"Run app {__version__} or later" not in said
    assert "installing one would not help" in said
    assert "Run the build that laid it out (`app --version` there)" in said
