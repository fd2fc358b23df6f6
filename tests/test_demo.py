"""`make demo`'s driver, end to end on the generated site: crawl, tag, query, export, checked."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_end_to_end_and_its_export_matches_its_manifest(tmp_path):
    args = [sys.executable, "-m", "provenance.demo", "--site", "generated", "--out", str(tmp_path / "demo")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "$ provenance crawl http://127.0.0.1:" in proc.stdout and "Demo finished" in proc.stdout
    manifest = json.loads((tmp_path / "demo" / "export" / "manifest.json").read_text())
    # The fixture site publishes one article at two URLs; robots.txt keeps /private/ out.
    assert manifest["counts"]["excluded_by_category"]["duplicate"] == 1
    excluded_by_tag = manifest["counts"]["excluded_by_tag"]
    assert {k: v for k, v in excluded_by_tag.items() if k.startswith("duplicate:")} == \
        {"duplicate:exact_duplicate": 1, "duplicate:near_duplicate": 1}
    assert excluded_by_tag.get("language:lang_en") == 1  # the excluded copy's descriptive tags are counted too
    assert manifest["counts"]["kept"] == manifest["counts"]["documents_in_store"] - 1
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and " 0 stored" in again.stdout  # a rerun re-crawls incrementally
