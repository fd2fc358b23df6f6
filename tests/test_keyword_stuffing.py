"""keyword_stuffing through the real runner: a keyword list and a densely repeated phrase are tagged with the
words and where they are; prose, a repeated name and a table that repeats its columns are not."""

from __future__ import annotations

import json
import random

import pytest
from test_poison_backdoor import PROSE  # the same council-meeting prose: a clean text

from provenance.detectors import DetectorError
from provenance.plugins.keyword_stuffing import KeywordStuffing, phrase_threshold, repeated_phrase, words_of
from provenance.testing import make_document, run_detectors


def stuffed_phrase(text: str, phrase: str, share: float, seed: int = 0) -> str:
    rng, words, inserted = random.Random(seed), text.split(), phrase.split()
    for _ in range(round(share * len(words) / len(inserted))):
        i = rng.randrange(len(words) + 1)
        words[i:i] = inserted
    return " ".join(words)


def tags_of(texts, **options):
    docs = [make_document(i, text=t) for i, t in enumerate(texts)]
    table = run_detectors([KeywordStuffing], docs, options={"keyword_stuffing": options} if options else None).tags
    by_doc = {d["doc_id"]: i for i, d in enumerate(docs)}
    return sorted((by_doc[d], tag, json.loads(e)) for d, tag, e in
                  zip(*(table.column(c).to_pylist() for c in ("doc_id", "tag", "evidence"))))


def test_a_keyword_list_is_tagged_with_its_two_words_and_where_the_block_is():
    keywords = ", ".join(["plumber Boston", "Boston plumber", "best plumber Boston", "plumber near me",
                          "cheap plumber Boston", "emergency plumber Boston"] * 4)
    text = PROSE + "\n" + keywords
    [(doc, tag, evidence)] = tags_of([text])
    assert (doc, tag) == (0, "keyword_block")
    assert sorted(evidence["keywords"]) == ["boston", "plumber"] and evidence["share"] >= 0.34
    block = evidence["block"]
    assert block["start"] >= len(PROSE) - 60 and block["end"] <= len(text)  # the list, not the prose
    assert "plumber Boston" in text[block["start"]:block["end"]]


def test_a_phrase_dropped_all_over_a_long_text_is_tagged_and_prose_is_not():
    long_prose = " ".join([PROSE] * 3)  # about 480 words
    stuffed = stuffed_phrase(long_prose, "roof repair", 0.3)
    tagged = tags_of([long_prose, stuffed, PROSE])
    assert {doc for doc, _, _ in tagged} == {1}  # (at 30% a window of it may also count as a block)
    [evidence] = [e for _, tag, e in tagged if tag == "repeated_phrase"]
    assert evidence["phrase"] == "roof repair" and evidence["contexts"] > 20
    assert evidence["share"] > evidence["threshold"] == phrase_threshold(len(stuffed.split()))


def test_repetition_that_real_text_has_is_not_tagged():
    # A name repeated in an article, and a table that repeats its column words after the same words each row.
    article = PROSE.replace("the council", "the Springfield council").replace("The mayor", "Mayor Jane Quimby")
    table = "Results by quarter:\n" + "\n".join(f"Q{q} 2024 net profit {q * 3}.{q} mln dlrs vs {q + 2}.1 mln dlrs"
                                                 for q in range(1, 5)) + "\n" + PROSE
    assert tags_of([article, table]) == []


def test_the_phrase_threshold_falls_with_length_and_short_texts_are_skipped():
    assert phrase_threshold(60) > phrase_threshold(300) > phrase_threshold(5000)
    short = "plumber boston " * 20  # 40 tokens: under min_tokens
    assert tags_of([short]) == []
    assert tags_of([short], min_tokens=20)  # the same text counts once the floor allows it
    share, contexts, pair = repeated_phrase(*words_of("a b c one two x one two y one two 7 one two 8 one two"))
    assert pair == ("one", "two") and contexts == 4  # after c, x, y and a number (7 and 8: one context)


def test_bad_options_are_refused_with_the_reason():
    for options, message in (({"min_tokens": 5}, "min_tokens"), ({"window": 2}, "window"),
                             ({"min_block_share": 0.0}, "min_block_share")):
        with pytest.raises(DetectorError, match=message):
            KeywordStuffing.validate_options(options)


def test_a_table_of_figures_is_not_a_keyword_block_but_the_same_words_without_figures_are():
    rows = "\n".join(f"Q{q} net {q * 3}.{q} mln dlrs vs {q + 2}.1 mln dlrs" for q in range(1, 9))
    words_only = "\n".join("net mln dlrs vs mln dlrs" for _ in range(1, 9))
    assert tags_of([PROSE + "\n" + rows]) == []
    [(_, tag, evidence)] = tags_of([PROSE + "\n" + words_only])
    assert tag == "keyword_block" and sorted(evidence["keywords"]) == ["dlrs", "mln"]
