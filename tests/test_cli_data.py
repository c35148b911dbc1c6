"""The data commands in process (click's CliRunner): sessions, purge, empty-trash, restamp."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.config import Config
from app.dataroot import open_root
from app.store import Store


@pytest.fixture
def seeded(app_config: Config) -> Iterator[tuple[str, str]]:
    """Two sessions on the test's root, the second deleted; the root is left unlocked."""
    with open_root(app_config, kind="tests") as root:
        store = Store(root)
        kept = store.create_session("kept")["id"]
        store.put_file(kept, "a.txt", b"data")
        gone = store.create_session("gone")["id"]
        store.delete_session(gone)
    yield kept, gone


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def audit(config: Config) -> list[dict[str, object]]:
    lines = (config.data_root / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_sessions_list_shows_the_live_sessions_and_trash_the_deleted(
    seeded: tuple[str, str],
) -> None:
    kept, gone = seeded
    code, out, _ = invoke("sessions", "list")
    assert code == 0
    assert kept in out
    assert gone not in out
    code, out, _ = invoke("sessions", "list", "--trash", "--json")
    assert code == 0
    [entry] = [json.loads(line) for line in out.splitlines()]
    assert (entry["session_id"], entry["kind"], entry["title"]) == (gone, "session", "gone")


def test_sessions_list_trash_has_a_header_row(seeded: tuple[str, str]) -> None:
    code, out, _ = invoke("sessions", "list", "--trash")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["SESSION", "DELETED", "(UTC)", "REASON", "KIND", "WHAT"]
    assert row.startswith(f"{seeded[1]}  ")
    assert row.split()[3:] == ["delete", "session", "session", "gone"]
    assert header.index("REASON") == row.index("delete")


def test_sessions_list_trash_says_when_the_trash_is_empty(app_config: Config) -> None:
    open_root(app_config, kind="tests").close()
    code, out, _ = invoke("sessions", "list", "--trash")
    assert (code, out) == (0, "the trash is empty: nothing to restore\n")


def test_sessions_show_of_a_malformed_id_gives_session_advice_only(app_config: Config) -> None:
    result = CliRunner().invoke(cli, ["sessions", "show", "nope"])
    assert result.exit_code == 65
    assert result.stderr == (
        "error: invalid session id 'nope': session ids are 32 lower-case hex digits; "
        "copy an id from `app sessions list` or GET /sessions\n"
    )


def test_sessions_show_prints_the_files(seeded: tuple[str, str]) -> None:
    code, out, _ = invoke("sessions", "show", seeded[0])
    assert code == 0
    assert "title: kept" in out
    assert "a.txt  4 bytes" in out
    code, out, _ = invoke("sessions", "show", seeded[0], "--json")
    assert json.loads(out)["files"][0]["name"] == "a.txt"


FORGED = "\x1b[2K\rremoved 0 trash entries\x1b]0;pwned\x07 \u202eexe.txt"


def test_a_title_a_terminal_would_act_on_is_printed_escaped(app_config: Config) -> None:
    # Printed as stored, a client's title rewrote the operator's line (`\r`), set the
    # terminal's title (OSC 0) and reversed what followed (U+202E).
    with open_root(app_config, kind="tests") as root:
        store = Store(root)
        sid = store.create_session(FORGED, {"note": "\u202eabc\x9b"})["id"]
        store.put_file(sid, "a.txt", b"data")
    shown = "\\x1b[2K\\rremoved 0 trash entries\\x1b]0;pwned\\x07 \\u202eexe.txt"
    for args in (["sessions", "list"], ["sessions", "show", sid]):
        code, out, _ = invoke(*args)
        assert code == 0
        assert shown in out
        assert not any(c in out for c in "\x1b\r\x07\u202e\x9b"), out
    assert 'metadata: {"note": "\\u202eabc\\x9b"}' in invoke("sessions", "show", sid)[1]
    code, out, _ = invoke("sessions", "show", sid, "--json")
    assert json.loads(out)["title"] == FORGED  # the machine's output keeps the text as stored
    with open_root(app_config, kind="tests") as root:
        Store(root).delete_session(sid)
    code, out, _ = invoke("sessions", "list", "--trash")
    assert f"session {shown}" in out and "\x1b" not in out
    code, out, _ = invoke("sessions", "restore", sid)
    assert (code, out) == (0, f"restored session {sid} ({shown})\n")


def test_sessions_show_of_a_missing_session_exits_66(app_config: Config) -> None:
    open_root(app_config, kind="tests").close()
    code, _, err = invoke("sessions", "show", "0" * 32)
    assert code == 66
    assert "error: no session" in err


@pytest.mark.parametrize(
    ("args", "doing"),
    [
        (["sessions", "list"], "list"),
        (["sessions", "list", "--trash", "--json"], "list"),
        (["sessions", "show", "0" * 32], "show"),
        (["sessions", "restore", "0" * 32], "restore"),
        (["data", "purge"], "purge"),
        (["data", "empty-trash", "--older-than", "7d"], "empty"),
        (["data", "check"], "check"),
        (["data", "check", "--repair", "--json"], "repair"),
    ],
)
def test_a_command_on_a_data_root_that_does_not_exist_is_refused_and_creates_none(
    app_config: Config, monkeypatch: pytest.MonkeyPatch, args: list[str], doing: str
) -> None:
    # A mistyped root (`APP_DATA_ROOT=/srv/app/dta`) was created and stamped by a
    # maintenance command, which then said "removed 0 trash entries"; `list` and `check`
    # said "nothing" and "clean" for it.
    mistyped = app_config.data_root.parent / "dta"
    monkeypatch.setenv("APP_DATA_ROOT", str(mistyped))
    code, out, err = invoke(*args)
    assert (code, out) == (78, "")
    assert err == (
        f"error: data root {mistyped}: the directory does not exist, so there is nothing to "
        f"{doing}, and this command does not create one; if the path is mistyped, correct "
        "data_root of profile 'testing' (from environment APP_DATA_ROOT; `app config --all` "
        "shows every profile's root); a server creates its root at its first start "
        "(`app serve`)\n"
    )
    assert not os.path.lexists(mistyped)


def test_sessions_show_of_a_malformed_id_exits_65(app_config: Config) -> None:
    code, _, err = invoke("sessions", "show", "../../etc")
    assert code == 65
    assert "32 lower-case hex digits" in err


def test_restore_brings_a_session_back_and_audits_it(
    seeded: tuple[str, str], app_config: Config
) -> None:
    code, out, _ = invoke("sessions", "restore", seeded[1])
    assert code == 0, out
    assert "restored session" in out
    assert (app_config.data_root / "sessions" / seeded[1] / "session.json").is_file()
    assert audit(app_config)[-1]["operation"] == "restore-session"
    code, _, err = invoke("sessions", "restore", seeded[1])
    assert code == 66
    assert "it is in sessions (restored already, or never deleted)" in err
    assert f"`app sessions show {seeded[1]}` shows it" in err


def test_restore_of_a_single_file(seeded: tuple[str, str], app_config: Config) -> None:
    with open_root(app_config, kind="tests") as root:
        Store(root).delete_file(seeded[0], "a.txt")
    code, out, _ = invoke("sessions", "restore", seeded[0], "--file", "a.txt")
    assert code == 0, out
    with open_root(app_config, write=False) as root:
        assert Store(root).file_path(seeded[0], "a.txt")[0].read_bytes() == b"data"


def test_purge_on_an_unprotected_profile_needs_no_confirmation(
    seeded: tuple[str, str], app_config: Config
) -> None:
    code, out, _ = invoke("data", "purge")
    assert code == 0
    assert "moved 1 session(s)" in out
    assert list((app_config.data_root / "sessions").iterdir()) == []
    assert audit(app_config)[-1]["operation"] == "purge"


def test_empty_trash_older_than_keeps_recent_entries(
    seeded: tuple[str, str], app_config: Config
) -> None:
    code, out, _ = invoke("data", "empty-trash", "--older-than", "7d")
    assert (code, out.strip()) == (0, "removed 0 trash entries")
    code, out, _ = invoke("data", "empty-trash")
    assert (code, out.strip()) == (0, "removed 1 trash entry")
    assert list((app_config.data_root / ".trash").iterdir()) == []


@pytest.mark.parametrize("bad", ["7", "seven days", "7y", "-1d"])
def test_empty_trash_refuses_a_malformed_age_as_a_usage_error(
    seeded: tuple[str, str], bad: str
) -> None:
    result = CliRunner().invoke(cli, ["data", "empty-trash", "--older-than", bad])
    assert result.exit_code == 2
    assert "30m, 12h, 7d, 2w" in result.stderr


@pytest.mark.parametrize("age", ["99999999999w", "99999999w", "5300w"])
def test_empty_trash_refuses_an_age_beyond_any_date_as_a_usage_error(
    seeded: tuple[str, str], app_config: Config, age: str
) -> None:
    # 99999999w fitted a timedelta but not the cutoff date: a bare OverflowError traceback.
    result = CliRunner().invoke(cli, ["data", "empty-trash", "--older-than", age])
    assert result.exit_code == 2
    assert (
        f"{age!r} is longer than 100 years, older than any entry the trash can hold; give a "
        "shorter age, or leave the option out for all"
    ) in " ".join(result.stderr.split())
    assert len(list((app_config.data_root / ".trash").iterdir())) == 1


def test_empty_trash_refuses_an_age_in_capital_m_and_an_option_given_twice(
    seeded: tuple[str, str], app_config: Config
) -> None:
    # 30M was 30 minutes to a writer who meant months; and click kept the last of two
    # --older-than, so a line edited from history (7d, then 0m appended) emptied everything.
    months = CliRunner().invoke(cli, ["data", "empty-trash", "--older-than", "30M"])
    assert months.exit_code == 2
    assert (
        "'30M' is ambiguous: M is months to some tools and minutes to others; write 30m for "
        "minutes, or days (7d) or weeks (2w)"
    ) in " ".join(months.stderr.split())
    twice = ["data", "empty-trash", "--older-than", "7d", "--older-than", "0m"]
    result = CliRunner().invoke(cli, twice)
    assert result.exit_code == 2
    assert (
        "--older-than is given 2 times, and only one can count; which one was meant is "
        "ambiguous, so nothing was done. Give --older-than once"
    ) in " ".join(result.stderr.split())
    assert len(list((app_config.data_root / ".trash").iterdir())) == 1
    # The group's own options too; a flag said twice says one thing.
    profiles = CliRunner().invoke(
        cli, ["--profile", "testing", "--profile", "production", "status"]
    )
    assert profiles.exit_code == 2
    assert "--profile is given 2 times" in profiles.stderr
    code, out, _ = invoke("data", "empty-trash", "--yes-i-mean-it", "--yes-i-mean-it")
    assert (code, out.strip()) == (0, "removed 1 trash entry")


def test_words_that_name_two_options_are_always_read_for_a_repeat() -> None:
    # refuse_repeated skips click's parser where the words cannot name two options; every
    # list of words click's own parser reads as two options or more must be read (a short
    # cluster, a long option with '=', a flag pair's two halves, '--' and what follows it).
    import itertools

    import click

    from app.cli import _could_name_two_options

    @click.command()
    @click.option("-x/-X", "--ex/--no-ex")
    @click.option("-p", "--pick")
    @click.option("-v", is_flag=True)
    @click.argument("rest", nargs=-1)
    def command(**_: object) -> None:
        pass

    words = ["a", "--", "-x", "-xX", "-Xv", "-pq", "-p", "--pick=1", "+x", ""]
    checked = 0
    parser = command.make_parser(click.Context(command))
    for size in range(4):
        for args in itertools.product(words, repeat=size):
            try:
                _, _, order = parser.parse_args(args=list(args))
            except click.UsageError:
                continue
            if sum(isinstance(p, click.Option) for p in order) > 1:
                checked += 1
                assert _could_name_two_options(list(args)), args
    assert checked > 300
    assert not _could_name_two_options(["config", "--json", "a", "-", ""])
    assert _could_name_two_options(["-ab"])


def test_a_protected_profile_needs_confirmation_before_the_root_is_even_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "protected-root"
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    monkeypatch.setenv("APP_PROTECTED", "true")
    for command in (["data", "purge"], ["data", "empty-trash"]):
        code, _, err = invoke(*command)
        assert code == 77
        assert "refusing to" in err
        assert "nothing was changed" in err
    assert not root.exists()


def test_status_of_a_free_root_says_nobody(seeded: tuple[str, str]) -> None:
    code, out, _ = invoke("status", "--json")
    assert code == 0
    status = json.loads(out)
    assert status["held"] is False
    assert status["stamp"]["profile"] == "testing"


def test_restamp_of_a_root_already_stamped_for_the_profile_changes_nothing(
    seeded: tuple[str, str], app_config: Config
) -> None:
    before = audit(app_config)
    code, out, err = invoke("data", "restamp", "--from", "development")
    assert code == 0, err
    # Nothing was stamped now: the message must not say it was, nor name a profile it was.
    assert "is already stamped 'testing': nothing was changed" in out
    assert "now stamped" not in out
    stamp = json.loads((app_config.data_root / ".app-profile.json").read_text())
    assert stamp["profile"] == "testing"
    assert audit(app_config) == before


def test_the_restamp_command_a_stamp_mismatch_names_is_one_that_runs(
    app_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The root was production's: handing it over needs the confirmation option. The refusal
    # names the command without it, and says so: pasted whole, the command it once gave
    # handed production's data to the shell that had mistyped its root.
    import dataclasses
    import shlex

    production = dataclasses.replace(app_config, profile="production", protected=True)
    open_root(production, kind="tests").close()
    code, _, err = invoke("sessions", "list")
    assert code == 78
    assert "Most often data_root is wrong here (`app config` shows where it came from)" in err
    # The root given by APP_DATA_ROOT in an environment whose ENV_FOR_DYNACONF selects the
    # stamp's profile, --profile choosing another: the refusal says whose the variable was
    # (red team 74: the production service's environment, `app --profile development ...`).
    with monkeypatch.context() as shell:
        shell.setenv("ENV_FOR_DYNACONF", "Production")
        shell.setenv("APP_DATA_ROOT", str(app_config.data_root))
        code, _, told = invoke("--profile", "testing", "sessions", "list")
    assert code == 78
    assert (
        "Most often data_root is wrong here (it came from environment APP_DATA_ROOT, which "
        "this environment sets for profile 'production' (its ENV_FOR_DYNACONF selects that "
        "one), and --profile testing applied it to profile 'testing': for testing's own "
        "data_root, run the command without it (`env -u APP_DATA_ROOT app --profile testing "
        "...`); `app --profile testing config` shows where it came from)"
    ) in " ".join(told.split())
    suggested, note = err.split("re-stamp it explicitly: ", 1)[1].strip().split(" (add ", 1)
    assert note.startswith("--yes-i-mean-it, which it asks for where a protected"), note
    program, *args = shlex.split(suggested)
    assert program == "app"
    code, _, err = invoke(*args)
    assert code == 77, err
    assert "Re-run with --yes-i-mean-it if you mean it" in " ".join(err.split())
    code, out, err = invoke(*args, "--yes-i-mean-it")
    assert code == 0, err
    assert "is now stamped 'testing' (was 'production')" in out
    assert invoke("sessions", "list")[0] == 0


def test_a_root_stamped_by_a_profile_these_settings_do_not_know_is_taken_only_with_confirmation(
    app_config: Config,
) -> None:
    # Another deployment's production may call itself anything: a stamp naming a profile
    # these settings do not define is treated like a protected one's, in the refusal's
    # advice and in the restamp command alike.
    import dataclasses
    import shlex

    elsewhere = dataclasses.replace(app_config, profile="prod-eu")
    open_root(elsewhere, kind="tests").close()
    code, _, err = invoke("sessions", "list")
    assert code == 78
    suggested = err.split("re-stamp it explicitly: ", 1)[1].strip()
    assert suggested.startswith("app data restamp --profile testing --from prod-eu (add ")
    assert "--yes-i-mean-it, which it asks for where a protected" in suggested, suggested
    code, _, err = invoke("data", "restamp", "--from", "prod-eu")
    assert code == 77
    # Not called protected: these settings have no such profile (red team 45 read it so).
    assert (
        "without confirmation: these settings define no profile 'prod-eu', which may be "
        "another deployment's protected one; nothing was changed. Re-run with "
        "--yes-i-mean-it if you mean it"
    ) in " ".join(err.split())
    assert json.loads((app_config.data_root / ".app-profile.json").read_text())["profile"] == (
        "prod-eu"
    )
    command = suggested.split(" (add ", 1)[0]
    code, out, err = invoke(*shlex.split(command)[1:], "--yes-i-mean-it")
    assert code == 0, err
    assert "is now stamped 'testing' (was 'prod-eu')" in out
