"""What this machine charges for memory and page cache at two sizes: the floor under any stage that moves
more data than fits in memory (an export of 10M documents reads 15 GB and writes 24 GB).

For each size, in one process: memory touched for the first time (a numpy array filled once), a file of
random bytes written and fsynced with its pages left in the page cache (as any writer leaves them), and the
same file written with its pages dropped as it goes (``POSIX_FADV_DONTNEED`` after every 256 MB written and
synced). Each figure is seconds per GB and the CPU the kernel spent; the last column is the large size's rate
against the small one's (1.00 is linear: the large size costs no more per GB). On a machine whose page cache
and free memory cost the same at every size, every ratio is near 1.

    .venv/bin/python bench/page_cache.py [--sizes-gb 1,8] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK = 64 << 20  # bytes written per call: one block of random bytes, written again and again
DROP_EVERY = 256 << 20  # with pages dropped: synced and dropped after this many bytes


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, the process's system CPU seconds) of ``fn()``."""
    wall, system = time.perf_counter(), os.times().system
    fn()
    return time.perf_counter() - wall, os.times().system - system


def touch(size: int) -> None:
    array = np.ones(size, dtype=np.uint8)  # every page written once
    del array


def write_file(path: Path, size: int, drop: bool) -> None:
    block = os.urandom(BLOCK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = synced = 0
        while written < size:
            written += os.write(fd, block[:min(BLOCK, size - written)])
            if drop and written - synced >= DROP_EVERY:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                synced = written
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-gb", default="1,8", help="two sizes in GB, small first (default 1,8)")
    ap.add_argument("--dir", default=None, help="where the files are written (default: the temporary directory)")
    args = ap.parse_args(argv)
    small, large = (int(float(s) * 2**30) for s in args.sizes_gb.split(","))
    tests = {
        "memory touched once": lambda size, path: touch(size),
        "file written, pages kept": lambda size, path: write_file(path, size, drop=False),
        "file written, pages dropped": lambda size, path: write_file(path, size, drop=True),
    }
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="page-cache-") as tmp:
        path = Path(tmp) / "data"
        print(f"{'test':<30} {'GB':>5} {'wall s':>8} {'s/GB':>7} {'system s':>9} {'rate vs small':>14}")
        for name, test in tests.items():
            per_gb_small = None
            for size in (small, large):
                wall, system = _timed(lambda: test(size, path))
                per_gb = wall / (size / 2**30)
                per_gb_small = per_gb_small or per_gb
                print(f"{name:<30} {size / 2**30:5.1f} {wall:8.1f} {per_gb:7.2f} {system:9.1f} "
                      f"{per_gb_small / per_gb:13.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
