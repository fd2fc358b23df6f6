"""host_takeover through the real runner: a domain whose re-captured pages all changed on a new server, or
turned into parking pages, is taken over; a site-wide redesign on the same server, or one changed page on a
new server, is not."""

from __future__ import annotations

import json

import pytest

from provenance.plugins.host_takeover import HostTakeover
from provenance.testing import make_document, run_detectors

BEFORE, AFTER = "2024-03-01T10:00:00Z", "2024-09-01T10:00:00Z"


def site(host: str, n: int, *, changed: int, server_after: str = "nginx", ip_after: str = "192.0.2.1",
         parked: bool = False) -> list[dict]:
    docs = []
    for i in range(n):
        url = f"https://{host}/page{i}"
        docs.append({"url": url, "text": f"Page {i} of {host}: opening hours, prices and directions.",
                     "fetched_at": BEFORE, "headers": {"Server": "nginx"}, "resolved_ip": "192.0.2.1"})
        if i < changed:
            text = (f"The domain {host} is for sale! Make an offer on this domain today." if parked else
                    f"Best casino bonus {i}: win big at {host} now, new games every day.")
        else:
            text = docs[-1]["text"]
        docs.append({"url": url, "text": text, "fetched_at": AFTER, "headers": {"Server": server_after},
                     "resolved_ip": ip_after})
    return docs


CASES = {
    "taken.test": site("taken.test", 6, changed=6, server_after="LiteSpeed", ip_after="198.51.100.7"),
    "parked.test": site("parked.test", 5, changed=5, parked=True),
    "redesign.test": site("redesign.test", 6, changed=6),  # same server and IP: a redesign, not a takeover
    "onepage.test": site("onepage.test", 6, changed=1, server_after="LiteSpeed"),
    "small.test": site("small.test", 3, changed=3, server_after="LiteSpeed"),  # under min_urls
    # a hosting move of pages whose date line and view counter change on every capture: no takeover
    "moved.test": [dict(d, text=f"{d['text']} Updated {d['fetched_at'][:10]}, {7 + 1000 * n:,} views.")
                   for n, d in enumerate(site("moved.test", 6, changed=0, server_after="LiteSpeed",
                                              ip_after="198.51.100.7"))],
}


@pytest.fixture(scope="module")
def tagged():
    docs = [d for docs in CASES.values() for d in docs]
    rows = make_docs = [make_document(i, **d) for i, d in enumerate(docs)]
    by_id = {r["doc_id"]: (r["url"], r["fetched_at"]) for r in make_docs}
    result = run_detectors([HostTakeover], docs)
    return {by_id[r["doc_id"]]: r for r in result.tags.to_pylist()}, rows


def test_only_the_changed_recaptures_of_taken_over_hosts_are_tagged(tagged):
    rows, _ = tagged
    hosts = {url.split("/")[2] for url, _ in rows}
    assert hosts == {"taken.test", "parked.test"}
    assert len(rows) == 11 and all(when.year == 2024 and when.month == 9 for _, when in rows)


def test_evidence_shows_what_changed(tagged):
    rows, _ = tagged
    taken = [json.loads(r["evidence"]) for (url, _), r in rows.items() if "taken.test" in url]
    assert {(e["previous_server"], e["server"], e["previous_resolved_ip"], e["resolved_ip"]) for e in taken} == {
        ("nginx", "LiteSpeed", "192.0.2.1", "198.51.100.7")}
    assert {(e["n_recaptured"], e["n_changed"]) for e in taken} == {(6, 6)}
    parked = [(json.loads(r["evidence"]), r["score"]) for (url, _), r in rows.items() if "parked.test" in url]
    assert all(e["parked"] and score == 0.9 for e, score in parked)
    assert all(r["category"] == "poison" and r["tag"] == "host_takeover" for r in rows.values())
