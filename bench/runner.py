"""How much the tag runner costs on top of the detector itself.

Peer: the same per-document detector called directly on the same Arrow
batches in this process (no store, no isolation). Ours: `run_tag` over a real
store — Parquet reads, a worker process per detector (or inline), schema
validation, tag files and commits. Reported as docs/s and as a ratio to the
peer, for a cheap detector (worst case for overhead) and for one costing
~2 ms per document (a realistic per-document classifier).

    .venv/bin/python bench/runner.py [--docs 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import provenance
from provenance.config import DEFAULTS
from provenance.documents import DocumentSink, build_document
from provenance.pluginmanager import get_plugin_manager
from provenance.runner import run_tag
from provenance.store import Store


class UpperRatio(provenance.Detector):
    """Cheap: vectorised share of upper-case characters."""

    name, version, category, needs = "bench_upper_ratio", "1", "quality", ("text",)

    def tag_batch(self, batch):
        text = batch.column("text")
        ratio = pc.divide(pc.cast(pc.utf8_length(pc.replace_substring_regex(text, "[^A-Z]", "")), pa.float64()),
                          pc.cast(pc.max_element_wise(pc.utf8_length(text), 1), pa.float64()))
        mask = pc.fill_null(pc.greater(ratio, 0.3), False)
        return self.tags(batch.column("doc_id").filter(mask), "shouting", score=ratio.filter(mask))


class Costly(provenance.Detector):
    """~2 ms of Python per document, like a small per-document classifier."""

    name, version, category, needs = "bench_costly", "1", "quality", ("text",)

    def tag_batch(self, batch):
        out = []
        for doc_id, text in zip(batch.column("doc_id").to_pylist(), batch.column("text").to_pylist()):
            deadline = time.perf_counter() + 0.002
            while time.perf_counter() < deadline:
                pass
            if text and text[:1].isupper():
                out.append({"doc_id": doc_id, "tag": "capitalised", "score": 0.1})
        return out


class BenchPlugin:
    @provenance.hookimpl
    def register_detectors(self, register):
        register(UpperRatio)
        register(Costly)


def make_store(root: Path, n: int) -> Store:
    store = Store.open(root, create=True)
    with store.run("ingest") as run:
        sink = DocumentSink(run, "bench", set(), flush_rows=5000)
        for i in range(n):
            text = f"Document {i}: " + ("some ordinary words of prose " * 40) + ("LOUD " * (i % 7))
            sink.add(build_document(url=f"https://bench.example/{i}", body=None, text=text, source="jsonl",
                                    crawl_id="bench", run_id=run.run_id))
        sink.flush()
    return store


def peer(store: Store, detector_cls, batch_size: int) -> float:
    detector = detector_cls()
    started = time.perf_counter()
    n = 0
    for path in store.snapshot().paths("documents"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=["doc_id", "text"]):
            detector.tag_batch(batch)
            n += batch.num_rows
    return n / (time.perf_counter() - started)


def ours(store: Store, pm, name: str, isolation: str, batch_size: int, n: int) -> float:
    settings = {**DEFAULTS, "tag": {**DEFAULTS["tag"], "isolation": isolation, "batch_size": batch_size}}
    started = time.perf_counter()
    summary = run_tag(store, pm, settings, enable=[name])
    elapsed = time.perf_counter() - started
    assert summary.detectors[name].rows == n, summary.to_json()
    return n / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pm = get_plugin_manager()
        pm.register_plugin(BenchPlugin(), "bench", "1", None)
        for cls, n in ((UpperRatio, args.docs), (Costly, min(args.docs, 3000))):
            store = make_store(Path(tmp) / cls.name, n)
            base = peer(store, cls, args.batch_size)
            print(f"{cls.name} ({n} docs): direct call {base:,.0f} docs/s")
            for isolation in ("process", "inline"):
                # fresh store per measurement so nothing is skipped as already covered
                fresh = make_store(Path(tmp) / f"{cls.name}-{isolation}", n)
                rate = ours(fresh, pm, cls.name, isolation, args.batch_size, n)
                print(f"  run_tag isolation={isolation:<8} {rate:,.0f} docs/s  ratio {rate / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
