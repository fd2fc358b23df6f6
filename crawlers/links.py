"""The links a page's crawl follows: Scrapy's LinkExtractor, minus what a crawl does not use.

``link_urls(response)`` returns exactly the URLs of
``scrapy.linkextractors.LinkExtractor(deny_extensions=[]).extract_links(response)``, in the
same order (tests/test_crawl_links.py compares the two on every page of the shared sites): the
``href`` of every ``<a>`` and ``<area>`` of the same lxml tree (``response.selector``), stripped
of HTML5 whitespace, joined with the page's ``<base href>`` and URL, made safe in the page's
encoding, http/https/file/ftp only, each URL once.

What it leaves out is what the spiders never read and Scrapy's extractor spent most of its time
on: the link texts (an XPath evaluation per link), the ``Link`` objects, and the walk over
every element of the page in Python to find the ``<a>`` tags (lxml finds them in C). On the
git-htmldocs pages that is 0.9 ms a page down to about 0.4, most of it parsing, which Scrapy's
costs the same (bench/crawl.py, docs/CRAWLING.md, Throughput).
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urljoin

from scrapy.http import TextResponse
from scrapy.utils.response import get_base_url
from w3lib.html import strip_html5_whitespace
from w3lib.url import safe_url_string

XHTML = "{http://www.w3.org/1999/xhtml}"
# Scrapy's defaults: tags ('a', 'area'), attrs ('href',); its _nons() strips the XHTML namespace.
_TAGS = ("a", "area", XHTML + "a", XHTML + "area")
_SCHEMES = frozenset(("http", "https", "file", "ftp"))  # scrapy.linkextractors._is_valid_url


@lru_cache(maxsize=65536)
def _safe(url: str, encoding: str) -> str | None:
    """w3lib's safe_url_string (None where it raises): the costly step, and pages of a site repeat their links."""
    try:
        return safe_url_string(url, encoding=encoding)
    except ValueError:
        return None


def link_urls(response: TextResponse) -> list[str]:
    """The URLs LinkExtractor(deny_extensions=[]).extract_links(response) would return, in its order."""
    base_url = get_base_url(response)
    encoding, page_url = response.encoding, response.url
    seen: set[str] = set()
    urls: list[str] = []
    for element in response.selector.root.iter(*_TAGS):
        href = element.get("href")
        if href is None:
            continue
        try:
            url = urljoin(base_url, strip_html5_whitespace(href))
        except ValueError:
            continue  # a bogus link, skipped as Scrapy skips it
        url = _safe(url, encoding)
        if url is None:
            continue
        url = urljoin(page_url, url)  # as Scrapy does after making it safe
        if url in seen or url.split("://", 1)[0] not in _SCHEMES:
            continue
        seen.add(url)
        urls.append(url)
    return urls
