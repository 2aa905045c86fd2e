"""`probe report` on stored results: real records of the lab (tests/data/report/lab_runs.jsonl,
made by `probe run` in the throttle_twimg, tls_rst, dns_injection, http_blockpage,
congested_link and ip_blackhole scenarios, certificates left out) read through a real Store."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import factories
import pytest

from probe.model import Target
from probe.report.build import build
from probe.report.gather import NothingToReport, gather
from probe.report.render import as_json, html, markdown
from probe.results.store import Store

FIXTURE = Path(__file__).parent / "data" / "report" / "lab_runs.jsonl"
SINCE = datetime(2026, 11, 24, tzinfo=UTC)
CLIENT_IP = "203.0.113.77"  # a volunteer's public address, planted in records
LOCAL_IP = "198.51.100.9"  # this machine's own address, planted too


def _records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def _store(tmp_path: Path, records: list[dict[str, Any]] | None = None) -> Path:
    """A results folder holding the records, indexed by the real Store."""
    out = tmp_path / "results"
    out.mkdir()
    lines = [json.dumps(r, ensure_ascii=False) for r in (records or _records())]
    (out / "measurements-2026-11-24.jsonl").write_text("\n".join(lines) + "\n")
    with Store(out, vantage="") as store:
        assert store.reindex() == len(lines)
    return out


def _run_of(records: list[dict[str, Any]], url: str, verdict: str | None = None) -> str:
    """The run that measured `url` (and judged it `verdict`)."""
    return next(r["report_id"] for r in records if r["input"] == url
                and verdict in (None, r["test_keys"]["verdict"]))


def _report(out: Path, report_id: str | None = None, since: datetime | None = None,
            scrub: set[str] | frozenset[str] = frozenset()):
    stored = gather(out, report_id, since, scrub_addresses=scrub)
    return build(stored, "test", timeline=since is not None)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return _store(tmp_path)


def test_a_throttled_run_has_its_figures_and_a_plot_of_every_flow(out: Path) -> None:
    run = _run_of(_records(), "https://pbs.twimg.com/")
    report = _report(out, run)
    assert report.counts == {"blocked": 0, "throttled": 3, "degraded": 0, "down": 0,
                             "inconclusive": 0, "accessible": 2}
    assert [r.verdict for r in report.rows] == ["throttled"] * 3 + ["accessible"] * 2
    pbs = next(t for t in report.throttles if t.domain == "pbs.twimg.com")
    sides = [f.side for f in pbs.flows]
    assert sides.count("target") >= 2 and sides.count("control") >= 2
    assert {f.sni for f in pbs.flows if f.side == "target"} == {"pbs.twimg.com"}
    assert {f.sni for f in pbs.flows if f.side == "control"} == {"www.example.com"}
    assert pbs.target_goodput_bps < 1e6 < 1e8 < pbs.control_goodput_bps  # policed vs free
    page = html(report)
    section = page[page.index(f'id="{pbs.anchor}"'):]
    section = section[:section.index("</section>")]
    for figure in ("target rate (steady)", "control rate (steady)", "ratio", "p-value",
                   "bytes used", f"{pbs.p_value:.2g}", "sni_swap"):
        assert figure in section
    svg = section[section.index("<svg"):section.index("</svg>")]
    assert "target: SNI pbs.twimg.com" in svg and "control: SNI www.example.com" in svg
    assert svg.count("<path") > 6  # curves and markers were drawn
    assert f'href="#{pbs.anchor}"' in page  # the table links to the section


def test_the_page_is_self_contained(out: Path) -> None:
    page = html(_report(out, since=SINCE))
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 3  # 2 throttled + timeline
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert {u[:1] for u in re.findall(r"url\(([^)]*)\)", page)} == {"#"}  # in-page clip paths
    assert "<script src" not in page and "<?xml" not in page
    assert '<meta name="viewport"' in page and "@media print" in page
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # inline SVGs share no id with each other or the page


def test_blocked_targets_show_their_evidence_in_order(out: Path) -> None:
    records = _records()
    report = _report(out, _run_of(records, "https://shtab.navalny.com/"))
    block = next(b for b in report.blocks if b.domain == "navalny.com")
    assert (block.blocking, block.failure, block.operation) == ("tls", "connection_reset",
                                                               "tls_handshake")
    assert [s.step for s in block.steps] == ["DNS", "TCP connect", "TLS handshake", "HTTP"]
    tls = block.steps[2]
    assert tls.failed and not block.steps[1].failed
    assert any("SNI navalny.com: connection_reset" in line for line in tls.probe)
    assert any("SNI navalny.com: TLSv1.3" in line for line in tls.control)  # the helper's view
    page = html(report)
    assert "Failed: <span class=\"mono\">connection_reset</span> during" in page
    assert "Control (helper)" in page


def test_injected_dns_answers_are_shown_against_the_control(out: Path) -> None:
    report = _report(out, _run_of(_records(), "https://twitter.com/", "blocked"))
    (block,) = report.blocks
    dns = block.steps[0]
    assert block.blocking == "dns" and dns.failed
    (here,) = dns.probe
    assert "2 answers to one query" in here and "10.77.3.1" in here and "10.77.10.2" in here
    assert any("control resolver" in line and "10.77.10.2" in line for line in dns.control)
    assert not any("10.77.3.1" in line for line in dns.control)


def test_a_blockpage_marks_the_http_step(out: Path) -> None:
    report = _report(out, _run_of(_records(), "http://navalny.com/"))
    (block,) = report.blocks
    http = next(s for s in block.steps if s.step == "HTTP")
    assert http.failed and "known blockpage: lab" in http.probe[0]
    assert "Доступ ограничен" in http.probe[0]


def test_the_latest_run_is_the_default(out: Path) -> None:
    report = _report(out)
    assert [r.domain for r in report.rows] == ["navalny.com", "www.example.com"]
    assert report.rows[0].blocking == "tcp" and report.runs == (report.runs[-1],)


def test_since_gives_each_target_its_latest_verdict_and_a_timeline(out: Path) -> None:
    report = _report(out, since=SINCE)
    assert len(report.runs) == 6 and report.measurements == 18
    assert len({(r.url, r.vantage) for r in report.rows}) == len(report.rows) == 10
    abs_ = next(t for t in report.timelines if t.target == "abs.twimg.com")
    assert [p.verdict for p in abs_.points] == ["throttled", "accessible"]
    assert report.timelines[0].changed  # changes are listed first
    targets = [t.target for t in report.timelines]
    assert len(targets) == len(set(targets)) == 10  # one line per URL, told apart
    assert "http://navalny.com/" in targets and "navalny.com" in targets
    assert next(r for r in report.rows if r.domain == "abs.twimg.com").verdict == "accessible"
    assert "throttled → accessible" in markdown(report)
    assert "Verdicts over time" in html(report)
    with pytest.raises(NothingToReport):
        _report(out, since=datetime(2026, 11, 25, tzinfo=UTC))


def test_json_and_markdown_carry_the_same_findings(out: Path) -> None:
    report = _report(out, since=SINCE)
    data = json.loads(as_json(report))
    assert data["counts"] == report.counts and len(data["rows"]) == 10
    assert all("plot" not in t for t in data["throttles"])
    assert all(len(t["flows"]) >= 4 for t in data["throttles"])
    text = markdown(report)
    assert text.startswith("# Blocking and throttling report")
    for row in report.rows:
        shown = row.domain if row.url == f"https://{row.domain}/" else row.url
        assert f"| {shown} | **{row.verdict}** |" in text
    assert "\n\n## Blocked\n\n### " in text  # headings stand apart from tables
    assert "| TLS handshake ✗ |" in text and "connection_reset" in text


def _plant(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The volunteer's address where a careless tool could leave it."""
    for r in records:
        r["probe_ip"] = CLIENT_IP
        keys = r["test_keys"]
        keys["reason"] = keys["evidence"]["verdict"]["reason"] = (
            f"{keys['reason']} Seen from {CLIENT_IP} and {LOCAL_IP}.")
        for h in keys["evidence"]["probe"]["http"]:
            h["title"] = f"Your address is {CLIENT_IP}"
    return records


