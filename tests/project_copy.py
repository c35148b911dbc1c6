"""The project's settings, copied, for tests whose inner runs must not see the real roots."""

from __future__ import annotations

from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def copy_project_settings(directory: Path) -> Path:
    """The project's settings files, copied into ``directory``; relative roots land there."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("settings.toml", ".secrets.toml"):
        (directory / name).write_bytes((PROJECT / name).read_bytes())
    return directory


#: A session created in a root of the profile the environment names.
CREATE_SESSION = (
    "from app.config import load\n"
    "from app.storage import open_storage\n"
    "with open_storage(load(serving=False), writer=True) as store:\n"
    "    store.create_session('a review', {})\n"
)


def stopped_production(directory: Path) -> tuple[Path, Path, str, list[str]]:
    """The project's settings copied into ``directory/settings``, with a stopped production
    root there that holds one session: the settings, that root, production's token (a new
    one), and the root's sessions as they are."""
    import secrets

    import forked_app
    from test_server_e2e import app_env

    settings = copy_project_settings(directory / "settings")
    production = settings / "data" / "production"
    token = secrets.token_urlsafe(32)
    forked_app.run_c(CREATE_SESSION, app_env(production, profile="production", APP_API_TOKEN=token))
    sessions = sorted(p.name for p in (production / "sessions").iterdir())
    assert sessions
    return settings, production, token, sessions


def assert_untouched(production: Path, sessions: list[str], said: str = "") -> None:
    """That `production` (`stopped_production`'s root) still holds `sessions`, and nothing
    was moved to its trash."""
    assert sorted(p.name for p in (production / "sessions").iterdir()) == sessions, said
    trash = production / ".trash"
    assert not trash.exists() or not any(trash.iterdir()), said


def run_inner(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    """An inner run (a pytest, a unittest) of `argv` in `cwd`, to its end: its output, which
    the assertion that it passed shows."""
    import subprocess

    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def inner_project(directory: Path, name: str, text: str) -> Path:
    """``directory/project``, made, with one test file `name` that holds `text`."""
    project = directory / "project"
    project.mkdir()
    (project / name).write_text(text)
    return project


def stopped_then_live(
    script: str, settings: Path, production: Path, token: str, prefix: tuple[str, ...] = ()
) -> dict:
    """`script` (argv: `settings`, `production`) run outside any run (PID 1 of a PID
    namespace with its own /proc, in a private mount namespace; behind `prefix`, such as a
    ``setpriv``), beside `stopped_production`'s root stopped until the script prints
    ``STOPPED``, then beside a live server on it (its token `token`) until the script ends:
    what it printed after ``RESULTS``, and the server's pid as ``"server"``."""
    import json
    import os
    import subprocess
    import sys

    import forked_app
    import pytest
    from test_server_e2e import app_env

    from app.testing import stop_server

    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": str(settings), "APP_API_TOKEN": token}
    outside = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "-p", "-f", "--mount-proc", *prefix,
         sys.executable, "-c", script, str(settings), str(production)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert outside.stdout is not None
    if outside.stdout.readline() != "STOPPED\n":
        pytest.fail("".join(outside.communicate()))
    served = app_env(production, profile="production", APP_API_TOKEN=token)
    server, _ = forked_app.start_server(served, production, settings.parent / "server.log")
    try:
        out, err = outside.communicate("go\n", timeout=120)
        holder = json.loads((production / ".server.lock").read_text())
    finally:
        stop_server(server)  # type: ignore[arg-type]
    assert holder["pid"] == server.pid, holder
    found = [line for line in out.splitlines() if line.startswith("RESULTS ")]
    assert found, out + err
    return {**json.loads(found[0].removeprefix("RESULTS ")), "server": server.pid}
