"""Red team 45 on PostgreSQL and object storage: ``app sessions restore --entry`` and S3
credentials from the S3 client's own chain.

What broke, each now refused as the rest of the app refuses:

- ``app sessions restore ID --entry NAME`` with a name PostgreSQL cannot hold (bytes that are
  not UTF-8, as a shell passes ``$'\\xff'``; a NUL) went to the database as it was: a
  traceback (UnicodeEncodeError, psycopg's DataError), exit 1, where the local store says
  there is no such entry (NotInTrashError, 66). Now refused alike, before any query.
- ``restore ID --file NAME --entry E`` of a deleted session, E its own entry or another
  session's file's: "no session ... in sessions" (66) on PostgreSQL, which looked at the live
  session first; the local store names what E holds and the command for it (65). Now alike.
- A remote profile with neither S3 key whose ``credential_process`` fails: the S3 client
  loads the chain's credentials as it is made, and its CredentialRetrievalError was a
  traceback, exit 1, from every command. Now ObjectStoreUnavailableError (69), naming the
  chain and what it said.
- Keys set or not, an ``AWS_*`` variable (or AWS config file) the S3 client refuses as it is
  made (``AWS_REQUEST_CHECKSUM_CALCULATION=bogus``, an ``AWS_PROFILE`` no file has): a
  traceback, exit 1. Now S3ClientSettingsError (78), naming the value and where it is read.

All real: the suite's cluster and ``weed``, the CLI in processes of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
import test_redteam_s37_remote
import test_remote_store
from replicas import Production
from test_remote_credentials import _app, _chain_env

from app.errors import AppError, NotInTrashError
from app.remote.errors import S3ClientSettingsError
from app.remote.store import RemoteStore
from app.store import Store

# The fixtures, as red team 37 and tests/test_remote_store.py made them.
production = test_redteam_s37_remote.production
opened, store, pair = test_remote_store.opened, test_remote_store.store, test_remote_store.pair

T = TypeVar("T")

_NO_SUCH = "in the trash (emptied, restored already, or never made); `app sessions list --trash"


@pytest.mark.parametrize(
    "entry",
    [
        "\udcff",  # a byte that is not UTF-8, as Python gives it from argv: broke
        "2026\x00",  # a NUL: broke (not from argv, but the API takes a str)
        "%",  # LIKE and SQL metacharacters: held (a parameter, never a pattern)
        "_",
        "x' OR ''='",
    ],
)
def test_an_entry_name_no_entry_can_have_is_no_such_entry_for_sessions_and_files(
    store: RemoteStore, entry: str
) -> None:
    sid = store.create_session("kept")["id"]
    store.put_file(sid, "a.txt", b"one")
    store.delete_file(sid, "a.txt")
    with pytest.raises(NotInTrashError) as refused:
        store.restore(sid, file="a.txt", entry=entry)
    assert f"no trash entry {entry!r} {_NO_SUCH}" in str(refused.value)
    store.delete_session(sid)
    with pytest.raises(NotInTrashError) as refused:
        store.restore(sid, entry=entry)
    assert f"no trash entry {entry!r} {_NO_SUCH}" in str(refused.value)
    # Nothing was taken: the session and its file come back by their own entries.
    store.restore(sid)
    store.restore(sid, file="a.txt")
    assert store.open_file(sid, "a.txt")[0].read() == b"one"


def test_restore_by_an_entry_name_of_bytes_that_are_not_utf8_is_refused_from_the_cli(
    production: Production,
) -> None:
    # Before: "UnicodeEncodeError: 'utf-8' codec can't encode character '\udcff'", exit 1.
    restored = production.run("sessions", "restore", "0" * 32, "--entry", "\udcff")
    said = " ".join(restored.stderr.split())
    assert restored.returncode == NotInTrashError.exit_code, said
    assert f"no trash entry '\\udcff' {_NO_SUCH}" in said, said
    assert "Traceback" not in said


def test_a_failing_credential_process_is_refused_naming_the_chain_and_what_it_said(
    production: Production, tmp_path: Path
) -> None:
    # Before: "botocore.exceptions.CredentialRetrievalError: Error when retrieving
    # credentials from custom-process: ...", a traceback, exit 1.
    env = _chain_env(production, tmp_path, "unused", "unused")
    script = tmp_path / "failing.py"
    script.write_text("import sys\nsys.stderr.write('the SSO session expired\\n')\nsys.exit(3)\n")
    (tmp_path / "aws-config").write_text(
        f"[default]\ncredential_process = {sys.executable} {script}\n"
    )
    checked: subprocess.CompletedProcess[str] = _app(env, "data", "check")
    said = " ".join(checked.stderr.split())
    assert checked.returncode == 69, said
    assert "Traceback" not in said, said
    assert "the S3 client could not be made: it could not load credentials" in said, said
    assert (
        "the credentials from the S3 client's own chain (it could not load them: Error when "
        "retrieving credentials from custom-process: the SSO session expired; s3_access_key_id"
    ) in said, said
    assert "expired\n" not in checked.stderr  # on one line, as the process's error ends
    assert "`app doctor` checks them" in said, said


def _deleted_file(store: RemoteStore, data: bytes) -> tuple[str, str]:
    """A new session whose a.txt (``data``) was deleted, and the entry that holds it."""
    sid = store.create_session("raced")["id"]
    store.put_file(sid, "a.txt", data)
    return sid, store.delete_file(sid, "a.txt").name


def _restoring_at_once(
    replica: RemoteStore, sid: str, entry: str, other: Callable[[], T]
) -> tuple[str, T]:
    """``replica``'s restore of a.txt by ``entry`` ("restored", or the refusal's message) and
    what ``other`` returns, the two started at once in two threads."""
    barrier = threading.Barrier(2)

    def restore() -> str:
        barrier.wait()
        try:
            replica.restore(sid, file="a.txt", entry=entry)
        except AppError as error:
            return str(error)
        return "restored"

    def then() -> T:
        barrier.wait()
        return other()

    with ThreadPoolExecutor(2) as pool:
        restored, done = pool.submit(restore), pool.submit(then)
        return restored.result(), done.result()


def test_two_replicas_restoring_one_entry_at_once_restore_it_once_and_an_old_name_stays_gone(
    pair: tuple[RemoteStore, RemoteStore],
) -> None:
    first, second = pair
    sid, entry = _deleted_file(first, b"one")

    def restore_on_second() -> str:
        try:
            second.restore(sid, file="a.txt", entry=entry)
        except NotInTrashError as error:
            return str(error)
        return "restored"

    said = sorted(_restoring_at_once(first, sid, entry, restore_on_second))
    assert said[1] == "restored", said
    assert said[0].startswith(f"no trash entry {entry!r} {_NO_SUCH}"), said
    # Restored, then deleted again: a new entry; the old name restores nothing.
    again = second.delete_file(sid, "a.txt").name
    assert again != entry
    with pytest.raises(NotInTrashError):
        first.restore(sid, file="a.txt", entry=entry)
    # Emptied, the new name restores nothing either, and nothing half comes back.
    first.empty_trash(None, via="test")
    with pytest.raises(NotInTrashError):
        second.restore(sid, file="a.txt", entry=again)
    assert [f["name"] for f in first.get_session(sid)["files"]] == []


def test_the_local_store_answers_the_names_postgresql_cannot_hold_alike(app_store: Store) -> None:
    sid = app_store.create_session("kept")["id"]
    app_store.put_file(sid, "a.txt", b"one")
    app_store.delete_file(sid, "a.txt")
    for entry in ("\udcff", "2026\x00", "%"):
        with pytest.raises(NotInTrashError) as refused:
            app_store.restore(sid, file="a.txt", entry=entry)
        assert f"no trash entry {entry!r} {_NO_SUCH}" in str(refused.value)


def test_a_restore_by_entry_racing_a_replace_of_the_file_loses_neither_copy(
    pair: tuple[RemoteStore, RemoteStore],
) -> None:
    first, second = pair
    sid, entry = _deleted_file(first, b"old")
    said, _ = _restoring_at_once(
        first, sid, entry, lambda: second.put_file(sid, "a.txt", b"new", replace=True)
    )
    # Whichever committed first, the live file is the new one and the old one is in the
    # trash (moved aside by the replace, or still in its entry after the refusal).
    assert first.open_file(sid, "a.txt")[0].read() == b"new"
    if said != "restored":
        assert "has a file 'a.txt' again; refusing to overwrite it" in said, said
    olds = [e for e in first.list_trash() if e.file == "a.txt"]
    assert len(olds) == 1, olds
    moved_aside = olds[0].name
    first.delete_file(sid, "a.txt")
    first.restore(sid, file="a.txt", entry=moved_aside)
    assert first.open_file(sid, "a.txt")[0].read() == b"old"


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("AWS_REQUEST_CHECKSUM_CALCULATION", "bogus", "request_checksum_calculation"),
        ("AWS_PROFILE", "nosuch", "The config profile (nosuch) could not be found"),
    ],
)
def test_an_aws_variable_the_s3_client_refuses_is_refused_naming_it_where_keys_are_set(
    production: Production, variable: str, value: str, said: str
) -> None:
    # Before: a traceback (botocore's InvalidConfigError, ProfileNotFound), exit 1, though
    # the profile's own keys were set.
    checked = _app(production.env | {variable: value}, "data", "check")
    text = " ".join(checked.stderr.split())
    assert checked.returncode == S3ClientSettingsError.exit_code == 78, text
    assert "error: cannot make the S3 client for object store s3://" in text, text
    assert said in text, text
    assert "reads this from the process's environment (AWS_* variables) or from the AWS " in text
    assert "correct or unset it there; nothing was changed" in text, text
    assert "Traceback" not in text


def _restores_by_entry(store: Store | RemoteStore) -> list[str]:
    """What each restore by entry of a deleted session answers, its ids and entry names
    replaced by what they are: the same on either backend."""
    sid, other = store.create_session("asked")["id"], store.create_session("other")["id"]
    store.put_file(sid, "a.txt", b"one")
    store.put_file(other, "a.txt", b"two")
    names = {
        sid: "SID",
        other: "OTHER",
        store.delete_file(sid, "a.txt").name: "FILE-ENTRY",
        store.delete_file(other, "a.txt").name: "OTHERS-FILE-ENTRY",
    }
    names[store.delete_session(sid).name] = "SESSION-ENTRY"
    asks: list[tuple[str, str | None]] = [
        ("SESSION-ENTRY", "a.txt"),  # broke on PostgreSQL: "no session ... in sessions", 66
        ("OTHERS-FILE-ENTRY", "a.txt"),  # broke on PostgreSQL: the same
        ("FILE-ENTRY", None),
        ("FILE-ENTRY", "a.txt"),  # the session is deleted: restore it first
        ("SESSION-ENTRY", None),
        ("FILE-ENTRY", "b.txt"),
    ]
    return _answers(store, sid, names, asks)


def _answers(
    store: Store | RemoteStore,
    sid: str,
    names: dict[str, str],
    asks: list[tuple[str, str | None]],
) -> list[str]:
    """Each restore of ``sid`` by an entry (its label in ``names``) and file, in turn:
    "restored", or the refusal with its exit code; ids and entry names put as their labels,
    a local copy's path left out."""
    by = {label: name for name, label in names.items()}
    answers = []
    for entry, file in asks:
        try:
            store.restore(sid, file=file, entry=by[entry])
            answer = "restored"
        except AppError as error:
            answer = f"{error.exit_code}: {error}"
        for name, label in sorted(names.items(), key=lambda item: -len(item[0])):
            answer = answer.replace(name, label)
        answers.append(re.sub(r" \(at /[^)]*\)", "", answer))
    return answers


