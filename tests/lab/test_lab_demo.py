"""End to end: the real `probe run` inside the lab reaches the verdicts the scenarios expect."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.lab import scenarios
from probe.lab.demo import compare, run_scenario, table
from probe.lab.lab import Lab

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("name", ["tls_rst", "dns_nxdomain", "throttle_twimg"])
def test_probe_verdicts_match_the_scenario(lab_capable, tmp_path: Path, name: str) -> None:
    lab = Lab("plabd", tmp_path)
    rows, stderr = run_scenario(lab, scenarios.load(name), timeout=240)
    assert rows and all(row.ok for row in rows), table(rows) + "\n" + stderr[-3000:]
    assert not lab.state_file.exists()  # torn down


def test_compare_flags_a_wrong_or_missing_verdict() -> None:
    scenario = scenarios.load("tls_rst")
    line = '{"input":"https://navalny.com/","verdict":"blocked","blocking":"dns","failure":null}'
    rows = {row.url: row for row in compare(scenario, line + "\nnot json\n")}
    assert not rows["https://navalny.com/"].ok  # right verdict, wrong blocking
    assert rows["https://www.example.com/"].observed == "missing"
    assert not rows["https://www.example.com/"].ok
