"""WARC import throughput, each extractor against reading alone: python bench/warc.py [--rounds 3] [FILE ...]

Default: the two largest WARCs in ../shared/data/warc. For each file, in rounds (the modes
interleaved, medians reported):
  read                  warcio alone: every record, every payload read (the floor for any import)
  import, no extraction `provenance ingest` with text extraction replaced by a no-op (our reader,
                        decoding of HTTP bodies, hashing, Parquet writes and commits)
  import, <name>        the real import with each extractor of provenance.extract.EXTRACTORS
docs/s counts the documents the import stores (for `read`: the same count over reading's time),
records/s every record in the file (requests, metadata, ... included); the last column is each
mode's rate as a share of reading alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator

import provenance.extract
from provenance.ingest import run_ingest
from provenance.store import Store

SHARED = Path(os.environ.get("PROVENANCE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def read_only(path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    with open(path, "rb") as fh:
        for record in ArchiveIterator(fh):
            record.raw_stream.read()
            n += 1
    return time.perf_counter() - start, n


def timed_import(path: Path, extractor: str | None = None) -> tuple[float, int]:
    """(seconds, documents stored) of one import into a fresh store; extractor None: extraction is a no-op."""
    real_extract = provenance.extract.extract
    if extractor is None:
        provenance.extract.extract = lambda body, content_type, url=None, extractor=None: (
            provenance.extract.Extracted(None, None, None, "none", None))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = run_ingest(Store.open(Path(tmp) / "store", create=True), [path], extractor=extractor)
            return time.perf_counter() - start, result.stored
    finally:
        provenance.extract.extract = real_extract


def main(paths: list[Path], rounds: int) -> None:
    names = list(provenance.extract.EXTRACTORS)
    modes = {"read": None, "import, no extraction": None, **{f"import, {n}": n for n in names}}
    print(f"cpus: {os.cpu_count()}; load: {os.getloadavg()[0]:.2f}; rounds: {rounds} (medians)")
    for name in names:  # warm-up: imports, the public-suffix list, first Parquet write
        timed_import(paths[-1], name)
    for path in paths:
        seconds: dict[str, list[float]] = {m: [] for m in modes}
        records = docs = 0
        for _ in range(rounds):
            for mode, extractor in modes.items():
                if mode == "read":
                    took, records = read_only(path)
                else:
                    took, stored = timed_import(path, extractor)
                    docs = max(docs, stored)
                seconds[mode].append(took)
        mb = path.stat().st_size / 1e6
        print(f"{path.name}: {mb:.2f} MB, {records} records, {docs} documents stored")
        print(f"   {'':24} {'seconds':>8} {'docs/s':>8} {'records/s':>10} {'MB/s':>7} {'of read':>8}")
        read_s = statistics.median(seconds["read"])
        for mode, runs in seconds.items():
            took = statistics.median(runs)
            print(f"   {mode:24} {took:8.3f} {docs / took:8.1f} {records / took:10.0f} {mb / took:7.2f} "
                  f"{read_s / took:8.1%}")
    print(f"load now: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = args.files
    if not files:
        warcs = [p for p in (SHARED / "data" / "warc").rglob("*.warc*") if p.suffix in (".warc", ".gz")]
        files = sorted(warcs, key=lambda p: p.stat().st_size, reverse=True)[:2]
    if not files:
        parser.exit(2, f"bench/warc.py: no WARC files given and none found under {SHARED}/data/warc\n")
    main(files, args.rounds)
