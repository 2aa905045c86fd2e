"""The collector: names and units, bounded labels, values read from real records, promtool clean."""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from promstack import (
    PROMTOOL,
    free_port,
    http_get,
    measurement,
    needs,
    pushgateway,
    sample_run,
)

from probe.failures import FAILURES
from probe.model import Vantage
from probe.monitoring.export import ONESHOT_INTERVAL, push, write_textfile
from probe.monitoring.metrics import (
    PHASES,
    VERDICTS,
    ResultsCollector,
    RunStats,
    Snapshot,
    phase_durations,
    snapshot_of_run,
)

VANTAGE = Vantage(name="msk-1", asn="AS12389", cc="RU", network_name="Rostelecom")


def exposition(snap: Snapshot) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ResultsCollector(lambda: snap))
    return generate_latest(registry).decode()


def samples(text: str) -> list:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def value(text: str, name: str, **labels: str) -> float:
    found = [s.value for s in samples(text)
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


@pytest.fixture
def text() -> str:
    return exposition(snapshot_of_run(sample_run(), VANTAGE, interval=900))


@pytest.mark.skipif(not PROMTOOL, reason="needs promtool (Debian package prometheus)")
def test_promtool_check_metrics_is_clean(text: str) -> None:
    run = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.skipif(not PROMTOOL, reason="needs promtool (Debian package prometheus)")
def test_promtool_check_metrics_would_catch_a_bad_name() -> None:
    bad = "# HELP censorprobe_rtt_ms a\n# TYPE censorprobe_rtt_ms gauge\ncensorprobe_rtt_ms 1\n"
    run = subprocess.run([PROMTOOL, "check", "metrics"], input=bad, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode != 0


def test_every_name_has_the_prefix_and_no_probe_collision(text: str) -> None:
    names = {s.name for s in samples(text)}
    assert names and all(n.startswith("censorprobe_") for n in names)


def test_verdict_is_a_state_set_with_exactly_one_current(text: str) -> None:
    for domain, current in (("abs.twimg.com", "throttled"), ("navalny.com", "blocked")):
        states = {s.labels["verdict"]: s.value for s in samples(text)
                  if s.name == "censorprobe_target_verdict" and s.labels["target"] == domain}
        assert set(states) == set(VERDICTS)
        assert [v for v, x in states.items() if x == 1.0] == [current]


def test_blocking_method_and_failure(text: str) -> None:
    assert value(text, "censorprobe_target_blocking", target="navalny.com", method="tls") == 1
    assert value(text, "censorprobe_target_blocking", target="navalny.com", method="dns") == 0
    assert value(text, "censorprobe_target_blocking", target="abs.twimg.com", method="tls") == 0
    assert value(text, "censorprobe_target_failure", target="navalny.com",
                 failure="connection_reset", operation="tls_handshake") == 1
    assert not [s for s in samples(text) if s.name == "censorprobe_target_failure"
                and s.labels["target"] != "navalny.com"]


def test_unknown_failure_text_never_becomes_a_label() -> None:
    m = measurement("x.example", "blocked", blocking="tcp", failure="[Errno 99] weird 10.1.2.3")
    failures = [s.labels["failure"] for s in samples(exposition(snapshot_of_run([m], VANTAGE)))
                if s.name == "censorprobe_target_failure"]
    assert failures == ["unknown_failure"]


def test_label_values_are_bounded_no_urls_or_ips(text: str) -> None:
    for s in samples(text):
        for key, val in s.labels.items():
            assert "/" not in val and "://" not in val, (s.name, key, val)
            with pytest.raises(ValueError):
                ipaddress.ip_address(val)
            if key == "failure":
                assert val in FAILURES
            if key == "phase":
                assert val in PHASES


def test_throughput_in_bytes_per_second_and_ratio(text: str) -> None:
    name = "censorprobe_target_throughput_bytes_per_second"
    assert value(text, name, target="abs.twimg.com", path="target") == pytest.approx(140e3 / 8)
    assert value(text, name, target="abs.twimg.com", path="control") == pytest.approx(40e6 / 8)
    assert value(text, "censorprobe_target_throughput_ratio", target="abs.twimg.com") == \
        pytest.approx(140e3 / 40e6)


def test_ratio_is_clamped_to_one_when_the_target_is_faster() -> None:
    m = measurement("fast.example", "accessible", rate_bps=50e6, control_bps=40e6)
    text = exposition(snapshot_of_run([m], VANTAGE))
    assert value(text, "censorprobe_target_throughput_ratio", target="fast.example") == 1.0


def test_phase_durations_are_durations_not_moments() -> None:
    phases = phase_durations(measurement("a.example", "accessible").probe)
    assert phases == pytest.approx({"dns": 0.012, "connect": 0.021, "tls": 0.07,
                                    "first_byte": 0.06})


def test_run_families_and_vantage_info() -> None:
    snap = Snapshot(VANTAGE, tuple(sample_run()),
                    RunStats(runs=3, failures=1, last_run_end=1.7e9, last_run_duration=42.0,
                             interval=900.0))
    text = exposition(snap)
    key = {"vantage": "msk-1", "asn": "AS12389", "cc": "RU"}
    assert value(text, "censorprobe_runs_total", **key) == 3
    assert value(text, "censorprobe_run_failures_total", **key) == 1
    assert value(text, "censorprobe_last_run_timestamp_seconds", **key) == 1.7e9
    assert value(text, "censorprobe_run_duration_seconds", **key) == 42.0
    assert value(text, "censorprobe_vantage_info", network_name="Rostelecom", **key) == 1


def test_before_any_run_there_is_no_last_run_timestamp() -> None:
    names = {s.name for s in samples(exposition(Snapshot(VANTAGE)))}
    assert "censorprobe_last_run_timestamp_seconds" not in names
    assert "censorprobe_runs_total" in names


def test_latest_measurement_per_target_wins() -> None:
    old = measurement("t.example", "blocked", blocking="dns", start=1000.0)
    new = replace(measurement("t.example", "accessible"), start_time=2000.0)
    snap = snapshot_of_run([new, old], VANTAGE)
    assert [m.verdict.verdict for m in snap.measurements] == ["accessible"]


# --- one-shot export -------------------------------------------------------------------------


@needs
def test_push_replaces_this_vantage_points_group_on_a_real_pushgateway(tmp_path) -> None:
    with pushgateway(tmp_path) as gw:
        push(sample_run(), gw.base, VANTAGE)
        push(sample_run()[:1], gw.base, VANTAGE)  # the next run: one target only
        push(sample_run()[2:], gw.base, Vantage(name="spb-1", asn="AS12389", cc="RU"))
        status, body = http_get(gw.base + "/metrics")
    assert status == 200
    text = body.decode()
    verdicts = {(s.labels["vantage"], s.labels["target"]) for s in samples(text)
                if s.name == "censorprobe_target_verdict"}
    assert verdicts == {("msk-1", "abs.twimg.com"), ("spb-1", "navalny.com")}
    assert all(s.labels.get("job") == "censorprobe" for s in samples(text)
               if s.name.startswith("censorprobe_"))
    assert value(text, "censorprobe_run_interval_seconds", vantage="msk-1") == ONESHOT_INTERVAL


def test_push_to_nowhere_raises_oserror() -> None:
    with pytest.raises(OSError):
        push(sample_run(), f"http://127.0.0.1:{free_port()}", VANTAGE, timeout=2)


def test_textfile_is_written_atomically_and_parses(tmp_path) -> None:
    path = tmp_path / "censorprobe.prom"
    path.write_text("old content that must be replaced whole\n")
    write_textfile(sample_run(), path, VANTAGE)
    text = path.read_text()
    assert value(text, "censorprobe_target_verdict", target="navalny.com", verdict="blocked") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["censorprobe.prom"]  # no temp file left
    if PROMTOOL:
        run = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=30)
        assert run.returncode == 0, run.stdout
