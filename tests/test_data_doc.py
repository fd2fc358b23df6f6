"""docs/DATA.md stays true: every input field it lists is the one ingest knows, and doc_flags combines the
scores of one category exactly as it says (a flag whatever the score, null counts as 1.0, max per category but
llm's, which combines its detectors as independent evidence)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import provenance
from provenance.ingest import KNOWN_FIELDS

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "DATA.md").read_text()

SCORING_PLUGIN = '''
import provenance

def _scorer(detector_name, category, score):
    class Scorer(provenance.Detector):
        name = detector_name
        version = "1"
        needs = ("text",)
        def tag_batch(self, batch):
            ids = [i for i, t in zip(batch.column("doc_id").to_pylist(), batch.column("text").to_pylist())
                   if t.startswith("tagged")]
            return [{"doc_id": i, "tag": detector_name, "category": category, "score": score} for i in ids]
    return Scorer

class TwiceLlm(provenance.Detector):  # two llm tags on one document: one detector, counted once (its maximum)
    name = "twice_llm"
    version = "1"
    needs = ("text",)
    def tag_batch(self, batch):
        ids = [i for i, t in zip(batch.column("doc_id").to_pylist(), batch.column("text").to_pylist())
               if t.startswith("tagged")]
        return [{"doc_id": i, "tag": tag, "category": "llm", "score": 0.5} for i in ids for tag in ("one", "two")]

@provenance.hookimpl
def register_detectors(register):
    register(_scorer("weak_llm", "llm", 0.2))
    register(_scorer("strong_llm", "llm", 0.7))
    register(_scorer("fact_quality", "quality", None))
    register(_scorer("faint_poison", "poison", 0.05))
    register(_scorer("some_poison", "poison", 0.3))
    register(TwiceLlm)
'''


def test_every_known_input_field_is_documented():
    inputs = DOC.split("## Input records", 1)[1].split("\n## ", 1)[0]  # other sections have tables of columns
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", inputs, re.M))
    assert documented == KNOWN_FIELDS


def test_doc_flags_combines_scores_as_documented(tmp_path, cli):
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"url": "https://a.org/1", "text": "tagged text"}) + "\n"
                   + json.dumps({"url": "https://a.org/2", "text": "plain text"}) + "\n")
    plugin = tmp_path / "scoring_plugin.py"
    plugin.write_text(SCORING_PLUGIN)
    store = tmp_path / "store"
    cli("ingest", src, "--store", store, check=0)
    cli("tag", "--store", store, "--plugin-module", plugin, "--plugins", "weak_llm,strong_llm,fact_quality,faint_poison,some_poison,twice_llm",
        check=0)
    con = provenance.connect(store)
    rows = {url: row for url, *row in con.execute(
        "SELECT url, flagged, n_tags, llm_score, quality_score, poison_score, duplicate_score, "
        "category_scores['llm'] FROM documents JOIN doc_flags USING (doc_id)").fetchall()}
    flagged, n_tags, llm, quality, poison, duplicate, llm_in_map = rows["https://a.org/1"]
    assert flagged and n_tags == 7
    # llm: 1 - prod(1 - s) over the detectors (not the maximum 0.7); twice_llm's two tags count once
    assert llm == llm_in_map == pytest.approx(1 - 0.8 * 0.3 * 0.5)
    assert quality == 1.0  # a null score states a fact
    assert poison == 0.3  # other categories: the maximum, not a sum (0.35) or a mean
    assert duplicate is None  # no tag of the category: null
    assert rows["https://a.org/2"][:2] == [False, 0]
