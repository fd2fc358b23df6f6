"""Near-duplicate detection: the near_duplicate detector against the obvious datasketch loop.

Corpus: the one eval/dedup.py builds (a seeded sample of
../shared/data/text/human_reference.jsonl.gz, Reuters' own duplicates, and
copies with 1-15% word edits). Same parameters on both sides: word 5-gram
shingles, num_perm 128, seed 1, threshold 0.8, the same bands x rows
(datasketch's MinHashLSH with the detector's weights), candidates verified by
estimated Jaccard, clusters by union-find. One process, one thread.

Ours: the detector's own code as the runner drives it (``observe`` over Arrow
batches of 1000, state rows written as Parquet, then ``finish`` over the
state files: DuckDB LSH, verification, clusters, tag rows). Peer: per text, Python
tokenising into the same shingles, ``MinHash.update_batch`` (datasketch's
default SHA-1 shingle hash), then ``MinHashLSH`` query + insert, verification
with ``MinHash.jaccard`` and a Python union-find. Prints both times and their
ratio, MB/s of our signature stage against tokenising + shingle hashing alone
(the practical limit of the signature stage), and our peak traced memory.

    .venv/bin/python bench/minhash.py [--sample 5000] [--inject 1000] [--skip-datasketch]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from dedup import build_corpus  # noqa: E402
from reference import DATA, read_reference  # noqa: E402

from provenance.detectors import CorpusState  # noqa: E402
from provenance.plugins.near_duplicate import NearDuplicate, lsh_bands, signatures  # noqa: E402

BATCH = 1000
WORD = re.compile(r"[^\W_]+")  # the detector's tokens (letters and digits of any script), in Python


def batches(corpus: list[dict]) -> list[pa.RecordBatch]:
    when = datetime(2024, 1, 1, tzinfo=timezone.utc)
    table = pa.table({"doc_id": [f"{i:032x}" for i in range(len(corpus))],
                      "text": pa.array([r["text"] for r in corpus], pa.large_string()),
                      "fetched_at": pa.array([when] * len(corpus), pa.timestamp("us", "UTC")),
                      "domain": [r["url"].split("/")[2] for r in corpus],
                      "registered_domain": [r["url"].split("/")[2] for r in corpus]})
    return table.to_batches(max_chunksize=BATCH)


def ours(parts: list[pa.RecordBatch]) -> tuple[float, float, int]:
    """(signature seconds, LSH + verify + clusters + tags seconds, tagged documents)."""
    detector = NearDuplicate(**NearDuplicate.validate_options({}))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = f"{tmp}/state.parquet"
        with pq.ParquetWriter(path, detector.state_schema()) as writer:
            for batch in parts:
                writer.write_table(detector.observe(batch))
        t1 = time.perf_counter()
        tagged = sum(part.column("tag").to_pylist().count("near_duplicate")
                     for part in detector.finish(CorpusState(state_files=[path], scratch_dir=tmp)))
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, tagged


def datasketch_loop(texts: list[str], options: dict) -> tuple[float, int]:
    """(seconds, documents in a cluster but not its first) for the obvious datasketch pipeline."""
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    bands, rows = lsh_bands(options["threshold"], options["num_perm"], options["fp_weight"], options["fn_weight"])
    lsh = MinHashLSH(num_perm=options["num_perm"], params=(bands, rows))
    parent = list(range(len(texts)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    sketches = {}
    n = options["ngram"]
    for key, text in enumerate(texts):
        words = WORD.findall(text.lower())
        if not words:
            continue
        grams = [" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))]
        m = MinHash(num_perm=options["num_perm"], seed=options["seed"])
        m.update_batch([g.encode("utf-8") for g in grams])
        for other in lsh.query(m):
            if m.jaccard(sketches[other]) >= options["threshold"]:
                parent[find(key)] = find(other)
        lsh.insert(key, m)
        sketches[key] = m
    roots = [find(i) for i in range(len(texts))]
    t1 = time.perf_counter()
    sizes = {}
    for r in roots:
        sizes[r] = sizes.get(r, 0) + 1
    return t1 - t0, sum(s - 1 for s in sizes.values() if s > 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sample", type=int, default=5000)
    parser.add_argument("--inject", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-datasketch", action="store_true")
    args = parser.parse_args()
    rows = read_reference(args.data, "bench")
    if rows is None:
        return 1
    corpus, _ = build_corpus(rows, args.sample, args.inject, args.seed)
    del rows
    parts = batches(corpus)
    megabytes = sum(len(r["text"].encode("utf-8")) for r in corpus) / 1e6
    options = NearDuplicate.validate_options({})
    print(f"corpus: {len(corpus)} texts, {megabytes:.1f} MB of text; num_perm={options['num_perm']}, "
          f"threshold={options['threshold']}, bands x rows = {lsh_bands(options['threshold'], options['num_perm'], options['fp_weight'], options['fn_weight'])}")

    t0 = time.perf_counter()
    signatures(parts[0].column("text").slice(0, 1))  # the compiled kernel: loaded (or compiled) once per process
    warm_up = time.perf_counter() - t0
    t0 = time.perf_counter()
    for batch in parts:  # one permutation instead of num_perm: what is left is tokenising and shingle hashing
        signatures(batch.column("text"), options["shingle"], options["ngram"], 1, options["seed"])
    shingling = time.perf_counter() - t0
    t0 = time.perf_counter()
    for batch in parts:
        signatures(batch.column("text"), options["shingle"], options["ngram"], options["num_perm"], options["seed"],
                   compiled=False)
    numpy_path = time.perf_counter() - t0
    sig_s, finish_s, tagged = ours(parts)
    total = sig_s + finish_s
    print(f"ours:        {total:7.2f}s  (signatures + state file {sig_s:.2f}s = {megabytes / sig_s:.1f} MB/s; LSH + verify + "
          f"clusters + tag rows {finish_s:.2f}s); {tagged} documents tagged")
    print(f"  tokenising + shingle hashing alone (the kernel with 1 permutation): {shingling:.2f}s = "
          f"{megabytes / shingling:.1f} MB/s, the signature stage's floor; the rest is {options['num_perm']} "
          f"permutations per shingle and the state rows")
    print(f"  kernel load once per process: {warm_up:.2f}s (not in the figures above); the numpy reference "
          f"path's signatures: {numpy_path:.2f}s = {megabytes / numpy_path:.1f} MB/s")
    tracemalloc.start()
    ours(parts)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"  peak memory allocated during the run (tracemalloc): {peak / 2**20:.0f} MiB")
    if args.skip_datasketch:
        return 0
    ds_s, ds_tagged = datasketch_loop([r["text"] for r in corpus], options)
    print(f"datasketch:  {ds_s:7.2f}s  (MinHash.update_batch + MinHashLSH query/insert + union-find); "
          f"{ds_tagged} documents in clusters beside their first")
    print(f"speed-up:    {ds_s / total:.1f}x (signatures alone vs datasketch's whole loop: {ds_s / sig_s:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
