"""Red team 69 on regress, the fifth round (branch rt-regress69e): a file's 404 and the
restore command it names."""

from __future__ import annotations

import re
import shlex

from click.testing import CliRunner
from starlette.testclient import TestClient

from app.cli import cli
from app.config import Config
from app.server import create_app
from app.storage import open_storage


def test_a_file_s_404_does_not_name_an_older_entry_past_one_that_lost_its_bytes(
    app_config: Config,
) -> None:
    """The file's newest entry lost its bytes (removed from outside the app): the 404 read
    past it and named the entry before it as "its newest version", with `app sessions
    restore <id> --file a.txt`, which then failed (exit 65: that newest copy lost its
    bytes). It names no entry now; the restore's own refusal says what to do."""
    headers = {"Authorization": f"Bearer {app_config.api_token}"}
    with (
        open_storage(app_config, writer=True, kind="tests", wanted="run a test on it") as store,
        TestClient(create_app(store, app_config), headers=headers) as client,
    ):
        sid = client.post("/sessions", json={"title": "looked"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/a.txt", content=b"one").status_code == 201
        first = client.delete(f"/sessions/{sid}/files/a.txt").json()["trash"]
        assert client.put(f"/sessions/{sid}/files/a.txt", content=b"two").status_code == 201
        second = client.delete(f"/sessions/{sid}/files/a.txt").json()["trash"]
        said = client.get(f"/sessions/{sid}/files/a.txt").json()["message"]
        assert f"(entry {second};" in said, said  # the index read, then the hand
        (store.trash.path / second / "a.txt").unlink()
        said = client.get(f"/sessions/{sid}/files/a.txt").json()["message"]
    assert first not in said, said
    assert said == f"session '{sid}' has no file 'a.txt'; GET /sessions/{sid}/files lists its files"
    assert re.search(r"`app sessions restore", said) is None
    # The restore, as a user would run it from the earlier hint, refuses and names the
    # entry before it with its --entry.
    done = CliRunner().invoke(cli, shlex.split(f"sessions restore {sid} --file a.txt"))
    assert done.exit_code == 65, done.output
    assert f"entry {second}, has lost its bytes" in done.output
    assert f"--entry {first}`" in done.output
