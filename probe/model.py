"""Typed, frozen records shared by measuring, judging, storing and exporting.

Every observation carries `t0` (seconds since the measurement of its target started),
`elapsed`, and on failure an OONI-style `failure` string plus the `operation` that failed.
Failures are data: nothing under `probe.measure` raises for a network problem.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cattrs

# --- what to measure -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One listed service: a domain, the URL to fetch, and optionally a control to compare with."""

    domain: str
    url: str = ""  # defaults to https://<domain>/ (see targets.py)
    category: str = "MISC"
    control_domain: str | None = None  # control SNI / domain over the same path
    throughput_url: str | None = None  # a real object of the target, for direct throughput
    control_throughput_url: str | None = None  # a control object of similar size, same path
    media: bool = False  # a media/CDN host: always gets the full adaptive throttling A/B
    source: str = ""  # "file:line" it came from


@dataclass(frozen=True)
class Vantage:
    """Where measurements are taken from; never the volunteer's IP address."""

    name: str = "unnamed"
    asn: str = "AS0"  # "AS1234"
    cc: str = "ZZ"  # ISO country code
    network_name: str = ""


class VantageOffline(Exception):
    """The vantage point has no usable network: nothing was measured (the message says why)."""


@dataclass(frozen=True)
class Settings:
    """Knobs every measurement function receives (the uniform second argument)."""

    timeout: float = 10.0  # per operation (resolve, connect, handshake, round trip)
    ca_file: str | None = None  # an extra CA (PEM) to trust besides the system store
    dns_linger: float = 0.5  # keep listening this long after the first DNS answer
    body_limit: int = 1 << 20  # HTTP bodies are read up to this many bytes
    user_agent: str = "probe/0.1 (+https://github.com/probe-project/probe)"
    origin: float = field(default_factory=time.monotonic)  # t0 is counted from here

    def since_origin(self) -> float:
        return time.monotonic() - self.origin


@dataclass(frozen=True)
class DnsQuery:
    domain: str
    # "system" (first nameserver of /etc/resolv.conf), "udp://IP[:PORT]", "tls://IP[:PORT]"
    # or "https://HOST/dns-query"
    resolver: str = "system"
    qtype: str = "A"


@dataclass(frozen=True)
class Endpoint:
    """An address to connect to; `sni` is used by TLS only (None sends no SNI)."""

    address: str
    port: int = 443
    sni: str | None = None


@dataclass(frozen=True)
class HttpRequest:
    url: str
    address: str | None = None  # pin the connection to this address (like curl --resolve)


@dataclass(frozen=True)
class ThroughputRequest:
    url: str  # https URL; its host is the SNI unless `sni` is given
    address: str | None = None
    sni: str | None = None
    max_bytes: int = 1 << 20  # per-flow data budget
    max_seconds: float = 5.0


# --- what was observed -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Observation:
    t0: float = 0.0
    elapsed: float = 0.0
    failure: str | None = None  # OONI failure string, see failures.py
    operation: str | None = None  # resolve | connect | tls_handshake | http_round_trip | read
    cause: str | None = None  # for an unknown_failure: short scrubbed text of what was raised


@dataclass(frozen=True, kw_only=True)
class DnsAnswer:
    """One record of an answer section, as OONI lists it (df-002): A, AAAA or CNAME."""

    answer_type: str  # A | AAAA | CNAME
    value: str  # the address, or the CNAME's target name
    ttl: int | None = None


@dataclass(frozen=True, kw_only=True)
class DnsResponse:
    """One answer heard for a query; more than one for a query is the mark of injection."""

    t: float  # seconds after the query was sent
    rcode: str  # NOERROR, NXDOMAIN, SERVFAIL ...
    addresses: tuple[str, ...] = ()
    source: str = ""  # address the answer came from
    answers: tuple[DnsAnswer, ...] = ()  # A/AAAA/CNAME records in order, with TTLs


