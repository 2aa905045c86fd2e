"""SNI-keyed policing in two namespaces: sni_swap must see it, and only for the matched SNI.

Layout: namespace `srv` runs the bulk endpoint (probe.server.bulk) over TLS; namespace `cli` runs
probe.throttling.abtest.sni_swap. A veth pair joins them. The censor sits on the client's side, as an ISP
middlebox does: in cli's OUTPUT path a string match on the ClientHello (first packets only)
CONNMARKs the flow; in its INPUT path a hashlimit per flow (src/dst address and port) drops
marked packets above 140 kbit/s after a 20 kB burst: policing, not queueing (REFERENCES.md).
The server's egress is an htb class of 50 Mbit/s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme

pytestmark = pytest.mark.lab

SRV_IP, CLI_IP = "10.231.0.1", "10.231.0.2"
RATE_BPS = 140_000
_TAG = f"pf{os.getpid() % 100000}"
SRV, CLI = f"{_TAG}-srv", f"{_TAG}-cli"
REPO = Path(__file__).resolve().parents[2]


CLIENT = """
import asyncio, json, sys
from probe.throttling import abtest
from probe.model import Settings, to_dict
async def main():
    url, address, target, control, ca = sys.argv[1:6]
    t, c, est = await abtest.sni_swap(url, address, target, control, Settings(ca_file=ca))
    print(json.dumps({"estimate": to_dict(est), "targets": [to_dict(r) for r in t],
                      "controls": [to_dict(r) for r in c]}))
asyncio.run(main())
"""


def _run(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)


def _can_build() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for network namespaces"
    if not shutil.which("ip") or not shutil.which("iptables"):
        return "needs iproute2 and iptables"
    return None


def _police(ns: str, pattern: str) -> None:
    rate = RATE_BPS // 8
    _run("iptables", "-w", "5", "-A", "OUTPUT", "-p", "tcp", "--dport", "443",
         "-m", "connbytes", "--connbytes", "0:8", "--connbytes-dir", "original",
         "--connbytes-mode", "packets", "-m", "string", "--algo", "bm", "--string", pattern,
         "-j", "CONNMARK", "--set-mark", "7", ns=ns)
    _run("iptables", "-w", "5", "-A", "INPUT", "-m", "connmark", "--mark", "7",
         "-m", "hashlimit", "--hashlimit-above", f"{rate}b/s", "--hashlimit-burst", "20000b",
         "--hashlimit-mode", "srcip,srcport,dstip,dstport", "--hashlimit-name", _TAG,
         "-j", "DROP", ns=ns)


@pytest.fixture
def lab(tmp_path):
    reason = _can_build()
    if reason:
        pytest.skip(reason)
    ca = trustme.CA()
    ca_pem, key_pem = tmp_path / "ca.pem", tmp_path / "server.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    ca.issue_cert("bulk.lab").private_key_and_cert_chain_pem.write_to_path(str(key_pem))
    server = None
    try:
        for ns in (SRV, CLI):
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "set", "lo", "up", ns=ns)
        _run("ip", "link", "add", "v0", "netns", SRV, "type", "veth", "peer", "v1", "netns", CLI)
        for ns, dev, ip in ((SRV, "v0", SRV_IP), (CLI, "v1", CLI_IP)):
            _run("ip", "addr", "add", f"{ip}/24", "dev", dev, ns=ns)
            _run("ip", "link", "set", dev, "up", ns=ns)
        # a 50 Mbit/s link, as a real access line: unshaped veth flows of 128 KiB last ~0.3 ms
        # and their rates are scheduler noise
        _run("tc", "qdisc", "add", "dev", "v0", "root", "handle", "1:", "htb", "default", "10",
             ns=SRV)
        _run("tc", "class", "add", "dev", "v0", "parent", "1:", "classid", "1:10", "htb",
             "rate", "50mbit", ns=SRV)
        _police(CLI, "twimg.com")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        server = subprocess.Popen(
            ["ip", "netns", "exec", SRV, sys.executable, "-m", "probe", "serve", "--host",
             SRV_IP, "--port", "443", "--cert", str(key_pem), "--key", str(key_pem)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        assert server.stderr is not None and "listening" in server.stderr.readline()
        yield str(ca_pem), env
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        for ns in (SRV, CLI):
            _run("ip", "netns", "del", ns, check=False)


def _swap(ca: str, env: dict, target: str) -> dict:
    cmd = ["ip", "netns", "exec", CLI, sys.executable, "-c", CLIENT,
           "https://bulk.lab/bulk?bytes=1048576", SRV_IP, target, "www.example.org", ca]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env, check=True)
    return json.loads(done.stdout)


def test_policed_sni_is_throttled_and_control_is_clean(lab):
    ca, env = lab
    started = time.monotonic()
    policed = _swap(ca, env, "abs.twimg.com")
    spent = time.monotonic() - started
    est = policed["estimate"]
    assert est["state"] == "throttled", est
    # TCP behind a policer gets at most its rate, often less (losses, timeouts)
    assert 0.4 * RATE_BPS < est["rate_bps"] < 1.35 * RATE_BPS, est
    assert est["control_rate_bps"] > 10 * RATE_BPS
    assert all(r["sni"] == "abs.twimg.com" for r in policed["targets"])
    assert est["bytes_used"] <= 1 << 20 and spent < 20
    free = _swap(ca, env, "twitter.com")["estimate"]  # not matched by "twimg.com"
    # its flows never outlast a burst on this fast link: bounded, never throttled
    assert free["state"] in ("clean", "bounded"), free
