"""The helper server against real in-process targets: an HTTPS origin, a DNS server, the helper.

Everything listens on 127.0.0.1 port 0 with trustme certificates. `Lab` is reused by
tests/test_control_client.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from click.testing import CliRunner
from dnsserver import DnsServer, Rule

from probe import failures
from probe.cli.serve import serve
from probe.model import Evidence, Settings, from_dict
from probe.server import app as server_app
from probe.server import limits as server_limits
from probe.server.app import STATE, ServerConfig, server_ssl_context, start
from probe.server.outside import Policy

TITLE = "Origin test page"


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Lab:
    ca: trustme.CA
    ca_file: str
    dns: DnsServer
    origin_port: int
    helper_port: int
    helper_runner: web.AppRunner
    release: asyncio.Event  # lets /slow on the origin answer

    @property
    def helper_url(self) -> str:
        return f"https://localhost:{self.helper_port}/"

    def target(self, domain: str = "example.test", path: str = "/", port: int | None = None):
        return {"domain": domain, "url": f"https://{domain}:{port or self.origin_port}{path}",
                "port": port or self.origin_port}

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def state(self):
        return self.helper_runner.app[STATE]


def _origin_app(release: asyncio.Event) -> web.Application:
    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=f"<html><title>{TITLE}</title>hello</html>", content_type="text/html")

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 20)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/slow", slow)
    return app


@asynccontextmanager
async def lab_running(**config: object):
    """DNS (example.test and slow.test -> 127.0.0.1), an HTTPS origin, and the helper."""
    ca = trustme.CA()
    release = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="helper-test-") as tmp:
        ca_file, cert_file = str(Path(tmp) / "ca.pem"), str(Path(tmp) / "cert.pem")
        ca.cert_pem.write_to_path(ca_file)
        leaf = ca.issue_cert("example.test", "localhost", "127.0.0.1")
        leaf.private_key_and_cert_chain_pem.write_to_path(cert_file)
        zone = {"example.test": Rule.answer("127.0.0.1")}
        async with DnsServer(zone) as dns_server:
            origin = web.AppRunner(_origin_app(release), shutdown_timeout=0.1)
            await origin.setup()
            await web.TCPSite(origin, "127.0.0.1", 0,
                              ssl_context=server_ssl_context(cert_file, cert_file)).start()
            settings = Settings(timeout=2.0, ca_file=ca_file)
            policy = Policy(resolver=dns_server.udp_url, allow_private=True)
            cfg = replace(ServerConfig(settings=settings, policy=policy), **config)
            runner, port = await start(cfg, ssl_context=server_ssl_context(cert_file, cert_file))
            try:
                yield Lab(ca, ca_file, dns_server, origin.addresses[0][1], port, runner, release)
            finally:
                release.set()
                await runner.cleanup()
                await origin.cleanup()


@pytest.fixture
async def lab():
    async with lab_running() as running:
        yield running


async def post(lab: Lab, body: object, token: str | None = None, raw: bytes | None = None):
    """(status, decoded JSON) of one control request."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else json.dumps(body).encode()
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(f"{lab.helper_url}api/v1/control", data=data, headers=headers,
                     ssl=lab.client_context()) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_control_of_a_working_target(lab: Lab) -> None:
    status, body = await post(lab, lab.target() | {"control_domain": "control.test"})
    assert status == 200, body
    assert body["client_ip"] == "127.0.0.1" and body["complete"] is True
    evidence = from_dict(body, Evidence)
    assert [d.addresses for d in evidence.dns] == [("127.0.0.1",)]
    assert [(t.address, t.port, t.failure) for t in evidence.tcp] == [
        ("127.0.0.1", lab.origin_port, None)
    ]
    by_sni = {t.sni: t for t in evidence.tls}
    assert by_sni["example.test"].failure is None
    assert by_sni["example.test"].cert_valid_for_name is True
    assert "control.test" not in by_sni  # asked only when the target's handshake fails
    [fetch] = evidence.http
    assert (fetch.status, fetch.title, fetch.failure) == (200, TITLE, None)


async def test_probe_seen_addresses_are_tested_too(lab: Lab) -> None:
    status, body = await post(lab, lab.target() | {"addresses": ["127.0.0.2", "127.0.0.1"]})
    assert status == 200, body
    assert [t["address"] for t in body["tcp"]] == ["127.0.0.1", "127.0.0.2"]  # own first, deduped


