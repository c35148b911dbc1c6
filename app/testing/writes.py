"""What pytest itself (and its plugins) write or delete outside any test, checked before
anything is written.

pytest writes where its options and ini values tell it to, whoever's run it is and before,
between and after the tests, where no sandbox applies: ``--junitxml`` and ``--debug``
truncate a file, ``--log-file`` too (and makes its directory), the cache provider writes its
``cache_dir`` (and ``--cache-clear`` deletes its ``d/`` and ``v/``), xdist's ``--tx
popen//chdir=DIR`` copies pytest and every ``--rsyncdir`` into ``DIR`` with deletion of what
the copy does not hold, and the current directory, the rootdir and the test files' directories
take what a plugin writes by a relative path (``.hypothesis/``, ``__pycache__/``). Each of
those named a live server's ``session.json`` or ``sessions/`` once, and each rewrote or
deleted it.

So every path a run is told (by its command line, ``PYTEST_ADDOPTS`` or an ini file) is
checked once, at the start, against every root the run protects and every data root on disk
(a held lock or a stamp at or above it): pytest's own writers by what each does, and every
other option and ini value (a plugin's, which this code cannot know) as a place something may
be written. Only what pytest is known to read alone is left out (``--ignore``, patterns, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import errno
import glob
import importlib.util
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from app.lock import describe_holder
from app.records import Record
from app.sandbox import RUNS_DIR, name_there, no_link_on_the_way, process_link
from app.testing.guard import pytest_ini, usage_error

#: Option destinations pytest only reads, or that a rule below checks by what it does.
_READ_ONLY_OPTIONS = frozenset(
    {
        "basetemp",  # emptied: checked by the sandbox (app.testing.guard)
        "file_or_dir",  # the test paths: below, as the directories their bytecode goes to
        "ignore",
        "ignore_glob",
        "deselect",
        "confcutdir",
        "keyword",
        "markexpr",
        "inifilename",
        "override_ini",  # read through getini, as each ini value
        "rootdir",  # below, as the rootdir pytest settles on
        "tx",  # below, by what xdist does with each spec
        "rsyncdir",  # copied from, never written: below, as what they replace
        "rsyncignore",
        "plugins",
        "xmlpath",
        "debug",
        "log_file",
    }
)
#: Ini values pytest only reads (patterns, lines of text), or that a rule checks itself.
_READ_ONLY_INI = frozenset(
    {
        "norecursedirs",
        "python_files",
        "python_classes",
        "python_functions",
        "markers",
        "filterwarnings",
        "addopts",
        "required_plugins",
        "usefixtures",
        "cache_dir",
        "log_file",
        "rsyncdirs",
        "rsyncignore",
        "looponfailroots",
    }
)


#: What resolves a refusal of a path given as an option or an ini value.
_MOVE_IT = (
    "Point it outside every data root, or leave it out (of the command line, PYTEST_ADDOPTS "
    "or the ini file)"
)


class Target(Record):
    """A path this run's pytest will write in (or delete), and what tells it to."""

    path: Path
    #: What pytest does there, with ``{path}`` where the path goes.
    does: str
    #: True where pytest deletes the path and everything in it, not only writes there.
    deletes: bool = False
    fix: str = _MOVE_IT
    #: What keeps the write from happening once the run is refused, where refusing alone
    #: does not (a write made as the process exits, whatever pytest's outcome).
    prevent: Callable[[], None] | None = None


#: Within one `targets` call: each directory's real path, resolved once (`_real`).
_RESOLVED: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "_RESOLVED", default=None
)
#: Within one `targets` call: each value's spellings against each base (`_spellings`).
_SPELLED: contextvars.ContextVar[dict[tuple[str, Path], list[Path]] | None] = (
    contextvars.ContextVar("_SPELLED", default=None)
)


@contextlib.contextmanager
def _directories_resolved_once() -> Iterator[None]:
    """Resolve each directory once while the paths of one check are gathered.

    A check reads some sixty option and ini values as paths, nearly all in one directory
    (the current one), and resolved each whole, a ``lstat`` of every component, twice: most
    of a check's cost, four to six checks a run (`bench/plugin_phases.py`). Not kept beyond
    the call: a test may plant a link between two checks.

    Each value is spelled once a check too: most option and ini values are words (``auto``
    under some twenty options, ``no``, ``all``), each read as a path in the current
    directory, the same paths for every option that holds them.
    """
    token = _RESOLVED.set({})
    spelled = _SPELLED.set({})
    try:
        yield
    finally:
        _SPELLED.reset(spelled)
        _RESOLVED.reset(token)


def _real(normal: str, lexical: Path | None = None) -> Path:
    """``Path(normal).resolve()`` for a normalised absolute path: its directory's real path
    (once per check, see `_directories_resolved_once`), then its last name, followed only
    where it is a symbolic link, as ``realpath`` goes. `lexical`, ``Path(normal)`` made
    already, is given back where the real path is the same text, rather than parsed again."""
    cache = _RESOLVED.get()
    head, tail = os.path.split(normal)
    if cache is None or not tail or tail == "..":
        return _system_path(normal)
    if (parent := cache.get(head)) is None:
        try:
            parent = cache[head] = os.path.realpath(head)
        except OSError:
            return _system_path(normal)
    here = os.path.join(parent, tail)  # noqa: PTH118 - str in, str out
    # Asked first whether the name is there (`name_there`): most values a check reads as paths
    # (``auto``, ``no``) name nothing, where `lstat` raised.
    if name_there(here):
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.lstat(here).st_mode):
                return _system_path(here)
    return lexical if lexical is not None and here == normal else Path(here)


def _system_path(text: str) -> Path:
    """Where the system opens `text`: ``realpath``, not ``Path.resolve``, which raises
    RuntimeError on a loop of symbolic links (``--junitxml=a`` with ``a`` -> ``b`` -> ``a``
    stopped the run with a traceback from the guard); nothing can be opened through a loop
    (ELOOP), so where it stands is as good as any. A link of /proc this process may not
    read (``--junitxml=/proc/<another user's pid>/root/...``) stopped the run with a
    ``PermissionError`` traceback from the guard (red team 61): nothing is opened through it
    either, and the path as written is refused as one through /proc."""
    try:
        return Path(os.path.realpath(text))
    except OSError:  # EACCES, or ENOENT of an ended process's link of /proc
        return Path(os.path.normpath(text))


def _spellings(value: str, base: Path) -> list[Path]:
    """The path as pytest opens it (relative to `base`, `~` and `$VAR` as it reads them)."""
    if (spelled := _SPELLED.get()) is None:
        return _spelled(value, base)
    if (found := spelled.get((value, base))) is None:
        found = spelled[value, base] = _spelled(value, base)
    return list(found)


def _spelled(value: str, base: Path) -> list[Path]:
    """`_spellings`, worked out."""
    found = []
    if "\0" in value:
        return []  # no path the system can open: pytest fails on it itself
    expanded = os.path.expanduser(os.path.expandvars(value))  # noqa: PTH111 - as pytest reads it
    for text in dict.fromkeys((value, expanded)):
        joined = os.path.join(base, text)  # noqa: PTH118 - as given
        normal = os.path.normpath(joined)
        path = Path(normal)  # lexical, as junitxml and logging read it
        found += [path, _real(normal, path)]
        # And as the system opens it, `..` after a link included: `--debug=link/../session.json`
        # (`open` as given), with `link` in a production session, rewrote the session's
        # record, which the lexical spelling put beside the link (red team 38). Without a
        # `..`, the system's path is the lexical one's.
        if _goes_up(joined):
            found.append(_system_path(joined))
    return list(dict.fromkeys(found))


