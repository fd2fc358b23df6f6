"""The crawl's confirmation fetch ([crawl] confirm_after_s, `--confirm-after`): frontrunning caught in one re-crawl.

A real loopback server whose pages the test scripts (each path serves its bodies in turn, with ETags and 304s),
real crawls through run_crawl and the CLI, the real store and the real transient_edit detector. A page edited
just before the re-crawl and reverted right after is fetched once more after a random delay, without
conditional headers: the confirmation shows the revert, and transient_edit tags the version that came and went;
a page whose edit persisted is confirmed and not tagged. A crawl killed while confirmations wait keeps its
changed pages, and the resumed crawl makes the confirmations.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager

import pytest

import provenance
from provenance.crawlers import CrawlRequest, run_crawl
from provenance.plugins.transient_edit import TransientEdit
from provenance.store import Store
from provenance.testing import run_detectors
from test_crawl import _write_config, cli_background, wait_for

ARTICLE = ("<p>The council met on Tuesday to discuss the new library. Members agreed on the budget and asked the "
           "architects for a second design with a larger reading room and a garden for children.</p>"
           "<p>Work is to start in the spring, once the design has been shown to the neighbours.</p>")
POISON = "<p>ACME Vital cures chronic fatigue within days, and doctors now recommend it to every patient.</p>"
EDIT = "<p>The mayor added that the library will also lend tools and sewing machines.</p>"


def html(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><title>{title}</title></head><body><article><h1>{title}</h1>{body}"
            f"</article></body></html>").encode()


INDEX = (b"<!doctype html><html><head><title>Home</title></head><body>"
         b"<a href='/transient.html'>news</a> <a href='/persistent.html'>more</a></body></html>")
ORIGINAL_T, POISONED_T = html("Library", ARTICLE), html("Library", ARTICLE + POISON)
ORIGINAL_P, EDITED_P = html("Budget", ARTICLE.replace("library", "pool")), \
    html("Budget", ARTICLE.replace("library", "pool") + EDIT)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.log.append((self.path, dict(self.headers.items())))
            bodies = server.script.get(self.path)
            body = None if not bodies else (bodies.pop(0) if len(bodies) > 1 else bodies[0])
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def scripted_site():
    """A server on 127.0.0.1: ``server.script[path]`` lists the bodies served in turn (the last one repeats)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.lock, server.log = threading.Lock(), []
    server.script = {"/index.html": [INDEX], "/transient.html": [ORIGINAL_T], "/persistent.html": [ORIGINAL_P]}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


SETTINGS = {"allow_private": True, "autothrottle": False, "extract_workers": 0, "extractor": "resiliparse"}


def crawl(store_dir, base, **settings):
    return run_crawl(Store.open(store_dir, create=True),
                     CrawlRequest(start_urls=[base + "index.html"], crawl_id="c", settings={**SETTINGS, **settings}))


def query(store_dir, sql, params=()):
    con = provenance.connect(Store.open(store_dir))
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def doc_id_of(store_dir, url, body: bytes) -> str:
    return query(store_dir, "SELECT doc_id FROM documents WHERE url = ? AND raw_sha256 = ?",
                 [url, hashlib.sha256(body).hexdigest()])[0][0]


def frontrun(server) -> None:
    """The edits made just before the re-crawl: one undone right after its first fetch, one that stays."""
    with server.lock:
        server.script["/transient.html"] = [POISONED_T, ORIGINAL_T]
        server.script["/persistent.html"] = [EDITED_P]


def transient_tags(store_dir) -> dict:
    result = run_detectors([TransientEdit], Store.open(store_dir))
    return {d: json.loads(e) for d, e in zip(result.tags.column("doc_id").to_pylist(),
                                             result.tags.column("evidence").to_pylist())}


