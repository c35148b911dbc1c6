"""Red team 70 on the guard (branch rt-guard70): a child whose read of its run's ``/proc``
fails, neither denied nor gone, and one judged by its real user alone.

A test removed its run's entry from the registry of test runs (the descriptors the run keeps
of it left open, which red team 47's fallback reads) and started a child, given production's
settings alone, under a tracer that failed one read of the run's ``/proc`` with ``EIO``
(``strace -P /proc/<pid>/exe -e inject=readlinkat:error=EIO``; ``-P /proc/<pid>/fd``,
``-P /proc/<pid>/status`` or ``-P /proc/<pid>/comm -P /proc/<pid>/cmdline`` with
``inject=openat:error=EIO``, the last two without the run's capabilities): the child took the
run for a process that is not Python, for one that keeps nothing open, or for one whose
denial nothing explains, found no run, and ``app data purge --profile production
--yes-i-mean-it`` moved every session of a stopped production root to its trash. So did a
child given another real user, root's effective one and none of the run's capabilities
(``setpriv --ruid``): the check of an ancestor whose program it may not read looked only at
ancestors of its real user.

What changed: a read of an ancestor's ``exe``, ``fd`` or ``status`` (or of the child's own
``status``) that fails otherwise (``EIO``, ``ENOSYS``, ``EINTR``) is noted, and where no run
is found above, the child is refused, naming that ancestor, the read and how it failed, and
what resolves it; a ``comm`` whose read failed so counts as a Python's; and an ancestor of
the child's effective user counts as one of its own.

Red team 70 on regress (branch rt-regress70a): a run started by its ``#!`` line (named as its
script, its interpreter only in its command line) whose command line a tracer failed to read,
with its ``exe``, was taken for no Python's; and where ``/proc`` hides the run, a look in the
registry that failed (``EIO`` on its ``openat`` or ``newfstatat``) for an empty one: each
child purged. Both now refuse. And a walk begun in another thread emptied the notes of one under way
(a server's workers walk as they open storage): one walk at a time in a process now. Every
child here comes from one inner run (hidden first, its
entry in place; then its entry removed), started by its ``#!`` line, leading its session.

Red team 71 on the guard (branch rt-guard71): a hidden child that also bound a file over
``/proc/sys/kernel/random/boot_id`` (another boot's id, or ``/proc/sys/kernel/random/uuid``)
took its run's entry for one of an earlier boot, and purged. An entry now records when its
boot began by the wall clock as well, which no mount covers, and counts as an earlier boot's
only where that differs too. And a hidden child in a session of its own below a shell that
keeps the run's capabilities found no entry for its parent or leaders, and purged: where the
kernel tells a process's parent by a pidfd (Linux 6.13), every hidden ancestor is looked for.

Red team 71 on regress (branch rt-regress71a): the same child under a tracer that failed its
``pidfd_open`` or its ``PIDFD_GET_INFO`` ioctl with ``EIO`` found no ancestor above the
shell, and purged: a running entry now counts where that ask failed otherwise than an older
kernel fails it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from test_redteam_s61_children import PRELUDE, run_inner

#: The inner run's test. First, its entry in place: children in a mount namespace of their
#: own with /proc mounted `hidepid=invisible` (or `noaccess`) for a group they are not in,
#: without the run's capabilities (with them they see the run: red team 69's harness). Then
#: its entry removed (the descriptors the run keeps of it left open): children under a
#: tracer that fails one read of the run's /proc. One run for both (red team 70 on regress:
#: an inner run is most of what each test cost).
INNER = (
    PRELUDE
    + """

MOUNT = "mount -t proc -o hidepid={},gid=54370 proc /proc"
#: Every capability dropped, for the child and what it runs.
DROP = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]


def traced(calls, *paths, drop=(), detached=False, error="EIO"):
    # Only the calls faulted stop the child (`--seccomp-bpf`): a tracer that stops every
    # call made each child's start slower.
    files = [word for path in paths for word in ("-P", path)]
    inject = ["strace", "-f", "--seccomp-bpf", *(["-D"] if detached else []), "-qq"]
    faults = ["-e", f"trace={calls}", "-e", f"inject={calls}:error={error}"]
    return [*inject, "-o", "/dev/null", *files, *faults, *drop]


