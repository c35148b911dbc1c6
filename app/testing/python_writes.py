"""Python's own writes, moves and deletes in a run's processes, checked against the roots the
run protects before they happen.

The rest of layer 3 guards the app's code: a test that reaches production's root *through the
app* is refused wherever it goes. Code that does not go through the app was the one way left
in the run's own processes: a fixture that read ``settings.toml`` with ``tomllib`` and called
``shutil.rmtree`` on the root it named, a literal ``Path("/srv/app/data").unlink()``, a
``sqlite3.connect`` into a live root (the incident's shape without the app's settings object;
the attacks' catalogue's *not stopped* row until session 75). Every such call in CPython
announces itself first as an audit event (PEP 578: ``open`` with its flags, ``os.remove``,
``os.rename``, ``shutil.rmtree``, ...), and an audit hook that raises stops the call before it
does anything.

So the plugin installs one hook in each of the run's pytest processes (the controller, each
xdist worker, a pytest a test runs; where the plugin is switched off or inactive in a pytest
of the run, the fallback or the inactive plugin does: red team 76), before any conftest is
imported, and each run pushes the
roots it protects onto it while it lasts (a run inside a test, with ``pytester``, pops its
own as it ends). A call that would create, write, truncate, move, link, change the mode,
owner or times of, or delete a path in a protected root, or move or delete a directory that
holds one, raises `ProtectedRootError` (a ``PermissionError``, as the kernel's own refusal
is), and the test that made it fails at its end even if it caught the error.

Every call is checked, the app's own too. Until red team 76 a call made from a file of the
app's package was let go, as going through a root layer 3 had checked; but dozens of the
app's functions take a path and write there without a check of their own (a put-back of
`app.testing.planted`, `app.dataroot.write_new_file`, the stamp's writer), and a test that
called one with production's path had its write taken for the app's. The app's writes in
a run's process are few (about 2,500 in the suite's two heaviest in-process files), and
each pays what a test's pays: bench/README.md, red team 76 on the guard.

Where it is checked: the path as the call spells it, made absolute from the working
directory (or the descriptor of ``dir_fd``), with every symbolic link on its way resolved
(the last one too where the call follows it), against each protected root's path now; and the
directories above it against each root's identity (device and inode), which finds a root
shown through a bind mount under another name. A hook is permanent for the process's life
(CPython offers no way to remove one) and sees calls in every thread.

What it cannot see, said in docs/explanation/attacks/: a process that is not one of the
run's pytest processes or their forks (a child running another program, or a new
interpreter: a ``spawn`` or ``forkserver`` worker, ``python -c``; the kernel's permissions
are its barrier), writes by C code that raises no event of their path
(an extension's own ``open(2)``, SQLite's ``ATTACH`` and ``VACUUM INTO``), and a write
through a descriptor opened before the run began. ``os.open`` relative to a ``dir_fd``,
whose event carries no descriptor, is checked against every directory the process holds
open.

No library does this: audit hooks are the interpreter's own mechanism (``sys.addaudithook``),
and the path checks are the sandbox's (`app.sandbox.identity`).
"""

# Strings and `os.path`, not `Path`: the hook runs at every write of every test (and of the
# servers a test forks), where making `Path` objects cost a third of its time.
# ruff: noqa: PTH118, PTH120

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from app.errors import shell_word
from app.sandbox import Protected, identity

#: The system calls the hook makes, as they were when this module was imported: a test that
#: replaces ``os.lstat`` (to count or fake its calls) neither sees the hook's nor steers its
#: answers (``os.path.realpath`` still looks ``os.lstat`` up at each call: it is asked only
#: where a link or a new place must be resolved whole).
_stat, _lstat, _fstat = os.stat, os.lstat, os.fstat
_readlink, _getcwd, _listdir = os.readlink, os.getcwd, os.listdir
#: Their names here, compared and put back with the module's own functions (`_PARTS`).
_SYSTEM_CALLS: Final = ("_stat", "_lstat", "_fstat", "_readlink", "_getcwd", "_listdir")

#: ``open``'s flags that write: a descriptor opened for writing, appending, creating or
#: truncating.
_WRITING: Final = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

#: ``open``'s flags that create a name that was not there (``x``, `tempfile.mkstemp`): the
#: call fails on any name there, a symbolic link too, so none is followed.
_NEW_ONLY: Final = os.O_CREAT | os.O_EXCL

