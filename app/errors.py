"""One small exception hierarchy for the whole app.

Every error carries its data as attributes, builds a message that names the value,
the reason and the fix, and knows the process exit code (sysexits) and, where it can
reach a client, the HTTP status and a stable machine-readable ``code``.

An error class declares its data once, as annotated fields (dataclass-style): they are the
constructor's arguments, its attributes, and what a pickled copy is rebuilt from (errors
cross process boundaries under pytest-xdist). Its ``template`` words the refusal from those
fields; an error whose wording depends on their values overrides ``message`` instead.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, dataclass_transform

# sysexits.h, the exit codes the command line promises (see docs/reference/errors.md).
EX_OK = 0
EX_USAGE = 2  # click's own code for usage errors; sysexits' 64 is not used on purpose
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


def json_loads(raw: str | bytes) -> Any:
    """``json.loads(raw)`` of a file in a data root, where nesting too deep for Python's
    stack is damage like any other: a `ValueError`, which every reader handles.

    ``json.loads`` recursed once per level and raised ``RecursionError``: a line ``[[[...]]]``
    1,000 levels deep appended to ``audit.jsonl`` (whose lines of another shape are left
    alone), a ``session.json`` or a stamp written so, made ``app data check``, ``sessions
    list``, every command and every server's start-up a traceback, exit 1 (red team 51).
    """
    import json

    try:
        return json.loads(raw)
    except RecursionError:
        msg = "JSON nested too deep to read (more levels than Python's stack holds)"
        raise ValueError(msg) from None


#: How a holder's loss begins whose cause is its watcher's own failure, not its hold's (the
#: thread that looks at its lock file, or a replica's at its hold, every lock_check_seconds):
#: each backend says it as its ``...UnwatchedError``.
WATCH_FAILED = "could not be watched"


def watch_failed(error: BaseException) -> str:
    """The reason a watcher that failed with `error` stops its holder for, naming it."""
    said = " ".join(str(error).split())
    named = f"{type(error).__name__}: {said}" if said else type(error).__name__
    return f"{WATCH_FAILED}: its watcher failed with {named}"


def printable(text: str) -> str:
    """`text` with each character a terminal acts on or hides written as Python escapes it
    (``\\x1b``, ``\\n``, ``\\r``, ``\\u202e``).

    A session's title is its client's text, and a path is whatever its directory was named:
    printed as they are, ``\\r`` and a forged line rewrote the operator's screen, an escape
    sequence set the terminal's title, and a right-to-left override reversed what followed.
    A data root's name did the same to the pytest header that names a live server on it,
    and a newline there made a line of its own, shown as the plugin's (red team 47).

    A byte that is not UTF-8 (Python's U+DC80 to U+DCFF for it) is written as the byte it
    is, ``\\xff``: as Python escapes it, ``\\udcff``, it named a character no file name
    holds (red team 60 on regress). Written raw, as `app data check` did before red team 60,
    one of 0x80 to 0x9F is a C1 control to a terminal that is not in UTF-8 (0x9B is CSI).
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    if "\udc80" <= char <= "\udcff":
        return f"\\x{ord(char) - 0xDC00:02x}"
    return repr(char)[1:-1]


class PrintableLines(logging.Filter):
    """Each line of a log record's message, and of its traceback, `printable`.

    A file a start-up check names (a leftover in ``.tmp/`` named with an escape sequence) or
    a root's path so named acted on the terminal a server runs in, where a command's lines
    show it as text (red team 60 on operations: the server's log handler). A command's own
    warnings go through Python's last-resort handler, which had no such filter: `app data
    purge` of a root where a session's directory is a link to a directory so named cleared
    the operator's screen with its "purge left ..." (red team 60 on regress); `app.cli.main`
    gives that handler this filter too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        # The values given to the format (a file's name, a request's path, an error's
        # quoted names) are shown as they are; the format's own `app ...` are given the
        # profile (`as_selected`, red team 62 on regress).
        shown = _printable_lines(text, _given(record.args) if _names_a_command(text) else ())
        if shown != text:
            record.msg, record.args = shown, None
        if record.exc_info and not record.exc_text:
            # What the formatter would write, made printable: an exception's text is a path
            # or a client's string as often as a message is.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _printable_lines(record.exc_text)
        if record.stack_info:
            record.stack_info = _printable_lines(record.stack_info)
        return True


def _printable_lines(text: str, keep: Sequence[str] = ()) -> str:
    return "\n".join(printable(line) for line in as_selected(text, keep).split("\n"))


class AppText(str):
    """Text the app writes itself (a remedy, a constant such as `AFTER_FAILED_SYNC`) given to
    a log line's format as an argument: its `app ...` are given the profile as the format's
    own are, where every other ``str`` argument is a value shown as given (`_given`).

    The server's log after a failed fsync, `app --profile production serve`'s, said to run
    `app data check` (development's, as written) before the start: the remedy was an
    argument of its line, left as given (red team 63 on regress)."""

    __slots__ = ()


def _given(args: object) -> list[str]:
    """The text of a log record's arguments, as ``%s`` and ``%r`` show it, for
    `as_selected` to leave: an error's quoted values (`quoted_values`), not its message."""
    if isinstance(args, Mapping):
        values = list(args.values())
    elif isinstance(args, tuple):
        values = list(args)
    else:
        return []
    kept: list[str] = []
    for value in values:
        if isinstance(value, AppText):
            continue
        if isinstance(value, AppError):
            kept.extend(quoted_values(value))
        elif isinstance(value, str | os.PathLike):
            text = str(os.fspath(value))
            kept.extend((text, repr(text), *_shell_forms(text)))
        elif isinstance(value, BaseException):
            # Another's error (an OSError naming a file, a driver's): its text is no remedy
            # of the app's, and a file it names was given the profile (red team 63 on
            # regress: "could not move blob .../`app --profile testing status`").
            kept.extend((str(value), repr(value)))
    return kept


#: The profile ``--profile`` selected for the command this process runs, once it is loaded
#: (`app.cli` sets it, and clears it as the command ends): every `app ...` a message or a log
#: line names is given it (`as_selected`).
_SELECTED: list[str] = []


def select_for_commands(profile: str | None) -> None:
    """Give every `app ...` a line names ``--profile profile`` from now on (None: none)."""
    _SELECTED[:] = [] if profile is None else [profile]


def _names_a_command(text: str) -> bool:
    """Whether `as_selected` has anything to give `text`: a profile was selected and the text
    names an `app ...` command (a log record's arguments are read only then: every access
    log line passes here)."""
    return bool(_SELECTED) and "\x60app " in text


def as_selected(text: str, keep: Sequence[str] = ()) -> str:
    """`text` with each `app ...` command it names between backticks given the ``--profile``
    the command was given (`select_for_commands`), where it names none.

    The messages and log lines name the command that resolves them as a bare ``app ...``,
    which selects the profile the shell's ``ENV_FOR_DYNACONF`` names, else development:
    after ``app --profile production data purge --yes-i-mean-it``, "`app sessions list
    --trash` shows them" listed development's trash, a refusal's "`app status` shows the
    holder" said "held by: nobody" of development's root, and the log of ``app --profile
    staging serve`` named an `app data check --repair` of development's (red team 62).
    A command inside one of `keep` (the values the text quotes: `quoted_values`) is left."""
    if not _names_a_command(text):
        return text
    import re  # here: a line that names no command does not pay for it

    # A value the text quotes (a file's or a session's name) is shown as it is: "no file
    # '`app status`' of session ..." named a file that is not there, and `--file` copied
    # from it was refused again (red team 62 on regress).
    kept = [
        found.span()
        for value in keep
        if "\x60app " in value
        for found in re.finditer(re.escape(value), text)
    ]

    def given(command: re.Match[str]) -> str:
        start, end = command.span()
        if any(first < end and start < last for first, last in kept) or _selects_a_profile(
            command.group(1)
        ):
            return command.group()
        return f"\x60app --profile {_SELECTED[0]} {command.group(1)}\x60"

    return re.sub(r"\x60app ([^\x60]*)\x60", given, text)


def _selects_a_profile(command: str) -> bool:
    """Whether the words of `command` (an `app ...` after ``app``) give ``--profile`` a name.

    Not "``--profile`` anywhere in its text": a remedy that names a file or an entry whose
    name holds it (``--file 'notes--profile.txt'``) was left without the profile, and, run
    as written, restored into development's root (red team 63 on regress)."""
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:  # a quote a name left open: its words as the shell would not read them
        words = command.split()
    return any(
        word.startswith("--profile=")
        or (word == "--profile" and at + 1 < len(words) and not words[at + 1].startswith("-"))
        for at, word in enumerate(words)
    )


def quoted_values(error: AppError) -> list[str]:
    """Each string of `error`'s fields (one level down in a sequence or a mapping's values)
    as its message quotes it (``repr``: ``'`app status`'``): a name given by a client or
    on the command line, where the app's own text (a ``fix``) is written as it is, for
    `as_selected` to leave."""
    found: list[str] = []
    for spec in fields(error):
        value = getattr(error, spec.name, None)
        items = (
            list(value.values())
            if isinstance(value, Mapping)
            else list(value)
            if isinstance(value, list | tuple | set | frozenset)
            else [value]
        )
        for item in items:
            if isinstance(item, str):
                found.append(repr(item))
                found.extend(form for form in _shell_forms(item) if form != item)
            elif isinstance(item, os.PathLike):
                # A path (a data root's, a file's) is a name wherever the message shows it:
                # as it is, and inside the shell word of a command (`flock -s '<root>/...'`).
                # Given the profile there, the refusal named another root, and its way to
                # wait another lock file (red team 63 on regress).
                text = os.fspath(item)
                if isinstance(text, str):
                    found.extend([text, repr(text), *_shell_forms(text)])
    return found


def _shell_forms(text: str) -> list[str]:
    """`text` as `shell_word` writes it inside a word of a longer path (quoted by ``shlex``,
    or escaped for printf(1)), for `as_selected` to find it there."""
    return [text.replace("'", "'\"'\"'"), _printf_escaped(text)]


@dataclass_transform(eq_default=False, field_specifiers=(field,))
class AppError(Exception):
    """Base class of every error the app raises on purpose.

    A subclass declares its data as annotated fields and words the refusal in ``template``
    (or ``message``); normalising a field belongs in ``__post_init__``, which ends by calling
    the base's.

    Attributes:
        exit_code: the process exit code the command line uses for this error.
        code: a stable identifier for machines (HTTP error bodies, ``--json`` output).
        http_status: the HTTP status the server answers with.
    """

    exit_code: ClassVar[int] = EX_SOFTWARE
    code: ClassVar[str] = "app_error"
    http_status: ClassVar[int] = 500
    template: ClassVar[str]  # str.format()ted with the fields, like pydantic v1's msg_template
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # every subclass, once raised

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            msg = (
                f"{cls.__name__} defines __init__: declare its data as annotated fields and "
                "word the refusal in `template` (or a `message` property); AppError writes the "
                "constructor"
            )
            raise TypeError(msg)
        # The dataclass code is written when the class is first raised, in __new__: writing
        # it here for every error class cost about 4 ms of every `app` command's and pytest
        # run's start-up (bench/config_startup.py), and most runs raise none of them.

    if not TYPE_CHECKING:  # type checkers see the dataclass_transform constructor

        def __new__(cls, *args: Any, **kwargs: Any) -> Self:
            if cls not in _WRITTEN and cls is not AppError:
                _write_dataclass_code(cls)
            return super().__new__(cls, *args, **kwargs)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """What was refused, why, and the command or setting that resolves it."""
        return self.template.format_map(vars(self))

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Default exception pickling would call the class with `args`, the message alone.
        arguments = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        return (partial(type(self), **arguments), (), dict(vars(self)))

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON-ready mapping: ``code`` and ``message``."""
        return {"code": self.code, "message": self.message}


#: Error classes that are dataclasses already; the others are made so by `AppError.__new__`.
_WRITTEN: set[type[AppError]] = set()
_WRITING = threading.Lock()  # errors are raised on several threads (a server's, tests')


def _write_dataclass_code(cls: type[AppError]) -> None:
    """Make `cls` and its error bases dataclasses, bases first (a subclass's fields follow
    its bases'). eq=False: exceptions compare by identity; repr=False keeps Exception's.

    The class counts as written only once its ``__init__`` is: another thread that raises it
    meanwhile waits here instead of using a base's constructor.
    """
    with _WRITING:
        for klass in reversed(cls.__mro__):
            if issubclass(klass, AppError) and klass is not AppError and klass not in _WRITTEN:
                dataclass(eq=False, repr=False)(klass)
                _WRITTEN.add(klass)


# --- configuration (exit 78) -------------------------------------------------------


class ConfigError(AppError):
    """The configuration cannot be used as it stands."""

    exit_code = EX_CONFIG
    code = "config_error"


class SettingsNotFoundError(ConfigError):
    """The settings directory or its ``settings.toml`` does not exist."""

    code = "settings_not_found"
    template = (
        "no settings.toml found: looked in {looked_in} ({reason}); "
        "set APP_SETTINGS_DIR to the directory that holds settings.toml"
    )

    looked_in: Path
    reason: str


class SettingsDirEmptyError(SettingsNotFoundError):
    """``APP_SETTINGS_DIR`` is set to an empty string, which names no directory."""

    code = "settings_dir_empty"
    template = (
        "{variable} is set but empty, so it names no settings directory; unset it "
        "(`unset {variable}`) to use the project directory {project_dir}, or "
        "set it to the directory that holds settings.toml"
    )

    looked_in: Path = field(init=False)  # where unsetting the variable would look
    reason: str = field(init=False)
    variable: str
    project_dir: Path

    def __post_init__(self) -> None:
        self.looked_in = self.project_dir
        self.reason = f"{self.variable} is set but empty"
        super().__post_init__()


class SettingsUnreadableError(ConfigError):
    """A settings file, or its directory, that this process may not read (``EACCES``): a
    command run as another user than the settings' (``setpriv``, ``runuser``, a test's child
    switched to ``nobody``) was told the data root's filesystem refused it (red team 58)."""

    code = "settings_unreadable"
    template = (
        "cannot read the settings at {path}: permission denied for this process (user "
        "{user}); nothing was opened or changed. Run the command as a user who may read the "
        "settings directory and its files (the service's own, or the developer's), or give "
        "that user read access (`ls -ld {path_word}`, then `chmod` or `setfacl -m "
        "u:{user}:rX`)"
    )

    path: Path
    user: str
    path_word: str = field(init=False)  # as a command names it (`shell_word`)

    def __post_init__(self) -> None:
        self.path_word = shell_word(self.path)
        super().__post_init__()


class SettingsNotAFileError(ConfigError):
    """A settings file's name that is there but names no regular file: a symbolic link whose
    target is missing (a secrets volume not mounted), a directory, a FIFO. Each was left out
    as if it were absent, and every value it sets with it: development served without its
    token, production was told to set the api_token its secrets file sets (red team 59)."""

    code = "settings_not_a_file"
    template = (
        "cannot read the settings file {path}: it is {what}, where a regular file belongs; "
        "left out, the values it sets (a token, a data_root) would silently be missing, so "
        "nothing was opened or changed. {remedy}"
    )

    path: Path
    what: str
    remedy: str


class SettingsSyntaxError(ConfigError):
    """A settings file is not valid TOML, or not UTF-8 without a byte order mark, which TOML
    reads (a Latin-1 byte, UTF-16, a mark: each named, with the conversion), or nests a
    value deeper than any setting does (more than 32 levels)."""

    code = "settings_syntax"

    path: Path
    line: int | None
    problem: str

    @property
    def message(self) -> str:
        where = f"{self.path}, line {self.line}" if self.line is not None else str(self.path)
        return f"{where}: invalid TOML: {self.problem}; fix the file and run `app doctor`"


class SettingsAmbiguousError(ConfigError):
    """A settings file names one section, or one key, twice in different case, or two
    sections whose names differ only in their ``-`` and ``_`` (one for the other, or one
    left out).

    Profile and key names are case-insensitive (dynaconf's and the app's), so TOML's two
    spellings are one name, and one silently replaced the other: the source a value is
    shown with could be a table the value did not come from.
    """

    code = "settings_ambiguous"

    path: Path
    spellings: Sequence[str]
    section: str | None  # None: the spellings are sections; else keys of this section

    def __post_init__(self) -> None:
        self.spellings = tuple(self.spellings)
        super().__post_init__()

    @property
    def message(self) -> str:
        if self.section is None and len({name.lower() for name in self.spellings}) > 1:
            # Two profiles whose names differ in '-' and '_' (and case) only (red team 71;
            # one left out or added too, round e).
            named = " and ".join(f"[{name}]" for name in self.spellings)
            # [PROD-EU] and [prodeu] were said to differ "only in their '-' and '_'"
            # (red team 71, round j).
            folded = {name.replace("-", "").replace("_", "") for name in self.spellings}
            cased = " and in case" if len(folded) > 1 else ""
            return (
                f"{self.path}: sections {named} name profiles that differ only in their '-' "
                f"and '_' (one for the other, or one left out){cased}, so a name typed for "
                "one selects the other (the protection, token and data_root of another profile "
                "than meant); rename one so that the names differ otherwise, and run "
                "`app doctor`"
            )
        if self.section is None:
            named = " and ".join(f"[{name}]" for name in self.spellings)
            what = f"sections {named} are one profile"
        else:
            named = " and ".join(repr(name) for name in self.spellings)
            what = f"keys {named} of [{self.section}] are one setting"
        return (
            f"{self.path}: {what} (names are not case-sensitive), so one would silently "
            "replace the other; keep one spelling, merge what the other holds into it, and "
            "run `app doctor`"
        )


class SettingsNameError(ConfigError):
    """A settings file's section whose name is not a plain profile name.

    A profile is named with ASCII letters, digits, ``-`` and ``_``. A section written
    ``["pr\u043eduction"]`` (a Cyrillic ``\u043e``), ``["\uff50roduction"]`` (full width) or
    ``["production "]`` was a profile of its own: it printed as ``production`` in every list of
    known profiles, the real ``[production]`` was then unknown, and a name copied from that
    list selected a profile that production's protection, keyed on its name, did not cover.
    A plain name that is one of dynaconf's own settings (``[environments_for_dynaconf]``)
    is refused too: dynaconf obeyed it as a switch (red team 69).
    """

    code = "settings_name_not_plain"

    path: Path
    section: str
    #: A plain section of the same files it looks like, or None.
    looks_like: str | None
    #: False for a key outside any section named as one of dynaconf's settings.
    table: bool = True

    @property
    def message(self) -> str:
        import unicodedata  # here: only a refusal pays for it

        odd = [c for c in dict.fromkeys(self.section) if not plain_name(c)]
        if not odd and "__" in self.section:
            # dynaconf's separator of nested keys (`config_files.NESTED_SEPARATOR`).
            what = f"section [{self.section}]" if self.table else f"key {self.section}"
            outer, _, inner = self.section.lower().partition("__")
            read = (
                f"key {inner} of section [{outer}] and sets that, so it would change "
                f"[{outer}]'s {inner}"
                if outer and inner and "_" not in (inner[0], inner[-1])
                else "a key nested in another section ('a__b' is key b of section [a]) and "
                "sets that"
            )
            fix = (
                "rename the section (a profile's name may not hold '__')"
                if self.table
                else "remove it (the app's keys sit in a [section])"
            )
            return (
                f"{self.path}: {what} holds '__', dynaconf's separator of nested keys: "
                f"dynaconf, which loads every section at once, reads it as {read}, not as "
                f"{'a profile of its own' if self.table else 'a setting of the app'}; {fix}, "
                "and run `app doctor`"
            )
        if not odd and self.section:
            # Plain, but one of dynaconf's own settings (`config_files.dynaconf_s_own`).
            what = f"section [{self.section}]" if self.table else f"key {self.section}"
            upper = self.section.upper()
            if upper.endswith("_FOR_DYNACONF"):
                rule = "may not end in '_for_dynaconf'"
            elif upper.startswith("DYNACONF"):
                rule = "may not start with 'dynaconf'"
            else:  # `[dynaboxify]`, `[project_root]`: the rule above named neither
                rule = f"may not be {self.section.lower()}, a name dynaconf keeps for itself"
            fix = (
                f"rename the section (a profile's name {rule})"
                if self.table
                else "remove it (the app's keys sit in a [section]; dynaconf's switches are "
                "not settings of the app)"
            )
            return (
                f"{self.path}: {what} is named as one of dynaconf's own settings "
                f"({self.section.upper()}), which dynaconf obeys when it loads every section "
                "at once: it would change how the settings files are read, not configure a "
                f"profile; {fix}, and run `app doctor`"
            )
        held = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'with no name')}" for c in odd)
        what = f"it holds {held}" if odd else "it is empty"
        like = f", and only looks like [{self.looks_like}]" if self.looks_like else ""
        rename = f" to [{self.looks_like}]" if self.looks_like else ""
        return (
            f"{self.path}: section [{self.section}] is not a plain profile name ({what}{like}): "
            "a profile is named with ASCII letters, digits, '-' and '_' only, so that no name "
            f"can pass for another; rename the section{rename}, and run `app doctor`"
        )


