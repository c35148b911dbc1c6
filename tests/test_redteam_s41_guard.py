"""Red team 41 on the guard (branch rt-guard25): what a user who did not write it tries next.

Pytest in a subprocess next to a stopped production root (and a live production server),
real processes, files and users. What broke, each now refused:

- a test that hides the registry from the service's user (an access control list, ``chmod
  0311`` of the registry, ``chmod 0200`` of the run's entry) and, in the same test, runs a
  child as that user with production's settings alone under a runner script: the child
  found no run and purged a stopped production root (red team 40's *not stopped*);
- a daemon a test left, given production's settings alone, once a later test ended the run
  at once (``SIGKILL``, ``os._exit``): nothing handed the run's entry on, and the daemon,
  out of the run's tree, purged a stopped production root;
- a test's child ``python -m pytest -p no:app`` told to write into production's root
  (``--junitxml`` naming a session's ``session.json``, ``--log-file`` its profile stamp,
  ``-o cache_dir=`` its ``sessions/``): pytest rewrote and emptied them, next to a live
  production server too, under ``-n 2``, and from a grandchild that moved into the
  session's directory, dropped its environment and its session, and gave a relative
  ``--junitxml`` (the fallback entry point guarded only temporary directories); on the
  fix's first version, a conftest that moved the process into the session's directory as
  it was imported, with a relative ``--debug=session.json``, refused only once pytest had
  rewritten the record; and outside any run, a user's own ``pytest -p no:app`` with
  ``--junitxml`` naming a stopped production record.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_redteam_s22_guard import _own_proc_allowed
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s30_guard import live  # noqa: F401 - a fixture
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s36_guard import _run_beside
from test_redteam_s39_guard import (
    DENIES_A_USER_THE_REGISTRY,
    PRIVATE_REGISTRY,
    _outside_as_nobody,
    _project,
)
from test_redteam_s40_guard import _pytest_outside_any_run
from test_server_e2e import Server, snapshot

from app import sandbox as sandboxing

#: Three tests, each hiding the registry or its run's entry from user 65534 in its own way
#: (an access control list, whose mode still says 0755; ``chmod 0311``, search alone; the
#: entry ``chmod 0200``), then, in the same test, starting a child as that user given
#: production's settings alone. The check after each test puts the registry back.
DENIES_AND_STARTS = (
    DENIES_A_USER_THE_REGISTRY.replace("def test_", "def _s39_")
    + """
from app.sandbox import _entry_name, _proc_self, _stat_fields

def _child(hider):
    env = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "APP_SETTINGS_DIR")}
    env["ENV_FOR_DYNACONF"] = "production"
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         os.environ["NOBODY_PYTHON"], "-m", "app", "data", "purge", "--yes-i-mean-it"],
        env=env, capture_output=True, text=True, cwd="/",
    )
    print("CHILD", hider, done.returncode, done.stdout, done.stderr)

def test_an_access_control_list():
    _s39_1_denies_the_service_user_the_registry()
    _child("acl")

def test_search_alone():
    os.chmod(RUNS_DIR, 0o311)
    _child("search")

def test_an_unreadable_entry():
    os.chmod(RUNS_DIR / _entry_name(_proc_self(), _stat_fields(_proc_self())[1]), 0o200)
    _child("entry")
"""
)


def test_a_child_as_a_user_denied_the_registry_in_the_same_test_is_refused(
    tmp_path: Path,
) -> None:
    # Red team 40 left it not stopped: the check after the test removes the list, too late
    # for a child the same test started.
    output, production, before = _outside_as_nobody(
        tmp_path, DENIES_AND_STARTS, PRIVATE_REGISTRY, inner_user=()
    )
    assert snapshot(production) == before, output
    assert output.count(" 78 error: refused under pytest") == 3, output
    registry = sandboxing.RUNS_DIR
    hidden = (
        "error: refused under pytest: loading profile 'production' while a test run may be "
        "above this process (ancestor pid 1: {argv}), whose entry in the registry of test "
        f"runs {registry} this process (user 65534) cannot read: Permission denied. Let "
        f"every user read {registry} and its entries again (setfacl -b {registry}; chmod "
        f"755 {registry}; chmod 644 {registry}/*.json)"
    )
    for hider in ("acl", "entry"):
        assert f"CHILD {hider} 78 {hidden.format(argv=sys.executable + ' ci.py')}" in output
    # Searchable, not listable: the run's entry is read by its name, and the child is in it.
    assert (
        "CHILD search 78 error: refused under pytest (sandbox: " in output
        and "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the process tree (an ancestor process, pytest pid 1"
        in output
    ), output


# --- a daemon a test leaves, whose run is then killed ------------------------------------

#: A test that leaves a daemon given production's settings alone, which waits for the run's
#: process to be gone and then purges; a later test ends the run's process at once (`END`).
LEAVES_A_DAEMON = """
import os, signal, subprocess, sys, time

