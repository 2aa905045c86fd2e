"""Where the censor sits, and whether its packet was forged: TTL-limited triggers (the method of
Xue et al. 2021 and OONI's tlsmiddlebox), target and control name interleaved at each TTL.

For TTL 1, 2, 3 ... up to `max_ttl`, a connection is opened to the target's address and the
trigger (the ClientHello with the target's SNI, or the HTTP request with its Host) is sent with
that IP TTL (probe/measure/ttlprobe.py); then the same with the control name. The first TTL at
which the target's trigger draws a reset, a blockpage, silence or a policed rate that the
control's does not is the censor's hop (probe/verdict/forensics.py judges). Bounded: at most
`max_ttl` pairs of connections, one trigger packet each, and `max_seconds` in all; it stops at
the hop, or when the trigger reaches the server. Packets go only to the target's address.
Needs raw sockets (root or CAP_NET_RAW); without them the result says `raw_socket_denied`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from probe import failures
from probe.measure import ttlprobe
from probe.model import (
    HopProbe,
    Injection,
    Middlebox,
    PacketFacts,
    Settings,
    TargetMeasurement,
    Verdict,
)
from probe.verdict import forensics

DEFAULT_MAX_TTL = 16


@dataclass(frozen=True)
class LocateRequest:
    address: str
    name: str  # the target's SNI (or Host, for plain HTTP)
    control_name: str
    port: int = 443
    tls: bool = True
    http_path: str = "/"
    rate_path: str | None = None  # throttle mode: a large object's path on the target
    max_ttl: int = DEFAULT_MAX_TTL
    max_seconds: float = 60.0
    limits: ttlprobe.Limits = field(default_factory=ttlprobe.Limits)


async def measure(request: LocateRequest, settings: Settings) -> Middlebox:
    """The censor's hop for one address, with the forensics of its reacting packet."""
    t0 = settings.since_origin()
    base = Middlebox(address=request.address, port=request.port, name=request.name,
                     control_name=request.control_name, method="none", t0=t0)
    if not _ipv4(request.address):
        return _done(base, settings, failure=failures.UNKNOWN, cause="IPv6 is not located yet",
                     evidence=("only IPv4 addresses are located so far",))
    if not await asyncio.to_thread(ttlprobe.raw_allowed):
        return _done(base, settings, failure=failures.RAW_SOCKET_DENIED,
                     evidence=("raw sockets are not permitted (needs root or CAP_NET_RAW)",))
    pairs = await _scan(request)
    first = pairs[0][0]
    if first.failure is not None and first.operation == failures.CONNECT:
        reset = _packet(first, "rst")  # a refused SYN: whose reset it was cannot be told
        injection = None if reset is None else forensics.packet_injection(reset, None)
        return _done(base, settings, failure=first.failure, operation=first.operation,
                     cause=first.cause,
                     probes=(first,), injected=injection, evidence=_refused(reset))
    found = forensics.locate(pairs)
    injection = await _injection(request, pairs, found.hop)
    probes = tuple(p for pair in pairs for p in pair if p is not None)
    return _done(base, settings, hop=found.hop, method=found.method, router=found.router,
                 server_hop=found.server_hop, control_clean=found.control_clean,
                 evidence=found.evidence, injected=injection, probes=probes)


async def _scan(request: LocateRequest) -> list[tuple[HopProbe, HopProbe | None]]:
    """Target then control at each TTL, until a reaction, the server, or a bound."""
    common = {"address": request.address, "port": request.port, "tls": request.tls,
              "follow_name": request.control_name, "rate_path": request.rate_path,
              "http_path": request.http_path}
    target = ttlprobe.Trigger(name=request.name, **common)
    control = ttlprobe.Trigger(name=request.control_name, control=True, **common)
    deadline = time.monotonic() + request.max_seconds
    pairs: list[tuple[HopProbe, HopProbe | None]] = []
    for ttl in range(1, max(1, request.max_ttl) + 1):
        mine = await asyncio.to_thread(ttlprobe.attempt, target, ttl, request.limits)
        if mine.failure is not None and mine.operation == failures.CONNECT:
            pairs.append((mine, None))
            break
        theirs = await asyncio.to_thread(ttlprobe.attempt, control, ttl, request.limits)
        pairs.append((mine, theirs))
        if (forensics.reaction_against(mine, theirs) is not None or time.monotonic() > deadline
                or mine.reaction == "server" or theirs.reaction == mine.reaction != "none"):
            break  # found; at the server; or both names meet the same end (no name is keyed)
    return pairs


