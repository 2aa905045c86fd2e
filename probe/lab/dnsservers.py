"""The lab's DNS servers (dnspython): an authoritative zone, resolvers over UDP, DoT and DoH, and
the ISP's resolver, which forwards honestly unless a censor rule tells it to lie.

One `Answerer` is a coroutine `bytes -> bytes | None`; the transports below only carry bytes.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import struct
from collections.abc import Awaitable, Callable

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from aiohttp import web

Answerer = Callable[[bytes], Awaitable[bytes | None]]


def _parse(wire: bytes) -> dns.message.Message | None:
    try:
        return dns.message.from_wire(wire)
    except Exception:  # noqa: BLE001 - garbage on a lab port is dropped, as a server would
        return None


def _qname(query: dns.message.Message) -> str:
    return query.question[0].name.to_text(omit_final_dot=True).lower() if query.question else ""


def answer_with(query: dns.message.Message, address: str | None, authoritative: bool) -> bytes:
    """An A answer with `address`, NXDOMAIN when None; other types get an empty NOERROR."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA | (dns.flags.AA if authoritative else 0)
    question = query.question[0]
    if address is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", address))
    return response.to_wire()


def zone_answerer(zone: dict[str, str], delay: float = 0.0) -> Answerer:
    """Answers from the zone; `delay` stands for the distance to a resolver abroad."""

    async def answer(wire: bytes) -> bytes | None:
        query = _parse(wire)
        if query is None or not query.question:
            return None
        if delay:
            await asyncio.sleep(delay)
        return answer_with(query, zone.get(_qname(query)), authoritative=True)

    return answer


def isp_answerer(upstream: str, nxdomain: set[str], forge: dict[str, str]) -> Answerer:
    """The ISP's resolver: NXDOMAIN or a forged address for listed names, else forwards."""

    async def answer(wire: bytes) -> bytes | None:
        query = _parse(wire)
        if query is None or not query.question:
            return None
        name = _qname(query)
        if name in nxdomain:
            return answer_with(query, None, authoritative=False)
        if name in forge:
            return answer_with(query, forge[name], authoritative=False)
        try:
            reply = await dns.asyncquery.udp(query, upstream, timeout=2.0)
        except Exception:  # noqa: BLE001 - upstream trouble becomes SERVFAIL, like a resolver
            failed = dns.message.make_response(query)
            failed.set_rcode(dns.rcode.SERVFAIL)
            return failed.to_wire()
        return reply.to_wire()

    return answer


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, answer: Answerer) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.ensure_future(self._reply(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def serve_udp(host: str, port: int, answer: Answerer) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: _Udp(answer), local_addr=(host, port))


async def serve_stream(host: str, port: int, answer: Answerer,
                       context: ssl.SSLContext | None) -> asyncio.Server:
    """DNS over TCP (context None) or over TLS: two-byte length, then the message; repeated."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(100):  # bounded per connection
                (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10))
                reply = await answer(await reader.readexactly(length))
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(session, host, port, ssl=context)


async def doh_query(request: web.Request) -> bytes:
    """The DNS message of an RFC 8484 request: POST body, or GET ?dns=base64url."""
    if request.method == "POST":
        return await request.read()
    encoded = request.query.get("dns", "")
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def doh_routes(answer: Answerer) -> list[web.RouteDef]:
    """RFC 8484 GET (?dns=base64url) and POST (application/dns-message) at /dns-query."""

    async def handle(request: web.Request) -> web.Response:
        reply = await answer(await doh_query(request))
        if reply is None:
            return web.Response(status=400, text="bad DNS message")
        return web.Response(body=reply, content_type="application/dns-message")

    return [web.get("/dns-query", handle), web.post("/dns-query", handle)]
