"""Red team 56 on the guard (branch rt-guard39): paths written as text by one process and
read by another in a locale of another encoding.

What broke (pytest and the app in subprocesses, the app's plugin active, real directories):

- a run's registry entry and a sandbox root's stamp hold paths (the sandbox, each protected
  root) as JSON text, and each reader took that text through its own locale's encoding. A
  run in a UTF-8 locale whose sandbox lies under a directory named ``données`` (a user's
  ``~/Téléchargements``, a project checked out there) wrote ``é``; a child of its test run
  with ``LC_ALL=C PYTHONUTF8=0`` (Python then names files in ASCII, each other byte as an
  escape) cannot name it, and every load of the app in that child was a
  ``UnicodeEncodeError`` traceback: the child's own testing root, and production's refusal;
- a ``data_root`` with a letter beyond ASCII in ``settings.toml`` (TOML is UTF-8) made every
  command under ``LC_ALL=C PYTHONUTF8=0`` a ``UnicodeEncodeError`` traceback (``app config``,
  ``app doctor``, ``app serve``), and a ``/srv/données`` given in ``APP_DATA_ROOT`` there was
  refused as "a byte that is not UTF-8". In a locale of another encoding (Latin-1), the same
  text would have named other bytes, another directory than the server's (untried: no such
  locale is installed here);
- the stamp of a root a run makes in its sandbox names that sandbox, for the next run with
  the same ``--basetemp``, which empties only roots whose stamp names it: a run in the ASCII
  locale read a UTF-8 run's ``données`` as another directory and refused its own
  ``--basetemp``.

What changed: ``app.sandbox.path_as_text`` writes a path as the UTF-8 text of its bytes (a
byte that is not UTF-8 as Python's escape), and ``path_from_text`` reads such text, and a
path of a settings file, back as the reader names the same bytes. The registry's sandbox and
protected roots, a stamp's sandbox and every path setting of a settings file go through them;
a path setting's characters are checked as the UTF-8 text of its bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import copy_project_settings
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _stopped_production

#: Python naming files in ASCII: the C locale without Python's UTF-8 mode.
ASCII = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}

#: The inner test: a child with the run's environment loads testing, and one given
#: production's settings alone tries to purge it, both with Python naming files in ASCII.
INNER = """
import os, subprocess, sys

ASCII = {ascii!r}
SHOW = "import os; from app.config import load; print(os.fsencode(load().data_root).hex())"


def test_children_in_an_ascii_locale():
    own = subprocess.run(
        [sys.executable, "-c", SHOW], env={{**os.environ, **ASCII}}, capture_output=True
    )
    print("OWN", own.returncode, own.stdout.strip().decode(), repr(own.stderr[-3000:]))
    alone = {{
        **ASCII,
        "PATH": os.environ["PATH"],
        "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"],
        "ENV_FOR_DYNACONF": "production",
        "APP_API_TOKEN": "t" * 40,
    }}
    purge = subprocess.run(
        [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
        env=alone,
        capture_output=True,
    )
    print("PURGE", purge.returncode, repr(purge.stderr[-3000:]))
"""


#: A test that makes a root in its sandbox, stamped with the sandbox's name.
STORE = """
def test_store(app_store):
    app_store.create_session(title="made", metadata={})
"""


def _pytest(
    project: Path, settings: Path, basetemp: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """pytest in `project` on `settings`, with `basetemp` and `env` (a locale)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            f"--basetemp={basetemp}",
            *args,
        ],
        cwd=project,
        env={**_inner_env(APP_SETTINGS_DIR=str(settings)), **env},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def beyond_ascii(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch directory named with a letter beyond ASCII (``données``)."""
    return tmp_path_factory.mktemp("s56") / "données"


def test_a_child_in_an_ascii_locale_reads_its_run_under_a_directory_beyond_ascii(
    beyond_ascii: Path,
) -> None:
    settings, production = _stopped_production(beyond_ascii)
    kept = sorted(p.name for p in (production / "sessions").iterdir())
    project = beyond_ascii / "project"
    project.mkdir()
    (project / "test_inner.py").write_text(INNER.format(ascii=ASCII), encoding="utf-8")
    basetemp = beyond_ascii / "bt"
    done = _pytest(project, settings, basetemp, "-s")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    own = next(line for line in done.stdout.splitlines() if line.startswith("OWN"))
    # The run's own testing root, in its sandbox, named by the same bytes.
    expected = os.fsencode(basetemp / "data" / "testing").hex()
    assert own.startswith(f"OWN 0 {expected} "), out
    purge = next(line for line in done.stdout.splitlines() if line.startswith("PURGE"))
    assert purge.startswith("PURGE 78 "), out
    assert "refused under pytest" in purge, out
    assert "loading profile 'production'" in purge, out
    assert "Traceback" not in out, out
    assert sorted(p.name for p in (production / "sessions").iterdir()) == kept


def test_a_settings_path_beyond_ascii_names_one_directory_in_every_locale(
    beyond_ascii: Path,
) -> None:
    settings = beyond_ascii / "named"
    settings.mkdir(parents=True)
    production = beyond_ascii / "production-é"
    (settings / "settings.toml").write_text(
        '[development]\ndata_root = "développement"\n\n[testing]\ndata_root = "tests"\n\n'
        f'[production]\ndata_root = "{production}"\nprotected = true\n',
        encoding="utf-8",
    )
    # A child of this run: it loads testing (mapped into the sandbox) after resolving and
    # checking every profile's root; what the files name is printed as bytes.
    show = (
        "import os; from app.config import load, configured_roots; load(); "
        "print(*(os.fsencode(p).hex() for p, _ in configured_roots().values()))"
    )
    env = {**os.environ, "APP_SETTINGS_DIR": str(settings)}
    utf8, ascii_ = (
        subprocess.run(
            [sys.executable, "-c", show],
            env={**env, **locale},
            capture_output=True,
            text=True,
            check=False,
        )
        for locale in ({"PYTHONUTF8": "1"}, ASCII)
    )
    assert utf8.returncode == 0, utf8.stderr
    assert "Traceback" not in ascii_.stderr, ascii_.stderr
    assert ascii_.returncode == 0, ascii_.stderr
    assert os.fsencode(production).hex() in utf8.stdout.split(), utf8.stdout
    assert ascii_.stdout == utf8.stdout
    # And a root beyond ASCII given in the environment is a root, not "a byte not UTF-8".
    config = subprocess.run(
        [sys.executable, "-m", "app", "config"],
        env={**env, **ASCII, "APP_DATA_ROOT": str(beyond_ascii / "données-de-test")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stderr


def test_a_basetemp_beyond_ascii_is_reused_by_a_run_in_another_locale(
    beyond_ascii: Path,
) -> None:
    # A run's stamp on the roots it makes names its sandbox; the next run with the same
    # --basetemp empties only roots whose stamp names it. Read in the ASCII locale, the
    # first run's `données` was another name, and the run was refused its own --basetemp.
    settings = copy_project_settings(beyond_ascii / "reused" / "settings")
    project = beyond_ascii / "reused" / "project"
    project.mkdir()
    (project / "test_store.py").write_text(STORE)
    basetemp = beyond_ascii / "reused" / "bt"
    runs = [
        _pytest(project, settings, basetemp, **locale) for locale in ({"PYTHONUTF8": "1"}, ASCII)
    ]
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
