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
  section there, or add it to ``settings.toml``), and saying that the selector cannot;
- a relative ``APP_SETTINGS_DIR`` (``.``, or ``../shared``) read in a working directory that
  was removed (a deploy replaced the release a shell had ``cd``'d into): every command was
  refused as "the data root's filesystem failed a call with ENOENT", telling the operator to
  mend the filesystem, read ``dmesg`` and run ``app data check --repair`` (exit 74), which met
  the same refusal. It is now ``settings_not_found`` (78), naming the removed directory and
  the ``cd`` into it that, run as written once the directory is there again, resolves it;
- a profile stamp written by hand or by another tool: ``"layout_version": "1"`` (a string)
  was refused as "laid out by app an unknown release (layout 1) ... this reads layout 1 and
  earlier only", told to run ``pip install 'app>=an unknown release'``, a command no pip
  runs; it now says the layout is not a whole number and that no install helps (restore
  the stamp). ``{"profile": "Testing"}``, which every command opens as testing's, was
  ``NOT 'testing': refused`` in ``app status``; it is compared as the commands compare it;
- ``app data restamp --from`` a mistyped name (``--from stagign`` for a root stamped
  ``staging``): the confirmation was asked before the stamp was read, so the command said
  "refusing to re-stamp ... from 'stagign' ... Re-run with --yes-i-mean-it", and re-run as
  told met a second refusal, for the stamp it had not named. On a data root the confirmation
  is now asked of the stamp found, once it is ``--from``'s; a mistyped name is told the
  stamp and the ``--from`` to give first;
- ``ENV_FOR_DYNACONF`` as an environment file left it: ``"production"`` (docker's
  ``--env-file`` keeps quotes) or ``production # live`` (a comment read only at a line's
  start). Refused as an unknown profile, rightly, beside ``production`` in the list of known
  ones, leaving the reader to spot the difference; the refusal now names the quotes or the
  comment, and what to write.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from project_copy import copy_project_settings

from app.cli import cli
from app.config import load


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


def test_a_relative_settings_dir_in_a_removed_directory_is_told_to_cd_back(
    tmp_path: Path,
) -> None:
    """``APP_SETTINGS_DIR=.`` in a shell whose directory a deploy replaced: the command blamed
    the data root's filesystem (74, ``dmesg``, ``app data check --repair``). It names the
    removed directory and its ``cd``, which, run as written by bash once the directory is
    made again, lets the command run."""
    release = tmp_path / "current"
    release.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "APP_DATA_ROOT"}
    env |= {"APP_SETTINGS_DIR": ".", "ENV_FOR_DYNACONF": "testing"}
    app = f"{shlex.quote(sys.executable)} -m app status"
    script = f'cd {shlex.quote(str(release))} && rmdir "$PWD" && {app}'
    ran = subprocess.run(
        ["bash", "-c", script], check=False, env=env, capture_output=True, text=True
    )
    message = " ".join(ran.stderr.split())
    assert ran.returncode == 78, (ran.returncode, message)
    assert f"the working directory, {release}, which was removed" in message, message
    assert "filesystem failed" not in message, message
    (cd,) = re.findall(r"`(cd [^`]*)` enters it again", message)

    copy_project_settings(release)  # the deploy's new release
    # The cd as written, then `.` as the command reads it there (in this process: a second
    # interpreter's start is not what is tested).
    ran = subprocess.run(
        ["bash", "-c", f"{cd} && pwd -P"], check=False, env=env, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    env["APP_SETTINGS_DIR"] = ran.stdout.strip()
    assert load("testing", environ=env).data_root == release / "data" / "testing"


def test_a_stamp_written_by_hand_is_named_as_the_commands_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root's stamp edited by hand: a layout given as text was told a ``pip install`` no pip
    runs, and a profile in another case was "refused" by `app status` alone."""
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    monkeypatch.setenv("ENV_FOR_DYNACONF", "testing")
    stamp = root / ".app-profile.json"

    stamp.write_text('{"profile": "testing", "layout_version": "1"}\n')
    ran = CliRunner().invoke(cli, ["data", "check"])
    message = " ".join(ran.output.split())
    assert ran.exit_code == 78, (ran.exit_code, message)
    assert "(layout '1', which is not a whole number," in message, message
    assert "pip install" not in message, message
    assert "if the stamp was edited, restore it from a backup" in message, message

    stamp.write_text('{"profile": "Testing"}\n')
    ran = CliRunner().invoke(cli, ["data", "check"])
    assert ran.exit_code == 0, ran.output
    ran = CliRunner().invoke(cli, ["status"])
    assert ran.exit_code == 0, ran.output
    assert "stamp: profile Testing, created None\n" in ran.output, ran.output


def test_a_restamp_from_a_mistyped_profile_is_told_the_stamp_before_a_confirmation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--from stagign`` for a root stamped ``staging``: told to confirm a hand-over from a
    profile the root was not stamped with (77), then, confirmed as told, refused again. It
    is told the stamp it found and the command that hands the root over, which, run as
    written, does."""
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    (root / ".app-profile.json").write_text('{"profile": "staging"}\n')
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    monkeypatch.setenv("ENV_FOR_DYNACONF", "testing")

    ran = CliRunner().invoke(cli, ["data", "restamp", "--from", "stagign"])
    message = " ".join(ran.output.split())
    assert ran.exit_code == 78, (ran.exit_code, message)
    assert "belongs to profile 'staging'" in message, message
    (command,) = re.findall(r"(app data restamp [^(]*?) \(add --yes-i-mean-it", message)
    args = [*command.split()[1:], "--yes-i-mean-it"]
    assert args == [
        "data",
        "restamp",
        "--profile",
        "testing",
        "--from",
        "staging",
        "--yes-i-mean-it",
    ]
    ran = CliRunner().invoke(cli, args)
    assert ran.exit_code == 0, ran.output
    assert "is now stamped 'testing' (was 'staging')" in ran.output, ran.output


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ('"production"', "it is 'production' in quotes,"),
        ("production # the live one", "it is 'production' followed by a comment,"),
    ],
)
def test_a_profile_as_an_env_file_leaves_it_names_what_the_file_kept(
    value: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile's name with the quotes or the comment an environment file kept in it: an
    unknown profile beside the very name in the list of known ones, and nothing said."""
    monkeypatch.setenv("ENV_FOR_DYNACONF", value)
    ran = CliRunner().invoke(cli, ["status"])
    message = " ".join(ran.output.split())
    assert ran.exit_code == 78, (ran.exit_code, message)
    assert f"(from ENV_FOR_DYNACONF): {said}" in message, message
