"""Red team 65 on the guard (branch rt-guard65): what a pytest without the app's plugin, left
running by a test, started before the run ended.

A run hands its registry entry on, as it ends, to every descendant still running (red team
36), but passes over a descendant whose own entry says it is a pytest (red team 46: a head
start on the next case), and over all that pytest started, "its own to hand on". A pytest
without the app's plugin (``-p no:app``, autoload off, an inactive plugin) says so in the
registry from its start (``"starting"``, ``"without_plugin"``, red team 46) and hands
nothing on, ever: at its exit it removes its entry, and that is all.

What broke: next to a stopped production root of the test's own settings, a real inner pytest
with the app's plugin active, in a PID namespace of its own (out of this run's tree), under a
runner script that calls pytest through another module; its test started two nested pytests
and left them running: ``python -m pytest -p no:app``, whose test starts a child, and a pytest
with the plugin under a runner script (its entry says it is starting) whose ``-p`` plugin
starts one as pytest imports it, then ends that pytest before it registers. Each child is
given production's settings alone (``APP_SETTINGS_DIR``, production's token, ``PATH``), waits
for its nested pytest to be gone, then runs ``python -m app data purge --profile production
--yes-i-mean-it``; each nested pytest waits for the run above it to end first. The run's
hand-over passed over both nested pytests and their children; each nested pytest then
exited, its child was re-parented to the namespace's first process, found no run above it,
and the purge moved every production session to the trash.

What changed (``app.sandbox._hand_on_descendants``): as the run ends, what a pytest that has
not registered (without the plugin, or still starting) started gets the run's entry where it
has none; a pytest that registered is passed over as before (it hands on its own). Not in
the check after each test: while the run goes on, such a pytest's children are refused as
its own (stop 51's CI).

Red team 66 on regress (branch rt-regress66a): a child such a nested pytest starts after the
run's last hand-over (once the run above it has ended), which purges once that pytest is
gone, found nothing of the run. The run's end now notes in that pytest's entry the entry it
hands on (``_note_handed_on``), and that pytest hands it on to what it started as it exits
(``_hand_on_what_was_handed``: from its exit hook without the plugin, and from one
`announce_start` registers for a pytest that ends before it registers).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_redteam_s61_children import PRELUDE, RUNNER, RUNNER_MODULE, run_inner

#: What a nested pytest runs (``leave_a_child(name)``): a child given production's settings
#: alone that waits for the nested pytest to be gone, then purges (its exit code and output in
#: OUT/name); then it waits for the run above it to end, and starts another (OUT/name-late).
LEAVE = """
import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(os.environ["RT61_OUT"])
ENV = {
    "APP_SETTINGS_DIR": os.environ["RT61_SETTINGS"],
    "APP_API_TOKEN": os.environ["RT61_TOKEN"],
    "PATH": "/usr/bin:/bin",
}
PURGE = [sys.executable, "-m", "app", "data", "purge", "--profile", "production", "--yes-i-mean-it"]


def child(name):
    line = (
        f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.02; done; "
        + " ".join(PURGE) + f" > {OUT / name} 2>&1; echo exit $? >> {OUT / name}"
    )
    subprocess.Popen(["sh", "-c", line], env=ENV, stdin=subprocess.DEVNULL)


def leave_a_child(name):
    child(name)
    (OUT / f"{name}-started").write_text("started")
    parent = os.getppid()
    while os.getppid() == parent:  # the run that started this pytest has ended
        time.sleep(0.02)
    # And one started once it has, after its last hand-over (red team 66 on regress).
    child(f"{name}-late")
"""

#: A pytest without the app's plugin: its test leaves the child.
WITHOUT_PLUGIN = LEAVE + "\n\ndef test_leaves_a_child():\n    leave_a_child('without-plugin')\n"
#: A ``-p`` plugin that leaves the child as pytest imports it, then ends that pytest while it
#: starts (it never registers a run).
STARTING = LEAVE + "\n\nleave_a_child('starting')\nraise SystemExit(3)\n"

#: A pytest without the app's plugin that a shell the run's test left runs in its place
#: (``exec``) once the run has ended: a plain descendant at the run's last hand-over, given the
#: run's entry, which its start then wrote "starting" over (red team 66 on the guard).
RACED = LEAVE + "\n\ndef test_started_as_the_run_ended():\n    child('raced')\n"
#: A pytest without the app's plugin whose test empties ``atexit`` once it has left a child
#: after the run's end, as tests of exit handlers do: its exit hook was gone (red team 66 on
#: the guard).
CLEARED = (
    LEAVE
    + "\n\ndef test_empties_atexit():\n    import atexit\n\n"
    + "    parent = os.getppid()\n    (OUT / 'cleared-started').write_text('started')\n"
    + "    while os.getppid() == parent:\n        time.sleep(0.02)\n"
    + "    child('cleared-late')\n    atexit._clear()\n"
)

#: The run's test: the nested pytests, left running once each has started its child.
INNER = (
    PRELUDE
    + """
