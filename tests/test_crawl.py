"""End-to-end crawls against real HTTP servers on 127.0.0.1 (provenance.sites): no mocks of HTTP.

Every crawl runs the real Scrapy stack in a child process, as ``provenance
crawl`` does. Only loopback addresses are ever contacted; refusals of other
addresses are checked where the guard refuses before any connection, with a
loopback proxy in place to catch (and count) any request that would leak.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pyarrow as pa
import pytest

import provenance
from provenance import exitcodes, schemas
from provenance.crawlers import CrawlRequest, run_crawl
from provenance.crawlers.settings import settings_hash
from provenance.extract import DEFAULT_EXTRACTOR, extract
from provenance.sites import Route, generate_site, redirect, serve
from provenance.sql import connect
from provenance.store import Store, file_sha256

# Loopback crawls: private addresses allowed, no throttling, inline extraction (small sites; the
# git-htmldocs test and the bench use the extraction processes).
FAST = {"allow_private": True, "autothrottle": False, "concurrency_per_host": 8, "extract_workers": 0}

PROVENANCE_COLUMNS = ("url", "final_url", "redirect_chain", "domain", "registered_domain", "crawl_id", "run_id",
                      "source", "fetched_at", "http_status", "headers", "content_type", "raw", "raw_sha256",
                      "raw_length", "extractor", "etag", "last_modified", "resolved_ip", "spider", "settings_hash")
HTML_COLUMNS = ("charset", "text", "text_sha256", "title", "extractor_version")


# ----- helpers (also used by test_crawl_shared.py) ------------------------------------------------
def crawl(store_dir: Path, settings: dict | None = None, **request):
    store = Store.open(store_dir, create=True)
    return run_crawl(store, CrawlRequest(settings={**FAST, **(settings or {})}, **request))


def rows(store_dir: Path, sql: str, *params) -> list[dict]:
    con = connect(store_dir)
    try:
        cur = con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        con.close()


def cli(*args, env=None, timeout=180, **popen):
    """The real `provenance` command in a subprocess."""
    return subprocess.run([sys.executable, "-c", "from provenance.cli import main; main()", *map(str, args)],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                          **popen)


def cli_background(*args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from provenance.cli import main; main()", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(predicate, timeout=60.0, what="condition", proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the crawl ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def assert_provenance(doc: dict, html: bool = True, extractor: str = DEFAULT_EXTRACTOR) -> None:
    for column in PROVENANCE_COLUMNS + (HTML_COLUMNS if html else ()):
        assert doc[column] is not None, f"{doc['url']}: {column} is null"
    assert doc["source"] == "crawl"
    assert doc["fetched_at"].tzinfo is not None and doc["fetched_at"].utcoffset().total_seconds() == 0
    assert doc["resolved_ip"] == "127.0.0.1"
    assert doc["raw_sha256"] == sha256(doc["raw"]) and doc["raw_length"] == len(doc["raw"])
    names = [h["name"].lower() for h in doc["headers"]]
    assert {"etag", "last-modified", "server", "content-type"} <= set(names), names
    if html:
        assert doc["text_sha256"] == sha256(doc["text"].encode("utf-8"))
        assert doc["extractor"] == extractor and doc["extractor_version"] == version(extractor)


# ----- a site crawl: every reachable page, with provenance ---------------------------------------
def test_site_crawl_stores_every_reachable_page_with_full_provenance(tmp_path):
    site = tmp_path / "site"
    reachable = generate_site(site, pages=12)
    log: list = []
    routes = {"/moved.html": redirect("/articles/page-002.html", 301),
              "/hop.html": redirect("/moved.html", 302)}
    store_dir, stats_file = tmp_path / "store", tmp_path / "stats.json"
    with serve(site, routes=routes, request_log=log) as base:
        proc = cli("crawl", base + "index.html", base + "hop.html", "--store", store_dir, "--allow-private",
                   "--crawl-id", "fixture", "--stats-file", stats_file,
                   env={"PROVENANCE_CONFIG": str(_write_config(tmp_path, extract_workers=1))})
    assert proc.returncode == exitcodes.OK, proc.stderr
    assert proc.stdout.startswith("crawl fixture: ")

    docs = {d["url"].removeprefix(base): d for d in rows(store_dir, "SELECT * FROM documents")}
    expected = {p for p in reachable if not p.startswith("private/")} | {"hop.html"}
    assert set(docs) == expected
    for path in expected - {"hop.html"}:
        doc = docs[path]
        assert_provenance(doc, html=path.endswith(".html"))
        assert doc["raw_sha256"] == sha256((site / path).read_bytes()), path  # exactly the bytes served
        assert doc["redirect_chain"] == [] and doc["final_url"] == doc["url"]
        assert doc["previous_doc_id"] is None and doc["crawl_id"] == "fixture"
        assert doc["spider"] == "provenance-site" and doc["http_status"] == 200

    # Redirects: the document keeps the requested URL, the final URL and every hop.
    hop = docs["hop.html"]
    assert hop["final_url"] == base + "articles/page-002.html"
    assert hop["redirect_chain"] == [base + "hop.html", base + "moved.html"]
    assert hop["raw_sha256"] == sha256((site / "articles/page-002.html").read_bytes())

    # Non-HTML: stored with status and bytes, no text.
    binary = docs["data/report.bin"]
    assert binary["text"] is None and binary["extractor"] == "none" and binary["raw_length"] == 2048

    # Every fetch attempt is in fetches, including the robots.txt denial (nothing was sent for it).
    fetches = {f["url"].removeprefix(base): f for f in rows(store_dir, "SELECT * FROM fetches")}
    assert fetches["private/secret.html"]["outcome"] == "robots_denied"
    assert not any(path == "/private/secret.html" for _m, path, _h in log)
    assert all(fetches[p]["outcome"] == "new" and fetches[p]["doc_id"] == docs[p]["doc_id"] for p in expected)

    # Politeness: the project's user agent, and robots.txt read first.
    agents = {h.get("User-Agent") for _m, _p, h in log}
    assert agents == {f"provenance-guard/{provenance.__version__} "
                      f"(+https://github.com/provenance-guard/provenance-guard)"}
    assert log[0][1] == "/robots.txt"

    # Stats: in the store (runs/<run_id>.stats.json and the run record) and in --stats-file.
    stats = json.loads(stats_file.read_text())
    run_id = stats["run_id"]
    assert json.loads((store_dir / "runs" / f"{run_id}.stats.json").read_text()) == stats
    assert stats["pages"] == len(expected) + 1 and stats["stored"] == len(expected)
    assert stats["robots_denied"] == 1 and stats["errors"] == 0 and stats["refused"] == 0
    assert stats["bytes"] > 0 and stats["duration_s"] > 0 and stats["exit_code"] == 0
    record = rows(store_dir, "SELECT status, stats FROM runs WHERE run_id = ?", run_id)[0]
    assert record["status"] == "succeeded" and json.loads(record["stats"])["stored"] == len(expected)
    assert not (store_dir / "_jobs" / "fixture").exists()  # a finished crawl leaves no job state


def test_crawl_extractor_setting_is_used_in_the_extraction_processes_and_recorded(tmp_path):
    site, store_dir = tmp_path / "site", tmp_path / "store"
    reachable = generate_site(site, pages=4)
    with serve(site) as base:
        result = crawl(store_dir, {"extractor": "resiliparse", "extract_workers": 1}, start_urls=[base + "index.html"])
    assert result.exit_code == exitcodes.OK
    docs = {d["url"].removeprefix(base): d for d in rows(store_dir, "SELECT * FROM documents")}
    assert set(docs) == {p for p in reachable if not p.startswith("private/")}
    for path, doc in docs.items():
        assert_provenance(doc, html=path.endswith(".html"), extractor="resiliparse")
    page = docs["articles/page-001.html"]
    assert page["text"].startswith(page["title"] + "\n\n") and len(page["text"]) > 200  # the article ...
    assert "Home" not in page["text"] and "Next" not in page["text"]  # ... without its menu
    assert "Fixture site generated" not in page["text"]  # ... or footer
    # The extractor does not change what is fetched: same settings hash as the default crawl.
    assert page["settings_hash"] == settings_hash({**FAST, "extract_workers": 1})


def test_resiliparse_moves_to_its_extraction_process_once_the_crawl_is_big(tmp_path, monkeypatch, capfd):
    """resiliparse's default: the first pages inline (no process for a small crawl), then one process."""
    from provenance.crawlers.extraction import START_AFTER_PAGES

    site, store_dir = tmp_path / "site", tmp_path / "store"
    reachable = generate_site(site, pages=START_AFTER_PAGES + 30)
    monkeypatch.setenv("PROVENANCE_CRAWL_LOGLEVEL", "INFO")  # the crawl process logs where extraction runs
    with serve(site) as base:
        result = crawl(store_dir, {"extractor": "resiliparse", "extract_workers": None},
                       start_urls=[base + "index.html"])
    assert result.exit_code == exitcodes.OK, result.stats
    assert f"text extraction moves to 1 process(es) after {START_AFTER_PAGES} pages inline" in capfd.readouterr().err
    docs = rows(store_dir, "SELECT url, text, extractor, extractor_version FROM documents WHERE url LIKE '%.html'")
    assert len(docs) == len([p for p in reachable if p.endswith(".html") and not p.startswith("private/")])
    # Inline or in the process, every page got the same treatment.
    assert all(d["text"] and d["extractor"] == "resiliparse" and d["extractor_version"] == version("resiliparse")
               for d in docs)