def user_words(name: str, uid: int) -> str:
    """How a message names a user: ``user 'name' (uid N)``, or ``uid N`` for an id with no
    name in the password database (``name`` empty; `app.dataroot.user_name` looks it up)."""
    return f"user {name!r} (uid {uid})" if name else f"uid {uid}"


#: Unicode's default-ignorable code points (DerivedCoreProperties.txt, 15.1) that are not
#: format characters (``Cf``), as a character class of `re`: each shows as nothing (the
#: combining grapheme joiner, the Hangul fillers, the Khmer inherent vowels, the Mongolian free
#: variation selectors, the variation selectors, code points reserved as ignorable), though
#: `str.isprintable` says it prints. ``unicodedata`` has no such property, and the ``regex``
#: package's ``\p{Default_Ignorable_Code_Point}`` would be a dependency for one line.
SHOWS_AS_NOTHING = (
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u2065\u3164"
    "\ufe00-\ufe0f\uffa0\ufff0-\ufff8\U000e0000-\U000e0fff]"
)


def shell_word(value: str | os.PathLike[str]) -> str:
    """``value`` as one word of a POSIX shell command a message tells a human to run.

    A path with a space cut in two: a data root under ``/srv/my data`` was told to run
    ``rm /srv/my data/.trash/<entry> && mv ...``, whose ``rm`` took the link out of the trash
    and whose ``mv`` then failed, the entry's data left where nothing names it (red team 42).
    """
    import re
    import shlex  # here: only a refusal pays for it

    text = os.fspath(value)
    # A character that shows as nothing, quoted as it is, read as the name without it:
    # ``'settings.local.toml\u034f'`` as the very file the refusal said is not there (red team
    # 71 on regress, round r).
    if text.isprintable() and (text.isascii() or not re.search(SHOWS_AS_NOTHING, text)):
        return shlex.quote(text)
    # A byte that is not UTF-8 (Python's U+DC80 to U+DCFF for it) or a control character:
    # quoted as it was, ``'/srv/s\udcff/data'``, the command acted on a path of those six
    # characters, and a newline cut it in two (red team 60). Bash's ANSI-C quoting
    # (``$'/srv/s\xff/data'``) is no POSIX sh's: dash, Debian's and Ubuntu's ``sh``, read it
    # as ``$`` and a quoted ``\xff``, so the command acted on ``$/srv/s\xff/data`` (red team
    # 60 on regress). printf(1)'s octal escapes name every byte in any POSIX shell (and in
    # zsh, ksh and fish 3.4 on): ``"$(printf '/srv/s\377/data')"``; the newlines a command
    # substitution would drop at its end follow it, quoted as they are.
    kept = text.rstrip("\n")
    newlines = text[len(kept) :]
    return f"\"$(printf -- '{_printf_escaped(kept)}')\"" + (f"'{newlines}'" if newlines else "")


def unset_note(names: Sequence[str]) -> str:
    """What a message that says ``unset NAME`` adds where a name is no shell identifier, or
    ``""``: no shell can unset such a variable (``ENV_FOR_DYNACONF`` spelled with a
    Cyrillic U+0415 through ``env``, a docker ``-e``): bash's ``unset`` leaves it set and
    says nothing, dash's refuses it: the command a refusal named resolved nothing
    (red team 72)."""
    import re  # here: only a refusal pays for it

    odd = [name for name in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)]
    if not odd:
        return ""
    words = ", ".join(shell_word(name) for name in odd)
    without = " ".join(f"-u {shell_word(name)}" for name in odd)
    return (
        f" ({words} {'is' if len(odd) == 1 else 'are'} no shell identifier, so no shell can "
        "`unset` it: bash's `unset` leaves it set and says nothing. Remove it where it is set "
        "(an environment file, a unit's Environment=, a container's -e), or run the command "
        f"under `env {without}`)"
    )


def _printf_escaped(text: str) -> str:
    """`text` as printf(1)'s format inside single quotes (`shell_word`)."""
    import re  # here: only a refusal pays for it

    escaped = []
    for char in text:
        if "\udc80" <= char <= "\udcff":
            escaped.append(f"\\{ord(char) - 0xDC00:03o}")
        elif char in "\\%":
            escaped.append(char * 2)  # printf's format: ``\\`` and ``%%`` are the characters
        elif char == "'":
            escaped.append("'\\''")
        elif not char.isprintable() or (not char.isascii() and re.match(SHOWS_AS_NOTHING, char)):
            escaped.append("".join(f"\\{byte:03o}" for byte in char.encode(errors="surrogatepass")))
        else:
            escaped.append(char)
    return "".join(escaped)


def plain_name(name: str) -> bool:
    """Whether `name` is a plain profile name: ASCII letters, digits, ``-`` and ``_``."""
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)


class SettingsCastError(ConfigError):
    """A settings value whose dynaconf cast (``@int``, ``@float``, ``@bool``, ``@json`` ...) fails.

    dynaconf casts a file's values as it loads it, and every profile's sections are loaded in
    one load (`app.config_files`): the failing values are set aside there, so that the refusal
    stops only the profiles that take the key from that section (``profile``), and names the
    file, the section and the key, not only dynaconf's message.
    """

    code = "settings_cast"

    path: Path
    section: str
    key: str
    value: str
    problem: str
    #: The profile refused; None when the value could not be told apart (then every one is).
    profile: str | None = None

    @property
    def message(self) -> str:
        where = f"{self.path}: [{self.section}] {self.key} = {self.value!r} cannot be cast"
        who = (
            f"profile {self.profile!r} takes {self.key} from there, so it does not load"
            if self.profile is not None
            else "every profile's sections are loaded together, so no profile loads"
        )
        return (
            f"{where} ({self.problem}); {who} until it is fixed: correct the value or its "
            "@-cast, and run `app doctor`"
        )


def not_plain_ascii(name: str) -> str:
    """``"written with U+0440 CYRILLIC SMALL LETTER ER, not plain ASCII"``, or ``""``.

    For a refusal that quotes a name the reader may take for another: with a Cyrillic U+0440
    for its ``p``, a profile prints as ``'production'``, a key as ``data_root``, and "unknown
    profile 'production'; known profiles: ..., production" leaves nothing to fix.
    """
    odd = [c for c in dict.fromkeys(name) if not (c.isascii() and c.isprintable())]
    if not odd:
        return ""
    import unicodedata  # here: only a refusal pays for it

    named = ", ".join(
        not_utf8_byte(c)
        or f"U+{ord(c):04X} {unicodedata.name(c, 'with no name')}{_BOM if c == chr(0xFEFF) else ''}"
        for c in odd
    )
    return f"written with {named}, not plain ASCII"


#: What U+FEFF is where a name holds it (red team 51: an environment file saved with one).
_BOM: Final = (
    " (a byte-order mark, which some editors write at the start of a file: save the file "
    "as UTF-8 without one)"
)


def not_utf8_byte(char: str) -> str:
    """How a message names `char` where it stands for a byte that is not UTF-8 (Python keeps
    such a byte of a command line, the environment or a path as U+DC80 to U+DCFF), else ``""``.

    ``ENV_FOR_DYNACONF`` set in a shell of another encoding (Latin-1's ``é`` is the byte
    0xE9) was refused as written with "U+DCE9 with no name", or as "a control character
    (pasted from a web page?)": neither says what to fix (red team 47).
    """
    if not "\udc80" <= char <= "\udcff":
        return ""
    return (
        f"the byte 0x{ord(char) - 0xDC00:02X}, which is not UTF-8 (set in a shell or a file "
        "of another encoding, such as Latin-1?)"
    )


def noting_odd(shown: str, name: str) -> str:
    """``shown`` (a refusal's words for ``name``), followed by what `not_plain_ascii` finds
    in ``name`` in brackets, if anything."""
    odd = not_plain_ascii(name)
    return f"{shown} ({odd})" if odd else shown


def folded(name: str) -> str:
    """`name` as it is read (NFKC, stripped, lower case), to find the known name it looks like."""
    import unicodedata

    return unicodedata.normalize("NFKC", name).strip().lower()


class UnknownProfileError(ConfigError):
    """A profile name that is not a section of ``settings.toml``."""

    code = "unknown_profile"

    name: str
    known: Sequence[str]
    source: str

    def __post_init__(self) -> None:
        self.known = tuple(self.known)
        super().__post_init__()

    @property
    def message(self) -> str:
        what = f"unknown profile {self.name!r}" if self.name else "an empty profile name"
        return (
            f"{what} (from {self.source}){self._lookalike()}{self._kept()}; known profiles: "
            f"{', '.join(self.known)}. Set ENV_FOR_DYNACONF or --profile to one of them, "
            "or add a section to settings.toml"
        )

    def _kept(self) -> str:
        """What an environment file's syntax left in the value, where the rest is a profile:
        ``"production"`` from docker's ``--env-file`` (which keeps quotes), ``production #
        live`` from a file that reads a comment only at a line's start (docker's too). Both
        were refused as an unknown profile beside ``production`` in the list of known ones,
        and the reader left to spot the difference (red team 61)."""
        core = self.name.strip()
        if len(core) > 1 and core[0] in "\"'" and core[-1] == core[0]:
            inner = core[1:-1].strip()
            if inner.lower() in self.known:
                return (
                    f": it is {inner!r} in quotes, which the file or tool that set it kept as "
                    "part of the value (docker's --env-file does); write it without them"
                )
        before, hash_, _ = core.partition("#")
        if hash_ and before.strip().lower() in self.known:
            return (
                f": it is {before.strip()!r} followed by a comment, which the file that set it "
                "kept as part of the value (docker's --env-file, for one, reads '#' as a "
                "comment only at the start of a line); move the comment to a line of its own"
            )
        return ""

    def _lookalike(self) -> str:
        odd = not_plain_ascii(self.name)
        if not odd:
            return ""
        import difflib  # here: only a refusal pays for it

        near = difflib.get_close_matches(folded(self.name), list(self.known), n=1)
        like = f", and only looks like {near[0]!r}" if near else ""
        return f": it is {odd}{like}"


class SectionNotAProfileError(UnknownProfileError):
    """A section of a settings file beside ``settings.toml`` that names none of its profiles.

    The other files (``.secrets.toml``, the local ones) only add to profiles ``settings.toml``
    declares, so every command refuses to load while such a section is there, whatever profile
    it selects. The refusal was ``unknown_profile``'s, "set ENV_FOR_DYNACONF or --profile to
    one of them": run as written, ``ENV_FOR_DYNACONF=production app serve`` met the same
    refusal (red team 61 on operations). It names the file, the section, the profile it looks
    meant as, and the two edits that resolve it.
    """

    #: The section as written, the file that holds it, and the file that declares profiles.
    section: str
    path: Path
    settings_file: Path

    @property
    def message(self) -> str:
        import difflib  # here: only a refusal pays for it

        near = difflib.get_close_matches(folded(self.section), list(self.known), n=1)
        meant = f" (a typo of [{near[0]}]?)" if near else ""
        rename = f"[{near[0]}]" if near else "one of them"
        section = noting_odd(f"[{self.section}]", self.section)
        return (
            f"section {section} of {self.path} names no profile{meant}: profiles are the "
            f"sections of {self.settings_file} ({', '.join(self.known)}), and the other "
            "settings files only add to those, so no profile loads while it is there "
            "(ENV_FOR_DYNACONF and --profile cannot resolve it). Rename the section in "
            f"{self.path} to {rename}, or add [{self.name}] with its own data_root to "
            f"{self.settings_file}; then run `app doctor`"
        )


class VariableMisspeltError(ConfigError):
    """A variable that looks meant as one the app reads, while that one is not set.

    ``ENV_FOR_DYNACOF=production`` (or ``env_for_dynaconf``, ``DYNACONF_ENV``, ``APP_ENV``)
    selects no profile, and ``APP_SETTING_DIR`` names no settings directory: without this
    the app would run on its defaults, silently.
    """

    code = "variable_misspelt"

    name: str
    value: str
    #: The variable it looks meant as, and what that one does.
    meant: str
    role: str
    #: What the app uses while only `name` is set.
    fallback: str
    #: The command that does what `name` meant.
    fix: str

    @property
    def message(self) -> str:
        name = noting_odd(f"{self.name}={self.value!r}", self.name)
        return (
            f"environment variable {name} looks meant as {self.meant}, "
            f"but only {self.meant} {self.role}; as it is, the app would use {self.fallback}. "
            f"To use what it names: {self.fix}. To use {self.fallback}: unset {self.name}"
            f"{unset_note([self.name])}"
        )


class SettingsFileMisnamedError(ConfigError):
    """A file of the settings directory whose name looks meant as a settings file the app
    reads, while that file is not there.

    ``secrets.toml`` (no leading dot), ``Settings.local.toml`` or ``settings_local.toml``
    is read by nothing: its ``[production] data_root`` or ``api_token`` was ignored, and the
    profiles took settings.toml's values with nothing said, as a misspelt variable's
    (`VariableMisspeltError`) did (red team 71).
    """

    code = "settings_file_misnamed"

    path: Path
    #: The settings file it looks meant as (a bare name, in the same directory).
    meant: str
    #: The other files of the directory that look meant as it too (bare names).
    also: tuple[str, ...] = field(default=(), kw_only=True)

    @property
    def message(self) -> str:
        directory = self.path.parent
        others = ""
        if self.also:
            # Two near misses of one name were each told to `mv` themselves to it: the second
            # `mv` replaced the first file, its values lost with nothing said (red team 71,
            # round o).
            named = ", ".join(shell_word(name) for name in self.also)
            others = (
                f" ({named} {'looks' if len(self.also) == 1 else 'look'} meant as "
                f"{self.meant} too: `mv` one only, since the next `mv` would replace it, "
                "once what the others set is copied into it)"
            )
        return (
            f"settings file {shell_word(str(self.path))} looks meant as {self.meant}, which is "
            "not there; the "
            "app reads only settings.toml, .secrets.toml, settings.local.toml and "
            # Its name as a shell word: ``.secrets.local.toml\u200b`` read as the very name
            # the sentence said "is not there" (red team 71, round o).
            f".secrets.local.toml, so as it is, every value in {shell_word(self.path.name)} is "
            "ignored. To "
            f"use it: `mv {shell_word(str(self.path))} {shell_word(str(directory / self.meant))}`"
            f"{others}. If it is not the app's, move it out of the settings directory"
        )


class DynaconfSwitchError(ConfigError):
    """A dynaconf switch variable that would silently change how settings load."""

    code = "dynaconf_switch"

    names: Sequence[str]

    def __post_init__(self) -> None:
        self.names = tuple(self.names)
        super().__post_init__()

    @property
    def message(self) -> str:
        return (
            f"environment variable(s) {', '.join(self.names)} would change which files or "
            "profile dynaconf loads behind the app's back; the app configures dynaconf itself "
            "and selects the profile with ENV_FOR_DYNACONF or --profile only. "
            f"Unset them: unset {' '.join(self.names)}{unset_note(self.names)}"
        )


class InvalidSettingError(ConfigError):
    """One setting has a value the app cannot use."""

    code = "invalid_setting"

    profile: str | None  # None: the setting belongs to no profile (a stray variable)
    key: str
    value: object
    problem: str
    source: str

    @property
    def message(self) -> str:
        shown = "is not set" if self.value is None else f"= {self.value!r}"
        where = f"profile {self.profile!r}: " if self.profile is not None else ""
        return f"{where}{self.key} {shown} (from {self.source}): {self.problem}"


class DataRootOverlapError(ConfigError):
    """Two profiles resolve to the same data root, or one root lies inside another."""

    code = "data_root_overlap"

    first: str
    first_root: Path
    first_source: str
    second: str
    second_root: Path
    second_source: str
    #: Where the paths do not show it (a bind mount): the directory on one root's path that
    #: is the other root, by device and inode.
    alias: Path | None = None
    #: With `alias`, the profile whose root lies inside the other's (None: one directory).
    inner: str | None = None
    #: With `alias` and `inner`: the directory a mount on the inner root's way shows it from,
    #: inside the other root, where no identity on either root's path shows it (red team 62).
    shown: Path | None = None
    #: Where the two paths differ only in case (or Unicode form) on a filesystem that folds
    #: it: the directory whose entry both spellings reach (red team 64).
    folded: Path | None = None

    @property
    def message(self) -> str:
        first, second = self.first, self.second
        found = ""
        if self.folded is not None:
            relation = "share the same data root"
            a, b = len(self.first_root.parts), len(self.second_root.parts)
            if a != b:
                deeper, other = (first, second) if a > b else (second, first)
                relation = f"overlap: {deeper!r}'s data root lies inside {other!r}'s"
            relation += (
                f", spelled two ways that the filesystem of {self.folded} takes for one (it "
                "folds case, as exFAT, FAT, NTFS or a `casefold` directory do: one entry "
                "answers both spellings)"
            )
            found = f"; `ls -a {shell_word(self.folded)}` lists the one entry"
        elif self.alias is not None:
            outer_root = self.second_root if self.inner == first else self.first_root
            outer = second if self.inner == first else first
            if self.shown is not None:
                relation = (
                    f"overlap: {self.inner!r}'s data root lies inside {outer!r}'s, reached by "
                    f"another path (it is {self.shown}, seen through a mount on its way: a "
                    "bind mount of a directory of that root)"
                )
            elif self.inner is None:
                relation = (
                    "share the same data root, reached by two paths (one directory, by device "
                    "and inode: a bind mount)"
                )
            else:
                relation = (
                    f"overlap: {self.inner!r}'s data root lies inside {outer!r}'s, reached by "
                    f"another path (its directory {self.alias} is {outer_root}, by device and "
                    "inode: a bind mount)"
                )
            found = f" (`findmnt -T {shell_word(self.alias)}` shows the mount)"
        elif self.first_root == self.second_root:
            relation = "share the same data root"
        elif self.second_root.is_relative_to(self.first_root):
            relation = f"overlap: {second!r}'s data root lies inside {first!r}'s"
        else:
            relation = f"overlap: {first!r}'s data root lies inside {second!r}'s"
        return (
            f"profiles {first!r} and {second!r} {relation}: "
            f"{first} -> {self.first_root} (from {self.first_source}), "
            f"{second} -> {self.second_root} (from {self.second_source}). "
            "Every profile needs its own data root, not nested in another; "
            f"change data_root for one of them{found}"
        )


