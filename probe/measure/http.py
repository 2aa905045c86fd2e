"""HTTP(S) GET measurement through aiohttp: status, headers, title, a capped body, phase timings.

Timings are seconds from the request's start: `connect` (TCP established), `tls` (handshake
done) and `first_byte` (response headers in) are of the first exchange, the URL asked for;
`transfer` is when the final body (after redirects) was read. aiohttp reports the connection
only once TLS is done, so the TCP moment is taken from the TLS object's first handshake step.
Each phase is bounded by settings.timeout and the whole by PHASES of them, so a server that
trickles a byte at a time cannot hold a measurement for long.
"""

from __future__ import annotations

import asyncio
import contextvars
import html
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from probe import failures
from probe.measure import blockpages
from probe.measure.classify import NETWORK_ERRORS, failure_and_cause
from probe.measure.http_connect import ConnectGuard, PinnedResolver
from probe.measure.tlsctx import client_context
from probe.model import HttpRequest, HttpResult, HttpTimings, Settings

PHASES = 4  # resolve, connect + TLS, round trip, read
MAX_REDIRECTS = 5
_HEAD = 4096  # bytes of body kept as evidence
_SCAN = 1 << 16  # bytes searched for <title> and blockpage fingerprints
_CHUNK = 1 << 16
_TITLE_OPEN = re.compile(r"<title", re.IGNORECASE)  # literals: found in one linear pass
_TITLE_CLOSE = re.compile(r"</title\s*>", re.IGNORECASE)


@dataclass
class Trace:
    """What one measurement went through, filled in by the trace hooks as it happens."""

    start: float
    stage: str = failures.CONNECT  # the operation under way, named on failure
    marks: dict[str, float] = field(default_factory=dict)

    def enter(self, stage: str) -> None:
        self.stage = stage

    def mark(self, name: str, stage: str | None = None) -> None:
        self.marks.setdefault(name, time.monotonic() - self.start)  # the first one counts
        if stage is not None:
            self.stage = stage


@dataclass
class Got:
    """What arrived before any failure."""

    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    final_url: str | None = None
    charset: str | None = None
    body: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    blockpage: str | None = None

    def take(self, data: bytes, limit: int) -> bool:
        """Keeps body bytes up to `limit`; True once the body is longer (read no more: one
        byte past the limit tells that it was)."""
        self.body += data
        if len(self.body) <= limit:
            return False
        self.truncated = True
        del self.body[limit:]
        return True


async def measure(
    request: HttpRequest, settings: Settings, *, resolver: AbstractResolver | None = None,
    allowed: Callable[[str], bool] | None = None, max_redirects: int = MAX_REDIRECTS,
) -> HttpResult:
    """GET request.url (pinned to request.address if set), following up to 5 redirects.

    `resolver` (default: the system's, through getaddrinfo) resolves every name but a pinned
    one, including redirect targets: a server that must not reach some addresses (the helper)
    passes one that refuses them, and `allowed`, checked on every address right before its
    socket connects (redirects to address literals never meet the resolver).
    """
    t0 = settings.since_origin()
    trace, got = Trace(start=time.monotonic()), Got()
    failure = cause = None
    token = _CURRENT_TRACE.set(trace)
    guard = ConnectGuard(allowed)
    try:
        async with asyncio.timeout(PHASES * settings.timeout):
            await _fetch(request, settings, trace, got,
                         resolver or aiohttp.ThreadedResolver(), guard, max_redirects)
        trace.mark("transfer")
    except NETWORK_ERRORS as exc:  # every network failure becomes data
        failure, cause = failure_and_cause(exc)
    finally:
        _CURRENT_TRACE.reset(token)
    return result_of(request, t0, trace, got, failure, cause)


def result_of(request: HttpRequest, t0: float, trace: Trace, got: Got, failure: str | None,
            cause: str | None) -> HttpResult:
    """What was got, with its title and blockpage match (searched past the kept evidence)."""
    head = _decode(bytes(got.body[:_HEAD]), got.charset)
    scanned = _decode(bytes(got.body[:_SCAN]), got.charset)
    title = _title(scanned)
    if got.status is not None and got.blockpage is None:
        got.blockpage = blockpages.match(got.status, got.headers, scanned, title)
    return HttpResult(
        t0=t0,
        elapsed=time.monotonic() - trace.start,
        failure=failure,
        operation=_operation(failure, trace.stage),
        cause=cause,
        url=request.url,
        address=request.address,
        status=got.status,
        headers=got.headers,
        title=title,
        body_length=len(got.body),
        body_truncated=got.truncated,
        body_head=head,
        timings=HttpTimings(**{k: trace.marks.get(k) for k in _TIMINGS}),
        blockpage=got.blockpage,
        final_url=got.final_url,
    )


