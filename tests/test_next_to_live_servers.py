"""The README's first ten minutes: start `app serve`, then run the tests. The suite must be
green next to a live server of every profile, and leave them alone.

A representative part of the suite runs in a pytest subprocess whose settings are a copy of
the project's, while a real `app serve` of each profile holds that copy's roots (a serial
run starts both when collection ends: tests/head_start.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import forked_app
import forked_pytest
import head_start
import httpx
import pytest
from project_copy import PROJECT, copy_project_settings
from side_by_side import INNER_PLUGINS_OFF

PROFILES = ("development", "testing", "production")
#: The tests that look at the settings' roots, the live holders and the header (the whole
#: suite would double its time; these are the ones a live server could disturb).
REPRESENTATIVE = (
    "tests/test_plugin.py::test_the_header_names_profile_data_root_source_and_sandbox",
    "tests/test_plugin.py::test_strict_mode_runs_when_no_server_is_live",
    "tests/test_plugin.py::test_it_forces_testing_over_a_shell_that_exported_production",
    "tests/test_docs_generated.py",
    "tests/test_cli_data.py",
    "tests/test_fixtures.py",
)


@contextlib.contextmanager
def live_servers(tmp_path: Path, environ: dict[str, str]) -> Iterator[tuple[Path, dict[str, str]]]:
    """A live `app serve` of every profile on a copy of the project's settings."""
    project = copy_project_settings(tmp_path / "project")
    base = {
        **environ,
        "APP_SETTINGS_DIR": str(project),
        # The servers are children of this run: their roots lie in its sandbox, opted in.
        "PYTEST_APP_ALLOW_PROFILES": ",".join(PROFILES),
    }
    processes: list[subprocess.Popen[bytes] | forked_app.Forked] = []
    urls: dict[str, str] = {}

    def start(profile: str) -> tuple[subprocess.Popen[bytes] | forked_app.Forked, str]:
        env = {**base, "ENV_FOR_DYNACONF": profile}
        if profile == "production":
            env["APP_API_TOKEN"] = secrets.token_urlsafe(32)
        # Forked from the run's zygote (about 0.5 s of CPU less each): what the inner run
        # sees of a server is its lock file and its pid, never its command line.
        return forked_app.start_server(env, project / "data" / profile, tmp_path / f"{profile}.log")

    try:
        # Started side by side: each holds a root of its own.
        with ThreadPoolExecutor(len(PROFILES)) as pool:
            starting = {profile: pool.submit(start, profile) for profile in PROFILES}
        failed: BaseException | None = None
        for profile, future in starting.items():
            try:
                process, urls[profile] = future.result()
                processes.append(process)
            except BaseException as error:  # the others are stopped below, then it is raised
                failed = failed or error
        if failed is not None:
            raise failed
        yield project, urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def run_next_to_live_servers(
    tmp_path: Path, environ: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """The representative tests' run next to `live_servers`, and each server's /health
    status after it. A serial run starts this when collection ends (tests/head_start.py)."""
    with live_servers(tmp_path, environ) as (project, urls):
        env = {
            name: value
            for name, value in environ.items()
            if not name.startswith(("PYTEST_", "APP_")) and name != "ENV_FOR_DYNACONF"
        }
        env["APP_SETTINGS_DIR"] = str(project)
        env["PYTEST_ADDOPTS"] = INNER_PLUGINS_OFF  # none of the representative tests uses them
        # Forked from the run's warm interpreter where it can be (tests/forked_pytest.py): its
        # import of pytest, 0.08 s of CPU and 0.3 s of wall a run (bench/README.md,
        # perf-suite65c). Nothing here reads the inner run's parent or command line.
        done = forked_pytest.run(
            [
                sys.executable,
                "-m",
                "pytest",
                *REPRESENTATIVE,
                "-p",
                "no:randomly",
                "-p",
                "no:cacheprovider",
                f"--basetemp={tmp_path / 'inner'}",
            ],
            env,
            PROJECT,
        )
        health = {profile: httpx.get(f"{url}/health").status_code for profile, url in urls.items()}
    return done, health


def test_the_suite_passes_next_to_a_live_server_of_every_profile(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    done, health = head_start.result(
        request.config,
        "next-to-live-servers",
        lambda: run_next_to_live_servers(tmp_path, dict(os.environ)),
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    for profile in PROFILES:
        assert f"app: live server on profile '{profile}'" in done.stdout
    assert health == dict.fromkeys(PROFILES, 200)