class RemoteBackendError(ConfigError):
    """A command that works on a local data root, run for a profile that has none."""

    code = "remote_backend"
    template = (
        "cannot {wanted}: profile {profile!r} keeps its data in PostgreSQL ({database}) and "
        "object storage ({blobs}), not in a data root. Run it for a profile with a data_root, "
        "or use the command's counterpart for this backend (`app --help` lists them)"
    )

    profile: str
    wanted: str
    database: str
    blobs: str


class ConfigProblems(ConfigError):
    """Several configuration problems at once (what ``app doctor`` reports)."""

    code = "config_problems"

    problems: Sequence[ConfigError]

    def __post_init__(self) -> None:
        self.problems = tuple(self.problems)
        super().__post_init__()

    @property
    def message(self) -> str:
        lines = [f"{len(self.problems)} configuration problem(s):"]
        lines += [f"  - {problem.message}" for problem in self.problems]
        return "\n".join(lines)


# --- tests and sandbox (exit 78: the configuration was pointed somewhere it may not go) ---


class SandboxViolationError(ConfigError):
    """A test process tried to reach a data root or profile outside its sandbox."""

    code = "sandbox_violation"

    what: str
    sandbox: Path | None
    fix: str
    #: The test runner the refusal is made under: ``pytest``, or ``unittest`` (no plugin).
    runner: str = field(default="pytest", kw_only=True)

    @property
    def message(self) -> str:
        inside = f" (sandbox: {self.sandbox})" if self.sandbox is not None else ""
        return f"refused under {self.runner}{inside}: {self.what}. {self.fix}"


# --- data roots ----------------------------------------------------------------------


def _is_ancestor(pid: object) -> bool:
    """Whether `pid` is an ancestor of this process, as Linux's ``/proc`` says (False where
    it cannot be read)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    here = os.getppid()
    for _ in range(256):  # a chain, not a loop: init ends it
        if here == pid:
            return True
        if here <= 1:
            return False
        try:
            with open(f"/proc/{here}/stat", "rb") as stat:  # noqa: PTH123 - a hot path's form
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                here = int(stat.read().rpartition(b")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _another_device_stop(holder: Mapping[str, Any], root: Path) -> str:
    """What to do about a root held through another device (`app.lock`): stopping the holder
    frees nothing there (red team 59)."""
    if holder.get("through_fuse"):
        # The mirror may be the holder's own path: unmounting it would pull its root away.
        there = str(Path(str(holder.get("lock_file_there", ""))).parent)
        return (
            "do not use this path, and do not stop that process for it: the holder's lock "
            "is not seen through the FUSE mount, so nothing here would keep the two of you "
            f"apart. Work through the holder's own path, {there}, where the lock is shared "
            "(or stop the holder first)"
        )
    if holder.get("through_upper"):
        # Unmounting would unmount the host's own filesystem here (`/`, say).
        return (
            "do not use this path, and do not stop that process for it: the overlay and its "
            "layer directory show one file, and what is written through a layer directory "
            "while the overlay is mounted is undefined. Work through the holder's path "
            "(inside its container: `docker exec`, `nsenter`), or stop it first"
        )
    # Two mounts of one filesystem overwrite each other's writes whoever holds what.
    return (
        "do not use this mount, and do not stop that process for it: the filesystem is "
        "mounted twice, and its two mounts overwrite each other's writes. Unmount this one "
        f"(`umount $(findmnt -n -o TARGET -T {root})`, then `losetup -d` its device if it "
        "is a loop device) and work through the holder's path"
    )


def _waits(
    root: Path, pid: object = None, *, lock_elsewhere: bool = False, shared: bool = False
) -> str:
    """The command that waits until the holder of `root` lets go, as a refusal's "wait for
    it to finish" names it: it named none, and an operator's `sleep` and retry either waited
    too long or was refused again (red team 62). flock(1) (util-linux) takes a shared lock,
    as `app status` does for an instant, once the holder's exclusive one is gone: at that
    moment, not at a poll's next tick, and whatever process holds the descriptor.

    Not where the holder's lock is no longer the file at the path (`lock_elsewhere`: deleted,
    moved, or another file mounted over its name): the refused command had locked a new file
    there, and that ``flock`` returned at once beside the holder, so the command run after it
    was refused again (red team 62 on regress). Then the holder's process is waited for
    (`pid`, as this process numbers it), once a second; nothing where none is known."""
    if lock_elsewhere:
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return ""
        return (
            f" (`tail --pid={pid} -f /dev/null` returns once it exits: its lock is not the "
            "file at that path now, so a flock there would not wait for it)"
        )
    lock_file = shell_word(Path(root) / ".server.lock")
    if shared:
        # Held shared (`flock -s` around a backup): a shared flock returns at once beside
        # it, and the command run after it was refused again (red team 70).
        return (
            f" (`flock {lock_file} true` returns once it lets go: an exclusive flock, since "
            "a shared one would not wait for it)"
        )
    return f" (`flock -s {lock_file} true` returns once it lets go)"


def _held_elsewhere(holder: Mapping[str, Any] | None, root: Path, waits: str) -> str | None:
    """What to do about a holder that holds another directory than `root` through the lock
    file there (another device's, or another root's lock file moved here), or ``None``."""
    if holder and "through_device" in holder:
        return _another_device_stop(holder, root)
    if holder and "locked_for" in holder:
        # It holds another root: "stop it" sent the operator to stop that root's server,
        # which stops by itself once it sees its lock file gone (red team 73).
        return (
            "leave it running: it stops by itself at its next look at its lock file (within "
            "its lock_check_seconds) or its next write, which find the file gone from "
            f"{holder['locked_for']}{waits}; then put each root's .server.lock back in its own "
            "root (or remove the one here: the app makes a new one where it opens a root) and "
            "retry"
        )
    return None


class DataRootInUseError(AppError):
    """Another live process holds the data root's lock."""

    exit_code = EX_TEMPFAIL
    code = "data_root_in_use"
    http_status = 409

    root: Path
    holder: Mapping[str, Any] | None
    wanted: str
    # app.lock.describe_holder(holder): the lock, which raises this, knows what a holder
    # publishes, and errors must not import the lock that imports them.
    held_by: str = field(kw_only=True)
    #: The holder's lock is not the file at ``<root>/.server.lock`` (deleted, moved or
    #: mounted over while held): a wait on that file returns at once (`_waits`).
    lock_elsewhere: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        self.holder = dict(self.holder) if self.holder else None
        super().__post_init__()

    @property
    def message(self) -> str:
        import socket  # here: start-ups that raise nothing do not pay for it

        pid = self.holder.get("pid") if self.holder else None
        # What the holder published of itself, where the pid is the process that published
        # it (not one that kept its descriptor, nor bytes copied over the lock file).
        kind = (
            self.holder.get("kind")
            if self.holder
            and not {"took_lock", "unpublished", "pid_written_over", "shared_lock"}
            & self.holder.keys()
            else None
        )
        shared = bool(self.holder and self.holder.get("shared_lock"))
        waits = _waits(self.root, pid, lock_elsewhere=self.lock_elsewhere, shared=shared)
        if (elsewhere := _held_elsewhere(self.holder, self.root, waits)) is not None:
            stop = elsewhere
        elif pid == os.getpid() and self.holder and self.holder.get("host") == socket.gethostname():
            # `kill` would stop the very process that asks: the first writer is its own.
            stop = (
                "that is this process: close the storage it opened first (`.close()`, or "
                "leave its `with` block) before opening it again, or use that one"
            )
        elif (
            pid
            and self.holder
            and self.holder.get("stopping_since")
            # Paused as well (SIGSTOP, a debugger, a frozen cgroup), it finishes nothing
            # until resumed, and "wait for it to exit" was for ever: said as paused, below
            # (red team 75 on regress, round c).
            and not {"stopped", "traced_by", "frozen"} & self.holder.keys()
        ):
            # A start while a server drains was told to kill it, which cuts the requests it
            # is finishing (red team 44).
            grace = self.holder.get("shutdown_grace_seconds")
            stop = (
                f"it is stopping since {self.holder['stopping_since']}, finishing the requests "
                "in flight"
                + (f" (for at most shutdown_grace_seconds, {grace} s)" if grace else "")
                + f": wait for pid {pid} to exit{waits} and retry; do not "
                "kill it again, which cuts those requests"
            )
        elif pid and self.holder and "traced_by" in self.holder:
            # At a breakpoint, it acts on nothing but SIGKILL until the debugger lets it go;
            # a debugger ended while it is stopped leaves it stopped (SIGSTOP).
            tracer = self.holder["traced_by"]
            debugger = f"the debugger (pid {tracer})" if tracer else "its debugger"
            stop = (
                f"continue or detach it in {debugger}, or end {debugger} and then resume it "
                f"(kill -CONT {pid}), and let it finish; or end it (kill -KILL {pid}, which "
                "skips its clean-up); then retry"
            )
        elif pid and self.holder and self.holder.get("frozen"):
            # Frozen, it acts on no signal but SIGKILL until thawed.
            thaw = self.holder.get("thaw")
            stop = (
                "thaw it (`docker unpause` or `systemctl thaw`, whichever froze it"
                + (f", or `{thaw}`" if thaw else "")
                + f"), then let it finish or stop it (kill {pid}), then retry"
            )
        elif pid and self.holder and self.holder.get("stopped"):
            # A stopped process acts on SIGTERM only once continued.
            stop = (
                f"resume it to let it finish (`fg` in the shell that started it, or kill -CONT "
                f"{pid}), or end it (kill {pid}, then kill -CONT {pid}), then retry"
            )
        elif pid and self.holder and self.holder.get("kind") == "maintenance":
            # Killed, it leaves what it began for a repair: waiting is the first advice.
            stop = (
                f"wait for it to finish{waits} and retry, or stop it (kill "
                f"{pid}; what it had begun is finished by `app data check --repair`)"
            )
        elif pid and kind == "server":
            # "Or wait for it to finish": a server never does.
            stop = (
                f"a server holds its data root until it is stopped: stop it (kill {pid}, or "
                "its service's stop, such as `systemctl stop`), retry, and start it again"
            )
        elif pid and kind == "tests" and _is_ancestor(pid):
            # A process a test started (`app serve` with a hand-built environment, which
            # loads the run's default profile, red team 57) was told to kill its own run.
            stop = (
                f"that is the test run this process belongs to (pid {pid}, an ancestor of "
                "it), which holds that root for the whole run: give what the test starts a "
                "data root of its own under the tmp_path of the test (APP_DATA_ROOT in its "
                "environment, as the app_config fixture publishes it), or start the server "
                "with the app_live_server fixture"
            )
        elif pid and kind == "tests":
            stop = f"wait for that test run to finish{waits} and retry, or stop it (kill {pid})"
        elif pid:
            stop = f"stop it (kill {pid}) or wait for it to finish{waits} and retry"
        else:
            stop = f"stop that process or wait for it to finish{waits} and retry"
        return (
            f"cannot {self.wanted}: data root {self.root} is held by {self.held_by}; "
            f"{stop}. `app status` shows the holder"
        )


class DataRootStateError(ConfigError):
    """A data root's directory is in a state the app cannot use (a broken stamp, say)."""

    code = "data_root_state"
    template = "data root {root}: {problem}; {fix}"

    root: Path
    problem: str
    fix: str


class LockUnavailableError(AppError):
    """The filesystem does not support the kernel lock the app relies on."""

    exit_code = EX_UNAVAILABLE
    code = "lock_unavailable"
    template = (
        "cannot take an OS lock on {path}: {reason}. The app refuses to run "
        "without one; put the data root on a local filesystem that supports flock"
    )

    path: Path
    reason: str


class LockFileAliasedError(AppError):
    """The lock file is reachable by another path (a symbolic or hard link)."""

    exit_code = EX_UNAVAILABLE
    code = "lock_file_aliased"
    template = (
        "refusing to lock {path}: it {reason}, so a lock taken on it would also "
        "lock (and publish into) another data root's lock file. {fix}"
    )

    path: Path
    reason: str
    fix: str = "Remove the link, and let the app create the data root's own .server.lock"
    """How to resolve it (a hard link's other names are listed with ``find -samefile``)."""


class LockFileKindError(AppError):
    """Something other than a file sits where the data root's lock file belongs."""

    exit_code = EX_UNAVAILABLE
    code = "lock_file_not_a_file"
    template = (
        "refusing to lock {path}: it is {kind}, not the lock file the app makes, so no "
        "process can hold this data root; nothing was changed. See what put it there, move "
        "it out of the data root, and let the app create the data root's own .server.lock"
    )

    path: Path
    kind: str


class LockFileUnreadableError(AppError):
    """The data root's lock file is there, but its mode or owner keeps this process out.

    ``chmod 000 .server.lock`` (a hand, a restore that kept odd modes) under a live server:
    `app status` said only that the filesystem refused it, naming no holder, and a second
    server was told to ``chattr -i`` or ``chown`` a file whose owner was right (red team 39).
    """

    exit_code = EX_IOERR
    code = "lock_file_unreadable"
    path: Path
    mode: str
    owner: int
    uid: int
    pid: int | None  # the holder the kernel lists, 0 for none, None if it cannot be seen
    argv: str = ""  # the holder's command line

    @property
    def why(self) -> str:
        """Why it cannot be opened, with the remedy: for a holder's description too."""
        if int(self.mode, 8) & 0o600 == 0o600 and self.uid in (self.owner, 0):
            # Mode and owner let it in: `chattr +i` (a hardening script, a backup tool's
            # freeze) was told to `chmod 600` a file of mode 0600 (red team 46).
            return (
                f"permission denied, though its mode {self.mode} and owner uid {self.owner} "
                f"let this process (uid {self.uid}) in: a file attribute refuses it (`lsattr "
                f"{shell_word(str(self.path))}` shows `i`, immutable, or `a`, append-only; "
                f"`chattr -i -a {shell_word(str(self.path))}` gives it back), or a security "
                "module (SELinux, AppArmor: the kernel's audit log names it); never delete it"
            )
        return (
            f"permission denied: its mode is {self.mode}, its owner uid {self.owner}, and "
            f"this process runs as uid {self.uid}; `chmod 600 {self.path}`, and `chown` it "
            "if its owner is wrong, gives it back; never delete it"
        )

    @property
    def message(self) -> str:
        """What was refused, who the kernel says holds the root, and the remedy."""
        if self.pid:
            holder = (
                f"The kernel lists process {self.pid} ({self.argv or 'command line unknown'}) "
                "as holding it: that process holds the data root now."
            )
        elif self.pid == 0:
            holder = "The kernel lists no process holding it: nobody holds the data root now."
        else:
            holder = "Who holds it cannot be seen here (/proc/locks cannot be read)."
        return (
            f"cannot open lock file {self.path} ({self.why}), so this process can neither "
            f"read the holder's details nor take the data root; nothing was changed. {holder}"
        )


class DataRootOwnerError(AppError):
    """A writer runs as another user than the one that owns the data root.

    The service runs as ``app``, which owns its root (mode 0700); an operator ran
    ``sudo app sessions restore ...`` (or ``check --repair``, ``empty-trash``, ``serve``) as
    root. It succeeded, and left ``audit.jsonl``, ``.tmp/`` and the restored file's record
    owned by root, mode 0600: the service then started, ``/health`` said ``ok``, and every
    upload and delete was a 503 (red team 55). A third user that cannot write the root was
    told to ``chmod`` and ``chown`` the lock file, whose owner was right. Refused before
    anything is created.
    """

    exit_code = EX_CONFIG
    code = "data_root_owner"
    path: Path
    owner: int
    owner_name: str  # the password database's name, "" for none
    uid: int
    user_name: str
    wanted: str
    command: str  # the command as it was run, with what chose the root, for the `sudo -u`
    owner_group: int = -1  # the root's group, for a command that runs as an id with no name
    user_group: int = -1  # this process's group, for the chown that hands the root over
    by_entries: bool = False  # the root is root's (a mount point), its files `owner`'s
    unmapped: bool = False  # `owner` is the overflow id of this process's user namespace

    @property
    def message(self) -> str:
        """Who owns the root, who runs, why it is refused, and the command that resolves it.

        An id the password database does not know (Kubernetes' ``runAsUser``, OpenShift's
        random uids) is named where no name works: ``sudo -u '#1234'`` is refused unless
        sudoers allows unknown ids, and GNU ``chown 1234:`` is an "invalid spec" (red team
        56), so such a refusal names ``setpriv`` and ``chown uid:gid``."""
        owner = (
            f"user {self.owner_name!r} (uid {self.owner})"
            if self.owner_name
            else (f"uid {self.owner} (no user of that id here)")
        )
        user = user_words(self.user_name, self.uid)
        if self.unmapped:
            # `unshare -r`, a rootless container: "sudo -u nobody" was named, which can never
            # write a root whose real owner the namespace's map leaves out (red team 56).
            return (
                f"refusing to {self.wanted}: data root {self.path} shows as owned by uid "
                f"{self.owner}, the overflow id of this process's user namespace (`unshare -r`, "
                "a rootless container): its real owner, the user the app runs as, is not "
                f"mapped into it, and what this process (as {user}) would create there would "
                "not be that user's, so the server could then not write it. Nothing was "
                "changed. Run the command outside the user namespace as the root's owner, or "
                "map the owner's id into it (podman's `--userns=keep-id`, or a uid_map line "
                "for it)"
            )
        belongs = (
            f"data root {self.path} is root's (as a volume's mount point is), and what the app "
            f"made in it belongs to {owner}, the user the app runs as"
            if self.by_entries
            else f"data root {self.path} belongs to {owner}, the user the app runs as"
        )
        if self.owner_name:
            as_owner = f"sudo -u {shell_word(self.owner_name)}"
            run = f"`{as_owner} {self.command}`"
            env = f"`{as_owner} env $(sudo grep -v '^[[:space:]]*#' /etc/app.env | xargs) ...`"
        else:
            group = self.owner_group if self.owner_group >= 0 else self.owner
            as_owner = f"setpriv --reuid={self.owner} --regid={group} --clear-groups"
            run = f"`{as_owner} {self.command}` as root"
            env = f"`{as_owner} env $(grep -v '^[[:space:]]*#' /etc/app.env | xargs) ...`"
        # `chown uid:` is an "invalid spec" to GNU chown, for every number (0: too): the
        # hand-over this refusal named never ran (red team 56).
        hand_over = (
            f"{shell_word(self.user_name)}:"
            if self.user_name
            else f"{self.uid}:{self.user_group if self.user_group >= 0 else self.uid}"
        )
        return (
            f"refusing to {self.wanted}: {belongs}, and this process runs as {user}. What it "
            "would create there (the audit log, .tmp/, a restored file's record, a trash entry, "
            f"the lock file) would be owned by {user}, mode 0600, and the server running as "
            "its owner could then not write them: every upload and delete refused while "
            f"/health says ok. Nothing was changed. Run it as the owner: {run}, with the "
            f"service's environment as the guides pass it ({env}). If {user} is meant to run "
            "the app from now on, stop the server and give it the root first (`chown -R "
            f"{hand_over} {shell_word(str(self.path))}`)"
        )


