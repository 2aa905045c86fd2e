"""Scale: the blocking suite on N lab targets against blackbox_exporter's HTTPS probes, same run.

    sudo .venv/bin/python bench/scale.py [--sizes 100,1000] [--with-5000] [--concurrency 64]
                                         [--rounds 3] [--profile FILE.prof]

For each N: the lab (own prefix `pscale`, no censor rules) serves N names t00001.scale.lab ...
from one origin with a wildcard certificate of the lab CA, an authoritative zone holding all of
them, the trusted resolver's DoH, and the helper (`probe serve`). In the client namespace,
blackbox_exporter (Debian package) gets one HTTPS probe per target from a bounded client loop at
the same concurrency, then `probe run --no-throughput` measures the same targets; `--rounds`
times in turn. Printed: median rates, their ratio and the range of the rounds' ratios, peak RSS
and CPU seconds per target of each process (wait4 / /proc), and what the probe did per target,
counted from its stored results. Holds /tmp/probe-lab.lock throughout;
the namespaces are torn down whatever happens.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probe.lab import censor  # noqa: E402
from probe.lab import topology as t  # noqa: E402
from probe.lab.ca import LabCA  # noqa: E402
from probe.lab.lifecycle import Lab, LabError, lab_env  # noqa: E402
from probe.lab.scenarios import Scenario  # noqa: E402

PREFIX = "pscale"
ZONE_NAME = "scale.lab"
CONTROL_NAME = f"ctl.{ZONE_NAME}"
ORIGIN_IP = t.ORIGINS["www.example.com"]  # one origin address serves every generated name
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
BLACKBOX_LISTEN = "127.0.0.1:9115"  # inside the client namespace
LOCK = "/tmp/probe-lab.lock"
SCENARIO = Scenario(name="scale", description="no censor; N generated names")


def names(n: int) -> list[str]:
    return [f"t{i:05d}.{ZONE_NAME}" for i in range(1, n + 1)]


class ScaleLab(Lab):
    """The lab with N generated names on one origin; helper with a wider concurrency cap."""

    def __init__(self, n: int, helper_concurrency: int = 256, prefix: str = PREFIX) -> None:
        super().__init__(prefix)
        self.n, self.helper_concurrency = n, helper_concurrency
        self.helper_python = ["-m", "probe"]  # or ["-c", TRACEMALLOC, FILE]

    def _rules(self) -> list[dict[str, Any]]:
        """The censor's rules (none: the scale bench measures an open path)."""
        return []

    def _own_origins(self) -> dict[str, str]:
        """Names served from an address of their own rather than the shared origin."""
        return {}

    def _after_censor(self) -> None:
        """Set-up in the censor's namespace after its rules (a subclass counts bytes there)."""

    def _build(self, scenario: Scenario, state: dict[str, Any], helper: bool,
               deadline: float) -> None:
        plan = censor.plan(self._rules())
        pki = LabCA(self.dir / "pki")
        own = self._own_origins()
        certs = {ZONE_NAME: [str(p) for p in pki.issue(ZONE_NAME, f"*.{ZONE_NAME}")],
                 **{name: [str(p) for p in pki.issue(name, ip)] for name, ip in own.items()},
                 t.TRUSTED_RESOLVER_NAME: [str(p) for p in pki.issue(t.TRUSTED_RESOLVER_NAME,
                                                                     t.TRUSTED_RESOLVER)],
                 t.HELPER_NAME: [str(p) for p in pki.issue(t.HELPER_NAME, t.HELPER_IP)],
                 t.BLOCKPAGE_NAME: [str(p) for p in pki.issue(t.BLOCKPAGE_NAME)]}
        zone = {**{name: ORIGIN_IP for name in [*names(self.n), CONTROL_NAME, ZONE_NAME]},
                **own, t.HELPER_NAME: t.HELPER_IP, t.TRUSTED_RESOLVER_NAME: t.TRUSTED_RESOLVER,
                t.BLOCKPAGE_NAME: t.BLOCKPAGE_IP}
        state.update(ca_file=str(pki.ca_file), targets_file=str(self.dir / "targets.yaml"),
                     control_resolver=f"https://{t.TRUSTED_RESOLVER}/dns-query",
                     helper_url=None)
        self._save(state)
        t.build(self.names)
        for command in plan.commands:
            t.in_ns(self.names.censor, *command)
        self._after_censor()
        resolv = Path("/etc/netns") / self.names.client
        resolv.mkdir(parents=True, exist_ok=True)
        (resolv / "resolv.conf").write_text(f"nameserver {plan.client_resolver}\n")
        Path(state["targets_file"]).write_text(targets_yaml(self.n))
        self._start_servers(plan, certs, state, origins={ZONE_NAME: ORIGIN_IP, **own}, zone=zone,
                            big_bytes=1 << 20)
        self._wait_ready(state, deadline)
        if helper:
            self._helper(state, certs[t.HELPER_NAME], deadline)
        self._save(state)

    def _helper(self, state: dict[str, Any], cert: list[str], deadline: float) -> None:
        self._spawn(state, "helper", self.names.net, [
            *self.helper_python, "serve", "--host", t.HELPER_IP, "--port", "443", "--cert", cert[0],
            "--key", cert[1], "--ca-file", state["ca_file"], "--allow-private-addresses",
            "--resolver", f"udp://{t.TRUSTED_RESOLVER}:53", "--timeout", "5",
            "--max-concurrency", str(self.helper_concurrency)])
        for _ in range(600):  # bounded: 600 x 0.05 s at most, and the lab's deadline
            if self._exited("helper", state) or time.monotonic() > deadline:
                break
            if "listening" in (self.dir / "logs" / "helper.log").read_text():
                state["helper_url"] = f"https://{t.HELPER_IP}/"
                return
            time.sleep(0.05)
        raise LabError(f"the helper did not start; see {self.dir / 'logs/helper.log'}")

    def spawn_in_client(self, name: str, argv: list[str]) -> subprocess.Popen:
        """A non-Python process (blackbox_exporter) in the client namespace, logged and recorded
        like the lab's own so that down() kills it."""
        logs = self.dir / "logs"
        with open(logs / f"{name}.log", "wb") as log:
            process = subprocess.Popen(["ip", "netns", "exec", self.names.client, *argv],
                                       stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self._processes = {**getattr(self, "_processes", {}), name: process}
        state = self.state()
        state["pids"][name] = process.pid
        self._save(state)
        return process


def targets_yaml(n: int) -> str:
    entries = [{"domain": name, "url": f"https://{name}/", "control": CONTROL_NAME}
               for name in names(n)]
    return yaml.safe_dump({"description": f"scale bench, {n} names", "category": "MISC",
                           "targets": entries}, sort_keys=False)


@contextmanager
def lab_lock(wait: float = 3600.0):
    """The lab lock shared by every agent on this machine (like `flock /tmp/probe-lab.lock`)."""
    def too_long(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"{LOCK} held for more than {wait:.0f} s")

    with open(LOCK, "a") as handle:
        # a blocking wait, in the kernel's queue with `flock` users (polling never got a turn)
        previous = signal.signal(signal.SIGALRM, too_long)
        signal.alarm(int(wait))
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- what a process used --------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of a running process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# A small process that starts the measured one and reports its rusage: the peak RSS wait4 gives
# (ru_maxrss) includes the memory a process had before its exec, and a child forked from this
# bench inherits the bench's (which has read every stored record: ~160 MB at N = 5,000).
LAUNCHER = """
import json, os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
start = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execvp(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as out:
    json.dump({"wall": time.monotonic() - start, "cpu": usage.ru_utime + usage.ru_stime,
               "rss_mb": usage.ru_maxrss / 1024,
               "returncode": os.waitstatus_to_exitcode(status)}, out)
"""


def run_measured(argv: list[str], timeout: float, logs: Path) -> dict[str, Any]:
    """Runs argv to completion (stdout, stderr to files in `logs`) from the launcher: wall
    seconds from its fork to its end, CPU seconds and peak RSS from wait4 on the process itself
    (`ip netns exec` execs into the command)."""
    report = logs / "rusage.json"
    with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
        process = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(report), *argv],
                                   stdout=out, stderr=err, env=lab_env(), cwd=REPO,
                                   start_new_session=True)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise TimeoutError(f"{argv[:6]} ran for more than {timeout:.0f} s") from None
    if process.returncode != 0:
        raise RuntimeError(f"the launcher of {argv[:6]} exited {process.returncode}")
    return json.loads(report.read_text())


