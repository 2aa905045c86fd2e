"""The real `probe run` in the lab's blocking scenarios with the control coming only through the
OONI test-helper protocol: `--th` to `probe serve` in the lab, no `--helper`, no control
resolver. Throttling scenarios are out of scope (throughput needs our bulk endpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probe.lab import scenarios
from probe.lab.demo import compare, probe_command, table
from probe.lab.lifecycle import Lab

pytestmark = pytest.mark.lab

PREFIX = "plabo"


@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", ["tls_rst", "dns_nxdomain", "ip_blackhole", "http_blockpage",
                                  "origin_down"])
def test_verdicts_with_only_the_ooni_control(lab_capable, tmp_path: Path, name: str) -> None:
    lab = Lab(PREFIX, tmp_path)
    scenario = scenarios.load(name)
    try:
        state = lab.up(scenario)
        command = probe_command(state, str(lab.dir / "results"), via_th=True)
        assert "--th" in command and "--helper" not in command
        assert "--control-resolver" not in command
        done = lab.exec(command, timeout=300)
    finally:
        lab.down()
    rows = compare(scenario, done.stdout)
    assert rows and all(row.ok for row in rows), table(rows) + "\n" + done.stderr[-3000:]
    sources = {json.loads(line)["test_keys"]["control_source"]
               for line in done.stdout.splitlines() if line.startswith("{")}
    assert sources == {"ooni-th"}, done.stdout[-2000:]
