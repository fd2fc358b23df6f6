"""The built-in consent detector (TDMRep, robots directives, licences), the consent view and export --respect-opt-out."""

from __future__ import annotations

import json

import jsonschema
import pytest

import provenance
from provenance import schemas
from provenance.plugins.consent import Consent, cc_license_id
from provenance.testing import make_document, make_store, run_detector


def page(head: str = "", body: str = "<p>Some text about rivers and mills, long enough to extract.</p>") -> str:
    return f"<html><head><title>t</title>{head}</head><body><main>{body}</main></body></html>"


def tags_of(tags) -> dict[str, dict[str, dict]]:
    """url -> {tag: evidence}, plus the score under '_score:<tag>'."""
    ids = {}
    out: dict[str, dict] = {}
    for row in tags.to_pylist():
        ids.setdefault(row["doc_id"], {})[row["tag"]] = json.loads(row["evidence"])
        ids[row["doc_id"]][f"_score:{row['tag']}"] = row["score"]
    for doc_id, found in ids.items():
        out[doc_id] = found
    return out


def run(docs: dict[str, dict]):
    """Run the detector through the real runner over {name: make_document kwargs}; -> {name: {tag: evidence}}."""
    rows = {name: make_document(i, url=f"https://site.test/{name}", **kw) for i, (name, kw) in enumerate(docs.items())}
    by_id = tags_of(run_detector(Consent, list(rows.values())))
    return {name: by_id.get(row["doc_id"], {}) for name, row in rows.items()}


def test_tdmrep_headers_and_meta_each_recorded_with_evidence():
    found = run({
        "header": {"html": page(), "headers": [("TDM-Reservation", "1"),
                                               ("tdm-policy", "https://pub.example/policy.json")]},
        "meta": {"html": page('<meta name="tdm-reservation" content="1">'
                              '<meta name="TDM-Policy" content="https://pub.example/p.json">')},
        "open": {"html": page('<meta name="tdm-reservation" content="0">')},
        "policy_only": {"html": page(), "headers": {"tdm-policy": "https://pub.example/p.json"}},
        "plain": {"html": page(), "headers": {"Content-Type": "text/html", "Server": "nginx"}},
        "text_only": {"text": "tdm-reservation: 1 written in the text is not a signal", "headers": {}},
    })
    ev = found["header"]["tdm_reserved"]
    assert ev["signals"] == [{"source": "header", "name": "TDM-Reservation", "value": "1"}]
    assert ev["policies"] == [{"source": "header", "name": "tdm-policy", "value": "https://pub.example/policy.json"}]
    assert ev["conflict"] is False and found["header"]["_score:tdm_reserved"] is None
    ev = found["meta"]["tdm_reserved"]
    assert ev["signals"] == [{"source": "meta", "name": "tdm-reservation", "value": "1"}]
    assert ev["policies"][0]["source"] == "meta" and ev["policies"][0]["name"] == "TDM-Policy"
    assert set(found["open"]) == {"tdm_not_reserved", "_score:tdm_not_reserved"}
    assert set(found["policy_only"]) == {"tdm_policy", "_score:tdm_policy"}
    assert found["plain"] == {} and found["text_only"] == {}  # no signal, no tag


def test_robots_directives_from_headers_and_meta():
    found = run({
        "x_robots": {"html": page(), "headers": [("x-ROBOTS-tag", "noai, noimageai"), ("X-Robots-Tag", "noindex")]},
        "meta": {"html": page('<meta name="ROBOTS" content="NoIndex, nofollow, max-snippet:50">')},
        "agent_header": {"text": "plain", "headers": {"X-Robots-Tag": "googlebot: noarchive"}},
        "agent_meta": {"html": page('<meta name="GPTBot" content="noai">')},
        "value_directive": {"html": page(), "headers": {"X-Robots-Tag": "unavailable_after: 25 Jun 2030 15:00:00 PST"}},
    })
    x = found["x_robots"]
    assert {"noai", "noimageai", "noindex"} <= set(x)
    # repeated headers are all read, each signal keeps the name as written
    assert x["noai"]["signals"] == [{"source": "header", "name": "x-ROBOTS-tag", "value": "noai, noimageai", "agent": None}]
    assert x["noindex"]["signals"][0]["name"] == "X-Robots-Tag"
    assert {"noindex", "nofollow"} <= set(found["meta"]) and "malformed_signal" not in found["meta"]
    assert found["agent_header"]["noarchive"]["signals"][0]["agent"] == "googlebot"
    assert found["agent_meta"]["noai"]["signals"][0] == {"source": "meta", "name": "GPTBot", "value": "noai",
                                                          "agent": "GPTBot"}
    assert found["value_directive"] == {}  # a valued directive is no agent prefix and no tag


