"""Where an export's time goes: merging sorted files or the split pass and reading ranges back, writing the
Parquet, and the rest.

Runs ``run_export`` on an existing store (what nothing flagged, as ``bench/scale.py`` exports) with the export's
steps wrapped. A store whose document files are in doc_id order is merged: ``_merge_step`` (one step's rows read
from every file and the selection, sorted and filtered, on the second thread while the main one writes the previous
step). Else, or with ``--sort``, it is sorted through range files: ``_split_by_prefix`` (DuckDB's scan and the cut
into range files), ``_read_range`` (a range file read back, on the second thread that then sorts it while the main
one writes the previous) and ``ParquetWriter.write_table`` (a sorted range written); what is left of the export is
the selection and the manifest's queries, timed apart too; and the main thread's waits on the second
(``Future.result``). Peak RSS is the process's. For each: wall seconds, CPU seconds of the whole process (all
threads; user, and system: the kernel's reading, writing and page cache work) and the bytes it read from and wrote
to the disk (``/proc/self/io``: bytes that came from the page cache are not counted), and the CPU of the thread
that ran the step (``time.thread_time``: what the step itself cost, where the process's columns add the other
thread's). ``--bucket-share 0.01`` makes a 1M-document store take 256 ranges, as 10M does under the default.

``--memory-limit-gb G`` runs both in a memory cgroup of G GB (root, cgroup v1's memory controller or v2), which
bounds the page cache with the process's own memory: a machine whose memory holds neither a 1M nor a 10M
export's working set, so that the two sizes are compared in the same regime (on this VM the 1M export fits in
its page cache and the 10M does not, and memory beyond the page cache costs more here than it would elsewhere;
docs/SCALE.md).

``--peer`` first runs, in the same process, DuckDB's own ``COPY`` of the same selection and columns with the same
compression and row groups, in no order (the export sorts by doc_id), its file fsynced as the export's are:
what DuckDB alone takes for the same work, less the order, as a peer whose ratio cancels this machine's speed
of the day. Before each of the two, the store's files are dropped from the page cache (``POSIX_FADV_DONTNEED``
on each; no root needed), so both read the store from disk.

    .venv/bin/python bench/export_phases.py --store STORE [--out DIR] [--memory-mb 1024] [--bucket-share S] [--peer]
        [--memory-limit-gb G] [--sort] [--drop-behind auto|on|off]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from provenance import export
from provenance.sql import connect
from provenance.store import Store


def io_bytes() -> tuple[int, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["read_bytes"]), int(fields["write_bytes"])


def sample() -> tuple[float, float, float, int, int, float]:
    times = os.times()  # the process's CPU: user (our code, Arrow, DuckDB) and system (the kernel: I/O, page cache)
    return (time.perf_counter(), times.user, times.system, *io_bytes(), time.thread_time())


FIELDS = 6  # wall, user CPU, system CPU, bytes read, bytes written, CPU of the calling thread
# Timed on the second thread while the main one writes: not in the sum the rest is worked out from (and their
# CPU and bytes are the whole process's over those intervals).
READ_BACK = "(range files read back, on the second thread)"
MERGE_READ = "(merge steps read and sorted, on the second thread)"
OVERLAPPING = (READ_BACK, MERGE_READ)
WAITS = "main thread waiting for the second"
totals: dict[str, list[float]] = defaultdict(lambda: [0.0] * FIELDS + [0])


_in_step = threading.local()


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        if getattr(_in_step, "name", None):  # inside another timed step of this thread (the split's waits): its
            # time is that step's, counted once
            return fn(*args, **kwargs)
        before = sample()
        _in_step.name = name
        try:
            return fn(*args, **kwargs)
        finally:
            _in_step.name = None
            after = sample()
            t = totals[name]
            for i in range(FIELDS):
                t[i] += after[i] - before[i]
            t[FIELDS] += 1
    return wrapper


def drop_store_pages(root: Path) -> None:
    """The store's files out of the page cache (their pages are clean: dropped, not written)."""
    for path in root.rglob("*.parquet"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def enter_memory_cgroup(limit_gb: float) -> Path:
    """Move this process into a new memory cgroup of ``limit_gb`` beneath its own; returns the cgroup's directory.
    Page cache is charged to the cgroup of the process that reads or writes it, so the limit bounds both."""
    limit = int(limit_gb * 2**30)
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):  # v1
            group, limit_file = Path("/sys/fs/cgroup/memory") / path.lstrip("/"), "memory.limit_in_bytes"
            break
    else:  # v2: one unified hierarchy
        path = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                    if line.startswith("0::"))
        group, limit_file = Path("/sys/fs/cgroup") / path.lstrip("/"), "memory.max"
    child = group / f"export-phases-{os.getpid()}"
    try:
        child.mkdir()
        (child / limit_file).write_text(str(limit))
        (child / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        sys.exit(f"--memory-limit-gb: cannot make a memory cgroup under {group} ({exc}); it needs root and a "
                 f"memory controller")
    return child


def leave_memory_cgroup(child: Path) -> None:
    (child.parent / "cgroup.procs").write_text(str(os.getpid()))
    child.rmdir()


def peer_copy(store: Store, out: Path, memory_mb: int | None) -> tuple[list[float], int]:
    """DuckDB's COPY of what the export selects by default, unsorted: (wall, user, system, read, written), rows."""
    out.mkdir()
    data_path = out / "documents.parquet"
    start = sample()
    con = connect(store, memory_limit_mb=memory_mb or export.EXPORT_MEMORY_MB, spill_dir=out / ".spill",
                  settings=export.EXPORT_SETTINGS)
    try:
        selected = f"SELECT doc_id FROM {export.SELECTED_FROM} WHERE {export.DEFAULT_WHERE}"
        con.execute(f"COPY (SELECT * EXCLUDE (raw) FROM documents WHERE doc_id IN ({selected})) TO '{data_path}' "
                    f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {export.EXPORT_ROW_GROUP_ROWS})")
    finally:
        con.close()
    export._sync_tree(out)  # fsynced as the export's files are
    end = sample()
    return [end[i] - start[i] for i in range(FIELDS)], pq.ParquetFile(data_path).metadata.num_rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--out", default=None, help="parent directory of the export (default: a temporary one)")
    ap.add_argument("--memory-mb", type=int, default=None)
    ap.add_argument("--bucket-share", type=float, default=None,
                    help=f"the share of the memory limit a range may take (default {export.EXPORT_BUCKET_SHARE})")
    ap.add_argument("--peer", action="store_true",
                    help="first run DuckDB's unsorted COPY of the same selection, and report the ratio")
    ap.add_argument("--memory-limit-gb", type=float, default=None,
                    help="run in a memory cgroup of this size, page cache included (root)")
    ap.add_argument("--sort", action="store_true",
                    help="sort through range files even when the store's document files could be merged")
    ap.add_argument("--drop-behind", choices=("auto", "on", "off"), default="auto",
                    help="drop the store's and the output's pages from the page cache as the export goes "
                         "(default: auto, when the store's document files exceed a quarter of the memory)")
    args = ap.parse_args(argv)
    export.EXPORT_DROP_BEHIND = {"auto": None, "on": True, "off": False}[args.drop_behind]
    if args.sort:
        export._mergeable = lambda *_args: False
    cgroup = enter_memory_cgroup(args.memory_limit_gb) if args.memory_limit_gb else None
    if args.bucket_share is not None:
        export.EXPORT_BUCKET_SHARE = args.bucket_share
    export._split_by_prefix = timed("split pass (DuckDB scan, cut, range files written)", export._split_by_prefix)
    export._read_range = timed(READ_BACK, export._read_range)
    export._merge_step = timed(MERGE_READ, export._merge_step)
    export._manifest = timed("manifest (queries)", export._manifest)
    export._replace_dir = timed("output fsynced and renamed in", export._replace_dir)
    concurrent.futures.Future.result = timed(WAITS, concurrent.futures.Future.result)
    pq.ParquetWriter.write_table = timed("Parquet written", pq.ParquetWriter.write_table)
    tmp = Path(tempfile.mkdtemp(dir=args.out, prefix="export-phases-"))
    peer = None
    try:
        if args.peer:
            drop_store_pages(Path(args.store))
            peer = peer_copy(Store.open(args.store), tmp / "peer", args.memory_mb)
            shutil.rmtree(tmp / "peer")
            drop_store_pages(Path(args.store))
        start = sample()
        manifest = export.run_export(Store.open(args.store), tmp / "export", memory_mb=args.memory_mb)
        end = sample()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if cgroup is not None:
            peak = next((cgroup / f for f in ("memory.max_usage_in_bytes", "memory.peak") if (cgroup / f).exists()),
                        None)  # v1, v2
            if peak is not None:
                print(f"memory cgroup of {args.memory_limit_gb} GB: peak use, page cache included, "
                      f"{int(peak.read_text()) / 2**30:.2f} GB")
            leave_memory_cgroup(cgroup)
    whole = [end[i] - start[i] for i in range(FIELDS)]
    inner = [sum(t[i] for name, t in totals.items() if name not in OVERLAPPING) for i in range(FIELDS)]
    rows = [(name, *t) for name, t in totals.items()]
    rows.append(("the rest (selection, opening, closing)", *[whole[i] - inner[i] for i in range(FIELDS)],
                 0))
    rows.append(("whole export", *whole, 1))
    if peer is not None:
        rows.append((f"peer: DuckDB's COPY, unsorted ({peer[1]} rows)", *peer[0], 1))
    kept = manifest.get("counts", {}).get("kept", manifest.get("kept"))
    print(f"exported {kept} documents; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    print(f"{'step':<55} {'wall s':>8} {'user s':>8} {'system s':>9} {'thread CPU s':>13} {'disk read MB':>13} "
          f"{'disk write MB':>14} {'calls':>6}")
    for name, wall, user, system, read, written, thread, calls in rows:
        print(f"{name:<55} {wall:8.1f} {user:8.1f} {system:9.1f} {thread:13.1f} {read / 2**20:13.0f} "
              f"{written / 2**20:14.0f} {int(calls):6d}")
    print(json.dumps({name: {"wall_s": round(w, 2), "user_s": round(u, 2), "system_s": round(sy, 2),
                             "thread_cpu_s": round(th, 2), "read_mb": round(r / 2**20), "write_mb": round(wr / 2**20)}
                      for name, w, u, sy, r, wr, th, _ in rows}))
    if peer is not None:
        print(f"export / peer, wall: {whole[0] / peer[0][0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
