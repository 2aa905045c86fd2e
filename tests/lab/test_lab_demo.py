"""End to end: the real `probe run` inside the lab reaches the verdicts the scenarios expect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from probe.lab import scenarios
from probe.lab.demo import compare, run_scenario, table
from probe.lab.lifecycle import Lab

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("name", ["tls_rst"])
def test_probe_verdicts_match_the_scenario(lab_capable, tmp_path: Path, name: str) -> None:
    lab = Lab("plabd", tmp_path)
    rows, stderr = run_scenario(lab, scenarios.load(name), timeout=240)
    assert rows and all(row.ok for row in rows), table(rows) + "\n" + stderr[-3000:]
    assert not lab.state_file.exists()  # torn down


@pytest.mark.timeout(1500)
def test_demo_passes_every_scenario_twice_from_the_command_line(lab_capable) -> None:
    """`probe lab demo`, as a user runs it: every scenario, two rounds (no flaky lab)."""
    lab = [sys.executable, "-m", "probe", "lab", "--prefix", "plabc"]
    try:
        done = subprocess.run([*lab, "demo", "--repeat", "2"], capture_output=True, text=True,
                              timeout=1200)
    finally:  # a demo killed on timeout cannot tear its lab down itself
        subprocess.run([*lab, "down"], capture_output=True, timeout=120)
    wrong = [line for line in done.stdout.splitlines()
             if "://" in line and not line.rstrip().endswith(" ok")]
    assert done.returncode == 0, "\n".join(wrong) or done.stdout[-3000:] + done.stderr[-3000:]
    total = sum(len(s.targets) for s in scenarios.all_scenarios()) * 2
    assert f"{total}/{total} verdicts as expected" in done.stdout, done.stdout[-3000:]


def test_compare_flags_a_wrong_or_missing_verdict() -> None:
    scenario = scenarios.load("tls_rst")
    line = '{"input":"https://navalny.com/","verdict":"blocked","blocking":"dns","failure":null}'
    rows = {row.url: row for row in compare(scenario, line + "\nnot json\n")}
    assert not rows["https://navalny.com/"].ok  # right verdict, wrong blocking
    assert rows["https://www.example.com/"].observed == "missing"
    assert not rows["https://www.example.com/"].ok
