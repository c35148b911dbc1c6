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
  outside any run and purged the stopped production root.

Red team 66 on regress (branch rt-regress66a), on those fixes, with a real FUSE mirror
(``bindfs``):

- whether the hand-over keeps an entry was judged once per what ``stat`` said of it (inode,
  size, mtime, ctime), not by what it holds: a test that writes its daemon's entry as a
  run's, lets the check after the test judge it so, then rewrites it with bytes of the same
  length that no run writes (a sandbox holding production's root, nothing protected) and
  puts its times back, on a filesystem whose ctime follows its mtime (``bindfs
  --ctime-from-mtime``; any kernel before Linux 6.13 within one clock tick): the run's last
  hand-over took it for the run's it had judged, and once the run had ended the daemon
  purged the stopped production root;
- a test that writes over its daemon's entry, handed on after an earlier test, a copy of the
  run's own that says its process lives in another PID namespace: its reader takes that for
  another process's and reads none, the hand-over kept it as a run's (after the test and at
  the run's end), and once the run had ended the daemon purged the stopped production root.
"""

from __future__ import annotations

import re
import shutil
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


#: A test that leaves two daemons given production's settings alone, each of which purges
#: once the run's process is gone (into ``$OUT.root``, and into ``$OUT`` once that one has
#: answered), and writes their entries from an exit hook (which Python runs before the run's
#: last hand-over, registered earlier) as copies of the run's own with a sandbox no run
#: writes; the run ends as runs do.
COPIES_THE_RUN_S_ENTRY = """
import atexit, json, os, subprocess, sys
from app import sandbox

WAITS = (
    'while kill -0 "$RUN" 2>/dev/null || { [ "$AFTER" ] && [ ! -s "$AFTER" ]; }; '
    'do sleep 0.05; done; exec "$0" -m app data purge --yes-i-mean-it >"$TO" 2>&1'
)

def test_copies_the_run_s_entry_for_its_daemons_as_the_run_ends():
    out = os.environ["OUT"]
    for shape, to, after in (("/", out + ".root", ""), ("relative/sandbox", out, out + ".root")):
        env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
        env.update(ENV_FOR_DYNACONF="production", RUN=str(os.getpid()), TO=to, AFTER=after)
        daemon = subprocess.Popen(["sh", "-c", WAITS, sys.executable], env=env,
                                  start_new_session=True)
        entry = json.loads(sandbox._own_entry().read_text())
        entry.update(pid=daemon.pid, sandbox=shape)
        at = sandbox.RUNS_DIR / sandbox._entry_name(daemon.pid, sandbox._stat_fields(daemon.pid)[1])
        atexit.register(at.write_text, json.dumps(entry))
"""


def test_a_copy_of_the_run_s_entry_with_a_sandbox_no_run_writes_is_handed_over(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # A copy of the run's entry with a sandbox of `/` or a relative one, written for a daemon:
    # the run's last hand-over kept it (it protects the run's roots, by their paths), its
    # reader took it for no run's, and once the run had ended the daemon found nothing of
    # the run and purged the stopped production root (whose snapshot `_left_behind_a_run`
    # compares). Kept now is what its reader reads as a run.
    said = {"relative": _left_behind_a_run(stopped, tmp_path, COPIES_THE_RUN_S_ENTRY)}
    said["root"] = (tmp_path / "out.txt.root").read_text()
    for shape, answer in said.items():
        assert answer.startswith("error: refused under pytest (sandbox: "), (shape, answer)
        assert re.search(
            r"loading profile 'production'; tests run on the 'testing' profile \(this "
            r"process belongs to the test run through the process tree \(this process, "
            r"started by the test run of pytest pid \d+, which has ended, registered in ",
            answer,
        ), (shape, answer)


#: A test that starts a daemon given production's settings and the opt-in alone, which
#: purges once the run's process is gone (into ``$OUT``), and puts its registry entry, as a
#: link, on a FUSE mirror whose ctime is its mtime: first a copy of the run's own entry
#: (kept, as a run's), then, after the check that follows the test, the same number of
#: bytes naming a sandbox that holds production's root and nothing protected, with the
#: file's times put back. The run ends as runs do.
REWRITTEN_WITH_ITS_TIMES = """
import json, os, subprocess, sys
from app import sandbox

WAITS = (
    'while kill -0 "$RUN" 2>/dev/null; do sleep 0.05; done; '
    'exec "$0" -m app data purge --yes-i-mean-it >"$TO" 2>&1'
)
MIRROR = os.environ["OUT"] + ".mirror"
KEPT = {}


def test_1_leaves_a_daemon_with_a_run_s_entry():
    source = os.environ["OUT"] + ".source"
    os.makedirs(source)
    os.makedirs(MIRROR)
    subprocess.run(["bindfs", "--ctime-from-mtime", source, MIRROR], check=True)
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
    env.update(ENV_FOR_DYNACONF="production", PYTEST_APP_ALLOW_PROFILES="production",
               RUN=str(os.getpid()), TO=os.environ["OUT"])
    daemon = subprocess.Popen(["sh", "-c", WAITS, sys.executable], env=env,
                              start_new_session=True)
    run_s = json.loads(sandbox._own_entry().read_text())
    run_s.update(pid=daemon.pid, argv=["sh"])
    forged = {"pid": daemon.pid, "argv": ["sh"], "sandbox": os.environ["ABOVE"],
              "protected": []}
    good, bad = json.dumps(run_s), json.dumps(forged)
    assert len(bad) <= len(good)
    KEPT.update(good=good, bad=bad + " " * (len(good) - len(bad)), daemon=daemon.pid)
    on_the_mirror = os.path.join(MIRROR, "entry")
    with open(on_the_mirror, "w") as entry:
        entry.write(good)
    name = sandbox._entry_name(daemon.pid, sandbox._stat_fields(daemon.pid)[1])
    os.symlink(on_the_mirror, sandbox.RUNS_DIR / name)


def test_2_rewrites_it_with_its_times():
    on_the_mirror = os.path.join(MIRROR, "entry")
    before = os.stat(on_the_mirror)
    fd = os.open(on_the_mirror, os.O_WRONLY)
    os.pwrite(fd, KEPT["bad"].encode(), 0)
    os.close(fd)
    os.utime(on_the_mirror, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(on_the_mirror)
    same = ("st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
    assert [getattr(after, f) for f in same] == [getattr(before, f) for f in same]
"""


def test_an_entry_rewritten_with_the_same_stat_is_judged_by_what_it_holds(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The hand-over judged an entry once per what `stat` said of it: a daemon's entry,
    # judged a run's after the first test, then rewritten with bytes of the same length that
    # no run writes and its times put back (a FUSE mirror whose ctime is its mtime), was
    # still the run's at the run's end, and the daemon, once the run had ended, purged the
    # stopped production root (whose snapshot `_left_behind_a_run` compares).
    if shutil.which("bindfs") is None:
        pytest.skip("needs bindfs (Debian package bindfs), a FUSE mirror")
    monkeypatch.setenv("ABOVE", str(stopped[1].parent))
    said = _left_behind_a_run(stopped, tmp_path, REWRITTEN_WITH_ITS_TIMES)
    # Handed the run's entry at its end: production's root mapped into the run's sandbox.
    assert said.startswith("error: data root "), said
    assert (
        "data_root of profile 'production' (from pytest sandbox (configured: "
        f"{stopped[1]}, settings.toml [production])"
    ) in said, said


#: A test that leaves a daemon given production's settings alone, which purges once the
#: run's process is gone (into ``$OUT``); the check after it hands the run's entry on to it.
#: A later test writes over that entry a copy of the run's own that says its process lives
#: in another PID namespace. The run ends as runs do.
SAYS_ANOTHER_NAMESPACE = """
import json, os, subprocess, sys
from app import sandbox

WAITS = (
    'while kill -0 "$RUN" 2>/dev/null; do sleep 0.05; done; '
    'exec "$0" -m app data purge --yes-i-mean-it >"$TO" 2>&1'
)
LEFT = []


def test_1_leaves_a_daemon():
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR")}
    env.update(ENV_FOR_DYNACONF="production", RUN=str(os.getpid()), TO=os.environ["OUT"])
    LEFT.append(subprocess.Popen(["sh", "-c", WAITS, sys.executable], env=env,
                                 start_new_session=True).pid)


def test_2_copies_the_run_s_entry_over_its_own():
    pid = LEFT[0]
    at = sandbox.RUNS_DIR / sandbox._entry_name(pid, sandbox._stat_fields(pid)[1])
    assert "outlived" in json.loads(at.read_text())  # handed on after the first test
    entry = json.loads(sandbox._own_entry().read_text())
    entry.update(pid=pid, own_pid_namespace=entry["own_pid_namespace"] + 1)
    at.write_text(json.dumps(entry))
"""


def test_an_entry_that_says_another_pid_namespace_is_no_run_s_to_keep(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # Its reader takes an entry that says its process lives in another PID namespace for
    # another process's (`_of_another`), and reads none; the hand-over kept it as a run's
    # inside this one (it keeps the run's roots), after the test and at the run's end, where
    # the run had handed on to that process before (the name it wrote, kept for the
    # process's life). Once the run had ended, the daemon found no entry and purged the
    # stopped production root (whose snapshot `_left_behind_a_run` compares).
    said = _left_behind_a_run(stopped, tmp_path, SAYS_ANOTHER_NAMESPACE)
    assert said.startswith("error: refused under pytest (sandbox: "), said
    assert re.search(
        r"loading profile 'production'; tests run on the 'testing' profile \(this "
        r"process belongs to the test run through the process tree \(this process, "
        r"started by the test run of pytest pid \d+, which has ended, registered in ",
        said,
    ), said