class DataRootChangedError(AppError):
    """The data root, or a directory of the app's in it, is no longer what was opened."""

    exit_code = EX_SOFTWARE
    code = "data_root_changed"
    http_status = 503
    template = (
        "data root {path} changed while open: {reason}. Nothing was changed; "
        "this process stops writing to it. Put the directory back (the app never uses "
        "symbolic links or mounts inside a data root) and restart"
    )

    path: Path
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Over HTTP: the same refusal without the path (``/health`` never shows it either)."""
        return {
            "code": self.code,
            "message": (
                "this server's data root, or a directory of the app's in it, was replaced, "
                "moved or mounted over while the server ran, so it refuses every write; "
                "nothing was written. "
                "The operator must put it back and restart the server"
            ),
        }


class LockLostError(AppError):
    """The lock file a holder locked was deleted or replaced under it; writes are refused."""

    exit_code = EX_SOFTWARE
    code = "lock_lost"
    http_status = 503
    template = (
        "lock file {path} {reason}; another process could now take the data "
        "root, so this one stops instead of sharing it. Never delete .server.lock; restart "
        "the server"
    )

    path: Path
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Over HTTP: the same refusal without the path (``/health`` never shows it either)."""
        return {
            "code": self.code,
            "message": (
                f"this server's data-root lock file {self.reason}, so it refuses every write "
                "and is stopping rather than share its data with another process; nothing was "
                "written. Retry once the server is restarted"
            ),
        }


class LockUncheckedError(LockLostError):
    """The holder could not look at its lock file, again and again: it stops, said truly.

    A look that failed (``EIO``, ``ESTALE``, ``ENOTCONN``) proves nothing: the flock is still
    this process's. One failed ``lstat`` stopped a server saying the file was lost, that
    another process could now take the root, and never to delete it (red team 39); a look
    that fails once is now tried again, and only one that keeps failing stops the server.
    """

    code = "lock_unchecked"
    template = (
        "lock file {path} {reason}: the data root's filesystem failed the look, and nobody "
        "need have touched the file, but this process cannot tell whether it still holds the "
        "data root, so it stops rather than risk sharing it. An operator mends the "
        "filesystem (the kernel's log, `dmesg`; `findmnt -T {path_word}` names it), then "
        "restarts the server"
    )

    path_word: str = field(init=False)  # as a command names it (`shell_word`)

    def __post_init__(self) -> None:
        self.path_word = shell_word(self.path)
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        """Over HTTP: the same refusal without the path (``/health`` never shows it either)."""
        return {
            "code": self.code,
            "message": (
                f"this server's data-root lock file {self.reason}: its filesystem failed the "
                "look, so it refuses every write and is stopping rather than risk sharing its "
                "data; nothing was written. Retry once the server is restarted"
            ),
        }


class LockUnwatchedError(LockLostError):
    """The holder's watcher of its lock file failed with an error of its own: it stops.

    An exception other than a failed look (`LockUncheckedError`) ended the thread that
    looks at the lock file every ``lock_check_seconds``, and the server served on with the
    file never looked at again (red team 73, left open; leftovers74): it stops instead.
    """

    code = "lock_unwatched"
    template = (
        "lock file {path} {reason}: the file need not have changed, but this process no "
        "longer looks at whether it still holds the data root, so it stops rather than serve "
        "unwatched. The server's log holds the watcher's traceback: report it (a fault of the "
        "app's), then restart the server (`app serve`)"
    )

    def to_dict(self) -> dict[str, Any]:
        """Over HTTP: the same refusal without the path or the exception's words."""
        return {
            "code": self.code,
            "message": (
                "this server's watcher of its data-root lock failed, so it refuses every write "
                "and is stopping rather than serve unwatched; nothing was written. Retry once "
                "the server is restarted"
            ),
        }


class StampChangedError(LockLostError):
    """A running writer's root was found stamped for another profile; writes are refused.

    Another profile's stamp copied over it (``cp -a <another profile's backup>/. <root>/``):
    writes are refused and the server stops, as a replica does when its prefix's stamp is handed to
    another database, and as it does when its lock file is replaced (red team 70): it went
    on writing into a root stamped for another profile, refused only at its next start."""

    code = "stamp_changed"
    template = (
        "profile stamp {path} {reason}: another profile's stamp was copied over it while "
        "this process ran (as `cp -a <another profile's backup>/. <root>/` writes it), so "
        "it refuses every write and stops rather than write into a root stamped for "
        "another profile; nothing more was written. Its next start is refused until the "
        "stamp names {profile!r} again: if the copy was a mistake, bring back this root's "
        "own files from its own backup (the copy may have written over some); if it is to "
        "serve {profile!r} still, hand it back once this process has stopped: {restamp}"
    )

    stamped: str = field(kw_only=True)
    profile: str = field(kw_only=True)
    protected: bool = field(default=False, kw_only=True)
    restamp: str = field(init=False)  # the command, as `restamp_advice` words it

    def __post_init__(self) -> None:
        import shlex  # here: only a refusal pays for it

        self.restamp = (
            f"`app data restamp --profile {self.profile} --from {shlex.quote(self.stamped)}`"
        )
        if self.protected:
            self.restamp += (
                " (add --yes-i-mean-it, which it asks for where a protected profile may be "
                "involved, only once you are sure)"
            )
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        """Over HTTP: the same refusal without the path (``/health`` never shows it either)."""
        return {
            "code": self.code,
            "message": (
                f"this server's data root is now stamped for profile {self.stamped!r} (its "
                f"{self.path.name} was written over while the server ran), not for "
                f"{self.profile!r}, which it serves, so it refuses every write and is "
                "stopping; nothing was written. The operator restores the root's own backup, "
                f"or hands it back with {self.restamp}, then restarts the server"
            ),
        }


class ProfileStampMismatchError(ConfigError):
    """The data root is stamped with another profile than the one opening it."""

    code = "profile_stamp_mismatch"

    root: Path
    stamped: str
    requested: str
    protected: bool = field(default=False, kw_only=True)
    #: Where the opening profile's ``data_root`` came from, and why, as `app.dataroot`
    #: says it (``environment APP_DATA_ROOT``, set for the profile the shell selects).
    came_from: str = field(default="", kw_only=True)

    @property
    def message(self) -> str:
        root, stamped, requested = self.root, self.stamped, self.requested
        advice = restamp_advice(
            stamped, requested, "data_root", protected=self.protected, came_from=self.came_from
        )
        return (
            f"data root {root} belongs to profile {stamped!r} (see {root}/.app-profile.json) "
            f"but profile {requested!r} tried to open it; nothing was changed. {advice}"
        )


def restamp_advice(
    stamped: str, requested: str, setting: str, *, protected: bool, came_from: str = ""
) -> str:
    """What a stamp mismatch tells the operator: the setting to correct (almost always a
    mistake: a variable exported in the wrong shell, a copied unit file), then the re-stamp
    that hands the root over, for the rare case that is meant.

    The re-stamp of a protected profile's root (or to one) is named without
    ``--yes-i-mean-it``, and said to ask for it: pasted as the refusal gave it, it handed
    production's data to the development shell that had mistyped its root (the docs' own
    example; a newcomer's review, session 55). The confirmation is the operator's to type.
    """
    import shlex  # here: only a refusal pays for it

    command = f"app data restamp --profile {requested} --from {shlex.quote(stamped)}"
    confirm = (
        " (add --yes-i-mean-it, which it asks for where a protected profile may be involved, "
        "only once you are sure)"
        if protected
        else ""
    )
    where = f"{came_from}; " if came_from else ""
    return (
        f"Most often {setting} is wrong here ({where}`app config` shows where it came from): "
        f"correct it there. Only if this really should now serve {requested!r}, re-stamp it "
        f"explicitly: {command}{confirm}{stamp_name_note(stamped, requested)}"
    )


class DataRootTooNewError(ConfigError):
    """The data root's stamp says a later release laid it out, in a way this one may not read."""

    code = "data_root_too_new"

    root: Path
    found_version: str
    found_layout: str
    version: str
    layout: int
    #: Whether the stamp's ``app_version`` is a later release than this one. When it is not
    #: (a build of the next release that still calls itself this version, or a stamp edited
    #: by hand), "run app X or later" named the release already running (red team 53).
    later: bool = field(default=True, kw_only=True)

    @property
    def message(self) -> str:
        said = (
            f"data root {self.root} was laid out by app {self.found_version} (layout "
            f"{self.found_layout}, in {self.root}/.app-profile.json), and this is app "
            f"{self.version}, which reads layout {self.layout} and earlier only: it could "
            "misread or damage what a later release wrote. Refusing to open it; nothing was "
            "changed. "
        )
        if not self.later:
            return said + (
                "Its stamp names no later release than this one, so installing one would not "
                "help: the root was laid out by a development build of a later release that "
                "still calls itself by an earlier version, or its stamp was edited by hand. Run "
                "the build that laid it out (`app --version` there); if the stamp was edited, "
                "restore it from a backup; to go back to this release, restore the backup "
                "taken before the upgrade into a new data root"
            )
        return said + (
            f"Run app {self.found_version} or later on it (`pip install "
            f"'app>={self.found_version}'`); to go back to this release, restore the backup "
            "taken before the upgrade into a new data root"
        )


def stamp_name_note(stamped: str, requested: str) -> str:
    """What a refusal adds about a stamp whose profile is not a plain name, or ``""``.

    The app stamps only plain names (`plain_name`), so another came from a hand edit or
    another tool: ``'production '`` or a Cyrillic ``\u043e`` printed as the very profile opening
    the root, and the restamp command given lost a trailing space in the shell (red team 36).
    """
    if plain_name(stamped):
        return ""
    import difflib  # here: only a refusal pays for them
    import unicodedata

    odd = [c for c in dict.fromkeys(stamped) if not plain_name(c)]
    held = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'with no name')}" for c in odd)
    near = difflib.get_close_matches(folded(stamped), [requested], n=1)
    like = f", and only looks like {requested!r}" if near else ""
    return (
        f". The stamp's {stamped!r} is not a plain profile name: it holds {held}{like}; "
        "the app stamps only plain names, so it was written by hand or by another tool"
    )


class ConfirmationRequiredError(AppError):
    """A destructive command on a protected profile ran without its confirmation option."""

    exit_code = EX_NOPERM
    code = "confirmation_required"
    http_status = 403
    template = (
        "refusing to {operation} on protected profile {profile!r} without "
        "confirmation; nothing was changed. Re-run with {option} if you mean it"
    )

    operation: str
    profile: str
    option: str
    #: False where these settings define no profile of that name (a stamp's): it may be
    #: another deployment's protected one, but is not called one here.
    known: bool = field(default=True, kw_only=True)

    @property
    def message(self) -> str:
        if self.known:
            return self.template.format_map(vars(self))
        return (
            f"refusing to {self.operation} without confirmation: these settings define no "
            f"profile {self.profile!r}, which may be another deployment's protected one; "
            f"nothing was changed. Re-run with {self.option} if you mean it"
        )


class PortInUseError(AppError):
    """The server's port is taken by another process."""

    exit_code = EX_UNAVAILABLE
    code = "port_in_use"
    template = (
        "cannot listen on {host}:{port}: {reason}. Another process uses "
        "that port; stop it, or choose another port with APP_PORT or --port"
    )

    host: str
    port: int
    reason: str


class ListenAddressError(AppError):
    """The server cannot listen on its address for a reason of the address itself: a host
    that does not resolve, an address not this machine's, a port it may not bind.

    Each was said as `PortInUseError`, "Another process uses that port; stop it": a
    mistyped ``--host 127.0.0.1:8000`` sent the operator to stop a process nobody ran
    (red team 48).
    """

    exit_code = EX_UNAVAILABLE
    code = "address_unusable"
    template = (
        "cannot listen on {host}:{port}: {reason}. No other process is in the way, and the "
        "data root's lock was released. {remedy}"
    )

    host: str
    port: int
    reason: str
    remedy: str


class ListenAddressUnresolvedError(ListenAddressError):
    """The server's host name could not be looked up just now (``EAI_AGAIN``: no resolver
    answered, as at a boot before the network is up): safe to retry.

    Said as a host that does not resolve (69), which the deploy guide's unit does not
    restart: the service stayed down after a boot that raced its DNS (red team 48).
    """

    exit_code = EX_TEMPFAIL
    code = "address_unresolved"


class RequestCutShortError(AppError):
    """The server was told to stop, and a request ran past its shutdown grace, or a second
    Ctrl-C (SIGINT) told it to stop at once, before the grace had passed: said as that, not
    as the grace's, which the operator would raise to no end (red team 59)."""

    exit_code = EX_TEMPFAIL
    code = "server_stopped"
    http_status = 503

    method: str
    path: str
    grace: int
    #: A second SIGINT (uvicorn's force quit) cut it, not the end of the grace.
    forced: bool = False

    @property
    def message(self) -> str:
        # Said to the client instead of uvicorn's bare "Internal Server Error". The write is
        # not undone: the server waits for it before it gives up its data root.
        why = (
            "the server was told to stop at once (a second Ctrl-C or SIGINT, its force "
            f"quit), before the {self.grace} s it gives requests in flight "
            "(shutdown_grace_seconds) had passed; stop it with one signal (`kill <pid>`, "
            "`systemctl stop`) to let requests finish"
            if self.forced
            else "the server was told to stop, and this request ran past the "
            f"{self.grace} s it gives requests in flight (shutdown_grace_seconds, "
            "APP_SHUTDOWN_GRACE_SECONDS)"
        )
        return (
            f"{self.method} {self.path} was cut short: {why}. A write it began still ends "
            "before the server gives up its data root, so it may have taken effect: read the "
            "resource (GET) before you retry, once a server runs again"
        )


EX_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command that Ctrl-C stopped


#: How a refusal of the command line names where the data is, and what stays in it: a data
#: root on the local backend, the database and its objects on the remote one (red team 51:
#: a refused write of a remote command's output said it was "not in the data root", and
#: that `app data check` shows "the data root as it is", of a profile that has none).
_STORED = {
    False: {
        "place": "the data root",
        "shown": "the data root as it is, which needs",
        "whole": "(the last one may lack its trash entry's final move or its audit line)",
        "alone": "with no server on the data root",
    },
    True: {
        "place": "the profile's database or object store",
        "shown": "the database and its objects as they are, which need",
        "whole": "(each is one transaction of the database; the last may have left an "
        "object no row names yet)",
        "alone": "with no replica serving the database",
    },
}


def _stopped_template(how: str, stop: str) -> str:
    """The refusal of a command stopped part-way, by Ctrl-C or by SIGTERM: one text."""
    return (
        f"`{{command}}` {how} before it finished: what it had changed stays changed, each "
        "change whole {whole}, "
        "and what it had not reached is unchanged. Run `app data check --repair` ({alone}) "
        f"to finish what {stop} left, then `{{again}}` again if it "
        "is still wanted"
    )


class CommandInterruptedError(AppError):
    """A command stopped by Ctrl-C (SIGINT) before it finished.

    Python raises ``KeyboardInterrupt`` between two bytecodes, so a change may be made
    with the rest of its bookkeeping (the move of old bytes into their trash entry, its
    audit line) not yet done: each undo decides from the disk whether its change was made,
    and ``app data check --repair`` finishes what was left. click said only "Aborted!".
    """

    exit_code = EX_INTERRUPTED
    code = "interrupted"
    how: ClassVar[str] = "was interrupted (Ctrl-C, SIGINT)"
    template = _stopped_template(how, "the interruption")

    command: str
    #: The profile keeps its data in PostgreSQL and object storage, not in a data root.
    remote: bool = field(default=False, kw_only=True)
    #: Whether the command changes the data. One that only reads (``data check`` without
    #: ``--repair``, ``sessions list``) was told that what it had changed stays changed and
    #: to stop the server for ``check --repair``: ``timeout 60 app data check --quick``, a
    #: cron job's check, sent the operator to a repair of nothing (red team 51).
    changes: bool = field(default=True, kw_only=True)
    #: The command line as it was given (``app data empty-trash --older-than 30d``), to run
    #: again: its bare name, ``app data empty-trash``, emptied the whole trash when run as
    #: written, and ``app data restamp`` or ``app sessions restore`` was a usage error
    #: (red team 62). None: the command's name.
    again: str | None = field(default=None, kw_only=True)
    #: False: it was stopped before it took the data root's lock (waiting for it, loading
    #: the settings), so it changed nothing; it was told to stop the server for a repair of
    #: nothing (red team 62).
    locked: bool = field(default=True, kw_only=True)

    @property
    def message(self) -> str:
        if self.changes and not self.locked:
            return (
                f"`{self.command}` {self.how} before it took the data root's lock, so it "
                "changed nothing, and the stop left nothing to finish or repair: run "
                f"`{self.again or self.command}` again if it is still wanted"
            )
        if self.changes:
            again = self.again or self.command
            return self.template.format_map({**vars(self), **_STORED[self.remote], "again": again})
        return (
            f"`{self.command}` {self.how} before it finished. It changes nothing (it only "
            "reads), so the stop left nothing to finish or repair: run it again, with more "
            "time if a time limit stopped it (`timeout`, a job's or a service manager's)"
        )


class OutputClosedError(AppError):
    """A command's standard output closed before its report was written (``| head``).

    click exited 1 and said nothing, also after a purge or an empty-trash had done what it
    was asked: a script took a change made for one that failed (red team 36).
    """

    exit_code = EX_IOERR
    code = "output_closed"
    template = (
        "`{command}` could not write all of its output: its standard output was closed (a "
        "pipe whose reader exited, such as `| head`). Anything it changed is done: each "
        "change stays made, whole and audited, and `app sessions list --trash` and `app data "
        "check` show {shown}. Send its output to a file, or to a reader that reads all of it"
    )

    command: str
    remote: bool = field(default=False, kw_only=True)

    @property
    def message(self) -> str:
        shown = _STORED[self.remote]["shown"].rpartition(", which")[0]
        return self.template.format_map({**vars(self), "shown": shown})


