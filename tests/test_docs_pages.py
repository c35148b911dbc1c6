"""Facts the documentation pages repeat from elsewhere, checked against their source."""

from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
DOCS = PROJECT / "docs"


def _readme_commands() -> list[str]:
    """The commands of the README's first shell block (comment lines left out)."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```(?:sh|bash|console)\n(.*?)```", readme, re.DOTALL)
    assert block, "README.md has no shell block"
    return [
        line.strip()
        for line in block.group(1).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def console_commands(markdown: str) -> list[str]:
    """The `$ ` lines of a page's console blocks, with `\\` continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```console\n(.*?)```", markdown, re.DOTALL):
        pending: str | None = None
        for raw in block.splitlines():
            if pending is not None:
                pending += " " + raw.strip()
            elif raw.lstrip().startswith("$ "):
                pending = raw.lstrip()[2:].strip()
            else:
                continue
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
                continue
            commands.append(pending)
            pending = None
    return commands


def test_the_home_page_shows_the_readme_commands_verbatim() -> None:
    shown = console_commands((DOCS / "index.md").read_text(encoding="utf-8"))
    commands = _readme_commands()
    assert len(commands) == 2, commands
    for command in commands:
        assert command in shown, f"docs/index.md does not show the README's `{command}`"


def test_the_readme_links_to_the_documentation() -> None:
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    assert "mkdocs serve" in readme
    assert "docs/index.md" in readme


