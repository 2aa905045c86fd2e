"""SSRF through the helper: a hostile origin redirects the helper into the operator's own network.

Everything runs on loopback. The helper allows only the origin's own address (127.0.0.2, a
network of one) beside the global ones, so the policy is the real one: a "secret" server on
127.0.0.1 and ::1 stands for what the operator keeps private, and counts every request it gets.
Redirects to 169.254.169.254 and 10.x must never be tried for real here (no traffic leaves
loopback), so those are checked where the connection would be made, on the socket factory.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from probe.measure.http_connect import ConnectGuard
from probe.model import Settings
from probe.server.app import ServerConfig, start
from probe.server.outside import Policy

SECRET = "SECRET-5b1e7c"
ORIGIN = "127.0.0.2"  # any 127/8 address is loopback on Linux: the origin is not the secret


@dataclass
class Net:
    origin_port: int
    v4_port: int
    v6_port: int
    helper_port: int
    secret_hits: list[str] = field(default_factory=list)


async def _site(app: web.Application, host: str, runners: list[web.AppRunner]) -> int:
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, host, 0).start()
    return runner.addresses[0][1]


def _secret_app(hits: list[str]) -> web.Application:
    async def secret(request: web.Request) -> web.Response:
        hits.append(str(request.url))
        return web.Response(text=f"<title>{SECRET}</title>{SECRET}", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", secret)
    return app


def _origin_app() -> web.Application:
    async def go(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="<title>fine</title>page-content-7f3a", content_type="text/html")

    app = web.Application()
    app.router.add_get("/go", go)
    app.router.add_get("/ok", ok)
    return app


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    runners: list[web.AppRunner] = []
    hits: list[str] = []
    try:
        origin = await _site(_origin_app(), ORIGIN, runners)
        v4 = await _site(_secret_app(hits), "127.0.0.1", runners)
        v6 = await _site(_secret_app(hits), "::1", runners)
        policy = Policy(allow_private=False, allowed_networks=(f"{ORIGIN}/32",))
        config = ServerConfig(settings=Settings(timeout=2.0), policy=policy)
        helper, helper_port = await start(config)
        runners.append(helper)
        yield Net(origin, v4, v6, helper_port, hits)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def _control(net: Net, location: str) -> dict:
    url = f"http://{ORIGIN}:{net.origin_port}/go?to={aiohttp.helpers.quote(location, safe='')}"
    body = {"domain": ORIGIN, "url": url, "port": net.origin_port}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
        session.post(f"http://127.0.0.1:{net.helper_port}/api/v1/control", json=body) as resp,
    ):
        assert resp.status == 200
        return await resp.json()


# Each a way to spell "the helper's own machine"; {v4}/{v6}: ports of the secret servers.
INTO_LOOPBACK = [
    ("ipv4 literal", "http://127.0.0.1:{v4}/secret"),
    ("ipv6 literal", "http://[::1]:{v6}/secret"),
    ("ipv4-mapped ipv6", "http://[::ffff:127.0.0.1]:{v4}/secret"),
    ("ipv4-mapped ipv6, hex", "http://[::ffff:7f00:1]:{v4}/secret"),
    ("decimal integer host", "http://2130706433:{v4}/secret"),
    ("hex integer host", "http://0x7f000001:{v4}/secret"),
    ("short dotted host", "http://127.1:{v4}/secret"),
    ("octal dotted host", "http://0177.0.0.1:{v4}/secret"),
    ("unspecified ipv4", "http://0.0.0.0:{v4}/secret"),
    ("unspecified ipv6", "http://[::]:{v6}/secret"),
    ("name of loopback", "http://localhost:{v4}/secret"),
    ("https literal", "https://127.0.0.1:{v4}/secret"),
]


@pytest.mark.parametrize("location", [loc for _, loc in INTO_LOOPBACK],
                         ids=[name for name, _ in INTO_LOOPBACK])
async def test_redirect_into_the_helpers_network_is_not_followed(
    net: Net, location: str, hostile
) -> None:
    target = location.format(v4=net.v4_port, v6=net.v6_port)
    with hostile.case(f"helper ssrf: {target}", timeout=8.0):
        answer = await _control(net, target)
    text = json.dumps(answer)
    print(f"{target}: {answer['http'][0]['failure']} ({answer['http'][0].get('cause')})")
    assert net.secret_hits == [] and SECRET not in text
    (fetch,) = answer["http"]
    assert fetch["failure"] is not None and fetch["status"] is None


async def test_redirect_within_the_allowed_origin_is_followed(net: Net, hostile) -> None:
    """The control case: the same path to an allowed address works, so the refusals above are
    the policy's doing; and the answer carries the title, never the page itself."""
    with hostile.case("helper ssrf: allowed redirect", timeout=8.0):
        answer = await _control(net, f"http://{ORIGIN}:{net.origin_port}/ok")
    (fetch,) = answer["http"]
    assert fetch["failure"] is None and fetch["status"] == 200 and fetch["title"] == "fine"
    assert "page-content-7f3a" not in json.dumps(answer) and fetch["body_head"] == ""


ADDRESSES = [  # (address, allowed without --allow-private-addresses)
    ("169.254.169.254", False), ("10.1.2.3", False), ("192.168.0.1", False),
    ("172.16.0.1", False), ("100.64.0.1", False), ("127.0.0.1", False), ("0.0.0.0", False),
    ("::1", False), ("::", False), ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False),
    ("::ffff:10.0.0.1", False), ("::127.0.0.1", False), ("fe80::1", False), ("fc00::1", False),
    ("224.0.0.1", False), ("ff02::1", False), ("not an address", False),
    ("8.8.8.8", True), ("2001:4860:4860::8888", True), ("::ffff:8.8.8.8", True),
    (ORIGIN, True),  # the one network this test's policy adds
]


@pytest.mark.parametrize(("address", "allowed"), ADDRESSES)
def test_policy_table(address: str, allowed: bool, hostile) -> None:
    policy = Policy(allowed_networks=(f"{ORIGIN}/32",))
    with hostile.case(f"helper policy: {address}"):
        assert policy.permits(address) is allowed


@pytest.mark.parametrize("address", ["169.254.169.254", "10.1.2.3", "::ffff:169.254.169.254"])
def test_socket_factory_refuses_before_any_socket_exists(address: str, hostile) -> None:
    """The connect-time check: refused with no socket made, so nothing is ever sent."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    make = ConnectGuard(Policy().permits).socket  # what the helper's fetches connect through
    with hostile.case(f"helper connect-time check: {address}"), \
            pytest.raises(OSError, match="not permitted"):
        make((family, socket.SOCK_STREAM, 6, "", (address, 80)))
    allowed = make((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 80)))
    allowed.close()  # made, never connected


def test_addresses_given_directly_are_filtered_too() -> None:
    from probe.server.outside import choose_addresses

    chosen = choose_addresses(("::ffff:127.0.0.1", ORIGIN), ("169.254.169.254", "8.8.8.8"),
                              Policy(allowed_networks=(ORIGIN,)))
    assert chosen == (ORIGIN, "8.8.8.8")


async def test_helper_answers_health_while_refusing(net: Net) -> None:
    """A burst of refused redirects leaves the helper responsive (nothing hangs)."""
    targets = [f"http://127.0.0.1:{net.v4_port}/secret"] * 4
    answers = await asyncio.wait_for(
        asyncio.gather(*(_control(net, t) for t in targets)), 20
    )
    assert all(a["http"][0]["failure"] for a in answers) and net.secret_hits == []