def test_licences_from_rel_license_and_creative_commons_links():
    found = run({
        "rel": {"html": page('<link rel="license" href="https://creativecommons.org/licenses/by-sa/4.0/">')},
        "anchor": {"html": page(body='<p>Text long enough to be the main text of the page here.</p>'
                                     '<a rel="license" href="http://creativecommons.org/publicdomain/zero/1.0/">'
                                     '<img src="https://i.creativecommons.org/p/zero/1.0/88x31.png"></a>')},
        "bare": {"html": page(body='<p>Text long enough to be the main text of the page here.</p>'
                                   '<a href="https://creativecommons.org/licenses/by-nc/3.0/deed.en">CC</a>')},
        "other": {"html": page('<link rel="License" href="https://pub.example/terms">')},
        "no_licence": {"html": page(body='<p>See <a href="https://example.org/">home</a>.</p>')},
    })
    assert found["rel"]["license:cc-by-sa-4.0"]["signals"][0]["rel_license"] is True
    assert found["rel"]["_score:license:cc-by-sa-4.0"] is None
    assert [s["source"] for s in found["anchor"]["license:cc0-1.0"]["signals"]] == ["a", "img"]
    assert found["bare"]["_score:license:cc-by-nc-3.0"] == 0.5  # a bare link is a hint, not a statement
    assert found["other"]["license:other"]["signals"][0]["value"] == "https://pub.example/terms"
    assert found["no_licence"] == {}


@pytest.mark.parametrize("href, expected", [
    ("https://creativecommons.org/licenses/by/4.0/", "cc-by-4.0"),
    ("http://creativecommons.org/licenses/by-nc-nd/2.5/it/", "cc-by-nc-nd-2.5"),
    ("https://creativecommons.org/publicdomain/mark/1.0/", "cc-pdm-1.0"),
    ("https://i.creativecommons.org/l/by-sa/3.0/88x31.png", "cc-by-sa-3.0"),
    ("https://creativecommons.org/about/", None),
    ("https://notcreativecommons.org/licenses/by/4.0/", None),
    ("http://[bad", None),
])
def test_cc_license_ids(href, expected):
    assert cc_license_id(href) == expected


def test_conflicts_keep_the_reservation_and_say_so():
    found = run({
        # the header opens, the page reserves: any reservation wins, marked as a conflict
        "header_vs_meta": {"html": page('<meta name="tdm-reservation" content="1">'),
                           "headers": {"tdm-reservation": "0"}},
        "repeated": {"text": "x", "headers": [("TDM-Reservation", "0"), ("tdm-reservation", "1")]},
        # robots allows everything, TDMRep reserves: both recorded
        "robots_all": {"html": page('<meta name="robots" content="all">'), "headers": {"TDM-Reservation": "1"}},
    })
    for name in ("header_vs_meta", "repeated"):
        ev = found[name]["tdm_reserved"]
        assert ev["conflict"] is True and sorted(s["value"] for s in ev["signals"]) == ["0", "1"]
        assert "tdm_not_reserved" not in found[name]
    assert set(found["robots_all"]) == {"tdm_reserved", "_score:tdm_reserved"}


