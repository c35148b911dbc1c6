"""`app config` and `app doctor` as a user runs them: the real entry point, in a subprocess.

Each subprocess gets an explicit environment: a copy of this process's (so it inherits the
pytest sandbox marker and obeys it) with the variables the test is about. A subprocess costs
about 0.2 s, so each test asserts everything one run can show. ``python -m app`` runs through
`forked_app.run`: forked from the run's warm interpreter (a process of its own, ``app``'s
``__main__`` run afresh in it, its own exit status and output) when its environment differs
from the run's only in the variables the app reads as it runs (``APP_*``,
``ENV_FOR_DYNACONF``), and started plainly otherwise (a ``DYNACONF_*`` variable, which
dynaconf reads as it is imported, or one of the test's own, ``PROD_ROOT``); what is about the
interpreter's start stays a plain start: the console script (``script=True``) and the two
checks of what a start imports.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import forked_app
import pytest

from app.config import ALLOW_PROFILES_ENV, SANDBOX_ENV, SETTINGS_DIR_ENV

PROJECT = Path(__file__).resolve().parent.parent
KNOWN = "development, testing, production"


def console_script() -> str:
    """The ``app`` script installed next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "app"
    found = str(beside) if beside.is_file() else shutil.which("app")
    assert found, "the `app` console script is not installed"
    return found


@pytest.fixture
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """This process's environment without app or dynaconf variables, inside the sandbox."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APP_", "DYNACONF_"))
        and not (name.endswith("_FOR_DYNACONF") and name != "ENV_FOR_DYNACONF")
        and name != ALLOW_PROFILES_ENV
    }
    # The app's pytest plugin publishes the sandbox; emulate it if the plugin is not active.
    env.setdefault(SANDBOX_ENV, str(tmp_path_factory.getbasetemp().resolve()))
    env["ENV_FOR_DYNACONF"] = "testing"
    return env


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project's own settings files, in a directory under the sandbox.

    Their relative roots (``data/<profile>``) then resolve under ``tmp_path``, so the sandbox
    keeps them as configured and the test sees the real resolution.
    """
    where = tmp_path / "project"
    where.mkdir()
    for name in ("settings.toml", ".secrets.toml"):
        shutil.copy(PROJECT / name, where / name)
    return where


def run(
    *args: str,
    env: Mapping[str, str],
    cwd: Path | None = None,
    script: bool = False,
) -> subprocess.CompletedProcess[str]:
    if not script:  # forked when it can be (the module's docstring): ~0.15 s of CPU less
        return forked_app.run(dict(env), list(args), cwd)
    return subprocess.run(
        [console_script(), *args], env=dict(env), cwd=cwd, capture_output=True, text=True,
        check=False,
    )  # fmt: skip


def test_a_typo_profile_exits_78_and_lists_the_known_profiles(base_env: dict[str, str]) -> None:
    result = run("config", env={**base_env, "ENV_FOR_DYNACONF": "prod"}, script=True)
    assert result.returncode == 78, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: unknown profile 'prod' (from ENV_FOR_DYNACONF)")
    assert f"known profiles: {KNOWN}" in result.stderr


def test_config_all_shows_three_distinct_absolute_roots_and_production_without_token(
    base_env: dict[str, str], project_copy: Path
) -> None:
    env = {**base_env, SETTINGS_DIR_ENV: str(project_copy)}
    result = run("config", "--all", env=env)
    assert result.returncode == 0, result.stderr
    roots = [project_copy / "data" / name for name in ("development", "testing", "production")]
    header, data_root_row = result.stdout.splitlines()[1:3]
    assert header.split() == ["key", "development", "testing", "production"]
    assert data_root_row.startswith("data_root")
    positions = [data_root_row.index(f"{root}  (settings.toml [") for root in roots]
    assert positions == sorted(positions)
    token_row = next(line for line in result.stdout.splitlines() if line.startswith("api_token"))
    assert token_row.rstrip().endswith("(not set)  (built-in default)")
    assert "not-secret" not in result.stdout