def test_restore_by_entry_of_a_deleted_session_answers_alike_on_both_backends(
    store: RemoteStore, app_store: Store
) -> None:
    remote, local = _restores_by_entry(store), _restores_by_entry(app_store)
    assert remote == local, (remote, local)
    assert remote[0].startswith(
        "65: trash entry SESSION-ENTRY holds session SID, not file 'a.txt' of session SID; "
        "nothing was changed. `app sessions restore SID --entry SESSION-ENTRY` restores what it"
    ), remote[0]
    assert remote[1].startswith(
        "65: trash entry OTHERS-FILE-ENTRY holds file 'a.txt' of session OTHER, not file"
    ), remote[1]
    assert remote[4] == "restored"


def _restores_by_entry_of_a_live_session(store: Store | RemoteStore) -> list[str]:
    """As `_restores_by_entry`, of a live session whose file was replaced, then deleted."""
    sid = store.create_session("asked")["id"]
    store.put_file(sid, "a.txt", b"one")
    names = {sid: "SID"}
    store.put_file(sid, "a.txt", b"two", replace=True)
    store.put_file(sid, "b.txt", b"b")
    names[store.delete_file(sid, "a.txt").name] = "NEWER"
    olds = [e for e in store.list_trash() if e.file == "a.txt" and e.name not in names]
    names[olds[0].name] = "OLDER"
    names[store.delete_file(sid, "b.txt").name] = "B"
    asks: list[tuple[str, str | None]] = [
        ("OLDER", None),
        ("OLDER", "a.txt"),
        ("NEWER", "a.txt"),  # a live a.txt again: refused naming this entry
        ("B", "a.txt"),
        ("B", "b.txt"),
        ("B", "b.txt"),  # restored already
        ("OLDER", "a.txt"),
    ]
    return _answers(store, sid, names, asks)