#: A pidfd of this process at 9, kept across exec (round l of red team 71 on regress).
SWAP = (
    "import os, sys; os.dup2(os.pidfd_open(os.getpid()), 9); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)
#: A tracer (detached: the child keeps its pid) that answers every pidfd_open with 9.
SWAPPED = [
    "strace", "-f", "--seccomp-bpf", "-D", "-qq", "-o", "/dev/null", "-e",
    "trace=pidfd_open,close", "-e", "inject=pidfd_open:retval=9", "-e",
    "inject=close:retval=0", *DROP,
]


def run(children):
    # All at once, each to its end: none of them changes what the others read.
    own = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    started = {
        name: subprocess.Popen(
            [*(own + [shell, "sh"] if shell else []), *words, *PURGE],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, (shell, words) in children.items()
    }
    for name, child in started.items():
        said, _ = child.communicate()
        (OUT / name).write_text(f"{child.returncode}\\n{said}")


def pidfd_tells_parents():
    # This run is pid 1 of its PID namespace (no parent in it): asked of itself.
    import fcntl
    import struct

    info = bytearray(sandbox._PIDFD_INFO_SIZE)
    struct.pack_into("=Q", info, 0, sandbox._PIDFD_INFO_PID)
    fd = os.pidfd_open(os.getpid())
    try:
        fcntl.ioctl(fd, sandbox._PIDFD_GET_INFO, info)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def test_hidden_then_removed():
    import time

    hidden, proc = MOUNT.format("invisible"), f"/proc/{os.getpid()}"
    runs = str(sandbox.RUNS_DIR)
    # Another boot's id, or a new one at each read (red team 71), bound over the boot id.
    fake, boot = OUT / "boot_id", "/proc/sys/kernel/random/boot_id"
    uuid = "/proc/sys/kernel/random/uuid"
    fake.write_text("0f0f0f0f-0000-4000-8000-000000000000\\n")
    # How far the time namespace's child sets its boot-time clock back: all but 5 s of the
    # time since boot. The kernel refuses an offset that makes that clock negative (ERANGE:
    # a fixed 50000 s failed `unshare` on every machine up less than 14 hours, exit 1); more
    # than `_BOOTS_APART`, or its boot would seem this one by the wall clock, offset or not.
    back = int(time.clock_gettime(time.CLOCK_BOOTTIME)) - 5
    assert back * 10**9 > sandbox._BOOTS_APART, back
    # Below a shell that keeps the run's capabilities, in a session of its own (red team
    # 71): neither its parent nor its leaders are the run; where the kernel tells the
    # shell's parent by a pidfd (Linux 6.13) it is found all the same, and before, it
    # purges (a row of the attacks' catalogue): not started there.
    setsid = {}
    if pidfd_tells_parents():
        setsid["setsid"] = (f'{hidden} && setsid "$@"; exit $?', DROP)
        # Red team 71 on regress: and its asks of the kernel for a parent failed (a tracer
        # that injects faults, the tracer detached so that the shell stays its parent).
        # Round g: and with the errors of a kernel that cannot tell (ENOSYS, before Linux
        # 5.3; ENOTTY, before 6.13), which this one can.
        for name, call, error in (
            ("pidfd_open", "pidfd_open", "EIO"),
            ("ioctl", "ioctl", "EIO"),
            ("ENOSYS", "pidfd_open", "ENOSYS"),
            ("ENOTTY", "ioctl", "ENOTTY"),
            # Round p: and with an exited process's error, the shell running.
            ("ESRCH", "pidfd_open", "ESRCH"),
            # Round t: and signal 0's look at the shell answered so too.
            ("kill", "pidfd_open,kill", "ESRCH"),
        ):
            setsid[f"setsid-{name}"] = (
                f'{hidden} && setsid "$@"; exit $?',
                traced(call, drop=DROP, detached=True, error=error),
            )
        # Round l: every pidfd_open answered by a pidfd of the child itself.
        setsid["setsid-swapped"] = (
            f'{hidden} && setsid {sys.executable} -c "{SWAP}" "$@"; exit $?',
            SWAPPED,
        )
    else:
        for name in ("setsid", "setsid-pidfd_open", "setsid-ioctl", "setsid-ENOSYS",
                     "setsid-ENOTTY", "setsid-ESRCH", "setsid-kill", "setsid-swapped"):
            (OUT / name).write_text("skipped\\n")
    run({
        **setsid,
        "boot": (f'{hidden} && mount --bind {fake} {boot} && exec "$@"', DROP),
        "uuid": (f'{hidden} && mount --bind {uuid} {boot} && exec "$@"', DROP),
        # And in a time namespace of its own, its boot-time clock set back: the start of its
        # boot is the machine's all the same.
        "timens": (
            f'{hidden} && mount --bind {fake} {boot} && exec unshare --time --fork '
            f'--boottime -{back} "$@"',
            DROP,
        ),
        # A container's /proc/sys, read-only (its own, bound over itself): the boot is told.
        "ro-sys": (f'{hidden} && mount -o bind,ro /proc/sys /proc/sys && exec "$@"', DROP),
        # Started by exec (its parent is the run), and below a shell that keeps the run's
        # capabilities, hidden too (the run leads the session).
        "hidden": (f'{hidden} && exec "$@"', DROP),
        "between": (f'{hidden} && "$@"; exit $?', DROP),
        # Round l of red team 71 on regress: every pidfd_open answered by a pidfd of the
        # child itself (kept at 9, its closes made to do nothing), so that pid 1 of its
        # namespace seemed another process than the run's entry names.
        "init-swapped": (f'{hidden} && exec {sys.executable} -c "{SWAP}" "$@"', SWAPPED),
        # Shown but denied: as root, and with another real user (root's effective one).
        "noaccess": (MOUNT.format("noaccess") + ' && exec "$@"', DROP),
        "ruid": (MOUNT.format("noaccess") + ' && exec "$@"', [*DROP, "--ruid=54370"]),
        # Hidden, its look in the registry failed (red team 70 on regress): the tracer
        # detached (-D), so that the child's parent is still the run.
        "listing": (f'{hidden} && exec "$@"', traced("openat", runs, drop=DROP, detached=True)),
        "lstat": (
            f'{hidden} && exec "$@"',
            traced("newfstatat,statx", runs, drop=DROP, detached=True),
        ),
        # Its read of its own stat failed, the run shown and its entry in place (red team 70
        # on regress): the tracer detached, so that the child keeps the shell's pid.
        "own-stat": (f'exec {" ".join(traced("openat", "/proc/$$/stat", detached=True))} "$@"', []),
    })
    sandbox._own_entry().unlink()
    run({
        "exe": (None, traced("readlink,readlinkat", f"{proc}/exe")),
        "fd": (None, traced("open,openat", f"{proc}/fd")),
        # Without the run's capabilities: their reads of the run's status, or of its name.
        "status": (None, traced("open,openat", f"{proc}/status", drop=DROP)),
        "comm": (None, traced("open,openat", f"{proc}/comm", f"{proc}/cmdline", drop=DROP)),
        # Root's effective user, another real one, and none of the run's capabilities.
        "ruid-exe": (None, ["setpriv", "--ruid=54370", *DROP[1:]]),
        # The run named as its script (`#!`), its command line unread (red team 70 on
        # regress): with its program unread too, and without its capabilities.
        "cmdline": (None, traced("readlink,readlinkat,openat", f"{proc}/exe", f"{proc}/cmdline")),
        "cmdline-drop": (None, traced("openat", f"{proc}/cmdline", drop=DROP)),
    })
"""
)

#: The inner run started by its `#!` line (as `./run_tests.py` is: its name, `comm`, is the
#: script's, its interpreter only in its command line) and made its session's leader
#: (`setsid`, without a fork: pid 1 of its PID namespace leads no group), with a registry of
#: its own (`run_inner`'s).
_LEADING = (
    'mount -t tmpfs -o mode=0700 app-runs "$1" && python="$2" && script="$3" && shift 3 && '
    '{ printf "#!%s\\n" "$python"; cat "$script"; } > run-tests && chmod +x run-tests && '
    'exec setsid ./run-tests "$@"'
)

_NAMES = (
    "boot", "uuid", "timens", "ro-sys", "setsid", "setsid-pidfd_open", "setsid-ioctl",
    "setsid-ENOSYS", "setsid-ENOTTY", "setsid-ESRCH", "setsid-kill", "setsid-swapped",
    "hidden", "between", "init-swapped", "noaccess", "ruid", "listing", "lstat", "own-stat",
    "exe", "fd", "status", "comm", "ruid-exe", "cmdline", "cmdline-drop",
)  # fmt: skip


@pytest.fixture(scope="module")
def said(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What each child of one inner run said (`INNER`), the root checked untouched; the
    suite runs a file's tests in one worker (`--dist loadfile`), so one run serves them."""
    if os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "strace", "setpriv"))):
        pytest.skip(
            "only root mounts /proc in a mount namespace of its own, has capabilities to drop "
            "and changes ids by setpriv; the faults are injected by strace; the inner run is "
            "kept out of this run's process tree in a PID namespace of its own (unshare "
            "--pid, root's)"
        )
    inner, said = run_inner(tmp_path_factory.mktemp("s70"), INNER, _NAMES, _LEADING)
    # The run's own check after the test names the removed entry and puts it back.
    assert "this run's entry in " in inner.stdout, inner.stdout
    return said


