"""Red team 47 on the guard (branch rt-guard30): what else gives a process a /tmp of its own,
or takes the registry from under it, without a mount namespace of its own; and what the guard
writes and says given what a user names.

What broke (the first five: a process given production's settings alone that purged a
stopped production root, outside this suite's run, in a PID namespace of its own):

- ``chroot``: a child a test started under ``chroot`` (a jail with a ``/tmp`` of its own), and
  every process a test started after it ``chroot``-ed the run's own process, shared the run's
  mount namespace, so the registry was never read through an ancestor's ``/proc/<pid>/root``.
  What a process sees at ``/tmp`` now tells too;
- a tmpfs a test (as root) mounted on the run's own ``/tmp``, in the run's namespace; the
  registry moved aside with an empty one in its place; the registry removed (by this run's
  test or another run's beside it). The run now keeps descriptors of its registry and of its
  entry open, and a child reads a Python ancestor's entry through them where no path leads;
- a run given a command line longer than 1 MiB (thousands of node ids): its entry recorded
  every word, grew past what a reader reads, and read as no entry. It keeps the first words;
- a data root named with a terminal escape and a newline: the header and ``--app-strict``'s
  refusal acted on the terminal and printed a forged line, and the command line's errors the
  escape. They show such characters as text;
- a pytest on a test file named in bytes that are not UTF-8 was said to be retitled; such a
  byte in a profile's name or a setting was named as "U+DCE9 with no name" or a control
  character pasted from a web page. It is named as the byte, not UTF-8.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import forked_app
import forked_pytest
import pytest
from project_copy import copy_project_settings
from test_redteam_s24_guard import _inner_env
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s46_guard import (
    PURGE,
    RETITLE,
    _a_runner_script,
    _outside_any_run,
    checkout_in_tmp,
)

from app import sandbox

#: In the namespace: the directory that holds the settings and the test's (`$1`) at /mnt, a
#: /tmp of its own (the registry private: tests move it, rewrite the run's entry) that shows
#: the checkout and its interpreter again where they lie in /tmp (`$KEEP`), a jail that
#: shares every file but /tmp (a tmpfs of its own) where `$J` names one; then the runner in
#: `$2` (as /mnt shows it), run by `$3`, with the rest of the arguments.
#: Every bind is recursive (`--rbind`) and the old /tmp goes lazily (`umount -l`): the mount
#: namespace belongs to a user namespace of its own (`OWN_PROC`), so each mount it copied
#: from the workers' namespace is locked to its parent. A plain bind of a directory with such
#: a mount below it fails with EINVAL ("wrong fs type, bad option" on /tmp): another worker's
#: test mounts in that shared namespace below /tmp at any time (test_integrity.py's small
#: tmpfs in its sandbox), and a locked mount cannot be unmounted on its own. A script that
#: fails removes its directory in /run (the machine's) as it goes.
#: Where `$1` lies outside /tmp (a TMPDIR elsewhere: scripts/test's on /dev/shm), a tmpfs
#: goes over it too: it shows at /mnt alone, as it does from a /tmp hidden so.
OWN_TMP = """
old=$(mktemp -d /run/app-s47-tmp.XXXXXX) || exit 9
failed() { umount -l "$old" 2>/dev/null; rmdir "$old"; exit 9; }
mount --rbind /tmp "$old" || failed
mount --rbind "$1" /mnt && mount -t tmpfs none /tmp || failed
if [ -d "$1" ]; then mount -t tmpfs none "$1" || failed; fi
for keep in $KEEP; do mkdir -p "$keep" && mount --rbind "$old${keep#/tmp}" "$keep" || failed; done
umount -l "$old" && rmdir "$old" || exit 9
if [ -n "$J" ]; then
  mkdir -p "$J" && mount --rbind / "$J" && mount -t tmpfs none "$J/tmp" || exit 9
  for keep in $KEEP; do mkdir -p "$J$keep" && mount --rbind "$keep" "$J$keep" || exit 9; done
fi
cd "$2" && python="$3" && shift 3 || exit 9
"$python" ci.py -p no:cacheprovider -q -s -rE "$@"
"""


#: How a child that its run's entry keeps in the run is refused production (then where the
#: entry was read).
IN_THE_RUN = (
    r"CHILD 78 error: refused under pytest \(sandbox: \S+\): loading profile 'production'; "
    r"tests run on the 'testing' profile \(this process belongs to the test run through the "
    r"process tree \(an ancestor process, pytest pid \d+, registered in "
)


def _in_a_tmp_of_its_own(
    production: Path,
    settings: Path,
    tmp_path: Path,
    tests: str,
    *args: str,
    jail: bool = False,
    script: str = OWN_TMP,
) -> str:
    """`tests` (test_inner.py) run by a runner script under a /tmp of its own (`script`,
    `OWN_TMP` or one made from it), outside this suite's run, with production's settings at
    `$S`; its output."""
    if jail and checkout_in_tmp():
        # Its tests mount a tmpfs on the run's own /tmp, which hides an interpreter there.
        pytest.skip(f"{sys.prefix} lies under /tmp, which this test's tests mount over")
    (tmp_path / "test_inner.py").write_text(tests)
    _a_runner_script(tmp_path)
    (tmp_path / "tmp").mkdir()
    top = Path(os.path.commonpath([settings, tmp_path]))
    here = Path("/mnt") / tmp_path.relative_to(top)
    seen = Path("/mnt") / settings.relative_to(top)
    env = _inner_env(
        S=str(seen),
        APP_SETTINGS_DIR=str(seen),
        J=str(here / "jail") if jail else "",
        TMPDIR=str(here / "tmp"),
        KEEP=checkout_in_tmp(),
    )
    return _outside_any_run(
        production,
        ["sh", "-c", script, "sh", str(top), str(here), sys.executable, "test_inner.py", *args],
        env=env,
    )


#: A child under `chroot`; a tmpfs on the run's own /tmp for a while (its process retitled, as
#: setproctitle does); the registry moved aside
#: for a while, an empty one in its place; the registry removed; the registry made writable by
#: others; the run's own process jailed: each purges production.
JAILED = (
    PURGE.replace("[sys.executable", "[*pre, sys.executable").replace("purge():", "purge(pre=()):")
    + RETITLE
    + """
import shutil

def test_a_child_under_chroot():
    purge(["chroot", os.environ["J"]])

def test_a_tmpfs_on_the_runs_own_tmp_retitled():
    retitle()
    subprocess.run(["mount", "-t", "tmpfs", "none", "/tmp"], check=True)
    try:
        purge()
    finally:
        subprocess.run(["umount", "/tmp"], check=True)

def test_the_registry_moved_aside():
    sandbox.RUNS_DIR.rename("/tmp/saved")
    sandbox.RUNS_DIR.mkdir()
    try:
        purge()
    finally:
        sandbox.RUNS_DIR.rmdir()
        os.rename("/tmp/saved", sandbox.RUNS_DIR)

def test_the_registry_removed():
    shutil.rmtree(sandbox.RUNS_DIR)
    purge()

def test_the_registry_writable_by_others():
    os.chmod(sandbox.RUNS_DIR, 0o777)
    purge()

def test_the_run_chroots_itself():
    os.chroot(os.environ["J"])
    os.chdir("/")
    purge()