def _goes_up(text: str) -> bool:
    """Whether ``..`` is one of ``Path(text).parts``: a name between slashes, as pathlib
    drops only empty names and ``.``. Read as text, not parsed as a Path, as the checks'
    other looks at their thirty paths are (`bench/README.md`, "perf-startup65")."""
    return ".." in text.split("/")


def _strings(value: Any) -> Iterator[str]:
    """Every path an option's value may hold: a plugin's action may keep them in a list, a
    set or a mapping (pytest-cov's ``--cov-report=xml:DEST`` is ``{"xml": DEST}``, which a
    walk of strings and lists alone never saw: its report rewrote a live ``session.json``),
    and a path may be written as a ``file:`` URL."""
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        # A newline is a character of a name like any other: a value holding one was never
        # checked, and `--debug=$'x\ny/session.json'`, through a link so named, rewrote a
        # production record (red team 38).
        if isinstance(text, str) and text:
            yield text
            if text.startswith("file:"):
                # A path written as a URL, as pytest-benchmark's --benchmark-storage is
                # (file://PATH, which it opens as PATH): read as the path only, it wrote
                # its runs into a data root's sessions/.
                path = text.removeprefix("file://") if text.startswith("file://") else text[5:]
                yield from dict.fromkeys(p for p in (path, unquote(path)) if p)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item)


#: `_option_names` of the last parser read: that parser, how many options it had, and the
#: names. Only a refusal's words come from them, never whether it refuses.
_NAMES_READ: list[tuple[object, int, dict[str, str]]] = []


def _option_names(config: pytest.Config) -> dict[str, str]:
    """Each option's destination and the name a user gives it (private: see pyproject.toml).

    Read again only where the parser is another or has options added since (a conftest's):
    each of a run's four checks read the names of some 150 options, for the words of a
    refusal alone (`bench/README.md`, "perf-startup65")."""
    parser = config._parser
    groups = [parser._anonymous, *parser._groups]
    count = sum(len(group.options) for group in groups)
    if _NAMES_READ and _NAMES_READ[0][0] is parser and _NAMES_READ[0][1] == count:
        return _NAMES_READ[0][2]
    names: dict[str, str] = {}
    for group in groups:
        for option in group.options:
            dest = getattr(option, "dest", None)
            if dest and option.names():
                names.setdefault(dest, max(option.names(), key=len))
    _NAMES_READ[:] = [(parser, count, names)]
    return names


def _cache_targets(config: pytest.Config, options: Any) -> Iterator[tuple[str, str, bool]]:
    """pytest's cache: its directory, each file and link in it (rewritten in place, through
    a link), and what ``--cache-clear`` deletes; as (path, what is done, deletes)."""
    from _pytest.pathlib import resolve_from_str  # what cacheprovider uses

    cache = resolve_from_str(config.getini("cache_dir"), config.rootpath)
    yield str(cache), "pytest's cache provider writes its cache_dir, {path}", False
    for inside in _links_and_files(cache):
        yield str(inside), "pytest's cache provider rewrites {path} in place", False
    if getattr(options, "cacheclear", False):
        for name in ("d", "v"):
            yield str(cache / name), "pytest's --cache-clear deletes {path}", True


def _xdist_targets(config: pytest.Config, options: Any, cwd: Path) -> list[Target]:
    """xdist's popen workers with a ``chdir``: it runs them there, and first copies pytest,
    _pytest and every rsync dir into it, deleting what the copy does not hold."""
    specs = [str(s) for s in getattr(options, "tx", None) or []]
    if not specs:
        return []
    from execnet import XSpec  # xdist's own parser of a --tx spec

    sources = [str(s) for s in getattr(options, "rsyncdir", None) or []]
    with contextlib.suppress(ValueError):  # xdist blocked: nothing reads the ini value then
        sources += [str(s) for s in config.getini("rsyncdirs")]
    copied = ["pytest", "_pytest", *(Path(s).resolve().name for s in sources)]
    targets = []
    for text in specs:
        spec = XSpec(text.split("*", 1)[1] if text.split("*", 1)[0].isdigit() else text)
        if not spec.popen or not spec.chdir:
            continue  # a popen worker without chdir copies nothing; ssh and socket: elsewhere
        what = f"xdist's --tx {text}"
        chdir = _spellings(spec.chdir, cwd)[0]
        targets.append(Target(chdir, f"{what} runs its worker in {{path}}"))
        targets += [
            Target(
                chdir / name,
                f"{what} replaces {{path}} by a copy of {name}/ (rsync, deleting the rest)",
                deletes=True,
            )
            for name in dict.fromkeys(copied)
        ]
    return targets


#: pytest-cov's reports whose file or directory a coverage setting names where
#: ``--cov-report=TYPE`` gives no ``:DEST`` (annotate, markdown: DEST or their own default).
_COVERAGE_REPORTS = {
    "html": "html_dir",
    "xml": "xml_output",
    "json": "json_output",
    "lcov": "lcov_output",
}


def _coverage_targets(options: Any, cwd: Path) -> list[Target]:
    """pytest-cov's writes, where coverage's own configuration puts them.

    With ``--cov``, coverage erases its data file (and the parallel ones beside it, which
    xdist's workers write) as the run starts and writes it at the end; a report with no
    ``:DEST`` goes where coverage's configuration says. Neither is an option's value:
    ``COVERAGE_FILE``, or ``data_file`` and ``[html] directory`` in ``.coveragerc``,
    ``setup.cfg``, ``tox.ini`` or ``pyproject.toml``, put them in a live ``sessions/``. They
    are read with coverage's own reader, as pytest-cov has coverage read them, and only in
    a run that measures coverage (coverage is not imported otherwise).
    """
    # Known by its options, not by a plugin's name: `-p pytest_cov.plugin` (autoload off)
    # registers it under that name, not its entry point's.
    if not getattr(options, "cov_source", None) or getattr(options, "no_cov", False):
        return []
    from coverage.config import read_coverage_config
    from coverage.exceptions import CoverageException

    try:
        read = read_coverage_config(options.cov_config, warn=lambda _message: None)
    except CoverageException:
        return []  # a configuration coverage refuses: pytest-cov stops the run itself
    found = [
        Target(path, "coverage (pytest-cov's --cov) erases its data file {path} (and the "
               "parallel ones beside it) as the run starts, and writes it at the end")
        for path in _spellings(str(read.data_file), cwd)
    ]  # fmt: skip
    found += _coverage_debug_targets(read.debug_file, cwd)
    reports = getattr(options, "cov_report", None)
    for kind, dest in reports.items() if isinstance(reports, Mapping) else ():
        if kind.startswith("term") or (dest is None and kind not in _COVERAGE_REPORTS):
            continue  # to the terminal; annotate with no DEST writes beside each source
        value = dest if dest is not None else getattr(read, _COVERAGE_REPORTS[kind])
        found += [
            Target(path, f"pytest-cov's --cov-report={kind} writes its report to {{path}}")
            for path in _spellings(str(value), cwd)
        ]
    return found


