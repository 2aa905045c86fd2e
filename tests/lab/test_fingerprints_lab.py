"""The lab's ISP resolver forges an address that is one of OONI's DNS fingerprints (Iran's
10.10.34.35 sinkhole, ooni.ir_5); the probe's DNS measurement, run in the client namespace
against its system resolver, records the fingerprint, and the verdict calls it DNS blocking
with no control at all.

Only DNS is measured: the lab serves nothing at 10.10.34.35 and the client namespace has no
route to it, so nothing is ever sent there. Own namespace prefix "plfp", under the lab lock."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from probe.lab.lifecycle import Lab
from probe.lab.scenarios import Expectation, Scenario
from probe.model import DnsResult, Evidence, Target, TargetMeasurement, from_dict
from probe.verdict import judge

pytestmark = pytest.mark.lab

PREFIX = "plfp"
SINKHOLE = "10.10.34.35"  # ooni.ir_5 in probe/data/ooni_fingerprints_dns.csv

SCENARIO = Scenario(
    name="ooni_dns_fingerprint",
    description="The ISP resolver answers navalny.com with a known blockpage address.",
    rules=({"action": "dns_forge", "names": ["navalny.com"], "address": SINKHOLE},),
    targets=(Expectation(url="https://navalny.com/", verdicts=("blocked",), blocking="dns"),),
)

MEASURE = """
import asyncio, json, sys
from probe.measure import dns
from probe.model import DnsQuery, Settings, to_dict
result = asyncio.run(dns.measure(DnsQuery(sys.argv[1], "system"), Settings(timeout=3.0)))
print(json.dumps(to_dict(result)))
"""


@pytest.fixture
def lab(lab_capable: None, tmp_path: Path):
    built = Lab(prefix=PREFIX, state_root=tmp_path / "state")
    try:
        built.up(SCENARIO, helper=False)
        yield built
    finally:
        built.down()


def _measure(lab: Lab, name: str) -> DnsResult:
    done = lab.exec([sys.executable, "-c", MEASURE, name], timeout=30)
    assert done.returncode == 0, done.stderr
    return from_dict(json.loads(done.stdout), DnsResult)


def test_forged_known_blockpage_address_is_recorded_and_judged_dns_blocking(lab: Lab) -> None:
    forged = _measure(lab, "navalny.com")
    assert forged.resolver_kind == "system" and forged.addresses == (SINKHOLE,)
    assert forged.fingerprint == "ooni.ir_5"
    clean = _measure(lab, "www.example.com")
    assert clean.failure is None and clean.addresses and clean.fingerprint is None
    target = Target(domain="navalny.com", url="https://navalny.com/", category="POLR",
                    source="lab")
    m = TargetMeasurement(target=target, start_time=0.0, runtime=0.0,
                          probe=Evidence(dns=(forged,)), control=Evidence())
    v = judge(m)
    assert (v.verdict, v.blocking, v.rule) == ("blocked", "dns", "dns.blockpage_address")
