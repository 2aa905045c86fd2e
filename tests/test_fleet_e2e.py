"""The fleet end to end: three real `probe daemon`s push by remote write into one real Prometheus
(Debian's, with its remote-write receiver) that evaluates the shipped rules and alerts through a
real Alertmanager (the shipped config: routes, inhibition) to a webhook.

Two vantage points sit behind the same censor (lab `tls_rst`: RST after a ClientHello naming
navalny.com, AS65001), one behind a clean network (lab `clean`, AS65002). Checked, in order:
the confirmed blocking alert fires for AS65001 only, once, for both vantage points together;
the receiver is stopped for a minute and restarted on the same data, and every vantage point's
series has no hole; one vantage point is stopped and the silent-vantage alert names it.

Time is scaled down: 1 s evaluation, 1 s pushes, a 5 s query lookback, `for:` of seconds.
Addresses: each lab's client namespace gets a veth to the host (10.79.N.0/30, our own);
Prometheus listens on the host end of the first, the second lab reaches it through its own veth.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from promstack import RULES, Prometheus, alertmanager, free_port, needs, prometheus
from test_alert_e2e import Webhook, _lab_missing, webhook  # noqa: F401 (fixture)

pytestmark = [needs, pytest.mark.prometheus, pytest.mark.lab]

PREFIXES = ("pfla", "pflb")  # censored lab, clean lab
HOST_IP = "10.79.1.1"  # Prometheus listens here: the host end of the first lab's veth
PUSH = 1.0  # seconds between two pushes of a daemon
OUTAGE = 60.0  # seconds the receiver is down
# `for:` per alert, scaled down: confirmed alerts at once; a single-vantage warning must outlast
# the skew between two vantage points' first pushes and a receiver restart (backoff up to 5 s);
# silence must outlast the catch-up after the restart
FOR = {"CensorprobeThrottlingDetected": "2s", "CensorprobeTargetBlocked": "2s",
       "CensorprobeThrottlingSingleVantage": "30s", "CensorprobeBlockedSingleVantage": "30s",
       "CensorprobeVantageSilent": "20s", "CensorprobeVantageOffline": "30s"}
LOOKBACK = "5s"


@dataclasses.dataclass
class Vantage:
    name: str
    asn: str
    lab: int  # index into PREFIXES
    process: subprocess.Popen | None = None


VANTAGES = [Vantage("msk-a", "AS65001", 0), Vantage("msk-b", "AS65001", 0),
            Vantage("spb-c", "AS65002", 1)]


def scaled_rules(tmp: Path) -> Path:
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = FOR[rule["alert"]]
                rule.pop("keep_firing_for", None)
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def shipped_alertmanager(url: str) -> dict[str, Any]:
    """The shipped routes and inhibition, with our webhook and waits of a second."""
    config = yaml.safe_load((RULES.parent / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        receiver["webhook_configs"][0]["url"] = url
    config["route"].update(group_wait="1s", group_interval="1s")
    return config


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def link_to_host(index: int, client_ns: str) -> None:
    """veth host <-> client namespace, 10.79.N.1/30 <-> .2; a route to HOST_IP from any lab."""
    host_if, lab_if, net = f"{PREFIXES[index]}-rw", f"{PREFIXES[index]}-rw1", f"10.79.{index + 1}"
    _ip("link", "add", host_if, "type", "veth", "peer", "name", lab_if)
    _ip("link", "set", lab_if, "netns", client_ns)
    _ip("addr", "add", f"{net}.1/30", "dev", host_if)
    _ip("link", "set", host_if, "up")
    _ip("-n", client_ns, "addr", "add", f"{net}.2/30", "dev", lab_if)
    _ip("-n", client_ns, "link", "set", lab_if, "up")
    if f"{net}.1" != HOST_IP:
        _ip("-n", client_ns, "route", "add", f"{HOST_IP}/32", "via", f"{net}.1")


def start_daemon(v: Vantage, state: dict[str, Any], ns: str, url: str, tmp: Path) -> None:
    from probe.lab.lifecycle import REPO, lab_env

    v.process = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "probe", "daemon",
         "--targets", state["targets_file"], "--ca-file", state["ca_file"],
         "--control-resolver", state["control_resolver"], "--helper", state["helper_url"],
         "--no-third-party", "--no-throughput", "--vantage", v.name, "--probe-asn", v.asn,
         "--probe-cc", "RU", "--out", str(tmp / v.name), "--interval", "10", "--jitter", "0",
         "--listen", "127.0.0.1:0", "--remote-write", url,
         "--remote-write-interval", str(PUSH)],
        env=lab_env(), cwd=REPO, stdin=subprocess.DEVNULL,
        stdout=open(tmp / f"{v.name}.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115


def stop_daemon(v: Vantage) -> int:
    assert v.process is not None
    v.process.terminate()
    return v.process.wait(30)


def receiver(tmp: Path, am: str, port: int):
    return prometheus(tmp, [], [scaled_rules(tmp)], alertmanager=am, port=port, host=HOST_IP,
                      extra_args=["--web.enable-remote-write-receiver",
                                  f"--query.lookback-delta={LOOKBACK}"])


def firing(hook: Webhook, alertname: str) -> list[list[str]]:
    """Per notification of `alertname` firing: the vantage points it names."""
    return [sorted(a["labels"]["vantage"] for a in body["alerts"] if a["status"] == "firing")
            for body in hook.received if body["groupLabels"].get("alertname") == alertname]


def hole_report(prom: Prometheus, vantage: str, start: float, end: float) -> tuple[float, int]:
    """(largest gap between two samples, samples) of one vantage's info series in [start, end]."""
    span = int(time.time() - start) + 2
    [series] = prom.query(f'censorprobe_vantage_info{{vantage="{vantage}"}}[{span}s]')
    stamps = [float(t) for t, _ in series["values"] if start <= float(t) <= end]
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return max(gaps, default=float("inf")), len(stamps)


