"""The report as plain data: what every renderer (HTML, Markdown, JSON) draws from.

Built by `gather` from stored records; holds no measurement objects, only what a reader sees,
so the JSON format is this model as it is and the renderers need no knowledge of the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# the order verdicts are listed in, worst first (counts, sorting, colours)
VERDICTS = ("blocked", "throttled", "degraded", "down", "inconclusive", "accessible")


@dataclass(frozen=True)
class Row:
    """One target's verdict in the table (with `--since`: its latest)."""

    domain: str
    url: str
    category: str
    verdict: str
    blocking: str | None
    failure: str | None
    reason: str
    rule: str
    time: str  # "YYYY-MM-DD hh:mm:ss" UTC
    vantage: str
    rate_bps: float | None = None
    control_rate_bps: float | None = None
    ratio: float | None = None
    hop: int | None = None  # the middlebox's hop, where a record names it
    anchor: str = ""  # id of the target's detail section, if it has one


@dataclass(frozen=True)
class Flow:
    """One throughput flow: (seconds since its first byte, cumulative bytes) samples."""

    side: str  # target | control
    sni: str | None
    start: float  # seconds since the target's measurement began
    samples: tuple[tuple[float, int], ...]
    bytes_received: int
    goodput_bps: float | None
    steady_bps: float | None
    failure: str | None

    def average_bps(self) -> float | None:
        """The average rate over the whole transfer (bit/s)."""
        if self.goodput_bps:
            return self.goodput_bps
        last = self.samples[-1][0] if self.samples else 0.0
        return self.bytes_received * 8 / last if last > 0 else None


@dataclass(frozen=True)
class Throttle:
    """A throttled or degraded target: the figures behind the verdict and its flows."""

    domain: str
    anchor: str
    verdict: str
    reason: str
    state: str
    method: str
    rate_bps: float | None
    control_rate_bps: float | None
    ratio: float | None
    p_value: float | None
    confidence: float | None
    bytes_used: int
    samples: int
    flows: tuple[Flow, ...]
    target_goodput_bps: float | None = None  # median over the side's flows, whole transfers
    control_goodput_bps: float | None = None
    plot: str = ""  # inline SVG, filled in by the HTML renderer only


@dataclass(frozen=True)
class Step:
    """One step of a blocked target's evidence: what this network saw against the control."""

    step: str  # DNS | TCP connect | TLS handshake | HTTP | decisive failure | middlebox
    probe: tuple[str, ...]  # lines, this network
    control: tuple[str, ...]  # lines, the control's view
    failed: bool  # did this step fail here?


@dataclass(frozen=True)
class Block:
    domain: str
    anchor: str
    blocking: str | None
    failure: str | None
    operation: str | None
    reason: str
    rule: str
    control_source: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Point:
    time: str
    verdict: str
    report_id: str


@dataclass(frozen=True)
class Timeline:
    target: str  # the host, or the URL when it is not https://host/
    points: tuple[Point, ...]  # oldest first

    @property
    def changed(self) -> bool:
        return len({p.verdict for p in self.points}) > 1


@dataclass(frozen=True)
class Report:
    title: str
    scope: str  # "report <id>" or "since <date>"
    generated: str
    vantages: tuple[str, ...]  # "name (AS0, ZZ, network)"
    start: str
    end: str
    runs: tuple[str, ...]  # report ids, oldest first
    measurements: int
    counts: dict[str, int]  # verdict -> targets, every verdict listed
    rows: tuple[Row, ...]
    throttles: tuple[Throttle, ...]
    blocks: tuple[Block, ...]
    timelines: tuple[Timeline, ...] = ()  # with --since only

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for throttle in data["throttles"]:
            del throttle["plot"]
        return data
