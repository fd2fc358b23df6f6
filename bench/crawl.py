"""Crawl throughput: our crawl against a bare Scrapy spider, same site, same settings, same run.

    python bench/crawl.py [--rounds 3] [--pages 300] [--workers N] [--extractor NAME] [--generated]

The site is ../shared's git-htmldocs (197 pages reachable from index.html)
when present, else a generated 300-page site, served on 127.0.0.1.

* ours: provenance.crawlers.run_crawl into a fresh store: Scrapy plus the
  SSRF guard, conditional requests, provenance capture, text extraction
  (trafilatura, in extraction processes), Parquet commits and the resume
  journal.
* bare: a Scrapy spider with the very same Scrapy settings (minus our
  components) that follows the same same-site links and does nothing with
  the bodies.

Both run as child processes, as a real crawl does. Reported per round:
pages/s over the crawl itself (spider open to close) and end to end
(process start to exit, imports included); then the medians and the ratio
ours/bare, for two scenarios:

1. loopback at full speed (no latency, 16 requests in flight): the crawl is
   CPU-bound, so text extraction (about 20 ms a page with trafilatura) is
   what separates us from a spider that ignores the bodies; the ratio grows
   with the cores the extraction processes get;
2. a server that takes 100 ms per answer, 4 requests per host (the [crawl]
   default): what a polite crawl of a real site looks like, where the
   network, not the CPU, sets the pace.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance.crawlers.settings import extract_workers
from provenance.sites import copy_site, generate_site, serve

REPO = Path(__file__).resolve().parents[1]
SHARED_SITE = REPO.parent / "shared" / "data" / "sites" / "gitster__git-htmldocs"


SCENARIOS = [  # (label, server latency in seconds, requests in flight per host)
    ("loopback, no latency, 16 per host", 0.0, 16),
    ("100 ms latency, 4 per host (default)", 0.1, 4),
]


def bench_settings(per_host: int, workers: int | None, extractor: str | None = None) -> dict:
    """[crawl] settings for a loopback benchmark: private addresses allowed, no throttling."""
    return {"allow_private": True, "autothrottle": False, "concurrency": 16,
            "concurrency_per_host": per_host, "extract_workers": workers,
            **({"extractor": extractor} if extractor else {})}


# ----- the bare spider (runs in a child: python bench/crawl.py --bare URL SETTINGS_JSON) ---------------
def run_bare(start_url: str, crawl: dict, jobdir: str) -> dict:
    import scrapy
    from scrapy.crawler import CrawlerProcess
    from scrapy.http import HtmlResponse
    from scrapy.linkextractors import LinkExtractor

    from provenance.crawlers.settings import effective, scrapy_settings
    from provenance.documents import domains_of

    site = domains_of(start_url)[1]

    class BareSpider(scrapy.Spider):
        name = "bare"
        allowed_domains = [site]
        pages = 0

        async def start(self):
            yield scrapy.Request(start_url, callback=self.parse)

        def parse(self, response):
            BareSpider.pages += 1
            if isinstance(response, HtmlResponse):
                for link in LinkExtractor(deny_extensions=[]).extract_links(response):
                    if domains_of(link.url)[1] == site:
                        yield response.follow(link.url.split("#")[0], self.parse)

    settings = scrapy_settings(effective(crawl), jobdir)
    # The same Scrapy settings, without our components.
    for key in [k for k in settings if k.startswith("PROVENANCE_")]:
        del settings[key]
    settings["DOWNLOADER_MIDDLEWARES"] = {}
    settings["ITEM_PIPELINES"] = {}
    settings.pop("TWISTED_DNS_RESOLVER", None)
    settings.pop("DNS_RESOLVER", None)
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(BareSpider)
    process.crawl(crawler)
    process.start()
    stats = crawler.stats.get_stats()
    return {"pages": BareSpider.pages, "crawl_s": stats["elapsed_time_seconds"]}


# ----- one round of each ----------------------------------------------------------------------------
def round_ours(start_url: str, crawl: dict, tmp: Path) -> dict:
    from provenance.crawlers import CrawlRequest, run_crawl
    from provenance.store import Store

    store = Store.open(tmp / f"store-{time.monotonic_ns()}", create=True)
    t0 = time.perf_counter()
    result = run_crawl(store, CrawlRequest(start_urls=[start_url], settings=crawl))
    wall = time.perf_counter() - t0
    assert result.exit_code == 0, result.stats
    # spider_s: spider open to close (the final commit included), the window Scrapy's own
    # elapsed_time_seconds measures for the bare spider too.
    # Pages with a response, as the bare spider counts them (robots.txt denials have none).
    pages = result.stats["pages"] - result.stats["robots_denied"] - result.stats["refused"]
    return {"pages": pages, "stored": result.stats["stored"],
            "crawl_s": result.stats["spider_s"], "wall_s": wall}


def round_bare(start_url: str, crawl: dict, tmp: Path) -> dict:
    out = tmp / f"bare-{time.monotonic_ns()}.json"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--bare", start_url, json.dumps(crawl), str(out)], check=True)
    wall = time.perf_counter() - t0
    return {**json.loads(out.read_text()), "wall_s": wall}


def run_scenario(label: str, site: Path, latency_s: float, per_host: int, workers, rounds: int,
                 tmp: Path, extractor: str | None = None) -> tuple[float, float]:
    crawl = bench_settings(per_host, workers, extractor)
    ours, bare = [], []
    print(f"-- {label}")
    with serve(site, delay_s=latency_s) as base:
        start = base + "index.html"
        round_bare(start, crawl, tmp)  # warm-up: page cache, imports
        for i in range(rounds):
            bare.append(round_bare(start, crawl, tmp))
            ours.append(round_ours(start, crawl, tmp))
            b, o = bare[-1], ours[-1]
            print(f"   round {i + 1}: bare {b['pages']} pages in {b['crawl_s']:.2f}s crawl / {b['wall_s']:.2f}s "
                  f"wall; ours {o['pages']} pages ({o['stored']} stored) in {o['crawl_s']:.2f}s crawl / "
                  f"{o['wall_s']:.2f}s wall")

    def rate(runs, key):
        return statistics.median(r["pages"] / r[key] for r in runs)

    for key, what in (("crawl_s", "crawl (spider open to close)"), ("wall_s", "end to end (process)")):
        b, o = rate(bare, key), rate(ours, key)
        print(f"   {what:<30} bare scrapy {b:7.1f} pages/s   ours {o:7.1f} pages/s   ratio {o / b:6.1%}")
    return rate(bare, "crawl_s"), rate(ours, "crawl_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pages", type=int, default=300, help="pages of the generated site (no shared data)")
    parser.add_argument("--workers", type=int, default=None, help="extraction processes [default: auto]")
    parser.add_argument("--extractor", help="[crawl] extractor of our crawl [default: its default]")
    parser.add_argument("--generated", action="store_true", help="use the generated site even if shared exists")
    parser.add_argument("--bare", nargs=3, metavar=("URL", "SETTINGS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        url, crawl, out = args.bare
        with tempfile.TemporaryDirectory() as jobdir:
            Path(out).write_text(json.dumps(run_bare(url, json.loads(crawl), jobdir)))
        return

    with tempfile.TemporaryDirectory(prefix="provenance-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if SHARED_SITE.is_dir() and not args.generated:
            site, label = copy_site(SHARED_SITE, tmp / "site"), "git-htmldocs (../shared), 197 pages"
        else:
            generate_site(tmp / "site", pages=args.pages)
            site, label = tmp / "site", f"generated, {args.pages} pages"
        workers = extract_workers(bench_settings(4, args.workers))
        print(f"site: {label}; cpus: {os.cpu_count()}; extraction processes: {workers}; "
              f"extractor: {args.extractor or 'default'}; rounds: {args.rounds}")
        summary = [(name, *run_scenario(name, site, latency, per_host, args.workers, args.rounds, tmp,
                                        args.extractor))
                   for name, latency, per_host in SCENARIOS]
    print("summary (crawl pages/s, medians; target: ours >= 90% of bare)")
    for name, bare, ours in summary:
        print(f"   {name:<38} bare {bare:7.1f}   ours {ours:7.1f}   ratio {ours / bare:6.1%}")


if __name__ == "__main__":
    main()
