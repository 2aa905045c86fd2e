"""The `probe` command: input errors stop before measuring; --json is one object per target."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from dnsserver import Rule
from test_runner import isp, lab  # noqa: F401 (fixtures)
from test_server import closed_port

from probe.cli import main

REQUIRED = {"input", "verdict", "blocking", "failure", "test_keys"}
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the ISP resolver needs port 53 (root)")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_invalid_target_file_names_file_and_line_exits_2_and_writes_nothing(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - domain: twitter.com\n  - domain: 'not a domain'\n")
    out = tmp_path / "out"
    result = invoke("run", "--targets", str(bad), "--out", str(out), "--json")
    assert result.exit_code == 2
    assert f"{bad}:3:" in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize(
    ("option", "value"),
    [("--control-resolver", "8.8.8.8"), ("--helper", "ftp://x"), ("--probe-asn", "1234"),
     ("--timeout", "0")],
)
def test_bad_options_exit_2_before_measuring(tmp_path, option: str, value: str) -> None:
    result = invoke("run", option, value, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists()


def test_python_dash_m_probe_lists_every_command() -> None:
    done = subprocess.run([sys.executable, "-m", "probe", "--help"], capture_output=True,
                          text=True, timeout=60, check=True)
    for command in ("run", "check", "results", "serve", "lab", "daemon", "upload"):
        assert f"  {command}" in done.stdout


def _targets_file(tmp_path: Path, lab) -> Path:  # noqa: F811
    path = tmp_path / "t.yaml"
    good, down = lab.target()["url"], lab.target(port=1)["url"]
    path.write_text(
        "targets:\n"
        f"  - {{domain: example.test, url: '{good}', control: control.test}}\n"
        f"  - {{domain: www.example.test, url: '{down}', control: control.test}}\n"
    )
    return path


@root_only
async def test_run_json_prints_one_object_per_target_and_stores_them(tmp_path, lab, isp) -> None:  # noqa: F811
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    isp.zone["www.example.test"] = Rule.answer("127.0.0.1")
    out = tmp_path / "out"
    args = ["run", "--targets", str(_targets_file(tmp_path, lab)), "--json", "--out", str(out),
            "--ca-file", lab.ca_file, "--control-resolver", lab.dns.udp_url,
            "--helper", lab.helper_url, "--timeout", "1.5", "--no-throughput"]
    result = await asyncio.to_thread(invoke, *args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    objects = [json.loads(line) for line in lines]
    assert len(objects) == 2 and all(set(o) >= REQUIRED for o in objects)
    verdicts = {o["input"]: o["verdict"] for o in objects}
    assert sorted(verdicts.values()) == ["accessible", "down"], verdicts
    stored = [json.loads(line) for f in out.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(stored) == 2 and {s["report_id"] for s in stored} == {objects[0]["report_id"]}

    shown = invoke("results", "--out", str(out))
    assert shown.exit_code == 0 and "accessible" in shown.stdout and "down" in shown.stdout


@root_only
async def test_check_prints_the_trace_and_the_verdict(tmp_path, lab, isp) -> None:  # noqa: F811
    isp.zone["example.test"] = Rule("nxdomain")
    args = ["check", "example.test", "--url", lab.target()["url"], "--control", "control.test",
            "--ca-file", lab.ca_file, "--control-resolver", lab.dns.udp_url,
            "--helper", lab.helper_url, "--timeout", "1.5", "--no-throughput",
            "--out", str(tmp_path / "out")]
    result = await asyncio.to_thread(invoke, *args)
    assert result.exit_code == 0, result.output
    assert "dns_nxdomain_error" in result.stdout and "blocked" in result.stdout


@root_only
async def test_run_says_whom_it_contacts_and_what_it_did_not_measure(tmp_path, lab, isp) -> None:  # noqa: F811
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    isp.zone["www.example.test"] = Rule.answer("127.0.0.1")
    args = ["run", "--targets", str(_targets_file(tmp_path, lab)), "--json",
            "--out", str(tmp_path / "out"), "--ca-file", lab.ca_file,
            "--control-resolver", lab.dns.udp_url, "--timeout", "1.5"]
    result = await asyncio.to_thread(invoke, *args)
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    assert err[0].startswith("probe: besides the targets, this run contacts") and lab.dns.udp_url in err[1]
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    reached = [o for o in objects if o["verdict"] == "accessible"]
    assert reached and all(o["throttling"]["state"] == "not_measured" for o in reached)
    assert "no helper with a bulk endpoint" in reached[0]["throttling"]["reason"]
    assert err[-1].startswith(f"probe: throttling was not measured for {len(reached)} targets")
    assert "docs/helper.md" in err[-1]


@root_only
async def test_unreachable_controls_are_said_once_and_the_run_goes_on(tmp_path, lab, isp) -> None:  # noqa: F811
    isp.zone["example.test"] = Rule("nxdomain")
    isp.zone["www.example.test"] = Rule("nxdomain")
    dead = f"tls://127.0.0.1:{closed_port()}"
    args = ["run", "--targets", str(_targets_file(tmp_path, lab)), "--json",
            "--out", str(tmp_path / "out"), "--ca-file", lab.ca_file,
            "--control-resolver", dead, "--timeout", "1.5", "--no-throughput"]
    result = await asyncio.to_thread(invoke, *args)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "no control could be reached" in line]
    assert len(warnings) == 1 and dead in warnings[0]
    assert "2 verdicts could not use a control: example.test, www.example.test" in result.stderr
    assert len(result.stdout.splitlines()) == 2  # measured and stored all the same
