"""The resume journal's contracts, decided without a network: a page's links are journaled before the page can
be committed, so a kill between the two never loses them; a commit that fails marks nothing done."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from scrapy.exceptions import CloseSpider
from scrapy.http import HtmlResponse, Request

from provenance.crawlers.items import FetchedPage
from provenance.crawlers.journal import JOURNAL, Journal
from provenance.crawlers.session import CrawlSession
from provenance.crawlers.spiders import COMMIT_FAILED, SiteSpider
from provenance.documents import build_document
from provenance.store import Store, utcnow


def _journaled_urls(jobdir) -> set[str]:
    lines = (jobdir / JOURNAL).read_text().splitlines()
    return {entry["s"] for entry in map(json.loads, lines) if "s" in entry}


def test_links_are_journaled_before_the_page_item_is_handed_on(tmp_path):
    jobdir = tmp_path / "job"
    journal = Journal.open(jobdir, SiteSpider.name)
    session = SimpleNamespace(journal=journal, previous_urls=[])
    spider = SiteSpider(start_urls=["http://site.test/index.html"], session=session)
    body = b'<html><body><a href="/a.html">a</a> <a href="b.html#x">b</a> <a href="http://other.test/">o</a></body></html>'
    response = HtmlResponse("http://site.test/index.html", body=body, encoding="utf-8",
                            request=Request("http://site.test/index.html", meta={"depth": 0}))

    outputs = spider.parse_page(response)
    first = next(outputs)
    assert isinstance(first, FetchedPage)
    # The pipeline may commit this page (and mark it done in the journal) as soon as it has the item:
    # by then both same-site links must already be in the journal, or a kill would lose them.
    assert _journaled_urls(jobdir) == {"http://site.test/a.html", "http://site.test/b.html"}
    assert sorted(r.url for r in outputs) == ["http://site.test/a.html", "http://site.test/b.html"]
    journal.close(None)


def test_planned_confirmations_outlive_a_stop_until_their_fetch_is_committed(tmp_path):
    """Confirmation fetches (confirm_after_s) planned by a run that stopped are planned again by the next run of the
    job, for pages whose own fetch was committed; those whose confirmation was committed are done."""
    a, b, c = (f"http://site.test/{n}.html" for n in "abc")
    for stop in ("killed", "shutdown"):
        jobdir = tmp_path / stop
        journal = Journal.open(jobdir, SiteSpider.name, "run-1")
        for url in (a, b, c):
            journal.scheduled(url, "page", 0)
        journal.mark_committed([a, b])
        journal.confirmation_planned(a, 1, "a-changed", "a-before")
        journal.confirmation_planned(b, 0, "b-changed", "b-before")
        journal.confirmation_planned(c, 0, "c-changed", "c-before")  # its page's fetch was never committed
        journal.mark_confirmed([b])
        if stop == "shutdown":
            journal.close("shutdown")
        else:
            journal._fh.close()  # SIGKILL: no close, nothing more written
        again = Journal.open(jobdir, SiteSpider.name, "run-2")
        assert again.resumed == ("paused" if stop == "shutdown" else "killed")
        assert [(p.url, p.depth, p.doc_id, p.previous_doc_id) for p in again.pending_confirmations()] == \
            [(a, 1, "a-changed", "a-before")]
        if stop == "killed":
            assert [p.url for p in again.pending] == [c]  # fetched again, and confirmed then if still changed
            # A kill between the commit holding a's confirmation and its journal line: the store's rows count.
            again.reconcile([a, b], [a])
            assert again.pending_confirmations() == []
        again.close("finished")


def _page(url: str, text: str) -> FetchedPage:
    body = f"<html><head><title>{text}</title></head><body><article><p>{text} " * 20 + "</p></article></body></html>"
    page = FetchedPage(url=url, final_url=url, redirect_chain=[], status=200, body=body.encode(),
                       headers=[("Content-Type", "text/html; charset=utf-8")], fetched_at=utcnow(), resolved_ip=None)
    return page


def test_a_commit_failing_while_confirmations_wait_stops_the_crawl_and_marks_nothing_done(tmp_path):
    """confirm_after_s keeps the spider open and commits on spider_idle (flush_waiting). A commit that fails there
    (the store's staging directory cannot be written: a real OSError, as on a full disk) must stop the crawl
    (CloseSpider, not DontCloseSpider), commit nothing afterwards even once the store is writable again (a
    second try would store the fetch rows twice), and leave the job for the next run to fetch the page again."""
    a, b = "http://site.test/a.html", "http://site.test/b.html"
    store = Store.open(tmp_path / "store", create=True)
    jobdir = store.root / "_jobs" / "t"
    with store.run("crawl", serial="crawl t") as run:
        journal = Journal.open(jobdir, SiteSpider.name, run.run_id)
        session = CrawlSession(store, run, crawl_id="t", spider=SiteSpider.name, settings_hash="h", journal=journal,
                               confirm_after_s=60)
        spider = SiteSpider(start_urls=[a], session=session)
        for url in (a, b):
            journal.scheduled(url, "page", 0)
        for url in (a, b):
            page = _page(url, url)
            session.page_document(page, build_document(url=url, body=page.body, source="crawl", crawl_id="t",
                                                       run_id=run.run_id, fetched_at=page.fetched_at,
                                                       headers=page.headers, http_status=200))
            if url == a:
                session.flush()  # a's chunk is committed
        staging = store.root / "_tmp"
        staging.rmdir()
        staging.write_text("not a directory")  # b's chunk cannot be staged
        spider._confirm_timers["x"] = None  # as if a confirmation were waiting for its delay
        with pytest.raises(CloseSpider) as stop:
            spider._on_idle()
        assert stop.value.reason == COMMIT_FAILED
        assert isinstance(session.commit_error, OSError)
        staging.unlink()
        staging.mkdir()  # writable again: the run still commits nothing more
        stats = session.close("finished")
        assert stats["exit_code"] == 1
    assert [r["url"] for r in _fetch_rows(store)] == [a]
    assert jobdir.exists() and not (jobdir / "paused").exists()  # kept, and not trusted as a graceful stop
    again = Journal.open(jobdir, SiteSpider.name, "run-2")
    assert again.resumed == "killed"
    assert [p.url for p in again.pending] == [b]  # fetched again by the next run, and only it
    again.close(None)


def _fetch_rows(store) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for path in store.snapshot().paths("fetches") for row in pq.read_table(path).to_pylist()]
