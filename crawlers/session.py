"""One crawl's bookkeeping, independent of Scrapy: what the store already knows, what each fetch
turned out to be, and committing documents, fetch rows and integrity tags together (one log entry).

Outcomes (the ``fetches.outcome`` column), for each page fetch:

  new                 a 200 whose URL the store did not know: stored
  changed             a 200 whose content differs from the latest known version of the URL: stored
                      with previous_doc_id = that version (not stored again if it equals an older one)
  unchanged           a 200 whose document (same URL, same bytes) is already stored
  not_modified        a 304 to our conditional request: doc_id is the known version, nothing stored
  non_html            a non-HTML body when crawl.store_non_html is false (and every sitemap fetched)
  integrity_mismatch  URL lists: the body matches neither the expected raw nor text sha256
  not_found           the server answered 404 Not Found or 410 Gone (a broken link): an answer, not a failure
  robots_denied       robots.txt disallows the URL; nothing sent
  refused             the SSRF guard refused the address; nothing sent
  error               anything else (other HTTP 4xx/5xx, DNS, timeout, too large, ...); ``error`` says which

With ``[crawl] confirm_after_s`` set, every page found changed (its content differs from the URL's latest known
version: ``changed``, or an ``integrity_mismatch`` that changed) is fetched once more in the same run, after a
delay drawn at random between confirm_after_s / 2 and confirm_after_s, without conditional headers: the
*confirmation fetch*. Its row has ``confirmation = true`` and one of the outcomes above, by the same rules: the
changed version again is ``unchanged``, the version before it (the edit was undone) is ``changed`` naming that
earlier document, new bytes are ``changed`` and stored. Confirmations do not count as pages (stats
``confirmations``, ``confirmed_same``, ``confirmed_reverted``, ``confirmed_other``, ``confirmations_failed``).

Only ``error`` (and ``integrity_mismatch``) make a run partial (exit 3): not_found, robots_denied and refused
are what the site or the crawl's policy said about a URL, recorded and counted, and a site with broken links
must not fail every scheduled crawl.
"""

from __future__ import annotations

import bisect
import json
import logging
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import provenance
from provenance import exitcodes
from provenance.crawlers import known_index
from provenance.crawlers.items import FetchedPage
from provenance.crawlers.journal import url_key
from provenance.crawlers.known_index import URL_HOST_SQL
from provenance.crawlers.sitepolicy import POLICY_COLUMNS
from provenance.documents import DocumentSink, domains_of, existing_doc_ids
from provenance.progress import Progress
from provenance.sql import CAPTURE_OUTCOMES, sql_string
from provenance.store import Run, Store, StoreLocked, file_sha256, safe_name, utcnow

log = logging.getLogger("provenance.crawl")

# Outcomes that mean "we have the page's content" (stored now or before).
FETCHED = ("new", "changed", "unchanged", "not_modified", "non_html", "integrity_mismatch")
# HTTP statuses that say "no such page": recorded as the outcome not_found, not as a failed fetch.
NOT_FOUND_STATUSES = (404, 410)
# A commit at least this often, so a kill loses little even on a slow crawl.
FLUSH_INTERVAL_S = 60.0
FLUSH_BYTES = 64 * 1024 * 1024

# Confirmation delays: unpredictable (the OS's randomness, not a seeded generator), so an attacker who knows the
# crawl's schedule and confirm_after_s still cannot time a revert to fall after the confirmation.
_DELAYS = random.SystemRandom()

INTEGRITY_DETECTOR = "url_list_integrity"
INTEGRITY_PLUGIN = "provenance-crawl"
INTEGRITY_VERSION = "1"


@dataclass(frozen=True)
class Known:
    """The latest version of a URL the store holds: what conditional requests and 'changed' compare with."""

    doc_id: str
    etag: str | None
    last_modified: str | None
    raw_sha256: str
    text_sha256: str | None


