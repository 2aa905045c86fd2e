"""`probe locate` on the lab's longer path (scenarios locate_hop2 and locate_hop3: the censor a
transparent box at hop 2 or 3, one router after it): it must find exactly that hop for a reset,
a dropped flow, a blockpage and a policer; the control name must be clean; a closed port's reset
(the server's own) must not be called injected. Then the real `probe run` records the middlebox.
Every packet stays inside the lab's namespaces (own prefix "plc")."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.cli import notices
from probe.lab import scenarios, topology
from probe.lab.demo import probe_command
from probe.lab.lifecycle import Lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

PREFIX = "plc"


@pytest.fixture(scope="module", params=["locate_hop2", "locate_hop3"])
def path_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             lab_capable: None) -> Iterator[tuple[Lab, int]]:
    scenario = scenarios.load(request.param)
    assert scenario.censor_hop in (2, 3)
    lab = Lab(prefix=PREFIX, state_root=tmp_path_factory.mktemp("locate"))
    try:
        lab.up(scenario, helper=request.param == "locate_hop3")  # probe run needs the helper
        yield lab, scenario.censor_hop
    finally:
        lab.down()


def locate(lab: Lab, domain: str, *args: str) -> dict[str, Any]:
    done = lab.exec([sys.executable, "-m", "probe", "locate", domain, "--max-ttl", "6",
                     "--max-seconds", "60", "--json", *args], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_a_reset_is_located_at_the_censors_hop_and_called_injected(path_lab) -> None:
    lab, hop = path_lab
    found = locate(lab, "navalny.com")
    assert (found["hop"], found["method"]) == (hop, "ttl_reset"), found["evidence"]
    assert found["control_clean"] is True
    assert found["router"] == (f"10.77.{100 + hop}.2"), found  # a1, the router after the box
    assert found["injected"]["injected"] is True, found["injected"]
    reset, syn_ack = (next(p for p in _probe(found, hop)["packets"] if p["kind"] == kind)
                      for kind in ("rst", "syn_ack"))
    assert reset["ttl"] == syn_ack["ttl"] + 1  # the box is one hop nearer than the server
    assert [p["reaction"] for p in found["probes"] if p["control"]] == ["none"] * hop


def test_a_dropped_flow_is_located_by_its_silence(path_lab) -> None:
    lab, hop = path_lab
    found = locate(lab, "votesmart.appspot.com")
    assert (found["hop"], found["method"]) == (hop, "ttl_silence"), found["evidence"]
    assert found["control_clean"] is True
    assert found["injected"] is None  # nothing was sent to examine


def test_a_blockpage_is_located_and_its_proxy_told_from_the_server(path_lab) -> None:
    lab, hop = path_lab
    found = locate(lab, "navalny.app", "--url", "http://navalny.app/")
    assert (found["hop"], found["method"]) == (hop, "ttl_blockpage"), found["evidence"]
    assert found["port"] == 80 and found["control_clean"] is True
    assert found["injected"]["packet"] == "blockpage"
    assert found["injected"]["injected"] is True, found["injected"]["evidence"]


def test_a_policer_is_located_by_the_rate_of_the_follow_up(path_lab) -> None:
    lab, hop = path_lab
    found = locate(lab, "abs.twimg.com", "--rate-path", "/media/big.bin")
    assert (found["hop"], found["method"]) == (hop, "ttl_rate"), found["evidence"]
    slow = _probe(found, hop)
    control = next(p for p in found["probes"] if p["control"] and p["ttl"] == hop)
    assert slow["rate_bps"] < 1_000_000 < control["rate_bps"], (slow, control)


def test_the_control_name_is_clean_up_to_the_server(path_lab) -> None:
    lab, hop = path_lab
    found = locate(lab, "www.example.com")
    assert found["hop"] is None and found["method"] == "none", found["evidence"]
    assert found["server_hop"] == hop + 1  # the server is behind the router after the box
    assert found["control_clean"] is True
    routers = [p["router"] for p in found["probes"] if p["control"]][:hop]
    assert all(routers), found["evidence"]  # every router on the way answered ICMP


def test_a_closed_ports_reset_is_not_called_injected(path_lab) -> None:
    lab, _ = path_lab
    found = locate(lab, "rt.com")
    assert found["failure"] == "connection_refused" and found["hop"] is None
    assert found["injected"]["injected"] is not True, found["injected"]


def test_probe_run_records_the_middlebox(path_lab, tmp_path: Path) -> None:
    lab, hop = path_lab
    if hop != 3:
        pytest.skip("run once, on the hop-3 path")
    targets = tmp_path / "t.yaml"
    big = "/media/big.bin"
    targets.write_text(
        "targets:\n  - {domain: navalny.com, control: www.example.com}\n"
        f"  - {{domain: abs.twimg.com, control: www.example.com, throughput_url: "
        f"'https://abs.twimg.com{big}', control_throughput_url: 'https://www.example.com{big}'}}\n")
    command = probe_command({**lab.state(), "targets_file": str(targets)},
                            str(tmp_path / "results"))
    done = lab.exec(command, timeout=240)
    lines = {x["input"]: x for x in map(json.loads, (line for line in done.stdout.splitlines()
                                                     if line.startswith("{")))}
    assert len(lines) == 2, done.stderr[-3000:]
    reset, slow = lines["https://navalny.com/"], lines["https://abs.twimg.com/"]
    assert (reset["verdict"], reset["blocking"]) == ("blocked", "tls"), reset["test_keys"]
    assert reset["middlebox"]["hop"] == 3 and reset["injected"] is True, reset["middlebox"]
    assert reset["middlebox"]["method"] == "ttl_reset"
    assert "probes" not in reset["middlebox"]  # the attempts are in the evidence only
    assert reset["test_keys"]["evidence"]["middlebox"]["probes"]
    assert slow["verdict"] == "throttled", slow["test_keys"]["reason"]
    assert (slow["middlebox"]["hop"], slow["middlebox"]["method"]) == (3, "ttl_rate"), \
        slow["middlebox"]["evidence"]
    assert slow["injected"] is None  # a policer sends nothing to examine


def _probe(found: dict[str, Any], ttl: int) -> dict[str, Any]:
    return next(p for p in found["probes"] if not p["control"] and p["ttl"] == ttl)


def test_without_raw_socket_rights_locate_says_so_and_sends_nothing(path_lab) -> None:
    lab, _ = path_lab
    done = lab.exec(["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw",
                     sys.executable, "-m", "probe", "locate", "navalny.com", "--json"],
                    timeout=60)
    assert done.returncode == 3, done.stderr[-2000:]
    found = json.loads(done.stdout)
    assert found["failure"] == "raw_socket_denied" and found["probes"] == []


def test_probe_run_without_raw_sockets_says_so_once_and_nothing_else_changes(
        path_lab, tmp_path: Path) -> None:
    lab, hop = path_lab
    if hop != 3:
        pytest.skip("run once, on the hop-3 path")
    targets = tmp_path / "t.yaml"
    targets.write_text("targets:\n  - {domain: navalny.com, control: www.example.com}\n"
                       "  - {domain: votesmart.appspot.com, control: www.example.com}\n")
    command = probe_command({**lab.state(), "targets_file": str(targets)},
                            str(tmp_path / "results"))
    done = lab.exec(["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw",
                     *command, "--no-throughput"], timeout=240)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [(x["verdict"], x["blocking"]) for x in lines] == [("blocked", "tls")] * 2, done.stderr
    assert all(x["middlebox"] is None and x["injected"] is None for x in lines)
    assert done.stderr.count(notices.NO_RAW_SOCKETS) == 1, done.stderr[-3000:]


def test_the_longer_path_leaves_nothing_behind(lab_capable, tmp_path: Path) -> None:
    lab = Lab(prefix="plcd", state_root=tmp_path)
    try:
        lab.up(scenarios.load("locate_hop2"), helper=False)
        assert set(topology.list_namespaces("plcd")) == set(lab.names.all)
        assert len(lab.names.all) == 5  # client, r1, censor, a1, net
    finally:
        lab.down()
    assert topology.list_namespaces("plcd") == []
    crashed = Lab(prefix="plcd", state_root=tmp_path)  # a fresh instance knows no routers ...
    crashed.up(scenarios.load("locate_hop3"), helper=False)
    Lab(prefix="plcd", state_root=tmp_path).down()  # ... yet cleans them up by prefix
    assert topology.list_namespaces("plcd") == []


def test_probe_run_calls_a_raced_dns_answer_injected(lab_capable, tmp_path: Path) -> None:
    """The dns_injection scenario (the three-namespace lab): the forged answer wins the race."""
    lab = Lab(prefix="plci", state_root=tmp_path)
    targets = tmp_path / "t.yaml"
    targets.write_text("targets:\n  - {domain: twitter.com, control: www.example.com}\n")
    try:
        state = lab.up(scenarios.load("dns_injection"), helper=False)
        command = probe_command({**state, "targets_file": str(targets)},
                                str(tmp_path / "results"))
        done = lab.exec([*command, "--no-throughput"], timeout=240)
    finally:
        lab.down()
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stderr[-3000:]
    line = lines[0]
    assert (line["verdict"], line["blocking"]) == ("blocked", "dns"), line["test_keys"]["reason"]
    assert line["middlebox"] is None and line["injected"] is True
    evidence = line["test_keys"]["injection"]["evidence"]
    assert any("10.77.3.1" in e for e in evidence) and "forged" in evidence[-1], evidence
