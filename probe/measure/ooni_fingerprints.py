"""OONI's blocking fingerprints (ooni/blocking-fingerprints), indexed once and matched in time
linear in the response.

The data is OONI's CSV, shipped as is (probe/data/ooni_fingerprints_*.csv, source and commit in
ooni_fingerprints.json; refreshed by scripts/refresh_fingerprints.py). Matching, per OONI's
format: `contains` is a case-sensitive substring, `prefix` a startswith, `full` an equality,
`regexp` a Python regex searched in the text. Indexes: every body `contains` pattern in one
Aho-Corasick automaton, header patterns by header name, DNS answers in a dict. A regex is
accepted only as literal pieces (with `.` wildcards) joined by `.*`, which is searched piece by
piece, line by line (`.` never crosses a newline): linear, where `re` itself can be quadratic on
a hostile page. Any other regex is refused when the data is loaded.

Only scopes that mean censorship count as a blockpage: `nat`, `isp`, `prod`, `inst`. `fp`
(known false positives) vetoes the others; `vbw` (vague words), `injb` (benign injections) and
`prov` (a provider's own geoblock) are kept in the data but never reported.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import io
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick_rs

BLOCKING_SCOPES = frozenset({"nat", "isp", "prod", "inst"})
FALSE_POSITIVE = "fp"
PATTERN_TYPES = frozenset({"full", "prefix", "contains", "regexp"})
HTTP_FILE = "data/ooni_fingerprints_http.csv"
DNS_FILE = "data/ooni_fingerprints_dns.csv"
_META = frozenset("*+?()[]|^$")  # regex syntax a linear pattern may not use (besides `.*`)


@dataclass(frozen=True)
class Fingerprint:
    """One row of OONI's CSV, the fields the probe uses."""

    name: str  # e.g. ooni.ru_3, cp.a_prod_drweb_3, cl.dns_isp_by_mts
    scope: str  # nat | isp | prod | inst | vbw | fp | injb | prov
    location: str  # body | header.<lower-case name> | dns
    pattern_type: str  # full | prefix | contains | regexp
    pattern: str
    confidence: int  # OONI's confidence_no_fp, 0-10
    countries: tuple[str, ...]  # expected_countries

    @property
    def blocking(self) -> bool:
        return self.scope in BLOCKING_SCOPES


def parse_csv(text: str, location: str | None = None) -> tuple[Fingerprint, ...]:
    """Rows of OONI's CSV; ValueError naming the row when one is malformed or not linear."""
    out, seen = [], set()
    for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            fp = _row(row)
            if location is not None and (fp.location == "dns") != (location == "dns"):
                raise ValueError(f"location {fp.location!r} in the {location} file")
            if fp.pattern_type == "regexp":
                linear_pieces(fp.pattern)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"fingerprints line {line}: {exc}") from exc
        if fp.name in seen:
            raise ValueError(f"fingerprints line {line}: duplicate name {fp.name!r}")
        seen.add(fp.name)
        out.append(fp)
    return tuple(out)


def _row(row: dict[str, str]) -> Fingerprint:
    location, kind, pattern = row["location_found"], row["pattern_type"], row["pattern"]
    if not (location in ("body", "dns") or location.startswith("header.")):
        raise ValueError(f"unknown location {location!r}")
    if kind not in PATTERN_TYPES or not pattern:
        raise ValueError(f"bad pattern ({kind!r}, {pattern!r})")
    countries = tuple(c.strip() for c in row["expected_countries"].split(",") if c.strip())
    return Fingerprint(name=row["name"], scope=row["scope"], location=location.lower(),
                       pattern_type=kind, pattern=pattern,
                       confidence=int(row["confidence_no_fp"] or 0), countries=countries)


def linear_pieces(pattern: str) -> tuple[re.Pattern[str], ...]:
    """The regex as fixed-length pieces to find in order on one line; ValueError otherwise."""
    pieces = []
    for part in pattern.split(".*"):
        if part:
            pieces.append(re.compile(_fixed(part, pattern)))
    if not pieces:
        raise ValueError(f"regex {pattern!r} matches everything")
    return tuple(pieces)


def _fixed(part: str, whole: str) -> str:
    """A piece without repetition: literals, escaped punctuation and `.` (not a newline)."""
    out, i = [], 0
    while i < len(part):
        ch = part[i]
        if ch == "\\" and i + 1 < len(part) and not part[i + 1].isalnum():
            out.append(re.escape(part[i + 1]))
            i += 2
            continue
        if ch in _META or ch == "\\" or ch == "\n" or (ch == "{" and part[i + 1:i + 2].isdigit()):
            raise ValueError(f"regex {whole!r} is not linear pieces joined by '.*'")
        out.append("[^\n]" if ch == "." else re.escape(ch))
        i += 1
    return "".join(out)


def search_pieces(pieces: tuple[re.Pattern[str], ...], text: str) -> bool:
    """Whether one line holds every piece in order. Each line is scanned once per piece: the
    leftmost occurrence of a fixed-length piece leaves the most room for the rest."""
    pos = 0
    while pos <= len(text):
        first = pieces[0].search(text, pos)
        if first is None:
            return False
        line_end = text.find("\n", first.end())
        line_end = len(text) if line_end < 0 else line_end
        end = first.end()
        for piece in pieces[1:]:
            found = piece.search(text, end, line_end)
            if found is None:
                break
            end = found.end()
        else:
            return True
        pos = line_end + 1
    return False