#: Per audited call that changes the filesystem: what it is called in a refusal, its path
#: arguments (each an index, and the index of the ``dir_fd`` it is relative to, or None),
#: whether it follows a symbolic link at the path's end, and whether it moves or deletes what
#: the path names (then a directory that holds a protected root is refused too).
_CALLS: Final[dict[str, tuple[str, tuple[tuple[int, int | None], ...], bool, bool]]] = {
    "os.remove": ("delete", ((0, 1),), False, True),
    "os.rmdir": ("delete", ((0, 1),), False, True),
    "shutil.rmtree": ("delete the tree", ((0, 1),), False, True),
    "os.rename": ("move", ((0, 2), (1, 3)), False, True),
    "shutil.move": ("move", ((0, None), (1, None)), False, True),
    "os.link": ("link", ((0, 2), (1, 3)), False, False),
    "os.symlink": ("make a link at", ((1, 2),), False, False),
    "os.mkdir": ("make the directory", ((0, 2),), False, False),
    "os.mkfifo": ("make the pipe", ((0, 2),), False, False),
    "os.mknod": ("make the node", ((0, 3),), False, False),
    "os.truncate": ("truncate", ((0, None),), True, False),
    "os.chmod": ("change the mode of", ((0, 2),), True, False),
    "os.chown": ("change the owner of", ((0, 3),), True, False),
    "os.utime": ("change the times of", ((0, 3),), True, False),
    "os.chflags": ("change the flags of", ((0, None),), True, False),
    "os.setxattr": ("set an attribute of", ((0, None),), True, False),
    "os.removexattr": ("remove an attribute of", ((0, None),), True, False),
    "shutil.copyfile": ("copy onto", ((1, None),), True, False),
    "shutil.copymode": ("copy a mode onto", ((1, None),), True, False),
    "shutil.copystat": ("copy times onto", ((1, None),), True, False),
    "shutil.copytree": ("copy a tree into", ((1, None),), True, False),
    "sqlite3.connect": ("open a database at", ((0, None),), True, False),
    # A Unix socket's address is a path its bind creates (an abstract one, after a NUL, or
    # an address of another family, names none): red team 76.
    "socket.bind": ("make a socket at", ((1, None),), False, False),
}

#: Directories whose answer a shield keeps before it starts again (a run that writes in more
#: directories than this pays one resolution each again).
_PLACES_KEPT: Final = 4096

#: How many directories above a new one `_Shield._new_place` looks up by their kept answers
#: before it resolves the path whole instead (a path of more names than this).
_DEPTH_LOOKED_UP: Final = 64


#: A protected root, and how a path meets it: "in" it, "through" a bind mount of it, or
#: "holds" it (a directory above it that a call would move or delete).
Finding = tuple[Protected, str]


class ProtectedRootError(PermissionError):
    """A Python call of a test run's process that would change a protected data root."""


