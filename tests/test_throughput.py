"""probe.measure.throughput against a real in-process HTTPS server (trustme certificates)."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest
import trustme
from aiohttp import web

from probe import failures
from probe.measure import throughput
from probe.model import Settings, ThroughputRequest
from probe.server.bulk import handle_bulk

PACE_CHUNK = 16 * 1024
PACE_INTERVAL = 0.05  # 16 KiB every 50 ms: 2.62 Mbit/s


async def _paced(request: web.Request) -> web.StreamResponse:
    """Endless body at a fixed pace (sleeps measured against a clock, so no drift)."""
    response = web.StreamResponse()
    response.content_length = 1 << 30
    await response.prepare(request)
    start = time.monotonic()
    for i in range(10_000):
        await response.write(b"x" * PACE_CHUNK)
        await asyncio.sleep(max(0.0, start + (i + 1) * PACE_INTERVAL - time.monotonic()))
    return response


async def _stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b"y" * 10)
    await asyncio.sleep(30)
    return response


async def _short(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 100_000
    await response.prepare(request)
    await response.write(b"z" * 5000)
    request.transport.close()  # type: ignore[union-attr]
    return response


async def _missing(request: web.Request) -> web.Response:
    return web.Response(status=404, text="not here\n")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def server(ca, tmp_path):
    """(port, Settings trusting the test CA)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("bulk.test").configure_cert(ctx)
    app = web.Application()
    app.router.add_get("/bulk", handle_bulk)
    app.router.add_get("/paced", _paced)
    app.router.add_get("/stall", _stall)
    app.router.add_get("/short", _short)
    app.router.add_get("/missing", _missing)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    yield port, Settings(ca_file=str(pem), timeout=2.0)
    await runner.cleanup()


def _req(port: int, path: str, **kw) -> ThroughputRequest:
    return ThroughputRequest(f"https://bulk.test:{port}{path}", address="127.0.0.1", **kw)


async def test_counts_bytes_exactly(server):
    port, settings = server
    result = await throughput.measure(_req(port, "/bulk?bytes=300001"), settings)
    assert result.failure is None, result
    assert result.bytes_received == 300001
    assert result.samples[-1][1] == 300001
    assert result.goodput_bps and result.goodput_bps > 1e6
    assert result.sni == "bulk.test" and result.address == "127.0.0.1"


async def test_max_bytes_honoured(server):
    port, settings = server
    result = await throughput.measure(
        _req(port, "/bulk?bytes=4000000", max_bytes=262144), settings
    )
    assert result.failure is None
    assert result.bytes_received == 262144


async def test_goodput_follows_server_pacing_and_max_seconds(server):
    port, settings = server
    result = await throughput.measure(_req(port, "/paced", max_seconds=2.0), settings)
    assert result.failure is None
    assert 1.9 < result.elapsed < 2.6
    pace = 8 * PACE_CHUNK / PACE_INTERVAL
    assert result.goodput_bps == pytest.approx(pace, rel=0.12)
    assert result.steady_bps == pytest.approx(pace, rel=0.12)
    times = [t for t, _ in result.samples]
    counts = [b for _, b in result.samples]
    assert times == sorted(times) and counts == sorted(counts)
    assert len(result.samples) >= 8  # memoryless samples, mean 100 ms, over ~2 s
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= throughput.SAMPLE_MIN_S / 2 - 1e-3
    assert max(gaps) <= throughput.SAMPLE_MAX_S + 0.05
    assert result.bytes_received == counts[-1]


async def test_sni_other_than_host_verifies_chain_only(server):
    port, settings = server
    result = await throughput.measure(
        _req(port, "/bulk?bytes=1000", sni="abs.twimg.com"), settings
    )
    assert result.failure is None and result.bytes_received == 1000
    assert result.sni == "abs.twimg.com"


async def test_wrong_name_and_unknown_authority_are_failures(server):
    port, settings = server
    wrong = ThroughputRequest(f"https://other.test:{port}/bulk", address="127.0.0.1")
    result = await throughput.measure(wrong, settings)
    assert (result.failure, result.operation) == (
        failures.SSL_INVALID_HOSTNAME,
        failures.TLS_HANDSHAKE,
    )
    untrusted = await throughput.measure(_req(port, "/bulk"), Settings(timeout=2.0))
    assert (untrusted.failure, untrusted.operation) == (
        failures.SSL_UNKNOWN_AUTHORITY,
        failures.TLS_HANDSHAKE,
    )
    assert untrusted.bytes_received == 0 and untrusted.goodput_bps is None


async def test_refused_stalled_short_and_404(server, unused_tcp_port):
    port, settings = server
    refused = await throughput.measure(_req(unused_tcp_port, "/bulk"), settings)
    assert (refused.failure, refused.operation) == (failures.CONNECTION_REFUSED, failures.CONNECT)
    quick = Settings(ca_file=settings.ca_file, timeout=0.5)
    stalled = await throughput.measure(_req(port, "/stall"), quick)
    assert (stalled.failure, stalled.operation) == (failures.TIMEOUT, failures.READ)
    assert stalled.bytes_received == 10 and stalled.elapsed < 2.0
    short = await throughput.measure(_req(port, "/short"), settings)
    assert (short.failure, short.operation) == (failures.EOF, failures.READ)
    assert short.bytes_received == 5000
    missing = await throughput.measure(_req(port, "/missing"), settings)
    assert (missing.failure, missing.operation) == (
        failures.HTTP_REQUEST_FAILED,
        failures.HTTP_ROUND_TRIP,
    )


def test_bulk_size_is_clamped():
    from probe.server import bulk

    assert bulk.requested_bytes(None) == bulk.DEFAULT_BYTES
    assert bulk.requested_bytes("99999999999") == bulk.MAX_BYTES
    assert bulk.requested_bytes("-5") == 0
    with pytest.raises(web.HTTPBadRequest):
        bulk.requested_bytes("lots")


async def test_bulk_rejects_a_bad_size(server):
    port, settings = server
    result = await throughput.measure(_req(port, "/bulk?bytes=lots"), settings)
    assert (result.failure, result.operation) == (
        failures.HTTP_REQUEST_FAILED,
        failures.HTTP_ROUND_TRIP,
    )
