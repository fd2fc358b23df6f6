"""The provenance tier detector through the real runner: first seen by a trusted source, before or after a cut-off."""

from __future__ import annotations

import json

import pytest

import provenance
from provenance.detectors import DetectorError
from provenance.plugins.provenance_tier import ProvenanceTier
from provenance.testing import make_document, make_store, run_detectors

OLD = "The harbour stayed closed until noon while the fishermen waited on the quay for the storm to pass."
NEW = "Our spring catalogue lists forty kinds of seed potatoes, each with its own planting notes."
CLAIMED = "A page whose import file says it was fetched in 2010, which nobody can check."


def tiers(result) -> dict[str, tuple[str, dict]]:
    t = result.tags
    return {d: (tag, json.loads(ev)) for d, tag, ev in zip(t.column("doc_id").to_pylist(), t.column("tag").to_pylist(),
                                                           t.column("evidence").to_pylist())}


def test_tier_by_earliest_trusted_capture(tmp_path):
    docs = [
        make_document(0, url="https://a.example/old", text=OLD, source="crawl", fetched_at="2021-05-01T10:00:00Z"),
        make_document(1, url="https://copy.example/old", text=OLD, source="jsonl", fetched_at="2024-02-01T00:00:00Z"),
        make_document(2, url="https://b.example/new", text=NEW, source="warc", fetched_at="2023-03-01T00:00:00Z"),
        make_document(3, url="https://c.example/claimed", text=CLAIMED, source="jsonl",
                      fetched_at="2010-01-01T00:00:00Z"),
    ]
    store = make_store(tmp_path / "store", docs)
    got = tiers(run_detectors([ProvenanceTier], store))
    old_crawl, old_copy, new, claimed = (d["doc_id"] for d in docs)
    assert got[old_crawl][0] == got[old_copy][0] == "first_seen_before_cutoff"
    # The copy imported from a JSONL file in 2024 carries a text our crawl saw in 2021: the evidence names it.
    assert got[old_copy][1] == {"first_seen_at": "2021-05-01T10:00:00Z", "first_doc_id": old_crawl,
                                "first_url": "https://a.example/old", "first_source": "crawl",
                                "cutoff": "2022-11-30T00:00:00Z", "n_seen": 1}
    assert got[new][0] == "first_seen_after_cutoff"
    assert claimed not in got  # a date an import file claims proves nothing: no tier

    con = provenance.connect(store)
    # The tier describes age, it does not flag; one predicate selects pre-cut-off text nobody flagged.
    rows = con.execute("SELECT doc_id FROM doc_flags WHERE list_contains(flags, 'provenance:first_seen_before_cutoff')"
                       " AND NOT flagged ORDER BY doc_id").fetchall()
    assert [r[0] for r in rows] == sorted([old_crawl, old_copy])
    # ... and it leaves provenance_score to the suspicions of that category (a broken pinned sha256).
    assert con.execute("SELECT max(provenance_score) FROM doc_flags").fetchone()[0] == 0.0


def test_an_older_archive_imported_later_moves_the_tier(tmp_path):
    crawled = make_document(0, url="https://a.example/p", text=NEW, source="crawl", fetched_at="2024-06-01T00:00:00Z")
    store = make_store(tmp_path / "store", [crawled])
    assert tiers(run_detectors([ProvenanceTier], store))[crawled["doc_id"]][0] == "first_seen_after_cutoff"
    # A WARC captured in 2020 of the same text, imported after the crawl: both copies are pre-cut-off now.
    archived = make_document(1, url="https://a.example/p?old", text=NEW, source="warc",
                             fetched_at="2020-01-15T08:30:00Z")
    make_store(tmp_path / "store", [archived])
    got = tiers(run_detectors([ProvenanceTier], store))
    assert {tag for tag, _ in got.values()} == {"first_seen_before_cutoff"}
    assert got[crawled["doc_id"]][1]["first_doc_id"] == archived["doc_id"]
    assert got[crawled["doc_id"]][1]["n_seen"] == 2


def test_options_cutoff_and_sources(tmp_path):
    doc = make_document(0, text=OLD, source="jsonl", fetched_at="2021-01-01T00:00:00Z")
    store = make_store(tmp_path / "store", [doc])
    assert run_detectors([ProvenanceTier], store).tags.num_rows == 0
    # A team that trusts its own JSONL dumps says so, and the config hash records it.
    got = tiers(run_detectors([ProvenanceTier], store, {"provenance_tier": {"sources": ["jsonl"],
                                                                             "cutoff": "2020-06-01"}}))
    assert got[doc["doc_id"]][0] == "first_seen_after_cutoff"
    assert got[doc["doc_id"]][1]["cutoff"] == "2020-06-01T00:00:00Z"
    with pytest.raises(DetectorError, match="cutoff"):
        ProvenanceTier.validate_options({"cutoff": "last year"})
    with pytest.raises(DetectorError, match="sources"):
        ProvenanceTier.validate_options({"sources": ["forum"]})