async def test_address_cap(lab: Lab) -> None:
    many = [f"127.0.1.{i}" for i in range(1, 13)]
    status, body = await post(lab, lab.target() | {"addresses": many})
    assert status == 200, body
    assert len(body["tcp"]) == 8


async def test_down_target_is_data(lab: Lab) -> None:
    port = closed_port()
    status, body = await post(lab, lab.target(port=port))
    assert status == 200, body
    evidence = from_dict(body, Evidence)
    assert [t.failure for t in evidence.tcp] == [failures.CONNECTION_REFUSED]
    assert {t.failure for t in evidence.tls} == {failures.CONNECTION_REFUSED}
    assert evidence.http[0].failure == failures.CONNECTION_REFUSED


async def test_unknown_name_fails_dns_and_http(lab: Lab) -> None:
    status, body = await post(lab, lab.target(domain="gone.test"))
    assert status == 200, body
    evidence = from_dict(body, Evidence)
    assert evidence.dns[0].failure == failures.DNS_NXDOMAIN
    assert evidence.tcp == () and evidence.tls == ()
    assert (evidence.http[0].failure, evidence.http[0].operation) == (
        failures.DNS_NXDOMAIN, failures.RESOLVE,
    )


async def test_private_addresses_are_skipped_unless_allowed() -> None:
    async with lab_running(policy=Policy(allow_private=False)) as running:
        # the system resolver cannot know example.test; the probe's address is loopback
        status, body = await post(running, running.target(domain="127.0.0.1")
                                  | {"addresses": ["127.0.0.1", "10.1.2.3"]})
    assert status == 200, body
    assert body["tcp"] == [] and body["tls"] == [] and body["http"] == []


BAD_REQUESTS = [
    ("not an object", ["example.test"]),
    ("unknown field", {"domain": "example.test", "url": "https://example.test/", "x": 1}),
    ("no domain", {"url": "https://example.test/"}),
    ("bad domain", {"domain": "exa mple.test", "url": "https://example.test/"}),
    ("trailing dot", {"domain": "example.test.", "url": "https://example.test/"}),
    ("label too long", {"domain": "a" * 64 + ".test", "url": "https://example.test/"}),
    ("ftp url", {"domain": "example.test", "url": "ftp://example.test/"}),
    ("url without host", {"domain": "example.test", "url": "https:///x"}),
    ("bad url port", {"domain": "example.test", "url": "https://example.test:99999/"}),
    ("bad control", {"domain": "example.test", "url": "https://example.test/",
                     "control_domain": 5}),
    ("address syntax", {"domain": "example.test", "url": "https://example.test/",
                        "addresses": ["300.1.1.1"]}),
    ("addresses not a list", {"domain": "example.test", "url": "https://example.test/",
                              "addresses": "127.0.0.1"}),
    ("too many addresses", {"domain": "example.test", "url": "https://example.test/",
                            "addresses": [f"192.0.2.{i}" for i in range(17)]}),
    ("port zero", {"domain": "example.test", "url": "https://example.test/", "port": 0}),
    ("port string", {"domain": "example.test", "url": "https://example.test/", "port": "443"}),
    ("port bool", {"domain": "example.test", "url": "https://example.test/", "port": True}),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_REQUESTS], ids=[n for n, _ in BAD_REQUESTS])
async def test_bad_requests_are_400(lab: Lab, body: object) -> None:
    status, answer = await post(lab, body)
    assert status == 400 and answer["error"]
    assert lab.dns.udp_queries == 0  # refused before measuring anything


async def test_a_bad_field_is_named_in_the_400(lab: Lab) -> None:
    status, answer = await post(lab, lab.target() | {"port": 0})
    assert status == 400 and answer["error"].startswith("port:"), answer


async def test_body_not_json_is_400(lab: Lab) -> None:
    status, answer = await post(lab, None, raw=b"\xff{not json")
    assert status == 400 and "JSON" in answer["error"]


async def test_body_too_large_is_413(lab: Lab) -> None:
    padding = ["127.0.0.1"] * 4000  # ~50 KiB, refused on size before any parsing
    status, answer = await post(lab, lab.target() | {"addresses": padding})
    assert status == 413 and "larger" in answer["error"]


async def test_unknown_route_is_json_404(lab: Lab) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{lab.helper_url}nothing", ssl=lab.client_context()) as resp,
    ):
        assert resp.status == 404
        assert "error" in await resp.json()