"""
)


def test_a_tmp_of_its_own_without_a_namespace_of_its_own_keeps_the_run(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    output = _in_a_tmp_of_its_own(production, settings, tmp_path, JAILED, jail=True)
    refusals = re.findall(
        IN_THE_RUN
        + rf"/proc/\d+/(root/tmp/app-pytest-runs-{os.getuid()}|fd/\d+(?=\)\))|fd/\d+, the "
        r"descriptor of its entry that it keeps open)\)\)",
        output,
    )
    # Read through the ancestor's root (a chroot), the registry it keeps open (a tmpfs, the
    # registry moved aside), or its entry it keeps open (the registry removed, or writable
    # by others, where another user could have written its entries, not what it holds).
    registry = f"root/tmp/app-pytest-runs-{os.getuid()}"
    kinds = [
        "entry" if "its entry" in how else "fd" if how.startswith("fd/") else how
        for how in refusals
    ]
    assert kinds == [
        registry,
        "fd",
        "fd",
        "entry",
        "entry",
        registry,
    ], output
    # The check after the test says where the registry went, and fails that test.
    assert (
        f"the registry /tmp/app-pytest-runs-{os.getuid()} is out of this process's sight: a "
        "test gave this process another /tmp (it chroot-ed it, or mounted another filesystem "
        "on /tmp); it was put back"
    ) in output, output
    assert "6 passed, 3 errors" in output, output


#: Holds a data root's lock (`argv[1]`) as a server of production would, until stdin closes.
HOLD = """
import sys
from pathlib import Path
from app.lock import RootLock
with RootLock(Path(sys.argv[1]), kind="server", profile="production").acquire("serve"):
    print("HELD", flush=True)
    sys.stdin.read()
"""


def test_a_data_roots_name_cannot_forge_the_header_or_a_refusal(tmp_path: Path) -> None:
    # A data root's name is whatever its directory was called: printed as it was, a newline
    # made a line of the header of its own, shown as the plugin's, and an escape sequence
    # acted on the terminal (here: red text), in the header and in strict mode's refusal.
    settings = copy_project_settings(tmp_path / "settings")
    real = tmp_path / "real\x1b[31m\napp: no live server"
    real.mkdir()
    (settings / "data").mkdir()
    (settings / "data" / "production").symlink_to(real)
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(real)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"HELD\n"
        env = _inner_env(APP_SETTINGS_DIR=str(settings))
        basetemp = f"--basetemp={tmp_path / 'basetemp'}"
        pytest_ = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", basetemp]
        done, strict = (
            forked_pytest.run([*pytest_, *flags, "test_nothing.py"], cwd=tmp_path, env=env)
            for flags in ([], ["--app-strict"])
        )
        holder.communicate(b"")
    # The command line's refusals show a root's escapes as text too: testing's, linked
    # there, is production's (layer 2's refusal).
    (settings / "data" / "testing").symlink_to(real)
    # Forked from the run's zygote (its start is not what this checks, its words are).
    status = forked_app.run(
        {**os.environ, "APP_SETTINGS_DIR": str(settings)}, ["--profile", "testing", "status"]
    )
    shown = str(real).replace("\x1b", "\\x1b").replace("\n", "\\n")
    header = [line for line in done.stdout.splitlines() if line.startswith("app: live server")]
    assert len(header) == 1, done.stdout
    assert header[0].startswith(f"app: live server on profile 'production' (pid {holder.pid}, ")
    assert header[0].endswith(f" at {shown}: tests will not touch it"), header
    assert "\x1b" not in done.stdout + strict.stderr, done.stdout + strict.stderr
    assert strict.returncode == 4, strict.stdout + strict.stderr
    assert strict.stderr.startswith(
        "ERROR: app: strict mode refuses to run while a live process holds a data root: "
        f"profile 'production' at {shown} held by pid {holder.pid}, kind server"
    ), strict.stderr
    assert strict.stderr.count("\n") == 2, strict.stderr  # the line, and pytest's blank one
    assert status.returncode == 78, status.stderr
    # Its escape, that is: the newline still splits its line (a table row, not stopped).
    assert "share the same data root: testing -> " + shown.split("\\n")[0] in status.stderr
    assert "\x1b" not in status.stderr, status.stderr


def test_a_command_line_of_bytes_that_are_not_utf8_is_not_read_as_retitled() -> None:
    # A pytest on a test file named in Latin-1 (`test_\xe9.py`): sys.argv holds the byte as
    # a surrogate, /proc as U+FFFD, and every refusal of its children said that a title had
    # been written over its command line (setproctitle), which nobody had.
    code = "import sys; print(flush=True); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", code, os.fsdecode(b"test_\xe9.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as child:
        assert child.stdout is not None
        child.stdout.readline()  # it runs: its command line is its own
        argv = sandbox._cmdline(child.pid)
        recorded = ["-c", os.fsdecode(b"test_\xe9.py")]  # its sys.argv
        said = sandbox._retitled(argv, {"argv": recorded})
        child.communicate(b"")
    assert argv[-1] == "test_\ufffd.py", argv
    assert said == "", said
    # A title written over it is still told.
    assert sandbox._retitled(["celery worker"], {"argv": recorded}).startswith(
        ", its command line rewritten since (a process title); it started as -c"
    )


#: A run given a long command line, whose child purges production; then the run's entry made
#: as long as an older release wrote it for such a run, and a child again.
LONG = (
    PURGE
    + """
