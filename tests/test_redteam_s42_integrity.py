"""Red team 42 on integrity: what an operator does to free space, and what the app then
told them to do.

Real commands on real files, real servers on 127.0.0.1, and mounts in a mount namespace of the
test's own. What broke:

- A trash entry moved out of the data root and linked back. The app never follows the link,
  rightly, but left it out of the trash altogether: ``app sessions list --trash`` said "the
  trash is empty" of a session deleted a moment before, and ``app sessions restore --file`` of
  a file replaced and then deleted brought back the version *before* the replace and said
  "restored". It is now listed (reason ``linked``) with a warning naming the link and the ``rm
  && mv`` that puts it back, and a restore it may hold the newest copy for is refused
  (``trash_entry_linked``, exit 65); done, the restore brings back the version deleted.
- A session entry's copy of the session linked back: ``check`` said clean, and the restore
  moved the link into ``sessions/`` and answered "no session". Reported and refused now.
- ``app data purge`` with a session directory linked back said "moved 1 session(s)" of two;
  it now names the one it leaves, in a warning and its audit line.
- ``sessions/`` or ``.trash/`` linked back, and a tmpfs mounted at ``.trash/``: every writer
  was refused, rightly, but told to "move it away and let the app create the directory" or
  to "unmount it": an empty profile, an empty trash, a tmpfs's deleted versions gone for
  good. The refusals now give the commands that put the data back (and ``check`` reports the
  links).
- The commands the app prints held their paths unquoted: under a root with a space, the
  pasted ``rm && mv`` removed the link and then failed. Quoted now; the test pastes them.
- A restore over a file uploaded again said "Delete the current one first": done, the
  restore brought back the one just deleted. It now says how to have the copy back.
- A server on a data root held in memory (tmpfs) served without a word; it now warns that a
  reboot empties it.
- An append-only trash (``chattr +a``) was refused with ``chattr -i``, which undoes nothing
  of it; the refusal now names both attributes.

What held is kept too: a ``Range`` download streams the version its ``ETag`` names while its
file is replaced, deleted and emptied, and its session deleted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import own_mounts
import pytest
from redteam_s19_http import blob_of
from test_redteam_s38_integrity import needs_mounts
from test_server_e2e import Server, app_env, run_app

from app import config as appconfig
from app.config import Config
from app.storage import open_storage


def _deleted(config: Config, kind: str) -> tuple[str, Path]:
    """A new session with one file, ``a.txt``, and the trash entry its delete (``kind``
    "file") or the session's (``kind`` "session") made."""
    with open_storage(config, writer=True, kind="tests", wanted="make") as store:
        session = store.create_session("kept")["id"]
        store.put_file(session, "a.txt", b"deleted")
        if kind == "file":
            entry = store.delete_file(session, "a.txt")
        else:
            entry = store.delete_session(session)
    return session, entry.path


def _move_away(path: Path, elsewhere: Path) -> tuple[Path, Path]:
    """Move ``path`` to ``elsewhere`` ("another disk") and link it back, as one frees space."""
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, elsewhere)
    path.symlink_to(elsewhere)
    return path, elsewhere


