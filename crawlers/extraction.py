"""The text-extraction processes of a crawl (light imports: the crawl process starts them first thing).

build_document spends almost all of its time in text extraction (trafilatura:
about 10 ms a page; resiliparse: about 1 ms), which would stall Scrapy's event
loop if it ran there. A pool of spawned processes runs ``provenance.extract.extract``
instead, and the crawl process builds the row from its result (hashes, domains:
microseconds). The processes import only the extractor, not the store's pyarrow.

With trafilatura the crawl process starts the pool before it even imports Scrapy, with one
process that imports the extractor while Scrapy loads; the pool adds the others when pages
queue up (ProcessPoolExecutor spawns on demand), so a crawl of a few pages does not pay for
processes it does not need. resiliparse is cheap enough to extract a small crawl's pages in
the crawl's own process: its process starts only at the crawl's ``START_AFTER_PAGES``-th page
(``extract_start_after``), so a one-page crawl starts none.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor


def extract_workers(crawl: dict) -> int:
    """Processes for text extraction, from crawl.extract_workers; not set: chosen for crawl.extractor.

    Measured with bench/crawl.py on 2 CPUs (docs/CRAWLING.md, "Extraction processes"):
    resiliparse extracts a page in about 1 ms, a quarter of what the crawl's own process
    spends on a page, and shipping the body there and the text back costs the crawl's
    process about 0.2 ms: one process (1) takes it off the event loop. trafilatura takes
    ~10 ms a page and would stall the event loop: one process per CPU, at most 4 (not one
    less than the CPUs: the crawl's own process mostly waits, so it shares a core well).
    """
    value = crawl.get("extract_workers")
    if value is not None:
        return max(0, int(value))
    if crawl.get("extractor") == "resiliparse":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


# resiliparse: pages extracted in the crawl's own process before its extraction process starts. Starting
# one costs ~0.1 s of CPU (a new interpreter and resiliparse's import; ready 0.2 s later), and made a one-page
# crawl 0.3 s slower on a busy machine; 100 pages extracted inline cost about 0.1 s of the event loop.
START_AFTER_PAGES = 100


def extract_start_after(crawl: dict) -> int:
    """Pages extracted inline before the extraction processes start (0: they start with the crawl)."""
    return START_AFTER_PAGES if crawl.get("extractor") == "resiliparse" else 0


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
