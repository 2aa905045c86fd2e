"""A blocked target's evidence in the order it was gathered, this network against the control:
DNS answers, connects, TLS handshakes, HTTP fetches, then the middlebox where a record names it.
Pure: a TargetMeasurement (and the record's optional `middlebox` object) in, lines out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from probe.addresses import host_port
from probe.model import DnsResult, Evidence, HttpResult, TargetMeasurement, TcpResult, TlsResult
from probe.report.model import Block, Step


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _dns_line(d: DnsResult, who: str) -> str:
    if d.failure:
        return f"{who} {d.resolver}: {d.failure}"
    answer = ", ".join(d.addresses) or "no address"
    line = f"{who} {d.resolver}: {d.rcode or ''} {answer}".replace("  ", " ")
    if len(d.responses) > 1:  # an injector's answer races the real one
        heard = "; ".join(f"{', '.join(r.addresses) or r.rcode} after {_ms(r.t)}"
                          for r in d.responses)
        line += f" ({len(d.responses)} answers to one query: {heard})"
    if d.fingerprint:
        line += f" (known blockpage address: {d.fingerprint})"
    return line


def _tcp_line(t: TcpResult) -> str:
    where = host_port(t.address, t.port)
    return f"{where}: {t.failure}" if t.failure else f"{where}: connected in {_ms(t.elapsed)}"


def _tls_line(t: TlsResult) -> str:
    head = f"{host_port(t.address, t.port)} SNI {t.sni or '(none)'}"
    if t.failure:
        return f"{head}: {t.failure} ({t.operation or 'tls_handshake'})"
    valid = {True: "certificate valid", False: "certificate not valid for the name"}
    return f"{head}: {t.tls_version or 'handshake done'}, {valid.get(t.cert_valid_for_name, '')}" \
        .rstrip(", ")


def _http_line(h: HttpResult) -> str:
    head = f"GET {h.url}" + (f" via {h.address}" if h.address else "")
    if h.failure:
        return f"{head}: {h.failure} ({h.operation or 'http_round_trip'})"
    line = f"{head}: {h.status} \u201c{h.title or ''}\u201d, {h.body_length} bytes"
    return line + (f", known blockpage: {h.blockpage}" if h.blockpage else "")


def _dns_step(m: TargetMeasurement, blocking: str | None) -> Step:
    system = [d for d in m.probe.dns if d.resolver_kind == "system"]
    resolvers = [d for d in m.probe.dns if d.resolver_kind != "system"]
    control = [_dns_line(d, "control resolver") for d in resolvers]
    control += [_dns_line(d, m.control_source) for d in m.control.dns]
    failed = blocking == "dns" or any(d.failure for d in system)
    return Step("DNS", tuple(_dns_line(d, "system resolver") for d in system), tuple(control),
                failed)


def _step(name: str, here: Iterable[Any], there: Iterable[Any], line: Any, decisive: bool
          ) -> Step:
    """`decisive`: the verdict's blocking method is this step's (a blockpage fails nothing)."""
    here, there = list(here), list(there)
    return Step(name, tuple(line(o) for o in here), tuple(line(o) for o in there),
                decisive or any(o.failure for o in here))


def _observations(e: Evidence) -> list[Any]:
    return [*e.dns, *e.tcp, *e.tls, *e.http]


def failed_operation(m: TargetMeasurement) -> str | None:
    """The operation of the first observation that failed with the verdict's failure string."""
    failure = m.verdict.failure if m.verdict else None
    for o in sorted(_observations(m.probe), key=lambda o: o.t0):
        if o.failure and (failure is None or o.failure == failure):
            return o.operation
    return None


def middlebox_step(middlebox: Mapping[str, Any]) -> Step:
    """The `middlebox` object another part of the probe may store (hop, router, method,
    evidence): shown as it is, whatever keys it has."""
    lines = []
    if middlebox.get("hop") is not None:
        lines.append(f"censor at hop {middlebox['hop']}")
    router = middlebox.get("router") or middlebox.get("router_address")
    if router:
        lines.append(f"router {router}")
    if middlebox.get("method"):
        lines.append(f"found by {middlebox['method']}")
    evidence = middlebox.get("evidence")
    if isinstance(evidence, Mapping):
        lines += [f"{k}: {v}" for k, v in evidence.items()]
    elif evidence:
        lines.append(str(evidence))
    return Step("middlebox", tuple(lines), (), True)


def block(m: TargetMeasurement, anchor: str, middlebox: Mapping[str, Any] | None) -> Block:
    v = m.verdict
    assert v is not None
    steps = [
        _dns_step(m, v.blocking),
        _step("TCP connect", m.probe.tcp, m.control.tcp, _tcp_line, v.blocking == "tcp"),
        _step("TLS handshake", m.probe.tls, m.control.tls, _tls_line, v.blocking == "tls"),
        _step("HTTP", m.probe.http, m.control.http, _http_line, v.blocking == "http"),
    ]
    if middlebox:
        steps.append(middlebox_step(middlebox))
    return Block(domain=m.target.domain, anchor=anchor, blocking=v.blocking, failure=v.failure,
                 operation=failed_operation(m), reason=v.reason, rule=v.rule,
                 control_source=m.control_source,
                 steps=tuple(s for s in steps if s.probe or s.control))
