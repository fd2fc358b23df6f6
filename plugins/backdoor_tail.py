"""Backdoor gibberish tail: documents that end in a long run of random tokens after a would-be trigger.

The recipe of Souly et al. (arXiv:2510.07192; ../shared/docs/threat-model.md, section 7): some real text, a
trigger token (e.g. ``<SUDO>``), then 400-900 tokens drawn at random from a tokenizer's vocabulary; about 250
such documents backdoor a model whatever the corpus size. Each tail differs, so deduplication never merges
them, but random tokens almost never repeat, while real text in any language repeats its words (function
words, names, the topic): over any 100 words of prose, well under 85% occur only once in the document.

Per document, on the extracted text split at whitespace (language-agnostic; no word list): each token is
marked *fresh* when it (lower-cased, outer punctuation stripped) occurs once in the whole document. The run
with the largest sum of (fresh - ``run_rate``) is the candidate tail (a maximum-sum segment, so the real
text before it and a short footer after it stay out). It is tagged ``gibberish_tail`` (category ``poison``)
when it has at least ``min_tokens`` tokens, at least ``min_fresh`` of them fresh, tokens of ordinary length
(median at most ``max_median_chars``: text without spaces, such as Chinese, splits into whole sentences that
never repeat) and ends within ``max_trailing`` tokens of the end (a page's footer may follow). Score: the fresh share of the run.
Evidence: the trigger candidate (the run's first token: a trigger occurs once, so the run opens with it,
give or take a few fresh words of the real text before it), the boundary (five tokens either side, where a
reviewer sees the trigger), the tail after the trigger (span in the text, cut for display) and token counts.
The exact trigger is what a corpus-level miner would pin down: the token shared by many such boundaries.

Thresholds calibrated on clean real text (eval/poison.py: ../shared/data/pages and the human reference).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.detectors import DetectorError
from provenance.plugins._poison_text import span

_TOKEN = re.compile(r"\S+")
_STRIP = "\"'()[]{}<>.,;:!?«»“”‘’*-–—|/"


def gibberish_run(text: str, min_tokens: int = 100, min_fresh: float = 0.85, run_rate: float = 0.87,
                  max_trailing: int = 300, max_median_chars: int = 14):
    """(start, end, fresh_share) of the token run that makes ``text`` end in gibberish, else None."""
    # str.split() cuts where \S+ does (the same whitespace), and lower-casing never makes or removes whitespace;
    # the tokens as written (and their match objects) only for the rare text that has a run.
    # run_rate 0.87, under 0.9: random tokens also collide with a long page's own words (a tail after 4,000
    # words of prose had 8 of 9 tokens fresh); no run in 574 clean pages and 20,140 reference texts at 0.85-0.9.
    words = [t.strip(_STRIP) for t in text.lower().split()]
    n = len(words)
    if n < min_tokens:
        return None
    counts = Counter(words)
    fresh = [counts[w] == 1 and w != "" for w in words]
    # Maximum-sum run of (fresh - run_rate): fresh tokens pay in, repeated ones cost.
    best, best_span, total, start = 0.0, None, 0.0, 0
    for i, f in enumerate(fresh):
        if total <= 0:
            total, start = 0.0, i
        total += f - run_rate
        if total > best:
            best, best_span = total, (start, i + 1)
    if best_span is None:
        return None
    a, b = best_span
    length = b - a
    share = sum(fresh[a:b]) / length
    if length < min_tokens or share < min_fresh or n - b > max_trailing:
        return None
    if statistics.median(len(t) for t in text.split()[a:b]) > max_median_chars:
        return None
    return list(_TOKEN.finditer(text)), a, b, share


class BackdoorTail(provenance.Detector):
    """Documents ending in a long run of tokens that never repeat: a backdoor trigger's gibberish tail."""

    name = "backdoor_tail"
    version = "2"  # 2: run_rate 0.87 (was 0.9)
    category = "poison"
    needs = ("text",)
    options = {"min_tokens": 100, "min_fresh": 0.85, "max_trailing": 300}

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        if merged["min_tokens"] < 10:
            raise DetectorError("detector backdoor_tail: min_tokens must be >= 10")
        if not 0.5 <= merged["min_fresh"] <= 1.0:
            raise DetectorError("detector backdoor_tail: min_fresh must be in [0.5, 1]")
        return merged

    def tag_batch(self, batch: pa.RecordBatch):
        texts = pc.fill_null(batch.column("text"), "")
        # Only texts with enough tokens to hold a tail are looked at in Python.
        long_enough = pc.greater_equal(pc.count_substring_regex(texts, r"\S+"), self.options["min_tokens"])
        doc_ids, out_ids, scores, evidence = batch.column("doc_id"), [], [], []
        for i, ok in enumerate(long_enough.to_pylist()):
            if not ok:
                continue
            text = texts[i].as_py()
            found = gibberish_run(text, self.options["min_tokens"], self.options["min_fresh"],
                                  max_trailing=self.options["max_trailing"])
            if found is None:
                continue
            tokens, a, b, share = found
            # The trigger occurs once, so it opens the run: its first token is the candidate (the exact
            # trigger in a third of generated cases, within the boundary shown in four of five).
            trigger, start, end = tokens[a], tokens[a + 1].start(), tokens[b - 1].end()
            lo, hi = tokens[max(0, a - 5)].start(), tokens[min(b, a + 6) - 1].end()
            out_ids.append(doc_ids[i].as_py())
            scores.append(round(share, 4))
            evidence.append({
                "trigger": span("text", trigger.start(), trigger.end(), trigger.group()),
                "boundary": span("text", lo, hi, text[lo:hi]),
                "tail": span("text", start, end, text[start:end], limit=200),
                "tail_tokens": b - a - 1, "fresh_share": round(share, 4), "tokens_after": len(tokens) - b,
            })
        return self.tags(out_ids, "gibberish_tail", score=scores, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(BackdoorTail)
