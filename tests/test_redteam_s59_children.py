"""Red team 59 on the children of tests (branch rt-children5): a child that reaches the app's
internals with a configuration changed in code to name the testing profile and another
profile's root.

Next to a stopped production root of the test's own settings, a TestCase of ``python -m
unittest`` (a pytest whose plugin is inactive takes the same path) started a child given
production's settings alone (``APP_SETTINGS_DIR``, production's token, ``PATH``) that made
``dataclasses.replace(load("testing"), data_root=<production's root>)``: the profile stays
``testing``, so red team 58's rule for a configuration changed in code
(``check_given_profile``, which refuses any other profile there) let it through, and with no
run of the plugin there is no sandbox to check the root against.

What broke:

- ``DataRoot`` made by hand on that configuration, with a ``RootLock`` of its own, compared
  no stamp (``open_root`` does, under the lock): ``Store(root).purge()`` moved every
  production session to the trash. A ``DataRoot`` that did not come through ``open_root`` now
  compares the root's stamp with its configuration's profile, as ``open_root`` does, and is
  refused (``profile_stamp_mismatch``), inside a test run or not;
- ``app.dataroot.restamp(config, "production")`` re-stamped production's root for testing,
  and ``open_storage(config, writer=True).purge()`` then purged it. A re-stamp that takes a
  root (or a remote database and prefix) from a profile other than testing now applies the
  same rule as the open to the profile it takes it from: refused under unittest or a pytest
  without the plugin, naming the run and the marker that reaches another profile's root;
- the same child with production's profile (red team 58's case) inside a block of
  ``app.sandbox.checked(<production's root>)``, the public shortcut by which ``open_root``
  spares the lock and the ``DataRoot`` a second check of a path it has just checked: its own
  check passes where there is no sandbox, and inside it ``RootLock.acquire`` and ``DataRoot``
  skipped the profile's rule too, so the purge moved every production session to the trash.
  Both now apply the rule inside such a block as well.

- ``open_storage`` on the same configuration with its root moved to production's
  ``.trash`` (or ``.tmp``, empty directories of production's root; ``load`` refuses a root
  nested in another profile's, a configuration changed in code skipped that): the testing
  root was made there, its stamp, lock, sessions and a test's session written into
  production's root, which ``app data check`` then reported as five entries of its trash
  that need a human. A writer's open (and a ``DataRoot`` made by hand with a lock) now
  refuses a root inside another data root (a directory above it with a stamp or a lock
  file), naming that root and its profile.

``open_storage`` on the unchanged stamp held (the stamp, layer 5). Production's sessions and
stamp are left as they were; the test keeps them so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from project_copy import assert_untouched, inner_project, run_inner, stopped_production
from test_redteam_s24_guard import _inner_env

#: The child: a testing configuration pointed at production's root, through the app's
#: internals, each way in turn; what each did is printed, one line each.
CHILD = r"""
import dataclasses, sys
from pathlib import Path
from app.config import load
from app.dataroot import DataRoot, restamp
from app.errors import AppError
from app.lock import RootLock
from app.store import Store
from app.storage import open_storage
PROD = Path(sys.argv[1])
c = dataclasses.replace(load("testing", serving=False), data_root=PROD)
def by_hand():
    lock = RootLock(PROD, kind="maintenance", profile="testing")
    lock.acquire("purge by hand")
    try:
        return Store(DataRoot(c, kind="maintenance", lock=lock, stamp=None)).purge()
    finally:
        lock.release()
def in_a_checked_block():
    # open_root's own shortcut (`checked`: what is checked once inside is not again), opened
    # by hand on production's root, with production's profile (red team 58's rule).
    from app.sandbox import checked
    with checked(PROD, "purge by hand"):
        lock = RootLock(PROD, kind="maintenance", profile="production")
        lock.acquire("purge by hand")
        try:
            p = dataclasses.replace(c, profile="production")
            return Store(DataRoot(p, kind="maintenance", lock=lock, stamp=None)).purge()
        finally:
            lock.release()
