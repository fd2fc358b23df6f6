"""Versions of a URL from every source (the versions view, the runner's previous_* join) and content_drift."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import provenance
from provenance.crawlers import CrawlRequest, run_crawl
from provenance.plugins.content_drift import ContentDrift, compare
from provenance.runner import PreviousLookup, _iter_batches
from provenance.sites import generate_site, serve
from provenance.store import Store
from provenance.testing import make_document, make_store, run_detector

_WORDS = ("river stone council garden harbour lantern meadow orchard bridge market winter summer library school "
          "teacher village station museum painter baker farmer letter window kitchen forest valley mountain road "
          "evening morning history story music theatre festival harvest weather island coast shelter").split()


def prose(seed: int, n_sentences: int = 30) -> str:
    """Generated sentences of ordinary words: a page's text, different for every seed."""
    rng = random.Random(seed)
    return " ".join(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 14))).capitalize() + "."
                    for _ in range(n_sentences))


def _versions(store) -> list[tuple]:
    con = provenance.connect(store)
    try:
        return con.execute("SELECT url_key, doc_id, version, previous_doc_id, change FROM versions "
                           "ORDER BY url_key, version NULLS LAST, doc_id").fetchall()
    finally:
        con.close()


def _ingest(cli, tmp_path: Path, store: Path, name: str, records: list[dict]) -> None:
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    cli("ingest", src, "--store", store, "--crawl-id", name, check=0)


def _doc_ids(store: Path) -> dict[str, str]:
    con = provenance.connect(store)
    try:
        return dict(con.execute("SELECT json_extract_string(metadata, '$.name'), doc_id FROM documents").fetchall())
    finally:
        con.close()


# ----- versions ---------------------------------------------------------------------------------
def test_imports_in_reverse_time_order_link_by_capture_time(cli, tmp_path):
    store = tmp_path / "store"
    url = "https://example.org/page"
    # This week's capture first, last year's after it: the order of import must not matter.
    _ingest(cli, tmp_path, store, "new", [{"url": url, "text": prose(2), "fetched_at": "2025-06-01", "name": "new"}])
    _ingest(cli, tmp_path, store, "old", [{"url": url, "text": prose(1), "fetched_at": "2024-06-01", "name": "old"},
                                         {"url": "https://example.org/other", "text": "x", "name": "undated"}])
    ids = _doc_ids(store)
    assert _versions(store) == [
        ("example.org/other", ids["undated"], None, None, "undated"),
        ("example.org/page", ids["old"], 1, None, "first"),
        ("example.org/page", ids["new"], 2, ids["old"], "changed"),
    ]
    # Stored documents are not rewritten: only a crawl sets previous_doc_id.
    con = provenance.connect(store)
    assert con.execute("SELECT count(previous_doc_id) FROM documents").fetchone()[0] == 0
    con.close()

    # The runner gives a detector needing "previous" the same earlier version.
    tags = run_detector(ContentDrift, Store.open(store)).to_pylist()
    assert [(t["doc_id"], t["tag"]) for t in tags] == [(ids["new"], "replaced")]
    evidence = json.loads(tags[0]["evidence"])
    assert evidence["previous_doc_id"] == ids["old"]
    assert evidence["previous_fetched_at"].startswith("2024-06-01") and evidence["fetched_at"].startswith("2025-06-01")


def test_url_variants_of_one_page_are_one_chain_and_same_text_is_told_apart(cli, tmp_path):
    store = tmp_path / "store"
    body = "<html><body><article><p>" + prose(3, 6) + "</p></article></body></html>"
    _ingest(cli, tmp_path, store, "a", [
        {"url": "http://Example.ORG:80/a#top", "html": body, "fetched_at": "2020-01-01", "name": "v1"},
        # Raw bytes changed (a comment), text the same.
        {"url": "https://example.org/a", "html": body.replace("<article>", "<!-- ad slot --><article>"),
         "fetched_at": "2021-01-01", "name": "v2"},
        {"url": "https://example.org/a?x=1", "text": "another resource", "fetched_at": "2021-01-01", "name": "q"},
        {"url": "https://example.org", "text": "home", "fetched_at": "2021-01-01", "name": "home"}])
    ids = _doc_ids(store)
    assert _versions(store) == [
        ("example.org/", ids["home"], 1, None, "first"),
        ("example.org/a", ids["v1"], 1, None, "first"),
        ("example.org/a", ids["v2"], 2, ids["v1"], "same_text"),
        ("example.org/a?x=1", ids["q"], 1, None, "first"),
    ]