# --- blackbox_exporter: the peer ------------------------------------------------------------------

BLACKBOX_CONFIG = """modules:
  https:
    prober: http
    timeout: 10s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      fail_if_not_ssl: true
      tls_config:
        ca_file: {ca_file}
"""

# A bounded client loop, run in the client namespace: N /probe calls, `concurrency` at a time.
DRIVER = """
import asyncio, json, sys, time
import aiohttp

async def main(n, concurrency, listen, deadline):
    names = [f"t{i:05d}.scale.lab" for i in range(1, n + 1)]
    queue = iter(names)
    ok = failed = 0
    async def worker(session):
        nonlocal ok, failed
        for name in queue:  # each name once; the shared iterator bounds the loop
            url = f"http://{listen}/probe?module=https&target=https://{name}/"
            async with session.get(url) as response:
                body = await response.text()
            if "probe_success 1" in body:
                ok += 1
            else:
                failed += 1
    start = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=deadline)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.wait_for(asyncio.gather(*(worker(session) for _ in range(concurrency))),
                               deadline)
    print(json.dumps({"wall": time.monotonic() - start, "ok": ok, "failed": failed}))

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])))
"""


def wait_listening(lab: ScaleLab, address: str, process: subprocess.Popen,
                   deadline: float = 20.0) -> None:
    host, port = address.rsplit(":", 1)
    end = time.monotonic() + deadline
    while time.monotonic() < end and process.poll() is None:
        if lab.exec(["bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"], timeout=5).returncode == 0:
            return
        time.sleep(0.1)
    raise LabError(f"{process.args[3]} is not listening on {address}")


