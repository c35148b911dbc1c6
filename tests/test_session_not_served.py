"""A session id whose place under ``sessions/`` holds something that is no session.

Red team 44 made ``GET /sessions`` name each such entry in ``left_out`` (``unreadable``): a
directory whose ``session.json`` was removed or made a directory, a regular file or a FIFO in
the directory's place. Reading, changing or deleting one of them still answered 404
``session_not_found`` ("`app sessions list` shows the sessions"), as if it were gone, where
the listing said it was there and could not be read. Now each answers 500
``session_unreadable`` (`SessionNotServedError`), naming the session and what to run, and
changes nothing: what is there stays for a human. Through a real server (the direct path's
get and FastAPI's routes) and the real CLI.
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

from test_redteam_s44_integrity import _sessions_no_page_shows
from test_server_e2e import Server, app_env, run_app

from app.config import Config


def snapshot(root: Path) -> dict[str, str]:
    """`test_server_e2e.snapshot`, but what is no regular file or directory (the FIFO in a
    session's place) by its kind, never opened: a read of it waits for a writer for ever.
    Without the lock file, which says who holds the root (a server, then no one)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.name == ".server.lock":
            continue
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path.relative_to(root))] = stat.filemode(mode)
    return out


NOT_SERVED = (
    "session {} cannot be served: its directory holds no session.json the app can read "
    "(removed, or replaced by something else), or is not a directory (it was changed outside "
    "the app). Nothing was changed. `app data check` reports it as session-unreadable and "
    "names what is there: restore the session from a backup, or move what is there aside"
)

#: The four kinds that are no session; "damaged", "linked" and "json-link" have answers of
#: their own (tests/test_damaged_session.py, red teams 43 and 44).
NO_SESSION = ("no-json", "json-dir", "file", "fifo")


def test_an_entry_that_is_no_session_is_answered_unreadable_not_missing_and_kept(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    plain, kinds = _sessions_no_page_shows(app_config)
    broken = sorted(one for one, kind in kinds.items() if kind in NO_SESSION)
    env = app_env(root)
    server = Server(env, tmp_path / "server.log").wait_ready()
    try:
        before = snapshot(root)
        with server.client() as http:
            listed = http.get("/sessions", params={"limit": 1000}).json()["left_out"]
            assert {one["id"] for one in listed} >= set(broken)
            for session_id in broken:
                base = f"/sessions/{session_id}"
                for method, path, files in (
                    ("GET", base, None),  # the direct path's
                    ("DELETE", base, None),
                    ("GET", f"{base}/files", None),
                    ("POST", f"{base}/files", {"file": ("a.txt", b"hello")}),
                    ("PUT", f"{base}/files/a.txt", None),
                    ("GET", f"{base}/files/a.txt", None),
                    ("DELETE", f"{base}/files/a.txt", None),
                ):
                    content = b"hello" if method == "PUT" else None
                    answer = http.request(method, path, content=content, files=files)
                    problem = answer.json()
                    assert (answer.status_code, problem["code"]) == (
                        500,
                        "session_unreadable",
                    ), (kinds[session_id], method, path, problem)
                    assert problem["message"] == NOT_SERVED.format(session_id), problem
                    assert str(root) not in json.dumps(problem)
            # The plain session is served as ever.
            assert http.get(f"/sessions/{plain}").status_code == 200
        # Nothing changed, moved or was written (the audit log included).
        assert snapshot(root) == before
    finally:
        server.stop()
    for session_id in broken:
        for args in (("sessions", "show", session_id),):
            done = run_app(*args, env=env)
            said = " ".join(done.stderr.split())
            assert done.returncode == 65, (kinds[session_id], args, said)
            assert NOT_SERVED.format(session_id) in said, (args, said)
    assert snapshot(root) == before