def _write_config(tmp_path: Path, **crawl_settings) -> Path:
    path = tmp_path / "provenance.toml"
    values = {"autothrottle": False, "concurrency_per_host": 8, **crawl_settings}
    lines = ["[crawl]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# ----- incremental re-crawls ---------------------------------------------------------------------
def test_recrawl_is_incremental_and_versions_are_linked(tmp_path):
    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=8)
    log: list = []
    with serve(site, request_log=log) as base:
        first = crawl(store_dir, start_urls=[base + "index.html"], crawl_id="inc")
        n_docs = first.stats["stored"]
        assert first.exit_code == 0 and first.stats["new"] == n_docs > 8

        log.clear()
        second = crawl(store_dir, start_urls=[base + "index.html"], crawl_id="inc")
        assert second.stats["stored"] == 0
        assert second.stats["not_modified"] + second.stats["unchanged"] == n_docs
        # Conditional requests were sent for every known page, with the stored validators.
        conditional = [h for _m, p, h in log if p not in ("/robots.txt", "/.well-known/tdmrep.json")]
        assert conditional and all("If-None-Match" in h and "If-Modified-Since" in h for h in conditional)

        page = site / "articles" / "page-003.html"
        old_doc = rows(store_dir, "SELECT doc_id, text_sha256 FROM documents WHERE url = ?",
                       base + "articles/page-003.html")[0]
        page.write_text(page.read_text().replace("</article>", "<p>A correction was published.</p></article>"))
        third = crawl(store_dir, start_urls=[base + "index.html"], crawl_id="inc")
    assert third.stats["stored"] == 1 and third.stats["changed"] == 1
    assert rows(store_dir, "SELECT count(*) AS n FROM documents")[0]["n"] == n_docs + 1
    new = rows(store_dir, "SELECT * FROM documents WHERE run_id = ?", third.run_id)[0]
    assert new["url"] == base + "articles/page-003.html" and new["previous_doc_id"] == old_doc["doc_id"]
    change = rows(store_dir, "SELECT * FROM fetches WHERE run_id = ? AND outcome = 'changed'", third.run_id)[0]
    assert change["doc_id"] == new["doc_id"] and change["previous_doc_id"] == old_doc["doc_id"]
    not_modified = rows(store_dir, "SELECT doc_id FROM fetches WHERE run_id = ? AND outcome = 'not_modified'",
                        third.run_id)
    assert len(not_modified) == n_docs - 1 and all(r["doc_id"] for r in not_modified)

    # First-seen time per text: min(fetched_at) over documents; the old text keeps its first-crawl time.
    first_seen = {r["text_sha256"]: r["first_seen"] for r in rows(
        store_dir, "SELECT text_sha256, min(fetched_at) AS first_seen FROM documents "
                   "WHERE text_sha256 IS NOT NULL GROUP BY text_sha256")}
    first_times = [r["fetched_at"] for r in rows(store_dir, "SELECT fetched_at FROM fetches WHERE run_id = ?",
                                                 first.run_id)]
    assert min(first_times) <= first_seen[old_doc["text_sha256"]] <= max(first_times)
    assert first_seen[new["text_sha256"]] == new["fetched_at"] > max(first_times)
    view = {r["text_sha256"]: r["first_seen_at"] for r in rows(store_dir, "SELECT * FROM first_seen")}
    assert view == first_seen  # the first_seen view says the same


