"""The OpenAPI document matches the server: shapes, statuses, methods (issue 9, items 13-14).

The in-process tests pin what the document promises; `test_schemathesis_finds_nothing`
runs schemathesis, with every check it has, against a real ``app serve`` (a serial run
starts it when collection ends: tests/head_start.py).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import head_start
import pytest
from starlette.testclient import TestClient

from app.testing import LiveServer

#: The server's document, asked of the first test's in-process app: the app makes the same
#: one for every test of this module (one configuration, no test changes a route).
_DOCUMENT: dict[str, Any] = {}


@pytest.fixture
def openapi(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``GET /openapi.json`` of `app_client`'s app, a copy of its own for each test: asked
    once per module, so the tests that read the document alone set up no app of their own
    (an app, a data root and a client each; bench/README.md, "perf-suite75")."""
    if not _DOCUMENT:
        client: TestClient = request.getfixturevalue("app_client")
        _DOCUMENT.update(client.get("/openapi.json").json())
    return copy.deepcopy(_DOCUMENT)


def operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_error_status_has_the_one_problem_shape(openapi: dict[str, Any]) -> None:
    for method, path, operation in operations(openapi):
        for status, response in operation["responses"].items():
            if status[0] not in "45":
                continue
            shape = "ValidationProblem" if status == "422" else "Problem"
            assert response["content"] == {
                "application/problem+json": {"schema": {"$ref": f"#/components/schemas/{shape}"}}
            }, (method, path, status)
    problem = openapi["components"]["schemas"]["Problem"]
    assert set(problem["required"]) >= {"code", "message", "title", "status", "detail"}
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


def test_every_status_the_routes_answer_is_documented(openapi: dict[str, Any]) -> None:
    documented = {
        (method, path): set(operation["responses"])
        for method, path, operation in operations(openapi)
    }
    session, files, file = (
        "/sessions/{session_id}",
        "/sessions/{session_id}/files",
        "/sessions/{session_id}/files/{name}",
    )
    assert documented["post", "/sessions"] >= {"201", "401", "413", "415", "422"}
    assert documented["get", "/sessions"] >= {"200", "400", "401", "422"}
    assert documented["get", session] >= {"200", "400", "401", "404"}
    assert documented["post", files] >= {"201", "400", "401", "404", "409", "413"}
    assert documented["put", file] >= {"200", "201", "400", "401", "404", "413"}
    assert documented["head", file] >= {"200", "400", "401", "404"}


def test_responses_have_real_schemas(openapi: dict[str, Any]) -> None:
    create = openapi["paths"]["/sessions"]["post"]
    created = create["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Session"
    }
    assert "getSession" in {link["operationId"] for link in created["links"].values()}
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SessionCreate"}
    page = openapi["paths"]["/sessions"]["get"]["responses"]["200"]
    assert page["content"]["application/json"]["schema"]["$ref"].endswith("/SessionPage")


def test_path_parameters_state_the_rules_the_server_applies(openapi: dict[str, Any]) -> None:
    get = openapi["paths"]["/sessions/{session_id}/files/{name}"]["get"]
    parameters = {p["name"]: p["schema"] for p in get["parameters"]}
    assert parameters["session_id"]["pattern"] == "^[0-9a-f]{32}$"
    assert "\\p{L}" in parameters["name"]["pattern"]
    assert parameters["name"]["maxLength"] == 255


def test_put_declares_its_raw_body(openapi: dict[str, Any]) -> None:
    put = openapi["paths"]["/sessions/{session_id}/files/{name}"]["put"]
    content = put["requestBody"]["content"]
    assert content == {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }


def test_uploads_declare_their_digest_fields_and_downloads_send_one(
    openapi: dict[str, Any],
) -> None:
    file, files = "/sessions/{session_id}/files/{name}", "/sessions/{session_id}/files"
    for upload in (openapi["paths"][file]["put"], openapi["paths"][files]["post"]):
        headers = {p["name"] for p in upload["parameters"] if p["in"] == "header"}
        assert headers == {"Repr-Digest", "Content-Digest"}
        assert "digest_mismatch" in upload["responses"]["400"]["description"]
    for method in ("get", "head"):
        responses = openapi["paths"][file][method]["responses"]
        assert "Repr-Digest" in responses["200"]["headers"]
        assert "Repr-Digest" in responses["206"]["headers"]


