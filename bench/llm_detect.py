"""Documents/s per core of each LLM detector on 2,000-character documents (CPU time).

Documents: the texts of ../shared/data/detect/labelled-dev.parquet cut or repeated to 2,000 characters.
``llm_ngram`` and ``llm_markers``: the detector's ``tag_batch`` over Arrow batches of 1,000, as the runner
hands them (``llm_ngram`` with ``min_score`` 0, so every document's evidence is built too).
``known_llm_text``: ``near_duplicate`` is a corpus detector, so it runs through the real runner over a
temporary store with the LLM reference (12,069 texts) as reference set ``llm``: observe (MinHash), finish
(reference matching) and the runner's writes, ingest excluded. CPU time counts every thread (DuckDB's too) and
the runner's worker processes (detectors run isolated in their own process), so the figure is per core.
``llm_lm`` needs model weights on disk and is left out (it runs on a GPU when one is visible).

    .venv/bin/python bench/llm_detect.py [--docs 4000] [--out bench/results/llm_detect.json]

Target (issue 14): llm_ngram >= 500 documents/s per core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from reference import LABELLED_DEV, LLM_DATA, ingest_records, read_labelled, tag_with  # noqa: E402

from provenance.plugins.llm_markers import LlmMarkers  # noqa: E402
from provenance.plugins.llm_ngram import LlmNgram  # noqa: E402
from provenance.references import add_reference  # noqa: E402

TARGET = 500.0


def cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children (the runner's detector workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def per_batch(detector, texts: list[str]) -> float:
    """CPU seconds of ``tag_batch`` over batches of 1,000 (after one warm-up batch)."""
    batches = [pa.record_batch({"doc_id": [str(i) for i in range(s, min(s + 1000, len(texts)))],
                                "text": texts[s:s + 1000]}) for s in range(0, len(texts), 1000)]
    detector.tag_batch(batches[0])
    t0 = cpu_seconds()
    for batch in batches:
        detector.tag_batch(batch)
    return cpu_seconds() - t0


def through_runner(texts: list[str]) -> float:
    """CPU seconds of a ``near_duplicate`` tag run (known_llm_text against the LLM reference)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = ingest_records([{"url": f"https://bench.example/{i}", "text": t} for i, t in enumerate(texts)],
                               Path(tmp))
        add_reference(store, "llm", [LLM_DATA])
        t0 = cpu_seconds()
        tag_with(store, ["near_duplicate"])
        return cpu_seconds() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "llm_detect.json")
    args = ap.parse_args(argv)
    rows = read_labelled(LABELLED_DEV, "bench", ("text",))
    if rows is None or not LLM_DATA.is_file():
        return 2
    texts = [r["text"] for r in rows if r["text"]][:args.docs]
    texts = [(t * (args.chars // len(t) + 1))[:args.chars] for t in texts]
    results = {}
    for name, cpu in (("llm_ngram", lambda: per_batch(LlmNgram(min_score=0.0), texts)),
                      ("llm_markers", lambda: per_batch(LlmMarkers(), texts)),
                      ("known_llm_text (near_duplicate, runner)", lambda: through_runner(texts))):
        seconds = cpu()
        results[name] = {"documents": len(texts), "cpu_s": round(seconds, 3),
                         "docs_per_s_per_core": round(len(texts) / seconds, 1)}
        print(f"{name:<40} {len(texts)} documents of {args.chars} characters in {seconds:6.2f} s CPU: "
              f"{len(texts) / seconds:>9,.0f} documents/s per core")
    ok = results["llm_ngram"]["docs_per_s_per_core"] >= TARGET
    print(f"llm_ngram target >= {TARGET:.0f} documents/s per core: {'met' if ok else 'MISSED'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"chars": args.chars, "machine": {"cpu_count": os.cpu_count(),
                                    "processor": platform.processor() or platform.machine(),
                                    "python": platform.python_version()},
                                    "llm_ngram_version": LlmNgram.version, "detectors": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
