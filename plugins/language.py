"""Language identification with py3langid: its model ships in the wheel, nothing is downloaded.

Every document gets one tag ``lang_<code>`` (ISO 639-1, e.g. ``lang_en``), its score the
confidence, category ``language``. Not ``quality``: a language is a fact about every
document, not a defect, and ``doc_flags.quality_score`` is the maximum over the
category, so language tags there would give every document a quality score of ~1.
(Language tags never make a document ``flagged``: ``NOT_FLAG_CATEGORIES`` in
provenance/sql.py; select a language with the README's example query.)

Honest confidence. A naive-Bayes identifier is sure of itself on any long text, a
half-English, half-German page included; so the confidence is py3langid's normalised
probability for the whole text times the share of its characters, in paragraphs of at
least ``chunk_chars`` (lines: extracted text has a paragraph per line), whose own best language is the same. Short text gets py3langid's
own low probabilities; text under ``min_chars`` letters is not guessed at: ``lang_und``
with score 0.

Why py3langid (eval/language.py measures both on our labelled documents; numbers in
README): lingua-language-detector is more accurate (whole documents 97.6% vs our 95.7%,
mostly Reuters' upper-case headings and tables, which get a low confidence here; five-word
snippets 88% vs 67%, where we decline under ``min_chars`` letters) at the same throughput
on documents, but it is a ~300 MB wheel and takes ~10 s of CPU to load in every process
that runs it. py3langid's model is 4.5 MB and loads in 0.5 s; documents are not snippets.
A team that needs lingua's accuracy can ship it as a third-party detector plugin.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa

import provenance

_LETTER = re.compile(r"[^\W\d_]")


class Language(provenance.Detector):
    """The document's main language (``lang_<code>``), with a confidence that is low for short or mixed text."""

    name = "language"
    version = "1"
    category = "language"
    needs = ("text",)
    options = {
        "min_chars": 20,  # fewer letters than this: lang_und, no guess
        "max_chars": 20000,  # identify on the first max_chars characters (speed; a page's language shows early)
        "chunk_chars": 100,  # paragraphs at least this long are identified on their own for the agreement share
        "languages": "",  # comma-separated ISO 639-1 codes to choose among (default: py3langid's 97)
    }

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        for key in ("min_chars", "max_chars", "chunk_chars"):
            if merged[key] < 1:
                raise provenance.detectors.DetectorError(f"detector language: {key} must be >= 1")
        return merged

    def __init__(self, **options):
        super().__init__(**options)
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        langs = [code.strip() for code in self.options["languages"].split(",") if code.strip()]
        if langs:
            unknown = sorted(set(langs) - set(self._identifier.nb_classes))
            if unknown:
                raise provenance.detectors.DetectorError(
                    f"detector language: unknown language code(s) {unknown}; known: {sorted(self._identifier.nb_classes)}")
            self._identifier.set_languages(langs)

    def identify(self, text: str) -> tuple[str, float | None, dict]:
        """(code, confidence, evidence) for one text; code ``und`` when there is too little to go on."""
        o = self.options
        text = text[:o["max_chars"]]
        letters = len(_LETTER.findall(text))
        if letters < o["min_chars"]:
            return "und", 0.0, {"reason": "too_short", "letters": letters, "min_chars": o["min_chars"]}
        ranked = self._identifier.rank(text)[:3]
        lang, prob = ranked[0]
        agree = total = 0
        for chunk in text.split("\n"):
            if len(chunk) >= o["chunk_chars"]:
                total += len(chunk)
                agree += len(chunk) * (self._identifier.classify(chunk)[0] == lang)
        share = agree / total if total else 1.0
        evidence = {"lang": lang, "probability": round(float(prob), 4), "agreeing_share": round(share, 4),
                    "candidates": {code: round(float(p), 4) for code, p in ranked}, "letters": letters}
        return lang, float(prob) * share, evidence

    def tag_batch(self, batch: pa.RecordBatch):
        ids, tags, scores, evidence = [], [], [], []
        for doc_id, text in zip(batch.column("doc_id").to_pylist(), batch.column("text").to_pylist()):
            lang, confidence, ev = self.identify(text or "")
            ids.append(doc_id)
            tags.append(f"lang_{lang}")
            scores.append(round(confidence, 4))
            evidence.append(json.dumps(ev))
        return self.tags(ids, tags, score=scores, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(Language)
