"""Slow clients (slowloris): the helper closes a connection that takes too long to send its
request head, and answers 408 to a body that trickles; a prompt client is served meanwhile.
Real sockets on loopback; every loop is bounded in count and time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from probe.model import Settings
from probe.server.app import ServerConfig, start

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
SLACK = 1.0  # the sweep runs every HEADER_TIMEOUT / 4; a loaded machine adds a little


@pytest.fixture
async def helper() -> AsyncIterator[int]:
    config = ServerConfig(settings=Settings(timeout=1.0), header_timeout=HEADER_TIMEOUT,
                          body_timeout=BODY_TIMEOUT)
    runner, port = await start(config)
    try:
        yield port
    finally:
        await runner.cleanup()


async def _trickle(port: int, head: bytes, drip: bytes, every: float, limit: float):
    """Send `head`, then `drip` every `every` s until the server answers or closes, or `limit`
    s pass: (seconds to its first byte or None, seconds until it closed or None, its bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start, first, got = time.monotonic(), None, b""
    try:
        writer.write(head)
        for _ in range(int(limit / every) + 1):  # bounded in count, and by `limit` in time
            try:
                chunk = await asyncio.wait_for(reader.read(4096), every)
            except TimeoutError:
                if first is None:
                    writer.write(drip)
                continue
            if not chunk:
                return first, time.monotonic() - start, got
            first = time.monotonic() - start if first is None else first
            got += chunk
        return first, None, got
    finally:
        writer.close()


async def _healthy(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        return (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


SLOW_HEADS = [  # (case, first bytes, then one of these per drip)
    ("header bytes one at a time", b"GET /healthz HTTP/1.1\r\nHost: h\r\n", b"X"),
    ("endless header lines", b"GET /healthz HTTP/1.1\r\n", b"X-a: b\r\n"),
    ("request line never ends", b"GET /", b"a"),
    ("connect and say nothing", b"", b""),
    ("idle keep-alive after an answer",
     b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", b""),
]


@pytest.mark.parametrize(("head", "drip"), [(h, d) for _, h, d in SLOW_HEADS],
                         ids=[n for n, _, _ in SLOW_HEADS])
async def test_slow_request_head_is_cut_off(helper: int, head: bytes, drip: bytes,
                                            hostile) -> None:
    with hostile.case(f"helper slow head: {head[:30]!r}", timeout=HEADER_TIMEOUT + SLACK):
        first, closed, _ = await _trickle(helper, head, drip, 0.2, limit=6 * HEADER_TIMEOUT)
        healthy = await _healthy(helper)
    print(f"slow head {head[:30]!r}: closed after {closed} s (timeout {HEADER_TIMEOUT} s)")
    assert closed is not None and closed - (first or 0) <= 1.5 * HEADER_TIMEOUT + SLACK
    if head.endswith(b"\r\n\r\n"):  # a complete request: answered first, then idle and cut
        assert first is not None and closed - first >= 0.5 * HEADER_TIMEOUT
    assert healthy


async def test_slow_body_is_408(helper: int, hostile) -> None:
    head = (b"POST /api/v1/control HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n{")
    with hostile.case("helper slow body", timeout=2 * BODY_TIMEOUT + SLACK):  # + lingering
        took, closed, answer = await _trickle(helper, head, b" ", 0.2, limit=6 * BODY_TIMEOUT)
    print(f"slow body: answered after {took} s: {answer[:60]!r}")
    assert took is not None and took <= BODY_TIMEOUT + SLACK
    assert answer.startswith(b"HTTP/1.1 408") and closed is not None and closed - took < 1.5


async def test_idle_connection_is_closed_only_after_the_timeout(helper: int) -> None:
    """The deadline is not too eager: a client that sends its head promptly is answered."""
    first, closed, answer = await _trickle(
        helper, b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", b"",
        every=0.2, limit=3,
    )
    assert answer.startswith(b"HTTP/1.1 200") and first is not None and first < 1.0
