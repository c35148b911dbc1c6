"""Red team 50 on integrity: checks made outside the session's lock, under real concurrency.

What broke (each test says how it was found):

* a file's ``uploaded_at`` was stamped when its upload's commit began, before it took the
  session's lock: a ``PUT`` that waited for another client's commit of the same name was
  recorded (and listed, and answered) as uploaded before the version it replaced, so the
  newest version read as the older one (2 of 150 pairs of ``PUT`` at once on a real server,
  9 of 100 pairs of commits in one process). It is now stamped under the lock, and never
  before the version it replaces (a clock stepped back), as the trash names its entries;
* a file whose name only an earlier build's rule took (a trailing space, a no-break space:
  red team 38) was found by a look at its name before the session's lock, to choose the rule
  its name is held to: once another client's delete had moved it away, a second delete (a
  client's retry, or the one that lost the race), a download and a replace whose body was
  streaming were each refused 400 "invalid file name", of a file listed a moment before,
  where the truth was "no file" (404). A name is now looked up under the earlier rule, and
  only a change that would make a new file with it is refused, by the commit's own read under
  the lock (the replace above: 400, naming the character, nothing stored);
* a session's delete moves it into the trash under the session's lock, and shares the fsync
  of sessions/ and writes its audit line after it: an `empty-trash` in between removed the
  entry for good and wrote its line first, so `audit.jsonl` named the entry's removal before
  the delete that made it, and a crash between the two left the delete unaudited for good
  (`check` writes a missing line only for an entry still there). An `empty-trash` now leaves
  an entry whose delete has not written its line, as it leaves one made after it began.
"""

from __future__ import annotations

import json
import sys
import threading

import pytest
from test_redteam_s38_integrity import _first_builds_session
from waits import until

from app.config import Config
from app.errors import FileNotFoundInSessionError, InvalidNameError
from app.storage import FileEntry, open_storage
from app.store import Store
from app.store.upload import Upload


def test_a_put_that_waited_for_anothers_commit_is_never_stamped_before_the_version_it_replaced(
    app_config: Config,
) -> None:
    """Three commits of one name at once, each on a thread of its own (as three clients'
    PUTs are): the version that ends up in the session replaced the others, so it must not
    read as uploaded before them. Before the fix the stamp was taken before the lock was
    waited for: 9 of 100 rounds of two read so, , and nearly
    every round of three with threads switched often."""
    # The interpreter switches threads often, as a loaded machine does: a thread stamped,
    # then another stamped and took the lock first.
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _three_commits_at_once(app_config)
    finally:
        sys.setswitchinterval(switching)


def _three_commits_at_once(app_config: Config) -> None:
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        sid = store.create_session("three at once")["id"]
        store.put_file(sid, "a.txt", b"first")
        for round_ in range(25):
            uploads = [store.begin_upload(sid, "a.txt", replace=True) for _ in range(3)]
            answers: list[FileEntry] = []
            for index, upload in enumerate(uploads):
                upload.write(b"round %d, client %d" % (round_, index))

            threads = [threading.Thread(target=_commit, args=(u, answers)) for u in uploads]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            (current,) = store.list_files(sid)
            assert current in answers  # the answer is what was stored
            replaced = [a for a in answers if a != current]
            assert len(replaced) == 2
            assert all(current["uploaded_at"] > r["uploaded_at"] for r in replaced), (
                round_,
                current,
                replaced,
            )


def _commit(upload: Upload, answers: list[FileEntry]) -> None:
    answers.append(upload.commit())


def test_a_file_with_an_earlier_builds_name_deleted_by_another_client_is_no_file_not_a_bad_name(
    app_store: Store,
) -> None:
    nbsp = "report\u00a0final.pdf"
    session = _first_builds_session(app_store, {"notes ": b"trailing", nbsp: b"no-break"})
    app_store.check(repair=True)  # migrated, as every start-up does
    upload = app_store.begin_upload(session, nbsp, replace=True)  # a PUT's body streaming
    upload.write(b"the replace that lost the race")
    app_store.delete_file(session, "notes ")
    app_store.delete_file(session, nbsp)  # another client's delete, while the PUT streams
    for lost_race in (
        lambda: app_store.delete_file(session, "notes "),  # a retry, or the second client
        lambda: app_store.open_file(session, "notes "),
    ):
        with pytest.raises(FileNotFoundInSessionError) as missing:
            lost_race()
        assert "has no file 'notes '" in str(missing.value)
    # The replace now makes a new file with that name, which no new file may have: refused
    # by the commit's own read, naming the character; nothing stored.
    with pytest.raises(InvalidNameError, match="U\\+00A0"):
        upload.commit()
    with pytest.raises(InvalidNameError, match="U\\+00A0"):
        app_store.begin_upload(session, nbsp)
    assert app_store.list_files(session) == []
    kept = sorted(e.file or "" for e in app_store.list_trash() if e.kind == "file")
    assert kept == sorted(["notes ", nbsp])


def test_an_empty_trash_never_removes_a_session_whose_delete_has_not_written_its_audit_line(
    app_store: Store,
) -> None:
    """Found by reading `Store.delete_session`; made to happen by holding the shared fsync
    of sessions/ (`GroupSync`), which the delete waits for after its move."""
    sid = app_store.create_session("deleted as the trash is emptied")["id"]
    gate = app_store.sessions.state.sessions_sync._cond
    deleted: list[str] = []
    with gate:
        deleting = threading.Thread(
            target=lambda: deleted.append(app_store.delete_session(sid).name)
        )
        deleting.start()
        trash = app_store.root.trash_dir
        # Moved; its fsync waits for the gate (a thread that died first ends the wait).
        until(
            lambda: any(trash.glob(f"*-{sid}/session")),
            lambda: f"session {sid} never reached the trash ({deleted})",
            deleting.is_alive,
        )
        emptied = app_store.empty_trash()
    deleting.join()
    assert emptied == []  # left, as an entry made after the empty-trash began
    (entry,) = deleted
    assert [e.name for e in app_store.list_trash()] == [entry]
    assert [e.name for e in app_store.empty_trash()] == [entry]
    lines = [json.loads(line) for line in app_store.root.audit_path.read_text().splitlines()]
    said = [
        line["operation"]
        for line in lines
        if entry in (line["details"].get("trash"), *line["details"].get("entries", ()))
    ]
    assert said == ["trash-session", "empty-trash"]
