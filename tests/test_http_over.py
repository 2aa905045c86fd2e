"""The HTTP fetch over the TLS measurement's own connection (probe.measure.http_over): the same
outcome as `http.measure` on a connection of its own, with one connection and one handshake.
Real servers on loopback: aiohttp (HTTP/1.1) and hypercorn (HTTP/2, chosen by ALPN)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tlsservers as ts
from hypercorn.asyncio import serve
from hypercorn.config import Config

from probe import failures
from probe.measure import http, http_over, tls
from probe.model import Endpoint, HttpRequest, HttpResult, Settings

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ts.Pki:
    return ts.make_pki(tmp_path_factory.mktemp("pki"))


def settings(pki: ts.Pki, **kw) -> Settings:
    return Settings(ca_file=pki.ca_file, **{"timeout": 3.0, **kw})


async def over(url: str, port: int, s: Settings) -> tuple[HttpResult | None, object]:
    request = HttpRequest(url, address=ts.HOST)
    handshake, fetched = await tls.measure_then(Endpoint(ts.HOST, port, ts.NAME), s,
                                                http_over.over(request, s))
    return fetched, handshake


def outcome(r: HttpResult) -> tuple:
    return (r.failure, r.operation, r.status, r.title, r.body_length, r.body_truncated,
            r.blockpage, r.final_url)


CASES = [  # path, settings
    ("/", {}),
    ("/big?bytes=300000", {"body_limit": 10_000}),
    ("/big?bytes=5000", {"body_limit": 5000}),
    ("/redirect", {}),
    ("/elsewhere", {}),
    ("/loop", {}),
    ("/blockpage", {}),
    ("/reset", {}),
]


@pytest.mark.parametrize(("path", "knobs"), CASES)
async def test_same_outcome_as_a_fetch_of_its_own(pki: ts.Pki, path: str, knobs: dict,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # redirects to www.probe.test resolve to the server (aiohttp's resolver is getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", _loopback_getaddrinfo(socket.getaddrinfo))
    s = settings(pki, **knobs)
    async with ts.https_app(pki) as app:
        alone = await http.measure(HttpRequest(app.url(path), address=ts.HOST), s)
        handshakes_alone = len(app.sni_log)
        carried, handshake = await over(app.url(path), app.port, s)
        handshakes_over = len(app.sni_log) - handshakes_alone
    assert carried is not None and handshake.failure is None
    assert outcome(carried) == outcome(alone), path
    hops = 1 + (path in ("/redirect", "/elsewhere")) + 4 * (path == "/loop")
    assert handshakes_alone >= hops and handshakes_over == handshakes_alone  # hops as before
    if path == "/":  # the first exchange rides on the measured connection: one handshake
        assert handshakes_over == 1 and carried.body_head.startswith("<html>")


async def test_timings_start_at_the_measured_connect(pki: ts.Pki) -> None:
    async with ts.https_app(pki) as app:
        carried, handshake = await over(app.url("/"), app.port, settings(pki))
    t = carried.timings
    assert t.connect == pytest.approx(handshake.connect_time)
    assert 0 < t.connect <= t.tls <= t.first_byte <= t.transfer <= carried.elapsed
    assert carried.t0 == pytest.approx(handshake.t0, abs=0.01)


async def test_a_trickling_server_is_bounded(pki: ts.Pki) -> None:
    async with ts.https_app(pki) as app:
        started = asyncio.get_running_loop().time()
        carried, _ = await over(app.url("/trickle"), app.port, settings(pki, timeout=0.5))
    assert carried.failure == failures.TIMEOUT
    assert asyncio.get_running_loop().time() - started < 4 * 0.5 + 1.5


async def test_garbage_instead_of_http_is_an_invalid_response(pki: ts.Pki) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        await ts.hold(reader, writer)

    async with ts.raw_server(garbage, pki.server_context()) as srv:
        carried, handshake = await over(f"https://{ts.NAME}:{srv.port}/", srv.port,
                                        settings(pki, timeout=1.0))
    assert handshake.failure is None and srv.connections == 1
    assert carried.failure == failures.HTTP_INVALID_RESPONSE and carried.status is None


async def test_a_server_closing_before_answering_is_an_eof(pki: ts.Pki) -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.close()

    async with ts.raw_server(close, pki.server_context()) as srv:
        carried, _ = await over(f"https://{ts.NAME}:{srv.port}/", srv.port, settings(pki))
    assert carried.failure == failures.EOF


async def test_a_failed_handshake_carries_no_fetch(pki: ts.Pki) -> None:
    async with ts.raw_server(ts.reset_after_hello) as srv:
        carried, handshake = await over(f"https://{ts.NAME}:{srv.port}/", srv.port,
                                        settings(pki))
    assert carried is None and handshake.failure == failures.CONNECTION_RESET


# --- HTTP/2 -----------------------------------------------------------------------------------


async def _asgi(scope, receive, send) -> None:
    """A page, a big body and a redirect, over whichever protocol hypercorn speaks."""
    if scope["type"] != "http":
        return
    path, size = scope["path"], 0
    if path == "/redirect":
        await send({"type": "http.response.start", "status": 302,
                    "headers": [(b"location", b"/")]})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/big":
        size = int(scope["query_string"].decode().removeprefix("bytes=") or 0)
    body = b"a" * size if size else f"<title>h2 {scope['http_version']}</title>".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def h2_server(pki: ts.Pki, tmp: Path) -> AsyncIterator[int]:
    pem = tmp / "server.pem"
    pki.cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    listener = socket.socket()
    listener.bind((ts.HOST, 0))
    listener.listen()
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.certfile = config.keyfile = str(pem)
    config.loglevel = "WARNING"
    stop = asyncio.Event()
    task = asyncio.create_task(serve(_asgi, config, shutdown_trigger=stop.wait))
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        listener.detach()  # hypercorn closed the descriptor it was given


async def test_http2_when_alpn_chose_it(pki: ts.Pki, tmp_path: Path) -> None:
    async with h2_server(pki, tmp_path) as port:
        url = f"https://{ts.NAME}:{port}"
        carried, handshake = await over(f"{url}/", port, settings(pki))
        big, _ = await over(f"{url}/big?bytes=200000", port, settings(pki, body_limit=150_000))
        moved, _ = await over(f"{url}/redirect", port, settings(pki))
    assert handshake.alpn == "h2"
    assert (carried.failure, carried.status, carried.title) == (None, 200, "h2 2")
    assert (big.failure, big.body_length, big.body_truncated) == (None, 150_000, True)
    # the redirect's next hop went through aiohttp (HTTP/1.1) on a connection of its own
    assert (moved.failure, moved.status, moved.title, moved.final_url) == (
        None, 200, "h2 1.1", f"{url}/")


def _loopback_getaddrinfo(real):
    def getaddrinfo(host, *args, **kwargs):
        return real(ts.HOST if host in ts.NAMES else host, *args, **kwargs)
    return getaddrinfo

