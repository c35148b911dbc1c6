"""Red team 42 on the guard (branch rt-guard26): a test's child pytest that loads neither of
the package's pytest entry points.

Beside a stopped production root, a test's child ``python -m pytest`` with plugin autoload
off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` in a hand-built environment, or pytest's own
``--disable-plugin-autoload`` option, which needs no environment at all), or with
``-p no:app -p no:app_fallback``, ran none of the app's code: ``--basetemp=<production
root>`` emptied the whole root as its first test asked for ``tmp_path``, ``--junitxml``
rewrote its profile stamp, ``TMPDIR`` in it made pytest's directories there, and without a
``--basetemp`` its clean-up at its end deleted an older numbered directory holding a live
server's root (the *not stopped* rows of red teams 39 to 41). The package now installs
``app-pytest-guard.pth``, which registers the fallback (`app.testing.startup`) in every
pytest run of the environment that has not registered the app's plugin: each is refused, or
the directory kept, with the fallback's words.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_redteam_s23_guard import _shell_without_the_run, numbered_with_a_failed_test_s_root
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s40_guard import CHILD, INNER, _tests_beside
from test_server_e2e import Server, app_env

from app import sandbox as sandboxing

ROOT = 'os.environ["PRODUCTION"]'
AUTOLOAD_OFF = '{"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}'
BASETEMP = (
    "app: refusing --basetemp {production}: pytest empties it before the run, and it "
    "overlaps the data root of profile 'production (protected by the enclosing test run, "
    "pytest pid "
)


@pytest.mark.parametrize(
    ("env", "args", "refused"),
    [
        (AUTOLOAD_OFF, f'["--basetemp=" + {ROOT}]', BASETEMP),
        ("{}", f'["--disable-plugin-autoload", "--basetemp=" + {ROOT}]', BASETEMP),
        (
            "{}",
            (
                '["-p", "no:app", "-p", "no:app_fallback", "-p", '
                f'"no:app.testing.startup:fallback", "--basetemp=" + {ROOT}]'
            ),
            BASETEMP,
        ),
        (
            AUTOLOAD_OFF,
            f'["--junitxml=" + os.path.join({ROOT}, ".app-profile.json")]',
            (
                "app: refusing to run: pytest's --junitxml rewrites {production}/"
                ".app-profile.json as the run ends, which lies in the data root of profile "
                "'production (protected by the enclosing test run, pytest pid "
            ),
        ),
        (
            "{}",
            f'["--disable-plugin-autoload", "--junitxml=" + os.path.join({ROOT}, "x.xml")]',
            (
                "The app's plugin is switched off in this run (`--disable-plugin-autoload` on "
                "pytest's command line), and pytest writes there all the same"
            ),
        ),
        (
            f'{{"TMPDIR": {ROOT}, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}}',
            "[]",
            (
                "app: refusing to run: pytest would create (and clean up) its temporary "
                "directories in {production}/pytest-of-"
            ),
        ),
    ],
    ids=["autoload-off", "option", "both-off", "junitxml", "junitxml-option", "tmpdir"],
)
def test_a_child_pytest_that_loads_no_entry_point_of_the_app_cannot_reach_a_stopped_root(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    env: str,
    args: str,
    refused: str,
) -> None:
    # Installed by `pip install -e .` since red team 42: an older environment lacks it.
    assert "_app_pytest_guard" in sys.modules, (
        "app-pytest-guard.pth is not installed in this environment: run "
        "`.venv/bin/python -m pip install -e .` again"
    )
    text = (
        CHILD.replace("ENV", env)
        .replace("ARGS", args)
        .replace("CONFTEST)", "'')")
        .replace("INNER)", f"{INNER!r})")
    )
    # `_tests_beside` fails the test if the child changed any file of production's root.
    production, output = _tests_beside(stopped, tmp_path, text)
    assert "CHILD 0" not in output, output
    assert refused.format(production=production) in output, output


def test_pytest_s_own_option_that_turns_autoload_off_is_named_where_the_plugin_is_missed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `_switched_off_by` knew the variable only: a refusal said nothing of the option.
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.setattr(sys, "argv", ["pytest", "--disable-plugin-autoload", "-q"])
    by = "`--disable-plugin-autoload` on pytest's command line"
    assert sandboxing._switched_off_by() == by
    assert sandboxing.why_no_plugin().startswith(f"plugin autoload is off ({by}): add `-p app`")


def test_a_live_root_a_pytest_with_autoload_off_makes_due_is_kept(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Session 39's case (`python -m pytest -p no:app`: its clean-up at its end deleted an
    # older numbered directory holding a live server's root), with autoload off instead: no
    # entry point is loaded, and the fallback registered through the .pth keeps it.
    numbered, root = numbered_with_a_failed_test_s_root(tmp_path / "temproot")
    server = Server(app_env(root), tmp_path / "server.log").wait_ready()
    try:
        with server.client() as client:
            assert client.post("/sessions", json={"title": "kept"}).status_code == 201
        _shell_without_the_run(monkeypatch, tmp_path / "temproot")
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        (numbered / "pytest-4").mkdir()
        pytester.makepyfile(test_inner="def test_inner(tmp_path):\n    pass\n")
        result = pytester.run(sys.executable, "-mpytest", "-p", "no:cacheprovider", "test_inner.py")
        output = result.stdout.str() + result.stderr.str()
        assert result.ret == 0, output
        assert (numbered / "pytest-5").is_dir(), output
        assert (root / ".app-profile.json").is_file(), output  # the server may answer from memory
        assert server.process.poll() is None
        with server.client() as client:
            assert client.get("/sessions").json()["total"] == 1, output
        assert (
            f"app: kept {numbered / 'pytest-2'}: pytest deletes it at the end of this run (it "
            "keeps only the last 3 of its temporary directories, tmp_path_retention_count), "
            f"but it holds the data root {root}, held by pid {server.pid}, kind server"
        ) in output, output
    finally:
        server.stop()
