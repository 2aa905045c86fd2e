"""The scheduler: jitter, no overlap, survives failing runs, /metrics over real HTTP, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from promstack import ROOT, measurement, sample_run

from probe.model import Vantage, VantageOffline
from probe.monitoring.daemon import Board, Daemon, Schedule, bound_port, serve, start_metrics_server
from probe.monitoring.metrics import ResultsCollector

VANTAGE = Vantage(name="lab-1", asn="AS65001", cc="RU")


class FakeRun:
    """An injected runner returning real records; counts overlap and can fail or hang."""

    def __init__(self, fail_on: set[int] = frozenset(), hang: bool = False, took: float = 0.0):
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.fail_on, self.hang, self.took = fail_on, hang, took

    async def __call__(self, targets, on_result):
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.hang:
                await asyncio.sleep(3600)
            await asyncio.sleep(self.took)
            if self.calls in self.fail_on:
                raise RuntimeError("helper unreachable")
            results = sample_run()
            for m in results:
                on_result(m)
            return results
        finally:
            self.active -= 1


def daemon(run: FakeRun, interval: float = 0.05, jitter: float = 0.0, **kw) -> Daemon:
    kw.setdefault("max_age_runs", 1e9)  # the sample records are seconds old; intervals are ms
    schedule = Schedule(interval=interval, jitter=jitter, **kw)
    return Daemon([], run, VANTAGE, schedule, rng=random.Random(1))


async def run_until(d: Daemon, predicate, timeout: float = 10.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(d.loop(stop, first_delay=0))
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert predicate(), "condition not reached in time"


def test_jitter_is_random_bounded_and_differs_between_volunteers() -> None:
    s = Schedule(interval=900, jitter=120)
    a = [s.next_wait(100, random.Random(1)) for _ in range(1)]
    waits = [s.next_wait(100, random.Random(seed)) for seed in range(50)]
    assert all(800 <= w <= 920 for w in waits)
    assert len({round(w, 6) for w in waits}) > 40 and a[0] in waits
    assert s.next_wait(2000, random.Random(0)) <= 120  # an overlong run: next one soon, not never


async def test_runs_repeat_never_overlap_and_survive_failures() -> None:
    run = FakeRun(fail_on={2}, took=0.02)
    d = daemon(run, interval=0.01)
    await run_until(d, lambda: d.board.snapshot().runs.runs >= 3)
    snap = d.board.snapshot()
    assert run.max_active == 1
    assert snap.runs.failures == 1 and snap.runs.runs >= 3
    assert snap.runs.last_run_duration is not None and snap.runs.last_run_duration >= 0.02
    assert {m.target.domain for m in snap.measurements} == {"abs.twimg.com", "example.org",
                                                            "navalny.com"}


async def test_a_hanging_run_times_out_and_counts_as_failed() -> None:
    d = daemon(FakeRun(hang=True), run_timeout=0.1)
    assert await asyncio.wait_for(d.run_once(), 5) is False
    assert d.board.snapshot().runs.failures == 1


async def test_stop_mid_run_cancels_the_run_promptly() -> None:
    run = FakeRun(hang=True)
    d = daemon(run)
    stop = asyncio.Event()
    task = asyncio.create_task(d.loop(stop, first_delay=0))
    while run.calls == 0:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert run.active == 0


async def test_a_failing_store_does_not_lose_the_metrics_but_fails_the_run() -> None:
    def open_sink():
        def sink(m):
            raise OSError(28, "No space left on device")
        return sink

    d = Daemon([], FakeRun(), VANTAGE, Schedule(max_age_runs=1e9), open_sink)
    assert await d.run_once() is False  # measured but not stored: not a successful run
    assert len(d.board.snapshot().measurements) == 3
    assert d.board.store_errors == 3 and d.board.snapshot().runs.failures == 1


def test_stale_results_are_no_longer_exported() -> None:
    board = Board(VANTAGE, Schedule(interval=60, max_age_runs=3))
    now = time.time()
    board.record(measurement("old.example", "blocked", start=now - 1000))
    board.record(measurement("new.example", "accessible", start=now - 100))
    assert [m.target.domain for m in board.snapshot(now).measurements] == ["new.example"]


async def test_metrics_endpoint_serves_the_board() -> None:
    d = daemon(FakeRun())
    runner = await start_metrics_server(d.board, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}/metrics"
        async with aiohttp.ClientSession() as http:
            before = await (await http.get(url)).text()
            await d.run_once()
            after = await (await http.get(url)).text()
    finally:
        await runner.cleanup()
    assert 'censorprobe_target_verdict{' not in before
    assert 'target="abs.twimg.com"' in after and 'verdict="throttled"} 1.0' in after
    assert 'censorprobe_runs_total{asn="AS65001",cc="RU",vantage="lab-1"} 1.0' in after


async def test_an_offline_vantage_is_exported_as_down_not_as_blocked_targets(caplog) -> None:
    """The vantage check raises VantageOffline before measuring: vantage_up 0, one log line."""
    offline = True

    async def runner(_targets, on_result):
        if offline:
            raise VantageOffline("the system resolver does not answer; 0 of 3 controls reachable")
        return await FakeRun()(_targets, on_result)

    d = Daemon([], runner, VANTAGE, Schedule(interval=60, max_age_runs=1e9))
    with caplog.at_level("WARNING"):
        assert await d.run_once() is False
    text = generate_latest(_registry(d.board)).decode()
    assert 'censorprobe_vantage_up{asn="AS65001",cc="RU",vantage="lab-1"} 0.0' in text
    assert "censorprobe_target_verdict{" not in text
    assert [r.message for r in caplog.records] == [
        "vantage offline, nothing measured: the system resolver does not answer; "
        "0 of 3 controls reachable"]
    offline = False
    assert await d.run_once() is True
    text = generate_latest(_registry(d.board)).decode()
    assert 'censorprobe_vantage_up{asn="AS65001",cc="RU",vantage="lab-1"} 1.0' in text


def _registry(board: Board) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ResultsCollector(board.snapshot))
    return registry


async def test_sigterm_stops_the_daemon_cleanly() -> None:
    run = FakeRun()
    d = daemon(run, interval=0.05)
    ports: list[int] = []
    task = asyncio.create_task(serve(d, "127.0.0.1", 0, started=ports.append, first_delay=0))
    deadline = time.monotonic() + 10
    while run.calls < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 5)
    assert run.calls >= 2 and ports
    async with aiohttp.ClientSession() as http:  # the port is closed again
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"http://127.0.0.1:{ports[0]}/metrics")


def test_listen_option_parsing() -> None:
    daemon_cli = pytest.importorskip("probe.cli.daemon", reason="probe.runner's imports not ready",
                                     exc_type=ImportError)
    assert daemon_cli.parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert daemon_cli.parse_listen("[::1]:9100") == ("::1", 9100)
    assert daemon_cli.parse_listen(":9464") == ("127.0.0.1", 9464)
    for bad in ("9464", "host:port", "h:70000"):
        with pytest.raises(ValueError):
            daemon_cli.parse_listen(bad)


# --- deployment files: no Docker engine or systemd runs here, so check what can be checked ----


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile_is_sane() -> None:
    steps = _dockerfile()
    kinds = [k for k, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert set(kinds) <= {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "VOLUME", "EXPOSE",
                          "HEALTHCHECK", "ENTRYPOINT", "CMD", "ARG", "LABEL"}
    assert ("RUN", "pip install . && rm -rf /src") in steps  # as the README installs it
    user = kinds.index("USER")
    assert steps[user][1] not in ("root", "0") and user < kinds.index("CMD")
    assert "/metrics" in dict(steps)["HEALTHCHECK"] and ("EXPOSE", "9464") in steps
    entry, cmd = json.loads(dict(steps)["ENTRYPOINT"]), json.loads(dict(steps)["CMD"])
    assert entry == ["probe"] and cmd[0] == "daemon"
    daemon_cli = pytest.importorskip("probe.cli.daemon", exc_type=ImportError)
    params = daemon_cli.daemon.make_context("daemon", cmd[1:]).params  # a valid invocation
    assert params["listen"] == ("0.0.0.0", 9464)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"probe", "pyproject.toml", "README.md", "targets"} & set(ignored)


def test_compose_stack_parses_and_mounts_files_that_exist() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"prometheus", "alertmanager", "pushgateway", "grafana"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
    assert "--cluster.listen-address=" in services["alertmanager"]["command"]
    assert services["grafana"]["image"].startswith("grafana/grafana:11.")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_units_verify(tmp_path: Path) -> None:
    for unit in (ROOT / "systemd").iterdir():  # the venv path does not exist here: use /bin/true
        text = unit.read_text().replace("/opt/probe/.venv/bin/probe", "/bin/true")
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    assert [Path(u).name for u in units] == ["probe-daemon.service", "probe.service", "probe.timer"]
    run = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr
