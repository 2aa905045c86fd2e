"""Builders of evidence and whole TargetMeasurements for tests: one function per observation,
and one per censorship scenario (named after what the censor does)."""

from __future__ import annotations

from probe.model import (
    DnsResponse,
    DnsResult,
    Evidence,
    HttpResult,
    Target,
    TargetMeasurement,
    TcpResult,
    ThrottleEstimate,
    ThroughputResult,
    TlsResult,
)

DOMAIN = "twitter.com"
CONTROL_SNI = "www.example.com"
REAL = "104.244.42.1"  # the target's real address (never contacted: tests only build records)
REAL2 = "104.244.42.65"
FORGED = "93.158.134.3"
BOGON = "10.10.34.35"
TIMEOUT = "generic_timeout_error"


def dns(addresses=(REAL,), *, domain=DOMAIN, kind="system", rcode="NOERROR", failure=None,
        extra=()) -> DnsResult:
    """A DNS result; `extra` adds later answers (address tuples) to the same query."""
    first = DnsResponse(t=0.01, rcode=rcode, addresses=tuple(addresses), source="192.0.2.53")
    later = tuple(
        DnsResponse(t=0.02 + i / 100, rcode="NOERROR", addresses=tuple(a), source="192.0.2.53")
        for i, a in enumerate(extra)
    )
    resolver = "udp://192.0.2.53:53" if kind != "https" else "https://dns.example/dns-query"
    return DnsResult(
        domain=domain, resolver=resolver, resolver_kind=kind, rcode=rcode,
        addresses=tuple(addresses), responses=(first, *later), failure=failure,
        operation="resolve" if failure else None, t0=0.0, elapsed=0.02,
    )


def nxdomain(*, kind="system") -> DnsResult:
    return dns((), kind=kind, rcode="NXDOMAIN", failure="dns_nxdomain_error")


def tcp(address=REAL, failure=None, port=443) -> TcpResult:
    return TcpResult(address=address, port=port, failure=failure,
                     operation="connect" if failure else None, t0=0.1, elapsed=0.05)


def tls(address=REAL, sni=DOMAIN, failure=None, valid=True, operation=None) -> TlsResult:
    if failure and operation is None:
        operation = "tls_handshake"
    return TlsResult(
        address=address, port=443, sni=sni, failure=failure, operation=operation,
        tls_version=None if failure else "TLSv1.3", cert_valid_for_name=None if failure else valid,
        t0=0.2, elapsed=0.05,
    )


def http(url=f"https://{DOMAIN}/", status=200, failure=None, blockpage=None, address=REAL,
         title="Twitter", operation=None) -> HttpResult:
    if failure and operation is None:
        operation = "http_round_trip"
    return HttpResult(
        url=url, address=address, status=None if failure and operation != "read" else status,
        failure=failure, operation=operation, title=title, blockpage=blockpage,
        body_length=0 if failure else 1234, t0=0.3, elapsed=0.2,
    )


def throughput(bps=50e6, sni=DOMAIN) -> ThroughputResult:
    return ThroughputResult(url="https://helper.example/bulk?bytes=1048576", address="192.0.2.9",
                            sni=sni, samples=((0.1, 10000), (0.2, 20000)),
                            bytes_received=20000, goodput_bps=bps, steady_bps=bps)


def estimate(state="clean", ratio=1.0) -> ThrottleEstimate:
    return ThrottleEstimate(state=state, method="sni_swap", rate_bps=1e6 * ratio,
                            control_rate_bps=1e6, ratio=ratio, p_value=0.001, confidence=0.99,
                            bytes_used=2 << 20, samples=40)


def target(domain=DOMAIN, url=None) -> Target:
    return Target(domain=domain, url=url or f"https://{domain}/", category="GRP",
                  control_domain=CONTROL_SNI, source="twitter.yaml:4")


def clean_probe(address=REAL) -> Evidence:
    return Evidence(
        dns=(dns((address,)),),
        tcp=(tcp(address),),
        tls=(tls(address), tls(address, sni=CONTROL_SNI)),
        http=(http(address=address),),
    )


def clean_control(address=REAL) -> Evidence:
    return Evidence(dns=(dns((address,), kind="helper"),), tcp=(tcp(address),),
                    tls=(tls(address),), http=(http(address=address),))


def measurement(probe=None, control=None, source="helper", tgt=None) -> TargetMeasurement:
    control = clean_control() if control is None else control
    if control == Evidence():
        source = "none"
    return TargetMeasurement(target=tgt or target(), start_time=1615766400.0, runtime=1.5,
                             probe=clean_probe() if probe is None else probe, control=control,
                             control_source=source)


# --- scenarios: what a censor (or an outage) makes the probe see ------------------------------


def tls_broken(failure: str) -> Evidence:
    """The target SNI is broken after the ClientHello; the control SNI works at the same address."""
    return Evidence(
        dns=(dns(),), tcp=(tcp(),),
        tls=(tls(failure=failure), tls(sni=CONTROL_SNI)),
        http=(http(failure=failure, operation="tls_handshake"),),
    )


def scenarios() -> dict[str, tuple[TargetMeasurement, str, str | None]]:
    """name -> (measurement, expected verdict, expected blocking)."""
    failed_tls = (tls(failure="ssl_invalid_hostname"),)
    forged = Evidence(dns=(dns((FORGED,)),), tcp=(tcp(FORGED),), tls=failed_tls,
                      http=(http(failure="ssl_invalid_hostname", address=FORGED),))
    return {
        "clean": (measurement(), "accessible", None),
        "dns_nxdomain": (measurement(Evidence(dns=(nxdomain(),))), "blocked", "dns"),
        "dns_forged": (measurement(forged), "blocked", "dns"),
        "dns_injection": (
            measurement(Evidence(dns=(dns((FORGED,), extra=[(REAL,)]),), tcp=(tcp(FORGED),),
                                 http=(http(address=FORGED),))), "blocked", "dns"),
        "dns_bogon": (measurement(Evidence(dns=(dns((BOGON,)),), tcp=(tcp(BOGON, TIMEOUT),))),
                      "blocked", "dns"),
        "ip_blackhole": (measurement(Evidence(
            dns=(dns(),), tcp=(tcp(failure=TIMEOUT),),
            tls=(tls(failure=TIMEOUT, operation="connect"),
                 tls(sni=CONTROL_SNI, failure=TIMEOUT, operation="connect")),
            http=(http(failure=TIMEOUT, operation="connect"),))), "blocked", "tcp"),
        "rst_after_client_hello": (measurement(tls_broken("connection_reset")), "blocked", "tls"),
        "drop_after_client_hello": (measurement(tls_broken(TIMEOUT)), "blocked", "tls"),
        "http_blockpage": (measurement(Evidence(
            dns=(dns(),), tcp=(tcp(port=80),),
            http=(http(url=f"http://{DOMAIN}/", blockpage="ru.rkn", title="Доступ ограничен"),))),
            "blocked", "http"),
        "down_everywhere": (measurement(Evidence(dns=(nxdomain(),)),
                                        Evidence(dns=(nxdomain(kind="helper"),))), "down", None),
        "no_control": (measurement(Evidence(dns=(dns(),), tcp=(tcp(failure=TIMEOUT),)),
                                   Evidence()), "inconclusive", None),
    }
