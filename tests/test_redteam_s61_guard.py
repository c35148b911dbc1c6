"""Red team 61 on the guard (branch rt-guard61): the data root behind a name, through a link
of ``/proc`` that this process may not follow.

What broke (as root without ``CAP_SYS_PTRACE``, as an operator who is not root is: a link of
``/proc`` to another user's process, ``/proc/<pid>/root`` or ``cwd``, may be read only by
that user, while the process is dumpable, or with that capability; here a process of user
65534):

- outside any run (a PID namespace with its own ``/proc``), beside a stopped production root
  and a live one: ``APP_DATA_ROOT=/proc/<pid>/root/<production's root>`` (or ``cwd``), meant
  for a container's own data as red team 59's was, and ``APP_SETTINGS_DIR`` so spelled.
  Nothing was changed (the kernel lets nothing through), but ``app.config.load()`` and
  ``open_storage`` ended in a bare ``PermissionError`` traceback, and every command (``app
  data purge``, ``app data empty-trash``, ``app serve``) said "the data root's filesystem
  refused it ... a file or directory in the data root is immutable ... `chattr -i -a`,
  `chown`", naming ``/proc/<pid>/root`` as the data root (exit 74): a fix for a root never
  opened. A `Config` made by hand with such a root ended in the same traceback where red team
  32's refusal of a root through ``/proc`` meant to name it;
- inside a run (a test's child): the same root in a test's `Config` was a ``PermissionError``
  from the sandbox's check, and so was every load under ``PYTEST_APP_SANDBOX`` so spelled;
  ``pytest --junitxml=/proc/<pid>/root/...``, and any pytest started with ``APP_DATA_ROOT``
  so spelled in its shell, a traceback from the plugin before any test (its check of what
  pytest writes; its reading of the shell's root, to protect it).

A pytest started outside any run with ``PYTEST_APP_SANDBOX`` so spelled left in its shell
ended in a ``PermissionError`` traceback through the plugin (and with ``/`` or a relative
path, a ``SandboxViolationError`` traceback); it is now refused as a usage error (exit 4),
naming the variable and ``unset PYTEST_APP_SANDBOX``.

Beside it: ``APP_DATA_ROOT=/proc/<pid>/cwd`` of a process whose current directory was
removed (its link reads ``<path> (deleted)``) was refused, but as "a link of /proc ... into
another mount namespace, a container's", which it is not. It is now named a directory that
was removed, which a process still has, and to name one that exists.

What changed: a path setting (and ``APP_SETTINGS_DIR``) that passes through a link this
process may not read is refused (``invalid_setting`` or ``settings_not_found``, exit 78),
naming the link, the process (its pid, command and user), this process's user, who may
follow it, and to name the directory as this machine sees it. The sandbox refuses such a
root as naming no directory of the sandbox; the check of pytest's writes refuses the path
as one through ``/proc``, as red team 31 made it for links it can read; a `Config` made by
hand is refused as red team 32's ``data_root_state``. The plugin protects a shell's root so
spelled as written, and a narrowing of the sandbox through such a link narrows nothing (it
names no directory of the sandbox; the sandbox is never widened).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import assert_untouched, stopped_production, stopped_then_live
from test_redteam_s59_guard import COMMON as S59_COMMON
from test_redteam_s59_guard import _results

#: A process of user 65534 that this one, without CAP_SYS_PTRACE, may not look into; its
#: current directory `directory` (argv's first). Its pid, once it runs as that user.
OTHER_USER = r"""
import dataclasses, signal
def other_user(directory):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.chdir(directory)
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        os.write(write, b"x")
        signal.pause()
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"x"
    return pid


def said(e):
    return [type(e).__name__, " ".join(str(e).split())]


def writer(config=None, **env):
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with open_storage(config or load(serving=False), writer=True):
            return [0, "opened"]
    except Exception as e:
        return said(e)
    finally:
        os.environ.clear()
        os.environ.update(saved)
"""

#: PID 1 of a PID namespace with its own /proc (outside any run), without CAP_SYS_PTRACE.
#: argv: the settings directory, production's root (stopped; served once it says STOPPED,
#: until it reads a line).
OUTSIDE = (
    S59_COMMON
    + OTHER_USER
    + r"""
settings, production = map(Path, sys.argv[1:3])
other = other_user(production.parent)
through = f"/proc/{other}/root{production}"
purge = ["data", "purge", "--yes-i-mean-it"]
results = {"other": other}


