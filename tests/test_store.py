"""Results store: OONI-format lines that validate, round trip, survive torn writes and kills,
never hold the volunteer's address, and an index that answers history queries."""

from __future__ import annotations

import dataclasses
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import factories as F
import jsonschema
import pytest

from probe.model import Vantage
from probe.results.ooni import from_ooni, new_report_id, ooni_time, to_ooni
from probe.results.scrub import scrub
from probe.results.store import Store, local_addresses, read_measurements, read_records
from probe.verdict import judge

SCHEMA = json.loads((Path(__file__).parents[1] / "results" / "schema.json").read_text())
VANTAGE = Vantage(name="moscow-mts", asn="AS8359", cc="RU", network_name="MTS PJSC")
PUBLIC_IP = "203.0.113.7"  # the volunteer's address as the helper saw it (documentation range)
REPORT = "20210314T000000Z_probe_web_RU_8359_n1_0123456789abcdef"


def judged(m, throttle=None):
    return dataclasses.replace(m, verdict=judge(m, throttle))


def all_cases():
    cases = {name: judged(m) for name, (m, _, _) in F.scenarios().items()}
    probe = dataclasses.replace(F.clean_probe(), throughput=(F.throughput(1e5), F.throughput(
        5e7, F.CONTROL_SNI)))
    cases["throttled"] = judged(F.measurement(probe), F.estimate("throttled", 0.002))
    return cases


def validate(record):
    jsonschema.validate(record, SCHEMA, cls=jsonschema.Draft202012Validator)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path, VANTAGE, scrub_addresses={PUBLIC_IP}) as s:
        yield s


@pytest.mark.parametrize("name", sorted(all_cases()))
def test_stored_line_validates_and_round_trips(store, name):
    m = all_cases()[name]
    store.append(m, REPORT)
    (path,) = store.out_dir.glob("measurements-*.jsonl")
    assert path.name == "measurements-2021-03-15.jsonl"  # UTC date of start_time
    (record,) = read_records(path)
    validate(record)
    assert record["measurement_start_time"] == "2021-03-15 00:00:00"
    assert record["test_keys"]["verdict"] == m.verdict.verdict
    assert record["test_keys"]["rule"] == m.verdict.rule
    assert list(read_measurements(path)) == [m]


