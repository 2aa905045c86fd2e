"""Real Prometheus, Alertmanager and Pushgateway binaries (Debian packages) for tests, on
127.0.0.1 with temporary data directories, plus real TargetMeasurement records to feed them.

Every wait is bounded; a process that does not get ready fails the test with its log attached.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from probe.model import (
    DnsResult,
    Evidence,
    HttpResult,
    HttpTimings,
    Target,
    TargetMeasurement,
    TcpResult,
    ThrottleEstimate,
    ThroughputResult,
    TlsResult,
    Verdict,
)

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "grafana" / "prometheus" / "rules.yml"

needs = pytest.mark.skipif(
    not (PROMETHEUS and PROMTOOL and ALERTMANAGER and PUSHGATEWAY),
    reason="needs Debian's prometheus, prometheus-alertmanager and prometheus-pushgateway",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback only)
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def http_post(url: str, body: bytes = b"", content_type: str = "application/json") -> int:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=5.0) as r:  # noqa: S310
        return r.status


class Process:
    """A started binary with its log file; `base` is its http://127.0.0.1:PORT."""

    def __init__(self, argv: list[str], port: int, log: Path, host: str = "127.0.0.1") -> None:
        self.port, self.log = port, log
        self.base = f"http://{host}:{port}"
        with open(log, "ab") as out:  # appended: a restarted process keeps the earlier log
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, path: str = "/-/ready", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if http_get(self.base + path, 1.0)[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.proc.args[0]} not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


P = TypeVar("P", bound=Process)


class Prometheus(Process):
    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        status, body = http_get(f"{self.base}/api/v1/query?{q}")
        data = json.loads(body or b"{}")
        assert status == 200 and data.get("status") == "success", (expr, body[:500])
        return data["data"]["result"]

    def format_query(self, expr: str) -> tuple[int, dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        status, body = http_get(f"{self.base}/api/v1/format_query?{q}")
        return status, json.loads(body or b"{}")

    def alerts(self) -> list[dict[str, Any]]:
        return json.loads(http_get(f"{self.base}/api/v1/alerts")[1])["data"]["alerts"]

    def wait_for(self, expr: str, timeout: float = 30.0,
                 ok: Callable[[list[dict[str, Any]]], bool] = bool) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if ok(result):
                return result
            time.sleep(0.25)
        raise AssertionError(f"{expr!r} never matched in {timeout} s; last: {result}")

    async def await_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.wait_for, expr, timeout)


@contextmanager
def prometheus(tmp: Path, scrape: list[dict[str, Any]], rule_files: list[Path] = (),
               alertmanager: str | None = None, interval: str = "1s",
               extra_args: list[str] = (), port: int | None = None,
               host: str = "127.0.0.1") -> Iterator[Prometheus]:
    """`port` and `tmp` kept across two calls: a restart on the same data (remote-write tests);
    `host`: another of our own addresses to listen on (a lab's veth)."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": scrape,
        "rule_files": [str(p) for p in rule_files],
    }
    if alertmanager:
        hostport = alertmanager.removeprefix("http://")
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [hostport]}]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    with _running(Prometheus, tmp / "prometheus.log", lambda port: [
        PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address={host}:{port}", "--web.enable-lifecycle", *extra_args,
    ], port, host) as proc:
        yield proc


@contextmanager
def alertmanager(tmp: Path, config: dict[str, Any]) -> Iterator[Process]:
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(config))
    with _running(Process, tmp / "alertmanager.log", lambda port: [
        ALERTMANAGER, f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'am'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
    ]) as proc:
        yield proc


@contextmanager
def pushgateway(tmp: Path) -> Iterator[Process]:
    with _running(Process, tmp / "pushgateway.log",
                  lambda port: [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"]) as proc:
        yield proc


@contextmanager
def _running(kind: type[P], log: Path, argv: Callable[[int], list[str]], port: int | None = None,
             host: str = "127.0.0.1") -> Iterator[P]:
    """Starts the binary on a free loopback port, waits until it answers, always stops it."""
    port = port or free_port()
    proc = kind(argv(port), port, log, host)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def scrape_job(name: str, port: int, honor_labels: bool = False) -> dict[str, Any]:
    return {"job_name": name, "honor_labels": honor_labels,
            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}


# --- real records ------------------------------------------------------------------------------


def _evidence(domain: str, failure: str | None = None, rate_bps: float | None = None) -> Evidence:
    op = "tls_handshake" if failure else None
    return Evidence(
        dns=(DnsResult(domain=domain, resolver="udp://127.0.0.1:53", resolver_kind="udp",
                       rcode="NOERROR", addresses=("10.0.0.2",), elapsed=0.012),),
        tcp=(TcpResult(address="10.0.0.2", port=443, elapsed=0.021),),
        tls=(TlsResult(address="10.0.0.2", port=443, sni=domain, elapsed=0.09, connect_time=0.02,
                       failure=failure, operation=op, tls_version=None if failure else "TLSv1.3"),),
        http=() if failure else (HttpResult(
            url=f"https://{domain}/", address="10.0.0.2", status=200, elapsed=0.3,
            timings=HttpTimings(connect=0.02, tls=0.09, first_byte=0.15, transfer=0.3)),),
        throughput=() if rate_bps is None else (ThroughputResult(
            url="https://helper/bulk", sni=domain, bytes_received=1 << 20,
            goodput_bps=rate_bps, steady_bps=rate_bps, elapsed=5.0),),
    )


def measurement(domain: str, verdict: str, *, category: str = "NEWS", blocking: str | None = None,
                failure: str | None = None, rate_bps: float | None = None,
                control_bps: float | None = None, start: float | None = None) -> TargetMeasurement:
    """A record as the runner makes it; throttled ones carry a ThrottleEstimate."""
    throttle = None
    if rate_bps is not None and control_bps is not None:
        throttle = ThrottleEstimate(
            state="throttled" if verdict == "throttled" else "clean", method="sni_swap",
            rate_bps=rate_bps, control_rate_bps=control_bps, ratio=rate_bps / control_bps,
            p_value=0.001, confidence=0.99, bytes_used=2 << 20, samples=40)
    return TargetMeasurement(
        target=Target(domain=domain, url=f"https://{domain}/", category=category),
        start_time=time.time() - 10 if start is None else start,
        runtime=6.5,
        probe=_evidence(domain, failure, rate_bps),
        control=_evidence(domain, None, control_bps),
        control_source="helper",
        verdict=Verdict(verdict=verdict, blocking=blocking, rule="test", rules_version="test",
                        failure=failure, throttling=throttle),
    )


def sample_run() -> list[TargetMeasurement]:
    """One run: a throttled, an accessible, a TLS-blocked target."""
    return [
        measurement("abs.twimg.com", "throttled", category="GRP", rate_bps=140e3, control_bps=40e6),
        measurement("example.org", "accessible", category="MISC", rate_bps=38e6, control_bps=40e6),
        measurement("navalny.com", "blocked", category="POLR", blocking="tls",
                    failure="connection_reset"),
    ]
