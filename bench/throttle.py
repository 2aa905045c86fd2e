"""True and false positives of the SNI-swap throttling test, with bytes and time to verdict.

    sudo .venv/bin/python bench/throttle.py [--runs 20] [--only NAME,...] [--json-out FILE]
    .venv/bin/python bench/throttle.py --combine FILE [FILE ...]
    .venv/bin/python bench/throttle.py --replay FILE [FILE ...]

Each scenario (data below) shapes the link (htb), optionally polices (hashlimit per flow, as the
Twitter throttler did) or shapes (an htb class, queued) flows whose ClientHello names twimg.com,
or adds a look-alike (competing traffic, random loss, a server slow for every SNI), and runs the
adaptive probe.throttling.abtest.sni_swap N times with the default budget. A positive is state
"throttled". Prints, per scenario: the states seen, the positive count, MB and seconds to a
verdict (median, max), and for throttling the rate error against the censor's rate.
`--json-out` keeps each scenario's runs (with the flows' samples) so that chunks run at
different times can be printed as one table with `--combine`; `--replay` prints that table
after judging the recorded flows again with the code as it is now (`replay`: a changed
estimator tried offline). Needs ethtool (the link without TSO/GSO, see wire_sized). Not a timed
test: it prints figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.netns import BULK_NAME, SRV_IP, Pair  # noqa: E402
from probe.model import ThroughputResult  # noqa: E402
from probe.throttling import abtest, decide, rates  # noqa: E402

RATES = {"64k": 64_000, "140k": 140_000, "500k": 500_000, "2M": 2_000_000, "10M": 10_000_000}
LINKS = ("100mbit", "1gbit")


def _scenarios() -> list[dict]:
    """Per-flow policing and shaping of *.twimg.com at each rate on each link; look-alikes
    (nothing censored) that must never read throttled."""
    out = []
    for link in LINKS:
        for kind in ("police", "shape"):
            out += [{"name": f"{kind}_{label}_{link}", "link": link, kind: "twimg.com",
                     "rate_bps": rate, "throttled": True} for label, rate in RATES.items()]
        out.append({"name": f"clean_{link}", "link": link, "throttled": False})
    return out + [
        {"name": "unmatched_sni", "link": "100mbit", "police": "twimg.com", "rate_bps": 140_000,
         "target": "twitter.com", "throttled": False},
        {"name": "congested_link", "link": "20mbit", "congest": True, "throttled": False},
        {"name": "random_loss_3pct", "link": "100mbit", "loss": 0.03, "throttled": False},
        {"name": "slow_origin", "link": "100mbit", "origin_bps": 1_000_000, "throttled": False},
    ]


SCENARIOS = _scenarios()

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
                          "control": est.control_rate_bps, "below": est.excluded_below_bps,
                          "outlasted": est.outlasted_burst,
                          "targets": [[f.samples, f.steady_bps] for f in t],
                          "controls": [[f.samples, f.steady_bps] for f in c]}), flush=True)
asyncio.run(main())
"""


