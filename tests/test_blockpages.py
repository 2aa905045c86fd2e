"""Every shipped blockpage fingerprint matches its samples and no ordinary page."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe.measure import blockpages, ooni_fingerprints

# (status, headers, body_head, title) -> the fingerprint id expected; every `when` entry of every
# shipped fingerprint has at least one sample here.
SAMPLES: list[tuple[str, tuple[int, list[tuple[str, str]], str, str | None]]] = [
    ("lab", (200, [], "<h1>probe-lab blockpage: access restricted</h1>", "Access restricted")),
    (
        "ru_rkn_registry",
        (200, [], '<p>Подробнее: <a href="https://eais.rkn.gov.ru/">реестр</a></p>', "Блокировка"),
    ),
    ("ru_rkn_registry", (200, [], "see http://blocklist.rkn.gov.ru/ for details", None)),
    ("ru_access_restricted", (200, [], "<p>Ресурс заблокирован</p>", "Доступ ограничен")),
    (
        "ru_access_restricted",
        (
            200,
            [],
            "Доступ к ресурсу ОГРАНИЧЕН на основании Федерального закона от 27.07.2006 № 149-ФЗ",
            None,
        ),
    ),
    ("ru_isp_redirect", (302, [("Location", "http://warning.rt.ru/?id=17")], "", None)),
    ("ru_isp_redirect", (307, [("location", "https://lawfilter.ertelecom.ru/")], "", None)),
    ("ru_isp_redirect", (301, [("Location", "http://fz139.ttk.ru")], "", None)),
    (
        "generic_access_restricted",
        (403, [], "<p>Access to this resource is restricted by the authorities.</p>", "Blocked"),
    ),
    (
        "ir_peyvandha",
        (403, [], '<iframe src="http://10.10.34.34?type=Invalid Site" style="width:100%">', None),
    ),
    ("ir_peyvandha", (200, [], "<a href='http://peyvandha.ir'>peyvandha</a>", None)),
]

NORMAL_PAGES: list[tuple[int, list[tuple[str, str]], str, str | None]] = [
    (200, [("Content-Type", "text/html")], "<title>Example Domain</title>hi", "Example Domain"),
    (302, [("Location", "https://www.example.com/")], "", None),
    (302, [("Location", "https://example.com/warning.rt.ru")], "", None),  # name only in path
    (302, [("Location", "https://warning.rt.ru.example.com/")], "", None),  # a longer name
    (200, [], "Наш сайт: новости и доступ к архиву ограничен временем работы", "Новости"),
    (200, [], "The rkn.gov.ru home page and reestr news", "Роскомнадзор"),
    (200, [("Location", "http://warning.rt.ru/")], "", None),  # not a redirect status
    (403, [], "<h1>403 Forbidden</h1><p>nginx</p>", "403 Forbidden"),
    (200, [], "Access to this resource requires a login.", "Login"),
    (200, [], '<a href="http://10.10.34.99/">', None),
]


def test_oonis_wider_fingerprint_catches_what_ours_leaves() -> None:
    """Ours names only the 10.10.34.34-36 sinkhole; OONI's (ooni.ir_0) any iframe to 10.10."""
    page = '<iframe src="http://10.10.34.99/">'
    assert blockpages.match(200, [], page, None) == "ooni.ir_0"
    assert not any(c.holds(blockpages._Response(200, [], page, page.casefold(), ""))
                   for fp in blockpages.fingerprints() for c in fp.when)


@pytest.mark.parametrize(("expected", "response"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_sample_matches_its_fingerprint(expected: str, response: tuple) -> None:
    assert blockpages.match(*response) == expected


@pytest.mark.parametrize("response", NORMAL_PAGES, ids=[str(i) for i in range(len(NORMAL_PAGES))])
def test_normal_page_matches_nothing(response: tuple) -> None:
    assert blockpages.match(*response) is None


def test_every_shipped_fingerprint_has_a_sample_per_alternative() -> None:
    counts = {fp.id: len(fp.when) for fp in blockpages.fingerprints()}
    sampled = [s[0] for s in SAMPLES]
    assert set(counts) == set(sampled)
    for fid, alternatives in counts.items():
        assert sampled.count(fid) >= alternatives, fid


def test_fingerprints_carry_description_and_country() -> None:
    for fp in blockpages.fingerprints():
        assert fp.description and len(fp.country) == 2, fp.id


def test_headers_may_be_a_mapping() -> None:
    assert blockpages.match(301, {"Location": "//warning.rt.ru/"}, "", None) == "ru_isp_redirect"


@pytest.mark.parametrize(
    "text",
    [
        "fingerprints: {}",
        "fingerprints: [{description: no id, when: [{body_contains: x}]}]",
        "fingerprints: [{id: a, when: []}]",
        "fingerprints: [{id: a, when: [{body_contian: x}]}]",
        "fingerprints: [{id: a, when: [{body_regex: '('}]}]",
        "fingerprints: [{id: a, when: [{header: {value: x}}]}]",
        "fingerprints: [{id: a, when: [{body_contains: x}]}, {id: a, when: [{status: [1]}]}]",
    ],
)
def test_malformed_file_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="blockpages"):
        blockpages.parse(text)


@given(
    status=st.none() | st.integers(0, 999),
    headers=st.lists(st.tuples(st.text(max_size=20), st.text(max_size=60)), max_size=4),
    body=st.text(max_size=300),
    title=st.none() | st.text(max_size=40),
)
def test_match_never_raises_and_names_a_shipped_fingerprint(
    status: int | None, headers: list, body: str, title: str | None
) -> None:
    found = blockpages.match(status, headers, body, title)
    ours = {fp.id for fp in blockpages.fingerprints()}
    oonis = {fp.name for fp in ooni_fingerprints.http_index().fingerprints if fp.blocking}
    assert found is None or found in ours | oonis
