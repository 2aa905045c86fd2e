"""Download throughput of one fresh TLS flow, sampled at memoryless times.

One call opens ONE new TCP+TLS connection (a per-flow policer keys on each new flow's SNI, so
every repetition must be a new flow), sends an HTTP/1.1 GET and counts body bytes until
`max_bytes`, `max_seconds` or the end of the body.

Sampling follows ndt7 / OONI dd-007: the cumulative byte count is read at exponentially
distributed intervals, so that sampling cannot lock onto a periodic pattern of the path (a
token bucket refill, a scheduler tick). dd-007 uses mean 250 ms, min 25 ms, max 650 ms for
10 s tests; our flows last at most ~5 s and the statistics want more points, so we use
mean 100 ms, min 10 ms, max 300 ms (about 50 samples in 5 s).

Rates are counted from the first response byte, so the RTT of the request is excluded; the
steady part and the rate arithmetic are in probe.throttling.rates.

Granularity: the body is decrypted a TLS record (up to 16 KiB) at a time, so at 64 kbit/s a
record lands only every 2 s. Samples therefore read the kernel's count of bytes received on the
connection (TCP_INFO `tcpi_bytes_received`, Linux >= 4.1) since the response header, capped at
what the flow may read: a policed flow's rate is seen packet by packet. Where TCP_INFO is missing
the decrypted count is used (see probe.throttling.decide for what that does at low rates).

Long flows (the adaptive A/B grows them to tens of seconds) sample less often: the mean interval
is `max_seconds / TARGET_SAMPLES`, never below 100 ms, so a flow keeps at most ~MAX_SAMPLES points.

Speed: reads go through an asyncio BufferedProtocol into one reused 256 KiB buffer; per read
the only Python work is an addition and a comparison, which keeps us accurate to 1 Gbit/s.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import time
from urllib.parse import urlsplit

from probe import failures
from probe.measure.classify import NETWORK_ERRORS, failure_and_cause
from probe.measure.sampling import (
    SAMPLE_MAX_S,  # noqa: F401 - re-exported: the flow's sampling bounds
    SAMPLE_MEAN_S,
    SAMPLE_MIN_S,
    sample_delay,
    sample_mean,
    thinned,
    wire_bytes,
)
from probe.measure.tlsctx import client_context
from probe.model import Settings, ThroughputRequest, ThroughputResult
from probe.throttling.rates import Samples, goodput, steady_rate

READ_BUFFER = 256 * 1024
HEADER_LIMIT = 64 * 1024
HEADER_READ = 4096
TLS_SLACK = 2048  # session tickets and record overhead before the body, at most (see _Flow)


# --- the flow ---------------------------------------------------------------------------------


class _Flow(asyncio.BufferedProtocol):
    """Counts body bytes; everything else happens in timers, not per read."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.limit = max_bytes  # lowered to Content-Length when the server sends one
        self.buffer = bytearray(READ_BUFFER)
        self.view = memoryview(self.buffer)
        self.header = bytearray()
        self.header_done = False
        self.status: int | None = None
        self.invalid = False  # the answer was not HTTP
        self.content_length: int | None = None
        self.body = 0
        self.first_byte: float | None = None
        self.first_body = 0  # body bytes that came with the header
        self.end = 0.0
        self.sock: socket.socket | None = None  # for TCP_INFO
        # Body bytes on the wire are counted from the end of the handshake, less the header
        # and what else came before the body (TLS 1.3 session tickets, record overhead: the
        # surplus seen when the header is read, at most TLS_SLACK: more is a burst already
        # waiting undecrypted, which a count started at the header would lag the flow by)
        self.wire_at_start: int | None = None
        self.before_body = 0
        self.done: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.wire_at_start = wire_bytes(self.sock)  # after the TLS handshake

    def get_buffer(self, sizehint: int) -> memoryview:
        # Never read past the limit (exact byte counts); headers come through small reads.
        if not self.header_done:
            return self.view[:HEADER_READ]
        return self.view[: max(1, min(READ_BUFFER, self.limit - self.body))]

    def buffer_updated(self, nbytes: int) -> None:
        if self.done.done():
            return  # asyncio may deliver one more read after the limit; it is not counted
        if self.header_done:
            self.body += nbytes
        else:
            self._header(nbytes)
        if self.body >= self.limit:
            self.finish(None)

    def _header(self, nbytes: int) -> None:
        if self.first_byte is None:
            self.first_byte = time.monotonic()
        self.header += self.view[:nbytes]
        end = self.header.find(b"\r\n\r\n")
        if end < 0:
            if len(self.header) > HEADER_LIMIT:
                self.invalid = True
                self.finish(None)
            return
        self.header_done = True
        self.body = self.first_body = len(self.header) - end - 4
        wire = wire_bytes(self.sock) if self.wire_at_start is not None else None
        if wire is not None and self.wire_at_start is not None:  # the second for the type
            surplus = wire - self.wire_at_start - len(self.header)
            self.before_body = end + 4 + min(max(0, surplus), TLS_SLACK)
        head = bytes(self.header[:end]).decode("latin-1").split("\r\n")
        del self.header[:]
        try:
            self.status = int(head[0].split()[1])
        except (IndexError, ValueError):
            self.invalid = True
            self.finish(None)
            return
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                self.content_length = int(value.strip())
                self.limit = min(self.max_bytes, self.content_length)

    def eof_received(self) -> bool:
        self.finish(self._short())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish(exc if exc is not None else self._short())

    def counted(self) -> int:
        """Body bytes as the wire sees them: the decrypted count, or more when TCP_INFO shows
        bytes of a record still in flight (never past the flow's limit)."""
        if self.wire_at_start is None:  # no TCP_INFO here: no call per sample either
            return self.body
        wire = wire_bytes(self.sock)
        if wire is None:
            return self.body
        return max(self.body, min(self.limit, wire - self.wire_at_start - self.before_body))

    def _short(self) -> BaseException | None:
        """The error of a body that ended early: before the header, or short of Content-Length."""
        if not self.header_done:
            return EOFError("eof before the response header")
        if self.content_length is not None and self.body < self.limit:
            return EOFError("eof before Content-Length")
        return None

    def finish(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.end = time.monotonic()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.pause_reading()
            self.done.set_result(exc)


def _context(settings: Settings, check_hostname: bool) -> ssl.SSLContext:
    # The bulk endpoint answers any SNI with one certificate: verify the chain, not the name.
    # No ALPN: we speak HTTP/1.1 only.
    return client_context(settings.ca_file, check_hostname=check_hostname)


# --- measuring ---------------------------------------------------------------------------------


class _Failed(Exception):
    """A phase failed: carries the OONI failure string, the operation and an unknown's cause."""

    def __init__(self, exc: BaseException, operation: str) -> None:
        super().__init__(operation)
        self.failure, self.cause = failure_and_cause(exc)
        self.operation = operation


async def _phase(awaitable, timeout: float, operation: str):  # type: ignore[no-untyped-def]
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except NETWORK_ERRORS as exc:  # every network failure becomes data
        raise _Failed(exc, operation) from exc


async def _open(
    request: ThroughputRequest, settings: Settings, flow: _Flow
) -> tuple[asyncio.Transport, str]:
    """Resolve (unless pinned), connect, handshake; returns the transport and the address."""
    loop = asyncio.get_running_loop()
    url = urlsplit(request.url)
    host, port = url.hostname or "", url.port or 443
    address = request.address
    if address is None:
        infos = await _phase(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), settings.timeout, failures.RESOLVE
        )
        address = infos[0][4][0]
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    flow.sock = sock
    try:
        await _phase(loop.sock_connect(sock, (address, port)), settings.timeout, failures.CONNECT)
        sni = request.sni or host
        ctx = _context(settings, check_hostname=sni == host)
        transport, _ = await _phase(
            loop.create_connection(lambda: flow, sock=sock, ssl=ctx, server_hostname=sni),
            settings.timeout,
            failures.TLS_HANDSHAKE,
        )
    except BaseException:
        sock.close()
        raise
    return transport, address


