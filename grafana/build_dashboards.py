"""Builds grafana/dashboards/*.json (dashboards as code, plain Python, no dependencies).

Run `python grafana/build_dashboards.py` after editing; tests/test_dashboards.py fails when the
JSON files are out of date, and runs every panel's PromQL against a real Prometheus.
Targets Grafana 10.x/11.x (schemaVersion 39).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "censorprobe-prometheus"}
OUT = Path(__file__).resolve().parent / "dashboards"
SEL = 'vantage=~"$vantage", asn=~"$asn"'


def variable(name: str, metric: str, label: str | None = None) -> dict[str, Any]:
    query = f"label_values({metric}, {label or name})"
    return {"name": name, "label": name, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"var-{name}"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}}


def panel(kind: str, title: str, exprs: list[tuple[str, str]], pos: tuple[int, int, int, int],
          unit: str = "short", instant: bool = False, **options: Any) -> dict[str, Any]:
    """`exprs` are (PromQL, legend) pairs; `pos` is (x, y, w, h) on Grafana's 24-column grid."""
    targets = [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                "legendFormat": legend, "instant": instant, "range": not instant,
                "format": "table" if kind == "table" else "time_series"}
               for i, (expr, legend) in enumerate(exprs)]
    x, y, w, h = pos
    return {"type": kind, "title": title, "datasource": DATASOURCE, "targets": targets,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": options}


def table_of(title: str, expr: str, pos: tuple[int, int, int, int], hide: list[str],
             rename: dict[str, str] | None = None) -> dict[str, Any]:
    p = panel("table", title, [(expr, "")], pos, instant=True)
    p["transformations"] = [{"id": "organize", "options": {
        "excludeByName": {k: True for k in ["Time", "__name__", "job", "instance", *hide]},
        "renameByName": rename or {}}}]
    return p


def dashboard(uid: str, title: str, variables: list[dict[str, Any]],
              panels: list[dict[str, Any]]) -> dict[str, Any]:
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return {"uid": uid, "title": title, "tags": ["censorprobe"], "timezone": "utc",
            "schemaVersion": 39, "version": 1, "editable": True, "refresh": "1m",
            "time": {"from": "now-24h", "to": "now"}, "templating": {"list": variables},
            "annotations": {"list": []}, "panels": panels}


def fleet() -> dict[str, Any]:
    verdict_now = f"censorprobe_target_verdict{{{SEL}}} == 1"
    return dashboard("censorprobe-fleet", "Censorprobe: fleet overview", [
        variable("vantage", "censorprobe_vantage_info"),
        variable("asn", "censorprobe_vantage_info"),
    ], [
        panel("stat", "Targets blocked", [(f"count(censorprobe_target_verdict{{verdict=\"blocked\", {SEL}}} == 1) or vector(0)", "")], (0, 0, 6, 4)),
        panel("stat", "Targets throttled", [(f"count(censorprobe_target_verdict{{verdict=\"throttled\", {SEL}}} == 1) or vector(0)", "")], (6, 0, 6, 4)),
        panel("stat", "Vantage points reporting", [(f"count(censorprobe_vantage_info{{{SEL}}})", "")], (12, 0, 6, 4)),
        panel("stat", "Alerts firing or pending", [("count(ALERTS{alertname=~\"Censorprobe.*\"}) or vector(0)", "")], (18, 0, 6, 4)),
        table_of("Targets by vantage point and verdict", verdict_now, (0, 4, 24, 12),
                 hide=["Value"], rename={"target": "Target", "verdict": "Verdict"}),
        panel("timeseries", "Targets per verdict", [(f"sum by (verdict) ({verdict_now})", "{{verdict}}")], (0, 16, 12, 8)),
        panel("timeseries", "Failed runs per hour", [(f"sum by (vantage) (increase(censorprobe_run_failures_total{{{SEL}}}[1h]))", "{{vantage}}")], (12, 16, 12, 8)),
        table_of("Vantage points: seconds since the last completed run",
                 f"time() - censorprobe_last_run_timestamp_seconds{{{SEL}}}", (0, 24, 12, 8),
                 hide=[], rename={"Value": "seconds since last run"}),
        panel("timeseries", "Run duration", [(f"censorprobe_run_duration_seconds{{{SEL}}}", "{{vantage}}")], (12, 24, 12, 8), unit="s"),
    ])


def target() -> dict[str, Any]:
    sel = f'target=~"$target", {SEL}'
    return dashboard("censorprobe-target", "Censorprobe: target drill-down", [
        variable("target", "censorprobe_target_verdict"),
        variable("vantage", "censorprobe_vantage_info"),
        variable("asn", "censorprobe_vantage_info"),
    ], [
        panel("state-timeline", "Verdict", [(f"max by (vantage, verdict) (censorprobe_target_verdict{{{sel}}} == 1)", "{{vantage}}: {{verdict}}")], (0, 0, 24, 6)),
        panel("timeseries", "Throughput: target vs control (same path)", [(f"censorprobe_target_throughput_bytes_per_second{{{sel}}}", "{{vantage}} {{path}}")], (0, 6, 16, 9), unit="Bps"),
        panel("timeseries", "Target / control rate", [(f"censorprobe_target_throughput_ratio{{{sel}}}", "{{vantage}}")], (16, 6, 8, 9), unit="percentunit", ),
        panel("timeseries", "Phase durations", [(f"censorprobe_target_phase_duration_seconds{{{sel}}}", "{{vantage}} {{phase}}")], (0, 15, 16, 9), unit="s"),
        panel("timeseries", "Throttling confidence", [(f"censorprobe_target_throttling_confidence{{{sel}}}", "{{vantage}}")], (16, 15, 8, 9), unit="percentunit"),
        table_of("Failures (decisive failure and the operation that failed)",
                 f"censorprobe_target_failure{{{sel}}} == 1", (0, 24, 12, 8), hide=["Value"]),
        panel("timeseries", "Blocking method", [(f"max by (vantage, method) (censorprobe_target_blocking{{{sel}}} == 1)", "{{vantage}} {{method}}")], (12, 24, 12, 8)),
    ])


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, build in (("fleet.json", fleet), ("target.json", target)):
        (OUT / name).write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
