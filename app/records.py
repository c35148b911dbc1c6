"""`Record`: `typing.NamedTuple` without compiling its annotations at import.

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
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

__all__ = ["Record"]

if TYPE_CHECKING:
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
