"""A TargetMeasurement as an OONI-format measurement (ooni/spec df-000-base), and back.

test_keys hold the spec's lists (queries df-002, tcp_connect df-005, tls_handshakes df-006,
requests df-001, network_events df-008), Web Connectivity's analysis keys and `control` in the
test helper's shape (web_connectivity.py), our own verdict keys under their own names, and the
full typed record under `evidence`, from which `from_ooni` rebuilds the TargetMeasurement
exactly (history, re-judging with newer rules). results/README.md maps every key.
"""

from __future__ import annotations

import calendar
import ipaddress
import re
import secrets
import sys
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import dns.rcode

from probe import __version__
from probe.addresses import host_port
from probe.model import (
    DnsResult,
    HttpResult,
    TargetMeasurement,
    TcpResult,
    ThroughputResult,
    TlsResult,
    Vantage,
    from_dict,
    to_dict,
)
from probe.results.web_connectivity import first_wins, ooni_failure, wc_keys

DATA_FORMAT_VERSION = "0.2.0"
TEST_NAME = "probe_web"
TEST_VERSION = "0.2.0"
# our resolver kinds as df-002 engines: "system" is our own UDP query to resolv.conf's first
# nameserver, not getaddrinfo (which the spec's "system" means)
_ENGINES = {"system": "udp", "udp": "udp", "tls": "dot", "https": "doh"}
EXTENSIONS = {"dnst": 0, "httpt": 0, "netevents": 0, "tcpconnect": 0, "tlshandshake": 0}
_REPORT_STAMP = re.compile(r"^(\d{8}T\d{6}Z)_")


def ooni_time(ts: float) -> str:
    """UNIX seconds as OONI writes times: "YYYY-MM-DD hh:mm:ss", UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def new_report_id(vantage: Vantage, now: float | None = None) -> str:
    """An OONI-like report id: 20210310T120000Z_probe_web_RU_12389_n1_<random>; it begins with
    the run's start, which every measurement of the report gives as its test_start_time."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    asn = vantage.asn.removeprefix("AS") or "0"
    return f"{stamp}_{TEST_NAME}_{vantage.cc}_{asn}_n1_{secrets.token_hex(8)}"


def report_start(report_id: str) -> float | None:
    """The run's start a report id made by new_report_id carries; None for other ids."""
    found = _REPORT_STAMP.match(report_id)
    if not found:
        return None
    return float(calendar.timegm(time.strptime(found.group(1), "%Y%m%dT%H%M%SZ")))


def to_ooni(m: TargetMeasurement, report_id: str, vantage: Vantage,
            test_start_time: float | None = None) -> dict[str, Any]:
    """The measurement as one OONI-format record (a judged measurement: m.verdict is set).

    `test_start_time` is the run's start, the same for every measurement of a report (by
    default the one the report id carries, else this measurement's start)."""
    if m.verdict is None:
        raise ValueError("judge the measurement before storing it (m.verdict is None)")
    if test_start_time is None:
        test_start_time = report_start(report_id) or m.start_time
    record = {
        "annotations": {
            "vantage": vantage.name,
            "category": m.target.category,
            "target_source": m.target.source,
            "control_source": m.control_source,
            "engine_name": "probe",
            "engine_version": __version__,
            "platform": sys.platform,
        },
        "data_format_version": DATA_FORMAT_VERSION,
        "extensions": dict(EXTENSIONS),
        "input": m.target.url or f"https://{m.target.domain}/",
        "measurement_start_time": ooni_time(m.start_time),
        "probe_asn": vantage.asn,
        "probe_cc": vantage.cc,
        "probe_ip": "127.0.0.1",  # OONI's convention: the volunteer's address is never stored
        "probe_network_name": vantage.network_name,
        "report_id": report_id,
        # resolver_asn is left out: we do not look the resolver's AS up (the spec allows that)
        "resolver_ip": _resolver_ip(m.probe.dns),
        "software_name": "probe",
        "software_version": __version__,
        "test_keys": _test_keys(m),
        "test_name": TEST_NAME,
        "test_runtime": round(m.runtime, 6),
        "test_start_time": ooni_time(test_start_time),
        "test_version": TEST_VERSION,
    }
    return record


