"""What a crawl knows of each URL at its start (``KnownVersions``): the same answers as the whole query read into a
dict, from a memory-mapped file sorted by URL, whatever the URLs' characters and however many batches it has."""

from __future__ import annotations

from provenance.crawlers import session
from provenance.crawlers.session import Known, KnownVersions, load_known
from provenance.sql import connect_parquet_views
from provenance.testing import make_store

PATHS = ["a", "Z", "~", "%20x", "é", "日本", "a/b?c=1", "a/b", "", "ß", "a" * 300, "emoji-\U0001F600", "A"]


def expected_versions(store) -> dict[str, Known]:
    con = connect_parquet_views(store, ("documents", "fetches"))
    try:
        return {row[0]: Known(*row[1:]) for row in con.execute(session._KNOWN_SQL).fetchall()}
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
