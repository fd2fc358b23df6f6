"""llm_markers through the real runner: the chat-model artefacts it tags, with spans, and the human text
that uses the same words without being a model's output (a news story quoting a refusal, a letter
template's "[Your Name]", someone's knowledge of a topic)."""

from __future__ import annotations

import json

import pytest

from provenance.plugins.llm_markers import LlmMarkers
from provenance.testing import make_document, run_detectors

DOCS = {
    "self_reference": "As an AI language model, I do not have personal opinions, but here are some views on tea.",
    "refusal": "I'm sorry, but I cannot assist with that request. Please ask something else about gardening.",
    "cutoff": "The tallest building was finished in 2010. As of my last knowledge update, it still holds the title.",
    "residue": "Here are the steps to bake bread at home.\nRegenerate response\nThanks for reading.",
    "scaffolding": "Sure! Here is the rewritten article:\n\nLocal farmers sold more apples this autumn than last.",
    "template_tokens": "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>",
    # human text with the same words
    "news_quote": "When asked about the election, ChatGPT answered: 'As an AI language model, I cannot take "
                  "sides.' Critics say chatbots dodge hard questions.",
    "letter_template": "Dear Sir or Madam,\nI write to apply for the post of librarian.\nYours faithfully,\n[Your Name]",
    "knowledge": "My knowledge of the area is limited, but as of last year the bridge was closed for repairs.",
    "sorry": "I'm sorry, but I can't make it to the meeting on Friday; my train was cancelled.",
}
EXPECTED = {"self_reference", "refusal", "cutoff", "residue", "scaffolding", "template_tokens"}


@pytest.fixture(scope="module")
def tagged():
    docs = [{"url": f"https://example.test/{name}", "text": text} for name, text in DOCS.items()]
    result = run_detectors([LlmMarkers], docs)
    ids = {make_document(i, url=f"https://example.test/{n}", text=t)["doc_id"]: n
           for i, (n, t) in enumerate(DOCS.items())}
    return {ids[r["doc_id"]]: r for r in result.tags.to_pylist()}


def test_markers_tag_model_artefacts_and_leave_human_text_alone(tagged):
    assert set(tagged) == EXPECTED


def test_rows_carry_category_score_and_the_matched_span(tagged):
    for name, row in tagged.items():
        assert (row["category"], row["tag"]) == ("llm", "llm_marker")
        assert 0.5 <= row["score"] <= 1.0
        evidence = json.loads(row["evidence"])
        first = evidence["spans"][0]
        assert DOCS[name][first["start"]:first["end"]] == first["text"]
    assert json.loads(tagged["cutoff"]["evidence"])["kinds"] == ["knowledge_cutoff"]
    assert json.loads(tagged["self_reference"]["evidence"])["spans"][0]["text"] == "As an AI language model"


def test_a_page_about_chatbots_quoting_a_marker_is_tagged_only_when_the_factor_allows():
    docs = [{"text": DOCS["news_quote"]}]
    assert run_detectors([LlmMarkers], docs).tags.num_rows == 0
    rows = run_detectors([LlmMarkers], docs, {"llm_markers": {"discussion_factor": 1.0}}).tags.to_pylist()
    assert [json.loads(r["evidence"])["discussion"] for r in rows] == [True]


def test_options_are_checked():
    with pytest.raises(Exception, match="min_score must be in"):
        LlmMarkers.validate_options({"min_score": 2})
