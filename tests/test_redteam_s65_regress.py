"""Red team 65 on regress (branch rt-regress65a): the session's own changes to the guard.

Pytest in a subprocess beside a stopped production root, real processes and the real
registry of test runs. What broke, now held:

- a test that writes a registry entry by hand for a daemon it starts (a sandbox holding
  production's root, nothing protected, production opted into), then a later test that
  kills the run (``SIGKILL``): the check after each test hands the run on only to a process
  with no entry yet (`app.sandbox.hand_on`), and since 57f9483c also keeps an entry written
  while it writes; the test's entry stayed, and the daemon, once the run was gone, read it
  as its run and purged the stopped production root;
- a test that writes its daemon's entry as a copy of the run's own with a sandbox no run
  writes (``/``, a relative path), its daemon given production's settings alone, in a run
  that ends as runs do: both hand-overs kept it (it protects the run's roots, by their
  paths), its reader took it for no run's, and once the run had ended the daemon was
  outside any run and purged the stopped production root;
- a daemon left by a test of a ``pytest -p no:app`` that a test of the run left running past
  the run's end: the run's last hand-over passed over that pytest and what it started, and
  once it exited (removing its entry, handing nothing on) the daemon purged the stopped
  production root.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s41_guard import _left_behind_a_run

#: A test that starts two daemons given production's settings and the opt-in alone, which
#: purge once the run's process is gone (the second once the first has answered, into
#: ``$OUT``, which the caller waits for), and writes each one's registry entry by hand (a
#: sandbox holding production's root, nothing protected): the first's before the check
#: after the test, the second's while that check writes (the moment 57f9483c left to
#: whatever is there; the check's next step, making the entry's text, waits for it). A
#: later test kills the run.
FORGES_THEN_KILLED = """
import json, os, signal, subprocess, sys
from app import sandbox

WAITS = (
    'while kill -0 "$RUN" 2>/dev/null || { [ "$AFTER" ] && [ ! -s "$AFTER" ]; }; '
    'do sleep 0.05; done; '
    'exec "$0" -m app data purge --yes-i-mean-it >"$TO" 2>&1'
)

def _daemon(to, after):
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
    env.update(ENV_FOR_DYNACONF="production", PYTEST_APP_ALLOW_PROFILES="production",
               RUN=str(os.getpid()), TO=to, AFTER=after)
    daemon = subprocess.Popen(["sh", "-c", WAITS, sys.executable], env=env,
                              start_new_session=True)
    entry = {"pid": daemon.pid, "argv": ["sh"], "sandbox": os.environ["ABOVE"], "protected": []}
    name = sandbox._entry_name(daemon.pid, sandbox._stat_fields(daemon.pid)[1])
    return daemon.pid, sandbox.RUNS_DIR / name, json.dumps(entry)

def test_1_leaves_daemons_with_entries_of_their_own():
    first = os.environ["OUT"] + ".before"
    _, entry, text = _daemon(first, "")
    entry.write_text(text)
    pid, entry, text = _daemon(os.environ["OUT"], first)
    made = sandbox._entry_dict

    def written_meanwhile(run, child):  # between the check's look and its write
        if child == pid:
            entry.write_text(text)
        return made(run, child)

    sandbox._entry_dict = written_meanwhile

