"""The control side of the facts: where the control failed too (then the target is down, not
blocked), which controls gave answers, and where they disagree or broke.

A control can be wrong: a helper whose own resolver fails while the control resolvers resolve
the name is a broken control, not evidence that the name is gone; control resolvers that share
no address are noted (CDNs answer by location) but their answers still count together.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from probe import failures
from probe.model import DnsResult, TargetMeasurement, TlsResult

if TYPE_CHECKING:
    from probe.verdict.facts import Facts


def nxdomain(d: DnsResult) -> bool:
    return d.failure == failures.DNS_NXDOMAIN or d.rcode == "NXDOMAIN"


def tls_answered(t: TlsResult) -> bool:
    """A TLS server answered: the handshake worked, or failed on something the server sent."""
    return t.failure is None or t.failure in failures.PEER_ANSWERED


def negative(results: tuple[DnsResult, ...]) -> list[DnsResult]:
    """The answers proving the name does not resolve, when no answer gave an address."""
    if any(d.addresses for d in results):
        return []
    return [d for d in results if d.failure in failures.DNS_NEGATIVE or nxdomain(d)]


def control_facts(f: Facts, control_dns: tuple[DnsResult, ...], m: TargetMeasurement,
                  helper_tls: tuple[TlsResult, ...]) -> Facts:
    """Where the control failed too, and what the reader should know about the controls."""
    down, failure = _down(f, control_dns, m, helper_tls)
    answered = tuple(dict.fromkeys(_name(d) for d in control_dns if d.addresses))
    ghost = down == "dns" and f.blockpage is not None and bool(f.probe_addrs)
    return replace(f, control_down=down, control_failure=failure, ghost_dns=ghost,
                   dns_controls=answered, notes=_notes(f.domain, control_dns, m))


def _down(f: Facts, control_dns: tuple[DnsResult, ...], m: TargetMeasurement,
          helper_tls: tuple[TlsResult, ...]) -> tuple[str | None, str | None]:
    # all control DNS together saying the name does not resolve (the helper alone is not enough)
    said_no = negative(control_dns)
    if said_no:
        return "dns", said_no[0].failure or failures.DNS_NXDOMAIN
    # the helper may also try the probe's (possibly forged) addresses: judge it on its own ones
    own = frozenset(a for d in control_dns for a in d.addresses)
    tcp = [t for t in m.control.tcp if not own or t.address in own]
    tls = [t for t in helper_tls if not own or t.address in own]
    if tcp and not any(t.failure is None for t in tcp):
        return "tcp", tcp[0].failure
    if tls and not any(tls_answered(t) for t in tls):
        return "tls", tls[0].failure
    if m.control.http and not f.control_http_ok:
        return "http", m.control.http[0].failure
    return None, None


def _name(d: DnsResult) -> str:
    return "helper" if d.resolver_kind == "helper" else d.resolver


def _notes(domain: str, control_dns: tuple[DnsResult, ...], m: TargetMeasurement) -> tuple[str, ...]:
    notes = []
    helper = [d for d in m.control.dns if not d.addresses and d.failure]
    resolvers = [d for d in control_dns if d.resolver_kind != "helper" and d.addresses]
    if helper and resolvers:
        notes.append(f"The helper could not resolve {domain} ({helper[0].failure}) while "
                     f"{_name(resolvers[0])} could: the helper's resolver is a broken control.")
    answered = [d for d in control_dns if d.addresses]
    if len(answered) > 1 and not frozenset.intersection(*(frozenset(d.addresses) for d in answered)):
        names = ", ".join(f"{_name(d)} {'/'.join(sorted(d.addresses)[:2])}" for d in answered)
        notes.append(f"The control resolvers disagree about {domain}: {names}.")
    return tuple(notes)
