"""`make demo`'s driver, end to end: real sites beside a planted section, crawl, tag, split view, query, export."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from provenance.demo import HINTS, PLANTED_CRAWL, SHARED_SITE
from provenance.planted import PLANTED
from provenance.sql import connect


def run_demo(out: Path, site: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "provenance.demo", "--site", site, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def flagged_by_category(store: Path, crawl_id: str | None = None) -> dict[str, int]:
    where = "flagged" + (f" AND crawl_id = '{crawl_id}'" if crawl_id else "")
    return dict(connect(store).execute(
        f"SELECT split_part(f, ':', 1) AS category, count(DISTINCT doc_id) FROM documents JOIN doc_flags "
        f"USING (doc_id), unnest(flags) AS u(f) WHERE {where} AND split_part(f, ':', 1) NOT IN "
        f"('consent', 'language', 'quality') AND f NOT LIKE 'provenance:first_seen%' GROUP BY 1").fetchall())


def test_demo_on_the_generated_site_flags_what_was_planted_and_its_hints_return_rows(tmp_path):
    out = tmp_path / "demo"
    stdout = run_demo(out, "generated")
    store = out / "store"
    assert "$ provenance crawl http://127.0.0.1:" in stdout and "Demo finished" in stdout
    # Every category:tag the planted section promises is on one of its pages.
    con = connect(store)
    found = {r[0] for r in con.execute(
        f"SELECT DISTINCT category || ':' || tag FROM tags JOIN documents USING (doc_id) "
        f"WHERE crawl_id = '{PLANTED_CRAWL}'").fetchall()}
    expected = {p.expect for p in PLANTED}
    if sys.platform != "linux":  # the campaign's five sites need loopback addresses beyond 127.0.0.1
        expected.discard("poison:amplification")
    assert expected <= found
    # Split view: the re-crawl stores only the changed page, linked to its vetted version, and it is flagged.
    assert re.search(r"crawl fixture: \d+ pages, 1 stored, \d\d unchanged", stdout)
    changed = con.execute("SELECT d.url, f.flags FROM documents d JOIN doc_flags f USING (doc_id) "
                          "WHERE d.previous_doc_id IS NOT NULL").fetchall()
    assert len(changed) == 1 and changed[0][0].endswith("/articles/page-003.html")
    assert "poison:prompt_injection" in changed[0][1]
    assert "planted: split-view change" in stdout and "planted (generated)" in stdout
    # The fixture site's real duplicate is excluded; the export matches its manifest.
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["counts"]["excluded_by_tag"]["duplicate:exact_duplicate"] == 2  # the fixture's and the planted copy
    assert manifest["counts"]["kept"] == con.execute("SELECT count(*) FROM doc_flags WHERE NOT flagged").fetchone()[0]
    # The last line is the report, a page the user can open.
    last = Path(stdout.strip().splitlines()[-1])
    assert last == out / "report.html" and "<section id=\"tail\"" in last.read_text()
    # Every "Try:" hint the demo prints is in its output and returns rows through the CLI.
    for _what, sql in HINTS:
        assert sql in stdout or sql.replace("'", "'\"'\"'") in stdout
        proc = subprocess.run([sys.executable, "-m", "provenance.cli", "query", "--store", str(store), sql,
                               "--format", "json"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert len(json.loads(proc.stdout)) >= 1, sql


@pytest.mark.skipif(not SHARED_SITE.is_dir(), reason="../shared (Git's HTML docs) is not present")
def test_make_demo_on_shared_sites_flags_at_least_three_categories(tmp_path):
    out = tmp_path / "demo"
    stdout = run_demo(out, "shared")
    assert "crawl git-docs:" in stdout and "crawl web-pages:" in stdout
    categories = flagged_by_category(out / "store")
    assert {"duplicate", "poison", "llm"} <= set(categories), categories
    assert {"duplicate", "poison", "llm"} <= set(flagged_by_category(out / "store", PLANTED_CRAWL))
