"""Red team 61 on the children of tests (branch rt-children61): a test that rewrites its own
run's registry entry, then starts a child with production's settings alone.

A test shares its run's process and user, so it may rewrite the run's entry in the registry of
test runs (``/tmp/app-pytest-runs-<uid>``); the run's check after the test put it back and
named the test, but only then. Meanwhile every process the run started read what the test
wrote. Next to a stopped production root of the test's own settings, a real inner pytest with
the app's plugin active, run by a script that calls pytest through another module (found by
its entry alone, red team 42), rewrote its entry to claim PID namespace 1 (which no namespace
has: stop 48's note), with another sandbox and no protected roots; its child, given
production's settings alone (``APP_SETTINGS_DIR``, production's token, ``PATH``), ran ``python
-m app data purge --profile production --yes-i-mean-it``.

What broke: the walk up the process tree passed over the entry as another namespace's
process's, found no run, and the purge moved every production session to the trash; so did a
FIFO put in the entry's place (every read of it fails) and the entry removed with the
descriptors the run keeps of it closed. Under
``python -m pytest`` the same child was refused, but as under "a pytest without the app's
plugin"; other fields gave other wrong causes: ``"starting": true`` a run whose plugin "has not
made its sandbox yet", ``"outlived": 1`` a run "which has ended", with the advice to kill the
run's own process, a rewritten ``sandbox`` the test's sandbox in the refusal.

What changed: a run keeps each entry it writes for itself in a sealed anonymous file as well
(``memfd_create``, sealed against every write, which nothing changes, the run's process
included), open for its life. A child that finds the run's entry and a copy that says anything
else (or finds only the copy: the entry removed and the descriptors the run keeps of it
closed) reads the copy instead, and its refusal says so: which entry a test of the run changed,
which fields, that the copy was read, and that the run puts the entry back after that test.
Every field is covered, not one; a test that also closes or replaces the copy is a *not
stopped* row (``docs/explanation/attacks/``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import assert_untouched, inner_project, stopped_production
from test_redteam_s24_guard import _inner_env

from app import sandbox

#: What an inner run's test module begins with (red team 62's too): `purge(name)` runs a
#: child given production's settings alone, its exit code and output where the outer test
#: reads them (`run_inner`); `rewrite()` changes the run's entry.
PRELUDE = """
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from app import sandbox

OUT = Path(os.environ["RT61_OUT"])
ENV = {
    "APP_SETTINGS_DIR": os.environ["RT61_SETTINGS"],
    "APP_API_TOKEN": os.environ["RT61_TOKEN"],
    "PATH": "/usr/bin:/bin",
}
PURGE = [sys.executable, "-m", "app", "data", "purge", "--profile", "production", "--yes-i-mean-it"]


def purge(name):
    done = subprocess.run(PURGE, env=ENV, capture_output=True, text=True)
    (OUT / name).write_text(f"{done.returncode}\\n{done.stdout}{done.stderr}")


def rewrite():
    # Every field the walk reads changed at once: another PID namespace's (1, which none
    # has), another sandbox, no protected roots.
    entry = sandbox._own_entry()
    data = json.loads(entry.read_bytes())
    data.update(own_pid_namespace=1, sandbox=os.environ["RT61_SETTINGS"], protected=[])
    text = json.dumps(data).encode()
    # Whole, by a rename: another run starting meanwhile removes an entry it cannot read
    # whose pid its /proc shows dead (this one's, in a PID namespace of its own).
    entry.with_suffix(".tmp").write_bytes(text)
    entry.with_suffix(".tmp").replace(entry)
    return entry, text
"""

#: The inner run's tests: its entry rewritten (every field the walk reads changed at once),
#: replaced by a FIFO, then removed with the descriptors the run keeps of it closed; a child
#: given production's settings alone started after each.
INNER = (
    PRELUDE
    + """

def test_rewritten():
    rewrite()
    purge("rewritten")


def test_fifo():
    entry = sandbox._own_entry()
    entry.unlink()
    os.mkfifo(entry)
    purge("fifo")


def test_removed():
    sandbox._own_entry().unlink()
    for key in ("registry", "entry"):
        os.close(sandbox._KEPT_OPEN.pop(key))
    purge("removed")