@pytest.mark.parametrize("form", ["html", "json", "md"])
def test_no_volunteer_address_anywhere(tmp_path: Path, form: str) -> None:
    out = _store(tmp_path, _plant(_records()))
    report = _report(out, since=SINCE, scrub={LOCAL_IP})
    text = {"html": html, "json": as_json, "md": markdown}[form](report)
    assert CLIENT_IP not in text and LOCAL_IP not in text
    assert "Seen from [scrubbed] and [scrubbed]." in text
    assert "10.77.10.7" in text  # the targets' own addresses stay


def test_a_middlebox_is_shown_where_a_record_names_it(tmp_path: Path) -> None:
    records = _records()
    run = _run_of(records, "https://shtab.navalny.com/")
    for r in records:
        if r["input"] == "https://navalny.app/":
            r["test_keys"]["middlebox"] = {"hop": 3, "router": "10.77.5.1", "method": "ttl",
                                           "evidence": {"reset_ttl": 62}}
    report = _report(_store(tmp_path, records), run)
    assert next(r for r in report.rows if r.domain == "navalny.app").hop == 3
    block = next(b for b in report.blocks if b.domain == "navalny.app")
    assert block.steps[-1].step == "middlebox"
    assert block.steps[-1].probe == ("censor at hop 3", "router 10.77.5.1", "found by ttl",
                                     "reset_ttl: 62")
    assert "at hop 3" in html(report)
    others = [b for b in report.blocks if b.domain != "navalny.app"]
    assert all(s.step != "middlebox" for b in others for s in b.steps)


