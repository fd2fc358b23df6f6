"""Crawling and archive import (installed as ``provenance.crawlers``).

Entry points used by the CLI:
  CrawlRequest / run_crawl(store, request) -> CrawlResult    Scrapy crawls (site, sitemap, URL list);
                                                             see docs/CRAWLING.md and run.py
  provenance.crawlers.warc.ingest_warc(...)                  WARC/WET import, called by provenance.ingest
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CrawlRequest:
    start_urls: list[str] = field(default_factory=list)
    url_file: Path | None = None
    sitemaps: list[str] = field(default_factory=list)
    crawl_id: str | None = None
    shard: tuple[int, int] | None = None  # (K, N): only the list's hosts in shard K of N (1 <= K <= N)
    settings: dict = field(default_factory=dict)  # the [crawl] section merged with CLI overrides


class CrawlError(Exception):
    """A crawl that could not run (bad request, worker failure); ``exit_code`` is what the CLI exits with."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class CrawlResult:
    run_id: str
    crawl_id: str
    stats: dict
    exit_code: int

    def summary_line(self) -> str:
        s = self.stats
        line = (f"crawl {self.crawl_id}: {s.get('pages', 0)} pages, {s.get('stored', 0)} stored, "
                f"{s.get('unchanged', 0) + s.get('not_modified', 0)} unchanged, {s.get('errors', 0)} errors")
        for key in ("not_found", "robots_denied", "refused", "integrity_mismatch"):
            if s.get(key):
                line += f", {s[key]} {key.replace('_', ' ')}"
        if s.get("confirmations"):
            line += (f", {s['confirmations']} confirmation fetches ({s.get('confirmed_reverted', 0)} reverted, "
                     f"{s.get('confirmed_same', 0)} kept the change)")
        return line + f" in {s.get('duration_s', 0):.1f}s (run {self.run_id})"


def run_crawl(store, request: CrawlRequest) -> CrawlResult:
    from provenance.crawlers.run import run_crawl as _run

    return _run(store, request)
