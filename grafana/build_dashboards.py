"""Builds grafana/dashboards/*.json with grafana-foundation-sdk (typed builders, Grafana 11.6 line).

Run `python grafana/build_dashboards.py` after editing (the SDK comes with the `test` extra);
tests/test_dashboards.py fails when the JSON files are out of date, and runs every panel's PromQL
against a real Prometheus.

Portable: every panel, query and variable uses the datasource variable `$datasource`, never a uid.
Provisioned, that variable picks the Prometheus named in grafana/provisioning/ (which alone names
its uid); imported through Grafana's "Import", `__inputs` asks for a Prometheus and its uid
replaces `${DS_PROMETHEUS}`, the variable's initial value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    GridPos,
    Panel,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

GRAFANA_VERSION = "11.6.0"  # the SDK's line, pinned in pyproject.toml; compose.yaml runs 11.6
OUT = Path(__file__).resolve().parent / "dashboards"
DS_INPUT = "DS_PROMETHEUS"  # Grafana's import replaces ${DS_PROMETHEUS} with the chosen uid
PROVISIONED_NAME = "Prometheus"  # grafana/provisioning/datasources/prometheus.yml
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'vantage=~"$vantage", asn=~"$asn"'  # per-vantage series
TSEL = f'target=~"$target", {SEL}'  # per-target series
BY_VANTAGE = "max by (vantage, asn, cc)"  # one row per vantage point, the same keys in every query

Pos = tuple[int, int, int, int]  # (x, y, w, h) on Grafana's 24-column grid


# --- variables: datasource -> asn -> vantage -> target, each filtered by the ones before -----


def variables() -> list[Builder[Any]]:
    # Grafana keeps a current value that matches an option's uid, else one whose name matches
    # the text: imported, the uid of the chosen Prometheus; provisioned, the one named so.
    ds = (dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
          .current(VariableOption(text=PROVISIONED_NAME, value=f"${{{DS_INPUT}}}")))
    return [ds,
            label_values("asn", "censorprobe_vantage_info"),
            label_values("vantage", 'censorprobe_vantage_info{asn=~"$asn"}'),
            label_values("target", f"censorprobe_target_verdict{{{SEL}}}")]


def label_values(name: str, series: str) -> dash.QueryVariable:
    """A multi-value variable over a label of `series`; All sends `.*` (a regex, like values)."""
    return (dash.QueryVariable(name).label(name).datasource(DS)
            .query({"query": f"label_values({series}, {name})", "refId": f"var-{name}"})
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(VariableOption(selected=True, text=["All"], value=["$__all"])))


# --- panels ----------------------------------------------------------------------------------


def query(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)
    return q.instant().format(PromQueryFormat.TABLE) if instant else q.range()


def place(panel: Any, title: str, pos: Pos, unit: str = "short") -> Any:
    x, y, w, h = pos
    return panel.title(title).datasource(DS).grid_pos(GridPos(x=x, y=y, w=w, h=h)).unit(unit)


def stat_of(title: str, expr: str, pos: Pos) -> stat.Panel:
    return place(stat.Panel(), title, pos).with_target(query(expr))


def series(title: str, expr: str, legend: str, pos: Pos, unit: str = "short") -> timeseries.Panel:
    return place(timeseries.Panel(), title, pos, unit).with_target(query(expr, legend))


def table_of(title: str, exprs: dict[str, str], pos: Pos, hide: tuple[str, ...] = ()) -> table.Panel:
    """Instant queries as one table; `exprs` maps a column name to its PromQL. Several queries
    are merged on their labels, so each must return the same label set."""
    panel = place(table.Panel(), title, pos)
    for i, expr in enumerate(exprs.values()):
        panel = panel.with_target(query(expr, ref=chr(ord("A") + i), instant=True))
    values = ["Value"] if len(exprs) == 1 else [f"Value #{chr(ord('A') + i)}" for i in range(len(exprs))]
    if len(exprs) > 1:
        panel = panel.with_transformation(DataTransformerConfig(id_val="merge", options={}))
    hidden = ["Time", "__name__", "job", "instance", *hide]
    return panel.with_transformation(DataTransformerConfig(id_val="organize", options={
        "excludeByName": {k: True for k in hidden},
        "renameByName": {v: k for v, k in zip(values, exprs, strict=True) if k not in hide}}))


def cells(panel: table.Panel, column: str, *properties: tuple[str, Any]) -> table.Panel:
    return panel.override_by_name(column, [DynamicConfigValue(id_val=k, value=v) for k, v in properties])


COLOR_CELL = ("custom.cellOptions", {"type": "color-background"})


def vantage_health(pos: Pos) -> table.Panel:
    """Offline (nothing measured) apart from silent (no run at all) apart from failing runs."""
    age = f"time() - censorprobe_last_run_timestamp_seconds{{{SEL}}}"
    panel = table_of("Vantage health", {
        "network": f"{BY_VANTAGE} (censorprobe_vantage_up{{{SEL}}})",
        "last run age": f"{BY_VANTAGE} ({age})",
        "interval": f"{BY_VANTAGE} (censorprobe_run_interval_seconds{{{SEL}}})",
        "age / interval": f"{BY_VANTAGE} (({age}) / censorprobe_run_interval_seconds{{{SEL}}})",
        "failed runs, 24 h": f"{BY_VANTAGE} (increase(censorprobe_run_failures_total{{{SEL}}}[24h]))",
    }, pos)
    panel = cells(panel, "network", COLOR_CELL, ("mappings", [{"type": "value", "options": {
        "1": {"text": "online", "color": "green"}, "0": {"text": "offline", "color": "red"}}}]))
    panel = cells(panel, "last run age", ("unit", "s"))
    panel = cells(panel, "interval", ("unit", "s"))
    # CensorprobeVantageSilent fires past 3 intervals (+5 min): orange from 1.5, red from 3
    panel = cells(panel, "age / interval", COLOR_CELL, ("decimals", 1), ("thresholds", {
        "mode": "absolute", "steps": [{"value": None, "color": "green"},
                                      {"value": 1.5, "color": "orange"}, {"value": 3, "color": "red"}]}))
    return cells(panel, "failed runs, 24 h", ("decimals", 0))


# --- dashboards ------------------------------------------------------------------------------


def board(uid: str, title: str, panels: list[Builder[Panel]]) -> dash.Dashboard:
    out = (dash.Dashboard(title).uid(uid).tags(["censorprobe"]).timezone("utc").refresh("1m")
           .time("now-24h", "now").editable())
    for v in variables():
        out = out.with_variable(v)
    for p in panels:
        out = out.with_panel(p)
    return out


def fleet() -> dash.Dashboard:
    verdict_now = f"censorprobe_target_verdict{{{TSEL}}} == 1"
    age_ratio = (f"(time() - censorprobe_last_run_timestamp_seconds{{{SEL}}})"
                 f" / censorprobe_run_interval_seconds{{{SEL}}}")
    return board("censorprobe-fleet", "Censorprobe: fleet overview", [
        stat_of("Targets blocked", f'count(censorprobe_target_verdict{{verdict="blocked", {TSEL}}} == 1) or vector(0)', (0, 0, 5, 4)),
        stat_of("Targets throttled", f'count(censorprobe_target_verdict{{verdict="throttled", {TSEL}}} == 1) or vector(0)', (5, 0, 5, 4)),
        stat_of("Vantage points reporting", f"count(censorprobe_vantage_info{{{SEL}}})", (10, 0, 5, 4)),
        stat_of("Vantage points offline", f"count(censorprobe_vantage_up{{{SEL}}} == 0) or vector(0)", (15, 0, 5, 4)),
        stat_of("Alerts firing or pending", 'count(ALERTS{alertname=~"Censorprobe.*"}) or vector(0)', (20, 0, 4, 4)),
        vantage_health((0, 4, 24, 7)),
        table_of("Targets by vantage point and verdict", {"Value": verdict_now}, (0, 11, 24, 12),
                 hide=("Value",)),
        series("Targets per verdict", f"sum by (verdict) ({verdict_now})", "{{verdict}}", (0, 23, 12, 8)),
        series("Failed runs per hour", f"sum by (vantage) (increase(censorprobe_run_failures_total{{{SEL}}}[1h]))", "{{vantage}}", (12, 23, 12, 8)),
        series("Last run age / run interval", age_ratio, "{{vantage}}", (0, 31, 12, 8)),
        series("Run duration", f"censorprobe_run_duration_seconds{{{SEL}}}", "{{vantage}}", (12, 31, 12, 8), unit="s"),
    ])


def target() -> dash.Dashboard:
    return board("censorprobe-target", "Censorprobe: target drill-down", [
        place(statetimeline.Panel(), "Verdict", (0, 0, 24, 6)).with_target(query(
            f"max by (vantage, verdict) (censorprobe_target_verdict{{{TSEL}}} == 1)", "{{vantage}}: {{verdict}}")),
        series("Throughput: target vs control (same path)", f"censorprobe_target_throughput_bytes_per_second{{{TSEL}}}", "{{vantage}} {{path}}", (0, 6, 16, 9), unit="Bps"),
        series("Target / control rate", f"censorprobe_target_throughput_ratio{{{TSEL}}}", "{{vantage}}", (16, 6, 8, 9), unit="percentunit"),
        series("Phase durations", f"censorprobe_target_phase_duration_seconds{{{TSEL}}}", "{{vantage}} {{phase}}", (0, 15, 16, 9), unit="s"),
        series("Throttling confidence", f"censorprobe_target_throttling_confidence{{{TSEL}}}", "{{vantage}}", (16, 15, 8, 9), unit="percentunit"),
        table_of("Failures (decisive failure and the operation that failed)",
                 {"Value": f"censorprobe_target_failure{{{TSEL}}} == 1"}, (0, 24, 12, 8), hide=("Value",)),
        series("Blocking method", f"max by (vantage, method) (censorprobe_target_blocking{{{TSEL}}} == 1)", "{{vantage}} {{method}}", (12, 24, 12, 8)),
    ])


# --- JSON ------------------------------------------------------------------------------------


def render(built: dash.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana exports it "for sharing externally": with import inputs."""
    out: dict[str, Any] = json.loads(json.dumps(built.build(), cls=JSONEncoder))
    for i, panel in enumerate(out["panels"], start=1):
        panel["id"] = i
    out["__inputs"] = [{"name": DS_INPUT, "label": "Prometheus", "type": "datasource",
                        "pluginId": "prometheus", "pluginName": "Prometheus",
                        "description": "The Prometheus that scrapes the censorprobe vantage points"}]
    out["__requires"] = [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": GRAFANA_VERSION},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        *({"type": "panel", "id": kind, "name": kind, "version": ""}
          for kind in sorted({p["type"] for p in out["panels"]})),
    ]
    return out


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, build in (("fleet.json", fleet), ("target.json", target)):
        (OUT / name).write_text(json.dumps(render(build()), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