def test_degraded_targets_get_a_plot_too(tmp_path: Path) -> None:
    records = _records()
    r = next(r for r in records if r["input"] == "https://pbs.twimg.com/")
    for verdict in (r["test_keys"], r["test_keys"]["evidence"]["verdict"]):
        verdict["verdict"] = "degraded"
        verdict["throttling"]["state"] = "degraded"
    report = _report(_store(tmp_path, records), r["report_id"])
    (degraded,) = [t for t in report.throttles if t.verdict == "degraded"]
    assert degraded.domain == "pbs.twimg.com" and "<svg" in html(report)


def test_direct_flows_are_told_apart_by_their_url() -> None:
    target = Target(domain="pbs.twimg.com", url="https://pbs.twimg.com/",
                    throughput_url="https://pbs.twimg.com/big.jpg",
                    control_throughput_url="https://cdn.example/big.jpg")
    flows = [factories.throughput(1e5), factories.throughput(5e7)]
    flows = [flows[0].__class__(**{**flows[0].__dict__, "url": target.throughput_url,
                                   "sni": None}),
             flows[1].__class__(**{**flows[1].__dict__, "url": target.control_throughput_url,
                                   "sni": None})]
    from probe.report.build import _flows

    m = factories.measurement(tgt=target)
    m = m.__class__(**{**m.__dict__, "probe": m.probe.__class__(
        **{**m.probe.__dict__, "throughput": tuple(flows)})})
    assert [f.side for f in _flows(m)] == ["target", "control"]


def test_matplotlib_is_imported_only_to_draw_and_measuring_code_never() -> None:
    code = ("import sys, probe.cli.main, probe.report.build, probe.report.render, "
            "probe.report.gather; print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "False"
    code = ("import sys, probe.report.build, probe.report.render, probe.report.plots; "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('probe.')} "
            "& {'measure', 'runner', 'throttling', 'server', 'lab', 'cli'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_a_long_timeline_is_cut_and_says_so() -> None:
    from probe.report import plots
    from probe.report.model import Point, Timeline

    lines = tuple(Timeline(f"site{i:03}.example", (
        Point("2026-11-20 10:00:00", "accessible", "r1"),
        Point("2026-11-21 10:00:00", "blocked" if i < 5 else "accessible", "r2")))
        for i in range(plots.MAX_TIMELINE_ROWS + 10))
    svg = plots.timeline_svg(lines)
    assert "site000.example" in svg and f"site{plots.MAX_TIMELINE_ROWS - 1:03}.example" in svg
    assert f"site{plots.MAX_TIMELINE_ROWS:03}.example" not in svg
    assert svg.index(">blocked<") < svg.index(">accessible<")  # the legend: worst first



def test_unreadable_records_are_skipped(tmp_path: Path) -> None:
    out = _store(tmp_path)
    with open(out / "measurements-2026-11-24.jsonl", "a") as f:
        f.write('{"test_keys": {"evidence": 1}, "report_id": "x"}\n{"torn": ')
    assert _report(out, since=SINCE).measurements == 18


def test_json_lines_without_their_index_are_reported(tmp_path: Path) -> None:
    """A volunteer sends only the measurements file: the index is rebuilt from it."""
    folder = tmp_path / "sent"
    folder.mkdir()
    (folder / "measurements-2026-11-24.jsonl").write_bytes(FIXTURE.read_bytes())
    report = _report(folder)
    assert [r.domain for r in report.rows] == ["navalny.com", "www.example.com"]
    assert (folder / "index.sqlite").exists()


def test_two_vantages_are_kept_apart(tmp_path: Path) -> None:
    records = _records()
    for r in records[::2]:
        r["annotations"]["vantage"] = "second-isp"
    report = _report(_store(tmp_path, records), since=SINCE)
    assert len(report.vantages) == 2
    assert any(t.target.endswith(" @ second-isp") for t in report.timelines)
    assert any(t.target.endswith(" @ unnamed") for t in report.timelines)
    assert "<th>Vantage</th>" in html(report)
