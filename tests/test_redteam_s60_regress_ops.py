"""Red team 60 on regress, operations and remote (branch rt-regress10): what red team 60's
fixes on operations and on the remote backend broke.

What broke:

- a command started with SIGINT ignored (``app data purge &`` in a script, whose shell
  ignores SIGINT there so that the terminal's Ctrl-C leaves it running; a supervisor that
  ignores it on purpose) ran through a Ctrl-C, as Python leaves an inherited ignored
  signal; since red team 60 on operations took SIGINT and SIGTERM for every command, such
  a Ctrl-C stopped it halfway (exit 130). A signal the command was started with ignored
  stays ignored (`app.cli._listened`); one it listens to stops it as before;
- every command a message prints names a path with a byte that is not UTF-8 or a control
  character in bash's ANSI-C quoting (``$'/opt/app\\xff'``), which POSIX ``sh`` (dash,
  Debian's and Ubuntu's ``/bin/sh``) reads as ``$`` and a quoted text: the ``mv`` the
  refusal of such a root gives, pasted into ``sh``, renamed nothing ("cannot stat
  '$/opt/app\\xff'"), and an ``rm`` or ``install -d`` acted on another path. Such a path is
  now named through printf(1)'s octal escapes (``"$(printf -- '/opt/app\\377')"``), which
  every POSIX shell runs as written, bash and zsh too (`app.errors.shell_word`); and the
  commands printed through ``shlex.quote`` (an empty directory's ``rmdir`` where a settings
  file belongs, a misspelt variable's ``export``, a missing root's ``install -d``...) go
  through it too: in a settings directory named with an escape sequence, the ``rmdir``,
  printed as text inside single quotes, named a path of backslashes; and so do those
  printed with a path not quoted at all (``ls -ld``, ``findmnt -T``, ``umount``), which a
  space cut in two;
- `app data check` of a root holding a name that is not UTF-8 (``sessions/zz\\xff``): red
  team 51 wrote the byte as it is, and red team 60 on operations, printing every line
  through `printable`, wrote it ``zz\\udcff``, a character no file name holds, which failed
  red team 51's test. Raw, a byte from 0x80 to 0x9F is a C1 control to a terminal that is
  not in UTF-8 (0x9B is CSI); `printable` now writes such a byte as the byte it is,
  ``zz\\xff`` (`tests/test_redteam_s51_ops.py` replays it);
- a file's row on PostgreSQL whose name holds a character a replica on a newer Python took
  (U+1FA75 is Unicode 15; 3.11 calls it unassigned): red team 60 on the remote backend
  held a row's name to `check_file_name`, which judges by this Python's tables, so the
  older replica left the file out of its session and `app data check` called the row a
  tool's, for a human to correct. A code point this Python does not assign is taken as its
  writer's (`app.remote.rows._known`); a request for it there is still ``invalid_name``;
- a command's own log warnings (`app data purge`'s "purge left ... a symbolic link (to
  ...)") go through Python's last-resort handler, which red team 60 on operations gave no
  `printable` filter: a link's target named with an escape sequence reached the terminal
  as it is. `app.cli.main` gives that handler `app.errors.PrintableLines`, which now makes
  a record's traceback printable as well.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from fastapi.testclient import TestClient
from faults import needs_strace, strace_prefix
from project_copy import copy_project_settings
from test_redteam_s60_ops import _commands, _refusal, _root_of_three
from test_redteam_s60_remote import _findings, _session_with, served  # noqa: F401 - a fixture
from test_server_e2e import app_env

from app.config import load
from app.errors import (
    ConfigError,
    LockUncheckedError,
    SettingsUnreadableError,
    printable,
    shell_word,
)
from app.lock import _through_deleted
from app.remote.db import utc
from app.remote.store import RemoteStore
from app.store.records import record_sha256

#: The shells a printed command is run by: POSIX sh (dash where it is /bin/sh), and bash.
_SHELLS = [shell for shell in ("sh", "dash", "bash") if shutil.which(shell)]


def _ignoring_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _purge(
    env: dict[str, str], prefix: Sequence[str] = (), started: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """``app data purge`` on the root ``env`` names, after ``prefix`` (strace's), ``started``
    run in its process before it starts."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "app", "data", "purge"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        preexec_fn=started,
        check=False,
    )


