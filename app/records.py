"""`Record`: `typing.NamedTuple` without compiling its annotations at import; `dataclass`:
`dataclasses.dataclass` that writes its methods when first used.

The app's modules declare their immutable records as ``class X(NamedTuple)`` under ``from
__future__ import annotations``, so every field's annotation is a string, and
`typing.NamedTuple` makes each one a `typing.ForwardRef`, whose constructor compiles it
(``compile(annotation, "<string>", "eval")``) to check its syntax. The 13 records every
`app` command imports had 71 fields, about 6 M instructions of a start-up that is counted
against dynaconf's own (bench/README.md, "Records without their annotations compiled").

``class X(Record)`` makes the same class: typing's own metaclass builds it (the same
`collections.namedtuple`, defaults, methods, docstring, the same refusals of a field
without a default after one with, or of an attribute a namedtuple reserves), given each
field's annotation as ``object`` to check; the class then keeps the annotations as written,
the strings ``from __future__ import annotations`` made, which `typing.get_type_hints`
resolves as it does any other class's. A type checker reads `Record` as `typing.NamedTuple`.

`dataclass`: `dataclasses.dataclass` that writes each method (``__init__``; ``__repr__``;
``__eq__`` with ``__hash__``) when
it is first looked up. The standard decorator writes and compiles every method's source as
the class is made: `app.config.Config`'s 37 fields cost some 11 K characters of source at
the import of every `app` command and pytest run, though `app config` uses its constructor
alone and a test run's start none of it (bench/README.md, "perf-startup59"). Each method is
the standard decorator's own, written at first use for a class of the same name, fields
and parameters, so it behaves alike; ``dataclasses.fields``, ``replace`` and the class's
``__dataclass_params__`` are as the standard decorator leaves them. A frozen class's
``__setattr__`` and ``__delattr__`` are the standard decorator's, written with the class:
they name the class itself; a class with a base other than ``object`` is the standard
decorator's at once, whose constructor calls a base's ``__post_init__`` (red team 59). A
class that writes its own ``__init__`` keeps it, and the decorator writes none
(`app.config.Config`: bench/README.md, "perf-startup64").
"""

from __future__ import annotations

import dataclasses
import os
import threading
import typing
from typing import TYPE_CHECKING, Any

__all__ = ["Record", "dataclass"]

if TYPE_CHECKING:
    from dataclasses import dataclass
    from typing import NamedTuple as Record
