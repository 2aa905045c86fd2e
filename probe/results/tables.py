"""What a person or a program reads of a run: JSON lines, verdict tables, a target's trace."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from probe import jsontext
from probe.model import TargetMeasurement
from probe.results.ooni import probe_blocking

if TYPE_CHECKING:  # rich is loaded by the tables only: a `--json` run prints none (~60 ms)
    from rich.console import Console
    from rich.table import Table

_STYLE = {
    "accessible": "green",
    "blocked": "bold red",
    "throttled": "bold yellow",
    "degraded": "yellow",
    "down": "magenta",
    "inconclusive": "dim",
}


def json_line(record: Mapping[str, Any]) -> str:
    """One stored OONI-format record as the one-line summary `probe run --json` prints."""
    keys = record["test_keys"]
    summary = {
        "input": record["input"],
        "verdict": keys.get("verdict"),
        "blocking": probe_blocking(keys),
        "failure": keys.get("failure"),
        "throttling": keys.get("throttling"),
        "middlebox": keys.get("middlebox"),
        "injected": keys.get("injected"),
        "measurement_start_time": record.get("measurement_start_time"),
        "report_id": record.get("report_id"),
        "test_keys": keys,
    }
    return jsontext.dumps(summary)


def _rate(bps: float | None) -> str:
    if bps is None:
        return ""
    return f"{bps / 1e6:.1f} Mbit/s" if bps >= 1e6 else f"{bps / 1e3:.0f} kbit/s"


def _table(title: str, **options: Any) -> Table:
    from rich.table import Table

    return Table(title=title, **options)


def verdict_table(measurements: Iterable[TargetMeasurement]) -> Table:
    table = _table("Verdicts", show_lines=False)
    for column in ("target", "category", "verdict", "blocking", "failure", "rate / control",
                   "why"):
        table.add_column(column)
    for m in sorted(measurements, key=lambda m: (m.target.category, m.target.domain)):
        v = m.verdict
        if v is None:
            continue
        t = v.throttling
        rate = f"{_rate(t.rate_bps)} / {_rate(t.control_rate_bps)}" if t and t.rate_bps else ""
        if t and t.state == "not_measured":
            rate = "not measured"
        elif t and t.state == "bounded" and t.excluded_below_bps:  # say what was ruled out
            rate = f"no policing < {_rate(t.excluded_below_bps)}"
        style = _STYLE.get(v.verdict, "")
        table.add_row(
            m.target.domain, m.target.category, f"[{style}]{v.verdict}[/]",
            v.blocking or "", v.failure or "", rate, where(m) + v.reason,
        )
    return table


def where(m: TargetMeasurement) -> str:
    """The table's short note on the censor's place: "at hop 3 (injected): "."""
    if m.middlebox is None or m.middlebox.hop is None:
        return ""
    forged = {True: " (injected)", False: " (not injected)"}.get(
        m.injection.injected if m.injection else None, "")
    return f"at hop {m.middlebox.hop}{forged}: "


def runs_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """Store.runs() rows: one line per run with its counts by verdict."""
    table = _table("Runs")
    verdicts = ("accessible", "blocked", "throttled", "degraded", "down", "inconclusive")
    for column in ("report_id", "vantage", "start (UTC)", "targets", *verdicts):
        table.add_column(column)
    for row in rows:
        counts = row.get("counts", {})
        start = datetime.fromtimestamp(row["start_time"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(row["report_id"], row.get("vantage") or "", start, str(row["targets"]),
                      *(str(counts.get(v, 0)) for v in verdicts))
    return table


def latest_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """Store.latest() rows: the verdicts of one run."""
    table = _table("Verdicts")
    for column in ("domain", "category", "verdict", "blocking", "failure", "rate / control",
                   "ratio"):
        table.add_column(column)
    for row in rows:
        rate = f"{_rate(row.get('rate_bps'))} / {_rate(row.get('control_rate_bps'))}"
        ratio = "" if row.get("ratio") is None else f"{row['ratio']:.2g}"
        table.add_row(row["domain"], row.get("category") or "", row["verdict"],
                      row.get("blocking") or "", row.get("failure") or "",
                      rate if row.get("rate_bps") else "", ratio)
    return table


def _outcome(failure: str | None, ok: str) -> str:
    return f"[red]{failure}[/]" if failure else f"[green]{ok}[/]"


def trace(m: TargetMeasurement, console: Console) -> None:
    """Every observation for one target, in the order it was made, then the verdict."""
    for side, evidence in (("probe", m.probe), ("control", m.control)):
        console.rule(f"{side} ({m.control_source if side == 'control' else 'this network'})")
        for q in evidence.dns:
            answers = " | ".join(",".join(r.addresses) or r.rcode for r in q.responses)
            console.print(f"{q.t0:7.3f}s dns  {q.resolver:<28} {_outcome(q.failure, q.rcode or '')}"
                          f" {','.join(q.addresses)}" + (f"  [yellow]answers: {answers}[/]"
                                                         if len(q.responses) > 1 else ""))
        for c in evidence.tcp:
            console.print(f"{c.t0:7.3f}s tcp  {c.address}:{c.port:<22} "
                          f"{_outcome(c.failure, f'connected in {c.elapsed * 1000:.0f} ms')}")
        for h in evidence.tls:
            ok = f"{h.tls_version} valid={h.cert_valid_for_name}"
            console.print(f"{h.t0:7.3f}s tls  {h.address} sni={h.sni!s:<24} {_outcome(h.failure, ok)}")
        for r in evidence.http:
            ok = f"{r.status} {r.title or ''} {r.body_length} B" + (
                f" [red]blockpage={r.blockpage}[/]" if r.blockpage else "")
            console.print(f"{r.t0:7.3f}s http {r.url:<34} {_outcome(r.failure, ok)}")
        for f in evidence.throughput:
            ok = f"{_rate(f.steady_bps or f.goodput_bps)} {f.bytes_received} B"
            console.print(f"{f.t0:7.3f}s flow sni={f.sni!s:<29} {_outcome(f.failure, ok)}")
    v = m.verdict
    if v is not None:
        console.rule("verdict")
        style = _STYLE.get(v.verdict, "")
        console.print(f"[{style}]{v.verdict}[/] {v.blocking or ''}  rule={v.rule}  {v.reason}")
        if v.throttling:
            t = v.throttling
            console.print(f"  {t.method}: {_rate(t.rate_bps)} vs control {_rate(t.control_rate_bps)},"
                          f" ratio {t.ratio}, p={t.p_value}, confidence {t.confidence}")
