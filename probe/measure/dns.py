"""Resolve one name over the system resolver, plain UDP, DNS over TLS or DNS over HTTPS.

Over UDP the query is sent once and the socket keeps listening `settings.dns_linger` seconds
after the first answer: an on-path injector races a forged answer ahead of the real one, so two
different answers to one query are its signature. Every answer heard is kept, in arrival order.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import dns.asyncquery
import dns.exception
import dns.inet
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from probe import failures
from probe.addresses import host_port, is_ip
from probe.measure import ooni_fingerprints, shared
from probe.measure.classify import NETWORK_ERRORS, cause, failure_and_cause
from probe.measure.datagrams import Inbox
from probe.measure.dnswire import answer_to, query_wire
from probe.measure.tlsctx import client_context
from probe.model import DnsAnswer, DnsQuery, DnsResponse, DnsResult, Settings

RESOLV_CONF = "/etc/resolv.conf"  # inside `ip netns exec NS` this is /etc/netns/NS/resolv.conf
MAX_RESPONSES = 16  # a flood of answers is recorded up to this many
DOH_TYPE = "application/dns-message"
_DOH_MAX = 65535  # a DNS message is never larger
_DEFAULT_PORTS = {"system": 53, "udp": 53, "tls": 853, "https": 443}
_RCODE_FAILURES = {
    "NOERROR": None,
    "NXDOMAIN": failures.DNS_NXDOMAIN,
    "SERVFAIL": failures.DNS_SERVFAIL,
    "REFUSED": failures.DNS_REFUSED,
}


@dataclass(frozen=True)
class Resolver:
    """A parsed resolver URL. `host` is None for "system" until resolv.conf is read."""

    kind: str  # system | udp | tls | https
    host: str | None = None
    port: int = 53
    url: str = ""  # the DoH URL

    def describe(self) -> str:
        """The resolver as a URL naming the address actually used."""
        if self.kind == "https":
            return self.url
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        scheme = "tls" if self.kind == "tls" else "udp"
        return f"{scheme}://{host}:{self.port}"


def parse_resolver(url: str) -> Resolver:
    """Validate a resolver URL; raises ValueError with a reason a person can act on."""
    if url == "system":
        return Resolver("system")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("udp", "tls", "https"):
        raise ValueError(f"resolver {url!r}: expected system, udp://IP, tls://IP or https://HOST/path")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"resolver {url!r}: {exc}") from None
    if port == 0:
        raise ValueError(f"resolver {url!r}: port 0 cannot be reached (want 1-65535)")
    port = port or _DEFAULT_PORTS[parts.scheme]
    host = parts.hostname
    if not host:
        raise ValueError(f"resolver {url!r}: no host")
    if parts.scheme == "https":
        path = parts.path or "/dns-query"
        netloc = f"[{host}]" if ":" in host else host
        return Resolver("https", host, port, f"https://{netloc}:{port}{path}")
    if not is_ip(host):
        raise ValueError(f"resolver {url!r}: {parts.scheme}:// needs an IP address, not {host!r}")
    if parts.path not in ("", "/"):
        raise ValueError(f"resolver {url!r}: unexpected path {parts.path!r}")
    return Resolver(parts.scheme, host, port)


def system_nameserver(path: str = RESOLV_CONF) -> str:
    """The first nameserver `path` names, as the file is now (so a namespace's bind mount is
    honoured); parsed again only when the file changed (it was 0.2 ms per query)."""
    try:
        status = os.stat(path)
    except OSError:  # dnspython says what is wrong, as before
        return _first_nameserver.__wrapped__(path, 0, 0, 0)
    return _first_nameserver(path, status.st_ino, status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=8)
def _first_nameserver(path: str, _inode: int, _mtime_ns: int, _size: int) -> str:
    conf = dns.resolver.Resolver(filename=path, configure=True)
    return str(conf.nameservers[0])


FirstAnswer = Callable[[DnsResponse], None]


async def measure(query: DnsQuery, settings: Settings, on_first: FirstAnswer | None = None
                  ) -> DnsResult:
    """Resolve `query`; DNS and network failures are returned in the result, never raised.

    `on_first` hears the first answer as soon as it arrives, while the query keeps listening
    for more (`settings.dns_linger` over UDP): the caller can connect meanwhile. The result's
    `addresses` are that answer's."""
    t0, start = settings.since_origin(), time.monotonic()
    kind = query.resolver.split(":", 1)[0]
    kind = kind if kind in _DEFAULT_PORTS else "udp"  # a bounded label even for a bad URL
    resolver_text = query.resolver
    responses: tuple[DnsResponse, ...] = ()
    why = None
    try:
        resolver = parse_resolver(query.resolver)
        kind = resolver.kind
        if kind == "system":
            resolver = Resolver("system", system_nameserver(RESOLV_CONF), 53)
        resolver_text = resolver.describe()
        message = dns.message.make_query(query.domain, query.qtype)
        async with asyncio.timeout(settings.timeout + settings.dns_linger):  # a hard bound
            responses = await _exchange(message, resolver, settings, on_first)
    except NETWORK_ERRORS as exc:  # every network failure becomes data
        failure, why = failure_and_cause(exc)
    except ValueError as exc:  # a resolver URL or name that cannot be used: nothing was sent
        failure, why = failures.UNKNOWN, cause(exc)
    else:
        failure = failure_of(responses[0]) if responses else failures.TIMEOUT
    first = responses[0] if responses else None
    return DnsResult(
        t0=t0,
        elapsed=time.monotonic() - start,
        failure=failure,
        operation=failures.RESOLVE if failure else None,
        cause=why,
        domain=query.domain,
        resolver=resolver_text,
        resolver_kind=kind,
        qtype=query.qtype,
        rcode=first.rcode if first else None,
        addresses=first.addresses if first else (),
        responses=responses,
        answers=first.answers if first else (),
        fingerprint=_fingerprint(responses),
    )


