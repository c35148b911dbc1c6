"""tests/forked_pytest.py: an inner run forked from the warm interpreter shows what a plain
``python -mpytest`` shows (its command line, arguments, ``sys.path``, directory, variables,
the plugin's header, exit status), and a run whose environment the interpreter reads as it
starts, or whose path holds a module a plain start would import from there, is started the
plain way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import forked_app
import forked_pytest
import pytest

from app.testing.guard import OWNER_ENV

#: What the inner run sees of its own start, one JSON line.
PROBE = """
import gc, json, os, sys, tempfile
from pathlib import Path

class Loop:  # garbage only the cyclic collector finds, which says when it finalises it
    def __init__(self, ran):
        self.me, self.ran = self, ran

    def __del__(self):
        self.ran.append("finalised")

def test_probe():
    raw = Path("/proc/self/cmdline").read_bytes().rstrip(b"\\0").split(b"\\0")
    ran = []
    Loop(ran)
    gc.collect()
    print("PROBE " + json.dumps({
        "cmdline": [word.decode() for word in raw],
        "argv": sys.argv[1:],
        "orig_argv": sys.orig_argv,
        "path": sys.path[:2],
        "cwd": os.getcwd(),
        "marker": os.environ.get("FORKED_PYTEST_MARKER"),
        "tmp": tempfile.gettempdir(),
        "modules": sorted(m for m in ("app", "dynaconf", "filelock") if m in sys.modules),
        # The zygote's imports are out of the collector's walk (tests/forked_app.py's LOOP):
        # what the run makes is collected and finalised as in a plain start.
        "collector": [gc.isenabled(), gc.get_threshold(), ran],
    }))

def test_fails():
    assert False
"""


def starts_counted(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What `forked_pytest.start` gives from now on, each in turn: a test that compares a
    forked run with a plain one asks whether the run it compared was forked at all."""
    started: list[object] = []
    fork = forked_pytest.start

    def counted(*args: object, **kwargs: object) -> object:
        started.append(child := fork(*args, **kwargs))  # type: ignore[arg-type]
        return child

    monkeypatch.setattr(forked_pytest, "start", counted)
    return started


def _probe(result: pytest.RunResult | list[str]) -> dict[str, object]:
    lines = result if isinstance(result, list) else result.outlines
    (line,) = [line for line in lines if "PROBE " in line]
    seen: dict[str, object] = json.loads(line.partition("PROBE ")[2])
    return seen


def test_a_forked_run_shows_what_a_plain_start_shows(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORKED_PYTEST_MARKER", "given")
    # Read by `tempfile` on first use, never as an interpreter starts: forked, and the
    # child's own (the zygote's cached one dropped).
    monkeypatch.setenv("TMPDIR", str(pytester.mkdir("own-tmp")))
    pytester.makepyfile(test_probe=PROBE)
    started = starts_counted(monkeypatch)
    forked = pytester.runpytest_subprocess("-s", "-p", "no:xdist")
    assert isinstance(started[-1], forked_pytest.ForkedRun), "not forked: nothing compared"
    monkeypatch.setenv("PYTHONHASHSEED", "0")  # read as an interpreter starts: the plain way
    plain = pytester.runpytest_subprocess("-s", "-p", "no:xdist")
    assert started[-1] is None
    for result in (forked, plain):
        assert result.ret == 1
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["app: profile=testing (forced), *"])
    seen, expected = _probe(forked), _probe(plain)
    basetemps = {"forked": seen["argv"][0], "plain": expected["argv"][0]}  # type: ignore[index]
    assert basetemps["forked"] != basetemps["plain"]  # pytester's, one per run
    for what in (seen, expected):
        for key in ("cmdline", "argv", "orig_argv"):
            words = what[key]
            assert isinstance(words, list)
            words[words.index(basetemps["forked"] if what is seen else basetemps["plain"])] = "B"
    assert seen == expected
    assert seen["cmdline"][1:] == ["-mpytest", "B", "-s", "-p", "no:xdist"]  # type: ignore[index]
    assert seen["tmp"] == str(pytester.path / "own-tmp")
    # A red team's own run (`forked_pytest.run`), spelled `-m pytest`, its output merged.
    basetemp = f"--basetemp={pytester.path / 'own-basetemp'}"
    argv = [sys.executable, "-m", "pytest", basetemp, "-s", "-p", "no:xdist"]
    monkeypatch.delenv("PYTHONHASHSEED")
    env = {**os.environ, "PYTHONPATH": str(pytester.path)}
    own = forked_pytest.run(argv, cwd=pytester.path, env=env, merged=True)
    assert isinstance(started[-1], forked_pytest.ForkedRun), "not forked: nothing compared"
    assert own.returncode == 1 and own.stderr is None
    assert "1 failed, 1 passed" in own.stdout, own.stdout
    shown = [*argv[:3], "B", *argv[4:]]
    assert _probe(own.stdout.replace(basetemp, "B").splitlines()) == {
        **expected,
        "cmdline": shown,
        "orig_argv": shown,
        "argv": shown[3:],
    }