# The latest version per URL: the newest of (documents stored, fetches that confirmed a document), so a
# page that went back to an older version (A -> B -> A) is compared with A, not B. {scope} keeps the URLs on the
# crawl's sites (``known_scope``). It filters the documents joined for their headers by the same test of their own
# URL: a doc_id hashes its document's URL, so the document a fetch row names has that row's URL. ``indexed`` is the
# URL version index's rows on the crawl's sites and ``documents`` and ``fetches`` the files it does not cover
# (``crawlers/known_index.py``); without an index, ``indexed`` is empty and they are every file.
_KNOWN_SQL = f"""
WITH idx AS (SELECT * FROM indexed WHERE {{scope}}),
seen AS (
    SELECT url, doc_id, seen_at AS fetched_at FROM idx
    UNION ALL
    SELECT url, doc_id, fetched_at FROM documents WHERE {{scope}}
    UNION ALL
    SELECT url, doc_id, fetched_at FROM fetches
    WHERE doc_id IS NOT NULL AND outcome IN ({", ".join(repr(o) for o in CAPTURE_OUTCOMES)}) AND ({{scope}})
),
latest AS (
    SELECT url, arg_max(doc_id, coalesce(fetched_at, TIMESTAMPTZ '1970-01-01 00:00:00+00')) AS doc_id
    FROM seen GROUP BY url
)
SELECT l.url, d.doc_id, d.etag, d.last_modified, d.raw_sha256, d.text_sha256
FROM latest l JOIN (SELECT DISTINCT ON (doc_id) doc_id, etag, last_modified, raw_sha256, text_sha256
                    FROM (SELECT doc_id, etag, last_modified, raw_sha256, text_sha256 FROM idx WHERE documented
                          UNION ALL
                          SELECT doc_id, etag, last_modified, raw_sha256, text_sha256 FROM documents WHERE {{scope}})
                   ) d USING (doc_id)
"""

# URLs this crawl_id fetched successfully before: a re-crawl requests them again (conditionally), so a page
# answered with 304 does not hide the pages only it links to.
_PREVIOUS_URLS_SQL = f"""
SELECT url FROM fetches
WHERE crawl_id = ? AND outcome IN ({", ".join(repr(o) for o in FETCHED)})
GROUP BY url ORDER BY min(fetched_at), url
"""


KNOWN_MEMORY_MB = 512  # DuckDB's limit while it works out every URL's latest version (it spills beyond)
KNOWN_BATCH_ROWS = 65_536
# Up to this many sites, a URL is kept when it contains one of them (its host ends with its site, so it does):
# a substring test per site is cheaper than parsing the host, until there are many sites.
KNOWN_SCOPE_SUBSTRING_SITES = 16


def crawl_sites(urls: Iterable[str]) -> list[str]:
    """The sites (registered domains) of a crawl's seeds: every page it fetches is on one of them (link following
    and sitemap entries stay on them, a URL list is its own seeds). Each spelled as the seed gives it and, for a
    URL that is not ASCII, as Scrapy requests it (IDNA), which is how a stored crawl URL spells it."""
    from scrapy import Request

    sites = set()
    for url in urls:
        sites.add(domains_of(url)[1])
        if not url.isascii():
            try:
                sites.add(domains_of(Request(url).url)[1])
            except (TypeError, ValueError):  # not a URL Scrapy can request: the crawl cannot fetch it either
                pass
    sites.discard(None)
    return sorted(sites)


def known_scope(con, sites: list[str] | None) -> str:
    """An SQL condition on ``url`` that holds for every URL on one of ``sites`` (None: for every URL). It may keep a
    few others (a site named in a path): those only cost a little room."""
    if sites is None:
        return "true"
    if not sites:
        return "false"
    if len(sites) <= KNOWN_SCOPE_SUBSTRING_SITES:
        return " OR ".join(f"contains(lower(url), {sql_string(site)})" for site in sites)
    con.execute("CREATE OR REPLACE TEMP TABLE crawl_sites AS SELECT unnest(?::VARCHAR[]) AS site", [sites])
    labels = f"string_split({URL_HOST_SQL}, '.')"
    # A host is on a site of n labels when its last n labels are that site.
    return " OR ".join(f"array_to_string({labels}[-{n}:], '.') IN (SELECT site FROM crawl_sites)"
                       for n in sorted({site.count(".") + 1 for site in sites}))


