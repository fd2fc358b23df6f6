"""WARC import throughput: python bench/warc.py [FILE ...]

Default: the two largest WARCs in ../shared/data/warc. For each file, these timings:
  parse    warcio alone: every record, every payload read (the floor for any import)
  import   `provenance ingest` with text extraction replaced by a no-op (our reader, hashing,
           Parquet writes and commits)
  <name>   the real import with each extractor of provenance.extract.EXTRACTORS
Records/s counts every record in the file (requests, metadata, ... included); MB/s is the
file's size on disk; docs/s counts the HTML documents stored.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator

import provenance.extract
from provenance.ingest import run_ingest
from provenance.store import Store

SHARED = Path(os.environ.get("PROVENANCE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def parse_only(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        for record in ArchiveIterator(fh):
            record.raw_stream.read()
            n += 1
    return n


def timed_import(path: Path, extractor: str | None = None) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run_ingest(Store.open(Path(tmp) / "store", create=True), [path], extractor=extractor)
        return time.perf_counter() - start, result.records, result.stored


def main(paths: list[Path]) -> None:
    names = list(provenance.extract.EXTRACTORS)
    print(f"{'file':34} {'MB':>5} {'records':>7} {'docs':>5} | {'parse rec/s':>11} | {'import rec/s':>12} | "
          + " | ".join(f"{name + ' docs/s':>17} {'MB/s':>6}" for name in names))
    real_extract = provenance.extract.extract
    for name in names:  # warm-up: imports, the public-suffix list, first Parquet write
        timed_import(paths[-1], name)
    for path in paths:
        mb = path.stat().st_size / 1e6
        start = time.perf_counter()
        records = max(parse_only(path) for _ in range(3))
        parse_s = (time.perf_counter() - start) / 3
        provenance.extract.extract = lambda body, content_type, url=None, extractor=None: (
            provenance.extract.Extracted(None, None, None, "none", None))
        try:
            import_s, _, _ = timed_import(path)
        finally:
            provenance.extract.extract = real_extract
        full = {name: timed_import(path, name) for name in names}
        docs = full[names[0]][2]
        print(f"{path.name[:34]:34} {mb:5.2f} {records:7d} {docs:5d} | {records / parse_s:11.0f} | "
              f"{records / import_s:12.0f} | "
              + " | ".join(f"{docs / full_s:17.1f} {mb / full_s:6.2f}" for full_s, _, _ in full.values()))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        files = [Path(p) for p in sys.argv[1:]]
    else:
        warcs = [p for p in (SHARED / "data" / "warc").rglob("*.warc*") if p.suffix in (".warc", ".gz")]
        files = sorted(warcs, key=lambda p: p.stat().st_size, reverse=True)[:2]
    if not files:
        sys.exit(f"no WARC files given and none found under {SHARED}/data/warc")
    main(files)
