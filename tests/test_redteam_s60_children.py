"""Red team 60 on the children of tests (branch rt-children6): a child whose reads of the
registry of test runs fail, other than as denied or absent.

Next to a stopped production root of the test's own settings, a test's child given
production's settings alone (``APP_SETTINGS_DIR``, production's token, ``PATH``) ran ``python
-m app data purge --profile production --yes-i-mean-it`` under a fault injector that failed
its opens of the registry (``/tmp/app-pytest-runs-<uid>``) and of each ancestor's
``/proc/<pid>/fd`` (the descriptors a run keeps of its entry) with ``EMFILE`` (``strace -f
-P <registry> -P /proc/<pid>/fd -e inject=openat:error=EMFILE``, as the project's own fault
tests fail one path's calls; ``getdents64`` failed with ``EIO`` did the same).

What broke: the walk up the process tree took a registry it could not list for an empty one,
as it takes one that is not there, and a descriptor directory it could not list for none.
Under a run whose command line is no pytest's (a runner script that calls pytest through
another module, found by its entry alone since red team 42; by hand, in a PID namespace of
its own), the child found no run and the purge moved every production session to the trash;
under ``python -m pytest`` it was refused, but as under "a pytest without the app's plugin",
told to run without ``-p no:app``: the plugin was on. An entry whose own open failed so
(``-P <registry>/<pid>-<start>.json``), an entry whose reads returned nothing
(``inject=read:retval=0``) and a registry whose own ``lstat`` failed (``EIO``) were passed
over the same way.

What changed: a registry whose listing fails for any reason, not only a denial, has its
entries looked for by name (``stat``, which needs no descriptor); an entry or a name whose
open or read fails other than as absent or denied, an entry read short of its size, and a
registry whose look fails other than as absent, are a run that may be above, unseen: the
refusal names the nearest ancestor and the registry, says the read failed (``EMFILE: Too
many open files``), and what resolves it (keep a tracer's faults to the calls meant, raise
the limit of open files, look at the disk). A tracer that answers every one of these looks
with ``ENOENT``, as if nothing were there, is not stopped (``docs/explanation/attacks/``).

The same test, by another door: ``strace -e inject=newfstatat:retval=0 -P
/proc/<pid>/ns/pid`` for each ancestor. A ``stat`` made to succeed without filling anything
in gave each ancestor another PID namespace than its entry records, so the walk passed over
the run's entry as another namespace's process's (``_of_another``), and by hand, under the
same runner, the purge moved every production session to the trash. A PID namespace is now
known only where its link's text (``pid:[N]``) and its inode agree; unknown, an entry counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from faults import needs_strace, strace_prefix
from project_copy import assert_untouched, stopped_production

from app import sandbox

PURGE = ("-m", "app", "data", "purge", "--profile", "production", "--yes-i-mean-it")


@needs_strace
def test_a_child_whose_reads_of_the_registry_fail_is_refused(tmp_path: Path) -> None:
    settings, production, token, sessions = stopped_production(tmp_path)
    env = {"APP_SETTINGS_DIR": str(settings), "APP_API_TOKEN": token, "PATH": "/usr/bin:/bin"}
    ancestors = list(sandbox._ancestry())  # this process (the run's), then the ones above
    descriptors = [Path(f"/proc/{pid}/fd") for pid, _ in ancestors]
    entries = [sandbox.RUNS_DIR / sandbox._entry_name(pid, start) for pid, start in ancestors]
    faults = {
        # The listing and the kept descriptors fail: the entries are still there by name.
        "listing": ("openat:error=EMFILE", [sandbox.RUNS_DIR, *descriptors]),
        # And each entry's own open: a run may be above, unseen.
        "entries": ("openat:error=EMFILE", [sandbox.RUNS_DIR, *descriptors, *entries]),
        # The registry's own look fails: neither there nor absent.
        "registry": ("newfstatat,openat:error=EIO", [sandbox.RUNS_DIR, *descriptors]),
        # Each entry reads empty.
        "short": ("read:retval=0", entries),
        # Each process's PID namespace looked at succeeds with nothing filled in: another's.
        "namespace": ("newfstatat:retval=0", [Path(f"/proc/{pid}/ns/pid") for pid, _ in ancestors]),
    }
    children = {
        name: subprocess.Popen(
            [*strace_prefix(inject, *paths, seccomp=True), sys.executable, *PURGE],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, (inject, paths) in faults.items()
    }
    said = {name: child.communicate()[0] for name, child in children.items()}
    assert_untouched(production, sessions, str(said))
    assert {name: child.returncode for name, child in children.items()} == dict.fromkeys(
        faults, 78
    ), said
    own = ancestors[0][0]
    assert (
        "this process belongs to the test run through the process tree (an ancestor process, "
        f"pytest pid {own}, registered in {sandbox.RUNS_DIR})"
    ) in said["listing"], said
    assert said["namespace"] == said["listing"], said
    assert "without the app's plugin" not in str(said), said
    # Named by the nearest ancestor that may be the run: where the registry itself could not
    # be looked at, that is the child's own parent (strace).
    failed = {
        "entries": ("EMFILE: Too many open files", own),
        "registry": ("EIO: Input/output error", children["registry"].pid),
        "short": ("it read 0 of its ", own),
    }
    # In a run that seals its roots (this suite's `app_seal`: docs/reference/pytest-plugin.md)
    # the run's own process moved into a mount namespace of its own after it registered, so
    # the child also reads the registry as that process's parent sees it
    # (``/proc/<pid>/root/...``, `sandbox._entry_left_behind`), a path `strace -P` resolves
    # into the one it faults and so cannot fault apart: there the child is refused either
    # way, as the run's (the stronger answer) or as maybe below one.
    namespaces = set()
    for pid, _ in ancestors:
        try:
            namespaces.add(os.stat(f"/proc/{pid}/ns/mnt").st_ino)
        except OSError:
            continue  # another user's (the machine's init)
    if len(namespaces) > 1:
        for name in failed:
            assert (
                "this process belongs to the test run through the process tree" in said[name]
                or "while a test run may be above this process (ancestor pid " in said[name]
            ), said[name]
        return
    for name, (error, ancestor) in failed.items():
        assert (
            "error: refused under pytest: loading profile 'production' while a test run may "
            f"be above this process (ancestor pid {ancestor}: "
        ) in said[name], said[name]
        assert (
            f"whose entry in the registry of test runs {sandbox.RUNS_DIR} this process (user "
            f"{os.getuid()}) cannot read: the read failed ({error}"
        ) in said[name], said[name]
        assert (
            f"Let this process read {sandbox.RUNS_DIR} and its entries: a tracer that injects "
            "faults (`strace --inject`) must keep to the calls the test means (`-P <the "
            "file>`, never the registry or a run's /proc/<pid>/fd), a process at its limit of "
            "open files needs a higher one (`ulimit -n`, `prlimit --nofile`)"
        ) in said[name], said[name]
