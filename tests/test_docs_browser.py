"""The documentation site: it builds strictly, and it works in a real browser, offline.

`built_site` is the site built once per run with `mkdocs build --strict` (tests/docs_site.py);
`test_docs_build_strict` reports the build itself, and the browser tests serve the result on
127.0.0.1 and open it in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright;
no browser is ever downloaded). Deselect the browser part with `-m "not browser"`.
"""

from __future__ import annotations

import asyncio
import html.parser
import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import head_start
import pytest
from docs_site import Build, build

PROJECT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT / "test-artifacts"
#: The features Playwright (1.65) disables with its own `--disable-features` (its
#: chromiumSwitches.ts: several of them keep a launch from requesting Google's servers). Chromium
#: obeys only the last `--disable-features` of its command line, so the one below repeats them:
#: `test_the_browser_keeps_playwright_s_disabled_features` fails if Playwright adds one.
_PLAYWRIGHT_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync DestroyProfileOnBrowserClose HttpsUpgrades "
    "HttpsFirstBalancedModeAutoEnable LensOverlay MediaRouter PaintHolding "
    "ThirdPartyStoragePartitioning AvoidCorsURLLoaderRestartOnRedirect TcpPortRandomizationWin "
    "OptimizationHints NetworkTimeServiceQuerying AimEnabled PreconnectToSearch "
    "msForceBrowserSignIn msEdgeUpdateLaunchServicesPreferredVersion"
)
PLAYWRIGHT_DISABLED_FEATURES = frozenset(_PLAYWRIGHT_FEATURES.split())
#: The address bar's two pop-ups, which Chromium (156) preloads at launch as web pages of its
#: own (`chrome://omnibox-popup.top-chrome/`), each in a renderer, even headless, where no
#: address bar is ever shown: about 1.2 s of CPU a launch (bench/README.md, branch
#: perf-browser74). The pages the tests open are the same without them.
OMNIBOX_FEATURES = frozenset({"WebUIOmniboxPopup", "WebUIOmniboxAimPopup"})
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=" + ",".join(sorted(PLAYWRIGHT_DISABLED_FEATURES | OMNIBOX_FEATURES)),
]
MAIN_PAGES = [
    "",
    "tutorial/",
    "how-to/",
    "how-to/deploy-production/",
    "reference/",
    "reference/configuration/",
    "reference/cli/",
    # The Python API's index and one module's page, the entry point the index names: one page
    # of all 30 modules (1.7 MB) until session 74, about 5 s of the browser's CPU to open.
    "reference/python-api/",
    "reference/python-api/app.config/",
    "reference/errors/",
    "explanation/",
    "explanation/isolation/",
    # The attacks' catalogue's index and its first layer's page: one page of 2.3 MB until
    # session 75, 3.5 to 4.3 s of the browser's CPU to open (bench/README.md, perf-attacks75).
    "explanation/attacks/",
    "explanation/attacks/layer-1-profiles/",
    "explanation/comparison/",
]


@pytest.fixture(scope="session")
def built_site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Build:
    return head_start.result(
        request.config, "docs-site", lambda: build(tmp_path_factory, dict(os.environ))
    )


def test_docs_build_strict(built_site: Build) -> None:
    assert built_site.returncode == 0, f"mkdocs build --strict failed:\n{built_site.output}"
    assert "WARNING" not in built_site.output, built_site.output
    assert (built_site.site / "index.html").is_file()
    assert (built_site.site / "search" / "search_index.json").is_file()


#: The elements the site's pages are made of: Material's, Python-Markdown's, mkdocstrings'.
#: Any other tag in a page is text a browser swallows: a placeholder written bare in Markdown
#: (``moved ... to <root>/.trash``) reads "moved ... to /.trash" (62 such on the attacks page
#: in session 73: red team 73's browser measurements found them).
_ELEMENT_NAMES = (
    "a abbr article aside b blockquote body br button circle code col colgroup dd del "
    "details div dl dt em figcaption figure footer form g h1 h2 h3 h4 h5 h6 head header "
    "hr html i img input ins kbd label li line link main mark meta nav noscript ol option "
    "p path picture polygon polyline pre rect script section select small source span "
    "strong style sub summary sup svg symbol table tbody td template text textarea tfoot "
    "th thead title tr tspan u ul use"
)
HTML_ELEMENTS = frozenset(_ELEMENT_NAMES.split())


