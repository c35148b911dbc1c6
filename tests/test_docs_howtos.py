"""The how-to guides that need only a clone, run as written, read from the pages themselves.

docs/how-to/switch-profiles.md and docs/how-to/add-profile.md are run the way
tests/test_docs_readme.py runs the README's configuration block: every ``$`` line of their
console blocks, in order, in one bash, in a directory standing for the reader's clone (a copy
of the committed settings files, with ``.venv/bin/app`` running this interpreter's
``python -m app``), with none of the test's ``APP_``, ``DYNACONF_`` or ``PYTEST_`` variables
but inside its sandbox, so every root the commands name lies in this test's directory.
add-profile.md's ``toml`` block is appended to the copied ``settings.toml``, as its first step
says.

An ``app serve`` line runs in the background with the page's port swapped for a free one; it
passes once the server listens and then stops with exit 0 on SIGINT (Ctrl-C), as a reader
would stop it. Each command's output is collected separately.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from engines import free_ports
from test_docs_pages import console_commands
from test_docs_readme import run_block

PROJECT = Path(__file__).resolve().parent.parent
HOW_TO = PROJECT / "docs" / "how-to"


def page_commands(page: str) -> list[str]:
    return console_commands((HOW_TO / page).read_text(encoding="utf-8"))


def page_toml(page: str) -> list[str]:
    text = (HOW_TO / page).read_text(encoding="utf-8")
    return [
        "\n".join(line.strip() for line in block.splitlines())
        for block in re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    ]


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A copy of the committed settings with `.venv/bin/app`: the reader's project directory."""
    where = tmp_path / "clone"
    (where / ".venv" / "bin").mkdir(parents=True)
    for name in ("settings.toml", ".secrets.toml"):
        shutil.copy(PROJECT / name, where / name)
    app = where / ".venv" / "bin" / "app"
    app.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m app "$@"\n')
    app.chmod(0o755)
    return where


def shell_env(clone: Path, sandbox: Path, profiles: str) -> dict[str, str]:
    """A reader's shell: none of the test's APP_, DYNACONF_ or PYTEST_ variables."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APP_", "DYNACONF_", "PYTEST_"))
        and not name.endswith("_FOR_DYNACONF")
    }
    env["APP_SETTINGS_DIR"] = str(clone)
    # As in test_docs_readme.py: the commands belong to this test run (their process tree says
    # so); a sandbox narrowed to this test's directory, and every profile allowed, make them
    # behave as in a shell.
    env["PYTEST_APP_SANDBOX"] = str(sandbox)
    env["PYTEST_APP_ALLOW_PROFILES"] = profiles
    return env


def served(line: str, page_port: str, port: int, log: Path) -> str:
    """`line`, an `app serve`, run in the background until it listens, then stopped by SIGINT."""
    # Job control on: a background job of a script otherwise starts with SIGINT ignored.
    return (
        "set -m\n"
        f"{line.replace(page_port, str(port))} >{log} 2>&1 &\n"
        "server=$!\n"
        "for _ in $(seq 300); do\n"
        f"  (: </dev/tcp/127.0.0.1/{port}) 2>/dev/null && break\n"
        '  kill -0 "$server" 2>/dev/null || break\n'
        "  sleep 0.1\n"
        "done\n"
        'kill -INT "$server" 2>/dev/null || true\n'
        'wait "$server"\n'
        "set +m"
    )


def run_page(
    lines: list[str], clone: Path, env: dict[str, str], page_port: str, port: int, log: Path
) -> list[str]:
    script = [served(ln, page_port, port, log) if " serve" in ln else ln for ln in lines]
    result, out = run_block(script, clone, env)
    assert result.returncode == 0, (
        f"{result.stdout}\n{result.stderr}\n{log.read_text() if log.exists() else ''}"
    )
    assert len(out) == len(lines), out
    assert f"on http://127.0.0.1:{port}" in log.read_text(), log.read_text()
    return out


def test_switch_profiles_runs_as_written(clone: Path, tmp_path: Path) -> None:
    lines = page_commands("switch-profiles.md")
    assert lines == [
        ".venv/bin/app config --profile testing",
        ".venv/bin/app status --profile production",
        "export ENV_FOR_DYNACONF=testing",
        ".venv/bin/app config",
        ".venv/bin/app config --profile development",
        "APP_PORT=8003 .venv/bin/app serve",
    ], "the page's commands changed: check what this test asserts about each"
    env = shell_env(clone, tmp_path, "development,testing,production")
    log = tmp_path / "serve.log"
    [port] = free_ports(1)
    out = run_page(lines, clone, env, "8003", port, log)
    assert out[0].startswith("profile: testing  (from --profile)"), out[0]
    assert out[1].startswith("profile: production\n"), out[1]
    assert out[3].startswith("profile: testing  (from ENV_FOR_DYNACONF)"), out[3]
    assert out[4].startswith("profile: development  (from --profile)"), out[4]
    # The serve line ran after the export: --profile was not given, so ENV_FOR_DYNACONF chose.
    assert "serving profile testing" in log.read_text(), log.read_text()

    # What the page says of production: `app config` exits 78 until APP_API_TOKEN is set.
    result, out = run_block(["ENV_FOR_DYNACONF=production .venv/bin/app config"], clone, env)
    assert result.returncode == 78, result.stdout + result.stderr
    assert "set APP_API_TOKEN" in result.stderr, result.stderr


def test_add_profile_runs_as_written(clone: Path, tmp_path: Path) -> None:
    [section] = page_toml("add-profile.md")
    assert section.startswith("[staging]\n") and "port = 8090" in section, section
    [port] = free_ports(1)
    with (clone / "settings.toml").open("a", encoding="utf-8") as settings:
        settings.write("\n" + section)
    lines = page_commands("add-profile.md")
    env = shell_env(clone, tmp_path, "development,testing,production,staging")
    log = tmp_path / "serve.log"
    settings_text = (clone / "settings.toml").read_text()
    (clone / "settings.toml").write_text(settings_text.replace("port = 8090", f"port = {port}"))
    out = run_page(lines, clone, env, "8090", port, log)
    by_line = dict(zip(lines, out, strict=True))
    doctor = by_line[".venv/bin/app doctor"]
    assert "profile staging: data_root = " in doctor, doctor
    assert "ok for profile development" in doctor, doctor
    config_all = by_line[".venv/bin/app config --all"]
    assert config_all.splitlines()[1].split()[-1] == "staging", config_all
    assert "serving profile staging" in log.read_text(), log.read_text()
    stamp = (clone / "data" / "staging" / ".app-profile.json").read_text()
    assert '"profile": "staging"' in stamp, stamp
