"""Versions of a URL whatever the order of import: every capture (a document row, an import's recaptured row, a
crawl's fetch row that re-saw a stored body) sits at its own time, so the versions view, the runner's previous_*
join and content_drift/transient_edit say the same after any order of import. Real WARC and JSONL files, real
ingest, real stores, the real runner."""

from __future__ import annotations

import itertools
import json
import random
from io import BytesIO
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

import provenance
from provenance.ingest import run_ingest
from provenance.plugins.content_drift import ContentDrift
from provenance.plugins.host_takeover import HostTakeover
from provenance.plugins.provenance_tier import ProvenanceTier
from provenance.plugins.transient_edit import TransientEdit
from provenance.store import Store
from provenance.testing import run_detectors

_WORDS = ("river stone council garden harbour lantern meadow orchard bridge market winter summer library school "
          "teacher village station museum painter baker farmer letter window kitchen forest valley mountain").split()
POISON = " ACME Vital cures chronic fatigue within days, and doctors now recommend it to every patient."

PAGE, STEADY, LATE = "https://v.test/page", "https://v.test/steady", "https://v.test/late-dated"
OLD, MID, NEW = "2024-01-10T08:00:00Z", "2024-06-01T08:00:00Z", "2025-01-01T08:00:00Z"


def prose(seed: int, n: int = 12) -> str:
    rng = random.Random(seed)
    return " ".join(" ".join(rng.choice(_WORDS) for _ in range(10)).capitalize() + "." for _ in range(n))


def html(text: str) -> str:
    return f"<html><head><title>Page</title></head><body><article><p>{text}</p></article></body></html>"


A, B, STEADY_TEXT = prose(1, 3), prose(1, 3) + POISON, prose(2)


def write_warc(path: Path, when: str, pages: dict[str, str], server: str = "nginx", ip: str = "192.0.2.1") -> Path:
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, text in pages.items():
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Server", server)],
                                    protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=BytesIO(html(text).encode()),
                                                          http_headers=http, warc_headers_dict={
                                                              "WARC-Date": when, "WARC-IP-Address": ip}))
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def captures(tmp: Path) -> dict[str, Path]:
    """The page was A last January (an archive WARC), B in June (a JSONL export), A again now (a WARC):
    an edit that was undone. The steady page is the same bytes in both WARCs; the late-dated one is first
    imported without a date, then with one."""
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "old": write_warc(tmp / "old.warc.gz", OLD, {PAGE: A, STEADY: STEADY_TEXT}),
        "mid": write_jsonl(tmp / "mid.jsonl", [{"url": PAGE, "html": html(B), "fetched_at": MID},
                                                {"url": LATE, "text": "undated first", "fetched_at": None}]),
        "new": write_warc(tmp / "new.warc.gz", NEW, {PAGE: A, STEADY: STEADY_TEXT}),
        "dated": write_jsonl(tmp / "dated.jsonl", [{"url": LATE, "text": "undated first", "fetched_at": MID}]),
    }


def ingest(store_dir: Path, files: dict[str, Path], order: tuple[str, ...]) -> Store:
    store = Store.open(store_dir, create=True)
    for name in order:
        assert not run_ingest(store, [files[name]], crawl_id=name).problems
    return store


def versions(store: Store) -> list[tuple]:
    con = provenance.connect(store)
    try:
        return con.execute(
            "SELECT url_key, doc_id, version, previous_doc_id, change, strftime(fetched_at, '%Y-%m-%d'), "
            "strftime(last_fetched_at, '%Y-%m-%d'), strftime(previous_fetched_at, '%Y-%m-%d'), captures, "
            "seen_before FROM versions ORDER BY url_key, version NULLS LAST").fetchall()
    finally:
        con.close()


def page_docs(store: Store) -> tuple[str, str]:
    """doc_ids of A and B at PAGE."""
    con = provenance.connect(store)
    try:
        found = dict(con.execute("SELECT contains(text, 'ACME'), doc_id FROM documents WHERE url = ?", [PAGE])
                     .fetchall())
    finally:
        con.close()
    return found[False], found[True]


def drift_and_transient(store: Store) -> dict[tuple[str, str], dict]:
    result = run_detectors([ContentDrift, TransientEdit], store)
    return {(t["detector"], t["doc_id"]): {"tag": t["tag"], "evidence": json.loads(t["evidence"])}
            for t in result.tags.to_pylist()}


ORDERS = [("old", "mid", "new", "dated"), ("new", "dated", "mid", "old"), ("dated", "new", "old", "mid")]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("versions")
    files = captures(tmp / "files")
    return {order: ingest(tmp / "-".join(order), files, order) for order in ORDERS}


