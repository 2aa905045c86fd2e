"""The OONI Web Connectivity test-helper protocol (ooni/spec ts-017, probe-cli `model/th.go`):
its wire shapes and the pure conversions to and from our records, both ways.

Client side: a HelperRequest becomes the OONI request; the OONI response becomes an Evidence
(DNS with resolver_kind "helper", TCP, TLS, HTTP) that the same verdict rules judge.
Server side: an OONI request is parsed strictly into a HelperRequest (BadRequest -> 400); the
Evidence `probe.server.outside` gathered becomes the OONI response.

What the protocol cannot carry: a control SNI (ours only), per-endpoint ports (we measure every
address on the URL's port), the client's request headers (our helper fetches with its own).
Unknown request keys are ignored, as OONI's helper (Go's encoding/json) ignores them, so newer
OONI clients keep working. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from probe import failures, helper_api
from probe.addresses import host_port, is_bogon, is_ip
from probe.helper_api import MAX_ADDRESSES_IN, BadRequest, HelperRequest
from probe.model import Evidence, TlsResult

# ip_info flags
FLAG_PROBE, FLAG_HELPER, FLAG_BOGON, FLAG_VALID_FOR_DOMAIN = 1, 2, 4, 8
# the DNS failures of the helper's answer (oohelperd maps every other resolver failure to these)
DNS_NAME_ERROR = "dns_name_error"
DNS_SERVER_FAILURE = "dns_server_failure"
MAX_ENDPOINTS = 64  # "IP:PORT" a request may list: OONI sends every address for 80 and 443
MAX_HEADERS = 64  # request header names
MAX_ENTRIES = 256  # endpoints, headers or addresses in one section of an answer
MAX_TEXT = 1024  # a title, header value or failure string kept from an answer
_IPV4_TEXT = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


class BadAnswer(ValueError):
    """An answer that is not of the protocol's shape; the message says where."""


# --- endpoints and failure strings ------------------------------------------------------------


def split_endpoint(text: object) -> tuple[str, int] | None:
    """(address, port) of an "IP:PORT" string, or None when it is not one."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None  # IPv6 must be bracketed
    if not (sep and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    if "%" in host or not is_ip(host):  # no zone ids: an address, not an interface
        return None
    return str(ipaddress.ip_address(host)), int(port)


def failure_to_ooni(failure: str | None, cause: str | None = None) -> str | None:
    """Our failure string as OONI writes it (the same set, `unknown_failure: cause` aside)."""
    if failure == failures.UNKNOWN and cause:
        return f"{failures.UNKNOWN}: {cause}"
    return failure


def failure_from_ooni(text: str | None) -> tuple[str | None, str | None]:
    """(failure, cause) from an OONI failure string; anything outside our set is unknown."""
    if text is None:
        return None, None
    if text == DNS_NAME_ERROR:
        return failures.DNS_NXDOMAIN, None
    if text == DNS_SERVER_FAILURE:  # any resolver trouble of the helper's, never a proof
        return failures.DNS_MISBEHAVING, None
    if text in failures.FAILURES and text != failures.UNKNOWN:
        return text, None
    cause = text.removeprefix(f"{failures.UNKNOWN}:").strip() or None
    return failures.UNKNOWN, cause and _scrub(cause)[:120]


def _scrub(text: str) -> str:
    """The text with every IP address (bare, bracketed, or with a port) replaced."""
    words = []
    for word in _IPV4_TEXT.sub("[scrubbed]", text).split():
        bare = word.rstrip(":,;")
        if is_ip(bare.strip("[]")) or split_endpoint(bare) is not None:
            word = "[scrubbed]" + word[len(bare):]
        words.append(word)
    return " ".join(words)


def dns_failure_to_ooni(failure: str | None) -> str | None:
    """As oohelperd reports its resolver: NXDOMAIN by name, no answer as none, else a failure."""
    if failure is None or failure == failures.DNS_NO_ANSWER:
        return None
    return DNS_NAME_ERROR if failure == failures.DNS_NXDOMAIN else DNS_SERVER_FAILURE


# --- the request ------------------------------------------------------------------------------


def encode_request(request: HelperRequest, user_agent: str) -> dict[str, Any]:
    """The OONI request for a HelperRequest (the control SNI has no place in it)."""
    return {
        "http_request": request.url,
        "http_request_headers": {
            "Accept": ["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"],
            "Accept-Language": ["en-US,en;q=0.9"],
            "User-Agent": [user_agent],
        },
        "tcp_connect": [host_port(a, request.port) for a in request.addresses],
        "x_quic_enabled": False,
    }


def _headers(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or len(value) > MAX_HEADERS:
        raise BadRequest(f"http_request_headers: expected an object of at most {MAX_HEADERS} names")
    for name, values in value.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise BadRequest(f"http_request_headers: {str(name)[:60]!r} is not a list of strings")


def _endpoints(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ENDPOINTS:
        raise BadRequest(f"tcp_connect: expected a list of at most {MAX_ENDPOINTS} IP:PORT")
    found: dict[str, None] = {}
    for item in value:
        parsed = split_endpoint(item)
        if parsed is None:
            raise BadRequest(f"tcp_connect: {str(item)[:60]!r} is not IP:PORT")
        found.setdefault(parsed[0], None)
    return tuple(found)[:MAX_ADDRESSES_IN]


def parse_request(data: object) -> HelperRequest:
    """A HelperRequest from a decoded OONI request; raises BadRequest naming the field."""
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    url = data.get("http_request")
    if not isinstance(url, str):
        raise BadRequest("http_request: expected a URL")
    try:
        parts = urlsplit(url)
        port = parts.port or (80 if parts.scheme == "http" else 443)
    except ValueError as exc:
        raise BadRequest(f"http_request: {exc}") from None
    if not parts.hostname:
        raise BadRequest("http_request: no host")
    _headers(data.get("http_request_headers"))
    if not isinstance(data.get("x_quic_enabled", False), bool):
        raise BadRequest("x_quic_enabled: expected a boolean")
    addresses = _endpoints(data.get("tcp_connect"))
    return helper_api.parse_request({"domain": parts.hostname, "url": url,
                                     "addresses": list(addresses), "port": port})


# --- the response, server side ----------------------------------------------------------------


def request_host(request: HelperRequest) -> str:
    return (urlsplit(request.url).hostname or request.domain).lower()


def _tls_entry(t: TlsResult) -> dict[str, Any]:
    ok = t.failure is None and t.cert_valid_for_name is not False
    failure = t.failure if t.failure or ok else failures.SSL_INVALID_CERTIFICATE
    return {"server_name": t.sni, "status": ok, "failure": failure_to_ooni(failure, t.cause)}


def _http_entry(evidence: Evidence) -> dict[str, Any]:
    h = evidence.http[0] if evidence.http else None
    if h is None:  # the helper would not fetch (its answer pointed where it may not go)
        return {"body_length": -1, "discovered_h3_endpoint": "", "failure": failures.UNKNOWN,
                "title": "", "headers": {}, "status_code": -1}
    return {
        "body_length": h.body_length if h.status is not None else -1,
        "discovered_h3_endpoint": "",
        "failure": failure_to_ooni(h.failure, h.cause) if h.status is None else None,
        "title": h.title or "",
        "headers": _first_values(h.headers),
        "status_code": h.status if h.status is not None else -1,
    }


def _first_values(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """OONI's headers map one value per name: the first one seen."""
    found: dict[str, str] = {}
    for name, value in headers:
        found.setdefault(name, value)
    return found


