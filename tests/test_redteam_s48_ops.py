"""Red team 48 on operations: the command line and the server as an operator runs them, on a
local data root.

What broke:

- a command whose standard output refused a write (``app data purge > /dev/full``, ``>
  report.txt`` on a full disk, a terminal gone) had that write's ``ENOSPC`` taken for the data
  root's: after the purge was done it said "the data root's filesystem is full; nothing was
  changed" and to empty the trash to make room, which would have deleted for good what it had
  just purged; with standard error unwritable, every refusal exited 1;
- ``~/data`` with ``HOME`` set but empty was the root ``/data`` (relative: a root under the
  settings directory), created and served empty;
- ``app serve --host 127.0.0.1:8000`` (or an address not this machine's) was "Another process
  uses that port; stop it", naming none;
- a root held by a maintenance command did not say which, nor that a stopped one (Ctrl-Z)
  never finishes; ``sessions show`` of a deleted session, and the second of two restores, sent
  the operator to listings that do not show it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import forked_app
import pytest
from test_server_e2e import app_env, run_app, wait_for

from app.errors import InvalidSettingError, shell_word
from app.lock import RootLock
from app.storage import open_storage


def _run_into(output: Path, errors: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    """``python -m app *args`` with its standard output sent to `output` (a file, or
    ``/dev/full``) and its standard error to `errors`: its exit code and standard error."""
    zygote = forked_app._forking(env)  # one child forked, as run_app does
    if zygote is None:
        with output.open("ab") as out, errors.open("wb") as err:
            code = subprocess.run(
                [sys.executable, "-m", "app", *args], env=env, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, check=False,
            ).returncode  # fmt: skip
    else:
        code = zygote.fork(env, list(args), output, errors).wait(timeout=120)
    return code, "" if errors == Path("/dev/full") else errors.read_text()


def test_a_purge_whose_output_cannot_be_written_says_so_not_that_the_data_root_is_full(
    app_config: Any, tmp_path: Path
) -> None:
    with open_storage(app_config, writer=True) as store:
        ids = sorted(store.create_session("s")["id"] for _ in range(2))
    env = {**os.environ, "APP_DATA_ROOT": str(app_config.data_root)}
    code, stderr = _run_into(Path("/dev/full"), tmp_path / "purge.err", env, "data", "purge")
    assert code == 74, stderr
    assert stderr == (
        "error: `app data purge` could not write its output: a write to its standard output "
        "failed (No space left on device, ENOSPC), where the output was sent (a file, a full "
        "disk, a terminal gone), not in the data root. Anything it changed is done: each "
        "change stays made, whole and audited, and `app sessions list --trash` and `app data "
        "check` show the data root as it is, which needs no room made (do not empty the "
        "trash for this). Send its output to a file on a disk with room, or to a terminal\n"
    )
    with open_storage(app_config, writer=True) as store:
        assert store.session_ids() == []
        assert sorted(e.session_id for e in store.list_trash()) == ids

    # A command that changes nothing says so, and no more of the data root.
    code, stderr = _run_into(
        Path("/dev/full"), tmp_path / "list.err", env, "sessions", "list", "--trash"
    )
    assert code == 74, stderr
    assert "(No space left on device, ENOSPC), where the output was sent" in stderr
    assert "not in the data root. It changes nothing. Send its output" in stderr
    assert "filesystem is full" not in stderr

    # Help, printed before any command runs, was a traceback (exit 1).
    code, stderr = _run_into(Path("/dev/full"), tmp_path / "help.err", env, "data", "--help")
    assert code == 74, stderr
    assert stderr.startswith("error: `app` could not write its output: a write to its standard")


# --- a data root under `~` with HOME empty or relative -------------------------------------


def test_a_data_root_under_home_is_refused_while_home_is_empty(tmp_path: Path) -> None:
    # `HOME=` (an `env` line, a container's `ENV HOME=`): Python expands `~/data` to
    # `/data`, a root `app serve` created and served, empty, beside the real one.
    done = run_app("status", env=app_env(Path("~/data"), HOME=""))
    assert done.returncode == 78, done.stderr
    assert (
        "error: profile 'testing': data_root = '~/data' (from environment APP_DATA_ROOT): "
        "starts with '~', but HOME is set and empty, so '~' would name the filesystem's root "
        "'/': write the path out in full where the value is set, or set HOME to this user's "
        "home directory"
    ) in done.stderr, done.stderr


def test_a_data_root_under_home_is_refused_while_home_is_relative(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A relative HOME made `~/data` a root under the settings directory.
    from app import config

    monkeypatch.setenv("HOME", "home/app")
    monkeypatch.setenv("APP_DATA_ROOT", "~/data")
    with pytest.raises(InvalidSettingError) as refused:
        config.load("testing")
    assert (
        "starts with '~', but HOME is 'home/app', not an absolute path, so '~' names no home "
        "directory: write the path out in full"
    ) in str(refused.value)


# --- app serve on an address it cannot use ------------------------------------------------


def test_a_host_that_cannot_be_listened_on_is_not_called_a_port_in_use(tmp_path: Path) -> None:
    # `--host 127.0.0.1:8000` (a URL's host and port run together), or an address that is
    # not this machine's: both said "Another process uses that port; stop it", naming none.
    root = tmp_path / "data"
    typo = run_app("serve", "--host", "127.0.0.1:8000", "--port", "0", env=app_env(root))
    assert typo.returncode == 69, typo.stderr
    assert (
        "error: cannot listen on 127.0.0.1:8000:0: the host '127.0.0.1:8000' does not resolve "
        "to an address (Name or service not known). No other process is in the way, and the "
        "data root's lock was released. Set the host to an address of this machine (127.0.0.1, "
        "0.0.0.0 for every interface) or a name that resolves to one, with --host or APP_HOST "
        "(`app config` shows where host is set); the port is set apart, with --port or "
        "APP_PORT\n"
    ) in typo.stderr, typo.stderr
    elsewhere = run_app("serve", "--port", "0", env=app_env(root, APP_HOST="192.0.2.1"))
    assert elsewhere.returncode == 69, elsewhere.stderr
    assert (
        "error: cannot listen on 192.0.2.1:0: '192.0.2.1' is not an address of this machine, "
        "Cannot assign requested address (EADDRNOTAVAIL). No other process is in the way"
    ) in elsewhere.stderr, elsewhere.stderr
    assert "Another process uses that port" not in typo.stderr + elsewhere.stderr
    assert run_app("status", env=app_env(root)).stdout.endswith("held by: nobody\n")


# --- a root held by a maintenance command -------------------------------------------------


def test_a_root_held_by_a_maintenance_command_is_refused_naming_that_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "held by pid N, kind maintenance, ...; stop it (kill N)": which command, a `data check`
    # that reads or an `empty-trash` that deletes, the operator had to find with `ps`.
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setattr(
        sys, "argv", ["/srv/app/.venv/bin/app", "data", "empty-trash", "--older-than", "7d"]
    )
    with RootLock(root, kind="maintenance", profile="testing"):
        refused = run_app("data", "purge", env=app_env(root))
    assert refused.returncode == 75, refused.stderr
    assert (
        f"kind maintenance, profile testing, host {socket.gethostname()}, since "
    ) in refused.stderr, refused.stderr
    assert (
        ", running `app data empty-trash --older-than 7d`; wait for it to finish (`flock -s "
        f"{shell_word(root / '.server.lock')} true` returns once it lets go) and retry, or "
        f"stop it (kill {os.getpid()}; what it had begun is finished by `app data check "
        "--repair`). `app status` shows the holder\n"
    ) in refused.stderr, refused.stderr


def test_show_of_a_deleted_session_names_its_trash_entry_and_the_restore(app_config: Any) -> None:
    # "no session ... `app sessions list` shows the sessions", which does not show it.
    with open_storage(app_config, writer=True) as store:
        session_id = store.create_session("s")["id"]
        entry = store.delete_session(session_id).name
    env = {**os.environ, "APP_DATA_ROOT": str(app_config.data_root)}
    shown = run_app("sessions", "show", session_id, env=env)
    assert shown.returncode == 66, shown.stderr
    assert shown.stderr == (
        f"error: no session '{session_id}' in sessions: it was deleted, and is in the trash "
        f"(entry {entry}). `app sessions restore {session_id}` brings it back; `app sessions "
        "list --trash` shows the trash\n"
    )


def test_the_second_of_two_restores_of_one_session_says_it_is_restored_already(
    app_config: Any,
) -> None:
    # Two `app sessions restore ID` at once: the second retries the lock, then found the
    # trash empty of it and was sent to `app sessions list --trash`, which does not show it.
    with open_storage(app_config, writer=True) as store:
        session_id = store.create_session("s")["id"]
        store.delete_session(session_id)
    env = {**os.environ, "APP_DATA_ROOT": str(app_config.data_root)}
    assert run_app("sessions", "restore", session_id, env=env).returncode == 0
    again = run_app("sessions", "restore", session_id, env=env)
    assert again.returncode == 66, again.stderr
    assert again.stderr == (
        f"error: no session '{session_id}' in the trash: it is in sessions (restored already, "
        f"or never deleted), so nothing was changed. `app sessions show {session_id}` shows it\n"
    )


def test_a_refusal_keeps_its_exit_code_when_standard_error_cannot_be_written(
    tmp_path: Path,
) -> None:
    # `app data empty-trash 2>>cron.log` on a full disk: every refusal exited 1 (a traceback
    # nobody could read), so the job could not tell a held root (75, retry) from the rest.
    root = tmp_path / "data"
    root.mkdir()
    env = app_env(root)
    with RootLock(root, kind="server", profile="testing"):
        held, _ = _run_into(tmp_path / "out", Path("/dev/full"), env, "data", "empty-trash")
    assert held == 75
    usage, _ = _run_into(tmp_path / "out", Path("/dev/full"), env, "status", "--bogus")
    assert usage == 2

    # Started with standard output closed (`>&-`), Python has none and click prints nothing:
    # the guard above must not turn that into a traceback.
    closed = subprocess.run(
        [sys.executable, "-m", "app", "status"], env=env, stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, check=False, pass_fds=(), close_fds=True,
        preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert (closed.returncode, closed.stderr) == (0, "")


_HOLD = """
import sys, time
from pathlib import Path
from app.lock import RootLock
sys.argv = ["app", "data", "check", "--repair"]
with RootLock(Path(sys.argv_root), kind="maintenance", profile="testing"):
    Path(sys.argv_root).with_name("held").write_text("")
    time.sleep(600)
