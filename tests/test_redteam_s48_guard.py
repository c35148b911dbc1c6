"""Red team 48 on the guard (branch rt-guard31): what a child keys its run on, and the run
its roots, read when it no longer says what it said as the run began, or not read at all.

What broke (each: a process given production's settings alone that purged a stopped
production root, outside this suite's run, under a runner script, in a PID namespace of its
own):

- a process that made a time namespace for its children (``unshare(CLONE_NEWTIME)``, its
  offsets written, then the app used in that same process): ``/proc/self/timens_offsets``
  gives the offsets its children get, not its own, so every ancestor's start time was
  shifted by them and no entry was found. Its own offsets are read where they are the
  children's of an ancestor; where none shows them, it is refused as unable to tell;
- a child in a time namespace whose boot-time offset is not a whole number of clock ticks
  (checkpoint and restore tools set it to the nanosecond): ``/proc`` shifts a start time
  before it cuts it to ticks, so an ancestor started late in its tick read one tick later
  than its entry's name. Both start times it may have are looked for now;
- the run's interpreter replaced on disk while it runs (Python upgraded in place by the
  system's packages during a long run), then the registry removed (a test of another run
  beside it: ``rm -rf /tmp/app-*``): ``/proc/<pid>/exe`` then ends in `` (deleted)``, the
  run was not taken for a Python process, and the descriptors it keeps open of its entry
  (red team 47) were not read;
- a data root that became a filesystem of its own after the run began (a volume mounted at
  its path, a restore onto a new disk, a tmpfs made anew), bound into the sandbox by a test
  that opted into its profile: the run knew the root's identity from its start, and a mount
  of a whole filesystem was not read as showing it from elsewhere. It is, where that
  filesystem is mounted elsewhere too. (Production's root is changed only in the test's own
  mount namespace, so it is checked there, not after.);
- a data root whose path goes through a link that a deploy switched while the run went on
  (``current`` -> ``blue``, then ``green``), bound into the sandbox by a test that opted into
  its profile: the run knew only where the link led as it began. A root's spelling is kept
  where a link leads there, and a mount is checked against where it leads now too; so is
  the same deploy made by binding a release over a directory on the root's way, by device
  and inode as each root is now;
- a process confined by Landlock (unprivileged) to an allow-list of paths that leaves
  ``/proc`` out, or allows its own entry alone (a worker a test sandboxes, as code that
  confines its workers does; or the run's own process, confining itself): it walked no
  ancestor and was outside any run. It is refused any profile but ``testing`` now, naming
  what it may not read and the fix; denied the registry alone, it was refused but told to
  ``chmod`` it, and is now told that a security policy denies it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import forked_app
import pytest
from project_copy import copy_project_settings
from test_redteam_s24_guard import _inner_env
from test_redteam_s31_guard import CREATE, stopped  # noqa: F401 - a fixture
from test_redteam_s46_guard import _a_runner_script, _outside_any_run
from test_redteam_s47_guard import IN_THE_RUN, OWN_TMP, _in_a_tmp_of_its_own
from test_server_e2e import app_env

from app import config as appconfig
from app import sandbox

#: `OWN_TMP`, the interpreter first replaced by a copy of itself (bound over it), which a
#: test removes as a system's upgrade of Python would.
REPLACED_PYTHON = OWN_TMP.replace(
    'cd "$2" && python="$3"',
    'exe=$(readlink -f "$3") && cp "$exe" /tmp/python-copy && mount --bind /tmp/python-copy '
    '"$exe" || exit 9\ncd "$2" && python="$3"',
)

#: Each test starts a child given production's settings alone, which purges production.
TESTS = r'''
import ctypes, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from app import sandbox

PURGE = ["-m", "app", "--profile", "production", "data", "purge", "--yes-i-mean-it"]
#: Makes a time namespace for this process's children, booted `$1` ns later; `$2`: then
#: `exec` the purge, `here` (in this process), or `orphan` (here, in a child left to the
#: run's subreaper, that makes another).
TIMENS = """
import ctypes, os, runpy, sys
def new_time_namespace(offset):
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.unshare(0x80) == 0, ctypes.get_errno()  # CLONE_NEWTIME
    with open("/proc/self/timens_offsets", "w") as offsets:
        offsets.write("boottime {} {}\\n".format(*divmod(offset, 10**9)))