class KnownVersions:
    """The latest known version of every URL the store holds on the crawl's sites, looked up by URL as a crawl
    fetches, in memory that does not grow with the store.

    A dict of them took 11.6 GB and 120 s to build at the start of a crawl of a 10M-document store. Instead
    DuckDB works them out under ``KNOWN_MEMORY_MB`` (spilling to the scratch directory), sorted by URL, into
    an uncompressed Arrow IPC file in the run's scratch directory (``_tmp/<run_id>-known/``, which a writer
    that finds the store free deletes if the crawl was killed); the crawl memory-maps it and a lookup is a
    binary search over its URL column (DuckDB and Python both order strings by code point). The versions this
    crawl stores go into a dict over it: they grow with the crawl, not the store.
    """

    COLUMNS = ("doc_id", "etag", "last_modified", "raw_sha256", "text_sha256")

    def __init__(self, table=None, directory: Path | None = None):
        self._own: dict[str, Known] = {}
        self._directory = directory
        self._urls, self._rows, self._firsts = [], [], []
        if table is not None:
            for batch in table.to_batches():
                if batch.num_rows:
                    urls = batch.column("url")
                    self._urls.append(urls)
                    self._rows.append([batch.column(c) for c in self.COLUMNS])
                    self._firsts.append(urls[0].as_py())

    @classmethod
    def load(cls, con, directory: Path, sites: list[str] | None = None) -> KnownVersions:
        """Work the versions out on ``con`` (with the documents and fetches views) into ``directory``, for the
        URLs on ``sites`` (None: every URL)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "known.arrow"
        con.execute(f"SET memory_limit = '{KNOWN_MEMORY_MB}MB'")
        con.execute("SET temp_directory = ?", [str(directory / "spill")])
        sql = _KNOWN_SQL.format(scope=known_scope(con, sites))
        reader = con.sql(f"{sql} ORDER BY url").to_arrow_reader(KNOWN_BATCH_ROWS)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
        return cls(pa.ipc.open_file(pa.memory_map(str(path))).read_all(), directory)

    def _stored(self, url: str) -> Known | None:
        i = bisect.bisect_right(self._firsts, url) - 1
        if i < 0:
            return None
        urls = self._urls[i]
        lo, hi = 0, len(urls)
        while lo < hi:
            mid = (lo + hi) // 2
            if urls[mid].as_py() < url:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(urls) or urls[lo].as_py() != url:
            return None
        return Known(*(column[lo].as_py() for column in self._rows[i]))

    def get(self, url: str, default=None) -> Known | None:
        known = self._own.get(url)
        if known is None:
            known = self._stored(url)
        return default if known is None else known

    def __setitem__(self, url: str, known: Known) -> None:
        self._own[url] = known

    def close(self) -> None:
        """Drop the memory map and delete the scratch directory."""
        self._urls, self._rows, self._firsts = [], [], []
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


def load_known(store: Store, crawl_id: str, directory: Path,
               sites: list[str] | None = None) -> tuple[KnownVersions, list[str]]:
    """(latest known version of each URL on ``sites``, URLs previously fetched by ``crawl_id``), read with DuckDB;
    ``directory`` is the crawl's scratch directory for the first (see ``KnownVersions``). ``sites`` (see
    ``crawl_sites``) keeps a crawl's start in proportion to the sites it crawls, not to the store; None reads
    every URL. The versions come from the store's URL version index (its rows on ``sites``) and the files it does
    not cover; when those have grown, a new index is written first (``crawlers/known_index.py``)."""
    import duckdb

    from provenance.sql import parquet_view

    snapshot = store.snapshot()
    if not (snapshot.paths("documents") or snapshot.paths("fetches")):
        return KnownVersions(), []  # a new store: nothing to read, no DuckDB to start
    index = known_index.open_index(snapshot)
    if known_index.should_rewrite(index, known_index.uncovered_rows(snapshot, index)):
        index = known_index.write_index(snapshot, index, directory) or index
    while True:
        con = known_index.connect_uncovered(snapshot, index)
        try:
            known_index.indexed_view(con, index, sites)
            known = KnownVersions.load(con, directory, sites)
            parquet_view(con, "fetches", "fetches", snapshot.paths("fetches"))  # every fetch, for the URLs before
            previous = [r[0] for r in con.execute(_PREVIOUS_URLS_SQL, [crawl_id]).fetchall()]
            return known, previous
        except duckdb.IOException as exc:
            if index is None:
                raise
            # Another crawl replaced the index and deleted a run of it before this one opened it: read the files.
            log.info(f"the URL version index changed while this crawl read it ({exc}); reading the store's files")
            index = None
        finally:
            con.close()


# How a failure is named in fetches.error and stats.errors_by_kind: exception class names anywhere in the
# cause chain first (Scrapy wraps Twisted's errors), then words of the message.
_KINDS_BY_CLASS = (("dnslookup", "dns"), ("cannotresolvehost", "dns"), ("timeout", "timeout"),
                   ("timedout", "timeout"), ("connectionrefused", "connection_refused"),
                   ("responseneverreceived", "connection_lost"), ("connectionlost", "connection_lost"),
                   ("connectiondone", "connection_lost"))
_KINDS_BY_MESSAGE = (("max redirections", "too_many_redirects"),
                     ("download max size", "too_large"),  # Content-Length, or the body as it streams
                     ("download_maxsize", "too_large"),  # the body as it decompresses (bombs)
                     ("offsite", "offsite_redirect"))


def error_kind(exc: BaseException | None, status: int | None = None) -> str:
    """A short, stable name for what went wrong: http_404, dns, timeout, too_large, ..."""
    if status is not None and status >= 400:
        return f"http_{status}"
    if exc is None:
        return "unknown"
    names = [type(e).__name__.lower() for e in exception_chain(exc)]
    for needle, kind in _KINDS_BY_CLASS:
        if any(needle in name for name in names):
            return kind
    message = str(exc).lower()
    for needle, kind in _KINDS_BY_MESSAGE:
        if needle in message:
            return kind
    return type(exc).__name__


def exception_chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and what caused it (__cause__/__context__, and Twisted's ``reasons`` lists)."""
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        # Twisted's ResponseNeverReceived etc. keep their causes in .reasons
        reasons = getattr(exc, "reasons", None)
        if reasons:
            out.extend(getattr(r, "value", r) for r in reasons)
        exc = exc.__cause__ or exc.__context__
    return out


