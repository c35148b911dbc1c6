"""Red team 60 on operations (branch rt-ops31): every command and message run as written.

What broke:

- ``app data purge`` stopped by a signal that lands while it writes its audit line. Its one
  line comes after the last move, so a single Ctrl-C (or SIGTERM) there, as the operator
  gives up on a long purge at its very end, cut the write: every session it had moved was
  left without a line (``app data check``: ``trash-unaudited`` for each), where the stop's
  message promises that at most the last one may lack it. A second Ctrl-C at the line red
  team 59 writes for a stopped purge did the same, and one more while the command printed
  its refusal was a ``KeyboardInterrupt`` traceback in place of the message. An audit line
  (the record of a change already made, `app.dataroot._write_audit_line`, every command's
  and the server's) is now written whole before a SIGINT or SIGTERM that came meanwhile is
  acted on; and a command stopped once by either finishes what the stop began (its line,
  its undo, its message) through later ones, as red team 35 made SIGTERM do, saying so on
  standard error (``kill -9`` forces it);
- a data root whose resolved name holds a byte that is not UTF-8, brought by the settings
  directory (``APP_SETTINGS_DIR=$'/opt/app\\xff'``, a relative ``data_root``) or by a
  link: red team 59 refused such a byte in the value only, so the root was served, named in
  every message and ``--json`` output as ``\\udcff`` text, and the ``install -d`` a
  protected profile's missing root is told to run made another directory. The resolved
  root is refused as the value is (78), naming the byte and the ``mv`` (and ``export
  APP_SETTINGS_DIR=``) that resolve it, and every command a message prints names such a
  path, or one with a control character, in bash's ANSI-C quoting (``$'...\\xff'``);
- a settings directory named with an escape sequence: ``app status``, ``app config`` and
  ``app doctor`` printed it (and the roots in it) as it is, and the terminal acted on it;
  their lines now print such characters as text, as a refusal's have since red team 47.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from faults import needs_strace
from project_copy import copy_project_settings
from test_server_e2e import app_env

from app.cli import cli
from app.config import load
from app.errors import ConfigError, printable
from app.storage import open_storage


def _root_of_three(root: Path) -> tuple[dict[str, str], list[str]]:
    """A testing root of three sessions (made in this process: a child costs more than the
    test), and the environment of an `app` command on it."""
    env = app_env(root)
    with open_storage(load("testing", environ=env), writer=True) as store:
        ids = [store.create_session(f"review {n}", {})["id"] for n in range(3)]
    return env, ids


def _purge_under(
    env: dict[str, str], paths: list[Path], injects: list[str], stderr: Path
) -> subprocess.Popen[bytes]:
    """``app data purge`` under strace, which sends SIGINT at the calls ``injects`` name
    (each as ``CALL:error=EINTR:signal=INT:when=N``: the call is cut, as a signal cuts a
    slow write, and the signal handled there) that touch ``paths``."""
    argv = ["strace", "-f", "-qq", "-o", "/dev/null"]
    for path in paths:
        argv += ["-P", str(path)]
    calls = sorted({inject.split(":", 1)[0] for inject in injects})
    argv += ["-e", f"trace={','.join(calls)}"]
    for inject in injects:
        argv += ["-e", f"inject={inject}"]
    argv += [sys.executable, "-m", "app", "data", "purge"]
    with stderr.open("wb") as err:
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )


def _unaudited(env: dict[str, str]) -> list[str]:
    """What ``app data check`` names ``trash-unaudited`` on the root ``env`` names."""
    with open_storage(load("testing", environ=env), writer=False) as store:
        findings = store.check(hash_bytes=False).findings
    return [f.target for f in findings if f.problem == "trash-unaudited"]


@needs_strace
def test_a_ctrl_c_while_a_purge_writes_its_line_leaves_no_session_unaudited(
    tmp_path: Path,
) -> None:
    """One Ctrl-C as the purge writes its line at the end, and Ctrl-C twice in a purge
    stopped partway (the second as it writes the line for what it moved, a third as it
    prints why it stopped): each left every moved session without its line, and the last a
    traceback for a message."""
    at_end = tmp_path / "end"
    twice = tmp_path / "twice"
    env_end, _ = _root_of_three(at_end)
    env_twice, ids = _root_of_three(twice)
    said = tmp_path / "twice.err"
    # Started together: each waits on its strace, not on the other.
    end = _purge_under(
        env_end,
        [at_end / "audit.jsonl"],
        ["write:error=EINTR:signal=INT:when=1"],
        tmp_path / "end.err",
    )
    stopped = _purge_under(
        env_twice,
        [twice / "sessions" / ids[1], twice / "audit.jsonl", said],
        [
            "rename:signal=INT:when=1",  # the first Ctrl-C, as the second session moves
            # The second at the stopped line's write (retried once the signal is handled,
            # so the 2nd write is the line again), a third at the next write to standard
            # error: the note of the second, or, where the second stopped the line, the
            # message that says why it stopped.
            "write:error=EINTR:signal=INT:when=1..3+2",
        ],
        said,
    )
    assert end.wait(60) in (0, 130), (tmp_path / "end.err").read_text()
    assert stopped.wait(60) == 130, said.read_text()

    (line,) = [json.loads(t) for t in (at_end / "audit.jsonl").read_text().splitlines()]
    assert line["operation"] == "purge" and line["details"]["count"] == 3, line
    assert _unaudited(env_end) == []

    message = " ".join(said.read_text().split())
    assert "Traceback" not in message, message
    assert "`app data purge` was interrupted (Ctrl-C, SIGINT)" in message, message
    assert "already stopping" in message and "kill -9" in message, message
    (line,) = [json.loads(t) for t in (twice / "audit.jsonl").read_text().splitlines()]
    assert line["details"]["stopped"] == "interrupted (SIGINT or SIGTERM)", line
    moved = {p.name for p in (twice / ".trash").iterdir()}
    assert len(moved) == 2 and set(line["details"]["entries"]) < moved, (line, moved)
    assert len(_unaudited(env_twice)) <= 1  # the one the stop came in
    assert os.listdir(twice / "sessions") == [ids[2]]


def _commands(message: str) -> list[str]:
    """The commands a message gives between backticks, in order."""
    return re.findall(r"`((?:mv|export) [^`]+)`", " ".join(message.split()))


def _refusal(env: dict[str, str]) -> str:
    """What loading testing's configuration in ``env`` (as every command does first) is
    refused with, on one line, as the command line prints it (`app.cli.fail`: what a
    terminal would act on, and a byte that is not UTF-8, written as Python escapes it)."""
    with pytest.raises(ConfigError) as refused:
        load("testing", environ=env)
    assert refused.value.exit_code == 78
    return " ".join(printable(line) for line in refused.value.message.split())


@pytest.mark.skipif(shutil.which("bash") is None, reason="the printed commands are bash's")
def test_a_root_whose_name_is_not_text_is_refused_however_it_is_reached(
    tmp_path: Path,
) -> None:
    """A data root whose resolved name holds a byte that is not UTF-8, reached through the
    settings directory (``APP_SETTINGS_DIR=$'/opt/app\\xff'``, a relative ``data_root``) or a
    symbolic link: red team 59 refused it only in the value itself, so it was served, every
    message named it as ``\\udcff`` text, and the ``install -d`` or ``mv`` a refusal printed
    acted on another path. It is refused (78), and the ``mv`` and ``export`` it gives, run as
    written by bash, resolve it."""
    settings = Path(os.fsdecode(os.fsencode(tmp_path) + b"/settings\xff"))
    copy_project_settings(settings)
    env = {k: v for k, v in app_env(tmp_path / "unused").items() if k != "APP_DATA_ROOT"}
    env["APP_SETTINGS_DIR"] = str(settings)
    message = _refusal(env)
    assert "the byte 0xFF, which is not UTF-8" in message, message
    assert "the settings directory" in message, message
    move, export = _commands(message)[:2]
    assert move.startswith("mv ") and export.startswith("export "), message
    script = f'{move} && {export} && printf %s "$APP_SETTINGS_DIR"'
    ran = subprocess.run(["bash", "-c", script], capture_output=True, check=False)
    assert ran.returncode == 0, ran.stderr
    env["APP_SETTINGS_DIR"] = os.fsdecode(ran.stdout)
    assert load("testing", environ=env).data_root == tmp_path / "settingsÿ" / "data" / "testing"

    target = Path(os.fsdecode(os.fsencode(tmp_path) + b"/root\xff"))
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    message = _refusal(app_env(tmp_path / "link"))
    assert "a symbolic link on its way leads there" in message, message
    (move,) = [c for c in _commands(message) if c.startswith("mv ")]
    moved = subprocess.run(["bash", "-c", move], capture_output=True, text=True, check=False)
    assert moved.returncode == 0 and (tmp_path / "rootÿ").is_dir(), moved.stderr


def test_a_path_with_an_escape_sequence_is_printed_as_text_by_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settings directory named with an escape sequence (one that sets the terminal's
    title): `app status`, `app config` (and ``--all``) and `app doctor` printed it as it
    is, so the terminal acted on it, where a refusal prints it as text (red team 47)."""
    settings = copy_project_settings(tmp_path / "s\x1b]0;owned\x07")
    monkeypatch.delenv("APP_DATA_ROOT", raising=False)  # testing's, in that directory
    monkeypatch.setenv("ENV_FOR_DYNACONF", "testing")
    monkeypatch.setenv("APP_SETTINGS_DIR", str(settings))
    commands = (["status"], ["config"], ["config", "--all"], ["doctor"], ["data", "check"])
    for args in (*commands, ["data", "purge"]):
        ran = CliRunner().invoke(cli, args)
        assert "\\x1b]0;owned\\x07" in ran.output, (args, ran.output)
        assert "\x1b" not in ran.output and "\x07" not in ran.output, (args, ran.output)
        if args == ["doctor"]:
            # A root, and in it a leftover whose name holds the sequence (a file the
            # check names, as the path of the root is named above).
            with open_storage(load("testing"), writer=True) as store:
                (Path(store.location) / ".tmp" / "x\x1b]0;owned\x07").touch()


def test_a_server_s_log_names_a_file_with_an_escape_sequence_as_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A trash entry named with an escape sequence (it clears the screen): a server's
    start-up check logged it as it is, to the terminal the server runs in. The server's log
    configuration (`_log_config`) now writes each record's characters a terminal acts on as
    text; here the real start-up check on a real root, its records through that filter."""
    from app.server.run import _log_config, _start_up_check  # the server's imports: here

    config = load("testing", environ=app_env(tmp_path / "root"))
    with open_storage(config, writer=True) as store:
        (Path(store.location) / ".trash" / "junk\x1b[2J").mkdir()
        with caplog.at_level(logging.WARNING, logger="app"):
            _start_up_check(store)
    logged = _log_config("info")
    assert "printable" in logged["handlers"]["default"]["filters"]
    shown = logged["filters"]["printable"]["()"]()
    (record,) = [r for r in caplog.records if "junk" in r.getMessage()]
    assert shown.filter(record)
    assert ".trash/junk\\x1b[2J" in record.getMessage(), record.getMessage()
    assert "\x1b" not in record.getMessage()
