"""Two namespaces joined by a veth pair, for the benchmarks (root only; all traffic stays inside).

    srv (10.232.0.1, v0: htb-shaped egress, TLS bulk server, iperf3 server)
      == veth ==
    cli (10.232.0.2, v1: optional SNI policer in OUTPUT/INPUT, runs the probe)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme

REPO = Path(__file__).resolve().parents[1]
SRV_IP, CLI_IP = "10.232.0.1", "10.232.0.2"
BULK_NAME = "bulk.lab"



class Pair:
    """Context manager: builds the pair, starts the TLS bulk server, always tears down."""

    def __init__(self, tag: str = "pfb") -> None:
        self.srv, self.cli = f"{tag}-srv", f"{tag}-cli"
        self.tmp = Path(tempfile.mkdtemp(prefix="probe-bench-"))
        self.ca_file = str(self.tmp / "ca.pem")
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs: list[subprocess.Popen] = []

    def run(self, ns: str, *args: str, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *args], check=check, text=True,
                              capture_output=True, timeout=timeout, env=self.env)

    def spawn(self, ns: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=self.env)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Pair:
        self._down()
        try:
            for ns in (self.srv, self.cli):
                subprocess.run(["ip", "netns", "add", ns], check=True)
                self.run(ns, "ip", "link", "set", "lo", "up")
            subprocess.run(["ip", "link", "add", "v0", "netns", self.srv, "type", "veth",
                            "peer", "v1", "netns", self.cli], check=True)
            for ns, dev, ip in ((self.srv, "v0", SRV_IP), (self.cli, "v1", CLI_IP)):
                self.run(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
                self.run(ns, "ip", "link", "set", dev, "up")
            self._start_bulk()
        except BaseException:
            self._down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._down()

    def _start_bulk(self) -> None:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(self.ca_file)
        key = str(self.tmp / "server.pem")
        ca.issue_cert(BULK_NAME).private_key_and_cert_chain_pem.write_to_path(key)
        server = self.spawn(self.srv, sys.executable, "-m", "probe", "serve", "--host", SRV_IP,
                            "--port", "443", "--cert", key, "--key", key)
        if server.stderr is None or "listening" not in server.stderr.readline():
            raise RuntimeError("helper (bulk) server did not start")

    def _down(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)
        self.procs = []
        for ns in (self.srv, self.cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def shape(self, rate: str) -> None:
        """The server's egress as one htb class of `rate` (tc syntax: 10mbit, 1gbit)."""
        self.run(self.srv, "tc", "qdisc", "del", "dev", "v0", "root", check=False)
        self.run(self.srv, "tc", "qdisc", "add", "dev", "v0", "root", "handle", "1:", "htb",
                 "default", "10")
        self.run(self.srv, "tc", "class", "add", "dev", "v0", "parent", "1:", "classid", "1:10",
                 "htb", "rate", rate)

    def police(self, pattern: str, rate_bps: int = 140_000, burst: int = 20_000) -> None:
        """Mark flows whose first packets carry `pattern`; drop their packets above the rate.
        (hashlimit wants a burst of at least one second at the rate.)"""
        burst = max(burst, rate_bps // 8 + rate_bps // 800 + 64)  # iptables rounds the rate up
        self.run(self.cli, "iptables", "-w", "5", "-A", "OUTPUT", "-p", "tcp", "--dport", "443",
                 "-m", "connbytes", "--connbytes", "0:8", "--connbytes-dir", "original",
                 "--connbytes-mode", "packets", "-m", "string", "--algo", "bm", "--string",
                 pattern, "-j", "CONNMARK", "--set-mark", "7")
        self.run(self.cli, "iptables", "-w", "5", "-A", "INPUT", "-m", "connmark", "--mark", "7",
                 "-m", "hashlimit", "--hashlimit-above", f"{rate_bps // 8}b/s",
                 "--hashlimit-burst", f"{burst}b", "--hashlimit-mode",
                 "srcip,srcport,dstip,dstport", "--hashlimit-name", f"pf{rate_bps}", "-j", "DROP")

    def shape_sni(self, pattern: str, rate_bps: int) -> None:
        """Queue the server's packets of flows whose ClientHello carries `pattern` (every flow
        when empty) in an htb class of their own (tail drop only when its queue is full);
        needs shape() first."""
        self.run(self.srv, "tc", "class", "replace", "dev", "v0", "parent", "1:", "classid",
                 "1:20", "htb", "rate", f"{rate_bps}bit")
        # a queue of ~250 ms at the rate (3 packets at least), as shapers size their buffers:
        # the packets of a flow the probe has left drain from it before the next flow
        queue = max(3, int(rate_bps * 0.25 / 8 / 1514))
        self.run(self.srv, "tc", "qdisc", "replace", "dev", "v0", "parent", "1:20", "handle",
                 "20:", "pfifo", "limit", str(queue))
        match = ["-m", "string", "--algo", "bm", "--string", pattern] if pattern else []
        self.run(self.srv, "iptables", "-w", "5", "-A", "INPUT", "-p", "tcp", "--dport", "443",
                 "-m", "connbytes", "--connbytes", "0:8", "--connbytes-dir", "original",
                 "--connbytes-mode", "packets", *match, "-j", "CONNMARK", "--set-mark", "8")
        self.run(self.srv, "iptables", "-w", "5", "-t", "mangle", "-A", "OUTPUT", "-m",
                 "connmark", "--mark", "8", "-j", "CLASSIFY", "--set-class", "1:20")

    def congest(self) -> subprocess.Popen:
        """Competing traffic: an iperf3 download (server -> client) filling the link."""
        if not any("iperf3" in " ".join(map(str, p.args)) for p in self.procs):
            self.spawn(self.srv, "iperf3", "-s", "-B", SRV_IP)
            time.sleep(0.5)
        return self.spawn(self.cli, "iperf3", "-c", SRV_IP, "-R", "-t", "900")

    def python(self, script: str, *args: str, timeout: float = 600) -> list[dict]:
        """Runs a Python script in the client namespace; its stdout is JSON lines."""
        done = self.run(self.cli, sys.executable, "-c", script, *args, timeout=timeout)
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
