"""Red team 57 on integrity (branch rt-integrity41): the audit log rotated, or given a private
copy, between a change and its line; a held root aged by systemd-tmpfiles.

What broke (a real ``app data empty-trash`` stopped by the kernel, ``strace --inject
signal=STOP``, just after its change, then continued):

* Every change opens ``audit.jsonl`` before its commit point and writes its line after it
  (red team 20: a process out of descriptors must fail before it changes anything). A log
  rotated as logrotate rotates it meanwhile (its default ``create``: the log renamed to
  ``audit.jsonl.1`` and a new one made; ``compress`` then reads the renamed copy into
  ``audit.jsonl.1.gz`` and removes it) took the line through the old descriptor into the
  removed copy. The ``empty-trash`` removed its entries, exit 0, and its line was in
  neither file: a removal of data audited nowhere, which ``app data check`` called "clean"
  (it can find a missing line only for an entry still in the trash). The on-disk layout
  page said that rotation by rename is safe under a live server because "the app opens the
  log for each line". The same descriptor took a server's line into a backup's file when
  a snapshot hard-linked the log (``cp -al``) and another of the server's changes gave the
  root's log a private copy before the line was written.

What changed: a line is written through the descriptor opened before the change only while
``audit.jsonl`` still names that file and nothing else does; otherwise it goes to the file
at that name (made again where the rotation left none, copied to an inode of its own where
shared), and the private copy is made under the same lock as the appends
(`app.dataroot._write_audit_line`).

And an age-based clean-up that never asks for the lock: ``systemd-tmpfiles --clean`` over a
directory holding a data root (``/tmp`` and ``/var/tmp`` are aged on Fedora and Debian 13)
removed every file older than its age under a live holder, the whole root with an age of 0.
Every holder now also holds a shared ``flock`` on the root's directory, which
systemd-tmpfiles leaves alone (`app.lock._keep_aged`).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from faults import needs_strace, strace_prefix

from app.config import Config
from app.storage import open_storage


def _children(pid: int) -> list[int]:
    return [int(n) for n in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@needs_strace
def test_a_line_written_after_the_log_was_rotated_goes_to_the_log(app_config: Config) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        store.delete_session(store.create_session("t")["id"])
        (entry,) = store.list_trash()
    # The empty-trash's move of the entry out of the trash (its commit point, after the log
    # is opened) stops the command; strace's output, read through a pipe, says when it has.
    read_end, write_end = os.pipe()
    command = strace_prefix("rename:signal=STOP:when=1", root / ".trash" / entry.name)
    command[command.index("-o") + 1] = f"/dev/fd/{write_end}"
    tracer = subprocess.Popen(
        [*command, sys.executable, "-m", "app", "data", "empty-trash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=(write_end,),
    )
    os.close(write_end)
    try:
        with open(read_end, encoding="utf-8") as traced:
            assert any("stopped by SIGSTOP" in line for line in traced), tracer.communicate()
        (child,) = _children(tracer.pid)
        # logrotate with `create` and `compress`: rename, a new log, the copy gzip'ed.
        log = root / "audit.jsonl"
        rotated = root / "audit.jsonl.1"
        log.rename(rotated)
        log.touch(mode=0o600)
        with gzip.open(root / "audit.jsonl.1.gz", "wb") as packed:
            packed.write(rotated.read_bytes())
        rotated.unlink()
        os.kill(child, signal.SIGCONT)
        out, err = tracer.communicate()
    finally:
        if tracer.poll() is None:
            for child in _children(tracer.pid):
                os.kill(child, signal.SIGKILL)
            tracer.kill()
            tracer.wait()
    assert tracer.returncode == 0, (out, err)
    assert "removed 1 trash entry" in out
    assert not (root / ".trash" / entry.name).exists()
    # Before the fix: an empty log, the line gone with the removed copy.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["operation"], line["details"]["entries"]) for line in lines] == [
        ("empty-trash", [entry.name])
    ]


def test_a_line_written_after_another_change_copied_a_linked_log_goes_to_the_copy(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    log = root / "audit.jsonl"
    backup = tmp_path / "audit.jsonl"
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        first, second = (store.create_session(title)["id"] for title in "ab")
        # A change of the server's opens the log before its commit point (as the first of two
        # deletes at once does, `DataRoot.prepare`) and writes its line after it. Meanwhile a
        # snapshot links the log (`cp -al`) and a second delete, seeing it shared, gives the
        # root's log an inode of its own.
        with store.root.prepare(audit=True) as prepared:
            os.link(log, backup)
            store.delete_session(second)
            prepared.audit("trash-session", first, trash="-")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    # Before the fix: the first change's line was in the backup's file only.
    assert sorted(line["target"] for line in lines) == sorted([first, second])
    assert backup.read_text() == ""


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None, reason="needs systemd-tmpfiles")
def test_a_held_root_is_left_alone_by_an_age_based_clean_up(
    app_config: Config, tmp_path: Path
) -> None:
    root = app_config.data_root
    aged = tmp_path / "aged.conf"
    # As Fedora's and Debian 13's /tmp and /var/tmp are aged (10 and 30 days), with an age of
    # 0: every file and directory below is old enough, the root's and the test's own.
    aged.write_text(f"d {root.parent} - - - 0\n", encoding="utf-8")
    bystander = root.parent / "bystander"
    bystander.write_bytes(b"cleaned")
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        store.put_file(session, "kept.txt", b"acknowledged")
        store.put_file(session, "old.txt", b"deleted")
        entry = store.delete_file(session, "old.txt")
        cleaned = subprocess.run(
            ["systemd-tmpfiles", "--clean", str(aged)], capture_output=True, text=True, check=False
        )
        assert cleaned.returncode == 0, cleaned.stderr
        assert not bystander.exists()  # the clean-up ran
        # Before the fix: the whole root was removed, its lock file and stamp with it.
        assert store.file_path(session, "kept.txt")[0].read_bytes() == b"acknowledged"
        assert (entry.path / "old.txt").read_bytes() == b"deleted"
        assert store.check().findings == []
