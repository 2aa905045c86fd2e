"""probe.measure.tls against in-process servers: one row per outcome."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest
import tlsservers as ts

from probe import failures
from probe.measure import tls
from probe.model import Endpoint, Settings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ts.Pki:
    return ts.make_pki(tmp_path_factory.mktemp("pki"))


def settings(pki: ts.Pki, timeout: float = 5.0) -> Settings:
    return Settings(timeout=timeout, ca_file=pki.ca_file)


async def test_handshake_ok_records_version_cipher_and_certificate(pki: ts.Pki) -> None:
    sni_log: list = []
    async with ts.raw_server(ts.hold, pki.server_context(sni_log=sni_log)) as srv:
        r = await tls.measure(Endpoint(ts.HOST, srv.port, ts.NAME), settings(pki))
    assert r.failure is None and r.operation is None
    assert r.tls_version in {"TLSv1.2", "TLSv1.3"}
    assert r.cipher
    assert r.alpn == "http/1.1"
    assert r.cert_valid_for_name is True
    assert sni_log == [ts.NAME]
    assert srv.connections == 1
    leaf = r.certificates[0]
    assert set(ts.NAMES) <= set(leaf.san)
    assert "trustme" in leaf.issuer and leaf.subject != leaf.issuer
    assert len(leaf.sha256) == 64
    assert leaf.not_before < leaf.not_after and leaf.not_after.endswith("+00:00")
    assert r.connect_time is not None and 0 <= r.connect_time <= r.elapsed


async def test_wrong_name_is_invalid_hostname_and_keeps_the_certificate(pki: ts.Pki) -> None:
    async with ts.raw_server(ts.hold, pki.server_context()) as srv:
        r = await tls.measure(Endpoint(ts.HOST, srv.port, "other.example"), settings(pki))
    assert (r.failure, r.operation) == (failures.SSL_INVALID_HOSTNAME, failures.TLS_HANDSHAKE)
    assert r.cert_valid_for_name is False
    assert r.failure in failures.PEER_ANSWERED
    assert r.certificates and ts.NAME in r.certificates[0].san  # evidence of what was served
    assert r.tls_version is None


async def test_unknown_authority(pki: ts.Pki) -> None:
    async with ts.raw_server(ts.hold, pki.server_context(rogue=True)) as srv:
        r = await tls.measure(Endpoint(ts.HOST, srv.port, ts.NAME), settings(pki))
    assert (r.failure, r.operation) == (failures.SSL_UNKNOWN_AUTHORITY, failures.TLS_HANDSHAKE)
    assert r.cert_valid_for_name is False
    assert r.certificates  # the rogue certificate is recorded
    assert r.certificates[0].issuer != r.certificates[0].subject


async def test_no_sni_sends_none_and_accepts_any_certificate(pki: ts.Pki) -> None:
    sni_log: list = []
    async with ts.raw_server(ts.hold, pki.server_context(rogue=True, sni_log=sni_log)) as srv:
        r = await tls.measure(Endpoint(ts.HOST, srv.port, None), settings(pki))
    assert r.failure is None
    assert r.sni is None and r.cert_valid_for_name is None
    assert sni_log == [None]
    assert r.certificates


@pytest.mark.parametrize(
    ("behaviour", "failure"),
    [
        (ts.close_after_hello, failures.EOF),
        (ts.reset_after_hello, failures.CONNECTION_RESET),
        (ts.tls_alert, failures.SSL_FAILED_HANDSHAKE),
    ],
    ids=["eof", "rst", "alert"],
)
async def test_handshake_interference(pki: ts.Pki, behaviour: ts.Behaviour, failure: str) -> None:
    async with ts.raw_server(behaviour) as srv:
        r = await tls.measure(Endpoint(ts.HOST, srv.port, ts.NAME), settings(pki))
    assert (r.failure, r.operation) == (failure, failures.TLS_HANDSHAKE)
    assert r.connect_time is not None
    assert r.cert_valid_for_name is None and r.certificates == ()
    assert srv.connections == 1  # never a silent retry
    assert (r.failure in failures.PEER_ANSWERED) == (failure == failures.SSL_FAILED_HANDSHAKE)


async def test_silence_after_client_hello_times_out(pki: ts.Pki) -> None:
    async with ts.raw_server(ts.silent) as srv:
        start = time.monotonic()
        r = await tls.measure(Endpoint(ts.HOST, srv.port, ts.NAME), settings(pki, timeout=1.0))
        took = time.monotonic() - start
    assert (r.failure, r.operation) == (failures.TIMEOUT, failures.TLS_HANDSHAKE)
    assert 0.9 <= took < 3.0
    assert srv.connections == 1


async def test_refused_fails_at_connect(pki: ts.Pki) -> None:
    with ts.refused_port() as port:
        r = await tls.measure(Endpoint(ts.HOST, port, ts.NAME), settings(pki))
    assert (r.failure, r.operation) == (failures.CONNECTION_REFUSED, failures.CONNECT)
    assert r.connect_time is None and r.cert_valid_for_name is None


async def test_whole_presented_chain_is_recorded_leaf_first(pki: ts.Pki) -> None:
    intermediate = pki.ca.create_child_ca()
    leaf = intermediate.issue_cert(ts.NAME)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)  # sends the leaf and the intermediate
    async with ts.raw_server(ts.hold, ctx) as srv:
        r = await tls.measure(Endpoint(ts.HOST, srv.port, ts.NAME), settings(pki))
    assert r.failure is None and r.cert_valid_for_name is True
    assert len(r.certificates) == 2
    assert r.certificates[0].issuer == r.certificates[1].subject
    assert r.certificates[0].san == (ts.NAME,) and r.certificates[1].san == ()


def test_cert_summary_rejects_garbage() -> None:
    assert tls.cert_summary(b"not a certificate") is None


async def test_a_shared_context_never_resumes_a_session(pki: ts.Pki) -> None:
    """The client context is cached (probe.measure.tlsctx), yet every handshake is a full one:
    the server sees no resumed session, so a censor sees the whole ClientHello each time."""
    reused: list[bool] = []

    async def record(reader, writer) -> None:
        reused.append(writer.get_extra_info("ssl_object").session_reused)
        await ts.hold(reader, writer)

    async with ts.raw_server(record, pki.server_context()) as srv:
        for _ in range(3):
            r = await tls.measure(Endpoint(ts.HOST, srv.port, ts.NAME), settings(pki))
            assert r.failure is None
        for _ in range(200):  # the server side of the last handshake may still be finishing
            if len(reused) == 3:
                break
            await asyncio.sleep(0.01)
    assert reused == [False, False, False]