def test_every_import_order_gives_the_same_versions(stores):
    (first, *others) = [versions(s) for s in stores.values()]
    assert all(v == first for v in others)
    a, b = page_docs(next(iter(stores.values())))
    assert [r for r in first if r[0] == "v.test/page"] == [
        ("v.test/page", a, 1, None, "first", "2024-01-10", "2024-01-10", None, 1, False),
        ("v.test/page", b, 2, a, "changed", "2024-06-01", "2024-06-01", "2024-01-10", 1, False),
        # Back to A's very bytes: a version of its own (the revert), the same document.
        ("v.test/page", a, 3, b, "changed", "2025-01-01", "2025-01-01", "2024-06-01", 1, True),
    ]
    (steady,) = [r for r in first if r[0] == "v.test/steady"]
    assert steady[2:] == (1, None, "first", "2024-01-10", "2025-01-01", None, 2, False)  # one version, 2 captures
    # A document first stored undated takes its place in time from a later dated capture of it.
    (late,) = [r for r in first if r[0] == "v.test/late-dated"]
    assert late[2:] == (1, None, "first", "2024-06-01", "2024-06-01", None, 1, False)


def test_every_import_order_gives_the_same_previous_and_drift(stores):
    results = [drift_and_transient(s) for s in stores.values()]
    assert all(r == results[0] for r in results[1:])
    a, b = page_docs(next(iter(stores.values())))
    # The edit B is what drifted, against the earlier A; A (first captured before B) is not tagged, in any order,
    # though its stored row is the 2025 capture when the 2025 WARC came first.
    assert sorted(results[0]) == [("content_drift", b), ("transient_edit", b)]
    drift = results[0][("content_drift", b)]
    assert drift["tag"] == "major_edit" and drift["evidence"]["previous_doc_id"] == a
    assert drift["evidence"]["previous_fetched_at"].startswith("2024-01-10")
    assert drift["evidence"]["fetched_at"].startswith("2024-06-01")
    transient = results[0][("transient_edit", b)]["evidence"]
    assert (transient["previous_doc_id"], transient["next_doc_id"]) == (a, a)
    assert transient["next_fetched_at"].startswith("2025-01-01")


def test_a_crawl_s_fetch_of_a_stored_body_is_a_capture(tmp_path):
    from provenance.crawlers import CrawlRequest, run_crawl
    from provenance.sites import generate_site, serve

    site, store_dir = tmp_path / "site", tmp_path / "store"
    generate_site(site, pages=2)
    settings = {"allow_private": True, "autothrottle": False, "extract_workers": 0}
    with serve(site) as base:
        url = base + "articles/page-001.html"
        for _ in range(2):  # the second crawl finds the same bytes: a fetch row, no document
            run_crawl(Store.open(store_dir, create=True), CrawlRequest(start_urls=[url], crawl_id="c",
                                                                        settings=settings))
    con = provenance.connect(store_dir)
    (doc_id, text, first), = con.execute("SELECT doc_id, text, fetched_at FROM documents WHERE url = ?",
                                         [url]).fetchall()
    (again,) = con.execute("SELECT max(fetched_at) FROM fetches WHERE url = ? AND doc_id = ?", [url, doc_id]).fetchone()
    con.close()
    assert again > first
    # An export of the page taken between the two crawls, imported after both, showed an edit.
    between = first + (again - first) / 2
    write_jsonl(tmp_path / "between.jsonl", [{"url": url, "text": text + POISON, "fetched_at": between.isoformat()}])
    assert not run_ingest(Store.open(store_dir), [tmp_path / "between.jsonl"], crawl_id="export").problems
    rows = [r for r in versions(Store.open(store_dir)) if r[1] == doc_id or r[3] == doc_id]
    assert [(r[1] == doc_id, r[2], r[4], r[9]) for r in rows] == [
        (True, 1, "first", False), (False, 2, "changed", False), (True, 3, "changed", True)]
    tags = drift_and_transient(Store.open(store_dir))
    edited = rows[1][1]
    assert {k[0] for k in tags if k[1] == edited} == {"content_drift", "transient_edit"}
    assert not [k for k in tags if k[1] == doc_id]
    assert tags[("content_drift", edited)]["evidence"]["previous_fetched_at"] == first.isoformat()


def test_the_versions_of_a_document_s_first_appearance_are_one_row_per_document(stores):
    con = provenance.connect(next(iter(stores.values())))
    try:
        n_docs, n_first = con.execute("SELECT (SELECT count(*) FROM documents), "
                                      "(SELECT count(DISTINCT doc_id) FROM versions WHERE NOT seen_before)").fetchone()
        dup = con.execute("SELECT count(*) FROM versions WHERE NOT seen_before GROUP BY doc_id HAVING count(*) > 1"
                          ).fetchall()
    finally:
        con.close()
    assert n_first == n_docs and dup == []


