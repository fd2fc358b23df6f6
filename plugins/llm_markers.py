"""Artefacts of chat models left in published text: phrases a person writing for a page does not produce.

One tag, ``llm_marker`` (category ``llm``), on documents where at least one marker matches with weight
``min_score`` or more. Markers are grouped by kind, each with a weight that says how sure a match is:

- ``self_reference``: the model speaking of itself ("as an AI language model", "I am a large language model").
- ``refusal``: the stock refusal ("I'm sorry, but I cannot fulfill this request").
- ``knowledge_cutoff``: "as of my last knowledge update", "my training data only goes up to".
- ``interface_residue``: chat-interface text copied with the answer ("Regenerate response", a line reading
  only "Copy code").
- ``prompt_scaffolding``: what was meant to be replaced or cut ("[Insert name here]", "Sure! Here is the
  rewritten article:", chat-template tokens such as ``<|im_start|>``, "### Response:").
- ``placeholder``: "[Your Name]"; human letter templates have it too, so its weight is under the default
  ``min_score``: it is evidence beside another marker, never a tag alone.

A page *about* chatbots quotes these phrases; such pages (the words ChatGPT, chatbot, "language model"
appear outside the matched span and near it) get their weights multiplied by ``discussion_factor``, so a
news story about a model's refusals is not a model's refusal. Evidence: each match with its span, kind and
weight. The score is the largest weight after that adjustment.

Measured on ../shared (eval/llm_markers.py): the share of human reference texts tagged, and the share of LLM
reference texts tagged (recall is low by design: most LLM text carries no marker; precision is the point).
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.plugins._poison_text import span

MAX_SPANS = 5

# (kind, weight, pattern). Case-insensitive; patterns are anchored on word boundaries and need the
# model's own phrasing around the key words, which is what keeps human text from matching.
MARKERS: list[tuple[str, float, str]] = [
    ("self_reference", 0.95, r"\bas an? (?:ai|artificial intelligence)(?: language)? (?:model|assistant)\b"),
    ("self_reference", 0.95, r"\bas a (?:large )?language model\b"),
    ("self_reference", 0.9, r"\bi(?:'m| am) (?:just |only )?an? (?:ai|artificial intelligence)(?: language)? "
                            r"(?:model|assistant)\b"),
    ("self_reference", 0.9, r"\bi(?:'m| am) a large language model\b"),
    ("refusal", 0.9, r"\bi(?:'m| am) (?:sorry|afraid),? but i (?:can(?:no|')t|am unable to|'m unable to) "
                     r"(?:assist|help|fulfill|comply|provide|generate|create) (?:with )?(?:that|this|your)"),
    ("refusal", 0.85, r"\bi can(?:no|')t (?:fulfill|comply with) (?:this|that|your) request\b"),
    ("knowledge_cutoff", 0.9, r"\bas of my (?:last |latest )?(?:knowledge )?(?:update|training(?: data)?|"
                              r"cut-?off)\b"),
    ("knowledge_cutoff", 0.9, r"\bmy (?:knowledge|training data) (?:cut-?off|only goes up to|extends up to)\b"),
    ("knowledge_cutoff", 0.8, r"\bi (?:do not|don't) have (?:real-time|access to real-time|browsing) "
                              r"(?:data|information|capabilities|access)\b"),
    ("interface_residue", 0.9, r"\bregenerate (?:response|draft)\b"),
    ("interface_residue", 0.6, r"(?m)^\s*(?:[a-z+#]+\s*)?copy code\s*$"),
    ("prompt_scaffolding", 0.9, r"<\|(?:im_start|im_end|endoftext|eot_id|start_header_id)\|>"),
    ("prompt_scaffolding", 0.8, r"(?m)^\s*#{2,3} (?:instruction|response|assistant):"),
    ("prompt_scaffolding", 0.8, r"^\s*(?:sure|certainly|of course|absolutely)[!,.] here(?:'s| is) (?:a |an |the |"
                                r"your )?(?:\w+ ){0,4}(?:article|essay|blog post|rewritten|paraphrased|revised|"
                                r"version|summary|story|poem|email|description)\b"),
    ("prompt_scaffolding", 0.7, r"\[(?:insert|add) [a-z' ]{2,40}\]"),
    # "[Your Name]" also ends human-written letter templates: shown as evidence, too weak to tag alone.
    ("placeholder", 0.4, r"\[your [a-z' ]{2,40}\]"),
]
# Words that mark a page that talks about chatbots (and may quote their phrases).
_DISCUSSION = re.compile(r"\b(?:chatgpt|gpt-?[345]|chatbots?|openai|claude|gemini|bard|copilot|"
                         r"language models|llms?)\b", re.I)
_COMPILED = [(kind, weight, re.compile(p, re.I)) for kind, weight, p in MARKERS]
# A bulk screen over the batch (RE2 in Arrow): a row can hold a marker only if it holds one of these words.
_SCREEN = ("(?i)language model|as an? (?:ai|artificial)|i am an? |i'm an? |sorry|afraid|can't|cannot|"
           "knowledge|training data|real-time|regenerate|copy code|<\\|| here(?:'s| is) |\\[(?:insert|your|add) |"
           "#{2,3} ")


def find_markers(text: str) -> list[tuple[str, float, int, int]]:
    """(kind, weight, start, end) of each marker match, in text order."""
    hits = [(kind, weight, m.start(), m.end()) for kind, weight, rx in _COMPILED for m in rx.finditer(text)]
    return sorted(hits, key=lambda h: h[2])


def discusses_chatbots(text: str, hits) -> bool:
    """A chatbot word outside every match: the page is about models, its markers may be quotations."""
    inside = [(a, b) for _, _, a, b in hits]
    return any(not any(a <= m.start() < b for a, b in inside) for m in _DISCUSSION.finditer(text))


class LlmMarkers(provenance.Detector):
    name = "llm_markers"
    version = "1"
    category = "llm"
    needs = ("text",)
    options = {"min_score": 0.5, "discussion_factor": 0.3}

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        for key in ("min_score", "discussion_factor"):
            if not 0.0 <= merged[key] <= 1.0:
                raise provenance.DetectorError(f"detector llm_markers: {key} must be in [0, 1]")
        return merged

    def tag_batch(self, batch: pa.RecordBatch):
        texts = batch.column("text")
        candidates = pc.fill_null(pc.match_substring_regex(texts, _SCREEN), False).to_pylist()
        rows, scores, evidence = [], [], []
        for i, candidate in enumerate(candidates):
            if not candidate:
                continue
            text = texts[i].as_py()
            hits = find_markers(text)
            if not hits:
                continue
            discussion = discusses_chatbots(text, hits)
            factor = self.options["discussion_factor"] if discussion else 1.0
            score = round(max(w for _, w, _, _ in hits) * factor, 4)
            if score < self.options["min_score"]:
                continue
            rows.append(i)
            scores.append(score)
            evidence.append({"count": len(hits), "discussion": discussion,
                             "kinds": sorted({k for k, _, _, _ in hits}),
                             "spans": [{**span("text", a, b, text[a:b]), "kind": k, "weight": w}
                                       for k, w, a, b in hits[:MAX_SPANS]]})
        if not rows:
            return None
        return self.tags(batch.column("doc_id").take(pa.array(rows)), "llm_marker", score=scores, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(LlmMarkers)