"""


@pytest.fixture(name="maintenance_holder")
def _maintenance_holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A maintenance command holding ``tmp_path/data``, as `app data check --repair` does,
    killed at the end."""
    root = tmp_path / "data"
    root.mkdir()
    code = _HOLD.replace("sys.argv_root", repr(str(root)))
    process = forked_app.python_c(code, [], tmp_path / "holder.log")
    try:
        wait_for((tmp_path / "held").exists, "the holder to take the lock")
        yield root, process
    finally:
        process.kill()
        process.wait()


def test_a_root_held_by_a_stopped_command_says_to_resume_it_not_to_wait(
    maintenance_holder: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    # Ctrl-Z on `app data check --repair`, the job forgotten: every start and command was
    # refused 75, "wait for it to finish", which a stopped process never does.
    root, holder = maintenance_holder
    holder.send_signal(signal.SIGSTOP)
    refused = run_app("data", "purge", env=app_env(root))
    assert refused.returncode == 75, refused.stderr
    assert (
        "running `app data check --repair`, stopped by a signal (SIGSTOP, Ctrl-Z in its "
        "shell): it waits to be resumed; resume it to let it finish (`fg` in the shell that "
        f"started it, or kill -CONT {holder.pid}), or end it (kill {holder.pid}, then kill "
        f"-CONT {holder.pid}), then retry. `app status` shows the holder\n"
    ) in refused.stderr, refused.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a network namespace of its own (`unshare -n`) needs root and util-linux's unshare",
)
def test_a_host_name_that_cannot_be_looked_up_now_is_retried_not_given_up(tmp_path: Path) -> None:
    # A boot that raced its DNS (here: a network namespace with no route to the resolver):
    # exit 69, "does not resolve", which the deploy guide's unit does not restart.
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "app", "serve", "--host", "app-rt48.example",
         "--port", "0"],
        env=app_env(tmp_path / "data"), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 75, done.stderr
    assert (
        "error: cannot listen on app-rt48.example:0: the host 'app-rt48.example' could not be "
        "looked up now (Temporary failure in name resolution). No other process is in the way, "
        "and the data root's lock was released. Retry once name resolution works (exit 75: a "
        "service manager restarts it), or give the host as an address"
    ) in done.stderr, done.stderr
