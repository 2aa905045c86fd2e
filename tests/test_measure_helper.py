"""The probe's control client against the real helper, and against helpers that misbehave."""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from test_server import TITLE, closed_port, lab_running

from probe import failures
from probe.helper_api import MAX_ANSWER, HelperRequest, parse_request
from probe.measure import helper
from probe.measure.helper import api_url
from probe.model import Settings
from probe.server.app import server_ssl_context


def _request(lab, **extra) -> HelperRequest:
    return HelperRequest(**lab.target(), **extra)


async def test_measure_against_the_helper() -> None:
    async with lab_running() as lab:
        settings = Settings(timeout=2.0, ca_file=lab.ca_file)
        result = await helper.measure(
            _request(lab, control_domain="control.test", addresses=("127.0.0.2",)),
            settings, lab.helper_url,
        )
    assert (result.failure, result.status, result.client_ip) == (None, 200, "127.0.0.1")
    assert result.complete is True and result.elapsed > 0
    evidence = result.evidence
    assert [t.address for t in evidence.tcp] == ["127.0.0.1", "127.0.0.2"]
    # 127.0.0.2 refuses the connect and 127.0.0.1 completes: no control-SNI handshake needed
    assert [(t.address, t.sni) for t in evidence.tls] == [("127.0.0.1", "example.test"),
                                                          ("127.0.0.2", "example.test")]
    assert [t.failure for t in evidence.tcp] == [None, failures.CONNECTION_REFUSED]
    assert evidence.http[0].title == TITLE


async def test_requests_of_a_run_share_one_kept_alive_connection() -> None:
    """Inside a run's scope the helper client keeps one session: requests one after another
    reuse its connection (no TLS handshake with the helper per target)."""
    from probe.measure import shared

    async with lab_running() as lab, shared.scope():
        settings = Settings(timeout=2.0, ca_file=lab.ca_file)
        for _ in range(3):
            result = await helper.measure(_request(lab), settings, lab.helper_url)
            assert (result.failure, result.status) == (None, 200)
        session = shared.helper_session(lab.ca_file, helper.TRACE)
        assert session is not None and len(session.connector._conns) == 1
        assert sum(len(c) for c in session.connector._conns.values()) == 1
    assert session.closed
    # a failure still names its operation through the shared session's trace
    async with shared.scope():
        refused = await helper.measure(_request(lab), settings, lab.helper_url)
    assert (refused.failure, refused.operation) == (failures.CONNECTION_REFUSED, failures.CONNECT)


async def test_token_sent_and_refusal_is_data() -> None:
    async with lab_running(token="tok") as lab:
        settings = Settings(timeout=2.0, ca_file=lab.ca_file)
        good = await helper.measure(_request(lab), settings, lab.helper_url, token="tok")
        bad = await helper.measure(_request(lab), settings, lab.helper_url, token="nope")
        none = await helper.measure(_request(lab), settings, lab.helper_url)
    assert good.failure is None and good.evidence.http
    for refused in (bad, none):
        assert (refused.status, refused.failure, refused.operation) == (
            401, failures.HTTP_REQUEST_FAILED, failures.HTTP_ROUND_TRIP
        )
        assert "token" in (refused.error or "") and refused.evidence.http == ()


async def test_helper_on_closed_port_is_connection_refused() -> None:
    settings = Settings(timeout=2.0)
    result = await helper.measure(
        HelperRequest("example.test", "https://example.test/"), settings,
        f"https://127.0.0.1:{closed_port()}/",
    )
    assert (result.failure, result.operation, result.status) == (
        failures.CONNECTION_REFUSED, failures.CONNECT, None
    )


async def test_helper_with_unknown_ca_is_tls_failure() -> None:
    async with lab_running() as lab:
        result = await helper.measure(_request(lab), Settings(timeout=2.0), lab.helper_url)
    assert (result.failure, result.operation) == (
        failures.SSL_UNKNOWN_AUTHORITY, failures.TLS_HANDSHAKE
    )


@asynccontextmanager
async def fake_helper(handler):
    """An HTTPS server answering every control request with `handler`."""
    ca = trustme.CA()
    with tempfile.TemporaryDirectory(prefix="fake-helper-") as tmp:
        ca_file, cert = str(Path(tmp) / "ca.pem"), str(Path(tmp) / "cert.pem")
        ca.cert_pem.write_to_path(ca_file)
        ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(cert)
        app = web.Application()
        app.router.add_post("/api/v1/control", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(cert, cert)).start()
        try:
            yield f"https://localhost:{runner.addresses[0][1]}/", Settings(timeout=0.5, ca_file=ca_file)
        finally:
            await runner.cleanup()


async def _garbage(_request: web.Request) -> web.Response:
    return web.Response(text="<html>not json</html>")


async def _wrong_shape(_request: web.Request) -> web.Response:
    return web.json_response({"dns": [{"domain": 5}], "client_ip": "1.2.3.4"})


async def _bad_client_ip(_request: web.Request) -> web.Response:
    return web.json_response({"client_ip": ["1.2.3.4"]})


async def _huge(_request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(_request)
    chunk = b" " * (1 << 20)
    for _ in range(MAX_ANSWER // len(chunk) + 2):  # bounded: just past the cap
        await response.write(chunk)
    return response


@pytest.mark.parametrize("handler", [_garbage, _wrong_shape, _bad_client_ip, _huge])
async def test_malformed_answers_are_invalid_response(handler) -> None:
    async with fake_helper(handler) as (url, settings):
        result = await helper.measure(HelperRequest("a.test", "https://a.test/"), settings, url)
    assert (result.failure, result.status) == (failures.HTTP_INVALID_RESPONSE, 200)
    assert result.client_ip is None and result.evidence.dns == ()


async def test_silent_helper_times_out() -> None:
    async def hang(_request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    async with fake_helper(hang) as (url, settings):
        result = await helper.measure(HelperRequest("a.test", "https://a.test/"), settings, url)
    assert (result.failure, result.operation) == (failures.TIMEOUT, failures.HTTP_ROUND_TRIP)
    assert result.elapsed < 5


async def test_request_sent_is_what_the_helper_validates() -> None:
    seen: list[dict] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"client_ip": "203.0.113.9"})

    async with fake_helper(record) as (url, settings):
        result = await helper.measure(
            HelperRequest("a.test", "https://a.test/", "c.test", ("192.0.2.1",), 8443),
            settings, url,
        )
    assert result.failure is None and result.client_ip == "203.0.113.9"
    assert seen == [{"domain": "a.test", "url": "https://a.test/", "control_domain": "c.test",
                     "addresses": ["192.0.2.1"], "port": 8443}]
    assert parse_request(seen[0]) == HelperRequest(
        "a.test", "https://a.test/", "c.test", ("192.0.2.1",), 8443
    )


@pytest.mark.parametrize(("base", "expected"), [
    ("https://h:1/", "https://h:1/api/v1/control"),
    ("https://h:1", "https://h:1/api/v1/control"),
    ("https://h/helper/", "https://h/helper/api/v1/control"),
    ("https://h/helper", "https://h/helper/api/v1/control"),
    ("https://h/api/v1/control", "https://h/api/v1/control"),
])
def test_api_url(base: str, expected: str) -> None:
    assert api_url(base) == expected
