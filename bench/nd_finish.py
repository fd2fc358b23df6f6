"""near_duplicate's (or exact_duplicate's) ``finish`` alone at corpus scale, under the tag worker's memory limit:
seconds and peak RSS.

``bench/scale.py`` measures the whole pipeline, but at 10M documents its corpus takes most of an hour to
generate and ingest on a shared 2-core machine. ``finish`` reads only the detector's state rows, so this
writes them directly: one state file of 5,000 rows per 5,000 documents, with the detector's schema, random
signatures (no two unrelated documents share a band key) and ``bench/scale.py``'s shares of copies: 2% exact
copies and 5% near copies (each signature value replaced with probability ``--edit``, Jaccard about 0.9) of
one of the 1,000 documents before, as its generator draws them. Then a fresh process calls ``finish`` under
``limit_memory(--worker-memory-mb)``, as a tag worker does ([tag] worker_memory_mb, default 4096), and reports
wall seconds, peak RSS, tags by kind and a digest of the tag rows (the same for the same rows).
``--detector exact_duplicate`` writes that detector's state instead (a text hash per document, the copies'
the same as their source's) and times its ``finish``.

    .venv/bin/python bench/nd_finish.py --docs 10000000 --dir /tmp/ndstate [--module plugins/near_duplicate.py]
                                        [--detector near_duplicate|exact_duplicate]

``--module`` loads ``NearDuplicate`` from another copy of the plugin (an older commit) to compare on the same
state files; ``--reuse`` keeps state files already written for the same arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
PART = 5_000


CLASSES = {"near_duplicate": "NearDuplicate", "exact_duplicate": "ExactDuplicate"}


def detector_class(detector: str, module: str | None):
    if not module:
        module = str(ROOT / "plugins" / f"{detector}.py")
    spec = importlib.util.spec_from_file_location(f"{detector}_under_test", module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, CLASSES[detector])


def write_exact_state(n: int, out: Path, seed: int, exact_share: float) -> list[str]:
    """exact_duplicate's state rows: a random text hash per document, a copy (``exact_share`` of them) taking
    the hash of one of the 1,000 documents before."""
    rng = np.random.default_rng(seed)
    start = int(datetime(2022, 1, 1, tzinfo=timezone.utc).timestamp() * 1e6)
    previous = np.zeros((0, 32), np.uint8)
    paths = []
    for s in range(0, n, PART):
        m = min(PART, n - s)
        digest = rng.integers(0, 256, (m, 32), dtype=np.uint8)
        source = rng.integers(1, 1001, m)
        for i in np.flatnonzero((rng.random(m) < exact_share) & (s + np.arange(m) >= source)).tolist():
            back = i - int(source[i])
            digest[i] = digest[back] if back >= 0 else previous[back]
        previous = digest
        ids = np.arange(s, s + m)
        table = pa.table({
            "doc_id": pa.array([f"{i:032x}" for i in ids.tolist()]),
            "text_sha256": pa.array([d.tobytes().hex() for d in digest]),
            "fetched_at": pa.array(start + rng.integers(0, 2 * 365 * 86400 * 10 ** 6, m), pa.int64()).cast(
                pa.timestamp("us", "UTC")),
            "domain": pa.array([f"site{i % 2000}.example" for i in ids.tolist()]),
            "n_chars": pa.array(rng.integers(1500, 2500, m), pa.int64()),
        })
        paths.append(str(out / f"state-{s // PART:05d}.parquet"))
        pq.write_table(table, paths[-1])
    return paths


def write_state(n: int, out: Path, seed: int, exact_share: float, near_share: float, edit: float) -> list[str]:
    from provenance.plugins.near_duplicate import NearDuplicate, band_keys, lsh_bands

    detector = NearDuplicate(**NearDuplicate.validate_options({}))
    o = detector.options
    bands, rows = lsh_bands(o["threshold"], o["num_perm"], o["fp_weight"], o["fn_weight"])
    schema = detector.state_schema()
    rng = np.random.default_rng(seed)
    start = int(datetime(2022, 1, 1, tzinfo=timezone.utc).timestamp() * 1e6)
    previous = np.zeros((0, o["num_perm"]), np.uint32)
    paths = []
    for s in range(0, n, PART):
        m = min(PART, n - s)
        sig = rng.integers(0, 1 << 32, (m, o["num_perm"]), dtype=np.uint32)
        roll = rng.random(m)
        source = rng.integers(1, 1001, m)  # how many documents back the copied one is
        for i in np.flatnonzero((roll < exact_share + near_share) & (s + np.arange(m) >= source)).tolist():
            back = i - int(source[i])  # in this part (copies of copies too), else in the one before
            sig[i] = sig[back] if back >= 0 else previous[back]
            if roll[i] >= exact_share:
                changed = rng.random(o["num_perm"]) < edit
                sig[i, changed] = rng.integers(0, 1 << 32, int(changed.sum()), dtype=np.uint32)
        previous = sig
        keys = band_keys(sig, bands, rows)
        ids = np.arange(s, s + m)
        sites = pa.array([f"site{i % 2000}.example" for i in ids.tolist()])
        table = pa.Table.from_arrays([
            pa.array([f"{i:032x}" for i in ids.tolist()]),
            pa.array(start + rng.integers(0, 2 * 365 * 86400 * 10 ** 6, m), pa.int64()).cast(schema.field(1).type),
            sites, sites,
            pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1)), o["num_perm"]),
            pa.ListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int32) * bands), pa.array(keys.reshape(-1))),
        ], schema=schema)
        paths.append(str(out / f"state-{s // PART:05d}.parquet"))
        pq.write_table(table, paths[-1])
    return paths


def finish_child(state_dir: str, scratch: str, detector_name: str, module: str | None, memory_mb: int) -> None:
    """In a fresh process: finish under the worker's memory limit; prints one JSON line."""
    from provenance.detectors import CorpusState, output_to_table
    from provenance.isolation import limit_memory

    cls = detector_class(detector_name, module)
    limit_memory(memory_mb)  # as the tag worker does before it builds the detector
    detector = cls(**cls.validate_options({}))
    files = sorted(str(p) for p in Path(state_dir).glob("state-*.parquet"))
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    digest, error = 0, None  # the sum of the rows' SHA-256: the same for the same rows in any order
    try:
        for part in detector.finish(CorpusState(state_files=files, scratch_dir=scratch)):
            table = output_to_table(part, detector)
            tags = table.column("tag").to_pylist()
            for tag in set(tags):
                counts[tag] = counts.get(tag, 0) + tags.count(tag)
            for row in zip(*(table.column(c).to_pylist() for c in ("doc_id", "tag", "score", "evidence"))):
                digest += int.from_bytes(hashlib.sha256(repr(row).encode()).digest(), "big")
    except MemoryError as exc:  # pyarrow.ArrowMemoryError is one
        where = traceback.extract_tb(exc.__traceback__)[-3:]
        error = f"{type(exc).__name__}: {exc} (at {'; '.join(f'{f.name}:{f.lineno}' for f in where)})"
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1),
                      "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "tags": counts, "digest": f"{digest % (1 << 256):064x}"[:16], "error": error}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--dir", help="where the state files (and the scratch directory) go")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact-share", type=float, default=0.02)
    ap.add_argument("--near-share", type=float, default=0.05)
    ap.add_argument("--edit", type=float, default=0.1)
    ap.add_argument("--worker-memory-mb", type=int, default=4096)
    ap.add_argument("--detector", choices=sorted(CLASSES), default="near_duplicate")
    ap.add_argument("--module", default=None, help="a copy of the detector's module to load it from")
    ap.add_argument("--reuse", action="store_true", help="keep state files already written with these arguments")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        finish_child(args.child[0], args.child[1], args.detector, args.module, args.worker_memory_mb)
        return 0
    if not args.dir:
        ap.error("--dir is required")
    state = Path(args.dir) / f"{args.detector}-{args.docs}-{args.seed}-{args.exact_share}-{args.near_share}-{args.edit}"
    if not (args.reuse and (state / "complete").exists()):
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir(parents=True)
        t0 = time.perf_counter()
        if args.detector == "exact_duplicate":
            write_exact_state(args.docs, state, args.seed, args.exact_share)
        else:
            write_state(args.docs, state, args.seed, args.exact_share, args.near_share, args.edit)
        (state / "complete").touch()
        print(f"state of {args.docs:,} documents written in {time.perf_counter() - t0:.0f} s (untimed below)",
              flush=True)
    with tempfile.TemporaryDirectory(prefix="nd-scratch-", dir=args.dir) as scratch:
        cmd = [sys.executable, __file__, "--child", str(state), scratch,
               "--worker-memory-mb", str(args.worker_memory_mb), "--detector", args.detector] + \
            (["--module", args.module] if args.module else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"finish exited {out.returncode}:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"docs": args.docs, "worker_memory_mb": args.worker_memory_mb,
                      "module": args.module or f"plugins/{args.detector}.py", **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
