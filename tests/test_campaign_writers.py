"""Campaign: two writers at once (a crawl while a tag run writes, and the other way round).

Both commit to the store at once (optimistic concurrency on the log) and both finish; the tag run covers
the documents it planned, a second tag run the crawled ones; every document and every tag is there exactly
once, and `provenance store check` finds nothing wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from campaigns import CLI, TAGGER_PLUGIN, cli, ok, query
from provenance.sites import generate_site, serve
from provenance.store import Store

pytestmark = pytest.mark.slow

def _wait_until_writing(store, proc: subprocess.Popen, kind: str, timeout: float = 120) -> None:
    """Until the running command has written a data file of ``kind`` (it holds the lock by then)."""
    deadline = time.monotonic() + timeout
    while not any((store / kind).rglob("*.parquet")):
        assert proc.poll() is None, f"the first writer ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the first writer never wrote"
        time.sleep(0.05)


def _setup(tmp_path):
    site = tmp_path / "site"
    generate_site(site, pages=20)
    (tmp_path / "docs.jsonl").write_text("".join(
        json.dumps({"url": f"https://writers.example/{i}", "text": f"document number {i}"}) + "\n"
        for i in range(200)))
    config = tmp_path / "provenance.toml"
    config.write_text("[ingest]\nflush_rows = 20\n[crawl]\nallow_private = true\nautothrottle = false\n"
                      "concurrency_per_host = 2\nflush_rows = 2\nextract_workers = 0\n")
    store = tmp_path / "store"
    ok(cli("ingest", tmp_path / "docs.jsonl", "--store", store, cwd=tmp_path))
    return site, store


def _tag_args(store):
    return ["tag", "--store", str(store), "--plugin-module", str(TAGGER_PLUGIN), "--plugins", "campaign_tagger",
            "--batch-size", "10"]


def _assert_nothing_lost(store, n_pages: int) -> None:
    docs = query(store, "SELECT url, count(*) FROM documents GROUP BY url")
    assert len(docs) == 200 + n_pages and all(n == 1 for _u, n in docs)
    tags = query(store, "SELECT doc_id, count(*) FROM tags WHERE detector = 'campaign_tagger' GROUP BY doc_id")
    assert sorted(d for d, _n in tags) == sorted(d for (d,) in query(store, "SELECT doc_id FROM documents"))
    assert all(n == 1 for _d, n in tags)


def _assert_ran_at_once(store) -> None:
    runs = {r["command"]: r for r in Store(store).runs() if r["command"] in ("crawl", "tag")}
    crawl, tag = runs["crawl"], runs["tag"]
    assert crawl["started_at"] < tag["finished_at"] and tag["started_at"] < crawl["finished_at"], \
        "the crawl and the tag run did not overlap: make the slow one slower"


def _assert_store_checks(store) -> None:
    ok(cli("store", "check", "--store", store))


def test_a_crawl_while_a_tag_run_writes(tmp_path):
    site, store = _setup(tmp_path)
    env = {"CAMPAIGN_TAGGER_SLEEP_S": "0.4"}  # 20 batches: about eight seconds of tagging
    tagging = subprocess.Popen([*CLI, *_tag_args(store)], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    with serve(site) as base:
        _wait_until_writing(store, tagging, "tags")
        ok(cli("crawl", base + "index.html", "--store", store, cwd=tmp_path))  # commits beside the tag run
        out, err = tagging.communicate(timeout=300)
        assert tagging.returncode == 0 and "Traceback" not in err, err
    _assert_ran_at_once(store)
    assert query(store, "SELECT count(DISTINCT doc_id) FROM tags")[0][0] == 200  # what it planned
    ok(cli(*_tag_args(store), cwd=tmp_path))  # tags the crawled pages
    _assert_nothing_lost(store, n_pages=23)  # 20 articles, the copy, the index and the binary
    _assert_store_checks(store)


def test_a_tag_run_while_a_crawl_writes(tmp_path):
    site, store = _setup(tmp_path)
    with serve(site, delay_s=0.3) as base:  # a slow site: the crawl takes a few seconds
        crawling = subprocess.Popen([*CLI, "crawl", base + "index.html", "--store", str(store)], cwd=tmp_path,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_until_writing(store, crawling, "fetches")  # only a crawl writes fetches
        ok(cli(*_tag_args(store), cwd=tmp_path))  # tags what was committed when it planned
        out, err = crawling.communicate(timeout=300)
        assert crawling.returncode == 0 and "Traceback" not in err, err
    _assert_ran_at_once(store)
    ok(cli(*_tag_args(store), cwd=tmp_path))  # and the rest
    _assert_nothing_lost(store, n_pages=23)
    _assert_store_checks(store)
