"""Crawl throughput: our crawl against two Scrapy spiders, same site, same run.

    python bench/crawl.py [--rounds 3] [--copies 6] [--extractor NAME ...] [--workers N]
                          [--latency MS ...] [--generated [--pages 300]]
    python bench/crawl.py --fixed-cost [--rounds 5] [--extractor NAME ...]

The site is ../shared's git-htmldocs (197 pages reachable from index.html),
``--copies`` times under one root (6 copies: 1,183 pages), when present, else
a generated site, served on 127.0.0.1.

* ours: provenance.crawlers.run_crawl into a fresh store: Scrapy plus the
  SSRF guard, conditional requests, robots.txt, provenance capture, text
  extraction (each ``--extractor``: resiliparse, the fast path, and
  trafilatura, the quality path, by default), Parquet commits and the resume
  journal, with the [crawl] defaults except: private addresses allowed, no
  AutoThrottle, 16 requests per host.
* plain: a plain Scrapy spider that follows the same same-site links and
  ignores the bodies, with Scrapy's own defaults plus robots.txt obeyed and
  the same concurrency (16 in flight, 16 per host, no AutoThrottle; logging
  at WARNING, as ours).
* bare: the same spider with our Scrapy settings (reactor, breadth-first
  queues, JOBDIR, ...) minus our components: what our components cost.

All run as child processes, as a real crawl does, interleaved round by round.
Reported per round: pages/s over the crawl itself (spider open to close) and
end to end (process start to exit, imports included); then the medians and
ours as a share of each peer, at full loopback speed and with each
``--latency`` of the server (default 100 ms). Also the CPU time per page of each
crawler's processes (extraction processes included, the server excluded): on a
shared machine a steadier measure than pages/s, which other work slows down.

``--fixed-cost`` measures instead what a crawl costs whatever its size: ``provenance
crawl`` of a one-page site into a fresh store, wall time of the command, per extractor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance.sites import copy_site, generate_site, serve

REPO = Path(__file__).resolve().parents[1]
SHARED_SITE = REPO.parent / "shared" / "data" / "sites" / "gitster__git-htmldocs"
CONCURRENCY = 16  # in flight in all, and per host, for every crawler here


def bench_settings(workers: int | None, extractor: str) -> dict:
    """[crawl] settings of our crawl: the defaults, but private addresses allowed, no throttling, 16 per host."""
    return {"allow_private": True, "autothrottle": False, "concurrency": CONCURRENCY,
            "concurrency_per_host": CONCURRENCY, "extractor": extractor,
            **({"extract_workers": workers} if workers is not None else {})}


# ----- the peers (each runs in a child: python bench/crawl.py --peer NAME URL OUT) --------------------
def peer_settings(name: str, jobdir: str) -> dict:
    if name == "plain":
        return {"ROBOTSTXT_OBEY": True, "CONCURRENT_REQUESTS": CONCURRENCY,
                "CONCURRENT_REQUESTS_PER_DOMAIN": CONCURRENCY, "AUTOTHROTTLE_ENABLED": False,
                "LOG_LEVEL": "WARNING"}
    from provenance.crawlers.settings import effective, scrapy_settings

    # Our Scrapy settings, without our components.
    settings = scrapy_settings(effective(bench_settings(0, "resiliparse")), jobdir)
    for key in [k for k in settings if k.startswith("PROVENANCE_")]:
        del settings[key]
    settings["DOWNLOADER_MIDDLEWARES"] = {}
    settings["ITEM_PIPELINES"] = {}
    settings["EXTENSIONS"] = {}
    settings.pop("TWISTED_DNS_RESOLVER", None)
    settings.pop("DNS_RESOLVER", None)
    return settings


def run_peer(name: str, start_url: str, jobdir: str) -> dict:
    import scrapy
    from scrapy.crawler import CrawlerProcess
    from scrapy.http import HtmlResponse
    from scrapy.linkextractors import LinkExtractor

    from provenance.documents import domains_of

    site = domains_of(start_url)[1]

    class PeerSpider(scrapy.Spider):
        name = "peer"
        allowed_domains = [site]
        pages = 0

        async def start(self):
            yield scrapy.Request(start_url, callback=self.parse)

        def parse(self, response):
            PeerSpider.pages += 1
            if isinstance(response, HtmlResponse):
                for link in LinkExtractor(deny_extensions=[]).extract_links(response):
                    if domains_of(link.url)[1] == site:
                        yield response.follow(link.url.split("#")[0], self.parse)

    process = CrawlerProcess(peer_settings(name, jobdir))
    crawler = process.create_crawler(PeerSpider)
    process.crawl(crawler)
    process.start()
    stats = crawler.stats.get_stats()
    return {"pages": PeerSpider.pages, "crawl_s": stats["elapsed_time_seconds"]}


# ----- one round of each ----------------------------------------------------------------------------
def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (and theirs: extraction processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def round_ours(start_url: str, crawl: dict, tmp: Path) -> dict:
    from provenance.crawlers import CrawlRequest, run_crawl
    from provenance.store import Store

    store = Store.open(tmp / f"store-{time.monotonic_ns()}", create=True)
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    result = run_crawl(store, CrawlRequest(start_urls=[start_url], settings=crawl))
    wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    assert result.exit_code == 0, result.stats
    # spider_s: spider open to close (the final commit included), the window Scrapy's own
    # elapsed_time_seconds measures for the peers too.
    # Pages with a response, as the peers count them (robots.txt denials have none).
    pages = result.stats["pages"] - result.stats["robots_denied"] - result.stats["refused"]
    return {"pages": pages, "crawl_s": result.stats["spider_s"], "wall_s": wall, "cpu_s": cpu}


def round_peer(name: str, start_url: str, tmp: Path) -> dict:
    out = tmp / f"{name}-{time.monotonic_ns()}.json"
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, __file__, "--peer", name, start_url, str(out)], check=True)
    wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    return {**json.loads(out.read_text()), "wall_s": wall, "cpu_s": cpu}


def rate(runs: list[dict], key: str) -> float:
    return statistics.median(r["pages"] / r[key] for r in runs)


def run_scenario(label: str, site: Path, latency_s: float, extractors: list[str], workers, rounds: int,
                 tmp: Path) -> dict[str, dict[str, float]]:
    """{crawler: {"crawl_s": pages/s, "wall_s": pages/s}} (medians) for one scenario."""
    crawlers = ["plain", "bare", *[f"ours/{e}" for e in extractors]]
    runs: dict[str, list[dict]] = {c: [] for c in crawlers}
    print(f"-- {label}")
    with serve(site, delay_s=latency_s) as base:
        start = base + "index.html"
        round_peer("plain", start, tmp)  # warm-up: page cache, imports
        for i in range(rounds):
            for c in crawlers:
                runs[c].append(round_ours(start, bench_settings(workers, c.split("/")[1]), tmp)
                               if c.startswith("ours/") else round_peer(c, start, tmp))
            print(f"   round {i + 1}: " + "; ".join(
                f"{c} {runs[c][-1]['pages']} pages {runs[c][-1]['crawl_s']:.2f}s/{runs[c][-1]['wall_s']:.2f}s"
                for c in crawlers) + "  (crawl/wall)")
    medians = {c: {key: rate(runs[c], key) for key in ("crawl_s", "wall_s")} for c in crawlers}
    for c in crawlers:
        medians[c]["cpu_ms"] = statistics.median(1000 * r["cpu_s"] / r["pages"] for r in runs[c])
    for key, what in (("crawl_s", "crawl (spider open to close)"), ("wall_s", "end to end (process)")):
        print(f"   {what}: " + "   ".join(f"{c} {medians[c][key]:.1f}" for c in crawlers) + " pages/s")
    print("   CPU per page (all the crawler's processes): "
          + "   ".join(f"{c} {medians[c]['cpu_ms']:.2f}" for c in crawlers) + " ms")
    return medians


def fixed_cost(extractors: list[str], rounds: int, tmp: Path) -> None:
    """Wall time of `provenance crawl` of a one-page site into a fresh store, the extractors interleaved."""
    site = tmp / "one-page"
    site.mkdir()
    (site / "index.html").write_text("<html><head><title>One page</title></head><body><article><h1>One page</h1>"
                                     + "<p>A page with a paragraph of text for the extractor to find.</p>" * 5
                                     + "</article></body></html>")
    command = Path(sys.executable).with_name("provenance")
    walls: dict[str, list[float]] = {e: [] for e in extractors}
    print(f"one-page crawl, wall of `provenance crawl`; cpus: {os.cpu_count()}; load: {os.getloadavg()[0]:.2f}")
    with serve(site) as base:
        for i in range(rounds):
            for extractor in extractors:
                config = tmp / f"{extractor}.toml"
                config.write_text(f'[crawl]\nextractor = "{extractor}"\n')
                store = tmp / f"store-{time.monotonic_ns()}"
                t0 = time.perf_counter()
                subprocess.run([str(command), "crawl", base + "index.html", "--allow-private", "--store", str(store),
                                "--config", str(config)], check=True, stdout=subprocess.DEVNULL)
                walls[extractor].append(time.perf_counter() - t0)
            print(f"   round {i + 1}: " + "; ".join(f"{e} {walls[e][-1]:.2f}s" for e in extractors))
    print(f"   medians: " + "   ".join(f"{e} {statistics.median(walls[e]):.2f}s" for e in extractors)
          + f"   (load now: {os.getloadavg()[0]:.2f})")


def copies_site(site: Path, copies: int) -> Path:
    """``copies`` copies of git-htmldocs under one root, whose index.html links to each copy's."""
    site.mkdir()
    links = "".join(f'<li><a href="copy{i}/index.html">copy {i}</a></li>' for i in range(copies))
    (site / "index.html").write_text(f"<html><head><title>copies</title></head><body><ul>{links}</ul></body></html>")
    for i in range(copies):
        copy_site(SHARED_SITE, site / f"copy{i}")
    return site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="[default: 3; --fixed-cost: 5]")
    parser.add_argument("--copies", type=int, default=6, help="copies of git-htmldocs under one root [default: 6]")
    parser.add_argument("--pages", type=int, default=1200, help="pages of the generated site (no shared data)")
    parser.add_argument("--workers", type=int, default=None,
                        help="extraction processes of our crawl [default: chosen per extractor]")
    parser.add_argument("--extractor", action="append", choices=["resiliparse", "trafilatura"],
                        help="our crawl's [crawl] extractor, repeatable [default: resiliparse and trafilatura]")
    parser.add_argument("--latency", type=float, action="append",
                        help="server latency in ms of the second scenario, repeatable [default: 100]")
    parser.add_argument("--generated", action="store_true", help="use the generated site even if shared exists")
    parser.add_argument("--fixed-cost", action="store_true",
                        help="time `provenance crawl` of a one-page site instead (default: 5 rounds)")
    parser.add_argument("--peer", nargs=3, metavar=("NAME", "URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rounds_given = args.rounds is not None
    args.rounds = args.rounds or 3
    if args.peer:
        name, url, out = args.peer
        with tempfile.TemporaryDirectory() as jobdir:
            Path(out).write_text(json.dumps(run_peer(name, url, jobdir)))
        return

    extractors = args.extractor or ["resiliparse", "trafilatura"]
    if args.fixed_cost:
        with tempfile.TemporaryDirectory(prefix="provenance-bench-") as tmp_name:
            fixed_cost(extractors, args.rounds if args.rounds_given else 5, Path(tmp_name))
        return
    latencies = [0.0] + [ms / 1000 for ms in (args.latency or [100.0])]
    with tempfile.TemporaryDirectory(prefix="provenance-bench-") as tmp_name:
        tmp = Path(tmp_name)
        site = tmp / "site"
        if SHARED_SITE.is_dir() and not args.generated:
            copies_site(site, args.copies)
            label = f"git-htmldocs (../shared) x {args.copies} under one root"
        else:
            generate_site(site, pages=args.pages)
            label = f"generated, {args.pages} pages"
        print(f"site: {label}; cpus: {os.cpu_count()}; load: {os.getloadavg()[0]:.2f}; extraction processes: "
              f"{'chosen per extractor' if args.workers is None else args.workers}; rounds: {args.rounds}")
        summary = []
        for latency in latencies:
            label = f"{latency * 1000:g} ms latency" if latency else "loopback, no latency"
            summary.append((latency, run_scenario(f"{label}, {CONCURRENCY} per host", site, latency, extractors,
                                                  args.workers, args.rounds, tmp)))
    print(f"summary: ours as a share of each peer's pages/s, medians (load now: {os.getloadavg()[0]:.2f}); "
          "targets with resiliparse: >= 90% of plain at loopback, >= 95% with latency")
    for latency, medians in summary:
        for key, what in (("wall_s", "end to end"), ("crawl_s", "crawl")):
            cells = "   ".join(f"{c}: {medians[c][key] / medians['plain'][key]:6.1%} of plain, "
                               f"{medians[c][key] / medians['bare'][key]:6.1%} of bare"
                               for c in medians if c.startswith("ours/"))
            print(f"   {latency * 1000:>4g} ms, {what:<10} {cells}")
        cells = "   ".join(f"{c}: {medians[c]['cpu_ms'] / medians['plain']['cpu_ms']:6.1%} of plain's"
                           for c in medians if c != "plain")
        print(f"   {latency * 1000:>4g} ms, CPU/page   {cells}")


if __name__ == "__main__":
    main()