# ----- URL lists: integrity -------------------------------------------------------------------------
def test_url_list_integrity_mismatch_is_a_fetch_outcome_and_a_tag(tmp_path):
    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=4)
    raw_ok = (site / "articles/page-000.html").read_bytes()
    text_ok = extract((site / "articles/page-001.html").read_bytes(), "text/html").text
    with serve(site) as base:
        url_list = tmp_path / "urls.txt"
        url_list.write_text(
            "# URL [sha256 of the body or of its text]\n"
            f"{base}articles/page-000.html {sha256(raw_ok)}\n"
            f"{base}articles/page-001.html sha256:{sha256(text_ok.encode())}\n"
            f"{base}articles/page-002.html {'0' * 64}\n"
            f"{base}index.html\n")
        config = _write_config(tmp_path, allow_private=True, extract_workers=0)
        proc = cli("crawl", "--urls", url_list, "--store", store_dir, env={"PROVENANCE_CONFIG": str(config)})
        assert proc.returncode == exitcodes.PARTIAL, proc.stderr  # a mismatch makes the run partial
        again = cli("crawl", "--urls", url_list, "--store", store_dir, env={"PROVENANCE_CONFIG": str(config)})
        assert again.returncode == exitcodes.PARTIAL, again.stderr

    outcomes = {(r["url"].removeprefix(base), r["outcome"]) for r in rows(store_dir, "SELECT * FROM fetches")}
    assert outcomes == {("articles/page-000.html", "new"), ("articles/page-001.html", "new"),
                        ("articles/page-002.html", "integrity_mismatch"), ("index.html", "new"),
                        ("articles/page-000.html", "not_modified"), ("articles/page-001.html", "not_modified"),
                        ("index.html", "not_modified")}
    assert len(rows(store_dir, "SELECT * FROM fetches WHERE outcome = 'integrity_mismatch'")) == 2  # both runs

    bad = rows(store_dir, "SELECT doc_id, raw_sha256, text_sha256 FROM documents WHERE url = ?",
               base + "articles/page-002.html")[0]
    tags = rows(store_dir, "SELECT * FROM tags")
    assert len(tags) == 1  # the rerun saw the same mismatch and did not tag the document twice
    tag = tags[0]
    assert {k: tag[k] for k in ("doc_id", "category", "tag", "detector", "plugin", "plugin_version",
                                "detector_version", "config_hash")} == {
        "doc_id": bad["doc_id"], "category": "provenance", "tag": "integrity_mismatch",
        "detector": "url_list_integrity", "plugin": "provenance-crawl", "plugin_version": provenance.__version__,
        "detector_version": "1", "config_hash": file_sha256(url_list)[:16]}
    evidence = json.loads(tag["evidence"])
    assert evidence["expected_sha256"] == "0" * 64
    assert evidence["actual_raw_sha256"] == bad["raw_sha256"] and evidence["actual_text_sha256"] == bad["text_sha256"]
    schemas.conform(pa.Table.from_pylist([tag]), "tags")  # follows schemas/tags.v1.json
    flags = rows(store_dir, "SELECT doc_id, flags FROM doc_flags WHERE flagged")
    assert flags == [{"doc_id": bad["doc_id"], "flags": ["provenance:integrity_mismatch"]}]


