"""Grafana dashboards: in sync with their generator, provisioned against a fixed datasource uid,
and every panel's PromQL parses and returns data from a real Prometheus scraping a real exporter.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from promstack import ROOT, http_get, needs, prometheus, sample_run, scrape_job

from probe.model import Vantage
from probe.monitoring.daemon import Board, Schedule, bound_port, start_metrics_server

GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every target of every panel."""
    return [(p.name, panel["title"], t["expr"])
            for p in DASHBOARDS for panel in load(p)["panels"] for t in panel["targets"]]


def variable_queries() -> list[str]:
    return [v["query"]["query"] for p in DASHBOARDS for v in load(p)["templating"]["list"]]


def concrete(expr: str) -> str:
    """What Grafana sends with every variable on All (allValue `.*`)."""
    return re.sub(r"\$\w+", ".*", expr)


def test_dashboards_match_their_generator(tmp_path: Path, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUT", tmp_path)
    module.main()
    for path in DASHBOARDS:
        assert (tmp_path / path.name).read_text() == path.read_text(), \
            f"{path.name} is stale: run python grafana/build_dashboards.py"


def test_dashboards_are_well_formed_and_use_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    assert {load(p)["title"] for p in DASHBOARDS} == {"Censorprobe: fleet overview",
                                                     "Censorprobe: target drill-down"}
    assert len({load(p)["uid"] for p in DASHBOARDS}) == len(DASHBOARDS)
    for path in DASHBOARDS:
        for panel in load(path)["panels"]:
            assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == uid for t in panel["targets"])
            assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/censorprobe.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@needs
@pytest.mark.prometheus
async def test_every_panel_query_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    board = Board(Vantage(name="lab-1", asn="AS65001", cc="RU"), Schedule(max_age_runs=1e6))
    for m in sample_run():
        board.record(m)
    board.run_failed()
    board.run_done(1.7e9, 1.7e9 + 30)
    exporter = await start_metrics_server(board, "127.0.0.1", 0)
    try:
        rules = tmp_path / "rules.yml"  # the shipped rules, so that ALERTS has series
        rules.write_text((GRAFANA / "prometheus/rules.yml").read_text()
                         .replace("for: 45m", "for: 1s").replace("for: 30m", "for: 1s"))
        with prometheus(tmp_path, [scrape_job("censorprobe", bound_port(exporter))],
                        [rules]) as prom:
            # enough samples for increase(...[1h]) and for ALERTS to exist
            await prom.await_for("count_over_time(censorprobe_runs_total[1m]) >= 3", 40)
            await prom.await_for('ALERTS{alertname=~"Censorprobe.*"}', 20)
            status, parsed = await asyncio.to_thread(prom.format_query, "sum by (target (x)")
            assert parsed.get("status") != "success"  # the parse check below can fail
            assert not await asyncio.to_thread(prom.query, 'censorprobe_target_verdict{target="nope"}')
            empty = []
            for name, title, expr in panel_queries():
                status, parsed = await asyncio.to_thread(prom.format_query, concrete(expr))
                assert status == 200 and parsed["status"] == "success", (name, title, parsed)
                if not await asyncio.to_thread(prom.query, concrete(expr)):
                    empty.append((name, title, expr))
            assert not empty, f"panels without data: {empty}"
            for query in variable_queries():
                metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", query).groups()
                url = (f"{prom.base}/api/v1/label/{label}/values?"
                       + urllib.parse.urlencode({"match[]": metric}))
                values = json.loads((await asyncio.to_thread(http_get, url))[1])["data"]
                assert values, query
    finally:
        await exporter.cleanup()

