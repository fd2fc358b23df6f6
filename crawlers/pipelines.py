"""DocumentWriterPipeline: every fetched page becomes a documents row, built by build_document.

Settings (Scrapy conventions: prefixed, with an _ENABLED switch):

  PROVENANCE_ENABLED           False turns the pipeline off (NotConfigured); pages are then only fetched
  PROVENANCE_STORE_NON_HTML    False: non-HTML bodies are recorded in fetches as 'non_html', not stored
  PROVENANCE_EXTRACT_WORKERS   processes that extract the text (the costly part of build_document, about
                               10 ms a page with trafilatura); 0 extracts inline in the crawl's event loop
  PROVENANCE_EXTRACT_START_AFTER
                               pages extracted inline before those processes start (default 0: at once)
  PROVENANCE_EXTRACTOR         the text extractor, a name in provenance.extract.EXTRACTORS (default: its default)

The spider passes the crawl's ``CrawlSession`` as a spider argument; the
pipeline hands each built row to it, and the session decides the outcome and
commits (see session.py).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ProcessPoolExecutor

from scrapy.exceptions import NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from provenance.crawlers.extraction import start_pool
from provenance.crawlers.items import FetchedPage
from provenance.documents import build_document, header_value
from provenance.extract import extract, get_extractor, looks_like_html

log = logging.getLogger("provenance.crawl")


def _deferred(future: Future) -> Deferred:
    """A Deferred fired in the reactor thread when ``future`` (from the process pool) completes."""
    from twisted.internet import reactor

    d: Deferred = Deferred()

    def fire(done: Future) -> None:
        exc = done.exception()
        d.errback(Failure(exc)) if exc is not None else d.callback(done.result())

    future.add_done_callback(lambda done: reactor.callFromThread(fire, done))
    return d


class DocumentWriterPipeline:
    def __init__(self, crawler):
        settings = crawler.settings
        if not settings.getbool("PROVENANCE_ENABLED", True):
            raise NotConfigured("PROVENANCE_ENABLED is false")
        self.crawler = crawler
        self.store_non_html = settings.getbool("PROVENANCE_STORE_NON_HTML", True)
        self.workers = settings.getint("PROVENANCE_EXTRACT_WORKERS", 0)
        self.start_after = settings.getint("PROVENANCE_EXTRACT_START_AFTER", 0)
        self.extracted = 0  # pages that went to extraction, inline or not
        self.extractor = get_extractor(settings.get("PROVENANCE_EXTRACTOR")).name  # unknown: fails here, not per page
        self.pool: ProcessPoolExecutor | None = None
        self._own_pool = False
        self._ready: Future | None = None
        self.session = None

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    def open_spider(self, spider=None) -> None:
        spider = spider or self.crawler.spider
        self.session = spider.session
        # The crawl process starts the pool before Scrapy (worker.py); start one here only if it did not.
        self.pool = getattr(self.session, "extract_pool", None)
        if self.pool is None and self.workers > 0 and self.start_after <= 0:
            self._start_pool()
        log.info("DocumentWriterPipeline: text extraction %s", "in worker processes" if self.pool else
                 f"inline for the first {self.start_after} pages" if self.workers > 0 else "inline")

    def _start_pool(self, lazily: bool = False) -> None:
        self.pool = start_pool(self.workers, self.extractor)
        self._own_pool = True
        if lazily:  # pages are extracted inline until a process has started and loaded the extractor
            self._ready = self.pool.submit(int)

    def close_spider(self, spider=None) -> None:
        if self.session is not None:
            self.session.flush()  # the last commit belongs to the crawl (the session commits nothing after)
        if self.pool is not None and self._own_pool:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None

    async def process_item(self, item, spider=None):
        if not isinstance(item, FetchedPage):
            return item
        session = self.session
        if item.status == 304:
            session.page_not_modified(item)
            return item
        if not self.store_non_html and not looks_like_html(header_value(item.headers, "content-type"), item.body):
            session.page_non_html(item)
            return item
        known = session.known.get(item.url)
        kwargs = dict(
            url=item.url, body=item.body, source="crawl", crawl_id=session.crawl_id, run_id=session.run.run_id,
            fetched_at=item.fetched_at, final_url=item.final_url, http_status=item.status, headers=item.headers,
            redirect_chain=item.redirect_chain, resolved_ip=item.resolved_ip,
            previous_doc_id=known.doc_id if known is not None else None,
            spider=session.spider, settings_hash=session.settings_hash,
            metadata={"depth": item.depth, **({"confirmation": True} if item.confirmation else {})},
            extractor=self.extractor,
        )
        self.extracted += 1
        if self.pool is None and self.workers > 0 and self.extracted > self.start_after:
            # A crawl big enough for extraction off the event loop (extraction.py).
            log.info("DocumentWriterPipeline: text extraction moves to %d process(es) after %d pages inline",
                     self.workers, self.start_after)
            self._start_pool(lazily=True)
        try:
            if self.pool is not None and (self._ready is None or self._ready.done()):
                # Only the extraction crosses to the pool: the body goes there, the text comes back.
                extracted = self.pool.submit(extract, item.body, header_value(item.headers, "content-type"),
                                             item.final_url or item.url, self.extractor)
                kwargs["extracted"] = await maybe_deferred_to_future(_deferred(extracted))
            row = build_document(**kwargs)
        except Exception as exc:  # a broken worker process, or a bug: record it, keep crawling
            log.error("building the document for %s failed: %s", item.url, exc)
            session.page_failure(item.url, item.final_url, "build_failed", f"{type(exc).__name__}: {exc}",
                                 status=item.status, fetched_at=item.fetched_at, nbytes=len(item.body))
            return item
        session.page_document(item, row)
        return item
