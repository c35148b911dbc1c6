"""Red team 55 on the guard (branch rt-guard38): the sandbox's own walks of directory trees,
path settings spelled for another system, and a conftest's own factory of temporary
directories.

What broke (pytest or the app in a subprocess, the app's plugin active, real directories):

- Python 3.11's ``os.walk`` recurses once per level (3.12 made it iterative). Every walk of
  the plugin went through it: the look for data roots in an existing ``--basetemp`` before
  pytest empties it, for links and hard links in pytest's cache (at the start and again as
  the run ends), for a data root under what pytest deletes, for another name of a file in a
  data root, and for lock files in pytest's old numbered directories. A directory tree deeper
  than Python's stack (1,100 levels under the default limit: a test's ``tmp_path`` kept by
  ``--basetemp``, a tool's cache, a ``mkdir`` in a loop) in any of them made the check a
  ``RecursionError`` traceback: a run with such a ``--basetemp`` ended before any test, and
  one with such a tree in ``.pytest_cache`` never started either, every run, until someone
  found the tree; and ``os.walk`` leaves out what it cannot list without a word: a stamped
  production root below a path longer than the system's limit in a ``--basetemp`` was never
  seen, and pytest's emptying (relative to descriptors) removed it;
- ``data_root = "file:///srv/app/data"``, ``"data%2Fdevelopment"`` or ``"data\\testing"``
  was taken as a relative path under the settings directory (``<settings>/file:/srv/...``):
  a new, empty root beside the one meant, which ``app serve`` created and served;
- a settings file with a value nested 400 levels deep made every command a
  ``RecursionError`` traceback (2,000 levels: in ``tomllib`` itself);
- a file in this user's registry of runs named as a dead run's entry, holding JSON nested
  5,000 deep: every later pytest run of the user read it as it started, and ``json.loads``
  raised ``RecursionError``, a traceback before any test;
- a conftest's ``tmp_path_factory`` fixture returning a ``TempPathFactory`` given production's
  ``sessions/`` was refused as ``refusing --basetemp <dir>`` in a run given no
  ``--basetemp``, with a traceback through the guard's frames (red team 54 saw it).

What changed: every walk of the guard goes through ``app.dataroot.walk_tree``, ``os.walk``
with a list of its own (no depth bound). Where a ``--basetemp`` holds a tree deeper than
pytest's own emptying can go (``shutil.rmtree`` recurses too), the run is refused before
pytest starts it, naming the tree, its depth and ``rm -rf`` on the directory; a tree that deep
in pytest's cache, which pytest never deletes unasked, is walked and the run goes on; a
directory of a ``--basetemp`` the walk cannot list refuses it, naming the error. A path
setting written as a URL, with a URL's escapes or with ``\\`` is ``invalid_setting`` (exit
78), naming what to write; a settings file nesting more than 32 levels is
``settings_syntax``. The registry's readers use ``app.errors.json_loads`` (too deep
is damage, a ``ValueError``). A factory made in code is refused in its own words, failing the
test that asked for ``tmp_path`` alone, without a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import forked_app
import pytest
from project_copy import PROJECT, copy_project_settings
from test_redteam_s24_guard import _inner_env

#: The inner runs' recursion limit, lowered from Python's 1,000 for time (each level is a
#: directory made and walked several times); by hand, 1,100 levels under the default limit
#: failed alike.
LIMIT = 300
#: Deeper than ``os.walk`` or ``shutil.rmtree`` can go under that limit.
DEPTH = 350

#: pytest, under the lowered limit (a runner that calls ``pytest.main``, as the plugin obeys).
RUN = f"import sys; sys.setrecursionlimit({LIMIT}); import pytest; sys.exit(pytest.main())"

A_TEST = """
def test_scratch(tmp_path):
    (tmp_path / "made").write_text("x")