def test_url_list_with_a_bad_hash_is_a_usage_error(tmp_path):
    url_list = tmp_path / "urls.txt"
    url_list.write_text("http://127.0.0.1:9/a.html not-a-hash\n")
    proc = cli("crawl", "--urls", url_list, "--store", tmp_path / "store")
    assert proc.returncode == exitcodes.USAGE
    assert f"{url_list}:1: expected a sha256" in proc.stderr


# ----- SSRF guard, end to end -------------------------------------------------------------------
def _isolated_network_prefix() -> list[str]:
    """`unshare -rn`: run a command in a new network namespace, where no packet can leave this machine."""
    try:
        ok = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        pytest.skip("unshare -rn is not available: the pure guard decision is covered by test_netguard.py")
    return ["unshare", "-rn"]


def test_private_addresses_in_a_url_list_are_refused_before_any_connection(tmp_path):
    # Belt and braces: the crawl runs where nothing can leave (unshare -rn), and a loopback trap
    # proxy would catch a request even without it. A guard failure shows as an outcome other
    # than 'refused' (in the namespace every connection fails), so the assertions below still bite.
    prefix = _isolated_network_prefix()
    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=2)
    # A loopback "proxy": had the guard let a request through, it would arrive here, not at 10.0.0.1.
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.setblocking(False)
    proxy = f"http://127.0.0.1:{trap.getsockname()[1]}"
    log: list = []
    try:
        with serve(site, request_log=log) as base:
            url_list = tmp_path / "urls.txt"
            url_list.write_text(f"http://10.0.0.1/admin\nhttp://169.254.169.254/latest/meta-data/\n"
                                f"{base}index.html\n")
            proc = subprocess.run(
                [*prefix, sys.executable, "-c", "from provenance.cli import main; main()", "crawl", "--urls",
                 str(url_list), "--store", str(store_dir), "--stats-file", str(tmp_path / "s.json")],
                env={**os.environ, "http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""},
                capture_output=True, text=True, timeout=180)
        with pytest.raises(BlockingIOError):
            trap.accept()  # no connection was attempted, not even to the proxy
    finally:
        trap.close()
    assert log == []  # and the loopback site (127.0.0.1, refused without --allow-private) saw nothing
    assert proc.returncode == exitcodes.FAILURE  # nothing fetched
    for url in ("http://10.0.0.1/admin", "http://169.254.169.254/latest/meta-data/"):
        assert f"refused {url}" in proc.stderr
    fetches = {r["url"]: r for r in rows(store_dir, "SELECT * FROM fetches")}
    assert {r["outcome"] for r in fetches.values()} == {"refused"}
    assert "10.0.0.1 is a private address" in fetches["http://10.0.0.1/admin"]["error"]
    assert "link-local" in fetches["http://169.254.169.254/latest/meta-data/"]["error"]
    assert "127.0.0.1 is a loopback address" in fetches[base + "index.html"]["error"]
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["refused"] == 3 and stats["requests_sent"] == 0


# ----- non-HTML bodies recorded only ------------------------------------------------------------
def test_non_html_only_recorded_when_store_non_html_is_off(tmp_path):
    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=2)
    with serve(site) as base:
        url_list = tmp_path / "urls.txt"
        # All four are requested at once, while robots.txt is still loading: each must still be checked.
        url_list.write_text(f"{base}index.html\n{base}data/report.bin\n{base}missing.html\n"
                            f"{base}private/secret.html\n")
        result = crawl(store_dir, {"store_non_html": False}, url_file=url_list)
    fetches = {r["url"].removeprefix(base): r for r in rows(store_dir, "SELECT * FROM fetches")}
    assert fetches["private/secret.html"]["outcome"] == "robots_denied"
    assert fetches["data/report.bin"]["outcome"] == "non_html" and fetches["data/report.bin"]["bytes"] == 2048
    assert fetches["data/report.bin"]["doc_id"] is None
    assert fetches["missing.html"]["outcome"] == "not_found" and fetches["missing.html"]["http_status"] == 404
    assert fetches["missing.html"]["error"].startswith("http_404")
    assert [d["url"] for d in rows(store_dir, "SELECT url FROM documents")] == [base + "index.html"]
    # A 404 is the site's answer, not a failed fetch: recorded and counted, and the run is not partial.
    assert result.exit_code == exitcodes.OK and result.stats["errors_by_kind"] == {}
    assert result.stats["not_found"] == 1 and result.stats["errors"] == 0


