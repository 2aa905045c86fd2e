"""Prometheus metrics built from finished TargetMeasurements, never from inside measuring code.

The caller (the daemon, or a one-shot export) keeps the records and hands the collector an
immutable `Snapshot`; `ResultsCollector.collect()` turns it into metric families on each scrape.
Every name starts with `censorprobe_` (blackbox_exporter owns `probe_*`), values are in base units,
and every label value comes from a bounded set: target domains from the target list, verdicts,
blocking methods, failure strings of `probe.failures.FAILURES`, phase names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from probe import __version__
from probe.failures import FAILURES, UNKNOWN
from probe.model import Evidence, TargetMeasurement, ThrottleEstimate, Vantage

PREFIX = "censorprobe_"
VERDICTS = ("accessible", "blocked", "throttled", "degraded", "down", "inconclusive")
BLOCKING_METHODS = ("dns", "tcp", "tls", "http")
PHASES = ("dns", "connect", "tls", "first_byte")
TARGET_LABELS = ("target", "category", "vantage", "asn", "cc")
VANTAGE_LABELS = ("vantage", "asn", "cc")


@dataclass(frozen=True)
class RunStats:
    """What the scheduler knows about its runs (not about targets)."""

    runs: int = 0  # runs that completed
    failures: int = 0  # runs that raised or timed out
    last_run_end: float | None = None  # UNIX seconds, last completed run
    last_run_duration: float | None = None
    interval: float | None = None  # seconds between runs, as configured
    vantage_up: bool | None = None  # the last run's vantage check: network usable (None: unknown)


@dataclass(frozen=True)
class Snapshot:
    vantage: Vantage
    measurements: tuple[TargetMeasurement, ...] = ()  # the latest one per target
    runs: RunStats = field(default_factory=RunStats)


def snapshot_of_run(
    measurements: Sequence[TargetMeasurement], vantage: Vantage, interval: float | None = None
) -> Snapshot:
    """A snapshot for a one-shot run (push / textfile): one completed run of these records."""
    if not measurements:
        return Snapshot(vantage, (), RunStats(runs=1, interval=interval))
    start = min(m.start_time for m in measurements)
    end = max(m.start_time + m.runtime for m in measurements)
    stats = RunStats(runs=1, last_run_end=end, last_run_duration=end - start, interval=interval)
    return Snapshot(vantage, tuple(latest_per_target(measurements)), stats)


def latest_per_target(measurements: Iterable[TargetMeasurement]) -> list[TargetMeasurement]:
    latest: dict[str, TargetMeasurement] = {}
    for m in measurements:
        seen = latest.get(m.target.domain)
        if seen is None or m.start_time >= seen.start_time:
            latest[m.target.domain] = m
    return [latest[k] for k in sorted(latest)]


# --- reading values out of a record ----------------------------------------------------------


def verdict_of(m: TargetMeasurement) -> str:
    v = m.verdict.verdict if m.verdict else "inconclusive"
    return v if v in VERDICTS else "inconclusive"


def failure_of(m: TargetMeasurement) -> tuple[str, str] | None:
    """(failure, operation) that decided the verdict; operation is looked up in the evidence."""
    if m.verdict is None or m.verdict.failure is None:
        return None
    failure = m.verdict.failure if m.verdict.failure in FAILURES else UNKNOWN
    return failure, _operation_of(m.probe, m.verdict.failure)


def _operation_of(ev: Evidence, failure: str) -> str:
    for obs in (*ev.dns, *ev.tcp, *ev.tls, *ev.http, *ev.throughput):
        if obs.failure == failure and obs.operation:
            return obs.operation
    return "unknown"


def phase_durations(ev: Evidence) -> dict[str, float]:
    """Seconds per phase from the first successful observation of each kind."""
    out: dict[str, float] = {}
    dns = next((d for d in ev.dns if d.failure is None), None)
    if dns is not None:
        out["dns"] = dns.elapsed
    tcp = next((t for t in ev.tcp if t.failure is None), None)
    if tcp is not None:
        out["connect"] = tcp.elapsed
    tls = next((t for t in ev.tls if t.failure is None), None)
    if tls is not None:
        out["tls"] = tls.elapsed - (tls.connect_time or 0.0)
        if tls.connect_time is not None:
            out.setdefault("connect", tls.connect_time)
    http = next((h for h in ev.http if h.timings.first_byte is not None), None)
    if http is not None:
        t = http.timings  # moments since the request started: turn them into durations
        if t.connect is not None:
            out.setdefault("connect", t.connect)
        if t.tls is not None:
            out.setdefault("tls", t.tls - (t.connect or 0.0))
        out["first_byte"] = t.first_byte - (t.tls or t.connect or 0.0)
    return {k: max(v, 0.0) for k, v in out.items()}


def throughput_bytes_per_second(m: TargetMeasurement) -> tuple[float | None, float | None]:
    """(target, control) rates in bytes/s: the throttle estimate first, else raw evidence."""
    est: ThrottleEstimate | None = m.verdict.throttling if m.verdict else None
    if est is not None and (est.rate_bps is not None or est.control_rate_bps is not None):
        return _bytes(est.rate_bps), _bytes(est.control_rate_bps)
    return _bytes(_rate(m.probe)), _bytes(_rate(m.control))


def _rate(ev: Evidence) -> float | None:
    for t in ev.throughput:
        if t.failure is None and (t.steady_bps or t.goodput_bps):
            return t.steady_bps or t.goodput_bps
    return None


def _bytes(bits_per_second: float | None) -> float | None:
    return None if bits_per_second is None else bits_per_second / 8.0


# --- the collector ---------------------------------------------------------------------------


class ResultsCollector(Collector):
    """Collects from `source()` at scrape time; `source` must return an immutable Snapshot."""

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        snap = self._source()
        yield from vantage_families(snap)
        yield from target_families(snap)


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))


def vantage_families(snap: Snapshot) -> list[Metric]:
    v = snap.vantage
    key = [v.name, v.asn, v.cc]
    info = _gauge("vantage_info", "The vantage point and software version.",
                  [*VANTAGE_LABELS, "network_name", "version"])
    info.add_metric([*key, v.network_name, __version__], 1.0)
    runs = CounterMetricFamily(PREFIX + "runs", "Measurement runs completed.", labels=VANTAGE_LABELS)
    runs.add_metric(key, snap.runs.runs)
    failed = CounterMetricFamily(PREFIX + "run_failures", "Measurement runs that failed.",
                                 labels=VANTAGE_LABELS)
    failed.add_metric(key, snap.runs.failures)
    out: list[Metric] = [info, runs, failed]
    for name, doc, value in (
        ("last_run_timestamp_seconds", "End of the last completed run.", snap.runs.last_run_end),
        ("run_duration_seconds", "Duration of the last completed run.", snap.runs.last_run_duration),
        ("run_interval_seconds", "Configured time between runs.", snap.runs.interval),
        ("vantage_up", "1 when the last run found this vantage on the network, 0 when offline "
         "(nothing measured): tells an offline vantage from blocked targets.",
         None if snap.runs.vantage_up is None else float(snap.runs.vantage_up)),
    ):
        if value is not None:
            g = _gauge(name, doc, VANTAGE_LABELS)
            g.add_metric(key, value)
            out.append(g)
    return out


def target_families(snap: Snapshot) -> list[Metric]:
    f = {
        "verdict": _gauge("target_verdict", "1 for the current verdict, 0 for the others.",
                          [*TARGET_LABELS, "verdict"]),
        "blocking": _gauge("target_blocking", "1 for the blocking method seen, 0 for the others.",
                           [*TARGET_LABELS, "method"]),
        "failure": _gauge("target_failure", "1 for the failure that decided the verdict.",
                          [*TARGET_LABELS, "failure", "operation"]),
        "phase": _gauge("target_phase_duration_seconds", "Duration of a phase of the last fetch.",
                        [*TARGET_LABELS, "phase"]),
        "rate": _gauge("target_throughput_bytes_per_second",
                       "Download rate to the target (path=target) and to its control.",
                       [*TARGET_LABELS, "path"]),
        "ratio": _gauge("target_throughput_ratio", "Target rate over control rate, clamped to 0-1.",
                        TARGET_LABELS),
        "confidence": _gauge("target_throttling_confidence", "Confidence of the throttling estimate.",
                             TARGET_LABELS),
        "last": _gauge("target_last_measurement_timestamp_seconds", "End of the last measurement.",
                       TARGET_LABELS),
        "runtime": _gauge("target_measurement_duration_seconds", "Duration of the last measurement.",
                          TARGET_LABELS),
        "hop": _gauge("target_censor_hop", "The TTL at which the target's censor reacted "
                      "(probe locate); absent when not located.", TARGET_LABELS),
    }
    for m in snap.measurements:
        _add_target(f, m, snap.vantage)
    return list(f.values())


def _add_target(f: dict[str, GaugeMetricFamily], m: TargetMeasurement, v: Vantage) -> None:
    key = [m.target.domain, m.target.category, v.name, v.asn, v.cc]
    verdict = verdict_of(m)
    for name in VERDICTS:
        f["verdict"].add_metric([*key, name], float(name == verdict))
    method = m.verdict.blocking if m.verdict and verdict == "blocked" else None
    for name in BLOCKING_METHODS:
        f["blocking"].add_metric([*key, name], float(name == method))
    failure = failure_of(m)
    if failure is not None:
        f["failure"].add_metric([*key, *failure], 1.0)
    for phase, seconds in phase_durations(m.probe).items():
        f["phase"].add_metric([*key, phase], seconds)
    target_rate, control_rate = throughput_bytes_per_second(m)
    for path, rate in (("target", target_rate), ("control", control_rate)):
        if rate is not None:
            f["rate"].add_metric([*key, path], rate)
    est = m.verdict.throttling if m.verdict else None
    if est is not None and est.ratio is not None:
        f["ratio"].add_metric(key, min(max(est.ratio, 0.0), 1.0))  # >1 (faster) means "not slower"
    if est is not None and est.confidence is not None:
        f["confidence"].add_metric(key, est.confidence)
    f["last"].add_metric(key, m.start_time + m.runtime)
    f["runtime"].add_metric(key, m.runtime)
    if m.middlebox is not None and m.middlebox.hop is not None:  # no router address: unbounded
        f["hop"].add_metric(key, float(m.middlebox.hop))
