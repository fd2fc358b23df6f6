"""Downloader middlewares and the DNS resolver of a provenance crawl.

NetGuardMiddleware          the SSRF guard: refuses requests whose host resolves to a
                            non-public address (netguard.check_url) before anything is sent
GuardedResolver             the same rule on the address Twisted actually connects to
RobotsTxtMiddleware         Scrapy's, fixed so that every request waiting for a host's
                            robots.txt is checked against it, and recording per page which
                            AI agents ([crawl] ai_agents) that robots.txt disallows
TdmRepMiddleware            fetches each host's /.well-known/tdmrep.json once per crawl, like
                            robots.txt, and records per page which of its rules applies
ProvenanceDownloaderMiddleware
                            sends conditional requests for URLs the store already holds and
                            notes, per response, when it came and its headers as received
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware as ScrapyRobotsTxtMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.extensions.throttle import AutoThrottle
from scrapy.http import Request as ScrapyRequest
from scrapy.http.request import NO_CALLBACK
from scrapy.resolver import CachingThreadedResolver
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.internet.threads import deferToThread

from provenance.crawlers import netguard
from provenance.crawlers.sitepolicy import TDMREP_PATH, TdmRepFile, robots_columns

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

log = logging.getLogger("provenance.crawl")

# request.meta key holding what ProvenanceDownloaderMiddleware saw (survives redirects: meta is copied).
META_RECEIVED = "provenance_received"
# request.meta key holding what the host's robots.txt and tdmrep.json say about the request's URL: fetch-row columns
# (sitepolicy.py). Replaced, never updated in place: redirect hops share the first request's meta values.
META_POLICY = "provenance_policy"
# request.meta key marking the confirmation fetch of a page the crawl found changed (session.py, confirm_after_s):
# sent without If-None-Match / If-Modified-Since, its links not followed.
META_CONFIRM = "provenance_confirm"


def _add_policy(request: Request, columns: dict) -> None:
    request.meta[META_POLICY] = {**(request.meta.get(META_POLICY) or {}), **columns}


async def await_shared(deferred: Deferred):
    """The result of a Deferred that several callers wait on, leaving it in place for the next one."""
    mine: Deferred = Deferred()

    def relay(result):
        mine.callback(result)
        return result  # leave the result for the next waiter

    deferred.addCallback(relay)
    return await maybe_deferred_to_future(mine)


class _PerHost:
    """One value per host, computed once; requests arriving while it is computed each wait for it.

    Each waiter gets its own Deferred: awaiting one shared Deferred from asyncio consumes its
    result (the bug RobotsTxtMiddleware works around below).
    """

    def __init__(self):
        self.values: dict[str, object] = {}

    def pending(self, key: str) -> bool:
        return isinstance(self.values.get(key), Deferred)

    def start(self, key: str) -> None:
        self.values[key] = Deferred()

    def set(self, key: str, value) -> None:
        waiting = self.values.get(key)
        self.values[key] = value
        if isinstance(waiting, Deferred):
            waiting.callback(value)

    async def get(self, key: str):
        value = self.values[key]
        return await await_shared(value) if isinstance(value, Deferred) else value


class RefusedRequest(IgnoreRequest):
    """Raised for a request the SSRF guard refuses; the request's errback records it as 'refused'."""


class RefusedLookup(DNSLookupError):
    """The resolver's refusal (a host that re-resolved to a forbidden address after the first check)."""


class NetGuardMiddleware:
    """Refuse private, loopback, link-local, multicast, reserved and unspecified addresses (after DNS).

    ``PROVENANCE_ALLOW_PRIVATE`` (crawl.allow_private, --allow-private) opts in to
    private, loopback and link-local addresses. Host decisions are cached for the crawl.
    """

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.allow_private = crawler.settings.getbool("PROVENANCE_ALLOW_PRIVATE")
        self._refusals: dict[tuple[str, int | None], netguard.RefusedAddress | None] = {}  # per host

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> NetGuardMiddleware:
        return cls(crawler)

    def _decide(self, url: str) -> netguard.RefusedAddress | None:
        """Runs in a thread: getaddrinfo blocks."""
        try:
            netguard.check_url(url, self.allow_private)
        except netguard.RefusedAddress as exc:
            return exc
        except (OSError, UnicodeError):
            return None  # does not resolve: let the download fail as a DNS error, recorded as such
        return None

    async def process_request(self, request: Request, spider=None) -> None:
        parts = urlparse_cached(request)
        try:
            key = (parts.hostname or "", parts.port)
        except ValueError:  # a port that is not a number
            key = (parts.netloc, None)
        if parts.scheme not in netguard.ALLOWED_SCHEMES or not key[0]:
            refusal = self._decide(request.url)  # refuses without resolving anything
        elif key in self._refusals:
            refusal = self._refusals[key]
        else:
            refusal = await maybe_deferred_to_future(deferToThread(self._decide, request.url))
            self._refusals[key] = refusal
        if refusal is not None:
            # The cached decision is per host; the message names this request's URL.
            message = str(netguard.RefusedAddress(request.url, refusal.reason, refusal.address, refusal.can_opt_in))
            self.crawler.stats.inc_value("provenance/refused")
            log.warning("%s", message)
            raise RefusedRequest(message)


