"""Commit latency of the store: one one-row Parquet file written and committed (fsyncs included), N times.

The figure docs/SCALE.md compares with Delta Lake's append commit.

    .venv/bin/python bench/store_commit.py [N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import pyarrow as pa

from provenance.store import Store


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory(prefix="store-commit-") as tmp:
        store = Store.open(tmp + "/s", create=True)
        latencies = []
        with store.run("bench") as run:
            for i in range(n):
                table = pa.table({"doc_id": [f"d{i}"], "score": [0.5]})
                start = time.perf_counter()
                run.commit(add=[run.write("state", table, "det/k1", meta={"detector": "det", "state_key": "k1"})])
                latencies.append(time.perf_counter() - start)
    latencies.sort()
    print(f"{n} commits of a one-row Parquet file (fsynced, a checkpoint every 100): median "
          f"{statistics.median(latencies) * 1000:.1f} ms, p90 {latencies[int(0.9 * n)] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