def test_crawl_links_and_an_older_import_sit_in_one_chain(cli, tmp_path):
    site, store = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=3)
    page = site / "articles" / "page-001.html"
    settings = {"allow_private": True, "autothrottle": False, "extract_workers": 0}
    with serve(site) as base:
        url = base + "articles/page-001.html"
        run_crawl(Store.open(store, create=True), CrawlRequest(start_urls=[url], crawl_id="c", settings=settings))
        page.write_text(page.read_text().replace("</article>", "<p>A correction was published.</p></article>"))
        run_crawl(Store.open(store), CrawlRequest(start_urls=[url], crawl_id="c", settings=settings))
    # An archive capture of the same page, years older, imported after both crawls.
    _ingest(cli, tmp_path, store, "archive", [{"url": url, "text": prose(4), "fetched_at": "2019-01-01",
                                               "name": "archive"}])
    con = provenance.connect(store)
    chain = con.execute("SELECT v.doc_id, v.version, v.previous_doc_id, d.previous_doc_id, d.source FROM versions v "
                        "JOIN documents d USING (doc_id) WHERE v.url = ? OR d.url = ? ORDER BY v.version",
                        [url, url]).fetchall()
    con.close()
    (archive, v1, _, _, src1), (crawl1, v2, prev2, stored2, src2), (crawl2, v3, prev3, stored3, src3) = chain
    assert (src1, src2, src3) == ("jsonl", "crawl", "crawl") and (v1, v2, v3) == (1, 2, 3)
    assert prev2 == archive and stored2 is None  # the crawl knew nothing older; the view does
    assert prev3 == stored3 == crawl1  # the crawl's own link and the view agree

    tags = {t["doc_id"]: t for t in run_detector(ContentDrift, Store.open(store)).to_pylist()}
    assert tags[crawl1]["tag"] == "replaced"
    assert tags[crawl2]["tag"] in ("minor_edit", "major_edit")
    assert json.loads(tags[crawl2]["evidence"])["previous_doc_id"] == crawl1


def test_previous_lookup_reads_only_the_batch_s_earlier_versions(tmp_path):
    docs = []
    for i in range(6):
        docs.append(make_document(i, url=f"https://example.org/{i}", text=prose(10 + i), fetched_at="2022-01-01",
                                  headers={"Server": "nginx"}, resolved_ip="192.0.2.1"))
    for i in range(6):
        docs.append(make_document(10 + i, url=f"https://example.org/{i}", text=prose(20 + i),
                                  fetched_at="2023-01-01", headers={"Server": "parking"}, resolved_ip="198.51.100.7"))
    store = make_store(tmp_path / "store", docs, rows_per_file=4)  # earlier versions in other files
    paths = store.snapshot().paths("documents")
    lookup = PreviousLookup(paths)
    try:
        (_, batch), = _iter_batches(paths[-1], ["doc_id", "previous_doc_id", "text"], 100)
        out = lookup.add(batch)
    finally:
        lookup.close()
    by_id = {d["doc_id"]: d for d in docs}
    for row in out.to_pylist():
        earlier = by_id[row["__previous_doc_id"]]
        assert earlier["url"] == by_id[row["doc_id"]]["url"] and earlier["fetched_at"].year == 2022
        assert row["previous_text"] == earlier["text"] and row["previous_raw"] == earlier["raw"]
        assert row["previous_resolved_ip"] == "192.0.2.1"
        assert row["previous_headers"] == [{"name": "Server", "value": "nginx"}]
        assert row["previous_doc_id"] is None  # the stored column (the crawl's link) is left as it is


