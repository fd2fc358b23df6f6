"""The text-extraction processes of a crawl (light imports: the crawl process starts them first thing).

build_document spends almost all of its time in text extraction (trafilatura:
about 10 ms a page; resiliparse: about 1 ms), which would stall Scrapy's event
loop if it ran there. A pool of spawned processes runs ``provenance.extract.extract``
instead, and the crawl process builds the row from its result (hashes, domains:
microseconds). The processes import only the extractor, not the store's pyarrow.

The crawl process starts the pool before it even imports Scrapy, with one process that
imports the crawl's extractor (``[crawl] extractor``) while Scrapy loads; the pool adds
the others when pages queue up (ProcessPoolExecutor spawns on demand), so a crawl of a
few pages does not pay for processes it does not need.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor


def extract_workers(crawl: dict) -> int:
    """Processes for text extraction, from crawl.extract_workers; not set: chosen for crawl.extractor.

    Measured with bench/crawl.py on 2 CPUs (docs/CRAWLING.md, "Extraction processes"):
    resiliparse extracts a page in about 1 ms, less than shipping the body to
    another process and the row back, so it runs inline (0). trafilatura takes
    ~10 ms a page and would stall the event loop: one process per CPU, at most
    4 (not one less than the CPUs: the crawl's own process mostly waits, so it
    shares a core well).
    """
    value = crawl.get("extract_workers")
    if value is not None:
        return max(0, int(value))
    if crawl.get("extractor") == "resiliparse":
        return 0
    return max(1, min(4, os.cpu_count() or 1))


def _init_worker(extractor: str | None) -> None:
    """In each extraction process: Ctrl-C is the crawl's to handle, and die with the crawl."""
    from provenance.processes import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    from provenance.extract import preload

    preload(extractor)  # the extractor's library now, not on the first page


def start_pool(workers: int, extractor: str | None = None) -> ProcessPoolExecutor | None:
    """A pool of up to ``workers`` processes that load ``extractor``, one of them started now; None: inline."""
    if workers <= 0:
        return None
    # 'spawn': forking a process that runs an event loop and threads is not safe. With spawn the pool
    # starts a process per submitted task while none is idle, up to ``workers``.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(extractor,))
    pool.submit(int)  # submitting is what starts a process
    return pool