def test_a_child_whose_read_of_its_runs_proc_fails_or_of_another_real_user_is_refused(
    said: dict[str, str],
) -> None:
    for which in ("exe", "fd", "status"):
        code, _, text = said[which].partition("\n")
        assert code == "78", said
        found = re.search(
            r"while a test run may be above this process \(ancestor pid (\d+): ", text
        )
        assert found is not None, text
        pid = found[1]
        assert "; Python, its command line naming no pytest), whose entry" in text, text
        assert (
            f"the registry does not show one, and its read of /proc/{pid}/{which} failed "
            "(EIO: Input/output error), so it cannot tell whether that process keeps a run's "
            "entry open" in text
        ), text
        assert f"Let this process read /proc/{pid} (its exe, fd, status and comm) and" in text
        assert "refused under a Python process that may run tests" in text, text
    # Its name unread: counted as a Python's, the capabilities it lacks named.
    code, _, text = said["comm"].partition("\n")
    assert code == "78", said
    assert "while a test run may be above this process (ancestor pid 1: " in text, text
    assert "its capabilities are not all this process's (it holds " in text, text
    # Judged as of its effective user too: the run's capabilities it lacks are named.
    code, _, text = said["ruid-exe"].partition("\n")
    assert code == "78", said
    assert "(ancestor pid 1: " in text, text
    assert "this process (user 54370) cannot look for: the registry does not show one" in text
    assert "its capabilities are not all this process's (it holds " in text, text
    assert "Start this process with the capabilities of pid 1 in effect" in text, text


