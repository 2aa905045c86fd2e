"""The real `probe run` in the lab with its control resolver coming only from a config file.

No helper runs, so the control resolver is the only control: without it the NXDOMAIN answers
of the ISP resolver cannot be told from a name that does not exist (the second run shows it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from probe.lab import scenarios
from probe.lab.demo import compare, table
from probe.lab.lifecycle import Lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(400)]
PREFIX = "pcfg"


def _run(lab: Lab, config: Path) -> tuple[str, str]:
    command = [sys.executable, "-m", "probe", "run", "--config", str(config), "--json"]
    done = lab.exec(command, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def test_dns_blocking_judged_with_the_control_resolver_of_the_config_file(
        lab_capable: None, tmp_path: Path) -> None:
    scenario = scenarios.load("dns_nxdomain")
    lab = Lab(PREFIX, tmp_path / "state")
    try:
        state = lab.up(scenario, helper=False)
        assert "helper_url" not in state or not state["helper_url"]
        common = (f'ca_file = "{state["ca_file"]}"\n\n[run]\ntargets = ["{state["targets_file"]}"]\n'
                  'out = "results"\ntimeout = 3\n')
        with_resolver, without = tmp_path / "with" / "probe.toml", tmp_path / "without.toml"
        with_resolver.parent.mkdir()
        with_resolver.write_text(f"[controls]\nresolvers = [\"{state['control_resolver']}\"]\n"
                                 + common)
        without.write_text(f"[controls]\n{common}")

        stdout, stderr = _run(lab, with_resolver)
        rows = compare(scenario, stdout)
        assert rows and all(row.ok for row in rows), table(rows) + "\n" + stderr[-3000:]
        assert list((with_resolver.parent / "results").glob("*.jsonl"))  # `out` of the file

        stdout, _ = _run(lab, without)  # the same lab without the file's resolver
        blocked = [r for r in compare(scenario, stdout) if r.expected.startswith("blocked")]
        assert blocked and not any(row.ok for row in blocked), table(blocked)
    finally:
        lab.down()
    assert not lab.state_file.exists()
