"""Red team 68 on regress, the run's end and the restores (branch rt-regress68b): see
docs/explanation/attacks/.

What broke:

- The run's last hand-over's lists read again (`_settled`) compared pids alone: a test, as
  root, left a child ended and unreaped (a zombie, an exit every walk sees and knows),
  reaped it as the second walk went on, and gave its pid to a child re-parented to the
  run's process. Taken for the process the walk saw, the child got no entry, and purged a
  stopped production root. Each child in a list read again is now checked by its start
  time too. (A process started at the pid of one the first walk saw exit, ended during
  the second, its pid given to such a child, is held by the same change: its test, in
  this branch's history, is not kept.)
- On PostgreSQL, a restore read its answer before the triggers deferred to the commit had
  fired: one of another's that put the row back in the trash had the restore answered (and
  audited) as made. Every deferred trigger fires before the read now, and a row not out of
  the trash then refuses the restore, rolled back.
- A data root's create sorted its metadata's keys by a copy that recursed, two frames a
  level: metadata nested 480 to 990 levels deep, which the store's checks take, was a bare
  RecursionError, and in a batch (`Store.create_sessions`) the creates before it stayed
  registered as in creation for good, every later session left out of every listing. An
  ``OrderedDict`` was answered in the order sent. The copy is now made without recursion.

The first on an inner pytest in a PID namespace of its own (red team 68 on the run's end's
harness); the second on the suite's PostgreSQL and SeaweedFS; the third on a real root.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import psycopg
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_redteam_s61_children import run_inner
from test_redteam_s67_guard import (
    _SHELL,
    assert_refused_after_the_run,
    needs_pid_namespace,
    skip_unless_at_the_pid,
)
from test_redteam_s68a_regress import WATCHER, N, with_a
from test_remote_store import PROFILE, _replica

from app.remote import pg
from app.remote.errors import WriteNotStoredError
from app.store.store import Store


def test_a_create_s_metadata_nested_as_deep_as_its_checks_take_is_made_and_answered_as_read(
    app_store: Store,
) -> None:
    nested: object = [1]
    for _ in range(600):  # past the copy's recursion (about 480), short of json.dumps's
        nested = {"b": 2, "a": nested}
    sent = {"z": nested, "o": OrderedDict([("y", (1, {"q": 1, "p": 2})), ("x", 0)])}
    # Before: RecursionError, the batch's first create registered as in creation for good.
    made = app_store.create_sessions([("first", {}), ("deep", sent)])
    assert all(isinstance(one, dict) for one in made), made
    first, deep = made
    assert isinstance(first, dict) and isinstance(deep, dict)
    read = app_store.get_session(deep["id"])
    # Before: the OrderedDict answered as sent ("y" before "x"), read back sorted.
    assert json.dumps(deep["metadata"]) == json.dumps(read["metadata"])
    assert json.dumps(read["metadata"]).startswith('{"o": {"x": 0, "y": [1, {"p": 2, "q": 1}]}')
    later = app_store.create_session("later", {})
    listed = [item["id"] for item in app_store.list_sessions().items]
    assert listed == sorted([first["id"], deep["id"], later["id"]])


#: A again (its arguments: the registry, the run's pid, N's script, X's output file), with N
#: and D1 as its children (the walk visits D1 first, then N and N's child C). Once
#: the run's first hand-over at its end is done, A ends D1 and leaves it a zombie: each walk
#: sees its pid exit, from the first on. As the second walk reads N's entry (the first's
#: reads came before it wrote C's), A holds the run's process, reaps D1, and starts W, which
#: starts X at D1's pid and exits; A reaps it and lets the run go on.
ZOMBIE_A = (
    WATCHER
    + r"""
script = given
n = subprocess.Popen([sys.executable, script, out + "-n"])  # N, with C
while not Path(out + "-n").exists():
    time.sleep(0.01)
d1 = subprocess.Popen(["sleep", "30"])
p = d1.pid
realtime()
npid, cpid = map(int, Path(out + "-n").read_text().split())
own_run, zombie, starting, child = name(runner), name(p), name(npid), name(cpid)
Path(out + "-ready").write_text("")
seen = events()
for mask, found in seen:  # the run's first hand-over at its end is done
    if mask & (IN_CREATE | IN_MOVED_TO) and found == own_run:
        if b"ended_at" in (registry / found).read_bytes():
            break
os.kill(p, signal.SIGKILL)  # not reaped: a zombie, an exit each walk sees
for mask, found in seen:  # the last hand-over's first walk has written D1's entry
    if mask & (IN_CREATE | IN_MOVED_TO) and found == zombie:
        break