def start_blackbox(lab: ScaleLab) -> subprocess.Popen:
    """blackbox_exporter, started once per N in the client namespace, listening."""
    config = lab.dir / "blackbox.yml"
    config.write_text(BLACKBOX_CONFIG.format(ca_file=lab.state()["ca_file"]))
    process = lab.spawn_in_client("blackbox", [
        BLACKBOX, f"--config.file={config}", f"--web.listen-address={BLACKBOX_LISTEN}",
        "--log.level=warn"])
    wait_listening(lab, BLACKBOX_LISTEN, process)
    return process


def run_blackbox(lab: ScaleLab, process: subprocess.Popen, n: int,
                 concurrency: int) -> dict[str, Any]:
    """One round: N probes through the driver; its wall time, CPU and peak RSS so far."""
    cpu0 = proc_cpu(process.pid)
    done = lab.exec([sys.executable, "-c", DRIVER, str(n), str(concurrency), BLACKBOX_LISTEN,
                     "1800"], timeout=1900)
    if done.returncode != 0:
        raise RuntimeError(f"blackbox driver failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.splitlines()[-1])
    result.update(cpu=proc_cpu(process.pid) - cpu0, rss_mb=proc_peak_rss_mb(process.pid))
    return result


# --- the probe ------------------------------------------------------------------------------------


# A probe process under tracemalloc. At exit it writes the traced (current, peak) MB, then the
# 25 allocation sites holding the most memory at the busiest moment a 1 s sampler saw (what a
# peak is made of), then the same at exit (what accumulates).
TRACEMALLOC = """
import atexit, runpy, signal, sys, threading, time, tracemalloc
signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
tracemalloc.start(6)
path, busiest = sys.argv.pop(1), [0, None]
def sample():
    for _ in range(7200):  # bounded: two hours of 1 s samples
        time.sleep(1.0)
        current = tracemalloc.get_traced_memory()[0]
        if current > 1.1 * busiest[0]:
            busiest[:] = [current, tracemalloc.take_snapshot()]
def top(snapshot):
    lines = []
    for stat in snapshot.statistics("traceback")[:25]:
        lines.append(f"{stat.size / 1e6:8.2f} MB {stat.count:8d} blocks")
        lines += ["    " + line for line in stat.traceback.format()]
    return "\\n".join(lines)
def dump():
    current, peak = tracemalloc.get_traced_memory()
    with open(path, "w") as out:
        out.write(f"traced now {current / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB\\n")
        if busiest[1] is not None:
            out.write(f"== busiest sample: {busiest[0] / 1e6:.1f} MB\\n{top(busiest[1])}\\n")
        out.write(f"== at exit\\n{top(tracemalloc.take_snapshot())}\\n")
atexit.register(dump)
threading.Thread(target=sample, daemon=True).start()
sys.argv[0] = "probe"
runpy.run_module("probe", run_name="__main__", alter_sys=True)
"""


def run_probe(lab: ScaleLab, concurrency: int, profile: str | None,
              tracemalloc: str | None = None, round_: int = 0) -> dict[str, Any]:
    state, out = lab.state(), lab.dir / f"results-{round_}"
    logs = lab.dir / f"probe-run-{round_}"
    logs.mkdir(exist_ok=True)
    python = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []),
              *(["-c", TRACEMALLOC, tracemalloc] if tracemalloc else [])]
    module = [] if tracemalloc else ["-m", "probe"]
    argv = ["ip", "netns", "exec", lab.names.client, *python, *module, "run",
            "--config", "/dev/null", "--targets", state["targets_file"], "--json",
            "--ca-file", state["ca_file"], "--control-resolver", state["control_resolver"],
            "--helper", state["helper_url"], "--out", str(out), "--timeout", "5",
            "--no-third-party", "--no-throughput", "--concurrency", str(concurrency)]
    helper = state["pids"]["helper"]
    helper_cpu0 = proc_cpu(helper)
    result = run_measured(argv, timeout=3600, logs=logs)
    if result["returncode"] != 0:
        tail = (logs / "stderr").read_text()[-2000:]
        raise RuntimeError(f"probe run exited {result['returncode']}: {tail}")
    result.update(helper_cpu=proc_cpu(helper) - helper_cpu0,
                  helper_rss_mb=proc_peak_rss_mb(helper), **breakdown(out))
    helper_log = (lab.dir / "logs" / "helper.log").read_text()
    result["helper_tracebacks"] = helper_log.count("Traceback")
    return result


