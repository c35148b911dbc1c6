"""Unit tests of `app.config`: strict profiles, checked data roots, validation (issue 2).

Every test builds its own settings directory under ``tmp_path`` and points
``APP_SETTINGS_DIR`` at it, so the project's own settings never matter here. Every data root
lies under ``tmp_path``, which is inside the pytest sandbox, so `load` keeps the roots as
configured instead of mapping them into ``<sandbox>/data/<profile>``; the sandbox rules
themselves are tested at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from unittest import mock

import pytest

from app import config as appconfig
from app import config_files
from app.config import (
    ALLOW_PROFILES_ENV,
    KEYS,
    SANDBOX_ENV,
    SETTINGS_DIR_ENV,
    Config,
    active_sandbox,
    inspect_profiles,
    load,
)
from app.errors import (
    AppError,
    ConfigError,
    ConfigProblems,
    DataRootOverlapError,
    DynaconfSwitchError,
    InvalidSettingError,
    SandboxViolationError,
    SettingsAmbiguousError,
    SettingsCastError,
    SettingsFileMisnamedError,
    SettingsNameError,
    SettingsNotFoundError,
    SettingsSyntaxError,
    UnknownProfileError,
    VariableMisspeltError,
)

KNOWN = ("development", "testing", "production")
DEV_TOKEN = "dev-token-not-secret"
GOOD_TOKEN = "k3Jq9vXz-0aB7cD1eF2gH3iJ4kL5mN6o"  # 32 characters, not a placeholder
DIGITS_TOKEN = "7391402856193740285617385920461738592047"  # random digits: strong enough


def toml_str(value: object) -> str:
    """A TOML basic string (JSON's escaping is a subset TOML accepts)."""
    return json.dumps(str(value))


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What the app's pytest plugin guarantees, repeated so that each test states its own env.

    The plugin publishes the sandbox and forces ENV_FOR_DYNACONF=testing; if it is not active
    (or not finished), emulate its marker so that `load` behaves as it will under the plugin.
    """
    if SANDBOX_ENV not in os.environ:
        monkeypatch.setenv(SANDBOX_ENV, str(tmp_path_factory.getbasetemp().resolve()))
    for name in list(os.environ):
        if (
            name.startswith(("APP_", "DYNACONF_"))
            or (name.endswith("_FOR_DYNACONF") and name != "ENV_FOR_DYNACONF")
            or name == ALLOW_PROFILES_ENV
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENV_FOR_DYNACONF", "testing")


@pytest.fixture
def sandbox() -> Path:
    return Path(os.environ[SANDBOX_ENV]).resolve()


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    """Where each profile of the standard settings keeps its data (all under tmp_path)."""
    base = tmp_path / "roots"
    return {name: base / name for name in KNOWN}


SettingsMaker = Callable[..., Path]


@pytest.fixture
def make_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> SettingsMaker:
    """Write a settings directory and point APP_SETTINGS_DIR at it.

    By default it mirrors the project's files: three profiles with distinct roots, and a
    ``.secrets.toml`` with the development and testing placeholders.
    """

    def make(
        settings: str | None = None,
        secrets: str | None = None,
        *,
        data_roots: Mapping[str, object] | None = None,
        directory: Path | None = None,
    ) -> Path:
        where = directory or tmp_path / "settings"
        where.mkdir(parents=True, exist_ok=True)
        if settings is None:
            chosen = {**roots, **(data_roots or {})}
            settings = '[default]\nhost = "127.0.0.1"\nport = 8000\n\n' + "".join(
                f"[{name}]\ndata_root = {toml_str(chosen[name])}\n"
                + ("protected = true\nport = 8080\n" if name == "production" else "")
                + "\n"
                for name in KNOWN
            )
        if secrets is None:
            secrets = (
                f'[development]\napi_token = "{DEV_TOKEN}"\n\n'
                '[testing]\napi_token = "testing-token-not-secret"\n'
            )
        (where / "settings.toml").write_text(settings)
        if secrets:
            (where / ".secrets.toml").write_text(secrets)
        monkeypatch.setenv(SETTINGS_DIR_ENV, str(where))
        return where

    return make


def allow(monkeypatch: pytest.MonkeyPatch, *profiles: str) -> None:
    """Opt this test into other profiles (what the app_profile marker does)."""
    monkeypatch.setenv(ALLOW_PROFILES_ENV, ",".join(profiles))


def problems_of(error: BaseException) -> tuple[ConfigError, ...]:
    if isinstance(error, ConfigProblems):
        return error.problems
    assert isinstance(error, ConfigError)
    return (error,)


# --- profile selection is strict ------------------------------------------------------------


@pytest.mark.parametrize("typo", ["prod", "Producton", "default", "global"])
def test_a_typo_profile_is_refused_with_the_list_of_known_profiles(
    make_settings: SettingsMaker, typo: str
) -> None:
    make_settings()
    with pytest.raises(UnknownProfileError) as caught:
        load(typo)
    assert caught.value.name == typo
    assert caught.value.known == KNOWN
    assert "known profiles: development, testing, production" in str(caught.value)
    assert caught.value.exit_code == 78


def test_a_typo_in_env_for_dynaconf_is_refused_naming_the_variable(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    monkeypatch.setenv("ENV_FOR_DYNACONF", "prod")
    with pytest.raises(UnknownProfileError) as caught:
        load()
    assert caught.value.source == "ENV_FOR_DYNACONF"
    assert "'prod' (from ENV_FOR_DYNACONF)" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "named", "like"),
    [
        ("\u0440roduction", "U+0440 CYRILLIC SMALL LETTER ER", "production"),
        ("dev\u200belopment", "U+200B ZERO WIDTH SPACE", "development"),
        ("\uff54esting", "U+FF54 FULLWIDTH LATIN SMALL LETTER T", "testing"),
        ("\ufb01x", "U+FB01 LATIN SMALL LIGATURE FI", None),
    ],
)
def test_a_profile_name_that_only_looks_known_is_refused_naming_the_characters(
    make_settings: SettingsMaker,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    named: str,
    like: str | None,
) -> None:
    # With a Cyrillic U+0440 for its 'p', the name prints as 'production': a refusal that only said
    # "unknown profile 'production'; known profiles: ..., production" would leave its
    # reader nothing to fix.
    make_settings()
    monkeypatch.setenv("ENV_FOR_DYNACONF", name)
    with pytest.raises(UnknownProfileError) as caught:
        load()
    message = str(caught.value)
    assert message.startswith(f"unknown profile {name!r} (from ENV_FOR_DYNACONF): ")
    assert f"it is written with {named}, not plain ASCII" in message
    if like:
        assert f", and only looks like {like!r}; known profiles:" in message
    else:
        assert "looks like" not in message
    assert caught.value.exit_code == 78


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_env_for_dynaconf_is_an_unknown_profile_not_the_default_section(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, empty: str
) -> None:
    make_settings()
    monkeypatch.setenv("ENV_FOR_DYNACONF", empty)
    with pytest.raises(UnknownProfileError) as caught:
        load()
    assert caught.value.known == KNOWN
    named = "an empty profile name" if not empty else f"unknown profile {empty!r}"
    assert str(caught.value).startswith(f"{named} (from ENV_FOR_DYNACONF)")
    assert "development, testing, production" in str(caught.value)


def test_an_upper_case_profile_name_is_normalised_to_lower_case(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> None:
    make_settings()
    assert load("TESTING").profile == "testing"
    monkeypatch.setenv("ENV_FOR_DYNACONF", "Testing")
    config = load()
    assert config.profile == "testing"
    assert config.data_root == roots["testing"]


def test_an_upper_case_section_name_is_a_lower_case_profile(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    make_settings(
        f"[Testing]\ndata_root = {toml_str(tmp_path / 't')}\n"
        f"[Other]\ndata_root = {toml_str(tmp_path / 'o')}\n",
        secrets="",
    )
    config = load("testing")
    assert config.profile == "testing"
    assert config.data_root == tmp_path / "t"
    assert set(config.roots) == {"testing", "other"}


def test_the_argument_wins_over_env_for_dynaconf(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> None:
    make_settings()
    allow(monkeypatch, "development", "production")
    monkeypatch.setenv("ENV_FOR_DYNACONF", "production")
    config = load("development")
    assert (config.profile, config.profile_source) == ("development", "load(profile=...)")
    assert config.data_root == roots["development"]


def test_env_for_dynaconf_selects_the_profile_when_no_argument_is_given(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> None:
    make_settings()
    allow(monkeypatch, "development")
    monkeypatch.setenv("ENV_FOR_DYNACONF", "development")
    config = load()
    assert (config.profile, config.profile_source) == ("development", "ENV_FOR_DYNACONF")
    assert config.data_root == roots["development"]


def test_development_is_the_default_profile(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> None:
    make_settings()
    allow(monkeypatch, "development")
    monkeypatch.delenv("ENV_FOR_DYNACONF")
    config = load()
    assert (config.profile, config.profile_source) == ("development", "default")
    assert config.data_root == roots["development"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENV_FOR_DYNACOF", "production"),  # a letter left out
        ("ENV_FOR_DYNACONFS", "production"),
        ("env_for_dynaconf", "production"),  # the shell's names are case-sensitive
        ("ENV_FOR_DYNACONF_", "prod"),  # a near miss is refused whatever its value
        ("DYNACONF_ENV", "production"),  # another tool's habit, naming a profile
        ("APP_ENV", "Testing"),
    ],
)
def test_a_misspelt_profile_variable_is_refused_not_a_silent_default(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    make_settings()
    allow(monkeypatch, "development")
    monkeypatch.delenv("ENV_FOR_DYNACONF")
    monkeypatch.setenv(name, value)
    with pytest.raises(VariableMisspeltError) as caught:
        load()
    meant = value.lower()
    fix = (
        f"export ENV_FOR_DYNACONF={meant}; unset {name}"
        if meant in KNOWN
        else f"set ENV_FOR_DYNACONF to one of development, testing, production and unset {name}"
    )
    assert str(caught.value) == (
        f"environment variable {name}={value!r} looks meant as ENV_FOR_DYNACONF, but only "
        "ENV_FOR_DYNACONF (or --profile) selects the profile; as it is, the app would use the "
        f"default profile 'development'. To use what it names: {fix}. To use the default "
        f"profile 'development': unset {name}"
    )
    assert caught.value.exit_code == 78
    # Selected explicitly, the profile is what was asked for; the stray variable is not read.
    assert load("development").profile == "development"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_ENV", "local"),  # another tool's value, not a profile of this app
        ("APP_ENV", "development"),  # the default: what runs is what it names
        ("DYNACONF_PORT_X", "production"),  # not near ENV_FOR_DYNACONF
        ("ENV_FOR_DJANGO", "production"),
    ],
)
def test_a_variable_that_selects_nothing_different_is_left_alone(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    make_settings()
    allow(monkeypatch, "development")
    monkeypatch.delenv("ENV_FOR_DYNACONF")
    monkeypatch.setenv(name, value)
    assert (load().profile, load().profile_source) == ("development", "default")


def test_a_settings_file_under_a_near_miss_of_its_name_is_refused_not_ignored(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    # `secrets.toml` (no dot), `Settings.local.toml`, `settings_local.toml`: read by nothing,
    # their values were ignored with nothing said, as a misspelt variable's were (red team
    # 71): here production's token, and a root meant to keep development off another one.
    settings = make_settings(secrets="")
    misnamed = settings / "secrets.toml"
    misnamed.write_text('[testing]\napi_token = "testing-token-not-secret"\ndata_root = "x"\n')
    with pytest.raises(SettingsFileMisnamedError) as refused:
        load("testing")
    assert str(refused.value) == (
        f"settings file {misnamed} looks meant as .secrets.toml, which is not there; the app "
        "reads only settings.toml, .secrets.toml, settings.local.toml and .secrets.local.toml, "
        "so as it is, every value in secrets.toml is ignored. To use it: "
        f"`mv {misnamed} {settings / '.secrets.toml'}`. If it is not the app's, move it out of "
        "the settings directory"
    )
    assert refused.value.exit_code == 78
    misnamed.rename(settings / ".secrets.toml")
    config = load("testing")  # as the refusal said: the file is read under its name
    assert (config.data_root, config.sources["data_root"]) == (
        settings / "x",
        ".secrets.toml [testing]",
    )
    # Outside a run (`local`), the local files' near misses too; copies and other names not.
    for name in ("Settings.local.toml", "settings_local.toml", ".secrets.lcoal.toml"):
        (settings / name).write_text("[development]\n")
    for name in ("settings.local.toml~", "settings.local.toml.bak", "settings.prod.toml"):
        (settings / name).write_text("[development]\n")
    # A backup of settings.toml and another tool's file are no near miss of a name: with the
    # `.toml` every name ends in counted as matching, `settings.old.toml` was refused at every
    # load, saying to `mv` it to settings.local.toml, where its old values would override the
    # current ones; a directory named so holds no settings (red team 71, round e).
    for name in ("settings.old.toml", "settings.docs.toml"):
        (settings / name).write_text("[development]\n")
    # Nor are other words a letter or two from `local`: the ratio over whole names refused
    # these at every load too, `settings.global.toml` at 0.90 (red team 71, round j); a
    # separator left out or typed as a space, and a letter left out of a word, are near
    # misses still.
    for name in ("settings.global.toml", "settings.lock.toml", "settings.vocal.toml"):
        (settings / name).write_text("[development]\n")
    for name in ("settings.locale.toml", "secrets.global.toml", "settingslocal.toml"):
        (settings / name).write_text("[development]\n")
    for name in ("settings.locl.toml", "settings local.toml"):
        (settings / name).write_text("[development]\n")
    # Nor are they when a character shows as nothing or as another: the no-break space
    # macOS types for Option-Space, a zero-width space pasted with the name (red team 71,
    # round o: ignored with nothing said).
    for name in ("settings\u00a0local.toml", ".secrets.local.toml\u200b"):
        (settings / name).write_text("[development]\n")
    # Nor when it is no format character but shows as nothing all the same: a combining
    # grapheme joiner, a Hangul filler (red team 71 on regress, round r: passed over as not
    # ending in `.toml`).
    for name in ("settings.local.toml\u034f", "settings.local.toml\u3164"):
        (settings / name).write_text("[development]\n")
    (settings / "secrets.local.toml").mkdir()
    files = config_files.read_files(os.environ, sandboxed=False)
    found = [(e.path.name, e.meant) for e in config_files.misnamed_files(files)]
    assert found == [
        (".secrets.lcoal.toml", ".secrets.local.toml"),
        (".secrets.local.toml\u200b", ".secrets.local.toml"),
        ("Settings.local.toml", "settings.local.toml"),
        ("settings local.toml", "settings.local.toml"),
        ("settings.local.toml\u034f", "settings.local.toml"),
        ("settings.local.toml\u3164", "settings.local.toml"),
        ("settings.locl.toml", "settings.local.toml"),
        ("settings_local.toml", "settings.local.toml"),
        ("settingslocal.toml", "settings.local.toml"),
        ("settings\u00a0local.toml", "settings.local.toml"),
    ]
    hidden = next(e for e in config_files.misnamed_files(files) if "\u200b" in e.path.name)
    word = "\"$(printf -- '.secrets.local.toml\\342\\200\\213')\""
    assert f"so as it is, every value in {word} is ignored. To use it: `mv " in str(hidden)
    # A combining grapheme joiner prints as nothing though `str.isprintable` says it prints:
    # quoted as it was, the name read as the one said not to be there (round r).
    joined = next(e for e in config_files.misnamed_files(files) if "\u034f" in e.path.name)
    word = "\"$(printf -- 'settings.local.toml\\315\\217')\""
    assert f"so as it is, every value in {word} is ignored. To use it: `mv " in str(joined)
    # Two near misses of one name: each told to `mv` itself there, the second `mv` replaced
    # the first file with nothing said; each names the other (red team 71, round o).
    assert str(hidden).endswith(
        f"{settings / '.secrets.local.toml'}` (.secrets.lcoal.toml looks meant as "
        ".secrets.local.toml too: `mv` one only, since the next `mv` would replace it, once "
        "what the others set is copied into it). If it is not the app's, move it out of the "
        "settings directory"
    )
    assert list(config_files.misnamed_files(files, local=False)) == []
    (settings / "settings.local.toml").write_text("[development]\n")
    (settings / ".secrets.local.toml").write_text("[development]\n")
    files = config_files.read_files(os.environ, sandboxed=False)
    assert list(config_files.misnamed_files(files)) == []  # the real ones are there
    # settings.toml itself is required: its refusal names the file meant as it.
    other = tmp_path / "other"
    other.mkdir()
    (other / "SETTINGS.toml").mkdir()  # a directory, listed first: passed over
    (other / "Settings.toml").write_text("[development]\n")
    with pytest.raises(SettingsNotFoundError) as missing:
        config_files.settings_dir({SETTINGS_DIR_ENV: str(other)})
    assert str(missing.value) == (
        f"no settings.toml found: looked in {other} (from APP_SETTINGS_DIR; Settings.toml "
        "there looks meant as settings.toml, which the app reads under that name only: "
        f"`mv {other / 'Settings.toml'} {other / 'settings.toml'}`); set APP_SETTINGS_DIR to "
        "the directory that holds settings.toml"
    )


def test_a_settings_file_with_its_words_in_another_order_is_refused_not_ignored(
    make_settings: SettingsMaker,
) -> None:
    # Azure Functions' `local.settings.json` gives `local.settings.toml`, `.env.local`'s habit
    # `settings.toml.local`: neither a near miss word by word, so development's own root and
    # the secrets in them were ignored with nothing said (red team 72). A test run reads no
    # local file: the check outside one (`local`) is asked directly.
    settings = make_settings()
    misnamed = settings / "local.settings.toml"
    misnamed.write_text('[development]\ndata_root = "mine"\n')
    files = config_files.read_files(os.environ, sandboxed=False)
    (refused,) = config_files.misnamed_files(files)
    assert str(refused) == (
        f"settings file {misnamed} looks meant as settings.local.toml, which is not there; the "
        "app reads only settings.toml, .secrets.toml, settings.local.toml and "
        ".secrets.local.toml, so as it is, every value in local.settings.toml is ignored. To "
        f"use it: `mv {misnamed} {settings / 'settings.local.toml'}`. If it is not the app's, "
        "move it out of the settings directory"
    )
    misnamed.rename(settings / "settings.toml.local")
    # Copies and templates have a word of their own; a directory holds no settings.
    for name in ("local.secrets.toml", "settings.toml.bak", "settings.toml.example"):
        (settings / name).write_text("[development]\n")
    (settings / "toml.secrets").mkdir()
    files = config_files.read_files(os.environ, sandboxed=False)
    found = [(e.path.name, e.meant) for e in config_files.misnamed_files(files)]
    assert found == [
        ("local.secrets.toml", ".secrets.local.toml"),
        ("settings.toml.local", "settings.local.toml"),
    ]
    (settings / "settings.toml.local").rename(settings / "settings.local.toml")
    (settings / "local.secrets.toml").rename(settings / ".secrets.local.toml")
    files = config_files.read_files(os.environ, sandboxed=False)
    assert list(config_files.misnamed_files(files)) == []  # as the refusals said: read now
    assert {p.name for p in files.paths} >= {"settings.local.toml", ".secrets.local.toml"}


def _misnamed_among(settings: Path, names: list[str]) -> dict[str, str]:
    """Each of `names` written in `settings`; those refused as misnamed, each with the name it
    was taken for."""
    for name in names:
        (settings / name).write_text("[development]\n")
    files = config_files.read_files(os.environ, sandboxed=False)
    return {e.path.name: e.meant for e in config_files.misnamed_files(files)}


def test_a_settings_file_with_its_words_in_another_order_and_a_slip_is_refused(
    make_settings: SettingsMaker,
) -> None:
    # Another order and a slip in a word, each refused alone, were ignored together with
    # nothing said: `lcoal.settings.toml` (red team 72 on regress, round f). `.toml` itself
    # is exact, and the copies and templates a project keeps beside its settings (editors',
    # merge tools', packagers') have a word of their own, so are left alone.
    settings = make_settings()
    (settings / ".secrets.toml").unlink()  # each of the three optional files missing
    refused = {
        "lcoal.settings.toml": "settings.local.toml",
        "toml.secerts": ".secrets.toml",
        "local.sercets.toml": ".secrets.local.toml",
    }
    kept = [
        *(f"settings.toml.{end}" for end in ("orig", "rej", "dist", "sample", "template")),
        *(f"settings.toml.{end}" for end in ("old", "new", "save", "lock", "locale", "vocal")),
        *("settings.toml~", ".settings.toml.swp", "#settings.toml#", "settings.local.tmol"),
        *("settings.local.toml.example", "local.settings.toml.bak", "toml.settings.loc"),
    ]
    assert _misnamed_among(settings, [*refused, *kept]) == refused


def test_a_settings_file_with_its_words_in_another_order_run_together_is_refused(
    make_settings: SettingsMaker,
) -> None:
    # Another order with a separator left out was ignored with nothing said, though each
    # was refused alone (`settingslocal.toml`, `local.settings.toml`): the other orders'
    # words run together are compared, no guess at where they part (red team 72 on regress,
    # round k). A copy's name has a word or a character more, so is left alone.
    settings = make_settings()
    (settings / ".secrets.toml").unlink()  # each of the three optional files missing
    refused = {
        "localsettings.toml": "settings.local.toml",
        "Local_Settingstoml": "settings.local.toml",
        "localsecrets.toml": ".secrets.local.toml",
        "tomlsecrets": ".secrets.toml",
    }
    kept = ["localsettings.toml~", "localsettings.toml.bak", "localsetings.toml"]
    assert _misnamed_among(settings, [*refused, *kept]) == refused


# --- data roots: resolved once, absolutely ----------------------------------------------------


def test_app_data_root_overrides_the_selected_root_and_is_reported_as_its_source(
    make_settings: SettingsMaker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    roots: dict[str, Path],
) -> None:
    make_settings()
    override = tmp_path / "override"
    monkeypatch.setenv("APP_DATA_ROOT", str(override))
    config = load("testing")
    assert config.data_root == override
    assert config.sources["data_root"] == "environment APP_DATA_ROOT"
    assert config.values()["data_root"] == str(override)


def test_app_data_root_does_not_apply_to_the_other_profiles(
    make_settings: SettingsMaker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    roots: dict[str, Path],
) -> None:
    # dynaconf's from_env() would apply APP_* to every profile it builds: every root would
    # then be the override, and the overlap check would refuse a perfectly valid setup.
    make_settings()
    override = tmp_path / "override"
    monkeypatch.setenv("APP_DATA_ROOT", str(override))
    monkeypatch.setenv("APP_PORT", "9123")
    config = load("testing")
    assert dict(config.roots) == {**roots, "testing": override}
    report = inspect_profiles("testing")
    assert not report.problems
    for name in ("development", "production"):
        other = report.profiles[name]
        assert other.data_root == roots[name]
        assert other.sources["data_root"] == f"settings.toml [{name}]"
        assert other.values["port"] != 9123
    assert report.profiles["testing"].values["port"] == 9123


def test_app_data_root_onto_another_profiles_root_is_an_overlap(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> None:
    make_settings()
    monkeypatch.setenv("APP_DATA_ROOT", str(roots["production"]))
    with pytest.raises(DataRootOverlapError) as caught:
        load("testing")
    assert {caught.value.first, caught.value.second} == {"testing", "production"}
    assert "environment APP_DATA_ROOT" in str(caught.value)
    assert "settings.toml [production]" in str(caught.value)


def test_a_relative_root_resolves_against_the_settings_directory(
    make_settings: SettingsMaker,
) -> None:
    where = make_settings(data_roots={"testing": "data/testing", "development": "../dev"})
    config = load("testing")
    assert config.data_root == where / "data" / "testing"
    assert config.data_root.is_absolute()
    assert config.roots["development"] == where.parent / "dev"


def test_the_same_root_is_resolved_from_two_different_working_directories(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    where = make_settings(data_roots={"testing": "data/testing"})
    seen = []
    for cwd in (tmp_path / "one", tmp_path / "two" / "deeper"):
        cwd.mkdir(parents=True)
        monkeypatch.chdir(cwd)
        seen.append(load("testing").data_root)
    assert seen == [where / "data" / "testing"] * 2


def test_a_tilde_in_a_root_is_expanded_to_the_home_directory(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    make_settings(data_roots={"testing": "~/app-testing"})
    assert load("testing").data_root == home / "app-testing"


def test_a_tilde_in_app_data_root_is_expanded_too(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    make_settings()
    monkeypatch.setenv("APP_DATA_ROOT", "~/from-env")
    assert load("testing").data_root == tmp_path / "home" / "from-env"


def test_a_root_under_the_home_of_a_user_this_machine_lacks_stops_only_its_own_profile(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Production's `~appsvc/data`, right where production runs (red team 36): on a machine
    # without that user (a developer's, a CI container) every load of every profile, and
    # every test, was refused for it, where `@format {env[NAME]}` naming a variable only the
    # service sets stops production's loads alone (red team 71).
    user = "app-rt71-no-such-user"
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # `~/x` of this shell is expanded as before
    make_settings(data_roots={"production": f"~{user}/data", "development": "~/dev"})
    config = load("testing", serving=False)
    assert "production" not in config.roots
    assert config.roots["development"] == home / "dev"
    refusal = (
        f"profile 'production': data_root = '~{user}/data' (from settings.toml "
        f"[production]): starts with '~{user}', but this system knows no home directory of "
        f"user '{user}' (a user of another machine, or one a container lacks): write the path "
        "out in full where the value is set"
    )
    assert [str(p) for p in inspect_profiles("testing").elsewhere] == [refusal]
    # `app doctor` lists it where production runs, and no longer calls every root distinct.
    from click.testing import CliRunner

    from app.cli import cli

    doctor = CliRunner().invoke(cli, ["doctor"])
    assert doctor.exit_code == 0, doctor.output
    assert (
        "ok for profile testing: the settings are valid and every data root resolved here is "
        "distinct (not compared: the data_root of profile 'production', which cannot be "
        "resolved here)\n"
    ) in doctor.output
    assert f"\n  - {refusal}\n" in doctor.output
    allow(monkeypatch, "production")
    with pytest.raises(InvalidSettingError) as refused:
        load("production", serving=False)
    assert str(refused.value) == refusal
    assert refused.value.exit_code == 78


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("~+", "the current directory, $PWD"),
        ("~-", "the previous current directory, $OLDPWD"),
        ("~1", "an entry of its directory stack (`dirs`)"),
    ],
)
def test_a_shell_s_shorthand_for_a_directory_is_refused_naming_it_in_every_profile(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, written: str, meant: str
) -> None:
    # bash's `~+/data` ($PWD/data), which Python does not expand, was refused as the home of
    # "user '+'" (a user of another machine), naming nothing to fix (red team 71). Text
    # written wrong, not a fact of where the app runs: another profile's is refused too.
    make_settings(data_roots={"production": f"{written}/data"})
    with pytest.raises(InvalidSettingError) as refused:
        load("testing")
    assert str(refused.value) == (
        f"profile 'production': data_root = '{written}/data' (from settings.toml "
        f"[production]): starts with '{written}', a shell's shorthand for {meant}, which only "
        f"a shell expands, and none did here: the app would take it for the home of a user "
        f"'{written[1:]}'; write the path out in full where the value is set"
    )


def test_a_symlinked_root_is_resolved_to_its_target(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    make_settings(data_roots={"testing": tmp_path / "link" / "testing"})
    assert load("testing").data_root == target / "testing"


def test_two_roots_equal_through_a_symlink_are_refused_naming_both_profiles_paths_and_sources(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    real = tmp_path / "shared"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    make_settings(data_roots={"development": real, "production": tmp_path / "alias"})
    with pytest.raises(DataRootOverlapError) as caught:
        load("testing")
    error = caught.value
    assert (error.first, error.second) == ("development", "production")
    assert error.first_root == error.second_root == real
    assert (error.first_source, error.second_source) == (
        "settings.toml [development]",
        "settings.toml [production]",
    )
    message = str(error)
    assert "'development' and 'production' share the same data root" in message
    assert f"development -> {real} (from settings.toml [development])" in message
    assert f"production -> {real} (from settings.toml [production])" in message
    assert error.exit_code == 78


def test_a_root_nested_in_another_profiles_root_is_refused(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    outer = tmp_path / "all-data"
    make_settings(data_roots={"development": outer, "production": outer / "production"})
    with pytest.raises(DataRootOverlapError) as caught:
        load("testing")
    assert "'production''s data root lies inside 'development''s" in str(caught.value)
    assert str(outer / "production") in str(caught.value)


def test_a_root_nested_in_another_through_a_symlink_is_refused(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    (tmp_path / "looks-separate").symlink_to(outer)
    make_settings(
        data_roots={"development": outer, "production": tmp_path / "looks-separate" / "prod"}
    )
    with pytest.raises(DataRootOverlapError) as caught:
        load("testing")
    assert caught.value.second_root == outer / "prod"
    assert {caught.value.first, caught.value.second} == {"development", "production"}


def test_every_overlap_is_reported_not_only_the_first(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    make_settings(data_roots={name: tmp_path / "same" for name in KNOWN})
    with pytest.raises(ConfigProblems) as caught:
        load("testing")
    pairs = {
        (p.first, p.second) for p in caught.value.problems if isinstance(p, DataRootOverlapError)
    }
    assert pairs == {
        ("development", "testing"),
        ("development", "production"),
        ("testing", "production"),
    }


# --- validation -------------------------------------------------------------------------------


def test_production_without_a_token_is_refused_naming_app_api_token(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    allow(monkeypatch, "production")
    with pytest.raises(InvalidSettingError) as caught:
        load("production")
    assert (caught.value.profile, caught.value.key) == ("production", "api_token")
    assert "APP_API_TOKEN" in str(caught.value)
    assert caught.value.exit_code == 78


def test_production_given_the_development_placeholder_token_is_refused(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    allow(monkeypatch, "production")
    monkeypatch.setenv("APP_API_TOKEN", DEV_TOKEN)
    with pytest.raises(InvalidSettingError) as caught:
        load("production")
    message = str(caught.value)
    assert "placeholder" in message
    assert "APP_API_TOKEN" in message
    assert DEV_TOKEN not in message  # the refused token is masked, even a placeholder


def test_production_given_a_short_token_is_refused(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    allow(monkeypatch, "production")
    monkeypatch.setenv("APP_API_TOKEN", "short-token")
    with pytest.raises(InvalidSettingError) as caught:
        load("production")
    assert "shorter than 16 characters" in str(caught.value)
    assert "short-token" not in str(caught.value)


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("DEV-TOKEN-NOT-SECRET", "placeholder"),  # another profile's token, upper-cased
        ("Testing-Token-Not-Secret", "placeholder"),
        ("aaaaaaaaaaaaaaaa", "too easy to guess"),
        ("abcdefghijklmnopqrstuvwxyz", "too easy to guess"),
        ("12345678901234567890", "too easy to guess"),
        (f"  {GOOD_TOKEN}", "whitespace"),
        (f"{GOOD_TOKEN}\n", "whitespace"),
        (" dev-token-not-secret ", "whitespace"),
    ],
)
def test_production_refuses_a_weak_or_padded_token_with_exit_78(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, token: str, problem: str
) -> None:
    make_settings()
    allow(monkeypatch, "production")
    monkeypatch.setenv("APP_API_TOKEN", token)
    with pytest.raises(InvalidSettingError) as caught:
        load("production")
    message = str(caught.value)
    assert (caught.value.key, caught.value.exit_code) == ("api_token", 78)
    assert problem in message
    assert "APP_API_TOKEN" in message
    assert "secrets.token_urlsafe(32)" in message or "remove" in message
    assert token.strip() not in message  # never echoed, even a weak one


@pytest.mark.parametrize(("protected", "refused"), [(True, True), (False, False)])
def test_serving_a_protected_profile_needs_a_strong_token_whatever_its_name(
    make_settings: SettingsMaker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    protected: bool,
    refused: bool,
) -> None:
    where = make_settings()
    text = (where / "settings.toml").read_text()
    staging = toml_str(tmp_path / "roots" / "staging")
    (where / "settings.toml").write_text(
        f"{text}[staging]\ndata_root = {staging}\nprotected = {str(protected).lower()}\n"
    )
    allow(monkeypatch, "staging")
    monkeypatch.setenv("APP_API_TOKEN", "short-token")
    if not refused:
        assert load("staging").api_token == "short-token"
        return
    with pytest.raises(InvalidSettingError) as caught:
        load("staging")
    assert (caught.value.profile, caught.value.key) == ("staging", "api_token")
    assert "shorter than 16 characters" in str(caught.value)
    monkeypatch.delenv("APP_API_TOKEN")
    with pytest.raises(InvalidSettingError) as caught:
        load("staging")
    assert "staging is protected and requires an API token" in str(caught.value)
    assert load("staging", serving=False).protected is True  # maintenance still loads it


def test_a_tokens_estimate_is_made_once_per_process_and_keeps_its_verdict(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # zxcvbn's estimate (about 8 to 12 ms of CPU for a 43-character token) is kept for the
    # same token and placeholders: `app doctor` resolved it twice, each command and replica
    # once (bench/README.md, perf-suite76b). A weak token is refused again, a strong one loads.
    from app.config import _guesses_log10

    make_settings()
    allow(monkeypatch, "production")
    for token, refused in (("abcdefghijklmnopqrstuvwxyz", True), (GOOD_TOKEN, False)):
        monkeypatch.setenv("APP_API_TOKEN", token)
        _guesses_log10.cache_clear()
        for _ in range(2):
            if refused:
                with pytest.raises(InvalidSettingError, match="too easy to guess"):
                    load("production")
            else:
                assert load("production").api_token == token
        info = _guesses_log10.cache_info()
        assert (info.misses, info.hits) == (1, 1), info


def test_production_with_a_real_token_from_the_environment_loads(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> None:
    make_settings()
    allow(monkeypatch, "production")
    monkeypatch.setenv("APP_API_TOKEN", GOOD_TOKEN)
    config = load("production")
    assert config.api_token == GOOD_TOKEN
    assert config.sources["api_token"] == "environment APP_API_TOKEN"
    assert config.protected is True
    assert config.data_root == roots["production"]


def test_production_that_is_not_protected_is_refused(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    allow(monkeypatch, "production")
    monkeypatch.setenv("APP_API_TOKEN", GOOD_TOKEN)
    monkeypatch.setenv("APP_PROTECTED", "false")
    with pytest.raises(InvalidSettingError) as caught:
        load("production")
    assert caught.value.key == "protected"


def test_production_is_protected_where_its_files_do_not_say_so(
    make_settings: SettingsMaker, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings("".join(f"[{name}]\ndata_root = {toml_str(roots[name])}\n" for name in KNOWN))
    allow(monkeypatch, "production")
    monkeypatch.setenv("APP_API_TOKEN", GOOD_TOKEN)
    production = load("production")
    assert production.protected is True
    assert production.sources["protected"] == "built-in default"
    testing = load("testing")
    assert testing.protected is False
    assert testing.protected_profiles == {"production"}


def test_production_set_unprotected_stays_protected_for_maintenance(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Serving refuses it; a maintenance command still needs its confirmation option.
    make_settings()
    allow(monkeypatch, "production")
    monkeypatch.setenv("APP_PROTECTED", "false")
    config = load("production", serving=False)
    assert config.protected is True
    assert "production" in config.protected_profiles


def test_a_toml_syntax_error_names_the_file_and_the_line(make_settings: SettingsMaker) -> None:
    where = make_settings('[default]\nport = 8000\n[testing]\ndata_root = "unterminated\n')
    with pytest.raises(SettingsSyntaxError) as caught:
        load("testing")
    assert caught.value.path == where / "settings.toml"
    assert caught.value.line == 4
    assert f"{where / 'settings.toml'}, line 4: invalid TOML" in str(caught.value)
    assert caught.value.exit_code == 78


def test_a_toml_syntax_error_in_the_secrets_file_names_that_file(
    make_settings: SettingsMaker,
) -> None:
    where = make_settings(secrets="[testing]\napi_token = = 'x'\n")
    with pytest.raises(SettingsSyntaxError) as caught:
        load("testing")
    assert caught.value.path == where / ".secrets.toml"
    assert caught.value.line == 2


def test_sections_or_keys_that_differ_only_in_case_are_refused(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    # Names are not case-sensitive, so [production] and [Production] (or data_root and
    # DATA_ROOT in one section) were one name, and the later silently replaced the other.
    roots = {name: toml_str(tmp_path / name) for name in ("t", "p", "q")}
    where = make_settings(
        f"[testing]\ndata_root = {roots['t']}\n[production]\ndata_root = {roots['p']}\n"
        f"[Production]\ndata_root = {roots['q']}\n",
        secrets="",
    )
    with pytest.raises(SettingsAmbiguousError) as caught:
        load("testing")
    assert str(caught.value) == (
        f"{where / 'settings.toml'}: sections [production] and [Production] are one profile "
        "(names are not case-sensitive), so one would silently replace the other; keep one "
        "spelling, merge what the other holds into it, and run `app doctor`"
    )
    assert caught.value.exit_code == 78
    make_settings(secrets=f"[testing]\ndata_root = {roots['t']}\nDATA_ROOT = {roots['q']}\n")
    with pytest.raises(SettingsAmbiguousError) as caught:
        load("testing")
    assert "keys 'data_root' and 'DATA_ROOT' of [testing] are one setting" in str(caught.value)
    assert caught.value.path == where / ".secrets.toml"


def test_two_profiles_whose_names_differ_only_in_a_hyphen_and_an_underscore_are_refused(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    # [prod-eu] (protected) and [prod_eu] (its staging) were two profiles a typo apart:
    # `ENV_FOR_DYNACONF=prod-eu`, meant for the staging one, selected the protected one and
    # its root with nothing said (red team 71). Refused as names differing in case are.
    roots = {name: toml_str(tmp_path / name) for name in ("t", "p", "q")}
    where = make_settings(
        f"[testing]\ndata_root = {roots['t']}\n[prod-eu]\ndata_root = {roots['p']}\n"
        f"protected = true\n[Prod_EU]\ndata_root = {roots['q']}\n",
        secrets="",
    )
    with pytest.raises(SettingsAmbiguousError) as caught:
        load("testing")
    assert str(caught.value) == (
        f"{where / 'settings.toml'}: sections [prod-eu] and [Prod_EU] name profiles that "
        "differ only in their '-' and '_' (one for the other, or one left out) and in case, "
        "so a name typed for one selects the other (the protection, token and data_root of "
        "another profile than meant); rename one so that the names differ otherwise, and run "
        "`app doctor`"
    )
    assert caught.value.exit_code == 78
    # A separator left out or added is as near a typo: `ENV_FOR_DYNACONF=prod-eu`, typed for a
    # staging [prodeu], selected the protected [prod-eu] and its root; [production_] beside
    # [production] passed for the always-protected profile (red team 71, round e).
    for first, second in (("prod-eu", "prodeu"), ("production", "production_")):
        make_settings(
            f"[testing]\ndata_root = {roots['t']}\n[{first}]\ndata_root = {roots['p']}\n"
            f"[{second}]\ndata_root = {roots['q']}\n",
            secrets="",
        )
        with pytest.raises(SettingsAmbiguousError) as caught:
            load("testing")
        assert f"sections [{first}] and [{second}] name profiles that differ only in" in str(
            caught.value
        )
        # In case as well only where they do ([prod-eu] and [Prod_EU] above: said to differ
        # "only in their '-' and '_'", red team 71, round j).
        assert "left out), so a name typed" in str(caught.value)


@pytest.mark.parametrize(
    ("section", "held"),
    [
        ("pr\u043eduction", "U+043E CYRILLIC SMALL LETTER O"),
        ("\uff50roduction", "U+FF50 FULLWIDTH LATIN SMALL LETTER P"),
        ("production ", "U+0020 SPACE"),
        ("produc\u200btion", "U+200B ZERO WIDTH SPACE"),
    ],
)
def test_a_section_whose_name_only_looks_like_a_profile_is_refused(
    make_settings: SettingsMaker, tmp_path: Path, section: str, held: str
) -> None:
    # The section was a profile of its own: ENV_FOR_DYNACONF=production was unknown, its list
    # of known profiles printed the look-alike, and that name copied from it selected a
    # profile production's protection (keyed on the name) did not cover.
    where = make_settings(
        f"[testing]\ndata_root = {toml_str(tmp_path / 't')}\n"
        f'["{section}"]\ndata_root = {toml_str(tmp_path / "p")}\n',
        secrets="",
    )
    with pytest.raises(SettingsNameError) as caught:
        load("testing")
    assert str(caught.value) == (
        f"{where / 'settings.toml'}: section [{section}] is not a plain profile name (it holds "
        f"{held}, and only looks like [production]): a profile is named with ASCII letters, "
        "digits, '-' and '_' only, so that no name can pass for another; rename the section "
        "to [production], and run `app doctor`"
    )
    assert caught.value.exit_code == 78
    # In a secrets file too, where the look-alike is matched against names every file shares.
    make_settings(
        f"[testing]\ndata_root = {toml_str(tmp_path / 't')}\n",
        secrets='["d\u0435fault"]\napi_token = "x"\n',
    )
    with pytest.raises(SettingsNameError, match=r"only looks like \[default\]"):
        load("testing")


def test_a_value_whose_cast_fails_stops_only_the_profiles_that_take_it(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # dynaconf casts as it loads a file, and every profile's sections are loaded at once:
    # this was a bare DynaconfParseError traceback naming neither the file nor the key, then
    # a refusal of every profile. The value is set aside; the profiles that take it refuse.
    where = make_settings(secrets='[development]\nport = "@int abc"\nlog_level = "debug"\n')
    assert load("testing").profile == "testing"  # another profile loads as before
    allow(monkeypatch, "development")
    with pytest.raises(ConfigError) as caught:
        load("development")
    (refusal,) = [p for p in problems_of(caught.value) if isinstance(p, SettingsCastError)]
    assert str(refusal) == (
        f"{where / '.secrets.toml'}: [development] port = '@int abc' cannot be cast "
        "(Cannot convert 'abc' to integer: invalid literal for int() with base 10: 'abc'); "
        "profile 'development' takes port from there, so it does not load until it is "
        "fixed: correct the value or its @-cast, and run `app doctor`"
    )
    assert refusal.exit_code == 78
    # The rest of the file still loads, as dynaconf loads it: the same file's other key.
    make_settings(secrets='[development]\nport = "@int 8123"\nlog_level = "@str debug"\n')
    config = load("development")
    assert (config.port, config.log_level) == (8123, "debug")


def test_a_cast_that_fails_in_default_stops_every_profile_naming_each(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    allow(monkeypatch, "development")
    where = make_settings(secrets='[default]\npage_size = "@int lots"\n')
    for profile in ("development", "testing"):
        with pytest.raises(ConfigError) as caught:
            load(profile)
        messages = [str(p) for p in problems_of(caught.value) if isinstance(p, SettingsCastError)]
        expected = (
            f"{where / '.secrets.toml'}: [default] page_size = '@int lots' cannot be cast "
            "(Cannot convert 'lots' to integer: invalid literal for int() with base 10: "
            f"'lots'); profile {profile!r} takes page_size from there, so it does not load "
            "until it is fixed: correct the value or its @-cast, and run `app doctor`"
        )
        assert messages == [expected]


def test_an_unknown_key_is_reported_with_a_suggestion(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    make_settings(
        f"[development]\ndata_rot = {toml_str(tmp_path / 'd')}\n"
        f"[testing]\ndata_root = {toml_str(tmp_path / 't')}\n",
        secrets="",
    )
    with pytest.raises(ConfigProblems) as caught:
        load("testing")
    unknown = [p for p in caught.value.problems if p.key == "data_rot"]  # type: ignore[attr-defined]
    assert len(unknown) == 1
    assert "unknown key; did you mean 'data_root'?" in str(unknown[0])
    assert "settings.toml [development]" in str(unknown[0])
    # and the profile that lost its root says so too
    assert "profile 'development': data_root is not set" in str(caught.value)


def test_a_key_outside_any_section_is_reported(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    make_settings(f"port = 1\n[testing]\ndata_root = {toml_str(tmp_path / 't')}\n", secrets="")
    with pytest.raises(InvalidSettingError, match=r"keys must sit in a \[section\]"):
        load("testing")


def test_a_profile_without_a_data_root_is_refused(make_settings: SettingsMaker) -> None:
    make_settings("[default]\nport = 8000\n[testing]\nport = 8001\n", secrets="")
    with pytest.raises(InvalidSettingError) as caught:
        load("testing")
    assert (caught.value.key, caught.value.value) == ("data_root", None)
    assert "APP_DATA_ROOT" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("APP_PORT", "eighty", "port"),
        ("APP_PORT", "70000", "port"),
        ("APP_PAGE_SIZE", "0", "page_size"),
        ("APP_LOG_LEVEL", "loud", "log_level"),
        ("APP_PROTECTED", "'yes'", "protected"),
        ("APP_LOCK_CHECK_SECONDS", "-1", "lock_check_seconds"),
        ("APP_PAGE_MAX_BYTES", "100", "page_max_bytes"),
        ("APP_MAX_HEADER_BYTES", "'big'", "max_header_bytes"),
        ("APP_MAX_HEADER_BYTES", "1073741824", "max_header_bytes"),
        ("APP_REQUEST_IDLE_SECONDS", "0", "request_idle_seconds"),
        ("APP_REQUEST_SECONDS", "'forever'", "request_seconds"),
        ("APP_MAX_UPLOADS_IN_FLIGHT", "0", "max_uploads_in_flight"),
        ("APP_MAX_TRANSFERS_AT_ONCE", "0", "max_transfers_at_once"),
    ],
)
def test_a_value_of_the_wrong_type_or_range_is_refused_naming_key_value_and_source(
    make_settings: SettingsMaker,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    key: str,
) -> None:
    make_settings()
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSettingError) as caught:
        load("testing")
    assert caught.value.key == key
    assert caught.value.source == f"environment {variable}"
    assert f"{key} = " in str(caught.value)


@pytest.mark.parametrize(
    ("written", "named"),
    [
        ("{root}\r", "ends with whitespace, U+000D CARRIAGE RETURN (a file saved with Windows"),
        ("{root} ", "ends with whitespace, U+0020 SPACE (a stray space?)"),
        (" {root}", "starts with whitespace, U+0020 SPACE"),
        ("{root}\u200b", "contains an invisible character at position {at}, U+200B ZERO WIDTH"),
        ("{root}\u00a0x", "contains an invisible character at position {at}, U+00A0 NO-BREAK"),
        ("{root}\u0000x", "contains an invisible character at position {at}, U+0000 NUL"),
    ],
)
def test_a_data_root_with_an_unseen_character_is_refused_naming_it(
    make_settings: SettingsMaker, roots: dict[str, Path], written: str, named: str
) -> None:
    """A root `/srv/app/data ` is a new, empty directory next to the real one that every
    message shows as the real one; a NUL was a bare ValueError traceback from every command."""
    root = str(roots["testing"])
    make_settings(data_roots={"testing": written.format(root=root)})
    with pytest.raises(InvalidSettingError) as caught:
        load("testing")
    message = str(caught.value)
    assert named.format(at=len(root)) in message
    assert "data_root = " in message and "(from settings.toml [testing])" in message
    assert "remove it where the value is set" in message


def test_an_unseen_character_from_the_environment_is_refused_naming_the_variable(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> None:
    make_settings()
    monkeypatch.setenv("APP_DATA_ROOT", f"{roots['testing']}/other\n")
    monkeypatch.setenv("APP_HOST", "127.0.0.1 ")
    with pytest.raises(ConfigProblems) as caught:
        load("testing")
    message = str(caught.value)
    assert "(from environment APP_DATA_ROOT): ends with whitespace, U+000A LINE FEED" in message
    assert "(from environment APP_HOST): ends with whitespace, U+0020 SPACE" in message


def test_a_root_with_letters_beyond_ascii_is_a_root_like_any_other(
    make_settings: SettingsMaker, roots: dict[str, Path]
) -> None:
    make_settings(data_roots={"testing": f"{roots['testing']}-déjà-vu"})
    assert load("testing").data_root == roots["testing"].parent / "testing-déjà-vu"


def test_the_roots_the_plugin_protects_refuse_a_nul_rather_than_skip_the_profile(
    make_settings: SettingsMaker, roots: dict[str, Path]
) -> None:
    """Skipped, a production root with a NUL left production unprotected by name, and a
    testing root with one read as 'no [testing] profile with a data_root'."""
    make_settings(data_roots={"production": f"{roots['production']}\u0000"})
    with pytest.raises(InvalidSettingError) as caught:
        appconfig.configured_roots(None)
    assert (caught.value.profile, caught.value.key) == ("production", "data_root")
    assert "U+0000 NUL" in str(caught.value)


def test_the_values_have_the_right_types(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> None:
    make_settings()
    monkeypatch.setenv("APP_PORT", "9001")
    monkeypatch.setenv("APP_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("APP_LOCK_CHECK_SECONDS", "2")
    monkeypatch.setenv("APP_REQUEST_SECONDS", "90")
    config = load("testing")
    assert isinstance(config.data_root, Path) and config.data_root.is_absolute()
    assert type(config.port) is int and config.port == 9001
    assert type(config.max_upload_bytes) is int
    assert type(config.page_size) is int
    assert type(config.lock_check_seconds) is float and config.lock_check_seconds == 2.0
    assert type(config.request_seconds) is float and config.request_seconds == 90.0
    assert type(config.request_idle_seconds) is float
    for whole in (
        "page_max_bytes",
        "max_header_bytes",
        "max_uploads_in_flight",
        "max_transfers_at_once",
    ):
        assert type(getattr(config, whole)) is int
    assert type(config.protected) is bool
    assert config.log_level == "debug"
    assert isinstance(config.host, str)
    assert isinstance(config.api_token, str)
    assert isinstance(config.settings_dir, Path)


def test_every_value_says_where_it_came_from(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    monkeypatch.setenv("APP_PAGE_SIZE", "10")
    config = load("testing")
    assert set(config.sources) == set(KEYS)
    assert config.sources["host"] == "settings.toml [default]"
    assert config.sources["data_root"] == "settings.toml [testing]"
    assert config.sources["api_token"] == ".secrets.toml [testing]"
    assert config.sources["page_size"] == "environment APP_PAGE_SIZE"
    assert config.sources["log_level"] == "built-in default"


def test_a_missing_settings_directory_names_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(SETTINGS_DIR_ENV, str(empty))
    with pytest.raises(SettingsNotFoundError) as caught:
        load("testing")
    assert caught.value.looked_in == empty
    assert str(empty) in str(caught.value)
    assert "APP_SETTINGS_DIR" in str(caught.value)
    monkeypatch.setenv(SETTINGS_DIR_ENV, str(tmp_path / "does-not-exist"))
    with pytest.raises(SettingsNotFoundError, match="does-not-exist"):
        load("testing")


@pytest.mark.parametrize(
    "switch",
    [
        "FORCE_ENV_FOR_DYNACONF",
        "SETTINGS_FILE_FOR_DYNACONF",
        "INCLUDES_FOR_DYNACONF",
        "PRELOAD_FOR_DYNACONF",
        "ENVVAR_PREFIX_FOR_DYNACONF",
        "ENVIRONMENTS_FOR_DYNACONF",
        "ROOT_PATH_FOR_DYNACONF",
        "SECRETS_FOR_DYNACONF",
        "DEFAULT_ENV_FOR_DYNACONF",
        "MERGE_ENABLED_FOR_DYNACONF",
    ],
)
def test_a_dynaconf_switch_variable_is_refused_by_name(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, switch: str
) -> None:
    make_settings()
    monkeypatch.setenv(switch, str(tmp_path / "elsewhere.toml"))
    with pytest.raises(ConfigError) as caught:
        load("testing")
    # What the switch did to dynaconf may add problems; the switch itself is named first.
    refusal = problems_of(caught.value)[0]
    assert isinstance(refusal, DynaconfSwitchError)
    assert refusal.names == (switch,)
    assert f"unset {switch}" in str(refusal)


@pytest.mark.parametrize(
    ("name", "odd"),
    [
        (
            "\u0415NV_FOR_DYNACONF",
            " (written with U+0415 CYRILLIC CAPITAL LETTER IE, not plain ASCII)",
        ),
        ("ENB_FOR_DYNACONF", ""),
    ],
)
def test_a_switch_that_looks_meant_as_the_profile_s_variable_is_refused_as_that(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, name: str, odd: str
) -> None:
    # A look-alike or typo of ENV_FOR_DYNACONF ends in _FOR_DYNACONF: it was refused as a
    # switch that "would change which files or profile dynaconf loads", with `unset` (for
    # the default profile) the one fix named and no word of the name meant (red team 72).
    make_settings()
    monkeypatch.delenv("ENV_FOR_DYNACONF")
    monkeypatch.setenv(name, "production")
    with pytest.raises(VariableMisspeltError) as caught:
        load()
    # (A name no shell can unset says so after: the next test.)
    assert str(caught.value).startswith(
        f"environment variable {name}='production'{odd} looks meant as ENV_FOR_DYNACONF, but "
        "only ENV_FOR_DYNACONF (or --profile) selects the profile; as it is, the app would "
        "use the default profile 'testing'. To use what it names: export "
        f"ENV_FOR_DYNACONF=production; unset {name}. To use the default profile 'testing': "
        f"unset {name}"
    )
    # With the profile chosen otherwise, it is a switch as before: still refused.
    with pytest.raises(DynaconfSwitchError):
        load("testing")


def test_a_variable_no_shell_can_unset_is_refused_with_a_command_that_removes_it(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `unset` of ENV_FOR_DYNACONF with a Cyrillic first letter, as both refusals said: bash
    # returns 0 and leaves it set, dash refuses the name; `env -u` removes it (red team 72).
    name = "\u0415NV_FOR_DYNACONF"
    make_settings()
    monkeypatch.setenv(name, "production")
    note = (
        f"('{name}' is no shell identifier, so no shell can `unset` it: bash's `unset` leaves "
        "it set and says nothing. Remove it where it is set (an environment file, a unit's "
        f"Environment=, a container's -e), or run the command under `env -u '{name}'`)"
    )
    with pytest.raises(DynaconfSwitchError) as switch:
        load("testing")
    assert str(switch.value).endswith(f"Unset them: unset {name} {note}")
    monkeypatch.delenv("ENV_FOR_DYNACONF")
    with pytest.raises(VariableMisspeltError) as misspelt:
        load()
    assert str(misspelt.value).endswith(f"unset {name} {note}")
    monkeypatch.setenv("ENV_FOR_DYNACONF", "testing")
    monkeypatch.delenv(name)
    monkeypatch.setenv("INCLUDES_FOR_DYNACONF", "x.toml")  # a name a shell can unset
    with pytest.raises(DynaconfSwitchError) as plain:
        load("testing")
    assert str(plain.value).endswith("Unset them: unset INCLUDES_FOR_DYNACONF")


@pytest.mark.filterwarnings("ignore:DYNACONF_.* is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DYNACONF_SILENT_ERRORS", "false"),
        ("DYNACONF_NAMESPACE", "production"),
    ],
)
def test_an_old_spelling_of_a_dynaconf_switch_is_refused_by_name_not_a_crash(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    # dynaconf still honours these (dynaconf.utils.RENAMED_VARS, and the env switcher the app
    # points at a name nobody should set); DYNACONF_SILENT_ERRORS=false made load() crash
    # with a KeyError from inside dynaconf.
    make_settings()
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load("testing")
    refusal = problems_of(caught.value)[0]
    assert isinstance(refusal, DynaconfSwitchError)
    assert refusal.names == (variable,)


def test_a_switch_in_the_process_environment_is_refused_even_if_environ_omits_it(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # dynaconf reads its switches from os.environ whatever mapping load() was given
    make_settings()
    monkeypatch.setenv("INCLUDES_FOR_DYNACONF", str(tmp_path / "more.toml"))
    without = {k: v for k, v in os.environ.items() if k != "INCLUDES_FOR_DYNACONF"}
    with pytest.raises(DynaconfSwitchError, match="INCLUDES_FOR_DYNACONF"):
        load("testing", environ=without)


def test_env_for_dynaconf_is_the_one_dynaconf_variable_that_is_allowed(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    monkeypatch.setenv("ENV_FOR_DYNACONF", "testing")
    assert load().profile == "testing"


def test_dynaconf_data_root_is_refused_with_the_app_name_as_the_fix(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    make_settings()
    monkeypatch.setenv("DYNACONF_DATA_ROOT", str(tmp_path / "everywhere"))
    with pytest.raises(InvalidSettingError) as caught:
        load("testing")
    assert caught.value.key == "DYNACONF_DATA_ROOT"
    assert "Rename it to APP_DATA_ROOT" in str(caught.value)


def test_names_that_only_look_like_the_apps_own_say_which_characters_differ(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Each with a Cyrillic letter for a Latin one: quoted as they are, each reads as the name
    # it is refused for not being.
    cyrillic_a = "U+0430 CYRILLIC SMALL LETTER A, not plain ASCII"
    make_settings()
    monkeypatch.setenv("APP_D\u0410TA_ROOT", str(tmp_path / "lookalike"))
    warning = (
        "environment variable APP_D\u0410TA_ROOT (written with U+0410 CYRILLIC CAPITAL LETTER A, "
        "not plain ASCII) is not an app setting; ignored (did you mean APP_DATA_ROOT?)"
    )
    assert load("testing").warnings == (warning,)

    allow(monkeypatch, "development")
    monkeypatch.delenv("ENV_FOR_DYNACONF")
    monkeypatch.setenv("ENV_FOR_DYN\u0430CONF", "production")
    with pytest.raises(VariableMisspeltError) as refused:
        load()
    assert str(refused.value).startswith(
        f"environment variable ENV_FOR_DYN\u0430CONF='production' (written with {cyrillic_a}) "
        "looks meant as ENV_FOR_DYNACONF, but only ENV_FOR_DYNACONF (or --profile) selects"
    )
    monkeypatch.delenv("ENV_FOR_DYN\u0430CONF")

    make_settings(
        f'[development]\n"d\u0430ta_root" = {toml_str(tmp_path / "d")}\n'
        f"[testing]\ndata_root = {toml_str(tmp_path / 't')}\n",
        secrets="",
    )
    with pytest.raises(ConfigProblems) as caught:
        load("testing")
    unknown = [p for p in caught.value.problems if "unknown key" in str(p)]
    assert len(unknown) == 1
    hint = f"unknown key (written with {cyrillic_a}); did you mean 'data_root'?"
    assert hint in str(unknown[0])


def test_an_unknown_app_variable_is_a_warning_with_a_suggestion(
    make_settings: SettingsMaker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    roots: dict[str, Path],
) -> None:
    make_settings()
    monkeypatch.setenv("APP_DATA_ROT", str(tmp_path / "typo"))
    config = load("testing")
    assert config.data_root == roots["testing"]
    expected = (
        "environment variable APP_DATA_ROT is not an app setting; ignored "
        "(did you mean APP_DATA_ROOT?)"
    )
    assert config.warnings == (expected,)


def test_an_app_variable_named_for_another_profile_is_not_told_to_drop_the_profile(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> None:
    # Red team 70, found by hand: `APP_PRODUCTION__DATA_ROOT` (dynaconf's nested spelling)
    # was told "did you mean APP_DATA_ROOT?", which sets the selected profile's root: followed
    # in that shell, it made testing's (or development's) root the path meant for production.
    make_settings()
    monkeypatch.setenv("APP_PRODUCTION__DATA_ROOT", str(roots["production"]))
    monkeypatch.setenv("APP_Production_Port", "9000")
    monkeypatch.setenv("APP_TESTING__PORT", "9001")
    config = load("testing")
    assert config.data_root == roots["testing"]
    assert config.warnings[-1] == (
        "environment variable APP_TESTING__PORT is not an app setting; ignored (did you mean "
        "APP_PORT? it sets the selected profile's, 'testing')"
    )
    assert config.warnings[:-1] == tuple(
        f"environment variable {name} is not an app setting; ignored (APP_ variables set the "
        "selected profile's keys only, 'testing' here: for profile 'production', select it, "
        f"`ENV_FOR_DYNACONF=production` or `--profile production`, with {env}, or set {key} "
        "in [production] of a settings file)"
        for name, env, key in [
            ("APP_PRODUCTION__DATA_ROOT", "APP_DATA_ROOT", "data_root"),
            ("APP_Production_Port", "APP_PORT", "port"),
        ]
    )


def test_app_settings_dir_is_not_reported_as_an_unknown_variable(
    make_settings: SettingsMaker,
) -> None:
    make_settings()
    assert load("testing").warnings == ()


# --- the value object -------------------------------------------------------------------------


def test_config_is_frozen(make_settings: SettingsMaker, tmp_path: Path) -> None:
    make_settings()
    config = load("testing")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.data_root = tmp_path / "elsewhere"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.sources["data_root"] = "patched"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.roots["production"] = tmp_path  # type: ignore[index]


def test_every_load_builds_a_fresh_configuration(
    make_settings: SettingsMaker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    roots: dict[str, Path],
) -> None:
    make_settings()
    first = load("testing")
    monkeypatch.setenv("APP_DATA_ROOT", str(tmp_path / "second"))
    second = load("testing")
    assert (first.data_root, second.data_root) == (roots["testing"], tmp_path / "second")


def test_load_takes_overrides_from_the_environ_it_is_given_not_from_os_environ(
    make_settings: SettingsMaker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    roots: dict[str, Path],
) -> None:
    make_settings()
    given = {**os.environ, "APP_DATA_ROOT": str(tmp_path / "given"), "APP_PORT": "9002"}
    config = load("testing", environ=given)
    assert (config.data_root, config.port) == (tmp_path / "given", 9002)
    assert config.sources["data_root"] == "environment APP_DATA_ROOT"
    monkeypatch.setenv("APP_DATA_ROOT", str(tmp_path / "process"))
    without = {k: v for k, v in os.environ.items() if k != "APP_DATA_ROOT"}
    config = load("testing", environ=without)
    assert config.data_root == roots["testing"]
    assert config.sources["data_root"] == "settings.toml [testing]"


@pytest.mark.parametrize(
    "value", ["@format {env[HOME]}/data", "@jinja {{ env.HOME }}", " @read_file /etc/hostname"]
)
def test_dynaconf_syntax_in_an_environment_value_is_refused_not_taken_as_a_path(
    make_settings: SettingsMaker, tmp_path: Path, value: str
) -> None:
    # APP_* values are used as they are: `@format {env[HOME]}/data` was a relative data
    # root named after the formula, silently, where a dynaconf user expects it evaluated.
    make_settings()
    with pytest.raises(InvalidSettingError) as refused:
        load("testing", environ={**os.environ, "APP_DATA_ROOT": value})
    token = value.split(maxsplit=1)[0]
    assert str(refused.value) == (
        f"profile 'testing': data_root = {value!r} (from environment APP_DATA_ROOT): is "
        f"dynaconf's `{token}` syntax, which the app does not evaluate in an environment "
        "variable: APP_* values are used as they are, so that what the guard checks is what "
        "is opened. Give the value itself, or write the @-string in settings.toml, where "
        "dynaconf evaluates it"
    )
    # A secret stays masked in the refusal; an @ that is no dynaconf token is a value.
    with pytest.raises(InvalidSettingError, match=r"api_token = '\*\*\*\*\*\* \(set"):
        load("testing", environ={**os.environ, "APP_API_TOKEN": "@format s3cr3t-" + "x" * 30})
    plain = load("testing", environ={**os.environ, "APP_DATA_ROOT": str(tmp_path / "@format")})
    assert plain.data_root == tmp_path / "@format"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        # A cast that fails was a raw DynaconfParseError traceback from every command.
        ("@int 80OO", "cannot be cast (Cannot convert '80OO' to integer: "),
        ("@json {8080", "cannot be cast (Cannot parse as JSON: {8080); "),
        # Tokens that only mean something inside dynaconf's merge, or evaluate later, were
        # taken as objects: the refusal read "port = Del() on 1403..." (or "Merge([1])").
        ("@del", "is dynaconf's `@del` syntax, which the app does not apply to an "),
        ("@merge 1", "is dynaconf's `@merge` syntax, which the app does not apply to an "),
        ("@format {env[PORT]}", "is dynaconf's `@format` syntax, which the app does not "),
    ],
)
def test_a_dynaconf_cast_in_a_typed_environment_value_that_cannot_apply_is_refused(
    make_settings: SettingsMaker, value: str, problem: str
) -> None:
    make_settings()
    with pytest.raises(InvalidSettingError) as refused:
        load("testing", environ={**os.environ, "APP_PORT": value})
    message = str(refused.value)
    assert message.startswith(
        f"profile 'testing': port = {value!r} (from environment APP_PORT): {problem}"
    )
    assert "such as APP_PORT=8000" in message
    # A cast that applies is the value, as dynaconf's environment loader gives it.
    assert load("testing", environ={**os.environ, "APP_PORT": "@int 9005"}).port == 9005


def test_there_is_no_module_level_settings_object() -> None:
    from dynaconf import Dynaconf, LazySettings

    for name, value in vars(appconfig).items():
        assert not isinstance(value, Dynaconf | LazySettings | Config), name
    assert not hasattr(appconfig, "settings")


def test_secrets_are_masked_in_values_and_repr(make_settings: SettingsMaker) -> None:
    make_settings()
    config = load("testing")
    assert config.api_token == "testing-token-not-secret"
    shown = config.values()
    assert shown["api_token"] == "****** (set, 24 characters)"
    assert "testing-token-not-secret" not in json.dumps(shown)
    assert "testing-token-not-secret" not in repr(config)
    assert config.values(mask_secrets=False)["api_token"] == "testing-token-not-secret"


def test_an_unset_secret_is_shown_as_not_set(make_settings: SettingsMaker) -> None:
    make_settings(secrets="")
    assert load("testing").values()["api_token"] == "(not set)"


# --- errors ---------------------------------------------------------------------------------


def _real_errors(make_settings: SettingsMaker, tmp_path: Path) -> list[AppError]:
    make_settings(data_roots={name: tmp_path / "same" for name in KNOWN})
    with pytest.raises(ConfigProblems) as caught:
        load("testing")
    return [caught.value, *caught.value.problems]


def test_errors_survive_a_pickle_round_trip_with_their_attributes(
    make_settings: SettingsMaker, tmp_path: Path
) -> None:
    errors: list[AppError] = [
        *_real_errors(make_settings, tmp_path),
        SettingsNotFoundError(tmp_path, "from APP_SETTINGS_DIR"),
        SettingsSyntaxError(tmp_path / "settings.toml", 3, "Invalid value"),
        UnknownProfileError("prod", KNOWN, "ENV_FOR_DYNACONF"),
        DynaconfSwitchError(["FORCE_ENV_FOR_DYNACONF"]),
        InvalidSettingError("production", "api_token", None, "required", "built-in default"),
        SandboxViolationError("loading profile 'production'", tmp_path, "mark the test"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert state(copy) == state(error)
        assert str(copy) == str(error)
        assert copy.args == error.args
        assert copy.exit_code == error.exit_code == 78


def state(value: object) -> object:
    """An error's type and attributes, recursively (exceptions compare by identity)."""
    if isinstance(value, BaseException):
        return type(value), {k: state(v) for k, v in vars(value).items()}
    if isinstance(value, tuple | list):
        return [state(v) for v in value]
    return value


# --- the sandbox rules (layer 3) --------------------------------------------------------------


def test_under_the_sandbox_another_profile_is_refused_naming_the_marker(
    make_settings: SettingsMaker, sandbox: Path
) -> None:
    make_settings()
    with pytest.raises(SandboxViolationError) as caught:
        load("production")
    message = str(caught.value)
    assert "loading profile 'production'" in message
    assert "@pytest.mark.app_profile('production')" in message
    assert caught.value.sandbox == sandbox


def test_opting_into_one_profile_does_not_allow_another(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    allow(monkeypatch, "development")
    assert load("Development").profile == "development"
    with pytest.raises(SandboxViolationError):
        load("production")


def test_under_the_sandbox_app_data_root_outside_it_is_refused(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, sandbox: Path
) -> None:
    make_settings()
    outside = sandbox.parent / "not-the-sandbox" / "data"
    monkeypatch.setenv("APP_DATA_ROOT", str(outside))
    with pytest.raises(SandboxViolationError) as caught:
        load("testing")
    assert str(outside) in str(caught.value)
    assert "APP_DATA_ROOT" in str(caught.value)


def test_under_the_sandbox_a_file_root_outside_it_is_mapped_inside_and_says_so(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, sandbox: Path
) -> None:
    outside = sandbox.parent / "not-the-sandbox"
    make_settings(data_roots={"testing": outside / "testing", "production": outside / "prod"})
    allow(monkeypatch, "production")
    monkeypatch.setenv("APP_API_TOKEN", GOOD_TOKEN)
    for name, configured in (("testing", outside / "testing"), ("production", outside / "prod")):
        config = load(name)
        assert config.data_root == sandbox / "data" / name
        assert config.sources["data_root"] == (
            f"pytest sandbox (configured: {configured}, settings.toml [{name}])"
        )
        assert config.sandbox == sandbox
        assert all(root.is_relative_to(sandbox) for root in config.roots.values())
    assert not outside.exists()


def test_under_the_sandbox_overlaps_are_checked_on_the_configured_roots(
    make_settings: SettingsMaker, sandbox: Path
) -> None:
    # Mapping would make every root distinct; the files' mistake must still be reported.
    shared = sandbox.parent / "not-the-sandbox" / "shared"
    make_settings(data_roots={"development": shared, "production": shared})
    with pytest.raises(DataRootOverlapError) as caught:
        load("testing")
    assert caught.value.first_root == caught.value.second_root == shared


def test_a_test_that_removes_every_variable_is_still_in_the_run(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    sandbox = active_sandbox()
    with mock.patch.dict(os.environ, {"ENV_FOR_DYNACONF": "development"}, clear=True):
        assert SANDBOX_ENV not in os.environ
        assert active_sandbox() == sandbox
        with pytest.raises(SandboxViolationError) as caught:
            load()
    message = str(caught.value)
    assert "loading profile 'development'; tests run on the 'testing' profile" in message
    assert "belongs to the test run through this process" in message


def test_the_sandbox_variable_narrows_the_run_but_never_widens_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sandbox = active_sandbox()
    assert sandbox is not None
    monkeypatch.setenv(SANDBOX_ENV, "/")
    assert active_sandbox() == sandbox
    monkeypatch.setenv(SANDBOX_ENV, str(tmp_path))
    assert active_sandbox() == tmp_path.resolve()


def test_an_all_digit_token_from_the_environment_stays_a_string(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    allow(monkeypatch, "production")
    monkeypatch.setenv("APP_API_TOKEN", DIGITS_TOKEN)
    monkeypatch.setenv("APP_PORT", "8443")
    config = load("production")
    assert config.api_token == DIGITS_TOKEN
    assert config.port == 8443


def test_under_the_sandbox_app_data_root_may_not_contain_the_mapped_roots(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, sandbox: Path
) -> None:
    # <sandbox>/data holds every mapped root: taking it as testing's root would nest them.
    make_settings(data_roots={"production": sandbox.parent / "not-the-sandbox" / "prod"})
    monkeypatch.setenv("APP_DATA_ROOT", str(sandbox / "data"))
    with pytest.raises(DataRootOverlapError) as caught:
        load("testing")
    assert "'production''s data root lies inside 'testing''s" in str(caught.value)


def test_an_empty_app_settings_dir_is_refused_not_taken_as_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "settings.toml").write_text('[testing]\ndata_root = "x"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SETTINGS_DIR_ENV, "")
    with pytest.raises(SettingsNotFoundError) as caught:
        load("testing")
    assert "APP_SETTINGS_DIR is set but empty" in str(caught.value)


@pytest.mark.parametrize("name", ["APP_SETTING_DIR", "app_settings_dir", "APP_SETTINGS_DIRS"])
def test_a_misspelt_app_settings_dir_is_refused_not_the_project_settings_silently(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    # The operator's settings (production's) are in tmp_path; the misspelt variable named
    # them, and the app would have loaded the project's own settings.toml instead.
    (tmp_path / "settings.toml").write_text('[production]\ndata_root = "/srv/app"\n')
    monkeypatch.delenv(SETTINGS_DIR_ENV, raising=False)
    monkeypatch.setenv(name, str(tmp_path))
    with pytest.raises(VariableMisspeltError) as caught:
        load("testing")
    project = config_files.settings_dir({})
    assert str(caught.value) == (
        f"environment variable {name}={str(tmp_path)!r} looks meant as APP_SETTINGS_DIR, but "
        "only APP_SETTINGS_DIR names the settings directory; as it is, the app would use the "
        f"settings in {project}. To use what it names: export APP_SETTINGS_DIR={tmp_path}; "
        f"unset {name}. To use the settings in {project}: unset {name}"
    )
    assert caught.value.exit_code == 78


def test_another_tools_settings_variable_is_refused_only_if_it_names_settings(
    tmp_path: Path,
) -> None:
    (tmp_path / "settings.toml").write_text("[testing]\n")
    project = config_files.settings_dir({})
    assert config_files.settings_dir({"APP_SETTINGS": str(tmp_path / "none")}) == project
    assert config_files.settings_dir({"APP_CONFIG_DIR": "/etc/other-tool"}) == project
    with pytest.raises(VariableMisspeltError, match="APP_CONFIG_DIR="):
        config_files.settings_dir({"APP_CONFIG_DIR": str(tmp_path)})
    # Set, the right variable wins; the other is not read.
    assert (
        config_files.settings_dir({"APP_SETTINGS_DIR": str(tmp_path), "APP_SETTING_DIR": "/x"})
        == tmp_path.resolve()
    )


def test_a_dynaconf_switch_is_the_only_problem_reported_not_false_overlaps(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # dynaconf would apply FORCE_ENV_FOR_DYNACONF to every profile it builds, making all
    # roots look equal; the switch must be reported alone.
    make_settings()
    monkeypatch.setenv("FORCE_ENV_FOR_DYNACONF", "production")
    with pytest.raises(DynaconfSwitchError) as caught:
        inspect_profiles()
    assert caught.value.names == ("FORCE_ENV_FOR_DYNACONF",)


def test_profiles_resolve_exactly_as_dynaconf_environments_would_layer_them(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]
) -> None:
    # One load with every section visible must give what dynaconf's environments=True gives
    # for each profile: file after file, [default] then the profile then [global].
    from dynaconf import Dynaconf

    settings = (
        '[default]\nport = 8000\nhost = "a"\npage_size = "@int 20"\n'
        f"[development]\ndata_root = {toml_str(roots['development'])}\nport = 1\n"
        f"[testing]\ndata_root = {toml_str(roots['testing'])}\n"
        f"[production]\ndata_root = {toml_str(roots['production'])}\nprotected = true\n"
        '[global]\nhost = "g"\n'
    )
    secrets = '[default]\nport = 2\n[testing]\nhost = "@format {env[HOME]}-t"\npage_size = 7\n'
    where = make_settings(settings, secrets)
    report = inspect_profiles("testing")
    assert report.files == (where / "settings.toml", where / ".secrets.toml")
    for name in KNOWN:
        expected = Dynaconf(
            settings_files=[str(f) for f in report.files],
            environments=True,
            env=name,
            env_switcher="NOT_SET_ANYWHERE",
            envvar_prefix=None,
            load_dotenv=False,
        )
        for key in ("port", "host", "page_size", "protected"):
            want = expected.get(key.upper(), KEYS[key].default)
            assert report.profiles[name].values[key] == want, (name, key)
    testing = report.profiles["testing"]
    assert testing.values["host"] == f"{os.environ['HOME']}-t"
    assert testing.sources["host"] == ".secrets.toml [testing]"
    assert testing.sources["page_size"] == ".secrets.toml [testing]"
    assert testing.sources["port"] == ".secrets.toml [default]"
    assert report.profiles["production"].sources["host"] == "settings.toml [global]"


def test_configured_roots_read_plainly_agree_with_a_full_dynaconf_load(
    make_settings: SettingsMaker, roots: dict[str, Path], tmp_path: Path
) -> None:
    # The pytest plugin reads roots without dynaconf; the layering must be dynaconf's,
    # including a later file's [default] beating an earlier file's profile section.
    make_settings(
        "[default]\nport = 1\n"
        + "".join(f"[{n}]\ndata_root = {toml_str(roots[n])}\n" for n in KNOWN),
        f"[default]\ndata_root = {toml_str(tmp_path / 'from-secrets-default')}\n"
        f"[production]\ndata_root = {toml_str(tmp_path / 'from-secrets-production')}\n",
    )
    plain = appconfig.configured_roots()
    full = inspect_profiles("testing").profiles
    assert {name: root for name, (root, _) in plain.items()} == {
        name: r.data_root for name, r in full.items()
    }
    assert {name: source for name, (_, source) in plain.items()} == {
        name: r.sources["data_root"] for name, r in full.items()
    }
    assert plain["development"] == (tmp_path / "from-secrets-default", ".secrets.toml [default]")


def test_configured_roots_let_dynaconf_read_a_root_written_in_its_syntax(
    make_settings: SettingsMaker, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOTS_BASE", str(roots["production"].parent))
    make_settings(
        "".join(f"[{n}]\ndata_root = {toml_str(roots[n])}\n" for n in ("development", "testing"))
        + '[production]\ndata_root = "@format {env[ROOTS_BASE]}/production"\n'
    )
    assert appconfig.configured_roots()["production"][0] == roots["production"]


def test_a_root_that_reads_the_selected_environment_or_the_working_directory_is_refused(
    make_settings: SettingsMaker,
    roots: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Red team 74: the app reads every section in one load (environments=False), so
    # `{this.ENV_FOR_DYNACONF}` was the shell's text as typed: production's root was
    # <base>/Production for ENV_FOR_DYNACONF=Production (which selects production), a new,
    # empty root that `app serve` stamped and served, and <base>/DEVELOPMENT for `--profile
    # production` where the variable is not set. `{this.current_env}` was 'main' for all.
    # `{env[PWD]}` made a root that moved with `cd`.
    base = roots["production"].parent
    monkeypatch.setenv("ENV_FOR_DYNACONF", "Production")
    for value in (
        f"@format {base}/{{this.ENV_FOR_DYNACONF}}",
        f"@format {base}/{{env[ENV_FOR_DYNACONF]}}",
        f"@format {base}/{{this.current_env}}",
    ):
        make_settings(data_roots={"production": value})
        # A problem of the files, refused in every profile's loads (testing's here).
        with pytest.raises(InvalidSettingError) as refused:
            load("testing")
        read = re.search(r"\{(?:this\.|env\[)(\w+)", value).group(1)  # type: ignore[union-attr]
        assert str(refused.value) == (
            f"profile 'production': data_root = {value!r} (from settings.toml "
            f"[production]): reads {read!r}, dynaconf's own notion of the selected "
            "environment, which is not profile 'production': the app reads every "
            "profile's section in one load and selects the profile itself, so the value "
            "would be resolved from ENV_FOR_DYNACONF as the shell typed it ('Production' "
            "selects production too), from dynaconf's default where it is not set, or as "
            "'main', and name another place for each (another profile's, or a new, empty "
            "one). Write the value out in [production] (`app config --all` shows each "
            "profile's), or give it where the profile runs with APP_DATA_ROOT"
        )
    # The working directory is the same class: the root moved with `cd`. Jinja's
    # `env.get("PWD")` too, which only `env[PWD]` and `env.PWD` were looked for as (red team
    # 74 on regress, round b: the root was <the shell's directory>/data, unrefused).
    for value in ("@format {env[PWD]}/data", '@jinja {{ env.get("PWD") }}/data'):
        make_settings(data_roots={"production": value})
        with pytest.raises(InvalidSettingError) as refused:
            load("testing")
        assert str(refused.value) == (
            f"profile 'production': data_root = {value!r} (from settings.toml [production]): "
            "reads PWD, the working directory of the shell that runs the command, so the "
            "value would move with each `cd` (a new, empty root, or another profile's, "
            "depending on where the command is run); a relative path resolves against the "
            "settings directory, never the working directory. Write the path out in full, or "
            "relative to the settings directory, in [production]"
        )
    # And procfs's spelling of it: /proc/self/cwd/data was /tmp/data run from /tmp.
    make_settings(data_roots={"production": "/proc/self/cwd/data"})
    with pytest.raises(InvalidSettingError) as refused:
        load("testing")
    moves = (
        "of the process that reads it, so the root would move with each `cd` (or `dup2`, or "
        "`chroot`: a new, empty root, or another profile's, depending on where and how the "
        "command runs); a relative path resolves against the settings directory, never the "
        "working directory: write the path out in full where the value is set"
    )
    assert str(refused.value) == (
        "profile 'production': data_root = '/proc/self/cwd/data' (from settings.toml "
        f"[production]): goes through /proc/self/cwd, the working directory {moves}"
    )
    # Reached, not spelled (red team 75): a symbolic link to /proc/self/cwd (or to
    # /proc/self/root) on the way, and /dev/fd/N (a link to /proc/self/fd) of an open
    # directory, were followed at each load to wherever the process was.
    (here := tmp_path / "here").symlink_to("/proc/self/cwd")
    (top := tmp_path / "top").symlink_to("/proc/self/root")
    held = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for value, through, what, link in (
            (f"{here}/data", "/proc/self/cwd", "the working directory", (here, "/proc/self/cwd")),
            (f"{top}/x", "/proc/self/root", "the root directory", (top, "/proc/self/root")),
            (f"/dev/fd/{held}/x", f"/proc/self/fd/{held}", "an open descriptor", None),
        ):
            make_settings(data_roots={"production": value})
            with pytest.raises(InvalidSettingError) as refused:
                load("testing")
            via = (
                f"{link[0]}, which points to {link[1]!r}"
                if link is not None
                else f"/dev/fd, which points to {os.readlink('/dev/fd')!r}"
            )
            assert str(refused.value) == (
                f"profile 'production': data_root = {value!r} (from settings.toml "
                f"[production]): goes through {through} (reached through the symbolic link "
                f"{via}), {what} {moves}"
                + ("" if link is None else ", or point the link at the directory it means")
            )
    finally:
        os.close(held)
    # Another process's working directory, spelled or reached (a shell's /proc/$$/cwd is
    # its $PWD): the root moved with that process's `cd` (red team 75 on regress, round b).
    (moved := tmp_path / "moved").mkdir()
    other = subprocess.Popen(["sleep", "60"], cwd=moved)
    (there := tmp_path / "there").symlink_to(f"/proc/{other.pid}/cwd")
    try:
        for value, reached in (
            (f"/proc/{other.pid}/cwd/data", ""),
            (
                f"{there}/data",
                (
                    f" (reached through the symbolic link {there}, which points to "
                    f"'/proc/{other.pid}/cwd')"
                ),
            ),
        ):
            make_settings(data_roots={"production": value})
            with pytest.raises(InvalidSettingError) as refused:
                load("testing")
            assert str(refused.value) == (
                f"profile 'production': data_root = {value!r} (from settings.toml "
                f"[production]): goes through /proc/{other.pid}/cwd{reached}, the working "
                f"directory of process {other.pid} (sleep, user {config_files._this_user()}), "
                "another process than the one that reads it, so the root would move with each "
                "`cd` of that process (a shell's /proc/$$/cwd is its $PWD), and name nothing, "
                "or another process's directory, once it ends and its pid is used again: write "
                "the path out in full where the value is set"
                + (", or point the link at the directory it means" if reached else "")
            )
    finally:
        other.kill()
        other.wait()


def test_configured_roots_apply_app_data_root_to_the_selected_profile_only(
    make_settings: SettingsMaker, roots: dict[str, Path], tmp_path: Path
) -> None:
    make_settings()
    shell = {**os.environ, "APP_DATA_ROOT": str(tmp_path / "elsewhere")}
    seen = appconfig.configured_roots("Production", shell)
    assert seen["production"] == (tmp_path / "elsewhere", "environment APP_DATA_ROOT")
    assert seen["development"][0] == roots["development"]
    assert appconfig.configured_roots(None, shell)["production"][0] == roots["production"]


def test_the_roots_resolved_and_as_spelled_come_from_one_reading_of_the_files(
    make_settings: SettingsMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plugin's first hook wants both (perf-start71): one reading gives each what
    # `configured_roots` gives, the environment's override and a settings directory reached
    # through a link included, and reads the files once.
    where = make_settings(data_roots={name: f"data/{name}" for name in KNOWN})
    link = tmp_path / "current"
    link.symlink_to(where)
    shell = {**os.environ, "APP_SETTINGS_DIR": str(link), "APP_DATA_ROOT": "moved"}
    reads: list[object] = []
    real_read = config_files.read_files

    def counted(*args: object, **kwargs: object) -> config_files.Files:
        reads.append(args)
        return real_read(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(config_files, "read_files", counted)
    both = appconfig.configured_root_readings("testing", shell)
    assert len(reads) == 1
    assert both == [
        appconfig.configured_roots("testing", shell),
        appconfig.configured_roots("testing", shell, resolved=False),
    ]
    assert both[0]["production"][0] == where / "data" / "production"
    assert both[1]["production"][0] == link / "data" / "production"
    assert both[1]["testing"] == (link / "moved", "environment APP_DATA_ROOT")
    with pytest.raises(UnknownProfileError):
        appconfig.configured_root_readings("tseting", shell)
    # The plugin's own reading, as the shell has it: the same as its two readings were.
    monkeypatch.setenv("APP_SETTINGS_DIR", str(link))
    monkeypatch.setenv("ENV_FOR_DYNACONF", "tseting")  # a typo: the files alone
    from app.testing import guard

    profile, resolved, directory, spelled = guard.shell_roots_and_spellings()
    assert (profile, resolved, directory) == guard.shell_roots()
    assert spelled == guard.shell_roots(resolved=False)[1]
    assert spelled["production"] == link / "data" / "production"


# --- the file values are read once per content (the app_config fixture's cost, issue 11) ---


def test_a_settings_file_rewritten_in_place_with_the_same_size_and_time_is_read_again(
    make_settings: SettingsMaker,
) -> None:
    where = make_settings()
    settings = where / "settings.toml"
    before = settings.stat()
    assert load("testing").port == 8000
    settings.write_text(settings.read_text().replace("port = 8000", "port = 8009", 1))
    os.utime(settings, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = settings.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert load("testing").port == 8009


def test_a_format_value_follows_the_environment_of_every_load(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings(secrets='[testing]\nhost = "@format {env[SERVE_ON]}"\n')
    monkeypatch.setenv("SERVE_ON", "first.example")
    assert load("testing").host == "first.example"
    monkeypatch.setenv("SERVE_ON", "second.example")
    assert load("testing").host == "second.example"


def test_loads_of_the_same_files_share_no_mutable_state(
    make_settings: SettingsMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    make_settings()
    first = load("testing")
    monkeypatch.setenv("APP_DATA_ROOT", str(tmp_path / "own"))
    second = load("testing")
    assert first is not second
    assert first.sources is not second.sources
    assert second.data_root == tmp_path / "own"
    assert first.sources["data_root"] == "settings.toml [testing]"


def test_the_memo_keeps_the_files_read_with_and_without_the_local_ones_apart(
    make_settings: SettingsMaker,
) -> None:
    where = make_settings()
    (where / "settings.local.toml").write_text("[testing]\nport = 8111\n")
    for _ in range(2):  # the second round is answered from the memo
        shell = config_files.file_values(config_files.read_files(os.environ, sandboxed=False), KEYS)
        tests = config_files.file_values(config_files.read_files(os.environ, sandboxed=True), KEYS)
        assert shell["testing"]["port"] == (8111, "settings.local.toml [testing]")
        assert tests["testing"]["port"] == (8000, "settings.toml [default]")


def test_under_the_sandbox_a_local_file_s_value_never_applies(
    make_settings: SettingsMaker,
) -> None:
    # dynaconf adds settings.local.toml next to every file it is given, whatever
    # skip_files says: a section that both files set must still come from settings.toml.
    where = make_settings()
    (where / "settings.local.toml").write_text("[testing]\nport = 8111\n")
    text = (where / "settings.toml").read_text().replace("[testing]", "[testing]\nport = 8222", 1)
    (where / "settings.toml").write_text(text)
    tests = config_files.file_values(config_files.read_files(os.environ, sandboxed=True), KEYS)
    assert tests["testing"]["port"] == (8222, "settings.toml [testing]")
    assert load("testing").port == 8222


def test_secrets_toml_wins_over_settings_local_toml_and_is_named_for_it(
    make_settings: SettingsMaker,
) -> None:
    where = make_settings(secrets='[testing]\nport = 8333\napi_token = "testing-token"\n')
    (where / "settings.local.toml").write_text("[testing]\nport = 8111\n")
    shell = config_files.file_values(config_files.read_files(os.environ, sandboxed=False), KEYS)
    assert shell["testing"]["port"] == (8333, ".secrets.toml [testing]")


def test_a_settings_file_rewritten_between_its_read_and_dynaconf_s_is_read_once(
    make_settings: SettingsMaker, roots: dict[str, Path], tmp_path: Path
) -> None:
    # The load reads each file's bytes (the profiles, the layers, the memo's key) and then
    # handed dynaconf the file's name, which read it again: a rewrite between the two (an
    # editor saving, a deploy's `cp`) gave the checks one file's structure and the other's
    # values, and the memo kept the second file's values under the first's bytes for the
    # rest of the process. Here the rewrite swaps testing's root with production's; written
    # between the two reads (the calls a load makes, one after the other), then undone.
    where = make_settings()
    settings = where / "settings.toml"
    before = settings.read_bytes()
    elsewhere = tmp_path / "elsewhere"
    swapped = before.decode().replace(toml_str(roots["production"]), toml_str(elsewhere))
    swapped = swapped.replace(toml_str(roots["testing"]), toml_str(roots["production"]))
    files = config_files.read_files(os.environ, sandboxed=True)
    settings.write_text(swapped)
    values = config_files.file_values(files, KEYS)
    assert values["testing"]["data_root"] == (str(roots["testing"]), "settings.toml [testing]")
    assert values["production"]["data_root"][0] == str(roots["production"])
    settings.write_bytes(before)  # the rewrite undone: the bytes the memo was keyed on
    config = load("testing")
    assert config.data_root == roots["testing"]
    assert config.roots["production"] == roots["production"]


@pytest.mark.parametrize(
    ("section", "rule"),
    [
        ("environments_for_dynaconf", "may not end in '_for_dynaconf'"),
        ("Includes_For_Dynaconf", "may not end in '_for_dynaconf'"),
        ("dynaconf_include", "may not start with 'dynaconf'"),
        # Red team 69's fourth round, found by reading this test: these two were told that
        # a profile's name "may not end in '_for_dynaconf' or start with 'dynaconf'", a rule
        # they keep, so the refusal named no name to rename them to.
        ("dynaboxify", "may not be dynaboxify, a name dynaconf keeps for itself"),
        ("Project_Root", "may not be project_root, a name dynaconf keeps for itself"),
    ],
)
def test_a_section_named_as_one_of_dynaconf_s_own_settings_is_refused(
    make_settings: SettingsMaker, roots: dict[str, Path], tmp_path: Path, section: str, rule: str
) -> None:
    # Every profile's sections are loaded in one dynaconf load, each a key at its top, where
    # dynaconf reads its own settings. `[environments_for_dynaconf]` made it load the next
    # file per environment: .secrets.toml's production root was credited to that file but
    # held settings.toml's, so the overlap check compared a root production does not use,
    # and testing's APP_DATA_ROOT onto production's real root passed.
    real = tmp_path / "real-production"
    where = make_settings(
        secrets=f'[production]\ndata_root = {toml_str(real)}\n[testing]\napi_token = "t-token"\n'
    )
    with (where / "settings.toml").open("a") as settings:
        settings.write(f'\n[{section}]\ndata_root = "data/x"\n')
    with pytest.raises(SettingsNameError) as caught:
        load("testing", environ={**os.environ, "APP_DATA_ROOT": str(real)})
    assert str(caught.value) == (
        f"{where / 'settings.toml'}: section [{section}] is named as one of dynaconf's own "
        f"settings ({section.upper()}), which dynaconf obeys when it loads every section at "
        "once: it would change how the settings files are read, not configure a profile; "
        f"rename the section (a profile's name {rule}), and run `app doctor`"
    )
    assert caught.value.code == "settings_name_not_plain"
    make_settings(  # settings.toml written again, without the section: the overlap is seen
        secrets=f'[production]\ndata_root = {toml_str(real)}\n[testing]\napi_token = "t-token"\n'
    )
    with pytest.raises(DataRootOverlapError):
        load("testing", environ={**os.environ, "APP_DATA_ROOT": str(real)})


def test_a_section_named_with_dynaconf_s_nested_separator_is_refused_naming_what_it_sets(
    make_settings: SettingsMaker, roots: dict[str, Path]
) -> None:
    # Red team 70, found by reading `_dynaconf_file_values` (each section a key at the top of
    # one dynaconf load): dynaconf stores a key `production__data_root` as data_root of
    # production. `[production__data_root]` made production's root that section's table,
    # refused as "data_root = {'data_root': 'data/x'} (from settings.toml [production])": a
    # value settings.toml's [production] does not hold, and no word of the section to rename.
    where = make_settings()
    with (where / "settings.toml").open("a") as settings:
        settings.write('\n[production__data_root]\ndata_root = "data/x"\n')
    with pytest.raises(SettingsNameError) as caught:
        load("testing")
    assert str(caught.value) == (
        f"{where / 'settings.toml'}: section [production__data_root] holds '__', dynaconf's "
        "separator of nested keys: dynaconf, which loads every section at once, reads it as "
        "key data_root of section [production] and sets that, so it would change "
        "[production]'s data_root, not as a profile of its own; rename the section (a "
        "profile's name may not hold '__'), and run `app doctor`"
    )
    # A key at the top of a file, as the pytest plugin reads the roots (no dynaconf there):
    # it took production's root as settings.toml's, where dynaconf's load set another.
    make_settings(secrets=f"production__data_root = {toml_str(roots['testing'])}\n")
    with pytest.raises(
        SettingsNameError,
        match=r"key production__data_root holds '__'.*"
        r"not as a setting of the app; remove it \(the app's keys sit in a "
        r"\[section\]\)",
    ):
        appconfig.configured_roots()


@pytest.mark.parametrize("unset", ["@del", "@none", "@json null"])
def test_a_root_a_later_file_unsets_is_refused_naming_that_file_not_nowhere(
    make_settings: SettingsMaker, unset: str
) -> None:
    # Red team 70, found by hand with `app config --all` on a settings.local.toml of
    # `[production] data_root = "@del"`: the table credited production's missing root to
    # that file, but every command was refused with "data_root is not set (from nowhere): is
    # required: set data_root in [production] of settings.toml", where it is set, so the
    # fix named was already made and the line that undid it went unnamed.
    make_settings(
        secrets=f'[production]\ndata_root = "{unset}"\n[testing]\napi_token = "t-token"\n'
    )
    with pytest.raises(InvalidSettingError) as caught:
        load("testing")
    assert str(caught.value) == (
        "profile 'production': data_root is not set (from .secrets.toml [production]): is "
        f"required, and {unset!r} there leaves it with no value (dynaconf's syntax: `@del` "
        "and `@none` remove the value an earlier file or section gives); remove that line "
        "from .secrets.toml [production], or give data_root a path there, for the local "
        "backend (or database_url, blob_url, s3_endpoint_url and the S3 credentials for "
        "PostgreSQL and object storage)"
    )


def test_every_setting_of_the_installed_dynaconf_is_a_name_no_section_may_take() -> None:
    from dynaconf import default_settings

    names = [name for name in vars(default_settings) if name.isupper()]
    assert len(names) > 50
    assert [name for name in names if not config_files.dynaconf_s_own(name)] == []
    assert not any(config_files.dynaconf_s_own(n) for n in ("production", "dynamic", "conf"))


def test_a_settings_file_replaced_by_a_fifo_as_it_is_read_is_refused_not_waited_on(
    make_settings: SettingsMaker,
) -> None:
    # `read_files` looks at each name (a FIFO there is refused, red team 59) and then reads
    # it: a name replaced in between (a link switched, `mkfifo`) was read as a FIFO, which
    # waits for a writer for ever. The read is made here on the name as it is after the
    # swap; a writer thread stands by, so that the read without the fix ends (it read the
    # writer's TOML as settings) rather than hanging.
    import threading

    where = make_settings()
    secrets = where / ".secrets.toml"
    secrets.unlink()
    os.mkfifo(secrets)
    wrote: list[BaseException] = []

    def writer() -> None:
        try:
            with secrets.open("w") as fifo:  # waits for a reader
                fifo.write('[testing]\napi_token = "from-a-fifo"\n')
        except OSError as error:  # the reader closed first: nothing to check here
            wrote.append(error)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        with pytest.raises(config_files.SettingsNotAFileError) as caught:
            config_files._read_toml(secrets)
    finally:
        # A reader held open until the writer is done: it opens, writes and closes whenever
        # it gets there (it may not have reached its `open` yet).
        reader = os.open(secrets, os.O_RDONLY | os.O_NONBLOCK)
        thread.join()
        os.close(reader)
    assert str(caught.value) == (
        f"cannot read the settings file {secrets}: it is a FIFO (named pipe), where a regular "
        "file belongs; left out, the values it sets (a token, a data_root) would silently be "
        f"missing, so nothing was opened or changed. Put the settings file there, or remove "
        f"it (`rm {secrets}`) if none belongs, then run `app doctor`"
    )


_TERMINAL_SWAPPED_IN = """
import os
from pathlib import Path
from app import config_files

os.setsid()  # a session leader with no controlling terminal, as a service's server is
main, other = os.openpty()  # glibc opens its side with O_NOCTTY
name = os.ttyname(other)
try:
    config_files._read_bytes(Path(name))  # the settings file's name, switched to a terminal
except config_files.SettingsNotAFileError as error:
    print(error)
try:
    os.close(os.open("/dev/tty", os.O_RDONLY))
except OSError as error:
    print("no controlling terminal:", error.strerror)
else:
    print("controlling terminal:", name)
"""


def test_a_settings_file_switched_to_a_terminal_does_not_become_the_controlling_one() -> None:
    # Red team 69's fourth round, found by reading `_read_bytes`: the name switched to a
    # terminal after `read_files` looked (a link to /dev/pts/N) was refused, but its open
    # without O_NOCTTY had already made that terminal the controlling one of a session
    # leader that had none (`app serve` as a service): a hang-up of it, or a ^C typed
    # there, then stopped the server. A process of its own: it makes a session.
    import subprocess
    import sys

    if not Path("/dev/ptmx").exists():
        pytest.skip("no pseudo-terminals here")
    ran = subprocess.run(
        [sys.executable, "-c", _TERMINAL_SWAPPED_IN], capture_output=True, text=True, check=True
    )
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("cannot read the settings file /dev/pts/"), ran.stdout
    assert ": it is a character device, where a regular file belongs" in lines[0]
    assert lines[1:] == ["no controlling terminal: No such device or address"], ran.stdout


def test_a_settings_file_removed_as_it_is_read_is_refused_naming_it(
    make_settings: SettingsMaker,
) -> None:
    where = make_settings()
    secrets = where / ".secrets.toml"
    secrets.unlink()  # after `read_files` found it: the read is made on the name as it is now
    with pytest.raises(config_files.SettingsNotAFileError) as caught:
        config_files._read_toml(secrets)
    assert str(caught.value) == (
        f"cannot read the settings file {secrets}: it is gone (No such file or directory): it "
        "was removed or replaced as it was read, where a regular file belongs; left out, the "
        "values it sets (a token, a data_root) would silently be missing, so nothing was "
        "opened or changed. Run the command again once the file is in place, then `app doctor`"
    )


def test_a_key_outside_any_section_named_as_a_dynaconf_setting_is_refused_to_the_plugin_too(
    make_settings: SettingsMaker, roots: dict[str, Path], tmp_path: Path
) -> None:
    # Outside any section, `load` refused it as a key with no section, but only after the
    # load; `configured_roots`, which the plugin reads to know every profile's root, took
    # it, and where a root is in dynaconf's syntax (read by dynaconf) it named settings.toml's
    # production root as the secrets file's, which sets another.
    real = tmp_path / "real-production"
    where = make_settings(
        secrets=f'[production]\ndata_root = {toml_str(real)}\n[testing]\napi_token = "t-token"\n',
        data_roots={"testing": f"@format {roots['testing']}"},
    )
    settings = where / "settings.toml"
    settings.write_text("environments_for_dynaconf = true\n" + settings.read_text())
    with pytest.raises(SettingsNameError) as caught:
        appconfig.configured_roots()
    assert str(caught.value) == (
        f"{settings}: key environments_for_dynaconf is named as one of dynaconf's own settings "
        "(ENVIRONMENTS_FOR_DYNACONF), which dynaconf obeys when it loads every section at once: "
        "it would change how the settings files are read, not configure a profile; remove it "
        "(the app's keys sit in a [section]; dynaconf's switches are not settings of the app), "
        "and run `app doctor`"
    )
