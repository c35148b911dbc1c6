"""Red team 30: a randomized history against a real server, killed with SIGKILL at random.

Several clients send random operations over a small key space (a few sessions, two file
names, small distinct bodies) to a real ``app serve``, so that they collide: create and
delete sessions, ``PUT`` (plain, and with ``If-Match`` the ETag a client read), multipart
``POST`` and ``DELETE`` of a file, downloads (bytes, ``ETag``, ``Repr-Digest``), a session's
record and file list, and walks of ``GET /sessions`` page by page. At random moments the
server is killed with SIGKILL, so the operations in flight have unknown outcomes; while it
is down, sessions and files are restored with ``app sessions restore`` and the root is
checked with ``app data check --repair``; then a server starts again on the same root. At
the end every session is read once more, the server is stopped, and ``app data check`` must
find the root clean.

tests/history.py then checks that one order of each session's operations explains every
answer (acknowledged changes survive the kills; no answer shows a refused change or a state
that never was; a listing shows a session exactly as the docs promise). A failure prints
the seed: ``RT_HISTORY_SEED=<seed>`` runs the same choices of operations and kill moments
again (the threads' interleaving is the machine's). ``RT_HISTORY_RUNS=<n>`` runs n seeds
(a longer soak, by hand; what one ran is recorded in attacks/layer-7-atomic-writes.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import forked_app
import httpx
import pytest
from history import NO_FILE, NO_SESSION, OK, REFUSED, Files, History, Op, Page, check

from app import config as appconfig
from app.testing import published_port, stop_server, wait_until_serving

NAMES = ("a.txt", "b.txt")
CLIENTS = 4
#: How long clients run against one server before it is killed, at random within it.
EPOCH_SECONDS = (0.2, 0.45)
#: Bounds the wait on a broken server, so that a hung test fails: it measures nothing.
WAIT = 30.0


def _runs() -> range:
    # The seeds themselves are drawn in the test: a parameter drawn at collection differs
    # between xdist workers, which then refuse to run (their collections must be equal).
    return range(int(os.environ.get("RT_HISTORY_RUNS", "1")))


def _seed() -> int:
    if "RT_HISTORY_SEED" in os.environ:
        return int(os.environ["RT_HISTORY_SEED"])
    return random.SystemRandom().randrange(2**32)


class LocalRoot:
    """One data root, served by one ``app serve`` after another (forked: tests/forked_app.py)."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.path = where / "live-data"
        self.env = {**os.environ, "APP_HOST": "127.0.0.1", "APP_DATA_ROOT": str(self.path)}
        self.config = appconfig.load("testing", environ=self.env)
        token = self.config.api_token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.process: Any = None
        self.starts = 0

    def start(self) -> list[str]:
        self.starts += 1
        log = self.where / f"server-{self.starts}.log"
        self.process = forked_app.serve(self.env, log, ["serve", "--port", "0"])
        url = f"http://127.0.0.1:{published_port(self.path, self.process, log)}"
        wait_until_serving(url, self.process, log=log)
        return [url]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        stop_server(self.process)

    def restore(self, wanted: list[tuple[str, str | None]]) -> list[tuple[str, str]]:
        """Each (session, file or None) restored in turn, as an operator would, through
        `Store.restore` (which ``app sessions restore`` calls: a command costs a start-up)."""
        from app.errors import AppError
        from app.storage import open_storage

        answers = []
        with open_storage(self.config, writer=True, kind="tests", wanted="restore") as store:
            for session, name in wanted:
                try:
                    store.restore(session, file=name)
                except AppError as error:
                    if error.exit_code not in (65, 66):
                        raise
                    answers.append((REFUSED, f"({error.code})"))
                else:
                    answers.append((OK, ""))
        return answers

    def repair(self) -> str | None:
        """``app data check --repair`` itself; what went wrong, if anything."""
        done = forked_app.run(self.env, ["data", "check", "--repair"])
        return None if done.returncode == 0 else f"exit {done.returncode}: {done.stdout}"

    def check(self) -> str | None:
        from app.storage import open_storage

        with open_storage(self.config, writer=False, kind="tests", wanted="check") as store:
            findings = store.check().findings
        return f"{findings}" if findings else None