_TYPED = {"queries": "dns", "tcp_connect": "tcp", "tls_handshakes": "tls", "requests": "http"}


def breakdown(out: Path) -> dict[str, Any]:
    """What the probe (and the helper for it) did, summed over the stored records."""
    sums = {key: 0 for key in ("queries", "tcp_connect", "tls_handshakes", "requests")}
    helper = {f"ctl_{key}": 0 for key in sums}
    verdicts: dict[str, int] = {}
    records = helper_requests = 0
    for path in sorted(out.glob("measurements-*.jsonl")):
        for line in path.read_text().splitlines():
            keys = json.loads(line)["test_keys"]
            records += 1
            helper_requests += keys["control_source"] == "helper"
            verdicts[keys["verdict"]] = verdicts.get(keys["verdict"], 0) + 1
            control = keys["evidence"]["control"]  # the typed record: the helper's own view
            for key, typed in _TYPED.items():
                sums[key] += len(keys[key])
                helper[f"ctl_{key}"] += len(control[typed])
    return {"records": records, "helper_requests": helper_requests, "verdicts": verdicts,
            **sums, **helper}


# --- the report -----------------------------------------------------------------------------------


def measure(n: int, concurrency: int, rounds: int, profile: str | None,
            tracemalloc: str | None = None) -> dict[str, Any]:
    """`rounds` times blackbox_exporter then the probe, in one lab: the machine's mood changes
    from minute to minute (blackbox_exporter alone ran 420-600 probes/s), so the figures are
    medians of interleaved rounds and the per-round ratios are shown."""
    lab = ScaleLab(n)
    try:
        started = time.monotonic()
        # the zone and the list grow with N (a loaded machine once missed 60 s at N = 5,000)
        lab.up(SCENARIO, deadline=60.0 + n / 50)
        lab_up = time.monotonic() - started
        blackbox = start_blackbox(lab)
        results = []
        for round_ in range(rounds):
            last = round_ == rounds - 1
            results.append({"blackbox": run_blackbox(lab, blackbox, n, concurrency),
                            "probe": run_probe(lab, concurrency, profile if last else None,
                                               tracemalloc if last else None, round_)})
    finally:
        lab.down()
    return {"n": n, "lab_up_s": round(lab_up, 1), "rounds": results}


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """Median rates, their ratio and the per-round ratios' range; CPU of the median probe
    round; peak RSS the highest of any round."""
    n, rounds = row["n"], row["rounds"]
    probe_rates = [n / r["probe"]["wall"] for r in rounds]
    bbe_rates = [n / r["blackbox"]["wall"] for r in rounds]
    ratios = [p / b for p, b in zip(probe_rates, bbe_rates, strict=True)]
    middle = rounds[probe_rates.index(statistics.median_low(probe_rates))]
    probe = {**middle["probe"], "rss_mb": max(r["probe"]["rss_mb"] for r in rounds),
             "helper_rss_mb": max(r["probe"]["helper_rss_mb"] for r in rounds)}
    blackbox = {**middle["blackbox"], "rss_mb": max(r["blackbox"]["rss_mb"] for r in rounds)}
    return {"n": n, "probe_rate": statistics.median(probe_rates),
            "bbe_rate": statistics.median(bbe_rates), "ratios": ratios,
            "probe": probe, "blackbox": blackbox}


