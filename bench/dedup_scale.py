"""near_duplicate at corpus scale: seconds and peak memory of its two halves at 10k, 100k and 1M documents.

Synthetic corpus (no ../shared needed): documents of 250-350 words (about
2 KB) drawn from a Zipf(1.1) vocabulary of 50,000 random words; a share of
them (``--dup-share``, default 3%) are copies of another document of the same
part with 0-5 words replaced. Generated once into document Parquet files
(untimed, like a crawl), then:

1. signatures: ``observe`` over Arrow record batches of 2,000 read from the
   document files, each part's state rows written to one Parquet state file,
   in ``--workers`` processes (default 2: the runner's one worker per detector
   could be split the same way, so the figure shows what each core does);
2. finish: a fresh detector's ``finish`` over the state files in one process
   (DuckDB out of core with ``memory_limit_mb``, verification and clusters for
   candidates only, tag rows);
3. a new crawl of 1% more documents: signatures for those only, then finish
   over all the stored state (what a nightly re-crawl costs).

Peak memory is each process's peak RSS (``ru_maxrss``), the signature stage's
summed over its workers. Each stage runs in fresh processes so peaks are its
own.

    .venv/bin/python bench/dedup_scale.py [--sizes 10000,100000,1000000] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from provenance.detectors import CorpusState, output_to_table
from provenance.plugins.near_duplicate import NearDuplicate

PART_DOCS = 5_000  # documents per document file (and per state file)
BATCH = 2_000       # rows per record batch handed to observe
VOCAB = 50_000


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _vocabulary(seed: int) -> tuple[pa.Array, np.ndarray]:
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)
    lengths = rng.integers(2, 11, VOCAB)
    words = [letters[rng.integers(0, 26, n)].tobytes().decode() for n in lengths]
    p = 1.0 / np.arange(1, VOCAB + 1) ** 1.1
    return pa.array(words, pa.string()), p / p.sum()


def generate_part(args) -> tuple[str, int]:
    """One document file of ``n`` synthetic documents; (path, near-duplicate copies in it)."""
    path, part, n, dup_share, seed = args
    words, p = _vocabulary(seed)
    rng = np.random.default_rng((seed, part))
    lengths = rng.integers(250, 351, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = rng.choice(VOCAB, int(offsets[-1]), p=p)
    copies = np.flatnonzero(rng.random(n) < dup_share)
    copies = copies[copies > 0]
    segments = [flat[offsets[i]:offsets[i + 1]] for i in range(n)]
    for i in copies:  # a copy of an earlier document of the part, 0-5 words replaced
        text = segments[int(rng.integers(0, i))].copy()
        edits = int(rng.integers(0, 6))
        text[rng.integers(0, len(text), edits)] = rng.choice(VOCAB, edits, p=p)
        segments[i] = text
    flat = np.concatenate(segments)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in segments])])
    texts = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int64()).cast(pa.int32()),
                                                            words.take(pa.array(flat))), " ")
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    ids = [f"{part:06d}{i:026x}" for i in range(n)]
    hosts = [f"site{(part * n + i) % 5000}.com" for i in range(n)]
    table = pa.table({"doc_id": ids, "text": texts.cast(pa.large_string()),
                      "fetched_at": pa.array([start + timedelta(minutes=i) for i in range(n)],
                                             pa.timestamp("us", "UTC")),
                      "domain": hosts, "registered_domain": hosts})
    pq.write_table(table, path)
    return path, len(copies)


def observe_part(args) -> tuple[float, float, int]:
    """Signature stage for one document file: (seconds, peak RSS MB of this worker so far, rows)."""
    doc_path, state_path, options = args
    detector = NearDuplicate(**options)
    t0 = time.perf_counter()
    writer, rows = None, 0
    for batch in pq.ParquetFile(doc_path).iter_batches(batch_size=BATCH):
        table = detector.observe(batch)
        writer = writer or pq.ParquetWriter(state_path, table.schema)
        writer.write_table(table)
        rows += table.num_rows
    writer.close()
    return time.perf_counter() - t0, _peak_mb(), rows


def finish_all(args) -> tuple[float, float, dict]:
    """finish over every state file: (seconds, peak RSS MB, tag rows by tag)."""
    state_files, scratch, options = args
    detector = NearDuplicate(**options)
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    for part in detector.finish(CorpusState(state_files=state_files, scratch_dir=scratch)):
        table = output_to_table(part, detector)
        for tag in set(table.column("tag").to_pylist()):
            counts[tag] = counts.get(tag, 0) + table.column("tag").to_pylist().count(tag)
    return time.perf_counter() - t0, _peak_mb(), counts


def run_size(n: int, workers: int, dup_share: float, seed: int, workdir: Path) -> dict:
    options = NearDuplicate.validate_options({})
    docs_dir, state_dir, scratch = workdir / "documents", workdir / "state", workdir / "scratch"
    for d in (docs_dir, state_dir, scratch):
        d.mkdir(parents=True)
    parts = [(str(docs_dir / f"part-{k:05d}.parquet"), k, min(PART_DOCS, n - k * PART_DOCS), dup_share, seed)
             for k in range(-(-n // PART_DOCS))]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(workers, maxtasksperchild=None) as pool:
        generated = pool.map(generate_part, parts)
    gen_s = time.perf_counter() - t0
    megabytes = sum(pq.ParquetFile(p).metadata.row_group(0).column(1).total_uncompressed_size
                    for p, _ in generated) / 1e6
    jobs = [(p, str(state_dir / Path(p).name), options) for p, _ in generated]
    t0 = time.perf_counter()
    # Fresh processes per stage (and per worker): each peak is the stage's own.
    with mp.get_context("spawn").Pool(workers) as pool:
        observed = pool.map(observe_part, jobs, chunksize=1)
    sig_s = time.perf_counter() - t0
    sig_peak = sum(sorted((peak for _, peak, _ in observed), reverse=True)[:workers])
    with mp.get_context("spawn").Pool(1) as pool:
        fin_s, fin_peak, counts = pool.apply(finish_all, (([j[1] for j in jobs], str(scratch), options),))
    # A new crawl of 1% more documents: only they are observed (one process), then finish over all the state.
    n_new = max(1, n // 100)
    new_part = (str(docs_dir / "new.parquet"), len(parts), n_new, dup_share, seed)
    generate_part(new_part)
    new_job = (new_part[0], str(state_dir / "new.parquet"), options)
    with mp.get_context("spawn").Pool(1) as pool:
        t0 = time.perf_counter()
        pool.apply(observe_part, (new_job,))
        new_sig_s = time.perf_counter() - t0
    with mp.get_context("spawn").Pool(1) as pool:
        new_fin_s, _, _ = pool.apply(finish_all, (([j[1] for j in jobs] + [new_job[1]], str(scratch), options),))
    return {"n": n, "mb": megabytes, "copies": sum(c for _, c in generated), "gen_s": gen_s, "sig_s": sig_s,
            "sig_cpu_s": sum(s for s, _, _ in observed), "sig_peak": sig_peak, "fin_s": fin_s,
            "fin_peak": fin_peak, "counts": counts, "n_new": n_new, "new_sig_s": new_sig_s, "new_fin_s": new_fin_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="comma-separated corpus sizes (e.g. 10000,100000,1000000)")
    parser.add_argument("--workers", type=int, default=2, help="processes for generation and signatures")
    parser.add_argument("--dup-share", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work here and keep the files (default: a temporary directory)")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    results = []
    for n in sizes:
        base = args.keep or Path(tempfile.mkdtemp(prefix="dedup_scale-"))
        try:
            r = run_size(n, args.workers, args.dup_share, args.seed, base / f"n{n}")
        finally:
            if args.keep is None:
                shutil.rmtree(base, ignore_errors=True)
        results.append(r)
        print(f"{n:>9,} docs ({r['mb']:,.0f} MB text, {r['copies']:,} injected copies; generated in "
              f"{r['gen_s']:.1f}s, untimed)", flush=True)
        print(f"  signatures  {r['sig_s']:8.1f}s wall on {args.workers} workers ({r['sig_cpu_s']:.1f}s summed, "
              f"{r['mb'] / r['sig_s']:.1f} MB/s)  peak RSS {r['sig_peak']:,.0f} MB (workers summed)", flush=True)
        print(f"  finish      {r['fin_s']:8.1f}s  peak RSS {r['fin_peak']:,.0f} MB  tags {r['counts']}", flush=True)
        print(f"  total       {r['sig_s'] + r['fin_s']:8.1f}s  ({1e6 * (r['sig_s'] + r['fin_s']) / n:.1f} us/doc)",
              flush=True)
        new_total = r["new_sig_s"] + r["new_fin_s"]
        print(f"  new crawl of {r['n_new']:,} documents (1%): signatures {r['new_sig_s']:.1f}s (one process, "
              f"start-up included) + finish over all {r['new_fin_s']:.1f}s = {new_total:.1f}s, "
              f"{new_total / (r['sig_s'] + r['fin_s']):.3f} of the first pass", flush=True)
    if len(results) > 1:
        first, last = results[0], results[-1]
        per_doc = [(r["sig_s"] + r["fin_s"]) / r["n"] for r in (first, last)]
        fin_per_doc = [r["fin_s"] / r["n"] for r in (first, last)]
        print(f"growth {last['n']:,} vs {first['n']:,}: time per doc x{per_doc[1] / per_doc[0]:.2f} "
              f"(finish alone x{fin_per_doc[1] / fin_per_doc[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
