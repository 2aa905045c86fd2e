"""Censor rules (data) -> what the lab does: iptables/tc commands in the censor namespace, the ISP
resolver's lies, origin options, and the DNS injector. `plan()` is pure, so it is unit-tested.

A TLS rule keys on the SNI of the ClientHello with the string match, looked for only in the first
packets a client sends to port 443. Patterns, as the Russian throttler's rules were written:
`twitter.com` exact (the name with its SNI length prefix), `*.twimg.com` suffix, `*t.co*` bare
substring (which also caught reddit.com, microsoft.com and rt.com). A matched flow is marked with
CONNMARK; later rules act on the mark in both directions, as an in-path middlebox does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from probe.lab import topology as t

CLIENT_IF, NET_IF = "to-client", "to-net"
PROXY_PORT = 8080  # the transparent HTTP proxy on the blockpage host
_FIRST_PACKETS = ["-m", "connbytes", "--connbytes", "0:8", "--connbytes-dir", "original",
                  "--connbytes-mode", "packets"]


@dataclass
class Plan:
    commands: list[list[str]] = field(default_factory=list)  # run in the censor namespace
    isp: dict[str, Any] = field(default_factory=lambda: {"nxdomain": [], "forge": {},
                                                          "blocked_hosts": []})
    internet: dict[str, Any] = field(default_factory=lambda: {"down": [], "slow": {},
                                                               "public_delay": 0.0})
    injector: dict[str, Any] | None = None
    client_resolver: str = t.ISP_RESOLVER


def sni_match(pattern: str) -> list[str]:
    """iptables string-match arguments for an SNI pattern (see the module docstring)."""
    if pattern.startswith("*") and pattern.endswith("*"):
        return ["-m", "string", "--algo", "bm", "--string", pattern.strip("*")]
    if pattern.startswith("*"):  # a suffix; the string match cannot anchor it at the end
        return ["-m", "string", "--algo", "bm", "--string", pattern[1:]]
    # server_name entry: type 0 (host_name), two-byte length, the name: exactly this name.
    return ["-m", "string", "--algo", "bm", "--hex-string", f"|00{len(pattern):04x}|{pattern}"]


def sni_matches(pattern: str, name: str) -> bool:
    """What the string match of `sni_match(pattern)` catches, judged on the SNI alone."""
    if pattern.startswith("*"):
        return pattern.strip("*") in name
    return name == pattern


def _ipt(*args: str) -> list[str]:
    return ["iptables", "-w", "5", *args]


def _address(name: str) -> str:
    return t.ZONE.get(name, name)  # a lab name, or already an address


def _tls(plan: Plan, rule: dict[str, Any], mark: int) -> None:
    action = rule["action"]
    for pattern in rule["sni"]:
        hello = ["-A", "FORWARD", "-i", CLIENT_IF, "-p", "tcp", "--dport", "443",
                 *_FIRST_PACKETS, *sni_match(pattern)]
        if action == "tls_rst":  # RST to the client in place of the ClientHello
            plan.commands.append(_ipt(*hello, "-j", "REJECT", "--reject-with", "tcp-reset"))
        else:
            plan.commands.append(_ipt(*hello, "-j", "CONNMARK", "--set-mark", str(mark)))
    flow = ["-A", "FORWARD", "-m", "connmark", "--mark", str(mark)]
    if action == "tls_drop":
        plan.commands.append(_ipt(*flow, "-j", "DROP"))
    elif action == "tls_pass_then_drop":  # TSPU: a few packets pass, then nothing
        passed = f"{int(rule.get('packets', 6))}:"
        plan.commands.append(_ipt(*flow, "-m", "connbytes", "--connbytes", passed,
                                  "--connbytes-dir", "both", "--connbytes-mode", "packets",
                                  "-j", "DROP"))
    elif action == "throttle":  # policing: one bucket per flow and direction, excess dropped
        rate = int(rule.get("rate_bps", 140_000)) // 8
        # hashlimit wants a burst of at least one second at the rate (which it rounds up)
        burst = max(int(rule.get("burst_bytes", 0)), rate + rate // 100 + 64)
        plan.commands.append(_ipt(*flow, "-m", "hashlimit", "--hashlimit-above", f"{rate}b/s",
                                  "--hashlimit-burst", f"{burst}b", "--hashlimit-mode",
                                  "srcip,srcport,dstip,dstport", "--hashlimit-name",
                                  f"plab{mark}", "-j", "DROP"))
    elif action == "shape":  # shaping, not policing: matched flows share one queued htb class
        _htb(plan, default_rate=10_000_000_000, queue=int(rule.get("queue_packets", 100)))
        for dev in (CLIENT_IF, NET_IF):
            plan.commands.append(["tc", "class", "add", "dev", dev, "parent", "1:",
                                  "classid", "1:20", "htb", "rate", str(int(rule["rate_bps"]))])
        plan.commands.append(_ipt("-t", "mangle", "-A", "POSTROUTING", "-m", "connmark",
                                  "--mark", str(mark), "-j", "CLASSIFY", "--set-class", "1:20"))


def _htb(plan: Plan, default_rate: int, queue: int) -> None:
    """An htb root on both censor links; unclassified traffic goes to class 1:10."""
    for dev in (CLIENT_IF, NET_IF):
        plan.commands += [
            ["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10"],
            ["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
             "rate", str(default_rate)],
            ["tc", "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "pfifo",
             "limit", str(queue)],
        ]


def _dns(plan: Plan, rule: dict[str, Any]) -> None:
    action, names = rule["action"], [n.lower() for n in rule["names"]]
    forged = rule.get("address", t.BLOCKPAGE_IP)
    if action == "dns_nxdomain":
        plan.isp["nxdomain"] += names
    elif action == "dns_forge":
        plan.isp["forge"].update(dict.fromkeys(names, forged))
    else:  # dns_inject: the client asks a resolver abroad; the censor answers first
        plan.client_resolver = t.PUBLIC_RESOLVER
        plan.internet["public_delay"] = float(rule.get("resolver_delay", 0.2))
        plan.injector = {"iface": CLIENT_IF, "resolver": t.PUBLIC_RESOLVER,
                         "forge": dict.fromkeys(names, forged)}


def plan(rules: list[dict[str, Any]]) -> Plan:
    """Turns a scenario's rules into a Plan; an unknown action is a ValueError naming it."""
    result = Plan()
    for mark, rule in enumerate(rules, start=1):
        action = rule.get("action")
        if action in ("tls_rst", "tls_drop", "tls_pass_then_drop", "throttle", "shape"):
            _tls(result, rule, mark)
        elif action in ("dns_nxdomain", "dns_forge", "dns_inject"):
            _dns(result, rule)
        elif action == "ip_blackhole":
            result.commands += [_ipt("-A", "FORWARD", "-d", _address(n), "-j", "DROP")
                                for n in rule["names"]]
        elif action == "http_blockpage":  # every port-80 flow goes through the censor's proxy
            result.isp["blocked_hosts"] += [h.lower() for h in rule["hosts"]]
            result.commands.append(_ipt("-t", "nat", "-A", "PREROUTING", "-i", CLIENT_IF, "-p",
                                        "tcp", "--dport", "80", "-j", "DNAT", "--to-destination",
                                        f"{t.BLOCKPAGE_IP}:{PROXY_PORT}"))
        elif action == "congest":  # the whole link is slow: not censorship
            _htb(result, int(rule.get("rate_bps", 2_000_000)), int(rule.get("queue_packets", 50)))
        elif action == "loss":
            result.commands.append(_ipt("-A", "FORWARD", "-m", "statistic", "--mode", "random",
                                        "--probability", str(rule["probability"]), "-j", "DROP"))
        elif action == "origin_down":
            result.internet["down"] += rule["names"]
        elif action == "origin_slow":
            for name in rule["names"]:
                result.internet["slow"][name] = {"rate_bps": float(rule["rate_bps"]),
                                                 "delay": float(rule.get("delay", 0.0))}
        else:
            raise ValueError(f"rule {mark}: unknown action {action!r}")
    return result