def test_previous_lookup_is_bounded_and_spills_to_its_own_directory(tmp_path):
    # DuckDB unbounded takes up to 80% of the machine before it spills (1.4 GB for 1M documents): the lookup
    # sets a memory limit and a spill directory, and gives the same rows under a small limit as under the default
    docs = [make_document(i, url=f"https://example.org/{i % 7}", text=prose(40 + i), fetched_at=f"20{10 + i}-01-01")
            for i in range(14)]
    store = make_store(tmp_path / "store", docs, rows_per_file=4)
    paths = store.snapshot().paths("documents")
    outputs = []
    for memory_mb, spill in ((0, None), (64, tmp_path / "spill")):
        if spill:
            spill.mkdir()
        lookup = PreviousLookup(paths, spill_dir=spill, memory_mb=memory_mb)
        try:
            limit, temp = lookup.con.execute("SELECT current_setting('memory_limit'), "
                                             "current_setting('temp_directory')").fetchall()[0]
            own = lookup._own_spill
            assert (own is None) == (spill is not None) and temp == str(spill or own)
            assert limit.endswith("MiB") and float(limit.split()[0]) <= (memory_mb or 512)
            outputs.append(sorted((r["doc_id"], r["__previous_doc_id"], r["previous_text"])
                                  for p in paths for _, b in _iter_batches(p, ["doc_id", "text"], 100)
                                  for r in lookup.add(b).to_pylist()))
        finally:
            lookup.close()
        assert own is None or not Path(own).exists()  # its own spill directory goes with it
    assert outputs[0] == outputs[1]
    assert sum(prev is not None for _, prev, _ in outputs[0]) == 7  # the second capture of each of 7 URLs
    tags = run_detector(ContentDrift, Store.open(store.root))
    assert tags.num_rows == 7  # every re-capture compared; the run's spill directory is gone afterwards
    assert not list((store.root / "_tmp").glob("*-previous"))


# ----- content_drift ----------------------------------------------------------------------------
def _drift_store(tmp_path: Path):
    base = prose(30, 40)
    words = base.split()
    sentences = base.split(". ")
    cases = {
        # only the date line and a counter change: no tag
        "unchanged": (f"Updated 3 March 2024. {base} 1,204 views.", f"Updated 9 April 2025. {base} 1,377 views."),
        "minor_edit": (base, " ".join(words[:50] + ["lighthouse"] + words[51:])),
        "major_edit": (base, ". ".join(sentences[:25] + prose(31, 15).split(". "))),
        "replaced": (base, prose(32, 40)),
    }
    docs = []
    for i, (name, (before, after)) in enumerate(cases.items()):
        url = f"https://example.org/{name}"
        # The later capture first in the files: the links follow fetched_at.
        docs.append(make_document(2 * i, url=url, text=after, fetched_at="2025-01-01", metadata={"case": name}))
        docs.append(make_document(2 * i + 1, url=url, text=before, fetched_at="2024-01-01"))
    return make_store(tmp_path / "store", docs, rows_per_file=3), cases


def test_content_drift_classes_evidence_and_flags(tmp_path):
    store, cases = _drift_store(tmp_path)
    tags = run_detector(ContentDrift, store).to_pylist()
    con = provenance.connect(store.root)
    case_of = dict(con.execute("SELECT doc_id, json_extract_string(metadata, '$.case') FROM documents").fetchall())
    found = {case_of[t["doc_id"]]: t for t in tags}
    assert sorted(found) == ["major_edit", "minor_edit", "replaced"]
    for name, t in found.items():
        assert t["tag"] == name and t["category"] == "poison"
    assert (found["replaced"]["score"], found["major_edit"]["score"], found["minor_edit"]["score"]) == (0.9, 0.5, 0.0)

    minor = json.loads(found["minor_edit"]["evidence"])
    assert 0.8 <= minor["similarity"] < 1 and minor["count"] == 1
    before, after = cases["minor_edit"]
    (new_span, old_span) = minor["spans"]
    assert (new_span["field"], after[new_span["start"]:new_span["end"]]) == ("text", "lighthouse")
    assert old_span["field"] == "previous_text" and before[old_span["start"]:old_span["end"]] == old_span["text"]
    major = json.loads(found["major_edit"]["evidence"])
    assert 0.3 <= major["similarity"] < 0.8

    # Minor edits are the normal life of a page: described, not flagged; a replaced page flags.
    flagged = dict(con.execute("SELECT doc_id, flagged FROM doc_flags").fetchall())
    con.close()
    assert flagged[found["replaced"]["doc_id"]] and flagged[found["major_edit"]["doc_id"]]
    assert not flagged[found["minor_edit"]["doc_id"]]


def test_compare_masks_dates_times_and_counters():
    text = prose(40, 20)
    before = f"Posted on Monday, 12 March 2024 at 10:42. {text} Visitors: 1,024."
    after = f"Posted on Friday, 3 January 2025 at 08:05. {text} Visitors: 77,310."
    assert compare(after, before, 3, 0.3, 0.8) is None
    assert compare(after.replace("Visitors", "Readers"), before, 3, 0.3, 0.8)["tag"] == "minor_edit"


def test_content_drift_refuses_options_out_of_order():
    with pytest.raises(provenance.DetectorError, match="replaced_below <= major_below"):
        ContentDrift.validate_options({"replaced_below": 0.9, "major_below": 0.5})
