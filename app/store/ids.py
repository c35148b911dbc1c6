"""Session ids: time-ordered, so a directory listing sorted by name is the creation order."""

from __future__ import annotations

import re
import secrets
import threading
import time
from typing import Final

from app.errors import InvalidNameError

__all__ = ["ID_RE", "check_session_id", "make_later_than", "new_session_id"]

ID_RE: Final = re.compile(r"[0-9a-f]{32}")
"""32 lower-case hex digits: a session id, and also a blob's name."""

_id_guard = threading.Lock()
_last_id: list[int] = [0, 0]  # [milliseconds, sequence] of the last id made in this process
# Ids this close to the end of UUIDv7's 48-bit clock are not followed (only a hand-made
# name has one): counting on from there would overflow the id's 32 digits.
_LATEST_FOLLOWED_MS: Final = (1 << 48) - (1 << 36)


def new_session_id() -> str:
    """A new session id: a UUIDv7 (RFC 9562) as 32 lower-case hex digits.

    The first 48 bits are the Unix time in milliseconds and the next 12 a counter within
    the millisecond, so ids made by one process sort in creation order, and ids made by
    different processes sort by their millisecond.

    Returns:
        The id, for example ``"0192b0f2c5a87b3e9c4d2a1f0e6b7c8d"``.
    """
    with _id_guard:
        ms = time.time_ns() // 1_000_000
        last_ms, seq = _last_id
        if ms <= last_ms:
            ms, seq = last_ms, seq + 1
            if seq > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                ms, seq = ms + 1, 0
        else:
            seq = secrets.randbelow(0x800)  # leave room to count up within the millisecond
        _last_id[:] = [ms, seq]
    rand_b = secrets.randbits(62)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand_b
    return f"{value:032x}"


def make_later_than(newest: str) -> None:
    """Make every id this process makes from now on sort after ``newest``.

    A writer calls it with the newest id on its data root when it opens it: its clock may
    have been stepped back since that id was made (a restored VM snapshot, a board that boots
    before NTP), and a session made then would otherwise sort, and list, before older ones.
    Ids then count on from ``newest``'s millisecond until the clock passes it.
    """
    if not ID_RE.fullmatch(newest):
        return
    value = int(newest, 16)
    ms, seq = value >> 80, (value >> 64) & 0xFFF
    if ms >= _LATEST_FOLLOWED_MS:
        return
    with _id_guard:
        if [ms, seq] > _last_id:
            _last_id[:] = [ms, seq]


def check_session_id(value: str) -> str:
    """Return ``value`` if it is a session id; raise :class:`InvalidNameError` if not."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidNameError("session id", str(value), "session ids are 32 lower-case hex digits")
    return value
