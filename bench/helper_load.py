"""The helper under load: concurrent control requests and bulk flows against `probe serve` in the lab.

    sudo .venv/bin/python bench/helper_load.py [--control 200] [--control-total 1000]
                                               [--bulk 50] [--bulk-total 20000]
                                               [--flow-bytes 131072] [--resets 50]

The lab of bench/scale.py (prefix `pscale`, names t00001.scale.lab ... on one origin). From the
client namespace, `--control` workers send `--control-total` control requests (POST
api/v1/control, a generated name each) while `--bulk` workers fetch flows of `/bulk?bytes=FLOW` (at
most `--bulk-total`, until the control requests are done) and read every byte they asked for, as the probe does. Then `--resets` clients
ask for 4 MiB and reset the connection (SO_LINGER 0), half after their first read and half
before any answer: the cases that made CPython 3.11 log `_call_connection_lost` tracebacks. Printed: requests/s, p50/p99 latency, status
counts, the helper's peak RSS and CPU, and the tracebacks in its log. Holds the lab lock.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import (  # noqa: E402
    SCENARIO,
    TRACEMALLOC,
    ScaleLab,
    lab_lock,
    proc_cpu,
    proc_peak_rss_mb,
)

# Runs in the client namespace; every loop is bounded by a count (a shared iterator) and the
# whole by a deadline.
DRIVER = r"""
import asyncio, json, socket, ssl, struct, sys, time
import aiohttp

cfg = json.loads(sys.argv[1])
base = cfg["helper_url"]
context = ssl.create_default_context(cafile=cfg["ca_file"])

def summary(latencies, statuses, wall):
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None
    return {"count": len(latencies), "wall": wall, "per_s": len(latencies) / wall,
            "p50_ms": pick(0.50) * 1000, "p99_ms": pick(0.99) * 1000, "statuses": statuses}

async def pool(workers, total, one, stop=None):
    jobs, latencies, statuses = iter(range(total)), [], {}
    async def worker(session):
        for i in jobs:
            if stop is not None and stop.is_set():
                break
            start = time.monotonic()
            status = await one(session, i)
            latencies.append(time.monotonic() - start)
            statuses[status] = statuses.get(status, 0) + 1
    connector = aiohttp.TCPConnector(limit=0, ssl=context, force_close=True)
    start = time.monotonic()
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(worker(session) for _ in range(workers)))
    return summary(latencies, statuses, time.monotonic() - start)

async def control(session, i):
    name = f"t{i % cfg['names'] + 1:05d}.scale.lab"
    body = {"domain": name, "url": f"https://{name}/", "control_domain": "ctl.scale.lab",
            "addresses": [], "port": 443}
    try:
        async with session.post(base + "api/v1/control", json=body) as response:
            await response.read()
            return str(response.status)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return type(exc).__name__

async def bulk(session, i):
    try:
        async with session.get(base + f"bulk?bytes={cfg['flow_bytes']}") as response:
            got = len(await response.read())
            return "ok" if got == cfg["flow_bytes"] else f"short {got}"
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return type(exc).__name__

