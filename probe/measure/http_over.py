"""An HTTP GET over the connection of a TLS measurement that succeeded, as OONI's Web
Connectivity sends it: no second connection and no second handshake, for the probe or the server.

HTTP/1.1 (h11) or HTTP/2 (h2), whichever the handshake's ALPN chose. The response is read and
judged as `http.measure` reads it (the same body cap, title and blockpage match); a redirect
is followed by `http.measure` from its Location, on new connections as before. Timings count
from the connection's start, so `connect` and `tls` are the measured connection's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from email.message import Message
from urllib.parse import urljoin, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h11
from aiohttp.abc import AbstractResolver

from probe import failures
from probe.measure import blockpages, http
from probe.measure.classify import NETWORK_ERRORS, failure_and_cause
from probe.measure.tls import TlsStream
from probe.model import HttpRequest, HttpResult, HttpTimings, Settings, TlsResult

_MAX_EVENTS = 10_000  # protocol events per exchange; a real response needs a few per 64 KiB
_PROTOCOL_ERRORS = (h11.RemoteProtocolError, h2.exceptions.ProtocolError)
_H2_OVERHEAD = 1 << 20  # bytes an HTTP/2 response may carry besides its body (frames, headers)


def usable(stream: TlsStream) -> bool:
    """Whether the connection speaks a protocol this module does (ALPN chose one, or none)."""
    return stream.alpn in (None, "http/1.1", "h2")


async def get(
    stream: TlsStream, request: HttpRequest, settings: Settings, *,
    resolver: AbstractResolver | None = None, allowed: Callable[[str], bool] | None = None,
) -> HttpResult:
    """GET request.url on `stream`; a redirect continues through `http.measure` (with
    `resolver` and `allowed`, as there)."""
    t0 = settings.since_origin() - (time.monotonic() - stream.started)
    trace, got = http.Trace(start=stream.started, stage=failures.HTTP_ROUND_TRIP), http.Got()
    trace.marks.update(connect=stream.connected - stream.started,
                       tls=stream.handshaken - stream.started)
    failure = cause = None
    try:
        async with asyncio.timeout(http.PHASES * settings.timeout):
            exchange = _h2 if stream.alpn == "h2" else _h11
            await exchange(stream, request, settings, trace, got)
        trace.mark("transfer")
    except NETWORK_ERRORS as exc:  # every network failure becomes data
        failure, cause = failure_and_cause(exc)
    except _PROTOCOL_ERRORS:  # the server's answer broke HTTP: data too
        failure = failures.HTTP_INVALID_RESPONSE
    got.final_url = request.url
    first = http.result_of(request, t0, trace, got, failure, cause)
    location = _location(got)
    if failure is not None or location is None:
        return first
    after = urljoin(request.url, location)
    same_host = urlsplit(after).hostname == urlsplit(request.url).hostname
    rest = await http.measure(HttpRequest(after, request.address if same_host else None),
                              settings, resolver=resolver, allowed=allowed,
                              max_redirects=http.MAX_REDIRECTS - 1)
    return _joined(first, rest, time.monotonic() - stream.started)


def _location(got: http.Got) -> str | None:
    if got.status is None or not 300 <= got.status < 400:
        return None
    return next((v for k, v in got.headers if k.lower() == "location"), None)


def _joined(first: HttpResult, rest: HttpResult, elapsed: float) -> HttpResult:
    """The whole chain: the rest's outcome, the first exchange's timings and blockpage."""
    offset = rest.t0 - first.t0
    transfer = rest.timings.transfer
    return replace(
        rest, t0=first.t0, elapsed=elapsed, url=first.url, address=first.address,
        blockpage=first.blockpage or rest.blockpage,
        timings=HttpTimings(connect=first.timings.connect, tls=first.timings.tls,
                            first_byte=first.timings.first_byte,
                            transfer=None if transfer is None else transfer + offset),
    )


def _path(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    path = parts.path or "/"
    return parts.netloc, f"{path}?{parts.query}" if parts.query else path


async def _receive(stream: TlsStream, settings: Settings) -> bytes:
    async with asyncio.timeout(settings.timeout):  # one read, as aiohttp's sock_read
        return await stream.receive()


def _got_response(trace: http.Trace, got: http.Got, status: int,
                  headers: list[tuple[str, str]]) -> None:
    trace.mark("first_byte", failures.READ)
    got.status, got.headers = status, tuple(headers)
    content_type = Message()
    content_type["content-type"] = next((v for k, v in headers if k.lower() == "content-type"), "")
    got.charset = content_type.get_content_charset()
    if 300 <= status < 400:  # a redirect to an ISP's stub page is itself the blockpage
        got.blockpage = blockpages.match(status, got.headers, "", None)


async def _h11(stream: TlsStream, request: HttpRequest, settings: Settings, trace: http.Trace,
               got: http.Got) -> None:
    conn = h11.Connection(h11.CLIENT)
    host, target = _path(request.url)
    headers = [("Host", host), ("User-Agent", settings.user_agent), ("Accept", "*/*"),
               ("Connection", "close")]
    await stream.send(conn.send(h11.Request(method="GET", target=target, headers=headers))
                      + conn.send(h11.EndOfMessage()))
    ended = False
    for _ in range(_MAX_EVENTS):
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if ended:  # closed before the response was whole: as aiohttp, an EOF
                raise EOFError("the server closed the connection mid-response") from exc
            raise
        if event is h11.NEED_DATA:
            data = await _receive(stream, settings)
            ended = not data
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            _got_response(trace, got, event.status_code,
                          [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers])
        elif isinstance(event, h11.Data):
            if got.take(event.data, settings.body_limit):
                return
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return
    raise h11.RemoteProtocolError("too many events for one response")


async def _h2(stream: TlsStream, request: HttpRequest, settings: Settings, trace: http.Trace,
              got: http.Got) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding="utf-8"))
    conn.initiate_connection()
    host, target = _path(request.url)
    conn.send_headers(1, [(":method", "GET"), (":authority", host), (":scheme", "https"),
                          (":path", target), ("user-agent", settings.user_agent),
                          ("accept", "*/*")], end_stream=True)
    budget = settings.body_limit + _H2_OVERHEAD
    for _ in range(_MAX_EVENTS):
        await stream.send(conn.data_to_send())
        data = await _receive(stream, settings)
        if not data:
            raise EOFError("the server closed the HTTP/2 connection")
        budget -= len(data)
        if budget < 0:  # headers, padding or frames that are no body: a hostile server
            raise h2.exceptions.ProtocolError("too many bytes besides the body")
        for event in conn.receive_data(data):
            if _h2_event(conn, event, trace, got, settings.body_limit):
                return
    raise h2.exceptions.ProtocolError("too many reads for one response")


def _h2_event(conn: h2.connection.H2Connection, event: h2.events.Event, trace: http.Trace,
              got: http.Got, limit: int) -> bool:
    """Takes one event of stream 1; True when the exchange is over."""
    if isinstance(event, h2.events.ResponseReceived):
        headers = [(str(k), str(v)) for k, v in event.headers or ()]
        status = int(next((v for k, v in headers if k == ":status"), "0"))
        _got_response(trace, got, status, [(k, v) for k, v in headers if not k.startswith(":")])
    elif isinstance(event, h2.events.DataReceived):
        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        return got.take(event.data or b"", limit)
    elif isinstance(event, h2.events.StreamEnded):
        return True
    elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
        raise ConnectionResetError(f"HTTP/2 stream ended by the server: {event}")
    return False


def over(request: HttpRequest, settings: Settings
         ) -> Callable[[TlsResult, TlsStream], Awaitable[HttpResult | None]]:
    """What `tls.measure_then` runs after a handshake: `get`, or None (the caller fetches on a
    connection of its own) when the connection speaks neither HTTP/1.1 nor HTTP/2."""
    async def then(_handshake: TlsResult, stream: TlsStream) -> HttpResult | None:
        return await get(stream, request, settings) if usable(stream) else None

    return then
