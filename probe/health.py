"""Is this vantage point on the network at all? Checked once before a run measures anything.

A machine with no network must not store a list of `connection_refused` targets as if they had
been measured. Online means: the system resolver answers (any answer, NXDOMAIN included: a
censor's answer is still an answer), or at least one control can be reached. Offline stops the
run; online with no control reachable lets it measure, and the caller says which verdicts could
not use a control.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from probe.measure import dns, tcp
from probe.model import DnsQuery, Endpoint, Settings

CHECK_TIMEOUT = 5.0  # seconds: no answer in this time (or an error at once) is no network
NAMES_CHECKED = 3


@dataclass(frozen=True)
class Health:
    resolver_answers: bool
    reachable: tuple[str, ...]  # controls that accepted a connection
    unreachable: tuple[str, ...]
    resolver_failure: str | None = None

    @property
    def online(self) -> bool:
        return self.resolver_answers or bool(self.reachable)

    def describe(self) -> str:
        """One line for a person: what was tried and what failed."""
        resolver = ("the system resolver answers" if self.resolver_answers else
                    f"the system resolver does not answer ({self.resolver_failure})")
        controls = (f"{len(self.reachable)} of {len(self.reachable) + len(self.unreachable)} "
                    "controls reachable" if self.reachable or self.unreachable else "no controls")
        return f"{resolver}; {controls}"


async def check(names: Sequence[str], controls: Sequence[str], settings: Settings) -> Health:
    """Ask the system resolver for a few target names and connect to every control, at once."""
    # its own timeout, not --timeout: a loaded machine must not read as offline
    quick = replace(settings, timeout=CHECK_TIMEOUT, dns_linger=0.0)
    names = list(names)[:NAMES_CHECKED] or ["example.com"]
    queries = [dns.measure(DnsQuery(name), quick) for name in names]
    answers, reached = await asyncio.gather(
        asyncio.gather(*queries),
        asyncio.gather(*(_reachable(url, names[0], quick) for url in controls)),
    )
    answered = [a for a in answers if a.responses]
    return Health(
        resolver_answers=bool(answered),
        reachable=tuple(url for url, ok in zip(controls, reached, strict=True) if ok),
        unreachable=tuple(url for url, ok in zip(controls, reached, strict=True) if not ok),
        resolver_failure=None if answered else next((a.failure for a in answers), None),
    )


async def _reachable(url: str, name: str, settings: Settings) -> bool:
    """A UDP resolver answers a query; anything else accepts a TCP connection to its host and
    port (a name resolved by the system resolver)."""
    parts = urlsplit(url)
    if parts.scheme == "udp":
        return bool((await dns.measure(DnsQuery(name, url), settings)).responses)
    address = await dns.address_of(parts.hostname or "", settings)
    if address is None:
        return False
    port = parts.port or {"tls": 853, "http": 80}.get(parts.scheme, 443)
    return (await tcp.measure(Endpoint(address, port), settings)).failure is None
