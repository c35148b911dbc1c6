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
