"""Red team on integrity, session 31: maintenance commands run after a crash that left a
half-made trash entry, against real processes (a file's delete killed with SIGKILL just
after its commit) and a real data root.
"""

from __future__ import annotations

from pathlib import Path

from powerloss import Model, State, parse, snapshot
from test_redteam_s30_found import (
    assert_the_deleted_version_is_back,
    killed_after_a_delete_committed,
)

from app import config as appconfig
from app.storage import open_storage
from app.store import Store


def _maintenance(config: appconfig.Config) -> Store:
    # The commands' own code, in this process (`app data purge` is `Store.purge`): what is
    # tried is what they do to a root a crash left, before any start-up repaired it.
    store = open_storage(config, writer=True, kind="maintenance", wanted="maintenance")
    assert isinstance(store, Store)
    return store


def test_a_purge_after_a_crash_in_a_delete_keeps_the_deleted_version_restorable(
    tmp_path: Path,
) -> None:
    # A purge moved the session, the deleted version's bytes still among its blobs, to the
    # trash; the check then took the half entry waiting for them for a delete "that stopped
    # before its commit; the file is unchanged" and removed it. Restored, the session held
    # the bytes under no record (an orphan "never acknowledged"), and `restore --file` brought
    # back version 1: a state that never was, version 2's delete having been committed.
    config, session_id = killed_after_a_delete_committed(tmp_path)
    with _maintenance(config) as store:
        store.purge()
    with _maintenance(config) as store:
        store.restore(session_id)
    with _maintenance(config) as store:
        store.restore(session_id, file="a.txt")
        assert_the_deleted_version_is_back(store, session_id)


def test_an_empty_trash_after_a_crash_in_a_delete_leaves_no_bytes_behind(tmp_path: Path) -> None:
    # An `empty-trash` removed the half entry and left the deleted version's bytes among the
    # session's blobs, which the next check moved to the trash as an orphan, "an upload that
    # never was acknowledged": bytes the trash was emptied of, back in it under a false name.
    config, session_id = killed_after_a_delete_committed(tmp_path)
    with _maintenance(config) as store:
        assert len(store.empty_trash()) == 2
        assert store.check(repair=False).findings == []
        assert store.get_session(session_id)["files"] == []
        assert store.list_trash() == []


def test_the_model_keeps_a_remove_written_back_without_the_rename_after_it(
    tmp_path: Path,
) -> None:
    # The classic replace that is not atomic (unlink, then rename over the gap, then one
    # fsync): losing everything unsynced at once never shows the gap; writing back the
    # unlink alone, as a kernel may, does. The model must see it, or the test above proves
    # nothing (tests/test_redteam_s29_powerloss.py replays real traces on it).
    base = tmp_path / "base"
    base.mkdir()
    (base / "dest").write_bytes(b"old")
    b = str(base)
    trace = "\n".join(
        [
            f'1 openat(AT_FDCWD</>, "{b}/tmp", O_WRONLY|O_CREAT|O_EXCL, 0600) = 3<{b}/tmp>',
            f'1 write(3<{b}/tmp>, "new", 3) = 3',
            f"1 fsync(3<{b}/tmp>) = 0",
            f"1 close(3<{b}/tmp>) = 0",
            f'1 unlink("{b}/dest") = 0',
            f'1 rename("{b}/tmp", "{b}/dest") = 0',
            f'1 openat(AT_FDCWD</>, "{b}", O_RDONLY|O_DIRECTORY) = 4<{b}>',
            f"1 fsync(4<{b}>) = 0",
        ]
    )
    calls = parse(trace)

    def dests(states: list[State]) -> set[bytes | None]:
        return {state.tree.get("dest", b"(missing)") for state in states}

    assert dests(list(Model(base, snapshot(base)).durable_states(calls))) == {b"old", b"new"}
    partly = list(Model(base, snapshot(base)).writeback_states(calls))
    assert dests(partly) == {b"old", b"new", b"(missing)"}


def test_the_model_replays_a_close_where_it_began_not_where_it_was_logged(
    tmp_path: Path,
) -> None:
    # A thread's close frees its descriptor's number at once; strace logs it as done later,
    # after another thread's open has been given the same number. Replayed where it was
    # logged, the close ended the new descriptor, and the fsync through it was dropped: five
    # of seven traces of a real server's group commit then showed a 201 before its session
    # was durable (as red team 29's one unkept trace did), though each create's fsync of
    # sessions/ began after its rename. Replayed where it began, none does.
    b = str(tmp_path)
    trace = "\n".join(
        [
            f'1 openat(AT_FDCWD</>, "{b}/old", O_WRONLY|O_CREAT, 0600) = 5<{b}/old>',
            f"1 close(5<{b}/old> <unfinished ...>",
            f'2 openat(AT_FDCWD</>, "{b}/new", O_WRONLY|O_CREAT, 0600) = 5<{b}/new>',
            f'2 write(5<{b}/new>, "acknowledged", 12) = 12',
            "1 <... close resumed>) = 0",
            f"2 fsync(5<{b}/new>) = 0",
            f'2 openat(AT_FDCWD</>, "{b}", O_RDONLY|O_DIRECTORY) = 6<{b}>',
            f"2 fsync(6<{b}>) = 0",
        ]
    )
    *_, last = Model(tmp_path, snapshot(tmp_path)).durable_states(parse(trace))
    assert last.tree == {"old": b"", "new": b"acknowledged"}


def test_the_model_keeps_what_a_sync_made_durable_when_an_earlier_begun_one_ends_last(
    tmp_path: Path,
) -> None:
    # Two deletes make their trash entries at once, each syncing .trash/ (no group commit
    # there): thread 1's sync began before thread 2's mkdir, thread 2's began after it and
    # ended first, then thread 1's ended. Thread 2's entry is durable: its own fsync covered
    # it. The model set .trash/'s durable names to thread 1's as of its start, taking the
    # entry back, and a serial run of tests/test_redteam_s32_group_commit.py under load once
    # failed with "200 for the delete of <id> before its move was durable".
    b = str(tmp_path)
    (tmp_path / "trash").mkdir()
    trace = "\n".join(
        [
            f'1 openat(AT_FDCWD</>, "{b}/trash", O_RDONLY|O_DIRECTORY) = 5<{b}/trash>',
            f'2 openat(AT_FDCWD</>, "{b}/trash", O_RDONLY|O_DIRECTORY) = 6<{b}/trash>',
            f"1 fsync(5<{b}/trash> <unfinished ...>",
            f'2 mkdir("{b}/trash/entry", 0700) = 0',
            f"2 fsync(6<{b}/trash>) = 0",
            "1 <... fsync resumed>) = 0",
        ]
    )
    states = list(Model(tmp_path, snapshot(tmp_path)).durable_states(parse(trace)))
    assert [state.tree for state in states[-2:]] == [{"trash": None, "trash/entry": None}] * 2