class _Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.unknown: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag not in HTML_ELEMENTS:
            self.unknown.append(f"<{tag}> at line {self.getpos()[0]}")


def test_no_page_holds_an_element_a_browser_would_swallow(built_site: Build) -> None:
    """Every word a page's Markdown or docstrings write reaches the reader: none is taken for an
    HTML tag (write ``&lt;root&gt;``, or put it in a code span)."""
    found = {}
    for page in sorted(built_site.site.rglob("*.html")):
        parser = _Elements()
        parser.feed(page.read_text(encoding="utf-8"))
        if parser.unknown:
            found[str(page.relative_to(built_site.site))] = parser.unknown[:5]
    assert not found, found


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def site_url(built_site: Build) -> Iterator[str]:
    if built_site.returncode != 0:
        pytest.fail(f"the site did not build:\n{built_site.output}", pytrace=False)

    def handler(*args: object, **kwargs: object) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(built_site.site), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"data", "blob", "about"} or parts.hostname == "127.0.0.1"


#: The requests the context's route hands to Python (`Browser.route`): all but those plainly
#: local, matched in Playwright's driver. Every request went to Python before, to be let
#: through there: a round trip between the driver and this process for each of the site's
#: files (HTML, CSS, scripts, fonts, images), a few hundred a run. The pattern is narrower
#: than `_local` can only be in letting more through to Python, which decides as before: a
#: URL whose host is 127.0.0.1 with an optional port, then the path, query, fragment or
#: nothing (`http://127.0.0.1:80@elsewhere/` or `http://127.0.0.1.elsewhere/` is routed).
ROUTED = re.compile(r"^(?!(?:data|blob|about):|https?://127\.0\.0\.1(?::\d+)?(?:[/?#]|$))")


class Browser:
    """One Chromium context that records every request and blocks any that leaves 127.0.0.1."""

    def __init__(self, context: object, profile: Path) -> None:
        self.context = context
        self.profile = profile
        #: Every request answered (`finished`), where the route saw every request let
        #: through: not those a page's own route aborted (`without_search`'s index).
        self.requests: list[str] = []
        self.foreign: list[str] = []

    def route(self, route: object) -> None:
        """`ROUTED`'s requests: aborted unless local (and recorded by `record` either way)."""
        if _local(route.request.url):  # type: ignore[attr-defined]
            route.continue_()  # type: ignore[attr-defined]
        else:
            route.abort()  # type: ignore[attr-defined]

    def record(self, request: object) -> None:
        url = request.url  # type: ignore[attr-defined]
        if not _local(url):
            self.foreign.append(url)

    def finished(self, request: object) -> None:
        self.requests.append(request.url)  # type: ignore[attr-defined]


# Module-scoped, not session-scoped: between two of its sync calls Playwright marks its event
# loop as running on this thread (asyncio._set_running_loop, on purpose), so while the browser
# is open, anyio.run on the test thread refuses to start ("Already running asyncio in this
# thread"); a later test file's anyio.run failed in serial runs. Closing it unmarks the loop.
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} is missing; install Debian's package: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser check: {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            service_workers="block",
        )
        recorder = Browser(context, profile)
        context.route(ROUTED, recorder.route)
        context.on("request", recorder.record)
        context.on("requestfinished", recorder.finished)
        try:
            yield recorder
        finally:
            context.close()
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()  # nothing left marked running for the tests that follow