def test_a_run_whose_start_the_zygote_cannot_give_is_left_to_start(tmp_path: Path) -> None:
    out, err = tmp_path / "out", tmp_path / "err"
    run = dict(forked_app._RUN["environ"])
    argv = [sys.executable, "-mpytest", "-q"]
    # A pytest passed off as an xdist worker of this process's run (red team 33's, a test of
    # a run without xdist that sets the one variable): the guard takes it for one by its
    # parent, the zygote where forked. Forked, red team 33's test passed with its fix
    # reverted (red team 71 on regress, round s).
    forged = {**run, "PYTEST_XDIST_WORKER": "gw0", OWNER_ENV: str(os.getpid())}
    for env, words in (
        ({**run, "PYTHONOPTIMIZE": "1"}, argv),
        (run, [sys.executable, "-X", "dev", "-m", "pytest"]),
        (forged, argv),
    ):
        assert forked_pytest.start(words, env, tmp_path, out, err) is None, words
    # Only that: a serial run's own inner runs name it as their owner too, a worker's its
    # controller; neither passes for a worker, forked or not.
    for env in ({**forged, "PYTEST_XDIST_WORKER": ""}, {**forged, OWNER_ENV: str(os.getppid())}):
        assert not forked_pytest.passed_off_as_a_worker(env), env
    # A directory on its path holding what a plain start imports from there, which the
    # zygote imported from its own (red team 64 on regress): `site`'s sitecustomize on
    # PYTHONPATH (red team 43's import hook), a pytest from a zip, a standard module beside
    # the tests. Forked, each ran the zygote's modules and none of these.
    hooks, beside = tmp_path / "hooks", tmp_path / "beside"
    for directory, name in ((hooks, "sitecustomize.py"), (beside, "json.py")):
        directory.mkdir()
        (directory / name).write_text("")
    (tmp_path / "pytest.zip").write_bytes(b"")
    for env, cwd in (
        ({**run, "PYTHONPATH": str(hooks)}, tmp_path),
        ({**run, "PYTHONPATH": "pytest.zip"}, tmp_path),  # relative: to the run's directory
        (run, beside),
    ):
        assert forked_pytest.start(argv, env, cwd, out, err) is None, (env.get("PYTHONPATH"), cwd)
    assert (
        forked_pytest.shadowing({"PYTHONPATH": str(hooks)}, tmp_path) == hooks / "sitecustomize.py"
    )


#: What an inner run sees of its bytecode, one JSON line.
BYTECODE_PROBE = """
import json, sys

def test_probe():
    print("PROBE " + json.dumps({
        "flag": sys.flags.dont_write_bytecode,
        "dont_write": sys.dont_write_bytecode,
        "prefix": sys.pycache_prefix,
        "argv": sys.argv[1:],
    }))
"""


def test_a_run_with_bytecode_on_is_forked_from_a_zygote_started_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Red teams 36 and 38 check what pytest writes where bytecode is on, in a hand-built
    # environment without the run's PYTHONDONTWRITEBYTECODE and PYTHONPYCACHEPREFIX: forked,
    # the child must be what a plain start of it is, bytecode written beside the tests.
    pytester.makepyfile(test_probe=BYTECODE_PROBE)
    env = {k: v for k, v in os.environ.items() if k not in forked_pytest.BYTECODE}
    env["PYTHONPATH"] = str(pytester.path)
    started = starts_counted(monkeypatch)
    argv = [sys.executable, "-m", "pytest", "-s", "-p", "no:xdist", "-p", "no:cacheprovider"]
    forked = forked_pytest.run(argv, cwd=pytester.path, env=env, merged=True)
    assert isinstance(started[-1], forked_pytest.ForkedRun), "not forked: nothing compared"
    written = sorted(p.name for p in (pytester.path / "__pycache__").iterdir())
    assert [name.partition(".")[0] for name in written] == ["test_probe"], written
    shutil.rmtree(pytester.path / "__pycache__")
    plain = subprocess.run(
        argv, cwd=pytester.path, env=env, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert sorted(p.name for p in (pytester.path / "__pycache__").iterdir()) == written
    assert forked.returncode == plain.returncode == 0, forked.stdout + plain.stdout
    seen, expected = _probe(forked.stdout.splitlines()), _probe(plain.stdout.splitlines())
    assert seen == expected == {"flag": 0, "dont_write": False, "prefix": None, "argv": argv[3:]}
    if any(name in forked_app._RUN["environ"] for name in forked_pytest.BYTECODE):
        assert type(forked_pytest._running[forked_pytest.BytecodeOn]) is forked_pytest.BytecodeOn


def test_a_zygote_imports_nothing_from_the_directory_of_the_test_that_started_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python -c` imports from its working directory first: a zygote started by a pytester
    # test (in a directory of that test's files, a `json.py` among them) imported it in
    # place of the standard module, for every later child of the process. `shadowing` only
    # reads each child's directory, after the zygote started (red team 71 on regress,
    # round s): here the module says so, and ends the zygote.
    (tmp_path / "json.py").write_text(
        "import os, pathlib\n\n"
        "pathlib.Path(__file__).with_name('imported').write_text('by the zygote')\n"
        "os._exit(3)\n"
    )
    monkeypatch.chdir(tmp_path)
    zygote = forked_pytest.Zygote()  # one of its own: this process's may be running already
    assert zygote.process.stdin is not None
    zygote.process.stdin.close()  # it ends once it has imported what it imports
    assert zygote.process.wait() == 0
    assert not (tmp_path / "imported").exists()
