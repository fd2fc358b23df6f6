"""Campaign: the bad-input corpora in ../shared/data/malformed and robots-sitemaps, end to end.

* every html5lib tree-construction and encoding case (1,796 + 83) through ``ingest`` as JSONL
  ``html`` records, and through a crawl of a loopback server serving them as pages;
* Scrapy's compressed samples (bombs, truncated and corrupted gzip, nested encodings, zstd, brotli)
  and a 1.5 GB gzip bomb generated on the fly, through a site crawl: bounded memory, the rest of
  the site stored;
* crawler-commons' robots.txt edge cases and a sample of Protego's real robots.txt files, and
  crawler-commons' sitemap edge cases, through the crawler.

Each: no traceback, and counts that add up (stored + already stored + bad = records; for crawls,
one fetch row per URL and one document per new fetch). Skipped when ../shared is absent.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from campaigns import CLI, cli, ok, query
from provenance.sites import Route, generate_site, serve

pytestmark = pytest.mark.slow  # and `shared` on each test that reads ../shared

HTML5LIB = "data/malformed/html5lib__html5lib-tests"
COMPRESSED = "data/malformed/scrapy__scrapy/tests/sample_data/compressed"
CRAWLER_COMMONS = "data/robots-sitemaps/crawler-commons__crawler-commons/src/test/resources"
PROTEGO = "data/robots-sitemaps/scrapy__protego/tests/test_data"
CRAWL = {"allow_private": True, "autothrottle": False, "concurrency_per_host": 16, "concurrency": 32,
         "extract_workers": 0}
CRAWL_PAGES_SAMPLE = int(os.environ.get("PROVENANCE_MALFORMED_CRAWL_SAMPLE", "0"))  # 0: every case; N: a sample
SECTION = re.compile(rb"\n#(errors|new-errors|encoding|document|document-fragment|script-on|script-off)\n")


# ----- helpers -----------------------------------------------------------------------------------
def html5lib_cases(shared: Path) -> list[tuple[str, bytes, str | None]]:
    """(case id, input bytes, expected encoding or None) of every tree-construction and encoding case."""
    cases = []
    for kind in ("tree-construction", "encoding"):
        for path in sorted((shared / HTML5LIB / kind).rglob("*.dat")):
            raw = path.read_bytes()
            for n, chunk in enumerate(re.split(rb"(?:^|\n)#data\n", raw)[1:]):
                match = SECTION.search(b"\n" + chunk)
                data = (b"\n" + chunk)[1:match.start()] if match else chunk
                encoding = None
                if kind == "encoding":
                    after = chunk[match.end() - 1:] if match else b""
                    encoding = after.split(b"\n", 1)[0].decode().strip().lower() or None
                cases.append((f"{path.relative_to(shared / HTML5LIB).with_suffix('')}/{n}", data, encoding))
    return cases


def crawl_config(path: Path, **settings) -> Path:
    """A provenance.toml with CRAWL and ``settings`` as its [crawl] section."""
    path.write_text("[crawl]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in {**CRAWL, **settings}.items()))
    return path


def crawl_cli(tmp_path: Path, *args, timeout=600) -> tuple[subprocess.CompletedProcess, dict]:
    """`provenance crawl ARGS` with the CRAWL settings; returns the process and the run's stats."""
    config = crawl_config(tmp_path / "crawl.toml")
    stats_file = tmp_path / "stats.json"
    proc = cli("crawl", *args, "--stats-file", stats_file, env={"PROVENANCE_CONFIG": str(config)}, timeout=timeout)
    ok(proc, 0, 3)
    return proc, json.loads(stats_file.read_text())


