"""What a crawl knows of each URL at its start (``KnownVersions``): the same answers as the whole query read into a
dict, from a memory-mapped file sorted by URL, whatever the URLs' characters and however many batches it has; and,
for a crawl of some sites, the same answers for every URL on them, without the rest of the store."""

from __future__ import annotations

import pytest

from provenance.crawlers import known_index, session
from provenance.crawlers.session import Known, KnownVersions, crawl_sites, load_known
from provenance.documents import domains_of
from provenance.sql import connect_parquet_views
from provenance.testing import make_store

PATHS = ["a", "Z", "~", "%20x", "é", "日本", "a/b?c=1", "a/b", "", "ß", "a" * 300, "emoji-\U0001F600", "A"]


def expected_versions(store) -> dict[str, Known]:
    """The whole query over every document and fetch file, no index."""
    con = connect_parquet_views(store, ("documents", "fetches"))
    known_index.indexed_view(con, None, None)
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


# ----- the URL version index (crawlers/known_index.py) ------------------------------------------------------
def add_fetches(store, rows: list[dict]) -> None:
    """Fetch rows as a crawl commits them: here, fetches that confirmed a stored document at a later time."""
    import pyarrow as pa

    from provenance.ingest import parse_time

    with store.run("crawl", config={}) as run:
        table = pa.Table.from_pylist([{"run_id": run.run_id, "crawl_id": "test", "http_status": 200,
                                       **r, "fetched_at": parse_time(r["fetched_at"])} for r in rows])
        run.commit(add=[run.write("fetches", table, "test")])


def doc_id_of(store, url: str, text: str) -> str:
    con = connect_parquet_views(store, ("documents",))
    try:
        return con.execute("SELECT doc_id FROM documents WHERE url = ? AND text = ?", [url, text]).fetchone()[0]
    finally:
        con.close()


def test_with_the_url_version_index_a_crawl_knows_what_every_file_says(tmp_path, monkeypatch):
    from provenance.maintenance import check_store

    monkeypatch.setattr(known_index, "MIN_ROWS", 10)
    docs = [{"url": f"https://h{i % 4}.example/{p}", "text": f"page {i}"} for i, p in enumerate(PATHS * 3)]
    store = make_store(tmp_path / "s", docs, rows_per_file=7)
    # A second version of some URLs, then a fetch that saw the first again (A, B, A): the first is the latest.
    make_store(tmp_path / "s", [{"url": d["url"], "text": d["text"] + " v2", "fetched_at": "2030-01-01T00:00:00Z"}
                                for d in docs[::4]], rows_per_file=7)
    back = docs[0]["url"]
    add_fetches(store, [{"url": back, "outcome": "unchanged", "doc_id": doc_id_of(store, back, "page 0"),
                         "fetched_at": "2031-01-01T00:00:00Z"}])

    def check(sites=None):
        expected = expected_versions(store)
        known, _ = load_known(store, "test", tmp_path / "scratch", sites)
        try:
            for url, version in expected.items():
                if sites is None or domains_of(url)[1] in sites:
                    assert known.get(url) == version, url
        finally:
            known.close()
        return expected

    assert check()[back].doc_id == doc_id_of(store, back, "page 0")
    index = known_index.open_index(store.snapshot())  # written by that crawl's start: it covers every file
    assert index is not None and known_index.uncovered_rows(store.snapshot(), index) == 0
    # Files committed since (fewer rows than a rewrite needs): the index's rows and those files together.
    make_store(tmp_path / "s", [{"url": "https://h1.example/new", "text": "new page"},
                                {"url": docs[1]["url"], "text": "third version", "fetched_at": "2032-01-01T00:00:00Z"}])
    older = doc_id_of(store, docs[4]["url"], "page 4")  # its v2 is in the index's run: A, B, then A again
    add_fetches(store, [{"url": docs[4]["url"], "outcome": "unchanged", "doc_id": older,
                         "fetched_at": "2033-01-01T00:00:00Z"}])
    assert known_index.open_index(store.snapshot()).name == index.name
    assert 0 < known_index.uncovered_rows(store.snapshot(), index) < 10
    expected = check()
    assert expected[docs[4]["url"]].doc_id == doc_id_of(store, docs[4]["url"], "page 4")
    assert known_index.open_index(store.snapshot()).name == index.name  # not rewritten for so few
    check(crawl_sites(["https://h1.example/", "https://h2.example/"]))
    # Enough new rows: the next crawl's start writes them as a second run first, and it answers the same.
    make_store(tmp_path / "s", [{"url": f"https://h3.example/more/{i}", "text": f"more {i}"} for i in range(30)])
    check(crawl_sites(["https://h3.example/"]))
    fresh = known_index.open_index(store.snapshot())
    assert fresh.name != index.name and known_index.uncovered_rows(store.snapshot(), fresh) == 0
    assert fresh.runs[0] == index.runs[0] and len(fresh.runs) == 2
    assert check_store(store)[0] == []
    # With MAX_RUNS runs, the next write merges them and the new files into one; the old runs go.
    monkeypatch.setattr(known_index, "MAX_RUNS", 2)
    make_store(tmp_path / "s", [{"url": f"https://h2.example/later/{i}", "text": f"later {i}"} for i in range(30)])
    add_fetches(store, [{"url": back, "outcome": "unchanged", "doc_id": doc_id_of(store, back, "page 0 v2"),
                         "fetched_at": "2034-01-01T00:00:00Z"}])
    assert check()[back].doc_id == doc_id_of(store, back, "page 0 v2")  # B again, after A, B, A
    merged = known_index.open_index(store.snapshot())
    assert len(merged.runs) == 1 and known_index.uncovered_rows(store.snapshot(), merged) == 0
    assert sorted(p.name for p in (store.root / known_index.INDEX_DIR).iterdir()) == \
        sorted([merged.runs[0].name, f"{merged.name}.json"])
    assert check_store(store)[0] == []


