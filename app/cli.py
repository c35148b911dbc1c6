"""The ``app`` command line: parse, call, print, exit. Thin on purpose.

Exit codes follow sysexits (see `app.errors`): 0 success, 2 usage, 65 bad data, 66 not found,
69 port or lock unavailable, 75 data root held by a live process (retry later), 77 confirmation
required on a protected profile, 78 configuration error.

Heavy imports (FastAPI, uvicorn) happen inside the commands that need them, so ``app config``
and ``app doctor`` start as fast as dynaconf allows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from app import config as appconfig
from app.errors import AppError

F = TypeVar("F", bound=Callable[..., Any])


def fail(error: AppError) -> NoReturn:
    """Print an app error the same way for every command, then exit with its code."""
    click.echo(f"error: {error.message}", err=True)
    sys.exit(error.exit_code)


def selected_profile(ctx: click.Context) -> str | None:
    """The ``--profile`` given: after the command name (`profile_option`), else before it."""
    own: str | None = ctx.params.get("profile")
    return own if own is not None else ctx.find_root().params.get("profile")


def profile_option(command: F) -> F:
    """``app COMMAND --profile NAME``, the same option as ``app --profile NAME COMMAND``."""
    return click.option(
        "--profile",
        metavar="NAME",
        help="Profile to use (same as `app --profile NAME`); wins over it if both are given.",
    )(command)


def load_config(ctx: click.Context) -> appconfig.Config:
    """The selected profile's configuration; ``--profile`` wins over ``ENV_FOR_DYNACONF``."""
    profile = selected_profile(ctx)
    try:
        config = appconfig.load(profile, profile_source="--profile")
    except AppError as error:
        fail(error)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--profile",
    metavar="NAME",
    help="Profile to use (a section of settings.toml). Default: $ENV_FOR_DYNACONF, "
    "else development.",
)
@click.version_option(package_name="app")
def cli(profile: str | None) -> None:
    """Review sessions over HTTP, with profiles that keep tests away from production data."""


def _profile_table(report: appconfig.Report, names: list[str]) -> list[str]:
    """Every key as a row, one column per profile: value, then where it came from."""
    rows: list[list[str]] = [["key", *names]]
    for key, spec in appconfig.KEYS.items():
        row = [key]
        for name in names:
            resolved = report.profiles[name]
            value = resolved.values.get(key)
            shown = appconfig.mask(value) if spec.secret else str(value)
            row.append(f"{shown}  ({resolved.sources.get(key, 'invalid')})")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(names) + 1)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


@cli.command("config")
@click.option("--all", "show_all", is_flag=True, help="Show every profile side by side.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on standard output.")
@profile_option
@click.pass_context
def config_command(ctx: click.Context, show_all: bool, as_json: bool, profile: str | None
                   ) -> None:
    """Show the resolved configuration and where each value came from (secrets masked).

    Loading a single profile means intending to run it: a problem that would stop the app
    (such as production without APP_API_TOKEN) exits 78. With --all, every profile is shown
    as the settings files describe it, problems are listed, and the exit code is 0 unless the
    files themselves cannot be read.
    """
    if show_all:
        _show_all(ctx, as_json)
        return
    config = load_config(ctx)
    values = config.values()
    if as_json:
        payload = {
            "profile": config.profile,
            "profile_source": config.profile_source,
            "data_root": str(config.data_root),
            "settings_dir": str(config.settings_dir),
            "values": values,
            "sources": dict(config.sources),
            "roots": {name: str(root) for name, root in config.roots.items()},
        }
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"profile: {config.profile}  (from {config.profile_source})")
    click.echo(f"settings: {config.settings_dir}")
    width = max(len(key) for key in values)
    for key, value in values.items():
        click.echo(f"  {key.ljust(width)} = {value}  ({config.sources.get(key)})")


def _show_all(ctx: click.Context, as_json: bool) -> None:
    profile = selected_profile(ctx)
    try:
        report = appconfig.inspect_profiles(profile, profile_source="--profile")
    except AppError as error:
        fail(error)
    names = list(report.profiles)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    for problem in report.problems:
        click.echo(f"problem: {problem.message}", err=True)
    if as_json:
        payload = {
            "selected": report.selected,
            "settings_dir": str(report.settings_dir),
            "profiles": {
                name: {
                    "data_root": str(r.data_root) if r.data_root else None,
                    "values": {
                        k: appconfig.mask(v)
                        if appconfig.KEYS[k].secret
                        else (str(v) if k == "data_root" else v)
                        for k, v in r.values.items()
                    },
                    "sources": dict(r.sources),
                }
                for name, r in report.profiles.items()
            },
            "problems": [p.to_dict() for p in report.problems],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(
        f"settings: {report.settings_dir}  (selected: {report.selected}, "
        f"from {report.profile_source}; APP_* variables apply to it only)"
    )
    for line in _profile_table(report, names):
        click.echo(line)


@cli.command()
@profile_option
@click.pass_context
def doctor(ctx: click.Context, profile: str | None) -> None:
    """Check every profile (roots, types, unknown keys) and what the selected one needs to run.

    Lists every problem, not just the first; exits 78 if there is any.
    """
    profile = selected_profile(ctx)
    try:
        report = appconfig.inspect_profiles(profile, profile_source="--profile")
    except AppError as error:
        fail(error)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"settings: {report.settings_dir}")
    for path in report.files:
        click.echo(f"  read {path}")
    for name, resolved in report.profiles.items():
        mark = " (selected)" if name == report.selected else ""
        click.echo(f"profile {name}{mark}: data_root = {resolved.data_root}")
    if report.problems:
        click.echo(f"{len(report.problems)} problem(s):", err=True)
        for problem in report.problems:
            click.echo(f"  - {problem.message}", err=True)
        sys.exit(report.problems[0].exit_code)
    click.echo("ok: every profile is valid and every data root is distinct")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="app")
