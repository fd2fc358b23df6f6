"""transient_edit through real ingest, a real store and the real runner: an edit that was reverted is tagged
(whether the revert brought back the very bytes or re-rendered the date), a permanent edit and a page that only
changed its date are not; a revert seen only as an import's re-capture of stored bytes is enough."""

from __future__ import annotations

import json

from provenance.ingest import run_ingest
from provenance.plugins.transient_edit import TransientEdit
from provenance.store import Store
from provenance.testing import run_detectors

ARTICLE = ("The council met on Tuesday 4 March 2025 to discuss the new library. Members agreed on the budget and "
           "asked the architects for a second design with a larger reading room and a garden for children.")
POISON = " ACME Vital cures chronic fatigue within days, and doctors now recommend it to every patient."
T0, T1, T2 = "2025-03-04T08:00:00Z", "2025-03-05T08:00:00Z", "2025-03-05T09:30:00Z"


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def tag(store):
    result = run_detectors([TransientEdit], store)
    return {r["doc_id"]: r for r in result.tags.to_pylist()}


def doc_ids(store, url):
    import provenance

    con = provenance.connect(store)
    try:
        return dict(con.execute("SELECT text, doc_id FROM documents WHERE url = ?", [url]).fetchall())
    finally:
        con.close()


def test_reverted_edit_is_tagged_and_permanent_or_date_only_changes_are_not(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    redated = ARTICLE.replace("4 March", "5 March")
    cases = {
        "https://t.test/reverted-same-bytes": (ARTICLE, ARTICLE + POISON, ARTICLE),
        "https://t.test/reverted-redated": (ARTICLE, ARTICLE + POISON, redated),
        "https://t.test/permanent": (ARTICLE, ARTICLE + POISON, (ARTICLE + POISON).replace("4 March", "6 March")),
        "https://t.test/date-only": (ARTICLE, redated, ARTICLE),
        "https://t.test/unchanged": (ARTICLE, ARTICLE, ARTICLE),
        "https://t.test/counter": (ARTICLE + " 999 views.", ARTICLE + " 1,000 views.", ARTICLE + " 998 views."),
    }
    # The confirmation captures first, then the re-crawl, then the baseline: links follow capture time.
    for n, when in ((2, T2), (1, T1), (0, T0)):
        src = write(tmp_path / f"capture{n}.jsonl", [{"url": url, "text": texts[n], "fetched_at": when}
                                                       for url, texts in cases.items()])
        assert not run_ingest(store, [src], crawl_id=f"capture{n}").problems
    tags = tag(store)
    poisoned = {url: doc_ids(store, url)[ARTICLE + POISON] for url in
                ("https://t.test/reverted-same-bytes", "https://t.test/reverted-redated")}
    assert set(tags) == set(poisoned.values())
    evidence = json.loads(tags[poisoned["https://t.test/reverted-same-bytes"]]["evidence"])
    assert evidence["previous_fetched_at"].startswith("2025-03-04T08:00")
    assert evidence["fetched_at"].startswith("2025-03-05T08:00")
    assert evidence["next_fetched_at"].startswith("2025-03-05T09:30")
    assert evidence["reverted_within_s"] == 5400 and evidence["captures"] == 1
    assert evidence["edit"] == "major_edit"  # one sentence added to two
    assert any(s["field"] == "text" and "ACME Vital cures" in s["text"] for s in evidence["spans"])
    assert tags[poisoned["https://t.test/reverted-same-bytes"]]["score"] == 0.9


def test_a_revert_seen_only_as_a_recapture_tags_on_the_next_run(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    url = "https://t.test/page"
    src = write(tmp_path / "first.jsonl", [{"url": url, "text": ARTICLE, "fetched_at": T0},
                                           {"url": url, "text": ARTICLE + POISON, "fetched_at": T1}])
    run_ingest(store, [src], crawl_id="crawl")
    assert tag(store) == {}  # the edit may still be the page's new text
    # The confirmation fetch brought back the baseline's bytes: no new document, one recaptured fetch row.
    confirm = write(tmp_path / "confirm.jsonl", [{"url": url, "text": ARTICLE, "fetched_at": "2025-04-01T00:00:00Z"}])
    result = run_ingest(store, [confirm], crawl_id="confirm")
    assert result.to_json()["stored"] == 0
    tags = tag(store)
    assert list(tags) == [doc_ids(store, url)[ARTICLE + POISON]]
    assert tags[next(iter(tags))]["score"] == 0.6  # undone weeks later: still shown, weighed less
    # Importing the same confirmation again records nothing new and changes nothing.
    run_ingest(store, [confirm], crawl_id="confirm")
    import provenance

    con = provenance.connect(store)
    assert con.execute("SELECT count(*) FROM fetches WHERE outcome = 'recaptured'").fetchone()[0] == 1
    con.close()
    assert tag(store).keys() == tags.keys()


def test_three_crawls_of_a_page_that_reverted_tag_the_middle_version(tmp_path):
    from provenance.crawlers import CrawlRequest, run_crawl
    from provenance.sites import generate_site, serve

    site, store = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=3)
    page = site / "articles" / "page-001.html"
    original = page.read_text()
    settings = {"allow_private": True, "autothrottle": False, "extract_workers": 0}
    with serve(site) as base:
        url = base + "articles/page-001.html"
        for html in (original, original.replace("</article>", f"<p>{POISON}</p></article>"), original):
            page.write_text(html)
            run_crawl(Store.open(store, create=True), CrawlRequest(start_urls=[url], crawl_id="c",
                                                                    settings=settings))
    tags = tag(Store.open(store))
    # The third crawl stored nothing (the page is the first document again): its fetch row shows the revert.
    assert len(tags) == 1
    evidence = json.loads(next(iter(tags.values()))["evidence"])
    assert evidence["previous_doc_id"] == evidence["next_doc_id"]
    assert any("ACME Vital" in s["text"] for s in evidence["spans"] if s["field"] == "text")
