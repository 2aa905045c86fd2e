"""Reading an OONI test helper's answer (the client side of probe.ooni_th): the JSON becomes an
Evidence of the control side (DNS with resolver_kind "helper", TCP, TLS, HTTP) that the same
verdict rules judge. Every value is checked for type and size; anything not of the protocol's
shape raises BadAnswer, which the client records as a control failure. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from probe import failures
from probe.addresses import is_ip
from probe.helper_api import HelperRequest
from probe.model import DnsResult, Evidence, HttpResult, TcpResult, TlsResult
from probe.ooni_th import (
    MAX_ENTRIES,
    MAX_TEXT,
    BadAnswer,
    failure_from_ooni,
    request_host,
    split_endpoint,
)


def _section(data: Mapping[str, Any], key: str, required: bool = False) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None and not required:  # Go writes an empty map as null
        return {}
    if not isinstance(value, dict) or len(value) > MAX_ENTRIES:
        raise BadAnswer(f"{key}: expected an object of at most {MAX_ENTRIES} entries")
    return value


def _get(entry: object, key: str, kind: type, where: str, default: Any = ...) -> Any:
    """entry[key], checked to be a `kind` (bool is no int); `default` when absent or null."""
    if not isinstance(entry, dict):
        raise BadAnswer(f"{where}: expected an object")
    value = entry.get(key)
    if value is None and default is not ...:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadAnswer(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _failure(entry: object, where: str) -> tuple[str | None, str | None]:
    return failure_from_ooni(_get(entry, "failure", str, where, None))


def _endpoint_key(key: str, where: str) -> tuple[str, int]:
    parsed = split_endpoint(key)
    if parsed is None:
        raise BadAnswer(f"{where}: {key[:60]!r} is not IP:PORT")
    return parsed


def _outcome(entry: object, where: str) -> tuple[bool, str | None, str | None]:
    """(status, failure, cause) of a tcp_connect or tls_handshake entry; a failed status
    without a failure string is an unknown failure."""
    ok = _get(entry, "status", bool, where)
    if ok:
        return True, None, None
    failure, cause = _failure(entry, where)
    return False, failure or failures.UNKNOWN, cause


def _tcp(section: Mapping[str, Any]) -> tuple[TcpResult, ...]:
    found = []
    for key, entry in section.items():
        address, port = _endpoint_key(key, "tcp_connect")
        _ok, failure, cause = _outcome(entry, "tcp_connect")
        found.append(TcpResult(address=address, port=port, failure=failure, cause=cause,
                               operation=failures.CONNECT if failure else None))
    return tuple(found)


def _tls(section: Mapping[str, Any]) -> tuple[TlsResult, ...]:
    found = []
    for key, entry in section.items():
        address, port = _endpoint_key(key, "tls_handshake")
        sni = _get(entry, "server_name", str, "tls_handshake")[:253]
        ok, failure, cause = _outcome(entry, "tls_handshake")
        # OONI's helper verifies the chain and the name: a success is a valid certificate
        found.append(TlsResult(address=address, port=port, sni=sni, failure=failure, cause=cause,
                               operation=failures.TLS_HANDSHAKE if failure else None,
                               cert_valid_for_name=True if ok else None))
    return tuple(found)


def _http(entry: object, url: str) -> HttpResult:
    where = "http_request"
    code = _get(entry, "status_code", int, where, -1)
    headers = _get(entry, "headers", dict, where, {})
    if len(headers) > MAX_ENTRIES or not all(isinstance(v, str) for v in headers.values()):
        raise BadAnswer(f"{where}.headers: expected at most {MAX_ENTRIES} string values")
    failure, cause = _failure(entry, where)
    status = code if 100 <= code <= 999 else None
    if status is None and failure is None:
        failure = failures.HTTP_INVALID_RESPONSE
    operation = None
    if failure:
        operation = failures.RESOLVE if failure.startswith("dns_") else failures.HTTP_ROUND_TRIP
    return HttpResult(
        url=url, status=status, failure=failure, cause=cause, operation=operation,
        headers=tuple((str(k)[:MAX_TEXT], v[:MAX_TEXT]) for k, v in headers.items()),
        title=_get(entry, "title", str, where, "")[:MAX_TEXT] or None,
        body_length=max(0, _get(entry, "body_length", int, where, 0)),
    )


def _dns(entry: object, host: str, th_url: str) -> DnsResult:
    addrs = _get(entry, "addrs", list, "dns", [])
    if len(addrs) > MAX_ENTRIES or not all(isinstance(a, str) and is_ip(a) for a in addrs):
        raise BadAnswer(f"dns.addrs: expected at most {MAX_ENTRIES} IP addresses")
    failure, cause = _failure(entry, "dns")
    addresses = tuple(dict.fromkeys(str(ipaddress.ip_address(a)) for a in addrs))
    rcode = "NXDOMAIN" if failure == failures.DNS_NXDOMAIN else None if failure else "NOERROR"
    if not addresses and failure is None:
        failure = failures.DNS_NO_ANSWER  # OONI reports "no answer" as no failure, no address
    return DnsResult(domain=host, resolver=th_url, resolver_kind="helper", addresses=addresses,
                     rcode=rcode, failure=failure, cause=cause,
                     operation=failures.RESOLVE if failure else None)


def decode_response(data: object, request: HelperRequest, th_url: str) -> Evidence:
    """The control Evidence of an OONI response; raises BadAnswer when it is not of the shape
    (the client records that as a control failure)."""
    if not isinstance(data, dict):
        raise BadAnswer("expected a JSON object")
    _section(data, "ip_info")  # not used (our rules need no ASN), but it must be of the shape
    host = request_host(request)
    dns = _dns(_section(data, "dns", required=True), host, th_url)
    return Evidence(
        dns=() if is_ip(host) else (dns,),
        tcp=_tcp(_section(data, "tcp_connect", required=True)),
        tls=_tls(_section(data, "tls_handshake")),
        http=(_http(_section(data, "http_request", required=True), request.url),),
    )