new_time_namespace(int(sys.argv[1]))
if sys.argv[2] == "exec":
    os.execv(sys.executable, [sys.executable, *PURGE])
if sys.argv[2] == "orphan":
    parent = os.getpid()
    if os.fork():
        os._exit(0)
    while os.getppid() == parent:
        os.sched_yield()
    new_time_namespace(10**12)
sys.argv = ["app", *PURGE[2:]]
runpy.run_module("app", run_name="__main__")
""".replace("PURGE", repr(PURGE))

def child(*argv):
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": os.environ["S"]}
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True)
    print("CHILD", done.returncode, done.stdout + done.stderr)

def test_a_time_namespace_made_for_children_then_the_app_in_its_maker():
    child("-c", TIMENS, str(10**14), "here")

def test_a_time_namespace_offset_by_part_of_a_tick():
    child("-c", TIMENS, str(10**7 - 1), "exec")

def test_a_time_namespace_made_where_no_ancestor_shows_its_maker_s():
    child("-c", TIMENS, str(10**14), "orphan")

@pytest.mark.app_profile("production")
def test_a_volume_mounted_at_a_root_since_the_run_began_bound_into_the_sandbox(
    tmp_path_factory,
):
    root = Path(os.environ["S"]) / "current" / "production"
    copy = shutil.copytree(root, tmp_path_factory.mktemp("copy") / "root", symlinks=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(root)], check=True)
    # By `cp`: the run refuses Python's writes into a protected root in its own processes
    # (app.testing.python_writes); this tests the mount's check without that.
    subprocess.run(["cp", "-a", f"{copy}/.", str(root)], check=True)
    mapped = tmp_path_factory.getbasetemp() / "data" / "production"
    mapped.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(root), str(mapped)], check=True)
    done = subprocess.run([sys.executable, *PURGE], capture_output=True, text=True)
    print("CHILD", done.returncode, done.stdout + done.stderr)
    print("PRODUCTION", len(os.listdir(root / "sessions")), "SESSIONS")

@pytest.mark.app_profile("production")
def test_a_deploy_that_switches_a_link_on_a_root_s_way(tmp_path_factory):
    settings = Path(os.environ["S"])
    (settings / "next").symlink_to("green")
    os.replace(settings / "next", settings / "current")  # production lives in green now
    mapped = tmp_path_factory.getbasetemp() / "data" / "production"
    mapped.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(settings / "current" / "production"), str(mapped)],
                   check=True)
    done = subprocess.run([sys.executable, *PURGE], capture_output=True, text=True)
    print("CHILD", done.returncode, done.stdout + done.stderr)
    print("GREEN", len(os.listdir(settings / "green" / "production" / "sessions")), "SESSIONS")

@pytest.mark.app_profile("production")
def test_a_deploy_that_binds_a_release_over_a_root_s_way(tmp_path_factory):
    settings = Path(os.environ["S"])
    subprocess.run(["mount", "--bind", str(settings / "purple"), str(settings / "green")],
                   check=True)  # production lives in purple now, at green's path
    mapped = tmp_path_factory.getbasetemp() / "data" / "production"
    subprocess.run(["mount", "--bind", str(settings / "current" / "production"), str(mapped)],
                   check=True)
    done = subprocess.run([sys.executable, *PURGE], capture_output=True, text=True)
    print("CHILD", done.returncode, done.stdout + done.stderr)
    print("PURPLE", len(os.listdir(settings / "purple" / "production" / "sessions")), "SESSIONS")

def test_python_replaced_on_disk_then_the_registry_removed():
    os.unlink("/tmp/python-copy")
    assert os.readlink("/proc/self/exe").endswith(" (deleted)")
    shutil.rmtree(sandbox.RUNS_DIR)
    child(*PURGE)
'''


@pytest.fixture
def blue_green(tmp_path: Path) -> tuple[Path, Path]:
    """Settings whose production root lies through a link a deploy switches (``current`` ->
    ``blue``, then ``green``, a copy of it), and that root (blue's): no server."""
    settings = copy_project_settings(tmp_path / "settings")
    toml = settings / "settings.toml"
    toml.write_text(toml.read_text().replace('"data/production"', '"current/production"'))
    blue = settings / "blue" / "production"
    blue.parent.mkdir()
    (settings / "current").symlink_to("blue")
    env = app_env(blue, profile="production")
    forked_app.run_c(CREATE, env)
    for color in ("green", "purple"):
        shutil.copytree(blue, settings / color / "production", symlinks=True)
    return settings, blue


def test_a_child_keeps_its_run_and_its_roots_however_time_programs_or_mounts_change(
    blue_green: tuple[Path, Path], tmp_path: Path
) -> None:
    if not Path("/proc/self/ns/time").exists():
        pytest.skip("this kernel has no time namespaces (Linux 5.6 and later)")
    settings, production = blue_green
    output = _in_a_tmp_of_its_own(production, settings, tmp_path, TESTS, script=REPLACED_PYTHON)
    seen = Path("/mnt") / settings.relative_to(Path(os.path.commonpath([settings, tmp_path])))
    refusals = re.findall(IN_THE_RUN + r"(/\S+)", output)
    assert [where.startswith("/proc/") for where in refusals] == [False, False, True], output
    # (Its exit status is its parent's, which left it to the run.)
    assert (
        "error: refused under pytest: loading profile 'production' while this process "
        "cannot read the start times of its ancestors (it made a time namespace for its "
        "children, unshare(CLONE_NEWTIME), and no ancestor shows its own time namespace's "
        "offsets), so it cannot tell whether a test run is above it"
    ) in output, output
    assert "Use the app in a process started in the new time namespace (fork or exec after " in (
        output
    )
    # Production's root as the namespace shows it: its filesystem, bound into the sandbox;
    # then the root a link leads to since the run began.
    assert "PRODUCTION 1 SESSIONS" in output, output
    assert "GREEN 1 SESSIONS" in output, output
    assert "PURPLE 1 SESSIONS" in output, output
    assert re.search(
        r"CHILD 78 error: refused under pytest \(sandbox: \S+\): open data root "
        rf"\S+/data/production: it is another path to the data root of profile 'production' "
        rf"\({seen}/green/production\), or lies in it or holds it \(same device and inode",
        output,
    ), output
    mounted = (
        r"CHILD 78 error: refused under pytest \(sandbox: \S+\): open data root "
        r"\S+/data/production: it is (\S+), seen through a mount \(`findmnt -T \S+`\), and "
        r"that is, lies in or holds the data root of profile 'production' \(([^)]*)\)"
    )
    blue, green = (f"{seen}/{color}/production" for color in ("blue", "green"))
    moved = f"{green}, where {seen}/current/production leads now; it was {blue} as the run began"
    assert re.findall(mounted, output) == [(blue, blue), (green, moved)], output
    # The registry removed fails that test, at the check after it.
    assert "7 passed, 1 error" in output, output


#: A worker confined by Landlock (unprivileged), reading everything but one path (/proc,
#: or the registry), or but /proc with its own entry there allowed; then the purge. And the
#: run's own process confined so, as code that sandboxes itself does.
LANDLOCKED = r'''
import ctypes, os, struct, subprocess, sys
from app import sandbox

CONFINE = """
import ctypes, os, struct, sys
def confine(out, also=()):
    libc = ctypes.CDLL(None, use_errno=True)
    read = 4 | 8 | 8192  # READ_FILE, READ_DIR, REFER (a rename into .trash/)
    ruleset = libc.syscall(444, ctypes.c_char_p(struct.pack("Q", read)), 8, 0)
    assert ruleset >= 0, ctypes.get_errno()
    allowed, above = list(also), "/"
    for part in out.strip("/").split("/"):  # every other name on the way to `out`
        allowed += [os.path.join(above, n) for n in os.listdir(above) if n != part]
        above = os.path.join(above, part)
    for path in allowed:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:  # gone since the listing (another test's temporary file)
            continue
        rule = struct.pack("=Qi", read if os.path.isdir(path) else 4, fd)
        assert libc.syscall(445, ruleset, 1, ctypes.c_char_p(rule), 0) == 0, path
        os.close(fd)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.syscall(446, ruleset, 0) == 0, ctypes.get_errno()
"""
PURGE = ["-m", "app", "--profile", "production", "data", "purge", "--yes-i-mean-it"]

def child(*argv):
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": os.environ["S"]}
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True)
    print("CHILD", done.returncode, done.stdout + done.stderr)

def confined_worker(*how):
    purge = f"os.execv(sys.executable, [sys.executable, *{PURGE!r}])"
    child("-c", CONFINE + f"confine(*{how!r})\n" + purge)

def test_a_worker_that_may_not_read_proc():
    confined_worker("/proc")

def test_a_worker_that_may_read_its_own_proc_entry_alone():
    confined_worker("/proc", ["/proc/self"])

def test_a_worker_that_may_not_read_the_registry():
    confined_worker(str(sandbox.RUNS_DIR))

def test_a_worker_that_may_read_start_times_but_not_its_time_namespace_s():
    confined_worker("/proc", ["/proc/self/stat", f"/proc/{os.getpid()}/stat"])

def test_the_run_confines_itself():
    exec(CONFINE + "confine('/proc')", {})
    child(*PURGE)
'''


def test_a_process_that_may_not_read_proc_is_refused_other_profiles(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # Landlock, unprivileged since Linux 5.13 (ABI 2 for the rename into .trash/): a
    # process confined to an allow-list of paths that leaves /proc out walked no ancestor.
    if subprocess.run(
        [sys.executable, "-c", LANDLOCK_ABI], capture_output=True, check=False
    ).returncode:
        pytest.skip("this kernel offers no Landlock ABI 2 (Linux 5.19 and later)")
    settings, production = stopped
    (tmp_path / "test_inner.py").write_text(LANDLOCKED)
    _a_runner_script(tmp_path)
    (tmp_path / "tmp").mkdir()
    env = _inner_env(S=str(settings), APP_SETTINGS_DIR=str(settings), TMPDIR=str(tmp_path / "tmp"))
    argv = [sys.executable, "ci.py", "-p", "no:cacheprovider", "-q", "-s", "test_inner.py"]
    output = _outside_any_run(production, argv, cwd=tmp_path, env=env)
    said = re.findall(
        r"CHILD 78 error: refused under pytest: loading profile 'production' while this "
        r"process may not read (/proc/self|/proc/\d+ \(an ancestor\)): a Landlock ruleset, "
        r"or another security policy, denies it, so it cannot tell whether a test run is "
        r"above it\. Give the process read access to /proc \(add it to its Landlock ruleset",
        output,
    )
    assert [word.split(" ")[0].rstrip("0123456789") for word in said] == [
        "/proc/self",
        "/proc/",
        "/proc/self",
        "/proc/self",
    ], output
    # Denied the registry alone: as an entry it may not read, with a remedy for a policy.
    assert re.search(
        r"CHILD 78 error: refused under pytest: loading profile 'production' while a test run "
        r"may be above this process \(ancestor pid \d+: [^)]*\), whose entry in the registry "
        r"of test runs \S+ this process \(user \d+\) cannot read: Permission denied\. Give "
        r"this process read access to \S+ \(a Landlock ruleset, or another security policy, "
        r"denies it: add the registry to the paths it may read\)",
        output,
    ), output
    assert "5 passed" in output, output


#: Exits 0 where Landlock offers ABI 2 or later.
LANDLOCK_ABI = (
    "import ctypes, sys; "
    "sys.exit(ctypes.CDLL(None).syscall(444, None, 0, 1) < 2)"  # VERSION
)


def test_a_root_under_a_settings_directory_reached_through_a_link_moves_with_the_link(
    tmp_path: Path,
) -> None:
    # A deploy's `current` link to a release holds the settings (APP_SETTINGS_DIR), and a
    # root relative to them: the settings directory is resolved, so the root was kept only
    # where the link led as the run began, and a deploy that switched it mid-run moved
    # production's root out of what the run checks a mount against.
    releases = [copy_project_settings(tmp_path / "releases" / str(n)) for n in (1, 2)]
    current = tmp_path / "current"
    current.symlink_to(releases[0])
    env = {**os.environ, "APP_SETTINGS_DIR": str(current)}
    spelled = appconfig.configured_roots(None, env, resolved=False)["production"][0]
    resolved = appconfig.configured_roots(None, env)["production"][0]
    assert (spelled, resolved) == (
        current / "data" / "production",
        releases[0] / "data" / "production",
    )
    kept = sandbox.Protected.of("production", resolved, spelled)
    (tmp_path / "next").symlink_to(releases[1])
    (tmp_path / "next").replace(current)
    assert kept.paths_now() == (resolved, releases[1] / "data" / "production")
