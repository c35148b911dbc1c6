"""Opening a data root: sandbox, creation, lock, profile stamp, layout, audit, atomic writes."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import app
from app.config import Config
from app.dataroot import (
    AUDIT_FILE,
    STAMP_FILE,
    DataRoot,
    describe,
    json_bytes,
    open_root,
    read_stamp,
    restamp,
)
from app.errors import (
    DataRootInUseError,
    DataRootStateError,
    LockLostError,
    ProfileStampMismatchError,
    SandboxViolationError,
)
from app.lock import LOCK_FILE, probe


@dataclass(frozen=True)
class StubConfig:
    """The fields of app.config.Config that dataroot relies on."""

    profile: str
    data_root: Path
    protected: bool = False
    protected_profiles: frozenset[str] = frozenset({"production"})
    profiles: frozenset[str] = frozenset({"development", "production", "testing"})
    # Where each setting and the profile came from, read by a stamp's refusal
    # (`app.config.set_for_another_profile`): settings files, the profile from its variable.
    sources: dict[str, str] = field(default_factory=dict)
    profile_source: str = "ENV_FOR_DYNACONF"

    def taking_needs_confirmation(self, stamped: str) -> bool:
        # The rule itself, not a copy of it.
        return Config.taking_needs_confirmation(self, stamped)  # type: ignore[arg-type]


@pytest.fixture
def config(tmp_path: Path) -> StubConfig:
    return StubConfig("development", tmp_path / "data" / "development")


def audit_lines(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (root / AUDIT_FILE).read_text().splitlines()]


def test_a_writer_creates_a_new_root_with_mode_0700_and_its_layout(config: StubConfig) -> None:
    old_umask = os.umask(0o022)
    try:
        with open_root(config) as root:
            path = config.data_root
            assert root.path == path
            assert stat.S_IMODE(path.stat().st_mode) == 0o700
            assert sorted(p.name for p in path.iterdir()) == sorted(
                [".app-profile.json", ".server.lock", ".tmp", ".trash", "sessions"]
            )
            for sub in (root.sessions_dir, root.trash_dir, root.tmp_dir):
                assert sub.is_dir()
                assert stat.S_IMODE(sub.stat().st_mode) == 0o700
    finally:
        os.umask(old_umask)


def test_a_new_root_is_0700_whatever_the_umask_or_a_setgid_parent_made_of_its_mode(
    config: StubConfig,
) -> None:
    # mkdir's mode alone would give 0500 here (the umask takes the owner's write bit) and
    # 02700 in a setgid parent: the root is changed to 0700 when it is not.
    parent = config.data_root.parent
    parent.mkdir(parents=True)
    parent.chmod(0o2755)
    old_umask = os.umask(0o277)
    try:
        open_root(config).close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(config.data_root.stat().st_mode) == 0o700


def test_an_existing_root_keeps_the_permissions_its_owner_gave_it(config: StubConfig) -> None:
    config.data_root.mkdir(parents=True, mode=0o750)
    config.data_root.chmod(0o750)
    open_root(config).close()
    assert stat.S_IMODE(config.data_root.stat().st_mode) == 0o750


def test_the_first_writer_stamps_the_root_with_its_profile(config: StubConfig) -> None:
    with open_root(config) as root:
        stamp = json.loads((config.data_root / STAMP_FILE).read_text())
        assert root.stamp == stamp
    assert stamp["profile"] == "development"
    assert stamp["app_version"] == app.__version__
    assert stamp["created_at"].endswith("+00:00")
    assert not (config.data_root / AUDIT_FILE).exists()  # a new root is not an event


def test_a_root_stamped_production_is_refused_to_development(tmp_path: Path) -> None:
    path = tmp_path / "shared-root"
    open_root(StubConfig("production", path)).close()
    before = sorted(p.name for p in path.iterdir())

    with pytest.raises(ProfileStampMismatchError) as refused:
        open_root(StubConfig("development", path))
    error = refused.value
    assert (error.stamped, error.requested) == ("production", "development")
    message = str(error)
    assert "'production'" in message
    assert "'development'" in message
    assert "app data restamp --profile development --from production" in message
    assert error.exit_code == 78
    # Refused cleanly: the lock was given back and nothing was added.
    assert probe(path).held is False
    assert sorted(p.name for p in path.iterdir()) == before


def test_a_reader_is_refused_a_root_stamped_with_another_profile(tmp_path: Path) -> None:
    path = tmp_path / "root"
    open_root(StubConfig("production", path)).close()
    with pytest.raises(ProfileStampMismatchError, match="--from production"):
        open_root(StubConfig("development", path), write=False)


def test_restamp_hands_the_root_to_another_profile_and_audits_it(tmp_path: Path) -> None:
    path = tmp_path / "root"
    open_root(StubConfig("production", path)).close()
    staging = StubConfig("staging", path)

    new = restamp(staging, "production")

    assert new.pop("changed") is True
    assert new["profile"] == "staging"
    assert read_stamp(path) == new
    [line] = audit_lines(path)
    assert line["operation"] == "restamp"
    assert line["target"] == str(path / STAMP_FILE)
    # Naming the stamp it records by its time (red team 63, regress: `check` ties the two).
    assert line["details"] == {"from": "production", "to": "staging", "stamp": new["created_at"]}
    assert line["profile"] == "staging"
    with open_root(staging) as root:
        assert root.stamp == new


def test_restamp_refuses_when_the_stamp_is_not_the_one_named(tmp_path: Path) -> None:
    path = tmp_path / "root"
    open_root(StubConfig("production", path)).close()
    with pytest.raises(ProfileStampMismatchError, match="--from production"):
        restamp(StubConfig("staging", path), "development")
    assert read_stamp(path)["profile"] == "production"  # type: ignore[index]
    assert not (path / AUDIT_FILE).exists()


def test_restamp_is_refused_while_a_server_holds_the_root(tmp_path: Path) -> None:
    path = tmp_path / "root"
    with (
        open_root(StubConfig("production", path), kind="server"),
        pytest.raises(DataRootInUseError, match="kind server, profile production"),
    ):
        restamp(StubConfig("staging", path), "production", timeout=0)
    assert read_stamp(path)["profile"] == "production"  # type: ignore[index]


def test_a_legacy_root_with_data_but_no_stamp_is_stamped_and_audited(
    config: StubConfig,
) -> None:
    session = config.data_root / "sessions" / "abc"
    session.mkdir(parents=True)
    (session / "session.json").write_text("{}")
    with open_root(config):
        pass
    assert read_stamp(config.data_root)["profile"] == "development"  # type: ignore[index]
    [line] = audit_lines(config.data_root)
    assert line["operation"] == "stamp"
    assert line["details"] == {"legacy": True}
    assert (session / "session.json").read_text() == "{}"


def test_a_directory_of_unrelated_files_is_not_adopted_as_a_data_root(
    config: StubConfig,
) -> None:
    config.data_root.mkdir(parents=True)
    (config.data_root / "thesis.tex").write_text("precious")
    (config.data_root / ".tmp").mkdir()
    (config.data_root / ".tmp" / "notes").write_text("also precious")

    with pytest.raises(DataRootStateError, match=r"not the app's \(thesis.tex\)") as caught:
        open_root(config)
    assert str(caught.value).startswith(f"data root {config.data_root}: the directory is not")
    assert caught.value.fix.startswith(f"point data_root of profile {config.profile!r} at a new")

    assert sorted(p.name for p in config.data_root.iterdir()) == [".tmp", "thesis.tex"]
    assert (config.data_root / ".tmp" / "notes").read_text() == "also precious"
    assert probe(config.data_root).held is False


def test_a_second_writer_is_refused_naming_the_first(config: StubConfig) -> None:
    with (
        open_root(config, kind="server", port=8000),
        pytest.raises(DataRootInUseError) as refused,
    ):
        open_root(config, wanted="purge sessions", timeout=0)
    message = str(refused.value)
    assert message.startswith("cannot purge sessions: data root")
    assert f"pid {os.getpid()}, kind server, profile development" in message
    assert "port 8000" in message
    assert refused.value.exit_code == 75


def test_the_lock_is_released_on_close(config: StubConfig) -> None:
    root = open_root(config, kind="tests")
    assert probe(config.data_root).held is True
    assert probe(config.data_root).holder["kind"] == "tests"  # type: ignore[index]
    root.close()
    root.close()
    assert probe(config.data_root).held is False
    assert (config.data_root / LOCK_FILE).exists()


def test_a_reader_creates_nothing_and_takes_no_lock(config: StubConfig, tmp_path: Path) -> None:
    root = open_root(config, write=False)
    assert root.lock is None
    assert root.stamp is None
    assert not config.data_root.exists()
    assert not (tmp_path / "data").exists()

    open_root(config).close()
    before = sorted(config.data_root.rglob("*"))
    with open_root(config, kind="server"), open_root(config, write=False) as reader:
        assert reader.stamp is not None
        assert reader.stamp["profile"] == "development"
        with pytest.raises(RuntimeError, match="read-only"):
            reader.audit("purge", "everything")
    assert sorted(config.data_root.rglob("*")) == before


def test_a_root_outside_the_sandbox_is_refused_before_anything_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    monkeypatch.setenv("PYTEST_APP_SANDBOX", str(sandbox))
    outside = StubConfig("production", tmp_path / "production-data")

    for write in (True, False):
        with pytest.raises(SandboxViolationError) as refused:
            open_root(outside, write=write)
        assert str(outside.data_root) in str(refused.value)
        assert str(sandbox) in str(refused.value)
    with pytest.raises(SandboxViolationError):
        restamp(outside, "development")
    assert not outside.data_root.exists()

    inside = StubConfig("testing", sandbox / "data" / "testing")
    open_root(inside).close()
    assert inside.data_root.is_dir()


def test_a_crash_leftover_in_tmp_is_removed_and_audited_by_the_next_writer(
    config: StubConfig,
) -> None:
    with open_root(config) as root:
        handle, leftover = root.new_temp_file()
        handle.write(b"half an upload")
        handle.close()
    assert leftover.exists()  # as a crash would leave it

    with open_root(config) as root:
        assert list(root.tmp_dir.iterdir()) == []
    [line] = audit_lines(config.data_root)
    assert line["operation"] == "clear-tmp"
    assert line["details"] == {"removed": [leftover.name]}


def test_an_audit_line_names_time_pid_profile_kind_argv_and_target(
    config: StubConfig,
) -> None:
    with open_root(config, kind="maintenance") as root:
        root.audit("trash-session", "abc123", reason="purge", count=2)
        root.audit("empty-trash", root.trash_dir)
    first, second = audit_lines(config.data_root)
    assert set(first) == {
        "time",
        "pid",
        "profile",
        "kind",
        "argv",
        "operation",
        "target",
        "details",
    }
    assert first["pid"] == os.getpid()
    assert first["profile"] == "development"
    assert first["kind"] == "maintenance"
    assert first["argv"] == sys.argv
    assert first["operation"] == "trash-session"
    assert first["target"] == "abc123"
    assert first["details"] == {"reason": "purge", "count": 2}
    assert str(first["time"]).endswith("+00:00")
    assert second["target"] == str(config.data_root / ".trash")
    assert stat.S_IMODE((config.data_root / AUDIT_FILE).stat().st_mode) == 0o600


def test_an_atomic_write_leaves_no_temporary_file_behind(config: StubConfig) -> None:
    with open_root(config) as root:
        dest = root.sessions_dir / "abc" / "session.json"
        dest.parent.mkdir()
        root.atomic_write_json(dest, {"id": "abc", "title": "été"})
        root.atomic_write_bytes(root.sessions_dir / "abc" / "blob", b"\x00\x01")
        root.atomic_write_json(dest, {"id": "abc", "title": "replaced"})
        assert json.loads(dest.read_text()) == {"id": "abc", "title": "replaced"}
        assert (root.sessions_dir / "abc" / "blob").read_bytes() == b"\x00\x01"
        assert list(root.tmp_dir.iterdir()) == []


def test_a_failed_atomic_write_leaves_neither_temp_nor_partial_file(config: StubConfig) -> None:
    with open_root(config) as root:
        dest = root.sessions_dir / "missing-dir" / "session.json"
        with pytest.raises(FileNotFoundError):
            root.atomic_write_bytes(dest, b"{}")
        assert not dest.exists()
        assert list(root.tmp_dir.iterdir()) == []


def test_a_streamed_temp_file_is_committed_into_place(config: StubConfig) -> None:
    with open_root(config) as root:
        handle, tmp = root.new_temp_file()
        assert tmp.parent == root.tmp_dir
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
        with handle:
            for chunk in (b"a" * 10, b"b" * 10):
                handle.write(chunk)
        dest = root.sessions_dir / "upload.bin"
        root.commit_temp_file(tmp, dest)
        assert dest.read_bytes() == b"a" * 10 + b"b" * 10
        assert not tmp.exists()


def test_writes_outside_the_root_or_into_tmp_are_refused(
    config: StubConfig, tmp_path: Path
) -> None:
    with open_root(config) as root:
        for dest in (
            tmp_path / "elsewhere.json",
            root.sessions_dir / ".." / ".." / "escape.json",
            root.tmp_dir / "x",
        ):
            with pytest.raises(ValueError, match="refusing to write"):
                root.atomic_write_bytes(dest, b"{}")
        (root.sessions_dir / "link").symlink_to(tmp_path)
        with pytest.raises(ValueError, match="not inside data root"):
            root.atomic_write_bytes(root.sessions_dir / "link" / "x", b"{}")
        assert list(root.tmp_dir.iterdir()) == []
    assert not (tmp_path / "elsewhere.json").exists()
    assert not (tmp_path / "x").exists()


def test_ensure_held_reports_a_deleted_lock_file(config: StubConfig) -> None:
    with open_root(config, kind="server") as root:
        root.ensure_held()
        (config.data_root / LOCK_FILE).unlink()
        with pytest.raises(LockLostError, match="was deleted"):
            root.ensure_held()


def test_a_closed_root_refuses_writes(config: StubConfig) -> None:
    root = open_root(config)
    root.close()
    assert not root.writable
    with pytest.raises(RuntimeError, match="closed"):
        root.atomic_write_bytes(config.data_root / "sessions" / "x", b"")


def test_describe_reports_holder_and_stamp_without_creating_anything(
    config: StubConfig, tmp_path: Path
) -> None:
    missing = describe(config.data_root)
    assert missing.exists is False
    assert missing.stamp is None
    assert missing.probe.held is False
    assert not (tmp_path / "data").exists()

    with open_root(config, kind="server", port=8001):
        status = describe(config.data_root)
    assert status.exists is True
    assert status.probe.held is True
    assert status.probe.holder["port"] == 8001  # type: ignore[index]
    assert status.stamp["profile"] == "development"  # type: ignore[index]
    as_json = json.loads(json.dumps(status.to_dict()))
    assert as_json["held"] is True
    assert as_json["holder"]["pid"] == os.getpid()


def test_describe_reports_a_broken_stamp_instead_of_failing(config: StubConfig) -> None:
    open_root(config).close()
    (config.data_root / STAMP_FILE).write_text("{not json")
    status = describe(config.data_root)
    assert status.stamp is None
    assert status.stamp_error is not None
    assert "not valid JSON" in status.stamp_error
    with pytest.raises(DataRootStateError, match="not valid JSON"):
        open_root(config)
    assert probe(config.data_root).held is False


@pytest.mark.parametrize("name", [".tmp", ".trash", "sessions"])
def test_a_layout_directory_that_is_a_symlink_is_refused_and_its_target_untouched(
    config: StubConfig, tmp_path: Path, name: str
) -> None:
    open_root(config).close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    (config.data_root / name).rmdir()
    (config.data_root / name).symlink_to(elsewhere)
    with pytest.raises(DataRootStateError, match=f"{name} is a symbolic link"):
        open_root(config)
    assert (elsewhere / "precious.txt").read_text() == "keep me"
    assert probe(config.data_root).held is False


def test_a_write_replaces_a_symlink_at_its_name_rather_than_writing_through_it(
    config: StubConfig,
) -> None:
    with open_root(config) as root:
        other = root.sessions_dir / "other"
        other.write_bytes(b"another session's bytes")
        planted = root.sessions_dir / "planted"
        planted.symlink_to(other)
        root.atomic_write_bytes(planted, b"new")
        assert other.read_bytes() == b"another session's bytes"
        assert not planted.is_symlink()
        assert planted.read_bytes() == b"new"


def test_a_write_through_a_symlinked_directory_inside_the_root_is_refused(
    config: StubConfig,
) -> None:
    with open_root(config) as root:
        (root.sessions_dir / "a").mkdir()
        (root.sessions_dir / "b").symlink_to(root.sessions_dir / "a")
        with pytest.raises(ValueError, match="symbolic link"):
            root.atomic_write_bytes(root.sessions_dir / "b" / "x", b"{}")
        assert list((root.sessions_dir / "a").iterdir()) == []
        assert list(root.tmp_dir.iterdir()) == []


def _check_dest_with_pathlib(root: DataRoot, dest: Path) -> Path:
    """`DataRoot._check_dest` as it was written with pathlib (before perf-server59)."""
    resolved_root = root.path.resolve()
    parent = dest.parent.resolve()
    if not parent.is_relative_to(resolved_root) or dest.name in {"", ".", ".."}:
        raise ValueError(f"refusing to write {dest}: it is not inside data root {root.path}")
    final = parent / dest.name
    if final.is_relative_to(resolved_root / ".tmp"):
        raise ValueError(
            f"refusing to write {dest}: {root.tmp_dir} holds only in-flight temporary files"
        )
    lexical = Path(os.path.abspath(dest.parent))
    if lexical.is_relative_to(root.path):
        lexical = resolved_root / lexical.relative_to(root.path)
    if lexical != parent:
        raise ValueError(
            f"refusing to write {dest}: its directory passes through a symbolic link "
            f"(it resolves to {parent}); the data root holds no symbolic links"
        )
    return final


def test_the_destination_check_in_strings_answers_as_pathlib_did(
    config: StubConfig, tmp_path: Path
) -> None:
    """Every write's destination check (`DataRoot._check_dest`) works on strings since
    perf-server59: each destination is accepted as the same path, or refused with the same
    error and message, as the pathlib version that came before."""
    with open_root(config) as root:
        sessions = root.sessions_dir
        (sessions / "a").mkdir()
        (sessions / "b").symlink_to(sessions / "a")
        (sessions / "out").symlink_to(tmp_path)
        (sessions / "loop-1").symlink_to(sessions / "loop-2")
        (sessions / "loop-2").symlink_to(sessions / "loop-1")
        (sessions / "dangling").symlink_to(sessions / "nowhere")
        dests = [
            sessions / "x.json", sessions / "a" / "x", sessions / "b" / "x",
            sessions / "out" / "x", sessions / "loop-1" / "x", sessions / "dangling" / "x",
            sessions / "missing" / "deeper" / "x", sessions / ".." / ".." / "escape",
            sessions / ".." / "sessions" / "x", sessions / "a" / ".." / "x",
            root.tmp_dir / "x", root.tmp_dir, root.path / ".tmpfoo", root.path / "x",
            root.path, root.path / "..", sessions / "a" / ".", tmp_path / "elsewhere",
            Path("/"), Path("/x"), Path("relative") / "x",
        ]  # fmt: skip
        for dest in dests:
            try:
                expected: Path | tuple[type[BaseException], str] = _check_dest_with_pathlib(
                    root, dest
                )
            except (ValueError, RuntimeError) as error:
                expected = (type(error), str(error))
            try:
                got: Path | tuple[type[BaseException], str] = root._check_dest(dest)
            except (ValueError, RuntimeError) as error:
                got = (type(error), str(error))
            assert got == expected, dest


def test_json_bytes_are_json_dumps_bytes_whatever_the_value() -> None:
    """The app's files hold ``json.dumps(indent=2, sort_keys=True, ensure_ascii=False)``
    plus a newline; `json_bytes` builds it without the standard library's pure-Python
    indenting encoder (perf-server59) and must give the same bytes, or the same error."""
    deep: list[object] = []
    for _ in range(40):
        deep = [{"k": deep}]  # 80 deep: json.dumps writes it
    cycle: dict[str, object] = {}
    cycle["self"] = cycle
    values: list[object] = [
        {"id": "s_1", "title": "t", "metadata": {}, "files": [], "created_at": "2026"},
        {"b": [1, 2.5, -0.0, True, False, None, "x"], "a": {"z": {}, "y": [[]], "é": "ü"}},
        {"ctl": "\x00\x1f\n\t\"\\/\u2028\x7f", "": "", " ": 1e300, "n": 10**40},
        [float("nan"), float("inf"), float("-inf"), 1e-7, 123456789.125],
        {"tuple": (1, 2)}, {1: "int key"}, {"nested": {True: 1, False: 2, 3.5: 3}}, deep,
        "plain", 7, None, [], {}, {"s": "a" * 1000},
    ]  # fmt: skip

    def with_json_dumps(value: object) -> bytes:
        return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    for value in values:
        assert json_bytes(value) == with_json_dumps(value), value
    unwritable_values = (
        cycle,
        {"a": object()},
        {"x": 1, 2: "mixed"},
        {"s": "\ud800"},
        {None: 1, True: 2},
    )
    for unwritable in unwritable_values:
        with pytest.raises((ValueError, TypeError)) as expected:
            with_json_dumps(unwritable)
        with pytest.raises(expected.type, match=re.escape(str(expected.value))):
            json_bytes(unwritable)


def _counting_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the process's fsyncs from now on (each still reaches the disk)."""
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_a_test_runs_root_is_opened_without_fsyncs_and_written_durably(
    app_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.store import Store

    config = app_config
    fsyncs = _counting_fsyncs(monkeypatch)
    with open_root(config, kind="tests") as root:
        # Creating, stamping and locking a root in the run's sandbox: nothing to survive a
        # power loss for, the run ends with it. Its lock and stamp are there all the same.
        assert fsyncs == []
        assert probe(config.data_root).holder is not None
        assert json.loads((config.data_root / STAMP_FILE).read_text())["profile"] == "testing"
        Store(root).create_session("durable", None)
        # session.json, its staging directory, sessions/: as on any root.
        assert len(fsyncs) == 3
    assert len(fsyncs) == 3  # the lock emptied on release, unsynced
    assert probe(config.data_root).holder is None


def test_the_run_s_own_root_is_held_without_fsyncs_only_inside_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.testing.guard import hold_session_root

    sandbox = tmp_path / "sandbox"
    fsyncs = _counting_fsyncs(monkeypatch)
    inside = hold_session_root(sandbox / "testing", sandbox)
    assert probe(sandbox / "testing").holder is not None  # published all the same
    inside.release()
    assert fsyncs == []
    hold_session_root(tmp_path / "elsewhere", sandbox).release()
    assert len(fsyncs) == 2  # the holder written, then emptied on release


def test_a_root_in_a_sandbox_only_the_environment_names_is_opened_durably(
    config: StubConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The variable alone may come from anyone's shell: it never turns fsyncs off.
    from app import sandbox as sandboxing

    run = sandboxing.current_run()
    assert run is not None and run.pid is not None
    named_only = sandboxing.Run(run.sandbox, None, run.protected, "the environment")
    fsyncs = _counting_fsyncs(monkeypatch)
    sandboxing.swap(run, named_only)
    try:
        open_root(config, kind="tests").close()
    finally:
        sandboxing.swap(named_only, run)
    # The root's parent, the lock's holder, the stamp and its rename, the lock's release.
    assert len(fsyncs) == 5
