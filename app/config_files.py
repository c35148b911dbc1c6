"""The settings files: where they are, what they hold, and which section wins a key.

The layering, lowest to highest, file after file (``settings.toml``, ``settings.local.toml``,
``.secrets.toml``, ``.secrets.local.toml``): ``[default]``, then the profile's own section, then
``[global]``. It is written once, in :func:`layers`; dynaconf's ``environments=True`` layers the
same way, and the test suite compares the two.

Plain values are read straight from the parsed TOML, without importing dynaconf (which costs
more than everything else the pytest plugin does at start-up). Values in dynaconf's own syntax
(``@format``, ``@int``, ``dynaconf_merge``...) are left to dynaconf, in :func:`file_values`.
"""

from __future__ import annotations

import codecs
import copy
import errno
import functools
import itertools
import os
import re
import stat
import threading
import tomllib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from app.errors import (
    SHOWS_AS_NOTHING,
    SettingsAmbiguousError,
    SettingsCastError,
    SettingsDirEmptyError,
    SettingsFileMisnamedError,
    SettingsNameError,
    SettingsNotAFileError,
    SettingsNotFoundError,
    SettingsSyntaxError,
    SettingsUnreadableError,
    VariableMisspeltError,
    folded,
    plain_name,
    shell_word,
)
from app.records import Record

SETTINGS_DIR_ENV = "APP_SETTINGS_DIR"
SETTINGS_FILE = "settings.toml"
SECRETS_FILE = ".secrets.toml"
LOCAL_FILES = ("settings.local.toml", ".secrets.local.toml")
NOT_PROFILES = frozenset({"default", "global", "dynaconf"})
#: The profile whose data always needs a confirmation to remove, whatever its files say.
ALWAYS_PROTECTED = "production"
_PROJECT = Path(__file__).resolve().parent.parent

#: ``{profile: {key: (value, source)}}``, the source naming the file and section.
Values = dict[str, dict[str, tuple[Any, str]]]


#: Names people give the settings directory's variable from other habits.
_SETTINGS_DIR_HABITS = frozenset(
    {"APP_SETTINGS", "APP_SETTINGS_PATH", "APP_SETTINGS_DIRECTORY", "APP_CONFIG_DIR"}
)


def _holds_settings(value: str) -> bool:
    try:
        return bool(value.strip()) and (Path(value).expanduser() / SETTINGS_FILE).is_file()
    except RuntimeError:  # `~user` of a user this system lacks
        return False
    except OSError:  # a directory this user may not search: not known to hold them (red team 59)
        return False


def misspelt(
    environ: Mapping[str, str],
    meant: str,
    habits: Collection[str],
    habit_meant: Callable[[str], bool],
) -> str | None:
    """A variable in `environ` that looks meant as `meant`, which is not set, or None.

    Looks meant: `meant` in another case (``env_for_dynaconf``), a near miss of its name
    (one letter out, swapped or doubled: ``ENV_FOR_DYNACOF``), whatever its value; or one of
    `habits` (names other tools use for the same thing) whose value `habit_meant`. Only names
    of about its length that start or end as it does are compared, so a usual environment
    costs a scan and no ``difflib``.
    """
    for name in sorted(environ):
        upper = name.upper()
        if upper in habits:
            if habit_meant(environ[name]):
                return name
        elif upper == meant:
            return name  # another case of the name itself
        elif abs(len(upper) - len(meant)) <= 2 and (
            upper[:3] == meant[:3] or upper[-4:] == meant[-4:]
        ):
            import difflib  # here: only a near miss pays for it

            if difflib.SequenceMatcher(None, upper, meant).ratio() >= _NEAR_MISS:
                return name
    return None


#: `difflib`'s ratio from which a name is a near miss: one letter left out, added or
#: swapped in a name of 15 letters is about 0.94, and ``FORCE_ENV_FOR_DYNACONF`` (a
#: switch of its own) 0.84.
_NEAR_MISS = 0.85


def _cwd_removed(raw: str, reason: str) -> SettingsNotFoundError:
    """A relative ``APP_SETTINGS_DIR`` read where the current directory was removed (a deploy
    that replaced the release a shell had `cd`'d into): every command blamed the data root's
    filesystem ("failed a call with ENOENT ... mend the filesystem, then `app data check
    --repair`", exit 74), where `cd` back into the directory is what resolves it (red team 61
    on operations)."""
    try:
        gone = str(Path("/proc/self/cwd").readlink()).removesuffix(" (deleted)")
    except OSError:
        gone = ""
    again = f"`cd {shell_word(gone)}`" if gone.startswith("/") else '`cd "$PWD"`'
    return SettingsNotFoundError(
        Path(raw),
        f"{reason}, a relative path, read against the working directory, "
        f"{gone + ', ' if gone.startswith('/') else ''}which was removed while this command "
        f"was in it, a deploy that replaced it perhaps; {again} enters it again if it was "
        "made anew, or "
        f"`export {SETTINGS_DIR_ENV}=/absolute/path` names the settings directory whatever "
        "the current directory is",
    )