def test_a_trash_entry_linked_back_is_listed_and_its_restore_refused_never_an_older_copy(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    env = app_env(root)
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        kept = store.create_session("kept")["id"]
        gone = store.create_session("gone")["id"]
        store.put_file(kept, "report.txt", b"version 1")
        store.put_file(kept, "report.txt", b"version 2", replace=True)  # version 1: trash
        newest = store.delete_file(kept, "report.txt").path  # version 2 to the trash
        whole = store.delete_session(gone).path
    elsewhere = tmp_path / "other-disk"
    moved = []
    for entry in (newest, whole):
        moved.append(_move_away(entry, elsewhere / entry.name))

    listed = run_app("sessions", "list", "--trash", env=env)
    assert listed.returncode == 0, listed.stderr
    # Both were left out: the session's delete was "the trash is empty" on its own.
    assert "the trash is empty" not in listed.stdout
    for entry, target in moved:
        assert f"warning: trash entry {entry} is a symbolic link (to {target})" in listed.stderr
        assert f"`rm {entry} && mv {target} {entry}`" in listed.stderr, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert sorted((row[0], row[3], row[4]) for row in rows) == sorted(
        [(kept, "replace", "file"), (kept, "linked", "file"), (gone, "linked", "session")]
    ), listed.stdout

    # The restore brought back version 1, the one replaced, as if it were the one deleted.
    for args, entry, target in (
        (("--file", "report.txt"), *moved[0]),
        ((), *moved[1]),
    ):
        session = kept if args else gone
        before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
        refused = run_app("sessions", "restore", session, *args, env=env)
        assert refused.returncode == 65, refused.stdout + refused.stderr
        what = f"file 'report.txt' of session {kept}" if args else f"session {gone}"
        assert (
            f"cannot restore {what}: trash entry {entry.name}, which may hold its newest copy, is "
            f"behind a symbolic link, {entry} (moved out of the data root"
        ) in refused.stderr, refused.stderr
        assert "nothing was changed" in refused.stderr
        assert f"`rm {entry} && mv {target} {entry}`" in refused.stderr
        assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before

    # empty-trash leaves the links and what they lead to (never followed out of the trash).
    emptied = run_app("data", "empty-trash", env=env)
    assert emptied.returncode == 0, emptied.stdout + emptied.stderr
    assert "removed 1 trash entry" in emptied.stdout, emptied.stdout
    for entry, target in moved:  # it said nothing of them
        assert f"empty-trash left {entry}: a symbolic link" in emptied.stderr, emptied.stderr
        assert f"`rm {entry} && mv {target} {entry}`" in emptied.stderr
    for entry, target in moved:
        assert entry.is_symlink() and target.is_dir()
    for entry, target in moved:
        remedy = f"rm {entry} && mv {target} {entry}"
        subprocess.run(["sh", "-c", remedy], check=True)
    for args, session in ((("--file", "report.txt"), kept), ((), gone)):
        restored = run_app("sessions", "restore", session, *args, env=env)
        assert restored.returncode == 0, restored.stdout + restored.stderr
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.file_path(kept, "report.txt")[0].read_bytes() == b"version 2"
        assert store.get_session(gone)["title"] == "gone"
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_trashed_sessions_directory_linked_back_is_reported_and_never_restored_as_a_link(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    env = app_env(root)
    session, entry = _deleted(app_config, "session")
    held, elsewhere = entry / "session", tmp_path / "other-disk" / "session"
    _move_away(held, elsewhere)
    remedy = f"`rm {held} && mv {elsewhere} {held}`"
    # `check` called it clean; the restore moved the link into sessions/ (audited), and said
    # "no session ... in sessions" (66) of a restore it had made.
    checked = run_app("data", "check", "--repair", env=env)
    assert checked.returncode == 65, checked.stdout + checked.stderr
    assert (
        f"session-unreadable  .trash/{entry.name}/session: a symbolic link (to {elsewhere}) "
        "where a trash entry keeps its session's directory"
    ) in checked.stdout, checked.stdout
    assert remedy in checked.stdout
    refused = run_app("sessions", "restore", session, env=env)
    assert refused.returncode == 65, refused.stdout + refused.stderr
    assert (
        f"cannot restore session {session}: trash entry {entry.name}, which may hold its newest "
        f"copy, is behind a symbolic link, {held}"
    ) in refused.stderr, refused.stderr
    assert remedy in refused.stderr
    assert not (root / "sessions" / session).exists() and held.is_symlink()
    assert "restore-session" not in (root / "audit.jsonl").read_text()
    subprocess.run(["sh", "-c", remedy.strip("`")], check=True)
    restored = run_app("sessions", "restore", session, env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.file_path(session, "a.txt")[0].read_bytes() == b"deleted"


def test_a_purge_names_a_session_directory_linked_back_that_it_leaves(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        linked, plain = (store.create_session(t)["id"] for t in ("linked", "plain"))
    directory, elsewhere = root / "sessions" / linked, tmp_path / "other-disk" / linked
    _move_away(directory, elsewhere)
    purged = run_app("data", "purge", env=app_env(root))
    assert purged.returncode == 0, purged.stdout + purged.stderr
    # It said "moved 1 session(s)" of a profile that held two, and nothing of the other.
    assert "moved 1 session(s)" in purged.stdout
    assert (
        f"purge left {directory} where it is: a symbolic link (to {elsewhere}) where a "
        "session's directory belongs"
    ) in purged.stderr, purged.stderr
    assert f"`rm {directory} && mv {elsewhere} {directory}`" in purged.stderr
    assert directory.is_symlink() and (elsewhere / "session.json").is_file()
    [line] = (root / "audit.jsonl").read_text().splitlines()[-1:]
    assert f'"left": ["{linked}"]' in line and plain in line, line


def test_the_roots_own_directories_linked_back_are_put_back_never_made_again_empty(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    env = app_env(root)
    session, _ = _deleted(app_config, "file")
    moves = []
    for name in ("sessions", ".trash"):
        moves.append(_move_away(root / name, tmp_path / "other-disk" / name))
    # `check` said "clean"; every writer said "move it away and let the app create the
    # directory": an empty sessions/ (every session gone from the API) and an empty trash.
    checked = run_app("data", "check", env=env)
    refused = run_app("data", "check", "--repair", env=env)
    assert (checked.returncode, refused.returncode) == (65, 78), checked.stdout + refused.stderr
    assert "move it away and let the app create" not in refused.stderr
    for link, elsewhere in moves:
        remedy = f"`rm {link} && mv {elsewhere} {link}`"
        assert f"unknown-entry  {link.name}: a symbolic link (to {elsewhere})" in checked.stdout
        assert remedy in checked.stdout, checked.stdout
        if link.name == "sessions":  # the first the open meets
            assert f"{link} is a symbolic link (to {elsewhere})" in refused.stderr
            assert remedy in refused.stderr, refused.stderr
        subprocess.run(["sh", "-c", remedy.strip("`")], check=True)
    restored = run_app("sessions", "restore", session, "--file", "a.txt", env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert run_app("data", "check", env=env).returncode == 0


def test_a_restore_over_a_file_uploaded_again_says_how_to_have_the_copy_back(
    app_config: Config,
) -> None:
    root = app_config.data_root
    env = app_env(root)
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        session = store.create_session("again")["id"]
        store.put_file(session, "f.txt", b"old, deleted")
        copy = store.delete_file(session, "f.txt").path / "f.txt"
        store.put_file(session, "f.txt", b"new")
    refused = run_app("sessions", "restore", session, "--file", "f.txt", env=env)
    assert refused.returncode == 65, refused.stdout + refused.stderr
    # It said "Delete the current one first": done, the restore brought back "new", the
    # newest copy in the trash, and said "restored".
    assert "Delete the current one first" not in refused.stderr
    said = " ".join(refused.stderr.split())
    assert (
        f"session {session!r} has a file 'f.txt' again; refusing to overwrite it with its copy "
        "in the trash. Deleting the current one first and restoring again would not bring it "
        "back: a restore takes the newest copy in the trash, which the current one would then "
        "be, unless it names the copy's entry. To have that copy back, delete the current file "
        "(it goes to the trash, restorable), then run `app sessions restore "
        f"{session} --file f.txt --entry {copy.parent.name}`; or upload its bytes (at {copy}) "
        "with a PUT of the file"
    ) in said, said
    with open_storage(app_config, writer=True, kind="tests", wanted="follow") as store:
        store.put_file(session, "f.txt", copy.read_bytes(), replace=True)
        assert store.file_path(session, "f.txt")[0].read_bytes() == b"old, deleted"
        assert [e.reason for e in store.list_trash()] == ["delete", "replace"]


def test_the_commands_check_and_restore_give_hold_together_under_a_root_with_a_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `rm <link> && mv <target> <link>` unquoted: under "my data" the rm took the link out of
    # the trash and the mv failed, the entry's data left where nothing names it.
    root = tmp_path / "my data" / "app-data"
    monkeypatch.setenv("APP_DATA_ROOT", str(root))
    config = appconfig.load("testing")
    env = app_env(root)
    with open_storage(config, writer=True, kind="tests", wanted="make") as store:
        session = store.create_session("spaced")["id"]
        store.put_file(session, "linked.txt", b"linked")
        store.put_file(session, "deleted.txt", b"deleted")
        entry = store.delete_file(session, "deleted.txt").path
    elsewhere = tmp_path / "other disk"
    blob = blob_of(root, session, "linked.txt")
    for moved in (blob, entry):
        _move_away(moved, elsewhere / moved.name)
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 65, checked.stdout + checked.stderr
    commands = re.findall(r"`((?:rm|cp) [^`]*)`", checked.stdout)
    assert len(commands) == 2, checked.stdout
    refused = run_app("sessions", "restore", session, "--file", "deleted.txt", env=env)
    assert refused.returncode == 65, refused.stdout + refused.stderr
    [put_back] = re.findall(r"`(rm [^`]*)`", refused.stderr)
    assert put_back in commands, refused.stderr
    for command in commands:
        subprocess.run(["sh", "-c", command], check=True)
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    restored = run_app("sessions", "restore", session, "--file", "deleted.txt", env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with open_storage(config, writer=True, kind="tests", wanted="look") as store:
        for name in ("linked.txt", "deleted.txt"):
            assert store.file_path(session, name)[0].read_bytes() == name.split(".")[0].encode()


def test_a_range_download_keeps_its_version_while_the_file_is_replaced_deleted_and_emptied(
    app_config: Config, tmp_path: Path
) -> None:
    # Held: each download streams the bytes its ETag names, begun before the change.
    server = Server(app_env(app_config.data_root), tmp_path / "server.log").wait_ready()
    try:
        with server.client() as http:
            session = http.post("/sessions", json={"title": "streamed"}).json()["id"]
            url = f"/sessions/{session}/files/big.bin"
            for change in ("replace", "delete", "empty-trash", "delete-session"):
                body = os.urandom(8 << 20)
                assert http.put(url, content=body).status_code in (200, 201)
                if change == "empty-trash":
                    assert http.delete(url).status_code == 200
                    assert http.put(url, content=body).status_code == 201
                headers = {"Range": "bytes=1000-7999999"}
                with http.stream("GET", url, headers=headers) as answer:
                    chunks = answer.iter_raw(1 << 16)
                    got = next(chunks)
                    if change == "replace":
                        changed = http.put(url, content=b"new")
                    elif change == "delete":
                        changed = http.delete(url)
                    elif change == "empty-trash":
                        changed = http.delete(url)
                        assert changed.status_code == 200
                        changed = http.post("/trash/empty")
                    else:
                        changed = http.delete(f"/sessions/{session}")
                    assert changed.status_code == 200, (change, changed.text)
                    got += b"".join(chunks)
                assert answer.status_code == 206
                assert answer.headers["etag"] == f'"{hashlib.sha256(body).hexdigest()}"'
                assert got == body[1000:8000000], change
                if change == "delete-session":
                    break
    finally:
        server.stop()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("chattr") is None, reason="chattr +a takes root"
)
def test_an_append_only_trash_is_refused_with_the_chattr_that_undoes_it(
    app_config: Config,
) -> None:
    # `chattr +a .trash` (nothing may leave the trash): `empty-trash` was told `chattr -i`,
    # which undoes nothing of it.
    root = app_config.data_root
    _deleted(app_config, "file")
    subprocess.run(["chattr", "+a", str(root / ".trash")], check=True)
    try:
        refused = run_app("data", "empty-trash", env=app_env(root))
        assert refused.returncode == 74, refused.stdout + refused.stderr
        assert "is immutable or append-only" in refused.stderr, refused.stderr
        assert "(`chattr -i -a`, `chown`" in refused.stderr
    finally:
        subprocess.run(["chattr", "-i", "-a", str(root / ".trash")], check=True)
    emptied = run_app("data", "empty-trash", env=app_env(root))
    assert "removed 1 trash entry" in emptied.stdout, emptied.stdout + emptied.stderr


_UNSHARED = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c"]
_MOUNTED_TRASH = """
import re, subprocess, sys
from pathlib import Path
from app.config import load
from app.errors import DataRootStateError
from app.storage import open_storage

trash, kept = Path(sys.argv[1]), Path(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(trash)], check=True)
subprocess.run(["cp", "-a", f"{kept}/.", str(trash)], check=True)  # the trash lived there
try:
    open_storage(load(), writer=True, kind="tests", wanted="open it").close()
except DataRootStateError as error:
    print(error)
    [command] = re.findall(r"`(cp -a [^`]*)`", str(error))
    subprocess.run(["sh", "-c", command], check=True)
"""


@needs_mounts
def test_a_trash_on_a_tmpfs_is_refused_with_a_remedy_that_keeps_what_it_holds(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    session, _ = _deleted(app_config, "file")
    kept = tmp_path / "trash-before"
    shutil.move(root / ".trash", kept)
    (root / ".trash").mkdir()
    # "unmount it (`umount <root>/.trash`)": a tmpfs's files go with it, every deleted version
    # lost for good with no `empty-trash` run.
    child = own_mounts.python_c(_MOUNTED_TRASH, str(root / ".trash"), str(kept))  # exit 0
    assert "a filesystem is mounted inside it" in child.stdout, child.stdout
    restored = run_app("sessions", "restore", session, "--file", "a.txt", env=app_env(root))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert not (root / ".trash.copy").exists()


_SERVE_IN_MEMORY = """
import os, signal, subprocess, sys
memory = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "none", memory], check=True)
env = {**os.environ, "APP_DATA_ROOT": os.path.join(memory, "app-data")}
serve = [sys.executable, "-m", "app", "serve", "--port", "0"]
server = subprocess.Popen(serve, env=env, stderr=subprocess.PIPE, text=True)
said = []
for line in server.stderr:
    said.append(line)
    if "serving profile" in line or "error" in line.lower():
        break
server.send_signal(signal.SIGTERM)
server.wait()
print("".join(said))
"""


@needs_mounts
def test_a_server_on_a_root_held_in_memory_says_a_reboot_empties_it(tmp_path: Path) -> None:
    # It served on tmpfs without a word: every acknowledged change gone at the next reboot.
    memory = tmp_path / "memory"
    memory.mkdir()
    child = subprocess.run(
        [*_UNSHARED, _SERVE_IN_MEMORY, str(memory)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 0, child.stdout + child.stderr
    assert (
        f"data root {memory / 'app-data'} is on tmpfs, which lives in memory: every session "
        "and file this server acknowledges is lost at the next reboot"
    ) in child.stdout, child.stdout
    assert "serving profile testing" in child.stdout
