"""Red team 59 on regress, the speed merges (branch rt-regress7): are the hand-written
replacements of what the standard library did (perf-server59, perf-startup59) the same?

Tried against the code they replaced, sampled (a fixed seed, a few hundred cases each):

- `DataRoot._check_dest` in strings against its pathlib version (`tests/test_dataroot.py`),
  for data roots spelled with a trailing slash, ``//``, ``/./``, ``..``, reached through a
  symbolic link, ``/`` and ``//``, and destinations through siblings whose name starts with
  the root's or a directory's (``data2``, ``sessions-old``, ``.tmpx``), a link loop, a
  dangling link, a link to ``..``, names with a newline or a byte that is no UTF-8
  (surrogateescape), relative paths; then through real writes of an opened root, each
  landing where the pathlib version said or refused with its message. Held.
- `json_bytes` against ``json.dumps(indent=2, sort_keys=True, ensure_ascii=False)``: nested
  values with ``-0.0``, ``1e16``, subnormals, NaN and infinities, ints past the digits
  limit, str, float, dict and IntEnum subclasses, tuples, keys needing escapes, lone
  surrogates, nesting either side of its limit of 32; what it writes reads back. Held.
- a check's option values spelled once (`app/testing/writes.py`): the spellings are kept for
  one check alone, and a link planted between two checks is seen by the second. Held.

What broke: `app.records.dataclass` wrote a frozen class's ``__setattr__`` and
``__delattr__`` at first use with the standard decorator, for another class of the same
name. Its refusal names the class it was written for: on an instance of `app.config.Config`
an attribute that is no field (``config.extra = 1``, ``del config.extra``) was refused by a
``TypeError`` of ``super()`` ("obj must be an instance or subtype of type") instead of
``FrozenInstanceError``, and a plain subclass could not set one of its own. The class was
also decorated as not frozen, so the standard decorator's own checks saw another class: a
frozen subclass decorated by it was refused ("cannot inherit non-frozen dataclass from a
frozen one"), a frozen one over a class that is not frozen was allowed, and a frozen class
with its own ``__eq__`` was left unhashable. `app.records.dataclass` now hands ``frozen``
to the standard decorator as given: those two short methods are written with the class.
And the constructor, written at first use for a class of the class's own namespace without
its bases, skipped a base's ``__post_init__`` (a validation of the values): a class with a
base is now made by the standard decorator at once. A fork while another thread wrote a
method left the child's copy of the decorator's lock held, and the child's first use of a
record (a test's ``os.fork``, then ``load``) waited for ever: the child makes it anew.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import inspect
import json
import math
import os
import pickle
import random
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_dataroot import StubConfig, _check_dest_with_pathlib

from app import records
from app.config import Config, load
from app.dataroot import DataRoot, json_bytes, open_root
from app.testing import writes

# --- the records -------------------------------------------------------------------------


@records.dataclass(frozen=True)
class LazyFrozen:
    """A frozen record, its methods written when first used."""

    a: int
    b: list[int] = dataclasses.field(default_factory=list)


@records.dataclass(frozen=True)
class Untouched:
    """A frozen record used in one test alone: its methods are written there."""

    a: int
    b: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class StdFrozen:
    """The same record, by the standard decorator."""

    a: int
    b: list[int] = dataclasses.field(default_factory=list)


def _answer(action: Any) -> Any:
    try:
        return ("ok", action())
    except Exception as error:
        return (type(error), str(error))


@pytest.mark.parametrize("kind", [LazyFrozen, StdFrozen])
def test_a_frozen_record_refuses_any_attribute_as_the_standard_decorator_does(kind: type) -> None:
    """Broke: an attribute that is no field was refused by a TypeError of ``super()``."""
    one = kind(1)
    for name in ("a", "extra"):
        assert _answer(lambda n=name: setattr(one, n, 2)) == (
            dataclasses.FrozenInstanceError,
            f"cannot assign to field {name!r}",
        )
        assert _answer(lambda n=name: delattr(one, n)) == (
            dataclasses.FrozenInstanceError,
            f"cannot delete field {name!r}",
        )

    class Plain(kind):  # type: ignore[misc,valid-type]
        pass

    sub = Plain(1)
    sub.extra = 3  # a subclass that is no dataclass sets its own attributes, as before
    assert sub.extra == 3
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'a'"):
        sub.a = 2


def test_a_subclass_of_a_frozen_record_is_decorated_as_by_the_standard_decorator() -> None:
    """Broke: the decorator's own checks of frozen bases saw a class decorated as not frozen."""

    @records.dataclass(frozen=True)
    class Child(LazyFrozen):
        c: int = 0

    assert Child(1, [], 2) == Child(1, [], 2) != Child(1, [], 3)
    with pytest.raises(TypeError, match="cannot inherit non-frozen dataclass from a frozen one"):

        @records.dataclass
        class Thawed(LazyFrozen):
            c: int = 0

    @records.dataclass
    class Open:
        a: int

    with pytest.raises(TypeError, match="cannot inherit frozen dataclass from a non-frozen one"):

        @records.dataclass(frozen=True)
        class Refrozen(Open):
            c: int = 0

    @records.dataclass(frozen=True)
    class OwnEq:  # noqa: PLW1641 - the decorator writes it, as the standard one
        a: int

        def __eq__(self, other: object) -> bool:
            return isinstance(other, OwnEq) and self.a == other.a

    assert hash(OwnEq(1)) == hash(OwnEq(1))  # the standard decorator hashes the fields