def assert_crawl_counts_add_up(store: Path, stats: dict, urls: set[str]) -> dict[str, str]:
    """One fetch row per page URL, one document per new/changed fetch; returns url -> outcome."""
    fetches = query(store, f"SELECT url, outcome, doc_id FROM fetches WHERE run_id = {stats['run_id']!r}")
    pages = [f for f in fetches if f[0] in urls]
    outcomes = {url: outcome for url, outcome, _ in pages}
    assert len(pages) == len(outcomes) == len(urls), \
        f"not fetched exactly once: {sorted(urls - set(outcomes))[:10]}; " \
        f"fetched instead: {sorted({f[0] for f in fetches} - urls)[:10]}"
    stored = {doc for _url, outcome, doc in pages if outcome in ("new", "changed")}
    docs = query(store, f"SELECT doc_id, url FROM documents WHERE run_id = {stats['run_id']!r}")
    assert len(docs) == len({d for d, _ in docs}) == stats["stored"]
    assert {d for d, u in docs if u in urls} == stored
    # Every fetch row is counted once in the stats: as a page (whatever its outcome) or as a sitemap.
    assert stats["pages"] + stats["sitemaps"] == len(fetches), (stats, len(fetches))
    return outcomes


# ----- html5lib through ingest: every case ---------------------------------------------------------
def _ingest_counts(stdout: str) -> tuple[int, int, int, int]:
    """(records, stored, already stored, bad) from ingest's summary line."""
    def count(label: str) -> int:
        match = re.search(rf"(\d+) {label}\b", stdout)
        assert match, f"no '{label}' count in: {stdout}"
        return int(match.group(1))

    return count("records"), count("stored"), count("already stored"), count("bad")


@pytest.mark.shared
def test_every_html5lib_case_through_ingest(shared_dir, tmp_path):
    cases = html5lib_cases(shared_dir)
    assert len(cases) == 1796 + 83
    files = {}
    for kind in ("tree-construction", "encoding"):
        path = tmp_path / f"html5lib-{kind}.jsonl"
        with open(path, "w") as fh:
            for case_id, data, _enc in cases:
                if case_id.startswith(kind):
                    # Bytes that are not UTF-8 become lone surrogates, which JSON can carry (\udcXX).
                    html = data.decode("utf-8", "surrogateescape")
                    fh.write(json.dumps({"url": f"https://html5lib.test/{case_id}", "html": html}) + "\n")
        files[kind] = path
    store = tmp_path / "store"
    proc = ok(cli("ingest", *files.values(), "--store", store, timeout=900), 0, 3)
    records, stored, already, bad = _ingest_counts(proc.stdout)
    assert records == len(cases) and stored + already + bad == records
    bad_lines = [line for line in proc.stderr.splitlines() if line.startswith("provenance: bad input: ")]
    assert len(bad_lines) == bad  # one line per bad record
    assert query(store, "SELECT count(*), count(DISTINCT url) FROM documents")[0] == (stored, stored)
    assert already == 0  # every case has its own URL
    # Ingesting the same files again stores nothing and counts everything as already stored.
    again = ok(cli("ingest", *files.values(), "--store", store, timeout=900), 0, 3)
    assert _ingest_counts(again.stdout) == (records, 0, stored, bad)
    print(f"\nhtml5lib ingest: {records} cases, {stored} stored, {bad} bad")


# ----- html5lib through a crawl --------------------------------------------------------------------
@pytest.mark.shared
def test_html5lib_cases_through_a_crawl(shared_dir, tmp_path):
    cases = html5lib_cases(shared_dir)
    tree = [c for c in cases if c[2] is None]
    encoding = [c for c in cases if c[2] is not None]
    if CRAWL_PAGES_SAMPLE and CRAWL_PAGES_SAMPLE < len(tree):  # every encoding case, a seeded sample of the rest
        tree = random.Random(18).sample(tree, CRAWL_PAGES_SAMPLE)
    chosen = tree + encoding
    site = tmp_path / "site"
    paths = {}
    for case_id, data, _enc in chosen:
        rel = re.sub(r"[^A-Za-z0-9/_-]", "_", case_id) + ".html"
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)  # served as text/html without a charset: the crawler must sniff
        paths[case_id] = rel
    store = tmp_path / "store"
    with serve(site) as base:
        urls = {case_id: base + rel for case_id, rel in paths.items()}
        url_list = tmp_path / "urls.txt"
        url_list.write_text("".join(u + "\n" for u in urls.values()))
        _proc, stats = crawl_cli(tmp_path, "--urls", url_list, "--store", store)
    outcomes = assert_crawl_counts_add_up(store, stats, set(urls.values()))
    served = {base + rel: hashlib.sha256((site / rel).read_bytes()).hexdigest() for rel in paths.values()}
    for url, raw_sha in query(store, "SELECT url, raw_sha256 FROM documents"):
        assert served[url] == raw_sha  # exactly the bytes served
    # Charsets: how often the crawler's sniffing agrees with html5lib's expected encoding (a figure, not a gate).
    charsets = dict(query(store, "SELECT url, lower(charset) FROM documents"))
    expected = {urls[c]: enc for c, _d, enc in encoding}
    agree = sum(1 for url, enc in expected.items() if _same_encoding(charsets.get(url), enc))
    # html5lib's encoding/tests2 cases 16-18: a <meta> declaring UTF-16 in an ASCII page means UTF-8.
    utf16_meta = [urls[c] for c, data, enc in encoding if re.search(rb"charset=.?utf-16", data, re.I)]
    assert len(utf16_meta) >= 3 and all(charsets[u] in ("utf-8", "utf8") for u in utf16_meta), \
        {u: charsets[u] for u in utf16_meta}
    print(f"\nhtml5lib crawl: {len(chosen)} pages, outcomes {sorted(set(outcomes.values()))}, "
          f"{stats['stored']} stored; charset agrees with html5lib in {agree} of {len(expected)} encoding cases")
    assert stats["stored"] == sum(o == "new" for o in outcomes.values()) > 0.9 * len(chosen)