@needs_strace
def test_a_purge_started_with_sigint_ignored_finishes_and_warns_in_text(tmp_path: Path) -> None:
    """``app data purge`` started as a script's ``&`` starts it (SIGINT ignored), sent SIGINT
    as it moves a session: before, stopped there (130); it finishes, as before red team 60,
    its one line naming what it moved. The root's first session is a symbolic link to a
    directory named with an escape sequence (one that clears the screen): the purge's
    warning that it left the link, written through Python's last-resort log handler,
    printed the link's target as it is, where every other line of a command and of a
    server's log shows such characters as text since red team 60 on operations."""
    root = tmp_path / "root"
    env, ids = _root_of_three(root)
    away = tmp_path / "moved\x1b[2J\x1b]0;owned\x07"
    (root / "sessions" / ids[0]).rename(away)
    (root / "sessions" / ids[0]).symlink_to(away)
    strace = strace_prefix("rename:signal=INT:when=1", root / "sessions" / ids[1])
    purge = _purge(env, strace, _ignoring_sigint)
    assert purge.returncode == 0, purge.stderr
    assert "interrupted" not in purge.stderr, purge.stderr
    assert os.listdir(root / "sessions") == [ids[0]]
    (line,) = [json.loads(t) for t in (root / "audit.jsonl").read_text().splitlines()]
    assert line["operation"] == "purge" and line["details"]["count"] == 2, line

    assert "purge left" in purge.stderr, purge.stderr
    assert "\x1b" not in purge.stderr and "\x07" not in purge.stderr, purge.stderr
    assert "moved\\x1b[2J\\x1b]0;owned\\x07" in purge.stderr, purge.stderr


@pytest.mark.skipif(not _SHELLS, reason="no shell to run the printed commands")
def test_a_printed_command_naming_a_path_that_is_no_plain_text_runs_in_posix_sh(
    tmp_path: Path,
) -> None:
    """A settings directory whose name holds the byte 0xFF: the ``mv`` and ``export`` its
    refusal gives, run as written by ``sh`` (dash): before, ``$'...\\xff'`` was ``$`` and
    a quoted text there, and ``mv`` failed (cannot stat ``$/.../settings\\xff``). Every
    shell now renames the directory, and a name with every character such quoting must
    carry (a newline at its end, ``'``, ``%``, ``\\``, an escape sequence, a leading ``-``)
    comes out of each as the bytes it is."""
    for shell in _SHELLS:
        base = tmp_path / shell
        settings = Path(os.fsdecode(os.fsencode(base) + b"/settings\xff"))
        copy_project_settings(settings)
        env = {k: v for k, v in app_env(tmp_path / "unused").items() if k != "APP_DATA_ROOT"}
        env["APP_SETTINGS_DIR"] = str(settings)
        move, export = _commands(_refusal(env))[:2]
        script = f'{move} && {export} && printf %s "$APP_SETTINGS_DIR"'
        ran = subprocess.run([shell, "-c", script], capture_output=True, check=False)
        assert ran.returncode == 0, (shell, move, ran.stderr)
        env["APP_SETTINGS_DIR"] = os.fsdecode(ran.stdout)
        assert load("testing", environ=env).data_root == base / "settingsÿ" / "data" / "testing"

    # A command printed with `shlex.quote` rather than `shell_word` (`rmdir` of a settings
    # file that is an empty directory, in a settings directory named with an escape
    # sequence): printed as text, it named a path of backslashes and removed nothing.
    for shell in _SHELLS:
        settings = copy_project_settings(tmp_path / f"{shell}-\x1b]0;t\x07")
        (settings / "settings.toml").unlink()
        (settings / "settings.toml").mkdir()
        env = {k: v for k, v in app_env(tmp_path / "unused").items() if k != "APP_DATA_ROOT"}
        env["APP_SETTINGS_DIR"] = str(settings)
        with pytest.raises(ConfigError) as refused:
            load("testing", environ=env)
        shown = " ".join(printable(line) for line in refused.value.message.split())
        (rmdir,) = re.findall(r"`(rmdir [^`]+)`", shown)
        ran = subprocess.run([shell, "-c", rmdir], capture_output=True, check=False)
        assert ran.returncode == 0, (shell, rmdir, ran.stderr)
        assert not (settings / "settings.toml").exists()

    # A character that shows as nothing, written as octal escapes since red team 71 on
    # regress, round r: each shell prints its bytes back.
    names = ["-r\udcfe 100% it's a\\b\x1b]0;t\x07", "two\nlines\n\n", "l\u034fo\u2764\ufe0f%"]
    for shell in _SHELLS:
        for name in names:
            said = subprocess.run(
                [shell, "-c", f"printf %s {shell_word(name)}"], capture_output=True, check=False
            )
            assert said.stdout == os.fsencode(name), (shell, shell_word(name), said)