"""
)

#: The inner run's registry of runs made its own before it starts (``$1``), then the run.
_OWN_REGISTRY = 'mount -t tmpfs -o mode=0700 app-runs "$1" && shift && exec "$@"'

#: A runner script that calls pytest through another module: its run is found by its entry
#: alone, as a command line no pytest's (red team 42).
RUNNER = "import sys\n\nimport runner_module\n\nsys.exit(runner_module.main(sys.argv[1:]))\n"
RUNNER_MODULE = "def main(args):\n    import pytest\n\n    return pytest.main(args)\n"


def run_inner(
    tmp_path: Path, tests: str, names: tuple[str, ...], shell: str = _OWN_REGISTRY
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """An inner pytest of `tests` (a module that begins with `PRELUDE`, or reads the same
    variables) next to a stopped production root, under a runner script that calls pytest
    through another module, out of this run's tree in a PID namespace of its own (what
    `shell` runs there, given the registry's path and the run's command line): the run, and
    what each of its children `names` said; the root checked untouched."""
    settings, production, token, sessions = stopped_production(tmp_path)
    project = inner_project(tmp_path, "test_entry.py", tests)
    (project / "run_tests.py").write_text(RUNNER)
    (project / "runner_module.py").write_text(RUNNER_MODULE)
    out = tmp_path / "out"
    out.mkdir()
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings),
        RT61_SETTINGS=str(settings),
        RT61_TOKEN=token,
        RT61_OUT=str(out),
    )
    inner = subprocess.run(
        [
            # Out of this run's tree, where its children would find this run above theirs.
            *("unshare", "--pid", "--fork", "--mount-proc"),
            # With a registry of its own (a tmpfs over it, in the mount namespace --mount-proc
            # makes): a run starting elsewhere meanwhile forgets an entry that it cannot read
            # and whose pid is dead in its namespace (`_forget_dead_runs`), so the FIFO went
            # before the child looked, which then found the run by the descriptor it keeps
            # open and never read the sealed copy (failed once under load).
            *("sh", "-c", shell, "sh", str(sandbox.RUNS_DIR)),
            *(sys.executable, "run_tests.py", "-p", "no:cacheprovider", "-p", "no:xdist"),
            *(f"--basetemp={tmp_path / 'inner'}", "test_entry.py"),
        ],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    said = {name: (out / name).read_text() for name in names}
    assert_untouched(production, sessions, str(said))
    assert "app: profile=testing (forced)" in inner.stdout, inner.stdout
    return inner, said


@pytest.mark.skipif(
    not hasattr(os, "memfd_create") or os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="the run's sealed copy needs memfd_create (Linux), and the inner run is kept out of "
    "this run's process tree in a PID namespace of its own (unshare --pid needs root here)",
)
def test_a_test_that_rewrites_or_removes_its_runs_entry_leaves_its_children_in_the_run(
    tmp_path: Path,
) -> None:
    inner, said = run_inner(tmp_path, INNER, ("rewritten", "fifo", "removed"))
    # The run's own check after each test names it and puts the entry back.
    assert "this run's entry in " in inner.stdout, inner.stdout
    assert "was changed (the sandbox and the protected roots" in inner.stdout, inner.stdout
    assert (
        "Until then, a process started with a hand-built environment (and any after the run) "
        "read the run's rules from the sealed copy of its entry that the run keeps"
    ) in inner.stdout, inner.stdout
    assert " was removed; it was put back" in inner.stdout, inner.stdout
    for name, text in said.items():
        code, _, output = text.partition("\n")
        assert code == "78", (name, text)
        assert (
            "error: refused under pytest (sandbox: " + str(tmp_path / "inner") + "): loading "
            "profile 'production'; tests run on the 'testing' profile (this process belongs to "
            "the test run through the process tree (an ancestor process, pytest pid "
        ) in output, output
        assert "so this process read the sealed copy the run keeps of it (/proc/" in output, (
            name,
            output,
        )
        assert (
            "instead; the run puts its entry back after that test and names it: a test must "
            "leave the registry of test runs alone"
        ) in output, output
        assert "without the app's plugin" not in output, output
    assert (
        f"registered in {sandbox.RUNS_DIR}, though a test of the run changed its entry "
    ) in said["rewritten"], said["rewritten"]
    assert (
        "(its fields own_pid_namespace, protected, sandbox changed) since the run wrote it"
        in (said["rewritten"])
    ), said["rewritten"]
    assert "(it is no longer a regular file) since the run wrote it" in said["fifo"], said["fifo"]
    assert (
        f"registered in {sandbox.RUNS_DIR}, though a test of the run removed its entry since "
        "the run wrote it"
    ) in said["removed"], said["removed"]
