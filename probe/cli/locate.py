"""`probe locate DOMAIN`: which hop the censor of DOMAIN sits at, and whether its packet was
forged (probe/measure/locate.py). Needs raw sockets (root or CAP_NET_RAW)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from urllib.parse import urlsplit

import click

from probe import model
from probe.measure import locate as locating
from probe.model import Middlebox, Settings

DEFAULT_CONTROL = "www.example.com"


@click.command()
@click.argument("domain")
@click.option("--url", default=None, help="The URL to test (default https://DOMAIN/); an "
              "http:// URL sends the HTTP request as trigger instead of the ClientHello.")
@click.option("--address", default=None, help="The address to probe (default: the system "
              "resolver's first IPv4 answer for the URL's host).")
@click.option("--control", "control_name", default=DEFAULT_CONTROL, show_default=True,
              help="The control SNI / Host sent over the same path.")
@click.option("--max-ttl", type=click.IntRange(1, 64), default=locating.DEFAULT_MAX_TTL,
              show_default=True, help="The largest TTL tried.")
@click.option("--max-seconds", type=click.FloatRange(1, 600), default=60.0, show_default=True,
              help="Time bound for the whole scan.")
@click.option("--rate-path", default=None, help="Throttle mode: the path of a large object on "
              "the target, downloaded after each trigger to see a policed rate.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def locate(domain: str, url: str | None, address: str | None, control_name: str, max_ttl: int,
           max_seconds: float, rate_path: str | None, as_json: bool) -> None:
    """Find the hop at which DOMAIN's censor reacts (TTL-limited triggers), with forensics."""
    parts = urlsplit(url or f"https://{domain}/")
    host, tls = parts.hostname or domain, parts.scheme != "http"
    if address is None:
        try:
            address = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
        except OSError as exc:
            raise click.ClickException(f"cannot resolve {host}: {exc}") from None
    request = locating.LocateRequest(
        address=address, name=host, control_name=control_name,
        port=parts.port or (443 if tls else 80), tls=tls, http_path=parts.path or "/",
        rate_path=rate_path, max_ttl=max_ttl, max_seconds=max_seconds)
    result = asyncio.run(locating.measure(request, Settings()))
    if as_json:
        click.echo(json.dumps(model.to_dict(result), ensure_ascii=False))
    else:
        click.echo(describe(result))
    if result.failure == "raw_socket_denied":
        sys.exit(3)


def describe(m: Middlebox) -> str:
    """A few lines a person reads."""
    if m.failure:
        head = f"{m.name} at {m.address}:{m.port}: {m.failure} ({m.operation or 'locate'})"
    elif m.hop is None:
        head = f"{m.name} at {m.address}:{m.port}: no censor found ({m.method})"
    else:
        router = f", router {m.router}" if m.router else ""
        head = f"{m.name} at {m.address}:{m.port}: censor at hop {m.hop}{router} ({m.method})"
    lines = [head, *(f"  {line}" for line in m.evidence)]
    if m.control_clean is not None:
        lines.append(f"  control {m.control_name}: {'clean' if m.control_clean else 'NOT clean'}")
    if m.injected is not None:
        verdict = {True: "injected", False: "not injected", None: "cannot tell"}
        lines.append(f"  {m.injected.packet}: {verdict[m.injected.injected]}")
        lines += [f"    {line}" for line in m.injected.evidence]
    return "\n".join(lines)
