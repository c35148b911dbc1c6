"""Red team 64 on regress: the start-up cuts merged from perf-startup64.

What was tried, and held (nothing broke; these tests keep it so):

- `app.cli.refuse_repeated` now runs click's parser only where `_could_name_two_options`
  says the words could name two options. An option given twice is still refused (exit 2,
  naming it, "Give --profile once") in every spelling tried: ``--profile=a --profile b``, four
  and more words, options after the subcommand's name, a value holding ``=`` or a space, a
  value that looks like an option. Over the app's own command tree (every command and group,
  their own options, words of four to seven), sampled: wherever click's parser reads two
  options, the check said they could be (the merge's own test took a made-up command and
  up to three words).
- `Config.__init__`, written out: a `Config` built by keyword and by position,
  `dataclasses.replace`, `copy.copy` and a pickle's round trip make what the standard
  decorator's constructor makes for the same fields (held to a twin that keeps each field's
  default, default factory and ``init``, as `app.records` writes one); assignment and deletion
  are refused, equality is the fields'.
- ``gc.freeze()`` at `app.cli.main`'s start: what a command makes after it (a request's
  cycle, a command's) is still collected; only what the imports made is frozen.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import inspect
import os
import pickle
import random
import sys
import weakref

import click
import pytest
from click.testing import CliRunner

from app import config
from app.cli import _could_name_two_options, cli, main

#: Spellings of a repeated option: (arguments, the option the refusal names).
REPEATED = (
    (["--profile=a", "--profile", "b", "config"], "--profile"),
    (["--profile", "a", "--profile=b", "status", "--json"], "--profile"),
    (["config", "--json", "--profile", "a", "--profile=b"], "--profile"),
    (["config", "--profile=a=b", "--profile=a b"], "--profile"),
    (["config", "--profile", "--profile", "--profile", "b"], "--profile"),
    (["data", "empty-trash", "--older-than", "7d", "--older-than=0m"], "--older-than"),
    (["data", "empty-trash", "--older-than=7d", "--yes-i-mean-it", "--older-than", "0m"],
     "--older-than"),
    (["serve", "--port", "0", "--port=1"], "--port"),
)  # fmt: skip


@pytest.mark.parametrize(("args", "name"), REPEATED, ids=[" ".join(a) for a, _ in REPEATED])
def test_an_option_given_twice_is_refused_in_every_spelling(args: list[str], name: str) -> None:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert f"{name} is given " in result.stderr
    assert "which one was meant is ambiguous, so nothing was done" in result.stderr
    assert f"Give {name} once" in result.stderr


def _commands(group: click.Group) -> list[click.Command]:
    found: list[click.Command] = [group]
    for command in group.commands.values():
        found += _commands(command) if isinstance(command, click.Group) else [command]
    return found


def test_no_two_options_of_the_app_s_commands_pass_the_cheap_check() -> None:
    # Sampled, not swept: every command and group of the app, words of its own options
    # (long, `=`-joined, a value with a space or `=`, a unicode dash, `--`, `-`), four to
    # seven of them.
    rng = random.Random(64)
    checked = 0
    for command in _commands(cli):
        ctx = click.Context(command, info_name=command.name)
        parser = command.make_parser(ctx)
        names = [o for p in command.params if isinstance(p, click.Option) for o in p.opts]
        words = [*names, *(f"{n}=v" for n in names), "a", "0", "--", "-", "a b", "x=y",
                 "\u2014profile", "\u2212h", ""]  # fmt: skip
        lines = ([rng.choice(words) for _ in range(rng.randint(4, 7))] for _ in range(60))
        for args in (line for line in lines if _options_read(parser, line) > 1):
            checked += 1
            assert _could_name_two_options(args), (command.name, args)
    assert checked > 100


def _options_read(parser: click.parser._OptionParser, args: list[str]) -> int:
    """How many options click's `parser` reads in `args` (0 where it refuses them)."""
    with contextlib.suppress(click.UsageError):
        return sum(isinstance(p, click.Option) for p in parser.parse_args(args=list(args))[2])
    return 0


def _twin() -> type:
    """The standard decorator's frozen class of `Config`'s fields, each field as declared
    (default, default factory, ``init``), as `app.records` writes a deferred method."""
    namespace: dict[str, object] = {"__annotations__": {}, "__module__": config.__name__}
    for f in dataclasses.fields(config.Config):
        namespace["__annotations__"][f.name] = f.type  # type: ignore[index]
        namespace[f.name] = dataclasses.field(
            default=f.default, default_factory=f.default_factory, init=f.init
        )
    return dataclasses.dataclass(frozen=True)(type("Config", (), namespace))


def test_a_config_is_built_every_way_as_the_standard_decorator_builds_it() -> None:
    twin = _twin()
    assert inspect.signature(config.Config).parameters == inspect.signature(twin).parameters
    values = {f.name: f"value of {f.name}" for f in dataclasses.fields(config.Config)}
    by_name = config.Config(**values)
    by_position = config.Config(*values.values())
    assert vars(by_name) == vars(by_position) == vars(twin(**values))
    assert by_name == by_position and by_name is not by_position
    for made in (
        dataclasses.replace(by_name, port=8001),
        copy.copy(by_name),
        pickle.loads(pickle.dumps(by_name)),
    ):
        assert type(made) is config.Config
        ours = vars(made)
        assert ours == vars(dataclasses.replace(twin(**values), **{"port": ours["port"]}))
    assert dataclasses.replace(by_name, port=8001) != by_name
    assert hash(by_name) == hash(by_position) == hash(twin(**values))
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'port'"):
        by_name.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'port'"):
        del by_name.port  # type: ignore[misc]
    with pytest.raises(TypeError, match="got multiple values for argument 'profile'"):
        config.Config(*values.values(), profile="x")  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected keyword argument 'prfile'"):
        config.Config(**values, prfile="x")  # type: ignore[call-arg]


def _after_main_s_freeze(report: int) -> None:
    """In a forked child: `app.cli.main` as a command's start makes it (``--version``, its
    output to /dev/null), then a cycle made after it; what was frozen and whether the cycle
    was collected, written to `report`."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the child's, to its _exit
    sys.argv = ["app", "--version"]
    before = gc.get_freeze_count()
    with contextlib.suppress(SystemExit):
        main()
    frozen = gc.get_freeze_count() - before

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    os.write(report, f"{frozen} {gone() is None}".encode())


def test_a_cycle_made_after_main_s_freeze_is_still_collected() -> None:
    # Forked here, not from the run's zygote (its first start is seconds of this file's
    # budget); the child only calls main() and the collector, and leaves by os._exit.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            _after_main_s_freeze(write)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        said = answer.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, said
    frozen, collected = said.split()
    assert int(frozen) > 0, "main() froze what the imports made"
    assert collected == "True", "a cycle made after the freeze is collected"
