"""An IP-literal URL from a Citizen Lab-style list, measured by the real `probe run` in the lab's
ip_blackhole scenario: no DNS step at all, and the blackholed address is TCP blocking (the
helper reaches it from outside), never a DNS verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probe.lab import scenarios
from probe.lab import topology as t
from probe.lab.demo import probe_command
from probe.lab.lifecycle import Lab
from probe.targets import CSV_HEADER

pytestmark = pytest.mark.lab

PREFIX = "plabi"


@pytest.mark.timeout(300)
def test_ip_literal_urls_in_the_ip_blackhole_scenario(lab_capable, tmp_path: Path) -> None:
    blocked, clean = (f"http://{t.ORIGINS[name]}/" for name in ("navalny.com", "www.example.com"))
    targets = tmp_path / "ip.csv"
    targets.write_text(",".join(CSV_HEADER) + f"\n{blocked},POLR,,,,\n{clean},MISC,,,,\n")
    lab = Lab(PREFIX, tmp_path / "lab")
    try:
        state = lab.up(scenarios.load("ip_blackhole"))
        command = probe_command({**state, "targets_file": str(targets)},
                                str(lab.dir / "results")) + ["--no-throughput"]
        done = lab.exec(command, timeout=240)
    finally:
        lab.down()
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    records = {r["input"]: r for r in map(json.loads, lines)}
    assert set(records) == {blocked, clean}, done.stderr[-3000:]
    for record in records.values():  # measured with no query: no DNS evidence at all
        assert record["test_keys"]["queries"] == [], record["test_keys"]["queries"]
    got = {url: (r["verdict"], r["blocking"]) for url, r in records.items()}
    assert got == {blocked: ("blocked", "tcp"), clean: ("accessible", None)}, done.stdout[-3000:]