import json

def test_a_long_command_line():
    purge()

def test_an_entry_as_long_as_an_older_release_wrote():
    entry = sandbox._own_entry()
    data = json.loads(entry.read_text())
    data["argv"] = sys.argv
    entry.write_text(json.dumps(data))
    purge()
"""
)


def test_a_run_with_a_command_line_longer_than_an_entry_keeps_its_children(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # A CI tool that shards a suite passes thousands of node ids (here: ten long ones,
    # quicker for pytest to parse): the entry recorded every word, grew past what a reader
    # reads (1 MiB), and the run's children took it for no entry at all. An entry now keeps
    # the first words of the command line, cut; one as long (an older release's) refuses.
    settings, production = stopped
    many = [f"--deselect=test_inner.py::test_{'x' * 120_000}_{n}" for n in range(10)]
    output = _in_a_tmp_of_its_own(production, settings, tmp_path, LONG, *many)
    assert re.search(
        IN_THE_RUN + rf"/tmp/app-pytest-runs-{os.getuid()}\)\)",
        output,
    ), output
    assert re.search(
        r"CHILD 78 error: refused under pytest: loading profile 'production' while a test run "
        r"may be above this process \(ancestor pid \d+: \S+ ci\.py -p no:cacheprovider -q -s "
        r"-rE test_inner\.py --deselect=\S+\.\.\.\), whose entry in the registry of test runs "
        rf"/tmp/app-pytest-runs-{os.getuid()} this process \(user {os.getuid()}\) cannot "
        r"read: it is longer than a run's entry \(\d+ bytes, more than 1048576\)\. Run the "
        r"tests with a release of the app whose runs keep their entries short",
        output,
    ), output


def test_a_byte_that_is_not_utf8_in_a_profile_or_a_root_is_named_as_a_byte() -> None:
    # Set in a shell of another encoding (Latin-1's é is the byte 0xE9), a profile was
    # refused as "written with U+DCE9 with no name", a data root as holding "a control
    # character (pasted from a web page?)": neither said what to fix.
    done = subprocess.run(
        [sys.executable, "-m", "app", "config"],
        env={**os.environ, "ENV_FOR_DYNACONF": os.fsdecode(b"producti\xe9on")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 78, done.stderr
    assert (
        "it is written with the byte 0xE9, which is not UTF-8 (set in a shell or a file of "
        "another encoding, such as Latin-1?), not plain ASCII, and only looks like "
        "'production'"
    ) in done.stderr, done.stderr
    from app import config

    assert config._unseen(os.fsdecode(b"/srv/donn\xe9es")) == (
        "contains a byte that is not text at position 9, the byte 0xE9, which is not UTF-8 "
        "(set in a shell or a file of another encoding, such as Latin-1?); remove it, or "
        "write it in UTF-8, where the value is set"
    )
