"""How long opening a store (reading its commit log into a Snapshot) takes as the log grows.

A store is built by the real writer (``Run.commit``), one entry per commit, shaped like a tag-heavy
history: each entry adds one file (a document file, or a tag file with its coverage record), and every
tenth entry removes an older tag file. The data files themselves are not written (opening reads only
the log), and fsync is switched off while building (durability plays no part in what is measured).
Reported per size: the full replay (every entry, as before checkpoints) and the open as readers do it
(newest checkpoint, then the entries after it), best of three, plus the size of the newest checkpoint.

    .venv/bin/python bench/store_open.py [--sizes 1000,20000,100000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from provenance import store as store_mod
from provenance.store import FileEntry, Store


def build(root: Path, n: int) -> float:
    """A store of ``n`` commit entries; returns the seconds the writer took (fsync off)."""
    store = Store.open(root, create=True)
    real_fsync = os.fsync
    os.fsync = lambda fd: None
    start = time.perf_counter()
    try:
        with store.run("bench") as run:
            tag_files: list[str] = []
            for i in range(n):
                if i % 2 == 0:
                    path = f"documents/bench/{run.run_id}-{i:07d}.parquet"
                    add = FileEntry(path, "documents", 500, 250_000, "0" * 64, {})
                    run.commit(add=[add])
                    last_doc = path
                else:
                    path = f"tags/det/k1/{run.run_id}-{i:07d}.parquet"
                    meta = {"detector": "det", "tag_key": "k1", "doc_file": last_doc}
                    add = FileEntry(path, "tags", 500, 20_000, "0" * 64, meta)
                    cover = {"detector": "det", "tag_key": "k1", "doc_file": last_doc, "ranges": [[0, 500]]}
                    remove = [tag_files.pop(0)] if i % 10 == 9 and tag_files else []
                    run.commit(add=[add], remove=remove, coverage=[cover])
                    tag_files.append(path)
    finally:
        os.fsync = real_fsync
    return time.perf_counter() - start


def best_of(fn, times: int = 3) -> float:
    best = float("inf")
    for _ in range(times):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,20000,100000")
    args = parser.parse_args()
    print(f"CHECKPOINT_EVERY = {store_mod.CHECKPOINT_EVERY}")
    print(f"{'entries':>8} {'build s':>8} {'full replay s':>14} {'open s':>8} {'live files':>10} {'checkpoint':>11}")
    with tempfile.TemporaryDirectory(prefix="store-open-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            root = Path(tmp) / f"s{n}"
            built = build(root, n)
            store = Store(root)
            full = best_of(lambda: store._read_log(warn_torn=True, checkpoints=False))
            opened = best_of(store.snapshot)
            snap = store.snapshot()
            replayed = store._read_log(warn_torn=True, checkpoints=False)
            assert snap.log_seq == n and (snap.files, snap.removed, snap.coverage) == \
                (replayed.files, replayed.removed, replayed.coverage)
            ckpt = max((root / "_log").glob("*.checkpoint.json.gz"), default=None)
            size = f"{ckpt.stat().st_size / 1e6:.1f} MB" if ckpt else "-"
            print(f"{n:>8} {built:>8.1f} {full:>14.2f} {opened:>8.3f} {len(snap.files):>10} {size:>11}")


if __name__ == "__main__":
    main()