async def reset_one(i):
    host = base.split("/")[2]
    reader, writer = await asyncio.open_connection(host, 443, ssl=context,
                                                   server_hostname="helper.probe.lab")
    writer.write(f"GET /bulk?bytes={4 << 20} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    if i % 2 == 0:  # half reset mid-body, half before the answer's headers
        await reader.read(65536)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # RST mid-transfer
    await asyncio.sleep(0.01)

async def main():
    deadline, stop = cfg["deadline"], asyncio.Event()
    async def controls():
        try:
            return await pool(cfg["control"], cfg["control_total"], control)
        finally:
            stop.set()  # the bulk flows run for as long as the control requests do
    load = await asyncio.wait_for(asyncio.gather(
        controls(), pool(cfg["bulk"], cfg["bulk_total"], bulk, stop)), deadline)
    jobs = iter(range(cfg["resets"]))
    async def resetter():
        for i in jobs:
            await reset_one(i)
    await asyncio.wait_for(asyncio.gather(*(resetter() for _ in range(10))), deadline)
    print(json.dumps({"control": load[0], "bulk": load[1], "resets": cfg["resets"]}))

asyncio.run(main())
"""


def run(args: argparse.Namespace) -> dict:
    lab = ScaleLab(args.names, helper_concurrency=args.helper_concurrency)
    if args.tracemalloc:
        lab.helper_python = ["-c", TRACEMALLOC, args.tracemalloc]
    try:
        state = lab.up(SCENARIO, deadline=60.0)
        helper = state["pids"]["helper"]
        cpu0 = proc_cpu(helper)
        cfg = {"helper_url": state["helper_url"], "ca_file": state["ca_file"],
               "names": args.names, "control": args.control,
               "control_total": args.control_total, "bulk": args.bulk,
               "bulk_total": args.bulk_total, "flow_bytes": args.flow_bytes,
               "resets": args.resets, "deadline": 600}
        done = lab.exec([sys.executable, "-c", DRIVER, json.dumps(cfg)], timeout=700)
        if done.returncode != 0:
            raise RuntimeError(f"load driver failed: {done.stderr[-3000:]}")
        result = json.loads(done.stdout.splitlines()[-1])
        log = (lab.dir / "logs" / "helper.log").read_text()
        result["helper"] = {"rss_mb": proc_peak_rss_mb(helper), "cpu": proc_cpu(helper) - cpu0,
                            "tracebacks": log.count("Traceback"),
                            "call_connection_lost": log.count("_call_connection_lost"),
                            "send_warnings": log.count("socket.send() raised exception"),
                            "log_lines": len(log.splitlines())}
        if args.keep_log:
            Path(args.keep_log).write_text(log)
        if args.tracemalloc:
            result["helper"]["stop"] = stop_for_dump(lab._processes["helper"])
    finally:
        lab.down()
    return result


def stop_for_dump(process: subprocess.Popen, wait: float = 300.0) -> str:
    """SIGINT (again after 20 s if it still runs): `probe serve` returns and the tracemalloc
    wrapper's atexit writes its file before the process exits. Says how the helper stopped."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
        return "stopped after one SIGINT"
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=wait)
        return "stopped after a second SIGINT"
    except subprocess.TimeoutExpired:
        return "did not stop"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", type=int, default=200, help="concurrent control requests")
    parser.add_argument("--control-total", type=int, default=1000)
    parser.add_argument("--bulk", type=int, default=50, help="concurrent bulk flows")
    parser.add_argument("--bulk-total", type=int, default=20000)
    parser.add_argument("--flow-bytes", type=int, default=128 << 10)
    parser.add_argument("--resets", type=int, default=50, help="clients that reset mid-flow")
    parser.add_argument("--names", type=int, default=200)
    parser.add_argument("--helper-concurrency", type=int, default=256,
                        help="the helper's --max-concurrency (its default, 16, answers 503 "
                             "beyond that)")
    parser.add_argument("--tracemalloc", metavar="FILE",
                        help="run the helper under tracemalloc; its top live allocations here")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the helper's log here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    with lab_lock():
        result = run(args)
    print(json.dumps(result), file=sys.stderr)
    for kind in ("control", "bulk"):
        r = result[kind]
        print(f"{kind:8} {r['count']:>5} requests in {r['wall']:6.1f} s: {r['per_s']:7.1f}/s, "
              f"p50 {r['p50_ms']:7.1f} ms, p99 {r['p99_ms']:7.1f} ms, statuses {r['statuses']}")
    h = result["helper"]
    print(f"helper: peak RSS {h['rss_mb']:.1f} MB, CPU {h['cpu']:.1f} s, tracebacks in its log "
          f"{h['tracebacks']} ({h['call_connection_lost']} _call_connection_lost) after "
          f"{result['resets']} resetting clients; {h['send_warnings']} 'socket.send() raised "
          f"exception' warnings; {h['log_lines']} log lines")


if __name__ == "__main__":
    main()
