"""The crawl's link extraction (crawlers/links.py) returns exactly what Scrapy's LinkExtractor returns.

The crawl follows ``link_urls(response)`` instead of
``LinkExtractor(deny_extensions=[]).extract_links(response)`` because it is cheaper; these
tests hold it to the same URLs in the same order: on tricky hand-written pages always, and
on every page of the shared sites and page collections when ../shared is present.
"""

from __future__ import annotations

import gzip

import pytest
from scrapy.http import HtmlResponse
from scrapy.linkextractors import LinkExtractor

from provenance.crawlers.links import link_urls

SCRAPY = LinkExtractor(deny_extensions=[])


def both(body: bytes, url: str = "http://site.example/dir/page.html", content_type: str = "text/html"):
    def response():  # a fresh response for each: Scrapy caches the parsed tree on it
        return HtmlResponse(url, body=body, headers={"Content-Type": content_type})

    return [link.url for link in SCRAPY.extract_links(response())], link_urls(response())


TRICKY = {
    "relative, absolute, duplicates, fragments": b"""<html><body>
        <a href="a.html">a</a> <a href="/b.html#x">b</a> <a href="a.html">again</a>
        <a href="http://other.example/c?q=1&amp;r=2">c</a> <a href="#top">top</a> <a href="">self</a>
        <a href="  \n spaced.html\t ">spaced</a> <a>no href</a> <a name="anchor">name</a></body></html>""",
    "schemes Scrapy drops": b"""<a href="javascript:void(0)">js</a> <a href="mailto:x@example.org">m</a>
        <a href="ftp://files.example/f">ftp</a> <a href="file:///etc/passwd">file</a> <a href="tel:+1">tel</a>
        <a href="data:text/html,hi">data</a> <a href="https://secure.example/">https</a>""",
    "base href": b"""<html><head><base href="http://cdn.example/root/"></head><body>
        <a href="x.html">x</a><a href="../up.html">up</a><area href="map.html"></body></html>""",
    "area and other tags": b"""<map><area href="area.html" shape="rect"></map><link href="style.css">
        <img src="i.png"><script src="s.js"></script><iframe src="f.html"></iframe><A HREF="UPPER.html">u</A>""",
    "non-ASCII and spaces": "<a href='ümlaut page.html'>ü</a><a href='/q?x=é'>q</a>".encode("utf-8"),
    "bogus links": b"""<a href="http://[::1">bad ipv6</a><a href="http://exa mple.com/">space host</a>
        <a href="http://example.com:99999/">bad port</a><a href="ok.html">ok</a>""",
    "malformed markup": b"""<p><a href=unquoted.html>u<a href='nested.html'>n</p></a><table><a href="t.html">t
        <tr><td><a href="cell.html">c</td></table><a href="after.html""",
    "xhtml": b"""<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body>
        <a href="x1.html">x</a></body></html>""",
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_link_urls_are_scrapys(name):
    scrapy_urls, ours = both(TRICKY[name])
    assert ours == scrapy_urls


def test_link_urls_use_the_page_encoding():
    body = "<meta charset='latin-1'><a href='caf\u00e9.html'>c</a><a href='?q=\u00e9'>q</a>".encode("latin-1")
    scrapy_urls, ours = both(body, content_type="text/html")
    assert ours == scrapy_urls
    assert ours[0].endswith("caf%E9.html") or ours[0].endswith("caf%C3%A9.html")


def _pages(root):
    for path in sorted(root.rglob("*")):
        if path.name.endswith(".html"):
            yield path, path.read_bytes()
        elif path.name.endswith(".html.gz"):
            yield path, gzip.decompress(path.read_bytes())


@pytest.mark.shared
@pytest.mark.parametrize("collection", ["data/sites/gitster__git-htmldocs",
                                        "data/pages/adbar__trafilatura/tests/cache",
                                        "data/pages/scrapinghub__article-extraction-benchmark/html"])
def test_link_urls_match_scrapy_on_real_pages(shared_dir, collection):
    root = shared_dir / collection
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    pages = 0
    for path, body in _pages(root):
        url = f"http://site.example/{path.relative_to(root).as_posix()}"
        scrapy_urls, ours = both(body, url=url)
        assert ours == scrapy_urls, path
        pages += 1
    assert pages > 50
