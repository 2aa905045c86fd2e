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


async def _police(request: web.Request, total: int) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = total
    await response.prepare(request)
    await response.write(b"p" * 30_000)
    start, sent = time.monotonic(), 30_000
    while sent < total:
        await response.write(b"p" * MSS)
        sent += MSS
        await asyncio.sleep(max(0.0, start + (sent - 30_000) * 8 / RATE - time.monotonic()))
    return response


def make_app(names: dict[int, str]) -> web.Application:
    async def bulk(request: web.Request) -> web.StreamResponse:
        sslobj = request.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
        if names.get(id(sslobj)) == POLICED:
            return await _police(request, int(request.query.get("bytes", "1048576")))
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


async def test_sni_swap_clean_when_nothing_is_policed(helper):
    base, settings = helper
    targets, controls, est = await abtest.sni_swap(
        f"{base}/bulk", "127.0.0.1", "twitter.example", None, settings, abtest.Budget()
    )
    assert est.state == "clean", est
    assert {c.sni for c in controls} == {"helper.test"}  # the URL's host is the control
    assert all(r.failure is None for r in targets + controls)


async def test_each_sni_swap_flow_asks_for_what_it_reads(helper):
    """The bulk endpoint is asked for each flow's size: the flow reads to the end of the body
    (no reset), and the last flows shrink to what is left of the budget."""
    base, settings = helper
    budget = abtest.Budget(total_bytes=300_000, max_pairs=4)
    targets, controls, _ = await abtest.sni_swap(
        f"{base}/bulk?bytes=999999", "127.0.0.1", "twitter.example", None, settings, budget)
    flows = [*targets, *controls]
    assert all(r.failure is None for r in flows)
    asked = [int(r.url.rsplit("bytes=", 1)[1]) for r in flows]
    assert [r.bytes_received for r in flows] == asked
    assert asked[0] == budget.flow_bytes and sum(asked) <= budget.total_bytes


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


def test_budget_splits_bytes_over_pairs():
    assert abtest.Budget().flow_bytes == 128 << 10
    assert abtest.Budget(total_bytes=100).flow_bytes == 16 << 10
