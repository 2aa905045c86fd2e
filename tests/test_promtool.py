"""The alert rules, their unit tests and the example configs, through promtool and amtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from promstack import PROMTOOL, ROOT

RULES_DIR = ROOT / "grafana" / "prometheus"
AMTOOL = shutil.which("amtool")

pytestmark = pytest.mark.skipif(not PROMTOOL, reason="needs promtool (Debian package prometheus)")


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_check() -> None:
    run = promtool("check", "rules", "rules.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 11 rules found" in run.stdout


def test_rule_unit_tests_pass() -> None:
    run = promtool("test", "rules", "rules_test.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    text = (RULES_DIR / "rules_test.yml").read_text()
    alerts = set(re.findall(r"- alert: (\w+)", (RULES_DIR / "rules.yml").read_text()))
    assert len(alerts) == 6
    for alert in alerts:
        cases = re.findall(rf"alertname: {alert}\n\s+exp_alerts:(.*)", text)
        assert "[]" in [c.strip() for c in cases], f"{alert}: no must-not-fire case"
        assert "" in [c.strip() for c in cases], f"{alert}: no must-fire case"


@pytest.mark.parametrize("weaken", [
    # one vantage point would be enough to confirm
    ("asn_target:censorprobe_throttled_vantages:count >= 2",
     "asn_target:censorprobe_throttled_vantages:count >= 1"),
    ("asn_target:censorprobe_blocked_vantages:count >= 2",
     "asn_target:censorprobe_blocked_vantages:count >= 1"),
    # two of twenty would be enough
    ("/ on (asn, target) asn_target:censorprobe_vantages:count >= 0.5",
     "/ on (asn, target) asn_target:censorprobe_vantages:count >= 0"),
    # the single-vantage warning would also fire beside a confirmed alert
    ("unless on (asn, target) asn_target:censorprobe_throttled_vantages:agreed",
     "unless on (asn, target) vector(0)"),
    ("for: 45m", "for: 1m"),  # throttling would flap
    ("+ 300\n", "+ 300000\n"),  # a daemon that stopped completing runs never noticed
    ("for: 10m", "for: 1m"),  # silent after a receiver's hiccup
    ("unless on (vantage, asn, cc) censorprobe_vantage_up",
     "unless on (vantage, asn, cc) censorprobe_vantage_up offset 1h"),  # samples stop: unnoticed
])
def test_the_unit_tests_catch_a_weakened_rule(tmp_path: Path, weaken: tuple[str, str]) -> None:
    rules = (RULES_DIR / "rules.yml").read_text()
    old, new = weaken
    assert old in rules
    (tmp_path / "rules.yml").write_text(rules.replace(old, new))
    shutil.copy(RULES_DIR / "rules_test.yml", tmp_path)
    run = promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert run.returncode != 0, run.stdout


def test_example_prometheus_config() -> None:
    run = promtool("check", "config", "prometheus.yml")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.skipif(not AMTOOL, reason="needs amtool (Debian package prometheus-alertmanager)")
def test_example_alertmanager_config() -> None:
    run = subprocess.run([AMTOOL, "check-config", "alertmanager.yml"], cwd=RULES_DIR,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 inhibit rules" in run.stdout
