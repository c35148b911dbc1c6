"""A disk that fails where tmpfs never does: ext4 on a thinly provisioned device (red team 22).

The earlier red teams ran the store on tmpfs, where ``fsync`` never fails and nothing is
lost at a power cut. Here the data root is a real ext4, on a loop device whose backing file
is sparse and lies on a small tmpfs: a thinly provisioned disk (thin LVM, a sparse VM
image, a SAN volume over-committed). Filling that tmpfs makes the device fail every write
to a block it has not stored yet, as such a disk does when its pool runs out: ``write``
still succeeds (into the page cache), and the error comes at ``fsync``, as ``ENOSPC`` for a
file's data and as ``EIO`` when ext4's journal cannot commit, which then aborts and turns the
filesystem read-only.

Each case is a child forked from one pre-imported process, alone in a mount namespace. Its
audit hook fills the pool just before the operation's N-th change, for every N until the
operation completes. Right after the answer, the device's bytes are copied (a power cut:
what the disk holds, without the page cache), and that copy is mounted and read. The
promise checked: an answer of success means the change is on the disk after the power
cut; a refusal never says "nothing was changed" of a change the process already shows; no
byte acknowledged before is lost, in the running process or after the cut.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_redteam_s20_store_refusals as refusals
from test_redteam_s18_crash_points import RUN_OPERATION
from test_redteam_s20_store_refusals import CLIENT_VIEW
from test_redteam_s21_store_full import CONTENTS, ZYGOTE_IMPORTS, template

__all__ = ["template"]  # red team 21's root: two files, a replaced version, a trashed session

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or shutil.which("unshare") is None
    or shutil.which("losetup") is None
    or shutil.which("mkfs.ext4") is None,
    reason="a loop device and ext4 take root, unshare(1), losetup(8) and mkfs.ext4(8)",
)

#: An ext4 image mounted on a loop device that goes with its mount (``mount -o loop`` sets
#: LO_FLAGS_AUTOCLEAR): when the zygote's mount namespace ends, even killed mid-case, no
#: device is left. A device attached with ``losetup --find --show`` stayed attached to its
#: image, and kept the thin pool's tmpfs (16 MiB of memory) alive with it, for every zygote
#: killed while a case ran.
_DISK = r"""
def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def attach(image, at):
    sh("mount", "-t", "ext4", "-o", "loop", image, at)


def detach(at):
    subprocess.run(["umount", at], check=False, capture_output=True)
"""

_ZYGOTE = (
    RUN_OPERATION
    + ZYGOTE_IMPORTS
    + r"""

WORK = sys.argv[1]
POOL = os.path.join(WORK, "pool")  # the thin pool: a small tmpfs holding the sparse image
LIVE = os.path.join(WORK, "live")
CUT = os.path.join(WORK, "cut")
for path in (POOL, LIVE, CUT):
    os.makedirs(path, exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "none", POOL], check=True)
IMAGE = os.path.join(POOL, "disk.img")
SNAPSHOT = os.path.join(WORK, "cut.img")  # on the test's own disk: the pool may be full
FILLER = os.path.join(POOL, "filler")


"""
    + _DISK
    + CLIENT_VIEW
    + CONTENTS
    + r"""


