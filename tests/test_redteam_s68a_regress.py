"""Red team 68 on the run's end (branch rt-regress68a): a process born after the run's last
hand-over has walked past its parent, and gone before the next walk comes back to it.

The run's last hand-over (`app.sandbox._hand_on_descendants`) walks the run's descendants
until a walk sees no exit it did not know of and the same live processes as the walk before
it (stop 53's CI, commit 4e3cdfa9). Two such walks do not prove the tree whole: a process W
started by a survivor A once the first walk had read A's children, which started X and then
exited, reaped by A at once, after the second walk had read the run's children and before it
read A's, was in neither walk. Nothing either walk saw had exited, and both saw the same
processes; X, re-parented to the run's process after its list was read, was in no list.

What broke: next to a stopped production root of the test's own settings, a real inner
pytest in a PID namespace of its own, whose test leaves A (the lowest pid: visited last,
with a sleeper of its own), a hundred sleepers and N (a pytest still starting, the highest
pid: visited first, and its registry entry read by every walk). A watches the registry
(inotify): once the run's last hand-over has written the entry of A's child (A's list read),
A starts W, which starts X, given production's settings alone, waiting for the run to be
gone; W exits as the second walk reads N's entry (the run's process held for that moment,
``SIGSTOP``, so that a loaded machine lets A reap W before the walk comes to A; the same
race is open, narrower, without it). The walk ended there, X got no entry, and once the run
had ended, it purged the stopped production root.

What changed: a walk ends the hand-over only once the children of each process whose list it
read, read again after it in the reverse order (a process's own after its children's, the
run's process last), are all processes it saw: a process that exits during the walk leaves
its children to the nearest subreaper above it, whose list is then read after its exit.

Then pids were not enough: the inner run's test, as root, ended N (a child of A) as the
second walk read it and gave X its pid (``ns_last_pid``), X's parent W born after A's list
was read and reaped before it was read again. The lists read again held only pids the walk
had seen, N's "alive" (X's), and X got no entry: it purged the production root. A process
is alive to the hand-over now only while its pid has the start time the walk read.
"""

from __future__ import annotations

from pathlib import Path

from test_redteam_s61_children import PRELUDE, run_inner
from test_redteam_s67_guard import (
    _SHELL,
    assert_refused_after_the_run,
    needs_pid_namespace,
    skip_unless_at_the_pid,
)