def _coverage_debug_targets(debug_file: str | None, cwd: Path) -> list[Target]:
    """Coverage's debug output file: ``[run] debug_file``, else ``COVERAGE_DEBUG_FILE``
    (``stdout`` and ``stderr`` name the streams). Coverage opens it for appending as the
    measurement is made, debug options or not, and appends to it what ``COVERAGE_DEBUG`` (or
    ``[run] debug``) asks: ``COVERAGE_DEBUG=sys`` with ``COVERAGE_DEBUG_FILE`` naming a
    production record appended 11 kB of text to it, under pytest-cov's ``--cov`` (red team
    51)."""
    name = debug_file or os.environ.get("COVERAGE_DEBUG_FILE")
    if not name or (debug_file is None and name in {"stdout", "stderr"}):
        return []
    where = "[run] debug_file" if debug_file else "COVERAGE_DEBUG_FILE"
    return [
        Target(
            path,
            f"coverage appends its debug output to {where}, {{path}}, opening it as the "
            "measurement starts",
            fix="Point it outside every data root, or unset it (COVERAGE_DEBUG_FILE, or "
            "debug_file in coverage's configuration)",
        )
        for path in _spellings(str(name), cwd)
    ]


def _running_coverage_targets(cwd: Path) -> list[Target]:
    """The data file of a coverage measurement that runs in this process since before
    pytest started: ``coverage run -m pytest``, or coverage's ``.pth`` under
    ``COVERAGE_PROCESS_START`` (set for a project's subprocess coverage, it starts in every
    Python process). Neither is pytest-cov, whose options `_coverage_targets` reads.

    It writes its data file (``.coverage`` in the current directory, unless ``COVERAGE_FILE``
    or ``[run] data_file`` says otherwise; files beside it with ``parallel``) as the process
    exits, whatever the run's outcome: pytest started from a live server's ``sessions/``
    was refused, and coverage then wrote a 53 kB ``.coverage`` into it (red team 32). The
    refusal stops the measurement and its save (`Target.prevent`).
    """
    module = sys.modules.get("coverage")
    running = getattr(getattr(module, "Coverage", None), "current", lambda: None)()
    if running is None:
        return []
    data_file = str(running.config.data_file)

    def prevent() -> None:
        # Both ways a measurement saves go through its `save`: the exit hook of a
        # process_startup measurement, and `coverage run`'s own call once its program ends.
        with contextlib.suppress(Exception):
            running.stop()
        running.save = lambda: None

    return [
        Target(
            path,
            "coverage, measuring this process since before pytest started (`coverage run`, "
            "or its .pth under COVERAGE_PROCESS_START), writes its data file {path} (or "
            "files beside it, with parallel) as the process exits",
            fix="Run pytest from a directory outside every data root, or point coverage's "
            "data file there (COVERAGE_FILE, or [run] data_file in the file "
            "COVERAGE_PROCESS_START or --rcfile names); this process's coverage data is not "
            "saved",
            prevent=prevent,
        )
        for path in _spellings(data_file, cwd)
    ] + _coverage_debug_targets(running.config.debug_file, cwd)


#: Python's own profilers and tracer, run as ``python -m <module> ... -m pytest``: the options
#: that name what each writes once its program ends, and what writes it.
_WRAPPERS: dict[str, tuple[frozenset[str], str, str]] = {
    "cProfile": (frozenset({"-o", "--outfile"}), "cProfile", "Profile.dump_stats"),
    "profile": (frozenset({"-o", "--outfile"}), "profile", "Profile.dump_stats"),
    "trace": (
        frozenset({"-f", "--file", "-C", "--coverdir"}),
        "trace",
        "CoverageResults.write_results",
    ),
}


#: Their other options that take a value (the next word is not the program they run).
_WRAPPER_VALUES = frozenset({"-s", "--sort", "--ignore-module", "--ignore-dir"})


def _wrapper_outputs(argv: list[str]) -> Iterator[tuple[str, str]]:
    """``(module, path)`` for each output option of a profiler or tracer that this process's
    command line runs pytest under (`_WRAPPERS`)."""
    for index, word in enumerate(argv):
        module = argv[index + 1] if word == "-m" and index + 1 < len(argv) else None
        if module is None and word.startswith("-m") and len(word) > 2:
            module = word[2:]
        if module not in _WRAPPERS:
            continue
        names = _WRAPPERS[module][0]
        rest = iter(argv[index + (1 if word != "-m" else 2) :])
        for option in rest:
            if (option == "-m" and module != "trace") or not option.startswith("-"):
                break  # the program it runs: its options are its own (trace's -m is
                # --missing, a flag; its --module makes the program's name a module's)
            if option in names:
                value = next(rest, None)
                if value is not None:
                    yield module, value
            elif option in _WRAPPER_VALUES:
                next(rest, None)  # another option's value (`-s time`), not the program
            elif "=" in option and option.split("=", 1)[0] in names:
                yield module, option.split("=", 1)[1]
            elif option[:2] in names and not option.startswith("--"):
                yield module, option[2:]


