"""Grafana dashboards: in sync with their generator, portable (the datasource is a variable, an
import asks for it), chained variables, and every panel's and variable's PromQL parses and returns
data from a real Prometheus scraping real exporters of two vantage points.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from promstack import (
    ROOT,
    Prometheus,
    http_get,
    measurement,
    needs,
    prometheus,
    sample_run,
    scrape_job,
)

from probe.model import Vantage
from probe.monitoring.daemon import Board, Schedule, bound_port, start_metrics_server

GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DS_VAR = {"type": "prometheus", "uid": "${datasource}"}
CHAIN = ["datasource", "asn", "vantage", "target"]


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every target of every panel."""
    return [(p.name, panel["title"], t["expr"])
            for p in DASHBOARDS for panel in load(p)["panels"] for t in panel["targets"]]


def query_variables(path: Path) -> dict[str, str]:
    """name -> label_values(...) of the dashboard's query variables."""
    return {v["name"]: v["query"]["query"] for v in load(path)["templating"]["list"]
            if v["type"] == "query"}


def concrete(expr: str, **chosen: str) -> str:
    """What Grafana sends: a chosen variable as its regex, any other on All (allValue `.*`)."""
    return re.sub(r"\$(\w+)", lambda m: chosen.get(m.group(1), ".*"), expr)


def datasource_refs(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every value under a `datasource` key, anywhere in the JSON."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield f"{path}.{key}", value
            yield from datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from datasource_refs(value, f"{path}[{i}]")


def test_dashboards_match_their_generator(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="pip install -e '.[test]'")
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUT", tmp_path)
    module.main()
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert (tmp_path / path.name).read_text() == path.read_text(), \
            f"{path.name} is stale: run python grafana/build_dashboards.py"


def test_every_panel_query_and_variable_uses_the_datasource_variable() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    assert {load(p)["title"] for p in DASHBOARDS} == {"Censorprobe: fleet overview",
                                                     "Censorprobe: target drill-down"}
    assert len({load(p)["uid"] for p in DASHBOARDS}) == len(DASHBOARDS)
    for path in DASHBOARDS:
        board = load(path)
        assert uid not in path.read_text(), f"{path.name} names the provisioned uid {uid}"
        refs = dict(datasource_refs(board))
        assert refs and all(ref == DS_VAR for ref in refs.values()), path.name
        for panel in board["panels"]:
            assert panel["datasource"] == DS_VAR and panel["targets"], panel["title"]
            assert all(t["datasource"] == DS_VAR for t in panel["targets"]), panel["title"]
            assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                assert var["datasource"] == DS_VAR, var["name"]
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/censorprobe.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    for path in DASHBOARDS:  # provisioned, `$datasource` starts on the datasource of that name
        (ds_var,) = [v for v in load(path)["templating"]["list"] if v["type"] == "datasource"]
        assert ds_var["current"]["text"] == provisioned["datasources"][0]["name"]


def test_an_import_asks_for_a_prometheus_and_every_placeholder_resolves() -> None:
    for path in DASHBOARDS:
        board = load(path)
        (ds_input,) = board["__inputs"]
        assert (ds_input["type"], ds_input["pluginId"]) == ("datasource", "prometheus")
        ds_var = board["templating"]["list"][0]
        assert ds_var["type"] == "datasource" and ds_var["query"] == "prometheus"
        assert ds_var["current"]["value"] == f"${{{ds_input['name']}}}"
        variables = {v["name"] for v in board["templating"]["list"]}
        placeholders = set(re.findall(r"\$\{(\w+)\}", path.read_text()))
        assert placeholders == {ds_input["name"], "datasource"}, path.name
        bare = set(re.findall(r"\$(\w+)", path.read_text())) - {"__all"}
        assert bare <= variables, f"{path.name} uses undefined variables {bare - variables}"
        required = {(r["type"], r["id"]) for r in board["__requires"]}
        assert {("panel", p["type"]) for p in board["panels"]} | {
            ("grafana", "grafana"), ("datasource", "prometheus")} == required


def test_variables_are_chained_and_every_panel_is_filtered_by_them() -> None:
    for path in DASHBOARDS:
        board = load(path)
        assert [v["name"] for v in board["templating"]["list"]] == CHAIN, path.name
        queries = query_variables(path)
        assert '{asn=~"$asn"}' in queries["vantage"]
        assert {"$vantage", "$asn"} <= set(re.findall(r"\$\w+", queries["target"]))
        for var in board["templating"]["list"][1:]:
            assert var["multi"] and var["includeAll"] and var["allValue"] == ".*", var["name"]
        for panel in board["panels"]:
            for t in panel["targets"]:
                used = set(re.findall(r"\$(\w+)", t["expr"]))
                if "censorprobe_target_" in t["expr"]:
                    assert used == {"target", "vantage", "asn"}, (panel["title"], t["expr"])
                elif "ALERTS" not in t["expr"]:
                    assert used == {"vantage", "asn"}, (panel["title"], t["expr"])


def test_the_fleet_overview_has_a_vantage_health_panel() -> None:
    (health,) = [p for p in load(GRAFANA / "dashboards/fleet.json")["panels"]
                 if p["title"] == "Vantage health"]
    exprs = " ".join(t["expr"] for t in health["targets"])
    for metric in ("censorprobe_vantage_up", "censorprobe_last_run_timestamp_seconds",
                   "censorprobe_run_interval_seconds", "censorprobe_run_failures_total"):
        assert metric in exprs, metric
    # merged on labels: every query must keep the same label set
    assert all(t["expr"].startswith("max by (vantage, asn, cc) (") for t in health["targets"])
    assert [t["id"] for t in health["transformations"]] == ["merge", "organize"]


# --- against a real Prometheus ----------------------------------------------------------------

LAB2_TARGETS = {"example.org", "news.example", "video.example"}


def lab2_run() -> list:
    return [measurement("example.org", "accessible", rate_bps=30e6, control_bps=31e6),
            measurement("news.example", "accessible", rate_bps=20e6, control_bps=21e6),
            measurement("video.example", "throttled", rate_bps=100e3, control_bps=30e6)]


async def exporter_of(name: str, asn: str, records: list, offline: bool) -> Any:
    board = Board(Vantage(name=name, asn=asn, cc="RU"), Schedule(max_age_runs=1e6))
    for m in records:
        board.record(m)
    board.run_failed()
    board.run_done(1.7e9, 1.7e9 + 30)
    if offline:  # its last run found no network: vantage_up 0, its old results still exported
        board.run_failed(offline=True)
    return await start_metrics_server(board, "127.0.0.1", 0)


def label_values(prom: Prometheus, query: str) -> set[str]:
    """What Grafana's label_values(series, label) asks Prometheus: the label's values API."""
    series, label = re.fullmatch(r"label_values\((.+), (\w+)\)", query).groups()
    url = f"{prom.base}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": series})
    status, body = http_get(url)
    assert status == 200, (query, body[:300])
    return set(json.loads(body)["data"])