class Replicas:
    """Production on PostgreSQL and object storage (tests/replicas.py), served by two
    replicas at a time; restores and checks are the commands (they take the database)."""

    def __init__(self, production: Any) -> None:
        self.production = production
        self.headers = production.headers
        self.live: list[Any] = []

    def start(self) -> list[str]:
        self.live = list(self.production.start_pair())
        return [replica.url for replica in self.live]

    def kill(self) -> None:
        for replica in self.live:
            replica.process.kill()
        for replica in self.live:
            replica.process.wait()

    def stop(self) -> None:
        for replica in self.live:
            replica.stop()

    def _gone(self) -> None:
        """Until PostgreSQL has seen the killed replicas' connections close."""
        from replicas import wait_for

        wait_for(lambda: not self.production.holders(), "the killed replicas' locks to go")

    def restore(self, wanted: list[tuple[str, str | None]]) -> list[tuple[str, str]]:
        self._gone()
        answers = []
        for session, name in wanted:
            more = [] if name is None else ["--file", name]
            done = self.production.run("sessions", "restore", session, *more)
            assert done.returncode in (0, 65, 66), done.stdout + done.stderr
            answers.append((OK, "") if done.returncode == 0 else (REFUSED, done.stderr[:80]))
        return answers

    def repair(self) -> str | None:
        self._gone()
        done = self.production.run("data", "check", "--repair")
        return None if done.returncode == 0 else f"exit {done.returncode}: {done.stdout}"

    def check(self) -> str | None:
        """``app data check``: anything but the objects of uploads cut by a kill, which no row
        names (a start-up leaves those younger than the orphan grace to a later check)."""
        done = self.production.run("data", "check", "--json")
        findings = json.loads(done.stdout)["findings"] if done.stdout.strip() else None
        if findings is None or any(f["problem"] != "object-without-record" for f in findings):
            return f"exit {done.returncode}: {done.stdout}{done.stderr}"
        return None


