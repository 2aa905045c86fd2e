"""OONI's blocking fingerprints (probe.measure.ooni_fingerprints): the shipped data and its
provenance, the refresh script, the linear regex rewrite, HTTP and DNS matching, and the cost.

Samples: OONI's repository gives no example pages (its `exp_url` column links to OONI Explorer,
which tests may not reach), so every sample here is built to match a fingerprint's pattern as
written, inside an ordinary page; the Russian ones are shaped like the pages they name."""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dnsserver import DnsServer, Rule
from hypothesis import given
from hypothesis import strategies as st

from probe.measure import blockpages
from probe.measure import dns as dnsmeasure
from probe.measure import ooni_fingerprints as of
from probe.model import DnsQuery, Settings

ROOT = Path(__file__).resolve().parent.parent
DATA = importlib.resources.files("probe").joinpath("data")
SIZE = 1 << 16


def _rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(DATA.joinpath(name).read_bytes().decode())))


# --- the data and where it came from ------------------------------------------------------------


def test_sidecar_names_the_source_commit_and_the_files_it_describes() -> None:
    meta = json.loads(DATA.joinpath("ooni_fingerprints.json").read_text("utf-8"))
    assert meta["repository"].endswith("ooni/blocking-fingerprints")
    assert re.fullmatch(r"[0-9a-f]{40}", meta["commit"])
    assert "licence" in meta and (meta["licence"] or meta["licence_note"])
    for name, info in meta["files"].items():
        data = DATA.joinpath(name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"], name
        assert len(_rows(name)) == info["rows"]


def test_all_of_oonis_rows_load_with_their_fields() -> None:
    http, dns = of.http_index().fingerprints, of.dns_index().fingerprints
    assert len(http) == len(_rows("ooni_fingerprints_http.csv")) > 1700
    assert len(dns) == len(_rows("ooni_fingerprints_dns.csv")) > 220
    ru = [fp for fp in http if "RU" in fp.countries]
    assert len(ru) > 150  # the issue counted 195 for Russia
    by_name = {fp.name: fp for fp in http}
    assert by_name["ooni.ru_6"] == of.Fingerprint(
        name="ooni.ru_6", scope="nat", location="header.location", pattern_type="prefix",
        pattern="http://warning.rt.ru", confidence=5, countries=("RU",))
    # a quoted pattern with a carriage return survives the reading (read_text would not keep it)
    assert by_name["cp.d_corp_multacom_satellite"].pattern.startswith(
        "<title>Page Restricted</title>\r")


@pytest.mark.parametrize(("row", "why"), [
    ("x,isp,,body,regexp,a+b,5,,,,", "not linear"),
    ("x,isp,,body,regexp,(a|b)c,5,,,,", "not linear"),
    ("x,isp,,body,regexp,\\d{3}.*x,5,,,,", "not linear"),
    ("x,isp,,body,regexp,.*,5,,,,", "matches everything"),
    ("x,isp,,cookie,contains,a,5,,,,", "unknown location"),
    ("x,isp,,body,glob,a,5,,,,", "bad pattern"),
    ("x,isp,,body,contains,,5,,,,", "bad pattern"),
])
def test_malformed_or_nonlinear_rows_are_refused_naming_the_line(row: str, why: str) -> None:
    header = "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp," \
             "expected_countries,source,exp_url,notes"
    with pytest.raises(ValueError, match=rf"line 2: .*{why}"):
        of.parse_csv(f"{header}\n{row}\n")


# --- the refresh script -------------------------------------------------------------------------


def _checkout(tmp_path: Path, extra_http: str = "") -> Path:
    repo = tmp_path / "blocking-fingerprints"
    repo.mkdir()
    http = DATA.joinpath("ooni_fingerprints_http.csv").read_bytes() + extra_http.encode()
    (repo / "fingerprints_http.csv").write_bytes(http)
    (repo / "fingerprints_dns.csv").write_bytes(DATA.joinpath("ooni_fingerprints_dns.csv")
                                                .read_bytes())
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "fixture"], check=True)
    return repo


def _refresh(repo: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "refresh_fingerprints.py"),
                           str(repo), "--out", str(out)], capture_output=True, text=True,
                          timeout=60)


def test_refresh_copies_a_checkout_byte_for_byte_with_its_commit(tmp_path: Path) -> None:
    repo, out = _checkout(tmp_path), tmp_path / "out"
    out.mkdir()
    done = _refresh(repo, out)
    assert done.returncode == 0, done.stderr
    for name in ("ooni_fingerprints_http.csv", "ooni_fingerprints_dns.csv"):
        assert (out / name).read_bytes() == DATA.joinpath(name).read_bytes()
    meta = json.loads((out / "ooni_fingerprints.json").read_text())
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert meta["commit"] == head and meta["licence"] is None and meta["licence_note"]
    print(done.stdout)