else:
    # typing's own base and metaclass, as `class X(NamedTuple)` reaches them (the class
    # statement calls `NamedTuple.__mro_entries__`).
    _BASE = typing.NamedTuple.__mro_entries__((typing.NamedTuple,))[0]
    _META = type(_BASE)

    class _RecordMeta(type):
        def __new__(
            mcls, typename: str, bases: tuple[type, ...], namespace: dict[str, Any]
        ) -> type:
            if not bases:  # `Record` itself
                return super().__new__(mcls, typename, bases, namespace)
            if bases != (Record,):
                raise TypeError("a Record inherits from Record alone")
            written = namespace.get("__annotations__", {})
            checked = {**namespace, "__annotations__": dict.fromkeys(written, object)}
            record = _META(typename, (_BASE,), checked)
            record.__annotations__ = record.__new__.__annotations__ = dict(written)
            return record

    class Record(metaclass=_RecordMeta):
        """Base of the app's records: ``class X(Record)`` is ``class X(NamedTuple)``."""

    #: The methods `dataclass` writes when first used, each with those written with it, and
    #: the standard decorator's parameters (beside ``frozen``) that write them alone.
    _TOGETHER: dict[str, tuple[tuple[str, ...], dict[str, bool]]] = {
        "__init__": (("__init__",), {"repr": False, "eq": False}),
        "__repr__": (("__repr__",), {"init": False, "eq": False}),
        "__eq__": (("__eq__", "__hash__"), {"init": False, "repr": False}),
    }
    _TOGETHER["__hash__"] = _TOGETHER["__eq__"]
    _WRITING = threading.Lock()  # records are made on several threads (a server's)

    def _writing_anew() -> None:
        """In a fork's child, a lock of its own: the fork of a process where another thread
        was writing a method copied the lock held, and the child's first use of a record
        waited for it for ever (red team 59)."""
        global _WRITING  # noqa: PLW0603 - the one lock, made anew in a child
        _WRITING = threading.Lock()

    os.register_at_fork(after_in_child=_writing_anew)

    class _WrittenWhenUsed:
        """In a class's namespace in place of a method the decorator would write: the first
        lookup writes it (with those written with it), puts it there, and binds it."""

        def __init__(self, cls: type, name: str, frozen: bool) -> None:
            self.cls, self.name, self.frozen = cls, name, frozen

        def __get__(self, instance: object, owner: type | None = None) -> Any:
            with _WRITING:
                if vars(self.cls).get(self.name) is self:
                    _write_later(self.cls, self.name, self.frozen)
            method = vars(self.cls)[self.name]
            return method if instance is None else method.__get__(instance, owner)

    def _write_later(cls: type, name: str, frozen: bool) -> None:
        """Write `cls`'s deferred method `name` and those written with it: the standard
        decorator's, for a class of the same name and fields."""
        names, params = _TOGETHER[name]
        annotations: dict[str, Any] = {}
        namespace: dict[str, Any] = {
            "__annotations__": annotations,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__ or cls.__name__,  # or the decorator writes its signature
        }
        for f in dataclasses.fields(cls):
            annotations[f.name] = f.type
            namespace[f.name] = dataclasses.field(
                default=f.default,
                default_factory=f.default_factory,
                init=f.init,
                repr=f.repr,
                hash=f.hash,
                compare=f.compare,
                metadata=f.metadata,
                kw_only=f.kw_only,
            )
        # A frozen class's constructor sets its fields past its own __setattr__; its
        # __hash__ is the fields' hash, which unsafe_hash writes without __setattr__.
        if name in ("__eq__", "__hash__"):
            params = {
                **params,
                "unsafe_hash": isinstance(vars(cls).get("__hash__"), _WrittenWhenUsed),
            }
        else:
            params = {**params, "frozen": frozen and name not in ("__repr__",)}
        written = dataclasses.dataclass(type(cls.__name__, (), namespace), **params)
        for each in names:
            if isinstance(vars(cls).get(each), _WrittenWhenUsed):
                setattr(cls, each, vars(written)[each])

    def dataclass(cls: type | None = None, /, **params: Any) -> Any:
        """`dataclasses.dataclass`, its methods written when first used."""
        if params.get("unsafe_hash") or params.get("order") or "init" in params:
            raise TypeError("app.records.dataclass takes no init, unsafe_hash or order")

        def wrap(cls: type) -> type:
            if cls.__bases__ != (object,):
                # What a base gives (a __post_init__ the constructor calls, its InitVars, a
                # frozen or not base's checks) is not in the class written at first use,
                # of this class's own namespace: a constructor written so skipped a base's
                # __post_init__ (red team 59). The standard decorator, at once.
                return dataclasses.dataclass(cls, **params)
            own = vars(cls)
            if "__post_init__" in own or any(
                "InitVar" in str(a) for a in own.get("__annotations__", {}).values()
            ):
                raise TypeError("app.records.dataclass takes no __post_init__ or InitVar")
            frozen = bool(params.get("frozen"))
            later = [
                name
                for name in ("__init__", "__repr__", "__eq__")
                if params.get(name.strip("_"), True) and name not in own
            ]
            # `frozen` goes to the standard decorator as given, which writes a frozen class's
            # __setattr__ and __delattr__ at once (two short methods): written later for
            # another class, they refused an attribute that is no field with a TypeError of
            # `super()` instead of FrozenInstanceError (on a subclass too, which may set
            # one), and the decorator's own checks saw another class than the one declared
            # (a frozen subclass of it refused, a frozen one of a class that is not allowed,
            # a frozen class's own __eq__ left it unhashable) (red team 59).
            # A constructor of the class's own (`app.config.Config`'s, written out) is kept
            # by the standard decorator, which still wrote and compiled its own unless told
            # init=False.
            own_init = {"init": False} if "__init__" in own else {}
            made = dataclasses.dataclass(
                cls, **{**params, **own_init, **{name.strip("_"): False for name in later}}
            )
            # What the class is, to dataclasses.fields, replace and a subclass's decorator.
            declared = made.__dataclass_params__  # type: ignore[attr-defined]
            declared.init = True
            declared.repr = params.get("repr", True)
            declared.eq = params.get("eq", True)
            if "__eq__" in later and "__hash__" not in own:
                # As the standard decorator: a frozen class hashes its fields, another
                # comparing them cannot be hashed.
                if frozen:
                    later.append("__hash__")
                else:
                    made.__hash__ = None  # type: ignore[assignment]
            for name in later:
                setattr(made, name, _WrittenWhenUsed(made, name, frozen))
            return made

        return wrap if cls is None else wrap(cls)
