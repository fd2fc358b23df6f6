"""The resume journal's ordering contract, decided without a network: a page's links are journaled
before the page can be committed, so a kill between the two never loses them."""

from __future__ import annotations

import json
from types import SimpleNamespace

from scrapy.http import HtmlResponse, Request

from provenance.crawlers.items import FetchedPage
from provenance.crawlers.journal import JOURNAL, Journal
from provenance.crawlers.spiders import SiteSpider


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
