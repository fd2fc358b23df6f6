"""What a crawl knows of each URL at its start (``KnownVersions``): the same answers as the whole query read into a
dict, from a memory-mapped file sorted by URL, whatever the URLs' characters and however many batches it has; and,
for a crawl of some sites, the same answers for every URL on them, without the rest of the store."""

from __future__ import annotations

import pytest

from provenance.crawlers import session
from provenance.crawlers.session import Known, KnownVersions, crawl_sites, load_known
from provenance.documents import domains_of
from provenance.sql import connect_parquet_views
from provenance.testing import make_store

PATHS = ["a", "Z", "~", "%20x", "é", "日本", "a/b?c=1", "a/b", "", "ß", "a" * 300, "emoji-\U0001F600", "A"]


def expected_versions(store) -> dict[str, Known]:
    con = connect_parquet_views(store, ("documents", "fetches"))
    try:
        return {row[0]: Known(*row[1:]) for row in con.execute(session._KNOWN_SQL.format(scope="true")).fetchall()}
    finally:
        con.close()


def test_known_versions_answer_as_the_query_does(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "KNOWN_BATCH_ROWS", 4)  # many batches: the search crosses their bounds
    docs = [{"url": f"https://e.example/{p}", "text": f"page {i}"} for i, p in enumerate(PATHS)]
    docs += [{"url": f"https://h{i % 5}.example/{i}", "text": f"other {i}"} for i in range(60)]
    store = make_store(tmp_path / "s", docs, rows_per_file=7)
    # A second version of some URLs, fetched later: the latest is the one known.
    make_store(tmp_path / "s", [{"url": d["url"], "text": d["text"] + " v2", "fetched_at": "2030-01-01T00:00:00Z"}
                                for d in docs[::3]], rows_per_file=7)
    expected = expected_versions(store)
    assert len(expected) == len(docs)
    known, previous = load_known(store, "test", tmp_path / "scratch")
    assert previous == []  # make_store writes no fetches
    assert len(known._urls) > 10
    for url, version in expected.items():
        assert known.get(url) == version, url
    for url in ["https://e.example/b", "https://e.example", "", "zzz", "https://e.example/a/b?c=2", "\U0010ffff"]:
        assert known.get(url) is None and known.get(url, "x") == "x"
    mine = Known("d" * 32, None, None, "r" * 64, None)
    known["https://new.example/"] = mine
    known[docs[0]["url"]] = mine  # the crawl's own version replaces the stored one
    assert known.get("https://new.example/") == mine and known.get(docs[0]["url"]) == mine
    assert (tmp_path / "scratch" / "known.arrow").is_file()
    known.close()
    assert not (tmp_path / "scratch").exists()


def test_a_new_store_needs_no_file(tmp_path):
    store = make_store(tmp_path / "s", [])
    known, previous = load_known(store, "test", tmp_path / "scratch")
    assert known.get("https://e.example/") is None and previous == []
    assert not (tmp_path / "scratch").exists()
    known.close()


# URLs on the crawled sites, however their hosts are spelled, and URLs elsewhere, some of which name a crawled
# site in their path or end with its name without being on it.
ON_SITES = ["https://a-site.org/x", "https://sub.a-site.org/y", "https://A-SITE.ORG/z", "https://u:p@a-site.org:8443/w",
            "https://www.a-site.org./t", "http://127.0.0.1:8000/p", "http://[::1]:8080/q", "https://xn--bcher-kva.de/b",
            "https://shop.b-site.co.uk/c"]
ELSEWHERE = ["https://c-site.org/", "https://other.org/a-site.org", "https://aa-site.org/", "https://b-site.uk/",
             "http://127.0.0.2:8000/p", "https://a-site.org.evil.net/", "https://co.uk/b-site.co.uk"]


def test_the_sites_of_a_crawl_are_its_seeds_registered_domains_as_given_and_as_requested():
    assert crawl_sites(["https://www.a-site.org/", "https://a-site.org/x", "http://Bücher.de/", "http://[::1]:8080/",
                        "https://shop.b-site.co.uk/", "not a url"]) \
        == ["::1", "a-site.org", "b-site.co.uk", "bücher.de", "xn--bcher-kva.de"]


@pytest.mark.parametrize("substring_sites", [16, 0], ids=["substring", "host"])
def test_a_crawl_of_some_sites_knows_every_url_on_them_and_none_elsewhere(tmp_path, monkeypatch, substring_sites):
    # Up to KNOWN_SCOPE_SUBSTRING_SITES sites a URL is kept when it contains one; beyond, its host is parsed.
    monkeypatch.setattr(session, "KNOWN_SCOPE_SUBSTRING_SITES", substring_sites)
    docs = [{"url": url, "text": f"page {i}"} for i, url in enumerate(ON_SITES + ELSEWHERE)]
    store = make_store(tmp_path / "s", docs, rows_per_file=5)
    expected = expected_versions(store)
    sites = crawl_sites(["https://a-site.org/", "http://127.0.0.1:8000/", "http://[::1]:8080/", "http://bücher.de/",
                         "https://b-site.co.uk/"])
    known, _ = load_known(store, "test", tmp_path / "scratch", sites)
    try:
        for url in ON_SITES:
            assert domains_of(url)[1] in sites, url  # what the spiders fetch: pages on their seeds' sites
            assert known.get(url) == expected[url], url
        for url in ELSEWHERE:
            assert domains_of(url)[1] not in sites, url
        kept = {u for batch in known._urls for u in batch.to_pylist()}
        assert "https://c-site.org/" not in kept and "http://127.0.0.2:8000/p" not in kept
        if substring_sites == 0:  # the host is parsed: only the URLs on the sites
            assert kept == set(ON_SITES)
    finally:
        known.close()


def test_a_crawl_of_no_site_reads_nothing(tmp_path):
    store = make_store(tmp_path / "s", [{"url": "https://a-site.org/", "text": "a page"}])
    known, _ = load_known(store, "test", tmp_path / "scratch", [])
    assert known.get("https://a-site.org/") is None
    known.close()