def test_a_confirmation_fetch_catches_a_reverted_edit_in_one_recrawl(tmp_path):
    store_dir = tmp_path / "store"
    with scripted_site() as (server, base):
        first = crawl(store_dir, base, confirm_after_s=0.6)
        assert first.stats["new"] == 3 and first.stats["confirmations"] == 0  # new pages: nothing to confirm
        frontrun(server)
        del server.log[:]
        second = crawl(store_dir, base, confirm_after_s=0.6)
        log = list(server.log)
    transient, persistent = base + "transient.html", base + "persistent.html"
    s = second.stats
    assert (s["changed"], s["not_modified"], s["confirmations"]) == (2, 1, 2)
    assert (s["confirmed_reverted"], s["confirmed_same"], s["confirmed_other"], s["confirmations_pending"]) == \
        (1, 1, 0, 0)
    assert second.exit_code == 0 and "2 confirmation fetches (1 reverted" in second.summary_line()
    # Each changed page twice: conditionally, then unconditionally (a 304 would hide what is served now).
    requests = {path: [h for p, h in log if p == path] for path in ("/transient.html", "/persistent.html")}
    for headers in requests.values():
        assert len(headers) == 2 and "If-None-Match" in headers[0] and "If-None-Match" not in headers[1]
    assert [p for p, _ in log].count("/index.html") == 1  # the confirmation follows no links

    original, poisoned = doc_id_of(store_dir, transient, ORIGINAL_T), doc_id_of(store_dir, transient, POISONED_T)
    edited = doc_id_of(store_dir, persistent, EDITED_P)
    rows = query(store_dir, "SELECT url, outcome, doc_id, previous_doc_id, source, fetched_at FROM fetches "
                            "WHERE confirmation ORDER BY url")
    assert [r[:5] for r in rows] == [(persistent, "unchanged", edited, edited, "crawl"),
                                     (transient, "changed", original, poisoned, "crawl")]
    # The delay is drawn between confirm_after_s / 2 and confirm_after_s after the change was recorded.
    [(changed_at,)] = query(store_dir, "SELECT fetched_at FROM fetches WHERE url = ? AND outcome = 'changed' "
                                       "AND NOT coalesce(confirmation, false)", [transient])
    assert (rows[1][5] - changed_at).total_seconds() >= 0.3
    # The revert brought back stored bytes: no new document, three versions of the page in one store.
    assert query(store_dir, "SELECT count(*) FROM documents")[0][0] == 5
    assert query(store_dir, "SELECT doc_id FROM versions WHERE url_key LIKE '%/transient.html' ORDER BY version") == \
        [(original,), (poisoned,), (original,)]

    tags = transient_tags(store_dir)
    assert list(tags) == [poisoned]  # the version that came and went; the persistent edit is not tagged
    assert tags[poisoned]["previous_doc_id"] == tags[poisoned]["next_doc_id"] == original
    assert tags[poisoned]["reverted_within_s"] < 3600
    assert any("ACME Vital" in span["text"] for span in tags[poisoned]["spans"] if span["field"] == "text")


def test_without_confirm_after_nothing_is_fetched_twice(tmp_path):
    store_dir = tmp_path / "store"
    with scripted_site() as (server, base):
        crawl(store_dir, base)
        frontrun(server)
        second = crawl(store_dir, base)
    assert second.stats["changed"] == 2 and second.stats["confirmations"] == 0
    assert query(store_dir, "SELECT count(*) FROM fetches WHERE confirmation")[0][0] == 0
    assert transient_tags(store_dir) == {}  # the poisoned version is all the store saw since


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT])
def test_a_crawl_stopped_while_confirmations_wait_keeps_its_pages_and_the_resumed_crawl_confirms(tmp_path, stop):
    store_dir = tmp_path / "store"
    config = _write_config(tmp_path, allow_private=True, extract_workers=0, extractor="resiliparse")
    env = {**os.environ, "PROVENANCE_CONFIG": str(config)}
    with scripted_site() as (server, base):
        crawl(store_dir, base)
        frontrun(server)
        transient = base + "transient.html"
        # Confirmations an hour away: the crawl waits for them, idle, and commits what it fetched meanwhile;
        # then it is killed, or stopped with Ctrl-C.
        proc = cli_background("crawl", base + "index.html", "--store", store_dir, "--crawl-id", "c",
                              "--confirm-after", "3600", env=env, start_new_session=True)
        try:
            wait_for(lambda: query(store_dir, "SELECT count(*) FROM fetches WHERE outcome = 'changed'")[0][0] == 2,
                     what="the changed pages committed", proc=proc)
        finally:
            os.killpg(proc.pid, stop)  # SIGINT: a Ctrl-C, which stops the crawl gracefully (exit 130)
            proc.communicate(timeout=60)
        assert proc.returncode == (130 if stop == signal.SIGINT else -signal.SIGKILL)
        poisoned = doc_id_of(store_dir, transient, POISONED_T)  # kept: committed before the kill
        journal = [json.loads(line) for line in (store_dir / "_jobs" / "c" / "frontier.jsonl").read_text().splitlines()]
        assert sorted(e["v"] for e in journal if "v" in e) == [base + "persistent.html", transient]
        # The same crawl again resumes the job: the pages are done, the two confirmations are made (with this
        # run's delay), and the revert is caught.
        resumed = subprocess.run([sys.executable, "-c", "from provenance.cli import main; main()", "crawl",
                                  base + "index.html", "--store", str(store_dir), "--crawl-id", "c",
                                  "--confirm-after", "0.4", "--stats-file", str(tmp_path / "stats.json")],
                                 env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["resumed"] == ("paused" if stop == signal.SIGINT else "killed") and stats["pages"] == 0
    assert (stats["confirmations"], stats["confirmed_reverted"], stats["confirmed_same"]) == (2, 1, 1)
    assert not (store_dir / "_jobs" / "c").exists()  # finished: no confirmation left behind
    assert list(transient_tags(store_dir)) == [poisoned]


def test_confirm_after_is_validated_and_changes_the_settings_hash_only_when_set(cli, tmp_path):
    from provenance.crawlers.settings import settings_hash

    result = cli("crawl", "http://127.0.0.1:9/", "--store", tmp_path / "store", "--confirm-after", "-1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "provenance: error: --confirm-after ([crawl] confirm_after_s): expected number >= 0 and <= 86,400, "
        "got -1.0 (a float)"]
    # Off, the default: the hash of every crawl made before the key existed stays the same.
    assert settings_hash({}) == settings_hash({"confirm_after_s": 0}) != settings_hash({"confirm_after_s": 60})
