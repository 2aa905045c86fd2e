"""probe.throttling.abtest against an in-process HTTPS server that paces flows by their SNI.

The server reads the SNI of each connection (ssl sni_callback) and sends bodies for "policed"
names at 140 kbit/s after a 30 kB burst, like the Twitter policer; other names get full speed.
The real policer (iptables in namespaces) is exercised in tests/lab/test_policing.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

import pytest
import trustme
from aiohttp import web

from probe.model import Settings
from probe.server.bulk import handle_bulk
from probe.throttling import abtest

POLICED = "abs.twimg.com"
RATE = 140e3
MSS = 1448
# SNI -> (burst bytes at full speed, then bits/s): a policer with a bucket larger than the first
# flows, and a shaper (no burst at all)
PACED = {POLICED: (30_000, RATE), "video.twimg.com": (400_000, 2e6),
         "ton.twimg.com": (0, 1e6)}


async def _police(request: web.Request, total: int, burst: int = 30_000,
                  rate: float = RATE) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = total
    await response.prepare(request)
    first = min(burst, total)
    if first:
        await response.write(b"p" * first)
    start, sent = time.monotonic(), first
    while sent < total:
        chunk = min(MSS * max(1, int(rate / 2e6)), total - sent)
        await response.write(b"p" * chunk)
        sent += chunk
        await asyncio.sleep(max(0.0, start + (sent - first) * 8 / rate - time.monotonic()))
    return response


def make_app(names: dict[int, str]) -> web.Application:
    async def bulk(request: web.Request) -> web.StreamResponse:
        sslobj = request.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
        paced = PACED.get(names.get(id(sslobj), ""))
        if paced is not None:
            return await _police(request, int(request.query.get("bytes", "1048576")), *paced)
        return await handle_bulk(request)

    async def slow_object(request: web.Request) -> web.StreamResponse:
        return await _police(request, 1 << 20)

    app = web.Application()
    app.router.add_get("/bulk", bulk)
    app.router.add_get("/object", slow_object)
    return app


@contextlib.asynccontextmanager
async def policing_server(tmp_path, name: str):
    """The server on 127.0.0.1 with a certificate for `name`: (base URL, Settings trusting it)."""
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    names: dict[int, str] = {}
    ctx.sni_callback = lambda sslobj, sni, _ctx: names.__setitem__(id(sslobj), sni or "")
    runner = web.AppRunner(make_app(names), shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    try:
        yield f"https://{name}:{runner.addresses[0][1]}", Settings(ca_file=str(pem), timeout=3.0)
    finally:
        await runner.cleanup()


@pytest.fixture
async def helper(tmp_path):
    async with policing_server(tmp_path, "helper.test") as server:
        yield server


async def test_sni_swap_finds_the_policed_sni_early(helper):
    base, settings = helper
    started = time.monotonic()
    targets, controls, est = await abtest.sni_swap(
        f"{base}/bulk?bytes=1048576", "127.0.0.1", POLICED, "www.example.org", settings, 1 << 20
    )
    assert est.state == "throttled", est
    assert est.method == "sni_swap"
    assert est.rate_bps == pytest.approx(RATE, rel=0.25)
    assert len(targets) == len(controls) <= 3  # decided early
    assert {t.sni for t in targets} == {POLICED} and {c.sni for c in controls} == {"www.example.org"}
    assert est.bytes_used == sum(r.bytes_received for r in targets + controls) <= 1 << 20
    assert time.monotonic() - started < 8.0


async def test_a_clean_sni_is_bounded_not_clean_when_no_flow_outlasts_a_burst(helper):
    """Loopback flows finish at line rate: no flow outlasts a burst, so the estimate names the
    policer rates it rules out instead of calling the SNI clean."""
    base, settings = helper
    budget = abtest.Budget(total_bytes=6 << 20)
    targets, controls, est = await abtest.sni_swap(
        f"{base}/bulk", "127.0.0.1", "twitter.example", None, settings, budget)
    assert est.state == "bounded" and est.outlasted_burst is False, est
    assert {c.sni for c in controls} == {"helper.test"}  # the URL's host is the control
    assert all(r.failure is None for r in targets + controls)
    sizes = [r.bytes_received for r in targets]
    # x4 each pair while it is at most a quarter of what is left: 256 KiB, 1 MiB, and then
    # 4 MiB would not fit; a smaller pair adds no reach, so the test ends
    assert sizes == [256 << 10, 1 << 20] and est.bytes_used == 2 * sum(sizes)
    # the last flow took a few ms: policers with a 2 s burst below ~4 Mbit/s are ruled out
    assert 3.5e6 < est.excluded_below_bps <= 8 * (1 << 20) / 2.0
    assert "no policing below" in est.reason and "data budget" in est.reason


@pytest.mark.parametrize(("sni", "rate"), [("video.twimg.com", 2e6), ("ton.twimg.com", 1e6)])
async def test_flows_grow_past_a_large_burst_and_a_shaper_is_found(helper, sni, rate):
    """A bucket of 400 kB holds the first 256 KiB flow: the pairs grow until a flow outlasts it;
    a shaper (no burst) is outlasted at once. The rate is the one after the knee."""
    base, settings = helper
    targets, _, est = await abtest.sni_swap(
        f"{base}/bulk", "127.0.0.1", sni, "www.example.org", settings)
    assert est.state == "throttled" and est.outlasted_burst, est
    assert est.rate_bps == pytest.approx(rate, rel=0.25)
    grew = sni == "video.twimg.com"
    assert (targets[0].bytes_received == 256 << 10) is grew  # the first flow fit in the burst


async def test_each_sni_swap_flow_asks_for_what_it_reads(helper):
    """The bulk endpoint is asked for each flow's size: the flow reads to the end of the body
    (no reset), and a pair never starts that the budget cannot finish."""
    base, settings = helper
    budget = abtest.Budget(total_bytes=3_000_000)
    targets, controls, _ = await abtest.sni_swap(
        f"{base}/bulk?bytes=999999", "127.0.0.1", "twitter.example", None, settings, budget)
    flows = [*targets, *controls]
    assert all(r.failure is None for r in flows)
    asked = [int(r.url.rsplit("bytes=", 1)[1]) for r in flows]
    assert [r.bytes_received for r in flows] == asked
    assert asked[0] == budget.first_bytes and sum(asked) <= budget.total_bytes


async def test_helper_down_stops_after_one_pair(unused_tcp_port):
    url = f"https://helper.test:{unused_tcp_port}/bulk"
    targets, controls, est = await abtest.sni_swap(
        url, "127.0.0.1", POLICED, "www.example.org", Settings(timeout=1.0)
    )
    assert (len(targets), len(controls)) == (1, 1)
    assert targets[0].failure == "connection_refused"
    assert est.state == "inconclusive" and est.bytes_used == 0


async def test_direct_compares_objects(helper):
    base, settings = helper
    targets, controls, est = await abtest.direct(
        f"{base}/object", f"{base}/bulk?bytes=1048576", settings,
        target_address="127.0.0.1", control_address="127.0.0.1",
    )
    assert est.method == "direct"
    assert est.state == "throttled", est


def test_budget_grows_pairs_within_what_is_left():
    budget = abtest.Budget()
    assert budget.flow(0, 1 << 30, 60.0) == (256 << 10, 2.0)
    assert budget.flow(2, 1 << 30, 60.0) == (4 << 20, 4.5)
    assert budget.flow(3, 10 << 20, 60.0) == (10 << 18, 5.0)  # a quarter of what is left
    assert budget.flow(0, 1 << 30, 1.0) == (256 << 10, 0.5)
