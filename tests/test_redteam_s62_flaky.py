"""Red team 62 on the suite's failures under load (branch rt-flaky4): what they were.

Nothing of the app broke. Two of the three were not load at all:

- red team 59's ``test_a_request_a_second_ctrl_c_cuts_...`` hung, and red team 60's
  ``test_a_ctrl_c_while_a_purge_writes_its_line_...`` failed ``assert 0 == 130``, in runs
  started with SIGINT ignored (a shell without job control starts ``pytest ... &`` so).
  Every child inherited it, and the app keeps an inherited ignored SIGINT ignored on purpose
  (red team 60 on regress): the server forked for red team 59 never stopped, and its wait for
  ``stopping_since`` never ended (its upload file had been in ``.tmp/`` all along: the route
  stages before it reads the body); the purge under strace's ``signal=INT`` finished, exit 0.
  Reproduced at any load by a pytest started as ``signal.signal(SIGINT, SIG_IGN);
  os.execv(...)``. tests/conftest.py (through ``forked_app.children_take_sigint``) now gives
  SIGINT its Python handler again in such a run, before it records what children inherit, so
  every child takes it;
- red team 61's entry test lost its FIFO to another run: a run starting anywhere forgets an
  entry it cannot read whose pid is dead in its namespace (`app.sandbox._forget_dead_runs`),
  and the inner run, pid 1 of a PID namespace of its own, is dead to every other run. Its
  inner run now has a registry of its own (a tmpfs in its mount namespace).

Session 72 (branch flaky72): ``nohup pytest ...`` starts the run with SIGHUP ignored, which
the server keeps as well: red team 38's three reload tests and red team 37's HUP case failed
(4 of 6, every such run). Those tests start their servers with SIGHUP at its default
(``forked_app.sighup_at_default``); the run's own stays ignored, as ``nohup`` asked.

The unbounded waits of the same kind are bounded (tests/waits.py's ``until``), failing with
the output that explains.
"""

from __future__ import annotations

import signal
from pathlib import Path

import forked_app
import pytest


def test_a_run_started_with_sigint_ignored_gives_it_back_to_its_children(tmp_path: Path) -> None:
    """The run's own handler is put back (in place, then restored), and the run's children,
    forked from its zygote or started, take SIGINT: what every test that Ctrl-Cs one needs."""
    found = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        pytest.skip("this run's tests do not run in its main thread: signals are not theirs")
    try:
        forked_app.children_take_sigint()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, found)
    log = tmp_path / "child.log"
    code = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    assert forked_app.python_c(code, [], log).wait(timeout=120) == 0, log.read_text()
    assert log.read_text() == "True\n", log.read_text()


def test_a_server_started_in_a_run_under_nohup_takes_the_sighup_its_test_sends(
    tmp_path: Path,
) -> None:
    """Session 72: under ``nohup pytest ...`` red team 38's reload tests and red team 37's HUP
    case failed, as the server keeps an inherited ignored SIGHUP ignored. Their servers start
    within `forked_app.sighup_at_default`: a child started there takes SIGHUP, and the run's
    own stays ignored, as ``nohup`` asked."""
    found = signal.getsignal(signal.SIGHUP)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    except ValueError:
        pytest.skip("this run's tests do not run in its main thread: signals are not theirs")
    log = tmp_path / "child.log"
    code = "import signal; print(signal.getsignal(signal.SIGHUP) is signal.SIG_DFL)"
    try:
        with forked_app.sighup_at_default():
            child = forked_app.python_c(code, [], log)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, found)
    assert child.wait(timeout=120) == 0, log.read_text()
    assert log.read_text() == "True\n", log.read_text()
