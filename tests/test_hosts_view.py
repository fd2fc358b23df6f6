"""The ``hosts`` view: per registered domain, first and last capture, URLs, servers and IPs, and how many of the
URLs captured on its last day came back changed, whatever the order the captures were imported in."""

from __future__ import annotations

import json

from test_crawl import crawl, rows

from provenance.ingest import run_ingest
from provenance.sites import generate_site, serve
from provenance.store import Store


def _jsonl(path, day, texts):
    path.write_text("".join(json.dumps({"url": url, "text": text, "fetched_at": f"{day}T00:00:00Z"}) + "\n"
                            for url, text in texts.items()))
    return path


def test_last_day_changes_are_counted_per_domain_whatever_the_import_order(tmp_path):
    before = {f"https://news.example/{i}": f"story {i} as first published" for i in range(5)}
    after = {url: (text + ", then rewritten" if i < 4 else text) for i, (url, text) in enumerate(before.items())}
    after["https://news.example/new"] = "a page first seen on the second day"
    other = {"https://blog.example.org/a": "a post that never changes"}
    store = Store.open(tmp_path / "store", create=True)
    # The later capture first: the view orders by capture time, not by import.
    for path in (_jsonl(tmp_path / "march.jsonl", "2024-03-01", after),
                 _jsonl(tmp_path / "january.jsonl", "2024-01-01", {**before, **other})):
        assert not run_ingest(store, [path], crawl_id="c").problems
    hosts = {r["registered_domain"]: r for r in rows(tmp_path / "store", "SELECT * FROM hosts")}
    assert set(hosts) == {"news.example", "example.org"}  # registered domains
    news = hosts["news.example"]
    assert str(news["first_seen_at"])[:10] == "2024-01-01" and str(news["last_day"]) == "2024-03-01"
    assert (news["n_urls"], news["n_documents"]) == (6, 10)
    # On 2024-03-01: five URLs seen before, four with other bytes; the new page is not a re-capture.
    assert (news["recaptured_last_day"], news["changed_last_day"], news["changed_share_last_day"]) == (5, 4, 0.8)
    blog = hosts["example.org"]
    assert (blog["n_urls"], blog["recaptured_last_day"], blog["changed_share_last_day"]) == (1, 0, None)


def test_a_crawled_host_shows_its_server_and_address(tmp_path):
    site = tmp_path / "site"
    generate_site(site, pages=3)
    with serve(site) as base:
        crawl(tmp_path / "store", {"allow_private": True, "extract_workers": 0}, start_urls=[base + "index.html"])
    [host] = rows(tmp_path / "store", "SELECT * FROM hosts")
    assert host["n_urls"] >= 4 and host["n_servers"] == 1 and host["n_ips"] == 1
    assert host["last_ip"] == "127.0.0.1" and host["last_server"]
    assert host["recaptured_last_day"] == 0  # one crawl: nothing captured before