def _request_bytes(request: ThroughputRequest, settings: Settings) -> bytes:
    url = urlsplit(request.url)
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    host = url.netloc.rpartition("@")[2]
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {settings.user_agent}\r\n"
        "Accept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    ).encode()


async def _sample(
    flow: _Flow, deadline: float, idle: float, rng: random.Random, mean: float = SAMPLE_MEAN_S
) -> tuple[list[tuple[float, int]], str | None]:
    """Cumulative bytes at memoryless times until the flow ends, the deadline, or a stall.

    Returns the samples and a failure string (a stall, or no answer by the deadline)."""
    samples: list[tuple[float, int]] = []
    last_change, last_body = time.monotonic(), -1
    while True:
        now = time.monotonic()
        delay = min(sample_delay(rng, mean), deadline - now)
        await asyncio.wait([flow.done], timeout=max(0.0, delay))
        now = time.monotonic()
        if flow.done.done():
            return samples, None
        counted = flow.counted()
        if flow.header_done and flow.first_byte is not None:
            samples.append((now - flow.first_byte, counted))
        if counted != last_body:
            last_change, last_body = now, counted
        if now >= deadline:
            return samples, None if flow.header_done else failures.TIMEOUT
        if now - last_change > idle:
            return samples, failures.TIMEOUT


