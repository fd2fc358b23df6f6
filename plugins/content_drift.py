"""Content drift: how much a page's text changed since the earlier capture of the same URL.

Split-view poisoning (Carlini et al., arXiv:2302.10149) swaps what a URL serves after it was vetted; for a
re-crawled or re-imported corpus every new capture is the "later download". This detector compares each
document with the version of its URL just before the document's earliest capture (the ``previous`` need: the
``versions`` view's order by capture time, every capture of the document counted, whatever the source or the
order of import), after masking what changes on every honest page (dates, times, numbers
and counters, month and day names; a run of numbers is one mask), and tags, category ``poison``:

  replaced     word-shingle Jaccard similarity below ``replaced_below`` (0.3): another text at the same URL
               (score 0.9)
  major_edit   below ``major_below`` (0.8): much of the text rewritten (score 0.5)
  minor_edit   otherwise, when the words still differ after masking: normal life of a page, described with
               score 0 and never flagging (``NOT_FLAG_TAGS`` in provenance/sql.py)

No tag when the text is unchanged after masking (a new date, a view counter) or when either version has no
text. Similarity is exact Jaccard over the sets of ``shingle``-word shingles of the masked words (two sets per
document: no sketch needed). Evidence: ``previous_doc_id``, ``fetched_at`` and ``previous_fetched_at``,
``similarity``, ``count`` (changed regions) and up to five ``spans`` (the changed words, ``field`` ``text`` for
what is new, ``previous_text`` for what went away; a replaced page shows the start of both).

A capture imported after a document was tagged (an older archive) can give it another earlier version: the
runner then tags it again and its new tags replace the old ones (docs/ARCHITECTURE.md, "Captures that arrive
late"), so the tags do not depend on the order of import.

A URL-list sha256 pin that the body breaks is the crawl's ``provenance:integrity_mismatch`` tag, not this
detector's.
"""

from __future__ import annotations

import difflib
import hashlib
import re

import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.detectors import DetectorError
from provenance.plugins._poison_text import span

MAX_SPANS = 5
MAX_DIFF_WORDS = 50_000  # beyond this the diff's time grows too much for evidence: the tag still comes
SCORES = {"replaced": 0.9, "major_edit": 0.5, "minor_edit": 0.0}
_WORD = re.compile(r"\w+")
_CALENDAR = {w: "@month" for w in (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec").split()}
_CALENDAR.update({w: "@day" for w in (
    "monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs fri sat sun"
    ).split()})


def masked_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The lower-cased words of ``text`` with dates, times, numbers and calendar names masked, and their spans."""
    words, places = [], []
    for m in _WORD.finditer(text):
        word = m.group().lower()
        if any(ch.isdigit() for ch in word):
            word = "#"  # 2024, 12:30, 1st, 3,141 views, v2: one mask for all
            if words and words[-1] == "#":  # 999 -> 1,000 views, 9:59 -> 10:00:01: a run of numbers is one
                places[-1] = (places[-1][0], m.end())
                continue
        words.append(_CALENDAR.get(word, word))
        places.append(m.span())
    return words, places


def masked_key(text: str | None) -> str | None:
    """sha256 of the masked words of ``text`` (None: no words): equal keys, the same text but for dates and counters."""
    if not text:
        return None
    words = masked_words(text)[0]
    return hashlib.sha256("\x1f".join(words).encode()).hexdigest()[:32] if words else None


def shingles(words: list[str], n: int) -> set[tuple[str, ...]]:
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def changed_spans(text: str, previous: str, words, places, prev_words, prev_places) -> tuple[int, list[dict]]:
    """(number of changed regions, the first MAX_SPANS of them as evidence spans) between two texts' words."""
    matcher = difflib.SequenceMatcher(None, prev_words, words, autojunk=False)
    regions = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    spans = []
    for _tag, i1, i2, j1, j2 in regions[:MAX_SPANS]:
        if j2 > j1:  # replace or insert: the new words
            a, b = places[j1][0], places[j2 - 1][1]
            spans.append(span("text", a, b, text[a:b], limit=200))
        if i2 > i1:  # replace or delete: the words that went away
            a, b = prev_places[i1][0], prev_places[i2 - 1][1]
            spans.append(span("previous_text", a, b, previous[a:b], limit=200))
    return len(regions), spans[:MAX_SPANS]


def compare(text: str, previous: str, n: int, replaced_below: float, major_below: float) -> dict | None:
    """The tag and evidence for one document against its previous version; None when nothing changed."""
    words, places = masked_words(text)
    prev_words, prev_places = masked_words(previous)
    if words == prev_words:
        return None
    similarity = jaccard(shingles(words, n), shingles(prev_words, n))
    tag = "replaced" if similarity < replaced_below else "major_edit" if similarity < major_below else "minor_edit"
    if tag == "replaced":
        count = 1
        spans = [span("text", 0, len(text), text, limit=200),
                 span("previous_text", 0, len(previous), previous, limit=200)]
    elif len(words) + len(prev_words) > MAX_DIFF_WORDS:
        count, spans = None, []
    else:
        count, spans = changed_spans(text, previous, words, places, prev_words, prev_places)
    return {"tag": tag, "similarity": round(similarity, 4), "count": count, "spans": spans}


class ContentDrift(provenance.Detector):
    """Replaced pages and major edits since the earlier capture of the same URL (minor edits described)."""

    name = "content_drift"
    # 2: a run of numbers masks as one (a counter that grew a digit group is no edit); 3: previous by every capture
    # (fetches rows too), so an older capture imported late no longer makes a later one the earlier version
    version = "3"
    category = "poison"
    needs = ("text", "text_sha256", "fetched_at", "previous")
    options = {"shingle": 3, "replaced_below": 0.3, "major_below": 0.8}

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        if merged["shingle"] < 1:
            raise DetectorError(f"detector content_drift: shingle must be at least 1, got {merged['shingle']}")
        if not 0.0 <= merged["replaced_below"] <= merged["major_below"] <= 1.0:
            raise DetectorError("detector content_drift: need 0 <= replaced_below <= major_below <= 1, got "
                                f"{merged['replaced_below']} and {merged['major_below']}")
        return merged

    def tag_batch(self, batch: pa.RecordBatch):
        # Only rows with both texts, whose text hash differs from the earlier one's: Python sees just those.
        todo = pc.and_(pc.and_(pc.is_valid(batch.column("text")), pc.is_valid(batch.column("previous_text"))),
                       pc.fill_null(pc.not_equal(batch.column("text_sha256"), batch.column("previous_text_sha256")),
                                    True))
        rows = pa.Table.from_batches([batch]).filter(todo).select(
            ["doc_id", "text", "previous_text", "previous_doc_id", "fetched_at", "previous_fetched_at"])
        out_ids, out_tags, scores, evidence = [], [], [], []
        opts = self.options
        for row in rows.to_pylist():
            found = compare(row["text"], row["previous_text"], opts["shingle"], opts["replaced_below"],
                            opts["major_below"])
            if found is None:
                continue
            out_ids.append(row["doc_id"])
            out_tags.append(found["tag"])
            scores.append(SCORES[found["tag"]])
            evidence.append({"previous_doc_id": row["previous_doc_id"], "fetched_at": _iso(row["fetched_at"]),
                             "previous_fetched_at": _iso(row["previous_fetched_at"]),
                             "similarity": found["similarity"], "shingle": opts["shingle"],
                             "count": found["count"], "spans": found["spans"]})
        return self.tags(out_ids, out_tags, score=scores, evidence=evidence)


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


@provenance.hookimpl
def register_detectors(register):
    register(ContentDrift)
