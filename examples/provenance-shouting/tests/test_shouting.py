"""The example plugin's own tests: provenance.testing helpers and the pytest fixtures."""

import json

import pytest

from provenance.detectors import DetectorError
from provenance.testing import make_batch, run_detector, tag_batch

from provenance_shouting import Shouting

DOCS = [
    {"text": "BUY NOW!!! LIMITED OFFER, CLICK HERE BEFORE IT IS GONE!!!"},
    {"text": "A calm sentence written in ordinary case, nothing to see here."},
    {"text": "OK"},  # upper case, but too few letters to judge
]


def test_tags_only_shouting():
    tags = run_detector(Shouting, DOCS)
    rows = tags.to_pylist()
    assert len(rows) == 1
    assert rows[0]["tag"] == "shouting" and rows[0]["category"] == "quality"
    assert rows[0]["score"] == 1.0
    assert json.loads(rows[0]["evidence"]) == {"upper_fraction": 1.0, "letters": 41}


def test_options_are_validated():
    assert run_detector(Shouting, DOCS, options={"min_letters": 1}).num_rows == 2
    with pytest.raises(DetectorError, match="min_fraction"):
        Shouting.validate_options({"min_fraction": 2.0})


def test_batch_has_only_what_it_needs():
    batch = make_batch(DOCS, needs=Shouting.needs)
    assert batch.schema.names == ["doc_id", "text"]
    assert tag_batch(Shouting, batch).num_rows == 1


def test_listed_through_its_entry_point(provenance_pm):
    spec = provenance_pm.detectors()["shouting"]
    assert (spec.plugin.name, spec.plugin.distribution) == ("shouting", "provenance-shouting")
