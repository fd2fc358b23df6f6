"""`provenance crawl --urls FILE --shard K/N`: a URL list split by host over crawl processes that commit
to one store at the same time."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

from provenance import exitcodes
from provenance.crawlers.urllist import host_shard
from provenance.maintenance import check_store
from provenance.sites import generate_site, serve
from provenance.sql import connect
from provenance.store import Store

CLI = [sys.executable, "-c", "from provenance.cli import main; main()"]
# Loopback hosts (each its own server, so its own "site"): two fall in each of two shards.
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.7"]


def _cli(*args, cwd, **popen):
    return subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PROVENANCE_PROGRESS_INTERVAL": "3600"}, **popen)


def _rows(store, sql):
    con = connect(Store(store))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_two_shards_crawl_one_url_list_into_one_store_at_once(tmp_path):
    assert sorted(host_shard(f"http://{h}/", 2) for h in HOSTS) == [1, 1, 2, 2]
    site = tmp_path / "site"
    generate_site(site, pages=6)
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    pages.remove("private/secret.html")  # robots.txt disallows it: recorded as robots_denied, not stored
    (tmp_path / "provenance.toml").write_text(
        "[crawl]\nallow_private = true\nextract_workers = 0\nautothrottle = false\nflush_rows = 2\n"
        "concurrency_per_host = 1\n")
    store = tmp_path / "store"
    with contextlib.ExitStack() as stack:
        # A slow site (0.4 s per answer, one request at a time per host): each shard takes a few seconds, so
        # the two commit at the same time.
        bases = [stack.enter_context(serve(site, host=h, delay_s=0.4)) for h in HOSTS]
        urls = [base + page for base in bases for page in pages]
        (tmp_path / "urls.txt").write_text("".join(u + "\n" for u in urls))
        shards = [_cli("crawl", "--urls", "urls.txt", "--shard", f"{k}/2", "--store", store, cwd=tmp_path)
                  for k in (1, 2)]
        results = [p.communicate(timeout=300) for p in shards]
    for proc, (out, err) in zip(shards, results):
        assert proc.returncode == exitcodes.OK, err
        assert "Traceback" not in err, err

    # Every page stored once, each host crawled by one shard, each shard its own crawl.
    docs = _rows(store, "SELECT url, count(*) FROM documents GROUP BY url")
    assert sorted(u for u, _n in docs) == sorted(urls) and {n for _u, n in docs} == {1}
    by_host = _rows(store, "SELECT regexp_extract(url, '//([^:/]+)', 1) AS host, list(DISTINCT crawl_id) "
                           "FROM fetches GROUP BY host")
    assert {h: ids for h, ids in by_host} == {h: [f"urls-urls-shard{host_shard(f'http://{h}/', 2)}of2"]
                                              for h in HOSTS}
    runs = sorted((r for r in Store(store).runs() if r["command"] == "crawl"), key=lambda r: r["started_at"])
    assert len(runs) == 2 and runs[1]["started_at"] < runs[0]["finished_at"], "the shards did not run at once"
    entries = [json.loads(p.read_text()) for p in sorted((store / "_log").glob("*.json"))]
    switches = sum(a["run_id"] != b["run_id"] for a, b in zip(entries, entries[1:]))
    assert switches >= 2, "the shards' commits did not interleave"
    assert check_store(Store(store))[0] == []

    # Running the shards again stores nothing twice.
    with contextlib.ExitStack() as stack:
        for h in HOSTS:  # the same ports: the same URLs
            port = int(urls[HOSTS.index(h) * len(pages)].split(":")[2].split("/")[0])
            stack.enter_context(serve(site, host=h, port=port))
        again = [_cli("crawl", "--urls", "urls.txt", "--shard", f"{k}/2", "--store", store, cwd=tmp_path)
                 for k in (1, 2)]
        for proc in again:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == exitcodes.OK, err
    assert _rows(store, "SELECT count(*), count(DISTINCT url) FROM documents")[0] == (len(urls), len(urls))


def test_shard_is_checked_before_anything_runs(tmp_path):
    (tmp_path / "urls.txt").write_text("http://127.0.0.1:9/a\n")
    for args, message in ((["--urls", "urls.txt", "--shard", "3/2"], "give K/N with 1 <= K <= N"),
                          (["--urls", "urls.txt", "--shard", "x"], "give K/N"),
                          (["http://127.0.0.1:9/", "--shard", "1/2"], "--shard splits a URL list")):
        proc = subprocess.run([*CLI, "crawl", *args, "--store", tmp_path / "s"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == exitcodes.USAGE, proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and message in proc.stderr, proc.stderr
    # A shard no host of the list falls in has nothing to do: that is no failure.
    empty = 2 if host_shard("http://127.0.0.1:9/a", 2) == 1 else 1
    proc = subprocess.run([*CLI, "crawl", "--urls", "urls.txt", "--shard", f"{empty}/2", "--store", tmp_path / "s"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == exitcodes.OK and f"shard {empty}/2; nothing to crawl" in proc.stderr, proc.stderr
