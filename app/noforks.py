"""Refuse every new process in this process, in all of its threads, for the rest of its life.

A test run's process hands its registry entry on to what it started as it exits
(`app.sandbox._end_entry`): whatever is still running then gets an entry of its own and stays
in the run once the run's process is gone. A thread the run never joined (a daemon thread a
test left) runs on after that hand-over, until the interpreter finalises, and a process it
starts then outlives the run with nothing of the run it can read: with a hand-built
environment it purged a stopped production root (red team 64 on the children of tests). The
run's last hand-over, while such a thread is alive, first asks the kernel to refuse every new
process and every ``exec`` in this process (a seccomp filter on all of its threads, Linux
3.17+), then hands on what started before: nothing can start after it.

Threads are still allowed (``clone`` with ``CLONE_THREAD``); ``clone3``, whose flags a filter
cannot read, answers ``ENOSYS``, which C libraries take for a kernel without it and fall back to
``clone``. A refused ``fork``, ``vfork``, ``clone`` or ``exec`` fails with ``EPERM``
("Operation not permitted"), a message the kernel cannot widen; Python's own calls that
start a process are refused a moment earlier, with the same ``errno``, by an audit hook
(`explain_refusals`) whose message says why and what to do, and the kernel's refusal stays
for what no audit event announces (libc's ``fork`` through ``ctypes``).

The filter is written here, sixteen BPF instructions (thirteen on aarch64), rather than
through libseccomp: its Python bindings are a distribution's package built with the C library
(Debian's ``python3-seccomp``), not a wheel on PyPI that ``pip install`` could put in a
virtual environment, and one filter at a run's exit does not warrant a system dependency.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import sys
from typing import Final

#: Per machine: its audit architecture, the number of ``seccomp``, the calls that start a
#: process or run another program, ``clone``'s, ``clone3``'s, and the first number of another
#: ABI on the same architecture (x32's), refused whole.
_ARCH: Final = {
    "x86_64": (0xC000003E, 317, (57, 58, 59, 322), 56, 435, 0x40000000),
    "aarch64": (0xC00000B7, 277, (221, 281), 220, 435, None),
}

#: Python's audit events of the calls that start a process or run another program, each of
#: them refused by the filter as well: `explain_refusals` answers them first, in words.
_STARTING: Final = frozenset(
    {"os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.system", "subprocess.Popen"}
)

_CLONE_THREAD: Final = 0x00010000
_PR_SET_NO_NEW_PRIVS: Final = 38
_SECCOMP_SET_MODE_FILTER: Final = 1
_SECCOMP_FILTER_FLAG_TSYNC: Final = 1
_RET_ALLOW: Final = 0x7FFF0000
_RET_ERRNO: Final = 0x00050000
# BPF's instructions: load a word of seccomp_data, jump if equal / greater or equal / any bit
# set, return.
_LD: Final = 0x20
_JEQ: Final = 0x15
_JGE: Final = 0x35
_JSET: Final = 0x45
_RET: Final = 0x06


class _Filter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def _program(machine: str) -> list[tuple[int, int, int, int]] | None:
    """The filter for `machine`, as (code, jump if true, jump if false, k); None: unknown."""
    known = _ARCH.get(machine)
    if known is None or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    arch, _, refused, clone, clone3, other_abi = known
    # Symbolic targets, resolved below: "deny" (EPERM), "nosys" (ENOSYS), "allow", "thread".
    body: list[tuple[int, object, object, int]] = [
        (_LD, 0, 0, 4),  # arch
        (_JEQ, 0, "deny", arch),
        (_LD, 0, 0, 0),  # nr
    ]
    if other_abi is not None:
        body.append((_JGE, "deny", 0, other_abi))
    body.append((_JEQ, "thread", 0, clone))
    body.append((_JEQ, "nosys", 0, clone3))
    body.extend((_JEQ, "deny", 0, number) for number in refused)
    body.append((_RET, 0, 0, _RET_ALLOW))
    labels = {"thread": len(body)}
    body.append((_LD, 0, 0, 16))  # clone's flags: the low word of its first argument
    body.append((_JSET, "allow", "deny", _CLONE_THREAD))
    labels["allow"] = len(body)
    body.append((_RET, 0, 0, _RET_ALLOW))
    labels["deny"] = len(body)
    body.append((_RET, 0, 0, _RET_ERRNO | errno.EPERM))
    labels["nosys"] = len(body)
    body.append((_RET, 0, 0, _RET_ERRNO | errno.ENOSYS))

    def jump(at: int, target: object) -> int:
        return 0 if target == 0 else labels[str(target)] - at - 1

    return [(code, jump(i, jt), jump(i, jf), k) for i, (code, jt, jf, k) in enumerate(body)]


def refuse_new_processes() -> str | None:
    """Make the kernel refuse every new process and ``exec`` in this process, in every thread,
    from now on: None once it does, else why it could not (the process is left as it was)."""
    machine = platform.machine()
    program = _program(machine)
    if program is None:
        bits = ctypes.sizeof(ctypes.c_void_p) * 8
        return f"no seccomp filter for this machine ({machine}, {bits}-bit)"
    seccomp = _ARCH[machine][1]
    libc = ctypes.CDLL(None, use_errno=True)
    # Without privileges a filter needs no_new_privs (kept for good; nothing runs another
    # program here any more anyway).
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}"
    filters = (_Filter * len(program))(*(_Filter(*line) for line in program))
    fprog = _Program(len(program), filters)
    done = libc.syscall(
        ctypes.c_long(seccomp),
        ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(_SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(fprog),
    )
    if done < 0:
        return f"seccomp: {os.strerror(ctypes.get_errno())}"
    if done > 0:  # TSYNC: a thread with another filter of its own
        return f"seccomp: thread {done} has a filter of its own"
    return None


def explain_refusals(message: str) -> None:
    """From now on, refuse every Python call that starts a process or runs another program
    with ``PermissionError(EPERM, message)`` before it reaches the kernel (an audit hook,
    for the rest of the process's life): the kernel's own refusal says "Operation not
    permitted" and nothing more. ``_posixsubprocess.fork_exec`` (`multiprocessing`'s spawn
    and forkserver start methods call it, unaudited) is replaced alike; a call neither
    reaches (libc's through ``ctypes``) still gets the kernel's."""

    def refuse(event: str, _args: tuple[object, ...]) -> None:
        if event in _STARTING:
            raise PermissionError(errno.EPERM, message)

    def fork_exec(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(errno.EPERM, message)

    sys.addaudithook(refuse)
    # What `multiprocessing`'s spawn and forkserver start methods call, which no audit event
    # announces (subprocess's calls audit first); looked up at each call.
    with contextlib.suppress(ImportError):
        import _posixsubprocess

        setattr(_posixsubprocess, "fork_exec", fork_exec)  # noqa: B010
