"""The whole `provenance tag` process with near_duplicate, against the obvious datasketch loop; then a new crawl.

Corpus: the one eval/dedup.py builds from ../shared/data/text/human_reference.jsonl.gz
(a seeded sample, Reuters' own duplicates, copies with 1-15% word edits),
ingested into a real store. Three timed runs of the real command line, each a
new process (start-up, plugin loading, reading Parquet, the worker, commits):

1. first run: every document observed into stored signatures, then finish;
2. nothing new: the run must do nothing (coverage says so);
3. a new crawl of ``--new-share`` (1%) more documents: only they are
   observed; finish runs again over the stored signatures.

The peer is bench/minhash.py's datasketch loop over the same texts with the
same parameters, in this process, on one core (no start-up, no I/O: generous
to it); ours uses ``--workers`` processes (default 1).
Prints seconds and the ratios: peer / first run (target >= 10x) and new
crawl / first run (target about the new share, 1%).

    .venv/bin/python bench/dedup_tag.py [--sample 20000] [--inject 10000] [--new-share 0.01] [--workers 1]
                                        [--skip-datasketch]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from dedup import build_corpus  # noqa: E402
from minhash import datasketch_loop  # noqa: E402  (bench/ is on sys.path: this script's directory)
from reference import DATA, ingest_records, iso_date, read_reference  # noqa: E402

from provenance.plugins.near_duplicate import NearDuplicate  # noqa: E402

CLI = [sys.executable, "-m", "provenance.cli"]


def tag(store: Path, workers: int) -> tuple[float, dict]:
    """One `provenance tag --plugins near_duplicate --json` process: (wall seconds, its detector summary)."""
    t0 = time.perf_counter()
    proc = subprocess.run([*CLI, "tag", "--store", str(store), "--plugins", "near_duplicate", "--json",
                           "--workers", str(workers)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench: provenance tag exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds, json.loads(proc.stdout)["detectors"]["near_duplicate"]


def records(corpus: list[dict], prefix: str) -> list[dict]:
    return [{"url": f"https://{prefix}{r['url'].split('://', 1)[1]}", "text": r["text"],
             "fetched_at": iso_date(r.get("date")) or "2024-01-01T00:00:00Z"} for r in corpus]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=20000, help="texts sampled from the reference file")
    parser.add_argument("--inject", type=int, default=10000, help="edited copies of sampled texts")
    parser.add_argument("--new-share", type=float, default=0.01, help="size of the new crawl, as a share")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="provenance tag --workers (at 30k documents a second "
                        "worker costs more to start than it saves on 2 cores)")
    parser.add_argument("--skip-datasketch", action="store_true", help="only our runs (the peer is slow)")
    args = parser.parse_args()
    rows = read_reference(DATA, "bench")
    if rows is None:
        return 0
    corpus, _rates = build_corpus(rows, args.sample, args.inject, args.seed)
    n_new = max(1, int(len(corpus) * args.new_share))
    first, later = corpus[:-n_new], corpus[-n_new:]
    megabytes = sum(len(r["text"].encode()) for r in corpus) / 1e6
    print(f"corpus: {len(corpus)} texts ({megabytes:.1f} MB); first crawl {len(first)}, new crawl {len(later)}")

    with tempfile.TemporaryDirectory(prefix="bench-dedup-tag-") as tmp:
        store = ingest_records(records(first, ""), Path(tmp)).root
        full, stats = tag(store, args.workers)
        print(f"first run:   {full:7.2f} s  (--workers {args.workers})  (observed {stats['rows']} documents, {stats['tags']} tags)")
        idle, stats = tag(store, args.workers)
        print(f"nothing new: {idle:7.2f} s  (status {stats['status']}, observed {stats['rows']})")
        crawl = Path(tmp) / "new-crawl.jsonl"
        crawl.write_text("".join(json.dumps(r) + "\n" for r in records(later, "new.")))
        subprocess.run([*CLI, "ingest", str(crawl), "--store", str(store), "--crawl-id", "new"], check=True,
                       capture_output=True)
        again, stats = tag(store, args.workers)
        print(f"new crawl:   {again:7.2f} s  (observed {stats['rows']} documents, {stats['tags']} tags)")
        print(f"new crawl / first run: {again / full:.3f} (new documents: {len(later) / len(corpus):.3f} of the "
              f"corpus; the rest is process start-up and finish over all stored signatures)")

    if not args.skip_datasketch:
        options = NearDuplicate.validate_options({})
        peer, _found = datasketch_loop([r["text"] for r in corpus], options)
        print(f"datasketch loop (in process, same texts and parameters): {peer:.2f} s")
        print(f"ratio datasketch / whole `provenance tag` first run: {peer / full:.1f}x (target >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