@needs
@pytest.mark.prometheus
async def test_every_query_runs_and_variables_chain_on_a_real_prometheus(tmp_path: Path) -> None:
    lab1 = await exporter_of("lab-1", "AS65001", sample_run(), offline=False)
    lab2 = await exporter_of("lab-2", "AS65002", lab2_run(), offline=True)
    try:
        rules = tmp_path / "rules.yml"  # the shipped rules, so that ALERTS has series
        rules.write_text((GRAFANA / "prometheus/rules.yml").read_text()
                         .replace("for: 45m", "for: 1s").replace("for: 30m", "for: 1s"))
        jobs = [scrape_job("lab1", bound_port(lab1)), scrape_job("lab2", bound_port(lab2))]
        with prometheus(tmp_path, jobs, [rules]) as prom:
            # enough samples for increase(...[1h]) and for ALERTS to exist
            await prom.await_for("min(count_over_time(censorprobe_runs_total[1m])) >= 3", 40)
            await prom.await_for('ALERTS{alertname=~"Censorprobe.*"}', 20)
            await asyncio.to_thread(check_panels, prom)
            await asyncio.to_thread(check_variables, prom)
    finally:
        await lab1.cleanup()
        await lab2.cleanup()


def check_panels(prom: Prometheus) -> None:
    status, parsed = prom.format_query("sum by (target (x)")
    assert parsed.get("status") != "success"  # the parse check below can fail
    assert not prom.query('censorprobe_target_verdict{target="nope"}')
    empty = []
    for name, title, expr in panel_queries():
        status, parsed = prom.format_query(concrete(expr))
        assert status == 200 and parsed["status"] == "success", (name, title, parsed)
        if not prom.query(concrete(expr)):
            empty.append((name, title, expr))
    assert not empty, f"panels without data: {empty}"
    (health,) = [p for p in load(GRAFANA / "dashboards/fleet.json")["panels"]
                 if p["title"] == "Vantage health"]
    network = prom.query(concrete(health["targets"][0]["expr"]))
    assert {r["metric"]["vantage"]: r["value"][1] for r in network} == {"lab-1": "1", "lab-2": "0"}
    one = prom.query(concrete(health["targets"][0]["expr"], vantage="lab-2"))
    assert [r["metric"]["vantage"] for r in one] == ["lab-2"]


def check_variables(prom: Prometheus) -> None:
    lab1_targets = {m.target.domain for m in sample_run()}
    for path in DASHBOARDS:
        queries = query_variables(path)
        for name, query in queries.items():
            assert label_values(prom, concrete(query)), (path.name, name)
        assert label_values(prom, concrete(queries["asn"])) == {"AS65001", "AS65002"}
        assert label_values(prom, concrete(queries["vantage"], asn="AS65002")) == {"lab-2"}
        target = queries["target"]
        assert label_values(prom, concrete(target, vantage="lab-2")) == LAB2_TARGETS
        assert label_values(prom, concrete(target, vantage="lab-1")) == lab1_targets
        assert label_values(prom, concrete(target, vantage="(lab-1|lab-2)")) == \
            lab1_targets | LAB2_TARGETS  # a multi-value choice, as Grafana formats it
        assert label_values(prom, concrete(target, asn="AS65001")) == lab1_targets
