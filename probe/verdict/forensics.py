"""Who sent it: pure judgements over TTL-limited attempts and packet headers (no I/O).

`locate` finds the first TTL at which the trigger (the target's ClientHello or HTTP request)
draws a reaction the control name does not: that TTL is the censor's hop. `packet_injection`
compares the reacting packet with the server's own SYN-ACK: a forger on the path is a different
host at a different distance, so its packets arrive with another IP TTL (and usually an IP ID and
a window of their own; Linux's and iptables' resets carry window 0). `dns_injection` reads a
race of answers to one query (Xue et al.; OONI's DNS consistency): the forged one arrives first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from probe.model import DnsResult, HopProbe, Injection, PacketFacts

CENSOR_REACTIONS = ("reset", "blockpage", "silence", "slow")
SLOW_RATIO = 0.5  # a follow-up below half the control's rate at the same TTL is policed
# ... unless it still ran this fast: a 96 KiB flow at such rates lasts milliseconds and times the
# CPU scheduler, not the network (throttling/decide.py's rule; seen in the lab on a busy host)
NEVER_SLOW_BPS = 50e6


@dataclass(frozen=True)
class Located:
    hop: int | None
    method: str
    router: str | None
    server_hop: int | None
    control_clean: bool | None
    evidence: tuple[str, ...]


def reaction_against(target: HopProbe, control: HopProbe | None) -> str | None:
    """The censor's reaction at this TTL: what the target drew and the control did not."""
    if target.reaction in ("reset", "blockpage"):
        return None if control is not None and control.reaction == target.reaction else \
            target.reaction
    if control is None or control.reaction in CENSOR_REACTIONS:
        return None  # silence or a slow flow means something only beside a clean control
    if target.reaction == "silence":
        return "silence"
    if target.rate_bps is not None and control.rate_bps:
        slow = target.rate_bps < min(SLOW_RATIO * control.rate_bps, NEVER_SLOW_BPS)
        return "slow" if slow else None
    return None


def locate(pairs: Sequence[tuple[HopProbe, HopProbe | None]]) -> Located:
    """The first TTL with a censor's reaction; `pairs` are (target, control) per TTL, in order."""
    server_hop = next((c.ttl for _, c in pairs if c is not None and c.reaction == "server"), None)
    controls = [c for _, c in pairs if c is not None]
    clean = all(c.reaction not in CENSOR_REACTIONS for c in controls) if controls else None
    path = ", ".join(f"{t.ttl}:{(c or t).router or '*'}" for t, c in pairs)
    for target, control in pairs:
        reaction = reaction_against(target, control)
        if reaction is not None:
            router = (control.router if control is not None else None) or target.router
            note = (f"at TTL {target.ttl} the trigger for {target.name} drew "
                    f"{_WHAT[reaction]}{_rates(target, control)}; the control's "
                    f"{_CONTROL.get(control.reaction if control else '', 'was not tried')}")
            method = "ttl_rate" if reaction == "slow" else f"ttl_{reaction}"
            return Located(target.ttl, method, router, server_hop, clean,
                           (note, f"routers by TTL: {path}"))
        if target.reaction == "server":
            break
    last = pairs[-1][0].ttl if pairs else 0
    note = (f"no reaction up to TTL {last}"
            + ("" if server_hop is None else f"; the server answered from TTL {server_hop}"))
    return Located(None, "none", None, server_hop, clean, (note, f"routers by TTL: {path}"))


_WHAT = {"reset": "a reset", "blockpage": "a blockpage", "silence": "silence (the flow was "
         "dropped)", "slow": "a policed rate"}
_CONTROL = {"none": "passed", "server": "reached the server", "reset": "drew a reset too",
            "blockpage": "drew a blockpage too", "silence": "met silence too",
            "slow": "was slow too"}


