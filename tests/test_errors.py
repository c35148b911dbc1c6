"""Errors declare their data once; these hold every one of them to what that promises."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest

from app import errors

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples" / "error_examples.py"


def _examples() -> list[errors.AppError]:
    spec = importlib.util.spec_from_file_location("_error_examples_for_pickling", EXAMPLES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: list[errors.AppError] = module.EXAMPLES
    return found


@pytest.mark.parametrize("error", _examples(), ids=lambda error: type(error).__name__)
def test_every_error_survives_a_pickle_round_trip_as_it_was(error: errors.AppError) -> None:
    error.add_note("raised in a pytest-xdist worker")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert state(copy) == state(error)
    assert (str(copy), copy.args, copy.to_dict()) == (str(error), error.args, error.to_dict())
    assert copy.args == (error.message,)


def state(value: object) -> object:
    """An error's type and attributes, recursively (exceptions compare by identity)."""
    if isinstance(value, BaseException):
        return type(value), {k: state(v) for k, v in vars(value).items()}
    if isinstance(value, tuple | list):
        return [state(v) for v in value]
    return value


def test_an_error_that_writes_its_own_init_is_refused_saying_what_to_do() -> None:
    with pytest.raises(TypeError, match="declare its data as annotated fields"):

        class HandWritten(errors.ConfigError):
            def __init__(self, path: Path) -> None:
                self.path = path
                super().__init__()
