"""Red team 58 on the children of tests (branch rt-children4): children given a hand-built
environment that are not Python at first, that a test starts from odd places, that change
identity, or that reach the app as a library.

A real inner pytest with the app's plugin active, next to a stopped production
root of the test's own settings, started its children at once, each given production's
settings alone (``APP_SETTINGS_DIR``, production's token, ``PATH``), each running a writing
command (``data purge`` or ``data empty-trash`` with ``--profile production``) or opening
production's root through the app's classes:

- behind wrappers that are not Python (``sh -c '...; exec'``, ``timeout``, ``nice``,
  ``ionice``, ``taskset``, ``stdbuf``, ``chrt``, ``flock`` and ``env -S`` in one chain),
  ``xargs -P`` and ``make``;
- from a thread of the test that then ends, from a signal handler of the test, from an
  ``atexit`` hook of the test's own child (the grandchild outlives it), and from a nested
  ``pytest -p no:cacheprovider -p no:app`` run the test started;
- as another user (``setpriv --reuid 65534 --inh-caps -all``), made non-dumpable and given
  ``PR_SET_PDEATHSIG``;
- as a library: ``load("testing")`` with its root replaced by production's, given to
  ``open_storage``, ``DataRoot`` and ``RootLock`` made by hand.

Each was refused, naming the run's pid (the nested run: as a pytest without the app's
plugin), and production's sessions were left as they were. The test keeps them so.

What broke:

- under a pytest whose plugin is inactive (a second inner run, its rootdir another project),
  a child that changed a loaded configuration in code (``dataclasses.replace(load("testing"),
  data_root=<production>, profile="production")``) and gave it to ``open_storage``: the
  purge moved production's sessions to the trash (``load("production")`` was refused there,
  but the open had no sandbox to check against). ``open_root``, ``DataRoot``,
  ``RootLock.acquire`` and the remote open now apply load's profile rule to the
  configuration they are given (``app.sandbox.check_given_profile``);
- a child switched to user 65534 with no capability, whose settings lie under pytest's
  directories (mode 0700), was told "the data root's filesystem refused it" (exit 74) for a
  settings directory it could not read: now ``settings_unreadable`` (exit 78), naming the
  path and the user.
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

#: The inner run's test: every child at once, each given production's settings alone; what
#: each said is written to RT_OUT/<tag>.
INNER = r'''
import os, signal, subprocess, sys, threading
from pathlib import Path

OUT = Path(os.environ["RT_OUT"])
PY = sys.executable
ENV = {"APP_SETTINGS_DIR": os.environ["RT_SETTINGS"], "APP_API_TOKEN": os.environ["RT_TOKEN"],
       "PATH": "/usr/bin:/bin"}
PURGE = [PY, "-m", "app", "data", "purge", "--profile", "production", "--yes-i-mean-it"]
EMPTY = [PY, "-m", "app", "data", "empty-trash", "--profile", "production", "--yes-i-mean-it"]
P = " ".join(PURGE)
PROD = os.environ["RT_SETTINGS"] + "/data/production"
LIBRARY = f"""
import dataclasses, sys
from pathlib import Path
from app.config import load
from app.dataroot import DataRoot
from app.errors import AppError
from app.lock import RootLock
from app.storage import open_storage
c = dataclasses.replace(
    load("testing", serving=False), data_root=Path({PROD!r}), profile="production"
)
lock = RootLock(Path({PROD!r}), kind="maintenance", profile="production")
for what, how in [("storage", lambda: open_storage(c, writer=True).purge()),
                  ("dataroot", lambda: DataRoot(c, kind="maintenance", lock=None, stamp=None)),
                  ("rootlock", lambda: lock.acquire("x"))]:
    try:
        how()
        print(what, "OPENED")
    except AppError as e:
        print(what, "REFUSED", e)
