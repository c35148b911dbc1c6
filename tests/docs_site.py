"""The documentation site, built once per run with ``mkdocs build --strict``.

Under xdist the workers share one build: the first to take the lock beside it builds, the
others wait for that lock and read the same result (before, each worker that ran a browser
test built the site again). A serial run starts the build when collection ends
(tests/head_start.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from filelock import FileLock

PROJECT = Path(__file__).resolve().parent.parent


class Build:
    """The built site and what ``mkdocs build`` said."""

    def __init__(self, site: Path, returncode: int, stdout: str, stderr: str) -> None:
        self.site = site
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def output(self) -> str:
        return f"{self.stdout}\n{self.stderr}"


def _shared(factory: pytest.TempPathFactory) -> Path:
    """The run's temporary root: the workers' basetemps are directories of it under xdist."""
    basetemp = factory.getbasetemp()
    return basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp


#: ``python -m mkdocs`` (runpy runs it as ``-m`` does: the same ``sys.argv[1:]``, as
#: ``__main__``) with Python's cyclic garbage collector off. A build makes millions of
#: objects (ElementTree nodes, Jinja contexts), freed by reference counting; the collector's
#: passes over the growing heap cost about 8% of the build's CPU (7.2 against 7.9 s, medians
#: of four alternated pairs; peak RSS 150 against 113 MB), and the site it writes is
#: byte-identical (``diff -r``). mkdocs has no switch for it, nor Python a variable.
WITHOUT_GC = (
    "import gc, runpy; gc.disable(); "
    "runpy.run_module('mkdocs', run_name='__main__', alter_sys=True)"
)


def mkdocs_python() -> Path:
    """The interpreter of the docs' own environment (the `docs` extra in pyproject.toml)."""
    python = PROJECT / ".venv-docs" / "bin" / "python"
    if not python.is_file():
        pytest.fail(
            f"mkdocs is not installed: {python} is missing. `bash scripts/test` installs it "
            "(python3 -m venv .venv-docs && .venv-docs/bin/pip install -e '.[docs]')",
            pytrace=False,
        )
    return python


def build(factory: pytest.TempPathFactory, environ: dict[str, str]) -> Build:
    """The run's build of the site: made now (in `environ`), unless another worker of the
    run made it."""
    directory = _shared(factory) / "docs-site"
    record = directory / "build.json"
    with FileLock(directory.with_suffix(".lock")):
        if not record.exists():
            directory.mkdir(exist_ok=True)
            env = {**environ, "NO_MKDOCS_2_WARNING": "1"}
            site = directory / "site"
            result = subprocess.run(
                [
                    str(mkdocs_python()),
                    "-c",
                    WITHOUT_GC,
                    "build",
                    "--strict",
                    "-q",
                    "-d",
                    str(site),
                ],
                cwd=PROJECT,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            made = {"returncode": result.returncode, "stdout": result.stdout}
            record.write_text(json.dumps({**made, "stderr": result.stderr}))
        given = json.loads(record.read_text())
    return Build(directory / "site", given["returncode"], given["stdout"], given["stderr"])
