"""Red team 34 on PostgreSQL and object storage: `POST /trash/empty` on two replicas at once.

Two replicas of one production profile share a database and a bucket; each empties the
trash while the other does, and while sessions and files go on being made and deleted
through both. Every empty must be a 200 (or a clear refusal), and once both have stopped,
`app data check` (which then lists every object no row names) must find nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import forked_app
import httpx
import pytest
from engines import PostgresEngine, S3Engine
from replicas import Production, production_on

_EMPTY = "/trash/empty?confirm=yes-i-mean-it"
#: Rounds of empties per replica; APP_TEST_EMPTY_ROUNDS makes the heavier run by hand.
ROUNDS = int(os.environ.get("APP_TEST_EMPTY_ROUNDS", "3"))


@pytest.fixture
def production(
    tmp_path: Path, postgres_engine: PostgresEngine, blob_url: str, s3_engine: S3Engine
) -> Iterator[Production]:
    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as prod:
        yield prod


def _trash_some(client: httpx.Client, n: int, answers: list[str]) -> None:
    """Sessions with files, some files deleted or replaced, then most sessions deleted."""

    def ok(answer: httpx.Response) -> None:
        if answer.status_code >= 500:
            answers.append(f"{answer.request.method} {answer.status_code} {answer.text}")

    for i in range(n):
        sid = client.post("/sessions", json={"title": f"s{i}"}).json()["id"]
        for name in ("a.txt", "b.txt", "c.txt"):
            ok(client.put(f"/sessions/{sid}/files/{name}", content=b"x" * i))
        ok(client.put(f"/sessions/{sid}/files/c.txt", content=b"y" * i))
        ok(client.delete(f"/sessions/{sid}/files/a.txt"))
        if i % 3:
            ok(client.delete(f"/sessions/{sid}"))


def test_two_replicas_emptying_the_trash_at_once_all_succeed_and_leave_no_orphan(
    production: Production,
) -> None:
    first, second = production.start_pair()
    answers: list[str] = []
    go = threading.Barrier(6)

    def empty(replica_index: int) -> None:
        with production.client(production.replicas[replica_index]) as client:
            go.wait()
            for _ in range(ROUNDS):
                answer = client.post(_EMPTY)
                if answer.status_code != 200:
                    answers.append(f"{answer.status_code} {answer.text}")

    def churn(replica_index: int) -> None:
        with production.client(production.replicas[replica_index]) as client:
            go.wait()
            _trash_some(client, ROUNDS, answers)

    with production.client(first) as client:
        _trash_some(client, 2 * ROUNDS, answers)
    workers = [
        threading.Thread(target=work, args=(index,))
        for work in (empty, empty, churn)
        for index in (0, 1)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with production.client(second) as client:
        last = client.post(_EMPTY)
        assert last.status_code == 200, last.text
    assert answers == []
    assert first.stop() == 0, first.output
    assert second.stop() == 0, second.output
    checked = production.run("data", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


# The process dies as it sends the object store its DeleteObjects: after the transaction
# that removed the rows, before any object went.
_KILL_AT_DELETE = """
import os, signal, sys

def _kill(event, args):
    if event == "http.client.send" and b"<Delete" in bytes(args[1])[:4096]:
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(_kill)
"""


def test_an_empty_trash_killed_before_its_objects_went_is_finished_by_the_next_one(
    production: Production, tmp_path: Path
) -> None:
    # ~3 s: a replica's start and stop, then three commands. The next empty-trash left the
    # killed one's objects, which `app data check` then reported as uploads that never
    # committed (exit 65).
    replica = production.start()
    with production.client(replica) as client:
        keep = client.post("/sessions", json={"title": "kept"}).json()["id"]
        assert client.put(f"/sessions/{keep}/files/a.txt", content=b"kept").status_code == 201
        gone = client.post("/sessions", json={"title": "deleted"}).json()["id"]
        assert client.put(f"/sessions/{gone}/files/b.txt", content=b"gone").status_code == 201
        assert client.delete(f"/sessions/{gone}").status_code in (200, 204)
        assert client.delete(f"/sessions/{keep}/files/a.txt").status_code in (200, 204)
        assert client.put(f"/sessions/{keep}/files/a.txt", content=b"again").status_code == 201
    assert replica.stop() == 0, replica.output
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_KILL_AT_DELETE)
    path = os.pathsep.join([str(hooks), *filter(None, [production.env.get("PYTHONPATH")])])
    empty = ("data", "empty-trash", "--profile", "production", "--yes-i-mean-it")
    killed = forked_app.run({**production.env, "PYTHONPATH": path}, list(empty))
    assert killed.returncode == -9, killed.stdout + killed.stderr
    finished = production.run(*empty)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    checked = production.run("data", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