def test_failures_are_recorded_with_their_kind(tmp_path):
    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=1)
    (site / "big.html").write_bytes(b"<html><body>" + b"x" * 300_000 + b"</body></html>")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a loopback port nobody listens on
    port = closed.getsockname()[1]
    closed.close()
    with serve(site, routes={"/loop.html": redirect("/loop.html", 302)}) as base:
        url_list = tmp_path / "urls.txt"
        url_list.write_text(f"{base}big.html\n{base}loop.html\n{base}gone.html\nhttp://127.0.0.1:{port}/x.html\n"
                            f"{base}index.html\n")
        result = crawl(store_dir, {"max_size_bytes": 100_000, "max_redirects": 3}, url_file=url_list)
    errors = {r["url"].removeprefix(base): r["error"].split(":")[0]
              for r in rows(store_dir, "SELECT url, error FROM fetches WHERE outcome IN ('error', 'not_found')")}
    assert errors == {"big.html": "too_large", "loop.html": "too_many_redirects", "gone.html": "http_404",
                      f"http://127.0.0.1:{port}/x.html": "connection_refused"}
    assert result.exit_code == exitcodes.PARTIAL and result.stats["errors"] == 3 and result.stats["not_found"] == 1
    assert result.summary_line().startswith(
        f"crawl {result.crawl_id}: 5 pages, 1 stored, 0 unchanged, 3 errors, 1 not found")


# ----- sitemaps ---------------------------------------------------------------------------------
def test_sitemap_crawl_reads_indexes_gzip_and_text_sitemaps(tmp_path):
    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=10)
    with serve(site) as base:
        # Written after the server started: sitemaps hold absolute URLs, which need its port.
        (site / "sitemap-index.xml").write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{base}sitemap-extra.xml.gz</loc></sitemap>"
            f"<sitemap><loc>{base}sitemap-text.txt</loc></sitemap>"
            "</sitemapindex>\n")
        (site / "sitemap-extra.xml.gz").write_bytes(gzip.compress(
            ('<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
             f"<url><loc>{base}private/secret.html</loc></url>"
             # another site (127.0.0.2 is still loopback, so even a mistake would stay on this machine)
             "<url><loc>http://127.0.0.2:9/elsewhere.html</loc></url>"
             f"<url><loc>{base}data/report.bin</loc></url></urlset>\n").encode()))
        (site / "sitemap-text.txt").write_text(
            f"\ufeff{base}articles/copy-of-page-000.html\n\n{base}articles/page-009.html\n")
        # robots.txt names sitemap.xml (every article); the index adds the gzip and text sitemaps.
        result = crawl(store_dir, sitemaps=[base + "robots.txt", base + "sitemap-index.xml"], crawl_id="maps")
    docs = {d["url"].removeprefix(base) for d in rows(store_dir, "SELECT url FROM documents")}
    articles = {f"articles/page-{i:03d}.html" for i in range(10)} | {"articles/copy-of-page-000.html"}
    assert docs == articles | {"index.html", "data/report.bin"}
    fetches = rows(store_dir, "SELECT url, outcome FROM fetches")
    sitemap_fetches = {r["url"].removeprefix(base) for r in fetches if r["outcome"] == "non_html"}
    assert sitemap_fetches == {"robots.txt", "sitemap.xml", "sitemap-index.xml", "sitemap-extra.xml.gz",
                               "sitemap-text.txt"}
    assert {"private/secret.html": "robots_denied"} == {
        r["url"].removeprefix(base): r["outcome"] for r in fetches if r["outcome"] == "robots_denied"}
    assert not any("127.0.0.2" in r["url"] for r in fetches)  # off-site entries are skipped
    assert result.stats["sitemaps"] == 5 and result.exit_code == 0
    assert rows(store_dir, "SELECT DISTINCT spider FROM documents") == [{"spider": "provenance-sitemap"}]


# ----- scheduled-job ergonomics: lock, graceful stop and resume, kill and resume --------------------
def _slow_site(tmp_path: Path, pages: int) -> tuple[Path, set[str]]:
    site = tmp_path / "site"
    reachable = generate_site(site, pages=pages)
    return site, {p for p in reachable if not p.startswith("private/")}


def _documents_per_url(store_dir: Path, base: str) -> dict[str, int]:
    return {r["url"].removeprefix(base): r["n"] for r in rows(
        store_dir, "SELECT url, count(*) AS n FROM documents GROUP BY url")}


