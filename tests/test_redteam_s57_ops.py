"""Red team 57 on operations (branch rt-ops29): the commands a refusal prints, copied from the
message and run as written, in the situation the message is about.

What broke:

- the ``sudo -u <owner> <the command as it was run>`` that red team 55's ``data_root_owner``
  names (a maintenance command, or ``app doctor``, run as root or a third user on the service
  user's root). It named the command's words alone. sudo resets the environment (its
  ``env_reset``, on by default), so the ``ENV_FOR_DYNACONF``, ``APP_SETTINGS_DIR`` and
  ``APP_DATA_ROOT`` that had chosen the refused root were gone when it ran: ``sudo -u app
  app data check --repair``, copied from a refusal about production's root, selected
  development from the default settings directory and repaired (or was refused on) another
  profile's root. The command now carries, through ``env``, each variable of the refused
  process that chose what it opens (the profile, the settings directory, every
  ``APP_<KEY>`` that is not a secret); a secret is left to the environment file the refusal
  names next;
- ``app serve >&-`` (an init script, a supervisor that closes the descriptors it does not
  pass on): uvicorn's log formatter asked ``sys.stdout``, which Python leaves ``None``, if it
  is a terminal: a traceback, exit 1, which ``Restart=on-failure`` restarts in a loop; with
  all three closed (``<&- >&- 2>&-``) it exited 1 without a word. The entry point now gives
  each closed standard descriptor ``/dev/null`` (and its stream), so it serves, and no file
  of the data root opened later takes descriptor 0, 1 or 2, where a child's output or a
  write to "standard error" below Python would have landed;
- the ``curl`` that ``app data empty-trash`` prints on a root a server holds sent
  ``Authorization: Bearer $APP_API_TOKEN``, empty where the token comes from a settings file:
  run as printed, it was refused 401. It now reads the token through the app's own loading
  of the profile, never showing it (``$APP_API_TOKEN`` where the environment gave it);
- ``max_files_per_session`` lowered below what a session holds: its files stayed served, and
  a new name was refused, but the refusal said the session held as many files as the limit
  (2 of a session of 3) and to "delete a file", which left it full; it now names the count,
  that the limit was lowered since, and how many to delete.

Kept (it held): every ``app ...`` quoted in the docs' prose, in each ``--help`` and in the
code's messages names commands and options that exist (only the console blocks were checked).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_server_e2e import app_env, run_app

NOBODY = 65534
TOKEN = {"Authorization": "Bearer testing-token-not-secret"}  # testing's, committed


@pytest.fixture(scope="module")
def service_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty testing root given to user 65534 (the service's user here)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the root is given to another user with chown")
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux), which runs the printed command as its user")
    root = tmp_path_factory.mktemp("s57ops") / "root"
    root.mkdir(mode=0o700)  # a first deploy's empty root, made for the service's user
    os.chown(root, NOBODY, NOBODY)
    return root


def _as_sudo_runs_it(command: str) -> list[str]:
    """`command` (``sudo -u nobody ...``) as sudo runs it: as that user, the environment
    reset to sudo's few kept variables (here: none of the app's). The capability to read
    and search lets user 65534 reach the run's sandbox and this checkout's Python."""
    words = shlex.split(command)
    assert words[:3] == ["sudo", "-u", "nobody"], command
    return [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
        "env", "-i", f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}", "HOME=/nonexistent",
        *words[3:],
    ]  # fmt: skip


def test_the_sudo_a_wrong_user_refusal_names_runs_on_the_refused_root(service_root: Path) -> None:
    root = service_root
    env = app_env(root)
    command = ("data", "check", "--repair")  # doctor names its own, by one function
    refused = run_app(*command, env=env)
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 78, (command, refused.stdout, refused.stderr)
    found = re.search(r"Run it as the owner: `(sudo -u nobody [^`]+)`", said)
    assert found, said
    printed = found.group(1)
    # What chose the root is in it, and no secret.
    assert f"ENV_FOR_DYNACONF=testing APP_DATA_ROOT={root}" in printed, printed
    assert "APP_API_TOKEN" not in printed
    assert f"{sys.executable} -m app {' '.join(command)}" in printed
    done = subprocess.run(
        _as_sudo_runs_it(printed), capture_output=True, text=True, check=False, cwd="/"
    )
    if "Operation not permitted" in done.stderr and "setpriv" in done.stderr:
        pytest.skip(f"setpriv cannot give the capability here: {done.stderr}")
    assert done.returncode == 0, (printed, done.stdout, done.stderr)
    assert f"clean: data root {root} is consistent" in done.stdout


def _docs_conftest() -> Any:
    """docs/conftest.py, whose parser of `app` lines checks the docs' console blocks."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "docs" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_s57_docs_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_app_command_quoted_in_prose_help_and_messages_exists() -> None:
    """The docs' console blocks were parsed against the click commands, but not a command
    quoted in their prose (`app data empty-trash --older-than 7d`), in a command's --help, or
    in a message of the code (`Run app data check --repair`): a renamed option there stayed
    on the path an operator copies from. Each now names a command and options that exist."""
    import click
    from click.testing import CliRunner

    from app.cli import cli

    docs = _docs_conftest()
    project = Path(__file__).resolve().parent.parent
    texts: dict[str, str] = {}
    for page in sorted((project / "docs").rglob("*.md")):
        if page.parent.name != "attacks":  # it quotes each round's commands as they were
            texts[str(page)] = page.read_text(encoding="utf-8")
    for source in sorted((project / "app").rglob("*.py")):
        texts[str(source)] = source.read_text(encoding="utf-8")

    def helps(command: click.Command, path: list[str]) -> None:
        shown = CliRunner().invoke(cli, [*path, "--help"], terminal_width=1000)
        texts[f"app {' '.join(path)} --help"] = shown.output
        if isinstance(command, click.Group):
            for name in command.list_commands(click.Context(command)):
                sub = command.get_command(click.Context(command), name)
                assert sub is not None
                helps(sub, [*path, name])

    helps(cli, [])
    checked, wrong = 0, []
    for where, text in texts.items():
        for span in re.findall(r"`([^`\n]+)`", text):
            try:
                commands = docs._app_command_words(span)
            except ValueError:  # not a shell line
                continue
            for args in commands:
                # A placeholder (`app COMMAND --help`, an f-string's {id}) or a redirection.
                if any(re.search(r"[{<>]|\.\.\.|^[A-Z]+$", word) for word in args):
                    continue
                checked += 1
                try:
                    docs.check_app_arguments(args)
                except AssertionError as error:
                    wrong.append(f"{where}: `{span}`: {error}")
    assert wrong == [], "\n".join(wrong)
    assert checked > 300, checked


