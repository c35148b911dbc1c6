"""What marks a test process, and which data roots a test process may open.

A pytest run with the app's plugin is recognised in three places, strongest first:

1. **In the process.** The plugin leaves a marker on the :mod:`sys` module for the rest of
   the process's life. Every copy of this code (a second import under another name, the
   incident's shape) sees the same ``sys``, and a test that clears ``os.environ``, or an
   ``atexit`` clean-up that runs after pytest removed its own variables, cannot remove it.
2. **In the process tree.** The plugin registers the run in :data:`RUNS_DIR` under its pid
   and start time. Every process walks its ancestors (Linux ``/proc``) to the nearest
   registered run, so a child started with a hand-built environment, a grandchild, or a
   double-forked daemon (the run is its subreaper) is part of the run that started it; so
   is a process the run's session or process group leader made its sibling (`_led_by_a_run`).
   From pytest's import of the plugin to the run's registration, an entry says the run is
   starting (`announce_start`), and its children get a pytest's rules without the plugin.
3. **In the environment.** ``PYTEST_APP_SANDBOX``, inherited by children. Alone it is only
   honoured where 1 and 2 find nothing (a system without ``/proc``); it never widens them.

pytest without the plugin (``-p no:app``, ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``, not installed)
is recognised too, by :func:`context`: ``_pytest`` imported in this process, an ancestor whose
command line runs pytest, or pytest's own variables.

A run publishes its sandbox and the data roots it must never touch (every profile's root as
its shell and settings resolve them, with their device and inode). :func:`check_root` refuses
a root outside the sandbox, and one inside it that is another path to a protected root (a bind
mount, a symbolic link resolved elsewhere) or contains one.

What a test process may load: :func:`check_profile` allows only ``testing`` (or a profile the
test opted into), and :func:`confine` maps every profile's configured root into the sandbox;
:func:`confine_remote` maps a remote profile's database and object prefix to the run's scratch
ones (named with the run's suffix, :attr:`Run.scratch`), which only the plugin creates.
:func:`loaded` remembers the loads made before the plugin marked the process, so it can name
a module that loaded a profile at import time.
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import contextvars
import errno
import fcntl
import functools
import inspect
import itertools
import json
import os
import re
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any, AnyStr, Final, Generic

from app import libc
from app.errors import SandboxViolationError, json_loads, printable, shell_word
from app.records import Record

__all__ = [
    "ALLOW_PROFILES_ENV",
    "RUNS_DIR",
    "RUN_MARK_ENV",
    "SANDBOX_ENV",
    "SCRATCH_ENV",
    "Context",
    "LazyPattern",
    "LoadRecord",
    "Protected",
    "Run",
    "active_sandbox",
    "allowed_profiles",
    "allowing",
    "announce_start",
    "check_given_profile",
    "check_profile",
    "check_remote",
    "check_root",
    "check_same_filesystem",
    "check_scratch",
    "check_served",
    "check_shown_from",
    "checked",
    "checked_as",
    "command_line",
    "confine",
    "confine_remote",
    "context",
    "current_run",
    "hand_on",
    "identity",
    "just_checked",
    "keeps_sealed_copy",
    "loaded",
    "marked",
    "no_link_on_the_way",
    "note_inactive",
    "note_without_plugin",
    "parent_pid",
    "path_as_text",
    "path_from_text",
    "proc_hides_processes",
    "process_link",
    "record_load",
    "register",
    "restore_entry",
    "sandbox_root",
    "scratch_blob_url",
    "scratch_database_url",
    "scratch_prefix_refusal",
    "scratch_suffix",
    "seen_from_outside",
    "served_by",
    "shell_override",
    "swap",
    "unregister",
    "why_no_plugin",
]


class LazyPattern(Generic[AnyStr]):
    """A regular expression compiled when it is first needed, not when its module is imported.

    Compiling the ten patterns of the modules every `app` command and every pytest start
    imports cost about 12 M instructions (bench/README.md, "Patterns compiled when first
    needed"), and most processes need few of them. ``starts``: every string the pattern can
    fullmatch starts with one of these; ``needs``: every string it can find something in holds
    one of these. A string without them is answered None without compiling (the same answer
    the pattern gives). Two threads that race compile it twice, to equal patterns. A pattern
    of bytes gives its ``starts`` and ``needs`` as bytes (`app.dataroot`'s, 3.3 M instructions
    of every pytest start compiled at import before perf-plugin67).
    """

    __slots__ = ("_compiled", "_flags", "_needs", "_source", "_starts")

    def __init__(
        self,
        source: AnyStr,
        flags: int = 0,
        *,
        starts: tuple[AnyStr, ...] | None = None,
        needs: tuple[AnyStr, ...] = (),
    ) -> None:
        self._source: AnyStr = source
        self._flags = flags
        self._starts: tuple[AnyStr, ...] | None = starts
        self._needs: tuple[AnyStr, ...] = needs
        self._compiled: re.Pattern[AnyStr] | None = None

    @property
    def compiled(self) -> re.Pattern[AnyStr]:
        """The compiled pattern (compiled now if it was not yet)."""
        if self._compiled is None:
            self._compiled = re.compile(self._source, self._flags)
        return self._compiled

    def fullmatch(self, string: AnyStr) -> re.Match[AnyStr] | None:
        """`re.Pattern.fullmatch`."""
        if self._starts is not None and not string.startswith(self._starts):
            return None
        return self.compiled.fullmatch(string)

    def search(self, string: AnyStr) -> re.Match[AnyStr] | None:
        """`re.Pattern.search`."""
        if self._needs and not any(part in string for part in self._needs):
            return None
        return self.compiled.search(string)

    def finditer(self, string: AnyStr) -> Iterator[re.Match[AnyStr]]:
        """`re.Pattern.finditer`."""
        if self._needs and not any(part in string for part in self._needs):
            return iter(())
        return self.compiled.finditer(string)


#: The sandbox, inherited by children. Deliberately not an ``APP_`` name: dynaconf never
#: reads it, and the plugin's neutralising never removes it.
SANDBOX_ENV: Final = "PYTEST_APP_SANDBOX"
#: Comma-separated profiles a test opted into. It can only add profiles whose roots are
#: mapped into the sandbox, so a test that sets it by hand gains nothing outside it.
ALLOW_PROFILES_ENV: Final = "PYTEST_APP_ALLOW_PROFILES"
#: The run's scratch suffix (see `Run.scratch`), inherited by children: read only where the
#: process tree says nothing, like `SANDBOX_ENV`.
SCRATCH_ENV: Final = "PYTEST_APP_SCRATCH"
#: The run's own token (32 hex digits), drawn by its first process and inherited by its
#: xdist workers and children: what its marker in each scratch prefix carries, and what
#: every object the app writes in a run's scratch prefix is marked with
#: (`app.remote.objects.ObjectStore.written_here`), so that the run's end deletes only them.
RUN_MARK_ENV: Final = "PYTEST_APP_RUN_MARK"
_SCRATCH_FORM: Final = LazyPattern(r"_pytest_\d+_[0-9a-f]{4}(_gw\d+)?", starts=("_pytest_",))


#: Where runs register, one file per live pytest process. A fixed path, not
#: ``tempfile.gettempdir()``: a child with a hand-built environment (another ``TMPDIR``, or
#: none) must look in the same place as the run that started it.
def _host_uid(uid: int) -> int:
    """`uid` as the machine numbers it: in a user namespace of its own (`unshare -r`,
    `podman unshare`), a run of user 1000 is user 0 to itself, and named its registry after
    root's, whose runs were then refused (their directory another user's), or its own."""
    try:
        rows = Path("/proc/self/uid_map").read_text().splitlines()
    except OSError:
        return uid
    for row in rows:
        inside, outside, count = map(int, row.split())
        if inside <= uid < inside + count:
            return outside + uid - inside
    return uid


RUNS_DIR: Final = Path("/tmp") / f"app-pytest-runs-{_host_uid(os.getuid())}"  # noqa: S108 - checked owner


def _runs_dir(uid: int) -> Path:
    # One directory per user, written only by that user (checked), readable by all: a child
    # that switched user (su, sudo -u) still finds the run of the user who started it.
    return RUNS_DIR.with_name(f"app-pytest-runs-{uid}")


#: The attribute of ``sys`` that holds this process's runs (innermost last).
_MARKER: Final = "_app_pytest_runs"
_PROC: Final = Path("/proc")
#: After how long an entry of another PID namespace whose run ended is forgotten, in seconds:
#: its pids cannot be looked up here, and no exit hook runs that long.
_ENDED_LONG_AGO: Final = 3600
#: pytest's own variables: set for a test (``PYTEST_CURRENT_TEST``) or the whole session
#: (``PYTEST_VERSION``, pytest 8.2+), in the process and the children that inherit them.
_PYTEST_VARIABLES: Final = ("PYTEST_CURRENT_TEST", "PYTEST_VERSION")
#: pytest's scripts: pip's, and Debian's (`pytest-3`, `py.test-3`).
_PYTEST_COMMAND: Final = LazyPattern(r"(?:pytest|py\.test)(?:-3)?", starts=("pytest", "py.test"))
#: A Python interpreter's name (`python3.12`, `python3.13t`, `pypy3`, `python3-dbg`): only its
#: `-m` and `-c` are Python's own; another program's `-m pytest` is a value of its own.
_PYTHON: Final = LazyPattern(
    r"(?:python|pypy|graalpy)[\w.-]*", starts=("python", "pypy", "graalpy")
)


def path_as_text(path: str | os.PathLike[str]) -> str:
    """`path` as text that every process reads back as the same bytes, whatever its locale:
    its bytes as UTF-8, a byte that is not UTF-8 as Python's surrogate escape.

    What a run writes for its children (the registry's sandbox and protected roots, a
    stamp's sandbox) went as the writer's ``str``, which each reader took through its own
    locale's encoding. A run in a UTF-8 locale whose sandbox lies under ``données/`` gave a
    child run with ``LC_ALL=C PYTHONUTF8=0`` (ASCII names, every other byte an escape) a
    ``é`` no name of its own can hold: every load of the child was a ``UnicodeEncodeError``
    traceback (red team 56). Read back with `path_from_text`.
    """
    try:
        return os.fsencode(path).decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a name this process cannot hold either: as it is
        return os.fspath(path)


def path_from_text(text: str) -> str:
    """A path written as UTF-8 text (by `path_as_text`, or in a settings file, which TOML
    makes UTF-8), as this process names the same bytes; a ``ValueError`` for text no bytes
    make (a surrogate that is no escape of a byte)."""
    return os.fsdecode(text.encode("utf-8", "surrogateescape"))


def inside(path: PurePath, directory: PurePath) -> bool:
    """``path.is_relative_to(directory)``, by the two paths' parts, as pathlib compares them
    on POSIX (no case folding; an empty `directory` holds every relative path and no
    absolute one).

    Python 3.11's `is_relative_to` is a `relative_to` that raises and formats a ValueError
    for every path not inside, and builds the relative path for every one that is: about
    10 us a call here, against 0.6 us, some twenty calls a test taking `app_store` (a load's
    overlap checks, the sandbox's; bench/README.md, "perf-fixture73").
    """
    parts = directory.parts
    return path.parts[: len(parts)] == parts and (bool(parts) or not path.is_absolute())


def identity(path: Path | str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path`` (following symbolic links), or None if it is not there.

    Two paths with one identity are one directory, however they are spelled: bind mounts,
    symbolic links and hard links all share it.
    """
    try:
        # A text as `Path` would spell it (`_link_text`), without a `Path` made: seven of a
        # walk's looks come here.
        found = os.stat(path if isinstance(path, Path) else _link_text(path))  # noqa: PTH116
    except OSError:
        return None
    return found.st_dev, found.st_ino


#: A link of Linux's /proc that names what a process has open, or where it is, at the moment
#: it is followed: its open files, its directory, its root (`process_link`).
_PROCESS_LINK: Final = LazyPattern(
    r"/proc/[^/]+/(?:task/[^/]+/)?(?:cwd|root|map_files/[^/]+|fd/(?P<fd>[^/]+))",
    starts=("/proc/",),
)
#: Links followed before a path is given up on (the kernel's own limit).
_MAX_LINKS: Final = 40


def name_there(path: str | Path) -> bool:
    """Whether `path`'s last name is there at all, not followed where it is a link, as
    ``lstat`` would find it: ``faccessat`` as this process's effective ids and capabilities
    (by default `access` asks as the real ids, and a setuid run or one holding
    CAP_DAC_READ_SEARCH was told names were missing that ``lstat`` finds: red team 72 on
    regress, round d). Asked before an ``lstat`` where most names looked at are missing: the
    ``lstat`` raised, 11 K instructions against 2 K (bench/README.md, "perf-start72")."""
    return os.access(path, os.F_OK, effective_ids=True, follow_symlinks=False)


def no_link_on_the_way(path: str) -> bool:
    """Whether no name of `path` (absolute, no ``..``) is a symbolic link, by an ``lstat``
    of each, up to the first that is not there (or not this user's to see: the kernel
    cannot follow the path there either); False for a path with ``..`` (taken after the
    links before it).

    Not ``realpath(path) == path``: a link whose text, read as a path, leads back to itself
    (``l -> /proc/<pid>/root/<dir>/l``, where that process's root reads as ``/``) is a loop
    to ``realpath``, which then gives the path back unchanged, while the kernel follows the
    /proc link into that process's mount namespace, to a directory of its own there (red
    team 61 on regress, mounts and memos: a write there was taken for one through no link).
    """
    current = ""
    for name in path.split("/"):
        if not name or name == ".":
            continue
        if name == "..":
            return False
        current += "/" + name
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return True
        if stat.S_ISLNK(mode):
            return False
    return True


def process_link(path: Path | str, *, streams: bool = False) -> str | None:
    """The /proc link ``path`` passes through (itself, or a symbolic link on the way to it,
    ``/dev/fd/3`` and ``/proc/self`` included), whose target is fixed only when something
    opens it; None where there is none. With ``streams``, a process's standard streams
    (``/dev/stdout``) do not count.

    Such a path names what a process has at the moment it is followed, not a file:
    ``--junitxml=/proc/self/fd/49`` resolved, when checked, to nothing, and a test then left a
    read-only descriptor of a production record at 49, which pytest's write reopened; a data
    root written as ``/proc/self/cwd``, or as a link to it, was another directory after every
    ``chdir`` of the process (`app.dataroot`).
    """
    text = os.fspath(path)
    # No symbolic link on the way, so no /proc link either (an lstat per name, as a realpath
    # makes, on every open of a data root).
    if text.startswith("/") and no_link_on_the_way(text):
        return None
    pending = list(Path(text).absolute().parts[1:])
    current, links = "/", 0
    while pending:
        name = pending.pop(0)
        if name in {"", "."}:
            continue
        if name == "..":
            current = os.path.dirname(current)  # noqa: PTH120 - lexical, on a resolved prefix
            continue
        here = os.path.join(current, name)  # noqa: PTH118 - one component at a time
        if here in {"/proc/self", "/proc/thread-self"}:
            current = here  # named as written: /proc/self/cwd, not /proc/<its pid>/cwd
            continue
        if (found := _PROCESS_LINK.fullmatch(here)) is not None and not (
            streams and found["fd"] in {"0", "1", "2"}
        ):
            return here
        try:
            target = os.readlink(here)  # noqa: PTH115 - str in, str out
        except OSError:
            current = here  # not a link (or not there): the rest cannot be followed
            continue
        links += 1
        if links > _MAX_LINKS:
            return None
        if found is not None and not target.startswith("/"):
            # A standard stream that is no file (``pipe:[9142803]``, ``socket:[...]``): no
            # path goes on from it. Read as a name in /proc/self/fd, it made
            # ``--junitxml=/dev/stdout`` a process link wherever the output was a pipe.
            return None
        if target.startswith("/"):
            current = "/"
        pending = [*Path(target).parts[1 if target.startswith("/") else 0 :], *pending]
    return None


# NamedTuples (`Record`), not dataclasses: immutable all the same, and this module is imported
# on every pytest start, where a dataclass costs about half a millisecond to create.
class Protected(Record):
    """A data root that a test run must never open: another profile's, or a live holder's."""

    profile: str
    path: Path
    #: The identities of the root and of the app's directories in it, where they exist.
    identities: frozenset[tuple[int, int]] = frozenset()
    #: The identities of the root's ancestors: a directory with one of them holds the root.
    ancestors: frozenset[tuple[int, int]] = frozenset()
    #: The root as its settings spell it, where a symbolic link on the way leads elsewhere:
    #: where it lies may change while the run goes on (`paths_now`).
    spelled: Path | None = None

    @classmethod
    def of(cls, profile: str, path: Path, spelled: Path | None = None) -> Protected:
        """Record ``path`` as it is now (what does not exist yet has no identity)."""
        own = {identity(path / name) for name in ("", "sessions", ".trash", ".tmp")}
        above = {identity(parent) for parent in path.parents}
        return cls(
            profile,
            path,
            frozenset(own - {None}),  # type: ignore[arg-type]
            frozenset(above - {None}),  # type: ignore[arg-type]
            spelled if spelled is not None and spelled != path else None,
        )

    def paths_now(self) -> tuple[Path, ...]:
        """Where the root lies: as the run began, and where its spelling leads now.

        A deploy that switches a link on a root's way (``current`` -> a release, blue to
        green) moves the root while a run goes on: production's new root, bound into the
        sandbox by a test that opted into its profile, was opened and purged as the
        sandbox's, the run knowing only the old one (red team 48).
        """
        if self.spelled is None:
            return (self.path,)
        try:
            return (self.path, self.spelled.resolve())
        except (OSError, RuntimeError):
            return (self.path,)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "profile": self.profile,
            "path": path_as_text(self.path),
            "identities": sorted(self.identities),
            "ancestors": sorted(self.ancestors),
        }
        if self.spelled is not None:
            data["spelled"] = path_as_text(self.spelled)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Protected:
        spelled = data.get("spelled")
        return cls(
            str(data["profile"]),
            Path(path_from_text(data["path"])),
            frozenset((int(a), int(b)) for a, b in data.get("identities", ())),
            frozenset((int(a), int(b)) for a, b in data.get("ancestors", ())),
            Path(path_from_text(spelled)) if isinstance(spelled, str) else None,
        )


class Run(Record):
    """A pytest run with the app's plugin, as one process sees it.

    Attributes:
        sandbox: the only directory tree the run may open data roots in.
        pid: the pytest process (an xdist worker is a run of its own), as ``/proc`` numbers
            it (see `parent_pid`), None if only the environment says so.
        protected: roots the run must never open, however they are reached.
        recognised_by: how this process knows it belongs to the run, for messages.
    """

    sandbox: Path
    pid: int | None
    protected: tuple[Protected, ...] = ()
    recognised_by: str = "this process"
    #: Profiles the current test opted into (in the pytest process only).
    allowed: frozenset[str] = frozenset()
    #: The suffix of the run's scratch databases and object prefixes (remote profiles):
    #: ``_pytest_<pid>_<hex>``, and ``_gw<N>`` more for an xdist worker.
    scratch: str = ""
    #: The pytest process whose run this was, for a process that outlived it (its entry
    #: was handed on when the run ended), else None.
    ended: int | None = None
    #: The sandbox's device and inode as the run made it, where its entry says: a
    #: filesystem mounted above it later may show another directory at its path.
    sandbox_identity: tuple[int, int] | None = None
    #: Whether this is the run's own pytest process (or a fork of it, `_forked_from`), found
    #: by the run's registry entry (its pid, start time and `sys.argv` as registered) rather
    #: than by the mark on `sys`.
    itself: bool = False


# --- the process tree (Linux /proc) -------------------------------------------------------


#: This process's time namespace's boot-time offset, in nanoseconds, or None where it cannot
#: be read (`_read_boot_offset`); read once.
_BOOT_OFFSET: list[int | None] = []
# A fork made after its parent's `unshare(CLONE_NEWTIME)` is in the new namespace.
os.register_at_fork(after_in_child=_BOOT_OFFSET.clear)


def _boot_offset() -> int | None:
    """How much later than the machine's this process's time namespace says it booted, in
    nanoseconds (0 outside a time namespace); None where that cannot be known."""
    if not _BOOT_OFFSET:
        _BOOT_OFFSET.append(_read_boot_offset())
    return _BOOT_OFFSET[0]


def _offsets_file(pid: int | str) -> int | None:
    """The boot-time offset ``/proc/<pid>/timens_offsets`` gives, in nanoseconds."""
    offset = 0
    try:
        text = (_PROC / str(pid) / "timens_offsets").read_text()
    except FileNotFoundError:
        return 0  # a kernel without time namespaces
    except OSError:
        return None
    for line in text.splitlines():
        clock, seconds, nanoseconds = line.split()
        if clock in ("boottime", "7"):  # older kernels name clocks by number
            offset = int(seconds) * 10**9 + int(nanoseconds)
    return offset


def _time_namespace(pid: int | str, which: str = "time") -> int | None:
    try:
        return (_PROC / str(pid) / "ns" / which).stat().st_ino
    except OSError:
        return None


def _read_boot_offset() -> int | None:
    """This process's boot-time offset (`_boot_offset`).

    ``/proc/<pid>/timens_offsets`` gives the offsets of the time namespace that process's
    children get, not always its own: a process that made one for its children
    (``unshare(CLONE_NEWTIME)``, then its offsets written) stays in its old one until it
    forks or execs. Read as its own, every ancestor's start time was shifted, no entry
    was found, and such a process, given production's settings alone, purged a stopped
    production root (red team 48). Its own offsets are then read where they are its
    children's: from the nearest ancestor whose children get this process's namespace.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        own = _time_namespace("self")
        if own is None or own == _time_namespace("self", "time_for_children"):
            return _offsets_file("self")
        pid = _proc_self()
        walked: set[int] = set()
        while pid is not None and pid > 0 and pid not in walked:
            walked.add(pid)
            raw = _proc_bytes(pid, "stat")
            pid = int(raw[raw.rfind(b")") + 2 :].split()[1])
            if pid > 0 and _time_namespace(pid, "time_for_children") == own:
                return _offsets_file(pid)
    return None


@functools.cache
def _tick() -> int:
    """A clock tick of ``/proc/<pid>/stat``'s start times, in nanoseconds."""
    return 10**9 // os.sysconf("SC_CLK_TCK")


def _start_ticks(shown: int) -> tuple[int, ...]:
    """The start times, as the machine counts them, of a process ``/proc`` shows this
    process as started at `shown` (in clock ticks): one, or two where this process's
    boot-time offset is not a whole number of ticks (checkpoint and restore tools set it to
    the nanosecond), as ``/proc`` shifts the start by the offset before it cuts it to ticks.
    Taking the first alone, a child in such a namespace missed the entry of every ancestor
    started late in its tick, and purged a stopped production root (red team 48). Empty
    where the offset cannot be known (`_read_boot_offset`)."""
    offset = _boot_offset()
    if offset is None:
        return ()
    whole, part = divmod(offset, _tick())
    return (shown - whole,) if part == 0 else (shown - whole - 1, shown - whole)


#: Processes whose ``/proc/<pid>/stat`` is not their own (`process_starts`), and what it is instead:
#: something mounted over the entry. Emptied at each walk of the tree (`_walk_tree`).
_MISSHOWN: dict[int, str] = {}


def _proc_bytes(pid: int | str, name: str, *, misshown: bool = False) -> bytes:
    """``/proc/<pid>/<name>``'s bytes, read without a file object: the walks of a process's
    ancestors and descendants read a few of these per process, and ``Path.read_bytes``'s
    buffered file cost more than the read itself (the check after every test walks every
    process the run keeps, its database's included).

    With `misshown`, a file of another filesystem than ``/proc``'s (a fake one bound over
    the entry, red team 55) is noted in `_MISSHOWN` and read as missing (``ENOENT``)."""
    fd = os.open(f"{_PROC}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if misshown and os.fstat(fd).st_dev != _PROC.stat().st_dev:
            _MISSHOWN.setdefault(int(pid), "it is a file of another filesystem than /proc's")
            raise FileNotFoundError(errno.ENOENT, "not /proc's", f"{_PROC}/{pid}/{name}")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _exited(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` has exited: gone, or a zombie its parent has not reaped yet. A daemon
    that waited on a pidfd of its run (readable at the exit, before the reaping) was told
    its ended run was "left running" (a whole run under load failed on it). Given the start
    time it had (`started`, as `_stat_fields` gives it), also where the pid is another
    process's now: the run's last hand-over took a process that a test started at the pid
    of one its walk had seen exit (``ns_last_pid``) for that one (red team 68 on the run's
    end, `_hand_on_descendants`)."""
    try:
        raw = _proc_bytes(pid, "stat", misshown=True)
    except OSError:
        return True
    rest = raw.rpartition(b")")[2].split()
    if rest[:1] in ([b"Z"], [b"X"]):
        return True
    try:
        return started is not None and started not in _start_ticks(int(rest[19]))
    except (IndexError, ValueError):
        return True


def _stat_fields(pid: int) -> tuple[int, int] | None:
    """``(ppid, start time)`` of ``pid``; the start time tells a reused pid apart.

    The start time as the machine counts it: ``/proc`` shows it shifted by the reader's
    time namespace (``unshare --time``), where a child then found no ancestor's entry.
    Where that is one of two (`_start_ticks`), the earlier; `process_starts` gives both.
    """
    found = process_starts(pid)
    return (found[0], found[1][0]) if found is not None else None


def process_starts(pid: int) -> tuple[int, tuple[int, ...]] | None:
    """``(ppid, the start times it may have)`` of ``pid`` (`_start_ticks`), or None."""
    try:
        raw = _proc_bytes(pid, "stat", misshown=True)
    except OSError:
        return None
    if not raw.startswith(b"%d (" % int(pid)):
        shown = raw.split(b" ", 1)[0].decode(errors="backslashreplace")
        what = f"it shows process {shown}'s" if shown.isdigit() else f"it reads as {raw[:20]!r}"
        _MISSHOWN.setdefault(int(pid), what)
        return None
    return _starts_in(raw)


def _starts_in(raw: bytes) -> tuple[int, tuple[int, ...]] | None:
    """``(ppid, the start times it may have)`` that a process's ``stat`` line `raw` gives."""
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        starts = _start_ticks(int(rest[19]))
        return (int(rest[1]), starts) if starts else None
    except (IndexError, ValueError):
        return None


def _proc_self() -> int | None:
    """This process's pid as ``/proc`` numbers it, or None without ``/proc``.

    Not ``os.getpid()``: that numbers it in the process's own PID namespace, and ``/proc``
    may have been mounted in an enclosing one (``unshare --pid --fork`` without
    ``--mount-proc``, a container given the host's ``/proc``). Read with the other
    numbering, pid 1 was the host's init: a child there walked no ancestor of its run,
    and a run there registered under init's pid, claiming every process of its user.
    """
    try:
        return int((_PROC / "self").readlink().name)
    except (OSError, ValueError):
        return None


#: This process's `own_start`, keyed by ``os.getpid()`` as it was read: emptied in a
#: forked child, which reads its own.
_OWN_START: list[tuple[int, tuple[int, int]]] = []
os.register_at_fork(after_in_child=_OWN_START.clear)


def own_start() -> tuple[int, int] | None:
    """This process's pid as ``/proc`` numbers it (`_proc_self`) and its start time, or None
    without ``/proc``; read once. Neither changes while the process lives (its parent does:
    never cached), and a fork, which has another ``os.getpid()``, reads its own. The plugin
    asks after every test (`restore_entry`, twice), and these two reads of ``/proc`` were
    most of what the guard cost a test that does nothing (`bench/fixtures.py`)."""
    key = os.getpid()
    if _OWN_START and _OWN_START[0][0] == key:
        return _OWN_START[0][1]
    pid = _proc_self()
    fields = _stat_fields(pid) if pid is not None else None
    if pid is None or fields is None:
        return None
    _OWN_START[:] = [(key, (pid, fields[1]))]
    return pid, fields[1]


def parent_pid() -> int | None:
    """The parent of this process as ``/proc`` numbers it (see `Run.pid`), or None."""
    own = _proc_self()
    fields = _stat_fields(own) if own is not None else None
    return fields[0] if fields is not None else None


def _ancestry() -> Iterator[tuple[int, int]]:
    """``(pid, start time)`` of this process, then of its parent, and so on up to pid 1,
    numbered as ``/proc`` numbers them."""
    # Read whole, then again if an ancestor was gone before its turn: a process whose parent
    # exited (an `sh -c 'cmd & exit'`) is the run's subreaper's child from then on, but a
    # walk that read the old parent's pid and then found it reaped stopped there, outside
    # any run (8 walks of 4,000 in a second, red team 39).
    for _ in range(_REREADS):
        chain, complete = _chain()
        if complete:
            break
    yield from chain


#: How many times the chain of ancestors is read again when one was gone meanwhile.
_REREADS: Final = 8


def _chain() -> tuple[list[tuple[int, int]], bool]:
    """This process's ancestry as `_ancestry` gives it, and whether it reached its end
    rather than an ancestor that had exited meanwhile."""
    pid = _proc_self()
    if pid is None:
        return [], True
    # Every ancestor, however many: the walk once stopped after 128, and a child a test
    # started at the end of a chain of 130 shells (a recursive build, a tool that nests
    # itself), given a hand-built environment, found no run above it and purged a stopped
    # production root. Only a cycle ends it early (a pid reused while it is read).
    chain: list[tuple[int, int]] = []
    walked: set[int] = set()
    while pid not in walked:
        walked.add(pid)
        fields = _stat_fields(pid)
        if fields is None:
            return chain, not chain  # without /proc (nothing read yet), or one is gone
        parent, started = fields
        chain.append((pid, started))
        # Pid 1 is read too: in a container, pytest is often pid 1 (`docker run image
        # pytest`), and its children were not part of its run. Its parent is 0.
        if parent <= 0:
            break
        pid = parent
    return chain, True


def _runs_dir_trusted(directory: Path, uid: int) -> bool:
    try:
        return _trusted(os.lstat(directory), uid)
    except OSError:
        return False


def _trusted(found: os.stat_result, uid: int, kind: Callable[[int], bool] = stat.S_ISDIR) -> bool:
    # Anyone can create a directory in /tmp: entries count only from a directory that its
    # user owns and nobody else may write, so another user cannot fake (or hide) a run.
    return (
        kind(found.st_mode)
        and found.st_uid == uid
        and not found.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _entry_name(pid: int, started: int, namespace: int | None = None) -> str:
    """The name of the entry of process `pid` started at `started`; `namespace`: the name
    it has where another PID namespace's process took the first (`_name_to_write`)."""
    if namespace is None:
        return f"{pid}-{started}.json"
    return f"{pid}-{started}-{namespace}.json"


#: The longest entry a reader reads (a run's is a few kB, even with many protected roots).
_ENTRY_MAX_BYTES: Final = 1 << 20


def _entry_bytes(path: Path, *, dir_fd: int | None = None, follow: bool = True) -> bytes:
    """An entry's bytes; an OSError for anything but a regular file (followed through a
    link, as ever, unless `follow` is false; `path` relative to `dir_fd` where given). A
    FIFO a test put at an entry's name made every reader wait for ever: the run's own
    check after the test, and every process the run started."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > _ENTRY_MAX_BYTES:  # no run writes one so long: a test's, to read for ever
                raise OSError(errno.EFBIG, "longer than a run's entry", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _entry_data(path: Path) -> dict[str, Any] | None:
    try:
        data = json_loads(_AS_READ[path] if path in _AS_READ else _entry_bytes(path))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _keeps_own_copy(pid: int, name: str) -> bool:
    """Whether this process (the run's, pid `pid` as ``/proc`` numbers it) has run no other
    program since it registered its run as entry `name`: it still maps the run's anchored
    copy (`_anchor`), which an ``exec`` drops and nothing else unmaps, else (where the kernel
    seals no mapping in place) it holds the sealed copy (`_keep_copy`) with the
    ``close-on-exec`` flag it was made with. A test of a command line sets ``sys.argv`` to
    the command's (``monkeypatch.setattr(sys, "argv", ...)``); one that also deleted the
    run's mark on ``sys`` was refused, rightly, but as the run's process "until it ran
    another program in its place (exec)": a cause that was not there (red team 73 on the
    guard).

    The copy alone is no word: a test that cleared its flag (``os.set_inheritable``) kept it
    across a real ``exec`` of the app, which was then named "this process" and took the
    run's own rules (red team 73 on regress)."""
    if _seals_in_place() and _anchor_mapped(pid, name) is not None:
        return True
    listed = _descriptors(pid)  # as /proc numbers this process (a PID namespace's differs)
    own = f"/memfd:{_COPY_NAME}{pid}-"
    return listed is not None and any(
        target.startswith(own) and _closes_on_exec(pid, fd) for fd, target in listed
    )


def _registered_name(path: Path) -> str:
    """The name of the entry `path` (`_read_entry`'s) was read as: the entry's own, else
    where a test changed or removed it, that of what the run keeps open read in its place
    (the entry, its sealed or anchored copy: ``/proc/<pid>/fd/<n>``, ``map_files``), which
    its link's text names."""
    changed = _CHANGED.get(path)
    if changed is not None and changed[0] is not None:
        return changed[0].name
    if path.is_relative_to(_PROC):
        with contextlib.suppress(OSError):
            text = os.readlink(path).removesuffix(" (deleted)")  # noqa: PTH115 - str out
            for prefix in (f"/memfd:{_COPY_NAME}", f"/memfd:{_ANCHOR_NAME}"):
                if text.startswith(prefix):
                    return text.removeprefix(prefix)
            return os.path.basename(text)  # noqa: PTH119 - the entry the run keeps open
    return path.name


def _closes_on_exec(pid: int, fd: str) -> bool:
    """Whether process `pid`'s descriptor `fd` (its ``/proc`` path, or its number) is one an
    ``exec`` closes (``O_CLOEXEC`` in its ``fdinfo``'s octal flags)."""
    try:
        text = (_PROC / str(pid) / "fdinfo" / fd.rpartition("/")[2]).read_bytes()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith(b"flags:"):
            try:
                return bool(int(line.split()[1], 8) & os.O_CLOEXEC)
            except (IndexError, ValueError):
                return False
    return False


def _read_entry(
    path: Path, pid: int, depth: int, leads: str = "", data: dict[str, Any] | None = None
) -> Run | None:
    """The run an entry names; None for one unreadable, or of a run still starting."""
    data = _entry_data(path) if data is None else data
    if data is None or (parts := _run_parts(data)) is None:
        return None
    sandbox, protected = parts
    how = "this process" if depth == 0 else f"an ancestor process, pytest pid {pid}"
    itself = not leads and "outlived" not in data and (depth == 0 or _forked_from(pid, data))
    if depth == 0 and data.get("argv") not in (sys.argv, _recorded_argv(sys.argv)):
        # Unmarked, with a run's entry of its own: the run's process after an exec, or a
        # subinterpreter of it, whose `sys` is its own (the refusal once blamed an exec), or
        # the run's own program whose `sys.argv` a test set (it keeps the run's sealed copy).
        if _in_subinterpreter():
            itself = False
            how = (
                f"this process, pytest pid {pid}, in a subinterpreter (it has a sys module of "
                "its own, without the run's mark)"
            )
        elif not _keeps_own_copy(pid, _registered_name(path)):
            itself = False
            how = f"this process, pytest pid {pid} until it ran another program in its place (exec)"
    if leads:
        how = (
            f"pytest pid {pid}, which leads this process's {leads} though it is not its "
            "ancestor: a clone with CLONE_PARENT, made the child of its caller's parent, or "
            "another command of the run's pipeline"
        )
    ended = data.get("outlived")
    if isinstance(ended, int):
        who = "this process" if depth == 0 else f"an ancestor process, pid {pid}"
        how = f"{who}, started by the test run of pytest pid {ended}, which has ended"
        # Handed on at the end of a test (`hand_on`): the run may still be running.
        run_started = data.get("run_started")
        fields = _stat_fields(ended) if isinstance(run_started, int) else None
        if fields is not None and fields[1] == run_started and not _exited(ended):
            how = f"{who}, left running by a test of the run of pytest pid {ended}"
            ended = None
    made = data.get("sandbox_identity")
    registered = f"registered in {_registered_in(path)}"
    if path in _CHANGED:
        entry, what = _CHANGED[path]
        if entry is None:
            changed = f"registered in {RUNS_DIR}, though a test of the run removed its entry"
        elif entry.is_relative_to(_PROC):
            changed = f"though a test of the run changed the entry it keeps open ({entry}: {what})"
        else:
            changed = f"registered in {entry.parent}, though a test of the run changed its entry"
            changed += f" {entry.name} ({what})"
        registered = (
            f"{changed} since the run wrote it, so this process read the sealed copy the run "
            f"keeps of it ({path}) instead; the run puts its entry back after that test and "
            "names it: a test must leave the registry of test runs alone"
        )
    return Run(
        sandbox,
        pid,
        protected,
        f"the process tree ({how}, {registered})",
        scratch=_scratch_suffix(data.get("scratch")),
        ended=ended if isinstance(ended, int) else None,
        sandbox_identity=(
            (made[0], made[1])
            if isinstance(made, list) and len(made) == 2 and all(type(n) is int for n in made)
            else None
        ),
        itself=itself and not _in_subinterpreter(),
    )


def _run_parts(data: Mapping[str, Any]) -> tuple[Path, tuple[Protected, ...]] | None:
    """The sandbox and the protected roots entry `data` names, where it names a run's as
    runs write them; None for one still starting, or one a test wrote by hand that no run
    writes (`_read_entry` reads it as no run's, and so does the hand-over,
    `_kept_by_hand_on`)."""
    if data.get("starting") or "sandbox" not in data:
        return None
    try:
        sandbox = Path(path_from_text(str(data["sandbox"])))
    except ValueError:
        return None  # no run writes a surrogate that escapes no byte: a test wrote it
    if not sandbox.is_absolute() or sandbox == Path(sandbox.anchor):
        return None  # no run makes such a sandbox (a test wrote it): not a run's entry
    try:
        protected = tuple(Protected.from_dict(item) for item in data.get("protected", ()))
    except (TypeError, ValueError, KeyError, AttributeError):
        # Not as a run writes it (a test wrote it by hand): no run's, as an unreadable one;
        # its children once stopped at it with a bare traceback (red team 39).
        return None
    return sandbox, protected


def _forked_from(pid: int, data: dict[str, Any]) -> bool:
    """Whether this process is a fork of the run's process `pid` (a test's ``os.fork``):
    the same command line, and the `sys.argv` its entry registered, the run's own pytest
    rather than a pytest of its own (red team 58 on the guard)."""
    if data.get("argv") not in (sys.argv, _recorded_argv(sys.argv)):
        return False
    return _cmdline("self") == _cmdline(pid)


def _registered_in(entry: Path) -> str:
    """Where a message says `entry` was found: its registry, or the descriptor of it a run
    keeps open (`_entry_held_open`) where no path leads there any more."""
    if entry.parent.name == "fd" and entry.is_relative_to(_PROC):
        return f"{entry}, the descriptor of its entry that it keeps open"
    return str(entry.parent)


def _in_subinterpreter() -> bool:
    """Whether this code runs in a subinterpreter (``_xxsubinterpreters``, Python 3.14's
    ``concurrent.interpreters`` and its ``InterpreterPoolExecutor``), not the main one."""
    import importlib

    for name in ("_interpreters", "_xxsubinterpreters"):
        try:
            module = importlib.import_module(name)
            current, main = module.get_current(), module.get_main()
        except (ImportError, AttributeError):
            continue
        # 3.13 and later give (id, whence); earlier versions an id alone.
        if isinstance(current, tuple):
            current, main = current[0], main[0]
        return bool(current != main)
    return False


class _Seen(dict[Path, set[str]]):
    """The registries one walk has listed (directory: its entries), and what in them this
    process may not read (`hidden`: the ancestor's pid, what it could not read and why)."""

    def __init__(self) -> None:
        super().__init__()
        self.unlisted: set[Path] = set()
        self.hidden: dict[int, tuple[Path, str]] = {}
        #: This user's registries whose entries count for nothing, and why (`_distrusted`).
        self.distrusted: dict[Path, str] = {}
        #: Registries whose own look (`lstat`) failed, other than as absent (`_read_failed`).
        self.failed: dict[Path, str] = {}
        self._views: dict[int | str, _View | None] = {}
        self._beside: dict[Path, set[str]] = {}
        #: Processes that keep a registry's entry or a directory of this user open
        #: (`_entry_held_open`), where an entry may be found that no listing shows.
        self.holding: set[int] = set()

    def named_beside(self, pid: int, started: int) -> bool:
        """Whether a registry listed so far holds an entry named for `pid` and `started`
        with a PID namespace's number too (`_entry_name`): read once a walk."""
        for directory, names in self.items():
            if directory not in self._beside:
                self._beside[directory] = {
                    name.rsplit("-", 1)[0]
                    for name in names
                    if name.count("-") == 2 and name.endswith(".json")
                }
            if f"{pid}-{started}" in self._beside[directory]:
                return True
        return False

    def view(self, pid: int | str) -> _View | None:
        """What process `pid` sees as its files (`_view`), read once a walk."""
        if pid not in self._views:
            self._views[pid] = _view(pid)
        return self._views[pid]


def _registered(directory: Path, uid: int, seen: _Seen) -> set[str]:
    """The entries of `directory`, if user `uid` (as this process sees ids) owns it; one
    this process may not list is noted in ``seen.unlisted``."""
    if directory not in seen:
        seen[directory] = set()
        if _runs_dir_trusted(directory, uid):
            try:
                # The names alone (what `Path.iterdir` lists, without a `Path` made for each
                # of the run's, and every other run's, entries: 112 on this machine under a
                # suite's run, a tenth of a walk's CPU).
                seen[directory] = set(os.listdir(directory))  # noqa: PTH208 - names only
            except OSError:
                # Denied, or failed otherwise though it is there (too many open files, a
                # tracer's injected fault): its entries are looked for by name. A failed
                # listing once counted as an empty registry, and a child given production's
                # settings alone under `strace -e inject=openat:error=EMFILE -P <registry>
                # -P /proc/<run>/fd` found no run and purged a stopped production root (red
                # team 60 on the children of tests).
                seen.unlisted.add(directory)
        elif (why := _distrusted(directory, uid)) is not None:
            failed = why.startswith((_READ_FAILED, _SEARCH_DENIED))
            (seen.failed if failed else seen.distrusted)[directory] = why
    return seen[directory]


def _distrusted(directory: Path, uid: int) -> str | None:
    """Why user `uid`'s own registry `directory` is not trusted, where a test of that user
    could have made it so: others may write it, or a link is at its name; or its look
    failed (`_read_failed`). None otherwise (not there, or another user's: such a registry
    keeps a run from starting at all)."""
    try:
        found = os.lstat(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        # Neither there nor absent (a tracer's injected EIO): a run's entry may be in it.
        # Denied, a directory on its way this process may not search (/tmp mode 0700, a
        # security policy): the refusal names that directory, not the registry, which no
        # chmod of its own opens (red team 60 on regress).
        denied = f"{_SEARCH_DENIED} ({error.strerror or 'Permission denied'})"
        return denied if isinstance(error, PermissionError) else _read_failed(error)
    if found.st_uid != uid:
        return None
    if stat.S_ISLNK(found.st_mode):
        return f"{_DISTRUSTED[1]} {os.readlink(directory)} is at its name"  # noqa: PTH115
    if stat.S_ISDIR(found.st_mode):
        return f"{_DISTRUSTED[0]} ({stat.filemode(found.st_mode)})"
    return None


#: How `_distrusted` begins its reasons, which `_hidden_run` tells apart from unreadable.
_DISTRUSTED: Final = ("others may write it", "a symbolic link to")

#: How `_distrusted` begins why a registry's own look was denied (`_unsearchable`).
_SEARCH_DENIED: Final = "its look was denied"


def _unsearchable(path: Path) -> Path | None:
    """The directory nearest the root on `path`'s way that this process may not search
    (``/tmp`` left mode 0700), or None where each may be (a security policy denies more)."""
    for parent in reversed(path.parents):
        if not os.access(parent, os.X_OK, effective_ids=os.access in os.supports_effective_ids):
            return parent
    return None


def _hidden_entry(directory: Path, name: str) -> Path | str | None:
    """Entry `name` of a registry this process may not list: its path where it can be
    reached by name (``chmod 0311``), None where it is not there, else why it cannot be
    known (an access control list that denies this process's user the directory)."""
    try:
        (directory / name).stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as error:
        return error.strerror or "Permission denied"
    except OSError as error:
        return _read_failed(error)
    return directory / name


#: How `_read_failed` begins its reasons, which `_hidden_run` tells apart from a denial.
_READ_FAILED: Final = "the read failed"


def _read_failed(error: OSError) -> str:
    """Why a read of the registry failed, where it was neither denied nor found absent."""
    code = errno.errorcode.get(error.errno or 0, str(error.errno))
    return f"{_READ_FAILED} ({code}: {error.strerror or error})"


#: Whether this process is in a user namespace of its own (read once).
_OWN_USER_NAMESPACE: list[bool] = []


def _in_own_user_namespace() -> bool:
    if not _OWN_USER_NAMESPACE:
        try:
            rows = (_PROC / "self" / "uid_map").read_text().split()
        except OSError:
            rows = ["0", "0", "4294967295"]  # no /proc, or no user namespaces at all
        _OWN_USER_NAMESPACE.append(rows != ["0", "0", "4294967295"])
    return _OWN_USER_NAMESPACE[0]


def unmapped_here(uid: int) -> bool:
    """Whether `uid`, as this process sees a file's owner, is the kernel's overflow id of a
    user namespace of its own (``unshare -r``, a rootless container): an owner that its map
    leaves out, whom no process here can become."""
    if not _in_own_user_namespace():
        return False
    try:
        overflow = int(Path("/proc/sys/kernel/overflowuid").read_text())
    except (OSError, ValueError):
        overflow = 65534
    return uid == overflow


def _registries(uid: int) -> list[Path]:
    """Where the entry of a process that this process sees owned by `uid` may be.

    Directories are named by the user's id on the machine; in a user namespace of its own
    (`unshare -r`, `podman unshare`, `bwrap --unshare-user`) this process sees ids as that
    namespace maps them (the run's user 1000 as 0, or as 65534 where nothing maps it), and
    looked for its run in another user's directory: every registry in /tmp is read there,
    and an entry counts only from one its process's user owns, as seen from here.
    """
    if not _in_own_user_namespace():
        return [_runs_dir(uid)]
    prefix = RUNS_DIR.name.rpartition("-")[0] + "-"
    with contextlib.suppress(OSError), os.scandir(RUNS_DIR.parent) as found:
        return [Path(e.path) for e in found if e.name.startswith(prefix)]
    return [_runs_dir(uid)]


def _mount_namespace(pid: int | str) -> int | None:
    try:
        return (_PROC / str(pid) / "ns" / "mnt").stat().st_ino
    except OSError:
        return None


class _View(Record):
    """What a process sees as its files: its mount namespace, and the directory it sees at
    ``/tmp``, where the registry lies (None where it has none)."""

    namespace: int
    tmp: tuple[int, int] | None


def _view(pid: int | str) -> _View | None:
    """Process `pid`'s `_View`, or None where this process may not read it.

    A mount namespace or a root directory of its own (``chroot``) can each give a process a
    /tmp of its own, so a registry of its own. A child a test started under ``chroot`` (a
    jail with ``/proc`` mounted and a ``/tmp`` of its own, as a build or a packaging test
    makes one), and every process a test started after it ``chroot``-ed the run's own
    process, shared the run's mount namespace, so the registry was not looked for through
    an ancestor's ``/proc/<pid>/root``: given production's settings alone, each purged a
    stopped production root (red team 47). The root directory itself does not tell: a jail
    made by binding ``/`` has the same one, with another filesystem on its ``/tmp``.
    """
    # Spelled as text: read for each ancestor and this process in every walk, and each
    # `Path` joined here cost more than the `stat` it named (the names are plain: no
    # component that pathlib would spell otherwise).
    base = f"{_PROC}/{pid}"
    try:
        namespace = os.stat(f"{base}/ns/mnt").st_ino  # noqa: PTH116 - str in
    except OSError:
        return None
    tmp = identity(f"{base}/root{RUNS_DIR.parent}")
    if tmp is None and not os.access(f"{base}/root", os.F_OK):
        return None  # not this process's to read
    return _View(namespace, tmp)


def _entry_in_its_own_tmp(pid: int, uid: int, name: str, seen: _Seen) -> Path | None:
    """The registry entry of ancestor `pid` as that process sees its /tmp, where it is not
    ours: a child with a /tmp of its own (bwrap, firejail --private-tmp, a tool's own
    sandbox), or a root directory of its own (``chroot``), cannot read the run's registry at
    its path, only through ``/proc/<pid>/root`` (`_view`)."""
    theirs = seen.view(pid)
    if theirs is None or theirs == seen.view("self"):
        return None
    return _entry_through(pid, uid, name)


def _entry_through(pid: int, uid: int, name: str) -> Path | None:
    """Entry `name` of user `uid`'s registry in the /tmp process `pid` sees, if it is there."""
    directory = _PROC / str(pid) / "root" / _runs_dir(uid).relative_to("/")
    if _runs_dir_trusted(directory, uid) and (directory / name).is_file():
        return directory / name
    return None


def _entry_left_behind(pid: int, parent: int, uid: int, name: str, seen: _Seen) -> Path | None:
    """The registry entry of ancestor `pid` in the /tmp its `parent` sees, where `pid` has
    moved since into a mount namespace or a root directory of its own (`_view`), shared
    with this process.

    A test that moved the run's own process there (``unshare(CLONE_NEWNS)`` in the test, as
    code that isolates itself does, then a tmpfs mounted on /tmp) hid the run's entry from
    every process it started afterwards, and the run's own process left no other namespace
    to read it through: a child given production's settings alone under a runner script
    purged a stopped production root (red team 46). The run's parent still sees it.
    """
    theirs = seen.view(pid)
    before = seen.view(parent)
    if theirs is None or before is None or theirs == before or theirs != seen.view("self"):
        return None
    return _entry_through(parent, uid, name)


def _entry_held_open(pid: int, uid: int, name: str, seen: _Seen | None = None) -> Path | None:
    """Entry `name` of user `uid`'s registry, read through a descriptor of it, or of the
    registry, that process `pid` keeps open, if it is a Python process that keeps one (a
    run does, `_keep_open`).

    A path names what is there now: a test (as root) that mounted a filesystem on ``/tmp``
    in the run's own mount namespace, without a namespace of its own (a clean ``/tmp`` for
    its code, in a CI container), hid the run's registry from every process it then
    started, and the run's parent saw the same ``/tmp``: a child given production's settings
    alone purged a stopped production root (red team 47). A descriptor names the directory
    itself, through any mount, ``chroot`` or namespace; the entry's own names its bytes,
    even once a test (of this run, or of another run of this user) removed it. Only
    Python's processes are looked at (by their program): every process outside a run walks
    its ancestors, and a shell or an init has nothing to find. A process seen to keep an
    entry of its pid or a directory open is noted in `seen` (`_may_be_named_beside`).
    """
    if not _python_program(pid):
        return None
    listed = _descriptors(pid)
    if listed is None:
        return None
    copy = None
    for path, target in listed:
        if target == f"/memfd:{_COPY_NAME}{name} (deleted)":
            # Its run's sealed copy (`_keep_copy`): where nothing else is left, a
            # test removed the entry and closed what the run keeps of it.
            copy = Path(path)
            continue
        if not target.startswith("/"):
            continue  # a pipe, a socket
        with contextlib.suppress(OSError):
            found = os.stat(path)  # noqa: PTH116 - str in: no Path made per descriptor
            # The entry itself, removed or not (`rm -rf /tmp/app-*`, in this run or
            # another's): its bytes stay while it is open.
            if stat.S_ISREG(found.st_mode):
                opened = _word_name(target.removesuffix(" (deleted)"))
                if opened == name and _trusted(found, uid, stat.S_ISREG):
                    return Path(path)
                if seen is not None and opened.startswith(f"{pid}-"):
                    seen.holding.add(pid)
            # Any directory, not only one at the registry's name: a test that moved
            # the registry aside and made an empty one in its place hid the entry.
            elif _trusted(found, uid):
                # Not the listing of /proc/<pid>/fd this scan held, for this process.
                if seen is not None and not target.startswith(f"{_PROC}/"):
                    seen.holding.add(pid)
                if (held := Path(path) / name).is_file():
                    return held
    return copy  # checked as a copy by `_entry_changed`


def _entry_of(
    pid: int,
    started: int,
    seen: _Seen,
    parent: int | None = None,
    namespace: int | None = None,
) -> Path | None:
    """The registry entry of process `pid` (started at `started`), if it is a run's.

    Looked for under the user that owns its ``/proc`` entry, its effective user, then under
    this process's real user: a run names its registry by its real user, and a test that
    switched its effective one for a moment (``os.seteuid``, to act as a service's user)
    took every child it started meanwhile, which keeps the real one, out of the run. Not
    every user ``/proc/<pid>/status`` names: that read, for every ancestor of every process
    outside a run, cost a third more than the walk.

    In a time namespace whose offset is not a whole number of ticks, `started` is the first
    of the two start times the process may have (`_start_ticks`): the second is looked for
    too. `namespace`: the entry named with its PID namespace's number (`_name_to_write`).
    """
    for candidate in (started, started + 1) if _start_uncertain() else (started,):
        name = _entry_name(pid, candidate, namespace)
        entry = _entry_named(pid, name, seen, parent)
        if entry is not None:
            return _entry_changed(pid, entry, name)
    return None


#: Entries a test changed since its run wrote them, found in this walk, by the run's sealed
#: copy read in their place (`_entry_changed`): the entry, and what changed in it.
_CHANGED: dict[Path, tuple[Path | None, str]] = {}


#: Each process's descriptors and what each names (`_descriptors`), listed once a walk:
#: `_entry_held_open`, `_sealed_copies` and `_anchored` read them. Empty outside a walk.
_LISTED: list[dict[int, list[tuple[str, str]] | None]] = []


def _descriptors(pid: int) -> list[tuple[str, str]] | None:
    """Process `pid`'s descriptors, by their path in ``/proc/<pid>/fd`` and the text of
    that link; None where they cannot be listed. Listed once a walk (`_walk_tree`): a child
    found in a run through the descriptors the run keeps (`_entry_held_open`) listed them
    again for its sealed copies (`_sealed_copies`)."""
    memo = _LISTED[-1] if _LISTED else None
    if memo is not None and pid in memo:
        return memo[pid]
    listed: list[tuple[str, str]] = []
    found: list[tuple[str, str]] | None = listed
    try:
        with os.scandir(f"{_PROC}/{pid}/fd") as descriptors:
            for descriptor in descriptors:
                with contextlib.suppress(OSError):
                    text = os.readlink(descriptor.path)  # noqa: PTH115 - str in, out
                    listed.append((descriptor.path, _link_text(text)))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        found = None  # gone, or closed to this process (`_capabilities_withheld`)
    except OSError as error:
        # A failed read is no empty list: noted, for a refusal (`_proc_read_failed`).
        _PROC_FAILED.setdefault(pid, ("fd", error))
        found = None
    if memo is not None:
        memo[pid] = found
    return found


def _link_text(text: str) -> str:
    """`text`, a link's as ``os.readlink`` gives it, spelled as ``str(Path(text))`` spells it
    (what the descriptors' texts were compared as): the same text where it has no empty
    component but a leading root and no ``.`` one, as the kernel spells every link of
    ``/proc/<pid>/fd`` (``/tmp/...``, ``pipe:[...]``, ``/memfd:... (deleted)``); through
    pathlib otherwise (a link a test bound over such a directory). A `Path` made for each of
    every Python ancestor's descriptors, and its text made again, was a fifth of a walk's
    CPU (`bench/README.md`, "perf-child66")."""
    parts = text.split("/")
    if not text or "." in parts or "" in parts[1:]:
        return str(Path(text))
    return text


def _sealed_copies(pid: int, name: str) -> list[tuple[Path, bytes]]:
    """The sealed copies process `pid` keeps of its run's entry `name` (`_keep_copy`), by
    their path in ``/proc/<pid>/fd`` and their bytes: one, or two while it replaces one."""
    if not _SEALS or not _python_program(pid):
        return []
    wanted = f"/memfd:{_COPY_NAME}{name} (deleted)"
    found = []
    for path, target in _descriptors(pid) or ():
        if target != wanted:
            continue
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                # Sealed against every change, or not a copy the run made.
                if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS != _SEALS:
                    continue
                text = os.pread(fd, _ENTRY_MAX_BYTES + 1, 0)
                if len(text) == os.fstat(fd).st_size <= _ENTRY_MAX_BYTES:
                    found.append((Path(path), text))
            finally:
                os.close(fd)
    return found


def _entry_changed(pid: int, entry: Path, name: str) -> Path:
    """`entry`, found at process `pid`'s name `name`, or the sealed copy the process keeps
    of it (`_keep_copy`) where the entry says anything else than the copy (or than either of
    two, while the run replaces one): a test of the run changed it, and the run puts it back
    only after that test (`restore_entry`). Either is taken only where it keeps within the
    copy the run anchored as it registered (`_anchored`, `_within`), else that copy is. Noted
    in `_CHANGED` for the refusal's words."""
    copies = _sealed_copies(pid, name)
    chosen = _entry_or_copy(entry, copies)
    anchored = _anchored(pid, name)
    if anchored is None:
        return chosen  # no anchored copy (`_anchor`): the copies alone, as before
    where, first = anchored
    text = next((copy for path, copy in copies if path == chosen), None)
    try:
        if text is None:
            text, size = _entry_bytes(chosen), chosen.stat().st_size
            if len(text) != size:
                # Read short (a tracer's fault; a test rewriting it in place): not a change
                # either, and so it stays for the rest of the walk, as read.
                _pin(chosen, b"", f"{_READ_FAILED} (it read {len(text)} of its {size} bytes)")
                return chosen
    except OSError:
        return chosen  # a read that fails says nothing of a change (`_unreadable` names it)
    if text == first or _within(text, first):
        # What was judged is what the walk reads: a test that rewrote the entry in place
        # again and again could have it read whole here and cut, or forged, next.
        _pin(chosen, text)
        return chosen
    # A test closed the run's copies, or put one of its own making beside them, and rewrote
    # the entry as that one says: the copy the run anchored before any test ran says more.
    was, what = _CHANGED.pop(chosen, (entry, ""))
    if not what:
        try:
            what = _what_changed(_entry_bytes(entry), first)
        except OSError:
            what = "it cannot be read"
    _CHANGED[where] = (was, what)
    return where


def _pin(entry: Path, text: bytes, short: str | None = None) -> None:
    """Have the rest of this walk read `entry` as `text` (`_AS_READ`), and, where it read
    `short`, say so (`_READ_SHORT`); outside a walk, nothing."""
    if _LISTED:
        _AS_READ[entry] = text
        if short is not None:
            _READ_SHORT[entry] = short


def _entry_or_copy(entry: Path, copies: list[tuple[Path, bytes]]) -> Path:
    """`entry`, or the last of its run's sealed `copies` where the entry says anything else
    than each (`_entry_changed`)."""
    if not copies:
        return entry  # no run's process, not Linux, or one whose descriptors this one may not read
    if any(path == entry for path, _ in copies):
        _CHANGED[entry] = (None, "it was removed")  # only its copy was left (`_entry_held_open`)
        return entry
    path, copy = copies[-1]
    try:
        if not stat.S_ISREG(entry.stat().st_mode):
            # A FIFO, a directory or a device in its place: every read of it fails, and
            # the walk passed over it (under a runner script, a child purged a stopped root).
            _CHANGED[path] = (entry, "it is no longer a regular file")
            return path
        text = _entry_bytes(entry)
        whole = len(text) == entry.stat().st_size
    except OSError:
        return entry  # a read that fails says nothing of a change (`_unreadable` names it)
    if not whole or any(text == copy for _, copy in copies):
        # Read short (a tracer's fault, ``inject=read:retval=0``): not a change either.
        return entry
    _CHANGED[path] = (entry, _what_changed(text, copy))
    return path


#: Where a run maps the first sealed copy of its entry (`_anchor`): one of `_ANCHOR_SLOTS`
#: addresses a megabyte apart from `_ANCHOR_BASE` (64 GiB, below where Linux places a
#: program, its heap, its libraries and its other mappings), chosen by the entry's name.
_ANCHOR_BASE: Final = 1 << 36
_ANCHOR_SLOTS: Final = 1 << 16
_ANCHOR_STEP: Final = 1 << 20


def _anchor_address(name: str) -> int:
    import zlib

    return _ANCHOR_BASE + zlib.crc32(name.encode()) % _ANCHOR_SLOTS * _ANCHOR_STEP


def _seals_in_place() -> bool:
    """Whether this kernel seals a mapping in place (``mseal``: Linux 6.10, 64-bit), so
    that nothing in the process that made it, the process included, unmaps or replaces
    it: an anchored copy (`_anchor`) is the run's then, and only then."""
    if not _SEALS_IN_PLACE:
        uname = getattr(os, "uname", None)  # not on Windows, which has no /proc either
        # Without a pattern: compiling one cost every process that asks (each since red team
        # 63, `_forked_run`) more than the rest of the look.
        major, _, rest = (uname().release if uname else "").partition(".")
        minor = "".join(itertools.takewhile(str.isdigit, rest))
        version = (int(major), int(minor)) if major.isdigit() and minor else (0, 0)
        linux = sys.platform.startswith("linux")
        _SEALS_IN_PLACE.append(linux and sys.maxsize > 1 << 32 and version >= (6, 10))
    return _SEALS_IN_PLACE[0]


_SEALS_IN_PLACE: list[bool] = []

#: What `_entry_data` reads in a walk for an entry `_entry_changed` judged: its bytes as
#: judged (and anchored copies read through the memory of the process that maps them,
#: `_anchored`, by the path a message names them by); cleared each walk.
_AS_READ: dict[Path, bytes] = {}
#: Why an entry `_entry_changed` judged read short (`_unreadable` says it); cleared so too.
_READ_SHORT: dict[Path, str] = {}


def _anchored(pid: int, name: str) -> tuple[Path, bytes] | None:
    """The sealed copy of entry `name` that process `pid` mapped and sealed in place when it
    registered its run (`_anchor`), before any test ran: where it is read from, and its
    bytes. None where there is none, or it cannot be read (another user's process, or a
    process this one may not trace once a test closed the descriptor of it).

    The run's copies (`_keep_copy`) are its word only as long as the run's process is not
    the test's to change, and it is: a test that closed them, or put a sealed copy of its
    own making under their name beside them, and rewrote the entry as that one says, took
    its children out of the run (red team 61's *not stopped*, closed by red team 62). No
    test unmaps or replaces the anchored copy, nor changes its bytes."""
    found = _anchor_mapped(pid, name) if _seals_in_place() else None
    if found is None:
        return None
    span, inode = found
    wanted = f"/memfd:{_ANCHOR_NAME}{name} (deleted)"
    for path, target in _descriptors(pid) or ():
        if target == wanted:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if os.fstat(fd).st_ino == inode:
                        return Path(path), os.pread(fd, _ENTRY_MAX_BYTES, 0)
                finally:
                    os.close(fd)
    # Its descriptor closed (by a test: the run keeps it open for its life): read where the
    # run maps it, where this process may trace the run's, once the table names it.
    if _anchor_mapped(pid, name, named=True) != found:
        return None
    start, end = (int(part, 16) for part in span.split("-"))
    try:
        memory = os.open(f"{_PROC}/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # a process this one may not trace (Yama's ptrace_scope, another user)
    try:
        text = os.pread(memory, min(end - start, _ENTRY_MAX_BYTES), start).rstrip(b"\0")
    except (OSError, OverflowError):
        return None
    finally:
        os.close(memory)
    shown = _PROC / str(pid) / "map_files" / span
    _AS_READ[shown] = text
    return shown, text


def _anchor_mapped(pid: int, name: str, *, named: bool = False) -> tuple[str, int] | None:
    """The addresses and the inode of what process `pid` maps, read only and shared, at
    `_anchor_address` (`named`: only where its ``/proc/<pid>/maps`` names it the anchored
    copy of entry `name`); None where nothing such is mapped there.

    Asked of the kernel for that one address (``PROCMAP_QUERY``, Linux 6.11) where it can
    be: the whole table, a few hundred lines a run's process maps, cost a child 0.3 ms to
    read and search; 2 µs so."""
    try:
        fd = os.open(f"{_PROC}/{pid}/maps", os.O_RDONLY | os.O_CLOEXEC)
        try:
            answered, queried = (False, None) if named else _query_mapping(fd, name)
            if answered:
                return queried
            table = b"".join(iter(functools.partial(os.read, fd, 1 << 16), b""))
        finally:
            os.close(fd)
    except OSError:
        return None
    # The line that begins with the address: a test that mapped a file whose name holds
    # that text below it (its line comes first) had the anchored copy taken for missing.
    key = f"{_anchor_address(name):x}-".encode()
    at = 0 if table.startswith(key) else table.find(b"\n" + key) + 1
    if at == 0 and not table.startswith(key):
        return None
    end = table.find(b"\n", at)
    line = table[at : end if end >= 0 else len(table)].split()
    wanted = [f"/memfd:{_ANCHOR_NAME}{name}".encode(), b"(deleted)"]
    if len(line) != 7 or line[5:] != wanted or not line[1].startswith(b"r"):
        return None  # not the run's (it could not place its copy there)
    try:
        return line[0].decode(), int(line[4])
    except ValueError:
        return None


#: ``struct procmap_query`` (linux/fs.h): size, flags and address in; the mapping's start,
#: end, flags, page size, offset, inode, device, and the sizes and addresses of its name and
#: build id (none asked for) out.
_PROCMAP_QUERY: Final = "=9Q4I2Q"
#: ``PROCMAP_QUERY``: ``_IOWR('f', 17, struct procmap_query)``.
_PROCMAP_REQUEST: Final = (3 << 30) | (104 << 16) | (ord("f") << 8) | 17


def _query_mapping(maps: int, name: str) -> tuple[bool, tuple[str, int] | None]:
    """Whether the kernel answered (``PROCMAP_QUERY`` on `maps`, an open
    ``/proc/<pid>/maps``: not before Linux 6.11), and `_anchor_mapped`'s answer."""
    address = _anchor_address(name)
    asked = bytearray(struct.pack(_PROCMAP_QUERY, 104, 0, address, *[0] * 12))
    try:
        fcntl.ioctl(maps, _PROCMAP_REQUEST, asked)
    except OSError as error:
        # Nothing there (ENOENT); or no such request (ENOTTY, EINVAL before 6.11).
        return error.errno == errno.ENOENT, None
    start, end, flags = struct.unpack_from("=3Q", asked, 24)
    inode = struct.unpack_from("=Q", asked, 64)[0]
    readable, writable, shared = 1, 2, 8  # PROCMAP_QUERY_VMA_*
    if start != address or flags & (readable | writable | shared) != readable | shared:
        return True, None
    return True, (f"{start:x}-{end:x}", inode)


#: The end of the addresses `_anchor_address` gives.
_ANCHOR_END: Final = _ANCHOR_BASE + _ANCHOR_SLOTS * _ANCHOR_STEP
#: ``PROCMAP_QUERY``'s query flags: the first readable, shared, file-backed mapping at or
#: after the address asked for (``PROCMAP_QUERY_COVERING_OR_NEXT_VMA``, ``_FILE_BACKED_VMA``,
#: ``_VMA_READABLE``, ``_VMA_SHARED``).
_NEXT_SHARED_FILE: Final = 0x10 | 0x20 | 0x01 | 0x08
#: This process's own anchored copies (`_anchors_mapped`), by the pid that read them: a fork
#: reads its own (it may have mapped nothing since, but an exec'd program starts anew).
_MAPPED_HERE: dict[int, list[tuple[str, str, bytes]]] = {}


def _anything_in_anchor_range(maps: int) -> bool:
    """Whether a process maps a shared file, readable, at an address an anchored copy may
    have (one ``PROCMAP_QUERY`` on `maps`, its open ``/proc/<pid>/maps``); True where the
    kernel cannot say (the table is read)."""
    asked = bytearray(struct.pack(_PROCMAP_QUERY, 104, _NEXT_SHARED_FILE, _ANCHOR_BASE, *[0] * 12))
    try:
        fcntl.ioctl(maps, _PROCMAP_REQUEST, asked)
    except OSError as error:
        return error.errno != errno.ENOENT  # ENOENT: none at or after it
    return bool(struct.unpack_from("=Q", asked, 24)[0] < _ANCHOR_END)


def _anchors_mapped(pid: int | None = None) -> list[tuple[str, str, bytes]]:
    """The anchored copies of runs' entries that process `pid` (None: this one) maps
    (`_anchor`), each as its addresses, the entry's name and its bytes: a run's own
    process's, or a fork's of it, which inherits the mapping sealed in place (``exec`` drops
    every mapping). Any process can map a copy of its own making at such an address; one is
    taken only where it narrows what a process may open (`_forked_run`, `_fork_above`)."""
    if pid is None and os.getpid() in _MAPPED_HERE:
        return _MAPPED_HERE[os.getpid()]
    found: list[tuple[str, str, bytes]] = []
    if _seals_in_place():
        with contextlib.suppress(OSError):
            fd = os.open(f"{_PROC}/{pid or 'self'}/maps", os.O_RDONLY | os.O_CLOEXEC)
            try:
                table = (
                    b"".join(iter(functools.partial(os.read, fd, 1 << 16), b""))
                    if _anything_in_anchor_range(fd)
                    else b""
                )
            finally:
                os.close(fd)
            found = _anchors_in(table, pid)
    if pid is None:
        _MAPPED_HERE.clear()
        _MAPPED_HERE[os.getpid()] = found
    return found


def _anchors_in(table: bytes, pid: int | None) -> list[tuple[str, str, bytes]]:
    # Lines of a process's maps that map an anchored copy, read only and shared, at the
    # address its entry's name gives; read through the process's descriptor of it, else its
    # memory file (which answers EIO rather than fault where a copy was unmapped meanwhile).
    prefix = f"/memfd:{_ANCHOR_NAME}".encode()
    found: list[tuple[str, str, bytes]] = []
    for line in table.split(b"\n"):
        words = line.split()
        if len(words) != 7 or words[6] != b"(deleted)" or not words[5].startswith(prefix):
            continue
        name = words[5][len(prefix) :].decode(errors="replace")
        first, _, last = words[0].partition(b"-")
        try:
            start, end, inode = int(first, 16), int(last, 16), int(words[4])
        except ValueError:
            continue
        if start != _anchor_address(name) or words[1][:1] != b"r" or words[1][3:4] != b"s":
            continue
        size = min(end - start, _ENTRY_MAX_BYTES)
        text = _anchor_text(pid, name, inode, (start, end), size)
        if text is not None:
            found.append((words[0].decode(), name, text.rstrip(b"\0")))
    return found


def _anchor_text(
    pid: int | None, name: str, inode: int, span: tuple[int, int], size: int
) -> bytes | None:
    wanted = f"/memfd:{_ANCHOR_NAME}{name} (deleted)"
    for path, target in (_descriptors(pid) or ()) if pid is not None else ():
        if target == wanted:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if os.fstat(fd).st_ino == inode:
                        return os.pread(fd, size, 0)
                finally:
                    os.close(fd)
    start, end = span
    if pid is None:
        # This process's own: guard pages a test put on it (`_MADV_GUARD_REMOVE`) taken off,
        # else every read of it failed and the fork found no run (red team 63 on regress).
        _undo_advice(start, end - start)
    # The file the mapping maps, read without touching its pages (guard pages or not), where
    # this process may open it (CAP_SYS_ADMIN); else through the memory file below.
    with contextlib.suppress(OSError):
        fd = os.open(
            f"{_PROC}/{pid or 'self'}/map_files/{start:x}-{end:x}", os.O_RDONLY | os.O_CLOEXEC
        )
        try:
            if os.fstat(fd).st_ino == inode:
                return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    try:
        memory = os.open(f"{_PROC}/{pid or 'self'}/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(memory, size, start)
        finally:
            os.close(memory)
    except (OSError, OverflowError):
        return None  # a process this one may not trace (Yama's ptrace_scope, another user)


def _anchored_runs(pid: int | None = None) -> list[tuple[int, int, Run]]:
    """The runs whose anchored copies process `pid` (None: this one) maps, as the pid and
    start of the run's process and the run its copy describes (its `recognised_by` the
    path it is read by), latest started first."""
    mapped = _anchors_mapped(pid)
    if not mapped or (pid is None and _in_subinterpreter()):
        return []  # a subinterpreter of the run's process, a sys of its own: the walk names it
    runs: list[tuple[int, int, Run]] = []
    own = os.getpid() if pid is None else pid
    for span, name, text in mapped:
        try:
            data = json_loads(text)
            started = int(name.split("-")[1].removesuffix(".json"))
        except (ValueError, IndexError):
            continue
        if not isinstance(data, dict) or type(data.get("pid")) is not int:
            continue
        shown = f"{_PROC}/{own}/map_files/{span}"
        run = _read_entry(Path(shown), data["pid"], 1, data=data)
        if run is not None:
            runs.append((data["pid"], started, run._replace(recognised_by=shown)))
    return sorted(runs, key=lambda found: found[1], reverse=True)


def _remembered_by(own: int, pid: int, started: int, run: Run, who: str) -> Run:
    """`run`, as process `own` (`who` in messages) knows it by the anchored copy of the
    entry of run process `pid` started at `started` that `own` maps."""
    fork = "" if pid == own else f", a fork of pytest pid {pid}"
    how = (
        f"the run's own memory ({who}{fork}, which maps the sealed copy of the run's entry "
        f"{_entry_name(pid, started)} that the run anchored as it registered in {RUNS_DIR}, "
        f"at {run.recognised_by}: a test that removes the run's mark on sys or its entry "
        "does not take it out of the run)"
    )
    run = run._replace(recognised_by=how, itself=own == os.getpid())
    if own != os.getpid() or pid == own:
        return run  # an ancestor that carries on the run in its place; the run's process
    gone = _stat_fields(pid)
    if gone is None or gone[1] != started or _exited(pid):
        run = run._replace(pid=own, ended=pid)  # a fork that outlived the run
    return run


def _forked_run(walked: Run | None) -> Run | None:
    """The run whose anchored copy this process maps (`_anchored_runs`), the latest started
    where there are several (a fork that ran pytest in itself anchors its own beside its
    run's), as that run's process or a fork of it, where the walk found no run; the run the
    walk found (`walked`), where it is that one; None where this process maps none, or the
    walk found another run, whose rules stay (a copy mapped here by a test's own code takes
    nothing away from them).

    A fork of the run's process (``os.fork`` without ``exec``) keeps the run's mark on
    ``sys`` and runs the run's own code: a test can delete the mark, forget pytest's
    modules, and remove the entry the run handed on to the fork as it ended (`_end_entry`),
    and the walk then found nothing of the run once its process was gone. What the fork
    cannot lose is the mapping it inherited (red team 63 on the children of tests)."""
    for pid, started, run in _anchored_runs():
        if walked is None:
            return _remembered_by(os.getpid(), pid, started, run, "this process")
        if pid in (walked.pid, walked.ended):
            # The walk found that run by its entry (the run's, or the one it handed on to
            # this process): its rules as the entry says, which the walk checked against
            # the anchored copy; this process is the run's, not a pytest without the plugin.
            return walked._replace(itself=True)
    return None


def _fork_above(chain: list[tuple[int, int]]) -> tuple[int, Run] | None:
    """The nearest ancestor in `chain` that runs Python and maps the anchored copy of a
    run's entry (`_anchored_runs`), and that run: a fork of the run's process that carries
    on the run in its place, its parent gone (a test that daemonised its own process, as a
    daemon library's ``fork``, then ``os._exit`` in the parent, does), has no entry of its
    own. Its children found no run above them and, under a runner script, purged a stopped
    production root (red team 63 on the children of tests). Only where the walk found no
    run: a copy a test's code mapped in a process of its own narrows nothing else."""
    for ancestor, _ in chain[1:]:
        if not _python_program(ancestor):
            continue
        for pid, started, run in _anchored_runs(ancestor):
            # Not the run's own process: where its entry cannot be found or read, the
            # walk's own refusals say why (`_nothing_above`).
            if pid != ancestor:
                who = f"an ancestor process, pid {ancestor}"
                return ancestor, _remembered_by(ancestor, pid, started, run, who)
    return None


#: What a run's later entries may say otherwise than the one it anchored (`_within`).
_LATER: Final = frozenset({"argv", "argv_cut", "ended_at"})


def _within(text: bytes, first: bytes) -> bool:
    """Whether entry `text` keeps within what its run anchored (`first`): the same process
    and namespaces, a sandbox inside the first one's (a run nested in the process, or an
    xdist worker's own), every root the first protects, and nothing that says the run is
    another process's, still starting or over."""
    try:
        now, was = json_loads(text), json_loads(first)
    except ValueError:
        return False
    if not isinstance(now, dict) or not isinstance(was, dict):
        return False
    keys = ({*now} | {*was}) - _LATER - {"sandbox", "sandbox_identity", "protected", "scratch"}
    protected, kept = now.get("protected"), was.get("protected")
    if any(now.get(key, now) != was.get(key, was) for key in keys) or not (
        isinstance(protected, list) and isinstance(kept, list)
    ):
        return False
    held = {json.dumps(item, sort_keys=True) for item in protected}
    return _sandbox_within(now, was) and all(
        json.dumps(item, sort_keys=True) in held for item in kept
    )


def _sandbox_within(now: dict[str, Any], was: dict[str, Any]) -> bool:
    """Whether entry `now`'s sandbox is the anchored entry `was`'s (and made the same), lies
    inside it, or lies beside it, holding none of it (`_within`).

    Beside it: a run nested in the process (pytester's ``runpytest_inprocess``) with a
    ``--basetemp`` of its own outside the run's sandbox writes an entry whose sandbox is
    there, and keeps every root the run protects (`register`). Its children were given the
    anchored copy, its sandbox the outer run's, and refused their own run's data root as
    outside it (red team 62 on the anchored entry). A sandbox beside the anchored one widens
    nothing the roots the entry must keep leave open, as a pytest a test starts with a
    ``--basetemp`` elsewhere does not (`_within_enclosing`); one that holds the anchored
    one, by its words or where its links lead (a link inside it to ``/``), would, and is not
    taken."""
    try:
        sandbox, outer = (Path(path_from_text(str(data["sandbox"]))) for data in (now, was))
    except (KeyError, ValueError):
        return False
    if sandbox == outer:
        same = ("sandbox_identity", "scratch")
        return all(now.get(key) == was.get(key) for key in same)
    if not sandbox.is_absolute() or ".." in sandbox.parts:
        return False
    if outer.is_relative_to(sandbox):
        return False  # holds it
    # Inside it or beside it by its words, and where the links on the way lead: a link
    # inside the run's sandbox to ``/`` is inside it only by its words.
    try:
        real, real_outer = sandbox.resolve(), outer.resolve()
    except (OSError, RuntimeError):  # a loop of links (RuntimeError before Python 3.13)
        return False
    return real == real_outer or not real_outer.is_relative_to(real)


def _what_changed(text: bytes, copy: bytes) -> str:
    """What a test changed in a run's entry, which reads `text` where its run wrote `copy`."""
    try:
        now, was = json_loads(text), json_loads(copy)
    except ValueError:
        return "it is no longer JSON"
    if not isinstance(now, dict) or not isinstance(was, dict):
        return "it is no longer a run's entry"
    keys = sorted(key for key in {**now, **was} if now.get(key, now) != was.get(key, was))
    shown = [key for key in keys if re.fullmatch(r"[a-z_]{1,40}", key)]
    if len(shown) < len(keys):
        shown.append("others")
    return f"its field{'s' if len(shown) > 1 else ''} {', '.join(shown)} changed"


def _start_uncertain() -> bool:
    """Whether ``/proc`` shows this process each start time as one of two (`_start_ticks`)."""
    offset = _boot_offset()
    return offset is not None and offset % _tick() != 0


def _entry_read(
    pid: int, started: int, seen: _Seen, parent: int | None = None
) -> tuple[Path | None, dict[str, Any] | None]:
    """Process `pid`'s entry (`_entry_of`) and what it says (None where it cannot be read);
    neither where it is another process's (`_of_another`). Where another PID namespace's
    process holds its name, or has held it, its own is the one named with its namespace's
    number (`_name_to_write`)."""
    entry = _entry_of(pid, started, seen, parent)
    data = _entry_data(entry) if entry is not None else None
    if data is not None and _of_another(pid, data):
        entry = data = None
    if entry is None and _may_be_named_beside(pid, started, seen, parent):
        namespace = _own_pid_namespace(pid)
        if namespace is not None:
            entry = _entry_of(pid, started, seen, parent, namespace)
            data = _entry_data(entry) if entry is not None else None
            if data is not None and _of_another(pid, data):
                return None, None
    return entry, data


def _entry_listed(pid: int, directory: Path, uid: int, name: str, seen: _Seen) -> Path | None:
    """Entry `name` of process `pid` in user `uid`'s registry `directory`, where it is found
    there; where it may be there unseen, that is noted in ``seen.hidden``."""
    if name in _registered(directory, uid, seen):
        return directory / name
    if directory in seen.unlisted:
        # A registry this process may not list (a test denied its user it, red team 40), or
        # whose listing failed: the entry by name, and where even that fails, a run may be
        # there unseen (`_walk_tree` refuses then).
        found = _hidden_entry(directory, name)
        if isinstance(found, Path):
            return found
        if found is not None:
            seen.hidden.setdefault(pid, (directory, found))
    elif directory in seen.failed and pid != _proc_self():
        # Its nearest ancestor, not this process: any may be the run.
        seen.hidden.setdefault(pid, (directory, seen.failed[directory]))
    elif directory in seen.distrusted and (directory / name).exists():
        # A registry a test made writable by others (`chmod 777`), whose entries count for
        # nothing: the run's children, given production's settings alone under a runner
        # script, purged a stopped root before the check after the test put it right (red
        # team 46). A run may be above: refused as hidden.
        seen.hidden.setdefault(pid, (directory, seen.distrusted[directory]))
    return None


def _may_be_named_beside(pid: int, started: int, seen: _Seen, parent: int | None) -> bool:
    """Whether process `pid`'s entry may be named with its PID namespace's number
    (`_name_to_write`) where `_entry_of` looks: a registry listed in this walk holds such a
    name, or the entry may be found otherwise than through a listing, which this walk
    cannot read for the name.

    A run whose name another namespace's run held, that a test then hid the registry from
    (a tmpfs mounted on /tmp in the run's own mount namespace, red team 47; the registry
    moved aside for an empty one), was found by its children through the descriptors it
    keeps open, at its plain name alone: they found the other's entry there, or none, and
    were outside any run (red team 60 on regress). Only where no such route is open is the
    listing the answer: the walk of a process outside any run reads no more than before
    for its shells and its init."""
    if seen.named_beside(pid, started) or (
        _start_uncertain() and seen.named_beside(pid, started + 1)
    ):
        return True
    if seen.unlisted or seen.distrusted or seen.failed:
        return True  # entries by name, and refusals, not in a listing (`_entry_listed`)
    own = seen.view("self")
    if seen.view(pid) != own or (parent is not None and seen.view(parent) != own):
        return True  # its /tmp, or its parent's, is not ours (`_entry_in_its_own_tmp`)
    return pid in seen.holding  # descriptors it keeps open (`_entry_held_open`)


def _python_program(pid: int) -> bool:
    """Whether process `pid` runs Python, by its program (`_entry_held_open`); one whose
    program this process may not read is noted in `_EXE_DENIED`."""
    try:
        # Its program, not its command line: a test can write a title over that
        # (setproctitle), as code under test that names its process does.
        program = _word_name(os.readlink(f"{_PROC}/{pid}/exe"))  # noqa: PTH115 - str in, out
    except PermissionError:
        _EXE_DENIED.add(pid)
        return False
    except (FileNotFoundError, ProcessLookupError):
        return False  # gone, or a process without a program of its own (a kernel thread)
    except OSError as error:
        _PROC_FAILED.setdefault(pid, ("exe", error))  # `_proc_read_failed`
        return False
    # A program replaced on disk while it runs (Python upgraded in place by the system's
    # packages during a long run) is shown with this suffix: its process was passed over,
    # and with the registry removed meanwhile, a child purged a stopped root (red team 48).
    program = program.removesuffix(" (deleted)")
    # A Python run through the loader shows the loader (`_program_words`).
    return bool(_PYTHON.fullmatch(program) or _LOADER.fullmatch(program))


#: The ancestors whose ``/proc/<pid>/exe`` or ``fd`` one walk could not read, where the read
#: was neither denied nor found gone (`_proc_read_failed`): which, and how it failed.
#: Emptied as each walk begins.
_PROC_FAILED: dict[int | str, tuple[str, OSError]] = {}


def _proc_read_failed(pid: int) -> str | None:
    """Why this process could not read ``/proc/<pid>/exe``, ``fd`` or ``status`` of ancestor
    `pid`, one of its own user (or its own ``status``, where that ancestor's program was
    closed to it), where the read failed otherwise than denied or gone (EIO,
    ENOSYS, EINTR: a tracer's injected fault, a seccomp filter's errno): it may be a run
    whose entry a test removed, kept open where this process could not look; else None.

    A test that removed its run's entry and started a child under a tracer that failed its
    read of the run's ``/proc/<pid>/exe``, or of its ``fd``, alone (``strace -P
    /proc/<pid>/exe -e inject=readlinkat:error=EIO``) had a child that took the run for a
    process that is not Python, or that keeps nothing open: it found no run, and given
    production's settings alone it purged a stopped production root (red team 70 on the
    guard). Only a process named as Python or pytest (`_named_as_python`) counts where its
    program could not be read, as for a denial (`_capabilities_withheld`)."""
    # Its own `status` too, where its program was closed to this process: a child whose
    # read of either failed could not tell why (`_capabilities_withheld`).
    key: int | str = pid if pid in _PROC_FAILED or pid not in _EXE_DENIED else "self"
    if key not in _PROC_FAILED:
        return None
    which, error = _PROC_FAILED[key]
    if which != "fd" and not _named_as_python(pid):
        return None  # its program unread: only a Python's counts, as for a denial
    code = errno.errorcode.get(error.errno or 0, str(error.errno))
    return f"its read of {_PROC}/{key}/{which} failed ({code}: {error.strerror or error})"


#: The processes whose program one walk was denied (`_python_program`): a process of this
#: user may not read ``/proc/<pid>/exe`` (nor ``fd``) of one that holds capabilities it
#: lacks (`_capabilities_withheld`). Emptied as each walk begins.
_EXE_DENIED: set[int] = set()


def _capabilities(pid: int | str, *which: bytes) -> tuple[int | None, ...]:
    """Process `pid`'s capabilities of each set `which` (``CapPrm`` where none is named;
    ``CapEff``) from one read of ``/proc/<pid>/status``, which every process may read: None
    for a set that cannot be read."""
    which = which or (b"CapPrm",)
    fields = _status(pid)
    found: dict[bytes, int] = {}
    for name in which:
        with contextlib.suppress(KeyError, ValueError):
            found[name] = int(fields[name].strip(), 16)
    return tuple(found.get(name) for name in which)


def _status(pid: int | str) -> dict[bytes, bytes]:
    """The fields of ``/proc/<pid>/status``, which every process may read, by name (their
    values as written); none where it cannot be read (`_capabilities`, `_ids`)."""
    try:
        raw = _proc_bytes(pid, "status")
    except (FileNotFoundError, ProcessLookupError):
        return {}
    except OSError as error:
        _PROC_FAILED.setdefault(pid, ("status", error))  # `_proc_read_failed`
        return {}
    return {name: value for name, _, value in (line.partition(b":") for line in raw.splitlines())}


def _other_user_namespace(pid: int) -> bool:
    """Whether process `pid` lives in another user namespace than this process's, by their
    maps of user ids (``/proc/<pid>/uid_map``, which every process may read where its
    ``ns`` links are closed to it): each shows ids as the reader's namespace sees them, so
    the maps of two processes of one namespace read the same. Linux counts a process's
    capabilities in its own user namespace alone: a child that ``unshare --user`` made holds
    all of its own, none in its run's (`_capabilities_withheld`)."""
    try:
        return _proc_bytes(pid, "uid_map") != _proc_bytes("self", "uid_map")
    except OSError:
        return False


#: Linux's number of ``CAP_SYS_PTRACE``, the capability that reads any process's ``fd``.
_CAP_SYS_PTRACE: Final = 19


def _capabilities_withheld(pid: int) -> str | None:
    """Why this process may not read the descriptors of process `pid`, one of its own user
    (`_entry_named`), where `pid` holds capabilities that it lacks in effect, lives in
    another user namespace (`_nested_namespace`), runs with other ids (`_ids_withheld`), or
    runs pytest and is not dumpable to it (`_undumpable`); else None.

    Linux lets a process read another's ``/proc/<pid>/exe`` and the links of its ``fd``
    only where its effective capabilities hold all of the other's permitted ones, in one
    user namespace (or it has ``CAP_SYS_PTRACE`` in the other's), whatever their user. A
    test of a run as root that removed its run's entry (or hid the registry: a tmpfs
    mounted over it) and started a child with every capability dropped (``setpriv
    --bounding-set=-all``, ``capsh --drop``) had a child that could not read the
    descriptors the run keeps of its entry (`_entry_held_open`): it found no run, and given
    production's settings alone it purged a stopped production root (red team 69 on the
    guard). Only a process named as Python or pytest (`_named_as_python`)
    counts: a root shell's command run with fewer capabilities (``capsh --drop``), or a
    service that a unit gives fewer than systemd's (``CapabilityBoundingSet=``), would be
    refused every command; a run whose name and command line a test both rewrote is the
    limit the docs list."""
    if pid not in _EXE_DENIED or not _named_as_python(pid):
        return None
    if _other_user_namespace(pid):
        # Its capabilities and CAP_SYS_PTRACE count in its own namespace, this process's in
        # another: a child that `unshare --user --map-root-user` made, holding every
        # capability in its namespace, found no run and purged (red team 69 on regress).
        return (
            f"{_OTHER_NAMESPACE} than this process "
            "(`unshare --user`, a container's), where this process's capabilities count for "
            f"nothing, so /proc/{pid}/exe and the descriptors it keeps open, where a run keeps "
            "its entry, are closed to this process"
        )
    # Linux holds the other's permitted set against this process's effective one (its
    # file-system credentials, PTRACE_MODE_FSCREDS): a child that kept every capability
    # permitted but none in effect (`capset`) was let read nothing, was not refused, and
    # purged (red team 69 on regress).
    (theirs,), (ours, permitted) = _capabilities(pid), _capabilities("self", b"CapEff", b"CapPrm")
    if theirs is None or ours is None or not theirs & ~ours:
        if (why := _ids_withheld(pid)) is not None:
            return why
        if _shown_not_dumpable(pid):
            # That explains the denial, not a user namespace: a Python daemon that dropped
            # root's ids itself (`celery --uid`) in a rootless container was refused every app
            # command it started, as in "another user namespace" (red team 69 on regress,
            # the third round). Only a pytest's counts (`_undumpable`).
            return _undumpable(pid, shown=True)
        return _nested_namespace(pid) or _undumpable(pid, shown=False)
    lacked = theirs & ~ours
    count = bin(lacked).count("1")
    which = ", CAP_SYS_PTRACE among them" if lacked >> _CAP_SYS_PTRACE & 1 else ""
    many = "capability" if count == 1 else "capabilities"
    held = permitted is not None and not lacked & ~permitted
    lacks = "holds permitted but not in effect" if held else "lacks"
    return (
        f"{_CAPS_WITHHELD} (it holds {count} {many} that this process {lacks}{which}), "
        f"so /proc/{pid}/exe and the descriptors it keeps open, where a run keeps its entry, "
        "are closed to this process"
    )


def _ids(pid: int | str) -> dict[bytes, list[int]]:
    """Process `pid`'s user and group ids (``Uid``, ``Gid`` of ``/proc/<pid>/status``:
    real, effective, saved and file-system), or none where they cannot be read."""
    fields = _status(pid)
    found: dict[bytes, list[int]] = {}
    for name in (b"Uid", b"Gid"):
        with contextlib.suppress(KeyError, ValueError):
            found[name] = [int(word) for word in fields[name].split()]
    return found


def _ids_withheld(pid: int) -> str | None:
    """`_capabilities_withheld`'s reason where process `pid` holds no capability this
    process lacks, but its ids are not all this process's file-system ones: Linux lets a
    process without ``CAP_SYS_PTRACE`` read another's ``exe`` and ``fd`` only where its
    file-system user and group are the other's real, effective and saved ones. A child
    of a run of a user other than root, started through a setgid program (a copy a user
    makes of one of its groups, ``sg``), was denied the descriptors the run keeps of its
    entry, with the same capabilities (none), and was taken for outside any run once a
    test removed the entry (red team 69 on regress); else None."""
    theirs, ours = _ids(pid), _ids("self")
    if len(theirs) < 2 or len(ours) < 2 or min(map(len, (*theirs.values(), *ours.values()))) < 4:
        return None
    differ = [
        f"{kind} {'/'.join(map(str, theirs[key][:3]))} where this process's is {ours[key][3]}"
        for key, kind in ((b"Uid", "user ids"), (b"Gid", "group ids"))
        if set(theirs[key][:3]) != {ours[key][3]}
    ]
    if not differ:
        return None
    return (
        f"{_IDS_DIFFER} (it runs with {' and '.join(differ)}: a setgid program, `sg` or "
        f"`newgrp` between them), so /proc/{pid}/exe and the descriptors it keeps open, where "
        "a run keeps its entry, are closed to this process"
    )


#: The number Linux gives its first user namespace (``PROC_USER_INIT_INO``), which every
#: other user namespace descends from.
_FIRST_USER_NAMESPACE: Final = "user:[4026531837]"


def _undumpable(pid: int, *, shown: bool) -> str | None:
    """`_capabilities_withheld`'s reason where process `pid` runs pytest by its command line
    (`_looks_like_pytest`), and is `shown` not dumpable (`_shown_not_dumpable`) or nothing
    else explains the denial: Linux also closes ``/proc/<pid>/exe`` and ``fd`` of a process
    that is not dumpable to one without ``CAP_SYS_PTRACE`` (``prctl(PR_SET_DUMPABLE, 0)``;
    ids changed without an exec), and a security module (AppArmor, SELinux) may close them.
    A test of a run that made its own process not dumpable after it removed the run's entry
    had a child of the run's user, or of root without ``CAP_SYS_PTRACE`` (a container's
    default capabilities), that found no run and loaded any profile (red team 69 on regress,
    the third round); else None.

    Only a pytest's: a Python daemon that drops root's ids itself (``celery --uid``,
    gunicorn's workers under ``--user``) is not dumpable either, and the app commands it
    starts are no test's."""
    if not _looks_like_pytest(_cmdline(pid), pid):
        return None
    why = (
        f"its /proc/{pid}/status is root's while it runs as user {os.getuid()}, as Linux shows "
        "a process that is not dumpable"
        if shown
        else "nothing else this process may read explains why it is closed to it"
    )
    return (
        f"{_UNDUMPABLE} ({why}: `prctl(PR_SET_DUMPABLE, 0)`, ids changed without an exec, "
        f"or a security module such as AppArmor or SELinux), so /proc/{pid}/exe and the "
        "descriptors it keeps open, where a run keeps its entry, are closed to this process"
    )


def _shown_not_dumpable(pid: int) -> bool:
    """Whether process `pid`, of this process's user (not root), is shown not dumpable:
    Linux makes the files of such a process's ``/proc/<pid>`` root's (its directory stays
    its user's), and ``status`` still shows its ids."""
    if os.getuid() == 0:
        return False
    try:
        owner = os.stat(f"{_PROC}/{pid}/status").st_uid  # noqa: PTH116 - str in
    except OSError:
        return False
    return owner == 0 and set(_ids(pid).get(b"Uid", [0])) == {os.getuid()}


def _nested_namespace(pid: int) -> str | None:
    """`_capabilities_withheld`'s last reason: this process lives in a user namespace other
    than Linux's first, where nothing else explains the denial. A map of every id to itself
    (``0 0 4294967295``, written by root for a child's namespace) reads the same as the
    first namespace's seen from it, so `_other_user_namespace` did not tell them apart, and
    such a child, with every capability in its own namespace, purged (red team 69 on
    regress); else None."""
    try:
        own = os.readlink(f"{_PROC}/self/ns/user")  # noqa: PTH115 - str in, out
    except OSError:
        return None
    if own == _FIRST_USER_NAMESPACE:
        return None
    return (
        f"{_OTHER_NAMESPACE} than this process, as far as it can tell (this process's, "
        f"{own}, is not Linux's first, and nothing else it may read explains why "
        f"/proc/{pid}/exe is closed to it), where this process's capabilities count for "
        f"nothing, so /proc/{pid}/exe and the descriptors it keeps open, where a run keeps "
        "its entry, are closed to this process"
    )


def _named_as_python(pid: int) -> bool:
    """Whether process `pid`'s name (``/proc/<pid>/comm``) or the first word of its command
    line, which every process may read where its program is closed to it, is a Python
    interpreter's, pytest's or the dynamic loader's (`_capabilities_withheld`): the first
    word is the interpreter's for a script run by its ``#!`` line (pytest's, coverage's, a
    runner's), whose name is the script's."""
    try:
        name = _proc_bytes(pid, "comm").rstrip(b"\n").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        name = ""  # gone, or a security policy's denial, which names nothing
    except OSError:
        # Every process may read it: a read that failed otherwise (a tracer's injected
        # EIO) leaves its name unknown, which counts, as a failed read does elsewhere.
        return True
    try:
        raw = _proc_bytes(pid, "cmdline").rstrip(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        raw = b""
    except OSError:
        # As for `comm`: a run started by its `#!` line (`./run_tests.py`) is named as the
        # script, its interpreter shown only here; a child under a tracer that failed this
        # read and its read of the run's `exe` (`-P /proc/<pid>/cmdline -e
        # inject=openat:error=EIO`) took the run for no Python's, found no run, and purged
        # a stopped production root (red team 70 on regress, the guard).
        return True
    first = _word_name(raw.partition(b"\0")[0].decode(errors="replace")) if raw else ""
    patterns = (_PYTHON, _PYTEST_COMMAND, _LOADER)
    return any(pattern.fullmatch(word) for pattern in patterns for word in (name, first) if word)


#: How `_capabilities_withheld` begins its reasons, which `_hidden_run` tells apart.
_CAPS_WITHHELD: Final = "its capabilities are not all this process's"

#: How `_search_denied` marks an ancestor named as Python whose command line names no
#: pytest, which `context` then refuses under `_MAY_RUN_TESTS`, not "under pytest".
_UNNAMED_PYTEST: Final = "; Python, its command line naming no pytest"

#: The runner a refusal is made under where `_UNNAMED_PYTEST` is all it knows of one.
_MAY_RUN_TESTS: Final = "a Python process that may run tests"

#: How `_ids_withheld` begins its reason (`_capabilities_withheld`'s, told apart).
_IDS_DIFFER: Final = "its user or group ids are not this process's"

#: How `_capabilities_withheld` begins its reason where the other lives in another user
#: namespace.
_OTHER_NAMESPACE: Final = "it lives in another user namespace"

#: How `_undumpable` begins its reason (`_capabilities_withheld`'s, told apart).
_UNDUMPABLE: Final = "it is not dumpable to this process, as far as it can tell"

#: `_capabilities_withheld`'s reasons, by how each begins (`_hidden_run`, `_search_denied`).
_PTRACE_DENIED: Final = (_CAPS_WITHHELD, _OTHER_NAMESPACE, _IDS_DIFFER, _UNDUMPABLE)


def _entry_named(pid: int, name: str, seen: _Seen, parent: int | None) -> Path | None:
    """Registry entry `name` of process `pid`, where it is (`_entry_of`)."""
    try:
        owner = os.stat(f"{_PROC}/{pid}").st_uid  # noqa: PTH116 - str in
    except OSError:
        # Gone since the chain was read (a run that has just ended and been reaped): its
        # entry, named by its start time too, is still there and still names it.
        owner = os.getuid()
    for uid in dict.fromkeys((owner, os.getuid())):
        for directory in _registries(uid):
            if (found := _entry_listed(pid, directory, uid, name, seen)) is not None:
                return found
        entry = _entry_in_its_own_tmp(pid, uid, name, seen)
        if entry is None and parent is not None:
            entry = _entry_left_behind(pid, parent, uid, name, seen)
        if entry is None:
            entry = _entry_held_open(pid, uid, name, seen)
        if entry is not None:
            return entry
    # Its own user by either id: a child of a run as root given another real user and root's
    # effective one (`setpriv --ruid`, `os.setresuid`, a setuid-root program), without the
    # run's capabilities, acts on root's files as root, but was judged by its real user
    # alone, found no run, and purged a stopped production root (red team 70 on the guard).
    own = owner in (os.getuid(), os.geteuid())
    if own and (withheld := _capabilities_withheld(pid)) is not None:
        # It may be a run whose entry a test removed or hid, kept open where this process
        # may not look: refused, naming it (`_hidden_run`), if no run is found above.
        seen.hidden.setdefault(pid, (Path(f"{_PROC}/{pid}/fd"), withheld))
    elif own and (failed := _proc_read_failed(pid)) is not None:
        # As for a denial: refused, naming it and the failed read, if no run is found above.
        seen.hidden.setdefault(pid, (Path(f"{_PROC}/{pid}"), failed))
    # And root's: a run as root hands its entry on, in its own registry, to a daemon a test
    # started as another user (`sudo -u`, `setpriv`), which looked under its own user alone
    # and, once the run had ended, purged the production root that user owns (red team 46).
    # Only root writes there; what this process may not read there says nothing more.
    if 0 not in (owner, os.getuid()) and name in _registered(_runs_dir(0), 0, seen):
        return _runs_dir(0) / name
    return None


def _leaders() -> Iterator[tuple[str, int]]:
    """This process's session and process group leaders, as ``/proc`` numbers them."""
    own = _proc_self()
    try:
        raw = (_PROC / str(own)).joinpath("stat").read_bytes() if own is not None else b""
        rest = raw[raw.rfind(b")") + 2 :].split()
        group, session = int(rest[2]), int(rest[3])
    except (OSError, IndexError, ValueError):
        return
    yield "session", session
    if group != session:
        yield "process group", group


def _led_by_a_run(walked: set[int], seen: _Seen) -> Run | None:
    """The run that leads this process's session or process group, where no ancestor is a
    run: ``clone(CLONE_PARENT)`` makes a process the child of its caller's parent, so one
    a test starts that way is outside the run's tree, but keeps the run's session and
    group. Only a run that leads them counts (a terminal's job, ``setsid pytest``): a
    process joins no other session, and only its session's groups, so their members
    descend from their leader but for such a clone (and, for a group, the other commands
    of a pipeline, ``pytest | tee``)."""
    for leads, pid in _leaders():
        if pid <= 0 or pid in walked:
            continue
        fields = _stat_fields(pid)
        entry, data = _entry_read(pid, fields[1], seen) if fields is not None else (None, None)
        if entry is not None and (run := _read_entry(entry, pid, 1, leads, data)) is not None:
            return run
    return None


#: One walk at a time in a process (`_walk_tree`): a walk's notes (`_PROC_FAILED`,
#: `_EXE_DENIED`, `_CHANGED`, `_AS_READ`, `_LISTED`) are the module's, emptied as each begins.
#: `_thread`'s, not `threading`'s: a command's start does not import `threading`.
_WALKING: list[Any] = [_thread.RLock()]
#: How many walks this process's walking thread is in: more than one where a walk began in
#: the middle of another (a signal handler's, which Python runs in the main thread between
#: two steps of whatever it was doing; a ``__del__`` the collector ran there).
_WALKS: list[int] = [0]


def _walking_anew() -> None:
    """In a fork's child: a fork made while another thread walked has that thread's lock
    held, by no thread of its own, and its count of walks under way.

    Not where the forking thread was walking itself (a signal handler that forked in the
    middle of its thread's walk, the child carrying on): the child goes on with that walk,
    which gives the lock back and counts itself out as it ends. Reset, its end took the count
    to -1, and every later walk there took itself for a nested one, while a handler's walk
    in the middle of the walk carried on took that one for none and emptied its notes
    (red team 70 on regress, rt-regress70j)."""
    if not _WALKING[0]._is_owned():
        _WALKING[0] = _thread.RLock()
        _WALKS[0] = 0


os.register_at_fork(after_in_child=_walking_anew)


def _notes() -> tuple[dict[Any, Any] | set[int], ...]:
    """The module's notes of a walk (`_walk_tree`), each container itself, in one order."""
    return _MISSHOWN, _EXE_DENIED, _PROC_FAILED, _CHANGED, _AS_READ, _READ_SHORT


def _walk_tree() -> tuple[Run | None, str | None, str]:
    """The nearest registered run among this process and its ancestors (else the run that
    leads its session or process group, `_led_by_a_run`), whether a pytest without the
    plugin sits between (its rules then apply as well), and what resolves a refusal where
    that is all of it (an ancestor's entry this process may not read, `_hidden_run`).

    One at a time: a walk begun in another thread (a server's workers check each storage or
    connection they open, `check_root`, `check_scratch`) emptied the notes of one under way,
    and a walk that a failed read of its run's ``/proc/<pid>/exe`` refused alone found no run
    (red team 70 on regress, the guard)."""
    with _WALKING[0]:
        # A walk begun in the middle of another in its own thread (the lock is re-entrant,
        # so a signal handler's walk waits for no walk of its own thread to end, which never
        # would) keeps that walk's notes and gives them back: a handler's walk emptied them,
        # and a walk that a failed read of its run's `exe` refused alone, its handler's walk
        # not failing that read, found no run (red team 70 on regress, the guard again).
        kept = [note.copy() for note in _notes()] if _WALKS[0] else None
        depth = len(_LISTED)
        _WALKS[0] += 1
        try:
            _LISTED.append({})
            return _walk_tree_listed()
        finally:
            # Bytecode alone, no call, before anything that calls: Python runs a signal
            # handler as a call returns, and one that raised (Ctrl-C's KeyboardInterrupt) as
            # `_LISTED.pop()` returned skipped the rest, so the count stayed at 1 and every
            # later walk took itself for a nested one (red team 70 on regress, rt-regress70j).
            _WALKS[0] -= 1
            del _LISTED[depth:]
            try:
                _AS_READ.clear()
                _READ_SHORT.clear()
            finally:
                for note, was in zip(_notes(), kept or (), strict=False):
                    note.clear()
                    note.update(was)  # type: ignore[arg-type]


def _walk_tree_listed() -> tuple[Run | None, str | None, str]:
    """`_walk_tree`, each process's descriptors listed once (`_descriptors`)."""
    _MISSHOWN.clear()
    _EXE_DENIED.clear()
    _PROC_FAILED.clear()
    _CHANGED.clear()
    _AS_READ.clear()
    _READ_SHORT.clear()
    if (hidden := _unwalkable()) is not None:
        return None, *hidden
    seen = _Seen()
    bare = None
    bare_argv: list[str] = []
    starting = registered_below = False
    walked: set[int] = set()
    chain = list(_ancestry())
    ancestry = enumerate(chain)
    for depth, (pid, started) in ancestry:
        walked.add(pid)
        parent = chain[depth + 1][0] if depth + 1 < len(chain) else None
        entry, data = _entry_read(pid, started, seen, parent)
        if entry is not None and data is None and (why := _unreadable(entry)) is not None:
            seen.hidden.setdefault(pid, (entry, why))
        if entry is not None and data is not None and data.get("starting"):
            # A pytest whose plugin has not made its sandbox yet (`announce_start`): its
            # rules are a pytest's without the plugin, and a run above it applies too.
            if bare is None:
                who = "this process" if depth == 0 else "an ancestor process"
                argv = _cmdline(pid)
                shown = _shown(argv) + _retitled(argv, data)
                bare = f"{_STARTING} ({who}, pytest pid {pid}: {shown}){_NO_SANDBOX_YET}"
                if data.get("without_plugin"):  # and never will (`note_without_plugin`)
                    bare = f"{who} (pid {pid}: {shown}) runs pytest without the app's plugin"
                bare_argv, starting = argv, not data.get("without_plugin")
            registered_below = True
            continue
        if entry is not None:
            run = _read_entry(entry, pid, depth, data=data)
            if run is not None:
                # A fork of the run's own process (a test's os.fork, a daemon it double-forked)
                # has the run's command line: it is the run, not a pytest without the plugin.
                if bare is not None and not starting and bare_argv == _cmdline(pid):
                    bare = None
                # Not where a pytest of its own registered below it (`note_without_plugin`).
                run = run._replace(itself=run.itself and bare is None and not registered_below)
                return _within_enclosing(run, entry, ancestry, seen), bare, ""
        # Not where an entry at or below this ancestor may not be read (`seen.hidden`): that
        # one may be the run's, with its plugin. A child confined by a Landlock ruleset that
        # leaves the registry out, of a run of `python -m pytest`, was refused as under "a
        # pytest without the app's plugin" and told to run without `-p no:app`: its plugin
        # was on (red team 57 on the children of tests). `_hidden_run` says why it was.
        if (
            depth
            and bare is None
            and not seen.hidden
            and _looks_like_pytest(argv := _cmdline(pid), pid)
        ):
            bare = (
                f"an ancestor process (pid {pid}: {_shown(argv)}) runs pytest without the "
                "app's plugin"
            )
            bare_argv = argv
        elif depth and bare is None and not seen.hidden and _looks_like_unittest(argv, pid):
            bare = f"{_UNITTEST_ANCESTOR} (pid {pid}: {_shown(argv)})"
            bare_argv = argv
    return _no_entry_above(walked, seen, chain, (bare, bare_argv, starting))


def _no_entry_above(
    walked: set[int],
    seen: _Seen,
    chain: list[tuple[int, int]],
    found: tuple[str | None, list[str], bool],
) -> tuple[Run | None, str | None, str]:
    """`_walk_tree`'s answer where no process of `chain` has an entry that names a run:
    the run that leads its session or group, else one a forked ancestor carries on
    (`_fork_above`), else none; with what the walk `found` of a pytest without the plugin
    (its words, its command line, and whether it is still starting)."""
    bare, bare_argv, starting = found
    led = _led_by_a_run(walked, seen)
    if led is None and (above := _fork_above(chain)) is not None:
        # The run's process carrying on in a fork, not a pytest without the plugin.
        return above[1], (None if bare_argv == _cmdline(above[0]) and not starting else bare), ""
    if led is None and bare is None and (unseen := _nothing_above(seen, chain)) is not None:
        return None, *unseen
    return led, bare, ""


def _nothing_above(seen: _Seen, chain: list[tuple[int, int]]) -> tuple[str, str] | None:
    """A refusal's words where the walk found no run, but one may be above unseen
    (`_unseen_run`), or ``/proc`` showed the walk another process's entry (`_misshown`,
    `_proc_entry_mounted`); else None."""
    return _unseen_run(seen, chain) or _misshown() or _cut_short(chain) or _proc_entry_mounted()


def _cut_short(chain: list[tuple[int, int]]) -> tuple[str, str] | None:
    """A refusal's words where the walk stopped at an ancestor it could not read whose child
    still names it its parent, after `_REREADS` reads (an ancestor that exits is gone from
    its child's ``stat`` before its own entry goes), else None.

    A test's child run under a fault injector (``strace -f -P /proc/<pid>/stat -e
    inject=openat:error=ENOENT``, or a sweep that fails each ``openat`` in turn, as the
    project's own fault tests do) whose read of an ancestor's ``stat`` failed took that
    ancestor for one that had exited: the walk stopped below the run, and given production's
    settings alone it purged a stopped production root (red team 55).
    """
    if not chain:
        return None
    child = chain[-1][0]
    fields = _stat_fields(child)
    walked = {pid for pid, _ in chain}
    if fields is None or fields[0] <= 0 or fields[0] in walked:
        return None  # the end of the tree, a cycle, or the last one read is gone itself
    parent = fields[0]
    if _may_not_read(parent):
        # Denied, not failed: `_walk_denied`'s to judge (another user's process under
        # `hidepid=noaccess` or `ProtectProc=noaccess`, a service's parent or init, is
        # denied by design). Refused here, every command of a service so confined was
        # refused "under pytest", with no pytest anywhere.
        return None
    if not (_PROC / str(parent)).exists() and (hides := proc_hides_processes()) is not None:
        # `hidepid=invisible`: another user's process (a service's parent, init) is not
        # shown at all, as before; refused, a server under systemd would never start. But
        # not where a run of its pid is registered (`_hidden_parent`).
        return _hidden_parent(parent, hides)
    said = (
        f"while /proc/{parent}/stat cannot be read though process {child} still names "
        f"{parent} its parent (its read failed: a tracer that injects faults, such as "
        "`strace --inject`, or a security policy), so this process cannot tell whether a "
        "test run is above it"
    )
    fix = (
        f"Let the process read /proc/{parent}/stat (inject faults only into the calls the "
        "test means, e.g. `strace -P <the file>`), or start it outside the test run"
    )
    return said, fix


#: How `_hidden_parent` begins its refusal, which `context` tells apart.
_HIDDEN_PARENT: Final = "while /proc does not show this process's "


def _hidden_parent(parent: int, hides: str) -> tuple[str, str] | None:
    """A refusal's words where ``/proc`` does not show this process's `parent` at all
    (`hides`, a ``hidepid=`` option) and a registry of this process's user (real or
    effective) or root's holds an entry for a run of that pid, or of its session's or
    process group's leader where ``/proc`` hides that too, that started no later than this
    process did: it may be this process's run, else None.

    ``hidepid=invisible`` hides a process of this process's own user too where this one
    may not read it (`_capabilities_withheld`): a test of a run as root that started a child
    in a mount namespace of its own, with ``/proc`` mounted there ``hidepid=invisible,gid=``
    a group the child is not in, and every capability dropped (``setpriv
    --bounding-set=-all``), had a child that saw no ancestor at all: with the run's entry in
    place, it found no run, and given production's settings alone it purged a stopped
    production root (red team 70 on the guard). Only the pid is known (from this process's
    own ``stat``), not the start time an entry is named by; an entry of a run that has
    ended is removed as the next run starts (`_forget_dead_runs`)."""
    own, namespace = own_start(), _pid_namespace()
    # Its session's and process group's leaders too, where /proc hides them: a run
    # started from a terminal leads its group, and a shell between the run and this
    # process, hidden as well, names no run (`_led_by_a_run`).
    leaders = {pid: leads for leads, pid in _leaders() if pid > 0}
    hidden = {pid: leads for pid, leads in leaders.items() if not (_PROC / str(pid)).exists()}
    candidates = {**{pid: f"{leads} leader" for pid, leads in hidden.items()}, parent: "parent"}
    # A pidfd numbers pids as this process's PID namespace does: not where /proc numbers an
    # enclosing one's (`_proc_self`).
    above, asked = (
        _ancestors_by_pidfd(parent, os.getpid())
        if own is not None and own[0] == os.getpid()
        else ([], None)
    )
    for pid in above:
        # And every ancestor above it that /proc hides too, where the kernel tells a hidden
        # process's parent (`_ancestors_by_pidfd`): a shell with the run's capabilities
        # between the run and this process, under a run that leads neither its session nor
        # its process group, hid the run, and no entry named the shell (red team 71).
        if pid not in candidates and not (_PROC / str(pid)).exists():
            candidates[pid] = "ancestor"
    for uid in dict.fromkeys((os.getuid(), os.geteuid(), 0)):
        for directory in _registries(uid):
            try:
                if not _trusted(os.lstat(directory), uid):
                    continue
                names = os.listdir(directory)  # noqa: PTH208 - names only
            except (FileNotFoundError, PermissionError, NotADirectoryError):
                continue  # none there, or closed to this process (a security policy's)
            except OSError as error:
                # A failed look is no empty registry: a child under a tracer that failed
                # its open of the registry (`strace -P /tmp/app-pytest-runs-0 -e
                # inject=openat:error=EIO`) found no entry for its hidden parent, and
                # purged a stopped production root (red team 70 on regress, the guard).
                return _hidden_parent_words(candidates[parent], parent, hides, directory, error)
            for name in sorted(names):
                number, _, rest = name.removesuffix(".json").partition("-")
                started = rest.partition("-")[0]
                # ASCII digits alone: `int` refuses some that `str.isdigit` takes ("³"), and
                # the ValueError ended the command (red team 72 on regress, round c).
                digits = (number + started).isascii() and number.isdigit() and started.isdigit()
                if not (digits and name.endswith(".json")):
                    continue
                pid = int(number)
                late = own is not None and int(started) > own[1] + 1
                if late or (pid not in candidates and asked is None):
                    continue  # started after this process (not its ancestor), or another's
                if not _running_here(directory / name, namespace):
                    continue  # ended, or in another PID namespace (a container's)
                if pid not in candidates:
                    # Any run may be an ancestor further up where the kernel's answer was
                    # not had: under a tracer that failed the ask (`strace --inject=ioctl:
                    # error=EIO`), a child below a hidden shell in a session of its own found
                    # no ancestor above the shell, and purged (red team 71 on regress).
                    return _hidden_parent_words(
                        candidates[parent], parent, hides, directory / name, asked=asked
                    )
                return _hidden_parent_words(
                    candidates[pid],
                    pid,
                    hides,
                    directory / name,
                    boot=_boot_unknown(directory / name),
                    covered=_boot_covered(directory / name),
                )
    return None


#: ``PIDFD_GET_INFO`` (Linux 6.13): ``_IOWR(0xFF, 11, struct pidfd_info)`` as x86-64 and
#: AArch64 number it, for the structure's first version (64 bytes); elsewhere it fails.
_PIDFD_GET_INFO: Final = 0xC040FF0B
_PIDFD_INFO_SIZE: Final = 64
#: ``PIDFD_INFO_PID``: ask for the process's pid, thread group and parent.
_PIDFD_INFO_PID: Final = 1
#: Where ``struct pidfd_info`` holds the process's own pid (after the mask and the cgroup's
#: id), as this process's PID namespace numbers it.
_PIDFD_PID_AT: Final = 16
#: Where ``struct pidfd_info`` holds the parent's pid (after the mask, the cgroup's id, the
#: pid and the thread group's id).
_PIDFD_PPID_AT: Final = 24
#: How many ancestors `_ancestors_by_pidfd` follows at most (a cycle cannot be, but a
#: process re-parented as it is read may be met again: each is followed once).
_PIDFD_ANCESTORS: Final = 4096


def _ancestors_by_pidfd(
    pid: int, below: int | None = None
) -> tuple[list[int], tuple[int, str, OSError] | None]:
    """The ancestors of process `pid` (its parent first), in this process's PID namespace, as
    the kernel tells a process's parent through a pidfd (``PIDFD_GET_INFO``, Linux 6.13),
    which ``hidepid=`` does not hide and which needs no right to read the process; empty
    where it cannot (an older kernel, another architecture's numbering, no ``pidfd_open``).
    Nothing here tells when a process started, so an ancestor found so is matched with a
    registry entry by its pid alone, as `_hidden_parent` matches its parent. And where an
    ask failed otherwise (a tracer's fault, a seccomp filter's, out of descriptors): the
    pid asked about, the call, and its error, for `_hidden_parent` to refuse by. `below`: a
    child of `pid` (this process), which the kernel re-parents where `pid` exits."""
    found: list[int] = []
    seen = {pid}
    while len(found) < _PIDFD_ANCESTORS:
        try:
            fd = os.pidfd_open(pid)
        except AttributeError:  # no pidfd_open (not Linux)
            break
        except OSError as error:
            release = _kernel_release()
            # No such process, of one that signal 0 finds: a tracer's fault (`strace
            # --inject=pidfd_open:error=ESRCH`) ended the walk at a hidden shell, as if it
            # had exited, and the child below it purged (round p of red team 71 on
            # regress). A pid given again in between names a process that is no ancestor:
            # refused the more, as round g weighed. And where its child below still has it
            # as its parent: a tracer that failed signal 0's `kill` with ESRCH as well let
            # the child purge (round t). A process that exits has its children re-parented
            # (to a subreaper, or pid 1) before its pid is freed; a fault injected into that
            # ask is a failure, and an answer left unwritten tells pid 0. Not asked of a
            # kernel that tells no parent (before Linux 6.13), whose walk ends at the first.
            found_by_kill = error.errno == errno.ESRCH and _running(pid)
            answers = release >= (6, 13) and os.uname().machine in _PIDFD_GET_INFO_MACHINES
            kept = (
                error.errno == errno.ESRCH
                and answers
                and below is not None
                and _parent_told(below) in (None, pid)
            )
            gone = error.errno == errno.ESRCH and not found_by_kill and not kept
            if gone or (error.errno == errno.ENOSYS and release < (5, 3)):
                break  # gone, or before Linux 5.3
            said = {
                # A kernel that has the call, failed as one without it (`_kernel_release`).
                errno.ENOSYS: f"pidfd_open, which Linux {_spelt(release)} has",
                errno.ESRCH: "pidfd_open, of a process that signal 0 finds"
                if found_by_kill
                else f"pidfd_open, of a process whose child, pid {below}, the kernel does not "
                "tell re-parented",
            }.get(error.errno or 0, "pidfd_open")
            return found, (pid, said, error)
        info = bytearray(_PIDFD_INFO_SIZE)
        struct.pack_into("=Q", info, 0, _PIDFD_INFO_PID)
        try:
            fcntl.ioctl(fd, _PIDFD_GET_INFO, info)
        except OSError as error:
            release, machine = _kernel_release(), os.uname().machine
            answers = release >= (6, 13) and machine in _PIDFD_GET_INFO_MACHINES
            if error.errno == errno.ESRCH or (error.errno == errno.ENOTTY and not answers):
                break  # exited; or before Linux 6.13, or numbered otherwise
            if error.errno == errno.ENOTTY:
                # A kernel that answers it, failed as one that does not: a tracer's fault
                # (`strace --inject=ioctl:error=ENOTTY`) or a seccomp filter's let a child
                # below a hidden shell in a session of its own purge (round g of red team 71
                # on regress), as EIO had (round a).
                said = (
                    f"its PIDFD_GET_INFO ioctl, which Linux {_spelt(release)} on {machine} answers"
                )
                return found, (pid, said, error)
            return found, (pid, "its PIDFD_GET_INFO ioctl", error)
        finally:
            os.close(fd)
        if (told := struct.unpack_from("=I", info, _PIDFD_PID_AT)[0]) != pid:
            # A descriptor of another process: a tracer that answered pidfd_open with a
            # pidfd of the child itself (`strace --inject=pidfd_open:retval=9`) made the
            # walk up follow the child's own parent, the hidden shell, and never reach the
            # run: the child purged (round l of red team 71 on regress).
            wrong = OSError(errno.EBADF, f"a descriptor of pid {told}, not of pid {pid}")
            return found, (pid, "pidfd_open", wrong)
        below, pid = pid, struct.unpack_from("=I", info, _PIDFD_PPID_AT)[0]
        if pid <= 0 or pid in seen:  # the top of this PID namespace
            break
        seen.add(pid)
        found.append(pid)
    return found, None


def _parent_told(pid: int) -> int | None:
    """Process `pid`'s parent as the kernel tells it through a pidfd (``PIDFD_GET_INFO``);
    None where the ask failed or told another process (`_ancestors_by_pidfd`)."""
    info = bytearray(_PIDFD_INFO_SIZE)
    struct.pack_into("=Q", info, 0, _PIDFD_INFO_PID)
    try:
        fd = os.pidfd_open(pid)
        try:
            fcntl.ioctl(fd, _PIDFD_GET_INFO, info)
        finally:
            os.close(fd)
    except (AttributeError, OSError):
        return None
    if struct.unpack_from("=I", info, _PIDFD_PID_AT)[0] != pid:
        return None
    return int(struct.unpack_from("=I", info, _PIDFD_PPID_AT)[0])


def _running(pid: int) -> bool:
    """Whether process `pid` is there, as signal 0 finds it (``EPERM``: another user's)."""
    if pid <= 0:
        return False  # `kill` takes 0 for this process's group: no process has pid 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:
        # Larger than a pid_t holds: no process has it. Raised, it ended the start of every
        # run of the user once a file so named was in the registry of test runs, since a
        # run keeps an entry whose process /proc hides while signal 0 finds it
        # (`_hidden_alive`; red team 72 on regress, round c), as it kept one of pid 0 for
        # good, found by the signal to its own group.
        return False
    except OSError:
        return True
    return True


#: Where `_PIDFD_GET_INFO` is the ioctl's number (`_ancestors_by_pidfd`), as ``uname -m``
#: names them.
_PIDFD_GET_INFO_MACHINES: Final = ("x86_64", "aarch64")


def _kernel_release() -> tuple[int, int]:
    """This kernel's release (major, minor), the later of what ``uname`` says and what
    ``/proc/sys/kernel/osrelease`` shows; (0, 0) where neither tells.

    `_ancestors_by_pidfd` reads ENOSYS from ``pidfd_open`` (before Linux 5.3) and ENOTTY
    from its ioctl (before Linux 6.13) as a kernel that cannot tell a process's parent,
    only where the release is earlier: a tracer or a seccomp filter that fails the calls
    with those errors is otherwise a failure. The later of the two: a personality lowers
    what ``uname`` says (``setarch --uname-2.6``), and a file mounted over the other."""
    said = [os.uname().release]
    with contextlib.suppress(OSError):
        said.append(Path(f"{_PROC}/sys/kernel/osrelease").read_text())
    found = [(0, 0)]
    for text in said:
        numbers = re.match(r"(\d+)\.(\d+)", text.strip())
        if numbers is not None:
            found.append((int(numbers[1]), int(numbers[2])))
    return max(found)


def _spelt(release: tuple[int, int]) -> str:
    """Kernel `release` as Linux numbers it (6.13)."""
    return ".".join(map(str, release))


def _boot_unknown(entry: Path) -> bool:
    """Whether registry `entry` names the boot its run started in while this process cannot
    read its own (`_boot_id`), so `_running_here` could not tell an entry of an earlier boot.

    systemd's ``ProcSubset=pid`` (``/proc`` mounted ``subset=pid``), most often set with
    ``ProtectProc=invisible``, leaves no ``/proc/sys``: a service whose hidden parent had the
    pid of a run of an earlier boot was refused as before red team 70's mend, in words that
    did not say why nor name the setting that lets the boot be told (red team 70 on regress,
    the guard again)."""
    if _boot_id() is not None:
        return False
    try:
        return isinstance(json_loads(_entry_bytes(entry)).get(_BOOT), str)
    except (OSError, ValueError, AttributeError):
        return False


def _boot_covered(entry: Path) -> str | None:
    """Why registry `entry`, which names another boot than this process reads, counts as
    this boot's all the same (`_began_before`): what this process reads as the boot's id may
    not be this boot's (a file mounted over it); None where it names this boot, or none.

    Each way that holds gets its own words: an entry that records no start of its boot (of
    a build before red team 71) was said to name "one that began when this one did by the
    wall clock", which nothing had compared (red team 71 on regress)."""
    if _boot_id() is None:
        return None
    try:
        data = json_loads(_entry_bytes(entry))
        booted = data.get(_BOOT)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(booted, str) or booted == _boot_id() or _began_before(data):
        return None
    another = f"it names another boot than {_BOOT_FILE} shows here"
    if type(data.get(_BOOT_BEGAN)) is not int:
        return (
            f"{another}, but not when that boot began (written by a build of the app before "
            "entries recorded it, or by a run that could not tell), so it may be this boot's: "
            "a file mounted over the boot id"
        )
    if _boot_began() is None:
        return (
            f"{another}, and this process cannot tell when its own boot began (its time "
            "namespace's offsets unread), so it may be this boot's: a file mounted over the "
            "boot id"
        )
    return (
        f"{another}, but one that began when this one did by the wall clock, so it may be "
        "this boot's: a file mounted over the boot id, or a machine whose clock starts from "
        "nothing at each boot"
    )


def _hidden_parent_words(
    which: str,
    pid: int,
    hides: str,
    entry: Path,
    failed: OSError | None = None,
    *,
    boot: bool = False,
    covered: str | None = None,
    asked: tuple[int, str, OSError] | None = None,
) -> tuple[str, str]:
    """`_hidden_parent`'s words for hidden ancestor `pid` (`which`: its parent, its session's
    or process group's leader, or an ancestor further up, `_ancestors_by_pidfd`): `entry`,
    a registry entry for a run of that pid, or the registry itself whose look `failed`
    (neither missing nor denied); `boot`, whether
    the entry names a boot this process cannot compare with its own (`_boot_unknown`);
    `covered`, why it counts where it names another boot (`_boot_covered`);
    `asked`, the pid whose parent this process asked the kernel for, the call and its error,
    where that failed and `entry` names a run of another pid (`_ancestors_by_pidfd`)."""
    shown = (
        f"/proc is mounted here with {hides}, which hides a process this one may not read: "
        "another user's, or one that holds capabilities this process lacks"
    )
    start = f"{_HIDDEN_PARENT}{which}, pid {pid} ({shown}), and "
    if asked is not None:
        whose, call, error = asked
        code = errno.errorcode.get(error.errno or 0, str(error.errno))
        said = (
            f"{start}its ask of the kernel for the parent of pid {whose} through a pidfd "
            f"({call}) failed ({code}: {error.strerror or error}), so this process cannot tell "
            f"whether the run of an entry in the registry of test runs ({entry}) is above it"
        )
        remove = (
            f"Let this process ask for a process's parent (pidfd_open and its PIDFD_GET_INFO "
            "ioctl): a tracer that injects faults (`strace --inject`) must keep to the calls "
            "the test means (`-P <the file>`), and a seccomp filter must not fail those. If "
            f"the run of that entry is not running, remove {entry}"
        )
    elif failed is not None:
        code = errno.errorcode.get(failed.errno or 0, str(failed.errno))
        said = (
            f"{start}its look in the registry of test runs ({entry}) for a run of that pid "
            f"failed ({code}: {failed.strerror or failed}), so this process cannot tell "
            "whether a test run is above it"
        )
        remove = (
            f"Let this process list {entry}: a tracer that injects faults (`strace --inject`) "
            "must keep to the calls the test means (`-P <the file>`)"
        )
    else:
        said = (
            f"{start}the registry of test runs holds an entry for a run of that pid ({entry}), "
            "so this process cannot tell whether that run is above it"
        )
        remove = f"If no test run of pid {pid} is running, remove {entry}"
        if boot:
            said += (
                f" (nor whether that run is of this boot: this process cannot read {_BOOT_FILE}, "
                "as where /proc is mounted with subset=pid)"
            )
            remove += (
                f", or let this process read {_BOOT_FILE} (/proc mounted without subset=pid; "
                "systemd: ProcSubset=all, its default), by which an entry of an earlier boot "
                "does not count"
            )
        if covered is not None:
            said += f" ({covered})"
    fix = (
        f"Start this process where /proc shows its {which} (/proc mounted without {hides}, or "
        f"with gid= a group of this process, or with the capabilities of pid {pid} in effect), "
        "or outside the test run; a test must not hide its run from the processes it starts. "
        f"{remove}"
    )
    return said, fix


def _running_here(entry: Path, namespace: int | None) -> bool:
    """Whether registry `entry` is of a run that has not ended, in PID namespace
    `namespace` (this process's, `_pid_namespace`), as it records them; so where either is
    unknown. Runs in other PID namespaces (containers, or tests' inner runs, sharing
    ``/tmp``) have pids of their own, and a namespace's number is given again once it is
    gone, so only a run that has not ended (its namespace still there) counts: a service of
    user 65534 whose init ``hidepid=invisible`` hides, in a PID namespace of its own, was
    refused by an ended run at pid 1 of an earlier namespace of that number
    (`_hidden_parent`)."""
    try:
        data = json_loads(_entry_bytes(entry))
        recorded, ended, booted = data.get("pid_namespace"), data.get("ended_at"), data.get(_BOOT)
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: it may be this process's run
    now = _boot_id()
    if isinstance(booted, str) and now is not None and booted != now and _began_before(data):
        # A run of an earlier boot (killed with its machine: no end recorded), on a /tmp kept
        # across boots (RHEL's): the first PID namespace has the same number in every boot,
        # and a service whose hidden parent (a supervisor) had that run's pid was refused
        # every command (red team 70 on regress, the guard). And of a boot that began before
        # this one: a boot id is a file that a mount covers (`_began_before`).
        return False
    if ended is not None or not (namespace is None or recorded is None or recorded == namespace):
        return False
    # A namespace's number is given again once it is gone, with the same first pids: an entry
    # of a run killed in a namespace that has since died (no end recorded) counted where a
    # new namespace had that number, and a service whose hidden parent had the run's pid was
    # refused (round a of red team 71 on regress, flaky in tests/test_proc_noaccess.py). Its
    # first process tells them apart (`_namespace_init`); unknown on either side, it counts.
    init = data.get(_INIT)
    return type(init) is not int or (here := _namespace_init()) is None or here == init


#: The field of a registry entry that names the first process of the PID namespace its
#: pids are numbered in (`_namespace_init`).
_INIT: Final = "pid_namespace_init"


def _namespace_init() -> int | None:
    """Which process is pid 1 of the PID namespace ``/proc`` numbers pids in, as the kernel
    numbers its pidfd (pidfs, Linux 6.9: an inode number no other process of this boot is
    given, where a namespace's own number is given again once it is gone); None where
    ``/proc`` numbers an enclosing namespace's pids (`_proc_self`) or it cannot be read.

    A pidfd needs no right to read the process, and ``hidepid=`` does not hide it: a
    service's init is another user's. Before Linux 6.9 every pidfd has the same inode, so
    every entry names the same: it tells nothing, and counts, as before. Read twice, by
    ``fstat`` and by the descriptor's ``fdinfo``, and known only where both agree: a ``stat``
    a tracer made succeed without filling anything in (as against `_own_pid_namespace`)
    would otherwise pass a live run's entry over as another namespace's. And only where the
    ``fdinfo`` names pid 1 (``Pid:``, as this ``/proc`` numbers it): a tracer that answered
    ``pidfd_open`` with a pidfd of another process (``strace
    --inject=pidfd_open:retval=9``, its closes made to do nothing) gave that process's
    inode, both reads agreed, the run's live entry did not count, and a hidden child purged
    (round l of red team 71 on regress)."""
    if _proc_self() != os.getpid():
        return None
    try:
        fd = os.pidfd_open(1)
    except (OSError, AttributeError):  # no pidfd_open (before Linux 5.3, not Linux), denied
        return None
    try:
        number = os.fstat(fd).st_ino
        shown = (_PROC / "self" / "fdinfo" / str(fd)).read_bytes()
    except OSError:
        return None
    finally:
        os.close(fd)
    agree = f"\nino:\t{number}\n".encode() in shown and b"\nPid:\t1\n" in shown
    return number if agree else None


#: The field of a registry entry that names the boot its run started in (`_boot_id`).
_BOOT: Final = "boot_id"


#: The field of a registry entry that says when that boot began (`_boot_began`).
_BOOT_BEGAN: Final = "boot_began"


#: How much earlier than this boot's another's must have begun to count as earlier, in
#: nanoseconds: the wall clock is stepped (NTP) and slewed, and a reboot takes longer.
_BOOTS_APART: Final = 10 * 10**9


def _boot_began() -> int | None:
    """When this boot began by the wall clock, in nanoseconds since the epoch, from clocks no
    mount can cover: the wall clock less the time since boot (``CLOCK_BOOTTIME``, less this
    process's time namespace's offset, `_boot_offset`); None where that cannot be known."""
    offset = _boot_offset()
    if offset is None or not hasattr(time, "CLOCK_BOOTTIME"):  # not Linux
        return None
    return time.time_ns() - (time.clock_gettime_ns(time.CLOCK_BOOTTIME) - offset)


def _began_before(data: Mapping[str, Any]) -> bool:
    """Whether registry entry `data`'s boot began before this one (`_boot_began`, recorded
    as `_BOOT_BEGAN`); False where either is unknown, or it records none (written before red
    team 71).

    A child of a test of a run as root, in a mount namespace of its own with ``/proc``
    mounted ``hidepid=invisible`` for a group it is not in and every capability dropped, is
    refused by its hidden run's entry (red team 70); with a file bound over
    ``/proc/sys/kernel/random/boot_id`` there too (another boot's id, or
    ``/proc/sys/kernel/random/uuid``, a new one at each read), that entry, of this boot, was
    taken for one of an earlier boot, and the child purged a stopped production root (red
    team 71). A container manager binds a boot id of its own there (LXC, systemd-nspawn), so
    what covers that file does not tell a test from it; when the boot began does."""
    began, now = data.get(_BOOT_BEGAN), _boot_began()
    return type(began) is int and now is not None and began < now - _BOOTS_APART


#: Where Linux shows its random id of this boot (`_boot_id`).
_BOOT_FILE: Final = f"{_PROC}/sys/kernel/random/boot_id"


#: `_boot_id`, read once: a process (and its forks) lives in one boot.
_BOOT_ID: list[str | None] = []


#: `_boot_began`, read once: an entry is rewritten after every test, and its fields compared
#: with what is expected (`_rewritten`); the wall clock may be stepped in between.
_BOOT_BEGAN_ONCE: list[int | None] = []


def _boot_began_once() -> int | None:
    """`_boot_began`, as this process first read it."""
    if not _BOOT_BEGAN_ONCE:
        _BOOT_BEGAN_ONCE.append(_boot_began())
    return _BOOT_BEGAN_ONCE[0]


def _boot_id() -> str | None:
    """Linux's random id of this boot (``/proc/sys/kernel/random/boot_id``), the same in
    every namespace; None where it cannot be read. Read once: the plugin writes its entry's
    expected fields after every test (`_entry_dict`)."""
    if not _BOOT_ID:
        try:
            text = Path(_BOOT_FILE).read_text().strip()
        except OSError:
            text = ""
        _BOOT_ID.append(text or None)
    return _BOOT_ID[0]


def _misshown() -> tuple[str, str] | None:
    """A refusal's words where a process's ``/proc/<pid>/stat`` read in the walk was not its
    own (`_MISSHOWN`): something is mounted over its entry (see `_proc_entry_mounted`)."""
    if not _MISSHOWN:
        return None
    pid, what = next(iter(_MISSHOWN.items()))
    said = (
        f"while /proc/{pid}/stat is not that process's own ({what}: something is mounted "
        "over its entry of /proc, or a tracer changes what it reads), so this process cannot "
        "tell whether a test run is above it"
    )
    fix = (
        f"Unmount what is mounted over /proc/{pid} or its files (umount /proc/{pid}), or "
        "start this process outside the mount namespace (or the tracer) that has it; a test "
        "must not mount over the /proc entries of the processes it starts"
    )
    return said, fix


#: A mount point at or inside a process's own entry of ``/proc``: its number, or the links
#: ``self`` and ``thread-self`` (a mount there lands on the entry they name).
_PROC_ENTRY: Final = rb"/proc/(?:\d+|self|thread-self)(?:/.*)?"


def _proc_entry_mounted() -> tuple[str, str] | None:
    """A refusal's words where something is mounted over a process's entry of ``/proc``
    (found where the walk found no run), else None.

    A child a test started as root in a mount namespace of its own (``unshare -m``, as a
    harness that fakes what a tool reads of ``/proc`` does) that bound ``/proc/1`` over
    ``/proc/$$`` (or ``/proc/1/stat`` over its own ``stat``, or over its parent's entry)
    and then ran the app: the walk read init's parent (none) and start time for its own,
    found no run above it and no pytest, and given production's settings alone it purged a
    stopped production root (red team 55). ``/proc`` is Linux's own filesystem there, with
    ``/proc/self``, so nothing looked hidden.
    """
    # Every process outside a test run (each `app` command, a server) comes here: the
    # table's raw bytes are looked at first, and parsed (`app.mountinfo`, imported then)
    # only where a mount point may lie in such an entry (its field as mountinfo writes
    # it, after a space, with a space or a `/` after the entry): 0.8 M instructions of an
    # `app config` (callgrind, one run each way).
    try:
        raw = _proc_bytes("thread-self", "mountinfo")  # as `mountinfo.read`
    except OSError:
        return None  # unread: the walk's other checks stand
    if re.search(rb" /proc/(?:\d+|self|thread-self)[ /]", raw) is None:
        return None
    from app import mountinfo

    for _device, point, _shown_dir, _upper in mountinfo.read():
        if re.fullmatch(_PROC_ENTRY, point, re.DOTALL):
            shown = point.decode(errors="backslashreplace")
            said = (
                f"while something is mounted over {shown} (a process's own entry of /proc, "
                "which then shows another process's), so this process cannot tell whether "
                "a test run is above it"
            )
            fix = (
                f"Unmount it (umount {shown}), or start this process outside the mount "
                "namespace that has it; a test must not mount over the /proc entries of the "
                "processes it starts"
            )
            return said, fix
    return None


def _unseen_run(seen: _Seen, chain: list[tuple[int, int]]) -> tuple[str, str] | None:
    """A refusal's words where no run was found but one may be there unseen: an entry this
    process may not read (`_hidden_run`), or an ancestor (`_walk_denied`)."""
    if seen.hidden:
        pid, (where, why) = next(iter(seen.hidden.items()))
        if where == _PROC / str(pid):  # its own /proc, not an entry (`_proc_read_failed`)
            return _proc_failed(pid, why)
        return _hidden_run(seen.hidden)
    denied = _walk_denied(chain)
    return _proc_denied(denied) if denied is not None else None


def _walk_denied(chain: list[tuple[int, int]]) -> int | None:
    """The ancestor past the last one walked that this process may not read in ``/proc``
    (`_proc_denied`), or None where the walk ended at pid 1, at one that is gone, or at
    another user's: ``hidepid=`` and a security profile's ``owner`` rules deny those by
    design (a service's parent, its init, under ``ProtectProc=`` or AppArmor), and a run's
    child as another user is a limit of its own."""
    fields = _stat_fields(chain[-1][0]) if chain else None
    parent = fields[0] if fields is not None else 0
    if parent <= 0 or not _may_not_read(parent):
        return None
    try:
        owner = (_PROC / str(parent)).stat().st_uid
    except OSError:
        return None
    # Its own user by either id (`_entry_named`): a child given another real user, root's
    # effective one and none of a root run's capabilities, where /proc is mounted
    # `hidepid=noaccess`, was denied the run's `stat`, passed over as another user's, and
    # purged a stopped production root (red team 70 on the guard).
    return parent if owner in (os.getuid(), os.geteuid()) else None


def _may_not_read(pid: int | str, name: str = "stat") -> bool:
    """Whether this process is denied ``/proc/<pid>/<name>`` (not: it is gone)."""
    try:
        os.close(os.open(f"{_PROC}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC))
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def _proc_denied(pid: int | str) -> tuple[str, str]:
    """The refusal's words where this process may not read ``/proc/<pid>``: a process
    confined by a Landlock ruleset that leaves ``/proc`` out (unprivileged: a worker's
    sandbox a test sets up, as code that confines its workers does) walked no ancestor,
    and given production's settings alone purged a stopped production root (red team 48)."""
    which = "/proc/self" if pid == "self" else f"/proc/{pid} (an ancestor)"
    if pid != "self" and (hides := proc_hides_processes()) is not None:
        # Not a Landlock ruleset: `hidepid=noaccess` denies a process of this one's own user
        # too where it may not read it (it lacks capabilities that process holds), and was
        # told to add /proc to a ruleset that did not exist (red team 70 on the guard).
        said = (
            f"while this process may not read {which}: /proc is mounted here with {hides}, "
            "which denies a process this one may not read (one that holds capabilities this "
            "process lacks, or another user's), so it cannot tell whether a test run is above it"
        )
        fix = (
            f"Start this process where /proc lets it read its ancestors (/proc mounted without "
            f"{hides}, or with gid= a group of this process, or with the capabilities of pid "
            f"{pid} in effect), or outside the test run"
        )
        return said, fix
    said = (
        f"while this process may not read {which}: a Landlock ruleset, or another security "
        "policy, denies it, so it cannot tell whether a test run is above it"
    )
    fix = (
        "Give the process read access to /proc (add it to its Landlock ruleset, or to its "
        "security profile), or start it outside the test run"
    )
    return said, fix


#: The refusal's words where this process's start times cannot be read (`_read_boot_offset`).
_TIME_UNKNOWN: Final = (
    (
        "while this process cannot read the start times of its ancestors (it made a time "
        "namespace for its children, unshare(CLONE_NEWTIME), and no ancestor shows its own "
        "time namespace's offsets), so it cannot tell whether a test run is above it"
    ),
    (
        "Use the app in a process started in the new time namespace (fork or exec after the "
        "unshare, as `unshare --time` does), not in the process that made it"
    ),
)


def _unwalkable() -> tuple[str, str] | None:
    """A refusal's words where this process cannot walk its ancestors (`_proc_hidden`,
    `_proc_denied`, `_TIME_UNKNOWN`), else None."""
    if _proc_self() is None:
        return _proc_hidden()
    if own_start() is not None:
        return None  # its own start read (once a process), so its ancestors' can be
    if _MISSHOWN:
        return _misshown()
    if _may_not_read("self") or _may_not_read("self", "timens_offsets"):
        return _proc_denied("self")
    if (failed := _own_stat_failed()) is not None:
        return failed
    return _TIME_UNKNOWN if _boot_offset() is None else None


def _own_stat_failed() -> tuple[str, str] | None:
    """A refusal's words where this process's read of its own ``/proc/<pid>/stat`` fails
    otherwise than denied (`_proc_denied`): it knows no parent, so no ancestor, and a
    failed read is no answer (`_cut_short`, `_proc_read_failed`); else None.

    A test's child under a tracer that failed only that read (``sh -c 'exec strace -D -P
    /proc/$$/stat -e inject=openat:error=EIO "$@"'``), the run's entry in place, walked no
    ancestor, found no run, and given production's settings alone purged a stopped
    production root (red team 70 on regress, the guard)."""
    own = _proc_self()
    try:
        _proc_bytes(own if own is not None else "self", "stat")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError as error:
        code = errno.errorcode.get(error.errno or 0, str(error.errno))
        which = f"{_PROC}/{own if own is not None else 'self'}/stat"
        said = (
            f"while this process's read of its own {which} failed ({code}: "
            f"{error.strerror or error}; a tracer that injects faults, such as `strace "
            "--inject`, or a seccomp filter), so it cannot tell its parent, nor whether a "
            "test run is above it"
        )
        fix = (
            f"Let this process read {which} (inject faults only into the calls the test "
            "means, e.g. `strace -P <the file>`), or start it outside the test run"
        )
        return said, fix
    return None


def _proc_hidden() -> tuple[str, str] | None:
    """The refusal's words where something hides Linux's ``/proc`` from this process (a
    filesystem mounted over it, or a directory with other files in it): it cannot tell
    whether a test run is above it. None where there is no ``/proc`` at all (not Linux, or
    a chroot that never mounted one: an empty directory), which only the environment covers.

    A test (as root) that moved the run's own process into a mount namespace of its own and
    mounted a tmpfs over ``/proc`` there (a test of code that reads ``/proc``, given a fake
    one): every process it then started walked no ancestor, and one given production's
    settings alone purged a stopped production root, under ``python -m pytest`` with the
    plugin active (red team 46).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        mounted = os.path.ismount(_PROC)
        holds = any(True for _ in os.scandir(_PROC))
    except OSError:
        return None
    if not (mounted or holds):
        return None
    if mounted and _linux_proc():
        # Linux's own /proc, whose /proc/self could not be read: a tracer's fault (`strace
        # --inject=readlinkat:error=ENOENT -P /proc/self`) was refused as "a filesystem that
        # is not Linux's proc is mounted there", which nothing was (red team 55).
        said = (
            "while this process cannot read /proc/self (/proc is Linux's proc filesystem, "
            "but the read failed: a tracer that injects faults, such as `strace --inject`, "
            "or a security policy), so it cannot tell whether a test run is above it"
        )
        fix = (
            "Let the process read /proc/self (inject faults only into the calls the test "
            "means, e.g. `strace -P <the file>`), or start it outside the test run"
        )
        return said, fix
    what = (
        "a filesystem that is not Linux's proc is mounted there"
        if mounted
        else ("it holds other files")
    )
    said = (
        f"while /proc is hidden from this process ({what}, without /proc/self), so it cannot "
        "tell whether a test run is above it"
    )
    fix = (
        "Mount Linux's proc filesystem at /proc where this runs (mount -t proc proc /proc), "
        "or run it outside the mount namespace that hides it; a test must not hide /proc "
        "from the processes it starts"
    )
    return said, fix


def _linux_proc() -> bool:
    """Whether ``/proc`` reads as Linux's proc filesystem (its ``version``); for the words of
    a refusal only, which a fake ``/proc`` may choose."""
    try:
        return (_PROC / "version").read_bytes().startswith(b"Linux version ")
    except OSError:
        return False


def _unreadable(entry: Path) -> str | None:
    """Why this process may not read `entry` (a test's ``chmod 0200`` of it, an access
    control list; or its read failed, `_read_failed`), or None where it can, or where it is
    gone, or is no regular file."""
    if entry in _READ_SHORT:
        return _READ_SHORT[entry]  # as the walk read it (`_entry_changed`)
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None  # gone meanwhile: its run has ended
    except PermissionError as error:
        return error.strerror or "Permission denied"
    except OSError as error:
        # Too many open files, or a tracer's injected fault: an entry that is there but
        # could not be read was passed over as none, and a child purged (red team 60).
        return _read_failed(error)
    try:
        return _unreadable_open(fd)
    except OSError as error:
        return _read_failed(error)
    finally:
        os.close(fd)


def _unreadable_open(fd: int) -> str | None:
    """`_unreadable` of an entry open at `fd`: too long, or unreadable to its end."""
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        return None  # a FIFO or a device a test put there: no run's entry
    if found.st_size > _ENTRY_MAX_BYTES:
        # No run writes one so long now; one did (thousands of node ids on its command
        # line), and its children took it for no entry at all (red team 47).
        return f"{_TOO_LONG} ({found.st_size} bytes, more than {_ENTRY_MAX_BYTES})"
    read = 0
    while chunk := os.read(fd, 65536):
        read += len(chunk)
        if read > found.st_size:  # and never ends (a tracer's injected `read:retval=N`)
            return f"{_READ_FAILED} (it read more than its {found.st_size} bytes)"
    if read < found.st_size:
        # An entry is replaced whole (a rename), never cut or grown: a read that stops short
        # is a fault (a tracer's injected `read:retval=0`), not an entry being written.
        return f"{_READ_FAILED} (it read {read} of its {found.st_size} bytes)"
    return None


#: How `_unreadable` says an entry is longer than a reader reads (`_hidden_run` tells it).
_TOO_LONG: Final = "it is longer than a run's entry"


#: How a refusal names an ancestor whose registry entry this process may not read.
_HIDDEN_RUN: Final = "while a test run may be above this process"


def _hidden_run(hidden: Mapping[int, tuple[Path, str]]) -> tuple[str, str]:
    """The refusal's words for the nearest ancestor whose entry, if it has one, this process
    may not read: it may be a run, and this process one of its children.

    A test that denied the service's user the registry (``setfacl -m u:app:---``) and, in
    the same test, ran a child as that user with production's settings alone under a
    runner script: the child could not list the registry, found no run, and purged a
    stopped production root; the check after the test puts the registry back too late for
    it (red team 40's *not stopped*, closed by red team 41). Only an ancestor's registry
    counts, and only one this process may not read: a service started by init has none.
    """
    pid, (where, why) = next(iter(hidden.items()))
    try:
        registry = where if where.is_dir() else where.parent
    except OSError:  # its look failed (`_read_failed`): a registry, unless it is an entry
        registry = where.parent if where.suffix == ".json" else where
    if why.startswith(_DISTRUSTED):
        said = (
            f"{_HIDDEN_RUN} (ancestor pid {pid}: {_shown(_cmdline(pid))}), whose entry in the "
            f"registry of test runs {registry} counts for nothing: {why}, so another user "
            "could have written it"
        )
        fix = (
            f"Make {registry} a directory that only its user may write again (chmod 755 "
            f"{registry}; a link at its name removed), as the run's check after each test "
            "does; a test must not change it"
        )
        return said, fix
    if why.startswith((_SEARCH_DENIED, *_PTRACE_DENIED)):
        return _search_denied(pid, registry, why)
    said = (
        f"{_HIDDEN_RUN} (ancestor pid {pid}: {_shown(_cmdline(pid))}), whose entry in the "
        f"registry of test runs {registry} this process (user {os.getuid()}) cannot read: "
        f"{why}"
    )
    if why.startswith(_TOO_LONG):
        fix = (
            f"Run the tests with a release of the app whose runs keep their entries short "
            f"(an older one recorded every word of a long command line), or end pid {pid}; "
            f"a test must not write such an entry in {registry}"
        )
        return said, fix
    if why.startswith(_READ_FAILED):
        fix = (
            f"Let this process read {registry} and its entries: a tracer that injects faults "
            "(`strace --inject`) must keep to the calls the test means (`-P <the file>`, "
            "never the registry or a run's /proc/<pid>/fd), a process at its limit of open "
            "files needs a higher one (`ulimit -n`, `prlimit --nofile`), a security policy "
            "that denies it must let it read them, and a disk that fails reads needs looking "
            "at (`dmesg`); or start it outside the test run"
        )
        return said, fix
    if _readable_by_mode(registry) and _readable_by_mode(where):
        # Neither mode nor access control list: a Landlock ruleset that leaves the
        # registry out (red team 48), or another security policy, was told to `chmod`.
        fix = (
            f"Give this process read access to {registry} (a Landlock ruleset, or another "
            "security policy, denies it: add the registry to the paths it may read), or "
            "start it outside the test run"
        )
        return said, fix
    fix = (
        f"Let every user read {registry} and its entries again (setfacl -b {registry}; "
        f"chmod 755 {registry}; chmod 644 {registry}/*.json), as the run's check after "
        "each test does; a test must not hide it from the processes it starts"
    )
    return said, fix


def _proc_failed(pid: int, why: str) -> tuple[str, str]:
    """`_hidden_run`'s words where this process's read of ancestor `pid`'s ``/proc/<pid>/exe``,
    ``fd`` or ``status`` (or its own ``status``) failed (`_proc_read_failed`), neither denied
    nor gone: it may be a run whose entry a test removed, kept open where this process could
    not look."""
    argv = _cmdline(pid)
    named = "" if _looks_like_pytest(argv, pid) else _UNNAMED_PYTEST
    said = (
        f"{_HIDDEN_RUN} (ancestor pid {pid}: {_shown(argv)}{named}), whose entry in the "
        f"registry of test runs this process (user {os.getuid()}) cannot look for: the "
        f"registry does not show one, and {why}, so it cannot tell whether that process "
        "keeps a run's entry open"
    )
    fix = (
        f"Let this process read {_PROC}/{pid} (its exe, fd, status and comm) and its own "
        "status: a tracer that injects faults (`strace --inject`) must keep to the calls the "
        f"test means (`-P <the file>`, never a run's {_PROC}/<pid>), and a seccomp filter "
        "must not fail those reads; or "
        f"start it outside the test run; a test must leave the registry of test runs "
        f"({RUNS_DIR}) and its entries alone"
    )
    return said, fix


def _search_denied(pid: int, registry: Path, why: str) -> tuple[str, str]:
    """`_hidden_run`'s words where the registry's own look was denied: the directory on its
    way that this process may not search. A service whose user may not search ``/tmp`` was
    told that the read of the registry failed and to let it read the registry, which no
    ``chmod`` of the registry opens (red team 60 on regress). And where the ancestor holds
    capabilities this process lacks (`_capabilities_withheld`): those it needs."""
    if why.startswith(_PTRACE_DENIED):
        # Named as Python, or as pytest: where its command line names no pytest (a Python
        # supervisor's, a runner script's), the refusal says so, and is not made "under
        # pytest" (`context`).
        argv = _cmdline(pid)
        named = "" if _looks_like_pytest(argv, pid) else _UNNAMED_PYTEST
        said = (
            f"{_HIDDEN_RUN} (ancestor pid {pid}: {_shown(argv)}{named}), whose entry in "
            f"the registry of test runs this process (user {os.getuid()}) cannot look for: "
            f"the registry does not show one, and {why}"
        )
        start = (
            f"Start this process in the user namespace of pid {pid} (not under `unshare "
            "--user`, `bwrap --unshare-user` or a rootless container's runtime)"
            if why.startswith(_OTHER_NAMESPACE)
            else f"Start this process with the user and groups of pid {pid} (not through a "
            "setgid or setuid program, `sg` or `newgrp`)"
            if why.startswith(_IDS_DIFFER)
            else f"Start this process where pid {pid} is dumpable (no test may call "
            "`prctl(PR_SET_DUMPABLE, 0)` in its run's process) and no security module confines "
            "this process apart from it, or with CAP_SYS_PTRACE"
            if why.startswith(_UNDUMPABLE)
            else f"Start this process with the capabilities of pid {pid} in effect (not under "
            "`setpriv --bounding-set=-all`, `capsh --drop`, a unit's CapabilityBoundingSet= "
            "or a `capset` that clears the effective set below a process that holds them)"
        )
        fix = (
            f"{start}, or outside the test run; a test must leave the registry of test runs "
            f"({RUNS_DIR}) and its entries alone"
        )
        if _UNNAMED_PYTEST in said:
            # A Python supervisor that runs no tests (one that starts this command with
            # fewer capabilities than its own) is refused too: say so, and what lets it be.
            other = (
                f"start this process in its user namespace, or pid {pid} in this one"
                if why.startswith(_OTHER_NAMESPACE)
                else "start this process with its user and groups"
                if why.startswith(_IDS_DIFFER)
                else "start this process with its capabilities in effect, or start pid "
                f"{pid} without those this process lacks (a unit's CapabilityBoundingSet=, "
                "`setpriv --bounding-set`)"
            )
            fix += (
                f". If pid {pid} runs no tests, this process still cannot tell it from a run "
                f"whose entry a test removed: {other}"
            )
        return said, fix
    blocked = _unsearchable(registry)
    said = (
        f"{_HIDDEN_RUN} (ancestor pid {pid}: {_shown(_cmdline(pid))}), whose entry in the "
        f"registry of test runs {registry} this process (user {os.getuid()}) may not look "
        f"for: {why}"
    )
    if blocked is None:
        said += "; no directory on its way is closed to it by its mode"
        fix = (
            f"Let this process look up {registry} (a security policy, AppArmor or SELinux, "
            "denies it: add the registry to the paths it may read), or start it outside "
            "the test run"
        )
        return said, fix
    said += f", as {blocked} may not be searched by it"
    # /tmp is mode 1777 on every Linux system; any other directory opened to others.
    tmp = blocked == RUNS_DIR.parent
    how = f"chmod 1777 {blocked}" if tmp else f"chmod o+x {blocked}"
    fix = (
        f"Let this process's user search {blocked} (ls -ld {blocked}; {how}), or start it "
        "outside the test run; a test must not close it to the processes it starts"
    )
    return said, fix


def _readable_by_mode(path: Path) -> bool:
    """Whether every user may read `path` by its mode, with no access control list on it."""
    try:
        mode = path.stat().st_mode
        acls = [name for name in os.listxattr(path) if name in _ACLS]
    except OSError:
        return False
    wanted = 0o005 if stat.S_ISDIR(mode) else 0o004
    return mode & wanted == wanted and not acls


def _keeps_roots(protected: Iterable[Protected], outer: Run) -> bool:
    """Whether `protected` (a run's roots, or those an entry names, `_run_parts`) holds every
    root `outer` protects, as a run started inside `outer` does: it inherits them (its
    plugin adds the enclosing run's)."""
    kept = {str(item.path) for item in protected}
    return {str(item.path) for item in outer.protected} <= kept


def _joined(protected: tuple[Protected, ...], more: Iterable[Protected]) -> tuple[Protected, ...]:
    """`protected`, then each root of `more` it does not protect already (by path)."""
    kept = {str(item.path) for item in protected}
    return protected + tuple(item for item in more if str(item.path) not in kept)


def _within_enclosing(
    run: Run,
    entry: Path,
    ancestry: Iterator[tuple[int, tuple[int, int]]],
    seen: _Seen,
) -> Run:
    """`run`, the nearest, bound also by each run further up that protects a root it leaves
    out: the roots either protects, and the narrower sandbox where one holds the other.

    A pytest a test starts inherits its enclosing run's protected roots, so a real run
    inside another always keeps them, and nothing changes. An entry a test wrote itself for
    a child or a daemon of its own (a sandbox of ``/``, nothing protected) had been taken as
    that process's run: given production's settings and the opt-in alone, it purged a
    stopped production root, during the run and after it (red team 39). Which of two such
    entries a test wrote cannot be told, so neither may widen what the other allows: a
    first version of this check took the entry further up instead, and one a test wrote
    for the shell above pytest (a sandbox holding every root, one made-up root protected)
    then freed the run's children.
    """
    for depth, (pid, started) in ancestry:
        found, data = _entry_read(pid, started, seen)
        if found is None or data is None or data.get("starting"):
            continue
        outer = _read_entry(found, pid, depth, data=data)
        if outer is None or _keeps_roots(run.protected, outer):
            continue
        protected = _joined(run.protected, outer.protected)
        # The narrower where one holds the other; else the nearer one's.
        sandbox = outer.sandbox if outer.sandbox.is_relative_to(run.sandbox) else run.sandbox
        how = run.recognised_by.removesuffix(")")
        run = run._replace(
            sandbox=sandbox,
            protected=protected,
            recognised_by=f"{how}; the entry {found} of a run further up protects a root "
            f"that {entry} leaves out, so a test wrote one of them, and both bind)",
        )
    return run


def proc_hides_processes() -> str | None:
    """The ``hidepid=`` option ``/proc`` is mounted with, if it hides processes from other
    users (``invisible``, ``noaccess``, ``ptraceable``, or their numbers), else None.

    A child a test starts as another user (``sudo -u``, ``runuser``, ``setpriv``) then cannot
    read its ancestors in ``/proc``, so the process tree cannot tell it is part of the run:
    with a hand-built environment (sudo resets it) it is outside.
    """
    # Every test run's header asks: the table's raw bytes are looked at first, and parsed
    # (`app.mountinfo`, imported then) only where some mount has the option at all.
    try:
        raw = _proc_bytes("thread-self", "mountinfo")  # as `mountinfo.read`
    except OSError:
        return None
    if b"hidepid=" not in raw:
        return None
    from app import mountinfo

    # The mount that shows /proc (`mountinfo.showing`), not the last line at /proc: a
    # proc moved beneath another one (``MOVE_MOUNT_BENEATH``) is listed after it, and one
    # mounted on a mount another hides keeps its point (red team 61 on regress).
    entries = [entry for line in raw.splitlines() if (entry := mountinfo.parse(line)) is not None]
    shown = mountinfo.showing(b"/proc", entries)
    if shown is None or shown.point != b"/proc" or shown.fstype != b"proc":
        return None
    values = mountinfo.option_values(shown, b"hidepid")
    found = f"hidepid={os.fsdecode(values[0])}" if values else None
    return None if found in (None, "hidepid=0", "hidepid=off") else found


def _shown(argv: list[str]) -> str:
    # A command line for a message: the one taken for pytest (so that a wrong guess can be
    # seen as one), a lock's keeper (`command_line`). Each word as `shell_word` quotes it:
    # as `shlex.join` quoted them, a newline in one stayed a newline, and `fail` and `_echo`
    # print each line of a message as a line, so that a holder run as `flock lock cmd
    # $'x\nerror: ...'` wrote a line of its own words into every refusal and `app status`
    # that named it (red team 71 on regress, round n). A word that is printable is quoted
    # as `shlex.quote` quotes it, as before. `printable` for the newlines that end a word,
    # which `shell_word` leaves as they are after its printf.
    shown = printable(" ".join(shell_word(word) for word in argv))
    return shown if len(shown) <= 160 else f"{shown[:157]}..."


def _cmdline(pid: int | str) -> list[str]:
    try:
        raw = _proc_bytes(pid, "cmdline")
    except OSError:
        return []
    # Each word ends with a NUL: without the last one, a shown command line ended in ''.
    # All of them: a title written over the arguments (setproctitle) is padded with NULs.
    raw = raw.rstrip(b"\0")
    return [part.decode(errors="replace") for part in raw.split(b"\0")] if raw else []


def _retitled(argv: list[str], data: Mapping[str, Any]) -> str:
    """Words for a message where a pytest's command line (`argv`, as ``/proc`` shows it
    now) no longer ends with the arguments its entry recorded (``sys.argv``): a process
    title written over them (setproctitle); else ``""``."""
    recorded = data.get("argv")
    if not isinstance(recorded, list) or not recorded:
        return ""
    words = [str(word) for word in recorded]
    # As `_cmdline` decodes /proc: a word of bytes that are not UTF-8 (a test file named in
    # Latin-1) is in sys.argv with surrogates, and every such run read as retitled.
    tail = [_as_proc_shows(word) for word in words[1:]]
    total = data.get("argv_cut")
    if isinstance(total, int) and total >= len(words):
        # Cut (`_recorded_argv`): /proc ends with its last total - 1 words, the first of
        # which the entry kept, each cut as it was.
        start = len(argv) - (total - 1)
        window = [word[:_ARGV_WORD] for word in argv[start : start + len(tail)]]
        if start >= 0 and window == [word[:_ARGV_WORD] for word in tail]:
            return ""
    elif len(argv) >= len(tail) and argv[len(argv) - len(tail) :] == tail:
        return ""
    return f", its command line rewritten since (a process title); it started as {_shown(words)}"


def _as_proc_shows(word: str) -> str:
    """`word` of ``sys.argv`` as `_cmdline` reads it from /proc (bytes that are not UTF-8,
    which ``sys.argv`` holds as surrogates, each shown as U+FFFD)."""
    try:
        return word.encode("utf-8", "surrogateescape").decode(errors="replace")
    except UnicodeEncodeError:  # not from a command line (an entry written by hand)
        return word


def command_line(pid: int | str) -> str:
    """Process `pid`'s command line as a shell would read it (cut at 160 characters), for a
    message that names a process; ``""`` where ``/proc`` does not show it."""
    return _shown(_cmdline(pid))


#: What `python -c` code that runs pytest calls, however Python spells it (`pytest.main`,
#: `from pytest import main`, `import pytest as pt; pt.main`, `__import__("pytest").main`,
#: `runpy.run_module("pytest")`): a bare word would match a path such as
#: /tmp/pytest-of-<user>/..., which `sh -c` command lines of the suite's own children hold.
_PYTEST_CODE: Final = LazyPattern(
    r"\bpytest(?:['\"]\))?\.(?:main|console_main)\b"
    r"|\bfrom\s+pytest\s+import\s[^;\n]*\b(?:main|console_main)\b"
    # pytest's own console script, from pytest 9 (`from _pytest.config import _console_main`)
    r"|\bfrom\s+_pytest\.config\s+import\s[^;\n]*\b_?(?:main|console_main)\b"
    r"|\bimport\s+pytest\s+as\s+(\w+)\b.*\b\1\.(?:main|console_main)\b"
    r"|\brun_module\(\s*['\"]pytest['\"]",
    re.S,
    needs=("pytest",),
)
#: `-m` or `-c`, after any of Python's short options that take no value run together with
#: it (`-Im pytest`, `-bBmpytest`, `-Ic "..."`), its value glued on or the next word. Every
#: one of them: `-R` (hash randomisation) was missing, and `python -Rm pytest -p no:app`
#: was no pytest to its tests' children.
_MODULE_OR_CODE: Final = LazyPattern(r"-[bBdEhiIOPqRsSuvVx]*([mc])(.*)", re.S, starts=("-",))
_PYTEST_MODULES: Final = frozenset({"pytest", "py.test", "pytest.__main__"})


#: Python's options that take their value as the next word (`-W default`, `-X dev`).
_PYTHON_VALUE_OPTIONS: Final = frozenset({"-W", "-X", "--check-hash-based-pycs"})
#: How much of a script is read for a call of pytest (pip's console scripts are 200 bytes;
#: a runner script calls it at its end).
_SCRIPT_READ: Final = 65536


#: coverage's options of `run` that take their value as the next word.
_COVERAGE_VALUE_OPTIONS: Final = frozenset(
    {"--rcfile", "--source", "--include", "--omit", "--context", "--data-file",
     "--concurrency", "--debug"}
)  # fmt: skip


def _script_of(argv: list[str]) -> str | None:
    """The script a Python command line runs (``python ./t -p no:app``), or None where it
    runs ``-m``, ``-c``, stdin or nothing. Under ``coverage run`` (its script or ``-m
    coverage``), which runs its program in its own process, that program."""
    words = iter(argv[1:])
    for word in words:
        if word in _PYTHON_VALUE_OPTIONS:
            next(words, None)
        elif word in ("-mcoverage", "-m") and (word != "-m" or next(words, "") == "coverage"):
            return _coverage_program(words)
        elif word == "-" or _MODULE_OR_CODE.fullmatch(word) or word == "--":
            return None
        elif not word.startswith("-"):
            return _coverage_program(words) if _word_name(word) == "coverage" else word
    return None


def _coverage_program(words: Iterator[str]) -> str | None:
    # `coverage run [options] PROGRAM`: a renamed pytest under it was no pytest (red team 37).
    if next(words, None) != "run":
        return None
    for word in words:
        if word in _COVERAGE_VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
        elif word == "-m":
            return None  # a module: read by its name
    return None


def _script_runs_pytest(argv: list[str], pid: int | str) -> bool:
    """Whether the script a Python command line runs calls pytest: pytest's own console
    script under another name (a link ``t`` to ``.venv/bin/pytest``, a copy named ``run``),
    or a runner script that calls ``pytest.main``.

    Read by its name alone, ``./t -p no:app`` (the kernel shows it as ``python ./t``) was no
    pytest to its tests' children, and one given a hand-built environment purged a stopped
    production root (red team 37). A relative path is the process's, read through
    ``/proc/<pid>/cwd``.
    """
    script = _script_of(argv)
    if script is None:
        return False
    path = Path(script) if script.startswith("/") else _PROC / str(pid) / "cwd" / script
    try:
        with path.open("rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return False
            text = file.read(_SCRIPT_READ).decode(errors="replace")
    except OSError:
        return False
    return _PYTEST_CODE.search(text) is not None


#: The dynamic loader's name (`ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`, `ld64.so.2`,
#: `ld.so.1`, `ld-musl-x86_64.so.1`): run as a program, it loads and runs the program its
#: first word that is no option of its own names, in its own process.
_LOADER: Final = LazyPattern(r"ld[\w-]*\.so(?:\.\d+)*", starts=("ld",))
#: The loader's options that take their value as the next word (glibc's and musl's).
_LOADER_VALUE_OPTIONS: Final = frozenset(
    {"--library-path", "--inhibit-rpath", "--audit", "--preload", "--argv0",
     "--glibc-hwcaps-prepend", "--glibc-hwcaps-mask"}
)  # fmt: skip


def _word_name(word: str) -> str:
    """``Path(word).name``, the last name of a command line's word, without making a path
    where the text after its last slash is that name (neither empty nor ``.``): the walk
    reads every word of every ancestor's command line so, and a path made for each cost
    about a tenth of the walk (bench/README.md, "perf-startup63")."""
    name = word.rpartition("/")[2]
    return name if name not in ("", ".") else Path(word).name


def _program_words(argv: list[str], pid: int | str | None = None) -> list[str]:
    """`argv` from the program that runs, as process `pid` runs it: past the dynamic loader
    and its options (``/lib64/ld-linux-x86-64.so.2 python -m unittest``), and with Python's
    own path for a first word that a test renamed (``exec -a runner python -m unittest``).

    The kernel shows a process run by the loader with the loader's command line, and its
    program (``/proc/<pid>/exe``) as the loader too; ``exec -a`` writes any first word over
    Python's. Either way Python was no Python to the walk, and a child of such a unittest
    run given production's settings alone purged a stopped production root (red team 56 on
    the children of tests). The loader is known by its name in the command line, or by its
    program (run through a link of another name, ``/tmp/run python -m unittest``); the
    program is read only where the first word is neither Python's nor the loader's and a
    later one names a Python or is Python's ``-m``/``-c`` (a shell's ``sh -c`` is read, a
    shell or an init without them costs no more)."""
    if not argv or _PYTHON.fullmatch(_word_name(argv[0])) is not None:
        return argv
    if _LOADER.fullmatch(_word_name(argv[0])) is None:
        program = _program_of(argv, pid)
        if program is not None and _PYTHON.fullmatch(program.name) is not None:
            return [str(program), *argv[1:]]  # renamed (`exec -a`)
        if program is None or _LOADER.fullmatch(program.name) is None:
            return argv
    return _past_loader(argv)


def _program_of(argv: list[str], pid: int | str | None) -> Path | None:
    """Process `pid`'s program (`_program_words`), where its command line (`argv`) may hide
    a Python: a later word names one, or is Python's ``-m``/``-c``; else None."""
    if pid is None or not any(
        _PYTHON.fullmatch(_word_name(word)) or _MODULE_OR_CODE.fullmatch(word) for word in argv[1:]
    ):
        return None
    try:
        program = (_PROC / str(pid) / "exe").readlink()
    except OSError:
        return None
    return program.with_name(program.name.removesuffix(" (deleted)"))


def _past_loader(argv: list[str]) -> list[str]:
    """The loader's command line (`argv`) from the program it runs, past its options."""
    words = iter(enumerate(argv[1:], 1))
    for index, word in words:
        if word in _LOADER_VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("--"):
            return argv[index:]
    return argv


def _looks_like_pytest(argv: list[str], pid: int | str | None = None) -> bool:
    # Anywhere in the command line, not at a fixed place: interpreter options come first
    # (`python -X dev -W default -m pytest`), and so do runners that run pytest in their own
    # process (`coverage run --source app -m pytest`, `coverage run .venv/bin/pytest`).
    # Missing one lets a child with a hand-built environment of a run with `-p no:app` load
    # any profile. But only where pytest is what runs: the program, a script given by its
    # path (a script run through its `#!` line shows its path after the interpreter), or
    # Python's `-m`/`-c`. A word that only names pytest (`make pytest`, `git commit -m
    # pytest`, `conda run -n pytest`, `screen -S pytest`) runs none, and the app processes
    # started under such a command were refused other profiles, told that pytest ran.
    argv = _program_words(argv, pid)
    if not argv:
        return False
    said, python = _words_run_pytest(tuple(argv))
    return said or (python and pid is not None and _script_runs_pytest(argv, pid))


@functools.lru_cache(maxsize=256)
def _words_run_pytest(argv: tuple[str, ...]) -> tuple[bool, bool]:
    """Whether `argv`'s words alone say it runs pytest, and whether its program is Python
    (`_looks_like_pytest`, which reads a Python's script too). Kept per command line: the
    check after every test reads the same few commands (a session's database, the
    zygote's ``python -c`` program of some 2,000 characters) twice a test, and reading
    them anew was most of its cost (bench/README.md, "the guard's walk and httpx's TLS
    contexts")."""
    python = _PYTHON.fullmatch(_word_name(argv[0])) is not None
    for index, arg in enumerate(argv):
        if _PYTEST_COMMAND.fullmatch(_word_name(arg)) and (
            index == 0 or "/" in arg or (python and index == 1)
        ):
            return True, python
        option = _MODULE_OR_CODE.fullmatch(arg) if python else None
        if option is None:
            continue
        value = option[2] or (argv[index + 1] if index + 1 < len(argv) else "")
        if option[1] == "m" and value in _PYTEST_MODULES:
            return True, python
        if option[1] == "c" and _PYTEST_CODE.search(value):
            return True, python  # python -c "import pytest; sys.exit(pytest.main())"
    return False, python


#: `python -m unittest` (its `discover`, a module's tests) and `python -c "...unittest.main()"`,
#: and the runners of unittest's TestCases that are not unittest's own, by their modules and
#: their scripts: `nose2` and `python -m nose2` were read as no test run, and a child of a
#: TestCase they ran purged the production the shell exported (red team 29).
_UNITTEST_MODULES: Final = frozenset(
    {"unittest", "unittest.__main__", "nose2", "nose2.__main__", "green", "xmlrunner",
     "twisted.trial", "testtools.run", "subunit.run"}
)  # fmt: skip
#: Their scripts: Twisted's `trial` too, the script of `twisted.trial` (red team 57 on the
#: children of tests: `python -m twisted.trial` counted, `trial tests` did not).
_UNITTEST_SCRIPT: Final = LazyPattern(
    r"nose2(?:-3)?|green3?|zope-testrunner|trial",
    starts=("nose2", "green", "zope-testrunner", "trial"),
)
_UNITTEST_CODE: Final = LazyPattern(
    # unittest's `main` (its class `TestProgram`) however Python spells it, as for pytest's
    # (`_PYTEST_CODE`): `import unittest as ut; ut.main()` and `__import__("unittest").main()`
    # were no unittest run to a child (red team 57 on the children of tests)
    r"\bunittest(?:['\"]\))?\.(?:main|TestProgram)\b"
    r"|\bfrom\s+unittest\s+import\s[^;\n]*\b(?:main|TestProgram)\b"
    r"|\bimport\s+unittest\s+as\s+(\w+)\b.*\b\1\.(?:main|TestProgram)\b"
    # `runpy.run_module("unittest", run_name="__main__")`, or another runner's module
    r"|\brun_module\(\s*['\"](?:unittest|nose2|green|xmlrunner|twisted\.trial|testtools\.run"
    r"|subunit\.run)(?:\.__main__)?['\"]",
    re.S,
    needs=("unittest", "run_module"),
)
#: Python's modules that run another module or script, named after their own options, in
#: their own process: profilers, debuggers, a tracer, coverage and runpy itself (`python -m
#: cProfile -m unittest`, `python -m pdb -c continue -m unittest`, `python -m trace --count
#: --module unittest`, `python -m runpy unittest`, `python -m coverage run -m unittest`).
#: Behind any other module, unittest's is read where ``-m`` names it.
_RUNNER_MODULES: Final = frozenset(
    {"coverage", "cProfile", "profile", "pdb", "trace", "runpy", "debugpy", "memray",
     "pyinstrument", "viztracer", "scalene"}
)  # fmt: skip
#: The console scripts of such programs (`coverage`, `coverage3`, `coverage-3.12`,
#: `memray`, ...), which run their program in their own process too (``coverage run -m
#: unittest discover``).
_RUNNER_SCRIPT: Final = LazyPattern(
    r"(?:coverage|memray|pyinstrument|viztracer|scalene)(?:3|-[\d.]+)?",
    starts=("coverage", "memray", "pyinstrument", "viztracer", "scalene"),
)
#: How a refusal names a unittest run, which has no plugin of the app's to run under.
_UNITTEST_ANCESTOR: Final = "an ancestor process runs tests with unittest"
_UNITTEST_HERE: Final = (
    "while unittest runs tests in this process, without the app's sandbox (its command line "
    "is unittest's, or a TestCase runs on this thread)"
)


def _looks_like_unittest(argv: list[str], pid: int | str | None = None) -> bool:
    # unittest's own runner has no plugins: a TestCase run by `python -m unittest` in a shell
    # that exported production loaded it, and its maintenance command purged it. Python's
    # `-m` and `-c`, as for pytest (`python -m unittest` is the runner it documents), and
    # another runner's script as the program or run by Python (its `#!` line shows it so),
    # also behind a module or a script that runs its program in its own process
    # (`_RUNNER_MODULES`, `_RUNNER_SCRIPT`).
    argv = _program_words(argv, pid)
    if not argv:
        return False
    if _UNITTEST_SCRIPT.fullmatch(_word_name(argv[0])):
        return True
    return _PYTHON.fullmatch(_word_name(argv[0])) is not None and _python_runs_unittest(argv[1:])


def _python_runs_unittest(arguments: list[str]) -> bool:
    """Whether a Python's `arguments` (its command line but its first word) run unittest's
    runner or another runner of its TestCases (`_looks_like_unittest`)."""
    words = iter(arguments)
    for arg in words:
        if arg in _PYTHON_VALUE_OPTIONS:
            # Its value is the next word (`-W default`, `-X dev`): read as a script, it
            # ended the look, and a TestCase run by `python -W error -m unittest` (or `-X
            # importtime`) was no test run to its child, which given production's settings
            # alone purged a stopped production root (red team 57 on the children of tests).
            next(words, None)
            continue
        option = _MODULE_OR_CODE.fullmatch(arg)
        if option is None:
            if arg.startswith("-"):
                continue
            # A script: what follows is its own arguments.
            name = _word_name(arg)
            if _RUNNER_SCRIPT.fullmatch(name):
                return _runs_unittest_next(list(words))
            return "/" in arg and _UNITTEST_SCRIPT.fullmatch(name) is not None
        value = option[2] or next(words, "")
        if option[1] == "c":
            return bool(_UNITTEST_CODE.search(value))
        return value in _UNITTEST_MODULES or _runs_unittest_next(
            list(words), any_word=value in _RUNNER_MODULES
        )
    return False


def _runs_unittest_next(words: list[str], *, any_word: bool = True) -> bool:
    """Whether what a module or a script that runs another program in its own process
    (`_RUNNER_MODULES`, `_RUNNER_SCRIPT`) is given, `words`, names unittest's runner or
    another runner of its TestCases: a module's name (after ``-m``, ``--module``, or alone
    as runpy takes it), or a runner's script by its path; without `any_word` (another
    module, whose options are not known), only a module ``-m`` names.

    Each such command reads its options its own way (``pdb -c continue``, ``cProfile -o
    out``, ``trace --count --module``), so any word counts. Read up to the first ``-m``
    only, a TestCase run by ``coverage run -m unittest`` (the way coverage measures a
    unittest suite), ``python -m cProfile -m unittest`` or ``python -m runpy unittest`` was
    no test run to its child, which given production's settings alone purged a stopped
    production root (red team 57 on the children of tests)."""
    modules = iter(words)
    for word in modules:
        option = _MODULE_OR_CODE.fullmatch(word)
        if option is not None and option[1] == "m":
            module = option[2] or next(modules, "")
            if module in _UNITTEST_MODULES:
                return True
            # The program is named: what follows is its own arguments, not the runner's
            # (red team 57 on the session's fixes: `python -m coverage run -m app sessions
            # create green`, or a script's `/srv/trial` after it, read as a unittest run,
            # refused a profile the test had opted into). A runner behind a runner
            # (`python -m cProfile -m coverage run -m unittest`) is read on.
            if module not in _RUNNER_MODULES:
                return False
            any_word = True
        elif any_word and (
            word in _UNITTEST_MODULES
            or ("/" in word and _UNITTEST_SCRIPT.fullmatch(_word_name(word)))
        ):
            return True
        elif _names_script(word):
            # A script named, likely: the words after it are its own. Not certainly (an
            # option's value may be a script's path), so a ``-m`` that names unittest's
            # runner still counts.
            any_word = False
    return False


def _names_script(word: str) -> bool:
    """Whether `word`, in a runner's command line (`_runs_unittest_next`), names the script
    it runs: a ``.py`` file, or an absolute path to an executable file that is not another
    runner's (`_RUNNER_SCRIPT`, read on). An option's value (``-o /tmp/profile.out``) is
    neither, and every word after it is still read."""
    if word.startswith("-"):
        return False
    if word.endswith(".py"):
        return True
    if not word.startswith("/") or _RUNNER_SCRIPT.fullmatch(_word_name(word)):
        return False
    return Path(word).is_file() and os.access(word, os.X_OK)


def _runs_unittest() -> bool:
    """Whether unittest runs a test in this process: its command line is unittest's, or a
    TestCase's run is on this thread's stack (``unittest.main()`` in a script)."""
    if _looks_like_unittest(_cmdline("self"), "self"):
        return True
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == "unittest.case":
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


# --- the run ----------------------------------------------------------------------------


def _in_process() -> Run | None:
    runs: list[Run] | None = getattr(sys, _MARKER, None)
    return runs[-1] if runs else None


def marked() -> bool:
    """Whether the app's pytest plugin marked this very process (see :func:`register`)."""
    return _in_process() is not None


class Context(Record):
    """What this process knows about the tests it may be part of.

    Attributes:
        run: the nearest run of the app's plugin, if any.
        bare: how a pytest without the plugin is seen, nearer than ``run`` (or alone), as
            refusals name it ("while pytest runs without the app's sandbox (...)"); its
            rules apply on top of the run's.
        remedy: what resolves a refusal under `bare`, besides running the app's plugin
            (empty where a pytest without the plugin surely runs).
        runner: the test runner `bare` names, for the fix a refusal gives.
    """

    run: Run | None
    bare: str | None
    remedy: str = ""
    #: The test runner `bare` names: ``pytest`` (without the app's plugin), ``unittest``, or
    #: `_MAY_RUN_TESTS` (a Python process, named as no pytest, that may run them).
    runner: str = "pytest"
    #: What resolves a refusal under `bare`, where that is all of it (a run still starting).
    fix: str = ""


OUTSIDE: Final = Context(None, None)

_RUNS_HERE: Final = (
    "while pytest runs without the app's sandbox (pytest is imported in this process, and "
    "the app's plugin did not start in it)"
)
_RUNS_HERE_INACTIVE: Final = (
    "while pytest runs without the app's sandbox (pytest runs in this process, and the app's "
    "plugin, loaded, stayed inactive in it)"
)


#: How a refusal names a pytest run whose registry entry says it is starting (`announce_start`).
_STARTING: Final = "while a pytest run"
_STARTING_HERE: Final = f"{_STARTING} (this process"
_NO_SANDBOX_YET: Final = " is starting and the app's plugin has not made its sandbox yet"
_START_FIX: Final = (
    "Use the app (load a profile, or start a process that does) from a test or a fixture, "
    "once the run has its sandbox, not at a plugin's import or in its start-up hooks"
)


#: How a refusal names pytest's own start-up in this process, before the app's plugin ran.
_STARTING_PYTEST: Final = (
    "while pytest is starting in this process (loading its plugins and options: a `-p` "
    "plugin's or a PYTEST_PLUGINS module's import, or its pytest_addoption), before the "
    "app's plugin has made its sandbox"
)


def _pytest_starting() -> bool:
    """Whether this thread runs inside pytest's start-up: its configuration and plugins being
    loaded (``_pytest.config`` on the stack), before any session (``_pytest.main``).

    A `-p` plugin's code at its import or in its ``pytest_addoption`` that loaded production
    was refused, but told that the app's plugin was disabled (``-p no:app``) or inactive:
    it was neither, only not started yet (red team 35).
    """
    if "app.testing.plugin" in sys.modules or _plugin_switched_off():
        return False  # started (and inactive, or a nested run), or never will: said so
    frame = sys._getframe(1)
    starting = False
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name == "_pytest.main":
            return False  # a session runs: the plugin has had its start
        starting = starting or name.startswith("_pytest.config")
        frame = frame.f_back  # type: ignore[assignment]
    return starting


def _plugin_switched_off() -> bool:
    """Whether this process's pytest is told not to load the app's plugin (`_switched_off_by`)."""
    return _switched_off_by() is not None


def _p_names(words: list[str]) -> set[str]:
    named = {w.removeprefix("-p").removeprefix("=") for w in words if w.startswith("-p")}
    return named | {b for a, b in itertools.pairwise(words) if a == "-p"}


_SWITCH_OFF: Final = frozenset({"no:app", "no:app.testing.plugin", "no:app.testing"})
_AUTOLOAD_OFF: Final = "--disable-plugin-autoload"


def _switched_off_by() -> str | None:
    """Where this process's pytest is told not to load the app's plugin, or None:
    ``-p no:app`` (or ``no:app.testing.plugin``) on its command line, in ``PYTEST_ADDOPTS``
    or in the ini file's ``addopts``, or autoload off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``)
    without ``-p app``."""
    ini, addopts = _ini_addopts()
    sources = {
        "on pytest's command line": sys.argv,
        "in PYTEST_ADDOPTS": _words(os.environ.get("PYTEST_ADDOPTS", "")),
        f"in the addopts of {ini}": addopts,
    }
    for where, words in sources.items():
        if _p_names(words) & _SWITCH_OFF:
            return f"`-p no:app` {where}"
    loaded = _p_names([w for words in sources.values() for w in words]) & {
        "app",
        "app.testing.plugin",
    }
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") and not loaded:
        return "PYTEST_DISABLE_PLUGIN_AUTOLOAD"
    # pytest 8.4's option of the same meaning (red team 42): no variable to read it from.
    for where, words in sources.items():
        if _AUTOLOAD_OFF in words and not loaded:
            return f"`{_AUTOLOAD_OFF}` {where}"
    return None


def _words(text: str) -> list[str]:
    # As pytest splits PYTEST_ADDOPTS (shlex): `-p 'no:app'` is `no:app` to it (red team 36).
    import shlex

    try:
        return shlex.split(text)
    except ValueError:  # unbalanced quotes: pytest refuses the run itself
        return text.split()


def _ini_addopts() -> tuple[str, list[str]]:
    """The ini file and its ``addopts``, read from the pytest `Config` on this thread's stack.

    pytest puts them before the command line's options and imports the ``-p`` plugins they
    name before the app's: a `-p` plugin's load under ``addopts = -p no:app`` was told that
    the app's plugin had not made its sandbox yet, and to use the app from a test, where it
    never would (red team 36).
    """
    config_module = sys.modules.get("_pytest.config")
    if config_module is None:
        return "", []
    frame = sys._getframe(1)
    while frame is not None:
        # `self` while pytest starts (Config._preparse), `config` once a session runs.
        candidate = frame.f_locals.get("self") or frame.f_locals.get("config")
        if isinstance(candidate, config_module.Config):
            try:
                return str(candidate.inipath), [str(w) for w in candidate.getini("addopts")]
            except (ValueError, KeyError, TypeError):
                return "", []
        frame = frame.f_back  # type: ignore[assignment]
    return "", []


def _runs_pytest() -> bool:
    """Whether pytest runs in this process, not merely is imported: its command line is
    pytest's, or pytest's code is on this thread's stack (``pytest.main()`` in a script)."""
    if _looks_like_pytest(_cmdline("self"), "self"):
        return True
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("_pytest."):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _pytest_importers() -> str:
    # Who brought pytest in, for the message: the modules that hold it as a global. Read
    # where pytest is imported and no run or ancestor marks this process, so no test runs
    # in it, and few modules hold pytest.
    pytest_module = sys.modules.get("pytest")
    names = [
        name
        for name, module in list(sys.modules.items())
        if pytest_module is not None
        and not name.startswith(("pytest", "_pytest"))
        and getattr(module, "pytest", None) is pytest_module
    ]
    return ", ".join(names[:3]) if names else "a library that imports _pytest"


def _imported_only() -> Context:
    # pytest imported by a library (time-machine, a package's own pytest plugin) looks the
    # same as a run with `-p no:app` from in here: say both, and what resolves each.
    by = _pytest_importers()
    return Context(
        None,
        f"while pytest is imported in this process (pid {os.getpid()}) and no run of the "
        "app's pytest plugin marked it or an ancestor: it may be a test run with the plugin "
        f"switched off (pytest imported by {by})",
        f"if it runs none, keep pytest out of it ({by} imported it)",
    )


def _own_run() -> tuple[Run | None, tuple[Run | None, str | None, str]]:
    """The run this process is, by its mark, else by the run's registry entry of this
    process or of the run it is a fork of (`Run.itself`), and otherwise what the walk of the
    process tree found (`_walk_tree`).

    That entry counts as the mark does: a test that deleted the mark (the attribute on `sys`,
    the plugin's modules) and wiped its environment, in the run's process or in a fork of it,
    was read as "a pytest without the app's plugin", its refusals told it to run without
    `-p no:app`, and its default profile was development, not the run's testing (red team 58
    on the guard).

    Else by the anchored copy of a run's entry that this process maps (`_forked_run`): a
    fork of the run's process (``os.fork`` without ``exec``) inherits it, sealed in place,
    and nothing in the fork unmaps it. A fork that outlived its run, its mark deleted, its
    entry (handed on, `_end_entry`) removed and pytest's modules forgotten, with its
    environment wiped, found no run, and the purge it ran in its own process moved every
    production session to the trash; with pytest's modules kept it was refused, but as under
    "a pytest without the app's plugin" (red team 63 on the children of tests).
    """
    run = _in_process()
    if run is not None:
        return run, (None, None, "")
    walked = _walk_tree()
    if walked[0] is not None and walked[0].itself:
        return walked[0], walked
    return (_forked_run(walked[0]) if walked[1] is None else None), walked


def context(environ: Mapping[str, str] | None = None) -> Context:
    """Where this process stands: in a run, under a pytest without the plugin, or neither.

    The environment (``os.environ`` unless ``environ`` is given) counts only where neither
    the process nor its ancestry says anything. A process inside a run that merely imports
    pytest (a library did) is the run's: its rules apply, not a bare pytest's.

    Raises:
        SandboxViolationError: only the environment names a sandbox, and it is not absolute
            or is the filesystem's root.
    """
    env = os.environ if environ is None else environ
    own, (run, ancestor, hidden_fix) = _own_run()
    if own is not None:
        return Context(_narrowed(own, env), None)
    runner = _runner_named(ancestor, hidden_fix)
    bare = f"while {runner} runs without the app's sandbox ({ancestor})" if ancestor else None
    fix = ""
    if ancestor and (hidden_fix or ancestor.startswith(_STARTING)):
        bare, fix = ancestor, hidden_fix or _START_FIX
    imported = "_pytest.main" in sys.modules
    starting_here = bool(fix) and ancestor is not None and ancestor.startswith(_STARTING_HERE)
    if imported and not starting_here and _runs_pytest():
        bare = _RUNS_HERE if not _PLUGIN_INACTIVE else _RUNS_HERE_INACTIVE
        runner, fix = "pytest", ""
        if not _PLUGIN_INACTIVE and _pytest_starting():
            bare, fix = _STARTING_PYTEST, _START_FIX
    elif bare is None and "unittest.case" in sys.modules and _runs_unittest():
        bare, runner = _UNITTEST_HERE, "unittest"
    if run is not None:
        return Context(_narrowed(run, env), bare, runner=runner, fix=fix)
    raw = env.get(SANDBOX_ENV)
    # In a run by its environment, whose sandbox's refusal names it: the run `/proc` hides
    # may be that one (`_hidden_parent`).
    hidden = raw is not None and bare is not None and bare.startswith(_HIDDEN_PARENT)
    bare, fix = (None, "") if hidden else (bare, fix)
    if raw is not None:
        resolved = _given_sandbox(Path(raw))
        if resolved is None:
            raise SandboxViolationError(
                f"{SANDBOX_ENV}={raw!r} is not a test sandbox",
                None,
                f"let the app's pytest plugin set {SANDBOX_ENV}; do not set it by hand",
            )
        how = f"the environment ({SANDBOX_ENV})"
        scratch = _scratch_suffix(env.get(SCRATCH_ENV))
        run = Run(resolved, None, (), how, scratch=scratch)
        return Context(run, bare, runner=runner, fix=fix)
    if bare is None and imported:
        return _imported_only()
    if bare is None:
        for name in _PYTEST_VARIABLES:
            if name in env or name in os.environ:
                return Context(
                    None,
                    f"while pytest's variable {name} is set in this process's environment, "
                    "and no run of the app's pytest plugin marked it or an ancestor",
                    f"if it runs none, unset {name} (pytest sets it for its tests and the "
                    "processes they start)",
                )
    return Context(None, bare, runner=runner, fix=fix)


def _runner_named(ancestor: str | None, hidden_fix: str) -> str:
    """The runner `context` names for what the walk found above (`ancestor`): ``unittest``,
    `_MAY_RUN_TESTS` where all it saw is a Python process that may be a run
    (`_search_denied`; a Python supervisor's command run with fewer capabilities was
    refused "under pytest", with no pytest anywhere), else ``pytest``."""
    if ancestor and ancestor.startswith(_UNITTEST_ANCESTOR):
        return "unittest"
    if hidden_fix and ancestor and _UNNAMED_PYTEST in ancestor:
        return _MAY_RUN_TESTS
    return "pytest"


def _given_sandbox(path: Path) -> Path | None:
    """`path`, the environment's sandbox where no run is found, resolved; None where it is
    no sandbox: relative, ``/``, or through a link of /proc this process may not follow
    (another user's process's root: a ``PermissionError`` traceback, red team 61) or a loop
    of symbolic links (``RuntimeError: Symlink loop``, red team 61 on regress)."""
    try:
        resolved = path.resolve() if path.is_absolute() else None
    except (OSError, RuntimeError):
        return None
    return None if resolved is None or resolved == Path(path.anchor) else resolved


def _narrowed(run: Run, environ: Mapping[str, str]) -> Run:
    # The environment may narrow the run's sandbox (a directory inside it), never widen it
    # or move it elsewhere: a test that points the variable at / gains nothing.
    raw = environ.get(SANDBOX_ENV)
    # The plugin sets it to the sandbox itself: nothing to narrow, and no path to resolve
    # (realpath's lstat per component, on every open of a test's data root).
    if not raw or raw == str(run.sandbox) or not Path(raw).is_absolute():
        return run
    try:
        inner = Path(raw).resolve()
    except (OSError, RuntimeError):
        # Through a link of /proc this process may not follow (another user's process's
        # root) or a loop of symbolic links: no directory of the sandbox, so nothing
        # narrowed, where a PermissionError (red team 61) or "RuntimeError: Symlink loop"
        # (red team 61 on regress) traceback ended every load of the test's child.
        return run
    if inner == run.sandbox or not inner.is_relative_to(run.sandbox):
        return run
    how = f"{run.recognised_by}, narrowed by {SANDBOX_ENV}"
    return run._replace(sandbox=inner, recognised_by=how)


def current_run(environ: Mapping[str, str] | None = None) -> Run | None:
    """The pytest run this process belongs to, or None outside any (see :func:`context`)."""
    return context(environ).run


#: The two functions as defined, to tell where a test replaced one (`_run_to_check`).
_CONTEXT: Final = context
_CURRENT_RUN: Final = current_run


def active_sandbox(environ: Mapping[str, str] | None = None) -> Path | None:
    """The sandbox of the pytest run this process belongs to, or None outside tests.

    Raises:
        SandboxViolationError: only the environment names a sandbox, and it is not one.
    """
    run = current_run(environ)
    return run.sandbox if run is not None else None


#: Why the app's plugin, loaded in this process, stayed inactive (`note_inactive`).
_PLUGIN_INACTIVE: list[str] = []


def note_inactive(reason: str) -> None:
    """Remember that the app's plugin was loaded in this process and stayed inactive, and
    why, so that a refusal says so instead of guessing that it was disabled; it makes no
    run here, so the registry says that this pytest runs without it (`note_without_plugin`)."""
    _PLUGIN_INACTIVE.append(reason)
    note_without_plugin()


def _plugin_option() -> str:
    # `-p app` (the entry point's name) works with autoload on and off where pytest reads
    # entry points for -p (8.4 and later); `-p app.testing.plugin` with autoload on stops
    # the run ("Plugin already registered under a different name"), so advise it only where
    # nothing else works.
    from _pytest.config import PytestPluginManager

    signature = inspect.signature(PytestPluginManager.import_plugin)
    return "-p app" if "consider_entry_points" in signature.parameters else "-p app.testing.plugin"


def why_no_plugin() -> str:
    """Why the app's pytest plugin is not running here, and what to do about it."""
    from importlib.metadata import entry_points

    registered = any(ep.value == "app.testing.plugin" for ep in entry_points(group="pytest11"))
    if not registered:
        where = Path(__file__).resolve().parent
        return (
            f"the app's pytest plugin is not registered: the package is imported from {where} "
            "but not installed in this Python environment; install it (`pip install -e .`)"
        )
    if _PLUGIN_INACTIVE:
        return f"it is loaded in this process but stayed inactive: {_PLUGIN_INACTIVE[-1]}"
    by = _switched_off_by()
    if by == "PYTEST_DISABLE_PLUGIN_AUTOLOAD" or os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return f"PYTEST_DISABLE_PLUGIN_AUTOLOAD is set: add `{_plugin_option()}`, or unset it"
    if by is not None and by.startswith(f"`{_AUTOLOAD_OFF}`"):
        return f"plugin autoload is off ({by}): add `{_plugin_option()}`, or remove it there"
    if by is not None and "command line" not in by:
        return f"the plugin was disabled by {by}: remove it there"
    from app.config_files import SETTINGS_DIR_ENV

    # The plugin also stays inactive, and says so in pytest's header, when the run's rootdir
    # is another project than these settings' (`guard.applies`), and has not started where a
    # `-p` plugin's import or `pytest_addoption` runs first (red team 37, under a runner
    # script read since): a child cannot tell which.
    return (
        "the plugin was disabled (`-p no:app`), or stayed inactive because the run's rootdir "
        "is another project than these settings' (pytest's header then says `app: inactive`), "
        "or had not started yet (a `-p` plugin's import or `pytest_addoption` runs before "
        f"pytest imports it); run without `-p no:app`, from the project, or with "
        f"{SETTINGS_DIR_ENV} naming its settings directory, and start what uses the app from "
        "a test or a fixture"
    )


def allowed_profiles(run: Run, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The profiles besides ``testing`` that the current test opted into."""
    env = os.environ if environ is None else environ
    names = {name.strip().lower() for name in env.get(ALLOW_PROFILES_ENV, "").split(",")}
    return frozenset(run.allowed | (names - {""}))


def sandbox_root(sandbox: Path, profile: str) -> Path:
    """Where a profile's data root lives inside the sandbox."""
    return sandbox / "data" / profile


def scratch_suffix(worker: str | None = None, run: str | None = None) -> str:
    """A new run's scratch suffix (``_pytest_<pid>_<hex>``), or an xdist worker's: its run's
    suffix (`run`) and ``_<worker id>``. Random, so that a killed run's leftovers never
    collide with a new run's, and recognisable, so that only such names are ever dropped."""
    if worker is not None and _scratch_suffix(run) and re.fullmatch(r"gw\d+", worker):
        return f"{run}_{worker}"
    return f"_pytest_{os.getpid()}_{os.urandom(2).hex()}"


def _scratch_suffix(raw: object) -> str:
    # Anything else is ignored: a suffix that could make a scratch name equal to a real
    # database (`_prod`) must not come from an environment a test can write.
    return raw if isinstance(raw, str) and _SCRATCH_FORM.fullmatch(raw) else ""


def scratch_database_url(database_url: str, suffix: str) -> str:
    """The URL of the run's scratch database: `database_url`'s, named with `suffix` added
    (`app.remote.pg.scratch_url`, which the plugin creates and drops it with)."""
    from app.remote.pg import scratch_url

    return scratch_url(database_url, suffix)


def scratch_blob_url(blob_url: str, suffix: str, profile: str = "testing") -> str:
    """The scratch prefix of `profile`'s `blob_url` (``s3://bucket/prefix``).

    Testing's lies inside testing's own prefix, ``<prefix>/pytest_...``, where the plugin
    empties it at the end. Another profile's (a test opted into it) is a sibling of that
    profile's prefix, ``<prefix>_pytest_...``, never inside it: a live server of that
    profile lists, checks and repairs everything under its prefix, and a test's objects
    there would change production's objects (and be deleted as orphans by its repair).
    """
    base = blob_url.rstrip("/")
    _, _, prefix = base.removeprefix("s3://").partition("/")
    if profile == "testing" or not prefix:
        return f"{base}/{suffix.lstrip('_')}"  # a whole bucket has no sibling
    return f"{base}{suffix}"


# --- registering (the pytest plugin) -------------------------------------------------------


#: What marks a directory as a data root on disk (`app.lock.LOCK_FILE`,
#: `app.dataroot.STAMP_FILE`; not imported: both modules import this one's users).
_ROOT_MARKS: Final = (".server.lock", ".app-profile.json")


def _registry_in_a_data_root() -> str | None:
    """Where ``/tmp``, the registry's parent, is (or lies in) a data root, what says so.

    A test's child in a mount namespace of its own where a data root is mounted at
    ``/tmp`` (``unshare -m``, ``bwrap --bind <root> /tmp``) is a pytest like any other:
    it made ``app-pytest-runs-<uid>/`` in that root and wrote its entry there, a change
    of what its server owns (red team 44), before any check of where pytest writes.
    """
    from app import mountinfo

    parent = RUNS_DIR.parent
    # Where a mount over /tmp shows it from counts as well: production's sessions/ bound
    # there holds no mark, nor does anything above /tmp.
    # What it shows may be hidden here by that very mount (production's sessions/, under
    # /tmp, bound over /tmp): it is looked for as the first process's namespace sees it.
    mounts, lookup = mountinfo.read_looked_up()
    source, hidden = mountinfo.shown_and_hidden_from(parent, mounts, lookup)
    starts = [parent] if source is None else [parent, source]
    if source is None and hidden:
        source = hidden
        if (outside := seen_from_outside(hidden)) is not None:
            starts.append(outside)
    for start in starts:
        for directory in (start, *start.parents):
            for mark in _ROOT_MARKS:
                if os.path.lexists(directory / mark):
                    seen = f" (it is {source}, seen through a mount)" if start != parent else ""
                    return (
                        f"{parent}{seen} lies in a data root here ({directory} has {mark}), "
                        f"so the registry {RUNS_DIR} would be made in it; run the tests where "
                        f"{parent} is a temporary directory (a mount namespace that binds a "
                        f"data root, or a directory of one, over {parent} puts it there)"
                    )
    return None


def seen_from_outside(path: Path) -> Path | None:
    """`path` as the nearest ancestor in another mount namespace sees it (through its
    ``/proc/<pid>/root``), where there is one this process may read."""
    try:
        own = (_PROC / "self" / "ns" / "mnt").stat().st_ino
        for pid, _ in itertools.islice(_ancestry(), 1, None):
            if (_PROC / str(pid) / "ns" / "mnt").stat().st_ino != own:
                return _PROC / str(pid) / "root" / path.relative_to("/")
    except OSError:
        pass
    return None


def _own_runs_dir() -> Path:
    in_root = _registry_in_a_data_root()
    if in_root is not None:
        raise PermissionError(in_root)  # the plugin refuses the run, with this message
    with contextlib.suppress(FileExistsError):
        RUNS_DIR.mkdir(mode=0o755)
    if not _runs_dir_trusted(RUNS_DIR, os.getuid()):
        msg = (
            f"{RUNS_DIR} is not a directory that only user {os.getuid()} may write, so "
            f"another user could fake or hide this user's test runs in it: {_untrusted()}"
        )
        raise PermissionError(msg)
    with contextlib.suppress(OSError):
        RUNS_DIR.chmod(0o755)  # an earlier version made it 0700: children of other users read it
    return RUNS_DIR


def _untrusted(directory: Path = RUNS_DIR) -> str:
    # Why, and the fix that works: /tmp's sticky bit lets only the owner (or root) remove a
    # directory there, so "remove it" is no advice for one that another user made.
    try:
        found = os.lstat(directory)
    except OSError as error:
        return f"it cannot be read ({error.strerror}); remove it and run again"
    if found.st_uid != os.getuid():
        import pwd

        owner = f"user {found.st_uid}"
        with contextlib.suppress(KeyError):
            owner += f" ({pwd.getpwuid(found.st_uid).pw_name})"
        return (
            f"it is owned by {owner}, and only that user or root may remove it from /tmp: "
            "ask them or an administrator to"
        )
    if not stat.S_ISDIR(found.st_mode):
        return f"it is not a directory; remove it (rm {directory}) and run again"
    return f"others may write it; run chmod go-w {directory} and run again"


def _pid_namespace() -> int | None:
    """The PID namespace that numbers the pids ``/proc`` shows (and entries are named by)."""
    try:
        own = (_PROC / "self" / "ns" / "pid").stat().st_ino
    except OSError:
        return None
    if _proc_self() == os.getpid():
        return own
    # /proc numbers an enclosing namespace's pids (see `_proc_self`): its pid 1 is that
    # namespace's. Unreadable, this one's: another run then never forgets the entry.
    try:
        return (_PROC / "1" / "ns" / "pid").stat().st_ino
    except OSError:
        return own


def _forget_dead_runs(directory: Path) -> None:
    if _boot_offset() is None:
        return  # no start time can be read here (`_read_boot_offset`): every run looks dead
    ours = _pid_namespace()
    for name in (entry.name for entry in directory.iterdir()):
        pid, _, _ = name.partition("-")
        if not (pid.isascii() and pid.isdigit()):
            # No run's: `str.isdigit` takes "³" too, which `int` refuses, and the
            # ValueError ended every run's start (red team 72 on regress, round c).
            continue
        found = _starts_unhidden(int(pid))  # its main thread's where its stat is not its own
        # Named with a PID namespace's number (`_name_to_write`): alive if that is where
        # the process at this pid lives.
        beside = found is not None and name.count("-") == 2
        namespace = _own_pid_namespace(pid) if beside else None
        # One tick earlier too: a run in a time namespace whose offset is not a whole
        # number of ticks names its entry by the earlier of its two start times.
        starts = range(min(found[1]) - 1, max(found[1]) + 1) if found is not None else ()
        alive = name in {_entry_name(int(pid), started, namespace) for started in starts}
        if beside and namespace is None:
            # Its namespace unreadable here (a run a test made non-dumpable, of a user other
            # than root): forgotten, its children were outside any run once the other
            # namespace's entry at its plain name was gone (red team 60 on regress). Kept
            # while a process started then lives at its pid.
            alive = name.rsplit("-", 1)[0] in {f"{pid}-{started}" for started in starts}
        if not alive and found is None and _hidden_alive(int(pid)):
            # A process this `/proc` does not show, or shows but denies (`hidepid=`, a
            # run without the capabilities of the process at that pid), that is there all
            # the same: its start time unknown, it may be the entry's. A run started
            # without capabilities under `/proc` mounted `hidepid=invisible` took a daemon
            # that another run's end had handed its entry on to (a test's, root's, with
            # them) for dead and removed its entry, and the daemon, given production's
            # settings alone, purged a stopped production root (red team 72 on the guard).
            # The next run that sees it forgets it, where it is dead.
            continue
        if not alive:
            # Only a run of this PID namespace is known dead by its pid: a run in another
            # (a container sharing /tmp, `unshare`) has pids this /proc does not show, and
            # forgetting its live entry took its children out of it.
            try:
                data = json_loads(_entry_bytes(directory / name))
                recorded, ended = data.get("pid_namespace"), data.get("ended_at")
            except OSError as error:
                if error.errno == errno.EINVAL:
                    # No regular file (a FIFO a test put at its run's name, red team 61):
                    # where that run lives in another PID namespace, it is alive, and
                    # removing it left its children to find the run by what it keeps open,
                    # not by its sealed copy (red team 62's flaky run of red team 61's test).
                    # Its own run puts it right after that test.
                    continue
                recorded = ended = None  # unreadable
            except (ValueError, AttributeError):
                recorded = ended = None  # or from before entries said these
            # An entry stays while its process exits (`_end_entry`); one of another PID
            # namespace that ended long ago would otherwise stay for good, and be read by
            # every run that starts.
            long_ago = isinstance(ended, int | float) and time.time() - ended > _ENDED_LONG_AGO
            if recorded in (None, ours) or long_ago:
                with contextlib.suppress(OSError):
                    (directory / name).unlink()


def _hidden_alive(pid: int) -> bool:
    """Whether process `pid`, whose start time ``/proc`` did not give (`_starts_unhidden`),
    is there all the same: ``/proc`` shows its entry (its ``stat`` denied, ``hidepid=
    noaccess``), or signal 0 finds it (``hidepid=invisible`` hides it). Signal 0 numbers
    pids in this process's PID namespace: only where ``/proc`` numbers them so too
    (`_proc_self`), else False, as before."""
    if (_PROC / str(pid)).exists():
        return True
    return _proc_self() == os.getpid() and _running(pid)


def _become_subreaper() -> None:
    # A child that double-forks would be re-parented to init and leave the run's tree; as
    # the run's subreaper, the pytest process adopts it instead (Linux only, best effort).
    # Through `app.libc` (`_ctypes` alone: importing `ctypes` cost every run's start).
    with contextlib.suppress(Exception):
        libc.function("prctl")(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _publish(
    run: Run | None,
    directory: Path = RUNS_DIR,
    *,
    outlived: int | None = None,
    ended_at: float | None = None,
    while_running: bool = False,
    without_plugin: bool = False,
    ended_by: int | None = None,
) -> None:
    """Write ``run`` as this process's registry entry (atomically: readers never see half),
    or, given `outlived` (a child of this process), as that child's, handed on by this
    process's run (or by run `ended_by`'s, which ended first: `_hand_on_what_was_handed`);
    None: an entry that says this process is a pytest run still starting, without a sandbox
    yet."""
    pid = outlived or _proc_self()
    # A child's as its walk read it (`_descendant_fields`: its `stat` may be mounted over).
    fields = _stat_fields if outlived is None else _descendant_fields
    started = fields(pid) if pid is not None else None
    if pid is None or started is None:
        return  # no /proc: children fall back to the environment
    data = _entry_dict(run, pid)
    if without_plugin:
        data["without_plugin"] = True
    if outlived is not None:
        own = _proc_self()
        data["outlived"] = own if ended_by is None else ended_by
        own_fields = _stat_fields(own) if while_running and own is not None else None
        if own_fields is not None:
            # Handed on while the run goes on (`hand_on`): it has ended only once this
            # process is gone, which a reader tells by the start time.
            data["run_started"] = own_fields[1]
    if ended_at is not None:
        data["ended_at"] = ended_at
    temporary = f".{os.getpid()}-{os.urandom(6).hex()}.tmp"  # not secrets: 4 ms
    text = json.dumps(data).encode()
    key = (str(directory), pid, started[1])
    name = _NAMED[key].name if key in _NAMED else None
    # Through a descriptor of the directory itself, never a link at its name: a test that
    # replaced the registry by a symbolic link to a production root's sessions/ got the
    # run's entry written there as the run ended (red team 35).
    parent = _open_registry(directory)
    try:
        _clear_entry_name(name or _entry_name(pid, started[1]), parent)
        written = _new_entry_in(parent, temporary)
        try:
            os.write(written, text)
            # Readable by all whatever the umask (077 on hardened systems), as the directory
            # is: a child that switched user (sudo -u) must read its run's entry to stay in
            # the run.
            os.fchmod(written, 0o644)
        finally:
            os.close(written)
        name, placed = _entry_name_now(
            parent, temporary, name, pid, started[1], data["own_pid_namespace"], outlived
        )
        _NAMED[key] = directory / name
        own_run = outlived is None and run is not None
        # The sealed copy first, the entry next, the copy it replaces last: a child that
        # reads between them finds its entry in one of the two (`_entry_changed`).
        replaced = _keep_copy(name, text) if own_run else None
        if not placed and not (
            outlived is not None
            and run is not None
            and _link_if_none(parent, temporary, name, run, while_running=while_running)
        ):
            os.replace(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
        if replaced is not None:
            os.close(replaced)
        if own_run:
            _WRITTEN[directory / name] = (_entry_state(directory / name), text)
    except OSError:
        # A full /tmp left an empty file per refused run, which nothing ever removed.
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=parent)
        raise
    finally:
        os.close(parent)


def _entry_name_now(
    parent: int,
    temporary: str,
    name: str | None,
    pid: int,
    started: int,
    namespace: int | None,
    outlived: int | None,
) -> tuple[str, bool]:
    """The name process `pid`'s entry (the file `temporary`) is written at in registry
    `parent`, and whether it was put there already: its first (`_name_to_write`), else
    `name`, where it was written before.

    But for one handed on again (`outlived`) at its plain name, where an entry there now says
    its process lives in another PID namespace than `namespace`: its readers take that for
    another process's (`_of_another`) and look beside it, at the name with its namespace's
    number. Written over, as it was, an entry a test copied from the run's for its daemon
    with that number changed was kept as a run's inside this one (after a test, and at the
    run's end), and the daemon, once the run had ended, found no entry and, given
    production's settings alone, purged a stopped production root (red team 66 on regress).
    Another namespace's run at that name is left its own."""
    if name is None:
        return _name_to_write(parent, temporary, pid, started, namespace)
    if (
        outlived is not None
        and namespace is not None
        and name == _entry_name(pid, started)
        and _held_by_another(parent, name, namespace)
    ):
        return _entry_name(pid, started, namespace), False
    return name, False


def _link_if_none(parent: int, temporary: str, name: str, run: Run, *, while_running: bool) -> bool:
    """Put entry `temporary`, `run`'s handed on, at `name` of registry `parent` only where no
    entry the hand-over keeps is there (`_kept_by_hand_on`; a link fails where the name is
    taken, which a rename never does); True once nothing is left to do: linked, or such an
    entry was there. False where what is there is to be written over, or nothing is there
    in a filesystem that makes no links (the caller renames then).

    The check after each test hands the run on to a process a test left running only where
    it has no entry yet (`hand_on`), and then wrote over whatever was there by the time it
    wrote. A pytest a test started had written its own entry between that look and the
    write (the run's launcher starts the next case's inner run as a test ends): its entry
    became a handed-on one of the outer run, and its tests' children, given production's
    settings alone, were refused as the outer run's, the development profile's forced onto
    the testing one (CI of stop 51). Its own entry now stays, at the run's end too (red team
    65 on regress); a later pytest's replaces one handed on first, as it did. An entry a test
    wrote there meanwhile for its daemon (nothing protected) is no run's: written over."""
    try:
        os.link(temporary, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
    except FileExistsError:
        # Taken, whatever the filesystem (the kernel answers so before asking one that
        # makes no links, exFAT or FAT through FUSE).
        if not _kept_by_hand_on(_named_entry(parent, name), run, while_running=while_running):
            return False  # no run's: written over
    except OSError:
        return False  # none there, and no hard links here: written over, as before
    os.unlink(temporary, dir_fd=parent)
    return True


def _kept_by_hand_on(data: object, run: Run, *, while_running: bool = True) -> bool:
    """Whether the hand-over leaves entry `data` as it is, rather than writing `run`'s over
    it: a run's that started inside `run` (still starting, or keeping `run`'s protected
    roots), and, after a test (`while_running`, `hand_on`), one a run handed on (this one,
    or one inside it); at the run's end (`_end_entry`), one handed on is written again.

    After a test, an entry a test wrote by hand for its daemon (a sandbox holding
    production's root, nothing protected) was kept as one the process already had: while
    the run lived, the run above bound it (`_within_enclosing`), but once a later test
    killed the run (``SIGKILL``), the daemon, with nothing above it, read that entry as its
    run and, given production's settings and the opt-in alone, purged a stopped production
    root (red team 65 on regress). It is written over now, as the run's end writes over
    it. Keeping the roots is read as the daemon reads its entry (`_run_parts`): a copy of
    the run's own entry with a sandbox no run writes (``/``, a relative path) kept the
    roots by their paths, was kept at the run's end too, and its reader, taking it for no
    run's, found nothing above once the run had ended and, given production's settings
    alone, purged a stopped production root (red team 65 on regress)."""
    if not isinstance(data, dict) or ("outlived" in data and not while_running):
        return False
    if data.get("starting"):
        return True  # its readers are refused as under a pytest not ready (`_walk_tree`)
    parts = _run_parts(data)
    return parts is not None and _keeps_roots(parts[1], run)


#: Where `_publish` wrote each entry (of this process, or handed on to a child), by its
#: registry, pid and start time: the name `_name_to_write` chose, for the process's life.
_NAMED: dict[tuple[str, int, int], Path] = {}


def _name_to_write(
    parent: int, temporary: str, pid: int, started: int, namespace: int | None
) -> tuple[str, bool]:
    """The name process `pid`'s first entry in registry `parent` gets, and whether the entry
    (the file `temporary`) was put there already.

    Entries are named by pid and start time, and pids repeat from PID namespace to PID
    namespace: two runs, each pid 1 of a namespace of its own that shares ``/tmp``, started
    in the same tick of 10 ms have one name. The second wrote its entry over the first's
    (whose children, finding another namespace's entry at their run's name, were then
    outside any run: `_of_another`), the first's check after each test wrote it back
    (`restore_entry`, saying a test had changed it), and a pytest without the app's plugin
    removed it as it exited. A first entry is linked at its name now, which fails where the
    name is taken: by an entry of another namespace's process (its ``own_pid_namespace``),
    this one is named with its own namespace's number instead, for as long as it lives
    (`_NAMED`), where its readers look once they found the other (`_entry_read`). Taken by
    this process (an entry it wrote before, one handed on to it), or by one whose namespace
    cannot be told, the name is written over, as before."""
    name = _entry_name(pid, started)
    if namespace is None:
        return name, False
    try:
        os.link(temporary, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
    except FileExistsError:
        if _held_by_another(parent, name, namespace):
            return _entry_name(pid, started, namespace), False
        return name, False
    except OSError:
        return name, False  # no hard links in this filesystem: written over, as before
    os.unlink(temporary, dir_fd=parent)
    return name, True


def _held_by_another(parent: int, name: str, namespace: int) -> bool:
    """Whether entry `name` of registry `parent` is that of a process of another PID
    namespace than `namespace` (`_name_to_write`)."""
    data = _named_entry(parent, name)
    recorded = data.get("own_pid_namespace") if isinstance(data, dict) else None
    return type(recorded) is int and recorded != namespace


def _named_entry(parent: int, name: str) -> object:
    """What entry `name` of registry `parent` holds, parsed, never through a link at its
    name; None where it cannot be read or is no JSON."""
    try:
        return json_loads(_entry_bytes(Path(name), dir_fd=parent, follow=False))
    except (OSError, ValueError):
        return None


def _entry_dict(run: Run | None, pid: int) -> dict[str, Any]:
    """What `_publish` writes for `run` as `pid`'s entry (None: a run still starting)."""
    data: dict[str, Any] = {"pid": pid, "argv": _recorded_argv(sys.argv)}
    if len(sys.argv) > _ARGV_WORDS or any(len(word) > _ARGV_WORD for word in sys.argv):
        data["argv_cut"] = len(sys.argv)
    if run is None:
        data["starting"] = True
        handed = _handed_to_this_pytest(pid)
        if handed is not None:
            data[_HANDED_ON] = handed
    else:
        data["sandbox"] = path_as_text(run.sandbox)
        data["protected"] = [item.to_dict() for item in run.protected]
        data["scratch"] = run.scratch
        if run.sandbox_identity is not None:
            data["sandbox_identity"] = list(run.sandbox_identity)
    data["pid_namespace"] = _pid_namespace()
    data["own_pid_namespace"] = _own_pid_namespace(pid)
    data[_INIT] = _namespace_init()  # `_running_here`
    if (booted := _boot_id()) is not None:
        data[_BOOT] = booted  # `_running_here`
        if (began := _boot_began_once()) is not None:
            data[_BOOT_BEGAN] = began  # `_began_before`
    return data


def _own_pid_namespace(pid: int | str) -> int | None:
    """The PID namespace process `pid` lives in (its own, which no call changes: `unshare`
    and `setns` move only the children it starts next), or None where this process may not
    read it (another user's process, one of an enclosing user namespace)."""
    link = f"{_PROC}/{pid}/ns/pid"  # its text, ``pid:[N]``, is what `Path` would spell
    try:
        shown, number = os.readlink(link), os.stat(link).st_ino  # noqa: PTH115, PTH116
    except OSError:
        return None
    # Read twice, by its link's text (``pid:[N]``) and by the inode its `stat` gives, and
    # known only where both agree: a `stat` a tracer made succeed without filling anything
    # in (``strace -e inject=newfstatat:retval=0 -P /proc/<pid>/ns/pid``) gave the run's
    # process another namespace, its entry was passed over as another process's, and a
    # child given production's settings alone purged a stopped production root (red team
    # 60 on the children of tests). Unknown, an entry counts (`_of_another`).
    return number if shown == f"pid:[{number}]" else None


def _of_another(pid: int, data: dict[str, Any]) -> bool:
    """Whether entry `data`, found at the name of process `pid` (its pid and start time),
    is another process's: one of another PID namespace that has the same pid there and
    started in the same clock tick.

    Pids repeat from namespace to namespace, and a namespace's first processes have the
    same few (1, 2, 3); the start time, in ticks of 10 ms, tells them apart only mostly.
    Two tests that each started a PID namespace in the same tick of a run on three
    workers (``unshare --pid --fork --mount-proc``, one with ``pytest -p no:app`` as its
    pid 1, the other ``strace`` tracing a production-like child) made the child find the
    other's entry at its own pid 1's name, and it was refused as under a pytest without
    the app's plugin (CI of stop 47). Where either namespace cannot be read, or an entry
    predates this field, the entry counts, as before: taking a stranger's entry refuses
    more, never less."""
    recorded = data.get("own_pid_namespace")
    return type(recorded) is int and _elsewhere(recorded, _own_pid_namespace(pid))


def _elsewhere(recorded: object, actual: int | None) -> bool:
    """Whether an entry that says its process lives in PID namespace `recorded` is another
    process's than one that lives in `actual` (`_of_another`): both known, and not the same."""
    return type(recorded) is int and actual is not None and actual != recorded


#: How much of ``sys.argv`` an entry keeps: its first words, each cut at a length. A run
#: given thousands of node ids (a CI tool that shards a suite) wrote an entry longer than any
#: reader reads (`_ENTRY_MAX_BYTES`), and its children, finding no run, purged a stopped
#: production root (red team 47). What reads it needs no more (`_retitled`, `_read_entry`).
_ARGV_WORDS: Final = 64
_ARGV_WORD: Final = 1024


def _recorded_argv(argv: list[str]) -> list[str]:
    """`argv` as an entry keeps it: its first `_ARGV_WORDS` words, each cut at `_ARGV_WORD`."""
    return [word[:_ARGV_WORD] for word in argv[:_ARGV_WORDS]]


def _clear_entry_name(name: str, parent: int) -> None:
    """Move aside a directory a test made at this process's entry name, which the rename of
    a new entry cannot replace: the run could not put its entry back, and every process it
    started afterwards, finding no file to read, was outside the run (red team 39). Moved,
    never deleted: a first version removed it, and a filesystem a test mounted in it (a data
    root bind-mounted there) would have been emptied with it."""
    try:
        found = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISDIR(found.st_mode):
        aside = f".{name}.{os.urandom(4).hex()}.not-an-entry"  # no pid: never read as one
        os.rename(name, aside, src_dir_fd=parent, dst_dir_fd=parent)
        with contextlib.suppress(OSError):
            os.rmdir(aside, dir_fd=parent)  # only if empty


#: A registry entry's temporary file: new, and never through a link planted at its name.
_NEW_ENTRY: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _new_entry_in(parent: int, name: str) -> int:
    """A new entry ``name`` made in the directory of descriptor ``parent``, through
    ``/proc/self/fd/<parent>``: the same directory to the kernel as ``dir_fd=parent``, and
    a path a test run's check of Python's writes can place. ``os.open``'s audit event carries
    no ``dir_fd``, so a relative name is checked against every directory the process holds
    open: a pytest process holding one of a protected root had its own registry entry
    refused (red team 76 on the guard). Without ``/proc``, relative to the descriptor."""
    try:
        return os.open(f"{_PROC}/self/fd/{parent}/{name}", _NEW_ENTRY, 0o644)
    except FileNotFoundError:
        return os.open(name, _NEW_ENTRY, 0o644, dir_fd=parent)
    except OSError as error:
        # Named as the registry's file (a full disk's refusal says where to free space),
        # not as the descriptor's path the call spelled.
        with contextlib.suppress(OSError):
            error.filename = str(Path(f"{_PROC}/self/fd/{parent}").readlink() / name)
        raise


def _open_registry(directory: Path) -> int:
    """A descriptor of the registry `directory`, which this user owns and nobody else may
    write, opened without following a link at its name.

    Raises:
        PermissionError: it is a symbolic link or no directory, another user's, or others
            may write it (named, with the fix).
    """
    try:
        parent = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        msg = f"{directory} is a symbolic link or no directory: {_untrusted(directory)}"
        raise PermissionError(msg) from None
    found = os.fstat(parent)
    if found.st_uid != os.getuid() or found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(parent)
        msg = (
            f"{directory} is not a directory that only user {os.getuid()} may write, so "
            f"another user could fake or hide this user's test runs in it: "
            f"{_untrusted(directory)}"
        )
        raise PermissionError(msg)
    return parent


#: This process's own entries as it wrote them: what `restore_entry` compares with.
_WRITTEN: dict[Path, tuple[tuple[int, int, int] | None, bytes]] = {}


def _entry_state(entry: Path) -> tuple[int, int, int] | None:
    """What tells a rewritten entry apart without reading it: inode, size, modification."""
    try:
        found = entry.stat()
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def _children(pid: int) -> set[int]:
    """The children of `pid`, from ``/proc/<pid>/task/<tid>/children`` of each thread; where
    one of those is not ``/proc``'s (a file bound over it), from the parent each process of
    ``/proc`` names (`_children_by_parent`).

    A test run as root that bound an empty file over its child's ``children`` through the
    run's last hand-over had that child's own child passed over by every walk (no entry);
    once the run and the child had ended, it purged a stopped production root (red team 68
    on regress, rt-regress68d). A file of ``/proc``'s own bound there (another process's
    list) is read as it says (the limit the docs list)."""
    found: set[int] = set()
    proc = None
    with contextlib.suppress(OSError), os.scandir(f"{_PROC}/{pid}/task") as tasks:
        for task in tasks:  # a child is listed under the thread that started it
            with contextlib.suppress(OSError, ValueError):
                fd = os.open(f"{task.path}/children", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    proc = _PROC.stat().st_dev if proc is None else proc
                    if os.fstat(fd).st_dev != proc:
                        return _children_by_parent(pid)
                    chunks = []
                    while chunk := os.read(fd, 65536):
                        chunks.append(chunk)
                finally:
                    os.close(fd)
                found.update(map(int, b"".join(chunks).split()))
    return found


def _children_by_parent(pid: int) -> set[int]:
    """The processes of ``/proc`` whose parent is `pid` (`_descendant_fields`): read where a
    ``children`` file of `pid`'s is not ``/proc``'s (`_children`); every process's ``stat``,
    so not on every walk."""
    found: set[int] = set()
    with contextlib.suppress(OSError), os.scandir(_PROC) as entries:
        for entry in entries:
            if entry.name.isdigit():
                fields = _descendant_fields(int(entry.name))
                if fields is not None and fields[0] == pid:
                    found.add(int(entry.name))
    return found


def _a_run_inside(entry: Path, run: Run, child: int, started: int) -> tuple[str | None, bool]:
    """Whether `entry`, process `child`'s (started at `started`), is that of a run started
    inside `run` (a pytest a test started, still starting or keeping `run`'s protected
    roots): ``"registered"`` for a run that hands on what it started itself, ``"starting"``
    for a pytest that has not registered (still starting, or without the app's plugin for
    good), None for no run's. An entry a test wrote for its daemon (no roots protected, a
    sandbox no run writes, or another PID namespace's) is no run's: the daemon gets `run`'s.
    And whether the check after a test leaves it as it is (`_kept_by_hand_on` while the run
    goes on: a run's handed on too), from the same read."""
    # Handed on by a run is not a run's own: written again at the run's end.
    at_the_end, after_a_test, starting, recorded = _entry_judged(entry, run)
    if _elsewhere(recorded, _namespace_of(child, started)):
        # Its reader takes it for another PID namespace's process's (`_of_another`) and
        # reads none: no run's.
        return None, False
    if not at_the_end:
        return None, after_a_test
    return ("starting" if starting else "registered"), after_a_test


#: What `_entry_judged` found of each entry, by the digest of its bytes and the run's roots.
_JUDGED: dict[tuple[bytes, tuple[Protected, ...]], tuple[bool, bool, bool, object]] = {}


def _entry_judged(entry: Path, run: Run) -> tuple[bool, bool, bool, object]:
    """Whether the hand-over keeps the entry at `entry` as the run ends and after a test
    (`_kept_by_hand_on`; neither where none is there, or it cannot be read), whether it
    says its pytest is starting, and the PID namespace it says its process lives in (to
    compare with the process's own, `_elsewhere`). Read every time, judged again only where
    its bytes are others than any judged: read as its reader reads it, an entry costs some
    25 us to judge (its roots parsed), and the check after each test looks at every process
    a test left running and at the run's long-lived ones (its database, its object store).

    Judged once per what ``stat`` said of the entry (inode, size, mtime and ctime), a test's
    entry for its daemon, judged a run's after a test, then rewritten with bytes of the same
    length that no run writes and its times put back, on a filesystem whose ctime follows
    its mtime (``bindfs --ctime-from-mtime``; a kernel before Linux 6.13 within one clock
    tick), stayed the run's at the run's end: the daemon kept it, and once the run had
    ended, it purged a stopped production root (red team 66 on regress). What it holds is
    what its reader reads, whatever ``stat`` says."""
    import hashlib  # the standard library's; an entry may be up to `_ENTRY_MAX_BYTES`

    try:
        raw = _AS_READ[entry] if entry in _AS_READ else _entry_bytes(entry)
    except OSError:
        return False, False, False, None
    memo = (hashlib.sha256(raw).digest(), run.protected)
    if memo not in _JUDGED:
        if len(_JUDGED) >= 256:
            _JUDGED.clear()
        try:
            data = json_loads(raw)
        except ValueError:
            data = None
        mapping = data if isinstance(data, dict) else {}
        _JUDGED[memo] = (
            _kept_by_hand_on(data, run, while_running=False),
            _kept_by_hand_on(data, run, while_running=True),
            bool(mapping.get("starting")),
            mapping.get("own_pid_namespace"),
        )
    return _JUDGED[memo]


#: Each process's own PID namespace by its pid and start time, where it could be read: no
#: call changes it, and the check after each test looks at the run's long-lived processes.
_NAMESPACES_READ: dict[tuple[int, int], int] = {}


def _namespace_of(pid: int, started: int) -> int | None:
    """`_own_pid_namespace` of process `pid`, started at `started`, read once while known."""
    key = (pid, started)
    if key in _NAMESPACES_READ:
        return _NAMESPACES_READ[key]
    found = _own_pid_namespace(pid)
    if found is not None:
        if len(_NAMESPACES_READ) >= 256:
            _NAMESPACES_READ.clear()
        _NAMESPACES_READ[key] = found
    return found


def _also_at_shutdown(hook: Any) -> None:
    """Run `hook` at interpreter shutdown as well, from where ``concurrent.futures`` runs its
    own (``threading``'s list, called before ``atexit``'s): a test that empties ``atexit``
    (``atexit._clear()``, as tests of exit handlers do) took the run's hand-over away, and a
    daemon it left, acting after the run, purged a stopped root (red team 39). Running the
    hook twice hands nothing on twice."""
    import threading

    register = getattr(threading, "_register_atexit", None)  # private, Python 3.9+
    if register is not None:
        with contextlib.suppress(RuntimeError):  # already shutting down
            register(hook)


def _end_entry() -> None:
    """At exit: hand the run's entry on to the processes that outlive it, and keep it for
    what this process still starts.

    A process a test started that is still running when the run ends (a daemon it
    double-forked, which the run adopted as its subreaper, a child it never waited for, or
    that child's own children) would be re-parented to init once its parent is gone, out of
    the run's tree: with a hand-built environment, it could load production a second later.
    Each gets an entry of its own, with the run's sandbox and protected roots, so it and
    everything it starts stay in the run until it exits (the next run forgets the entry
    then). Only this process's descendants: no walk of all of /proc, so a run ends at the
    cost of one read per thread of each.
    """
    own = own_start()
    if own is None:
        return
    pid, started = own
    run = _in_process()
    if run is not None:
        _hand_on_descendants(run, pid)
        # The entry stays for the rest of the process's life, as its mark on `sys` does:
        # exit hooks Python runs after this one (logging.shutdown, registered when pytest
        # imported logging; a __del__ at shutdown) are still the run's code, and a child they
        # started with a hand-built environment found no run and purged production. The
        # next run forgets the entry once the process is gone (`_forget_dead_runs`). A
        # child left running with the process's own environment, which the plugin gave
        # back the shell's settings, carries the sandbox once its parent is gone.
        if run.pid == pid:  # not a fork of the run's process, which has no entry to keep
            with contextlib.suppress(OSError):
                _publish(run, ended_at=time.time())
        os.environ[SANDBOX_ENV] = str(run.sandbox)
        if run.scratch:
            os.environ[SCRATCH_ENV] = run.scratch
        return
    entry = _entry_at(RUNS_DIR, pid, started)
    with contextlib.suppress(OSError):
        _hand_on_what_was_handed(entry, pid)
    with contextlib.suppress(OSError):
        entry.unlink()


#: The key under which a run's end notes, in the entry of a pytest below it that hands
#: nothing on, the entry it hands on (`_note_handed_on`).
_HANDED_ON: Final = "handed_on"


def _note_handed_on(entry: Path, run: Run, pid: int) -> None:
    """Note in `entry`, that of pytest `pid` below `run` which has not registered (without
    the plugin, or still starting), the entry `run` hands on as it ends: that pytest hands
    it on to what it started since, as it exits (`_hand_on_what_was_handed`).

    The run's end gives what such a pytest started the run's entry; a child it started
    after that, given production's settings alone and waiting for that pytest to be gone,
    had nothing once it was: re-parented out of any run's tree, it purged a stopped
    production root (red team 66 on regress). Written only over the entry as it was read,
    still starting (a pytest that registers meanwhile writes its own, and hands on its
    own)."""
    data = _entry_data(entry)
    if not isinstance(data, dict) or not data.get("starting"):
        return
    noted = data.get(_HANDED_ON)
    if isinstance(noted, dict) and "run_started" not in noted:
        return  # noted at a run's end already; one handed on after a test is written over
    handed = _entry_dict(run, pid)
    handed["outlived"] = _proc_self()
    data[_HANDED_ON] = handed
    parent = _open_registry(entry.parent)
    temporary = f".{os.getpid()}-{os.urandom(6).hex()}.tmp"
    try:
        written = _new_entry_in(parent, temporary)
        try:
            os.write(written, json.dumps(data).encode())
            os.fchmod(written, 0o644)
        finally:
            os.close(written)
        os.replace(temporary, entry.name, src_dir_fd=parent, dst_dir_fd=parent)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=parent)
        os.close(parent)


def _handed_to_this_pytest(pid: int) -> dict[str, Any] | None:
    """What a run handed on to this process (`pid`, a pytest that has not registered) before
    its entry said it is a pytest: the entry in place, where a run's hand-over wrote it
    (``outlived``), or what a run's end noted in it (`_note_handed_on`); carried into the
    entry that replaces it (`_entry_dict`, for `_publish`), for this pytest to hand on as it exits.

    A pytest started as a run ended (a shell a test left that runs ``exec pytest -p no:app``
    once the run is gone, or any nested pytest slower to start than the run to end) was a
    plain descendant at the run's last hand-over and got the run's entry; then its start
    wrote "starting" over it (`announce_start`, `note_without_plugin`), and what the run had
    handed on was gone. A child its test started, given production's settings alone, found
    nothing once that pytest had exited, and purged a stopped production root (red team 66
    on the guard). So did a note written between `announce_start` and `note_without_plugin`."""
    fields = _stat_fields(pid)
    data = _entry_data(_entry_at(RUNS_DIR, pid, fields[1])) if fields is not None else None
    if not isinstance(data, dict):
        return None
    noted = data.get(_HANDED_ON)
    if isinstance(noted, dict):
        return noted
    if "outlived" in data and not data.get("starting"):
        return data
    return None


def _hand_on_what_was_handed(entry: Path, pid: int) -> None:
    """As pytest `pid` (this process, which hands nothing on) exits: hand the entry a run
    above it noted in `entry` as it ended (`_note_handed_on`) on to this process's
    descendants, as that run's end did to those it found."""
    data = _entry_data(entry)
    handed = data.get(_HANDED_ON) if isinstance(data, dict) else None
    if not isinstance(handed, dict):
        return
    run = _read_entry(entry, pid, 1, data=handed)
    # Not while that run goes on (one handed on after a test, carried by `_entry_dict`): what
    # this pytest started is re-parented to it, and its own end hands it on.
    if run is not None and run.ended is not None:
        _hand_on_descendants(run, pid, ended_by=run.ended)


def _end_of_run() -> None:
    """atexit's hand-over, the run's last: where a thread the run never joined still runs
    (a daemon thread a test left), first make the kernel refuse every new process in this
    process (`app.noforks`), then hand on what started before.

    Such a thread ran on after the hand-over until the interpreter finalised, and a child it
    started then, given production's settings alone, was re-parented out of the run once
    the run's process was gone, found nothing of the run, and purged a stopped production
    root (red team 64 on the children of tests). With the main thread alone (most runs),
    nothing is refused: a child of a later exit hook (``logging.shutdown``) stays as it was,
    in the run while the process lives (red team 28).
    """
    own = own_start()
    run = _in_process()
    try:
        if own is not None and run is not None and run.pid == own[0]:
            with contextlib.suppress(OSError):
                threads = Path("/proc/self/task").iterdir()
                if next(itertools.islice(threads, 1, None), None) is not None:
                    _seal(run.pid)
    finally:  # the hand-over, whatever the seal met (a test's audit hook that raises)
        _end_entry()


def _seal(pid: int) -> None:
    """Refuse every new process in this process (run `pid`'s, a thread besides this one
    still running), and say why in the refusal; where the kernel could not, say that.

    The kernel's refusal alone said ``PermissionError: [Errno 1] Operation not permitted``,
    naming neither the run, nor the thread, nor what to do (red team 64 on regress, the
    seal); and where the filter could not be installed (a thread with a filter of its own,
    another machine), the run went on unsealed without a word.
    """
    from app.noforks import explain_refusals, refuse_new_processes

    running = _other_threads()
    failed = refuse_new_processes()
    if failed is None:
        explain_refusals(
            f"app: pytest run {pid} has ended and a thread it left still runs ({running}): "
            "its process refuses every new process and program from its last hand-over on, "
            "so that nothing a test left starts one outside the run; start it before the run "
            "ends (join or stop that thread in the test or fixture that started it, or do an "
            "exit hook's work in a fixture's teardown)"
        )
        return
    line = (
        f"app: pytest run {pid} could not refuse new processes as it ended ({failed}) with a "
        f"thread it left still running ({running}): a process that thread starts from now on "
        "is not held by the run; join or stop that thread in the test or fixture that "
        "started it\n"
    )
    with contextlib.suppress(OSError):
        os.write(2, line.encode())


def _other_threads() -> str:
    """The threads of this process besides the calling one, in words: Python's by name,
    the others (a C library's) counted."""
    import threading

    me = threading.current_thread()
    named = [repr(t.name) for t in threading.enumerate() if t is not me]
    with contextlib.suppress(OSError):
        native = sum(1 for _ in Path("/proc/self/task").iterdir()) - 1 - len(named)
        if native > 0:
            named.append(f"{native} not started by Python")
    return ", ".join(named) or "none by now"


#: How many callbacks ``atexit`` held once the run registered `_end_of_run` (the count
#: never drops but by ``atexit._clear()``, on the Pythons whose ``unregister`` leaves a slot).
_ATEXIT_HELD: list[int] = []


def _atexit_count() -> int:
    count = getattr(atexit, "_ncallbacks", None)  # private, CPython
    return int(count()) if count is not None else 0


def _at_threads_shutdown() -> None:
    """threading's shutdown hook (before ``atexit``'s): hand on, and put the run's last
    hand-over back into ``atexit`` if a test emptied it.

    A test that ran ``atexit._clear()`` (as tests of exit handlers do) took `_end_of_run`
    away, seal and all, and a daemon thread's child started after this hand-over escaped
    the run (red team 64 on the children of tests). ``atexit`` holding fewer callbacks than
    it did once the run registered says so; where it did not, nothing moves (a second
    `_end_of_run` would run before the test's own exit hooks, and seal them).
    """
    _end_entry()
    if _ATEXIT_HELD and _atexit_count() < _ATEXIT_HELD[0]:
        atexit.register(_end_of_run)


#: How many times, at most, the run's last hand-over walks its descendants (`_hand_on_descendants`).
_END_WALKS: Final = 8


def _hand_on_descendants(
    run: Run, pid: int, *, while_running: bool = False, ended_by: int | None = None
) -> None:
    """Give each descendant of `pid` (this process) an entry of its own, `run`'s, unless it
    is a run of its own; `while_running`: only those without a run's entry yet (`hand_on`,
    `_kept_by_hand_on`); `ended_by`: `run`'s pytest, which has ended (`_publish`).

    As the run ends, walked again until a walk in which no process it saw exited (at most
    `_END_WALKS` walks): a walk reads each process's children once, and a process that
    exits after its parent's list was read and before its own is re-parents its children
    to the nearest subreaper above it (the run's process), whose list was read first. A
    descendant that waited for the run's last hand-over to write an entry, then started a
    child and exited at once, left that child outside every list the walk read: it got no
    entry, and once the run had ended, given production's settings alone, it purged a
    stopped production root (red team 67 on the guard). A walk in which nothing exited saw
    the tree as it was; one that hands on nothing new costs one read of each process's
    state more. After a test (`while_running`) one walk, as before: the next test's looks
    again.

    A walk that saw no exit does not prove the tree whole: a process that exits and is
    reaped by its parent between the read of its grandparent's list and its parent's is in
    neither, and its children, re-parented to the run's process, are in no list the walk
    read either. A descendant that did so once the run's last hand-over had written its
    sibling's entry (its parent reaping it while the walk wrote a hundred other entries)
    left its child outside the run, and once the run had ended, that child purged a stopped
    production root (stop 53's CI, on the test of red team 67 on the guard). So a walk ends
    the hand-over only when it saw no exit it did not know of and the same live processes
    as the walk before it (one that the walk before saw and this one did not may have
    started a child since, and left it to the run's process): at least two walks, the
    second writing nothing.

    Nor did two such walks: a process that a survivor started once the first walk had read
    the survivor's children, and that started a child, then exited and was reaped by that
    survivor after the second walk had read the run's children and before it read the
    survivor's, was in neither walk; both saw the same processes and no exit, and its
    child, re-parented to the run's process after its list was read, got no entry: once
    the run had ended, it purged a stopped production root (red team 68 on the run's end).
    So the walk that would end the hand-over is checked too (`_settled`): each list it
    read is read again, in the reverse order (a process's own after its children's, the
    run's process last), and a child none of its walk saw means another walk.

    Nor are pids enough to compare: a test run as root that gave the process it left to
    the run's process the pid of one the walk had seen exit meanwhile (``ns_last_pid``,
    ``clone3``'s ``set_tid``) had it taken for that one, alive, in the list read again,
    and once the run had ended, it purged a stopped production root (red team 68 on the
    run's end). A process is alive to the hand-over while its pid has the start time the
    walk read.

    Nor are pids enough in the lists read again: a test run as root that left a child
    ended and unreaped (a zombie: an exit each walk sees, and knows), reaped it as the
    second walk went on, and gave its pid to a process that it left to the run's process
    had that one taken for the zombie in the run's list read again, and once the run had
    ended, it purged a stopped production root (red team 68 on regress). A child in a list
    read again is one the walk saw only where its pid has the start time the walk read."""
    handed: set[tuple[int, int]] = set()
    if while_running:
        _hand_on_walk(run, pid, handed, while_running=True, ended_by=ended_by)
        return
    dead: set[int] = set()
    before: set[int] | None = None
    for _ in range(_END_WALKS):
        seen, read = _hand_on_walk(run, pid, handed, while_running=False, ended_by=ended_by)
        # Gone before the walk came to it (reaped by its parent), or exited since (its pid
        # another process's now, or none's).
        exited = {child for child, started in seen.items() if child < 0 or _exited(child, started)}
        alive = {child for child in seen if child > 0} - exited
        if exited <= dead and alive == before and _settled(read, seen):
            return
        dead |= exited
        before = alive


def _settled(read: list[int], seen: dict[int, int]) -> bool:
    """Whether the children of each process in `read` (whose lists a walk read, in that
    order), read again now in the reverse order, are all processes of `seen` (that walk's).

    A process that exits leaves its children to the nearest subreaper above it (the run's
    process, or a descendant that made itself one): where it was still listed as its
    parent's child when that list is read again, it is a process the walk never saw (born
    after the walk had read that list), and where it was not, it had exited before that
    read, so that its children were in its subreaper's list, read later, whatever the
    walk had read before. A child born after the list of its parent was read again is one
    a survivor started once the last hand-over had walked past it: left as such (the
    limit the docs list). Each child's start time is read again too: one at the pid of a
    process the walk saw exit is another (red team 68 on regress). One whose start time
    cannot be read again is not known to be the one the walk saw: taken for it, a process
    at a zombie's pid that exited once the run's list was read (its child left to that
    list, read already), or whose ``/proc/<pid>/stat`` a test as root had mounted over,
    got no entry, nor did its child (red team 68 on regress, rt-regress68c)."""
    for parent in reversed(read):
        for child in _children(parent):
            if child not in seen:
                return False
            fields = _descendant_fields(child)
            if fields is None or fields[1] != seen[child]:
                # Another process, at the pid of one the walk saw exit; or one whose start
                # time cannot be read again (gone since its parent's list was read, its
                # children left to a list read already): not told apart, another walk.
                return False
    return True


def _descendant_fields(pid: int) -> tuple[int, int] | None:
    """`_stat_fields` of a descendant the run's hand-over walks; where its ``stat`` is not
    its own (a file bound over it: `_MISSHOWN`), its main thread's, which is the same.

    A test run as root that bound a copy of its child's ``stat`` over ``/proc/<pid>/stat``
    through the run's last hand-over had that child passed over by every walk (no start
    time, so no entry, and its children unread); once the run had ended, the child
    unmounted it and purged a stopped production root (red team 68 on regress,
    rt-regress68c). One whose whole entry of ``/proc`` is mounted over is read as before
    (the limit the docs list)."""
    found = _starts_unhidden(pid)
    return (found[0], found[1][0]) if found is not None else None


def _starts_unhidden(pid: int) -> tuple[int, tuple[int, ...]] | None:
    """`process_starts` of `pid`; where its ``stat`` is not its own (`_MISSHOWN`), its main
    thread's (`_descendant_fields`). Read so by the hand-over that writes an entry by that
    start time, and by `_forget_dead_runs`, which tells by it whether the entry's process
    lives: read by `process_starts` alone, a run that started in the same mount namespace once the
    run had ended removed the entry the run's end had written for a child whose ``stat`` a
    test had mounted over, and the child, unmounting it, purged a stopped production root
    (red team 68 on regress, rt-regress68d)."""
    found = process_starts(pid)
    if found is not None or pid not in _MISSHOWN:
        return found
    try:
        raw = _proc_bytes(pid, f"task/{pid}/stat", misshown=True)
    except OSError:
        return None
    return _starts_in(raw) if raw.startswith(b"%d (" % pid) else None


def _hand_on_walk(
    run: Run,
    pid: int,
    handed: set[tuple[int, int]],
    *,
    while_running: bool,
    ended_by: int | None,
) -> tuple[dict[int, int], list[int]]:
    """One walk of `_hand_on_descendants`: the descendants of `pid` it saw (each written an
    entry, unless in `handed` by an earlier walk of the same hand-over, which it adds to),
    with the start time it read of each, and, negated (with 0), those listed as a child that
    were gone before it came to them; and the processes whose children it read, in the
    order it read them (`_settled`)."""
    # Every descendant, not only the children: a supervisor's worker kept the run only
    # through its supervisor, and when that exited after the run, it was re-parented to
    # init, out of any run.
    pending, seen, read = list(_children(pid)), {pid: 0}, [pid]
    while pending:
        child = pending.pop()
        if child in seen:
            continue
        fields = _descendant_fields(child)
        if fields is None:
            seen[-child] = 0
            continue
        seen[child] = fields[1]
        if (child, fields[1]) in handed:
            pending.extend(_children(child))
            read.append(child)
            continue
        entry = _entry_at(RUNS_DIR, child, fields[1])
        # A pytest a test started (a head start on the next case, left running) says what
        # it is in the registry, with the plugin or without it, from its start (`_a_run_inside`);
        # its command line says nothing more. Read by it, a process that only looked like
        # one (a dev server's script with a self-test that calls pytest.main) was skipped,
        # and once a later test had killed the run, it purged a stopped root given
        # production's settings alone (red team 46); so was a fork of the run's own process
        # (red team 43).
        inside, kept_after_a_test = _a_run_inside(entry, run, child, fields[1])
        if inside == "registered":
            # A run of its own (an xdist worker still exiting, a pytest with the plugin a
            # test started): its entry stays as it wrote it, and what it started is its
            # own to hand on.
            continue
        if inside == "starting":
            # Its entry stays as it wrote it, but a pytest without the plugin hands nothing
            # on, ever, and one still starting nothing yet: a child that a nested `pytest
            # -p no:app` left running (given production's settings alone, waiting for that
            # pytest to be gone) was passed over with it, and once the run and that pytest
            # had ended, it purged a stopped production root (red team 65). As the run ends,
            # what it started gets this run's entry, as any other descendant does (a run
            # inside that registers later writes its own over it as it ends). Not after each
            # test: while the run goes on, such a pytest's children are its own, and are
            # refused as under a pytest without the plugin (stop 51's CI named the outer run
            # instead).
            if not while_running:
                pending.extend(_children(child))
                read.append(child)
                with contextlib.suppress(OSError):
                    _note_handed_on(entry, run, child)
            continue
        if not (while_running and kept_after_a_test):
            with contextlib.suppress(OSError):
                _publish(run, outlived=child, while_running=while_running, ended_by=ended_by)
        handed.add((child, fields[1]))
        pending.extend(_children(child))
        read.append(child)
    del seen[pid]
    return seen, read


def hand_on(run: Run) -> None:
    """After each test, in the run's own process: give each process the test left running
    an entry of its own, as the run's exit does (`_end_entry`).

    A run killed (``SIGKILL``, ``SIGTERM``) or ended by a test's ``os._exit`` runs no exit
    hook: a daemon an earlier test left, given production's settings alone, was
    re-parented out of the run's tree once the run was gone and purged a stopped
    production root (red team 41). Handed on now, it stays in the run after that. Only
    what has no run's entry yet is written (an entry a test wrote by hand for its daemon is
    written over, red team 65 on regress): a test leaves few processes, and each entry is
    read once.
    """
    own = own_start()
    pid = own[0] if own is not None else None
    runs: list[Run] | None = getattr(sys, _MARKER, None)
    # Only the process's outermost run: a test's daemon handed on by a run nested in it
    # (pytester's `runpytest_inprocess`) would be confined to the nested run's sandbox, and
    # so would a server the outer run had started, whose root lies outside it.
    if pid is None or run.pid != pid or not runs or len(runs) != 1:
        return
    if _childless():
        return  # most tests: nothing left running, and no /proc to read
    _hand_on_descendants(runs[0], pid, while_running=True)


#: Linux's ``__WALL``: `waitid` considers every child, one made by ``clone`` with another
#: exit signal too (accepted by `waitid` since Linux 4.7; Python names it only for waitpid).
_WALL: Final = 0x40000000


def _childless() -> bool:
    """Whether this process has no child at all, running or exited (a subreaper's adopted
    ones included): one system call that reaps and changes nothing, against a read of
    ``/proc/<pid>/task/<tid>/children`` for each of its threads. The check after every
    test (`hand_on`) cost 34 us a call with it, twice a test. Where it cannot tell (an
    older kernel refusing ``__WALL``), False: the children are read."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT | _WALL)
    except ChildProcessError:
        return True
    except OSError:
        return False
    return False


def _own_entry() -> Path | None:
    own = own_start()
    return _entry_at(RUNS_DIR, *own) if own is not None else None


def announce_start() -> None:
    """Say in the registry that this process is a pytest run that is starting: what its
    children start before the plugin's first hook registers the run is then refused as
    under a pytest without the plugin, not let through as outside any run.

    The app's plugin calls this as pytest imports it: a plugin imported after it
    (``PYTEST_PLUGINS``, a conftest's) and every plugin's hooks run later, and a tryfirst
    ``pytest_load_initial_conftests`` of a plugin registered after the app's runs before
    the app's (pluggy calls the last registered first). Only where pytest runs in this
    process and no run marks it yet; `register` writes the run's entry over it.

    Not over a run's entry of this very process (its pid and start time): a test that
    ran pytest in its own place (``os.execv``, a runner's ``exec``) is still that run's
    process, and the new pytest is a run inside it. Written over, then withdrawn by an
    inactive plugin, the entry was gone: the new pytest emptied a ``--basetemp`` holding a
    stopped production root, and its tests' children purged production (red team 29).
    """
    if _in_process() is not None or not _runs_pytest():
        return
    if _own_run_entry():
        return
    with contextlib.suppress(OSError):
        _publish(None, _own_runs_dir())  # a registry it cannot use: `register` says so
        # Ended before it registered (a `-p` plugin's `SystemExit`): what it started once a
        # run above it had ended gets what that run noted (`_note_handed_on`).
        _at_exit_kept(_end_never_registered)


def _at_exit_kept(hook: Callable[[], None]) -> None:
    """Register `hook`, the exit hook of a pytest that hands nothing on of its own (without
    the plugin, or not registered yet), in ``atexit``, and keep it there: at interpreter
    shutdown (threading's hooks, before ``atexit``'s), hand on what a run noted for this
    pytest now, and put `hook` back into ``atexit`` if a test emptied it.

    A test of a nested ``pytest -p no:app`` that ran ``atexit._clear()`` (as tests of exit
    handlers do) took the hook away: what the run above had noted for that pytest
    (`_note_handed_on`) was never handed on, and its child, given production's settings
    alone, purged a stopped production root once that pytest had exited (red team 66 on the
    guard), as the run's own hand-over once did (red team 39, `_at_threads_shutdown`)."""
    atexit.register(hook)
    held = _atexit_count()

    def at_threads_shutdown() -> None:
        own = own_start()
        if own is not None and _in_process() is None:
            with contextlib.suppress(OSError):
                _hand_on_what_was_handed(_entry_at(RUNS_DIR, *own), own[0])
        if _atexit_count() < held:
            atexit.register(hook)

    _also_at_shutdown(at_threads_shutdown)


def _end_never_registered() -> None:
    """At exit of a pytest that announced its start (`announce_start`) and never registered
    a run: `_hand_on_what_was_handed`. Nothing where it registered one (its own hand-over
    ran: `_end_of_run`)."""
    own = own_start()
    if own is None or _in_process() is not None:
        return
    with contextlib.suppress(OSError):
        _hand_on_what_was_handed(_entry_at(RUNS_DIR, *own), own[0])


def _own_run_entry() -> bool:
    """Whether this process has a run's entry of its own: its run's, from before it ran
    pytest in its own place (``exec``), which stays. Not one a run handed on to it as it
    started (`hand_on` read a pytest still starting as a process a test left), which the
    pytest's own entry replaces, as its command line once did."""
    entry = _own_entry()
    data = _entry_data(entry) if entry is not None else None
    return data is not None and not data.get("starting") and "outlived" not in data


def note_without_plugin() -> None:
    """Say in the registry that this process's pytest runs without the app's plugin for
    good (switched off, autoload off, or loaded and inactive): its children are then refused
    as under such a pytest, not told to wait for a sandbox that never comes
    (`announce_start`), and not left to find pytest in its command line.

    Written where nothing announced the run too (its command line shows pytest): a test can
    rewrite its process's command line, as ``setproctitle`` does (a worker's code under
    test names its process), and a child it then started with production's settings alone
    found no pytest above it and purged a stopped production root (red team 46). Never over
    a run's entry of this very process (a run that ran pytest in its place, ``exec``).
    """
    if _in_process() is not None or not _runs_pytest() or _own_run_entry():
        return
    with contextlib.suppress(OSError):
        _publish(None, _own_runs_dir(), without_plugin=True)
        if not _REMOVED_AT_EXIT:
            # Gone with the process: in another PID namespace, no later run could tell it
            # dead, and it would stay in the registry for good.
            _REMOVED_AT_EXIT.append(True)
            _at_exit_kept(_end_entry)


#: Whether `note_without_plugin` registered the removal of its entry at exit already.
_REMOVED_AT_EXIT: list[bool] = []


def register(
    sandbox: Path,
    protected: Iterable[Protected],
    *,
    replacing: Run | None = None,
    scratch: str = "",
    enclosing_joined: bool = False,
) -> Run:
    """Mark this process, and every process it starts, as part of a run on ``sandbox``.

    The marker stays for the life of the process (see :func:`unregister` for nested runs);
    the registry entry stays until the process has exited, and a later run forgets it then.

    Args:
        sandbox: the run's sandbox.
        protected: the roots the run must never open.
        replacing: this process's run to narrow (an xdist worker learns its own sandbox late).
        scratch: the suffix of the run's scratch databases and prefixes (`scratch_suffix`).
        enclosing_joined: `protected` holds the roots of the run this one starts in already,
            as the caller found it just before (the plugin: `current_run` walks the
            process's ancestors, and a second walk cost about 4 M instructions of every
            run's start, `bench/README.md`, "perf-startup65").

    Raises:
        PermissionError: the registry directory may be written by another user.
    """
    protected = tuple(protected)
    if replacing is None and not enclosing_joined:
        # A run started inside another keeps the roots that one protects (the plugin adds
        # them too): its children are told apart from a test's own entry by them
        # (`_within_enclosing`).
        with contextlib.suppress(SandboxViolationError):
            enclosing = current_run()
            if enclosing is not None:
                protected = _joined(protected, enclosing.protected)
    run = Run(
        sandbox,
        _proc_self() or os.getpid(),
        protected,
        scratch=scratch,
        sandbox_identity=identity(sandbox),
    )
    runs: list[Run] = getattr(sys, _MARKER, None) or []
    if replacing is not None and runs and runs[-1] is replacing:
        runs[-1] = run
    else:
        if not runs:  # the first run of this process
            _REGISTERED_IN[:] = [_view("self")]
            _forget_dead_runs(_own_runs_dir())
            _become_subreaper()
            atexit.register(_end_of_run)
            _ATEXIT_HELD[:] = [_atexit_count()]
            _also_at_shutdown(_at_threads_shutdown)
        elif not _published_here():
            # A fork of a run's process that starts a run in itself (pytester's in line): its
            # first entry is the one it anchors (`_anchor`), which its later entries must
            # keep within. That was the nested run's, and once it ended, the enclosing run's
            # entry put back (`unregister`) was wider than it: the fork's children were held
            # to the ended run's sandbox and refused the test's own root (red team 63 on
            # regress, forks). The fork's first entry is now the run it belongs to.
            with contextlib.suppress(OSError):
                _publish(runs[-1])
        runs.append(run)
    setattr(sys, _MARKER, runs)
    _publish(run)
    _keep_open()
    return run


def _published_here() -> bool:
    """Whether this process has written an entry of its own (a fork has not: its parent's
    entries are named for the parent's pid); True where it cannot tell (no /proc)."""
    pid = _proc_self()
    fields = _stat_fields(pid) if pid is not None else None
    return fields is None or (str(RUNS_DIR), pid, fields[1]) in _NAMED


#: The descriptor of its registry this process keeps open while it is a run (`_keep_open`).
_KEPT_OPEN: dict[str, int] = {}

#: What a run's sealed copy of its own entry is named (`_keep_copy`), before the entry's name.
_COPY_NAME: Final = "app-run-entry:"
#: The seals that make a copy one nobody changes, the run's own process included.
_SEALS: Final = sum(
    getattr(fcntl, name, 0)
    for name in ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE")
)


def _keep_copy(name: str, text: bytes) -> int | None:
    """Keep `text`, what this process has just written as its run's entry `name`, in a
    sealed anonymous file (``memfd_create``, sealed against every write) that it keeps open,
    and return the descriptor of the copy it replaces (None where there is none).

    A test shares its run's process and user, so it may rewrite the run's entry, and the
    run's check after the test (`restore_entry`) put it back only then. Meanwhile the run's
    children read what the test wrote: an entry that claims another PID namespace (which no
    namespace has) was passed over as another process's, and under a runner script that
    calls pytest through another module (found by its entry alone) a child given
    production's settings alone purged a stopped production root; other fields made other
    refusals that named wrong causes ("a pytest without the app's plugin", a run "which has
    ended" to be killed, another sandbox). Nothing, the test included, changes a sealed
    copy's bytes: the run's children read it through ``/proc/<pid>/fd`` and take it over an
    entry that says something else (`_entry_changed`)."""
    create = getattr(os, "memfd_create", None)
    if create is None or not _SEALS:
        return None  # not Linux: the entry alone, as before
    try:
        fd = create(_COPY_NAME + name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return None
    try:
        view = memoryview(text)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError:
        os.close(fd)
        return None
    if name not in _ANCHORS_TRIED:  # the first, as the run registers (a fork's is its own)
        _ANCHORS_TRIED.add(name)
        _anchor(name, text)
    old = _KEPT_OPEN.pop("copy", None)
    _KEPT_OPEN["copy"] = fd
    return old if old is not None and _is_copy(old) else None


#: The entries this process has tried to anchor a copy of (`_anchor`), by name.
_ANCHORS_TRIED: set[str] = set()
#: The descriptor of its anchored copy this process keeps (`_anchor`), through which its
#: children read it without tracing the run; a test that closes it leaves the mapping.
_ANCHOR_KEPT: list[int] = []
#: What a run's anchored copy of its entry is named (`_anchor`), before the entry's name:
#: not a copy's name, which a child that finds nothing else takes for the run's entry
#: (`_entry_held_open`).
_ANCHOR_NAME: Final = "app-run-anchor:"


def _anchor(name: str, text: bytes) -> None:
    """Keep `text`, the run's first entry `name`, in a sealed anonymous file of its own
    (`_ANCHOR_NAME`), mapped read only at `_anchor_address` and sealed there in place
    (``mseal``) for the life of the process, and keep a descriptor of it (`_ANCHOR_KEPT`).

    Nothing unmaps, moves or replaces a sealed mapping, the process that made it included,
    so a test can close every descriptor the run keeps and put a copy of its own making
    anywhere else, never at that address: a child reads the address in
    ``/proc/<pid>/maps`` and takes the entry only where it keeps within that copy
    (`_anchored`). Made once, as the run registers, before any test runs; where this kernel
    cannot seal a mapping, or the address is taken, there is none, as before."""
    if not _seals_in_place():
        return
    with contextlib.suppress(Exception):
        _Long, mmap, munmap, syscall, _ = _libc_calls()
        fd = os.memfd_create(_ANCHOR_NAME + name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            address, size = _anchor_address(name), len(text)
            shared_fixed_noreplace = 0x01 | 0x100000  # MAP_SHARED | MAP_FIXED_NOREPLACE
            placed = mmap(_Long(address), _Long(size), 1, shared_fixed_noreplace, fd, _Long(0))
            if placed != address:
                if placed != -1:  # a kernel before 4.17 takes the address as a hint
                    munmap(_Long(placed), _Long(size))
                return
            if syscall(_Long(462), _Long(address), _Long(size), _Long(0)) != 0:  # mseal
                munmap(_Long(address), _Long(size))
                return
            _ANCHOR_KEPT.append(fd)
            _ANCHORED_AT[:] = [address, size]
            if not _FORK_HOOKED:
                _FORK_HOOKED.append(True)
                os.register_at_fork(before=_anchor_forks)
        finally:
            if fd not in _ANCHOR_KEPT:
                os.close(fd)


#: Where this process's own anchored copy lies (`_anchor`): its address and size.
_ANCHORED_AT: list[int] = []
#: Whether `_anchor_forks` runs before each fork of this process (registered once).
_FORK_HOOKED: list[bool] = []
#: ``madvise``'s advice that undoes what a test may do to a sealed shared mapping: ``mseal``
#: refuses munmap, mremap, mprotect and a mapping over it, but lets any process mark a
#: file-backed mapping ``MADV_DONTFORK`` (a fork then maps nothing there) or put guard pages
#: on it (``MADV_GUARD_INSTALL``, Linux 6.13: every read of it faults).
_MADV_DOFORK: Final = 11
_MADV_GUARD_REMOVE: Final = 103


def _libc_calls() -> tuple[Any, Any, Any, Any, Any]:
    """The C long type and libc's ``mmap``, ``munmap``, ``syscall`` and ``madvise``, through
    ``_ctypes`` alone (importing `ctypes`, its forty C types, cost more than the rest)."""
    if not _LIBC:
        import _ctypes

        class _Long(_ctypes._SimpleCData):  # type: ignore[type-arg]
            _type_ = "l"

        names = ("mmap", "munmap", "syscall", "madvise")
        _LIBC.append(_Long)
        _LIBC.extend(libc.function(name, _Long) for name in names)
    return tuple(_LIBC)


_LIBC: list[Any] = []


def _undo_advice(address: int, size: int) -> None:
    """Take back from this process's mapping at `address` a ``MADV_DONTFORK`` and guard
    pages (`_MADV_DOFORK`); a kernel without guard pages says EINVAL, which is fine."""
    with contextlib.suppress(Exception):
        _Long, _, _, _, madvise = _libc_calls()
        for advice in (_MADV_DOFORK, _MADV_GUARD_REMOVE):
            madvise(_Long(address), _Long(size), advice)


def _anchor_forks() -> None:
    """Before each fork of a process that anchored a copy (``os.register_at_fork``): the
    fork inherits it, readable. A test that marked the run's anchored copy
    ``MADV_DONTFORK``, then forked, had a fork that mapped nothing of the run; once the run
    had ended, its mark deleted, its handed-on entry removed and pytest's modules forgotten,
    it found no run and purged a stopped production root (red team 63 on regress, forks)."""
    if _ANCHORED_AT:
        _undo_advice(*_ANCHORED_AT)


def keeps_sealed_copy() -> bool:
    """Whether this process keeps a sealed copy of its run's entry (`_keep_copy`), which its
    children read where a test changed the entry (its own, or one an earlier copy of this
    module made before a test reloaded it)."""
    own, entry = _proc_self(), _own_entry()
    return own is not None and entry is not None and bool(_sealed_copies(own, entry.name))


def _is_copy(fd: int) -> bool:
    """Whether this process's descriptor `fd` is a sealed copy of an entry (never close one
    a test opened at the number of a copy it closed)."""
    try:
        target = str((_PROC / "self" / "fd" / str(fd)).readlink())
    except OSError:
        return False
    return target.startswith(f"/memfd:{_COPY_NAME}")


def _keep_open() -> None:
    """Keep descriptors of the registry and of this run's entry open for the rest of the
    process's life, where its children find the entry through ``/proc/<pid>/fd`` when a
    path no longer leads there (`_entry_held_open`); open them again where a test closed
    them (code that daemonises in the test's process closes every descriptor), or where
    either was made again."""
    entry = _own_entry()
    kept = (
        ("registry", RUNS_DIR, getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY),
        ("entry", entry, os.O_RDONLY | os.O_NONBLOCK),
    )
    for key, path, flags in kept:
        if path is None:
            continue
        fd = _KEPT_OPEN.pop(key, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), path.stat()):
                    _KEPT_OPEN[key] = fd
                    continue
            with contextlib.suppress(OSError):
                held = str((_PROC / "self" / "fd" / str(fd)).readlink())
                if Path(held.removesuffix(" (deleted)")).name == path.name:
                    os.close(fd)  # only ours, never a descriptor a test opened at its number
        with contextlib.suppress(OSError):
            if key == "entry" and not stat.S_ISREG(path.lstat().st_mode):
                continue  # a FIFO or a device a test put there: never opened
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
            if key == "entry" and not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)  # put there in between
                continue
            _KEPT_OPEN[key] = fd
    copy = _KEPT_OPEN.get("copy")
    if entry is not None and entry in _WRITTEN and (copy is None or not _is_copy(copy)):
        # Closed by a test (code that daemonises closes every descriptor): made again from
        # what this process wrote.
        _KEPT_OPEN.pop("copy", None)
        _keep_copy(entry.name, _WRITTEN[entry][1])


#: The mount namespace this process registered its run in (`register`), which a test may
#: move it out of (`restore_entry` says so).
_REGISTERED_IN: list[_View | None] = []


def restore_entry(run: Run) -> str | None:
    """Put this process's registry entry back as `run` if it is gone, or if its directory
    is gone or writable by others (which makes every entry in it ignored); say which.

    A test that cleans up ``/tmp/app-*``, or its run's entry, took the processes its run
    starts afterwards out of the run; one that rewrites the entry gave them another sandbox
    and other protected roots. The plugin calls this after each test: the test that did it
    is named, and the next one runs guarded again. When nothing is wrong: an ``lstat`` of
    the registry, an ``lstat`` and a ``stat`` of the entry, and a look for access control
    lists on each (a read more for an entry only touched).
    """
    own = own_start()
    if own is None:
        return None
    pid, started = own
    _keep_open()
    try:
        found = os.lstat(RUNS_DIR)
    except OSError:
        problem = f"the registry {RUNS_DIR} was removed"
        now = _view("self")
        if _REGISTERED_IN and _REGISTERED_IN[0] is not None and now is not None:
            # Not removed: out of sight, behind a mount, in a namespace or a root directory
            # the test gave this process.
            was = _REGISTERED_IN[0]
            how = (
                "moved this process into a mount namespace of its own (unshare) whose /tmp "
                "is another directory"
                if was.namespace != now.namespace
                else "gave this process another /tmp (it chroot-ed it, or mounted another "
                "filesystem on /tmp)"
            )
            if was != now:
                problem = f"the registry {RUNS_DIR} is out of this process's sight: a test {how}"
    else:
        if _trusted(found, os.getuid()):  # the lstat just made
            in_entry = _entry_problem(found, pid, started, run)
            if in_entry is None:
                return None
            problem = in_entry
        elif found.st_uid == os.getuid() and stat.S_ISDIR(found.st_mode):
            mode = stat.filemode(found.st_mode)
            problem = f"the registry {RUNS_DIR} was made writable by others ({mode})"
            with contextlib.suppress(OSError):
                RUNS_DIR.chmod(0o755)
        elif found.st_uid == os.getuid():
            problem = _remove_planted_registry(found)
        else:
            return f"the registry {RUNS_DIR} was replaced: {_untrusted()}"
    try:
        _publish(run, _own_runs_dir())
    except OSError as error:
        return f"{problem}, and it cannot be put back: {error}"
    _keep_open()
    return (
        f"{problem}; one was written for it"
        if "goes on in process" in problem
        else (f"{problem}; it was put back")
    )


def _entry_at(directory: Path, pid: int, started: int) -> Path:
    """The entry of process `pid` (this one, or a child it hands its run on to) in
    `directory`: where `_publish` wrote it, else where it would (`_name_to_write`)."""
    # Kept once written: after every test (`restore_entry`), joining the path cost as much
    # as a stat.
    known = _NAMED.get((str(directory), pid, started))
    if known is not None:
        return known
    entry = directory / _entry_name(pid, started)
    namespace = _own_pid_namespace(pid)
    if namespace is not None:
        data = _entry_data(entry)
        beside = directory / _entry_name(pid, started, namespace)
        if (data is not None and _of_another(pid, data)) or (data is None and beside.is_file()):
            return beside
    return entry


#: What `restore_entry` says where the run goes on in a fork of its registered process: a test
#: daemonised it (a fork, then ``os._exit`` in the parent, as a daemon library does). Nothing
#: was removed; it said so, and that a test must not change the registry (red team 63).
_CARRIED_ON: Final = (
    "this run goes on in process {pid}, a fork of its registered process (pytest pid {run}) "
    "whose parent exited: the test daemonised the run's own process, and the fork had no "
    "entry of its own in {registry}"
)


def _entry_problem(found: os.stat_result, pid: int, started: int, run: Run) -> str | None:
    """What a test did to this process's entry in a trusted registry (`found`), if anything
    its children would read otherwise than the run wrote it."""
    entry = _entry_at(RUNS_DIR, pid, started)
    hidden = _hidden_from_children(found, entry)
    if hidden is not None:
        return hidden
    state = _entry_state(entry)
    if state is None and run.pid is not None and run.pid != pid:
        return _CARRIED_ON.format(pid=pid, run=run.pid, registry=RUNS_DIR)
    if state is None:
        return f"this run's entry in {RUNS_DIR} was removed"
    written, text = _WRITTEN.get(entry, (None, b""))
    if state == written or not _rewritten(entry, text, run, pid):
        return None
    if (kind := _not_a_file(entry)) is not None:
        return (
            f"this run's entry in {RUNS_DIR} was replaced by {kind}, which its children "
            "cannot read as one"
        )
    return (
        f"this run's entry in {RUNS_DIR} was changed (the sandbox and the protected roots "
        "that its children read there)"
    )


def _not_a_file(entry: Path) -> str | None:
    """What is at `entry`'s name if it is no regular file nor a link (a test's), for a
    message; None otherwise."""
    try:
        mode = entry.lstat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a FIFO" if stat.S_ISFIFO(mode) else "a special file"


#: What every reader needs of the registry (list and enter it) and of an entry (read it).
_READ_BY_ALL: Final = 0o555
_ENTRY_READ_BY_ALL: Final = 0o444


def _hidden_from_children(found: os.stat_result, entry: Path) -> str | None:
    """Whether a test made the registry, or this run's entry, unreadable to the processes
    the run starts, and so put the registry right; say what it was.

    Such a registry is still this user's and written by no one else, so it stayed trusted,
    and the run's own process still reached its entry through the directory's search bit:
    a test's ``chmod 0311`` of the registry (or ``chmod 0600`` of the entry) went unseen,
    and every process the run started afterwards, unable to list or read it, was outside
    the run (red team 39: a later test's child, given a hand-built environment under a
    runner script, purged a stopped production root).
    """
    if found.st_mode & _READ_BY_ALL != _READ_BY_ALL:
        with contextlib.suppress(OSError):
            RUNS_DIR.chmod(0o755)
        return (
            f"the registry {RUNS_DIR} was made unreadable to the processes the run starts "
            f"({stat.filemode(found.st_mode)})"
        )
    if _drop_acl(RUNS_DIR):
        return (
            f"the registry {RUNS_DIR} was given an access control list, which can hide it "
            "from the processes the run starts as another user (now removed)"
        )
    try:
        mode = entry.lstat().st_mode
    except OSError:
        return None  # gone: said as such by the caller
    if mode & _ENTRY_READ_BY_ALL != _ENTRY_READ_BY_ALL:
        how = stat.filemode(mode)
    elif _drop_acl(entry):
        how = "an access control list"
    else:
        return None
    return (
        f"this run's entry in {RUNS_DIR} was made unreadable to the processes the run "
        f"starts ({how})"
    )


#: Where Linux keeps POSIX access control lists (a directory's default one is given to
#: every file made in it): either can deny a user what the mode shows.
_ACLS: Final = ("system.posix_acl_access", "system.posix_acl_default")


def _drop_acl(path: Path) -> bool:
    """Remove the access control lists a test put on `path` (`setfacl -m u:app:---`, or
    ``os.setxattr``): the mode still said readable by all, and a child the run started as
    that user could not list the registry (red team 39). Whether there was one."""
    try:
        found = [name for name in os.listxattr(path, follow_symlinks=False) if name in _ACLS]
        for name in found:
            os.removexattr(path, name, follow_symlinks=False)
    except OSError:  # no extended attributes here, or not ours to change
        return False
    return bool(found)


def _remove_planted_registry(found: os.stat_result) -> str:
    """Remove this user's link or file at the registry's name (a test's), the name only,
    never what it leads to, so that the registry can be made again; say what it was.

    A symbolic link there to a production root's ``sessions/`` took the run's entry as the
    run ended (red team 35); entries are now written only into the directory itself
    (`_open_registry`), and the run's later children need the registry back.
    """
    said = "a file"
    if stat.S_ISLNK(found.st_mode):
        with contextlib.suppress(OSError):
            said = f"a symbolic link to {os.readlink(RUNS_DIR)}"  # noqa: PTH115 - str in, out
    try:
        RUNS_DIR.unlink()
    except OSError as error:
        return f"the registry {RUNS_DIR} was replaced by {said}, which cannot be removed ({error})"
    return f"the registry {RUNS_DIR} was replaced by {said} (the name removed, never its target)"


def _rewritten(entry: Path, text: bytes, run: Run, pid: int) -> bool:
    """Whether `entry` now says something else to the run's children than `run` does.

    Touched, or copied back as it was, is not rewritten. Without the bytes this copy of the
    module wrote (`importlib.reload(app.sandbox)` empties `_WRITTEN`), the entry is compared
    with what `run` would write: a reload used to end this check for the rest of the run,
    and a later test's rewrite (a sandbox of the settings directory, no protected roots)
    stayed, unreported, for every process the run started after it (red team 36).
    """
    try:
        found = _entry_bytes(entry)
    except OSError:
        return True
    if text:
        return found != text
    try:
        data = json_loads(found)
    except ValueError:
        return True
    expected = json.loads(json.dumps(_entry_dict(run, pid)))
    # The command line is the process's own to change (a test that sets sys.argv): it only
    # tells a pytest that exec'd another program from one that did not (`_read_entry`).
    ignored = {"argv": None, "argv_cut": None}
    if not isinstance(data, dict):
        return True
    # When the boot began is read from two clocks once per copy of the module
    # (`_boot_began_once`): a reload reads them again, some microseconds apart, or more if the
    # wall clock was slewed meanwhile. Within a second it is the same boot (an entry taken
    # for an earlier boot's must say one more than `_BOOTS_APART` earlier).
    began, wanted = data.get(_BOOT_BEGAN), expected.get(_BOOT_BEGAN)
    if type(began) is int and type(wanted) is int and abs(began - wanted) < _BOOT_BEGAN_SLACK:
        ignored[_BOOT_BEGAN] = None
    return {**data, **ignored} != {**expected, **ignored}


#: How far a reloaded module's `_boot_began` may be from the one its entry records and still
#: be the same reading of the same boot (`_rewritten`), in nanoseconds.
_BOOT_BEGAN_SLACK: Final = 10**9


def unregister(run: Run) -> None:
    """End a run nested in this process (an in-process ``pytester.runpytest``).

    The outermost run stays marked until the process exits: code that runs after pytest
    (``atexit`` handlers registered after it started) is still part of it.
    """
    runs: list[Run] = getattr(sys, _MARKER, None) or []
    if len(runs) > 1 and runs[-1] is run:
        runs.pop()
        with contextlib.suppress(OSError):
            _publish(runs[-1])


def swap(current: Run, new: Run) -> None:
    """Put ``new`` in place of this process's ``current`` run (a test's ``app_profile``
    mark allows more profiles for the test's duration; the same sandbox, either way)."""
    runs: list[Run] = getattr(sys, _MARKER, None) or []
    if runs and runs[-1] is current:
        runs[-1] = new


def allowing(run: Run, profiles: Iterable[str]) -> Run:
    """``run``, also allowing ``profiles`` (their roots mapped into the same sandbox)."""
    return run._replace(allowed=frozenset(profiles))


# --- checking a root ----------------------------------------------------------------------


def _run_to_check(run: Run | None) -> Run | None:
    """The run a check of a root, a database or a prefix applies: the caller's `run`, else
    `current_run`'s; where that says none, the run this process's mark or its process tree
    names, read again without `context`.

    `context` is one function that a test can replace (``monkeypatch.setattr(app.sandbox,
    "context", ...)``, as a unit test of what the app does outside tests would): with it
    replaced, `load` took production's settings, no check applied, and the test purged a
    stopped production root (red team 33). What the checks rest on is the mark on `sys`
    and the registry read through ``/proc``, not that function: only the environment's
    narrowing of the sandbox is `context`'s alone. The tree is walked again only where one
    of the two was replaced: a walk outside any run costs 1 to 3 ms (a second one doubled
    `check_root` there), and unreplaced they read it already.
    """
    if run is not None:
        return run
    found = current_run()
    if found is not None:
        return found
    found = _in_process()
    if found is None and (context is not _CONTEXT or current_run is not _CURRENT_RUN):
        found = _walk_tree()[0]
    if found is None:
        return None
    replaced = (
        f"{found.recognised_by}; the app's own answer to which run this process is in "
        "(app.sandbox.context, current_run) said none, so a test replaced it (monkeypatch, "
        "mock.patch), which keeps no data root out of a test's reach"
    )
    return found._replace(recognised_by=replaced)


# The root a `checked` block has just checked, in this thread (or task) only.
_CHECKED: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "app_sandbox_checked", default=None
)
# And what it resolved to (`checked_as`), where it was checked (a run's process).
_RESOLVED: contextvars.ContextVar[tuple[Path, Path] | None] = contextvars.ContextVar(
    "app_sandbox_checked_as", default=None
)


@contextlib.contextmanager
def checked(path: Path, what: str, run: Run | None = None) -> Iterator[None]:
    """:func:`check_root` ``path``; inside the block, further checks of that path pass.

    For a caller that checks a root and then hands the same path to code that checks it
    again for callers who use it directly (``open_root``, then ``RootLock.acquire`` and
    ``DataRoot``): the check resolves the path and stats its ancestors, about a tenth of
    a millisecond, and a fresh test root paid it three times. Only code running in this
    thread (or task) inside the block, on an equal path, is spared.
    """
    resolved = check_root(path, what, run)
    token = _CHECKED.set(path)
    found = _RESOLVED.set(None if resolved is None else (path, resolved))
    try:
        yield
    finally:
        _RESOLVED.reset(found)
        _CHECKED.reset(token)


def checked_as(path: Path) -> Path | None:
    """`path` resolved, as the :func:`checked` block this thread (or task) is in for it
    resolved it to check it; None outside one, or where nothing was checked (no run).

    For code in the block that looks at the path before anything is made on it (an open's
    look for a loop of links and at the mounts on its way): each resolved it again, seven
    lookups and a path object a time (issue 11). What is opened is checked again after the
    lock is taken (``check_root(..., again=True)``), resolved afresh."""
    found = _RESOLVED.get()
    return found[1] if found is not None and found[0] == path else None


def just_checked(path: Path) -> bool:
    """Whether this thread (or task) is inside a :func:`checked` block for ``path``: what
    is checked there once (by `check_root`, and `app.dataroot`'s own checks of the path) is
    not checked again by the code the block calls."""
    return _CHECKED.get() == path


def check_root(
    path: Path, what: str, run: Run | None = None, *, again: bool = False
) -> Path | None:
    """Refuse ``path`` if this process belongs to a run and ``path`` is not the run's to open.

    Refused: a path that resolves outside the sandbox; a path inside it that is one of the
    run's protected roots (or lies in one, or contains one) under another name.

    Args:
        path: the data root about to be opened.
        what: what the caller is about to do, for the message ("open data root").
        run: the run, if the caller already has it.
        again: check even inside a :func:`checked` block for ``path`` (the path may lead
            elsewhere since: a directory on it replaced by a link).

    Returns:
        `path` resolved, as it was checked; None where nothing was checked (no run, or
        inside a `checked` block for it): a caller that goes on with the same path looks it
        up once (`app.dataroot._refuse_swapped_while_opening`).

    Raises:
        SandboxViolationError: naming the path, the protected root and the fix.
    """
    if not again and _CHECKED.get() == path:
        return None  # inside a `checked` block for this path: checked a moment ago
    run = _run_to_check(run)
    if run is None:
        return None
    # The path as it will be opened: the code that opens it never expands `~`, so a check
    # that did approved `~/..` with $HOME in the sandbox, and then opened ./~/.. (the
    # current directory, production's root after a chdir).
    sandbox = run.sandbox
    try:
        resolved = path.resolve()
    except PermissionError as e:
        # /proc/<another user's pid>/root/...: a PermissionError traceback (red team 61).
        raise SandboxViolationError(
            f"{what} {path}, which passes through {e.filename}, a link of another user's "
            "process (or of one that is not dumpable) that this process may not follow, so "
            "it names no directory of the test sandbox (this process belongs to the test "
            f"run through {run.recognised_by})",
            sandbox,
            "Tests may only touch data under the sandbox: use the app_config, app_store or "
            f"app_live_server fixtures, or a path under tmp_path{_left_over(run)}",
        ) from None
    except OSError as e:
        # A link of /proc of a process that has ended (a zombie's cwd or root: ENOENT), a
        # traceback (red team 61 on regress).
        raise SandboxViolationError(
            f"{what} {path}, which passes through {e.filename}, a link that names nothing now "
            f"({e.strerror}: a link of /proc of a process that has ended), so it names no "
            f"directory of the test sandbox (this process belongs to the test run through "
            f"{run.recognised_by})",
            sandbox,
            "Tests may only touch data under the sandbox: use the app_config, app_store or "
            f"app_live_server fixtures, or a path under tmp_path{_left_over(run)}",
        ) from None
    except RuntimeError:
        # A loop of symbolic links on its way: "RuntimeError: Symlink loop", a traceback
        # from every open of such a root in a test (red team 61 on regress).
        from app.config_files import loop_at

        loop = loop_at(os.path.realpath(path)) or "a link on its way"
        raise SandboxViolationError(
            f"{what} {path}, which passes through {loop}, a symbolic link that leads back to "
            "itself through a loop of links, so it names no directory of the test sandbox "
            f"(this process belongs to the test run through {run.recognised_by})",
            sandbox,
            "Tests may only touch data under the sandbox: point the link at a directory "
            "under tmp_path, or use the app_config, app_store or app_live_server fixtures"
            f"{_left_over(run)}",
        ) from None
    if not inside(resolved, sandbox):
        raise SandboxViolationError(
            f"{what} {resolved}, which lies outside the test sandbox (this process belongs "
            f"to the test run through {run.recognised_by})",
            sandbox,
            "Tests may only touch data under the sandbox: use the app_config, app_store or "
            f"app_live_server fixtures, or a path under tmp_path{_left_over(run)}",
        )
    if run.protected:
        _refuse_same_directory(resolved, sandbox, run.protected, what)
    return resolved


def _refuse_same_directory(
    resolved: Path, sandbox: Path, protected: Iterable[Protected], what: str
) -> None:
    """Refuse `resolved` (in `sandbox`) where it is, lies in or holds one of `protected` by
    device and inode (a bind mount or a link of a real root)."""
    # The path and its existing ancestors inside the sandbox, by identity.
    # (Counted rather than tested with is_relative_to, which costs ~20 us a parent here.)
    depth = len(resolved.parts) - len(sandbox.parts)
    # The path's own identity looked up once, for the set and for the ancestors' test.
    own = identity(resolved)
    seen = {ident for p in resolved.parents[:depth] if (ident := identity(p)) is not None}
    if own is not None:
        seen.add(own)
    for item in protected:
        if seen & item.identities or (own is not None and own in item.ancestors):
            raise SandboxViolationError(
                f"{what} {resolved}: it is another path to the data root of profile "
                f"{item.profile!r} ({item.path}), or lies in it or holds it (same device and "
                "inode, through a bind mount or link)",
                sandbox,
                "Tests get data roots of their own under tmp_path; never mount or link a "
                "real data root into the sandbox",
            )


def check_shown_from(path: Path, source: Path, what: str, run: Run | None = None) -> None:
    """Refuse `path` where a mount on its way shows it from `source` (`dataroot.bound_from`:
    a bind mount of a directory, or an overlay whose writes land there) in or above a root
    the run protects.

    An overlay keeps no device or inode of what it shows, so the check by identity in
    `check_root` missed production's root seen through one mounted over the sandbox's
    ``data/`` (``upperdir=<settings>/data``, in a mount namespace of a test's child): a test
    that opted into production purged the real root, which its stamp said was production's
    (red team 44). Only the roots the run protects count: the sandbox itself may lie on a
    bind mount (a CI's ``/tmp``), seen from elsewhere too.
    """
    run = _run_to_check(run)
    if run is None:
        return
    for item in run.protected:
        for root in item.paths_now():
            if not (source.is_relative_to(root) or root.is_relative_to(source)):
                continue
            raise SandboxViolationError(
                f"{what} {path}: it is {source}, seen through a mount (`findmnt -T {path}`), "
                f"and that is, lies in or holds the data root of profile {item.profile!r} "
                f"({root}{_spelled_since(item, root)})",
                run.sandbox,
                "Tests get data roots of their own under tmp_path; never mount a real data "
                "root, or the directory that holds it, into the sandbox",
            )
    # The directory it is, by identity: an overlay's upper directory named through a link
    # or a bind mount of the root is the root under another path (red team 50).
    chain = [source, *source.parents]
    seen = {ident for p in chain if (ident := identity(p)) is not None}
    own = identity(source)
    for item in run.protected:
        if seen & item.identities or (own is not None and own in item.ancestors):
            raise SandboxViolationError(
                f"{what} {path}: it is {source}, seen through a mount (`findmnt -T {path}`), "
                f"which is, lies in or holds the data root of profile {item.profile!r} "
                f"({item.path}) under another path (same device and inode)",
                run.sandbox,
                "Tests get data roots of their own under tmp_path; never mount a real data "
                "root, or the directory that holds it, into the sandbox",
            )
    # Then by identity, as each root is now: a directory mounted on a root's way since the
    # run began (a deploy that binds a release over `current`, a disk attached above it)
    # put another directory at its path, and the mount shows it from a path of its own
    # (red team 48). Only here, where a mount is on the way: nothing else leads into the
    # sandbox from outside (a link resolves out of it).
    now = [Protected.of(item.profile, root) for item in run.protected for root in item.paths_now()]
    _refuse_same_directory(path.resolve(), run.sandbox, now, what)


def check_same_filesystem(path: Path, what: str, run: Run | None = None) -> None:
    """Refuse `path` (absolute, resolved) where it, or a directory above it in the sandbox,
    is a root the run protects on the same filesystem mounted again through another device.

    A disk image's filesystem mounted through a second loop device (``losetup -f --show
    <image>``, then ``mount``) is a second superblock of the same filesystem: its device
    number is another, so the check by device and inode passed, and a test that opted
    into production purged the real root through it, past a live server's flock too
    (red team 50). The filesystem's id (``statfs``'s ``f_fsid``, from an ext4 or XFS
    volume's UUID) is the same through either device; with the inode number it names the
    directory. Only where the device differs from the root's: on the same device the check
    by device and inode holds.
    """
    run = _run_to_check(run)
    if run is None or not run.protected:
        return
    resolved = path  # resolved by the caller (`app.dataroot`)
    if not inside(resolved, run.sandbox):
        return
    depth = len(resolved.parts) - len(run.sandbox.parts)
    chain = []
    for directory in (resolved, *resolved.parents[:depth]):
        with contextlib.suppress(OSError):
            chain.append((directory, os.stat(directory)))  # noqa: PTH116 - st_dev and st_ino
    for item in run.protected:
        for root in item.paths_now():
            try:
                found = os.stat(root)  # noqa: PTH116 - as above
                fsid = None
            except OSError:
                continue
            for directory, seen in chain:
                if seen.st_dev == found.st_dev or seen.st_ino != found.st_ino:
                    continue
                if fsid is None:
                    fsid = os.statvfs(root).f_fsid
                with contextlib.suppress(OSError):
                    if os.statvfs(directory).f_fsid != fsid:
                        continue
                    raise SandboxViolationError(
                        f"{what} {path}: it is the data root of profile {item.profile!r} "
                        f"({root}), its filesystem mounted again through another device "
                        f"({directory} is device {os.major(seen.st_dev)}:"
                        f"{os.minor(seen.st_dev)}, the root {os.major(found.st_dev)}:"
                        f"{os.minor(found.st_dev)}; one filesystem id and inode: a second "
                        "loop device of its disk image, say)",
                        run.sandbox,
                        f"Unmount it (`umount $(findmnt -n -o TARGET -T {directory})`, then "
                        "`losetup -d` the device); tests get data roots of their own under "
                        "tmp_path. Never mount a mounted filesystem a second time: its two "
                        "mounts overwrite each other's writes",
                    )


def check_served(path: Path, point: Path, kind: str, what: str, run: Run | None = None) -> None:
    """Refuse `path` where it lies on a `kind` filesystem mounted at `point` in the sandbox,
    that this machine does not keep itself (`app.dataroot.served_from`: FUSE, NFS, SMB).

    pytest makes the sandbox afresh for each run, so such a mount in it was made by a test,
    and what it shows may be any directory, a data root the run protects too: neither its
    device and inodes nor the mount table say which (bindfs showed a live production root
    in ``tmp_path``, and a test that opted into production purged it; red team 49). A
    mount above the sandbox is refused only where the sandbox is not the directory the run
    made (`Run.sandbox_identity`): a machine may keep all of ``/tmp`` on one.
    """
    run = _run_to_check(run)
    if run is None:
        return
    if not point.is_relative_to(run.sandbox):
        if run.sandbox.is_relative_to(point) and run.sandbox_identity not in (
            None,
            identity(run.sandbox),
        ):
            # Mounted above the sandbox since the run made it: a tree arranged to put a
            # data root at the sandbox's path (bindfs over /tmp/pytest-of-<user>, in a
            # child's mount namespace) was purged as the sandbox's (red team 49).
            raise SandboxViolationError(
                f"{what} {path}: the sandbox is not the directory the run made: a "
                f"filesystem of type {kind} mounted at {point} since shows another in its "
                f"place, {served_by(kind)}, a data root of another profile or of a live "
                "server maybe",
                run.sandbox,
                f"Unmount it (`fusermount -u {point}`, or `umount {point}`); tests get data "
                "roots of their own under tmp_path",
            )
        return
    raise SandboxViolationError(
        f"{what} {path}: it lies on a filesystem of type {kind} mounted at {point}, in the "
        f"sandbox, {served_by(kind)}: it may show any directory, the data root of another "
        "profile or of a live server too, and nothing here says which",
        run.sandbox,
        f"Tests get data roots of their own under tmp_path, on the sandbox's own filesystem: "
        f"unmount it (`fusermount -u {point}`, or `umount {point}`) and copy what the test "
        "needs into tmp_path instead",
    )


def served_by(kind: str) -> str:
    """Why nothing says what a filesystem of type `kind` that `dataroot.served_from`
    reported shows, for a refusal: a daemon or another machine serves it, or an overlay
    writes into an upper directory its mount does not name for certain."""
    if kind == "overlay":
        return (
            "whose upper directory, where its writes land, the mount table names as the "
            "mount was given it (a relative path, or a link), which does not lead there now"
        )
    return "whose files a daemon or another machine serves (bindfs, sshfs, NFS)"


def _spelled_since(item: Protected, root: Path) -> str:
    # Where a link on the way has led elsewhere since the run began.
    if root == item.path or item.spelled is None:
        return ""
    return f", where {item.spelled} leads now; it was {item.path} as the run began"


def _left_over(run: Run) -> str:
    # Known only from the environment: a shell, terminal multiplexer or daemon started by a
    # test keeps the variable after the run, and everything started from it inherits it.
    if run.ended is not None:
        return (
            f". This process outlived the test run that started it (pytest pid {run.ended}) "
            f"and stays under its rules while it runs: if no test needs it, stop it "
            f"(kill {run.pid})"
        )
    if run.pid is not None:
        return ""
    return (
        f". If this process runs no test, unset {SANDBOX_ENV}: it was inherited from a test "
        "run (a shell, terminal multiplexer or daemon started by a test keeps it)"
    )


# --- loading a profile ----------------------------------------------------------------------


def check_profile(profile: str, storage: str, source: str, where: Context) -> None:
    """Refuse to load `profile` (its `storage`, ``data root /x`` or ``database ...``, from
    `source`) where tests forbid it: under pytest only ``testing``, or a profile the current
    test opted into.

    Raises:
        SandboxViolationError: naming the profile, how the run was recognised, and the fix.
    """
    if where.bare is not None:
        without = where.bare
        if profile != "testing" and where.runner == "unittest":
            raise SandboxViolationError(
                f"loading profile {profile!r} {without}",
                None,
                f"Run the tests with pytest instead ({_UNDER_PYTEST}; to test profile "
                f"{profile!r} there, mark the test @pytest.mark.app_profile({profile!r})), "
                "or load the testing profile (ENV_FOR_DYNACONF=testing)",
                runner="unittest",
            )
        if profile != "testing" and where.fix:
            raise SandboxViolationError(
                f"loading profile {profile!r} {without}", None, where.fix, runner=where.runner
            )
        if profile != "testing":
            plugin = f"the app's pytest plugin: {why_no_plugin()}"
            raise SandboxViolationError(
                f"loading profile {profile!r} {without}",
                None,
                # pytest imported, or its variable set: maybe no test runs here at all
                f"If it runs tests, run them with {plugin}; {where.remedy}"
                if where.remedy
                else f"Run the tests with {plugin}",
            )
        override = shell_override(source)
        if override is not None:
            # Without the plugin nothing neutralised the shell, nor this machine's local
            # settings files: its APP_DATA_ROOT, or a `[testing] data_root` in
            # settings.local.toml, may well be real data (a conftest that forces
            # ENV_FOR_DYNACONF=testing, as dynaconf's docs suggest, does not change that).
            remote = storage.startswith(_REMOTE_KEYS_SHOWN)
            key = storage.partition(" ")[0] if remote else "data_root"
            if override.startswith("APP_"):
                neutralises = f"neutralises the shell's {override}"
                undo = f"unset {override}"
            else:
                neutralises = f"leaves {override} out"
                undo = f"remove it from {override}"
            fix = (
                f"Run the tests with the app's pytest plugin, which {neutralises} "
                f"({why_no_plugin()}), or set {key} in [testing] of settings.toml and {undo}"
                if where.runner != "unittest"
                else f"Run the tests with pytest instead, whose app plugin {neutralises} "
                f"({_UNDER_PYTEST}), or set {key} in [testing] of settings.toml and {undo}"
            )
            if where.fix:
                fix = f"{where.fix}; or set {key} in [testing] of settings.toml and {undo}"
            elif where.remedy:
                fix = f"If it runs tests: {fix[0].lower()}{fix[1:]}; {where.remedy}"
            raise SandboxViolationError(
                f"{storage} from {source} {without}", None, fix, runner=where.runner
            )
    run = where.run
    if run is None:
        return
    if profile != "testing" and profile not in allowed_profiles(run):
        raise SandboxViolationError(
            f"loading profile {profile!r}; tests run on the 'testing' profile (this process "
            f"belongs to the test run through {run.recognised_by})",
            run.sandbox,
            f"To test another profile, mark the test @pytest.mark.app_profile({profile!r}); "
            f"its data root is then mapped into the sandbox{_opt_in_lost()}"
            f"{_left_over(run)}",
        )


def check_given_profile(
    profile: str,
    storage: str,
    what: str,
    *,
    made: str = "from a configuration made or changed in code rather than loaded",
) -> None:
    """Refuse to `what` (``open data root``) the `storage` of `profile` other than
    ``testing`` under a pytest without the app's plugin (or under unittest), whatever made the
    configuration: `load` refuses such a profile there, but a ``Config`` changed in code
    (``dataclasses.replace(load("testing"), data_root=..., profile="production")``) reached
    ``open_storage``, ``DataRoot`` and ``RootLock`` unchecked, and a test's child given a
    hand-built environment purged production's root so (red team 58). Inside a run of the
    plugin `check_root` refuses what lies outside its sandbox; outside any run nothing is
    refused (one walk of the process tree, only for a profile other than testing).

    Raises:
        SandboxViolationError: naming what was refused, the pytest (or unittest) without the
            plugin, and the fix.
    """
    if profile == "testing":
        return
    where = context()
    if where.bare is None:
        return
    try:
        check_profile(profile, storage, "a configuration made in code", where)
    except SandboxViolationError as refused:
        raise SandboxViolationError(
            f"{what} {storage} of profile {profile!r}, {made}, {where.bare}",
            refused.sandbox,
            f"{refused.fix}. A test reaches another profile's root by marking the test "
            f"@pytest.mark.app_profile({profile!r}) under the app's plugin, never by a "
            "changed configuration",
            runner=refused.runner,
        ) from None


def _opt_in_lost() -> str:
    # A child a marked test gave a hand-built environment (`env={"PATH": ...}`) lost the
    # opt-in with it, and was told to mark a test that was marked (red team 57 on the
    # session's fixes). One that inherited the run's environment (its sandbox's variable)
    # has the opt-in there if the test made one.
    if marked() or ALLOW_PROFILES_ENV in os.environ or SANDBOX_ENV in os.environ:
        return ""
    return (
        f". If the test is marked already: its opt-in reaches the processes it starts in "
        f"{ALLOW_PROFILES_ENV}, which the environment of this process lacks (one built by "
        f"hand); pass it on (env={{**os.environ, ...}}, or {ALLOW_PROFILES_ENV} from "
        "os.environ)"
    )


#: What running unittest's tests with pytest gives them.
_UNDER_PYTEST: Final = (
    "`python -m pytest <the same test files>` runs unittest's TestCases too, in a sandbox of "
    "the app's plugin"
)

#: How `check_profile`'s `storage` names a remote profile's values.
_REMOTE_KEYS_SHOWN: Final = ("database_url ", "blob_url ")


def shell_override(source: str) -> str | None:
    """The environment variable or local settings file a value came from (`source`, as
    ``Config.sources`` names it), if the pytest plugin neutralises it in a run; else None.

    Both are this machine's or this shell's, not the project's, so they may name real data:
    a pytest run without the plugin is refused a testing root or database from either.
    """
    from app.config_files import LOCAL_FILES

    if source.startswith("environment "):
        return source.removeprefix("environment ")
    name = source.partition(" [")[0]
    return name if name in LOCAL_FILES else None


def confine(profile: str, root: Path, source: str, sandbox: Path) -> tuple[Path, str]:
    """A profile's data root (and its source) as a test run sees it: inside the sandbox.

    A root from the settings files moves to ``<sandbox>/data/<profile>``; a root from
    ``APP_DATA_ROOT`` outside the sandbox is refused instead, because a test set it on purpose
    and deserves to hear why it does not apply.

    Raises:
        SandboxViolationError: `root` came from the environment and lies outside `sandbox`.
    """
    if inside(root, sandbox):
        return root, source
    if source.startswith("environment"):
        raise SandboxViolationError(
            f"data root {root} from {source}, which lies outside the test sandbox",
            sandbox,
            "Point APP_DATA_ROOT under tmp_path, or use the app_config fixture",
        )
    return sandbox_root(sandbox, profile), f"pytest sandbox (configured: {root}, {source})"


_REMOTE_KEYS: Final = {"database_url": "database", "blob_url": "object prefix"}


def _is_scratch(key: str, value: str, suffix: str) -> bool:
    # A run's suffix covers its xdist workers' (its own and ``_gw<N>``): the controller
    # clears a worker's that crashed (red team 56). A worker's covers its own alone.
    workers = "" if re.search(r"_gw\d+$", suffix) else r"(_gw\d+)?"
    if key == "database_url":
        from app.remote.pg import database_addresses

        ends = re.compile(re.escape(suffix) + workers + r"\Z")
        return all(ends.search(a.dbname) for a in database_addresses(value))
    last = value.rstrip("/").rpartition("/")[2]
    if re.fullmatch(re.escape(suffix.lstrip("_")) + workers, last):
        return True
    return bool(re.search(re.escape(suffix) + workers + r"\Z", last)) and last != suffix


def confine_remote(
    profile: str, key: str, value: str, source: str, run: Run, shown: str
) -> tuple[str, str]:
    """A profile's ``database_url`` or ``blob_url`` (and its source) as a test run sees it:
    the run's scratch database or prefix, named from the configured one with the run's
    suffix. The pytest plugin creates testing's and drops it at the end; nothing else is
    ever opened, so another profile's database or prefix is never reached from a test.

    A value from the environment is kept only if it already is one of the run's scratch
    names; otherwise it is refused, because a test set it on purpose (an exported
    ``APP_DATABASE_URL`` of production is the incident's shape).

    Args:
        shown: `value` as messages may show it (no password).

    Raises:
        SandboxViolationError: the run has no scratch suffix, or the value came from the
            environment and is not the run's.
    """
    what = _REMOTE_KEYS[key]
    if not run.scratch:
        raise SandboxViolationError(
            f"profile {profile!r} uses {key} {shown} (from {source}), and this process "
            f"belongs to a test run ({run.recognised_by}) that named no scratch {what}",
            run.sandbox,
            f"Run the tests with the app's pytest plugin, which creates one per run; do not "
            f"start test processes with a hand-built {SANDBOX_ENV}",
        )
    if _is_scratch(key, value, run.scratch):
        return value, source
    if source.startswith("environment"):
        raise SandboxViolationError(
            f"{key} {shown} from {source}: under pytest, profile {profile!r} uses this "
            f"run's scratch {what} (suffix {run.scratch}), never a configured one",
            run.sandbox,
            f"Unset {source.removeprefix('environment ')}; the app_config fixture, and every "
            "process the test starts, get the scratch one",
        )
    if key == "database_url":
        scratch = scratch_database_url(value, run.scratch)
    else:
        scratch = scratch_blob_url(value, run.scratch, profile)
        problem = scratch_prefix_refusal(value, scratch)
        if problem:
            from app.errors import InvalidSettingError

            raise InvalidSettingError(profile, key, shown, problem, source)
    return scratch, f"pytest scratch {what} (configured: {shown}, {source})"


def scratch_prefix_refusal(configured: str, scratch: str) -> str | None:
    """`app.remote.objects.scratch_prefix_problem`, where `configured` is a prefix at all
    (its own refusal is the configuration's)."""
    from app.errors import InvalidSettingError
    from app.remote.objects import parse_blob_url, scratch_prefix_problem

    try:
        parse_blob_url(configured)
    except InvalidSettingError:
        return None
    return scratch_prefix_problem(configured, scratch)


def check_remote(database_url: str, blob_url: str, what: str, run: Run | None = None) -> None:
    """Refuse a database or object prefix that is not one of this run's scratch ones, if
    this process belongs to a run: what :func:`check_root` is to a data root.

    `app.config.load` already maps every remote profile to the run's scratch names
    (:func:`confine_remote`); this catches what never went through it: a ``Config`` made by
    hand, or by a second copy of the config module, that names a configured database.

    Args:
        database_url: the database about to be opened.
        blob_url: its ``s3://bucket/prefix``.
        what: what the caller is about to do, for the message ("open").
        run: the run, if the caller already has it.

    Raises:
        SandboxViolationError: naming the database or prefix, the run's suffix and the fix.
    """
    run = _run_to_check(run)
    if run is None:
        return
    from app.remote.pg import mask_url

    checks = (
        ("database_url", database_url, f"database {mask_url(database_url)}", "database"),
        ("blob_url", blob_url, f"object prefix {blob_url}", "object prefix"),
    )
    for key, value, shown, kind in checks:
        if run.scratch and _is_scratch(key, value, run.scratch):
            continue
        raise SandboxViolationError(
            f"{what} {shown}, which is not a scratch {kind} of this test run (suffix "
            f"{run.scratch or 'none'}; this process belongs to the run through "
            f"{run.recognised_by})",
            run.sandbox,
            "Tests open only the run's scratch database and prefix, which app.config.load() "
            "gives every remote profile under pytest: use the app_config or app_store "
            f"fixtures, never a Config made by hand with another {key}",
        )


def check_scratch(key: str, value: str, what: str, run: Run | None = None) -> Run | None:
    """Refuse one database (`key` ``"database_url"``) or object prefix (``"blob_url"``) that
    is not one of this run's scratch ones, if this process belongs to a run; the run it
    belongs to (``None``: none).

    :func:`check_remote` for the classes of `app.remote` that a test can build by hand
    (``RemoteStore``, ``pg.Holder``, ``pg.maintenance``, ``ObjectStore``), each of which
    calls this where it connects, so no Config and no seam stands between a test and them.

    Raises:
        SandboxViolationError: naming the database or prefix, the run, and the fix.
    """
    run = _run_to_check(run)
    if run is None or (run.scratch and _is_scratch(key, value, run.scratch)):
        return run
    from app.remote.pg import mask_url

    kind = _REMOTE_KEYS[key]
    shown = mask_url(value) if key == "database_url" else value
    scratch = "scratch_database_url" if key == "database_url" else "scratch_blob_url"
    raise SandboxViolationError(
        f"{what} {kind} {shown}, which is not a scratch {kind} of this test run (suffix "
        f"{run.scratch or 'none'}; this process belongs to the run through "
        f"{run.recognised_by}), so it may be another profile's, production's included",
        run.sandbox,
        f"Tests reach only the run's scratch databases and prefixes: take {key} from the "
        "app_config fixture (app.config.load() names the scratch one); on a throwaway server "
        f"the test started itself, name one with app.sandbox.{scratch}(<that server's "
        "url>, app.sandbox.current_run().scratch)",
    )


def check_scratch_apart(
    overlaps: Callable[[str, str | None], bool], shown: str, what: str, run: Run | None = None
) -> None:
    """Refuse a prefix that `check_scratch` took for the run's (its last segment ends with
    the run's suffix) where it lies in, or holds, another profile's prefix as the settings
    files configure it: ``s3://<bucket>/production/x<suffix>`` passed, and a test wrote
    objects among production's (red team 42's *not stopped* row). Testing's own scratch
    prefixes lie inside testing's prefix; another profile's are beside it, never inside.

    Args:
        overlaps: whether the prefix overlaps a configured ``(blob_url, s3_endpoint_url)``
            (`app.remote.objects` compares locations; this module does not import it).
        shown: the prefix, as messages show it.

    Raises:
        SandboxViolationError: naming the prefix, the profile's prefix and its source.
    """
    run = _run_to_check(run)
    if run is None:
        return
    from app import config
    from app.errors import ConfigError

    try:
        every = config.configured_remote(sandboxed=False)
    except ConfigError:
        return  # no settings to read: no other profile's prefix is known
    for name, values in sorted(every.items()):
        if name == "testing" or "blob_url" not in values:
            continue
        (other, source), endpoint = values["blob_url"], values.get("s3_endpoint_url")
        if overlaps(other, endpoint[0] if endpoint else None):
            raise SandboxViolationError(
                f"{what} object prefix {shown}, which lies in or holds the prefix of profile "
                f"{name!r}, {other} (from {source}): its last segment ends with this run's "
                f"suffix ({run.scratch}), but a run's scratch prefixes lie inside testing's "
                "prefix or beside another profile's, never inside one, where its objects "
                "would lie among that profile's",
                run.sandbox,
                "Tests reach only the run's scratch prefixes: take blob_url from the "
                "app_config fixture (app.config.load() names the scratch one); on a throwaway "
                "server the test started itself, name one with app.sandbox.scratch_blob_url("
                "<that server's url>, app.sandbox.current_run().scratch)",
            )


class LoadRecord(Record):
    """A profile loaded in this process outside any sandbox: who asked, and what they got."""

    profile: str
    #: Where the profile keeps its data, as messages name it: ``data root /srv/app`` or
    #: ``database postgresql://app@db:5432/app`` (never with a password).
    storage: str
    caller: str
    sandbox: Path | None = None


# A diagnostic record, read by nothing that decides a value: the loads made before this
# process's own run marked it, so the pytest plugin can name a load that ran before it did.
_UNSANDBOXED_LOADS: list[LoadRecord] = []


def loaded() -> tuple[LoadRecord, ...]:
    """The loads this process made before its own pytest run marked it (at most 8)."""
    return tuple(_UNSANDBOXED_LOADS)


def record_load(profile: str, storage: str) -> None:
    """Remember a load made before this process's run marked it, with its caller's caller
    (the code that called `app.config.load`)."""
    # Such a load may still be confined by an enclosing run (a pytest started by a test),
    # but not by this process's own run: record it too.
    if not marked() and len(_UNSANDBOXED_LOADS) < 8:
        frame = sys._getframe(2)
        caller = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        _UNSANDBOXED_LOADS.append(LoadRecord(profile, storage, caller))
