"""What a run pays at its start to learn a store's doc_ids (or captures): reading every file against the index.

Builds a store of N documents in files of 100,000 rows (each row its doc_id and fetched_at, the other columns
null: the doc_ids are all ``existing_doc_ids`` reads, the pairs all ``KnownCaptures`` reads), then, each in a
fresh process, as an ingest or crawl starts (``--kind doc_ids``) or as an import first meets a stored document
(``--kind captures``):

- ``files``: no index, every file's doc_id column read (as before the index);
- ``write``: the same, and the index written, in steps of ``doc_index.STEP_ROWS`` (what the first run after
  the store has grown pays);
- ``index``: with the index and one file of 10,000 documents committed since (every later run).

Each reports CPU and wall seconds, the process's peak RSS beyond what it held before (all of it, and its
anonymous part alone, sampled every 5 ms: what the run itself holds), its RSS after in anonymous memory (its
own) and in file pages (the memory-mapped index: the kernel's page cache, shared, evictable), then the
microseconds of 200,000 membership tests (half stored doc_ids or captures, half new ones) against the set it built, as
``DocumentSink.add`` makes them. Ratios are against ``files`` in the same run of this script.

    .venv/bin/python bench/doc_index.py [--docs 10000000] [--dir DIR] [--kind doc_ids|captures]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FILE_ROWS = 100_000
EPOCH_US = 1_700_000_000_000_000  # the documents' fetched_at: this plus a random number of microseconds


def random_doc_ids(rng: np.random.Generator, n: int) -> pa.Array:
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    hexed = np.frombuffer(b"0123456789abcdef", np.uint8)[np.stack([raw >> 4, raw & 15], axis=2).reshape(n, 32)]
    return pa.array(hexed.view("S32").reshape(-1).astype(str))


def fetch_times(rng: np.random.Generator, n: int) -> pa.Array:
    return pa.array(EPOCH_US + rng.integers(0, 10**14, n), pa.timestamp("us", "UTC"))


def documents(run, ids: pa.Array, times: pa.Array) -> pa.Table:
    """Rows of the documents schema with only what it requires: a doc_id and fetched_at each, and one url, crawl,
    run, source."""
    n = len(ids)
    return pa.table({"doc_id": ids, "fetched_at": times, **{name: pa.array([value] * n) for name, value in [
        ("url", "https://bench.example/"), ("crawl_id", "bench"), ("run_id", run.run_id), ("source", "jsonl")]}})


def build(root: Path, n: int) -> None:
    from provenance.store import Store

    store = Store.open(root, create=True)
    rng = np.random.default_rng(20)
    with store.run("ingest", config={"bench": "doc_index"}) as run:
        for start in range(0, n, FILE_ROWS):
            rows = min(FILE_ROWS, n - start)
            ids, times = random_doc_ids(rng, rows), fetch_times(rng, rows)
            run.commit(add=[run.write("documents", documents(run, ids, times), "bench", row_group_size=FILE_ROWS)])


def add_file(root: Path, rows: int, seed: int) -> None:
    from provenance.store import Store

    store = Store.open(root)
    with store.run("ingest", config={"bench": "doc_index"}) as run:
        rng = np.random.default_rng(seed)
        ids, times = random_doc_ids(rng, rows), fetch_times(rng, rows)
        run.commit(add=[run.write("documents", documents(run, ids, times), "bench-new")])


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


class AnonPeak(threading.Thread):
    """The highest anonymous RSS (the process's own memory, not file pages such as a memory-mapped index it reads
    or writes, which the kernel's page cache holds and can evict) seen every 5 ms while it runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self._done = rss_anon_mb(), threading.Event()

    def run(self):
        while not self._done.wait(0.005):
            self.peak = max(self.peak, rss_anon_mb())

    def stop(self) -> float:
        self._done.set()
        self.join()
        return max(self.peak, rss_anon_mb())


def load(kind: str, store):
    """What a run loads at its start: the doc_id set, or the captures (loaded as an import's first question)."""
    from provenance.documents import KnownCaptures, existing_doc_ids

    if kind == "doc_ids":
        return existing_doc_ids(store.snapshot())
    captures = KnownCaptures(store)
    captures._load()
    return captures


def child(root: Path, mode: str, kind: str) -> dict:
    from provenance import doc_index
    from provenance.store import Store

    if mode != "index":
        doc_index.MIN_KEYS = 1 << 62 if mode == "files" else 1  # files: never written; write: always
    with tempfile.TemporaryDirectory() as warm:  # imports and first calls, not part of what is measured
        load(kind, Store.open(Path(warm) / "s", create=True))
    store = Store.open(root)
    snapshot = store.snapshot()
    pq.read_table(snapshot.paths("documents")[0], columns=["doc_id"])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    anon_before, sampler = rss_anon_mb(), AnonPeak()
    sampler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    held = load(kind, store)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    anon_extra = sampler.stop() - anon_before
    extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    rss_mb = {k: round(int(status[k].split()[0]) / 1024) for k in ("RssAnon", "RssFile") if k in status}

    last = pq.read_table(snapshot.paths("documents")[-1], columns=["doc_id", "fetched_at"]).slice(0, 100_000)
    new_ids = random_doc_ids(np.random.default_rng(99), last.num_rows).to_pylist()
    if kind == "doc_ids":
        probes = [d for pair in zip(last.column("doc_id").to_pylist(), new_ids) for d in pair]
        contains, in_memory = held.__contains__, len(held._keys.own_keys())
    else:  # the stored captures, and the same documents at other times
        stored = list(zip(last.column("doc_id").to_pylist(), last.column("fetched_at").to_pylist()))
        later = [(d, t + timedelta(days=365)) for d, t in stored]
        probes = [c for pair in zip(stored, later) for c in pair]
        contains, in_memory = (lambda c: held._contains(*c)), len(held._seen.own_keys())
    t1 = time.perf_counter()
    found = sum(map(contains, probes))
    lookup_us = (time.perf_counter() - t1) / len(probes) * 1e6
    return {"kind": kind, "mode": mode, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "peak_extra_mb": round(extra), "peak_anon_extra_mb": round(anon_extra),
            "rss_anon_mb": rss_mb.get("RssAnon"), "rss_file_mb": rss_mb.get("RssFile"),
            "in_memory_keys": in_memory, "lookup_us": round(lookup_us, 2), "found": found,
            "expected_found": last.num_rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=10_000_000)
    ap.add_argument("--dir", default=None, help="where to build the store (default: a temporary directory)")
    ap.add_argument("--kind", choices=("doc_ids", "captures"), default="doc_ids",
                    help="the doc_id index (every ingest and crawl) or the capture index (imports of stored pages)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.dir), args.child, args.kind)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "store"
        t0 = time.perf_counter()
        build(root, args.docs)
        print(f"built a store of {args.docs:,} doc_ids in {time.perf_counter() - t0:.0f} s", flush=True)
        results = {}
        for mode in ("files", "write", "index"):
            if mode == "index":
                add_file(root, 10_000, seed=7)
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", str(root), "--kind", args.kind],
                                 capture_output=True, text=True, check=True)
            results[mode] = json.loads(out.stdout)
            print(json.dumps(results[mode]), flush=True)
        files = results["files"]
        for mode in ("write", "index"):
            r = results[mode]
            print(f"{mode} against files: CPU {r['cpu_s'] / files['cpu_s']:.3f}x, "
                  f"peak RSS {r['peak_extra_mb'] / max(1, files['peak_extra_mb']):.2f}x, "
                  f"peak anonymous RSS {r['peak_anon_extra_mb'] / max(1, files['peak_anon_extra_mb']):.2f}x, "
                  f"lookup {r['lookup_us'] / files['lookup_us']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
