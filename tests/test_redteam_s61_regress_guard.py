"""Red team 61 on regress, the guard and remote (branch rt-regress14): the paths rt-guard61 made
refusals of, where their resolution fails another way, and an endpoint's path as the S3 client
reads it, after rt-remote61.

What broke:

- a data root, settings directory or sandbox through a loop of symbolic links (``a`` ->
  ``b`` -> ``a``), the sibling of rt-guard61's link of ``/proc`` this process may not follow:
  pathlib's ``resolve`` raises ``RuntimeError: Symlink loop`` where it raised
  ``PermissionError`` there, and only that was caught. ``APP_DATA_ROOT`` (or a profile's
  ``data_root``) so spelled was a traceback from ``app.config.load()`` and every command,
  ``APP_SETTINGS_DIR`` so spelled too; a `Config` made by hand with such a root, a
  traceback from the sandbox's check in a test and from red team 32's check outside any run;
  ``PYTEST_APP_SANDBOX`` so spelled, a traceback from every load in a test's child (a
  narrowing) and from a pytest or ``app`` command started with it left in the shell; a pytest
  started with such an ``APP_DATA_ROOT`` in its shell, a traceback from the plugin's start
  (its reading of the shell's root to protect it), then, with that read as written, another
  from its look at the root's lock ("refusing to lock ...: it is a symbolic link", of a lock
  file that is none: the loop is on the root's way);
- the same paths through ``/proc/<pid>/cwd`` (or ``root``) of a process that has ended (a
  zombie: ``/proc`` still lists its links, whose ``readlink`` fails with ``ENOENT``):
  ``FileNotFoundError`` where rt-guard61 caught ``PermissionError``, so every command said
  "the data root's filesystem failed a call with ENOENT ... `app data check`" of
  ``/proc/<pid>/cwd`` (exit 74), rt-guard61's misdirection again, and the sandbox's check,
  a narrowing, red team 32's check and the check of pytest's writes ended in a traceback;
- an ``s3_endpoint_url`` whose last path segment has a ``;`` (``http://127.0.0.1:8333/;``,
  ``/x/..;``): the S3 client (botocore) reads the endpoint with ``urlparse`` and drops the
  ``;`` and what follows as URL parameters, so its requests go to the plain endpoint (SeaweedFS
  served an object put there through ``/x/..;``), while the check of the profiles' prefixes
  took ``;`` and ``x/..;`` for a path before the bucket: a staging profile there with
  production's ``s3://app-data/production`` was apart from production, and nothing said so.
  rt-remote61's refusal of dot segments split the path as written. One with a query
  (``/?region=x``) was taken by ``app config``, and refused by the client at every request
  as the store being unavailable (69).

What changed: a path setting or ``APP_SETTINGS_DIR`` through a loop is refused by name
(``invalid_setting``, ``settings_not_found``, 78), naming the link that begins the loop and
``ls -l`` on it, and through an ended process's link, naming the link, the process and the
``ENOENT`` (every place rt-guard61 caught ``PermissionError`` now takes any ``OSError``);
the sandbox refuses such a root naming the link, red team 32's check outside a run
(``data_root_state``) too; a narrowing through either narrows nothing, a
``PYTEST_APP_SANDBOX`` so spelled left in the shell is "not a test sandbox" (a usage error
under pytest), the plugin protects a shell's root so spelled as written, and a lock file
behind a loop is none (nothing is opened through it). An endpoint whose path the client
cuts is refused (``invalid_setting``), naming what it drops and where its requests go, and
one with a query, naming it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from test_config_remote import REMOTE, SECRETS_FILE

from app import config_files, dataroot, sandbox
from app.config import Config, load
from app.config_files import settings_dir
from app.errors import (
    DataRootStateError,
    InvalidSettingError,
    SandboxViolationError,
    SettingsNotFoundError,
)
from app.lock import probe
from app.storage import open_storage
from app.testing import guard, writes


def _loop(where: Path) -> Path:
    """`where`/a -> b -> a, a loop of symbolic links; returns ``a``."""
    (where / "a").symlink_to(where / "b")
    (where / "b").symlink_to(where / "a")
    return where / "a"


def _said_loop(link: Path) -> str:
    return (
        f"passes through {link}, a symbolic link that leads back to itself through a loop of "
        f"links (`ls -l {link}` shows where it points), so the path names no directory: "
        "nothing can be opened through it; point the link at the directory it means, or name "
        "that directory instead"
    )


def _opened_in_the_sandbox(app_config: Config, root: Path) -> tuple[Config, str]:
    """A test's `Config` made by hand with `root`, and the sandbox's refusal to open it."""
    made = dataclasses.replace(app_config, data_root=root)
    with pytest.raises(SandboxViolationError) as outside:
        open_storage(made, writer=True)
    return made, str(outside.value)


def test_a_root_settings_or_sandbox_through_a_loop_of_links_is_refused_by_name(
    tmp_path: Path, app_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "RuntimeError: Symlink loop" from each, a traceback.
    link = _loop(tmp_path)
    monkeypatch.setenv("APP_DATA_ROOT", f"{link}/root")
    with pytest.raises(InvalidSettingError) as refused:
        load()
    assert refused.value.code == "invalid_setting"
    assert str(refused.value) == (
        f"profile 'testing': data_root = '{link}/root' (from environment APP_DATA_ROOT): "
        + _said_loop(link)
    )
    monkeypatch.delenv("APP_DATA_ROOT")
    with pytest.raises(SettingsNotFoundError) as missing:
        settings_dir({config_files.SETTINGS_DIR_ENV: str(link)})
    assert f"(from APP_SETTINGS_DIR; it {_said_loop(link)})" in str(missing.value)
    made, outside = _opened_in_the_sandbox(app_config, link / "root")
    assert (
        f"open data root {link}/root, which passes through {link}, a symbolic link that "
        "leads back to itself through a loop of links, so it names no directory of the test "
        "sandbox"
    ) in outside
    assert "point the link at a directory under tmp_path" in outside
    # Outside any run, red team 32's check of a Config made by hand comes first (the
    # sandbox's is inside one): the same traceback there.
    with pytest.raises(DataRootStateError) as unfixed:
        dataroot._refuse_unfixed_path(made, made.data_root)
    assert (
        f"the path passes through {link}, a symbolic link that leads back to itself through "
        f"a loop of links, so it names no directory: nothing can be opened through it; point "
        f"the link at the directory it means (`ls -l {link}`)"
    ) in str(unfixed.value)
    # A test's child given PYTEST_APP_SANDBOX through the loop (a narrowing): the run's
    # whole sandbox, never widened; outside any run (a pytest or `app` started with it left
    # in the shell): no sandbox, refused as "not a test sandbox".
    run = sandbox.current_run()
    assert run is not None
    narrowed = sandbox.current_run({**os.environ, sandbox.SANDBOX_ENV: f"{link}/x"})
    assert narrowed is not None
    assert narrowed.sandbox == run.sandbox
    assert sandbox._given_sandbox(link / "x") is None
    # What the plugin reads as a pytest starts with such an APP_DATA_ROOT in its shell, to
    # protect it: the root as written, and no holder behind it. Its lock file is none
    # (nothing is opened through a loop), not "a symbolic link" (LockFileAliasedError).
    monkeypatch.setenv("APP_DATA_ROOT", str(link))
    roots = guard.shell_roots()[1]
    assert link in roots.values(), roots
    # The loop's own profile only: another profile's live server (a developer's, beside
    # the suite) is the holder the plugin names, which this case is not about.
    through = {name: root for name, root in roots.items() if root == link}
    assert guard.probe_live(through) == ([], [])
    assert not probe(link).held


def test_a_root_or_sandbox_through_an_ended_process_s_proc_link_is_refused_by_name(
    tmp_path: Path, app_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: reading /proc/<pid>/cwd of a process that has ended (a zombie: its link is
    # still listed, its readlink ENOENT) raised FileNotFoundError where rt-guard61 caught
    # PermissionError: every command said "the data root's filesystem failed a call with
    # ENOENT ... `app data check`" of /proc/<pid>/cwd (exit 74), the sandbox's check, a
    # narrowing and the check of pytest's writes a traceback.
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped: a zombie
        link = f"/proc/{pid}/cwd"
        said = (
            f"passes through {link}, a link of /proc to what process {pid} has, which names "
            "nothing now (reading it failed with ENOENT (No such file or directory): the "
            "process has ended, or is ending, and has no current directory, root or "
            "descriptors left), so the path names no directory here; name the directory itself"
        )
        monkeypatch.setenv("APP_DATA_ROOT", f"{link}/root")
        with pytest.raises(InvalidSettingError) as refused:
            load()
        assert str(refused.value) == (
            f"profile 'testing': data_root = '{link}/root' (from environment APP_DATA_ROOT): "
            + said
        )
        monkeypatch.delenv("APP_DATA_ROOT")
        with pytest.raises(SettingsNotFoundError) as missing:
            settings_dir({config_files.SETTINGS_DIR_ENV: link})
        assert f"(from APP_SETTINGS_DIR; it {said})" in str(missing.value)
        made, outside = _opened_in_the_sandbox(app_config, Path(f"{link}/root"))
        assert (
            f"open data root {link}/root, which passes through {link}, a link that names "
            "nothing now (No such file or directory: a link of /proc of a process that has "
            "ended), so it names no directory of the test sandbox"
        ) in outside
        with pytest.raises(DataRootStateError) as unfixed:
            dataroot._refuse_unfixed_path(made, made.data_root)
        assert f"the path passes through {link}, a link of /proc" in str(unfixed.value)
        assert "(this one leads nowhere this process may follow)" in str(unfixed.value)
        run = sandbox.current_run()
        narrowed = sandbox.current_run({**os.environ, sandbox.SANDBOX_ENV: f"{link}/x"})
        assert run is not None and narrowed is not None
        assert narrowed.sandbox == run.sandbox
        assert sandbox._given_sandbox(Path(link)) is None
        # pytest's --junitxml so spelled: the path as written, refused as one through /proc.
        assert writes._system_path(f"{link}/report.xml") == Path(f"{link}/report.xml")
    finally:
        os.waitpid(pid, 0)


#: How the S3 client (botocore, the app's) sends a request through `endpoint`: the URL of
#: a GetObject of key ``k`` in bucket ``bk``, caught before it is sent.
def _sent(endpoint: str) -> str:
    import boto3
    from botocore.config import Config as BotoConfig

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="a", aws_secret_access_key="b",
        region_name="us-east-1", config=BotoConfig(s3={"addressing_style": "path"}),
    )  # fmt: skip
    seen: list[str] = []

    class Caught(Exception):
        pass

    def catch(request: object, **_: object) -> None:
        seen.append(request.url)  # type: ignore[attr-defined]
        raise Caught

    client.meta.events.register("before-send.s3.GetObject", catch)
    with pytest.raises(Caught):
        client.get_object(Bucket="bk", Key="k")
    return seen[0]


def test_an_endpoint_whose_path_the_s3_client_cuts_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: `http://127.0.0.1:8333/;` (and `/x/..;`) were apart from production's endpoint
    # to the check of the profiles' prefixes, while the client sends their requests to it.
    from app.config import inspect_profiles

    assert (
        _sent("http://127.0.0.1:8333/;")
        == _sent("http://127.0.0.1:8333")
        == ("http://127.0.0.1:8333/bk/k")
    )
    assert _sent("http://127.0.0.1:8333/x/..;") == "http://127.0.0.1:8333/bk/k"
    (tmp_path / ".secrets.toml").write_text(SECRETS_FILE)
    monkeypatch.setenv("APP_SETTINGS_DIR", str(tmp_path))
    for endpoint, cut, sent in [
        ("http://127.0.0.1:8333/;", ";", "/"),
        ("http://127.0.0.1:8333/x/..;p", ";p", "/x/.."),
    ]:
        (tmp_path / "settings.toml").write_text(
            REMOTE + '\n[staging]\ndatabase_url = "postgresql://app@db.internal:5432/app_st"\n'
            f'blob_url = "s3://app-data/production"\ns3_endpoint_url = "{endpoint}"\n'
        )
        problems = inspect_profiles("development").problems
        refused = [p for p in problems if isinstance(p, InvalidSettingError)]
        assert [(p.profile, p.key) for p in refused] == [("staging", "s3_endpoint_url")], problems
        assert refused[0].message == (
            f"profile 'staging': s3_endpoint_url = '{endpoint}' (from settings.toml "
            f"[staging]): has {cut!r} at the end of its path, which the S3 client drops as URL "
            f"parameters: its requests go under {sent!r}, so the bucket and prefix it reaches "
            "are not the ones the check of the profiles' prefixes compares; write the path "
            "without it, as the path it means"
        )
    # A query: taken by the check, refused by the client at every request (a 69, "the object
    # store is unavailable"), so refused as a setting too.
    (tmp_path / "settings.toml").write_text(REMOTE.replace('8333"', '8333/?region=x"', 1))
    problems = inspect_profiles("development").problems
    assert [str(p) for p in problems] == [
        f"profile {name!r}: s3_endpoint_url = 'http://127.0.0.1:8333/?region=x' (from "
        "settings.toml [default]): has a query ('?region=x'), which the S3 client refuses as "
        "no valid URI of an endpoint (every request would fail); write the URL without it"
        for name in ("development", "testing", "production")
    ], problems
    # Legit endpoints stay: a ';' before the last segment is sent as written (%3B).
    for endpoint in ["http://127.0.0.1:8333/x;p/y", "http://[::1]:8333/", "http://h.v1.ex/v1.2/"]:
        (tmp_path / "settings.toml").write_text(
            REMOTE + '\n[staging]\ndatabase_url = "postgresql://app@db.internal:5432/app_st"\n'
            f'blob_url = "s3://app-data/staging"\ns3_endpoint_url = "{endpoint}"\n'
        )
        assert not inspect_profiles("development").problems, endpoint
