"""Red team 28 on the guard: the moments a run's own process is not registered.

A run is marked in its process for the life of the process, but its children find it only
through its registry entry, written when the plugin's first hook runs and removed when the
process exits. Code of the run's own process runs on both sides of that: a plugin's hooks
before the app's plugin registers the run, and exit hooks registered before the plugin
(``logging.shutdown``, an object's ``__del__`` at shutdown) after it unregistered. Each
case is real: a stopped production root named by the settings, a pytest run started by a
runner script (``python run_tests.py``, as IDEs and CI wrappers start it, so no command line
shows pytest) in a PID namespace with a ``/proc`` of its own (outside this suite's run),
production exported in its shell, and children that run ``app data purge --yes-i-mean-it``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import forked_pytest
import pytest
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _stopped_production
from test_server_e2e import snapshot

#: What every child runs: production's purge, its exit code and output kept in a file.
PURGE = """
import os, subprocess, sys

HAND_BUILT = {
    "PATH": os.environ["PATH"],
    "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"],
    "ENV_FOR_DYNACONF": "production",
    "APP_API_TOKEN": "p" * 32,
}
PURGE = [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"]


def purge(name, env=HAND_BUILT):
    done = subprocess.run(PURGE, env=env, capture_output=True, text=True)
    said = (done.stdout + done.stderr).strip().replace("\\n", " ")
    with open(os.environ["S28_OUT"], "a") as out:
        out.write(f"CASE {name}: {done.returncode} {said}\\n")


def purge_later(name):
    # Not waited for, with the process's own environment: it acts once the run's process
    # has exited (a bound, not a timing).
    out = os.environ["S28_OUT"]
    script = (
        'for _ in $(seq 600); do kill -0 "$PPID" 2>/dev/null || break; sleep 0.02; done; '
        '"$1" -m app data purge --yes-i-mean-it > "$2.part" 2>&1; '
        'echo "CASE $3: $? $(tr "\\\\n" " " < "$2.part")" >> "$2"; rm "$2.part"'
    )
    subprocess.Popen(["sh", "-c", script, "sh", sys.executable, out, name])
"""

#: A plugin the shell names (PYTEST_PLUGINS): it acts before the app's plugin has made the
#: run's sandbox, at its import and in a hook ordered before the app's first one.
EARLY = """
import pytest
from purge import purge

purge("at-import")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    purge("first-hook")
"""

#: A test that leaves code to run once the run has ended, in exit hooks registered before
#: the app's plugin: a logging handler (logging.shutdown closes it), an object's __del__.
LATE = """
import logging
import sys

from purge import purge, purge_later


class ClosedLate(logging.Handler):
    def emit(self, record):
        pass

    def close(self):
        purge("logging-shutdown")
        purge_later("logging-shutdown-not-waited")
        super().close()


class DeletedLate:
    def __del__(self):
        purge("del-at-shutdown")


def test_leaves_code_for_the_end():
    logging.getLogger("s28").addHandler(ClosedLate())
    sys.modules["__main__"].kept = DeletedLate()
"""

RUNNER = "import sys\nimport pytest\n\nsys.exit(pytest.main(sys.argv[1:]))\n"

#: pid 1 of the namespace: it reaps what the run left and waits for the last child's line.
INIT = """
"$1" run_tests.py -q -p no:cacheprovider --basetemp="$2" test_late.py
echo "EXIT $?" >> "$3"
for _ in $(seq 300); do grep -q 'CASE logging-shutdown-not-waited' "$3" && break; sleep 0.05; done
"""


class Outcome(NamedTuple):
    """Production's files (sha256) before and after the run, its sandbox, each case's line."""

    before: dict[str, str]
    after: dict[str, str]
    sandbox: Path
    cases: dict[str, str]


@pytest.fixture(scope="module")
def run_with_early_and_late_code(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The run, once."""
    if not _own_proc_allowed():
        pytest.skip("needs unshare --pid --mount-proc")
    tmp_path = tmp_path_factory.mktemp("s28")
    settings, production = _stopped_production(tmp_path)
    before = snapshot(production)
    project = tmp_path / "project"
    project.mkdir()
    for name, text in (
        ("purge.py", PURGE), ("early.py", EARLY), ("test_late.py", LATE), ("run_tests.py", RUNNER)
    ):  # fmt: skip
        (project / name).write_text(text)
    out = tmp_path / "out.txt"
    own_proc = ("unshare", "--pid", "--fork", "--mount-proc") if os.geteuid() == 0 else OWN_PROC
    # A shell's environment: none of this suite's run's variables (its PYTEST_APP_SANDBOX
    # would put every child of the inner run under this run's sandbox).
    env = {k: v for k, v in _inner_env().items() if not k.startswith("PYTEST_")}
    env.update(
        APP_SETTINGS_DIR=str(settings), ENV_FOR_DYNACONF="production", APP_API_TOKEN="p" * 32,
        PYTEST_PLUGINS="early", PYTHONPATH=str(project), S28_OUT=str(out), TMPDIR=str(tmp_path),
    )  # fmt: skip
    sandbox = tmp_path / "bt"
    done = subprocess.run(
        [*own_proc, "sh", "-c", INIT, "sh", sys.executable, str(sandbox), str(out)],
        env=env, cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    said = out.read_text() if out.exists() else ""
    cases = dict(
        line.removeprefix("CASE ").split(": ", 1)
        for line in said.splitlines()
        if line.startswith("CASE ")
    )
    assert "EXIT 0" in said, done.stdout + done.stderr + said
    return Outcome(before, snapshot(production), sandbox, cases)


#: How a child of a run's process is refused production (the run found in the tree).
IN_THE_RUN = (
    "loading profile 'production'; tests run on the 'testing' profile (this process belongs "
    "to the test run through the process tree (an ancestor process, pytest pid"
)


def test_a_child_the_run_starts_after_its_end_stays_in_the_run(
    run_with_early_and_late_code: Outcome,
) -> None:
    # The run removed its registry entry in its own exit hook (atexit), and hooks that
    # Python runs later (logging.shutdown, registered when pytest imported logging; the
    # __del__ of what a test left in a module) still run in the run's process: a child
    # they started with a hand-built environment found no run among its ancestors, and,
    # with no pytest on any command line, purged production. So did a child started
    # there with the process's own environment (the plugin had put the shell's
    # ENV_FOR_DYNACONF=production back), not waited for, once the process had exited.
    before, after, sandbox, cases = run_with_early_and_late_code
    assert after == before, cases
    for name in ("logging-shutdown", "del-at-shutdown"):
        said = cases.get(name, "")
        assert said.startswith(f"78 error: refused under pytest (sandbox: {sandbox}): "), cases
        assert IN_THE_RUN in said, cases
    late = cases.get("logging-shutdown-not-waited", "")
    assert late.startswith(f"78 error: refused under pytest (sandbox: {sandbox}): "), cases
    assert (
        "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the environment (PYTEST_APP_SANDBOX))"
    ) in late, cases
    assert "unset PYTEST_APP_SANDBOX: it was inherited from a test run" in late, cases


def test_a_child_a_plugin_starts_before_the_run_has_its_sandbox_is_refused(
    run_with_early_and_late_code: Outcome,
) -> None:
    # A plugin named by PYTEST_PLUGINS is imported after the app's plugin, and its
    # tryfirst pytest_load_initial_conftests ran before the app's (pluggy calls the
    # last registered first): the run had no registry entry yet, so a child started there
    # with a hand-built environment was outside any run and purged production. At its
    # import the run is still starting; the app's first hook is a wrapper now (red team
    # 30), so that hook runs once the run has its sandbox, and its child is in the run.
    before, after, sandbox, cases = run_with_early_and_late_code
    assert after == before, cases
    said = cases.get("at-import", "")
    assert said.startswith(
        "78 error: refused under pytest: loading profile 'production' while a pytest "
        "run (an ancestor process, pytest pid "
    ), cases
    assert "is starting and the app's plugin has not made its sandbox yet" in said, cases
    assert (
        "Use the app (load a profile, or start a process that does) from a test or a "
        "fixture, once the run has its sandbox, not at a plugin's import or in its "
        "start-up hooks"
    ) in said, cases
    said = cases.get("first-hook", "")
    assert said.startswith(f"78 error: refused under pytest (sandbox: {sandbox}): "), cases
    assert IN_THE_RUN in said, cases


def test_an_ended_run_of_another_pid_namespace_is_forgotten_an_hour_later(
    tmp_path: Path,
) -> None:
    # An entry now stays while its process exits, and a run forgets only the entries of its
    # own PID namespace by their pids: one of another namespace (a container sharing /tmp)
    # would stay for good, read by every run that starts, unless it says when it ended.
    from app import sandbox

    gone = 4_194_305  # above Linux's largest pid: no such process here
    now = time.time()
    entries = {
        "ended-long-ago": {"pid_namespace": 1, "ended_at": now - 7200},
        "ended-just-now": {"pid_namespace": 1, "ended_at": now},
        "still-running": {"pid_namespace": 1},
        "this-namespace": {"pid_namespace": sandbox._pid_namespace()},
    }
    names = {}
    for started, (case, data) in enumerate(entries.items(), 1):
        names[case] = sandbox._entry_name(gone, started)
        (tmp_path / names[case]).write_text(json.dumps({"pid": gone, **data}))
    sandbox._forget_dead_runs(tmp_path)
    left = {case for case, name in names.items() if (tmp_path / name).exists()}
    assert left == {"ended-just-now", "still-running"}


def test_pytest_help_leaves_no_entry_saying_a_run_is_starting(tmp_path: Path) -> None:
    # The plugin says in the registry that a run is starting as pytest imports it; where it
    # makes no run after all (--help, --version), nothing may stay to say so.
    from app import sandbox

    mark = f"--rootdir={tmp_path}"
    for option in ("--help", "--version"):
        done = forked_pytest.run(
            [sys.executable, "-m", "pytest", option, mark], env=_inner_env(), cwd=tmp_path
        )
        assert done.returncode == 0, done.stdout + done.stderr
    # The registry is every run's on the machine: an entry listed may be gone when read
    # (forgotten by a run starting on another worker), or a FIFO another worker's test put
    # at its run's name for a moment (red team 39's), which a plain read waits on for ever.
    said = []
    for path in sandbox.RUNS_DIR.glob("*.json"):
        with contextlib.suppress(OSError):
            said.append(sandbox._entry_bytes(path).decode(errors="replace"))
    assert not [text for text in said if mark in text], said
