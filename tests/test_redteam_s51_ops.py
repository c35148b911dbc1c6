"""Red team 51 on operations (branch rt-ops25): the command line and the server as an
operator runs them, on a local data root.

What broke:

- a directory tree deeper than Python's stack (1,000 levels) in a session that was then
  deleted, or in a create or an ``empty-trash`` left half done: ``shutil.rmtree`` recursed
  once per level, so ``app data empty-trash``, ``app data check --repair`` and every
  ``app serve``'s start-up were a ``RecursionError`` traceback, exit 1, the entry left half
  removed under ``.emptying-``; a service manager restarted the server in a loop that never
  served. Every removal of a tree in a data root now walks it with a list of its own, one
  directory open at a time (`app.dataroot.remove_tree`);
- ``app status`` and ``empty-trash``'s refusal named the server's URL from the command's own
  ``host`` setting: a server started with ``--host ::1`` (or an ``APP_HOST`` the operator's
  shell does not have) was said to serve at ``http://127.0.0.1:PORT``, where nothing (or
  another server) answers, and an IPv6 host gave ``http://::1:PORT``, which curl refuses. The
  server now publishes the address it listens on, and both name it (`app.lock.local_url`);
- a name in the data root that is not UTF-8 (read by Python as a lone surrogate) made ``app
  data check`` a ``UnicodeEncodeError`` traceback, exit 1, under a UTF-8 locale (Python's
  standard output is strict there; only the C locale's is not), and a session title the
  locale's encoding cannot write did the same to ``sessions restore``, after it had restored
  the session. Standard output now writes such a name as its bytes, and any other character
  it cannot encode as its escape;
- JSON nested deeper than Python's stack in a data root's file (a line ``[[[...]]]`` appended
  to ``audit.jsonl``, whose lines of another shape are left alone, a ``session.json`` or the
  stamp written so): ``json.loads`` recursed, so ``app data check``, ``sessions list``, every
  command and every server's start-up were a ``RecursionError`` traceback, exit 1. Every read
  of such a file now takes it for damage like any other (`app.errors.json_loads`);
- the deploy guide followed literally: the service user's home was the data root, so ``sudo
  -u app pip install`` left pip's cache in it and the first start was refused, told to point
  data_root at an empty directory. Every command now warns of a data root that is a user's
  home, the refusal names it and how to move the home, and the guide gives it another home;
- an environment file saved with a byte-order mark named its first variable
  ``\\ufeffAPP_API_TOKEN`` (or ``\\ufeffENV_FOR_DYNACONF``): production was refused as "api_token
  is not set", and the profile's variable as a dynaconf switch. A variable named as one of
  the app's with characters that show as nothing is now refused as meant for it, naming the
  byte-order mark;
- a command that only reads (``data check`` without ``--repair``, ``sessions list``) stopped by
  a time limit (``timeout``: SIGTERM) or Ctrl-C said that what it had changed stays changed
  and to stop the server for ``app data check --repair``; it now says it left nothing to finish.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import forked_app
import httpx
import pytest
from test_config import allow
from test_server_e2e import app_env, run_app

from app.config import load
from app.errors import VariableMisspeltError
from app.storage import open_storage
from app.testing.live_server import published_port

#: Python's recursion limit in the commands of the test below (1,000 by default), and a
#: depth past it: what `shutil.rmtree`, one call per level, ran out of. Lowered for the
#: test's time (a level costs a few milliseconds on a busy disk); `remove_tree`'s depth
#: depends on neither.
LIMIT, DEPTH = 120, 160

#: ``app *argv`` as the console script runs it, under Python's recursion limit `LIMIT`, with
#: dynaconf imported first: the app imports it when it first reads a settings file, about a
#: hundred frames of nested imports, which a plain start (not forked from the run's zygote,
#: where it is imported already) ran out of under the limit (a whole run with a process census
#: on).
UNDER_LIMIT = (
    f"import sys, dynaconf; sys.setrecursionlimit({LIMIT}); from app.cli import main; main()"
)


def _deep_tree(top: Path) -> None:
    """``top/a/a/.../a``, `DEPTH` levels, a file and a link to ``/`` at the deepest."""
    here = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEPTH):
            os.mkdir("a", dir_fd=here)
            below = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=here)
            os.close(here)
            here = below
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=here))
        os.symlink("/", "l", dir_fd=here)
    finally:
        os.close(here)


def _app(log: Path, *args: str) -> tuple[int, str]:
    """``app *args`` under `UNDER_LIMIT`: its exit code and output."""
    code = forked_app.python_c(UNDER_LIMIT, list(args), log).wait(timeout=120)
    return code, log.read_text()


def test_a_tree_deeper_than_python_s_stack_is_emptied_from_the_trash_and_repaired(
    app_config: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True) as store:
        emptied, stopped = (store.create_session(t)["id"] for t in ("e", "s"))
        first = store.delete_session(emptied).name
        second = store.delete_session(stopped).name
    # In a session, by hand or by a tool, before it was deleted; an empty-trash stopped
    # (SIGKILL) once it had taken the other entry out of the trash.
    (root / ".trash" / first / "session" / "deep").mkdir()
    _deep_tree(root / ".trash" / first / "session" / "deep")
    (root / ".trash" / second).rename(root / ".trash" / f".emptying-{second}")
    _deep_tree(root / ".trash" / f".emptying-{second}")
    monkeypatch.setenv("APP_DATA_ROOT", str(root))

    # What every server's start-up runs first: it was a RecursionError, exit 1, for ever.
    code, output = _app(tmp_path / "repair.log", "data", "check", "--repair")
    assert code == 0, output
    assert f"trash-emptying  .trash/.emptying-{second}: an entry that `empty-trash`" in output
    assert os.listdir(root / ".trash") == [first]

    code, output = _app(tmp_path / "empty.log", "data", "empty-trash")
    assert (code, output) == (0, "removed 1 trash entry\n")
    assert os.listdir(root / ".trash") == []


# --- the URL of a server that listens elsewhere than the command's settings say ------------


def _ipv6_loopback() -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        return True
    return False


@pytest.fixture
def on_ipv6_loopback(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A real ``app serve --host ::1 --port 0`` on a root of its own (the command's settings
    say 127.0.0.1): its root and port."""
    if not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback address to listen on")
    root = tmp_path / "data"
    log = tmp_path / "server.log"
    process = forked_app.serve(app_env(root), log, ["serve", "--host", "::1", "--port", "0"])
    try:
        yield root, published_port(root, process, log)  # type: ignore[arg-type]
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=60)