def settings_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The settings directory: ``$APP_SETTINGS_DIR``, else the project that holds this package.

    No upward search and no dependence on the current directory.

    Raises:
        SettingsNotFoundError: naming the directory it looked in.
    """
    env = os.environ if environ is None else environ
    raw = env.get(SETTINGS_DIR_ENV)
    if raw is not None and not raw.strip():
        raise SettingsDirEmptyError(SETTINGS_DIR_ENV, _PROJECT)
    if raw is not None:
        reason = f"from {SETTINGS_DIR_ENV}"
        try:
            where = Path(raw).expanduser()
        except RuntimeError:
            # pathlib's bare traceback from every command (red team 36).
            home = raw.split("/", 1)[0]
            raise SettingsNotFoundError(
                Path(raw),
                f"{reason}, whose {home!r} is the home directory of no user this system knows",
            ) from None
        if not where.is_absolute():
            try:
                where = Path.cwd() / where  # an explicit relative path given by the user
            except FileNotFoundError:
                raise _cwd_removed(raw, reason) from None
    else:
        where = _PROJECT
        reason = f"the project directory of the app package; {SETTINGS_DIR_ENV} is not set"
        name = misspelt(env, SETTINGS_DIR_ENV, _SETTINGS_DIR_HABITS, _holds_settings)
        if name is not None:
            raise VariableMisspeltError(
                name,
                env[name],
                SETTINGS_DIR_ENV,
                "names the settings directory",
                f"the settings in {where}",
                f"export {SETTINGS_DIR_ENV}={shell_word(env[name])}; unset {name}",
            )
    # Resolved once for the three looks it had (the link the walk cannot follow, another
    # namespace's link, `Path.resolve`): the same `realpath` of the same path, nothing made
    # between (issue 11).
    where = _refuse_through_proc(where, reason)
    try:
        found = (where / SETTINGS_FILE).is_file()
    except PermissionError:
        raise _unreadable(where / SETTINGS_FILE, where) from None
    if not found:
        _refuse_not_a_file(where / SETTINGS_FILE)
        if where.is_file():  # APP_SETTINGS_DIR=/opt/app/settings.toml: the file, not its directory
            reason += (
                "; that is a file, not a directory: "
                f"`export {SETTINGS_DIR_ENV}={shell_word(str(where.parent))}` names its directory"
                if where.name == SETTINGS_FILE
                else "; that is a file, not a directory"
            )
        else:
            reason += _settings_misnamed(where)
        raise SettingsNotFoundError(where, reason)
    return where


def _settings_misnamed(where: Path) -> str:
    """What the refusal of a settings directory without settings.toml adds for a file there
    that looks meant as it (``Settings.toml``, ``setings.toml``), or ``""`` (red team 71)."""
    try:
        names = sorted(os.listdir(where))  # noqa: PTH208 - names only, for a refusal
    except OSError:
        return ""
    for name, _ in _near_names(where, names, (SETTINGS_FILE,)):
        return (
            f"; {shell_word(name)} there looks meant as {SETTINGS_FILE}, which the app reads "
            f"under that name only: `mv {shell_word(str(where / name))} "
            f"{shell_word(str(where / SETTINGS_FILE))}`"
        )
    return ""


def _refuse_through_proc(where: Path, reason: str) -> Path:
    """Refuse a settings directory named through links that name no directory of this
    process's: a loop, a link of ``/proc`` this user may not follow or of a process that has
    ended (`unresolvable`), one to a removed directory, or one into another mount namespace.
    Returns `where` resolved, as ``Path.resolve`` gives it (its ``realpath``, and no loop: the
    one ``stat`` of `loop_at` found none)."""
    resolved, cannot = resolving(str(where))
    if cannot is not None:
        raise SettingsNotFoundError(where, f"{reason}; it {cannot}")
    assert resolved is not None  # `resolving` gives one or the other
    if (elsewhere := resolved_elsewhere(str(where), resolved)) is not None:
        if (gone := deleted_reason(*elsewhere)) is not None:
            raise SettingsNotFoundError(where, f"{reason}; it {gone}")
        # A container's /proc/<pid>/root reads as `/`: its settings directory resolved to
        # this host's, whose production root a purge then emptied (red team 59).
        raise SettingsNotFoundError(
            where,
            f"{reason}; it leads through {elsewhere[0]} to another directory than the one "
            f"it resolves to in this process, {elsewhere[1]}: {elsewhere_link(elsewhere[0])}; "
            "name the directory as this machine sees it, where the container's volume is "
            "mounted",
        )
    return Path(resolved)


def unresolvable(path: str) -> str | None:
    """Why `path` names no directory here because a symbolic link on its way cannot be
    followed, and what to give instead, or None: a link this process may not read
    (`unfollowable_reason`), or a loop of links (`loop_reason`).

    A root, settings directory or sandbox through a loop (``a`` -> ``b`` -> ``a``) was a
    bare ``RuntimeError: Symlink loop`` traceback from every command, pytest's start and a
    test's children (pathlib's ``resolve`` raises on a loop; red team 61, as the
    ``PermissionError`` of a link of /proc was). So was a link of /proc of a process that
    has ended, a zombie's (its ``cwd`` and ``root`` read ``ENOENT``): every command said
    "the data root's filesystem failed a call with ENOENT ... `app data check`", naming
    ``/proc/<pid>/cwd`` as the data root (exit 74).
    """
    return resolving(path)[1]


def resolving(path: str) -> tuple[str, None] | tuple[None, str]:
    """`path` resolved as ``Path.resolve`` resolves it (its ``realpath``, where no loop
    makes ``resolve`` raise), or why it cannot be (`unresolvable`'s answer)."""
    try:
        resolved = os.path.realpath(path)  # what Path.resolve reads
    except PermissionError as e:
        return None, unfollowable_reason(str(e.filename or path))
    except OSError as e:
        return None, unreadable_link_reason(str(e.filename or path), e)
    loop = loop_at(resolved)
    return (resolved, None) if loop is None else (None, loop_reason(loop))


def loop_at(resolved: str) -> str | None:
    """The link where a loop of symbolic links begins on `resolved` (``os.path.realpath``'s
    answer, which stops at a loop and keeps the rest as written), or None where there is
    none: one ``stat``, and a walk only where it fails with ``ELOOP``."""
    try:
        os.stat(resolved)  # noqa: PTH116 - str in, the kernel's own walk
    except OSError as error:
        if error.errno != errno.ELOOP:
            return None
    else:
        return None
    # realpath resolved every link before the loop: the first link left begins it.
    here = "/"
    for part in resolved.split("/")[1:]:
        here = os.path.join(here, part)  # noqa: PTH118 - str in, str out
        try:
            if stat.S_ISLNK(os.lstat(here).st_mode):
                return here
        except OSError:
            break
    return resolved


def loop_reason(link: str) -> str:
    """Why a path through `link` (`loop_at`'s) names no directory, and what resolves it."""
    return (
        f"passes through {link}, a symbolic link that leads back to itself through a loop of "
        f"links (`ls -l {shell_word(link)}` shows where it points), so the path names no "
        "directory: nothing can be opened through it; point the link at the directory it "
        "means, or name that directory instead"
    )


def unreadable_link_reason(link: str, error: OSError) -> str:
    """Why a path through `link`, whose ``readlink`` failed with `error` (not ``EACCES``:
    `unfollowable_reason`), names no directory here, and what to give instead."""
    failed = f"{errno.errorcode.get(error.errno or 0, error.errno)} ({error.strerror})"
    parts = link.split("/")
    if len(parts) > 3 and parts[1] == "proc" and parts[2].isdigit():
        return (
            f"passes through {link}, a link of /proc to what process {parts[2]} has, which "
            f"names nothing now (reading it failed with {failed}: the process has ended, or "
            "is ending, and has no current directory, root or descriptors left), so the path "
            "names no directory here; name the directory itself"
        )
    return (
        f"passes through {link}, a symbolic link this process could not read (it failed "
        f"with {failed}), so the path names no directory here; name the directory the link "
        "leads to instead"
    )


def unfollowable_reason(link: str) -> str:
    """Why a path that passes through `link` (one `unresolvable` finds) names no directory here, and
    what to give instead."""
    parts = link.split("/")
    if len(parts) > 3 and parts[1] == "proc" and parts[2].isdigit():
        pid = parts[2]
        try:
            command = Path(f"/proc/{pid}/comm").read_text().strip()
            owner = _user_name(os.stat(f"/proc/{pid}").st_uid)  # noqa: PTH116
            whose = f"process {pid} ({command}, user {owner})"
        except OSError:
            whose = f"process {pid}"
        return (
            f"passes through {link}, a link of /proc to what {whose} has, which this "
            f"process (user {_this_user()}) may not follow: the kernel shows it only to that "
            "process's own user, while the process is dumpable, and to a holder of "
            "CAP_SYS_PTRACE, so the path names no directory here; name the directory as this "
            "machine sees it (where a container's volume is mounted, `findmnt` or `docker "
            "inspect` shows it)"
        )
    return (
        f"passes through {link}, a link this process (user {_this_user()}) may not read, so "
        "the path names no directory here; name the directory the link leads to instead"
    )


def deleted_reason(here: str, resolved: str) -> str | None:
    """Why `here` (`resolved_elsewhere`'s) names no directory, where it is a directory that
    was removed (a link of /proc to a process's current directory, root or open directory
    that was deleted since: its link reads ``<path> (deleted)``), or None.

    ``APP_DATA_ROOT=/proc/<pid>/cwd`` of such a process was refused as "a link of /proc ...
    into another mount namespace, a container's" (red team 61): no namespace was involved.
    """
    try:
        if os.stat(here).st_nlink != 0:  # noqa: PTH116 - str in, the kernel's own walk
            return None
    except OSError:
        return None
    return (
        f"leads through {here} to a directory that was removed (it reads {resolved}): a "
        "process still has it (as its current directory, its root or an open descriptor), "
        "but no path names it and nothing can be made in it; name a directory that exists"
    )


#: A path through a descriptor's link: ``/proc/<pid>/fd/<n>`` (of a thread too), ``/dev/fd/<n>``
#: (compiled by `re`'s cache when a refusal first needs it, not at every command's import).
_DESCRIPTOR_LINK = r"/(?:proc/[^/]+/(?:task/[^/]+/)?fd|dev/fd)/[0-9]+(?:/|$)"


def elsewhere_link(here: str) -> str:
    """What kind of link of ``/proc`` `here` (`resolved_elsewhere`'s) passes through, for a
    refusal: a process's root or current directory, or a descriptor of a directory opened in
    another mount namespace (one a process there holds, or one passed over a UNIX socket, or
    inherited), which a refusal named as "``/proc/<pid>/root`` or cwd" (red team 73).

    By the link the path's way passes through (`sandbox.process_link`), not by its text: a
    link of one's own to ``/proc/<pid>/fd/<n>``, ``/dev/stdin`` or ``..`` into ``/proc``
    were named as a process's root or current directory (red team 73 on regress)."""
    from app.sandbox import process_link  # here, not above: app.sandbox imports this module

    if re.match(_DESCRIPTOR_LINK, process_link(here) or here):
        return (
            "a link of /proc to a descriptor (/proc/<pid>/fd/<n>, /dev/fd/<n>) of a directory "
            "opened in another mount namespace (a container's process holds it, or it was "
            "passed over a UNIX socket or inherited from there) names the directory as that "
            "namespace does"
        )
    return (
        "a link of /proc (/proc/<pid>/root or cwd) into another mount namespace, a "
        "container's, names the directory as that namespace does"
    )


def resolved_elsewhere(path: str, resolved_path: str | None = None) -> tuple[str, str] | None:
    """The deepest existing directory of `path` and what it resolves to, where the two are
    different directories (by device and inode); None where they are one, or nothing exists.

    A link of ``/proc`` into another mount namespace (``/proc/<pid>/root`` or ``cwd`` of a
    process in a container) is followed by the kernel into that namespace, but its text,
    which resolving reads, names the directory as that namespace does: another directory
    here (red team 59).

    `resolved_path`: the caller's ``realpath`` of `path`, made a moment before with nothing
    made since; taken where `path` itself exists, instead of resolving it again (issue 11).
    """
    here = path
    while True:
        try:
            found = os.stat(here)  # noqa: PTH116 - str in, the kernel's own walk
            break
        except OSError:
            parent = os.path.dirname(here)  # noqa: PTH120 - as above
            if parent == here:
                return None
            here = parent
    if here != path or resolved_path is None:
        resolved_path = os.path.realpath(here)  # what Path.resolve reads
    resolved = resolved_path
    try:
        if os.path.samestat(os.stat(resolved), found):  # noqa: PTH116 - as above
            return None
    except OSError:
        pass
    return here, resolved


def _settings_file(path: Path, *, read: bool = True) -> bool:
    """Whether a settings file's name is a regular file (its links followed), refusing one
    that is there but is none (:func:`_refuse_not_a_file`) or that this process may not
    ``stat`` (``settings_unreadable``, naming where the link leads). With ``read=False`` (a
    local file under pytest, never read) nothing is refused: only whether it is one.

    ``Path.is_file()`` raised ``PermissionError`` for a name linked into a directory this
    user may not search (``.secrets.toml -> /run/secrets/app.toml``, ``/run/secrets`` 0700
    root): every command said "the data root's filesystem refused it ... `lsattr -R` on the
    data root", of a data root never opened, and a run under pytest failed on a local file
    it never reads (red team 59).
    """
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except PermissionError:
        if not read:
            return False
        raise _unreadable(path, path) from None
    except OSError:  # missing, a dangling link, a loop: said by the refusal below
        regular = False
    if not regular and read:
        _refuse_not_a_file(path)
    return regular


def _unreadable(path: Path, default: Path) -> SettingsUnreadableError:
    """`path` this process may not ``stat``: named where its link leads, the file it may not
    reach (its own name reads fine), else as `default`."""
    try:
        linked = stat.S_ISLNK(path.lstat().st_mode)
    except OSError:
        linked = False
    return SettingsUnreadableError(
        Path(os.path.realpath(path)) if linked else default,
        _this_user(),
    )


def _refuse_not_a_file(path: Path) -> None:
    """Refuse a settings file's name that is there but is no regular file (red team 59).

    ``is_file()`` is false for a link whose target is missing (``.secrets.toml`` linked to a
    secrets volume not mounted), a directory and a FIFO alike, and each was read as absent:
    what it sets was silently left out. Only ``lstat``ed and ``stat``ed, never opened (a
    FIFO's open waits for a writer).
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError:
        return  # not there for this process; the reader's own error says so
    quoted = shell_word(str(path))
    if stat.S_ISLNK(mode):
        target = path.readlink()
        try:
            mode = path.stat().st_mode
        except PermissionError:
            # Its target may be there for another user: "remove the link" would remove
            # the secrets file's own link of the service that may read it.
            raise _unreadable(path, path) from None
        except OSError as error:
            reason = "which does not exist" if error.errno == errno.ENOENT else error.strerror
            raise SettingsNotAFileError(
                path,
                f"a symbolic link to {target}, {reason}",
                "Put the file at the link's target (mount the volume or restore the secrets "
                f"file it names), or remove the link if nothing should be read there "
                f"(`rm {quoted}`), then run `app doctor`",
            ) from None
        if stat.S_ISREG(mode):
            return
        what = f"a symbolic link to {target}, which is {_kind(mode)}"
        remedy = f"Point the link at the settings file, or remove it (`rm {quoted}`)"
    elif stat.S_ISDIR(mode):
        what, remedy = "a directory", _directory_remedy(path)
    else:
        what = _kind(mode)
        remedy = f"Put the settings file there, or remove it (`rm {quoted}`) if none belongs"
    raise SettingsNotAFileError(path, what, f"{remedy}, then run `app doctor`")


def _directory_remedy(path: Path) -> str:
    """What resolves a directory at a settings file's name, as written: ``rmdir`` only where
    it is empty and no mount point (red team 59).

    A volume mounted at the file's own name (a Kubernetes secret volume without ``subPath``,
    whose files are ``..data`` links; a Docker bind mount whose missing source Docker made
    an empty directory) or a directory holding files was told ``rmdir``, which refuses both
    ("Device or resource busy", "Directory not empty").
    """
    quoted = shell_word(str(path))
    if os.path.ismount(path):
        return (
            "It is a mount point: a volume mounted at the file's own name (a Kubernetes "
            "secret or ConfigMap volume mounted there without `subPath`; a Docker bind mount "
            "whose source was missing, which Docker makes an empty directory). Mount the file "
            f"itself there (Kubernetes: `subPath: {path.name}`; Docker: a source that is a "
            "file), or mount the volume on another directory and link the file from it"
        )
    try:
        held = sorted(os.listdir(path))  # noqa: PTH208 - names only
    except OSError:
        held = []
    if not held:
        return f"Put the settings file there, or remove it (`rmdir {quoted}`) if none belongs"
    # A name nothing holds: `mv` into an existing directory would move it inside that one.
    free = next(
        f"{path.name}.dir{n or ''}"
        for n in itertools.count()
        if not os.path.lexists(path.with_name(f"{path.name}.dir{n or ''}"))
    )
    aside = shell_word(str(path.with_name(free)))
    if path.name in held:  # a volume's copy, `.secrets.toml/.secrets.toml`
        inner = shell_word(f"{free}/{path.name}")
        return (
            f"It holds {path.name} itself: move the directory aside and link the file in it "
            f"(`mv {quoted} {aside} && ln -s {inner} {quoted}`), nothing deleted"
        )
    return (
        f"It holds {len(held)} entries, which `rmdir` refuses: move it aside (`mv {quoted} "
        f"{aside}`), nothing deleted, and put the settings file there if one belongs"
    )


def _kind(mode: int) -> str:
    """What a file's mode says it is, as a refusal names it."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _this_user() -> str:
    """This process's user, by name where the system knows it, for a refusal."""
    return _user_name(os.geteuid())


