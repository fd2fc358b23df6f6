"""How long opening a store (reading its commit log into a Snapshot) takes as the log grows.

A store of N commit entries shaped like a tag-heavy history: each entry adds one file (a document file,
or a tag file with its coverage record), and every tenth entry removes an older tag file. The entries are
the JSON ``Run.commit`` writes, written here directly (the writer's own cost, fsyncs and all, is
measured by the store tests and in docs/SCALE.md); data files are not written (opening reads only the
log). Then a writing run takes the lock, which writes the checkpoint, as it would every
CHECKPOINT_EVERY commits (its time is reported: the writer's cost per checkpoint at that size).
Reported per size, best of three, as wall-clock and CPU seconds (the CPU figure is the one to compare
on a shared machine): the full replay (every entry, as before checkpoints) and the open as readers do
it (newest checkpoint, then the entries after it).

    .venv/bin/python bench/store_open.py [--sizes 1000,20000,100000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from provenance import store as store_mod
from provenance.store import FileEntry, Store


def build(root: Path, n: int) -> float:
    """A store of ``n`` commit entries and its checkpoint; returns the seconds writing a checkpoint takes."""
    Store.open(root, create=True)
    run_id = "20261201T000000Z-bench-000000"
    tag_files: list[str] = []
    last_doc = ""
    for i in range(n):
        entry = {"run_id": run_id, "command": "bench", "committed_at": "", "committed_at_unix": 1.7e9 + i,
                 "add": [], "remove": [], "coverage": [], "drop_coverage": []}
        if i % 2 == 0:
            last_doc = f"documents/bench/{run_id}-{i:07d}.parquet"
            entry["add"] = [FileEntry(last_doc, "documents", 500, 250_000, "0" * 64, {"crawl_id": "bench"}).to_json()]
        else:
            path = f"tags/det/k1/{run_id}-{i:07d}.parquet"
            meta = {"detector": "det", "tag_key": "k1", "doc_file": last_doc}
            entry["add"] = [FileEntry(path, "tags", 500, 20_000, "0" * 64, meta).to_json()]
            entry["coverage"] = [{"detector": "det", "tag_key": "k1", "doc_file": last_doc, "ranges": [[0, 500]]}]
            if i % 10 == 9 and tag_files:
                entry["remove"] = [tag_files.pop(0)]
            tag_files.append(path)
        (root / "_log" / f"{i + 1:020d}.json").write_text(json.dumps(entry))
    store = Store(root)
    with store.run("bench") as run:  # the lock's recovery finds no checkpoint and writes one
        start = time.perf_counter()
        store._write_checkpoint(run._snapshot)  # once more, timed: what a writer pays every CHECKPOINT_EVERY
        return time.perf_counter() - start


def best_of(fn, times: int = 3) -> tuple[float, float]:
    """(wall, CPU) seconds, each the best of ``times``."""
    wall = cpu = float("inf")
    for _ in range(times):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,20000,100000")
    args = parser.parse_args()
    print(f"CHECKPOINT_EVERY = {store_mod.CHECKPOINT_EVERY}")
    print(f"{'entries':>8} {'live files':>10} {'full replay s (wall/cpu)':>25} {'open s (wall/cpu)':>18} "
          f"{'checkpoint MB':>13} {'write s':>8}")
    with tempfile.TemporaryDirectory(prefix="store-open-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            root = Path(tmp) / f"s{n}"
            written = build(root, n)
            store = Store(root)
            full = best_of(lambda: store._read_log(warn_torn=True, checkpoints=False))
            opened = best_of(store.snapshot)
            snap = store.snapshot()
            replayed = store._read_log(warn_torn=True, checkpoints=False)
            assert snap.log_seq == n and (snap.files, snap.removed, snap.coverage) == \
                (replayed.files, replayed.removed, replayed.coverage)
            ckpt = max((root / "_log").glob("*.checkpoint.json.gz"), default=None)
            size = f"{ckpt.stat().st_size / 1e6:.2f}" if ckpt else "-"
            print(f"{n:>8} {len(snap.files):>10} {full[0]:>13.2f} / {full[1]:<9.2f} {opened[0]:>8.3f} / {opened[1]:<7.3f} "
                  f"{size:>13} {written:>8.2f}")


if __name__ == "__main__":
    main()
