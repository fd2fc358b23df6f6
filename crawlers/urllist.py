"""URL list files for ``provenance crawl --urls FILE``.

One URL per line, optionally followed by the sha256 the body is expected to
have (64 hex digits, optionally written ``sha256:<hex>``)::

    # comments and blank lines are ignored
    https://example.org/report.html
    https://example.org/data.csv  9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

A fetched body matches when the expected hash equals its raw_sha256 (the
bytes) or its text_sha256 (the extracted text); otherwise the fetch is an
``integrity_mismatch``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from provenance.crawlers.netguard import ALLOWED_SCHEMES

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def host_shard(url: str, shards: int) -> int:
    """The shard (1..shards) of ``url``'s host: every URL of a host in one shard, so one crawl process
    applies the host's politeness (Scrapy's per-host slot: concurrency, delay, AutoThrottle; its robots.txt)
    to all of them. sha256, not hash(): the same on every machine and Python."""
    host = (urlsplit(url).hostname or "").encode()
    return int.from_bytes(hashlib.sha256(host).digest()[:8], "big") % shards + 1


def crawl_url_problem(url: str) -> str | None:
    """Why ``url`` cannot start a crawl (start URL, sitemap, URL list line), or None when it can.

    Checked before the crawl starts, so a typo is a usage error, not a failed run.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parses the port: 'http://h:x/' raises here)
    except ValueError as exc:
        return f"invalid URL {url!r}: {exc}"
    if not parts.scheme:
        return f"{url!r}: not an absolute URL; give its scheme, e.g. https://{url.lstrip('/')}"
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return (f"{url!r}: scheme {parts.scheme!r} is not allowed; only "
                f"{' and '.join(ALLOWED_SCHEMES)} URLs are crawled")
    if not parts.hostname:
        return f"{url!r}: the URL has no host (give an absolute URL such as https://example.org/)"
    return None


class UrlListError(ValueError):
    """A URL list line that cannot be used; names the file and line."""


@dataclass(frozen=True)
class UrlEntry:
    url: str
    expected_sha256: str | None
    line: int


def read_url_list(path: str | Path) -> list[UrlEntry]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UrlListError(f"{path}: cannot read URL list: {exc}") from None
    entries: list[UrlEntry] = []
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip() if raw.lstrip().startswith("#") else raw.strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) > 2:
            raise UrlListError(f"{path}:{number}: expected 'URL' or 'URL SHA256', got {len(fields)} fields")
        url = fields[0]
        problem = crawl_url_problem(url)
        if problem is not None:
            raise UrlListError(f"{path}:{number}: {problem}")
        expected = None
        if len(fields) == 2:
            expected = fields[1].removeprefix("sha256:")
            if not _HEX64.match(expected):
                raise UrlListError(f"{path}:{number}: expected a sha256 of 64 hex digits, got {fields[1]!r}")
            expected = expected.lower()
        entries.append(UrlEntry(url, expected, number))
    return entries
