"""Red team 63 on regress: session 62's last merges.

What broke:

- Row security on a table that is not the app's (red team 62 on regress runs every
  connection with ``row_security`` off): a DBA's audit, fed by a trigger after each insert
  into ``app_files`` as the app's own refusal advises, into a table of the DBA's with row
  security and a policy that lets the app's role insert, had every upload refused once the
  server ran (the open leaves such a trigger alone), and the remedy said that row security
  had been switched on for an app table and to disable it, on the DBA's own table. Such a
  refusal now names the table as not the app's and the function that reached it, and
  ``ALTER FUNCTION <it> SET row_security = on``, which, run as written, has the upload stored
  and the audit written, row security on the DBA's table kept.

- A data root whose path holds a backticked ``app ...`` (a directory so named), held by
  another process: red team 62 on regress left every ``str`` field an error quotes as it
  is, but a root's path is a ``Path``, so the refusal of ``app --profile testing data
  purge`` named another root and, as its way to wait, a ``flock`` of another lock file,
  which flock could not open once the holder had let go. `quoted_values` now leaves a path
  wherever the message shows it, inside a shell word too.

- A test in a network namespace of its own (``unshare`` for its thread): its live server was
  forked from the run's warm interpreter in the run's namespace, where the fixture never
  reached it, and a zygote first started there forked every later server of the run in it.
  What a child inherits (`app.testing.zygote.inherited`) now includes the thread's
  namespaces, control groups and privileges; while they differ from the run's, the plain
  start is made.

- A settings file's ``page_size = "@merge 1"`` (``@del``, ``@reset``, ``@insert``) in a
  profile's section, where dynaconf finds nothing to change: the refusal named dynaconf's
  object, ``Merge([1]) on 140606412562128``. It names the value as written, as an
  instruction that found nothing to change, and what to write instead.

- A worker of ``app --profile production serve --workers N`` (a spawned process) was never
  told the profile came from ``--profile``, and logged its refusal's text as an argument,
  which the log filter leaves as it is: it said to run `app data check --repair`,
  development's as written. It selects the profile for its lines' commands, and logs the
  error itself.

- An ``OSError`` given to a log line's format: the file it names, called `app status`, was
  logged with the ``--profile`` of ``app --profile testing serve``; only ``str`` and path
  arguments were left as given. An error of another's is left as it is too.

- A remedy naming a file whose name holds ``--profile`` (``--file notes--profile.txt``):
  the rewrite took "--profile" anywhere in a command's text for its own selection and left
  it without the profile; run as written, it acted on development's root. A command keeps
  its own selection only where its words give ``--profile`` a name.

- The server's log after a failed fsync gives the operator's steps (`AFTER_FAILED_SYNC`) as
  an argument of its line, which the filter left as given: under ``app --profile
  production serve`` it said to run `app data check`, development's as written. The app's
  own text given to a log line is marked (`app.errors.AppText`) and given the profile.

- The HTTP answers of a server started with ``--profile`` (an error's message, the health
  reason) named every `app ...` without it, where its log names it. They name it now.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import forked_app
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from replicas import production_on
from test_redteam_s62_ops import held_by_another
from test_remote_store import PROFILE, _replica

from app.config import load
from app.errors import InvalidSettingError, shell_word
from app.remote import pg
from app.remote.errors import DatabaseRefusedError
from app.storage import open_storage
from app.testing import zygote


def test_row_security_on_a_table_of_another_s_trigger_is_named_with_its_function(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: refused, "row security was switched on for an app table since this process
    # opened the database ... `ALTER TABLE <that table> DISABLE ROW LEVEL SECURITY`".
    role = f"rt63r_{os.getpid()}"
    with postgres_engine.owned_by_a_role(role) as (name, url):
        pg.open_database(url, PROFILE)
        with postgres_engine.connect(name) as admin:
            admin.execute(
                "CREATE TABLE dba_audit (who text, what text);"
                "ALTER TABLE dba_audit ENABLE ROW LEVEL SECURITY;"
                f"CREATE POLICY dba_audit_insert ON dba_audit FOR INSERT TO {role}"
                " WITH CHECK (true);"
                f"GRANT INSERT ON dba_audit TO {role};"
                "CREATE FUNCTION dba_log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " INSERT INTO dba_audit VALUES (current_user, TG_TABLE_NAME); RETURN NULL;"
                " END $$;"
                "CREATE TRIGGER dba_log AFTER INSERT ON app_files FOR EACH ROW"
                " EXECUTE FUNCTION dba_log()"
            )  # type: ignore[arg-type]
        with _replica(s3_engine, (url, new_blob_url(s3_engine))) as store:
            session_id = store.create_session("t")["id"]
            with pytest.raises(DatabaseRefusedError) as refused:
                store.put_file(session_id, "a.txt", b"acknowledged")
            message = refused.value.message
            assert 'row-level security policy for table "dba_audit"' in message
            undo = "ALTER FUNCTION dba_log() SET row_security = on"
            assert message.endswith(
                "Row security applies to the app's role on table dba_audit, which is not one "
                "of the app's: a trigger of another's on the app's tables reaches it as that "
                "role, through function dba_log(). The app's connections run with row_security "
                "off, so that no read of an app table returns some of its rows as all of them, "
                "and with it off PostgreSQL refuses every statement a policy would apply to, "
                f"that function's too. As that function's owner, `{undo}` has the policies of "
                "dba_audit apply inside it as before and leaves the app's reads as they are "
                "(or make it SECURITY DEFINER, owned by the owner of dba_audit); row security "
                "on dba_audit stays on"
            ), message
            assert store.list_files(session_id) == []
            with postgres_engine.connect(name) as admin:
                admin.execute(undo)  # type: ignore[arg-type]
            store.put_file(session_id, "a.txt", b"acknowledged")
            assert [f["name"] for f in store.list_files(session_id)] == ["a.txt"]
        with postgres_engine.connect(name) as admin:
            assert admin.execute("SELECT who, what FROM dba_audit").fetchall() == [
                (role, "app_files")
            ]
            secured = "SELECT relrowsecurity FROM pg_class WHERE relname = 'dba_audit'"
            assert admin.execute(secured).fetchone() == (True,)  # type: ignore[arg-type]


def test_a_root_s_path_in_a_refusal_is_not_given_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data root whose path holds "`app ...`", held by another process: the refusal of
    ``app --profile testing data purge`` gave that part of the path the ``--profile`` (the
    root's path is no ``str`` field, which `quoted_values` alone left), so it named another
    root, and its way to wait (``flock -s <root>/.server.lock true``) another lock file:
    run as written, once the holder had let go, flock could not open it (exit 1)."""
    if shutil.which("flock") is None:
        pytest.skip("needs flock(1), which the refusal names")
    root = tmp_path / "a`app status`b"
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    with held_by_another(tmp_path) as holder:
        refused = forked_app.run(dict(os.environ), ["--profile", "testing", "data", "purge"])
    assert holder.wait() == 0
    assert refused.returncode == 75, refused.stderr
    message = " ".join(refused.stderr.split())
    lock_file = shell_word(root / ".server.lock")
    # Before the fix: "data root .../a`app --profile testing status`b is held by ...".
    assert f"data root {root} is held by" in message, message
    (wait,) = re.findall(r"\(`(flock -s .*? true)` returns once it lets go\)", message)
    assert wait == f"flock -s {lock_file} true", message
    assert "`app --profile testing status` shows the holder" in message, message
    assert subprocess.run(["sh", "-c", wait], check=False).returncode == 0


