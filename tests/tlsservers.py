"""Reusable in-process servers on 127.0.0.1 port 0 for TLS and HTTP tests (trustme PKI).

- `make_pki(dir)`: a trusted CA and a second, untrusted one, certificates for NAMES.
- `https_app(ctx)`: an aiohttp HTTPS app with the routes in ROUTES (page, big body, trickle,
  redirect, redirect to another name, blockpage, reset in mid-body).
- `raw_server(behaviour, ssl_ctx=None)`: a TCP (or TLS) server running `behaviour` per
  connection: `hold`, `close_after_hello`, `reset_after_hello`, `silent`, `tls_alert`.
- `refused_port()`: a port bound but not listening, so connecting to it is refused.
Every server counts its connections and stops its handlers on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from aiohttp import web

HOST = "127.0.0.1"
NAME = "probe.test"
NAMES = (NAME, "www.probe.test")
LAB_BLOCKPAGE_TEXT = "probe-lab blockpage: access restricted"
# A fatal handshake_failure(40) alert record, as a server sends when it rejects a ClientHello.
TLS_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
_HOLD_SECONDS = 30.0  # longest any handler keeps a connection; tests end long before

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Pki:
    ca: trustme.CA  # trusted through ca_file
    other_ca: trustme.CA  # never trusted: "unknown authority"
    cert: trustme.LeafCert  # for NAMES, by ca
    rogue: trustme.LeafCert  # for NAMES, by other_ca
    ca_file: str

    def server_context(self, rogue: bool = False, sni_log: list | None = None) -> ssl.SSLContext:
        """A server context; the SNI of every ClientHello is appended to sni_log."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (self.rogue if rogue else self.cert).configure_cert(ctx)
        ctx.set_alpn_protocols(["http/1.1"])
        if sni_log is not None:
            ctx.sni_callback = lambda _obj, name, _ctx: sni_log.append(name)
        return ctx


def make_pki(directory: Path) -> Pki:
    ca, other = trustme.CA(), trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(ca, other, ca.issue_cert(*NAMES), other.issue_cert(*NAMES), str(ca_file))


# --- raw servers --------------------------------------------------------------------------


@dataclass
class RawServer:
    port: int
    connections: int = 0
    tasks: set[asyncio.Task] = field(default_factory=set)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


@contextlib.asynccontextmanager
async def raw_server(
    behaviour: Behaviour, ssl_ctx: ssl.SSLContext | None = None
) -> AsyncIterator[RawServer]:
    state = RawServer(port=0)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.writers.append(writer)
        task = asyncio.current_task()
        if task is not None:
            state.tasks.add(task)
        with contextlib.suppress(Exception):
            if ssl_ctx is not None:  # TLS after counting, so that failed handshakes count too
                await writer.start_tls(ssl_ctx)
            await behaviour(reader, writer)

    server = await asyncio.start_server(handler, HOST, 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for writer in state.writers:
            writer.transport.abort()
        for task in state.tasks:
            task.cancel()
        if state.tasks:
            await asyncio.wait(state.tasks, timeout=2.0)


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep the connection until the client closes it (a TLS server after its handshake)."""
    async with asyncio.timeout(_HOLD_SECONDS):
        while await reader.read(4096):
            pass
    writer.close()


async def close_after_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    writer.close()


async def reset_after_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    abort_with_rst(writer.transport)


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    await asyncio.sleep(_HOLD_SECONDS)


async def tls_alert(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    writer.write(TLS_ALERT)
    await writer.drain()
    writer.close()


def abort_with_rst(transport: asyncio.BaseTransport) -> None:
    """Close with SO_LINGER 0, so the kernel sends a RST instead of a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, so nobody else takes it meanwhile)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


# --- the HTTPS app ------------------------------------------------------------------------

PAGE = "<html><head><title> Probe  test page </title></head><body>hello</body></html>"
BLOCKPAGE = (
    "<html><head><title>Access restricted</title></head>"
    f"<body><h1>{LAB_BLOCKPAGE_TEXT}</h1></body></html>"
)
routes = web.RouteTableDef()


@routes.get("/")
async def page(request: web.Request) -> web.Response:
    return web.Response(
        text=PAGE, content_type="text/html", headers={"X-Seen-Host": request.host}
    )


@routes.get("/big")
async def big(request: web.Request) -> web.Response:
    return web.Response(body=b"a" * int(request.query.get("bytes", "100000")))


@routes.get("/trickle")
async def trickle(request: web.Request) -> web.StreamResponse:
    """One byte every 100 ms: never idle long enough for a read timeout."""
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    for _ in range(int(_HOLD_SECONDS * 10)):
        await resp.write(b".")
        await asyncio.sleep(0.1)
    return resp


@routes.get("/redirect")
async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/")


@routes.get("/elsewhere")
async def elsewhere(request: web.Request) -> web.Response:
    """Redirect to the same server under another name, www.probe.test."""
    raise web.HTTPFound(str(request.url.with_host(NAMES[1]).with_path("/")))


@routes.get("/loop")
async def loop(request: web.Request) -> web.Response:
    raise web.HTTPFound("/loop")


@routes.get("/blockpage")
async def blockpage(request: web.Request) -> web.Response:
    return web.Response(text=BLOCKPAGE, content_type="text/html")


@routes.get("/reset")
async def reset(request: web.Request) -> web.StreamResponse:
    """Announce 1 MiB, send 64 KiB, then reset the connection."""
    resp = web.StreamResponse(headers={"Content-Length": str(1 << 20)})
    await resp.prepare(request)
    await resp.write(b"r" * (1 << 16))
    await asyncio.sleep(0.05)
    if request.transport is not None:
        abort_with_rst(request.transport)
    return resp


@dataclass
class WebServer:
    port: int
    sni_log: list

    def url(self, path: str = "/", host: str = NAME) -> str:
        return f"https://{host}:{self.port}{path}"


@contextlib.asynccontextmanager
async def https_app(pki: Pki, rogue: bool = False) -> AsyncIterator[WebServer]:
    sni_log: list = []
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, ssl_context=pki.server_context(rogue, sni_log))
    await site.start()
    try:
        yield WebServer(port=runner.addresses[0][1], sni_log=sni_log)
    finally:
        await runner.cleanup()
