"""Red team 32: ``ENOSPC`` and ``EIO`` at every call of a replace, an upload, both restores
and an `empty-trash`, injected by the kernel into the real process (``strace --inject``,
tests/test_redteam_s28_faults.py's harness and checks).

Red team 28 failed every fsync of every operation with ``EIO``, every change (rename,
unlink, mkdir, rmdir) with ``EINTR``, and a replace's changes with ``EIO``. Here each
operation's N-th change, write or open fails with ``ENOSPC`` (a directory that needs a new
block, a new inode, a file's data) or ``EIO`` (a failing disk), for every N. After each:
the answer is the filesystem's refusal (or a success), "nothing was changed" is true, an
acknowledged change is what a restart shows, the next change is taken, a restart's repair
leaves a clean root, and no byte kept before is lost.

``RT_FAULTS_SWEEP=1`` runs every operation, call and errno (a few minutes); the suite runs
a sample: ``ENOSPC`` at each write of an upload, ``EIO`` at each open of a file's restore.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_redteam_s20_store_refusals as refusals
import test_redteam_s28_faults as faults
from test_redteam_s21_store_full import OPERATIONS, template
from test_redteam_s28_faults import _CHANGES, _FSYNC, _RENAMES, _every_step, pytestmark

__all__ = ["pytestmark", "template"]


class Zygote(faults.Zygote):
    """Red team 28's, whose child says it is done with ``writev``: a write injected past the
    operation's own would otherwise fail that message instead."""

    def __init__(self, work: Path) -> None:
        source = faults._zygote_source()
        said = 'os.write(ready, b"d")'
        assert said in source
        source = source.replace(said, 'os.writev(ready, [b"d"])')
        unshare = ["unshare", "--mount", "--propagation", "private"]
        refusals.Zygote.__init__(self, [*unshare, sys.executable, "-c", source, str(work)])


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    started = Zygote(tmp_path_factory.mktemp("faults"))
    yield started
    started.close()


SWEEP = bool(os.environ.get("RT_FAULTS_SWEEP"))

_OPENS = "open,openat"
_WRITES = "write,pwrite64"  # the app writes with these; the harness with writev

SAMPLE = [("upload", _WRITES, "ENOSPC"), ("restore-file", _OPENS, "EIO")]
CASES = [
    (op, calls, errno)
    for op in ("replace", "upload", "restore-file", "restore-session", "empty-trash")
    for errno in ("ENOSPC", "EIO")
    # An empty-trash's removals after an entry's rename are logged, and finished by `check`.
    for calls in (_RENAMES if op == "empty-trash" else _CHANGES, _WRITES, _OPENS, _FSYNC)
    # Red team 28's: EIO at every fsync, ENOSPC at a replace's, EIO at a replace's changes.
    if (op, calls, errno) not in {("replace", _CHANGES, "EIO"), ("replace", _FSYNC, "ENOSPC")}
    and (calls, errno) != (_FSYNC, "EIO")
    and (op, calls, errno) not in SAMPLE
]


def _check(
    zygote: Zygote, template: tuple[dict[str, str], object], op: str, calls: str, errno: str
) -> None:
    ids, saved = template
    args = [arg.format(**ids) for arg in OPERATIONS[op]]
    problems, answers = _every_step(zygote, saved, op, args, calls, errno)  # type: ignore[arg-type]
    print(f"{op}, {errno} at {calls}: {sorted(answers)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("op", "calls", "errno"), SAMPLE)
def test_a_full_or_failing_disk_at_any_call_is_answered_truly_and_keeps_every_byte(
    template: tuple[dict[str, str], object], zygote: Zygote, op: str, calls: str, errno: str
) -> None:
    _check(zygote, template, op, calls, errno)


@pytest.mark.skipif(not SWEEP, reason="every operation, call and errno (RT_FAULTS_SWEEP=1)")
@pytest.mark.parametrize(("op", "calls", "errno"), CASES)
def test_the_same_at_every_call_of_every_operation(
    template: tuple[dict[str, str], object], zygote: Zygote, op: str, calls: str, errno: str
) -> None:
    _check(zygote, template, op, calls, errno)
