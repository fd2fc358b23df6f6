"""From the [crawl] section of provenance.toml to Scrapy settings, and the hash that pins them.

Every key of [crawl] (see provenance/config.py) maps to one documented Scrapy
setting or to a ``PROVENANCE_*`` setting read by our components, so a crawl
is fully described by its [crawl] section; ``settings_hash`` of that section
is stored with every document it fetched.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import provenance
from provenance import config
from provenance.crawlers.extraction import extract_start_after, extract_workers

PROJECT_URL = "https://github.com/provenance-guard/provenance-guard"
DEFAULT_USER_AGENT = f"provenance-guard/{provenance.__version__} (+{PROJECT_URL})"

# Keys that change what is fetched or how it is recorded. Operational knobs
# (workers, flush size, jobdir) do not change the result, so they stay out of the hash; nor does
# the extractor, which every document records in its own columns (extractor, extractor_version).
_NOT_HASHED = {"extract_workers", "flush_rows", "jobdir", "extractor"}
# Not Scrapy's default asyncio reactor: with it, Scrapy 2.19's downloader hands a host's whole queue to
# asyncio tasks at once (the slot counts a request as transferring only once its task runs), so
# CONCURRENT_REQUESTS_PER_DOMAIN is not enforced. Twisted's own reactors run that code synchronously.
_REACTOR = ("twisted.internet.epollreactor.EPollReactor" if sys.platform.startswith("linux")
            else "twisted.internet.pollreactor.PollReactor" if os.name == "posix"
            else "twisted.internet.selectreactor.SelectReactor")


def _resolver_setting() -> str:
    """Scrapy renamed DNS_RESOLVER to TWISTED_DNS_RESOLVER (2.14); whichever this Scrapy reads.

    Imported here, not at the top: run_crawl's process needs effective() but not Scrapy (0.15 s).
    """
    from scrapy.settings import default_settings

    return "TWISTED_DNS_RESOLVER" if hasattr(default_settings, "TWISTED_DNS_RESOLVER") else "DNS_RESOLVER"


def effective(crawl: dict | None) -> dict:
    """The [crawl] defaults overlaid with ``crawl``, validated as provenance.toml is (ConfigError if not)."""
    return config.section("crawl", crawl)


def settings_hash(crawl: dict) -> str:
    """16 hex chars identifying the settings that shaped a fetch (user agent, limits, robots, ...)."""
    relevant = {k: v for k, v in effective(crawl).items() if k not in _NOT_HASHED}
    if not relevant.get("confirm_after_s"):  # off (the default): the hashes of crawls made before the key stay
        relevant.pop("confirm_after_s", None)
    relevant["user_agent"] = relevant["user_agent"] or DEFAULT_USER_AGENT
    blob = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def scrapy_settings(crawl: dict, jobdir: str | None = None) -> dict:
    """Scrapy settings for one crawl. ``crawl`` must already be ``effective()``."""
    per_host = int(crawl["concurrency_per_host"])
    log_level = os.environ.get("PROVENANCE_CRAWL_LOGLEVEL", "WARNING").upper()
    return {
        "BOT_NAME": "provenance-guard",
        "USER_AGENT": crawl["user_agent"] or DEFAULT_USER_AGENT,
        # Politeness: robots.txt (parsed by Protego, Scrapy's default) and per-host concurrency.
        "ROBOTSTXT_OBEY": bool(crawl["obey_robots"]),
        "CONCURRENT_REQUESTS": max(int(crawl["concurrency"]), per_host),
        "CONCURRENT_REQUESTS_PER_DOMAIN": per_host,
        "AUTOTHROTTLE_ENABLED": bool(crawl["autothrottle"]),
        "AUTOTHROTTLE_START_DELAY": 1.0,
        "AUTOTHROTTLE_MAX_DELAY": 30.0,
        "AUTOTHROTTLE_TARGET_CONCURRENCY": float(per_host),
        # Limits. DOWNLOAD_MAXSIZE also caps the *decompressed* size (HttpCompressionMiddleware), which is
        # what stops decompression bombs; DEPTH_LIMIT bounds link following.
        "DOWNLOAD_TIMEOUT": float(crawl["download_timeout_s"]),
        "DOWNLOAD_MAXSIZE": int(crawl["max_size_bytes"]),
        "DOWNLOAD_WARNSIZE": int(crawl["warn_size_bytes"]),
        "REDIRECT_MAX_TIMES": int(crawl["max_redirects"]),
        "DEPTH_LIMIT": int(crawl["max_depth"]),
        # Breadth first (Scrapy's recipe): with a page limit, the pages nearest the start are the ones fetched.
        "DEPTH_PRIORITY": 1,
        "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
        # Outputs of one page callback handled at once. Scrapy's default (100) starts 100 cooperative tasks per
        # response whatever it yields; on Twisted's reactor that cost more per page than our components together
        # (docs/CRAWLING.md, Throughput). A page yields one item and its links, which are scheduled at once.
        "CONCURRENT_ITEMS": 4,
        # Public pages only: no cookies (responses would depend on a session), no listening consoles.
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,
        "LOG_LEVEL": log_level,
        "LOGSTATS_INTERVAL": 0 if log_level != "INFO" and log_level != "DEBUG" else 60.0,
        "JOBDIR": jobdir,
        "TWISTED_REACTOR": _REACTOR,
        # The SSRF guard twice: a middleware that refuses (and records) before anything is sent, and the
        # resolver Twisted connects with, so a name that re-resolves elsewhere (DNS rebinding) is refused too.
        _resolver_setting(): "provenance.crawlers.middlewares.GuardedResolver",
        "DOWNLOADER_MIDDLEWARES": {
            # After OffsiteMiddleware (50), so off-site hosts are never even resolved; before robots (100),
            # so a refused host's robots.txt is not fetched either.
            "provenance.crawlers.middlewares.NetGuardMiddleware": 60,
            # Nearest the downloader: sees the headers exactly as received, before decompression.
            "provenance.crawlers.middlewares.ProvenanceDownloaderMiddleware": 950,
            # Scrapy's lets requests through unchecked while robots.txt loads (see middlewares.py); ours also
            # records, per page, which AI agents robots.txt disallows.
            "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
            "provenance.crawlers.middlewares.RobotsTxtMiddleware": 100,
            # Before robots.txt, so the host's tdmrep.json is fetched beside it, not after it.
            "provenance.crawlers.middlewares.TdmRepMiddleware": 90,
        },
        "ITEM_PIPELINES": {"provenance.crawlers.pipelines.DocumentWriterPipeline": 300},
        # Re-crawls are mostly 304s, which Scrapy's AutoThrottle never lets lower the delay.
        "EXTENSIONS": {"scrapy.extensions.throttle.AutoThrottle": None,
                       "provenance.crawlers.middlewares.ConditionalAutoThrottle": 0},
        "PROVENANCE_ENABLED": True,
        "PROVENANCE_ALLOW_PRIVATE": bool(crawl["allow_private"]),
        "PROVENANCE_STORE_NON_HTML": bool(crawl["store_non_html"]),
        "PROVENANCE_EXTRACT_WORKERS": extract_workers(crawl),
        "PROVENANCE_EXTRACT_START_AFTER": extract_start_after(crawl),
        "PROVENANCE_EXTRACTOR": crawl["extractor"],
        "PROVENANCE_AI_AGENTS": list(crawl["ai_agents"]),
    }