"""
# Another user that keeps one capability (reading any file: the settings under pytest's
# directories of mode 0700), passed on through exec as an ambient one.
RUNUSER = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
           "--inh-caps", "-all,+dac_read_search", "--ambient-caps", "+dac_read_search"]
PRCTL = ("import ctypes, runpy, sys; libc = ctypes.CDLL(None); libc.prctl(4, 0, 0, 0, 0); "
         "libc.prctl(1, 9, 0, 0, 0); sys.argv = " + repr(["app", *PURGE[3:]]) + "; "
         "runpy.run_module('app', run_name='__main__')")
# The grandchild outlives the child: it waits until the child has exited (it is another
# process's then) before it asks for PR_SET_PDEATHSIG, which, asked while the child still
# ran, killed it as the child exited, before it said anything (a run under load: "atexit: 0"
# and nothing after).
OUTLIVES = ("import os, sys, time\n"
            "while os.getppid() == int(sys.argv[1]): time.sleep(0.005)\n")
ATEXIT = ("import atexit, os, subprocess; atexit.register(lambda: subprocess.Popen("
          + repr([*RUNUSER, PY, "-c", OUTLIVES + PRCTL]) + " + [str(os.getpid())], env="
          + repr(ENV) + ", stderr=subprocess.STDOUT))")
NESTED = ("import subprocess\ndef test_n():\n    p = subprocess.run(" + repr(PURGE) + ", env="
          + repr(ENV) + ", capture_output=True, text=True)\n"
          "    print('NESTED', p.returncode, p.stderr)\n")
WRAPPED = ("x=1; exec timeout 60 nice -n 5 ionice -c3 taskset -c 0 stdbuf -oL chrt -b 0 flock "
           + str(OUT / "lock") + " env -S '" + P + "'")
CASES = {
    "wrapped": (["sh", "-c", WRAPPED], ENV, None),
    "library": ([PY, "-c", LIBRARY], ENV, None),
    # Another user without the capability: the settings, under pytest's directories of mode
    # 0700, are not its to read.
    "nocap": ([*RUNUSER[:6], "--inh-caps", "-all", *PURGE], ENV, None),
    # Its atexit hook starts the grandchild as another user, non-dumpable, PR_SET_PDEATHSIG.
    "atexit": ([PY, "-c", ATEXIT], ENV, None),
    "nested": ([PY, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:app",
                "-p", "no:randomly", str(OUT / "test_nested.py")], ENV, None),
}


def start(tag, argv, env, given=None):
    # Both streams into one pipe; the test reads it to its end, the atexit hook's grandchild
    # (which inherits it) included.
    p = subprocess.Popen(argv, env=env, cwd=OUT, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return tag, p, given


def test_children():
    only = os.environ.get("RT_ONLY")
    if only:  # the run without the plugin: the library's child alone
        tag, p, given = start(only, *CASES[only])
        said, _ = p.communicate(given)
        (OUT / tag).write_text(f"{p.wait()}\n{said}")
        return
    (OUT / "test_nested.py").write_text(NESTED)
    started = [start(tag, *case) for tag, case in CASES.items()]
    # From a thread of the test that ends at once, and from a signal handler.
    in_thread = []
    make = (["make", "-s", "-f", "-"], ENV, "all:\n\t" + P + "\n")
    t = threading.Thread(target=lambda: in_thread.append(start("thread", *make)))
    t.start()
    t.join()
    handled = []
    xargs = (["sh", "-c", "echo x | xargs -P 2 -I{} " + " ".join(EMPTY)], ENV)
    old = signal.signal(signal.SIGUSR1, lambda *a: handled.append(start("signal", *xargs)))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, old)
    for tag, p, given in started + in_thread + handled:
        said, _ = p.communicate(given)
        (OUT / tag).write_text(f"{p.wait()}\n{said}")
'''

#: What each refusal says of the run (its pid follows).
UNDER_THE_RUN = "(an ancestor process, pytest pid "


class _Inner:
    """A stopped production root in ``tmp_path/name``, and an inner pytest started beside
    it: with the plugin active (the settings named) or inactive (a project of its own)."""

    def __init__(self, tmp_path: Path, name: str, *, plugin: bool) -> None:
        where = tmp_path / name
        settings, self.production, token, self.sessions = stopped_production(where)
        self.out = where / "out"
        self.out.mkdir()
        self.out.chmod(0o777)  # the child run as user 65534 writes in it
        project = inner_project(where, "test_inner.py", INNER)
        extra = {"APP_SETTINGS_DIR": str(settings)} if plugin else {"RT_ONLY": "library"}
        env = _inner_env(RT_SETTINGS=str(settings), RT_TOKEN=token, RT_OUT=str(self.out), **extra)
        if not plugin:
            env.pop("APP_SETTINGS_DIR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:randomly",
             "-p", "no:cacheprovider", f"--basetemp={where / 'bt'}", "test_inner.py"],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def said(self) -> tuple[dict[str, str], str]:
        """What each child said, by tag, and all of it (the run passed, production as it was)."""
        output, _ = self.proc.communicate()
        assert self.proc.wait() == 0, output
        said = {
            p.name: p.read_text() for p in self.out.iterdir() if p.is_file() and p.suffix != ".py"
        }
        everything = "\n".join(f"{k}: {v}" for k, v in sorted(said.items()))
        assert_untouched(self.production, self.sessions, everything)
        assert "Traceback" not in everything, everything
        return said, everything


def test_children_behind_wrappers_threads_other_users_and_a_changed_config_are_refused(
    tmp_path: Path,
) -> None:
    missing = [
        t for t in ("setpriv", "make", "chrt", "ionice", "taskset", "flock") if not shutil.which(t)
    ]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("setpriv --reuid needs root")
    # Both inner runs at once: with the plugin active, and without it.
    active = _Inner(tmp_path, "active", plugin=True)
    bare = _Inner(tmp_path, "bare", plugin=False)
    said, everything = active.said()
    refused = "error: refused under pytest (sandbox: "
    # make says 2 where its recipe failed, xargs 123 where a command it ran did.
    for tag, code in (("wrapped", 78), ("thread", 2), ("signal", 123), ("atexit", 0)):
        assert said[tag].startswith(f"{code}\n"), everything
        assert refused in said[tag], everything
        assert "loading profile 'production'" in said[tag], everything
        assert UNDER_THE_RUN in said[tag], everything
    # Before the fix: "cannot run `app data purge` (<settings>): the data root's filesystem
    # refused it (permission denied ...)", for the settings directory it could not read.
    # Where the checkout itself is not that user's to read (CI's clone in a `mktemp -d` of
    # mode 0700), its Python cannot import the app and stops before any settings are read:
    # nothing of the app runs, so there is no message to read (and nothing was purged, which
    # `_Inner.said` checks with `assert_untouched`).
    if "No module named app" not in said["nocap"]:
        assert said["nocap"].startswith("78\nerror: cannot read the settings at "), everything
        assert "permission denied for this process (user nobody)" in said["nocap"], everything
        assert "data root" not in said["nocap"], everything
    # The nested run has no plugin: refused as under it, naming it.
    assert (
        "NESTED 78 error: refused under pytest: loading profile 'production' while pytest"
        in (said["nested"])
    ), everything
    assert "runs pytest without the app's plugin" in said["nested"], everything
    # The app's classes, production's root given by hand: each refused as outside the sandbox.
    for what in ("storage", "dataroot", "rootlock"):
        assert f"{what} REFUSED refused under pytest (sandbox: " in said["library"], everything
    assert "OPENED" not in said["library"], everything
    assert "lies outside the test sandbox" in said["library"], everything

    # Before the fix: under a pytest whose plugin is inactive (its rootdir another project),
    # `load("production")` was refused but `dataclasses.replace(load("testing"),
    # data_root=<production>, profile="production")` given to open_storage purged
    # production's root, and DataRoot was made on it; RootLock was refused only as held by
    # the purge. Now each is refused naming the pytest without the plugin.
    said, everything = bare.said()
    library = said["library"]
    assert "OPENED" not in library, everything
    for what, doing in (("storage", "open"), ("dataroot", "use"), ("rootlock", "lock")):
        assert f"{what} REFUSED refused under pytest: {doing} data root " in library, everything
    assert (
        "of profile 'production', from a configuration made or changed in code rather than "
        "loaded, while pytest runs without the app's sandbox (an ancestor process (pid "
    ) in library, everything
    assert "never by a changed configuration" in library, everything