for what, how in [("dataroot", by_hand), ("restamp", lambda: restamp(c, "production")),
                  ("storage", lambda: open_storage(c, writer=True).purge()),
                  ("checked", in_a_checked_block),
                  # A root inside production's: its empty trash (load refuses one nested).
                  ("nested", lambda: open_storage(
                      dataclasses.replace(c, data_root=PROD / ".trash"), writer=True
                  ).create_session("a test's", {}))]:
    try:
        how()
        print(what, "CHANGED")
    except AppError as e:
        print(what, "REFUSED", type(e).__name__, e)
"""

#: The inner test, for unittest and for pytest alike: the child, given production's
#: settings alone.
INNER = r"""
import os, subprocess, sys, unittest

class T(unittest.TestCase):
    def test_child(self):
        env = {"APP_SETTINGS_DIR": os.environ["RT_SETTINGS"],
               "APP_API_TOKEN": os.environ["RT_TOKEN"], "PATH": "/usr/bin:/bin"}
        p = subprocess.run([sys.executable, "child.py", os.environ["RT_PRODUCTION"]], env=env,
                           capture_output=True, text=True)
        with open(os.environ["RT_OUT"], "w") as out:
            out.write(p.stdout + p.stderr)
"""


def test_a_testing_config_on_another_profiles_root_through_the_internals_is_refused(
    tmp_path: Path,
) -> None:
    # Under unittest (a pytest with -p no:app is refused alike, by hand): no run of the
    # plugin, so no sandbox to hold the root to.
    settings, production, token, sessions = stopped_production(tmp_path)
    project = inner_project(tmp_path, "test_inner.py", INNER)
    (project / "child.py").write_text(CHILD)
    out = tmp_path / "said"
    env = _inner_env(
        RT_SETTINGS=str(settings), RT_TOKEN=token, RT_PRODUCTION=str(production), RT_OUT=str(out)
    )
    run_inner([sys.executable, "-m", "unittest", "-q", "test_inner"], env, project)
    said = out.read_text()
    assert_untouched(production, sessions, said)
    stamp = json.loads((production / ".app-profile.json").read_text())
    assert stamp["profile"] == "production", said
    assert "CHANGED" not in said and "Traceback" not in said, said
    lines = dict(line.split(" ", 1) for line in said.splitlines() if line)
    mismatch = (
        f"REFUSED ProfileStampMismatchError data root {production} belongs to profile "
        f"'production' (see {production}/.app-profile.json) but profile 'testing' tried to "
        "open it; nothing was changed."
    )
    assert lines["dataroot"].startswith(mismatch), said
    assert lines["storage"].startswith(mismatch), said
    assert lines["restamp"].startswith(
        f"REFUSED SandboxViolationError refused under unittest: re-stamp data root {production} "
        "of profile 'production', to hand it to profile 'testing', while unittest runs without "
        "the app's sandbox (an ancestor process runs tests with unittest (pid "
    ), said
    assert lines["checked"].startswith(
        f"REFUSED SandboxViolationError refused under unittest: lock data root {production} "
        "of profile 'production', from a configuration made or changed in code rather than "
        "loaded, while unittest runs without the app's sandbox (an ancestor process runs tests "
        "with unittest (pid "
    ), said
    assert lines["nested"] == (
        f"REFUSED DataRootStateError data root {production}/.trash: it lies inside data root "
        f"{production} (stamped for profile 'production' in {production}/.app-profile.json), "
        "and no data root may hold another; nothing was opened or changed; point data_root of "
        f"profile 'testing' at a directory outside {production} (`app config` shows where it "
        "is set)"
    ), said
    assert (
        "A test reaches another profile's root by marking the test "
        "@pytest.mark.app_profile('production') under the app's plugin, never by a "
        "changed configuration"
    ) in lines["restamp"], said