def test_captures_at_one_time_are_ordered_by_doc_id_in_every_order(tmp_path):
    # Same-second captures of two documents at one URL are ordered by doc_id, in every order of import.
    files = {n: write_jsonl(tmp_path / f"{n}.jsonl", [{"url": PAGE, "text": t, "fetched_at": OLD}])
             for n, t in (("x", "one text"), ("y", "another text"))}
    results = [versions(ingest(tmp_path / "-".join(o), files, o)) for o in itertools.permutations(files)]
    assert results[0] == results[1] and [r[2] for r in results[0]] == [1, 2]


def test_host_takeover_tags_the_takeover_not_the_owner_s_return_in_every_order(tmp_path):
    # A domain's pages last January, a casino on another server in June, the owner's pages back in January.
    pages = {f"https://owned.test/p{i}": prose(10 + i, 3) for i in range(6)}
    casino = {url: f"Best casino bonus {i}: win big now, new games every day." for i, url in enumerate(pages)}
    files = {"old": write_warc(tmp_path / "old.warc.gz", OLD, pages),
             "taken": write_warc(tmp_path / "taken.warc.gz", MID, casino, "LiteSpeed", "198.51.100.7"),
             "back": write_warc(tmp_path / "back.warc.gz", NEW, pages)}
    results = []
    for order in (("old", "taken", "back"), ("back", "taken", "old")):
        store = ingest(tmp_path / "-".join(order), files, order)
        con = provenance.connect(store)
        casino_ids = {r[0] for r in con.execute("SELECT doc_id FROM documents WHERE contains(text, 'casino')")
                      .fetchall()}
        con.close()
        tagged = {t["doc_id"] for t in run_detectors([HostTakeover], store).tags.to_pylist()}
        results.append(tagged)
        assert tagged == casino_ids and len(tagged) == 6
    assert results[0] == results[1]


CHAIN_DETECTORS = [ContentDrift, TransientEdit, HostTakeover, ProvenanceTier]
OWNED = [f"https://owned.test/p{i}" for i in range(6)]
PAGE2, PAGE4 = "https://v.test/two", "https://v.test/four"


def late_archive_files(tmp: Path) -> dict[str, Path]:
    """An early archive (last January), this week's crawl and an archive of last June that arrives last: it
    holds an older capture of a page first seen this week, a version between two known ones, an older capture
    of unchanged bytes, a domain's pages before a casino took them, and an edit undone since."""
    tmp.mkdir(parents=True, exist_ok=True)
    c2, t4 = prose(20, 3), prose(21, 3)
    return {
        "early": write_warc(tmp / "early.warc.gz", OLD, {PAGE2: prose(22, 3), PAGE4: t4}),
        "recent": write_warc(tmp / "recent.warc.gz", NEW, {PAGE: A, PAGE2: c2, STEADY: STEADY_TEXT, PAGE4: t4}
                             | {u: f"Best casino bonus {i}: win big now, new games every day." for i, u in
                                enumerate(OWNED)}, "LiteSpeed", "198.51.100.7"),
        "june": write_warc(tmp / "june.warc.gz", MID, {PAGE: prose(23, 3), PAGE2: c2 + POISON[:40] + prose(24, 1),
                                                       STEADY: STEADY_TEXT, PAGE4: t4 + POISON}
                           | {u: prose(30 + i, 3) for i, u in enumerate(OWNED)}),
    }


def all_tags(store: Store) -> list[tuple]:
    con = provenance.connect(store)
    try:
        return con.execute("SELECT detector, doc_id, tag, score, evidence FROM tags "
                           "ORDER BY detector, doc_id, tag, evidence").fetchall()
    finally:
        con.close()


