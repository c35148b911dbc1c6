"""Red team 71 on regress, round d: what the merge of rt-http71 changed.

A session create refused partway removes its staging directory ``sessions/.new-<id>`` by
an unlink and an rmdir (`app.store.sessions._Staging.remove`), which open no descriptor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# One process holds the root as a server does; an audit hook makes the create's staging
# directory a link to another session's directory, at its session.json's open (a stage
# refused out of descriptors) or at its rename (a step after the syncs refused), and
# refuses that step, as a full file table or a read-only remount would.
_SWAP_AND_REFUSE = r"""
import errno, json, os, sys

from app.config import load
from app.storage import open_storage

state = {"at": None, "sessions": None}


def hook(event, args):
    at, sessions = state["at"], state["sessions"]
    if at is None:
        return
    if event == "open" and at == "stage" and "/.new-" in str(args[0]):
        name = str(args[0]).split("/")[-2]
    elif event == "os.rename" and at == "rename" and str(args[0]).startswith(".new-"):
        name = str(args[0])
    else:
        return
    state["at"] = None
    os.rename(f"{sessions}/{name}", f"{sessions}/../moved-{name}")
    os.symlink(state["victim"], f"{sessions}/{name}")
    raise OSError(errno.EMFILE, "Too many open files (the test's)")


sys.addaudithook(hook)
said = {}
with open_storage(load(), writer=True, kind="tests", wanted="use it") as store:
    state["sessions"] = str(store.sessions_dir)
    for at in ("stage", "rename"):
        victim = store.create_session(f"victim of the {at}")["id"]
        state.update(at=at, victim=victim)
        try:
            store.create_session("swapped")
        except Exception as error:
            answer = f"{type(error).__name__}: {error}"
        else:
            answer = "created"
        kept = os.path.exists(f"{store.sessions_dir}/{victim}/session.json")
        said[at] = [answer, kept, store.get_session(victim)["title"] if kept else None]
print(json.dumps(said))
"""


def test_a_staging_directory_made_a_link_has_no_session_json_removed_through_it(
    tmp_path: Path,
) -> None:
    # Found by reading rt-http71's `_Staging.remove`: it unlinked `.new-<id>/session.json`
    # by its path, which follows `.new-<id>` made a link, where `remove_tree` before it
    # refused a link. A create refused at its stage (out of descriptors, the case that
    # change was for) or at its rename, with its staging directory made a link to another
    # session's directory meanwhile, unlinked that session's session.json: the session was
    # gone from every listing, its files unreachable.
    run = subprocess.run(
        [sys.executable, "-c", _SWAP_AND_REFUSE],
        capture_output=True,
        text=True,
        env={**os.environ, "APP_DATA_ROOT": str(tmp_path / "app-data")},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    said = json.loads(run.stdout)
    for at in ("stage", "rename"):
        answer, kept, title = said[at]
        assert "Too many open files" in answer, (at, answer)
        assert (kept, title) == (True, f"victim of the {at}"), (at, said)