def from_ooni(record: dict[str, Any]) -> TargetMeasurement:
    """The TargetMeasurement a stored record was made from (this format or the previous one)."""
    keys = record["test_keys"]
    evidence = keys["evidence"]
    # the probe's certificate chains are stored once, as the spec's peer_certificates
    handshakes = keys.get("tls_handshakes") or []
    tls = [t if "chain_der" in t or i >= len(handshakes) else
           {**t, "chain_der": [c["data"] for c in handshakes[i].get("peer_certificates") or []]}
           for i, t in enumerate(evidence["probe"].get("tls", []))]
    evidence = {**evidence, "probe": {**evidence["probe"], "tls": tls}}
    return from_dict(evidence, TargetMeasurement)


def probe_blocking(keys: dict[str, Any]) -> str | None:
    """Our own blocking method (dns | tcp | tls | http) of a record's test_keys, any format."""
    return keys["probe_blocking"] if "probe_blocking" in keys else keys.get("blocking")


# --- test_keys ----------------------------------------------------------------------------------


def _test_keys(m: TargetMeasurement) -> dict[str, Any]:
    v = m.verdict
    assert v is not None
    domain = (urlsplit(m.target.url).hostname or m.target.domain).lower()
    e = m.probe
    return {
        "agent": "redirect",
        "queries": [_query(d) for d in (*e.dns, *e.dns_aaaa)],
        "tcp_connect": [_tcp(t) for t in e.tcp],
        "tls_handshakes": [_tls(t) for t in e.tls],
        "requests": [_request(h) for h in reversed(e.http)],  # WC: the final response first
        "network_events": [ev for i, t in enumerate(e.throughput) for ev in _network_events(t, i)],
        **wc_keys(m, domain),
        "verdict": v.verdict,
        "probe_blocking": v.blocking,
        "failure": v.failure,
        "rule": v.rule,
        "rules_version": v.rules_version,
        "reason": v.reason,
        "decided_by": v.decided_by,
        "notes": list(v.notes),
        "throttling": to_dict(v.throttling) if v.throttling else None,
        "control_source": m.control_source,
        "throughput": [_throughput(t) for t in e.throughput],
        # where the censor sits and whether its packet was forged (probe/measure/locate.py);
        # the TTL-limited attempts themselves are in evidence.middlebox.probes
        "middlebox": _middlebox(m),
        "injected": m.injection.injected if m.injection else None,
        "injection": to_dict(m.injection) if m.injection else None,
        "evidence": _evidence(m),
    }


def _middlebox(m: TargetMeasurement) -> dict[str, Any] | None:
    if m.middlebox is None:
        return None
    data = to_dict(m.middlebox)
    del data["probes"], data["injected"]  # the attempts stay in evidence; injection is beside
    return data


def _evidence(m: TargetMeasurement) -> dict[str, Any]:
    """The typed record, without the probe's DER chains (tls_handshakes hold them once)."""
    data = to_dict(m)
    for tls in data["probe"]["tls"]:
        del tls["chain_der"]
    return data


def _resolver_ip(results: Iterable[DnsResult]) -> str | None:
    for d in results:
        if d.resolver_kind == "system":
            host = d.resolver.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
            try:
                return str(ipaddress.ip_address(host))
            except ValueError:
                return None
    return None


def _times(o: Any) -> dict[str, float]:
    return {"t0": round(o.t0, 6), "t": round(o.t0 + o.elapsed, 6)}


def _answers(d: DnsResult) -> list[dict[str, Any]]:
    if d.answers:
        records = [(a.answer_type, a.value, a.ttl) for a in d.answers]
    else:  # records of the previous format: addresses only, TTL unknown
        records = [("AAAA" if ":" in a else "A", a, None) for a in d.addresses]
    key = {"A": "ipv4", "AAAA": "ipv6", "CNAME": "hostname"}
    return [{"answer_type": kind, key[kind]: value, "ttl": ttl} for kind, value, ttl in records]


