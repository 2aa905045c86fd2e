"""The probe's measured goodput against iperf3's, on the same htb-shaped veth link.

    sudo .venv/bin/python bench/goodput.py [--rates 10mbit,100mbit,1gbit] [--seconds 5]

For each rate: iperf3 -R (the server sends, as our bulk endpoint does) over TCP without TLS, then
probe.measure.throughput over TLS from the same namespaces. Prints both and their ratio. The
probe's figure includes TLS framing overhead (~0.3 %) and Python's decryption cost; iperf3's
does not. Not a timed test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.netns import BULK_NAME, SRV_IP, Pair  # noqa: E402

MEASURE = """
import asyncio, json, sys
from probe.measure import throughput
from probe.model import Settings, ThroughputRequest
async def main():
    url, address, ca, seconds, runs = sys.argv[1:6]
    for _ in range(int(runs)):
        r = await throughput.measure(ThroughputRequest(url, address=address,
            max_bytes=64 << 20, max_seconds=float(seconds)), Settings(ca_file=ca))
        print(json.dumps({"goodput": r.goodput_bps, "steady": r.steady_bps,
                          "bytes": r.bytes_received, "failure": r.failure}), flush=True)
asyncio.run(main())
"""


def iperf3(pair: Pair, seconds: float) -> float:
    done = pair.run(pair.cli, "iperf3", "-c", SRV_IP, "-R", "-t", str(seconds), "-J",
                    timeout=seconds + 30)
    return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10mbit,100mbit,1gbit")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3, help="probe flows per rate (median)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it builds network namespaces")
    url = f"https://{BULK_NAME}/bulk?bytes={64 << 20}"
    print(f"{'link':>8} {'iperf3 Mbit/s':>14} {'probe Mbit/s':>13} {'steady':>8} "
          f"{'probe/iperf3':>13}")
    with Pair() as pair:
        iperf = pair.spawn(pair.srv, "iperf3", "-s", "-B", SRV_IP)
        for rate in args.rates.split(","):
            pair.shape(rate)
            reference = iperf3(pair, args.seconds)
            flows = pair.python(MEASURE, url, SRV_IP, pair.ca_file, str(args.seconds),
                                str(args.runs))
            good = statistics.median(f["goodput"] or 0.0 for f in flows)
            steady = statistics.median(f["steady"] or 0.0 for f in flows)
            failed = [f["failure"] for f in flows if f["failure"]]
            print(f"{rate:>8} {reference / 1e6:14.1f} {good / 1e6:13.1f} {steady / 1e6:8.1f} "
                  f"{good / reference:13.3f}" + (f"  failures: {failed}" if failed else ""))
        iperf.kill()


if __name__ == "__main__":
    main()
