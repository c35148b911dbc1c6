"""Red team 62 on the last merges, the run's anchored entry (branch rt-regress21): a run
nested in the test's process (pytester's ``runpytest_inprocess``) given a ``--basetemp`` of
its own outside the outer run's sandbox, whose test starts a child.

Red team 62 on the children of tests made a run anchor its first registry entry in a sealed
mapping (``mseal``) and have each child take the entry only where it keeps within that anchored
copy: the same process and namespaces, every root it protects, and a sandbox that is the
anchored one's or lies inside it.

What broke: a run nested in the process writes its own entry at the process's name (the same
pid), keeping every root the outer run protects (`register` joins them), with its own sandbox;
with a ``--basetemp`` elsewhere (``/tmp/<dir>``), that sandbox lies beside the outer one's,
not inside it. Its children were given the anchored copy instead, as if a test had changed the
entry ("though a test of the run changed its entry ... (its fields protected, sandbox,
sandbox_identity, scratch changed)"), with the outer run's sandbox, and refused their own
run's data root as outside it: a false refusal of a nested run's children, which worked before.

What changed: a sandbox beside the anchored one, holding none of it by its words or where its
links lead, keeps within it as one inside it does (`_sandbox_within`), as a pytest a test
starts with a ``--basetemp`` elsewhere is taken (`_within_enclosing`: neither may widen what the
other allows). A sandbox that holds the anchored one is still not taken, now by where its
links lead too: the check compared words alone, and an entry rewritten (the run's sealed copies
closed) to a link inside the run's sandbox to ``/`` was taken, the child's sandbox ``/``. The
nested run's later tests rewrite its entry so (``/``, that link, a loop of links, a link beside
the sandbox to a directory above it), every other field kept: each child reads a sealed copy
(the nested run's, where it is open; else the anchored one) and says so.

Also: where a test closed every descriptor of its run's copies, the anchored one's too, a
child finds the anchored copy's line in ``/proc/<pid>/maps`` to read it through the run's
memory, and took the first place the address's text appears for that line: a test that mapped
a file named ``<address>-planted`` below the anchored address (its line comes first) had the
anchored copy taken for missing, and the child followed the rewritten entry. Only the line
that begins with the address is read now (`_anchor_mapped`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from app import sandbox

#: The nested run's tests: each starts a child that checks the nested run's data root and
#: says which run it found; all but the first rewrite the nested run's entry first with a
#: sandbox that holds the anchored one (every other field kept). Results go to RESULTS.
INNER = r'''
import json
import os
import subprocess
import sys
from pathlib import Path

from app import sandbox

CHILD = """
import json, os
from pathlib import Path
from app import sandbox
run = sandbox.current_run()
try:
    sandbox.check_root(Path(os.environ[sandbox.SANDBOX_ENV]) / "data" / "testing", "data root")
    said = "allowed"
except sandbox.SandboxViolationError as error:
    said = "refused: " + str(error)
