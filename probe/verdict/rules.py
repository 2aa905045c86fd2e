"""The verdict rules, as data: one frozen Rule per case, walked in order, first match wins.

Order, and why:
0. dns.ghost_blockpage  a known blockpage at the address the probe's resolver gave, for a name
                 that resolves nowhere else (OONI's "ghost DNS"): DNS blocking, though the
                 control cannot resolve the name either.
0. dns.blockpage_address  the probe's resolver answered with an address (or name) OONI's DNS
                 fingerprints know as a censor's blockpage host, and nothing proves the answer
                 real: DNS blocking with no control needed, and even when the target is down.
1. down.*        the control failed too (and the probe did not get through): never "blocked".
2. dns.blockpage  a blockpage reached through a DNS answer the control does not give: the lie
                 is in DNS (as OONI judges it), the page is its consequence.
3. http.blockpage  a censor's page is the most direct evidence there is.
4. dns.*         a wrong answer explains every later failure, so DNS is judged before TCP/TLS.
5. tcp.*         a failed connect explains the TLS and HTTP failures after it.
6. tls.*         certificates (MITM), then handshakes broken for the target SNI only.
7. throttle.*    reachable but slow: the throughput estimate decides.
8. http.*        the fetch failed or differs while the helper's worked.
9. accessible.*  the probe reached the service and DNS is not contradicted.
10. inconclusive.*  everything else (failures with nothing to compare them with).

Every rule with a `blocking` also requires that no control failed (`Facts.control_down`): a
target that is down everywhere is never called blocked (the ghost blockpage and a known blockpage
address are the exceptions: the page, or the censor's own address, is the proof). `uses` names the kind of control whose evidence decides, so that a
verdict can say which control it rests on. Bump RULES_VERSION when a rule changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from probe import failures

if TYPE_CHECKING:
    from probe.verdict.facts import Facts

RULES_VERSION = "2026.3"

VERDICTS = frozenset({"accessible", "blocked", "throttled", "degraded", "down", "inconclusive"})
BLOCKINGS = frozenset({"dns", "tcp", "tls", "http"})


def _none(_: Facts) -> str | None:
    return None


@dataclass(frozen=True)
class Rule:
    id: str  # stable: stored with every verdict, used in metrics
    verdict: str
    blocking: str | None
    description: str  # what the rule means, for people reading the table
    when: Callable[[Facts], bool]
    reason: str  # one sentence, formatted with the facts as `f`
    failure: Callable[[Facts], str | None] = _none  # the decisive failure string
    uses: str = ""  # dns | helper | sni | throughput | "" (no control needed)
    overrides_down: bool = False  # holds even when the control failed too

    def holds(self, f: Facts) -> bool:
        if self.blocking is not None and f.control_down is not None and not self.overrides_down:
            return False
        return bool(self.when(f))

    def control_of(self, f: Facts) -> str | None:
        """The control this verdict rests on, in words."""
        if self.uses == "dns":
            return ", ".join(f.dns_controls) or None
        if self.uses == "helper":
            return f.control_source if f.control_source != "none" else None
        if self.uses == "sni":
            return f"control SNI at {f.sni_address}" if f.sni_address else None
        if self.uses == "throughput" and f.throttle is not None:
            return f.throttle.method
        return None

    def explain(self, f: Facts) -> str:
        return self.reason.format(f=f)

    def failure_of(self, f: Facts) -> str | None:
        return self.failure(f)


def _down(part: str, what: str) -> Rule:
    return Rule(
        id=f"down.control_{part}",
        verdict="down",
        blocking=None,
        description=f"The control {what} either: the target is down everywhere.",
        when=lambda f: f.control_down == part and not f.probe_ok,
        reason=f"The control {what} {{f.domain}} either ({{f.control_failure}}), "
        "so it is down everywhere, not blocked here.",
        failure=lambda f: f.control_failure,
        uses="dns" if part == "dns" else "helper",
    )


def _sni(name: str, failing: frozenset[str], how: str) -> Rule:
    return Rule(
        id=f"tls.sni_{name}",
        verdict="blocked",
        blocking="tls",
        description=f"Target-SNI handshakes {how} while the control SNI gets answers at the same "
        "address: DPI on the SNI.",
        when=lambda f: f.tls_interfered and f.sni_address is not None
        and f.tls_failure in failing,
        reason=f"TLS handshakes naming {{f.domain}} {how} ({{f.tls_failure}}) while another "
        "name gets answers from the same address {f.sni_address}.",
        failure=lambda f: f.tls_failure,
        uses="sni",
    )


RULES: tuple[Rule, ...] = (
    Rule(
        "dns.ghost_blockpage", "blocked", "dns",
        "A known blockpage at the probe's DNS answer for a name that resolves nowhere else.",
        lambda f: f.ghost_dns,
        "The probe's resolver sent {f.domain}, which resolves nowhere else, to a blockpage "
        "({f.blockpage}).",
        lambda f: f.probe_dns_failure,
        uses="dns", overrides_down=True,
    ),
    Rule(
        "dns.blockpage_address", "blocked", "dns",
        "The probe's DNS answer is a known blockpage address (OONI's DNS fingerprints) and "
        "nothing proves it real.",
        lambda f: f.dns_fingerprint is not None and not f.dns_consistent,
        "The probe's resolver answered {f.domain} with a known blockpage address "
        "(fingerprint {f.dns_fingerprint}).",
        lambda f: f.probe_dns_failure,
        overrides_down=True,
    ),
    _down("dns", "could not resolve"),
    _down("tcp", "could not connect to"),
    _down("tls", "could not complete a TLS handshake with"),
    _down("http", "could not fetch"),
    Rule(
        "dns.blockpage", "blocked", "dns",
        "A blockpage served from an address the control's DNS does not give.",
        lambda f: f.blockpage is not None and f.dns_compared and not f.dns_consistent,
        "The probe's resolver sent {f.domain} to a blockpage host ({f.blockpage}).",
        lambda f: f.probe_dns_failure,
        uses="dns",
    ),
    Rule(
        "http.blockpage", "blocked", "http", "The response matches a known blockpage.",
        lambda f: f.blockpage is not None,
        "The probe got a blockpage ({f.blockpage}) instead of {f.domain}.",
    ),
    Rule(
        "dns.injection", "blocked", "dns",
        "One query got several answers that disagree: an on-path injector raced the resolver.",
        lambda f: f.injected,
        "DNS queries for {f.domain} got several different answers: injected responses.",
        lambda f: f.probe_dns_failure,
    ),
    Rule(
        "dns.nxdomain", "blocked", "dns", "NXDOMAIN where the control resolves the name.",
        lambda f: f.probe_nxdomain and bool(f.control_addrs),
        "The probe's resolver says {f.domain} does not exist while the control resolves it.",
        lambda f: failures.DNS_NXDOMAIN,
        uses="dns",
    ),
    Rule(
        "dns.bogon", "blocked", "dns",
        "A private/reserved answer the control does not give.",
        lambda f: bool(f.bogons) and bool(f.control_addrs) and not f.dns_consistent,
        "The probe's resolver answers {f.domain} with reserved address {f.bogons[0]}, "
        "which the control does not give.",
        lambda f: failures.DNS_BOGON,
        uses="dns",
    ),
    Rule(
        "dns.failure", "blocked", "dns", "The probe's resolver fails where the control resolves.",
        lambda f: f.probe_dns_failure is not None and not f.probe_addrs
        and bool(f.control_addrs) and not f.probe_ok,
        "The probe could not resolve {f.domain} ({f.probe_dns_failure}) while the control can.",
        lambda f: f.probe_dns_failure,
        uses="dns",
    ),
    Rule(
        "dns.inconsistent", "blocked", "dns",
        "Answers share no address with the control's, none proven by a valid certificate, and "
        "the probe did not get through.",
        lambda f: f.dns_compared and not f.dns_consistent and not f.probe_ok,
        "The probe's DNS answers for {f.domain} share no address with the control's and none "
        "serves a valid certificate.",
        lambda f: f.tls_failure or f.http_failure,
        uses="dns",
    ),
    Rule(
        "tcp.blackhole", "blocked", "tcp",
        "Connects fail to every (consistent) address while the helper connects.",
        lambda f: f.tcp_all_failed and f.dns_acceptable and f.control_reached,
        "The probe could not connect to any address of {f.domain} ({f.tcp_failure}) while "
        "the helper could.",
        lambda f: f.tcp_failure,
        uses="helper",
    ),
    Rule(
        "tls.mitm", "blocked", "tls",
        "A handshake naming the target shows a certificate not valid for it; the helper sees "
        "a valid one.",
        lambda f: f.tls_mitm and f.control_tls_ok,
        "The probe was shown a certificate not valid for {f.domain} while the helper got a "
        "valid one: TLS interception.",
        lambda f: f.tls_failure or failures.SSL_INVALID_CERTIFICATE,
        uses="helper",
    ),
    _sni("reset", frozenset({failures.CONNECTION_RESET, failures.CONNECTION_ABORTED}), "are reset"),
    _sni("timeout", frozenset({failures.TIMEOUT}), "go silent"),
    _sni("eof", frozenset({failures.EOF}), "are closed"),
    Rule(
        "tls.handshake_failure", "blocked", "tls",
        "Target-SNI handshakes are all broken (reset/timeout/EOF) while the helper's work.",
        lambda f: f.tls_interfered and (f.control_tls_ok or f.control_http_ok),
        "TLS handshakes with {f.domain} fail ({f.tls_failure}) while the helper completes them.",
        lambda f: f.tls_failure,
        uses="helper",
    ),
    Rule(
        "throttle.throttled", "throttled", None,
        "Reachable, but the target's flows are much slower than a control over the same path.",
        lambda f: f.throttle_state == "throttled" and (f.probe_ok or f.tls_target_ok)
        and f.dns_acceptable,
        "{f.domain} is reachable but throttled: its flows run far slower than a control's.",
        uses="throughput",
    ),
    Rule(
        "throttle.degraded", "degraded", None,
        "Reachable, but everything is slow, the control too: a poor network, not censorship.",
        lambda f: f.throttle_state == "degraded" and (f.probe_ok or f.tls_target_ok)
        and f.dns_acceptable,
        "{f.domain} is reachable but slow, and so is the control: the network is degraded.",
        uses="throughput",
    ),
    Rule(
        "http.failure", "blocked", "http", "The probe's fetch fails while the helper's works.",
        lambda f: f.http_done and not f.http_ok and f.control_http_ok,
        "The probe's fetch of {f.domain} failed ({f.http_failure}) while the helper's worked.",
        lambda f: f.http_failure,
        uses="helper",
    ),
    Rule(
        "http.diff", "blocked", "http",
        "A plain-HTTP response differs from the helper's (status or title).",
        lambda f: f.http_diff is not None and f.dns_acceptable,
        "The probe's plain-HTTP response from {f.domain} differs from the helper's: {f.http_diff}.",
        uses="helper",
    ),
    Rule(
        "accessible.http", "accessible", None,
        "The fetch works and DNS is not contradicted.",
        lambda f: f.http_ok and f.dns_acceptable,
        "The probe fetched {f.domain} and its DNS answers agree with the control.",
        uses="dns",
    ),
    Rule(
        "accessible.tls", "accessible", None,
        "No fetch was made, but a target-SNI handshake with a valid certificate works.",
        lambda f: f.tls_target_ok and not f.http_done and f.dns_acceptable,
        "The probe completed a valid TLS handshake with {f.domain}.",
        uses="dns",
    ),
    Rule(
        "inconclusive.no_control", "inconclusive", None,
        "Failures, and no control to tell blocking from an outage.",
        lambda f: not f.has_control,
        "The probe could not reach {f.domain}, and without a control that cannot be judged.",
        lambda f: f.probe_dns_failure or f.tcp_failure or f.tls_failure or f.http_failure,
    ),
    Rule(
        "inconclusive.unexplained", "inconclusive", None,
        "The evidence matches no rule above.",
        lambda f: True,
        "The evidence for {f.domain} fits no known pattern of blocking or outage.",
        lambda f: f.probe_dns_failure or f.tcp_failure or f.tls_failure or f.http_failure,
    ),
)
