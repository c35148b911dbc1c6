"""The check of what pytest writes resolves each directory once per check
(`app.testing.writes._directories_resolved_once`): it must find every path exactly where
``realpath`` does, links on the way, at the end, dangling or in a loop included."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from app.testing import writes


def test_each_spelling_is_where_realpath_finds_it(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "file").write_text("x")
    (tmp_path / "dir-link").symlink_to(real)
    (tmp_path / "file-link").symlink_to(real / "sub" / "file")
    (tmp_path / "relative-link").symlink_to("real/sub")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "at-all")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    values = [
        "file-link", "dir-link/sub/file", "dir-link/sub", "relative-link/file", "dangling",
        "loop-a", "missing", "missing/deeper", "dir-link/../real/sub", "relative-link/..",
        "real/./sub//file", "~/x", "$HOME/x", "", ".", "..", "/", str(tmp_path / "file-link"),
    ]  # fmt: skip
    for value in values:
        plain = writes._spellings(value, tmp_path)
        with writes._directories_resolved_once():
            once = writes._spellings(value, tmp_path)
        assert once == plain, value
        joined = os.path.join(tmp_path, os.path.expanduser(os.path.expandvars(value)))
        assert Path(os.path.realpath(joined)) in once, value
        assert Path(os.path.realpath(os.path.normpath(joined))) in once, value


def test_a_link_planted_between_two_checks_is_seen_by_the_second(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "elsewhere").mkdir()
    with writes._directories_resolved_once():
        assert tmp_path / "a" / "out.xml" in writes._spellings("a/out.xml", tmp_path)
    (tmp_path / "a").rmdir()
    (tmp_path / "a").symlink_to(tmp_path / "elsewhere")
    with writes._directories_resolved_once():
        found = writes._spellings("a/out.xml", tmp_path)
    assert tmp_path / "elsewhere" / "out.xml" in found


def test_a_loop_of_links_where_an_option_names_a_path_does_not_stop_the_guard(
    pytester: pytest.Pytester,
) -> None:
    # `--junitxml=loop-a`, `loop-a` -> `loop-b` -> `loop-a`: the check of what pytest writes
    # stopped the run with "RuntimeError: Symlink loop" (pathlib's resolve), a traceback from
    # the guard. Nothing can be opened through a loop: the run goes on, and pytest says for
    # itself that it cannot write its report there.
    (pytester.path / "loop-a").symlink_to("loop-b")
    (pytester.path / "loop-b").symlink_to("loop-a")
    pytester.makepyfile("def test_one():\n    pass\n")
    result = pytester.run(sys.executable, "-mpytest", "-p", "pytester", "--junitxml=loop-a")
    output = result.stdout.str() + result.stderr.str()
    assert "Symlink loop" not in output, output
    assert "app: profile=testing" in output, output
    assert "collected 1 item" in output, output
    # pytest's own error as it writes the report (as without the plugin):
    assert "OSError: [Errno 40] Too many levels of symbolic links" in output, output


def test_a_path_taken_as_written_passes_through_no_process_link(tmp_path: Path) -> None:
    """`writes._as_written` (each directory resolved once a pass of `_findings`) answers
    True only where ``realpath`` leaves the path as written, so `process_link` finds none:
    a link on the way or at the end, a path not normalised, and no pass go to it."""
    from app.sandbox import process_link

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "file").write_text("x")
    (tmp_path / "dir-link").symlink_to(tmp_path / "real")
    (tmp_path / "fd-link").symlink_to("/proc/self/fd/2")
    (tmp_path / "cwd-link").symlink_to("/proc/self/cwd")
    names = [
        "real/file", "real/missing", "dir-link/file", "fd-link", "cwd-link/x", "real/../real",
        "missing/deeper",
    ]  # fmt: skip
    directories: dict[str, str] = {}
    for name in names:
        path = Path(os.path.join(tmp_path, name))  # as written, `..` kept
        written = writes._as_written(path, directories)
        assert written == (os.path.realpath(path) == str(path)), name
        if written:
            assert process_link(path) is None, name
    assert not writes._as_written(tmp_path / "real" / "file", None)
    assert writes._as_written(Path("/proc/self/fd/2"), {}) is False
