"""Scenario data and censor rules, without namespaces: what each rule turns into."""

from __future__ import annotations

import pytest

from probe.lab import censor, scenarios, topology

VERDICTS = {"accessible", "blocked", "throttled", "degraded", "down", "inconclusive"}


def test_every_scenario_file_loads_and_names_lab_targets() -> None:
    loaded = scenarios.all_scenarios()
    assert len(loaded) >= 15
    for scenario in loaded:
        assert scenario.targets, scenario.name
        domains = [target.domain for target in scenario.targets]
        assert len(set(domains)) == len(domains), f"{scenario.name}: the probe keeps one per domain"
        for target in scenario.targets:
            assert target.domain in topology.ORIGINS, (scenario.name, target.url)
            assert set(target.verdicts) <= VERDICTS, (scenario.name, target.verdicts)
            assert target.blocking in (None, "dns", "tcp", "tls", "http")


def test_every_scenario_has_an_untouched_control() -> None:
    for scenario in scenarios.all_scenarios():
        assert any("accessible" in t.verdicts for t in scenario.targets), scenario.name


def test_exact_sni_rule_carries_the_length_prefix() -> None:
    args = censor.sni_match("twitter.com")
    assert args[-2:] == ["--hex-string", "|00000b|twitter.com"]
    assert censor.sni_match("*.twimg.com")[-1] == ".twimg.com"
    assert censor.sni_match("*t.co*")[-1] == "t.co"


@pytest.mark.parametrize("name", ["t.co", "reddit.com", "microsoft.com", "rt.com",
                                  "votesmart.appspot.com"])
def test_bare_t_co_substring_catches_innocent_names(name: str) -> None:
    assert censor.sni_matches("*t.co*", name)


def test_substring_scenario_expectations_follow_the_rule() -> None:
    scenario = scenarios.load("throttle_tco_substring")
    for target in scenario.targets:
        throttled = censor.sni_matches("*t.co*", target.domain)
        assert (target.verdicts == ("throttled",)) == throttled, target.domain


def test_throttle_polices_each_flow_and_direction() -> None:
    plan = censor.plan([{"action": "throttle", "sni": ["*.twimg.com"], "rate_bps": 140_000}])
    police = next(c for c in plan.commands if "hashlimit" in c)
    assert police[police.index("--hashlimit-above") + 1] == "17500b/s"
    assert police[police.index("--hashlimit-mode") + 1] == "srcip,srcport,dstip,dstport"
    assert police[-1] == "DROP"
    assert "tc" not in {c[0] for c in plan.commands}  # policing, not shaping


def test_dns_injection_points_the_client_at_the_resolver_abroad() -> None:
    plan = censor.plan([{"action": "dns_inject", "names": ["twitter.com"]}])
    assert plan.client_resolver == topology.PUBLIC_RESOLVER
    assert plan.injector is not None
    assert plan.injector["forge"] == {"twitter.com": topology.BLOCKPAGE_IP}


def test_unknown_action_is_rejected_with_its_position() -> None:
    with pytest.raises(ValueError, match="rule 2: unknown action 'teleport'"):
        censor.plan([{"action": "loss", "probability": 0.1}, {"action": "teleport"}])


def test_scenario_without_expectations_is_rejected() -> None:
    with pytest.raises(ValueError, match="has no 'expect'"):
        scenarios.parse({"name": "x", "description": "x", "targets": [{"domain": "t.co"}]})


def test_expectation_checks_blocking_only_when_blocked() -> None:
    target = scenarios.Expectation(url="https://t.co/", verdicts=("blocked",), blocking="tls")
    assert target.met_by("blocked", "tls")
    assert not target.met_by("blocked", "dns")
    assert not target.met_by("accessible", None)


def test_targets_file_loads_with_the_probes_own_loader(tmp_path) -> None:
    from probe.targets import load_targets

    for scenario in scenarios.all_scenarios():
        path = tmp_path / f"{scenario.name}.yaml"
        path.write_text(scenarios.targets_yaml(scenario))
        loaded = load_targets([path])
        assert [t.url for t in loaded] == [e.url for e in scenario.targets], scenario.name
        for target in loaded:
            assert target.control_domain and not censor.sni_matches("*t.co*",
                                                                    target.control_domain)
