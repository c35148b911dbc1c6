"""What a test leaves behind for the environment's later Python processes to run.

Every Python of the environment runs, as it starts, each ``.pth`` file of its site-packages
and a ``sitecustomize`` or ``usercustomize`` module found on its path; the environment's
commands (``bin/app``, ``bin/pytest``) are scripts any later shell runs. A test that writes
one of them hands its code to processes outside any test run: a ``.pth`` that runs ``app
--profile production data purge --yes-i-mean-it`` ran in the developer's next command after
the run, where no guard of a run applies, and purged a stopped production root (session 67's
own hostile case; attacks/layer-3-sandbox.md). The guard cannot stop a write it does not make, so it
looks after every test (`Planted.check`), and at the run's end for the commands, and puts
back what changed: a file the test added is moved aside (renamed ``<name>.app-planted``,
which nothing runs), one it changed or removed gets its bytes as the run began again (the
test's version moved aside too). The test fails, naming the file.

Looked at cheaply: each place's directory ``mtime`` (a file added, removed or renamed) and
each start-up file's ``lstat`` per test (with its ctime, which no process sets back: a file
rewritten at its size and given its mtime back with ``os.utime`` is seen), about twenty
system calls; the commands' files only at the run's end. The places are every directory on
the path as the run began (a ``.pth`` adds some with ``site.addsitedir``, and they read
their own ``.pth`` files), the modules the ``.pth`` files import (and a file of such a
module's name added where their import searches, which shadows it if earlier on the path),
and a virtualenv's ``pyvenv.cfg`` (red team 67 on regress).
The plugin looks before any conftest is imported, after each test, as the session ends, once
every other plugin has ended the run, and at exit (`app.testing.plugin`).
Not covered: code planted elsewhere that a later process runs (a shell's rc file, a crontab,
the app's own source in an editable install, another environment, a ``__pycache__``'s
bytecode, the standard library's modules), or written by a process a test left running
after the run's last look, or by a daemon thread of the run's own process after its look at
exit (attacks/layer-3-sandbox.md).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import re
import shutil
import site
import stat
import sys
from dataclasses import field
from pathlib import Path
from typing import Final

from app.records import dataclass

#: The modules Python imports as it starts, wherever they are on its path (`site`), in
#: any form an import finds: a package, a ``.py``, a sourceless ``.pyc`` beside it, an
#: extension module (``sitecustomize.cpython-311-x86_64-linux-gnu.so``).
_CUSTOMIZE: Final = frozenset({"sitecustomize", "usercustomize"})
#: The endings of a module's file an import loads (``.py``, ``.pyc``, ``.cpython-311-...so``):
#: a ``coverage.xml`` the run writes is no module ``coverage``.
_MODULE_SUFFIXES: Final = tuple(importlib.machinery.all_suffixes())
#: A package's own module, in any form an import loads.
_INITS: Final = frozenset(f"__init__{suffix}" for suffix in _MODULE_SUFFIXES)
#: What a file put aside is renamed with: no ``.pth`` and no importable name.
ASIDE: Final = ".app-planted"


def _start_up_file(name: str) -> bool:
    return name.endswith(".pth") or name.partition(".")[0] in _CUSTOMIZE


def _identity(path: Path | str) -> tuple[int, ...] | None:
    """A file's inode, size, mtime, mode and ctime: the ctime too, which no process sets
    back (``os.utime`` sets the mtime a rewrite of the same size changed back, and the same
    inode written through a hard link elsewhere changes nothing else here)."""
    try:
        st = os.lstat(path)  # os's, not pathlib's: after every test, every file
    except OSError:
        return None
    own = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_ctime_ns)
    if not stat.S_ISLNK(st.st_mode):
        return own
    # A link: its target's too. Debian's /usr/lib/python3.X/sitecustomize.py links to
    # /etc/python3.X/sitecustomize.py, which a write through the link changed unseen.
    try:
        to = os.stat(path)  # noqa: PTH116 - as above
    except OSError:
        return (*own, -1, -1, -1, -1, -1)
    return (*own, to.st_ino, to.st_size, to.st_mtime_ns, to.st_mode, to.st_ctime_ns)


#: A file's contents as the run began: its bytes, or a link's target with the target's bytes,
#: the file the link led to and its directory's device and inode (``("link", target, bytes,
#: resolved, directory)``, None for bytes it has none of); None for what cannot be put back
#: (a directory: a ``sitecustomize`` package).
_Contents = bytes | tuple[str, str, bytes | None, str, tuple[int, int] | None] | None


def _directory(path: str | Path) -> tuple[int, int] | None:
    """The device and inode of the directory `path` leads to (None: none there)."""
    try:
        found = os.stat(path)  # noqa: PTH116 - as in _identity
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _contents(path: Path) -> _Contents:
    try:
        if path.is_symlink():
            try:
                through = path.read_bytes()
            except OSError:  # dangling, or a directory
                through = None
            # Where it led as the run began: a put-back writes there, never where it leads
            # after the test (red team 67e).
            resolved = os.path.realpath(path)
            return (
                "link",
                str(path.readlink()),
                through,
                resolved,
                _directory(os.path.dirname(resolved)),  # noqa: PTH120 - a text, as resolved
            )
        return path.read_bytes()
    except OSError:  # a directory, or gone
        return None


@dataclass
class _Place:
    """A directory whose files later processes run: its ``mtime`` and the files of it that
    count, each with its identity and contents as the run began."""

    path: Path
    start_up_only: bool  # site-packages and the standard library: .pth and customize only
    #: Files that count besides the start-up files: the modules ``.pth`` files import.
    also: frozenset[str] = frozenset()
    #: Only `also` counts here (a virtualenv's own directory: its ``pyvenv.cfg``).
    only_also: bool = False
    #: The top-level names the ``.pth`` files import, not the standard library's: a file of
    #: that name (``x.py``, ``x.pyc``, ``x.*.so``) added in any directory of the path shadows
    #: the module a later process imported, if earlier on its path (red team 67e).
    shadows: frozenset[str] = frozenset()
    mtime: int | None = None
    #: The directory's device and inode as the run began: a put-back writes and renames only
    #: in that directory, never in one a test put at its path since (`_put_back`).
    directory: tuple[int, int] | None = None
    #: Whether a check said already that another directory is at the path (said once).
    moved_said: bool = False
    files: dict[str, tuple[tuple[int, ...] | None, _Contents]] = field(default_factory=dict)

    def counts(self, name: str) -> bool:
        if name.endswith((ASIDE, _RESTORING)):
            return False
        if name in self.also:
            return True
        if self.only_also:
            return False
        if name.partition(".")[0] in self.shadows and name.endswith(_MODULE_SUFFIXES):
            return True
        return _start_up_file(name) if self.start_up_only else True

    def take(self) -> None:
        try:
            found = os.stat(self.path)  # noqa: PTH116 - as in _identity
            self.mtime, self.directory = found.st_mtime_ns, (found.st_dev, found.st_ino)
            # Names, not paths: the standard library's directory lists hundreds, of which
            # one or two count (pathlib's objects for all of them cost half its start).
            listed = os.listdir(self.path)  # noqa: PTH208
            if self.start_up_only:
                # Only a name `counts` may take is asked (it takes none other): a ``.pth``,
                # or one whose first part is a start-up module's, a shadowed module's or one
                # of `also`'s. site-packages and the standard library list some 400 names,
                # each a method call (about 1 M instructions of every run's start).
                firsts = _CUSTOMIZE | self.shadows | {n.partition(".")[0] for n in self.also}
                listed = [
                    name
                    for name in listed
                    if name.endswith(".pth") or name.partition(".")[0] in firsts
                ]
            names = [name for name in listed if self.counts(name)]
        except OSError:
            self.mtime, names = None, []
        # A command's bytes are not kept (a virtualenv's bin/ holds binaries of megabytes:
        # ruff's): one changed in place is said, not put back.
        self.files = {}
        for name in names:
            entry = self.path / name
            self.files[name] = (_identity(entry), _contents(entry) if self.start_up_only else None)


#: What a ``.pth`` line imports: ``import a.b``, ``from a import b`` (also inside an
#: ``exec``'s string), ``__import__('a')`` and ``importlib.import_module('a')``; the top-level
#: name is the module a later process loads from a file. ``import a, b as c`` names more
#: than one (`_IMPORT_LIST`; red team 67e: only the first was found).
_IMPORTED: Final = re.compile(
    r"""(?:\bfrom\s+|\bimport\s+|(?:__import__|import_module)\(\s*['"])([A-Za-z_]\w*)"""
)
_IMPORT_LIST: Final = re.compile(
    r"\bimport\s+([\w.]+(?:\s+as\s+\w+)?(?:\s*,\s*[\w.]+(?:\s+as\s+\w+)?)*)"
)
_LISTED: Final = re.compile(r",\s*([A-Za-z_]\w*)")


def _imported_by_pth(directories: list[str]) -> tuple[dict[str, set[str]], frozenset[str]]:
    """The files of the modules the ``.pth`` files of `directories` import as every process
    starts (an editable install's finder, setuptools' ``_distutils_hack``, the guard's own
    ``_app_pytest_guard``, ``coverage``), by directory, and their names (not the standard
    library's). Found without importing them (`PathFinder`), as the run begins."""
    names: dict[str, None] = {}
    for directory in directories:
        try:
            pths = [entry for entry in os.scandir(directory) if entry.name.endswith(".pth")]
        except OSError:
            continue
        for pth in pths:
            try:
                text = Path(pth.path).read_text(errors="replace")
            except OSError:
                continue
            names.update(dict.fromkeys(_IMPORTED.findall(text)))
            for listed in _IMPORT_LIST.findall(text):
                names.update(dict.fromkeys(_LISTED.findall(listed)))
    files: dict[str, set[str]] = {}
    for name in names:
        try:
            # Searched where a later process searches as its .pth files run: site-packages
            # first, never the current directory ('' on this process's path).
            spec = importlib.machinery.PathFinder.find_spec(name, directories)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin and spec.has_location:
            parent, base = os.path.split(spec.origin)
            files.setdefault(parent, set()).add(base)
        elif spec is not None and spec.submodule_search_locations:
            # A namespace package: an ``__init__.py`` added to one of its directories makes
            # it a package whose code every later process runs (red team 67e).
            for portion in spec.submodule_search_locations:
                files.setdefault(portion, set()).update(_INITS)
    return files, frozenset(names).difference(sys.stdlib_module_names)


def _places() -> list[_Place]:
    """Where this environment's later processes find code they run as they start: the
    directories that exist of site-packages, the user's site where Python reads it, the
    standard library's (``sitecustomize``), every other directory on the path as the run
    began (one a ``.pth`` adds with ``site.addsitedir`` reads its own ``.pth`` files, and a
    ``sitecustomize`` is imported from any), the modules the ``.pth`` files import, and a
    virtualenv's commands."""
    start_up = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        start_up.append(site.getusersitepackages())
    # The standard library's (where os is; sysconfig's import costs about a millisecond).
    start_up.append(str(Path(os.__file__).parent))
    # Where a module a .pth imports is searched as it runs: site-packages and the standard
    # library's, and PYTHONPATH's, before them; not the directory of the run's script or
    # the current one (put on the path after the .pth files ran), nor the ones pytest adds:
    # the project's own `_app_pytest_guard.py` there, which a developer edits during a run,
    # is no module a later process's start-up imports.
    interpreters = (os.path.join(sys.prefix, ""), os.path.join(sys.base_prefix, ""))  # noqa: PTH118
    searched = [
        *start_up,
        *os.environ.get("PYTHONPATH", "").split(os.pathsep),
        *(entry for entry in sys.path if entry.startswith(interpreters)),
    ]
    # The path's directories (not its zip files, nor '' the current directory, which a
    # later process's start-up does not search).
    # os.path.isdir: False for any error (pathlib's raises on a name too long, which a
    # pythonpath ini value can put on the path).
    start_up += [entry for entry in sys.path if entry and os.path.isdir(entry)]  # noqa: PTH112
    directories = list(dict.fromkeys(str(Path(path).absolute()) for path in start_up))
    places = _places_of(directories, {str(Path(path).absolute()) for path in searched if path})
    if sys.prefix != sys.base_prefix:  # a virtualenv's own commands, not /usr/bin's
        places.append(_Place(Path(sys.prefix, "bin"), False))
        # Its pyvenv.cfg: `include-system-site-packages = true` has every later process
        # run the base interpreter's .pth files too, and `home` names the standard library
        # it loads (red team 67 on regress).
        places.append(_Place(Path(sys.prefix), True, frozenset({"pyvenv.cfg"}), only_also=True))
    return places


def _places_of(directories: list[str], searched: set[str] | None = None) -> list[_Place]:
    """`directories` as places, with the modules their ``.pth`` files import; a file of
    such a module's name counts in those of them `searched` (all: None) as the ``.pth``
    files run."""
    modules, names = _imported_by_pth(directories)
    return [
        _Place(
            Path(path),
            True,
            frozenset(modules.get(path, ())),
            shadows=names if searched is None or path in searched else frozenset(),
        )
        for path in dict.fromkeys(directories + list(modules))
    ]


@dataclass
class Planted:
    """The environment's start-up files and commands as the run began (`take`)."""

    places: list[_Place] = field(default_factory=_places)

    def take(self) -> Planted:
        for place in self.places:
            place.take()
        # A directory that is not there is looked at no more: a test that makes one
        # (a user's site-packages) makes it for processes that read it at their start.
        self.places = [place for place in self.places if place.mtime is not None]
        return self

    def extend(self) -> Planted:
        """Watch too the directories put on the path since `take` (a conftest's, pytest's
        ``pythonpath``), as they are now: the look before the conftests found fewer."""
        known = {str(place.path) for place in self.places}
        new = [
            str(Path(entry).absolute())
            for entry in sys.path
            if entry and os.path.isdir(entry)  # noqa: PTH112 - as in _places
        ]
        new = [path for path in dict.fromkeys(new) if path not in known]
        if new:
            added = [place for place in _places_of(new, set()) if str(place.path) not in known]
            self.places += Planted(places=added).take().places
        return self

    def check(self, who: str, *, commands: bool = False) -> str | None:
        """What changed since the run began, put back, and said (None: nothing). Commands
        (a virtualenv's ``bin/``) are compared file by file only with `commands` (at the
        run's end); after each test, only for a command added or removed."""
        changes: list[str] = []
        for place in self.places:
            changes += _put_back(place, whole=place.start_up_only or commands)
        if not changes:
            return None
        return (
            f"app: {who} changed what later Python processes of this environment run as they "
            f"start, or its commands, outside any test run: {'; '.join(changes)}. Tests must "
            "not write an environment's .pth files, sitecustomize or usercustomize, or its "
            "bin/ commands: install what a test needs into an environment it makes for "
            "itself. If this test did not, another process did meanwhile (a test of another "
            "xdist worker, or a pip install into this environment during the run): install "
            "it again once the run has ended"
        )


def _put_back(place: _Place, *, whole: bool) -> list[str]:
    """`Planted.check` for one place. `whole`: every file's identity compared, not only the
    directory's ``mtime``."""
    try:
        found = os.stat(place.path)  # noqa: PTH116 - as in _identity
    except OSError:
        return []
    if (found.st_dev, found.st_ino) != place.directory:
        return _moved(place)
    place.moved_said = False
    mtime = found.st_mtime_ns
    if mtime == place.mtime and not whole:
        return []
    try:
        listed = os.listdir(place.path) if mtime != place.mtime else []  # noqa: PTH208 - as in take
    except OSError:
        return []
    names = listed or list(place.files)
    changes = []
    for name in sorted(set(names) | set(place.files)):
        if not place.counts(name):
            continue
        now = _identity(os.path.join(place.path, name))  # noqa: PTH118 - as in _identity
        before = place.files.get(name)
        if now == (None if before is None else before[0]):
            continue
        full = place.path / name
        if before is None:
            if now is not None and (aside := _aside(full)) is not None:
                changes.append(f"{full} was added (moved aside to {aside}, which nothing runs)")
        elif now != before[0]:
            changes.append(_changed(full, before, now))
    if changes:
        place.take()  # as it is now: what was put back, and nothing planted
    else:
        place.mtime = mtime  # something else changed there (a package installed): listed once
    return changes


def _moved(place: _Place) -> list[str]:
    """What a check says of a place whose path leads to another directory than the one the
    run began with (once, until the directory is back): nothing is moved aside or written
    back there.

    The put-back followed the path: a test that replaced the environment's ``bin/`` by a
    symbolic link to a production root's ``sessions/`` (or mounted that directory there) had
    the guard rename every session ``<id>.app-planted`` as "a command added", and one that
    so replaced site-packages had it write the environment's ``.pth`` files into the root
    (red team 75 on the guard).
    """
    if place.moved_said:
        return []
    place.moved_said = True
    real = os.path.realpath(place.path)
    now = (
        f"it leads to {real} now"
        if real != str(place.path)
        else f"another directory is there now, or mounted there: `findmnt -T {place.path}`"
    )
    planted = _planted_there(place)
    if planted:
        # What is at the path moved aside as it is (the link itself, or the directory a
        # rename put there), nothing in it read as a change or written: a copy of
        # site-packages with a .pth added, renamed over it, was left for every later
        # process to run (red team 75 on regress, round b). A mount point is not renamed.
        aside = place.path.with_name(place.path.name + ASIDE)
        parent = os.fspath(place.path.parent)
        with contextlib.suppress(OSError):
            # Renamed in the environment's own directory only: not through a link on the
            # way to it, nor in a filesystem mounted over it since (another device than the
            # place's as the run began), either of which may be a data root's.
            if (
                place.directory is not None
                and os.path.realpath(parent) == parent
                and os.stat(parent).st_dev == place.directory[0]  # noqa: PTH116
                and not os.path.lexists(aside)
            ):
                place.path.rename(aside)  # the name itself: a link is not followed
                said = (
                    f"{place.path} is not the directory it was as the run began ({now}), and "
                    f"holds start-up files the environment's did not ({', '.join(planted)}): "
                    f"what is at its path was moved aside to {aside} as it is, nothing in it "
                    "moved or written (which would have changed the files of whatever it "
                    "leads to, a data root's, say), so no later process runs them. Put the "
                    "environment's own directory back at its path, or install this "
                    "environment again"
                )
                return [said]
    said = (
        f"{place.path} is not the directory it was as the run began ({now}), so nothing "
        "there was moved aside or written back, which would have changed the files of "
        "whatever it leads to (a data root's, say). Put the environment's own directory "
        "back at its path (remove the link, or unmount what is mounted there), or install "
        "this environment again"
    )
    return [said]


def _planted_there(place: _Place) -> list[str]:
    """The start-up files at a site-packages' path that the directory there as the run began
    did not hold as they are (by name and bytes), where another directory is at the path;
    read only, never written. Not for ``bin/``, whose every name counts: a data root's
    directory at its path holds none of its commands, and a command runs only when called."""
    if not place.start_up_only:
        return []
    try:
        names = [name for name in os.listdir(place.path) if place.counts(name)]  # noqa: PTH208
    except OSError:
        return []
    return [
        name
        for name in sorted(names)
        if name not in place.files or _contents(place.path / name) != place.files[name][1]
    ]


def _aside(path: Path) -> Path | None:
    """Rename `path` to a name nothing runs; the new name (None: it went meanwhile)."""
    try:
        return path.replace(path.with_name(path.name + ASIDE))
    except FileNotFoundError:
        return None


def _kept_aside(path: Path) -> Path | None:
    """A second name for the test's version of `path`, which nothing runs, `path` left in
    place for `_write_back` to replace in one rename: moved aside first, the name was
    missing while its bytes were written back, and a Python starting then (another xdist
    worker's subprocess) ran without the ``.pth`` (an editable install's: no ``app``; red
    team 67 on regress). A hard link, or a copy where the filesystem has none."""
    aside = path.with_name(path.name + ASIDE)
    aside.unlink(missing_ok=True)
    try:
        os.link(path, aside, follow_symlinks=False)
    except FileNotFoundError:
        return None  # it went meanwhile
    except OSError:  # no hard links here (EPERM, EMLINK): a copy of it
        try:
            shutil.copy2(path, aside, follow_symlinks=False)
        except FileNotFoundError:
            return None
    return aside


#: The temporary name a file is written under before it replaces the one a test changed.
_RESTORING: Final = ".app-restoring"


def _changed(
    full: Path, before: tuple[tuple[int, ...] | None, _Contents], now: tuple[int, ...] | None
) -> str:
    """A file the run began with that the test changed or removed: put back, and said."""
    if before[1] is None:
        return (
            f"{full} was {'changed' if now is not None else 'removed'} (not put back: "
            "install this environment again)"
        )
    if (through := _written_through(full, before, now)) is not None:
        return through
    aside = _kept_aside(full) if now is not None else None
    _write_back(full, before[1], before[0])
    kept = f"; the test's version moved aside to {aside}" if aside else ""
    verb = "changed" if now is not None else "removed"
    return f"{full} was {verb} (as the run began again{kept})"


def _written_through(
    full: Path, before: tuple[tuple[int, ...] | None, _Contents], now: tuple[int, ...] | None
) -> str | None:
    """For a link the test left as it was whose target it changed (written through the
    link): the target put back, and said; None otherwise."""
    was, contents = before
    if not (isinstance(contents, tuple) and contents[2] is not None and was and now):
        return None
    if now[:5] != was[:5]:
        return None  # the link itself changed: put back as a link
    # The file the link led to as the run began, not where it leads now: a test that made
    # that file a link to another (/etc/passwd) had the put-back write the start-up file's
    # bytes over that other, outside the environment (red team 67 on regress, 67e). The
    # rename below replaces a link at `target` itself; a directory on its way turned into a
    # link is not written through either.
    # Nor one mounted over since, or put there by a rename (red team 75 on the guard): the
    # directory as the run began, by device and inode.
    target = Path(contents[3])
    if os.path.realpath(target.parent) != str(target.parent):
        return (
            f"{full} was changed through its link, in {target}, whose directory now leads "
            f"to {os.path.realpath(target.parent)} (not put back: install this environment "
            "again)"
        )
    if _directory(target.parent) != contents[4]:
        return (
            f"{full} was changed through its link, in {target}, whose directory is not the "
            "one it was as the run began (another directory is there now, or mounted there: "
            f"`findmnt -T {target.parent}`; not put back: put that directory back, or install "
            "this environment again)"
        )
    aside = _kept_aside(target)
    _write_back(target, contents[2], was[5:])
    kept = f"; the test's version kept aside as {aside}" if aside else ""
    return f"{full} was changed through its link, in {target} (as the run began again{kept})"


def _write_back(
    path: Path,
    contents: bytes | tuple[str, str, bytes | None, str, tuple[int, int] | None],
    was: tuple[int, ...] | None,
) -> None:
    """Put `contents` back at `path`, its mode as `was` gave it, by a rename."""
    temporary = path.with_name(path.name + _RESTORING)
    temporary.unlink(missing_ok=True)
    if isinstance(contents, tuple):
        temporary.symlink_to(contents[1])
    else:
        temporary.write_bytes(contents)
        if was is not None:
            temporary.chmod(stat.S_IMODE(was[3]))
    temporary.replace(path)


__all__ = ["ASIDE", "Planted"]