def _command_line(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(encoding="utf-8").split("\0")
    except OSError:  # ended since listed
        return []


@pytest.mark.browser
def test_the_browser_keeps_playwright_s_disabled_features(browser: Browser) -> None:
    """The browser's own command line (not its children's): Playwright's `--disable-features`,
    then `CHROMIUM_ARGS`'s, of which Chromium obeys the last; that one must name every feature
    the first does."""
    profile = f"--user-data-dir={browser.profile}"
    (command,) = [
        line
        for line in map(_command_line, filter(str.isdigit, os.listdir("/proc")))
        if profile in line and not any(arg.startswith("--type=") for arg in line)
    ]
    switches = [arg for arg in command if arg.startswith("--disable-features=")]
    assert len(switches) == 2, switches
    playwright, ours = (set(arg.partition("=")[2].split(",")) for arg in switches)
    missing = sorted(playwright - ours)
    assert missing == [], f"add them to PLAYWRIGHT_DISABLED_FEATURES: {missing}"


def without_search(browser: Browser) -> object:
    """A page that does not fetch the site's search index (a page route wins over the
    context's). Material's search worker builds its lunr index from that 0.9 MB file on
    every page load, about half of the renderer's CPU for a page (13 s against 6 s for the
    thirteen main pages, measured): the tests that look at a page's rendering, not at search,
    skip it. The index is still fetched, built and searched by
    `test_search_finds_the_profile_variable`, and every request it leads to is checked by
    `test_explanation_page_makes_no_outside_request_and_is_captured` (whose page, `indexed`,
    waits for the network to be idle: the pages' own tests never waited for the worker's
    requests)."""
    page = browser.context.new_page()  # type: ignore[attr-defined]
    page.route("**/search/search_index.json", lambda route: route.abort())
    return page


#: The pages two tests look at (the home page and the tutorial, where the README's commands
#: are shown): each is opened once, by whichever of the two runs first, and left open for the
#: other (`pages`), where each test opened it again (about 0.6 s of Chromium's CPU a page).
README_PAGES = ("", "tutorial/")


class Opened:
    """`README_PAGES`, each opened once (`without_search`) and kept open until the module ends,
    with the response its navigation got."""

    def __init__(self, browser: Browser, site_url: str) -> None:
        self.browser = browser
        self.site_url = site_url
        self.pages: dict[str, tuple[Any, Any]] = {}

    def __call__(self, path: str) -> tuple[Any, Any]:
        if path not in self.pages:
            page = without_search(self.browser)
            try:
                response = page.goto(self.site_url + path)
            except BaseException:
                page.close()
                raise
            self.pages[path] = (page, response)
        return self.pages[path]


@pytest.fixture(scope="module")
def opened(browser: Browser, site_url: str) -> Iterator[Opened]:
    opened = Opened(browser, site_url)
    try:
        yield opened
    finally:
        for page, _ in opened.pages.values():
            page.close()


@pytest.fixture(scope="module")
def tab(browser: Browser) -> Iterator[Any]:
    """One tab (`without_search`) that each main page's test navigates in turn, where each
    opened a tab of its own: a tab is a renderer of Chromium's to start and tear down, and
    the eleven pages took about 40% more wall time so (9.9 against 5.7 s, measured). A
    navigation replaces the document, its scripts and its workers whole; the requests are
    recorded per context (`Browser`), as before."""
    page = without_search(browser)
    try:
        yield page
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.parametrize("path", MAIN_PAGES)
def test_main_pages_render_with_a_heading(
    browser: Browser, site_url: str, opened: Opened, tab: Any, path: str
) -> None:
    if path in README_PAGES:
        page, response = opened(path)
    else:
        page, response = tab, tab.goto(site_url + path)
    assert response is not None, path
    assert response.status == 200, f"{path}: HTTP {response.status}"
    heading = page.locator("article h1").first
    assert heading.inner_text().strip(), f"{path} has an empty h1"
    assert "404" not in page.title()
    assert not browser.foreign, f"requests left 127.0.0.1: {browser.foreign}"


#: The page that fetches and builds the search index: the explanation of the isolation,
#: with its diagram.
INDEXED_PAGE = "explanation/isolation/"


@pytest.fixture(scope="module")
def indexed(browser: Browser, site_url: str) -> Iterator[Any]:
    """`INDEXED_PAGE` opened with the search index (not `without_search`), once the network
    is idle: its search worker has fetched the index, and the requests it led to are
    recorded. `test_explanation_page_makes_no_outside_request_and_is_captured` checks those,
    and `test_search_finds_the_profile_variable` searches in this same page, where each
    opened a page of its own and Material's worker built its index from the 2.4 MB file in
    both (the search test's page, the home page, had no other use); the worker builds it
    once per page, the largest part of either test's time."""
    page = browser.context.new_page()  # type: ignore[attr-defined]
    try:
        page.goto(site_url + INDEXED_PAGE)
        page.wait_for_load_state("networkidle")
        yield page
    finally:
        page.close()


@pytest.mark.browser
def test_search_finds_the_profile_variable(browser: Browser, indexed: Any) -> None:
    page = indexed
    search = page.locator("input.md-search__input")
    search.click()
    # Material's search worker drops a query typed before its index is built; it shows
    # "Initializing search" until then.
    page.wait_for_function(
        "() => { const m = document.querySelector('.md-search-result__meta');"
        " return m && m.textContent.trim() !== '' && !/Initializing/i.test(m.textContent); }"
    )
    try:
        # Material searches on each key released in the field, not on input events: the
        # query is filled whole, then one key (End) released, where typing it key by key
        # ran sixteen searches of the whole index (about 3 s of the renderer's CPU against
        # 0.2 s, measured; bench/README.md, branch perf-browser73).
        search.fill("ENV_FOR_DYNACONF")
        search.press("End")
        results = page.locator(".md-search-result__item")
        results.first.wait_for()
        assert results.count() > 0
        assert "ENV_FOR_DYNACONF" in page.locator(".md-search-result").inner_text()
    finally:
        # The page as the explanation's test finds it: the query gone, the search closed.
        search.fill("")
        page.keyboard.press("Escape")
    assert not browser.foreign, f"requests left 127.0.0.1: {browser.foreign}"


@pytest.mark.browser
def test_explanation_page_makes_no_outside_request_and_is_captured(
    browser: Browser, indexed: Any
) -> None:
    page = indexed
    diagram = page.locator("img[src$='layers.svg']")
    assert diagram.count() == 1
    assert diagram.evaluate("img => img.complete && img.naturalWidth > 0"), "diagram not loaded"
    assert any(url.endswith("/search/search_index.json") for url in browser.requests), (
        "the search index was never requested: the check below would miss its requests"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "docs-explanation-isolation.png"), full_page=True)
    assert browser.requests, "the route recorded nothing; the check would be vacuous"
    assert not browser.foreign, f"requests left 127.0.0.1: {browser.foreign}"