WAITS = (
    'while kill -0 "$RUN" 2>/dev/null && [ ! -e "$OUT.go" ]; do sleep 0.05; done; '
    'exec "$0" -m app data purge --yes-i-mean-it >"$OUT" 2>&1'
)

def test_1_leaves_a_daemon():
    env = {name: os.environ[name] for name in ("PATH", "APP_SETTINGS_DIR", "OUT")}
    env.update(ENV_FOR_DYNACONF="production", RUN=str(os.getpid()))
    subprocess.Popen(["sh", "-c", WAITS, sys.executable], env=env, start_new_session=True)

def test_2_ends_the_run():
    END
"""

#: In a PID namespace of its own (outside this suite's run) whose registry is a tmpfs of
#: its own: the run, then a wait for what its daemon wrote.
AFTER_THE_RUN = """
mount -t tmpfs -o mode=0755 tmpfs "$1" || exit 9
cd "$2" || exit 9
shift 2
"$@"
i=0; while [ ! -s "$OUT" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
"""


def _left_behind_a_run(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    tests: str,
) -> str:
    """Run `tests` in a PID namespace of their own, outside this suite's run, given the
    stopped production root's settings and ``$OUT``; wait for what their daemon writes to
    ``$OUT``; fail if production's root changed. What the daemon wrote."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or not _own_proc_allowed():
        pytest.skip("needs root and unshare --pid --mount-proc, to leave this suite's run")
    settings, production = stopped
    project = _project(tmp_path, test_left=tests)
    out = tmp_path / "out.txt"
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path), OUT=str(out))
    before = snapshot(production)
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
         "sh", "-c", AFTER_THE_RUN, "sh", str(sandboxing.RUNS_DIR), str(project),
         sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    said = out.read_text() if out.exists() else ""
    assert snapshot(production) == before, said + done.stdout + done.stderr
    return said


#: Instead of ending the run: tell the daemon to act at once, while the run goes on.
WHILE_THE_RUN_GOES_ON = """
    open(os.environ["OUT"] + ".go", "w").close()
    for _ in range(400):
        if os.path.exists(os.environ["OUT"]) and os.path.getsize(os.environ["OUT"]):
            break
        time.sleep(0.05)
"""


@pytest.mark.parametrize(
    "end",
    ["os.kill(os.getpid(), signal.SIGKILL)", "os._exit(0)", WHILE_THE_RUN_GOES_ON],
    ids=["sigkill", "exit", "held-while-the-run-goes-on"],
)
def test_a_daemon_a_test_left_stays_in_the_run_once_the_run_is_killed(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    end: str,
) -> None:
    # The run hands its entry on to what outlives it as it exits: killed, or ended with
    # os._exit, it hands on nothing, and the daemon, re-parented out of the run's tree,
    # purged a stopped production root a moment later.
    said = _left_behind_a_run(stopped, tmp_path, LEAVES_A_DAEMON.replace("END", end))
    assert said.startswith("error: refused under pytest (sandbox: "), said
    how = (
        r"left running by a test of the run of pytest pid \d+,"
        if "go" in end
        else r"started by the test run of pytest pid \d+, which has ended,"
    )
    assert re.search(
        re.escape(
            "loading profile 'production'; tests run on the 'testing' profile (this process "
            "belongs to the test run through the process tree (this process, "
        )
        + how
        + re.escape(f" registered in {sandboxing.RUNS_DIR}))"),
        said,
    ), said


# --- what pytest writes, in a child with the plugin switched off --------------------------

#: Tests whose children run pytest with the plugin switched off, given a hand-built
#: environment, each told to write into production's root; one outside every data root.
WRITES_WITH_THE_PLUGIN_OFF = """
import os, pathlib, subprocess, sys

PRODUCTION = pathlib.Path(os.environ["PRODUCTION"])
RECORD = next((PRODUCTION / "sessions").iterdir()) / "session.json"

def _child(tmp_path, name, *args):
    (tmp_path / "test_inner.py").write_text("def test_inner():\\n    pass\\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:app", "-p", "no:randomly", "-q", *args,
         "test_inner.py"],
        cwd=tmp_path, env={"PATH": os.environ["PATH"]}, capture_output=True, text=True,
    )
    print("CHILD", name, done.returncode, done.stdout + done.stderr)

def test_junitxml(tmp_path):
    _child(tmp_path, "junitxml", "--junitxml", str(RECORD), "-p", "no:cacheprovider")

def test_log_file(tmp_path):
    # Appended to (red team 75): it was said to be rewritten.
    _child(tmp_path, "log-file", f"--log-file={PRODUCTION / '.app-profile.json'}",
           "--log-file-mode=a", "-p", "no:cacheprovider")

def test_cache_dir(tmp_path):
    _child(tmp_path, "cache-dir", "-o", f"cache_dir={PRODUCTION / 'sessions'}")

def test_junitxml_live(tmp_path):
    record = next((pathlib.Path(os.environ["LIVE"]) / "sessions").iterdir()) / "session.json"
    _child(tmp_path, "junitxml-live", "--junitxml", str(record), "-p", "no:cacheprovider")

def test_xdist(tmp_path):
    _child(tmp_path, "xdist", "-n", "2", "--junitxml", str(RECORD), "-p", "no:cacheprovider")

def test_a_grandchild_in_the_session_with_a_relative_path(tmp_path):
    # A child of a child, each hop its own: a shell that moves into the production
    # session's directory, then env -i and setsid, then pytest with a relative --junitxml.
    (tmp_path / "test_inner.py").write_text("def test_inner():\\n    pass\\n")
    hops = ('cd "$1" && exec env -i PATH="$PATH" setsid "$2" -m pytest -p no:app -p no:randomly '
            '-p no:cacheprovider -q --junitxml=session.json -c /dev/null "$3"')
    done = subprocess.run(["sh", "-c", hops, "sh", str(RECORD.parent), sys.executable,
                           str(tmp_path / "test_inner.py")], capture_output=True, text=True)
    print("CHILD grandchild", done.returncode, done.stdout + done.stderr)

def test_a_conftest_that_moves_into_the_session(tmp_path):
    # The check as pytest starts passes; the conftest, imported next, moves the process
    # into the session's directory, and pytest opens a relative --debug right after.
    (tmp_path / "conftest.py").write_text(f"import os\\nos.chdir({str(RECORD.parent)!r})\\n")
    _child(tmp_path, "debug-conftest", "--debug=session.json", "-p", "no:cacheprovider")

def test_elsewhere(tmp_path):
    _child(tmp_path, "elsewhere", f"--junitxml={tmp_path / 'report.xml'}")
"""