for mask, found in seen:  # ... and, after N's, that of N's child C
    if mask & (IN_CREATE | IN_MOVED_TO) and found == child:
        break
for mask, found in seen:  # the second walk reads N's entry: it has read D1's stat
    if mask & IN_OPEN and found == starting:
        break
hold_the_run()
try:
    d1.wait()
    x_at(p)
finally:
    os.kill(runner, signal.SIGCONT)
time.sleep(30)  # alive as the walks come to it
"""
)

#: C: 300 threads, whose lists of children hold the walk a moment after N, for A to be
#: woken and hold it on a loaded machine too.
THREADS = (
    "import threading, time\n"
    "for _ in range(300):\n"
    "    threading.Thread(target=time.sleep, args=(30,)).start()\n"
)

#: N, as red team 68's, with C as its child (the walk visits it right after N), whose pid it
#: writes after its own.
N_WITH_C = N.replace(
    "f.write(str(os.getpid()))",
    "f.write(f'{os.getpid()} {subprocess.Popen([sys.executable, \"-c\", THREADS]).pid}')",
).replace("import os, sys, time", f"import os, subprocess, sys, time\n\nTHREADS = {THREADS!r}")

ZOMBIE = with_a(
    ZOMBIE_A, N_WITH_C, "test_leaves_a_process_at_the_pid_of_a_zombie_the_walks_saw", "-ready"
)


@needs_pid_namespace
def test_a_process_at_the_pid_of_a_zombie_the_walks_saw_leaves_no_child_outside_the_run(
    tmp_path: Path,
) -> None:
    inner, said = run_inner(tmp_path, ZOMBIE, ("late", "late-x"), shell=_SHELL)
    assert " passed" in inner.stdout, inner.stdout
    assert_refused_after_the_run(said)
    skip_unless_at_the_pid(said)  # X had the zombie's pid


#: A function that puts a row taken out of the trash back.
_BACK = """
CREATE FUNCTION rt68b_back() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  EXECUTE format('UPDATE %I SET deleted_at = $1, trash_name = $2, deleted_reason = $3'
                 ' WHERE id = $4', TG_TABLE_NAME)
    USING OLD.deleted_at, OLD.trash_name, OLD.deleted_reason, NEW.id;
  RETURN NULL; END $$;
"""

#: A trigger of another's after each update of `table`, deferred to the commit (the kind the
#: open leaves alone: a change-data-capture tool's), that runs it.
_BACK_TO_THE_TRASH = """
CREATE CONSTRAINT TRIGGER rt68b_back AFTER UPDATE ON {table} DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL)
  EXECUTE FUNCTION rt68b_back();
"""


def test_a_restore_that_a_trigger_deferred_to_the_commit_undoes_is_refused_unchanged(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with postgres_engine.opened_database(PROFILE) as (name, url):
        with _replica(s3_engine, (url, new_blob_url(s3_engine))) as store:
            session = store.create_session("kept", {})["id"]
            store.put_file(session, "a.txt", b"acknowledged bytes")
            store.delete_file(session, "a.txt")
            with postgres_engine.connect(name) as admin:
                admin.execute(_BACK + _BACK_TO_THE_TRASH.format(table="app_files"))  # type: ignore[arg-type]
            # Before: answered with a.txt live, its restore audited; a.txt still in the trash.
            with pytest.raises(WriteNotStoredError) as refused:
                store.restore(session, file="a.txt")
            assert refused.value.message.startswith(
                f"database {pg.mask_url(url)} did not store the restore of 'a.txt' into session "
                f"{session}: its UPDATE of app_files changed a row, but once every trigger had "
                "run that row was not as the change left it"
            ), refused.value.message
            assert "nothing was changed (its transaction was rolled back)" in str(refused.value)
            assert [(e.kind, e.file) for e in store.list_trash()] == [("file", "a.txt")]

            store.delete_session(session)
            with postgres_engine.connect(name) as admin:
                admin.execute(_BACK_TO_THE_TRASH.format(table="app_sessions"))  # type: ignore[arg-type]
            # Before: answered with the session live, its restore audited; still in the trash.
            with pytest.raises(WriteNotStoredError) as refused:
                store.restore(session)
            assert f"did not store the restore of session {session}: its UPDATE of " in str(
                refused.value
            )
            assert sorted(e.kind for e in store.list_trash()) == ["file", "session"]
        with psycopg.connect(url) as conn:
            assert not conn.execute(
                "SELECT 1 FROM app_audit WHERE operation LIKE 'restore-%'"
            ).fetchall()
