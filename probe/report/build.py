"""Stored records -> the report model (pure: no files, no plots)."""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from probe.model import TargetMeasurement, ThroughputResult
from probe.report.evidence import block
from probe.report.gather import Stored
from probe.report.model import VERDICTS, Flow, Point, Report, Row, Throttle, Timeline

DETAILED = ("throttled", "degraded")  # verdicts that get a plot of their flows


def _anchor(domain: str, index: int) -> str:
    return f"t{index}-" + re.sub(r"[^a-z0-9]+", "-", domain.lower()).strip("-")


def _vantage(record: dict[str, Any]) -> str:
    name = record.get("annotations", {}).get("vantage") or "unnamed"
    parts = [record.get("probe_asn") or "AS?", record.get("probe_cc") or "ZZ"]
    if record.get("probe_network_name"):
        parts.append(record["probe_network_name"])
    return f"{name} ({', '.join(parts)})"


def _middlebox(record: dict[str, Any]) -> dict[str, Any] | None:
    found = record.get("test_keys", {}).get("middlebox")
    return found if isinstance(found, dict) else None


def _row(s: Stored, anchor: str) -> Row:
    m, v = s.measurement, s.measurement.verdict
    assert v is not None
    t = v.throttling
    hop = (_middlebox(s.record) or {}).get("hop")
    return Row(domain=m.target.domain, url=m.target.url or s.record.get("input", ""),
               category=m.target.category, verdict=v.verdict, blocking=v.blocking,
               failure=v.failure, reason=v.reason, rule=v.rule,
               time=s.record.get("measurement_start_time", ""), vantage=_vantage(s.record),
               rate_bps=t.rate_bps if t else None,
               control_rate_bps=t.control_rate_bps if t else None,
               ratio=t.ratio if t else None, hop=hop if isinstance(hop, int) else None,
               anchor=anchor)


def _side(flow: ThroughputResult, m: TargetMeasurement) -> str:
    """SNI-swap flows differ by SNI (the target's host is the target side); direct flows by
    URL (the target's own object against the control object)."""
    t = m.target
    if flow.url == t.throughput_url:
        return "target"
    if flow.url == t.control_throughput_url:
        return "control"
    host = (urlsplit(t.url).hostname or t.domain).lower()
    return "target" if (flow.sni or "").lower() in (host, t.domain.lower()) else "control"


def _flows(m: TargetMeasurement) -> tuple[Flow, ...]:
    return tuple(Flow(side=_side(f, m), sni=f.sni, start=f.t0, samples=f.samples,
                      bytes_received=f.bytes_received, goodput_bps=f.goodput_bps,
                      steady_bps=f.steady_bps, failure=f.failure)
                 for f in sorted(m.probe.throughput, key=lambda f: f.t0))


def _median_goodput(flows: Sequence[Flow], side: str) -> float | None:
    rates = [g for f in flows if f.side == side and (g := f.average_bps()) is not None]
    return statistics.median(rates) if rates else None


def _throttle(m: TargetMeasurement, anchor: str) -> Throttle:
    v = m.verdict
    assert v is not None and v.throttling is not None
    t = v.throttling
    flows = _flows(m)
    return Throttle(domain=m.target.domain, anchor=anchor, verdict=v.verdict, reason=v.reason,
                    state=t.state, method=t.method, rate_bps=t.rate_bps,
                    control_rate_bps=t.control_rate_bps, ratio=t.ratio, p_value=t.p_value,
                    confidence=t.confidence, bytes_used=t.bytes_used, samples=t.samples,
                    flows=flows, target_goodput_bps=_median_goodput(flows, "target"),
                    control_goodput_bps=_median_goodput(flows, "control"))


def _latest_per_target(stored: Sequence[Stored]) -> list[Stored]:
    latest: dict[tuple[str, str], Stored] = {}
    for s in stored:  # oldest first: the last one seen wins
        latest[(s.record.get("input", ""), _vantage(s.record))] = s
    return list(latest.values())


def _label(url: str) -> str:
    """The host for the usual https://host/, else the whole URL (one host, several URLs)."""
    host = urlsplit(url).hostname or url
    return host if url == f"https://{host}/" else url


def _timelines(stored: Sequence[Stored]) -> tuple[Timeline, ...]:
    """A line per URL and vantage (the vantage named only when there are several)."""
    points: dict[tuple[str, str], list[Point]] = {}
    for s in stored:
        v = s.measurement.verdict
        assert v is not None
        points.setdefault((s.record.get("input", ""), _vantage(s.record)), []).append(
            Point(s.record.get("measurement_start_time", ""), v.verdict, s.record["report_id"]))
    several = len({vantage for _, vantage in points}) > 1
    lines = [Timeline(_label(url) + (f" @ {vantage.split(' (')[0]}" if several else ""),
                      tuple(p)) for (url, vantage), p in points.items()]
    return tuple(sorted(lines, key=lambda line: (not line.changed, line.target)))


def _order(s: Stored) -> tuple[int, str]:
    v = s.measurement.verdict
    assert v is not None
    rank = VERDICTS.index(v.verdict) if v.verdict in VERDICTS else len(VERDICTS)
    return rank, s.measurement.target.domain


def build(stored: Sequence[Stored], scope: str, timeline: bool = False) -> Report:
    """The report over `stored` (oldest first); `timeline`: several runs, one row per target
    (its latest verdict) and a timeline per target."""
    stored = [s for s in stored if s.measurement.verdict is not None]
    shown = sorted(_latest_per_target(stored) if timeline else stored, key=_order)
    rows, throttles, blocks = [], [], []
    for i, s in enumerate(shown):
        m, v = s.measurement, s.measurement.verdict
        assert v is not None
        detailed = v.verdict == "blocked" or (v.verdict in DETAILED and v.throttling is not None)
        anchor = _anchor(m.target.domain, i) if detailed else ""
        rows.append(_row(s, anchor))
        if v.verdict == "blocked":
            blocks.append(block(m, anchor, _middlebox(s.record)))
        elif detailed:
            throttles.append(_throttle(m, anchor))
    counts = Counter(r.verdict for r in rows)
    runs = tuple(dict.fromkeys(s.record["report_id"] for s in stored))
    times = [s.record.get("measurement_start_time", "") for s in stored]
    return Report(
        title="Blocking and throttling report", scope=scope,
        generated=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        vantages=tuple(sorted({_vantage(s.record) for s in stored})),
        start=min(times, default=""), end=max(times, default=""), runs=runs,
        measurements=len(stored), counts={v: counts.get(v, 0) for v in VERDICTS},
        rows=tuple(rows), throttles=tuple(throttles), blocks=tuple(blocks),
        timelines=_timelines(stored) if timeline else (),
    )
