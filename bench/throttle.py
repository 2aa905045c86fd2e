"""True and false positives of the SNI-swap throttling test, with bytes and time to verdict.

    sudo /work/venv/bin/python bench/throttle.py [--runs 20] [--only NAME,...]

Each scenario (data below) shapes the link, optionally installs an SNI policer (hashlimit per
flow, as the Twitter throttler did) and runs probe.throttling.abtest.sni_swap N times with the default
budget. A positive is state == "throttled". Prints, per scenario: the states seen, the positive
rate against what was expected, and the median / max bytes and seconds to a verdict.
Not a timed test: it prints figures.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.netns import BULK_NAME, SRV_IP, Pair  # noqa: E402

# name, link rate, policed pattern (None: no censor), target SNI, is throttling expected?
SCENARIOS = (
    {"name": "policed_sni", "link": "50mbit", "police": "twimg.com", "rate_bps": 140_000,
     "target": "abs.twimg.com", "throttled": True},
    {"name": "policed_sni_500k", "link": "50mbit", "police": "twimg.com", "rate_bps": 500_000,
     "target": "pbs.twimg.com", "throttled": True},
    {"name": "unmatched_sni", "link": "50mbit", "police": "twimg.com", "rate_bps": 140_000,
     "target": "twitter.com", "throttled": False},
    {"name": "congested_link", "link": "800kbit", "police": None, "target": "abs.twimg.com",
     "throttled": False},
    {"name": "fast_link", "link": "1gbit", "police": None, "target": "abs.twimg.com",
     "throttled": False},
)

SWAP = """
import asyncio, json, sys, time
from probe.throttling import abtest
from probe.model import Settings
async def main():
    url, address, target, ca, runs = sys.argv[1:6]
    for _ in range(int(runs)):
        start = time.monotonic()
        t, c, est = await abtest.sni_swap(url, address, target, "www.example.org",
                                          Settings(ca_file=ca))
        print(json.dumps({"state": est.state, "bytes": est.bytes_used, "pairs": len(t),
                          "seconds": time.monotonic() - start, "rate": est.rate_bps,
                          "control": est.control_rate_bps}), flush=True)
asyncio.run(main())
"""


def run_scenario(pair: Pair, scenario: dict, runs: int) -> list[dict]:
    pair.run(pair.cli, "iptables", "-F")
    pair.run(pair.cli, "iptables", "-X", check=False)
    pair.shape(scenario["link"])
    if scenario["police"]:
        pair.police(scenario["police"], scenario["rate_bps"])
    url = f"https://{BULK_NAME}/bulk?bytes={1 << 20}"
    return pair.python(SWAP, url, SRV_IP, scenario["target"], pair.ca_file, str(runs),
                       timeout=60 * runs)


def report(scenario: dict, results: list[dict]) -> str:
    states = collections.Counter(r["state"] for r in results)
    positives = states["throttled"]
    kind = "TP" if scenario["throttled"] else "FP"
    kbytes = [r["bytes"] / 1024 for r in results]
    secs = [r["seconds"] for r in results]
    rate = statistics.median(r["rate"] or 0.0 for r in results) / 1e3
    return (f"{scenario['name']:<17} {kind} {positives:>2}/{len(results):<3} "
            f"{dict(states)!s:<40} KiB med {statistics.median(kbytes):6.0f} max {max(kbytes):6.0f}"
            f"  s med {statistics.median(secs):5.1f} max {max(secs):5.1f}"
            f"  target kbit/s {rate:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it builds network namespaces")
    chosen = [s for s in SCENARIOS if not args.only or s["name"] in args.only.split(",")]
    with Pair("pft") as pair:
        for scenario in chosen:
            print(report(scenario, run_scenario(pair, scenario, args.runs)), flush=True)


if __name__ == "__main__":
    main()