def test_what_pytest_writes_with_the_plugin_switched_off_is_checked(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    live: Server,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # Red team 27 closed it where the plugin runs; a child `python -m pytest -p no:app`
    # given a hand-built environment rewrote a production session's session.json
    # (--junitxml), emptied its profile stamp (--log-file) and made pytest's cache among
    # its sessions (-o cache_dir=): the fallback guarded only pytest's temporary directories.
    settings, production = stopped
    project = _project(tmp_path, test_writes=WRITES_WITH_THE_PLUGIN_OFF)
    served = snapshot(live.root)
    code, output = _run_beside(
        production, project, settings, "-q", "-s", "-p", "no:randomly",
        PRODUCTION=str(production), LIVE=str(live.root),
    )  # fmt: skip
    assert snapshot(live.root) == served, output
    assert code == 0, output
    # Next to the live production server: refused by its holder, found on disk.
    live_record = next((live.root / "sessions").iterdir()) / "session.json"
    assert (
        f"CHILD junitxml-live 4 ERROR: app: refusing to run: pytest's --junitxml rewrites "
        f"{live_record} as the run ends, which lies in the data root {live.root} (held by pid "
        f"{live.pid}, kind server, profile production"
    ) in output, output
    with live.client() as client:
        assert client.get(f"/sessions/{live_record.parent.name}").status_code == 200
    assert "CHILD elsewhere 0 " in output, output
    protected = (
        "which lies in the data root of profile 'production (protected by the enclosing "
        "test run, pytest pid "
    )
    for name, does in (
        ("junitxml", "pytest's --junitxml rewrites {record} as the run ends"),
        ("xdist", "pytest's --junitxml rewrites {record} as the run ends"),
        ("grandchild", "the run ends"),
        ("debug-conftest", "a conftest or a plugin changed directory"),
        (
            "log-file",
            (
                "pytest's log_file (--log-file, in log_file_mode 'a': --log-file-mode=a) "
                "appends the run's log records to {production}/.app-profile.json from the "
                "run's start (appended to, a record or a stamp no longer parses, an audit log "
                "gains lines the app never wrote), which lies in the data root"
            ),
        ),
        ("cache-dir", "pytest's cache provider writes its cache_dir, {production}/sessions,"),
    ):
        record = next((production / "sessions").iterdir()) / "session.json"
        assert f"CHILD {name} 4 ERROR: app: refusing to run: " in output, output
        assert does.format(record=record, production=production) in output, output
    assert output.count(protected) == 6, output
    assert (
        output.count(
            "The app's plugin is switched off in this run (`-p no:app` on pytest's command line), "
            "and pytest writes there all the same"
        )
        == 7
    ), output


def test_outside_any_run_what_pytest_writes_into_a_data_root_is_refused_with_the_plugin_off(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # A user's own `pytest -p no:app --junitxml=<a stopped production record>`, in no run:
    # pytest rewrote the record. Refused now by the root's stamp, as an inactive run is.
    _settings, production = stopped
    record = next((production / "sessions").iterdir()) / "session.json"
    (tmp_path / "test_inner.py").write_text("def test_inner():\n    pass\n")
    before = snapshot(production)
    code, output = _pytest_outside_any_run(tmp_path, f"--junitxml={record}")
    assert snapshot(production) == before, output
    assert code == 4, output
    assert (
        f"ERROR: app: refusing to run: pytest's --junitxml rewrites {record} as the run ends, "
        f"which lies in the data root {production} (it has a profile stamp, .app-profile.json)"
    ) in output, output