_TIMINGS = ("connect", "tls", "first_byte", "transfer")


async def _fetch(
    request: HttpRequest, settings: Settings, trace: Trace, got: Got, names: AbstractResolver,
    guard: ConnectGuard, max_redirects: int,
) -> None:
    # aiohttp speaks HTTP/1.1 only
    ctx = client_context(settings.ca_file, alpn=("http/1.1",), sslobject_class=_TimedSSLObject)
    host = URL(request.url).host or ""
    connector = aiohttp.TCPConnector(
        ssl=ctx,
        resolver=PinnedResolver(host, request.address, names) if request.address else names,
        force_close=True,  # one exchange per connection: nothing carried between hops
        use_dns_cache=False,
        socket_factory=guard.socket,
    )
    timeout = aiohttp.ClientTimeout(sock_connect=settings.timeout, sock_read=settings.timeout)
    async with (
        aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            trace_configs=[_trace_config(trace)],
            headers={"User-Agent": settings.user_agent},
        ) as session,
        session.get(request.url, max_redirects=max_redirects) as resp,
    ):
        trace.stage = failures.READ
        got.status, got.final_url, got.charset = resp.status, str(resp.url), resp.charset
        got.headers = tuple(resp.headers.items())
        # A redirect to an ISP's stub page is itself the blockpage: check every hop.
        hops = (blockpages.match(h.status, h.headers.items(), "", None) for h in resp.history)
        got.blockpage = next((b for b in hops if b), None)
        await _read_body(resp.content, settings.body_limit, got)


async def _read_body(content: aiohttp.StreamReader, limit: int, got: Got) -> None:
    """Read up to `limit` bytes; one byte more tells whether the body was longer."""
    while not got.truncated:
        chunk = await content.read(min(_CHUNK, limit + 1 - len(got.body)))
        if not chunk or got.take(chunk, limit):
            return


# The measurement under way in this task. asyncio runs the handshake steps in callbacks that
# inherit the task's context, so a shared TLS context can still time each request on its own.
_CURRENT_TRACE: contextvars.ContextVar[Trace | None] = contextvars.ContextVar(
    "probe_http_trace", default=None
)


class _TimedSSLObject(ssl.SSLObject):
    """An SSLObject whose first handshake step marks the TCP connection as established."""

    def do_handshake(self) -> None:
        trace = _CURRENT_TRACE.get()
        if trace is not None:
            trace.mark("connect", failures.TLS_HANDSHAKE)
        super().do_handshake()
        if trace is not None:
            trace.mark("tls")


def _trace_config(trace: Trace) -> aiohttp.TraceConfig:
    def hook(action: Callable[[], None]) -> Callable[..., Any]:
        async def on(_session: Any, _ctx: SimpleNamespace, _params: Any) -> None:
            action()

        return on

    config = aiohttp.TraceConfig()
    config.on_connection_create_start.append(hook(lambda: trace.enter(failures.CONNECT)))
    config.on_dns_resolvehost_start.append(hook(lambda: trace.enter(failures.RESOLVE)))
    config.on_dns_resolvehost_end.append(hook(lambda: trace.enter(failures.CONNECT)))
    # Plain HTTP: the connection is ready right after connect; HTTPS marked it already.
    config.on_connection_create_end.append(
        hook(lambda: trace.mark("connect", failures.HTTP_ROUND_TRIP))
    )
    # Response headers in: a redirect hop fires the one, the final response the other.
    config.on_request_redirect.append(hook(lambda: trace.mark("first_byte")))
    config.on_request_end.append(hook(lambda: trace.mark("first_byte")))
    return config


def _operation(failure: str | None, stage: str) -> str | None:
    if failure is None:
        return None
    if failure.startswith("dns_"):
        return failures.RESOLVE
    return stage


def _decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def _title(text: str) -> str | None:
    """The first <title>'s text. A scan, not one regex: `<title[^>]*>(.*?)</title>` retried
    from every `<title` costs quadratic time on a page of unclosed tags (seconds per 64 KiB).
    Each step below searches forward from the last, so the whole is linear."""
    opened = _TITLE_OPEN.search(text)
    if opened is None:
        return None
    start = text.find(">", opened.end())
    if start < 0:
        return None
    closed = _TITLE_CLOSE.search(text, start + 1)
    if closed is None:
        return None
    return " ".join(html.unescape(text[start + 1:closed.start()]).split())[:512] or None