def _dns_entry(evidence: Evidence, host: str) -> dict[str, Any]:
    if not evidence.dns:
        return {"failure": None, "addrs": [host] if is_ip(host) else []}
    d = evidence.dns[0]
    return {"failure": dns_failure_to_ooni(d.failure), "addrs": list(d.addresses)}


def _ip_info(evidence: Evidence, request: HelperRequest, dns: dict, host: str) -> dict:
    valid = {t.address for t in evidence.tls
             if (t.sni or "").lower() == host and t.failure is None and t.cert_valid_for_name}
    info: dict[str, dict[str, int]] = {}
    for address in [*dns["addrs"], *request.addresses, *(t.address for t in evidence.tcp)]:
        flags = ((FLAG_PROBE if address in request.addresses else 0)
                 | (FLAG_HELPER if address in dns["addrs"] else 0)
                 | (FLAG_BOGON if is_bogon(address) else 0)
                 | (FLAG_VALID_FOR_DOMAIN if address in valid else 0))
        info[address] = {"asn": 0, "flags": flags}  # we do not geolocate: ASN unknown
    return info


def encode_response(evidence: Evidence, request: HelperRequest) -> dict[str, Any]:
    """The OONI response for what the helper saw; only target-SNI handshakes (OONI has one
    per endpoint), and only those that got past the TCP connect (as OONI's helper does)."""
    host = request_host(request)
    dns = _dns_entry(evidence, host)
    return {
        "tcp_connect": {host_port(t.address, t.port): {
            "status": t.failure is None, "failure": failure_to_ooni(t.failure, t.cause)}
            for t in evidence.tcp},
        "tls_handshake": {host_port(t.address, t.port): _tls_entry(t) for t in evidence.tls
                          if (t.sni or "").lower() == host and t.operation != failures.CONNECT},
        "quic_handshake": {},
        "http_request": _http_entry(evidence),
        "dns": dns,
        "ip_info": _ip_info(evidence, request, dns, host),
    }