class _Shield:
    """One run's protected roots, as the hook checks them, and what it found of each
    directory it was asked about.

    A call's directory is looked at once: the hook ``stat``s it (one system call), and a
    directory seen before under the same spelling with the same identity gets the same answer
    (`_places`); a new one takes its parent's answer, looked up the same way, where its last
    name is not a link (``lstat``), and is compared with the roots itself (its path and its
    identity); any other is resolved whole (every link on its way) and its ancestors'
    identities compared with the roots'. A call that follows a link at its path's end and
    finds one there (``lstat``, the second call) is resolved whole. Measured on the suite's
    store and server tests and a test's own tree: bench/README.md, session 75 (branches
    pywrites75 and perf-pywrites75).
    """

    def __init__(self, protected: Iterable[Protected], holders: dict[Path, str]) -> None:
        self.protected = tuple(protected)
        self.holders = dict(holders)
        self.identities = {found: root for root in self.protected for found in root.identities}
        #: A root whose settings spell it through a link that may be switched (a deploy's
        #: ``current``) is looked for where that link leads at each call: nothing is kept.
        self.moving = any(root.spelled is not None for root in self.protected)
        #: Each root and its path as text, where none moves: what `verdict` compares a path
        #: with, made once (not a `Path` turned into text at each call).
        self._fixed = () if self.moving else tuple(self.roots_now())
        self._places: dict[tuple[str, int, int], tuple[str, tuple[Protected, str] | None]] = {}

    def roots_now(self) -> Iterator[tuple[Protected, str]]:
        for root in self.protected:
            for path in root.paths_now():
                yield root, str(path)

    def verdict(self, lexical: str, *, follow: bool, moves: bool) -> tuple[str, Finding | None]:
        """The real path of ``lexical`` (absolute, as the call spells it), and the protected
        root it lies in, is seen through, or (for a call that ``moves``) holds, if any."""
        head, _, tail = lexical.rpartition("/")
        if tail in ("", ".", "..") or self.moving:
            return self._resolved_whole(lexical, follow=follow, moves=moves)
        place = self._looked_up(head or "/", 0)
        if place is None:  # a directory not there yet, or not searchable: resolved whole
            return self._resolved_whole(lexical, follow=follow, moves=moves)
        if follow:
            try:
                last = _lstat(lexical)
            except FileNotFoundError:
                pass  # a new name in a directory that is there (a file created): no link
            except OSError:
                return self._resolved_whole(lexical, follow=follow, moves=moves)
            else:
                if stat.S_ISLNK(last.st_mode):
                    return self._resolved_whole(lexical, follow=follow, moves=moves)
        real_head, inside = place
        real = f"{real_head}/{tail}" if real_head != "/" else f"/{tail}"
        return real, inside or self._at_or_holding(real, moves=moves)

    def _looked_up(self, head: str, depth: int) -> tuple[str, Finding | None] | None:
        """What the directory ``head`` (absolute, as spelled) is and lies in, or None where it
        is not there: its answer kept under its spelling and identity (one ``stat``)."""
        try:
            found = _stat(head)
        except OSError:
            return None
        key = (head, found.st_dev, found.st_ino)
        place = self._places.get(key)
        if place is None:
            if len(self._places) >= _PLACES_KEPT:
                self._places.clear()
            place = self._places[key] = self._new_place(head, found, depth)
        return place

    def _new_place(
        self, head: str, found: os.stat_result, depth: int
    ) -> tuple[str, Finding | None]:
        """A directory not seen before: from its parent's answer (kept, or looked up the same
        way), where its last name is a directory and not a link, without resolving every name
        of its path again and comparing every directory above it (a tree a test makes or
        deletes meets each of its directories once, and each has its parent's answer)."""
        parent, _, name = head.rpartition("/")
        if name in ("", ".", "..") or depth > _DEPTH_LOOKED_UP:
            return self._place(os.path.realpath(head))
        above = self._looked_up(parent or "/", depth + 1)
        try:
            link = stat.S_ISLNK(_lstat(head).st_mode)
        except OSError:
            link = True
        if above is None or link:
            return self._place(os.path.realpath(head))
        real_parent, inside = above
        real = f"{real_parent}/{name}" if real_parent != "/" else f"/{name}"
        if inside is not None:  # below a root's path, or a directory with a root's identity
            return real, inside
        for root, path in self._fixed or self.roots_now():
            if real == path:
                return real, (root, "in")
        shown = self.identities.get((found.st_dev, found.st_ino))
        return real, (shown, "through") if shown is not None else None

    def _resolved_whole(
        self, lexical: str, *, follow: bool, moves: bool
    ) -> tuple[str, Finding | None]:
        # Never normalised before it is resolved: to the kernel, ``link/../data`` is the
        # ``data`` beside where the link leads, not beside the link (red team 75a). A trailing
        # slash makes the kernel follow a link at the end, so it is followed here too.
        stripped = lexical.rstrip("/") or "/"
        head, _, tail = stripped.rpartition("/")
        if follow or stripped != lexical or tail in ("", ".", ".."):
            real = os.path.realpath(stripped)
        else:
            real = os.path.join(os.path.realpath(head or "/"), tail)
        head = os.path.dirname(real) if real != "/" else real
        return real, self._place(head)[1] or self._at_or_holding(real, moves=moves)

    def _place(self, real_head: str) -> tuple[str, Finding | None]:
        """What a directory (resolved) lies in: a root by its path, or by the identity of
        a directory at or above it (a bind mount shows a root under another name)."""
        for root, path in self.roots_now():
            if real_head == path or real_head.startswith(path + "/"):
                return real_head, (root, "in")
        if self.identities:
            directory = real_head
            while True:
                found = identity(directory)
                if found is not None and found in self.identities:
                    return real_head, (self.identities[found], "through")
                if directory == "/":
                    break
                directory = os.path.dirname(directory)
        return real_head, None

    def _at_or_holding(self, real: str, *, moves: bool) -> Finding | None:
        for root, path in self._fixed or self.roots_now():
            if real == path:
                return root, "in"
            if moves and (real == "/" or path.startswith(real + "/")):
                return root, "holds"
        return None


