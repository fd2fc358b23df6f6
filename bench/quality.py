"""Documents/s per core: our quality and language detectors against datatrove's filters, same documents.

Documents: eval/quality.py's (every page of ../shared/data/pages, --per-source human
reference texts of each source). Ours: each detector's tag_batch over Arrow batches of
1000, CPU time (time.process_time) in this process. datatrove: its filters' ``filter``
per document in its own environment (--datatrove-python), CPU time in that child, on the
same texts. One process each: documents/s per core.

    .venv/bin/python bench/quality.py [--per-source 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from quality import FILTERS, load_documents, run_datatrove, run_ours  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-source", type=int, default=300)
    ap.add_argument("--datatrove-python", default=os.environ.get("DATATROVE_PYTHON", "/tmp/dt/bin/python"))
    args = ap.parse_args(argv)
    docs = load_documents(args.per_source)
    if docs is None:
        print("bench: skipped: ../shared/data not found")
        return 0
    texts = [d["text"] for d in docs]
    print(f"{len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f} M characters")
    _, ours = run_ours(texts)
    from provenance.plugins.language import Language

    lid = Language(**Language.validate_options({}))
    t0 = time.process_time()
    lid.tag_batch(__import__("pyarrow").record_batch({"doc_id": [str(i) for i in range(len(texts))], "text": texts}))
    ours["language"] = time.process_time() - t0
    dt = run_datatrove(args.datatrove_python, texts, list(FILTERS.values()))
    print(f"{'detector':20s} {'ours docs/s':>12s} {'datatrove docs/s':>17s}")
    for name, seconds in ours.items():
        theirs = dt["cpu_s"][FILTERS[name]] if dt and name in FILTERS else None
        print(f"{name:20s} {len(texts) / seconds:12.0f} {len(texts) / theirs if theirs else float('nan'):17.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