@dataclass(frozen=True, kw_only=True)
class DnsResult(Observation):
    domain: str
    resolver: str  # as in DnsQuery.resolver, with the address actually used
    resolver_kind: str  # system | udp | tls | https | helper
    qtype: str = "A"
    rcode: str | None = None  # of the first answer
    addresses: tuple[str, ...] = ()  # of the first answer
    responses: tuple[DnsResponse, ...] = ()  # every answer heard, in arrival order
    answers: tuple[DnsAnswer, ...] = ()  # of the first answer, with CNAMEs and TTLs
    fingerprint: str | None = None  # OONI's id of a known blockpage answer (e.g. ooni.ru_3)


@dataclass(frozen=True, kw_only=True)
class TcpResult(Observation):
    address: str
    port: int


@dataclass(frozen=True, kw_only=True)
class CertSummary:
    subject: str
    issuer: str
    not_before: str  # ISO 8601 UTC
    not_after: str
    san: tuple[str, ...] = ()
    sha256: str = ""


@dataclass(frozen=True, kw_only=True)
class TlsResult(Observation):
    address: str
    port: int
    sni: str | None
    tls_version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    certificates: tuple[CertSummary, ...] = ()  # leaf first
    # the chain as the server sent it, base64 DER, leaf first (at most tls.MAX_CHAIN): what
    # OONI stores as peer_certificates; the stored record keeps it once, there
    chain_der: tuple[str, ...] = ()
    cert_valid_for_name: bool | None = None  # chain verified and name matched the SNI
    connect_time: float | None = None  # TCP part, seconds


@dataclass(frozen=True, kw_only=True)
class HttpTimings:
    """Seconds from the request's start; None where the phase was not reached."""

    connect: float | None = None
    tls: float | None = None
    first_byte: float | None = None
    transfer: float | None = None


@dataclass(frozen=True, kw_only=True)
class HttpResult(Observation):
    url: str
    address: str | None = None
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    title: str | None = None
    body_length: int = 0  # bytes read (up to Settings.body_limit)
    body_truncated: bool = False
    body_head: str = ""  # first few KiB, decoded, kept as evidence
    timings: HttpTimings = field(default_factory=HttpTimings)
    blockpage: str | None = None  # id of the matching blockpage fingerprint
    final_url: str | None = None  # after redirects; status, headers and body are of this one


@dataclass(frozen=True, kw_only=True)
class ThroughputResult(Observation):
    url: str
    address: str | None = None
    sni: str | None = None
    samples: tuple[tuple[float, int], ...] = ()  # (seconds since first byte, cumulative bytes)
    bytes_received: int = 0
    goodput_bps: float | None = None  # bits per second over the whole transfer
    steady_bps: float | None = None  # bits per second after the initial burst


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """Everything seen from one vantage (the probe, or the control side)."""

    dns: tuple[DnsResult, ...] = ()
    tcp: tuple[TcpResult, ...] = ()
    tls: tuple[TlsResult, ...] = ()
    http: tuple[HttpResult, ...] = ()
    throughput: tuple[ThroughputResult, ...] = ()
    # the system resolver's AAAA answer: stored (OONI's queries list), never judged, since the
    # verdict's DNS rules speak of the A query (an empty AAAA answer is common and harmless)
    dns_aaaa: tuple[DnsResult, ...] = ()


# --- where and who: the censor's hop, and whether its packet was forged ----------------------


@dataclass(frozen=True, kw_only=True)
class PacketFacts:
    """The header fields of one received packet that tell senders apart (forensics)."""

    kind: str  # syn_ack | rst | data | icmp_time_exceeded
    ttl: int
    ip_id: int
    window: int | None = None  # TCP only
    t: float = 0.0  # seconds after the attempt started
    source: str = ""  # the sender's address