"""


def _deep_tree(top: Path, depth: int = DEPTH) -> Path:
    """A chain of `depth` directories ``d`` under `top`, made relative to each one's
    descriptor (no path grows past the system's limit); its deepest directory."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
    finally:
        os.close(fd)
    return top.joinpath(*["d"] * depth)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project_settings(tmp_path_factory.mktemp("settings"))


def _pytest(settings: Path, cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", RUN, "-q", "-p", "no:randomly", *args],
        cwd=cwd,
        env=_inner_env(APP_SETTINGS_DIR=str(settings)),
        capture_output=True,
        text=True,
        check=False,
    )
    return done, done.stdout + done.stderr


def test_a_basetemp_holding_a_tree_deeper_than_python_s_stack_is_refused_in_words(
    settings: Path, tmp_path: Path
) -> None:
    (tmp_path / "test_scratch.py").write_text(A_TEST)
    basetemp = tmp_path / "kept"
    _deep_tree(basetemp / "test_scratch0" / "cache")
    done, out = _pytest(settings, tmp_path, "-p", "no:cacheprovider", f"--basetemp={basetemp}")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert "Traceback" not in out, out
    assert "maximum recursion depth" not in out, out
    said = f"app: refusing --basetemp {basetemp}: it holds a directory tree {DEPTH + 2} levels"
    assert said in out, out
    assert "pytest empties the --basetemp before the run with shutil.rmtree" in out, out
    assert f"remove it yourself (rm -rf {basetemp}), or give another --basetemp" in out, out
    # Refused before pytest emptied anything: the tree is there as it was.
    assert (basetemp / "test_scratch0" / "cache" / "d").is_dir()


def test_a_data_root_written_as_a_url_or_a_value_nested_too_deep_is_refused(
    tmp_path: Path,
) -> None:
    # Production's root copied from a browser's address bar, development's escaped for a
    # URL: each was taken as a relative path, a new, empty root under the settings directory
    # beside the one meant (`<settings>/file:/srv/app/data`), which `app serve` created.
    settings = copy_project_settings(tmp_path / "settings")
    text = (settings / "settings.toml").read_text()
    text = text.replace('data_root = "data/production"', 'data_root = "file:///srv/app/data"')
    text = text.replace('data_root = "data/development"', 'data_root = "data%2Fdevelopment"')
    text = text.replace('data_root = "data/testing"', 'data_root = "data\\\\testing"')
    (settings / "settings.toml").write_text(text)
    # Forked from the run's zygote (tests/forked_app.py): the settings are read as the
    # command loads them, not as the interpreter starts.
    done = forked_app.run_inner(_inner_env(APP_SETTINGS_DIR=str(settings)), ["config"])
    out = done.stdout + done.stderr
    assert done.returncode == 78, out
    assert "Traceback" not in out, out
    # (The directory it would have been is cut at 100 characters in a message.)
    assert (
        "profile 'production': data_root = 'file:///srv/app/data' (from settings.toml "
        "[production]): is written as a file:// URL, but a path setting takes a path: the app "
        f"takes it as written, so this root would be {str(settings)[:60]}"
    ) in out, out
    assert "beside the one meant; write the path alone: '/srv/app/data'" in out, out
    assert (
        "profile 'development': data_root = 'data%2Fdevelopment' (from settings.toml "
        "[development]): holds '%2F', a URL's escape of '/', which the app does not decode"
    ) in out, out
    assert "write the path with the character itself: 'data/development'" in out, out
    assert (
        "profile 'testing': data_root = 'data\\\\testing' (from settings.toml [testing]): "
        "holds '\\', the separator of Windows' paths, which is a character of a name here"
    ) in out, out
    assert "write '/' instead: 'data/testing'" in out, out
    assert not (settings / "file:").exists()
    # And a value nested deeper than any setting (a generated file, say): 400 levels parsed,
    # then every command was a RecursionError traceback.
    toml = settings / "settings.toml"
    # (By hand, 2,000 levels: "a value nests deeper than Python's stack lets the parser read".)
    for depth, said in ((400, "the value of [deep] extra nests more than 32 levels deep"),):
        toml.write_text(f"{text}\n[deep]\nextra = {'[' * depth}1{']' * depth}\n")
        done = forked_app.run_inner(_inner_env(APP_SETTINGS_DIR=str(settings)), ["config"])
        out = done.stdout + done.stderr
        assert done.returncode == 78, out
        assert f"{toml}: invalid TOML: {said}" in out, out
        assert "write that value flat, or remove it" in out and "Traceback" not in out, out


#: A suite that makes its own factory of temporary directories, in one fixed place.
OWN_FACTORY = """
import pytest


@pytest.fixture(scope="session")
def tmp_path_factory(request):
    return pytest.TempPathFactory(
        given_basetemp="{given}",
        retention_count=3,
        retention_policy="all",
        trace=request.config.trace.get("tmpdir"),
        _ispytest=True,
    )
"""


def _stamped_past_path_max(top: Path) -> None:
    """A production root (stamped) below `top` at a path longer than PATH_MAX (17 names of
    243 bytes), made relative to each directory's descriptor."""
    top.mkdir(parents=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(17):
            name = f"n{level:02d}" + "x" * 240
            os.mkdir(name, dir_fd=fd)
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        os.mkdir("root", dir_fd=fd)
        stamp = os.open("root/.app-profile.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(stamp, b'{"profile": "production", "created_at": "2026-01-01T00:00:00Z"}')
        os.close(stamp)
    finally:
        os.close(fd)


def test_a_stamped_root_past_the_system_s_path_limit_in_a_basetemp_is_refused(
    settings: Path, tmp_path: Path
) -> None:
    # os.walk leaves out a directory it cannot list, without a word: a production root
    # below a path longer than PATH_MAX in a --basetemp was never seen, and pytest's
    # emptying, which works relative to each directory's descriptor, removed it.
    (tmp_path / "test_scratch.py").write_text(A_TEST)
    basetemp = tmp_path / "kept"
    _stamped_past_path_max(basetemp)
    done, out = _pytest(settings, tmp_path, "-p", "no:cacheprovider", f"--basetemp={basetemp}")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, out
    # (The directory is cut in the middle in the message.)
    assert f"app: refusing --basetemp {basetemp}: it holds {str(basetemp)[:40]}" in out, out
    assert (
        "which cannot be looked through for a data root (File name too long: its path is "
        "longer than the system's limit), and pytest empties the --basetemp, all of it, "
        f"before the run. Look at what it holds yourself, and remove it (rm -rf {basetemp})"
    ) in out, out
    assert (basetemp / ("n00" + "x" * 240)).is_dir()  # nothing emptied
    # The same in what pytest deletes otherwise (`--cache-clear`'s `v/`), checked in this
    # process on the same kind of tree (an inner run costs a second).
    from app.testing import writes

    cache = tmp_path / "cache"
    _stamped_past_path_max(cache / "v" / "long")
    found = writes._data_root_inside(cache / "v")
    assert found is not None
    assert found[1] == "cannot be looked through for a data root (File name too long)", found


def test_a_deep_tree_in_the_cache_is_walked_and_a_conftest_s_factory_refused_in_words(
    settings: Path, tmp_path: Path
) -> None:
    # One inner run for both (one pytest start): a tree deeper than Python's stack in
    # pytest's cache, and a conftest's own tmp_path_factory whose base directory is
    # production's sessions/.
    project = tmp_path
    # A tool's cache under pytest's (config.cache.mkdir), which pytest never deletes
    # unasked: the plugin looks through the whole cache for links and hard links at the
    # start and as the run ends.
    deepest = _deep_tree(project / ".pytest_cache" / "d" / "tool")
    # pytest empties a factory's given base directory as the first test asks for tmp_path,
    # as it does a --basetemp: red team 39's wrapper refused it, but as `refusing --basetemp`
    # where none was given, with a traceback through the guard's frames.
    sessions = settings / "data" / "production" / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    (sessions / "kept").write_text("production's")
    (project / "conftest.py").write_text(OWN_FACTORY.format(given=sessions))
    (project / "test_scratch.py").write_text(A_TEST)
    # The run's own --basetemp elsewhere (its settings lie under pytest's temporary root).
    done, out = _pytest(settings, project, f"--basetemp={project / 'inner'}")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, out
    # The cache: walked, written, the tree left as it was.
    assert "maximum recursion depth" not in out, out
    assert "1 error" in out, out  # the test's, below
    assert (project / ".pytest_cache" / "v" / "cache" / "nodeids").is_file(), out
    assert deepest.is_dir()
    # The factory: refused in its own words, the test alone failed.
    assert (
        f"app: refusing the base directory {sessions} of a pytest.TempPathFactory made in "
        "code, not from the run's options (a conftest's own tmp_path_factory fixture, say: "
        "no --basetemp was given): pytest empties it as the first test asks for tmp_path, "
        "and it overlaps the data root of profile 'production"
    ) in out, out
    assert "Give that TempPathFactory a base directory outside every data root" in out, out
    assert f"--basetemp {sessions}" not in out and "--basetemp outside" not in out, out
    assert "Traceback" not in out and "guard.py" not in out, out
    assert (sessions / "kept").read_text() == "production's"


#: In a mount namespace of its own, with a /tmp of its own (the shared registry of runs left
#: alone): a file planted in the registry as a dead run's entry, holding JSON nested deeper
#: than Python's stack, then a run. A checkout or environment under /tmp (CI's clone in
#: `mktemp -d`) is mounted again inside the new /tmp (`$KEEP`), as red team 47's runs do.
REGISTRY_SCRIPT = """
old=$(mktemp -d /run/app-s55-tmp.XXXXXX) && mount --bind /tmp "$old" || exit 9
mount -t tmpfs tmpfs /tmp || exit 9
for keep in $KEEP; do mkdir -p "$keep" && mount --bind "$old${keep#/tmp}" "$keep" || exit 9; done
umount "$old" && rmdir "$old" || exit 9
mkdir -p /tmp/w/s /tmp/w/p && cp "$1/settings.toml" "$1/.secrets.toml" /tmp/w/s/ || exit 9
cd /tmp/w/p && printf 'def test_scratch(tmp_path):\\n    pass\\n' > test_scratch.py
"$2" -c 'from app.sandbox import RUNS_DIR; RUNS_DIR.mkdir(mode=0o755)
(RUNS_DIR / "99999999-1.json").write_text("[" * 5000 + "]" * 5000)' || exit 8
"$2" -m pytest -q -p no:cacheprovider test_scratch.py 2>&1
echo "=== $?"
ls /tmp/app-pytest-runs-*/
"""


def _under_tmp(*paths: Path) -> str:
    """Those of `paths` that a tmpfs on /tmp would hide (resolved), for `$KEEP`."""
    kept = (str(path.resolve()) for path in paths)
    return " ".join(dict.fromkeys(path for path in kept if path.startswith("/tmp/")))


def test_an_entry_nested_deeper_than_python_s_stack_in_the_registry_is_damage() -> None:
    # The registry of runs is a directory of this user's in /tmp: a file there that no run
    # wrote (a test's, a tool's) made every later run of this user a RecursionError
    # traceback as it read the entries of dead runs to forget them.
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"):
        pytest.skip("only root makes a mount namespace with a /tmp of its own (unshare -m)")
    done = subprocess.run(
        [
            "unshare", "-m", "--propagation", "private", "sh", "-c", REGISTRY_SCRIPT, "sh",
            str(PROJECT), sys.executable,
        ],
        env=_inner_env(APP_SETTINGS_DIR="/tmp/w/s", KEEP=_under_tmp(PROJECT, Path(sys.prefix))),
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "=== 0" in out, out
    assert "Traceback" not in out and "RecursionError" not in out, out
    assert "99999999-1.json" not in out, out  # forgotten as a dead run's
