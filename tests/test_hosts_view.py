"""The ``hosts`` view: per registered domain, first and last capture, URLs, servers and IPs, and how many of the
URLs captured on its last day came back changed, whatever the order the captures were imported in."""

from __future__ import annotations

import json

import pyarrow as pa
from test_crawl import crawl, rows

import provenance
from provenance.detectors import CorpusState
from provenance.ingest import run_ingest
from provenance.sql import sql_list
from provenance.sites import generate_site, serve
from provenance.store import Store
from provenance.testing import run_detectors


def _jsonl(path, day, texts):
    path.write_text("".join(json.dumps({"url": url, "text": text, "fetched_at": f"{day}T00:00:00Z"}) + "\n"
                            for url, text in texts.items()))
    return path


def test_last_day_changes_are_counted_per_domain_whatever_the_import_order(tmp_path):
    before = {f"https://news.example/{i}": f"story {i} as first published" for i in range(5)}
    after = {url: (text + ", then rewritten" if i < 4 else text) for i, (url, text) in enumerate(before.items())}
    after["https://news.example/new"] = "a page first seen on the second day"
    other = {"https://blog.example.org/a": "a post that never changes"}
    store = Store.open(tmp_path / "store", create=True)
    # The later capture first: the view orders by capture time, not by import.
    for path in (_jsonl(tmp_path / "march.jsonl", "2024-03-01", after),
                 _jsonl(tmp_path / "january.jsonl", "2024-01-01", {**before, **other})):
        assert not run_ingest(store, [path], crawl_id="c").problems
    hosts = {r["registered_domain"]: r for r in rows(tmp_path / "store", "SELECT * FROM hosts")}
    assert set(hosts) == {"news.example", "example.org"}  # registered domains
    news = hosts["news.example"]
    assert str(news["first_seen_at"])[:10] == "2024-01-01" and str(news["last_day"]) == "2024-03-01"
    assert (news["n_urls"], news["n_documents"]) == (6, 10)
    # On 2024-03-01: five URLs seen before, four with other bytes; the new page is not a re-capture.
    assert (news["recaptured_last_day"], news["changed_last_day"], news["changed_share_last_day"]) == (5, 4, 0.8)
    blog = hosts["example.org"]
    assert (blog["n_urls"], blog["recaptured_last_day"], blog["changed_share_last_day"]) == (1, 0, None)


def test_a_crawled_host_shows_its_server_and_address(tmp_path):
    site = tmp_path / "site"
    generate_site(site, pages=3)
    with serve(site) as base:
        crawl(tmp_path / "store", {"allow_private": True, "extract_workers": 0}, start_urls=[base + "index.html"])
    [host] = rows(tmp_path / "store", "SELECT * FROM hosts")
    assert host["n_urls"] >= 4 and host["n_servers"] == 1 and host["n_ips"] == 1
    assert host["last_ip"] == "127.0.0.1" and host["last_server"]
    assert host["recaptured_last_day"] == 0  # one crawl: nothing captured before


class HostChurn(provenance.CorpusDetector):
    """A detector written against the public API: tags the documents of domains whose URLs mostly changed on
    some capture day, reading the host table from its CorpusState, not the corpus."""

    name = "host_churn_test"
    version = "1"
    category = "other"
    needs = ("registered_domain",)
    keeps_state = True
    reads_fetches = True

    def observe(self, batch):
        return pa.table({"doc_id": batch.column("doc_id"), "registered_domain": batch.column("registered_domain")})

    def finish(self, corpus):
        import duckdb

        con = duckdb.connect()
        try:
            days = corpus.host_days(con).to_arrow_table()
            assert corpus.hosts(con).to_arrow_table().num_rows == 2  # the per-domain view, from the same snapshot
            churned = [r["registered_domain"] for r in days.to_pylist() if (r["changed_share"] or 0) >= 0.5]
            con.register("churned", pa.table({"registered_domain": pa.array(churned, pa.string())}))
            ids = con.sql(f"SELECT DISTINCT doc_id FROM read_parquet({sql_list(corpus.state_files)}) "
                          "WHERE registered_domain IN (SELECT registered_domain FROM churned)").to_arrow_table()
        finally:
            con.close()
        return self.tags(ids.column("doc_id"), "churned_host")


def _two_days(tmp_path):
    before = {f"https://news.example/{i}": f"story {i} as first published" for i in range(5)}
    after = {url: (text + ", then rewritten" if i < 4 else text) for i, (url, text) in enumerate(before.items())}
    after["https://news.example/new"] = "a page first seen on the second day"
    return [_jsonl(tmp_path / "march.jsonl", "2024-03-01", after),
            _jsonl(tmp_path / "january.jsonl", "2024-01-01",
                   {**before, "https://blog.example.org/a": "a post that never changes"})]


def test_host_days_count_changes_per_domain_and_day_for_corpus_detectors(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    for path in _two_days(tmp_path):  # the later capture first
        assert not run_ingest(store, [path], crawl_id="c").problems
    snapshot = store.snapshot()
    corpus = CorpusState(doc_files=[str(p) for p in snapshot.paths("documents")],
                         fetch_files=[str(p) for p in snapshot.paths("fetches")])
    import duckdb

    con = duckdb.connect()
    days = {(r["registered_domain"], str(r["day"])): r for r in corpus.host_days(con).to_arrow_table().to_pylist()}
    hosts = {r["registered_domain"]: r for r in corpus.hosts(con).to_arrow_table().to_pylist()}
    con.close()
    assert set(days) == {("news.example", "2024-01-01"), ("news.example", "2024-03-01"),
                         ("example.org", "2024-01-01")}
    march = days[("news.example", "2024-03-01")]
    # By URL: six captured, five of them before, four of those with other bytes (the hosts view's last day).
    assert (march["n_urls"], march["n_urls_recaptured"], march["n_urls_changed"], march["changed_share"]) == \
        (6, 5, 4, 0.8)
    assert (hosts["news.example"]["recaptured_last_day"], hosts["news.example"]["changed_last_day"]) == (5, 4)
    # By version: four new documents replaced earlier ones, all with other text; JSONL has no server or IP.
    assert (march["n_replaced"], march["n_replaced_text"], march["n_server_changed"], march["n_ip_changed"]) == \
        (4, 4, 0, 0)
    january = days[("news.example", "2024-01-01")]
    assert (january["n_urls"], january["n_urls_recaptured"], january["changed_share"], january["n_replaced"]) == \
        (5, 0, None, 0)


def test_a_corpus_detector_reads_the_host_table_through_its_corpus_state(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    for path in _two_days(tmp_path):
        assert not run_ingest(store, [path], crawl_id="c").problems
    tags = run_detectors([HostChurn], store).tags.to_pylist()
    con = provenance.connect(store)
    news = {r[0] for r in con.execute("SELECT doc_id FROM documents WHERE registered_domain = 'news.example'")
            .fetchall()}
    con.close()
    assert {t["doc_id"] for t in tags} == news and {t["tag"] for t in tags} == {"churned_host"}
