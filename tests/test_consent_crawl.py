"""Consent signals end to end: loopback sites that set each one, `provenance crawl` + `provenance tag` + the consent view.

Per host: robots.txt evaluated per AI agent with the parser Scrapy obeys, and /.well-known/tdmrep.json fetched once
per crawl (counted at the server); per page: TDMRep headers and <meta>, X-Robots-Tag, licence links (the consent
detector). Malformed inputs are recorded as such and never stop the crawl.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import provenance
from provenance import exitcodes, schemas
from provenance.crawlers.sitepolicy import TdmRepFile
from provenance.sites import Route, serve
from provenance.store import Store
from provenance.testing import make_store
from test_crawl import _write_config, cli

HTML = (("Content-Type", "text/html; charset=utf-8"),)


def page(title: str, head: str = "", body: str = "") -> bytes:
    return (f"<!DOCTYPE html><html><head><title>{title}</title>{head}</head><body><main><h1>{title}</h1>"
            f"<p>Rivers, mills and harbours of the northern valley, told at length for the test.</p>{body}"
            f"</main></body></html>").encode()


def html(title: str, head: str = "", body: str = "", headers=()) -> Route:
    return Route(200, HTML + tuple(headers), page(title, head, body))


def json_route(data) -> Route:
    return Route(200, (("Content-Type", "application/json"),), data if isinstance(data, bytes) else
                 json.dumps(data).encode())


# Host A: robots.txt with AI-agent groups (our own agent matches '*' and may fetch everything), a valid tdmrep.json.
ROBOTS_A = ("User-agent: *\nAllow: /\n\n"
            "User-agent: GPTBot\nDisallow: /private\n\n"
            "User-agent: CCBot\nDisallow: /\n")
TDMREP_A = [
    {"location": "/reserved/*", "tdm-reservation": 1, "tdm-policy": "https://pub.example/policy.json"},
    {"location": "/open$", "tdm-reservation": 0},
]
SITE_A = {
    "/robots.txt": Route(200, (("Content-Type", "text/plain"),), ROBOTS_A.encode()),
    "/.well-known/tdmrep.json": json_route(TDMREP_A),
    # a TDMRep header in odd casing
    "/header": html("Header", headers=[("tDm-ReSeRvAtIoN", "1")]),
    # repeated X-Robots-Tag headers, differently cased
    "/repeated": html("Repeated", headers=[("X-Robots-Tag", "noai"), ("x-robots-tag", "noindex, nofollow")]),
    # robots.txt disallows GPTBot here; a rel=license link
    "/private/licensed": html("Licensed", '<link rel="license" href="https://creativecommons.org/licenses/by/4.0/">'),
    # robots.txt allows (every agent but CCBot), tdmrep.json reserves: both recorded
    "/reserved/plain": html("Reserved"),
    # tdmrep.json reserves, the page's <meta> says 0: the reservation wins, marked as a conflict
    "/reserved/meta-open": html("Meta open", '<meta name="tdm-reservation" content="0">'),
    # the file's "/open$" rule (0) matches exactly this path
    "/open": html("Open"),
    "/open/more": html("Open more"),
}
# Host B: tdmrep.json that is not JSON; no robots.txt (404: everything allowed).
SITE_B = {"/.well-known/tdmrep.json": json_route(b"[{\"location\": \"/\", \"tdm-reservation\": 1"),
          "/b1": html("B1", '<meta name="robots" content="noai">'), "/b2": html("B2")}
# Host C: a JSON array with broken rules; the valid one still applies.
SITE_C = {"/.well-known/tdmrep.json": json_route([{"location": "/", "tdm-reservation": "yes"}, "rule",
                                                   {"location": "/c*", "tdm-reservation": 1,
                                                    "tdm-policy": "not a url"},
                                                   {"location": "/c", "tdm-reservation": 1}]),
          "/c1": html("C1"), "/c2": html("C2")}


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    """One crawl of a URL list over three hosts, then the consent detector; -> (store, {path: consent row}, logs)."""
    tmp = tmp_path_factory.mktemp("consent-crawl")
    store_dir = tmp / "store"
    (tmp / "empty").mkdir()
    logs = {"a": [], "b": [], "c": []}
    with serve(tmp / "empty", routes=SITE_A, request_log=logs["a"]) as a, \
            serve(tmp / "empty", routes=SITE_B, request_log=logs["b"]) as b, \
            serve(tmp / "empty", routes=SITE_C, request_log=logs["c"]) as c:
        urls = [a + p.lstrip("/") for p in SITE_A if not p.endswith((".txt", ".json"))]
        urls += [b + "b1", b + "b2", c + "c1", c + "c2"]
        (tmp / "urls.txt").write_text("\n".join(urls) + "\n")
        config = _write_config(tmp, allow_private=True, extract_workers=0, extractor="resiliparse")
        env = {"PROVENANCE_CONFIG": str(config)}
        crawl = cli("crawl", "--urls", tmp / "urls.txt", "--store", store_dir, env=env)
        assert crawl.returncode == exitcodes.OK, crawl.stderr
        bases = {"a": a, "b": b, "c": c}
    tag = cli("tag", "--store", store_dir, "--plugins", "consent", env=env)
    assert tag.returncode == exitcodes.OK, tag.stderr
    con = provenance.connect(store_dir)
    cur = con.execute("SELECT url, tdm_reserved, ai_agents_disallowed, directives, license, evidence, tdm_conflict "
                      "FROM consent")
    names = [d[0] for d in cur.description]
    by_path = {}
    for row in cur.fetchall():
        r = dict(zip(names, row))
        r["evidence"] = json.loads(r["evidence"]) if r["evidence"] else {}
        host = next(k for k, base in bases.items() if r["url"].startswith(base))
        by_path[host + ":/" + r["url"].removeprefix(bases[host])] = r
    con.close()
    return store_dir, by_path, logs


def test_one_robots_txt_and_one_tdmrep_json_request_per_host(crawled):
    _, found, logs = crawled
    assert len(found) == len(SITE_A) - 2 + 4  # every page stored
    for host, log in logs.items():
        paths = Counter(path for _method, path, _headers in log)
        assert paths["/.well-known/tdmrep.json"] == 1, (host, paths)
        assert paths["/robots.txt"] == 1, (host, paths)
        assert all(n == 1 for n in paths.values()), (host, paths)  # and nothing fetched twice


def test_robots_txt_per_ai_agent_with_its_hash(crawled):
    _, found, _ = crawled
    robots_sha = hashlib.sha256(ROBOTS_A.encode()).hexdigest()
    private = found["a:/private/licensed"]
    assert private["ai_agents_disallowed"] == ["GPTBot", "CCBot"]  # in [crawl] ai_agents order
    assert private["evidence"]["robots_txt"]["sha256"] == robots_sha
    assert private["evidence"]["robots_txt"]["status"] == 200
    assert found["a:/header"]["ai_agents_disallowed"] == ["CCBot"]
    # Google-Extended has no group of its own: '*' (allow) governs it, as Protego and Scrapy read it
    assert "Google-Extended" not in private["ai_agents_disallowed"]
    no_robots = found["b:/b1"]
    assert no_robots["ai_agents_disallowed"] == [] and no_robots["evidence"]["robots_txt"]["status"] == 404


def test_tdmrep_json_rules_and_conflicts(crawled):
    _, found, _ = crawled
    plain = found["a:/reserved/plain"]
    assert plain["tdm_reserved"] == "true" and plain["tdm_conflict"] is False
    ev = plain["evidence"]["tdmrep_json"]
    assert ev["status"] == "rules" and ev["tdm-reservation"] == 1
    assert ev["tdm-policy"] == "https://pub.example/policy.json"
    assert ev["rule"] == {**TDMREP_A[0], "index": 0}
    assert ev["sha256"] == hashlib.sha256(json.dumps(TDMREP_A).encode()).hexdigest()
    # robots.txt allows GPTBot here while tdmrep.json reserves: both recorded, neither overrides the other
    assert plain["ai_agents_disallowed"] == ["CCBot"]
    meta_open = found["a:/reserved/meta-open"]
    assert meta_open["tdm_reserved"] == "true" and meta_open["tdm_conflict"] is True
    assert meta_open["evidence"]["tdm_not_reserved"]["signals"][0]["source"] == "meta"
    assert found["a:/open"]["tdm_reserved"] == "false"
    assert found["a:/open"]["evidence"]["tdmrep_json"]["rule"]["location"] == "/open$"
    more = found["a:/open/more"]  # "$" anchors: no rule matches
    assert more["tdm_reserved"] == "unknown" and "rule" not in more["evidence"]["tdmrep_json"]


def test_headers_meta_and_licences_in_the_same_view(crawled):
    _, found, _ = crawled
    header = found["a:/header"]
    assert header["tdm_reserved"] == "true"
    assert header["evidence"]["tdm_reserved"]["signals"][0]["name"].lower() == "tdm-reservation"
    repeated = found["a:/repeated"]
    assert repeated["directives"] == ["noai", "nofollow", "noindex"]
    assert {s["value"] for s in repeated["evidence"]["noindex"]["signals"]} == {"noindex, nofollow"}
    assert found["a:/private/licensed"]["license"] == "cc-by-4.0"
    assert found["b:/b1"]["directives"] == ["noai"]


def test_malformed_tdmrep_json_is_recorded_and_the_crawl_goes_on(crawled):
    store_dir, found, _ = crawled
    for path in ("b:/b1", "b:/b2"):
        ev = found[path]["evidence"]["tdmrep_json"]
        assert ev["status"] == "malformed" and ev["problems"][0].startswith("not JSON")
        assert found[path]["tdm_reserved"] == "unknown"
    c1 = found["c:/c1"]["evidence"]["tdmrep_json"]
    assert c1["status"] == "rules" and c1["rule"]["index"] == 3 and found["c:/c1"]["tdm_reserved"] == "true"
    assert c1["problems"] == ["rule 0: tdm-reservation must be 0 or 1", "rule 1: not an object",
                              "rule 2: tdm-policy must be an absolute http(s) URL"]


def test_export_respect_opt_out_honours_tdmrep_json(crawled, tmp_path):
    store_dir, found, _ = crawled
    out = tmp_path / "export"
    proc = cli("export", "--store", store_dir, "--out", out, "--respect-opt-out")
    assert proc.returncode == exitcodes.OK, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    kept = {r["url"] for r in pq.read_table(out / "documents.parquet", columns=["url"]).to_pylist()}
    reserved = {r["url"] for r in found.values() if r["tdm_reserved"] == "true" or "noai" in r["directives"]}
    assert reserved and not kept & reserved
    assert len(kept) == len(found) - len(reserved)
    assert manifest["opt_out"]["excluded_by_signal"]["consent:tdm_reserved"] == 5  # header, 2 file, c1, c2


def test_tdmrep_statuses_from_responses():
    assert TdmRepFile.from_response(404, b"<html>").status == "none"
    assert TdmRepFile.from_response(503, b"").status == "error"
    assert TdmRepFile.from_response(200, b'{"location": "/"}').status == "malformed"
    rules = TdmRepFile.from_response(200, b'[{"location": "/a*b$", "tdm-reservation": 1}]')
    assert rules.columns("https://h.test/a/x/b")["tdm_reservation"] == 1
    assert "tdm_reservation" not in rules.columns("https://h.test/a/x/bc")  # "$" anchors the end


def test_stores_with_version_1_fetch_files_keep_working(tmp_path, monkeypatch):
    """A store whose fetches files predate version 2 reads the new columns as null, alone or beside new files."""
    store = make_store(tmp_path / "store", [{"url": "https://old.test/a", "html": "<p>x</p>"}])
    doc_id = provenance.connect(store.root).execute("SELECT doc_id FROM documents").fetchone()[0]
    row = {"run_id": "r", "crawl_id": "old", "url": "https://old.test/a", "fetched_at": datetime.now(timezone.utc),
           "outcome": "new", "doc_id": doc_id}

    def write_fetches(extra: dict) -> None:
        s = Store.open(store.root)
        with s.run("crawl", config={}) as run:
            run.commit(add=[run.write("fetches", pa.Table.from_pylist([{**row, **extra}]), "old")])

    current = schemas.CURRENT_VERSION["fetches"]
    monkeypatch.setitem(schemas.CURRENT_VERSION, "fetches", 1)  # an older writer
    write_fetches({})
    monkeypatch.setitem(schemas.CURRENT_VERSION, "fetches", current)
    con = provenance.connect(store.root)
    got = con.execute("SELECT outcome, robots_sha256, ai_agents_disallowed, tdm_reservation FROM fetches").fetchall()
    assert got == [("new", None, None, None)]
    assert con.execute("SELECT tdm_reserved, ai_agents_disallowed FROM consent").fetchall() == [("unknown", None)]
    con.close()
    write_fetches({"robots_status": 200, "robots_sha256": "ab" * 32, "ai_agents_disallowed": ["GPTBot"]})
    con = provenance.connect(store.root)
    assert sorted(con.execute("SELECT ai_agents_disallowed FROM fetches").fetchall(), key=str) == \
        [(None,), (["GPTBot"],)]
    assert con.execute("SELECT ai_agents_disallowed FROM consent").fetchall() == [(["GPTBot"],)]
