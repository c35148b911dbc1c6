"""Every maintenance command after a crash at any change of an operation (red team 31's
sweep, committed by red team 32).

An operation (a replace, a file's and a session's delete, both restores, a purge, an
`empty-trash`) runs in a child killed with SIGKILL just before its N-th change to the
filesystem, for every N (tests/test_redteam_s18_crash_points.py's zygote); then, on what
the kill left and before any start-up repaired it (stop, act, start, as the how-to says),
one maintenance command or sequence runs: `check --repair`, a restore of each file and of
each session, a purge, an `empty-trash`, a `restamp`, and a purge followed by restores.
Each command opens the root on its own, as a command does. Then a start-up's repair, and
the root must check clean.

The oracle: the crash left the operation undone or done, so what the commands made of it
(their answers, every session's files and every trash entry's bytes) must be what they make
of the root before the operation or of the root after it, run on copies of each. An
`empty-trash` is made entry by entry, each whole: killed partway, each session and entry
must be as in one of the two, and none that both keep may be missing. Entries of bytes
never acknowledged (an upload killed before its commit, `orphan`) are left out.

Red team 31 ran it by hand (798 cases, none lost) and found the two broken pairs that
tests/test_redteam_s31_integrity.py replays. ``RT_MAINTENANCE_SWEEP=1`` runs every
operation against every command (about 800 cases, a few minutes on a quiet machine); the
suite runs a sample: a file's delete (the operation the found pairs came from) against
every command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_redteam_s18_crash_points import Zygote, fill_template
from test_redteam_s29_powerloss import served_after_repair

from app.config import Config, load
from app.dataroot import restamp
from app.errors import AppError
from app.storage import open_storage
from app.store import Store
from app.store.records import BLOBS_DIR, RECORDS_DIR, TRASHED_SESSION, load_record

SWEEP = bool(os.environ.get("RT_MAINTENANCE_SWEEP"))

#: The operations killed, as tests/test_redteam_s18_crash_points.py's zygote runs them.
OPERATIONS: dict[str, list[str]] = {
    "replace": ["{keep}", "a.txt", "a, version 3"],
    "delete-file": ["{keep}", "a.txt"],
    "delete-session": ["{keep}"],
    "restore-file": ["{keep}", "gone.txt"],
    "restore-session": ["{gone}"],
    "purge": [],
    "empty-trash": [],
}
SAMPLED = ("delete-file",)
ITEM_BY_ITEM = {"empty-trash"}

Command = Callable[[Config, dict[str, str]], list[str]]


def _open(config: Config) -> Store:
    store = open_storage(config, writer=True, kind="maintenance", wanted="maintenance")
    assert isinstance(store, Store)
    return store


def _answer(action: Callable[[Store], object], config: Config) -> str:
    """One command, on a root it opens alone: ``ok``, or the code of its refusal."""
    try:
        with _open(config) as store:
            action(store)
    except AppError as error:
        return error.code
    return "ok"


def _restore(session: str, file: str | None = None) -> Callable[[Store], object]:
    def action(store: Store) -> object:
        return store.restore(session, file=file)

    return action


def _restamp(config: Config, ids: dict[str, str]) -> list[str]:
    restamp(dataclasses.replace(config, profile="staging"), "testing")
    restamp(config, "staging")
    return ["ok"]


def _files(who: str) -> Command:
    return lambda c, ids: [_answer(_restore(ids["keep"], who), c)]


COMMANDS: dict[str, Command] = {
    "check --repair": lambda c, ids: [_answer(lambda s: s.check(repair=True), c)],
    "restore a.txt": _files("a.txt"),
    "restore b.txt": _files("b.txt"),
    "restore gone.txt": _files("gone.txt"),
    "restore the kept session": lambda c, ids: [_answer(_restore(ids["keep"]), c)],
    "restore the deleted session": lambda c, ids: [_answer(_restore(ids["gone"]), c)],
    "purge": lambda c, ids: [_answer(lambda s: s.purge(), c)],
    "empty-trash": lambda c, ids: [_answer(lambda s: s.empty_trash(), c)],
    "restamp": _restamp,
    "purge, then restores": lambda c, ids: [
        _answer(lambda s: s.purge(), c),
        _answer(_restore(ids["keep"]), c),
        *(_answer(_restore(ids["keep"], name), c) for name in ("a.txt", "b.txt", "gone.txt")),
    ],
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blobs(path: Path) -> list[str]:
    """The bytes a trash entry keeps for a user. Of a session, the blobs its records name:
    the bytes of an upload killed before its commit, which a start-up would have moved to
    the trash as an orphan, went with the session when a purge came first (kept, never
    acknowledged: left out as orphans are)."""
    session = path / TRASHED_SESSION
    if not session.is_dir():
        return sorted(_sha(p.read_bytes()) for p in path.iterdir() if p.name != "trash.json")
    records = session / RECORDS_DIR
    named = [load_record(r) for r in records.iterdir()] if records.is_dir() else []
    blobs = [session / BLOBS_DIR / str(r["blob"]) for r in named if r is not None]
    return sorted(_sha(b.read_bytes()) for b in blobs)


@dataclasses.dataclass(frozen=True)
class View:
    answers: tuple[str, ...]
    sessions: dict[str, Any]
    trash: tuple[str, ...]  # one JSON line per entry, sorted


def view(config: Config, answers: list[str]) -> View:
    """The root after a start-up's repair, which must leave it clean."""
    with _open(config) as store:
        sessions = served_after_repair(store)
        trash = sorted(
            json.dumps([e.kind, e.session_id, e.file, e.reason, _blobs(e.path)])
            for e in store.list_trash()
            if e.reason != "orphan"
        )
    return View(tuple(answers), sessions, tuple(trash))


