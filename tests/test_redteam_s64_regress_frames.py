"""Red team 64 on regress, unframed bodies and read-only roots (branch rt-regress28): see
docs/explanation/attacks/.

What broke: red team 64's 411 for a body without a length (``refuse_unframed_body``) covered
the routes that read a body (a file's ``PUT``, a form, ``POST /sessions``), not those that
take none. ``POST /trash/empty`` on HTTP/1.0 with ``{"older_than": 86400}`` and no
``Content-Length`` (its client ends the body by closing, which the server cannot see) was
taken as bodiless: the whole trash was emptied for good, its client believing it asked for
a day's entries only. The same body with its length has been refused 400 since red team 40
(`app.server.auth.refuse_body`).

What changed: `refuse_body` refuses an HTTP/1.0 ``POST`` that gives the type of a body
(``Content-Type``) but neither ``Content-Length`` nor ``Transfer-Encoding`` (RFC 1945, 8.3,
asks every one for its length) 411 ``length_required``, before anything is done, with
``Connection: close``. A ``GET``, ``HEAD`` or ``DELETE`` without one is still the bodiless
request HTTP/1.0's clients send.

And a false refusal of red team 64's integrity merge: nginx's ``proxy_pass`` speaks HTTP/1.0
to its upstream by default, and forwards ``curl -X POST .../sessions`` (no body) without a
length: it was 411, where the same request sent directly made an untitled session. An
HTTP/1.0 ``POST`` with no ``Content-Type`` either is taken as bodiless again
(`refuse_unframed_body`); so is ``curl -X POST .../trash/empty`` through nginx, which this
change would have refused too. Checked by hand with a real nginx; here, the bytes it sends.

What held, in the same test: the requests real clients make with an empty body (urllib's
and http.client's ``PUT`` with none send ``Content-Length: 0``) are stored, not refused.

One real ``app serve`` for the module, raw sockets on 127.0.0.1.

And ``app data check --repair`` whose open's ``clear-tmp`` line the log refused (``ENOSPC`` at
the first write to ``audit.jsonl`` only, strace attached to this process for the one
command), the log writable again for its repairs: it said "the audit log could not record
them", of repairs whose lines the log held. The report now tells the open's lost line from
the repairs' (``CheckReport.repairs_audited``, from ``DataRoot.lines_lost``): "the audit log
lists them, but could not record what its open cleared".

And ``POST /trash/empty`` stopped partway by ``EROFS`` (500 ``stopped_partway``: ext4 gone
read-only after its first entries; here strace's ``EROFS`` at the second entry's move, in
process): red team 64's look at the mount table after a refusal (``Store.note_read_only``)
was taken on a 503 ``storage_read_only`` alone, so ``GET /health`` said ``ok`` after it. An
error made of an ``EROFS`` (its ``__cause__``) now counts as such a refusal.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner
from faults import a_root_to_repair, attached, needs_strace
from live_http import a_file, sent_closed
from redteam_s19_http import server_and_client

from app.cli import cli
from app.config import REMOTE, Config
from app.dataroot import AUDIT_FILE
from app.storage import Storage
from app.testing import LiveServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """One server for the module (one test: a worker of its own would start another)."""
    with server_and_client(tmp_path_factory) as both:
        yield both


def test_an_http_1_0_post_without_a_length_to_a_route_taking_no_body_is_refused(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    server, client = served
    path = a_file(server, client, b"deleted, kept in the trash")
    session = path.split("/")[2]
    assert client.delete(path).status_code == 200
    assert server.data_root is not None
    trash = server.data_root / ".trash"

    def in_trash() -> list[str]:
        return [entry.name for entry in trash.iterdir() if session in entry.name]

    assert len(in_trash()) == 1
    # An HTTP/1.0 client that ends its body by closing: the trash was emptied whole.
    status, problem = sent_closed(
        server,
        "POST /trash/empty 1.0",
        "Content-Type: application/json\r\n",
        b'{"older_than": 86400}',
    )
    assert status == 411, (status, problem)
    assert problem["code"] == "length_required", problem
    message = problem["message"]
    assert message.startswith(
        "POST /trash/empty refused: it gives neither Content-Length nor Transfer-Encoding; "
        "on HTTP/1.0 the server cannot tell where its body ends"
    ), message
    assert "a body it sent would have been ignored and POST /trash/empty done" in message
    assert "Nothing was changed, and the connection is closed" in message, message
    assert "an empty body is Content-Length: 0" in message, message
    assert len(in_trash()) == 1

    # The remedy: its length (the query string carries what it asks), and the entry, a
    # moment old, is kept.
    status, emptied = sent_closed(
        server, "POST /trash/empty?older_than=86400 1.0", "Content-Length: 0\r\n"
    )
    assert (status, emptied["removed"]) == (200, 0), emptied
    assert len(in_trash()) == 1
    # What nginx's proxy_pass (HTTP/1.0 by default) forwards of `curl -X POST`: no body, no
    # type, no length. Was refused 411, POST /sessions too, since red team 64's integrity.
    nginx = "Connection: close\r\n"
    status, emptied = sent_closed(server, "POST /trash/empty?older_than=86400 1.0", nginx)
    assert status == 200, emptied
    assert emptied["removed"] == 0, emptied
    assert len(in_trash()) == 1
    status, made = sent_closed(server, "POST /sessions 1.0", nginx)
    assert status == 201, made
    assert made["title"] == "", made
    # A bodiless HTTP/1.0 GET or DELETE needs no length (curl -0 -X DELETE).
    status, listed = sent_closed(server, f"GET /sessions/{session}/files 1.0")
    assert (status, listed["items"]) == (200, []), listed
    status, deleted = sent_closed(server, f"DELETE /sessions/{session} 1.0")
    assert (status, deleted["id"]) == (200, session), deleted

    # What real clients send for an empty body is stored, not refused: urllib (and
    # http.client under it) sends Content-Length: 0 for a PUT with no data.
    path = a_file(server, client, b"version 1")
    request = urllib.request.Request(
        f"{server.url}{path}", method="PUT", headers=dict(server.headers)
    )
    with urllib.request.urlopen(request, timeout=15) as answer:
        assert answer.status == 200
    assert client.get(path).content == b""


@needs_strace
def test_a_repair_whose_logged_lines_were_written_is_not_said_unrecorded(
    app_config: Config,
) -> None:
    if app_config.backend == REMOTE:
        pytest.skip("a local root's open clears .tmp/")
    root = app_config.data_root
    orphan = a_root_to_repair(app_config)

    # The first line (the open's clear-tmp) refused, the log writable again after it.
    with attached(os.getpid(), "write:error=ENOSPC:when=1", root / AUDIT_FILE):
        result = CliRunner().invoke(cli, ["data", "check", "--repair"], catch_exceptions=False)
    operations = [json.loads(line)["operation"] for line in (root / AUDIT_FILE).open()]
    assert operations[-2:] == ["trash-file", "check-repair"], operations
    assert "clear-tmp" not in operations
    # Before: "repaired 1 finding(s); the audit log could not record them (...)".
    assert "could not record them" not in result.stdout, result.stdout
    assert (
        "repaired 1 finding(s); the audit log lists them, but could not record what its open "
        "cleared (No space left on device, at its clear-tmp line): its record is in this "
        "command's log, above"
    ) in result.stdout, result.stdout
    assert result.exit_code == 0
    assert not orphan.exists()
    again = CliRunner().invoke(cli, ["data", "check", "--json"], catch_exceptions=False)
    assert json.loads(again.stdout)["clean"] is True, again.stdout


@needs_strace
def test_an_empty_trash_stopped_partway_read_only_has_health_look_again(
    app_store: Storage, app_config: Config
) -> None:
    if app_config.backend == REMOTE:
        pytest.skip("a local root's filesystem")
    from starlette.testclient import TestClient

    from app.server import create_app

    # Without its lifespan (no `with`): its shutdown alone took a second here.
    client = TestClient(
        create_app(app_store, app_config),
        headers={"Authorization": f"Bearer {app_config.api_token}"},
    )
    for _ in range(2):
        session = client.post("/sessions", json={}).json()["id"]
        assert client.delete(f"/sessions/{session}").status_code == 200
    entries = sorted((app_config.data_root / ".trash").iterdir())
    assert len(entries) == 2
    # The second entry's move refused EROFS: the filesystem went read-only between them.
    calls = "rename:error=EROFS:when=2"
    with attached(os.getpid(), calls, *entries, also=("renameat:error=EROFS:when=2",)):
        answer = client.post("/trash/empty")
    assert answer.status_code == 500, answer.text
    problem = answer.json()
    assert problem["code"] == "stopped_partway", problem
    assert "EROFS" in problem["message"], problem
    # Before: only a refusal said read-only (503 storage_read_only) had /health read the
    # mount table (ext4's emergency_ro), so /health said ok after this one.
    assert app_store._read_only_refused is True  # type: ignore[attr-defined]
