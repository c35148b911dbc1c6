"""Red team 61 on regress, operations and HTTP (branch rt-regress16): see
docs/explanation/attacks/.

What broke, and what changed:

- rt-api3 counted ``max_header_bytes`` on h11's events, a chunk's size line in the ``Data``
  event that began its chunk. h11 takes a whole size line from its buffer at once and then
  waits for the chunk's data without an event: a line of 32,778 bytes that came in a read of
  its own (the data sent after ``100 Continue``) counted nothing, and the chunked ``PUT``
  replaced the file (200); so did the last chunk's line before its trailer. What h11 takes
  beside body data is now counted across the calls that return no event
  (`app.server.protocol.bounded_h11`): 431 ``body_line_too_large``, nothing kept;
- rt-ops61 asked ``app data restamp``'s confirmation after the read of a data root's stamp,
  and still first on PostgreSQL and object storage: a mistyped ``--from stagign`` was told
  to confirm (77), then, re-run as told, refused for the stamp it had not named, and a
  repeated command that changes nothing needed ``--yes-i-mean-it``. It is asked there too
  under the hold, once a stamp is found to be ``--from``'s (`app.remote.storage.restamp`);
- a flake of ``tests/txpooler.py`` (not of the app): it gave a server connection back to its
  pool after it had told the client it was idle, so a client that went on at once could get
  another server session while the pooler's thread waited for a core. It gives it back first.
"""

from __future__ import annotations

from pathlib import Path

import forked_app
import httpx
from engines import PostgresEngine, S3Engine, new_blob_url
from live_http import Answers, a_file, connect, head_of
from replicas import production_on
from test_redteam_s61_api import assert_line_refused, served  # noqa: F401 - a fixture

from app.testing import LiveServer


def test_a_chunk_line_that_came_before_its_data_is_held_to_the_bound(
    served: tuple[LiveServer, httpx.Client],  # noqa: F811 - the fixture
) -> None:
    server, client = served
    bound = server.config.max_header_bytes
    path = a_file(server, client, b"old")
    put = head_of(
        server,
        f"PUT {path}",
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n",
    )
    line = b";" + b"e" * (bound + 10) + b"\r\n"
    # The line whole in the first read, what follows it sent once the app reads the body
    # (its 100 Continue): h11 took the line and waited for the rest.
    for first, rest in ((b"3" + line, b"bad\r\n0\r\n\r\n"), (b"3\r\nbad\r\n0" + line, b"\r\n")):
        with connect(server) as sock:
            sock.sendall(put + first)
            answers = Answers(sock)
            status, headers, body = answers.next()
            if status == 100:
                sock.sendall(rest)
                status, headers, body = answers.next()
        # Before: 200, the file replaced by "bad" (the line counted with no event).
        problem = httpx.Response(status, content=body).json()
        assert_line_refused(status, headers, problem, path)
        assert client.get(path).content == b"old"
    # A later chunk's line of the bound itself, after the CRLF that ended the chunk before
    # it, all in one read: served (that CRLF is not the line's).
    at_bound = b"3;" + b"e" * (bound - 4) + b"\r\n"
    with connect(server) as sock:
        sock.sendall(put + b"2\r\nab\r\n" + at_bound + b"new\r\n0\r\n\r\n")
        answers = Answers(sock)
        status, _, body = answers.next()
        if status == 100:
            status, _, body = answers.next()
    assert status == 200, body
    assert client.get(path).content == b"abnew"


def test_a_remote_restamp_reads_the_stamps_before_it_asks_for_a_confirmation(
    tmp_path: Path, postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with production_on(tmp_path, postgres_engine, s3_engine, new_blob_url(s3_engine)) as prod:
        opened = forked_app.run(prod.env, ["sessions", "list"])
        assert opened.returncode == 0, opened.stderr
        restamp = ["data", "restamp", "--profile", "production", "--from"]
        # Opened, so stamped production's: a repeated command, which changes nothing.
        # Before: 77, a confirmation asked of it.
        repeated = forked_app.run(prod.env, [*restamp, "staging"])
        assert repeated.returncode == 0, repeated.stderr
        assert "is already stamped 'production': nothing was changed" in repeated.stdout
        # A database and prefix of staging's (a copy, say), to be handed to production.
        prod.stamp_both(s3_engine, "staging")
        # Before: 77, "add --yes-i-mean-it" to hand it over from 'stagign', and, re-run so,
        # refused for the stamp it found.
        typo = forked_app.run(prod.env, [*restamp, "stagign"])
        said = " ".join(typo.stderr.split())
        assert typo.returncode == 78, said
        assert "belongs to profile 'staging'" in said, said
        assert "app data restamp --profile production --from staging" in said, said
