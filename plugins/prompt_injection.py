"""Prompt injection aimed at AI readers: text that addresses a language model and tries to steer it.

Per document, on the extracted text after normalisation (NFKC, zero-width and bidi characters removed, tag
characters decoded, Cyrillic and Greek look-alikes folded: plugins/_poison_text.py), so "іgnоrе" with
Cyrillic letters or "ig<U+200B>nore" still reads "ignore". One tag, ``prompt_injection`` (category
``poison``); its score combines the phrases found (ignore previous instructions, "if you are an AI", role
changes, fake chat-template tokens, asking for the system prompt, hiding things from the user), and is
multiplied by 0.3 where the page discusses injection (a security article quoting such strings). Tags below
``min_score`` are not written. Evidence: each phrase found, with its span in the text.

Hidden instructions in the raw HTML are the hidden_content detector's; this one reads what extraction kept.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.detectors import DetectorError
from provenance.plugins._poison_text import injection_hits, injection_screen, span

MAX_SPANS = 5


def evidence_of(text: str, hits, discussion: bool) -> dict:
    spans = [{**span("text", a, b, text[a:b]), "pattern": name} for name, _, a, b in hits[:MAX_SPANS]]
    return {"count": len(hits), "discussion": discussion, "spans": spans}


class PromptInjection(provenance.Detector):
    """Phrases that address a language model and try to steer it, after Unicode normalisation."""

    name = "prompt_injection"
    version = "2"  # 2: the RE2 screen passes every confusable normalise folds (it missed Cyrillic Supplement, Armenian)
    category = "poison"
    needs = ("text",)
    options = {"min_score": 0.5}

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        if not 0.0 <= merged["min_score"] <= 1.0:
            raise DetectorError("detector prompt_injection: min_score must be in [0, 1]")
        return merged

    def tag_batch(self, batch: pa.RecordBatch):
        texts = pc.fill_null(batch.column("text"), "")
        candidates = injection_screen(texts)
        doc_ids, out_ids, scores, evidence = batch.column("doc_id"), [], [], []
        for i, hit in enumerate(candidates):
            if not hit:
                continue
            text = texts[i].as_py()
            score, hits, discussion = injection_hits(text)
            if hits and score >= self.options["min_score"]:
                out_ids.append(doc_ids[i].as_py())
                scores.append(round(score, 4))
                evidence.append(evidence_of(text, hits, discussion))
        return self.tags(out_ids, "prompt_injection", score=scores, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(PromptInjection)
