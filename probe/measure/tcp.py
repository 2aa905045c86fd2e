"""Open one TCP connection to an address and port, time it, and close it cleanly; or read the
TCP connect out of a TLS measurement, which made one before its handshake."""

from __future__ import annotations

import asyncio
import contextlib
import time

from probe import failures
from probe.measure.classify import NETWORK_ERRORS, failure_and_cause
from probe.model import Endpoint, Settings, TcpResult, TlsResult

_CLOSE_GRACE = 1.0  # seconds to wait for our FIN to go out; the result is already known


async def measure(endpoint: Endpoint, settings: Settings) -> TcpResult:
    """Connect within `settings.timeout`; refusals, resets and silence become failure strings."""
    t0, start = settings.since_origin(), time.monotonic()
    failure = cause = None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(settings.timeout):
            _, writer = await asyncio.open_connection(endpoint.address, endpoint.port)
    except NETWORK_ERRORS as exc:  # every network failure becomes data
        failure, cause = failure_and_cause(exc)
    elapsed = time.monotonic() - start
    if writer is not None:
        await _close(writer)
    return TcpResult(
        t0=t0,
        elapsed=elapsed,
        failure=failure,
        operation=failures.CONNECT if failure else None,
        cause=cause,
        address=endpoint.address,
        port=endpoint.port,
    )


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(*NETWORK_ERRORS):  # a reset while closing changes nothing measured
        async with asyncio.timeout(_CLOSE_GRACE):
            await writer.wait_closed()


def from_handshake(handshake: TlsResult) -> TcpResult:
    """The TCP connect that a TLS measurement made first, as a result of its own. OONI's Web
    Connectivity measures both on one connection too: a separate connect per address would
    cost a flow and say nothing more (the same call, timeout and classification)."""
    failed = handshake.operation == failures.CONNECT
    return TcpResult(
        t0=handshake.t0,
        elapsed=handshake.elapsed if failed or handshake.connect_time is None
        else handshake.connect_time,
        failure=handshake.failure if failed else None,
        operation=failures.CONNECT if failed else None,
        cause=handshake.cause if failed else None,
        address=handshake.address,
        port=handshake.port,
    )