async def _injection(request: LocateRequest, pairs: list[tuple[HopProbe, HopProbe | None]],
                     hop: int | None) -> Injection | None:
    """Forensics of the reacting packet (a reset, a blockpage's first packet) at the hop."""
    if hop is None:
        return None
    target = next(t for t, _ in pairs if t.ttl == hop)
    if target.reaction not in ("reset", "blockpage"):
        return None  # silence and policing send nothing to examine
    what = "rst" if target.reaction == "reset" else "blockpage"
    reference = None
    if not request.tls and request.port != 443:  # a proxy may own port 80: ask port 443 too
        reference = await asyncio.to_thread(ttlprobe.syn_ack, request.address, 443)
    return forensics.packet_injection(_packet(target, "rst" if what == "rst" else "data"),
                                      _packet(target, "syn_ack"), reference, what)


def _ipv4(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 4
    except ValueError:
        return False


def _packet(probe: HopProbe, kind: str) -> PacketFacts | None:
    return next((p for p in probe.packets if p.kind == kind), None)


def _refused(reset: PacketFacts | None) -> tuple[str, ...]:
    if reset is None:
        return ("the connection failed before any trigger could be sent",)
    return (f"the SYN was answered by a reset (TTL {reset.ttl}, IP ID {reset.ip_id}, window "
            f"{reset.window}): nothing on the path had seen any content yet",)


def _done(base: Middlebox, settings: Settings, **changes: object) -> Middlebox:
    return replace(base, elapsed=settings.since_origin() - base.t0, **changes)


LOCATED_BLOCKING = ("tcp", "tls", "http")  # a reaction on the path that TTLs can place


def wanted(verdict: Verdict | None) -> bool:
    """Located after the verdict: blocked by TCP/TLS/HTTP, throttled, or DNS (forensics only)."""
    if verdict is None:
        return False
    return verdict.verdict == "throttled" or (
        verdict.verdict == "blocked" and verdict.blocking in (*LOCATED_BLOCKING, "dns"))


async def for_target(m: TargetMeasurement, control_name: str, settings: Settings,
                     lock: asyncio.Lock | None = None
                     ) -> tuple[Middlebox | None, Injection | None]:
    """The runner's step for a judged target: DNS forensics (pure) for DNS blocking, else the
    TTL scan of its first IPv4 address (under `lock`: its packets and rates must not meet other
    flows), in throttle mode when it was throttled."""
    verdict = m.verdict
    if verdict is not None and verdict.blocking == "dns":
        system = next((d for d in m.probe.dns if d.resolver_kind == "system"), None)
        control = next((d for d in (*m.probe.dns, *m.control.dns)
                        if d.resolver_kind != "system" and d.addresses), None)
        return None, (forensics.dns_injection(system, control) if system else None)
    parts = urlsplit(m.target.url)
    address = next((t.address for t in m.probe.tcp if _ipv4(t.address)), None)
    if address is None:
        return None, None
    tls = parts.scheme != "http"
    rate_path = None
    if verdict is not None and verdict.verdict == "throttled":
        rate_path = urlsplit(m.target.throughput_url or "").path or parts.path or "/"
    request = LocateRequest(address=address, name=parts.hostname or m.target.domain,
                            control_name=control_name, port=parts.port or (443 if tls else 80),
                            tls=tls, http_path=parts.path or "/", rate_path=rate_path,
                            max_seconds=min(60.0, 6 * settings.timeout))
    async with lock or contextlib.nullcontext():
        found = await measure(request, settings)
    return found, found.injected