def report(rows: list[dict[str, Any]], echo=print) -> None:
    rows = [summary(row) for row in rows]
    echo(f"{'N':>6} {'probe t/s':>9} {'bbe t/s':>8} {'ratio':>6} {'rounds':>17} {'probe RSS':>9} "
         f"{'helper RSS':>10} {'bbe RSS':>7} {'probe cpu/t':>11} {'helper cpu/t':>12} "
         f"{'bbe cpu/t':>9}  verdicts")
    for row in rows:
        n, p, b = row["n"], row["probe"], row["blackbox"]
        spread = f"{min(row['ratios']):.3f}-{max(row['ratios']):.3f} x{len(row['ratios'])}"
        echo(f"{n:>6} {row['probe_rate']:>9.1f} {row['bbe_rate']:>8.1f} "
             f"{row['probe_rate'] / row['bbe_rate']:>6.3f} {spread:>17} "
             f"{p['rss_mb']:>7.1f}MB {p['helper_rss_mb']:>8.1f}MB {b['rss_mb']:>5.1f}MB "
             f"{p['cpu'] / n * 1000:>9.2f}ms {p['helper_cpu'] / n * 1000:>10.2f}ms "
             f"{b['cpu'] / n * 1000:>7.2f}ms  {p['verdicts']} bbe ok {b['ok']}/{n}")
    for a, z in zip(rows, rows[1:], strict=False):
        pa, pz = a["probe"], z["probe"]
        echo(f"growth {a['n']} -> {z['n']}: probe RSS x{pz['rss_mb'] / pa['rss_mb']:.2f}, "
             f"helper RSS x{pz['helper_rss_mb'] / pa['helper_rss_mb']:.2f}, probe cpu/target "
             f"x{(pz['cpu'] / z['n']) / (pa['cpu'] / a['n']):.2f}, helper cpu/target "
             f"x{(pz['helper_cpu'] / z['n']) / (pa['helper_cpu'] / a['n']):.2f}")
    for row in rows:
        p, n = row["probe"], row["probe"]["records"] or 1
        echo(f"per target at N={row['n']} ({p['records']} records): DNS queries "
             f"{p['queries'] / n:.2f}, TCP connects {p['tcp_connect'] / n:.2f}, TLS handshakes "
             f"{p['tls_handshakes'] / n:.2f}, HTTP fetches {p['requests'] / n:.2f}, helper "
             f"requests {p['helper_requests'] / n:.2f} (helper side: DNS "
             f"{p['ctl_queries'] / n:.2f}, TCP {p['ctl_tcp_connect'] / n:.2f}, TLS "
             f"{p['ctl_tls_handshakes'] / n:.2f}, HTTP {p['ctl_requests'] / n:.2f}); "
             f"helper tracebacks {p['helper_tracebacks']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="comma-separated N")
    parser.add_argument("--with-5000", action="store_true", help="add N = 5000")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of blackbox_exporter and the probe per N")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the probe at the last N")
    parser.add_argument("--tracemalloc", metavar="FILE",
                        help="at the last N, write the probe's top live allocations here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + ([5000] if args.with_5000 else [])
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    rows = []
    with lab_lock():
        for n in sizes:
            last = n == sizes[-1]
            rows.append(measure(n, args.concurrency, args.rounds,
                                args.profile if last else None,
                                args.tracemalloc if last else None))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report(rows)


if __name__ == "__main__":
    main()
