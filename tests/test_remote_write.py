"""Remote write against receivers on loopback: an in-process aiohttp receiver whose answers the
test scripts (statuses, Retry-After, TLS, auth), and the real Prometheus from Debian with its
remote-write receiver (the daemon's pushes, and `probe run --remote-write`)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import ssl
import subprocess
import time
import urllib.request
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import cramjam
import pytest
import trustme
import yaml
from aiohttp import web
from dnsserver import Rule
from promstack import PROMETHEUS, free_port, needs, prometheus, sample_run
from test_cli import _targets_file, invoke
from test_runner import isp, lab  # noqa: F401 (fixtures)

from probe.model import Vantage
from probe.monitoring.daemon import Daemon, Schedule, serve
from probe.monitoring.metrics import ResultsCollector, snapshot_of_run
from probe.monitoring.remote_queue import RemoteWriter, WriterCollector
from probe.monitoring.remote_write import (
    HEADERS,
    RemoteWriteConfig,
    decode,
    encode,
    families_of,
    push_once,
)

VANTAGE = Vantage(name="msk-1", asn="AS65001", cc="RU")
FAST = {"min_backoff": 0.05, "max_backoff": 0.2, "timeout": 5.0}


def collectors() -> list[ResultsCollector]:
    snapshot = snapshot_of_run(sample_run(), VANTAGE, 900.0)
    return [ResultsCollector(lambda: snapshot)]


@dataclass
class Receiver:
    """Answers each POST with the next scripted (status, headers), then 204 for ever."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def timestamps(self) -> list[int]:
        """The (single) timestamp of each request received, in arrival order."""
        return [decode(body).timeseries[0].samples[0].timestamp for _, body in self.requests]


async def _serve(handler: Callable, ssl_context=None) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/api/v1/write", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()

    async def handle(request: web.Request) -> web.Response:
        rx.requests.append((dict(request.headers), await request.read()))
        status, headers = rx.script.pop(0) if rx.script else (204, {})
        return web.Response(status=status, headers=headers, text="" if status < 300 else "no")

    runner, port = await _serve(handle)
    rx.url = f"http://127.0.0.1:{port}/api/v1/write"
    yield rx
    await runner.cleanup()


# --- the request ---------------------------------------------------------------------------------


def test_a_request_is_a_snappy_block_writerequest_with_sorted_labels_and_one_timestamp() -> None:
    batch = encode(families_of(collectors()), 1_700_000_000_123)
    raw = bytes(cramjam.snappy.decompress_raw(batch.body))  # block format, not framed
    assert len(raw) == batch.raw_bytes > len(batch.body)
    request = decode(batch.body)
    assert len(request.timeseries) == batch.samples > 20
    for ts in request.timeseries:
        names = [label.name for label in ts.labels]
        assert names == sorted(names) and len(set(names)) == len(names) and "__name__" in names
        labels = {label.name: label.value for label in ts.labels}
        assert (labels["vantage"], labels["asn"], labels["cc"]) == ("msk-1", "AS65001", "RU")
        assert [s.timestamp for s in ts.samples] == [1_700_000_000_123]
    names = {label.value for ts in request.timeseries for label in ts.labels
             if label.name == "__name__"}
    assert {"censorprobe_target_verdict", "censorprobe_runs_total",
            "censorprobe_vantage_info"} <= names


def test_credentials_are_one_kind_or_the_other() -> None:
    with pytest.raises(ValueError, match="not both"):
        RemoteWriteConfig("http://127.0.0.1/", token="t", user="u", password="p")
    with pytest.raises(ValueError, match="both a user and a password"):
        RemoteWriteConfig("http://127.0.0.1/", user="u")
    config = RemoteWriteConfig("http://127.0.0.1/", min_backoff=0.5, max_backoff=5.0)
    assert [config.backoff(n) for n in (1, 2, 3, 4, 5, 50)] == [0.5, 1, 2, 4, 5, 5]
    assert config.backoff(1, retry_after=30.0) == 30.0 and config.backoff(1, 1e9) == 300.0


# --- answers -------------------------------------------------------------------------------------


async def test_2xx_is_sent_with_the_three_headers_and_a_bearer_token(receiver: Receiver) -> None:
    config = RemoteWriteConfig(receiver.url, token="s3cret", **FAST)
    answer = await push_once(collectors(), config)
    assert (answer.outcome, answer.status) == ("sent", 204)
    [(headers, body)] = receiver.requests
    assert {k: headers[k] for k in HEADERS} == HEADERS
    assert headers["Authorization"] == "Bearer s3cret"
    assert decode(body).timeseries