def _series(flow: _Flow, timed: list[tuple[float, int]], end: float) -> Samples:
    """(0, first body bytes), the timed samples, and the end; a timed sample that falls within
    SAMPLE_MIN_S/2 of the end is dropped so that no interval is absurdly short."""
    if flow.first_byte is None or not flow.header_done:
        return ()
    body = [s for s in timed if s[0] < max(0.0, end - flow.first_byte) - SAMPLE_MIN_S / 2]
    # the wire count may have run ahead of the decrypted end of a cut-off flow: keep it monotone
    last = (max(0.0, end - flow.first_byte), max([flow.body, *(b for _, b in body)]))
    return thinned(((0.0, flow.first_body), *body, last))


def _outcome(flow: _Flow, stalled: str | None) -> tuple[str | None, str | None, str | None]:
    """The (failure, operation, cause) of a flow that got connected."""
    operation = failures.READ if flow.header_done else failures.HTTP_ROUND_TRIP
    exc = flow.done.result() if flow.done.done() else None
    if flow.invalid:
        return failures.HTTP_INVALID_RESPONSE, failures.HTTP_ROUND_TRIP, None
    if exc is not None:
        failure, cause = failure_and_cause(exc)
        return failure, operation, cause
    if stalled is not None:
        return stalled, operation, None
    if flow.status is not None and not 200 <= flow.status < 300:
        return failures.HTTP_REQUEST_FAILED, failures.HTTP_ROUND_TRIP, None
    return None, None, None


async def measure(request: ThroughputRequest, settings: Settings) -> ThroughputResult:
    """Download over one new TLS flow and sample it; network failures are returned as data."""
    t0, start = settings.since_origin(), time.monotonic()
    flow = _Flow(request.max_bytes)
    address, samples = request.address, ()
    failure = operation = cause = None
    transport: asyncio.Transport | None = None
    try:
        transport, address = await _open(request, settings, flow)
        transport.write(_request_bytes(request, settings))
        deadline = time.monotonic() + request.max_seconds
        timed, stalled = await _sample(flow, deadline, settings.timeout, random.Random(),
                                       sample_mean(request.max_seconds))
        end = flow.end if flow.done.done() else time.monotonic()
        samples = _series(flow, timed, end)
        failure, operation, cause = _outcome(flow, stalled)
    except _Failed as failed:
        failure, operation, cause = failed.failure, failed.operation, failed.cause
    finally:
        if transport is not None:
            transport.abort()  # no close_notify dance: the flow is over
    return ThroughputResult(
        t0=t0,
        elapsed=time.monotonic() - start,
        failure=failure,
        operation=operation,
        cause=cause,
        url=request.url,
        address=address,
        sni=request.sni or urlsplit(request.url).hostname,
        samples=samples,
        # what arrived, decrypted or not yet (a record in flight at the end is still traffic)
        bytes_received=max(flow.body, samples[-1][1]) if flow.header_done and samples else 0,
        goodput_bps=goodput(samples),
        steady_bps=steady_rate(samples),
    )
