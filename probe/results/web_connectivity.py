"""Web Connectivity's keys (ooni/spec ts-017) computed from a judged TargetMeasurement.

They sit in test_keys beside ours so that OONI's analysis tools can read our lines as Web
Connectivity test keys: `accessible` and `blocking` in its vocabulary (translated from our
verdict, which is richer), `dns_consistency`, the HTTP match fields, and `control` in the test
helper's answer shape, made from the control side's Evidence.
"""

from __future__ import annotations

import re
from typing import Any

from probe import failures
from probe.addresses import host_port, is_bogon
from probe.model import Evidence, HttpResult, Observation, TargetMeasurement

# Header names nearly every response has: only the others tell two sites apart (the list
# OONI's Web Connectivity uses for headers_match).
COMMON_HEADERS = frozenset({
    "date", "content-type", "server", "cache-control", "vary", "set-cookie", "location",
    "expires", "x-powered-by", "content-encoding", "last-modified", "accept-ranges", "pragma",
    "x-frame-options", "etag", "x-content-type-options", "age", "via", "p3p",
    "x-xss-protection", "content-language", "cf-ray", "strict-transport-security", "link",
    "x-varnish",
})
CONTROL_RESOLVER_KINDS = frozenset({"udp", "tls", "https"})
# ip_info flags of the test helper (probe-cli internal/model/th.go)
FLAG_RESOLVED_BY_PROBE, FLAG_RESOLVED_BY_TH, FLAG_BOGON, FLAG_VALID_FOR_DOMAIN = 1, 2, 4, 8
_WC_BLOCKING = {"dns": "dns", "tcp": "tcp_ip", "tls": "http-failure"}


def wc_keys(m: TargetMeasurement, domain: str) -> dict[str, Any]:
    """The Web Connectivity test keys of one judged measurement (not the shared lists)."""
    probe_http = _final(m.probe.http)
    control_http = _final(m.control.http)
    accessible, blocking = accessible_and_blocking(m)
    system = [d for d in m.probe.dns if d.resolver_kind == "system"]
    return {
        "accessible": accessible,
        "blocking": blocking,
        "dns_consistency": dns_consistency(m, domain),
        "dns_experiment_failure": system[0].failure if system else None,
        "http_experiment_failure": probe_http.failure if probe_http else None,
        **http_matches(probe_http, control_http),
        "control": th_control(m.control, domain, _system_addresses(m.probe))
        if m.control != Evidence() else None,
    }


def accessible_and_blocking(m: TargetMeasurement) -> tuple[bool | None, str | bool | None]:
    """Our verdict in Web Connectivity's words: a blocked target is not accessible, and how it
    is blocked maps onto dns | tcp_ip | http-failure | http-diff (a blockpage)."""
    assert m.verdict is not None
    v = m.verdict
    if v.verdict in ("accessible", "throttled", "degraded"):
        return True, False  # WC has no word for slow: our `throttling` key says it
    if v.verdict == "down":
        return False, False  # expected failure: the control fails too
    if v.verdict != "blocked":
        return None, None
    if v.blocking == "http":
        answered = any(h.status is not None for h in m.probe.http)
        return False, "http-diff" if answered else "http-failure"
    return False, _WC_BLOCKING.get(v.blocking or "", "http-failure")


def dns_consistency(m: TargetMeasurement, domain: str) -> str | None:
    """consistent | inconsistent | None: the system resolver's answer beside the controls'."""
    own = [d for d in m.probe.dns if d.resolver_kind == "system"]
    controls = [*m.control.dns, *(d for d in m.probe.dns if d.resolver_kind in
                                 CONTROL_RESOLVER_KINDS)]
    if not own or not controls:
        return None
    probe_addrs = {a for d in own for a in d.addresses}
    control_addrs = {a for d in controls for a in d.addresses}
    proven = {t.address for t in (*m.probe.tls, *m.control.tls)
              if t.failure is None and t.cert_valid_for_name and (t.sni or "").lower() == domain}
    if probe_addrs & (control_addrs | proven):
        return "consistent"
    if not probe_addrs and not control_addrs:  # failed alike (both NXDOMAIN ...)
        same = {d.failure for d in own} & {d.failure for d in controls}
        return "consistent" if same else None
    return "inconsistent" if control_addrs or probe_addrs else None