class OutputFailedError(AppError):
    """A command's standard output refused a write: a full disk under ``> report.txt``,
    ``/dev/full``, a terminal hung up.

    The write's ``ENOSPC`` was taken for the data root's: ``app data purge > /dev/full``
    purged, then said the data root's filesystem was full, that nothing was changed, and to
    empty the trash to make room, which would have deleted what it purged (red team 48).
    """

    exit_code = EX_IOERR
    code = "output_failed"

    command: str
    reason: str
    changes: bool = False
    remote: bool = field(default=False, kw_only=True)

    @property
    def message(self) -> str:
        stored = _STORED[self.remote]
        done = (
            "Anything it changed is done: each change stays made, whole and audited, and `app "
            f"sessions list --trash` and `app data check` show {stored['shown']} no room made "
            "(do not empty the trash for this)"
            if self.changes
            else "It changes nothing"
        )
        return (
            f"`{self.command}` could not write its output: a write to its standard output "
            f"failed ({self.reason}), where the output was sent (a file, a full disk, a "
            f"terminal gone), not in {stored['place']}. {done}. Send its output to a file on "
            "a disk with room, or to a terminal"
        )


EX_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a command that `kill` stopped
#: 128 + SIGPIPE, as a shell reports a command whose reader exited (`seq 1000000 | head -1`):
#: a command that changes nothing ends so, quietly, when its output is closed.
EX_OUTPUT_GONE = 141


class CommandTerminatedError(CommandInterruptedError):
    """A command other than ``serve`` stopped by SIGTERM (``kill``, a CI job's or a
    supervisor's timeout, ``timeout(1)``) before it finished.

    Python's default for SIGTERM ends the process at once, silently; the command now stops
    as Ctrl-C stops it, between two bytecodes, with the same undo and the same advice.
    """

    exit_code = EX_TERMINATED
    code = "terminated"
    how: ClassVar[str] = "was stopped (SIGTERM)"
    template = _stopped_template(how, "the stop")


PIDS_LIMITS: Final = (
    "systemd's TasksMax= for the service, the container's pids limit, or `ulimit -u` for the "
    "user that runs the server"
)


def thread_limits() -> str:
    """Which limits can refuse this process a thread, and where each is set.

    A limit of address space refuses threads too (pthread_create's EAGAIN, as for a limit of
    tasks): each reserves its stack there and, with glibc, a memory arena of 64 MiB. Under
    ``ulimit -v`` of 1 GiB a server started 19 of its 40 worker threads and then no thread
    for its creates, and every create was refused naming TasksMax= (red team 38).
    """
    import resource

    named = []
    # Since Linux 4.7 a thread's stack counts against the data segment's limit too.
    for limit, what, where in (
        (resource.RLIMIT_AS, "address space", "systemd's LimitAS=, `ulimit -v`"),
        (resource.RLIMIT_DATA, "data segment", "systemd's LimitDATA=, `ulimit -d`"),
    ):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY:
            named.append(f"its {what}, which may not pass {soft // 2**20} MiB ({where})")
    if not named:
        return PIDS_LIMITS
    return (
        f"{' or '.join(named)}: each thread reserves its stack and, with glibc, a memory "
        "arena there (a cgroup's memory limit bounds what is used instead, not what is "
        f"reserved); or {PIDS_LIMITS}"
    )


class ThreadLimitError(AppError):
    """The server could not start a thread to do what was asked (its process or user is at
    its limit of threads: systemd's ``TasksMax=``, a container's pids limit, ``ulimit -u``).

    Raised before the work began: nothing was changed.
    """

    exit_code = EX_TEMPFAIL
    code = "thread_limit"
    http_status = 503
    template = (
        "{doing} refused, and nothing was changed: the server could not start a thread to do "
        "it ({reason}). Its process or user runs as many threads as it may. Retry after "
        "{retry_after} seconds; an operator can raise that limit: {limits}"
    )

    doing: str
    reason: str
    retry_after: int = 5
    limits: str = PIDS_LIMITS
    """The limits that can refuse a thread here, and where each is set (`thread_limits`)."""


class WorkerStartError(AppError):
    """``app serve --workers N`` could not start one of its workers: the system refused it a
    new process (its limit of tasks, or of memory).

    Raised before any worker served a request: those started before it are stopped. Was a
    traceback ending in multiprocessing's "can only join a started process",
    exit 1 (red team 75 on serve --workers).
    """

    exit_code = EX_TEMPFAIL
    code = "worker_start_failed"
    template = (
        "cannot start worker {number} of {workers} of `app serve --workers {workers}` on "
        "{url}: the system refused it a new process ({reason}). {started}. Serve with "
        "fewer workers (--workers), or raise the limit that refused it, then start it again: "
        "{limits}"
    )

    number: int
    workers: int
    url: str
    reason: str
    started: str
    """Who was started before it and is stopped now, in words (``serve_workers``)."""
    limits: str


class WorkerSettingsChangedError(AppError):
    """A worker of ``app serve --workers N``, spawned (``serve`` ran another thread), read
    settings other than those ``serve`` read: a settings file or value changed in between.

    Each worker loaded the settings again, and a file changed while they started gave two
    workers different settings on one port (red team 75 on this session's leftovers). A
    forked worker is handed ``serve``'s own; a spawned one is refused before it opens
    anything, and ``serve`` stops the others.
    """

    exit_code = EX_TEMPFAIL
    code = "worker_settings_changed"
    template = (
        "worker {pid} of `app serve --workers` (pid {parent}) read settings of profile "
        "{profile!r} other than those `app serve` read as it started: {changed} changed in "
        "between (in {settings_dir}, or in the environment), and every worker on one port "
        "serves with one set of settings. It served no request and `app serve` stops the "
        "others. Start `app serve` again once the settings are as intended "
        "(`app config` shows them)"
    )

    pid: int
    parent: int
    profile: str
    changed: str
    """The names of the settings that differ, comma-separated (their values unsaid)."""
    settings_dir: str


def fork_limits(errno_: int | None) -> str:
    """Which limits refuse a new process with ``errno_``, and where each is set."""
    if errno_ == errno.ENOMEM:
        return (
            "the memory it may commit (the machine's free memory and swap under "
            "vm.overcommit_memory, the service's MemoryMax=) or its address space "
            "(systemd's LimitAS=, `ulimit -v`)"
        )
    if errno_ == errno.EAGAIN:
        return thread_limits()
    return "the operating system's, which the reason names"


# --- store (errors a client can cause) ---------------------------------------------


class StoreError(AppError):
    """A request against the store cannot be served."""

    exit_code = EX_DATAERR
    code = "store_error"
    http_status = 400


class SessionNotFoundError(StoreError):
    """No session with that id (or not in the trash, for restore); a deleted one is named
    with its trash entry and the restore, over HTTP and by `app sessions show`."""

    exit_code = EX_NOINPUT
    code = "session_not_found"
    http_status = 404

    session_id: str
    where: str = "sessions"
    in_trash: str | None = field(default=None, kw_only=True)
    """The trash entry that holds the session, for a file's restore: the session goes back
    first."""
    deleted: str | None = field(default=None, kw_only=True)
    """The newest trash entry of the session, for `app sessions show` of a deleted one."""

    @property
    def message(self) -> str:
        if self.deleted is not None:
            # Once "`app sessions list` shows the sessions", which does not show it either.
            return (
                f"no session {self.session_id!r} in sessions: it was deleted, and is in the "
                f"trash (entry {self.deleted}). `app sessions restore {self.session_id}` "
                "brings it back; `app sessions list --trash` shows the trash"
            )
        if self.in_trash is not None:
            # Once "`app sessions list` shows the sessions", which does not show it.
            return (
                f"no session {self.session_id!r} in sessions: it is in the trash (entry "
                f"{self.in_trash}), and a file is restored into its session; nothing was "
                f"changed. `app sessions restore {self.session_id}` brings the session back, "
                "with the files it held when it was deleted; then restore the file, if it is "
                "not among them"
            )
        hint = (
            "`app sessions list` shows the sessions"
            if self.where == "sessions"
            else "`app sessions list --trash` shows what can be restored"
        )
        return f"no session {self.session_id!r} in {self.where}; {hint}"


def finished_first(restores: int, changes: tuple[str, ...], back: str) -> str:
    """What a restore run again finished before its refusal (``; this run first finished
    ...``): the repairs of what an earlier restore left (`back`: what it had moved back),
    counted, and the other trash entries it repaired, each named with what it was and
    what was done; both audited in one ``check-repair`` line. Counted together, a
    replace's leftover was said to be a restore's (red team 75)."""
    logged = "in a check-repair line in the audit log"
    said = []
    if restores:
        said.append(
            f"finished what an earlier restore, stopped after it had moved {back} back, left "
            f"in the trash ({restores} repair(s){'' if changes else ', ' + logged})"
        )
    if changes:
        # Each entry in its own words: "changes, stopped partway" was said of a record kept
        # of bytes lost from outside the app, which no change of the app's had left (red
        # team 76 on integrity).
        said.append(
            f"repaired {'other ' if restores else ''}trash entries of the session "
            f"({len(changes)} repair(s): {'; '.join(changes)}), "
            f"{'both ' if restores else ''}{logged}"
        )
    return "; this run first " + ", and ".join(said)


class NotInTrashError(SessionNotFoundError):
    """Nothing in the trash to restore: no deleted session, or no deleted file of it."""

    code = "not_in_trash"

    file: str | None = None
    where: str = field(default="the trash", kw_only=True)
    #: The trash entry asked for by name (``app sessions restore --entry``), if one was.
    entry: str | None = field(default=None, kw_only=True)
    #: The session is live: restored already (by a restore run at the same time, say).
    live: bool = field(default=False, kw_only=True)
    #: How many repairs the restore made first, of what a restore stopped partway (killed
    #: after its move) left in the session's trash entries (red team 74).
    finished: int = field(default=0, kw_only=True)
    #: What else it finished first, each entry named: what a delete, a replace or a purge
    #: stopped partway left (red team 75: it was counted among the restore's repairs).
    changes: tuple[str, ...] = field(default=(), kw_only=True)

    @property
    def message(self) -> str:
        if self.live and self.entry is None and self.file is None:
            # Once "`app sessions list --trash` shows what can be restored": the loser of
            # two restores at once looked for it there (red team 48).
            changed = (
                ("so it was not restored again" if self.finished else "so nothing was restored")
                + finished_first(self.finished, self.changes, "the session")
                if self.finished or self.changes
                else "so nothing was changed"
            )
            return (
                f"no session {self.session_id!r} in the trash: it is in sessions (restored "
                f"already, or never deleted), {changed}. `app sessions show "
                f"{self.session_id}` shows it"
            )
        if self.entry is not None and self.finished:
            # Run again after one killed between its move and its entry's removal: "emptied,
            # restored already, or never made" of the entry it had just removed (red team 74
            # on regress).
            return (
                f"no trash entry {self.entry!r} in the trash: restored already, so it was not "
                f"restored again{finished_first(self.finished, self.changes, 'it')}. `app "
                f"sessions show {self.session_id}` shows the session"
            )
        if self.entry is not None and self.changes:
            # The entry asked for may be one this run removed as a change's leftover that
            # held no data: "restored already" was said of it (red team 75).
            return (
                f"no trash entry {self.entry!r} in the trash, so nothing was restored"
                f"{finished_first(0, self.changes, 'it')}. `app sessions list --trash --json` "
                "shows each entry's name"
            )
        if self.entry is not None:
            return (
                f"no trash entry {self.entry!r} in the trash (emptied, restored already, or "
                "never made); `app sessions list --trash --json` shows each entry's name"
            )
        # What this run first finished is said wherever it finished any (red team 75).
        first = (
            finished_first(self.finished, self.changes, "it")
            if self.finished or self.changes
            else ""
        )
        if self.file is None:
            return super().message + first
        return (
            f"no file {self.file!r} of session {self.session_id!r} in the trash; "
            f"`app sessions list --trash` shows what can be restored{first}"
        )


class TrashEntryLinkedError(StoreError):
    """The newest copy to restore may lie behind a symbolic link in the trash (a trash entry,
    or the session's directory in one, moved out of the data root and linked back), which the
    app never follows: the copy before it is not the version that was deleted."""

    exit_code = EX_DATAERR
    code = "trash_entry_linked"
    http_status = 500

    session_id: str
    file: str | None
    entry: str
    """The trash entry's name."""
    link: str
    """The symbolic link's path (the entry, or the session's directory in it)."""
    remedy: str
    """What puts it back (`app.dataroot.link_remedy`)."""

    @property
    def message(self) -> str:
        what = f"session {self.session_id}"
        if self.file is not None:
            what = f"file {self.file!r} of {what}"
        return (
            f"cannot restore {what}: trash entry {self.entry}, which may hold its newest copy, "
            f"is behind a symbolic link, {self.link} (moved out of the data root and linked "
            "back), which the app never follows, and the copy before it may not be the version "
            f"that was deleted; nothing was changed. {self.remedy[0].upper()}"
            f"{self.remedy[1:]}; `app data check` names it too"
        )


class TrashCopyLostError(StoreError):
    """The newest copy of a file in the trash has lost its bytes (removed from outside the
    app): a restore would bring back an older version as if it were the one deleted."""

    exit_code = EX_DATAERR
    code = "trash_copy_lost"
    http_status = 500

    session_id: str
    file: str
    entry: str
    object_store: str | None = None
    """On PostgreSQL and object storage: where the object was (``None`` on a data root)."""
    damage: str = "has lost its bytes"
    """What happened to them ("holds 1000 bytes, where 300000 were acknowledged")."""
    asked: bool = field(default=False, kw_only=True)
    """The entry was named (``app sessions restore --entry``), not taken as the newest."""
    older: str | None = field(default=None, kw_only=True)
    """The next older entry of the file (on a data root, one that holds it whole), if any."""

    @property
    def message(self) -> str:
        which = "the copy asked for" if self.asked else "its newest copy"
        what = (
            f"cannot restore file {self.file!r} of session {self.session_id}: {which} in the "
            f"trash, entry {self.entry}, {self.damage}"
        )
        older = "and the copy before it is not the version that was deleted; nothing was changed"
        if self.asked or self.older is None:
            # Of a file with no copy before it, "the copy before it" named one that is not
            # there, then said there was none (red team 49).
            older = "nothing was changed"
        if self.asked:
            instead = (
                ", or restore another of its entries (`app sessions list --trash --json` "
                "shows them)"
            )
        elif self.older is not None:
            instead = (
                ", or, to restore the copy before it instead, run `app sessions restore "
                f"{self.session_id} --file {shell_word(self.file)} --entry {self.older}`"
            )
        else:
            instead = "; no other copy of it is in the trash"
        # The name an entry keeps the bytes under: put back as "trash.json", a file of that
        # name went over the entry's manifest, the record of the SHA-256 that finds them
        # (red team 48). Imported here: the store's modules import this one.
        from app.store.records import ENTRY_REHASH, bytes_in_entry

        kept = bytes_in_entry(self.file)
        if self.object_store is not None:
            if self.damage.startswith("has lost"):
                cause = (
                    f"its object is gone from {self.object_store}: deleted outside the app; "
                    "`app data check` reports it as record-without-object"
                )
            else:
                cause = f"its object in {self.object_store} was rewritten outside the app"
            return (
                f"{what} ({cause}), {older}. Put the object back from a backup or a bucket "
                f"version{instead}"
            )
        if self.damage.startswith("has a trash.json"):
            # Its bytes are whole; what it says of them is not (rt-regress66b).
            return (
                f"{what} (changed from outside the app; `app data check` reports it as "
                f"file-damaged), {older}. Put that entry's trash.json back from a backup "
                f"({ENTRY_REHASH}){instead}"
            )
        return (
            f"{what} ({'removed' if self.damage.startswith('has lost') else 'changed'} "
            "from outside the app; `app data check` reports it as "
            f"file-damaged), {older}. Put the bytes back into that entry as {kept!r} "
            f"from a backup (their SHA-256 is in its trash.json){instead}"
        )


class TrashManifestDamagedError(StoreError):
    """A file's trash entry holds bytes under the file's name, but its ``trash.json`` is
    missing or is not a manifest the app wrote (damage from outside the app): it may hold the
    version deleted last, and which file and version it is cannot be read from it."""

    exit_code = EX_DATAERR
    code = "trash_manifest_damaged"
    http_status = 500

    session_id: str
    file: str | None
    """The file asked for (``None``: the session was asked for, by this entry's name)."""
    entry: str
    path: str
    """The entry's directory."""
    holds: tuple[str, ...] = ()
    """The names the entry holds besides its manifest."""
    names: str | None = field(default=None, kw_only=True)
    """The file its manifest names, where it names one whose bytes it does not hold."""
    asked: bool = field(default=False, kw_only=True)
    """The entry was named (``app sessions restore --entry``), not taken as the newest."""
    older: str | None = field(default=None, kw_only=True)
    """The next older entry that holds the file whole, if one does."""

    @property
    def message(self) -> str:
        what = f"session {self.session_id}"
        if self.file is not None:
            what = f"file {self.file!r} of {what}"
        which = "the entry asked for" if self.asked else "which may hold its newest copy"
        held = ", ".join(repr(name) for name in self.holds) or "nothing else"
        said = (
            "is missing or not a manifest the app wrote (`app data check` reports it as "
            "trash-no-manifest)"
            if self.names is None
            else f"names file {self.names!r}, whose bytes it does not hold (`app data check` "
            "reports it as file-damaged)"
        )
        if self.asked:
            instead = "; `app sessions list --trash --json` shows the other entries"
        elif self.older is not None:
            instead = (
                "; or, to restore the copy before it instead, run `app sessions restore "
                f"{self.session_id} --file {shell_word(self.file or '')} --entry {self.older}`"
            )
        else:
            instead = "; no other copy of it is in the trash"
        return (
            f"cannot restore {what}: trash entry {self.entry}, {which}, has a trash.json that "
            f"{said} (changed from outside the app), so which file and version it holds "
            f"cannot be read (it holds {held}); nothing was changed. Put {self.path}/trash.json "
            "back from a backup, or copy the bytes out of that directory by hand and upload "
            f"them again{instead}"
        )


class UnreadableSessionError(StoreError):
    """A ``session.json`` that is not a JSON object, holds a field of another type than the
    app writes, or names another session (linked or copied from it by hand): damage from
    outside the app, which replaces the file whole. Reading that
    session fails; a page of sessions leaves it out, a delete moves it to the trash as it
    is, and ``check`` reports it (``session-unreadable``)."""

    code = "session_unreadable"
    http_status = 500
    # No path: the message reaches HTTP clients. A 500 of its own, not `internal_error`:
    # the server is sound and keeps the connection; only this session's file is not.
    template = (
        "cannot read session {session_id}: its {file} {damage} (it was changed "
        "outside the app). `app data check` reports it as {finding}. Put "
        "{file} back from a backup, or delete the session (DELETE "
        "/sessions/{session_id}) to move it to the trash as it is"
    )

    session_id: str
    damage: str = "is not a JSON object"
    file: str = "session.json"
    """What is damaged: ``session.json``, or ``records/`` (red team 36: made a file, it was
    read as no files at all)."""
    finding: str = "session-unreadable"