def test_malformed_values_are_recorded_as_such():
    found = run({
        "bad_tdm": {"text": "x", "headers": [("TDM-Reservation", "yes"), ("tdm-policy", "not a url")]},
        "bad_meta": {"html": page('<meta name="tdm-reservation" content="2"><meta name="robots" content=" , ">')},
        "bad_token": {"text": "x", "headers": {"X-Robots-Tag": "noai, <script>"}},
        "bad_charset": {"html": page('<meta name="robots" content="noai">'), "charset": "no-such-charset"},
    })
    problems = [s["problem"] for s in found["bad_tdm"]["malformed_signal"]["signals"]]
    assert problems == ["tdm-reservation must be 0 or 1", "tdm-policy must be an absolute http(s) URL"]
    assert "tdm_reserved" not in found["bad_tdm"] and "tdm_not_reserved" not in found["bad_tdm"]
    values = [s["value"] for s in found["bad_meta"]["malformed_signal"]["signals"]]
    assert values == ["2", " , "]
    assert "noai" in found["bad_token"]  # the good token still counts
    assert found["bad_token"]["malformed_signal"]["signals"][0]["problem"] == "not a robots directive: '<script>'"


def test_option_ai_agents_is_checked_and_read():
    with pytest.raises(provenance.detectors.DetectorError):
        Consent.validate_options({"ai_agents": ["", "x"]})
    doc = {"html": page('<meta name="mybot" content="noai">')}
    assert run_detector(Consent, [doc]).num_rows == 0
    assert run_detector(Consent, [doc], options={"ai_agents": ["MyBot"]}).column("tag").to_pylist() == ["noai"]


# ----- the consent view and export --respect-opt-out ------------------------------------------------
CORPUS = {
    "reserved": {"html": page(), "headers": {"TDM-Reservation": "1"}},
    "noai": {"html": page('<meta name="robots" content="noai, noindex">')},
    "both": {"html": page('<meta name="tdm-reservation" content="1"><meta name="robots" content="noai">')},
    "open": {"html": page('<meta name="tdm-reservation" content="0">'
                          '<link rel="license" href="https://creativecommons.org/licenses/by/4.0/">')},
    "noimageai": {"html": page('<meta name="robots" content="noimageai">')},
    "silent": {"html": page()},
}


@pytest.fixture
def consent_store(tmp_path, cli):
    docs = [{"url": f"https://site.test/{name}", **kw} for name, kw in CORPUS.items()]
    store = make_store(tmp_path / "store", docs)
    cli("tag", "--store", store.root, "--plugins", "consent", check=0)
    return store.root


def test_consent_view_one_row_per_document(consent_store):
    con = provenance.connect(consent_store)
    rows = {r[1].rsplit("/", 1)[1]: r for r in con.execute(
        "SELECT doc_id, url, tdm_reserved, ai_agents_disallowed, directives, license, evidence FROM consent")
        .fetchall()}
    assert set(rows) == set(CORPUS)
    assert {k: r[2] for k, r in rows.items()} == {"reserved": "true", "noai": "unknown", "both": "true",
                                                  "open": "false", "noimageai": "unknown", "silent": "unknown"}
    # imported documents: no crawl fetch, so robots.txt per AI agent was never checked (null, not [])
    assert rows["noai"][4] == ["noai", "noindex"] and rows["silent"][4] == [] and rows["silent"][3] is None
    assert rows["open"][5] == "cc-by-4.0" and rows["reserved"][5] is None
    evidence = json.loads(rows["both"][6])
    assert set(evidence) == {"tdm_reserved", "noai"} and evidence["noai"]["signals"][0]["source"] == "meta"
    assert rows["silent"][6] is None
    # consent tags state permissions, not problems: they do not flag a document in doc_flags
    assert con.execute("SELECT count(*) FROM doc_flags WHERE flagged").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM tags WHERE category = 'consent'").fetchone()[0] >= 6


