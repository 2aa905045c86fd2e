"""Which controls a run uses, and whom that makes it talk to.

Out of the box a volunteer has no helper and no trusted resolver of their own, so a run compares
against public services of different operators: several DoH resolvers queried in parallel (their
answers together are the control DNS) and OONI's public Web Connectivity test helpers, tried in
order. Anything the user configures replaces these defaults; `--no-third-party` turns the
defaults off. Every run says on stderr whom it contacts and what they learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

# Addressed by IP, so that the control does not depend on the (possibly censored) system
# resolver; each certificate names its address. Three operators, so one cannot decide alone.
PUBLIC_RESOLVERS: dict[str, str] = {
    "https://1.1.1.1/dns-query": "Cloudflare",
    "https://9.9.9.9/dns-query": "Quad9",
    "https://8.8.8.8/dns-query": "Google",
}
# OONI's public test helpers (ooni/probe-cli learns more from OONI's backend; these are stable).
PUBLIC_TEST_HELPERS: dict[str, str] = {
    f"https://{n}.th.ooni.org/": "OONI" for n in range(4)
}


@dataclass(frozen=True)
class Controls:
    resolvers: tuple[str, ...] = ()
    helper_url: str | None = None
    th_urls: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.resolvers or self.helper_url or self.th_urls)


def choose(resolvers: tuple[str, ...], helper_url: str | None, th_urls: tuple[str, ...],
           third_party: bool) -> Controls:
    """What the user gave wins; public defaults fill what they did not give, unless refused.

    Our own helper (`probe serve`) makes OONI's helpers unnecessary: it gives the same control
    view and the bulk endpoint besides."""
    if not resolvers and third_party:
        resolvers = tuple(PUBLIC_RESOLVERS)
    if not helper_url and not th_urls and third_party:
        th_urls = tuple(PUBLIC_TEST_HELPERS)
    return Controls(resolvers, helper_url, th_urls if not helper_url else ())


def third_parties(controls: Controls) -> list[str]:
    """One line per party the run talks to besides the targets, and what it learns."""
    lines = []
    for url in controls.resolvers:
        lines.append(f"resolver {_named(url, PUBLIC_RESOLVERS)}: learns each target's name and "
                     "this network's public address")
    for url in controls.th_urls:
        lines.append(f"test helper {_named(url, PUBLIC_TEST_HELPERS)}: learns each target's URL, "
                     "the addresses resolved here and this network's public address")
    if controls.helper_url:
        lines.append(f"helper {_host(controls.helper_url)}: learns each target's URL, the "
                     "addresses resolved here and this network's public address")
    return lines


def _named(url: str, known: dict[str, str]) -> str:
    return f"{url} ({known[url]})" if url in known else url


def _host(url: str) -> str:
    return urlsplit(url).hostname or url
