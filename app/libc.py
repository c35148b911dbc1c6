"""libc's functions and a buffer for them, through ``_ctypes``, the module ``ctypes`` is
built on, called as ``ctypes.CDLL(None, use_errno=True).<name>`` calls them.

Importing ``ctypes`` itself (its forty C types) cost about 5 M instructions of every test
run's start (bench/README.md, "perf-startup60"), and the calls the app makes (``prctl``,
``statx``, ``mmap`` and its kin) need none of them: Python's ``os`` offers none of these
(``os.statx`` only from Python 3.15).
"""

from __future__ import annotations

import functools
import os
from typing import Any

__all__ = ["buffer", "function", "get_errno"]


@functools.cache
def _libc() -> Any:
    import _ctypes

    class _Libc:  # what a function pointer is looked up in: a handle, as CDLL has
        _handle = _ctypes.dlopen(None, os.RTLD_LOCAL)  # type: ignore[arg-type]

    return _Libc()


def function(name: str, restype: Any = None) -> Any:
    """libc's function `name`, returning `restype` (a C int by default), setting errno for
    `get_errno`; AttributeError where libc has none."""
    import _ctypes

    class _Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        if restype is not None:
            _restype_ = restype

    return _Function((name, _libc()))


def buffer(size: int) -> Any:
    """A zeroed C buffer of `size` bytes for a function to write into; its ``raw`` is the
    bytes (as ``ctypes.create_string_buffer``)."""
    import _ctypes

    class _Char(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "c"

    class _Buffer(_ctypes.Array):  # type: ignore[type-arg]
        _type_ = _Char
        _length_ = size

    return _Buffer()


def get_errno() -> int:
    """errno as the last call of a `function` left it (in this thread)."""
    import _ctypes

    return int(_ctypes.get_errno())
