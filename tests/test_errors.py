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


def test_a_directory_whose_index_is_full_is_named_not_said_a_full_filesystem(
    tmp_path: Path,
) -> None:
    # ENOSPC while `df -h` and `df -i` both show room: ext4 without large_dir, its directory
    # index full (sessions/ at 32,318 entries of a 1 KiB-block image, by hand: red team 75
    # on this session's leftovers). Said "the data root's filesystem is full". The ENOSPC
    # is given here (filling a real index takes seconds); the filesystem looked at is real.
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    for name in ("a", "b", ".tmp-x"):
        (sessions / name).mkdir()
    # A rename of a staged session into its id (`_Staged.rename`), both paths named.
    full = OSError(28, "No space left on device", str(sessions / ".tmp-x"))
    full.filename2 = str(sessions / "c")
    refused = errors.storage_error(full, "POST /sessions")
    assert isinstance(refused, errors.StorageFullError)
    assert refused.message == (
        "cannot POST /sessions: the data root's directory sessions/ takes no more names (3 "
        "entries): its filesystem has free space and free inodes (`df -h` and `df -i` show "
        "room), but that directory's index is full, as ext4 without its large_dir feature "
        "limits it (sooner with long names and small blocks); nothing was changed. Remove "
        "entries from that directory (delete the sessions or files no longer needed, then "
        "empty the trash: POST /trash/empty, or `app data empty-trash` while no server runs), "
        "or have an operator enable large_dir (`tune2fs -O large_dir <device>`, Linux 4.13 or "
        "later) or move the data root to a filesystem without that limit"
    )
    # A write to a file that is there is the filesystem's blocks, not an index.
    written = errors.storage_error(OSError(28, "No space left", str(sessions / "a")), "PUT")
    assert isinstance(written, errors.StorageFullError)
    assert "the data root's filesystem is full" in written.message