#: What A's scripts begin with (their arguments: the registry, the run's pid, a third, X's
#: output file): ``name(pid)``, the entry's name of a process; ``realtime()``; ``events()``, the
#: registry's opens and new names in the order they happened; ``hold_the_run()`` (``SIGSTOP``,
#: until the kernel has stopped it); ``x_at(pid)``, X started at `pid`
#: (``ns_last_pid``) by W, given production's settings alone, waiting for the run to be gone,
#: then purging (tried again while another process holds that pid; the last kept whatever its
#: pid, which X's output file ``-x`` says beside `pid`).
WATCHER = r"""
import ctypes, json, os, select, signal, struct, subprocess, sys, time
from pathlib import Path

registry, runner, given, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
deadline = time.monotonic() + 120  # a run killed before its end: A gives up, said by the test


def name(pid):
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return f"{pid}-{int(raw[raw.rfind(b')') + 2:].split()[19])}.json"


def realtime():
    # Woken on time on a loaded machine, not handed on to X (reset on fork).
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    except OSError:
        pass  # no real-time time here: woken as the others are


libc = ctypes.CDLL(None, use_errno=True)
watch = libc.inotify_init1(os.O_CLOEXEC)
IN_OPEN, IN_CREATE, IN_MOVED_TO = 0x20, 0x100, 0x80
assert libc.inotify_add_watch(watch, bytes(registry), IN_OPEN | IN_CREATE | IN_MOVED_TO) >= 0


def events():
    # The registry's opens and new names, in the order they happened.
    while True:
        if not select.select([watch], [], [], max(deadline - time.monotonic(), 0))[0]:
            os._exit(3)
        buf = os.read(watch, 1 << 16)
        at = 0
        while at < len(buf):
            _, mask, _, size = struct.unpack_from("iIII", buf, at)
            yield mask, buf[at + 16 : at + 16 + size].rstrip(b"\0").decode()
            at += 16 + size


def hold_the_run():
    os.kill(runner, signal.SIGSTOP)
    stat = Path(f"/proc/{runner}/stat")
    while stat.read_bytes().rpartition(b")")[2].split()[0] not in (b"T", b"t"):
        time.sleep(0.0001)


def x_at(pid):
    w = os.fork()
    if w == 0:
        code = (
            "import os, subprocess, sys, time\n"
            f"while os.path.exists('/proc/{runner}'):\n"
            "    time.sleep(0.02)\n"
            "done = subprocess.run([sys.executable, '-m', 'app', 'data', 'purge', '--profile', "
            "'production', '--yes-i-mean-it'], capture_output=True, text=True)\n"
            f"open({out!r}, 'w').write(done.stdout + done.stderr"
            " + f'exit {done.returncode}\\n')\n"
        )
        env = {
            "APP_SETTINGS_DIR": os.environ["RT61_SETTINGS"],
            "APP_API_TOKEN": os.environ["RT61_TOKEN"],
            "PATH": "/usr/bin:/bin",
        }
        for attempt in range(400):
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
            x = os.posix_spawn(sys.executable, [sys.executable, "-c", code], env)
            if x == pid or attempt == 399:
                break
            os.kill(x, signal.SIGKILL)
            os.waitpid(x, 0)
            time.sleep(0.005)
        Path(out + "-x").write_text(f"{x} {pid}")
        os._exit(0)
    os.waitpid(w, 0)
"""


#: A (its arguments: the registry, the run's pid, a file holding N's pid, X's output file):
#: watches the registry; once the run's last hand-over has written its child's entry, starts
#: W. W starts X, and exits as the next walk reads N's entry; A reaps it at once.
A = (
    WATCHER
    + r"""
npid = given
d = subprocess.Popen(["sleep", "30"])  # written once A's list is read
realtime()
own_run, child = name(runner), name(d.pid)
seen = events()
for mask, found in seen:  # the run's first hand-over at its end is done
    if mask & (IN_CREATE | IN_MOVED_TO) and found == own_run:
        try:
            if "ended_at" in json.loads((registry / found).read_bytes()):
                break
        except (OSError, ValueError):
            pass
for mask, found in seen:  # the last hand-over's first walk has read A's children
    if mask & (IN_CREATE | IN_MOVED_TO) and found == child:
        break
starting = name(int(Path(npid).read_text()))
w = os.fork()
if w == 0:
    realtime()
    env = {
        "APP_SETTINGS_DIR": os.environ["RT61_SETTINGS"],
        "APP_API_TOKEN": os.environ["RT61_TOKEN"],
        "PATH": "/usr/bin:/bin",
    }
    purge = f"{sys.executable} -m app data purge --profile production --yes-i-mean-it"
    line = (
        f"while kill -0 {runner} 2>/dev/null; do sleep 0.02; done; "
        f"{purge} > {out} 2>&1; echo exit $? >> {out}"
    )
    os.posix_spawn("/bin/sh", ["sh", "-c", line], env)  # X
    for mask, found in seen:  # the next walk reads N's entry: it has read the run's list
        if mask & IN_OPEN and found == starting:
            break
    hold_the_run()
    os._exit(0)
try:
    os.waitpid(w, 0)
finally:
    os.kill(runner, signal.SIGCONT)
time.sleep(30)  # alive as the walk comes to it: W left no trace
"""
)

#: N: a pytest still starting, as the registry knows one (`sandbox.announce_start`, what a
#: nested pytest's start writes; its script is named pytest): the walk reads its entry each
#: time it comes to it.
N = r"""
import os, sys, time
from app import sandbox

sandbox.announce_start()
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    f.write(str(os.getpid()))
os.replace(tmp, sys.argv[1])
time.sleep(30)
"""

