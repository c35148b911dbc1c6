"""What an operator's hand leaves in a data root, met by the app (red team 22).

A lock file that is a symbolic link (a root assembled by hand, `ln -s` to share one lock
between two roots, a restore that kept a link whose target is gone): every open of the root
and `app status` stopped with a traceback (ELOOP, from the open that refuses to follow it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.config import load
from app.errors import LockFileAliasedError
from app.storage import open_storage


def test_a_lock_file_that_is_a_dangling_symbolic_link_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "app-data"
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    with open_storage(load("testing"), writer=True, kind="tests", wanted="make the root"):
        pass
    lock = root / ".server.lock"
    lock.unlink()
    lock.symlink_to(tmp_path / "gone" / ".server.lock")
    with pytest.raises(LockFileAliasedError) as refused:
        open_storage(load("testing"), writer=True, kind="tests", wanted="start the server")
    assert str(refused.value) == (
        f"refusing to lock {lock}: it is a symbolic link, so a lock taken on it would also "
        "lock (and publish into) another data root's lock file. Remove the link, and let the "
        "app create the data root's own .server.lock"
    )
    status = CliRunner().invoke(cli, ["--profile", "testing", "status"], prog_name="app")
    assert status.exit_code == LockFileAliasedError.exit_code, status.output
    assert f"refusing to lock {lock}: it is a symbolic link" in status.output
    assert not (tmp_path / "gone").exists()
