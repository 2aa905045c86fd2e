"""Target lists: the shipped lists load, good files parse, each invalid file names FILE:LINE
(a CSV row that cannot be measured: skipped with a warning, or that error when strict)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from probe.targets import (
    CSV_HEADER,
    RowError,
    TargetFileError,
    default_target_files,
    iter_targets,
    load_targets,
    open_targets,
    parse_domain,
)

INVALID = Path(__file__).parent / "invalid"
# file -> (line named in the error, a word of the message)
EXPECTED = {
    "invalid-address-as-domain.yaml": (3, "address"),
    "invalid-bad-domain.yaml": (3, "invalid domain"),
    "invalid-category.yaml": (1, "invalid category"),
    "invalid-domain-not-string.yaml": (3, "string"),
    "invalid-duplicate.yaml": (4, "duplicate URL https://twitter.com/"),
    "invalid-empty.yaml": (1, "no targets"),
    "invalid-missing-domain.yaml": (4, "missing key 'domain'"),
    "invalid-no-targets-key.yaml": (1, "missing key 'targets'"),
    "invalid-syntax.yaml": (4, "not valid YAML"),
    "invalid-targets-not-list.yaml": (1, "must be a list"),
    "invalid-throughput-http.yaml": (4, "https://"),
    "invalid-control-throughput-http.yaml": (1, "https://"),
    "invalid-unknown-key.yaml": (5, "unknown key 'colour'"),
    "invalid-unknown-top-key.yaml": (1, "unknown key 'color'"),
    "invalid-url-scheme.yaml": (4, "ftp://"),
    "invalid-field-count.csv": (3, "fields"),
    "invalid-header.csv": (1, "wrong header"),
    "invalid-unterminated-quote.csv": (3, "fields"),
    "invalid-url-no-scheme.csv": (3, "navalny.com"),
}
ROW_ERRORS = {"invalid-field-count.csv", "invalid-unterminated-quote.csv",
              "invalid-url-no-scheme.csv"}  # the other rows of these files are good


def test_every_invalid_file_has_an_expectation():
    assert sorted(p.name for p in INVALID.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_file(name):
    line, words = EXPECTED[name]
    path = INVALID / name
    with pytest.raises(TargetFileError) as err:
        load_targets([default_target_files()[0], path], strict=True)  # nothing loads
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    assert words in message
    assert (err.value.path, err.value.line) == (str(path), line)
    assert isinstance(err.value, RowError) == (name in ROW_ERRORS)


@pytest.mark.parametrize("name", sorted(ROW_ERRORS))
def test_a_row_that_cannot_be_measured_is_skipped_with_its_error(name):
    path = INVALID / name
    skipped: list[RowError] = []
    files = open_targets([path], on_skip=skipped.append)
    assert (files.count, files.skipped) == (1, 1)
    assert [(e.line, e.path) for e in skipped] == [(EXPECTED[name][0], str(path))]
    assert EXPECTED[name][1] in str(skipped[0])
    assert [t.domain for t in files] == ["twitter.com"]  # the second pass skips it silently


def test_a_file_of_rows_that_cannot_be_measured_has_no_targets(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(CSV_HEADER) + "\nftp://a.com/,GRP,,,,\nhttps://a b.com/,GRP,,,,\n")
    with pytest.raises(TargetFileError, match=r"bad\.csv:1: no targets \(2 rows skipped\)"):
        open_targets([path])


def test_missing_file(tmp_path):
    with pytest.raises(TargetFileError, match=r"nope\.yaml:1: cannot read"):
        load_targets([tmp_path / "nope.yaml"])


def test_unknown_suffix(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("twitter.com\n")
    with pytest.raises(TargetFileError, match=r"list\.txt:1: unknown kind"):
        load_targets([path])


def test_shipped_lists_load():
    files = default_target_files()
    assert {f.name for f in files} >= {"twitter.yaml", "smart_voting.yaml", "collateral.yaml",
                                       "controls.yaml"}
    targets = load_targets(files)
    domains = {t.domain for t in targets}
    assert {"twitter.com", "t.co", "pbs.twimg.com", "navalny.com", "votesmart.appspot.com",
            "reddit.com", "rt.com", "microsoft.com", "www.example.com"} <= domains
    assert len(domains) == len(targets)
    pbs = next(t for t in targets if t.domain == "pbs.twimg.com")
    assert pbs.throughput_url and pbs.throughput_url.startswith("https://pbs.twimg.com/")
    assert all(t.source.count(":") == 1 and t.url.startswith("https://") for t in targets)


def test_shipped_lists_are_linked_into_the_package():
    link = Path(__file__).parents[1] / "probe" / "data" / "targets"
    assert link.is_symlink() and os.readlink(link) == "../../targets"


def test_yaml_defaults_and_sources(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "category: GRP\ncontrol: www.example.com\ntargets:\n"
        "  - Twitter.com\n"
        "  - domain: api.twitter.com\n    url: https://api.twitter.com/1.1/\n    category: NEWS\n"
        "    control: example.org\n"
    )
    first, second = load_targets([path])
    assert (first.domain, first.url, first.category, first.control_domain, first.source) == (
        "twitter.com", "https://twitter.com/", "GRP", "www.example.com", "mine.yaml:4")
    assert (second.url, second.category, second.control_domain, second.source) == (
        "https://api.twitter.com/1.1/", "NEWS", "example.org", "mine.yaml:5")


def test_bare_list_yaml(tmp_path):
    path = tmp_path / "bare.yml"
    path.write_text("- t.co\n- domain: rt.com\n")
    assert [t.domain for t in load_targets([path])] == ["t.co", "rt.com"]


def test_citizenlab_csv_merges_duplicate_urls_not_domains(tmp_path):
    path = tmp_path / "ru.csv"
    path.write_text(
        "url,category_code,category_description,date_added,source,notes\n"
        "https://navalny.com/,POLR,Political Criticism,2017-04-12,citizenlab,\n"
        "http://navalny.com/,POLR,Political Criticism,2017-04-12,citizenlab,\n"
        "https://navalny.com/,NEWS,News Media,2018-04-12,citizenlab,\n"
        '"https://fbk.info/",POLR,Political Criticism,2017-04-12,citizenlab,"a,\nnote"\n'
        "https://fbk.info./,POLR,Political Criticism,2017-04-12,citizenlab,\n"
    )
    tallies = []
    targets = list(iter_targets([path], on_file=tallies.append))
    assert [(t.domain, t.url, t.category, t.source) for t in targets] == [
        ("navalny.com", "https://navalny.com/", "POLR", "ru.csv:2"),
        ("navalny.com", "http://navalny.com/", "POLR", "ru.csv:3"),
        ("fbk.info", "https://fbk.info/", "POLR", "ru.csv:5"),  # a row over two lines
    ]
    assert (tallies[0].targets, tallies[0].duplicates, tallies[0].skipped) == (3, 2, 0)


@pytest.mark.parametrize(("url", "want_url", "domain"), [
    ("http://www.kproxy.com./", "http://www.kproxy.com/", "www.kproxy.com"),
    ("https://u@Www.Kproxy.com.:8443/a.b./?q=c.", "https://u@Www.Kproxy.com:8443/a.b./?q=c.",
     "www.kproxy.com"),
    ("https://1.1.1.1/dns-query?dns=q80", "https://1.1.1.1/dns-query?dns=q80", "1.1.1.1"),
    ("http://[2001:DB8:0::1]:8080/", "http://[2001:DB8:0::1]:8080/", "2001:db8::1"),
])
def test_csv_hosts_with_a_trailing_dot_or_an_address(tmp_path, url, want_url, domain):
    path = tmp_path / "l.csv"
    path.write_text(",".join(CSV_HEADER) + f"\n{url},GRP,,,,\n")
    (target,) = load_targets([path], strict=True)
    assert (target.url, target.domain) == (want_url, domain)


@pytest.mark.parametrize(("url", "reason"), [
    ("http://[fe80::1%25eth0]/", "invalid domain"), ("http://[::1/", "Invalid IPv6 URL"),
    ("http://1.2.3/", "address, not a name"), ("https://a..com./", "invalid domain")])
def test_csv_hosts_refused(tmp_path, url, reason):
    path = tmp_path / "l.csv"
    path.write_text(",".join(CSV_HEADER) + f"\n{url},GRP,,,,\n")
    with pytest.raises(RowError, match=r"l\.csv:2: .*" + re.escape(reason)):
        load_targets([path], strict=True)


def test_first_file_wins_across_files(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("category: GRP\ntargets: [t.co]\n")
    b.write_text("category: NEWS\ntargets: [t.co, rt.com]\n")
    assert [(t.domain, t.category) for t in load_targets([a, b])] == [
        ("t.co", "GRP"), ("rt.com", "NEWS")]


@pytest.mark.parametrize("text", ["", "localhost", "-a.com", "a..com", "1.2.3.4", "a_b.com",
                                  "x" * 64 + ".com"])
def test_parse_domain_rejects(text):
    with pytest.raises(ValueError):
        parse_domain(text)


def test_parse_domain_drops_a_trailing_dot():
    assert parse_domain("WWW.kproxy.com.") == "www.kproxy.com"


def test_parse_domain_accepts_idn():
    assert parse_domain("президент.рф") == "xn--d1abbgf6aiiy.xn--p1ai"


def test_control_throughput_url_from_the_list_or_the_target(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(
        "control_throughput_url: https://www.example.com/big.bin\n"
        "targets:\n"
        "  - {domain: pbs.twimg.com, throughput_url: 'https://pbs.twimg.com/a.jpg'}\n"
        "  - {domain: t.co, control_throughput_url: 'https://example.org/b.bin'}\n")
    first, second = load_targets([path])
    assert first.control_throughput_url == "https://www.example.com/big.bin"
    assert first.throughput_url == "https://pbs.twimg.com/a.jpg"
    assert second.control_throughput_url == "https://example.org/b.bin"


def test_media_mark_is_a_yaml_boolean_per_target_or_per_file(tmp_path) -> None:
    from probe.targets import formats
    from probe.targets.errors import TargetFileError

    path = tmp_path / "m.yaml"
    path.write_text("media: true\ntargets:\n  - a.example.com\n"
                    "  - {domain: b.example.com, media: false}\n")
    assert [(t.domain, t.media) for t, _ in formats.read(path, None)] == [
        ("a.example.com", True), ("b.example.com", False)]
    path.write_text("targets:\n  - {domain: c.example.com, media: maybe}\n")
    with pytest.raises(TargetFileError, match="not true or false"):
        list(formats.read(path, None))
