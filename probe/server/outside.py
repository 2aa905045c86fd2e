"""The helper's side of a control measurement: what the target looks like from outside.

Mirrors what the probe does (probe.runner) so the two can be compared line by line: DNS of the
URL's host from the helper's own resolver; per address (its own answers first, then the probe's,
capped) a TCP connect and TLS with the target SNI on it, then, only if that handshake failed, TLS
with the control SNI; an HTTP fetch pinned to the helper's first answer. Results are collected as they finish, so a request that
reaches its deadline still returns what was seen (marked incomplete).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from probe import failures
from probe.addresses import is_ip
from probe.helper_api import HelperRequest
from probe.measure import dns, http, http_over, tcp, tls
from probe.measure.tls import TlsStream
from probe.model import (
    DnsQuery,
    DnsResult,
    Endpoint,
    Evidence,
    HttpRequest,
    HttpResult,
    Settings,
    TcpResult,
    TlsResult,
)
from probe.server.limits import Network, PermittedResolver, networks, permitted


@dataclass(frozen=True)
class Policy:
    resolver: str = "system"  # as in DnsQuery.resolver
    max_addresses: int = 8  # addresses tested per request
    allow_private: bool = False  # connect to loopback/private addresses (labs and tests only)
    allowed_networks: tuple[str, ...] = ()  # non-global networks allowed anyway ("10.0.0.0/8")

    @functools.cached_property
    def extra_networks(self) -> tuple[Network, ...]:
        return networks(self.allowed_networks)

    def permits(self, address: str) -> bool:
        """Whether the helper may connect to `address` (checked again at connect time)."""
        return permitted(address, self.allow_private, self.extra_networks)


@dataclass
class _Found:
    """Results gathered so far, appended by concurrent tasks as each finishes; TCP and TLS are
    keyed by (address index, handshake index) so that the order does not depend on timing."""

    dns: list[DnsResult] = field(default_factory=list)
    tcp: list[tuple[int, TcpResult]] = field(default_factory=list)
    tls: list[tuple[tuple[int, int], TlsResult]] = field(default_factory=list)
    http: list[HttpResult] = field(default_factory=list)

    def evidence(self) -> Evidence:
        return Evidence(
            dns=tuple(self.dns),
            tcp=tuple(r for _, r in sorted(self.tcp, key=lambda kr: kr[0])),
            tls=tuple(r for _, r in sorted(self.tls, key=lambda kr: kr[0])),
            http=tuple(self.http),
        )


def _host(request: HelperRequest) -> str:
    return (urlsplit(request.url).hostname or request.domain).lower()


def choose_addresses(own: tuple[str, ...], probe_seen: tuple[str, ...], policy: Policy):
    """The helper's answers first, then the probe's; permitted ones only, capped."""
    ordered = dict.fromkeys(a for a in own + probe_seen if is_ip(a))
    allowed = [a for a in ordered if policy.permits(a)]
    return tuple(allowed[: policy.max_addresses])


async def _resolve(host: str, settings: Settings, policy: Policy
                   ) -> tuple[tuple[str, ...], asyncio.Task[DnsResult] | None]:
    """The addresses of the first answer, as soon as it is in, and the query still listening
    (its result is recorded when it ends)."""
    if is_ip(host):
        return (host,), None
    query, first = await dns.started(DnsQuery(host, policy.resolver), settings)
    return (first.addresses if first and dns.failure_of(first) is None else ()), query


async def _record(query: asyncio.Task[DnsResult], found: _Found) -> None:
    found.dns.append(await query)


async def _per_address(
    index: int, address: str, request: HelperRequest, https: bool, settings: Settings,
    found: _Found, carry: _Carry | None = None,
) -> None:
    """TCP and TLS to one address (the control SNI only after a failed handshake); `carry`: the
    HTTP fetch goes over this connection once its handshake succeeded, else on its own."""
    if not https:
        found.tcp.append((index, await tcp.measure(Endpoint(address, request.port), settings)))
        return
    recorded: list[TlsResult] = []

    def record(handshake: TlsResult) -> None:  # before a fetch on it: a deadline may cut that
        recorded.append(handshake)
        found.tcp.append((index, tcp.from_handshake(handshake)))  # the connect it made first
        found.tls.append(((index, 0), handshake))

    async def then(handshake: TlsResult, stream: TlsStream) -> HttpResult | None:
        record(handshake)
        return await _fetch_over(carry, address, stream) if carry is not None else None

    handshake, fetched = await tls.measure_then(
        Endpoint(address, request.port, _host_sni(request)), settings, then)
    if not recorded:
        record(handshake)
    control = request.control_domain
    if control and control != _host_sni(request) and tls.needs_control_sni(handshake):
        result = await tls.measure(Endpoint(address, request.port, control), settings)
        found.tls.append(((index, 1), result))
    if carry is not None:
        await (_keep(found, fetched) if fetched is not None else carry.on_its_own())


@dataclass(frozen=True)
class _Carry:
    """The HTTP fetch, for the address it is pinned to: over that connection or on its own."""

    request: HelperRequest
    settings: Settings
    policy: Policy
    on_its_own: Callable[[], Awaitable[None]]


async def _fetch_over(carry: _Carry, pinned: str, stream: TlsStream) -> HttpResult | None:
    if not http_over.usable(stream):
        return None
    names = PermittedResolver(carry.policy.allow_private, carry.policy.extra_networks)
    try:
        return await http_over.get(stream, HttpRequest(carry.request.url, pinned), carry.settings,
                                   resolver=names, allowed=carry.policy.permits)
    finally:
        await names.close()


async def _keep(found: _Found, fetch: HttpResult) -> None:
    # the verdict needs status, headers, title and blockpage, never the page itself: the
    # helper must not hand out the content of whatever it was sent to fetch
    found.http.append(dataclasses.replace(fetch, body_head=""))


def _host_sni(request: HelperRequest) -> str:
    return _host(request) if not is_ip(_host(request)) else request.domain


async def _fetch(
    request: HelperRequest, own: tuple[str, ...], settings: Settings, policy: Policy,
    found: _Found, query: asyncio.Task[DnsResult] | None,
) -> None:
    if not own:  # the helper could not resolve the name either: say so, as OONI's helper does
        failure = (await query).failure if query is not None else None
        found.http.append(HttpResult(
            url=request.url, t0=settings.since_origin(),
            failure=failure or failures.DNS_NO_ANSWER, operation=failures.RESOLVE,
        ))
        return
    pinned = _pinned(own, policy)
    if pinned is not None:  # else the name points somewhere the helper must not go
        names = PermittedResolver(policy.allow_private, policy.extra_networks)
        try:
            fetch = await http.measure(
                HttpRequest(request.url, pinned), settings, resolver=names, allowed=policy.permits
            )
        finally:
            await names.close()
        await _keep(found, fetch)


async def _measure_all(
    request: HelperRequest, settings: Settings, policy: Policy, found: _Found
) -> None:
    own, query = await _resolve(_host(request), settings, policy)
    addresses = choose_addresses(own, request.addresses, policy)
    https = urlsplit(request.url).scheme == "https"
    pinned = _pinned(own, policy)
    carried = https and pinned in addresses
    carry = _Carry(request, settings, policy,
                   functools.partial(_fetch, request, own, settings, policy, found, query))
    async with asyncio.TaskGroup() as group:
        if query is not None:
            group.create_task(_record(query, found))
        for index, address in enumerate(addresses):
            group.create_task(_per_address(index, address, request, https, settings, found,
                                           carry if carried and address == pinned else None))
        if not carried:
            group.create_task(carry.on_its_own())


def _pinned(own: tuple[str, ...], policy: Policy) -> str | None:
    """The address the fetch goes to: the helper's first answer it may connect to."""
    return next((a for a in own if policy.permits(a)), None)


async def measure_outside(
    request: HelperRequest, settings: Settings, policy: Policy, deadline: float
) -> tuple[Evidence, bool]:
    """The Evidence seen from here, and whether everything finished before `deadline` seconds."""
    found = _Found()
    try:
        async with asyncio.timeout(deadline):
            await _measure_all(request, settings, policy, found)
    except TimeoutError:  # the deadline, not a network failure: those are inside the results
        return found.evidence(), False
    return found.evidence(), True