def test_config_all_json_gives_every_profile_its_own_root(
    base_env: dict[str, str], project_copy: Path
) -> None:
    result = run("config", "--all", "--json", env={**base_env, SETTINGS_DIR_ENV: str(project_copy)})
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    roots = {name: p["data_root"] for name, p in payload["profiles"].items()}
    assert roots == {
        name: str(project_copy / "data" / name) for name in ("development", "testing", "production")
    }
    assert payload["profiles"]["production"]["values"]["api_token"] == "(not set)"
    assert payload["problems"] == []


def test_config_profile_production_without_a_token_exits_78_naming_app_api_token(
    base_env: dict[str, str], project_copy: Path
) -> None:
    env = {**base_env, SETTINGS_DIR_ENV: str(project_copy), ALLOW_PROFILES_ENV: "production"}
    result = run("config", "--profile", "production", env=env)
    assert result.returncode == 78, result.stderr
    assert "APP_API_TOKEN" in result.stderr
    assert result.stdout == ""


def test_profile_production_before_the_command_without_a_token_exits_78(
    base_env: dict[str, str], project_copy: Path
) -> None:
    env = {**base_env, SETTINGS_DIR_ENV: str(project_copy), ALLOW_PROFILES_ENV: "production"}
    result = run("--profile", "production", "config", "--json", env=env)
    assert result.returncode == 78, result.stderr
    assert result.stderr.startswith("error: profile 'production': api_token is not set")
    assert "APP_API_TOKEN" in result.stderr
    assert result.stdout == ""


def test_the_profile_after_the_command_name_wins_over_the_one_before_it(
    base_env: dict[str, str], project_copy: Path
) -> None:
    env = {**base_env, SETTINGS_DIR_ENV: str(project_copy), ALLOW_PROFILES_ENV: "production"}
    for args in (
        ["--profile", "production", "config", "--profile", "testing", "--json"],
        ["config", "--profile", "testing", "--json"],
        ["--profile", "testing", "config", "--json"],
    ):
        result = run(*args, env=env)
        assert result.returncode == 0, (args, result.stderr)
        payload = json.loads(result.stdout)
        assert (payload["profile"], payload["profile_source"]) == ("testing", "--profile")


def test_config_json_is_one_object_on_stdout_and_warnings_go_to_stderr(
    base_env: dict[str, str], project_copy: Path, tmp_path: Path
) -> None:
    env = {**base_env, SETTINGS_DIR_ENV: str(project_copy), "APP_PORTT": "1"}
    result = run("config", "--json", env=env)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["profile"] == "testing"
    assert payload["data_root"] == str(project_copy / "data" / "testing")
    assert payload["values"]["api_token"] == "****** (set, 24 characters)"
    assert payload["sources"]["data_root"] == "settings.toml [testing]"
    assert "warning: environment variable APP_PORTT is not an app setting" in result.stderr
    assert "did you mean APP_PORT?" in result.stderr


def test_the_root_does_not_depend_on_the_working_directory(
    base_env: dict[str, str], project_copy: Path, tmp_path: Path
) -> None:
    env = {**base_env, SETTINGS_DIR_ENV: str(project_copy)}
    seen = []
    for cwd in (tmp_path, project_copy / "data"):
        cwd.mkdir(exist_ok=True)
        result = run("config", "--json", env=env, cwd=cwd)
        assert result.returncode == 0, result.stderr
        seen.append(json.loads(result.stdout)["data_root"])
    assert seen == [str(project_copy / "data" / "testing")] * 2