def start(query: DnsQuery, settings: Settings
          ) -> tuple[asyncio.Task[DnsResult], asyncio.Future[DnsResponse | None]]:
    """Starts `query`: its task, listening until its linger ends, and a future that holds its
    first answer as soon as it arrives (None: it ended without one; the task's result says
    why). What a result's `addresses` will be is known then: the caller need not wait for the
    linger to connect. No coroutine between: each turn of a busy event loop costs a target
    time in its slot."""
    first: asyncio.Future[DnsResponse | None] = asyncio.get_running_loop().create_future()

    def heard(response: DnsResponse | None) -> None:
        if not first.done():
            first.set_result(response)

    task = asyncio.create_task(measure(query, settings, heard))
    task.add_done_callback(lambda _: heard(None))
    return task, first


async def started(query: DnsQuery, settings: Settings
                  ) -> tuple[asyncio.Task[DnsResult], DnsResponse | None]:
    """`start`, returning once the first answer is in (or the query ended without one)."""
    task, first = start(query, settings)
    try:
        return task, await first
    except asyncio.CancelledError:
        task.cancel()
        raise


def _fingerprint(responses: tuple[DnsResponse, ...]) -> str | None:
    """OONI's id for a known blockpage answer in any response heard (an injected one too)."""
    values = (a.value for r in responses for a in r.answers)  # addresses and CNAME targets
    found = ooni_fingerprints.dns_index().match(values)
    return found.name if found else None


async def address_of(host: str, settings: Settings) -> str | None:
    """The address to connect to for `host`: itself when it is one, else the system resolver's
    first answer (None when it gives none)."""
    if is_ip(host):
        return host
    answer = await measure(DnsQuery(host), settings)
    return answer.addresses[0] if answer.addresses else None


