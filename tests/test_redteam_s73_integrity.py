"""Red team 73 on integrity: a repair stopped between its repairs.

Found by running red team 28's harness (a system call failed at each N in turn) at every
``openat`` of ``app data check --repair`` with ``EACCES``: a refusal at a step of no one
repair (the listing of ``sessions/`` after the trash's pass, the trash's listing after the
pass over ``sessions/.new-*``) escaped the per-repair guard (`app.check.Checker.item`). The
command then said the storage error's "nothing was changed" of the repairs it had made, and
their ``check-repair`` line was never written (docs/explanation/attacks/, red team 73).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from faults import NO_BYTECODE, needs_strace, strace_prefix
from test_redteam_s51_integrity import _replace_stopped_after_its_commit

from app.config import Config
from app.storage import open_storage


@needs_strace
def test_a_repair_stopped_between_its_repairs_says_what_it_made_and_audits_it(
    app_config: Config,
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session, entry, blob = _replace_stopped_after_its_commit(store, root)
    # The opens of sessions/ and audit.jsonl: the store's open, the pass over
    # sessions/.new-*, then, after the trash's pass has finished the replace, the listing of
    # the sessions (5), refused, and from it every open of the audit log too (a disk
    # refusing all: red team 73 on regress c, where the line said "audited" went to the
    # command's log alone).
    fault = strace_prefix(
        "openat:error=EACCES:when=5+", root / "sessions", root / "audit.jsonl", seccomp=True
    )
    stopped = subprocess.run(
        [*fault, sys.executable, "-m", "app", "data", "check", "--repair"],
        capture_output=True,
        text=True,
        env={**os.environ, **NO_BYTECODE, "APP_DATA_ROOT": str(root)},
        check=False,
    )
    assert stopped.returncode == 74, (stopped.stdout, stopped.stderr)
    # Before: "cannot run `app data check` (.../sessions): the data root's filesystem refused
    # it (permission denied ...); nothing was changed", and no check-repair line; then
    # "the 1 made are kept, and audited (a check-repair line in the audit log)" of a line
    # the audit log had refused.
    assert (
        "error: `app data check --repair` stopped after 1 repair(s) (EACCES: Permission "
        f"denied: {root / 'sessions'}): the 1 made are kept, but the audit log could not "
        "record them (Permission denied, at its check-repair line): their record is in this "
        "command's log, above; the rest of the data root was not checked. Resolve the cause"
    ) in stopped.stderr, stopped.stderr
    assert "then run `app data check --repair` again to check the rest" in stopped.stderr
    assert "nothing was changed" not in stopped.stderr
    assert not blob.exists()  # the repair was made: the old bytes are in their entry
    assert (entry / "a.txt").read_bytes() == b"version 1"
    assert "check-repair" not in (root / "audit.jsonl").read_text()
    # The line it should hold, in the command's log.
    lost = [line.split("the line it should hold: ", 1) for line in stopped.stderr.splitlines()]
    said = [json.loads(line[1]) for line in lost if len(line) == 2]
    (repair,) = [line for line in said if line["operation"] == "check-repair"]
    (finding,) = repair["details"]["findings"]
    assert (finding["problem"], finding["repaired"]) == ("trash-unfinished", True)
    assert finding["target"] == str(entry.relative_to(root))
    # Run again, it checks the rest and finds the root clean.
    with open_storage(app_config, writer=True, kind="tests", wanted="repair") as store:
        assert store.check(repair=True).findings == []
        body, _ = store.open_file(session, "a.txt")
        with body:
            assert body.read() == b"version 2"


@needs_strace
def test_a_ctrl_c_as_a_repair_opens_the_audit_log_leaves_its_line_written(
    app_config: Config,
) -> None:
    """Red team 73 on regress c: a Ctrl-C as `check --repair` opened the audit log for its
    ``check-repair`` line cut the line (held only over its write), and no later run writes
    it: the repair was recorded nowhere."""
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        _, entry, blob = _replace_stopped_after_its_commit(store, root)
    # The log's calls: the store's open writes its line (1, a write), then the repair's
    # line is opened (2), where the Ctrl-C comes. Not under --seccomp-bpf, which counts
    # the calls otherwise.
    stopped = subprocess.run(
        [
            *strace_prefix("openat,write,fsync:signal=INT:when=2", root / "audit.jsonl"),
            *(sys.executable, "-m", "app", "data", "check", "--repair"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **NO_BYTECODE, "APP_DATA_ROOT": str(root)},
        check=False,
    )
    assert stopped.returncode == 130, (stopped.stdout, stopped.stderr)
    assert "`app data check` was interrupted (Ctrl-C, SIGINT)" in stopped.stderr
    assert not blob.exists()  # the repair was made
    lines = [json.loads(line) for line in (root / "audit.jsonl").read_text().splitlines()]
    (repair,) = [line for line in lines if line["operation"] == "check-repair"]
    (finding,) = repair["details"]["findings"]
    assert finding["target"] == str(entry.relative_to(root))
