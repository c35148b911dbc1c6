"""A Jepsen-style history of HTTP operations and a per-session linearizability checker.

Clients record each operation's invocation and completion (``time.monotonic()`` in the one
test process) and what it was answered; an operation cut by a ``kill -9`` has an unknown
outcome and must have taken effect, if at all, before the kill. :func:`check` then asks, for
each session on its own, whether some order of its operations, each placed between its
invocation and its completion, explains every answer under :class:`Model` (the API as
docs/reference/http-api.md describes it). That is enough: operations on two sessions never
touch each other's state, and linearizability is local (Herlihy and Wing, 1990), so per-key
checking is the whole check, with a search bounded by the clients' concurrency.

Why not a library: no maintained Python linearizability checker is on PyPI (none of its
packages is described as one; Porcupine is Go, Knossos and Elle are Clojure). The search
here is Wing and Gong's, with Lowe's memo of (operations linearized, state): about sixty
lines, and the model is the part that must be ours anyway.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Beyond every session id (32 hexadecimal digits): the upper end of a last page's range.
END = "g"

# The outcomes the model gives, compared with what a client saw.
OK, REFUSED = "ok", "refused"
NO_SESSION, NO_FILE = "404-session", "404-file"

Files = tuple[tuple[str, str], ...]  # (name, sha256), sorted


@dataclass
class Op:
    """One operation of one client, on one session (``session`` None: a create not answered).

    ``observed`` is what the client was answered, in the model's terms; ``None`` for an
    unknown outcome, whose ``completed`` is the moment its server was seen dead.
    """

    client: str
    kind: str
    session: str | None
    invoked: float
    completed: float = 0.0
    observed: Any = None
    name: str | None = None
    value: str | None = None  # the sha256 a write sends
    if_match: str | None = None  # the sha256 a conditional write names
    known: bool = True
    note: str = ""
    epoch: int = 0  # which server's life it was sent in

    def describe(self, origin: float) -> str:
        args = " ".join(
            f"{k}={v[:10] if isinstance(v, str) and len(v) == 64 else v}"
            for k, v in (("name", self.name), ("value", self.value), ("if_match", self.if_match))
            if v is not None
        )
        seen = _short(self.observed) if self.known else "UNKNOWN (server killed)"
        return (
            f"[{self.invoked - origin:8.4f} .. {self.completed - origin:8.4f}] {self.client:>8} "
            f"{self.kind} {args} -> {seen} {self.note}"
        ).rstrip()


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:10]
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return repr(value)


# -- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """One session: never created (0), there (1), or in the trash (2); its files; what the
    trash holds for it (each name's replaced or deleted versions, newest last; the session's
    own entries, newest last)."""

    phase: int = 0
    files: Files = ()
    file_trash: tuple[tuple[str, tuple[str, ...]], ...] = ()
    session_trash: tuple[Files, ...] = ()


def _set(files: Files, name: str, value: str | None) -> Files:
    kept = [(n, v) for n, v in files if n != name]
    if value is not None:
        kept.append((name, value))
    return tuple(sorted(kept))


def _push(trash: tuple[tuple[str, tuple[str, ...]], ...], name: str, value: str) -> Any:
    stacks = dict(trash)
    stacks[name] = (*stacks.get(name, ()), value)
    return tuple(sorted(stacks.items()))


def step(state: State, op: Op) -> tuple[State, Any]:
    """The state after ``op`` and the answer it gets (the API's documented behaviour)."""
    kind, name, files = op.kind, op.name or "", dict(state.files)
    there = state.phase == 1
    if kind == "create":
        return (State(1), OK) if state.phase == 0 else (state, "impossible")
    if kind == "read":  # a session as a listing, GET /sessions/{id} or its files show it
        return state, (state.files if there else NO_SESSION)
    if kind == "get_file":
        if not there:
            return state, NO_SESSION
        return state, files.get(name, NO_FILE)
    if kind in ("put", "post"):
        if not there:
            return state, NO_SESSION
        current = files.get(name)
        if kind == "post" and current is not None:
            return state, 409
        if op.if_match is not None and current != op.if_match:
            return state, 412
        trash = state.file_trash if current is None else _push(state.file_trash, name, current)
        after = State(1, _set(state.files, name, op.value), trash, state.session_trash)
        return after, 201 if current is None else 200
    if kind == "delete_file":
        if not there:
            return state, NO_SESSION
        current = files.get(name)
        if current is None:
            return state, NO_FILE
        trash = _push(state.file_trash, name, current)
        return State(1, _set(state.files, name, None), trash, state.session_trash), OK
    if kind == "delete_session":
        if not there:
            return state, NO_SESSION
        return State(2, (), state.file_trash, (*state.session_trash, state.files)), OK
    if kind == "restore_session":
        if state.phase != 2 or not state.session_trash:
            return state, REFUSED
        *rest, last = state.session_trash
        return State(1, last, state.file_trash, tuple(rest)), OK
    if kind == "restore_file":
        stack = dict(state.file_trash).get(name, ())
        if not there or name in files or not stack:
            return state, REFUSED
        stacks = dict(state.file_trash)
        stacks[name] = stack[:-1]
        trash = tuple(sorted((n, s) for n, s in stacks.items() if s))
        return State(1, _set(state.files, name, stack[-1]), trash, state.session_trash), OK
    raise AssertionError(f"no such operation: {kind}")


# -- the search ---------------------------------------------------------------------------------


def linearizable(ops: list[Op]) -> bool:
    """Whether some order of ``ops`` within their windows explains every known answer.

    Wing and Gong's search with Lowe's memo: at each point only an operation invoked before
    the earliest completion still pending may come next. An unknown outcome may have taken
    effect (with whatever answer the model gives) or not at all.
    """
    ops = sorted(ops, key=lambda o: o.invoked)
    full = (1 << len(ops)) - 1
    seen: set[tuple[int, State]] = set()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(ops) + 100))
    try:
        return _search(ops, 0, State(), full, seen)
    finally:
        sys.setrecursionlimit(limit)


