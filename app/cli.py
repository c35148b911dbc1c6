"""The ``app`` command line: parse, call, print, exit. Thin on purpose.

Exit codes follow sysexits; `app.errors` defines them and docs/reference/cli.md lists them.

Heavy imports (FastAPI, uvicorn) happen inside the commands that need them, so ``app config``
and ``app doctor`` start as fast as dynaconf allows.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, ClassVar, Final, NoReturn

import click

from app import config as appconfig
from app.errors import (
    EX_DATAERR,
    EX_OUTPUT_GONE,
    AppError,
    CommandInterruptedError,
    CommandTerminatedError,
    ConfigError,
    ConfirmationRequiredError,
    DataRootInUseError,
    DataRootStateError,
    NotInTrashError,
    OutputClosedError,
    OutputFailedError,
    PrintableLines,
    SessionNotFoundError,
    as_selected,
    quoted_values,
    select_for_commands,
    shell_word,
    storage_error,
)
from app.errors import printable as _printable
from app.records import Record
from app.sandbox import LazyPattern

if TYPE_CHECKING:
    from app.storage import Finding, Status, Storage, TrashEntry


def fail(error: AppError) -> NoReturn:
    """Print an app error the same way for every command, then exit with its code."""
    # Each line as text: a path it names is whatever its directory was called, and an
    # escape in it acted on the terminal (red team 47); the lines a message has stay.
    message = as_selected(error.message, keep=quoted_values(error))
    shown = "\n".join(_printable(line) for line in message.split("\n"))
    click.echo(f"error: {shown}", err=True)
    sys.exit(error.exit_code)


def _echo(text: str, *, err: bool = False, commands: bool = True) -> None:
    """``click.echo`` of a line the app wrote around a path or a setting's value, each of its
    lines `printable`: a settings directory or a data root named with an escape sequence
    (``$'/opt/app\\e]0;...\\a'``) set the terminal's title from `app status`, `app config`
    and `app doctor`, which printed the path as it is, where a refusal (`fail`) prints its
    escapes as text since red team 47 (red team 60). With ``commands`` (the app's own text),
    each `app ...` it names is given the ``--profile`` the command was (`as_selected`); a
    line that shows a client's text (a session's title, a file's name) is left as it is."""
    if commands:
        text = as_selected(text)
    click.echo("\n".join(_printable(line) for line in text.split("\n")), err=err)


_PROFILE_KEY = "app.profile"
#: The arguments the command line was given after ``app``: a stopped command is told to run
#: them again, not its bare name (red team 62).
_ARGS_KEY = "app.args"
#: How many data root locks this process had taken when the command began (`_locks_taken`).
_TAKEN_KEY = "app.locks_taken"


def _locks_taken() -> int:
    """`app.lock.taken_so_far`, without importing the lock (0 where it was never imported:
    no lock was taken)."""
    lock = sys.modules.get("app.lock")
    return 0 if lock is None else int(lock.taken_so_far())


_COMMAND_KEY = "app.command"
#: Set when the command run can change data: its output closed early is then worth a word.
_CHANGES_KEY = "app.changes"
#: Set once the selected profile is known to keep its data in PostgreSQL and object storage:
#: a refusal of the command line then names them, not a data root (red team 51).
_REMOTE_KEY = "app.remote"
_CHANGING: Final = {
    ("data", "purge"),
    ("data", "empty-trash"),
    ("data", "restamp"),
    ("sessions", "restore"),
}


def _remember_profile(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    # ctx.meta is shared by the whole context chain; the command's own --profile is parsed
    # after the group's, so it wins when both are given.
    if value is not None:
        ctx.meta[_PROFILE_KEY] = value


def _profile_option(help_text: str) -> click.Option:
    return click.Option(
        ["--profile"],
        metavar="NAME",
        expose_value=False,
        callback=_remember_profile,
        help=help_text,
    )


def selected_profile(ctx: click.Context) -> str | None:
    """The ``--profile`` given, before or after the command name."""
    profile: str | None = ctx.meta.get(_PROFILE_KEY)
    return profile


def load_config(ctx: click.Context, *, serving: bool = False) -> appconfig.Config:
    """The selected profile's configuration; ``--profile`` wins over ``ENV_FOR_DYNACONF``.

    Only ``serve`` (and ``config``, which shows what serving would use) need what serving
    needs: looking at or maintaining a root never asks for production's HTTP token.
    """
    config = appconfig.load(selected_profile(ctx), profile_source="--profile", serving=serving)
    ctx.meta[_REMOTE_KEY] = config.backend == appconfig.REMOTE
    if selected_profile(ctx) is not None:
        select_for_commands(config.profile)  # every `app ...` a line names is given it
    for warning in config.warnings:
        _echo(f"warning: {warning}", err=True)
    return config


def inspect_profiles(ctx: click.Context) -> appconfig.Report:
    """Every profile, for ``config --all`` and ``doctor``; warnings go to standard error."""
    report = appconfig.inspect_profiles(selected_profile(ctx), profile_source="--profile")
    selected = report.profiles.get(report.selected)
    ctx.meta[_REMOTE_KEY] = selected is not None and selected.values.get("database_url") is not None
    if selected is not None and selected_profile(ctx) is not None:
        select_for_commands(report.selected)
    for warning in report.warnings:
        _echo(f"warning: {warning}", err=True)
    return report


class _OnceEach:
    """Refuse an option given twice (`refuse_repeated`); a mixin of every command and group."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        refuse_repeated(ctx, args)
        return super().parse_args(ctx, args)  # type: ignore[misc, no-any-return]


def refuse_repeated(ctx: click.Context, args: list[str]) -> None:
    """Refuse an option that takes one value, given more than once.

    click keeps the last: ``app data empty-trash --older-than 7d --older-than 0m`` (a
    command line edited from history) emptied the whole trash. The command's own parser
    reads the arguments a first time, so an option's value that looks like an option, and
    what follows a subcommand's name, are read as click reads them. Where the words cannot
    name two options (`_could_name_two_options`), nothing can be repeated and they are not
    read twice: ``app config``'s two parsers, about 2.5 M instructions of its start
    (bench/README.md, "perf-startup64").
    """
    if not _could_name_two_options(args):
        return
    _, _, order = ctx.command.make_parser(ctx).parse_args(args=list(args))
    counts: dict[str, int] = {}
    for param in order:
        if not isinstance(param, click.Option) or param.multiple or param.count:
            continue
        if param.is_flag and not param.secondary_opts:
            continue  # a flag given twice says one thing twice; `--x/--no-x` may not
        counts[param.opts[0]] = counts.get(param.opts[0], 0) + 1
    for name, count in counts.items():
        if count > 1:
            raise click.UsageError(
                f"{name} is given {count} times, and only one can count; which one was meant "
                f"is ambiguous, so nothing was done. Give {name} once",
                ctx,
            )


def _could_name_two_options(args: list[str]) -> bool:
    """Whether `args` may name two options (or one twice), as click's parser reads words: an
    option is a word of two characters or more whose first is no letter or digit
    (``click.parser``: a prefix is never alphanumeric); a long one (``--name``, ``--name=v``)
    names one, a short cluster (``-xYz``) one per character after its prefix. An upper
    bound: a value or an argument that looks like an option counts too."""
    named = 0
    for word in args:
        if len(word) < 2 or word[0].isalnum():
            continue
        named += 1 if word[1] == word[0] else len(word) - 1
        if named > 1:
            return True
    return False


class AppCommand(_OnceEach, click.Command):
    """A command that also takes ``--profile`` after its name: ``app config --profile X``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(
            _profile_option(
                "Profile to use (same as `app --profile NAME`); wins over it if both are given."
            )
        )

    def invoke(self, ctx: click.Context) -> Any:
        ctx.meta[_COMMAND_KEY] = ctx.command_path  # `app data check`, for a refusal to name
        group = ctx.parent.info_name if ctx.parent is not None else None
        ctx.meta[_CHANGES_KEY] = (group, ctx.info_name) in _CHANGING or bool(
            ctx.params.get("repair")
        )
        ctx.meta[_TAKEN_KEY] = _locks_taken()
        if self.name == "serve" or threading.current_thread() is not threading.main_thread():
            return super().invoke(ctx)  # a server stops gracefully on SIGTERM by itself
        previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
        if any(handler is None for handler in previous.values()):
            return super().invoke(ctx)  # installed from C: it could not be put back
        try:
            for sig in _listened(previous):
                signal.signal(sig, _stop_on_signal)
        except ValueError:
            # A subinterpreter's main thread (a test's `_xxsubinterpreters.run_string`,
            # 3.14's InterpreterPoolExecutor): signals are the main interpreter's, as in a
            # thread. Every command there stopped with a bare ValueError (red team 58).
            return super().invoke(ctx)
        ctx.meta[_HANDLERS_KEY] = previous
        try:
            return super().invoke(ctx)
        finally:
            if _already_stopping not in map(signal.getsignal, _STOP_SIGNALS):
                _restore_handlers(ctx)
            # else: stopping; `AppGroup.invoke` puts them back once its message is out


class OutputFailed(Exception):
    """Standard output refused a write (`_StandardStream`); `error` is the OSError."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class _StandardStream:
    """A standard stream of the process, whose refused write goes to `refused` (a context
    manager around each write) rather than to the handler of the data root's errors.

    Standard output: ``app data purge > /dev/full`` (or ``> report.txt`` on a full disk, a
    terminal gone) purged, then its ENOSPC reached that handler: "the data root's filesystem
    is full; nothing was changed. Free space ... empties the trash" (red team 48). Its
    refused write raises `OutputFailed`; a closed pipe stays a `BrokenPipeError` (``|
    head``). Standard error: ``app data empty-trash 2>>cron.log`` on a full disk exited 1, a
    traceback nobody could read, for every refusal (75, 77, a usage error's 2 alike); its
    refused write is dropped, since the message cannot be shown anyway, and the exit code
    still says what happened. The binary ``buffer`` is guarded too: click writes there itself
    when a stream's encoding is ASCII.
    """

    def __init__(
        self, stream: IO[Any], refused: Callable[[], contextlib.AbstractContextManager[object]]
    ) -> None:
        self.stream = stream
        self.refused = refused

    def write(self, data: Any) -> int:
        with self.refused():
            return self.stream.write(data)
        return len(data)  # dropped

    def writelines(self, lines: Any) -> None:
        with self.refused():
            self.stream.writelines(lines)

    def flush(self) -> None:
        with self.refused():
            self.stream.flush()

    @property
    def buffer(self) -> _StandardStream:
        return _StandardStream(getattr(self.stream, "buffer"), self.refused)  # noqa: B009

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _refused_as_output() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        raise OutputFailed(error) from error


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's ``KeyboardInterrupt`` would be, so that every undo
    that handles an interruption handles it the same way."""


_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
#: The handlers of `_STOP_SIGNALS` a command found, put back when it ends.
_HANDLERS_KEY = "app.signal_handlers"


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    """The first SIGINT or SIGTERM stops a command (`KeyboardInterrupt`, `_Terminated`);
    any after it is `_already_stopping`.

    Once: a second SIGTERM must not interrupt the undo the first one started (SIGKILL still
    ends the process); Python's default ended it at once, silently (red team 35). Nor a
    second Ctrl-C: one as a stopped purge wrote the line for what it had moved left them
    all unaudited, and one as the command printed why it stopped was click's bare
    ``Aborted!`` (exit 1) for the message (red team 60).
    """
    for sig in _STOP_SIGNALS:
        if signal.getsignal(sig) is _stop_on_signal:
            signal.signal(sig, _already_stopping)
    if signum == signal.SIGTERM:
        raise _Terminated
    raise KeyboardInterrupt


def _listened(handlers: dict[signal.Signals, Any]) -> list[signal.Signals]:
    """The stop signals a command turns into a stop: those its starter did not ignore.

    A command started with SIGINT ignored (``app data purge &`` in a script, whose shell
    ignores it there so that the terminal's Ctrl-C leaves it running; a supervisor that
    does so on purpose) kept running through a Ctrl-C until red team 60 on operations took
    both signals for every command, and was then stopped halfway by it (red team 60 on
    regress): an ignored signal stays ignored, as Python leaves an inherited one."""
    return [sig for sig, handler in handlers.items() if handler is not signal.SIG_IGN]


def _already_stopping(signum: int, frame: FrameType | None) -> None:
    # Written below Python's streams: this handler may run in the middle of a write to
    # sys.stderr (the stop's own message), which a second write there would refuse.
    with contextlib.suppress(OSError):
        os.write(
            2,
            f"app: already stopping ({signal.Signals(signum).name}): finishing what the first "
            f"stop began (its audit line, its message); `kill -9 {os.getpid()}` forces it, "
            "and leaves what it began to `app data check --repair`\n".encode(),
        )


def _restore_handlers(ctx: click.Context) -> None:
    for sig, handler in ctx.meta.pop(_HANDLERS_KEY, {}).items():
        signal.signal(sig, handler)


class CommandGroup(_OnceEach, click.Group):
    """A group whose commands are `AppCommand`s (``sessions``, ``data``)."""

    command_class = AppCommand


class AppGroup(CommandGroup):
    """The root group: it turns every `AppError`, from any command, into its exit code."""

    group_class = CommandGroup

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGS_KEY] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return self._invoke(ctx)
        finally:
            _restore_handlers(ctx)  # a stopped command's, kept until its message was out
            select_for_commands(None)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AppError as error:
            fail(error)
        except KeyboardInterrupt as stop:
            # click's "Aborted!" (exit 1) said nothing of what a maintenance command had
            # done, nor how to finish it (red team 35); SIGTERM ended it silently.
            command = ctx.meta.get(_COMMAND_KEY) or ctx.command_path
            remote = bool(ctx.meta.get(_REMOTE_KEY))
            changes = bool(ctx.meta.get(_CHANGES_KEY))
            # Again as it was given: `app data empty-trash` for a stopped `app data empty-trash
            # --older-than 30d` emptied the whole trash, run as written (red team 62).
            again = " ".join(["app", *map(shell_word, ctx.meta.get(_ARGS_KEY, []))])
            # A data root's command stopped before it took the lock changed nothing in it; a
            # remote one's hold is not counted here, so it is told what it may have left.
            locked = remote or _locks_taken() != ctx.meta.get(_TAKEN_KEY, 0)
            stopped = CommandTerminatedError if isinstance(stop, _Terminated) else None
            fail(
                (stopped or CommandInterruptedError)(
                    command, remote=remote, changes=changes, again=again, locked=locked
                )
            )
        except BrokenPipeError:
            # stdout closed (`| head`): click exited 1 saying nothing, after a change made.
            command = ctx.meta.get(_COMMAND_KEY) or ctx.command_path
            sys.stdout = Path(os.devnull).open("w")  # noqa: SIM115 - for the exit's flush
            if not ctx.meta.get(_CHANGES_KEY):
                # A command that changes nothing (`app config | head -1`) is cut short as
                # any tool `head` stops is: quietly, with the status SIGPIPE gives.
                sys.exit(EX_OUTPUT_GONE)
            with contextlib.suppress(OSError):  # stderr may be the same closed pipe
                fail(OutputClosedError(command, remote=bool(ctx.meta.get(_REMOTE_KEY))))
            sys.exit(OutputClosedError.exit_code)
        except OutputFailed as failed:
            command = ctx.meta.get(_COMMAND_KEY) or ctx.command_path
            _output_failed(
                command,
                failed,
                changes=bool(ctx.meta.get(_CHANGES_KEY)),
                remote=bool(ctx.meta.get(_REMOTE_KEY)),
            )
        except OSError as error:
            # A full or read-only filesystem: say so with its exit code, not a traceback.
            doing = f"run `{ctx.meta.get(_COMMAND_KEY) or ctx.command_path}`"
            if error.filename2 is not None:
                # A rename names both: refused for the file it replaces (`chattr +i` on the
                # stamp, under `restamp`), it named only the temporary file (red team 55).
                doing += (
                    f" (moving {os.fsdecode(error.filename)} to {os.fsdecode(error.filename2)})"
                )
            elif error.filename is not None:
                # Here, unlike over HTTP, the path is the operator's to see: the file refused.
                doing += f" ({os.fsdecode(error.filename)})"
            mapped = storage_error(error, doing)
            if mapped is None:
                raise
            fail(mapped)


@click.group(
    cls=AppGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    params=[
        _profile_option(
            "Profile to use (a section of settings.toml). Default: $ENV_FOR_DYNACONF, "
            "else development."
        )
    ],
)
@click.version_option(package_name="app")
def cli() -> None:
    """Review sessions over HTTP, with profiles that keep tests away from production data."""


def _profile_table(report: appconfig.Report, names: list[str]) -> list[str]:
    """Every key as a row, one column per profile: value, then where it came from."""
    rows: list[list[str]] = [["key", *names]]
    for key, spec in appconfig.KEYS.items():
        row = [key]
        for name in names:
            resolved = report.profiles[name]
            value = resolved.values.get(key)
            shown = str(spec.show(value))
            row.append(f"{shown}  ({resolved.sources.get(key, 'invalid')})")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(names) + 1)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


@cli.command("config")
@click.option("--all", "show_all", is_flag=True, help="Show every profile side by side.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on standard output.")
@click.pass_context
def config_command(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Show the resolved configuration and where each value came from (secrets masked).

    Loading a single profile means intending to run it: a problem that would stop the app
    (such as production without APP_API_TOKEN) exits 78. With --all, every profile is shown
    as the settings files describe it, problems are listed, and the exit code is 0 unless the
    files themselves cannot be read.
    """
    if show_all:
        _show_all(ctx, as_json)
        return
    config = load_config(ctx, serving=True)
    values = config.values()
    if as_json:
        payload = {
            "profile": config.profile,
            "profile_source": config.profile_source,
            "backend": config.backend,
            "data_root": str(config.data_root) if config.data_root else None,
            "settings_dir": str(config.settings_dir),
            "values": values,
            "sources": dict(config.sources),
            "roots": {name: str(root) for name, root in config.roots.items()},
        }
        _echo(json.dumps(payload, indent=2), commands=False)  # data, as it is
        return
    _echo(f"profile: {config.profile}  (from {config.profile_source})")
    _echo(f"settings: {config.settings_dir}")
    width = max(len(key) for key in values)
    for key, value in values.items():
        _echo(f"  {key.ljust(width)} = {value}  ({config.sources.get(key)})")


def _show_all(ctx: click.Context, as_json: bool) -> None:
    report = inspect_profiles(ctx)
    names = list(report.profiles)
    for problem in report.all_problems:
        _echo(f"problem: {problem.message}", err=True)
    if as_json:
        payload = {
            "selected": report.selected,
            "settings_dir": str(report.settings_dir),
            "profiles": {
                name: {
                    "data_root": str(r.data_root) if r.data_root else None,
                    "values": {k: appconfig.KEYS[k].show(v) for k, v in r.values.items()},
                    "sources": dict(r.sources),
                }
                for name, r in report.profiles.items()
            },
            "problems": [p.to_dict() for p in report.all_problems],
        }
        _echo(json.dumps(payload, indent=2), commands=False)  # data, as it is
        return
    _echo(
        f"settings: {report.settings_dir}  (selected: {report.selected}, "
        f"from {report.profile_source}; APP_* variables apply to it only)"
    )
    for line in _profile_table(report, names):
        _echo(line)


@cli.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check every profile (roots, types, unknown keys) and what each one needs to run.

    Lists every problem, not just the first. Exits 78 if the settings files have a problem
    or the selected profile cannot run here. What another profile needs from the
    environment it runs in (production's APP_API_TOKEN) is listed too, as mattering only
    where that profile is served, and does not change the exit code: its token is never in
    this shell, by design. Check those where that profile runs, by selecting it.

    When the selected profile uses PostgreSQL and object storage, doctor also connects to
    them, read-only and with bounded waits: the database (its stamp, schema version and
    live replicas) and the bucket (versioning, the prefix's stamp object). One it cannot
    reach exits 69; one that opening would refuse (another profile's stamp, things of
    another application) exits 78. It creates nothing: an empty database or prefix is
    stamped by the first open, not by doctor.
    """
    report = inspect_profiles(ctx)
    failing = [
        _Problem(problem.message, problem.exit_code)
        for problem in report.problems + report.serving_problems
    ]
    elsewhere = _problems_where_served(report)
    _echo(f"settings: {report.settings_dir}")
    for path in report.files:
        _echo(f"  read {path}")
    for name, resolved in report.profiles.items():
        mark = " (selected)" if name == report.selected else ""
        _echo(f"profile {name}{mark}: {_storage_line(resolved)}")
    reached = _reach_selected(report, failing)
    if failing:
        _echo(f"{len(failing)} problem(s):", err=True)
        for listed in failing:
            _echo(f"  - {listed.message}", err=True)
    elif elsewhere:
        # A root resolved only where its profile runs (`@format {env[NAME]}`, `~appsvc`) was
        # not compared: "every data root is distinct" said so of it too (red team 71).
        unresolved = [
            name
            for name, problems in elsewhere.items()
            if any(getattr(p, "key", None) == "data_root" for p in problems)
        ]
        compared = (
            "every data root resolved here is distinct (not compared: the data_root of "
            f"profile {' and '.join(repr(name) for name in unresolved)}, which cannot be "
            "resolved here)"
            if unresolved
            else "every data root is distinct"
        )
        _echo(f"ok for profile {report.selected}: the settings are valid and {compared}{reached}")
    else:
        _echo(f"ok: every profile is valid and every data root is distinct{reached}")
    to_stderr = bool(failing)  # next to the problems that fail the run
    for name, problems in elsewhere.items():
        _echo(
            f"{len(problems)} problem(s) that only matter where profile {name} is served "
            "(its environment supplies them; not counted in the exit code):",
            err=to_stderr,
        )
        for problem in problems:
            _echo(f"  - {problem.message}", err=to_stderr)
        _echo(f"  check them where it runs: ENV_FOR_DYNACONF={name} app doctor", err=to_stderr)
    if failing:
        sys.exit(failing[0].exit_code)


class _Problem(Record):
    """A problem doctor lists: the settings' (a `ConfigError`) or what reaching the storage
    found (an `app.storage.Probe`); the first one's code is doctor's exit code."""

    message: str
    exit_code: int


def _is_remote(resolved: appconfig.Resolved) -> bool:
    return any(resolved.values.get(key) is not None for key in appconfig.REMOTE_CHOOSERS)


def _reach_selected(report: appconfig.Report, failing: list[_Problem]) -> str:
    """Connect to the selected profile's database and bucket, if it has them, and list what
    answered; add what stops it to ``failing``. Returns the words for doctor's "ok" line.

    Only the selected profile's: another profile's credentials and network are those of the
    place it is served, like its token.
    """
    others = [
        name
        for name, resolved in report.profiles.items()
        if name != report.selected and _is_remote(resolved)
    ]
    if others:
        _echo(
            f"not reached from here: the database and bucket of profile(s) {', '.join(others)}"
            " (doctor connects to the selected profile's only; check one where it runs: "
            "ENV_FOR_DYNACONF=NAME app doctor)"
        )
    selected = report.selected
    if not _is_remote(report.profiles[selected]):
        root = report.profiles[selected].data_root
        # Only a root that is there (the first start of an unprotected profile makes it): a
        # fresh checkout's doctor imports neither the lock nor the storage. A protected
        # profile's server does not make its root, and doctor said "ok" of one that every
        # start refused (red team 56).
        if not failing and root is not None:
            if os.path.lexists(root):
                _check_local_root(selected, failing)
            elif report.profiles[selected].values.get("protected"):
                _check_missing_root(selected, failing)
        return ""
    if report.problems:
        _echo(f"profile {selected}: database and bucket not checked until the settings' "
                   "problems below are fixed")  # fmt: skip
        return ""
    try:
        config = appconfig.load(selected, profile_source="--profile", serving=False)
    except AppError as error:
        failing.append(_Problem(error.message, error.exit_code))
        return ""
    # Imported here: only a remote profile pays for the seam and, through it, the drivers.
    from app.storage import probe

    _echo(f"profile {selected}, reached from here (read-only):")
    count = len(failing)
    for found in probe(config):
        _echo(f"  {found.subject}: {found.found}")
        if found.problem is not None:
            failing.append(_Problem(found.problem, found.exit_code))
    return "" if len(failing) > count else f"; profile {selected}'s database and bucket answer"


def _check_local_root(selected: str, failing: list[_Problem]) -> None:
    """Add to ``failing`` what every command that opens the selected profile's data root
    would refuse (red team 53: doctor said "ok" of a root stamped with another profile)."""
    try:
        config = appconfig.load(selected, profile_source="--profile", serving=False)
    except AppError as error:
        failing.append(_Problem(error.message, error.exit_code))
        return
    from app.storage import probe

    found = [
        _Problem(found.problem, found.exit_code)
        for found in probe(config)
        if found.problem is not None
    ]
    failing.extend(found)


def _check_missing_root(selected: str, failing: list[_Problem]) -> None:
    """Add to ``failing`` the refusal `app serve` gives a protected profile's missing root."""
    try:
        config = appconfig.load(selected, profile_source="--profile", serving=False)
        if config.protected:
            _refuse_missing_root(config, "serve", _NOT_MADE)
    except AppError as error:
        failing.append(_Problem(error.message, error.exit_code))


def _storage_line(resolved: appconfig.Resolved) -> str:
    """Where a profile keeps its data, as `app doctor` lists it (no password, no key)."""
    values = resolved.values
    if values.get("database_url") is not None or values.get("blob_url") is not None:
        database = appconfig.KEYS["database_url"].show(values.get("database_url"))
        return (
            f"database_url = {database}, blob_url = {values.get('blob_url')} "
            f"at {values.get('s3_endpoint_url')}"
        )
    root = resolved.data_root
    # As `app status` says it: a root that is not there is most often a mistyped path, and
    # the `sessions` and `data` commands refuse it until a server's first start creates it.
    missing = "" if root is None or os.path.lexists(root) else " (does not exist yet)"
    return f"data_root = {root}{missing}"


def _problems_where_served(report: appconfig.Report) -> dict[str, list[ConfigError]]:
    """What each other profile would be refused for if selected with only the files' values.

    Those come from the environment the profile runs in (production's token), which this
    shell's APP_* variables do not describe: they configure the selected profile only.
    """
    settings_variables = {spec.env for spec in appconfig.KEYS.values()}
    files_only = {k: v for k, v in os.environ.items() if k not in settings_variables}
    known = {problem.message for problem in report.problems + report.serving_problems}
    found: dict[str, list[ConfigError]] = {}
    for name in report.profiles:
        if name == report.selected:
            continue
        other = appconfig.inspect_profiles(name, files_only, profile_source="app doctor")
        own = [
            p
            for p in other.problems + other.serving_problems
            if p.message not in known and getattr(p, "profile", None) == name
        ]
        if own:
            found[name] = own
    return found


# --- serve, status, sessions, data (the data root and the server) ---------------------------


_CONFIRM_OPTION = "--yes-i-mean-it"


_MAX_AGE_SECONDS = 100 * 365 * 86400  # as POST /trash/empty's older_than


# Not ParamType[timedelta]: it is generic only in recent click, and click 8.1 is supported.
class AsciiIntRange(click.IntRange):
    """`click.IntRange` for ASCII digits only.

    click reads an integer with Python's ``int()``, which takes ``8_0``, ``+80``, `` 80`` and
    other scripts' digits (Arabic-Indic, fullwidth): ``app serve --port 8_0`` served on port 80.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            self.fail(
                f"{value!r} is not a whole number in ASCII digits (0-9, no sign, space or _)",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


class Duration(click.ParamType):  # type: ignore[type-arg]
    """An age such as ``30m``, ``12h``, ``7d`` or ``2w``, as a `timedelta`."""

    name = "duration"
    # [0-9], not \d: \d is any script's digit, and float() reads them (Arabic-Indic 12d was
    # 12 days).
    _FORM = LazyPattern(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
    _UNIT_SECONDS: ClassVar[dict[str, int]] = {
        "s": 1,
        "m": 60,
        "h": 3600,
        "d": 86400,
        "w": 7 * 86400,
    }

    def convert(
        self, value: str | timedelta, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        if value.strip().endswith("M"):
            # Minutes here, months to many tools (and to `ls`'s sizes, mega): 30M emptied 30
            # minutes' worth where 30 months' was meant.
            self.fail(
                f"{value!r} is ambiguous: M is months to some tools and minutes to others; "
                f"write {value.strip()[:-1]}m for minutes, or days (7d) or weeks (2w)",
                param,
                ctx,
            )
        found = self._FORM.fullmatch(value.strip().lower())
        if found is None:
            self.fail(
                f"{value!r} is not a duration; use a number and a unit: 30m, 12h, 7d, 2w",
                param,
                ctx,
            )
        seconds = float(found.group(1)) * self._UNIT_SECONDS[found.group(2)]
        if seconds > _MAX_AGE_SECONDS:  # past it, the cutoff date overflowed: a traceback
            self.fail(
                f"{value!r} is longer than 100 years, older than any entry the trash can "
                "hold; give a shorter age, or leave the option out for all",
                param,
                ctx,
            )
        return timedelta(seconds=seconds)


def _require_confirmation(config: appconfig.Config, operation: str, confirmed: bool) -> None:
    # Checked before the data root is even opened: a refused command must not create the
    # root, take the lock, or write an audit line.
    if config.protected and not confirmed:
        raise ConfirmationRequiredError(operation, config.profile, _CONFIRM_OPTION)


@cli.command()
@click.option(
    "--host", metavar="ADDRESS", help="Address to listen on. Default: the profile's host."
)
@click.option(
    "--port",
    type=AsciiIntRange(0, 65535),
    help="Port to listen on (0: any free port). Default: the profile's port.",
)
@click.option(
    "--workers",
    type=AsciiIntRange(1, 512),
    default=1,
    show_default=True,
    help="Server processes on the port, each a replica with its own hold on the database "
    "(PostgreSQL and object storage only: a data root has one holder).",
)
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int) -> None:
    """Serve the HTTP API on the profile's storage, holding it until stopped.

    On a data root, the root is locked before the port is bound, so a second server on the
    same root exits 75 naming the first. On PostgreSQL and object storage, any number of
    servers (on any machines) serve the profile together, each a replica that holds the
    database shared; it exits 75 while a maintenance command holds it. A port in use exits
    69. SIGTERM or Ctrl-C stops the server once in-flight requests finish, then releases its
    hold. If the lock file is deleted or replaced, or the database connection is lost, while
    serving, the server logs why and exits 70.
    """
    config = load_config(ctx, serving=True)
    if workers > 1 and config.backend != appconfig.REMOTE:
        from app.server.run import WORKERS_NEED_REMOTE

        raise click.UsageError(WORKERS_NEED_REMOTE.format(profile=config.profile), ctx)
    if config.protected:
        _refuse_missing_root(config, "serve", _NOT_MADE)
    from app import server

    server.serve(config, host=host, port=port, workers=workers)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on standard output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Say who holds the profile's storage (or that nobody does), and its profile stamp.

    On a data root, the lock's holder; on PostgreSQL and object storage, every live replica
    (host, pid, since, URL). Only looks: creates nothing and takes no lasting lock. What it
    shows is one moment; a holder may be gone (or a new one there) by the time you read it.
    Exits 0 either way.
    """
    config = load_config(ctx)
    from app.storage import status as storage_status

    seen = storage_status(config)
    if as_json:
        _echo(json.dumps({"profile": config.profile, **seen.to_dict()}, indent=2), commands=False)
        return
    remote = config.backend == appconfig.REMOTE
    _echo(f"profile: {config.profile}")
    # A remote profile whose database could not be read: whether it is stamped, and who
    # serves it, is unknown, and must not read as "not stamped yet" or "nobody".
    unknown = remote and seen.stamp_error is not None
    if remote:
        missing = "" if seen.exists or unknown else " (not stamped yet)"
        _echo(f"storage: {seen.location}{missing}")
    else:
        missing = "" if seen.exists else " (does not exist yet)"
        if not seen.exists and os.path.lexists(seen.location):
            missing = " (not a directory)"  # red team 56: it said "does not exist yet"
        elif not seen.exists and config.protected:
            # "yet" promised a first start that a protected profile's server never makes
            # (red team 56): most often a mistyped data_root.
            missing = (
                " (does not exist, and a server of a protected profile does not create it; "
                "`app doctor` says what to do)"
            )
        _echo(f"data root: {seen.location}{missing}")
    _echo_stamp(seen, config.profile, remote)
    holder = seen.holder
    if unknown:
        _echo(
            "served by: unknown, since the database could not be read; "
            "`app doctor` checks that it answers"
        )
        return
    unseen = getattr(seen, "holders_unknown", None)
    if unseen:
        # Not "nobody" (red team 39): a standby sees none of its primary's replicas.
        _echo(f"served by: unknown: {unseen}")
        return
    if not seen.held:
        _echo("held by: nobody")
        return
    if remote:
        from app.remote.errors import describe_replica

        _echo(f"served by {len(seen.holders)} live replica(s):")
        for replica in seen.holders:
            _echo(f"  {describe_replica(replica)}")
        return
    _echo(f"held by: {seen.held_by}")
    from app.storage import serving_url

    url = serving_url(holder, config.host) if holder and "took_lock" not in holder else None
    if url is not None:
        _echo(f"serving: {url}")


def _echo_stamp(seen: Status, profile: str, remote: bool) -> None:
    """`app status`'s stamp line, and what would refuse the object prefix."""
    if seen.stamp_error:
        _echo(f"stamp: unreadable: {seen.stamp_error}")
    elif seen.stamp is None:
        first = "the first open of the database" if remote else "the first writer to open the root"
        marked = seen.marked
        if marked is not None and marked != profile:
            # Its stamp lost: another profile's writer is refused (red team 63).
            _echo(
                f"stamp: none (deleted or lost: its own directories are marked as profile "
                f"{marked!r}'s, so a writer of {profile!r} is refused; `app data restamp "
                f"--profile {profile} --from {shell_word(marked)}` hands it over)"
            )
        else:
            _echo(f"stamp: none ({first} stamps it)")
    else:
        stamped = str(seen.stamp.get("profile"))
        # As the backend compares it: a data root's stamp by its lower case, as every other
        # command opens it (`{"profile": "Production"}` written by hand was "NOT
        # 'production': refused" here, and opened by each of them; red team 61).
        same = stamped == profile if remote else stamped.lower() == profile
        mismatch = "" if same else f"  (NOT {profile!r}: refused)"
        _echo(f"stamp: profile {stamped}, created {seen.stamp.get('created_at')}{mismatch}")
    # Red team 42: a prefix every other command refuses was not named by status.
    objects_error = getattr(seen, "objects_error", None)
    if objects_error:
        _echo(f"objects: {objects_error}")


@cli.group()
def sessions() -> None:
    """List, show and restore sessions. Listing reads; restore takes the data root's lock.

    Each exits 78 on a data root that does not exist, and creates none: only a server
    creates its root, at its first start.
    """


def _reader_store(config: appconfig.Config, doing: str) -> Storage:
    from app.storage import open_storage

    _refuse_missing_root(config, doing)
    return open_storage(config, writer=False)


# How a protected profile's root comes to be: made empty by hand, once (deploy-production.md).
_NOT_MADE = (
    "a server of a protected profile does not create its data root, so that a mistyped "
    "data_root is not served empty beside the real one"
)
_FIRST_DEPLOY = (
    "for a first deploy, create the empty directory, owned by the service's user "
    "(`install -d -m 0700 -o app -g app {root}`): a server's first start lays it out "
    "and stamps it"
)


def _refuse_missing_root(
    config: appconfig.Config,
    doing: str,
    why: str = "this command does not create one",
    first: str | None = None,
) -> None:
    """Refuse a command on a local data root that does not exist, before anything is created.

    A writer opened from Python creates its root, as a server of an unprotected profile does
    at its first start. A command run by hand did too: `APP_DATA_ROOT=/srv/app/dta app data
    empty-trash` created and stamped a new production root beside the real one and said
    "removed 0 trash entries", and `sessions list` and `data check` answered "nothing" and
    "clean" for it; so did `app serve` on production, which then served that empty root and
    took new sessions into it. A path that names nothing is far more often mistyped than
    meant.
    """
    root = config.data_root
    if config.backend == appconfig.REMOTE or root is None or os.path.lexists(root):
        return
    source = config.sources.get("data_root", "built-in default")
    if first is None:
        first = (
            _FIRST_DEPLOY.format(root=shell_word(str(root)))
            if config.protected
            else "a server creates its root at its first start (`app serve`)"
        )
    raise DataRootStateError(
        root,
        f"the directory does not exist, so there is nothing to {doing}, and {why}",
        f"if the path is mistyped, correct data_root of profile {config.profile!r} (from "
        f"{source}; `app config --all` shows every profile's root); {first}",
    )


@sessions.command("list")
@click.option("--trash", is_flag=True, help="List the trash instead (what can be restored).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one per session or entry.")
@click.pass_context
def sessions_list(ctx: click.Context, trash: bool, as_json: bool) -> None:
    """List the sessions (oldest first), or with --trash the deleted ones."""
    store = _reader_store(load_config(ctx), "list")
    if trash:
        entries = store.list_trash()
        if as_json:
            for entry in entries:
                click.echo(json.dumps(entry.to_dict()))
            return
        if not entries:
            _echo("the trash is empty: nothing to restore")
            return
        row = "{:<32}  {:<20}  {:<7}  {:<7}  {}"
        _echo(row.format("SESSION", "DELETED (UTC)", "REASON", "KIND", "WHAT"))
        for entry in entries:
            what = entry.file if entry.kind == "file" else f"session {entry.title or ''!s}"
            what = _printable(what or "")
            deleted = f"{entry.deleted_at:%Y-%m-%d %H:%M:%S}Z"
            _echo(
                row.format(entry.session_id, deleted, entry.reason, entry.kind, what),
                commands=False,
            )
        _warn_linked_entries(entries)
        return
    listed = set()
    for session in store.iter_all():
        listed.add(session["id"])
        if as_json:
            click.echo(json.dumps(session))
            continue
        _echo(
            f"{session['id']}  {session['created_at'][:19]}Z  "
            f"{len(session['files']):>4} file(s)  {_printable(session['title'])}",
            commands=False,  # a client's title, as stored
        )
    for session_id, why in store.left_out(listed):  # once left out without a word
        _echo(f"warning: session {session_id} is not listed: {_printable(why)}", err=True)


def _warn_linked_entries(entries: list[TrashEntry]) -> None:
    """Name each entry listed as a symbolic link (``reason`` ``linked``), where it leads and
    what puts it back: what it holds is neither listed nor restored until then (red team 42)."""
    from app.storage import LINKED

    for entry in entries:
        if entry.reason != LINKED:
            continue
        remedy = entry.remedy or "list the trash again"
        try:
            where = f"(to {entry.path.readlink()}) "
        except OSError as error:  # gone since the listing
            where, remedy = "", f"it is gone since ({error.strerror}): list the trash again"
        _echo(
            f"warning: trash entry {entry.path} is a symbolic link {where}where a trash entry "
            "belongs: the app never follows one, so what it holds is not listed, and a restore "
            f"of session {entry.session_id}'s {entry.kind} is refused while it may hold the "
            f"newest copy. {_printable(remedy[0].upper() + remedy[1:])}",
            err=True,
        )


@sessions.command("show")
@click.argument("session_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The session.json as stored.")
@click.pass_context
def sessions_show(ctx: click.Context, session_id: str, as_json: bool) -> None:
    """Show one session and its files."""
    config = load_config(ctx)
    from app.storage import check_session_id

    check_session_id(session_id)  # a malformed id is the argument's fault, wherever the root is
    store = _reader_store(config, "show")
    try:
        session = store.get_session(session_id)
    except SessionNotFoundError:
        newest = store.deleted_entry(session_id)
        if newest is None:
            raise
        raise SessionNotFoundError(session_id, deleted=newest) from None
    if as_json:
        # ASCII, as every other `--json` is: a character the output's encoding lacks was
        # written as Python's escape, and `\U0001f600` or `\xe9` is none of JSON's (a title
        # with an emoji under a Latin-1 locale, `PYTHONIOENCODING=latin-1`: no JSON at all),
        # and a terminal acted on a U+202E written as it is (red team 62).
        click.echo(json.dumps(session, indent=2))
        return
    for key in ("id", "title", "created_at", "updated_at"):
        _echo(f"{key}: {_printable(session[key])}", commands=False)
    _echo(
        f"metadata: {_printable(json.dumps(session['metadata'], ensure_ascii=False))}",
        commands=False,
    )
    _echo(f"files: {len(session['files'])}")
    for entry in session["files"]:
        _echo(
            f"  {_printable(entry['name'])}  {entry['size']} bytes  sha256 {entry['sha256']}",
            commands=False,
        )


@sessions.command("restore")
@click.argument("session_id", metavar="ID")
@click.option("--file", "file_name", metavar="NAME", help="Restore one deleted file instead.")
@click.option(
    "--entry",
    metavar="TRASH",
    help="Take this trash entry (its name, as `list --trash --json` and DELETE's answer give "
    "it) rather than the newest: an older version of a file.",
)
@click.pass_context
def sessions_restore(
    ctx: click.Context, session_id: str, file_name: str | None, entry: str | None
) -> None:
    """Bring a deleted session (or one file, with --file) back from the trash.

    Takes the newest copy in the trash, or with --entry the one in that entry (a version of
    a file replaced or deleted before the last). Takes the data root's lock, so it exits 75
    while a server runs on it. Refuses to overwrite a session or file that exists again.
    """
    config = load_config(ctx)
    from app.storage import open_storage

    what = f"restore session {session_id}" + (f" file {file_name!r}" if file_name else "")
    from app.storage import check_session_id

    check_session_id(session_id)
    _refuse_missing_root(config, "restore")
    with open_storage(config, writer=True, wanted=what) as store:
        try:
            session = store.restore(session_id, file=file_name, entry=entry)
        except NotInTrashError as missing:
            if file_name is not None or entry is not None or not _is_live(store, session_id):
                raise
            raise NotInTrashError(
                session_id, live=True, finished=missing.finished, changes=missing.changes
            ) from missing
    restored = f"file {file_name!r} of session" if file_name else "session"
    taken = "" if entry is None else f" from trash entry {entry}"
    title = _printable(session["title"]) or "untitled"
    _echo(f"restored {restored} {session['id']} ({title}){taken}", commands=False)


def _is_live(store: Storage, session_id: str) -> bool:
    """Whether `session_id` is a live session (a restore that found none in the trash)."""
    try:
        store.get_session(session_id)
    except (AppError, OSError):
        return False
    return True


@cli.group()
def data() -> None:
    """Remove, check or re-stamp data. A command that changes data takes the data root's lock
    for its whole run.

    Each exits 78 on a data root that does not exist, and creates none: only a server
    creates its root, at its first start.
    """


@data.command("purge")
@click.option(_CONFIRM_OPTION, "confirmed", is_flag=True, help="Required on protected profiles.")
@click.pass_context
def data_purge(ctx: click.Context, confirmed: bool) -> None:
    """Move every session to the trash (restorable until `app data empty-trash`).

    Exits 75 and changes nothing while a server (or anything else) holds the data root.
    On a protected profile (production always is) it needs --yes-i-mean-it, and without it
    exits 77 before touching anything.
    """
    config = load_config(ctx)
    _require_confirmation(config, "purge every session", confirmed)
    _refuse_missing_root(config, "purge")
    from app.storage import open_storage

    with open_storage(config, writer=True, wanted="purge every session") as store:
        entries = store.purge()
        trash = store.trash_location
    _echo(
        f"moved {len(entries)} session(s) to {trash}; `app sessions list --trash` shows them "
        "and `app sessions restore ID` brings one back"
    )


@data.command("empty-trash")
@click.option(
    "--older-than",
    type=Duration(),
    metavar="AGE",
    help="Only entries deleted longer ago than AGE (30m, 12h, 7d, 2w), on the boot clock "
    "for entries deleted since the last boot. Default: all.",
)
@click.option(_CONFIRM_OPTION, "confirmed", is_flag=True, help="Required on protected profiles.")
@click.pass_context
def data_empty_trash(ctx: click.Context, older_than: timedelta | None, confirmed: bool) -> None:
    """Delete the trash for good: the only command that removes bytes.

    Exits 75 while the data root is held; on a protected profile needs --yes-i-mean-it
    (exit 77 without it, before touching anything).
    """
    config = load_config(ctx)
    _require_confirmation(config, "empty the trash", confirmed)
    _refuse_missing_root(config, "empty")
    from app.remote.errors import ReplicasLiveError
    from app.storage import open_storage

    try:
        store = open_storage(config, writer=True, wanted="empty the trash")
    except (DataRootInUseError, ReplicasLiveError) as error:
        server = _serving_url(config, error)
        if server is not None:
            # A server writes to its storage: it empties the trash itself when asked.
            query = [] if older_than is None else [f"older_than={_seconds_text(older_than)}"]
            if config.protected:
                query.append("confirm=yes-i-mean-it")
            seconds = f"?{'&'.join(query)}" if query else ""
            _echo(
                "hint: to free space without stopping the server, ask it: curl -X POST "
                f'{_token_header(config)}"{server}/trash/empty{seconds}"',
                err=True,
            )
        raise
    with store:
        removed = store.empty_trash(older_than=older_than)
    said = f"removed {len(removed)} trash entr{'y' if len(removed) == 1 else 'ies'}"
    from app.storage import Emptied

    if isinstance(removed, Emptied) and (finished := removed.finished):
        # Run again after one stopped once it had taken them out of the trash: "removed 0"
        # of the entries whose bytes this run removed (red team 74).
        said += (
            f", and finished removing {len(finished)} that an earlier run, stopped partway, "
            f"had taken out of the trash ({', '.join(finished)}; this run's audit line names them)"
        )
    _echo(said)


def _token_header(config: appconfig.Config) -> str:
    """The ``-H`` of a ``curl`` a hint prints, sending the profile's token as the command
    read it, never showing it.

    ``$APP_API_TOKEN`` alone was empty where the token comes from a settings file (a
    deploy-time secrets file, development's ``.secrets.toml``): the ``curl`` the hint printed
    was refused 401 "missing bearer token" (red team 57). Such a token is read by the app's
    own loading of the profile, in the command; none configured, no header is sent.

    But a protected profile's server always has one (it does not start without it), and
    its token commonly lives in the service's environment alone (``APP_API_TOKEN`` in
    ``/etc/app.env``), which an operator's shell does not load: the hint's ``curl`` for
    production was sent without a header and refused 401 "missing bearer token", run as
    written (red team 62). It reads ``$APP_API_TOKEN``, and the shell stops it, naming the
    variable and where the server's value is, while that is not set."""
    key = appconfig.KEYS["api_token"]
    if config.api_token is None:
        if not config.protected:
            return ""
        # No quote in it: a single one, even here, leaves bash reading for its match.
        unset = (
            "is not set in this shell: export the token the server was started with, as "
            "the environment of its service sets it"
        )
        return f'-H "Authorization: Bearer ${{{key.env}:?{unset}}}" '
    if config.sources.get("api_token") == f"environment {key.env}":
        # Set for the command alone (`APP_API_TOKEN=... app data empty-trash`), it is not in
        # the shell the curl is pasted into: the shell stops it, naming the variable, rather
        # than sending an empty bearer (red team 57 on the session's fixes).
        unset = "is not set in this shell: export it, as the command had it"
        return f'-H "Authorization: Bearer ${{{key.env}:?{unset}}}" '
    # The settings directory the command read, written out: set for the command alone
    # (`APP_SETTINGS_DIR=/srv/app/settings app data empty-trash`), the read in the pasted
    # curl loaded another directory's token (the project's), refused 401 (red team 57 on
    # the session's fixes).
    name = appconfig.SETTINGS_DIR_ENV
    chosen = os.environ.get(name, "").strip() and config.settings_dir.absolute()
    where = f"env {shell_word(f'{name}={chosen}')} " if chosen else ""
    read = f'from app.config import load; print(load("{config.profile}").api_token)'
    python = f"{where}{shell_word(sys.executable)} -c {shell_word(read)}"
    return f'-H "Authorization: Bearer $({python})" '


def _seconds_text(age: timedelta) -> str:
    """``age`` in seconds, exactly, as ``POST /trash/empty?older_than=`` reads it: ``0.5``.

    Cut to whole seconds (``int()``), the hint for ``--older-than 0.5s`` was ``older_than=0``,
    which empties every entry, those deleted in the last half second the operator asked to
    keep too; ``0.99m`` was 59 s, not 59.4 (red team 55).
    """
    whole, micro = divmod(age // timedelta(microseconds=1), 1_000_000)
    return str(whole) if not micro else f"{whole}.{micro:06d}".rstrip("0")


def _named(config: appconfig.Config, location: str) -> str:
    # A local root is named as such (the messages always did); a remote location says itself.
    return location if config.backend == appconfig.REMOTE else f"data root {location}"


def _serving_url(config: appconfig.Config, error: AppError) -> str | None:
    """The URL of a server that holds the storage ``error`` refused, if one published it."""
    from app.storage import serving_url, well_formed_url

    replicas = getattr(error, "replicas", ())
    for replica in replicas:
        # The database's row, which any client of its role writes: `empty-trash`'s hint
        # pastes it in a `curl` (red team 72 on regress, round l, as `app.lock.local_url`).
        if well_formed_url(str(replica.get("url") or "")):
            return str(replica["url"])
    return serving_url(getattr(error, "holder", None) or {}, config.host)


@data.command("check")
@click.option(
    "--repair",
    is_flag=True,
    help="Reconcile what is found (takes the data root's lock: exit 75 while a server runs).",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Compare each file's size with the acknowledged one, not its SHA-256: reads no "
    "file's bytes (a change of the same size goes unseen).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on standard output.")
@click.pass_context
def data_check(ctx: click.Context, repair: bool, quick: bool, as_json: bool) -> None:
    """Find what an interrupted write left behind; with --repair, reconcile it (audited).

    Looks for files left in .tmp/, unfinished session creates, trash entries that are
    empty, hold only their manifest, wait for their bytes or lack their audit line, file
    records without bytes, bytes without a record, and bytes that are no longer those
    acknowledged (another size or SHA-256: every file and every version in the trash is
    read whole, so this takes as long as reading the root; --quick compares sizes only and
    reads no bytes). Read-only by default: changes
    nothing and takes no lock, so it may run next to a live server (a write in flight is
    not reported: what it finds is read again once none is in flight). --repair never
    deletes acknowledged bytes (bytes without a record go to the trash; damaged bytes are
    left for a human) and writes one `check-repair` audit line; a server runs the same
    repair at every start-up (which compares no bytes).

    Exits 0 when the root is consistent (or everything was repaired), 65 when something
    is found (without --repair) or needs a human, 75 with --repair while the root is held.
    """
    config = load_config(ctx)
    from app.storage import open_storage

    if repair:
        remote = config.backend == appconfig.REMOTE
        wanted = "repair the database and its objects" if remote else "repair the data root"
        _refuse_missing_root(config, "repair")
        with open_storage(config, writer=True, wanted=wanted) as store:
            report = store.check(repair=True, hash_bytes=not quick)
            location = store.location
    else:
        with _reader_store(config, "check") as store:
            report = store.check(hash_bytes=not quick)
            location = store.location
    if as_json:
        click.echo(json.dumps({"profile": config.profile, **report.to_dict()}, indent=2))
    else:
        for finding in report.findings:
            done = "repaired: " if finding.repaired else ("fix: " if repair else "--repair: ")
            _echo(f"{finding.problem}  {finding.target}: {finding.detail}; {done}{finding.repair}")
        unresolved = report.unresolved
        if not report.findings and report.unaudited is not None:
            # Only the open's clear-tmp can have been lost here (red team 64).
            _echo(
                f"clean: {_named(config, location)} is consistent; the audit log could not "
                f"record what its open cleared ({report.unaudited}): its record is in this "
                "command's log, above"
            )
        elif not report.findings:
            _echo(f"clean: {_named(config, location)} is consistent")
        elif not unresolved and report.unaudited is not None:
            # Only the open's line lost: the log holds the repairs' (red team 64, regress).
            said, whose = (
                ("lists them, but could not record what its open cleared", "its")
                if report.repairs_audited
                else ("could not record them", "their")
            )
            _echo(
                f"repaired {len(report.findings)} finding(s); the audit log {said} "
                f"({report.unaudited}): {whose} record is in this command's log, above"
            )
        elif not unresolved:
            _echo(f"repaired {len(report.findings)} finding(s); the audit log lists them")
        elif repair:
            what = "its open cleared" if report.repairs_audited else "was repaired"
            lost = (
                ""
                if report.unaudited is None
                else f"; the audit log could not record what {what} ({report.unaudited}): "
                "its record is in this command's log, above"
            )
            _echo(f"{len(unresolved)} finding(s) need a human; nothing was done about them{lost}")
        else:
            _echo(_unrepaired_summary(unresolved))
    if report.unresolved:
        sys.exit(EX_DATAERR)


def _unrepaired_summary(unresolved: list[Finding]) -> str:
    """What a read-only `app data check` says of its findings: which `--repair` reconciles,
    and which need a human (their ``repair`` says "nothing: ..."), which it leaves as they
    are. "`--repair` reconciles them (stop the server first)", said of findings only a human
    can mend, had an operator stop a live server for a repair that changed nothing (red
    team 51)."""
    human = sum(1 for finding in unresolved if finding.repair.startswith("nothing"))
    repairable = len(unresolved) - human
    if not repairable:
        return (
            f"{human} finding(s) need a human, which `app data check --repair` leaves as they "
            "are: each says above what to do (no server need stop for it)"
        )
    said = (
        f"{len(unresolved)} finding(s); `app data check --repair` reconciles "
        + ("them" if not human else f"{repairable} of them")
        + " (stop the server first: it takes the lock; a server start-up repairs too)"
    )
    if human:
        said += f", and {human} need a human: each says above what to do"
    return said


@data.command("restamp")
@click.option(
    "--from", "from_profile", metavar="NAME", required=True, help="The profile it is stamped with."
)
@click.option(_CONFIRM_OPTION, "confirmed", is_flag=True, help="Required on protected profiles.")
@click.pass_context
def data_restamp(ctx: click.Context, from_profile: str, confirmed: bool) -> None:
    """Hand the data root of --profile, stamped with another profile, to it (audited).

    For a root that really moved between profiles, e.g. a staging copy promoted to
    development. Takes the lock (exit 75 while held). Handing a root to or from a protected
    profile (production always is), or from one these settings do not define, needs
    --yes-i-mean-it.
    """
    config = load_config(ctx)
    source = from_profile.lower()
    where = (
        "the database and the object prefix"
        if config.backend == appconfig.REMOTE
        else f"data root {config.data_root}"
    )

    def confirm(stamped: str) -> None:
        # Asked of the stamp found, once it is `--from`'s (on a data root): a mistyped
        # `--from prodution` was asked to confirm first, and, confirmed as told, refused
        # again for the stamp it did not name (red team 61).
        if config.taking_needs_confirmation(stamped) and not confirmed:
            raise ConfirmationRequiredError(
                f"re-stamp {where} from {stamped!r} to {config.profile!r}",
                stamped
                if stamped in config.protected_profiles or stamped not in config.profiles
                else config.profile,
                _CONFIRM_OPTION,
                known=stamped in config.profiles,
            )

    from app.storage import restamp

    stamp = restamp(config, from_profile, confirm=confirm)
    if stamp["changed"]:
        _echo(f"{where} is now stamped {stamp['profile']!r} (was {source!r})")
        if stamp.get("unaudited"):
            _echo(
                f"the audit log could not record it ({stamp['unaudited']}): its record is in "
                "this command's log, above"
            )
        if stamp.get("cleared"):
            # What an earlier run, killed as it wrote the stamp, left (red team 74 on regress).
            _echo(f"removed {stamp['cleared']}")
    elif stamp.get("finished") or stamp.get("unfinished"):
        # One stopped after its stamp (killed, a full disk), finished (red team 74), or what
        # this run could not finish either (red team 74 on regress).
        said = []
        if stamp.get("finished"):
            said.append(
                f"finished what an earlier run stopped before: {' and '.join(stamp['finished'])}"
            )
        if stamp.get("unfinished"):
            said.append(
                f"could not write what an earlier run stopped before: "
                f"{' and '.join(stamp['unfinished'])}"
            )
        _echo(f"{where} is already stamped {stamp['profile']!r}; {'; '.join(said)}")
    else:
        # A repeated command (one interrupted halfway is finished above, and says "now").
        _echo(f"{where} is already stamped {stamp['profile']!r}: nothing was changed")


#: The error handler of standard output's encoding (`_unencodable`).
_OUTPUT_ERRORS: Final = "app-output"


def _unencodable(error: UnicodeError) -> tuple[str | bytes, int]:
    """What standard output writes for text its encoding cannot take, rather than raise.

    A name of the data root that is not UTF-8 (a file ``zz\\xff`` under ``sessions/``, read by
    Python as U+DCFF) made ``app data check`` a ``UnicodeEncodeError`` traceback, exit 1, on a
    host whose locale is UTF-8 (Python's strict ``errors`` there; only the C locale's is
    ``surrogateescape``), and a session's title a locale's encoding has no letter for (``☃``
    under Latin-1) did the same to ``sessions list``, and to ``sessions restore`` after it had
    restored the session (red team 51). Such a name is written as the bytes it was read
    from, as ``ls`` does; any other character as its ``\\u`` escape.
    """
    if not isinstance(error, UnicodeEncodeError):
        raise error
    piece = error.object[error.start : error.end]
    if all(0xDC80 <= ord(c) <= 0xDCFF for c in piece):
        return bytes(ord(c) - 0xDC00 for c in piece), error.end
    return piece.encode("ascii", "backslashreplace").decode("ascii"), error.end


def _encode_all(stream: IO[Any]) -> None:
    """Give ``stream`` (a standard stream) the `_unencodable` handler, where it has one."""
    import codecs

    try:
        codecs.lookup_error(_OUTPUT_ERRORS)
    except LookupError:
        codecs.register_error(_OUTPUT_ERRORS, _unencodable)
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(OSError, ValueError):
            reconfigure(errors=_OUTPUT_ERRORS)


def _standard_descriptors() -> None:
    """Give a standard descriptor the process was started without (``app serve >&-``, an
    init script's ``<&- >&- 2>&-``) ``/dev/null``, and its stream too.

    Python leaves such a stream ``None``: ``app serve >&-`` was a traceback from uvicorn's
    log formatter, exit 1, which ``Restart=on-failure`` restarts in a loop, and with every
    one closed it exited 1 without a word (red team 57). And the lowest free descriptor is
    the next one opened: the lock file, an upload's temporary file or the audit log became
    descriptor 1 or 2, where a child's output, or anything written to "standard error" below
    Python, would land in the data root. Whatever was to be written there is discarded, as
    ``> /dev/null`` does; the command runs as it would with it.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:  # a lower one was closed too, and is done in its turn
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            # Not the descriptor itself: one an import may have opened since is not a stream.
            setattr(sys, name, Path(os.devnull).open(mode))  # noqa: SIM115 - the process's


def main() -> None:
    """Console-script entry point."""
    # What the imports made (modules, classes, click's command tree) lives as long as the
    # command: out of the cyclic collector's sight, so that its collections, and the one at
    # the interpreter's exit, no longer walk it again, as a server's start (app.server.run)
    # and the suite's collection (tests/conftest.py) do. About 27 M instructions of `app
    # config`'s start (bench/README.md, "perf-startup64"); only where `main` is the
    # process's entry, never on an import of this module.
    gc.freeze()
    _standard_descriptors()
    last = logging.lastResort  # where a command's warnings go: it configures no log
    if last is not None and not any(isinstance(f, PrintableLines) for f in last.filters):
        last.addFilter(PrintableLines())
    if sys.stdout is not None:  # None when started with it closed (`>&-`): click prints nothing
        _encode_all(sys.stdout)
        sys.stdout = _StandardStream(sys.stdout, _refused_as_output)
    if sys.stderr is not None:
        sys.stderr = _StandardStream(sys.stderr, functools.partial(contextlib.suppress, OSError))
    try:
        cli(prog_name="app")
    except OutputFailed as failed:  # `app --help > /dev/full`: before any command runs
        _output_failed("app", failed, changes=False)


def _output_failed(
    command: str, failed: OutputFailed, *, changes: bool, remote: bool = False
) -> NoReturn:
    """Say that `command`'s standard output refused a write (`OutputFailedError`), and exit."""
    sys.stdout = Path(os.devnull).open("w")  # noqa: SIM115 - for the exit's flush
    code = failed.error.errno or 0
    reason = f"{failed.error.strerror or 'error'}, {errno.errorcode.get(code, code)}"
    fail(OutputFailedError(command, reason, changes=changes, remote=remote))
