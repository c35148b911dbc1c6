"""Red team 61 on the last merges, integrity side (branch rt-regress13): see
docs/explanation/attacks/.

What broke: since rt-integrity61 one failed fsync stops every later change of the process
(`app.dataroot.failed_sync`), whatever its root: "a process changes one data root". A test
run's process does not: each of its tests opens a throw-away root of its own in the sandbox.
A test that made an fsync fail on purpose (``os.fsync`` patched to raise ``EIO``, as a suite
tests its own handling of a full or failing disk) left the failure recorded for the rest of
its process, pytest's or an xdist worker's: every later test's first change, in a root of its
own, was refused with ``FsyncFailed`` naming the first test's ``session.json``, and a command
a later test ran in process (``CliRunner``, ``data empty-trash``) exited 74 naming it too.
What changed: the plugin forgets the failure as each test ends, once its fixtures are torn
down (`app.dataroot.forget_failed_sync`); within the test every later change is still
refused, as a server's would be.
"""

from __future__ import annotations

import pytest

#: The inner run: a test that fails an fsync, then tests after it in the same process.
INNER = """
import errno
import os

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.errors import FsyncFailed


def test_a_fails_an_fsync_on_purpose(app_store, monkeypatch):
    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(FsyncFailed) as failed:
        app_store.create_session("lost")
    assert not failed.value.earlier
    monkeypatch.undo()
    # Within the test, every later change is still refused: a success proves nothing.
    with pytest.raises(FsyncFailed) as again:
        app_store.create_session("after")
    assert again.value.earlier


def test_b_a_later_test_s_own_root_takes_changes(app_store):
    assert app_store.create_session("later")["title"] == "later"


def test_c_a_later_test_s_command_in_process(app_store):
    app_store.close()  # its root made, nothing written in it
    result = CliRunner().invoke(cli, ["data", "empty-trash"])
    assert result.exit_code == 0, result.output
"""


def test_a_test_that_fails_an_fsync_does_not_refuse_the_changes_of_later_tests(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    # Before: test_b refused with FsyncFailed naming test_a's session.json, and test_c's
    # command exited 74 "cannot run `cli data empty-trash` (<test_a's session.json>): an
    # fsync on the data root's filesystem failed ..., in an earlier change".
    result.assert_outcomes(passed=3)
