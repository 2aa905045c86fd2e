"""One address of a target, probe side and helper side: the TCP connect is the TLS
measurement's own, and the control SNI is asked only when the target's handshake fails after
it (what the verdict reads). Real servers on loopback; the server counts the flows."""

from __future__ import annotations

import pytest
import tlsservers as ts

from probe import failures
from probe.helper_api import HelperRequest
from probe.model import Settings, Target
from probe.runner import RunPlan, _per_address
from probe.server import outside

CONTROL = "control.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ts.Pki:
    return ts.make_pki(tmp_path_factory.mktemp("pki"))


def _plan(pki: ts.Pki) -> RunPlan:
    return RunPlan(settings=Settings(timeout=3.0, ca_file=pki.ca_file), control_sni=CONTROL)


def _target(port: int) -> Target:
    return Target(domain=ts.NAME, url=f"https://{ts.NAME}:{port}/", source="test:1")


async def _probe_side(pki: ts.Pki, port: int):
    plan = _plan(pki)
    connect, handshakes, fetched = await _per_address(ts.HOST, _target(port), plan, plan.settings)
    assert fetched is None  # asked for no fetch
    return connect, handshakes


async def _helper_side(pki: ts.Pki, port: int):
    found = outside._Found()
    request = HelperRequest(domain=ts.NAME, url=f"https://{ts.NAME}:{port}/",
                            control_domain=CONTROL, port=port)
    await outside._per_address(0, ts.HOST, request, True, _plan(pki).settings, found)
    evidence = found.evidence()
    return evidence.tcp[0], evidence.tls


async def test_a_working_handshake_is_one_flow_and_no_control_sni(pki: ts.Pki) -> None:
    for side in (_probe_side, _helper_side):
        async with ts.raw_server(ts.hold, pki.server_context()) as srv:
            connect, handshakes = await side(pki, srv.port)
        assert [(h.sni, h.failure) for h in handshakes] == [(ts.NAME, None)], side
        assert (connect.address, connect.port, connect.failure) == (ts.HOST, srv.port, None)
        assert connect.elapsed == handshakes[0].connect_time and connect.t0 == handshakes[0].t0
        assert srv.connections == 1, side  # TCP and TLS measured on the same connection


async def test_a_broken_handshake_is_followed_by_the_control_sni(pki: ts.Pki) -> None:
    for side in (_probe_side, _helper_side):
        async with ts.raw_server(ts.reset_after_hello) as srv:
            connect, handshakes = await side(pki, srv.port)
        assert [(h.sni, h.failure, h.operation) for h in handshakes] == [
            (ts.NAME, failures.CONNECTION_RESET, failures.TLS_HANDSHAKE),
            (CONTROL, failures.CONNECTION_RESET, failures.TLS_HANDSHAKE),
        ], side
        assert connect.failure is None  # the connect itself worked
        assert srv.connections == 2, side


async def test_a_refused_connect_is_a_tcp_failure_and_no_control_sni(pki: ts.Pki) -> None:
    for side in (_probe_side, _helper_side):
        with ts.refused_port() as port:
            connect, handshakes = await side(pki, port)
        assert (connect.failure, connect.operation) == (failures.CONNECTION_REFUSED,
                                                        failures.CONNECT), side
        assert [(h.failure, h.operation) for h in handshakes] == [
            (failures.CONNECTION_REFUSED, failures.CONNECT)], side
