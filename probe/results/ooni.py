"""A TargetMeasurement as an OONI-format measurement (ooni/spec df-000-base), and back.

test_keys hold OONI-shaped lists (queries df-002, tcp_connect df-005, tls_handshakes df-006,
requests df-001) so that OONI's tools can read them, our verdict keys, the helper's evidence in
the same shapes under `control`, and the full typed record under `evidence`, from which
`from_ooni` rebuilds the TargetMeasurement exactly (history, re-judging with newer rules).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any

from probe import __version__
from probe.failures import UNKNOWN
from probe.model import (
    DnsResult,
    Evidence,
    HttpResult,
    Observation,
    TargetMeasurement,
    TcpResult,
    ThroughputResult,
    TlsResult,
    Vantage,
    from_dict,
    to_dict,
)

DATA_FORMAT_VERSION = "0.2.0"
TEST_NAME = "probe_web"
TEST_VERSION = "0.1.0"
SCRUBBED = "[scrubbed]"
_ENGINES = {"system": "system", "udp": "udp", "tls": "dot", "https": "doh", "helper": "helper"}


def ooni_time(ts: float) -> str:
    """UNIX seconds as OONI writes times: "YYYY-MM-DD hh:mm:ss", UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def new_report_id(vantage: Vantage, now: float | None = None) -> str:
    """An OONI-like report id: 20210310T120000Z_probe_web_RU_12389_n1_<random>."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    asn = vantage.asn.removeprefix("AS") or "0"
    return f"{stamp}_{TEST_NAME}_{vantage.cc}_{asn}_n1_{secrets.token_hex(8)}"


def to_ooni(m: TargetMeasurement, report_id: str, vantage: Vantage) -> dict[str, Any]:
    """The measurement as one OONI-format record (a judged measurement: m.verdict is set)."""
    if m.verdict is None:
        raise ValueError("judge the measurement before storing it (m.verdict is None)")
    return {
        "annotations": {
            "vantage": vantage.name,
            "category": m.target.category,
            "target_source": m.target.source,
            "control_source": m.control_source,
        },
        "data_format_version": DATA_FORMAT_VERSION,
        "input": m.target.url or f"https://{m.target.domain}/",
        "measurement_start_time": ooni_time(m.start_time),
        "probe_asn": vantage.asn,
        "probe_cc": vantage.cc,
        "probe_ip": "127.0.0.1",  # OONI's convention: the volunteer's address is never stored
        "probe_network_name": vantage.network_name,
        "report_id": report_id,
        "resolver_asn": "AS0",  # not looked up
        "resolver_ip": _resolver_ip(m.probe.dns),
        "software_name": "probe",
        "software_version": __version__,
        "test_keys": _test_keys(m),
        "test_name": TEST_NAME,
        "test_runtime": round(m.runtime, 6),
        "test_start_time": ooni_time(m.start_time),
        "test_version": TEST_VERSION,
    }


def from_ooni(record: dict[str, Any]) -> TargetMeasurement:
    """The TargetMeasurement a stored record was made from."""
    return from_dict(record["test_keys"]["evidence"], TargetMeasurement)


# Spellings of an address, each found as a whole token and compared by value, so "1.2.3.4"
# also catches 1-2-3-4 (reverse-DNS names), 001.002.003.004, ::ffff:1.2.3.4, ::ffff:102:304,
# 16909060 and 0x01020304, and never "11.2.3.45" or 2001:db8::10.
_V6_TOKEN = re.compile(r"(?<![0-9A-Za-z:.])[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_V4_TOKEN = re.compile(
    r"(?<![0-9])(?<![0-9][.-])(\d{1,3})([.-])(\d{1,3})\2(\d{1,3})\2(\d{1,3})(?![0-9])(?![.-][0-9])"
)
_HEX_TOKEN = re.compile(r"(?<![0-9A-Za-z])0[xX]([0-9A-Fa-f]{1,8})(?![0-9A-Za-z])")
_INT_TOKEN = re.compile(r"(?<![0-9])(?<![0-9]\.)\d{8,10}(?![0-9])(?!\.[0-9])")
_JSON_BEFORE = re.compile(r"[:\[,] ?$")  # around a bare JSON number (json.dumps' spacing)
_JSON_AFTER = re.compile(r"[,\]}]")
_MIN_V4 = 1 << 24  # below 1.0.0.0 nothing is anybody's address; small integers stay


def scrub(text: str, addresses: Iterable[str]) -> str:
    """`text` with every given address replaced by "[scrubbed]", in any common spelling
    (whole tokens only, other addresses left alone).

    Loopback and unspecified addresses identify nobody and are left alone. A decimal integer
    that stands as a bare JSON number is kept (scrubbing it would break the record)."""
    v4, v6 = _targets(addresses)
    if not v4 and not v6:
        return text
    text = _V6_TOKEN.sub(lambda m: _scrub_v6(m, v4, v6), text)
    if not v4:
        return text
    text = _V4_TOKEN.sub(lambda m: SCRUBBED if _octets(m) in v4 else m.group(0), text)
    text = _HEX_TOKEN.sub(lambda m: SCRUBBED if int(m.group(1), 16) in v4 else m.group(0), text)
    return _INT_TOKEN.sub(lambda m: _scrub_int(m, v4), text)


def _targets(addresses: Iterable[str]) -> tuple[set[int], set[int]]:
    """The addresses to scrub as integers: IPv4 (IPv4-mapped ones included) and IPv6."""
    v4: set[int] = set()
    v6: set[int] = set()
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if ip.is_loopback or ip.is_unspecified:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        (v4 if ip.version == 4 else v6).add(int(ip))
    return v4, v6


def _scrub_v6(m: re.Match[str], v4: set[int], v6: set[int]) -> str:
    token = m.group(0).rstrip(".")
    try:
        ip = ipaddress.IPv6Address(token)
    except ValueError:
        return m.group(0)
    value = int(ip)
    mapped = int(ip.ipv4_mapped) if ip.ipv4_mapped is not None else value  # or ::a.b.c.d
    if value in v6 or (mapped >= _MIN_V4 and mapped in v4):
        return SCRUBBED + m.group(0)[len(token):]
    return m.group(0)


def _octets(m: re.Match[str]) -> int | None:
    octets = [int(m.group(i)) for i in (1, 3, 4, 5)]
    if any(o > 255 for o in octets):
        return None
    return int.from_bytes(bytes(octets), "big")


def _scrub_int(m: re.Match[str], v4: set[int]) -> str:
    value = int(m.group(0))
    if value < _MIN_V4 or value not in v4:
        return m.group(0)
    if _JSON_BEFORE.search(m.string, max(0, m.start() - 2), m.start()) and \
            _JSON_AFTER.match(m.string, m.end()):
        return m.group(0)
    return SCRUBBED


# --- test_keys ----------------------------------------------------------------------------------


def _test_keys(m: TargetMeasurement) -> dict[str, Any]:
    v = m.verdict
    assert v is not None
    return {
        **_ooni_lists(m.probe),
        "network_events": [],
        "verdict": v.verdict,
        "blocking": v.blocking,
        "failure": v.failure,
        "rule": v.rule,
        "rules_version": v.rules_version,
        "reason": v.reason,
        "decided_by": v.decided_by,
        "notes": list(v.notes),
        "throttling": to_dict(v.throttling) if v.throttling else None,
        "control_source": m.control_source,
        "control": _ooni_lists(m.control),
        "throughput": [_throughput(t) for t in m.probe.throughput],
        "evidence": to_dict(m),
    }


def _ooni_lists(e: Evidence) -> dict[str, list[dict[str, Any]]]:
    return {
        "queries": [_query(d) for d in e.dns],
        "tcp_connect": [_tcp(t) for t in e.tcp],
        "tls_handshakes": [_tls(t) for t in e.tls],
        "requests": [_request(h) for h in e.http],
    }


def _failure(o: Observation) -> str | None:
    """OONI's spelling: an unknown failure carries its cause, "unknown_failure: <text>"."""
    if o.failure == UNKNOWN and o.cause:
        return f"{o.failure}: {o.cause}"
    return o.failure


