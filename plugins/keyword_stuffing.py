"""Keyword stuffing: text padded with a few keywords, as a block (a keyword list) or as a phrase dropped all over.

../shared/docs/threat-model.md, section 9. Gopher-style repetition thresholds flag 16-21% of clean prose, so
nothing here is copied from them: both signals and their thresholds were chosen on clean real text (half of the
human reference texts, split by a hash of the text; ``eval/keyword_stuffing.py --calibrate``), and false flags
are measured on the other half and on every real page of ../shared (``eval/keyword_stuffing.py``).

Words: the extracted text split at whitespace, lower-cased, outer punctuation stripped, kept when alphabetic
and 3+ letters (numbers, short words and symbols never count). No word list: the signals are about
repetition, whatever the language.

- **Keyword block** (tag ``keyword_block``): the densest window of ``window`` (60) tokens in which the two most
  frequent words fill at least ``min_block_share`` (34%) of the tokens, and at most 15% of them hold digits.
  An appended list such as "plumber boston, boston plumber, cheap plumber boston, ..." is 40-60% two words;
  clean prose stays under 30%, and the clean texts that come close are tables of figures ("5.00 pct ... days"),
  which the digit rule leaves out. Evidence: the two words and the window (span in the text).
- **Repeated phrase** (tag ``repeated_phrase``, texts of ``phrase_min_tokens`` (400)+ tokens): the word pair
  that follows the most *different* tokens: a phrase inserted at random places lands after a new token each
  time, while a table repeats its pair after the same words and a name in prose follows a handful.
  ``share`` = 2 x (distinct preceding tokens) / tokens, against a threshold that falls with the length of the
  text (``PHRASE_THRESHOLDS``: the share exceeded by 0.25% of the calibration texts of that length). Shorter
  texts are not looked at: a 150-word news item or product page names its topic ("stock car", "bei Aldi")
  often enough to look stuffed, and on real pages those were every false flag. Evidence: the pair, its
  distinct preceding tokens, share and threshold.

Score: 0.5 at the threshold, rising to 1 at twice it. Out of reach at this false-flag budget: a phrase under
about 10% of a long text, and phrase stuffing in texts under 400 words (recall by density and length in the
evaluation).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.detectors import DetectorError
from provenance.plugins._poison_text import span

_TOKEN = re.compile(r"\S+")
_WORD = re.compile(r"[^\W\d_]{3,}")
_HAS_DIGIT = re.compile(r"\d").search
_STRIP = "\"'()[]{}<>.,;:!?«»“”‘’*-–—|/#"

# Lower bounds of text length (tokens) and the repeated-phrase share each must exceed; set on half of the
# human reference texts so that at most 0.25% of each length band is flagged (eval/keyword_stuffing.py
# --calibrate); the 800+ and 1600+ bands hold few texts (121, 271), so theirs are rounded up.
PHRASE_LENGTHS = (50, 100, 200, 400, 800, 1600)
MAX_NUMBERS = 0.15  # share of a keyword block's tokens that may hold digits
PHRASE_THRESHOLDS = (0.113, 0.080, 0.065, 0.055, 0.037, 0.033)


def words_of(text: str) -> tuple[list[str | None], list[str]]:
    """Per whitespace token: the normalised word (None for tokens that never count: short, numeric, symbols),
    and the token as a context (lower-cased, stripped, anything with a digit as ``#``)."""
    words, contexts = [], []
    for token in text.lower().split():
        w = token.strip(_STRIP)
        words.append(w if _WORD.fullmatch(w) else None)
        contexts.append("#" if _HAS_DIGIT(w) else w)
    return words, contexts


def keyword_block(words: list[str | None], contexts: list[str], window: int, min_share: float):
    """(share, start, end, (w1, w2)) of the densest ``window``-token run of two words, or None below ``min_share``."""
    n = len(words)
    win = min(window, n)
    need = max(2, int(np.ceil(min_share * win / 2)))  # the more frequent of the two fills half the share or more
    counts = Counter(w for w in words if w)
    frequent = {w for w, c in counts.items() if c >= need}
    positions = defaultdict(list)
    for i, w in enumerate(words):
        if w in frequent:
            positions[w].append(i)
    best = None
    for word, where in positions.items():
        at = np.asarray(where)
        if not (at[need - 1:] - at[:len(at) - need + 1] < win).any():
            continue  # never ``need`` times within one window: cheap, and true of almost every word of prose
        # Occurrences in the window starting at each token; the densest few windows get a full count, which
        # finds the second word (any word) without counting every word everywhere.
        starts = np.arange(n - win + 1)
        inside = np.searchsorted(at, starts + win) - np.searchsorted(at, starts)
        for s in np.argsort(-inside, kind="stable")[:8]:
            if sum(c == "#" for c in contexts[s:s + win]) > MAX_NUMBERS * win:
                continue  # a table of figures repeats its column words ("mln stg", "days pct"); a keyword list does not
            top = Counter(w for w in words[s:s + win] if w).most_common(2)
            share = sum(c for _, c in top) / win
            if best is None or share > best[0]:
                best = (share, int(s), int(s) + win, tuple(w for w, _ in top))
    return best if best is not None and best[0] >= min_share else None


def repeated_phrase(words: list[str | None], contexts: list[str]):
    """(share, contexts, (w1, w2)) of the word pair that follows the most different tokens, or None.

    A phrase dropped at random places lands after a new token each time; a table repeats its pair after the
    same words, a name in prose after a handful ("the", "of", "in"). (Counting the tokens after the pair too,
    and extending the pair to the whole phrase, was tried: it lowered recall at high densities, where
    insertions border each other, more than it removed false flags.)"""
    before = defaultdict(set)
    for i in range(1, len(words) - 1):
        a, b = words[i], words[i + 1]
        if a and b:
            before[(a, b)].add(contexts[i - 1])
    if not before:
        return None
    pair, preceding = max(before.items(), key=lambda kv: len(kv[1]))
    return 2 * len(preceding) / len(words), len(preceding), pair


def phrase_threshold(n_tokens: int) -> float:
    return PHRASE_THRESHOLDS[max(0, bisect.bisect_right(PHRASE_LENGTHS, n_tokens) - 1)]


def _score(value: float, threshold: float) -> float:
    return round(min(1.0, 0.5 + 0.5 * (value - threshold) / threshold), 4)


class KeywordStuffing(provenance.Detector):
    """Texts padded with a few keywords: a keyword list, or one phrase repeated in many places."""

    name = "keyword_stuffing"
    version = "1"
    category = "poison"
    needs = ("text",)
    options = {"min_tokens": 50, "window": 60, "min_block_share": 0.34, "phrase_min_tokens": 400}

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        if merged["min_tokens"] < 20:
            raise DetectorError("detector keyword_stuffing: min_tokens must be >= 20")
        if not 10 <= merged["window"] <= 1000:
            raise DetectorError("detector keyword_stuffing: window must be in [10, 1000]")
        if merged["phrase_min_tokens"] < merged["min_tokens"]:
            raise DetectorError("detector keyword_stuffing: phrase_min_tokens must be >= min_tokens")
        if not 0.05 <= merged["min_block_share"] <= 1.0:
            raise DetectorError("detector keyword_stuffing: min_block_share must be in [0.05, 1]")
        return merged

    def tag_batch(self, batch: pa.RecordBatch):
        texts = pc.fill_null(batch.column("text"), "")
        long_enough = pc.greater_equal(pc.count_substring_regex(texts, r"\S+"), self.options["min_tokens"])
        doc_ids, out_ids, out_tags, scores, evidence = batch.column("doc_id"), [], [], [], []
        for i, ok in enumerate(long_enough.to_pylist()):
            if not ok:
                continue
            text = texts[i].as_py()
            words, contexts = words_of(text)
            block = keyword_block(words, contexts, self.options["window"], self.options["min_block_share"])
            if block is not None:
                share, a, b, pair = block
                tokens = list(_TOKEN.finditer(text))
                start, end = tokens[a].start(), tokens[b - 1].end()
                out_ids.append(doc_ids[i].as_py())
                out_tags.append("keyword_block")
                scores.append(_score(share, self.options["min_block_share"]))
                evidence.append({"keywords": list(pair), "share": round(share, 4), "window_tokens": b - a,
                                 "threshold": self.options["min_block_share"],
                                 "block": span("text", start, end, text[start:end], limit=240)})
            phrase = repeated_phrase(words, contexts) if len(words) >= self.options["phrase_min_tokens"] else None
            if phrase is not None:
                share, n_contexts, pair = phrase
                threshold = phrase_threshold(len(words))
                if share > threshold:
                    out_ids.append(doc_ids[i].as_py())
                    out_tags.append("repeated_phrase")
                    scores.append(_score(share, threshold))
                    evidence.append({"phrase": " ".join(pair), "contexts": n_contexts, "tokens": len(words),
                                     "share": round(share, 4), "threshold": threshold})
        return self.tags(out_ids, out_tags, score=scores, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(KeywordStuffing)
