"""Remote write capacity: samples and bytes per push for a vantage point measuring N targets, how
long the default queue bridges a receiver outage, and how fast a backlog drains into Debian's
Prometheus (its remote-write receiver on 127.0.0.1, a temporary data directory).

    .venv/bin/python bench/remote_write.py [--targets 10,30,100,1000] [--backlog 60]

Records are real TargetMeasurements with full evidence (tests/promstack.py builds them), a third
each accessible, throttled and blocked, as the daemon's board would hold them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from promstack import measurement, prometheus  # noqa: E402

from probe.model import Vantage  # noqa: E402
from probe.monitoring.metrics import ResultsCollector, RunStats, Snapshot  # noqa: E402
from probe.monitoring.remote_queue import RemoteWriter, WriterCollector  # noqa: E402
from probe.monitoring.remote_write import (  # noqa: E402
    RemoteWriteConfig,
    encode,
    families_of,
    open_session,
)

VANTAGE = Vantage(name="msk-1", asn="AS12389", cc="RU", network_name="Rostelecom")
DEFAULTS = RemoteWriteConfig("http://127.0.0.1/")


def records(n: int) -> list:
    out = []
    for i in range(n):
        domain = f"site-{i:04d}.example"
        kind = i % 3
        if kind == 0:
            out.append(measurement(domain, "accessible", rate_bps=38e6, control_bps=40e6))
        elif kind == 1:
            out.append(measurement(domain, "throttled", rate_bps=140e3, control_bps=40e6))
        else:
            out.append(measurement(domain, "blocked", blocking="tls", failure="connection_reset"))
    return out


def collectors(n: int) -> list:
    snapshot = Snapshot(VANTAGE, tuple(records(n)), RunStats(runs=5, last_run_end=time.time(),
                                                            last_run_duration=60.0,
                                                            interval=900.0, vantage_up=True))
    return [ResultsCollector(lambda: snapshot)]


def sizes(n: int) -> dict[str, float]:
    found = collectors(n)
    started = time.perf_counter()
    batch = encode(families_of(found), 1_700_000_000_000)
    took = time.perf_counter() - started
    per_push = len(batch.body)
    outage_h = DEFAULTS.queue_bytes / per_push * DEFAULTS.interval / 3600
    return {"targets": n, "samples": batch.samples, "raw": batch.raw_bytes,
            "snappy": per_push, "encode_ms": took * 1000, "queue_h": outage_h}


async def drain(n: int, backlog: int) -> tuple[float, int]:
    """Seconds to send `backlog` queued pushes of n targets into a real Prometheus."""
    with tempfile.TemporaryDirectory() as tmp, prometheus(
            Path(tmp), [], extra_args=["--web.enable-remote-write-receiver"]) as prom:
        clock = iter(range(int(time.time() * 1000) - backlog * 60_000, 1 << 62, 60_000))
        writer = RemoteWriter(RemoteWriteConfig(f"{prom.base}/api/v1/write"), collectors(n),
                              clock=clock.__next__)
        writer.collectors.append(WriterCollector(writer, VANTAGE))
        for _ in range(backlog):
            writer.collect_now()
        started = time.perf_counter()
        async with open_session(writer.config) as session:
            await writer.drain(session)
        return time.perf_counter() - started, writer.stats.sent_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="10,30,100,1000")
    parser.add_argument("--backlog", type=int, default=60,
                        help="queued pushes to drain (60 = an hour's outage at 60 s pushes)")
    args = parser.parse_args()
    counts = [int(x) for x in args.targets.split(",")]
    print(f"queue limit {DEFAULTS.queue_bytes >> 20} MiB, one push every "
          f"{DEFAULTS.interval:.0f} s")
    print("| targets | samples/push | protobuf bytes | snappy bytes | encode ms | "
          "outage bridged (h) |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        s = sizes(n)
        print(f"| {n} | {s['samples']} | {s['raw']} | {s['snappy']} | {s['encode_ms']:.1f} | "
              f"{s['queue_h']:.0f} |")
    print(f"\ndraining {args.backlog} queued pushes into Debian's Prometheus (loopback):")
    for n in counts:
        seconds, sent = asyncio.run(drain(n, args.backlog))
        print(f"  {n} targets: {sent} samples in {seconds:.2f} s "
              f"({sent / seconds:,.0f} samples/s, {args.backlog / seconds:.0f} pushes/s)")


if __name__ == "__main__":
    main()
