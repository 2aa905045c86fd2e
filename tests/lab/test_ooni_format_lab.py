"""Every line the real `probe run` writes in the lab is a valid OONI measurement that OONI's own
models (oonidata 0.3.0) load as Web Connectivity test keys with nothing of that shape dropped.

Runs `probe run` the way `probe lab demo` does (probe.lab.demo.probe_command), but keeps the
results directory outside the lab's state (which `down` removes). Own prefix: "pooni".
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from test_ooni_format import ALLOWED, loads_as_web_connectivity
from test_store import validate

from probe.lab import scenarios
from probe.lab.demo import compare, probe_command, table
from probe.lab.lifecycle import Lab
from probe.results.ooni import from_ooni
from probe.results.store import read_records

pytestmark = pytest.mark.lab
PREFIX = "pooni"


def run_probe(tmp_path: Path, name: str) -> tuple[list[dict], str]:
    """The stored records of one `probe run` in scenario `name`, and the run's stdout."""
    lab = Lab(PREFIX, tmp_path / "state")
    out = tmp_path / "results"
    out.mkdir()
    scenario = scenarios.load(name)
    try:
        state = lab.up(scenario)
        done = lab.exec(probe_command(state, str(out)), timeout=240)
    finally:
        lab.down()
    rows = compare(scenario, done.stdout)
    assert rows and all(r.ok for r in rows), table(rows) + "\n" + done.stderr[-3000:]
    records = [r for path in sorted(out.glob("measurements-*.jsonl")) for r in read_records(path)]
    assert len(records) == len(scenario.targets), done.stderr[-3000:]
    return records, done.stdout


def check_common(records: list[dict]) -> None:
    for record in records:
        validate(record)
        lost = loads_as_web_connectivity(record)
        assert lost <= ALLOWED, sorted(lost - ALLOWED)
        keys = record["test_keys"]
        m = from_ooni(record)
        assert m.verdict is not None and m.verdict.verdict == keys["verdict"]
        assert "resolver_asn" not in record
        system = [q for q in keys["queries"] if q["tags"] == ["system_resolver"]]
        assert system and all(q["engine"] == "udp" and isinstance(q["rcode"], int)
                              for q in system if q["failure"] != "generic_timeout_error")
        assert [q["query_type"] for q in system] == ["A", "AAAA"]
        for handshake in keys["tls_handshakes"]:
            if handshake["failure"] is None:  # the lab CA's chain, as DER
                der = base64.b64decode(handshake["peer_certificates"][0]["data"])
                leaf = x509.load_der_x509_certificate(der)
                assert leaf.subject is not None
        for query in keys["queries"]:
            assert all(a["ttl"] is not None for a in query["answers"])  # real answers have TTLs
    assert len({r["test_start_time"] for r in records}) == 1  # one run, one report
    assert len({r["report_id"] for r in records}) == 1


def test_throttling_scenario_lines_load_in_oonidata(lab_capable, tmp_path: Path) -> None:
    records, _ = run_probe(tmp_path, "throttle_twimg")
    check_common(records)
    by_host = {r["input"].split("/")[2]: r["test_keys"] for r in records}
    throttled = by_host["abs.twimg.com"]
    assert (throttled["verdict"], throttled["accessible"], throttled["blocking"]) == (
        "throttled", True, False)
    events = throttled["network_events"]
    assert events and {e["operation"] for e in events} == {"bytes_received_cumulative"}
    flows: dict[str, list[int]] = {}
    for e in events:
        flows.setdefault(json.dumps(e["tags"]), []).append(e["num_bytes"])
    assert len(flows) == len(throttled["throughput"]) >= 2
    assert all(v == sorted(v) and v[-1] > 0 for v in flows.values())  # cumulative, per flow
    names = {tag for e in events for tag in e["tags"] if tag.startswith("server_name=")}
    assert "server_name=abs.twimg.com" in names and len(names) >= 2  # target and control SNI


def test_dns_injection_lines_load_in_oonidata(lab_capable, tmp_path: Path) -> None:
    records, _ = run_probe(tmp_path, "dns_injection")
    check_common(records)
    keys = {r["input"].split("/")[2]: r["test_keys"] for r in records}
    blocked = keys["twitter.com"]
    assert (blocked["accessible"], blocked["blocking"], blocked["probe_blocking"]) == (
        False, "dns", "dns")
    assert blocked["dns_consistency"] == "inconsistent"
    assert max(q["responses"] for q in blocked["queries"]) >= 2  # the injector's mark
    clean = keys["www.example.com"]
    assert (clean["accessible"], clean["blocking"]) == (True, False)
    assert clean["control"]["tcp_connect"] and clean["control"]["dns"]["addrs"]