def test_a_child_that_proc_hides_its_run_from_is_refused(said: dict[str, str]) -> None:
    # The run leads its session, as a run from a terminal leads its process group.
    for name, which in (("hidden", "parent"), ("between", "session leader")):
        code, _, text = said[name].partition("\n")
        assert code == "78", said
        assert (
            f"while /proc does not show this process's {which}, pid 1 (/proc is mounted here "
            "with hidepid=invisible, which hides a process this one may not read" in text
        ), text
        found = re.search(
            r"holds an entry for a run of that pid \((/tmp/[^)]+/1-\d+\.json)\)", text
        )
        assert found is not None, text
        assert f"Start this process where /proc shows its {which} (/proc mounted without" in text
        assert f"If no test run of pid 1 is running, remove {found[1]}" in text, text
    # Shown but denied (`hidepid=noaccess`): refused naming the option, not a Landlock ruleset.
    for name in ("noaccess", "ruid"):
        code, _, text = said[name].partition("\n")
        assert code == "78", said
        assert (
            "while this process may not read /proc/1 (an ancestor): /proc is mounted here with "
            "hidepid=noaccess, which denies a process this one may not read" in text
        ), text
        assert "Start this process where /proc lets it read its ancestors (/proc mounted" in text


def test_a_child_that_binds_a_file_over_the_boot_id_is_refused_by_its_hidden_runs_entry(
    said: dict[str, str],
) -> None:
    """Red team 71 on the guard (branch rt-guard71): where /proc hides the run, its entry
    counts unless it names an earlier boot (red team 70 on regress); a child that bound
    another file over /proc/sys/kernel/random/boot_id in its mount namespace took the run's
    entry, of this boot, for one of an earlier boot, and purged the stopped production
    root."""
    boot = "/proc/sys/kernel/random/boot_id"
    # A kernel without time namespaces (before Linux 5.6) cannot make the third.
    timens = () if "unshare failed" in said["timens"] else ("timens",)
    for name in ("boot", "uuid", *timens):
        code, _, text = said[name].partition("\n")
        # The case and all it said (the whole dict is cut short in a failure's report).
        assert code == "78", (name, said[name])
        assert (
            "while /proc does not show this process's parent, pid 1 (/proc is mounted here "
            "with hidepid=invisible, which hides"
            in text
            # unshare --fork: the session's leader, the run, hidden too
            or "while /proc does not show this process's session leader, pid 1" in text
        ), text
        assert (
            "so this process cannot tell whether that run is above it (it names another boot "
            f"than {boot} shows here, but one that began when this one did by the wall clock, "
            "so it may be this boot's: a file mounted over the boot id, or a machine whose "
            "clock starts from nothing at each boot)" in text
        ), text
        assert "If no test run of pid 1 is running, remove /tmp/" in text, text
    # A read-only /proc/sys of proc's own (a container's) shows the boot id: refused by the
    # run's entry alone, with no word of the boot.
    code, _, text = said["ro-sys"].partition("\n")
    assert code == "78", said
    assert "holds an entry for a run of that pid (" in text, text
    assert "of this boot" not in text, text