def test_second_crawl_on_a_locked_store_exits_75_and_a_stopped_crawl_resumes(tmp_path):
    site, expected = _slow_site(tmp_path, pages=40)
    store_dir = tmp_path / "store"
    config = _write_config(tmp_path, allow_private=True, concurrency_per_host=2, flush_rows=2, extract_workers=0)
    env = {**os.environ, "PROVENANCE_CONFIG": str(config)}
    with serve(site, delay_s=0.4) as base:
        first = cli_background("crawl", base + "index.html", "--store", store_dir, "--crawl-id", "slow", env=env)
        wait_for(lambda: Store(store_dir).snapshot().entries("documents"), what="the first commit", proc=first)
        second = cli("crawl", base + "index.html", "--store", store_dir, "--crawl-id", "slow", env=env)
        assert second.returncode == exitcodes.LOCKED
        assert "store is locked by pid" in second.stderr and "(crawl, since" in second.stderr

        first.send_signal(signal.SIGTERM)  # like `systemctl stop`: finish what is in flight, keep the job
        out, err = first.communicate(timeout=60)
        assert first.returncode == 130, err
        assert "stopping the crawl" in err
        assert (store_dir / "_jobs" / "slow" / "paused").exists()
        stopped = _documents_per_url(store_dir, base)
        assert 0 < len(stopped) < len(expected)

        resumed = cli("crawl", base + "index.html", "--store", store_dir, "--crawl-id", "slow",
                      "--stats-file", tmp_path / "s.json", env=env)
    assert resumed.returncode == exitcodes.OK, resumed.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["resumed"] == "paused"
    assert _documents_per_url(store_dir, base) == {p: 1 for p in expected}
    assert stats["pages"] < len(expected) + 1  # it went on from where it stopped, it did not start over
    statuses = [r["status"] for r in rows(store_dir, "SELECT status FROM runs ORDER BY started_at")]
    assert statuses == ["interrupted", "succeeded"]
    assert not (store_dir / "_jobs" / "slow").exists()


def test_a_killed_crawl_resumes_without_duplicates(tmp_path):
    site, expected = _slow_site(tmp_path, pages=20)
    store_dir = tmp_path / "store"
    config = _write_config(tmp_path, allow_private=True, concurrency_per_host=2, flush_rows=3, extract_workers=0)
    env = {**os.environ, "PROVENANCE_CONFIG": str(config)}
    with serve(site, delay_s=0.2) as base:
        # Its own session: SIGKILL reaches the CLI, the crawl process and everything they started, at once.
        proc = cli_background("crawl", base + "index.html", "--store", store_dir, "--crawl-id", "k", env=env,
                              start_new_session=True)
        wait_for(lambda: len(Store(store_dir).snapshot().entries("documents")) >= 2, what="two commits", proc=proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        killed = _documents_per_url(store_dir, base)
        assert 0 < len(killed) < len(expected)
        journal = store_dir / "_jobs" / "k" / "frontier.jsonl"
        assert journal.exists()
        # The kill may land between a commit and the journal line that records it; make that the case for every
        # commit, so the resume must learn what is done from the store's fetch rows, not from the journal.
        lines = journal.read_text().splitlines(keepends=True)
        journal.write_text("".join(line for line in lines if not line.startswith('{"c":')))

        resumed = cli("crawl", base + "index.html", "--store", store_dir, "--crawl-id", "k",
                      "--stats-file", tmp_path / "s.json", env=env)
    assert resumed.returncode == exitcodes.OK, resumed.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["resumed"] == "killed"
    assert _documents_per_url(store_dir, base) == {p: 1 for p in expected}  # every page, exactly once
    # Continued, not restarted: pages committed before the kill were not fetched again.
    refetched = {r["url"].removeprefix(base) for r in rows(
        store_dir, "SELECT url FROM fetches WHERE run_id = ?", stats["run_id"])}
    assert not refetched & set(killed)
    assert [r["status"] for r in rows(store_dir, "SELECT status FROM runs ORDER BY started_at")] == \
        ["interrupted", "succeeded"]


def test_max_pages_and_max_depth_bound_a_site_crawl(tmp_path):
    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=12)
    with serve(site) as base:
        limited = crawl(store_dir, {"max_pages": 5}, start_urls=[base + "index.html"], crawl_id="five")
        shallow = crawl(tmp_path / "store2", {"max_depth": 1}, start_urls=[base + "index.html"], crawl_id="one")
    assert limited.stats["pages"] == 5
    depths = {json.loads(r["metadata"])["depth"] for r in rows(tmp_path / "store2", "SELECT metadata FROM documents")}
    assert depths == {0, 1} and shallow.stats["stored"] == 6  # index + its 4 article links + report.bin
    assert shallow.stats["robots_denied"] == 1


def test_per_host_concurrency_is_enforced(tmp_path):
    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=12)
    load: dict = {}
    with serve(site, delay_s=0.15, load=load) as base:
        result = crawl(store_dir, {"concurrency_per_host": 2, "concurrency": 16}, start_urls=[base + "index.html"])
    assert result.stats["stored"] == 15
    assert load["peak"] == 2  # never more than crawl.concurrency_per_host requests in flight to the host


