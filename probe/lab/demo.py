"""`probe lab demo`: build each scenario, run `probe run` inside the client namespace against its
targets, and compare the verdicts with the ones the scenario expects."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from probe.lab.lifecycle import Lab
from probe.lab.scenarios import Scenario


@dataclass(frozen=True)
class Row:
    scenario: str
    url: str
    expected: str
    observed: str
    failure: str | None
    ok: bool


def probe_command(state: dict, out_dir: str, via_th: bool = False) -> list[str]:
    """The `probe run` command line for a lab that is up (run it in the client namespace).
    `via_th`: the control comes only through the OONI test-helper protocol (`--th` to the lab's
    helper instead of `--helper`, and no control resolver). --config /dev/null and
    --no-third-party: neither the operator's probe.toml nor a public default leaks in."""
    command = [sys.executable, "-m", "probe", "run", "--config", "/dev/null", "--no-third-party",
               "--targets", state["targets_file"], "--json", "--ca-file", state["ca_file"],
               "--out", out_dir, "--timeout", "3"]
    if not via_th:
        command += ["--control-resolver", state["control_resolver"]]
    if state.get("helper_url"):
        command += ["--th" if via_th else "--helper", state["helper_url"]]
    return command


def _observed(lines: str) -> dict[str, dict]:
    """`probe run --json` output, by input URL and by domain (one JSON object a line)."""
    found: dict[str, dict] = {}
    for line in lines.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            found[record["input"]] = record
            found.setdefault(urlsplit(record["input"]).hostname or record["input"], record)
    return found


def compare(scenario: Scenario, stdout: str) -> list[Row]:
    observed = _observed(stdout)
    rows = []
    for target in scenario.targets:
        record = observed.get(target.url) or observed.get(target.domain) or {}
        verdict, blocking = record.get("verdict"), record.get("blocking")
        shown = f"{verdict} ({blocking})" if blocking else str(verdict or "missing")
        rows.append(Row(scenario.name, target.url, target.describe(), shown,
                        record.get("failure"), target.met_by(verdict, blocking)))
    return rows


def run_scenario(lab: Lab, scenario: Scenario, timeout: float = 300.0,
                 via_th: bool = False) -> tuple[list[Row], str]:
    """Builds the scenario, runs the probe in it, tears it down; rows and the probe's stderr."""
    try:
        state = lab.up(scenario)
        command = probe_command(state, str(lab.dir / "results"), via_th)
        done = lab.exec(command, timeout=timeout)
        return compare(scenario, done.stdout), done.stderr
    finally:
        lab.down()


def table(rows: list[Row]) -> str:
    headers = ("scenario", "target", "expected", "observed", "failure", "")
    cells = [headers] + [(r.scenario, r.url, r.expected, r.observed, r.failure or "",
                          "ok" if r.ok else "MISMATCH") for r in rows]
    widths = [max(len(str(c[i])) for c in cells) for i in range(len(headers))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def demo(lab: Lab, scenarios: list[Scenario], repeat: int = 1,
         echo: Callable[[str], None] = print) -> bool:
    """Runs every scenario `repeat` times; True when every verdict met its expectation."""
    all_rows: list[Row] = []
    for round_ in range(repeat):
        for scenario in scenarios:
            echo(f"-- {scenario.name} (round {round_ + 1}/{repeat}): {scenario.description}")
            rows, stderr = run_scenario(lab, scenario)
            if not rows or any(r.observed == "missing" for r in rows):
                echo(stderr[-2000:])
            echo(table(rows))
            all_rows += rows
    bad = [r for r in all_rows if not r.ok]
    echo(f"\n{len(all_rows) - len(bad)}/{len(all_rows)} verdicts as expected")
    return not bad