def _pidfd_tells_parents() -> bool:
    """Whether this kernel tells a process's parent through a pidfd (Linux 6.13)."""
    from app import sandbox

    return bool(sandbox._ancestors_by_pidfd(os.getpid())[0])


def test_a_child_in_a_session_of_its_own_below_a_hidden_shell_is_refused_by_its_runs_entry(
    said: dict[str, str],
) -> None:
    """Red team 71 on the guard (branch rt-guard71): below a shell that keeps the run's
    capabilities, a hidden child in a session of its own had no hidden parent, session
    leader or group leader that a run's entry named, and purged; where the kernel tells a
    process's parent by a pidfd, the run is found above the shell."""
    if not _pidfd_tells_parents():
        pytest.skip("this kernel tells no process's parent through a pidfd (before Linux 6.13)")
    code, _, text = said["setsid"].partition("\n")
    assert code == "78", said
    assert (
        "while /proc does not show this process's ancestor, pid 1 (/proc is mounted here with "
        "hidepid=invisible, which hides a process this one may not read" in text
    ), text
    assert "holds an entry for a run of that pid (/tmp/" in text, text
    assert "Start this process where /proc shows its ancestor (/proc mounted without" in text


def test_a_child_below_a_hidden_shell_whose_ask_for_a_parent_by_pidfd_fails_is_refused(
    said: dict[str, str],
) -> None:
    """Red team 71 on regress (branch rt-regress71a): as the child above, under a tracer that
    failed its ``pidfd_open``, or its ``PIDFD_GET_INFO`` ioctl (``strace
    --inject=ioctl:error=EIO``): the walk up by pidfd stopped as if the kernel told no
    parent, no entry named the hidden shell, and the child purged the stopped production
    root. A running entry in the registry now counts as an ancestor's where that ask
    failed."""
    if not _pidfd_tells_parents():
        pytest.skip("this kernel tells no process's parent through a pidfd (before Linux 6.13)")
    release = ".".join(os.uname().release.split(".")[:2])
    for name, call, error in (
        ("setsid-pidfd_open", "pidfd_open", "EIO: Input/output error"),
        ("setsid-ioctl", "its PIDFD_GET_INFO ioctl", "EIO: Input/output error"),
        # Round g (branch rt-regress71g): the errors of a kernel that cannot tell, from a
        # kernel that can (its release, on an architecture that numbers the ioctl so).
        (
            "setsid-ENOSYS",
            f"pidfd_open, which Linux {release} has",
            "ENOSYS: Function not implemented",
        ),
        (
            "setsid-ENOTTY",
            f"its PIDFD_GET_INFO ioctl, which Linux {release} on {os.uname().machine} answers",
            "ENOTTY: Inappropriate ioctl for device",
        ),
        # Round p (branch rt-regress71p): an exited process's error, of the running shell.
        (
            "setsid-ESRCH",
            "pidfd_open, of a process that signal 0 finds",
            "ESRCH: No such process",
        ),
        # Round t (branch rt-regress71t): and signal 0's look at the shell failed so too.
        (
            "setsid-kill",
            "pidfd_open, of a process whose child, pid {}, the kernel does not tell re-parented",
            "ESRCH: No such process",
        ),
        # Round l (branch rt-regress71l): a pidfd of another process, the child's own.
        ("setsid-swapped", "pidfd_open", "EBADF: a descriptor of pid {}, not of pid {}"),
    ):
        code, _, text = said[name].partition("\n")
        assert code == "78", said
        shell = re.search(r"while /proc does not show this process's parent, pid (\d+) \(", text)
        assert shell is not None, text
        failed, words = error, call
        if name == "setsid-kill":  # the child itself, whose pid its words give once
            child = re.search(r"whose child, pid (\d+), the kernel", text)
            assert child is not None and child[1] != shell[1], text
            words = call.format(child[1])
        if name == "setsid-swapped":  # the child's own pid, which its words do not give
            own = re.search(r"\(EBADF: a descriptor of pid (\d+), not of pid", text)
            assert own is not None, text
            failed = error.format(own[1], shell[1])
        assert (
            f"and its ask of the kernel for the parent of pid {shell[1]} through a pidfd "
            f"({words}) failed ({failed}), so this process cannot tell whether "
            "the run of an entry in the registry of test runs (/tmp/" in text
        ), text
        assert (
            "Let this process ask for a process's parent (pidfd_open and its PIDFD_GET_INFO "
            "ioctl): a tracer that injects faults (`strace --inject`) must keep to the calls "
            "the test means" in text
        ), text
        assert "If the run of that entry is not running, remove /tmp/" in text, text


