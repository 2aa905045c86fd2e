"""Citizen Lab's test lists, the real files (a pinned copy in tests/data/test-lists, see its
README): they load, IP-literal URLs are measured without a DNS step, a bad row is a warning
(an error with --strict), `probe targets check` reports per file, and every list file of the
repository either loads or is refused with one line."""

from __future__ import annotations

import csv
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from test_runner import closed_port
from test_server import lab_running

from probe.cli import options
from probe.cli.main import main
from probe.measure import dns as dnsmeasure
from probe.model import Settings, Vantage
from probe.results.ooni import new_report_id, to_ooni
from probe.runner import RunPlan, measure_target
from probe.targets import CSV_HEADER, RowError, TargetFileError, iter_targets, load_targets

LISTS = Path(__file__).parent / "data" / "test-lists" / "lists"
LEGEND = LISTS / "00-LEGEND-category_codes.csv"
# refused with one line: not lists of URLs (legends) or another shape (Italy's official lists)
REFUSED = {"00-LEGEND-category_codes.csv", "00-LEGEND-country_codes.csv",
           "00-LEGEND-new_category_codes.csv", "official/it/aams.csv", "official/it/bofh.csv"}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def urls(path: Path) -> list[str]:
    """The url column as the file has it (read with the csv module, not with the probe)."""
    with open(path, newline="", encoding="utf-8") as file:
        return [row[0].strip() for row in list(csv.reader(file))[1:] if row]


def test_global_loads_every_distinct_url_including_ip_literals():
    targets = load_targets([LISTS / "global.csv"], strict=True)
    assert [t.url for t in targets] == list(dict.fromkeys(urls(LISTS / "global.csv")))
    by_source = {t.source: t for t in targets}
    doh = by_source["global.csv:885"]  # the row that used to abort the whole list
    assert (doh.domain, doh.category) == ("1.1.1.1", "HOST")
    assert doh.url.startswith("https://1.1.1.1/dns-query?dns=")
    # distinct URLs of one domain are distinct targets (global lists 16 such domains)
    per_domain: dict[str, int] = {}
    for t in targets:
        per_domain[t.domain] = per_domain.get(t.domain, 0) + 1
    assert sum(1 for n in per_domain.values() if n > 1) == 16


def test_ru_loads():
    targets = load_targets([LISTS / "ru.csv"], strict=True)
    assert len(targets) == len(set(urls(LISTS / "ru.csv"))) > 1000
    assert all(t.source.startswith("ru.csv:") and t.category for t in targets)


def test_a_trailing_dot_is_dropped_and_then_a_duplicate():
    tallies = []
    targets = list(iter_targets([LISTS / "pk.csv"], on_file=tallies.append))
    kproxy = [t for t in targets if t.domain == "www.kproxy.com"]
    # line 43 is http://www.kproxy.com/, line 44 http://www.kproxy.com./: the same URL
    assert [(t.url, t.source) for t in kproxy] == [("http://www.kproxy.com/", "pk.csv:43")]
    assert (tallies[0].duplicates, tallies[0].skipped) == (1, 0)
    assert not any(t.url.split("/")[2].endswith(".") for t in targets)


def test_a_legend_file_is_a_one_line_error_and_exit_2():
    with pytest.raises(TargetFileError) as err:
        load_targets([LISTS / "global.csv", LEGEND])
    assert str(err.value) == (f"{LEGEND}:1: wrong header, want: " + ",".join(CSV_HEADER))
    result = invoke("run", "--no-third-party", "--targets", str(LEGEND))  # refused: no network
    assert result.exit_code == 2
    assert result.stderr == f"error: {err.value}\n"


def write_bad_rows(path: Path, bad: int, good: int = 1) -> Path:
    rows = [f"https://ok{i}.example/,GRP,,,," for i in range(good)]
    rows += [f"ftp://bad{i}.example/,GRP,,,," for i in range(bad)]
    path.write_text(",".join(CSV_HEADER) + "\n" + "\n".join(rows) + "\n")
    return path


def test_a_run_warns_about_skipped_rows_and_strict_refuses_them(tmp_path, capsys):
    path = write_bad_rows(tmp_path / "l.csv", bad=options.WARNINGS_SHOWN + 5)
    with click.Context(click.Command("run")) as ctx:
        targets = options.load_targets_or_exit((path,))
        assert (len(targets), targets.skipped) == (1, 25)
        err = capsys.readouterr().err.splitlines()
        assert err[0] == f"warning: {path}:3: URL 'ftp://bad0.example/' must start with " \
                         "http:// or https:// (skipped)"
        assert len(err) == options.WARNINGS_SHOWN + 1
        assert err[-1] == ("probe: 1 targets to measure; 25 rows skipped (cannot be measured, 5 not shown;"
                           " --strict refuses them)")
        ctx.meta[options._STRICT] = True
        with pytest.raises(SystemExit) as exit_:
            options.load_targets_or_exit((path,))
        assert exit_.value.code == 2
        assert capsys.readouterr().err == f"error: {path}:3: URL 'ftp://bad0.example/' must " \
                                          "start with http:// or https://\n"


