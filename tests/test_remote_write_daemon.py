"""Remote write in the daemon and `probe run`, into Debian's Prometheus with its receiver (plain,
and behind its own TLS and basic auth), a refused push (exit 6), the config file's
[remote_write] keys, and a writer bug that must stop the daemon."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import ssl
import subprocess
import urllib.request
import warnings
from pathlib import Path

import pytest
import trustme
import yaml
from dnsserver import Rule
from promstack import PROMETHEUS, free_port, needs, prometheus, sample_run
from test_cli import _targets_file, invoke
from test_remote_write import FAST, VANTAGE, Receiver, collectors, receiver  # noqa: F401
from test_runner import isp, lab  # noqa: F401 (fixtures)

from probe.monitoring.daemon import Daemon, Schedule, serve
from probe.monitoring.remote_write import RemoteWriteConfig, push_once

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