def _wrapper_targets(cwd: Path) -> list[Target]:
    """What a profiler or tracer that runs pytest in this process writes as its program
    ends, whatever the run's outcome: ``python -m cProfile -o <live root>/sessions/prof.out
    -m pytest`` wrote 547 kB into a live server's ``sessions/`` (red team 32), and ``-o``
    naming a ``session.json`` rewrites it. Read from the process's own command line (the
    module replaces ``sys.argv`` with pytest's); a refusal stops the write (`Target.prevent`).
    """
    try:
        argv = [os.fsdecode(w) for w in Path("/proc/self/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return []
    found = []
    for module, value in _wrapper_outputs(argv):
        name, writer = _WRAPPERS[module][1:]

        def prevent(name: str = name, writer: str = writer) -> None:
            # Its write comes once pytest has returned, in the module's own code: the
            # method that writes is made a no-op, in this process, which is about to exit.
            # `python -m cProfile` runs the module as __main__, a copy of its own.
            owner, method = writer.split(".")
            for loaded in (sys.modules.get(name), sys.modules.get("__main__")):
                spec = getattr(loaded, "__spec__", None)
                if (
                    loaded is not None
                    and hasattr(loaded, owner)
                    and (loaded is sys.modules.get(name) or getattr(spec, "name", None) == name)
                ):
                    setattr(getattr(loaded, owner), method, lambda *_args, **_kwargs: None)

        found += [
            Target(
                path,
                f"python -m {module}, which runs pytest in this process, writes {{path}} once "
                "pytest returns",
                fix=f"Give python -m {module} an output outside every data root; nothing of "
                "it is written for this run",
                prevent=prevent,
            )
            for path in _spellings(value, cwd)
        ]
    return found


def targets(config: pytest.Config, options: Any, *, now: bool = False) -> list[Target]:
    """Every path this run's pytest and its plugins are told to write in or delete.

    Args:
        config: the run's config (its ini values, rootdir and invocation directory).
        options: the parsed options: ``known_args_namespace`` before the conftests load,
            ``config.option`` after (with the options they add).
        now: also read relative paths against the current directory, where it is not the
            invocation directory. pytest opens ``--debug`` and ``--log-file`` (and makes
            junitxml's path absolute) after the conftests are imported, against the
            directory the process is in then: a conftest that changes directory as it is
            imported (``os.chdir(Path(__file__).parent)``, a common habit) into a production
            session made ``--debug=session.json`` rewrite that session's record (red team
            38). Not as the run ends, where a test may have left the process in its own
            sandbox's root, and what pytest writes then is absolute already.
    """
    found: list[Target] = []
    here = config.invocation_params.dir
    with _directories_resolved_once():
        with contextlib.suppress(OSError):  # a current directory removed: nothing opens there
            if now and (current := Path.cwd()) != here:
                found += _targets_from(config, options, current)
        return _targets_from(config, options, here) + found


def _targets_from(config: pytest.Config, options: Any, cwd: Path) -> list[Target]:
    """`targets`, with relative paths read against `cwd`."""
    found: list[Target] = []

    def add(value: Any, does: str, base: Path = cwd, *, deletes: bool = False) -> None:
        for text in _strings(value):
            found.extend(Target(path, does, deletes) for path in _spellings(text, base))

    add(getattr(options, "xmlpath", None), "pytest's --junitxml rewrites {path} as the run ends")
    add(getattr(options, "debug", None), "pytest's --debug rewrites {path} as the run starts")
    log_file = getattr(options, "log_file", None) or pytest_ini(config, "log_file")
    # As pytest's logging plugin reads its mode (the option, then the ini value). Appended
    # to, the file was said to be rewritten (red team 75): a record or a stamp that gains
    # the run's log no longer parses, an audit log gains lines the app never wrote.
    mode = getattr(options, "log_file_mode", None) or pytest_ini(config, "log_file_mode")
    add(
        log_file,
        "pytest's log_file (--log-file, in log_file_mode 'a': --log-file-mode=a) appends the "
        "run's log records to {path} from the run's start (appended to, a record or a stamp "
        "no longer parses, an audit log gains lines the app never wrote)"
        if mode == "a"
        else "pytest's log_file (--log-file) rewrites {path} as the run starts",
    )
    if not config.pluginmanager.is_blocked("cacheprovider"):
        for text, does, deletes in _cache_targets(config, options):
            add(text, does, deletes=deletes)
    # Read by hypothesis (when a test first uses its database), not by pytest: a failing
    # @given test wrote examples/ and constants/ into a live sessions/ (red team 30).
    add(
        os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"),
        "hypothesis writes its example database (examples/, constants/) under "
        "HYPOTHESIS_STORAGE_DIRECTORY, {path}",
    )
    # Python's tempfile, which the run's code and every process it starts use: with a
    # --basetemp, pytest's own temporary root was never checked, and TMPDIR in a production
    # root's sessions/ got every test's mkdtemp() and NamedTemporaryFile made there (red team
    # 51). Where it is, as tempfile.gettempdir() says (cached). Without a --basetemp, pytest
    # makes pytest-of-<user> there, which the sandbox's own check refuses first, saying so;
    # /tmp itself is the registry's, which refuses a run where it lies in a data root
    # (red team 44), naming /tmp rather than a variable.
    temporary = Path(tempfile.gettempdir())
    if getattr(options, "basetemp", None) and _real(str(temporary)) != RUNS_DIR.parent:
        found.append(
            Target(
                temporary,
                "Python's tempfile makes the temporary files and directories of the run's "
                "code (tempfile.mkdtemp, NamedTemporaryFile, multiprocessing's pymp-*) and of "
                "every process it starts in {path}",
                fix="Point TMPDIR (or TEMP, TMP) outside every data root",
            )
        )
    found += _xdist_targets(config, options, cwd)
    found += _coverage_targets(options, cwd)
    found += _running_coverage_targets(cwd)
    found += _wrapper_targets(cwd)
    found.append(
        Target(
            cwd,
            "pytest's plugins write relative paths (hypothesis's .hypothesis/, a relative "
            "--junitxml) in the current directory, {path}",
            fix="Run pytest from a directory outside every data root",
        )
    )
    found.append(
        Target(
            config.rootpath,
            "pytest writes its cache and its conftests' __pycache__/ in its rootdir, {path}",
            fix="Give pytest a rootdir outside every data root (--rootdir, or where its ini "
            "file lies)",
        )
    )
    # With bytecode off too: code can turn it on later (`sys.dont_write_bytecode = False`
    # in a conftest wrote test modules' bytecode under `-X pycache_prefix`; red team 38).
    if sys.pycache_prefix:
        found.append(
            Target(
                Path(sys.pycache_prefix).absolute(),
                "Python and pytest's assertion rewriting write the bytecode of every module "
                "they import under sys.pycache_prefix, {path}",
                fix="Unset PYTHONPYCACHEPREFIX (or -X pycache_prefix), or point it outside "
                "every data root (what Python imported before the plugin ran is written there "
                "already)",
            )
        )
    for arg, path in _test_paths(config, options):
        add(path, f"pytest imports the conftest.py and test modules of the test path {arg}, and "
            "Python writes their __pycache__/ in {path}")  # fmt: skip
    names = _option_names(config)
    for dest, value in sorted(vars(options).items()):
        if dest not in _READ_ONLY_OPTIONS and not isinstance(value, bool):
            add(value, f"the option {names.get(dest, dest)} names {{path}}, where a plugin "
                "may write")  # fmt: skip
    inifile = config.inipath.parent if config.inipath else config.rootpath
    for name in sorted(config._parser._inidict):  # private: see pyproject.toml
        if name in _READ_ONLY_INI:
            continue
        try:
            value = config.getini(name)
        except (ValueError, TypeError):
            continue  # a value its own reader refuses: pytest says so itself
        if isinstance(value, str | os.PathLike | list):
            for base in dict.fromkeys((cwd, inifile)):
                add(value, f"the ini value {name} names {{path}}, where a plugin may write", base)
    return found


def _test_paths(config: pytest.Config, options: Any) -> Iterator[tuple[str, str]]:
    """Each test path as pytest will take it, with where it lies: ``(what was given, path)``.

    pytest imports each one's ``conftest.py`` (and those of its parents) before any
    collection, then its test modules, and Python writes their bytecode beside them. The
    paths are not only the arguments: without any, pytest globs each ``testpaths`` entry
    (``data/prod*/sessions/*/records`` names no data root as written, and imported a
    production record uploaded as ``conftest.py``, writing ``__pycache__/`` into its session:
    red team 38), and ``--pyargs`` finds a module on ``sys.path``. Decided here as pytest
    decides them.
    """
    args = [str(a) for a in getattr(options, "file_or_dir", None) or []]
    pyargs = bool(getattr(options, "pyargs", False))
    globbed = False
    if not args and config.invocation_params.dir == config.rootpath:
        # As `Config._decide_args` (pytest 8.0 to 9): testpaths, only run from the rootdir,
        # each entry globbed (relative to the current directory) unless --pyargs.
        with contextlib.suppress(ValueError):  # no testpaths ini value: the arguments only
            testpaths = [str(t) for t in config.getini("testpaths")]
            if pyargs:
                args = testpaths
            else:
                # Path.glob takes no absolute pattern: glob's, as pytest's own.
                args = [f for t in testpaths for f in sorted(glob.iglob(t, recursive=True))]  # noqa: PTH207
                globbed = True
    for given in args:
        name = str(given).split("::", 1)[0].split("[", 1)[0]
        arg = (
            f"{given} (from testpaths = {config.getini('testpaths')} in {config.inipath})"
            if globbed
            else given
        )
        yield arg, name
        if pyargs and name and "/" not in name:
            # Where the top-level package lies, found without importing anything (the
            # dotted name's own lookup imports its parents); the module lies inside it.
            with contextlib.suppress(ImportError, ValueError, AttributeError):
                spec = importlib.util.find_spec(name.split(".", 1)[0])
                if spec is not None and spec.origin not in (None, "built-in", "frozen"):
                    yield arg, str(Path(spec.origin).parent)
                for location in (spec.submodule_search_locations or []) if spec else []:
                    yield arg, str(location)


def _import_path_targets() -> list[Target]:
    """Each ``sys.path`` entry: Python writes the bytecode of what it imports from one
    beside the source. ``PYTHONPATH`` naming a production session's ``records/``, with
    ``--pyargs test_notes`` or ``-p test_notes``, got a record uploaded as ``test_notes.py``
    imported and ``__pycache__/`` written into the session (red team 38). Checked at the
    start only: tests may put their own directories there."""
    found = []
    for entry in dict.fromkeys(sys.path):
        try:
            if not isinstance(entry, str) or not entry or not Path(entry).is_dir():
                continue  # '' is the current directory, checked as such; zip files are read
        except (OSError, ValueError):
            continue  # a name no filesystem can hold: nothing is imported from there
        found += [
            Target(
                path,
                "Python imports modules from the sys.path entry {path} (PYTHONPATH, a .pth "
                "file or pytest's own) and writes their __pycache__/ there",
                fix="Take that directory out of PYTHONPATH (or the .pth file that adds it); "
                "what Python imported from there before the plugin ran (a -p plugin) is "
                "written there already",
            )
            for path in _spellings(entry, Path.cwd())
        ]
    return found


#: The roots the run protects, by name, once the plugin (or its fallback) knows them: what
#: an option that argparse opens as it parses is checked against (`guard_file_options`),
#: with what lies on disk, before they are known too.
FILE_OPTION_ROOTS: dict[str, Path] = {}

#: The letters of a mode in which ``open`` writes (truncates, appends, creates).
_WRITING_MODES = frozenset("wax+")


class _CheckedFileType:
    """An option's ``argparse.FileType`` in a writing mode, which checks the path before
    argparse opens it.

    argparse opens such a file as it parses the command line, before any hook of pytest's
    runs after the parse: ``type=argparse.FileType("w")`` on a conftest's option, given a
    production session's ``session.json``, emptied the record while the run passed (red
    team 51). Every parse of the arguments calls it (pytest parses them several times), and
    the option's string default too.
    """

    def __init__(self, inner: argparse.FileType, option: str) -> None:
        self.inner, self.option = inner, option

    def __call__(self, value: str) -> Any:
        __tracebackhide__ = True
        if value != "-":  # argparse's standard stream, no file
            refuse_file_option(self.option, getattr(self.inner, "_mode", "w"), value)
        return self.inner(value)

    def __repr__(self) -> str:  # as argparse names it in its own errors
        return repr(self.inner)


def _check_file_type(option: Any) -> None:
    """Put `_CheckedFileType` in place of `option`'s ``argparse.FileType`` in a writing mode.
    pytest 9 keeps the argparse action (``_action``), pytest 8 the keywords it builds each
    parse's action from (``_attrs``). Private: see pyproject.toml."""
    action = getattr(option, "_action", None)
    attrs = vars(action) if action is not None else getattr(option, "_attrs", None)
    if not isinstance(attrs, dict):
        return
    kind = attrs.get("type")
    if not isinstance(kind, argparse.FileType):
        return
    if not _WRITING_MODES & set(getattr(kind, "_mode", "")):
        return  # read only: argparse opens the file, and nothing is changed
    names = list(option.names()) or [str(getattr(option, "dest", "?"))]
    attrs["type"] = _CheckedFileType(kind, max(names, key=len))
    if action is None and hasattr(option, "type"):
        option.type = attrs["type"]


def guard_file_options(parser: pytest.Parser) -> None:
    """Check, before argparse opens it, the path of every option that argparse opens for
    writing as it parses (``type=argparse.FileType("w")``): the options registered so far,
    and each one a plugin or a conftest registers later. Private: see pyproject.toml."""
    if getattr(parser, "_app_file_options", False):
        return
    for group in [parser._anonymous, *parser._groups]:
        for option in group.options:
            _check_file_type(option)
    processoption = parser.processoption

    def checked(option: Any) -> None:
        _check_file_type(option)
        processoption(option)

    parser.processoption = checked  # type: ignore[method-assign]
    parser._app_file_options = True  # type: ignore[attr-defined]


def refuse_file_option(option: str, mode: str, value: str) -> None:
    """Refuse to let argparse open `value` for the option `option` in `mode` where it leads
    into a data root (`_finding`: by path, what lies on disk, a mount, another name)."""
    __tracebackhide__ = True
    try:
        here = Path.cwd()
    except OSError:
        return  # a current directory removed: argparse cannot open a relative path either
    what = (
        f"argparse opens {{path}} for writing (mode {mode!r}: "
        f"{'it empties the file first' if 'w' in mode else 'it writes into it'}) as pytest "
        f"parses the option {option}, whose type is argparse.FileType, before any check of "
        "the run"
    )
    fix = (
        f"Give {option} a path outside every data root; and leave argparse.FileType out of "
        "the option's declaration (pytest_addoption): a path type (str, pathlib.Path) "
        "opened by the code that writes, when it writes, can be checked by the run"
    )
    found = [Target(path, what, fix=fix) for path in _spellings(value, here)]
    for target, (where, fixed) in _findings(found, dict(FILE_OPTION_ROOTS), {}):
        raise usage_error(
            f"app: refusing to run: {target.does.format(path=target.path)}, {where}. None of "
            f"it goes through the app, so its sandbox cannot stop it. {fixed}"
        )


def pycache_prefix_conflict(prefix: str, roots: dict[str, Path]) -> str | None:
    """Where a ``sys.pycache_prefix`` set during the run leads into a data root, said for a
    message; None where it does not."""
    seen: _Seen = {}
    for path in _spellings(prefix, Path.cwd()):
        if (where := _conflict(Target(path, ""), roots, seen)) is not None:
            return where
    return None


def _links_and_files(directory: Path) -> Iterator[Path]:
    """Every file and link under ``directory`` (links not followed): what pytest's cache
    rewrites in place (``Cache.set`` is ``write_text``, through a link: its ``nodeids``, every
    run), where a check of the directory alone never looked."""
    from app.dataroot import walk_tree

    for here, dirs, files, _depth in walk_tree(directory):
        yield from (Path(here, name) for name in files)
        # As text: a Path of each directory of a deep tree (a tool's cache 1,000 levels
        # deep) parsed its whole path again, seconds a run (red team 55).
        for name in dirs:
            if os.path.islink(joined := os.path.join(here, name)):  # noqa: PTH114, PTH118
                yield Path(joined)


def _other_names(path: Path, roots: dict[str, Path]) -> tuple[str, str] | None:
    """Where ``path`` is a file with other names (hard links): what a write in place there
    changes, said for a refusal, and what resolves it. None for one name, or no file.

    pytest's writers open their files with ``open("w")``, in place: under every name of the
    file. A hard link of a production session's record, made anywhere on its filesystem,
    is no path in a data root, and got that record rewritten. The other name is looked
    for in `roots` (only then is a root walked: a file with two names is rare).
    """
    try:
        if not name_there(path):
            return None
        found = path.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(found.st_mode) or found.st_nlink < 2:
        return None
    said = f"which is a hard link ({found.st_nlink} names)"
    fix = (
        f"Remove that name (rm {path}: the other names keep the file), and pytest writes a "
        "new file there"
    )
    wanted = (found.st_dev, found.st_ino)
    for name, root in roots.items():
        if (other := _named_in(root, wanted)) is not None:
            where = f"in the data root of profile {name!r} ({root}; {_holder(root)})"
            return f"{said} of {other} {where}", fix
    anywhere = (
        f"{said}: pytest rewrites it in place, which changes it under every other name too, "
        f"and one may lie in a data root (`find / -xdev -samefile {path}` lists them)"
    )
    return anywhere, fix


def _named_in(root: Path, wanted: tuple[int, int]) -> Path | None:
    """A name of the file ``wanted`` (device, inode) inside ``root``, if there is one."""
    with contextlib.suppress(OSError):
        if root.stat().st_dev != wanted[0]:
            return None  # a hard link never crosses filesystems
    from app.dataroot import walk_tree

    for here, _dirs, files, _depth in walk_tree(root):
        for name in files:
            with contextlib.suppress(OSError):
                seen = os.lstat(os.path.join(here, name))  # noqa: PTH118 - a walk's names
                if (seen.st_dev, seen.st_ino) == wanted:
                    return Path(here, name)
    return None


#: What one pass of a check found walking up from each directory (as text, after the
#: walk's own mark: `_walked_up`).
_Seen = dict[str, tuple[Path, str] | None]


def _walked_up(
    path: Path, seen: _Seen, mark: str, look: Callable[[str], tuple[Path, str] | None]
) -> tuple[Path, str] | None:
    """The first of `look`'s findings at `path` or a directory above it, None where it finds
    none up to ``/``; walked up as text, not as `Path.parents`.

    Each directory is looked at once a pass, and what the walk found from it is kept in
    `seen` (under `mark` and its text): a check's thirty paths lie in two or three
    directories, and each walked on up to ``/`` again through what it had seen, about 300
    `os.path.dirname` calls and their look-ups a pass (`bench/README.md`, "perf-startup65").
    What a walk from a directory finds is what its own look finds, else what the walk from
    its parent finds, so a walk stops at the first directory walked from already."""
    directory = os.fspath(path)
    passed: list[str] = []
    found = None
    while (walked := mark + directory) not in seen:
        passed.append(walked)
        if (found := look(directory)) is not None:
            break
        parent = os.path.dirname(directory)  # noqa: PTH120 - see above
        if parent == directory:
            break
        directory = parent
    else:
        found = seen[walked]
    for walked in passed:
        seen[walked] = found
    return found


def _data_root_at_or_above(path: Path, seen: _Seen) -> tuple[Path, str] | None:
    """The data root at `path` or above it (held by a live process, or stamped), if any.

    Walked up as text (`_walked_up`): every check of what pytest writes walks about thirty
    paths up to ``/``, four times a run, and pathlib's parsing of each parent was most of
    the checks' cost (`bench/plugin_startup.py`)."""
    return _walked_up(path, seen, "", _data_root_at)


def _data_root_at(directory: str) -> tuple[Path, str] | None:
    """`directory` (text) as a data root held by a live process, or stamped; else None."""
    from app.dataroot import STAMP_FILE
    from app.lock import LOCK_FILE, probe

    lock = os.path.join(directory, LOCK_FILE)  # noqa: PTH118 - as text, see above
    stamp = os.path.join(directory, STAMP_FILE)  # noqa: PTH118
    # A name past the filesystem's limit (an ini value of text, a long log format, read as
    # a path) is no directory: it ended the run in a bare OSError traceback (red team 38).
    # Nothing can be written there either.
    with contextlib.suppress(OSError):
        if _is_file(lock) and (held := probe(Path(directory))).held:
            return Path(directory), f"held by {describe_holder(held.holder)}"
        if _is_file(stamp):
            return Path(directory), f"it has a profile stamp, {STAMP_FILE}"
    return None


def _own_directory_at_or_above(path: Path, seen: _Seen) -> tuple[Path, str] | None:
    """Where no root above `path` has a stamp or a holder: the directory at or above it that
    is one of a root's own, or a root whose stamp and lock file were deleted
    (`app.dataroot.a_root_s_own`). A root's ``.trash/`` bound where its filesystem is
    mounted nowhere in sight, or the ``.trash/`` of such a root: pytest's --junitxml, cache
    and --basetemp went into it (red team 63). Kept in `seen` under a mark no path has."""
    return _walked_up(path, seen, "\0", _own_directory_at)


def _own_directory_at(directory: str) -> tuple[Path, str] | None:
    """`directory` (text) as one of a root's own, or a root that lost its stamp and lock."""
    from app.dataroot import a_root_s_own

    own = None
    with contextlib.suppress(OSError):
        own = a_root_s_own(directory)
    return None if own is None else (Path(directory), own)


#: The errors `Path.is_file` answers False for (pathlib's own list); any other is raised.
_NOT_THERE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})


