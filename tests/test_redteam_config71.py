"""Red team 71 on profiles and roots (branch rt-config71): what a refusal's command resolves.

The ``sudo -u <owner> ...`` that `DataRootOwnerError` names passed ``APP_DATA_ROOT`` on as
written: ``'~/data'`` is expanded with ``HOME``, and sudo gives the owner's, so the command
run as written named another root than the one refused (``/nonexistent/data`` for user
nobody). It now gives the refused root whole, wherever it was set.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from app.dataroot import refuse_other_owner
from app.errors import DataRootOwnerError

NOBODY = 65534


@pytest.mark.parametrize("spelled", ["APP_DATA_ROOT", "settings"])
def test_the_sudo_a_refusal_names_gives_the_refused_root_not_a_home_relative_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelled: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the root is given to another user with chown")
    home = tmp_path / "home"
    root = home / "data"
    root.mkdir(parents=True, mode=0o700)
    os.chown(root, NOBODY, NOBODY)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("APP_SETTINGS_DIR", "~/settings")  # as an env file may give it
    if spelled == "APP_DATA_ROOT":
        monkeypatch.setenv("APP_DATA_ROOT", "~/data")
    else:  # from the settings' `data_root = "~/data"`: no variable named it
        monkeypatch.delenv("APP_DATA_ROOT", raising=False)
    with pytest.raises(DataRootOwnerError) as refused:
        refuse_other_owner(root, "repair the data root")
    words = shlex.split(refused.value.command)
    assert f"APP_DATA_ROOT={root}" in words, words
    assert f"APP_SETTINGS_DIR={home / 'settings'}" in words, words
    assert not any("~" in word for word in words), words
    assert f"Run it as the owner: `sudo -u nobody {refused.value.command}`" in str(refused.value)