class _Hook:
    """This process's hook: installed once, and the runs it checks for."""

    #: The runs of this process, innermost last (a tuple, replaced whole: the hook reads it
    #: in any thread without a lock).
    shields: tuple[_Shield, ...] = ()
    #: What was refused since the current test began (`refused_since`).
    refused: list[str] = []  # noqa: RUF012 - one list, this process's
    installed = False
    lock = threading.Lock()


def guard(protected: Iterable[Protected], holders: dict[Path, str]) -> object:
    """Check every Python call of this process that would change one of ``protected`` (each
    root's live holder described in ``holders``) until `release` is given what this returns."""
    shield = _Shield(protected, holders)
    with _Hook.lock:
        _Hook.shields = (*_Hook.shields, shield)
        if not _Hook.installed:
            sys.addaudithook(_audit)
            _Hook.installed = True
    return shield


def release(shield: object) -> None:
    """Stop checking for the run that `guard` returned ``shield`` to."""
    with _Hook.lock:
        _Hook.shields = tuple(s for s in _Hook.shields if s is not shield)


def guarding(shield: object) -> bool:
    """Whether the run that `guard` returned ``shield`` to is still checked (a test may
    have taken it out of `_Hook`, or replaced one of the functions the hook calls)."""
    return _intact() and any(s is shield for s in _Hook.shields)


def _intact() -> bool:
    module = globals()
    return all(module.get(name) is part for name, part in _PARTS.items()) and all(
        vars(owner).get(name) is part for owner, name, part in _METHODS
    )


def reinstate(shield: object) -> None:
    """Check for ``shield``'s run again, and first again (`guarding` found it taken out)."""
    if isinstance(shield, _Shield):
        with _Hook.lock:
            globals().update(_PARTS)
            for owner, name, part in _METHODS:
                setattr(owner, name, part)
            _Hook.shields = (shield, *(s for s in _Hook.shields if s is not shield))
            if not _Hook.installed:
                sys.addaudithook(_audit)
                _Hook.installed = True


def refused_since() -> list[str]:
    """What was refused since the last call, each as its refusal said (the call's own
    exception may have been caught by the test)."""
    with _Hook.lock:
        found = list(_Hook.refused)
        _Hook.refused.clear()
    return found


def _audit(event: str, args: tuple[Any, ...]) -> None:
    shields = _Hook.shields
    if not shields:
        return
    if event == "open":
        path, mode, flags = args
        # CPython's own events give the flags as ``open(2)`` gets them: a read (most of a
        # process's opens) is let go by one test, without the mode's letters read.
        if isinstance(flags, int):
            if not flags & _WRITING:
                return
        elif not (isinstance(mode, str) and any(c in mode for c in "wax+")):
            return
        if isinstance(path, int):
            return
        # A name created with O_EXCL, or opened with O_NOFOLLOW (the app's own files), is
        # never followed: the call fails on a link there.
        follow = not (
            isinstance(flags, int) and (flags & _NEW_ONLY == _NEW_ONLY or flags & os.O_NOFOLLOW)
        )
        _check(shields, "write", ((path, None),), follow=follow, moves=False)
        if mode is None and not _absolute_spelling(path):
            # `os.open`'s event carries no ``dir_fd``: a relative path is checked against
            # every directory this process holds open, as the call may be relative to any
            # of them (red team 75a; only `os.open` with a relative path pays this).
            for directory in _directories_open():
                _check(shields, "write", ((path, directory),), follow=follow, moves=False)
        return
    call = _CALLS.get(event)
    if call is None:
        return
    what, places, follow, moves = call
    paths = tuple(
        (args[at], args[fd_at] if fd_at is not None and fd_at < len(args) else None)
        for at, fd_at in places
        if at < len(args)
    )
    _check(shields, what, paths, follow=follow, moves=moves)


def _absolute_spelling(path: Any) -> bool:
    try:
        return os.fsdecode(path).startswith("/")
    except (TypeError, ValueError):
        return True  # not a path: nothing to look for