# The name the server is reached by in the test below: Swagger UI shows its validator's badge,
# an image from validator.swagger.io, for any page not on localhost or 127.0.0.1.
API_HOST = "api.example"


@pytest.mark.browser
def test_the_servers_api_docs_render_offline(browser: Browser, app_live_server: object) -> None:
    """FastAPI's /docs loads Swagger UI from a CDN by default: blank without internet.

    Reached by a name of its own, as a deployed server is (each request to that name answered
    from the server here): Swagger UI fetched its validator's badge from
    `https://validator.swagger.io/validator?url=<the server's /openapi.json>`, which told
    swagger.io the server's address and had it fetch the API's document, which needs no
    token (red team 71 on the HTTP contract: a page at 127.0.0.1 shows no badge).
    """
    served = app_live_server.url  # type: ignore[attr-defined]
    page = browser.context.new_page()  # type: ignore[attr-defined]
    here = f"http://{API_HOST}"

    def from_the_server(route: Any) -> None:
        route.fulfill(response=route.fetch(url=route.request.url.replace(here, served, 1)))

    page.route(f"{here}/**", from_the_server)
    start = len(browser.foreign)
    try:
        response = page.goto(f"{here}/docs")
        assert response is not None and response.status == 200
        title = page.locator(".swagger-ui .info .title").first
        title.wait_for()
        assert title.inner_text().startswith("app"), title.inner_text()
        page.wait_for_load_state("networkidle")
    finally:
        page.close()
    # The page's own requests, answered above, are recorded as leaving 127.0.0.1 too: taken
    # out of the module's record, which the other tests of the module find empty.
    mine = browser.foreign[start:]
    del browser.foreign[start:]
    assert any(urlsplit(url).hostname == API_HOST for url in mine), (
        "no request went to the server's name: the check below would be vacuous"
    )
    foreign = [url for url in mine if urlsplit(url).hostname != API_HOST]
    assert not foreign, f"requests left the server: {foreign}"


@pytest.mark.browser
@pytest.mark.parametrize("path", README_PAGES)
def test_the_readme_commands_fit_their_code_blocks(
    browser: Browser, opened: Opened, path: str
) -> None:
    """The README's two commands, on the home page and the tutorial, without sideways scrolling."""
    page, response = opened(path)
    assert response is not None and response.status == 200, path
    blocks = page.locator("article pre > code")
    overflowing = [
        text
        for text, wide in blocks.evaluate_all(
            "codes => codes.map(c => [c.innerText, c.scrollWidth > c.clientWidth])"
        )
        if wide and ("scripts/test" in text or "scripts/serve" in text)
    ]
    assert any("scripts/serve" in t for t in blocks.all_inner_texts()), path
    assert not browser.foreign, f"requests left 127.0.0.1: {browser.foreign}"
    assert overflowing == [], f"{path or 'index'}: these code blocks scroll sideways: {overflowing}"
