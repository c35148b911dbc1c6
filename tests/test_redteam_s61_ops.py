"""Red team 61 on operations (branch rt-ops61): every command and message run as written.

What broke:

- a section of ``.secrets.toml`` (or a local settings file) that names no profile of
  ``settings.toml``: production's token put under ``[prodution]``, or a ``[staging]`` whose
  section in ``settings.toml`` was never added. Every command refuses to load while it is
  there, whatever profile it selects, and rightly; but the refusal was ``unknown_profile``'s
  "known profiles: ... Set ENV_FOR_DYNACONF or --profile to one of them": run as written,
  ``ENV_FOR_DYNACONF=production app serve`` met the same refusal, which named ``staging`` as
  the unknown profile of an operator who had selected ``production``. It is now
  `app.errors.SectionNotAProfileError` (still ``unknown_profile``, 78), naming the file, the
  section, the profile it looks meant as, and the two edits that resolve it (rename the
  section there, or add it to ``settings.toml``), and saying that the selector cannot.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from project_copy import copy_project_settings

from app.cli import cli


def test_a_secrets_section_of_no_profile_is_told_the_edit_that_resolves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[prodution]`` in ``.secrets.toml``: every command, on every profile, was refused as
    an unknown profile "set ENV_FOR_DYNACONF or --profile to one of them", which the operator
    had done. The refusal names the file and the section it looks meant as; the rename it
    gives, made as written, lets the same command run."""
    settings = copy_project_settings(tmp_path / "settings")
    secrets = settings / ".secrets.toml"
    kept = secrets.read_text()
    secrets.write_text(kept + "\n[prodution]\nport = 8099\n")
    monkeypatch.delenv("APP_DATA_ROOT", raising=False)  # testing's, in that directory
    monkeypatch.setenv("ENV_FOR_DYNACONF", "testing")
    monkeypatch.setenv("APP_SETTINGS_DIR", str(settings))

    ran = CliRunner().invoke(cli, ["config"])
    assert ran.exit_code == 78, (ran.exit_code, ran.output)
    message = " ".join(ran.output.split())
    assert f"section [prodution] of {secrets} names no profile (a typo of [production]?)" in (
        message
    ), message
    assert "ENV_FOR_DYNACONF and --profile cannot resolve it" in message, message
    assert "Set ENV_FOR_DYNACONF or --profile to one of them" not in message, message
    assert f"Rename the section in {secrets} to [production]" in message, message

    secrets.write_text(kept + "\n[production]\nport = 8099\n")  # the rename, as told
    ran = CliRunner().invoke(cli, ["config"])
    assert ran.exit_code == 0, (ran.exit_code, ran.output)
    assert os.fspath(settings / "data" / "testing") in ran.output, ran.output
