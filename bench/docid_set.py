"""The set of known doc_ids ingest and crawl keep: a Python set against ``DocIdSet``, at N doc_ids.

Each in a fresh process: add N doc_ids one by one as ``DocumentSink.add`` does (a membership test, then an
add), and report seconds and the process's peak RSS beyond what it held before (Python, numpy and pyarrow
loaded, the doc_ids not yet made: they are made one at a time from a counter).

    .venv/bin/python bench/docid_set.py [--n 10000000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time


def child(kind: str, n: int) -> None:
    from provenance.documents import DocIdSet

    known = set() if kind == "set" else DocIdSet()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    skipped = 0
    for i in range(n):
        doc_id = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()[:32]
        if doc_id in known:
            skipped += 1
        else:
            known.add(doc_id)
    seconds = time.perf_counter() - t0
    extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps({"kind": kind, "n": n, "seconds": round(seconds, 1), "peak_extra_mb": round(extra),
                      "len": len(known), "skipped": skipped}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.n)
        return 0
    for kind in ("set", "DocIdSet"):
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--n", str(args.n)],
                             capture_output=True, text=True, check=True)
        print(out.stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
