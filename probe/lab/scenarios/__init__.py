"""Scenarios as data: probe/lab/scenarios/<name>.yaml, each with a description, the censor's rules
(see censor.py; rates, names and timings are parameters, so they can be swept) and, per target,
the verdicts the probe is expected to reach.

    name: tls_rst
    description: ...
    rules:
      - {action: tls_rst, sni: [navalny.com]}
    targets:
      - {domain: navalny.com, expect: blocked, blocking: tls}
      - {domain: www.example.com, expect: accessible}
      - {url: "http://navalny.com/", expect: [degraded, accessible]}   # any of these
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from probe.lab import censor

SCENARIO_DIR = Path(__file__).parent  # the YAML files sit beside this module


@dataclass(frozen=True)
class Expectation:
    url: str
    verdicts: tuple[str, ...]  # any of these is right
    blocking: str | None = None  # checked only when the verdict is "blocked"
    throughput_url: str | None = None
    media: bool = False  # listed as a media/CDN host: the full throttling A/B, not the screen

    @property
    def domain(self) -> str:
        return urlsplit(self.url).hostname or ""

    def met_by(self, verdict: str | None, blocking: str | None) -> bool:
        if verdict not in self.verdicts:
            return False
        return verdict != "blocked" or self.blocking is None or blocking == self.blocking

    def describe(self) -> str:
        text = "|".join(self.verdicts)
        return f"{text} ({self.blocking})" if self.blocking else text


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    rules: tuple[dict[str, Any], ...] = ()
    targets: tuple[Expectation, ...] = field(default_factory=tuple)
    censor_hop: int | None = None  # a longer path, the censor at this TTL (lab/topology.py)


def _expectation(entry: dict[str, Any], where: str) -> Expectation:
    url = entry.get("url") or f"https://{entry['domain']}/"
    expect = entry.get("expect")
    if not expect:
        raise ValueError(f"{where}: target {url} has no 'expect'")
    verdicts = (expect,) if isinstance(expect, str) else tuple(expect)
    return Expectation(url=url, verdicts=verdicts, blocking=entry.get("blocking"),
                       throughput_url=entry.get("throughput_url"),
                       media=bool(entry.get("media", False)))


def parse(data: dict[str, Any], where: str = "<scenario>") -> Scenario:
    """A Scenario from its YAML data; rules are checked by building their plan."""
    try:
        rules = tuple(data.get("rules") or ())
        censor.plan(list(rules))
        targets = tuple(_expectation(e, where) for e in data["targets"])
        hop = data.get("censor_hop")
        if hop is not None and (not isinstance(hop, int) or isinstance(hop, bool)
                                or not 1 <= hop <= 8):
            raise ValueError(f"censor_hop must be an integer from 1 to 8, not {hop!r}")
        return Scenario(name=data["name"], description=data["description"].strip(),
                        rules=rules, targets=targets, censor_hop=hop)
    except KeyError as exc:
        raise ValueError(f"{where}: missing {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def load(name_or_path: str) -> Scenario:
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ValueError(f"no scenario {name_or_path!r} (known: {', '.join(names())})")
    return parse(yaml.safe_load(path.read_text()), str(path))


def names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def all_scenarios() -> list[Scenario]:
    return [load(n) for n in names()]


CONTROL = "www.example.com"


def targets_yaml(scenario: Scenario) -> str:
    """The scenario's targets as a probe target list (YAML), the probe's `--targets` input.

    Each HTTPS target names its origin's large object as throughput URL, and a control domain
    the scenario leaves alone, so throttling can be judged directly and by SNI swap.
    """
    entries = []
    for target in scenario.targets:
        entry = {"domain": target.domain, "url": target.url,
                 "control": "example.org" if target.domain == CONTROL else CONTROL}
        throughput = target.throughput_url or f"https://{target.domain}/media/big.bin"
        if target.url.startswith("https://"):
            entry["throughput_url"] = throughput
            entry["control_throughput_url"] = f"https://{entry['control']}/media/big.bin"
        if target.media:
            entry["media"] = True
        entries.append(entry)
    document = {"description": f"probe-lab scenario {scenario.name}", "category": "MISC",
                "targets": entries}
    return yaml.safe_dump(document, sort_keys=False)
