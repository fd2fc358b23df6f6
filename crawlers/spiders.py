"""The three spiders: a site (same-site link following), sitemaps, and a URL list.

All of them yield one ``FetchedPage`` per page response (the pipeline turns it
into a document) and send every failure to ``session.page_failure``; none of
them touches the store directly. Requests are made through ``page_request``,
which applies the page limit, skips URLs already requested in this job and
writes the request to the resume journal first.

Confirmation fetches ([crawl] confirm_after_s, planned by the session for each
page found changed) are sent by a reactor timer once their random delay has
passed, through the engine like any request (the SSRF guard, robots.txt,
per-host concurrency and AutoThrottle apply), without conditional headers and
outside the page limit. While a timer waits and nothing else is left to do, the
spider stays open (DontCloseSpider on spider_idle) and commits what it holds.

A commit that fails (session.flush: disk full, a store conflict) closes the
spider at once (finish reason ``commit_failed``); the worker then fails the run.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from urllib.parse import urldefrag, urlsplit

import scrapy
from scrapy import signals
from scrapy.exceptions import CloseSpider, DontCloseSpider, IgnoreRequest
from scrapy.http import HtmlResponse, Request, Response
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.spiders import SitemapSpider
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.gz import gunzip, gzip_magic_number

from provenance.crawlers.items import FetchedPage
from provenance.crawlers.journal import url_key
from provenance.crawlers.links import link_urls
from provenance.crawlers.middlewares import META_CONFIRM, META_POLICY, META_RECEIVED, RefusedLookup, RefusedRequest
from provenance.crawlers.session import error_kind, exception_chain, failure_text
from provenance.documents import domains_of

log = logging.getLogger("provenance.crawl")

# Scrapy's finish reason of a crawl stopped by a failed commit (CrawlSession.flush); the run fails with the error.
COMMIT_FAILED = "commit_failed"


def site_domains(urls) -> list[str]:
    """Registered domains of ``urls``: what 'same site' means for link following and sitemap entries."""
    return sorted({domains_of(u)[1] for u in urls if domains_of(u)[1]})


class ProvenanceSpider(scrapy.Spider):
    # 304 answers to our conditional requests must reach parse_page (HttpErrorMiddleware drops non-2xx).
    handle_httpstatus_list = [304]
    follow_links = False

    def __init__(self, session=None, max_pages: int | None = None, max_depth: int | None = None,
                 expected: dict[str, str] | None = None, **kwargs):
        super().__init__(**kwargs)
        if session is None:
            raise ValueError(f"{type(self).__name__} needs a CrawlSession: run it through "
                             "provenance.crawlers.run_crawl")
        self.session = session
        self.journal = session.journal
        self.max_pages = max_pages or None
        self.max_depth = max_depth
        self.expected = expected or {}  # url_key -> expected sha256 (URL lists)
        # Pages requested before a stop count toward max_pages after a resume.
        self.pages_requested = len(self.journal.requested)
        self._confirm_timers: dict[str, object] = {}  # url_key -> the reactor's DelayedCall that sends it
        session.schedule_confirmation = self._schedule_confirmation
        session.on_commit_failure = self._stop_after_commit_failure

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider._on_opened, signal=signals.spider_opened)
        crawler.signals.connect(spider._on_idle, signal=signals.spider_idle)
        crawler.signals.connect(spider._on_closed, signal=signals.spider_closed)
        return spider

    # ----- confirmation fetches -----------------------------------------------------------
    def _schedule_confirmation(self, confirmation, delay_s: float) -> None:
        from twisted.internet import reactor

        key = url_key(confirmation.url)
        if key not in self._confirm_timers:
            self._confirm_timers[key] = reactor.callLater(delay_s, self._send_confirmation, key, confirmation)

    def _send_confirmation(self, key: str, confirmation) -> None:
        self._confirm_timers.pop(key, None)
        if key not in self.session.confirmations:
            return  # answered meanwhile (a copy of the request restored from Scrapy's queue after a stop)
        request = Request(confirmation.url, callback=self.parse_page, errback=self.on_error, dont_filter=True,
                          meta={"provenance_kind": "page", META_CONFIRM: True, "depth": confirmation.depth,
                                "expected_sha256": self.expected.get(url_key(confirmation.url))})
        try:
            self.crawler.engine.crawl(request)
        except RuntimeError:  # the spider is closing (a stop): the next run of the job plans it again
            pass

    def _on_opened(self, spider=None) -> None:
        if spider is None or spider is self:
            self.session.resume_confirmations()  # those an earlier run of this job left unanswered

    def _on_idle(self, spider=None) -> None:
        if self._confirm_timers:
            self.session.flush_waiting()
            if getattr(self.session, "commit_error", None) is None:
                raise DontCloseSpider
        if getattr(self.session, "commit_error", None) is not None:
            raise CloseSpider(COMMIT_FAILED)

    def _stop_after_commit_failure(self, exc: BaseException) -> None:
        """A commit failed (session.flush): fetching more would only lose more, so the crawl stops now."""
        engine = getattr(getattr(self, "crawler", None), "engine", None)
        if engine is None or engine.spider is None:
            return  # not crawling (yet), or closing already: the worker fails the run either way
        done = deferred_from_coro(engine.close_spider_async(reason=COMMIT_FAILED))
        done.addErrback(lambda failure: log.debug("closing the spider: %s", failure.getErrorMessage()))

    def _on_closed(self, spider=None, reason=None) -> None:
        for call in self._confirm_timers.values():
            if call.active():
                call.cancel()
        self._confirm_timers.clear()

    # ----- requests ---------------------------------------------------------------------
    def page_request(self, url: str, depth: int, replay: bool = False) -> Request | None:
        url = urldefrag(url)[0]  # a fragment is not a different page
        if not replay:
            if self.max_pages and self.pages_requested >= self.max_pages:
                return None
            if self.follow_links and self.max_depth is not None and depth > self.max_depth:
                return None
            if not self.journal.should_request(url):
                return None
        self.pages_requested += 1
        self.journal.scheduled(url, "page", depth)
        # dont_filter: the journal is the one duplicate filter. Scrapy's would also drop a link to a page
        # some redirect already led to (and the redirect itself, the other way round).
        return Request(url, callback=self.parse_page, errback=self.on_error, dont_filter=True,
                       meta={"provenance_kind": "page", "depth": depth,
                             "expected_sha256": self.expected.get(url_key(url)) if self.expected else None})

    def replayed(self):
        """After a kill: the requests made but not committed before it, again (see journal.py)."""
        for pending in self.journal.pending:
            request = self.page_request(pending.url, pending.depth, replay=True) if pending.kind == "page" \
                else self.sitemap_request(pending.url, replay=True)
            if request is not None:
                yield request

    def sitemap_request(self, url: str, replay: bool = False) -> Request | None:
        return None

    def start_page_requests(self, urls):
        """Depth-0 requests for ``urls``, minus those refused (already requested, page limit)."""
        for url in urls:
            request = self.page_request(url, 0)
            if request is not None:
                yield request

    # ----- responses --------------------------------------------------------------------
    def parse_page(self, response: Response):
        # Links first: page_request journals each one ("s") before the page item can reach a commit that
        # marks this page done ("c"). The other way round, a kill between that commit and the links would
        # lose them: a resumed crawl does not fetch a committed page again, so it would never see its links.
        confirmation = bool(response.meta.get(META_CONFIRM))
        links = [] if confirmation else list(self.followed_links(response))  # the first fetch followed them
        received = response.meta.get(META_RECEIVED) or {}
        chain = list(response.meta.get("redirect_urls") or [])
        yield FetchedPage(
            url=chain[0] if chain else response.url,
            final_url=response.url,
            redirect_chain=chain,
            status=response.status,
            headers=received.get("headers") or [(k.decode("latin-1"), v.decode("latin-1"))
                                                for k, vs in response.headers.items() for v in vs],
            body=response.body,
            fetched_at=received.get("fetched_at") or datetime.now(timezone.utc),
            resolved_ip=received.get("ip") or (str(response.ip_address) if response.ip_address else None),
            depth=response.meta.get("depth", 0),
            expected_sha256=response.meta.get("expected_sha256"),
            policy=response.meta.get(META_POLICY),
            confirmation=confirmation,
        )
        yield from links

    def followed_links(self, response: Response):
        """Requests for the same-site links of a page (site spider only), each journaled as it is made."""
        if not (self.follow_links and response.status == 200 and isinstance(response, HtmlResponse)):
            return
        depth = response.meta.get("depth", 0)
        # What LinkExtractor(deny_extensions=[]) returns, for less (links.py): every same-site link is fetched;
        # non-HTML bodies are stored raw (or only recorded, with crawl.store_non_html = false) and DOWNLOAD_MAXSIZE
        # bounds them. (Not LinkExtractor's allow_domains: it compares host:port, so it rejects every link of a
        # site served on an explicit port.)
        for url in link_urls(response):
            if domains_of(url)[1] not in self.allowed_domains:
                continue  # another site
            request = self.page_request(url, depth + 1)
            if request is not None:
                yield request

    def on_error(self, failure):
        """Errback of every request: robots denial, SSRF refusal, HTTP error, network error."""
        request = failure.request
        exc = failure.value
        response = getattr(exc, "response", None) if isinstance(exc, HttpError) else None
        meta = response.meta if response is not None else request.meta
        chain = list(meta.get("redirect_urls") or [])
        url = chain[0] if chain else request.url
        final_url = response.url if response is not None else None
        status = response.status if response is not None else None
        if isinstance(exc, RefusedRequest) or any(isinstance(e, RefusedLookup) for e in exception_chain(exc)):
            outcome, kind = "refused", "refused"
        elif isinstance(exc, IgnoreRequest) and "robots.txt" in str(exc):
            outcome, kind = "robots_denied", "robots_denied"
        else:
            outcome, kind = "error", error_kind(exc, status)
        if request.meta.get("provenance_kind") == "sitemap":
            self.session.sitemap_failure(url, kind, failure_text(exc), status=status, outcome=outcome)
            return
        received = meta.get(META_RECEIVED) or {}
        self.session.page_failure(url, final_url, kind, failure_text(exc), status=status, outcome=outcome,
                                  fetched_at=received.get("fetched_at") if response is not None else None,
                                  nbytes=len(response.body) if response is not None else None,
                                  policy=meta.get(META_POLICY), confirmation=bool(request.meta.get(META_CONFIRM)))


class SiteSpider(ProvenanceSpider):
    """Start URLs, then every same-site link (a/area href), breadth first, within max_depth and max_pages.

    Same site = the same registered domain (public suffix list) as a start URL. On a re-crawl, every URL
    this crawl_id fetched before is requested again too (conditionally), so pages answered with 304,
    whose links we cannot read, do not cut the crawl short.
    """

    name = "provenance-site"
    follow_links = True

    def __init__(self, start_urls=(), **kwargs):
        super().__init__(**kwargs)
        self.start_urls = list(start_urls)
        self.allowed_domains = site_domains(self.start_urls)

    async def start(self):
        for request in self.replayed():
            yield request
        for request in self.start_page_requests(self.start_urls):
            yield request
        # Every page this crawl fetched before, conditionally: a 304 start page carries no links.
        known = [url for url in self.session.previous_urls if domains_of(url)[1] in self.allowed_domains]
        for request in self.start_page_requests(known):
            yield request


class UrlListSpider(ProvenanceSpider):
    """Exactly the listed URLs, no link following; each may carry the sha256 its body should have."""

    name = "provenance-urls"

    def __init__(self, urls=(), **kwargs):
        super().__init__(**kwargs)
        self.urls = list(urls)

    async def start(self):
        for request in self.replayed():
            yield request
        for request in self.start_page_requests(self.urls):
            yield request


class SitemapCrawlSpider(ProvenanceSpider, SitemapSpider):
    """The pages sitemaps list: XML sitemaps and sitemap indexes (Scrapy's SitemapSpider), gzipped or not,
    plain-text sitemaps (one URL per line), and robots.txt ``Sitemap:`` lines when given a robots.txt URL.

    Entries on another site than the sitemap's are skipped, as the sitemaps protocol requires.
    """

    name = "provenance-sitemap"
    sitemap_rules = [("", "parse_page")]

    def __init__(self, sitemap_urls=(), **kwargs):
        super().__init__(**kwargs)
        self.sitemap_urls = list(sitemap_urls)
        self.allowed_domains = site_domains(self.sitemap_urls)

    async def start(self):
        for request in self.replayed():
            yield request
        for url in self.sitemap_urls:
            request = self.sitemap_request(url)
            if request is not None:
                yield request

    def sitemap_request(self, url: str, replay: bool = False) -> Request | None:
        if not replay and not self.journal.should_request(url):
            return None
        self.journal.scheduled(url, "sitemap", 0)
        return Request(url, callback=self._parse_sitemap, errback=self.on_error, dont_filter=True,
                       meta={"provenance_kind": "sitemap"})

    def sitemap_filter(self, entries):
        for entry in entries:
            if domains_of(entry.get("loc"))[1] in self.allowed_domains:
                yield entry

    def _parse_sitemap(self, response: Response):
        self.session.sitemap_fetched(response.url, response.url, response.status, len(response.body))
        depth = response.meta.get("depth", 0)
        text_urls = self._text_sitemap_urls(response)
        if text_urls is not None:
            requests = [Request(u, callback=self.parse_page) for u in text_urls
                        if domains_of(u)[1] in self.allowed_domains]
        else:
            requests = super()._parse_sitemap(response)
        for request in requests:
            if request.callback == self._parse_sitemap:
                mine = self.sitemap_request(request.url)
            else:
                mine = self.page_request(request.url, depth + 1)
            if mine is not None:
                yield mine

    def _text_sitemap_urls(self, response: Response) -> list[str] | None:
        """URLs of a plain-text sitemap (.txt or .txt.gz), or None when the body is XML or robots.txt."""
        if response.url.endswith("/robots.txt"):
            return None
        body = response.body
        if gzip_magic_number(response):
            try:
                body = gunzip(body, max_size=self._max_size)
            except Exception:  # too large or corrupt: let SitemapSpider report it
                return None
        text = body.decode("utf-8-sig", errors="replace").lstrip()
        path = urlsplit(response.url).path
        if text.startswith("<") or not (path.endswith((".txt", ".txt.gz")) or "text/plain" in
                                        response.headers.get(b"Content-Type", b"").decode("latin-1")):
            return None
        urls = []
        for line in text.splitlines():
            line = line.strip()
            if urlsplit(line).scheme in ("http", "https"):
                urls.append(line)
        return urls


SPIDERS = {"site": SiteSpider, "urls": UrlListSpider, "sitemap": SitemapCrawlSpider}