def test_serve_started_without_standard_descriptors_serves_and_keeps_them_out_of_the_root(
    tmp_path: Path,
) -> None:
    """``app serve >&-`` (an init script, a supervisor that closes what it does not pass on)
    was uvicorn's traceback, exit 1, which ``Restart=on-failure`` restarts in a loop; with
    all three closed it exited 1 without a word. Each closed one is now ``/dev/null``, so no
    file of the data root opened later takes its number either."""
    from app.testing.live_server import published_port

    (tmp_path / "nothing.log").write_text("(its output is closed: see its exit code)\n")
    root = tmp_path / "root"
    # All three closed: before, this exited 1 without a word; `>&-` alone was the traceback.
    process = subprocess.Popen(
        ["sh", "-c", 'exec "$0" -m app serve --port 0 <&- >&- 2>&-', sys.executable],
        env=app_env(root),
    )
    try:
        port = published_port(root, process, tmp_path / "nothing.log")
        created = httpx.post(f"http://127.0.0.1:{port}/sessions", json={}, headers=TOKEN)
        assert created.status_code == 201, created.text
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{process.pid}/fd/{fd}") == os.devnull, fd
        # The server serves the next check too, for time: a held root's empty-trash hint.
        _the_trash_hint_s_curl_runs_as_printed(root)
    finally:
        process.terminate()
        code = process.wait(timeout=60)
    assert code == 0


def _the_trash_hint_s_curl_runs_as_printed(root: Path) -> None:
    """``app data empty-trash`` on a root a server holds prints the ``curl`` that asks the
    server to empty it. Its ``Authorization: Bearer $APP_API_TOKEN`` was empty where the
    token comes from a settings file (a deploy-time secrets file; here testing's
    ``.secrets.toml``): run as printed, it was refused 401 "missing bearer token". The header
    now reads the token by the app's own loading of the profile, never showing it."""
    if shutil.which("curl") is None:
        pytest.skip("needs curl, which the hint names")
    env = app_env(root)
    assert "APP_API_TOKEN" not in env  # testing's token is .secrets.toml's
    held = run_app("data", "empty-trash", "--older-than", "1d", env=env)
    assert held.returncode == 75, held.stderr
    hint = re.search(
        r"hint: to free space without stopping the server, ask it: (curl .+)", held.stderr
    )
    assert hint, held.stderr
    assert "testing-token-not-secret" not in held.stderr
    asked = subprocess.run(
        ["sh", "-c", hint.group(1) + " --silent --show-error"],
        env=env, capture_output=True, text=True, check=False, cwd="/",
    )  # fmt: skip
    assert asked.returncode == 0, (hint.group(1), asked.stderr)
    assert json.loads(asked.stdout) == {"removed": 0, "entries": []}, asked.stdout


def test_a_limit_lowered_below_a_session_s_files_keeps_them_and_says_how_many_it_holds(
    app_config: Any,
) -> None:
    """``max_files_per_session`` lowered below what a session holds (an upgrade's settings, an
    operator's tightening): its files stay served and replaceable, and a new name is
    refused, rightly, but the refusal said "it holds 2 files" of a session of 3 under a
    limit of 2, and to "delete a file", which left it full. It now says how many it holds,
    that the limit was lowered since, and how many to delete."""
    import dataclasses

    from app.errors import TooManyFilesError
    from app.storage import open_storage

    with open_storage(app_config, writer=True) as store:
        sid = store.create_session("three")["id"]
        for name in ("a", "b", "c"):
            store.put_file(sid, name, b"kept")
    lowered = dataclasses.replace(app_config, max_files_per_session=2)
    with open_storage(lowered, writer=True) as store:
        stream, _entry = store.open_file(sid, "c")
        with stream:
            assert stream.read() == b"kept"
        store.put_file(sid, "a", b"replaced", replace=True)  # a replace is no new name
        with pytest.raises(TooManyFilesError) as refused:
            store.put_file(sid, "d", b"new")
        assert sorted(f["name"] for f in store.list_files(sid)) == ["a", "b", "c"]
    said = refused.value.message
    assert "it holds 3 files, more than the 2 one session may hold now" in said, said
    assert "max_files_per_session was lowered since they came" in said
    assert "delete 2 of its files" in said
    assert "(APP_MAX_FILES_PER_SESSION)" in said