INNER = (
    PRELUDE
    + f"A = {A!r}\nN = {N!r}\n"
    + r"""
import time


def test_leaves_a_process_born_and_gone_between_two_walks():
    out = str(OUT / "late")
    a = subprocess.Popen(
        [sys.executable, "-c", A, str(sandbox.RUNS_DIR), str(os.getpid()), out + "-n", out],
        stdin=subprocess.DEVNULL,
    )
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(100)]
    script = OUT / "pytest"
    script.write_text(N)
    n = subprocess.Popen([sys.executable, str(script), out + "-n"])
    while not Path(out + "-n").exists():
        assert n.poll() is None and a.poll() is None
        time.sleep(0.01)
    assert all(p.poll() is None for p in sleepers)
"""
)


@needs_pid_namespace
def test_a_process_born_and_gone_between_two_walks_leaves_no_child_outside_the_run(
    tmp_path: Path,
) -> None:
    inner, said = run_inner(tmp_path, INNER, ("late",), shell=_SHELL)
    assert " passed" in inner.stdout, inner.stdout
    assert_refused_after_the_run(said)


#: A again (its arguments: the registry, the run's pid, N's script, X's output file), with B
#: and N as its children this time (B first: the walk visits it after N). As the last
#: hand-over's second walk reads N's entry (the first wrote B's after N's), A holds the run's
#: process, ends N and reaps it, and starts W, which starts X at N's pid (``ns_last_pid``)
#: and exits; A reaps it and lets the run go on.
REUSED_A = (
    WATCHER
    + r"""
script = given
b = subprocess.Popen(["sleep", "30"])
n = subprocess.Popen([sys.executable, script, out + "-n"])
while not Path(out + "-n").exists():
    time.sleep(0.01)
realtime()
own_run, written, starting = name(runner), name(b.pid), name(n.pid)
seen = events()
for mask, found in seen:  # the run's first hand-over at its end is done
    if mask & (IN_CREATE | IN_MOVED_TO) and found == own_run:
        if b"ended_at" in (registry / found).read_bytes():
            break
for mask, found in seen:  # the last hand-over's first walk is past N
    if mask & (IN_CREATE | IN_MOVED_TO) and found == written:
        break
for mask, found in seen:  # the second walk reads N's entry: it has read N's stat
    if mask & IN_OPEN and found == starting:
        break
hold_the_run()
try:
    n.kill()
    n.wait()
    x_at(n.pid)  # X: no child of its own while the walk reads its list
finally:
    os.kill(runner, signal.SIGCONT)
time.sleep(30)  # alive as the walk comes to it
"""
)


def with_a(a: str, n: str, test: str, ready: str) -> str:
    """An inner run's module whose test `test` starts A (source `a`; its third argument N's
    script, source `n`, named pytest) and returns once A has written ``late<ready>``."""
    return (
        PRELUDE
        + f"A = {a!r}\nN = {n!r}\n"
        + f"""
import time


def {test}():
    out = str(OUT / "late")
    script = OUT / "pytest"
    script.write_text(N)
    a = subprocess.Popen(
        [sys.executable, "-c", A, str(sandbox.RUNS_DIR), str(os.getpid()), str(script), out],
        stdin=subprocess.DEVNULL,
    )
    while not Path(out + {ready!r}).exists():
        assert a.poll() is None
        time.sleep(0.01)
"""
    )


REUSED = with_a(REUSED_A, N, "test_leaves_a_process_at_the_pid_of_one_the_walk_saw", "-n")


@needs_pid_namespace
def test_a_process_at_the_pid_of_one_the_last_walk_saw_leaves_no_child_outside_the_run(
    tmp_path: Path,
) -> None:
    inner, said = run_inner(tmp_path, REUSED, ("late", "late-x"), shell=_SHELL)
    assert " passed" in inner.stdout, inner.stdout
    assert_refused_after_the_run(said)
    skip_unless_at_the_pid(said)  # X had N's pid
