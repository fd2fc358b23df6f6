"""first_seen and the provenance tier count every capture of a text, not only the document rows.

A page crawled today and then found in a WARC captured in 2021 is one document (same URL, same bytes): the
archive's capture is a `fetches` row (outcome recaptured). The text was seen in 2021, so the `first_seen` view
and the `provenance_tier` detector must say 2021. Real crawl (loopback server), real WARC import, real runner.
"""

from __future__ import annotations

import json
from io import BytesIO

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

import provenance
from provenance.crawlers import CrawlRequest, run_crawl
from provenance.ingest import run_ingest
from provenance.plugins.provenance_tier import ProvenanceTier
from provenance.sites import generate_site, serve
from provenance.store import Store
from provenance.testing import run_detectors

ARCHIVED = "2021-03-01T12:00:00Z"
TEXT = ("The lighthouse keeper logged every ship that passed the point, and the log books, kept since 1890, "
        "are now in the county archive for anyone to read.")


def query(store, sql):
    con = provenance.connect(store)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def tiers(store, options=None) -> dict:
    t = run_detectors([ProvenanceTier], store, options).tags
    return {d: (tag, json.loads(ev)) for d, tag, ev in
            zip(t.column("doc_id").to_pylist(), t.column("tag").to_pylist(), t.column("evidence").to_pylist())}


def write_warc(path, url, body: bytes, date: str):
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        writer.write_record(writer.create_warc_record(
            url, "response", payload=BytesIO(body),
            http_headers=StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1"),
            warc_headers_dict={"WARC-Date": date}))
    return path


def test_an_archive_capture_of_crawled_bytes_moves_first_seen_and_the_tier_back(tmp_path):
    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=2)
    page = site / "articles" / "page-001.html"
    settings = {"allow_private": True, "autothrottle": False, "extract_workers": 0, "max_depth": 0}
    with serve(site) as base:
        url = base + "articles/page-001.html"
        run_crawl(Store.open(store_dir, create=True), CrawlRequest(start_urls=[url], crawl_id="c", settings=settings))
    store = Store.open(store_dir)
    [(doc_id, crawled_at)] = query(store, "SELECT doc_id, fetched_at FROM documents")
    assert crawled_at.year > 2021
    got = tiers(store)
    assert got[doc_id][0] == "first_seen_after_cutoff" and got[doc_id][1]["first_source"] == "crawl"

    # The same bytes at the same URL, captured by an archive in 2021 and imported after the crawl.
    warc = write_warc(tmp_path / "old.warc.gz", url, page.read_bytes(), ARCHIVED)
    result = run_ingest(store, [warc])
    assert result.to_json()["stored"] == 0  # no new document: one recaptured fetch row
    assert query(store, "SELECT outcome, source, doc_id FROM fetches WHERE outcome = 'recaptured'") == \
        [("recaptured", "warc", doc_id)]

    [(first_at, first_doc, first_url, n_documents, first_source, n_captures)] = query(
        store, "SELECT first_seen_at, first_doc_id, first_url, n_documents, first_source, n_captures FROM first_seen")
    assert first_at.isoformat().startswith("2021-03-01T12:00:00")
    assert (first_doc, first_url, n_documents, first_source, n_captures) == (doc_id, url, 1, "warc", 2)

    tag, evidence = tiers(store)[doc_id]
    assert tag == "first_seen_before_cutoff"
    assert evidence["first_seen_at"] == ARCHIVED and evidence["first_source"] == "warc"
    assert evidence["first_doc_id"] == doc_id and evidence["n_seen"] == 2
    # One predicate still selects it, the tier still flags nothing.
    assert query(store, "SELECT doc_id, flagged FROM doc_flags "
                        "WHERE list_contains(flags, 'provenance:first_seen_before_cutoff')") == [(doc_id, False)]


def test_a_jsonl_recapture_moves_first_seen_but_the_tier_only_when_jsonl_is_trusted(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    url = "https://j.example/page"
    today = tmp_path / "today.jsonl"
    today.write_text(json.dumps({"url": url, "text": TEXT, "fetched_at": "2025-06-01T00:00:00Z"}) + "\n")
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"url": url, "text": TEXT, "fetched_at": ARCHIVED}) + "\n")
    run_ingest(store, [today])
    assert run_ingest(store, [old]).to_json()["stored"] == 0
    [(doc_id,)] = query(store, "SELECT doc_id FROM documents")
    assert query(store, "SELECT source FROM fetches WHERE outcome = 'recaptured'") == [("jsonl",)]
    [(first_at, first_source)] = query(store, "SELECT first_seen_at, first_source FROM first_seen")
    assert first_at.isoformat().startswith("2021-03-01") and first_source == "jsonl"
    # A date a JSONL file claims proves nothing by default (no trusted capture: no tier) ...
    assert tiers(store) == {}
    # ... and a team that trusts its JSONL dumps gets the earliest of its captures.
    tag, evidence = tiers(store, {"provenance_tier": {"sources": ["jsonl"]}})[doc_id]
    assert tag == "first_seen_before_cutoff" and evidence["first_seen_at"] == ARCHIVED and evidence["n_seen"] == 2