def _search(ops: list[Op], done: int, state: State, full: int, seen: set[Any]) -> bool:
    if done == full:
        return True
    if (done, state) in seen:
        return False
    seen.add((done, state))
    pending = [i for i in range(len(ops)) if not done >> i & 1]
    horizon = min(ops[i].completed for i in pending)
    for i in pending:
        op = ops[i]
        if op.invoked > horizon:
            break
        after, answer = step(state, op)
        bit = done | 1 << i
        if not op.known:
            if _search(ops, bit, after, full, seen) or _search(ops, bit, state, full, seen):
                return True
        elif answer == op.observed and _search(ops, bit, after, full, seen):
            return True
    return False


# -- the history ------------------------------------------------------------------------------


@dataclass
class Page:
    """One page of a walk of ``GET /sessions``: the range of ids it covers and what it showed."""

    client: str
    invoked: float
    completed: float
    after: str | None
    next: str | None
    items: dict[str, Files]


@dataclass
class History:
    """Everything the clients did, and what the checker found outside the model."""

    ops: list[Op] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)
    walks: list[list[Page]] = field(default_factory=list)
    bodies: dict[str, bytes] = field(default_factory=dict)  # sha256 -> every body ever sent
    problems: list[str] = field(default_factory=list)  # answers wrong in themselves
    origin: float = 0.0

    def body(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.bodies[digest] = data
        return digest


def _page_reads(history: History, ids: Iterable[str]) -> list[Op]:
    """Each page, read as one observation per session whose id falls in its range.

    A session a page shows was there at some moment of the page; one it does not show, with
    an id inside the range it covers, was not. The last page (``next`` null) may leave out
    sessions whose id sorts after one still being created (the documented rule); so its
    silence about an id above its last item counts only when no create that could have
    made a smaller id was in flight during the page.
    """
    creates = [o for o in history.ops if o.kind == "create"]
    created = {o.session: o for o in creates if o.session is not None}
    reads: list[Op] = []
    for page in history.pages:
        low = page.after or ""
        shown = sorted(page.items)
        high = page.next or END
        for key in ids:
            if not low < key <= high:
                continue
            if key in page.items:
                observed: Any = page.items[key]
            else:
                if page.next is None and (not shown or key > shown[-1]):
                    made = created.get(key)
                    made_by = made.completed if made is not None else page.completed
                    if any(
                        c.invoked < page.completed and c.completed > page.invoked
                        and c.invoked < made_by and c.session != key
                        for c in creates
                    ):  # fmt: skip
                        continue
                observed = NO_SESSION
            reads.append(
                Op(page.client, "read", key, page.invoked, page.completed, observed, note="page")
            )
    return reads


def check(history: History) -> list[str]:
    """Every anomaly: answers wrong in themselves, walks out of order, and each session whose
    operations no order explains (with its operations, for the report)."""
    found = list(history.problems)
    for walk in history.walks:
        ids = [i for page in walk for i in sorted(page.items)]
        if ids != sorted(set(ids)):
            found.append(f"a walk of GET /sessions showed ids out of order or twice: {ids}")
    # Sessions no create answered (its server was killed first) but a listing showed.
    named = {o.session for o in history.ops if o.session is not None}
    strangers = sorted({i for page in history.pages for i in page.items} - named)
    unanswered = sorted(
        (o for o in history.ops if o.kind == "create" and o.session is None),
        key=lambda o: o.invoked,
    )
    if len(strangers) > len(unanswered):
        found.append(
            f"{len(strangers)} sessions listed that no create made ({strangers}), "
            f"{len(unanswered)} creates unanswered"
        )
    # Which unanswered create made which is not known: each may have been any of them.
    synthetic = [
        Op(
            "?", "create", key, unanswered[0].invoked, max(c.completed for c in unanswered),
            known=False, note="(a create its server was killed under)",
        )
        for key in strangers
    ] if unanswered else []  # fmt: skip
    ops = [o for o in history.ops if o.session is not None] + synthetic
    ops += _page_reads(history, sorted(named | set(strangers)))
    by_session: dict[str, list[Op]] = {}
    for op in ops:
        assert op.session is not None
        by_session.setdefault(op.session, []).append(op)
    for key, mine in sorted(by_session.items()):
        if not linearizable(mine):
            lines = "\n  ".join(o.describe(history.origin) for o in sorted(mine, key=_start))
            found.append(f"session {key}: no order of its operations explains them:\n  {lines}")
    return found


def _start(op: Op) -> float:
    return op.invoked