def test_status_and_a_refusal_name_the_address_the_server_listens_on(
    on_ipv6_loopback: tuple[Path, int],
) -> None:
    root, port = on_ipv6_loopback
    url = f"http://[::1]:{port}"
    # The operator's shell, as the settings say (127.0.0.1), and with the server's APP_HOST.
    for host in ("127.0.0.1", "::1"):
        status = run_app("status", env=app_env(root, APP_HOST=host))
        assert status.returncode == 0, status.stderr
        assert f"serving: {url}\n" in status.stdout, status.stdout
    refused = run_app("data", "empty-trash", env=app_env(root))
    assert refused.returncode == 75, refused.stderr
    assert f'"{url}/trash/empty"' in refused.stderr, refused.stderr
    # What answers there is this root's server.
    assert httpx.get(f"{url}/health", timeout=10).json()["profile"] == "testing"


# --- names and titles standard output's encoding cannot take -------------------------------


#: ``app *argv`` as the console script runs it, its standard output first made what a
#: host's strict locale makes it: Latin-1 (no U+2603, no lone surrogate), errors raised.
#: (Forked from the zygote, which ``PYTHONIOENCODING=latin-1`` would not be.)
LATIN_1 = (
    "import sys; sys.stdout.reconfigure(encoding='latin-1', errors='strict'); "
    "from app.cli import main; main()"
)