class _Checked:
    """A base whose ``__post_init__`` refuses a value, as a record's validation may."""

    a: int

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError(f"a must be 0 or more, not {self.a}")


@pytest.mark.parametrize("decorator", [records.dataclass, dataclasses.dataclass])
def test_a_bases_post_init_runs_as_the_standard_decorator_runs_it(decorator: Any) -> None:
    """Broke: the constructor, written at first use for a class without the bases, skipped
    a base's ``__post_init__`` (its validation) and let the value through."""

    @decorator(frozen=True)
    class Record(_Checked):
        a: int

    with pytest.raises(ValueError, match="a must be 0 or more, not -1"):
        Record(-1)
    assert Record(1) == Record(1)


def test_app_config_refuses_a_change_as_frozen_and_its_records_pickle_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Config` (frozen, written when first used): a change is FrozenInstanceError; a copy,
    a replace, its signature and match args as the standard decorator's; a record of the
    same decorator compares equal through pickles."""
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(
        f'[testing]\ndata_root = "{tmp_path / "root"}"\n', encoding="utf-8"
    )
    monkeypatch.setenv("APP_SETTINGS_DIR", str(settings))
    config = load("testing")
    for name in ("data_root", "extra"):
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"field '{name}'"):
            setattr(config, name, tmp_path)
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"field '{name}'"):
            delattr(config, name)
    again = load("testing")
    assert config == again
    twin = copy.copy(config)  # no pickle or deepcopy: `roots` is a mappingproxy, as before
    assert twin == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        twin.profile = "production"  # type: ignore[misc]
    moved = dataclasses.replace(config, profile="production")
    assert moved.profile == "production" and config.profile == "testing"
    assert list(inspect.signature(Config).parameters) == [
        f.name for f in dataclasses.fields(Config)
    ]
    assert Config.__match_args__ == tuple(f.name for f in dataclasses.fields(Config) if f.init)
    # A record pickled before any of its methods was written, read back as in another
    # process (by reference to its class), its methods written there at first use.
    record = pickle.loads(pickle.dumps(Untouched(1, [2])))
    for other in (copy.deepcopy(record), pickle.loads(pickle.dumps(record))):
        assert other == record and other is not record and repr(other) == repr(record)
    with pytest.raises(dataclasses.FrozenInstanceError, match="field 'extra'"):
        record.extra = 1  # type: ignore[attr-defined]
    assert dataclasses.replace(record) == record


def test_threads_racing_a_records_first_use_all_get_the_standard_methods() -> None:
    @records.dataclass(frozen=True)
    class Raced:
        a: int
        b: str = "x"

    start = threading.Barrier(8)
    seen: list[Any] = []

    def use(i: int) -> None:
        start.wait()
        one = Raced(i % 2)
        seen.append((one == Raced(i % 2), hash(one) == hash(Raced(i % 2)), repr(one)))
        seen.append(_answer(lambda: setattr(one, "a", 3))[0])

    threads = [threading.Thread(target=use, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, seen)) == sorted(
        [str((True, True, f"{Raced.__qualname__}(a={i % 2}, b='x')")) for i in range(8)]
        + [str(dataclasses.FrozenInstanceError)] * 8
    )
    assert dataclasses.asdict(Raced(1)) == {"a": 1, "b": "x"}


def test_a_fork_while_a_method_is_written_leaves_the_child_free_to_use_records() -> None:
    """Broke: a fork while another thread wrote a record's method (holding the decorator's
    lock) left the child's copy of the lock held, and the child's first use of a record
    waited for ever. The child now has a lock of its own."""

    @records.dataclass(frozen=True)
    class Later:
        a: int

    with records._WRITING:  # as a thread writing a method holds it
        pid = os.fork()
        if pid == 0:  # the child: no wait, its answer in its exit status
            free = not records._WRITING.locked()
            os._exit(0 if free and Later(1) == Later(1) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# --- the destination check -------------------------------------------------------------

_NAMES = ["data", "data2", "link", "sessions", "sessions-old", ".tmp", ".tmpx", "loop", "dang"]
_NAMES += ["up", "out", "..", ".", "", "x", "\udcff", "a\nb"]


def _both(root: Any, dest: Path) -> tuple[Any, Any]:
    answers = []
    for check in (_check_dest_with_pathlib, DataRoot._check_dest):
        try:
            answers.append(str(check(root, dest)))
        except (ValueError, RuntimeError) as error:
            answers.append((type(error).__name__, str(error)))
    return answers[0], answers[1]


def test_the_destination_check_answers_as_pathlib_did_for_odd_roots_and_names(
    tmp_path: Path,
) -> None:
    base = tmp_path.resolve()
    data = base / "data"
    for made in (data / "sessions", data / ".tmp", data / ".tmpx", data / "sessions-old"):
        made.mkdir(parents=True)
    (base / "data2").mkdir()
    (base / "link").symlink_to(data)
    (data / "sessions" / "loop").symlink_to("loop")
    (data / "sessions" / "dang").symlink_to("nowhere")
    (data / "sessions" / "up").symlink_to("..")
    (data / "sessions" / "out").symlink_to(base / "data2")
    b = str(base)
    spelled = [f"{b}/data", f"{b}/link", f"/{b}/data", f"{b}//data", f"{b}/./data"]
    spelled += [f"{b}/data/", f"{b}/data/sessions/..", "/", "//", f"{b}/data2/../data"]
    rng = random.Random(59)
    for _ in range(300):
        given = Path(rng.choice(spelled))
        root = SimpleNamespace(path=given, tmp_dir=given / ".tmp")
        start = rng.choice([str(given), b, f"{b}/link", f"{b}/data", "/", ""])
        parts = [rng.choice(_NAMES) for _ in range(rng.randint(1, 4))]
        dest = Path(os.path.join(start, *parts) if start else os.path.join(*parts))
        old, new = _both(root, dest)
        assert new == old, (given, dest)


def test_real_writes_land_only_where_the_pathlib_check_allowed(tmp_path: Path) -> None:
    config = StubConfig("development", tmp_path / "data" / "development")
    rng = random.Random(5959)
    allowed: set[Path] = set()
    with open_root(config) as root:
        sessions = root.sessions_dir
        (sessions / "s_1").mkdir()
        (sessions / "s_1-old").mkdir()
        (root.path.parent / "development2").mkdir()
        (sessions / "via").symlink_to(sessions / "s_1")
        (sessions / "gone").symlink_to(sessions / "missing")
        names = ["s_1", "s_1-old", "via", "gone", "..", ".", ".tmp", ".tmpx", "f\n\udcfe"]
        for _ in range(25):
            parts = [rng.choice(names) for _ in range(rng.randint(1, 3))] + ["rec.json"]
            dest = sessions.joinpath(*parts)
            old, new = _both(root, dest)
            assert new == old, dest
            answer = _answer(lambda d=dest: root.atomic_write_bytes(d, b"{}\n"))
            if isinstance(old, str):
                allowed.add(Path(old))
                # Written there, or into a directory that is missing: refused by the system.
                assert answer[0] in ("ok", FileNotFoundError), (dest, answer)
            else:
                assert answer == (ValueError, old[1]), dest
        assert not list(root.tmp_dir.iterdir())
        written = {p for p in tmp_path.rglob("rec.json") if not p.is_symlink()}
        assert written and written <= allowed


# --- indented JSON ---------------------------------------------------------------------


class _Str(str):
    pass


class _Float(float):
    pass


class _Dict(dict):  # type: ignore[type-arg]
    pass


class _Level(enum.IntEnum):
    ONE = 1


_ATOMS: list[object] = [0, -1, 10**20, 2**63, 1e16, -0.0, 5e-324, 1.0, math.nan, math.inf]
_ATOMS += [-math.inf, True, False, None, "", "é\ud800", '\x00\u2028\x7f\\"', _Str("s")]
_ATOMS += [_Level.ONE, _Float(1.5)]
_KEYS = ["a", "b", "", "\ud800", "\x7f", "é", "A", "a\n", "\u2028", _Str("k")]


def _value(rng: random.Random, depth: int) -> object:
    if depth <= 0 or rng.random() < 0.3:
        return rng.choice(_ATOMS)
    pick = rng.random()
    if pick < 0.45:
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    if pick < 0.9:
        return {rng.choice(_KEYS): _value(rng, depth - 1) for _ in range(rng.randint(0, 3))}
    if pick < 0.95:
        return _Dict({rng.choice(_KEYS): _value(rng, depth - 1)})
    return (_value(rng, depth - 1), _value(rng, depth - 1))


def _dumps(value: object) -> Any:
    try:
        return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    except (TypeError, ValueError) as error:
        return (type(error), str(error))


def test_json_bytes_are_json_dumps_bytes_for_sampled_values() -> None:
    rng = random.Random(59)
    values: list[object] = [_value(rng, rng.randint(0, 6)) for _ in range(600)]
    for depth in (31, 32, 33, 34):
        deep: object = 1
        for level in range(depth):
            deep = [deep] if level % 2 else {"k": deep}
        values += [deep, [10**4299], {"a": [1, 10**4301]}]
    for value in values:
        expected = _dumps(value)
        try:
            got: Any = json_bytes(value)
        except (TypeError, ValueError) as error:
            got = (type(error), str(error))
        assert got == expected, value
        if isinstance(got, bytes):  # what is written reads back as json.dumps wrote it
            assert json_bytes(json.loads(got)) == got, value


# --- a check's values spelled once ---------------------------------------------------------


def test_a_link_planted_between_two_checks_is_seen_by_the_second(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    with writes._directories_resolved_once():
        first = writes._spellings("out/x.json", tmp_path)
        assert writes._spellings("out/x.json", tmp_path) == first
    (tmp_path / "out").symlink_to(target)
    with writes._directories_resolved_once():
        second = writes._spellings("out/x.json", tmp_path)
    assert target / "x.json" in second and target / "x.json" not in first