def test_tags_made_before_an_older_archive_arrives_are_redone(tmp_path):
    files = late_archive_files(tmp_path / "files")
    chronological = ingest(tmp_path / "chronological", files, ("early", "june", "recent"))
    run_detectors(CHAIN_DETECTORS, chronological)
    late = ingest(tmp_path / "late", files, ("early", "recent"))
    first = run_detectors(CHAIN_DETECTORS, late)
    assert not any(t["detector"] == "host_takeover" for t in first.tags.to_pylist())  # no earlier owner yet
    assert not run_ingest(late, [files["june"]], crawl_id="june").problems
    again = run_detectors(CHAIN_DETECTORS, late)
    assert again.summary.detectors["content_drift"].rows > 0  # covered documents tagged again
    expected = all_tags(chronological)
    assert all_tags(late) == expected
    by_doc = {(d, doc): (tag, json.loads(ev)) for d, doc, tag, _s, ev in expected}
    con = provenance.connect(late)
    ids = dict(con.execute("SELECT url || '@' || strftime(fetched_at, '%Y-%m'), doc_id FROM documents").fetchall())
    con.close()
    # This week's page is no first version any more: it drifted from last June's capture.
    assert by_doc[("content_drift", ids[f"{PAGE}@2025-01"])][1]["previous_doc_id"] == ids[f"{PAGE}@2024-06"]
    # The drift reported against January is now reported against June, and June's against January.
    assert by_doc[("content_drift", ids[f"{PAGE2}@2025-01"])][1]["previous_doc_id"] == ids[f"{PAGE2}@2024-06"]
    assert by_doc[("content_drift", ids[f"{PAGE2}@2024-06"])][1]["previous_doc_id"] == ids[f"{PAGE2}@2024-01"]
    assert {doc for d, doc in by_doc if d == "host_takeover"} == {ids[f"{u}@2025-01"] for u in OWNED}
    assert ("transient_edit", ids[f"{PAGE4}@2024-06"]) in by_doc
    # A rerun with nothing new does nothing: no detector works, nothing is committed.
    seq = late.snapshot().log_seq
    rerun = run_detectors(CHAIN_DETECTORS, late)
    assert {s.status for s in rerun.summary.detectors.values()} == {"up_to_date"}
    assert late.snapshot().log_seq == seq and all_tags(late) == expected


def test_a_late_recapture_of_stored_bytes_moves_a_drift_to_the_version_before(tmp_path):
    # June's capture of the page's January bytes arrives last: a fetches row only, no document; the January
    # version now lasts until June, so this week's drift says so.
    files = {"jan": write_warc(tmp_path / "jan.warc.gz", OLD, {PAGE: A}),
             "now": write_warc(tmp_path / "now.warc.gz", NEW, {PAGE: B}),
             "june": write_warc(tmp_path / "june.warc.gz", MID, {PAGE: A})}
    store = ingest(tmp_path / "store", files, ("jan", "now"))
    run_detectors([ContentDrift], store)
    before = {t[1]: json.loads(t[4]) for t in all_tags(store)}
    assert not run_ingest(store, [files["june"]], crawl_id="june").problems
    run_detectors([ContentDrift], store)
    after = {t[1]: json.loads(t[4]) for t in all_tags(store)}
    assert set(after) == set(before) and len(after) == 1
    (drift,) = after.values()
    assert drift["previous_fetched_at"].startswith("2024-06-01")
    assert next(iter(before.values()))["previous_fetched_at"].startswith("2024-01-10")
    # A re-crawl that finds the newest version unchanged changes no document's previous: nothing is re-tagged.
    later = write_warc(tmp_path / "later.warc.gz", "2025-02-01T08:00:00Z", {PAGE: B})
    assert not run_ingest(store, [later], crawl_id="later").problems
    rerun = run_detectors([ContentDrift], store).summary.detectors["content_drift"]
    assert (rerun.rows, rerun.tags) == (0, 0)
    assert {t[1]: json.loads(t[4]) for t in all_tags(store)} == after


@pytest.mark.parametrize("seed", range(4))
def test_content_drift_tagged_between_imports_equals_tagged_once_after_all(tmp_path, seed):
    # Random captures of three URLs (texts that come back: A B A), imported in three random parts with a tag run
    # after each, against one tag run after all: the re-tagging rule misses no document whose previous changed.
    rng = random.Random(seed)
    texts = [prose(40), prose(41), prose(40) + " One sentence more at the end of the page."]
    records = [{"url": f"https://r.test/{u}", "text": rng.choice(texts),
                "fetched_at": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T08:00:00Z"}
               for u in range(3) for _ in range(rng.randint(3, 6))]
    parts = [[], [], []]
    for record in records:
        rng.choice(parts).append(record)
    files = [write_jsonl(tmp_path / f"part{i}.jsonl", part) for i, part in enumerate(parts) if part]
    once, stepwise = Store.open(tmp_path / "once", create=True), Store.open(tmp_path / "stepwise", create=True)
    for path in files:
        assert not run_ingest(once, [path], crawl_id="c").problems
        assert not run_ingest(stepwise, [path], crawl_id="c").problems
        run_detectors([ContentDrift], stepwise, isolation="inline")
    run_detectors([ContentDrift], once, isolation="inline")
    assert all_tags(stepwise) == all_tags(once)
