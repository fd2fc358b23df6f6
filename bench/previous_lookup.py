"""Memory and time of the tag runner's previous_* join (provenance.runner.PreviousLookup) as the corpus grows.

Builds stores of N URLs captured twice (generated text of ~20 KB per capture, later captures linked only by
fetched_at), then adds previous_* columns to every batch of every document file, as a tag run does for a
detector needing "previous". Prints, per size, the peak RSS growth over reading the same batches without the
join, and the time. Bounded memory means the growth stays flat as N grows.

    .venv/bin/python bench/previous_lookup.py [--sizes 5000 15000]
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_WORDS = [f"word{i}" for i in range(5000)]


def build(root: Path, n: int) -> None:
    from provenance.testing import make_document, make_store

    rng = random.Random(1)

    def text() -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(2500))

    for start in range(0, n, 1000):
        urls = range(start, min(n, start + 1000))
        make_store(root, [make_document(i, url=f"https://example.org/{i}", text=text(),
                                        fetched_at="2024-01-01") for i in urls], rows_per_file=500)
        make_store(root, [make_document(n + i, url=f"https://example.org/{i}", text=text(),
                                        fetched_at="2025-01-01") for i in urls], rows_per_file=500)


def measure(root: Path, with_lookup: bool) -> None:
    from provenance.runner import PreviousLookup, _iter_batches
    from provenance.store import Store

    paths = Store.open(root).snapshot().paths("documents")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    lookup = PreviousLookup(paths) if with_lookup else None
    found = 0
    for path in paths:
        for _, batch in _iter_batches(path, ["doc_id", "previous_doc_id", "text"], 1000):
            if lookup is not None:
                found += lookup.add(batch).column("previous_text").is_valid().to_numpy(zero_copy_only=False).sum()
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(f"{growth:.0f} {time.perf_counter() - t0:.2f} {found}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 15000])
    parser.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        measure(Path(args._measure[0]), args._measure[1] == "lookup")
        return 0
    print(f"{'urls':>6} {'captures':>8} {'batches only MiB':>16} {'with previous MiB':>17} {'time s':>7} {'linked':>7}")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "store"
            build(root, n)
            # Each measurement in its own process, so peak RSS is its own.
            out = {mode: subprocess.run([sys.executable, __file__, "--_measure", str(root), mode], check=True,
                                        capture_output=True, text=True).stdout.split() for mode in ("plain", "lookup")}
            print(f"{n:>6} {2 * n:>8} {out['plain'][0]:>16} {out['lookup'][0]:>17} {out['lookup'][1]:>7} "
                  f"{out['lookup'][2]:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
