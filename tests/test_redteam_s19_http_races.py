"""Red team over HTTP: a multipart create and a raw ``PUT`` of one new name at once.

``POST`` creates and never replaces (409 for a taken name); ``PUT`` creates or replaces, the
replaced bytes going to the trash. Whatever the order they finish in, no answer may say
"created" for a file that the other then overwrote without a trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from redteam_s19_http import one_client

ROUNDS = 15


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with one_client(tmp_path_factory) as client:
        yield client


def test_a_multipart_create_racing_a_put_of_the_same_name_never_loses_an_acknowledged_file(
    http: httpx.Client,
) -> None:
    session_id = http.post("/sessions", json={}).json()["id"]
    files = f"/sessions/{session_id}/files"
    with ThreadPoolExecutor(2) as pool:
        for round_ in range(ROUNDS):
            name = f"race-{round_}.bin"
            raw, part = os.urandom(2000 + round_), os.urandom(3000 + round_)
            put = pool.submit(http.put, f"{files}/{name}", content=raw)
            post = pool.submit(http.post, files, files={"file": (name, part)})
            put_status, post_status = put.result().status_code, post.result().status_code
            assert (put_status, post_status) in {(201, 409), (200, 201)}, (round_, put_status)
            # Either way the PUT answered last for this name: its bytes are the file.
            assert http.get(f"{files}/{name}").content == raw, round_
    listed = {f["name"]: f["size"] for f in http.get(files).json()["items"]}
    assert listed == {f"race-{n}.bin": 2000 + n for n in range(ROUNDS)}