@functools.cache
def _error_messages() -> tuple[str, ...]:
    """One real message of every error (the catalogue's examples) and the captured outputs
    (made once per process: three tests read them)."""
    import importlib.util
    import sys

    path = DOCS / "examples" / "error_examples.py"
    spec = importlib.util.spec_from_file_location("_docs_example_error_examples", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    from app.errors import DataRootOverlapError, UnknownProfileError

    messages = [str(error) for error in module.EXAMPLES]
    shared = Path("/srv/app/data")  # the catalogue shows the nested case; this is the other
    messages.append(str(DataRootOverlapError("a", shared, "here", "b", shared, "there")))
    messages.append(str(UnknownProfileError("", ["development"], "ENV_FOR_DYNACONF")))
    messages += [p.read_text() for p in (DOCS / "generated").glob("refusal-*.txt")]
    return tuple(messages)


def test_the_refusal_table_quotes_messages_the_code_produces() -> None:
    page = (DOCS / "how-to" / "resolve-refusals.md").read_text(encoding="utf-8")
    table = page[page.index("## Other refusals you may meet") :]
    # Every code span of each row's first cell: a row that quoted two messages was skipped.
    cells = re.findall(r"^\| (`.+?) \| \d+ \|", table, re.MULTILINE)
    patterns = [span for cell in cells for span in re.findall(r"`([^`]+)`", cell)]
    assert len(cells) == table.count("\n| `") and len(patterns) > len(cells), patterns
    messages = _error_messages()
    for pattern in patterns:
        parts = [re.escape(part.strip()) for part in pattern.split("...")]
        regex = re.compile(".+?".join(part for part in parts if part))
        assert any(regex.search(message) for message in messages), (
            f"docs/how-to/resolve-refusals.md quotes `{pattern}`, which no message of the "
            "code matches (see docs/examples/error_examples.py)"
        )


_MEASURED = re.compile(r"\d[\d,]*\.\d+|\d{1,3}(?:,\d{3})+|\d+(?= MiB/s| req/s| us\b| ms\b)")


def _measured_numbers(text: str) -> set[str]:
    return set(_MEASURED.findall(text))


def test_the_performance_numbers_are_the_ones_bench_readme_records() -> None:
    """Numbers are copied from bench/README.md (the benchmarks' own record), never invented."""
    bench = (PROJECT / "bench" / "README.md").read_text(encoding="utf-8")
    performance = (DOCS / "reference" / "performance.md").read_text(encoding="utf-8")
    isolation = (DOCS / "explanation" / "isolation.md").read_text(encoding="utf-8")
    costs = isolation[isolation.index("## What it costs") : isolation.index("## The guarantees")]
    for page, text in (("reference/performance.md", performance), ("isolation.md", costs)):
        numbers = _measured_numbers(text)
        assert len(numbers) > 5, numbers
        missing = sorted(n for n in numbers if n not in bench)
        assert not missing, f"docs/{page} cites {missing}, which bench/README.md does not record"


def test_pages_that_include_an_example_file_report_no_skip() -> None:
    """`pytest -rs` showed three skips pointing into site-packages, one per page that
    includes docs/examples/*.py: Sybil could not run a snippet include, so it was skipped."""
    import os
    import sys

    import forked_pytest

    pages = ["how-to/restore-session.md", "how-to/switch-profiles.md", "reference/pytest-plugin.md"]
    for page in pages:
        assert '--8<-- "docs/examples/' in (DOCS / page).read_text(encoding="utf-8"), page
    # Forked from a warm interpreter where it can be (tests/forked_pytest.py): its start is
    # not what this checks.
    result = forked_pytest.run(
        [sys.executable, "-mpytest", "-rs", "-p", "no:cacheprovider"]
        + [str(DOCS / page) for page in pages],
        dict(os.environ),
        PROJECT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" not in result.stdout.lower(), result.stdout
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout


def _normalised(title: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", title.lower()).strip()


def _layer_headings() -> dict[int, str]:
    """The seven layers, as docs/explanation/isolation.md names them (DESIGN.md's list)."""
    page = (DOCS / "explanation" / "isolation.md").read_text(encoding="utf-8")
    found = {int(n): title for n, title in re.findall(r"^## Layer (\d): (.+)$", page, re.M)}
    assert list(found) == list(range(1, 8)), found
    return found


def test_the_readme_numbers_the_layers_as_the_docs_do() -> None:
    """The README listed five layers, the docs seven."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    listed = {int(n): title for n, title in re.findall(r"^(\d)\. \*\*(.+?)\*\*", readme, re.M)}
    headings = _layer_headings()
    assert list(listed) == list(headings), listed
    for number, title in headings.items():
        assert _normalised(listed[number]) == _normalised(title), (number, listed[number], title)


def test_layer_numbers_in_the_explanations_link_to_the_layer_they_name() -> None:
    """incident.md cited bare numbers that no page defined; every mention is now a link.

    That each anchor is a heading of isolation.md, `mkdocs build --strict` checks
    (`validation.anchors` in mkdocs.yml, tests/test_docs_browser.py); here, that it is the
    heading of the layer the link names."""
    layers = _layer_headings()
    link = re.compile(r"\[layer (\d)\]\((?:\.\./explanation/)?isolation\.md#([\w-]+)\)")
    pages = [DOCS / "explanation" / "incident.md", DOCS / "explanation" / "comparison.md"]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        links = link.findall(text)
        assert links, page
        for number, anchor in links:
            named = f"{page.name}: layer {number} -> #{anchor}"
            assert int(number) in layers and anchor.startswith(f"layer-{number}-"), named
        bare = re.findall(r"\blayers? \d", link.sub("", text), re.I)
        assert bare == [], f"{page.name} names layers by number without a link: {bare}"


def _app_exit_codes() -> set[int]:
    """Every exit code `app` can end with: the sysexits constants and every error's code."""
    import app.errors as errors

    constant_names = {k for k in vars(errors) if k.startswith("EX_")}
    constants = {getattr(errors, k) for k in constant_names}
    classes: list[type[errors.AppError]] = [errors.AppError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    assert {cls.exit_code for cls in classes} <= constants
    cli = (PROJECT / "app" / "cli.py").read_text(encoding="utf-8")
    exits = re.findall(r"sys\.exit\(([^)]*)\)", cli)
    # Each is an error's code or one of the constants counted above.
    assert exits and all(arg.endswith("exit_code") or arg in constant_names for arg in exits), exits
    return constants


def test_the_readme_lists_every_exit_code_the_program_uses() -> None:
    """The README's list missed 70 (lock lost) and pytest's 4 (the plugin refuses a run)."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    sentence = readme[readme.index("Exit codes of `app`:") :].split("\n\n")[0]
    app_part, pytest_part = sentence.split("A test run", 1)
    assert {int(n) for n in re.findall(r"\b(\d+) ", app_part)} == _app_exit_codes()
    assert "exits 4 (pytest's usage error)" in pytest_part
    assert int(pytest.ExitCode.USAGE_ERROR) == 4
    # The plugin refuses a run through `guard.usage_error`, a pytest.UsageError.
    plugin = (PROJECT / "app" / "testing" / "plugin.py").read_text(encoding="utf-8")
    guard = (PROJECT / "app" / "testing" / "guard.py").read_text(encoding="utf-8")
    assert "raise guard.usage_error(" in plugin
    assert "return pytest.UsageError(" in guard
    cli_page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    table = {int(n) for n in re.findall(r"^\| (\d+) \|", cli_page, re.M)}
    assert table == _app_exit_codes(), "docs/reference/cli.md's exit code table"


def _command_lines() -> list[tuple[str, str]]:
    """(where, command) for every README shell line and every `$` line of the docs."""
    found = []
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", readme, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        found += [("README.md", line) for line in joined.splitlines()]
    for page in sorted(DOCS.rglob("*.md")) + sorted((DOCS / "generated").glob("*.txt")):
        text = page.read_text(encoding="utf-8")
        lines = console_commands(text) if page.suffix == ".md" else []
        lines += [ln[2:] for ln in text.splitlines() if page.suffix == ".txt" and ln[:2] == "$ "]
        found += [(str(page.relative_to(PROJECT)), line) for line in lines]
    return found


def test_commands_name_the_app_by_its_path_as_the_readme_does() -> None:
    """The how-tos wrote a bare `app`, the README `.venv/bin/app` without saying why."""
    import shlex

    bare = []
    for where, line in _command_lines():
        words = shlex.split(line, comments=True)
        for index, word in enumerate(words):
            starts_command = index == 0 or words[index - 1] in {"&&", "||", "|", ";"}
            # pytest too: the tutorial's header showed `$ ... pytest`, the page `.venv/bin/pytest`.
            if word in {"app", "pytest", "mkdocs"} and (starts_command or "=" in words[index - 1]):
                bare.append(f"{where}: {line}")
    assert bare == [], (
        "write .venv/bin/app, .venv/bin/pytest or .venv-docs/bin/mkdocs (or /opt/app/.venv/...):\n"
        + "\n".join(bare)
    )
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    assert ". .venv/bin/activate" in readme
    assert ". .venv/bin/activate" in (DOCS / "how-to" / "index.md").read_text(encoding="utf-8")


def _words(page: str) -> int:
    return len((DOCS / page).read_text(encoding="utf-8").split())


def test_the_isolation_page_reads_in_ten_minutes() -> None:
    """It had grown to 6,968 words, most of them a catalogue of attacks; that lives in
    explanation/attacks/, and this page keeps the layers (about 250 words a minute)."""
    assert _words("explanation/isolation.md") <= 2500


_STATUS = re.compile(r"^- \*(held|broke, now refused|broke, now held|not stopped)\*", re.M)
#: The attacks' catalogue: an index and one page per layer (one page of 2.3 MB built until
#: session 75, 3.5 to 4.3 s of a browser's CPU to open: bench/README.md, perf-attacks75).
ATTACKS = DOCS / "explanation" / "attacks"


def _attack_layers() -> dict[int, tuple[str, str, str]]:
    """Each layer's page of the catalogue by its number: its title (the page's h1), its name
    and its text."""
    layers = {}
    for page in sorted(ATTACKS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        title = re.search(r"^# Layer (\d): (.+)$", text, re.M)
        if title:
            layers[int(title.group(1))] = (title.group(2), page.name, text)
    return layers


def test_the_attacks_page_has_a_section_per_layer_and_a_verdict_per_attack() -> None:
    """The catalogue moved out of isolation.md; red teams add to it, one bullet per attack, on
    the page of its layer, which the catalogue's index lists in order."""
    layers = _attack_layers()
    assert {n: title for n, (title, _, _) in layers.items()} == _layer_headings()
    index = (ATTACKS / "index.md").read_text(encoding="utf-8")
    listed = re.findall(r"^(\d)\. \[Layer \d: [^]]+\]\(([\w-]+\.md)\)", index, re.M)
    assert listed == [(str(n), name) for n, (_, name, _) in sorted(layers.items())], listed
    bullets = [
        bullet
        for page in [index] + [text for _, _, text in layers.values()]
        for bullet in re.findall(r"^- .*$", page, re.M)
    ]
    unmarked = [bullet for bullet in bullets if not _STATUS.match(bullet)]
    assert unmarked == [], "each attack starts with its verdict, e.g. `- *held*: ...`"
    assert len(bullets) > 40, len(bullets)


def test_the_attacks_page_lists_every_limit_at_its_top() -> None:
    """A reader who wants the limits should not have to read 11,000 words for them: the
    table of the catalogue's index has one row per *not stopped* entry, under the same
    layer as the layer's page that explains it."""
    top = (ATTACKS / "index.md").read_text(encoding="utf-8")
    listed = Counter(re.findall(r"^\| (\d) \| ", top, re.M))
    explained: Counter[str] = Counter()
    for number, (_, _, text) in _attack_layers().items():
        explained[str(number)] += len(re.findall(r"^- \*not stopped\*", text, re.M))
    assert listed == explained, (
        f"the table of explanation/attacks/index.md lists {dict(listed)} limits per layer, "
        f"the layers' pages explain {dict(explained)}: add or remove its row"
    )


def test_the_home_page_has_a_reading_path_of_twenty_minutes() -> None:
    """index.md's "Read this first" numbers the newcomer's pages; together they stay short
    (about 6,000 words, with the tutorial's commands to type)."""
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    section = index[index.index("## Read this first") :].split("\n## ", 1)[0]
    steps = "\n".join(re.findall(r"^\d+\. .*(?:\n {3}.*)*", section, re.M))
    pages = re.findall(r"\]\(([\w/-]+\.md)(?:#[\w-]+)?\)", steps)
    assert "explanation/isolation.md" in pages and "tutorial.md" in pages, pages
    # A step read "down to its table of other refusals" is counted down to that table: its
    # rows are looked up, not read, and counting them made each new refusal's row cost the
    # reading path its words.
    partial = re.findall(r"\]\(([\w/-]+\.md)\) \([^)]*down to its table of ([^)]+)\)", steps)
    assert [page for page, _ in partial] == ["how-to/resolve-refusals.md"], partial
    cut = {page: "\n## " + " ".join(title.split()).capitalize() for page, title in partial}
    total = 0
    for page in dict.fromkeys(["index.md", *pages]):
        text = (DOCS / page).read_text(encoding="utf-8")
        if page in cut:
            assert cut[page] in text, (page, cut[page])
            text = text[: text.index(cut[page])]
        total += len(text.split())
    assert total <= 6000, total


#: The commands of the reading path's pages that no test runs as written, each with where
#: it is checked instead: the tutorial keeps its own list (tests/test_docs_tutorial.py's
#: NOT_RUN) and the home page's two commands are the README's, which .ci/run runs.
READING_PATH_NOT_RUN = {
    "how-to/run-tests.md": {
        "bash scripts/test": "the whole suite: .ci/run runs it, as the README's first block",
        ".venv/bin/python bench/fuzz.py": "a long fuzzing run; its options are checked against "
        "the script by test_the_pages_pytest_and_bench_commands_name_options_and_files_that_exist",
        ".venv/bin/pytest": "a whole or partial run of the suite; its options and files are "
        "checked by test_the_pages_pytest_and_bench_commands_name_options_and_files_that_exist, "
        "strict mode's refusal by tests/test_plugin*.py",
    },
    "how-to/resolve-refusals.md": {
        ".venv/bin/app data restamp --profile staging": "needs add-profile.md's staging profile "
        "(tests/test_docs_howtos.py runs that page); tests/test_docs_generated.py runs the "
        "restamp from production and docs/conftest.py parses this line against the command",
    },
}


def _reading_path() -> list[str]:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    section = index[index.index("## Read this first") :].split("\n## ", 1)[0]
    return re.findall(r"^\d+\. .*?\]\(([\w/-]+\.md)", section, re.M)


def test_every_command_on_the_reading_path_is_run_or_says_where_it_is_checked() -> None:
    """The reading path promises that its examples are executed. Its tutorial's steps are
    run, but run-tests.md's and resolve-refusals.md's commands were run by no test and listed
    nowhere (resolve-refusals.md's restamp exited 78 on a fresh clone, unnoticed). A command
    added to a page of the path must now be run by a test or named here with the reason."""
    pages = _reading_path()
    assert "tutorial.md" in pages and "how-to/resolve-refusals.md" in pages, pages
    for page in pages:
        if page in ("index.md", "tutorial.md", "explanation/isolation.md"):
            continue  # the README's commands; its own NOT_RUN; no console block
        listed = READING_PATH_NOT_RUN.get(page, {})
        commands = console_commands((DOCS / page).read_text(encoding="utf-8"))
        for command in commands:
            assert any(command.startswith(prefix) for prefix in listed), (
                f"docs/{page} shows `{command}`, which no test runs: run it in a test, or add "
                "it to READING_PATH_NOT_RUN with where it is checked"
            )
        for prefix in listed:
            assert any(c.startswith(prefix) for c in commands), (page, prefix, "stale entry")
    assert not console_commands((DOCS / "explanation/isolation.md").read_text(encoding="utf-8"))
    assert set(READING_PATH_NOT_RUN) <= set(pages), READING_PATH_NOT_RUN.keys()


def test_the_routes_said_to_need_no_token_are_the_ones_that_answer_without_it(
    app_client,  # type: ignore[no-untyped-def]
) -> None:
    """configuration.md said every endpoint but `GET /health` needs the token, http-api.md
    left out `/ready`: both now name the same four, checked against the server."""
    table = (DOCS / "generated" / "http-routes.md").read_text(encoding="utf-8")
    open_routes = set(re.findall(r"^\| `GET` \| `([^`]+)` \| no \|", table, re.M))
    expected = sorted(open_routes | {"/docs", "/openapi.json"})
    del app_client.headers["Authorization"]
    for path in expected:
        assert app_client.get(path).status_code == 200, path
    assert app_client.get("/sessions").status_code == 401
    pages = {
        "reference/configuration.md": r"every\s+route requires it except (.+?) \(",
        "reference/http-api.md": r"production always has one\. (.+?) never need it",
    }
    for page, sentence in pages.items():
        text = (DOCS / page).read_text(encoding="utf-8")
        found = re.search(sentence, text, re.S)
        assert found, page
        assert sorted(re.findall(r"`(/[\w./-]+)`", found.group(1))) == expected, page


def test_the_incident_page_names_the_exit_codes_the_unit_does_not_restart_on() -> None:
    """incident.md said 69 and 75 are not retried; the unit retries 75 after a pause. So did
    isolation.md's layer 4 ("a process manager can stop retrying" on a held root)."""
    unit = (DOCS / "how-to" / "deploy-production.md").read_text(encoding="utf-8")
    prevented = re.search(r"^RestartPreventExitStatus=(.+)$", unit, re.M)
    assert prevented
    incident = (DOCS / "explanation" / "incident.md").read_text(encoding="utf-8")
    row = next(ln for ln in incident.splitlines() if "restart loop on a port conflict" in ln)
    not_retried, _, retried = row.partition("not to retry")
    assert set(re.findall(r"\b\d\d\b", not_retried)) == set(prevented.group(1).split()), row
    assert re.findall(r"\b\d\d\b", retried) == ["75"], row
    assert "RestartSec=" in unit
    # isolation.md said a held root's code lets "a process manager stop retrying": the unit
    # retries 75; what it does not retry is the port conflict of the incident.
    isolation = (DOCS / "explanation" / "isolation.md").read_text(encoding="utf-8")
    said = re.search(r"A held root has its own\s+exit code, (\d+), (.+?)\.\n", isolation, re.S)
    assert said, "isolation.md's layer 4 names the held root's exit code"
    assert said.group(1) == "75" and "retries after" in said.group(2), said.group(0)
    not_retried = said.group(2).partition("does not retry")[2]
    assert set(re.findall(r"\b\d\d\b", not_retried)) <= set(prevented.group(1).split())


def _imported_at_import_time(module: str) -> set[str]:
    """The app modules `module` imports at its top level (not under TYPE_CHECKING, not in a
    function), each with its parent packages."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    package = module if spec.origin.endswith("__init__.py") else module.rpartition(".")[0]

    def statements(body: list[ast.stmt]) -> list[ast.stmt]:
        found: list[ast.stmt] = []
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.If | ast.Try):
                found += statements(node.body)
            else:
                found.append(node)
        return found

    names: set[str] = set()
    for node in statements(tree.body):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def test_the_python_api_lists_modules_in_the_order_they_import_each_other() -> None:
    """The page said each module imports only the ones above it; app.dataroot imported
    app.names, listed below it. One page per module since session 74 (the single page of all
    of them was 1.7 MB): the index lists them, and the site's navigation in the same order."""
    page = (DOCS / "reference" / "python-api" / "index.md").read_text(encoding="utf-8")
    order = re.findall(r"^- \[(app[\w.]*)\]\((app[\w.]*)\.md\)$", page, re.M)
    assert all(name == file for name, file in order), order
    order = [name for name, _ in order]
    assert len(order) > 20, order
    nav = (PROJECT / "mkdocs.yml").read_text(encoding="utf-8")
    navigated = re.findall(r"^ +- (app[\w.]*): reference/python-api/(app[\w.]*)\.md$", nav, re.M)
    assert navigated == [(name, name) for name in order], navigated
    place = {module: index for index, module in enumerate(order)}
    later = {
        module: sorted(name for name in _imported_at_import_time(module) if place.get(name, -1) > i)
        for i, module in enumerate(order)
    }
    assert {module: names for module, names in later.items() if names} == {}


def test_the_site_s_tools_are_named_in_their_own_environment() -> None:
    """mkdocs.yml's first line said `.venv/bin/mkdocs serve`; mkdocs lives in `.venv-docs`
    (a `.venv` holding it is remade by scripts/test), as the README and index.md say."""
    files = [PROJECT / "README.md", PROJECT / "mkdocs.yml", *sorted(DOCS.rglob("*.md"))]
    files += sorted((PROJECT / "scripts").iterdir())
    wrong = [
        f"{path.relative_to(PROJECT)}: {line.strip()}"
        for path in files
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(r"(?<![\w-])\.venv/bin/mkdocs\b", line)
    ]
    assert wrong == [], "write .venv-docs/bin/mkdocs:\n" + "\n".join(wrong)


@functools.cache
def _message_literals() -> tuple[str, ...]:
    """Every string literal of the app and its pytest guard, f-string fields as `{}` (parsed
    once per process: two tests read them)."""
    import ast

    sources = [*sorted((PROJECT / "app").rglob("*.py")), PROJECT / "_app_pytest_guard.py"]
    found: list[str] = []
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                found.append(
                    "".join(
                        part.value if isinstance(part, ast.Constant) else "{}"
                        for part in node.values
                    )
                )
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
    return tuple(found)


def test_messages_quoted_in_the_prose_are_ones_the_code_prints() -> None:
    """resolve-refusals.md's table was checked, but not the messages its prose quotes (`app:
    the testing data root is held by a live process: ...`), nor those of other pages. Every
    code span that starts as the app's messages do (`app: `, `Exit: app: `, `error: `) must
    match a message the code produces, or a literal of its source (`...` and `<...>` stand for
    what it names). explanation/attacks/ records messages as each round saw them: left out."""
    messages = _error_messages() + _message_literals()
    checked = 0
    for page in sorted(DOCS.rglob("*.md")):
        if page.parent == ATTACKS:
            continue
        prose = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        # A code span may wrap onto the next line (Markdown shows a space): such a quote
        # was left unchecked (resolve-refusals.md's `--basetemp` refusal wrapped so).
        for span in re.findall(r"`([^`]+)`", prose):
            quote = " ".join(span.split())
            if "\n\n" in span or not re.match(r"(Exit: )?app: |error: ", quote):
                continue
            checked += 1
            parts = re.split(r"\.\.\.|<[\w-]+>", quote.removeprefix("Exit: "))
            regex = re.compile(".+?".join(re.escape(p) for p in parts if p.strip()))
            assert any(regex.search(message) for message in messages), (
                f"docs/{page.relative_to(DOCS)} quotes `{quote}`, which no message of the code "
                "matches"
            )
    assert checked >= 3, checked


def test_what_a_page_says_a_refusal_names_is_in_the_refusal() -> None:
    """resolve-refusals.md said "the refusal names the `flock -s <root>/.server.lock true`"
    (the wait for a holder, added this session), but no output on the page showed it and the
    check above takes only quotes that start as a message does: a remedy quoted in prose was
    compared with nothing. Every code span that a page says a refusal or message names must
    match a real message or captured output (`<...>` and `...` stand for what it names), or,
    where the code builds it from parts, appear in the order of one literal of the source."""
    messages = _error_messages()
    literals = _message_literals()
    checked = 0
    said = re.compile(r"(?:refusal|message|error) (?:then )?names (?:the )?`([^`]+)`")
    for page in sorted(DOCS.rglob("*.md")):
        if page.parent == ATTACKS:
            continue
        prose = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for span in said.findall(" ".join(prose.split())):
            checked += 1
            parts = [p for p in re.split(r"\.\.\.|<[\w-]+>", span) if p.strip()]
            regex = re.compile(".+?".join(re.escape(p) for p in parts))

            def in_order(literal: str, parts: list[str] = parts) -> bool:
                at = 0
                for part in parts:
                    at = literal.find(part, at)
                    if at < 0:
                        return False
                    at += len(part)
                return True

            assert any(regex.search(m) for m in messages) or any(map(in_order, literals)), (
                f"docs/{page.relative_to(DOCS)} says a refusal names `{span}`, which no message "
                "of the code matches"
            )
    assert checked >= 2, checked


def _hidden_parent_refusals(entries: Path) -> list[str]:
    """The words of the refusal under a /proc that hides this process's parent, as
    `app.sandbox` makes them for each hidden ancestor it names and each way an entry of
    another boot id counts as this boot's (entries in `entries`, read as the code reads them)."""
    import json

    from app import sandbox

    entry = entries / "4242-1234567.json"
    covered: list[str | None] = [None]
    if sandbox._boot_id() is not None and sandbox._boot_began_once() is not None:
        for began in ({}, {sandbox._BOOT_BEGAN: sandbox._boot_began_once()}):
            entry.write_text(json.dumps({sandbox._BOOT: "another-boot", **began}))
            covered.append(sandbox._boot_covered(entry))
    assert len(covered) in (1, 3), covered
    return [
        " ".join(sandbox._hidden_parent_words(which, 4242, "hidepid=invisible", entry,
                                              boot=boot, covered=why))
        for which in ("parent", "session leader", "process group leader", "ancestor")
        for boot in (False, True)
        for why in covered
    ]  # fmt: skip


def test_what_a_page_says_a_refusal_adds_is_in_the_refusal(tmp_path: Path) -> None:
    """resolve-refusals.md and pytest-plugin.md tell the guard's refusals apart by words one
    "adds" or "says" (`nor whether that run is of this boot`, `session leader`, the boot id
    covered by a mount, red team 71), which no check compared with the code: the table's check
    reads only each row's first cell. Each such quote must be in a message the code makes, or
    in one literal of its source (`...`, `<...>` and its escaped `&lt;...&gt;` stand for what
    it names)."""
    messages = _error_messages() + tuple(_hidden_parent_refusals(tmp_path))
    literals = _message_literals()
    checked = 0
    said = re.compile(
        r"(?:refusal|message|it) (?:then )?(?:adds|says) (?:so )?(?:`([^`]+)`|\(?\"([^\"]+)\")"
    )
    for page in (DOCS / "how-to" / "resolve-refusals.md", DOCS / "reference" / "pytest-plugin.md"):
        prose = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for quoted in said.findall(" ".join(prose.split())):
            span = quoted[0] or quoted[1]
            checked += 1
            parts = [p for p in re.split(r"\.\.\.|<[^<>]+>|&lt;.+?&gt;", span) if p.strip()]
            regex = re.compile(".+?".join(re.escape(p) for p in parts))
            assert any(regex.search(m) for m in messages) or any(
                all(part in literal for part in parts) for literal in literals
            ), f"docs/{page.relative_to(DOCS)} says a refusal adds `{span}`, which none does"
    assert checked >= 8, checked


def _output_of(argv: list[str]) -> str:
    import os
    import subprocess

    import forked_pytest

    if argv[1:2] == ["-mpytest"]:  # forked where it can be (its start is not checked here)
        result = forked_pytest.run(argv, dict(os.environ), PROJECT)
    else:
        result = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_pages_pytest_and_bench_commands_name_options_and_files_that_exist(
    pytestconfig: pytest.Config,
) -> None:
    """`app` lines are parsed against the click commands (docs/conftest.py), but run-tests.md's
    `.venv/bin/pytest --app-strict`, `-n auto`, `-m "not browser"` and `bench/fuzz.py
    --max-examples 500` were checked by nothing: a renamed option or test file would have
    stayed on the reading path. Each option must be in the program's --help, each file named
    must exist, and each `-m` marker must be registered."""
    import shlex
    import sys

    helps: dict[str, set[str]] = {}
    checked = 0
    for where, line in _command_lines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        if words[:1] == [".venv/bin/pytest"]:
            program, args = "pytest", words[1:]
            argv = [sys.executable, "-mpytest", "-p", "no:cacheprovider"]
        elif words[:1] == [".venv/bin/python"] and words[1:2] and words[1].startswith("bench/"):
            program, args = words[1], words[2:]
            assert (PROJECT / program).is_file(), f"{where}: {line}"
            argv = [sys.executable, str(PROJECT / program)]
        else:
            continue
        if program not in helps:
            found = _output_of([*argv, "--help"])
            helps[program] = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", found))
        for index, word in enumerate(args):
            if word.startswith("-"):
                name = word.split("=", 1)[0]
                assert name in helps[program], f"{where}: `{line}`: {program} has no {name}"
            elif word.startswith("tests/"):
                assert (PROJECT / word.split("::")[0]).is_file(), f"{where}: `{line}`"
            if word == "-m":
                if "markers" not in helps:  # this run's are the project's (tests/conftest.py)
                    listed = pytestconfig.getini("markers")
                    helps["markers"] = {re.split(r"[:(]", m, maxsplit=1)[0] for m in listed}
                words_of = re.findall(r"\b\w+\b", args[index + 1])
                markers = {m for m in words_of if m not in {"not", "and", "or"}}
                assert markers <= helps["markers"], f"{where}: `{line}`: no marker {markers}"
        checked += 1
    assert checked >= 8, checked


def test_layer_6_names_every_way_to_remove_bytes() -> None:
    """isolation.md's layer 6 said "Only `app data empty-trash` removes bytes" and that every
    command that removes data needs --yes-i-mean-it; `POST /trash/empty` removes bytes too,
    while the server runs, with `?confirm=yes-i-mean-it` on production. Every route that the
    route table says deletes for good is named there, with its confirmation."""
    table = (DOCS / "generated" / "http-routes.md").read_text(encoding="utf-8")
    removing = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|[^\n]*\bfor good\b", table, re.M)
    assert removing, "the route table names the route that empties the trash"
    page = (DOCS / "explanation" / "isolation.md").read_text(encoding="utf-8")
    layer = page[page.index("## Layer 6:") : page.index("## Layer 7:")]
    for method, path in removing:
        assert f"`{method} {path}`" in layer, (method, path)
    assert "`app data empty-trash`" in layer.replace("\n", " ")
    assert "?confirm=yes-i-mean-it" in layer and "--yes-i-mean-it" in layer


def test_run_tests_names_the_files_whose_change_reinstalls() -> None:
    """run-tests.md said the environments are set up again when `pyproject.toml` changed;
    scripts/test digests setup.py and the guard's two files too (a change to them needs a
    reinstall: they are copied into site-packages)."""
    script = (PROJECT / "scripts" / "environments.sh").read_text(encoding="utf-8")
    listed = re.search(r"^install_files=\((.+)\)$", script, re.M)
    assert listed, "scripts/environments.sh (scripts/test's set_up) names the files it digests"
    # The sentence moved to reference/test-suite.md, off the reading path (docs review 70).
    page = (DOCS / "reference" / "test-suite.md").read_text(encoding="utf-8")
    sentence = re.search(r"\(each reinstalled when(.+?)\.set-up-from", page, re.S)
    assert sentence, "test-suite.md says when the environments are set up again"
    assert set(re.findall(r"`([^`]+)`", sentence.group(1))) == set(listed.group(1).split())


@functools.cache
def _absolute_imports() -> tuple[tuple[str, str], ...]:
    """Each absolute import of the tests' and the docs' Python files: (file:line, module)
    (parsed once per process, about 1 s of CPU: two tests read them)."""
    import ast

    found: list[tuple[str, str]] = []
    for source in sorted((PROJECT / "tests").rglob("*.py")) + sorted(DOCS.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            found += ((f"{source.relative_to(PROJECT)}:{node.lineno}", name) for name in names)
    return tuple(found)


def test_test_modules_import_nothing_that_only_python_m_pytest_finds() -> None:
    """The tutorial's step 4 and run-tests.md run `.venv/bin/pytest`, which does not put the
    project directory on `sys.path`; `python -m pytest` (scripts/test, CI, pytester) does. One
    test module's `from tests.test_server_e2e import app_env` stopped the pages' every
    `.venv/bin/pytest` at collection ("No module named 'tests'") in a fresh clone, and no run
    of the suite could see it. A test module imports a sibling by its own name (pytest puts
    its directory on `sys.path`), never through a directory of the project that is no
    installed package."""

    only_from_cwd = {
        entry.name
        for entry in PROJECT.iterdir()
        if entry.is_dir() and not (entry / "__init__.py").exists()
    } | {"setup"}
    assert {"tests", "docs", "bench"} <= only_from_cwd, only_from_cwd
    wrong = [
        f"{where}: {name}"
        for where, name in _absolute_imports()
        if name.split(".")[0] in only_from_cwd
    ]
    assert wrong == [], (
        "import these by the module's own name (`from test_server_e2e import ...`): "
        "`.venv/bin/pytest` cannot import them\n" + "\n".join(wrong)
    )


def test_no_module_imports_a_conftest_by_name() -> None:
    """tests/conftest.py and docs/conftest.py are both the module `conftest`: pytest loads both
    at start-up, and `sys.modules["conftest"]` is the last one, docs'. A red-team file's
    `from conftest import ...` passed in every run of `tests/` and stopped the whole suite's
    collection (`scripts/test`, CI) with an ImportError. What a test shares with the suite's
    conftest lives in a module of its own (`forked_app`, `waits`)."""
    wrong = [where for where, name in _absolute_imports() if name.split(".")[0] == "conftest"]
    assert wrong == [], "import from a module of its own, not `conftest`:\n" + "\n".join(wrong)


def test_the_refusals_page_and_the_reading_path_count_its_sections_alike() -> None:
    """resolve-refusals.md said it explains "the two you will meet most often" above three
    sections (held, confirmation, stamp); the home page's reading path said "the three"."""
    numbers = {"two": 2, "three": 3, "four": 4, "five": 5}
    page = (DOCS / "how-to" / "resolve-refusals.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+)$", page[: page.index("## Other refusals")], re.M)
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    said = {
        "resolve-refusals.md": re.search(r"reasoning for the (\w+) you will meet", page),
        "index.md": re.search(r"refusals\): the (\w+) you will meet", index),
    }
    for where, found in said.items():
        assert found, where
        assert numbers[found.group(1)] == len(sections), (where, found.group(0), sections)


def test_the_suites_time_on_the_reading_path_is_the_one_measured() -> None:
    """run-tests.md said "283 s against 311 s with two" (red team 41's tree, 1,888 tests) and
    the tutorial "eleven minutes in one process", from no measurement, while performance.md
    recorded 358 and 361 s for the suite as `bash scripts/test` runs it (docs review 70).
    Both pages now say it in minutes, rounded from performance.md's last two runs."""
    numbers = {"five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
    perf = (DOCS / "reference" / "performance.md").read_text(encoding="utf-8")
    row = next(line for line in perf.splitlines() if line.startswith("| the whole suite, "))
    last_two = [float(s) for s in re.findall(r"\*\*(\d+\.\d+) s\*\*", row)[:2]]
    assert len(last_two) == 2, row
    measured = round(sum(last_two) / 2 / 60)
    for page in ("tutorial.md", "how-to/run-tests.md"):
        text = " ".join((DOCS / page).read_text(encoding="utf-8").split())
        said = re.findall(r"about (\w+) minutes on two CPUs", text)
        assert said, f"docs/{page} says how long the suite takes"
        assert [numbers[word] for word in said] == [measured] * len(said), (page, said, last_two)


def test_the_isolation_pages_costs_are_the_figures_performance_md_stands_by() -> None:
    """isolation.md's "What it costs" said a one-test run costs 1.07 to 1.19 times one with
    `-p no:app` and `app_store` 2.16 to 2.40 ms on ext4, figures bench/README.md had recorded
    sessions ago; performance.md's table of where each figure stands said 1.208 and 4.55 ms
    (docs review 70). The reading path quotes that table, not the history."""
    performance = (DOCS / "reference" / "performance.md").read_text(encoding="utf-8")
    table = performance[performance.index("## Where each figure stands") :]
    table = table[: table.index("\n## ")]
    isolation = (DOCS / "explanation" / "isolation.md").read_text(encoding="utf-8")
    costs = isolation[isolation.index("## What it costs") : isolation.index("## The guarantees")]
    standing = set(re.findall(r"\d[\d,]*(?:\.\d+)?", table))
    quoted = set(re.findall(r"\d[\d,]*(?:\.\d+)?", costs)) - {"50", "201", "256", "1"}
    assert len(quoted) > 8, quoted
    assert quoted <= standing, sorted(quoted - standing)


@pytest.mark.app_profile("development")
def test_the_variables_the_configuration_page_says_are_ignored_or_refused_are() -> None:
    """configuration.md gave `APP_DATA_ROT` as a variable "ignored with a warning that suggests
    the nearest key"; since red team 36 it is refused (exit 78, `variable_misspelt`) while
    `APP_DATA_ROOT` is not set, and the page's list of refused variables left that rule out
    (red team 75 on the documentation). Each variable the page says is ignored loads with a
    warning naming it; each its refused list gives for the data's variables is refused. The
    rule is read directly: a test run maps every root into its sandbox, so no process of a run
    refuses them (tests/test_redteam_s36_guard.py refuses them outside one)."""
    from app.config import _misspelt_resource_variables, load

    page = " ".join((DOCS / "reference" / "configuration.md").read_text(encoding="utf-8").split())
    ignored = re.search(r"An `APP_` variable that is not a key \(for example `(\w+)`\)", page)
    others = re.search(r"One named for another profile's key \(((?:`\w+`,? ?)+)", page)
    bullet = re.search(r"- \*\*a variable that looks meant as `APP_DATA_ROOT`.+?- \*\*", page)
    assert ignored and others and bullet, "the page's sentences moved: update this test"
    for name in [ignored.group(1), *re.findall(r"`(\w+)`", others.group(1))]:
        warnings = load("development", environ={name: "/srv/copy"}).warnings
        assert any(f"variable {name} is not an app setting; ignored" in w for w in warnings)
        assert not list(_misspelt_resource_variables({name: "/srv/copy"}, "development")), name
    meant = {"APP_DATA_ROOT", "APP_DATABASE_URL", "APP_BLOB_URL"}
    refused = set(re.findall(r"`((?:APP|app)_\w+)`", bullet.group(0))) - meant
    assert len(refused) >= 8, refused
    for name in sorted(refused):
        found = list(_misspelt_resource_variables({name: "/srv/copy"}, "development"))
        assert [error.name for error in found] == [name], name
