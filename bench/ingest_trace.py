"""Does ingest's cost per document grow as the store grows? One ingest, traced commit by commit.

``bench/scale.py`` compares whole runs at different sizes, made at different times, on a machine whose speed
drifts by 20% or more between them. This traces one run instead: after every commit of documents it runs
``scale.calibration`` (a fixed workload) and records the CPU time since the previous commit, so each part of
the run is measured in units of the machine's speed at that moment. A flat trace means nothing in ingest
grows with the documents already stored or seen (the known doc_ids, the commit log, the checkpoints).

    .venv/bin/python bench/ingest_trace.py --corpus-dir DIR [--docs 3000000] [--parts 6] [--keep STORE]

Uses the shards ``bench/scale.py --generate-only --sizes 10000000 --corpus-dir DIR`` writes (the first
``--docs`` of them); prints, per part of the run, the CPU per document in microseconds and in calibration
units (the CPU of one of the calibration's documents), the same for the commits alone, and the system CPU and
the time in Python's garbage collector per document.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scale import CALIBRATION_DOCS, calibration

from provenance import documents
from provenance.config import IngestSettings
from provenance.ingest import run_ingest
from provenance.store import Store


def traced_ingest(store: Path, shards: list[Path]) -> np.ndarray:
    """Rows of (documents committed, CPU s since the previous commit, CPU s of the commit, calibration s,
    system CPU s since the previous commit, seconds in Python's garbage collector since the previous commit)."""
    rows = []
    flush = documents.DocumentSink.flush
    last = [time.process_time(), os.times().system]
    in_gc = [0.0, 0.0]  # total, start of the current collection

    def gc_timer(phase, _info):
        if phase == "start":
            in_gc[1] = time.process_time()
        else:
            in_gc[0] += time.process_time() - in_gc[1]

    def traced(sink):
        before = sink.written
        start = time.process_time()
        flush(sink)
        end, system = time.process_time(), os.times().system
        rows.append((sink.written - before, end - last[0], end - start, calibration(), system - last[1], in_gc[0]))
        in_gc[0] = 0.0
        last[:] = [time.process_time(), os.times().system]  # the calibration is not the ingest's

    documents.DocumentSink.flush = traced
    gc.callbacks.append(gc_timer)
    try:
        # documents per commit as `provenance ingest` commits them ([ingest] flush_rows)
        run_ingest(Store.open(store, create=True), shards, flush_rows=IngestSettings().flush_rows)
    finally:
        documents.DocumentSink.flush = flush
        gc.callbacks.remove(gc_timer)
    return np.array(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus-dir", required=True, help="where bench/scale.py keeps its generated corpora")
    ap.add_argument("--docs", type=int, default=3_000_000)
    ap.add_argument("--parts", type=int, default=6)
    ap.add_argument("--keep", default=None, help="write the store here and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    shards = sorted(Path(args.corpus_dir).glob("10000000-*/corpus-*.jsonl.gz"))
    if not shards:
        sys.exit(f"no 10M corpus in {args.corpus_dir}: run bench/scale.py --generate-only --sizes 10000000 "
                 f"--corpus-dir {args.corpus_dir} first")
    shards = shards[:max(1, args.docs // 100_000)]  # the generator writes 100,000 documents a shard
    if args.keep:
        rows = traced_ingest(Path(args.keep), shards)
    else:
        with tempfile.TemporaryDirectory(prefix="ingest-trace-") as tmp:
            rows = traced_ingest(Path(tmp) / "store", shards)
    done = np.cumsum(rows[:, 0])
    print(f"{int(done[-1]):,} documents in {len(rows)} commits; per part of the run:")
    print(f"{'documents':>12} {'us/doc':>8} {'units/doc':>10} {'commit units/doc':>17} {'system us/doc':>14} "
          f"{'gc us/doc':>10}")
    for part in np.array_split(np.arange(len(rows)), args.parts):
        r = rows[part]
        unit = r[:, 3].mean() / CALIBRATION_DOCS
        n = r[:, 0].sum()
        print(f"{int(done[part[-1]]):>12,} {r[:, 1].sum() / n * 1e6:8.1f} {r[:, 1].sum() / n / unit:10.2f} "
              f"{r[:, 2].sum() / n / unit:17.2f} {r[:, 4].sum() / n * 1e6:14.1f} {r[:, 5].sum() / n * 1e6:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