def test_schema_rejects_what_it_should():
    record = to_ooni(all_cases()["rst_after_client_hello"], REPORT, VANTAGE)
    validate(record)
    for broken in (
        {**record, "probe_ip": "198.51.100.1"},
        {**record, "extra": 1},
        {**record, "measurement_start_time": "2021-03-15T00:00:00Z"},
        {**record, "test_keys": {**record["test_keys"], "verdict": "censored"}},
        {**record, "test_keys": {**record["test_keys"], "blocking": None}},  # blocked needs one
        {**record, "test_keys": {**record["test_keys"], "probe_blocking": None}},
        {**record, "test_keys": {**record["test_keys"], "blocking": "tls"}},  # not WC's word
        {**record, "resolver_asn": "AS0"},  # an invented AS
        {k: v for k, v in record.items() if k != "report_id"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_ooni_shapes():
    record = to_ooni(all_cases()["throttled"], REPORT, VANTAGE)
    keys = record["test_keys"]
    assert keys["queries"][0]["answers"] == [{"answer_type": "A", "ipv4": F.REAL, "ttl": None}]
    assert keys["queries"][0]["rcode"] == 0 and keys["queries"][0]["engine"] == "udp"
    assert keys["queries"][0]["resolver_address"] == "192.0.2.53:53"
    assert keys["tcp_connect"][0]["status"] == {"failure": None, "success": True}
    assert keys["tls_handshakes"][0]["address"] == f"{F.REAL}:443"
    assert keys["requests"][0]["response"]["code"] == 200
    assert keys["control"]["dns"] == {"failure": None, "addrs": [F.REAL]}
    assert keys["control"]["tcp_connect"] == {f"{F.REAL}:443": {"status": True, "failure": None}}
    assert keys["throttling"]["state"] == "throttled" and keys["verdict"] == "throttled"
    assert (keys["accessible"], keys["blocking"], keys["probe_blocking"]) == (True, False, None)
    assert len(keys["throughput"]) == 2
    assert [e["num_bytes"] for e in keys["network_events"]] == [10000, 20000] * 2
    assert (record["probe_asn"], record["probe_cc"], record["resolver_ip"]) == (
        "AS8359", "RU", "192.0.2.53")
    assert "resolver_asn" not in record  # never looked up, so never invented


def test_one_test_start_time_per_report(store):
    """Every measurement of a report gives the run's start (carried by the report id), however
    late its own start; a report id of another making gets the first target's start."""
    cases = all_cases()
    for i, name in enumerate(("clean", "throttled", "dns_nxdomain")):
        m = dataclasses.replace(cases[name], start_time=cases[name].start_time + 600 * i)
        store.append(m, REPORT)
        store.append(m, "r-other")
    records = list(store.records())
    starts = {r["report_id"]: set() for r in records}
    for r in records:
        starts[r["report_id"]].add(r["test_start_time"])
    assert starts == {REPORT: {"2021-03-14 00:00:00"}, "r-other": {"2021-03-15 00:00:00"}}
    assert len({r["measurement_start_time"] for r in records}) == 3


PREVIOUS = Path(__file__).parent / "data" / "ooni_previous_format.jsonl"


def test_a_bounded_throttling_estimate_validates(store):
    """"No policing below X seen" (issue 12) is a state of its own in the stored record."""
    probe = dataclasses.replace(F.clean_probe(), throughput=(F.throughput(5e7), F.throughput(
        5e7, F.CONTROL_SNI)))
    bounded = dataclasses.replace(F.estimate("clean"), state="bounded", outlasted_burst=False,
                                  excluded_below_bps=4.2e6)
    record = store.append(judged(F.measurement(probe), bounded), REPORT)
    validate(record)
    assert record["test_keys"]["throttling"]["excluded_below_bps"] == 4.2e6


def test_records_of_the_previous_format_still_read(tmp_path):
    """Lines written before the Web Connectivity keys (our `blocking`, lists under `control`,
    text rcodes) rebuild the same TargetMeasurement and index the same blocking method."""
    expected = {m.verdict.rule: m for m in all_cases().values()}
    old = list(read_records(PREVIOUS))
    assert len(old) == 4 and all("probe_blocking" not in r["test_keys"] for r in old)
    for record in old:
        want = expected[record["test_keys"]["rule"]]
        # judged under the rules of their day: only the version differs
        want = dataclasses.replace(want, verdict=dataclasses.replace(
            want.verdict, rules_version=record["test_keys"]["rules_version"]))
        assert from_ooni(record) == want
    (tmp_path / "measurements-2021-03-15.jsonl").write_bytes(PREVIOUS.read_bytes())
    with Store(tmp_path, VANTAGE) as store:
        assert store.reindex() == 4
        rows = store.latest(old[0]["report_id"])
    assert [r["blocking"] for r in rows] == [None, "dns", "tls", "http"]


def test_unknown_failure_keeps_its_cause_in_ooni_spelling(store):
    fetch = F.http(failure="unknown_failure")
    fetch = dataclasses.replace(fetch, cause="OSError: [Errno 99] Cannot assign requested address")
    m = judged(F.measurement(dataclasses.replace(F.clean_probe(), http=(fetch,))))
    record = store.append(m, REPORT)
    validate(record)
    assert record["test_keys"]["requests"][0]["failure"] == (
        "unknown_failure: OSError: [Errno 99] Cannot assign requested address")
    (path,) = store.out_dir.glob("measurements-*.jsonl")
    assert list(read_measurements(path)) == [m]  # the typed record keeps failure and cause apart


def test_unjudged_measurement_is_refused(store):
    with pytest.raises(ValueError, match="judge"):
        store.append(F.measurement(), REPORT)


def test_report_id_validates():
    rid = new_report_id(VANTAGE, now=1615766400.0)
    assert rid.startswith("20210315T000000Z_probe_web_RU_8359_n1_")
    validate({**to_ooni(all_cases()["clean"], rid, VANTAGE)})
    assert ooni_time(0) == "1970-01-01 00:00:00"


# --- scrubbing ------------------------------------------------------------------------------------


def test_public_ip_appears_nowhere(store):
    leak = f"Your address is {PUBLIC_IP}."
    probe = dataclasses.replace(
        F.clean_probe(),
        dns=(F.dns((F.REAL, PUBLIC_IP)),),
        http=(dataclasses.replace(F.http(), body_head=leak, headers=(("X-Client-IP", PUBLIC_IP),),
                                  title=leak),),
    )
    control = dataclasses.replace(F.clean_control(), tcp=(F.tcp(PUBLIC_IP),))
    store.append(judged(F.measurement(probe, control)), REPORT)
    text = "".join(p.read_text() for p in store.out_dir.glob("*.jsonl"))
    assert PUBLIC_IP not in text
    assert text.count("[scrubbed]") >= 5
    (record,) = store.records()
    validate(record)
    assert from_ooni(record).probe.http[0].body_head == "Your address is [scrubbed]."
    rows = sqlite3.connect(store.out_dir / "index.sqlite").iterdump()
    assert PUBLIC_IP not in "\n".join(rows)


def test_scrub_leaves_other_addresses_alone():
    text = "203.0.113.70 1203.0.113.7 203.0.113.7, 2001:db8::1 2001:db8::10 127.0.0.1"
    assert scrub(text, {"203.0.113.7", "2001:DB8::1", "127.0.0.1", "nonsense"}) == (
        "203.0.113.70 1203.0.113.7 [scrubbed], [scrubbed] 2001:db8::10 127.0.0.1")


# --- durability -----------------------------------------------------------------------------------


def test_torn_last_line_is_skipped_and_repaired(store):
    cases = all_cases()
    store.append(cases["clean"], REPORT)
    (path,) = store.out_dir.glob("*.jsonl")
    whole = path.read_bytes()
    with open(path, "ab") as f:  # a crash in the middle of a write
        f.write(whole[: len(whole) // 2])
    assert [r["report_id"] for r in read_records(path)] == [REPORT]
    store.append(cases["dns_nxdomain"], REPORT)
    verdicts = [r["test_keys"]["rule"] for r in read_records(path)]
    assert verdicts == ["accessible.http", "dns.nxdomain"]
    assert len(path.read_bytes().splitlines()) == 3


def test_completed_targets_survive_a_kill(tmp_path):
    """A run killed with SIGKILL right after appending keeps every appended line."""
    code = f"""
import dataclasses, os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import factories as F
from probe.results.store import Store
from probe.verdict import judge
store = Store(sys.argv[1], "kill-test")
for name, (m, _, _) in list(F.scenarios().items())[:3]:
    store.append(dataclasses.replace(m, verdict=judge(m)), "r1")
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=60,
                          cwd=Path(__file__).parents[1], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    records = [r for p in tmp_path.glob("*.jsonl") for r in read_records(p)]
    assert len(records) == 3
    with Store(tmp_path, "kill-test") as store:
        assert store.runs()[0]["targets"] == 3


# --- the index ------------------------------------------------------------------------------------


def test_index_queries(tmp_path):
    cases = all_cases()
    with Store(tmp_path, VANTAGE) as moscow, Store(tmp_path, "berlin") as berlin:
        for i, rid in enumerate(["r1", "r2", "r3"]):
            for name in ("clean", "throttled", "rst_after_client_hello"):
                m = cases[name]
                m = dataclasses.replace(m, start_time=m.start_time + 3600 * i + 1)
                moscow.append(m, rid)
        berlin.append(cases["clean"], "b1")
        other = dataclasses.replace(F.target("rt.com"), category="NEWS")
        late = dataclasses.replace(F.measurement(tgt=other), start_time=cases["clean"].start_time
                                   + 7300)
        moscow.append(judged(late), "r3")

        history = moscow.history("twitter.com", limit=4)
        assert [r["report_id"] for r in history] == ["r3", "r3", "r3", "r2"]
        assert all(r["vantage"] == "moscow-mts" and r["cc"] == "RU" for r in history)
        throttled = [r for r in moscow.history("twitter.com") if r["verdict"] == "throttled"]
        assert len(throttled) == 3
        assert throttled[0]["ratio"] == pytest.approx(0.002)
        assert throttled[0]["method"] == "sni_swap" and throttled[0]["rate_bps"] > 0
        assert [r["report_id"] for r in moscow.history("twitter.com", "berlin")] == ["b1"]

        runs = moscow.runs()
        assert [r["report_id"] for r in runs] == ["r3", "r2", "r1", "b1"]
        assert runs[0]["counts"] == {"accessible": 2, "throttled": 1, "blocked": 1}
        assert [r["domain"] for r in moscow.latest()] == ["twitter.com"] * 3 + ["rt.com"]
        assert [r["rule"] for r in moscow.latest("r1")] == [
            "accessible.http", "throttle.throttled", "tls.sni_reset"]
        mode = moscow._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_control_rate_history_is_this_vantages_oldest_first(tmp_path):
    cases = all_cases()
    with Store(tmp_path, VANTAGE) as moscow, Store(tmp_path, "berlin") as berlin:
        for i in (2, 0, 1):  # appended out of order
            m = cases["throttled"]
            moscow.append(dataclasses.replace(m, start_time=m.start_time + 60 * i), f"r{i}")
        moscow.append(cases["clean"], "r9")  # no throughput test: not in the history
        berlin.append(cases["throttled"], "b1")
        history = moscow.control_rate_history("twitter.com")
        start = cases["throttled"].start_time
        control = cases["throttled"].verdict.throttling.control_rate_bps
        assert history == [(start, control), (start + 60, control), (start + 120, control)]
        assert len(berlin.control_rate_history("twitter.com")) == 1


def test_empty_store_queries(store):
    assert store.runs() == [] and store.latest() == [] and store.history("t.co") == []


def test_reader_ignores_garbage(tmp_path):
    path = tmp_path / "measurements-2021-03-15.jsonl"
    path.write_bytes(b'\xff\xfe\n[1, 2]\n{"no": "test_keys"}\n{"test_keys": {}}\n{"trunc')
    assert len(list(read_records(path))) == 1
    assert list(read_measurements(path)) == []


def test_local_addresses_are_real_and_not_loopback():
    found = local_addresses()
    assert "127.0.0.1" not in found and "::1" not in found
    import subprocess as sp

    shown = sp.run(["ip", "-j", "addr"], capture_output=True, check=True, timeout=5).stdout.decode()
    assert all(a in shown or a in sp.getoutput("getent ahosts $(hostname)") for a in found)


def test_reindex_rebuilds_from_lines(tmp_path):
    cases = all_cases()
    with Store(tmp_path, VANTAGE) as moscow, Store(tmp_path, "berlin") as berlin:
        moscow.append(cases["clean"], "r1")
        berlin.append(cases["throttled"], "b1")
        before = moscow.latest("r1") + moscow.latest("b1")
    (tmp_path / "index.sqlite").unlink()
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    with Store(tmp_path, VANTAGE) as store:
        assert store.runs() == []
        assert store.reindex() == 2
        after = store.latest("r1") + store.latest("b1")
    assert [{k: v for k, v in r.items() if k != "id"} for r in after] == [
        {k: v for k, v in r.items() if k != "id"} for r in before]
