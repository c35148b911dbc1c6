"""Red team 44 on integrity: what a page counts but names nowhere, and a file cut as it is sent.

Real files, real commands and a real server on 127.0.0.1. What broke:

- A session directory with no ``session.json`` (removed by hand), one whose ``session.json``
  was made a directory, and a regular file or a FIFO in a session directory's place were
  counted in ``GET /sessions``'s ``total`` but named in no page's ``left_out`` (red team 43
  added it for links and damaged files only), and ``app sessions list`` said nothing of
  them; only ``app data check`` did. Each is now named, ``unreadable``, on the page and on
  stderr.
- A ``session.json`` made a link to another session's (or a copy of it): that session was
  answered in this one's place (listed twice, ``GET`` of this id gave the other's), this one
  hidden, and ``check`` said the root was consistent. A ``session.json`` that names another
  session is now unreadable (left out, named, reported by ``check``).
- A page that ``page_max_bytes`` cut short put its cursor at its last item, before the
  sessions it had left out after it: the next page named them again.
- A file cut (``truncate`` from outside the app) while a ``Range`` of it was sent: the
  answer was cut, but the server logged h11's "Too little data for declared
  Content-Length" traceback, naming neither the file nor the cause. It now logs
  ``file_damaged`` with the byte the file ended at.
- A filesystem mounted inside a stopped root (a tmpfs at ``.tmp/``): ``app serve`` refuses to
  start (78), but ``app data check`` said the root was consistent. It now reports the mount
  (``unknown-entry``) with the commands that take it out without losing what it holds.
- A start on a root whose server was told to stop while it finished an upload was refused
  (75) with "stop it (kill <pid>)", which cuts the upload it was finishing. The stopping
  server now says so in its details, and the refusal says to wait for it.
- An upload's temporary file cut (``truncate``) while its body streamed: the writes went on
  at their offset after a hole of zeros, and the upload was answered 201 with the SHA-256
  of bytes the disk never held; replaced by another file, that file was renamed into place
  under the same 201. It is now appended to, and a commit whose file is not the one written
  or does not hold the bytes received is refused (503 ``upload_changed_on_disk``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
from pathlib import Path

import httpx
import own_mounts
import pytest
from test_redteam_s43_integrity import _slow_body
from test_server_e2e import Server, app_env, run_app, wait_for

from app.config import Config
from app.errors import shell_word
from app.storage import open_storage


def _sessions_no_page_shows(config: Config) -> tuple[str, dict[str, str]]:
    """A plain session, and seven the pages cannot show, by id: what each one is."""
    root = config.data_root
    with open_storage(config, writer=True, kind="tests", wanted="make") as store:
        made = [store.create_session("t" * 300)["id"] for _ in range(8)]
    sessions = root / "sessions"
    plain, *broken = made
    what = ("no-json", "json-dir", "file", "fifo", "damaged", "linked", "json-link")
    kinds = dict(zip(broken, what, strict=True))
    for session_id, kind in kinds.items():
        directory = sessions / session_id
        if kind in ("no-json", "json-dir"):
            (directory / "session.json").unlink()
            if kind == "json-dir":
                (directory / "session.json").mkdir()
        elif kind == "damaged":
            (directory / "session.json").write_text("[]")
        elif kind == "json-link":  # to another session's session.json
            (directory / "session.json").unlink()
            (directory / "session.json").symlink_to(sessions / plain / "session.json")
        elif kind == "linked":  # to another session's directory in the same root
            shutil.rmtree(directory)
            directory.symlink_to(plain)
        else:
            shutil.rmtree(directory)
            if kind == "file":
                directory.write_text("not a session")
            else:
                os.mkfifo(directory)
    return plain, kinds


def _temp_file_of(root: Path, size: int) -> Path | None:
    """The upload's file in ``.tmp/`` once it holds ``size`` bytes."""
    found = [p for p in (root / ".tmp").iterdir() if p.is_file() and p.stat().st_size >= size]
    return found[0] if found else None


