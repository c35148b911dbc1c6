"""A script of the app's classes run in a mount namespace of its own, forked from the run's
zygote (tests/forked_app.py) rather than started as ``unshare --mount --propagation private
python -c CODE ARGS...``: the child does what unshare(1) does for itself (``unshare(2)`` with
``CLONE_NEWNS``, then ``/`` made private, recursively, so that nothing it mounts reaches this
namespace) before the script runs, and exits at once if either fails. About 0.4 s of CPU less
a child, the imports the zygote made (bench/README.md, "perf-suite62b"). Only for a script
whose start is not what its test checks: a fork is not an exec.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import forked_app

#: Runs first in the child; ``ARGS`` is the script's arguments (its ``sys.argv[1:]``).
PRELUDE = """
import ctypes as _ctypes, os as _os, sys as _sys
_libc = _ctypes.CDLL(None, use_errno=True)
if _libc.unshare(0x00020000) != 0:  # CLONE_NEWNS, <linux/sched.h>
    _sys.exit("unshare(CLONE_NEWNS): " + _os.strerror(_ctypes.get_errno()))
if _libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) != 0:  # MS_REC | MS_PRIVATE
    _sys.exit("mount --make-rprivate /: " + _os.strerror(_ctypes.get_errno()))
_sys.argv[1:] = ARGS
del _ctypes, _os, _sys, _libc
"""


def python_c(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``unshare --mount --propagation private python -c code *args`` run to its end in `env`
    (this process's environment by default), its output captured, its exit status checked."""
    prelude = PRELUDE.replace("ARGS", repr(list(args)))
    return forked_app.run_c(prelude + code, dict(os.environ) if env is None else env)


@contextlib.contextmanager
def ext4_image(image: Path, at: Path) -> Iterator[Path]:
    """A 16 MiB ext4 made in the file `image` and mounted through a loop device at `at`
    (made here), which it yields; unmounted at the end (``mount -o loop`` detaches the
    device with it). Root and mkfs.ext4 are the caller's to check."""
    with image.open("wb") as made:
        made.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    at.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(at)], check=True)
    try:
        yield at
    finally:
        subprocess.run(["umount", str(at)], check=True)
