"""The check after each test hands the run on to what a test left running (`hand_on`), and a
pytest a test started writes its own entry as it starts: whichever writes second, the
pytest's own entry is the one that stays.

CI of stop 51: the incident's launcher starts the next case's inner ``pytest -p no:app`` as
a test ends. The hand-over looked for the inner run's entry, found none yet, and wrote the
outer run's over the one the inner run wrote in between; its tests' children, given
production's settings alone, were then refused as the outer run's (the development profile
forced onto the testing one) instead of as under a pytest without the app's plugin.

Real processes and the real registry: a child that writes its own entry at the moment the
hand-over has looked and not yet written (the hand-over's next step, reading the child's
identity, waits for it), and one that writes it after the hand-over.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from app import sandbox

#: A process that, on each line it reads, writes its own registry entry as a pytest without
#: the app's plugin does (`note_without_plugin`), says so, and removes it as it exits.
CHILD = """
import sys
from app import sandbox

for line in sys.stdin:
    sandbox._publish(None, sandbox._own_runs_dir(), without_plugin=True)
    print("written", flush=True)
sandbox._end_entry()
"""


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    yield process
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=60)


def _write_own_entry(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("write\n")
    process.stdin.flush()
    assert process.stdout.readline() == "written\n"


def _entry(pid: int) -> dict[str, object]:
    fields = sandbox._stat_fields(pid)
    assert fields is not None
    data = json.loads(sandbox._entry_at(sandbox.RUNS_DIR, pid, fields[1]).read_bytes())
    assert isinstance(data, dict)
    return data


def _this_run() -> sandbox.Run:
    runs = getattr(sys, sandbox._MARKER, None)
    assert runs, "this test runs under the app's plugin"
    return runs[0]


def test_a_pytest_s_own_entry_written_while_the_hand_over_writes_stays(
    child: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    entry_dict = sandbox._entry_dict

    def the_child_writes_first(run: sandbox.Run | None, pid: int) -> dict[str, object]:
        # Between the hand-over's look (no entry) and its write: the child's own entry.
        if pid == child.pid:
            _write_own_entry(child)
        return entry_dict(run, pid)

    monkeypatch.setattr(sandbox, "_entry_dict", the_child_writes_first)
    sandbox._hand_on_descendants(_this_run(), sandbox._proc_self(), while_running=True)
    data = _entry(child.pid)
    assert data.get("without_plugin") is True, data
    assert "outlived" not in data, data


def test_a_pytest_s_own_entry_written_after_the_hand_over_replaces_it(
    child: subprocess.Popen[str],
) -> None:
    sandbox._hand_on_descendants(_this_run(), sandbox._proc_self(), while_running=True)
    assert "outlived" in _entry(child.pid)
    _write_own_entry(child)
    data = _entry(child.pid)
    assert data.get("without_plugin") is True, data
    assert "outlived" not in data, data


def test_a_pytest_s_own_entry_written_while_the_run_s_end_hands_on_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The run's last hand-over (`_end_entry`) writes its entry over each descendant's that
    # is no run's own, looking first: a pytest that wrote its own in between (one a test
    # left starting as the run ends) had it written over, as CI of stop 51's did after a
    # test (red team 65 on regress). The child under a shell of its own, whose descendants
    # alone are handed on here: the run's other processes keep their entries.
    process = subprocess.Popen(
        ["sh", "-c", '"$0" -c "$1"; :', sys.executable, CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        children = list(sandbox._children(process.pid))
        while not children:  # the shell has not started it yet
            children = list(sandbox._children(process.pid))
        (pid,) = children
        entry_dict = sandbox._entry_dict

        def the_child_writes_first(run: sandbox.Run | None, child: int) -> dict[str, object]:
            if child == pid:
                _write_own_entry(process)
            return entry_dict(run, child)

        monkeypatch.setattr(sandbox, "_entry_dict", the_child_writes_first)
        sandbox._hand_on_descendants(_this_run(), process.pid)
        data = _entry(pid)
        assert data.get("without_plugin") is True, data
        assert "outlived" not in data, data
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=60)