def test_refresh_leaves_out_a_quadratic_regex_and_says_so(tmp_path: Path) -> None:
    repo, out = _checkout(tmp_path, 'zz.bad,isp,,body,regexp,"(a+)+b",5,,,,\r\n'), tmp_path / "o"
    (repo / "LICENSE").write_text("CC BY-SA 4.0\n")
    out.mkdir()
    done = _refresh(repo, out)
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "ooni_fingerprints.json").read_text())
    refused = meta["files"]["ooni_fingerprints_http.csv"]["refused"]
    assert [r["name"] for r in refused] == ["zz.bad"] and "not linear" in refused[0]["reason"]
    assert meta["licence"] == "LICENSE: CC BY-SA 4.0"
    assert "zz.bad" not in (out / "ooni_fingerprints_http.csv").read_text()
    assert "1 refused" in done.stdout


def test_refresh_of_a_broken_checkout_exits_1(tmp_path: Path) -> None:
    done = _refresh(tmp_path / "missing", tmp_path)
    assert done.returncode == 1 and "refresh_fingerprints:" in done.stderr


# --- the linear rewrite of OONI's regexes -------------------------------------------------------

SHIPPED_REGEXES = [fp.pattern for fp in of.http_index().fingerprints
                   if fp.pattern_type == "regexp"]
PIECES = st.sampled_from(["ab", "a.c", "x", "\\.", "{\"m\":", "é"])


@given(parts=st.lists(PIECES, min_size=1, max_size=4),
       text=st.text(alphabet="abcx.{}\"m:é\n ", max_size=60))
def test_pieces_search_agrees_with_re(parts: list[str], text: str) -> None:
    pattern = ".*".join(parts)
    assert of.search_pieces(of.linear_pieces(pattern), text) == bool(re.search(pattern, text))


@pytest.mark.parametrize("pattern", SHIPPED_REGEXES)
def test_every_shipped_regex_is_rewritten_and_agrees_with_re_on_a_sample(pattern: str) -> None:
    pieces = of.linear_pieces(pattern)
    sample = "<p>" + " middle ".join(_literal(p.pattern) for p in pieces) + "</p>"
    assert re.search(pattern, sample) and of.search_pieces(pieces, sample)
    broken = sample.replace(" middle ", "\n")  # `.` never crosses a line
    assert bool(re.search(pattern, broken)) == of.search_pieces(pieces, broken)


def _literal(piece_regex: str) -> str:
    """A text the piece matches: its escapes undone, the wildcard as a letter."""
    return re.sub(r"\\(.)", r"\1", piece_regex.replace("[^\n]", "X"))


# --- HTTP ---------------------------------------------------------------------------------------

RU_SAMPLES = [  # (fingerprint, status, headers, body): built around each pattern as written
    ("ooni.ru_0", 200, [], "<html><body><h2>Доступ к сайту ограничен в соответствии с "
     "Федеральными законами</h2><p>Ресурс включён в реестр.</p></body></html>"),
    ("ooni.ru_3", 200, [], '<html><iframe src="http://subblock.mts.ru/api/v1/block?u=1" '
     'width="100%"></iframe></html>'),
    ("ooni.ru_4", 200, [], "<html><h1>Доступ к запрашиваемому ресурсу закрыт.</h1></html>"),
    ("ooni.ru_6", 302, [("Location", "http://warning.rt.ru/?id=17&st=0")], ""),
    ("ooni.ru_25", 307, [("location", "http://block.rt.ru/")], ""),
    ("ooni.ru_28", 200, [], '<script src="//t2rkn.com/block.js"></script>'),
]


@pytest.mark.parametrize(("name", "status", "headers", "body"), RU_SAMPLES,
                         ids=[s[0] for s in RU_SAMPLES])
def test_russian_blockpages_match_oonis_fingerprint(name, status, headers, body) -> None:
    assert name in [fp.name for fp in of.http_index().matches(headers, body, status)]
    found = blockpages.match(status, headers, body, None)
    assert found is not None  # ours may claim it first (ru_rkn_registry); OONI's otherwise
    if found not in {fp.id for fp in blockpages.fingerprints()}:
        assert found == name


def _sample(fp: of.Fingerprint) -> tuple[int, list[tuple[str, str]], str]:
    """A response that holds `fp`'s pattern where OONI looks for it."""
    if fp.location.startswith("header."):
        header = fp.location.removeprefix("header.")
        value = fp.pattern if fp.pattern_type in ("full", "prefix") else f"x{fp.pattern}x"
        return 302, [(header.title(), value)], ""
    if fp.pattern_type == "full":
        return 200, [], fp.pattern
    if fp.pattern_type == "regexp":
        return 200, [], "<p>" + " ".join(_literal(p.pattern) for p in of.linear_pieces(
            fp.pattern)) + "</p>"
    return 200, [], f"<html><body>\n{fp.pattern}\n</body></html>"