def attempts(stage):
    there = {"APP_DATA_ROOT": through}
    results[stage + "PURGE"] = run(["--profile", "production", *purge], **there)
    results[stage + "WRITER"] = writer(ENV_FOR_DYNACONF="production", **there)
    if stage == "LIVE_":  # the same refusal, not the holder's: the path names no root here
        return
    results[stage + "TRASH"] = run(
        ["--profile", "production", "data", "empty-trash", "--yes-i-mean-it"], **there)
    results[stage + "SERVE"] = run(["--profile", "production", "serve", "--port", "0"], **there)
    results[stage + "CWD"] = run(["--profile", "development", *purge],
                                 APP_DATA_ROOT=f"/proc/{other}/cwd/{production.name}")
    results[stage + "SETTINGS"] = run(["--profile", "production", *purge],
                                      APP_SETTINGS_DIR=f"/proc/{other}/root{settings}")
    made = dataclasses.replace(load("production", serving=False), data_root=Path(through))
    results[stage + "BY_HAND"] = writer(made)


attempts("STOPPED_")
# A process whose current directory was removed: its /proc link reads "<path> (deleted)".
removed = settings.parent / "removed"
removed.mkdir()
read, write = os.pipe()
gone = os.fork()
if gone == 0:
    os.chdir(removed)
    os.rmdir(removed)
    os.write(write, b"x")
    signal.pause()
    os._exit(0)
os.close(write)
assert os.read(read, 1) == b"x"
results["REMOVED"] = run(["--profile", "development", *purge], APP_DATA_ROOT=f"/proc/{gone}/cwd")
os.kill(gone, signal.SIGKILL)
# A pytest started outside any run, PYTEST_APP_SANDBOX left in its shell naming no sandbox.
done = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
    env={**os.environ, "PYTEST_APP_SANDBOX": f"/proc/{other}/root{settings.parent}"},
    cwd=settings.parent, capture_output=True, text=True)
results["PYTEST"] = [done.returncode, " ".join((done.stdout + done.stderr).split())]
print("STOPPED", flush=True)
sys.stdin.readline()  # the test has started a server on production's root meanwhile
attempts("LIVE_")
os.kill(other, signal.SIGKILL)
print("RESULTS", json.dumps(results))
"""
)

#: A test's child (inside the run), without CAP_SYS_PTRACE. argv: a directory of the sandbox.
INSIDE = (
    S59_COMMON
    + OTHER_USER
    + r"""
work = Path(sys.argv[1])
other = other_user(work)
through = f"/proc/{other}/root{work}"
results = {"other": other}
os.environ["APP_DATA_ROOT"] = f"{through}/root"
try:
    load()
    results["LOAD"] = [0, "loaded"]
except Exception as e:
    results["LOAD"] = said(e)
# What the plugin reads of a shell's APP_DATA_ROOT as it starts, to protect it.
from app.config import configured_roots
try:
    results["SHELL_ROOT"] = str(configured_roots("testing")["testing"][0])
except Exception as e:
    results["SHELL_ROOT"] = said(e)
del os.environ["APP_DATA_ROOT"]
os.environ["PYTEST_APP_SANDBOX"], sandbox = f"{through}/narrowed", os.environ["PYTEST_APP_SANDBOX"]
try:
    results["NARROWED"] = str(load(serving=False).data_root)
except Exception as e:
    results["NARROWED"] = said(e)
os.environ["PYTEST_APP_SANDBOX"] = sandbox
made = dataclasses.replace(load(serving=False), data_root=Path(f"{through}/root"))
results["BY_HAND"] = writer(made)
(work / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
done = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
     f"--junitxml={through}/report.xml", "test_nothing.py"],
    cwd=work, capture_output=True, text=True)
