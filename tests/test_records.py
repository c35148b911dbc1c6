"""`app.records.Record` makes the class `typing.NamedTuple` makes, without compiling each
field's annotation at import (bench/README.md, "Records without their annotations
compiled"); `app.records.dataclass` the class `dataclasses.dataclass` makes, its methods
written when first used (bench/README.md, "perf-startup59")."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
import subprocess
import sys
import typing
from pathlib import Path
from typing import NamedTuple

import pytest

from app import cli, config, config_files, mountinfo, records, sandbox
from app.records import Record
from app.testing import guard, writes


class Typed(NamedTuple):
    """A record."""

    name: str
    where: Path | None = None

    def twice(self) -> str:
        return self.name * 2


class Made(Record):
    """A record."""

    name: str
    where: Path | None = None

    def twice(self) -> str:
        return self.name * 2


def test_a_record_is_the_named_tuple_typing_makes() -> None:
    for attribute in ("_fields", "_field_defaults", "__doc__", "__module__", "__bases__"):
        assert getattr(Made, attribute) == getattr(Typed, attribute), attribute
    made = Made("a")
    assert made == ("a", None) and isinstance(made, tuple)
    assert made.twice() == "aa" and made._replace(name="b") == Made("b")
    assert made._asdict() == {"name": "a", "where": None}
    assert pickle.loads(pickle.dumps(made)) == made
    # The annotations as written; resolved to the same types as the NamedTuple's.
    assert Made.__annotations__ == {"name": "str", "where": "Path | None"}
    assert typing.get_type_hints(Made) == typing.get_type_hints(Typed)


def test_a_record_refuses_what_a_named_tuple_refuses() -> None:
    with pytest.raises(TypeError, match="Non-default namedtuple field late"):

        class _Late(Record):
            early: int = 1
            late: int

    with pytest.raises(AttributeError, match="Cannot overwrite NamedTuple attribute _make"):

        class _Reserved(Record):
            name: str

            def _make(self) -> None:
                pass

    with pytest.raises(TypeError, match="inherits from Record alone"):

        class _Mixed(Record, dict):
            name: str


def test_every_record_of_the_app_resolves_its_annotations() -> None:
    records = [
        cli._Problem,
        config._Setting,
        config.Key,
        config.Resolved,
        config.Report,
        config_files.Files,
        config_files.Layer,
        config_files.Unresolved,
        sandbox.Protected,
        sandbox.Run,
        sandbox._View,
        sandbox.Context,
        sandbox.LoadRecord,
        guard.RemoteTesting,
        guard.LiveHolder,
        guard.UnseenRoot,
        writes.Target,
        mountinfo.Entry,
    ]
    for record in records:
        assert issubclass(record, tuple) and record._fields, record
        assert set(typing.get_type_hints(record)) == set(record._fields), record


def _twins(**params: bool) -> tuple[type, type]:
    """The same class made by `dataclasses.dataclass` and by `app.records.dataclass`."""
    made = []
    for decorator in (dataclasses.dataclass, records.dataclass):

        class Point:
            x: int
            label: str = "p"
            seen: list[int] = dataclasses.field(
                default_factory=list, compare=False, repr=False, hash=False
            )
            weight: int = dataclasses.field(default=1, kw_only=True)

        made.append(decorator(**params)(Point))
    return made[0], made[1]


@pytest.mark.parametrize(
    "params", [{}, {"frozen": True}, {"frozen": True, "slots": True}, {"slots": True}]
)
def test_a_dataclass_is_the_one_dataclasses_makes(params: dict[str, bool]) -> None:
    standard, later = _twins(**params)
    frozen = params.get("frozen", False)
    # Looked at before any method is used: a refusal to set a field of an instance made
    # without its constructor, the signature, the fields and the parameters.
    if frozen:
        with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'x'"):
            object.__new__(later).x = 1
    assert str(inspect.signature(later)) == str(inspect.signature(standard))
    assert [f.name for f in dataclasses.fields(later)] == ["x", "label", "seen", "weight"]
    for name in ("init", "repr", "eq", "order", "unsafe_hash", "frozen"):
        assert getattr(later.__dataclass_params__, name) == getattr(
            standard.__dataclass_params__, name
        )
    one, two = later(1), later(1, "p", [3], weight=1)
    assert one.seen is not two.seen  # each its own default
    assert repr(one) == repr(standard(1)) == "_twins.<locals>.Point(x=1, label='p', weight=1)"
    assert one == two and one != later(2) and one != standard(1)
    assert one.__eq__(object()) is NotImplemented
    if frozen:
        assert hash(one) == hash(two) == hash(standard(1))
        for change in (lambda: setattr(one, "x", 2), lambda: delattr(one, "x")):
            with pytest.raises(dataclasses.FrozenInstanceError):
                change()
    else:
        assert later.__hash__ is None
        one.x = 2
        assert one != two
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'x'"):
        later()
    assert copy.copy(two) == two  # through __reduce_ex__, as pickle: __setstate__ with slots
    assert copy.deepcopy(two) == two == dataclasses.replace(two)


def test_a_dataclass_refuses_what_it_cannot_defer() -> None:
    for params in ({"order": True}, {"unsafe_hash": True}, {"init": False}):
        with pytest.raises(TypeError, match="takes no"):
            records.dataclass(**params)

    class Later:
        x: int

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="__post_init__"):
        records.dataclass(Later)


def test_the_app_s_dataclasses_write_their_methods_when_used() -> None:
    # What `app config` and a test run's start-up import without using, in a process of
    # their own (this one's tests may have used them).
    code = (
        "import app.config as c, app.testing.guard as g, app.lock as l, app.dataroot as d\n"
        "import app.testing.planted as p\n"
        "print(sorted(n for k in (c.Config, g.GuardState, l.Probe, d.RootStatus, p._Place,"
        " p.Planted)"
        " for n in ('__init__', '__repr__', '__eq__') if callable(vars(k)[n])))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['__init__']"  # Config's, written out


def test_config_s_constructor_is_the_one_the_decorator_writes() -> None:
    # app.config.Config writes its constructor out (about 9 M instructions of app config's
    # start): it must stay the standard decorator's for its fields, a field added or
    # reordered there included.
    # The standard decorator's, for a class of the same fields (as `_write_later` makes it).
    namespace = {"__annotations__": {}, "__module__": config.Config.__module__}
    for f in dataclasses.fields(config.Config):
        namespace["__annotations__"][f.name] = f.type
        namespace[f.name] = dataclasses.field(default=f.default)
    twin = dataclasses.dataclass(frozen=True)(type("Config", (), namespace))
    ours, theirs = inspect.signature(config.Config), inspect.signature(twin)
    assert ours.parameters == theirs.parameters, "add the field to Config.__init__, in order"
    values = {f.name: object() for f in dataclasses.fields(config.Config)}
    made = config.Config(**values)
    assert all(getattr(made, name) is value for name, value in values.items())
    assert vars(made) == vars(twin(**values))
    assert config.Config.__dataclass_params__.init  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'protected'"):
        config.Config(*list(values.values())[:34])
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.port = 1  # type: ignore[misc]