async def test_basic_auth(receiver: Receiver) -> None:
    config = RemoteWriteConfig(receiver.url, user="msk-1", password="pw", **FAST)
    assert (await push_once(collectors(), config)).outcome == "sent"
    [(headers, _)] = receiver.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"msk-1:pw").decode()


async def test_5xx_and_429_are_retried_with_backoff_honouring_retry_after(
    receiver: Receiver,
) -> None:
    receiver.script = [(503, {}), (429, {"Retry-After": "0.3"}), (500, {})]
    started = time.monotonic()
    answer = await push_once(collectors(), RemoteWriteConfig(receiver.url, **FAST))
    took = time.monotonic() - started
    assert answer.outcome == "sent" and len(receiver.requests) == 4
    assert len(set(receiver.timestamps())) == 1  # the same request, resent
    assert 0.05 + 0.3 + 0.2 <= took < 5, took  # backoffs 0.05, max(0.1, Retry-After), 0.2


@pytest.mark.parametrize("status", [400, 401, 404, 413, 301])
async def test_4xx_and_redirects_are_dropped_never_retried(receiver: Receiver, status: int) -> None:
    receiver.script = [(status, {"Location": "http://127.0.0.1:1/"})]
    writer = RemoteWriter(RemoteWriteConfig(receiver.url, **FAST), collectors())
    batch = writer.collect_now()
    async with _session(writer) as session:
        await asyncio.wait_for(writer.drain(session), 5)
    assert len(receiver.requests) == 1
    assert writer.stats.rejected_samples == batch.samples and writer.stats.sent_samples == 0
    assert writer.stats.queued_bytes == 0


async def test_no_receiver_is_retried_until_the_deadline() -> None:
    url = f"http://127.0.0.1:{free_port()}/api/v1/write"
    answer = await push_once(collectors(), RemoteWriteConfig(url, **FAST), deadline=0.5)
    assert answer.outcome == "retry" and answer.status is None
    assert "Connect" in answer.detail or "refused" in answer.detail, answer.detail


async def test_tls_trusts_only_the_given_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    got: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(status=200)

    runner, port = await _serve(handle, server_ctx)
    try:
        url = f"https://127.0.0.1:{port}/api/v1/write"
        trusted = RemoteWriteConfig(url, ca_file=str(tmp_path / "ca.pem"), **FAST)
        assert (await push_once(collectors(), trusted)).outcome == "sent"
        untrusted = await push_once(collectors(), RemoteWriteConfig(url, **FAST), deadline=0.3)
        assert untrusted.outcome == "retry" and "ertificate" in untrusted.detail
        assert len(got) == 1
    finally:
        await runner.cleanup()


# --- the queue -----------------------------------------------------------------------------------


def _session(writer: RemoteWriter):
    from probe.monitoring.remote_write import open_session

    return open_session(writer.config)


async def test_an_outage_keeps_every_request_and_sends_them_in_time_order(
    receiver: Receiver,
) -> None:
    clock = iter(range(1_000, 10_000, 1_000))
    writer = RemoteWriter(RemoteWriteConfig(receiver.url, **FAST), collectors(),
                          clock=lambda: next(clock))
    receiver.script = [(503, {})] * 6
    for _ in range(4):
        writer.collect_now()
    async with _session(writer) as session:
        await asyncio.wait_for(writer.drain(session), 10)
    assert receiver.timestamps() == [1000] * 7 + [2000, 3000, 4000]
    assert writer.stats.failed_requests == 6 and writer.stats.queued_samples == 0