def test_doctor_lists_every_problem_and_exits_78(base_env: dict[str, str], tmp_path: Path) -> None:
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(
        "[development]\ndata_root = 'data/dev'\ndata_rot = 'typo'\n"
        "[testing]\ndata_root = 'data/shared'\n"
        "[production]\ndata_root = 'data/shared'\n"
    )
    result = run("doctor", env={**base_env, SETTINGS_DIR_ENV: str(settings)}, script=True)
    assert result.returncode == 78, result.stderr
    assert "2 problem(s):" in result.stderr
    assert "data_rot = 'typo'" in result.stderr
    assert "did you mean 'data_root'?" in result.stderr
    assert "profiles 'testing' and 'production' share the same data root" in result.stderr
    assert f"profile development: data_root = {settings / 'data' / 'dev'}" in result.stdout


def test_doctor_on_the_project_settings_names_production_s_missing_token_for_serving(
    base_env: dict[str, str],
) -> None:
    # `app config --all` shows production's token as not set; doctor said "ok: every profile
    # is valid". It now lists it as a problem of where production is served, and exits 0:
    # the token is never in a development shell, by design.
    result = run("doctor", env={**base_env, "APP_API_TOKEN": "x" * 40})  # testing's own
    assert result.returncode == 0, result.stderr
    assert "ok: every profile is valid" not in result.stdout
    assert "ok for profile testing: the settings are valid" in result.stdout
    assert (
        "1 problem(s) that only matter where profile production is served (its environment "
        "supplies them; not counted in the exit code):\n"
        "  - profile 'production': api_token is not set (from built-in default): "
        "production is protected and requires an API token; set APP_API_TOKEN in the service's "
        "environment"
    ) in result.stdout
    assert "check them where it runs: ENV_FOR_DYNACONF=production app doctor" in result.stdout
    assert result.stderr == ""


def test_doctor_is_clean_when_every_profile_can_run(
    base_env: dict[str, str], project_copy: Path
) -> None:
    token = "k3Jq9vXz-0aB7cD1eF2gH3iJ4kL5mN6o"  # strong: "p" * 40 is refused as guessable
    with (project_copy / ".secrets.toml").open("a") as secrets:
        secrets.write(f"\n[production]\napi_token = '{token}'\n")
    result = run("doctor", env={**base_env, SETTINGS_DIR_ENV: str(project_copy)})
    assert result.returncode == 0, result.stderr
    assert "ok: every profile is valid and every data root is distinct" in result.stdout
    assert "only matter" not in result.stdout


def test_doctor_lists_serving_problems_next_to_the_ones_that_exit_78(
    base_env: dict[str, str], project_copy: Path
) -> None:
    settings = project_copy / "settings.toml"
    settings.write_text(settings.read_text().replace("port = 8001", "port = 8001\nprot = 1"))
    result = run("doctor", env={**base_env, SETTINGS_DIR_ENV: str(project_copy)})
    assert result.returncode == 78, result.stderr
    assert "1 problem(s):\n  - profile 'testing': prot = 1" in result.stderr
    assert "only matter where profile production is served" in result.stderr
    assert "api_token is not set" in result.stderr


def test_doctor_with_production_selected_and_no_token_exits_78(
    base_env: dict[str, str], project_copy: Path
) -> None:
    env = {**base_env, SETTINGS_DIR_ENV: str(project_copy), "ENV_FOR_DYNACONF": "production"}
    result = run("doctor", env=env)
    assert result.returncode == 78, result.stderr
    assert "1 problem(s):\n  - profile 'production': api_token is not set" in result.stderr
    assert "only matter" not in result.stdout + result.stderr


def test_a_dynaconf_variable_is_refused_without_naming_a_profile(
    base_env: dict[str, str],
) -> None:
    result = run("config", env={**base_env, "DYNACONF_PORT": "9"})
    assert result.returncode == 78
    assert "profile '-'" not in result.stderr
    assert result.stderr == (
        "error: DYNACONF_PORT = '9' (from the environment): dynaconf would apply it to every "
        "profile; this app reads APP_PORT for the selected profile only. Rename it to "
        "APP_PORT or unset DYNACONF_PORT\n"
    )


