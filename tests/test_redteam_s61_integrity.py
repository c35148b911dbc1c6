"""Red team 61 on integrity (branch rt-integrity61): see docs/explanation/attacks/.

What broke: a server went on acknowledging changes after an fsync had failed. Since red team
28 the first failed fsync stops the process's changes (PostgreSQL's "fsyncgate": the kernel
may have dropped the pages it could not write and marked them clean, so a later fsync
succeeds without them). That failure was recorded under the device number of the failed
descriptor, found together with the descriptor's name (`/proc/self/fd/N`): where the name
could not be read (a process without `/proc`: a chroot, a sandbox that mounts none), it was
recorded under the device -1, which no later check looks up. The next ``PUT`` was a 200 and
``GET /health`` said ok (and, by reading, the group commit of ``sessions/``, whose waiters
each run their own fsync after a failed one, was answered by a later success). Kept by
device, it was also looked up by another device where a file's and its directory's differ
(an overlay whose layers lie on two filesystems: a file has the upper layer's device, a
directory the overlay's): ``GET /health`` said ok there too, and ``POST /trash/empty``
removed an entry with a 200 (by hand, not kept: it takes a mount namespace). What changed:
one failure for the whole process (`app.dataroot.failed_sync`), whatever the descriptor, its
name or its device: every later fsync and every change is refused, and ``GET /health`` says
why, until the server is restarted.

And the refusal (``storage_sync_failed``, a server's 503 and a command's exit 74 alike) told the
operator to mend the cause and restart the server: restarted without a reboot, the server and
the check its start-up runs read the pages the kernel dropped as written, as the docs say
(reference/http-api.md). It now says to reboot and run `app data check` (which reads every
file's bytes against its SHA-256) before starting the server or running the command again, and
no longer speaks of a request alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from faults import attached, needs_strace
from forked_app import run, served
from test_server_e2e import app_env

#: The name of a descriptor, read where a failed fsync is recorded: failed, as in a process
#: that has no `/proc` (readlink, or readlinkat in a newer C library).
NO_PROC = ("readlink,readlinkat:error=ENOENT",)


@needs_strace
def test_an_fsync_failure_whose_descriptor_has_no_name_stops_every_later_change(
    tmp_path: Path,
) -> None:
    old, new, later = b"old" * 300, b"new" * 400, b"later" * 500
    with served(tmp_path) as (process, http, root):
        sid = http.post("/sessions", json={"title": "kept"}).json()["id"]
        assert http.put(f"/sessions/{sid}/files/a.bin", content=old).status_code == 201
        # The first fsync of the replace (its new bytes'), with `/proc` out of reach.
        with attached(process.pid, "fsync:error=EIO:when=1", also=NO_PROC):
            failed = http.put(f"/sessions/{sid}/files/a.bin", content=new)
        assert failed.status_code == 503, failed.text
        assert failed.json()["code"] == "storage_sync_failed", failed.text
        # Before: "then restarts the server", which reads what the kernel dropped as written.
        said = " ".join(failed.json()["message"].split())
        assert (
            "replace the device), reboots (until then the kernel may serve what it failed to "
            "write as written, to a restarted server and to a check alike), runs `app data "
            "check` (it reads every file's bytes against its SHA-256), then starts the server"
        ) in said, said
        # The fsyncs work again (the tracer is gone): before, this was a 200 and /health ok.
        again = http.put(f"/sessions/{sid}/files/a.bin", content=later)
        assert again.status_code == 503, again.text
        assert again.json()["code"] == "storage_sync_failed", again.text
        assert "(Input/output error), in an earlier change" in again.json()["message"]
        assert "acknowledges no more changes to the data root until it is restarted" in (
            " ".join(again.json()["message"].split())
        )
        made = http.post("/sessions", json={"title": "after the failure"})
        assert made.json()["code"] == "storage_sync_failed", made.text
        health = http.get("/health")
        assert health.status_code == 503, health.text
        assert health.json()["status"] == "writes_stopped", health.text
        assert "every change is refused until the server is restarted" in health.json()["reason"]
        assert [s["id"] for s in http.get("/sessions").json()["items"]] == [sid]
    # What the replace left: the old version, or the new one whole; never the later one.
    env = app_env(root)
    assert run(env, ["data", "check", "--repair"]).returncode == 0
    checked = run(env, ["data", "check"])
    assert checked.returncode == 0, checked.stdout
    record = json.loads((root / "sessions" / sid / "records" / "a.bin").read_text())
    assert (root / "sessions" / sid / "blobs" / record["blob"]).read_bytes() in (old, new)
