"""The HTML report in a real browser (Debian's chromium, headless): it renders to a screenshot
that is not blank, with no console message and no request for anything outside the file; it
fits a phone's width; its table sorts. The harness itself is shown to catch a script error and
an outside fetch (pages made for that, whose requests end on a closed loopback port)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import chromium
import numpy as np
import pytest
from PIL import Image, ImageStat
from test_report import _report, _store

from probe.report.fmt import COLOURS
from probe.report.render import html

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium.binary() is None,
                       reason="Debian's chromium is not installed (apt-get install chromium)"),
]
SINCE = datetime(2026, 11, 24, tzinfo=UTC)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report over every lab run of the fixture (throttled, blocked, accessible, timeline)."""
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "report.html"
    path.write_text(html(_report(_store(tmp), since=SINCE)), encoding="utf-8")
    return path


def _with_script(page: Path, script: str, tmp_path: Path) -> Path:
    """A copy of the page with `script` run at its end (after the page's own)."""
    text = page.read_text(encoding="utf-8")
    copy = tmp_path / "probed.html"
    copy.write_text(text.replace("</body>", f"<script>{script}</script></body>"),
                    encoding="utf-8")
    return copy


def _pixels_near(image: Image.Image, colour: str, tolerance: int = 24) -> int:
    want = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(image, dtype=int)
    return int((np.abs(pixels - want) <= tolerance).all(axis=-1).sum())


def test_the_report_renders_without_errors_and_is_not_blank(page: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    run = chromium.screenshot(page, png, 1280, 2400)
    assert run.console == [] and run.requests == set()
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 2400)
    grey = ImageStat.Stat(image.convert("L"))
    assert grey.stddev[0] > 20  # a blank or one-colour page has none
    small = image.resize((320, 600))
    # the verdict colours were drawn: badges, row marks, the throttled plots
    for verdict in ("blocked", "throttled", "accessible"):
        assert _pixels_near(small, COLOURS[verdict]) > 20, verdict


@pytest.mark.parametrize("width", [390, 800, 1280])  # a phone, a tablet, a laptop
def test_no_sideways_scrolling_at_any_width(page: Path, tmp_path: Path, width: int) -> None:
    probed = _with_script(page, "var t = document.getElementById('targets');"
                          "document.body.setAttribute('data-fit', [window.innerWidth, "
                          "document.documentElement.scrollWidth, t.scrollWidth, "
                          "t.parentNode.clientWidth].join(' '));", tmp_path)
    run = chromium.dom(probed, width=width, height=844)
    found = re.search(r'data-fit="(\d+) (\d+) (\d+) (\d+)"', run.stdout)
    assert found, run.stderr[-2000:]
    inner, page_width, table, room = map(int, found.groups())
    # headless chromium lays a --dump-dom page out at least 500 px wide: still a phone's layout
    assert inner == max(width, 500) and page_width <= inner, (inner, page_width)
    assert table <= room, (table, room)  # the targets table fits, not hidden in a scroller
    assert run.console == []


def test_the_report_prints(page: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.pdf"
    run = chromium.pdf(page, out)
    assert run.console == [] and run.requests == set()
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 3  # summary, plots, evidence


def test_clicking_a_heading_sorts_the_table_by_value(page: Path, tmp_path: Path) -> None:
    click = ("var th = Array.prototype.find.call(document.querySelectorAll('#targets th'), "
             "function (h) { return h.textContent.indexOf('Rate') === 0; }); th.click();")
    run = chromium.dom(_with_script(page, click, tmp_path))
    assert run.console == []
    body = run.stdout[run.stdout.index('<table id="targets"'):]
    # the rate cells: <td ... data-label="rate / control" data-v="RATE">127 kbit/s<br>...
    rates = [float(v) for v in re.findall(r'"rate / control" data-v="([^"]+)">[^<]', body)]
    assert len(rates) >= 6 and rates == sorted(rates)
    assert 'aria-sort="ascending"' in body


def test_the_harness_sees_a_script_error_and_an_outside_fetch(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="https://cdn.example.invalid/x.png">'
                   "<img src='http://192.0.2.1/y.png'><script>noSuchFunction();</script>"
                   "</body></html>")
    run = chromium.screenshot(bad, tmp_path / "bad.png", 400, 300)
    assert any("noSuchFunction" in line for line in run.console)
    assert run.requests == {"https://cdn.example.invalid/x.png", "http://192.0.2.1/y.png"}
    blank = Image.open(tmp_path / "bad.png").convert("L")
    assert ImageStat.Stat(blank).stddev[0] < 20  # what the not-blank check refuses