def _rates(target: HopProbe, control: HopProbe | None) -> str:
    if target.rate_bps is None or control is None or not control.rate_bps:
        return ""
    return (f" ({target.rate_bps / 1000:.0f} kbit/s, the control "
            f"{control.rate_bps / 1000:.0f} kbit/s)")


def initial_ttl(ttl: int) -> int:
    """The sender's likely initial TTL: systems start at 64, 128 or 255."""
    return next(start for start in (64, 128, 255) if ttl <= start)


def packet_injection(packet: PacketFacts | None, syn_ack: PacketFacts | None,
                     reference: PacketFacts | None = None, what: str = "rst") -> Injection:
    """Forged on the path, or sent by whoever answered the handshake?

    `reference`: the server's SYN-ACK on another port of the same address (port 443 for a
    plain-HTTP target), for when a transparent proxy answered the handshake itself.
    """
    if packet is None or syn_ack is None:
        why = "no reacting packet seen" if packet is None else "no SYN-ACK to compare with"
        return Injection(injected=None, packet=what, evidence=(why,))
    evidence = [_describe(what, packet), _describe("SYN-ACK", syn_ack)]
    if reference is not None:
        evidence.append(_describe("reference SYN-ACK", reference))
    if packet.ttl != syn_ack.ttl:
        hops = initial_ttl(packet.ttl) - packet.ttl - (initial_ttl(syn_ack.ttl) - syn_ack.ttl)
        evidence.append(f"the {what} arrived with TTL {packet.ttl}, the SYN-ACK with "
                        f"{syn_ack.ttl}: another sender, {abs(hops)} hop(s) "
                        f"{'nearer' if hops < 0 else 'farther'} than the server")
        return Injection(injected=True, packet=what, evidence=tuple(evidence))
    if reference is not None and reference.ttl != packet.ttl:
        evidence.append(f"the handshake and the {what} came with TTL {packet.ttl}, the server's "
                        f"own SYN-ACK on port 443 with {reference.ttl}: a transparent proxy on "
                        "the path answered in the server's place")
        return Injection(injected=True, packet=what, evidence=tuple(evidence))
    evidence.append(f"same TTL as the SYN-ACK ({packet.ttl}): sent by whoever answered the "
                    "handshake, most likely the server itself")
    return Injection(injected=False, packet=what, evidence=tuple(evidence))


def _describe(name: str, p: PacketFacts) -> str:
    window = "" if p.window is None else f", window {p.window}"
    return f"{name}: TTL {p.ttl}, IP ID {p.ip_id}{window}, after {p.t * 1000:.1f} ms"


def dns_injection(system: DnsResult, control: DnsResult | None) -> Injection:
    """Two different answers to one query: the first, forged, won the race (injected). One
    answer that differs from the control's: the resolver itself lied, or an injector also
    dropped the real answer (cannot tell). The TTLs and arrival times are the evidence."""
    evidence = []
    for i, response in enumerate(system.responses[:4]):
        ttls = sorted({a.ttl for a in response.answers if a.ttl is not None})
        evidence.append(f"answer {i + 1} after {response.t * 1000:.1f} ms: {response.rcode} "
                        f"{', '.join(response.addresses) or '-'}"
                        f"{f', TTL {ttls[0]}' if ttls else ''}")
    if control is not None and control.responses:
        first = control.responses[0]
        ttls = sorted({a.ttl for a in first.answers if a.ttl is not None})
        evidence.append(f"control answer after {first.t * 1000:.1f} ms: "
                        f"{', '.join(first.addresses) or '-'}{f', TTL {ttls[0]}' if ttls else ''}")
    addresses = {r.addresses for r in system.responses}
    if len(system.responses) > 1 and len(addresses) > 1:
        evidence.append("two different answers to one query: the first was forged on the path")
        return Injection(injected=True, packet="dns_answer", evidence=tuple(evidence))
    evidence.append("one answer: the resolver's own, or an injector that also dropped the "
                    "real one")
    return Injection(injected=None, packet="dns_answer", evidence=tuple(evidence))
