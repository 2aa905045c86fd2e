"""An in-process DNS server for tests: UDP, DNS over TLS and DNS over HTTPS on 127.0.0.1:0.

Each name has a `Rule`: answer, nxdomain, servfail, refused, empty (NOERROR, no records),
drop (never answer) or inject (a forged answer first, the real one `delay` seconds later,
over UDP; the stream transports cannot carry two answers, they give the real one).

    async with DnsServer({"example.org": Rule.answer("192.0.2.1")}) as server:
        server.udp_url, server.tls_url, server.https_url, server.ca_file
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import trustme
from aiohttp import web

from probe.lab.dnsservers import doh_query

ACTIONS = ("answer", "nxdomain", "servfail", "refused", "empty", "drop", "inject")
_RCODES = {"nxdomain": dns.rcode.NXDOMAIN, "servfail": dns.rcode.SERVFAIL, "refused": dns.rcode.REFUSED}


@dataclass(frozen=True)
class Rule:
    action: str = "answer"
    addresses: tuple[str, ...] = ()
    forged: tuple[str, ...] = ()  # inject: the answer that arrives first
    delay: float = 0.02  # inject: seconds between the forged and the real answer

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")

    @classmethod
    def answer(cls, *addresses: str) -> Rule:
        return cls("answer", addresses)

    @classmethod
    def inject(cls, forged: str, real: str, delay: float = 0.02) -> Rule:
        return cls("inject", (real,), (forged,), delay)


def _reply(query: dns.message.Message, rcode: int, addresses: tuple[str, ...]) -> bytes:
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    question = query.question[0]
    for address in addresses:
        rdtype = dns.rdatatype.AAAA if ":" in address else dns.rdatatype.A
        if rdtype == question.rdtype:
            reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", rdtype, address))
    return reply.to_wire()


def respond(zone: Mapping[str, Rule], wire: bytes) -> list[tuple[float, bytes]]:
    """The answers to send for one query, as (delay, wire) pairs; [] means drop."""
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # noqa: BLE001 - garbage gets no answer, as from a real server
        return []
    if not query.question:
        return []
    name = query.question[0].name.to_text(omit_final_dot=True).lower()
    rule = zone.get(name, Rule("nxdomain"))
    if rule.action == "drop":
        return []
    if rule.action in _RCODES:
        return [(0.0, _reply(query, _RCODES[rule.action], ()))]
    if rule.action == "empty":
        return [(0.0, _reply(query, dns.rcode.NOERROR, ()))]
    real = (0.0, _reply(query, dns.rcode.NOERROR, rule.addresses))
    if rule.action == "inject":
        return [(0.0, _reply(query, dns.rcode.NOERROR, rule.forged)), (rule.delay, real[1])]
    return [real]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, zone: Mapping[str, Rule]) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.queries += 1
        loop = asyncio.get_running_loop()
        for delay, wire in respond(self.zone, data):
            loop.call_later(delay, self._send, wire, addr)

    def _send(self, wire: bytes, addr: tuple) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)


async def _serve_stream(
    zone: Mapping[str, Rule], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """RFC 7766 framing: a 2-byte length before each message; dropped names get silence."""
    try:
        for _ in range(64):  # bounded: a test connection never needs more
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            answers = respond(zone, await reader.readexactly(length))
            for _, wire in answers[-1:]:  # one answer per query on a stream: the real one
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def _doh_app(zone: Mapping[str, Rule], peers: set) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        if request.transport is not None:  # one client address:port per connection
            peers.add(request.transport.get_extra_info("peername"))
        answers = respond(zone, await doh_query(request))
        if not answers:
            await asyncio.sleep(3600)  # "drop": the client's timeout ends it
        return web.Response(body=answers[-1][1], content_type="application/dns-message")

    app = web.Application()
    app.router.add_route("*", "/dns-query", handle)
    return app


class DnsServer:
    """UDP, DoT and DoH listeners on 127.0.0.1, port 0, serving one mutable zone."""

    def __init__(self, zone: Mapping[str, Rule] | None = None, ca: trustme.CA | None = None):
        self.zone: dict[str, Rule] = dict(zone or {})
        self.ca = ca or trustme.CA()
        self._dir = tempfile.TemporaryDirectory(prefix="dnsserver-")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self._udp: _Udp | None = None
        self._closers: list = []
        self.udp_port = self.tls_port = self.https_port = 0
        self.doh_peers: set = set()  # the client ends of DoH connections that sent a query

    @property
    def udp_url(self) -> str:
        return f"udp://127.0.0.1:{self.udp_port}"

    @property
    def tls_url(self) -> str:
        return f"tls://127.0.0.1:{self.tls_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}/dns-query"

    @property
    def udp_queries(self) -> int:
        return self._udp.queries if self._udp else 0

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        return context

    async def start(self, host: str = "127.0.0.1", udp_port: int = 0) -> DnsServer:
        loop = asyncio.get_running_loop()
        transport, self._udp = await loop.create_datagram_endpoint(
            lambda: _Udp(self.zone), local_addr=(host, udp_port)
        )
        self._closers.append(transport.close)
        self.udp_port = transport.get_extra_info("sockname")[1]
        tls = await asyncio.start_server(
            lambda r, w: _serve_stream(self.zone, r, w), host, 0, ssl=self._server_context()
        )
        self._closers.append(tls.close)
        self.tls_port = tls.sockets[0].getsockname()[1]
        runner = web.AppRunner(_doh_app(self.zone, self.doh_peers), shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, host, 0, ssl_context=self._server_context())
        await site.start()
        self._closers.append(runner.cleanup)
        self.https_port = runner.addresses[0][1]
        return self

    async def close(self) -> None:
        for close in reversed(self._closers):
            result = close()
            if asyncio.iscoroutine(result):
                await result
        self._closers.clear()
        self._dir.cleanup()

    async def __aenter__(self) -> DnsServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
