"""Red team 42 on the guard (branch rt-guard26): draft."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s40_guard import CHILD, INNER, SESSIONS, _tests_beside

SHOWN = INNER + "    print('TMP', tmp_path)\n"
AUTOLOAD_OFF = '{"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}'


@pytest.mark.parametrize(
    ("env", "args"),
    [
        (AUTOLOAD_OFF, f'["--basetemp=" + os.environ["PRODUCTION"]]'),
        ("{}", f'["-p", "no:app", "-p", "no:app_fallback", "--basetemp=" + os.environ["PRODUCTION"]]'),
        ("{}", '["--disable-plugin-autoload", "--basetemp=" + os.environ["PRODUCTION"]]'),
        (AUTOLOAD_OFF, '["--junitxml=" + os.path.join(os.environ["PRODUCTION"], ".app-profile.json")]'),
        ('{"TMPDIR": os.environ["PRODUCTION"], "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}', "[]"),
    ],
    ids=["autoload-off", "both-off", "option", "junitxml", "tmpdir"],
)
def test_a_child_pytest_with_autoload_off_cannot_reach_a_stopped_root(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    env: str,
    args: str,
) -> None:
    text = (
        CHILD.replace("ENV", env)
        .replace("ARGS", args)
        .replace("CONFTEST)", "'')")
        .replace("INNER)", f"{SHOWN!r})")
    )
    production, output = _tests_beside(stopped, tmp_path, text)
    assert "CHILD 0" not in output, output
    print(output)