def test_every_imported_http_fingerprint_matches_a_sample_of_its_pattern() -> None:
    index, missed = of.http_index(), []
    for fp in index.fingerprints:
        status, headers, body = _sample(fp)
        if fp not in index.matches(headers, body, status):
            missed.append(fp.name)
    assert missed == []


def test_a_known_false_positive_vetoes_and_vague_words_never_count() -> None:
    index = of.http_index()
    by_scope = {}
    for fp in index.fingerprints:
        if fp.location == "body" and fp.pattern_type == "contains":
            by_scope.setdefault(fp.scope, fp)
    blocking, fp_page, vague = by_scope["nat"], by_scope["fp"], by_scope["vbw"]
    assert index.blockpage([], f"<p>{blocking.pattern}</p>") == blocking.name
    assert index.blockpage([], f"<p>{blocking.pattern}</p><p>{fp_page.pattern}</p>") is None
    assert index.blockpage([], f"<p>{vague.pattern}</p>") is None


def test_a_location_counts_only_on_a_redirect() -> None:
    headers = [("Location", "http://warning.rt.ru/")]
    assert of.http_index().blockpage(headers, "", 302) == "ooni.ru_6"
    assert of.http_index().blockpage(headers, "", 200) is None


ORDINARY = [
    (200, [("Server", "nginx")], "<html><title>Example</title><p>Hello</p></html>"),
    (301, [("Location", "https://www.example.com/")], ""),
    (200, [], "<p>Свежие новости и доступ к архиву</p>"),
]


@pytest.mark.parametrize(("status", "headers", "body"), ORDINARY)
def test_ordinary_pages_match_no_oonis_blockpage(status, headers, body) -> None:
    assert of.http_index().blockpage(headers, body, status) is None


def test_cost_per_response_is_printed_and_small() -> None:
    """One 64 KiB response through every imported fingerprint: what a fetch pays."""
    rng = random.Random(13)
    bodies = {
        "random html": "".join(rng.choice("abcdefgh <>/=\"\n") for _ in range(SIZE)),
        "a Russian blockpage": (RU_SAMPLES[0][3] * (SIZE // len(RU_SAMPLES[0][3])))[:SIZE],
        "one letter": "a" * SIZE,
    }
    headers = [("Location", "http://warning.rt.ru/"), ("Server", "nginx")]
    index = of.http_index()
    for name, body in bodies.items():
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            index.matches(headers, body, 302)
            runs.append(time.perf_counter() - start)
        best = min(runs)
        print(f"{name}: {best * 1e3:.2f} ms per 64 KiB response "
              f"({len(index.fingerprints)} fingerprints)")
        assert best < 0.05


# --- DNS ----------------------------------------------------------------------------------------


def test_dns_answers_are_matched_in_one_spelling() -> None:
    index = of.dns_index()
    assert index.match(["192.0.2.1", "134.17.0.7"]).name == "ooni.by_4"
    assert index.match(["D0:0::11"]).pattern == "d0::11"  # IPv6 written another way
    assert index.match(["Blockpage.XL.co.id."]).name == "ooni.id_51"  # a CNAME target
    assert index.match(["127.0.0.1", "1.2.3.4", "0.0.0.0"]) is None  # vague: the bogon rule's
    assert index.match(["192.0.2.1"]) is None


ZONE = {
    "forged.test": Rule.answer("10.10.34.35"),  # Iran's national sinkhole, ooni.ir_5
    "ok.test": Rule.answer("192.0.2.1"),
    "inject.test": Rule.inject(forged="10.10.34.36", real="192.0.2.7", delay=0.03),
}


@pytest.fixture
async def server():
    async with DnsServer(ZONE) as running:
        yield running


@pytest.mark.parametrize(("domain", "fingerprint"), [
    ("forged.test", "ooni.ir_5"), ("ok.test", None), ("inject.test", "ooni.ir_10dot10_ipv4_1")])
async def test_dns_measurement_records_the_fingerprint(server, domain, fingerprint) -> None:
    """Only the DNS server on loopback is contacted; the answers are never connected to."""
    settings = Settings(timeout=1.0, dns_linger=0.1, ca_file=server.ca_file)
    result = await dnsmeasure.measure(DnsQuery(domain, server.udp_url), settings)
    assert result.failure is None and result.fingerprint == fingerprint

