"""The crawl process: ``provenance.crawlers.worker.main`` with ``--store DIR --request FILE --result FILE``.

run.py starts it with processes.python_command (never ``python -m``: that would put the
working directory first on sys.path).

Scrapy runs on Twisted, whose reactor cannot be started twice in one
process, so every crawl runs here, in a child of whoever called run_crawl
(see run.py). This process takes the store's lock (Store.run: shared with
other writers, one crawl per crawl id), runs the spider, commits, writes the
stats, and reports back through --result.

Signals: the first SIGINT/SIGTERM stops the crawl gracefully (in-flight pages
finish and are committed, Scrapy's JOBDIR is saved); repeats within a few
seconds are ignored, because a Ctrl-C or a systemd stop reaches both this
process and its parent, which forwards it. A later one stops at once, which
the resume journal makes safe. Keep the imports at the top light: extraction
worker processes import this module too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from provenance.processes import die_with_parent

FORCE_AFTER_S = 5.0


def _install_stop_handlers(process) -> None:
    """First signal: graceful stop. Repeats within FORCE_AFTER_S: ignored. Later: immediate exit."""
    from twisted.internet import reactor

    first: list[float] = []

    def handler(signum, _frame):
        now = time.monotonic()
        if not first:
            first.append(now)
            print(f"provenance: {signal.Signals(signum).name}: stopping the crawl after the pages in flight; "
                  "run the same command again to resume", file=sys.stderr, flush=True)
            reactor.callFromThread(lambda: process.stop())
        elif now - first[0] > FORCE_AFTER_S:
            print("provenance: stopping now; committed work is kept and the next run resumes",
                  file=sys.stderr, flush=True)
            os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _drop_tracebacks() -> None:
    """One line per problem on stderr (every failure is also in the fetches view); tracebacks at DEBUG only.

    A log-record factory rather than a handler filter: Scrapy replaces its root handler as the crawl starts.
    """
    make_record = logging.getLogRecordFactory()

    def make_record_without_traceback(*args, **kwargs):
        record = make_record(*args, **kwargs)
        record.exc_info, record.exc_text = None, None
        return record

    logging.setLogRecordFactory(make_record_without_traceback)


def _queue_size(crawler) -> int | None:
    """Requests waiting in Scrapy's scheduler (engine.scheduler from Scrapy 2.19, engine.slot before)."""
    engine = crawler.engine
    scheduler = getattr(engine, "scheduler", None)  # an empty scheduler is falsy: no `or` here
    if scheduler is None:
        scheduler = getattr(getattr(engine, "slot", None), "scheduler", None)
    try:
        return len(scheduler)
    except TypeError:
        return None


def _fetched_urls(store, run_ids: list[str]) -> tuple[list[str], list[str]]:
    """URLs with a committed fetch row from any of ``run_ids`` (the store, not the journal, is the truth), and
    those with a committed confirmation fetch row."""
    import duckdb

    from provenance.sql import sql_list, sql_string

    paths = store.snapshot().paths("fetches")
    if not paths:
        return [], []
    runs = ", ".join(sql_string(r) for r in run_ids)
    relation = f"read_parquet({sql_list(paths)}, union_by_name = true)"
    con = duckdb.connect()
    try:
        columns = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
        confirmation = "coalesce(confirmation, false)" if "confirmation" in columns else "false"  # older files
        rows = con.execute(f"SELECT url, bool_or({confirmation}) FROM {relation} WHERE run_id IN ({runs}) "
                           f"GROUP BY url").fetchall()
    finally:
        con.close()
    return [u for u, _ in rows], [u for u, confirmed in rows if confirmed]


