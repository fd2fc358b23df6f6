"""Quality detectors through the real runner: each rule fires on a text built to fail it, not on a clean one."""

import json

import pytest

from provenance.detectors import DetectorError
from provenance.plugins.quality import C4Quality, FineWebQuality, GopherQuality, GopherRepetition, words
from provenance.testing import run_detector

SENTENCES = [
    "The committee met on Tuesday to discuss the budget for the coming year.",
    "Members agreed that the library should have longer opening hours in winter.",
    "A proposal to repair the old bridge was sent back for a second estimate.",
    "Several residents spoke in favour of planting trees along the main road.",
    "The treasurer reported that spending had stayed within the agreed limits.",
    "Next month the council will vote on the plan and publish the minutes.",
    "Questions from the public were answered at the end of the meeting.",
    "The chair thanked everyone and closed the session shortly after nine.",
]
CLEAN = "\n".join(SENTENCES)


def evidence(tags):
    return [json.loads(e) for e in tags.column("evidence").to_pylist()]


def test_clean_text_passes_every_rule_set():
    for cls in (GopherQuality, GopherRepetition, C4Quality, FineWebQuality):
        assert run_detector(cls, [CLEAN]).num_rows == 0, cls.name


def test_gopher_quality_rules_fire_with_rule_and_statistic():
    short = "The cat sat on the mat and that was all."
    symbols = CLEAN + "\n" + " ".join(["#tag"] * 40)
    no_stop_words = " ".join(f"word{i} alpha beta gamma." for i in range(30))
    tags = run_detector(GopherQuality, [short, symbols, no_stop_words, CLEAN])
    by_tag = dict(zip(tags.column("tag").to_pylist(), evidence(tags)))
    assert set(by_tag) == {"gopher_short_doc", "gopher_too_many_hashes", "gopher_too_few_stop_words"}
    assert by_tag["gopher_short_doc"]["value"] == 10 and by_tag["gopher_short_doc"]["threshold"] == 50
    assert by_tag["gopher_too_many_hashes"]["value"] > 0.1
    assert tags.column("category").to_pylist() == ["quality"] * 3
    assert tags.column("score").null_count == 3  # a fact: doc_flags counts it as 1.0


def test_options_change_thresholds():
    short = "The cat sat on the mat and that was all."
    assert run_detector(GopherQuality, [short], options={"min_doc_words": 5}).num_rows == 0
    assert run_detector(GopherQuality, [CLEAN], options={"min_doc_words": 500}).column("tag").to_pylist() == [
        "gopher_short_doc"]
    with pytest.raises(DetectorError, match="must be >= 0"):
        GopherQuality.validate_options({"min_doc_words": -1})


def test_gopher_repetition_duplicate_lines_and_ngrams():
    repeated = "\n".join(SENTENCES[:3] + ["Buy cheap watches now at the best price today."] * 6)
    tags = run_detector(GopherRepetition, [repeated, CLEAN])
    (ev,) = evidence(tags)
    assert tags.column("tag").to_pylist() == ["gopher_dup_line_frac"]
    assert ev["rule"] == "gopher_dup_line_frac" and ev["value"] == pytest.approx(5 / 9, abs=1e-4)
    assert {f["rule"] for f in ev["failed"]} >= {"gopher_dup_line_char_frac", "gopher_dup_5_gram"}
    assert run_detector(GopherRepetition, [repeated], options={
        "dup_line_frac": 0, "dup_line_char_frac": 0, "dup_para_frac": 0, "dup_para_char_frac": 0,
        **{f"top_{n}_gram_frac": 0 for n in (2, 3, 4)}, **{f"dup_{n}_gram_frac": 0 for n in range(5, 11)}},
    ).num_rows == 0


def test_c4_rules():
    lorem = CLEAN + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit."
    code = CLEAN + "\nThe function returns {x: 1} to every caller."
    menu = "Home\nAbout us\nContact\nWe use cookies to improve the site."
    tags = run_detector(C4Quality, [lorem, code, menu])
    assert sorted(tags.column("tag").to_pylist()) == ["c4_curly_bracket", "c4_lorem_ipsum", "c4_too_few_sentences"]
    few = [e for e in evidence(tags) if e["rule"] == "c4_too_few_sentences"][0]
    assert few["value"] == 0  # the one sentence is a cookie-policy line, which C4 removes
    assert run_detector(C4Quality, [lorem], options={"filter_lorem_ipsum": False}).num_rows == 0


def test_fineweb_rules():
    no_punct = "\n".join(s.rstrip(".") for s in SENTENCES)
    short_lines = CLEAN + "\n" + "\n".join(f"item {i}." for i in range(20))
    tags = run_detector(FineWebQuality, [no_punct, short_lines, CLEAN])
    assert sorted(tags.column("tag").to_pylist()) == ["fineweb_line_punct_ratio", "fineweb_short_line_ratio"]
    assert run_detector(FineWebQuality, [no_punct], options={"line_punct_thr": 0.0}).num_rows == 0


def test_words_split_like_spacy():
    assert words("Mr. O'Brien wouldn't pay $3.5 in the U.S. today...") == [
        "Mr.", "O'Brien", "would", "n't", "pay", "$", "3.5", "in", "the", "U.S.", "today", "..."]


@pytest.mark.parametrize("text, expected", [
    # hyphens and slashes split only before a letter, as spaCy's infix rules say
    ("well-known B-52 astatine-211 1/2 and/or mg/dl", ["well", "-", "known", "B-52", "astatine-211", "1/2",
                                                      "and/or", "mg", "/", "dl"]),
    ("said--and said-- 2.1-", ["said", "--", "and", "said--", "2.1-"]),
    ("1-0 3+4", ["1", "-", "0", "3", "+", "4"]),
    # a period is a suffix after a lower-case letter or a digit, not after an abbreviation or an initial
    ("Calif., (e.g. IBM. 1987. J. Smith Lt.", ["Calif.", ",", "(", "e.g.", "IBM", ".", "1987", ".", "J.", "Smith",
                                              "Lt", "."]),
    ("60°C 5% 10km US$5", ["60", "°", "C", "5", "%", "10", "km", "US$", "5"]),
    ("dont cannot I'm they'd fill'd DON'T", ["do", "nt", "can", "not", "I", "'m", "they", "'d", "fill'd", "DON'T"]),
    ("@sam_ponder Design_Sin see http://x.com/a/b. pic.twitter.com/abc", [
        "@sam_ponder", "Design_Sin", "see", "http://x.com/a/b", ".", "pic.twitter.com/abc"]),
    ("“Hi,” she said:) 있다.", ["“", "Hi", ",", "”", "she", "said", ":)", "있다", "."]),
])
def test_words_follow_spacy_rules(text, expected):
    # Expected tokens are spaCy 3.8's (spacy.blank("en")) on the same text.
    assert words(text) == expected