def _times(o: Any) -> dict[str, float]:
    return {"t0": round(o.t0, 6), "t": round(o.t0 + o.elapsed, 6)}


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _resolver_ip(results: Iterable[DnsResult]) -> str | None:
    for d in results:
        if d.resolver_kind == "system":
            host = d.resolver.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
            try:
                return str(ipaddress.ip_address(host))
            except ValueError:
                return None
    return None


def _query(d: DnsResult) -> dict[str, Any]:
    answers = [
        {"answer_type": "AAAA" if ":" in a else "A", ("ipv6" if ":" in a else "ipv4"): a, "ttl": None}
        for a in d.addresses
    ]
    return {
        "answers": answers,
        "engine": _ENGINES.get(d.resolver_kind, d.resolver_kind),
        "failure": _failure(d),
        "hostname": d.domain,
        "query_type": d.qtype,
        "resolver_address": d.resolver,
        "rcode": d.rcode,
        "responses": len(d.responses),
        **_times(d),
    }


def _tcp(t: TcpResult) -> dict[str, Any]:
    status = {"blocked": None, "failure": _failure(t), "success": t.failure is None}
    return {"ip": t.address, "port": t.port, "status": status, **_times(t)}


def _tls(t: TlsResult) -> dict[str, Any]:
    return {
        "address": _hostport(t.address, t.port),
        "cipher_suite": t.cipher,
        "failure": _failure(t),
        "negotiated_protocol": t.alpn,
        "no_tls_verify": False,
        "peer_certificates": [],  # we keep summaries (in `evidence`), not DER
        "server_name": t.sni,
        "tls_version": t.tls_version,
        "cert_valid_for_name": t.cert_valid_for_name,
        **_times(t),
    }


def _request(h: HttpResult) -> dict[str, Any]:
    response = {
        "code": h.status,
        "headers": dict(h.headers),
        "body": h.body_head,
        "body_is_truncated": h.body_truncated,
        "body_length": h.body_length,
        "title": h.title,
        "blockpage": h.blockpage,
    }
    request = {"url": h.url, "method": "GET", "headers": {}, "body": "", "address": h.address}
    return {"failure": _failure(h), "request": request, "response": response, **_times(h)}


def _throughput(t: ThroughputResult) -> dict[str, Any]:
    return {
        "url": t.url,
        "address": t.address,
        "server_name": t.sni,
        "failure": _failure(t),
        "bytes_received": t.bytes_received,
        "goodput_bps": t.goodput_bps,
        "steady_bps": t.steady_bps,
        "samples": [list(s) for s in t.samples],
        **_times(t),
    }
