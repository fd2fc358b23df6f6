"""A/B of crawl variants: the same children as bench/crawl.py, the site served by a process of its own.

    python bench/crawl_ab.py [--rounds 3] [--copies 6] [--latency MS] [--in-flight] VARIANT ...

VARIANT is ``plain``, ``bare`` (bench/crawl.py's peers) or ``ours`` with [crawl] settings over
bench/crawl.py's (resiliparse by default): ``ours:extract_workers=0``,
``ours:extractor="trafilatura",extract_workers=1`` (values are JSON). The variants run
interleaved, round by round; each line reports seconds spider open to close, process start to
exit, and the CPU seconds of the crawler's processes (extraction processes included; the
server's excluded, which here runs in its own process rather than in this one, so that a slower
crawler cannot be held back by sharing an interpreter with the site). ``--in-flight`` samples,
every 5 ms of the crawl process's event loop, how many requests its downloader has in flight
(mean, and how often fewer than the concurrency).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crawl as bench  # noqa: E402  (bench/crawl.py: the peers and our crawl's settings)

# Run in the crawler's process before anything else: a sampler of the downloader's requests in flight.
IN_FLIGHT = """
import sys
from scrapy.core.downloader import Downloader
_init, _close = Downloader.__init__, Downloader.close
def __init__(self, crawler):
    _init(self, crawler)
    from twisted.internet.task import LoopingCall
    self._samples = []
    self._sampler = LoopingCall(lambda: self._samples.append(len(self.active)))
    self._sampler.start(0.005, now=False)
def close(self):
    self._sampler.stop()
    s = [x for x in self._samples if x]
    low = sum(1 for x in s if x < %d) / max(1, len(s))
    print(f'   in flight: mean {sum(s) / max(1, len(s)):.1f} of %d, fewer in {low:.0%%} of {len(s)} samples', file=sys.stderr)
    return _close(self)
Downloader.__init__, Downloader.close = __init__, close
""" % (bench.CONCURRENCY, bench.CONCURRENCY)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_variant(variant: str, start: str, tmp: Path, prelude: str) -> tuple[float, float, float]:
    name, _, extra = variant.partition(":")
    if name in ("plain", "bare"):
        code = (f"{prelude}\nimport sys; sys.path.insert(0, {str(Path(bench.__file__).parent)!r}); import crawl\n"
                f"sys.argv = ['crawl.py', '--peer', {name!r}, {start!r}, {str(tmp / 'peer.json')!r}]; crawl.main()")
    elif name == "ours":
        from provenance.crawlers import CrawlRequest
        from provenance.crawlers.run import plan_crawl
        from provenance.store import Store

        settings = bench.bench_settings(None, "resiliparse")
        for item in filter(None, extra.split(",")):
            key, _, value = item.partition("=")
            settings[key] = json.loads(value)
        Store.open(tmp / "store", create=True)
        (tmp / "request.json").write_text(json.dumps(plan_crawl(CrawlRequest(start_urls=[start], settings=settings))))
        code = (f"{prelude}\nfrom provenance.crawlers.worker import exit_now, main\n"
                f"exit_now(main(['--store', {str(tmp / 'store')!r}, '--request', {str(tmp / 'request.json')!r}, "
                f"'--result', {str(tmp / 'result.json')!r}]))")
    else:
        raise SystemExit(f"unknown variant {variant!r}: plain, bare or ours[:key=value,...]")
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    if name == "ours":
        crawl_s = json.loads((tmp / "result.json").read_text())["stats"]["spider_s"]
    else:
        crawl_s = json.loads((tmp / "peer.json").read_text())["crawl_s"]
    return crawl_s, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--latency", type=float, default=0.0, help="server latency in ms [default: 0]")
    parser.add_argument("--in-flight", action="store_true", help="sample the requests in flight")
    args = parser.parse_args()
    if not bench.SHARED_SITE.is_dir():
        raise SystemExit(f"needs ../shared's git-htmldocs at {bench.SHARED_SITE}")
    prelude = IN_FLIGHT if args.in_flight else ""
    with tempfile.TemporaryDirectory(prefix="provenance-bench-") as tmp_name:
        tmp = Path(tmp_name)
        site = bench.copies_site(tmp / "site", args.copies)
        server = subprocess.Popen(
            [sys.executable, "-c", "import sys, time\nfrom provenance.sites import serve\n"
             f"with serve({str(site)!r}, delay_s={args.latency / 1000}) as base:\n"
             "    print(base, flush=True)\n    sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            start = server.stdout.readline().strip() + "index.html"
            print(f"site: git-htmldocs x {args.copies}, served by pid {server.pid}, latency {args.latency:g} ms; "
                  f"cpus: {os.cpu_count()}; load: {os.getloadavg()[0]:.2f}")
            results: dict[str, list[tuple[float, float, float]]] = {v: [] for v in args.variants}
            for i in range(args.rounds):
                for variant in args.variants:
                    with tempfile.TemporaryDirectory(dir=tmp) as run_tmp:
                        results[variant].append(run_variant(variant, start, Path(run_tmp), prelude))
                    crawl_s, wall, cpu = results[variant][-1]
                    print(f"   round {i + 1}: {variant:<40} crawl {crawl_s:6.2f} s  process {wall:6.2f} s  "
                          f"CPU {cpu:6.2f} s  (load {os.getloadavg()[0]:.1f})", flush=True)
        finally:
            server.stdin.close()
            server.wait(timeout=30)
    plain = statistics.median(r[0] for r in results["plain"]) if "plain" in results else None
    print("medians:")
    for variant, runs in results.items():
        crawl_s = statistics.median(r[0] for r in runs)
        share = f"  {plain / crawl_s:6.1%} of plain's pages/s" if plain else ""
        print(f"   {variant:<40} crawl {crawl_s:6.2f} s  process {statistics.median(r[1] for r in runs):6.2f} s  "
              f"CPU {statistics.median(r[2] for r in runs):6.2f} s{share}")


if __name__ == "__main__":
    main()
