"""Split the attacks' catalogue, docs/explanation/attacks.md, into one page per layer.

Run from the project's root, with the docs' environment (it uses Python-Markdown's own
heading ids):

    .venv-docs/bin/python scripts/split_attacks.py

It reads docs/explanation/attacks.md and writes docs/explanation/attacks/index.md (the
introduction, "The layers, one page each", "What is not stopped, in one list", "Longer runs by
hand") and one page per `## Layer N: ...` part (its heading the page's title, every heading
under it one level up, its relative links one directory deeper); it puts the pages in
mkdocs.yml's navigation, follows every link and mention of `attacks.md` (with its anchor) in
docs/, README.md, app/, scripts/ and tests/ to the page that now holds it, and removes
attacks.md. The same attacks.md gives the same pages: a branch that added sections to the one
page is merged first, then its attacks.md put back and this script run again.
"""

from __future__ import annotations

import posixpath
import re
import subprocess
import sys
from pathlib import Path

import markdown

ROOT = Path.cwd()
DOCS = ROOT / "docs"
SOURCE = DOCS / "explanation" / "attacks.md"
OUT = DOCS / "explanation" / "attacks"
#: Each layer's page name: its number and what it guards, short enough for a URL.
SLUGS = {
    1: "layer-1-profiles",
    2: "layer-2-data-roots",
    3: "layer-3-sandbox",
    4: "layer-4-live-holder",
    5: "layer-5-profile-stamp",
    6: "layer-6-destructive-operations",
    7: "layer-7-atomic-writes",
}
FRONT = "---\nsearch:\n  headings_only: true\n---\n"
LAYER = re.compile(r"^## Layer (\d): (.+)$")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6}) ")
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: The index's sentences that spoke of one page, as they now read.
REWORDED = {
    "This page is the catalogue\nbehind it": "These pages are the catalogue\nbehind it",
    "The site's search finds this page by its headings (each layer, each red team, each "
    "attack's\nname), not by the text under them: search the text with your browser's find "
    "(Ctrl+F) here.": "The site's search finds these pages by their headings (each layer, each "
    "red team, each\nattack's name), not by the text under them: search the text with your "
    "browser's find (Ctrl+F)\non a layer's page.",
    "Each line is one *not stopped* entry below, in the layer where it is explained": (
        "Each line is one *not stopped* entry of a layer's page, where it is explained"
    ),
}


def _outside_fences(lines: list[str]) -> list[bool]:
    inside, marks = False, []
    for line in lines:
        if FENCE.match(line):
            inside = not inside
            marks.append(False)
        else:
            marks.append(not inside)
    return marks


def _ids(headings: list[str]) -> list[str]:
    """The ids Python-Markdown's toc gives these headings, in order, on one page."""
    md = markdown.Markdown(extensions=["toc", "attr_list"])
    md.convert("\n\n".join(headings))
    flat: list[str] = []

    def walk(tokens: list[dict]) -> None:
        for token in tokens:
            flat.append(token["id"])
            walk(token["children"])

    walk(md.toc_tokens)
    assert len(flat) == len(headings), (len(flat), len(headings))
    return flat


def _deeper(line: str) -> str:
    """A relative link of a page moved one directory down."""

    def fix(match: re.Match[str]) -> str:
        target = match.group(1)
        if re.match(r"[a-z]+:|#|/", target):
            return match.group(0)
        return f"]({'../' + target})"

    return LINK.sub(fix, line)


def split(text: str) -> tuple[dict[str, list[str]], dict[str, tuple[str, str | None]]]:
    """The pages' lines by name, and each old anchor's page and new anchor."""
    lines = text.removesuffix("\n").split("\n")
    outside = _outside_fences(lines)
    starts = [i for i, line in enumerate(lines) if outside[i] and LAYER.match(line)]
    assert starts, "no `## Layer N:` part"
    for i in range(starts[0], len(lines)):
        if outside[i] and lines[i].startswith("## ") and i not in starts:
            sys.exit(f"line {i + 1}: a `##` section after the layers: move it above them")
    layers = []
    for n, start in enumerate(starts):
        number, title = LAYER.match(lines[start]).groups()  # type: ignore[union-attr]
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        layers.append((int(number), title, start, end))
    assert [layer[0] for layer in layers] == sorted(SLUGS), "layers 1 to 7, in order"

    # Where each old heading goes: (page, its index among that page's headings).
    old_headings = [(i, line) for i, line in enumerate(lines) if outside[i] and HEADING.match(line)]
    pages: dict[str, list[str]] = {}
    page_headings: dict[str, list[tuple[int | None, str]]] = {}

    head = lines[: starts[0]]
    body = "\n".join(_deeper(line) for line in head)
    for old, new in REWORDED.items():
        if old in body:
            body = body.replace(old, new)
        else:
            print(f"note: the index no longer says {old[:40]!r}...: left as it is")
    listing = ["## The layers, one page each", ""]
    for number, title, start, end in layers:
        entries = sum(
            1 for i in range(start, end) if outside[i] and re.match(r"- \*[a-z, ]+\*", lines[i])
        )
        listing.append(f"{number}. [Layer {number}: {title}]({SLUGS[number]}.md): {entries} entries")
    listing.append("")
    marker = "\n## What is not stopped, in one list"
    assert marker in body, marker
    body = body.replace(marker, "\n" + "\n".join(listing) + marker, 1)
    pages["index"] = body.split("\n")
    page_headings["index"] = []
    head_outside = _outside_fences(pages["index"])
    old_by_text = {line: i for i, line in old_headings if i < starts[0]}
    for k, line in enumerate(pages["index"]):
        if head_outside[k] and HEADING.match(line):
            page_headings["index"].append((old_by_text.get(line), line))

    for number, title, start, end in layers:
        name = SLUGS[number]
        anchor = _ids([lines[start]])[0]
        out = [
            *FRONT.removesuffix("\n").split("\n"),
            "",
            f"# Layer {number}: {title}",
            "",
            f"Part of [the attacks tried against the guard](index.md): what red teams and the "
            f"hostile suites\ntried against layer {number}, and what it does not stop. How the "
            f"layer works: [How the isolation\nworks](../isolation.md#{anchor}).",
        ]
        headings: list[tuple[int | None, str]] = [(start, out[-3])]
        for i in range(start + 1, end):
            line = lines[i]
            if outside[i] and HEADING.match(line):
                line = line[1:]  # one level up: the layer is the page's title
                headings.append((i, line))
            out.append(_deeper(line) if outside[i] else line)
        while out[-1] == "":
            out.pop()
        pages[name] = out
        page_headings[name] = headings

    old_ids = dict(zip([i for i, _ in old_headings], _ids([h for _, h in old_headings])))
    anchors: dict[str, tuple[str, str | None]] = {}
    for name, headings in page_headings.items():
        new_ids = _ids([h for _, h in headings])
        for (i, _), new in zip(headings, new_ids):
            if i is not None:
                top = name != "index" and i in starts
                anchors[old_ids[i]] = (name, None if top else new)
    missing = set(old_ids.values()) - set(anchors)
    assert not missing, missing
    return pages, anchors


