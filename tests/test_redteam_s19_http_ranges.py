"""Red team over HTTP: a resumed download across a replace of its file (a real ``app serve``).

A client that lost a download part-way resumes it with ``Range: bytes=<got>-`` and
``If-Range: <validator of what it got>``; the server sends the rest only if the file is still
the version the validator names, and the whole new file otherwise (RFC 9110, 13.1.5). The
attack: replace the file within the second of the first download, so that its
``Last-Modified`` (whole seconds) is the same for both versions.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from redteam_s19_http import one_client

SIZE = 4096
HALF = SIZE // 2


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One server for the module: each test works in a session of its own."""
    with one_client(tmp_path_factory) as client:
        yield client


def _replaced_within_one_second(http: httpx.Client, url: str) -> tuple[httpx.Response, bytes]:
    """The first half of a download of one version, and the next version's bytes, written
    within the same second (tried again in the rare case that a second boundary fell between)."""
    while True:
        old, new = os.urandom(SIZE), os.urandom(SIZE)
        assert http.put(url, content=old).status_code in (200, 201)
        first = http.get(url, headers={"Range": f"bytes=0-{HALF - 1}"})
        assert first.status_code == 206, first.text
        assert first.content == old[:HALF]
        assert http.put(url, content=new).status_code == 200
        if http.head(url).headers["last-modified"] == first.headers["last-modified"]:
            return first, new


@pytest.mark.parametrize("validator", ["last-modified", "etag"])
def test_a_download_resumed_after_a_replace_is_never_the_old_head_and_the_new_tail(
    http: httpx.Client, validator: str
) -> None:
    session_id = http.post("/sessions", json={}).json()["id"]
    url = f"/sessions/{session_id}/files/resumed.bin"
    first, new = _replaced_within_one_second(http, url)
    rest = http.get(url, headers={"Range": f"bytes={HALF}-", "If-Range": first.headers[validator]})
    # The validator names the old version: the answer is the whole new file, with the ETag
    # and length of exactly those bytes, never a 206 of the new file's tail.
    assert rest.status_code == 200, (rest.status_code, rest.headers)
    assert rest.content == new
    assert rest.headers["content-length"] == str(SIZE)
    assert rest.headers["etag"] == f'"{hashlib.sha256(new).hexdigest()}"'


def test_a_download_resumed_with_the_current_etag_gets_the_rest(http: httpx.Client) -> None:
    session_id = http.post("/sessions", json={}).json()["id"]
    url = f"/sessions/{session_id}/files/kept.bin"
    data = os.urandom(SIZE)
    assert http.put(url, content=data).status_code == 201
    etag = http.head(url).headers["etag"]
    rest = http.get(url, headers={"Range": f"bytes={HALF}-", "If-Range": etag})
    assert rest.status_code == 206, rest.text
    assert rest.content == data[HALF:]
    assert rest.headers["content-range"] == f"bytes {HALF}-{SIZE - 1}/{SIZE}"


def test_downloads_during_a_storm_of_replaces_are_each_one_version_whole(
    http: httpx.Client,
) -> None:
    session_id = http.post("/sessions", json={}).json()["id"]
    url = f"/sessions/{session_id}/files/storm.bin"
    # Versions of different sizes, so that a mix of two would show in the length as well.
    versions = [os.urandom(SIZE + 1000 * n) for n in range(12)]
    assert http.put(url, content=versions[0]).status_code == 201
    known = {hashlib.sha256(v).hexdigest(): v for v in versions}

    def replace() -> None:
        for version in versions[1:]:
            assert http.put(url, content=version).status_code == 200

    def download() -> list[httpx.Response]:
        return [http.get(url) for _ in range(12)]

    with ThreadPoolExecutor(3) as pool:
        writer = pool.submit(replace)
        readers = [pool.submit(download) for _ in range(2)]
        writer.result()
        answers = [answer for reader in readers for answer in reader.result()]
    for answer in answers:
        assert answer.status_code == 200
        digest = hashlib.sha256(answer.content).hexdigest()
        assert answer.headers["etag"] == f'"{digest}"'
        assert answer.headers["content-length"] == str(len(answer.content))
        assert known[digest] == answer.content


def test_a_range_with_one_range_in_the_file_is_served_that_range(http: httpx.Client) -> None:
    # Red team 71 on the HTTP contract, found by sending ranges of which one was past the end:
    # RFC 9110 calls a Range satisfiable if one of its ranges is (14.1.1), and has the 206
    # carry those (14.2); Starlette answered 416 if any one was not, saying "each range
    # starts past its end or is -0", which the other range belied.
    session_id = http.post("/sessions", json={}).json()["id"]
    url = f"/sessions/{session_id}/files/ranges.bin"
    data = os.urandom(SIZE)
    assert http.put(url, content=data).status_code == 201
    for wanted in (f"bytes=0-1,{SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9},0-1", "bytes=-0,0-1"):
        part = http.get(url, headers={"Range": wanted})
        assert (part.status_code, part.content) == (206, data[:2]), (wanted, part.text)
        assert part.headers["content-range"] == f"bytes 0-1/{SIZE}", wanted
    # Several in the file: those, in a multipart answer; all of them past it: still 416.
    several = http.get(url, headers={"Range": f"bytes=0-1,{SIZE}-,-2"})
    assert several.status_code == 206, several.text
    assert several.headers["content-type"].startswith("multipart/byteranges")
    assert data[:2] in several.content and data[-2:] in several.content
    assert f"bytes {SIZE}-".encode() not in several.content
    # The whole file among them is checked against its SHA-256 as a whole download is.
    whole = http.get(url, headers={"Range": f"bytes=0-,{SIZE * 2}-"})
    assert (whole.status_code, whole.content) == (206, data)
    for wanted in (f"bytes={SIZE}-,-0", "bytes=-0,-0", f"bytes={SIZE}-{SIZE}"):
        refused = http.get(url, headers={"Range": wanted})
        assert refused.status_code == 416, (wanted, refused.text)
        assert refused.headers["content-range"] == f"bytes */{SIZE}"
        assert "each range starts past its end or is -0" in refused.json()["message"]


