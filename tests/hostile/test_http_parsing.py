"""CPU-heavy parsing of what a hostile server sends: the <title> search and the blockpage
fingerprints run over up to 64 KiB of its text and must stay linear (a few ms), never stall
the event loop for seconds (a quadratic title regex once took 2.9 s per 64 KiB)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from probe.measure import blockpages, http, ooni_fingerprints
from probe.model import HttpRequest, Settings

SIZE = 1 << 16  # what the probe scans
BOUND = 0.25  # seconds; generous for a loaded two-core machine, the figures are ~1-20 ms


def _fill(unit: str) -> str:
    return unit * (SIZE // len(unit))


CRAFTED = [  # (case, body)
    ("title without a closing tag", _fill("<title>")),
    ("title opened, never a '>'", _fill("<title")),
    ("closing tags that never close", "<title>x" + _fill("</title ")),
    ("unclosed iframes", _fill("<iframe ")),
    ("unclosed iframes with src", _fill('<iframe src="')),
    ("less-than signs", _fill("<")),
    ("one letter", _fill("a")),
    ("whitespace", _fill(" \n")),
    ("almost a blockpage sentence", _fill("access to the requested resource is ")),
    ("almost a registry domain", _fill("eais.rkn.gov.")),
    # OONI's regexes (probe.measure.ooni_fingerprints): their openings, never their endings
    ("almost OONI's U.S. Command", _fill("U.S. ")),
    ("almost OONI's red span", _fill("<span style=color:red;")),
    ("replacement characters", _fill("\ufffd")),
    ("almost OONI's moved here", _fill("<p>The document has moved <a href=")),
]


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@pytest.mark.parametrize("body", [b for _, b in CRAFTED], ids=[n for n, _ in CRAFTED])
def test_title_and_blockpages_are_linear(body: str, hostile) -> None:
    with hostile.case(f"parse: {body[:20]!r}", timeout=BOUND):
        title = _seconds(lambda: http._title(body))
        match = _seconds(lambda: blockpages.match(200, [], body, None))
    print(f"{body[:16]!r}: title {title * 1e3:.2f} ms, blockpages {match * 1e3:.2f} ms")
    assert title < BOUND and match < BOUND


def _leading_literal(pattern: str) -> str:
    """The text a regex starts with ("(?i)<iframe[^>]+src" -> "<iframe"), to repeat."""
    body = re.sub(r"^\(\?[a-z]+\)", "", pattern).replace("\\b", "")
    body = re.sub(r"^\((\w+)\|[^)]*\)", r"\1", body)  # a leading group: its first branch
    found = re.match(r"(?:\\.|[^\\()\[\]{}?*+|^$.])+", body)
    return re.sub(r"\\(.)", r"\1", found.group(0)) if found else body[:8]


def _shipped_regexes() -> list[str]:
    return [c.body_regex.pattern for fp in blockpages.fingerprints() for c in fp.when
            if c.body_regex is not None]


@pytest.mark.parametrize("pattern", _shipped_regexes())
def test_every_shipped_body_regex_is_linear_on_its_own_prefix(pattern: str, hostile) -> None:
    """Every fingerprint regex against a page of its own opening text, repeated without the
    rest: where an unbounded repeat after the opening would make it quadratic."""
    unit = _leading_literal(pattern) + " "
    body = _fill(unit)
    regex = re.compile(pattern)
    with hostile.case(f"blockpage regex: {pattern[:30]}", timeout=BOUND):
        took = _seconds(lambda: regex.search(body))
    print(f"{pattern[:50]}: {took * 1e3:.2f} ms on {unit!r} x {SIZE // len(unit)}")
    assert took < BOUND


def _imported_regexes() -> list[str]:
    return [fp.pattern for fp in ooni_fingerprints.http_index().fingerprints
            if fp.pattern_type == "regexp"]


def _opening(piece: re.Pattern[str]) -> str:
    return re.sub(r"\\(.)", r"\1", piece.pattern.replace("[^\n]", "X"))


@pytest.mark.parametrize("pattern", _imported_regexes())
def test_every_imported_regex_is_linear_on_its_own_openings(pattern: str, hostile) -> None:
    """OONI's regexes, as the probe runs them (literal pieces, line by line): a page of the
    first piece repeated, and of every piece but the last, on one line: what makes `re`'s
    `.*` quadratic."""
    pieces = ooni_fingerprints.linear_pieces(pattern)
    for unit in (_opening(pieces[0]) + " ", " ".join(_opening(p) for p in pieces[:-1]) + " "):
        body = _fill(unit)
        with hostile.case(f"OONI regex: {pattern[:30]}", timeout=BOUND):
            took = _seconds(lambda b=body: ooni_fingerprints.search_pieces(pieces, b))
        print(f"{pattern[:50]}: {took * 1e3:.2f} ms on {unit[:30]!r} x {SIZE // len(unit)}")
        assert took < BOUND


def test_imported_header_patterns_on_long_values_are_linear(hostile) -> None:
    """Header values a hostile server sends at aiohttp's 8 KiB line limit, against every
    imported header fingerprint."""
    headers = [(name, prefix * (8190 // len(prefix))) for name, prefix in
               (("Location", "http://warning.rt."), ("Server", "Protected by "), ("Via", "1.1 "))]
    index = ooni_fingerprints.http_index()
    with hostile.case("OONI header patterns", timeout=BOUND):
        took = _seconds(lambda: index.matches(headers * 20, "", 302))
    print(f"60 long headers against every imported header pattern: {took * 1e3:.2f} ms")
    assert took < BOUND


def test_title_scan_finds_what_the_regex_found() -> None:
    """The scan keeps the old regex's answers on ordinary pages."""
    cases = {
        "<html><title>Hello</title></html>": "Hello",
        "<TITLE lang=en>Hi &amp; there</TITLE >": "Hi & there",
        "<title>\n  two\n lines </title>": "two lines",
        "<title>a</titlex></title>": "a</titlex>",
        "<title>never closed": None,
        "<title": None,
        "no title here": None,
        "<title></title>": None,
    }
    for page, title in cases.items():
        assert http._title(page) == title, page


@pytest.fixture
async def flood_server() -> AsyncIterator[int]:
    async def flood(_request: web.Request) -> web.Response:
        return web.Response(text=_fill("<title>"), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", flood)
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_a_flood_page_is_measured_quickly(flood_server: int, hostile) -> None:
    """End to end: the whole measurement of a 64 KiB title flood on loopback."""
    settings = Settings(timeout=2.0)
    with hostile.case("http measure: title flood", timeout=settings.timeout):
        start = time.perf_counter()
        result = await http.measure(HttpRequest(f"http://127.0.0.1:{flood_server}/"), settings)
        took = time.perf_counter() - start
    print(f"title flood measured in {took * 1e3:.1f} ms")
    assert result.failure is None and result.status == 200 and result.title is None
    assert result.body_length >= SIZE - 7 and took < 1.0