results["JUNITXML"] = [done.returncode, " ".join((done.stdout + done.stderr).split())]
os.kill(other, signal.SIGKILL)
print("RESULTS", json.dumps(results))
"""
)

#: What this process may do without CAP_SYS_PTRACE: as an operator who is not root.
NO_PTRACE = ["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace"]


def _needs_tools() -> None:
    if os.geteuid() != 0 or any(shutil.which(t) is None for t in ("unshare", "setpriv")):
        pytest.skip("needs root, unshare and setpriv to drop CAP_SYS_PTRACE")


def _unfollowable(link: str, out: str, said: str) -> None:
    """That `out` refuses a path through `link`, naming who may follow it and what to do."""
    pid = link.split("/")[2]
    assert f"passes through {link}, a link of /proc to what process {pid} (python" in out, said
    assert (
        ", user nobody) has, which this process (user root) may not follow: the kernel shows "
        "it only to that process's own user, while the process is dumpable, and to a holder "
        "of CAP_SYS_PTRACE, so the path names no directory here; name the directory as this "
        "machine sees it"
    ) in out, said


def test_a_root_through_a_proc_link_this_user_may_not_follow_is_refused_outside_any_run(
    tmp_path: Path,
) -> None:
    _needs_tools()
    settings, production, token, sessions = stopped_production(tmp_path)
    seen = stopped_then_live(OUTSIDE, settings, production, token, tuple(NO_PTRACE))
    said = json.dumps(seen, indent=1)
    assert_untouched(production, sessions, said)
    other = seen["other"]
    root, cwd = f"/proc/{other}/root", f"/proc/{other}/cwd"
    # Before the fix: exit 74, "the data root's filesystem refused it ... `chattr -i -a`",
    # and a PermissionError traceback from load() and from open_storage.
    for stage in ("STOPPED_", "LIVE_"):
        kind, out = seen[stage + "WRITER"]
        assert kind == "InvalidSettingError", said
        _unfollowable(root, out, said)
    for stage, tag, profile, link in [
        ("STOPPED_", "PURGE", "production", root),
        ("LIVE_", "PURGE", "production", root),
        ("STOPPED_", "TRASH", "production", root),
        ("STOPPED_", "SERVE", "production", root),
        ("STOPPED_", "CWD", "development", cwd),
    ]:
        code, out = seen[stage + tag]
        assert code == 78, said
        assert out.startswith(f"error: profile {profile!r}: data_root = '{link}/"), said
        assert f"(from environment APP_DATA_ROOT): passes through {link}," in out, said
        _unfollowable(link, out, said)
        assert "chattr" not in out, said
    code, out = seen["STOPPED_SETTINGS"]
    assert code == 78, said
    assert out.startswith(
        f"error: no settings.toml found: looked in {root}{settings} (from "
        f"APP_SETTINGS_DIR; it passes through {root}, "
    ), said
    _unfollowable(root, out, said)
    # Before the fix: refused as "a link of /proc ... into another mount namespace, a
    # container's", of a directory that was removed.
    code, out = seen["REMOVED"]
    assert code == 78, said
    assert (
        f"leads through /proc/{out.split('/proc/')[1].split('/')[0]}/cwd to a directory that "
        f"was removed (it reads {settings.parent}/removed (deleted)): a process still has it"
    ) in out, said
    assert "mount namespace" not in out, said
    # Before the fix: a PermissionError traceback through the plugin, then (with the fix of
    # the sandbox's reading alone) a SandboxViolationError traceback, as for `/` or a
    # relative path.
    code, out = seen["PYTEST"]
    assert code == 4, said
    assert "Traceback" not in out, said
    assert (
        f"ERROR: app: refusing to run: refused under pytest: PYTEST_APP_SANDBOX='/proc/{other}"
        f"/root{settings.parent}' is not a test sandbox."
    ) in out, said
    assert "(in this shell: `unset PYTEST_APP_SANDBOX`, then run pytest again)" in out, said
    kind, out = seen["STOPPED_BY_HAND"]
    assert kind == "DataRootStateError", said
    assert f"the path passes through {root}, a link of /proc" in out, said
    assert "(this one leads nowhere this process may follow)" in out, said


def test_a_root_or_a_report_through_a_proc_link_not_followed_is_refused_in_a_run(
    tmp_path: Path,
) -> None:
    _needs_tools()
    done = subprocess.run(
        [*NO_PTRACE, sys.executable, "-c", INSIDE, str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    seen = _results(done)
    said = json.dumps(seen, indent=1)
    other = seen["other"]
    root = f"/proc/{other}/root"
    kind, out = seen["LOAD"]
    assert kind == "InvalidSettingError", said
    # A setting's value is cut to its first 100 characters in a message (app/config.py's
    # `_shortened`): so is this one where the temporary directory's path is long (/dev/shm's
    # under scripts/test, with a pid of 7 digits).
    value = f"{root}{tmp_path}/root"
    shown = value if len(value) <= 100 else f"{value[:100]}... ({len(value)} bytes)"
    assert f"profile 'testing': data_root = '{shown}'" in out, said
    _unfollowable(root, out, said)
    # Before the fix: PermissionError from the plugin's reading of a shell's APP_DATA_ROOT
    # (every pytest started with it), from a load under a PYTEST_APP_SANDBOX so spelled, and
    # from the sandbox's check; a traceback from the plugin's check of pytest's writes.
    assert seen["SHELL_ROOT"] == f"{root}{tmp_path}/root", said
    assert seen["NARROWED"].startswith(os.environ["PYTEST_APP_SANDBOX"]), said
    kind, out = seen["BY_HAND"]
    assert kind == "SandboxViolationError", said
    assert (
        f"open data root {root}{tmp_path}/root, which passes through {root}, a link of "
        "another user's process (or of one that is not dumpable) that this process may not "
        "follow, so it names no directory of the test sandbox"
    ) in out, said
    code, out = seen["JUNITXML"]
    assert code != 0, said
    assert "Traceback" not in out, said
    assert (
        f"app: refusing to run: pytest's --junitxml rewrites {root}{tmp_path}/report.xml as "
        f"the run ends, which passes through {root}: it names what a process has open"
    ) in out, said
    assert not (tmp_path / "report.xml").exists(), said
