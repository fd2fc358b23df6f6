"""What a crawl of one site pays at its start on a big store: every file read, against the URL version index.

Builds a store of N documents on ``--sites`` sites (registered domains, each with a few hosts) in files of 5,000
rows, as imports write them: each file mixes pages of many sites, so no choice of files holds one site's pages
alone. Only the columns a crawl's start reads are filled (url, doc_id, fetched_at, the validators). Then, each in
a fresh process, ``load_known`` for a crawl of one site, as ``provenance crawl`` calls it:

- ``files``: no index, the URL column of every document file read (as before the index);
- ``write``: the same store, and the index written first (its first run: what the first crawl pays);
- ``run``: after N/8 more documents, the crawl that finds them writes them as a second run (what one crawl pays
  each time the store has grown by an eighth; every ``known_index.MAX_RUNS``-th such write merges all runs);
- ``index``: with the index and one file of 5,000 documents committed since (every other crawl).

Each reports wall and CPU seconds, peak RSS beyond what the process held before, and the URLs the crawl knows
(the site's pages: the same in every mode). Ratios are against ``files`` in the same run of this script.

    .venv/bin/python bench/crawl_start.py [--docs 10000000] [--sites 2000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

FILE_ROWS = 5_000
EPOCH_US = 1_700_000_000_000_000


def site_name(i: int) -> str:
    return f"site{i:05d}.example"


def documents(run, rng: np.random.Generator, start: int, n: int, sites: int) -> pa.Table:
    """Pages ``start`` to ``start + n``, each on a random site and one of its four hosts."""
    site = rng.integers(0, sites, n)
    host = rng.integers(0, 4, n)
    urls = [f"https://{'www' if h == 0 else f'h{h}'}.{site_name(s)}/page/{start + i}"
            for i, (s, h) in enumerate(zip(site.tolist(), host.tolist()))]
    raw = [hashlib.sha256(u.encode()).hexdigest() for u in urls]
    return pa.table({
        "doc_id": [hashlib.sha256(f"{u}\0{r}".encode()).hexdigest()[:32] for u, r in zip(urls, raw)],
        "url": urls,
        "fetched_at": pa.array(EPOCH_US + rng.integers(0, 10**14, n), pa.timestamp("us", "UTC")),
        "etag": [f'"{r[:16]}"' for r in raw],
        "raw_sha256": raw,
        "text_sha256": [r[::-1] for r in raw],
        "crawl_id": pa.array(["bench"] * n), "run_id": pa.array([run.run_id] * n), "source": pa.array(["warc"] * n),
    })


def build(root: Path, n: int, sites: int) -> None:
    from provenance.store import Store

    store = Store.open(root, create=True)
    rng = np.random.default_rng(20)
    with store.run("ingest", config={"bench": "crawl_start"}) as run:
        for start in range(0, n, FILE_ROWS):
            rows = min(FILE_ROWS, n - start)
            run.commit(add=[run.write("documents", documents(run, rng, start, rows, sites), "bench")])


def add_files(root: Path, start: int, n: int, sites: int, seed: int) -> None:
    from provenance.store import Store

    store = Store.open(root)
    rng = np.random.default_rng(seed)
    with store.run("ingest", config={"bench": "crawl_start"}) as run:
        for first in range(start, start + n, FILE_ROWS):
            table = documents(run, rng, first, min(FILE_ROWS, start + n - first), sites)
            run.commit(add=[run.write("documents", table, f"bench-{seed}")])


def child(root: Path, mode: str) -> dict:
    from provenance.crawlers import known_index
    from provenance.crawlers.session import crawl_sites, load_known
    from provenance.store import Store

    if mode == "files":  # as before the index: none read, none written, every file read
        known_index.open_index = lambda snapshot: None
        known_index.MIN_ROWS = 1 << 62
    store = Store.open(root)
    sites = crawl_sites([f"https://www.{site_name(1)}/"])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    known, _previous = load_known(store, "bench", root / "_tmp" / f"bench-{mode}", sites)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    urls = sum(len(batch) for batch in known._urls)
    known.close()
    index = known_index.open_index(store.snapshot())
    return {"mode": mode, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_extra_mb": round(extra),
            "urls_known": urls, "index_rows": index.rows if index is not None else 0,
            "index_runs": len(index.runs) if index is not None else 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=10_000_000)
    ap.add_argument("--sites", type=int, default=2_000)
    ap.add_argument("--dir", default=None, help="where to build the store (default: a temporary directory)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.dir), args.child)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "store"
        t0 = time.perf_counter()
        build(root, args.docs, args.sites)
        print(f"built a store of {args.docs:,} documents on {args.sites:,} sites in {time.perf_counter() - t0:.0f} s",
              flush=True)
        results = {}
        for mode in ("files", "write", "run", "index"):
            if mode == "run":
                add_files(root, args.docs, args.docs // 8, args.sites, seed=7)
            if mode == "index":
                add_files(root, args.docs + args.docs // 8, FILE_ROWS, args.sites, seed=8)
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", str(root)],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{mode} failed:\n{out.stderr}")
            results[mode] = json.loads(out.stdout)
            print(json.dumps(results[mode]), flush=True)
        files = results["files"]
        for mode in ("write", "run", "index"):
            r = results[mode]
            print(f"{mode} against files: wall {r['wall_s'] / files['wall_s']:.3f}x, CPU "
                  f"{r['cpu_s'] / files['cpu_s']:.3f}x, "
                  f"peak RSS {r['peak_extra_mb'] / max(1, files['peak_extra_mb']):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