class CrawlSession:
    """Records every fetch of one crawl run and commits documents, fetch rows and tags in chunks.

    Each commit carries the documents *and* the fetch rows of the same pages (we
    flush on our own cadence, not DocumentSink's), then the URLs are marked done
    in the journal, so a resumed crawl re-requests exactly what was not committed.
    """

    def __init__(self, store: Store, run: Run, *, crawl_id: str, spider: str, settings_hash: str,
                 journal, flush_rows: int = 2000, url_list: Path | None = None, confirm_after_s: float = 0.0,
                 seed_urls: Iterable[str] | None = None):
        self.store, self.run = store, run
        self.crawl_id, self.spider, self.settings_hash = crawl_id, spider, settings_hash
        self.journal = journal
        self.flush_rows = max(1, int(flush_rows))
        # What the store knows of the URLs on the seeds' sites, and on those of the requests an earlier run of this
        # job left to replay (seed_urls None: of every URL).
        sites = None if seed_urls is None else crawl_sites(
            [*seed_urls, *(p.url for p in journal.pending), *(c.url for c in journal.confirmations.values())])
        self.known, self.previous_urls = load_known(store, crawl_id, store.root / "_tmp" / f"{run.run_id}-known",
                                                    sites)
        snapshot = store.snapshot()
        # DocumentSink must never flush on its own: see the class docstring.
        self.sink = DocumentSink(run, crawl_id, existing_doc_ids(snapshot), flush_rows=sys.maxsize,
                                 flush_bytes=sys.maxsize)
        self.counts: Counter = Counter()
        self.errors_by_kind: Counter = Counter()
        self.bytes = 0
        self.started = time.monotonic()
        self.started_at = utcnow()
        self._fetch_rows: list[dict] = []
        self._tag_rows: list[dict] = []
        self._done_urls: list[str] = []
        self._pending_bytes = 0
        self._last_flush = time.monotonic()
        # Live on a terminal, a line every few seconds off one (provenance/progress.py); the worker enters it
        # around the crawl and sets queue_size (the scheduler's pending requests) once the engine exists.
        self.progress = Progress(f"crawl {crawl_id}", "pages")
        self.queue_size: Callable[[], int | None] = lambda: None
        # URL-list integrity tags: keyed by the list file's hash, written once per document.
        self.list_hash = file_sha256(url_list)[:16] if url_list else None
        self.tag_key = safe_name(f"v{INTEGRITY_VERSION}-p{provenance.__version__}-{self.list_hash}") \
            if self.list_hash else None
        self.url_list = str(url_list) if url_list else None
        self._tagged = self._already_tagged(snapshot) if self.tag_key else set()
        # Confirmation fetches: url_key -> what is to be confirmed, planned and not yet answered. The spider sets
        # schedule_confirmation(confirmation, delay_s) to send the request when the delay has passed.
        self.confirm_after_s = float(confirm_after_s or 0.0)
        self.confirmations: dict[str, Confirmation] = {}
        self.schedule_confirmation: Callable[[Confirmation, float], None] | None = None
        self._confirmed_urls: list[str] = []
        # A commit (or a journal line) that failed: nothing more is committed in this run, the spider stops the
        # crawl (on_commit_failure), and the worker fails the run with this error once Scrapy has stopped.
        self.commit_error: BaseException | None = None
        self.on_commit_failure: Callable[[BaseException], None] | None = None
        if hasattr(journal, "on_failure"):
            journal.on_failure = self._commit_failed

    # ----- confirmation fetches ------------------------------------------------------------
    def plan_confirmation(self, url: str, depth: int, doc_id: str | None, previous_doc_id: str | None,
                          journal: bool = True) -> None:
        """Fetch ``url`` once more after a random delay (confirm_after_s / 2 to confirm_after_s); once per URL."""
        key = url_key(url)
        if not self.confirm_after_s or key in self.confirmations:
            return
        confirmation = Confirmation(url, depth, doc_id, previous_doc_id)
        self.confirmations[key] = confirmation
        if journal:
            self.journal.confirmation_planned(url, depth, doc_id, previous_doc_id)
        self.counts["confirmations_planned"] += 1
        if self.schedule_confirmation is not None:
            self.schedule_confirmation(confirmation, _DELAYS.uniform(self.confirm_after_s / 2, self.confirm_after_s))

    def resume_confirmations(self) -> None:
        """Plan again, with new delays, the confirmations an earlier run of this job left unanswered (journal.py).

        With confirm_after_s 0 in this run they are dropped (counted in ``confirmations_dropped``)."""
        for pending in self.journal.pending_confirmations():
            if self.confirm_after_s:
                self.plan_confirmation(pending.url, pending.depth, pending.doc_id, pending.previous_doc_id,
                                       journal=False)
            else:
                self.counts["confirmations_dropped"] += 1

    def _confirmed(self, url: str, doc_id: str | None) -> None:
        """A confirmation fetch came back: how its body compares with the change it confirms."""
        confirmation = self.confirmations.pop(url_key(url), None)
        if doc_id is None:
            self.counts["confirmations_failed"] += 1
        elif confirmation is None:  # a second copy (restored from Scrapy's queue after a stop): recorded, not judged
            return
        elif doc_id == confirmation.doc_id:
            self.counts["confirmed_same"] += 1
        elif doc_id == confirmation.previous_doc_id:
            self.counts["confirmed_reverted"] += 1
        else:
            self.counts["confirmed_other"] += 1

    # ----- outcomes -----------------------------------------------------------------------
    def page_document(self, page: FetchedPage, row: dict) -> str:
        """A 200 (or other 2xx) body built into ``row`` by build_document; returns the outcome."""
        known = self.known.get(page.url)
        doc_id = row["doc_id"]
        stored = self.sink.add(row)
        if stored:
            outcome = "changed" if known is not None else "new"
            self.counts["stored"] += 1
            self._pending_bytes += row.get("raw_length") or 0
        else:
            outcome = "unchanged" if known is None or known.doc_id == doc_id else "changed"
        if outcome in ("new", "changed"):
            self.known[page.url] = Known(doc_id, row.get("etag"), row.get("last_modified"), row["raw_sha256"],
                                         row.get("text_sha256"))
        if self._integrity_mismatch(page, doc_id, row["raw_sha256"], row.get("text_sha256")):
            outcome = "integrity_mismatch"
        self._record(page.url, page.final_url, page.fetched_at, page.status, outcome, doc_id=doc_id,
                     previous_doc_id=known.doc_id if known else None, nbytes=len(page.body), policy=page.policy,
                     confirmation=page.confirmation)
        if page.confirmation:
            self._confirmed(page.url, doc_id)
        elif known is not None and known.doc_id != doc_id:  # changed: is the change still there a while later?
            self.plan_confirmation(page.url, page.depth, doc_id, known.doc_id)
        return outcome

    def page_not_modified(self, page: FetchedPage) -> str:
        known = self.known.get(page.url)
        if known is None:  # a 304 we did not ask for: nothing to confirm
            return self.page_failure(page.url, page.final_url, "unexpected_304", "304 without a known version",
                                     status=page.status, fetched_at=page.fetched_at, confirmation=page.confirmation)
        outcome = "not_modified"
        if self._integrity_mismatch(page, known.doc_id, known.raw_sha256, known.text_sha256):
            outcome = "integrity_mismatch"
        self._record(page.url, page.final_url, page.fetched_at, page.status, outcome, doc_id=known.doc_id,
                     previous_doc_id=known.doc_id, nbytes=0, policy=page.policy, confirmation=page.confirmation)
        if page.confirmation:  # a 304 to a request without validators: the server says it is what we hold
            self._confirmed(page.url, known.doc_id)
        return outcome

    def page_non_html(self, page: FetchedPage) -> str:
        """crawl.store_non_html = false: the fetch is recorded, the body is not kept."""
        self._record(page.url, page.final_url, page.fetched_at, page.status, "non_html", nbytes=len(page.body),
                     policy=page.policy, confirmation=page.confirmation)
        if page.confirmation:
            self._confirmed(page.url, None)
        return "non_html"

    def page_failure(self, url: str, final_url: str | None, kind: str, message: str, *, status: int | None = None,
                     outcome: str = "error", fetched_at: datetime | None = None, nbytes: int | None = None,
                     policy: dict | None = None, confirmation: bool = False) -> str:
        """A page that was not fetched: robots_denied, refused, not_found or error (``kind`` names the error)."""
        outcome = _not_found_or(outcome, status)
        error = None if outcome == "robots_denied" else f"{kind}: {message}"
        if outcome == "error":
            self.errors_by_kind[kind] += 1
        self._record(url, final_url, fetched_at or utcnow(), status, outcome, error=error, nbytes=nbytes,
                     policy=policy, confirmation=confirmation)
        if confirmation:
            self._confirmed(url, None)
        return outcome

    def sitemap_fetched(self, url: str, final_url: str, status: int, nbytes: int) -> None:
        """A sitemap (or robots.txt read for its Sitemap: lines): crawl control, recorded but never stored."""
        self.counts["sitemaps"] += 1
        self._record(url, final_url, utcnow(), status, "non_html", nbytes=nbytes, page=False)

    def sitemap_failure(self, url: str, kind: str, message: str, status: int | None = None,
                        outcome: str = "error") -> None:
        self.counts["sitemaps"] += 1
        outcome = _not_found_or(outcome, status)
        if outcome == "error":
            self.errors_by_kind[kind] += 1
        elif outcome in ("refused", "not_found"):
            self.counts[outcome] += 1
        self._record(url, None, utcnow(), status, outcome, page=False,
                     error=None if outcome == "robots_denied" else f"{kind}: {message}")

    # ----- integrity ----------------------------------------------------------------------
    def _integrity_mismatch(self, page: FetchedPage, doc_id: str, raw_sha256: str, text_sha256: str | None) -> bool:
        expected = page.expected_sha256
        if not expected or expected in (raw_sha256, text_sha256):
            return False
        if doc_id not in self._tagged:
            self._tagged.add(doc_id)
            self._tag_rows.append({
                "doc_id": doc_id, "plugin": INTEGRITY_PLUGIN, "plugin_version": provenance.__version__,
                "detector": INTEGRITY_DETECTOR, "detector_version": INTEGRITY_VERSION,
                "category": "provenance", "tag": "integrity_mismatch", "score": None,
                "evidence": json.dumps({"url": page.url, "expected_sha256": expected,
                                        "actual_raw_sha256": raw_sha256, "actual_text_sha256": text_sha256,
                                        "url_list": self.url_list}),
                "run_id": self.run.run_id, "config_hash": self.list_hash, "created_at": utcnow(),
            })
        return True

    def _already_tagged(self, snapshot) -> set[str]:
        ids: set[str] = set()
        for entry in snapshot.entries("tags"):
            if entry.meta.get("detector") == INTEGRITY_DETECTOR and entry.meta.get("tag_key") == self.tag_key:
                ids.update(pq.read_table(self.store.root / entry.path, columns=["doc_id"])
                           .column("doc_id").to_pylist())
        return ids

    # ----- recording and committing --------------------------------------------------------
    def _record(self, url, final_url, fetched_at, status, outcome, *, doc_id=None, previous_doc_id=None,
                error=None, nbytes=None, page: bool = True, policy: dict | None = None,
                confirmation: bool = False) -> None:
        self._fetch_rows.append({
            "run_id": self.run.run_id, "crawl_id": self.crawl_id, "url": url, "final_url": final_url,
            "fetched_at": fetched_at, "http_status": status, "outcome": outcome, "doc_id": doc_id,
            "previous_doc_id": previous_doc_id, "bytes": nbytes, "error": error, "source": "crawl",
            # robots.txt per AI agent and tdmrep.json, as the middlewares evaluated them (sitepolicy.py)
            **dict.fromkeys(POLICY_COLUMNS), **(policy or {}), "confirmation": confirmation,
        })
        self.bytes += nbytes or 0
        if confirmation:  # a second fetch of a page already counted: journaled apart, not a page
            self._confirmed_urls.append(url)
            self.counts["confirmations"] += 1
        else:
            self._done_urls.append(url)
        if page and not confirmation:
            self.counts["pages"] += 1
            self.counts[outcome] += 1
            self.progress.set(done=self.counts["pages"], stored=self.counts["stored"], queue=self.queue_size(),
                              errors=sum(self.errors_by_kind.values()))
        if (len(self._fetch_rows) >= self.flush_rows or self._pending_bytes >= FLUSH_BYTES
                or time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S):
            self.flush()

    def flush(self) -> None:
        """Commit buffered documents with their fetch rows and integrity tags in one log entry, then journal.

        One entry, so that no crash can keep a mismatching document without its integrity tag.

        A commit that fails (disk full, a StoreConflict, ...) does not raise here: it is called from Scrapy's
        pipeline, callbacks and signal handlers, which would log it and go on crawling. It is kept in
        ``commit_error``, the crawl is stopped (``on_commit_failure``), nothing more is committed or journaled
        as done, and the worker fails the run with it. What was buffered stays uncommitted: the journal
        does not mark it done, so the next run of the job fetches it again.
        """
        if self.commit_error is not None:
            return
        try:
            if self._fetch_rows:
                self.sink.add_side_rows("fetches", self._fetch_rows, safe_name(self.crawl_id))
            if self._tag_rows:
                self.sink.add_side_rows("tags", self._tag_rows, f"{INTEGRITY_DETECTOR}/{self.tag_key}",
                                        meta={"detector": INTEGRITY_DETECTOR, "tag_key": self.tag_key})
            self.sink.flush()
        except Exception as exc:
            self._commit_failed(exc)
            return
        self.journal.mark_committed(self._done_urls)
        self.journal.mark_confirmed(self._confirmed_urls)
        self._fetch_rows, self._tag_rows, self._done_urls, self._confirmed_urls = [], [], [], []
        self._pending_bytes, self._last_flush = 0, time.monotonic()

    def flush_waiting(self) -> None:
        """Commit what is buffered, if anything: the crawl is idle, waiting for confirmation delays to pass, and a
        kill meanwhile must not lose the changed pages those confirmations are about."""
        if self._fetch_rows or self._tag_rows:
            self.flush()

    def _commit_failed(self, exc: BaseException) -> None:
        """The first failed commit or journal write: remembered, and the crawl is stopped."""
        if self.commit_error is not None:
            return
        self.commit_error = exc
        log.info("a commit failed (%s: %s); stopping the crawl", type(exc).__name__, exc)
        if self.on_commit_failure is not None:
            self.on_commit_failure(exc)

    def close(self, finish_reason: str | None, scrapy_stats: dict | None = None) -> dict:
        """Commit what is left and return the run's stats (also set as run.stats)."""
        try:
            self.flush()
        finally:
            self.known.close()
        # After a failed commit the job stays as a kill leaves it: not removed (as 'finished' would), and without
        # the 'paused' marker (Scrapy's queue lacks the pages whose commit failed); the next run requests again
        # every URL whose fetch row is not in the store.
        self.journal.close(finish_reason if self.commit_error is None else None)
        c = self.counts
        errors = sum(self.errors_by_kind.values())
        # Answered confirmations count: a resumed run may have had only those left to do.
        fetched = sum(c[o] for o in FETCHED) + c["confirmations"] - c["confirmations_failed"]
        if self.commit_error is not None:  # the worker fails the run with the error (exit 1, or 75 for a conflict)
            exit_code = exitcodes.LOCKED if isinstance(self.commit_error, StoreLocked) else exitcodes.FAILURE
        elif finish_reason == "shutdown":
            exit_code = 130  # stopped by a signal: committed work is kept, the next run resumes
        elif fetched == 0:
            exit_code = exitcodes.FAILURE  # nothing fetched
        elif errors or c["integrity_mismatch"]:  # work that failed; not_found/robots_denied/refused did not
            exit_code = exitcodes.PARTIAL
        else:
            exit_code = exitcodes.OK
        scrapy_stats = scrapy_stats or {}
        stats = {
            "crawl_id": self.crawl_id, "run_id": self.run.run_id, "spider": self.spider,
            "settings_hash": self.settings_hash, "finish_reason": finish_reason,
            "resumed": getattr(self.journal, "resumed", None),
            "pages": c["pages"], "stored": self.sink.written,
            **{o: c[o] for o in ("new", "changed", "unchanged", "not_modified", "non_html", "integrity_mismatch",
                                 "not_found", "robots_denied", "refused")},
            "errors": errors, "errors_by_kind": dict(sorted(self.errors_by_kind.items())),
            # confirmation fetches (confirm_after_s): answered, by what they showed; planned and left unanswered
            # by a stop (the next run of the job plans them again), or dropped by a resumed run with 0
            **{k: c[k] for k in ("confirmations", "confirmed_same", "confirmed_reverted", "confirmed_other",
                                 "confirmations_failed", "confirmations_dropped")},
            "confirmations_pending": len(self.confirmations),
            "sitemaps": c["sitemaps"], "bytes": self.bytes,
            "requests_sent": scrapy_stats.get("downloader/request_count", 0),
            "started_at": self.started_at.isoformat(), "finished_at": utcnow().isoformat(),
            "duration_s": round(time.monotonic() - self.started, 3),
            "spider_s": round(float(scrapy_stats.get("elapsed_time_seconds") or 0.0), 3),  # spider open to close
            "exit_code": exit_code,
        }
        self.run.stats = stats
        return stats


@dataclass(frozen=True)
class Confirmation:
    """A confirmation fetch to make: the page, and the change it is to confirm (doc_id replaced previous_doc_id)."""

    url: str
    depth: int
    doc_id: str | None
    previous_doc_id: str | None


def _not_found_or(outcome: str, status: int | None) -> str:
    return "not_found" if outcome == "error" and status in NOT_FOUND_STATUSES else outcome


def failure_text(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__

