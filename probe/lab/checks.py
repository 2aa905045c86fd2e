"""Small client-side checks that prove each censor rule acts, independent of the probe's own
measurement code. Run inside the client namespace; prints one JSON object:

    ip netns exec plab-client python -m probe.lab.checks resolve twitter.com [--server IP]
    ip netns exec plab-client python -m probe.lab.checks https navalny.com [--ca PEM]
    ip netns exec plab-client python -m probe.lab.checks http http://navalny.com/
    ip netns exec plab-client python -m probe.lab.checks rate https://abs.twimg.com/media/big.bin
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import dns.message
import dns.rcode

from probe.measure.classify import classify


def _system_resolver() -> str:
    with open("/etc/resolv.conf") as conf:
        return next(line.split()[1] for line in conf if line.startswith("nameserver"))


def resolve(name: str, server: str | None, linger: float = 1.0) -> dict[str, Any]:
    """Every answer heard for one A query within `linger` s of the first (injection: two)."""
    query = dns.message.make_query(name, "A")
    answers: list[dict[str, Any]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(query.to_wire(), (server or _system_resolver(), 53))
        start, end = time.monotonic(), time.monotonic() + 3.0
        while time.monotonic() < end:
            sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                wire, _ = sock.recvfrom(4096)
            except TimeoutError:
                break
            reply = dns.message.from_wire(wire)
            addresses = [r.address for rrset in reply.answer for r in rrset if r.rdtype == 1]
            answers.append({"t": round(time.monotonic() - start, 3), "addresses": addresses,
                            "rcode": dns.rcode.to_text(reply.rcode())})
            end = min(end, start + answers[0]["t"] + linger)
    first = answers[0] if answers else {"rcode": None, "addresses": []}
    return {"name": name, **first, "answers": answers}


def resolve_secure(name: str, server: str, transport: str, ca: str | None) -> dict[str, Any]:
    """One A query over DoT (tls) or DoH (https) to `server`, verified against `ca`."""
    import dns.query

    query = dns.message.make_query(name, "A")
    if transport == "tls":
        context = ssl.create_default_context(cafile=ca)
        reply = dns.query.tls(query, server, timeout=5, ssl_context=context, server_hostname=server)
    else:
        reply = _doh(query, f"https://{server}/dns-query", ca)
    addresses = [r.address for rrset in reply.answer for r in rrset if r.rdtype == 1]
    return {"name": name, "rcode": dns.rcode.to_text(reply.rcode()), "addresses": addresses}


def _doh(query: dns.message.Message, url: str, ca: str | None) -> dns.message.Message:
    """One RFC 8484 POST (the stdlib's HTTP client: the probe's is async, this check is not)."""
    request = urllib.request.Request(url, data=query.to_wire(), headers={
        "content-type": "application/dns-message", "accept": "application/dns-message"})
    context = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return dns.message.from_wire(response.read(65536))


def _wrap(sock: socket.socket, sni: str, ca: str | None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca)
    try:
        return context.wrap_socket(sock, server_hostname=sni)
    except BaseException:
        sock.close()
        raise


def get(url: str, ca: str | None, timeout: float, address: str | None = None,
        limit: int = 1 << 16, sni: str | None = None) -> dict[str, Any]:
    """One GET; `failure`/`operation` say where it stopped, as the probe records it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    operation, result = "resolve", {"url": url}
    try:
        target = address or socket.gethostbyname(host)
        operation, result["address"] = "connect", target
        sock = socket.create_connection((target, parts.port or (443 if tls else 80)), timeout)
        if tls:
            operation = "tls_handshake"
            sock = _wrap(sock, sni or host, ca)
            result.update(sni=sni or host, tls_version=sock.version())
        operation = "http_round_trip"
        with sock:
            sock.sendall(f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\n"
                         "Connection: close\r\n\r\n".encode())
            body = _read(sock, limit)
        head, _, content = body.partition(b"\r\n\r\n")
        result.update(status=int(head.split()[1]), body=content[:2048].decode(errors="replace"))
    except Exception as exc:  # noqa: BLE001 - a check reports, never raises
        result.update(failure=classify(exc), operation=operation)
    return result


def _read(sock: socket.socket, limit: int) -> bytes:
    data = b""
    while len(data) < limit and (chunk := sock.recv(65536)):
        data += chunk
    return data


def rate(url: str, ca: str | None, seconds: float, sni: str | None = None) -> dict[str, Any]:
    """Downloads for at most `seconds`; reports bytes and bits per second after the first 64 KiB
    (so that a policer's initial burst does not count)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    address = socket.gethostbyname(host)
    sock = _wrap(socket.create_connection((address, parts.port or 443), 10), sni or host, ca)
    info = {"address": address, "sni": sni or host}
    with sock:
        sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {host}\r\n"
                     "Connection: close\r\n\r\n".encode())
        total, mark, start = 0, None, time.monotonic()
        while time.monotonic() - start < seconds:
            sock.settimeout(max(0.05, seconds - (time.monotonic() - start)))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            total += len(chunk)
            if mark is None and total >= 65536:
                mark = (time.monotonic(), total)
        end = time.monotonic()
    bps = (total - mark[1]) * 8 / (end - mark[0]) if mark and end > mark[0] else None
    return {**info, "url": url, "bytes": total, "seconds": round(end - start, 3), "bps": bps}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m probe.lab.checks")
    parser.add_argument("check", choices=["resolve", "https", "http", "rate"])
    parser.add_argument("target")
    parser.add_argument("--server")
    parser.add_argument("--ca")
    parser.add_argument("--sni")
    parser.add_argument("--transport", choices=["udp", "tls", "https"], default="udp")
    parser.add_argument("--timeout", type=float, default=4.0)
    args = parser.parse_args()
    if args.check == "resolve" and args.transport != "udp":
        out = resolve_secure(args.target, args.server, args.transport, args.ca)
    elif args.check == "resolve":
        out = resolve(args.target, args.server)
    elif args.check == "rate":
        out = rate(args.target, args.ca, args.timeout, args.sni)
    else:
        url = args.target if "://" in args.target else f"{args.check}://{args.target}/"
        out = get(url, args.ca, args.timeout, sni=args.sni)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