def _target(name: str, anchor: str | None) -> str:
    return f"{name}.md" + (f"#{anchor}" if anchor else "")


def _follow_in_page(pages: dict[str, list[str]], anchors: dict) -> None:
    """`](#x)` links of the old page: to the page that now holds x."""
    for name, lines in pages.items():

        def fix(match: re.Match[str], name: str = name) -> str:
            if match.group(1) not in anchors:
                sys.exit(f"attacks.md: a link to #{match.group(1)}, which no heading of it has")
            page, anchor = anchors[match.group(1)]
            return f"]({'#' + anchor if page == name and anchor else _target(page, anchor)})"

        pages[name] = [re.sub(r"\]\(#([\w-]+)\)", fix, line) for line in lines]


def _follow_doc_links(path: Path, text: str, anchors: dict) -> str:
    """Markdown links from another page of docs/ to attacks.md(#anchor)."""
    here = posixpath.dirname(path.relative_to(DOCS).as_posix())

    def fix(match: re.Match[str]) -> str:
        target, _, anchor = match.group(1).partition("#")
        where = posixpath.normpath(posixpath.join(here, target))
        if where != "explanation/attacks.md":
            return match.group(0)
        if anchor and anchor not in anchors:
            sys.exit(f"{path}: a link to attacks.md#{anchor}, which no heading of it has")
        page, new = anchors[anchor] if anchor else ("index", None)
        moved = posixpath.relpath(f"explanation/attacks/{page}.md", here or ".")
        return f"]({moved}{'#' + new if new else ''})"

    return LINK.sub(fix, text)


MENTION = re.compile(
    r"(?<![\"'/\w])(docs/explanation/)?attacks\.md(?:,? [Ll]ayer (\d)\b| \([Ll]ayer (\d)\))?"
)


def _mention(match: re.Match[str]) -> str:
    """A mention's new words: the layer's page where it names one, else the catalogue."""
    prefix, layer = match.group(1), match.group(2) or match.group(3)
    if layer:
        return f"{prefix or ''}attacks/{SLUGS[int(layer)]}.md"
    return f"{prefix}attacks/" if prefix else "the attacks' catalogue"


def _follow_mentions(path: Path, text: str) -> str:
    """Mentions in comments, docstrings and messages: the page that holds what they name."""
    lines = [MENTION.sub(_mention, line) for line in text.split("\n")]
    if path.suffix != ".md":
        old = set(text.split("\n"))
        long = [line for line in lines if len(line) > 100 and line not in old]
        if long:
            print(f"{path}: lines over 100 characters, to wrap by hand: {long}")
    return "\n".join(lines)


def _nav() -> None:
    config = ROOT / "mkdocs.yml"
    lines = config.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if "Attacks tried against the guard:" in line:
            indent = line[: len(line) - len(line.lstrip())]
            end = i + 1
            while end < len(lines) and lines[end].startswith(indent + "  "):
                end += 1
            section = [f"{indent}- Attacks tried against the guard:"]
            section += [f"{indent}    - explanation/attacks/index.md"]
            section += [f"{indent}    - explanation/attacks/{slug}.md" for slug in SLUGS.values()]
            lines[i:end] = section
            break
    else:
        sys.exit("mkdocs.yml's nav has no `Attacks tried against the guard` entry")
    config.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    pages, anchors = split(SOURCE.read_text(encoding="utf-8"))
    _follow_in_page(pages, anchors)
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.md"):
        old.unlink()
    for name, lines in pages.items():
        (OUT / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    SOURCE.unlink()
    _nav()
    tracked = subprocess.run(
        ["git", "ls-files", "docs", "README.md", "app", "scripts", "tests", "setup.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.suffix not in {".md", ".py", ""} or path == SOURCE:
            continue
        if path.resolve() == Path(__file__).resolve() or OUT in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        if "attacks.md" not in text:
            continue
        new = text
        if path.suffix == ".md" and DOCS in path.parents:
            new = _follow_doc_links(path, new, anchors)
        new = _follow_mentions(path, new)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"followed: {name}")
    left = subprocess.run(
        ["git", "grep", "-n", "attacks\\.md", "--", ".", ":!bench"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    if left:
        print("still naming attacks.md (by hand):\n" + left)


if __name__ == "__main__":
    main()
