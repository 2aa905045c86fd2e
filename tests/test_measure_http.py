"""probe.measure.http against the in-process HTTPS app (tests/tlsservers.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import pytest
import tlsservers as ts
from aiohttp import web
from aiohttp.abc import AbstractResolver

from probe import failures
from probe.measure import blockpages, http
from probe.measure.http_connect import PinnedResolver
from probe.model import HttpRequest, Settings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ts.Pki:
    return ts.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def app(pki: ts.Pki) -> AsyncIterator[ts.WebServer]:
    async with ts.https_app(pki) as server:
        yield server


def settings(pki: ts.Pki, timeout: float = 5.0, body_limit: int = 1 << 20) -> Settings:
    return Settings(timeout=timeout, ca_file=pki.ca_file, body_limit=body_limit, user_agent="t/1")


def pinned(app: ts.WebServer, path: str = "/") -> HttpRequest:
    return HttpRequest(app.url(path), address=ts.HOST)


async def test_page_with_title_headers_and_ordered_timings(pki: ts.Pki, app: ts.WebServer) -> None:
    r = await http.measure(pinned(app), settings(pki))
    assert (r.failure, r.operation, r.status) == (None, None, 200)
    assert r.title == "Probe test page"
    assert dict(r.headers)["Content-Type"].startswith("text/html")
    assert r.body_head == ts.PAGE and r.body_length == len(ts.PAGE)
    assert not r.body_truncated and r.blockpage is None
    t = r.timings
    assert None not in (t.connect, t.tls, t.first_byte, t.transfer)
    assert 0 < t.connect <= t.tls <= t.first_byte <= t.transfer <= r.elapsed
    assert r.final_url == r.url == app.url("/")


async def test_pinned_address_keeps_sni_and_host_of_the_url(pki: ts.Pki, app: ts.WebServer) -> None:
    r = await http.measure(pinned(app), settings(pki))
    assert r.failure is None and r.address == ts.HOST
    assert dict(r.headers)["X-Seen-Host"] == f"{ts.NAME}:{app.port}"
    assert app.sni_log == [ts.NAME]


async def test_pinned_address_is_the_one_connected_to(pki: ts.Pki, app: ts.WebServer) -> None:
    # 127.0.0.3 is loopback too, but nothing listens there: the pin, not the name, is used.
    r = await http.measure(HttpRequest(app.url("/"), address="127.0.0.3"), settings(pki))
    assert (r.failure, r.operation) == (failures.CONNECTION_REFUSED, failures.CONNECT)
    assert r.timings.connect is None and app.sni_log == []


async def test_body_cap_is_honoured(pki: ts.Pki, app: ts.WebServer) -> None:
    r = await http.measure(pinned(app, "/big?bytes=300000"), settings(pki, body_limit=10_000))
    assert r.failure is None and r.status == 200
    assert (r.body_length, r.body_truncated) == (10_000, True)
    assert r.body_head == "a" * 4096


async def test_body_exactly_at_the_cap_is_not_truncated(pki: ts.Pki, app: ts.WebServer) -> None:
    r = await http.measure(pinned(app, "/big?bytes=5000"), settings(pki, body_limit=5000))
    assert (r.failure, r.body_length, r.body_truncated) == (None, 5000, False)


async def test_redirect_is_followed(pki: ts.Pki, app: ts.WebServer) -> None:
    r = await http.measure(pinned(app, "/redirect"), settings(pki))
    assert (r.failure, r.status, r.title) == (None, 200, "Probe test page")
    assert r.url == app.url("/redirect") and r.final_url == app.url("/")


async def test_redirect_loop_stops(pki: ts.Pki, app: ts.WebServer) -> None:
    r = await http.measure(pinned(app, "/loop"), settings(pki))
    assert (r.failure, r.operation) == (failures.HTTP_INVALID_RESPONSE, failures.HTTP_ROUND_TRIP)


async def test_blockpage_is_detected(pki: ts.Pki, app: ts.WebServer) -> None:
    r = await http.measure(pinned(app, "/blockpage"), settings(pki))
    assert (r.failure, r.status, r.blockpage) == (None, 200, "lab")
    assert r.title == "Access restricted"


async def test_reset_in_mid_body_fails_the_read(pki: ts.Pki, app: ts.WebServer) -> None:
    r = await http.measure(pinned(app, "/reset"), settings(pki))
    assert r.failure is not None and r.operation == failures.READ
    assert r.status == 200 and 0 < r.body_length < 1 << 20
    assert r.timings.first_byte is not None and r.timings.transfer is None


async def test_reset_in_mid_body_is_connection_reset(pki: ts.Pki, app: ts.WebServer) -> None:
    r = await http.measure(pinned(app, "/reset"), settings(pki))
    assert (r.failure, r.operation) == (failures.CONNECTION_RESET, failures.READ)


async def test_trickling_server_is_bounded(pki: ts.Pki, app: ts.WebServer) -> None:
    start = time.monotonic()
    r = await http.measure(pinned(app, "/trickle"), settings(pki, timeout=0.5))
    took = time.monotonic() - start
    assert (r.failure, r.operation) == (failures.TIMEOUT, failures.READ)
    assert 1.5 < took < 4.0  # the overall cap (4 x 0.5 s), not the 30 s the server would take
    assert r.status == 200 and r.body_length > 5


async def test_unknown_authority_fails_the_handshake(pki: ts.Pki) -> None:
    async with ts.https_app(pki, rogue=True) as rogue:
        r = await http.measure(pinned(rogue), settings(pki))
    assert (r.failure, r.operation) == (failures.SSL_UNKNOWN_AUTHORITY, failures.TLS_HANDSHAKE)
    assert r.timings.connect is not None and r.timings.tls is None and r.status is None


async def test_silent_server_times_out_in_the_handshake(pki: ts.Pki) -> None:
    async with ts.raw_server(ts.silent) as srv:
        r = await http.measure(
            HttpRequest(f"https://{ts.NAME}:{srv.port}/", ts.HOST), settings(pki, timeout=0.5)
        )
    assert (r.failure, r.operation) == (failures.TIMEOUT, failures.TLS_HANDSHAKE)
    assert srv.connections == 1


async def test_refused_fails_at_connect(pki: ts.Pki) -> None:
    with ts.refused_port() as port:
        r = await http.measure(HttpRequest(f"https://{ts.NAME}:{port}/", ts.HOST), settings(pki))
    assert (r.failure, r.operation) == (failures.CONNECTION_REFUSED, failures.CONNECT)


async def test_plain_http_has_no_tls_phase(pki: ts.Pki) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent", ""))
        return web.Response(text="<title>plain</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, ts.HOST, 0).start()
    try:
        port = runner.addresses[0][1]
        r = await http.measure(HttpRequest(f"http://{ts.NAME}:{port}/", ts.HOST), settings(pki))
    finally:
        await runner.cleanup()
    assert (r.failure, r.status, r.title, seen) == (None, 200, "plain", ["t/1"])
    t = r.timings
    assert t.tls is None and 0 < t.connect <= t.first_byte <= t.transfer


async def test_a_redirect_hop_can_be_the_blockpage(
    pki: ts.Pki, app: ts.WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ISPs redirect to their stub page (Location: http://warning.rt.ru/); following it here
    # would leave loopback, so a fingerprint on the lab app's own redirect stands in for it.
    parsed = blockpages.parse(
        "fingerprints: [{id: hop, description: d, country: ZZ,"
        " when: [{status: [302], header: {name: Location, value: '^/$'}}]}]"
    )
    monkeypatch.setattr(blockpages, "fingerprints", lambda: parsed)
    r = await http.measure(pinned(app, "/redirect"), settings(pki))
    assert (r.failure, r.status, r.blockpage) == (None, 200, "hop")
    plain = await http.measure(pinned(app, "/"), settings(pki))
    assert plain.blockpage is None


class _NoNames(AbstractResolver):
    """Resolves nothing: the names a test does not pin never leave the machine."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list:
        raise socket.gaierror(socket.EAI_NONAME, "not in this test")

    async def close(self) -> None:
        pass


async def test_redirect_to_another_name_uses_the_given_resolver(
    pki: ts.Pki, app: ts.WebServer
) -> None:
    names = PinnedResolver(ts.NAMES[1], ts.HOST, _NoNames())
    r = await http.measure(pinned(app, "/elsewhere"), settings(pki), resolver=names)
    assert (r.failure, r.status) == (None, 200)
    assert r.final_url == app.url("/", host=ts.NAMES[1])
    assert app.sni_log == [ts.NAME, ts.NAMES[1]]


async def test_redirect_to_an_unresolvable_name_fails_at_resolve(
    pki: ts.Pki, app: ts.WebServer
) -> None:
    r = await http.measure(pinned(app, "/elsewhere"), settings(pki), resolver=_NoNames())
    assert (r.failure, r.operation) == (failures.DNS_NXDOMAIN, failures.RESOLVE)
    assert r.status is None and r.timings.first_byte is not None  # the first hop answered
