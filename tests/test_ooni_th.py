"""The OONI test-helper protocol both ways: golden fixtures (tests/data/ooni_th, written from
the protocol facts), our client against `probe serve` on loopback, hostile answers from a raw
loopback server, the server's 400s, and the runner's `--th` path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner
from dnsserver import Rule
from hypothesis import given, settings
from hypothesis import strategies as st
from test_runner import isp  # noqa: F401 - the system-resolver fixture
from test_server import TITLE, Lab, closed_port, lab_running

from probe import failures
from probe import ooni_th as th
from probe import ooni_th_answer as th_answer
from probe.cli import main
from probe.helper_api import BadRequest, HelperRequest
from probe.measure import ooni_th as client
from probe.model import (
    DnsResult,
    Evidence,
    HttpResult,
    Settings,
    Target,
    TargetMeasurement,
    TcpResult,
    TlsResult,
)
from probe.runner import RunPlan, measure_target
from probe.verdict import judge

DATA = Path(__file__).parent / "data" / "ooni_th"
V4, V6 = "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the ISP resolver needs port 53 (root)")
REQUEST = HelperRequest(domain="example.org", url="https://example.org/", addresses=(V4, V6))


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


# --- golden fixtures, both ways ---------------------------------------------------------------


def test_request_golden_both_ways() -> None:
    assert th.encode_request(REQUEST, "probe/test") == load("request.json")
    assert th.parse_request(load("request.json")) == REQUEST


def test_request_from_an_ooni_client() -> None:
    """Every address for 80 and 443, headers we do not use, a key from a newer client."""
    parsed = th.parse_request(load("request_ooni_client.json"))
    assert parsed == HelperRequest(domain="example.org", url="http://example.org/path?q=1",
                                   addresses=(V4, V6), port=80)


def _ok_evidence() -> Evidence:
    """What probe.server.outside gathers for REQUEST (control SNI included: OONI drops it)."""
    return Evidence(
        dns=(DnsResult(domain="example.org", resolver="system", resolver_kind="system",
                       rcode="NOERROR", addresses=(V4,)),),
        tcp=(TcpResult(address=V4, port=443),
             TcpResult(address=V6, port=443, failure=failures.NETWORK_UNREACHABLE,
                       operation=failures.CONNECT)),
        tls=(TlsResult(address=V4, port=443, sni="example.org", cert_valid_for_name=True),
             TlsResult(address=V4, port=443, sni="www.example.com",
                       failure=failures.SSL_INVALID_HOSTNAME, operation=failures.TLS_HANDSHAKE),
             TlsResult(address=V6, port=443, sni="example.org",
                       failure=failures.NETWORK_UNREACHABLE, operation=failures.CONNECT)),
        http=(HttpResult(url="https://example.org/", address=V4, status=200,
                         title="Example Domain", body_length=1256,
                         headers=(("Content-Type", "text/html; charset=UTF-8"),
                                  ("Server", "ECAcc (nyd/D10E)"),
                                  ("Server", "a second one is dropped"))),),
    )


def test_response_golden_server_side() -> None:
    assert th.encode_response(_ok_evidence(), REQUEST) == load("response_ok.json")


def test_response_golden_client_side() -> None:
    evidence = th_answer.decode_response(load("response_ok.json"), REQUEST, "https://th.test/")
    [dns] = evidence.dns
    assert (dns.resolver_kind, dns.resolver, dns.addresses, dns.failure) == (
        "helper", "https://th.test/", (V4,), None)
    assert [(t.address, t.port, t.failure, t.operation) for t in evidence.tcp] == [
        (V4, 443, None, None), (V6, 443, failures.NETWORK_UNREACHABLE, failures.CONNECT)]
    [tls] = evidence.tls
    assert (tls.address, tls.sni, tls.failure, tls.cert_valid_for_name) == (
        V4, "example.org", None, True)
    [http] = evidence.http
    assert (http.status, http.title, http.body_length, http.failure) == (
        200, "Example Domain", 1256, None)
    assert dict(http.headers)["Server"] == "ECAcc (nyd/D10E)"
    # and back: what we decoded encodes to the same answer
    assert th.encode_response(evidence, REQUEST) == load("response_ok.json")


@pytest.mark.parametrize(("name", "evidence", "request_"), [
    ("response_nxdomain.json", Evidence(
        dns=(DnsResult(domain="example.org", resolver="system", resolver_kind="system",
                       failure=failures.DNS_NXDOMAIN, operation=failures.RESOLVE),),
        http=(HttpResult(url="https://example.org/", failure=failures.DNS_NXDOMAIN,
                         operation=failures.RESOLVE),)), HelperRequest("example.org",
                                                                        "https://example.org/")),
    ("response_refused.json", Evidence(
        dns=(DnsResult(domain="example.org", resolver="system", resolver_kind="system",
                       addresses=(V4,)),),
        tcp=(TcpResult(address=V4, port=443, failure=failures.CONNECTION_REFUSED,
                       operation=failures.CONNECT),),
        tls=(TlsResult(address=V4, port=443, sni="example.org",
                       failure=failures.CONNECTION_REFUSED, operation=failures.CONNECT),),
        http=(HttpResult(url="https://example.org/", address=V4,
                         failure=failures.CONNECTION_REFUSED, operation=failures.CONNECT),)),
     HelperRequest("example.org", "https://example.org/", addresses=(V4,))),
])
def test_failed_control_golden(name: str, evidence: Evidence, request_: HelperRequest) -> None:
    assert th.encode_response(evidence, request_) == load(name)
    decoded = th_answer.decode_response(load(name), request_, "https://th.test/")
    assert decoded.http[0].status is None
    assert decoded.http[0].failure == evidence.http[0].failure
    assert [t.failure for t in decoded.tcp] == [t.failure for t in evidence.tcp]


def test_nxdomain_spelling_both_ways() -> None:
    decoded = th_answer.decode_response(load("response_nxdomain.json"), REQUEST, "https://th.test/")
    [dns] = decoded.dns
    assert (dns.failure, dns.rcode, dns.operation) == (
        failures.DNS_NXDOMAIN, "NXDOMAIN", failures.RESOLVE)
    assert decoded.http[0].operation == failures.RESOLVE
    assert load("response_nxdomain.json")["dns"]["failure"] == th.DNS_NAME_ERROR


def test_go_nulls_and_extra_keys_are_accepted() -> None:
    decoded = th_answer.decode_response(load("response_go_nulls.json"), REQUEST, "https://th.test/")
    assert decoded.tls == ()
    assert decoded.http[0].status == 204 and decoded.http[0].headers == ()
    # the helper's resolver failed: a broken control, never a proof the name does not exist
    assert decoded.dns[0].failure == failures.DNS_MISBEHAVING
    assert decoded.dns[0].failure not in failures.DNS_NEGATIVE


@pytest.mark.parametrize(("ooni", "ours", "cause"), [
    (None, None, None),
    ("connection_reset", failures.CONNECTION_RESET, None),
    ("generic_timeout_error", failures.TIMEOUT, None),
    ("ssl_unknown_authority", failures.SSL_UNKNOWN_AUTHORITY, None),
    ("dns_name_error", failures.DNS_NXDOMAIN, None),
    ("dns_server_failure", failures.DNS_MISBEHAVING, None),
    ("unknown_failure: dial tcp 10.0.0.1:443: odd", failures.UNKNOWN,
     "dial tcp [scrubbed]:443: odd"),
    ("json_parse_error", failures.UNKNOWN, "json_parse_error"),
])
def test_failure_strings_from_ooni(ooni: str | None, ours: str | None, cause: str | None) -> None:
    assert th.failure_from_ooni(ooni) == (ours, cause)


@pytest.mark.parametrize(("ours", "ooni"), [
    (None, None), (failures.DNS_NXDOMAIN, "dns_name_error"), (failures.DNS_NO_ANSWER, None),
    (failures.DNS_SERVFAIL, "dns_server_failure"), (failures.TIMEOUT, "dns_server_failure"),
])
def test_dns_failures_to_ooni(ours: str | None, ooni: str | None) -> None:
    assert th.dns_failure_to_ooni(ours) == ooni


# --- the same verdict rules judge the OONI control --------------------------------------------


def _judged(probe: Evidence, answer: str) -> tuple[str, str | None]:
    target = Target(domain="example.org", url="https://example.org/")
    control = th_answer.decode_response(load(answer), REQUEST, "https://th.test/")
    m = TargetMeasurement(target=target, start_time=0, runtime=0, probe=probe, control=control,
                          control_source="ooni-th")
    verdict = judge(m)
    return verdict.verdict, verdict.blocking


def test_verdicts_from_an_ooni_control() -> None:
    nx = Evidence(dns=(DnsResult(domain="example.org", resolver="system", resolver_kind="system",
                                 rcode="NXDOMAIN", failure=failures.DNS_NXDOMAIN,
                                 operation=failures.RESOLVE),))
    assert _judged(nx, "response_ok.json") == ("blocked", "dns")
    assert _judged(nx, "response_nxdomain.json")[0] == "down"
    refused = Evidence(
        dns=(DnsResult(domain="example.org", resolver="system", resolver_kind="system",
                       addresses=(V4,)),),
        tcp=(TcpResult(address=V4, port=443, failure=failures.CONNECTION_REFUSED,
                       operation=failures.CONNECT),))
    assert _judged(refused, "response_refused.json")[0] == "down"


# --- bad input ----------------------------------------------------------------------------------


BAD_REQUESTS = [
    ["https://example.org/"],
    {},
    {"http_request": 5},
    {"http_request": "ftp://example.org/"},
    {"http_request": "https:///nohost"},
    {"http_request": "https://example.org:99999/"},
    {"http_request": "https://example.org/", "tcp_connect": "1.2.3.4:443"},
    {"http_request": "https://example.org/", "tcp_connect": ["1.2.3.4"]},
    {"http_request": "https://example.org/", "tcp_connect": ["::1:443"]},
    {"http_request": "https://example.org/", "tcp_connect": ["1.2.3.4:0"]},
    {"http_request": "https://example.org/", "tcp_connect": ["1.2.3.4:\u00b2"]},  # isdigit()
    {"http_request": "https://example.org/", "tcp_connect": ["name.test:443"]},
    {"http_request": "https://example.org/", "tcp_connect": [f"10.0.0.{i}:443" for i in range(65)]},
    {"http_request": "https://example.org/", "http_request_headers": {"A": "not a list"}},
    {"http_request": "https://example.org/", "x_quic_enabled": "yes"},
]


@pytest.mark.parametrize("body", BAD_REQUESTS)
def test_bad_requests_are_refused_with_a_reason(body: object) -> None:
    with pytest.raises(BadRequest) as caught:
        th.parse_request(body)
    assert str(caught.value)


def _ok() -> dict:
    return load("response_ok.json")


BAD_ANSWERS = [
    [],
    "a string",
    {k: v for k, v in _ok().items() if k != "dns"},
    {k: v for k, v in _ok().items() if k != "tcp_connect"},
    _ok() | {"tcp_connect": []},
    _ok() | {"tcp_connect": {"nowhere:443": {"status": True, "failure": None}}},
    _ok() | {"tcp_connect": {f"{V4}:443": {"status": "yes", "failure": None}}},
    _ok() | {"tcp_connect": {f"{V4}:443": {"status": False, "failure": 7}}},
    _ok() | {"tls_handshake": {f"{V4}:443": {"status": True, "failure": None}}},
    _ok() | {"http_request": _ok()["http_request"] | {"status_code": "200"}},
    _ok() | {"http_request": _ok()["http_request"] | {"status_code": True}},
    _ok() | {"http_request": _ok()["http_request"] | {"headers": {"A": 1}}},
    _ok() | {"http_request": _ok()["http_request"] | {"title": ["x"]}},
    _ok() | {"dns": {"failure": None, "addrs": ["not an address"]}},
    _ok() | {"dns": {"failure": None, "addrs": "93.184.215.14"}},
    _ok() | {"ip_info": []},
    _ok() | {"tcp_connect": {f"10.{i // 256}.{i % 256}.1:443": {"status": True, "failure": None}
                             for i in range(300)}},
]


@pytest.mark.parametrize("answer", BAD_ANSWERS)
def test_answers_of_the_wrong_shape_are_refused(answer: object) -> None:
    with pytest.raises(th.BadAnswer):
        th_answer.decode_response(answer, REQUEST, "https://th.test/")


def test_ipv6_in_an_unknown_failure_is_scrubbed() -> None:
    _, cause = th.failure_from_ooni("unknown_failure: dial [2001:db8::1]:443: x 2001:db8::2, y")
    assert cause == "dial [scrubbed]: x [scrubbed], y"


# --- a hostile helper: a raw loopback server answering each path its own way -----------------


class Hostile:
    """Answers `POST /<behaviour>` as named; counts the requests each path got."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None

    def url(self, behaviour: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/{behaviour}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = head.split(b" ", 2)[1].decode().strip("/")
            self.hits[path] = self.hits.get(path, 0) + 1
            await getattr(self, f"_{path}")(writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client gave up: that is what these tests provoke
        finally:
            writer.close()

    @staticmethod
    def _head(status: str, length: int) -> bytes:
        return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()

    async def _send(self, writer: asyncio.StreamWriter, status: str, body: bytes) -> None:
        writer.write(self._head(status, len(body)) + body)
        await writer.drain()

    async def _garbage(self, writer) -> None:
        await self._send(writer, "200 OK", b"not json{")

    async def _valid(self, writer) -> None:
        await self._send(writer, "200 OK", (DATA / "response_ok.json").read_bytes())

    async def _wrongtypes(self, writer) -> None:
        await self._send(writer, "200 OK", json.dumps(_ok() | {"tcp_connect": []}).encode())

    async def _deep(self, writer) -> None:
        await self._send(writer, "200 OK", b"[" * 100_000 + b"]" * 100_000)

    async def _status500(self, writer) -> None:
        await self._send(writer, "500 Internal Server Error", b'{"error": "no"}')

    async def _truncated(self, writer) -> None:
        writer.write(self._head("200 OK", 5000) + b'{"tcp_connect": {')
        await writer.drain()

    async def _slow(self, _writer) -> None:
        await asyncio.wait_for(self.release.wait(), 10)

    async def _drip(self, writer) -> None:
        writer.write(self._head("200 OK", 1000))
        for _ in range(50):  # 10 s at most
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.2)

    async def _oversized(self, writer) -> None:
        size = client.MAX_TH_ANSWER * 3
        writer.write(self._head("200 OK", size))
        for _ in range(size // (64 << 10)):
            writer.write(b" " * (64 << 10))
            await writer.drain()

    async def __aenter__(self) -> Hostile:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release.set()
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def hostile():
    async with Hostile() as server:
        yield server


@pytest.fixture
async def lab():
    async with lab_running() as running:
        yield running


FAST = Settings(timeout=0.3)  # a deadline of 5 x 0.3 s per helper request
DEADLINE = FAST.timeout * client.HELPER_PATIENCE


EXPECTED = {  # behaviour: (failure, words of the recorded error)
    "garbage": (failures.HTTP_INVALID_RESPONSE, "not JSON"),
    "wrongtypes": (failures.HTTP_INVALID_RESPONSE, "tcp_connect: expected an object"),
    "deep": (failures.HTTP_INVALID_RESPONSE, "not of the protocol's shape"),
    "status500": (failures.HTTP_REQUEST_FAILED, "HTTP status 500"),
    "truncated": (None, ""),  # whatever aiohttp makes of it, as long as it is recorded
    "slow": (failures.TIMEOUT, ""),
    "drip": (failures.TIMEOUT, ""),
    "oversized": (failures.HTTP_INVALID_RESPONSE, f"larger than {client.MAX_TH_ANSWER} bytes"),
}


@pytest.mark.parametrize("behaviour", list(EXPECTED))
async def test_hostile_answer_is_a_recorded_failure(hostile: Hostile, behaviour: str) -> None:
    started = time.monotonic()
    result = await client.measure(REQUEST, FAST, [hostile.url(behaviour)])
    took = time.monotonic() - started
    assert result.failure is not None and result.operation is not None, result
    assert result.evidence == Evidence()
    assert took < DEADLINE + 1.0, f"{behaviour} took {took:.1f} s"
    assert hostile.hits == {behaviour: 1}  # one request, no retry
    failure, words = EXPECTED[behaviour]
    assert failure in (None, result.failure), result
    assert words in (result.error or ""), result


async def test_helpers_are_tried_in_order_once_each(hostile: Hostile) -> None:
    urls = [hostile.url("garbage"), f"http://127.0.0.1:{closed_port()}/", hostile.url("valid"),
            hostile.url("status500")]
    result = await client.measure(REQUEST, FAST, urls)
    assert result.failure is None and result.helper_url == hostile.url("valid")
    assert result.evidence.http[0].title == "Example Domain"
    assert hostile.hits == {"garbage": 1, "valid": 1}  # the one after the answer is not asked


async def test_every_helper_failing_says_why(hostile: Hostile) -> None:
    urls = [hostile.url("garbage"), hostile.url("status500")]
    result = await client.measure(REQUEST, FAST, urls)
    assert result.failure == failures.HTTP_REQUEST_FAILED and result.status == 500
    assert "garbage: answer is not JSON" in (result.error or "")
    assert "HTTP status 500" in (result.error or "") and result.evidence == Evidence()
    assert hostile.hits == {"garbage": 1, "status500": 1}


# --- our client against `probe serve` on loopback ---------------------------------------------


def _request(lab: Lab, port: int | None = None) -> HelperRequest:
    t = lab.target(port=port)
    return HelperRequest(domain=t["domain"], url=t["url"], addresses=("127.0.0.1",),
                         port=t["port"])


async def test_client_against_probe_serve(lab: Lab) -> None:
    settings = Settings(timeout=2.0, ca_file=lab.ca_file)
    result = await client.measure(_request(lab), settings, [lab.helper_url])
    assert (result.failure, result.status, result.helper_url) == (None, 200, lab.helper_url)
    evidence = result.evidence
    assert [(d.resolver_kind, d.addresses) for d in evidence.dns] == [("helper", ("127.0.0.1",))]
    assert [(t.address, t.port, t.failure) for t in evidence.tcp] == [
        ("127.0.0.1", lab.origin_port, None)]
    assert [(t.sni, t.failure, t.cert_valid_for_name) for t in evidence.tls] == [
        ("example.test", None, True)]
    [fetch] = evidence.http
    assert (fetch.status, fetch.title, fetch.failure) == (200, TITLE, None)


async def test_client_sees_a_down_origin_through_probe_serve(lab: Lab) -> None:
    settings = Settings(timeout=2.0, ca_file=lab.ca_file)
    result = await client.measure(_request(lab, port=closed_port()), settings, [lab.helper_url])
    assert result.failure is None
    assert [t.failure for t in result.evidence.tcp] == [failures.CONNECTION_REFUSED]
    assert result.evidence.http[0].failure == failures.CONNECTION_REFUSED


async def _call(lab: Lab, method: str, data: bytes = b"", headers: dict | None = None):
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.request(method, lab.helper_url, data=data, headers=headers or {},
                        ssl=lab.client_context()) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_server_answers_an_ooni_client_request(lab: Lab) -> None:
    """As an OONI client asks: every address for 80 and 443, its own headers."""
    port = lab.origin_port
    body = {"http_request": lab.target()["url"], "x_quic_enabled": False,
            "http_request_headers": {"User-Agent": ["miniooni/0.1"], "Accept": ["*/*"]},
            "tcp_connect": [f"127.0.0.1:{port}", "127.0.0.1:80"]}
    status, answer = await _call(lab, "POST", json.dumps(body).encode())
    assert status == 200, answer
    assert set(answer) == {"tcp_connect", "tls_handshake", "quic_handshake", "http_request",
                           "dns", "ip_info"}
    key = f"127.0.0.1:{port}"
    assert answer["tcp_connect"] == {key: {"status": True, "failure": None}}
    assert answer["tls_handshake"] == {
        key: {"server_name": "example.test", "status": True, "failure": None}}
    assert answer["dns"] == {"failure": None, "addrs": ["127.0.0.1"]}
    flags = th.FLAG_PROBE | th.FLAG_HELPER | th.FLAG_BOGON | th.FLAG_VALID_FOR_DOMAIN
    assert answer["ip_info"] == {"127.0.0.1": {"asn": 0, "flags": flags}}
    http = answer["http_request"]
    assert (http["status_code"], http["title"], http["failure"]) == (200, TITLE, None)
    assert http["body_length"] > 0 and isinstance(http["headers"], dict)


async def test_server_health_and_methods(lab: Lab) -> None:
    assert await _call(lab, "GET") == (200, {"status": "ok", "protocol": "ooni-web-connectivity-th"})
    for method in ("PUT", "DELETE", "PATCH"):
        status, body = await _call(lab, method)
        assert status == 400 and method in body["error"]


@pytest.mark.parametrize("raw", [
    b"not json", b"\xff\xfe", b"[" * 50_00 + b"]" * 50_00, b"1" * 5000,  # int digit limit
    *(json.dumps(b).encode() for b in BAD_REQUESTS[:6]),
    json.dumps({"http_request": "https://example.test/",
                "http_request_headers": {"X": ["a" * (20 << 10)]}}).encode(),
])
async def test_server_refuses_bad_requests_with_400(lab: Lab, raw: bytes) -> None:
    status, body = await _call(lab, "POST", raw)
    assert status == 400 and body["error"]
    assert lab.state().active == 0


async def test_server_shares_the_token_and_the_concurrency_cap() -> None:
    body = json.dumps({"http_request": "https://example.test/"}).encode()
    async with lab_running(token="s3cret") as running:
        assert (await _call(running, "POST", body))[0] == 401
    async with lab_running(max_concurrency=0) as running:
        assert (await _call(running, "POST", body))[0] == 503


# --- the runner's --th path -------------------------------------------------------------------


def _plan(lab: Lab, **fields: object) -> RunPlan:
    settings = Settings(timeout=1.5, ca_file=lab.ca_file, dns_linger=0.1)
    return RunPlan(settings=settings, throughput=False, control_sni="control.test", **fields)


def _target(lab: Lab) -> Target:
    return Target(domain="example.test", url=lab.target()["url"], source="test:1")


@root_only
async def test_runner_judges_with_the_ooni_control(lab: Lab, isp) -> None:  # noqa: F811
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    m = await measure_target(_target(lab), _plan(lab, th_urls=(lab.helper_url,)))
    assert m.control_source == "ooni-th"
    assert [d.resolver_kind for d in m.control.dns] == ["helper"]
    assert m.verdict is not None and m.verdict.verdict == "accessible", m.verdict
    del isp.zone["example.test"]  # the ISP's resolver now denies the name; the helper's does not
    m = await measure_target(_target(lab), _plan(lab, th_urls=(lab.helper_url,)))
    assert m.verdict is not None, m
    assert (m.verdict.verdict, m.verdict.blocking) == ("blocked", "dns"), m.verdict


@root_only
async def test_runner_prefers_our_own_helper(lab: Lab, isp, hostile: Hostile) -> None:  # noqa: F811
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    plan = _plan(lab, helper_url=lab.helper_url, th_urls=(hostile.url("valid"),))
    m = await measure_target(_target(lab), plan)
    assert m.control_source == "helper" and hostile.hits == {}
    assert m.verdict is not None and m.verdict.verdict == "accessible"


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["ftp://th.test/", "th.test", "https://"])
def test_bad_th_option_exits_2_before_measuring(tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(main, ["run", "--th", value, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--th" in result.output, result.output
    assert not (tmp_path / "out").exists()


@root_only
async def test_probe_run_with_th_only(tmp_path: Path, lab: Lab, isp) -> None:  # noqa: F811
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  - {{domain: example.test, url: '{lab.target()['url']}'}}\n")
    args = ["run", "--targets", str(targets), "--json", "--out", str(tmp_path / "out"),
            "--ca-file", lab.ca_file, "--th", f"http://127.0.0.1:{closed_port()}/",
            "--th", lab.helper_url, "--timeout", "1.5", "--no-throughput"]
    result = await asyncio.to_thread(CliRunner().invoke, main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    record = json.loads(line)
    assert (record["verdict"], record["test_keys"]["control_source"]) == ("accessible", "ooni-th")


# --- whatever JSON arrives, decoding either works or says BadAnswer ----------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
_SECTIONS = ["tcp_connect", "tls_handshake", "http_request", "dns", "ip_info"]


@given(st.sampled_from(_SECTIONS), _JSON)
@settings(max_examples=300, deadline=None)
def test_any_section_value_decodes_or_is_a_bad_answer(section: str, value: object) -> None:
    with contextlib.suppress(th.BadAnswer):
        th_answer.decode_response(_ok() | {section: value}, REQUEST, "https://th.test/")


@given(st.sampled_from(["tcp_connect", "tls_handshake"]), st.text(max_size=30), _JSON)
@settings(max_examples=300, deadline=None)
def test_any_endpoint_entry_decodes_or_is_a_bad_answer(section: str, key: str,
                                                       value: object) -> None:
    with contextlib.suppress(th.BadAnswer):
        th_answer.decode_response(_ok() | {section: {key: value}}, REQUEST, "https://th.test/")


@given(_JSON)
@settings(max_examples=200, deadline=None)
def test_any_request_parses_or_is_a_bad_request(value: object) -> None:
    body = value if not isinstance(value, dict) else {"http_request": "https://a.test/"} | value
    with contextlib.suppress(BadRequest):
        th.parse_request(body)
