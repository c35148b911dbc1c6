"""Example tests that use the app's pytest fixtures (shown in the docs, run by the suite).

tests/test_docs_examples.py imports these functions, so pytest runs them like any other test:
the page cannot show an example that does not pass.
"""

from __future__ import annotations

from app.config import Config
from app.store import Store


def test_the_testing_profile_is_forced(app_config: Config) -> None:
    # Whatever the shell exported, a test sees the testing profile,
    # and its data root lies inside the run's sandbox.
    assert app_config.profile == "testing"
    assert app_config.sandbox is not None
    assert app_config.data_root.is_relative_to(app_config.sandbox)


# --8<-- [start:restore]
def test_a_deleted_session_can_be_restored(app_store: Store) -> None:
    session = app_store.create_session("site visit", {"parcel": "A-17"})
    app_store.put_file(session["id"], "notes.txt", b"three oaks, one fence post\n")

    entry = app_store.delete_session(session["id"])  # moved to .trash/, not removed
    assert [e.session_id for e in app_store.list_trash()] == [session["id"]]
    assert entry.kind == "session"

    restored = app_store.restore(session["id"])
    assert [f["name"] for f in restored["files"]] == ["notes.txt"]
    path, _ = app_store.file_path(session["id"], "notes.txt")
    assert path.read_bytes() == b"three oaks, one fence post\n"


# --8<-- [end:restore]


# --8<-- [start:restore_entry]
def test_an_older_version_comes_back_by_its_trash_entry(app_store: Store) -> None:
    session_id = app_store.create_session("drafts")["id"]
    app_store.put_file(session_id, "plan.txt", b"first draft\n")
    app_store.put_file(session_id, "plan.txt", b"second draft\n", replace=True)
    app_store.delete_file(session_id, "plan.txt")

    # Oldest first: the first draft (moved aside by the replace), then the second.
    first, second = sorted(app_store.list_trash(), key=lambda entry: entry.deleted_at)
    assert (first.reason, second.reason) == ("replace", "delete")
    app_store.restore(session_id, file="plan.txt", entry=first.name)
    path, _ = app_store.file_path(session_id, "plan.txt")
    assert path.read_bytes() == b"first draft\n"  # the second draft stays in the trash


# --8<-- [end:restore_entry]


def test_upload_and_download_over_http(app_client) -> None:  # type: ignore[no-untyped-def]
    created = app_client.post("/sessions", json={"title": "upload example"})
    assert created.status_code == 201
    session_id = created.json()["id"]

    upload = app_client.post(
        f"/sessions/{session_id}/files",
        files={"file": ("report.txt", b"hello\n", "text/plain")},
    )
    assert upload.status_code == 201
    assert upload.json()["name"] == "report.txt"

    download = app_client.get(f"/sessions/{session_id}/files/report.txt")
    assert download.content == b"hello\n"


# --8<-- [start:digest]
def test_an_upload_is_stored_only_if_its_digest_matches(app_client) -> None:  # type: ignore[no-untyped-def]
    import base64
    import hashlib

    def repr_digest(body: bytes) -> str:  # RFC 9530: sha-256=:<base64 of the SHA-256>:
        return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"

    session_id = app_client.post("/sessions", json={}).json()["id"]
    url = f"/sessions/{session_id}/files/notes.txt"
    sent = b"three oaks, two fence posts\n"
    stored = app_client.put(url, content=sent, headers={"Repr-Digest": repr_digest(sent)})
    assert stored.status_code == 201

    # The client hashed `sent`, but the bytes changed on the way: nothing is stored.
    damaged = sent.replace(b"two", b"ten")
    refused = app_client.put(url, content=damaged, headers={"Repr-Digest": repr_digest(sent)})
    assert refused.status_code == 400
    assert refused.json()["code"] == "digest_mismatch"
    assert refused.headers["Want-Repr-Digest"] == "sha-256=10"

    # The old bytes are still the file, and the download says what they hash to.
    download = app_client.get(url)
    assert download.content == sent
    assert download.headers["Repr-Digest"] == repr_digest(sent)


# --8<-- [end:digest]
