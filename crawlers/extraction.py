"""The text-extraction processes of a crawl (light imports: the crawl process starts them first thing).

build_document spends almost all of its time in text extraction (trafilatura:
about 10-20 ms a page; resiliparse: a few ms), which would stall Scrapy's event
loop if it ran there. A pool of spawned processes runs it instead; the crawl
process starts the pool before it even imports Scrapy, so the workers have
imported the crawl's extractor (``[crawl] extractor``) by the first page.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor


def extract_workers(crawl: dict) -> int:
    """Processes for text extraction, from crawl.extract_workers.

    Default: one per CPU, at most 4. Not one less than the CPUs: the crawl's own
    process spends much of its time waiting, so it shares a core well (measured
    with bench/crawl.py: 2 processes beat 1 on a 2-CPU machine). 0: extract inline.
    """
    value = crawl.get("extract_workers")
    if value is None:
        return max(1, min(4, os.cpu_count() or 1))
    return max(0, int(value))


def _init_worker(extractor: str | None) -> None:
    """In each extraction process: Ctrl-C is the crawl's to handle, and die with the crawl."""
    from provenance.processes import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    import provenance.documents  # noqa: F401
    from provenance.extract import preload

    preload(extractor)  # the extractor's library now, not on the first page


def start_pool(workers: int, extractor: str | None = None) -> ProcessPoolExecutor | None:
    """A started pool of ``workers`` processes that have loaded ``extractor``, or None for inline extraction."""
    if workers <= 0:
        return None
    # 'spawn': forking a process that runs an event loop and threads is not safe.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(extractor,))
    for _ in range(workers):  # submitting is what starts the processes
        pool.submit(int)
    return pool