import time

def test_nested(tmp_path):
    (tmp_path / "test_nested.py").write_text(WITHOUT_PLUGIN)
    (tmp_path / "test_cleared.py").write_text(CLEARED)
    (tmp_path / "test_raced.py").write_text(RACED)
    (tmp_path / "stalls.py").write_text(STARTING)
    # The one with the plugin under a runner script that calls pytest through another module:
    # no command line shows pytest, so its entry says that it is starting (red team 42).
    (tmp_path / "run_tests.py").write_text(RUNNER)
    (tmp_path / "runner_module.py").write_text(RUNNER_MODULE)
    nested = [
        subprocess.Popen(
            [sys.executable, *how, "-p", "no:cacheprovider", "-q",
             f"--basetemp={tmp_path / name}", str(tmp_path / module)],
            cwd=tmp_path, stdin=subprocess.DEVNULL,
        )
        for name, how, module in [
            ("without-plugin", ["-m", "pytest", "-p", "no:app"], "test_nested.py"),
            ("starting", ["run_tests.py", "-p", "stalls"], "test_nested.py"),
            ("cleared", ["-m", "pytest", "-p", "no:app"], "test_cleared.py"),
        ]
    ]
    raced = (
        f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.02; done; "
        f'exec "$0" -m pytest -p no:app -p no:cacheprovider -q --basetemp={tmp_path / "raced"} '
        + str(tmp_path / "test_raced.py")
    )
    subprocess.Popen(["sh", "-c", raced, sys.executable], cwd=tmp_path, stdin=subprocess.DEVNULL)
    for name, started in zip(["without-plugin", "starting", "cleared"], nested):
        while not (OUT / f"{name}-started").exists():
            assert started.poll() is None, f"the nested pytest ({name}) ended before its child"
            time.sleep(0.02)
"""
)


#: The run in a PID namespace of its own with a registry of its own, its first process waiting
#: until every other process of the namespace is gone (what the run left running too).
_UNTIL_ALONE = (
    'mount -t tmpfs -o mode=0700 app-runs "$1" && shift && "$@"; code=$?; '
    "while set -- /proc/[0-9]*; [ $# -gt 1 ]; do sleep 0.05; done; exit $code"
)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="the inner run is kept out of this run's process tree in a PID namespace of its own "
    "(unshare --pid needs root here)",
)
def test_what_a_pytest_that_hands_nothing_on_left_running_stays_in_the_run(
    tmp_path: Path,
) -> None:
    # Before the fix: "moved 1 session(s) to .../production/.trash", exit 0. And a child
    # each nested pytest started once the run above it had ended (after the run's last
    # hand-over), purging once that pytest was gone: it found nothing of the run (red team
    # 66 on regress). The run's end notes in such a pytest's entry what it hands on, and
    # that pytest hands it on as it exits (the pytest that never registers too).
    # And (red team 66 on the guard) a nested pytest without the plugin that started as the
    # run ended, its start writing over what the run had handed on to it ("raced"), and one
    # whose test emptied `atexit` ("cleared-late"): each purged once that pytest was gone.
    names = (
        "without-plugin",
        "starting",
        "without-plugin-late",
        "starting-late",
        "cleared-late",
        "raced",
    )
    given = "".join(
        f"{name} = {value!r}\n"
        for name, value in [
            ("WITHOUT_PLUGIN", WITHOUT_PLUGIN),
            ("STARTING", STARTING),
            ("CLEARED", CLEARED),
            ("RACED", RACED),
            ("RUNNER", RUNNER),
            ("RUNNER_MODULE", RUNNER_MODULE),
        ]
    )
    inner, said = run_inner(tmp_path, given + INNER, names, _UNTIL_ALONE)
    assert "1 passed" in inner.stdout, inner.stdout + inner.stderr
    for name in names:
        refused = said[name]
        assert refused.endswith("exit 78\n"), refused
        assert "refused under pytest (sandbox: " in refused, refused
        assert "loading profile 'production'; tests run on the 'testing' profile" in refused
        assert ", started by the test run of pytest pid " in refused, refused
        assert "This process outlived the test run that started it (pytest pid " in refused
