"""What a test leaves for the environment's later Python processes to run (app.testing.planted).

Session 67's own hostile case: a test wrote a ``.pth`` into the environment's site-packages
whose line runs ``app --profile production data purge --yes-i-mean-it``; the run passed, and
the developer's next command in that environment, outside any run, purged a stopped
production root. The guard cannot refuse a write it does not make: it looks after every test,
puts the environment back, and fails the test, naming the file.

Each case runs in an environment of its own (a virtualenv without pip whose ``.pth`` adds the
project's site-packages), never the suite's: what a test plants there would be seen, put back
and blamed on their own tests by the other workers of this run.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.testing.planted import ASIDE, Planted, _imported_by_pth, _Place, _places, _places_of

#: The inner run's tests: one plants a start-up file and a command, one changes an existing
#: .pth, one changes nothing.
PLANTING = """
import site
from pathlib import Path

SITE = Path(site.getsitepackages()[0])
RUNS = "import os; os.makedirs(os.environ['PLANTED_RAN'], exist_ok=True)\\n"

def test_plants():
    (SITE / "zz_planted.pth").write_text(RUNS)
    (SITE / "sitecustomize.py").write_text(RUNS)

def test_rewrites_a_pth():
    link = SITE / "link.pth"
    link.write_text(link.read_text() + RUNS)

def test_adds_a_command():
    command = Path(__import__("sys").prefix, "bin", "app-later")
    command.write_text("#!/bin/sh\\nmkdir -p \\"$PLANTED_RAN\\"\\n")
    command.chmod(0o755)

def test_nothing():
    pass
"""


#: The inner run's conftest: code of the run that runs before its first look at the
#: environment or after its tests, the after-test looks all done (red team 75 on the
#: guard): each plants a start-up file.
AFTER_THE_TESTS = """
import atexit
import site
import pytest
from pathlib import Path

SITE = Path(site.getsitepackages()[0])
RUNS = "import os; os.makedirs(os.environ['PLANTED_RAN'], exist_ok=True)\\n"
(SITE / "zz_import.pth").write_text(RUNS)

def pytest_sessionstart(session):
    atexit.register((SITE / "zz_at_exit.pth").write_text, RUNS)
    # Last of all the run's code: a clean-up (red team 75 on regress, round b).
    session.config.add_cleanup(lambda: (SITE / "zz_cleanup.pth").write_text(RUNS))

def pytest_sessionfinish(session):
    (SITE / "zz_finish.pth").write_text(RUNS)

@pytest.hookimpl(wrapper=True)
def pytest_unconfigure(config):
    # After the hook's every implementation, the guard's trylast one included.
    yield
    (SITE / "zz_unconfigure.pth").write_text(RUNS)
