"""The facts the verdict rules look at, computed once from one TargetMeasurement.

Pure: no I/O, no clock, no network library (failure strings come from probe.failures).

Which evidence counts as what:
- the probe's own DNS view: probe DnsResults with resolver_kind "system";
- control DNS: every control DnsResult, and probe DnsResults against the control resolver
  (resolver_kind udp/tls/https/helper);
- target SNI: the URL's host (else the domain); every other SNI (or none) is the control SNI;
- the control's TCP/TLS/HTTP: m.control (the helper server outside the censored network).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from probe import failures
from probe.addresses import is_bogon
from probe.model import DnsResult, HttpResult, TargetMeasurement, ThrottleEstimate, TlsResult
from probe.verdict.control_side import control_facts, nxdomain, tls_answered

CONTROL_DNS_KINDS = frozenset({"udp", "tls", "https", "helper"})


@dataclass(frozen=True, kw_only=True)
class Facts:
    """Everything the rules look at, precomputed from one TargetMeasurement."""

    domain: str
    throttle: ThrottleEstimate | None = None
    has_control: bool = False  # any control evidence at all
    # DNS
    probe_addrs: frozenset[str] = frozenset()
    control_addrs: frozenset[str] = frozenset()
    dns_consistent: bool = False  # shared address, or an address proven by a valid certificate
    dns_compared: bool = False  # both sides gave addresses
    probe_nxdomain: bool = False
    probe_dns_failure: str | None = None
    injected: bool = False
    bogons: tuple[str, ...] = ()  # probe answers that are bogons the control does not give
    dns_fingerprint: str | None = None  # OONI's id of a known blockpage answer the probe got
    # TCP
    tcp_all_failed: bool = False
    tcp_failure: str | None = None
    # TLS
    tls_target_ok: bool = False  # a target-SNI handshake with a certificate valid for the name
    tls_mitm: bool = False  # a target-SNI handshake answered with a certificate not valid
    tls_failure: str | None = None  # the target-SNI failure, when no target-SNI handshake worked
    tls_interfered: bool = False  # every target-SNI handshake broken by reset/timeout/EOF
    sni_address: str | None = None  # where the control SNI got answers the target SNI did not
    # HTTP
    http_done: bool = False
    http_ok: bool = False  # a response without a blockpage
    http_failure: str | None = None
    blockpage: str | None = None
    http_diff: str | None = None  # how the probe's plain-HTTP response differs from the helper's
    # the control side
    control_tcp_ok: bool = False
    control_tls_ok: bool = False  # the helper completed a valid target-SNI handshake
    control_http_ok: bool = False
    control_down: str | None = None  # dns | tcp | tls | http: where the control failed too
    control_failure: str | None = None
    ghost_dns: bool = False  # a blockpage at the probe's answer for a name that resolves nowhere
    control_source: str = "none"  # helper | ooni-th | control-resolver | none
    dns_controls: tuple[str, ...] = ()  # the control resolvers (and helper) that gave addresses
    notes: tuple[str, ...] = ()  # controls that disagree or broke, for the reader

    @property
    def probe_ok(self) -> bool:
        """The probe reached the real service itself."""
        return self.http_ok or (self.tls_target_ok and not self.http_done)

    @property
    def control_reached(self) -> bool:
        return self.control_http_ok or self.control_tls_ok or self.control_tcp_ok

    @property
    def dns_acceptable(self) -> bool:
        """Consistent, or not contradicted (no addresses to compare)."""
        return self.dns_consistent or not self.dns_compared

    @property
    def throttle_state(self) -> str | None:
        return self.throttle.state if self.throttle else None


def facts(m: TargetMeasurement, throttle: ThrottleEstimate | None = None) -> Facts:
    domain = (_host(m.target.url) or m.target.domain).lower()
    own_dns = tuple(d for d in m.probe.dns if d.resolver_kind not in CONTROL_DNS_KINDS)
    control_dns = m.control.dns + tuple(
        d for d in m.probe.dns if d.resolver_kind in CONTROL_DNS_KINDS
    )
    target_tls = tuple(t for t in m.probe.tls if (t.sni or "").lower() == domain)
    control_sni_tls = tuple(t for t in m.probe.tls if (t.sni or "").lower() != domain)
    helper_tls = tuple(t for t in m.control.tls if (t.sni or "").lower() == domain)
    base = Facts(
        domain=domain,
        throttle=throttle,
        has_control=bool(control_dns or m.control.tcp or m.control.tls or m.control.http),
        control_tcp_ok=any(t.failure is None for t in m.control.tcp),
        control_tls_ok=any(_tls_valid(t) for t in helper_tls),
        control_http_ok=any(_http_ok(h) for h in m.control.http),
    )
    f = _dns_facts(base, own_dns, control_dns, m)
    f = _tcp_facts(f, m)
    f = _tls_facts(f, target_tls, control_sni_tls)
    f = _http_facts(f, m.probe.http, m.control.http)
    f = replace(f, control_source=m.control_source)
    return control_facts(f, control_dns, m, helper_tls)


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # a malformed URL: the target's domain names it
        return None


# --- DNS --------------------------------------------------------------------------------------


def _dns_facts(f: Facts, own: tuple[DnsResult, ...], control: tuple[DnsResult, ...],
               m: TargetMeasurement) -> Facts:
    probe_addrs = frozenset(a for d in own for a in d.addresses)
    control_addrs = frozenset(a for d in control for a in d.addresses)
    # addresses the helper itself reached with a valid certificate are the real ones too
    control_addrs |= {t.address for t in m.control.tls if _proves(t, f.domain)}
    proven = {t.address for t in m.probe.tls if _proves(t, f.domain)}
    proven |= {h.address for h in m.probe.http if _http_ok(h) and h.address
               and h.url.startswith("https:")}
    consistent = bool(probe_addrs & control_addrs) or bool(probe_addrs & proven)
    failure = next((d.failure for d in own if d.failure), None)
    return replace(
        f,
        probe_addrs=probe_addrs,
        control_addrs=control_addrs,
        dns_consistent=consistent,
        dns_compared=bool(probe_addrs and control_addrs),
        probe_nxdomain=any(nxdomain(d) for d in own) and not probe_addrs,
        probe_dns_failure=failure,
        injected=any(_injected(d) for d in own),
        bogons=tuple(sorted(a for a in probe_addrs if is_bogon(a) and a not in control_addrs)),
        dns_fingerprint=next((d.fingerprint for d in own if d.fingerprint), None),
    )


def _proves(t: TlsResult, domain: str) -> bool:
    """A handshake naming the target, whose certificate was checked and valid for it."""
    return t.failure is None and t.cert_valid_for_name is True and (t.sni or "").lower() == domain


def _injected(d: DnsResult) -> bool:
    """More than one answer to one query, not all alike: an on-path injector raced the resolver."""
    return len({frozenset(r.addresses) for r in d.responses}) > 1


# --- TCP and TLS ------------------------------------------------------------------------------


def _tcp_facts(f: Facts, m: TargetMeasurement) -> Facts:
    tcp = m.probe.tcp
    failed = bool(tcp) and all(t.failure for t in tcp)
    return replace(f, tcp_all_failed=failed, tcp_failure=tcp[0].failure if failed else None)


def _tls_valid(t: TlsResult) -> bool:
    return t.failure is None and t.cert_valid_for_name is not False


def _tls_facts(f: Facts, target: tuple[TlsResult, ...], control: tuple[TlsResult, ...]) -> Facts:
    ok = any(_tls_valid(t) for t in target)
    mitm = any(
        (t.failure is None and t.cert_valid_for_name is False) or t.failure in failures.CERT_FAILURES
        for t in target
    )
    # only failures after the TCP connect count: a failed connect is TCP's business
    broken = [t for t in target
              if t.failure in failures.INTERFERENCE and t.operation != failures.CONNECT]
    interfered = bool(target) and not ok and len(broken) == len(target)
    answered_at = {t.address for t in control if tls_answered(t)}
    sni_address = next((t.address for t in broken if t.address in answered_at), None)
    failure = next((t.failure for t in target if t.failure), None) if not ok else None
    return replace(f, tls_target_ok=ok, tls_mitm=mitm and not ok, tls_failure=failure,
                   tls_interfered=interfered, sni_address=sni_address if interfered else None)


# --- HTTP -------------------------------------------------------------------------------------


def _http_ok(h: HttpResult) -> bool:
    """A response arrived. A body cut short while reading still proves the service answered:
    throttling makes bodies slow, and throughput (not this) judges speed."""
    return h.status is not None and (h.failure is None or h.operation == failures.READ)


def _http_facts(f: Facts, probe: tuple[HttpResult, ...], control: tuple[HttpResult, ...]) -> Facts:
    blockpage = next((h.blockpage for h in probe if h.blockpage), None)
    ok = any(_http_ok(h) for h in probe) and blockpage is None
    failure = None if ok else next((h.failure for h in probe if h.failure), None)
    return replace(f, http_done=bool(probe), http_ok=ok, http_failure=failure,
                   blockpage=blockpage, http_diff=_http_diff(probe, control))


def _http_diff(probe: Iterable[HttpResult], control: Iterable[HttpResult]) -> str | None:
    """Plain HTTP only (over HTTPS a valid certificate already vouches for the answer)."""
    mine = next((h for h in probe if _http_ok(h) and h.url.startswith("http:")), None)
    theirs = next((h for h in control if _http_ok(h)), None)
    if mine is None or theirs is None:
        return None
    if mine.status != theirs.status:
        return f"status {mine.status} where the control got {theirs.status}"
    if theirs.title and mine.title != theirs.title:
        return f"title {mine.title!r} where the control got {theirs.title!r}"
    return None
