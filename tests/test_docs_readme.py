"""The README's commands, run as written, the way a reader of a fresh clone runs them.

Every shell block of README.md is accounted for:

- the first (install and serve; the whole test suite) is what .ci/run runs, read from the
  README itself; here it is only checked to be first and unchanged in shape;
- the configuration block runs in bash, in an empty directory standing for the clone, whose
  ``.venv/bin/app`` runs this interpreter's ``python -m app``, on a copy of the committed
  settings files (``APP_SETTINGS_DIR``) and outside the test sandbox, like a user's shell: it
  only reads, and every root it names lies in this test's temporary directory;
- the HTTP block runs in bash with the real ``curl`` against a live server; its first line,
  which names the development server's address and its committed token (both checked against
  the settings), is swapped for the live server's.

Each command's output is collected separately: a separator is printed after each one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.testing import LiveServer

PROJECT = Path(__file__).resolve().parent.parent
README = PROJECT / "README.md"
SEPARATOR = "\x1e"
SERVER_LINE = "TOKEN=dev-token-not-secret URL=http://127.0.0.1:8000"


def readme_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.DOTALL)


def commands(block: str) -> list[str]:
    """The block's commands, continuation lines kept; comment-only lines left out."""
    found: list[str] = []
    pending: list[str] = []
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending.append(line)
        if not line.rstrip().endswith("\\"):
            found.append("\n".join(pending))
            pending = []
    assert not pending, f"README block ends inside a command: {pending}"
    return found


def run_block(
    lines: list[str], cwd: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the commands in one bash, stopping at the first failure; one output per command."""
    script = "set -euo pipefail\n" + "".join(
        f"{line}\nprintf '\\n{SEPARATOR}\\n'\n" for line in lines
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    outputs = result.stdout.split(f"\n{SEPARATOR}\n")
    return result, [out.strip("\n") for out in outputs[: len(lines)]]


def config_block_text() -> str:
    return next(b for b in readme_blocks() if "app config" in b and "curl" not in b)


def http_block_text() -> str:
    return next(b for b in readme_blocks() if "curl" in b)


def config_block() -> list[str]:
    return commands(config_block_text())


def http_block() -> list[str]:
    return commands(http_block_text())


def test_every_readme_block_is_run_by_a_test_or_by_ci() -> None:
    blocks = readme_blocks()
    assert commands(blocks[0]) == [
        "bash scripts/serve",
        "bash scripts/test",
    ], "the README's first two commands are what .ci/run runs; keep them first"
    others = [b for b in blocks[1:] if b not in (config_block_text(), http_block_text())]
    assert others == [], f"README blocks that no test runs: {others}"


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """An empty directory standing for the reader's clone, with `.venv/bin/app`."""
    where = tmp_path / "clone"
    (where / ".venv" / "bin").mkdir(parents=True)
    app = where / ".venv" / "bin" / "app"
    app.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m app "$@"\n')
    app.chmod(0o755)
    return where


def test_the_readme_configuration_commands_run_as_written(clone: Path, tmp_path: Path) -> None:
    settings = tmp_path / "project"
    settings.mkdir()
    for name in ("settings.toml", ".secrets.toml"):
        shutil.copy(PROJECT / name, settings / name)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APP_", "DYNACONF_", "PYTEST_"))
        and not name.endswith("_FOR_DYNACONF")
    }
    env["APP_SETTINGS_DIR"] = str(settings)
    # The commands are part of this test run (their process tree says so): a sandbox
    # narrowed to this test's directory, where the copied settings put every root, and every
    # profile, make them behave as in a shell.
    env["PYTEST_APP_SANDBOX"] = str(tmp_path)
    env["PYTEST_APP_ALLOW_PROFILES"] = "development,testing,production"
    lines = config_block()
    result, out = run_block(lines, clone, env)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert len(out) == len(lines) == 5, lines
    config, config_all, doctor, _, production = out
    assert config.startswith("profile: development  (from default)"), config
    assert config_all.splitlines()[1].split() == ["key", "development", "testing", "production"]
    assert "ok for profile development" in doctor, doctor
    assert "only matter where profile production is served" in doctor, doctor
    assert production.startswith("profile: production  (from ENV_FOR_DYNACONF)"), production
    assert re.search(r"api_token\s+= \*{6} \(set, \d+ characters\)", production), production


def test_the_readme_server_line_names_the_development_server() -> None:
    from app.config import inspect_profiles

    development = inspect_profiles(environ={}).profiles["development"].values
    token, port = development["api_token"], development["port"]
    assert f"TOKEN={token} URL=http://127.0.0.1:{port}" == SERVER_LINE
    assert http_block()[0] == SERVER_LINE


def test_the_readme_http_commands_run_as_written(
    app_live_server: LiveServer, clone: Path, tmp_path: Path
) -> None:
    if shutil.which("curl") is None:
        reason = "curl is missing; install Debian's package: apt-get install curl"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the README's curl commands: {reason}", pytrace=False)
        pytest.skip(reason)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    lines = http_block()
    assert lines[0] == SERVER_LINE
    lines[0] = f"TOKEN={app_live_server.token} URL={app_live_server.url}"
    env = {**os.environ, "TMPDIR": str(scratch)}
    result, out = run_block(lines, clone, env)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    by_command = dict(zip(lines, out, strict=True))

    def output_of(fragment: str) -> str:
        [found] = [o for line, o in by_command.items() if fragment in line]
        return found

    posted = json.loads(output_of("-F "))
    assert (posted["name"], posted["size"]) == ("notes.txt", len("first notes\n")), posted
    replaced = json.loads(output_of("-X PUT"))
    assert (replaced["name"], replaced["size"]) == ("notes.txt", len("second version\n"))
    assert output_of('curl -s "$URL/sessions/$ID/files/notes.txt"') == "second version"
    listed = json.loads(output_of("sessions?limit"))
    # The line's comment names the answer's keys; it had left out "left_out".
    [comment] = [line.split("#", 1)[1] for line in lines if "sessions?limit" in line]
    assert re.findall(r'"(\w+)"', comment) == list(listed), (comment, list(listed))
    assert [s["title"] for s in listed["items"]] == ["first review"], listed
    session_id = listed["items"][0]["id"]
    assert json.loads(output_of("-X DELETE"))["trash"].endswith(session_id)
    # Nothing is left in the clone, and the scratch directory is gone.
    assert sorted(p.name for p in clone.iterdir()) == [".venv"]
    assert list(scratch.iterdir()) == []