def test_a_name_or_a_title_the_output_cannot_encode_is_written_not_a_traceback(
    app_config: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True) as store:
        deleted = store.create_session("résumé ☃")["id"]
        store.delete_session(deleted)
    # A name that is not UTF-8 (Latin-1's 0xFF), left in the root by another tool.
    (root / "sessions" / os.fsdecode(b"zz\xff")).touch()
    monkeypatch.setenv("APP_DATA_ROOT", str(root))

    check = tmp_path / "check.log"
    assert forked_app.python_c(LATIN_1, ["data", "check"], check).wait(timeout=120) == 65
    # The byte written as text (red team 60 on regress): raw, 0x80 to 0x9F is a C1 control
    # to a terminal that is not in UTF-8, as this output is not.
    assert check.read_bytes().startswith(
        b"unknown-entry  sessions/zz\\xff: not a session directory; --repair: nothing"
    ), check.read_bytes()

    restore = tmp_path / "restore.log"
    code = forked_app.python_c(LATIN_1, ["sessions", "restore", deleted], restore).wait(120)
    assert (code, restore.read_bytes()) == (
        0,
        f"restored session {deleted} (r\xe9sum\xe9 \\u2603)\n".encode("latin-1"),
    )


# --- JSON nested deeper than Python's stack, in a data root's files ------------------------


#: A JSON value ``json.loads`` recursed into once per level, past Python's limit.
NESTED = "[" * 5000 + "]" * 5000


def test_json_nested_deeper_than_python_s_stack_is_damage_not_a_traceback(
    app_config: Any,
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True) as store:
        kept, hurt = (store.create_session(t)["id"] for t in ("k", "h"))
        store.delete_session(kept)
    # A line of another shape appended to the audit log (left alone by design), and a
    # session.json written so by hand.
    with (root / "audit.jsonl").open("a") as log:
        log.write(NESTED + "\n")
    (root / "sessions" / hurt / "session.json").write_text(NESTED)
    env = {**os.environ, "APP_DATA_ROOT": str(root)}

    check = run_app("data", "check", env=env)
    assert check.returncode == 65, check.stderr
    assert check.stdout.startswith(
        f"session-unreadable  sessions/{hurt}: a session directory without a readable "
        "session.json; --repair: nothing: left for a human"
    ), check.stdout + check.stderr

    (root / ".app-profile.json").write_text(NESTED)
    status = run_app("status", env=env)
    assert status.returncode == 0, status.stderr
    assert (
        "stamp: unreadable: its profile stamp "
        f"{root}/.app-profile.json is not valid JSON (JSON nested too deep to read (more "
        "levels than Python's stack holds)); restore the file from a backup"
    ) in status.stdout, status.stdout


# --- the deploy guide followed literally: the service user's home was the data root ---------


#: ``app *argv[1:]`` with ``HOME`` set to ``argv[0]``, as ``sudo -u`` and systemd's ``User=``
#: set it (forked from the zygote, which a child of another ``HOME`` would not be).
AT_HOME = "import os, sys; os.environ['HOME'] = sys.argv.pop(1); from app.cli import main; main()"


