"""Documents per second per core of each per-document poison detector on real pages.

Pages: every HTML page under ../shared/data/pages, ingested once into a temporary store through the real
ingest (text extraction included, not timed). Each detector's ``tag_batch`` then runs in this process, on
one core, over the stored batches (the columns it needs, as the runner reads them); ``--repeat`` passes,
the best kept. Prints docs/s per detector and for all of them together (target >= 200 pages/s/core).

    .venv/bin/python bench/poison.py [--repeat 3] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from poison_gen import PAGES, read_pages  # noqa: E402

from provenance.extract import decode  # noqa: E402
from provenance.ingest import run_ingest  # noqa: E402
from provenance.plugins.backdoor_tail import BackdoorTail  # noqa: E402
from provenance.plugins.hidden_content import HiddenContent  # noqa: E402
from provenance.plugins.invisible_unicode import InvisibleUnicode  # noqa: E402
from provenance.plugins.keyword_stuffing import KeywordStuffing  # noqa: E402
from provenance.plugins.prompt_injection import PromptInjection  # noqa: E402
from provenance.store import Store  # noqa: E402

DETECTORS = [InvisibleUnicode, HiddenContent, PromptInjection, BackdoorTail, KeywordStuffing]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, default=PAGES)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    if not args.pages.exists():
        print(f"bench: {args.pages} not found (needs ../shared)", file=sys.stderr)
        return 1
    pages = read_pages(args.pages)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pages.jsonl"
        src.write_text("".join(json.dumps({"url": f"https://bench.example/{i}", "html": decode(body, None)[1]}) + "\n"
                               for i, (_, body) in enumerate(pages)))
        store = Store.open(Path(tmp) / "store", create=True)
        run_ingest(store, [src], crawl_id="bench")
        files = sorted((Path(tmp) / "store" / "documents").rglob("*.parquet"))
        table = pq.read_table(files[0]) if len(files) == 1 else \
            __import__("pyarrow").concat_tables([pq.read_table(f) for f in files])
    n = table.num_rows
    mb = sum(len(r or b"") for r in table.column("raw").to_pylist()) / 1e6
    print(f"poison detectors on {n} real pages ({mb:.1f} MB of HTML), one core, best of {args.repeat}")
    total = 0.0
    for cls in DETECTORS:
        batches = table.select(["doc_id", *cls.needs]).to_batches(max_chunksize=args.batch_size)
        detector = cls()
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.process_time()
            for batch in batches:
                detector.tag_batch(batch)
            best = min(best, time.process_time() - t0)
        total += best
        print(f"  {cls.name:<18} {n / best:8.0f} docs/s  ({best:.2f} s CPU)")
    print(f"  {'all together':<18} {n / total:8.0f} docs/s  (target >= 200)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
