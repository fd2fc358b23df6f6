"""run_crawl(store, request) -> CrawlResult: plan a crawl here, run it in a child process.

The child (``provenance.crawlers.worker``, started without the working
directory on sys.path) does all of the work and all of the store writes,
under the store's lock: Twisted's reactor cannot be
restarted, and callers (the demo, the tests) crawl more than once per process.
This side only validates the request (usage errors surface before anything
starts), waits, and turns the child's report into a CrawlResult -- or into
StoreLocked (exit 75) or CrawlError.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from provenance import exitcodes
from provenance.config import ConfigError
from provenance.crawlers import CrawlError, CrawlRequest, CrawlResult
from provenance.crawlers.journal import url_key
from provenance.crawlers.settings import effective
from provenance.crawlers.urllist import UrlListError, crawl_url_problem, host_shard, read_url_list
from provenance.processes import python_command
from provenance.store import Store, StoreLocked, safe_name


def default_crawl_id(mode: str, urls: list[str], url_file: Path | None) -> str:
    """site/sitemap: the first URL's host (and port); URL list: 'urls-<file name>'."""
    if mode == "urls":
        return safe_name(f"urls-{url_file.name.split('.')[0]}")
    return safe_name(urlsplit(urls[0]).netloc or urls[0])


def plan_crawl(request: CrawlRequest) -> dict:
    """Everything the worker needs, as JSON. Raises CrawlError (exit 2) for unusable requests."""
    try:
        settings = effective(request.settings)
    except ConfigError as exc:
        raise CrawlError(str(exc), exitcodes.USAGE) from None
    modes = [m for m, given in (("site", request.start_urls), ("urls", request.url_file),
                                ("sitemap", request.sitemaps)) if given]
    if len(modes) != 1:
        raise CrawlError("give exactly one of: start URLs, --urls FILE, --sitemap URL", exitcodes.USAGE)
    mode = modes[0]
    if request.shard and mode != "urls":
        raise CrawlError("--shard splits a URL list (--urls FILE) by host; a site or sitemap crawl is one process",
                         exitcodes.USAGE)
    plan = {"mode": mode, "settings": settings}
    if mode == "urls":
        url_file = Path(request.url_file).resolve()
        try:
            entries = read_url_list(url_file)
        except UrlListError as exc:
            raise CrawlError(str(exc), exitcodes.USAGE) from None
        if not entries:
            raise CrawlError(f"{url_file}: no URLs in the list", exitcodes.USAGE)
        if request.shard:
            k, n = request.shard
            entries = [e for e in entries if host_shard(e.url, n) == k]
            if not entries:  # a short list of few hosts leaves some shards empty: nothing to do is no failure
                raise CrawlError(f"{url_file}: no host of the list falls in shard {k}/{n}; nothing to crawl",
                                 exitcodes.OK)
        plan.update(url_file=str(url_file),
                    entries=[{"url": e.url, "line": e.line} for e in entries],
                    expected={url_key(e.url): e.expected_sha256 for e in entries if e.expected_sha256})
        urls = [e.url for e in entries]
    else:
        urls = list(request.start_urls if mode == "site" else request.sitemaps)
        for url in urls:
            problem = crawl_url_problem(url)
            if problem is not None:
                raise CrawlError(problem, exitcodes.USAGE)
        plan["start_urls" if mode == "site" else "sitemaps"] = urls
    plan["crawl_id"] = safe_name(request.crawl_id) if request.crawl_id else \
        default_crawl_id(mode, urls, Path(request.url_file) if request.url_file else None)
    if request.shard:  # each shard its own crawl: own id, resume journal and JOBDIR, committing beside the others
        plan["crawl_id"] += f"-shard{request.shard[0]}of{request.shard[1]}"
        plan["shard"] = list(request.shard)
    return plan


def run_crawl(store: Store, request: CrawlRequest) -> CrawlResult:
    plan = plan_crawl(request)
    with tempfile.TemporaryDirectory(prefix="provenance-crawl-") as tmp:
        request_path, result_path = Path(tmp, "request.json"), Path(tmp, "result.json")
        request_path.write_text(json.dumps(plan))
        cmd = [*python_command("from provenance.crawlers.worker import exit_now, main; exit_now(main())"),
               "--store", str(store.root), "--request", str(request_path), "--result", str(result_path)]
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        returncode = _wait_forwarding_signals(proc)
        result = json.loads(result_path.read_text()) if result_path.exists() else None
    if result is None:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        raise CrawlError(f"the crawl process {how} before reporting; committed pages are kept and running "
                         f"the same crawl again resumes it")
    if "locked" in result:
        raise StoreLocked(result["locked"])
    if "stats" not in result or (result.get("error") and not result["stats"].get("pages")):
        raise CrawlError(f"crawl failed: {result.get('error', 'unknown error')}")
    return CrawlResult(run_id=result["run_id"], crawl_id=result["crawl_id"], stats=result["stats"],
                       exit_code=int(result["exit_code"]))


def _wait_forwarding_signals(proc: subprocess.Popen) -> int:
    """Wait for the crawl process; pass SIGINT/SIGTERM on to it (it stops gracefully and reports back).

    A terminal Ctrl-C or a systemd stop reaches the child directly too; the child
    ignores such a quick repeat (see worker.py).
    """
    if threading.current_thread() is not threading.main_thread():
        return proc.wait()
    previous = {}

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, forward)
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
