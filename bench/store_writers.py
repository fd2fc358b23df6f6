"""Concurrent writers: W processes committing to one store at once, each N commits of a one-row file.

Commits per second over all writers, and how many commits lost the race for their log number (each retry
reads the entries it missed). The figure docs/SCALE.md gives for optimistic concurrency.

    .venv/bin/python bench/store_writers.py [N] [W,W,...]
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time

import pyarrow as pa

from provenance.store import Store


def _writer(root: str, name: str, n: int, start_at: float) -> None:
    while time.time() < start_at:  # all writers start together
        time.sleep(0.001)
    with Store(root).run("bench") as run:
        for i in range(n):
            table = pa.table({"doc_id": [f"{name}-{i}"], "score": [0.5]})
            run.commit(add=[run.write("state", table, "det/k1", meta={"detector": "det", "state_key": "k1"})])


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    counts = [int(w) for w in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1, 2, 4]
    ctx = multiprocessing.get_context("spawn")
    for writers in counts:
        with tempfile.TemporaryDirectory(prefix="store-writers-") as tmp:
            root = tmp + "/s"
            Store.open(root, create=True)
            start_at = time.time() + 2.0  # after the spawned interpreters have imported
            procs = [ctx.Process(target=_writer, args=(root, f"w{k}", n, start_at)) for k in range(writers)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            wall = time.time() - start_at
            runs = Store(root).runs()
            assert all(r["status"] == "succeeded" for r in runs) and len(runs) == writers
            commits = sum(r["commits"] for r in runs)
            retries = sum(r["commit_retries"] for r in runs)
            print(f"{writers} writer(s) x {n} commits: {commits} commits in {wall:.1f} s = {commits / wall:.0f}/s, "
                  f"{retries} lost races")


if __name__ == "__main__":
    main()