def test_an_empty_settings_dir_variable_says_it_is_empty_and_what_to_do(
    base_env: dict[str, str],
) -> None:
    result = run("config", env={**base_env, SETTINGS_DIR_ENV: ""}, cwd=PROJECT)
    assert result.returncode == 78
    assert "no settings.toml found" not in result.stderr
    assert result.stderr == (
        f"error: {SETTINGS_DIR_ENV} is set but empty, so it names no settings directory; "
        f"unset it (`unset {SETTINGS_DIR_ENV}`) to use the project directory {PROJECT}, or "
        "set it to the directory that holds settings.toml\n"
    )


@pytest.mark.parametrize("args", [["config", "--bogus"], ["no-such-command"]])
def test_a_usage_error_exits_2(base_env: dict[str, str], args: list[str]) -> None:
    result = run(*args, env=base_env)
    assert result.returncode == 2
    assert "Usage: app" in result.stderr


def test_config_and_doctor_do_not_import_the_server_stack_or_the_remote_backend(
    base_env: dict[str, str],
) -> None:
    # What a local configuration's `app config` and `app doctor` never need: they start as
    # fast as dynaconf allows (bench/config_startup.py). jinja2 too: dynaconf imports it
    # whenever it is installed, which the docs' own environment (.venv-docs) keeps it from.
    code = (
        "import json, sys\n"
        "from app.cli import main\n"
        "for argv in (['app', 'config'], ['app', 'config', '--all'], ['app', 'doctor']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), exit.code\n"
        "heavy = ('fastapi', 'uvicorn', 'starlette', 'httpx', 'app.server', 'app.store',\n"
        "         'app.storage', 'app.remote', 'psycopg', 'boto3', 'botocore', 'filelock',\n"
        "         'jinja2')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)\n"
    )
    # A root that is not there yet, as on a fresh machine: doctor reads one that is, as every
    # command that opens it would (red team 53), and that needs the lock's module.
    missing = Path(base_env[SANDBOX_ENV]) / "doctor-not-there"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**base_env, "APP_DATA_ROOT": str(missing)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stderr.splitlines()[-1])
    assert "jinja2" not in imported, (
        "jinja2 is installed in this environment (a .venv set up before the docs moved to "
        ".venv-docs): dynaconf imports it at every start. Set .venv up again: rm -rf .venv && "
        "bash scripts/test"
    )
    assert imported == []


