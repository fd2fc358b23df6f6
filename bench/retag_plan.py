"""Cost of finding what a late capture re-tags (provenance.runner.retag_plan) against the previous_* join's own
pass over every capture (PreviousLookup), on the same store, in the same process.

Builds a store of N URLs captured twice (short generated texts, half of the second captures changed), then times
PreviousLookup's construction (the chain a tag run needing "previous" builds once) and retag_plan in its worst
case: every document covered and no chain record, so every capture counts as new.

    .venv/bin/python bench/retag_plan.py [--urls 50000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time


def main(argv=None) -> int:
    from provenance import config
    from provenance.pluginmanager import get_plugin_manager
    from provenance.runner import PreviousLookup, retag_plan, select_detectors
    from provenance.store import Store
    from provenance.testing import make_store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--urls", type=int, default=50_000)
    args = ap.parse_args(argv)
    rng = random.Random(0)
    docs = [{"url": f"https://h{u % 500}.test/p{u}", "text": f"page {u} text {rng.randint(0, 1) * c} and more words",
             "fetched_at": f"2024-0{c + 1}-01T00:00:00Z"} for u in range(args.urls) for c in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        make_store(tmp, docs, rows_per_file=5000)
        snap = Store.open(tmp).snapshot()
        (drun,) = select_detectors(get_plugin_manager(), config.load(None), enable=["content_drift"])
        t = time.perf_counter()
        PreviousLookup(snap.paths("documents"), snap.paths("fetches")).close()
        join_s = time.perf_counter() - t
        snap.coverage.append({"detector": drun.name, "tag_key": drun.tag_key,
                              "doc_file": snap.entries("documents")[0].path, "ranges": [[0, 1]]})
        t = time.perf_counter()
        _record, rows = retag_plan(snap, drun, {})
        plan_s = time.perf_counter() - t
    print(f"{len(docs):,} documents: previous_* join {join_s:.2f} s, retag_plan (all captures new) {plan_s:.2f} s "
          f"(ratio {plan_s / join_s:.2f}), {sum(map(len, rows.values())):,} rows to re-tag")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
