"""A path setting's links followed once a profile (`app.config._followed`, issue 11).

`_resolve_profile` used to follow a root's links four times a profile: `_unfollowable`
(through `config_files.unresolvable`), `_unnameable`, `_not_text_resolved` and the value
itself (each through `_absolute_root`). They now share one `realpath` and one `stat`. These
tests hold `_followed`'s two answers to the two functions' for every kind of path they tell
apart, and show that nothing is kept from one load to the next: a link changed between two
loads is followed as it is at the second.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import config as appconfig
from app.config import KEYS, _absolute_root, _followed, _unfollowable, load
from app.errors import ConfigError, DataRootOverlapError
from app.sandbox import SANDBOX_ENV


def _kinds(tmp_path: Path) -> list[str]:
    """Path settings' texts of every kind: plain, missing, relative, through a link, a
    dangling link, a loop of links, `..` after a link, and a file where a directory goes."""
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "file").write_text("x")
    return [
        str(tmp_path / "real"),
        str(tmp_path / "real" / "missing" / "root"),
        "relative/root",
        "./real/../link/deep",
        str(tmp_path / "link" / "deep" / "root"),
        str(tmp_path / "link" / ".." / "real"),
        str(tmp_path / "dangling" / "root"),
        str(tmp_path / "a" / "root"),
        str(tmp_path / "a"),
        str(tmp_path / "file" / "root"),
        "/proc/self/cwd/relative",
    ]


def test_followed_answers_as_the_root_and_the_link_check_each_did(tmp_path: Path) -> None:
    key = KEYS["data_root"]
    kinds = _kinds(tmp_path)
    for value in kinds:
        root, unfollowable = _followed(value, tmp_path)
        assert root == _absolute_root(value, tmp_path), value
        assert unfollowable == _unfollowable(key, value, tmp_path), value
    # The loop is told apart (a reason), and its root kept as spelled, as pathlib's
    # RuntimeError had `_absolute_root` keep it.
    root, reason = _followed(str(tmp_path / "a" / "root"), tmp_path)
    assert reason is not None and "loop of links" in reason
    assert root == tmp_path / "a" / "root"
    assert _followed(str(tmp_path / "link" / "deep"), tmp_path) == (
        tmp_path / "real" / "deep",
        None,
    )


@pytest.fixture
def own_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings of three profiles under `tmp_path`, testing's root through a link."""
    sandbox = Path(os.environ[SANDBOX_ENV]).resolve()
    assert tmp_path.resolve().is_relative_to(sandbox)
    for name in list(os.environ):
        if name.startswith(("APP_", "DYNACONF_")):
            monkeypatch.delenv(name)
    settings = tmp_path / "settings"
    settings.mkdir()
    roots = tmp_path / "roots"
    for name in ("development", "production", "elsewhere"):
        (roots / name).mkdir(parents=True)
    (tmp_path / "link").symlink_to(roots / "elsewhere")
    (settings / "settings.toml").write_text(
        '[default]\nhost = "127.0.0.1"\nport = 8000\n\n'
        f'[development]\ndata_root = "{roots / "development"}"\n\n'
        f'[testing]\ndata_root = "{tmp_path / "link" / "testing"}"\n\n'
        f'[production]\ndata_root = "{roots / "production"}"\nprotected = true\nport = 8080\n'
    )
    (settings / ".secrets.toml").write_text('[testing]\napi_token = "testing-token-not-secret"\n')
    monkeypatch.setenv(appconfig.config_files.SETTINGS_DIR_ENV, str(settings))
    monkeypatch.setenv("ENV_FOR_DYNACONF", "testing")
    return roots


def test_a_link_changed_between_two_loads_is_followed_as_it_is_at_the_second(
    own_settings: Path, tmp_path: Path
) -> None:
    roots = own_settings
    assert load("testing").data_root == roots / "elsewhere" / "testing"
    # The same settings' text, the same process: the link now leads into production's root.
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to(roots / "production")
    with pytest.raises(DataRootOverlapError) as caught:
        load("testing")
    assert caught.value.first_root == roots / "production" / "testing" or (
        caught.value.second_root == roots / "production" / "testing"
    )
    # And now a loop of links: refused as one, naming the link.
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to(tmp_path / "link")
    with pytest.raises(ConfigError) as looped:
        load("testing")
    assert "loop of links" in str(looped.value)
    assert str(tmp_path / "link") in str(looped.value)