def _resolver_address(d: DnsResult) -> str:
    """df-002: "IP:PORT" for UDP and DoT, the URL for DoH."""
    scheme, _, rest = d.resolver.partition("://")
    return rest if rest and scheme in ("udp", "tls") else d.resolver


def _query(d: DnsResult) -> dict[str, Any]:
    return {
        "answers": _answers(d),
        "engine": _ENGINES.get(d.resolver_kind, "unknown"),
        "failure": ooni_failure(d),
        "hostname": d.domain,
        "query_type": d.qtype,
        "resolver_address": _resolver_address(d),
        "rcode": int(dns.rcode.from_text(d.rcode)) if d.rcode else None,
        "tags": ["system_resolver" if d.resolver_kind == "system" else "control_resolver"],
        "responses": len(d.responses),  # ours: more than one is an injector's mark
        **_times(d),
    }


def _tcp(t: TcpResult) -> dict[str, Any]:
    status = {"failure": ooni_failure(t), "success": t.failure is None}
    return {"ip": t.address, "port": t.port, "status": status, **_times(t)}


def _tls(t: TlsResult) -> dict[str, Any]:
    return {
        "network": "tcp",
        "address": host_port(t.address, t.port),
        "cipher_suite": t.cipher,
        "failure": ooni_failure(t),
        "negotiated_protocol": t.alpn,
        "no_tls_verify": t.sni is None,  # without a name there is nothing to verify against
        "peer_certificates": [{"format": "base64", "data": der} for der in t.chain_der],
        "server_name": t.sni,
        "tls_version": t.tls_version,
        "cert_valid_for_name": t.cert_valid_for_name,
        **_times(t),
    }


def _request(h: HttpResult) -> dict[str, Any]:
    headers_list = [[str(name), str(value)] for name, value in h.headers]
    response = {
        "code": h.status,
        "headers": first_wins(h.headers),
        "headers_list": headers_list,
        "body": h.body_head,
        # we keep the first 4 KiB of the body only (HttpResult.body_head)
        "body_is_truncated": h.body_truncated or len(h.body_head.encode()) < h.body_length,
        "body_length": h.body_length,
        "title": h.title,
        "blockpage": h.blockpage,
    }
    request = {"url": h.url, "method": "GET", "headers": {}, "headers_list": [], "body": "",
               "body_is_truncated": False, "x_transport": "tcp"}
    transaction = {"network": "tcp", "failure": ooni_failure(h), "request": request,
                   "response": response, **_times(h)}
    if h.address:
        port = urlsplit(h.url).port or (80 if h.url.startswith("http:") else 443)
        transaction["address"] = host_port(h.address, port)
    return transaction


def _network_events(t: ThroughputResult, flow: int) -> list[dict[str, Any]]:
    """df-008 bytes_received_cumulative events, one per sample of throughput flow number `flow`
    (its index in `throughput`). `t` is the flow's start plus the sample's time since the first
    byte (the connect and handshake before it are not counted: the flow does not record them)."""
    base: dict[str, Any] = {"operation": "bytes_received_cumulative", "proto": "tcp",
                            "tags": ["throughput", f"flow={flow}", f"server_name={t.sni or ''}"]}
    if t.address:
        base["address"] = host_port(t.address, urlsplit(t.url).port or 443)
    events = []
    for i, (seconds, total) in enumerate(t.samples):
        at = round(t.t0 + seconds, 6)
        last = i == len(t.samples) - 1
        events.append({**base, "failure": ooni_failure(t) if last else None,
                       "num_bytes": int(total), "t0": at, "t": at})
    return events


def _throughput(t: ThroughputResult) -> dict[str, Any]:
    return {
        "url": t.url,
        "address": t.address,
        "server_name": t.sni,
        "failure": ooni_failure(t),
        "bytes_received": t.bytes_received,
        "goodput_bps": t.goodput_bps,
        "steady_bps": t.steady_bps,
        "samples": [list(s) for s in t.samples],
        **_times(t),
    }
