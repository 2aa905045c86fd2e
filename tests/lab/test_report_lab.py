"""`probe report` over real lab runs: the real `probe run` in three scenarios (throttled,
blocked by TLS reset and by DNS injection, accessible) into one results folder, then the real
`probe report` in the client namespace, as a volunteer would run both on their machine."""

from __future__ import annotations

import json
import sys
import time

import pytest

from probe.lab import scenarios
from probe.lab.demo import compare, probe_command, table
from probe.lab.lifecycle import Lab
from probe.lab.topology import CLIENT_IP

pytestmark = pytest.mark.lab
PREFIX = "prept"
SCENARIOS = ("throttle_twimg", "tls_rst", "dns_injection")


@pytest.fixture(scope="module")
def reports(lab_capable: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The HTML and JSON reports of every run since the test began."""
    tmp = tmp_path_factory.mktemp("report-lab")
    out, lab = tmp / "results", Lab(PREFIX, tmp / "state")
    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 60))
    found: dict[str, str] = {}
    try:
        for name in SCENARIOS:
            scenario = scenarios.load(name)
            done = lab.exec(probe_command(lab.up(scenario), str(out)), timeout=240)
            rows = compare(scenario, done.stdout)
            assert all(r.ok for r in rows), table(rows) + done.stderr[-2000:]
        for form in ("html", "json"):
            path = tmp / f"report.{form}"
            done = lab.exec([sys.executable, "-m", "probe", "report", "--out", str(out),
                             "--since", since, "--format", form, "-o", str(path)], timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            found[form] = path.read_text(encoding="utf-8")
    finally:
        lab.down()
    return found


def test_the_report_shows_every_kind_of_finding(reports: dict[str, str]) -> None:
    data = json.loads(reports["json"])
    verdicts = {row["domain"]: row["verdict"] for row in data["rows"]}
    assert {d: verdicts[d] for d in ("abs.twimg.com", "pbs.twimg.com", "video.twimg.com")} == \
        dict.fromkeys(("abs.twimg.com", "pbs.twimg.com", "video.twimg.com"), "throttled")
    assert verdicts["navalny.com"] == verdicts["twitter.com"] == "blocked"
    assert verdicts["www.example.com"] == "accessible"
    assert data["counts"]["throttled"] == 3 and data["counts"]["blocked"] == 4
    assert len(data["runs"]) == 3 and len(data["timelines"]) == len(data["rows"])
    for t in data["throttles"]:  # SNI-swap: the target's own name against the control's
        assert {f["side"] for f in t["flows"]} == {"target", "control"}
        assert t["control_rate_bps"] > 10 * (t["rate_bps"] or 0) and t["p_value"] < 0.05
    blocks = {b["domain"]: b for b in data["blocks"]}
    assert blocks["navalny.com"]["failure"] == "connection_reset"
    assert blocks["navalny.com"]["operation"] == "tls_handshake"
    dns = blocks["twitter.com"]["steps"][0]
    assert dns["step"] == "DNS" and "answers to one query" in dns["probe"][0]


def test_the_page_draws_the_throttled_flows_and_the_blocked_evidence(
        reports: dict[str, str]) -> None:
    page = reports["html"]
    assert page.count("<svg") == 4  # three throttled targets and the timeline
    for name in ("abs.twimg.com", "pbs.twimg.com", "video.twimg.com"):
        assert f"target: SNI {name}" in page
    assert "connection_reset</span> during <span class=\"mono\">tls_handshake" in page
    assert "Verdicts over time" in page


def test_no_volunteer_address_in_the_reports(reports: dict[str, str]) -> None:
    for text in reports.values():
        assert CLIENT_IP not in text