def test_restore_by_entry_of_a_live_session_answers_alike_on_both_backends(
    store: RemoteStore, app_store: Store
) -> None:
    # Held: the older copy by its entry, refusals naming the entry, "restored already".
    remote = _restores_by_entry_of_a_live_session(store)
    assert remote == _restores_by_entry_of_a_live_session(app_store)
    assert remote[1] == remote[4] == "restored"
    assert "then run `app sessions restore SID --file a.txt --entry NEWER`" in remote[2]


def test_a_restore_by_entry_racing_an_empty_trash_either_restores_whole_or_finds_it_emptied(
    pair: tuple[RemoteStore, RemoteStore],
) -> None:
    first, second = pair
    sid, entry = _deleted_file(first, b"kept")
    said, emptied = _restoring_at_once(
        first, sid, entry, lambda: second.empty_trash(None, via="test")
    )
    removed = [e.name for e in emptied]
    if said == "restored":
        # Never a row that names an object the empty-trash deleted.
        assert removed == [], removed
        assert first.open_file(sid, "a.txt")[0].read() == b"kept"
    else:
        assert removed == [entry], removed
        assert said.startswith(f"no trash entry {entry!r} {_NO_SUCH}"), said
        assert [f["name"] for f in first.get_session(sid)["files"]] == []
    assert first.check().findings == []