def test_2_ends_the_run():
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_entry_a_test_wrote_for_its_daemon_is_handed_over_before_the_run_is_killed(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The check after each test gave the run's entry only to a process without one, and
    # kept an entry a test wrote by hand for its daemon (nothing protected, a sandbox that
    # holds production's root). While the run lives, the run above binds it
    # (`_within_enclosing`); once a later test killed the run, the daemon had nothing above
    # it, read that entry as its run, and purged the stopped production root (whose
    # snapshot `_left_behind_a_run` compares).
    monkeypatch.setenv("ABOVE", str(stopped[1].parent))
    said = {
        "meanwhile": _left_behind_a_run(stopped, tmp_path, FORGES_THEN_KILLED),
        "before": (tmp_path / "out.txt.before").read_text(),
    }
    # Handed the run's entry: production's root mapped into the run's sandbox.
    for forged, answer in said.items():
        assert answer.startswith("error: data root "), (forged, answer)
        assert (
            "data_root of profile 'production' (from pytest sandbox (configured: "
            f"{stopped[1]}, settings.toml [production])"
        ) in answer, (forged, answer)


#: What a test of a pytest without the app's plugin does: it leaves a daemon given
#: production's settings alone, which purges once that pytest and the run above it are gone
#: (and the other daemons have answered), and it outlives the run above.
WITHOUT_THE_PLUGIN = """
import os, subprocess, sys, time

WAITS = (
    'while kill -0 "$RUN" 2>/dev/null || kill -0 "$INNER" 2>/dev/null '
    '|| [ ! -s "$OUT.root" ] || [ ! -s "$OUT.relative" ]; do sleep 0.05; done; '
    'exec "$0" -m app data purge --yes-i-mean-it >"$OUT" 2>&1'
)

def test_leaves_a_daemon_and_outlives_the_run_above():
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR", "OUT", "RUN")}
    env.update(ENV_FOR_DYNACONF="production", INNER=str(os.getpid()))
    subprocess.Popen(["sh", "-c", WAITS, sys.executable], env=env, start_new_session=True)
    open(os.environ["OUT"] + ".started", "w").close()
    while os.path.exists("/proc/" + os.environ["RUN"]):
        time.sleep(0.05)
"""

#: Tests that leave daemons given production's settings alone, each of which purges once the
#: run's process is gone (into ``$OUT.<name>``), and that end as tests do: two whose entries
#: a test writes from an exit hook (which Python runs before the run's last hand-over,
#: registered earlier) as copies of the run's own with a sandbox no run writes; and one left
#: by a test of a ``pytest -p no:app`` the run's test leaves running (`WITHOUT_THE_PLUGIN`,
#: into ``$OUT``, last).
LEFT_AS_THE_RUN_ENDS = """
import atexit, json, os, subprocess, sys, time
from app import sandbox

WAITS = (
    'while kill -0 "$RUN" 2>/dev/null; do sleep 0.05; done; '
    'exec "$0" -m app data purge --yes-i-mean-it >"$TO" 2>&1'
)

def test_1_copies_the_run_s_entry_for_its_daemons_as_the_run_ends():
    for name, shape in (("root", "/"), ("relative", "relative/sandbox")):
        env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
        env.update(ENV_FOR_DYNACONF="production", RUN=str(os.getpid()),
                   TO=f"{os.environ['OUT']}.{name}")
        daemon = subprocess.Popen(["sh", "-c", WAITS, sys.executable], env=env,
                                  start_new_session=True)
        entry = json.loads(sandbox._own_entry().read_text())
        entry.update(pid=daemon.pid, sandbox=shape)
        at = sandbox.RUNS_DIR / sandbox._entry_name(daemon.pid, sandbox._stat_fields(daemon.pid)[1])
        atexit.register(at.write_text, json.dumps(entry))

def test_2_leaves_a_pytest_without_the_plugin_running(tmp_path):
    (tmp_path / "test_inner.py").write_text(os.environ["INNER_TESTS"])
    subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:app", "-q", "-p", "no:cacheprovider",
         "test_inner.py"],
        env=dict(os.environ, RUN=str(os.getpid())), cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    while not os.path.exists(os.environ["OUT"] + ".started"):  # its test has begun
        time.sleep(0.05)
"""


def test_what_a_test_leaves_as_the_run_ends_is_handed_over(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each daemon, once the run had ended, found nothing of the run and purged the stopped
    # production root (whose snapshot `_left_behind_a_run` compares):
    # - a copy of the run's entry with a sandbox of `/` or a relative one, written for it:
    #   the run's last hand-over kept it (it protects the run's roots, by their paths), and
    #   its reader took it for no run's;
    # - one a test of a `pytest -p no:app` left, which the run's test had left running: the
    #   run's last hand-over passed over that pytest and what it started, as a run of its
    #   own, and that pytest, handing nothing on, removed its entry as it exited.
    monkeypatch.setenv("INNER_TESTS", WITHOUT_THE_PLUGIN)
    said = {"without the plugin": _left_behind_a_run(stopped, tmp_path, LEFT_AS_THE_RUN_ENDS)}
    for name in ("root", "relative"):
        said[name] = (tmp_path / f"out.txt.{name}").read_text()
    for left, answer in said.items():
        assert answer.startswith("error: refused under pytest (sandbox: "), (left, answer)
        assert re.search(
            r"loading profile 'production'; tests run on the 'testing' profile \(this "
            r"process belongs to the test run through the process tree \(this process, "
            r"started by the test run of pytest pid \d+, which has ended, registered in ",
            answer,
        ), (left, answer)