def _partly(got: View, before: View, after: View) -> bool:
    """Each answer, session and entry of ``got`` as in ``before`` or ``after`` (each command
    met some entries removed and others not); none that both keep lost."""
    answers = zip(got.answers, before.answers, after.answers, strict=True)
    if any(answer not in (was, will) for answer, was, will in answers):
        return False
    for key, value in got.sessions.items():
        if value not in (before.sessions.get(key), after.sessions.get(key)):
            return False
    if any(key not in got.sessions for key in before.sessions.keys() & after.sessions.keys()):
        return False
    kept = set(before.trash) & set(after.trash)
    return set(got.trash) <= set(before.trash) | set(after.trash) and kept <= set(got.trash)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """tests/test_redteam_s18_crash_points.py's root: a session of two files and a replaced
    version, a deleted file, a deleted session."""
    base = tmp_path_factory.mktemp("maintenance")
    config = _config(base / "template")
    with _open(config) as store:
        ids = fill_template(store)
    return config.data_root, ids


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    started = Zygote()
    yield started
    started.close()


def _config(root: Path) -> Config:
    return load("testing", environ={**os.environ, "APP_DATA_ROOT": str(root)})


def _copy(source: Path, where: Path) -> Config:
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(source, where, symlinks=True)
    return _config(where)


def sweep(
    zygote: Zygote, template: tuple[Path, dict[str, str]], work: Path, op: str
) -> tuple[int, list[str]]:
    """``op`` killed before each of its changes, then every command: the cases run, and
    what no order explains."""
    saved, ids = template
    args = [arg.format(**ids) for arg in OPERATIONS[op]]
    done = work / "done"
    assert zygote.run(op, 10**9, args, _copy(saved, done).data_root)
    expected = {}
    for name, command in COMMANDS.items():
        expected[name] = []
        for source in (saved, done):
            config = _copy(source, work / "oracle")
            expected[name].append(view(config, command(config, ids)))
    problems: list[str] = []
    cases = 0
    crashed = work / "crashed"
    for crash_at in range(10**4):
        if zygote.run(op, crash_at, args, _copy(saved, crashed).data_root):
            break
        for name, command in COMMANDS.items():
            cases += 1
            what = f"{op} killed before its change {crash_at}, then {name}"
            config = _copy(crashed, work / "case")
            try:
                got = view(config, command(config, ids))
            except AssertionError as error:
                problems.append(f"{what}: {error}")
                continue
            before, after = expected[name]
            if got in (before, after) or (op in ITEM_BY_ITEM and _partly(got, before, after)):
                continue
            problems.append(
                f"{what}: no order of the two explains it\n  got    {got}\n"
                f"  before {before}\n  after  {after}"
            )
    assert crash_at > 0
    return cases, problems


@pytest.mark.parametrize("op", SAMPLED)
def test_maintenance_after_a_kill_at_any_change_of_a_delete_keeps_every_version(
    zygote: Zygote, template: tuple[Path, dict[str, str]], tmp_path: Path, op: str
) -> None:
    cases, problems = sweep(zygote, template, tmp_path, op)
    print(f"{op}: {cases} cases")
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(
    not SWEEP,
    reason="the whole sweep by hand (RT_MAINTENANCE_SWEEP=1): about 800 cases, minutes",
)
@pytest.mark.parametrize("op", [op for op in OPERATIONS if op not in SAMPLED])
def test_maintenance_after_a_kill_at_any_change_of_any_operation_keeps_every_version(
    zygote: Zygote, template: tuple[Path, dict[str, str]], tmp_path: Path, op: str
) -> None:
    cases, problems = sweep(zygote, template, tmp_path, op)
    print(f"{op}: {cases} cases")
    assert not problems, "\n".join(problems)