def test_a_child_whose_look_for_a_hidden_run_or_at_its_name_fails_is_refused(
    said: dict[str, str],
) -> None:
    """Red team 70 on regress, the guard (branch rt-regress70a): a failed read of the run's
    command line, or of the registry where /proc hides the run, was taken as an answer."""
    # The run named by its `#!` line: its command line unread counts as a Python's.
    code, _, text = said["cmdline"].partition("\n")
    assert code == "78", said
    assert "while a test run may be above this process (ancestor pid 1: " in text, text
    failed = "its read of /proc/1/exe failed (EIO: Input/output error), so it cannot tell"
    assert failed in text, text
    code, _, text = said["cmdline-drop"].partition("\n")
    assert code == "78", said
    assert "(ancestor pid 1: " in text, text
    assert "its capabilities are not all this process's (it holds " in text, text
    # Hidden, its look in the registry failed: refused, naming the registry and the error.
    for name in ("listing", "lstat"):
        code, _, text = said[name].partition("\n")
        assert code == "78", said
        found = re.search(r"its look in the registry of test runs \((/tmp/[^)]+)\) for a", text)
        assert found is not None, text
        assert (
            "while /proc does not show this process's parent, pid 1 (/proc is mounted here "
            "with hidepid=invisible, which hides" in text
        ), text
        assert "run of that pid failed (EIO: Input/output error), so this process" in text
        assert f"Let this process list {found[1]}: a tracer that injects faults" in text, text
    # Its own stat unread: no parent known, refused naming the read.
    code, _, text = said["own-stat"].partition("\n")
    assert code == "78", said
    found = re.search(r"while this process's read of its own /proc/(\d+)/stat failed \(EIO", text)
    assert found is not None, text
    assert "so it cannot tell its parent, nor whether a test run is above it" in text, text
    assert f"Let this process read /proc/{found[1]}/stat (inject faults only" in text, text


