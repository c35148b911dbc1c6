"""Red team 41 on integrity: what a backup, a move or a dedup tool leaves in a data root.

Real servers on 127.0.0.1 and real commands on real files. What broke:

- A blob made a symbolic link (the bytes moved to another disk and linked back, a restore or
  a dedup tool that links equal files, as ``rdfind -makesymlinks`` does). A download said 404
  "has no file" of a file its listing showed, and ``app data check`` called the record one
  that "names bytes that are not there" and the link "bytes no record names ... never
  acknowledged": ``--repair`` removed the acknowledged file's record and moved the link to
  the trash as an orphan upload, for ``empty-trash`` to remove. The link is now left for a
  human (``file-damaged``, the record kept), naming where it leads and how to put the bytes
  back; a download is refused as damaged, naming the link. A ``DELETE`` of such a file whose
  link leads nowhere was 404 "has no file" of a listed file; it now moves the link to the trash.
- A session's directory moved out of the root and linked back (not followed: "no session"
  to every request): ``check`` said "without a readable session.json ... restore session.json
  from a backup", of a session.json that was there. It now names the link, where it leads and
  the ``mv`` that puts the directory back (a session's ``records/`` or ``blobs/`` too), and
  only the ``rm`` of the link where it leads into a data root, whose data must stay there. A
  trash entry so moved was "not a trash entry", its file missing from ``sessions list --trash``
  and ``restore``; ``check`` now names it the same way.
- A copy of a live data root made with hard links (``cp -al root root.bak`` before an
  upgrade). The server ran on without a word, and its next start was refused because
  ``.server.lock`` had two names, saying "Remove the link" of a link it did not name. The
  server now warns as soon as its lock file gains a name, and the refusal gives the ``find
  -samefile`` that lists the other names and says which to remove; done, the server starts.
  The copy, opened while the server ran, was refused as held by that server, "stop it (kill
  <pid>)", and ``app status`` named it as the copy's holder: the server of another root. Both
  now say whose root it holds, to leave it running and to remove the copy's ``.server.lock``.

What held is kept too: replaces, uploads, deletes, empty-trash and downloads from four
clients at once with ``app data check`` running beside them, and a session restored by
another user (its owner and modes not the server's) under a server without root's
capabilities.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from redteam_s19_http import blob_of
from test_server_e2e import Server, app_env, run_app

from app.config import Config
from app.storage import open_storage
from app.store.ids import new_session_id
from app.testing import published_port


def test_a_blob_made_a_symbolic_link_is_left_for_a_human_and_never_repaired_away(
    app_config: Config, tmp_path: Path
) -> None:
    env = app_env(app_config.data_root)
    root = app_config.data_root
    moved = tmp_path / "other-disk"
    moved.mkdir()
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        with server.client() as http:
            session = http.post("/sessions", json={"title": "linked"}).json()["id"]
            for name in ("moved.txt", "gone.txt", "deleted.txt"):
                url = f"/sessions/{session}/files/{name}"
                assert http.put(url, content=name.encode() * 100).status_code == 201
            # One blob moved to another disk and linked back, one link whose target is gone.
            linked = blob_of(root, session, "moved.txt")
            dangling = blob_of(root, session, "gone.txt")
            shutil.move(linked, moved / linked.name)
            os.symlink(moved / linked.name, linked)
            dangling.unlink()
            os.symlink(moved / "nothing-here", dangling)
            # A listed file whose link leads nowhere is deleted as any file is (it was a 404
            # "no file"): the link itself goes to the trash.
            deleted = blob_of(root, session, "deleted.txt")
            deleted.unlink()
            os.symlink(moved / "nothing-here", deleted)
            answer = http.delete(f"/sessions/{session}/files/deleted.txt")
            assert answer.status_code == 200, answer.text
            [trashed] = (root / ".trash").iterdir()
            assert (trashed / "deleted.txt").is_symlink()
            listed = [f["name"] for f in http.get(f"/sessions/{session}/files").json()["items"]]
            assert sorted(listed) == ["gone.txt", "moved.txt"]
            for name in listed:
                answer = http.get(f"/sessions/{session}/files/{name}")
                # Listed, yet 404 "has no file" contradicted the listing.
                assert answer.status_code == 500, answer.text
                assert answer.json()["code"] == "file_damaged"
                assert "a symbolic link" in answer.json()["message"]
    finally:
        server.stop()
    # And a link no record names, beside them (a dedup tool's, in a blob's shape).
    stray = linked.parent / new_session_id()
    os.symlink(moved / linked.name, stray)
    repaired = run_app("data", "check", "--repair", env=env)
    out = repaired.stdout + repaired.stderr
    assert repaired.returncode == 65, out
    # The records stay, the links stay where they are, nothing went to the trash.
    records = sorted(p.name for p in (linked.parent.parent / "records").iterdir())
    assert records == ["gone.txt", "moved.txt"]
    assert linked.is_symlink() and dangling.is_symlink() and stray.is_symlink()
    assert list((root / ".trash").iterdir()) == [trashed]
    assert (
        f"file-damaged  .trash/{trashed.name}: the bytes of file 'deleted.txt' are not there: "
        f"their name holds a symbolic link (to {moved / 'nothing-here'})"
    ) in out, out
    assert "never acknowledged" not in out and "record-without-file" not in out, out
    for name, blob, target in (
        ("moved.txt", linked, moved / linked.name),
        ("gone.txt", dangling, moved / "nothing-here"),
    ):
        assert (
            f"file-damaged  sessions/{session}/records/{name}: the bytes of file {name!r} are "
            f"not there: their name holds a symbolic link (to {target}), not a regular file"
        ) in out, out
        assert f'`cp --remove-destination "$(readlink -f {blob})" {blob}`' in out
    assert (
        f"unknown-entry  sessions/{session}/blobs/{stray.name}: not a blob: a symbolic link "
        f"(to {moved / linked.name})"
    ) in out, out
    stray.unlink()
    # The remedy it names puts the bytes back: the file is whole again, the check clean.
    os.unlink(linked)
    shutil.copyfile(moved / linked.name, linked)
    dangling.unlink()
    dangling.write_bytes(b"gone.txt" * 100)
    (trashed / "deleted.txt").unlink()
    (trashed / "deleted.txt").write_bytes(b"deleted.txt" * 100)
    assert linked.read_bytes() == b"moved.txt" * 100
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_hard_link_copy_of_a_live_root_is_announced_and_its_refusal_names_the_other_name(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    env = app_env(root, APP_LOCK_CHECK_SECONDS="0.1")
    server = Server(env, tmp_path / "server.log").wait_ready()
    copy = tmp_path / "app-data.before-upgrade"
    try:
        with server.client() as http:
            session = http.post("/sessions", json={"title": "copied"}).json()["id"]
            url = f"/sessions/{session}/files/a.txt"
            assert http.put(url, content=b"version 1").status_code == 201
            subprocess.run(["cp", "-al", str(root), str(copy)], check=True)
            # The server says so while it runs, not only at its next start: at its next look
            # at the lock (every 0.1 s here); a hundred looks leave no doubt.
            for _ in range(200):
                if "its next start will be refused" in server.output:
                    break
                assert server.process.poll() is None, server.output
                time.sleep(0.05)
            assert "its next start will be refused" in server.output, server.output
            assert f"`find {tmp_path} -xdev -samefile {root / '.server.lock'}`" in server.output
            assert http.put(url, content=b"version 2").status_code == 200
            # The copy, opened while the server runs: its lock file is the live root's, and
            # "stop it (kill <pid>)" named the server of the other root.
            on_copy = app_env(copy)
            status = run_app("status", env=on_copy)
            assert f"for data root {root}, not this one" in status.stdout, status.stdout
            assert f"`rm {copy / '.server.lock'}`" in status.stdout
            repair = run_app("data", "check", "--repair", env=on_copy)
            said = repair.stdout + repair.stderr
            assert repair.returncode == 69, said
            assert "kill" not in said and f"holds it for data root {root}" in said, said
            assert f"Leave that process running: it holds {root}, not {copy}" in said
            assert f"`rm {copy / '.server.lock'}`" in said
    finally:
        server.stop()
    refused = Server(env, tmp_path / "again.log")
    assert refused.wait_exit() == 69
    said = refused.output
    assert "has 2 hard links" in said and "cp -al" in said, said
    found = re.search(r"`(find \S+ -xdev -samefile \S+)`", said)
    assert found is not None, said
    # The remedy as given: remove every other name it lists, never the root's own.
    names = subprocess.run(
        found.group(1).split(), capture_output=True, text=True, check=False
    ).stdout.split()
    assert sorted(names) == sorted([str(root / ".server.lock"), str(copy / ".server.lock")])
    for name in names:
        if name != str(root / ".server.lock"):
            os.unlink(name)
    again = Server(env, tmp_path / "third.log").wait_ready()
    try:
        with again.client() as http:
            assert http.get(f"/sessions/{session}/files/a.txt").content == b"version 2"
    finally:
        again.stop()
    # The copy, its link gone, is a root of its own.
    repaired = run_app("data", "check", "--repair", env=app_env(copy))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr


def test_four_clients_and_a_read_only_check_beside_them_leave_every_version_whole(
    app_config: Config, tmp_path: Path
) -> None:
    env = app_env(app_config.data_root)
    server = Server(env, tmp_path / "server.log").wait_ready()
    acknowledged: set[str] = set()
    wrong: list[object] = []
    checks: list[subprocess.CompletedProcess[str]] = []
    done = threading.Event()
    try:
        with server.client() as http:
            sessions = [http.post("/sessions", json={"title": "busy"}).json()["id"] for _ in "ab"]

        def client(seed: int) -> None:
            rnd = random.Random(seed)
            with server.client() as http:
                for i in range(15):
                    session, name = rnd.choice(sessions), rnd.choice(["a.txt", "trash.json"])
                    url, roll = f"/sessions/{session}/files/{name}", rnd.random()
                    body = f"{seed}-{i}-".encode() * rnd.randint(1, 3000)
                    if roll < 0.45:
                        answer = http.put(url, content=body)
                    elif roll < 0.6:
                        answer = http.post(url.rsplit("/", 1)[0], files={"file": (name, body)})
                    elif roll < 0.75:
                        answer = http.delete(url)
                    elif roll < 0.8:
                        answer = http.post("/trash/empty", params={"older_than": 3600})
                    else:
                        answer = http.get(url, headers={"Range": "bytes=3-"} if i % 2 else {})
                        if answer.status_code == 200:
                            digest = hashlib.sha256(answer.content).hexdigest()
                            if answer.headers["etag"] != f'"{digest}"':
                                wrong.append(answer.headers)
                    if answer.status_code in (200, 201) and roll < 0.6:
                        acknowledged.add(hashlib.sha256(body).hexdigest())
                    elif answer.status_code not in (200, 201, 206, 404, 409, 416):
                        wrong.append((answer.request.method, answer.status_code, answer.text))

        def checker() -> None:
            while not done.is_set():
                checks.append(run_app("data", "check", "--quick", env=env))

        beside = threading.Thread(target=checker)
        beside.start()
        clients = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        done.set()
        beside.join()
    finally:
        done.set()
        server.stop()
    assert not wrong, wrong[:3]
    assert checks and all(c.returncode == 0 for c in checks), [c.stdout for c in checks]
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Nothing was emptied (every entry is younger than an hour): every version is kept.
    kept = {
        hashlib.sha256(path.read_bytes()).hexdigest()
        for path in app_config.data_root.rglob("*")
        if path.is_file() and ("blobs" in path.parts or ".trash" in path.parts)
    }
    assert acknowledged <= kept


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("capsh") is None,
    reason="another owner's files refuse a server only without root's capabilities (capsh)",
)
def test_a_session_restored_by_another_user_is_served_and_refuses_changes_naming_chown(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    env = app_env(root)
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        with server.client() as http:
            restored, other = (http.post("/sessions", json={"title": t}).json()["id"] for t in "ab")
            for session in (restored, other):
                url = f"/sessions/{session}/files/a.txt"
                assert http.put(url, content=b"version 1").status_code == 201
    finally:
        server.stop()
    # `cp -r` by another user: its owner, the umask's modes, and a leftover to repair.
    directory = root / "sessions" / restored
    (directory / "blobs" / new_session_id()).write_bytes(b"an upload never committed")
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, 65534, 65534)
        path.chmod(0o755 if path.is_dir() else 0o644)
    log = tmp_path / "without-capabilities.log"
    drop = "--drop=cap_dac_override,cap_dac_read_search,cap_fowner"
    serve = ["capsh", drop, "--", "-c", 'exec "$0" -m app serve --port 0', sys.executable]
    with log.open("ab") as out:
        process = subprocess.Popen(serve, env=env, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{published_port(root, process, log)}"
        headers = {"Authorization": f"Bearer {app_config.api_token}"}
        with httpx.Client(base_url=url, headers=headers) as http:
            file = f"/sessions/{restored}/files/a.txt"
            assert http.get(file).content == b"version 1"
            for method, path, body in (
                ("PUT", file, b"version 2"),
                ("DELETE", file, None),
                ("DELETE", f"/sessions/{restored}", None),
            ):
                answer = http.request(method, path, content=body)
                assert answer.status_code == 503, answer.text
                assert answer.json()["code"] == "storage_permission_denied"
                assert "nothing was changed" in answer.json()["message"]
                assert "`chown` to the user the app runs as" in answer.json()["message"]
            assert http.get(file).content == b"version 1"
            # The rest of the root is served and changed as before.
            answer = http.put(f"/sessions/{other}/files/a.txt", content=b"version 2")
            assert answer.status_code == 200
    finally:
        process.terminate()
        process.wait()
    # The repair it could not make names the file, its owner and the `chown` (red team 56).
    said = log.read_text()
    assert "(not done: Permission denied: " in said, said
    assert "it is owned by user 'nobody' (uid 65534), not by user 'root' (uid 0)" in said, said
    assert f"(`chown -R root: {root}`); resolve that" in said, said


def test_a_session_directory_moved_away_and_linked_back_is_named_so_with_the_mv(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    env = app_env(root)
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        session, other, third = (store.create_session(t)["id"] for t in ("a", "b", "c"))
        for each in (session, other, third):
            store.put_file(each, "a.txt", b"version 1")
        store.put_file(third, "deleted.txt", b"deleted")
        entry = store.delete_file(third, "deleted.txt").path
    (tmp_path / "other-disk").mkdir()
    # A session's directory, another's blobs/ and a trash entry, moved to another disk and
    # linked back.
    moves = []
    for directory in (root / "sessions" / session, root / "sessions" / other / "blobs", entry):
        elsewhere = tmp_path / "other-disk" / directory.parent.name / directory.name
        elsewhere.parent.mkdir(exist_ok=True)
        shutil.move(directory, elsewhere)
        directory.symlink_to(elsewhere)
        moves.append((directory, elsewhere))
    # And one whose blobs/ a hand (or a test) linked into another data root: never moved.
    production = tmp_path / "production"
    (production / "sessions" / "x" / "blobs").mkdir(parents=True)
    (production / ".app-profile.json").write_text('{"profile": "production"}')
    planted = root / "sessions" / third / "records"
    kept = tmp_path / "records-kept"
    shutil.move(planted, kept)
    planted.symlink_to(production / "sessions" / "x" / "blobs")
    checked = run_app("data", "check", "--repair", env=env)
    out = checked.stdout + checked.stderr
    assert checked.returncode == 65, out
    assert "restore session.json" not in out, out
    [(_, elsewhere), (_, blobs_elsewhere), (_, entry_elsewhere)] = moves
    # It was "not a trash entry; nothing: left for a human", and the trash read as empty.
    assert f"a symbolic link (to {entry_elsewhere}) where a trash entry belongs" in out, out
    assert (
        f"it leads into the data root {production}, whose data must stay there: remove the "
        f"link, `rm {planted}`"
    ) in out, out
    assert f"mv {production}" not in out
    planted.unlink()
    shutil.move(kept, planted)
    assert f"a symbolic link (to {elsewhere}) where a session's directory belongs" in out, out
    assert f"a symbolic link where the session keeps its files, leading to {blobs_elsewhere}" in out
    for link, target in moves:
        remedy = f"`rm {link} && mv {target} {link}`"
        assert remedy in out, out
        subprocess.run(["sh", "-c", remedy.strip("`")], check=True)
    checked = run_app("data", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        for each in (session, other, third):
            assert store.file_path(each, "a.txt")[0].read_bytes() == b"version 1"
        assert [e.file for e in store.list_trash()] == ["deleted.txt"]