class RestoredUnreadableSessionError(UnreadableSessionError):
    """A session a restore brought back from the trash whose ``session.json`` is damaged
    from outside the app: it comes back all the same, to be mended or deleted again, and
    the restore is audited. The refusal said "cannot read session" alone, and an operator
    took the restore for one that failed (red team 61)."""

    template = (
        "restored session {session_id} from trash entry {entry} (audited), but cannot read "
        "it: its {file} {damage} (it was changed outside the app). `app data check` "
        "reports it as {finding}. Put {file} back from a backup, or delete the session "
        "again (DELETE /sessions/{session_id}) to move it to the trash as it is"
    )

    entry: str = ""


class SessionNotServedError(StoreError):
    """A session id whose place under ``sessions/`` holds no session the app can read: a
    directory whose ``session.json`` was removed or replaced (by a directory, a FIFO), or
    something other than a directory in the directory's place. ``GET /sessions`` counts it
    and names it in ``left_out`` (``unreadable``); reading, changing or deleting it
    answered 404 ``session_not_found``, as if it were gone. Nothing is changed or moved: what
    is there stays for a human. The same code as `UnreadableSessionError`'s, which a
    client handles alike."""

    code = "session_unreadable"
    http_status = 500
    # No path: the message reaches HTTP clients; `app data check` names the paths.
    template = (
        "session {session_id} cannot be served: its directory holds no session.json the app "
        "can read (removed, or replaced by something else), or is not a directory (it was "
        "changed outside the app). Nothing was changed. `app data check` reports it as "
        "session-unreadable and names what is there: restore the session from a backup, or "
        "move what is there aside"
    )

    session_id: str


class DamagedFileError(StoreError):
    """A file whose bytes are no longer those its record acknowledged (another size, another
    SHA-256): damage from outside the app (a disk or filesystem fault, an edit, a partial
    restore), since the app never changes a file's bytes once written. A download refuses
    it (by its size, before anything is sent; by its SHA-256, before its last byte), and
    ``app data check`` reports it (``file-damaged``) without repairing anything."""

    code = "file_damaged"
    http_status = 500
    # No path: the message reaches HTTP clients. A 500 of its own, as session_unreadable's:
    # the server is sound; only this file's bytes are not what was acknowledged.
    template = (
        "cannot send file {name!r} of session {session_id}: its bytes {damage}, so they are "
        "not the file that was acknowledged (they were changed outside the app: a disk "
        "fault, an edit, a partial restore); {sent}. `app data check` "
        "reports every such file as {finding}. Put the file back from a backup (its "
        "SHA-256 is the ETag it was served with), or upload it again (PUT "
        "/sessions/{session_id}/files/{name}), which keeps the damaged bytes in the trash"
    )

    session_id: str
    name: str
    damage: str
    sent: str = "nothing of it was sent"
    finding: str = field(default="file-damaged", kw_only=True)
    """What `app data check` calls it: on PostgreSQL and object storage, one of the
    remote check's own findings (``record-without-object``, ``record-object-changed``)."""


class FileRecordUnreadableError(StoreError):
    """A file's name whose record the app cannot read (torn, edited, replaced by a
    directory, a FIFO or a link from outside the app), while the bytes it acknowledged may
    still be in the session (red team 46). A change took it for "no file": a ``PUT``, a
    multipart ``POST`` or a restore wrote a new record over it (201 "Created") and left the
    acknowledged bytes named by nothing, which the next repair moved to the trash as an
    upload "never acknowledged"; a read and a delete said "no file". Every read and change of
    that name now refuses it, and nothing is changed until a human has looked."""

    code = "file_record_unreadable"
    http_status = 500
    # No path: the message reaches HTTP clients; `app data check` names the paths.
    template = (
        "cannot {action} file {name!r} of session {session_id}: its record is there but the "
        "app cannot read it (it was damaged or replaced outside the app), and the bytes it "
        "acknowledged may still be in the session, so nothing was changed. `app data check` "
        "reports the record (unknown-entry) and the bytes beside it (file-without-record): "
        "put the record back from a backup, or move it out of records/ with no server on the "
        "root, and the next `app data check --repair` keeps those bytes in the trash"
    )

    session_id: str
    name: str
    action: str = "change"


class FileNameFoldedError(StoreError):
    """A file's name that the data root's filesystem takes for another file's of the
    session, as one that folds case does (exFAT, FAT, NTFS, APFS, a ``casefold``
    directory): ``notes.txt`` beside ``Notes.txt``. The record read under that name is the
    other file's, and every read and change of it was refused as a record "damaged or
    replaced outside the app" that nothing had damaged (red team 70): now said as it is.
    Nothing is changed; the code stays ``file_record_unreadable``."""

    code = "file_record_unreadable"
    http_status = 500
    # No path: the message reaches HTTP clients.
    template = (
        "cannot {action} file {name!r} of session {session_id}: the data root's filesystem "
        "folds case, and takes that name for the session's file {held!r}, whose record it "
        "reads there, so nothing was changed. Give the file a name that no file of the "
        "session has in any case, or move the data root to a filesystem that keeps case "
        "(ext4, xfs, btrfs without casefold)"
    )

    session_id: str
    name: str
    held: str
    action: str = "change"


class FileNotFoundInSessionError(StoreError):
    """The session has no file of that name; a deleted one is named with its trash entry
    and the restore, over HTTP (red team 69 on integrity)."""

    exit_code = EX_NOINPUT
    code = "file_not_found"
    http_status = 404

    session_id: str
    name: str
    deleted: str | None = field(default=None, kw_only=True)
    """The newest trash entry that holds the file, for a request to its name."""

    @property
    def message(self) -> str:
        if self.deleted is not None:
            # As a deleted session is named (`SessionNotFoundError.deleted`): a DELETE whose
            # answer was lost, sent again, was told "has no file" as if it had never been,
            # where a session's was told it is in the trash. Said of any request to the
            # name, a GET and a delete of another client's among them: it told each of them
            # that its own DELETE had been sent again (red team 69 on regress, b).
            return (
                f"session {self.session_id!r} has no file {self.name!r}: it was deleted, and "
                f"its newest version is in the trash (entry {self.deleted}; a DELETE sent "
                "again after its answer was lost finds it there, deleted on its first try). "
                f"`app sessions restore {self.session_id} --file {shell_word(self.name)}` "
                "brings it back; `app sessions list --trash` shows the trash"
            )
        return (
            f"session {self.session_id!r} has no file {self.name!r}; "
            f"GET /sessions/{self.session_id}/files lists its files"
        )


class InvalidNameError(StoreError):
    """A session id or file name that could escape its directory or is otherwise unsafe."""

    code = "invalid_name"
    http_status = 400

    kind: str
    name: str
    problem: str

    @property
    def message(self) -> str:
        fix = (
            "copy an id from `app sessions list` or GET /sessions"
            if self.kind == "session id"
            else "use a plain name of printable characters without '/', '\\' or '..'"
        )
        return f"invalid {self.kind} {self.name!r}: {self.problem}; {fix}"


class UploadTooLargeError(StoreError):
    """An upload exceeded the configured size limit."""

    code = "upload_too_large"
    http_status = 413

    limit: int
    received: int | None = None

    @property
    def message(self) -> str:
        got = f" (received {self.received} bytes so far)" if self.received is not None else ""
        return (
            f"upload refused: larger than the limit of {self.limit} bytes{got}; nothing was "
            "kept. Raise max_upload_bytes (APP_MAX_UPLOAD_BYTES) if the file is legitimate"
        )


class BodyTooLargeError(StoreError):
    """A request body (other than an upload's) exceeded what the route reads."""

    code = "body_too_large"
    http_status = 413

    what: str
    limit: int
    received: int | None = None

    @property
    def message(self) -> str:
        got = f" (received {self.received} bytes so far)" if self.received is not None else ""
        return (
            f"{self.what} refused: the request body is larger than {self.limit} bytes{got}; "
            "nothing was written. Send less, and keep large data in files "
            "(PUT /sessions/{id}/files/{name})"
        )


class MetadataTooLargeError(StoreError):
    """A session's metadata is larger, as compact JSON, than a session may hold."""

    code = "metadata_too_large"
    http_status = 413
    template = (
        "metadata is {size} bytes as compact JSON; the limit is {limit} bytes, "
        "and nothing was written. Keep large data in files (PUT /sessions/{{id}}/files/{{name}})"
    )

    size: int
    limit: int


class BadRequestError(StoreError):
    """A malformed request body or parameter."""

    code = "bad_request"
    http_status = 400

    problem: str

    template = "{problem}"


class RestoreOverwriteError(BadRequestError):
    """A restore refused because the session, or the file, exists again.

    It said "Delete the current one first": done, the restore brought back the one just
    deleted, the newest copy in the trash, and said "restored" (red team 42).
    """

    problem: str = field(default="", kw_only=True)  # worded by `message`
    session_id: str
    file: str | None
    copy: str | None = None
    """Where the copy's data lies (a data root's trash entry), if the store can say."""
    entry: str | None = field(default=None, kw_only=True)
    """The trash entry that holds the copy (``app sessions restore --entry`` takes it)."""
    restored: str | None = field(default=None, kw_only=True)
    """Where the audit log's newest line of a change to the file is a restore's, the trash
    entry it took the file from (a file's restore only)."""
    finished: int = field(default=0, kw_only=True)
    """How many repairs the restore made first, of what a restore stopped partway (killed
    after its move) left in the session's trash entries (red team 74)."""
    changes: tuple[str, ...] = field(default=(), kw_only=True)
    """What else it finished first, each entry named (`NotInTrashError.changes`)."""

    @property
    def message(self) -> str:
        what = f"session {self.session_id!r}"
        if self.file is None:
            refused = f"{what} exists again; refusing to overwrite it with its copy in the trash"
        elif self.restored is not None:
            # A restore run again after its output was lost (a dropped ssh session) was told
            # the file was there "again", and to delete it and restore the copy named: an
            # older version than the one it had brought back (red team 71 on integrity).
            refused = (
                f"{what} has a file {self.file!r}, and the audit log's newest change to it "
                f"is its restore from trash entry {self.restored}, which may be an earlier run "
                "of this command whose output was lost: then nothing needs doing (`app "
                "sessions show` lists the file, with its SHA-256). Refusing to overwrite it "
                "with "
            )
            if self.entry is None and (self.finished or self.changes):
                # Run again after one killed between its move and its entry's removal: "nothing
                # was changed" of the entry it had just removed (red team 74).
                return f"{refused}a copy in the trash: there is none left" + finished_first(
                    self.finished, self.changes, "the file"
                )
            if self.entry is None:
                return f"{refused}a copy in the trash: there is none left; nothing was changed"
            refused += f"the copy in trash entry {self.entry}"
        elif self.entry is None:
            # No copy of it in the trash, and no restore of it the log's newest change (a
            # file never deleted, or restored before the log was rotated): it was told it was
            # there "again", and to have "that copy back" by a PUT of bytes at no path (red
            # team 71 on regress, round b).
            # Where this run first finished what a killed replace left (its entry, the copy
            # it had meant to keep), "nothing was changed" was said of it (red team 75).
            changed = (
                "nothing was restored" + finished_first(self.finished, self.changes, "the file")
                if self.finished or self.changes
                else "nothing was changed"
            )
            return (
                f"{what} has a file {self.file!r} (restored already, or never deleted), and "
                f"the trash holds no copy of it to restore; {changed}. `app sessions "
                f"show {self.session_id}` lists the file, with its SHA-256"
            )
        else:
            refused = (
                f"{what} has a file {self.file!r} again; refusing to overwrite it with its "
                "copy in the trash"
            )
        where = "" if self.copy is None else f" (at {self.copy})"
        if self.file is None:
            upload = (
                f"upload the files you need from it{where} into a session (a new one, or "
                "this one under other names)"
            )
            have = f"Its files are in that copy{where}: upload those you need into a session "
            have += "(a new one, or this one under other names)"
            current, option = "session", ""
        else:
            upload = (
                f"upload its bytes{where} with a PUT of the file (the current version then "
                "goes to the trash, restorable), or beside it under another name"
            )
            have = f"To have that copy back, {upload}"
            current, option = "file", f" --file {shell_word(self.file)}"
        if self.entry is not None:
            # The copy named by its entry: a restore after the delete takes that one.
            have = (
                f"To have that copy back, delete the current {current} (it goes to the trash, "
                f"restorable), then run `app sessions restore {self.session_id}{option} "
                f"--entry {self.entry}`; or {upload}"
            )
        return (
            f"{refused}. Deleting the current one first and restoring again would not bring "
            "it back: a restore takes the newest copy in the trash, which the current one "
            f"would then be, unless it names the copy's entry. {have}"
        )


class FileExistsInSessionError(StoreError):
    """A file of that name already exists and the request did not ask to replace it."""

    code = "file_exists"
    http_status = 409
    # A create retried after its answer was lost (red team 63) meets its own first try:
    # the message says how a client tells, where it said only to replace or delete it.
    template = (
        "session {session_id!r} already has a file {name!r}; use "
        "PUT /sessions/{session_id}/files/{name} to replace it, or delete it "
        "first (if this request is a retry of one whose answer was lost, its first try may "
        "have stored it: HEAD the file, whose ETag is the SHA-256 of its bytes)"
    )

    session_id: str
    name: str


#: Sent as ``Want-Repr-Digest`` (RFC 9530, 4) with either digest refusal: the one digest
#: the server checks (`app.digests`).
_WANT_DIGEST = "sha-256=10"


class DigestMismatchError(StoreError):
    """An upload's ``Repr-Digest`` or ``Content-Digest`` (RFC 9530) is not the SHA-256 of
    the bytes that arrived: nothing was stored.

    400, not 422 or 409: the request as received is damaged, a client error in RFC 9110's
    words (15.5.1); RFC 9530 leaves the status to the application, and the IETF draft of
    problem types for digest fields answers 400 too.
    """

    code = "digest_mismatch"
    http_status = 400
    want_digest: ClassVar[str] = _WANT_DIGEST
    """Sent as ``Want-Repr-Digest`` (RFC 9530, 4): the digest the server checks."""

    method: str
    session_id: str
    """The file's session; empty for a ``POST /sessions``, which makes one."""
    name: str
    """The file's name; empty for a ``POST /sessions``, whose body is a session's JSON."""
    header: str
    """The field that named the digest (``Repr-Digest`` or ``Content-Digest``)."""
    what: str
    """The bytes it covers: "the body", "the multipart body"."""
    expected: str
    """The SHA-256 the client sent (base64)."""
    computed: str
    """The SHA-256 of what arrived (base64)."""

    template = (
        "{method} of file {name!r} in session {session_id} refused: {header}: "
        "sha-256=:{expected}: is not the SHA-256 of {what} the server received, "
        "sha-256=:{computed}:, so the bytes were changed on the way (or the digest was "
        "computed over other bytes); nothing was stored and the file is as it was. Send the "
        "upload again, with the SHA-256 of exactly the bytes sent"
    )

    @property
    def message(self) -> str:
        if self.name:
            return self.template.format_map(vars(self))
        # A POST /sessions (no file, no session yet: `name` and `session_id` are empty).
        return (
            f"{self.method} /sessions refused: {self.header}: sha-256=:{self.expected}: is "
            f"not the SHA-256 of {self.what} the server received, sha-256=:{self.computed}:, "
            "so the bytes were changed on the way (or the digest was computed over other "
            "bytes); no session was made. Send the request again, with the SHA-256 of exactly "
            "the bytes sent"
        )


class DigestUnsupportedError(StoreError):
    """An upload's integrity field names only digests the server does not compute.

    Refused rather than ignored (RFC 9530, 3 lets a recipient ignore them): the client
    asked for its bytes to be checked, and a stored, unchecked upload would look checked.
    """

    code = "digest_unsupported"
    http_status = 400
    want_digest: ClassVar[str] = _WANT_DIGEST

    header: str
    algorithms: str
    """The algorithms the field named, comma-separated."""
    supported: str

    template = (
        "{header} names {algorithms}, and the server checks {supported} only; it refuses "
        "rather than store bytes it cannot check, and nothing was stored. Send {header}: "
        "{supported}=:<base64 of the SHA-256>: (other algorithms may go along; they are "
        "ignored), or no {header}"
    )

    @property
    def message(self) -> str:
        if self.header not in ("Content-MD5", "Digest"):
            return self.template.format_map(vars(self))
        # The fields before RFC 9530 (red team 46): Content-MD5 can never name a SHA-256.
        send = (
            "Repr-Digest: sha-256=:<base64 of the SHA-256>: in its place"
            if self.header == "Content-MD5"
            else "Repr-Digest: sha-256=:<base64 of the SHA-256>: (RFC 9530, which replaces "
            "Digest), or Digest: SHA-256=<base64 of the SHA-256>"
        )
        return (
            f"{self.header} names {self.algorithms}, and the server checks {self.supported} "
            "only; it refuses rather than store bytes it cannot check, and nothing was "
            f"stored. Send {send}, or no {self.header}"
        )