class HttpIndex:
    """The HTTP fingerprints, indexed: body literals in one automaton, the rest by kind."""

    def __init__(self, fingerprints: Iterable[Fingerprint]) -> None:
        self.fingerprints = tuple(fingerprints)
        self._order = {fp.name: i for i, fp in enumerate(self.fingerprints)}
        self._literals: dict[str, list[Fingerprint]] = {}
        self._body_full: dict[str, list[Fingerprint]] = {}
        self._body_regex: list[tuple[tuple[re.Pattern[str], ...], Fingerprint]] = []
        self._body_prefix: list[Fingerprint] = []
        self._headers: dict[str, list[Fingerprint]] = {}
        for fp in self.fingerprints:
            self._add(fp)
        self._words = tuple(self._literals)
        # A contiguous NFA: ~5 MB and ~6 ms to build, ~0.5 ms per 64 KiB, linear in the page.
        # (The DFA scans 2.5x faster but holds ~59 MB: most of a run's peak memory.)
        self._automaton = ahocorasick_rs.AhoCorasick(
            self._words, matchkind=ahocorasick_rs.MatchKind.Standard,
            implementation=ahocorasick_rs.Implementation.ContiguousNFA) if self._words else None

    def _add(self, fp: Fingerprint) -> None:
        if fp.location.startswith("header."):
            self._headers.setdefault(fp.location.removeprefix("header."), []).append(fp)
        elif fp.pattern_type == "regexp":
            self._body_regex.append((linear_pieces(fp.pattern), fp))
        elif fp.pattern_type == "full":
            self._body_full.setdefault(fp.pattern, []).append(fp)
        elif fp.pattern_type == "prefix":  # none today; one startswith each is cheap
            self._body_prefix.append(fp)
        else:
            self._literals.setdefault(fp.pattern, []).append(fp)

    def matches(self, headers: Iterable[tuple[str, str]], body: str,
                status: int | None = None) -> tuple[Fingerprint, ...]:
        """Every fingerprint the response matches, in the file's order. A Location header
        counts only on a redirect (when the status is known): clients ignore it elsewhere."""
        found: dict[str, Fingerprint] = {}
        if self._automaton is not None:
            hit = {i for i, _start, _end in self._automaton.find_matches_as_indexes(
                body, overlapping=True)}
            found.update((fp.name, fp) for i in hit for fp in self._literals[self._words[i]])
        found.update((fp.name, fp) for fp in self._body_full.get(body, ()))
        found.update((fp.name, fp) for fp in self._body_prefix if body.startswith(fp.pattern))
        found.update((fp.name, fp) for pieces, fp in self._body_regex
                     if search_pieces(pieces, body))
        redirect = status is None or 300 <= status < 400
        for name, value in headers:
            if name.lower() == "location" and not redirect:
                continue
            for fp in self._headers.get(name.lower(), ()):
                if _value_matches(fp, value):
                    found[fp.name] = fp
        return tuple(sorted(found.values(), key=lambda fp: self._order[fp.name]))

    def blockpage(self, headers: Iterable[tuple[str, str]], body: str,
                  status: int | None = None) -> str | None:
        """The first censorship fingerprint matched, unless a known false positive matched."""
        hits = self.matches(headers, body, status)
        if any(fp.scope == FALSE_POSITIVE for fp in hits):
            return None
        return next((fp.name for fp in hits if fp.blocking), None)


def _value_matches(fp: Fingerprint, value: str) -> bool:
    if fp.pattern_type == "full":
        return value == fp.pattern
    if fp.pattern_type == "prefix":
        return value.startswith(fp.pattern)
    if fp.pattern_type == "contains":
        return fp.pattern in value
    return search_pieces(linear_pieces(fp.pattern), value)  # none today; cached by re


class DnsIndex:
    """The DNS fingerprints in a censorship scope: answer addresses (normalised) and names.
    The vague ones (`vbw`: 0.0.0.0, 127.0.0.1, 1.2.3.4) are left to the bogon rule."""

    def __init__(self, fingerprints: Iterable[Fingerprint]) -> None:
        self.fingerprints = tuple(fingerprints)
        self._by_answer: dict[str, Fingerprint] = {}
        for fp in self.fingerprints:
            if fp.pattern_type != "full":
                raise ValueError(f"{fp.name}: DNS fingerprints are exact answers")
            if fp.blocking:
                self._by_answer.setdefault(normal_answer(fp.pattern), fp)

    def match(self, answers: Iterable[str]) -> Fingerprint | None:
        """The fingerprint of the first answer (address or CNAME target) that is a known one."""
        for answer in answers:
            fp = self._by_answer.get(normal_answer(answer))
            if fp is not None:
                return fp
        return None


def normal_answer(value: str) -> str:
    """One spelling per address (`::ffff:0:1` vs `::ffff:0.0.0.1`) and per name."""
    try:
        return ipaddress.ip_address(value.strip()).compressed
    except ValueError:
        return value.strip().rstrip(".").lower()


def _read(name: str) -> str:
    # bytes, decoded as is: read_text would turn the `\r` inside some patterns into `\n`
    return importlib.resources.files("probe").joinpath(name).read_bytes().decode("utf-8")


@functools.cache
def http_index() -> HttpIndex:
    """The shipped HTTP fingerprints (parsed and indexed once per process)."""
    return HttpIndex(parse_csv(_read(HTTP_FILE), "http"))


@functools.cache
def dns_index() -> DnsIndex:
    """The shipped DNS fingerprints (parsed and indexed once per process)."""
    return DnsIndex(parse_csv(_read(DNS_FILE), "dns"))