def wire_sized(pair: Pair) -> None:
    """No TSO/GSO on the veth: the server's TCP would otherwise hand the link segments of up to
    64 KB that cross the veth whole, so that the per-packet policer (hashlimit) and the htb
    shaper see one packet where a real link carries forty (a 1 Gbit/s flow policed at 140 kbit/s
    then delivered 0.6-1.0 x the rate from run to run, a shaped one came in 15-packet lumps)."""
    for ns, dev in ((pair.srv, "v0"), (pair.cli, "v1")):
        pair.run(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off")


def _censor(pair: Pair, scenario: dict) -> None:
    for ns in (pair.cli, pair.srv):
        pair.run(ns, "iptables", "-F")
        pair.run(ns, "iptables", "-t", "mangle", "-F")
        pair.run(ns, "iptables", "-X", check=False)
    pair.shape(scenario["link"])
    if scenario.get("police"):
        pair.police(scenario["police"], scenario["rate_bps"])
    if scenario.get("shape"):
        pair.shape_sni(scenario["shape"], scenario["rate_bps"])
    if scenario.get("origin_bps"):  # the server is slow for every SNI: deep queue, its own rate
        pair.shape_sni("", scenario["origin_bps"])
    if scenario.get("loss"):
        pair.run(pair.cli, "iptables", "-A", "INPUT", "-m", "statistic", "--mode", "random",
                 "--probability", str(scenario["loss"]), "-j", "DROP")


def run_scenario(pair: Pair, scenario: dict, runs: int) -> list[dict]:
    _censor(pair, scenario)
    background = pair.congest() if scenario.get("congest") else None
    try:
        url = f"https://{BULK_NAME}/bulk"
        return pair.python(SWAP, url, SRV_IP, scenario.get("target", "video.twimg.com"),
                           pair.ca_file, str(runs), timeout=60 * runs)
    finally:
        if background is not None:
            background.kill()
            background.wait(timeout=10)


def report(scenario: dict, results: list[dict]) -> str:
    states = collections.Counter(r["state"] for r in results)
    positives = states["throttled"]
    kind = "TP" if scenario["throttled"] else "FP"
    mbytes = [r["bytes"] / 1e6 for r in results]
    secs = [r["seconds"] for r in results]
    line = (f"{scenario['name']:<22} {kind} {positives:>2}/{len(results):<3} "
            f"{dict(states)!s:<34} MB med {statistics.median(mbytes):5.1f} max {max(mbytes):5.1f}"
            f"  s med {statistics.median(secs):5.1f} max {max(secs):5.1f}")
    changed = sum(r["state"] != r.get("recorded", r["state"]) for r in results)
    if changed:
        line += f"  state changed by the replay: {changed}/{len(results)}"
    if scenario["throttled"]:
        ratios = [r["rate"] / scenario["rate_bps"] for r in results if r["rate"]] or [9.99]
        errors = [abs(x - 1) for x in ratios]
        within = sum(e <= 0.25 for e in errors)
        line += (f"  rate within 25%: {within}/{len(results)}, |err| med "
                 f"{statistics.median(errors):.0%} max {max(errors):.0%}"
                 f" ({min(ratios):.2f}-{max(ratios):.2f}x)")
    else:
        below = [r["below"] for r in results if r["below"]]
        if below:
            line += f"  no policing below {statistics.median(below) / 1e6:.1f} Mbit/s (median)"
    return line


def combine(paths: list[str]) -> dict[str, list[dict]]:
    """The runs of every scenario in the JSON-lines files of several chunks (--json-out)."""
    runs: dict[str, list[dict]] = collections.defaultdict(list)
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                chunk = json.loads(line)
                runs[chunk["scenario"]] += chunk["runs"]
    return runs


def _flow(samples: list) -> ThroughputResult:
    """A recorded flow as the probe's result; its rates as the code computes them now."""
    series = tuple((float(t), int(b)) for t, b in samples)
    received = series[-1][1] if series else 0
    return ThroughputResult(url="https://replay/", t0=0.0, elapsed=0.0, samples=series,
                            bytes_received=received, goodput_bps=rates.goodput(series),
                            steady_bps=rates.steady_rate(series))


def replay(run: dict) -> dict:
    """A recorded run (--json-out) judged again by today's estimator and rules: the pairs grow
    and are judged as abtest.interleave would (the time budget left out: the recorded runs
    ended well before it), early stopping included; a run the new rules would have continued
    past its recorded pairs ends with them (abtest's own pair bookkeeping, so that the replay
    cannot drift from it). Returns the run with the new state and rates, the old state kept."""
    plan, pairs = abtest.Budget(), abtest._Pairs([], [])
    for (t_samples, _), (c_samples, _) in zip(run["targets"], run["controls"], strict=True):
        size, seconds = pairs.kept or plan.flow(pairs.step, plan.total_bytes - pairs.used, 1e9)
        pairs.add(_flow(t_samples), _flow(c_samples), size, seconds)
        if pairs.judged:
            early = decide.decide_early(pairs.targets[-pairs.judged:],
                                        pairs.controls[-pairs.judged:], "sni_swap")
            if early is not None and (early.state != "throttled"
                                      or pairs.judged >= decide.MIN_PAIRS_THROTTLED):
                break
    est = decide.conclude(pairs.targets, pairs.controls, pairs.judged, "sni_swap", pairs.ended)
    return {**run, "recorded": run["state"], "state": est.state, "rate": est.rate_bps,
            "control": est.control_rate_bps, "below": est.excluded_below_bps,
            "bytes": est.bytes_used}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--json-out", help="append each scenario's runs (samples included) here")
    parser.add_argument("--combine", nargs="+", metavar="FILE",
                        help="print one table from the --json-out files of several chunks")
    parser.add_argument("--replay", nargs="+", metavar="FILE",
                        help="as --combine, each recorded run judged again by the code as it is")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s["name"] in args.only.split(",")]
    if args.combine or args.replay:
        runs = combine(args.combine or args.replay)
        if args.replay:
            runs = {name: [replay(r) for r in rs] for name, rs in runs.items()}
        for scenario in (s for s in chosen if runs.get(s["name"])):
            print(report(scenario, runs[scenario["name"]]))
        return
    if os.geteuid() != 0:
        sys.exit("needs root: it builds network namespaces")
    if shutil.which("ethtool") is None:
        sys.exit("needs ethtool (Debian package ethtool): the link must carry wire-sized packets")
    with Pair("pft") as pair:  # run under `flock /tmp/probe-lab.lock`
        wire_sized(pair)
        for scenario in chosen:
            started = time.monotonic()
            results = run_scenario(pair, scenario, args.runs)
            print(report(scenario, results), f" wall {time.monotonic() - started:.0f} s",
                  flush=True)
            if args.json_out:
                with open(args.json_out, "a") as out:
                    out.write(json.dumps({"scenario": scenario["name"], "runs": results}) + "\n")


if __name__ == "__main__":
    main()