async def _exchange(
    message: dns.message.Message, resolver: Resolver, settings: Settings,
    on_first: FirstAnswer | None = None,
) -> tuple[DnsResponse, ...]:
    if resolver.kind in ("system", "udp"):
        assert resolver.host is not None
        return await _udp(message, resolver.host, resolver.port, settings, on_first)
    sent = time.monotonic()
    if resolver.kind == "tls":
        answer = await dns.asyncquery.tls(
            message,
            resolver.host or "",
            timeout=settings.timeout,
            port=resolver.port,
            ssl_context=client_context(settings.ca_file, alpn=("dot",)),
            server_hostname=resolver.host,
        )
    else:
        answer = await _doh(message, resolver.url, settings)
    source = host_port(resolver.host or "", resolver.port)
    return (_response(answer, time.monotonic() - sent, source),)


async def _doh(message: dns.message.Message, url: str, settings: Settings) -> dns.message.Message:
    """One RFC 8484 POST, through the run's kept-alive session when there is one (aiohttp: a
    third of the CPU of dnspython's httpx client per query). A status other than 2xx is a
    ValueError, as in dnspython."""
    wire = query_wire(message)
    headers = {"accept": DOH_TYPE, "content-type": DOH_TYPE}
    shared_session = shared.doh_session(settings.ca_file)
    session = shared_session or aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=client_context(settings.ca_file), limit=1))
    try:
        async with (asyncio.timeout(settings.timeout),
                    session.post(url, data=wire, headers=headers) as response):
            body = await response.content.read(_DOH_MAX + 1)
    finally:
        if shared_session is None:
            await session.close()
    if not 200 <= response.status <= 299:
        raise ValueError(f"{url} responded with status code {response.status}")
    if len(body) > _DOH_MAX:
        raise dns.exception.FormError("DoH answer too large")
    answer = dns.message.from_wire(body)
    if not message.is_response(answer):
        raise dns.query.BadResponse
    return answer


async def _udp(
    message: dns.message.Message, host: str, port: int, settings: Settings,
    on_first: FirstAnswer | None = None,
) -> tuple[DnsResponse, ...]:
    """Send once, then hear every matching answer until timeout, or linger after the first."""
    # A connected socket: the kernel reports ICMP port unreachable as connection_refused,
    # and an injector must spoof the resolver's address to be heard (it does).
    with Inbox((host, port), dns.inet.af_for_address(host)) as inbox:
        source = host_port(*inbox.peer)
        sent = time.monotonic()
        await inbox.send(query_wire(message))
        deadline = sent + settings.timeout
        heard: list[DnsResponse] = []
        while len(heard) < MAX_RESPONSES:
            arrival = await inbox.next(deadline)
            if arrival is None:
                break
            t, data = arrival
            if isinstance(data, OSError):
                if not heard:
                    raise data
                break  # an ICMP error after an answer changes nothing already heard
            answer = answer_to(message, data)
            if answer is None:
                continue
            heard.append(_response(answer, t - sent, source))
            if len(heard) == 1:
                deadline = min(deadline, t + settings.dns_linger)
                if on_first is not None:
                    on_first(heard[0])
    return tuple(heard)


def _response(answer: dns.message.Message, t: float, source: str) -> DnsResponse:
    records = _answers(answer)
    addresses = tuple(r.value for r in records if r.answer_type != "CNAME")
    return DnsResponse(t=t, rcode=dns.rcode.to_text(answer.rcode()), addresses=addresses,
                       source=source, answers=records)


def _answers(answer: dns.message.Message) -> tuple[DnsAnswer, ...]:
    """A, AAAA and CNAME records of the answer section, in order, each with its TTL."""
    records = []
    for rrset in answer.answer:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            kind = dns.rdatatype.to_text(rrset.rdtype)
            records += [DnsAnswer(answer_type=kind, value=r.address, ttl=rrset.ttl) for r in rrset]
        elif rrset.rdtype == dns.rdatatype.CNAME:
            records += [DnsAnswer(answer_type="CNAME", value=r.target.to_text(omit_final_dot=True),
                                  ttl=rrset.ttl) for r in rrset]
    return tuple(records)


def failure_of(response: DnsResponse) -> str | None:
    """The failure one response stands for (an rcode, or no address)."""
    failure = _RCODE_FAILURES.get(response.rcode, failures.DNS_MISBEHAVING)
    if failure is None and not response.addresses:
        return failures.DNS_NO_ANSWER
    return failure