#: Bodies of POST /sessions written as text, so that the server reads the numbers as sent.
#: Each: whether the document and the server take it. An integral number written with an
#: exponent (1e300) is left out: JSON Schema calls it an integer (refused by the document),
#: while the server reads a double from the text and keeps it; the document is the stricter.
METADATA_BODIES = [
    ('{"metadata": {"n": 9007199254740991}}', True),
    ('{"metadata": {"n": -9007199254740991}}', True),
    ('{"metadata": {"n": 9007199254740992}}', False),
    ('{"metadata": {"n": -9007199254740992}}', False),
    ('{"metadata": {"n": 81175757553577415055966319971139584}}', False),
    ('{"metadata": {"a": [{"b": [1, 2, 18446744073709551616]}]}}', False),
    ('{"metadata": {"a": [{"b": [1.5, -0.25, 1.5e-300, null, true, "x"]}]}}', True),
    ('{"metadata": {"a": {"b": {"c": 9007199254740991}}}}', True),
]


@pytest.mark.parametrize(("body", "accepted"), METADATA_BODIES)
def test_the_document_and_the_server_agree_on_metadata_numbers(
    app_client: TestClient, openapi: dict[str, Any], body: str, accepted: bool
) -> None:
    """A fuzzer's finding (bench/fuzz.py): the document let metadata hold any number, and
    the server refused an integer beyond 2**53 with 422 (schemathesis' ST202)."""
    import json

    import jsonschema_rs

    schema = {"$ref": "#/components/schemas/SessionCreate", "components": openapi["components"]}
    assert jsonschema_rs.is_valid(schema, json.loads(body)) is accepted
    answer = app_client.post(
        "/sessions", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == (201 if accepted else 422), answer.text
    if not accepted:
        assert "past which a double skips integers" in answer.json()["message"]
        assert "send it as a string" in answer.json()["message"]


def test_a_405_names_every_method_the_path_allows(app_client: TestClient) -> None:
    response = app_client.patch("/sessions")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert response.headers["content-type"] == "application/problem+json"
    assert "allowed: GET, HEAD, POST" in response.json()["message"]
    sid = app_client.post("/sessions").json()["id"]
    file = app_client.post(f"/sessions/{sid}/files/x")
    assert file.headers["allow"] == "DELETE, GET, HEAD, PUT"


def test_head_on_a_download_sends_its_headers_without_the_bytes(app_client: TestClient) -> None:
    sid = app_client.post("/sessions").json()["id"]
    app_client.put(f"/sessions/{sid}/files/notes.txt", content=b"three oaks")
    head = app_client.head(f"/sessions/{sid}/files/notes.txt")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == "10"
    assert (
        head.headers["etag"] == app_client.get(f"/sessions/{sid}/files/notes.txt").headers["etag"]
    )
    assert app_client.head(f"/sessions/{sid}/files/missing").status_code == 404


def test_created_resources_say_where_they_are(app_client: TestClient) -> None:
    created = app_client.post("/sessions")
    sid = created.json()["id"]
    assert created.headers["location"] == f"/sessions/{sid}"
    put = app_client.put(f"/sessions/{sid}/files/a b.txt", content=b"x")
    assert put.headers["location"] == f"/sessions/{sid}/files/a%20b.txt"
    assert app_client.get(put.headers["location"]).content == b"x"


# --- schemathesis against a real server ------------------------------------------------------

#: What the suite runs: every check, every phase (examples, coverage, fuzzing, stateful), a
#: fixed seed so that a finding reproduces, and few examples per operation so that it stays
#: within a minute on a busy two-core machine. `bench/fuzz.py` runs the long version.
FUZZ_ARGS = [
    "--checks=all",
    "--max-examples=12",
    "--seed=20261201",
    "--generation-database=none",
    "--workers=1",
    "--no-color",
]


PROJECT = Path(__file__).resolve().parent.parent


#: What schemathesis' console script runs (``from schemathesis.cli import schemathesis``, its
#: name as ``sys.argv[0]``), with Python's cyclic garbage collector off. Hypothesis makes and
#: drops objects by the million while it generates; reference counting frees them, and the
#: collector's passes cost about 8% of the fuzzer's CPU (5.95 against 5.44 s, medians of three
#: alternated pairs; peak RSS 290 MB either way; the same output but for the port and the
#: timings: bench/README.md, branch perf-suite73b), as they did of `mkdocs build`'s
#: (tests/docs_site.py). The same checks, examples and seed: schemathesis has no switch for
#: it, nor Python a variable.
WITHOUT_GC = (
    "import gc, sys; gc.disable(); sys.argv[0] = {script!r}; "
    "from schemathesis.cli import schemathesis; sys.exit(schemathesis())"
)


def schemathesis_command(server: LiveServer, *extra: str) -> list[str]:
    # Its own environment (see the `fuzz` extra in pyproject.toml), or one on PATH.
    cli = PROJECT / ".venv-fuzz" / "bin" / "schemathesis"
    found = str(cli) if cli.is_file() else shutil.which("schemathesis")
    python = cli.with_name("python")
    if found is None:
        pytest.fail(
            f"schemathesis is not installed: {cli} is missing. `bash scripts/test` installs it "
            "(python3 -m venv .venv-fuzz && .venv-fuzz/bin/pip install 'schemathesis>=4.32,<5')",
            pytrace=False,
        )
    auth = f"Authorization: Bearer {server.token}"
    config = Path(__file__).with_name("schemathesis.toml")
    # The environment's own interpreter runs its entry point without the collector; one on
    # PATH runs as installed.
    start = [str(python), "-c", WITHOUT_GC.format(script=found)] if found == str(cli) else [found]
    return [
        *start,
        f"--config-file={config}",
        "run",
        f"{server.url}/openapi.json",
        f"--header={auth}",
        *extra,
    ]


def fuzz(
    server: LiveServer, where: Path, environ: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """schemathesis run against `server`, from `where` (its reports and caches stay out of
    the project), in `environ` without schemathesis' own variables."""
    env = {k: v for k, v in environ.items() if not k.startswith("SCHEMATHESIS_")}
    return subprocess.run(
        schemathesis_command(server, *FUZZ_ARGS),
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def fuzz_a_server_of_its_own(
    factory: pytest.TempPathFactory, environ: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`fuzz` against a server started as `app_live_server` starts a local one (``app serve
    --port 0`` on a fresh root, found by its published port): what a serial run starts
    when collection ends (tests/head_start.py), next to the tests that run first."""
    from app.config import load
    from app.testing import start_server, stop_server

    base = factory.mktemp("schemathesis")
    root, log = base / "live-data", base / "live-server.log"
    env = {**environ, "APP_HOST": "127.0.0.1", "APP_DATA_ROOT": str(root)}
    config = load("testing", environ=env)
    process, url = start_server(env, root, log)
    try:
        return fuzz(
            LiveServer(url, root, process.pid, config.api_token, log, config), base, environ
        )
    finally:
        stop_server(process)


def test_schemathesis_finds_nothing(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # The run a serial session started when collection ended, or one against app_live_server.
    result = head_start.result(
        request.config,
        "schemathesis",
        lambda: fuzz(request.getfixturevalue("app_live_server"), tmp_path, dict(os.environ)),
    )
    assert result.returncode == 0, (
        f"schemathesis found something:\n{result.stdout}\n{result.stderr}"
    )
    # Every phase ran, the stateful one along the document's links included.
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in result.stdout, result.stdout


def test_a_bad_range_is_answered_in_the_problem_shape(app_client: TestClient) -> None:
    sid = app_client.post("/sessions").json()["id"]
    app_client.put(f"/sessions/{sid}/files/r", content=b"0123456789")
    malformed = app_client.get(f"/sessions/{sid}/files/r", headers={"Range": "bytes=x-y"})
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == "application/problem+json"
    assert "Range" in malformed.json()["message"]
    beyond = app_client.get(f"/sessions/{sid}/files/r", headers={"Range": "bytes=50-60"})
    assert beyond.status_code == 416
    assert beyond.headers["content-type"] == "application/problem+json"
    assert beyond.headers["content-range"] == "bytes */10"
    assert beyond.json()["code"] == "range_not_satisfiable"
    assert (
        app_client.get(f"/sessions/{sid}/files/r", headers={"Range": "bytes=2-4"}).content == b"234"
    )