@pytest.mark.parametrize("substring_sites", [16, 0], ids=["substring", "host"])
def test_the_index_keeps_every_url_on_the_crawls_sites_spelled_any_way(tmp_path, monkeypatch, substring_sites):
    monkeypatch.setattr(session, "KNOWN_SCOPE_SUBSTRING_SITES", substring_sites)
    monkeypatch.setattr(known_index, "MIN_ROWS", 1)
    docs = [{"url": url, "text": f"page {i}"} for i, url in enumerate(ON_SITES + ELSEWHERE)]
    store = make_store(tmp_path / "s", docs, rows_per_file=5)
    expected = expected_versions(store)
    sites = crawl_sites(["https://a-site.org/", "http://127.0.0.1:8000/", "http://[::1]:8080/", "http://bücher.de/",
                         "https://b-site.co.uk/"])
    load_known(store, "test", tmp_path / "scratch", None)[0].close()  # writes the index
    assert known_index.open_index(store.snapshot()) is not None
    known, _ = load_known(store, "test", tmp_path / "scratch", sites)
    try:
        for url in ON_SITES:
            assert known.get(url) == expected[url], url
        kept = {u for batch in known._urls for u in batch.to_pylist()}
        assert kept == set(ON_SITES)  # the index's ranges are by host: nothing elsewhere comes back
    finally:
        known.close()


def test_the_sites_filter_is_a_range_of_host_keys():
    assert known_index.site_key("Shop.B-Site.co.uk.") == "uk.co.b-site.shop"
    assert known_index.sites_filter(None) == "true" and known_index.sites_filter([]) == "false"
    assert known_index.sites_filter(["a.org"]) == "(host_key >= 'org.a' AND host_key < 'org.a/')"


def test_store_check_verifies_the_url_version_index(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from provenance.maintenance import check_store

    monkeypatch.setattr(known_index, "MIN_ROWS", 1)
    store = make_store(tmp_path / "s", [{"url": f"https://h{i % 3}.example/{i}", "text": f"page {i}"}
                                       for i in range(20)], rows_per_file=6)
    load_known(store, "test", tmp_path / "scratch")[0].close()
    index = known_index.open_index(store.snapshot())
    assert index is not None and index.rows == 20 and check_store(store)[0] == []
    table = pq.read_table(index.runs[0])
    stranger = table.slice(0, 1).set_column(1, "url", [["https://h0.example/never-stored"]])
    pq.write_table(pa.concat_tables([table.slice(1), stranger]), index.runs[0])  # one row lost, one stranger last
    problems = check_store(store)[0]
    assert any("lacks 1 URL versions" in p for p in problems), problems
    assert any("holds 1 URL versions the store does not" in p for p in problems), problems
    assert any("not sorted by host" in p for p in problems), problems  # the stranger went last


def test_a_run_deleted_by_another_crawl_before_this_one_read_it_means_reading_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(known_index, "MIN_ROWS", 1)
    docs = [{"url": f"https://h{i % 3}.example/{i}", "text": f"page {i}"} for i in range(20)]
    store = make_store(tmp_path / "s", docs, rows_per_file=6)
    load_known(store, "test", tmp_path / "scratch")[0].close()
    real = known_index.open_index

    def opened_then_replaced(snapshot):  # another crawl's merge deletes this run right after this crawl opened it
        index = real(snapshot)
        index.runs[0].unlink()
        return index

    monkeypatch.setattr(known_index, "open_index", opened_then_replaced)
    monkeypatch.setattr(known_index, "MIN_ROWS", 1 << 40)
    expected = expected_versions(store)
    known, _ = load_known(store, "test", tmp_path / "scratch")
    try:
        assert len(expected) == 20 and all(known.get(url) == version for url, version in expected.items())
    finally:
        known.close()