def test_a_data_root_that_is_its_user_s_home_is_named_so_with_how_to_move_the_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `useradd --home /var/lib/app` (the guide's step 1), then `sudo -u app pip install`
    # (step 2): pip's cache in the root, whose first start was told to point data_root at
    # an empty directory.
    root = tmp_path / "data"
    (root / ".cache" / "pip").mkdir(parents=True)
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    log = tmp_path / "serve.log"
    args = [str(root), "serve", "--port", "0"]
    assert forked_app.python_c(AT_HOME, args, log).wait(timeout=120) == 78
    output = log.read_text()
    assert (
        f"warning: data_root of profile 'testing' ({root}) is HOME ({root}): what programs "
        "run as that user keep in their home (pip's cache in .cache, a shell's history) is "
        "written into the data root"
    ) in output, output
    assert (
        "holds files that are not the app's (.cache); refusing to adopt it as a data root: it "
        f"is HOME ({root}), where programs run as that user keep their files (pip's cache in "
        ".cache, a shell's history); set HOME to a directory outside the data root where the "
        "app runs, then move those files out of the directory and start again"
    ) in output, output
    assert sorted(os.listdir(root)) == [".cache"]


# --- an environment file saved with a byte-order mark -------------------------------------


#: How a refusal names a byte-order mark at the start of a variable's name.
BOM_NAMED = (
    "(written with U+FEFF ZERO WIDTH NO-BREAK SPACE (a byte-order mark, which some editors "
    "write at the start of a file: save the file as UTF-8 without one), not plain ASCII)"
)


def test_a_variable_named_with_a_byte_order_mark_is_named_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first line of /etc/app.env saved with a BOM, passed on by the guides' `env $(grep
    # ... | xargs)`: production was refused as "api_token is not set (from built-in
    # default)", and a BOM'd ENV_FOR_DYNACONF as a dynaconf switch.
    token = "Zx9v3Qm7Lp2Kw8Rt5Yb1Nc6Hd4Gf0Js"
    monkeypatch.setenv("\ufeffAPP_API_TOKEN", token)
    with pytest.raises(VariableMisspeltError) as refused:
        load("testing")
    assert str(refused.value).startswith(
        f"environment variable \ufeffAPP_API_TOKEN='******' {BOM_NAMED} looks meant as "
        "APP_API_TOKEN, but only APP_API_TOKEN sets api_token of the selected profile, "
        "'testing'; as it is, the app would use api_token of profile 'testing' as the "
        "settings files give it. To use what it names: name it APP_API_TOKEN where it is set "
        "(the file's first line, if it was saved with a byte-order mark: save it without one)"
    ), str(refused.value)
    assert token not in str(refused.value)
    assert refused.value.exit_code == 78
    monkeypatch.delenv("\ufeffAPP_API_TOKEN")

    allow(monkeypatch, "development")
    monkeypatch.delenv("ENV_FOR_DYNACONF")
    monkeypatch.setenv("\ufeffENV_FOR_DYNACONF", "production")
    with pytest.raises(VariableMisspeltError) as refused:
        load()
    assert str(refused.value).startswith(
        f"environment variable \ufeffENV_FOR_DYNACONF='production' {BOM_NAMED} looks meant as "
        "ENV_FOR_DYNACONF, but only ENV_FOR_DYNACONF (or --profile) selects the profile"
    ), str(refused.value)


# --- a command that only reads, stopped by a time limit ------------------------------------


#: ``app *argv``, sent SIGTERM (as ``timeout`` sends it) once its check reaches the trash.
STOPPED_IN_CHECK = """
import os, signal
import app.check
reached = app.check.Checker.check_trash
def stop(self):
    os.kill(os.getpid(), signal.SIGTERM)
    return reached(self)
app.check.Checker.check_trash = stop
from app.cli import main
main()
"""


def test_a_check_that_only_reads_stopped_by_a_time_limit_is_not_sent_to_a_repair(
    app_config: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `timeout 60 app data check --quick` in a cron job (the how-to's advice for a check run
    # often): told "what it had changed stays changed ... Run `app data check --repair` (with
    # no server on the data root)", a repair of nothing that needs the server stopped.
    with open_storage(app_config, writer=True) as store:
        store.create_session("s")
    monkeypatch.setenv("APP_DATA_ROOT", str(app_config.data_root))
    log = tmp_path / "check.log"
    args = ["data", "check", "--quick"]
    assert forked_app.python_c(STOPPED_IN_CHECK, args, log).wait(timeout=120) == 143
    assert log.read_text() == (
        "error: `app data check` was stopped (SIGTERM) before it finished. It changes nothing "
        "(it only reads), so the stop left nothing to finish or repair: run it again, with "
        "more time if a time limit stopped it (`timeout`, a job's or a service manager's)\n"
    )
    # One that changes the root still says what to finish.
    log = tmp_path / "repair.log"
    args = ["data", "check", "--repair"]
    assert forked_app.python_c(STOPPED_IN_CHECK, args, log).wait(timeout=120) == 143
    assert "what it had changed stays changed" in log.read_text(), log.read_text()