"""


def _nothing_planted_runs(environment: Path, ran: Path) -> None:
    """A later process of `environment`, outside any run, starts (``import app``) and runs
    nothing a test planted (which would make the directory `ran`)."""
    later = subprocess.run(
        [str(environment / "bin" / "python"), "-c", "import app"],
        env={**os.environ, "PLANTED_RAN": str(ran)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert later.returncode == 0, later.stderr
    assert not ran.exists(), "the planted code ran in a later process"


@pytest.fixture
def environment(tmp_path: Path) -> Path:
    """A virtualenv of the suite's interpreter that sees the suite's packages (the app and
    its plugin included, through site-packages' own ``.pth`` files) but has its own."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    (own,) = env.glob("lib/python3*/site-packages")
    suites = site.getsitepackages()[0]
    (own / "link.pth").write_text(f"import site; site.addsitedir({suites!r})\n")
    return env


def test_a_test_that_plants_start_up_code_is_failed_and_the_environment_put_back(
    pytester: pytest.Pytester, environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (own,) = environment.glob("lib/python3*/site-packages")
    link_before = (own / "link.pth").read_bytes()
    ran = tmp_path / "planted-ran"
    pytester.makepyfile(test_planting=PLANTING)
    pytester.makeconftest(AFTER_THE_TESTS)
    # The test's own monkeypatch: pytester's puts back only what it set itself, and a
    # variable left in this process's environment made every later `app` command of the
    # worker start plainly, not forked (tests/conftest.py's `pytest_runtest_teardown`).
    monkeypatch.setenv("PLANTED_RAN", str(ran))
    result = pytester.run(str(environment / "bin" / "python"), "-m", "pytest", "-p", "no:randomly")
    out = result.stdout.str()
    result.assert_outcomes(passed=4, errors=3)
    planted = own / "zz_planted.pth"
    flat = " ".join(out.split())
    assert (
        "app: test_planting.py::test_plants changed what later Python processes of this "
        "environment run as they start, or its commands, outside any test run: "
    ) in flat, out
    assert f"{planted} was added (moved aside to {planted}.app-planted, which nothing runs)" in flat
    assert f"{own / 'sitecustomize.py'} was added" in flat, out
    assert (
        f"{own / 'link.pth'} was changed (as the run began again; the test's version moved "
        f"aside to {own / 'link.pth'}.app-planted)"
    ) in flat, out
    command = environment / "bin" / "app-later"
    assert "test_planting.py::test_adds_a_command changed what later" in flat, out
    assert f"{command} was added" in flat, out
    assert "install what a test needs into an environment it makes for itself" in flat, out
    # As pytest imported the conftest, before the look as the run began (said at the end).
    imported = own / "zz_import.pth"
    assert (
        "app: a conftest of this run, or a plugin, as pytest imported it changed what later "
        "Python processes of this environment run as they start, or its commands, outside any "
        f"test run: {imported} was added (moved aside to {imported}.app-planted, which nothing "
        "runs)"
    ) in flat, out
    # After the tests, the session's end and the process's exit each looked again; the
    # run's last look after a wrapper's pytest_unconfigure and a clean-up the conftest added
    # (the first clean-up, so the last: red team 75 on regress, round b).
    after = (
        "app: code of this run after its tests (a conftest's pytest_sessionfinish or "
        "pytest_unconfigure, a session-scoped fixture's teardown, a clean-up added with "
        "config.add_cleanup) changed what later Python processes of this environment run as "
        "they start, or its commands, outside any test run: "
    )
    assert after in flat, out
    last = flat.split(after, 1)[1]
    for name in ("zz_cleanup.pth", "zz_finish.pth", "zz_unconfigure.pth"):
        assert f"{own / name} was added (moved aside to {own / name}.app-planted" in last, name
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    at_exit = " ".join(result.stderr.str().split())
    assert (
        "app: code of this run's process after pytest ended (an atexit handler) changed what "
        "later Python processes of this "
        f"environment run as they start, or its commands, outside any test run: "
        f"{own / 'zz_at_exit.pth'} was added (moved aside"
    ) in at_exit, result.stderr.str()
    # Put back: nothing the tests wrote runs in a later process of that environment.
    assert (own / "link.pth").read_bytes() == link_before
    assert not (own / "zz_planted.pth").exists() and not (own / "sitecustomize.py").exists()
    assert not command.exists() and (environment / "bin" / "app-later.app-planted").exists()
    for name in (
        "zz_import.pth",
        "zz_finish.pth",
        "zz_unconfigure.pth",
        "zz_cleanup.pth",
        "zz_at_exit.pth",
    ):
        assert not (own / name).exists() and (own / f"{name}{ASIDE}").exists(), name
    _nothing_planted_runs(environment, ran)


def test_a_command_changed_in_place_fails_the_run_at_its_end(
    pytester: pytest.Pytester, environment: Path
) -> None:
    command = environment / "bin" / "app-tool"
    command.write_text("#!/bin/sh\necho tool\n")
    command.chmod(0o755)
    pytester.makepyfile(
        test_changing=textwrap.dedent(
            f"""
            from pathlib import Path

            def test_changes_a_command():
                Path({str(command)!r}).write_text("#!/bin/sh\\necho planted\\n")
            """
        )
    )
    result = pytester.run(str(environment / "bin" / "python"), "-m", "pytest", "-p", "no:randomly")
    out = result.stdout.str() + result.stderr.str()
    flat = " ".join(out.split())
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "1 passed" in flat, out
    assert "app: a test of this run changed what later Python processes" in flat, out
    assert f"{command} was changed (not put back: install this environment again)" in flat, out


#: The inner run's tests for what the first checks missed (red team 67, rt-regress67d): each
#: plants code a later process of the environment runs, somewhere other than a start-up
#: file's name in site-packages, or unseen by its identity then.
HIDDEN = """
import os
import site
from pathlib import Path

SITE = Path(site.getsitepackages()[0])
EXTRA = Path(os.environ["PLANTED_EXTRA"])
RUNS = "import os; os.makedirs(os.environ['PLANTED_RAN'], exist_ok=True)\\n"

def test_rewrites_a_pth_and_sets_its_mtime_back():
    link = SITE / "link.pth"
    before = link.stat()
    text = link.read_text()
    planted = RUNS + text[len(RUNS):]  # the same size
    assert len(planted) == len(text)
    with open(link, "r+") as stream:
        stream.write(planted)
    os.utime(link, ns=(before.st_atime_ns, before.st_mtime_ns))

def test_appends_to_a_module_a_pth_imports():
    with open(SITE / "zz_startup.py", "a") as stream:
        stream.write(RUNS)

def test_plants_a_pth_in_a_directory_a_pth_adds():
    (EXTRA / "zz_planted.pth").write_text(RUNS)

def test_plants_sitecustomize_in_a_directory_a_pth_adds():
    (EXTRA / "sitecustomize.py").write_text(RUNS)

def test_plants_a_sourceless_sitecustomize_pyc(tmp_path):
    import py_compile
    source = tmp_path / "source.py"
    source.write_text(RUNS)
    py_compile.compile(str(source), cfile=str(SITE / "sitecustomize.pyc"), doraise=True)

def test_writes_through_a_linked_pth():
    with open(SITE / "zz_linked.pth", "a") as stream:
        stream.write(RUNS)

def test_turns_on_the_system_site_packages():
    import sys
    cfg = Path(sys.prefix, "pyvenv.cfg")
    cfg.write_text(cfg.read_text().replace("= false", "= true"))
"""


def test_start_up_code_planted_beside_the_start_up_files_is_put_back_too(
    pytester: pytest.Pytester, environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team 67 (rt-regress67d), each found by hand against the first version: a ``.pth``
    rewritten at its size with its mtime set back (``os.utime``), a module a ``.pth`` imports
    (as an editable install's finder, ``_distutils_hack`` and ``_app_pytest_guard`` are),
    a ``.pth`` or ``sitecustomize`` in a directory a ``.pth`` adds, a sourceless
    ``sitecustomize.pyc``, a ``.pth`` written through its link (Debian's standard
    library's ``sitecustomize.py`` links to /etc), and ``pyvenv.cfg`` turned to the
    system's site-packages (whose ``.pth`` files then run): each ran in the environment's
    next process after a passing run, or let another environment's start-up files run
    there."""
    (own,) = environment.glob("lib/python3*/site-packages")
    extra = tmp_path / "extra"
    extra.mkdir()
    (own / "zz_startup.pth").write_text(
        f"import zz_startup; import site; site.addsitedir({str(extra)!r})\n"
    )
    (own / "zz_startup.py").write_text("STARTED = True\n")
    link_before = (own / "link.pth").read_bytes()
    linked = tmp_path / "linked.pth"  # as Debian's sitecustomize.py links to /etc
    linked.write_text("import os\n")
    (own / "zz_linked.pth").symlink_to(linked)
    cfg = environment / "pyvenv.cfg"
    cfg_before = cfg.read_bytes()
    assert b"include-system-site-packages = false" in cfg_before
    ran = tmp_path / "planted-ran"
    pytester.makepyfile(test_hidden=HIDDEN)
    monkeypatch.setenv("PLANTED_RAN", str(ran))  # put back after the test, as above
    monkeypatch.setenv("PLANTED_EXTRA", str(extra))
    result = pytester.run(str(environment / "bin" / "python"), "-m", "pytest", "-p", "no:randomly")
    out = result.stdout.str()
    flat = " ".join(out.split())
    result.assert_outcomes(passed=7, errors=7)
    link = own / "link.pth"
    assert f"{link} was changed (as the run began again; the test's version moved" in flat, out
    assert f"{own / 'zz_startup.py'} was changed (as the run began again;" in flat, out
    assert f"{extra / 'zz_planted.pth'} was added (moved aside to" in flat, out
    assert f"{extra / 'sitecustomize.py'} was added (moved aside to" in flat, out
    assert f"{own / 'sitecustomize.pyc'} was added (moved aside to" in flat, out
    assert f"{cfg} was changed (as the run began again;" in flat, out
    assert link.read_bytes() == link_before
    assert cfg.read_bytes() == cfg_before
    assert (
        f"{own / 'zz_linked.pth'} was changed through its link, in {linked} (as the run "
        f"began again; the test's version kept aside as {linked}.app-planted)"
    ) in flat, out
    assert linked.read_text() == "import os\n"
    assert (own / "zz_startup.py").read_text() == "STARTED = True\n"
    _nothing_planted_runs(environment, ran)


def test_a_start_up_file_put_back_is_never_missing_meanwhile(tmp_path: Path) -> None:
    """Red team 67 on regress (rt-regress67d), found by reading `_put_back`: the test's
    version was renamed aside before the file's bytes were written back, so for that while
    the name was missing, and a Python starting then (another xdist worker's subprocess)
    ran without it: without an editable install's ``.pth``, with no ``app``. The name is
    now replaced in one rename, the test's version kept by a second name first. Seen by the
    system calls (strace): no rename or unlink of the file's own name."""
    place = tmp_path / "site"
    place.mkdir()
    pth = place / "x.pth"
    pth.write_text("import os\n")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from app.testing.planted import Planted, _Place
        place = Path({str(place)!r})
        planted = Planted(places=[_Place(place, True)]).take()
        (place / "x.pth").write_text("import os; planted = 1\\n")
        print(planted.check("the test"))
        """
    )
    trace = tmp_path / "trace"
    done = subprocess.run(
        [
            *("strace", "-f", "-qq", "-o", str(trace)),
            *("-e", "trace=rename,renameat,renameat2,unlink,unlinkat"),
            *(sys.executable, "-c", script),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{pth} was changed (as the run began again; the test's version moved aside" in (
        done.stdout
    ), done.stdout
    calls = trace.read_text()
    assert f'"{pth}"' not in calls.replace(f'"{pth}.app-restoring", "{pth}"', ""), calls
    assert pth.read_text() == "import os\n"
    assert (place / "x.pth.app-planted").read_text() == "import os; planted = 1\n"


def test_a_put_back_through_a_link_never_writes_where_the_test_made_it_lead(
    tmp_path: Path,
) -> None:
    """Red team 67 on regress (rt-regress67e), found by reading `_written_through`: a
    start-up file that is a link (Debian's ``sitecustomize.py`` to /etc) whose target a
    test replaced with a link to another file (/etc/passwd) was put back by writing the
    start-up file's bytes over that other file, outside the environment. Now written back
    where the link led as the run began, the test's link there replaced."""
    place, outside = tmp_path / "site", tmp_path / "etc"
    place.mkdir()
    outside.mkdir()
    target, victim = outside / "real.pth", outside / "passwd"
    target.write_text("import os\n")
    victim.write_text("root:x:0:0\n")
    (place / "zz.pth").symlink_to(target)
    planted = Planted(places=[_Place(place, True)]).take()
    target.unlink()
    target.symlink_to(victim)
    said = planted.check("the test")
    assert said is not None
    assert f"{place / 'zz.pth'} was changed through its link, in {target} (as the run" in said
    assert victim.read_text() == "root:x:0:0\n"
    assert not target.is_symlink() and target.read_text() == "import os\n"
    assert not (outside / "passwd.app-planted").exists()
    assert planted.check("the next test") is None
    # The directory on the way made a link to another: not written through either.
    other = tmp_path / "other"
    other.mkdir()
    (other / "real.pth").write_text("root:x:0:0\n")
    outside.rename(tmp_path / "was-etc")
    outside.symlink_to(other)
    said = planted.check("a third test")
    assert said is not None
    assert f"in {target}, whose directory now leads to {other} (not put back: install" in said
    assert (other / "real.pth").read_text() == "root:x:0:0\n"


def test_a_put_back_never_moves_or_writes_in_a_directory_put_at_a_place_s_path(
    tmp_path: Path,
) -> None:
    """Red team 75 on the guard, found by experiment in a real inner run beside a stopped
    production root: a test that replaced the environment's ``bin/`` by a symbolic link to
    the root's ``sessions/`` (or, run as root, bind-mounted it there) had the guard rename
    the session ``<id>.app-planted``, "a command added"; one that so replaced site-packages
    by a link to the root had the guard write the environment's ``.pth`` files into it; and
    a start-up file's link whose target's directory another took the place of (a mount) was
    written back there. A place, and a link's directory, is used only while it is the
    directory it was as the run began (device and inode); otherwise the check says so,
    once, and moves and writes nothing."""
    production = tmp_path / "production"  # a stopped root, as its files are on disk
    session = production / "sessions" / "01a2522b8ede743ea5b116f2a1e676d9"
    session.mkdir(parents=True)
    (session / "session.json").write_text("{}\n")
    (production / ".app-profile.json").write_text('{"profile": "production"}\n')
    before = sorted(str(p.relative_to(production)) for p in production.rglob("*"))
    site_dir, bin_dir, etc = tmp_path / "site", tmp_path / "bin", tmp_path / "etc"
    for directory in (site_dir, bin_dir, etc):
        directory.mkdir()
    (site_dir / "x.pth").write_text("import os\n")
    (bin_dir / "app").write_text("#!/bin/sh\n")
    (etc / "real.pth").write_text("import os\n")
    (site_dir / "zz.pth").symlink_to(etc / "real.pth")
    planted = Planted(places=[_Place(site_dir, True), _Place(bin_dir, False)]).take()
    # The link's directory: another directory put at its path, whose file of that name the
    # test changed (what a mount over it shows).
    etc.rename(tmp_path / "etc-was")
    etc.mkdir()
    (etc / "real.pth").write_text("another's file\n")
    # The places themselves: links to the root and its sessions/.
    bin_dir.rename(tmp_path / "bin-was")
    bin_dir.symlink_to(production / "sessions")
    site_dir.rename(tmp_path / "site-was")
    site_dir.symlink_to(production)
    said = planted.check("the test", commands=True)
    assert said is not None
    flat = " ".join(said.split())
    for place, leads in ((bin_dir, production / "sessions"), (site_dir, production)):
        assert (
            f"{place} is not the directory it was as the run began (it leads to {leads} now), "
            "so nothing there was moved aside or written back, which would have changed the "
            "files of whatever it leads to (a data root's, say). Put the environment's own "
            "directory back at its path (remove the link, or unmount what is mounted there), "
            "or install this environment again"
        ) in flat, said
    assert sorted(str(p.relative_to(production)) for p in production.rglob("*")) == before
    assert planted.check("the next test") is None  # said once
    # Put back as they were: watched again, and the link's directory said as another.
    for place in (bin_dir, site_dir):
        place.unlink()
        place.with_name(place.name + "-was").rename(place)
    said = planted.check("a third test")
    assert said is not None and "whose directory is not the one it was as the run" in said
    assert f"`findmnt -T {etc}`; not put back" in said, said
    assert (etc / "real.pth").read_text() == "another's file\n"
    # A copy of site-packages with a .pth added, renamed over it: left for every later
    # process to run, where the put-back had moved it aside before (red team 75 on
    # regress, round b). What is at the path is moved aside as it is.
    swapped = tmp_path / "site2"
    swapped.mkdir()
    (swapped / "a.pth").write_text("import os\n")
    planted = Planted(places=[_Place(swapped, True)]).take()
    copy = tmp_path / "site2-copy"
    shutil.copytree(swapped, copy)
    (copy / "zz_planted.pth").write_text("import os\n")
    swapped.rename(tmp_path / "site2-was")
    copy.rename(swapped)
    said = planted.check("the test")
    aside = tmp_path / f"site2{ASIDE}"
    assert said is not None and " ".join(said.split()).startswith(
        f"app: the test changed what later Python processes of this environment run as they "
        f"start, or its commands, outside any test run: {swapped} is not the directory it was "
        f"as the run began (another directory is there now, or mounted there: `findmnt -T "
        f"{swapped}`), and holds start-up files the environment's did not (zz_planted.pth): "
        f"what is at its path was moved aside to {aside} as it is, nothing in it moved or "
        "written (which would have changed the files of whatever it leads to, a data root's, "
        "say), so no later process runs them. Put the environment's own directory back at "
        "its path, or install this environment again."
    ), said
    assert not swapped.exists() and sorted(os.listdir(aside)) == ["a.pth", "zz_planted.pth"]


def test_every_module_a_pth_imports_is_looked_at(tmp_path: Path) -> None:
    """Red team 67 on regress (rt-regress67e), found by trying the forms of an import on
    `_imported_by_pth`: ``import os, b``, ``from c import x`` and
    ``importlib.import_module('d')`` each run a module's file in every later process, and
    only ``import a`` and ``__import__('a')`` were found; a test appending to the others'
    files went unseen."""
    place = tmp_path / "site"
    place.mkdir()
    (place / "zz.pth").write_text(
        "import os, zz_b; from zz_c import x; import importlib; importlib.import_module('zz_d')\n"
    )
    for name in ("zz_b", "zz_c", "zz_d"):
        (place / f"{name}.py").write_text("x = 1\n")
    modules, _ = _imported_by_pth([str(place)])
    assert modules[str(place)] >= {"zz_b.py", "zz_c.py", "zz_d.py"}, modules
    planted = Planted(places=[_Place(place, True, frozenset(modules[str(place)]))]).take()
    for name in ("zz_b", "zz_c", "zz_d"):
        with (place / f"{name}.py").open("a") as stream:
            stream.write("import os; os.system('true')\n")
    said = planted.check("the test")
    assert said is not None
    for name in ("zz_b", "zz_c", "zz_d"):
        assert f"{place / name}.py was changed (as the run began again;" in said, said
        assert (place / f"{name}.py").read_text() == "x = 1\n"


def test_a_module_a_pth_imports_shadowed_earlier_on_the_path_is_seen(tmp_path: Path) -> None:
    """Red team 67 on regress (rt-regress67e), found by reading `_places`: a ``.pth``'s
    ``import zz_mod`` loads the first ``zz_mod`` on the path, and a test that wrote
    ``zz_mod.py`` into a directory before site-packages (the standard library's, a
    ``PYTHONPATH`` one) had its code run by every later process; only the module's file as
    found at the start was watched. A file of that name added in any watched directory
    counts now."""
    earlier, site_packages = tmp_path / "earlier", tmp_path / "site"
    earlier.mkdir()
    site_packages.mkdir()
    (site_packages / "zz.pth").write_text("import zz_mod\n")
    (site_packages / "zz_mod.py").write_text("x = 1\n")
    planted = Planted(places=_places_of([str(earlier), str(site_packages)])).take()
    (earlier / "zz_mod.py").write_text("import os; os.system('true')\n")
    (earlier / "zz_other.py").write_text("x = 1\n")  # no .pth imports it: not a start-up file
    said = planted.check("the test")
    assert said is not None
    shadow = earlier / "zz_mod.py"
    assert f"{shadow} was added (moved aside to {shadow}.app-planted, which nothing runs)" in said
    assert "zz_other" not in said, said
    assert not shadow.exists() and (earlier / "zz_other.py").exists()
    # A namespace package a .pth imports, given an __init__.py: a package that runs.
    (site_packages / "zz_ns").mkdir()
    (site_packages / "zz.pth").write_text("import zz_mod, zz_ns\n")
    planted = Planted(places=_places_of([str(earlier), str(site_packages)])).take()
    init = site_packages / "zz_ns" / "__init__.py"
    init.write_text("import os; os.system('true')\n")
    said = planted.check("the test")
    assert said is not None and f"{init} was added (moved aside to" in said, said
    assert not init.exists()


def test_a_file_of_a_pth_module_s_name_counts_only_where_a_pth_s_import_searches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of the shadowing check (red team 67e, its first version): a
    directory on the run's path that a ``.pth``'s import does not search (the project's
    root, put there by ``python -m pytest``, holds ``_app_pytest_guard.py``, which a
    developer edits during a run) and a file that is no module (``coverage.xml``, which a
    run writes beside it) do not count."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    (place,) = [place for place in _places() if place.path == project]
    assert not place.counts("_app_pytest_guard.py") and not place.shadows
    (site_packages,) = [
        place for place in _places() if place.path == Path(site.getsitepackages()[0])
    ]
    assert site_packages.counts("_app_pytest_guard.py"), site_packages.shadows
    extension = importlib.machinery.EXTENSION_SUFFIXES[0]  # .cpython-311-x86_64-linux-gnu.so
    assert site_packages.counts(f"_app_pytest_guard{extension}")
    assert not site_packages.counts("coverage.xml") and site_packages.counts("coverage.py")


def test_a_place_keeps_every_name_it_counts_of_a_long_listing(tmp_path: Path) -> None:
    # `_Place.take` asks `counts` only of the names it may take (about 400 method calls of
    # every run's start, bench/README.md "Session 69"): what it keeps is what `counts` takes
    # of the whole listing, in site-packages' and the standard library's kind of place.
    names = [
        "a.pth", "b.PTH", "sitecustomize.py", "usercustomize.cpython-311-x86_64-linux-gnu.so",
        "sitecustomize", "hook.py", "hook.pyc", "hook", "hook.txt", "hooky.py", "pyvenv.cfg",
        f"a.pth{ASIDE}", "x.pth.app-restoring", "plain.py", ".pth", "README", "sitecustomize.pth",
    ]  # fmt: skip
    names += [f"module{n}.py" for n in range(50)]
    for name in names:
        (tmp_path / name).write_text("")
    (tmp_path / "pkg").mkdir()
    for also, shadows in [(frozenset(), frozenset()), (frozenset({"pyvenv.cfg"}), {"hook"})]:
        place = _Place(tmp_path, True, also, shadows=frozenset(shadows))
        place.take()
        expected = {name for name in os.listdir(tmp_path) if place.counts(name)}
        assert set(place.files) == expected
        assert "a.pth" in expected and "README" not in expected