def test_the_pipeline_follows_scrapy_conventions():
    from scrapy.exceptions import NotConfigured
    from scrapy.utils.test import get_crawler

    from provenance.crawlers.pipelines import DocumentWriterPipeline

    with pytest.raises(NotConfigured, match="PROVENANCE_ENABLED"):
        DocumentWriterPipeline.from_crawler(get_crawler(settings_dict={"PROVENANCE_ENABLED": False}))
    pipeline = DocumentWriterPipeline.from_crawler(get_crawler(settings_dict={"PROVENANCE_EXTRACT_WORKERS": 2}))
    assert pipeline.workers == 2 and pipeline.store_non_html


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
def test_extraction_processes_load_the_extractor_but_not_the_store(extractor):
    """They only extract (the crawl process builds the row): pyarrow's import was half of each one's start-up."""
    from provenance.crawlers.extraction import start_pool

    pool = start_pool(1, extractor)
    try:
        # eval: a builtin, so nothing of this test module (which imports pyarrow) is imported over there.
        loaded = pool.submit(eval, "sorted(m for m in ('pyarrow', 'duckdb', 'scrapy', 'trafilatura', 'resiliparse')"
                                   " if m in __import__('sys').modules)").result(timeout=120)
        page = pool.submit(extract, b"<html><head><title>T</title></head><body><article><p>" + b"Some words. " * 30
                           + b"</p></article></body></html>", "text/html", "http://example.org/", extractor
                           ).result(timeout=120)
    finally:
        pool.shutdown(wait=True)
    assert loaded == [extractor]
    assert page.extractor == extractor and page.title == "T" and "Some words." in page.text


def test_extraction_processes_are_chosen_for_the_extractor():
    """Not set: resiliparse one process (off the event loop), trafilatura one per CPU (<= 4)."""
    from provenance.crawlers.settings import effective, scrapy_settings

    def workers(**crawl):
        return scrapy_settings(effective(crawl))["PROVENANCE_EXTRACT_WORKERS"]

    assert workers(extractor="resiliparse") == 1
    assert workers(extractor="trafilatura") == workers() == max(1, min(4, os.cpu_count() or 1))
    assert workers(extractor="resiliparse", extract_workers=2) == 2  # a set value always wins
    assert workers(extractor="trafilatura", extract_workers=0) == 0


def test_crawl_needs_exactly_one_kind_of_input(tmp_path):
    proc = cli("crawl", "http://127.0.0.1:9/", "--sitemap", "http://127.0.0.1:9/s.xml", "--store", tmp_path / "s")
    assert proc.returncode == exitcodes.USAGE and "exactly one of" in proc.stderr


def test_not_modified_answers_let_autothrottle_speed_up_like_200s():
    """A re-crawl is mostly 304s; Scrapy's AutoThrottle alone would keep its start delay for all of them."""
    from types import SimpleNamespace

    from scrapy.extensions.throttle import AutoThrottle
    from scrapy.http import Response
    from scrapy.utils.test import get_crawler

    from provenance.crawlers.middlewares import ConditionalAutoThrottle

    def delay_after(cls, *answers, path="/a"):
        """The slot's delay after answers (status, latency) to requests for ``path``, from a 1 s start delay."""
        ext = cls(get_crawler(settings_dict={"AUTOTHROTTLE_ENABLED": True}))
        ext.target_concurrency, ext.mindelay, ext.maxdelay = 4.0, 0.0, 30.0
        slot = SimpleNamespace(delay=1.0)
        for status, latency in answers:
            ext._adjust_delay(slot, latency, Response(f"http://127.0.0.1{path}", status=status))
        return slot.delay

    # What we correct: Scrapy's own lets a 304 change nothing.
    assert delay_after(AutoThrottle, (200, 0.1), (304, 0.01)) == delay_after(AutoThrottle, (200, 0.1))
    assert delay_after(ConditionalAutoThrottle, (200, 0.1), (304, 0.01)) < 0.025
    assert delay_after(ConditionalAutoThrottle, (200, 0.1), (200, 0.01)) == 0.5 * (0.025 + 0.0025)
    # Errors still cannot speed it up, first or later.
    assert delay_after(ConditionalAutoThrottle, (500, 0.01)) == 1.0
    assert delay_after(ConditionalAutoThrottle, (200, 0.1), (500, 0.01)) == 0.025


def test_a_hosts_first_answer_replaces_the_start_delay():
    """The start delay is a guess; Scrapy kept most of it until the first page (a 404 robots.txt could not lower it)."""
    from types import SimpleNamespace

    from scrapy.extensions.throttle import AutoThrottle
    from scrapy.http import Response
    from scrapy.utils.test import get_crawler

    from provenance.crawlers.middlewares import ConditionalAutoThrottle

    def first_delay(cls, status, path):
        ext = cls(get_crawler(settings_dict={"AUTOTHROTTLE_ENABLED": True}))
        ext.target_concurrency, ext.mindelay, ext.maxdelay = 4.0, 0.0, 30.0
        slot = SimpleNamespace(delay=1.0)
        ext._adjust_delay(slot, 0.02, Response(f"http://127.0.0.1{path}", status=status))
        return slot.delay

    assert first_delay(AutoThrottle, 404, "/robots.txt") == 1.0  # every crawl waited this before its first page
    assert first_delay(ConditionalAutoThrottle, 404, "/robots.txt") == 0.005  # latency / target concurrency
    assert first_delay(ConditionalAutoThrottle, 200, "/robots.txt") == 0.005
    assert first_delay(ConditionalAutoThrottle, 304, "/page") == 0.005
    assert first_delay(ConditionalAutoThrottle, 404, "/page") == 1.0  # an error page elsewhere is no measure
    assert first_delay(ConditionalAutoThrottle, 503, "/robots.txt") == 1.0


