"""Vantage health: no network means exit 4 and nothing stored; the defaults and the third-party
switch choose controls as documented (the public defaults are only read here, never used)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probe import controls

NS = "pvoff"
ROOT = Path(__file__).resolve().parents[1]


def test_defaults_fill_only_what_the_user_did_not_give() -> None:
    chosen = controls.choose((), None, (), third_party=True)
    assert chosen.resolvers == tuple(controls.PUBLIC_RESOLVERS)
    assert len({controls.PUBLIC_RESOLVERS[r] for r in chosen.resolvers}) == 3  # three operators
    assert chosen.th_urls == tuple(controls.PUBLIC_TEST_HELPERS) and chosen.helper_url is None
    mine = controls.choose(("udp://192.0.2.1:53",), "https://helper.example/", (), True)
    assert mine == controls.Controls(("udp://192.0.2.1:53",), "https://helper.example/", ())
    assert controls.choose((), None, ("https://th.example/",), True).th_urls == (
        "https://th.example/",)
    assert not controls.choose((), None, (), third_party=False).any


def test_third_parties_say_what_each_learns() -> None:
    lines = controls.third_parties(controls.choose((), None, (), third_party=True))
    assert len(lines) == 3 + 4
    assert lines[0] == ("resolver https://1.1.1.1/dns-query (Cloudflare): learns each target's "
                        "name and this network's public address")
    assert "test helper https://0.th.ooni.org/ (OONI)" in lines[3]


def test_the_suite_never_uses_public_defaults() -> None:
    assert os.environ.get("PROBE_NO_THIRD_PARTY") == "1"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def no_route_namespace():
    """A namespace with nothing but loopback: a machine with no network at all. Its resolver
    and control live on addresses it has no route to, so nothing ever leaves it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    subprocess.run(["ip", "netns", "delete", NS], capture_output=True)
    _ip("netns", "add", NS)
    conf = Path("/etc/netns") / NS
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "resolv.conf").write_text("nameserver 10.77.99.1\n")
    try:
        _ip("-n", NS, "link", "set", "lo", "up")
        yield NS
    finally:
        subprocess.run(["ip", "netns", "delete", NS], capture_output=True)
        (conf / "resolv.conf").unlink(missing_ok=True)
        conf.rmdir()


@pytest.mark.lab
@pytest.mark.parametrize("control", [[], ["--control-resolver", "https://10.77.99.2/dns-query"]])
def test_no_network_exits_4_with_one_line_and_stores_nothing(no_route_namespace, tmp_path,
                                                             control) -> None:
    targets = tmp_path / "t.yaml"
    targets.write_text("targets:\n  - {domain: navalny.com}\n  - {domain: twitter.com}\n")
    out = tmp_path / "out"
    done = subprocess.run(
        ["ip", "netns", "exec", no_route_namespace, sys.executable, "-m", "probe", "run",
         "--targets", str(targets), "--out", str(out), "--timeout", "2", *control],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 4, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "offline" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not list(out.glob("*.jsonl"))