def test_a_profile_refused_under_the_run_is_refused_before_dynaconf_is_imported(
    base_env: dict[str, str], project_copy: Path
) -> None:
    # The sandbox refuses a profile other than testing whatever its storage, so `load`
    # refuses it before resolving the files' values: the refused command (most of the guard's
    # children) never pays for dynaconf's import, about 70 ms of its CPU (bench/README.md,
    # "perf-suite70"). The refusal is the one a resolved load gave: its message, its exit.
    code = (
        "import json, sys\n"
        "from app.cli import main\n"
        "sys.argv = ['app', '--profile', 'production', 'data', 'purge', '--yes-i-mean-it']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "print(json.dumps([code, 'dynaconf' in sys.modules]), file=sys.stderr)\n"
    )
    env = {**base_env, SETTINGS_DIR_ENV: str(project_copy)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    *refusal, last = result.stderr.splitlines()
    assert json.loads(last) == [78, False], result.stderr
    assert " ".join(refusal).startswith("error: refused under pytest (sandbox: "), result.stderr
    assert (
        "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through "
    ) in " ".join(refusal), result.stderr
    assert project_copy.joinpath("data").exists() is False


FORMAT_SETTINGS = """\
[development]
data_root = "data/development"

[testing]
data_root = "data/testing"

[production]
data_root = "@format {env[PROD_ROOT]}"
protected = true
"""


def test_a_root_from_an_unset_variable_stops_only_the_profile_that_uses_it(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "settings.toml").write_text(FORMAT_SETTINGS)
    env = {
        **base_env,
        SETTINGS_DIR_ENV: str(tmp_path),
        ALLOW_PROFILES_ENV: "development,production",
    }
    env.pop("PROD_ROOT", None)
    development = run("--profile", "development", "config", env=env)
    assert development.returncode == 0, development.stderr
    assert "Traceback" not in development.stderr
    production = run("--profile", "production", "config", env=env)
    assert production.returncode == 78
    assert "Traceback" not in production.stderr
    assert (
        "profile 'production': data_root = '@format {env[PROD_ROOT]}' (from settings.toml "
        "[production]): cannot be resolved (DynaconfFormatError: "
    ) in production.stderr
    assert "the variable NAME) in the environment of the commands that use profile" in (
        production.stderr
    )
    every = run("config", "--all", env=env)
    assert every.returncode == 0, every.stderr
    assert "problem: profile 'production': data_root = '@format {env[PROD_ROOT]}'" in every.stderr
    resolved = run("--profile", "production", "status", env={**env, "PROD_ROOT": "prod"})
    assert resolved.returncode == 0, resolved.stderr


def test_looking_at_or_maintaining_production_needs_no_http_token(
    base_env: dict[str, str], project_copy: Path
) -> None:
    env = {**base_env, SETTINGS_DIR_ENV: str(project_copy), ALLOW_PROFILES_ENV: "production"}
    env.pop("APP_API_TOKEN", None)
    # The root is there: a command on a root that does not exist is refused for that.
    (project_copy / "data" / "production").mkdir(parents=True, mode=0o700)
    for args in (
        ["status"],
        ["sessions", "list", "--trash"],
        ["data", "purge", "--yes-i-mean-it"],
        ["data", "empty-trash", "--yes-i-mean-it"],
    ):
        done = run("--profile", "production", *args, env=env)
        assert done.returncode == 0, (args, done.stderr)
    served = run("--profile", "production", "serve", "--port", "0", env=env)
    assert served.returncode == 78
    assert "production is protected and requires an API token" in served.stderr
    shown = run("--profile", "production", "config", env=env)
    assert shown.returncode == 78
    assert "production is protected and requires an API token" in shown.stderr


def test_a_production_server_refuses_a_data_root_that_does_not_exist_and_creates_none(
    base_env: dict[str, str], project_copy: Path
) -> None:
    # A mistyped APP_DATA_ROOT on production was created, stamped and served empty beside
    # the real root, taking new sessions into it; only a warning in the log said so.
    mistyped = project_copy / "data" / "prodution"
    env = {
        **base_env,
        SETTINGS_DIR_ENV: str(project_copy),
        ALLOW_PROFILES_ENV: "production",
        "APP_API_TOKEN": secrets.token_urlsafe(32),
        "APP_DATA_ROOT": str(mistyped),
    }
    served = run("--profile", "production", "serve", "--port", "0", env=env)
    assert served.returncode == 78, served.stderr
    assert served.stderr == (
        f"error: data root {mistyped}: the directory does not exist, so there is nothing to "
        "serve, and a server of a protected profile does not create its data root, so that "
        "a mistyped data_root is not served empty beside the real one; if the path is "
        "mistyped, correct data_root of profile 'production' (from environment "
        # The command the message names, given the --profile this one was (red team 62).
        "APP_DATA_ROOT; `app --profile production config --all` shows every profile's root); "
        "for a first deploy, "
        "create the empty directory, owned by the service's user (`install -d -m 0700 -o app "
        f"-g app {mistyped}`): a server's first start lays it out and stamps it\n"
    )
    assert not os.path.lexists(mistyped)
    # The maintenance commands' refusal names the same first step for a protected profile.
    listed = run("--profile", "production", "sessions", "list", env=env)
    assert listed.returncode == 78
    assert "for a first deploy, create the empty directory" in listed.stderr
    assert not os.path.lexists(mistyped)
