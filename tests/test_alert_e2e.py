"""End to end: a real Prometheus scrapes a probe daemon, evaluates the shipped rules (with short
`for:`), a real Alertmanager routes the alert to an in-process webhook. Plus the shipped
Alertmanager config's inhibition, checked on a real Alertmanager.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from promstack import (
    RULES,
    alertmanager,
    http_get,
    http_post,
    measurement,
    needs,
    prometheus,
    scrape_job,
)

from probe.model import Vantage
from probe.monitoring.daemon import Daemon, Schedule, serve

pytestmark = [needs, pytest.mark.prometheus]

VANTAGE = Vantage(name="lab-1", asn="AS65001", cc="RU")
ALERT_DEADLINE = 40.0  # seconds from the daemon's first throttled run to the webhook


@dataclass
class Webhook:
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def firing(self) -> list[dict[str, str]]:
        return [a["labels"] for body in self.received for a in body["alerts"]
                if a["status"] == "firing"]


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()

    async def receive(request: web.Request) -> web.Response:
        hook.received.append(await request.json())
        hook.arrived.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{path:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    yield hook
    await runner.cleanup()


def fast_rules(tmp: Path) -> Path:
    """The shipped rules with `for: 2s` so an alert can fire within seconds."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "2s"
                rule.pop("keep_firing_for", None)
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def am_config(url: str) -> dict[str, Any]:
    return {"route": {"receiver": "hook", "group_by": ["alertname", "asn", "target"],
                      "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "hook", "webhook_configs": [{"url": url}]}]}


def clean_run():
    return [measurement("abs.twimg.com", "accessible", category="GRP", rate_bps=39e6,
                        control_bps=40e6),
            measurement("example.org", "accessible", category="MISC")]


def throttled_run():
    return [measurement("abs.twimg.com", "throttled", category="GRP", rate_bps=140e3,
                        control_bps=40e6),
            measurement("example.org", "accessible", category="MISC")]


async def stack(tmp: Path, hook: Webhook, make_records) -> AsyncIterator[Any]:
    """Daemon (injected runner returning real records) + Prometheus + Alertmanager."""

    async def runner(targets, on_result):
        records = make_records()
        for m in records:
            on_result(m)
        return records

    daemon = Daemon([], runner, VANTAGE, Schedule(interval=1.0, jitter=0.2, max_age_runs=1e6))
    stop, ports = asyncio.Event(), []
    task = asyncio.create_task(serve(daemon, "127.0.0.1", 0, stop, ports.append, first_delay=0))
    while not ports:
        await asyncio.sleep(0.01)
    try:
        with alertmanager(tmp, am_config(hook.url)) as am, prometheus(
            tmp, [scrape_job("censorprobe", ports[0])], [fast_rules(tmp)], alertmanager=am.base
        ) as prom:
            yield prom
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_throttling_alert_reaches_the_webhook(tmp_path: Path, webhook: Webhook) -> None:
    async for prom in stack(tmp_path, webhook, throttled_run):
        started = time.monotonic()
        await asyncio.wait_for(webhook.arrived.wait(), ALERT_DEADLINE)
        took = time.monotonic() - started
        firing = webhook.firing()
        # one vantage point alone: the single-vantage warning, never the confirmed alert
        assert [a["alertname"] for a in firing] == ["CensorprobeThrottlingSingleVantage"], firing
        assert firing[0]["target"] == "abs.twimg.com" and firing[0]["vantage"] == "lab-1"
        assert firing[0]["asn"] == "AS65001"
        assert not prom.query('ALERTS{alertname="CensorprobeVantageSilent"}')
        print(f"alert arrived {took:.1f} s after Prometheus was ready")


async def test_clean_run_raises_no_alert(tmp_path: Path, webhook: Webhook) -> None:
    async for prom in stack(tmp_path, webhook, clean_run):
        # the rules are being evaluated over the daemon's data ...
        await prom.await_for('asn_target:censorprobe_vantages:count{target="abs.twimg.com"}')
        # ... for longer than `for:` + evaluation + group_wait took in the firing case
        await asyncio.sleep(8)
        assert prom.alerts() == []
        assert webhook.received == []


async def test_shipped_inhibition_mutes_a_silent_vantage_points_alerts(
    tmp_path: Path, webhook: Webhook
) -> None:
    shipped = yaml.safe_load((RULES.parent / "alertmanager.yml").read_text())
    for receiver in shipped["receivers"]:
        receiver["webhook_configs"][0]["url"] = webhook.url
    with alertmanager(tmp_path, shipped) as am:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def alert(name: str, vantage: str) -> dict[str, Any]:
            labels = {"alertname": name, "vantage": vantage, "asn": "AS65001", "cc": "RU"}
            if name != "CensorprobeVantageSilent":
                labels["target"] = "abs.twimg.com"
            return {"labels": labels, "startsAt": now}

        body = json.dumps([alert("CensorprobeVantageSilent", "lab-1"),
                           alert("CensorprobeThrottlingDetected", "lab-1"),
                           alert("CensorprobeThrottlingSingleVantage", "lab-1"),
                           alert("CensorprobeThrottlingDetected", "lab-2")]).encode()
        assert await asyncio.to_thread(http_post, am.base + "/api/v2/alerts", body) == 200
        states: dict[tuple[str, str], str] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = json.loads((await asyncio.to_thread(http_get, am.base + "/api/v2/alerts"))[1])
            states = {(a["labels"]["alertname"], a["labels"]["vantage"]): a["status"]["state"]
                      for a in got}
            if states.get(("CensorprobeThrottlingDetected", "lab-1")) == "suppressed" and \
                    states.get(("CensorprobeThrottlingSingleVantage", "lab-1")) == "suppressed":
                break
            await asyncio.sleep(0.2)
        assert states == {("CensorprobeVantageSilent", "lab-1"): "active",
                          ("CensorprobeThrottlingDetected", "lab-1"): "suppressed",
                          ("CensorprobeThrottlingSingleVantage", "lab-1"): "suppressed",
                          ("CensorprobeThrottlingDetected", "lab-2"): "active"}


# --- the full version: a real `probe daemon` inside the censorship lab ---------------------------

LAB_PREFIX = "plabg"
MON_HOST, MON_LAB = "10.78.0.1", "10.78.0.2"  # our own veth into the lab's client namespace


def _lab_missing() -> str | None:
    import importlib.util
    import os

    if os.geteuid() != 0:
        return "the lab needs root (CAP_NET_ADMIN)"
    for module in ("probe.lab.lifecycle", "probe.cli.lab", "probe.cli.serve", "probe.runner"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} does not exist yet"
        except ImportError as exc:
            return f"{module}: {exc}"
    return None


def _ip(*args: str) -> None:
    import subprocess

    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.mark.lab
async def test_lab_throttle_twimg_alert_from_a_real_daemon(tmp_path: Path, webhook: Webhook) -> None:
    import os
    import subprocess
    import sys

    if reason := _lab_missing():
        pytest.skip(reason)
    from probe.lab import scenarios
    from probe.lab.lifecycle import Lab

    lab = Lab(prefix=LAB_PREFIX, state_root=tmp_path / "lab")
    daemon = None
    try:
        state = lab.up(scenarios.load("throttle_twimg"), helper=True)
        client = lab.names.client
        # a link of our own from the host to the client namespace, only for the scrape
        _ip("link", "add", f"{LAB_PREFIX}-mon", "type", "veth", "peer", "name", f"{LAB_PREFIX}-mon1")
        _ip("link", "set", f"{LAB_PREFIX}-mon1", "netns", client)
        _ip("addr", "add", f"{MON_HOST}/30", "dev", f"{LAB_PREFIX}-mon")
        _ip("link", "set", f"{LAB_PREFIX}-mon", "up")
        _ip("-n", client, "addr", "add", f"{MON_LAB}/30", "dev", f"{LAB_PREFIX}-mon1")
        _ip("-n", client, "link", "set", f"{LAB_PREFIX}-mon1", "up")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", client, sys.executable, "-c",
             "from probe.cli.daemon import daemon; daemon()",
             "--targets", state["targets_file"], "--ca-file", state["ca_file"],
             "--control-resolver", state["control_resolver"], "--helper", state["helper_url"],
             "--vantage", "lab", "--probe-asn", "AS65001", "--probe-cc", "RU",
             "--out", str(tmp_path / "results"), "--interval", "10", "--jitter", "0",
             "--listen", f"{MON_LAB}:9464"],
            env=env, stdout=open(tmp_path / "daemon.log", "wb"),  # noqa: SIM115 (lives with it)
            stderr=subprocess.STDOUT)
        with alertmanager(tmp_path, am_config(webhook.url)) as am, prometheus(
            tmp_path, [{"job_name": "censorprobe", "static_configs": [
                {"targets": [f"{MON_LAB}:9464"]}]}], [fast_rules(tmp_path)], alertmanager=am.base
        ) as prom:
            try:
                await asyncio.wait_for(webhook.arrived.wait(), 180)
            except TimeoutError:
                verdicts = prom.query("censorprobe_target_verdict == 1")
                log = (tmp_path / "daemon.log").read_text()[-3000:]
                pytest.fail(f"no alert in 180 s; verdicts {verdicts}; daemon log:\n{log}")
            firing = webhook.firing()
            assert {a["alertname"] for a in firing} == {"CensorprobeThrottlingSingleVantage"}, \
                firing  # one daemon: one vantage point of its ASN
            assert {a["target"] for a in firing} <= {"abs.twimg.com", "pbs.twimg.com",
                                                     "video.twimg.com"}
            quiet = prom.query('censorprobe_target_verdict{target=~"twitter.com|www.example.com",'
                               'verdict="throttled"} == 1')
            assert quiet == []
        daemon.send_signal(15)
        assert daemon.wait(30) == 0  # SIGTERM: a clean stop
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        subprocess.run(["ip", "link", "del", f"{LAB_PREFIX}-mon"], capture_output=True)
        lab.down()