def fill():
    fd = os.open(FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    finally:
        os.close(fd)


def child(op, at, args):
    changes = 0
    filled = False

    def fill_before(event, details):
        nonlocal changes, filled
        if filled:
            return
        if event not in CHANGES and not (
            event == "open" and isinstance(details[2], int) and details[2] & WRITES
        ):
            return
        changes += 1
        if changes == at + 1:
            filled = True
            fill()

    store = open_storage(load(), writer=True, kind="tests", wanted="run one operation")
    before = view(store)
    sys.addaudithook(fill_before)
    answer = "ok"
    try:
        run_operation(store, op, args)
    except Exception as error:
        mapped = storage_error(error, "run it")
        code = error.code if mapped is None and hasattr(error, "code") else mapped and mapped.code
        shown = mapped if mapped is not None else error
        answer = f"{type(error).__name__} ({code}): {shown}"
    # The power cut: what the device holds now (the page cache of ext4 is not in it).
    sh("cp", "--sparse=always", IMAGE, SNAPSHOT)
    filled_now = filled
    filled = True  # no more filling
    if os.path.exists(FILLER):
        os.remove(FILLER)
    try:
        after = view(store)
    except Exception as error:
        after = f"{type(error).__name__}: {error}"
    store.close()
    return {"answer": answer, "filled": filled_now, "before": before, "after": after}


BASE = os.path.join(WORK, "base.img")  # the template root on a fresh ext4, made once
BASE_FOR = None


def base(template, root):
    global BASE_FOR
    if BASE_FOR == template:
        return
    with open(BASE, "wb") as image:
        image.truncate(8 << 20)
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", BASE)
    attach(BASE, LIVE)
    try:
        shutil.copytree(template, root, symlinks=True)
    finally:
        detach(LIVE)
    BASE_FOR = template


def case(request):
    root = request["env"]["APP_DATA_ROOT"]
    base(request["template"], root)
    sh("cp", "--sparse=always", BASE, IMAGE)
    attach(IMAGE, LIVE)
    try:
        kept = contents(root)
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(out_r)
            os.environ.clear()
            os.environ.update(request["env"])
            try:
                result = child(request["op"], request["at"], request["args"])
            except BaseException:
                result = {"crash": traceback.format_exc()}
            with os.fdopen(out_w, "w") as out:
                json.dump(result, out)
            os._exit(0)
        os.close(out_w)
        with os.fdopen(out_r) as out:
            result = json.loads(out.read())
        os.waitpid(pid, 0)
    finally:
        detach(LIVE)
        if os.path.exists(FILLER):
            os.remove(FILLER)
        os.remove(IMAGE)
    if "crash" in result:
        return result
    # After the power cut: the journal replays, and a server starts on what the disk held.
    attach(SNAPSHOT, CUT)
    try:
        cut_root = os.path.join(CUT, os.path.relpath(root, LIVE))
        os.environ.clear()
        os.environ.update({**request["env"], "APP_DATA_ROOT": cut_root})
        with open_storage(load(), writer=True, kind="tests", wanted="start after the cut") as store:
            repaired = store.check(repair=True).findings
            result["cut"] = view(store)
            result["left"] = [f.to_dict() for f in repaired if not f.repaired]
        result["lost"] = sorted(kept - contents(cut_root))
    finally:
        detach(CUT)
        os.remove(SNAPSHOT)
    return result


for line in sys.stdin:
    request = json.loads(line)
    try:
        result = case(request)
    except BaseException:
        result = {"crash": traceback.format_exc()}
    print(json.dumps(result).replace("\n", " "), flush=True)
subprocess.run(["umount", POOL], check=True)
"""
)


class Zygote(refusals.Zygote):
    """A pre-imported Python process, alone in a mount namespace with a thin pool (a small
    tmpfs) under ``work``, that makes an ext4 for each `run` and forks one child for it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        unshare = ["unshare", "--mount", "--propagation", "private"]
        super().__init__([*unshare, sys.executable, "-c", _ZYGOTE, str(work)])

    def run(self, template: Path, op: str, at: int, args: list[str]) -> dict[str, Any]:  # type: ignore[override]
        env = {**os.environ, "APP_DATA_ROOT": str(self.work / "live" / "app-data")}
        return self.ask({"template": str(template), "op": op, "at": at, "args": args, "env": env})


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    started = Zygote(tmp_path_factory.mktemp("thin"))
    yield started
    started.close()


# Each tried before every one of its changes: a replace has work on both sides of its commit
# point (the blob, the record's rename, the old blob's retirement), a delete after it; the
# other operations take the same steps (a create once answered EIO alike), and the suite's
# time is short.
OPERATIONS: dict[str, list[str]] = {
    "replace": ["{keep}", "a.txt", "a, version 3"],
    "delete-file": ["{keep}", "b.txt"],
}


def clients(view: dict[str, Any]) -> tuple[Any, Any]:
    """What clients read: the listing and the sessions (not what the trash gives back, where
    a repair puts the bytes of an upload never acknowledged)."""
    return view["listed"], view["sessions"]


@pytest.mark.parametrize("op", OPERATIONS)
def test_a_thin_disk_that_runs_dry_at_any_step_keeps_every_acknowledged_byte_and_says_so(
    template: tuple[dict[str, str], Path], zygote: Zygote, op: str
) -> None:
    ids, saved = template
    args = [arg.format(**ids) for arg in OPERATIONS[op]]
    at = 0
    problems = []
    answers = set()
    reasons: set[str] = set()
    while True:
        result = zygote.run(saved, op, at, args)
        what = f"{op}, the pool dry at {at}: {result['answer']}"
        answers.add(result["answer"].split(":")[0])
        if "fsync on the data root's filesystem failed (" in result["answer"]:
            reasons.add(result["answer"].split("failed (", 1)[1].split(")", 1)[0])
        before, after, cut = result["before"], result["after"], result["cut"]
        if result["answer"] == "ok":
            if cut != after:
                problems.append(f"{what}: acknowledged, and not on the disk after a power cut")
        elif not result["answer"].startswith(("OSError (storage_", "FsyncFailed (storage_")):
            problems.append(f"{what}: not said as the disk's refusal")
        elif "nothing was changed" in result["answer"]:
            if clients(after) != clients(before):
                problems.append(f"{what}: 'nothing was changed', and the process shows a change")
            if clients(cut) != clients(before):
                problems.append(f"{what}: 'nothing was changed', and the disk holds a change")
        if result["left"]:
            problems.append(f"{what}: not clean after repair: {result['left']}")
        if result["lost"]:
            problems.append(f"{what}: bytes lost")
        if not result["filled"]:
            break
        at += 1
    assert not problems, "\n".join(problems)
    # Both kinds of failure happened: a file's data (ENOSPC at its fsync, where tmpfs fails
    # the write) and the journal's commit (EIO, after which ext4 is read-only). Each is a
    # failed fsync, which stops the process's changes (red team 28, `app.dataroot.fsync`).
    failed = {answer for answer in answers if answer.startswith("FsyncFailed")}
    assert failed == {"FsyncFailed (storage_sync_failed)"} and "ok" in answers, answers
    assert {"No space left on device", "Input/output error"} <= reasons, reasons


#: A zygote's disk, as `_ZYGOTE` makes it (a thin pool, an ext4 image on it, mounted), in a
#: mount namespace of its own; it waits to be killed.
_KILLED_MID_CASE = (
    "import os, subprocess, sys\n"
    + _DISK
    + r"""
pool, live = os.path.join(sys.argv[1], "pool"), os.path.join(sys.argv[1], "live")
os.makedirs(pool)
os.makedirs(live)
sh("mount", "-t", "tmpfs", "-o", "size=16m", "none", pool)
image = os.path.join(pool, sys.argv[2])
with open(image, "wb") as disk:
    disk.truncate(8 << 20)
sh("mkfs.ext4", "-q", "-F", "-b", "4096", image)
attach(image, live)
print("attached", flush=True)
sys.stdin.read()
"""
)


def _loop_devices_on(image: str) -> list[str]:
    """The loop devices attached to a file named `image` (its path as the kernel shows it:
    the pool's mount point, or only ``/`` once that mount is gone)."""
    return [
        device.name
        for device in Path("/sys/block").glob("loop*")
        if (backing := device / "loop" / "backing_file").exists()
        and backing.read_text().strip().endswith(f"/{image}")
    ]


def test_a_zygote_killed_mid_case_leaves_no_loop_device(tmp_path: Path) -> None:
    image = f"killed-{uuid.uuid4().hex}.img"
    unshare = ["unshare", "--mount", "--propagation", "private"]
    command = [*unshare, sys.executable, "-c", _KILLED_MID_CASE, str(tmp_path), image]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as zygote:
        assert zygote.stdout is not None
        assert zygote.stdout.readline() == b"attached\n"
        assert _loop_devices_on(image), "attached while it runs"
        zygote.kill()
    # Until the device went: the wait ends on its condition; a minute is for a hung test only.
    for _ in range(6000):
        if not _loop_devices_on(image):
            break
        time.sleep(0.01)
    assert not _loop_devices_on(image), f"{image}'s loop device outlived its mount namespace"