class GuardedResolver(CachingThreadedResolver):
    """Scrapy's caching resolver, refusing forbidden addresses at connection time (DNS rebinding)."""

    allow_private = False

    @classmethod
    def from_crawler(cls, crawler, reactor):
        resolver = super().from_crawler(crawler, reactor)
        resolver.allow_private = crawler.settings.getbool("PROVENANCE_ALLOW_PRIVATE")
        return resolver

    def getHostByName(self, name: str, timeout=()):  # noqa: N802 (Twisted's name)
        d = super().getHostByName(name, timeout)
        d.addCallback(self._check, name)
        return d

    def _check(self, address: str, name: str) -> str:
        problem = netguard.address_problem(address, self.allow_private)
        if problem is not None:
            raise RefusedLookup(f"refused: {name} resolved to {problem}")
        return address


class RobotsTxtMiddleware(ScrapyRobotsTxtMiddleware):
    """Scrapy's robots.txt middleware, fixed for requests that arrive while robots.txt is loading, and
    recording, for every page, which AI agents (``PROVENANCE_AI_AGENTS``) the same parsed robots.txt
    disallows, with that file's status and sha256 (no second request: the body Scrapy parsed is hashed).

    The fix: Scrapy (2.13 and later) has those requests await the one shared Deferred of the
    host's parser. Under the asyncio reactor that means turning it into an asyncio
    Future, which consumes its result: the first waiter got the parser and every
    other one got None ("no robots.txt") and was fetched unchecked. We run Twisted's
    own reactor (see settings.py), where this does not happen, but keep the fix so
    that switching reactors cannot silently break robots.txt. Each waiter gets its
    own Deferred, fired with the parser.
    """

    def __init__(self, crawler: Crawler):
        super().__init__(crawler)
        self.ai_agents = [a.strip() for a in crawler.settings.getlist("PROVENANCE_AI_AGENTS") if a.strip()]
        self._files: dict[str, tuple[int, str]] = {}  # netloc -> (status, sha256) of the robots.txt parsed

    async def robot_parser(self, request: Request):
        pending = self._parsers.get(urlparse_cached(request).netloc)
        if isinstance(pending, Deferred):
            return await await_shared(pending)
        return await super().robot_parser(request)

    async def _parse_robots(self, response: Response, netloc: str, *args) -> None:
        self._files[netloc] = (response.status, hashlib.sha256(response.body).hexdigest())
        await super()._parse_robots(response, netloc, *args)

    def process_request_2(self, rp, request: Request) -> None:
        if rp is not None and self.ai_agents and request.meta.get("provenance_kind") == "page":
            status, sha256 = self._files.get(urlparse_cached(request).netloc, (None, None))
            _add_policy(request, robots_columns(rp, status, sha256, request.url, self.ai_agents))
        super().process_request_2(rp, request)


class TdmRepMiddleware:
    """Each host's ``/.well-known/tdmrep.json``, fetched once per crawl, and the rule that applies to each page.

    Fetched as Scrapy fetches robots.txt: through the engine's downloader, in the
    host's slot (its delay and concurrency apply), at robots.txt's priority, never
    for a host the SSRF guard refuses, and only where robots.txt allows it (so robots.txt
    is still the first request to a host). The download starts with the host's first page
    request; a page waits for it, if at all, only once its own response is in. Pages get the fetch-row columns of
    ``TdmRepFile.columns`` (sitepolicy.py); a file that is missing, malformed or fails
    to download is recorded as such and never stops the crawl.
    """

    DOWNLOAD_PRIORITY = ScrapyRobotsTxtMiddleware.DOWNLOAD_PRIORITY

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self._files = _PerHost()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> TdmRepMiddleware:
        return cls(crawler)

    def process_request(self, request: Request, spider=None) -> None:
        if request.meta.get("provenance_kind") != "page":
            return
        parts = urlparse_cached(request)
        if parts.scheme in netguard.ALLOWED_SCHEMES and parts.netloc not in self._files.values:
            self._files.start(parts.netloc)
            Deferred.fromCoroutine(self._fetch(f"{parts.scheme}://{parts.netloc}{TDMREP_PATH}", parts.netloc))

    async def process_response(self, request: Request, response: Response, spider=None) -> Response:
        netloc = urlparse_cached(request).netloc
        if request.meta.get("provenance_kind") == "page" and netloc in self._files.values:
            found: TdmRepFile = await self._files.get(netloc)
            _add_policy(request, found.columns(request.url))
        return response

    async def _fetch(self, url: str, netloc: str) -> None:
        # robots.txt is obeyed for it too (it waits for the host's robots.txt, which is read first).
        request = ScrapyRequest(url, priority=self.DOWNLOAD_PRIORITY, callback=NO_CALLBACK,
                                meta={"provenance_kind": "tdmrep"})
        try:
            response = await self.crawler.engine.download_async(request)
            found = TdmRepFile.from_response(response.status, response.body)
        except IgnoreRequest as exc:
            found = TdmRepFile("robots_denied" if "robots.txt" in str(exc) else "error", problems=[str(exc)[:300]])
        except Exception as exc:  # DNS, timeout, too large: recorded with the pages, never fatal
            found = TdmRepFile.failed(f"{type(exc).__name__}: {exc}")
        self.crawler.stats.inc_value(f"provenance/tdmrep/{found.status}")
        self._files.set(netloc, found)