#: Two walks of one process tree in two threads, under a tracer that fails every read of pid
#: 1's `exe` (a Python, outside any run, in a PID namespace of its own): walk A is held (by
#: `sys.settrace`) just before it asks whether its read of pid 1 failed, until walk B has
#: emptied the walk's notes (or, where walks take turns, B waits for A). What each said.
TWO_WALKS = """
import json, sys, threading
from app import sandbox

serial = sandbox._walk_tree()[1]
stops = {"A": "_proc_read_failed", "B": "_unwalkable"}
at = {name: threading.Event() for name in stops}
go = {name: threading.Event() for name in stops}
said = {}


def walker(name):
    def trace(frame, event, arg):
        held = name == "B" or frame.f_locals.get("pid") == 1
        here = event == "call" and frame.f_code.co_name == stops[name]
        if here and held and not at[name].is_set():
            at[name].set()
            go[name].wait()

    sys.settrace(trace)
    said[name] = sandbox._walk_tree()[1]


a = threading.Thread(target=walker, args=("A",))
a.start()
at["A"].wait()
b = threading.Thread(target=walker, args=("B",))
b.start()
if not hasattr(sandbox, "_WALKING"):
    at["B"].wait()
go["A"].set()
a.join()
go["B"].set()
b.join()
print(json.dumps({"serial": serial, **said}))
"""

#: The tracer, as `traced`: only the faulted calls stop the process.
_FAULT_EXE = (
    "strace", "-f", "--seccomp-bpf", "-qq", "-o", "/dev/null", "-P", "/proc/1/exe",
    "-e", "trace=readlink,readlinkat", "-e", "inject=readlink,readlinkat:error=EIO",
)  # fmt: skip


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "strace"))),
    reason="the faults are injected by strace; the process is kept out of this run's "
    "process tree in a PID namespace of its own (unshare --pid, root's)",
)
def test_a_walk_in_another_thread_leaves_a_walk_under_way_its_notes() -> None:
    """Red team 70 on regress, the guard (branch rt-regress70a): a walk that a failed read
    refused alone found no run where another thread began a walk meanwhile."""
    parent = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", parent,
         *_FAULT_EXE, sys.executable, "-c", TWO_WALKS],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    for name in ("serial", "A", "B"):
        assert said[name] is not None, said
        assert "while a test run may be above this process (ancestor pid 1: " in said[name]
        assert "its read of /proc/1/exe failed (EIO: Input/output error)" in said[name], said


def test_a_hidden_child_whose_pidfd_of_pid_1_is_another_process_is_refused(
    said: dict[str, str],
) -> None:
    """Red team 71 on regress, round l (branch rt-regress71l): the hidden child under a
    tracer that answered every ``pidfd_open`` with a pidfd of the child itself (``strace
    --inject=pidfd_open:retval=9``, its closes made to do nothing): the inode it read for
    pid 1 of its namespace was its own, not the run's entry's (round g's
    ``pid_namespace_init``), the run's live entry did not count, and it purged. A pidfd
    counts as pid 1's only where its ``fdinfo`` says so."""
    code, _, text = said["init-swapped"].partition("\n")
    assert code == "78", said
    assert (
        "while /proc does not show this process's parent, pid 1 (/proc is mounted here "
        "with hidepid=invisible, which hides a process this one may not read" in text
    ), text
    assert "holds an entry for a run of that pid (/tmp/" in text, text
    assert "If no test run of pid 1 is running, remove /tmp/" in text, text