def test_a_meta_charset_of_utf16_is_read_as_utf8_as_browsers_do(tmp_path):
    """Found by the html5lib encoding cases: a page whose <meta> says UTF-16 (it cannot be: the meta
    was readable as ASCII) lost all of its text, decoded as UTF-16 into CJK noise."""
    site = tmp_path / "site"
    site.mkdir()
    words = "A plain paragraph that every reader of this page can see. " * 5
    for label in ("utf-16", "UTF-16LE", "utf-16be"):
        (site / f"{label}.html").write_text(f'<html><head><meta charset="{label}"><title>Declared {label}</title>'
                                            f"</head><body><article><p>{words}</p></article></body></html>")
    store = tmp_path / "store"
    with serve(site) as base:
        url_list = tmp_path / "urls.txt"
        url_list.write_text("".join(f"{base}{p.name}\n" for p in sorted(site.iterdir())))
        crawl_cli(tmp_path, "--urls", url_list, "--store", store)
    rows = query(store, "SELECT charset, title, text FROM documents ORDER BY url")
    assert len(rows) == 3
    for charset, title, text in rows:
        assert charset == "utf-8" and title.startswith("Declared") and text == words.strip()


def _same_encoding(found: str | None, expected: str) -> bool:
    import codecs

    try:
        return found is not None and codecs.lookup(found).name == codecs.lookup(expected).name
    except LookupError:
        return False


# ----- compressed samples and a 1.5 GB gzip bomb ---------------------------------------------------
BOMB_BYTES = 1536 * 1024 * 1024