def _user_name(uid: int) -> str:
    """`uid`'s user name where the system knows it, else the number."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _toml_line(error: tomllib.TOMLDecodeError) -> tuple[int | None, str]:
    lineno = getattr(error, "lineno", None)  # Python 3.14+
    message = getattr(error, "msg", None) or str(error)
    found = re.search(r"\(at line (\d+), column \d+\)", str(error))
    if lineno is None and found:
        lineno = int(found.group(1))
    return lineno, re.sub(r"\s*\(at line \d+, column \d+\)", "", message)


# Parsed TOML by the file's bytes: every `load` reads the files, but the same bytes need not be
# parsed again (a fifth of what `load` cost once dynaconf's reading was memoised).
_TOML_MEMO: dict[bytes, dict[str, Any]] = {}
_TOML_MEMO_SIZE = 16
_MEMO_LOCK = threading.Lock()  # loads may run on several threads (a server's, tests')


#: dynaconf's own settings whose names neither end in ``_FOR_DYNACONF`` nor start with
#: ``DYNACONF`` (the rest of ``dynaconf.default_settings``, and what `Dynaconf` reads besides;
#: tests/test_config.py checks that `dynaconf_s_own` covers every one the installed release
#: has).
_DYNACONF_OWN: frozenset[str] = frozenset(
    {"PROJECT_ROOT", "RENAMED_VARS", "SETTINGS_MODULE", "DYNABOXIFY", "_REGISTERED_HOOKS"}
)


def dynaconf_s_own(name: str) -> bool:
    """Whether a section named `name` would be one of dynaconf's own settings.

    Every profile's sections are loaded in ONE dynaconf load, each section a key at the top
    of it (`file_values`), where dynaconf reads its own settings: a profile named
    ``[environments_for_dynaconf]`` turned the loads of the next files per-environment, and
    ``.secrets.toml``'s or ``settings.local.toml``'s ``[production] data_root`` was then
    credited to that file but held settings.toml's value, so the check of the roots compared
    a production root that is not production's (red team 69). A name that holds
    `NESTED_SEPARATOR` is a key of another section there (red team 70).
    """
    upper = name.upper()
    return (
        upper.endswith("_FOR_DYNACONF")
        or upper.startswith("DYNACONF")
        or upper in _DYNACONF_OWN
        or NESTED_SEPARATOR in name
    )


#: dynaconf's separator of nested keys (``NESTED_SEPARATOR_FOR_DYNACONF``'s default): it
#: stores a key ``production__data_root`` as ``data_root`` of ``production``. A section
#: ``[production__data_root]`` set production's root to that section's table, refused as
#: "data_root = {...} (from settings.toml [production])", a value that file does not hold,
#: and ``[production__protected]`` unset production's protection (red team 70).
NESTED_SEPARATOR = "__"


def _refuse_unclear_names(path: Path, parsed: Mapping[str, Any]) -> None:
    """Refuse a section whose name is not plain or is one of dynaconf's own settings, and
    sections, or keys of one section, that differ only in case (`layers` folds it)."""

    def clash(names: Iterable[str], separators: bool = False) -> list[str] | None:
        seen: dict[str, list[str]] = {}
        for name in names:
            key = name.lower()
            # Sections `[prod-eu]` and `[prod_eu]` were two profiles, each a typo of the
            # other's name away: `ENV_FOR_DYNACONF=prod-eu`, meant for the staging one,
            # selected the protected one (red team 71). So were `[prod-eu]` and `[prodeu]`,
            # or `[production_]` beside `[production]`: a separator left out or added is as
            # near a typo (red team 71, round e).
            if separators:
                key = key.replace("-", "").replace("_", "")
            seen.setdefault(key, []).append(name)
        return next((spellings for spellings in seen.values() if len(spellings) > 1), None)

    for name, body in parsed.items():  # a key outside any section too: the same load's
        if plain_name(name) and dynaconf_s_own(name) and name.lower() not in NOT_PROFILES:
            raise SettingsNameError(path, name, None, isinstance(body, dict))
    tables = {name: body for name, body in parsed.items() if isinstance(body, dict)}
    for name in tables:
        if not plain_name(name):
            import difflib  # here: only a refusal pays for it

            # What it may pass for: a section of this file, or a name every file means the
            # same by (a secrets file's section is matched against settings.toml's later).
            plain = [o.lower() for o in tables if plain_name(o)]
            plain += [*NOT_PROFILES, ALWAYS_PROTECTED]
            near = difflib.get_close_matches(folded(name), plain, n=1)
            raise SettingsNameError(path, name, near[0] if near else None)
    if spellings := clash(tables, separators=True):
        raise SettingsAmbiguousError(path, spellings, None)
    for name, body in tables.items():
        if spellings := clash(body):
            raise SettingsAmbiguousError(path, spellings, name)


#: Byte order marks a settings file saved by another tool may start with, and their names.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8 with a byte order mark"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _not_utf8(path: Path, raw: bytes) -> tuple[int, str] | None:
    """Why ``raw`` is no UTF-8 text that TOML reads, with its line, or None where it is.

    TOML is UTF-8 without a byte order mark. A file saved by another tool was a bare
    ``UnicodeDecodeError`` traceback from every command and from the pytest plugin before
    the run (Latin-1's ``é`` in a comment; UTF-16, which Windows PowerShell's ``>`` writes),
    and a UTF-8 one with a byte order mark (Notepad's) "invalid TOML: Invalid statement" on
    a first line that looks right (red team 51)."""
    for mark, name in _BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            shown = " ".join(f"{b:02X}" for b in mark)
            how = (
                f"`sed -i '1s/^\\xEF\\xBB\\xBF//' {path}`"
                if mark == codecs.BOM_UTF8
                else f"`iconv -f {name} -t UTF-8 {path}`, into a new file"
            )
            return 1, (
                f"the file is saved as {name} (it starts with the bytes {shown}, a byte order "
                "mark), and TOML reads UTF-8 without one: save it as UTF-8 without a byte "
                f"order mark ({how}, or your editor's encoding setting)"
            )
    try:
        raw.decode()
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        return line, (
            f"the byte 0x{raw[error.start]:02X} at column {column} is not UTF-8 (the file, or "
            "that line, was saved in another encoding, such as Latin-1 or Windows-1252), and "
            "TOML reads UTF-8 only: save the file as UTF-8 (`iconv -f LATIN1 -t UTF-8`, or your "
            "editor's encoding setting)"
        )
    return None


#: Deeper than any setting nests (a table of profiles, of keys, a list of values): what the
#: readers after the parser (a copy, dynaconf's merge, the check of its syntax) recurse on.
_MAX_NESTING = 32


def _too_deep(parsed: dict[str, Any]) -> str | None:
    """The key (``[section] key``) whose value nests deeper than `_MAX_NESTING`, or None.

    A value nested 400 levels deep (``x = [[[...]]]`` in ``settings.local.toml``) parsed, and
    every command ended in a ``RecursionError`` traceback in the readers after the parser;
    2,000 levels in the parser itself (red team 55). Looked for with a list of its own.
    """
    pending: list[tuple[Any, int, tuple[str, ...]]] = [(parsed, 0, ())]
    while pending:
        value, depth, names = pending.pop()
        if depth > _MAX_NESTING:
            section, *rest = [*names, ""]
            return f"[{section}] {'.'.join(n for n in rest if n)}".strip()
        if isinstance(value, dict):
            pending.extend((item, depth + 1, (*names, str(key))) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend((item, depth + 1, names) for item in value)
    return None


def _read_bytes(path: Path) -> bytes:
    """The bytes of the settings file at `path`, which `_settings_file` found regular.

    What is read is looked at again as it is opened: a name replaced after that look (a
    link switched, ``mkfifo`` in its place) by a FIFO held every command, and the pytest
    plugin before the run, waiting for a writer for ever, and a file removed there was a
    bare ``FileNotFoundError`` traceback (red team 69). Opened without waiting, then
    refused as `_refuse_not_a_file` refuses such a name. ``O_NOCTTY``: a name switched to
    a terminal (a link to ``/dev/pts/N``) was refused, but its open had already made that
    terminal the controlling one of a process that had none (``app serve`` as a service,
    a session leader), so its hang-up or a ``^C`` typed there stopped the server (red team
    69, the fourth round).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except PermissionError:
        # A link's target, named: `ls -ld` of the link shows a link's mode (red team 59).
        raise _unreadable(path, path) from None
    except OSError as error:
        _refuse_not_a_file(path)  # a dangling link, or what is there now
        raise SettingsNotAFileError(
            path,
            f"gone ({error.strerror}): it was removed or replaced as it was read",
            "Run the command again once the file is in place, then `app doctor`",
        ) from None
    with os.fdopen(fd, "rb") as opened:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            _refuse_not_a_file(path)  # names what is there now, with its remedy
            raise SettingsNotAFileError(
                path,
                f"{_kind(mode)} as it was read (it was replaced as it was read)",
                f"Put the settings file there, or remove it (`rm {shell_word(str(path))}`) if "
                "none belongs, then run `app doctor`",
            )
        return opened.read()


def _read_toml(path: Path) -> tuple[bytes, dict[str, Any]]:
    raw = _read_bytes(path)
    parsed = _TOML_MEMO.get(raw)
    if parsed is None:
        if (not_utf8 := _not_utf8(path, raw)) is not None:
            raise SettingsSyntaxError(path, *not_utf8)
        try:
            parsed = tomllib.loads(raw.decode())
        except tomllib.TOMLDecodeError as error:
            line, problem = _toml_line(error)
            raise SettingsSyntaxError(path, line, problem) from None
        except RecursionError:
            parsed = None
        if parsed is None or (deep := _too_deep(parsed)) is not None:
            problem = (
                "a value nests deeper than Python's stack lets the parser read"
                if parsed is None
                else f"the value of {deep} nests more than {_MAX_NESTING} levels deep, "
                "which no setting does (the readers after the parser recurse once a level)"
            )
            problem += "; write that value flat, or remove it"
            raise SettingsSyntaxError(path, None, problem)
        _refuse_unclear_names(path, parsed)
        with _MEMO_LOCK:
            while len(_TOML_MEMO) >= _TOML_MEMO_SIZE:
                del _TOML_MEMO[next(iter(_TOML_MEMO))]
            _TOML_MEMO[raw] = parsed
    return raw, copy.deepcopy(parsed)  # callers get tables of their own


class Files(Record):
    """The settings files one load reads, parsed, in the order they are layered."""

    directory: Path
    paths: tuple[Path, ...]
    #: Local files present but not read (under pytest).
    skipped: tuple[Path, ...]
    data: Mapping[Path, dict[str, Any]]
    profiles: tuple[str, ...]
    #: Each file's bytes, as parsed: with the rest, what `file_values`' memo is keyed on
    #: (`_content_key`), worked out there, where dynaconf reads them. Not here: the pytest
    #: plugin reads the files six times as a run starts and never asks dynaconf.
    raw: Mapping[Path, bytes] | None = None


def dynaconf_syntax(value: Any) -> bool:
    """Whether a parsed TOML value uses dynaconf's own syntax anywhere in it.

    ``@``-strings are evaluated by dynaconf (``@format {env[HOME]}`` reads the environment,
    ``@read_file`` another file, ``@jinja`` whatever its template does) and ``dynaconf_*``
    keys (``dynaconf_include``, ``dynaconf_merge``) pull in or merge other sources.
    """
    if isinstance(value, str):
        return value.lstrip().startswith("@")
    if isinstance(value, dict):
        return any(
            str(key).lower().startswith("dynaconf") or dynaconf_syntax(item)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return any(dynaconf_syntax(item) for item in value)
    return False


def _content_key(files: Files) -> tuple[Any, ...] | None:
    # What dynaconf's reading of plain files depends on: their paths and bytes, the files it
    # skips, and its own variables (which it reads from os.environ whatever `environ` says).
    # None when a file uses dynaconf's syntax: its values may depend on anything.
    directory, raw, skipped = files.directory, files.raw or {}, files.skipped
    if any(dynaconf_syntax(body) for body in files.data.values()):
        return None
    switches = tuple(
        sorted(
            (name, os.environ[name])
            for name in os.environ
            if name.endswith("_FOR_DYNACONF") or name.startswith("DYNACONF_")
        )
    )
    contents = tuple((str(path), content) for path, content in raw.items())
    return (str(directory), contents, tuple(str(path) for path in skipped), switches)


def read_files(environ: Mapping[str, str], sandboxed: bool) -> Files:
    """Read and parse the settings files; `sandboxed` leaves the local ones out."""
    directory = settings_dir(environ)
    settings = directory / SETTINGS_FILE
    candidates = (settings, directory / LOCAL_FILES[0], directory / SECRETS_FILE)
    present = [
        path
        for path in (*candidates, directory / LOCAL_FILES[1])
        # A sandbox reads no local file, whatever is at its name.
        if _settings_file(path, read=not (sandboxed and path.name in LOCAL_FILES))
    ]
    skipped = tuple(p for p in present if p.name in LOCAL_FILES) if sandboxed else ()
    paths = tuple(p for p in present if p not in skipped)
    raw: dict[Path, bytes] = {}
    data: dict[Path, dict[str, Any]] = {}
    for path in paths:
        raw[path], data[path] = _read_toml(path)
    profiles = tuple(
        name.lower()
        for name, section in data[settings].items()
        if isinstance(section, dict) and name.lower() not in NOT_PROFILES
    )
    return Files(directory, paths, skipped, MappingProxyType(data), profiles, MappingProxyType(raw))


def _file_key(name: str) -> str:
    """A settings file's name as `misnamed_files` compares it: lower case, no dot before it,
    ``-`` and ``_`` read as ``.``."""
    return name.strip().lower().lstrip(".").replace("-", ".").replace("_", ".")


def misnamed_files(files: Files, *, local: bool = True) -> Iterator[SettingsFileMisnamedError]:
    """A file of the settings directory whose name looks meant as one of the optional
    settings files, while that one is not there: ``secrets.toml``, ``Settings.local.toml``,
    ``settings_local.toml``, ``settings.lcoal.toml``. Nothing reads it, and its values were
    ignored with nothing said, as a misspelt variable's were (red team 71).

    Only names ending in ``.toml`` are compared (an editor's ``settings.local.toml~`` or a
    ``.bak`` is a copy, not a misspelling), the way `misspelt` compares a variable's; one
    listing of the directory, each name compared word by word (`_near_names`). With
    `local` False (a test run, which reads no local file whatever its name), only
    ``.secrets.toml`` is looked for.
    """
    read = {path.name for path in (*files.paths, *files.skipped)}
    wanted = (LOCAL_FILES[0], SECRETS_FILE, LOCAL_FILES[1]) if local else (SECRETS_FILE,)
    missing = [name for name in wanted if name not in read]
    if not missing:
        return
    try:
        names = sorted(os.listdir(files.directory))  # noqa: PTH208 - names only, once a load
    except OSError:  # the files were read: a directory gone since says so at the next load
        return
    near = list(_near_names(files.directory, names, missing))
    for name, meant in near:
        # Each told to `mv` itself to the one name, the second `mv` replaced the first file
        # with nothing said: each names the others (red team 71, round o).
        also = tuple(other for other, same in near if same == meant and other != name)
        yield SettingsFileMisnamedError(files.directory / name, meant, also=also)


def _near_names(
    directory: Path, names: Iterable[str], meant: Iterable[str]
) -> Iterator[tuple[str, str]]:
    """Each of `names` (`directory`'s) that looks meant as one of `meant` (`_file_key`
    alike, or a near miss of it), with the one it looks meant as; the settings files' own
    names, names not ending in ``.toml`` and directories are passed over.

    A near miss is the name with a separator left out, doubled, or typed as a space or a
    comma (``settingslocal.toml``, ``settings local.toml``), or with at most one slip of the
    fingers (`_one_slip`) in each of its words (``setings.local.toml``,
    ``settings.lcoal.toml``, ``secret.toml``): a name whose word differs otherwise is
    another file's, ``settings.global.toml`` or ``settings.lock.toml`` (red team 71, round
    j). No ``difflib`` ratio: over whole names it rated such words near misses of ``local``
    (0.90 and 0.89), and no threshold both refused ``settings.lcoal.toml`` (0.93) and left
    ``settings.vocal.toml`` (0.93) alone.
    """
    keys = {_file_key(name).removesuffix(".toml"): name for name in meant}
    # The same words in another order, ``.toml`` one of them: Azure Functions' habit of
    # ``local.settings.json`` gives ``local.settings.toml``, and ``.env.local``'s gives
    # ``settings.toml.local``; each was ignored with nothing said (red team 72). No name of
    # another file or a copy has exactly these words (``settings.toml.bak`` has a third);
    # nor these with a slip of one (`_reordered`, red team 72 on regress, round f).
    orders = {tuple(sorted(_file_key(name).split("."))): name for name in meant}
    for name in names:
        if name in (SETTINGS_FILE, SECRETS_FILE, *LOCAL_FILES):
            continue
        typed = name if name.isascii() else _as_seen(name)
        if "toml" not in typed.lower():  # most names of a directory, at one look each
            continue
        # A space, or a comma (the key beside `.`), typed for a `.` is a separator too.
        spaced = _file_key(typed).replace(" ", ".").replace(",", ".")
        given = [word for word in spaced.split(".") if word]
        found = orders.get(tuple(sorted(given)))
        if found is None:
            found = _in_another_order(given, tuple(meant))
        if found is not None:
            if not os.path.isdir(directory / name):  # noqa: PTH112 - as below
                yield name, found
            continue
        if not typed.rstrip().lower().endswith(".toml"):
            continue
        stem = spaced.removesuffix(".toml")
        words = stem.split(".")
        found = keys.get(stem)
        for key, file in keys.items():
            if found is not None:
                break
            if stem.replace(".", "") == key.replace(".", ""):
                found = file
                continue
            others = key.split(".")
            if len(others) == len(words):
                slips = [(a, b) for a, b in zip(words, others, strict=True) if a != b]
                found = file if all(_one_slip(*slip) for slip in slips) else None
        # A directory holds no settings to be ignored, and the `mv` would make the settings
        # file a directory: one `stat` for a name found only (red team 71, round e).
        if found is not None and not os.path.isdir(directory / name):  # noqa: PTH112
            yield name, found


@functools.cache  # the same three names every load: their orders built once a process
def _other_orders(
    meant: tuple[str, ...],
) -> Mapping[tuple[int, int], list[tuple[tuple[str, ...], str]]]:
    """The orders of each of `meant`'s words but its own, by the count of words and where
    ``toml`` is among them (`_reordered`)."""
    orders: dict[tuple[int, int], list[tuple[tuple[str, ...], str]]] = {}
    for file in meant:
        words = tuple(_file_key(file).split("."))
        for order in itertools.permutations(words):  # six at most
            if order != words:
                orders.setdefault((len(order), order.index("toml")), []).append((order, file))
    return orders


def _in_another_order(given: list[str], meant: tuple[str, ...]) -> str | None:
    """The file of `meant` whose words `given` are in another order, with a slip
    (`_reordered`) or with the separators left out (``localsettings.toml``), or None. The
    latter needs no guess at where the words part: the other orders' words run together are
    compared with `given`'s, as the near-miss rule compares its own order's (red team 72 on
    regress, round k: it was ignored with nothing said)."""
    if "toml" in given and (found := _reordered(given, _other_orders(meant))) is not None:
        return found
    return _run_together(meant).get("".join(given))


@functools.cache  # as `_other_orders`: built once a process
def _run_together(meant: tuple[str, ...]) -> Mapping[str, str]:
    """Each other order of `meant`'s words (`_other_orders`) with no separator between them
    (``localsettingstoml``), and the file it is an order of."""
    return {
        "".join(order): file for orders in _other_orders(meant).values() for order, file in orders
    }


def _reordered(
    given: list[str], orders: Mapping[tuple[int, int], list[tuple[tuple[str, ...], str]]]
) -> str | None:
    """The file whose words `given` (``toml`` one of them) are in another order
    (`_other_orders`), ``toml`` exact and at most one slip (`_one_slip`) in each other
    word, or None: ``lcoal.settings.toml`` was ignored with nothing said, though the other
    order and the slip were each refused alone (red team 72 on regress, round f). The
    file's own order is the near-miss rule's (`_near_names`, with its exceptions)."""
    for order, file in orders.get((len(given), given.index("toml")), ()):
        if all(
            a == b or (b != "toml" and _one_slip(a, b)) for a, b in zip(given, order, strict=True)
        ):
            return file
    return None


def _as_seen(name: str) -> str:
    """A name that is not ASCII as it reads on a screen: without the characters that show as
    nothing (Unicode's format characters: a zero-width space U+200B, a byte-order mark U+FEFF,
    pasted with a name from a web page or chat) and in its compatibility form (NFKC: the
    no-break space U+00A0 that macOS types for Option-Space is a space, a full-width
    ``\uff54`` is ``t``). ``settings\u00a0local.toml`` and ``settings.local.toml\u200b``
    were not near misses, though ``settings local.toml`` is: their values were ignored with
    nothing said (red team 71, round o).

    Unicode's other characters that show as nothing are left out too (`SHOWS_AS_NOTHING`): a
    combining grapheme joiner U+034F, a variation selector U+FE0F or a Hangul filler U+3164
    after ``.toml`` is no format character, and ``settings.local.toml\u034f`` was passed
    over as not ending in ``.toml`` (red team 71 on regress, round r)."""
    import unicodedata  # here: only a name that is not ASCII pays for it

    # The pattern through `re`'s own cache, compiled at the first name that is not ASCII:
    # compiled as this module was imported, it cost every pytest start and `app` command
    # 2.5 M instructions for names they never see (bench/README.md, "perf-start72").
    shown = "".join(
        c for c in name if unicodedata.category(c) != "Cf" and not re.match(SHOWS_AS_NOTHING, c)
    )
    return unicodedata.normalize("NFKC", shown)


def _one_slip(typed: str, meant: str) -> bool:
    """Whether `typed` is `meant` (a word of a settings file's name, ``settings``,
    ``secrets`` or ``local``) with one slip of the fingers: two letters next to each other
    swapped, one left out, one doubled or put in between two others, or one but the first
    replaced. A letter added at either end (``locale``, ``settings2``) or the first one
    replaced (``vocal``) makes another word more often than a typo, so is not one.

    By hand: the edit distances of libraries count every edit alike, and these rules are
    about which edit it is (red team 71, round j)."""
    if len(typed) == len(meant):
        at = [i for i, (a, b) in enumerate(zip(typed, meant, strict=True)) if a != b]
        if len(at) == 1:
            return at[0] > 0
        return (
            len(at) == 2
            and at[1] == at[0] + 1
            and (typed[at[0]], typed[at[1]]) == (meant[at[1]], meant[at[0]])
        )
    if len(typed) == len(meant) - 1:
        return any(meant[:i] + meant[i + 1 :] == typed for i in range(len(meant)))
    if len(typed) == len(meant) + 1:
        return any(
            typed[:i] + typed[i + 1 :] == meant
            and (0 < i < len(meant) or typed[i] == typed[i - 1 if i else 1])
            for i in range(len(typed))
        )
    return False


def display(path: Path, directory: Path) -> str:
    """A settings file as messages name it: its bare name when it sits in `directory`."""
    return path.name if path.parent == directory else str(path)


class Layer(Record):
    """One section of one file, as it applies to a profile."""

    path: Path
    section: str
    #: The section's keys, lower case, as the file writes them (not evaluated).
    body: Mapping[str, Any]
    #: How a value from this layer names its source: ``settings.toml [default]``.
    source: str


def layers(files: Files, profile: str) -> Iterator[Layer]:
    """The sections that configure `profile`, lowest first: a later layer's key wins."""
    for path, data in files.data.items():
        sections = {name.lower(): body for name, body in data.items() if isinstance(body, dict)}
        where = display(path, files.directory)
        for section in ("default", profile, "global"):
            if section in sections:
                body = {key.lower(): value for key, value in sections[section].items()}
                yield Layer(path, section, body, f"{where} [{section}]")


class Unresolved(Record):
    """A value from the files that dynaconf could not resolve (its error kept for the message)."""

    raw: Any
    error: str
    #: Set when it is a cast dynaconf could not make as it loaded the file.
    cast: SettingsCastError | None = None
    #: Set when it is one of dynaconf's instructions to change a value already there
    #: (``@merge``, ``@reset``, ``@insert``, ``@del``) that found none to change.
    unapplied: bool = False
    #: Set (to the name it reads) when it is a token that reads dynaconf's notion of the
    #: selected environment (`reads_selection`), which is no profile's.
    selection: str | None = None


#: What a ``@format``, ``@get`` or ``@jinja`` value may read of dynaconf's own notion of the
#: selected environment: ``{this.current_env}`` and ``{this.current_namespace}`` (``main``
#: here), ``{this.ENV_FOR_DYNACONF}`` and ``{env[ENV_FOR_DYNACONF]}`` (the shell's text as
#: typed) and dynaconf's other switches (``{this.DEFAULT_ENV_FOR_DYNACONF}``, ...).
_SELECTION = r"current_env|current_namespace|\w*_for_dynaconf"
#: And the shell's working directory (``{env[PWD]}``, ``{env[OLDPWD]}``): a root that moved
#: with `cd`, where a relative one resolves against the settings directory and bash's
#: ``~+`` and ``~-`` are refused (red team 71).
WORKING_DIRECTORY = ("PWD", "OLDPWD")
#: The name anywhere in one of the template's expressions (``{...}``, jinja's ``{{...}}`` and
#: ``{%...%}``), as a whole word: jinja's ``{{ env.get("PWD") }}``, which the spellings
#: ``env[PWD]`` and ``env.PWD`` alone let through (red team 74 on regress, round b), as any
#: other way to name it; not ``DB_PWD``, nor a directory named PWD outside the braces.
_WORKING_DIRECTORY = r"\{[^{}]*?\b((?:OLD)?PWD)\b[^{}]*\}"


@functools.cache
def _token_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """`_SELECTION` and `_WORKING_DIRECTORY` compiled, at the first token value looked at:
    not at import, which every `app` command and pytest start pays (tests/test_lazy_patterns.py;
    `app.sandbox.LazyPattern` would do, but app.sandbox imports this module)."""
    return re.compile(_SELECTION, re.IGNORECASE), re.compile(_WORKING_DIRECTORY)


def reads_selection(raw: Any) -> str | None:
    """The name of dynaconf's selection (or of the working directory's variable) that the
    token value `raw` reads, or None.

    The app reads every profile in one load with ``environments=False`` and selects the
    profile itself, so no such name is the profile a value is resolved for: ``data_root =
    "@format /srv/app/{this.ENV_FOR_DYNACONF}"`` in ``[production]`` was ``/srv/app/Production``
    for ``ENV_FOR_DYNACONF=Production`` (which selects production), a new, empty root beside
    the real one that ``app serve`` stamped and served; ``/srv/app/DEVELOPMENT`` for ``app
    --profile production`` in a shell without the variable, so a ``data purge`` there named
    that directory; and in a development shell production's root was compared as that one,
    not its own (red team 74).
    """
    if not isinstance(raw, str) or not raw.lstrip().startswith("@"):
        return None
    selection, working_directory = _token_patterns()
    if (found := selection.search(raw)) is not None:
        return found.group()
    found = working_directory.search(raw)  # as a variable, not a password's letters
    return found.group(1) if found is not None else None


def plain_roots(files: Files) -> dict[str, tuple[str, str]] | None:
    """Every profile's configured ``data_root`` straight from the parsed TOML, or None.

    None when any file writes a ``data_root`` in dynaconf's own syntax or merges with
    ``dynaconf_merge``: then only dynaconf can say what it means (see :func:`file_values`).
    """
    found = plain_values(files, ("data_root",))
    if found is None:
        return None
    return {profile: values["data_root"] for profile, values in found.items() if values}


def plain_values(files: Files, keys: Collection[str]) -> Values | None:
    """Every profile's configured `keys` straight from the parsed TOML, or None when any
    file writes one of them in dynaconf's own syntax or merges with ``dynaconf_merge``.

    What the pytest plugin reads before the run, without importing dynaconf.
    """
    for data in files.data.values():
        for body in (b for b in data.values() if isinstance(b, dict)):
            lowered = {str(key).lower(): value for key, value in body.items()}
            if "dynaconf_merge" in lowered:
                return None
            for key in keys:
                value = lowered.get(key)
                if not isinstance(value, str | None):
                    return None
                if isinstance(value, str) and value.lstrip().startswith("@"):
                    return None
    found: Values = {profile: {} for profile in files.profiles}
    for profile in files.profiles:
        for layer in layers(files, profile):
            for key in keys:
                if key in layer.body:
                    found[profile][key] = (layer.body[key], layer.source)
    return found


# `file_values` by `_content_key`: a few entries (one per settings directory and
# sandboxing a process reads), so that `load` in every test (the `app_config` fixture) does
# not pay for a dynaconf load of files it has read before. Only file values are kept.
_FILE_VALUES_MEMO: dict[tuple[Any, ...], Values] = {}
_FILE_VALUES_MEMO_SIZE = 8


def _fresh(values: Values) -> Values:
    # A copy that shares nothing mutable with the memo (TOML values can be lists, tables).
    scalar = (str, int, float, bool, type(None))
    return {
        profile: {
            key: (value if isinstance(value, scalar) else copy.deepcopy(value), source)
            for key, (value, source) in by_key.items()
        }
        for profile, by_key in values.items()
    }


def file_values(files: Files, keys: Collection[str]) -> Values:
    """Every profile's values of `keys` from the files, with their sources, from ONE dynaconf
    load; memoised on the files' bytes (not their times: a file rewritten within one clock
    tick is read again), never for files in dynaconf's syntax."""
    content_key = _content_key(files)
    if content_key is None:
        return _dynaconf_file_values(files, keys)
    memo_key = (*content_key, tuple(keys))
    cached = _FILE_VALUES_MEMO.get(memo_key)
    if cached is None:
        cached = _fresh(_dynaconf_file_values(files, keys))
        with _MEMO_LOCK:
            while len(_FILE_VALUES_MEMO) >= _FILE_VALUES_MEMO_SIZE:
                del _FILE_VALUES_MEMO[next(iter(_FILE_VALUES_MEMO))]
            _FILE_VALUES_MEMO[memo_key] = cached
    return _fresh(cached)


def _cast_errors(
    path: Path, parsed: Mapping[str, Any], settings: Any
) -> dict[tuple[str, str], SettingsCastError]:
    """The values of ``path`` (`parsed`) that dynaconf cannot cast, by the (section, key) in
    lower case that holds them; a value nested in a table or list is named by its dotted key."""
    from dynaconf.utils.parse_conf import parse_conf_data

    def failures(name: str, value: Any) -> Iterator[tuple[str, str, str]]:
        if isinstance(value, dict):
            for key, inner in value.items():
                yield from failures(f"{name}.{key}", inner)
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                yield from failures(f"{name}[{index}]", inner)
        elif isinstance(value, str) and value.startswith("@"):
            try:
                parse_conf_data(value, tomlfy=True, box_settings=settings)
            except Exception as problem:  # any cast's error: it is what the refusal quotes
                yield name, value, str(problem)

    found: dict[tuple[str, str], SettingsCastError] = {}
    for section, body in parsed.items():
        for key, value in body.items() if isinstance(body, dict) else ():
            for name, text, problem in failures(key, value):
                refusal = SettingsCastError(path, section, name, text, problem)
                found.setdefault((section.lower(), key.lower()), refusal)
    return found


def _load_setting_aside(
    settings: Any,
    path: Path,
    parsed: dict[str, Any],
    failed: Mapping[tuple[str, str], SettingsCastError],
) -> None:
    """Load ``path``, parsed as `parsed`, as dynaconf's TOML loader does, without the values
    in ``failed`` (deleted from `parsed`: a copy of the caller's own)."""
    for section, body in parsed.items():
        if isinstance(body, dict):
            for key in [k for k in body if (section.lower(), k.lower()) in failed]:
                del body[key]
    _load_parsed(settings, path, parsed)


def _load_parsed(settings: Any, path: Path, parsed: dict[str, Any]) -> None:
    """Load ``path`` into `settings` as dynaconf's TOML loader does, from `parsed` (the
    tables `read_files` parsed from the bytes it read), never from the file again.

    ``toml_loader.load(settings, filename=...)`` opened and read the file itself: a file
    rewritten between `read_files` and that read gave the profiles, the layers and the
    memo's key one file's bytes and the values another's, and `file_values` kept those
    values under the first bytes for the rest of the process (red team 69: testing's root
    resolved to production's once the rewrite was undone, with no overlap seen).
    dynaconf has no loader of tables already parsed: `toml_loader.load` is this `BaseLoader`
    with tomllib's reader, and its one read of the file (`get_source_data`) is replaced.
    """
    from dynaconf.loaders.base import BaseLoader

    class Parsed(BaseLoader):  # type: ignore[misc]  # dynaconf ships no type hints
        def get_source_data(self, files: Any) -> dict[str, Any]:
            return {str(path): parsed} if parsed else {}

    loader = Parsed(
        obj=settings,
        env=None,
        identifier="toml",
        extensions=(".toml",),
        file_reader=tomllib.load,
        string_reader=tomllib.loads,
        opener_params={"mode": "rb"},
    )
    loader.load(filename=str(path))


def _dynaconf_file_values(files: Files, keys: Collection[str]) -> Values:
    # dynaconf loads every file with environments=False and sections merged, so every section
    # stays visible, parsed, cast and formatted as dynaconf does it. Which layer wins is read
    # from the files' own structure (`layers`): dynaconf's history records merged sections,
    # which would credit a key to the last file that touched its section. The winning layer's
    # value is that section's merged value: a later file that set the key there would itself
    # be a later layer. One load for every profile keeps `load` close to one dynaconf load.
    # Imported here: the pytest plugin's start-up never pays for them.
    from dynaconf import Dynaconf
    from dynaconf.utils.parse_conf import DynaconfParseError, MetaValue

    # envvar_prefix=None: dynaconf's env loader reads os.environ itself, ignoring the
    # `environ` a caller passed; the app applies APP_* variables itself.
    # DYNABOXIFY=True is dynaconf's default, given here so that it is in the store from the
    # start: every `set` asks for it (`self.get("DYNABOXIFY", True)`), and a key missing
    # from the store is looked for in every case (`find_the_correct_casing`: four
    # `str.lower`s per stored key) before the default is used, 65 times as dynaconf writes
    # its default settings: 6 M of `app config`'s instructions (bench/README.md
    # "perf-startup62").
    settings = Dynaconf(
        settings_files=[],
        environments=False,
        merge_enabled=True,
        envvar_prefix=None,
        load_dotenv=False,
        DYNABOXIFY=True,
    )
    # Each file is handed to dynaconf's TOML loader itself, in the order `layers` reads them.
    # Given as `settings_files`, dynaconf adds `<name>.local.toml` next to every file it finds,
    # whatever `skip_files` says, so the sandbox's load read settings.local.toml after all,
    # and loads the local files after both shared ones, so a key set in settings.local.toml
    # and .secrets.toml was credited to the wrong file.
    # A value whose cast fails (dynaconf casts as it loads a file) is set aside, and is a
    # problem of the profiles that take it, as an unresolvable `@format` is.
    failed: dict[tuple[Path, str, str], SettingsCastError] = {}
    for path in files.paths:
        try:
            # A copy: dynaconf keeps tables it is given, and `files.data` stays as parsed.
            _load_parsed(settings, path, copy.deepcopy(files.data[path]))
        except DynaconfParseError as error:
            # The file as `read_files` parsed it (the tables `layers` reads), not read again.
            parsed = copy.deepcopy(files.data[path])
            found = _cast_errors(path, parsed, settings)
            if not found:  # not one value of its own (none failed when cast alone)
                raise SettingsCastError(path, "?", "?", "?", str(error)) from None
            failed.update({(path, *where): refusal for where, refusal in found.items()})
            _load_setting_aside(settings, path, parsed, found)
    evaluated: dict[tuple[str, str], Any] = {}

    def value_of(section: str, key: str, raw: Any) -> Any:
        # One key at a time: a value that cannot be resolved here (`@format {env[X]}` with X
        # unset) is a problem of the profiles that use it, not of every profile.
        if (selection := reads_selection(raw)) is not None:
            return Unresolved(raw, "", selection=selection)
        if (section, key) not in evaluated:
            try:
                evaluated[section, key] = settings.get(f"{section}.{key}")
            except Exception as error:  # any of dynaconf's formatters and casts
                evaluated[section, key] = Unresolved(raw, f"{type(error).__name__}: {error}")
        found = evaluated[section, key]
        if isinstance(found, MetaValue):
            # Dynaconf's object, left as the value: refused as "port = Merge([1]) on
            # 140606412562128", text the file does not hold (red team 63 on regress).
            return Unresolved(raw, type(found).__name__, unapplied=True)
        # The section is merged across files: the value that failed is the last file's, and
        # the refusal named the first file's text with the last one's name (`data_root =
        # 'data/development' (from settings.local.toml ...)` for an `@get` there: red team 60).
        return Unresolved(raw, found.error) if isinstance(found, Unresolved) else found

    out: Values = {name: {} for name in files.profiles}
    for profile, values in out.items():
        for layer in layers(files, profile):
            for key, raw in layer.body.items():
                if key in keys:
                    refusal = failed.get((layer.path, layer.section, key))
                    value = (
                        Unresolved(raw, refusal.problem, refusal)
                        if refusal is not None
                        else value_of(layer.section, key, raw)
                    )
                    values[key] = (value, layer.source)
    return out
