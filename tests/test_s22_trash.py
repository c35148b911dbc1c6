"""A trash entry whose ``trash.json`` this process may not read (mode 000, another user's).

One such entry failed the whole trash listing (``app sessions list --trash``, and
``POST /trash/empty`` with a 503). The entry is made unreadable for real: a child process
makes the trash, sets the manifest's mode to 000, then gives up its capabilities (root
without them is refused by a file's mode like any user), and lists, checks, restores and
empties the trash on the real filesystem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_redteam_s21_store_full import DROP_CAPABILITIES

CHILD = (
    r"""
import ctypes, json, os, sys

from click.testing import CliRunner

from app.cli import cli
from app.config import load
from app.storage import open_storage


"""
    + DROP_CAPABILITIES
    + r"""


config = load()
with open_storage(config, writer=True, kind="tests", wanted="fill the trash") as store:
    ids = {}
    for title in ("kept", "unreadable"):
        ids[title] = store.create_session(title)["id"]
        store.put_file(ids[title], "a.txt", b"bytes")
        store.delete_session(ids[title])
    names = {entry.session_id: entry.name for entry in store.list_trash()}
trash = config.data_root / ".trash"
os.chmod(trash / names[ids["unreadable"]] / "trash.json", 0)
drop_capabilities()
said = {"ids": ids, "names": names}
listed = CliRunner().invoke(cli, ["sessions", "list", "--trash", "--json"])
said["cli"] = [listed.exit_code, listed.output]
with open_storage(config, writer=True, kind="tests", wanted="use the trash") as store:
    said["listed"] = [[e.name, e.reason] for e in store.list_trash()]
    said["check"] = [[f.problem, f.target, f.repair] for f in store.check().findings]
    try:
        store.restore(ids["unreadable"])
    except Exception as error:
        said["restore"] = [type(error).__name__, str(error)]
    said["restored"] = store.restore(ids["kept"])["files"][0]["name"]
    said["emptied"] = [entry.name for entry in store.empty_trash()]
said["left"] = sorted(os.listdir(trash))
print(json.dumps(said))
"""
)


def test_an_unreadable_trash_manifest_is_listed_by_name_reported_and_emptied(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "APP_DATA_ROOT": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.splitlines()[-1])
    kept, lost = said["names"][said["ids"]["kept"]], said["names"][said["ids"]["unreadable"]]

    # The listing: the rest as it is, the unreadable entry by its name.
    assert sorted(said["listed"]) == sorted([[kept, "delete"], [lost, "unreadable"]])
    code, output = said["cli"]
    assert code == 0, output
    assert {json.loads(line)["name"] for line in output.splitlines()} == {kept, lost}

    # `check` names it, and what resolves it.
    ((problem, target, repair),) = said["check"]
    assert (problem, target) == ("permission-denied", f".trash/{lost}/trash.json")
    assert "chmod u+rw" in repair

    # A restore it may hold is refused, naming the entry; another one is restored.
    name, message = said["restore"]
    assert name == "PermissionDeniedStorageError"
    assert f"cannot restore session {said['ids']['unreadable']}: trash entry {lost}" in message
    assert "trash.json may not be read by this process" in message
    assert "nothing was changed" in message and "chown" in message
    assert said["restored"] == "a.txt"

    # Emptying removes it like any other entry.
    assert said["emptied"] == [lost]
    assert said["left"] == []