def _is_file(path: str) -> bool:
    """`Path(path).is_file()` for a path held as text, as `_data_root_at_or_above` walks:
    without making two paths (the directory's and the file's) to stat one name.

    Asked first whether the name is there at all (``faccessat``, as this process's
    effective ids): nearly every directory a check walks up has neither a lock file nor a
    stamp, and `os.stat` said so by raising, about 7 K instructions a name, some 300 names
    a run (bench/README.md, "Session 69"). Where that answer is no for another reason than
    a missing name (a directory this user may not search, a name too long), the stat
    raised an OSError its only caller (`_data_root_at`) takes as "no root here"; False
    says the same there."""
    try:
        if not os.access(path, os.F_OK, effective_ids=True):
            return False
        return stat.S_ISREG(os.stat(path).st_mode)  # noqa: PTH116
    except OSError as error:
        if error.errno not in _NOT_THERE:
            raise
        return False
    except ValueError:  # a NUL in the name
        return False


def _within(path: Path, root: Path) -> bool:
    """`path.is_relative_to(root)`, for the absolute, normal paths compared here, as text
    (pathlib's costs a parse of both paths at every call, as above)."""
    text, top = os.fspath(path), os.fspath(root)
    return text == top or text.startswith(top.rstrip("/") + "/")


def _data_root_inside(path: Path) -> tuple[Path, str] | None:
    """A data root below a directory pytest deletes: held by a live process, or stamped."""
    from app.dataroot import STAMP_FILE, walk_tree
    from app.lock import LOCK_FILE, probe

    unseen: list[tuple[str, OSError]] = []
    walk = walk_tree(path, lambda *found: unseen.append(found), open_own=True)
    for directory, _dirs, files, _depth in walk:
        here = Path(directory)
        if LOCK_FILE in files and (held := probe(here)).held:
            return here, f"held by {describe_holder(held.holder)}"
        if STAMP_FILE in files:
            return here, f"it has a profile stamp, {STAMP_FILE}"
    # What cannot be listed hides what it holds, and is deleted all the same (a stamped
    # root below a path past the system's limit, red team 55).
    for directory, error in unseen:
        if not isinstance(error, FileNotFoundError) and directory != os.fspath(path):
            why = error.strerror or str(error)
            return Path(directory), f"cannot be looked through for a data root ({why})"
    return None