def test_the_first_answer_cancels_the_request_scheduled_with_the_start_delay():
    """Sending robots.txt scheduled the slot's next request a start delay later; the first page waited for it."""
    from types import SimpleNamespace

    from scrapy.http import Response
    from scrapy.utils.asyncio import CallLaterResult
    from scrapy.utils.test import get_crawler
    from twisted.internet.task import Clock

    from provenance.crawlers.middlewares import ConditionalAutoThrottle

    clock, fired = Clock(), []
    ext = ConditionalAutoThrottle(get_crawler(settings_dict={"AUTOTHROTTLE_ENABLED": True}))
    ext.target_concurrency, ext.mindelay, ext.maxdelay = 4.0, 0.0, 30.0
    slot = SimpleNamespace(delay=1.0, latercall=CallLaterResult.from_twisted(clock.callLater(1.0, fired.append, 1)))
    ext._adjust_delay(slot, 0.02, Response("http://127.0.0.1/robots.txt", status=404))
    clock.advance(2.0)
    assert slot.latercall is None and fired == []  # the downloader reschedules it with the new delay


# ----- HTTP outcomes are not run failures ----------------------------------------------------------
def _site_with_broken_links(root: Path) -> None:
    root.mkdir(parents=True)
    links = "".join(f'<a href="{href}">{href}</a> ' for href in
                    ("a.html", "missing-1.html", "missing-2.html", "old/gone.html", "private/p.html"))
    (root / "index.html").write_text(f"<html><head><title>Home</title></head><body><p>{links}</p></body></html>")
    (root / "a.html").write_text("<html><head><title>A</title></head><body><p>Page a.</p></body></html>")
    (root / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")


def test_broken_links_are_recorded_outcomes_not_failures(tmp_path):
    """404/410 and robots denials are what the site said: counted, stored in fetches, and exit 0 every run."""
    site, store_dir = tmp_path / "site", tmp_path / "store"
    _site_with_broken_links(site)
    gone = Route(410, (("Content-Type", "text/html"),), b"<html><body>gone</body></html>")
    with serve(site, routes={"/old/gone.html": gone}) as base:
        proc = cli("crawl", base, "--allow-private", "--store", store_dir, "--stats-file", tmp_path / "s.json")
        assert proc.returncode == exitcodes.OK, proc.stderr
        assert "Traceback" not in proc.stderr
        assert ", 0 errors, 3 not found, 1 robots denied in " in proc.stdout
        stats = json.loads((tmp_path / "s.json").read_text())
        assert (stats["not_found"], stats["robots_denied"], stats["errors"], stats["exit_code"]) == (3, 1, 0, 0)
        # The incremental re-crawl (304s) is fine too.
        assert cli("crawl", base, "--allow-private", "--store", store_dir).returncode == exitcodes.OK
        # A link that fails for real (a redirect loop) still makes the run partial.
        (site / "index.html").write_text((site / "index.html").read_text().replace(
            "</p>", '<a href="loop.html">loop</a></p>'))
    with serve(site, routes={"/old/gone.html": gone, "/loop.html": redirect("/loop.html", 302)}) as base2:
        proc = cli("crawl", base2, "--allow-private", "--store", store_dir, "--crawl-id", "again")
    assert proc.returncode == exitcodes.PARTIAL and ", 1 errors, 3 not found" in proc.stdout, proc.stdout
    outcomes = {(r["url"].rsplit("/", 1)[-1], r["outcome"], r["http_status"])
                for r in rows(store_dir, "SELECT url, outcome, http_status FROM fetches WHERE crawl_id = 'again'")}
    assert {("missing-1.html", "not_found", 404), ("missing-2.html", "not_found", 404),
            ("gone.html", "not_found", 410), ("p.html", "robots_denied", None),
            ("loop.html", "error", None)} <= outcomes


# ----- child processes ---------------------------------------------------------------------------
def test_crawl_from_a_directory_holding_a_package_named_provenance(tmp_path):
    """The crawl's child process must import the installed provenance, not one in the working directory."""
    fake = tmp_path / "checkout" / "provenance"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("# a source checkout's package: no crawlers in it\n")
    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=2)
    script = Path(sys.executable).with_name("provenance")  # the console script, as a user runs it
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}")
    with serve(site) as base:
        proc = subprocess.run([str(script), "crawl", f"{base}index.html", "--allow-private", "--max-depth", "0",
                               "--store", str(store_dir)], cwd=fake.parent, capture_output=True, text=True,
                              timeout=180)
    assert proc.returncode == exitcodes.OK, proc.stderr
    assert "No module named" not in proc.stderr and "1 stored" in proc.stdout