def test_timestamps_never_go_backwards_even_if_the_clock_does() -> None:
    clock = iter([5_000, 4_000, 4_000, 6_000])
    writer = RemoteWriter(RemoteWriteConfig("http://127.0.0.1/"), collectors(),
                          clock=lambda: next(clock))
    assert [writer.collect_now().timestamp_ms for _ in range(4)] == [5000, 5001, 5002, 6000]


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    one = len(encode(families_of(collectors()), 1).body)
    writer = RemoteWriter(RemoteWriteConfig("http://127.0.0.1/", queue_bytes=3 * one + one // 2),
                          collectors(), clock=iter(range(1, 100)).__next__)
    writer.collectors.append(WriterCollector(writer, VANTAGE))
    batches = [writer.collect_now() for _ in range(6)]
    assert writer.stats.evicted_samples == sum(b.samples for b in batches[:3])
    assert [b.timestamp_ms for b in writer._queue] == [4, 5, 6]
    assert writer.stats.queued_bytes == sum(len(b.body) for b in batches[3:])
    dropped = [s for ts in decode(writer.collect_now().body).timeseries for s in ts.samples
               if {(label.name, label.value) for label in ts.labels}
               >= {("__name__", "censorprobe_remote_write_samples_dropped_total"),
                   ("reason", "queue_full")}]
    assert [s.value for s in dropped] == [sum(b.samples for b in batches[:3])]


# --- a real Prometheus ---------------------------------------------------------------------------


@needs
@pytest.mark.prometheus
async def test_the_daemon_pushes_into_a_real_prometheus(tmp_path: Path) -> None:
    port = free_port()
    with prometheus(tmp_path, [], extra_args=["--web.enable-remote-write-receiver"],
                    port=port) as prom:
        async def runner(targets, on_result):
            for m in sample_run():
                on_result(m)
            return []

        daemon = Daemon([], runner, VANTAGE, Schedule(interval=60, jitter=0))
        config = RemoteWriteConfig(f"{prom.base}/api/v1/write", interval=0.5, **FAST)
        stop = asyncio.Event()
        task = asyncio.create_task(serve(daemon, "127.0.0.1", 0, stop, first_delay=0,
                                         remote=config))
        try:
            got = await prom.await_for('censorprobe_target_verdict{verdict="throttled"} == 1')
            sent = await prom.await_for("censorprobe_remote_write_samples_total > 0")
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    assert [(r["metric"]["target"], r["metric"]["vantage"], r["metric"]["asn"],
             r["metric"]["cc"]) for r in got] == [("abs.twimg.com", "msk-1", "AS65001", "RU")]
    assert "job" not in got[0]["metric"] and "instance" not in got[0]["metric"]
    assert sent[0]["metric"]["vantage"] == "msk-1"
    print(json.dumps(sent[0]["value"]))


# --- `probe run --remote-write` ------------------------------------------------------------------

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the ISP resolver needs port 53 (root)")


def _run_args(tmp_path: Path, lab, *extra: str) -> list[str]:  # noqa: F811
    return ["run", "--targets", str(_targets_file(tmp_path, lab)), "--out", str(tmp_path / "out"),
            "--ca-file", lab.ca_file, "--control-resolver", lab.dns.udp_url, "--helper",
            lab.helper_url, "--timeout", "1.5", "--no-throughput", "--vantage", "msk-2",
            "--probe-asn", "AS65002", "--probe-cc", "RU", *extra]


@needs
@root_only
@pytest.mark.prometheus
async def test_probe_run_pushes_once_into_a_real_prometheus(tmp_path, lab, isp) -> None:  # noqa: F811
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    isp.zone["www.example.test"] = Rule.answer("127.0.0.1")
    with prometheus(tmp_path, [], extra_args=["--web.enable-remote-write-receiver"]) as prom:
        result = await asyncio.to_thread(
            invoke, *_run_args(tmp_path, lab, "--remote-write", f"{prom.base}/api/v1/write"))
        assert result.exit_code == 0, result.output
        got = await prom.await_for('censorprobe_target_verdict{vantage="msk-2"} == 1')
    assert sorted((r["metric"]["target"], r["metric"]["verdict"], r["metric"]["asn"])
                  for r in got) == [("example.test", "accessible", "AS65002"),
                                    ("www.example.test", "down", "AS65002")]


@root_only
async def test_probe_run_says_when_the_push_is_refused_and_exits_6(
    tmp_path, lab, isp, receiver: Receiver  # noqa: F811
) -> None:
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    isp.zone["www.example.test"] = Rule.answer("127.0.0.1")
    receiver.script = [(401, {})]
    result = await asyncio.to_thread(invoke, *_run_args(
        tmp_path, lab, "--remote-write", receiver.url, "--remote-write-token", "wrong"))
    assert result.exit_code == 6, result.output
    assert f"error: remote write to {receiver.url} failed (HTTP 401: no)" in result.stderr
    assert len(receiver.requests) == 1 and len(list((tmp_path / "out").glob("*.jsonl"))) == 1


def test_credentials_without_a_url_are_refused(tmp_path: Path) -> None:
    result = invoke("run", "--remote-write-user", "u", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "without --remote-write URL" in result.stderr
    result = invoke("run", "--remote-write", "http://127.0.0.1:9/", "--remote-write-user", "u",
                    "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "user and a password" in result.stderr
    assert not (tmp_path / "out").exists()


def _bcrypt(password: str) -> str | None:
    """A bcrypt hash for Prometheus' web config (the stdlib's crypt, gone in Python 3.13)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return None
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    return hashed if hashed and hashed.startswith("$2") else None


@needs
@pytest.mark.prometheus
async def test_prometheus_own_tls_and_basic_auth_take_our_pushes(tmp_path: Path) -> None:
    """docs/fleet.md's no-proxy set-up: Prometheus' --web.config.file with a server certificate
    and one basic-auth user per vantage point; our CA file and credentials get through, a wrong
    password is a 401 that is dropped, not retried."""
    hashed = _bcrypt("volunteer-pw")
    if hashed is None:
        pytest.skip("no bcrypt hash available (crypt module)")
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "web.yml").write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(tmp_path / "server.pem"),
                              "key_file": str(tmp_path / "server.pem")},
        "basic_auth_users": {"msk-1": hashed}}))
    (tmp_path / "prometheus.yml").write_text("global: {scrape_interval: 1s}\n")
    port = free_port()
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
         f"--web.config.file={tmp_path / 'web.yml'}", "--web.enable-remote-write-receiver"],
        stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"https://127.0.0.1:{port}/api/v1/write"
    good = RemoteWriteConfig(url, user="msk-1", password="volunteer-pw",
                             ca_file=str(tmp_path / "ca.pem"), **FAST)
    try:
        answer = await push_once(collectors(), good, deadline=30)  # retried until it listens
        assert (answer.outcome, answer.status) == ("sent", 204), answer
        wrong = await push_once(collectors(), dataclasses.replace(good, password="guess"))
        assert (wrong.outcome, wrong.status) == ("rejected", 401), wrong
        query = f"https://127.0.0.1:{port}/api/v1/query?query=censorprobe_vantage_info"
        tls = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        request = urllib.request.Request(query, headers={
            "Authorization": "Basic " + base64.b64encode(b"msk-1:volunteer-pw").decode()})
        with urllib.request.urlopen(request, context=tls, timeout=10) as r:  # noqa: S310
            result = json.load(r)["data"]["result"]
        assert [m["metric"]["vantage"] for m in result] == ["msk-1"], result
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_config_file_configures_remote_write_and_hides_its_secrets(tmp_path: Path) -> None:
    path = tmp_path / "probe.toml"
    path.write_text('[remote_write]\nurl = "https://m.example/api/v1/write"\n'
                    'user = "msk-1"\npassword = "pw"\nca_file = "ca.pem"\ninterval = 30\n')
    (tmp_path / "ca.pem").write_text(trustme.CA().cert_pem.bytes().decode())
    shown = invoke("config", "--config", str(path), "daemon")
    assert shown.exit_code == 0, shown.output
    lines = {line.split()[0]: line.split()[1] for line in shown.stdout.splitlines()
             if line.startswith("remote_write.")}
    assert lines == {"remote_write.url": '"https://m.example/api/v1/write"',
                     "remote_write.token": "-", "remote_write.user": '"msk-1"',
                     "remote_write.password": '"***"',
                     "remote_write.ca_file": f'"{tmp_path / "ca.pem"}"',
                     "remote_write.interval": "30.0"}
    path.write_text('[remote_write]\nurl = "https://m.example/"\ninterval = 600\n')
    refused = invoke("config", "--config", str(path), "daemon")
    assert refused.exit_code == 2 and f"{path}:3: remote_write.interval" in refused.stderr


async def test_a_bug_in_the_writer_stops_the_daemon_and_propagates(monkeypatch) -> None:
    from probe.monitoring import remote_queue

    def broken(*_args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(remote_queue, "encode", broken)

    async def runner(targets, on_result):
        return []

    daemon = Daemon([], runner, VANTAGE, Schedule(interval=60, jitter=0))
    config = RemoteWriteConfig(f"http://127.0.0.1:{free_port()}/api/v1/write", **FAST)
    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(serve(daemon, "127.0.0.1", 0, first_delay=0, remote=config), 10)
