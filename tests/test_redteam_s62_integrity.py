"""Red team 62 on integrity (branch rt-integrity62): see docs/explanation/attacks/.

What broke: after a failed fsync, only the refusal said what to do. Red team 61 made
``storage_sync_failed`` say to reboot, run `app data check`, then start the server: a server
restarted without a reboot, and the check its start-up runs, read the pages the kernel
dropped as written. But the places an operator watches still sent them to a restart alone:
``GET /health``'s and ``/ready``'s reason ("every change is refused until the server is
restarted"), the server's log line of the failure ("a start-up runs `app data check
--repair`"), the start-up check's ("Mend the disk, then restart it: its start-up runs the
repair again"), ``/health``'s description in the OpenAPI document ("restart it: its start-up
repairs the root"), the deployment guide (``sudo systemctl restart app``) and the HTTP
reference ("a supervisor that restarts an unhealthy server brings the writes back"). What changed:
one text (`app.errors.AFTER_FAILED_SYNC`) says the remedy in each of them: mend the cause,
reboot, `app data check`, then start the server.
"""

from __future__ import annotations

from pathlib import Path

from faults import attached, needs_strace
from forked_app import run, served
from test_server_e2e import app_env

#: What every place that speaks of a failed fsync must say (`AFTER_FAILED_SYNC`).
REBOOT = "reboot (until then the kernel may serve what it failed to write as written"


@needs_strace
def test_the_health_check_and_the_log_say_to_reboot_after_a_failed_fsync(tmp_path: Path) -> None:
    with served(tmp_path) as (process, http, root):
        sid = http.post("/sessions", json={"title": "kept"}).json()["id"]
        assert http.put(f"/sessions/{sid}/files/a.bin", content=b"old").status_code == 201
        with attached(process.pid, "fsync:error=EIO:when=1"):
            failed = http.put(f"/sessions/{sid}/files/a.bin", content=b"new")
        assert failed.json()["code"] == "storage_sync_failed", failed.text
        health = http.get("/health")
        assert health.json()["status"] == "writes_stopped", health.text
        said = " ".join(health.json()["reason"].split())
        # Before: "every change is refused until the server is restarted", and no more.
        assert REBOOT in said, said
        assert "run `app data check` (it reads every file's bytes" in said, said
        assert str(root) not in health.text  # no path to a client without a token
        ready = http.get("/ready").json()["checks"]["data root"]
        assert REBOOT in " ".join(ready.split()), ready
        described = http.get("/openapi.json").json()["paths"]["/health"]["get"]["description"]
        assert "reboot, run `app data check`" in " ".join(described.split()), described
    logged = " ".join((tmp_path / "serve.log").read_text().split())
    # Before: "(what the kernel could not write it may have dropped; a start-up runs
    # `app data check --repair`)".
    assert "a restart alone reads it as written): mend the cause (`dmesg`" in logged, logged
    assert REBOOT in logged, logged
    env = app_env(root)
    assert run(env, ["data", "check", "--repair"]).returncode == 0
    record = (root / "sessions" / sid / "records" / "a.bin").read_text()
    assert run(env, ["data", "check"]).returncode == 0, record
