"""Blockpage fingerprints: loaded once from probe/data/blockpages.yaml, matched against a response
(then OONI's, see probe.measure.ooni_fingerprints).

The fingerprints are data (see the YAML file's header for the format); this module only parses
and checks them, and rejects a malformed file loudly instead of silently matching nothing.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from probe.measure import ooni_fingerprints

Headers = Mapping[str, str] | Iterable[tuple[str, str]]

_KEYS = frozenset(
    {"body_contains", "body_regex", "title_contains", "title_regex", "header", "status"}
)


@dataclass(frozen=True)
class Condition:
    """All checks that are set must hold."""

    body_contains: tuple[str, ...] = ()  # casefolded
    body_regex: re.Pattern[str] | None = None
    title_contains: str | None = None  # casefolded
    title_regex: re.Pattern[str] | None = None
    header_name: str | None = None  # lower case
    header_value: re.Pattern[str] | None = None
    status: frozenset[int] = frozenset()

    def holds(self, r: _Response) -> bool:
        return (
            (not self.status or r.status in self.status)
            and all(text in r.body_cf for text in self.body_contains)
            and (self.body_regex is None or bool(self.body_regex.search(r.body)))
            and (self.title_contains is None or self.title_contains in r.title.casefold())
            and (self.title_regex is None or bool(self.title_regex.search(r.title)))
            and (self.header_name is None or self._header_holds(r.headers))
        )

    def _header_holds(self, headers: list[tuple[str, str]]) -> bool:
        values = [v for k, v in headers if k.lower() == self.header_name]
        return any(self.header_value is None or self.header_value.search(v) for v in values)


@dataclass(frozen=True)
class _Response:
    status: int | None
    headers: list[tuple[str, str]]
    body: str
    body_cf: str  # casefolded once, for the *_contains checks
    title: str


@dataclass(frozen=True)
class Fingerprint:
    id: str
    description: str
    country: str
    when: tuple[Condition, ...]  # any of these


def match(status: int | None, headers: Headers, body_head: str, title: str | None) -> str | None:
    """The id of the first fingerprint the response matches, or None: ours first, then OONI's
    (probe.measure.ooni_fingerprints, ids such as `ooni.ru_3`)."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    response = _Response(status, pairs, body_head, body_head.casefold(), title or "")
    for fp in fingerprints():
        if any(c.holds(response) for c in fp.when):
            return fp.id
    return ooni_fingerprints.http_index().blockpage(pairs, body_head, status)


@functools.cache
def fingerprints() -> tuple[Fingerprint, ...]:
    """The shipped fingerprints (parsed once per process)."""
    text = importlib.resources.files("probe").joinpath("data/blockpages.yaml").read_text("utf-8")
    return parse(text)


def parse(text: str) -> tuple[Fingerprint, ...]:
    """Fingerprints from YAML text; ValueError naming the fingerprint when one is malformed."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("fingerprints"), list):
        raise ValueError("blockpages: expected a mapping with a 'fingerprints' list")
    out, seen = [], set()
    for raw in doc["fingerprints"]:
        fp = _fingerprint(raw)
        if fp.id in seen:
            raise ValueError(f"blockpages: duplicate id {fp.id!r}")
        seen.add(fp.id)
        out.append(fp)
    return tuple(out)


def _fingerprint(raw: Any) -> Fingerprint:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise ValueError(f"blockpages: fingerprint without an id: {raw!r}")
    when = raw.get("when")
    if not isinstance(when, list) or not when:
        raise ValueError(f"blockpages: {raw['id']}: 'when' must be a non-empty list")
    try:
        conditions = tuple(_condition(c) for c in when)
    except (ValueError, TypeError, re.error) as exc:
        raise ValueError(f"blockpages: {raw['id']}: {exc}") from exc
    return Fingerprint(
        id=raw["id"],
        description=str(raw.get("description", "")),
        country=str(raw.get("country", "ZZ")),
        when=conditions,
    )


def _condition(raw: Any) -> Condition:
    if not isinstance(raw, dict) or not raw:
        raise ValueError("each 'when' entry must be a non-empty mapping")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    contains = raw.get("body_contains", ())
    contains = (contains,) if isinstance(contains, str) else tuple(contains)
    header = raw.get("header") or {}
    if header and not isinstance(header.get("name"), str):
        raise ValueError("header needs a name")
    return Condition(
        body_contains=tuple(str(t).casefold() for t in contains),
        body_regex=_regex(raw.get("body_regex")),
        title_contains=str(raw["title_contains"]).casefold() if "title_contains" in raw else None,
        title_regex=_regex(raw.get("title_regex")),
        header_name=header["name"].lower() if header else None,
        header_value=_regex(header.get("value")),
        status=frozenset(int(s) for s in raw.get("status", ())),
    )


def _regex(pattern: Any) -> re.Pattern[str] | None:
    return None if pattern is None else re.compile(str(pattern))