def gzip_bomb(path: Path, size: int = BOMB_BYTES) -> int:
    """A gzip stream of ``size`` zero bytes, written chunk by chunk (never held whole); returns its length."""
    zeros = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    with open(path, "wb") as fh:
        for _ in range(size // len(zeros)):
            fh.write(compressor.compress(zeros))
        fh.write(compressor.flush())
    return path.stat().st_size


ENCODINGS = {  # Scrapy's samples -> the Content-Encoding they are served with
    "bomb-gzip.bin": "gzip", "bomb-deflate.bin": "deflate", "bomb-br.bin": "br", "bomb-zstd.bin": "zstd",
    "html-br.bin": "br", "html-gzip.bin": "gzip", "html-gzip-deflate.bin": "gzip, deflate",
    "html-gzip-deflate-gzip.bin": "gzip, deflate, gzip", "html-rawdeflate.bin": "deflate",
    "html-zlibdeflate.bin": "deflate", "html-zstd-static-content-size.bin": "zstd",
    "html-zstd-static-no-content-size.bin": "zstd", "html-zstd-streaming-no-content-size.bin": "zstd",
    "truncated-crc-error.gz": "gzip", "truncated-crc-error-short.gz": "gzip", "unexpected-eof.gz": "gzip",
}


def _run_measuring_memory(args, env, timeout=600) -> tuple[subprocess.CompletedProcess, int, int]:
    """Run the CLI; returns (process, peak RSS of any one process of its tree, peak sampled sum of the tree).

    The first figure is exact (the kernel's high-water mark, through wait4); the second is sampled
    every 20 ms over every process in the CLI's session (the CLI, the crawl process, their children).
    """
    proc = subprocess.Popen([*CLI, *map(str, args)], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    peak_sum = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            total = 0
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    if int(fields[3]) == proc.pid:  # process group (= session leader's pid)
                        total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
                except (OSError, IndexError, ValueError):
                    continue
            peak_sum[0] = max(peak_sum[0], total)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_chunks: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: out_chunks.__setitem__(n, f.read()), daemon=True)
               for n, f in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for r in readers:
        r.join(10)
    sampler.join(5)
    completed = subprocess.CompletedProcess(proc.args, proc.returncode, out_chunks.get("out", b"").decode(),
                                            out_chunks.get("err", b"").decode())
    return completed, usage.ru_maxrss * 1024, peak_sum[0]


@pytest.mark.shared
def test_compressed_samples_and_a_gzip_bomb_through_a_crawl(shared_dir, tmp_path):
    compressed = shared_dir / COMPRESSED
    bomb = tmp_path / "bomb.gz"
    bomb_size = gzip_bomb(bomb)
    site = tmp_path / "site"
    reachable = generate_site(site, pages=6)
    routes = {f"/compressed/{name}.html": Route(200, (("Content-Type", "text/html; charset=utf-8"),
                                                      ("Content-Encoding", encoding)), (compressed / name).read_bytes())
              for name, encoding in ENCODINGS.items()}
    routes["/bomb-1.5g.html"] = Route(200, (("Content-Type", "text/html"), ("Content-Encoding", "gzip")),
                                      bomb.read_bytes())  # 1.5 MB on the wire, 1.5 GiB decoded
    for name in sorted(p.name for p in compressed.iterdir() if p.name not in ENCODINGS):
        (site / "plain").mkdir(exist_ok=True)  # feeds, archives: served as they are, no Content-Encoding
        (site / "plain" / name).write_bytes((compressed / name).read_bytes())
    links = [*routes, *(f"/plain/{p.name}" for p in sorted((site / "plain").iterdir()))]
    (site / "malformed.html").write_text("<html><body><h1>Malformed</h1>"
                                         + "".join(f'<a href="{link}">{link}</a>' for link in links)
                                         + "</body></html>")
    store = tmp_path / "store"
    # Scrapy's bombs decode to 11.5 MB: below the default limit (32 MiB), above this one.
    config = crawl_config(tmp_path / "crawl.toml", max_size_bytes=4 * 2**20, warn_size_bytes=2**20)
    with serve(site, routes=routes) as base:
        proc, peak_one, peak_tree = _run_measuring_memory(
            ["crawl", base + "index.html", base + "malformed.html", "--store", store,
             "--stats-file", tmp_path / "stats.json"], {"PROVENANCE_CONFIG": str(config)})
    ok(proc, 0, 3)
    stats = json.loads((tmp_path / "stats.json").read_text())
    urls = {base + p for p in reachable if not p.startswith("private/")} | {base + "malformed.html"} | \
        {base + link.lstrip("/") for link in links}
    outcomes = assert_crawl_counts_add_up(store, stats, urls | {base + "private/secret.html"})
    fetch_errors = dict(query(store, f"SELECT url, error FROM fetches WHERE run_id = {stats['run_id']!r}"))
    # Every bomb, the 1.5 GiB one included, is stopped by the size limit; nothing of it is stored.
    bombs = [base + "bomb-1.5g.html"] + [base + f"compressed/{n}.html" for n in ENCODINGS if n.startswith("bomb")]
    for bomb_url in bombs:
        assert outcomes[bomb_url] == "error" and fetch_errors[bomb_url].startswith("too_large"), bomb_url
    # The rest of the site is stored: every generated page and every well-formed compressed page.
    site_pages = {base + p for p in reachable if not p.startswith("private/")} | {base + "malformed.html"}
    assert {u for u in site_pages if outcomes[u] != "new"} == set()
    texts = dict(query(store, "SELECT url, text FROM documents"))
    for name in ENCODINGS:
        if name.startswith("html-"):
            url = base + f"compressed/{name}.html"
            assert outcomes[url] == "new", (name, fetch_errors.get(url))
            assert texts[url], name  # decoded, then extracted
    # Bounded memory: well below the 1.5 GiB the bomb decodes to (decoded whole, one process would pass 1.5 GiB).
    # About 280 MiB on an idle machine; 640 MiB was seen once on a heavily loaded one, hence the 1 GiB bound.
    assert peak_one < 1024 * 2**20 and peak_tree < 1200 * 2**20, (peak_one, peak_tree)
    print(f"\nbomb crawl: {len(urls)} URLs, outcomes {dict(sorted(Counter(outcomes.values()).items()))}, "
          f"bomb {bomb_size / 2**20:.1f} MiB -> {BOMB_BYTES / 2**30:.1f} GiB, peak RSS one process "
          f"{peak_one / 2**20:.0f} MiB, process tree {peak_tree / 2**20:.0f} MiB")


# ----- robots.txt edge cases ---------------------------------------------------------------------
def _robots_probe_paths(robots: bytes) -> list[str]:
    """Paths worth asking about: '/', and each Allow/Disallow path with wildcards made concrete."""
    paths = {"/", "/index.html"}
    for line in robots.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(":")
        value = value.split("#", 1)[0].strip()
        if key.strip().lower() in ("allow", "disallow") and value.startswith("/"):
            paths.add(value.replace("*", "x").rstrip("$") or "/")
        if len(paths) >= 8:
            break
    return sorted(paths)


@pytest.mark.shared
def test_robots_txt_edge_cases_through_the_crawler(shared_dir, tmp_path):
    """Each robots.txt on its own loopback server; one URL-list crawl over all of them.

    Oracle: Scrapy's Protego parser (the crawler's configured one) asked directly. The crawl must
    record robots_denied for exactly the URLs it denies and never send a request for them.
    """
    from scrapy import Request
    from scrapy.robotstxt import ProtegoRobotParser

    from provenance.crawlers.settings import DEFAULT_USER_AGENT

    files = sorted((shared_dir / CRAWLER_COMMONS / "robots").glob("*.txt"))
    files += random.Random(18).sample(sorted((shared_dir / PROTEGO).iterdir()), 25)  # real sites' robots.txt
    logs, urls, expected_denied = [], [], set()
    with contextlib.ExitStack() as stack:
        for i, robots_file in enumerate(files):
            site = tmp_path / f"site{i}"
            site.mkdir()
            robots = robots_file.read_bytes()
            (site / "robots.txt").write_bytes(robots)
            (site / "index.html").write_text(f"<html><body><p>Site {i}: {robots_file.name}</p></body></html>")
            log: list = []
            base = stack.enter_context(serve(site, request_log=log))
            logs.append((base, log))
            parser = ProtegoRobotParser(robots, None)
            for path in _robots_probe_paths(robots):
                url = Request(base.rstrip("/") + path).url  # as the crawler records it ('x?' -> 'x', '\\' -> '/')
                if url in urls:
                    continue
                urls.append(url)
                if not parser.allowed(url, DEFAULT_USER_AGENT):
                    expected_denied.add(url)
        url_list = tmp_path / "urls.txt"
        url_list.write_text("".join(u + "\n" for u in urls))
        store = tmp_path / "store"
        _proc, stats = crawl_cli(tmp_path, "--urls", url_list, "--store", store)
    outcomes = assert_crawl_counts_add_up(store, stats, set(urls))
    denied = {u for u, o in outcomes.items() if o == "robots_denied"}
    assert denied == expected_denied
    requested = {base.rstrip("/") + path for base, log in logs for _m, path, _h in log}
    assert not requested & expected_denied  # nothing was sent for a denied URL
    print(f"\nrobots: {len(files)} robots.txt files, {len(urls)} URLs, {len(denied)} denied, "
          f"outcomes {dict(sorted(Counter(outcomes.values()).items()))}")


# ----- sitemap edge cases ------------------------------------------------------------------------
def _listed_pages(path: Path) -> set[str]:
    """Pages a sitemap lists, read independently of Scrapy: <url><loc> of an XML urlset (any namespace),
    or the lines of a text sitemap. Other shapes (indexes, feeds) list no pages here."""
    import lxml.etree
    from scrapy import Request

    body = path.read_bytes()
    if path.suffix == ".gz":
        body = gzip.decompress(body)
    if ".txt" in path.name:
        lines = body.decode("utf-8-sig", "replace").split()
        return {Request(line).url for line in lines if line.startswith("http")}
    try:
        root = lxml.etree.fromstring(body, lxml.etree.XMLParser(recover=True, resolve_entities=False))
    except lxml.etree.XMLSyntaxError:
        return set()
    def name(element) -> str:  # comments and processing instructions have no tag name
        return lxml.etree.QName(element).localname if isinstance(element.tag, str) else ""

    if root is None or name(root) != "urlset":
        return set()
    return {Request(loc.text.strip()).url for url in root if name(url) == "url"
            for loc in url if name(loc) == "loc" and loc.text}


@pytest.mark.shared
def test_sitemap_edge_cases_through_the_crawler(shared_dir, tmp_path):
    """crawler-commons' sitemaps (XML, index, namespaces, extensions, gzip, text, BOM, RSS/Atom), their
    page hosts pointed at one loopback server, crawled together in one sitemap crawl."""
    source = shared_dir / CRAWLER_COMMONS
    files = sorted(p for p in (source / "sitemaps").rglob("*") if p.is_file()) + sorted((source / "rss").glob("*"))
    site = tmp_path / "site"
    site.mkdir()
    with serve(site) as base:
        served, page_paths = [], set()
        for path in files:
            raw = path.read_bytes()
            body = gzip.decompress(raw) if path.suffix == ".gz" else raw
            # Page hosts only (the text of <loc>, <link>, text-sitemap lines); namespaces stay as they are.
            hosts = set(re.findall(rb"(?:<(?:\w+:)?loc>|<link>|<link href=\"|^)\s*(https?://[^/<\s\"]+)", body, re.M))
            for host in hosts:
                body = body.replace(host + b"/", base.encode()).replace(host + b"<", base.encode() + b"<")
            for url in re.findall(re.escape(base.encode()) + rb"[^<\s\"]*", body):
                page_paths.add(urlsplit(url.decode()).path)
            name = str(path.relative_to(source)).replace("/", "__")
            (site / name).write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)
            served.append(base + name)
        for page in sorted(page_paths, key=lambda p: -p.count("/")):  # every page a sitemap lists exists
            target = site / page.lstrip("/")
            if page.endswith("/") or target == site:
                target = target / "index.html"
            if target.exists() or target.is_dir():
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f"<html><body><p>Page {page}</p></body></html>")
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                continue  # a page that is also a folder of other pages: the server lists the folder
        store = tmp_path / "store"
        proc, stats = crawl_cli(tmp_path, *[a for url in served for a in ("--sitemap", url)], "--store", store)
    fetches = query(store, "SELECT url, outcome FROM fetches")
    sitemap_fetches = [u for u, _o in fetches if u in served]
    assert sorted(sitemap_fetches) == sorted(served)  # each sitemap fetched once, whatever its shape
    assert stats["sitemaps"] == len(served)
    page_fetches = [u for u, _o in fetches if u not in served]
    assert len(page_fetches) == len(set(page_fetches))  # no page fetched twice, however often listed
    assert_crawl_counts_add_up(store, stats, set(page_fetches))
    stored = {u for (u,) in query(store, "SELECT url FROM documents")}
    listed = {u for path in site.iterdir() if path.is_file() and path.name.startswith(("sitemaps__", "rss__"))
              for u in _listed_pages(path)}
    assert listed and listed <= stored, sorted(listed - stored)[:10]  # every page a sitemap lists is stored
    print(f"\nsitemaps: {len(served)} sitemaps, {len(page_fetches)} pages fetched, {len(stored)} stored, "
          f"outcomes {dict(sorted(Counter(o for _u, o in fetches).items()))}")
