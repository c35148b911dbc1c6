"""Red team 65 on the guard (branch rt-guard65): what a pytest without the app's plugin, left
running by a test, started before the run ended.

(docstring filled in below once the experiment says what broke)
"""

from __future__ import annotations

from pathlib import Path

from test_redteam_s61_children import PRELUDE, run_inner

#: The nested run's test: a child given production's settings alone that waits for the nested
#: pytest to be gone, then purges; the test itself waits for the run above it to end first.
NESTED = """
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


def test_leaves_a_child():
    line = (
        f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.02; done; "
        + " ".join(PURGE) + f" > {OUT / 'nested'} 2>&1; echo exit $? >> {OUT / 'nested'}"
    )
    subprocess.Popen(["sh", "-c", line], env=ENV, stdin=subprocess.DEVNULL)
    (OUT / "started").write_text("started")
    parent = os.getppid()
    while os.getppid() == parent:  # the run that started this pytest has ended
        time.sleep(0.02)
"""

#: The run's test: a pytest without the app's plugin (``-p no:app``), left running once its
#: test has started its child.
INNER = (
    PRELUDE
    + """
import time

def test_nested(tmp_path):
    (tmp_path / "test_nested.py").write_text(NESTED)
    subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:app", "-p", "no:cacheprovider", "-q",
         f"--basetemp={tmp_path / 'nested'}", str(tmp_path / "test_nested.py")],
        cwd=tmp_path, stdin=subprocess.DEVNULL,
    )
    while not (OUT / "started").exists():
        time.sleep(0.02)
"""
)


#: The run in a PID namespace of its own with a registry of its own, its first process waiting
#: until every other process of the namespace is gone (what the run left running too).
_UNTIL_ALONE = (
    'mount -t tmpfs -o mode=0700 app-runs "$1" && shift && "$@"; code=$?; '
    'while set -- /proc/[0-9]*; [ $# -gt 1 ]; do sleep 0.05; done; exit $code'
)


def test_a_child_of_a_pytest_without_the_plugin_left_running_stays_in_the_run(
    tmp_path: Path,
) -> None:
    inner, said = run_inner(tmp_path, f"NESTED = {NESTED!r}\n" + INNER, ("nested",), _UNTIL_ALONE)
    assert "1 passed" in inner.stdout, inner.stdout + inner.stderr
    print(said)
