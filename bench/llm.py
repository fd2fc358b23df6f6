"""Documents/s per core of ``llm_ngram`` on 2,000-character documents (CPU time, one process).

Documents: the dev texts of ../shared/data/detect/labelled-dev.parquet cut or repeated to 2,000 characters,
scored with the detector's ``tag_batch`` over Arrow batches of 1,000, as the runner hands them.

    .venv/bin/python bench/llm.py [--docs 4000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from provenance.plugins.llm_ngram import LlmNgram

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "detect" / "labelled-dev.parquet"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--chars", type=int, default=2000)
    args = ap.parse_args(argv)
    if not DEV.is_file():
        print(f"bench: {DEV} not found (needs ../shared)", file=sys.stderr)
        return 2
    texts = [t for t in pq.read_table(DEV, columns=["text"]).column("text").to_pylist() if t]
    texts = [(t * (args.chars // len(t) + 1))[:args.chars] for t in texts[:args.docs]]
    detector = LlmNgram(min_score=0.0)  # tag every document: the evidence is built too
    batches = [pa.record_batch({"doc_id": [str(i) for i in range(s, min(s + 1000, len(texts)))],
                                "text": texts[s:s + 1000]}) for s in range(0, len(texts), 1000)]
    detector.tag_batch(batches[0])  # model loaded and warm
    t0 = time.process_time()
    for batch in batches:
        detector.tag_batch(batch)
    cpu = time.process_time() - t0
    print(f"llm_ngram: {len(texts)} documents of {args.chars} characters in {cpu:.2f} s CPU: "
          f"{len(texts) / cpu:,.0f} documents/s per core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
