"""`app.records.Record` makes the class `typing.NamedTuple` makes, without compiling each
field's annotation at import (bench/README.md, "Records without their annotations
compiled")."""

from __future__ import annotations

import pickle
import typing
from pathlib import Path
from typing import NamedTuple

import pytest

from app import cli, config, config_files, sandbox
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
    ]
    for record in records:
        assert issubclass(record, tuple) and record._fields, record
        assert set(typing.get_type_hints(record)) == set(record._fields), record
