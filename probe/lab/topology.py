"""The lab's network: three namespaces joined by veth pairs, all addresses in 10.77.0.0/16.

    client (10.77.1.2) ── censor (router: 10.77.1.1 | 10.77.2.1, blockpage 10.77.3.1)
                          ── net (10.77.2.2; origins 10.77.10.x, resolvers/helper 10.77.20.x)

Nothing routes out of the lab: each namespace has a route for 10.77.0.0/16 only, no default
route, and no link to the host's namespace. The helper and the resolvers live in `net`, so they
reach the origins without crossing the censor, as a server abroad would.

With `censor_hop: N` (scenario data) the path is longer, for locating the censor by TTL:

    client ── r1 ... r(N-1) ── censor ── a1 ── net

`censor_hop - 1` routers before the censor and one after it. The censor is then a transparent
box that does not decrement the TTL (a TTL +1 in mangle PREROUTING undoes the forward's -1), as
in-path DPI boxes such as the TSPU are: a packet sent with TTL N is the first to pass it, and
dies at a1, which answers ICMP time-exceeded. The ISP resolver's 10.77.1.1 moves to the censor's
loopback (the client reaches it through r1); routers send every ICMP error (no rate limit).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

LAB_NET = "10.77.0.0/16"
CLIENT_IP = "10.77.1.2"
ISP_RESOLVER = "10.77.1.1"  # the censor's client-facing address; the client's system resolver
CENSOR_NET_IP = "10.77.2.1"
NET_IP = "10.77.2.2"
BLOCKPAGE_IP = "10.77.3.1"  # on the censor's loopback
TRUSTED_RESOLVER = "10.77.20.1"  # UDP 53, DoT 853, DoH 443: the probe's --control-resolver
HELPER_IP = "10.77.20.2"  # `probe serve`
PUBLIC_RESOLVER = "10.77.20.8"  # an "8.8.8.8" abroad, queried in the clear (DNS injection)
AUTH_DNS = "10.77.20.53"  # authoritative for every lab name
HELPER_NAME = "helper.probe.lab"
TRUSTED_RESOLVER_NAME = "dns.trusted.lab"
BLOCKPAGE_NAME = "blocked.isp.lab"

# Every origin the lab serves, by its real name (resolvable only inside the lab).
ORIGINS: dict[str, str] = {
    "www.example.com": "10.77.10.1",
    "twitter.com": "10.77.10.2",
    "t.co": "10.77.10.3",
    "pbs.twimg.com": "10.77.10.4",
    "abs.twimg.com": "10.77.10.5",
    "video.twimg.com": "10.77.10.6",
    "navalny.com": "10.77.10.7",
    "shtab.navalny.com": "10.77.10.8",
    "navalny.app": "10.77.10.9",
    "votesmart.appspot.com": "10.77.10.10",
    "reddit.com": "10.77.10.11",
    "microsoft.com": "10.77.10.12",
    "rt.com": "10.77.10.13",
    "example.org": "10.77.10.14",
}

# The zone the authoritative server answers from.
ZONE: dict[str, str] = {
    **ORIGINS,
    HELPER_NAME: HELPER_IP,
    TRUSTED_RESOLVER_NAME: TRUSTED_RESOLVER,
    BLOCKPAGE_NAME: BLOCKPAGE_IP,
}

NET_SERVICE_IPS = (TRUSTED_RESOLVER, HELPER_IP, PUBLIC_RESOLVER, AUTH_DNS)


@dataclass(frozen=True)
class Names:
    """Namespace names under one prefix, so a crashed run's leftovers can be found by name.
    `censor_hop` (None: the three-namespace lab) adds routers, see the module docstring."""

    prefix: str = "plab"
    censor_hop: int | None = None

    @property
    def before(self) -> tuple[str, ...]:
        """Routers between the client and the censor."""
        return tuple(f"{self.prefix}-r{i}" for i in range(1, (self.censor_hop or 1)))

    @property
    def after(self) -> tuple[str, ...]:
        """Routers between the censor and `net`."""
        return (f"{self.prefix}-a1",) if self.censor_hop else ()

    @property
    def client(self) -> str:
        return f"{self.prefix}-client"

    @property
    def censor(self) -> str:
        return f"{self.prefix}-censor"

    @property
    def net(self) -> str:
        return f"{self.prefix}-net"

    @property
    def all(self) -> tuple[str, ...]:
        return (self.client, *self.before, self.censor, *self.after, self.net)


def run(cmd: Sequence[str], timeout: float = 10.0, check: bool = True) -> str:
    """Runs a command (never through a shell); raises with its stderr when it fails."""
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def in_ns(ns: str, *cmd: str, check: bool = True) -> str:
    return run(["ip", "netns", "exec", ns, *cmd], check=check)


def list_namespaces(prefix: str) -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix + "-")]


def build(names: Names) -> None:
    """Creates the namespaces, links, addresses and routes. Seconds: well under one."""
    for ns in names.all:
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    if names.censor_hop:
        _build_path(names)
        return
    # veth ends are created directly inside their namespaces: no name ever exists in the host's.
    run(["ip", "link", "add", "to-censor", "netns", names.client, "type", "veth",
         "peer", "name", "to-client", "netns", names.censor])
    run(["ip", "link", "add", "to-net", "netns", names.censor, "type", "veth",
         "peer", "name", "to-censor", "netns", names.net])
    _address(names.client, "to-censor", f"{CLIENT_IP}/24")
    _address(names.censor, "to-client", f"{ISP_RESOLVER}/24")
    _address(names.censor, "to-net", f"{CENSOR_NET_IP}/24")
    _address(names.net, "to-censor", f"{NET_IP}/24")
    run(["ip", "-n", names.censor, "addr", "add", f"{BLOCKPAGE_IP}/32", "dev", "lo"])
    for ip in (*ORIGINS.values(), *NET_SERVICE_IPS):
        run(["ip", "-n", names.net, "addr", "add", f"{ip}/32", "dev", "lo"])
    run(["ip", "-n", names.client, "route", "add", LAB_NET, "via", ISP_RESOLVER])
    run(["ip", "-n", names.censor, "route", "add", LAB_NET, "via", NET_IP])
    run(["ip", "-n", names.net, "route", "add", LAB_NET, "via", CENSOR_NET_IP])
    in_ns(names.censor, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    in_ns(names.censor, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1", check=False)


def _build_path(names: Names) -> None:
    """The longer path of `censor_hop` (module docstring): node i's "to-net" faces node i+1's
    "to-client" ("to-censor" on the client and on net, as in the short lab)."""
    nodes = names.all
    for i, (a, b) in enumerate(zip(nodes, nodes[1:], strict=False)):
        a_if = "to-censor" if a == names.client else "to-net"
        b_if = "to-censor" if b == names.net else "to-client"
        run(["ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if,
             "netns", b])
        a_ip, b_ip = _link_ips(nodes, i, names)
        _address(a, a_if, f"{a_ip}/24")
        _address(b, b_if, f"{b_ip}/24")
    run(["ip", "-n", names.censor, "addr", "add", f"{ISP_RESOLVER}/32", "dev", "lo"])
    run(["ip", "-n", names.censor, "addr", "add", f"{BLOCKPAGE_IP}/32", "dev", "lo"])
    for ip in (*ORIGINS.values(), *NET_SERVICE_IPS):
        run(["ip", "-n", names.net, "addr", "add", f"{ip}/32", "dev", "lo"])
    _path_routes(names, nodes)


def _path_routes(names: Names, nodes: tuple[str, ...]) -> None:
    """Forward: the lab's /16 towards net (the ISP resolver's /32 towards the censor); back:
    the client's /24 and the censor's own addresses towards the client."""
    censor_at = nodes.index(names.censor)
    for i, ns in enumerate(nodes):
        nxt = _next_hop(nodes, i, names)
        prev = _prev_hop(nodes, i, names)
        if ns == names.client:
            run(["ip", "-n", ns, "route", "add", LAB_NET, "via", nxt])
            run(["ip", "-n", ns, "route", "add", f"{ISP_RESOLVER}/32", "via", nxt])
            continue
        if ns == names.net:
            run(["ip", "-n", ns, "route", "add", LAB_NET, "via", prev])
            continue
        run(["ip", "-n", ns, "route", "add", LAB_NET, "via", nxt])
        if i > 1:
            run(["ip", "-n", ns, "route", "add", "10.77.1.0/24", "via", prev])
        if i < censor_at:
            for ip in (ISP_RESOLVER, BLOCKPAGE_IP):
                run(["ip", "-n", ns, "route", "add", f"{ip}/32", "via", nxt])
        elif i > censor_at:
            run(["ip", "-n", ns, "route", "add", f"{BLOCKPAGE_IP}/32", "via", prev])
        in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        in_ns(ns, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
    in_ns(names.censor, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1", check=False)
    # transparent: +1 before routing undoes the forward's -1 (and a TTL-1 packet still passes)
    in_ns(names.censor, "iptables", "-w", "5", "-t", "mangle", "-A", "PREROUTING", "-j", "TTL",
          "--ttl-inc", "1")


def _link_ips(nodes: tuple[str, ...], i: int, names: Names) -> tuple[str, str]:
    """The addresses of link i (between nodes i and i+1): (left end, right end)."""
    if i == 0:
        return CLIENT_IP, "10.77.1.254"
    if nodes[i + 1] == names.net:
        return CENSOR_NET_IP, NET_IP
    return f"10.77.{100 + i}.1", f"10.77.{100 + i}.2"


def _next_hop(nodes: tuple[str, ...], i: int, names: Names) -> str:
    return _link_ips(nodes, i, names)[1] if i + 1 < len(nodes) else ""


def _prev_hop(nodes: tuple[str, ...], i: int, names: Names) -> str:
    return _link_ips(nodes, i - 1, names)[0] if i > 0 else ""


def _address(ns: str, dev: str, cidr: str) -> None:
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", dev])
    run(["ip", "-n", ns, "link", "set", dev, "up"])


def destroy(prefix: str) -> None:
    """Deletes every namespace under the prefix (their veths go with them)."""
    for ns in list_namespaces(prefix):
        run(["ip", "netns", "delete", ns], check=False)