def test_a_range_with_a_number_of_thousands_of_digits_is_read_as_that_number(
    http: httpx.Client,
) -> None:
    # Red team 71 on regress (rt-regress71d), found by reading rt-http71's `_beyond`: it
    # read each range's numbers with int(), which refuses over 4,300 digits, so a Range of
    # one range in the file and one starting at a number of 4,301 digits was a 500 (where
    # Starlette had skipped that part). Digits are compared as numbers of any length now,
    # and such a number is read as RFC 9110 reads it: past the end of any file.
    session_id = http.post("/sessions", json={}).json()["id"]
    url = f"/sessions/{session_id}/files/huge.bin"
    data = os.urandom(SIZE)
    assert http.put(url, content=data).status_code == 201
    huge = "9" * 4301
    for wanted, first, last in (
        (f"bytes=0-1,{huge}-", 0, 1),  # was 500
        (f"bytes=0-{huge}", 0, SIZE - 1),  # was 400 "range must be requested"
        (f"bytes=-{huge}", 0, SIZE - 1),  # the same
        (f"bytes=10-{'0' * 4300}19", 10, 19),
    ):
        part = http.get(url, headers={"Range": wanted})
        assert part.status_code == 206, (wanted[:40], part.text[:300])
        assert part.content == data[first : last + 1], wanted[:40]
        assert part.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    for wanted in (f"bytes={huge}-", f"bytes={huge}-,-0"):  # was 500 (400 if alone)
        refused = http.get(url, headers={"Range": wanted})
        assert refused.status_code == 416, (wanted[:40], refused.text[:300])
        assert refused.headers["content-range"] == f"bytes */{SIZE}"
        assert "each range starts past its end or is -0" in refused.json()["message"]


def test_a_range_that_ends_before_it_starts_is_refused_at_any_length(http: httpx.Client) -> None:
    # Red team 71 on regress (rt-regress71h), found by reading rt-regress71d's `_to_the_end`:
    # a range whose last byte is before its first went to Starlette as sent, whose int()
    # refuses over 4,300 digits and skips that part: `bytes=0-1,<4,301 digits>-5` was a 206
    # of 0-1 alone where `bytes=0-1,9-5` is 400, and alone it was 400 "range must be
    # requested". One starting past the end with another in the file was 416 "each range
    # starts past its end", which the other belies. Each is 400, as `bytes=9-5` is.
    session_id = http.post("/sessions", json={}).json()["id"]
    url = f"/sessions/{session_id}/files/backwards.bin"
    assert http.put(url, content=os.urandom(SIZE)).status_code == 201
    huge = "9" * 4301
    # The refusal names the range (rt-regress71m): it said "Range header: start must be
    # less than end", Starlette's words of its end one past the last byte, which `5-5`, one
    # byte, breaks to the letter, and named no range of several.
    for wanted, part in (
        ("bytes=9-5", "9-5"),
        (f"bytes=0-1,{huge}-5", f"{huge}-5"),  # was 206 of 0-1
        (f"bytes={huge}-5", f"{huge}-5"),  # was 400 "range must be requested"
        (f"bytes=0-1, {SIZE * 2}-3", f"{SIZE * 2}-3"),  # was 416 "each range starts past..."
        (f"bytes=-0,{huge}-{'0' * 4400}", f"{huge}-{'0' * 4400}"),
        ("bytes=0-1,6-6,\t7-5 ,9-9", "7-5"),
    ):
        refused = http.get(url, headers={"Range": wanted})
        assert refused.status_code == 400, (wanted[:40], refused.text[:300])
        message = refused.json()["message"]
        assert message == (
            f"malformed Range header {wanted!r}: {part!r} ends before it starts; each range "
            "is first-last with last at least first (bytes=5-9, or bytes=5-5 for one byte). "
            "Nothing was sent"
        ), message[:100]
    # An If-Range other than the ETag, or over max_ranges ranges: the Range is ignored.
    stale = http.get(url, headers={"Range": "bytes=9-5", "If-Range": '"0"'})
    assert (stale.status_code, len(stale.content)) == (200, SIZE), stale.text[:300]
    many = http.get(url, headers={"Range": "bytes=" + ",".join(["0-0"] * 100 + ["9-5"])})
    assert (many.status_code, len(many.content)) == (200, SIZE), many.text[:300]
    # A second unit is no range, refused before any number is read.
    unit = http.get(url, headers={"Range": "bytes=bytes=9-5"}).json()["message"]
    assert unit.startswith("malformed Range header 'bytes=bytes=9-5': 'bytes=9-5' is not a")
    # A range of one byte, its numbers with leading zeros, is not backwards.
    one = http.get(url, headers={"Range": f"bytes=0-1,{'0' * 4400}5-5"})
    assert (one.status_code, one.headers["content-type"][:9]) == (206, "multipart"), one.text
