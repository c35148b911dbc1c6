"""Red team 62 on operations (branch rt-ops62): every refusal's remedy, run as written.

What broke:

- a command stopped by Ctrl-C or SIGTERM was told to run "`app data empty-trash` again if
  it is still wanted", its bare name, whatever it had been given. Run as written after a
  stopped ``app data empty-trash --older-than 30d``, that emptied the whole trash, the
  sessions deleted this month with it; ``app data restamp`` again (its ``--from`` left out)
  and ``app sessions restore`` again (its id left out) were usage errors. The stop now names
  the command line as it was given (`app.errors.CommandInterruptedError.again`); and one
  stopped before it took the lock, which had changed nothing, is no longer sent to stop the
  server for a ``check --repair`` first (`CommandInterruptedError.locked`);
- every `app ...` a message or a report names was bare, so it selected the profile the
  shell's ``ENV_FOR_DYNACONF`` names, or development, not the one ``--profile`` had
  selected. After ``app --profile production data purge --yes-i-mean-it``, "`app sessions
  list --trash` shows them" listed another profile's trash; a refusal's "`app status`
  shows the holder" said "held by: nobody" of another root; "`app data check --repair`"
  repaired another root. Each now carries the ``--profile`` the command was given
  (`app.errors.as_selected`, on every line the command line prints and a server logs);
- the hint ``app data empty-trash`` prints on a root a server holds, a ``curl`` to the
  server, sent no token where the command's profile had none: a protected profile's token
  commonly lives in the service's environment alone, which the operator's shell lacks, and
  the server of a protected profile never runs without one. Run as written, it was refused
  401 "missing bearer token". On a protected profile it now sends ``$APP_API_TOKEN``, and
  the shell, where that is not set, stops it naming the variable;
- two maintenance commands started together (two cron jobs of one minute): the second one's
  last try for the lock failed, the first then ended, and the second found its JSON but no
  flock in ``/proc/locks``, which reads as a holder in a PID namespace out of sight: "stop
  it there (another container's ...)", 75, of a process that had just finished here. A
  refused acquire now tries once more after reading the holder (`app.lock.RootLock.acquire`);
- "wait for it to finish and retry" named nothing to wait with; it names the ``flock -s
  <root>/.server.lock true`` that returns the moment the holder lets go;
- ``app sessions show ID --json``, under an output encoding without a character of the
  session (an emoji in a title, a Latin-1 locale), wrote Python's ``\\U0001f600``, which is
  no JSON escape: it is ASCII JSON now, as every other ``--json`` is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import forked_app
import pytest
from click.testing import CliRunner
from faults import NO_BYTECODE, app_with_fault, needs_strace, strace_prefix
from test_server_e2e import app_env

from app.cli import cli
from app.config import load
from app.storage import open_storage


def _commands(text: str) -> list[str]:
    """The `app ...` commands a message names, between backticks, one line of it."""
    return re.findall(r"`(app [^`]*)`", " ".join(text.split()))


@needs_strace
def test_a_stopped_command_is_told_to_run_again_as_it_was_given(app_config: Any) -> None:
    """``app data empty-trash --older-than 30d`` stopped by Ctrl-C (a real SIGINT, sent by
    strace as it takes the data root's lock) was told to run "`app data empty-trash` again":
    run as written, that emptied the whole trash, a session deleted a minute ago with it.
    It names the command as given; run as written, it keeps the entry. And stopped before
    it held the lock, it had changed nothing, but was told to run `app data check --repair`
    "with no server on the data root" first: a server stopped for a repair of nothing."""
    with open_storage(app_config, writer=True) as store:
        deleted = store.create_session("deleted a minute ago", {})["id"]
        store.delete_session(deleted)
    root = app_config.data_root
    given = ("data", "empty-trash", "--older-than", "30d")
    stopped = app_with_fault(root, "flock:signal=INT:when=1", root / ".server.lock", command=given)
    assert stopped.returncode == 130, stopped.stderr
    message = " ".join(stopped.stderr.split())
    assert "before it took the data root's lock, so it changed nothing" in message, message
    assert "--repair" not in message, message
    again = re.search(r"run `([^`]*)` again if it is still wanted", message)
    assert again, message
    assert shlex.split(again.group(1)) == ["app", *given], again.group(1)

    ran = CliRunner().invoke(cli, shlex.split(again.group(1))[1:])
    assert ran.exit_code == 0, ran.output
    with open_storage(app_config, writer=False) as store:
        assert [entry.session_id for entry in store.list_trash()] == [deleted]


@pytest.mark.app_profile("production")
def test_a_remedy_names_the_profile_and_the_token_the_command_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beside a live production server whose token is in its own environment alone, as
    ``app --profile production`` from a shell whose default profile is another (here the
    run's testing): each `app ...` a refusal or a report names, and the ``curl`` of the trash
    hint, run as written, acts on production's root and is answered by its server."""
    root = tmp_path / "production"
    token = "a-token-only-the-service-has-0123456789"
    env = app_env(root, profile="production", APP_API_TOKEN=token)
    server, _url = forked_app.start_server(env, root, tmp_path / "server.log")
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    monkeypatch.delenv("APP_API_TOKEN", raising=False)
    assert load().profile == "testing"  # the shell's default, which a bare `app` selects
    runner = CliRunner()
    try:
        held = runner.invoke(
            cli, ["--profile", "production", "data", "empty-trash", "--yes-i-mean-it"]
        )
        assert held.exit_code == 75, held.output
        status = [c for c in _commands(held.output) if c.endswith(" status")]
        assert status == ["app --profile production status"], held.output
        shown = runner.invoke(cli, shlex.split(status[0])[1:])
        assert f"pid {server.pid}," in shown.output, shown.output

        hint = re.search(r"ask it: (curl .+)", held.output)
        assert hint, held.output
        if shutil.which("curl") is not None:
            _the_hint_s_curl_is_answered(hint.group(1), token)
    finally:
        from app.testing.live_server import stop_server

        stop_server(server)

    # A client's title that names a command is its text: shown as stored, never rewritten.
    with open_storage(load("production", environ=env), writer=True) as store:
        store.create_session("see `app status`", {})
    listed = runner.invoke(cli, ["--profile", "production", "sessions", "list"])
    assert "  see `app status`\n" in listed.output, listed.output
    purged = runner.invoke(cli, ["data", "purge", "--yes-i-mean-it", "--profile", "production"])
    assert purged.exit_code == 0, purged.output
    (listing,) = [c for c in _commands(purged.output) if "list" in c]
    assert listing == "app --profile production sessions list --trash", purged.output


def _the_hint_s_curl_is_answered(curl: str, token: str) -> None:
    """The hint's ``curl`` run by ``sh`` as printed: in a shell without the token it stops
    before sending anything, naming ``APP_API_TOKEN``; with the server's exported, as it
    says, the server empties the trash (it was a 401, a request without a token)."""
    shell = {k: v for k, v in os.environ.items() if k != "APP_API_TOKEN"}
    bare = subprocess.run(
        ["sh", "-c", curl + " --silent --show-error"],
        env=shell, capture_output=True, text=True, check=False, cwd="/",
    )  # fmt: skip
    assert bare.returncode != 0 and "APP_API_TOKEN" in bare.stderr, (curl, bare.stderr)
    asked = subprocess.run(
        ["sh", "-c", curl + " --silent --show-error"],
        env={**shell, "APP_API_TOKEN": token}, capture_output=True, text=True, check=False,
        cwd="/",
    )  # fmt: skip
    assert asked.returncode == 0, (curl, asked.stderr)
    assert json.loads(asked.stdout) == {"removed": 0, "entries": []}, asked.stdout


def test_json_is_json_whatever_the_output_s_encoding_lacks(
    app_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``app sessions show ID --json`` of a session titled with an emoji, its standard output
    Latin-1 (a Latin-1 locale, ``PYTHONIOENCODING=latin-1``): the emoji was written as
    Python's ``\\U0001f600``, an escape JSON does not have, so a script's parser refused the
    whole answer; and a U+202E went to the terminal as it is. The entry point's own stream
    handling (`app.cli.main`) over a real Latin-1 stream writes JSON, parsed back to the
    title as stored."""
    import io
    import sys

    from app.cli import main

    title = "caf\u00e9 \U0001f600 \u202eexe.txt"
    with open_storage(app_config, writer=True) as store:
        sid = store.create_session(title, {"note": "\u2603"})["id"]
    written = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(written, encoding="latin-1"))
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # main() wraps both: put back after
    monkeypatch.setattr(sys, "argv", ["app", "sessions", "show", sid, "--json"])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code in (0, None)
    sys.stdout.flush()
    shown = json.loads(written.getvalue().decode("latin-1"))
    assert (shown["title"], shown["metadata"]) == (title, {"note": "\u2603"})
    assert written.getvalue().isascii(), written.getvalue()


@needs_strace
def test_a_holder_that_let_go_as_it_was_named_is_not_called_out_of_sight(
    app_config: Any, tmp_path: Path
) -> None:
    """Two maintenance commands started together (two cron jobs of one minute): the second
    one's last try for the lock failed, the first then ended, and the second, reading who
    held it, found the holder's JSON but no flock in ``/proc/locks``: "held by pid N in a
    PID namespace this process cannot see (another container's, or the host's: stop it
    there)", exit 75, of a holder that had let go. Here the holder (this process) lets go
    while ``app data purge`` is stopped, by strace, at that read of ``/proc/locks``: the
    purge now takes the free lock and runs."""
    with open_storage(app_config, writer=True) as store:
        store.create_session("purged", {})
    holding = open_storage(app_config, writer=True)
    trace = tmp_path / "trace"
    try:
        prefix = strace_prefix("openat:signal=STOP:when=1", Path("/proc/locks"))
        prefix[prefix.index("/dev/null")] = str(trace)
        env = {**os.environ, **NO_BYTECODE, "APP_DATA_ROOT": str(app_config.data_root)}
        tracer = subprocess.Popen(
            [*prefix, sys.executable, "-m", "app", "data", "purge"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        stopped = _stopped_at_the_read(tracer, trace)
    finally:
        holding.close()
    os.kill(stopped, signal.SIGCONT)
    out, err = tracer.communicate()
    assert tracer.returncode == 0, err
    assert "moved 1 session(s)" in out, out
    assert "namespace" not in err, err


def _stopped_at_the_read(tracer: subprocess.Popen[str], trace: Path) -> int:
    """The pid of strace's child once strace has seen it stopped by the SIGSTOP it sent."""
    while True:
        assert tracer.poll() is None, tracer.communicate()
        said = trace.read_text() if trace.exists() else ""
        found = re.search(r"^(\d+) +--- stopped by SIGSTOP ---$", said, re.MULTILINE)
        if found:
            return int(found.group(1))
        time.sleep(0.01)  # strace's to see: nothing to wait on from here


#: A maintenance command's hold, as a script of the app's classes: it holds the root of the
#: environment's profile until the test writes to its second FIFO, and says so on its first.
HOLD = """
import sys
from pathlib import Path
from app.config import load
from app.storage import open_storage
with open_storage(load(), writer=True) as store:
    # Opened before it says so: a FIFO's reader that opens it after its last writer closed
    # waits in the open for ever (red team 62 on regress: a test that let go at once).
    with Path(sys.argv[2]).open() as done:
        Path(sys.argv[1]).write_text("held")
        done.read()
"""


def test_a_refusal_names_the_command_that_waits_for_its_holder(
    app_config: Any, tmp_path: Path
) -> None:
    """A root held by another maintenance command was told "wait for it to finish and
    retry", naming nothing to wait with. The refusal names a ``flock``: run as written by
    ``sh``, it returns once the holder has let go, and the command run again then runs."""
    if shutil.which("flock") is None:
        pytest.skip("needs flock(1), which the refusal names")
    with held_by_another(tmp_path) as holder:
        refused = forked_app.run(dict(os.environ), ["data", "purge"])
        assert refused.returncode == 75, refused.stderr
        message = " ".join(refused.stderr.split())
        (wait,) = re.findall(r"`(flock -s [^`]+ true)` returns once it lets go", message)
        assert shlex.split(wait)[2] == str(app_config.data_root / ".server.lock"), wait
        waiting = subprocess.Popen(["sh", "-c", wait])
    assert waiting.wait() == 0
    assert holder.wait() == 0
    again = forked_app.run(dict(os.environ), ["data", "purge"])
    assert again.returncode == 0, again.stderr


@contextlib.contextmanager
def held_by_another(tmp_path: Path) -> Iterator[Any]:
    """The test's data root held by another process (a maintenance command's open, `HOLD`)
    inside the block; it lets go and exits as the block ends (wait for it with ``.wait()``)."""
    ready, done = tmp_path / "ready", tmp_path / "done"
    os.mkfifo(ready)
    os.mkfifo(done)
    # Open for both: the holder's read of it waits until this end is closed, whenever it opens.
    ends = os.open(done, os.O_RDWR)
    holder = forked_app.python_c(HOLD, [str(ready), str(done)], tmp_path / "holder.log")
    try:
        _holds(ready, holder.pid, tmp_path / "holder.log")
        yield holder
    finally:
        os.close(ends)  # the holder's read ends: it lets go of the root and exits


def _holds(ready: Path, pid: int, log: Path) -> None:
    """Return once the holder `pid` says on the FIFO `ready` that it holds the root; fail if
    it exits first (a read of the FIFO alone would wait for ever)."""
    fifo = os.open(ready, os.O_RDWR)  # never blocks, and never reads an end of file
    process = os.pidfd_open(pid)
    try:
        readable, _, _ = select.select([fifo, process], [], [])
        assert fifo in readable, log.read_text()
        assert os.read(fifo, 16) == b"held"
    finally:
        os.close(fifo)
        os.close(process)