class _Run:
    """A run of the test's own for `app.testing.zygote` (its zygote and remembered values),
    so that the run's own zygote, which other tests share, is left alone."""


_CLONE_NEWNET = 0x40000000


@contextmanager
def _network_namespace_of_its_own() -> Iterator[str]:
    """The calling thread in a new network namespace, its loopback up, inside the block;
    back in its own after it. Yields the new namespace's name (``net:[...]``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            pytest.skip(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
        try:
            with socket.socket() as any_socket:  # SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP
                flags = struct.unpack(
                    "16sH", fcntl.ioctl(any_socket, 0x8913, struct.pack("16sH", b"lo", 0))
                )[1]
                fcntl.ioctl(any_socket, 0x8914, struct.pack("16sH", b"lo", flags | 1))
            yield os.readlink("/proc/thread-self/ns/net")
        finally:
            assert libc.setns(back, _CLONE_NEWNET) == 0, os.strerror(ctypes.get_errno())
    finally:
        os.close(back)


def test_a_live_server_is_not_forked_outside_the_network_namespace_of_its_test(
    tmp_path: Path,
) -> None:
    """A test in a network namespace of its own (``unshare`` for its thread, as a fixture
    that keeps a test off the network does): its live server was forked from the run's warm
    interpreter, in the run's namespace, where the fixture's wait never reached it ("app
    serve did not answer", after 24 s, by hand); a zygote started there served every later
    test of the run from that namespace. Neither is forked from now: the plain start, which
    the fixture then makes, is the test thread's child (not started here: its 0.45 s of
    CPU is the plain start's, tried by hand)."""
    if not hasattr(os, "pidfd_open"):
        pytest.skip("the live server's warm interpreter needs os.pidfd_open")
    env = {**os.environ, "APP_HOST": "127.0.0.1", "ENV_FOR_DYNACONF": "testing"}
    env["APP_DATA_ROOT"] = str(tmp_path / "live-data")
    run, later = _Run(), _Run()
    for each in (run, later):
        zygote.remember_the_run(each)
        zygote.expect(each, 2)
    started = zygote.forking(env, run)  # the run's warm interpreter, started outside
    assert started is not None
    try:
        with _network_namespace_of_its_own() as ours:
            assert os.readlink(f"/proc/{started.process.pid}/ns/net") != ours
            # Before the fix: a zygote started here, for the run's later servers too.
            assert zygote.forking(env, later) is None
            assert "zygote" not in zygote._RUNS[later]
            # Before the fix: the zygote outside, whose fork `app_live_server` waited for in
            # vain; the fixture's plain start (a child of this thread) is made here.
            assert zygote.forking(env, run) is None
        assert zygote.forking(env, run) is started  # outside again: forked as before
    finally:
        started.process.kill()
        for each in (run, later):
            zygote.end_the_run(each)


def test_a_merge_instruction_in_a_profile_s_section_is_named_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``page_size = "@merge 1"`` (or ``@del``, ``@reset``, ``@insert``) in a profile's
    section: dynaconf leaves its merge object as the value, and the refusal named it as
    Python shows it, ``page_size = Merge([1]) on 140606412562128``, text the file does not
    hold, with no word of what to write instead."""
    monkeypatch.setenv("APP_SETTINGS_DIR", str(tmp_path))
    for token in ("@merge 1", "@del"):
        (tmp_path / "settings.toml").write_text(
            f'[testing]\ndata_root = "data/testing"\npage_size = "{token}"\n'
            '[development]\ndata_root = "data/development"\n'
            '[production]\ndata_root = "data/production"\n'
        )
        with pytest.raises(InvalidSettingError) as refused:
            load("testing")
        assert refused.value.exit_code == 78
        kind = token[1:].split()[0].capitalize()
        assert refused.value.message == (
            f"profile 'testing': page_size = {token!r} (from settings.toml [testing]): is "
            f"dynaconf's `{token.split()[0]}`, an instruction to change a value already there "
            "(merge into it, reset it, insert into it or delete it), which in a profile's "
            f"section finds none to change: dynaconf leaves its own {kind} object as the "
            "value. Write the value itself (such as page_size = 50), or remove the line to "
            "take [default]'s or the built-in one"
        )


WORKER = """
import os
import socket
from app.server.run import _worker, setting_digests
from app.config import load
listening = socket.create_server(("127.0.0.1", 0))
# As a spawned worker is given them: the digests of serve's settings, which it loads again and
# compares (a forked one is given serve's Config itself).
given = setting_digests(load("production", profile_source="--profile", serving=True))
try:
    _worker("production", "--profile", "127.0.0.1", listening, os.getppid(), given)
except SystemExit as stop:
    print("exit", stop.code)
"""


def test_a_worker_of_serve_workers_names_the_profile_it_was_given(
    tmp_path: Path, postgres_engine: PostgresEngine, s3_engine: S3Engine, blob_url: str
) -> None:
    """``app --profile production serve --workers 2``: each worker is a process of its own
    (multiprocessing's spawn then, a fork of serve since perf-ops74), which loads the profile
    it is given but was never told that it came from ``--profile``. Its log named every `app
    ...` without it (red team 62 on operations gives them the profile): a worker refused the
    database for a trigger of the app's switched off said to run `app data check --repair`,
    which, as written, repairs development. Run here as `serve_workers` starts it, with the
    arguments it gives."""
    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as production:
        pg.open_database(production.database_url, "production")
        with postgres_engine.connect(production.database_url.rpartition("/")[2]) as admin:
            admin.execute("ALTER TABLE app_sessions DISABLE TRIGGER app_session_count")
        done = forked_app.run_c(WORKER, production.env)
    assert "exit 78" in done.stdout, done.stdout + done.stderr
    shown = " ".join(done.stderr.split())
    assert "the app's trigger app_session_count on app_sessions is off" in shown, shown
    # Before the fix: "where a trigger of the app's was off, `app data check --repair` ...".
    assert (
        "where a trigger of the app's was off, `app --profile production data check --repair` "
        "(every replica stopped) counts the live sessions again"
    ) in shown, shown


def test_a_file_another_s_error_names_in_a_log_line_is_logged_as_it_is(tmp_path: Path) -> None:
    """An ``OSError`` given to a log line's format (``could not move blob %s to the trash yet
    (%s)``): red team 62 on regress left a ``str`` argument as it was, not an error of
    another's, so the file it names, called `app status`, was logged as `app --profile
    testing status`, a file that is not there."""
    name = tmp_path / "`app status`"
    with pytest.raises(OSError) as failed:
        name.rmdir()  # no such directory: the error names it
    shown = _logged("testing", "could not remove %s; `app data check` names it", failed.value)
    # Before the fix: "... No such file or directory: '.../`app --profile testing status`'".
    assert shown == f"could not remove {failed.value}; `app --profile testing data check` names it"


def test_a_remedy_naming_a_file_whose_name_holds_profile_is_given_the_profile(
    app_config: object,
) -> None:
    """A file called ``notes--profile.txt`` deleted, then uploaded again: ``app --profile
    testing sessions restore ID --file notes--profile.txt`` is refused, and its remedy, the
    restore of the trash's copy by its entry, was left without ``--profile`` (the rewrite
    took "--profile" anywhere in the command for the option): run as written, it restored
    into development's root."""
    name = "notes--profile.txt"
    with open_storage(load(), writer=True) as store:
        session = store.create_session("a review", {})["id"]
        store.put_file(session, name, b"first")
        entry = store.delete_file(session, name).name
        store.put_file(session, name, b"again")
    refused = forked_app.run(
        dict(os.environ), ["--profile", "testing", "sessions", "restore", session, "--file", name]
    )
    assert refused.returncode != 0
    shown = " ".join(refused.stderr.split())
    # Before the fix: "then run `app sessions restore ID --file notes--profile.txt --entry E`".
    assert (
        f"then run `app --profile testing sessions restore {session} --file {name} --entry {entry}`"
    ) in shown, shown


def test_the_remedy_a_log_line_gives_after_a_failed_fsync_names_the_profile() -> None:
    """The server's log after a failed fsync (`app.dataroot`'s line, and the start-up
    check's) gives the operator's steps, `AFTER_FAILED_SYNC`, as an argument of its format,
    which red team 62 on regress leaves as given: `app --profile production serve` logged
    "run `app data check`", development's check as written, before the start."""
    from app.errors import AFTER_FAILED_SYNC

    shown = _logged(
        "production", "fsync of %s failed (%s): this process acknowledges no more changes to "
        "its data root until it is restarted: %s",
        "/srv/app/data/x", "Input/output error", AFTER_FAILED_SYNC,
    )  # fmt: skip
    # Before the fix: "run `app data check` (it reads ...), then start the server (its
    # start-up runs `app data check --repair`)".
    assert "run `app --profile production data check` (it reads every" in shown, shown
    assert "(its start-up runs `app --profile production data check --repair`)" in shown


def _logged(profile: str, text: str, *args: object) -> str:
    """A log line of `text` and `args` as the server's log filter shows it (`PrintableLines`)
    in a process that ``--profile`` `profile` selected."""
    import logging

    from app.errors import PrintableLines, select_for_commands

    record = logging.LogRecord("app", logging.WARNING, __file__, 1, text, args, None)
    select_for_commands(profile)
    try:
        PrintableLines().filter(record)
    finally:
        select_for_commands(None)
    return record.getMessage()


def test_an_http_answer_names_the_app_commands_with_the_server_s_profile(
    app_client: Any,
) -> None:
    """``app --profile production serve``: its log names every `app ...` with the profile,
    its HTTP answers did not (an error's message, the health reason after a failed fsync):
    a client's operator read development's command. The in-process app, as the server
    runs it once ``--profile`` selected the profile for its commands."""
    from app.errors import select_for_commands

    select_for_commands("testing")
    try:
        answer = app_client.get(f"/sessions/{'0' * 32}")
    finally:
        select_for_commands(None)
    assert answer.status_code == 404
    # Before the fix: "`app sessions list` shows the sessions".
    assert "`app --profile testing sessions list` shows the sessions" in answer.json()["message"], (
        answer.json()
    )