def _holder(root: Path) -> str:
    from app.lock import probe

    try:
        seen = probe(root)
    except PermissionError:  # another user's root, mode 0700: its holder cannot be seen
        from app.testing.guard import out_of_reach

        return f"whether a process holds it cannot be seen here: {out_of_reach(root)}"
    return f"held by {describe_holder(seen.holder)}" if seen.held else "no process holds it now"


def _conflict(target: Target, roots: dict[str, Path], seen: _Seen) -> str | None:
    """Where `target` meets a data root, said for a refusal; None where it meets none."""
    from app.dataroot import one_reading

    with one_reading():
        return _conflict_seen(target, roots, seen)


def _conflict_seen(target: Target, roots: dict[str, Path], seen: _Seen) -> str | None:
    """`_conflict`, with the mount table read once for its three looks (`one_reading`)."""
    from app.dataroot import bound_from, served_from, shown_from_a_session
    from app.sandbox import served_by
    from app.testing.guard import unknown_mount_at

    found = _conflict_at(target, roots, seen)
    # A path that lies, as spelled, in a root the run knows is named with that root's profile
    # and holder already: how the kernel reaches it (a mount of the machine's /dev/shm shown
    # again in a test's own /dev, a link such as /var/run on the way) adds nothing but a
    # second spelling of the same file, through /proc/<pid>/root/... (session 74: the test
    # of standard streams moved with os.dup2, its temporary root on /dev/shm).
    named = any(_within(target.path, root) for root in roots.values())
    if found is None or named:
        pass
    elif (real := Path(os.path.realpath(target.path))) != target.path:
        # The same through a symbolic link on the way (a `PYTHONPYCACHEPREFIX` of a link to
        # a root, checked as spelled): the link's path was named "the data root" (red team
        # 74), where `rm -rf <link>/` empties the root it leads to.
        if (there := _conflict_at(target._replace(path=real), roots, seen)) is not None:
            found = f"{there}: it is {real}, reached through a symbolic link on its way"
    elif (source := bound_from(target.path)) not in (None, target.path):
        # A whole root bound at or above the path shows its stamp there: the refusal named
        # the mount point "the data root", and neither the root it is, nor its profile and
        # holder; a clean-up of that directory (`rm -rf`) would empty it through the mount
        # (red team 74). Said as where it lies in fact, as a root's directory bound is.
        found = (
            f"{_conflict_at(target._replace(path=source), roots, seen) or found}: it is "
            f"{source}, seen through a mount (`findmnt -T {target.path}` shows it)"
        )
    if found is None and (source := bound_from(target.path)) is not None:
        # Through a bind mount (`mount --bind <root>/sessions <tmp_path>/s`, in a mount
        # namespace of the test's own): the same checks, where it lies in fact.
        found = _conflict_at(target._replace(path=source), roots, seen)
        if found is not None:
            found = (
                f"{found}: it is {source}, seen through a mount "
                f"(`findmnt -T {target.path}` shows it)"
            )
    if found is None and (served := served_from(target.path)) is not None:
        # Through a FUSE or network filesystem a test mounted in a sandbox (bindfs of a
        # live root's sessions/ at <tmp_path>/bf: a child's --basetemp=<tmp_path>/bf/x made
        # x/ in it; red team 49), no mark, device or mount source says what lies there.
        point, kind = served
        if (where := unknown_mount_at(point, kind)) is not None:
            found = (
                f"which lies on a filesystem of type {kind} mounted at {point}, {where}, "
                f"{served_by(kind)}: it may show any directory, a data root "
                f"too, and nothing here says which (unmount it: `fusermount -u {point}`, or "
                f"`umount {point}`)"
            )
    if found is None and (own := _own_directory_at_or_above(target.path, seen)) is not None:
        directory, why = own
        found = (
            f"which lies in {directory}, which {why.removeprefix('it ')}"
            if why.startswith("it is the ")  # one of a root's own directories
            else f"which lies in the data root {directory} ({why})"
        )
    if found is None and (session_s := shown_from_a_session(target.path)) is not None:
        # A session's records/ bound where its filesystem is mounted nowhere in sight: no
        # mark, nothing above it (red team 63).
        found = (
            f"which lies in a directory of a session of a data root, by its place in its "
            f"filesystem ({os.fsdecode(session_s)}), seen through a mount (`findmnt -T "
            f"{target.path}` shows it)"
        )
    return found