async def wait_until(check, timeout: float, what: str, tmp: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await asyncio.to_thread(check):
            return result
        await asyncio.sleep(0.5)
    logs = "\n".join(f"--- {v.name}\n" + (tmp / f"{v.name}.log").read_text()[-1500:]
                     for v in VANTAGES if (tmp / f"{v.name}.log").exists())
    pytest.fail(f"{what}: not within {timeout} s\n{logs}")


async def test_fleet_of_three_vantage_points(tmp_path: Path, webhook: Webhook) -> None:  # noqa: F811
    if reason := _lab_missing():
        pytest.skip(reason)
    from probe.lab import scenarios
    from probe.lab.lifecycle import Lab

    started = time.monotonic()
    labs = [Lab(prefix=p, state_root=tmp_path / "labs") for p in PREFIXES]
    try:
        states = []
        for lab, name in zip(labs, ("tls_rst", "clean"), strict=True):
            scenario = scenarios.load(name)
            keep = tuple(t for t in scenario.targets if t.domain in ("navalny.com",
                                                                     "www.example.com"))
            states.append(lab.up(dataclasses.replace(scenario, targets=keep)))
            link_to_host(len(states) - 1, lab.names.client)
        port = free_port()
        url = f"http://{HOST_IP}:{port}/api/v1/write"
        with alertmanager(tmp_path, shipped_alertmanager(webhook.url)) as am:
            with receiver(tmp_path, am.base, port) as prom:
                for v in VANTAGES:
                    start_daemon(v, states[v.lab], labs[v.lab].names.client, url, tmp_path)
                await wait_until(lambda: firing(webhook, "CensorprobeTargetBlocked"), 90,
                                 "the confirmed blocking alert", tmp_path)
                print(f"blocking alert at the webhook {time.monotonic() - started:.0f} s "
                      "after the start (labs included)")
                verdicts = prom.query("censorprobe_target_verdict == 1")
                down_at = time.time()
            await asyncio.sleep(OUTAGE)  # the receiver is away; the daemons queue and retry
            with receiver(tmp_path, am.base, port) as prom:
                up_at = time.time()
                await check_no_hole(prom, down_at, up_at, tmp_path)
                counters = {r["metric"]["vantage"]: float(r["value"][1]) for r in prom.query(
                    "censorprobe_remote_write_failed_requests_total")}
                dropped = prom.query("censorprobe_remote_write_samples_dropped_total > 0")
                assert stop_daemon(VANTAGES[2]) == 0
                silent = await wait_until(lambda: firing(webhook, "CensorprobeVantageSilent"),
                                          60, "the silent-vantage alert", tmp_path)
        for v in VANTAGES[:2]:
            assert stop_daemon(v) == 0
    finally:
        for v in VANTAGES:
            if v.process is not None and v.process.poll() is None:
                v.process.kill()
                v.process.wait(10)
        for index, lab in enumerate(labs):
            subprocess.run(["ip", "link", "del", f"{PREFIXES[index]}-rw"], capture_output=True)
            lab.down()

    seen = {(r["metric"]["vantage"], r["metric"]["target"], r["metric"]["verdict"])
            for r in verdicts}
    assert seen == {("msk-a", "navalny.com", "blocked"), ("msk-b", "navalny.com", "blocked"),
                    ("msk-a", "www.example.com", "accessible"),
                    ("msk-b", "www.example.com", "accessible"),
                    ("spb-c", "navalny.com", "accessible"),
                    ("spb-c", "www.example.com", "accessible")}, seen
    # once: one notification naming both vantage points of the censored ASN, nothing else
    assert firing(webhook, "CensorprobeTargetBlocked") == [["msk-a", "msk-b"]], webhook.received
    alerts = [(a["labels"]["alertname"], a["labels"]["vantage"], a["status"])
              for body in webhook.received for a in body["alerts"]]
    assert {a for a in alerts if a[0] != "CensorprobeTargetBlocked"} == {
        ("CensorprobeVantageSilent", "spb-c", "firing")}, alerts
    assert silent == [["spb-c"]]
    assert all(counters[v.name] > 0 for v in VANTAGES), counters  # the outage was felt ...
    assert dropped == []  # ... and cost no sample
    print(f"whole test {time.monotonic() - started:.0f} s; failed requests during the outage "
          f"{counters}")


async def check_no_hole(prom: Prometheus, down_at: float, up_at: float, tmp: Path) -> None:
    """Every vantage point's queue reaches the restarted receiver: no gap across the outage."""

    def caught_up() -> bool:
        got = prom.query(f"time() - timestamp(censorprobe_vantage_info) < {3 * PUSH}")
        return len(got) == len(VANTAGES)

    await wait_until(caught_up, 30, "the daemons' queues caught up", tmp)
    for v in VANTAGES:
        gap, samples = hole_report(prom, v.name, down_at - 5, up_at + 5)
        expected = (up_at - down_at + 10) / PUSH
        print(f"{v.name}: {samples} samples across the {up_at - down_at:.0f} s outage "
              f"(expected about {expected:.0f}), largest gap {gap:.1f} s")
        assert gap <= 5 * PUSH and samples >= 0.8 * expected, (v.name, gap, samples)
