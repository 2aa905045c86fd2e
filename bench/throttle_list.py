"""The throttling stage at list scale: N lab targets, 3 policed and 2 slow origins, one run.

    sudo .venv/bin/python bench/throttle_list.py [--n 1000] [--concurrency 64]

The lab of bench/scale.py (own prefix `pthl`): N names t00001.scale.lab ... on one origin, the
trusted resolver's DoH and the helper (`probe serve`, whose /bulk the SNI-swap flows use). The
censor polices three of the names (exact SNI, hashlimit per flow at 140 kbit/s, the one-second
burst hashlimit allows, as lab scenario throttle_twimg) and two other names are served by a slow
origin (400 kbit/s, 300 ms before answering, for every SNI and every client). `probe run` with
throughput on (the default screen + full A/B for suspects, the default --data-budget) measures
all of them. Printed: run time, bytes counted by an iptables rule on the censor's FORWARD path
(every byte between the client and the internet, both directions), the verdicts, what the
policed and slow names got, and the throughput account from the run's notices.
Holds /tmp/probe-lab.lock throughout (bench.scale.lab_lock).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scale import (  # noqa: E402
    ScaleLab,
    lab_lock,
    names,
)
from probe.lab import topology  # noqa: E402
from probe.lab.scenarios import Scenario  # noqa: E402

SLOW_IPS = ("10.77.10.2", "10.77.10.3")  # origin addresses of their own: slowness is per address


def chosen(n: int) -> tuple[list[str], list[str]]:
    """The policed and the slow names, spread over the list."""
    all_names = names(n)
    return ([all_names[n // 5], all_names[n // 2], all_names[n - 7]],
            [all_names[n // 3], all_names[2 * n // 3]])


class ThrottleListLab(ScaleLab):
    def __init__(self, n: int) -> None:
        super().__init__(n, prefix="pthl")
        self.policed, self.slow = chosen(n)

    def _rules(self) -> list[dict[str, Any]]:
        return [{"action": "throttle", "sni": self.policed, "rate_bps": 140_000},
                {"action": "origin_slow", "names": self.slow, "rate_bps": 400_000, "delay": 0.3}]

    def _own_origins(self) -> dict[str, str]:
        return dict(zip(self.slow, SLOW_IPS, strict=True))

    def _after_censor(self) -> None:
        """The counting rule: first in FORWARD, no target (read by forwarded_bytes)."""
        topology.in_ns(self.names.censor, "iptables", "-w", "5", "-I", "FORWARD", "1")

    def forwarded_bytes(self) -> int:
        """The counting rule's bytes (the first rule of FORWARD, no target)."""
        out = subprocess.run(["ip", "netns", "exec", self.names.censor, "iptables", "-w", "5",
                              "-nvxL", "FORWARD", "1"], capture_output=True, text=True,
                             check=True).stdout.split()
        return int(out[1])


def run(lab: ThrottleListLab, concurrency: int) -> dict[str, Any]:
    state, out = lab.state(), lab.dir / "results"
    argv = ["ip", "netns", "exec", lab.names.client, sys.executable, "-m", "probe", "run",
            "--config", "/dev/null", "--targets", state["targets_file"], "--json",
            "--ca-file", state["ca_file"], "--control-resolver", state["control_resolver"],
            "--helper", state["helper_url"], "--out", str(out), "--timeout", "5",
            "--no-third-party", "--concurrency", str(concurrency)]
    before, started = lab.forwarded_bytes(), time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    seconds, counted = time.monotonic() - started, lab.forwarded_bytes() - before
    records = [json.loads(line) for path in sorted(out.glob("measurements-*.jsonl"))
               for line in path.read_text().splitlines()]
    verdicts: dict[str, int] = {}
    by_name = {}
    for record in records:
        keys = record["test_keys"]
        verdicts[keys["verdict"]] = verdicts.get(keys["verdict"], 0) + 1
        by_name[record["input"].split("/")[2]] = keys
    return {"seconds": seconds, "bytes": counted, "rc": done.returncode, "verdicts": verdicts,
            "records": len(records), "by_name": by_name,
            "notices": [line for line in done.stderr.splitlines()
                        if "throttl" in line or "outlasted" in line]}


def report(lab: ThrottleListLab, result: dict[str, Any]) -> None:
    print(f"N={lab.n}  exit {result['rc']}  {result['records']} records  "
          f"{result['seconds']:.0f} s  {result['bytes'] / 1e6:.1f} MB on the lab link")
    print(f"verdicts: {result['verdicts']}")
    for group, picked in (("policed", lab.policed), ("slow", lab.slow)):
        for name in picked:
            keys = result["by_name"].get(name, {})
            est = {k: v for k, v in (keys.get("throttling") or {}).items()
                   if k in ("state", "method", "rate_bps", "bytes_used", "excluded_below_bps")}
            print(f"  {group:<8} {name}: {keys.get('verdict')}  {json.dumps(est)[:300]}")
    false = [n for n, k in result["by_name"].items()
             if k.get("verdict") == "throttled" and n not in lab.policed]
    print(f"false alarms (throttled, not policed): {len(false)} {false[:5]}")
    for line in result["notices"]:
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with lab_lock():
        lab = ThrottleListLab(args.n)
        try:
            lab.up(Scenario(name="throttle-list", description="3 policed, 2 slow"),
                   deadline=90.0)
            report(lab, run(lab, args.concurrency))
        finally:
            lab.down()


if __name__ == "__main__":
    main()