class PreconditionFailedError(StoreError):
    """A write's ``If-Match`` named a version of the file that is not its current one."""

    code = "precondition_failed"
    http_status = 412

    method: str
    session_id: str
    name: str
    wanted: str
    """The ``If-Match`` header as the client sent it."""
    current: str | None
    """The current version's ETag, or ``None`` if the session has no such file."""
    sent: str | None = field(default=None, kw_only=True)
    """The SHA-256 of the bytes the ``PUT`` sends, where known (its ``Repr-Digest`` or
    ``Content-Digest``, or the body received), else ``None``."""
    deleted: str | None = field(default=None, kw_only=True)
    """Where the session has no such file, the newest trash entry that holds it where a
    delete put it there (`Storage.deleted_entry`, looked up over HTTP), else ``None``."""

    @property
    def message(self) -> str:
        what = f"{self.method} of file {self.name!r} in session {self.session_id} refused"
        if self.sent is not None and self.current == f'"{self.sent}"':
            # A PUT retried after its answer was lost (a cut connection, a proxy's timeout):
            # it was told "another request wrote" the version, which is its own bytes, and
            # to send it again with that ETag, which replaces the file with itself (red
            # team 63). RFC 9110 (13.1.1) names the case: the change is made already.
            return (
                f"{what}: If-Match: {self.wanted} does not name its current version, ETag "
                f"{self.current}, whose bytes are the very bytes this {self.method} sends "
                "(the same SHA-256): the change it asks for is made already, by an earlier "
                f"{self.method} of these bytes (this one's own, if its answer was lost). "
                "Nothing was changed, and nothing needs to be: the file holds these bytes"
            )
        if self.current is None and self.deleted is not None:
            # As a file's 404 names it (red team 69 on integrity): a DELETE with If-Match
            # whose answer was lost, sent again, was told "nothing was changed" and "to
            # create it, send the PUT", where its first try had deleted the file, and a PUT
            # with If-Match of a file another client deleted was not told where it went
            # (red team 71 on integrity).
            again = (
                "a DELETE sent again after its answer was lost finds it there, deleted on its "
                "first try"
                if self.method == "DELETE"
                else f"a {self.method} with If-Match changes only a version that is there"
            )
            return (
                f"{what}: If-Match: {self.wanted} asked for a version of it, and the session "
                f"has no file {self.name!r}: it was deleted, and its newest version is in the "
                f"trash (entry {self.deleted}; {again}); nothing was changed. "
                f"`app sessions restore {self.session_id} --file {shell_word(self.name)}` "
                "brings it back"
                + (
                    "; to create it anew, send the PUT without If-Match (with If-None-Match: "
                    "* to create it only)"
                    if self.method == "PUT"
                    else ""
                )
            )
        if self.current is None:
            return (
                f"{what}: If-Match: {self.wanted} asked for a version of it, and the session "
                f"has no file {self.name!r} (deleted, or never uploaded); nothing was changed. "
                "To create it, send the PUT without If-Match (with If-None-Match: * to create "
                "it only)"
            )
        if not self.wanted.strip(" \t,"):
            # It said "which another request wrote since": an empty value (a client's
            # variable left unset) names no version at all, and so never matches (red team 36).
            return (
                f"{what}: its If-Match is empty, a list of no entity tags, which names no "
                f"version and so never matches (the current one is ETag {self.current}); "
                "nothing was changed. Send the ETag that GET or HEAD gave, with its quotes, "
                f"as If-Match: {self.current}, or send no If-Match to write whatever the "
                "current version is"
            )
        weak = (
            " (a weak tag, W/, never matches: If-Match compares strongly, RFC 9110 13.1.1)"
            if "W/" in self.wanted
            else ""
        )
        if f"W/{self.current}" in self.wanted:
            # It said "which another request wrote since" of the very version the weak tag
            # named: the client would read the file again and send the same header (red
            # team 60).
            return (
                f"{what}: If-Match: {self.wanted} names its current version, ETag "
                f"{self.current}, as a weak tag{weak}; no other request changed it, and "
                f"nothing was changed. Send the {self.method} again with If-Match: "
                f"{self.current}, without W/"
            )
        # Where the bytes a PUT sends are not known before its body, its own earlier try
        # cannot be told from another client's: the message says how the client tells.
        own = (
            f" (or an earlier try of this PUT, whose answer was lost: an ETag is the SHA-256 "
            f"of the file's bytes, so if {self.current} is that of the bytes this PUT sends, "
            "they are stored and nothing needs to be sent again)"
            if self.method == "PUT" and self.sent is None
            else ""
        )
        return (
            f"{what}: If-Match: {self.wanted} does not name its current version, ETag "
            f"{self.current}, which another request wrote since{own}{weak}; nothing was "
            "changed. GET or HEAD the file for its current bytes and ETag, then send the "
            f"{self.method} again with If-Match: {self.current}"
        )


# --- a client that holds more of the server than it may ----------------------------------


class RequestTimeoutError(StoreError):
    """A request's head or body arrived too slowly; the server closed the connection."""

    code = "request_timeout"
    http_status = 408

    what: str
    seconds: float
    setting: str

    @property
    def message(self) -> str:
        return (
            f"request refused: {self.what} within {self.seconds:g} seconds; nothing was kept "
            "and the connection is closed. Send the request without pauses (the server's "
            f"{self.setting} setting, APP_{self.setting.upper()}, sets the bound)"
        )


class HeaderTooLargeError(StoreError):
    """A request line and headers larger than the server reads."""

    code = "header_too_large"
    http_status = 431
    template = (
        "request refused: its request line and headers are larger than {limit} "
        "bytes; the connection is closed. Send shorter headers (large data belongs in the "
        "body); the server's max_header_bytes setting (APP_MAX_HEADER_BYTES) sets the bound"
    )

    limit: int


class BodyLineTooLargeError(HeaderTooLargeError):
    """A chunked body's trailer fields, or one chunk's size line, larger than the server reads.

    Refused after the request's head, while its body streamed: the answer of a head too
    large ("Send shorter headers") misnamed it to a client whose head was short (red team 56,
    third round)."""

    code = "body_line_too_large"
    template = (
        "{request} refused: the trailer fields or a chunk's size line (with its extensions) "
        "of its chunked body are larger than {limit} bytes; nothing of it was kept and the "
        "connection is closed. Send the body again with shorter trailer fields and chunk "
        "extensions (or the fields in the head); the server's max_header_bytes setting "
        "(APP_MAX_HEADER_BYTES) sets the bound"
    )

    request: str


class TooManyFilesError(StoreError):
    """A new file name for a session that holds as many files as one session may."""

    code = "too_many_files"
    http_status = 409

    session_id: str
    limit: int
    count: int = -1  # the files it holds; -1: as many as the limit (an earlier caller's)

    @property
    def message(self) -> str:
        """How many files the session holds, the limit, and what makes room.

        It said "it holds {limit} files" whatever it held: after ``max_files_per_session`` was
        lowered below a session's count (its files are kept, and served), a session of 3
        files under a limit of 2 was said to hold 2, and "delete a file" left it full
        (red team 57)."""
        count = self.limit if self.count < 0 else self.count
        if count > self.limit:
            held = (
                f"it holds {count} files, more than the {self.limit} one session may hold now "
                "(max_files_per_session was lowered since they came: they are kept and "
                "served, but no new name is taken until it holds fewer)"
            )
            room = f"delete {count - self.limit + 1} of its files"
        else:
            held = f"it holds {count} files, the most one session may hold (max_files_per_session)"
            room = "delete a file"
        return (
            f"refusing a new file in session {self.session_id}: {held}, and every read of the "
            f"session lists them all; nothing was kept. Replace one of its files, {room}, start "
            "another session, or have an operator raise max_files_per_session "
            "(APP_MAX_FILES_PER_SESSION)"
        )


class TooManyUploadsError(StoreError):
    """As many uploads as the server receives at once are in flight already."""

    code = "too_many_uploads"
    http_status = 503
    template = (
        "upload refused: the server already receives {limit} uploads at once, its "
        "limit ({held_by}); nothing was kept. Retry after {retry_after} seconds (see "
        "Retry-After). An operator can raise max_uploads_in_flight "
        "(APP_MAX_UPLOADS_IN_FLIGHT); a client that holds many for long may be sending "
        "its bodies a byte at a time, each for up to request_seconds: limit uploads per "
        "client in a proxy in front"
    )

    limit: int
    held_by: str  # the clients in flight and the oldest's age
    retry_after: int


# --- the disk under the data root (a client cannot fix these; an operator can) ------


class StorageError(AppError):
    """The data root's filesystem refused a write; the request changed nothing."""

    exit_code = EX_IOERR
    code = "storage_error"
    http_status = 500


class StorageFullError(StorageError):
    """The data root's filesystem is full, of bytes or of inodes (or the quota is used up).

    ``inodes``: every inode is used and blocks are free (`out_of_inodes`); ``quota``: the
    user's quota is used up (``EDQUOT``); each said as such.
    """

    code = "storage_full"
    http_status = 507
    # No path: the message reaches HTTP clients, and /health hides where the data is.
    template = (
        "cannot {doing}: the data root's filesystem is full; nothing was changed. "
        "Free space, then retry: POST /trash/empty empties the trash without stopping the "
        "server (`app data empty-trash` does it while no server runs), or grow the "
        "filesystem"
    )
    # "is full" and "Free space" sent an operator to `df -h`, which showed the disk nearly
    # empty: ENOSPC is also every inode used (red team 75 on integrity, `out_of_inodes`).
    inodes_template: ClassVar[str] = (
        "cannot {doing}: the data root's filesystem has no free inodes (each file and "
        "directory takes one; `df -i` counts them, where `df -h` shows free space); nothing "
        "was changed. Free some, then retry: POST /trash/empty empties the trash without "
        "stopping the server (`app data empty-trash` does it while no server runs), or remove "
        "other files on that filesystem, or move the data root to one with more inodes"
    )

    # EDQUOT: the user's quota, not the filesystem, is used up, and `df` shows room: "grow
    # the filesystem" resolved nothing (red team 75 on integrity).
    quota_template: ClassVar[str] = (
        "cannot {doing}: the quota of the user the app runs as on the data root's filesystem "
        "is used up (of blocks or of inodes: `quota` shows it, where `df` shows room); nothing "
        "was changed. Free some, then retry: POST /trash/empty empties the trash without "
        "stopping the server (`app data empty-trash` does it while no server runs), or have "
        "an operator raise that quota (`setquota`, `xfs_quota`)"
    )

    # ENOSPC on a new name while `df -h` and `df -i` both show room: the directory's index
    # is full (ext4 without large_dir; red team 75 on this session's leftovers).
    directory_template: ClassVar[str] = (
        "cannot {doing}: the data root's directory {directory}/ takes no more names ({entries} "
        "entries): its filesystem has free space and free inodes (`df -h` and `df -i` show "
        "room), but that directory's index is full, as ext4 without its large_dir feature "
        "limits it (sooner with long names and small blocks); nothing was changed. Remove "
        "entries from that directory (delete the sessions or files no longer needed, then "
        "empty the trash: POST /trash/empty, or `app data empty-trash` while no server "
        "runs), or have an operator enable large_dir (`tune2fs "
        "-O large_dir <device>`, Linux 4.13 or later) or move the data root to a filesystem "
        "without that limit"
    )

    doing: str
    inodes: bool = False
    quota: bool = False
    directory: str = ""
    """The full directory's name (not its path: the message reaches HTTP clients)."""
    entries: int = 0

    @property
    def message(self) -> str:
        chosen = (
            self.quota_template
            if self.quota
            else self.inodes_template
            if self.inodes
            else self.directory_template
            if self.directory
            else self.template
        )
        return chosen.format_map(vars(self))


class FileTooLargeForServerError(StorageError):
    """A file grew past the server process's file size limit (``RLIMIT_FSIZE``)."""

    code = "file_too_large_for_server"
    http_status = 507
    # The kernel answers EFBIG (Python ignores SIGXFSZ) at the limit: a 500 said nothing.
    template = (
        "cannot {doing}: the file is larger than this process may write (its file size "
        "limit: systemd's LimitFSIZE=, `ulimit -f`); nothing was changed. Send a smaller "
        "file, or have an operator raise that limit, or set max_upload_bytes "
        "(APP_MAX_UPLOAD_BYTES) below it so that uploads are refused before they start"
    )

    doing: str

    @property
    def message(self) -> str:
        doing = self.doing
        if doing.startswith("PUT ") or (doing.startswith("POST ") and doing.endswith("/files")):
            return self.template.format_map(vars(self))
        # A session's create (its session.json) and a delete (its trash entry's manifest) met
        # the limit too, and were told to "send a smaller file" and to lower
        # max_upload_bytes, neither of which they have (red team 36).
        create = doing == "POST /sessions"
        written = (
            "the session's record, with its metadata,"
            if create
            else "a file it writes (a trash entry's manifest, a session's record)"
        )
        return (
            f"cannot {self.doing}: {written} would be larger than this process may write in "
            "the data root (its file size limit: systemd's LimitFSIZE=, `ulimit -f`); nothing "
            f"was changed. {'Send less metadata, or have' if create else 'Have'} an operator "
            "raise that limit"
        )


class ReadOnlyStorageError(StorageError):
    """The data root's filesystem is mounted read-only."""

    code = "storage_read_only"
    http_status = 503
    template = (
        "cannot {doing}: the data root's filesystem is read-only; nothing was "
        "changed. Reads still work. Remount it read-write (and check why it went "
        "read-only), then retry"
    )

    doing: str


class TooManyOpenFilesError(StorageError):
    """The process (or the system) has as many files open as its limit allows."""

    code = "too_many_open_files"
    http_status = 503
    template = (
        "cannot {doing}: the process has as many files open as its limit allows; "
        "nothing was changed. Retry after {retry_after} seconds; an operator can "
        "raise the file limit (systemd's LimitNOFILE=, `ulimit -n`) or, for a server, "
        "lower max_uploads_in_flight (APP_MAX_UPLOADS_IN_FLIGHT)"
    )

    doing: str
    retry_after: int = 5


class PermissionDeniedStorageError(StorageError):
    """The data root's filesystem refused a change: permission denied (EACCES, EPERM)."""

    code = "storage_permission_denied"
    http_status = 503
    template = (
        "cannot {doing}: the data root's filesystem refused it (permission denied: a file or "
        "directory in the data root is immutable or append-only, read-only or owned by another "
        "user, or its mode keeps its owner out, as `chmod 000` does); nothing was changed. An "
        "operator finds it (`lsattr -R` and `ls -lR` on the data root: an `i` or an `a`, a "
        "mode without `rw` for its owner) and undoes it (`chattr -i -a`, `chown` to the user "
        "the app runs as, `chmod u+rwX`), then retries"
    )

    doing: str


class CrossDeviceStorageError(StorageError):
    """The data root's filesystem refused to move something within the root (``EXDEV``): a
    filesystem mounted inside it, or a directory from an overlay's lower layer (red team 38).
    """

    code = "storage_cross_device"
    http_status = 503
    # No path: the message reaches HTTP clients. A bare 500 said nothing of either cause.
    template = (
        "cannot {doing}: the data root's filesystem refused to move it within the data root "
        "(EXDEV: a rename across filesystems); nothing was changed. Either a filesystem is "
        "mounted inside the data root (`findmnt -R` on it lists the mount: unmount it), or "
        "the data root lies on overlayfs (a container's own layer) and the directory came "
        "from a lower layer (the image), which overlayfs cannot rename without its "
        "redirect_dir option: keep the data root on a volume, then retry"
    )

    doing: str


class NotRegularFileStorageError(StorageError):
    """One of the app's own files in the data root is something else at its name (a FIFO,
    a directory): put there from outside the app while it runs (red team 36)."""

    code = "storage_not_regular_file"
    http_status = 503
    # No path: the message reaches HTTP clients; the file's own name is the app's layout.
    template = (
        "cannot {doing}: the data root's {file} is {kind}, not a regular file (put there "
        "from outside the app), and the change needs it; nothing was changed. An operator "
        "moves it away (for audit.jsonl the app starts a new one at the next change: keep "
        "the old one's lines, they are the record of what was deleted), then retries"
    )

    doing: str
    file: str
    kind: str


class SpecialFileFound(OSError):
    """One of the app's own files is a FIFO, a directory, a socket or a device at its name.

    The base of :class:`app.dataroot.NotRegularFileError`, here so that
    :func:`storage_error` can say what it means: raised from a live server's change (an
    audit log made a FIFO under it), it was a bare 500.

    Attributes:
        path: the file's path.
        kind: what is there ("a FIFO", "a directory").
    """

    def __init__(self, path: Path | str, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.path = Path(path)
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        return (SpecialFileFound, (self.path, self.kind))


class AuditLogAtLimit(OSError):
    """``audit.jsonl`` has no room under the process's file size limit (``RLIMIT_FSIZE``)
    for the line of a change about to be made: the change is refused before it is made.

    The base of `AuditLogFullError`'s mapping in :func:`storage_error`. Found after the
    change, the line was only logged (red team 19): with the log at the limit, every delete
    and every ``empty-trash`` went on, answered 200, with no line in ``audit.jsonl``
    (red team 46).

    Attributes:
        path: the audit log's path.
        size: its size in bytes.
        limit: the process's file size limit in bytes.
    """

    def __init__(self, path: Path | str, size: int, limit: int) -> None:
        super().__init__(
            errno.EFBIG,
            f"no room for an audit line under the file size limit ({limit} bytes)",
            str(path),
        )
        self.path = Path(path)
        self.size = size
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (AuditLogAtLimit, (self.path, self.size, self.limit))


class AuditLogFullError(StorageError):
    """A change the audit log records (a delete, a replace, a restore, an ``empty-trash``, a
    purge, a re-stamp), refused before it is made: its line in ``audit.jsonl`` might not fit
    under the process's file size limit (systemd's ``LimitFSIZE=``). It was made and
    answered, its line only in the server's log (red team 46)."""

    code = "audit_log_full"
    http_status = 507
    # No path: the message reaches HTTP clients; audit.jsonl is the app's layout.

    doing: str
    size: int
    limit: int

    @property
    def message(self) -> str:
        remedy = (
            "rotates the log (`mv audit.jsonl audit.jsonl.1` in the data root: the app "
            "starts a new one, and `app data check` reads the rotated copy) or raises that "
            "limit"
            if self.size >= self.limit // 2
            else "raises that limit"
        )
        return (
            f"cannot {self.doing}: the line that records it in the data root's audit log "
            f"(audit.jsonl, {self.size} bytes) might not fit under this process's file size "
            f"limit ({self.limit} bytes: systemd's LimitFSIZE=, `ulimit -f`), and a change "
            f"the log records is never made without its line; nothing was changed. An "
            f"operator {remedy}, then retries"
        )


class StorageIOError(StorageError):
    """The data root's disk failed a write or a read (EIO), or ext4 found itself damaged."""

    code = "storage_io_error"
    http_status = 503
    # Not "nothing was changed", as the others say: an fsync fails after its rename as well
    # as before it, and ext4 then aborts its journal, so this process may show the change
    # while the disk never gets it (a thin pool run dry once answered a bare 500 here).
    template = (
        "cannot {doing}: the data root's disk failed to read or store it (an I/O error; "
        "the kernel's log, `dmesg`, says where). A change it met is not acknowledged, and may "
        "be made only in part, or only until the filesystem is next mounted. An operator "
        "repairs the disk (free the thin pool, replace the device, `fsck`), remounts the "
        "filesystem read-write, then runs `app data check --repair` (a server runs it at "
        "start-up) before clients retry"
    )

    doing: str


class FsyncFailed(OSError):
    """An ``fsync`` on a data root's filesystem failed, now or earlier in this process.

    Raised by :func:`app.dataroot.fsync` (with the ``errno`` the kernel gave), and from then
    on by every fsync and every change in this process (with the first
    failure's ``errno``, and ``earlier`` set): what the kernel could not write it may have
    dropped, and a later fsync that succeeds does not bring it back (PostgreSQL's
    "fsyncgate", 2018). :func:`storage_error` makes it a `StorageSyncFailedError`.

    Attributes:
        at: when the first fsync failed (ISO 8601, UTC).
        earlier: whether it failed before this call (in another change) rather than in it.
    """

    def __init__(self, code: int, strerror: str, filename: str, *, at: str, earlier: bool) -> None:
        super().__init__(code, strerror, filename)
        self.at = at
        self.earlier = earlier

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            partial(FsyncFailed, at=self.at, earlier=self.earlier),
            (self.errno, self.strerror, self.filename),
        )


