"""Crawls of real third-party material from ../shared, served on 127.0.0.1; skipped when it is absent.

* gitster__git-htmldocs: Git's HTML documentation (2019), 197 pages reachable from index.html
* scrapy__scrapy compressed samples: decompression bombs served with Content-Encoding
* crawler-commons robots.txt and sitemap edge cases (BOM, RFC 9309 examples, gzip, text sitemaps)

Files are served from (copies in) pytest's tmp_path, never copied into the project.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import lxml.html
import pytest

from provenance import exitcodes
from provenance.sites import Route, copy_site, serve
from test_crawl import assert_provenance, crawl, rows, sha256

pytestmark = pytest.mark.shared

COMPRESSED = "data/malformed/scrapy__scrapy/tests/sample_data/compressed"
CRAWLER_COMMONS = "data/robots-sitemaps/crawler-commons__crawler-commons/src/test/resources"


def reachable_pages(root: Path, start: str) -> set[str]:
    """Paths reachable from ``start`` through <a href> links to files that exist (what a crawler finds)."""
    seen, todo = {start}, [start]
    while todo:
        path = todo.pop()
        file = root / path
        if not file.is_file() or not path.endswith(".html"):
            continue
        for element, _attr, link, _pos in lxml.html.fromstring(file.read_bytes()).iterlinks():
            if element.tag not in ("a", "area"):
                continue
            url = urlsplit(urljoin("http://site/" + path, link))
            target = unquote(url.path.lstrip("/"))
            if url.netloc == "site" and target not in seen and (root / target).is_file():
                seen.add(target)
                todo.append(target)
    return seen


# ----- git-htmldocs: a real site, crawled, re-crawled and changed ------------------------------------
def test_git_htmldocs_crawl_recrawl_and_change(shared_dir, tmp_path):
    site = copy_site(shared_dir / "data/sites/gitster__git-htmldocs", tmp_path / "site")  # index.html: a symlink
    expected = reachable_pages(site, "index.html")
    assert len(expected) == 197  # as the shared README says
    store_dir = tmp_path / "store"
    settings = {"concurrency_per_host": 16, "extract_workers": None}  # extraction in worker processes
    with serve(site) as base:
        first = crawl(store_dir, settings, start_urls=[base + "index.html"], crawl_id="git")
        assert first.exit_code == exitcodes.OK, first.stats
        docs = {d["url"].removeprefix(base): d for d in rows(store_dir, "SELECT * FROM documents")}
        assert set(docs) == expected
        for path, doc in docs.items():
            assert_provenance(doc)
            assert doc["raw_sha256"] == sha256((site / path).read_bytes()), path
        assert docs["index.html"]["raw_sha256"] == docs["git.html"]["raw_sha256"]  # same page, two URLs

        second = crawl(store_dir, settings, start_urls=[base + "index.html"], crawl_id="git")
        assert second.stats["stored"] == 0
        assert second.stats["not_modified"] + second.stats["unchanged"] == len(expected)
        assert rows(store_dir, "SELECT count(*) AS n FROM documents")[0]["n"] == len(expected)

        page = site / "git-add.html"
        old = docs["git-add.html"]
        page.write_bytes(page.read_bytes().replace(b"</body>", b"<p>Errata: see git-add(1).</p></body>"))
        third = crawl(store_dir, settings, start_urls=[base + "index.html"], crawl_id="git")
    assert third.stats["stored"] == 1 and third.stats["changed"] == 1 and third.stats["not_modified"] == 196
    new = rows(store_dir, "SELECT * FROM documents WHERE run_id = ?", third.run_id)
    assert len(new) == 1 and new[0]["url"] == base + "git-add.html"
    assert new[0]["previous_doc_id"] == old["doc_id"] and new[0]["raw_sha256"] == sha256(page.read_bytes())


# ----- decompression bombs ---------------------------------------------------------------------------
def test_decompression_bombs_are_stopped_by_the_size_limit(shared_dir, tmp_path):
    compressed = shared_dir / COMPRESSED
    html = {"Content-Type": "text/html; charset=utf-8"}
    routes = {
        "/bomb-gzip.html": ("bomb-gzip.bin", "gzip"),
        "/bomb-deflate.html": ("bomb-deflate.bin", "deflate"),
        "/bomb-br.html": ("bomb-br.bin", "br"),
        "/page-gzip.html": ("html-gzip.bin", "gzip"),
        "/page-gzip-deflate.html": ("html-gzip-deflate.bin", "gzip, deflate"),
    }
    if _zstd_available():  # Scrapy decodes zstd with compression.zstd (3.14) or backports.zstd
        routes["/bomb-zstd.html"] = ("bomb-zstd.bin", "zstd")
    site = tmp_path / "site"
    site.mkdir()
    with serve(site, routes={path: Route(200, (*html.items(), ("Content-Encoding", encoding)),
                                         (compressed / name).read_bytes())
                             for path, (name, encoding) in routes.items()}) as base:
        url_list = tmp_path / "urls.txt"
        url_list.write_text("".join(f"{base}{path.lstrip('/')}\n" for path in routes))
        result = crawl(tmp_path / "store", {"max_size_bytes": 1024 * 1024, "warn_size_bytes": 512 * 1024},
                       url_file=url_list)
    fetches = {r["url"].removeprefix(base): r for r in rows(tmp_path / "store", "SELECT * FROM fetches")}
    bombs = [path.lstrip("/") for path in routes if path.startswith("/bomb")]
    for bomb in bombs:
        assert fetches[bomb]["outcome"] == "error" and fetches[bomb]["error"].startswith("too_large"), fetches[bomb]
    docs = {d["url"].removeprefix(base): d for d in rows(tmp_path / "store", "SELECT * FROM documents")}
    assert set(docs) == {"page-gzip.html", "page-gzip-deflate.html"}
    page = docs["page-gzip.html"]
    assert page["raw"] == gzip.decompress((compressed / "html-gzip.bin").read_bytes())  # decoded body
    assert ("Content-Encoding", "gzip") in [(h["name"], h["value"]) for h in page["headers"]]  # as received
    assert page["text"]
    assert result.exit_code == exitcodes.PARTIAL and result.stats["errors_by_kind"] == {"too_large": len(bombs)}


def _zstd_available() -> bool:
    for module in ("compression.zstd", "backports.zstd"):
        try:
            __import__(module)
            return True
        except ImportError:
            continue
    return False


# ----- robots.txt and sitemap edge cases (crawler-commons) ------------------------------------------
def _pages(site: Path, paths: list[str]) -> None:
    for path in paths:
        target = site / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"<!DOCTYPE html><html><head><title>{path}</title></head>"
                          f"<body><p>Page {path} of the robots fixture.</p></body></html>")


@pytest.mark.parametrize("robots, allowed, denied", [
    # A UTF-8 byte order mark before the first group must not hide it.
    ("robots-with-utf8-bom.txt", ["/index.html", "/output/print"], ["/profile/me.html", "/a/output/print",
                                                                    "/login.aspx"]),
    # RFC 9309 section 5.1: wildcards, end anchors, Allow.
    ("rfc9309-example-simple-robots.txt", ["/publications/x.html", "/example.html"],
     ["/example/page.html", "/img/logo.gif"]),
])
def test_robots_txt_edge_cases_are_obeyed(shared_dir, tmp_path, robots, allowed, denied):
    site = tmp_path / "site"
    _pages(site, allowed + denied)
    (site / "robots.txt").write_bytes((shared_dir / CRAWLER_COMMONS / "robots" / robots).read_bytes())
    log: list = []
    with serve(site, request_log=log) as base:
        url_list = tmp_path / "urls.txt"
        url_list.write_text("".join(f"{base}{p.lstrip('/')}\n" for p in allowed + denied))
        crawl(tmp_path / "store", url_file=url_list)
    outcomes = {r["url"].removeprefix(base.rstrip("/")): r["outcome"]
                for r in rows(tmp_path / "store", "SELECT url, outcome FROM fetches")}
    assert outcomes == {**{p: "new" for p in allowed}, **{p: "robots_denied" for p in denied}}
    # Denied pages were never requested; the host's TDMRep file (once, where robots.txt allows it) is the only extra.
    requested = [path for _m, path, _h in log]
    assert set(requested) - {"/.well-known/tdmrep.json"} == {"/robots.txt", *allowed}
    assert requested.count("/.well-known/tdmrep.json") <= 1


def test_sitemap_edge_cases_gzip_and_text_with_bom(shared_dir, tmp_path):
    """crawler-commons' xmlSitemap.gz and sitemap-with-bom.txt, their example hosts pointed at our server."""
    source = shared_dir / CRAWLER_COMMONS / "sitemaps"
    site = tmp_path / "site"
    site.mkdir()
    with serve(site) as base:
        xml = gzip.decompress((source / "xmlSitemap.gz").read_bytes()).replace(b"http://www.example.com/",
                                                                                base.encode())
        (site / "xmlSitemap.xml.gz").write_bytes(gzip.compress(xml))
        text = (source / "sitemap-with-bom.txt").read_bytes().replace(b"http://www.domain.com/", base.encode())
        assert text.startswith(b"\xef\xbb\xbf")
        (site / "sitemap-with-bom.txt").write_bytes(text)
        _pages(site, ["/index.html", "/page1.html", "/page2.html"])
        (site / "catalog").write_text("<!DOCTYPE html><html><body><p>The catalog.</p></body></html>")
        result = crawl(tmp_path / "store", sitemaps=[base + "xmlSitemap.xml.gz", base + "sitemap-with-bom.txt"])
    fetched = {r["url"].removeprefix(base) for r in rows(tmp_path / "store", "SELECT url FROM documents")}
    # The gzip sitemap lists '/' and four catalog?item=... URLs (one file, served for every query).
    assert fetched == {"", "catalog?item=12&desc=vacation_hawaii", "catalog?item=73&desc=vacation_new_zealand",
                       "catalog?item=74&desc=vacation_newfoundland", "catalog?item=83&desc=vacation_usa",
                       "page1.html", "page2.html"}
    assert result.stats["sitemaps"] == 2 and result.exit_code == exitcodes.OK
