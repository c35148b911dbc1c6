"""The tutorial's commands, run in order against a real server, read from the page itself.

docs/tutorial.md sections 2 to 5 are executed: every ``$`` line of their console blocks is
either run or named below as deliberately not run, so the page cannot show a step that no
test has tried. ``curl`` lines are parsed and sent with httpx (same method, headers, body and
URL, with the server's address and token put in): ``curl`` itself is not a dependency of the
test suite. ``app`` lines run the real command in a subprocess on the server's data root.
What section 1 quotes of the server's first start is compared with the server's log.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import forked_app
import httpx
import pytest

from app.testing import LiveServer

PAGE = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
PAGE_URL = "http://127.0.0.1:8000"
STOP_MARKER = "<!-- tutorial-test: stop the server"
#: Lines the test does not run, and why: the fixture stands for them, or another test runs them.
NOT_RUN = {
    "bash scripts/serve": "installs and starts the server: the live_server fixture does "
    "that (on a fresh root, and its log is compared with what section 1 quotes)",
    ".venv/bin/python -m venv .venv-": "installs the site's and the fuzzer's tools, which the "
    "suite's run needs: compared below with what scripts/test installs, and the environment "
    "made without pip",
    ".venv/bin/pytest": "a whole test run: tests/test_docs_generated.py runs pytest next to a "
    "held root and checks the header this step shows (with `python -m pytest`, which puts the "
    "project directory on sys.path: tests/test_docs_pages.py checks that no test module needs "
    "it, as the console script does not)",
}


@dataclass
class Step:
    line: str
    status: int  # HTTP status for curl, exit code for app and echo $?
    output: str


def tutorial_steps() -> list[str]:
    """The `$` lines of sections 2 to 5, continuations joined; STOP_MARKER kept as a step."""
    text = PAGE.read_text(encoding="utf-8")
    body = text[text.index("## 2.") : text.index("## What next")]
    steps: list[str] = []
    for block in re.finditer(r"(<!-- tutorial-test:[^\n]*\n)?```console\n(.*?)```", body, re.S):
        if block.group(1):
            steps.append(STOP_MARKER)
        pending: str | None = None
        for raw in block.group(2).splitlines():
            if pending is not None:
                pending += " " + raw.strip()
            elif raw.startswith("$ "):
                pending = raw[2:].strip()
            else:
                continue
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
                continue
            steps.append(pending)
            pending = None
    return steps


class Tutorial:
    """A reader following the page in their clone (`cwd`), next to `server`.

    ``mktemp -d`` runs for real, with ``TMPDIR`` set to `scratch`; ``rm -r`` only removes
    what it made there.
    """

    def __init__(self, server: LiveServer, cwd: Path, scratch: Path) -> None:
        self.server = server
        self.cwd = cwd
        self.scratch = scratch
        self.vars: dict[str, str] = {}
        self.last_created: str | None = None
        self.last_exit = 0
        self.steps: list[Step] = []

    def expand(self, line: str) -> str:
        for name, value in self.vars.items():
            line = line.replace(f"${{{name}}}", value).replace(f"${name}", value)
        return line

    def run(self, line: str) -> None:
        if line == STOP_MARKER:
            self.stop_server()
            return
        if any(line.startswith(prefix) or f" {prefix}" in line for prefix in NOT_RUN):
            return
        made = re.fullmatch(r"([A-Z_]+)=\$\(mktemp -d\)", line)
        if made:
            env = {**os.environ, "TMPDIR": str(self.scratch)}
            result = subprocess.run(
                ["mktemp", "-d"], env=env, capture_output=True, text=True, check=True
            )
            self.vars[made.group(1)] = result.stdout.strip()
            return
        assignment = re.fullmatch(r"([A-Z_]+)=(<the id>|\S+)", line)
        if assignment:
            name, value = assignment.groups()
            if value == "<the id>":
                assert self.last_created, "the page sets ID before creating a session"
                value = self.last_created
            self.vars[name] = value
            return
        words = shlex.split(self.expand(line))
        if words[0] == "curl":
            self.steps.append(self.curl(line, words[1:]))
        elif words[0] == ".venv/bin/app":
            self.steps.append(self.app(line, words[1:]))
        elif words == ["echo", "$?"]:
            self.steps.append(Step(line, self.last_exit, str(self.last_exit)))
        elif words[0] == "echo" and len(words) >= 3 and words[-2] == ">":
            (self.cwd / words[-1]).write_text(" ".join(words[1:-2]) + "\n")
        elif words[:2] == ["rm", "-r"] and len(words) == 3:
            target = (self.cwd / words[2]).resolve()
            assert target.is_relative_to(self.scratch.resolve()), f"`{line}` removes {target}"
            shutil.rmtree(target)
        else:
            pytest.fail(
                f"docs/tutorial.md shows `{line}`, which this test does not know how to run"
            )

    def curl(self, line: str, args: list[str]) -> Step:
        method, url, headers = None, None, {}
        content: bytes | None = None
        files = None
        words = iter(args)
        for word in words:
            if word == "-s":
                continue
            if word == "-X":
                method = next(words)
            elif word == "-H":
                name, value = next(words).split(":", 1)
                headers[name.strip()] = value.strip()
            elif word == "-d":
                content = next(words).encode()
            elif word == "-F":
                field, at = next(words).split("=", 1)
                assert at.startswith("@"), f"`{line}`: only -F field=@file is supported"
                path = self.cwd / at[1:]
                files = {field: (path.name, path.read_bytes())}
            elif word.startswith("-"):
                pytest.fail(f"`{line}` uses the curl option {word}, which this test cannot send")
            else:
                url = word
        assert url is not None and url.startswith(PAGE_URL), f"`{line}` names no page URL"
        if method is None:
            method = "POST" if content is not None or files else "GET"
        token = headers.get("Authorization", "")
        if token:  # the page's development token stands for the server's own
            headers["Authorization"] = self.server.headers["Authorization"]
        response = httpx.request(
            method,
            self.server.url + url[len(PAGE_URL) :],
            headers=headers,
            content=content,
            files=files,
            timeout=10,
        )
        if method == "POST" and url.endswith("/sessions") and response.status_code == 201:
            self.last_created = response.json()["id"]
        return Step(line, response.status_code, response.text)

    def app(self, line: str, args: list[str]) -> Step:
        env = {
            **os.environ,
            "ENV_FOR_DYNACONF": "testing",  # the live server's profile, and its root
            "APP_DATA_ROOT": str(self.server.data_root),
        }
        # Forked from the run's zygote (tests/forked_app.py): the step checks what the command
        # prints and its exit code, which the interpreter's start does not change.
        result = forked_app.run(env, list(args), self.cwd)
        self.last_exit = result.returncode
        return Step(line, result.returncode, result.stdout + result.stderr)

    def stop_server(self) -> None:
        """What Ctrl-C does in the first terminal: SIGINT, then the lock is released."""
        from app.lock import probe

        os.kill(self.server.pid, signal.SIGINT)
        for _ in range(300):
            if not probe(self.server.data_root).held:
                return
            time.sleep(0.05)
        pytest.fail("the server still held its data root 15 s after SIGINT")


def test_the_tutorial_page_lists_the_steps_this_test_runs() -> None:
    steps = tutorial_steps()
    assert steps.count(STOP_MARKER) == 1
    assert any(step.startswith("curl") for step in steps)
    assert "ID=<the id>" in steps


def test_the_tutorial_works_against_a_real_server(
    app_live_server: LiveServer, tmp_path: Path
) -> None:
    clone, scratch = tmp_path / "clone", tmp_path / "tmp"
    clone.mkdir()
    scratch.mkdir()
    check_step_1(app_live_server)
    reader = Tutorial(app_live_server, clone, scratch)
    for line in tutorial_steps():
        reader.run(line)
    # It used to leave hello.txt in the clone; its scratch directory is removed at the end.
    assert list(clone.iterdir()) == []
    assert list(scratch.iterdir()) == []
    steps = reader.steps
    session_id = reader.vars["ID"]
    by_line = [(step.line, step.status) for step in steps]

    curls = [step for step in steps if step.line.startswith("curl")]
    assert [step.status for step in curls] == [201, 201, 200, 200], by_line
    assert json.loads(curls[1].output)["name"] == "hello.txt"
    assert curls[2].output == "hello\n"  # the file, untouched, after the "test run"
    assert json.loads(curls[3].output)["trash"].endswith(session_id)

    apps = [step for step in steps if step.line.startswith(".venv/bin/app")]
    restores = [step for step in apps if " restore " in step.line]
    assert len(restores) == 2
    refused, restored = restores
    assert refused.status == 75, refused.output
    assert "kind server" in refused.output, refused.output
    assert restored.status == 0, restored.output
    assert [s.status for s in apps if s not in restores] == [0] * (len(apps) - 2), by_line
    assert any(step.line == "echo $?" and step.output == "75" for step in steps)
    status = next(step for step in apps if step.line.endswith("app status"))
    assert "kind server" in status.output, status.output
    listings = [step for step in apps if step.line.endswith("sessions list")]
    assert all(session_id in step.output and "1 file(s)" in step.output for step in listings)
    trash = next(step for step in apps if step.line.endswith("list --trash"))
    assert session_id in trash.output

    # The paths section 3 names on disk, after the restore put the session back.
    named = re.findall(r"`(?:data/development/)?(sessions/<id>/[\w./]+)`", PAGE.read_text())
    assert len(named) >= 2, named
    for path in named:
        where = app_live_server.data_root / path.replace("<id>", session_id)
        assert where.is_dir() and any(where.iterdir()) if path.endswith("/") else where.is_file(), (
            f"docs/tutorial.md names `{path}`, which the server's data root does not hold"
        )

    audit = [
        json.loads(line)
        for line in (app_live_server.data_root / "audit.jsonl").read_text().splitlines()
    ]
    operations = [(r["operation"], r["target"]) for r in audit if r["operation"] != "clear-tmp"]
    assert ("trash-session", session_id) in operations, operations
    assert ("restore-session", session_id) in operations, operations


def step_1_quotes() -> list[str]:
    """What section 1 quotes of the server's start (code spans with `...`), fences left out."""
    text = PAGE.read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```", "", text[text.index("## 1.") : text.index("## 2.")], flags=re.S)
    # A span that wraps onto the next line is one quote too (Markdown shows a space).
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    return [quote for quote in spans if "..." in quote]


def check_step_1(server: LiveServer) -> None:
    """Section 1 was run by no test and did not say that a fresh clone's first start warns
    that it created the data root. The fixture's server starts on a fresh root too, on the
    testing profile: each quote must match what it printed, with its profile for the page's."""
    said = server.log.read_text()
    quotes = step_1_quotes()
    assert quotes, "section 1 quotes what the server says at its first start"
    for quote in quotes:
        parts = quote.replace("profile development", "profile testing").split("...")
        regex = ".+?".join(re.escape(part.strip()) for part in parts if part.strip())
        assert re.search(regex, said), (
            f"docs/tutorial.md quotes `{quote}`; the server said:\n{said}"
        )


def test_the_tutorial_installs_the_environments_the_suite_needs_as_scripts_test_does(
    tmp_path: Path,
) -> None:
    """Section 4 ran the whole suite in a clone that had only `.venv`: the site's build and the
    fuzzing test failed ("mkdocs is not installed", "schemathesis is not installed"), as they
    do wherever `bash scripts/test` has not run. The page now makes `.venv-docs` and
    `.venv-fuzz` first, with what scripts/test installs there.

    It made them with `python3 -m venv`: where PATH's python3 is not the interpreter `.venv`
    was made from (pyenv's 3.11.7 before Debian's /usr/bin/python3, which scripts/serve
    chose, on this machine kind), the reader's next `bash scripts/test` found both "made
    from another Python" and made them afresh (docs review 70). They are made from `.venv`'s
    own Python now: the venv step of each line is run here (without pip, which the page's
    install then runs), and the environment it makes is of the same build as this one's."""
    import sys
    import tomllib

    project = PAGE.parent.parent
    fuzz = tomllib.loads((project / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["fuzz"]
    script = (project / "scripts" / "test").read_text()
    assert "set_up .venv-docs -e '.[docs]'" in script and "set_up .venv-fuzz" in script
    maker = ".venv/bin/python -m venv "
    installs = [step for step in tutorial_steps() if step.startswith(maker)]
    assert installs == [
        maker + ".venv-docs && .venv-docs/bin/pip install -q -e '.[docs]'",
        maker
        + ".venv-fuzz && .venv-fuzz/bin/pip install -q "
        + " ".join(shlex.quote(spec) for spec in fuzz),
    ], installs
    # What scripts/environments.sh compares (`built_as`) before it keeps an environment.
    built_as = "import math, ssl, sys; print(sys.base_prefix, sys.version)"
    ours = subprocess.run(
        [sys.executable, "-c", built_as], check=True, capture_output=True, text=True
    )
    for step in installs:
        made = tmp_path / shlex.split(step)[4]
        venv = [sys.executable, "-m", "venv", "--without-pip", str(made)]
        subprocess.run(venv, check=True, capture_output=True)
        python = made / "bin" / "python"
        theirs = subprocess.run([python, "-c", built_as], check=True, capture_output=True)
        assert theirs.stdout.decode() == ours.stdout != "", (step, theirs, ours)
    steps = tutorial_steps()
    assert max(map(steps.index, installs)) < next(
        i for i, step in enumerate(steps) if ".venv/bin/pytest" in step
    )