def _directories_open() -> list[int]:
    """This process's descriptors of directories, as a ``dir_fd`` would be one."""
    found: list[int] = []
    try:
        names = _listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        try:
            if stat.S_ISDIR(_fstat(int(name)).st_mode):
                found.append(int(name))
        except (OSError, ValueError):
            continue  # the listing's own descriptor, closed since
    return found


def _check(
    shields: tuple[_Shield, ...],
    what: str,
    paths: tuple[tuple[Any, Any], ...],
    *,
    follow: bool,
    moves: bool,
) -> None:
    for given, dir_fd in paths:
        lexical = _absolute(given, dir_fd)
        if lexical is None:
            continue
        for shield in shields:
            real, found = shield.verdict(lexical, follow=follow, moves=moves)
            if found is not None:
                root, how = found
                _refuse(shield, what, given, real, root, how)


def _absolute(given: Any, dir_fd: Any) -> str | None:
    """``given`` as an absolute path as the call spells it (relative to the working directory
    or to ``dir_fd``), or None where it names no path (a descriptor of no file, a database
    in memory)."""
    if type(given) is str:  # the common case, without `os.fsdecode`'s calls
        text = given
    else:
        try:
            if isinstance(given, int):
                return _readlink(f"/proc/self/fd/{given}")
            text = os.fsdecode(given)
        except (OSError, TypeError, ValueError):
            return None
    if text.startswith("file:"):
        text = _file_of_uri(text)
    if not text or text == ":memory:" or "\0" in text:
        return None
    if text[0] == "/":
        return text
    try:
        base = (
            _readlink(f"/proc/self/fd/{dir_fd}")
            if isinstance(dir_fd, int) and dir_fd >= 0
            else _getcwd()
        )
    except OSError:
        return None
    return os.path.join(base, text)


def _file_of_uri(text: str) -> str:
    """The file a SQLite URI (``sqlite3.connect("file:...", uri=True)``) names, or "" where
    it opens none for writing: its event carries the URI, once read as a relative file name
    called ``file:...`` (red team 75a)."""
    uri = urllib.parse.urlsplit(text)
    if urllib.parse.parse_qs(uri.query).get("mode") in (["ro"], ["memory"]):
        return ""  # read only, or a database in memory
    return urllib.parse.unquote(uri.path)


def _refuse(shield: _Shield, what: str, given: Any, real: str, root: Protected, how: str) -> None:
    raw = os.fsdecode(given) if isinstance(given, (str, bytes, os.PathLike)) else real
    shown = shell_word(raw)
    holder = shield.holders.get(root.path)
    whose = f"held by {holder}" if holder else "no server holds it now"
    if how != "through" and os.path.normpath(raw) != real:
        shown = f"{shown} (that is, {shell_word(real)})"
    where = {
        "in": f"lies in {root.profile}'s data root {shell_word(root.path)}",
        "holds": f"holds {root.profile}'s data root {shell_word(root.path)}",
        "through": f"lies in {root.profile}'s data root {shell_word(root.path)}, "
        f"seen as {shell_word(real)}",
    }[how]
    message = (
        f"app: refused to {what} {shown}: it {where} ({whose}), which this test "
        "run protects. A test's files belong in its sandbox: write to `tmp_path`, or open a "
        "root of the run's own with the `app_store` fixture; to run code against another "
        'profile, mark the test `@pytest.mark.app_profile("<profile>")`, which maps that '
        "profile's root into the sandbox"
    )
    with _Hook.lock:
        _Hook.refused.append(message)
    # The message alone as its text (not "[Errno 13] ...: 'path'"), and EACCES as its errno,
    # the kernel's own answer to a write it does not permit.
    error = ProtectedRootError(message)
    error.errno = errno.EACCES
    raise error


#: The functions the hook calls, as this module defined them: a test that replaces one
#: (``python_writes._check = lambda *a, **k: None``) switched the check off as surely as
#: emptying `_Hook.shields`, and unseen (red team 75a). `guarding` compares them, and
#: `reinstate` puts them back.
_PARTS: Final = {
    name: part
    for name, part in list(globals().items())
    if callable(part) and (getattr(part, "__module__", None) == __name__ or name in _SYSTEM_CALLS)
}
_METHODS: Final = tuple(
    (owner, name, part)
    for owner in (_Shield,)
    for name, part in list(vars(owner).items())
    if callable(part)
)
