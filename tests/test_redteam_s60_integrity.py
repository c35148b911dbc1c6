"""Red team 60 on integrity (branch rt-integrity44): see docs/explanation/attacks/.

What broke: a directory of the data root at its filesystem's limit of subdirectories
(``EMLINK``: ext2 and ext3 at 31,998, ext4 made without ``dir_nlink`` at 64,998). Every such
refusal said "a directory of the data root holds as many entries as its filesystem allows;
empty the trash", whichever directory it was. Where it was ``sessions/`` (a ``POST /sessions``,
whose new directory is made there, or an ``app sessions restore``, which moves one back
there), emptying the trash frees none of its entries: the operator was sent to the wrong
remedy, and told nothing of which directory was full. What changed: the refusal names the
directory the call made its entry in (``sessions/`` or ``.trash/``, from the path of the
``mkdir`` or the destination of the ``rename``) and the remedy that frees it
(`app.errors._failed_hint`).

And an ``empty-trash`` (``POST /trash/empty``) or a purge stopped partway by a filesystem gone
read-only (``EROFS`` from its second step on) named the cause and told the operator to look
at descriptors, free space and permissions, the causes its remedy listed; it now lists that
one too, with the remount (`app.errors.PARTWAY_RESOLVE`).

What held is kept as one sample, on the same server: a replace killed by ``SIGKILL`` as it
moves the old bytes into their trash entry (after its commit point), then `app data check
--repair` (what a server's start-up runs): the new bytes served, the old ones in the trash
entry, the check clean.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest
from faults import app_with_fault, attach, attached, needs_strace
from forked_app import run, served
from test_server_e2e import app_env

FULL_SESSIONS = (
    "the data root's sessions/ holds as many sessions as its filesystem allows in one "
    "directory (ext2 and ext3: 31,998 subdirectories; ext4 made without dir_nlink: 64,998), "
    "and emptying the trash frees none of them; delete the sessions no longer needed"
)
FULL_TRASH = "the data root's .trash/ holds as many entries as its filesystem allows"
# The calls that change a directory's entries: failed from a step on, as a filesystem
# remounted read-only (or aborted by ext4 on an error) fails them all from then on.
CHANGES = "rename,renameat,renameat2,mkdir,mkdirat,unlink,unlinkat,rmdir"


@needs_strace
def test_a_full_directory_of_the_root_is_named_with_the_remedy_that_frees_it(
    tmp_path: Path,
) -> None:
    old, new = b"old" * 700, b"new" * 900
    with served(tmp_path) as (process, http, root):
        kept = http.post("/sessions", json={"title": "kept"}).json()["id"]
        assert http.put(f"/sessions/{kept}/files/a.txt", content=b"a").status_code == 201
        # The first mkdir after the attach: the new session's directory in sessions/.
        with attached(process.pid, "mkdir,mkdirat:error=EMLINK:when=1"):
            made = http.post("/sessions", json={"title": "one too many"})
        assert made.status_code == 503, made.text
        # Before: "a directory of the data root ...; empty the trash", for sessions/.
        assert (
            "cannot POST /sessions: the data root's filesystem failed a call with EMLINK (Too "
            f"many links): {FULL_SESSIONS}"
        ) in made.json()["message"]
        # The delete's entry is made in .trash/: there, emptying the trash is the remedy.
        with attached(process.pid, "mkdir,mkdirat:error=EMLINK:when=1"):
            gone = http.delete(f"/sessions/{kept}")
        assert gone.status_code == 503, gone.text
        assert FULL_TRASH in gone.json()["message"], gone.text
        assert [s["id"] for s in http.get("/sessions").json()["items"]] == [kept]

        # A filesystem gone read-only under an empty-trash, after its first step: it says
        # how far it got, and the remedy for that cause too.
        for name in ("x.txt", "y.txt"):
            assert http.put(f"/sessions/{kept}/files/{name}", content=b"x").status_code == 201
            assert http.delete(f"/sessions/{kept}/files/{name}").status_code == 200
        with attached(process.pid, f"{CHANGES}:error=EROFS:when=2+"):
            emptied = http.post("/trash/empty")
        assert emptied.json()["code"] == "stopped_partway", emptied.text
        # Before: "Resolve the cause (`ulimit -n`, free space, permissions; ...)".
        assert "(EROFS: Read-only file system)" in emptied.json()["message"], emptied.text
        assert "a filesystem gone read-only: `mount -o remount,rw`" in emptied.json()["message"]
        left = {*(root / ".trash").iterdir()}
        assert http.delete(f"/sessions/{kept}").status_code == 200
        (deleted,) = {*(root / ".trash").iterdir()} - left

        # Held, on the same server: a replace killed (SIGKILL) as it moves the old bytes
        # into their trash entry, after its commit point; `check --repair` (a server's
        # start-up) finishes the move.
        sid = http.post("/sessions", json={"title": "replaced"}).json()["id"]
        assert http.put(f"/sessions/{sid}/files/a.bin", content=old).status_code == 201
        blob = json.loads((root / "sessions" / sid / "records" / "a.bin").read_text())["blob"]
        old_blob = root / "sessions" / sid / "blobs" / blob
        tracer = attach(process.pid, "rename,renameat,renameat2:signal=KILL:when=1", old_blob)
        with pytest.raises(httpx.TransportError):  # no answer: the server died in it
            http.put(f"/sessions/{sid}/files/a.bin", content=new)
        process.wait()
        tracer.kill()  # its tracee is gone: a SIGTERM would wait on it
        tracer.wait()
        assert process.returncode == -signal.SIGKILL
    env = app_env(root)
    found = run(env, ["data", "check"])
    assert "trash-unfinished" in found.stdout, found.stdout

    # A restore moves the session back into sessions/: the same words from the command.
    restore = ("sessions", "restore", kept)
    back = app_with_fault(root, "rename:error=EMLINK:when=1", deleted / "session", command=restore)
    assert back.returncode == 74, (back.stdout, back.stderr)
    assert FULL_SESSIONS in " ".join(back.stderr.split()), back.stderr
    assert not (root / "sessions" / kept).exists()

    assert run(env, ["data", "check", "--repair"]).returncode == 0
    checked = run(env, ["data", "check"])
    assert checked.returncode == 0, checked.stdout
    record = json.loads((root / "sessions" / sid / "records" / "a.bin").read_text())
    assert (root / "sessions" / sid / "blobs" / record["blob"]).read_bytes() == new
    (replaced,) = {*(root / ".trash").iterdir()} - {deleted, *left}
    assert (replaced / "a.bin").read_bytes() == old