async def test_token_required() -> None:
    async with lab_running(token="s3cret") as running:
        assert (await post(running, running.target()))[0] == 401
        assert (await post(running, running.target(), token="s3cre"))[0] == 401
        assert (await post(running, running.target(), token="s3cret-and-more"))[0] == 401
        status, body = await post(running, running.target(), token="s3cret")
        assert status == 200 and body["http"][0]["status"] == 200
        async with (  # health stays open for monitoring
            aiohttp.ClientSession() as session,
            session.get(f"{running.helper_url}healthz", ssl=running.client_context()) as resp,
        ):
            assert resp.status == 200 and (await resp.json())["status"] == "ok"


async def _wait_active(lab: Lab, count: int) -> None:
    for _ in range(200):  # bounded: 10 s
        if lab.state().active == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"helper never had {count} active requests")


async def test_concurrency_limit_is_503() -> None:
    async with lab_running(max_concurrency=1) as running:
        held = asyncio.create_task(post(running, running.target(path="/slow")))
        await _wait_active(running, 1)
        status, body = await post(running, running.target())
        assert status == 503 and "busy" in body["error"]
        running.release.set()
        status, body = await asyncio.wait_for(held, 20)
        assert status == 200 and body["http"][0]["body_length"] == len("late")  # no body_head
        assert running.state().active == 0
        assert (await post(running, running.target()))[0] == 200  # the slot was given back


async def test_deadline_returns_partial_evidence() -> None:
    async with lab_running(deadline=0.7) as running:
        started = time.monotonic()
        status, body = await post(running, running.target(path="/slow"))
    assert status == 200 and body["complete"] is False
    assert time.monotonic() - started < 3
    assert body["dns"] and body["tcp"] and body["http"] == []  # the slow fetch was cut


async def _raw_get(lab: Lab, sni: str, path: str) -> bytes:
    """One HTTP/1.1 GET to the helper with this SNI (the name need not be on its cert)."""
    context = lab.client_context()
    context.check_hostname = False  # CA still verified; only the name is not on the cert
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", lab.helper_port, ssl=context, server_hostname=sni
    )
    try:
        assert writer.get_extra_info("ssl_object").server_hostname == sni
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        return await asyncio.wait_for(reader.read(), 5)  # to EOF: the server closes
    finally:
        writer.close()


async def test_any_sni_is_accepted(lab: Lab) -> None:
    assert (await _raw_get(lab, "twitter.com", "/healthz")).startswith(b"HTTP/1.1 200")


async def test_bulk_streams_under_any_sni(lab: Lab) -> None:
    if server_app.handle_bulk is None:
        pytest.skip("probe/server/bulk.py (helper F) is not there yet")
    answer = await _raw_get(lab, "abs.twimg.com", "/bulk?bytes=5000")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 5000" in head
    assert len(body) == 5000


async def test_handler_bug_is_json_500(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """A measure module raising (a bug: they must return failures) is contained."""

    async def broken(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("probe.server.app.measure_outside", broken)
    status, body = await post(lab, lab.target())
    assert (status, body) == (500, {"error": "internal error"})
    assert lab.state().active == 0


def test_cli_refuses_plain_http_without_flag() -> None:
    result = CliRunner().invoke(serve, ["--port", "0"])
    assert result.exit_code == 2 and "--insecure-http" in result.output
    result = CliRunner().invoke(serve, ["--cert", __file__, "--port", "0"])
    assert result.exit_code == 2 and "go together" in result.output
    result = CliRunner().invoke(serve, ["--insecure-http", "--resolver", "ftp://x"])
    assert result.exit_code == 2


def test_cli_serves(tmp_path: Path) -> None:
    """`python -m probe serve` really listens; stopped by its own pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "probe", "serve", "--insecure-http", "--port", "0"],
        stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
        env=os.environ | {"PROBE_HELPER_TOKEN": ""},
    )
    try:
        line = proc.stderr.readline()  # bounded by the test timeout; the server prints at once
        assert "listening on http://127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1].strip("/\n"))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


async def test_redirect_targets_are_filtered_like_addresses() -> None:
    """A hostile origin's redirect to a loopback/private name is refused unless allowed."""
    strict = server_limits.PermittedResolver(allow_private=False)
    lab_mode = server_limits.PermittedResolver(allow_private=True)
    try:
        with pytest.raises(OSError):
            await strict.resolve("localhost", 80)
        assert {r["host"] for r in await lab_mode.resolve("localhost", 80)} >= {"127.0.0.1"}
    finally:
        await strict.close()
        await lab_mode.close()