class Run:
    """One seed's history: the clients, the kills, the restores, and what they saw."""

    def __init__(self, root: LocalRoot | Replicas, seed: int, epochs: int) -> None:
        self.root = root
        self.seed = seed
        self.rng = random.Random(seed)
        self.epochs = epochs
        self.history = History(origin=time.monotonic())
        self.lock = threading.Lock()
        self.sessions: list[str] = []
        self.urls: list[str] = []  # the servers of this moment (two replicas on PostgreSQL)
        self.epoch = 0
        self.serving = threading.Event()
        self.finished = False
        self.killed_at: dict[int, float] = {}  # epoch -> the moment its server was dead
        self.kill_began: dict[int, float] = {}
        self.etags: dict[tuple[str, str], str] = {}

    # -- recording -------------------------------------------------------------------------

    def _record(
        self,
        op: Op,
        http: httpx.Client,
        send: Callable[[httpx.Client, str], httpx.Response],
        answer: Callable[[httpx.Response], Any],
    ) -> httpx.Response | None:
        # Which replica serves it is not part of the replayed choices.
        epoch, url = self.epoch, random.choice(self.urls)
        op.invoked = time.monotonic()
        try:
            response = send(http, url)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            return None  # never sent: no effect, nothing to record
        except httpx.TransportError as error:
            op.known, op.note, op.epoch = False, f"({type(error).__name__})", epoch
            with self.lock:
                began = self.kill_began.get(epoch)
                if began is None or time.monotonic() < began:
                    self.history.problems.append(
                        f"a live server dropped {op.kind} {op.session} {op.name}: {error!r}"
                    )
                self.history.ops.append(op)
            return None
        op.completed = time.monotonic()
        if response.status_code >= 500:
            op.known, op.note, op.epoch = False, f"({response.status_code})", epoch
            self.history.problems.append(
                f"{op.kind} {op.session} {op.name} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        else:
            op.observed = answer(response)
        with self.lock:
            self.history.ops.append(op)
        return response

    def _unexpected(self, op: Op, response: httpx.Response) -> str:
        self.history.problems.append(
            f"{op.kind} {op.session} {op.name} answered {response.status_code} "
            f"{response.text[:300]}"
        )
        return f"unexpected {response.status_code}"

    def _written(self, op: Op, response: httpx.Response) -> int:
        """A write's answer: its status, once its entry is checked against the bytes sent."""
        entry = response.json()
        body = self.history.bodies[op.value or ""]
        if (entry.get("name"), entry.get("sha256"), entry.get("size")) != (
            op.name,
            op.value,
            len(body),
        ):
            self.history.problems.append(f"{op.kind} {op.session} {op.name} answered {entry}")
        return response.status_code

    def _missing(self, op: Op, response: httpx.Response) -> Any:
        code = response.json().get("code")
        if code == "session_not_found":
            return NO_SESSION
        if code == "file_not_found":
            return NO_FILE
        return self._unexpected(op, response)

    def _files(self, op: Op, entries: list[dict[str, Any]]) -> Files:
        """A session's files as a listing or a record shows them, each entry checked."""
        files = []
        for entry in entries:
            body = self.history.bodies.get(entry["sha256"])
            if body is None or len(body) != entry["size"]:
                self.history.problems.append(
                    f"{op.kind} of {op.session} listed {entry}: bytes no client sent"
                )
            files.append((entry["name"], entry["sha256"]))
        return tuple(sorted(files))

    def _download(self, op: Op, response: httpx.Response) -> Any:
        if response.status_code == 404:
            return self._missing(op, response)
        if response.status_code != 200:
            return self._unexpected(op, response)
        data = response.content
        sha = hashlib.sha256(data).hexdigest()
        digest = sha if sha in self.history.bodies else None
        b64 = base64.b64encode(bytes.fromhex(sha)).decode()
        headers = response.headers
        if (
            digest is None
            or headers.get("etag") != f'"{sha}"'
            or headers.get("repr-digest") != f"sha-256=:{b64}:"
            or headers.get("content-length") != str(len(data))
        ):
            self.history.problems.append(
                f"GET {op.session}/{op.name}: {len(data)} bytes, known={digest is not None}, "
                f"ETag {headers.get('etag')}, Repr-Digest {headers.get('repr-digest')}"
            )
        with self.lock:
            self.etags[(op.session or "", op.name or "")] = sha
        return sha

    # -- the operations ------------------------------------------------------------------

    def operate(self, who: str, rng: random.Random, http: httpx.Client, seq: int) -> None:
        with self.lock:
            sessions = list(self.sessions)
        roll = rng.random()
        if not sessions or roll < 0.03 or (roll < 0.1 and len(sessions) < 3):
            op = Op(who, "create", None, 0.0)

            def created(response: httpx.Response) -> Any:
                if response.status_code != 201:
                    return self._unexpected(op, response)
                op.session = response.json()["id"]
                with self.lock:
                    self.sessions.append(op.session)
                return OK

            self._record(op, http, lambda c, u: c.post(f"{u}/sessions", json={}), created)
            return
        session, name = rng.choice(sessions[-3:]), rng.choice(NAMES)
        where = f"/sessions/{session}/files/{name}"
        roll = rng.random()
        if roll < 0.35:
            body = f"{who}-{seq}-{rng.randrange(10**6)}".encode() * rng.randint(1, 3)
            with self.lock:
                sha = self.history.body(body)
                tag = self.etags.get((session, name)) if rng.random() < 0.3 else None
            op = Op(who, "put", session, 0.0, name=name, value=sha, if_match=tag)
            headers = {"If-Match": f'"{tag}"'} if tag else {}

            def put(response: httpx.Response) -> Any:
                if response.status_code in (200, 201):
                    return self._written(op, response)
                if response.status_code == 412:
                    return 412
                if response.status_code == 404:
                    return self._missing(op, response)
                return self._unexpected(op, response)

            self._record(
                op, http, lambda c, u: c.put(u + where, content=body, headers=headers), put
            )
        elif roll < 0.45:
            body = f"{who}-{seq}-{rng.randrange(10**6)}-form".encode()
            with self.lock:
                sha = self.history.body(body)
            op = Op(who, "post", session, 0.0, name=name, value=sha)

            def post(response: httpx.Response) -> Any:
                if response.status_code == 201:
                    return self._written(op, response)
                if response.status_code == 409:
                    return 409
                if response.status_code == 404:
                    return self._missing(op, response)
                return self._unexpected(op, response)

            files = {"file": (name, body)}
            self._record(
                op,
                http,
                lambda c, u: c.post(f"{u}/sessions/{session}/files", files=files),
                post,
            )
        elif roll < 0.55:
            op = Op(who, "delete_file", session, 0.0, name=name)

            def deleted(response: httpx.Response) -> Any:
                if response.status_code == 200:
                    return OK
                if response.status_code == 404:
                    return self._missing(op, response)
                return self._unexpected(op, response)

            self._record(op, http, lambda c, u: c.delete(u + where), deleted)
        elif roll < 0.75:
            op = Op(who, "get_file", session, 0.0, name=name)
            self._record(op, http, lambda c, u: c.get(u + where), lambda r: self._download(op, r))
        elif roll < 0.85:
            files_only = rng.random() < 0.5
            op = Op(who, "read", session, 0.0, note="files" if files_only else "record")
            path = f"/sessions/{session}" + ("/files" if files_only else "")

            def read(response: httpx.Response) -> Any:
                if response.status_code == 404:
                    return self._missing(op, response)
                if response.status_code != 200:
                    return self._unexpected(op, response)
                body = response.json()
                return self._files(op, body["items"] if files_only else body["files"])

            self._record(op, http, lambda c, u: c.get(u + path), read)
        elif roll < 0.95:
            self.walk(who, http)
        else:
            op = Op(who, "delete_session", session, 0.0)

            def gone(response: httpx.Response) -> Any:
                if response.status_code == 200:
                    return OK
                if response.status_code == 404:
                    return self._missing(op, response)
                return self._unexpected(op, response)

            self._record(op, http, lambda c, u: c.delete(f"{u}/sessions/{session}"), gone)

    def walk(self, who: str, http: httpx.Client) -> None:
        """``GET /sessions`` page by page (two a page) until ``next`` is null."""
        pages: list[Page] = []
        after: str | None = None
        while True:
            url = random.choice(self.urls)
            query = {"limit": "2", **({"after": after} if after else {})}
            began = time.monotonic()
            try:
                response = http.get(f"{url}/sessions", params=query)
            except httpx.TransportError:
                break  # a page never answered tells nothing
            if response.status_code != 200:
                self.history.problems.append(f"GET /sessions: {response.status_code}")
                break
            body = response.json()
            probe = Op(who, "read", None, began)
            items = {s["id"]: self._files(probe, s["files"]) for s in body["items"]}
            page = Page(who, began, time.monotonic(), after, body["next"], items)
            pages.append(page)
            after = body["next"]
            if after is None:
                break
        with self.lock:
            self.history.pages.extend(pages)
            if pages and pages[-1].next is None:
                self.history.walks.append(pages)

    def client(self, index: int) -> None:
        who, rng = f"c{index}", random.Random(f"{self.seed}-{index}")
        seq = 0
        with httpx.Client(headers=self.root.headers, timeout=WAIT) as http:
            while True:
                self.serving.wait()
                if self.finished:
                    return
                seq += 1
                self.operate(who, rng, http, seq)

    # -- the server's life ---------------------------------------------------------------

    def restores(self) -> None:
        """While the server is down: restore sessions and files, as an operator would."""
        with self.lock:
            sessions = list(self.sessions)
        if not sessions:
            return
        wanted = [
            (self.rng.choice(sessions[-3:]), None if self.rng.random() < 0.4 else name)
            for name in self.rng.choices(NAMES, k=self.rng.randint(1, 3))
        ]
        began = time.monotonic()
        answers = self.root.restore(wanted)
        moment = time.monotonic()
        # One after the other, in one process: each took effect within the whole run of them.
        for (session, name), (answer, note) in zip(wanted, answers, strict=True):
            kind = "restore_session" if name is None else "restore_file"
            self.history.ops.append(
                Op("operator", kind, session, began, moment, answer, name=name, note=note)
            )
            began = moment = moment + 1e-6  # kept in their order

    def run(self) -> History:
        threads = [
            threading.Thread(target=self.client, args=(i,), name=f"history-client-{i}")
            for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        try:
            for epoch in range(self.epochs):
                self.urls, self.epoch = self.root.start(), epoch
                self.serving.set()
                time.sleep(self.rng.uniform(*EPOCH_SECONDS))  # the random moment of the kill
                self.serving.clear()
                with self.lock:
                    self.kill_began[epoch] = time.monotonic()
                self.root.kill()
                self.killed_at[epoch] = time.monotonic()
                self.restores()
                if epoch == 0 and (problem := self.root.repair()):  # once: a command is slow
                    self.history.problems.append(f"app data check --repair: {problem}")
            self.urls, self.epoch = self.root.start(), self.epochs
        finally:
            self.finished = True
            self.serving.set()
            for thread in threads:
                thread.join()
        self.final_reads()
        self.root.stop()
        if problem := self.root.check():
            self.history.problems.append(f"the check after a clean stop found: {problem}")
        self._settle()
        return self.history

    def final_reads(self) -> None:
        """Every session, and each of its files, read once more from the last server."""
        with httpx.Client(headers=self.root.headers, timeout=WAIT) as http:
            self.walk("final", http)
            for session in self.sessions:
                op = Op("final", "read", session, 0.0, note="record")

                def read(response: httpx.Response, op: Op = op) -> Any:
                    if response.status_code == 404:
                        return self._missing(op, response)
                    return self._files(op, response.json()["files"])

                self._record(op, http, lambda c, u, s=session: c.get(f"{u}/sessions/{s}"), read)
                for name in NAMES:
                    get = Op("final", "get_file", session, 0.0, name=name)
                    path = f"/sessions/{session}/files/{name}"
                    self._record(
                        get,
                        http,
                        lambda c, u, p=path: c.get(u + p),
                        lambda r, o=get: self._download(o, r),
                    )

    def _settle(self) -> None:
        """An unknown outcome took effect, if at all, before its server was dead."""
        for op in self.history.ops:
            if not op.known:
                op.completed = self.killed_at.get(op.epoch, time.monotonic())


@pytest.fixture
def root(tmp_path: Path) -> Iterator[LocalRoot]:
    root = LocalRoot(tmp_path)
    yield root
    if root.process is not None and root.process.poll() is None:
        root.process.kill()
        root.process.wait()


@pytest.mark.parametrize("run", _runs())
def test_every_answer_of_a_random_history_with_kills_is_explained_by_one_order(
    root: LocalRoot, run: int
) -> None:
    seed = _seed()
    history = Run(root, seed, epochs=3).run()
    kinds = {o.kind for o in history.ops}
    assert {"create", "put", "get_file"} <= kinds, f"seed {seed}: too short a history"
    found = check(history)
    assert not found, f"RT_HISTORY_SEED={seed}\n" + "\n".join(found)


@pytest.mark.skipif(
    not os.environ.get("RT_HISTORY_REMOTE"),
    reason="a soak by hand (RT_HISTORY_REMOTE=1): two replicas per epoch cost seconds each",
)
@pytest.mark.parametrize("run", _runs())
def test_the_same_history_on_two_replicas_of_postgresql_and_object_storage(
    tmp_path: Path, postgres_engine: Any, s3_engine: Any, blob_url: str, run: int
) -> None:
    seed = _seed()
    from replicas import production_on

    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as production:
        history = Run(Replicas(production), seed, epochs=3).run()
    found = check(history)
    assert not found, f"RT_HISTORY_REMOTE=1 RT_HISTORY_SEED={seed}\n" + "\n".join(found)


# -- the checker, on histories written by hand --------------------------------------------


def _history(*ops: Op, pages: tuple[Page, ...] = ()) -> History:
    return History(ops=list(ops), pages=list(pages))


S = "0" * 31 + "1"
V1, V2 = "1" * 64, "2" * 64


def test_the_checker_finds_an_acknowledged_write_lost_and_a_refused_one_seen() -> None:
    made = Op("c0", "create", S, 0, 1, OK)
    put = Op("c0", "put", S, 2, 3, 201, name="a", value=V1)
    # Read after a kill and a restart: the acknowledged write must be there.
    assert check(_history(made, put, Op("c1", "get_file", S, 5, 6, NO_FILE, name="a")))
    assert not check(_history(made, put, Op("c1", "get_file", S, 5, 6, V1, name="a")))
    refused = Op("c1", "post", S, 4, 5, 409, name="a", value=V2)
    assert check(_history(made, put, refused, Op("c0", "get_file", S, 6, 7, V2, name="a")))
    # Its outcome unknown (the server killed under it), a write may have been made or not.
    cut = Op("c1", "put", S, 4, 5, name="a", value=V2, known=False)
    for seen in (V1, V2):
        assert not check(_history(made, put, cut, Op("c0", "get_file", S, 6, 7, seen, name="a")))
    # ... but not after its server was dead.
    late = Op("c0", "get_file", S, 6, 7, V1, name="a")
    assert check(_history(made, put, cut, late, Op("c0", "get_file", S, 8, 9, V2, name="a")))


def test_the_checker_holds_a_listing_to_completed_creates_and_deletes() -> None:
    made, gone = Op("c0", "create", S, 0, 1, OK), Op("c0", "delete_session", S, 2, 3, OK)
    shown = Page("c1", 4, 5, None, None, {S: ()})
    assert check(_history(made, gone, pages=(shown,)))
    assert not check(_history(made, pages=(shown,)))
    missed = Page("c1", 4, 5, None, None, {})
    assert check(_history(made, pages=(missed,)))
    # Unless a create that could have taken a smaller id was in flight (the documented rule).
    slow = Op("c2", "create", None, 0.5, 4.5, known=False)
    assert not check(_history(made, slow, pages=(missed,)))