@dataclass(frozen=True, kw_only=True)
class HopProbe(Observation):
    """One TTL-limited attempt: a connection opened normally, the trigger sent with `ttl`."""

    ttl: int
    name: str  # the SNI or Host of the trigger
    control: bool = False  # the control name, proving the path itself is fine
    # none (passed, or expired on the way) | reset | blockpage | silence | slow | server
    reaction: str = "none"
    router: str | None = None  # the source of the ICMP time-exceeded, when one came
    rate_bps: float | None = None  # of the follow-up download (throttle mode)
    packets: tuple[PacketFacts, ...] = ()  # the SYN-ACK, and the reaction's packet if any


@dataclass(frozen=True, kw_only=True)
class Injection:
    """Was the packet that broke the connection (or the DNS answer) forged on the path?"""

    injected: bool | None  # None: the evidence cannot tell
    packet: str  # rst | blockpage | dns_answer
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Middlebox(Observation):
    """Where the censor sits: the first TTL at which the trigger draws its reaction."""

    address: str
    port: int
    name: str  # the trigger's SNI or Host
    control_name: str
    method: str  # ttl_reset | ttl_blockpage | ttl_silence | ttl_rate | none
    hop: int | None = None  # None: no reaction before the server (or the TTL bound)
    router: str | None = None  # who answered ICMP at that TTL (never a metric label)
    server_hop: int | None = None  # the first TTL at which the server itself answered
    control_clean: bool | None = None  # the control name drew no reaction at any TTL tried
    evidence: tuple[str, ...] = ()
    injected: Injection | None = None
    probes: tuple[HopProbe, ...] = ()


# --- what it means ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ThrottleEstimate:
    # throttled | degraded | clean | bounded (no policing below excluded_below_bps seen, faster
    # policers not ruled out) | inconclusive | not_measured
    state: str
    method: str  # sni_swap | direct | screen | baseline | none
    rate_bps: float | None = None
    control_rate_bps: float | None = None
    ratio: float | None = None  # target rate / control rate, 0..1 when slower
    p_value: float | None = None
    confidence: float | None = None  # 0..1
    bytes_used: int = 0
    samples: int = 0
    reason: str | None = None  # why throttling was not measured, or what was not tested
    # did a target flow outlast any plausible policer burst (None: no flow ran)?
    outlasted_burst: bool | None = None
    excluded_below_bps: float | None = None  # policers below this rate would have been seen


@dataclass(frozen=True, kw_only=True)
class Verdict:
    verdict: str  # accessible | blocked | throttled | degraded | down | inconclusive
    blocking: str | None = None  # dns | tcp | tls | http, when blocked
    rule: str = ""  # id of the rule that decided
    rules_version: str = ""
    reason: str = ""  # one sentence a person can read
    failure: str | None = None  # the decisive failure string, if any
    throttling: ThrottleEstimate | None = None
    decided_by: str | None = None  # the control whose evidence decided (helper, resolvers ...)
    notes: tuple[str, ...] = ()  # what a reader should know: controls that disagree or broke


@dataclass(frozen=True, kw_only=True)
class TargetMeasurement:
    target: Target
    start_time: float  # UNIX seconds
    runtime: float  # seconds
    probe: Evidence
    control: Evidence  # what the helper (ours or an OONI test helper) saw from outside
    control_source: str = "none"  # helper | ooni-th | control-resolver | none
    verdict: Verdict | None = None
    # where and who (probe/measure/locate.py), only for blocked or throttled targets when the
    # probe may open raw sockets; absent in older records
    middlebox: Middlebox | None = None
    injection: Injection | None = None


# --- (de)serialisation -----------------------------------------------------------------------

# every tuple a list, fixed-length ones too (samples): the record equals its JSON's parse
_converter = cattrs.Converter(unstruct_collection_overrides={tuple: list})
T = TypeVar("T")


def to_dict(record: Any) -> Any:
    """A record as plain JSON-ready data (tuples become lists)."""
    return _converter.unstructure(record)


def from_dict(data: Any, cls: type[T]) -> T:
    """The inverse of to_dict; raises cattrs' errors on data of the wrong shape."""
    return _converter.structure(data, cls)