def _conflict_at(target: Target, roots: dict[str, Path], seen: _Seen) -> str | None:
    for name, root in roots.items():
        if _within(target.path, root):
            return f"which lies in the data root of profile {name!r} ({root}; {_holder(root)})"
        if target.deletes and _within(root, target.path):
            return f"which holds the data root of profile {name!r} ({root}; {_holder(root)})"
    if (above := _data_root_at_or_above(target.path, seen)) is not None:
        return f"which lies in the data root {above[0]} ({above[1]})"
    if target.deletes and (inside := _data_root_inside(target.path)) is not None:
        if inside[1].startswith("cannot be looked through"):
            from app.testing.guard import _shortened

            return f"which holds {_shortened(str(inside[0]))}, which {inside[1]}"
        return f"which holds the data root {inside[0]} ({inside[1]})"
    return None


def refuse(
    config: pytest.Config,
    options: Any,
    roots: dict[str, Path],
    why: str = "",
    *,
    at_configure: bool = False,
) -> None:
    """Refuse the run if pytest or a plugin is told to write or delete in a data root.

    Args:
        config: the run's config.
        options: its parsed options (see `targets`).
        roots: the roots the run protects, by name (the settings' profiles, live holders, an
            enclosing run's).
        why: what to add to the refusal (why the plugin is inactive, in such a run).
        at_configure: also check what the writers configured so far hold (junitxml's
            path, made absolute where the process was then).

    Raises:
        pytest.UsageError: naming the path, what tells pytest to write it, the data root with
            its holder, and what resolves it.
    """
    __tracebackhide__ = True
    seen: _Seen = {}
    found = [*targets(config, options, now=True), *_import_path_targets()]
    found = list(dict.fromkeys([*found, *(_end_targets(config) if at_configure else [])]))
    for target, (where, fix) in _findings(found, roots, seen):
        does = target.does.format(path=target.path)
        _prevent(found, roots, seen)
        raise usage_error(
            f"app: refusing to run: {does}, {where}. None of it goes through the app, so its "
            f"sandbox cannot stop it, whoever's run it is. {fix}{_changed(config, at_configure)}"
            f"{why}"
        )


def _changed(config: pytest.Config, at_configure: bool) -> str:
    """Said where what was refused changed after the options were first checked."""
    if moved := _moved(config):
        return moved
    if at_configure:
        return (
            ". It was not so as the run's options were first checked: a conftest's or a "
            "plugin's own pytest_configure changed it (config.option, or a variable it "
            "names), and pytest would write there all the same; change it there"
        )
    return ""


def _moved(config: pytest.Config) -> str:
    """Said where the process is no longer in its invocation directory: a relative path is
    opened against where a conftest (or a plugin) moved it."""
    with contextlib.suppress(OSError):
        if (current := Path.cwd()) != config.invocation_params.dir:
            return (
                f". The process is in {current} now, not in {config.invocation_params.dir} "
                "where pytest was started: a conftest or a plugin changed directory (as it "
                "was imported, or in a hook), and pytest opens relative paths there; give the "
                "path absolute, or leave the directory as it was"
            )
    return ""


def _prevent(found: list[Target], roots: dict[str, Path], seen: _Seen) -> None:
    """The run stops: what writes as the process exits must not."""
    for other in found:
        if other.prevent is not None and _conflict(other, roots, seen) is not None:
            other.prevent()


def _findings(
    found: list[Target], roots: dict[str, Path], seen: _Seen
) -> Iterator[tuple[Target, tuple[str, str]]]:
    """Each target of `found` that leads into a data root, with its finding (`_finding`).

    A path is looked at once a pass: a check reads some 140 targets but only about 30 paths
    (most option and ini values, ``auto`` or ``no``, read as names in the current directory,
    under several options each), and whether one leads into a data root depends on its path
    and on whether pytest deletes it, nothing else."""
    clean: set[tuple[Path, bool]] = set()
    directories: dict[str, bool] = {}  # each directory looked at once a pass (`_as_written`)
    for target in found:
        if (key := (target.path, target.deletes)) in clean:
            continue
        if (finding := _finding(target, roots, seen, directories)) is None:
            clean.add(key)
        else:
            yield target, finding


