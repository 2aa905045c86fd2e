"""Target lists: the shipped lists load, good files parse, each invalid file names FILE:LINE."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from probe.targets import TargetFileError, default_target_files, load_targets, parse_domain

INVALID = Path(__file__).parent / "invalid"
# file -> (line named in the error, a word of the message)
EXPECTED = {
    "invalid-address-as-domain.yaml": (3, "address"),
    "invalid-bad-domain.yaml": (3, "invalid domain"),
    "invalid-category.yaml": (1, "invalid category"),
    "invalid-domain-not-string.yaml": (3, "string"),
    "invalid-duplicate.yaml": (4, "duplicate domain twitter.com"),
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


def test_every_invalid_file_has_an_expectation():
    assert sorted(p.name for p in INVALID.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_file(name):
    line, words = EXPECTED[name]
    path = INVALID / name
    with pytest.raises(TargetFileError) as err:
        load_targets([default_target_files()[0], path])  # nothing loads if one file is bad
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    assert words in message
    assert (err.value.path, err.value.line) == (str(path), line)


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


def test_citizenlab_csv_merges_duplicates(tmp_path):
    path = tmp_path / "ru.csv"
    path.write_text(
        "url,category_code,category_description,date_added,source,notes\n"
        "https://navalny.com/,POLR,Political Criticism,2017-04-12,citizenlab,\n"
        "http://navalny.com/,POLR,Political Criticism,2017-04-12,citizenlab,\n"
        '"https://fbk.info/",POLR,Political Criticism,2017-04-12,citizenlab,"a, note"\n'
    )
    targets = load_targets([path])
    assert [(t.domain, t.url, t.category, t.source) for t in targets] == [
        ("navalny.com", "https://navalny.com/", "POLR", "ru.csv:2"),
        ("fbk.info", "https://fbk.info/", "POLR", "ru.csv:4"),
    ]


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
