"""A throttled flow is counted packet by packet on the wire, not TLS record by record.

A policer lets its burst through at once, so the response header is often decrypted while the
rest of the burst already waits undecrypted; counting wire bytes from that moment lagged the
flow by the burst for good, and the decrypted count (16 KiB records: one every ~0.9 s at
140 kbit/s) was all the samples showed. The server here does that on loopback: the header and a
burst in one write, then 16 KiB records trickled a kilobyte at a time below TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import pytest
import trustme

from probe.measure import throughput
from probe.model import Settings, ThroughputRequest

BURST = 48 * 1024
RECORD = 16 * 1024
RECORDS = 2
PIECE = 1024
PIECE_GAP_S = 0.04  # 1 KiB every 40 ms: ~200 kbit/s, a 16 KiB record every ~0.65 s
TOTAL = BURST + RECORDS * RECORD


async def _pump(obj: ssl.SSLObject, outgoing: ssl.MemoryBIO, incoming: ssl.MemoryBIO,
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Handshake, then read the request (bounded: a few round trips)."""
    for _ in range(20):
        try:
            obj.do_handshake()
            data = obj.read(4096)
            if b"\r\n\r\n" in data:
                return data
        except ssl.SSLWantReadError:
            pass
        writer.write(outgoing.read())
        await writer.drain()
        chunk = await asyncio.wait_for(reader.read(65536), 2.0)
        if not chunk:
            break
        incoming.write(chunk)
    raise AssertionError("no request")


async def _trickle(ctx: ssl.SSLContext, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=True)
    with contextlib.suppress(ConnectionError, AssertionError):
        await _pump(obj, outgoing, incoming, reader, writer)
        obj.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TOTAL + b"b" * BURST)
        writer.write(outgoing.read())  # header and burst in one go
        for _ in range(RECORDS):
            obj.write(b"r" * RECORD)  # one TLS record, sent a kilobyte at a time
            sealed = outgoing.read()
            for start in range(0, len(sealed), PIECE):
                writer.write(sealed[start:start + PIECE])
                await writer.drain()
                await asyncio.sleep(PIECE_GAP_S)
        await asyncio.sleep(1.0)
    writer.close()


@pytest.fixture
async def trickle_server(tmp_path):
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("bulk.test").configure_cert(ctx)
    server = await asyncio.start_server(lambda r, w: _trickle(ctx, r, w), "127.0.0.1", 0)
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    yield server.sockets[0].getsockname()[1], Settings(ca_file=str(pem), timeout=3.0)
    server.close()
    await server.wait_closed()


async def test_records_trickled_below_tls_are_counted_as_they_arrive(trickle_server):
    port, settings = trickle_server
    request = ThroughputRequest(f"https://bulk.test:{port}/", address="127.0.0.1",
                                max_bytes=TOTAL, max_seconds=5.0)
    result = await throughput.measure(request, settings)
    assert result.failure is None and result.bytes_received == TOTAL
    counts = [b for _, b in result.samples]
    assert counts == sorted(counts) and counts[-1] == TOTAL
    # while the records trickle in, the samples see kilobytes, not whole 16 KiB records
    trickling = {b for b in counts if BURST < b < TOTAL}
    between_records = [b for b in trickling if (b - BURST) % RECORD]
    assert len(between_records) >= 5, counts
    # and never more than arrived: the session tickets before the body are not body
    assert all(b <= TOTAL for b in counts)