# --- the remote backend's rows ------------------------------------------------------------

#: A character of Unicode 15 (LIGHT BLUE HEART), which a replica on Python 3.12 or later
#: takes in a name.
_NEWER = "\U0001fa75"


@pytest.mark.skipif(
    unicodedata.category(_NEWER) != "Cn", reason="this Python's Unicode assigns U+1FA75"
)
def test_a_name_a_newer_python_s_replica_took_is_listed_not_called_a_tool_s(
    served: tuple[RemoteStore, TestClient],  # noqa: F811 - the fixture
) -> None:
    """A file's row with a name a replica on a newer Python took (a character of Unicode 15,
    unknown to 3.11's tables), as that replica wrote it: before, this replica left it out of
    its session's files and `app data check` called it a row "a tool or an edit wrote",
    for a human to correct. It is listed and not reported; a request for it here is refused
    for the code point this Python does not know, not as a row of another shape."""
    store, client = served
    session_id, path = _session_with(client, {"blue.txt": b"blue"})
    name = f"blue {_NEWER}.txt"
    with psycopg.connect(store.database_url, autocommit=True) as admin:
        admin.execute("UPDATE app_files SET name = %s WHERE session_id = %s", (name, session_id))
        # With the key that replica's upload writes of its row (rows67).
        size, sha256, uploaded_at = admin.execute(
            f"SELECT size, sha256, {utc('uploaded_at')} FROM app_files WHERE session_id = %s",
            (session_id,),
        ).fetchone()  # type: ignore[misc]
        key = record_sha256(
            {"name": name, "size": size, "sha256": sha256, "uploaded_at": uploaded_at}
        )
        admin.execute(
            "UPDATE app_files SET content_sha256 = %s WHERE session_id = %s", (key, session_id)
        )
    assert [f["name"] for f in client.get(f"/sessions/{session_id}").json()["files"]] == [name]
    assert _findings(store, session_id) == {}
    refused = client.get(f"{path}/{quote(name)}")
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_name"), refused.text
    assert "U+1FA75" in refused.json()["message"], refused.text


@pytest.mark.skipif(not _SHELLS, reason="no shell to run the printed commands")
def test_a_refusal_s_command_names_its_path_as_one_word_of_any_shell() -> None:
    """The commands refusals printed with a path as it is (`ls -ld` of unreadable settings,
    `findmnt -T` of a lock file that could not be looked at, `findmnt` and `umount` of a
    file mounted over a lock): a space cut the path in two, and an escape sequence was
    shown as text that names another path. Each path is one word any shell reads back."""
    path = Path("/srv/my data/s\x1b]0;t\x07/x")
    said = [
        SettingsUnreadableError(path, "nobody").message,
        LockUncheckedError(path, "could not be looked at (EIO)").message,
        _through_deleted(path, {"lock_file_mounted_over": path, "pid": 1}),
    ]
    command = re.compile(r"`(?:nsenter -t 1 -m )?(?:ls -ld|findmnt(?: -T)?|umount) (\S.*?)`")
    words = [word for message in said for word in command.findall(message)]
    assert len(words) == 5, said
    for shell in _SHELLS:
        for word in words:
            script = f"printf %s {word}"
            ran = subprocess.run([shell, "-c", script], capture_output=True, check=False)
            assert ran.stdout == os.fsencode(path), (shell, word, ran)