def test_run_strict_option_refuses_before_measuring(tmp_path):
    path = write_bad_rows(tmp_path / "l.csv", bad=1)
    result = invoke("run", "--no-third-party", "--strict", "--targets", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}:3: URL 'ftp://bad0.example/'")


def test_targets_check_reports_per_file_bounded(tmp_path):
    bad = write_bad_rows(tmp_path / "bad.csv", bad=14, good=2)
    result = invoke("targets", "check", str(LISTS / "pk.csv"), str(bad), str(LEGEND))
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert lines[0] == f"{LISTS / 'pk.csv'}: 669 targets (1 duplicate dropped), 0 rows skipped"
    assert lines[1] == f"{bad}: 2 targets, 14 rows skipped"
    assert lines[2] == f"  {bad}:4: URL 'ftp://bad0.example/' must start with http:// or https://"
    assert lines[12:] == ["  ... and 4 more", "3 files: 671 targets, 14 rows skipped, 1 file refused"]
    assert result.stderr.splitlines() == [f"error: {LEGEND}:1: wrong header, want: "
                                          + ",".join(CSV_HEADER)]
    assert invoke("targets", "check", str(LISTS / "pk.csv")).exit_code == 0
    strict = invoke("targets", "check", "--strict", str(bad))
    assert (strict.exit_code, strict.stderr) == (2, f"error: {bad}:4: URL 'ftp://bad0.example/' "
                                                    "must start with http:// or https://\n")


@pytest.mark.slow
def test_every_list_of_the_repository_loads_or_is_refused_with_one_line():
    files = sorted(LISTS.rglob("*.csv"))
    assert len(files) == 152
    loaded, refused, skipped = 0, set(), []
    for path in files:
        try:
            loaded += sum(1 for _ in iter_targets([path], on_skip=skipped.append))
        except TargetFileError as exc:
            assert not isinstance(exc, RowError)
            assert "\n" not in str(exc) and str(exc).startswith(f"{path}:1: wrong header")
            refused.add(str(path.relative_to(LISTS)))
    assert refused == REFUSED
    assert skipped == []  # every row of every list can be measured
    assert loaded > 39000
    result = invoke("targets", "check", *map(str, files))
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == len(REFUSED)
    assert result.stdout.splitlines()[-1] == (f"152 files: {loaded} targets, 0 rows skipped, "
                                              f"{len(REFUSED)} files refused")


# --- an IP-literal URL is measured with no DNS step ------------------------------------------


@pytest.fixture
def unasked_resolver(tmp_path, monkeypatch):
    """A system resolver that would show in the evidence if asked (nothing answers there)."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.83.54\n")
    monkeypatch.setattr(dnsmeasure, "RESOLV_CONF", str(conf))


def write_list(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "ip.csv"
    path.write_text(",".join(CSV_HEADER) + f"\n{url},HOST,,,,\n")
    return path


async def measure_ip_url(tmp_path: Path, port: int | None = None):
    """The measurement of https://127.0.0.1:PORT/ (default: the lab's origin), read from a list,
    and the control resolver's query count during it."""
    async with lab_running() as lab:
        url = f"https://127.0.0.1:{port or lab.origin_port}/"
        plan = RunPlan(settings=Settings(timeout=1.5, ca_file=lab.ca_file, dns_linger=0.1),
                       control_resolvers=(lab.dns.udp_url,), helper_url=lab.helper_url,
                       throughput=False, control_sni="control.test")
        before = lab.dns.udp_queries
        (target,) = load_targets([write_list(tmp_path, url)], strict=True)
        m = await measure_target(target, plan)
        return m, lab.dns.udp_queries - before


async def test_an_ip_literal_url_is_measured_without_dns(tmp_path, unasked_resolver):
    m, queries = await measure_ip_url(tmp_path)
    assert m.target.domain == "127.0.0.1"
    assert (m.probe.dns, m.probe.dns_aaaa, queries) == ((), (), 0)
    assert [t.address for t in m.probe.tcp] == ["127.0.0.1"] and m.probe.tcp[0].failure is None
    assert [t.sni for t in m.probe.tls] == ["127.0.0.1"]  # it worked: no control SNI
    target_tls = next(t for t in m.probe.tls if t.sni == "127.0.0.1")
    assert target_tls.failure is None and target_tls.cert_valid_for_name  # the IP SAN
    assert [(h.address, h.status) for h in m.probe.http] == [("127.0.0.1", 200)]
    assert m.control.http and m.control.http[0].status == 200  # the helper fetched it too
    assert m.verdict.verdict == "accessible", m.verdict
    record = to_ooni(m, new_report_id(Vantage()), Vantage())  # stored as any other target
    assert (record["input"], record["test_keys"]["queries"]) == (m.target.url, [])


async def test_no_dns_evidence_never_becomes_a_dns_verdict(tmp_path, unasked_resolver):
    m, queries = await measure_ip_url(tmp_path, port=closed_port())
    assert (m.probe.dns, queries) == ((), 0)
    assert m.probe.tcp[0].failure == "connection_refused"
    assert m.verdict.verdict == "down", m.verdict  # the helper cannot connect either
    assert m.verdict.blocking != "dns" and not m.verdict.rule.startswith("dns.")