def _finding(
    target: Target,
    roots: dict[str, Path],
    seen: _Seen,
    directories: dict[str, bool] | None = None,
) -> tuple[str, str] | None:
    """Where `target` leads into a data root, and what resolves it; None where it does not.

    `directories` (one pass of `_findings`) keeps whether each directory is reached through
    no link, for `_as_written`."""
    where = _conflict(target, roots, seen)
    if where is not None:
        return where, target.fix
    if (shared := _other_names(target.path, roots)) is not None:
        return shared
    if _as_written(target.path, directories):
        return None
    if (magic := process_link(target.path, streams=True)) is not None:
        where = (
            f"which passes through {magic}: it names what a process has open (or its "
            "directory) at the moment of the write, which a test can change after this "
            "check"
        )
        fix = (
            "Give the path of a file or directory instead (only the standard streams, "
            "/dev/stdout and /dev/stderr, may be written this way)"
        )
        return where, fix
    return None


def _as_written(path: Path, directories: dict[str, bool] | None) -> bool:
    """True where the system opens `path` (absolute) as it is written: no name of its
    directory is a symbolic link (looked at once a pass in `directories`) and its last name
    is none. Such a path passes through no link, so through no /proc link (`process_link`'s
    own first test, which lstat-ed every component of each of a check's thirty paths again,
    all in two or three directories). False where that is not known (no `directories`, a
    path not normalised): `process_link` looks."""
    if directories is None:
        return False
    text = os.fspath(path)
    head, tail = os.path.split(text)
    if not tail or not text.startswith("/") or os.path.normpath(text) != text:
        return False
    if (plain := directories.get(head)) is None:
        # Not `realpath(head) == head`: a link that reads as a loop is given back unchanged
        # by realpath, though the kernel follows it through /proc (`no_link_on_the_way`).
        plain = directories[head] = no_link_on_the_way(head)
    if not plain:
        return False
    try:
        return not name_there(text) or not stat.S_ISLNK(os.lstat(text).st_mode)
    except OSError:
        return True  # nothing there (or not this user's to see): the kernel stops there too


def _end_targets(config: pytest.Config) -> list[Target]:
    """What pytest writes as the run ends, read from the objects that write it rather than
    from the options: a test can change those objects (``config.cache._cachedir``, the
    junitxml writer's ``logfile``) after the start's check. Private: see pyproject.toml."""
    from _pytest.junitxml import xml_key

    found: list[Target] = []
    xml = config.stash.get(xml_key, None)
    if xml is not None:
        found += [
            Target(path, "pytest's --junitxml rewrites {path} as the run ends")
            for path in _spellings(str(xml.logfile), config.invocation_params.dir)
        ]
    cache = getattr(config, "cache", None)
    directory = getattr(cache, "_cachedir", None)
    if isinstance(directory, Path):
        found += [
            Target(path, "pytest's cache provider writes its cache_dir, {path}")
            for path in _spellings(str(directory), config.rootpath)
        ]
        found += [
            Target(path, "pytest's cache provider rewrites {path} in place")
            for inside in _links_and_files(directory)
            for path in _spellings(str(inside), config.rootpath)
        ]
    return found


def _names_on(path: Path) -> Iterator[Path]:
    """The names on `path` that a test can plant: each symbolic link on the way (the first
    ones first), then the file itself."""
    current = Path(path.anchor or "/")
    for part in path.parts[1:]:
        current = current / part
        if current.is_symlink():
            yield current
    yield path


def _unplant(found: list[Target], roots: dict[str, Path], seen: _Seen) -> list[str]:
    """Remove each name a test planted on the way to what pytest writes: a symbolic link
    leading into a data root (or through a link of /proc), a hard link of a file there.
    Only the name is removed, never what it leads to, and never a name inside a data root;
    pytest then makes a new file there. Nor a link to a standard stream (the system's
    ``/dev/stdout``, a path pytest may write): where one leads into a data root, a test
    moved the stream itself (``os.dup2``), and the check after this stops the run. Every
    run with ``--junitxml=/dev/stdout`` whose end found a planted link removed the machine's
    ``/dev/stdout``, and pytest then wrote its report as a file in its place. A name that
    cannot be removed is left too, for that check. Returns what was removed, said for the
    message."""
    removed: list[str] = []
    for target in found:
        for name in _names_on(target.path):
            if name.parent.resolve() != name.parent and not name.is_symlink():
                continue  # reached through a link: removed as that link, or not at all
            here = Target(name.parent.resolve(), "")
            if _conflict(here, roots, seen) is not None or process_link(name.parent):
                continue  # a name inside a data root is never ours to remove
            try:
                if name.is_symlink():
                    through = process_link(name)
                    if through is not None and process_link(name, streams=True) is None:
                        continue  # a standard stream's: the system's own, or a test's
                    lead = Target(name.resolve(), "")
                    if _finding(lead, roots, seen) is None and through is None:
                        continue  # a link that leads nowhere near a data root
                    said = f"{name} (a symbolic link to {name.readlink()})"
                elif _other_names(name, roots) is not None:
                    said = f"{name} (a name of that file, which has {name.lstat().st_nlink})"
                else:
                    continue
                name.unlink()
            except OSError:
                # Gone meanwhile (nothing leads through it now), or not this user's to
                # remove: the check after this one stops the run if it still leads in.
                continue
            removed.append(said)
    return list(dict.fromkeys(removed))


def refuse_at_end(config: pytest.Config, roots: dict[str, Path], why: str = "") -> str | None:
    """Check again, as the tests have ended and before pytest writes, what it writes then.

    The start's check (`refuse`) saw each path as it was then. A test can plant a link at
    one afterwards: a hard or symbolic link at the ``--junitxml`` path or in the cache
    (``v/cache/nodeids``), to a production session's ``session.json``, and pytest's writes at
    the end rewrote that record (red team 35); or change the writer itself
    (``config.cache._cachedir``). A planted name is removed (`_unplant`), and the run is
    failed with the returned message; where that cannot make the write safe, no writer
    runs (`pytest.exit`).

    Returns:
        None where nothing changed; else the message, naming the path, what writes it, the
        data root with its holder, what was removed and what to do.
    """
    __tracebackhide__ = True
    seen: _Seen = {}
    found = list(dict.fromkeys([*targets(config, config.option), *_end_targets(config)]))
    first = next(_findings(found, roots, seen), None)
    if first is None:
        return None
    target, (where, _fix) = first
    does = target.does.format(path=target.path)
    removed = _unplant(found, roots, seen)
    seen = {}
    found = list(dict.fromkeys([*targets(config, config.option), *_end_targets(config)]))
    if (left := next(_findings(found, roots, seen), None)) is not None:
        target, (where, _fix) = left
        _prevent(found, roots, seen)
        pytest.exit(
            "app: stopping before pytest writes its results: "
            f"{target.does.format(path=target.path)}, {where}. It was checked as the run "
            "started, and a test changed it since (a link on the way, a standard stream it "
            "names, moved with os.dup2, or the writer itself: config.cache, the junitxml "
            "writer); nothing pytest writes at the end is written for this run (no report, "
            "no cache). "
            f"Look for the test that changed it, and run again{why}",
            returncode=pytest.ExitCode.INTERNAL_ERROR,
        )
    if not removed:
        return None  # put back meanwhile: nothing leads into a data root now
    return (
        f"app: after the tests, {does}, {where}; it was checked as the run started, and a "
        f"test planted a link since. Removed (the name only, never what it leads to): "
        f"{'; '.join(removed)}, so pytest writes a new file there and the data root is "
        "unchanged; the run fails. Tests must not link pytest's outputs into a data root: "
        f"look for the test that made it (os.link, os.symlink){why}"
    )