AFTER_FAILED_SYNC: Final = AppText(
    "mend the cause (`dmesg`: free the thin pool or the quota, replace the device), reboot "
    "(until then the kernel may serve what it failed to write as written, to a restarted "
    "server and to a check alike; a service set to start at boot is disabled first, or its "
    "start-up repairs before the check), run `app data check` (it reads every file's bytes "
    "against its SHA-256), then start the server (its start-up runs `app data check --repair`)"
)
"""What an operator does once an fsync failed (`StorageSyncFailedError`), in every place that
tells them: ``GET /health``'s and ``/ready``'s reason, the server's log. Red team 61 made the
refusal say to reboot before the check and the start; the health reason ("until the server
is restarted"), the log's lines ("a start-up runs `app data check --repair`", "then restart
it") and the deployment guide (``systemctl restart``) still sent the operator to a restart
alone, which reads what the kernel dropped as written (red team 62)."""


class StorageSyncFailedError(StorageError):
    """An fsync failed on the data root's filesystem: no change is acknowledged until restart."""

    code = "storage_sync_failed"
    http_status = 503
    # No path: the message reaches HTTP clients. Not "nothing was changed": the fsync that
    # fails may follow the change's rename (a 507 once said so of a replace it then served).
    # Not "restart the server" alone: restarted without a reboot, a server, and the check
    # its start-up runs, read what the kernel dropped as written (red team 61), and the
    # same words went to a command (`app data check --repair`) as to a client.
    template = (
        "cannot {doing}: {cause}. What the kernel failed to write it may have dropped, and a "
        "later fsync that succeeds does not bring it back, so this process acknowledges no "
        "more changes to the data root until it is restarted (a running server still serves "
        "reads; GET /health says so). A change this request or command began is not "
        "acknowledged: it may be made, in part or whole, or lost at the next power cut. An "
        "operator reads the kernel's log (`dmesg`) and mends the cause (free the thin pool "
        "or the quota, replace the device), reboots (until then the kernel may serve what it "
        "failed to write as written, to a restarted server and to a check alike), runs `app "
        "data check` (it reads every file's bytes against its SHA-256), then starts the "
        "server (its start-up runs `app data check --repair`) or runs the command again, "
        "before clients retry"
    )

    doing: str
    cause: str


class StorageInterruptedError(StorageError):
    """A call on the data root's filesystem was interrupted (EINTR) and not retried."""

    code = "storage_interrupted"
    http_status = 503
    # A network or FUSE filesystem (NFS mounted `intr`, sshfs) may have carried out an
    # interrupted rename or unlink, so it is neither retried nor called "nothing was changed".
    template = (
        "cannot {doing}: a call on the data root's filesystem was interrupted (EINTR: a "
        "signal, or a network or FUSE filesystem that gave up waiting); the change is not "
        "acknowledged, and may be made in part. Retry after {retry_after} seconds; what an "
        "interrupted change left is finished or undone by `app data check --repair` (a "
        "server runs it at start-up)"
    )

    doing: str
    retry_after: int = 1


class StorageFailedError(StorageError):
    """The data root's filesystem failed a call with an errno no other refusal names.

    A network filesystem whose handle went stale (``ESTALE``), a FUSE daemon that died
    (``ENOTCONN``), a lock it could not take (``ENOLCK``), ...: each was a bare 500
    ``internal_error`` over HTTP, and a traceback with exit 1 from a command (red team 39).
    """

    code = "storage_failed"
    http_status = 503
    # No path: the message reaches HTTP clients. Not "nothing was changed": the call that
    # failed may come after a change's rename as well as before it.
    template = (
        "cannot {doing}: the data root's filesystem failed a call with {errname} "
        "({strerror}){hint}. A change it met is not acknowledged, and may be made in part. An "
        "operator mends the filesystem (the kernel's log, `dmesg`, and `findmnt -T` on the "
        "data root say which it is), then runs `app data check --repair` (a server runs it "
        "at start-up) before clients retry"
    )

    doing: str
    errname: str
    strerror: str
    hint: str = ""


class UploadChangedOnDiskError(StorageError):
    """An upload's temporary file no longer holds the bytes received, so it is not stored.

    The file in ``.tmp/`` was cut (``truncate``), replaced, or written to from outside the
    app while the upload was written. It was acknowledged with the SHA-256 of the bytes
    received, which the disk never held (red team 44: cut while the body streamed, the
    writes went on at their offset after a hole of zeros; replaced, the other file was
    renamed into place). Looked at again once renamed into place: another file put at its
    name after the first look went in its place (red team 75 on integrity, round 2). Read
    back and hashed before the answer: written in place while the body streamed, it kept
    the size received and was acknowledged (red team 76 on integrity)."""

    code = "upload_changed_on_disk"
    http_status = 503
    # No path: the message reaches HTTP clients; `.tmp/` is the app's layout.
    template = (
        "cannot store file {name!r} of session {session_id}: its temporary file in the data "
        "root's .tmp/ {damage} (cut, replaced or written to from outside the app while the "
        "upload was written), so nothing was acknowledged and the session is unchanged. Send "
        "the file again; an operator finds what writes in the data root's .tmp/ (a clean-up "
        "job, `fuser -v`) and stops it"
    )

    session_id: str
    name: str
    damage: str
    """What the file is now: "holds 0 bytes where 4096 were received", "is another file,
    put at its name", "was written to", "holds other bytes than were received (their
    SHA-256 is ..., that of the bytes received ...)"."""


class StoppedPartwayError(StorageError):
    """A command over many items met a storage error after it had changed some of them.

    Said as such: the storage errors above promise that nothing was changed, and here the
    items already done stay done (and audited), as each is complete on its own.
    """

    code = "stopped_partway"
    template = (
        "{doing} stopped after {done} of {total} ({cause}): the {done} done are {where}, "
        "{audited}; {rest}. {fix}"
    )

    doing: str
    done: int
    total: int
    cause: str
    where: str
    fix: str
    rest: str = "the rest are unchanged"
    #: Whether the line of those done was written; `unaudited` says it was not. Said
    #: "and audited" of a line the audit log had refused (red team 73 on regress c).
    audited: str = "and audited"


class RepairStoppedPartwayError(StoppedPartwayError):
    """`app data check --repair` (or a server's start-up repair) stopped by a storage error
    after it had made some repairs, at a step of no one repair: a listing of ``sessions/`` or
    ``.trash/``, a read of the audit log. Each repair made stays made, and is audited.

    It was said as the storage error alone, "nothing was changed", of repairs already made,
    and their ``check-repair`` line was never written (red team 73).
    """

    template = (
        "{doing} stopped after {done} repair(s) ({cause}): the {done} made are kept, "
        "{audited}; {rest}. {fix}"
    )

    rest: str = "the rest of the data root was not checked"
    audited: str = "and audited (a check-repair line in the audit log)"


def unaudited(why: str, log: str) -> str:
    """A `StoppedPartwayError`'s ``audited`` when the line of what it did was refused (a full
    disk, EIO): ``why`` (`DataRoot.line_lost`), and ``log``, where the line went instead.

    Said "and audited" of a line the audit log had refused, which went to the process's
    log alone (red team 73 on regress c)."""
    return f"but the audit log could not record them ({why}): their record is in {log}"


#: Where `DataRoot.audit` puts a line the audit log refused, as `unaudited`'s ``log``.
COMMAND_LOG: Final = "this command's log, above"
SERVER_LOG: Final = "the server's log"


PARTWAY_RESOLVE: Final = (
    "Resolve the cause (`ulimit -n`, free space, permissions, a filesystem gone read-only: "
    "`mount -o remount,rw` once `dmesg` says why; `dmesg` for a disk fault)"
)
"""What a `StoppedPartwayError`'s ``fix`` begins with: the causes a storage error names. A
filesystem gone read-only (EROFS) was left out, and was told to look at descriptors, space
and permissions (red team 60)."""


def partway_cause(error: OSError) -> tuple[str, bool]:
    """What stopped a command over many items (`StoppedPartwayError`), said without a path
    (``POST /trash/empty`` sends it to a client), and whether the call it failed may have
    been carried out all the same: an interrupted call (``EINTR``, which a network or FUSE
    filesystem may have made) or a disk fault (``EIO``). The item it stopped at is then not
    "unchanged" (red team 48: ``str(error)`` gave the server's paths, and "the rest are
    unchanged" of an entry the filesystem may have moved)."""
    number = error.errno or 0
    cause = f"{errno.errorcode.get(number, f'errno {number}')}: {error.strerror or error}"
    if number == errno.ENOSPC and out_of_inodes(error.filename):
        cause += f" ({NO_INODES})"  # where the remedy's "free space" is not what `df -h` says
    return cause, number in _IO_ERRNOS | _INTERRUPTED_ERRNOS


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Every connection and open file counts against the limit: 150 slow uploads once used up
# 256 descriptors, and other requests got 500 instead of a refusal that says why.
_DESCRIPTOR_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS})
_FILE_SIZE_ERRNOS = frozenset({errno.EFBIG})
# `chattr +i` by an operator, a read-only bind mount of the root, a chown slip: a bare
# 500 said nothing of it.
_PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
# A rename across a mount point inside the root, or of an overlay's lower directory.
_CROSS_DEVICE_ERRNOS = frozenset({errno.EXDEV})
# EUCLEAN and EBADMSG are ext4's EFSCORRUPTED and EFSBADCRC: metadata it cannot trust.
_IO_ERRNOS = frozenset({errno.EIO, errno.EUCLEAN, errno.EBADMSG})
# Python retries open, write and fsync on EINTR (PEP 475), never rename, unlink, mkdir, close.
_INTERRUPTED_ERRNOS = frozenset({errno.EINTR})


# What an errno no refusal above names means on a data root, where the cause is known.
_NETWORK_GONE = (
    ": a network filesystem whose server does not answer; once it does, or once the data "
    "root is on a local disk, the calls go through"
)
# A directory's subdirectories, each a link to it, are bounded by the filesystem (EMLINK).
_LINK_LIMITS: Final = "(ext2 and ext3: 31,998 subdirectories; ext4 made without dir_nlink: 64,998)"
_NO_LINK_LIMIT: Final = (
    "move the data root to a filesystem without that limit (ext4 with dir_nlink, xfs)"
)
_FAILED_HINTS: Final[dict[int, str]] = {
    errno.ESTALE: (
        ": a network filesystem (NFS) whose server restarted or whose export changed under "
        "the mount, so the file handles the kernel holds name nothing; remount it"
    ),
    errno.ENOTCONN: (
        ": a FUSE filesystem (sshfs, s3fs, rclone) whose daemon died; unmount it "
        "(`fusermount -u` on its mount point) and mount it again"
    ),
    errno.ENOLCK: (
        ": the filesystem could not take a lock (flock) the app takes around every change, "
        "as an NFS lock manager out of locks or not running answers; keep the data root on "
        "a local filesystem, where flock always works"
    ),
    errno.ETIMEDOUT: _NETWORK_GONE,
    errno.EHOSTDOWN: _NETWORK_GONE,
    errno.EHOSTUNREACH: _NETWORK_GONE,
    errno.ENOMEM: ": the kernel ran out of memory for the call",
    errno.ENOENT: (
        ": a file or directory of the data root went missing while it was used (removed "
        "from outside the app?); `app data check` says whether anything else is missing"
    ),
    errno.EMLINK: (
        ": a directory of the data root holds as many entries as its filesystem allows "
        f"{_LINK_LIMITS}; empty the trash (POST /trash/empty, `app data empty-trash`), or "
        f"{_NO_LINK_LIMIT}"
    ),
}

# Which directory of the root is at its filesystem's limit of subdirectories (EMLINK): the
# one a `mkdir` makes an entry in, or a `rename` moves one into. Emptying the trash frees
# none of sessions/'s: a full sessions/ was told to (red team 60).
_FULL_DIRECTORY_HINTS: Final[dict[str, str]] = {
    ".trash": (
        ": the data root's .trash/ holds as many entries as its filesystem allows in one "
        f"directory {_LINK_LIMITS}; empty the trash (POST /trash/empty, `app data "
        f"empty-trash`), or {_NO_LINK_LIMIT}"
    ),
    "sessions": (
        ": the data root's sessions/ holds as many sessions as its filesystem allows in one "
        f"directory {_LINK_LIMITS}, and emptying the trash frees none of them; delete the "
        "sessions no longer needed (DELETE /sessions/ID, then POST /trash/empty or `app data "
        "empty-trash`), or "
        f"{_NO_LINK_LIMIT}"
    ),
}


def _failed_hint(error: OSError) -> str:
    """What the errno of ``error`` means on a data root, for `StorageFailedError`; for
    ``EMLINK``, which of the root's directories is full, told by the path the call made an
    entry in (a `rename`'s destination, else its path)."""
    if error.errno == errno.EMLINK:
        made = error.filename2 if error.filename2 is not None else error.filename
        if isinstance(made, str | bytes | os.PathLike):
            parent = Path(os.fsdecode(made)).parent.name
            if parent in _FULL_DIRECTORY_HINTS:
                return _FULL_DIRECTORY_HINTS[parent]
    return _FAILED_HINTS.get(error.errno or 0, "")


_STORAGE_ERRORS: tuple[tuple[frozenset[int], Callable[[str], StorageError]], ...] = (
    (_FULL_ERRNOS, StorageFullError),
    (_READ_ONLY_ERRNOS, ReadOnlyStorageError),
    (_DESCRIPTOR_ERRNOS, TooManyOpenFilesError),
    (_FILE_SIZE_ERRNOS, FileTooLargeForServerError),
    (_PERMISSION_ERRNOS, PermissionDeniedStorageError),
    (_CROSS_DEVICE_ERRNOS, CrossDeviceStorageError),
    (_IO_ERRNOS, StorageIOError),
    (_INTERRUPTED_ERRNOS, StorageInterruptedError),
)


#: What CPython's ``Thread.start`` raises (a ``RuntimeError``) when the system refuses a new
#: thread (pthread_create's EAGAIN: RLIMIT_NPROC, a cgroup's pids.max, TasksMax=).
THREAD_START_REFUSED: Final = "can't start new thread"


def thread_limit(error: BaseException, doing: str) -> ThreadLimitError | None:
    """The `ThreadLimitError` a failed ``Thread.start`` means, or ``None`` for any other error.

    Args:
        error: any exception; only CPython's ``RuntimeError`` for a refused thread maps.
        doing: what was refused, for the message (``"POST /sessions"``).
    """
    if isinstance(error, RuntimeError) and str(error).startswith(THREAD_START_REFUSED):
        return ThreadLimitError(doing, str(error), limits=thread_limits())
    return None


NO_INODES: Final = "no free inodes: `df -i` counts them, where `df -h` shows free space"
"""What an ``ENOSPC`` of a filesystem with blocks free and every inode used is said with."""


def out_of_inodes(path: object) -> bool:
    """Whether the filesystem of ``path`` (the file a call just failed to make with
    ``ENOSPC``, or the nearest directory above it that is there) has every inode used and
    blocks free: "full" and `df -h` then disagree (red team 75 on integrity).

    ``False`` where it cannot tell (no path, a relative one, a filesystem that counts no
    inodes: btrfs reports 0 of them, or one it may not ``statvfs``): the message of a full
    disk stays.
    """
    if not isinstance(path, str | bytes | os.PathLike):
        return False
    here = Path(os.fsdecode(path))
    if not here.is_absolute():
        return False  # named relative to a descriptor (`dir_fd`): not the working directory's
    for candidate in (here, *here.parents):
        try:
            found = os.statvfs(candidate)
        except (FileNotFoundError, NotADirectoryError):
            continue  # the file the call could not make, or its directory: look above
        except OSError:
            return False
        return found.f_files > 0 and found.f_favail == 0 and found.f_bavail > 0
    return False


#: Free blocks and inodes above which an ENOSPC is not the filesystem's but a directory's.
_ROOM: Final = 64


def full_directory(error: OSError) -> dict[str, Any]:
    """``directory`` and ``entries`` where an ENOSPC of a call that made a name (``error``'s
    second filename, else its first) came from its directory's index, full: the filesystem
    has free blocks and inodes, and the name is not there. ``{}`` where it cannot tell (a
    relative path, one it may not look at) or the filesystem is full."""
    path = error.filename2 if error.filename2 is not None else error.filename
    if not isinstance(path, str | bytes | os.PathLike):
        return {}
    here = Path(os.fsdecode(path))
    if not here.is_absolute():
        return {}
    try:
        found = os.statvfs(here.parent)
        if found.f_bavail < _ROOM or not found.f_files or found.f_favail < _ROOM:
            return {}
        if here.exists():
            return {}  # a write to a file there: the filesystem's blocks, not the index
        # Counted at the refusal only (entries of one directory, read once).
        with os.scandir(here.parent) as entries:
            count = sum(1 for _ in entries)
    except OSError:
        return {}
    return {"directory": here.parent.name, "entries": count}


def storage_error(error: BaseException, doing: str) -> StorageError | None:
    """The `StorageError` an ``OSError`` means (disk full, read-only), or ``None``.

    Args:
        error: any exception; only an ``OSError`` with a known errno maps.
        doing: what was being done, for the message ("store the upload").

    Returns:
        A `StorageSyncFailedError` for any `FsyncFailed`; else a `StorageFullError`, a
        `ReadOnlyStorageError`, a `TooManyOpenFilesError`, a `FileTooLargeForServerError`,
        a `NotRegularFileStorageError` (for a `SpecialFileFound`), an `AuditLogFullError`
        (for an `AuditLogAtLimit`), a
        `PermissionDeniedStorageError`, a `CrossDeviceStorageError`, a `StorageIOError` or a
        `StorageInterruptedError`; for any other errno a `StorageFailedError` naming it;
        ``None`` for an ``OSError`` raised without an errno, or any other exception.
    """
    if not isinstance(error, OSError):
        return None
    if isinstance(error, FsyncFailed):  # before its errno: ENOSPC here is no "nothing changed"
        reason = error.strerror or errno.errorcode.get(error.errno or 0, "unknown error")
        cause = (
            f"an fsync on the data root's filesystem failed at {error.at} ({reason}), in an "
            "earlier change"
            if error.earlier
            else f"an fsync on the data root's filesystem failed ({reason})"
        )
        return StorageSyncFailedError(doing, cause)
    if isinstance(error, SpecialFileFound | AuditLogAtLimit):  # before their errnos'
        return (
            NotRegularFileStorageError(doing, error.path.name, error.kind)
            if isinstance(error, SpecialFileFound)
            else AuditLogFullError(doing, error.size, error.limit)
        )
    inodes = error.errno == errno.ENOSPC and out_of_inodes(error.filename)
    full: dict[str, Any] = {"inodes": inodes, "quota": error.errno == errno.EDQUOT}
    if error.errno == errno.ENOSPC and not inodes:
        full |= full_directory(error)
    for errnos, kind in _STORAGE_ERRORS:
        if error.errno in errnos:
            return StorageFullError(doing, **full) if kind is StorageFullError else kind(doing)
    if not error.errno:
        return None  # raised without an errno: no call of the filesystem's, a bug to see
    # Any other errno is still the filesystem's answer: said as such, never a bare 500.
    return StorageFailedError(
        doing,
        errno.errorcode.get(error.errno, f"errno {error.errno}"),
        error.strerror or os.strerror(error.errno),
        _failed_hint(error),
    )