class _RemovedOnceListed(os._Environ):  # type: ignore[type-arg]
    """This process's environment, where another thread removes variable `gone` just after
    a reader has listed the names (the interleaving a thread that calls ``os.environ.pop``
    makes, here at once and every time): read one by one, its value is no longer there."""

    gone = "APP_RT66D_GONE"

    def __iter__(self) -> Iterator[str]:
        names = list(super().__iter__())
        self._data.pop(self.encodekey(self.gone), None)  # as `unsetenv` by another thread
        yield from names


def test_a_load_survives_a_variable_another_thread_removes_as_it_copies_the_environment(
    own_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = own_settings
    monkeypatch.setenv(_RemovedOnceListed.gone, "1")
    real = os.environ
    racing = _RemovedOnceListed(
        dict(real._data), real.encodekey, real.decodekey, real.encodevalue, real.decodevalue
    )
    monkeypatch.setattr(os, "environ", racing)
    # Before: a bare KeyError traceback, from the copy of the environment each load makes.
    assert load("testing").data_root == roots / "elsewhere" / "testing"
    assert _RemovedOnceListed.gone not in os.environ


#: Spellings `inside` must judge as pathlib does: absolute and relative, the root, POSIX's
#: two leading slashes, `..`, a sibling whose name begins with the other's, the empty path.
_SPELLINGS = (
    "/",
    "//",
    "//srv",
    "/srv",
    "/srv/app",
    "/srv/app/data",
    "/srv/application",
    "/srv/app/../app/data",
    "/srv/app/..",
    "srv/app",
    "srv",
    "",
    ".",
    "..",
)


def test_inside_judges_every_pair_of_paths_as_is_relative_to_does() -> None:
    from pathlib import PurePosixPath

    from app.sandbox import inside

    for first in _SPELLINGS:
        for second in _SPELLINGS:
            a, b = PurePosixPath(first), PurePosixPath(second)
            assert inside(a, b) == a.is_relative_to(b), (first, second)


def test_a_path_s_limits_are_asked_of_the_nearest_directory_there(tmp_path: Path) -> None:
    from app.config import _limit

    def walked(path: Path, name: str, default: int) -> int:
        # The walk before issue 11's cut, by pathlib's parents.
        for directory in (path, *path.parents):
            try:
                return os.pathconf(directory, name)
            except (OSError, ValueError):
                continue
        return default

    (tmp_path / "real").mkdir()
    (tmp_path / "file").write_text("x")
    for path in (
        tmp_path / "real",
        tmp_path / "missing" / "deeper" / "root",
        tmp_path / "file" / "under",
        tmp_path / "real" / ".." / "missing",
        Path("/"),
        Path("//"),
        Path(str(tmp_path) + "/nul\0name/root"),
    ):
        for name, default in (("PC_PATH_MAX", 4096), ("PC_NAME_MAX", 255)):
            assert _limit(path, name, default) == walked(path, name, default), path


def test_resolved_elsewhere_answers_alike_given_the_path_s_resolving(tmp_path: Path) -> None:
    # Issue 11: the caller's `realpath` of the path (`_followed`'s, `resolving`'s) serves
    # `resolved_elsewhere` where the path itself exists; where it does not, the deepest
    # directory that does is resolved as before. Same answer for every kind of path.
    from app.config_files import resolved_elsewhere, resolving

    kinds = [os.path.join(tmp_path, kind) for kind in _kinds(tmp_path)]
    kinds += [f"/proc/self/root{tmp_path}/real", f"/proc/{os.getpid()}/cwd", "/", "//"]
    for path in kinds:
        resolved, _ = resolving(path)
        if resolved is not None:
            assert resolved_elsewhere(path, resolved) == resolved_elsewhere(path), path


def test_a_load_resolves_the_settings_directory_and_an_existing_root_once(
    own_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 11: the settings directory was resolved three times a load with nothing made
    # between (the look for a link that cannot be followed, the look for another namespace's
    # link, `Path.resolve`), and an existing root twice (`_followed`, `_misresolved`).
    settings = tmp_path / "settings"
    resolved = settings.resolve()
    development = str(own_settings / "development")
    looked: list[str] = []
    lstat = os.lstat

    def counted(path: str | Path, *args: object, **kwargs: object) -> os.stat_result:
        looked.append(os.fsdecode(path))
        return lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", counted)
    assert appconfig.config_files.settings_dir() == resolved
    assert looked.count(str(settings)) == 1, looked
    looked.clear()
    assert load("testing").data_root == own_settings / "elsewhere" / "testing"
    monkeypatch.undo()
    assert looked.count(development) == 1, looked
