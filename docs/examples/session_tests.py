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