def http_matches(probe: HttpResult | None, control: HttpResult | None) -> dict[str, Any]:
    """body_proportion, body_length_match, headers_match, status_code_match, title_match."""
    keys: dict[str, Any] = dict.fromkeys(
        ("body_proportion", "body_length_match", "headers_match", "status_code_match",
         "title_match"))
    if probe is None or control is None or probe.status is None or control.status is None:
        return keys
    if probe.body_length > 0 and control.body_length > 0:
        ratio = probe.body_length / control.body_length
        keys["body_proportion"] = min(ratio, 1 / ratio)
        keys["body_length_match"] = keys["body_proportion"] > 0.7
    if 200 <= control.status < 300:
        keys["status_code_match"] = probe.status == control.status
    uncommon = [{k.lower() for k, _ in h.headers} - COMMON_HEADERS for h in (probe, control)]
    keys["headers_match"] = bool(uncommon[0] & uncommon[1])
    words = [_title_words(h.title) for h in (probe, control)]
    if words[0] and words[1]:
        keys["title_match"] = bool(words[0] & words[1])
    return keys


def th_control(e: Evidence, domain: str, probe_addrs: tuple[str, ...] = ()) -> dict[str, Any]:
    """The control side in the shape of the test helper's answer (ts-017, probe-cli th.go);
    `probe_addrs` are the addresses the probe resolved (ip_info's flag 1)."""
    control: dict[str, Any] = {
        "tcp_connect": {host_port(t.address, t.port): {"status": t.failure is None,
                                                      "failure": ooni_failure(t)} for t in e.tcp},
        "tls_handshake": {
            host_port(t.address, t.port): {"server_name": t.sni, "status": t.failure is None,
                                          "failure": ooni_failure(t)}
            for t in e.tls if (t.sni or "").lower() == domain  # the helper's own SNI only
        },
    }
    http = _final(e.http)
    if http is not None:
        answered = http.status is not None
        control["http_request"] = {
            "body_length": http.body_length if answered else -1,  # the helper's -1: none
            "failure": ooni_failure(http), "title": http.title or "",
            "headers": first_wins(http.headers), "status_code": http.status or -1,
        }
    if e.dns:
        d = e.dns[0]
        failure = "dns_name_error" if d.failure == failures.DNS_NXDOMAIN else ooni_failure(d)
        control["dns"] = {"failure": failure, "addrs": list(d.addresses)}
    control["ip_info"] = _ip_info(e, domain, probe_addrs)
    return control


def _ip_info(e: Evidence, domain: str, probe_addrs: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Per address: asn (0: not looked up, as the helper writes an unknown one) and flags (1
    resolved by the probe, 2 by the helper, 4 bogon, 8 a valid certificate for the name)."""
    info: dict[str, dict[str, int]] = {}
    for address in probe_addrs:
        info.setdefault(address, {"asn": 0, "flags": 0})["flags"] |= FLAG_RESOLVED_BY_PROBE
    for address in (a for d in e.dns for a in d.addresses):
        info.setdefault(address, {"asn": 0, "flags": 0})["flags"] |= FLAG_RESOLVED_BY_TH
    for t in e.tls:
        if t.failure is None and t.cert_valid_for_name and (t.sni or "").lower() == domain:
            info.setdefault(t.address, {"asn": 0, "flags": 0})["flags"] |= FLAG_VALID_FOR_DOMAIN
    for address, entry in info.items():
        if is_bogon(address):
            entry["flags"] |= FLAG_BOGON
    return info


# --- shared helpers (ooni.py uses them too) ------------------------------------------------------


def ooni_failure(o: Observation) -> str | None:
    """OONI's spelling: an unknown failure carries its cause, "unknown_failure: <text>"."""
    if o.failure == failures.UNKNOWN and o.cause:
        return f"{o.failure}: {o.cause}"
    return o.failure




def first_wins(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """A header map that keeps the first of repeated names, as df-001 says."""
    out: dict[str, str] = {}
    for name, value in headers:
        out.setdefault(name, value)
    return out


def _system_addresses(e: Evidence) -> tuple[str, ...]:
    seen = dict.fromkeys(a for d in e.dns if d.resolver_kind == "system" for a in d.addresses)
    return tuple(seen)


def _final(results: tuple[HttpResult, ...]) -> HttpResult | None:
    return results[-1] if results else None


def _title_words(title: str | None) -> set[str]:
    """Words longer than 4 characters (the average English word), as Web Connectivity does."""
    return {w for w in re.split(r"\W+", (title or "").lower()) if len(w) > 4}
