"""Red team 74 on the guard (branch rt-guard74): see docs/explanation/attacks/layer-3-sandbox.md.

What broke: the suite's own clean-ups of its throwaway engines' directories went on into a
filesystem mounted in them. A test (run as root) that bound a stopped production root into
its run's PostgreSQL cluster directory (``postgres_engine.base``, in ``/dev/shm``, outside the
sandbox) to look at it beside the cluster's files had it emptied whole, its stamp and lock
file with it, by the cluster's stop at the run's end, and the run passed; a next run's
clean-up of a killed run's cluster did the same, and so did ``scripts/test``'s ``rm -rf`` of an
environment it makes afresh. ``tests/engines.py`` (``remove_own_tree``) and
``scripts/environments.sh`` (``remove_env``) now remove each of their directories only where
nothing is mounted at it or in it, and otherwise keep it and say which mount, what it shows
and what to run. And a place the suite writes outside the sandbox before the plugin looks:
``.pytest_children_pycache`` planted as a link to a stopped production root took the next
run's seeded bytecode links and their mark (``tests/conftest.py``); a link there, or a mount
at it or in it, is refused first now (``children_bytecode.refusal``).

All real: a bind mount in a mount namespace of the test's own, the engines' own stop and
clean-up (a ``weed`` that has exited, a cluster directory whose owner is gone).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import own_mounts
import pytest

#: In a mount namespace of its own (`own_mounts`): a directory with a file bound into a
#: weed's directory, into a killed run's cluster directory and into an environment that
#: scripts/test removes, each clean-up run; then the place the children's bytecode goes
#: (CHILDREN_BYTECODE) planted as a link to it, and with it bound in, each looked at.
_BOUND = """
import os, subprocess, sys, tempfile, warnings
from pathlib import Path
sys.path.insert(0, TESTS)
import engines
tmp = Path(sys.argv[1])
shown = tmp / "production"
(shown / "sessions").mkdir(parents=True)
(shown / "sessions" / "session.json").write_text("{}")

def bind(base):
    (base / "view").mkdir()
    subprocess.run(["mount", "--bind", str(shown), str(base / "view")], check=True)

weed = Path(tempfile.mkdtemp(prefix="seaweedfs", dir=tmp))
bind(weed)
exited = subprocess.Popen(["true"])
exited.wait()
try:
    engines.S3Engine(exited, weed, "http://127.0.0.1:1").stop()
except RuntimeError as error:
    print(error)
print("stop", sorted(os.listdir(shown / "sessions")))

tempfile.tempdir = str(tmp)  # where the clean-up looks, beside /dev/shm
dead = tmp / (engines._CLUSTER_PREFIX + "dead")
dead.mkdir()
(dead / engines._OWNER).write_text(
    os.readlink("/proc/self/ns/pid") + " " + str(os.getpid()) + " 0"
)
bind(dead)
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    engines._remove_clusters_of_dead_runs()
print(*[str(w.message) for w in said], sep="\\n")
print("clean-up", sorted(os.listdir(shown / "sessions")))

# scripts/test's removal of an environment it makes afresh, in a project whose path has a
# blank: the mount table spells it `\\040`, and the path as spelled matched no mount (red
# team 74 on regress).
venv = tmp / "a project" / ".venv"
venv.mkdir(parents=True)
bind(venv)
removal = subprocess.run(
    ["bash", "-c", 'source scripts/environments.sh && remove_env "$1"', "test", str(venv)],
    cwd=Path(TESTS).parent, capture_output=True, text=True,
)
print(removal.returncode, removal.stderr.strip())
print("remove_env", sorted(os.listdir(shown / "sessions")))

import children_bytecode  # the place the run's children keep their bytecode, planted
linked = tmp / "linked"
linked.symlink_to(shown)
print(children_bytecode.refusal(linked))
prefix = tmp / "prefix"
prefix.mkdir()
bind(prefix)
print(children_bytecode.refusal(prefix))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="makes a bind mount (root)"
)
def test_the_suite_s_clean_ups_keep_a_directory_with_a_mount_in_it(tmp_path: Path) -> None:
    code = _BOUND.replace("TESTS", repr(str(Path(__file__).parent)))
    done = own_mounts.python_c(code, str(tmp_path))
    lines = done.stdout.splitlines()
    weed = next(p for p in tmp_path.iterdir() if p.name.startswith("seaweedfs"))
    dead = tmp_path / "app-pg-dead"
    # Before: "stop []" and "clean-up []", the bound directory emptied by each.
    assert lines == [
        _kept(weed, "this run's S3 server (weed)", tmp_path / "production"),
        "stop ['session.json']",
        _kept(dead, "a killed run's PostgreSQL cluster", tmp_path / "production"),
        "clean-up ['session.json']",
        _kept_env(tmp_path / "a project" / ".venv"),
        "remove_env ['session.json']",
        (
            f"it is a symbolic link to {tmp_path}/production, not a directory of the project's "
            f"own. Remove the link (`rm {tmp_path}/linked`, without a trailing slash, which "
            "would remove what it leads to), then run again"
        ),
        (
            f"a filesystem is mounted in it at {tmp_path}/prefix/view (`findmnt "
            f"{tmp_path}/prefix/view` names what it shows), and the run's processes would "
            f"write their bytecode into whatever it shows. Unmount it (`umount "
            f"{tmp_path}/prefix/view`), then run again"
        ),
    ], done.stdout + done.stderr


def _kept(base: Path, what: str, shown: Path) -> str:
    return (
        f"tests/engines.py kept {base}, the directory of {what}, instead of removing it: a "
        f"filesystem is mounted inside it at {base}/view, which shows {shown}, and the removal "
        "would go on into the mount and empty what it shows (a data root bound there is "
        f"emptied whole). Unmount it (`umount {base}/view`; `findmnt {base}/view` names what it "
        f"shows), then remove the directory (`rm -rf {base}`)"
    )


def _kept_env(venv: Path) -> str:
    view = str(venv / "view").replace(" ", "\\ ")  # as bash's `printf %q` quotes it
    return (
        f"1 test: kept {venv} instead of removing it: a filesystem is mounted in it at "
        f"{view} (1 mount(s) in all; `findmnt {view}` names what it shows), and rm "
        "-rf would go on into the mount and empty what it shows. Unmount each (umount "
        f"{view}), then run test again"
    )
