"""The lab's server processes, one per namespace role, each configured by a JSON file:

    ip netns exec plab-net    python -m probe.lab.servers internet CONFIG.json
    ip netns exec plab-censor python -m probe.lab.servers censor   CONFIG.json

`internet`: HTTPS (per-SNI certificates) and HTTP origins, one address each, with /media/big.bin
for throughput; the authoritative DNS server; the trusted resolver (UDP, DoT, DoH); a public
resolver abroad. `censor`: the ISP resolver, the blockpage host, and the transparent HTTP proxy
that a Host rule redirects port 80 to. Each writes its `ready` file once every socket is bound.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from probe.lab.dnsservers import doh_routes, isp_answerer, serve_stream, serve_udp, zone_answerer

BLOCKPAGE_MARK = "probe-lab blockpage: access restricted"
BLOCKPAGE_HTML = (
    "<html><head><title>Доступ ограничен</title></head><body>"
    f"<h1>Доступ ограничен</h1><p>{BLOCKPAGE_MARK}</p>"
    "<p>Access to this resource is restricted under Federal Law 149-FZ.</p></body></html>"
)
CHUNK = 16 * 1024
SO_ORIGINAL_DST = 80


def _contexts(certs: dict[str, list[str]]) -> dict[str, ssl.SSLContext]:
    """One server context per name; any of them switches to the SNI's own when it has one."""
    contexts: dict[str, ssl.SSLContext] = {}

    def pick(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if server_name and server_name.lower() in contexts:
            sslobj.context = contexts[server_name.lower()]

    for name, (cert, key) in certs.items():
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["http/1.1"])
        context.sni_callback = pick
        contexts[name] = context
    return contexts


def origin_app(cfg: dict[str, Any]) -> web.Application:
    """A page per origin and a large object; a `slow` origin is slow whatever the SNI."""
    by_address = {address: name for name, address in cfg["origins"].items()}
    slow: dict[str, dict[str, float]] = cfg.get("slow", {})

    def pace(request: web.Request) -> dict[str, float] | None:
        local = request.transport.get_extra_info("sockname") if request.transport else None
        return slow.get(by_address.get(local[0], "")) if local else None

    async def page(request: web.Request) -> web.Response:
        if (p := pace(request)) is not None:
            await asyncio.sleep(p.get("delay", 0.0))
        host = request.host.split(":")[0]
        return web.Response(text=f"<html><head><title>{host}</title></head><body>"
                                 f"<p>probe-lab origin {host}</p></body></html>",
                            content_type="text/html")

    async def big(request: web.Request) -> web.StreamResponse:
        size = min(int(request.query.get("bytes", cfg["big_bytes"])), 64 << 20)
        p = pace(request)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        if p is not None:
            await asyncio.sleep(p.get("delay", 0.0))
        block = b"\x5a" * CHUNK
        for offset in range(0, size, CHUNK):
            await response.write(block[: min(CHUNK, size - offset)])
            if p is not None:
                await asyncio.sleep(CHUNK * 8 / p["rate_bps"])
        await response.write_eof()
        return response

    app = web.Application()
    app.add_routes([web.get("/media/big.bin", big), web.get("/{tail:.*}", page)])
    return app


async def _serve(app: web.Application, sites: list[tuple[str, int, ssl.SSLContext | None]]) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for host, port, context in sites:
        await web.TCPSite(runner, host, port, ssl_context=context).start()


async def internet(cfg: dict[str, Any]) -> None:
    contexts = _contexts(cfg["certs"])
    sites: list[tuple[str, int, ssl.SSLContext | None]] = []
    for name, address in cfg["origins"].items():
        if name in cfg.get("down", []):
            continue  # an origin that is down: nothing listens, the port is closed
        sites += [(address, 443, contexts[name]), (address, 80, None)]
    await _serve(origin_app(cfg), sites)
    zone = cfg["zone"]
    await serve_udp(cfg["auth"], 53, zone_answerer(zone))
    await serve_udp(cfg["trusted"], 53, zone_answerer(zone))
    await serve_stream(cfg["trusted"], 53, zone_answerer(zone), None)
    trusted_tls = contexts[cfg["trusted_name"]]
    await serve_stream(cfg["trusted"], 853, zone_answerer(zone), trusted_tls)
    doh = web.Application()
    doh.add_routes(doh_routes(zone_answerer(zone)))
    await _serve(doh, [(cfg["trusted"], 443, trusted_tls)])
    await serve_udp(cfg["public"], 53, zone_answerer(zone, cfg.get("public_delay", 0.0)))


def _original_destination(request: web.Request) -> tuple[str, int]:
    """Where a DNATed connection was going (SO_ORIGINAL_DST, IPv4)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        raise web.HTTPBadGateway()
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(packed), port


def censor_app(blocked_hosts: set[str]) -> web.Application:
    """The blockpage host; as a transparent proxy it relays every Host it does not block."""

    async def blockpage(_request: web.Request) -> web.Response:
        return web.Response(text=BLOCKPAGE_HTML, content_type="text/html")

    async def proxy(request: web.Request) -> web.StreamResponse:
        if request.host.split(":")[0].lower() in blocked_hosts:
            return await blockpage(request)
        address, port = _original_destination(request)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session, \
                session.get(f"http://{address}:{port}{request.path_qs}",
                            headers={"Host": request.host}, allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.add_routes([web.get("/{tail:.*}", blockpage)])
    proxy_app = web.Application()
    proxy_app.add_routes([web.get("/{tail:.*}", proxy)])
    app["proxy"] = proxy_app
    return app


async def censor(cfg: dict[str, Any]) -> None:
    app = censor_app(set(cfg.get("blocked_hosts", [])))
    context = _contexts(cfg["certs"])[cfg["blockpage_name"]]
    ip = cfg["blockpage_ip"]
    await _serve(app, [(ip, 80, None), (ip, 443, context)])
    await _serve(app["proxy"], [(ip, cfg["proxy_port"], None)])
    answer = isp_answerer(cfg["upstream"], set(cfg.get("nxdomain", [])), cfg.get("forge", {}))
    await serve_udp(cfg["isp"], 53, answer)
    await serve_stream(cfg["isp"], 53, answer, None)


async def main(role: str, config: Path) -> None:
    cfg = json.loads(config.read_text())
    await {"internet": internet, "censor": censor}[role](cfg)
    Path(cfg["ready"]).write_text("ready\n")
    await asyncio.Event().wait()  # serve until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