def crawl_in_run(store, run, plan: dict, extract_pool=None) -> dict:
    """Run one Scrapy crawl inside an open store run; returns its stats."""
    from scrapy.crawler import CrawlerProcess

    from provenance.crawlers.journal import Journal, NoJournal
    from provenance.crawlers.session import CrawlSession
    from provenance.crawlers.settings import scrapy_settings, settings_hash
    from provenance.crawlers.spiders import SPIDERS
    from provenance.store import atomic_write_text, safe_name

    crawl, mode, crawl_id = plan["settings"], plan["mode"], plan["crawl_id"]
    spider_cls = SPIDERS[mode]
    jobdir = store.root / "_jobs" / safe_name(crawl_id) if crawl["jobdir"] else None
    journal = Journal.open(jobdir, spider_cls.name, run.run_id) if jobdir else NoJournal()
    if journal.resumed == "killed" and journal.runs:
        journal.reconcile(*_fetched_urls(store, journal.runs))
    url_file = Path(plan["url_file"]) if plan.get("url_file") else None
    seeds = plan["start_urls"] if mode == "site" else plan["sitemaps"] if mode == "sitemap" \
        else [e["url"] for e in plan["entries"]]
    session = CrawlSession(store, run, crawl_id=crawl_id, spider=spider_cls.name,
                           settings_hash=settings_hash(crawl), journal=journal,
                           flush_rows=crawl["flush_rows"], url_list=url_file,
                           confirm_after_s=crawl["confirm_after_s"], seed_urls=seeds)
    session.extract_pool = extract_pool  # used by DocumentWriterPipeline
    settings = scrapy_settings(crawl, str(jobdir) if jobdir else None)
    if mode != "site":
        settings["DEPTH_LIMIT"] = 0  # only link following has a depth; sitemap indexes nest freely
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(spider_cls)
    if settings["LOG_LEVEL"] != "DEBUG":
        _drop_tracebacks()
    # Scrapy filters in its handler, so each page's DEBUG lines ("Crawled", "Scraped") were made and dropped.
    logging.getLogger("scrapy").setLevel(settings["LOG_LEVEL"])
    spider_args = {"session": session, "max_pages": crawl["max_pages"], "max_depth": crawl["max_depth"]}
    if mode == "site":
        spider_args["start_urls"] = plan["start_urls"]
    elif mode == "sitemap":
        spider_args["sitemap_urls"] = plan["sitemaps"]
    else:
        spider_args["urls"] = seeds
        spider_args["expected"] = plan["expected"]
    failures: list = []
    process.crawl(crawler, **spider_args).addErrback(failures.append)
    _install_stop_handlers(process)  # instead of Scrapy's, which treat any second signal as "kill"
    session.queue_size = lambda: _queue_size(crawler)
    with session.progress:
        process.start(install_signal_handlers=False)
    finish_reason = crawler.stats.get_value("finish_reason") if crawler.stats else None
    stats = session.close(finish_reason, crawler.stats.get_stats() if crawler.stats else {})
    if session.commit_error is not None:
        # A commit failed (disk full, a store conflict): Scrapy only saw a crawl that stopped. The run fails with
        # the error, as any other command's would (main: one line; exit 1, or 75 for a conflict); what was
        # committed before stays, and the job is left for the next run to resume.
        from provenance import errors

        stats["error"] = errors.describe(session.commit_error, store.root)
        with contextlib.suppress(OSError):  # the disk may still be full: the error matters, not the stats file
            atomic_write_text(store.root / "runs" / f"{run.run_id}.stats.json", json.dumps(stats, indent=2) + "\n")
        raise session.commit_error
    if failures:
        stats["error"] = failures[0].getErrorMessage()
    atomic_write_text(store.root / "runs" / f"{run.run_id}.stats.json", json.dumps(stats, indent=2) + "\n")
    if stats["exit_code"] == 130:
        run.finish("interrupted", error="stopped by a signal; committed work is kept and the next run resumes")
    elif failures:
        run.finish("failed", error=stats["error"])
    elif (stats["pages"] == 0 and not stats.get("confirmations")) or stats["exit_code"] == 1:
        run.finish("failed", error="nothing was fetched")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="provenance-crawl-worker")
    parser.add_argument("--store", required=True)
    parser.add_argument("--request", required=True, help="JSON crawl plan written by run_crawl")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGTERM)
    plan = json.loads(Path(args.request).read_text())

    # First thing: the extraction processes import their extractor while this one imports Scrapy (unless they
    # start later, after the crawl's first pages: the pipeline starts them then).
    from provenance.crawlers.extraction import extract_start_after, extract_workers, start_pool

    pool = start_pool(extract_workers(plan["settings"]), plan["settings"].get("extractor")) \
        if extract_start_after(plan["settings"]) == 0 else None

    from provenance.store import Store, StoreLocked, show_store_warnings

    show_store_warnings()
    result: dict
    try:
        store = Store.open(args.store)
        config = {"crawl_id": plan["crawl_id"], "mode": plan["mode"], "start_urls": plan.get("start_urls"),
                  "sitemaps": plan.get("sitemaps"), "url_file": plan.get("url_file"), "shard": plan.get("shard"),
                  "crawl": plan["settings"]}
        # Crawls share the store; one of each crawl id at a time (its resume journal and JOBDIR are one).
        with store.run("crawl", config=config, serial=f"crawl {plan['crawl_id']}") as run:
            stats = crawl_in_run(store, run, plan, extract_pool=pool)
        result = {"run_id": run.run_id, "crawl_id": plan["crawl_id"], "stats": stats,
                  "exit_code": stats["exit_code"]}
        if "error" in stats:
            result["error"] = stats["error"]
    except StoreLocked as exc:
        result = {"locked": str(exc), "exit_code": 75}
    except Exception as exc:  # reported by the parent as one clear line
        from provenance import errors

        if errors.debug_enabled():
            import traceback

            traceback.print_exc()
        result = {"error": errors.describe(exc, args.store), "exit_code": 1}
    finally:
        if pool is not None:
            # Waiting, so that the pool's queues are released and their semaphores unlinked before exit_now
            # (else multiprocessing's resource tracker warns about "leaked semaphore objects").
            pool.shutdown(wait=True, cancel_futures=True)
    Path(args.result).write_text(json.dumps(result, default=str))
    return int(result["exit_code"])


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown of Scrapy, Twisted, pyarrow and the rest (0.2-0.4 s).

    Safe once main() has returned: the run is committed and closed, the result
    written, the extraction processes shut down; only the stdio buffers and the
    log handlers are left to flush.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