class ProvenanceDownloaderMiddleware:
    """Conditional requests for known URLs; the received time and headers of every response.

    Scrapy's HttpCacheMiddleware is not used: it would answer from a local cache,
    while we want the origin's own 304 and to record it.
    """

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ProvenanceDownloaderMiddleware:
        return cls(crawler)

    def process_request(self, request: Request, spider=None) -> None:
        # Redirect hops inherit the first request's conditional headers (Scrapy copies headers), which is
        # right: the stored version was recorded under the first URL.
        if "redirect_urls" in request.meta or request.meta.get("provenance_kind") != "page":
            return
        if request.meta.get(META_CONFIRM):  # a confirmation fetch wants the body as served now, never a 304
            return
        session = getattr(self.crawler.spider, "session", None)
        known = session.known.get(request.url) if session is not None else None
        if known is None:
            return
        if known.etag:
            request.headers.setdefault(b"If-None-Match", known.etag.encode("latin-1", "replace"))
        if known.last_modified:
            request.headers.setdefault(b"If-Modified-Since", known.last_modified.encode("latin-1", "replace"))

    def process_response(self, request: Request, response: Response, spider=None) -> Response:
        request.meta[META_RECEIVED] = {
            "fetched_at": datetime.now(timezone.utc),
            # As received: in order of first appearance, repeated headers kept as separate entries,
            # Content-Encoding still present (HttpCompressionMiddleware removes it after decoding).
            "headers": [(name.decode("latin-1"), value.decode("latin-1"))
                        for name, values in response.headers.items() for value in values],
            "ip": str(response.ip_address) if response.ip_address is not None else None,
        }
        return response


class ConditionalAutoThrottle(AutoThrottle):
    """AutoThrottle that counts a 304 Not Modified as a normal answer, and lets a host's first answer set the pace.

    Scrapy's AutoThrottle lets only 200 responses lower the download delay (error
    pages are small and fast, and would otherwise talk it into hammering a failing
    site). A nightly re-crawl is mostly 304s: with that rule the delay never leaves
    AUTOTHROTTLE_START_DELAY, and 200 unchanged pages took 4 minutes instead of 7 s.
    A 304 is the server's healthy answer to our conditional request, so it may set
    the pace like a 200.

    The start delay is a guess made before the host has answered anything. Scrapy
    only halves it per answer, and robots.txt (the first request to every host) is
    often a 404 that may not lower it at all, so every crawl waited a whole start
    delay before its first page: a one-page crawl spent 1 of its 3 seconds there.
    Here the host's first healthy answer (a 200 or 304, or robots.txt answered
    without a server error) replaces the guess with the delay its latency calls for
    (latency / target concurrency); later answers adjust it as Scrapy does.
    """

    def __init__(self, crawler):
        super().__init__(crawler)
        # Slots (one per host) that have had a healthy answer. Scrapy's Slot takes no weak references,
        # so ids: one reused by a later slot only makes that slot adapt the ordinary, slower way.
        self._measured: set[int] = set()

    def _adjust_delay(self, slot, latency, response):
        healthy = response.status in (200, 304) or (
            response.status < 500 and urlparse_cached(response).path in ("/robots.txt", TDMREP_PATH))
        if healthy and id(slot) not in self._measured:
            self._measured.add(id(slot))
            slot.delay = min(max(self.mindelay, latency / self.target_concurrency), self.maxdelay)
            # Sending the first request already scheduled the slot's next one a whole start delay later (Scrapy's
            # "prevent burst" step). Drop that: the downloader reschedules it right after this signal, with the
            # new delay.
            if getattr(slot, "latercall", None) is not None:
                slot.latercall.cancel()
                slot.latercall = None
            return
        if response.status == 304:
            response = response.replace(status=200)
        super()._adjust_delay(slot, latency, response)