def test_export_respect_opt_out_through_the_cli(consent_store, tmp_path, cli):
    out = tmp_path / "out"
    proc = cli("export", "--store", consent_store, "--out", out, "--respect-opt-out", check=0)
    assert "kept 3 of 6" in proc.stdout
    import pyarrow.parquet as pq

    kept = sorted(u.rsplit("/", 1)[1] for u in pq.read_table(out / "documents.parquet").column("url").to_pylist())
    assert kept == ["noimageai", "open", "silent"]
    manifest = json.loads((out / "manifest.json").read_text())
    jsonschema.validate(manifest, json.loads(schemas.MANIFEST_SCHEMA_PATH.read_text()))
    opt = manifest["opt_out"]
    assert opt["respected"] is True and opt["signals"] == ["consent:tdm_reserved", "consent:noai"]
    assert opt["excluded_by_signal"] == {"consent:tdm_reserved": 2, "consent:noai": 2} and opt["excluded"] == 3
    assert opt["kept_documents_checked"] == 3
    assert "NOT" in manifest["query"]["sql"] and manifest["query"]["where"] == "NOT flagged"
    card = (out / "README.md").read_text()
    assert "opt-outs were honoured" in card and "consent:tdm_reserved" in card

    # Without the flag the reserved documents are kept, and the card says so.
    proc = cli("export", "--store", consent_store, "--out", out, "--overwrite", check=0)
    assert "kept 6 of 6" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["opt_out"]["respected"] is False and manifest["opt_out"]["excluded"] == 0
    assert manifest["opt_out"]["kept_with_signal"] == {"consent:tdm_reserved": 2, "consent:noai": 2}
    assert "were NOT honoured" in (out / "README.md").read_text()

    # The default comes from [export] respect_opt_out; the flag wins over it.
    (tmp_path / "provenance.toml").write_text("[export]\nrespect_opt_out = true\n")
    proc = cli("export", "--store", consent_store, "--out", out, "--overwrite", cwd=tmp_path, check=0)
    assert "kept 3 of 6" in proc.stdout
    proc = cli("export", "--store", consent_store, "--out", out, "--overwrite", "--no-respect-opt-out",
               cwd=tmp_path, check=0)
    assert "kept 6 of 6" in proc.stdout


def test_respect_opt_out_without_the_detector_run_warns_in_the_card(tmp_path, cli):
    store = make_store(tmp_path / "store", [{"url": "https://site.test/r", **CORPUS["reserved"]}])
    out = tmp_path / "out"
    cli("export", "--store", store.root, "--out", out, "--respect-opt-out", check=0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["opt_out"]["kept_documents_checked"] == 0 and manifest["counts"]["kept"] == 1
    assert "not checked by the consent detector" in (out / "README.md").read_text()



# ----- eval/consent_robots.py: AI agents in robots.txt, read by Protego -----------------------------------
def test_consent_robots_eval_counts_blanket_and_named_rules(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    data = tmp_path / "robots"
    data.mkdir()
    (data / "blanket.example").write_text("User-agent: *\nDisallow: /\n")
    (data / "named.example").write_text("User-agent: GPTBot\nDisallow: /\n\nUser-agent: *\nAllow: /\n")
    (data / "allows-ccbot.example").write_text("User-agent: CCBot\nAllow: /\n\nUser-agent: *\nDisallow: /\n")
    (data / "open.example").write_text("User-agent: *\nDisallow: /private/\n")
    script = Path(__file__).resolve().parents[1] / "eval" / "consent_robots.py"
    out = subprocess.run([sys.executable, script, "--data", data, "--agents", "GPTBot,CCBot"],
                         capture_output=True, text=True, check=True).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("GPTBot", "CCBot"))}
    # agent, disallowed /, share, by name, share, allowed by name
    assert rows["GPTBot"][1] == "3" and rows["GPTBot"][3] == "1" and rows["GPTBot"][5] == "0"
    assert rows["CCBot"][1] == "1" and rows["CCBot"][3] == "0" and rows["CCBot"][5] == "1"
    assert "robots.txt files: 4" in out and "(User-agent: *): 2 (50.0%)" in out