print(json.dumps([str(run.sandbox) if run else None, run.recognised_by if run else "", said]))
"""


def child(name):
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True)
    Path(os.environ["RESULTS"], name).write_text(out.stdout + out.stderr)


def widen(to):
    entry = next(e for e in sandbox._NAMED.values() if e.parent == sandbox.RUNS_DIR)
    data = json.loads(entry.read_bytes())
    data["sandbox"] = to
    aside = entry.with_name(".rt21-" + entry.name)
    aside.write_text(json.dumps(data))
    os.replace(aside, entry)


def close_copies(prefix=sandbox._COPY_NAME):
    # The run's sealed copies closed (code that daemonises closes every descriptor).
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:" + prefix):
                os.close(int(name))
        except OSError:
            pass


def test_own():
    child("own")


def test_widened():
    widen("/")
    child("widened")


def test_inside_linked():
    # Inside the anchored sandbox by its words, ``/`` where its link leads.
    close_copies()
    widen(os.environ["INSIDE_LINK"])
    child("inside_linked")


def test_looped():
    # A link to itself: where it leads cannot be told.
    close_copies()
    widen(os.environ["LOOP"])
    child("looped")


def test_linked():
    # Beside the anchored sandbox by its words, above it where its link leads.
    close_copies()
    widen(os.environ["LINK"])
    child("linked")
'''


def inner_tests(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> Path:
    """The directory the inner run's tests (`source`) write their children's answers to."""
    results = tmp_path / "results"
    results.mkdir()
    pytester.makepyfile(test_nested=source)
    monkeypatch.setenv("RESULTS", str(results))
    return results


#: The nested run's tests, by the name each writes its child's answer under.
NAMES = ("own", "widened", "inside_linked", "looped", "linked")


@pytest.mark.skipif(
    not sandbox._seals_in_place(),
    reason="the run's anchored copy needs a kernel that seals a mapping in place (mseal, "
    "Linux 6.10, 64-bit)",
)
def test_a_nested_run_with_a_basetemp_beside_the_runs_sandbox_keeps_its_children(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = inner_tests(pytester, tmp_path, monkeypatch, INNER)
    outer = sandbox.current_run()
    assert outer is not None
    # The sandbox of the entry the run anchored (an xdist worker's: its controller's).
    entry = next(e for e in sandbox._NAMED.values() if e.parent == sandbox.RUNS_DIR)
    anchored = sandbox._anchored(os.getpid(), entry.name)
    assert anchored is not None
    first = Path(json.loads(anchored[1])["sandbox"])
    # Beside the outer run's sandbox, not inside it.
    elsewhere = Path(tempfile.mkdtemp(prefix="rt21-nested-"))
    try:
        assert not elsewhere.is_relative_to(outer.sandbox)
        basetemp = elsewhere / "basetemp"
        (elsewhere / "up").symlink_to(first.parent)
        monkeypatch.setenv("LINK", str(elsewhere / "up"))
        (elsewhere / "loop").symlink_to(elsewhere / "loop")
        monkeypatch.setenv("LOOP", str(elsewhere / "loop" / "sandbox"))
        (tmp_path / "root").symlink_to("/")
        monkeypatch.setenv("INSIDE_LINK", str(tmp_path / "root"))
        result = pytester.runpytest_inprocess(
            f"--basetemp={basetemp}", "-p", "no:randomly", "-p", "no:cacheprovider"
        )
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
    said = {name: (results / name).read_text() for name in NAMES}
    # The rewrite is the nested run's to name and put back after that test, as ever.
    result.assert_outcomes(passed=5, errors=4)
    for name in NAMES[1:]:
        assert f"after test_nested.py::test_{name}, this run's entry in " in result.stdout.str()
    found, how, check = json.loads(said["own"].splitlines()[-1])
    assert (found, check) == (str(basetemp), "allowed"), said["own"]
    assert "changed its entry" not in how, said["own"]
    # Rewritten to hold the anchored sandbox: the nested run's sealed copy is read where
    # it is open, else the anchored one; either is named.
    expected = {"widened": basetemp, "inside_linked": first, "looped": first, "linked": first}
    for name, run in expected.items():
        assert "Traceback" not in said[name], said[name]  # the loop: a RuntimeError was
        found, how, check = json.loads(said[name].splitlines()[-1])
        assert found == str(run), said[name]
        assert "though a test of the run changed its entry " in how, said[name]
        assert "changed) since the run wrote it, so this process read the sealed" in how, how
    assert "(its field sandbox changed)" in said["widened"], said["widened"]
    assert json.loads(said["widened"].splitlines()[-1])[2] == "allowed", said["widened"]
    assert "refused under pytest (sandbox: " in said["linked"], said["linked"]
    for name in ("inside_linked", "looped"):
        assert "refused under pytest (sandbox: " in said[name], said[name]


#: An inner pytest's test (a process of its own, so that what it closes is its own): it maps a
#: file whose name holds its anchored copy's address below that address, closes every
#: descriptor of its copies, the anchored one's too, and rewrites its entry with ``/`` for its
#: sandbox, every other field kept; its child says which run it found.
PLANTED = (
    INNER.split("def test_own", maxsplit=1)[0]
    + r"""
import ctypes


def test_planted():
    entry = next(e for e in sandbox._NAMED.values() if e.parent == sandbox.RUNS_DIR)
    address = sandbox._anchor_address(entry.name)
    planted = Path(os.environ["RESULTS"], f"{address:x}-planted")
    planted.write_bytes(bytes(4096))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    fd = os.open(planted, os.O_RDONLY)
    shared_fixed_noreplace = 0x01 | 0x100000
    assert libc.mmap(1 << 33, 4096, 1, shared_fixed_noreplace, fd, 0) == 1 << 33
    os.close(fd)
    close_copies("app-run-")  # the anchored copy's too
    widen("/")
    child("planted")
"""
)


@pytest.mark.skipif(
    not sandbox._seals_in_place() or os.geteuid() != 0,
    reason="the run's anchored copy needs a kernel that seals a mapping in place (mseal, "
    "Linux 6.10, 64-bit), and its descriptor closed, a child reads it through the run's "
    "memory (which Yama's ptrace_scope may forbid a user other than root)",
)
def test_a_file_named_for_the_anchors_address_below_it_hides_nothing(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = inner_tests(pytester, tmp_path, monkeypatch, PLANTED)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    said = (results / "planted").read_text()
    assert "Traceback" not in said, said
    found, how, _ = json.loads(said.splitlines()[-1])
    assert found != "/", said
    assert "though a test of the run changed its entry " in how, said
    assert "so this process read the sealed copy the run keeps of it (/proc/" in how, said
    assert "/map_files/" in how, said
    result.assert_outcomes(passed=1, errors=1)