def _walk(http: httpx.Client, limit: int) -> tuple[list[str], list[dict[str, str]]]:
    items: list[str] = []
    passed: list[dict[str, str]] = []
    after = None
    while True:
        query = {"limit": limit} | ({} if after is None else {"after": after})
        page = http.get("/sessions", params=query).json()
        assert page["total"] == 8, page
        items += [item["id"] for item in page["items"]]
        passed += page["left_out"]
        if (after := page["next"]) is None:
            return items, passed


def test_every_session_a_page_counts_but_cannot_show_is_named_once_and_a_cut_file_is_logged(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    plain, kinds = _sessions_no_page_shows(app_config)
    env = app_env(root, APP_PAGE_MAX_BYTES="1024")  # two sessions of 300 letters a page
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        with server.client() as http:
            # Pages of 1 and 2 are answered on the direct path, of 1000 by FastAPI's route.
            for limit in (1, 2, 1000):
                items, passed = _walk(http, limit)
                assert items == [plain], limit
                # Broke: the four that are no session (not "damaged") were named nowhere,
                # and a page cut by its bytes named the ones after its last item twice.
                assert [one["id"] for one in passed] == sorted(kinds), (limit, passed)
                reasons = {one["id"]: one["reason"] for one in passed}
                assert reasons == {
                    one: "linked" if kind == "linked" else "unreadable"
                    for one, kind in kinds.items()
                }
                assert str(root) not in str(passed)
            for one in passed:
                if kinds[one["id"]] not in ("damaged", "linked", "json-link"):
                    assert one["message"] == (
                        f"session {one['id']} is counted but not shown: its directory holds "
                        "no session.json the app can read (removed, or replaced by something "
                        "else), or is not a directory; the server's log and `app data check` "
                        "name it and what to do"
                    )
            # The direct path (up to 100) and FastAPI's route (above) give the same bytes.
            for after in (None, plain, min(kinds)):
                query = {} if after is None else {"after": after}
                direct = http.get("/sessions", params={**query, "limit": 100}).content
                assert http.get("/sessions", params={**query, "limit": 101}).content == direct
            # A cursor that names a left-out session goes on after it.
            page = http.get("/sessions", params={"after": min(kinds), "limit": 1000}).json()
            assert [one["id"] for one in page["left_out"]] == sorted(kinds)[1:]

            # A Range of a file cut from outside while it is sent.
            data = os.urandom(16 << 20)
            assert http.put(f"/sessions/{plain}/files/a.bin", content=data).status_code == 201
            (blob,) = (root / "sessions" / plain / "blobs").iterdir()
            for ranges in ("bytes=1000-", "bytes=0-10,1000-"):  # one range, and several
                blob.write_bytes(data)  # in place, as it was acknowledged
                got = b""
                with (
                    pytest.raises(httpx.RemoteProtocolError, match="without sending complete"),
                    http.stream(
                        "GET", f"/sessions/{plain}/files/a.bin", headers={"Range": ranges}
                    ) as answer,
                ):
                    assert answer.status_code == 206
                    for chunk in answer.iter_raw(1 << 16):
                        if not got:
                            os.truncate(blob, 1 << 20)
                        got += chunk
                assert len(got) < len(data) - 1000, ranges

            # An upload's temporary file cut while its body streams: the writes went on at
            # their offset, after a hole of zeros of the same size, and the upload was 201
            # with the SHA-256 of bytes the disk never held. Replaced by another file of the
            # same size, that file was renamed into place, under the same 201. Now refused,
            # nothing stored.
            for how, damage in (
                ("cut", f"holds {3 << 20} bytes where {4 << 20} were received"),
                ("replaced", "is another file than the one written"),
            ):
                go, answers = threading.Event(), []
                body = _slow_body(data[: 1 << 20], data[1 << 20 : 4 << 20], go)
                name = f"/sessions/{plain}/files/{how}"
                sender = threading.Thread(
                    target=lambda a=answers, n=name, b=body: a.append(http.put(n, content=b))
                )
                sender.start()
                try:
                    wait_for(lambda: _temp_file_of(root, 1 << 20), "the upload's first MiB")
                    temp = _temp_file_of(root, 1 << 20)
                    assert temp is not None
                    if how == "cut":
                        os.truncate(temp, 0)
                    else:
                        temp.rename(tmp_path / "moved away")
                        temp.write_bytes(bytes(4 << 20))
                finally:
                    go.set()
                    sender.join()
                (answer,) = answers
                assert answer.status_code == 503, answer.text
                assert answer.json()["message"] == (
                    f"cannot store file {how!r} of session {plain}: its temporary file in the "
                    f"data root's .tmp/ {damage} (cut, replaced or written to from outside the "
                    "app while the upload was written), so nothing was acknowledged and the "
                    "session is unchanged. Send the file again; an operator finds what writes "
                    "in the data root's .tmp/ (a clean-up job, `fuser -v`) and stops it"
                )
                assert http.get(name).status_code == 404
                assert not any((root / ".tmp").iterdir())
    finally:
        assert server.stop() == 0
    log = server.output
    # Broke: h11's "Too little data for declared Content-Length" (for several ranges,
    # Starlette's "shorter than expected" RuntimeError), and nothing else.
    assert "Too little data" not in log and "Traceback" not in log, log
    assert log.count(f"cannot send file 'a.bin' of session {plain}: its bytes ended at byte ") == 2
    assert f"while they were sent, where {16 << 20} were acknowledged" in log
    assert "its download was cut before its last byte. `app data check` reports" in log

    listed = run_app("sessions", "list", env=app_env(root))
    assert listed.returncode == 0, listed.stderr
    sessions = root / "sessions"
    for session_id, kind in kinds.items():
        said = f"warning: session {session_id} is not listed: "
        if kind in ("file", "fifo"):
            what = "a regular file" if kind == "file" else "a FIFO"
            said += (
                f"{sessions / session_id} is {what} where session {session_id}'s directory "
                "belongs, so the session is not served; `app data check` reports it as "
                "session-unreadable. Move it aside and restore the session from a backup"
            )
        elif kind == "linked":
            said += (
                f"{sessions / session_id} is a symbolic link (to {plain}) where a session's "
                f"directory belongs: the app never follows one, so the session is not served; "
                f"it leads into the data root {root}, whose data must stay there: remove the "
                f"link, `rm {sessions / session_id}`, and restore the session from a backup"
            )
        elif kind == "json-link":
            said += (
                f"cannot read session {session_id}: its session.json names session {plain}, "
                "not this one (another session's file) (it was changed outside the app)"
            )
        elif kind != "damaged":
            what = "missing" if kind == "no-json" else "a directory"
            said += (
                f"cannot read session {session_id}: its session.json "
                f"({sessions / session_id / 'session.json'}) is {what}, so the session is not "
                "served; `app data check` reports it as session-unreadable. Put session.json "
                "back from a backup, or move the directory aside"
            )
        assert said in listed.stderr, listed.stderr

    # The session whose session.json leads to the plain one's goes to the trash as it is
    # (what DELETE does); the plain one stays.
    (other,) = (one for one, kind in kinds.items() if kind == "json-link")
    with open_storage(app_config, writer=True, kind="tests", wanted="delete") as store:
        store.delete_session(other)
        assert store.get_session(plain)["title"] == "t" * 300
        assert [entry.session_id for entry in store.list_trash()] == [other]


_CHECK = """
import subprocess, sys
from app.config import load
from app.storage import open_storage

subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", sys.argv[1]], check=True)
with open_storage(load(), writer=False, kind="tests", wanted="check it") as store:
    for finding in store.check(repair=False).findings:
        print(finding.problem, finding.target, finding.detail, finding.repair, sep="|")
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mounting a filesystem takes root and unshare(1)",
)
def test_check_reports_a_filesystem_mounted_inside_a_stopped_root(app_config: Config) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        store.create_session("kept")
    mount = root / ".tmp"
    child = own_mounts.python_c(_CHECK, str(mount))  # its exit status checked
    # Broke: nothing, where every writer (`app serve` too) refuses the root.
    assert child.stdout.splitlines() == [
        (
            "unknown-entry|.tmp|a filesystem mounted inside the data root: the app moves data "
            "within the root by rename, which cannot cross a mount point, so every writer (a "
            "server's start-up, a restore, a purge, `check --repair`) refuses to open it|nothing: "
            "left for a human (copy what it holds onto the data root's own filesystem before you "
            "unmount it (a tmpfs's files are gone once it is unmounted, a disk's are hidden): with "
            f"no server on the root, `cp -a {mount} {mount}.copy && umount {mount} && rmdir "
            f"{mount} && mv {mount}.copy {mount}` (`rmdir` stops it if files lie under the mount "
            "point: look at them first))"
        )
    ], child.stderr


def test_a_start_beside_a_server_finishing_an_upload_waits_and_keeps_it(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    env = app_env(root)
    one = Server(env, tmp_path / "one.log").wait_ready()
    data, go, answers = os.urandom(4 << 20), threading.Event(), []

    with one.client() as http:
        session = http.post("/sessions", json={"title": "t"}).json()["id"]

        body = _slow_body(data[: 1 << 20], data[1 << 20 :], go)

        def upload() -> None:
            answers.append(http.put(f"/sessions/{session}/files/a.bin", content=body))

        sender = threading.Thread(target=upload)
        sender.start()
        try:
            wait_for(
                lambda: any(p.stat().st_size for p in (root / ".tmp").rglob("*") if p.is_file()),
                "the upload's first bytes in .tmp/",
            )
            one.process.terminate()
            wait_for(lambda: "stopping_since" in (root / ".server.lock").read_text(), "stopping")
            refused = run_app("data", "check", "--repair", env=env)
            status = run_app("status", env=env)
            # Stopped with SIGSTOP as well, it finishes nothing until resumed: it was "wait for
            # pid N to exit", for ever (red team 75 on regress, round c).
            os.kill(one.pid, signal.SIGSTOP)
            try:
                paused = run_app("data", "check", "--repair", env=env)
            finally:
                os.kill(one.pid, signal.SIGCONT)
        finally:
            go.set()
            sender.join()
    assert one.wait_exit() == 0
    assert "wait for pid" not in paused.stderr, paused.stderr
    assert (
        f"resume it to let it finish (`fg` in the shell that started it, or kill -CONT {one.pid})"
    ) in paused.stderr, paused.stderr
    # Broke: "stop it (kill <pid>) or wait for it to finish and retry".
    assert refused.returncode == 75, refused.stderr
    assert f"is held by pid {one.pid}, kind server" in refused.stderr
    assert ", stopping since " in refused.stderr
    assert (
        "finishing the requests in flight (for at most shutdown_grace_seconds, 30 s): wait for "
        f"pid {one.pid} to exit (`flock -s {shell_word(root / '.server.lock')} true` returns "
        "once it lets go) and retry; do not kill it again, which cuts those requests"
    ) in refused.stderr, refused.stderr
    assert "kill" not in refused.stderr.replace("do not kill it", "")
    assert f"pid {one.pid}, kind server" in status.stdout, status.stdout
    assert ", stopping since " in status.stdout, status.stdout
    (answer,) = answers
    assert answer.status_code == 201, answer.text
    two = Server(env, tmp_path / "two.log").wait_ready()  # its start-up repair runs first
    try:
        with two.client() as http:
            got = http.get(f"/sessions/{session}/files/a.bin")
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        assert two.stop() == 0
