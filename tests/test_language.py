"""Language detector through the real runner: one lang_<code> tag per document, honest confidence."""

import json

import pytest

from provenance.detectors import DetectorError
from provenance.plugins.language import Language
from provenance.testing import run_detector

EN = ("The committee met on Tuesday to discuss the budget for the coming year, and members agreed that the "
      "library should stay open longer during the winter months when the days are short and cold. ")
DE = ("Der Ausschuss traf sich am Dienstag, um den Haushalt für das kommende Jahr zu besprechen, und die "
      "Mitglieder waren sich einig, dass die Bibliothek im Winter länger geöffnet bleiben sollte. ")


def run(docs, **options):
    tags = run_detector(Language, docs, options=options or None)
    rows = tags.select(["doc_id", "tag", "score", "evidence", "category"]).to_pylist()
    from provenance.testing import make_documents
    order = {d["doc_id"]: i for i, d in enumerate(make_documents(docs))}
    return sorted(rows, key=lambda r: order[r["doc_id"]])


def test_languages_tagged_with_confidence_in_their_own_category():
    en, de = run([EN * 3, DE * 3])
    assert (en["tag"], de["tag"]) == ("lang_en", "lang_de")
    assert en["score"] > 0.9 and de["score"] > 0.9
    assert en["category"] == "language"  # not 'quality': it must not fill doc_flags.quality_score


def test_short_and_mixed_text_get_low_confidence():
    tiny, short, mixed = run(["Hi there", "Thanks, see you soon", (EN + "\n" + DE + "\n") * 2])
    assert tiny["tag"] == "lang_und" and tiny["score"] == 0.0
    assert json.loads(tiny["evidence"])["reason"] == "too_short"
    assert short["score"] < 0.9
    assert mixed["tag"] in ("lang_en", "lang_de") and mixed["score"] <= 0.6
    assert json.loads(mixed["evidence"])["agreeing_share"] == pytest.approx(0.5, abs=0.05)


def test_options():
    (row,) = run(["Thanks, see you soon"], min_chars=100)
    assert row["tag"] == "lang_und"
    (row,) = run([EN * 3], languages="de,fr")
    assert row["tag"] in ("lang_de", "lang_fr")
    with pytest.raises(DetectorError, match="min_chars"):
        Language.validate_options({"min_chars": 0})
